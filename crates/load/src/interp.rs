//! Rebuilds data from the symbolic unpickler's value arena.
//!
//! This is not a second unpickler: `ckptguard_pickle::analyze` already ran the stream
//! symbolically (stack, memo, marks, every opcode). Here the arena's final values are turned
//! into [`Value`]s, and the only calls honoured are a closed list of data constructors
//! (tensor and parameter rebuilders, `OrderedDict`, `torch.Size`, dtypes, devices, paths,
//! numpy scalars and arrays, ...). Everything else is refused by name.

use std::collections::HashMap;
use std::sync::Arc;

use ckptguard_pickle::{Analysis, CallKind, ObjId, Object, Value as PV};

use crate::dtype::{f16_to_f64, DType};
use crate::tensor::{Data, Storage, Tensor};
use crate::value::{key_text, Dict, Value};
use crate::LoadError;

/// Resolves persistent ids (storages) for the container at hand.
pub(crate) trait Storages<'a> {
    /// The storage a persistent id names.
    fn storage(&mut self, a: &Analysis<'_>, pid: ObjId) -> Result<Arc<Storage<'a>>, LoadError>;
}

/// No persistent ids allowed (plain pickles).
pub(crate) struct NoStorages;

impl<'a> Storages<'a> for NoStorages {
    fn storage(&mut self, _: &Analysis<'_>, _: ObjId) -> Result<Arc<Storage<'a>>, LoadError> {
        Err(LoadError::Unsupported(
            "the pickle uses persistent ids but is not inside a torch container".into(),
        ))
    }
}

/// Bounds on the rebuilt tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TreeLimits {
    pub max_nodes: u64,
    pub max_depth: usize,
    pub max_int_bytes: usize,
}

pub(crate) struct Interp<'x, 'p, 'a> {
    a: &'x Analysis<'p>,
    storages: &'x mut dyn Storages<'a>,
    active: Vec<bool>,
    nodes: u64,
    depth: usize,
    limits: TreeLimits,
    path: Vec<String>,
}

type R<T> = Result<T, LoadError>;

/// Rebuilds the value `root` of `a`.
pub(crate) fn rebuild<'a>(
    a: &Analysis<'_>,
    root: ObjId,
    storages: &mut dyn Storages<'a>,
    limits: TreeLimits,
) -> R<Value<'a>> {
    let mut it = Interp {
        a,
        storages,
        active: vec![false; a.values.len()],
        nodes: 0,
        depth: 0,
        limits,
        path: Vec::new(),
    };
    it.value(root)
}

const ORDERED_DICT: &str = "collections.OrderedDict";

/// Classes whose instances become dict records (`NEWOBJ` + `BUILD` of their `__dict__`, or
/// dict subclasses filled by `SETITEMS`).
const RECORD_CLASSES: &[&str] = &[
    "argparse.Namespace",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
    ORDERED_DICT,
    "collections.Counter",
    "collections.defaultdict",
];

/// Imported names that may appear as plain values (never called).
fn global_value(module: &str, name: &str) -> Option<Value<'static>> {
    if module == "torch" {
        if let Some(d) = DType::from_torch_name(name) {
            return Some(Value::DType(d));
        }
        if matches!(
            name,
            "per_tensor_affine"
                | "per_channel_affine"
                | "per_tensor_symmetric"
                | "per_channel_symmetric"
                | "per_channel_affine_float_qparams"
                | "strided"
                | "sparse_coo"
                | "sparse_csr"
                | "sparse_csc"
                | "sparse_bsr"
                | "sparse_bsc"
                | "_mkldnn"
                | "Tensor"
        ) {
            return Some(Value::Global(format!("torch.{name}")));
        }
    }
    let np_scalar = matches!(
        name,
        "bool_"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "uint8"
            | "uint16"
            | "uint32"
            | "uint64"
            | "float16"
            | "float32"
            | "float64"
            | "complex64"
            | "complex128"
            | "str_"
            | "bytes_"
            | "intc"
            | "uintc"
            | "longlong"
            | "ulonglong"
            | "half"
            | "single"
            | "double"
    );
    if (module == "numpy" && (np_scalar || name == "ndarray"))
        || (module == "numpy.dtypes" && name.ends_with("DType") && name.len() < 40)
        || (module == "builtins"
            && matches!(
                name,
                "int"
                    | "float"
                    | "str"
                    | "bytes"
                    | "bool"
                    | "list"
                    | "dict"
                    | "set"
                    | "tuple"
                    | "object"
                    | "complex"
            ))
    {
        return Some(Value::Global(format!("{module}.{name}")));
    }
    None
}

fn is_path_class(q: &str) -> bool {
    matches!(
        q,
        "pathlib.Path"
            | "pathlib.PosixPath"
            | "pathlib.WindowsPath"
            | "pathlib.PurePath"
            | "pathlib.PurePosixPath"
            | "pathlib.PureWindowsPath"
            | "pathlib._local.Path"
            | "pathlib._local.PosixPath"
            | "pathlib._local.WindowsPath"
            | "pathlib._local.PurePosixPath"
            | "pathlib._local.PureWindowsPath"
    )
}

/// A numpy dtype read from a `numpy.dtype(...)` object.
struct NpDtype {
    /// Type code without byte order (`f8`, `U5`).
    code: String,
    big_endian: bool,
}

impl<'x, 'p, 'a> Interp<'x, 'p, 'a> {
    fn here(&self) -> String {
        if self.path.is_empty() {
            "at the top level".into()
        } else {
            format!("at {}", self.path.join("."))
        }
    }

    fn unsupported(&self, msg: impl std::fmt::Display) -> LoadError {
        LoadError::Unsupported(format!("{msg} ({})", self.here()))
    }

    fn malformed(&self, msg: impl std::fmt::Display) -> LoadError {
        LoadError::Malformed(format!("{msg} ({})", self.here()))
    }

    fn pv(&self, id: ObjId) -> &'x PV {
        &self.a.values[id.0 as usize]
    }

    fn import_name(&self, id: ObjId) -> Option<String> {
        self.a
            .as_import(id)
            .filter(|i| !i.dynamic)
            .map(|i| i.qualified())
    }

    /// The items of a literal tuple (or list) argument.
    fn seq(&self, id: ObjId) -> Option<&'x [ObjId]> {
        match self.pv(id) {
            PV::Tuple(v) | PV::List(v) => Some(v),
            _ => None,
        }
    }

    fn args(&self, o: &Object) -> R<&'x [ObjId]> {
        match self.pv(o.args) {
            PV::Tuple(v) => Ok(v),
            other => Err(self.malformed(format!(
                "call arguments are a {}, not a tuple",
                other.type_name()
            ))),
        }
    }

    fn int(&self, id: ObjId) -> Option<i64> {
        match self.pv(id) {
            PV::Int(v) => Some(*v),
            PV::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn uint(&self, id: ObjId, what: &str) -> R<u64> {
        let v = self
            .int(id)
            .ok_or_else(|| self.malformed(format!("{what} is not an integer")))?;
        u64::try_from(v).map_err(|_| self.malformed(format!("{what} is negative ({v})")))
    }

    fn boolean(&self, id: ObjId, what: &str) -> R<bool> {
        match self.pv(id) {
            PV::Bool(b) => Ok(*b),
            PV::Int(v) => Ok(*v != 0),
            _ => Err(self.malformed(format!("{what} is not a bool"))),
        }
    }

    fn str_of(&self, id: ObjId) -> Option<&'x str> {
        match self.pv(id) {
            PV::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A sequence of non-negative ints: a tuple/list, or a `torch.Size(...)` object.
    fn dims(&self, id: ObjId, what: &str) -> R<Vec<u64>> {
        let items = match self.pv(id) {
            PV::Tuple(v) | PV::List(v) => v.as_slice(),
            PV::Object(o) if self.import_name(o.callable).as_deref() == Some("torch.Size") => {
                let args = self.args(o)?;
                match args {
                    [inner] => self.seq(*inner).ok_or_else(|| {
                        self.malformed(format!("{what}: torch.Size of a non-tuple"))
                    })?,
                    [] => &[],
                    _ => {
                        return Err(self.malformed(format!(
                            "{what}: torch.Size with {} arguments",
                            args.len()
                        )))
                    }
                }
            }
            other => {
                return Err(self.malformed(format!(
                    "{what} is a {}, not a tuple of ints",
                    other.type_name()
                )))
            }
        };
        items.iter().map(|i| self.uint(*i, what)).collect()
    }

    fn count(&mut self) -> R<()> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(LoadError::Malformed(format!(
                "the rebuilt structure exceeds {} values (shared references multiply it out)",
                self.limits.max_nodes
            )));
        }
        Ok(())
    }

    /// Rebuilds one value (cycle-checked, depth- and size-bounded).
    pub(crate) fn value(&mut self, id: ObjId) -> R<Value<'a>> {
        self.count()?;
        let i = id.0 as usize;
        if i >= self.active.len() {
            return Err(self.malformed("reference to a value that does not exist"));
        }
        if self.active[i] {
            return Err(self.unsupported("a self-referencing (recursive) structure"));
        }
        if self.depth >= self.limits.max_depth {
            return Err(self.malformed(format!(
                "nesting deeper than {} levels",
                self.limits.max_depth
            )));
        }
        self.active[i] = true;
        self.depth += 1;
        let r = self.value_inner(id);
        self.depth -= 1;
        self.active[i] = false;
        r
    }

    fn values(&mut self, ids: &[ObjId]) -> R<Vec<Value<'a>>> {
        let mut out = Vec::with_capacity(ids.len());
        for (n, id) in ids.iter().enumerate() {
            self.path.push(n.to_string());
            let v = self.value(*id);
            self.path.pop();
            out.push(v?);
        }
        Ok(out)
    }

    fn value_inner(&mut self, id: ObjId) -> R<Value<'a>> {
        let pv = self.pv(id);
        Ok(match pv {
            PV::None => Value::None,
            PV::Bool(b) => Value::Bool(*b),
            PV::Int(v) => Value::Int(*v),
            PV::BigInt(b) => {
                if b.len() > self.limits.max_int_bytes {
                    return Err(self.unsupported(format!("an integer of {} bytes", b.len())));
                }
                bigint(b)
            }
            PV::Float(f) => Value::Float(*f),
            PV::Str(s) => Value::Str(s.clone()),
            PV::Bytes(b) => Value::Bytes(b.get(self.a.input).to_vec()),
            PV::ByteArray(b) => Value::ByteArray(b.get(self.a.input).to_vec()),
            PV::Tuple(v) => Value::Tuple(self.values(v)?),
            PV::List(v) => Value::List(self.values(v)?),
            PV::Set(v) => Value::Set(self.values(v)?),
            PV::FrozenSet(v) => Value::FrozenSet(self.values(v)?),
            PV::Dict(pairs) => Value::Dict(self.dict(None, pairs)?),
            PV::Global(_) => {
                let imp = self.a.as_import(id).filter(|i| !i.dynamic);
                match imp.and_then(|i| global_value(&i.module, &i.name)) {
                    Some(v) => v,
                    None => {
                        let q =
                            imp.map_or_else(|| "a computed name".to_string(), |i| i.qualified());
                        return Err(
                            self.unsupported(format!("the imported object {q} is not plain data"))
                        );
                    }
                }
            }
            PV::Object(o) => self.object(o)?,
            PV::Persistent(i) => {
                // A storage on its own (torch.save(tensor.untyped_storage())): a 1-D tensor.
                let pid = self
                    .a
                    .persistent_ids
                    .get(*i)
                    .ok_or_else(|| self.malformed("bad persistent id"))?
                    .pid;
                let s = self.storages.storage(self.a, pid)?;
                let n = s.nbytes / s.dtype.itemsize();
                let dtype = s.dtype;
                let t =
                    Tensor::new(s, dtype, vec![n], vec![1], 0).map_err(|e| self.malformed(e))?;
                Value::Tensor(t)
            }
            PV::Extension(code) => {
                return Err(self.unsupported(format!("copyreg extension code {code}")));
            }
            PV::Buffer { .. } => return Err(self.unsupported("an out-of-band pickle buffer")),
        })
    }

    fn dict(&mut self, class: Option<String>, pairs: &[(ObjId, ObjId)]) -> R<Dict<'a>> {
        let mut d = Dict {
            class,
            items: Vec::with_capacity(pairs.len()),
        };
        self.dict_extend(&mut d, pairs)?;
        Ok(d)
    }

    /// Adds pairs with Python's duplicate-key rule (the last value wins, at the first key's
    /// position; `1`, `1.0` and `True` are the same key).
    fn dict_extend(&mut self, d: &mut Dict<'a>, pairs: &[(ObjId, ObjId)]) -> R<()> {
        let mut index: HashMap<String, usize> = HashMap::new();
        for (n, (k, _)) in d.items.iter().enumerate() {
            if let Some(h) = hash_key(k) {
                index.entry(h).or_insert(n);
            }
        }
        for (k, v) in pairs {
            let key = self.value(*k)?;
            let h = match hash_key(&key) {
                Some(h) => h,
                None if matches!(key, Value::Tensor(_)) => format!("object:{}", k.0),
                None => {
                    return Err(
                        self.malformed(format!("unhashable dict key of type {}", key.type_name()))
                    )
                }
            };
            self.path.push(key_text(&key));
            let val = self.value(*v);
            self.path.pop();
            let val = val?;
            match index.get(&h) {
                Some(&at) => d.items[at].1 = val,
                None => {
                    index.insert(h, d.items.len());
                    d.items.push((key, val));
                }
            }
        }
        Ok(())
    }

    fn object(&mut self, o: &'x Object) -> R<Value<'a>> {
        let Some(q) = self.import_name(o.callable) else {
            return Err(self.unsupported(format!(
                "a call of a {} that is not an imported global",
                self.pv(o.callable).type_name()
            )));
        };
        let newobj = matches!(o.kind, CallKind::NewObj | CallKind::NewObjEx);
        if let Some(kw) = o.kwargs {
            if !matches!(self.pv(kw), PV::Dict(p) if p.is_empty()) {
                return Err(self.unsupported(format!("{q} called with keyword arguments")));
            }
        }
        let args = self.args(o)?;
        match q.as_str() {
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor_v3"
            | "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state"
            | "torch._tensor._rebuild_from_type_v2" | "torch.nn.parameter.Parameter" => {
                if newobj && q != "torch.nn.parameter.Parameter" {
                    return Err(self.malformed(format!("{q} is a function; NEWOBJ cannot call it")));
                }
                if !o.state.is_empty() || !o.items.is_empty() || !o.entries.is_empty() {
                    return Err(self.unsupported(format!("state set on the result of {q}")));
                }
                let t = self.tensor_call(&q, args)?;
                Ok(Value::Tensor(t))
            }
            "torch._utils._rebuild_qtensor" => Err(self.unsupported(
                "a quantized tensor (torch._utils._rebuild_qtensor): safetensors has no quantized types; dequantize before saving",
            )),
            "torch._utils._rebuild_sparse_tensor" => Err(self.unsupported(
                "a sparse tensor (torch._utils._rebuild_sparse_tensor): convert it with .to_dense() before saving",
            )),
            "torch._utils._rebuild_nested_tensor" => Err(self.unsupported("a nested tensor (torch._utils._rebuild_nested_tensor)")),
            "torch._utils._rebuild_meta_tensor_no_storage" => {
                Err(self.unsupported("a meta tensor without data (torch._utils._rebuild_meta_tensor_no_storage)"))
            }
            "torch._utils._rebuild_wrapper_subclass" => {
                Err(self.unsupported("a tensor subclass without storage (torch._utils._rebuild_wrapper_subclass)"))
            }
            "torch._utils._rebuild_device_tensor_from_numpy" | "torch._utils._rebuild_device_tensor_from_cpu_tensor" => {
                Err(self.unsupported(format!("a device tensor rebuilt through {q}")))
            }
            "torch.Size" => {
                self.no_state(o, &q)?;
                let dims = match args {
                    [] => Vec::new(),
                    [inner] => self.dims(*inner, "torch.Size")?,
                    _ => return Err(self.malformed(format!("torch.Size with {} arguments", args.len()))),
                };
                self.count_many(dims.len())?;
                Ok(Value::Tuple(dims.into_iter().map(|d| Value::Int(d as i64)).collect()))
            }
            "torch.device" => {
                self.no_state(o, &q)?;
                self.device(args)
            }
            "torch.serialization._get_layout" => {
                self.no_state(o, &q)?;
                match args {
                    [s] if self.str_of(*s).is_some_and(|n| n.starts_with("torch.")) => {
                        Ok(Value::Global(self.str_of(*s).unwrap_or_default().to_string()))
                    }
                    _ => Err(self.malformed("torch.serialization._get_layout needs a layout name")),
                }
            }
            "torch.torch_version.TorchVersion" => {
                self.no_state(o, &q)?;
                match args {
                    [s] => self.str_of(*s).map(|s| Value::Str(s.to_string())).ok_or_else(|| self.malformed("TorchVersion of a non-string")),
                    _ => Err(self.malformed("TorchVersion needs one string")),
                }
            }
            "_codecs.encode" => {
                self.no_state(o, &q)?;
                self.codecs_encode(args).map(Value::Bytes)
            }
            "builtins.bytearray" => {
                self.no_state(o, &q)?;
                self.bytearray(args).map(Value::ByteArray)
            }
            "builtins.complex" => {
                self.no_state(o, &q)?;
                let num = |id: ObjId| match self.pv(id) {
                    PV::Int(v) => Some(*v as f64),
                    PV::Float(f) => Some(*f),
                    PV::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                };
                let parts: Option<Vec<f64>> = args.iter().map(|a| num(*a)).collect();
                match parts.as_deref() {
                    Some([]) => Ok(Value::Complex(0.0, 0.0)),
                    Some([r]) => Ok(Value::Complex(*r, 0.0)),
                    Some([r, i]) => Ok(Value::Complex(*r, *i)),
                    _ => Err(self.unsupported("complex() of something other than one or two numbers")),
                }
            }
            "builtins.set" | "builtins.frozenset" => {
                self.no_state(o, &q)?;
                let items = match args {
                    [] => Vec::new(),
                    [it] => {
                        let ids = self.seq(*it).ok_or_else(|| self.unsupported(format!("{q}() of a non-sequence")))?;
                        self.values(ids)?
                    }
                    _ => return Err(self.malformed(format!("{q} takes at most one argument"))),
                };
                Ok(if q == "builtins.set" { Value::Set(items) } else { Value::FrozenSet(items) })
            }
            "collections.deque" => {
                if !o.state.is_empty() || !o.entries.is_empty() {
                    return Err(self.unsupported("state set on a deque"));
                }
                let mut items = match args {
                    [] => Vec::new(),
                    [it, ..] if args.len() <= 2 => {
                        let ids = self.seq(*it).ok_or_else(|| self.unsupported("deque() of a non-sequence"))?;
                        self.values(ids)?
                    }
                    _ => return Err(self.malformed("deque takes at most two arguments")),
                };
                items.extend(self.values(&o.items)?);
                Ok(Value::List(items))
            }
            _ if is_path_class(&q) => {
                self.no_state(o, &q)?;
                let sep = if q.contains("Windows") { '\\' } else { '/' };
                let mut path = String::new();
                for a in args {
                    let part = self.str_of(*a).ok_or_else(|| self.unsupported(format!("{q} with a non-string part")))?;
                    if part.starts_with(sep) || path.is_empty() {
                        path = part.to_string();
                    } else {
                        if !path.ends_with(sep) {
                            path.push(sep);
                        }
                        path.push_str(part);
                    }
                }
                Ok(Value::Str(if path.is_empty() { ".".into() } else { path }))
            }
            "numpy.dtype" => {
                let d = self.np_dtype_of(o)?;
                Ok(Value::Global(format!("numpy.dtype('{}{}')", if d.big_endian { ">" } else { "" }, d.code)))
            }
            "numpy.core.multiarray.scalar" | "numpy._core.multiarray.scalar" => {
                self.no_state(o, &q)?;
                self.np_scalar(args)
            }
            "numpy.core.multiarray._reconstruct" | "numpy._core.multiarray._reconstruct" => self.np_reconstruct(o, args),
            "numpy.core.numeric._frombuffer" | "numpy._core.numeric._frombuffer" => {
                self.no_state(o, &q)?;
                self.np_frombuffer(args)
            }
            "deepspeed.runtime.zero.config.ZeroStageEnum" => {
                self.no_state(o, &q)?;
                match args {
                    [v] => self.int(*v).map(Value::Int).ok_or_else(|| self.malformed("ZeroStageEnum of a non-int")),
                    _ => Err(self.malformed("ZeroStageEnum needs one value")),
                }
            }
            "copyreg._reconstructor" => self.reconstructor(o, args),
            _ if RECORD_CLASSES.contains(&q.as_str()) => self.record(o, &q, args),
            _ => Err(self.unsupported(format!(
                "{q} is not one of the constructors ckptguard rebuilds (tensors, parameters, containers, \
                 dtypes, devices, paths, numpy scalars/arrays, Lightning/DeepSpeed records)"
            ))),
        }
    }

    fn count_many(&mut self, n: usize) -> R<()> {
        self.nodes += n as u64;
        self.count()
    }

    fn no_state(&self, o: &Object, q: &str) -> R<()> {
        if !o.state.is_empty() || !o.items.is_empty() || !o.entries.is_empty() {
            return Err(self.unsupported(format!("state or items set on the result of {q}")));
        }
        Ok(())
    }

    /// Dict-like records: `OrderedDict`, `Counter`, `defaultdict`, `argparse.Namespace`,
    /// `AttributeDict`, DeepSpeed's loss scalers and fragment addresses.
    fn record(&mut self, o: &'x Object, q: &str, args: &'x [ObjId]) -> R<Value<'a>> {
        if !o.items.is_empty() {
            return Err(self.unsupported(format!("APPEND on a {q}")));
        }
        let mut d = Dict {
            class: Some(q.to_string()),
            items: Vec::new(),
        };
        let dict_like = matches!(
            q,
            ORDERED_DICT | "collections.Counter" | "collections.defaultdict"
        ) || q.ends_with("AttributeDict");
        match (q, args) {
            (_, []) => {}
            ("collections.defaultdict", [f, rest @ ..]) if rest.len() <= 1 => {
                // The default factory is kept out of the data (it is a type such as `list`).
                if !matches!(self.pv(*f), PV::None | PV::Global(_)) {
                    return Err(self.unsupported("a defaultdict factory that is not a type"));
                }
                if let [init] = rest {
                    self.dict_init(&mut d, *init)?;
                }
            }
            (ORDERED_DICT | "collections.Counter", [init]) if !newobj(o) => {
                self.dict_init(&mut d, *init)?
            }
            _ if newobj(o) && dict_like => {} // dict.__new__ ignores its arguments
            _ => return Err(self.unsupported(format!("{q} called with {} arguments", args.len()))),
        }
        if !dict_like && !o.entries.is_empty() {
            return Err(self.unsupported(format!("SETITEM on a {q}")));
        }
        self.dict_extend(&mut d, &o.entries)?;
        for s in &o.state {
            self.apply_state(&mut d, *s, q, dict_like)?;
        }
        Ok(Value::Dict(d))
    }

    /// `dict(init)`: a dict, or a sequence of pairs.
    fn dict_init(&mut self, d: &mut Dict<'a>, init: ObjId) -> R<()> {
        match self.pv(init) {
            PV::Dict(p) => self.dict_extend(d, p),
            PV::List(v) | PV::Tuple(v) => {
                let mut pairs = Vec::with_capacity(v.len());
                for p in v {
                    match self.seq(*p) {
                        Some([k, x]) => pairs.push((*k, *x)),
                        _ => {
                            return Err(self.malformed("a dict initialiser item that is not a pair"))
                        }
                    }
                }
                self.dict_extend(d, &pairs)
            }
            other => Err(self.unsupported(format!("a dict built from a {}", other.type_name()))),
        }
    }

    /// BUILD on a record. Attributes of dict subclasses (`OrderedDict._metadata`, ...) are
    /// dropped; the `__dict__` of plain records becomes its items.
    fn apply_state(&mut self, d: &mut Dict<'a>, state: ObjId, q: &str, dict_like: bool) -> R<()> {
        let (dict_state, slots) = match self.pv(state) {
            PV::None => return Ok(()),
            PV::Dict(p) => (Some(p.as_slice()), None),
            PV::Tuple(t) if t.len() == 2 => {
                let part = |id: ObjId| match self.pv(id) {
                    PV::None => Ok(None),
                    PV::Dict(p) => Ok(Some(p.as_slice())),
                    _ => Err(self.unsupported(format!("BUILD state of a {q} that is not a dict"))),
                };
                (part(t[0])?, part(t[1])?)
            }
            other => {
                return Err(
                    self.unsupported(format!("BUILD state of a {q} is a {}", other.type_name()))
                )
            }
        };
        for pairs in [dict_state, slots].into_iter().flatten() {
            if dict_like {
                // Attributes, not items. Validated but dropped (the state_dict `_metadata`).
                for (k, v) in pairs {
                    if self.str_of(*k).is_none() {
                        return Err(
                            self.malformed(format!("a {q} attribute name that is not a string"))
                        );
                    }
                    self.path
                        .push(format!("<attr {}>", self.str_of(*k).unwrap_or_default()));
                    let r = self.value(*v);
                    self.path.pop();
                    r?;
                }
            } else {
                for (k, _) in pairs {
                    if self.str_of(*k).is_none() {
                        return Err(
                            self.malformed(format!("a {q} attribute name that is not a string"))
                        );
                    }
                }
                self.dict_extend(d, pairs)?;
            }
        }
        Ok(())
    }

    /// `copyreg._reconstructor(cls, base, state)` for record classes.
    fn reconstructor(&mut self, o: &'x Object, args: &'x [ObjId]) -> R<Value<'a>> {
        let [cls, base, init] = args else {
            return Err(self.malformed("copyreg._reconstructor needs 3 arguments"));
        };
        let cls_name = self.import_name(*cls).unwrap_or_else(|| "?".into());
        if !RECORD_CLASSES.contains(&cls_name.as_str()) {
            return Err(self.unsupported(format!("copyreg._reconstructor of {cls_name}")));
        }
        let base_name = self.import_name(*base).unwrap_or_default();
        let dict_like = matches!(
            cls_name.as_str(),
            ORDERED_DICT | "collections.Counter" | "collections.defaultdict"
        ) || cls_name.ends_with("AttributeDict");
        let mut d = Dict {
            class: Some(cls_name.clone()),
            items: Vec::new(),
        };
        match base_name.as_str() {
            "builtins.object" => {
                if !matches!(self.pv(*init), PV::None) {
                    return Err(
                        self.malformed("copyreg._reconstructor with base object takes no state")
                    );
                }
            }
            "builtins.dict" if dict_like => {
                if !matches!(self.pv(*init), PV::None) {
                    self.dict_init(&mut d, *init)?;
                }
            }
            _ => {
                return Err(
                    self.unsupported(format!("copyreg._reconstructor with base {base_name}"))
                )
            }
        }
        if !o.items.is_empty() || (!dict_like && !o.entries.is_empty()) {
            return Err(self.unsupported(format!("items added to a {cls_name}")));
        }
        self.dict_extend(&mut d, &o.entries)?;
        for s in &o.state {
            self.apply_state(&mut d, *s, &cls_name, dict_like)?;
        }
        Ok(Value::Dict(d))
    }

    fn device(&self, args: &[ObjId]) -> R<Value<'a>> {
        let ty = args
            .first()
            .and_then(|a| self.str_of(*a))
            .ok_or_else(|| self.malformed("torch.device needs a device string"))?;
        match args {
            [_] => Ok(Value::Device(ty.to_string())),
            [_, i] => match self.pv(*i) {
                PV::None => Ok(Value::Device(ty.to_string())),
                PV::Int(n) => Ok(Value::Device(format!("{ty}:{n}"))),
                _ => Err(self.malformed("torch.device index is not an int")),
            },
            _ => Err(self.malformed("torch.device takes one or two arguments")),
        }
    }

    fn bytes_of(&self, id: ObjId) -> R<Vec<u8>> {
        match self.pv(id) {
            PV::Bytes(b) | PV::ByteArray(b) => Ok(b.get(self.a.input).to_vec()),
            PV::Object(o) if self.import_name(o.callable).as_deref() == Some("_codecs.encode") => {
                self.no_state(o, "_codecs.encode")?;
                self.codecs_encode(self.args(o)?)
            }
            other => Err(self.malformed(format!("expected bytes, found a {}", other.type_name()))),
        }
    }

    /// `_codecs.encode(text, encoding)`: how protocol 2 writes `bytes`.
    fn codecs_encode(&self, args: &[ObjId]) -> R<Vec<u8>> {
        let (text, enc) = match args {
            [t] => (*t, None),
            [t, e] => (*t, Some(*e)),
            _ => return Err(self.malformed("_codecs.encode takes one or two arguments")),
        };
        let text = self
            .str_of(text)
            .ok_or_else(|| self.unsupported("_codecs.encode of a non-string"))?;
        let enc = match enc {
            None => "utf-8".to_string(),
            Some(e) => self
                .str_of(e)
                .ok_or_else(|| self.malformed("_codecs.encode encoding is not a string"))?
                .to_ascii_lowercase(),
        };
        encode_text(text, &enc).map_err(|e| self.unsupported(e))
    }

    fn bytearray(&self, args: &[ObjId]) -> R<Vec<u8>> {
        match args {
            [] => Ok(Vec::new()),
            [x] => match self.pv(*x) {
                PV::Bytes(_) | PV::ByteArray(_) | PV::Object(_) => self.bytes_of(*x),
                PV::List(v) | PV::Tuple(v) => v
                    .iter()
                    .map(|i| {
                        self.int(*i)
                            .and_then(|n| u8::try_from(n).ok())
                            .ok_or_else(|| self.malformed("bytearray item out of range"))
                    })
                    .collect(),
                other => Err(self.unsupported(format!("bytearray of a {}", other.type_name()))),
            },
            [t, e] => {
                let text = self
                    .str_of(*t)
                    .ok_or_else(|| self.malformed("bytearray(str, encoding) without a string"))?;
                let enc = self
                    .str_of(*e)
                    .ok_or_else(|| self.malformed("bytearray encoding is not a string"))?;
                encode_text(text, &enc.to_ascii_lowercase()).map_err(|e| self.unsupported(e))
            }
            _ => Err(self.malformed("bytearray takes at most two arguments")),
        }
    }

    // ---- tensors -------------------------------------------------------------------------

    fn tensor_call(&mut self, q: &str, args: &'x [ObjId]) -> R<Tensor<'a>> {
        match q {
            "torch._utils._rebuild_tensor"
            | "torch._utils._rebuild_tensor_v2"
            | "torch._utils._rebuild_tensor_v3" => {
                let v3 = q.ends_with("v3");
                let (min, max) = match q {
                    "torch._utils._rebuild_tensor" => (4, 4),
                    "torch._utils._rebuild_tensor_v2" => (6, 7),
                    _ => (7, 8),
                };
                if args.len() < min || args.len() > max {
                    return Err(self.malformed(format!("{q} with {} arguments", args.len())));
                }
                let PV::Persistent(pi) = self.pv(args[0]) else {
                    return Err(self
                        .unsupported(format!("{q} of a storage that is not a persistent record")));
                };
                let pid = self
                    .a
                    .persistent_ids
                    .get(*pi)
                    .ok_or_else(|| self.malformed("bad persistent id"))?
                    .pid;
                let storage = self.storages.storage(self.a, pid)?;
                let offset = self.uint(args[1], "storage offset")?;
                let shape = self.dims(args[2], "size")?;
                let strides = self.dims(args[3], "stride")?;
                let dtype = if v3 {
                    let d = match self.pv(args[6]) {
                        PV::Global(_) => self.a.as_import(args[6]).and_then(|i| {
                            (i.module == "torch" && !i.dynamic)
                                .then(|| DType::from_torch_name(&i.name))
                                .flatten()
                        }),
                        _ => None,
                    };
                    let d = d.ok_or_else(|| {
                        self.unsupported(format!(
                            "{q} with an unknown dtype {}",
                            self.a.render(args[6])
                        ))
                    })?;
                    if storage.dtype != DType::U8 {
                        return Err(self.malformed("_rebuild_tensor_v3 needs an untyped storage"));
                    }
                    d
                } else {
                    storage.dtype
                };
                if dtype.is_quantized() {
                    return Err(self.unsupported(format!(
                        "a tensor of quantized dtype {dtype} outside _rebuild_qtensor"
                    )));
                }
                let mut t = Tensor::new(storage, dtype, shape, strides, offset)
                    .map_err(|e| self.malformed(format!("tensor out of bounds: {e}")))?;
                if args.len() >= 6 {
                    t.requires_grad = self.boolean(args[4], "requires_grad")?;
                    self.check_hooks(args[5])?;
                }
                let meta_at = if v3 { 7 } else { 6 };
                if let Some(m) = args.get(meta_at) {
                    self.tensor_metadata(&mut t, *m)?;
                }
                Ok(t)
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                let n = if q.ends_with("state") { 4 } else { 3 };
                if args.len() != n {
                    return Err(self.malformed(format!("{q} with {} arguments", args.len())));
                }
                let mut t = self.tensor_arg(args[0], q)?;
                t.requires_grad = self.boolean(args[1], "requires_grad")?;
                t.parameter = true;
                self.check_hooks(args[2])?;
                if n == 4 {
                    self.tensor_state(args[3])?;
                }
                Ok(t)
            }
            "torch.nn.parameter.Parameter" => {
                let mut t = match args {
                    [] => return Err(self.unsupported("a Parameter without data")),
                    [d] | [d, _] => self.tensor_arg(*d, q)?,
                    _ => return Err(self.malformed("Parameter takes at most two arguments")),
                };
                t.requires_grad = match args.get(1) {
                    Some(r) => self.boolean(*r, "requires_grad")?,
                    None => true,
                };
                t.parameter = true;
                Ok(t)
            }
            "torch._tensor._rebuild_from_type_v2" => {
                let [func, new_type, inner, state] = args else {
                    return Err(self.malformed(format!("{q} with {} arguments", args.len())));
                };
                let ty = self.import_name(*new_type).unwrap_or_default();
                let parameter = match ty.as_str() {
                    "torch.Tensor" => false,
                    "torch.nn.parameter.Parameter" => true,
                    _ => return Err(self.unsupported(format!("a tensor subclass {ty}"))),
                };
                let f = self.import_name(*func).unwrap_or_default();
                if !matches!(
                    f.as_str(),
                    "torch._utils._rebuild_tensor"
                        | "torch._utils._rebuild_tensor_v2"
                        | "torch._utils._rebuild_tensor_v3"
                        | "torch._utils._rebuild_parameter"
                        | "torch._utils._rebuild_parameter_with_state"
                ) {
                    return Err(self.unsupported(format!("{q} with rebuild function {f}")));
                }
                let inner = self
                    .seq(*inner)
                    .filter(|_| matches!(self.pv(*inner), PV::Tuple(_)))
                    .ok_or_else(|| self.malformed(format!("{q} arguments are not a tuple")))?;
                let mut t = self.tensor_call(&f, inner)?;
                t.parameter |= parameter;
                self.tensor_state(*state)?;
                Ok(t)
            }
            _ => Err(self.unsupported(q.to_string())),
        }
    }

    fn tensor_arg(&mut self, id: ObjId, q: &str) -> R<Tensor<'a>> {
        match self.value(id)? {
            Value::Tensor(t) => Ok(t),
            other => Err(self.malformed(format!("{q} of a {}, not a tensor", other.type_name()))),
        }
    }

    /// Python attributes of a tensor (`_rebuild_from_type_v2` state): checked to be plain
    /// data, then dropped (safetensors has nowhere to put them).
    fn tensor_state(&mut self, id: ObjId) -> R<()> {
        self.path.push("<tensor attributes>".into());
        let r = self.value(id);
        self.path.pop();
        match r? {
            Value::None | Value::Dict(_) | Value::Tuple(_) => Ok(()),
            other => Err(self.malformed(format!("tensor state is a {}", other.type_name()))),
        }
    }

    /// `backward_hooks`: torch.save always writes an empty `OrderedDict()`.
    fn check_hooks(&mut self, id: ObjId) -> R<()> {
        let empty = match self.pv(id) {
            PV::None => true,
            PV::Dict(p) => p.is_empty(),
            PV::Object(o) => {
                self.import_name(o.callable).as_deref() == Some(ORDERED_DICT)
                    && matches!(self.pv(o.args), PV::Tuple(t) if t.is_empty())
                    && o.entries.is_empty()
                    && o.items.is_empty()
                    && o.state.is_empty()
            }
            _ => false,
        };
        if empty {
            Ok(())
        } else {
            Err(self.unsupported("a tensor with backward hooks"))
        }
    }

    /// `{'conj': True}` / `{'neg': True}` from `torch._utils.get_tensor_metadata`.
    fn tensor_metadata(&mut self, t: &mut Tensor<'a>, id: ObjId) -> R<()> {
        let pairs = match self.pv(id) {
            PV::None => return Ok(()),
            PV::Dict(p) => p,
            other => {
                return Err(self.malformed(format!("tensor metadata is a {}", other.type_name())))
            }
        };
        for (k, v) in pairs {
            let on = self.boolean(*v, "tensor metadata flag")?;
            match self.str_of(*k) {
                Some("conj") => t.conj = on,
                Some("neg") => t.neg = on,
                _ => {
                    return Err(
                        self.unsupported(format!("tensor metadata key {}", self.a.render(*k)))
                    )
                }
            }
        }
        if t.neg
            && !matches!(
                t.dtype,
                DType::F16
                    | DType::BF16
                    | DType::F32
                    | DType::F64
                    | DType::C32
                    | DType::C64
                    | DType::C128
                    | DType::I8
                    | DType::I16
                    | DType::I32
                    | DType::I64
            )
        {
            return Err(self.unsupported(format!("the negative bit on a {} tensor", t.dtype)));
        }
        Ok(())
    }

    // ---- numpy ---------------------------------------------------------------------------

    fn np_dtype_of(&self, o: &Object) -> R<NpDtype> {
        let args = self.args(o)?;
        let descr = args
            .first()
            .and_then(|a| self.str_of(*a))
            .ok_or_else(|| self.unsupported("numpy.dtype of a non-string"))?;
        let mut code = descr.to_string();
        let mut big = false;
        if let Some(rest) = code.strip_prefix(['<', '>', '|', '=']) {
            big = descr.starts_with('>');
            code = rest.to_string();
        }
        if !o.items.is_empty() || !o.entries.is_empty() {
            return Err(self.unsupported("items added to a numpy.dtype"));
        }
        for s in &o.state {
            // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
            let t = self
                .seq(*s)
                .ok_or_else(|| self.unsupported("numpy.dtype state that is not a tuple"))?;
            if t.len() < 5 {
                return Err(self.unsupported("numpy.dtype state of an unknown version"));
            }
            match self.str_of(t[1]) {
                Some(">") => big = true,
                Some("<" | "|" | "=") => big = false,
                _ => return Err(self.unsupported("numpy.dtype with an unknown byte order")),
            }
            if t[2..5].iter().any(|x| !matches!(self.pv(*x), PV::None)) {
                return Err(self.unsupported("a structured or sub-array numpy dtype"));
            }
        }
        Ok(NpDtype {
            code,
            big_endian: big,
        })
    }

    fn np_dtype(&self, id: ObjId) -> R<NpDtype> {
        match self.pv(id) {
            PV::Object(o)
                if matches!(self.import_name(o.callable).as_deref(), Some("numpy.dtype")) =>
            {
                self.np_dtype_of(o)
            }
            _ => Err(self.unsupported("a numpy dtype that is not numpy.dtype(...)")),
        }
    }

    fn np_scalar(&self, args: &[ObjId]) -> R<Value<'a>> {
        let [dt, data] = args else {
            return Err(self.unsupported("a numpy scalar of an object dtype"));
        };
        let dt = self.np_dtype(*dt)?;
        let raw = self.bytes_of(*data)?;
        let mut b = raw.clone();
        let num = DType::from_numpy(&dt.code);
        if let Some(d) = num {
            if b.len() as u64 != d.itemsize() {
                return Err(self.malformed(format!(
                    "numpy {} scalar of {} bytes",
                    dt.code,
                    b.len()
                )));
            }
            if dt.big_endian {
                crate::dtype::byteswap(&mut b, d.swap_unit());
            }
        }
        let arr = |n: usize| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(&b[..n]);
            a
        };
        Ok(match num {
            Some(DType::Bool) => Value::Bool(b[0] != 0),
            Some(DType::I8) => Value::Int(i64::from(b[0] as i8)),
            Some(DType::U8) => Value::Int(i64::from(b[0])),
            Some(DType::I16) => Value::Int(i64::from(i16::from_le_bytes([b[0], b[1]]))),
            Some(DType::U16) => Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))),
            Some(DType::I32) => Value::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Some(DType::U32) => Value::Int(i64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Some(DType::I64) => Value::Int(i64::from_le_bytes(arr(8))),
            Some(DType::U64) => {
                let v = u64::from_le_bytes(arr(8));
                i64::try_from(v).map_or_else(|_| Value::BigInt(v.to_string()), Value::Int)
            }
            Some(DType::F16) => Value::Float(f16_to_f64(u16::from_le_bytes([b[0], b[1]]))),
            Some(DType::F32) => {
                Value::Float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Some(DType::F64) => Value::Float(f64::from_le_bytes(arr(8))),
            Some(DType::C64) => Value::Complex(
                f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                f64::from(f32::from_le_bytes([b[4], b[5], b[6], b[7]])),
            ),
            Some(DType::C128) => {
                let mut r = [0u8; 8];
                let mut i = [0u8; 8];
                r.copy_from_slice(&b[..8]);
                i.copy_from_slice(&b[8..16]);
                Value::Complex(f64::from_le_bytes(r), f64::from_le_bytes(i))
            }
            _ if dt.code.starts_with('U') => {
                // UTF-32 code units, NUL-padded.
                let mut s = String::new();
                let unit = |c: &[u8]| {
                    if dt.big_endian {
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    } else {
                        u32::from_le_bytes([c[0], c[1], c[2], c[3]])
                    }
                };
                for c in raw.chunks_exact(4) {
                    let u = unit(c);
                    if u == 0 {
                        break;
                    }
                    s.push(
                        char::from_u32(u)
                            .ok_or_else(|| self.malformed("invalid numpy str scalar"))?,
                    );
                }
                Value::Str(s)
            }
            _ if dt.code.starts_with('S') => {
                let end = raw.iter().rposition(|c| *c != 0).map_or(0, |p| p + 1);
                Value::Bytes(raw[..end].to_vec())
            }
            _ => return Err(self.unsupported(format!("a numpy scalar of dtype {}", dt.code))),
        })
    }

    fn np_tensor(
        &self,
        dt: &NpDtype,
        shape: Vec<u64>,
        fortran: bool,
        data: Vec<u8>,
    ) -> R<Tensor<'a>> {
        let dtype = DType::from_numpy(&dt.code)
            .ok_or_else(|| self.unsupported(format!("a numpy array of dtype {}", dt.code)))?;
        let n = shape
            .iter()
            .try_fold(1u64, |a, s| a.checked_mul(*s))
            .ok_or_else(|| self.malformed("numpy array size overflows"))?;
        let need = n
            .checked_mul(dtype.itemsize())
            .ok_or_else(|| self.malformed("numpy array size overflows"))?;
        if data.len() as u64 != need {
            return Err(self.malformed(format!(
                "numpy array of {n} {} elements with {} bytes of data",
                dt.code,
                data.len()
            )));
        }
        crate::tensor::numpy_tensor(
            "numpy",
            dtype,
            shape,
            fortran,
            need,
            dt.big_endian,
            None,
            Data::Owned(data),
        )
        .map_err(|e| self.malformed(e))
    }

    /// `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` + BUILD
    /// `(version, shape, dtype, is_fortran, data)`.
    fn np_reconstruct(&mut self, o: &'x Object, args: &[ObjId]) -> R<Value<'a>> {
        let [cls, _, _] = args else {
            return Err(self.malformed("numpy _reconstruct needs 3 arguments"));
        };
        if self.import_name(*cls).as_deref() != Some("numpy.ndarray") {
            return Err(self.unsupported(format!("numpy _reconstruct of {}", self.a.render(*cls))));
        }
        if !o.items.is_empty() || !o.entries.is_empty() || o.state.len() != 1 {
            return Err(self.unsupported("a numpy array without exactly one state"));
        }
        let st = self
            .seq(o.state[0])
            .ok_or_else(|| self.unsupported("numpy array state that is not a tuple"))?;
        let [_version, shape, dt, fortran, data] = st else {
            return Err(self.unsupported(format!("numpy array state of {} items", st.len())));
        };
        let dt = self.np_dtype(*dt)?;
        if dt.code.starts_with('O') || matches!(self.pv(*data), PV::List(_)) {
            return Err(self.unsupported("a numpy object array (its items are Python objects)"));
        }
        let shape = self.dims(*shape, "numpy shape")?;
        let fortran = self.boolean(*fortran, "numpy fortran flag")?;
        let data = self.bytes_of(*data)?;
        self.np_tensor(&dt, shape, fortran, data).map(Value::Tensor)
    }

    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5 arrays).
    fn np_frombuffer(&self, args: &[ObjId]) -> R<Value<'a>> {
        let [buf, dt, shape, order] = args else {
            return Err(self.malformed("numpy _frombuffer needs 4 arguments"));
        };
        let dt = self.np_dtype(*dt)?;
        let shape = self.dims(*shape, "numpy shape")?;
        let fortran = match self.str_of(*order) {
            Some("C") => false,
            Some("F") => true,
            _ => return Err(self.malformed("numpy _frombuffer order is not 'C' or 'F'")),
        };
        let data = self.bytes_of(*buf)?;
        self.np_tensor(&dt, shape, fortran, data).map(Value::Tensor)
    }
}

fn newobj(o: &Object) -> bool {
    matches!(o.kind, CallKind::NewObj | CallKind::NewObjEx)
}

/// Encodes text with one of the codecs pickle itself uses for bytes.
fn encode_text(text: &str, enc: &str) -> Result<Vec<u8>, String> {
    match enc {
        "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => text
            .chars()
            .map(|c| {
                u8::try_from(u32::from(c)).map_err(|_| {
                    format!(
                        "character U+{:04X} cannot be encoded as latin-1",
                        u32::from(c)
                    )
                })
            })
            .collect(),
        "utf-8" | "utf8" => Ok(text.as_bytes().to_vec()),
        "ascii" => {
            if text.is_ascii() {
                Ok(text.as_bytes().to_vec())
            } else {
                Err("non-ASCII text encoded as ascii".into())
            }
        }
        other => Err(format!("the {other:?} codec")),
    }
}

/// A hashable key's identity under Python's equality (`1 == 1.0 == True`), or `None` for
/// unhashable values.
fn hash_key(k: &Value<'_>) -> Option<String> {
    Some(match k {
        Value::None => "N".into(),
        Value::Bool(b) => format!("i{}", i64::from(*b)),
        Value::Int(i) => format!("i{i}"),
        Value::BigInt(s) => format!("i{s}"),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("i{}", *f as i64),
        Value::Float(f) if f.is_nan() => format!("nan{:x}", f.to_bits()), // NaN keys never compare equal
        Value::Float(f) => format!("f{:x}", f.to_bits()),
        Value::Complex(r, i) if *i == 0.0 => return hash_key(&Value::Float(*r)),
        Value::Complex(r, i) => format!("c{:x}/{:x}", r.to_bits(), i.to_bits()),
        Value::Str(s) => format!("s{s}"),
        Value::Bytes(b) => format!(
            "b{}",
            b.iter().map(|c| format!("{c:02x}")).collect::<String>()
        ),
        Value::Tuple(v) => {
            let parts: Option<Vec<String>> = v.iter().map(hash_key).collect();
            format!("t({})", parts?.join(","))
        }
        Value::FrozenSet(v) => {
            let mut parts: Vec<String> = v.iter().map(hash_key).collect::<Option<_>>()?;
            parts.sort();
            parts.dedup();
            format!("fs({})", parts.join(","))
        }
        Value::DType(d) => format!("dt{d}"),
        Value::Device(d) => format!("dev{d}"),
        Value::Global(g) => format!("g{g}"),
        _ => return None,
    })
}

/// LONG1/LONG4 little-endian two's complement → decimal.
fn bigint(b: &[u8]) -> Value<'static> {
    let neg = b.last().is_some_and(|x| x & 0x80 != 0);
    // Magnitude as little-endian bytes.
    let mut mag: Vec<u8> = if neg {
        let mut v: Vec<u8> = b.iter().map(|x| !x).collect();
        for x in v.iter_mut() {
            let (s, carry) = x.overflowing_add(1);
            *x = s;
            if !carry {
                break;
            }
        }
        v
    } else {
        b.to_vec()
    };
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.len() <= 8 {
        let mut a = [0u8; 8];
        a[..mag.len()].copy_from_slice(&mag);
        let m = u64::from_le_bytes(a);
        if !neg && m <= i64::MAX as u64 {
            return Value::Int(m as i64);
        }
        if neg && m <= 1u64 << 63 {
            return Value::Int((m as i128).wrapping_neg() as i64);
        }
    }
    // Repeated division by 10^9 over big-endian base-256 digits.
    let mut digits: Vec<u32> = Vec::new();
    let mut be: Vec<u8> = mag.iter().rev().copied().collect();
    while !be.is_empty() {
        let mut rem = 0u64;
        let mut out = Vec::with_capacity(be.len());
        for &d in &be {
            let cur = (rem << 8) | u64::from(d);
            let q = cur / 1_000_000_000;
            rem = cur % 1_000_000_000;
            if !(out.is_empty() && q == 0) {
                out.push(q as u8);
            }
        }
        digits.push(rem as u32);
        be = out;
    }
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    for (i, d) in digits.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&d.to_string());
        } else {
            s.push_str(&format!("{d:09}"));
        }
    }
    Value::BigInt(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(v: i128, n: usize) -> Vec<u8> {
        v.to_le_bytes()[..n].to_vec()
    }

    #[test]
    fn big_ints() {
        assert!(matches!(bigint(&le(5, 9)), Value::Int(5)));
        assert!(matches!(bigint(&le(-5, 9)), Value::Int(-5)));
        let big = (1i128 << 100) + 1;
        match bigint(&le(big, 13)) {
            Value::BigInt(s) => assert_eq!(s, big.to_string()),
            v => panic!("{v:?}"),
        }
        match bigint(&le(-(1i128 << 80), 11)) {
            Value::BigInt(s) => assert_eq!(s, (-(1i128 << 80)).to_string()),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            bigint(&le(i64::MIN as i128, 9)),
            Value::Int(i64::MIN)
        ));
        match bigint(&le(u64::MAX as i128, 9)) {
            Value::BigInt(s) => assert_eq!(s, u64::MAX.to_string()),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn codecs() {
        assert_eq!(encode_text("\u{ff}a", "latin1").unwrap(), vec![0xff, b'a']);
        assert!(encode_text("\u{100}", "latin1").is_err());
        assert!(encode_text("x", "rot13").is_err());
    }

    #[test]
    fn python_key_equality() {
        assert_eq!(hash_key(&Value::Int(1)), hash_key(&Value::Bool(true)));
        assert_eq!(hash_key(&Value::Int(1)), hash_key(&Value::Float(1.0)));
        assert_ne!(hash_key(&Value::Str("1".into())), hash_key(&Value::Int(1)));
        assert!(hash_key(&Value::List(vec![])).is_none());
    }
}
