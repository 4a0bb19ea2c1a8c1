//! The mmap shim: the only `unsafe` in ckptguard.
//!
//! A read-only private mapping of a file, exposed through [`ReadAt`] so the scanner borrows
//! pickle bytes without copying. Safety: the mapping is valid for the life of `Mapped`; if
//! another process truncates the file while it is mapped, reads may fault (SIGBUS) — the same
//! caveat as every mmap-based reader; ckptguard only reads checkpoints it was asked to scan.

use std::fs::File;
use std::path::Path;

use ckptguard_formats::ReadAt;

/// A file mapped read-only (or an empty file, which cannot be mapped).
pub struct Mapped {
    map: Option<memmap2::Mmap>,
}

impl Mapped {
    /// Opens and maps `path`.
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
            return Ok(Mapped { map: None });
        }
        #[allow(unsafe_code)]
        // SAFETY: read-only mapping of a regular file we opened; see the module docs on truncation.
        let map = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Mapped { map: Some(map) })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len_u64(&self) -> u64 {
        self.bytes().len() as u64
    }
}

impl ReadAt for Mapped {
    fn len(&self) -> u64 {
        self.len_u64()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.bytes().read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.bytes().slice_at(offset, len)
    }
}
