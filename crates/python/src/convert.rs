//! Turns a loaded value tree into Python objects.
//!
//! Plain data (None, bools, ints, floats, complex numbers, str, bytes, lists, tuples, sets,
//! dicts) is built here. Everything that needs a Python library — tensors and their storages,
//! dtypes, devices, dict subclasses such as `OrderedDict` or `argparse.Namespace`, the few
//! data-only globals — is delegated to a Python `builder` object (`ckptguard/_build.py`), so the
//! extension itself never imports torch or numpy.
//!
//! Storages are exported once each (tensors that shared a storage in the checkpoint share it in
//! Python): borrowed from the checkpoint's `Mapping` when their bytes lie there verbatim
//! (zero-copy), otherwise copied once into a new `Mapping`. A big-endian storage (a torch zip
//! whose `byteorder` record says `big`) is copied once, swapped by the element size of the
//! tensors that view it, so views keep their strides as they do under `torch.load`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use ckptguard_load::dtype::byteswap;
use ckptguard_load::{Storage, Tensor, Value};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyComplex, PyDict, PyFrozenSet, PyList, PySet, PyTuple};

use crate::mapping::Mapping;

/// The converter: the builder's methods, the mapping storages may borrow from, and the storages
/// exported so far.
pub struct Converter<'py> {
    py: Python<'py>,
    source: Option<Bound<'py, Mapping>>,
    storage_fn: Bound<'py, PyAny>,
    tensor_fn: Bound<'py, PyAny>,
    record_fn: Bound<'py, PyAny>,
    dtype_fn: Bound<'py, PyAny>,
    device_fn: Bound<'py, PyAny>,
    global_fn: Bound<'py, PyAny>,
    int_fn: Bound<'py, PyAny>,
    storages: HashMap<usize, Bound<'py, PyAny>>,
    swapped: HashMap<(usize, usize), Bound<'py, PyAny>>,
    dtypes: HashMap<&'static str, Bound<'py, PyAny>>,
}

impl<'py> Converter<'py> {
    /// A converter calling `builder`'s methods; storages may borrow from `source`.
    pub fn new(builder: &Bound<'py, PyAny>, source: Option<Bound<'py, Mapping>>) -> PyResult<Self> {
        Ok(Converter {
            py: builder.py(),
            source,
            storage_fn: builder.getattr("storage")?,
            tensor_fn: builder.getattr("tensor")?,
            record_fn: builder.getattr("record")?,
            dtype_fn: builder.getattr("dtype")?,
            device_fn: builder.getattr("device")?,
            global_fn: builder.getattr("global_")?,
            int_fn: py_int(builder.py())?,
            storages: HashMap::new(),
            swapped: HashMap::new(),
            dtypes: HashMap::new(),
        })
    }

    /// Converts `v`.
    pub fn value(&mut self, v: &Value<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        Ok(match v {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::BigInt(d) => self.int_fn.call1((d.as_str(),))?,
            Value::Float(f) => f.into_pyobject(py)?.into_any(),
            Value::Complex(r, i) => PyComplex::from_doubles(py, *r, *i).into_any(),
            Value::Str(s) => s.into_pyobject(py)?.into_any(),
            Value::Bytes(b) => PyBytes::new(py, b).into_any(),
            Value::ByteArray(b) => PyByteArray::new(py, b).into_any(),
            Value::List(items) => {
                let list = PyList::empty(py);
                for x in items {
                    list.append(self.value(x)?)?;
                }
                list.into_any()
            }
            Value::Tuple(items) => {
                let elems = items
                    .iter()
                    .map(|x| self.value(x))
                    .collect::<PyResult<Vec<_>>>()?;
                PyTuple::new(py, elems)?.into_any()
            }
            Value::Set(items) => {
                let set = PySet::empty(py)?;
                for x in items {
                    set.add(self.value(x)?)?;
                }
                set.into_any()
            }
            Value::FrozenSet(items) => {
                let elems = items
                    .iter()
                    .map(|x| self.value(x))
                    .collect::<PyResult<Vec<_>>>()?;
                PyFrozenSet::new(py, elems)?.into_any()
            }
            Value::Dict(d) => match &d.class {
                None => {
                    let dict = PyDict::new(py);
                    for (k, x) in &d.items {
                        dict.set_item(self.value(k)?, self.value(x)?)?;
                    }
                    dict.into_any()
                }
                Some(class) => {
                    // Items as a list of pairs: the builder makes the right dict subclass or
                    // record (Namespace takes keyword arguments, OrderedDict keeps order).
                    let pairs = PyList::empty(py);
                    for (k, x) in &d.items {
                        pairs.append(PyTuple::new(py, [self.value(k)?, self.value(x)?])?)?;
                    }
                    self.record_fn.call1((class.as_str(), pairs))?
                }
            },
            Value::Tensor(t) => self.tensor(t)?,
            Value::DType(d) => self.dtype(d.name())?,
            Value::Device(d) => self.device_fn.call1((d.as_str(),))?,
            Value::Global(g) => self.global_fn.call1((g.as_str(),))?,
        })
    }

    fn dtype(&mut self, name: &'static str) -> PyResult<Bound<'py, PyAny>> {
        if let Some(d) = self.dtypes.get(name) {
            return Ok(d.clone());
        }
        let d = self.dtype_fn.call1((name,))?;
        self.dtypes.insert(name, d.clone());
        Ok(d)
    }

    /// `builder.storage(buffer, offset, nbytes, location)`, once per storage.
    fn storage(&mut self, s: &Arc<Storage<'_>>) -> PyResult<Bound<'py, PyAny>> {
        let key = Arc::as_ptr(s) as usize;
        if let Some(obj) = self.storages.get(&key) {
            return Ok(obj.clone());
        }
        let bytes = s
            .range(0, s.nbytes)
            .map_err(|e| malformed(self.py, &format!("storage {:?}: {e}", s.key)))?;
        let obj = self.export(bytes, s.nbytes, &s.location)?;
        self.storages.insert(key, obj.clone());
        Ok(obj)
    }

    /// Hands `bytes` to the builder as a storage: a window of the source mapping when they lie
    /// in it, otherwise a copy in a mapping of their own.
    fn export(
        &self,
        bytes: Cow<'_, [u8]>,
        nbytes: u64,
        location: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let borrowed = match (&bytes, &self.source) {
            (Cow::Borrowed(b), Some(m)) => m.get().offset_of(b).map(|off| (m.clone(), off)),
            _ => None,
        };
        let (buffer, offset) = match borrowed {
            Some(x) => x,
            None => {
                let owned = Mapping::from_bytes(&bytes)?;
                (Bound::new(py, owned)?, 0)
            }
        };
        self.storage_fn.call1((buffer, offset, nbytes, location))
    }

    /// A big-endian storage swapped to little-endian by `unit`-byte elements (the element type
    /// of the tensors viewing it, as torch swaps typed storages): a copy, once per storage and
    /// unit, which keeps every view's strides and offset.
    fn swapped_storage(
        &mut self,
        s: &Arc<Storage<'_>>,
        unit: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = (Arc::as_ptr(s) as usize, unit);
        if let Some(obj) = self.swapped.get(&key) {
            return Ok(obj.clone());
        }
        let mut bytes = s
            .range(0, s.nbytes)
            .map_err(|e| malformed(self.py, &format!("storage {:?}: {e}", s.key)))?
            .into_owned();
        byteswap(&mut bytes, unit);
        let obj = self.export(Cow::Owned(bytes), s.nbytes, &s.location)?;
        self.swapped.insert(key, obj.clone());
        Ok(obj)
    }

    fn tensor(&mut self, t: &Tensor<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let unit = t.dtype.swap_unit();
        let storage = if t.storage.big_endian && unit > 1 {
            self.swapped_storage(&t.storage, unit)?
        } else {
            self.storage(&t.storage)?
        };
        let shape = PyTuple::new(py, &t.shape)?;
        let strides = PyTuple::new(py, &t.strides)?;
        self.tensor_fn.call1((
            storage,
            t.dtype.name(),
            shape,
            strides,
            t.offset,
            (t.requires_grad, t.parameter, t.conj, t.neg, t.numpy),
        ))
    }
}

fn py_int(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("builtins")?.getattr("int")
}

fn malformed(py: Python<'_>, msg: &str) -> PyErr {
    crate::raise(py, "malformed", msg, None, false)
}
