//! ECDSA keys (P-256/P-384/P-521): PEM parsing (PKCS#8 plain and encrypted, SEC1, SPKI),
//! generation, encoding, and the model_signing "key hint".

use std::fmt;
use std::str::FromStr;

use ecdsa::signature::{RandomizedSigner, Signer, Verifier};
use p256::elliptic_curve::zeroize::Zeroizing;
use pkcs8::der::pem::LineEnding;
use pkcs8::der::Decode;
use pkcs8::spki::ObjectIdentifier;
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::error::KeyError;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

/// PBKDF2-HMAC-SHA256 iterations used when ckptguard encrypts a private key
/// (OWASP 2023 recommendation; cryptography/OpenSSL read any count).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// The three NIST curves model_signing accepts, each with its fixed hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// secp256r1 with SHA-256.
    P256,
    /// secp384r1 with SHA-384.
    P384,
    /// secp521r1 with SHA-512.
    P521,
}

impl Curve {
    /// "P-256", "P-384", "P-521".
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The hash used with ECDSA on this curve (as model_signing does).
    pub fn hash_name(self) -> &'static str {
        match self {
            Curve::P256 => "SHA-256",
            Curve::P384 => "SHA-384",
            Curve::P521 => "SHA-512",
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Result<Curve, KeyError> {
        match oid.to_string().as_str() {
            OID_P256 => Ok(Curve::P256),
            OID_P384 => Ok(Curve::P384),
            OID_P521 => Ok(Curve::P521),
            "1.3.132.0.10" => Err(KeyError::UnsupportedCurve("secp256k1".into())),
            other => Err(KeyError::UnsupportedCurve(format!("with OID {other}"))),
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Curve {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "p256" | "secp256r1" | "prime256v1" => Ok(Curve::P256),
            "p384" | "secp384r1" => Ok(Curve::P384),
            "p521" | "secp521r1" => Ok(Curve::P521),
            _ => Err(format!("unknown curve {s:?} (expected p256, p384 or p521)")),
        }
    }
}

#[derive(Clone)]
enum Sk {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
}

/// An ECDSA private key used for signing.
#[derive(Clone)]
pub struct PrivateKey(Sk);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.curve())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pk {
    P256(p256::PublicKey),
    P384(p384::PublicKey),
    P521(p521::PublicKey),
}

/// An ECDSA public key used for verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(Pk);

/// One PEM block found in a file.
struct PemBlock<'a> {
    label: &'a str,
    /// The complete block text, BEGIN to END line inclusive.
    text: &'a str,
}

fn pem_blocks(data: &str) -> Vec<PemBlock<'_>> {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = Vec::new();
    let mut rest_start = 0;
    while let Some(rel) = data[rest_start..].find(BEGIN) {
        let start = rest_start + rel;
        let after = start + BEGIN.len();
        let Some(label_end_rel) = data[after..].find("-----") else {
            break;
        };
        let label = &data[after..after + label_end_rel];
        if label.contains('\n') {
            rest_start = after;
            continue;
        }
        let end_marker = format!("-----END {label}-----");
        let Some(end_rel) = data[after..].find(&end_marker) else {
            // Unterminated block: record what we have so the caller can report it.
            out.push(PemBlock {
                label,
                text: &data[start..],
            });
            break;
        };
        let end = after + end_rel + end_marker.len();
        out.push(PemBlock {
            label,
            text: &data[start..end],
        });
        rest_start = end;
    }
    out
}

fn decode_block(block: &PemBlock<'_>) -> Result<Vec<u8>, KeyError> {
    // pem-rfc7468 is strict about trailing data; hand it exactly the block + newline.
    let mut text = block.text.replace("\r\n", "\n");
    text.push('\n');
    match pkcs8::der::pem::decode_vec(text.as_bytes()) {
        Ok((_, der)) => Ok(der),
        Err(e) => Err(KeyError::Malformed {
            label: block.label.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn describe_labels(blocks: &[PemBlock<'_>]) -> String {
    let labels: Vec<String> = blocks.iter().map(|b| format!("'{}'", b.label)).collect();
    if labels.is_empty() {
        "no PEM blocks".to_string()
    } else {
        labels.join(", ")
    }
}

fn to_str(data: &[u8]) -> Result<&str, KeyError> {
    std::str::from_utf8(data).map_err(|_| KeyError::NotPem)
}

fn algorithm_name(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS".into(),
        "1.3.101.112" => "Ed25519".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.3.101.110" => "X25519".into(),
        "1.3.101.111" => "X448".into(),
        "1.2.840.10040.4.1" => "DSA".into(),
        other => format!("with algorithm OID {other}"),
    }
}

fn malformed(label: &str, e: impl fmt::Display) -> KeyError {
    KeyError::Malformed {
        label: label.to_string(),
        reason: e.to_string(),
    }
}

/// Curve of a PKCS#8 / SPKI algorithm identifier; errors name RSA/Ed25519/... precisely.
fn curve_of_algorithm(
    alg: &pkcs8::spki::AlgorithmIdentifierRef<'_>,
    label: &str,
) -> Result<Curve, KeyError> {
    let oid = alg.oid.to_string();
    if oid != OID_EC_PUBLIC_KEY {
        return Err(KeyError::UnsupportedKeyType(algorithm_name(&oid)));
    }
    let params = alg
        .parameters_oid()
        .map_err(|_| malformed(label, "EC key without a named-curve parameter"))?;
    Curve::from_oid(&params)
}

fn secret_from_pkcs8(der: &[u8], label: &str) -> Result<Sk, KeyError> {
    let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(|e| malformed(label, e))?;
    let curve = curve_of_algorithm(&info.algorithm, label)?;
    Ok(match curve {
        Curve::P256 => {
            Sk::P256(p256::SecretKey::from_pkcs8_der(der).map_err(|e| malformed(label, e))?)
        }
        Curve::P384 => {
            Sk::P384(p384::SecretKey::from_pkcs8_der(der).map_err(|e| malformed(label, e))?)
        }
        Curve::P521 => {
            Sk::P521(p521::SecretKey::from_pkcs8_der(der).map_err(|e| malformed(label, e))?)
        }
    })
}

fn secret_from_sec1(der: &[u8], label: &str) -> Result<Sk, KeyError> {
    let ec = sec1::EcPrivateKey::from_der(der).map_err(|e| malformed(label, e))?;
    let curve = match ec.parameters.and_then(|p| p.named_curve()) {
        Some(oid) => Curve::from_oid(&oid)?,
        // RFC 5915 makes the parameters optional; infer from the scalar length.
        None => match ec.private_key.len() {
            32 => Curve::P256,
            48 => Curve::P384,
            66 => Curve::P521,
            n => {
                return Err(malformed(
                    label,
                    format!("no curve parameters and a {n}-byte key"),
                ))
            }
        },
    };
    Ok(match curve {
        Curve::P256 => {
            Sk::P256(p256::SecretKey::from_sec1_der(der).map_err(|e| malformed(label, e))?)
        }
        Curve::P384 => {
            Sk::P384(p384::SecretKey::from_sec1_der(der).map_err(|e| malformed(label, e))?)
        }
        Curve::P521 => {
            Sk::P521(p521::SecretKey::from_sec1_der(der).map_err(|e| malformed(label, e))?)
        }
    })
}

fn decrypt_pkcs8(der: &[u8], password: &[u8], label: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let enc = pkcs8::EncryptedPrivateKeyInfo::try_from(der).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("OID") || msg.contains("algorithm") || msg.contains("unknown") {
            KeyError::UnsupportedEncryption(msg)
        } else {
            malformed(label, e)
        }
    })?;
    match enc.decrypt(password) {
        Ok(doc) => Ok(Zeroizing::new(doc.as_bytes().to_vec())),
        // pkcs5 0.7 reports a CBC padding failure on decryption as `EncryptFailed`.
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        )) => Err(KeyError::WrongPassword),
        Err(pkcs8::Error::EncryptedPrivateKey(e)) => {
            Err(KeyError::UnsupportedEncryption(e.to_string()))
        }
        Err(e) => Err(malformed(label, e)),
    }
}

impl PrivateKey {
    /// Generate a fresh key on `curve` using the operating system RNG.
    pub fn generate(curve: Curve) -> PrivateKey {
        PrivateKey(match curve {
            Curve::P256 => Sk::P256(p256::SecretKey::random(&mut OsRng)),
            Curve::P384 => Sk::P384(p384::SecretKey::random(&mut OsRng)),
            Curve::P521 => Sk::P521(p521::SecretKey::random(&mut OsRng)),
        })
    }

    /// Read a PEM private key: PKCS#8 ("PRIVATE KEY"), encrypted PKCS#8
    /// ("ENCRYPTED PRIVATE KEY", needs `password`) or SEC1 ("EC PRIVATE KEY").
    /// Other blocks such as "EC PARAMETERS" are skipped.
    pub fn from_pem(data: &[u8], password: Option<&[u8]>) -> Result<PrivateKey, KeyError> {
        let text = to_str(data)?;
        let blocks = pem_blocks(text);
        if blocks.is_empty() {
            return Err(KeyError::NotPem);
        }
        for block in &blocks {
            let label = block.label;
            match label {
                "PRIVATE KEY" => {
                    let der = Zeroizing::new(decode_block(block)?);
                    return Ok(PrivateKey(secret_from_pkcs8(&der, label)?));
                }
                "ENCRYPTED PRIVATE KEY" => {
                    let der = decode_block(block)?;
                    let password = password.ok_or(KeyError::PasswordRequired)?;
                    let plain = decrypt_pkcs8(&der, password, label)?;
                    // A wrong password can (rarely) yield valid padding: then the DER is junk.
                    return match secret_from_pkcs8(&plain, label) {
                        Err(KeyError::Malformed { .. }) => Err(KeyError::WrongPassword),
                        other => other.map(PrivateKey),
                    };
                }
                "EC PRIVATE KEY" => {
                    if block.text.contains("Proc-Type:") || block.text.contains("DEK-Info:") {
                        return Err(KeyError::LegacyEncryption);
                    }
                    let der = Zeroizing::new(decode_block(block)?);
                    return Ok(PrivateKey(secret_from_sec1(&der, label)?));
                }
                "RSA PRIVATE KEY" => return Err(KeyError::UnsupportedKeyType("RSA".into())),
                "DSA PRIVATE KEY" => return Err(KeyError::UnsupportedKeyType("DSA".into())),
                "OPENSSH PRIVATE KEY" => {
                    return Err(KeyError::UnsupportedKeyType(
                        "OpenSSH-format key (convert an ECDSA key with `ssh-keygen -p -m PKCS8 -f KEY`)".into(),
                    ))
                }
                _ => continue,
            }
        }
        Err(KeyError::WrongPemKind {
            expected: "a private key ('PRIVATE KEY', 'ENCRYPTED PRIVATE KEY' or 'EC PRIVATE KEY')",
            found: describe_labels(&blocks),
        })
    }

    /// The curve of this key.
    pub fn curve(&self) -> Curve {
        match &self.0 {
            Sk::P256(_) => Curve::P256,
            Sk::P384(_) => Curve::P384,
            Sk::P521(_) => Curve::P521,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(match &self.0 {
            Sk::P256(k) => Pk::P256(k.public_key()),
            Sk::P384(k) => Pk::P384(k.public_key()),
            Sk::P521(k) => Pk::P521(k.public_key()),
        })
    }

    /// PKCS#8 PEM; encrypted (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) if a password is given.
    pub fn to_pkcs8_pem(&self, password: Option<&[u8]>) -> Result<Zeroizing<String>, KeyError> {
        let doc = match &self.0 {
            Sk::P256(k) => k.to_pkcs8_der(),
            Sk::P384(k) => k.to_pkcs8_der(),
            Sk::P521(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        let Some(password) = password else {
            return doc
                .to_pem("PRIVATE KEY", LineEnding::LF)
                .map_err(|e| KeyError::Encode(e.to_string()));
        };
        let mut salt = [0u8; 16];
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut iv);
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
                .map_err(|e| KeyError::Encode(e.to_string()))?;
        let info = pkcs8::PrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let enc = info
            .encrypt_with_params(params, password)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        enc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }

    /// ECDSA-sign `msg` with the curve's hash; returns an ASN.1 DER signature.
    pub fn sign_der(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        Ok(match &self.0 {
            Sk::P256(k) => {
                let sk = p256::ecdsa::SigningKey::from(k);
                let sig: p256::ecdsa::Signature = sk.try_sign(msg).map_err(|e| e.to_string())?;
                sig.to_der().as_bytes().to_vec()
            }
            Sk::P384(k) => {
                let sk = p384::ecdsa::SigningKey::from(k);
                let sig: p384::ecdsa::Signature = sk.try_sign(msg).map_err(|e| e.to_string())?;
                sig.to_der().as_bytes().to_vec()
            }
            Sk::P521(k) => {
                let sk = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                    .map_err(|e| e.to_string())?;
                let sig: p521::ecdsa::Signature = sk
                    .try_sign_with_rng(&mut OsRng, msg)
                    .map_err(|e| e.to_string())?;
                sig.to_der().as_bytes().to_vec()
            }
        })
    }
}

impl PublicKey {
    /// Read a PEM public key ("PUBLIC KEY", SubjectPublicKeyInfo). An unencrypted private key
    /// is accepted too; its public half is used.
    pub fn from_pem(data: &[u8]) -> Result<PublicKey, KeyError> {
        let text = to_str(data)?;
        let blocks = pem_blocks(text);
        if blocks.is_empty() {
            return Err(KeyError::NotPem);
        }
        for block in &blocks {
            let label = block.label;
            match label {
                "PUBLIC KEY" => {
                    let der = decode_block(block)?;
                    let spki = pkcs8::spki::SubjectPublicKeyInfoRef::try_from(der.as_slice())
                        .map_err(|e| malformed(label, e))?;
                    let curve = curve_of_algorithm(&spki.algorithm, label)?;
                    return Ok(PublicKey(match curve {
                        Curve::P256 => Pk::P256(
                            p256::PublicKey::from_public_key_der(&der).map_err(|e| malformed(label, e))?,
                        ),
                        Curve::P384 => Pk::P384(
                            p384::PublicKey::from_public_key_der(&der).map_err(|e| malformed(label, e))?,
                        ),
                        Curve::P521 => Pk::P521(
                            p521::PublicKey::from_public_key_der(&der).map_err(|e| malformed(label, e))?,
                        ),
                    }));
                }
                "RSA PUBLIC KEY" => return Err(KeyError::UnsupportedKeyType("RSA".into())),
                "CERTIFICATE" => {
                    return Err(KeyError::WrongPemKind {
                        expected: "a public key ('PUBLIC KEY'); certificate mode is not supported — extract the key with `openssl x509 -pubkey -noout -in CERT`",
                        found: describe_labels(&blocks),
                    })
                }
                "PRIVATE KEY" | "EC PRIVATE KEY" => {
                    return PrivateKey::from_pem(block.text.as_bytes(), None).map(|k| k.public_key())
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(KeyError::WrongPemKind {
                        expected: "a public key ('PUBLIC KEY')",
                        found: "an encrypted private key".into(),
                    })
                }
                _ => continue,
            }
        }
        Err(KeyError::WrongPemKind {
            expected: "a public key ('PUBLIC KEY')",
            found: describe_labels(&blocks),
        })
    }

    /// The curve of this key.
    pub fn curve(&self) -> Curve {
        match &self.0 {
            Pk::P256(_) => Curve::P256,
            Pk::P384(_) => Curve::P384,
            Pk::P521(_) => Curve::P521,
        }
    }

    /// SubjectPublicKeyInfo PEM (uncompressed point, 64-column lines, LF, trailing newline),
    /// byte-identical to Python `cryptography`'s `public_bytes(PEM, SubjectPublicKeyInfo)`.
    pub fn to_spki_pem(&self) -> String {
        match &self.0 {
            Pk::P256(k) => k.to_public_key_pem(LineEnding::LF),
            Pk::P384(k) => k.to_public_key_pem(LineEnding::LF),
            Pk::P521(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .expect("encoding a valid EC public key cannot fail")
    }

    /// The model_signing key hint: lowercase hex SHA-256 of [`PublicKey::to_spki_pem`].
    pub fn hint(&self) -> String {
        hex(&Sha256::digest(self.to_spki_pem().as_bytes()))
    }

    /// Verify an ASN.1 DER ECDSA signature over `msg` (hashed with the curve's hash).
    /// High-S signatures are accepted, as OpenSSL/cryptography produce them.
    pub fn verify_der(&self, msg: &[u8], der: &[u8]) -> Result<(), String> {
        let bad_der =
            |e: ecdsa::Error| format!("not a DER-encoded ECDSA {} signature ({e})", self.curve());
        let mismatch =
            |_| "the ECDSA signature does not verify with the given public key".to_string();
        match &self.0 {
            Pk::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(der).map_err(bad_der)?;
                p256::ecdsa::VerifyingKey::from(k)
                    .verify(msg, &sig)
                    .map_err(mismatch)
            }
            Pk::P384(k) => {
                let sig = p384::ecdsa::Signature::from_der(der).map_err(bad_der)?;
                p384::ecdsa::VerifyingKey::from(k)
                    .verify(msg, &sig)
                    .map_err(mismatch)
            }
            Pk::P521(k) => {
                let sig = p521::ecdsa::Signature::from_der(der).map_err(bad_der)?;
                let vk = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
                    .map_err(|e| e.to_string())?;
                vk.verify(msg, &sig).map_err(mismatch)
            }
        }
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decode hex (either case); `None` on any non-hex character or odd length.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_curves_plain_and_encrypted() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let k = PrivateKey::generate(curve);
            let pem = k.to_pkcs8_pem(None).unwrap();
            let k2 = PrivateKey::from_pem(pem.as_bytes(), None).unwrap();
            assert_eq!(k2.public_key(), k.public_key());
            let pub_pem = k.public_key().to_spki_pem();
            let pk = PublicKey::from_pem(pub_pem.as_bytes()).unwrap();
            assert_eq!(pk.curve(), curve);
            let sig = k2.sign_der(b"hello").unwrap();
            pk.verify_der(b"hello", &sig).unwrap();
            assert!(pk.verify_der(b"hellO", &sig).is_err());
            // Public key derived from a private key file.
            assert_eq!(PublicKey::from_pem(pem.as_bytes()).unwrap(), pk);
        }
        // Encryption is slow (600k PBKDF2 rounds): one curve is enough here.
        let k = PrivateKey::generate(Curve::P384);
        let pem = k.to_pkcs8_pem(Some(b"s3cret")).unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        assert!(matches!(
            PrivateKey::from_pem(pem.as_bytes(), None),
            Err(KeyError::PasswordRequired)
        ));
        let e = PrivateKey::from_pem(pem.as_bytes(), Some(b"wrong")).unwrap_err();
        assert!(matches!(e, KeyError::WrongPassword), "{e:?}");
        let k2 = PrivateKey::from_pem(pem.as_bytes(), Some(b"s3cret")).unwrap();
        assert_eq!(k2.public_key(), k.public_key());
    }

    #[test]
    fn hint_matches_cryptography() {
        // Key and hint produced by Python cryptography + model_signing 1.1.1.
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4EJ1t804LrbUDqIofCFi7y6zBacq\n1gPO1iF5rl81/FKYuyBufajS0XTJ/73MPjawOc6kvblOT0YlSelUn+KO+A==\n-----END PUBLIC KEY-----\n";
        let pk = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(pk.to_spki_pem(), pem);
        assert_eq!(
            pk.hint(),
            "2b01b8299b7e57509e8cd14a7a51185d840cabeff7e39e22ebb0204e9ada5afd"
        );
    }

    #[test]
    fn rejects_foreign_keys_with_clear_errors() {
        assert!(matches!(
            PrivateKey::from_pem(b"hello", None),
            Err(KeyError::NotPem)
        ));
        assert!(matches!(
            PrivateKey::from_pem(&[0xff, 0xfe, 0x00], None),
            Err(KeyError::NotPem)
        ));
        // Ed25519 PKCS#8 (RFC 8410 example).
        let ed = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let e = PrivateKey::from_pem(ed.as_bytes(), None).unwrap_err();
        assert!(
            matches!(&e, KeyError::UnsupportedKeyType(t) if t == "Ed25519"),
            "{e}"
        );
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(rsa.as_bytes(), None),
            Err(KeyError::UnsupportedKeyType(_))
        ));
        let pk = PrivateKey::generate(Curve::P256).public_key().to_spki_pem();
        let e = PrivateKey::from_pem(pk.as_bytes(), None).unwrap_err();
        assert!(matches!(e, KeyError::WrongPemKind { .. }), "{e}");
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(legacy.as_bytes(), None),
            Err(KeyError::LegacyEncryption)
        ));
    }

    #[test]
    fn sec1_with_ec_parameters_block() {
        // `openssl ecparam -name secp384r1 -genkey` style output (EC PARAMETERS first).
        let k = PrivateKey::generate(Curve::P384);
        let Sk::P384(sk) = &k.0 else { unreachable!() };
        let sec1 = sk.to_sec1_pem(LineEnding::LF).unwrap();
        let text = format!(
            "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n{}",
            &*sec1
        );
        let k2 = PrivateKey::from_pem(text.as_bytes(), None).unwrap();
        assert_eq!(k2.public_key(), k.public_key());
    }

    #[test]
    fn hex_roundtrip() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
