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
    /// A directory container (DCP, DeepSpeed, litdata), scanned as a whole.
    Container(PathBuf),
}

impl Item {
    /// The path as text.
    pub fn display(&self) -> String {
        match self {
            Item::File(p) | Item::Error(p, _) | Item::Container(p) => p.display().to_string(),
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
            let why = if std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
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
        out.push(Item::Error(
            path.to_path_buf(),
            "not a regular file or directory".into(),
        ));
        return;
    }
    if depth > MAX_DEPTH {
        out.push(Item::Error(
            path.to_path_buf(),
            format!("directory nesting deeper than {MAX_DEPTH}"),
        ));
        return;
    }
    let canon = match std::fs::canonicalize(path) {
        Ok(c) => c,
        Err(e) => {
            out.push(Item::Error(
                path.to_path_buf(),
                format!("cannot resolve: {e}"),
            ));
            return;
        }
    };
    if !seen.insert(canon.clone()) {
        out.push(Item::Error(
            path.to_path_buf(),
            format!("symlink loop: {} was already visited", canon.display()),
        ));
        return;
    }
    if looks_like_container(path) {
        out.push(Item::Container(path.to_path_buf()));
        seen.remove(&canon);
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            out.push(Item::Error(
                path.to_path_buf(),
                format!("cannot list directory: {e}"),
            ));
            return;
        }
    };
    let mut children: Vec<PathBuf> = Vec::new();
    for e in entries {
        match e {
            Ok(e) => children.push(e.path()),
            Err(e) => out.push(Item::Error(
                path.to_path_buf(),
                format!("cannot list directory: {e}"),
            )),
        }
    }
    children.sort();
    for c in children {
        visit(&c, seen, out, depth + 1);
    }
    seen.remove(&canon);
}

/// A cheap look at a directory's own entries: does it hold the marker file of a DCP checkpoint,
/// a DeepSpeed checkpoint or a litdata dataset? The core decides for certain.
fn looks_like_container(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n == ".metadata"
            || n == "latest"
            || n == "index.json"
            || n.ends_with(".index.json")
            || n == "zero_to_fp32.py"
    })
}

/// The items under a directory that turned out not to be a container: walked normally.
pub fn collect_children(root: &Path) -> Vec<Item> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    if let Ok(c) = std::fs::canonicalize(root) {
        seen.insert(c);
    }
    let mut children: Vec<PathBuf> = match std::fs::read_dir(root) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            return vec![Item::Error(
                root.to_path_buf(),
                format!("cannot list directory: {e}"),
            )]
        }
    };
    children.sort();
    for c in children {
        visit(&c, &mut seen, &mut out, 1);
    }
    out
}
