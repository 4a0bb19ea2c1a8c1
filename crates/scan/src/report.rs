//! The scan report: a pure, serializable value. Renderers (text, JSON, SARIF) live in the CLI.
//!
//! JSON schema version 1 (`docs/report-schema.md`): top-level `schema_version`, `tool`,
//! `fail_on`, `files[]`, `summary`; per file `path`, `verdict` (`safe|unsafe|error|skipped`),
//! `format`, `size`, `bytes_read`, `findings[]`, `globals[]`, `error`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::finding::{Finding, Severity};

/// Version of the JSON report schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The verdict on one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Analysed completely; nothing at or above the failing severity.
    Safe,
    /// Not a format any loader unpickles, and unpickling it would fail before doing anything.
    Skipped,
    /// Something at or above the failing severity, or a blocking finding.
    Unsafe,
    /// Could not be read.
    Error,
}

impl Verdict {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Skipped => "skipped",
            Verdict::Unsafe => "unsafe",
            Verdict::Error => "error",
        }
    }
}

/// The result for one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    /// The path as given or found.
    pub path: String,
    /// The verdict.
    pub verdict: Verdict,
    /// What the file was recognised as (`pickle`, `npy`, `npz`, `torch-zip`, ...).
    pub format: String,
    /// File size in bytes.
    pub size: u64,
    /// Bytes actually read to reach the verdict.
    pub bytes_read: u64,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// Every global imported, as `module.name`.
    pub globals: Vec<String>,
    /// Would `torch.load(weights_only=True)` accept it (torch files only)?
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_only: Option<crate::torch::WeightsOnly>,
    /// Why the file could not be read or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileReport {
    /// Builds a report and decides its verdict.
    pub fn new(
        path: String,
        scan: crate::FileScan,
        size: u64,
        bytes_read: u64,
        fail_on: Severity,
    ) -> Self {
        let mut findings = scan.findings;
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.offset.cmp(&b.offset)));
        let verdict = if findings.iter().any(|f| f.blocking || f.severity >= fail_on) {
            Verdict::Unsafe
        } else if scan.skipped.is_some() {
            Verdict::Skipped
        } else {
            Verdict::Safe
        };
        FileReport {
            path,
            verdict,
            format: scan.format,
            size,
            bytes_read,
            findings,
            globals: scan.globals.into_iter().collect(),
            weights_only: scan.weights_only,
            error: scan.skipped,
        }
    }

    /// A file that could not be read.
    pub fn error(path: String, error: String) -> Self {
        FileReport {
            path,
            verdict: Verdict::Error,
            format: "unknown".into(),
            size: 0,
            bytes_read: 0,
            findings: Vec::new(),
            globals: Vec::new(),
            weights_only: None,
            error: Some(error),
        }
    }
}

/// The tool that wrote a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `ckptguard`.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// Counts per verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Files reported.
    pub files: usize,
    /// Safe files.
    pub safe: usize,
    /// Unsafe files.
    #[serde(rename = "unsafe")]
    pub unsafe_: usize,
    /// Files that could not be read.
    pub error: usize,
    /// Files that are not checkpoints.
    pub skipped: usize,
}

/// A whole scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// JSON schema version.
    pub schema_version: u32,
    /// The tool.
    pub tool: Tool,
    /// The failing severity in force.
    pub fail_on: Severity,
    /// Per-file results, in path order.
    pub files: Vec<FileReport>,
    /// Totals.
    pub summary: Summary,
    /// Configuration files that applied (`ckptguard.toml`), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<String>,
}

impl Report {
    /// Assembles a report (files sorted by path for determinism).
    pub fn new(mut files: Vec<FileReport>, fail_on: Severity) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut s = Summary {
            files: files.len(),
            ..Summary::default()
        };
        for f in &files {
            match f.verdict {
                Verdict::Safe => s.safe += 1,
                Verdict::Unsafe => s.unsafe_ += 1,
                Verdict::Error => s.error += 1,
                Verdict::Skipped => s.skipped += 1,
            }
        }
        Report {
            schema_version: SCHEMA_VERSION,
            tool: Tool {
                name: "ckptguard".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            fail_on,
            files,
            summary: s,
            configs: Vec::new(),
        }
    }

    /// Process exit code: 1 if anything is unsafe, else 2 if anything could not be read, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.summary.unsafe_ > 0 {
            1
        } else if self.summary.error > 0 {
            2
        } else {
            0
        }
    }

    /// Every global imported by any file, sorted.
    pub fn all_globals(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .flat_map(|f| f.globals.iter().cloned())
            .collect()
    }
}
