//! How a directory container is reported by the front ends (the CLI's `scan`, the Python
//! bindings' `ckptguard.scan`): one row for the container, then one per file.

use ckptguard_formats::dir::Dir;

use crate::dirs::{scan_dir, DirKind};
use crate::{FileReport, ScanOptions, Severity, Verdict};

/// Scans the directory container `dir` (of `kind`, see [`crate::dirs::detect`]) and reports it
/// the way `ckptguard scan` prints it: first a row named `name` for the container itself — its
/// own findings (`latest`, `relative_path`, metadata), as unsafe as its worst file, size and
/// bytes read summed over its files — then one row per file, named `join(rel)`. `stats(rel)`
/// gives a file's size and the bytes the scan read of it (asked after scanning).
pub fn container_reports(
    dir: &dyn Dir,
    kind: DirKind,
    name: &str,
    opts: &ScanOptions,
    fail_on: Severity,
    join: &dyn Fn(&str) -> String,
    stats: &dyn Fn(&str) -> (u64, u64),
) -> Vec<FileReport> {
    let scan = scan_dir(dir, kind, opts);
    let mut container = FileReport::new(name.to_string(), scan.container, 0, 0, fail_on);
    let files: Vec<FileReport> = scan
        .files
        .into_iter()
        .map(|(rel, s)| {
            let (size, read) = stats(&rel);
            FileReport::new(join(&rel), s, size, read, fail_on)
        })
        .collect();
    if files.iter().any(|f| f.verdict == Verdict::Unsafe) {
        container.verdict = Verdict::Unsafe;
        container.error = Some("a file of this checkpoint is unsafe (see below)".into());
    }
    container.size = files.iter().map(|f| f.size).sum();
    container.bytes_read = files.iter().map(|f| f.bytes_read).sum();
    let mut out = Vec::with_capacity(files.len() + 1);
    out.push(container);
    out.extend(files);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ckptguard_formats::dir::MemDir;

    #[test]
    fn the_container_row_is_as_unsafe_as_its_worst_file() {
        let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.".to_vec();
        let dir = MemDir::default()
            .with("latest", "tag")
            .with("zero_to_fp32.py", "")
            .with("tag/mp_rank_00_model_states.pt", evil.clone());
        let kind = crate::dirs::detect(&dir).unwrap();
        let rows = container_reports(
            &dir,
            kind,
            "ck",
            &ScanOptions::default(),
            Severity::High,
            &|rel| format!("ck/{rel}"),
            &|_| (10, 5),
        );
        assert_eq!(rows[0].path, "ck");
        assert_eq!(rows[0].verdict, Verdict::Unsafe);
        assert_eq!(rows[0].size, 10 * (rows.len() as u64 - 1));
        assert!(
            rows.iter()
                .any(|r| r.path == "ck/tag/mp_rank_00_model_states.pt"
                    && r.verdict == Verdict::Unsafe)
        );
    }
}
