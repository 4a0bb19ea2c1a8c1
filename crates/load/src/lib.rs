//! Safe loading of ML checkpoints: tensors and plain values out of torch files with no pickle
//! executed, and conversion to safetensors.
//!
//! [`load`] first runs the scanner ([`ckptguard_scan::scan_source`]) and refuses anything it
//! does not judge `safe`. It then reads the container the way torch does (zip or legacy
//! stream) and rebuilds the object from the *same* symbolic unpickler's value arena
//! ([`ckptguard_pickle::analyze`]) — interpreting only a closed list of data constructors.
//! Tensors borrow their bytes from the source: zero-copy when it is memory-mapped.
//!
//! ```
//! use ckptguard_load::{load, LoadOptions, LoadError};
//! let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.".to_vec();
//! match load(&evil, "model.pt", &LoadOptions::default()) {
//!     Err(LoadError::Unsafe { .. }) => {}
//!     other => panic!("{:?}", other.map(|c| c.format)),
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dcp;
pub mod dtype;
mod interp;
pub mod json;
pub mod legacy;
pub mod safetensors;
pub mod tensor;
mod torchzip;
pub mod value;

use std::sync::Arc;

use ckptguard_formats::detect::{sniff, Sniffed};
use ckptguard_formats::io::bytes_at;
use ckptguard_formats::npy;
use ckptguard_formats::ReadAt;
use ckptguard_pickle::{Analysis, ObjId};
use ckptguard_scan::{scan_source, FileReport, ScanOptions, Severity, Verdict};

pub use dtype::DType;
pub use tensor::{Storage, Tensor};
pub use value::{Dict, Value};

use interp::{rebuild, NoStorages, TreeLimits};

/// What loading needs to know.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The scanner's policy and limits (the same ones `ckptguard scan` uses).
    pub scan: ScanOptions,
    /// Lowest severity that makes a file unsafe (default `high`, as `scan`).
    pub fail_on: Severity,
    pub(crate) tree: TreeLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            scan: ScanOptions::default(),
            fail_on: Severity::High,
            tree: TreeLimits {
                max_nodes: 20_000_000,
                max_depth: 200,
                max_int_bytes: 4096,
            },
        }
    }
}

impl LoadOptions {
    /// Options with this scan configuration.
    pub fn with_scan(scan: ScanOptions) -> Self {
        LoadOptions {
            scan,
            ..LoadOptions::default()
        }
    }
    /// Sets the most values the rebuilt tree may hold and how deep it may nest.
    pub fn tree_limits(mut self, max_nodes: u64, max_depth: usize) -> Self {
        self.tree.max_nodes = max_nodes;
        self.tree.max_depth = max_depth;
        self
    }
}

/// Why a checkpoint was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The scanner did not judge the file safe; nothing was rebuilt.
    #[error("refusing to load: the scan found it unsafe: {summary}")]
    Unsafe {
        /// The scan report (findings most severe first).
        report: Box<FileReport>,
        /// One line: the most severe finding.
        summary: String,
        /// Every failing finding is about the file being unreadable, truncated or malformed
        /// (nothing dangerous was seen in what could be read).
        unreadable_only: bool,
    },
    /// Safe, but holds something ckptguard does not rebuild (quantized/sparse tensors, an
    /// unknown class, ...).
    #[error("unsupported content: {0}")]
    Unsupported(String),
    /// Broken or inconsistent: truncated, out-of-bounds views, missing records.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Reading the source failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    /// What the file was read as: `torch-zip`, `torch-legacy`, `pickle`, `npy`.
    pub format: String,
    /// The rebuilt object.
    pub root: Value<'a>,
    /// The scan that cleared it.
    pub report: FileReport,
}

impl Checkpoint<'_> {
    /// Number of distinct storages behind the tensors.
    pub fn storage_count(&self) -> usize {
        let mut seen: Vec<*const Storage<'_>> = self
            .root
            .tensors()
            .iter()
            .map(|(_, t)| Arc::as_ptr(&t.storage))
            .collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }
}

/// Finding codes that mean "could not be read" rather than "dangerous".
const UNREADABLE_CODES: &[&str] = &[
    "CG201", "CG202", "CG301", "CG304", "CG305", "CG314", "CG401", "CG404",
];

/// Scans `src` and, if it is safe, loads it. `name` is used for messages and by the scanner to
/// tell intended checkpoints from other files; the format is recognised by content.
pub fn load<'a>(
    src: &'a dyn ReadAt,
    name: &str,
    opts: &LoadOptions,
) -> Result<Checkpoint<'a>, LoadError> {
    let scan = scan_source(src, name, &opts.scan);
    let report = FileReport::new(name.to_string(), scan, src.len(), 0, opts.fail_on);
    check_report(&report, opts.fail_on)?;
    load_scanned(src, report, opts)
}

/// Turns a report that is not `safe` into [`LoadError::Unsafe`].
pub fn check_report(report: &FileReport, fail_on: Severity) -> Result<(), LoadError> {
    match report.verdict {
        Verdict::Safe => Ok(()),
        Verdict::Skipped => Err(LoadError::Unsupported(format!(
            "not a checkpoint format: {}",
            report.error.as_deref().unwrap_or("unrecognised content")
        ))),
        Verdict::Error => Err(LoadError::Malformed(
            report.error.clone().unwrap_or_else(|| "unreadable".into()),
        )),
        Verdict::Unsafe => {
            let failing: Vec<_> = report
                .findings
                .iter()
                .filter(|f| f.blocking || f.severity >= fail_on)
                .collect();
            let unreadable_only = !failing.is_empty()
                && failing
                    .iter()
                    .all(|f| UNREADABLE_CODES.contains(&f.code.as_str()));
            let summary = match failing.first() {
                Some(f) => {
                    let mut s = format!(
                        "{} {} {}: {}",
                        f.severity.as_str(),
                        f.code,
                        f.name,
                        f.message
                    );
                    if let Some(c) = &f.call {
                        let mut c = c.clone();
                        if c.len() > 160 {
                            let mut cut = 160;
                            while !c.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            c.truncate(cut);
                            c.push('…');
                        }
                        s.push_str(&format!(" — {c}"));
                    }
                    if failing.len() > 1 {
                        s.push_str(&format!(
                            " (and {} more finding{})",
                            failing.len() - 1,
                            if failing.len() == 2 { "" } else { "s" }
                        ));
                    }
                    s
                }
                None => "unsafe".into(),
            };
            Err(LoadError::Unsafe {
                report: Box::new(report.clone()),
                summary,
                unreadable_only,
            })
        }
    }
}

/// Loads a source whose scan `report` is already known to be safe (for callers that scanned a
/// whole directory container first). Returns [`LoadError::Unsafe`] if it is not.
pub fn load_scanned<'a>(
    src: &'a dyn ReadAt,
    report: FileReport,
    opts: &LoadOptions,
) -> Result<Checkpoint<'a>, LoadError> {
    check_report(&report, opts.fail_on)?;
    let (format, root) = match sniff(src)? {
        Sniffed::Zip => torchzip::load(src, opts)?,
        Sniffed::Npy => ("npy", load_npy(src)?),
        Sniffed::Tar => {
            return Err(LoadError::Unsupported(
                "torch's legacy tar format (torch < 0.4) is not loaded; re-save the checkpoint with a current torch".into(),
            ))
        }
        Sniffed::Pickle => {
            let data = bytes_at(src, 0, src.len(), opts.scan.limits.max_pickle_bytes)?;
            let first = analyze_first(&data, opts);
            if legacy::is_legacy(&first) {
                drop(first);
                ("torch-legacy", legacy::load(src, &data, opts)?)
            } else {
                let root = first_root(&first, "the pickle")?;
                ("pickle", rebuild(&first, root, &mut NoStorages, opts.tree)?)
            }
        }
    };
    Ok(Checkpoint {
        format: format.into(),
        root,
        report,
    })
}

/// Analyses the first pickle of a stream only.
fn analyze_first<'d>(data: &'d [u8], opts: &LoadOptions) -> Analysis<'d> {
    let mut a = Analysis::new(data);
    let _ = ckptguard_pickle::analyze_pickle_at(&mut a, 0, &opts.scan.limits.pickle);
    a
}

/// The result of the first pickle of `a`, if it was analysed completely.
pub(crate) fn first_root(a: &Analysis<'_>, what: &str) -> Result<ObjId, LoadError> {
    let first = a
        .pickles
        .first()
        .ok_or_else(|| LoadError::Malformed(format!("{what} is empty")))?;
    if let Some(i) = a.issues.iter().find(|i| i.fatal && i.pickle == 0) {
        return Err(LoadError::Malformed(format!("{what}: {}", i.message())));
    }
    first
        .root
        .ok_or_else(|| LoadError::Malformed(format!("{what} has no result")))
}

/// A `.npy` file: one numeric array, borrowed from the source.
fn load_npy<'a>(src: &'a dyn ReadAt) -> Result<Value<'a>, LoadError> {
    npy_array(src, src, 0)
}

/// The array of the `.npy` bytes `npy`, which sit at `base` in `src` (whose bytes the storage
/// borrows).
pub(crate) fn npy_array<'a>(
    npy: &dyn ReadAt,
    src: &'a dyn ReadAt,
    base: u64,
) -> Result<Value<'a>, LoadError> {
    let (dtype, big, shape, fortran, body, nbytes) = npy_layout(npy)?;
    let at = base + body;
    npy_tensor(
        dtype,
        big,
        shape,
        fortran,
        nbytes,
        Some(at),
        Storage::from_source(src, at, nbytes),
    )
}

/// An array from `.npy` bytes held in memory (a deflated `.npz` member).
pub(crate) fn npy_owned<'a>(data: Vec<u8>) -> Result<Value<'a>, LoadError> {
    let (dtype, big, shape, fortran, body, nbytes) = npy_layout(&data)?;
    let body = usize::try_from(body).map_err(|_| LoadError::Malformed("npy too large".into()))?;
    let bytes = data[body..body + nbytes as usize].to_vec();
    npy_tensor(
        dtype,
        big,
        shape,
        fortran,
        nbytes,
        None,
        tensor::Data::Owned(bytes),
    )
}

type NpyLayout = (DType, bool, Vec<u64>, bool, u64, u64);

fn npy_layout(npy: &dyn ReadAt) -> Result<NpyLayout, LoadError> {
    let h = npy::parse_header(npy).map_err(|e| LoadError::Malformed(format!("npy header: {e}")))?;
    let descr = match &h.descr {
        npy::Literal::Str(s) => s.clone(),
        _ => return Err(LoadError::Unsupported("a structured numpy dtype".into())),
    };
    let big = descr.starts_with('>');
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    let dtype = DType::from_numpy(code)
        .ok_or_else(|| LoadError::Unsupported(format!("numpy dtype {descr:?}")))?;
    let n = h
        .shape
        .iter()
        .try_fold(1u64, |a, s| a.checked_mul(*s))
        .ok_or_else(|| LoadError::Malformed("npy shape overflows".into()))?;
    let nbytes = n
        .checked_mul(dtype.itemsize())
        .ok_or_else(|| LoadError::Malformed("npy size overflows".into()))?;
    let end = h
        .body_offset
        .checked_add(nbytes)
        .ok_or_else(|| LoadError::Malformed("npy size overflows".into()))?;
    if end > npy.len() {
        return Err(LoadError::Malformed(format!(
            "npy body needs {nbytes} bytes; the file is truncated"
        )));
    }
    Ok((dtype, big, h.shape, h.fortran_order, h.body_offset, nbytes))
}

fn npy_tensor<'a>(
    dtype: DType,
    big: bool,
    shape: Vec<u64>,
    fortran: bool,
    nbytes: u64,
    source_offset: Option<u64>,
    data: tensor::Data<'a>,
) -> Result<Value<'a>, LoadError> {
    let t = tensor::numpy_tensor(
        "npy",
        dtype,
        shape,
        fortran,
        nbytes,
        big,
        source_offset,
        data,
    )
    .map_err(LoadError::Malformed)?;
    Ok(Value::Tensor(t))
}

/// Human-readable byte count (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
