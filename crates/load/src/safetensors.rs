//! Conversion to safetensors: tensors flattened to dotted names, plain values as JSON in
//! `__metadata__`, each tensor written as its own C-contiguous little-endian bytes (no
//! aliasing), streamed.
//!
//! Layout: `u64 LE header length`, the JSON header padded with spaces to a multiple of 8,
//! then the tensors' bytes back to back in the order they are listed.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use serde_json::{json, Map, Value as J};

use crate::dtype::DType;
use crate::json::{to_json, TensorStyle};
use crate::tensor::Tensor;
use crate::value::Value;

/// Why a value cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// `--key` names nothing.
    #[error("key {0:?} not found in the checkpoint")]
    KeyNotFound(String),
    /// A tensor has a dtype safetensors cannot store, or a shape it cannot express.
    #[error("tensor {name:?}: {why}")]
    Unsupported {
        /// Dotted name.
        name: String,
        /// Why.
        why: String,
    },
    /// Two tensors flatten to the same name.
    #[error("two tensors flatten to the same name {0:?}")]
    Duplicate(String),
    /// The selected value holds no tensor.
    #[error("no tensors to write{0}")]
    Empty(String),
}

/// One tensor of the output.
pub struct Entry<'v, 'a> {
    /// Dotted name.
    pub name: String,
    /// The tensor.
    pub tensor: &'v Tensor<'a>,
    /// Byte range in the data section.
    pub begin: u64,
    /// End of the byte range.
    pub end: u64,
}

/// A planned safetensors file: the header bytes and where each tensor goes.
pub struct Plan<'v, 'a> {
    /// Length prefix + padded JSON header.
    pub header: Vec<u8>,
    /// Tensors in data order.
    pub entries: Vec<Entry<'v, 'a>>,
    /// Size of the data section.
    pub data_len: u64,
    /// The `__metadata__` map.
    pub metadata: BTreeMap<String, String>,
}

fn pure_tensors(v: &Value<'_>) -> bool {
    match v {
        Value::Tensor(_) => true,
        _ if v.is_container() => {
            let c = v.children();
            !c.is_empty() && c.iter().all(|(_, x)| pure_tensors(x))
        }
        _ => false,
    }
}

/// Plans the conversion of `root`, or of the subtree at dotted `key`.
pub fn plan<'v, 'a>(root: &'v Value<'a>, key: Option<&str>) -> Result<Plan<'v, 'a>, ConvertError> {
    let sel = match key {
        Some(k) => root
            .lookup(k)
            .ok_or_else(|| ConvertError::KeyNotFound(k.to_string()))?,
        None => root,
    };
    let mut tensors = sel.tensors();
    if let [(name, _)] = tensors.as_mut_slice() {
        if name.is_empty() {
            *name = key.map_or("tensor", |k| k).to_string();
        }
    }
    if tensors.is_empty() {
        return Err(ConvertError::Empty(
            key.map(|k| format!(" under {k:?}")).unwrap_or_default(),
        ));
    }
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(tensors.len());
    let mut header = Map::new();
    let mut at = 0u64;
    for (name, t) in tensors {
        if !seen.insert(name.clone()) {
            return Err(ConvertError::Duplicate(name));
        }
        let dt = t
            .dtype
            .safetensors()
            .ok_or_else(|| ConvertError::Unsupported {
                name: name.clone(),
                why: format!("dtype {} has no safetensors equivalent", t.dtype),
            })?;
        let mut shape = t.shape.clone();
        if t.dtype == DType::F4E2M1FNx2 {
            // safetensors counts 4-bit elements: two per byte.
            match shape.last_mut() {
                Some(l) => *l *= 2,
                None => {
                    return Err(ConvertError::Unsupported {
                        name,
                        why: "a 0-dim float4_e2m1fn_x2 tensor".into(),
                    });
                }
            }
        }
        let n = t.nbytes();
        header.insert(
            name.clone(),
            json!({"dtype": dt, "shape": shape, "data_offsets": [at, at + n]}),
        );
        entries.push(Entry {
            name,
            tensor: t,
            begin: at,
            end: at + n,
        });
        at += n;
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let style = TensorStyle::Custom(
        &|p: &str, _t: &Tensor<'_>| json!({ "__tensor__": if p.is_empty() { key.unwrap_or("tensor") } else { p } }),
    );
    match sel {
        Value::Dict(_) => {
            for (k, v) in sel.children() {
                if !pure_tensors(v) {
                    metadata.insert(k.clone(), to_json(v, &k, &style).to_string());
                }
            }
        }
        _ if !pure_tensors(sel) => {
            metadata.insert("__root__".to_string(), to_json(sel, "", &style).to_string());
        }
        _ => {}
    }
    header.insert("__metadata__".to_string(), json!(metadata));
    let mut text = J::Object(header).to_string().into_bytes();
    let pad = (8 - text.len() % 8) % 8;
    text.extend(std::iter::repeat_n(b' ', pad));
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    Ok(Plan {
        header: bytes,
        entries,
        data_len: at,
        metadata,
    })
}

impl Plan<'_, '_> {
    /// Size of the whole file.
    pub fn total_len(&self) -> u64 {
        self.header.len() as u64 + self.data_len
    }

    /// Writes the file to `out`.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, out);
        w.write_all(&self.header)?;
        for e in &self.entries {
            let mut c = Counter {
                inner: &mut w,
                n: 0,
            };
            e.tensor.write_contiguous(&mut c)?;
            check_len(e, c.n)?;
        }
        w.flush()
    }

    /// Writes the file to `out`. Tensors whose bytes lie verbatim in `src` (the checkpoint the
    /// values were loaded from) are copied file-to-file by the kernel (`copy_file_range` on
    /// Linux) instead of through user memory.
    pub fn write_file(&self, out: &File, src: Option<&File>) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, out);
        w.write_all(&self.header)?;
        for e in &self.entries {
            match (src, e.tensor.raw_source_range()) {
                (Some(mut f), Some((off, len))) if len >= (1 << 20) => {
                    w.flush()?;
                    f.seek(SeekFrom::Start(off))?;
                    let mut dst: &File = out;
                    let n = io::copy(&mut f.take(len), &mut dst)?;
                    check_len(e, n)?;
                }
                _ => {
                    let mut c = Counter {
                        inner: &mut w,
                        n: 0,
                    };
                    e.tensor.write_contiguous(&mut c)?;
                    check_len(e, c.n)?;
                }
            }
        }
        w.flush()
    }
}

fn check_len(e: &Entry<'_, '_>, n: u64) -> io::Result<()> {
    if n != e.end - e.begin {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "tensor {:?}: wrote {n} bytes, expected {}",
                e.name,
                e.end - e.begin
            ),
        ));
    }
    Ok(())
}

struct Counter<'w, W: Write + ?Sized> {
    inner: &'w mut W,
    n: u64,
}

impl<W: Write + ?Sized> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
