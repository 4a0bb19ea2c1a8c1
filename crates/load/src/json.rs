//! JSON renderings of loaded values: the `__metadata__` of converted files and
//! `ckptguard inspect --format json`.
//!
//! Encoding (documented in `docs/loading.md`): `None`/bools/ints/finite floats/strings map to
//! JSON; lists, tuples and sets become arrays; dicts become objects (keys as in dotted paths;
//! a dict whose keys collide once stringified becomes `{"__items__": [[key, value], ...]}`);
//! ints beyond 64 bits are `{"__int__": "<decimal>"}`, non-finite floats
//! `{"__float__": "nan" | "inf" | "-inf"}`, complex numbers `{"__complex__": [re, im]}`, bytes
//! `{"__bytes__": "<base64>"}` (bytearray: `"__bytearray__"`), dtypes `"torch.float32"`,
//! devices `"cuda:0"`, and tensors `{"__tensor__": <reference>}`.

use base64::Engine as _;
use serde_json::{json, Map, Value as J};

use crate::tensor::Tensor;
use crate::value::{key_text, Value};

/// How tensors are rendered.
pub enum TensorStyle<'f> {
    /// `{"__tensor__": "<dotted name>"}`: the name the tensor has in the safetensors file.
    Name,
    /// `{"__tensor__": {dtype, shape, ...}}`.
    Describe,
    /// Custom.
    Custom(&'f dyn Fn(&str, &Tensor<'_>) -> J),
}

fn float(f: f64) -> J {
    if f.is_finite() {
        json!(f)
    } else if f.is_nan() {
        json!({"__float__": "nan"})
    } else if f > 0.0 {
        json!({"__float__": "inf"})
    } else {
        json!({"__float__": "-inf"})
    }
}

/// Describes a tensor without its data.
pub fn describe(t: &Tensor<'_>) -> J {
    let mut m = json!({
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "strides": t.strides,
        "storage_offset": t.offset,
        "nbytes": t.nbytes(),
        "contiguous": t.is_contiguous(),
        "requires_grad": t.requires_grad,
        "storage": t.storage.key,
        "device": t.storage.location,
    });
    if t.parameter {
        m["parameter"] = json!(true);
    }
    if t.numpy {
        m["numpy"] = json!(true);
    }
    if t.conj {
        m["conj"] = json!(true);
    }
    if t.neg {
        m["neg"] = json!(true);
    }
    if t.storage.big_endian {
        m["big_endian_storage"] = json!(true);
    }
    match t.dtype.safetensors() {
        Some(s) => m["safetensors_dtype"] = json!(s),
        None => m["safetensors_dtype"] = J::Null,
    }
    m
}

/// Renders `v` (found at dotted `path`) as JSON.
pub fn to_json(v: &Value<'_>, path: &str, style: &TensorStyle<'_>) -> J {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match v {
        Value::None => J::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::BigInt(s) => json!({"__int__": s}),
        Value::Float(f) => float(*f),
        Value::Complex(r, i) => json!({"__complex__": [float(*r), float(*i)]}),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({"__bytes__": b64(b)}),
        Value::ByteArray(b) => json!({"__bytearray__": b64(b)}),
        Value::List(x) | Value::Tuple(x) | Value::Set(x) | Value::FrozenSet(x) => J::Array(
            x.iter()
                .enumerate()
                .map(|(i, c)| to_json(c, &child(&i.to_string()), style))
                .collect(),
        ),
        Value::Dict(d) => {
            let mut m = Map::new();
            let mut collided = false;
            for (k, x) in &d.items {
                let kt = key_text(k);
                if m.contains_key(&kt) {
                    collided = true;
                    break;
                }
                m.insert(kt.clone(), to_json(x, &child(&kt), style));
            }
            if collided {
                let items = d
                    .items
                    .iter()
                    .map(|(k, x)| {
                        let kt = key_text(k);
                        J::Array(vec![to_json(k, "", style), to_json(x, &child(&kt), style)])
                    })
                    .collect();
                json!({"__items__": J::Array(items)})
            } else {
                J::Object(m)
            }
        }
        Value::Tensor(t) => match style {
            TensorStyle::Name => json!({"__tensor__": path}),
            TensorStyle::Describe => json!({"__tensor__": describe(t)}),
            TensorStyle::Custom(f) => f(path, t),
        },
        Value::DType(d) => json!(format!("torch.{d}")),
        Value::Device(d) => json!(d),
        Value::Global(g) => json!(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Dict;

    #[test]
    fn encodings() {
        let v = Value::Dict(Dict {
            class: None,
            items: vec![
                (Value::Str("a".into()), Value::Float(f64::NAN)),
                (Value::Int(1), Value::Bytes(vec![0, 1])),
                (
                    Value::Str("t".into()),
                    Value::Tuple(vec![Value::BigInt("123456789012345678901234".into())]),
                ),
            ],
        });
        let j = to_json(&v, "", &TensorStyle::Name);
        assert_eq!(
            j,
            json!({"a": {"__float__": "nan"}, "1": {"__bytes__": "AAE="}, "t": [{"__int__": "123456789012345678901234"}]})
        );
        let c = Value::Dict(Dict {
            class: None,
            items: vec![
                (Value::Int(1), Value::None),
                (Value::Str("1".into()), Value::None),
            ],
        });
        assert_eq!(
            to_json(&c, "", &TensorStyle::Name),
            json!({"__items__": [[1, null], ["1", null]]})
        );
    }
}
