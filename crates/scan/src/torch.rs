//! What torch and Lightning do beyond plain unpickling: persistent ids that must name storage
//! records, TorchScript archives that run code, the legacy stream and tar formats, Lightning's
//! `_instantiator`, and the question every torch ≥ 2.6 user asks — would
//! `torch.load(weights_only=True)` accept this file, and if not, what would it need?

use std::collections::BTreeSet;

use ckptguard_formats::io::bytes_at;
use ckptguard_formats::tar::{self, TarMember};
use ckptguard_formats::zip::ZipArchive;
use ckptguard_formats::ReadAt;
use ckptguard_pickle::{analyze_pickle_at, Analysis, ObjId, Opcode, PickleEnd, Value};
use serde::{Deserialize, Serialize};

use crate::finding::{Code, Finding};
use crate::{add_pickle, FileScan, Location, ScanOptions};

/// The legacy format's magic number, `0x1950a86a20f9469cfc6c`, as LONG1 stores it.
const LEGACY_MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The module path Lightning trusts for `hyper_parameters["_instantiator"]`.
pub const LIGHTNING_INSTANTIATOR: &str = "lightning.pytorch.cli.instantiate_module";

/// Would `torch.load(weights_only=True)` (torch ≥ 2.6) accept the file?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsOnly {
    /// Whether it loads as is.
    pub accepted: bool,
    /// Globals to pass to `torch.serialization.add_safe_globals` (`module.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_safe_globals: Vec<String>,
    /// Why it cannot load at all (opcodes outside torch's supported set, TorchScript, tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocker: Option<String>,
}

/// Element size of a torch storage class, by name.
pub fn storage_element_size(name: &str) -> Option<u64> {
    Some(match name {
        "DoubleStorage" | "LongStorage" | "ComplexFloatStorage" => 8,
        "FloatStorage" | "IntStorage" | "QInt32Storage" => 4,
        "HalfStorage" | "ShortStorage" | "BFloat16Storage" => 2,
        "CharStorage" | "ByteStorage" | "BoolStorage" | "QUInt8Storage" | "QInt8Storage"
        | "QUInt4x2Storage" | "QUInt2x4Storage" | "UntypedStorage" => 1,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

fn int_of(a: &Analysis<'_>, id: ObjId) -> Option<i64> {
    match a.value(id) {
        Value::Int(v) => Some(*v),
        _ => None,
    }
}

fn storage_class(a: &Analysis<'_>, id: ObjId) -> Option<(String, u64)> {
    let imp = a.as_import(id)?;
    let ok = (imp.module == "torch" || imp.module == "torch.storage")
        && storage_element_size(&imp.name).is_some();
    ok.then(|| {
        (
            imp.qualified(),
            storage_element_size(&imp.name).unwrap_or(1),
        )
    })
}

/// Checks torch-zip persistent ids: `('storage', <storage class>, key, location, numel)`
/// naming an existing `data/<key>` record of at least `numel × itemsize` bytes.
pub(crate) fn check_zip_persistent_ids(
    a: &Analysis<'_>,
    zip: &ZipArchive<'_>,
    entry: &str,
    out: &mut Vec<Finding>,
) {
    let mut reported = 0usize;
    for p in &a.persistent_ids {
        if reported >= 20 {
            break;
        }
        let at = |f: Finding| f.entry(entry).at(p.offset as u64);
        let Some(t) = a.as_tuple(p.pid) else {
            out.push(at(Finding::new(Code::TorchPersistentId, format!("persistent id {} is not a tuple; torch expects ('storage', class, key, location, numel)", a.render(p.pid)))));
            reported += 1;
            continue;
        };
        let shape_ok = t.len() == 5 && a.as_str(t[0]) == Some("storage");
        let class = t.get(1).and_then(|c| storage_class(a, *c));
        let key = t.get(2).and_then(|k| a.as_str(*k));
        let numel = t.get(4).and_then(|n| int_of(a, *n));
        let (Some((_, itemsize)), Some(key), Some(numel), true) = (class, key, numel, shape_ok)
        else {
            out.push(at(Finding::new(
                Code::TorchPersistentId,
                format!("persistent id {} is not ('storage', <storage class>, key, location, numel)", a.render(p.pid)),
            )
            .why("torch refuses it, but loaders with their own persistent_load (Lightning's _lazy_load) act on what it names")));
            reported += 1;
            continue;
        };
        let record = format!("data/{key}");
        match zip.torch_lookup(&record) {
            None => {
                out.push(at(Finding::new(
                    Code::TorchMissingStorage,
                    format!(
                        "persistent id names storage record {record:?}, which the archive lacks"
                    ),
                )));
                reported += 1;
            }
            Some(e) => {
                let need = u64::try_from(numel)
                    .ok()
                    .and_then(|n| n.checked_mul(itemsize));
                if need.is_none_or(|n| n > e.uncompressed_size) {
                    out.push(at(Finding::new(
                        Code::TorchMissingStorage,
                        format!("storage {record:?} declares {numel} elements of {itemsize} bytes but the record holds {} bytes", e.uncompressed_size),
                    )));
                    reported += 1;
                }
            }
        }
    }
}

/// TorchScript archives run their `code/` on load.
pub(crate) fn check_torchscript(zip: &ZipArchive<'_>, out: &mut Vec<Finding>) -> bool {
    let constants = zip.torch_lookup("constants.pkl").is_some();
    let prefix = zip
        .prefix()
        .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
        .unwrap_or_default();
    let code: Vec<String> = zip
        .entries()
        .iter()
        .map(|e| e.name_lossy().into_owned())
        .filter(|n| {
            let l = n.to_ascii_lowercase();
            l.strip_prefix(&format!("{prefix}/"))
                .unwrap_or(&l)
                .starts_with("code/")
                && !l.ends_with('/')
        })
        .collect();
    if !constants && code.is_empty() {
        return false;
    }
    let mut list = code.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if code.len() > 10 {
        list.push_str(&format!(", … {} more", code.len() - 10));
    }
    out.push(
        Finding::new(Code::TorchScript, format!("TorchScript archive: loading runs its code ({} code files: {list})", code.len()))
            .why("torch.jit.load executes the archive's TorchScript; before torch 2.6, torch.load(weights_only=True) handed such files to torch.jit.load (CVE-2025-32434)")
            .help("Load only TorchScript you built or verified by signature; for weights, export a state_dict or safetensors instead."),
    );
    true
}

/// Lightning imports and calls `hyper_parameters["_instantiator"]` when it is set.
pub(crate) fn check_instantiator(a: &Analysis<'_>, loc: &Location, out: &mut Vec<Finding>) {
    let Some(root) = a.pickles.first().and_then(|p| p.root) else {
        return;
    };
    let Some(hp) = lookup(a, root, "hyper_parameters") else {
        return;
    };
    let Some(inst) = lookup(a, hp, "_instantiator") else {
        return;
    };
    let ok = a.as_str(inst) == Some(LIGHTNING_INSTANTIATOR);
    if !ok {
        let mut f = Finding::new(
            Code::LightningInstantiator,
            format!("hyper_parameters[\"_instantiator\"] = {}: Lightning imports and calls it when loading", a.render(inst)),
        )
        .why("load_from_checkpoint resolves this dotted path and calls it with the hyper-parameters: code execution even when unpickling is safe")
        .help("Remove the key, or set it to lightning.pytorch.cli.instantiate_module.");
        if let Some(e) = &loc.entry {
            f = f.entry(e.clone());
        }
        out.push(f);
    }
}

/// Value of `key` in a dict (or dict-like object built by SETITEMS), by string key.
fn lookup(a: &Analysis<'_>, id: ObjId, key: &str) -> Option<ObjId> {
    let pairs: &[(ObjId, ObjId)] = match a.value(id) {
        Value::Dict(p) => p,
        Value::Object(o) => &o.entries,
        _ => return None,
    };
    pairs
        .iter()
        .rev()
        .find(|(k, _)| a.as_str(*k) == Some(key))
        .map(|(_, v)| *v)
}

/// Opcodes torch's weights-only unpickler (`torch/_weights_only_unpickler.py`) implements.
const WEIGHTS_ONLY_OPCODES: &[Opcode] = &[
    Opcode::GLOBAL,
    Opcode::NEWOBJ,
    Opcode::REDUCE,
    Opcode::BUILD,
    Opcode::APPEND,
    Opcode::APPENDS,
    Opcode::SETITEM,
    Opcode::SETITEMS,
    Opcode::MARK,
    Opcode::TUPLE,
    Opcode::TUPLE1,
    Opcode::TUPLE2,
    Opcode::TUPLE3,
    Opcode::NONE,
    Opcode::NEWFALSE,
    Opcode::NEWTRUE,
    Opcode::EMPTY_TUPLE,
    Opcode::EMPTY_LIST,
    Opcode::EMPTY_DICT,
    Opcode::EMPTY_SET,
    Opcode::BININT,
    Opcode::BININT1,
    Opcode::BININT2,
    Opcode::BINFLOAT,
    Opcode::BINUNICODE,
    Opcode::SHORT_BINSTRING,
    Opcode::BINPERSID,
    Opcode::BINGET,
    Opcode::LONG_BINGET,
    Opcode::BINPUT,
    Opcode::LONG_BINPUT,
    Opcode::LONG1,
    Opcode::PROTO,
    Opcode::STOP,
];

use crate::policy::TORCH_TENSOR_CLASSES;

/// torch's default weights-only allowlist (`_get_allowed_globals`).
fn torch_allows(g: &str) -> bool {
    const FIXED: &[&str] = &[
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.complex",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.per_tensor_affine",
        "torch.per_tensor_symmetric",
        "torch.per_channel_affine",
        "torch.per_channel_symmetric",
        "torch.per_channel_affine_float_qparams",
    ];
    const REBUILD: &[&str] = &[
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    ];
    if FIXED.contains(&g) {
        return true;
    }
    if let Some(f) = g.strip_prefix("torch._utils.") {
        return REBUILD.contains(&f);
    }
    if let Some(n) = g.strip_prefix("torch.") {
        return storage_element_size(n).is_some() && n != "UntypedStorage"
            || TORCH_TENSOR_CLASSES.contains(&n)
            || crate::policy::is_torch_dtype(n);
    }
    false
}

/// The weights-only verdict for one analysed torch pickle.
pub(crate) fn weights_only(a: &Analysis<'_>) -> WeightsOnly {
    let unsupported: Vec<&str> = a
        .opcodes_used()
        .into_iter()
        .filter(|o| !WEIGHTS_ONLY_OPCODES.contains(o))
        .map(|o| o.name())
        .collect();
    let mut needs: BTreeSet<String> = a
        .imports
        .iter()
        .map(|i| i.qualified())
        .filter(|g| !torch_allows(g))
        .collect();
    // BUILD needs the *type* of its target allowlisted: for numpy dtypes that is the per-dtype
    // class (`numpy.dtype("f8")` is a `numpy.dtypes.Float64DType`), which no GLOBAL names.
    for b in &a.builds {
        let Value::Object(o) = a.value(b.target) else {
            continue;
        };
        if a.as_import(o.callable).map(|i| i.qualified()).as_deref() != Some("numpy.dtype") {
            continue;
        }
        if let Some(cls) = a
            .as_tuple(o.args)
            .and_then(|t| t.first())
            .and_then(|c| a.as_str(*c))
            .and_then(numpy_dtype_class)
        {
            needs.insert(format!("numpy.dtypes.{cls}"));
        }
    }
    let blocker = (!unsupported.is_empty()).then(|| {
        format!(
            "uses opcodes the weights-only unpickler does not implement: {}",
            unsupported.join(", ")
        )
    });
    WeightsOnly {
        accepted: blocker.is_none() && needs.is_empty(),
        needs_safe_globals: needs.into_iter().collect(),
        blocker,
    }
}

/// The numpy ≥ 1.25 class of a dtype given by its pickled code (`"f8"`, `"i4"`, `"U3"`).
fn numpy_dtype_class(code: &str) -> Option<&'static str> {
    let code = code.trim_start_matches(['<', '>', '=', '|']);
    Some(match code {
        "b1" => "BoolDType",
        "i1" => "Int8DType",
        "i2" => "Int16DType",
        "i4" => "Int32DType",
        "i8" => "Int64DType",
        "u1" => "UInt8DType",
        "u2" => "UInt16DType",
        "u4" => "UInt32DType",
        "u8" => "UInt64DType",
        "f2" => "Float16DType",
        "f4" => "Float32DType",
        "f8" => "Float64DType",
        "f16" | "f12" => "LongDoubleDType",
        "c8" => "Complex64DType",
        "c16" => "Complex128DType",
        "c32" | "c24" => "CLongDoubleDType",
        "O4" | "O8" => "ObjectDType",
        _ if code.starts_with('U') => "StrDType",
        _ if code.starts_with('S') => "BytesDType",
        _ if code.starts_with('V') => "VoidDType",
        _ if code.starts_with("M8") => "DateTime64DType",
        _ if code.starts_with("m8") => "TimeDelta64DType",
        _ => return None,
    })
}

/// Merges the weights-only verdicts of several pickles of one file.
pub(crate) fn merge_weights_only(into: &mut Option<WeightsOnly>, w: WeightsOnly) {
    match into {
        None => *into = Some(w),
        Some(x) => {
            let mut needs: BTreeSet<String> = x.needs_safe_globals.drain(..).collect();
            needs.extend(w.needs_safe_globals);
            x.needs_safe_globals = needs.into_iter().collect();
            if x.blocker.is_none() {
                x.blocker = w.blocker;
            }
            x.accepted = x.blocker.is_none() && x.needs_safe_globals.is_empty();
        }
    }
}

/// If `data` is torch's legacy stream (first pickle = the magic number), analyses exactly the
/// five pickles torch reads and returns `true`; the raw storage bytes after them are never
/// unpickled by torch and are not analysed as pickles.
pub(crate) fn scan_legacy_stream(data: &[u8], opts: &ScanOptions, out: &mut FileScan) -> bool {
    let mut a = Analysis::new(data);
    let PickleEnd::Stop(mut pos) = analyze_pickle_at(&mut a, 0, &opts.limits.pickle) else {
        return false;
    };
    let magic =
        a.pickles[0].root.map(|r| a.value(r)) == Some(&Value::BigInt(LEGACY_MAGIC_LE.to_vec()));
    if !magic || !a.imports.is_empty() || !a.calls.is_empty() {
        return false;
    }
    out.format = "torch-legacy".into();
    for _ in 1..5 {
        match analyze_pickle_at(&mut a, pos, &opts.limits.pickle) {
            PickleEnd::Stop(end) => pos = end,
            PickleEnd::Failed => break,
        }
    }
    let loc = Location {
        entry: None,
        base: 0,
        persistent_ids_expected: true,
        multi_pickle: true,
    };
    add_pickle(&a, loc.clone(), opts, out);
    check_legacy_persistent_ids(&a, &mut out.findings);
    check_instantiator_in(&a, 3, &loc, &mut out.findings);
    out.weights_only = Some(weights_only(&a));
    true
}

/// Lightning checkpoints inside legacy files: the object is the fourth pickle.
fn check_instantiator_in(a: &Analysis<'_>, pickle: usize, loc: &Location, out: &mut Vec<Finding>) {
    let Some(root) = a.pickles.get(pickle).and_then(|p| p.root) else {
        return;
    };
    let Some(hp) = lookup(a, root, "hyper_parameters") else {
        return;
    };
    let Some(inst) = lookup(a, hp, "_instantiator") else {
        return;
    };
    if a.as_str(inst) != Some(LIGHTNING_INSTANTIATOR) {
        let mut f = Finding::new(
            Code::LightningInstantiator,
            format!("hyper_parameters[\"_instantiator\"] = {}: Lightning imports and calls it when loading", a.render(inst)),
        );
        if let Some(e) = &loc.entry {
            f = f.entry(e.clone());
        }
        out.push(f);
    }
}

fn check_legacy_persistent_ids(a: &Analysis<'_>, out: &mut Vec<Finding>) {
    for p in a.persistent_ids.iter().take(20) {
        let ok = a
            .as_tuple(p.pid)
            .is_some_and(|t| match t.first().and_then(|k| a.as_str(*k)) {
                Some("storage") => {
                    t.len() == 6 && t.get(1).and_then(|c| storage_class(a, *c)).is_some()
                }
                Some("module") => t.len() == 4,
                _ => false,
            });
        if !ok {
            out.push(
                Finding::new(
                    Code::TorchPersistentId,
                    format!(
                        "persistent id {} is not a legacy torch storage or module reference",
                        a.render(p.pid)
                    ),
                )
                .at(p.offset as u64),
            );
        }
    }
}

/// torch's oldest format: a tar whose `storages`, `tensors` and `pickle` members torch reads
/// in a fixed sequence of pickles and raw records (`_legacy_load` → `legacy_load`). The
/// sequence is followed exactly, so a pickle hidden between raw records is found.
pub(crate) fn scan_legacy_tar(src: &dyn ReadAt, opts: &ScanOptions, out: &mut FileScan) -> bool {
    let members = match tar::members(src, 100_000) {
        Ok(m) => m,
        Err(tar::TarError::NotTar) => return false,
        Err(e) => {
            out.format = "tar".into();
            out.findings.push(Finding::new(
                Code::TorchLegacyLayout,
                format!("tar archive not readable: {e}"),
            ));
            return true;
        }
    };
    out.format = "torch-legacy-tar".into();
    out.weights_only = Some(WeightsOnly {
        accepted: false,
        needs_safe_globals: Vec::new(),
        blocker: Some("weights_only=True refuses the legacy tar format".into()),
    });
    let read = |m: &TarMember| bytes_at(src, m.offset, m.size, opts.limits.max_pickle_bytes);
    for (name, plan) in [
        ("storages", Plan::Storages),
        ("tensors", Plan::Tensors),
        ("pickle", Plan::One),
    ] {
        let Some(m) = tar::get_member(&members, name) else {
            continue;
        };
        match read(m) {
            Ok(data) => follow(&data, name, m.offset, plan, opts, out),
            Err(e) => out.findings.push(
                Finding::new(Code::LimitExceeded, format!("tar member {name}: {e}")).entry(name),
            ),
        }
    }
    // Every other member that holds a pickle (torch ignores them; other tools may not).
    for m in &members {
        if ["storages", "tensors", "pickle"].contains(&m.name.as_str()) {
            continue;
        }
        if let Ok(data) = read(m) {
            let a = ckptguard_pickle::analyze(&data, &opts.limits.pickle);
            if !crate::not_a_pickle(&a) {
                let loc = Location {
                    entry: Some(m.name.clone()),
                    base: m.offset,
                    ..Location::default()
                };
                add_pickle(&a, loc, opts, out);
            }
        }
    }
    true
}

#[derive(Clone, Copy)]
enum Plan {
    Storages,
    Tensors,
    One,
}

/// Walks one legacy tar member the way torch reads it.
fn follow(data: &[u8], name: &str, base: u64, plan: Plan, opts: &ScanOptions, out: &mut FileScan) {
    let mut a = Analysis::new(data);
    let lim = &opts.limits.pickle;
    let fail = |out: &mut FileScan, why: String| {
        out.findings
            .push(Finding::new(Code::TorchLegacyLayout, format!("{name}: {why}")).entry(name));
    };
    let mut pos = 0usize;
    let next = |a: &mut Analysis<'_>, pos: &mut usize| -> Option<ObjId> {
        match analyze_pickle_at(a, *pos, lim) {
            PickleEnd::Stop(end) => {
                *pos = end;
                a.pickles.last().and_then(|p| p.root)
            }
            PickleEnd::Failed => None,
        }
    };
    match plan {
        Plan::One => {
            next(&mut a, &mut pos);
        }
        Plan::Storages | Plan::Tensors => 'walk: {
            let Some(n) = next(&mut a, &mut pos).and_then(|r| int_of(&a, r)) else {
                fail(out, "the count pickle is missing or not an int".into());
                break 'walk;
            };
            if !(0..=10_000_000).contains(&n) {
                fail(out, format!("implausible count {n}"));
                break 'walk;
            }
            for i in 0..n {
                let Some(args) = next(&mut a, &mut pos) else {
                    fail(
                        out,
                        format!("record {i}: the argument pickle is missing or malformed"),
                    );
                    break 'walk;
                };
                let skip = match plan {
                    Plan::Storages => {
                        // (key, location, storage_type), then i64 numel + numel × itemsize bytes.
                        let size = a
                            .as_tuple(args)
                            .and_then(|t| t.get(2).copied())
                            .and_then(|c| storage_class(&a, c))
                            .map(|(_, s)| s);
                        let Some(itemsize) = size else {
                            fail(
                                out,
                                format!("record {i}: storage type is not a torch storage class"),
                            );
                            break 'walk;
                        };
                        let Some(numel) = data
                            .get(pos..pos + 8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                        else {
                            fail(out, format!("record {i}: truncated"));
                            break 'walk;
                        };
                        u64::try_from(numel)
                            .ok()
                            .and_then(|n| n.checked_mul(itemsize))
                            .and_then(|b| b.checked_add(8))
                    }
                    _ => {
                        // i32 ndim, 4 bytes, ndim × i64 sizes, ndim × i64 strides, i64 offset.
                        let ndim = data
                            .get(pos..pos + 4)
                            .map(|b| i32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
                        ndim.and_then(|d| u64::try_from(d).ok())
                            .and_then(|d| d.checked_mul(16))
                            .and_then(|b| b.checked_add(16))
                    }
                };
                match skip
                    .and_then(|s| usize::try_from(s).ok())
                    .and_then(|s| pos.checked_add(s))
                    .filter(|e| *e <= data.len())
                {
                    Some(e) => pos = e,
                    None => {
                        fail(
                            out,
                            format!("record {i}: raw data runs past the end of the member"),
                        );
                        break 'walk;
                    }
                }
            }
            if let Plan::Storages = plan {
                next(&mut a, &mut pos); // storage views
            }
        }
    }
    let loc = Location {
        entry: Some(name.to_string()),
        base,
        persistent_ids_expected: name == "pickle",
        multi_pickle: true,
    };
    add_pickle(&a, loc, opts, out);
    if name == "pickle" {
        check_instantiator(
            &a,
            &Location {
                entry: Some(name.into()),
                ..Location::default()
            },
            &mut out.findings,
        );
    }
}
