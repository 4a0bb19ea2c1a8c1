//! `ckptguard keygen | sign | verify`: OpenSSF model signing (model_signing 1.x key mode)
//! compatible signatures. The format and semantics live in the `ckptguard-sign` crate;
//! see docs/signing.md.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ckptguard_sign::{
    default_signature_path, sign_model, verify_model_with_key, Curve, KeyError, PrivateKey,
    PublicKey, SignOptions, VerifyError, VerifyOptions, Zeroizing,
};
use clap::{Args, ValueEnum};
use serde_json::json;

/// Output format of `sign` and `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON object on stdout.
    Json,
}

/// Elliptic curve for `keygen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CurveArg {
    /// NIST P-256 (secp256r1) with SHA-256.
    P256,
    /// NIST P-384 (secp384r1) with SHA-384.
    P384,
    /// NIST P-521 (secp521r1) with SHA-512.
    P521,
}

impl From<CurveArg> for Curve {
    fn from(c: CurveArg) -> Curve {
        match c {
            CurveArg::P256 => Curve::P256,
            CurveArg::P384 => Curve::P384,
            CurveArg::P521 => Curve::P521,
        }
    }
}

/// Where a private key password comes from (never the command line itself).
#[derive(Args, Debug, Default)]
pub struct PasswordArgs {
    /// Read the private key password from FILE (first line; a trailing newline is dropped).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// Read the private key password from environment variable VAR.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    long_about = "Generate an ECDSA key pair for `ckptguard sign` / `model_signing sign key`.\n\n\
Writes PREFIX.pem (private key, PKCS#8 PEM, file mode 0600; encrypted with PBES2 \
PBKDF2-HMAC-SHA256 + AES-256-CBC when a password is given) and PREFIX.pub.pem \
(SubjectPublicKeyInfo PEM, to hand to verifiers). Existing files are never overwritten \
unless --force is given."
)]
pub struct KeygenArgs {
    /// Output prefix: writes PREFIX.pem and PREFIX.pub.pem (a trailing ".pem" is dropped).
    #[arg(short, long, value_name = "PREFIX")]
    pub output: PathBuf,
    /// Curve (and hash) of the key.
    #[arg(long, value_enum, default_value_t = CurveArg::P256)]
    pub curve: CurveArg,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
#[command(
    long_about = "Sign a model file or directory with an ECDSA private key.\n\n\
The signature is a Sigstore bundle (v0.3) with a DSSE envelope and an in-toto statement \
listing every file and its SHA-256, exactly as `model_signing sign key` writes it, so \
`model_signing verify key` accepts it. Symbolic links are refused; hidden files are signed; \
.git, .gitattributes, .github, .gitignore and the signature file itself are left out."
)]
pub struct SignArgs {
    /// Model file or directory to sign.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Private key PEM: PKCS#8 ("PRIVATE KEY"), encrypted PKCS#8 or SEC1 ("EC PRIVATE KEY").
    #[arg(short, long, value_name = "KEY")]
    pub key: PathBuf,
    /// Signature file to write [default: MODEL/model.sig for a directory, model.sig next to
    /// a single file].
    #[arg(short, long, value_name = "SIG")]
    pub signature: Option<PathBuf>,
    /// Leave PATH (a file or a directory) out of the signature. An ordinary path (relative to
    /// the current directory, as with model_signing) that must lie inside the model
    /// directory. Repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<PathBuf>,
    /// Sign .git, .gitattributes, .github and .gitignore too (ignored by default).
    #[arg(long)]
    pub no_ignore_git_paths: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
#[command(long_about = "Verify a model against its signature.\n\n\
Accepts signatures written by `ckptguard sign` and by `model_signing sign key` (Sigstore \
bundle v0.3, DSSE, in-toto, files/sha256). Checks the key hint, the ECDSA signature, the \
statement, then re-hashes the model: every signed file must be present and unchanged, and no \
unsigned file may be present except ignored ones (recorded ignore paths, git files, the \
signature itself, --ignore).\n\n\
Exit status: 0 valid, 1 invalid (what differs is printed), 2 could not verify (usage, I/O, \
unusable key).")]
pub struct VerifyArgs {
    /// Model file or directory to verify.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Public key PEM (SubjectPublicKeyInfo "PUBLIC KEY"; an unencrypted private key also works).
    #[arg(short, long, value_name = "PUBKEY")]
    pub key: PathBuf,
    /// Signature file [default: MODEL/model.sig for a directory, model.sig next to a file].
    #[arg(short, long, value_name = "SIG")]
    pub signature: Option<PathBuf>,
    /// Tolerate an unsigned PATH (file or directory) in the model. Resolved like an ordinary
    /// path (relative to the current directory); must lie inside the model directory.
    /// Signed files are always checked. Repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<PathBuf>,
    /// Do not tolerate unsigned .git, .gitattributes, .github, .gitignore.
    #[arg(long)]
    pub no_ignore_git_paths: bool,
    /// Refuse signature files larger than BYTES.
    #[arg(long, value_name = "BYTES", default_value_t = ckptguard_sign::DEFAULT_MAX_BUNDLE_BYTES)]
    pub max_signature_size: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

// ------------------------------------------------------------------ helpers

fn read_password(a: &PasswordArgs) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if let Some(f) = &a.password_file {
        let data = Zeroizing::new(
            fs::read(f).with_context(|| format!("cannot read password file {}", f.display()))?,
        );
        let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let mut line = &data[..line_end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        return Ok(Some(Zeroizing::new(line.to_vec())));
    }
    if let Some(var) = &a.password_env {
        let v = std::env::var_os(var)
            .ok_or_else(|| anyhow!("environment variable {var} (--password-env) is not set"))?;
        return Ok(Some(Zeroizing::new(v.into_encoded_bytes())));
    }
    Ok(None)
}

fn load_private_key(path: &Path, pw: &PasswordArgs) -> Result<PrivateKey> {
    let data = Zeroizing::new(
        fs::read(path).with_context(|| format!("cannot read private key {}", path.display()))?,
    );
    let password = read_password(pw)?;
    PrivateKey::from_pem(&data, password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| anyhow!("private key {}: {e}", path.display()))
}

fn load_public_key(path: &Path) -> Result<PublicKey> {
    let data =
        fs::read(path).with_context(|| format!("cannot read public key {}", path.display()))?;
    PublicKey::from_pem(&data).map_err(|e: KeyError| anyhow!("public key {}: {e}", path.display()))
}

/// Lexically normalise an absolute path (resolve `.` and `..` without the filesystem).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Resolve symlinks in the longest existing prefix of `p` (which need not exist).
fn resolve_prefix(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(c) = fs::canonicalize(existing) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Resolve an absolute path's directories through the filesystem, but not its final
/// component (so that a symlink inside the model can itself be ignored).
fn resolve_lenient(p: &Path) -> PathBuf {
    let p = lexical(p);
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => resolve_prefix(parent).join(name),
        _ => resolve_prefix(&p),
    }
}

/// Turn `--ignore` paths (ordinary paths, like model_signing's CLI) into paths relative to
/// the model directory. A path outside the model is an error, not silently dropped.
fn model_relative_ignores(model: &Path, ignores: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if ignores.is_empty() {
        return Ok(Vec::new());
    }
    if !model.is_dir() {
        eprintln!("ckptguard: warning: --ignore has no effect on a single-file model");
        return Ok(Vec::new());
    }
    let root = fs::canonicalize(model)
        .with_context(|| format!("cannot resolve model directory {}", model.display()))?;
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let mut out = Vec::new();
    for p in ignores {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            cwd.join(p)
        };
        let resolved = resolve_lenient(&abs);
        match resolved.strip_prefix(&root) {
            Ok(rel) if rel.as_os_str().is_empty() => {
                bail!(
                    "--ignore {}: that is the model directory itself",
                    p.display()
                )
            }
            Ok(rel) => out.push(rel.to_path_buf()),
            Err(_) => bail!(
                "--ignore {}: not inside the model directory {} (ignore paths are ordinary paths, \
                 relative to the current directory; did you mean {}?)",
                p.display(),
                model.display(),
                model.join(p).display()
            ),
        }
    }
    Ok(out)
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(16)]
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn create_key_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<()> {
    if force {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists (use --force to overwrite)",
                path.display()
            )
        } else {
            anyhow!("cannot create {}: {e}", path.display())
        }
    })?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

// ------------------------------------------------------------------ commands

/// `ckptguard keygen`.
pub fn keygen(a: &KeygenArgs) -> Result<i32> {
    let prefix = {
        let s = a.output.as_os_str().to_string_lossy();
        match s.strip_suffix(".pem") {
            Some(stem) if !stem.is_empty() => PathBuf::from(stem),
            _ => a.output.clone(),
        }
    };
    if prefix.as_os_str().is_empty() {
        bail!("--output must not be empty");
    }
    let priv_path = PathBuf::from(format!("{}.pem", prefix.display()));
    let pub_path = PathBuf::from(format!("{}.pub.pem", prefix.display()));
    if !a.force {
        for p in [&priv_path, &pub_path] {
            if p.exists() {
                bail!("{} already exists (use --force to overwrite)", p.display());
            }
        }
    }
    let password = read_password(&a.password)?;
    if password.as_ref().is_some_and(|p| p.is_empty()) {
        bail!("the password is empty; give a non-empty password or none at all");
    }
    let key = PrivateKey::generate(a.curve.into());
    let pem = key
        .to_pkcs8_pem(password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| anyhow!("{e}"))?;
    let public = key.public_key();
    create_key_file(&priv_path, pem.as_bytes(), 0o600, a.force)?;
    create_key_file(&pub_path, public.to_spki_pem().as_bytes(), 0o644, a.force)?;
    println!(
        "private key: {} ({}, PKCS#8{})",
        priv_path.display(),
        key.curve(),
        if password.is_some() {
            ", encrypted"
        } else {
            ""
        }
    );
    println!(
        "public key:  {} (hint {})",
        pub_path.display(),
        public.hint()
    );
    Ok(0)
}

/// `ckptguard sign`.
pub fn sign(a: &SignArgs) -> Result<i32> {
    // Fail on the key before spending time hashing.
    let key = load_private_key(&a.key, &a.password)?;
    let signature = a
        .signature
        .clone()
        .unwrap_or_else(|| default_signature_path(&a.model));
    let opts = SignOptions {
        ignore_paths: model_relative_ignores(&a.model, &a.ignore)?,
        ignore_git_paths: !a.no_ignore_git_paths,
    };
    let s = sign_model(&a.model, &signature, &key, &opts)
        .map_err(|e| anyhow!("cannot sign {}: {e}", a.model.display()))?;
    for w in &s.warnings {
        eprintln!("ckptguard: warning: {w}");
    }
    match a.format {
        OutputFormat::Json => print_json(&json!({
            "model": a.model,
            "signature": s.signature_path,
            "subject_name": s.subject_name,
            "root_digest": s.root_digest,
            "files": s.files,
            "bytes": s.total_bytes,
            "curve": s.curve.name(),
            "key_hint": key.public_key().hint(),
            "ignore_paths": s.ignore_paths,
            "warnings": s.warnings,
        }))?,
        OutputFormat::Text => {
            println!(
                "signed {}: {} file{}, {}, {} key {}",
                a.model.display(),
                s.files,
                if s.files == 1 { "" } else { "s" },
                ckptguard_load::human_bytes(s.total_bytes),
                s.curve,
                short(&key.public_key().hint())
            );
            println!("signature: {}", s.signature_path.display());
        }
    }
    Ok(0)
}

fn error_json(e: &VerifyError) -> serde_json::Value {
    let mut err = json!({ "kind": e.kind(), "message": e.to_string() });
    if let VerifyError::Mismatch(d) = e {
        err["changed"] = d
            .changed
            .iter()
            .map(|c| json!({"name": c.name, "expected": c.expected, "actual": c.actual}))
            .collect();
        err["added"] = json!(d.added);
        err["missing"] = json!(d.missing);
    }
    err
}

/// `ckptguard verify`.
pub fn verify(a: &VerifyArgs) -> Result<i32> {
    let signature = a
        .signature
        .clone()
        .unwrap_or_else(|| default_signature_path(&a.model));
    let key = load_public_key(&a.key)?;
    let opts = VerifyOptions {
        ignore_paths: model_relative_ignores(&a.model, &a.ignore)?,
        ignore_git_paths: !a.no_ignore_git_paths,
        max_bundle_bytes: a.max_signature_size,
    };
    match verify_model_with_key(&a.model, &signature, &key, &opts) {
        Ok(v) => {
            for w in &v.warnings {
                eprintln!("ckptguard: warning: {w}");
            }
            match a.format {
                OutputFormat::Json => print_json(&json!({
                    "valid": true,
                    "model": a.model,
                    "signature": signature,
                    "subject_name": v.subject_name,
                    "root_digest": v.root_digest,
                    "files": v.files,
                    "bytes": v.total_bytes,
                    "curve": v.curve.name(),
                    "key_hint": v.key_hint,
                    "ignore_paths": v.ignore_paths,
                    "warnings": v.warnings,
                }))?,
                OutputFormat::Text => println!(
                    "OK: {} matches {} ({} file{}, {}, {} key {}, signed as {:?})",
                    a.model.display(),
                    signature.display(),
                    v.files,
                    if v.files == 1 { "" } else { "s" },
                    ckptguard_load::human_bytes(v.total_bytes),
                    v.curve,
                    short(&key.hint()),
                    v.subject_name
                ),
            }
            Ok(0)
        }
        Err(e) => {
            if a.format == OutputFormat::Json {
                print_json(&json!({
                    "valid": false,
                    "model": a.model,
                    "signature": signature,
                    "error": error_json(&e),
                }))?;
            }
            if !e.is_invalid() {
                // Could not verify at all: main prints this and exits 2.
                return Err(anyhow!("cannot verify {}: {e}", a.model.display()));
            }
            if a.format == OutputFormat::Text {
                eprintln!("ckptguard: INVALID: {e}");
                if let VerifyError::Mismatch(d) = &e {
                    for c in &d.changed {
                        eprintln!(
                            "  changed  {}  (signed sha256 {}, found {})",
                            c.name,
                            short(&c.expected),
                            short(&c.actual)
                        );
                    }
                    for n in &d.added {
                        eprintln!("  added    {n}  (not in the signature)");
                    }
                    for n in &d.missing {
                        eprintln!("  missing  {n}");
                    }
                }
            }
            Ok(1)
        }
    }
}
