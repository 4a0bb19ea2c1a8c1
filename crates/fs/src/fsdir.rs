//! A directory on disk seen through the core's [`Dir`] trait, counting bytes read per file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ckptguard_formats::dir::Dir;
use ckptguard_formats::ReadAt;

use crate::mmap::Mapped;

/// A directory tree of regular files.
pub struct FsDir {
    root: PathBuf,
    files: Vec<String>,
    /// Unreadable entries met while listing: (relative path, reason).
    pub errors: Vec<(String, String)>,
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl FsDir {
    /// Lists `root` recursively (sorted; symlinked directories are not followed, so no loops).
    pub fn open(root: &Path) -> FsDir {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        list(root, "", &mut files, &mut errors, 0);
        files.sort();
        FsDir {
            root: root.to_path_buf(),
            files,
            errors,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes read so far from `rel`.
    pub fn bytes_read(&self, rel: &str) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(rel).map(|n| n.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// Size of `rel` on disk.
    pub fn size(&self, rel: &str) -> u64 {
        std::fs::metadata(self.root.join(rel))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

fn list(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<String>,
    errors: &mut Vec<(String, String)>,
    depth: usize,
) {
    if depth > 64 {
        errors.push((
            prefix.to_string(),
            "directory nesting deeper than 64".into(),
        ));
        return;
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push((prefix.to_string(), format!("cannot list directory: {e}")));
            return;
        }
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            list(&e.path(), &rel, files, errors, depth + 1);
        } else if ft.is_file() || (ft.is_symlink() && e.path().is_file()) {
            files.push(rel);
        } else if ft.is_symlink() {
            errors.push((
                rel,
                "symlink to a directory or nowhere, not followed inside a checkpoint".into(),
            ));
        }
    }
}

struct Counted {
    m: Mapped,
    n: Arc<AtomicU64>,
}

impl ReadAt for Counted {
    fn len(&self) -> u64 {
        self.m.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.n.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.m.read_exact_at(offset, buf)
    }
    fn slice_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let s = self.m.slice_at(offset, len)?;
        self.n.fetch_add(len, Ordering::Relaxed);
        Some(s)
    }
}

impl Dir for FsDir {
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }
    fn open(&self, rel: &str) -> std::io::Result<Box<dyn ReadAt + '_>> {
        if !self.files.iter().any(|f| f == rel) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{rel}: not a file of this directory"),
            ));
        }
        let m = Mapped::open(&self.root.join(rel))?;
        let n = {
            let mut c = self
                .counters
                .lock()
                .map_err(|_| std::io::Error::other("counter lock poisoned"))?;
            c.entry(rel.to_string()).or_default().clone()
        };
        Ok(Box::new(Counted { m, n }))
    }
}
