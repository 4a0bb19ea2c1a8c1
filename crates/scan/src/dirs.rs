//! Directory containers: torch.distributed.checkpoint (DCP) directories — including
//! Lightning's sharded checkpoints — DeepSpeed checkpoint directories, and litdata datasets.
//! Each is read the way its loader reads it: DCP items located through `.metadata`'s
//! `storage_data`, DeepSpeed's `latest` tag resolved, litdata's pickle fields found chunk by
//! chunk.

use std::collections::{BTreeMap, BTreeSet};

use ckptguard_formats::dir::{is_contained, Dir};
use ckptguard_formats::io::{bytes_at, SubRange};
use ckptguard_formats::litdata;
use ckptguard_pickle::{analyze, Analysis, ObjId, Value};

use crate::finding::{Code, Finding};
use crate::{add_pickle, scan_source, FileScan, Location, ScanOptions};

/// What kind of directory container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirKind {
    /// torch.distributed.checkpoint: `.metadata` + `*.distcp` (+ Lightning's `meta.pt`).
    Dcp,
    /// DeepSpeed: `latest`, `<tag>/*_model_states.pt`, `*_optim_states.pt`, `zero_to_fp32.py`.
    DeepSpeed,
    /// litdata optimized dataset: `index.json` + chunk files.
    Litdata,
}

impl DirKind {
    /// Format name used in reports.
    pub fn format(self) -> &'static str {
        match self {
            DirKind::Dcp => "dcp-dir",
            DirKind::DeepSpeed => "deepspeed-dir",
            DirKind::Litdata => "litdata-dir",
        }
    }
}

/// Whether the directory is a container, and which.
pub fn detect(dir: &dyn Dir) -> Option<DirKind> {
    let files = dir.files();
    if files.iter().any(|f| f == ".metadata") {
        return Some(DirKind::Dcp);
    }
    if litdata::is_dataset(dir) {
        return Some(DirKind::Litdata);
    }
    let ds_file = |f: &String| f.ends_with("_model_states.pt") || f.ends_with("_optim_states.pt");
    if files.iter().any(|f| f == "latest")
        || (files.iter().any(ds_file) && files.iter().any(|f| f.ends_with("zero_to_fp32.py")))
    {
        return Some(DirKind::DeepSpeed);
    }
    None
}

/// The scan of a directory container: findings about the container itself, and one scan per
/// file (by relative path).
#[derive(Debug, Default)]
pub struct DirScan {
    /// Findings about the container as a whole (`latest`, `relative_path`, metadata).
    pub container: FileScan,
    /// Per-file scans, by relative path.
    pub files: BTreeMap<String, FileScan>,
}

/// Scans a directory container.
pub fn scan_dir(dir: &dyn Dir, kind: DirKind, opts: &ScanOptions) -> DirScan {
    let mut out = DirScan::default();
    out.container.format = kind.format().into();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    match kind {
        DirKind::Dcp => scan_dcp(dir, opts, &mut out, &mut handled),
        DirKind::DeepSpeed => scan_deepspeed(dir, &mut out),
        DirKind::Litdata => scan_litdata(dir, opts, &mut out, &mut handled),
    }
    for rel in dir.files() {
        if handled.contains(&rel) {
            continue;
        }
        let scan = match dir.open(&rel) {
            Ok(src) => scan_source(&*src, &rel, opts),
            Err(e) => FileScan {
                format: "unknown".into(),
                findings: vec![Finding::new(
                    Code::Unreadable,
                    format!("cannot read {rel}: {e}"),
                )],
                ..FileScan::default()
            },
        };
        out.files.insert(rel, scan);
    }
    out
}

fn state_dict(a: &Analysis<'_>, id: ObjId) -> Option<ObjId> {
    match a.value(id) {
        Value::Object(o) => o.state.last().copied(),
        Value::Dict(_) => Some(id),
        _ => None,
    }
}

fn field(a: &Analysis<'_>, dict: ObjId, key: &str) -> Option<ObjId> {
    match a.value(dict) {
        Value::Dict(p) => p
            .iter()
            .rev()
            .find(|(k, _)| a.as_str(*k) == Some(key))
            .map(|(_, v)| *v),
        _ => None,
    }
}

fn int(a: &Analysis<'_>, id: ObjId) -> Option<i64> {
    match a.value(id) {
        Value::Int(v) => Some(*v),
        _ => None,
    }
}

/// One DCP item: where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcpItem {
    /// The state-dict key (`model.layer.weight`).
    pub fqn: String,
    /// Chunk offsets of the item within the full tensor (`MetadataIndex.offset`), if any.
    pub chunk_offset: Option<Vec<i64>>,
    /// Data file, relative to the checkpoint directory (not yet checked for containment).
    pub path: String,
    /// Offset of the item's bytes in the data file.
    pub offset: u64,
    /// Length of the item's bytes.
    pub length: u64,
}

/// Reads `storage_data` out of the symbolic `Metadata` object of an analysed `.metadata`
/// pickle: where every item of a DCP checkpoint is stored. Shared by the scanner and the loader.
pub fn dcp_items(a: &Analysis<'_>) -> Result<Vec<DcpItem>, String> {
    let root = a
        .pickles
        .first()
        .and_then(|p| p.root)
        .ok_or("the pickle has no result")?;
    let state = state_dict(a, root).ok_or("Metadata has no state")?;
    let sd = field(a, state, "storage_data").ok_or("Metadata has no storage_data")?;
    let Value::Dict(pairs) = a.value(sd) else {
        return Err("storage_data is not a dict".into());
    };
    let mut items = Vec::new();
    for (k, v) in pairs {
        let key_state = state_dict(a, *k);
        let fqn = key_state
            .and_then(|s| field(a, s, "fqn"))
            .and_then(|f| a.as_str(f))
            .unwrap_or("?")
            .to_string();
        // MetadataIndex.offset: a torch.Size (REDUCE of a tuple) or a plain tuple.
        let ints = |id: ObjId| match a.value(id) {
            Value::Tuple(t) | Value::List(t) => {
                t.iter().map(|x| int(a, *x)).collect::<Option<Vec<i64>>>()
            }
            _ => None,
        };
        let chunk_offset =
            key_state
                .and_then(|s| field(a, s, "offset"))
                .and_then(|o| match a.value(o) {
                    Value::Object(ob) => a
                        .as_tuple(ob.args)
                        .and_then(|t| t.first().copied())
                        .and_then(ints),
                    _ => ints(o),
                });
        let info =
            state_dict(a, *v).ok_or_else(|| format!("storage info of {fqn:?} has no state"))?;
        let path = field(a, info, "relative_path")
            .and_then(|p| a.as_str(p))
            .ok_or_else(|| format!("{fqn:?}: relative_path is not a string"))?;
        let offset = field(a, info, "offset")
            .and_then(|o| int(a, o))
            .ok_or_else(|| format!("{fqn:?}: offset is not an int"))?;
        let length = field(a, info, "length")
            .and_then(|o| int(a, o))
            .ok_or_else(|| format!("{fqn:?}: length is not an int"))?;
        let (Ok(offset), Ok(length)) = (u64::try_from(offset), u64::try_from(length)) else {
            return Err(format!("{fqn:?}: negative offset or length"));
        };
        items.push(DcpItem {
            fqn,
            chunk_offset,
            path: path.to_string(),
            offset,
            length,
        });
    }
    Ok(items)
}

fn scan_dcp(dir: &dyn Dir, opts: &ScanOptions, out: &mut DirScan, handled: &mut BTreeSet<String>) {
    let files: BTreeSet<String> = dir.files().into_iter().collect();
    let meta = match dir.open(".metadata").and_then(|m| {
        bytes_at(&*m, 0, m.len(), opts.limits.max_pickle_bytes).map(|b| b.into_owned())
    }) {
        Ok(b) => b,
        Err(e) => {
            out.container.findings.push(Finding::new(
                Code::ContainerMalformed,
                format!(".metadata not readable: {e}"),
            ));
            return;
        }
    };
    let a = analyze(&meta, &opts.limits.pickle);
    let items = match dcp_items(&a) {
        Ok(i) => i,
        Err(why) => {
            out.container.findings.push(
                Finding::new(Code::ContainerMalformed, format!("DCP .metadata: cannot locate the items ({why}); data files were scanned as standalone files"))
                    .entry(".metadata"),
            );
            return;
        }
    };
    let mut by_file: BTreeMap<String, Vec<&DcpItem>> = BTreeMap::new();
    for it in &items {
        if !is_contained(&it.path) {
            out.container.findings.push(
                Finding::new(Code::PathEscape, format!("item {:?} is stored at relative_path {:?}, outside the checkpoint directory", it.fqn, it.path))
                    .entry(".metadata")
                    .why("torch.distributed.checkpoint joins relative_path to the directory unchecked and loads whatever file it reaches")
                    .help("Do not load this checkpoint."),
            );
            continue;
        }
        if !files.contains(&it.path) {
            out.container.findings.push(
                Finding::new(
                    Code::ContainerMissingFile,
                    format!(
                        "item {:?} is stored in {:?}, which is missing",
                        it.fqn, it.path
                    ),
                )
                .entry(".metadata"),
            );
            continue;
        }
        by_file.entry(it.path.clone()).or_default().push(it);
    }
    for (path, its) in by_file {
        let mut scan = FileScan {
            format: "dcp-data".into(),
            ..FileScan::default()
        };
        match dir.open(&path) {
            Ok(src) => {
                for it in its {
                    let label = format!("item {} [{}+{}]", it.fqn, it.offset, it.length);
                    let Some(sub) = SubRange::new(&*src, it.offset, it.length) else {
                        scan.findings.push(
                            Finding::new(
                                Code::ContainerMalformed,
                                format!("{label} lies outside {path} ({} bytes)", src.len()),
                            )
                            .at(it.offset),
                        );
                        continue;
                    };
                    let s = scan_source(&sub, "item.pt", opts);
                    for mut f in s.findings {
                        f.entry = Some(match f.entry {
                            Some(e) => format!("{label} {e}"),
                            None => label.clone(),
                        });
                        scan.findings.push(f);
                    }
                    scan.globals.extend(s.globals);
                }
            }
            Err(e) => scan.findings.push(Finding::new(
                Code::Unreadable,
                format!("cannot read {path}: {e}"),
            )),
        }
        handled.insert(path.clone());
        out.files.insert(path, scan);
    }
}

const SCRIPT_SUFFIXES: &[&str] = &[
    ".py", ".sh", ".bash", ".ps1", ".bat", ".cmd", ".pyc", ".so", ".dll", ".dylib", ".exe",
];

fn scan_deepspeed(dir: &dyn Dir, out: &mut DirScan) {
    let files = dir.files();
    if files.iter().any(|f| f == "latest") {
        match dir
            .open("latest")
            .and_then(|s| bytes_at(&*s, 0, s.len().min(4096), 4096).map(|b| b.into_owned()))
        {
            Ok(b) => {
                let tag = String::from_utf8_lossy(&b).trim().to_string();
                if !is_contained(&tag) || tag.contains('/') || tag.contains('\\') {
                    out.container.findings.push(
                        Finding::new(Code::PathEscape, format!("`latest` names the tag {tag:?}, which is not a directory inside the checkpoint"))
                            .entry("latest")
                            .why("DeepSpeed and Lightning join the tag to the checkpoint path unchecked and torch.load the model and optimizer states they find there")
                            .help("Do not load this checkpoint."),
                    );
                } else if !files.iter().any(|f| f.starts_with(&format!("{tag}/"))) {
                    out.container.findings.push(
                        Finding::new(
                            Code::ContainerMissingFile,
                            format!("`latest` names the tag {tag:?}, which does not exist"),
                        )
                        .entry("latest"),
                    );
                }
            }
            Err(e) => out.container.findings.push(
                Finding::new(Code::Unreadable, format!("cannot read latest: {e}")).entry("latest"),
            ),
        }
    }
    let scripts: Vec<&String> = files
        .iter()
        .filter(|f| {
            SCRIPT_SUFFIXES
                .iter()
                .any(|s| f.to_ascii_lowercase().ends_with(s))
        })
        .collect();
    if !scripts.is_empty() {
        let list = scripts
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        out.container.findings.push(
            Finding::new(Code::ShippedCode, format!("executable code shipped with the checkpoint: {list}"))
                .why("loading does not run it, but users are told to run zero_to_fp32.py; a tampered script runs with their rights")
                .help("Run only scripts from your own DeepSpeed installation."),
        );
    }
}

fn scan_litdata(
    dir: &dyn Dir,
    opts: &ScanOptions,
    out: &mut DirScan,
    handled: &mut BTreeSet<String>,
) {
    let mut per_chunk: BTreeMap<String, FileScan> = BTreeMap::new();
    let issues =
        litdata::pickle_fields(dir, &opts.limits.litdata, &mut |f: litdata::PickleField| {
            let scan = per_chunk
                .entry(f.chunk.clone())
                .or_insert_with(|| FileScan {
                    format: "litdata-chunk".into(),
                    ..FileScan::default()
                });
            let a = analyze(&f.data, &opts.limits.pickle);
            let loc = Location {
                entry: Some(format!("item {} field {}", f.item, f.field)),
                base: f.offset,
                ..Location::default()
            };
            add_pickle(&a, loc, opts, scan);
        });
    for i in issues {
        let code = match &i {
            litdata::LitdataIssue::Encrypted { .. } => Code::Encrypted,
            litdata::LitdataIssue::PathEscapes { .. } => Code::PathEscape,
            litdata::LitdataIssue::MissingChunk { .. } => Code::ContainerMissingFile,
            litdata::LitdataIssue::Limit { .. } => Code::LimitExceeded,
            litdata::LitdataIssue::DataSpecImport { .. } => Code::UnknownImport,
            _ => Code::ContainerMalformed,
        };
        let mut f = Finding::new(code, i.message());
        f.blocking = i.blocking();
        if !f.blocking && code == Code::ContainerMalformed {
            // e.g. a chunk file no index lists: litdata never reads it.
            f = f.severity(crate::Severity::Low);
        }
        out.container.findings.push(f);
    }
    for rel in dir.files() {
        let lower = rel.to_ascii_lowercase();
        if lower.starts_with("chunk-") || lower.contains("/chunk-") {
            handled.insert(rel.clone());
            let scan = per_chunk.remove(&rel).unwrap_or_else(|| FileScan {
                format: "litdata-chunk".into(),
                ..FileScan::default()
            });
            out.files.insert(rel, scan);
        }
    }
    // Chunks named by the index but not on the usual pattern.
    for (rel, scan) in per_chunk {
        handled.insert(rel.clone());
        out.files.insert(rel, scan);
    }
}
