//! The scanner: recognises a container by content, finds every pickle in it the way the real
//! loader would read it, analyses each without executing anything, and judges the result under
//! a default-deny [`Policy`].
//!
//! The engine takes bytes through [`ReadAt`]; it never opens paths and never prints. Front ends
//! (the CLI, the Python bindings) open files, walk directories and render [`Report`]s.
//!
//! ```
//! use ckptguard_scan::{scan_source, ScanOptions, Verdict, FileReport, Severity};
//! let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.".to_vec();
//! let scan = scan_source(&evil, "model.pkl", &ScanOptions::default());
//! let report = FileReport::new("model.pkl".into(), scan, evil.len() as u64, 0, Severity::High);
//! assert_eq!(report.verdict, Verdict::Unsafe);
//! assert_eq!(report.findings[0].call.as_deref(), Some("os.system(\"true\")"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod container;
pub mod dirs;
pub mod evaluate;
pub mod finding;
pub mod policy;
pub mod report;
pub mod torch;

use std::collections::BTreeSet;

use ckptguard_formats::detect::{sniff, Sniffed};
use ckptguard_formats::io::{bytes_at, SubRange};
use ckptguard_formats::npy;
use ckptguard_formats::zip::{ZipAnomaly, ZipArchive, ZipEntry, ZipLimits};
use ckptguard_formats::ReadAt;
use ckptguard_pickle::{analyze, Analysis, IssueKind, OpErrorKind};
use serde::{Deserialize, Serialize};

pub use ckptguard_pickle::Limits as PickleLimits;
pub use evaluate::Location;
pub use finding::{Code, Finding, Severity};
pub use policy::Policy;
pub use report::{FileReport, Report, Verdict};

/// Every bound the scanner enforces. Documented in the README; configurable in
/// `ckptguard.toml` under `[limits]` and `[limits.pickle]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest pickle stream analysed (a raw pickle file, a zip member, an npy body).
    pub max_pickle_bytes: u64,
    /// Most entries read from a zip central directory.
    pub max_zip_entries: u64,
    /// Largest zip member decompressed.
    pub max_entry_bytes: u64,
    /// Largest deflate expansion ratio accepted for a zip member.
    pub max_compression_ratio: u64,
    /// Limits of the symbolic unpickler.
    pub pickle: PickleLimits,
    /// Limits of the litdata dataset reader.
    pub litdata: ckptguard_formats::litdata::LitdataLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pickle_bytes: 8 << 30,
            max_zip_entries: 1_000_000,
            max_entry_bytes: 4 << 30,
            max_compression_ratio: 1_000,
            pickle: PickleLimits::default(),
            litdata: Default::default(),
        }
    }
}

/// What a scan needs to know.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// The allowlist.
    pub policy: Policy,
    /// Bounds.
    pub limits: Limits,
}

/// What a scan of one source found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileScan {
    /// What the source was recognised as.
    pub format: String,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Every global imported.
    pub globals: BTreeSet<String>,
    /// Set when the source is not a checkpoint format at all (and why).
    pub skipped: Option<String>,
    /// The weights-only verdict, for torch files.
    pub weights_only: Option<torch::WeightsOnly>,
}

/// File names that announce a pickle: a file so named that does not parse is malformed, not
/// "something else".
fn pickle_like_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        ".pkl",
        ".pickle",
        ".pt",
        ".pth",
        ".ckpt",
        ".bin",
        ".joblib",
        ".dat",
        ".data",
        ".npy",
        ".npz",
        ".metadata",
        ".distcp",
    ]
    .iter()
    .any(|e| lower.ends_with(e))
}

/// Scans one source. `name` is used for messages and to decide whether an unparsable file
/// was meant to be a checkpoint; the format itself is always recognised by content.
pub fn scan_source(src: &dyn ReadAt, name: &str, opts: &ScanOptions) -> FileScan {
    let mut out = FileScan::default();
    if src.is_empty() {
        out.format = "empty".into();
        if pickle_like_name(name) {
            out.findings.push(Finding::new(
                Code::MalformedPickle,
                "empty file: pickle.load fails with EOFError",
            ));
        } else {
            out.skipped = Some("empty file".into());
        }
        return out;
    }
    let kind = match sniff(src) {
        Ok(k) => k,
        Err(e) => {
            out.format = "unknown".into();
            out.findings
                .push(Finding::new(Code::Unreadable, format!("cannot read: {e}")));
            return out;
        }
    };
    match kind {
        Sniffed::Zip => scan_zip(src, opts, &mut out),
        Sniffed::Npy => {
            out.format = "npy".into();
            scan_npy(src, None, opts, &mut out);
        }
        Sniffed::Tar => {
            if !torch::scan_legacy_tar(src, opts, &mut out) {
                scan_stream(src, name, opts, &mut out);
            } else {
                // The bytes also start a pickle stream for loaders that skip the tar check.
                let mut also = FileScan::default();
                scan_stream(src, name, opts, &mut also);
                if also.skipped.is_none() {
                    out.findings.extend(also.findings);
                    out.globals.extend(also.globals);
                }
            }
        }
        Sniffed::Pickle => scan_stream(src, name, opts, &mut out),
    }
    out
}

/// A raw pickle stream from byte 0: torch's legacy format, or any pickle.
fn scan_stream(src: &dyn ReadAt, name: &str, opts: &ScanOptions, out: &mut FileScan) {
    out.format = "pickle".into();
    let data = match bytes_at(src, 0, src.len(), opts.limits.max_pickle_bytes) {
        Ok(d) => d,
        Err(e) => {
            out.findings.push(Finding::new(
                Code::LimitExceeded,
                format!("pickle stream not analysed: {e}"),
            ));
            return;
        }
    };
    if torch::scan_legacy_stream(&data, opts, out) {
        return;
    }
    let a = analyze(&data, &opts.limits.pickle);
    if !pickle_like_name(name) && !starts_with_proto(&data) && not_a_pickle(&a) {
        out.format = "unknown".into();
        let at = a.issues.first().map_or(0, |i| i.offset);
        out.skipped = Some(format!(
            "not a checkpoint format: unpickling fails at byte {at} before importing or calling anything"
        ));
        return;
    }
    if let Some(p) = a.pickles.first().and_then(|p| p.protocol) {
        out.format = format!("pickle (protocol {p})");
    }
    add_pickle(&a, Location::default(), opts, out);
    torch::check_instantiator(&a, &Location::default(), &mut out.findings);
}

fn starts_with_proto(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] == 0x80 && data[1] <= 5
}

/// The unpickler would fail before doing anything observable, and not because the input ended.
/// An EXT lookup alone does not count: with copyreg's extension registry empty, as it is in
/// every loader process, CPython fails on it ("unregistered extension code").
pub(crate) fn not_a_pickle(a: &Analysis<'_>) -> bool {
    a.pickles.len() == 1
        && a.pickles[0].end.is_none()
        && a.imports.is_empty()
        && a.calls.is_empty()
        && a.builds.is_empty()
        && a.mutations.is_empty()
        && a.persistent_ids.is_empty()
        && !a
            .issues
            .iter()
            .any(|i| matches!(i.kind, IssueKind::Limit(_)))
}

/// The failure may be caused only by where the input was cut (used when probing a prefix of
/// a member `total` bytes long): a length that overruns the whole member is a real failure.
fn cut_short(a: &Analysis<'_>, total: u64) -> bool {
    a.issues.iter().any(|i| match &i.kind {
        IssueKind::MissingStop
        | IssueKind::Decode(OpErrorKind::Truncated)
        | IssueKind::Decode(OpErrorKind::LineTooLong(_)) => true,
        IssueKind::Decode(OpErrorKind::LengthPastEnd { claimed, .. })
        | IssueKind::FrameOverrun { claimed, .. } => {
            (i.offset as u64).saturating_add(*claimed) <= total
        }
        _ => false,
    })
}

pub(crate) fn add_pickle(a: &Analysis<'_>, loc: Location, opts: &ScanOptions, out: &mut FileScan) {
    evaluate::evaluate(a, &opts.policy, &loc, &mut out.findings);
    out.globals.extend(evaluate::globals(a));
}

fn scan_npy(src: &dyn ReadAt, entry: Option<&str>, opts: &ScanOptions, out: &mut FileScan) {
    let place = |f: Finding| match entry {
        Some(e) => f.entry(e),
        None => f,
    };
    let h = match npy::parse_header(src) {
        Ok(h) => h,
        Err(e) => {
            out.findings.push(place(Finding::new(
                Code::NpyMalformed,
                format!("malformed .npy header: {e}"),
            )));
            return;
        }
    };
    if !h.has_object() {
        return;
    }
    out.findings.push(
        place(Finding::new(
            Code::NpyObjectArray,
            "object array: the body is a pickle (numpy.load needs allow_pickle=True)",
        ))
        .at(h.body_offset),
    );
    let len = src.len() - h.body_offset;
    match bytes_at(src, h.body_offset, len, opts.limits.max_pickle_bytes) {
        Ok(body) => {
            let a = analyze(&body, &opts.limits.pickle);
            let loc = Location {
                entry: entry.map(str::to_string),
                base: h.body_offset,
                ..Location::default()
            };
            add_pickle(&a, loc, opts, out);
        }
        Err(e) => out.findings.push(place(Finding::new(
            Code::LimitExceeded,
            format!("npy body not analysed: {e}"),
        ))),
    }
}

/// How many bytes of a member to look at first when deciding whether it is a pickle.
const PROBE: u64 = 256;
/// The most of a non-pickle member probed.
const PROBE_MAX: u64 = 1 << 20;

/// Severity of a zip anomaly: `High` where readers can disagree on the content (a bypass
/// vector), `Medium` for anomalies every reader resolves the same way.
fn zip_anomaly_code(a: &ZipAnomaly) -> Code {
    use ZipAnomaly::*;
    match a {
        DuplicateName { .. }
        | CaseCollision { .. }
        | OverlappingEntries { .. }
        | LocalNameMismatch { .. }
        | LocalHeaderMismatch { .. }
        | HiddenEntries { .. }
        | EndRecordAmbiguity { .. }
        | CentralDirectoryLocation { .. }
        | NameContainsNul { .. }
        | OutsidePrefix { .. }
        | StoredSizeMismatch { .. } => Code::ZipAmbiguous,
        _ => Code::ZipAnomaly,
    }
}

/// The bytes of a member as torch reads them: borrowed from the source when stored,
/// decompressed (under the limits) otherwise.
fn entry_bytes<'s>(
    src: &'s dyn ReadAt,
    zip: &ZipArchive<'_>,
    e: &ZipEntry,
    opts: &ScanOptions,
) -> Result<Box<dyn ReadAt + 's>, String> {
    if let Some((off, len)) = zip.entry_range(e) {
        return SubRange::new(src, off, len)
            .map(|s| Box::new(s) as Box<dyn ReadAt>)
            .ok_or_else(|| "member lies outside the file".to_string());
    }
    zip.read_entry(e, opts.limits.max_entry_bytes)
        .map(|v| Box::new(v) as Box<dyn ReadAt>)
        .map_err(|e| e.to_string())
}

fn scan_zip(src: &dyn ReadAt, opts: &ScanOptions, out: &mut FileScan) {
    out.format = "zip".into();
    let limits = ZipLimits {
        max_entries: opts.limits.max_zip_entries,
        max_entry_bytes: opts.limits.max_entry_bytes,
        max_compression_ratio: opts.limits.max_compression_ratio,
        ..ZipLimits::default()
    };
    let zip = match ZipArchive::open(src, limits) {
        Ok(z) => z,
        Err(e) => {
            out.findings.push(Finding::new(
                Code::ZipUnreadable,
                format!("zip not readable the way torch reads it: {e}"),
            ));
            return;
        }
    };
    let torch = zip.torch_lookup("data.pkl").is_some();
    for an in zip.anomalies() {
        let mut f = Finding::new(zip_anomaly_code(an), an.message());
        if matches!(an, ZipAnomaly::TorchRejects { .. }) {
            if !torch {
                continue; // not a torch file: torch refusing it runs nothing
            }
            f = f.severity(Severity::Info);
        }
        if let Some(e) = an.entry().and_then(|i| zip.entries().get(i)) {
            f = f.entry(e.name_lossy().into_owned());
        }
        out.findings.push(f);
    }
    let names: Vec<String> = zip
        .entries()
        .iter()
        .map(|e| e.name_lossy().to_ascii_lowercase())
        .collect();
    let is_npz = !names.is_empty()
        && names
            .iter()
            .all(|n| n.ends_with(".npy") || n.ends_with('/'));
    out.format = if is_npz {
        "npz".into()
    } else if torch {
        "torch-zip".into()
    } else {
        "zip".into()
    };
    if torch::check_torchscript(&zip, &mut out.findings) {
        out.format = "torchscript".into();
        out.weights_only = Some(torch::WeightsOnly {
            accepted: false,
            needs_safe_globals: Vec::new(),
            blocker: Some(
                "TorchScript archive: load it with torch.jit.load, which runs its code".into(),
            ),
        });
    }
    for entry in zip.entries() {
        if entry.is_directory() {
            continue;
        }
        let name = entry.name_lossy().into_owned();
        let lname = name.to_ascii_lowercase();
        let body = match entry_bytes(src, &zip, entry, opts) {
            Ok(b) => b,
            Err(e) => {
                out.findings.push(
                    Finding::new(Code::ZipEntryUnreadable, format!("{name}: {e}"))
                        .entry(name.clone()),
                );
                continue;
            }
        };
        if lname.ends_with(".npy") {
            scan_npy(&*body, Some(&name), opts, out);
            continue;
        }
        let named_pickle = lname.ends_with(".pkl") || lname.ends_with(".pickle");
        if named_pickle {
            match bytes_at(&*body, 0, body.len(), opts.limits.max_pickle_bytes) {
                Ok(data) => {
                    let a = analyze(&data, &opts.limits.pickle);
                    let data_pkl = torch && lname.ends_with("/data.pkl");
                    let loc = Location {
                        entry: Some(name.clone()),
                        base: 0,
                        persistent_ids_expected: data_pkl,
                        multi_pickle: false,
                    };
                    add_pickle(&a, loc.clone(), opts, out);
                    if data_pkl {
                        torch::check_zip_persistent_ids(&a, &zip, &name, &mut out.findings);
                        torch::check_instantiator(&a, &loc, &mut out.findings);
                        if out.format != "torchscript" {
                            torch::merge_weights_only(
                                &mut out.weights_only,
                                torch::weights_only(&a),
                            );
                        }
                    }
                }
                Err(e) => out.findings.push(
                    Finding::new(Code::LimitExceeded, format!("{name}: not analysed: {e}"))
                        .entry(name.clone()),
                ),
            }
            continue;
        }
        // Any other member (tensor records, extra files): a pickle hidden there matters only if
        // unpickling it would import, call or mutate something. Probe a growing prefix, never
        // more than PROBE_MAX, so tensor data is not read.
        let mut probe = PROBE;
        loop {
            let n = probe.min(body.len());
            let Ok(head) = bytes_at(&*body, 0, n, opts.limits.max_pickle_bytes) else {
                break;
            };
            let a = analyze(&head, &opts.limits.pickle);
            if hidden_pickle(&a) {
                // It imports or calls: analyse all of it, whatever its name.
                let loc = Location {
                    entry: Some(name.clone()),
                    ..Location::default()
                };
                match (n < body.len())
                    .then(|| bytes_at(&*body, 0, body.len(), opts.limits.max_pickle_bytes))
                {
                    Some(Ok(all)) => {
                        add_pickle(&analyze(&all, &opts.limits.pickle), loc, opts, out)
                    }
                    _ => add_pickle(&a, loc, opts, out),
                }
                break;
            }
            if n == body.len() || !cut_short(&a, body.len()) || n >= PROBE_MAX {
                break; // unpickling it would fail, or end, without doing anything
            }
            probe = probe.saturating_mul(8);
        }
    }
}

/// Whether a member that is not named as a pickle holds one that matters: unpickling it would
/// call something, import a known-dangerous name, or it is a complete pickle that imports or
/// mutates. (Tensor bytes can open like an opcode or even a GLOBAL by chance; they never
/// complete a pickle, call, or name a dangerous primitive.)
fn hidden_pickle(a: &Analysis<'_>) -> bool {
    let complete = a.pickles.first().is_some_and(|p| p.end.is_some());
    let acts = !(a.imports.is_empty() && a.builds.is_empty() && a.mutations.is_empty());
    !a.calls.is_empty()
        || a.imports
            .iter()
            .any(|i| i.dynamic || policy::danger(&i.module, &i.name).is_some())
        || (complete && acts)
}
