//! `ckptguard._native`: the Python extension behind the `ckptguard` package.
//!
//! A thin layer over the library crates: it opens and maps files, releases the GIL around
//! scanning, loading and hashing, and turns reports (as the CLI's JSON) and loaded value trees
//! (through the Python-side builder in `ckptguard/_build.py`) into Python objects. Errors are
//! raised as the package's own exception classes (`ckptguard/_errors.py`).

use std::path::{Path, PathBuf};

use ckptguard_load::{LoadError, LoadOptions};
use ckptguard_pickle::{analyze_pickle_at, Analysis, IssueKind, OpErrorKind, PickleEnd};
use ckptguard_scan::config::{split_global, Config as FileConfig};
use ckptguard_scan::{FileReport, Limits, Policy, Report, ScanOptions, Severity, Verdict};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod convert;
mod mapping;

use ckptguard_fs::{fsdir, scan as fs};

use mapping::Mapping;

/// Builds the package's exception for a refusal or failure: `ckptguard._errors._from_native`
/// picks the class from `kind` (`unsafe`, `unsupported`, `malformed`, `io`, `signature`, ...).
/// `flag` is `unreadable_only` for refusals, `invalid` for signature errors.
pub(crate) fn raise(
    py: Python<'_>,
    kind: &str,
    msg: &str,
    report_json: Option<String>,
    flag: bool,
) -> PyErr {
    let exc = py
        .import("ckptguard._errors")
        .and_then(|m| m.getattr("_from_native"))
        .and_then(|f| f.call1((kind, msg, report_json, flag)));
    match exc {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

fn report_json(py: Python<'_>, report: &Report) -> PyResult<String> {
    serde_json::to_string(report).map_err(|e| raise(py, "internal", &e.to_string(), None, false))
}

/// Scan settings: the policy (built-in allowlist, plus a `ckptguard.toml` and extra globals),
/// the limits, and the failing severity.
#[pyclass(frozen, module = "ckptguard._native")]
pub struct Config {
    scan: ScanOptions,
    fail_on: Severity,
}

#[pymethods]
impl Config {
    /// `config`: a `ckptguard.toml` to apply (never looked up implicitly); `allow`: extra
    /// globals (`module.name` or `module:qualname`) to allow; `fail_on`: the lowest severity
    /// that makes a file unsafe (default: the config's, else `high`).
    #[new]
    #[pyo3(signature = (config=None, allow=Vec::new(), fail_on=None))]
    fn new(config: Option<PathBuf>, allow: Vec<String>, fail_on: Option<&str>) -> PyResult<Self> {
        let mut policy = Policy::new();
        let mut limits = Limits::default();
        let mut severity = Severity::High;
        if let Some(path) = &config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                PyValueError::new_err(format!("cannot read config {}: {e}", path.display()))
            })?;
            let cfg = FileConfig::parse(&text).map_err(|e| {
                PyValueError::new_err(format!("invalid config {}: {e}", path.display()))
            })?;
            cfg.apply(&mut policy);
            if let Some(l) = cfg.limits {
                limits = l;
            }
            if let Some(f) = cfg.fail_on {
                severity = f;
            }
        }
        for g in &allow {
            let (m, n) = split_global(g).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "allow: {g:?} is not `module.name` or `module:qualname`"
                ))
            })?;
            policy.allow(&m, &n);
        }
        if let Some(f) = fail_on {
            severity = Severity::parse(f).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "fail_on: unknown severity {f:?} (info, low, medium, high, critical)"
                ))
            })?;
        }
        Ok(Config {
            scan: ScanOptions { policy, limits },
            fail_on: severity,
        })
    }

    /// The failing severity in force.
    #[getter]
    fn fail_on(&self) -> &'static str {
        self.fail_on.as_str()
    }
}

impl Config {
    fn load_options(&self) -> LoadOptions {
        let mut o = LoadOptions::with_scan(self.scan.clone());
        o.fail_on = self.fail_on;
        o
    }
}

/// Bytes handed over from Python: borrowed from a `bytes` object (immutable), copied from any
/// other buffer (which Python code could change while the GIL is released).
enum Data<'py> {
    Borrowed(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

impl Data<'_> {
    fn from_py<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Data<'py>> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Data::Borrowed(b.clone()));
        }
        let buf = PyBuffer::<u8>::get(obj)?;
        Ok(Data::Owned(buf.to_vec(obj.py())?))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Data::Borrowed(b) => b.as_bytes(),
            Data::Owned(v) => v,
        }
    }
}

fn scan_one(data: &[u8], name: &str, cfg: &Config) -> FileReport {
    let scan = ckptguard_scan::scan_source(&data, name, &cfg.scan);
    FileReport::new(
        name.to_string(),
        scan,
        data.len() as u64,
        data.len() as u64,
        cfg.fail_on,
    )
}

fn existing(paths: &[PathBuf]) -> PyResult<()> {
    for p in paths {
        if let Err(e) = std::fs::symlink_metadata(p) {
            return Err(PyFileNotFoundError::new_err(format!(
                "cannot read '{}': {e}",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Scans files and directories (recursively; DCP, DeepSpeed and litdata containers as a whole)
/// and returns the report as JSON — the document `ckptguard scan --format json` prints.
#[pyfunction]
fn scan_paths(py: Python<'_>, paths: Vec<PathBuf>, config: &Config) -> PyResult<String> {
    existing(&paths)?;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let files = py.detach(|| fs::scan_paths(&refs, &config.scan, config.fail_on));
    report_json(py, &Report::new(files, config.fail_on))
}

/// Scans in-memory bytes (`bytes` or any buffer) as one file called `name`; returns the report
/// as JSON.
#[pyfunction]
fn scan_data(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    name: &str,
    config: &Config,
) -> PyResult<String> {
    let data = Data::from_py(data)?;
    let bytes = data.bytes();
    let file = py.detach(|| scan_one(bytes, name, config));
    report_json(py, &Report::new(vec![file], config.fail_on))
}

fn refuse_if_unsafe(py: Python<'_>, report: Report, what: &str) -> PyResult<()> {
    let bad = |f: &&FileReport| matches!(f.verdict, Verdict::Unsafe | Verdict::Error);
    if !report.files.iter().any(|f| bad(&f)) {
        return Ok(());
    }
    // The most telling reason: the first failing finding of any file, else a file's error.
    let failing: Vec<(&FileReport, &ckptguard_scan::Finding)> = report
        .files
        .iter()
        .flat_map(|file| file.findings.iter().map(move |f| (file, f)))
        .filter(|(_, f)| f.blocking || f.severity >= report.fail_on)
        .collect();
    let reason = match failing.first() {
        Some((file, f)) => {
            let mut r = format!(
                "{} {} {}: {}",
                f.severity.as_str(),
                f.code,
                f.name,
                f.message
            );
            if let Some(c) = &f.call {
                r.push_str(&format!(" — {c}"));
            }
            if file.path != what {
                r.push_str(&format!(" (in {})", file.path));
            }
            if failing.len() > 1 {
                r.push_str(&format!(" (and {} more)", failing.len() - 1));
            }
            r
        }
        None => report
            .files
            .iter()
            .filter(bad)
            .map(|f| {
                format!(
                    "{}: {}",
                    f.path,
                    f.error.as_deref().unwrap_or(f.verdict.as_str())
                )
            })
            .next()
            .unwrap_or_default(),
    };
    let msg = format!("refusing to load {what}: it is unsafe: {reason}");
    let json = report_json(py, &report)?;
    Err(raise(py, "unsafe", &msg, Some(json), false))
}

/// Raises `UnsafeCheckpointError` unless the bytes scan `safe` or `skipped` (not a pickle at
/// all: unpickling fails before doing anything). Used by the guard in front of `pickle.loads`
/// and `torch.load` of file objects.
/// `name` is what the scanner is told (a name like `x.pt` makes unparsable bytes unsafe rather
/// than skipped); `label`, if given, names the input in the report and the message.
#[pyfunction]
#[pyo3(signature = (data, name, config, label=None))]
fn check_data(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    name: &str,
    config: &Config,
    label: Option<&str>,
) -> PyResult<()> {
    let data = Data::from_py(data)?;
    let bytes = data.bytes();
    let mut file = py.detach(|| scan_one(bytes, name, config));
    if matches!(file.verdict, Verdict::Safe | Verdict::Skipped) {
        return Ok(());
    }
    if let Some(l) = label {
        file.path = l.to_string();
    }
    let what = file.path.clone();
    refuse_if_unsafe(py, Report::new(vec![file], config.fail_on), &what)
}

/// Whether the analysis of the first pickle stopped only because the input ran out (a longer
/// prefix of the stream might complete it).
fn ran_out(a: &Analysis<'_>) -> bool {
    a.issues.iter().any(|i| {
        i.fatal
            && i.pickle == 0
            && matches!(
                i.kind,
                IssueKind::MissingStop
                    | IssueKind::Decode(OpErrorKind::Truncated)
                    | IssueKind::Decode(OpErrorKind::LengthPastEnd { .. })
                    | IssueKind::FrameOverrun { .. }
            )
    })
}

/// What one `pickle.load` / `pickle.loads` reads: the first pickle of `data` (the bytes from the
/// reader's position). Raises `UnsafeCheckpointError` unless that pickle scans `safe` or
/// `skipped`; returns its length. When `complete` is false, `data` is only a prefix of the
/// stream: `None` means "the first pickle runs past it; call again with more".
#[pyfunction]
#[pyo3(signature = (data, name, config, label=None, complete=true))]
fn check_pickle(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    name: &str,
    config: &Config,
    label: Option<&str>,
    complete: bool,
) -> PyResult<Option<usize>> {
    let data = Data::from_py(data)?;
    let bytes = data.bytes();
    let next = py.detach(|| {
        let mut a = Analysis::new(bytes);
        let end = match analyze_pickle_at(&mut a, 0, &config.scan.limits.pickle) {
            PickleEnd::Stop(end) => end,
            PickleEnd::Failed if !complete && ran_out(&a) => return None,
            // It fails: scan it all, as the unpickler would read it until it fails.
            PickleEnd::Failed => bytes.len(),
        };
        Some((scan_one(&bytes[..end], name, config), end))
    });
    let Some((mut file, end)) = next else {
        return Ok(None);
    };
    if matches!(file.verdict, Verdict::Safe | Verdict::Skipped) {
        return Ok(Some(end));
    }
    if let Some(l) = label {
        file.path = l.to_string();
    }
    let what = file.path.clone();
    refuse_if_unsafe(py, Report::new(vec![file], config.fail_on), &what)?;
    Ok(Some(end))
}

/// Raises `UnsafeCheckpointError` unless every file under `path` (a file, or a directory
/// container scanned as a whole) scans `safe` or `skipped`.
#[pyfunction]
fn check_path(py: Python<'_>, path: PathBuf, config: &Config) -> PyResult<()> {
    existing(std::slice::from_ref(&path))?;
    let files = py.detach(|| fs::scan_paths(&[path.as_path()], &config.scan, config.fail_on));
    refuse_if_unsafe(
        py,
        Report::new(files, config.fail_on),
        &path.display().to_string(),
    )
}

fn load_error(py: Python<'_>, e: LoadError, fail_on: Severity) -> PyErr {
    match e {
        LoadError::Unsafe {
            report,
            summary,
            unreadable_only,
        } => {
            let msg = if unreadable_only {
                format!(
                    "refusing to load {}: it cannot be read completely, so it cannot be cleared: {summary}",
                    report.path
                )
            } else {
                format!("refusing to load {}: it is unsafe: {summary}", report.path)
            };
            match report_json(py, &Report::new(vec![*report], fail_on)) {
                Ok(json) => raise(py, "unsafe", &msg, Some(json), unreadable_only),
                Err(e) => e,
            }
        }
        LoadError::Unsupported(m) => raise(py, "unsupported", &m, None, false),
        LoadError::Malformed(m) => raise(py, "malformed", &m, None, false),
        LoadError::Io(e) => raise(py, "io", &e.to_string(), None, false),
    }
}

/// Loads a checkpoint file (memory-mapped; tensors are views of the mapping) or a DCP /
/// Lightning sharded checkpoint directory, after scanning it; returns `(object, format)`.
#[pyfunction]
fn load_path<'py>(
    py: Python<'py>,
    path: PathBuf,
    config: &Config,
    builder: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, String)> {
    existing(std::slice::from_ref(&path))?;
    let name = path.display().to_string();
    let opts = config.load_options();
    if path.is_dir() {
        return load_dir(py, &path, &name, &opts, builder);
    }
    let mapping = Mapping::open(&path)
        .map_err(|e| raise(py, "io", &format!("cannot read {name}: {e}"), None, false))?;
    let mapping = Bound::new(py, mapping)?;
    let src: &Mapping = mapping.get();
    let ck = py
        .detach(|| ckptguard_load::load(src, &name, &opts))
        .map_err(|e| load_error(py, e, opts.fail_on))?;
    let obj = convert::Converter::new(builder, Some(mapping.clone()))?.value(&ck.root)?;
    Ok((obj, ck.format))
}

fn load_dir<'py>(
    py: Python<'py>,
    path: &Path,
    name: &str,
    opts: &LoadOptions,
    builder: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, String)> {
    let dir = fsdir::FsDir::open(path);
    if ckptguard_scan::dirs::detect(&dir) == Some(ckptguard_scan::dirs::DirKind::Dcp) {
        if let Some((rel, e)) = dir.errors.first() {
            return Err(raise(py, "io", &format!("{name}/{rel}: {e}"), None, false));
        }
        let ck = py
            .detach(|| ckptguard_load::dcp::load_dir(&dir, name, opts))
            .map_err(|e| load_error(py, e, opts.fail_on))?;
        let obj = convert::Converter::new(builder, None)?.value(&ck.root)?;
        return Ok((obj, ck.format));
    }
    // Not loadable: refuse it as unsafe if it is, so that the answer never depends on whether
    // a loader exists; otherwise say what can be done.
    let files = py.detach(|| fs::scan_container(path, &opts.scan, opts.fail_on));
    refuse_if_unsafe(py, Report::new(files, opts.fail_on), name)?;
    let what = match ckptguard_scan::dirs::detect(&dir) {
        Some(kind) => format!(
            "{name}: {} directories are scanned (ckptguard.scan) but not loaded; load one of its checkpoint files",
            kind.format()
        ),
        None => format!("{name} is a directory, not a checkpoint (DCP directories are loaded; pass a file)"),
    };
    Err(raise(py, "unsupported", &what, None, false))
}

/// Loads in-memory bytes as a checkpoint called `name` (copied once into a mapping the tensors
/// are views of), after scanning them; returns `(object, format)`.
#[pyfunction]
fn load_data<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    name: &str,
    config: &Config,
    builder: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, String)> {
    let data = Data::from_py(data)?;
    let bytes = data.bytes();
    let mapping = py
        .detach(|| Mapping::from_bytes(bytes))
        .map_err(|e| raise(py, "io", &e.to_string(), None, false))?;
    drop(data);
    let mapping = Bound::new(py, mapping)?;
    let src: &Mapping = mapping.get();
    let opts = config.load_options();
    let ck = py
        .detach(|| ckptguard_load::load(src, name, &opts))
        .map_err(|e| load_error(py, e, opts.fail_on))?;
    let obj = convert::Converter::new(builder, Some(mapping.clone()))?.value(&ck.root)?;
    Ok((obj, ck.format))
}

fn pem_or_path(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let _ = py;
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let s: String = key.extract()?;
    Ok(s.into_bytes())
}

/// Verifies an OpenSSF model-signing signature (key mode) over a file or directory. Returns a
/// dict describing what was verified; raises `SignatureError` when it does not verify.
#[pyfunction]
#[pyo3(signature = (model, signature, public_key_pem))]
fn verify<'py>(
    py: Python<'py>,
    model: PathBuf,
    signature: PathBuf,
    public_key_pem: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let pem = pem_or_path(py, public_key_pem)?;
    let opts = ckptguard_sign::VerifyOptions::default();
    let v = py
        .detach(|| ckptguard_sign::verify_model(&model, &signature, &pem, &opts))
        .map_err(|e| {
            raise(
                py,
                &format!("signature:{}", e.kind()),
                &e.to_string(),
                None,
                e.is_invalid(),
            )
        })?;
    let d = PyDict::new(py);
    d.set_item("model", model.display().to_string())?;
    d.set_item("signature", signature.display().to_string())?;
    d.set_item("subject_name", v.subject_name)?;
    d.set_item("root_digest", v.root_digest)?;
    d.set_item("files", v.files)?;
    d.set_item("total_bytes", v.total_bytes)?;
    d.set_item("curve", v.curve.name())?;
    d.set_item("key_hint", v.key_hint)?;
    d.set_item("warnings", v.warnings)?;
    Ok(d)
}

/// Signs a file or directory, writing an OpenSSF model-signing bundle (key mode) to
/// `signature`. Returns a dict describing what was signed.
#[pyfunction]
#[pyo3(signature = (model, signature, private_key_pem, password=None))]
fn sign<'py>(
    py: Python<'py>,
    model: PathBuf,
    signature: PathBuf,
    private_key_pem: &Bound<'py, PyAny>,
    password: Option<Vec<u8>>,
) -> PyResult<Bound<'py, PyDict>> {
    let pem = ckptguard_sign::Zeroizing::new(pem_or_path(py, private_key_pem)?);
    let password = password.map(ckptguard_sign::Zeroizing::new);
    let key = ckptguard_sign::PrivateKey::from_pem(&pem, password.as_deref().map(Vec::as_slice))
        .map_err(|e| raise(py, "signature:private_key", &e.to_string(), None, false))?;
    let opts = ckptguard_sign::SignOptions::default();
    let s = py
        .detach(|| ckptguard_sign::sign_model(&model, &signature, &key, &opts))
        .map_err(|e| raise(py, "signature:sign", &e.to_string(), None, false))?;
    let d = PyDict::new(py);
    d.set_item("model", model.display().to_string())?;
    d.set_item("signature", s.signature_path.display().to_string())?;
    d.set_item("subject_name", s.subject_name)?;
    d.set_item("root_digest", s.root_digest)?;
    d.set_item("files", s.files)?;
    d.set_item("total_bytes", s.total_bytes)?;
    d.set_item("curve", s.curve.name())?;
    d.set_item("warnings", s.warnings)?;
    Ok(d)
}

/// A fresh ECDSA key pair: `(private_key_pem, public_key_pem)` (PKCS#8, encrypted when a
/// password is given; SubjectPublicKeyInfo).
#[pyfunction]
#[pyo3(signature = (curve="P-256", password=None))]
fn generate_key(curve: &str, password: Option<Vec<u8>>) -> PyResult<(String, String)> {
    use ckptguard_sign::Curve;
    let curve = match curve.to_ascii_uppercase().replace('_', "-").as_str() {
        "P-256" | "P256" | "SECP256R1" => Curve::P256,
        "P-384" | "P384" | "SECP384R1" => Curve::P384,
        "P-521" | "P521" | "SECP521R1" => Curve::P521,
        _ => {
            return Err(PyValueError::new_err(format!(
                "curve: {curve:?} is not P-256, P-384 or P-521"
            )))
        }
    };
    let key = ckptguard_sign::PrivateKey::generate(curve);
    let private = key
        .to_pkcs8_pem(password.as_deref())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((private.to_string(), key.public_key().to_spki_pem()))
}

/// The version of the Rust crates compiled in.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Config>()?;
    m.add_class::<Mapping>()?;
    m.add_function(wrap_pyfunction!(scan_paths, m)?)?;
    m.add_function(wrap_pyfunction!(scan_data, m)?)?;
    m.add_function(wrap_pyfunction!(check_data, m)?)?;
    m.add_function(wrap_pyfunction!(check_pickle, m)?)?;
    m.add_function(wrap_pyfunction!(check_path, m)?)?;
    m.add_function(wrap_pyfunction!(load_path, m)?)?;
    m.add_function(wrap_pyfunction!(load_data, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(sign, m)?)?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
