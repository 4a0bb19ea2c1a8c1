//! torch.distributed.checkpoint (DCP) directories, and Lightning's sharded checkpoints (DCP files
//! plus `meta.pt`), loaded into the object torch would build — with no pickle executed.
//!
//! What torch does, and what is mirrored here (`_load_state_dict` with
//! `_EmptyStateDictLoadPlanner`, as `dcp_to_torch_save` and Lightning's
//! `_load_distributed_checkpoint` call it):
//!
//! * `.metadata` is read (here: symbolically, through the scanner's value arena and
//!   [`ckptguard_scan::dirs::dcp_items`]);
//! * the state dict is rebuilt in `state_dict_metadata` order: each key is placed at its
//!   `planner_data` path (nested dicts, and lists for integer path items) or at the top level;
//! * a tensor key becomes a fresh contiguous tensor of the metadata's size and dtype into which
//!   every saved chunk (a complete `torch.save` zip at `[offset, offset+length)` of its data
//!   file) is copied at its chunk offsets;
//! * a bytes key becomes the object its `torch.save` zip holds;
//! * with Lightning's layout, `meta.pt`'s dict then updates the top level (`dict.update`).
//!
//! Nothing is loaded unless the whole directory scans safe: `.metadata`, every item of every
//! data file, `meta.pt` and any other file. Layouts that torch would reject or would fill
//! inexactly (uncovered or overlapping chunks, dtype conversions, paths that collide) are
//! refused with a message rather than approximated. The result owns its bytes.

use std::collections::HashMap;
use std::sync::Arc;

use ckptguard_formats::dir::{is_contained, Dir};
use ckptguard_formats::io::{bytes_at, SubRange};
use ckptguard_formats::ReadAt;
use ckptguard_pickle::{analyze, Analysis, ObjId, Value as P};
use ckptguard_scan::dirs::{dcp_items, scan_dir, DcpItem, DirKind, DirScan};
use ckptguard_scan::{FileReport, FileScan};

use crate::dtype::DType;
use crate::tensor::{Storage, Tensor};
use crate::value::{Dict, Value};
use crate::{check_report, load, Checkpoint, LoadError, LoadOptions};

/// Lightning's extra file in a sharded checkpoint directory.
pub const LIGHTNING_META: &str = "meta.pt";

/// The scan of a whole DCP directory as one report: the container's findings and every file's
/// (each finding's entry prefixed with the file's relative path). `name` labels the report.
pub fn dir_report(scan: &DirScan, name: &str, opts: &LoadOptions) -> FileReport {
    let mut all = FileScan {
        format: DirKind::Dcp.format().into(),
        ..FileScan::default()
    };
    all.findings.extend(scan.container.findings.iter().cloned());
    for (rel, s) in &scan.files {
        all.findings.extend(s.findings.iter().cloned().map(|mut f| {
            f.entry = Some(match &f.entry {
                Some(e) => format!("{rel}: {e}"),
                None => rel.clone(),
            });
            f
        }));
    }
    FileReport::new(name.to_string(), all, 0, 0, opts.fail_on)
}

/// Scans the DCP directory `dir` whole and, if it is safe, loads it: the state dict torch's
/// DCP reader builds, updated with `meta.pt` when the directory has one (Lightning's sharded
/// layout). `name` labels the report and messages.
pub fn load_dir(
    dir: &dyn Dir,
    name: &str,
    opts: &LoadOptions,
) -> Result<Checkpoint<'static>, LoadError> {
    let scan = scan_dir(dir, DirKind::Dcp, &opts.scan);
    let report = dir_report(&scan, name, opts);
    check_report(&report, opts.fail_on)?;
    load_dir_scanned(dir, report, opts)
}

/// Loads a DCP directory whose whole-directory `report` (see [`dir_report`]) is already known
/// to be safe. Returns [`LoadError::Unsafe`] if it is not.
pub fn load_dir_scanned(
    dir: &dyn Dir,
    report: FileReport,
    opts: &LoadOptions,
) -> Result<Checkpoint<'static>, LoadError> {
    check_report(&report, opts.fail_on)?;
    let files = dir.files();
    if !files.iter().any(|f| f == ".metadata") {
        return Err(LoadError::Malformed(
            "not a DCP checkpoint: no .metadata".into(),
        ));
    }
    let meta_src = dir.open(".metadata")?;
    let meta_bytes = bytes_at(
        &*meta_src,
        0,
        meta_src.len(),
        opts.scan.limits.max_pickle_bytes,
    )?;
    let a = analyze(&meta_bytes, &opts.scan.limits.pickle);
    crate::first_root(&a, ".metadata")?;
    let md = Metadata::read(&a).map_err(|e| LoadError::Malformed(format!(".metadata: {e}")))?;
    if md.transformed {
        return Err(LoadError::Unsupported(
            "DCP items stored with transforms (transform_descriptors: compression or other \
             extensions) are not loaded"
                .into(),
        ));
    }
    let items = dcp_items(&a).map_err(|e| LoadError::Malformed(format!(".metadata: {e}")))?;
    drop(a);

    let mut reader = Items::new(dir, &files, &items, opts);
    let mut values = Vec::with_capacity(md.keys.len());
    for (fqn, m) in &md.keys {
        values.push(match m {
            KeyMeta::Bytes => reader.bytes_item(fqn)?,
            KeyMeta::Tensor {
                dtype,
                size,
                chunks,
            } => Value::Tensor(reader.tensor_item(fqn, *dtype, size, chunks)?),
        });
    }
    let mut root = build_tree(&md, values)?;

    let mut format = DirKind::Dcp.format().to_string();
    if files.iter().any(|f| f == LIGHTNING_META) {
        let src = dir.open(LIGHTNING_META)?;
        let extra = load(&*src, LIGHTNING_META, opts)
            .map_err(|e| context(e, LIGHTNING_META))?
            .root
            .into_owned()?;
        let Value::Dict(extra) = extra else {
            return Err(LoadError::Unsupported(format!(
                "{LIGHTNING_META} holds a {}, not a dict to merge into the checkpoint",
                extra.type_name()
            )));
        };
        update(&mut root, extra);
        format.push_str("+meta.pt");
    }
    Ok(Checkpoint {
        format,
        root: Value::Dict(root),
        report,
    })
}

/// Python's `dict.update`: existing keys keep their position and take the new value.
fn update(root: &mut Dict<'static>, extra: Dict<'static>) {
    for (k, v) in extra.items {
        let at = match &k {
            Value::Str(s) => root
                .items
                .iter()
                .position(|(rk, _)| matches!(rk, Value::Str(r) if r == s)),
            // The DCP side only has str keys; no other key type equals a str.
            _ => None,
        };
        match at {
            Some(i) => root.items[i].1 = v,
            None => root.items.push((k, v)),
        }
    }
}

/// Adds `what` to an error's message.
fn context(e: LoadError, what: &str) -> LoadError {
    match e {
        LoadError::Unsupported(m) => LoadError::Unsupported(format!("{what}: {m}")),
        LoadError::Malformed(m) => LoadError::Malformed(format!("{what}: {m}")),
        LoadError::Io(e) => LoadError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}"))),
        e @ LoadError::Unsafe { .. } => e,
    }
}

// ----------------------------------------------------------------------------------------------
// .metadata
// ----------------------------------------------------------------------------------------------

/// One saved chunk of a tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chunk {
    offsets: Vec<u64>,
    sizes: Vec<u64>,
}

#[derive(Debug)]
enum KeyMeta {
    Tensor {
        dtype: DType,
        size: Vec<u64>,
        chunks: Vec<Chunk>,
    },
    Bytes,
}

/// An item of a `planner_data` path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathKey {
    Str(String),
    Int(i64),
}

impl PathKey {
    fn text(&self) -> String {
        match self {
            PathKey::Str(s) => s.clone(),
            PathKey::Int(i) => i.to_string(),
        }
    }
}

/// What loading needs from `Metadata`.
struct Metadata {
    /// `state_dict_metadata`, in order (duplicate keys resolved as Python does).
    keys: Vec<(String, KeyMeta)>,
    /// `planner_data` (None when it is `None`).
    planner: Option<HashMap<String, Vec<PathKey>>>,
    /// Some `_StorageInfo` has non-empty `transform_descriptors`.
    transformed: bool,
}

/// The state of an object (its last BUILD), or the value itself if it is a dict.
fn state_of(a: &Analysis<'_>, id: ObjId) -> Option<ObjId> {
    match a.value(id) {
        P::Object(o) => o.state.last().copied(),
        P::Dict(_) => Some(id),
        _ => None,
    }
}

/// A string key of a dict value (the last one, as Python keeps).
fn field(a: &Analysis<'_>, dict: ObjId, key: &str) -> Option<ObjId> {
    match a.value(dict) {
        P::Dict(p) => p
            .iter()
            .rev()
            .find(|(k, _)| a.as_str(*k) == Some(key))
            .map(|(_, v)| *v),
        _ => None,
    }
}

/// `module.name` of the class an object was built from.
fn class_of(a: &Analysis<'_>, id: ObjId) -> Option<String> {
    match a.value(id) {
        P::Object(o) => a.as_import(o.callable).map(|i| i.qualified()),
        _ => None,
    }
}

const MD_MODULE: &str = "torch.distributed.checkpoint.metadata";

/// A `torch.Size` (or a plain tuple/list) of non-negative ints.
fn sizes(a: &Analysis<'_>, id: ObjId) -> Result<Vec<u64>, String> {
    let ints = |id: ObjId| -> Result<Vec<u64>, String> {
        match a.value(id) {
            P::Tuple(t) | P::List(t) => t
                .iter()
                .map(|x| match a.value(*x) {
                    P::Int(v) => u64::try_from(*v).map_err(|_| format!("negative size {v}")),
                    other => Err(format!("a size is a {}", other.type_name())),
                })
                .collect(),
            other => Err(format!(
                "expected a tuple of ints, found a {}",
                other.type_name()
            )),
        }
    };
    match a.value(id) {
        P::Object(o) => {
            if class_of(a, id).as_deref() != Some("torch.Size") {
                return Err(format!(
                    "expected torch.Size, found {}",
                    class_of(a, id).unwrap_or_else(|| "an unknown object".into())
                ));
            }
            let arg = a
                .as_tuple(o.args)
                .and_then(|t| t.first().copied())
                .ok_or("torch.Size without arguments")?;
            ints(arg)
        }
        _ => ints(id),
    }
}

impl Metadata {
    fn read(a: &Analysis<'_>) -> Result<Metadata, String> {
        let root = a
            .pickles
            .first()
            .and_then(|p| p.root)
            .ok_or("the pickle has no result")?;
        match class_of(a, root) {
            Some(c) if c == format!("{MD_MODULE}.Metadata") => {}
            other => {
                return Err(format!(
                    "the pickle is not a {MD_MODULE}.Metadata ({})",
                    other.unwrap_or_else(|| a.value(root).type_name().into())
                ))
            }
        }
        let state = state_of(a, root).ok_or("Metadata has no state")?;
        let sdm = field(a, state, "state_dict_metadata").ok_or("no state_dict_metadata")?;
        let P::Dict(pairs) = a.value(sdm) else {
            return Err("state_dict_metadata is not a dict".into());
        };
        let mut keys: Vec<(String, KeyMeta)> = Vec::new();
        for (k, v) in pairs {
            let fqn = a
                .as_str(*k)
                .ok_or("a state_dict_metadata key is not a str")?
                .to_string();
            let m = key_meta(a, *v).map_err(|e| format!("{fqn:?}: {e}"))?;
            match keys.iter_mut().find(|(f, _)| *f == fqn) {
                Some(slot) => slot.1 = m,
                None => keys.push((fqn, m)),
            }
        }
        let planner = match field(a, state, "planner_data").map(|p| a.value(p)) {
            None | Some(P::None) => None,
            Some(P::Dict(pairs)) => {
                let mut m = HashMap::new();
                for (k, v) in pairs {
                    let fqn = a.as_str(*k).ok_or("a planner_data key is not a str")?;
                    let path = match a.value(*v) {
                        P::Tuple(t) | P::List(t) => t
                            .iter()
                            .map(|x| match a.value(*x) {
                                P::Str(s) => Ok(PathKey::Str(s.clone())),
                                P::Int(i) => Ok(PathKey::Int(*i)),
                                other => Err(format!(
                                    "planner_data[{fqn:?}] holds a {}",
                                    other.type_name()
                                )),
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                        other => {
                            return Err(format!(
                                "planner_data[{fqn:?}] is a {}, not a tuple",
                                other.type_name()
                            ))
                        }
                    };
                    m.insert(fqn.to_string(), path);
                }
                Some(m)
            }
            Some(other) => {
                return Err(format!(
                    "planner_data is a {}, not a dict",
                    other.type_name()
                ))
            }
        };
        let mut transformed = false;
        if let Some(P::Dict(pairs)) = field(a, state, "storage_data").map(|s| a.value(s)) {
            for (_, v) in pairs {
                let td = state_of(a, *v)
                    .and_then(|s| field(a, s, "transform_descriptors"))
                    .map(|t| a.value(t));
                match td {
                    None | Some(P::None) => {}
                    Some(P::List(x)) | Some(P::Tuple(x)) if x.is_empty() => {}
                    Some(_) => transformed = true,
                }
            }
        }
        Ok(Metadata {
            keys,
            planner,
            transformed,
        })
    }
}

fn key_meta(a: &Analysis<'_>, id: ObjId) -> Result<KeyMeta, String> {
    let class = class_of(a, id).unwrap_or_else(|| a.value(id).type_name().into());
    let Some(short) = class
        .strip_prefix(MD_MODULE)
        .and_then(|c| c.strip_prefix('.'))
    else {
        return Err(format!("unexpected storage metadata {class}"));
    };
    match short {
        "BytesStorageMetadata" => Ok(KeyMeta::Bytes),
        "TensorStorageMetadata" => {
            let st = state_of(a, id).ok_or("TensorStorageMetadata has no state")?;
            let props = field(a, st, "properties").ok_or("no properties")?;
            let pst = state_of(a, props)
                .or_else(|| match a.value(props) {
                    P::Object(o) => o.state.last().copied(),
                    _ => None,
                })
                .ok_or("TensorProperties has no state")?;
            // __getstate__ gives (dtype, layout, requires_grad, memory_format, pin_memory[,
            // strides]); older pickles hold the dataclass __dict__.
            let dt = match a.value(pst) {
                P::Tuple(t) => t.first().copied(),
                _ => field(a, pst, "dtype"),
            }
            .ok_or("TensorProperties has no dtype")?;
            let dtype = a
                .as_import(dt)
                .filter(|i| i.module == "torch")
                .and_then(|i| DType::from_torch_name(&i.name))
                .ok_or_else(|| format!("unknown dtype {}", a.render(dt)))?;
            let size = sizes(a, field(a, st, "size").ok_or("no size")?)
                .map_err(|e| format!("size: {e}"))?;
            let ch = field(a, st, "chunks").ok_or("no chunks")?;
            let (P::List(list) | P::Tuple(list)) = a.value(ch) else {
                return Err("chunks is not a list".into());
            };
            let mut chunks = Vec::with_capacity(list.len());
            for c in list {
                match class_of(a, *c) {
                    Some(n) if n == format!("{MD_MODULE}.ChunkStorageMetadata") => {}
                    _ => return Err("a chunk is not a ChunkStorageMetadata".into()),
                }
                let cs = state_of(a, *c).ok_or("a chunk has no state")?;
                let offsets = sizes(a, field(a, cs, "offsets").ok_or("a chunk has no offsets")?)
                    .map_err(|e| format!("chunk offsets: {e}"))?;
                let csz = sizes(a, field(a, cs, "sizes").ok_or("a chunk has no sizes")?)
                    .map_err(|e| format!("chunk sizes: {e}"))?;
                chunks.push(Chunk {
                    offsets,
                    sizes: csz,
                });
            }
            Ok(KeyMeta::Tensor {
                dtype,
                size,
                chunks,
            })
        }
        other => Err(format!("unsupported storage metadata {other}")),
    }
}

// ----------------------------------------------------------------------------------------------
// Items
// ----------------------------------------------------------------------------------------------

/// Reads items out of the data files, each opened once.
struct Items<'d> {
    dir: &'d dyn Dir,
    files: &'d [String],
    /// `MetadataIndex(fqn, offset)` → item (the last one wins, as in a Python dict).
    index: HashMap<(&'d str, Option<Vec<i64>>), &'d DcpItem>,
    open: HashMap<String, Box<dyn ReadAt + 'd>>,
    opts: &'d LoadOptions,
}

impl<'d> Items<'d> {
    fn new(
        dir: &'d dyn Dir,
        files: &'d [String],
        items: &'d [DcpItem],
        opts: &'d LoadOptions,
    ) -> Self {
        let mut index = HashMap::new();
        for it in items {
            index.insert((it.fqn.as_str(), it.chunk_offset.clone()), it);
        }
        Items {
            dir,
            files,
            index,
            open: HashMap::new(),
            opts,
        }
    }

    /// Loads the item stored under `(fqn, offset)` and hands its value to `f`.
    fn with_item<T>(
        &mut self,
        fqn: &str,
        offset: Option<&[u64]>,
        f: impl FnOnce(Value<'_>) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let key_off = offset.map(|o| o.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let what = match offset {
            Some(o) => format!("item {fqn:?} chunk at {o:?}"),
            None => format!("item {fqn:?}"),
        };
        let it = *self
            .index
            .get(&(fqn, key_off))
            .ok_or_else(|| LoadError::Malformed(format!("{what} has no storage_data entry")))?;
        if !is_contained(&it.path) {
            return Err(LoadError::Malformed(format!(
                "{what} is stored at {:?}, outside the checkpoint directory",
                it.path
            )));
        }
        if !self.files.contains(&it.path) {
            return Err(LoadError::Malformed(format!(
                "{what} is stored in {:?}, which is missing",
                it.path
            )));
        }
        if !self.open.contains_key(&it.path) {
            let src = self
                .dir
                .open(&it.path)
                .map_err(|e| context(LoadError::Io(e), &it.path))?;
            self.open.insert(it.path.clone(), src);
        }
        let src = &self.open[&it.path];
        let sub = SubRange::new(&**src, it.offset, it.length).ok_or_else(|| {
            LoadError::Malformed(format!(
                "{what} at {}+{} lies outside {} ({} bytes)",
                it.offset,
                it.length,
                it.path,
                src.len()
            ))
        })?;
        let ck = load(&sub, "item.pt", self.opts).map_err(|e| context(e, &what))?;
        f(ck.root).map_err(|e| context(e, &what))
    }

    /// A bytes item: the object its torch.save zip holds.
    fn bytes_item(&mut self, fqn: &str) -> Result<Value<'static>, LoadError> {
        self.with_item(fqn, None, |v| Ok(v.into_owned()?))
    }

    /// A tensor item: a fresh contiguous tensor of the metadata's size and dtype, filled from
    /// every saved chunk (`torch.empty(size, dtype)` then `copy_` of each narrowed chunk).
    fn tensor_item(
        &mut self,
        fqn: &str,
        dtype: DType,
        size: &[u64],
        chunks: &[Chunk],
    ) -> Result<Tensor<'static>, LoadError> {
        let bad = |m: String| LoadError::Malformed(format!("tensor {fqn:?}: {m}"));
        let nd = size.len();
        let numel = size
            .iter()
            .try_fold(1u64, |a, &s| a.checked_mul(s))
            .ok_or_else(|| bad("the size overflows".into()))?;
        let item = dtype.itemsize();
        let nbytes = numel
            .checked_mul(item)
            .ok_or_else(|| bad("the size overflows".into()))?;
        // Chunks torch reads: those overlapping the tensor (empty ones never do; a 0-d chunk
        // always does).
        let mut used: Vec<&Chunk> = Vec::new();
        let mut covered = 0u64;
        for c in chunks {
            if c.offsets.len() != nd || c.sizes.len() != nd {
                return Err(bad(format!(
                    "a chunk has {} offsets and {} sizes for a {nd}-dimensional tensor",
                    c.offsets.len(),
                    c.sizes.len()
                )));
            }
            for d in 0..nd {
                if c.offsets[d]
                    .checked_add(c.sizes[d])
                    .is_none_or(|e| e > size[d])
                {
                    return Err(bad(format!(
                        "chunk at {:?} of size {:?} lies outside the tensor's size {size:?}",
                        c.offsets, c.sizes
                    )));
                }
            }
            if c.sizes.contains(&0) {
                continue;
            }
            for u in &used {
                if (0..nd).all(|d| {
                    c.offsets[d] < u.offsets[d] + u.sizes[d]
                        && u.offsets[d] < c.offsets[d] + c.sizes[d]
                }) {
                    return Err(LoadError::Unsupported(format!(
                        "tensor {fqn:?}: saved chunks at {:?} and {:?} overlap; the result \
                         would depend on read order",
                        u.offsets, c.offsets
                    )));
                }
            }
            covered += c.sizes.iter().product::<u64>();
            used.push(c);
        }
        if covered != numel {
            return Err(LoadError::Unsupported(format!(
                "tensor {fqn:?}: the saved chunks cover {covered} of its {numel} elements; torch \
                 would leave the rest uninitialised"
            )));
        }
        let n = usize::try_from(nbytes).map_err(|_| bad("too large for memory".into()))?;
        let mut out: Vec<u8> = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            LoadError::Unsupported(format!(
                "tensor {fqn:?} ({nbytes} bytes) does not fit in memory"
            ))
        })?;
        out.resize(n, 0);
        // C-contiguous strides of the full tensor, in elements.
        let mut full = vec![1u64; nd];
        for d in (0..nd.saturating_sub(1)).rev() {
            full[d] = full[d + 1] * size[d + 1];
        }
        for c in used {
            let sizes = c.sizes.clone();
            let bytes = self.with_item(fqn, Some(&c.offsets), |v| {
                let Value::Tensor(t) = v else {
                    return Err(LoadError::Malformed(format!(
                        "holds a {}, not a tensor",
                        v.type_name()
                    )));
                };
                if t.numpy {
                    return Err(LoadError::Malformed(
                        "holds a numpy array, not a tensor".into(),
                    ));
                }
                if t.dtype != dtype {
                    return Err(LoadError::Unsupported(format!(
                        "saved as {} but the metadata says {dtype}; torch would convert the \
                         values, ckptguard does not",
                        t.dtype
                    )));
                }
                if t.shape.len() != nd || t.shape.iter().zip(&sizes).any(|(s, c)| c > s) {
                    return Err(LoadError::Malformed(format!(
                        "holds a tensor of shape {:?}, smaller than the chunk {sizes:?}",
                        t.shape
                    )));
                }
                // narrow_tensor_by_index(tensor, [0, ...], sizes)
                let mut view = Tensor::new(
                    t.storage.clone(),
                    dtype,
                    sizes.clone(),
                    t.strides.clone(),
                    t.offset,
                )
                .map_err(LoadError::Malformed)?;
                view.conj = t.conj;
                view.neg = t.neg;
                Ok(view.contiguous_bytes()?.into_owned())
            })?;
            scatter(&mut out, &bytes, &full, &c.offsets, &c.sizes, item);
        }
        let strides = full;
        let storage = Arc::new(Storage::owned(fqn.to_string(), dtype, out));
        Tensor::new(storage, dtype, size.to_vec(), strides, 0).map_err(bad)
    }
}

/// Copies the C-contiguous bytes `src` of a chunk (`sizes` at `offsets`) into the C-contiguous
/// bytes `dst` of the full tensor (strides `full`, in elements of `item` bytes).
fn scatter(dst: &mut [u8], src: &[u8], full: &[u64], offsets: &[u64], sizes: &[u64], item: u64) {
    let nd = sizes.len();
    if nd == 0 {
        dst[..item as usize].copy_from_slice(&src[..item as usize]);
        return;
    }
    let run = (sizes[nd - 1] * item) as usize;
    let outer = nd - 1;
    let mut idx = vec![0u64; outer];
    let mut at = 0usize;
    loop {
        let el: u64 = (0..nd)
            .map(|d| (offsets[d] + if d < outer { idx[d] } else { 0 }) * full[d])
            .sum();
        let o = (el * item) as usize;
        dst[o..o + run].copy_from_slice(&src[at..at + run]);
        at += run;
        let mut d = outer;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < sizes[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The state dict
// ----------------------------------------------------------------------------------------------

/// The rebuilt state dict before the values are put in.
enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    /// A list slot `extend_list` filled with `None`.
    Hole,
    /// The value of `state_dict_metadata` key number `n`.
    Leaf(usize),
}

/// `_EmptyStateDictLoadPlanner.set_up_planner`: each key at its `planner_data` path
/// (`set_element`) or at the top level, in metadata order. Layouts on which torch's following
/// `flatten_state_dict` would not map every key back to itself (collisions, `None` holes, an
/// int key in a dict) are refused.
fn build_tree(md: &Metadata, values: Vec<Value<'static>>) -> Result<Dict<'static>, LoadError> {
    let n = md.keys.len();
    let mut root: Vec<(String, Node)> = Vec::new();
    for (i, (fqn, _)) in md.keys.iter().enumerate() {
        let refuse = |why: &str| {
            LoadError::Unsupported(format!(
                "key {fqn:?}: its planner_data path {why}; torch's DCP reader would fail or \
                 place it elsewhere"
            ))
        };
        let path = match md.planner.as_ref().and_then(|p| p.get(fqn)) {
            Some(p) => p.clone(),
            None => vec![PathKey::Str(fqn.clone())],
        };
        if path.is_empty() {
            return Err(refuse("is empty"));
        }
        let joined = path.iter().map(PathKey::text).collect::<Vec<_>>().join(".");
        if joined != *fqn {
            return Err(refuse(&format!("{joined:?} does not spell the key")));
        }
        let PathKey::Str(first) = &path[0] else {
            return Err(refuse("starts with an int"));
        };
        // Walk down the path, creating the containers `set_element` creates.
        let mut slot = map_slot(&mut root, first, path.get(1));
        for j in 1..path.len() {
            let next = path.get(j + 1);
            slot = match (slot, &path[j]) {
                (Node::Map(m), PathKey::Str(s)) => map_slot(m, s, next),
                (Node::List(l), PathKey::Int(k)) => list_slot(l, *k, n, next)
                    .ok_or_else(|| refuse("indexes a list out of range"))?,
                (Node::Map(_), PathKey::Int(_)) => return Err(refuse("uses an int in a dict")),
                (Node::List(_), PathKey::Str(_)) => return Err(refuse("uses a str in a list")),
                _ => return Err(refuse("goes through a value that is not a container")),
            };
        }
        // Keys are unique and spell their paths, so a new key lands on a fresh slot unless one
        // key's path is a prefix of another's.
        match slot {
            Node::Hole => *slot = Node::Leaf(i),
            _ => return Err(refuse("collides with another key")),
        }
    }
    check_flat(&root, md)?;
    let mut values: Vec<Option<Value<'static>>> = values.into_iter().map(Some).collect();
    let items = root
        .into_iter()
        .map(|(k, v)| Ok((Value::Str(k), materialize(v, &mut values)?)))
        .collect::<Result<Vec<_>, LoadError>>()?;
    Ok(Dict { class: None, items })
}

/// The node under `key` in a dict, created as a hole (last item) or as the container the next
/// item needs.
fn map_slot<'n>(m: &'n mut Vec<(String, Node)>, key: &str, next: Option<&PathKey>) -> &'n mut Node {
    let pos = match m.iter().position(|(k, _)| k == key) {
        Some(p) => p,
        None => {
            m.push((key.to_string(), fresh(next)));
            m.len() - 1
        }
    };
    &mut m[pos].1
}

fn list_slot<'n>(
    l: &'n mut Vec<Node>,
    k: i64,
    max: usize,
    next: Option<&PathKey>,
) -> Option<&'n mut Node> {
    let k = usize::try_from(k).ok().filter(|k| *k < max)?;
    while l.len() <= k {
        l.push(Node::Hole);
    }
    if matches!(l[k], Node::Hole) && next.is_some() {
        l[k] = fresh(next);
    }
    Some(&mut l[k])
}

/// `set_element`'s default container for the item after this one (a hole when there is none).
fn fresh(next: Option<&PathKey>) -> Node {
    match next {
        None => Node::Hole,
        Some(PathKey::Str(_)) => Node::Map(Vec::new()),
        Some(PathKey::Int(_)) => Node::List(Vec::new()),
    }
}

/// `flatten_state_dict` of the rebuilt dict must give back exactly the metadata keys, each at
/// its own value (otherwise torch reports missing keys or reads into the wrong place).
fn check_flat(root: &[(String, Node)], md: &Metadata) -> Result<(), LoadError> {
    let is_tensor = |i: usize| matches!(md.keys[i].1, KeyMeta::Tensor { .. });
    // traverse_state_dict's _is_terminal (dicts are never terminal).
    fn terminal(n: &Node, is_tensor: &dyn Fn(usize) -> bool) -> bool {
        match n {
            Node::Map(_) => false,
            Node::List(v) => v.iter().all(|e| match e {
                Node::Map(_) => false,
                Node::List(_) => terminal(e, is_tensor),
                Node::Leaf(i) => !is_tensor(*i),
                Node::Hole => true,
            }),
            _ => true,
        }
    }
    fn walk(
        path: &str,
        n: &Node,
        md: &Metadata,
        is_tensor: &dyn Fn(usize) -> bool,
        seen: &mut usize,
    ) -> Result<(), LoadError> {
        let child = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match n {
            Node::Map(m) => {
                for (k, v) in m {
                    walk(&child(k), v, md, is_tensor, seen)?;
                }
                Ok(())
            }
            Node::Leaf(i) if md.keys[*i].0 == path => {
                *seen += 1;
                Ok(())
            }
            Node::List(v) if !terminal(n, is_tensor) => {
                for (i, e) in v.iter().enumerate() {
                    walk(&child(&i.to_string()), e, md, is_tensor, seen)?;
                }
                Ok(())
            }
            _ => Err(LoadError::Unsupported(format!(
                "the rebuilt state dict has {path:?}, which is not a key of the checkpoint \
                 (a list of non-tensor items or a None hole); torch's DCP reader would fail"
            ))),
        }
    }
    let mut seen = 0;
    for (k, v) in root {
        walk(k, v, md, &is_tensor, &mut seen)?;
    }
    if seen != md.keys.len() {
        return Err(LoadError::Unsupported(
            "the rebuilt state dict does not hold every key of the checkpoint".into(),
        ));
    }
    Ok(())
}

fn materialize(
    n: Node,
    values: &mut [Option<Value<'static>>],
) -> Result<Value<'static>, LoadError> {
    Ok(match n {
        Node::Map(m) => Value::Dict(Dict {
            class: None,
            items: m
                .into_iter()
                .map(|(k, v)| Ok((Value::Str(k), materialize(v, values)?)))
                .collect::<Result<Vec<_>, LoadError>>()?,
        }),
        Node::List(v) => Value::List(
            v.into_iter()
                .map(|e| materialize(e, values))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Node::Hole => Value::None,
        Node::Leaf(i) => values[i]
            .take()
            .ok_or_else(|| LoadError::Malformed("a key is placed twice".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_places_chunks() {
        // 3x4 u8 tensor from two chunks split along dim 1.
        let full = [4u64, 1];
        let mut dst = vec![0u8; 12];
        scatter(&mut dst, &[1, 2, 3, 4, 5, 6], &full, &[0, 0], &[3, 2], 1);
        scatter(&mut dst, &[7, 8, 9, 10, 11, 12], &full, &[0, 2], &[3, 2], 1);
        assert_eq!(dst, [1, 2, 7, 8, 3, 4, 9, 10, 5, 6, 11, 12]);
        let mut d0 = vec![0u8; 2];
        scatter(&mut d0, &[5, 6], &[], &[], &[], 2);
        assert_eq!(d0, [5, 6]);
    }

    fn md(keys: &[(&str, bool)], planner: &[(&str, Vec<PathKey>)]) -> Metadata {
        Metadata {
            keys: keys
                .iter()
                .map(|(k, t)| {
                    (
                        k.to_string(),
                        if *t {
                            KeyMeta::Tensor {
                                dtype: DType::F32,
                                size: vec![],
                                chunks: vec![],
                            }
                        } else {
                            KeyMeta::Bytes
                        },
                    )
                })
                .collect(),
            planner: Some(
                planner
                    .iter()
                    .map(|(k, p)| (k.to_string(), p.clone()))
                    .collect(),
            ),
            transformed: false,
        }
    }

    fn s(x: &str) -> PathKey {
        PathKey::Str(x.into())
    }

    #[test]
    fn tree_follows_planner_data() {
        let m = md(
            &[
                ("a.b", false),
                ("l.0.x", false),
                ("top", false),
                ("m.net.0", true),
            ],
            &[
                ("a.b", vec![s("a"), s("b")]),
                ("l.0.x", vec![s("l"), PathKey::Int(0), s("x")]),
                ("m.net.0", vec![s("m"), s("net.0")]),
            ],
        );
        let vals = (0..4).map(Value::Int).collect();
        let d = build_tree(&m, vals).unwrap();
        let root = Value::Dict(d);
        assert!(matches!(root.lookup("a.b"), Some(Value::Int(0))));
        assert!(matches!(root.lookup("l.0.x"), Some(Value::Int(1))));
        assert!(matches!(root.lookup("top"), Some(Value::Int(2))));
        assert!(matches!(root.lookup("m.net.0"), Some(Value::Int(3))));
        assert!(matches!(root.lookup("l"), Some(Value::List(_))));
    }

    #[test]
    fn tree_refuses_what_torch_cannot_map_back() {
        // A list of non-tensor items flattens to one key torch does not find.
        let m = md(
            &[("l.0", false), ("l.1", false)],
            &[
                ("l.0", vec![s("l"), PathKey::Int(0)]),
                ("l.1", vec![s("l"), PathKey::Int(1)]),
            ],
        );
        assert!(build_tree(&m, vec![Value::None, Value::None]).is_err());
        // The same with tensors is fine.
        let m = md(
            &[("l.0", true), ("l.1", true)],
            &[
                ("l.0", vec![s("l"), PathKey::Int(0)]),
                ("l.1", vec![s("l"), PathKey::Int(1)]),
            ],
        );
        assert!(build_tree(&m, vec![Value::None, Value::None]).is_ok());
        // A hole.
        let m = md(&[("l.1", true)], &[("l.1", vec![s("l"), PathKey::Int(1)])]);
        assert!(build_tree(&m, vec![Value::None]).is_err());
        // A path that does not spell the key.
        let m = md(&[("a", false)], &[("a", vec![s("b")])]);
        assert!(build_tree(&m, vec![Value::None]).is_err());
        // A key under another key's value.
        let m = md(
            &[("a", false), ("a.b", false)],
            &[("a", vec![s("a")]), ("a.b", vec![s("a"), s("b")])],
        );
        assert!(build_tree(&m, vec![Value::None, Value::None]).is_err());
    }
}
