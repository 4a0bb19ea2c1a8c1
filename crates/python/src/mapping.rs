//! `Mapping`: the bytes a checkpoint is loaded from, shared with Python through the buffer
//! protocol so that tensors are views of them (zero-copy).
//!
//! A file is mapped copy-on-write (`MAP_PRIVATE`, read + write): tensors built over it are
//! ordinary writable tensors, pages are read from the page cache only when touched, and writes
//! (an optimizer step on a loaded parameter) go to private copies — the file never changes.
//! This is how `torch.load(mmap=True)` maps files too. Bytes handed over from Python are copied
//! once into an anonymous mapping (page-aligned, writable).
//!
//! The mapping lives as long as the Python `Mapping` object, and every buffer exported from it
//! (a tensor's storage from `torch.frombuffer`, a numpy array from `numpy.frombuffer`) holds a
//! reference to that object, so a tensor can never outlive its bytes.
//!
//! Caveat shared by every mmap-based reader (torch's included): if another process truncates the
//! file while it is mapped, touching the lost pages raises SIGBUS.

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::path::Path;

use ckptguard_formats::ReadAt;
use memmap2::{MmapMut, MmapOptions};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Bytes a checkpoint is read from, exported to Python as a writable buffer.
#[pyclass(frozen, module = "ckptguard._native")]
pub struct Mapping {
    /// Start of the bytes (dangling when `len == 0`). Obtained once from the owned mapping,
    /// whose memory never moves.
    ptr: *mut u8,
    len: usize,
    /// Owns the memory behind `ptr` (`None` for an empty source, which cannot be mapped).
    _map: Option<MmapMut>,
}

// SAFETY: `ptr` points into `_map`, which `Mapping` owns and never resizes or unmaps before it
// is dropped; the memory is process-wide, so the handle may move between threads. Rust only
// ever reads through it (scanning and loading happen before any buffer is exported); Python
// writes through exported buffers are to private copy-on-write pages.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`: shared access is read-only on the Rust side.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn from_map(mut map: MmapMut) -> Self {
        let ptr = map.as_mut_ptr();
        let len = map.len();
        Mapping {
            ptr,
            len,
            _map: Some(map),
        }
    }

    fn empty() -> Self {
        Mapping {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
            _map: None,
        }
    }

    /// Maps `path` copy-on-write. Falls back to reading it into memory when the file system
    /// cannot map it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let f = File::open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        if meta.len() == 0 {
            return Ok(Self::empty());
        }
        // SAFETY: a private (copy-on-write) mapping of a regular file opened read-only; see
        // the module docs on truncation by other processes.
        match unsafe { MmapOptions::new().map_copy(&f) } {
            Ok(map) => Ok(Self::from_map(map)),
            Err(_) => Self::from_bytes(&std::fs::read(path)?),
        }
    }

    /// A page-aligned, writable copy of `data`.
    pub fn from_bytes(data: &[u8]) -> std::io::Result<Self> {
        if data.is_empty() {
            return Ok(Self::empty());
        }
        let mut map = MmapMut::map_anon(data.len())?;
        map.copy_from_slice(data);
        Ok(Self::from_map(map))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is the live mapping owned by `self` (or a dangling pointer
        // with length 0).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The offset of `sub` in these bytes, if it lies inside them.
    pub fn offset_of(&self, sub: &[u8]) -> Option<usize> {
        let base = self.ptr as usize;
        let start = sub.as_ptr() as usize;
        let end = start.checked_add(sub.len())?;
        (start >= base && end <= base + self.len).then(|| start - base)
    }
}

impl ReadAt for Mapping {
    fn len(&self) -> u64 {
        self.len as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.bytes().read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.bytes().slice_at(offset, len)
    }
}

#[pymethods]
impl Mapping {
    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        format!("<ckptguard Mapping of {} bytes>", self.len)
    }

    /// Exports the bytes as a writable, C-contiguous buffer of unsigned bytes. The exported
    /// view holds a reference to this object (`view.obj`), keeping the memory alive.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view"));
        }
        let this = slf.get();
        let len = isize::try_from(this.len).map_err(|_| PyBufferError::new_err("too large"))?;
        // SAFETY: `view` is the non-null Py_buffer the interpreter asks us to fill; the memory
        // stays valid while `view.obj` (set to `slf`, with a new reference) is alive.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), this.ptr as *mut c_void, len, 0, flags)
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
