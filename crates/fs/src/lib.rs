//! The file-system front end shared by the `ckptguard` CLI and the Python bindings.
//!
//! The core crates never open paths; this one does: it walks directories (sorted, symlink
//! loops and unreadable entries reported), maps files read-only, presents directory
//! containers through the core's `Dir` trait, and scans paths exactly the same way for both
//! front ends.
//!
//! `unsafe` is denied everywhere except the one-function mmap shim ([`mmap`]).
#![deny(unsafe_code)]

pub mod fsdir;
pub mod mmap;
pub mod scan;
pub mod walk;
