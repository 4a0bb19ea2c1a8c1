//! `ckptguard inspect | convert`: load a checkpoint without executing pickle (after the scanner
//! judged it safe), show its structure, or write its tensors to safetensors.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ckptguard_load::json::{describe, to_json, TensorStyle};
use ckptguard_load::value::{repr, Value};
use ckptguard_load::{human_bytes, load, load_scanned, Checkpoint, LoadError, LoadOptions};
use ckptguard_scan::{FileReport, FileScan, Report, Severity};
use clap::{Args, ValueEnum};
use serde_json::json;

use ckptguard_fs::mmap::Mapped;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    /// An indented tree.
    Text,
    /// JSON: tensors (name, dtype, shape, strides, bytes, ...) and the value tree.
    Json,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A checkpoint (torch zip, legacy torch file, Lightning/Fabric .ckpt, DeepSpeed model
    /// states, plain pickle, .npy), a DeepSpeed checkpoint directory, or a
    /// torch.distributed.checkpoint directory (Lightning's sharded checkpoints included).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = InspectFormat::Text)]
    pub format: InspectFormat,
    /// Show only the subtree at this dotted key (`state_dict`, `optimizer_states.0`).
    #[arg(long)]
    pub key: Option<String>,
    /// Most items shown per list/tuple/set in text output (dicts are always shown whole).
    #[arg(long, default_value_t = 50)]
    pub max_items: usize,
    /// Configuration file (default: ckptguard.toml found by walking up from the file).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The checkpoint to convert (or a DeepSpeed or torch.distributed.checkpoint directory).
    pub input: PathBuf,
    /// The safetensors file to write (atomically: a temporary file in the same directory,
    /// renamed into place).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Convert only the subtree at this dotted key (`state_dict`); names are relative to it.
    #[arg(long)]
    pub key: Option<String>,
    /// Configuration file (default: ckptguard.toml found by walking up from the input).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// fsync the output before renaming it into place.
    #[arg(long)]
    pub fsync: bool,
}

fn options(path: &Path, config: Option<&Path>) -> Result<LoadOptions> {
    let cfg = match config {
        Some(c) => Some(crate::load_config(c)?),
        None => crate::find_config(path)
            .map(|p| crate::load_config(&p))
            .transpose()?,
    };
    Ok(LoadOptions::with_scan(crate::options_for(cfg.as_ref())))
}

/// What was opened: the mapped checkpoint file and how it was cleared.
struct Opened {
    /// The file the tensors come from.
    path: PathBuf,
    /// The mapped file (`None` for a DCP directory, loaded whole in [`Opened::dcp`]).
    map: Option<Mapped>,
    /// For directory containers: the scan of the file, done with the whole directory.
    report: Option<FileReport>,
    /// A DCP directory, already loaded whole (its tensors own their bytes).
    dcp: Option<Checkpoint<'static>>,
}

/// Refusal of unsafe input: the findings (inspect) or one line (convert) and exit 1 (2 when
/// the file is merely unreadable).
fn refuse(what: &str, path: &Path, err: &LoadError, show_report: bool) -> Result<i32> {
    let LoadError::Unsafe {
        report,
        summary,
        unreadable_only,
    } = err
    else {
        bail!("{what} {}: {err}", path.display());
    };
    if show_report {
        let r = Report::new(vec![(**report).clone()], Severity::High);
        let mut out = std::io::stdout().lock();
        crate::render::text(
            &r,
            &mut out,
            &crate::render::TextOptions {
                color: false,
                globals: false,
                stats: false,
                quiet: false,
            },
        )?;
        out.flush()?;
    }
    if *unreadable_only {
        eprintln!(
            "ckptguard: refused: {} cannot be read completely, so it cannot be cleared: {summary}",
            path.display()
        );
    } else {
        eprintln!(
            "ckptguard: refused: {} is unsafe to load: {summary}",
            path.display()
        );
    }
    Ok(if *unreadable_only { 2 } else { 1 })
}

/// Opens `input`: a file, a DeepSpeed directory (scanned whole, then its model states file), or a
/// DCP directory (scanned whole, then loaded whole).
fn open(input: &Path, opts: &LoadOptions) -> std::result::Result<Opened, (PathBuf, LoadError)> {
    let meta = std::fs::metadata(input).map_err(|e| (input.to_path_buf(), LoadError::Io(e)))?;
    if !meta.is_dir() {
        let map = Mapped::open(input).map_err(|e| (input.to_path_buf(), LoadError::Io(e)))?;
        return Ok(Opened {
            path: input.to_path_buf(),
            map: Some(map),
            report: None,
            dcp: None,
        });
    }
    let err = |e: LoadError| (input.to_path_buf(), e);
    let dir = ckptguard_fs::fsdir::FsDir::open(input);
    let Some(kind) = ckptguard_scan::dirs::detect(&dir) else {
        return Err(err(LoadError::Unsupported(
            "directories other than DeepSpeed and torch.distributed.checkpoint checkpoints are not loaded; pass a checkpoint file"
                .into(),
        )));
    };
    if kind == ckptguard_scan::dirs::DirKind::Dcp {
        // torch.distributed.checkpoint (and Lightning's sharded layout): scanned whole (.metadata,
        // every item, meta.pt), then rebuilt into owned tensors and values.
        if let Some((rel, e)) = dir.errors.first() {
            return Err(err(LoadError::Malformed(format!("{rel}: {e}"))));
        }
        let ck =
            ckptguard_load::dcp::load_dir(&dir, &input.display().to_string(), opts).map_err(err)?;
        return Ok(Opened {
            path: input.to_path_buf(),
            map: None,
            report: None,
            dcp: Some(ck),
        });
    }
    if kind != ckptguard_scan::dirs::DirKind::DeepSpeed {
        return Err(err(LoadError::Unsupported(format!(
            "{} directories are not loaded yet; only DeepSpeed and torch.distributed.checkpoint directories and single files",
            kind.format()
        ))));
    }
    // The whole container must be safe: Lightning/DeepSpeed load the optimizer states too.
    let scan = ckptguard_scan::dirs::scan_dir(&dir, kind, &opts.scan);
    let mut all = FileScan {
        format: kind.format().into(),
        ..FileScan::default()
    };
    all.findings.extend(scan.container.findings);
    for (rel, s) in &scan.files {
        all.findings.extend(s.findings.iter().cloned().map(|mut f| {
            f.entry = Some(match &f.entry {
                Some(e) => format!("{rel}: {e}"),
                None => rel.clone(),
            });
            f
        }));
    }
    if let Some((rel, e)) = dir.errors.first() {
        return Err(err(LoadError::Malformed(format!("{rel}: {e}"))));
    }
    let whole = FileReport::new(input.display().to_string(), all, 0, 0, opts.fail_on);
    ckptguard_load::check_report(&whole, opts.fail_on).map_err(err)?;
    let files: Vec<String> = scan.files.keys().cloned().collect();
    let tag = std::fs::read_to_string(input.join("latest"))
        .ok()
        .map(|t| t.trim().to_string());
    let wanted = "mp_rank_00_model_states.pt";
    let rel = match tag {
        Some(t) if files.contains(&format!("{t}/{wanted}")) => format!("{t}/{wanted}"),
        _ => {
            let c: Vec<&String> = files
                .iter()
                .filter(|f| f.rsplit('/').next() == Some(wanted))
                .collect();
            match c.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(err(LoadError::Malformed(format!(
                        "no {wanted} in the DeepSpeed checkpoint"
                    ))))
                }
                _ => {
                    return Err(err(LoadError::Malformed(format!(
                        "several {wanted} files and no usable `latest` tag"
                    ))))
                }
            }
        }
    };
    let path = input.join(&rel);
    let map = Mapped::open(&path).map_err(|e| (path.clone(), LoadError::Io(e)))?;
    let file_scan = scan.files.get(&rel).cloned().unwrap_or_default();
    let report = FileReport::new(
        path.display().to_string(),
        file_scan,
        map.len_u64(),
        0,
        opts.fail_on,
    );
    Ok(Opened {
        path,
        map: Some(map),
        report: Some(report),
        dcp: None,
    })
}

fn load_opened<'m>(
    o: &'m Opened,
    opts: &LoadOptions,
) -> std::result::Result<Checkpoint<'m>, LoadError> {
    if let Some(c) = &o.dcp {
        return Ok(Checkpoint {
            format: c.format.clone(),
            root: c.root.clone(),
            report: c.report.clone(),
        });
    }
    let Some(map) = &o.map else {
        return Err(LoadError::Malformed("nothing was opened".into()));
    };
    match &o.report {
        Some(r) => load_scanned(map, r.clone(), opts),
        None => load(map, &o.path.display().to_string(), opts),
    }
}

pub fn inspect(a: &InspectArgs) -> Result<i32> {
    let opts = options(&a.file, a.config.as_deref())?;
    let opened = match open(&a.file, &opts) {
        Ok(o) => o,
        Err((p, e)) => return refuse("cannot inspect", &p, &e, true),
    };
    let ck = match load_opened(&opened, &opts) {
        Ok(c) => c,
        Err(e) => return refuse("cannot inspect", &opened.path, &e, true),
    };
    let root = match &a.key {
        Some(k) => ck
            .root
            .lookup(k)
            .with_context(|| format!("key {k:?} not found in {}", opened.path.display()))?,
        None => &ck.root,
    };
    let tensors = root.tensors();
    let data: u64 = tensors.iter().map(|(_, t)| t.nbytes()).sum();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        InspectFormat::Json => {
            let list: Vec<_> = tensors
                .iter()
                .map(|(n, t)| {
                    let mut d = describe(t);
                    d["name"] = json!(n);
                    d
                })
                .collect();
            let doc = json!({
                "path": opened.path.display().to_string(),
                "format": ck.format,
                "verdict": ck.report.verdict.as_str(),
                "key": a.key,
                "tensor_count": tensors.len(),
                "tensor_bytes": data,
                "storage_count": ck.storage_count(),
                "tensors": list,
                "tree": to_json(root, "", &TensorStyle::Name),
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        InspectFormat::Text => {
            writeln!(
                out,
                "{}: {}, scanned safe",
                opened.path.display(),
                ck.format
            )?;
            let mut lines = 0usize;
            match root {
                v if v.is_container() => {
                    for (k, c) in v.children() {
                        tree(&mut out, &k, c, 1, a.max_items, &mut lines)?;
                    }
                    if v.children().is_empty() {
                        writeln!(out, "  (empty {})", v.type_name())?;
                    }
                }
                v => tree(
                    &mut out,
                    a.key.as_deref().unwrap_or("<root>"),
                    v,
                    1,
                    a.max_items,
                    &mut lines,
                )?,
            }
            writeln!(
                out,
                "{} tensor{} ({}) in {} storage{}",
                tensors.len(),
                if tensors.len() == 1 { "" } else { "s" },
                human_bytes(data),
                ck.storage_count(),
                if ck.storage_count() == 1 { "" } else { "s" },
            )?;
        }
    }
    out.flush()?;
    Ok(0)
}

fn tensor_line(v: &Value<'_>) -> String {
    let Value::Tensor(t) = v else {
        return String::new();
    };
    let mut s = format!(
        "{} {} {:?} {}",
        v.type_name(),
        t.dtype,
        t.shape,
        human_bytes(t.nbytes())
    );
    if t.requires_grad {
        s.push_str(" requires_grad");
    }
    if !t.is_contiguous() {
        s.push_str(&format!(" strides={:?}", t.strides));
    }
    if t.offset != 0 {
        s.push_str(&format!(" offset={}", t.offset));
    }
    if t.conj {
        s.push_str(" conj");
    }
    if t.neg {
        s.push_str(" neg");
    }
    if t.storage.location != "cpu" {
        s.push_str(&format!(" on {}", t.storage.location));
    }
    s
}

fn tree(
    out: &mut dyn Write,
    key: &str,
    v: &Value<'_>,
    depth: usize,
    max_items: usize,
    lines: &mut usize,
) -> Result<()> {
    let pad = "  ".repeat(depth);
    *lines += 1;
    match v {
        Value::Tensor(_) => writeln!(out, "{pad}{key}: {}", tensor_line(v))?,
        _ if v.is_container() => {
            let children = v.children();
            let flat = children
                .iter()
                .all(|(_, c)| !c.is_container() && !matches!(c, Value::Tensor(_)));
            let r = repr(v, 400);
            if flat && r.len() <= 100 {
                match v {
                    Value::Dict(d) if d.class.is_some() => {
                        writeln!(out, "{pad}{key}: {} {r}", v.type_name())?
                    }
                    _ => writeln!(out, "{pad}{key}: {r}")?,
                }
                return Ok(());
            }
            writeln!(
                out,
                "{pad}{key}: {} ({} item{})",
                v.type_name(),
                children.len(),
                if children.len() == 1 { "" } else { "s" }
            )?;
            let limit = if matches!(v, Value::Dict(_)) {
                usize::MAX
            } else {
                max_items
            };
            for (k, c) in children.iter().take(limit) {
                tree(out, k, c, depth + 1, max_items, lines)?;
            }
            if children.len() > limit {
                writeln!(out, "{pad}  ... {} more", children.len() - limit)?;
            }
        }
        _ => writeln!(out, "{pad}{key}: {}", repr(v, 120))?,
    }
    Ok(())
}

/// A temporary file next to the output, removed unless committed.
struct TempOut {
    path: PathBuf,
    file: Option<File>,
}

impl TempOut {
    fn create(out: &Path) -> Result<TempOut> {
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for i in 0..100u32 {
            let path = dir.join(format!(
                ".{base}.ckptguard-{}-{nanos}-{i}.tmp",
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(TempOut {
                        path,
                        file: Some(file),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a temporary file in '{}'", dir.display())
                    })
                }
            }
        }
        bail!("cannot create a temporary file in '{}'", dir.display())
    }

    fn commit(mut self, out: &Path, fsync: bool) -> Result<()> {
        if let Some(f) = self.file.take() {
            if fsync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&self.path, out).with_context(|| {
            format!("cannot rename the output into place at '{}'", out.display())
        })?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        self.file.take();
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn convert(a: &ConvertArgs) -> Result<i32> {
    let opts = options(&a.input, a.config.as_deref())?;
    if a.output.is_dir() {
        bail!("output '{}' is a directory", a.output.display());
    }
    let opened = match open(&a.input, &opts) {
        Ok(o) => o,
        Err((p, e)) => return refuse("cannot convert", &p, &e, false),
    };
    let ck = match load_opened(&opened, &opts) {
        Ok(c) => c,
        Err(e) => return refuse("cannot convert", &opened.path, &e, false),
    };
    let plan = ckptguard_load::safetensors::plan(&ck.root, a.key.as_deref())
        .with_context(|| format!("cannot convert {}", opened.path.display()))?;
    let tmp = TempOut::create(&a.output)?;
    let src = File::open(&opened.path).ok();
    let file = tmp.file.as_ref().context("temporary file closed")?;
    plan.write_file(file, src.as_ref())
        .with_context(|| format!("cannot write '{}'", a.output.display()))?;
    tmp.commit(&a.output, a.fsync)?;
    println!(
        "converted {} -> {} ({} tensor{}, {})",
        opened.path.display(),
        a.output.display(),
        plan.entries.len(),
        if plan.entries.len() == 1 { "" } else { "s" },
        human_bytes(plan.total_len())
    );
    Ok(0)
}
