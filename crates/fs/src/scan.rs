//! Scanning paths: files (memory-mapped) and directories (walked recursively; DCP, DeepSpeed and
//! litdata containers scanned as a whole) — one implementation for the CLI and the bindings.

use std::path::Path;

use ckptguard_formats::io::Counting;
use ckptguard_scan::container::container_reports;
use ckptguard_scan::{FileReport, ScanOptions, Severity};
use rayon::prelude::*;

use crate::{fsdir, mmap, walk};

/// Scans every path (recursively), in parallel; one report row per file, plus one per
/// directory container.
pub fn scan_paths(paths: &[&Path], opts: &ScanOptions, fail_on: Severity) -> Vec<FileReport> {
    let items: Vec<walk::Item> = paths.iter().flat_map(|p| walk::collect(p)).collect();
    if items.len() == 1 {
        return scan_item(&items[0], opts, fail_on);
    }
    items
        .par_iter()
        .flat_map_iter(|item| scan_item(item, opts, fail_on))
        .collect()
}

pub fn scan_item(item: &walk::Item, opts: &ScanOptions, fail_on: Severity) -> Vec<FileReport> {
    let path = item.display();
    match item {
        walk::Item::File(p) => vec![match mmap::Mapped::open(p) {
            Ok(m) => {
                let counted = Counting::new(&m);
                let scan = ckptguard_scan::scan_source(&counted, &path, opts);
                FileReport::new(path, scan, m.len_u64(), counted.bytes_read(), fail_on)
            }
            Err(e) => FileReport::error(path, format!("cannot read: {e}")),
        }],
        walk::Item::Error(_, msg) => vec![FileReport::error(path, msg.clone())],
        walk::Item::Container(root) => scan_container(root, opts, fail_on),
    }
}

/// A directory that may be a DCP/DeepSpeed/litdata container: scanned as a whole when the core
/// recognises it, else walked file by file.
pub fn scan_container(root: &Path, opts: &ScanOptions, fail_on: Severity) -> Vec<FileReport> {
    let dir = fsdir::FsDir::open(root);
    let join = |rel: &str| root.join(rel).display().to_string();
    let mut out: Vec<FileReport> = dir
        .errors
        .iter()
        .map(|(rel, e)| FileReport::error(join(rel), e.clone()))
        .collect();
    match ckptguard_scan::dirs::detect(&dir) {
        Some(kind) => out.extend(container_reports(
            &dir,
            kind,
            &root.display().to_string(),
            opts,
            fail_on,
            &join,
            &|rel| (dir.size(rel), dir.bytes_read(rel)),
        )),
        None => {
            for item in walk::collect_children(root) {
                out.extend(scan_item(&item, opts, fail_on));
            }
        }
    }
    out
}
