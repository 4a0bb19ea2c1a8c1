//! `ckptguard`: scan, disassemble, sign and verify machine-learning checkpoints without
//! executing a byte of pickle.
#![forbid(unsafe_code)]

mod cmd_load;
mod cmd_sign;
mod render;

use ckptguard_fs::scan::scan_item;
use ckptguard_fs::{mmap, walk};

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use ckptguard_scan::config::{Config, FILE_NAME};
use ckptguard_scan::{Code, FileReport, Limits, Policy, Report, ScanOptions, Severity};
use clap::{Parser, Subcommand, ValueEnum};
use rayon::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "ckptguard",
    version,
    about = "Scan, safely inspect, sign and verify ML checkpoints without executing pickle",
    long_about = "ckptguard proves, without executing anything, whether a checkpoint is safe to load.\n\
It reads pickles, numpy arrays and zip containers the way Python, numpy and torch read them, \
simulates the unpickler symbolically, and applies a default-deny allowlist of globals that only build data."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Scan files or directories; exit 0 = safe, 1 = unsafe, 2 = could not run.
    Scan(ScanArgs),
    /// Print an annotated opcode listing of a pickle (like pickletools.dis), with the symbolic
    /// value of each step.
    Disasm(DisasmArgs),
    /// Describe every finding code (or one).
    Codes {
        /// A code id (CG101) or name (dangerous-call).
        code: Option<String>,
    },
    /// Show a checkpoint's structure: keys, tensors (dtype, shape, bytes), plain values.
    Inspect(cmd_load::InspectArgs),
    /// Convert a checkpoint to safetensors without executing pickle.
    Convert(cmd_load::ConvertArgs),
    /// Generate an ECDSA key pair for signing.
    Keygen(cmd_sign::KeygenArgs),
    /// Sign a model file or directory (OpenSSF model-signing compatible).
    Sign(cmd_sign::SignArgs),
    /// Verify a model's signature; exit 0 = valid, 1 = invalid, 2 = could not run.
    Verify(cmd_sign::VerifyArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Human-readable text (colour on a terminal).
    Text,
    /// JSON report, schema version 1 (docs/report-schema.md).
    Json,
    /// SARIF 2.1.0, for code-scanning services.
    Sarif,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[derive(clap::Args, Debug)]
struct ScanArgs {
    /// Files or directories (directories are scanned recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Lowest severity that makes a file unsafe. The default, high, fails on every import or
    /// call that is not on the allowlist. Files that could not be fully analysed are unsafe
    /// whatever this says.
    #[arg(long, value_enum)]
    fail_on: Option<SeverityArg>,
    /// List every global imported (module.name), as add_safe_globals would need them.
    #[arg(long)]
    globals: bool,
    /// Configuration file (default: ckptguard.toml found by walking up from each path).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Show size and bytes read per file.
    #[arg(long)]
    stats: bool,
    /// Write the report to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Show only unsafe and unreadable files in text output.
    #[arg(short, long)]
    quiet: bool,
    /// Also require a valid OpenSSF model-signing signature for each PATH (unsigned or
    /// tampered is unsafe, whatever the contents). Needs --key.
    #[arg(long, requires = "key")]
    require_signature: bool,
    /// Public key (PEM) for --require-signature.
    #[arg(long, requires = "require_signature")]
    key: Option<PathBuf>,
    /// Signature file for --require-signature (default: model.sig beside a file, inside a
    /// directory). Only with a single PATH.
    #[arg(long, requires = "require_signature")]
    signature: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct DisasmArgs {
    /// A pickle file, or a zip/npy containing one.
    file: PathBuf,
    /// The zip member to disassemble (default: every member that is a pickle).
    #[arg(long)]
    entry: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Scan(a) => scan(a),
        Command::Disasm(a) => disasm(a),
        Command::Codes { code } => codes(code.as_deref()),
        Command::Inspect(a) => cmd_load::inspect(a),
        Command::Convert(a) => cmd_load::convert(a),
        Command::Keygen(a) => cmd_sign::keygen(a),
        Command::Sign(a) => cmd_sign::sign(a),
        Command::Verify(a) => cmd_sign::verify(a),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ckptguard: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn one_line(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.join(": ").replace('\n', " ")
}

/// The project configuration for a scanned path: the nearest `ckptguard.toml` in the current
/// directory or its ancestors — unless it lies at or below the scanned artifact's own directory.
/// A config beside or inside what is being judged is part of that artifact (a downloaded model
/// could ship one), so it never applies to it; pass `--config` to use one deliberately.
fn find_config(scanned: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    let mut dir = Some(cwd.as_path());
    let found = loop {
        let d = dir?;
        let c = d.join(FILE_NAME);
        if c.is_file() {
            break c;
        }
        dir = d.parent();
    };
    let abs = std::path::absolute(scanned).ok()?;
    let artifact_dir = if abs.is_dir() {
        abs.as_path()
    } else {
        abs.parent()?
    };
    let config_dir = found.parent()?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canon(config_dir).starts_with(canon(artifact_dir)) {
        return None;
    }
    Some(found)
}

fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("invalid config {}", path.display()))
}

fn options_for(config: Option<&Config>) -> ScanOptions {
    let mut policy = Policy::new();
    let mut limits = Limits::default();
    if let Some(c) = config {
        c.apply(&mut policy);
        if let Some(l) = &c.limits {
            limits = l.clone();
        }
    }
    ScanOptions { policy, limits }
}

fn scan(a: &ScanArgs) -> Result<i32> {
    // Every path must exist: a typo is a usage error, not an empty scan.
    for p in &a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("cannot read '{}'", p.display()))?;
    }
    let explicit = a.config.as_deref().map(load_config).transpose()?;
    let key_pem = match &a.key {
        Some(k) => {
            Some(std::fs::read(k).with_context(|| format!("cannot read key '{}'", k.display()))?)
        }
        None => None,
    };
    if a.signature.is_some() && a.paths.len() > 1 {
        bail!("--signature names one signature file; give a single PATH");
    }
    let mut fail_on: Severity = a.fail_on.map(Into::into).unwrap_or(Severity::High);

    // Group files by the configuration that governs them.
    let mut jobs: Vec<(walk::Item, usize)> = Vec::new();
    let mut configs: Vec<ScanOptions> = Vec::new();
    let mut config_paths: Vec<Option<PathBuf>> = Vec::new();
    for p in &a.paths {
        let cfg_path = if explicit.is_some() {
            None
        } else {
            find_config(p)
        };
        let idx = match config_paths.iter().position(|c| *c == cfg_path) {
            Some(i) => i,
            None => {
                let cfg = match (&explicit, &cfg_path) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(path)) => Some(load_config(path)?),
                    (None, None) => None,
                };
                if a.fail_on.is_none() {
                    if let Some(f) = cfg.as_ref().and_then(|c| c.fail_on) {
                        fail_on = f;
                    }
                }
                configs.push(options_for(cfg.as_ref()));
                config_paths.push(cfg_path);
                configs.len() - 1
            }
        };
        for item in walk::collect(p) {
            jobs.push((item, idx));
        }
    }

    let progress =
        (!a.no_progress && std::io::stderr().is_terminal() && jobs.len() > 20).then(|| {
            let pb = indicatif::ProgressBar::new(jobs.len() as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} scanning {pos}/{len} {wide_bar} {elapsed}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb
        });
    // One file: no thread pool to start.
    let files: Vec<FileReport> = if jobs.len() == 1 {
        let (item, idx) = &jobs[0];
        scan_item(item, &configs[*idx], fail_on)
    } else {
        jobs.par_iter()
            .flat_map_iter(|(item, idx)| {
                let r = scan_item(item, &configs[*idx], fail_on);
                if let Some(pb) = &progress {
                    pb.inc(1);
                }
                r
            })
            .collect()
    };
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut files = files;
    if let Some(pem) = &key_pem {
        for p in &a.paths {
            let sig = a
                .signature
                .clone()
                .unwrap_or_else(|| ckptguard_sign::default_signature_path(p));
            let row = signature_report(p, &sig, pem, fail_on);
            files.retain(|f| f.path != row.path);
            files.push(row);
        }
    }
    let mut report = Report::new(files, fail_on);
    report.configs = match &a.config {
        Some(c) => vec![c.display().to_string()],
        None => config_paths
            .iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect(),
    };

    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot write '{}'", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let color = a.output.is_none()
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    match a.format {
        Format::Text => render::text(
            &report,
            &mut out,
            &render::TextOptions {
                color,
                globals: a.globals,
                stats: a.stats,
                quiet: a.quiet,
            },
        )?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut out, &render::sarif(&report))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(report.exit_code())
}

/// The `--require-signature` verdict for one model path, reported on its signature file.
fn signature_report(
    model: &Path,
    sig: &Path,
    public_key_pem: &[u8],
    fail_on: Severity,
) -> FileReport {
    use ckptguard_scan::{Code, FileScan, Finding};
    let finding = match ckptguard_sign::verify_model(model, sig, public_key_pem, &ckptguard_sign::VerifyOptions::default()) {
        Ok(v) => Finding::new(
            Code::SignatureValid,
            format!("valid signature over {} files ({} bytes) of {}", v.files, v.total_bytes, model.display()),
        ),
        Err(e) => Finding::new(Code::SignatureInvalid, format!("signature of {} not valid: {e}", model.display()))
            .help("Obtain the model from its publisher again, or verify with the right public key (ckptguard verify)."),
    };
    let scan = FileScan {
        format: "signature".into(),
        findings: vec![finding],
        ..FileScan::default()
    };
    let size = std::fs::metadata(sig).map(|m| m.len()).unwrap_or(0);
    FileReport::new(sig.display().to_string(), scan, size, size, fail_on)
}

fn disasm(a: &DisasmArgs) -> Result<i32> {
    let m = mmap::Mapped::open(&a.file)
        .with_context(|| format!("cannot read '{}'", a.file.display()))?;
    let bytes = m.bytes();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let limits = ckptguard_pickle::Limits::default();
    let streams = render::pickle_streams(bytes, a.entry.as_deref())?;
    if streams.is_empty() {
        bail!("'{}' contains no pickle", a.file.display());
    }
    for (name, data) in &streams {
        if streams.len() > 1 || a.entry.is_some() {
            writeln!(out, "== {name} ==")?;
        }
        let (lines, analysis) = ckptguard_pickle::disasm::disassemble(data, &limits);
        out.write_all(ckptguard_pickle::disasm::format_listing(&lines, &analysis).as_bytes())?;
    }
    out.flush()?;
    Ok(0)
}

fn codes(one: Option<&str>) -> Result<i32> {
    let list: Vec<Code> = match one {
        Some(c) => vec![Code::parse(c).with_context(|| format!("unknown finding code '{c}'"))?],
        None => Code::ALL.to_vec(),
    };
    let mut out = std::io::stdout().lock();
    for c in list {
        writeln!(
            out,
            "{} {} ({}{})\n    {}\n",
            c.id(),
            c.slug(),
            c.severity().as_str(),
            if c.blocking() { ", blocking" } else { "" },
            c.description()
        )?;
    }
    Ok(0)
}
