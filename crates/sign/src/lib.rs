//! Signing and verification of ML models, interoperable with OpenSSF model signing
//! (`model-signing` 1.x on PyPI, sigstore/model-transparency) in **key mode**.
//!
//! A signature is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope whose payload is an
//! in-toto statement listing every file of the model with its SHA-256 (model_signing's
//! "files" serialization). The ECDSA signature (P-256/SHA-256, P-384/SHA-384 or
//! P-521/SHA-512, DER) covers the DSSE pre-authentication encoding of that payload.
//!
//! ```no_run
//! use std::path::Path;
//! use ckptguard_sign::*;
//! let key = PrivateKey::generate(Curve::P256);
//! let model = Path::new("my-model");
//! let sig = default_signature_path(model);
//! sign_model(model, &sig, &key, &SignOptions::default())?;
//! let pem = key.public_key().to_spki_pem();
//! let ok = verify_model(model, &sig, pem.as_bytes(), &VerifyOptions::default())?;
//! println!("{} files verified", ok.files);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod bundle;
mod error;
mod keys;
mod model;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use bundle::{pae, BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE};
pub use error::{ChangedFile, KeyError, ManifestDiff, ModelError, SignError, VerifyError};
pub use keys::{Curve, PrivateKey, PublicKey, PBKDF2_ITERATIONS};
pub use model::{root_digest, sort_by_components, ManifestEntry, DEFAULT_GIT_IGNORES};
/// Wipes its contents on drop (used for passwords and private key PEM).
pub use p256::elliptic_curve::zeroize::Zeroizing;

use model::{IgnoreSet, Listed, ModelKind};

/// Default name of the signature file (model_signing's CLI default).
pub const DEFAULT_SIGNATURE_NAME: &str = "model.sig";

/// Bundles larger than this are refused before parsing (≈ 100k files of manifest).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// Where the signature of `model` lives by default: `model.sig` inside a directory model,
/// or `model.sig` next to a single-file model.
///
/// model_signing's CLI writes `model.sig` in the *current directory*; run from inside the
/// model directory (the usual way, e.g. a Hugging Face repository), that is `DIR/model.sig`,
/// which both tools then exclude from the signed files (it is recorded in `ignore_paths`).
pub fn default_signature_path(model: &Path) -> PathBuf {
    let cleaned: PathBuf = model.components().collect();
    let cleaned = if cleaned.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cleaned
    };
    if cleaned.is_dir() {
        cleaned.join(DEFAULT_SIGNATURE_NAME)
    } else {
        match cleaned.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join(DEFAULT_SIGNATURE_NAME),
            _ => PathBuf::from(DEFAULT_SIGNATURE_NAME),
        }
    }
}

/// Options for [`sign_model`].
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Paths to leave out of the signature, **relative to the model directory** (a directory
    /// excludes everything below it). Ignored for single-file models, as in model_signing.
    pub ignore_paths: Vec<PathBuf>,
    /// Also ignore `.git`, `.gitattributes`, `.github`, `.gitignore` (default: true).
    pub ignore_git_paths: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            ignore_paths: Vec::new(),
            ignore_git_paths: true,
        }
    }
}

/// Options for [`verify_model`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Extra paths, relative to the model directory, whose presence is tolerated although
    /// the signature does not list them. Paths recorded in the signature's `ignore_paths`,
    /// the git defaults and the signature file itself are always tolerated. A file the
    /// signature lists is always checked, whatever the ignore rules say.
    pub ignore_paths: Vec<PathBuf>,
    /// Tolerate unsigned `.git`, `.gitattributes`, `.github`, `.gitignore` (default: true).
    pub ignore_git_paths: bool,
    /// Refuse signature files larger than this many bytes, before parsing.
    pub max_bundle_bytes: u64,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            ignore_paths: Vec::new(),
            ignore_git_paths: true,
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}

/// Result of a successful [`sign_model`].
#[derive(Debug, Clone)]
pub struct SignedModel {
    /// Where the bundle was written.
    pub signature_path: PathBuf,
    /// in-toto subject name (model directory or file name; informative only).
    pub subject_name: String,
    /// Hex SHA-256 over the ordered file digests (the in-toto subject digest).
    pub root_digest: String,
    /// Number of files signed.
    pub files: usize,
    /// Total bytes hashed.
    pub total_bytes: u64,
    /// `ignore_paths` recorded in the signature.
    pub ignore_paths: Vec<String>,
    /// Size of the written bundle.
    pub bundle_bytes: usize,
    /// Curve of the signing key.
    pub curve: Curve,
    /// Non-fatal remarks.
    pub warnings: Vec<String>,
}

/// Result of a successful [`verify_model`].
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    /// in-toto subject name recorded by the signer (informative only).
    pub subject_name: String,
    /// Hex SHA-256 over the ordered file digests.
    pub root_digest: String,
    /// Number of files verified.
    pub files: usize,
    /// Total bytes hashed.
    pub total_bytes: u64,
    /// The verified manifest, in signed order.
    pub entries: Vec<ManifestEntry>,
    /// Key hint found in the bundle (None for older bundles without one).
    pub key_hint: Option<String>,
    /// Curve of the verifying key.
    pub curve: Curve,
    /// `ignore_paths` recorded in the signature.
    pub ignore_paths: Vec<String>,
    /// Non-fatal remarks (e.g. missing key hint, unusable recorded ignore path).
    pub warnings: Vec<String>,
}

fn user_ignores(paths: &[PathBuf]) -> Result<IgnoreSet, ModelError> {
    let mut set = IgnoreSet::default();
    for p in paths {
        set.add(model::normalize_ignore(p)?);
    }
    Ok(set)
}

/// Hash `model` (file or directory) and return its manifest, ordered like model_signing's.
/// `signature` (if inside the model directory) is excluded like the other ignore paths.
pub fn hash_model(
    model: &Path,
    signature: Option<&Path>,
    opts: &SignOptions,
) -> Result<Vec<ManifestEntry>, ModelError> {
    let (_, ignore, _) = sign_ignores(model, signature, opts)?;
    Ok(model::hash_model(model, &ignore, None)?.1)
}

/// (kind, ignore set applied, ignore set recorded)
fn sign_ignores(
    model: &Path,
    signature: Option<&Path>,
    opts: &SignOptions,
) -> Result<(ModelKind, IgnoreSet, Vec<String>), ModelError> {
    let kind = model::model_kind(model)?;
    let mut ignore = user_ignores(&opts.ignore_paths)?;
    if opts.ignore_git_paths {
        for g in DEFAULT_GIT_IGNORES {
            ignore.add(vec![g.to_string()]);
        }
    }
    if kind == ModelKind::Dir {
        if let Some(rel) = signature.and_then(|s| model::relative_inside(model, s)) {
            ignore.add(rel);
        }
    }
    // model_signing records the git defaults even for single files, but user paths only
    // when they lie inside a model directory.
    let recorded = if kind == ModelKind::Dir {
        ignore.to_strings()
    } else {
        let mut g = IgnoreSet::default();
        if opts.ignore_git_paths {
            for x in DEFAULT_GIT_IGNORES {
                g.add(vec![x.to_string()]);
            }
        }
        g.to_strings()
    };
    Ok((kind, ignore, recorded))
}

/// Build the signature bundle for `model` without writing it. `signature` is where it will
/// be written (excluded from the signed files if inside the model directory).
pub fn sign_model_to_bytes(
    model: &Path,
    signature: &Path,
    key: &PrivateKey,
    opts: &SignOptions,
) -> Result<(Vec<u8>, SignedModel), SignError> {
    let (kind, ignore, recorded) = sign_ignores(model, Some(signature), opts)?;
    let mut warnings = Vec::new();
    if kind == ModelKind::File && !opts.ignore_paths.is_empty() {
        warnings.push("ignore paths have no effect on a single-file model".to_string());
    }
    let (_, entries) = model::hash_model(model, &ignore, None)?;
    let root = root_digest(entries.iter().map(|e| &e.digest));
    let subject_name = model::model_name(model);
    let payload = bundle::statement_json(&subject_name, &root, &recorded, &entries);
    let sig = key
        .sign_der(&pae(PAYLOAD_TYPE, &payload))
        .map_err(SignError::Crypto)?;
    let bytes = bundle::bundle_json(&payload, &sig, &key.public_key().hint());
    if bytes.len() as u64 > DEFAULT_MAX_BUNDLE_BYTES {
        warnings.push(format!(
            "the signature is {} bytes, above the {}-byte default limit of `ckptguard verify` (raise it with VerifyOptions::max_bundle_bytes)",
            bytes.len(),
            DEFAULT_MAX_BUNDLE_BYTES
        ));
    }
    let info = SignedModel {
        signature_path: signature.to_path_buf(),
        subject_name,
        root_digest: keys::hex(&root),
        files: entries.len(),
        total_bytes: entries.iter().map(|e| e.size).sum(),
        ignore_paths: recorded,
        bundle_bytes: bytes.len(),
        curve: key.curve(),
        warnings,
    };
    Ok((bytes, info))
}

/// Sign `model` (a file or a directory) and write the bundle to `signature` atomically
/// (temporary file + rename). An existing signature file is replaced.
pub fn sign_model(
    model: &Path,
    signature: &Path,
    key: &PrivateKey,
    opts: &SignOptions,
) -> Result<SignedModel, SignError> {
    let (bytes, info) = sign_model_to_bytes(model, signature, key, opts)?;
    write_atomic(signature, &bytes).map_err(|source| SignError::Write {
        path: signature.to_path_buf(),
        source,
    })?;
    Ok(info)
}

/// True if `path` exists and does not look like a Sigstore bundle (so must not be replaced).
fn is_foreign_file(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    if f.take(512).read_to_end(&mut head).is_err() {
        return true;
    }
    let text = String::from_utf8_lossy(&head);
    !(text.trim_start().starts_with('{') && text.contains("application/vnd.dev.sigstore.bundle"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory (give a file path for the signature)",
        ));
    }
    if is_foreign_file(path) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the file exists and is not a signature bundle; refusing to overwrite it",
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Read the bundle, refusing oversized files before reading them completely.
fn read_bundle(path: &Path, limit: u64) -> Result<Vec<u8>, VerifyError> {
    let io_err = |source| VerifyError::SignatureIo {
        path: path.to_path_buf(),
        source,
    };
    let f = fs::File::open(path).map_err(io_err)?;
    let md = f.metadata().map_err(io_err)?;
    if md.is_dir() {
        return Err(io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory, not a signature file",
        )));
    }
    if md.len() > limit {
        return Err(VerifyError::BundleTooLarge {
            path: path.to_path_buf(),
            size: md.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    f.take(limit + 1).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(VerifyError::BundleTooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Verify `model` against the bundle at `signature` with a PEM public key (SPKI; an
/// unencrypted private key PEM is accepted too and its public half used).
pub fn verify_model(
    model: &Path,
    signature: &Path,
    public_key_pem: &[u8],
    opts: &VerifyOptions,
) -> Result<VerifiedModel, VerifyError> {
    let key = PublicKey::from_pem(public_key_pem)?;
    verify_model_with_key(model, signature, &key, opts)
}

/// What a signature bundle claims, parsed WITHOUT checking its signature: for tools that list a
/// bundle's contents, and for fuzzing the parser. Never trust it without [`verify_model`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedBundle {
    /// `verificationMaterial.publicKey.hint`, if present.
    pub hint: Option<String>,
    /// Number of signatures in the envelope.
    pub signatures: usize,
    /// The statement's subject name.
    pub subject_name: String,
    /// Ignore paths recorded by the signer.
    pub ignore_paths: Vec<String>,
    /// Files and their hex SHA-256 digests, in signed order.
    pub files: Vec<(String, String)>,
}

/// Parses a bundle and its in-toto statement without verifying anything cryptographic.
pub fn parse_unverified(bytes: &[u8]) -> Result<UnverifiedBundle, VerifyError> {
    let parsed = bundle::parse_bundle(bytes)?;
    let m = bundle::parse_statement(&parsed.payload)?;
    let hex = |d: &[u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(UnverifiedBundle {
        hint: parsed.hint,
        signatures: parsed.signatures.len(),
        subject_name: m.subject_name,
        ignore_paths: m.ignore_paths,
        files: m
            .resources
            .iter()
            .map(|(n, d)| (n.clone(), hex(d)))
            .collect(),
    })
}

/// Check a bundle's authenticity (key hint, signature) and return the signed payload.
fn authenticate(bytes: &[u8], key: &PublicKey) -> Result<bundle::ParsedBundle, VerifyError> {
    let parsed = bundle::parse_bundle(bytes)?;
    let key_hint = key.hint();
    if let Some(h) = &parsed.hint {
        if *h != key_hint {
            return Err(VerifyError::WrongKey {
                bundle_hint: h.clone(),
                key_hint,
            });
        }
    }
    let msg = pae(PAYLOAD_TYPE, &parsed.payload);
    let mut last = String::new();
    let ok = parsed
        .signatures
        .iter()
        .any(|s| match key.verify_der(&msg, s) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        });
    if !ok {
        return Err(VerifyError::BadSignature(last));
    }
    Ok(parsed)
}

/// Like [`verify_model`], with an already parsed key.
pub fn verify_model_with_key(
    model: &Path,
    signature: &Path,
    key: &PublicKey,
    opts: &VerifyOptions,
) -> Result<VerifiedModel, VerifyError> {
    // Cheap check first so that a mistyped model path is reported as such.
    let kind = model::model_kind(model)?;
    let bytes = read_bundle(signature, opts.max_bundle_bytes)?;
    let parsed = authenticate(&bytes, key)?;
    let signed = bundle::parse_statement(&parsed.payload)?;
    let computed = root_digest(signed.resources.iter().map(|(_, d)| d));
    if computed != signed.subject_digest {
        return Err(VerifyError::ManifestInconsistent {
            subject: keys::hex(&signed.subject_digest),
            computed: keys::hex(&computed),
        });
    }

    let mut warnings = Vec::new();
    if parsed.hint.is_none() {
        warnings.push("the bundle has no public key hint (older model_signing format)".into());
    }

    // Shape first: a single-file signature lists exactly ".".
    let signed_single = signed.resources.len() == 1 && signed.resources[0].0 == ".";
    match (signed_single, kind) {
        (true, ModelKind::Dir) => {
            return Err(VerifyError::ModelKindMismatch {
                path: model.to_path_buf(),
                signed: "single file",
                found: "directory",
            })
        }
        (false, ModelKind::File) => {
            return Err(VerifyError::ModelKindMismatch {
                path: model.to_path_buf(),
                signed: if signed.resources.is_empty() {
                    "model with no files"
                } else {
                    "directory"
                },
                found: "single file",
            })
        }
        _ => {}
    }

    let mut ignore = user_ignores(&opts.ignore_paths)?;
    for p in &signed.ignore_paths {
        match model::normalize_recorded_ignore(p) {
            Some(c) => ignore.add(c),
            // Single-file models have no use for ignore paths (model_signing may record ".").
            None if kind == ModelKind::File => {}
            None => warnings.push(format!(
                "recorded ignore path {p:?} cannot apply inside the model and was not used"
            )),
        }
    }
    if opts.ignore_git_paths {
        for g in DEFAULT_GIT_IGNORES {
            ignore.add(vec![g.to_string()]);
        }
    }
    if kind == ModelKind::Dir {
        if let Some(rel) = model::relative_inside(model, signature) {
            ignore.add(rel);
        }
    }
    let listed = Listed::new(signed.resources.iter().map(|(n, _)| n.as_str()));
    let (_, actual) = model::hash_model(model, &ignore, Some(&listed))?;

    let diff = diff_manifests(&signed.resources, &actual);
    if !diff.is_empty() {
        return Err(VerifyError::Mismatch(diff));
    }
    // Report entries in signed order.
    let by_name: std::collections::HashMap<&str, &ManifestEntry> =
        actual.iter().map(|e| (e.name.as_str(), e)).collect();
    let entries: Vec<ManifestEntry> = signed
        .resources
        .iter()
        .map(|(n, _)| by_name[n.as_str()].clone())
        .collect();
    Ok(VerifiedModel {
        subject_name: signed.subject_name,
        root_digest: keys::hex(&signed.subject_digest),
        files: entries.len(),
        total_bytes: entries.iter().map(|e| e.size).sum(),
        entries,
        key_hint: parsed.hint,
        curve: key.curve(),
        ignore_paths: signed.ignore_paths,
        warnings,
    })
}

fn diff_manifests(expected: &[(String, [u8; 32])], actual: &[ManifestEntry]) -> ManifestDiff {
    use std::collections::HashMap;
    let exp: HashMap<&str, &[u8; 32]> = expected.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let act: HashMap<&str, &[u8; 32]> = actual
        .iter()
        .map(|e| (e.name.as_str(), &e.digest))
        .collect();
    let mut diff = ManifestDiff::default();
    for e in actual {
        match exp.get(e.name.as_str()) {
            None => diff.added.push(e.name.clone()),
            Some(d) if **d != e.digest => diff.changed.push(ChangedFile {
                name: e.name.clone(),
                expected: keys::hex(*d),
                actual: keys::hex(&e.digest),
            }),
            Some(_) => {}
        }
    }
    for (n, _) in expected {
        if !act.contains_key(n.as_str()) {
            diff.missing.push(n.clone());
        }
    }
    let key = |s: &String| s.split('/').map(str::to_string).collect::<Vec<_>>();
    diff.added.sort_by_key(key);
    diff.missing.sort_by_key(key);
    diff.changed
        .sort_by(|a, b| a.name.split('/').cmp(b.name.split('/')));
    diff
}

#[cfg(test)]
mod tests;
