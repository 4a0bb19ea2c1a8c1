//! Directory containers (DCP checkpoints, DeepSpeed checkpoints, litdata datasets) seen through
//! a trait, so the core reads them without opening paths itself.

use std::collections::BTreeMap;

use crate::io::ReadAt;

/// A directory of files, addressed by `/`-separated relative paths.
pub trait Dir: Send + Sync {
    /// Every regular file under the directory, relative, `/`-separated, sorted.
    fn files(&self) -> Vec<String>;
    /// Opens one of [`files`](Self::files).
    fn open(&self, rel: &str) -> std::io::Result<Box<dyn ReadAt + '_>>;
}

/// Whether a relative path stays inside its directory: not absolute, no `..` component, no
/// drive or backslash tricks.
pub fn is_contained(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.starts_with('\\')
        && !rel.contains('\0')
        && (rel.len() < 2 || rel.as_bytes()[1] != b':')
        && rel.split(['/', '\\']).all(|c| c != "..")
}

/// An in-memory directory, for tests and for bytes handed over by callers.
#[derive(Clone, Debug, Default)]
pub struct MemDir {
    /// Files by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemDir {
    /// Adds a file.
    pub fn with(mut self, rel: &str, data: impl Into<Vec<u8>>) -> Self {
        self.files.insert(rel.to_string(), data.into());
        self
    }
}

impl Dir for MemDir {
    fn files(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }
    fn open(&self, rel: &str) -> std::io::Result<Box<dyn ReadAt + '_>> {
        self.files
            .get(rel)
            .map(|v| Box::new(v.as_slice()) as Box<dyn ReadAt>)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{rel}: no such file"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        for ok in ["a", "a/b.distcp", "__0_0.distcp", "x..y"] {
            assert!(is_contained(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\..\\x",
            "C:\\x",
            "\\\\srv\\x",
            "a\0b",
        ] {
            assert!(!is_contained(bad), "{bad}");
        }
    }
}
