//! Random-access byte sources. The core never opens paths: front ends hand it a [`ReadAt`].

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A random-access source of bytes: a file, an mmap, a slice of a bigger source, or memory.
///
/// Implementations must be cheap to call with small reads; callers read only what they need
/// (central directories, pickle entries), never whole tensors.
pub trait ReadAt: Send + Sync {
    /// Total length of the source in bytes.
    fn len(&self) -> u64;
    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`. Reading past the end is an error (`UnexpectedEof`).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Borrow `[offset, offset + len)` without copying, when the source is in memory or
    /// mapped. `None` means "not available": use [`read_exact_at`](Self::read_exact_at).
    fn slice_at(&self, _offset: u64, _len: u64) -> Option<&[u8]> {
        None
    }
}

/// `[offset, offset + len)` of `src`, borrowed when possible, else read — after checking the
/// range against the source and against `max` (no allocation for an impossible length).
pub fn bytes_at(
    src: &dyn ReadAt,
    offset: u64,
    len: u64,
    max: u64,
) -> std::io::Result<Cow<'_, [u8]>> {
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes exceed the limit of {max}"),
        ));
    }
    if let Some(s) = src.slice_at(offset, len) {
        return Ok(Cow::Borrowed(s));
    }
    read_vec(src, offset, len).map(Cow::Owned)
}

fn slice_of(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

/// Reads `[offset, offset + len)` into a new vector, after checking the range lies inside the
/// source (no allocation for an impossible length).
pub fn read_vec(src: &dyn ReadAt, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let end = offset.checked_add(len).ok_or_else(eof)?;
    if end > src.len() {
        return Err(eof());
    }
    let n = usize::try_from(len).map_err(|_| eof())?;
    let mut v = vec![0u8; n];
    src.read_exact_at(offset, &mut v)?;
    Ok(v)
}

pub(crate) fn eof() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "read past the end of the source",
    )
}

fn slice_read(data: &[u8], offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let start = usize::try_from(offset).map_err(|_| eof())?;
    let end = start.checked_add(buf.len()).ok_or_else(eof)?;
    let src = data.get(start..end).ok_or_else(eof)?;
    buf.copy_from_slice(src);
    Ok(())
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        slice_read(self, offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        slice_of(self, offset, len)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        slice_read(self, offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        slice_of(self, offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (**self).slice_at(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (**self).slice_at(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (**self).slice_at(offset, len)
    }
}

/// A window `[start, start + len)` of another source (a DCP item, a zip entry stored raw).
pub struct SubRange<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> SubRange<R> {
    /// A window of `inner`; `None` if the window does not lie inside it.
    pub fn new(inner: R, start: u64, len: u64) -> Option<Self> {
        let end = start.checked_add(len)?;
        (end <= inner.len()).then_some(Self { inner, start, len })
    }
}

impl<R: ReadAt> ReadAt for SubRange<R> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        self.inner.read_exact_at(self.start + offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        self.inner.slice_at(self.start + offset, len)
    }
}

/// Counts the bytes read through it, for `--stats` ("bytes read per file").
pub struct Counting<R> {
    inner: R,
    read: AtomicU64,
}

impl<R: ReadAt> Counting<R> {
    /// Wraps `inner`, starting the count at zero.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            read: AtomicU64::new(0),
        }
    }
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl<R: ReadAt> ReadAt for Counting<R> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let s = self.inner.slice_at(offset, len)?;
        self.read.fetch_add(len, Ordering::Relaxed);
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_bounds_checked() {
        let v = vec![1u8, 2, 3, 4];
        let mut b = [0u8; 2];
        v.read_exact_at(2, &mut b).unwrap();
        assert_eq!(b, [3, 4]);
        assert!(v.read_exact_at(3, &mut b).is_err());
        assert!(v.read_exact_at(u64::MAX, &mut b).is_err());
        assert!(read_vec(&v, 1, u64::MAX).is_err());
    }

    #[test]
    fn subrange_and_counting() {
        let v = (0u8..100).collect::<Vec<_>>();
        assert!(SubRange::new(&v, 90, 11).is_none());
        let s = SubRange::new(&v, 10, 5).unwrap();
        let c = Counting::new(&s);
        let mut b = [0u8; 5];
        c.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [10, 11, 12, 13, 14]);
        assert!(c.read_exact_at(1, &mut b).is_err());
        assert_eq!(c.bytes_read(), 10);
    }
}
