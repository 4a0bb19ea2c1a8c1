//! The loaded value tree: plain Python data and tensors whose bytes stay in the source.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::dtype::DType;
use crate::tensor::Tensor;

/// A value rebuilt from a checkpoint. Only data: nothing here can run code.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer, in decimal.
    BigInt(String),
    /// A float.
    Float(f64),
    /// A complex number (`complex`, numpy complex scalars).
    Complex(f64, f64),
    /// A `str` (also `pathlib` paths and `torch.torch_version.TorchVersion`).
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `bytearray`.
    ByteArray(Vec<u8>),
    /// A list (also `collections.deque`).
    List(Vec<Value<'a>>),
    /// A tuple (also `torch.Size`).
    Tuple(Vec<Value<'a>>),
    /// A set.
    Set(Vec<Value<'a>>),
    /// A frozenset.
    FrozenSet(Vec<Value<'a>>),
    /// A dict, in insertion order, with the class it was built as when that was not `dict`.
    Dict(Dict<'a>),
    /// A tensor (torch tensor, Parameter, or numpy array).
    Tensor(Tensor<'a>),
    /// A `torch.dtype` (`torch.float32`).
    DType(DType),
    /// A `torch.device` (`cuda:1`, `cpu`).
    Device(String),
    /// A reference to a data-only Python object by name (a numpy scalar type, a qscheme,
    /// `builtins.int` as a `defaultdict` factory).
    Global(String),
}

/// A dict, or a dict-like record.
#[derive(Clone, Debug, Default)]
pub struct Dict<'a> {
    /// The class when not plain `dict`: `collections.OrderedDict`, `argparse.Namespace`,
    /// `lightning.fabric.utilities.data.AttributeDict`, ...
    pub class: Option<String>,
    /// Items in insertion order. Duplicate keys (possible in hostile pickles) are resolved as
    /// Python does: the last one wins, at the position of the first.
    pub items: Vec<(Value<'a>, Value<'a>)>,
}

impl<'a> Dict<'a> {
    /// The value of a string key.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.items
            .iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }
}

impl<'a> Value<'a> {
    /// Python's name for the value's type.
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Complex(..) => "complex".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::ByteArray(_) => "bytearray".into(),
            Value::List(_) => "list".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Set(_) => "set".into(),
            Value::FrozenSet(_) => "frozenset".into(),
            Value::Dict(d) => d.class.clone().unwrap_or_else(|| "dict".into()),
            Value::Tensor(t) if t.numpy => "numpy.ndarray".into(),
            Value::Tensor(t) if t.parameter => "Parameter".into(),
            Value::Tensor(_) => "Tensor".into(),
            Value::DType(_) => "torch.dtype".into(),
            Value::Device(_) => "torch.device".into(),
            Value::Global(_) => "global".into(),
        }
    }

    /// Whether the value is a leaf (not a container).
    pub fn is_container(&self) -> bool {
        matches!(
            self,
            Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) | Value::Dict(_)
        )
    }

    /// The children of a container, with the key text used in dotted paths (dict keys as
    /// [`key_text`], list/tuple/set positions as indices).
    pub fn children(&self) -> Vec<(String, &Value<'a>)> {
        match self {
            Value::List(v) | Value::Tuple(v) | Value::Set(v) | Value::FrozenSet(v) => v
                .iter()
                .enumerate()
                .map(|(i, x)| (i.to_string(), x))
                .collect(),
            Value::Dict(d) => d.items.iter().map(|(k, v)| (key_text(k), v)).collect(),
            _ => Vec::new(),
        }
    }

    /// Follows a dotted path (`state_dict.layer.weight`, `optimizer_states.0`). A dict key that
    /// itself contains dots is matched whole first.
    pub fn lookup(&self, path: &str) -> Option<&Value<'a>> {
        if path.is_empty() {
            return Some(self);
        }
        let children = self.children();
        if let Some((_, v)) = children.iter().find(|(k, _)| k == path) {
            return Some(v);
        }
        // Longest key that is a dotted prefix of the path.
        let mut best: Option<(&str, &Value<'a>)> = None;
        for (k, v) in &children {
            if let Some(rest) = path
                .strip_prefix(k.as_str())
                .and_then(|r| r.strip_prefix('.'))
            {
                let better = match best {
                    None => true,
                    Some((b, _)) => rest.len() < b.len(),
                };
                if better {
                    best = Some((rest, v));
                }
            }
        }
        best.and_then(|(rest, v)| v.lookup(rest))
    }

    /// The same value with every storage's bytes copied into memory, so it borrows nothing.
    /// Tensors that shared a storage still share (one copy per storage).
    pub fn into_owned(self) -> std::io::Result<Value<'static>> {
        let mut seen = HashMap::new();
        own(self, &mut seen)
    }

    /// Every tensor, with its dotted path, in tree order.
    pub fn tensors(&self) -> Vec<(String, &Tensor<'a>)> {
        let mut out = Vec::new();
        collect_tensors(self, &mut String::new(), &mut out);
        out
    }
}

/// Copies made so far, by original storage (kept alive so its address stays unique).
type OwnedStorages<'a> =
    HashMap<*const crate::tensor::Storage<'a>, (StorageRef<'a>, StorageRef<'static>)>;

fn own<'a>(v: Value<'a>, seen: &mut OwnedStorages<'a>) -> std::io::Result<Value<'static>> {
    let seq = |x: Vec<Value<'a>>, seen: &mut OwnedStorages<'a>| {
        x.into_iter()
            .map(|c| own(c, seen))
            .collect::<std::io::Result<Vec<_>>>()
    };
    Ok(match v {
        Value::None => Value::None,
        Value::Bool(b) => Value::Bool(b),
        Value::Int(i) => Value::Int(i),
        Value::BigInt(s) => Value::BigInt(s),
        Value::Float(f) => Value::Float(f),
        Value::Complex(r, i) => Value::Complex(r, i),
        Value::Str(s) => Value::Str(s),
        Value::Bytes(b) => Value::Bytes(b),
        Value::ByteArray(b) => Value::ByteArray(b),
        Value::List(x) => Value::List(seq(x, seen)?),
        Value::Tuple(x) => Value::Tuple(seq(x, seen)?),
        Value::Set(x) => Value::Set(seq(x, seen)?),
        Value::FrozenSet(x) => Value::FrozenSet(seq(x, seen)?),
        Value::Dict(d) => Value::Dict(Dict {
            class: d.class,
            items: d
                .items
                .into_iter()
                .map(|(k, x)| Ok((own(k, seen)?, own(x, seen)?)))
                .collect::<std::io::Result<Vec<_>>>()?,
        }),
        Value::Tensor(t) => {
            let ptr = Arc::as_ptr(&t.storage);
            let storage = match seen.get(&ptr) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(t.storage.to_owned_storage()?);
                    seen.insert(ptr, (t.storage.clone(), s.clone()));
                    s
                }
            };
            Value::Tensor(t.with_storage(storage))
        }
        Value::DType(d) => Value::DType(d),
        Value::Device(d) => Value::Device(d),
        Value::Global(g) => Value::Global(g),
    })
}

fn collect_tensors<'v, 'a>(
    v: &'v Value<'a>,
    path: &mut String,
    out: &mut Vec<(String, &'v Tensor<'a>)>,
) {
    match v {
        Value::Tensor(t) => out.push((path.clone(), t)),
        _ if v.is_container() => {
            for (k, c) in v.children() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k);
                collect_tensors(c, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The text of a dict key in a dotted path: what Python's `str()` gives for strings, ints,
/// bools, `None` and floats; a Python-like repr for anything else.
pub fn key_text(k: &Value<'_>) -> String {
    match k {
        Value::Str(s) => s.clone(),
        _ => repr(k, 200),
    }
}

/// A short Python-like rendering (`[1, 2]`, `{'a': 1}`, `tensor(float32, [2, 3])`), cut at
/// about `max` characters.
pub fn repr(v: &Value<'_>, max: usize) -> String {
    let mut s = String::new();
    repr_into(v, &mut s, max);
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn py_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        let s = format!("{f:?}");
        // Rust writes 1e20, Python 1e+20.
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    }
}

fn repr_seq(items: &[Value<'_>], open: &str, close: &str, s: &mut String, max: usize) {
    s.push_str(open);
    for (i, x) in items.iter().enumerate() {
        if s.len() > max {
            s.push_str("...");
            break;
        }
        if i > 0 {
            s.push_str(", ");
        }
        repr_into(x, s, max);
    }
    if open == "(" && items.len() == 1 {
        s.push(',');
    }
    s.push_str(close);
}

fn repr_into(v: &Value<'_>, s: &mut String, max: usize) {
    match v {
        Value::None => s.push_str("None"),
        Value::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::BigInt(d) => s.push_str(d),
        Value::Float(f) => s.push_str(&py_float(*f)),
        Value::Complex(r, i) => {
            let _ = write!(
                s,
                "({}{}{}j)",
                py_float(*r),
                if *i < 0.0 || (*i == 0.0 && i.is_sign_negative()) {
                    ""
                } else {
                    "+"
                },
                py_float(*i)
            );
        }
        Value::Str(t) => py_str_repr(t, s),
        Value::Bytes(b) | Value::ByteArray(b) => {
            if matches!(v, Value::ByteArray(_)) {
                s.push_str("bytearray(");
            }
            s.push_str("b'");
            for &c in b.iter().take(max) {
                match c {
                    b'\\' => s.push_str("\\\\"),
                    b'\'' => s.push_str("\\'"),
                    0x20..=0x7e => s.push(c as char),
                    _ => {
                        let _ = write!(s, "\\x{c:02x}");
                    }
                }
            }
            s.push('\'');
            if matches!(v, Value::ByteArray(_)) {
                s.push(')');
            }
        }
        Value::List(x) => repr_seq(x, "[", "]", s, max),
        Value::Tuple(x) => repr_seq(x, "(", ")", s, max),
        Value::Set(x) | Value::FrozenSet(x) if x.is_empty() => {
            s.push_str(if matches!(v, Value::Set(_)) {
                "set()"
            } else {
                "frozenset()"
            })
        }
        Value::Set(x) => repr_seq(x, "{", "}", s, max),
        Value::FrozenSet(x) => repr_seq(x, "frozenset({", "})", s, max),
        Value::Dict(d) => {
            s.push('{');
            for (i, (k, x)) in d.items.iter().enumerate() {
                if s.len() > max {
                    s.push_str("...");
                    break;
                }
                if i > 0 {
                    s.push_str(", ");
                }
                repr_into(k, s, max);
                s.push_str(": ");
                repr_into(x, s, max);
            }
            s.push('}');
        }
        Value::Tensor(t) => {
            let _ = write!(s, "tensor({}, {:?})", t.dtype, t.shape);
        }
        Value::DType(d) => {
            let _ = write!(s, "torch.{d}");
        }
        Value::Device(d) => {
            let _ = write!(s, "device('{d}')");
        }
        Value::Global(g) => s.push_str(g),
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds one and no double quote.
fn py_str_repr(t: &str, s: &mut String) {
    let q = if t.contains('\'') && !t.contains('"') {
        '"'
    } else {
        '\''
    };
    s.push(q);
    for c in t.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c == q => {
                s.push('\\');
                s.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(s, "\\x{:02x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push(q);
}

/// Shared handle to a storage (views of one storage hold the same `Arc`).
pub type StorageRef<'a> = Arc<crate::tensor::Storage<'a>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reprs() {
        assert_eq!(repr(&Value::Float(1.0), 50), "1.0");
        assert_eq!(repr(&Value::Float(1e20), 50), "1e+20");
        assert_eq!(repr(&Value::Float(0.1), 50), "0.1");
        assert_eq!(repr(&Value::Tuple(vec![Value::Int(1)]), 50), "(1,)");
        assert_eq!(repr(&Value::Bytes(b"a\x00'".to_vec()), 50), "b'a\\x00\\''");
        assert_eq!(key_text(&Value::Int(3)), "3");
        assert_eq!(key_text(&Value::Bool(true)), "True");
        assert_eq!(repr(&Value::Complex(1.0, -2.0), 50), "(1.0-2.0j)");
        assert_eq!(repr(&Value::Str("a'b\n".into()), 50), "\"a'b\\n\"");
        assert_eq!(repr(&Value::Str("x".into()), 50), "'x'");
    }

    #[test]
    fn into_owned_copies_and_keeps_sharing() {
        use crate::tensor::{Storage, Tensor};
        let bytes: Vec<u8> = (0u8..16).collect();
        let src: &Vec<u8> = &bytes;
        let st = Arc::new(Storage {
            key: "0".into(),
            dtype: DType::U8,
            location: "cpu".into(),
            nbytes: 16,
            big_endian: false,
            source_offset: Some(0),
            data: Storage::from_source(src, 0, 16),
        });
        let a = Tensor::new(st.clone(), DType::F32, vec![2], vec![1], 0).unwrap();
        let b = Tensor::new(st, DType::F32, vec![2], vec![1], 2).unwrap();
        let v = Value::List(vec![Value::Tensor(a), Value::Tensor(b)]);
        let owned: Value<'static> = v.into_owned().unwrap();
        drop(bytes);
        let ts = owned.tensors();
        assert!(Arc::ptr_eq(&ts[0].1.storage, &ts[1].1.storage));
        assert_eq!(ts[0].1.storage.source_offset, None);
        assert_eq!(
            ts[1].1.contiguous_bytes().unwrap().as_ref(),
            &[8, 9, 10, 11, 12, 13, 14, 15]
        );
    }

    #[test]
    fn lookup_paths() {
        let inner = Value::Dict(Dict {
            class: None,
            items: vec![(Value::Str("a.b".into()), Value::Int(1))],
        });
        let root = Value::Dict(Dict {
            class: None,
            items: vec![
                (Value::Str("x".into()), inner),
                (Value::Str("l".into()), Value::List(vec![Value::Int(5)])),
            ],
        });
        assert!(matches!(root.lookup("x.a.b"), Some(Value::Int(1))));
        assert!(matches!(root.lookup("l.0"), Some(Value::Int(5))));
        assert!(root.lookup("x.a").is_none());
        assert!(root.lookup("").is_some());
    }
}
