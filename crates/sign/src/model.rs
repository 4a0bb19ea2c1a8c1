//! Walking a model (file or directory) and hashing its files, model_signing "files" style.
//!
//! Facts mirrored from model_signing 1.x (`_serialization/file.py`, `hashing.py`):
//! - a single-file model has one resource named `"."`;
//! - a directory model has one resource per regular file, named by its POSIX path relative to
//!   the model directory; directories themselves (including empty ones) are not recorded;
//!   hidden files are included;
//! - symbolic links are refused (allow_symlinks=false), special files are refused;
//! - an ignore path excludes itself and everything below it (component-prefix match);
//! - resources are ordered by path components (`"a/b" < "a-b"`), and the root digest is
//!   SHA-256 over the concatenated raw digests in that order.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// Read size for hashing: large sequential reads.
pub(crate) const READ_BUF: usize = 4 << 20;

/// Paths ignored by default by model_signing (and ckptguard), relative to the model directory.
pub const DEFAULT_GIT_IGNORES: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// One hashed file of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// POSIX path relative to the model directory, or `"."` for a single-file model.
    pub name: String,
    /// SHA-256 of the file content.
    pub digest: [u8; 32],
    /// File size in bytes.
    pub size: u64,
}

/// Sort names the way model_signing does: by path components.
pub fn sort_by_components<T>(items: &mut [T], name: impl Fn(&T) -> &str) {
    items.sort_by(|a, b| name(a).split('/').cmp(name(b).split('/')));
}

/// SHA-256 over the concatenated digests, in the given order.
pub fn root_digest<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

/// A set of ignored relative paths, each as components.
#[derive(Debug, Default, Clone)]
pub(crate) struct IgnoreSet {
    entries: Vec<Vec<String>>,
}

impl IgnoreSet {
    pub(crate) fn add(&mut self, comps: Vec<String>) {
        if !comps.is_empty() && !self.entries.contains(&comps) {
            self.entries.push(comps);
        }
    }

    pub(crate) fn matches(&self, comps: &[&str]) -> bool {
        self.entries
            .iter()
            .any(|e| e.len() <= comps.len() && e.iter().zip(comps).all(|(a, b)| a == b))
    }

    /// The entries as POSIX strings, sorted (for recording in the signature).
    pub(crate) fn to_strings(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.iter().map(|e| e.join("/")).collect();
        v.sort();
        v
    }
}

/// Normalise a model-relative ignore path given by a caller (library API).
pub(crate) fn normalize_ignore(p: &Path) -> Result<Vec<String>, ModelError> {
    let bad = |reason: &str| ModelError::BadIgnorePath {
        path: p.display().to_string(),
        reason: reason.to_string(),
    };
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(
                s.to_str()
                    .ok_or_else(|| bad("not valid UTF-8"))?
                    .to_string(),
            ),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.pop().is_none() {
                    return Err(bad("it points outside the model directory"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(
                    "must be relative to the model directory (resolve absolute paths first)",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(bad(
            "it names the model directory itself, which would ignore everything",
        ));
    }
    Ok(out)
}

/// Normalise an ignore path recorded in a (signed) bundle: POSIX string, relative.
/// Returns `None` for entries that cannot apply (absolute, escaping, or the root).
pub(crate) fn normalize_recorded_ignore(s: &str) -> Option<Vec<String>> {
    if s.starts_with('/') || s.contains('\0') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c.to_string()),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// If `p` lies inside `model_dir`, its components relative to the model directory.
/// Both are resolved through the filesystem (`p` itself need not exist yet).
pub(crate) fn relative_inside(model_dir: &Path, p: &Path) -> Option<Vec<String>> {
    let root = fs::canonicalize(model_dir).ok()?;
    let name = p.file_name()?;
    let parent = match p.parent() {
        Some(pp) if !pp.as_os_str().is_empty() => pp.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let full = fs::canonicalize(parent).ok()?.join(name);
    let rel = full.strip_prefix(&root).ok()?;
    let comps: Option<Vec<String>> = rel
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            _ => None,
        })
        .collect();
    comps.filter(|c| !c.is_empty())
}

/// Files the signature lists: used at verification so that ignore rules never hide a
/// signed file (a listed file is always checked).
#[derive(Debug, Default)]
pub(crate) struct Listed {
    files: HashSet<String>,
    dirs: HashSet<String>,
}

impl Listed {
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Listed {
        let mut l = Listed::default();
        for n in names {
            let mut idx = 0;
            while let Some(pos) = n[idx..].find('/') {
                l.dirs.insert(n[..idx + pos].to_string());
                idx += pos + 1;
            }
            l.files.insert(n.to_string());
        }
        l
    }
}

/// Which model shape is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelKind {
    File,
    Dir,
}

struct ToHash {
    name: String,
    path: PathBuf,
    size: u64,
    #[cfg(unix)]
    id: (u64, u64),
}

#[cfg(unix)]
fn file_id(m: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

fn io_err(path: &Path, source: io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Strip a trailing slash etc. so that `lstat` does not follow a final symlink.
fn clean(model: &Path) -> PathBuf {
    let p: PathBuf = model.components().collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

/// The kind of model at `model`, refusing symlinks and special files.
pub(crate) fn model_kind(model: &Path) -> Result<ModelKind, ModelError> {
    let model = clean(model);
    let md = fs::symlink_metadata(&model).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            ModelError::NotFound(model.clone())
        } else {
            io_err(&model, e)
        }
    })?;
    let ft = md.file_type();
    if ft.is_symlink() {
        Err(ModelError::Symlink(model))
    } else if ft.is_file() {
        Ok(ModelKind::File)
    } else if ft.is_dir() {
        Ok(ModelKind::Dir)
    } else {
        Err(ModelError::SpecialFile(model))
    }
}

/// Enumerate the files of a directory model. `ignore` entries are skipped, except (when
/// `listed` is given) files the signature lists, and directories containing them.
fn walk(
    root: &Path,
    ignore: &IgnoreSet,
    listed: Option<&Listed>,
) -> Result<Vec<ToHash>, ModelError> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let path = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| ModelError::NonUtf8Name(path.clone()))?;
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Does not follow symlinks (fstatat with AT_SYMLINK_NOFOLLOW on Unix).
            let md = entry.metadata().map_err(|e| io_err(&path, e))?;
            let ft = md.file_type();
            let comps: Vec<&str> = child_rel.split('/').collect();
            if ignore.matches(&comps) {
                let keep = listed.is_some_and(|l| {
                    if ft.is_dir() {
                        l.dirs.contains(&child_rel)
                    } else {
                        l.files.contains(&child_rel)
                    }
                });
                if !keep {
                    continue;
                }
            }
            if ft.is_symlink() {
                return Err(ModelError::Symlink(path));
            } else if ft.is_dir() {
                stack.push((path, child_rel));
            } else if ft.is_file() {
                out.push(ToHash {
                    name: child_rel,
                    size: md.len(),
                    #[cfg(unix)]
                    id: file_id(&md),
                    path,
                });
            } else {
                return Err(ModelError::SpecialFile(path));
            }
        }
    }
    Ok(out)
}

/// Files at least this large are read by a helper thread while the caller hashes, so disk
/// I/O (cold page cache) overlaps with SHA-256 instead of adding to it.
pub(crate) const PIPELINE_MIN: u64 = 16 << 20;
/// Buffers in flight per pipelined file (memory: PIPELINE_BUFS × READ_BUF).
const PIPELINE_BUFS: usize = 3;

/// Read `file` to the end, feeding every chunk to `sink`.
fn read_plain(file: &mut fs::File, buf: &mut [u8], mut sink: impl FnMut(&[u8])) -> io::Result<()> {
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Like [`read_plain`], with reads done on a helper thread (double buffering).
fn read_pipelined(file: &mut fs::File, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
    use std::sync::mpsc::sync_channel;
    let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(PIPELINE_BUFS);
    let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(PIPELINE_BUFS);
    for _ in 0..PIPELINE_BUFS {
        empty_tx.send(vec![0u8; READ_BUF]).expect("receiver alive");
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            // Ends when the consumer hangs up (drops `empty_tx`) or at EOF/error.
            while let Ok(mut b) = empty_rx.recv() {
                let r = loop {
                    match file.read(&mut b) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r,
                    }
                };
                let stop = !matches!(r, Ok(n) if n > 0);
                if full_tx.send(r.map(|n| (b, n))).is_err() || stop {
                    return;
                }
            }
        });
        let result = loop {
            match full_rx.recv() {
                Ok(Ok((_, 0))) => break Ok(()),
                Ok(Ok((b, n))) => {
                    sink(&b[..n]);
                    let _ = empty_tx.send(b);
                }
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(io::Error::other("reader thread stopped")),
            }
        };
        drop(empty_tx);
        drop(full_rx);
        result
    })
}

/// Hash one file with large sequential reads.
fn hash_file(f: &ToHash, buf: &mut [u8]) -> Result<ManifestEntry, ModelError> {
    let mut file = fs::File::open(&f.path).map_err(|e| io_err(&f.path, e))?;
    let md = file.metadata().map_err(|e| io_err(&f.path, e))?;
    // The path was a regular file when listed; make sure it still is the same one
    // (not swapped for a symlink or another file in between).
    #[cfg(unix)]
    let same = md.is_file() && file_id(&md) == f.id;
    #[cfg(not(unix))]
    let same = md.is_file();
    if !same {
        return Err(ModelError::ChangedDuringHashing(f.path.clone()));
    }
    let mut h = Sha256::new();
    let mut size = 0u64;
    let sink = |chunk: &[u8]| {
        h.update(chunk);
        size += chunk.len() as u64;
    };
    if md.len() >= PIPELINE_MIN {
        read_pipelined(&mut file, sink)
    } else {
        read_plain(&mut file, buf, sink)
    }
    .map_err(|e| io_err(&f.path, e))?;
    Ok(ManifestEntry {
        name: f.name.clone(),
        digest: h.finalize().into(),
        size,
    })
}

thread_local! {
    /// One read buffer per hashing thread, reused across files.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn hash_with_thread_buffer(f: &ToHash) -> Result<ManifestEntry, ModelError> {
    READ_BUFFER.with(|b| {
        let mut buf = b.borrow_mut();
        if buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        hash_file(f, &mut buf)
    })
}

fn hash_all(mut files: Vec<ToHash>) -> Result<Vec<ManifestEntry>, ModelError> {
    // Largest first for load balance across threads.
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let mut entries = if files.len() <= 1 {
        files
            .iter()
            .map(hash_with_thread_buffer)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        files
            .par_iter()
            .with_max_len(1)
            .map(hash_with_thread_buffer)
            .collect::<Result<Vec<_>, _>>()?
    };
    sort_by_components(&mut entries, |e| e.name.as_str());
    Ok(entries)
}

/// Hash a model. Returns its kind and the entries ordered by path components.
pub(crate) fn hash_model(
    model: &Path,
    ignore: &IgnoreSet,
    listed: Option<&Listed>,
) -> Result<(ModelKind, Vec<ManifestEntry>), ModelError> {
    let kind = model_kind(model)?;
    let model = clean(model);
    let files = match kind {
        ModelKind::File => {
            let md = fs::symlink_metadata(&model).map_err(|e| io_err(&model, e))?;
            vec![ToHash {
                name: ".".to_string(),
                size: md.len(),
                #[cfg(unix)]
                id: file_id(&md),
                path: model.clone(),
            }]
        }
        ModelKind::Dir => walk(&model, ignore, listed)?,
    };
    Ok((kind, hash_all(files)?))
}

/// The informative model name recorded as the in-toto subject: the final path component,
/// or the name of the resolved directory for paths like `.` (as model_signing does).
pub(crate) fn model_name(model: &Path) -> String {
    let cleaned = clean(model);
    if let Some(n) = cleaned.file_name() {
        return n.to_string_lossy().into_owned();
    }
    fs::canonicalize(&cleaned)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ordering_matches_model_signing() {
        // Order observed from model_signing 1.1.1 on the same tree.
        let mut names = vec![
            "sub.a",
            "sub-x",
            "sub/deep/c",
            "a.bin",
            "sub/b.txt",
            ".hidden/x",
        ];
        sort_by_components(&mut names, |s| s);
        assert_eq!(
            names,
            [
                ".hidden/x",
                "a.bin",
                "sub/b.txt",
                "sub/deep/c",
                "sub-x",
                "sub.a"
            ]
        );
        // Plain string order would differ: "sub-x" < "sub.a" < "sub/b.txt".
        let mut plain = names.clone();
        plain.sort();
        assert_ne!(plain, names);
    }

    #[test]
    fn ignore_matching_is_by_component() {
        let mut ig = IgnoreSet::default();
        ig.add(vec![".git".into()]);
        ig.add(vec!["sub".into(), "deep".into()]);
        assert!(ig.matches(&[".git"]));
        assert!(ig.matches(&[".git", "config"]));
        assert!(!ig.matches(&[".gitx"]));
        assert!(ig.matches(&["sub", "deep", "c"]));
        assert!(!ig.matches(&["sub", "deeper"]));
        assert!(!ig.matches(&["sub"]));
    }

    #[test]
    fn normalizing_ignore_paths() {
        assert_eq!(normalize_ignore(Path::new("./a//b/")).unwrap(), ["a", "b"]);
        assert_eq!(normalize_ignore(Path::new("a/../c")).unwrap(), ["c"]);
        assert!(normalize_ignore(Path::new("../x")).is_err());
        assert!(normalize_ignore(Path::new("/abs")).is_err());
        assert!(normalize_ignore(Path::new(".")).is_err());
        assert_eq!(
            normalize_recorded_ignore("model.sig").unwrap(),
            ["model.sig"]
        );
        assert_eq!(normalize_recorded_ignore("a/./b").unwrap(), ["a", "b"]);
        assert!(normalize_recorded_ignore("/etc").is_none());
        assert!(normalize_recorded_ignore("..").is_none());
        assert!(normalize_recorded_ignore(".").is_none());
        assert!(normalize_recorded_ignore("").is_none());
    }

    #[test]
    fn listed_dirs() {
        let l = Listed::new(["a/b/c", "d"]);
        assert!(l.dirs.contains("a") && l.dirs.contains("a/b") && !l.dirs.contains("a/b/c"));
        assert!(l.files.contains("a/b/c") && l.files.contains("d"));
    }

    #[test]
    fn root_digest_of_single_file() {
        // model_signing: a.bin = "a\n" -> resource digest 8742..., subject digest 225f...
        let d: [u8; 32] = Sha256::digest(b"a\n").into();
        assert_eq!(
            crate::keys::hex(&d),
            "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"
        );
        assert_eq!(
            crate::keys::hex(&root_digest([&d])),
            "225f1bbbc4b1a3d97c622a492d91ea8d6858d7e1164bbbb5953f74311d6d222e"
        );
    }
}
