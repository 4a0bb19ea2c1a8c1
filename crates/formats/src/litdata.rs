//! litdata optimized datasets (`litdata.optimize` output read by `StreamingDataset`).
//!
//! CERT VU#252619: litdata's `PickleSerializer.deserialize` is `pickle.loads(data)`, and
//! `optimize` picks that serializer for every leaf no dedicated serializer claims (sets,
//! complex numbers, arbitrary objects), so iterating a dataset runs `pickle.loads` on bytes the
//! dataset author chose. This module locates every such byte string without executing anything.
//!
//! What is mirrored (litdata 0.2.76, `litdata/streaming/`):
//!
//! * `config.py::ChunksConfig` / `utilities/dataset_utilities.py::load_index_file`: the merged
//!   `index.json` (`{"chunks": [...], "config": {...}}`), or a MosaicML MDS index
//!   (`{"shards": [...]}`) adapted by `adapt_mds_shards_to_chunks`. Per-rank `N.index.json` and
//!   per-node `N-index.json` files (`writer.py::_is_worker_index_file` / `_is_node_index_file`)
//!   are read when no merged `index.json` exists.
//! * `item_loader.py::BaseItemLoader._data_format_to_key` + `serializers.py::_SERIALIZERS`:
//!   which serializer each `data_format` entry selects. `"a:b"` selects `b` when `b` is a
//!   serializer name (so `"graph:pickle"` and `"x:pickle"` are the pickle serializer), else `a`.
//!   Two serializers call `pickle.loads`: `PickleSerializer` (whole field) and
//!   `GraphSerializer` (whole field when `data_format` ends in `pickle` or the field lacks the
//!   `LDGR` magic; otherwise every packed sub-field of kind 1 or named `_meta`).
//! * Whole-file compression (`compression` set, `compression_level` absent or `"chunk"`):
//!   `ChunksConfig.try_decompress` reads `filename.replace(".{compression}", "")` when that file
//!   already exists, and only otherwise inflates the listed file. Both are walked.
//! * `framed_zstd.py::parse_framed_header` / `inflate_frame`: chunks starting with `LDFZ01\0\0`
//!   (`compression_level="batch"`, the default for `compression="zstd"`) are framed whatever
//!   the config says; every frame is inflated to exactly its `uncompressed_len`.
//! * `PyTreeLoader._maybe_inflate_sample`: with `compression_level="sample"` every item is its
//!   own zstd stream.
//! * `PyTreeLoader._load_data`: item `i` is read from the offset pair at byte `4 * (1 + i)` for
//!   every `i < chunk_size` of the index, even past the header's own item count, and a pair
//!   whose end precedes its start reads to the end of the file (`FileIO.read(-n)`). Items are
//!   walked for `max(header count, chunk_size)`.
//! * `PyTreeLoader.deserialize` / `mds_deserialize`: the `u32` size header and the field
//!   slices, with Python's clamping slice semantics (a truncated field is still handed to
//!   `pickle.loads`, so it is still reported).
//! * `Reader.read` with `on_demand_bytes`: without compression or encryption an item may be
//!   fetched by byte range and deserialized without the framed/sample handling, so such chunks
//!   are also walked in that interpretation.
//! * Encryption (`utilities/encryption.py`, Fernet or RSA, chunk or sample level) cannot be
//!   looked through: it is reported, never skipped.
//! * `utilities/_pytree.py::_defaultdict_deserialize`: a `data_spec` containing a
//!   `collections.defaultdict` node makes litdata `importlib.import_module` a module named by
//!   the dataset when the index is opened; that is reported too.
//!
//! Loaders that never reach a serializer's `deserialize` (`TokensLoader`, `ParquetLoader`,
//! `TemporalArrayLoader`) have nothing to walk. Nothing here opens paths: files come through a
//! [`Dir`].

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use serde_json::Value;

use crate::dir::{is_contained, Dir};
use crate::io::{bytes_at, read_vec, ReadAt};

/// Bounds on what one dataset may make the reader do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LitdataLimits {
    /// Largest `index.json` read (bytes).
    pub max_index_bytes: u64,
    /// Largest decompressed chunk (bytes), across every zstd layer of one chunk file.
    pub max_chunk_bytes: u64,
    /// Most items walked in one chunk.
    pub max_items: u64,
    /// Largest zstd expansion allowed, relative to the chunk file's size.
    pub max_ratio: u64,
}

impl Default for LitdataLimits {
    fn default() -> Self {
        Self {
            max_index_bytes: 64 << 20,
            max_chunk_bytes: 4 << 30,
            max_items: 10_000_000,
            max_ratio: 1000,
        }
    }
}

/// One field that litdata would pass to `pickle.loads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickleField {
    /// Relative path (in the [`Dir`]) of the chunk file.
    pub chunk: String,
    /// Item index within the chunk.
    pub item: u64,
    /// Field index within the item (position in `data_format`).
    pub field: usize,
    /// Offset of `data` within the decompressed chunk, or within the file when the chunk is
    /// not compressed. For framed chunks (`compression_level="batch"`) it is the offset within
    /// the concatenated uncompressed item bytes; for `compression_level="sample"` it is the
    /// offset within the inflated item.
    pub offset: u64,
    /// The bytes `pickle.loads` would receive.
    pub data: Vec<u8>,
}

/// Something that kept a litdata dataset from being read completely or cleanly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LitdataIssue {
    /// The dataset (`chunk: None`) or a chunk is encrypted: its items cannot be inspected.
    Encrypted { chunk: Option<String> },
    /// Structure that litdata's writer never produces, or that litdata's reader rejects.
    Malformed { chunk: Option<String>, why: String },
    /// A chunk listed in the index is not in the directory.
    MissingChunk { chunk: String },
    /// A chunk filename from the index leaves the dataset directory (not opened).
    PathEscapes { chunk: String },
    /// A limit from [`LitdataLimits`] was hit (e.g. a zstd bomb); the rest was not walked.
    Limit {
        chunk: Option<String>,
        what: &'static str,
    },
    /// A `data_format` entry (or `item_loader`) naming no built-in serializer (or loader):
    /// litdata would use a caller-registered one, which may call `pickle.loads`.
    UnknownFormat { format: String },
    /// `data_spec` has a `collections.defaultdict` node: opening the dataset imports `module`
    /// and takes its attribute `name` (`_pytree._defaultdict_deserialize`).
    DataSpecImport { module: String, name: String },
    /// A chunk-like file that no index lists (litdata never reads it): walked when its layout
    /// could be told, and this says what could not be done with it.
    Unlisted { chunk: String, why: String },
}

impl LitdataIssue {
    /// A one-line description.
    pub fn message(&self) -> String {
        match self {
            Self::Encrypted { chunk: None } => {
                "litdata dataset is encrypted; its pickle fields cannot be inspected".to_string()
            }
            Self::Encrypted { chunk: Some(c) } => {
                format!("litdata chunk {c} is encrypted; its pickle fields cannot be inspected")
            }
            Self::Malformed { chunk: None, why } => format!("malformed litdata dataset: {why}"),
            Self::Malformed { chunk: Some(c), why } => format!("malformed litdata chunk {c}: {why}"),
            Self::MissingChunk { chunk } => format!("litdata chunk {chunk} is listed in the index but missing"),
            Self::PathEscapes { chunk } => {
                format!("litdata chunk filename {chunk:?} escapes the dataset directory (not opened)")
            }
            Self::Limit { chunk: None, what } => format!("litdata dataset exceeds the limit on {what}"),
            Self::Limit { chunk: Some(c), what } => format!("litdata chunk {c} exceeds the limit on {what}"),
            Self::UnknownFormat { format } => format!(
                "litdata data format {format:?} names no built-in serializer or loader; a registered one may unpickle"
            ),
            Self::DataSpecImport { module, name } => format!(
                "litdata data_spec has a defaultdict whose factory is {module}.{name}: opening the dataset imports {module}"
            ),
            Self::Unlisted { chunk, why } => format!("unlisted litdata chunk-like file {chunk}: {why}"),
        }
    }

    /// Whether some item could not be analysed (or the dataset does something that cannot be
    /// checked), so the dataset must not be called safe on the strength of its pickle fields.
    pub fn blocking(&self) -> bool {
        !matches!(self, Self::Unlisted { .. })
    }
}

const INDEX_FILENAME: &str = "index.json";
const FRAMED_MAGIC: &[u8; 8] = b"LDFZ01\0\0";
const ARROW_FOOTER_MAGIC: &[u8; 8] = b"LDARW01\0";
const GRAPH_MAGIC: &[u8; 4] = b"LDGR";
const GRAPH_KIND_PICKLE: u8 = 1;
const GRAPH_META_KEY: &[u8] = b"_meta";
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Issues kept per dataset (a hostile index can list millions of missing chunks).
const MAX_ISSUES: usize = 10_000;
/// Decompression allowed whatever the ratio (small chunks of zeros are legitimate).
const MIN_BUDGET: u64 = 1 << 20;

/// `serializers._SERIALIZERS` keys.
const SERIALIZERS: [&str; 24] = [
    "str",
    "text",
    "bool",
    "int",
    "float",
    "video",
    "audio",
    "image",
    "nifti",
    "mesh",
    "pdf",
    "graph",
    "tifffile",
    "file",
    "pil",
    "jpeg",
    "jpeg_array",
    "bytes",
    "no_header_numpy",
    "numpy",
    "no_header_tensor",
    "tensor",
    "json",
    "pickle",
];

/// MosaicML MDS column encodings (part before any `:`); only `pkl` unpickles.
const MDS_ENCODINGS: [&str; 27] = [
    "bytes",
    "str",
    "int",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "str_int",
    "str_float",
    "str_decimal",
    "pil",
    "jpeg",
    "jpegarray",
    "png",
    "list[pil]",
    "list[jpeg]",
    "list[png]",
    "pkl",
    "json",
    "ndarray",
];

/// `defaultdict` factories whose import is harmless.
const SAFE_FACTORIES: [&str; 10] = [
    "list",
    "dict",
    "set",
    "int",
    "float",
    "str",
    "tuple",
    "bytes",
    "bool",
    "frozenset",
];

// ------------------------------------------------------------------------------------------
// Public entry points
// ------------------------------------------------------------------------------------------

/// Whether the directory is a litdata dataset: an `index.json` (or `N.index.json` files) with
/// litdata's shape, at the top or in a subdirectory.
pub fn is_dataset(dir: &dyn Dir) -> bool {
    let limits = LitdataLimits::default();
    let files = dir.files();
    for entry in discover(&files).values() {
        for rel in entry.index.iter().chain(entry.ranks.iter()) {
            match load_json(dir, rel, &limits) {
                Ok(v) if has_shape(&v) => return true,
                Ok(_) => {}
                Err(LoadError::TooBig) => {
                    if peek_looks_like_index(dir, rel) {
                        return true;
                    }
                }
                Err(_) => {}
            }
        }
    }
    false
}

/// Walks every chunk listed in the index, every item, every field whose serializer ends in
/// `pickle.loads`, calling `visit` for each; returns the issues.
pub fn pickle_fields(
    dir: &dyn Dir,
    limits: &LitdataLimits,
    visit: &mut dyn FnMut(PickleField),
) -> Vec<LitdataIssue> {
    let files = dir.files();
    let roots = discover(&files);
    let mut w = Walker {
        dir,
        limits,
        visit,
        issues: Vec::new(),
        files: files.iter().map(String::as_str).collect(),
        listed: HashSet::new(),
        walked: HashSet::new(),
        reported_formats: HashSet::new(),
        seen_issues: HashSet::new(),
        issues_capped: false,
    };
    let mut root_cfgs: Vec<(String, Config)> = Vec::new();
    let mut any_index = false;
    for (prefix, entry) in &roots {
        let mut sources: Vec<(String, Value)> = Vec::new();
        let mut use_ranks = true;
        if let Some(ix) = &entry.index {
            match load_json(dir, ix, limits) {
                Ok(v) if has_shape(&v) => {
                    sources.push((ix.clone(), v));
                    use_ranks = false;
                }
                Ok(_) => {}
                Err(e) => {
                    use_ranks = false;
                    w.index_error(ix, prefix, e);
                }
            }
        }
        if use_ranks {
            for r in &entry.ranks {
                match load_json(dir, r, limits) {
                    Ok(v) if has_shape(&v) => sources.push((r.clone(), v)),
                    Ok(_) => {}
                    Err(e) => w.index_error(r, prefix, e),
                }
            }
        }
        for (rel, v) in sources {
            any_index = true;
            if let Some(cfg) = w.walk_index(prefix, &rel, &v) {
                root_cfgs.push((prefix.clone(), cfg));
            }
        }
    }
    if !any_index && w.issues.is_empty() {
        w.issues.push(LitdataIssue::Malformed {
            chunk: None,
            why: "no litdata index.json found".to_string(),
        });
    }
    // Chunk-like files no index lists.
    for f in &files {
        if !is_chunk_like(f) || w.listed.contains(f.as_str()) {
            continue;
        }
        let owner = root_cfgs
            .iter()
            .filter(|(p, _)| f.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len());
        if let Some((_, cfg)) = owner {
            let cfg = cfg.clone();
            w.walk_unlisted(f, &cfg);
        }
    }
    w.issues
}

// ------------------------------------------------------------------------------------------
// Index discovery and parsing
// ------------------------------------------------------------------------------------------

#[derive(Default, Debug)]
struct RootFiles {
    index: Option<String>,
    ranks: Vec<String>,
}

fn split_rel(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// `{rank}.index.json` or `{node}-index.json`.
fn is_rank_index(base: &str) -> bool {
    let digits = base.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && matches!(&base[digits..], ".index.json" | "-index.json")
}

fn discover(files: &[String]) -> BTreeMap<String, RootFiles> {
    let mut roots: BTreeMap<String, RootFiles> = BTreeMap::new();
    for f in files {
        let (prefix, base) = split_rel(f);
        if base == INDEX_FILENAME {
            roots.entry(prefix.to_string()).or_default().index = Some(f.clone());
        } else if is_rank_index(base) {
            roots
                .entry(prefix.to_string())
                .or_default()
                .ranks
                .push(f.clone());
        }
    }
    roots
}

fn is_chunk_like(rel: &str) -> bool {
    let (_, base) = split_rel(rel);
    base.ends_with(".bin") || base.ends_with(".mds") || base.ends_with(".mds.zstd")
}

enum LoadError {
    TooBig,
    Io(String),
    Json(String),
}

fn load_json(dir: &dyn Dir, rel: &str, limits: &LitdataLimits) -> Result<Value, LoadError> {
    let src = dir.open(rel).map_err(|e| LoadError::Io(e.to_string()))?;
    let len = src.len();
    if len > limits.max_index_bytes {
        return Err(LoadError::TooBig);
    }
    let data = read_vec(&*src, 0, len).map_err(|e| LoadError::Io(e.to_string()))?;
    serde_json::from_slice(&data).map_err(|e| LoadError::Json(e.to_string()))
}

fn peek_looks_like_index(dir: &dyn Dir, rel: &str) -> bool {
    let Ok(src) = dir.open(rel) else { return false };
    let n = src.len().min(256);
    let Ok(head) = read_vec(&*src, 0, n) else {
        return false;
    };
    let text = String::from_utf8_lossy(&head);
    text.trim_start().starts_with('{')
        && (text.contains("\"chunks\"") || text.contains("\"shards\""))
}

/// litdata's shape: `{"chunks": [...], "config": {...}}`, or an MDS `{"shards": [...]}`.
fn has_shape(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    match o.get("chunks") {
        Some(c) => c.is_array() && o.get("config").is_some_and(Value::is_object),
        None => o.get("shards").is_some_and(Value::is_array),
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A JSON value used as a Python int (`bool` is an int; integral floats are accepted here).
fn py_int(v: &Value) -> Option<i128> {
    match v {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 1e30).then_some(f as i128)
            }
        }
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FieldKind {
    /// `PickleSerializer`: `pickle.loads(field)`.
    Pickle,
    /// `GraphSerializer`; `fallback` when `data_format` ends in `pickle`.
    Graph { fallback: bool },
    /// A built-in serializer that never unpickles.
    Other,
    /// No built-in serializer (reported as [`LitdataIssue::UnknownFormat`]).
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Level {
    Chunk,
    Batch,
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Loader {
    PyTree,
    /// Tokens / Parquet / TemporalArray: never calls a serializer's `deserialize`.
    NoPickle,
    /// A caller-defined loader (walked as PyTree, and reported).
    Custom,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Config {
    fields: Vec<FieldKind>,
    /// `config["compression"]` when truthy.
    compression: Option<String>,
    level: Level,
    encrypted: bool,
    loader: Loader,
    mds: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    /// Item bytes as stored.
    Raw,
    /// Item bytes are one zstd stream (`compression_level="sample"`).
    Inflate,
}

impl Config {
    /// Whether any field can reach `pickle.loads`.
    fn may_unpickle(&self) -> bool {
        self.loader != Loader::NoPickle
            && self
                .fields
                .iter()
                .any(|k| matches!(k, FieldKind::Pickle | FieldKind::Graph { .. }))
    }
    /// The whole-file compressor name, when chunks are `.{compression}.bin` files.
    fn chunk_compressor(&self) -> Option<&str> {
        match (&self.compression, self.level) {
            (Some(c), Level::Chunk) => Some(c.as_str()),
            _ => None,
        }
    }
    /// Interpretations of a classic chunk's item bytes.
    fn classic_modes(&self) -> &'static [Mode] {
        match (self.level, self.compression.is_some()) {
            (Level::Sample, true) => &[Mode::Inflate],
            // Local reads inflate; `on_demand_bytes` range reads (no compression) do not.
            (Level::Sample, false) => &[Mode::Inflate, Mode::Raw],
            _ => &[Mode::Raw],
        }
    }
    fn framed_modes(&self) -> &'static [Mode] {
        match self.level {
            Level::Sample => &[Mode::Inflate],
            _ => &[Mode::Raw],
        }
    }
}

/// `BaseItemLoader._data_format_to_key` + the serializer's behaviour.
fn field_kind(df: &str, mds: bool) -> Result<FieldKind, String> {
    if mds {
        let base = df.split(':').next().unwrap_or(df);
        if MDS_ENCODINGS.contains(&base) {
            return Ok(if base == "pkl" {
                FieldKind::Pickle
            } else {
                FieldKind::Other
            });
        }
    }
    let key = if df.contains(':') {
        let parts: Vec<&str> = df.split(':').collect();
        if parts.len() != 2 {
            return Err(format!(
                "data_format {df:?} has more than one ':' (litdata's _data_format_to_key raises)"
            ));
        }
        if SERIALIZERS.contains(&parts[1]) {
            parts[1]
        } else {
            parts[0]
        }
    } else {
        df
    };
    Ok(match key {
        "pickle" => FieldKind::Pickle,
        "graph" => FieldKind::Graph {
            fallback: df.ends_with("pickle"),
        },
        k if SERIALIZERS.contains(&k) => FieldKind::Other,
        _ => FieldKind::Unknown,
    })
}

/// `framed_zstd.parse_compression_level`.
fn parse_level(v: Option<&Value>) -> Result<Level, String> {
    match v {
        None | Some(Value::Null) => Ok(Level::Chunk),
        Some(Value::String(s)) if s.is_empty() => Ok(Level::Chunk),
        Some(Value::String(s)) => match s.trim().to_lowercase().as_str() {
            "chunk" => Ok(Level::Chunk),
            "batch" => Ok(Level::Batch),
            "sample" => Ok(Level::Sample),
            _ => Err(format!(
                "compression_level {s:?} is not chunk, batch or sample"
            )),
        },
        Some(other) => Err(format!(
            "compression_level {other} is not chunk, batch or sample"
        )),
    }
}

/// `compression._COMPRESSORS` keys: `zstd` and `zstd:1` .. `zstd:22`.
fn known_compressor(c: &str) -> bool {
    c == "zstd" || (1..=22).any(|l| c.strip_prefix("zstd:") == Some(l.to_string().as_str()))
}

struct ChunkRef {
    filename: String,
    chunk_size: Option<u64>,
    column_sizes: Option<Vec<Value>>,
}

// ------------------------------------------------------------------------------------------
// Walker
// ------------------------------------------------------------------------------------------

struct Walker<'a> {
    dir: &'a dyn Dir,
    limits: &'a LitdataLimits,
    visit: &'a mut dyn FnMut(PickleField),
    issues: Vec<LitdataIssue>,
    files: HashSet<&'a str>,
    listed: HashSet<String>,
    walked: HashSet<String>,
    reported_formats: HashSet<String>,
    seen_issues: HashSet<LitdataIssue>,
    issues_capped: bool,
}

/// Per chunk-file state: decompression budget, work caps, and issue de-duplication.
struct ChunkState {
    name: String,
    unlisted: bool,
    file_len: u64,
    budget_left: u64,
    budget_is_ratio: bool,
    decompressed: u64,
    item_bytes: u64,
    items_visited: u64,
    tags: HashSet<&'static str>,
    stopped: bool,
}

enum ZErr {
    /// The output would exceed the allowed size.
    Limit,
    Bad(String),
}

impl ChunkState {
    fn new(name: &str, file_len: u64, limits: &LitdataLimits, unlisted: bool) -> Self {
        let by_ratio = limits.max_ratio.saturating_mul(file_len).max(MIN_BUDGET);
        Self {
            name: name.to_string(),
            unlisted,
            file_len,
            budget_left: by_ratio.min(limits.max_chunk_bytes),
            budget_is_ratio: by_ratio < limits.max_chunk_bytes,
            decompressed: 0,
            item_bytes: 0,
            items_visited: 0,
            tags: HashSet::new(),
            stopped: false,
        }
    }
    fn budget_what(&self) -> &'static str {
        if self.budget_is_ratio {
            "zstd expansion ratio"
        } else {
            "decompressed chunk size"
        }
    }
    fn spend(&mut self, n: u64) {
        self.budget_left = self.budget_left.saturating_sub(n);
        self.decompressed = self.decompressed.saturating_add(n);
    }
}

impl<'a> Walker<'a> {
    // -------------------------------------------------------------- issues

    fn push(&mut self, issue: LitdataIssue) {
        if self.issues.len() >= MAX_ISSUES {
            if !self.issues_capped {
                self.issues_capped = true;
                self.issues.push(LitdataIssue::Limit {
                    chunk: None,
                    what: "number of issues reported",
                });
            }
            return;
        }
        if self.seen_issues.insert(issue.clone()) {
            self.issues.push(issue);
        }
    }

    /// Reports a chunk-level issue once per `tag` per chunk (unlisted files: non-blocking).
    fn report(&mut self, st: &mut ChunkState, tag: &'static str, issue: LitdataIssue) {
        if !st.tags.insert(tag) {
            return;
        }
        let issue = if st.unlisted {
            LitdataIssue::Unlisted {
                chunk: st.name.clone(),
                why: issue.message(),
            }
        } else {
            issue
        };
        self.push(issue);
    }

    fn malformed(&mut self, st: &mut ChunkState, tag: &'static str, why: String) {
        let chunk = Some(st.name.clone());
        self.report(st, tag, LitdataIssue::Malformed { chunk, why });
    }

    fn limit(&mut self, st: &mut ChunkState, what: &'static str) {
        let chunk = Some(st.name.clone());
        self.report(st, what, LitdataIssue::Limit { chunk, what });
        st.stopped = true;
    }

    fn index_error(&mut self, rel: &str, prefix: &str, e: LoadError) {
        let issue = match e {
            LoadError::TooBig => LitdataIssue::Limit {
                chunk: Some(rel.to_string()),
                what: "index.json size",
            },
            LoadError::Io(why) => LitdataIssue::Malformed {
                chunk: Some(rel.to_string()),
                why,
            },
            LoadError::Json(why) => {
                // Only an index that looks like litdata's (or sits next to chunk files) counts.
                let looks = peek_looks_like_index(self.dir, rel)
                    || self
                        .files
                        .iter()
                        .any(|f| f.starts_with(prefix) && is_chunk_like(f))
                    || self
                        .read_small(rel)
                        .is_some_and(|t| t.contains("\"data_format\""));
                if !looks {
                    return;
                }
                LitdataIssue::Malformed {
                    chunk: Some(rel.to_string()),
                    why: format!("index is not valid JSON: {why}"),
                }
            }
        };
        self.push(issue);
    }

    fn read_small(&self, rel: &str) -> Option<String> {
        let src = self.dir.open(rel).ok()?;
        let n = src.len().min(self.limits.max_index_bytes);
        let data = read_vec(&*src, 0, n).ok()?;
        Some(String::from_utf8_lossy(&data).into_owned())
    }

    fn emit(&mut self, st: &ChunkState, item: u64, field: usize, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        (self.visit)(PickleField {
            chunk: st.name.clone(),
            item,
            field,
            offset,
            data: data.to_vec(),
        });
    }

    // -------------------------------------------------------------- index

    fn walk_index(&mut self, prefix: &str, rel: &str, v: &Value) -> Option<Config> {
        let obj = v.as_object()?;
        let malformed = |why: String| LitdataIssue::Malformed {
            chunk: Some(rel.to_string()),
            why,
        };
        let (cfg_v, chunks, mds) = if obj.contains_key("chunks") {
            let chunks = self.parse_chunks(rel, obj.get("chunks"));
            (
                obj.get("config").cloned().unwrap_or(Value::Null),
                chunks,
                false,
            )
        } else {
            match adapt_mds(obj) {
                Ok((cfg, chunks)) => (cfg, chunks, true),
                Err(why) => {
                    self.push(malformed(why));
                    return None;
                }
            }
        };
        let cfg = self.parse_config(rel, &cfg_v, mds);
        if cfg.encrypted && chunks.is_empty() {
            self.push(LitdataIssue::Encrypted { chunk: None });
        }
        for ch in &chunks {
            self.walk_listed(prefix, &cfg, ch);
        }
        Some(cfg)
    }

    fn parse_chunks(&mut self, rel: &str, v: Option<&Value>) -> Vec<ChunkRef> {
        let mut out = Vec::new();
        let Some(arr) = v.and_then(Value::as_array) else {
            self.push(LitdataIssue::Malformed {
                chunk: Some(rel.to_string()),
                why: "\"chunks\" is not a list".into(),
            });
            return out;
        };
        for (i, c) in arr.iter().enumerate() {
            let Some(filename) = c.get("filename").and_then(Value::as_str) else {
                self.push(LitdataIssue::Malformed {
                    chunk: Some(rel.to_string()),
                    why: format!("chunks[{i}] has no string \"filename\""),
                });
                continue;
            };
            let chunk_size = c
                .get("chunk_size")
                .and_then(py_int)
                .and_then(|n| u64::try_from(n).ok());
            let column_sizes = c.get("column_sizes").and_then(Value::as_array).cloned();
            out.push(ChunkRef {
                filename: filename.to_string(),
                chunk_size,
                column_sizes,
            });
        }
        out
    }

    fn parse_config(&mut self, rel: &str, v: &Value, mds: bool) -> Config {
        let mal = |why: String| LitdataIssue::Malformed {
            chunk: Some(rel.to_string()),
            why,
        };
        let empty = serde_json::Map::new();
        let o = match v.as_object() {
            Some(o) => o,
            None => {
                self.push(mal("\"config\" is not an object".into()));
                &empty
            }
        };
        let loader = match o.get("item_loader") {
            None | Some(Value::Null) => {
                // `ChunksConfig._validate_item_loader`: a lone no_header_tensor leaf needs
                // TokensLoader; neither way reaches a serializer's deserialize.
                let lone_tokens = o
                    .get("data_format")
                    .and_then(Value::as_array)
                    .is_some_and(|a| {
                        a.len() == 1
                            && a[0]
                                .as_str()
                                .is_some_and(|s| s.starts_with("no_header_tensor"))
                    });
                if lone_tokens {
                    Loader::NoPickle
                } else {
                    Loader::PyTree
                }
            }
            Some(Value::String(s)) => match s.as_str() {
                "PyTreeLoader" => Loader::PyTree,
                "TokensLoader" | "ParquetLoader" | "TemporalArrayLoader" => Loader::NoPickle,
                other => {
                    let format = format!("item_loader={other}");
                    if self.reported_formats.insert(format.clone()) {
                        self.push(LitdataIssue::UnknownFormat { format });
                    }
                    Loader::Custom
                }
            },
            Some(other) => {
                self.push(mal(format!("item_loader {other} is not a string")));
                Loader::Custom
            }
        };
        let mut fields = Vec::new();
        match o.get("data_format") {
            Some(Value::Array(a)) => {
                for df in a {
                    let kind = match df.as_str() {
                        Some(s) => match field_kind(s, mds) {
                            Ok(FieldKind::Unknown) => {
                                if loader != Loader::NoPickle
                                    && self.reported_formats.insert(s.to_string())
                                {
                                    self.push(LitdataIssue::UnknownFormat {
                                        format: s.to_string(),
                                    });
                                }
                                FieldKind::Unknown
                            }
                            Ok(k) => k,
                            Err(why) => {
                                if loader != Loader::NoPickle {
                                    self.push(mal(why));
                                }
                                FieldKind::Other
                            }
                        },
                        None => {
                            if loader != Loader::NoPickle {
                                self.push(mal(format!("data_format entry {df} is not a string")));
                            }
                            FieldKind::Other
                        }
                    };
                    fields.push(kind);
                }
            }
            _ if loader == Loader::NoPickle => {}
            other => {
                let shown = other.map_or_else(|| "missing".to_string(), Value::to_string);
                self.push(mal(format!("config.data_format is not a list ({shown})")));
            }
        }
        let compression = if truthy(o.get("compression")) {
            match o.get("compression") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    self.push(mal(format!("compression {other} is not a string")));
                    Some(other.to_string())
                }
                None => None,
            }
        } else {
            None
        };
        if let Some(c) = &compression {
            if !known_compressor(c) {
                self.push(mal(format!(
                    "compression {c:?} is not one litdata can read (walked as zstd)"
                )));
            }
        }
        let level = match parse_level(o.get("compression_level")) {
            Ok(l) => l,
            Err(why) => {
                self.push(mal(why));
                Level::Chunk
            }
        };
        let encrypted = truthy(o.get("encryption"));
        if let Some(Value::String(spec)) = o.get("data_spec") {
            self.check_data_spec(spec);
        }
        let mds = mds || o.get("format").and_then(Value::as_str) == Some("mds");
        Config {
            fields,
            compression,
            level,
            encrypted,
            loader,
            mds,
        }
    }

    fn check_data_spec(&mut self, spec: &str) {
        let Ok(v) = serde_json::from_str::<Value>(spec) else {
            return;
        };
        let mut stack = vec![&v];
        let mut found = Vec::new();
        while let Some(n) = stack.pop() {
            match n {
                Value::Array(a) => stack.extend(a.iter()),
                Value::Object(o) => {
                    if o.get("type").and_then(Value::as_str) == Some("collections.defaultdict") {
                        if let Some(ctx) = o.get("context").and_then(Value::as_object) {
                            let module = ctx
                                .get("default_factory_module")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            let name = ctx
                                .get("default_factory_name")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if !(module == "builtins" && SAFE_FACTORIES.contains(&name)) {
                                found.push((module.to_string(), name.to_string()));
                            }
                        }
                    }
                    stack.extend(o.values());
                }
                _ => {}
            }
        }
        for (module, name) in found {
            self.push(LitdataIssue::DataSpecImport { module, name });
        }
    }

    fn exists(&self, rel: &str) -> bool {
        self.files.contains(rel)
    }

    // -------------------------------------------------------------- chunks

    fn walk_listed(&mut self, prefix: &str, cfg: &Config, ch: &ChunkRef) {
        if !is_contained(&ch.filename) {
            self.push(LitdataIssue::PathEscapes {
                chunk: ch.filename.clone(),
            });
            return;
        }
        let x = normalize(&format!("{prefix}{}", ch.filename));
        self.listed.insert(x.clone());
        // `ChunksConfig.__getitem__`: the file read is the name without `.{compression}`.
        let target = cfg
            .chunk_compressor()
            .map(|c| ch.filename.replace(&format!(".{c}"), ""));
        if let Some(t) = &target {
            if !is_contained(t) {
                self.push(LitdataIssue::PathEscapes { chunk: t.clone() });
                return;
            }
        }
        let t_rel = target.map(|t| normalize(&format!("{prefix}{t}")));
        if let Some(t) = &t_rel {
            self.listed.insert(t.clone());
        }
        if cfg.loader == Loader::NoPickle {
            // Token / Parquet / temporal chunks never reach a serializer; only say when they
            // are encrypted (never skipped silently).
            if cfg.encrypted {
                self.push(LitdataIssue::Encrypted { chunk: Some(x) });
            }
            return;
        }
        let x_exists = self.exists(&x);
        let t_exists = t_rel.as_deref().is_some_and(|t| t != x && self.exists(t));
        if cfg.encrypted {
            let chunk = if t_exists { t_rel.unwrap_or(x) } else { x };
            self.push(LitdataIssue::Encrypted { chunk: Some(chunk) });
            return;
        }
        if !cfg.may_unpickle() {
            // No field reaches pickle.loads: nothing to read, nothing missing that matters.
            return;
        }
        if !x_exists && !t_exists {
            self.push(LitdataIssue::MissingChunk { chunk: x });
            return;
        }
        let cols = ch.column_sizes.as_deref();
        match &t_rel {
            Some(t) if *t != x => {
                if t_exists {
                    self.walk_file(t, cfg, ch.chunk_size, cols, false, false);
                }
                if x_exists {
                    self.walk_file(&x, cfg, ch.chunk_size, cols, true, false);
                }
            }
            _ => self.walk_file(&x, cfg, ch.chunk_size, cols, false, false),
        }
    }

    fn walk_unlisted(&mut self, rel: &str, cfg: &Config) {
        if cfg.loader == Loader::NoPickle {
            return;
        }
        if cfg.encrypted {
            self.push(LitdataIssue::Unlisted {
                chunk: rel.to_string(),
                why: "the dataset is encrypted; not analysed".to_string(),
            });
            return;
        }
        if !cfg.may_unpickle() {
            return;
        }
        self.walk_file(rel, cfg, None, None, false, true);
    }

    /// Walks one chunk file; `whole_zstd` inflates it first (`try_decompress`). Unlisted files
    /// are inflated when they start with the zstd magic.
    fn walk_file(
        &mut self,
        rel: &str,
        cfg: &Config,
        cs: Option<u64>,
        cols: Option<&[Value]>,
        whole_zstd: bool,
        unlisted: bool,
    ) {
        let key = format!("{rel}\0{whole_zstd}\0{cfg:?}\0{cs:?}\0{cols:?}");
        if !self.walked.insert(key) {
            return;
        }
        let dir = self.dir;
        let src = match dir.open(rel) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("cannot open: {e}");
                let issue = if unlisted {
                    LitdataIssue::Unlisted {
                        chunk: rel.to_string(),
                        why,
                    }
                } else {
                    LitdataIssue::Malformed {
                        chunk: Some(rel.to_string()),
                        why,
                    }
                };
                self.push(issue);
                return;
            }
        };
        let mut st = ChunkState::new(rel, src.len(), self.limits, unlisted);
        let inflate = whole_zstd || (unlisted && starts_with(&*src, &ZSTD_MAGIC));
        if !inflate {
            self.walk_view(&mut st, cfg, &*src, cs, cols);
            return;
        }
        if st.file_len > self.limits.max_chunk_bytes {
            self.limit(&mut st, "compressed chunk size");
            return;
        }
        let comp = match bytes_at(&*src, 0, st.file_len, u64::MAX) {
            Ok(c) => c,
            Err(e) => {
                self.malformed(&mut st, "read", format!("cannot read: {e}"));
                return;
            }
        };
        let out = match zstd_decode(&comp, st.budget_left) {
            Ok((out, trailing)) => {
                if let Some(why) = trailing {
                    self.malformed(&mut st, "zstd trailing", why);
                }
                out
            }
            Err(ZErr::Limit) => {
                let what = st.budget_what();
                self.limit(&mut st, what);
                return;
            }
            Err(ZErr::Bad(why)) => {
                self.malformed(&mut st, "zstd", format!("whole-chunk zstd: {why}"));
                return;
            }
        };
        drop(comp);
        st.spend(out.len() as u64);
        self.walk_view(&mut st, cfg, &out, cs, cols);
    }

    /// A chunk's bytes after whole-file decompression.
    fn walk_view(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        view: &dyn ReadAt,
        cs: Option<u64>,
        cols: Option<&[Value]>,
    ) {
        if starts_with(view, FRAMED_MAGIC) {
            // `PyTreeLoader._resolve_framed_header`: the magic decides, not the config.
            self.walk_framed(st, cfg, view, cs, cols);
            if cfg.compression.is_none() && cs.is_some() && !st.stopped {
                // `Reader.read(on_demand_bytes)`: byte-range reads see the classic layout.
                self.walk_classic(st, cfg, view, cs, false, &[Mode::Raw], cols);
            }
        } else {
            self.walk_classic(st, cfg, view, cs, true, cfg.classic_modes(), cols);
        }
    }

    /// `u32 N`, `u32 offsets[N+1]` (absolute), items.
    #[allow(clippy::too_many_arguments)]
    fn walk_classic(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        view: &dyn ReadAt,
        cs: Option<u64>,
        header_count: bool,
        modes: &[Mode],
        cols: Option<&[Value]>,
    ) {
        let len = view.len();
        let Some(n) = read_u32(view, 0) else {
            self.malformed(
                st,
                "header",
                format!("chunk of {len} bytes has no 4-byte item count"),
            );
            return;
        };
        let n = u64::from(n);
        let count = if header_count {
            if let Some(cs) = cs {
                if cs != n {
                    self.malformed(
                        st,
                        "count",
                        format!("chunk header has {n} items, the index says {cs}"),
                    );
                }
                n.max(cs)
            } else {
                n
            }
        } else {
            match cs {
                Some(c) => c,
                None => return,
            }
        };
        // Item i's offset pair is at [4 + 4i, 12 + 4i).
        let avail = if len >= 12 { (len - 12) / 4 + 1 } else { 0 };
        let mut walk_n = count.min(avail);
        if walk_n < count {
            self.malformed(
                st,
                "table",
                format!("offset table truncated: {count} items but the chunk holds offsets for {walk_n}"),
            );
        }
        if walk_n > self.limits.max_items {
            self.report(
                st,
                "items per chunk",
                LitdataIssue::Limit {
                    chunk: Some(st.name.clone()),
                    what: "items per chunk",
                },
            );
            walk_n = self.limits.max_items;
        }
        if walk_n == 0 {
            return;
        }
        let Some(table_len) = walk_n.checked_add(1).and_then(|k| k.checked_mul(4)) else {
            return;
        };
        let table = match bytes_at(view, 4, table_len, u64::MAX) {
            Ok(t) => t,
            Err(e) => {
                self.malformed(st, "read", format!("cannot read the offset table: {e}"));
                return;
            }
        };
        let footer = has_arrow_footer(view);
        for i in 0..walk_n {
            if st.stopped {
                return;
            }
            let Ok(at) = usize::try_from(i * 4) else {
                return;
            };
            let (Some(b), Some(e)) = (u32_at(&table, at), u32_at(&table, at + 4)) else {
                return;
            };
            let (b, e) = (u64::from(b), u64::from(e));
            let lo = b.min(len);
            let hi = if e >= b {
                if e > len {
                    self.malformed(
                        st,
                        "item past end",
                        format!("item {i} ends at {e}, past the chunk's {len} bytes"),
                    );
                }
                e.min(len)
            } else {
                self.malformed(
                    st,
                    "item order",
                    format!("item {i} ends ({e}) before it starts ({b}); litdata's file read takes the rest of the chunk"),
                );
                len
            };
            if !self.take_item(st, hi - lo) {
                return;
            }
            let item = match bytes_at(view, lo, hi - lo, u64::MAX) {
                Ok(d) => d,
                Err(e) => {
                    self.malformed(st, "read", format!("cannot read item {i}: {e}"));
                    return;
                }
            };
            for &mode in modes {
                self.item_payload(st, cfg, i, &item, lo, mode, footer, cols);
            }
        }
    }

    /// `FramedHeader` chunks: prefix, logical offsets, frame table, zstd frames.
    fn walk_framed(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        view: &dyn ReadAt,
        cs: Option<u64>,
        cols: Option<&[Value]>,
    ) {
        let len = view.len();
        let Ok(pre) = read_vec(view, 0, 24.min(len)) else {
            return;
        };
        if pre.len() < 24 {
            self.malformed(
                st,
                "framed header",
                "truncated framed zstd header".to_string(),
            );
            return;
        }
        let version = u16_at(&pre, 8).unwrap_or(0);
        let n = u64::from(u32_at(&pre, 12).unwrap_or(0));
        let k = u32_at(&pre, 16).unwrap_or(0);
        let n_frames = u64::from(u32_at(&pre, 20).unwrap_or(0));
        if version != 1 {
            self.malformed(
                st,
                "framed header",
                format!("unsupported framed zstd version {version}"),
            );
            return;
        }
        if n == 0 || k == 0 || n_frames == 0 {
            self.malformed(
                st,
                "framed header",
                format!("invalid framed zstd header n={n} frames={n_frames} k={k}"),
            );
            return;
        }
        let offsets_end = 24 + 4 * (n + 1);
        let table_end = offsets_end + 24 * n_frames;
        if len < table_end {
            self.malformed(
                st,
                "framed header",
                "truncated framed zstd offset/frame table".to_string(),
            );
            return;
        }
        if n > self.limits.max_items {
            self.limit(st, "items per chunk");
            return;
        }
        if let Some(cs) = cs {
            if cs != n {
                self.malformed(
                    st,
                    "count",
                    format!("framed chunk has {n} items, the index says {cs}"),
                );
            }
        }
        let offsets = match bytes_at(view, 24, 4 * (n + 1), u64::MAX) {
            Ok(o) => o,
            Err(e) => {
                self.malformed(st, "read", format!("cannot read the offsets: {e}"));
                return;
            }
        };
        let table = match bytes_at(view, offsets_end, 24 * n_frames, u64::MAX) {
            Ok(t) => t,
            Err(e) => {
                self.malformed(st, "read", format!("cannot read the frame table: {e}"));
                return;
            }
        };
        let frame = |f: u64| -> Option<(u64, u64, u64, u64, u64)> {
            let at = usize::try_from(f.checked_mul(24)?).ok()?;
            Some((
                u64::from(u32_at(&table, at)?),
                u64::from(u32_at(&table, at + 4)?),
                u64_at(&table, at + 8)?,
                u64::from(u32_at(&table, at + 16)?),
                u64::from(u32_at(&table, at + 20)?),
            ))
        };
        // `parse_framed_header` validates every frame before any is used.
        for f in 0..n_frames {
            let Some((_, ni, coff, clen, ulen)) = frame(f) else {
                return;
            };
            let bad = ni == 0
                || clen == 0
                || ulen == 0
                || coff < table_end
                || coff.checked_add(clen).is_none_or(|e| e > len);
            if bad {
                self.malformed(
                    st,
                    "framed header",
                    format!("framed zstd frame {f} is invalid or truncated"),
                );
                return;
            }
        }
        let off = |i: u64| -> Option<i128> {
            let at = usize::try_from(i.checked_mul(4)?).ok()?;
            u32_at(&offsets, at).map(i128::from)
        };
        for f in 0..n_frames {
            if st.stopped {
                return;
            }
            let Some((first, ni, coff, clen, ulen)) = frame(f) else {
                return;
            };
            let Some(base) = off(first) else {
                self.malformed(
                    st,
                    "frame first",
                    format!("frame {f} starts at item {first}, past the offset table"),
                );
                continue;
            };
            if ulen > st.budget_left {
                let what = st.budget_what();
                self.limit(st, what);
                return;
            }
            let src = match bytes_at(view, coff, clen, u64::MAX) {
                Ok(s) => s,
                Err(e) => {
                    self.malformed(st, "read", format!("cannot read frame {f}: {e}"));
                    return;
                }
            };
            let raw = match zstd_decode(&src, ulen) {
                Ok((raw, _)) if raw.len() as u64 == ulen => raw,
                Ok((raw, _)) => {
                    st.spend(raw.len() as u64);
                    self.malformed(
                        st,
                        "frame size",
                        format!("frame {f} inflated to {} bytes, expected {ulen}", raw.len()),
                    );
                    continue;
                }
                Err(ZErr::Limit) => {
                    st.spend(ulen);
                    self.malformed(
                        st,
                        "frame size",
                        format!("frame {f} inflates past its declared {ulen} bytes"),
                    );
                    continue;
                }
                Err(ZErr::Bad(why)) => {
                    self.malformed(st, "frame zstd", format!("frame {f}: {why}"));
                    continue;
                }
            };
            drop(src);
            st.spend(ulen);
            for i in 0..ni {
                if st.stopped {
                    return;
                }
                let idx = first + i;
                let (Some(a), Some(b)) = (off(idx), off(idx + 1)) else {
                    self.malformed(
                        st,
                        "frame items",
                        format!("frame {f} lists items past the offset table"),
                    );
                    break;
                };
                let r = py_slice(raw.len(), a - base, b - base);
                if !self.take_item(st, r.len() as u64) {
                    return;
                }
                let logical = u64::try_from(base).unwrap_or(0) + r.start as u64;
                for &mode in cfg.framed_modes() {
                    self.item_payload(st, cfg, idx, &raw[r.clone()], logical, mode, false, cols);
                }
            }
        }
    }

    /// Counts one item against the per-chunk caps; `false` when walking must stop.
    fn take_item(&mut self, st: &mut ChunkState, size: u64) -> bool {
        st.items_visited += 1;
        if st.items_visited > self.limits.max_items {
            self.limit(st, "items per chunk");
            return false;
        }
        st.item_bytes = st.item_bytes.saturating_add(size);
        // Items never overlap in litdata's output; overlapping ranges only multiply work.
        let cap = st
            .file_len
            .saturating_add(st.decompressed)
            .saturating_mul(2)
            .saturating_add(MIN_BUDGET)
            .min(self.limits.max_chunk_bytes);
        if st.item_bytes > cap {
            self.limit(st, "overlapping item bytes");
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn item_payload(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        item: u64,
        raw: &[u8],
        base: u64,
        mode: Mode,
        footer: bool,
        cols: Option<&[Value]>,
    ) {
        match mode {
            Mode::Raw => self.parse_item(st, cfg, item, raw, base, footer, cols),
            Mode::Inflate => {
                if raw.is_empty() && footer {
                    return;
                }
                match zstd_decode(raw, st.budget_left) {
                    Ok((out, _)) => {
                        st.spend(out.len() as u64);
                        self.parse_item(st, cfg, item, &out, 0, false, cols);
                    }
                    Err(ZErr::Limit) => {
                        let what = st.budget_what();
                        self.limit(st, what);
                    }
                    Err(ZErr::Bad(why)) => {
                        self.malformed(
                            st,
                            "sample zstd",
                            format!("item {item} is not a zstd stream: {why}"),
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_item(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        item: u64,
        data: &[u8],
        base: u64,
        footer: bool,
        cols: Option<&[Value]>,
    ) {
        if cfg.mds {
            self.parse_mds(st, cfg, item, data, base, cols);
        } else {
            self.parse_pytree(st, cfg, item, data, base, footer);
        }
    }

    /// `PyTreeLoader.deserialize`: `u32 sizes[len(data_format)]`, then the fields.
    fn parse_pytree(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        item: u64,
        data: &[u8],
        base: u64,
        footer: bool,
    ) {
        let nf = cfg.fields.len();
        if nf == 0 {
            return;
        }
        let hdr = nf.saturating_mul(4);
        if data.len() < hdr {
            // Arrow-footer chunks keep empty pytree items; litdata serves them from Arrow.
            if !(data.is_empty() && footer) {
                self.malformed(
                    st,
                    "item header",
                    format!(
                        "item {item} has {} bytes, less than its {hdr}-byte size header",
                        data.len()
                    ),
                );
            }
            return;
        }
        let mut cursor = hdr as u64;
        let len = data.len() as u64;
        for (j, &kind) in cfg.fields.iter().enumerate() {
            let size = u64::from(u32_at(data, j * 4).unwrap_or(0));
            let end = cursor.saturating_add(size);
            if end > len {
                self.malformed(
                    st,
                    "field past end",
                    format!("item {item} field {j} runs past the item's end"),
                );
            }
            let (a, b) = (cursor.min(len) as usize, end.min(len) as usize);
            self.field(st, kind, item, j, &data[a..b], base + a as u64);
            cursor = end;
        }
    }

    /// `PyTreeLoader.mds_deserialize`: fixed sizes from `column_sizes`, else a `u32` each.
    fn parse_mds(
        &mut self,
        st: &mut ChunkState,
        cfg: &Config,
        item: u64,
        data: &[u8],
        base: u64,
        cols: Option<&[Value]>,
    ) {
        let Some(cols) = cols else {
            self.malformed(
                st,
                "mds columns",
                "MDS shard has no column_sizes".to_string(),
            );
            return;
        };
        let mut idx: i128 = 0;
        let mut sizes: Vec<i128> =
            Vec::with_capacity(cols.len().min(cfg.fields.len().saturating_add(1)));
        for c in cols {
            let fixed = match c {
                Value::Null => 0,
                other => match py_int(other) {
                    Some(v) => v,
                    None => {
                        if truthy(Some(other)) {
                            self.malformed(
                                st,
                                "mds columns",
                                format!("column size {other} is not an integer"),
                            );
                            break;
                        }
                        0
                    }
                },
            };
            if fixed != 0 {
                sizes.push(fixed);
            } else {
                let Some(at) = usize::try_from(idx).ok() else {
                    break;
                };
                let Some(v) = u32_at(data, at) else {
                    self.malformed(
                        st,
                        "mds item",
                        format!("item {item} is too short for its column sizes"),
                    );
                    break;
                };
                sizes.push(i128::from(v));
                idx += 4;
            }
        }
        for (j, (&size, &kind)) in sizes.iter().zip(cfg.fields.iter()).enumerate() {
            let r = py_slice(data.len(), idx, idx + size);
            if idx + size > data.len() as i128 {
                self.malformed(
                    st,
                    "field past end",
                    format!("item {item} field {j} runs past the item's end"),
                );
            }
            let at = base + r.start as u64;
            self.field(st, kind, item, j, &data[r], at);
            idx += size;
        }
    }

    fn field(
        &mut self,
        st: &mut ChunkState,
        kind: FieldKind,
        item: u64,
        j: usize,
        data: &[u8],
        at: u64,
    ) {
        match kind {
            FieldKind::Pickle => self.emit(st, item, j, at, data),
            FieldKind::Graph { fallback } => self.parse_graph(st, item, j, data, at, fallback),
            FieldKind::Other | FieldKind::Unknown => {}
        }
    }

    /// `GraphSerializer.deserialize`.
    fn parse_graph(
        &mut self,
        st: &mut ChunkState,
        item: u64,
        j: usize,
        data: &[u8],
        at: u64,
        fallback: bool,
    ) {
        if fallback || data.get(..4) != Some(GRAPH_MAGIC.as_slice()) {
            self.emit(st, item, j, at, data);
            return;
        }
        let mut off = 4usize;
        let Some(&version) = data.get(off) else {
            return;
        };
        off += 1;
        if !(1..=3).contains(&version) {
            self.malformed(
                st,
                "graph",
                format!("item {item} field {j}: unsupported graph pack version {version}"),
            );
            return;
        }
        let n_fields = if version >= 3 {
            let Some(v) = u16be_at(data, off) else { return };
            off += 2;
            usize::from(v)
        } else {
            let Some(&v) = data.get(off) else { return };
            off += 1;
            usize::from(v)
        };
        for _ in 0..n_fields {
            let name_len = if version >= 3 {
                let Some(v) = u16be_at(data, off) else { return };
                off += 2;
                usize::from(v)
            } else {
                let Some(&v) = data.get(off) else { return };
                off += 1;
                usize::from(v)
            };
            let name_end = off.saturating_add(name_len);
            let name = &data[off.min(data.len())..name_end.min(data.len())];
            off = name_end;
            let kind = if version >= 2 {
                let Some(&v) = data.get(off) else { return };
                off += 1;
                v
            } else {
                0
            };
            let Some(plen) = u32be_at(data, off) else {
                return;
            };
            off += 4;
            let p_end = off.saturating_add(plen as usize);
            let (a, b) = (off.min(data.len()), p_end.min(data.len()));
            if kind == GRAPH_KIND_PICKLE || name == GRAPH_META_KEY {
                self.emit(st, item, j, at + a as u64, &data[a..b]);
            }
            off = p_end;
        }
    }
}

/// `adapt_mds_shards_to_chunks`.
fn adapt_mds(obj: &serde_json::Map<String, Value>) -> Result<(Value, Vec<ChunkRef>), String> {
    let shards = obj
        .get("shards")
        .and_then(Value::as_array)
        .ok_or("\"shards\" is not a list")?;
    let first = shards.first().ok_or("MDS index has no shards")?;
    let mut chunks = Vec::new();
    for (i, s) in shards.iter().enumerate() {
        // litdata reads `zip_data` (compressed shards); MosaicML's own reader also reads
        // `raw_data`, walked here so `pkl` columns are found either way.
        let name = s
            .get("zip_data")
            .and_then(|z| z.get("basename"))
            .and_then(Value::as_str)
            .or_else(|| {
                s.get("raw_data")
                    .and_then(|z| z.get("basename"))
                    .and_then(Value::as_str)
            })
            .ok_or_else(|| format!("shards[{i}] has no zip_data/raw_data basename"))?;
        chunks.push(ChunkRef {
            filename: name.to_string(),
            chunk_size: s
                .get("samples")
                .and_then(py_int)
                .and_then(|n| u64::try_from(n).ok()),
            column_sizes: s.get("column_sizes").and_then(Value::as_array).cloned(),
        });
    }
    let mut cfg = serde_json::Map::new();
    cfg.insert(
        "compression".into(),
        first.get("compression").cloned().unwrap_or(Value::Null),
    );
    cfg.insert(
        "data_format".into(),
        first
            .get("column_encodings")
            .cloned()
            .unwrap_or(Value::Null),
    );
    cfg.insert(
        "format".into(),
        first.get("format").cloned().unwrap_or(Value::Null),
    );
    cfg.insert("encryption".into(), Value::Null);
    Ok((Value::Object(cfg), chunks))
}

// ------------------------------------------------------------------------------------------
// Bytes
// ------------------------------------------------------------------------------------------

/// `a/./b` and `a//b` name `a/b` (as `os.path.join` + `open` would resolve them).
fn normalize(rel: &str) -> String {
    rel.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Python's `seq[start:stop]` for a sequence of `len` items.
fn py_slice(len: usize, start: i128, stop: i128) -> std::ops::Range<usize> {
    let n = len as i128;
    let norm = |i: i128| if i < 0 { (i + n).max(0) } else { i.min(n) };
    let a = usize::try_from(norm(start)).unwrap_or(0);
    let b = usize::try_from(norm(stop)).unwrap_or(0).max(a);
    a..b
}

fn starts_with(src: &dyn ReadAt, magic: &[u8]) -> bool {
    let n = magic.len() as u64;
    src.len() >= n && read_vec(src, 0, n).is_ok_and(|h| h == magic)
}

fn has_arrow_footer(src: &dyn ReadAt) -> bool {
    let len = src.len();
    len >= 12 && read_vec(src, len - 8, 8).is_ok_and(|t| t == ARROW_FOOTER_MAGIC)
}

fn read_u32(src: &dyn ReadAt, at: u64) -> Option<u32> {
    let v = read_vec(src, at, 4).ok()?;
    u32_at(&v, 0)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn u16be_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32be_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Inflates every zstd frame in `src` (skippable frames skipped), refusing to produce more than
/// `max_out` bytes. Bytes after at least one whole frame that are not a frame are tolerated
/// (zstandard's `copy_stream` stops after the first frame) and described in the second value.
fn zstd_decode(src: &[u8], max_out: u64) -> Result<(Vec<u8>, Option<String>), ZErr> {
    std::panic::catch_unwind(|| zstd_decode_inner(src, max_out))
        .unwrap_or_else(|_| Err(ZErr::Bad("zstd decoder failed".to_string())))
}

fn zstd_decode_inner(src: &[u8], max_out: u64) -> Result<(Vec<u8>, Option<String>), ZErr> {
    let mut input = src;
    let mut out = Vec::new();
    let mut frames = 0u32;
    if input.is_empty() {
        return Err(ZErr::Bad("empty zstd stream".to_string()));
    }
    while !input.is_empty() {
        if input.len() >= 8 && u32_at(input, 0).is_some_and(|m| m & 0xFFFF_FFF0 == 0x184D_2A50) {
            let skip = u32_at(input, 4).unwrap_or(0) as usize;
            match input.get(8..).and_then(|r| r.get(skip..)) {
                Some(rest) => {
                    input = rest;
                    continue;
                }
                None => return Err(ZErr::Bad("truncated skippable frame".to_string())),
            }
        }
        let mut decoder = match ruzstd::decoding::StreamingDecoder::new(&mut input) {
            Ok(d) => d,
            Err(e) if frames > 0 => {
                return Ok((out, Some(format!("bytes after the last zstd frame: {e}"))))
            }
            Err(e) => return Err(ZErr::Bad(e.to_string())),
        };
        let room = max_out.saturating_sub(out.len() as u64).saturating_add(1);
        (&mut decoder)
            .take(room)
            .read_to_end(&mut out)
            .map_err(|e| ZErr::Bad(e.to_string()))?;
        if out.len() as u64 > max_out {
            return Err(ZErr::Limit);
        }
        frames += 1;
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::MemDir;
    use serde_json::json;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// A read-only view of a real directory, for the committed fixtures.
    struct FsDir(PathBuf);

    fn list(root: &Path, rel: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => list(root, &r, out),
                Ok(t) if t.is_file() => out.push(r),
                _ => {}
            }
        }
    }

    impl Dir for FsDir {
        fn files(&self) -> Vec<String> {
            let mut v = Vec::new();
            list(&self.0, "", &mut v);
            v.sort();
            v
        }
        fn open(&self, rel: &str) -> std::io::Result<Box<dyn ReadAt + '_>> {
            Ok(Box::new(std::fs::read(self.0.join(rel))?))
        }
    }

    fn fixture(name: &str) -> FsDir {
        FsDir(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/containers/litdata")
                .join(name),
        )
    }

    fn run_with(dir: &dyn Dir, limits: &LitdataLimits) -> (Vec<PickleField>, Vec<LitdataIssue>) {
        let mut fields = Vec::new();
        let issues = pickle_fields(dir, limits, &mut |f| fields.push(f));
        (fields, issues)
    }

    fn run(dir: &dyn Dir) -> (Vec<PickleField>, Vec<LitdataIssue>) {
        run_with(dir, &LitdataLimits::default())
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn is_payload(f: &PickleField) -> bool {
        contains(&f.data, b"system") || contains(&f.data, b"ckptguard_pwned")
    }

    fn blocking(issues: &[LitdataIssue]) -> Vec<&LitdataIssue> {
        issues.iter().filter(|i| i.blocking()).collect()
    }

    // ---------------------------------------------------------------- builders

    /// A stand-in for a malicious pickle (the scanner, not this module, judges it).
    const EVIL: &[u8] = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x8c\x06system\x93\x8c\x04echo\x85R.";
    const BENIGN: &[u8] = b"\x80\x04K\x07.";

    fn item(fields: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fields {
            v.extend_from_slice(&(f.len() as u32).to_le_bytes());
        }
        for f in fields {
            v.extend_from_slice(f);
        }
        v
    }

    fn classic(items: &[Vec<u8>]) -> Vec<u8> {
        let n = items.len() as u32;
        let mut v = n.to_le_bytes().to_vec();
        let mut cur = 4 + 4 * (n + 1);
        v.extend_from_slice(&cur.to_le_bytes());
        for it in items {
            cur += it.len() as u32;
            v.extend_from_slice(&cur.to_le_bytes());
        }
        for it in items {
            v.extend_from_slice(it);
        }
        v
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// `framed_zstd.pack_framed_zstd`.
    fn framed(classic_chunk: &[u8], k: usize) -> Vec<u8> {
        let n = u32_at(classic_chunk, 0).unwrap() as usize;
        let offs: Vec<usize> = (0..=n)
            .map(|i| u32_at(classic_chunk, 4 + 4 * i).unwrap() as usize)
            .collect();
        let n_frames = n.div_ceil(k);
        let mut logical = vec![0u32];
        for i in 0..n {
            logical.push(logical[i] + (offs[i + 1] - offs[i]) as u32);
        }
        let mut cursor = 24 + 4 * (n + 1) + 24 * n_frames;
        let mut table = Vec::new();
        let mut body = Vec::new();
        for f in 0..n_frames {
            let (s, e) = (f * k, (f * k + k).min(n));
            let raw = &classic_chunk[offs[s]..offs[e]];
            let c = zstd(raw);
            table.extend_from_slice(&(s as u32).to_le_bytes());
            table.extend_from_slice(&((e - s) as u32).to_le_bytes());
            table.extend_from_slice(&(cursor as u64).to_le_bytes());
            table.extend_from_slice(&(c.len() as u32).to_le_bytes());
            table.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            cursor += c.len();
            body.extend_from_slice(&c);
        }
        let mut v = FRAMED_MAGIC.to_vec();
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        for x in [n as u32, k as u32, n_frames as u32] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for o in logical {
            v.extend_from_slice(&o.to_le_bytes());
        }
        v.extend_from_slice(&table);
        v.extend_from_slice(&body);
        v
    }

    /// `framed_zstd.pack_sample_zstd`.
    fn sample_packed(items: &[Vec<u8>]) -> Vec<u8> {
        classic(&items.iter().map(|i| zstd(i)).collect::<Vec<_>>())
    }

    /// A zstd frame of `blocks` RLE blocks of 128 KiB each: 4 bytes in, 128 KiB out per block.
    fn zstd_bomb(blocks: usize) -> Vec<u8> {
        let mut v = ZSTD_MAGIC.to_vec();
        v.push(0x00); // no content size, not single-segment, no checksum, no dictionary
        v.push(0x50); // window descriptor: 1 MiB
        for b in 0..blocks {
            let last = u32::from(b + 1 == blocks);
            let h = last | (1 << 1) | ((128 * 1024) << 3);
            v.extend_from_slice(&h.to_le_bytes()[..3]);
            v.push(b'A');
        }
        v
    }

    fn config(data_format: &[&str]) -> Value {
        json!({
            "chunk_bytes": 64000, "chunk_size": null, "compression": null,
            "compression_batch_size": null, "compression_level": null,
            "data_format": data_format, "data_spec": null, "encryption": null,
            "item_loader": "PyTreeLoader"
        })
    }

    fn index(chunks: &[(&str, u64)], cfg: Value) -> Vec<u8> {
        let chunks: Vec<Value> = chunks
            .iter()
            .map(|(f, n)| json!({"chunk_bytes": 0, "chunk_size": n, "dim": null, "filename": f}))
            .collect();
        serde_json::to_vec(&json!({"chunks": chunks, "config": cfg})).unwrap()
    }

    fn simple(chunk: Vec<u8>, n: u64) -> MemDir {
        MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.bin", n)], config(&["int", "pickle"])),
            )
            .with("chunk-0-0.bin", chunk)
    }

    fn two_items() -> Vec<Vec<u8>> {
        vec![
            item(&[&7u64.to_le_bytes(), BENIGN]),
            item(&[&8u64.to_le_bytes(), EVIL]),
        ]
    }

    fn has_malformed(issues: &[LitdataIssue]) -> bool {
        issues
            .iter()
            .any(|i| matches!(i, LitdataIssue::Malformed { .. }))
    }

    fn has_limit(issues: &[LitdataIssue]) -> bool {
        issues
            .iter()
            .any(|i| matches!(i, LitdataIssue::Limit { .. }))
    }

    // ---------------------------------------------------------------- fixtures

    const VARIANTS: [&str; 4] = ["plain", "zstd_batch", "zstd_chunk", "zstd_sample"];

    #[test]
    fn benign_fixtures_yield_their_pickle_fields() {
        for v in VARIANTS {
            let d = fixture(&format!("benign_{v}"));
            assert!(is_dataset(&d), "{v}");
            let (fields, issues) = run(&d);
            assert!(issues.is_empty(), "{v}: {issues:?}");
            // 4 items x data_format ['int', 'pickle', 'pickle'].
            assert_eq!(fields.len(), 8, "{v}");
            for f in &fields {
                assert!(
                    f.data.starts_with(b"\x80") && f.data.ends_with(b"."),
                    "{v}: {f:?}"
                );
                assert!(matches!(f.field, 1 | 2) && f.item < 4, "{v}: {f:?}");
                assert!(!is_payload(f), "{v}");
            }
        }
    }

    #[test]
    fn malicious_fixtures_yield_the_payload() {
        for v in VARIANTS {
            let d = fixture(&format!("mal_{v}"));
            assert!(is_dataset(&d), "{v}");
            let (fields, issues) = run(&d);
            assert!(issues.is_empty(), "{v}: {issues:?}");
            let hits: Vec<_> = fields.iter().filter(|f| is_payload(f)).collect();
            assert_eq!(hits.len(), 1, "{v}");
            assert_eq!((hits[0].item, hits[0].field), (2, 2), "{v}");
            assert!(hits[0].data.starts_with(b"\x80"), "{v}");
        }
    }

    #[test]
    fn encrypted_fixture_is_reported() {
        let d = fixture("mal_encrypted_chunk");
        assert!(is_dataset(&d));
        let (fields, issues) = run(&d);
        assert!(fields.is_empty());
        assert_eq!(
            issues,
            vec![LitdataIssue::Encrypted {
                chunk: Some("chunk-0-0.bin".into())
            }]
        );
        assert!(issues[0].blocking());
    }

    fn test_data(name: &str) -> FsDir {
        FsDir(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(name),
        )
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Exactly the byte strings real litdata handed to `pickle.loads` (recorded).
    #[test]
    fn same_pickle_loads_arguments_as_litdata() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/litdata_expected_loads.json");
        let expected: BTreeMap<String, Vec<String>> =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(expected.len(), 9);
        for (name, loads) in expected {
            let d = if name.starts_with("litdata_") {
                test_data(&name)
            } else {
                fixture(&name)
            };
            let (fields, issues) = run(&d);
            assert!(issues.is_empty(), "{name}: {issues:?}");
            let mut got: Vec<String> = fields.iter().map(|f| hex(&f.data)).collect();
            got.sort();
            assert_eq!(got, loads, "{name}");
        }
    }

    #[test]
    fn real_rank_only_dataset() {
        let d = test_data("litdata_rank_only");
        assert!(is_dataset(&d));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        // 3 items in 2 chunks, one pickled set each.
        assert_eq!(fields.len(), 3);
        assert_eq!(
            fields.iter().filter(|f| f.chunk == "chunk-0-1.bin").count(),
            1
        );
    }

    #[test]
    fn plain_offsets_point_into_the_file() {
        let d = fixture("mal_plain");
        let raw = std::fs::read(d.0.join("chunk-0-0.bin")).unwrap();
        let (fields, _) = run(&d);
        for f in fields {
            let at = f.offset as usize;
            assert_eq!(&raw[at..at + f.data.len()], f.data.as_slice());
        }
    }

    #[test]
    fn whole_directory_of_fixtures() {
        // The parent holds nine datasets in subdirectories plus a stray salt file.
        let d = FsDir(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/containers/litdata"),
        );
        assert!(is_dataset(&d));
        let (fields, issues) = run(&d);
        assert_eq!(fields.iter().filter(|f| is_payload(f)).count(), 4);
        assert_eq!(
            issues,
            vec![LitdataIssue::Encrypted {
                chunk: Some("mal_encrypted_chunk/chunk-0-0.bin".into())
            }]
        );
    }

    // ---------------------------------------------------------------- serializer selection

    #[test]
    fn data_format_to_serializer() {
        let k = |s| field_kind(s, false);
        assert_eq!(k("pickle"), Ok(FieldKind::Pickle));
        assert_eq!(k("graph:pickle"), Ok(FieldKind::Pickle));
        assert_eq!(k("anything:pickle"), Ok(FieldKind::Pickle));
        assert_eq!(k("pickle:whatever"), Ok(FieldKind::Pickle));
        assert_eq!(k("pickle:bytes"), Ok(FieldKind::Other));
        assert_eq!(k("graph"), Ok(FieldKind::Graph { fallback: false }));
        assert_eq!(k("graph:xpickle"), Ok(FieldKind::Graph { fallback: true }));
        assert_eq!(k("no_header_numpy:5"), Ok(FieldKind::Other));
        assert_eq!(k("mesh:glb"), Ok(FieldKind::Other));
        assert_eq!(k("Pickle"), Ok(FieldKind::Unknown));
        assert_eq!(k("evil"), Ok(FieldKind::Unknown));
        assert!(k("a:b:pickle").is_err());
        assert_eq!(field_kind("pkl", true), Ok(FieldKind::Pickle));
        assert_eq!(field_kind("ndarray:int32:3", true), Ok(FieldKind::Other));
        assert!(
            known_compressor("zstd") && known_compressor("zstd:22") && known_compressor("zstd:1")
        );
        assert!(
            !known_compressor("zstd:0") && !known_compressor("zstd:23") && !known_compressor("lz4")
        );
    }

    #[test]
    fn unknown_format_and_custom_loader_are_reported() {
        let mut cfg = config(&["int", "evil"]);
        cfg["item_loader"] = json!("MyLoader");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 2)], cfg))
            .with("chunk-0-0.bin", classic(&two_items()));
        let (fields, issues) = run(&d);
        assert!(fields.is_empty());
        assert!(issues.contains(&LitdataIssue::UnknownFormat {
            format: "evil".into()
        }));
        assert!(issues.contains(&LitdataIssue::UnknownFormat {
            format: "item_loader=MyLoader".into()
        }));
        assert!(issues.iter().all(LitdataIssue::blocking));
    }

    #[test]
    fn loaders_without_serializers_are_skipped() {
        let mut cfg = config(&["no_header_numpy:10"]);
        cfg["item_loader"] = json!("TokensLoader");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 1)], cfg))
            .with("chunk-0-0.bin", vec![0u8; 64]);
        let (fields, issues) = run(&d);
        assert!(fields.is_empty() && issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn graph_fields() {
        // v3 pack: a tensor sub-field, then the pickled `_meta` sub-field.
        let mut g = GRAPH_MAGIC.to_vec();
        g.push(3);
        g.extend_from_slice(&2u16.to_be_bytes());
        for (name, kind, payload) in [(&b"x"[..], 0u8, &b"TENSORBYTES"[..]), (b"_meta", 1, EVIL)] {
            g.extend_from_slice(&(name.len() as u16).to_be_bytes());
            g.extend_from_slice(name);
            g.push(kind);
            g.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            g.extend_from_slice(payload);
        }
        let items = vec![item(&[&g, EVIL])];
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.bin", 1)], config(&["graph", "graph:pickle"])),
            )
            .with("chunk-0-0.bin", classic(&items));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(fields.len(), 2);
        assert!(fields.iter().all(|f| f.data == EVIL));
        assert_eq!((fields[0].field, fields[1].field), (0, 1));
        // A graph field without the magic is unpickled whole.
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.bin", 1)], config(&["graph"])),
            )
            .with("chunk-0-0.bin", classic(&[item(&[EVIL])]));
        let (fields, _) = run(&d);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].data, EVIL);
    }

    // ---------------------------------------------------------------- layouts built here

    #[test]
    fn framed_and_sample_layouts_built_in_test() {
        let items: Vec<Vec<u8>> = (0..5u8)
            .map(|i| item(&[&[i; 8], if i == 3 { EVIL } else { BENIGN }]))
            .collect();
        let plain = classic(&items);
        let mut cfg = config(&["int", "pickle"]);
        cfg["compression"] = json!("zstd");
        cfg["compression_level"] = json!("batch");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 5)], cfg.clone()))
            .with("chunk-0-0.bin", framed(&plain, 2));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(fields.len(), 5);
        assert_eq!(
            fields
                .iter()
                .filter(|f| f.data == EVIL)
                .map(|f| f.item)
                .collect::<Vec<_>>(),
            vec![3]
        );
        cfg["compression_level"] = json!("sample");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 5)], cfg))
            .with("chunk-0-0.bin", sample_packed(&items));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(fields.iter().filter(|f| f.data == EVIL).count(), 1);
    }

    #[test]
    fn chunk_level_prefers_the_decompressed_name() {
        // index lists the benign .zstd.bin; a malicious .bin of the decompressed name sits next
        // to it, and `try_decompress` would read that one without inflating anything.
        let benign = classic(&[item(&[&1u64.to_le_bytes(), BENIGN])]);
        let mut cfg = config(&["int", "pickle"]);
        cfg["compression"] = json!("zstd:4");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.zstd:4.bin", 2)], cfg))
            .with("chunk-0-0.zstd:4.bin", zstd(&benign))
            .with("chunk-0-0.bin", classic(&two_items()));
        let (fields, _) = run(&d);
        assert!(fields
            .iter()
            .any(|f| f.chunk == "chunk-0-0.bin" && f.data == EVIL));
        assert!(fields
            .iter()
            .any(|f| f.chunk == "chunk-0-0.zstd:4.bin" && f.data == BENIGN));
    }

    #[test]
    fn per_rank_index_without_merged_index() {
        let d = MemDir::default()
            .with(
                "0.index.json",
                index(&[("chunk-0-0.bin", 2)], config(&["int", "pickle"])),
            )
            .with("chunk-0-0.bin", classic(&two_items()));
        assert!(is_dataset(&d));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        assert!(fields.iter().any(|f| f.data == EVIL));
    }

    #[test]
    fn unlisted_chunks_are_walked() {
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.bin", 1)], config(&["int", "pickle"])),
            )
            .with(
                "chunk-0-0.bin",
                classic(&[item(&[&1u64.to_le_bytes(), BENIGN])]),
            )
            .with("chunk-0-1.bin", classic(&two_items()))
            .with("chunk-0-2.zstd.bin", zstd(&classic(&two_items())))
            .with("junk.bin", b"\xff\xff\xff\xffnot a chunk".to_vec());
        let (fields, issues) = run(&d);
        assert!(fields
            .iter()
            .any(|f| f.chunk == "chunk-0-1.bin" && f.data == EVIL));
        assert!(fields
            .iter()
            .any(|f| f.chunk == "chunk-0-2.zstd.bin" && f.data == EVIL));
        assert!(blocking(&issues).is_empty(), "{issues:?}");
        assert!(issues
            .iter()
            .any(|i| matches!(i, LitdataIssue::Unlisted { chunk, .. } if chunk == "junk.bin")));
    }

    #[test]
    fn mds_shards() {
        let items = vec![item(&[EVIL, b"abc"])];
        let shard = |enc: &[&str]| {
            json!({"shards": [{
                "column_encodings": enc, "column_names": ["a", "b"], "column_sizes": [null, null],
                "compression": "zstd", "format": "mds", "hashes": [], "samples": 1, "size_limit": 1,
                "version": 2, "raw_data": {"basename": "shard.00000.mds", "bytes": 0, "hashes": {}},
                "zip_data": {"basename": "shard.00000.mds.zstd", "bytes": 0, "hashes": {}}
            }], "version": 2})
        };
        for enc in [["pickle", "str"], ["pkl", "str"]] {
            let d = MemDir::default()
                .with("index.json", serde_json::to_vec(&shard(&enc)).unwrap())
                .with("shard.00000.mds.zstd", zstd(&classic(&items)));
            assert!(is_dataset(&d));
            let (fields, issues) = run(&d);
            assert!(issues.is_empty(), "{issues:?}");
            assert_eq!(fields.len(), 1);
            assert_eq!(fields[0].data, EVIL);
        }
    }

    #[test]
    fn data_spec_defaultdict_import() {
        let mut cfg = config(&["int"]);
        let spec = json!([1, {"type": "collections.defaultdict",
            "context": {"default_factory_module": "antigravity", "default_factory_name": "geohash",
                        "dict_context": ["a"]},
            "children_spec": [{"type": null, "context": null, "children_spec": []}]}]);
        cfg["data_spec"] = json!(spec.to_string());
        let d = MemDir::default().with("index.json", index(&[], cfg));
        let (_, issues) = run(&d);
        assert_eq!(
            issues,
            vec![LitdataIssue::DataSpecImport {
                module: "antigravity".into(),
                name: "geohash".into()
            }]
        );
    }

    // ---------------------------------------------------------------- hostile inputs

    #[test]
    fn hidden_items_past_the_header_count() {
        // Header says 1 item, index says 2: `_load_data` reads item 1's offsets from the bytes
        // right after the table, which here point at a payload litdata's header never lists.
        let first = item(&[&1u64.to_le_bytes(), BENIGN]);
        let hidden = item(&[&2u64.to_le_bytes(), EVIL]);
        let mut v = 1u32.to_le_bytes().to_vec();
        let start = 4 + 8 + 4; // count, two offsets, one extra u32
        let end1 = start + first.len() as u32;
        let end2 = end1 + hidden.len() as u32;
        for x in [start, end1, end2] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&first);
        v.extend_from_slice(&hidden);
        let (fields, issues) = run(&simple(v, 2));
        assert!(fields.iter().any(|f| f.item == 1 && f.data == EVIL));
        assert!(has_malformed(&issues));
    }

    #[test]
    fn offsets_out_of_range() {
        let mut c = classic(&two_items());
        let len = c.len() as u32;
        c[8..12].copy_from_slice(&(len + 1000).to_le_bytes()); // item 0 end, item 1 start
        c[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let (fields, issues) = run(&simple(c, 2));
        assert!(has_malformed(&issues), "{issues:?}");
        assert!(fields.iter().all(|f| !f.data.is_empty()));
        // Decreasing offsets read to the end of the chunk, as `FileIO.read(-n)` does.
        let mut c = classic(&two_items());
        let evil_item_start = u32_at(&c, 8).unwrap();
        c[8..12].copy_from_slice(&0u32.to_le_bytes());
        c[4..8].copy_from_slice(&evil_item_start.to_le_bytes());
        let (fields, issues) = run(&simple(c, 2));
        assert!(has_malformed(&issues));
        assert!(fields.iter().any(|f| f.item == 0 && f.data == EVIL));
    }

    #[test]
    fn huge_item_count() {
        let mut c = classic(&two_items());
        c[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let t = Instant::now();
        let (_, issues) = run(&simple(c.clone(), 2));
        assert!(has_malformed(&issues));
        let (_, issues) = run(&simple(c, u64::from(u32::MAX) * 4));
        assert!(has_malformed(&issues));
        assert!(t.elapsed() < Duration::from_secs(5));
        // More items than the limit allows, each one really present.
        let items: Vec<Vec<u8>> = (0..50).map(|_| item(&[b"", BENIGN])).collect();
        let limits = LitdataLimits {
            max_items: 10,
            ..LitdataLimits::default()
        };
        let (fields, issues) = run_with(&simple(classic(&items), 50), &limits);
        assert!(has_limit(&issues) && fields.len() <= 10);
    }

    #[test]
    fn truncated_chunks() {
        let full = std::fs::read(fixture("mal_plain").0.join("chunk-0-0.bin")).unwrap();
        for cut in [0, 3, 7, 20, full.len() / 2, full.len() - 1] {
            let d = MemDir::default()
                .with(
                    "index.json",
                    std::fs::read(fixture("mal_plain").0.join("index.json")).unwrap(),
                )
                .with("chunk-0-0.bin", full[..cut].to_vec());
            let (_, issues) = run(&d);
            assert!(has_malformed(&issues), "cut {cut}: {issues:?}");
        }
        let full = std::fs::read(fixture("mal_zstd_batch").0.join("chunk-0-0.bin")).unwrap();
        let ix = std::fs::read(fixture("mal_zstd_batch").0.join("index.json")).unwrap();
        for cut in [8, 23, 40, 100, full.len() - 1] {
            let d = MemDir::default()
                .with("index.json", ix.clone())
                .with("chunk-0-0.bin", full[..cut].to_vec());
            let (_, issues) = run(&d);
            assert!(has_malformed(&issues), "framed cut {cut}: {issues:?}");
        }
        // Every truncation of every fixture chunk: no panic.
        for v in VARIANTS {
            let d = fixture(&format!("mal_{v}"));
            for f in d.files() {
                let data = std::fs::read(d.0.join(&f)).unwrap();
                for cut in 0..data.len() {
                    let mut m = MemDir::default();
                    for g in d.files() {
                        m.files
                            .insert(g.clone(), std::fs::read(d.0.join(&g)).unwrap());
                    }
                    m.files.insert(f.clone(), data[..cut].to_vec());
                    let _ = run(&m);
                    let _ = is_dataset(&m);
                }
            }
        }
    }

    #[test]
    fn path_traversal() {
        for bad in ["../evil.bin", "/etc/passwd", "a/../../x.bin", "C:\\x.bin"] {
            let d = MemDir::default()
                .with("index.json", index(&[(bad, 1)], config(&["pickle"])))
                .with("evil.bin", classic(&[item(&[EVIL])]));
            let (_, issues) = run(&d);
            assert!(
                issues.contains(&LitdataIssue::PathEscapes { chunk: bad.into() }),
                "{bad}: {issues:?}"
            );
        }
        // Stripping ".zstd" turns "..zstd." into "..".
        let mut cfg = config(&["pickle"]);
        cfg["compression"] = json!("zstd");
        let d = MemDir::default().with("index.json", index(&[("..zstd./x.bin", 1)], cfg));
        let (_, issues) = run(&d);
        assert!(
            issues.contains(&LitdataIssue::PathEscapes {
                chunk: "../x.bin".into()
            }),
            "{issues:?}"
        );
    }

    #[test]
    fn malformed_json_and_shapes() {
        for text in [
            &b"{\"chunks\": ["[..],
            b"\xff\xfe",
            b"{\"chunks\": 5, \"config\": {}}",
            b"[]",
        ] {
            let d = MemDir::default()
                .with("index.json", text.to_vec())
                .with("chunk-0-0.bin", vec![0; 8]);
            let (fields, issues) = run(&d);
            assert!(fields.is_empty());
            assert!(has_malformed(&issues), "{text:?}: {issues:?}");
        }
        assert!(!is_dataset(
            &MemDir::default().with("index.json", b"{\"chunks\": [".to_vec())
        ));
        assert!(!is_dataset(
            &MemDir::default().with("index.json", b"{\"pages\": []}".to_vec())
        ));
        // An unrelated index.json elsewhere does not taint a dataset.
        let d = simple(classic(&two_items()), 2).with("docs/index.json", b"<html>".to_vec());
        let (_, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        // Bad configs: every one reported, nothing panics.
        for cfg in [
            json!({"data_format": "pickle"}),
            json!({"data_format": [1, null]}),
            json!({"data_format": ["pickle"], "compression_level": "huge"}),
            json!({"data_format": ["pickle"], "compression": "lz4"}),
            json!({"data_format": ["a:b:c"]}),
            json!(7),
        ] {
            let d = MemDir::default()
                .with("index.json", index(&[("chunk-0-0.bin", 1)], cfg.clone()))
                .with("chunk-0-0.bin", classic(&[item(&[EVIL])]));
            let (_, issues) = run(&d);
            assert!(has_malformed(&issues), "{cfg}: {issues:?}");
        }
    }

    #[test]
    fn missing_chunk() {
        let d = MemDir::default().with(
            "index.json",
            index(&[("chunk-0-0.bin", 1)], config(&["pickle"])),
        );
        let (_, issues) = run(&d);
        assert_eq!(
            issues,
            vec![LitdataIssue::MissingChunk {
                chunk: "chunk-0-0.bin".into()
            }]
        );
    }

    #[test]
    fn zstd_decoder_basics() {
        let mut two = zstd(b"hello ");
        two.extend_from_slice(&zstd(b"world"));
        assert_eq!(zstd_decode(&two, 100).ok().unwrap().0, b"hello world");
        assert!(matches!(zstd_decode(&two, 5), Err(ZErr::Limit)));
        let bomb = zstd_bomb(3);
        assert_eq!(
            zstd_decode(&bomb, 1 << 20).ok().unwrap().0.len(),
            3 * 128 * 1024
        );
        assert!(matches!(zstd_decode(b"", 10), Err(ZErr::Bad(_))));
        assert!(matches!(zstd_decode(b"not zstd", 10), Err(ZErr::Bad(_))));
        let mut trailing = zstd(b"x");
        trailing.extend_from_slice(b"junk");
        assert!(matches!(zstd_decode(&trailing, 10), Ok((_, Some(_)))));
    }

    #[test]
    fn zstd_bombs() {
        let t = Instant::now();
        let limits = LitdataLimits {
            max_ratio: 1000,
            ..LitdataLimits::default()
        };
        // 4 KiB of RLE blocks -> 128 MiB: past 1000x the file and the 1 MiB floor.
        let bomb = zstd_bomb(1024);
        let mut cfg = config(&["pickle"]);
        cfg["compression"] = json!("zstd");
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.zstd.bin", 1)], cfg.clone()),
            )
            .with("chunk-0-0.zstd.bin", bomb.clone());
        let (_, issues) = run_with(&d, &limits);
        assert!(issues.contains(&LitdataIssue::Limit {
            chunk: Some("chunk-0-0.zstd.bin".into()),
            what: "zstd expansion ratio"
        }));
        // Sample level: every item a bomb.
        cfg["compression_level"] = json!("sample");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 3)], cfg.clone()))
            .with(
                "chunk-0-0.bin",
                classic(&[bomb.clone(), bomb.clone(), bomb.clone()]),
            );
        let (_, issues) = run_with(&d, &limits);
        assert!(has_limit(&issues), "{issues:?}");
        // Framed: a frame declaring a 4 GiB output.
        let mut f = framed(&classic(&[item(&[EVIL])]), 1);
        let ulen_at = 24 + 8 + 20;
        f[ulen_at..ulen_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        cfg["compression_level"] = json!("batch");
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 1)], cfg.clone()))
            .with("chunk-0-0.bin", f);
        let (_, issues) = run_with(&d, &limits);
        assert!(has_limit(&issues), "{issues:?}");
        // Framed: a frame that inflates past what it declares.
        let mut f = framed(&classic(&[item(&[EVIL])]), 1);
        let coff = u64_at(&f, 24 + 8 + 8).unwrap() as usize;
        f.truncate(coff);
        f.extend_from_slice(&bomb);
        let clen_at = 24 + 8 + 16;
        f[clen_at..clen_at + 4].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 1)], cfg))
            .with("chunk-0-0.bin", f);
        let (_, issues) = run_with(&d, &limits);
        assert!(has_malformed(&issues), "{issues:?}");
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn overlapping_items_are_capped() {
        // 200k items that all span the whole 1 MiB body: 200 GiB of work if walked naively.
        let body = vec![0u8; 1 << 20];
        let n = 200_000u32;
        let hdr = 4 + 4 * (n + 1);
        let mut c = n.to_le_bytes().to_vec();
        for i in 0..=n {
            let v = if i % 2 == 0 {
                hdr
            } else {
                hdr + body.len() as u32
            };
            c.extend_from_slice(&v.to_le_bytes());
        }
        c.extend_from_slice(&body);
        let t = Instant::now();
        let (_, issues) = run(&simple(c, u64::from(n)));
        assert!(has_limit(&issues), "{issues:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn encrypted_sample_level_and_unlisted() {
        let mut cfg = config(&["pickle"]);
        cfg["encryption"] = json!({"algorithm": "fernet", "level": "sample"});
        let d = MemDir::default()
            .with("index.json", index(&[("chunk-0-0.bin", 1)], cfg))
            .with("chunk-0-0.bin", classic(&[b"gAAAAAB...".to_vec()]))
            .with("chunk-0-9.bin", classic(&[item(&[EVIL])]));
        let (fields, issues) = run(&d);
        assert!(fields.is_empty());
        assert!(issues.contains(&LitdataIssue::Encrypted {
            chunk: Some("chunk-0-0.bin".into())
        }));
        assert!(issues
            .iter()
            .any(|i| matches!(i, LitdataIssue::Unlisted { .. })));
    }

    #[test]
    fn messages_and_blocking() {
        let all = [
            LitdataIssue::Encrypted { chunk: None },
            LitdataIssue::Encrypted {
                chunk: Some("c".into()),
            },
            LitdataIssue::Malformed {
                chunk: None,
                why: "w".into(),
            },
            LitdataIssue::MissingChunk { chunk: "c".into() },
            LitdataIssue::PathEscapes {
                chunk: "../c".into(),
            },
            LitdataIssue::Limit {
                chunk: None,
                what: "x",
            },
            LitdataIssue::UnknownFormat { format: "f".into() },
            LitdataIssue::DataSpecImport {
                module: "m".into(),
                name: "n".into(),
            },
        ];
        for i in &all {
            assert!(i.blocking() && !i.message().is_empty());
        }
        assert!(!LitdataIssue::Unlisted {
            chunk: "c".into(),
            why: "w".into()
        }
        .blocking());
    }

    #[test]
    fn framed_chunk_without_compression_in_config() {
        // The LDFZ01 magic makes litdata read the chunk as framed whatever the config says;
        // without compression an on-demand byte-range read sees the classic layout instead.
        let plain = classic(&two_items());
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("chunk-0-0.bin", 2)], config(&["int", "pickle"])),
            )
            .with("chunk-0-0.bin", framed(&plain, 1));
        let (fields, issues) = run(&d);
        assert!(fields.iter().any(|f| f.item == 1 && f.data == EVIL));
        assert!(has_malformed(&issues));
    }

    #[test]
    fn no_pickle_fields_means_nothing_to_read() {
        let d = MemDir::default().with(
            "index.json",
            index(&[("chunk-0-0.bin", 1)], config(&["int", "str"])),
        );
        let (fields, issues) = run(&d);
        assert!(fields.is_empty() && issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn many_missing_chunks_are_bounded() {
        let names: Vec<String> = (0..30_000).map(|i| format!("c{i}.bin")).collect();
        let chunks: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let d = MemDir::default().with("index.json", index(&chunks, config(&["pickle"])));
        let t = Instant::now();
        let (_, issues) = run(&d);
        assert_eq!(issues.len(), MAX_ISSUES + 1);
        assert_eq!(
            issues.last(),
            Some(&LitdataIssue::Limit {
                chunk: None,
                what: "number of issues reported"
            })
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn dotted_chunk_names_resolve() {
        let d = MemDir::default()
            .with(
                "index.json",
                index(&[("./sub//chunk-0-0.bin", 2)], config(&["int", "pickle"])),
            )
            .with("sub/chunk-0-0.bin", classic(&two_items()));
        let (fields, issues) = run(&d);
        assert!(issues.is_empty(), "{issues:?}");
        assert!(fields
            .iter()
            .any(|f| f.chunk == "sub/chunk-0-0.bin" && f.data == EVIL));
    }

    #[test]
    fn py_slice_semantics() {
        assert_eq!(py_slice(10, 2, 5), 2..5);
        assert_eq!(py_slice(10, -3, 10), 7..10);
        assert_eq!(py_slice(10, 5, 2), 5..5);
        assert_eq!(py_slice(10, -100, 100), 0..10);
        assert_eq!(py_slice(0, 3, 4), 0..0);
    }

    #[test]
    fn random_bytes_never_panic() {
        // Cheap deterministic fuzz over chunk bodies and index texts.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let levels = [json!(null), json!("batch"), json!("sample"), json!("chunk")];
        for round in 0..400 {
            let len = (next() % 300) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 && body.len() >= 8 {
                body[..8].copy_from_slice(FRAMED_MAGIC);
            }
            if round % 5 == 0 && body.len() >= 4 {
                body[..4].copy_from_slice(&ZSTD_MAGIC);
            }
            let mut cfg = config(&["pickle", "graph", "int"]);
            cfg["compression"] = if round % 2 == 0 {
                json!("zstd")
            } else {
                json!(null)
            };
            cfg["compression_level"] = levels[round % 4].clone();
            let d = MemDir::default()
                .with("index.json", index(&[("chunk-0-0.bin", next() % 8)], cfg))
                .with("chunk-0-0.bin", body.clone())
                .with("chunk-0-1.bin", body);
            let _ = run(&d);
        }
    }
}
