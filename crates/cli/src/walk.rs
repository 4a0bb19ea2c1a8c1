//! Directory walking: recursive, deterministic (sorted), symlink loops and unreadable entries
//! reported as items, never fatal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Something to report on.
#[derive(Debug)]
pub enum Item {
    /// A regular file to scan.
    File(PathBuf),
    /// A path that could not be walked or read, with the reason.
    Error(PathBuf, String),
}

impl Item {
    /// The path as text.
    pub fn display(&self) -> String {
        match self {
            Item::File(p) | Item::Error(p, _) => p.display().to_string(),
        }
    }
}

/// Every file under `root` (or `root` itself), in sorted order.
pub fn collect(root: &Path) -> Vec<Item> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    visit(root, &mut seen, &mut out, 0);
    out
}

const MAX_DEPTH: usize = 256;

fn visit(path: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<Item>, depth: usize) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let why = if std::fs::symlink_metadata(path).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
                format!("broken or looping symlink: {e}")
            } else {
                format!("cannot read: {e}")
            };
            out.push(Item::Error(path.to_path_buf(), why));
            return;
        }
    };
    if meta.is_file() {
        out.push(Item::File(path.to_path_buf()));
        return;
    }
    if !meta.is_dir() {
        out.push(Item::Error(path.to_path_buf(), "not a regular file or directory".into()));
        return;
    }
    if depth > MAX_DEPTH {
        out.push(Item::Error(path.to_path_buf(), format!("directory nesting deeper than {MAX_DEPTH}")));
        return;
    }
    let canon = match std::fs::canonicalize(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Item::Error(path.to_path_buf(), format!("cannot resolve: {e}")));
            return;
        }
    };
    if !seen.insert(canon.clone()) {
        out.push(Item::Error(path.to_path_buf(), format!("symlink loop: {} was already visited", canon.display())));
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            out.push(Item::Error(path.to_path_buf(), format!("cannot list directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = Vec::new();
    for e in entries {
        match e {
            Ok(e) => children.push(e.path()),
            Err(e) => out.push(Item::Error(path.to_path_buf(), format!("cannot list directory: {e}"))),
        }
    }
    children.sort();
    for c in children {
        visit(&c, seen, out, depth + 1);
    }
    seen.remove(&canon);
}
