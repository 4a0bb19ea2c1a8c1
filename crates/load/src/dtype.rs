//! Element types: every dtype torch writes, how to name it, how wide it is, and what safetensors
//! calls it.

use std::fmt;

/// A tensor element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// `torch.bool`.
    Bool,
    /// `torch.uint8`.
    U8,
    /// `torch.int8`.
    I8,
    /// `torch.int16`.
    I16,
    /// `torch.uint16`.
    U16,
    /// `torch.int32`.
    I32,
    /// `torch.uint32`.
    U32,
    /// `torch.int64`.
    I64,
    /// `torch.uint64`.
    U64,
    /// `torch.float16`.
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.float32`.
    F32,
    /// `torch.float64`.
    F64,
    /// `torch.complex32` (two float16).
    C32,
    /// `torch.complex64` (two float32).
    C64,
    /// `torch.complex128` (two float64).
    C128,
    /// `torch.float8_e4m3fn`.
    F8E4M3FN,
    /// `torch.float8_e5m2`.
    F8E5M2,
    /// `torch.float8_e4m3fnuz`.
    F8E4M3FNUZ,
    /// `torch.float8_e5m2fnuz`.
    F8E5M2FNUZ,
    /// `torch.float8_e8m0fnu`.
    F8E8M0FNU,
    /// `torch.float4_e2m1fn_x2` (two 4-bit floats per byte).
    F4E2M1FNx2,
    /// `torch.qint8` (storage of quantized tensors).
    QInt8,
    /// `torch.quint8`.
    QUInt8,
    /// `torch.qint32`.
    QInt32,
    /// `torch.quint4x2`.
    QUInt4x2,
    /// `torch.quint2x4`.
    QUInt2x4,
    /// `torch.bits8`.
    Bits8,
    /// `torch.bits16`.
    Bits16,
    /// `torch.bits1x8`.
    Bits1x8,
    /// `torch.bits2x4`.
    Bits2x4,
    /// `torch.bits4x2`.
    Bits4x2,
}

use DType::*;

/// Every dtype, for tests and listings.
pub const ALL: &[DType] = &[
    Bool, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C32, C64, C128, F8E4M3FN,
    F8E5M2, F8E4M3FNUZ, F8E5M2FNUZ, F8E8M0FNU, F4E2M1FNx2, QInt8, QUInt8, QInt32, QUInt4x2,
    QUInt2x4, Bits8, Bits16, Bits1x8, Bits2x4, Bits4x2,
];

impl DType {
    /// Bytes per element.
    pub fn itemsize(self) -> u64 {
        match self {
            Bool | U8 | I8 | F8E4M3FN | F8E5M2 | F8E4M3FNUZ | F8E5M2FNUZ | F8E8M0FNU
            | F4E2M1FNx2 | QInt8 | QUInt8 | QUInt4x2 | QUInt2x4 | Bits8 | Bits1x8 | Bits2x4
            | Bits4x2 => 1,
            I16 | U16 | F16 | BF16 | Bits16 => 2,
            I32 | U32 | F32 | C32 | QInt32 => 4,
            I64 | U64 | F64 | C64 => 8,
            C128 => 16,
        }
    }

    /// Width of the scalars a byte swap reverses: the item size, or half of it for complex
    /// numbers (each part is swapped on its own); 1 for byte-wide and bit-packed types.
    pub fn swap_unit(self) -> usize {
        match self {
            C32 | C64 | C128 => (self.itemsize() / 2) as usize,
            Bits1x8 | Bits2x4 | Bits4x2 => 1,
            _ => self.itemsize() as usize,
        }
    }

    /// torch's name, without the `torch.` prefix (`float32`).
    pub fn name(self) -> &'static str {
        match self {
            Bool => "bool",
            U8 => "uint8",
            I8 => "int8",
            I16 => "int16",
            U16 => "uint16",
            I32 => "int32",
            U32 => "uint32",
            I64 => "int64",
            U64 => "uint64",
            F16 => "float16",
            BF16 => "bfloat16",
            F32 => "float32",
            F64 => "float64",
            C32 => "complex32",
            C64 => "complex64",
            C128 => "complex128",
            F8E4M3FN => "float8_e4m3fn",
            F8E5M2 => "float8_e5m2",
            F8E4M3FNUZ => "float8_e4m3fnuz",
            F8E5M2FNUZ => "float8_e5m2fnuz",
            F8E8M0FNU => "float8_e8m0fnu",
            F4E2M1FNx2 => "float4_e2m1fn_x2",
            QInt8 => "qint8",
            QUInt8 => "quint8",
            QInt32 => "qint32",
            QUInt4x2 => "quint4x2",
            QUInt2x4 => "quint2x4",
            Bits8 => "bits8",
            Bits16 => "bits16",
            Bits1x8 => "bits1x8",
            Bits2x4 => "bits2x4",
            Bits4x2 => "bits4x2",
        }
    }

    /// The dtype torch exports as `torch.<name>` (aliases included: `float`, `half`, `long`...).
    pub fn from_torch_name(name: &str) -> Option<DType> {
        Some(match name {
            "float" => F32,
            "double" => F64,
            "half" => F16,
            "long" => I64,
            "int" => I32,
            "short" => I16,
            "cfloat" => C64,
            "cdouble" => C128,
            "chalf" => C32,
            _ => return ALL.iter().copied().find(|d| d.name() == name),
        })
    }

    /// The dtype of a legacy typed storage class (`FloatStorage`), or `U8` for
    /// `UntypedStorage` (whose real dtype comes from `_rebuild_tensor_v3`).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "DoubleStorage" => F64,
            "FloatStorage" => F32,
            "HalfStorage" => F16,
            "BFloat16Storage" => BF16,
            "LongStorage" => I64,
            "IntStorage" => I32,
            "ShortStorage" => I16,
            "CharStorage" => I8,
            "ByteStorage" => U8,
            "BoolStorage" => Bool,
            "ComplexFloatStorage" => C64,
            "ComplexDoubleStorage" => C128,
            "QInt8Storage" => QInt8,
            "QUInt8Storage" => QUInt8,
            "QInt32Storage" => QInt32,
            "QUInt4x2Storage" => QUInt4x2,
            "QUInt2x4Storage" => QUInt2x4,
            "UntypedStorage" => U8,
            _ => return None,
        })
    }

    /// The safetensors dtype string, if safetensors can store this dtype.
    pub fn safetensors(self) -> Option<&'static str> {
        Some(match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            I16 => "I16",
            U16 => "U16",
            I32 => "I32",
            U32 => "U32",
            I64 => "I64",
            U64 => "U64",
            F16 => "F16",
            BF16 => "BF16",
            F32 => "F32",
            F64 => "F64",
            C64 => "C64",
            F8E4M3FN => "F8_E4M3",
            F8E5M2 => "F8_E5M2",
            F8E4M3FNUZ => "F8_E4M3FNUZ",
            F8E5M2FNUZ => "F8_E5M2FNUZ",
            F8E8M0FNU => "F8_E8M0",
            F4E2M1FNx2 => "F4",
            _ => return None,
        })
    }

    /// Whether the dtype is a complex type.
    pub fn is_complex(self) -> bool {
        matches!(self, C32 | C64 | C128)
    }

    /// Whether the dtype is a quantized storage type.
    pub fn is_quantized(self) -> bool {
        matches!(self, QInt8 | QUInt8 | QInt32 | QUInt4x2 | QUInt2x4)
    }

    /// The dtype of a numpy type string without byte order (`f4`, `i8`, `b1`, `c16`).
    pub fn from_numpy(code: &str) -> Option<DType> {
        Some(match code {
            "b1" | "?" => Bool,
            "u1" | "B" => U8,
            "i1" | "b" => I8,
            "i2" | "h" => I16,
            "u2" | "H" => U16,
            "i4" | "i" => I32,
            "u4" | "I" => U32,
            "i8" | "l" | "q" => I64,
            "u8" | "L" | "Q" => U64,
            "f2" | "e" => F16,
            "f4" | "f" => F32,
            "f8" | "d" => F64,
            "c8" | "F" => C64,
            "c16" | "D" => C128,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reverses the bytes of every `unit`-wide scalar in `buf` (a no-op for `unit` ≤ 1).
pub fn byteswap(buf: &mut [u8], unit: usize) {
    if unit > 1 {
        for c in buf.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

/// Decodes an IEEE half-precision value.
pub fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL {
            assert_eq!(DType::from_torch_name(d.name()), Some(*d));
            assert!(d.itemsize() >= 1);
            assert_eq!(d.itemsize() as usize % d.swap_unit(), 0);
        }
        assert_eq!(DType::from_torch_name("float"), Some(F32));
        assert_eq!(DType::from_torch_name("nope"), None);
        assert_eq!(DType::from_storage_class("BFloat16Storage"), Some(BF16));
        assert_eq!(C128.safetensors(), None);
        assert_eq!(F4E2M1FNx2.safetensors(), Some("F4"));
    }

    #[test]
    fn half_decoding() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
    }

    #[test]
    fn swaps() {
        let mut b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        byteswap(&mut b, 4);
        assert_eq!(b, [4, 3, 2, 1, 8, 7, 6, 5]);
        byteswap(&mut b, 1);
        assert_eq!(b, [4, 3, 2, 1, 8, 7, 6, 5]);
    }
}
