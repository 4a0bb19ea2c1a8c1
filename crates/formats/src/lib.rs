//! Container formats that torch, Lightning, numpy, DeepSpeed, DCP and litdata read.
//!
//! Everything here takes bytes through [`io::ReadAt`] and returns facts: which byte ranges are
//! pickles to analyse, and which structural anomalies were seen. Nothing opens paths or prints.
#![forbid(unsafe_code)]

pub mod detect;
pub mod dir;
pub mod io;
pub mod litdata;
pub mod npy;
pub mod tar;
pub mod zip;

pub use io::ReadAt;
