//! Storages (bytes that stay in the source) and tensors (typed, strided views of them), with
//! bounds checked once at construction and a streaming writer of C-contiguous little-endian
//! bytes.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

use ckptguard_formats::ReadAt;

use crate::dtype::{byteswap, DType};

/// Where a storage's bytes are.
pub(crate) enum Data<'a> {
    /// Borrowed from a memory-mapped or in-memory source: zero-copy.
    Borrowed(&'a [u8]),
    /// Read or decoded into memory (deflated records, numpy arrays pickled inline).
    Owned(Vec<u8>),
    /// In a source that cannot lend slices: read on demand.
    Source(&'a dyn ReadAt),
}

/// A storage: one `data/<key>` record (or legacy raw storage, or numpy buffer).
pub struct Storage<'a> {
    /// Record key (`0`, `1`, ... in torch zips; the storage key in legacy files).
    pub key: String,
    /// Declared storage type (`U8` for untyped storages).
    pub dtype: DType,
    /// Location tag from the checkpoint (`cpu`, `cuda:0`).
    pub location: String,
    /// Size in bytes (`numel × itemsize` as declared; the record may be longer).
    pub nbytes: u64,
    /// Bytes are big-endian (a torch zip with a `byteorder` record saying `big`, or a
    /// big-endian numpy array).
    pub big_endian: bool,
    /// Offset of byte 0 in the source, when the bytes lie there verbatim.
    pub source_offset: Option<u64>,
    pub(crate) data: Data<'a>,
}

impl std::fmt::Debug for Storage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("key", &self.key)
            .field("dtype", &self.dtype)
            .field("location", &self.location)
            .field("nbytes", &self.nbytes)
            .field("big_endian", &self.big_endian)
            .field("source_offset", &self.source_offset)
            .finish()
    }
}

impl<'a> Storage<'a> {
    /// A storage over `nbytes` bytes of `src` at `offset`, borrowed when the source lends
    /// slices. The caller has checked that the range lies inside the source.
    pub(crate) fn from_source(src: &'a dyn ReadAt, offset: u64, nbytes: u64) -> Data<'a> {
        match src.slice_at(offset, nbytes) {
            Some(s) => Data::Borrowed(s),
            None => Data::Source(src),
        }
    }

    /// The bytes, when they are in memory (always, for mmapped and in-memory sources).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.data {
            Data::Borrowed(b) => Some(b),
            Data::Owned(v) => Some(v),
            Data::Source(_) => None,
        }
    }

    /// Whether the bytes are borrowed from the source without a copy.
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.data, Data::Borrowed(_))
    }

    /// `[offset, offset + len)` of the storage, borrowed when in memory.
    pub fn range(&self, offset: u64, len: u64) -> io::Result<Cow<'_, [u8]>> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.nbytes)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "read past the end of a storage")
            })?;
        let short = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "storage bytes shorter than declared",
            )
        };
        match &self.data {
            Data::Borrowed(b) => b
                .get(offset as usize..end as usize)
                .map(Cow::Borrowed)
                .ok_or_else(short),
            Data::Owned(v) => v
                .get(offset as usize..end as usize)
                .map(Cow::Borrowed)
                .ok_or_else(short),
            Data::Source(src) => {
                let base = self.source_offset.unwrap_or(0);
                let n = usize::try_from(len)
                    .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "range too large"))?;
                let mut v = vec![0u8; n];
                src.read_exact_at(base + offset, &mut v)?;
                Ok(Cow::Owned(v))
            }
        }
    }
}

impl Storage<'_> {
    /// A copy of the storage whose bytes are held in memory (`nbytes` of them), so it no longer
    /// borrows the source. `source_offset` is dropped: the bytes are not in a file any more.
    pub fn to_owned_storage(&self) -> io::Result<Storage<'static>> {
        let bytes = self.range(0, self.nbytes)?.into_owned();
        Ok(Storage {
            key: self.key.clone(),
            dtype: self.dtype,
            location: self.location.clone(),
            nbytes: self.nbytes,
            big_endian: self.big_endian,
            source_offset: None,
            data: Data::Owned(bytes),
        })
    }

    /// A storage holding `bytes` (little-endian), on the CPU.
    pub fn owned(key: String, dtype: DType, bytes: Vec<u8>) -> Storage<'static> {
        Storage {
            key,
            dtype,
            location: "cpu".into(),
            nbytes: bytes.len() as u64,
            big_endian: false,
            source_offset: None,
            data: Data::Owned(bytes),
        }
    }
}

/// A tensor: a typed, strided view of a storage. Shapes, strides and the offset were checked
/// against the storage when the tensor was built; every element lies inside it.
#[derive(Clone, Debug)]
pub struct Tensor<'a> {
    /// Element type.
    pub dtype: DType,
    /// Sizes.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub strides: Vec<u64>,
    /// Offset of element 0 in the storage, in elements.
    pub offset: u64,
    /// `requires_grad`.
    pub requires_grad: bool,
    /// Built as a `torch.nn.Parameter`.
    pub parameter: bool,
    /// The conjugate bit: values are the complex conjugates of the stored ones.
    pub conj: bool,
    /// The negative bit: values are the negations of the stored ones.
    pub neg: bool,
    /// A numpy array rather than a torch tensor.
    pub numpy: bool,
    /// The storage (shared by views).
    pub storage: Arc<Storage<'a>>,
}

/// Most dimensions accepted.
pub const MAX_DIMS: usize = 64;

impl<'a> Tensor<'a> {
    /// Builds a tensor after checking that every element lies inside the storage (torch's
    /// `checkInBoundsForStorage`, with checked arithmetic).
    pub fn new(
        storage: Arc<Storage<'a>>,
        dtype: DType,
        shape: Vec<u64>,
        strides: Vec<u64>,
        offset: u64,
    ) -> Result<Self, String> {
        if shape.len() != strides.len() {
            return Err(format!(
                "{} sizes but {} strides",
                shape.len(),
                strides.len()
            ));
        }
        if shape.len() > MAX_DIMS {
            return Err(format!(
                "{} dimensions (at most {MAX_DIMS} accepted)",
                shape.len()
            ));
        }
        let t = Tensor {
            dtype,
            shape,
            strides,
            offset,
            requires_grad: false,
            parameter: false,
            conj: false,
            neg: false,
            numpy: false,
            storage,
        };
        let numel = t
            .numel_checked()
            .ok_or("the number of elements overflows")?;
        if numel > 0 {
            let (lo, hi) = t.span_checked().ok_or("the view's extent overflows")?;
            if hi > t.storage.nbytes {
                return Err(format!(
                    "the view needs bytes {lo}..{hi} of storage {:?}, which holds {} bytes",
                    t.storage.key, t.storage.nbytes
                ));
            }
        }
        if t.nbytes_checked().is_none() {
            return Err("the tensor's byte size overflows".into());
        }
        Ok(t)
    }

    /// The same view (shape, strides, offset and flags) of another storage.
    pub fn with_storage<'b>(&self, storage: Arc<Storage<'b>>) -> Tensor<'b> {
        Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
            requires_grad: self.requires_grad,
            parameter: self.parameter,
            conj: self.conj,
            neg: self.neg,
            numpy: self.numpy,
            storage,
        }
    }

    fn numel_checked(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s))
    }

    fn nbytes_checked(&self) -> Option<u64> {
        self.numel_checked()?.checked_mul(self.dtype.itemsize())
    }

    /// `[lo, hi)`: the storage bytes the view touches (for non-empty tensors).
    fn span_checked(&self) -> Option<(u64, u64)> {
        let mut last = self.offset;
        for (&s, &st) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add(s.checked_sub(1)?.checked_mul(st)?)?;
        }
        let size = self.dtype.itemsize();
        Some((
            self.offset.checked_mul(size)?,
            last.checked_add(1)?.checked_mul(size)?,
        ))
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.numel_checked().unwrap_or(0)
    }

    /// Size in bytes of the tensor's own data (`numel × itemsize`).
    pub fn nbytes(&self) -> u64 {
        self.nbytes_checked().unwrap_or(0)
    }

    /// Whether the elements are laid out C-contiguously in the storage.
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expected = 1u64;
        for (&s, &st) in self.shape.iter().zip(&self.strides).rev() {
            if s != 1 {
                if st != expected {
                    return false;
                }
                expected = expected.saturating_mul(s);
            }
        }
        true
    }

    /// Whether the stored bytes must be changed on the way out (byte order, conj/neg bits).
    pub fn needs_transform(&self) -> bool {
        (self.storage.big_endian && self.dtype.swap_unit() > 1) || self.conj || self.neg
    }

    /// When the tensor's data is one run of untransformed bytes in the source file:
    /// `(absolute offset, length)`. Used for kernel-side copies.
    pub fn raw_source_range(&self) -> Option<(u64, u64)> {
        if !self.is_contiguous() || self.needs_transform() {
            return None;
        }
        let base = self.storage.source_offset?;
        let start = base.checked_add(self.offset.checked_mul(self.dtype.itemsize())?)?;
        Some((start, self.nbytes()))
    }

    /// The C-contiguous little-endian bytes, borrowed when they already lie that way in memory.
    pub fn contiguous_bytes(&self) -> io::Result<Cow<'_, [u8]>> {
        if self.is_contiguous() && !self.needs_transform() {
            let size = self.dtype.itemsize();
            return self.storage.range(self.offset * size, self.nbytes());
        }
        let mut v = Vec::with_capacity(usize::try_from(self.nbytes()).unwrap_or(0));
        self.write_contiguous(&mut v)?;
        Ok(Cow::Owned(v))
    }

    /// Writes the C-contiguous little-endian bytes to `out`, in bounded chunks: memory stays
    /// small whatever the tensor size.
    pub fn write_contiguous(&self, out: &mut dyn Write) -> io::Result<()> {
        const CHUNK: u64 = 8 << 20;
        let numel = self.numel();
        if numel == 0 {
            return Ok(());
        }
        let size = self.dtype.itemsize();
        if self.is_contiguous() {
            let mut done = 0u64;
            let total = self.nbytes();
            let start = self.offset * size;
            let mut buf = Vec::new();
            while done < total {
                let n = (total - done).min(CHUNK);
                let bytes = self.storage.range(start + done, n)?;
                if self.needs_transform() {
                    buf.clear();
                    buf.extend_from_slice(&bytes);
                    self.transform(&mut buf)?;
                    out.write_all(&buf)?;
                } else {
                    out.write_all(&bytes)?;
                }
                done += n;
            }
            return Ok(());
        }
        // Strided: the longest C-contiguous suffix of dimensions is copied as one run.
        let nd = self.shape.len();
        let mut run = 1u64; // elements per run
        let mut inner = nd; // dims [inner, nd) form the run
        while inner > 0 {
            let d = inner - 1;
            if self.shape[d] == 1 || self.strides[d] == run {
                run *= self.shape[d];
                inner = d;
            } else {
                break;
            }
        }
        let (lo, hi) = self
            .span_checked()
            .ok_or_else(|| invalid("extent overflows"))?;
        // The whole span the view touches, borrowed when in memory (read once otherwise).
        let span = self.storage.range(lo, hi - lo)?;
        let base = self.offset * size - lo;
        let run_bytes = (run * size) as usize;
        let mut idx = vec![0u64; inner];
        let mut buf: Vec<u8> = Vec::with_capacity((CHUNK as usize).max(run_bytes));
        loop {
            let el: u64 = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            let at = (base + el * size) as usize;
            buf.extend_from_slice(&span[at..at + run_bytes]);
            if buf.len() as u64 >= CHUNK {
                self.transform(&mut buf)?;
                out.write_all(&buf)?;
                buf.clear();
            }
            // Odometer over the outer dimensions.
            let mut d = inner;
            loop {
                if d == 0 {
                    self.transform(&mut buf)?;
                    out.write_all(&buf)?;
                    return Ok(());
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    /// Applies byte order, conj and neg to whole elements in `buf`.
    fn transform(&self, buf: &mut [u8]) -> io::Result<()> {
        if self.storage.big_endian {
            byteswap(buf, self.dtype.swap_unit());
        }
        if self.conj {
            conj_in_place(self.dtype, buf)?;
        }
        if self.neg {
            neg_in_place(self.dtype, buf)?;
        }
        Ok(())
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Negates the imaginary parts (flips their sign bits) of little-endian complex numbers.
fn conj_in_place(dtype: DType, buf: &mut [u8]) -> io::Result<()> {
    if !dtype.is_complex() {
        // torch ignores the conj bit on real tensors.
        return Ok(());
    }
    let size = dtype.itemsize() as usize;
    for c in buf.chunks_exact_mut(size) {
        c[size - 1] ^= 0x80;
    }
    Ok(())
}

/// Negates little-endian values: sign-bit flips for floats and complex numbers (what IEEE
/// negation does), two's complement for signed integers.
fn neg_in_place(dtype: DType, buf: &mut [u8]) -> io::Result<()> {
    match dtype {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {
            let size = dtype.itemsize() as usize;
            for c in buf.chunks_exact_mut(size) {
                c[size - 1] ^= 0x80;
            }
        }
        DType::C32 | DType::C64 | DType::C128 => {
            let half = dtype.swap_unit();
            for c in buf.chunks_exact_mut(half) {
                c[half - 1] ^= 0x80;
            }
        }
        DType::I8 => buf
            .iter_mut()
            .for_each(|b| *b = (*b as i8).wrapping_neg() as u8),
        DType::I16 => neg_ints::<2>(buf, |b| i16::from_le_bytes(b).wrapping_neg().to_le_bytes()),
        DType::I32 => neg_ints::<4>(buf, |b| i32::from_le_bytes(b).wrapping_neg().to_le_bytes()),
        DType::I64 => neg_ints::<8>(buf, |b| i64::from_le_bytes(b).wrapping_neg().to_le_bytes()),
        _ => {
            return Err(invalid(&format!(
                "the negative bit on a {dtype} tensor is not supported"
            )))
        }
    }
    Ok(())
}

fn neg_ints<const N: usize>(buf: &mut [u8], f: impl Fn([u8; N]) -> [u8; N]) {
    for c in buf.chunks_exact_mut(N) {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        c.copy_from_slice(&f(a));
    }
}

/// A numpy array's bytes as a tensor: C- or Fortran-order strides over one storage.
#[allow(clippy::too_many_arguments)]
pub(crate) fn numpy_tensor<'a>(
    key: &str,
    dtype: DType,
    shape: Vec<u64>,
    fortran: bool,
    nbytes: u64,
    big_endian: bool,
    source_offset: Option<u64>,
    data: Data<'a>,
) -> Result<Tensor<'a>, String> {
    let mut strides = vec![0u64; shape.len()];
    let mut acc = 1u64;
    let order: Vec<usize> = if fortran {
        (0..shape.len()).collect()
    } else {
        (0..shape.len()).rev().collect()
    };
    for d in order {
        strides[d] = acc;
        acc = acc.saturating_mul(shape[d].max(1));
    }
    let storage = Arc::new(Storage {
        key: key.into(),
        dtype,
        location: "cpu".into(),
        nbytes,
        big_endian,
        source_offset,
        data,
    });
    let mut t = Tensor::new(storage, dtype, shape, strides, 0)?;
    t.numpy = true;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(bytes: Vec<u8>, big: bool) -> Arc<Storage<'static>> {
        Arc::new(Storage {
            key: "0".into(),
            dtype: DType::U8,
            location: "cpu".into(),
            nbytes: bytes.len() as u64,
            big_endian: big,
            source_offset: None,
            data: Data::Owned(bytes),
        })
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn bounds_are_checked() {
        let s = storage(f32s(&[0.0; 6]), false);
        assert!(Tensor::new(s.clone(), DType::F32, vec![2, 3], vec![3, 1], 0).is_ok());
        assert!(Tensor::new(s.clone(), DType::F32, vec![2, 3], vec![3, 1], 1).is_err());
        assert!(Tensor::new(s.clone(), DType::F32, vec![7], vec![1], 0).is_err());
        assert!(Tensor::new(s.clone(), DType::F32, vec![2], vec![u64::MAX], 0).is_err());
        assert!(Tensor::new(
            s.clone(),
            DType::F32,
            vec![u64::MAX, u64::MAX],
            vec![0, 0],
            0
        )
        .is_err());
        assert!(Tensor::new(s.clone(), DType::F32, vec![0, 5], vec![100, 100], 1000).is_ok());
        assert!(Tensor::new(s.clone(), DType::F32, vec![2], vec![1, 1], 0).is_err());
        assert!(Tensor::new(s, DType::F64, vec![4], vec![1], 0).is_err());
    }

    #[test]
    fn strided_views_are_gathered() {
        let s = storage(f32s(&[0., 1., 2., 3., 4., 5.]), false);
        let t = Tensor::new(s.clone(), DType::F32, vec![3, 2], vec![1, 3], 0).unwrap();
        assert!(!t.is_contiguous());
        assert_eq!(
            t.contiguous_bytes().unwrap().as_ref(),
            f32s(&[0., 3., 1., 4., 2., 5.])
        );
        let col = Tensor::new(s.clone(), DType::F32, vec![2], vec![3], 1).unwrap();
        assert_eq!(col.contiguous_bytes().unwrap().as_ref(), f32s(&[1., 4.]));
        let exp = Tensor::new(s.clone(), DType::F32, vec![2, 2], vec![0, 1], 4).unwrap();
        assert_eq!(
            exp.contiguous_bytes().unwrap().as_ref(),
            f32s(&[4., 5., 4., 5.])
        );
        let scalar = Tensor::new(s, DType::F32, vec![], vec![], 5).unwrap();
        assert!(scalar.is_contiguous());
        assert_eq!(scalar.contiguous_bytes().unwrap().as_ref(), f32s(&[5.]));
    }

    #[test]
    fn transforms() {
        let s = storage(vec![0x3f, 0x80, 0, 0, 0x40, 0, 0, 0], true);
        let t = Tensor::new(s, DType::F32, vec![2], vec![1], 0).unwrap();
        assert_eq!(t.contiguous_bytes().unwrap().as_ref(), f32s(&[1.0, 2.0]));
        let s = storage(f32s(&[1.0, 2.0, -3.0, 4.0]), false);
        let mut c = Tensor::new(s.clone(), DType::C64, vec![2], vec![1], 0).unwrap();
        c.conj = true;
        assert_eq!(
            c.contiguous_bytes().unwrap().as_ref(),
            f32s(&[1.0, -2.0, -3.0, -4.0])
        );
        let mut n = Tensor::new(s, DType::F32, vec![2], vec![2], 0).unwrap();
        n.neg = true;
        assert_eq!(n.contiguous_bytes().unwrap().as_ref(), f32s(&[-1.0, 3.0]));
        let s = storage(vec![1, 0x80], false);
        let mut i = Tensor::new(s, DType::I8, vec![2], vec![1], 0).unwrap();
        i.neg = true;
        assert_eq!(i.contiguous_bytes().unwrap().as_ref(), [0xff, 0x80]);
    }
}
