//! Error types. Every message says what is wrong and, where it helps, what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A key could not be read, decoded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read key file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The input contains no PEM block at all.
    #[error("not a PEM file (no '-----BEGIN ...-----' block found); keys must be PEM encoded")]
    NotPem,
    /// A PEM block is present but its base64/DER content is broken.
    #[error("malformed PEM/DER in '{label}' block: {reason}")]
    Malformed { label: String, reason: String },
    /// PEM contains blocks, but none of the kind that was asked for.
    #[error("expected {expected}, but the PEM file contains {found}")]
    WrongPemKind {
        expected: &'static str,
        found: String,
    },
    /// RSA, Ed25519, DSA, ... (model_signing key mode only supports ECDSA).
    #[error("unsupported key type {0}: only ECDSA keys on P-256, P-384 or P-521 are supported (as in model_signing key mode)")]
    UnsupportedKeyType(String),
    /// An EC key on a curve other than P-256/P-384/P-521.
    #[error("unsupported elliptic curve {0}: only P-256 (secp256r1), P-384 (secp384r1) and P-521 (secp521r1) are supported")]
    UnsupportedCurve(String),
    /// The key is encrypted and no password was supplied.
    #[error(
        "the private key is encrypted; supply its password (--password-file or --password-env)"
    )]
    PasswordRequired,
    /// Decryption failed: almost always a wrong password.
    #[error("cannot decrypt the private key: wrong password (or corrupted key)")]
    WrongPassword,
    /// Legacy OpenSSL "Proc-Type: 4,ENCRYPTED" SEC1 keys are not supported.
    #[error("legacy OpenSSL-encrypted 'EC PRIVATE KEY' is not supported; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY -out KEY.p8.pem`")]
    LegacyEncryption,
    /// Encrypted PKCS#8 with an algorithm we do not implement.
    #[error(
        "unsupported private key encryption: {0} (supported: PBES2 with PBKDF2/scrypt and AES-CBC)"
    )]
    UnsupportedEncryption(String),
    /// Error while encoding a key (should not happen).
    #[error("cannot encode key: {0}")]
    Encode(String),
    /// A curve mismatch between key and expectation.
    #[error("key is on {found}, expected {expected}")]
    CurveMismatch {
        expected: &'static str,
        found: &'static str,
    },
}

/// Problems with the model on disk (shared by signing and verification).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model path {0} does not exist")]
    NotFound(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Symbolic links are refused (model_signing default: allow_symlinks=false).
    #[error("{0} is a symbolic link; symlinks are refused (a link could point outside the model)")]
    Symlink(PathBuf),
    /// FIFOs, sockets, devices.
    #[error("{0} is not a regular file or directory (special files are refused)")]
    SpecialFile(PathBuf),
    /// A file name that is not valid UTF-8 cannot be put in the JSON manifest.
    #[error("{0}: file name is not valid UTF-8 and cannot be recorded in a signature")]
    NonUtf8Name(PathBuf),
    /// File replaced or changed type while hashing.
    #[error("{0} changed while it was being hashed")]
    ChangedDuringHashing(PathBuf),
    /// An ignore path that cannot be interpreted.
    #[error("invalid ignore path {path}: {reason}")]
    BadIgnorePath { path: String, reason: String },
}

impl ModelError {
    /// True if this describes the *model content* (a property of what is on disk that
    /// makes it unverifiable), false for I/O and usage problems.
    pub fn is_content_problem(&self) -> bool {
        matches!(
            self,
            ModelError::Symlink(_)
                | ModelError::SpecialFile(_)
                | ModelError::NonUtf8Name(_)
                | ModelError::ChangedDuringHashing(_)
        )
    }
}

/// Signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot write signature {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("signing failed: {0}")]
    Crypto(String),
}

/// One file whose content differs from what was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    pub name: String,
    /// Hex SHA-256 recorded in the signature.
    pub expected: String,
    /// Hex SHA-256 of the file on disk.
    pub actual: String,
}

/// Exactly how the model on disk differs from the signed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    /// Files present in both, with different content.
    pub changed: Vec<ChangedFile>,
    /// Files on disk that the signature does not list.
    pub added: Vec<String>,
    /// Files the signature lists that are not on disk.
    pub missing: Vec<String>,
}

impl ManifestDiff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.added.is_empty() && self.missing.is_empty()
    }
}

const MAX_NAMES_IN_MESSAGE: usize = 10;

fn write_names<'a>(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    names: impl ExactSizeIterator<Item = &'a str>,
) -> fmt::Result {
    let n = names.len();
    write!(f, "{n} {what} (")?;
    for (i, name) in names.take(MAX_NAMES_IN_MESSAGE).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{name:?}")?;
    }
    if n > MAX_NAMES_IN_MESSAGE {
        write!(f, ", … and {} more", n - MAX_NAMES_IN_MESSAGE)?;
    }
    f.write_str(")")
}

impl fmt::Display for ManifestDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            Ok(())
        };
        if !self.changed.is_empty() {
            sep(f)?;
            write_names(f, "changed", self.changed.iter().map(|c| c.name.as_str()))?;
        }
        if !self.added.is_empty() {
            sep(f)?;
            write_names(f, "added", self.added.iter().map(String::as_str))?;
        }
        if !self.missing.is_empty() {
            sep(f)?;
            write_names(f, "missing", self.missing.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

/// Verification failed. [`VerifyError::is_invalid`] separates "the model/signature is not
/// valid" (exit 1) from "could not even check" (I/O, unusable key; exit 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature file could not be read (missing, permission, ...).
    #[error("cannot read signature {path}: {source}")]
    SignatureIo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bundle is larger than the configured limit; refused before parsing.
    #[error("signature bundle {path} is {size} bytes, above the {limit}-byte limit; refusing to parse it")]
    BundleTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// A field of the Sigstore bundle is missing or malformed.
    #[error("malformed signature bundle: {field}: {reason}")]
    MalformedBundle { field: String, reason: String },
    /// The bundle's mediaType is not the Sigstore bundle v0.3 JSON type.
    #[error("unsupported bundle media type {found:?} (expected {expected:?})")]
    UnsupportedMediaType {
        found: String,
        expected: &'static str,
    },
    /// Recognised, but not something ckptguard verifies (certificate/keyless, shards, ...).
    #[error("unsupported signature: {0}")]
    Unsupported(String),
    /// The public key given for verification is unusable.
    #[error("public key: {0}")]
    PublicKey(#[from] KeyError),
    /// The bundle names (by hint) a different public key.
    #[error("wrong key: the signature was made with a different key (bundle key hint {bundle_hint}, given public key hint {key_hint})")]
    WrongKey {
        bundle_hint: String,
        key_hint: String,
    },
    /// The ECDSA signature does not verify over the DSSE PAE.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The signed in-toto statement is malformed.
    #[error("malformed signed statement: {field}: {reason}")]
    MalformedStatement { field: String, reason: String },
    /// The subject digest does not match the listed resources.
    #[error("inconsistent manifest: subject digest is {subject}, but the listed resources hash to {computed}")]
    ManifestInconsistent { subject: String, computed: String },
    /// The model on disk cannot be hashed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A single-file signature used on a directory, or vice versa.
    #[error("the signature is for a {signed}, but {path} is a {found}")]
    ModelKindMismatch {
        path: PathBuf,
        signed: &'static str,
        found: &'static str,
    },
    /// Files were changed, added or removed.
    #[error("model does not match the signature: {0}")]
    Mismatch(ManifestDiff),
}

impl VerifyError {
    /// True: the signature or model is invalid (exit code 1). False: the check could not be
    /// carried out (I/O error, unusable key; exit code 2).
    pub fn is_invalid(&self) -> bool {
        match self {
            VerifyError::SignatureIo { .. } | VerifyError::PublicKey(_) => false,
            VerifyError::Model(m) => m.is_content_problem(),
            _ => true,
        }
    }

    /// A short stable identifier, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::SignatureIo { .. } => "signature_io",
            VerifyError::BundleTooLarge { .. } => "bundle_too_large",
            VerifyError::MalformedBundle { .. } => "malformed_bundle",
            VerifyError::UnsupportedMediaType { .. } => "unsupported_media_type",
            VerifyError::Unsupported(_) => "unsupported",
            VerifyError::PublicKey(_) => "public_key",
            VerifyError::WrongKey { .. } => "wrong_key",
            VerifyError::BadSignature(_) => "bad_signature",
            VerifyError::MalformedStatement { .. } => "malformed_statement",
            VerifyError::ManifestInconsistent { .. } => "manifest_inconsistent",
            VerifyError::Model(m) if m.is_content_problem() => "model_refused",
            VerifyError::Model(_) => "model_io",
            VerifyError::ModelKindMismatch { .. } => "model_kind_mismatch",
            VerifyError::Mismatch(_) => "mismatch",
        }
    }

    pub(crate) fn bundle(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VerifyError::MalformedBundle {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn statement(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VerifyError::MalformedStatement {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
