//! Sigstore bundle v0.3 + DSSE envelope + in-toto statement, as model_signing 1.x writes
//! and reads them in key mode. Building is straightforward; parsing validates every field
//! of the untrusted input and names the offending field in errors.

use std::collections::HashSet;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::keys::{hex, unhex};
use crate::model::ManifestEntry;

/// Sigstore bundle media type written and accepted (the only one model_signing accepts).
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of the in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// in-toto statement `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// model_signing predicate type (v1.0).
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Pre-1.0 model_signing predicate type (not supported).
const PREDICATE_TYPE_V01: &str = "https://model_signing/Digests/v0.1";

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload` (lengths in bytes, decimal).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut v = Vec::with_capacity(head.len() + payload.len());
    v.extend_from_slice(head.as_bytes());
    v.extend_from_slice(payload);
    v
}

// ---------------------------------------------------------------- building

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    ty: &'a str,
    subject: [Subject<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    predicate: Predicate<'a>,
}

#[derive(Serialize)]
struct Subject<'a> {
    name: &'a str,
    digest: Sha256Digest,
}

#[derive(Serialize)]
struct Sha256Digest {
    sha256: String,
}

#[derive(Serialize)]
struct Predicate<'a> {
    serialization: Serialization<'a>,
    resources: Vec<Resource<'a>>,
}

#[derive(Serialize)]
struct Serialization<'a> {
    method: &'a str,
    hash_type: &'a str,
    allow_symlinks: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ignore_paths: &'a [String],
}

#[derive(Serialize)]
struct Resource<'a> {
    name: &'a str,
    algorithm: &'a str,
    digest: String,
}

/// The in-toto statement (pretty-printed with 2-space indent, like model_signing's protobuf JSON).
pub(crate) fn statement_json(
    subject_name: &str,
    root: &[u8; 32],
    ignore_paths: &[String],
    entries: &[ManifestEntry],
) -> Vec<u8> {
    let st = Statement {
        ty: STATEMENT_TYPE,
        subject: [Subject {
            name: subject_name,
            digest: Sha256Digest { sha256: hex(root) },
        }],
        predicate_type: PREDICATE_TYPE,
        predicate: Predicate {
            serialization: Serialization {
                method: "files",
                hash_type: "sha256",
                allow_symlinks: false,
                ignore_paths,
            },
            resources: entries
                .iter()
                .map(|e| Resource {
                    name: &e.name,
                    algorithm: "sha256",
                    digest: hex(&e.digest),
                })
                .collect(),
        },
    };
    serde_json::to_vec_pretty(&st).expect("serializing a statement cannot fail")
}

#[derive(Serialize)]
struct BundleOut<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    #[serde(rename = "verificationMaterial")]
    verification_material: VerificationMaterialOut<'a>,
    #[serde(rename = "dsseEnvelope")]
    dsse_envelope: EnvelopeOut<'a>,
}

#[derive(Serialize)]
struct VerificationMaterialOut<'a> {
    #[serde(rename = "publicKey")]
    public_key: HintOut<'a>,
    #[serde(rename = "tlogEntries")]
    tlog_entries: [(); 0],
}

#[derive(Serialize)]
struct HintOut<'a> {
    hint: &'a str,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: &'a str,
    signatures: [SigOut; 1],
}

#[derive(Serialize)]
struct SigOut {
    sig: String,
    keyid: &'static str,
}

/// The bundle JSON (compact, no trailing newline, as model_signing writes it).
pub(crate) fn bundle_json(payload: &[u8], sig_der: &[u8], hint: &str) -> Vec<u8> {
    let b = BundleOut {
        media_type: BUNDLE_MEDIA_TYPE,
        verification_material: VerificationMaterialOut {
            public_key: HintOut { hint },
            tlog_entries: [],
        },
        dsse_envelope: EnvelopeOut {
            payload: STANDARD.encode(payload),
            payload_type: PAYLOAD_TYPE,
            signatures: [SigOut {
                sig: STANDARD.encode(sig_der),
                keyid: "",
            }],
        },
    };
    serde_json::to_vec(&b).expect("serializing a bundle cannot fail")
}

// ---------------------------------------------------------------- parsing

/// The parts of a key-mode bundle needed for verification.
#[derive(Debug)]
pub(crate) struct ParsedBundle {
    pub payload: Vec<u8>,
    pub signatures: Vec<Vec<u8>>,
    /// `verificationMaterial.publicKey.hint`, if present and non-empty.
    pub hint: Option<String>,
}

/// A signed manifest extracted from the statement.
#[derive(Debug)]
pub(crate) struct SignedManifest {
    pub subject_name: String,
    pub subject_digest: [u8; 32],
    pub ignore_paths: Vec<String>,
    /// In listed order.
    pub resources: Vec<(String, [u8; 32])>,
}

const B64_LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const B64_STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, B64_LENIENT);
const B64_URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, B64_LENIENT);

/// Protobuf JSON accepts standard and URL-safe base64, padded or not.
fn b64(field: &str, v: &Value) -> Result<Vec<u8>, VerifyError> {
    let s = v.as_str().ok_or_else(|| {
        VerifyError::bundle(
            field,
            format!("expected a base64 string, found {}", type_name(v)),
        )
    })?;
    B64_STD
        .decode(s)
        .or_else(|_| B64_URL.decode(s))
        .map_err(|e| VerifyError::bundle(field, format!("invalid base64: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

type Mk = fn(String, String) -> VerifyError;

fn mk_bundle(f: String, r: String) -> VerifyError {
    VerifyError::MalformedBundle {
        field: f,
        reason: r,
    }
}

fn mk_statement(f: String, r: String) -> VerifyError {
    VerifyError::MalformedStatement {
        field: f,
        reason: r,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn obj<'a>(mk: Mk, field: &str, v: &'a Value) -> Result<&'a Map<String, Value>, VerifyError> {
    v.as_object().ok_or_else(|| {
        mk(
            field.to_string(),
            format!("expected an object, found {}", type_name(v)),
        )
    })
}

fn req<'a>(
    mk: Mk,
    parent: &str,
    o: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Value, VerifyError> {
    o.get(key)
        .ok_or_else(|| mk(join(parent, key), "missing".to_string()))
}

fn req_str<'a>(
    mk: Mk,
    parent: &str,
    o: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, VerifyError> {
    let v = req(mk, parent, o, key)?;
    v.as_str().ok_or_else(|| {
        mk(
            join(parent, key),
            format!("expected a string, found {}", type_name(v)),
        )
    })
}

fn req_arr<'a>(
    mk: Mk,
    parent: &str,
    o: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Vec<Value>, VerifyError> {
    let v = req(mk, parent, o, key)?;
    v.as_array().ok_or_else(|| {
        mk(
            join(parent, key),
            format!("expected an array, found {}", type_name(v)),
        )
    })
}

/// Parse and validate the bundle structure (not the signature).
pub(crate) fn parse_bundle(bytes: &[u8]) -> Result<ParsedBundle, VerifyError> {
    let root: Value = serde_json::from_slice(bytes)
        .map_err(|e| VerifyError::bundle("(document)", format!("not valid JSON: {e}")))?;
    let mk: Mk = mk_bundle;
    let top = obj(mk, "(document)", &root)?;

    let media = req_str(mk, "", top, "mediaType")?;
    if media != BUNDLE_MEDIA_TYPE {
        return Err(VerifyError::UnsupportedMediaType {
            found: media.to_string(),
            expected: BUNDLE_MEDIA_TYPE,
        });
    }

    let vm = obj(
        mk,
        "verificationMaterial",
        req(mk, "", top, "verificationMaterial")?,
    )?;
    let hint = match vm.get("publicKey") {
        Some(pk) => {
            let pk = obj(mk, "verificationMaterial.publicKey", pk)?;
            match pk.get("hint") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => {
                    return Err(VerifyError::bundle(
                        "verificationMaterial.publicKey.hint",
                        format!("expected a string, found {}", type_name(v)),
                    ))
                }
            }
        }
        None => {
            if vm.contains_key("certificate") || vm.contains_key("x509CertificateChain") {
                return Err(VerifyError::Unsupported(
                    "the bundle is signed with a certificate (model_signing `sign certificate` or Sigstore keyless); ckptguard verifies key-mode bundles only — use `model_signing verify certificate|sigstore`".into(),
                ));
            }
            return Err(VerifyError::bundle(
                "verificationMaterial.publicKey",
                "missing (a key-mode bundle identifies its key here)",
            ));
        }
    };
    if let Some(t) = vm.get("tlogEntries") {
        if !t.is_array() {
            return Err(VerifyError::bundle(
                "verificationMaterial.tlogEntries",
                format!("expected an array, found {}", type_name(t)),
            ));
        }
    }

    let env = match top.get("dsseEnvelope") {
        Some(e) => obj(mk, "dsseEnvelope", e)?,
        None if top.contains_key("messageSignature") => {
            return Err(VerifyError::Unsupported(
                "the bundle carries a plain message signature, not a DSSE envelope; model signatures use DSSE".into(),
            ))
        }
        None => return Err(VerifyError::bundle("dsseEnvelope", "missing")),
    };
    let pt = req_str(mk, "dsseEnvelope", env, "payloadType")?;
    if pt != PAYLOAD_TYPE {
        return Err(VerifyError::bundle(
            "dsseEnvelope.payloadType",
            format!("expected {PAYLOAD_TYPE:?}, found {pt:?}"),
        ));
    }
    let payload = b64(
        "dsseEnvelope.payload",
        req(mk, "dsseEnvelope", env, "payload")?,
    )?;
    if payload.is_empty() {
        return Err(VerifyError::bundle("dsseEnvelope.payload", "empty"));
    }
    let sigs = req_arr(mk, "dsseEnvelope", env, "signatures")?;
    if sigs.is_empty() {
        return Err(VerifyError::bundle(
            "dsseEnvelope.signatures",
            "empty: the envelope carries no signature",
        ));
    }
    let mut signatures = Vec::with_capacity(sigs.len());
    for (i, s) in sigs.iter().enumerate() {
        let field = format!("dsseEnvelope.signatures[{i}]");
        let so = obj(mk, &field, s)?;
        let v = req(mk, &field, so, "sig")?;
        let sig = b64(&format!("{field}.sig"), v)?;
        if sig.is_empty() {
            return Err(VerifyError::bundle(format!("{field}.sig"), "empty"));
        }
        if let Some(k) = so.get("keyid") {
            if !k.is_string() {
                return Err(VerifyError::bundle(
                    format!("{field}.keyid"),
                    format!("expected a string, found {}", type_name(k)),
                ));
            }
        }
        signatures.push(sig);
    }
    Ok(ParsedBundle {
        payload,
        signatures,
        hint,
    })
}

fn digest32(mk: Mk, field: &str, s: &str) -> Result<[u8; 32], VerifyError> {
    if s.len() != 64 {
        return Err(mk(
            field.to_string(),
            format!("expected 64 hex digits, found {} characters", s.len()),
        ));
    }
    let v = unhex(s).ok_or_else(|| mk(field.to_string(), format!("not hexadecimal: {s:?}")))?;
    Ok(v.try_into().expect("64 hex digits are 32 bytes"))
}

/// A resource name must be a canonical relative POSIX path (what model_signing writes):
/// no empty, `.` or `..` components, no leading or trailing slash; or exactly `"."`.
fn check_resource_name(name: &str) -> Result<(), String> {
    if name == "." {
        return Ok(());
    }
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.contains('\0') {
        return Err("name contains a NUL byte".into());
    }
    for c in name.split('/') {
        match c {
            "" => return Err(format!("{name:?} is not a canonical relative path (empty component or leading/trailing '/')")),
            "." | ".." => return Err(format!("{name:?} contains a '{c}' component")),
            _ => {}
        }
    }
    Ok(())
}

/// Parse and validate the signed in-toto statement.
pub(crate) fn parse_statement(payload: &[u8]) -> Result<SignedManifest, VerifyError> {
    let mk: Mk = mk_statement;
    let root: Value = serde_json::from_slice(payload)
        .map_err(|e| VerifyError::statement("(payload)", format!("not valid JSON: {e}")))?;
    let top = obj(mk, "(payload)", &root)?;
    let ty = req_str(mk, "", top, "_type")?;
    if ty != STATEMENT_TYPE {
        return Err(VerifyError::statement(
            "_type",
            format!("expected {STATEMENT_TYPE:?}, found {ty:?}"),
        ));
    }
    let pt = req_str(mk, "", top, "predicateType")?;
    if pt == PREDICATE_TYPE_V01 {
        return Err(VerifyError::Unsupported(format!(
            "pre-1.0 model_signing predicate {PREDICATE_TYPE_V01:?}; re-sign with model_signing >= 1.0 or ckptguard"
        )));
    }
    if pt != PREDICATE_TYPE {
        return Err(VerifyError::statement(
            "predicateType",
            format!("expected {PREDICATE_TYPE:?}, found {pt:?}"),
        ));
    }

    let subjects = req_arr(mk, "", top, "subject")?;
    if subjects.len() != 1 {
        return Err(VerifyError::statement(
            "subject",
            format!("expected exactly one subject, found {}", subjects.len()),
        ));
    }
    let s0 = obj(mk, "subject[0]", &subjects[0])?;
    let subject_name = match s0.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(VerifyError::statement(
                "subject[0].name",
                format!("expected a string, found {}", type_name(v)),
            ))
        }
    };
    let sd = obj(
        mk,
        "subject[0].digest",
        req(mk, "subject[0]", s0, "digest")?,
    )?;
    let subject_digest = digest32(
        mk,
        "subject[0].digest.sha256",
        req_str(mk, "subject[0].digest", sd, "sha256")?,
    )?;

    let pred = obj(mk, "predicate", req(mk, "", top, "predicate")?)?;
    let ser = obj(
        mk,
        "predicate.serialization",
        req(mk, "predicate", pred, "serialization")?,
    )?;
    let method = req_str(mk, "predicate.serialization", ser, "method")?;
    match method {
        "files" => {}
        "shards" => {
            return Err(VerifyError::Unsupported(
                "shard serialization (method \"shards\"); ckptguard verifies file serialization (the model_signing default)".into(),
            ))
        }
        m => return Err(VerifyError::statement("predicate.serialization.method", format!("unknown method {m:?}"))),
    }
    let hash_type = req_str(mk, "predicate.serialization", ser, "hash_type")?;
    if hash_type != "sha256" {
        return Err(VerifyError::Unsupported(format!(
            "hash type {hash_type:?}; ckptguard supports sha256 (the model_signing default)"
        )));
    }
    match ser.get("allow_symlinks") {
        None | Some(Value::Bool(_)) => {}
        Some(v) => {
            return Err(VerifyError::statement(
                "predicate.serialization.allow_symlinks",
                format!("expected a boolean, found {}", type_name(v)),
            ))
        }
    }
    let mut ignore_paths = Vec::new();
    match ser.get("ignore_paths") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let s = v.as_str().ok_or_else(|| {
                    VerifyError::statement(
                        format!("predicate.serialization.ignore_paths[{i}]"),
                        format!("expected a string, found {}", type_name(v)),
                    )
                })?;
                ignore_paths.push(s.to_string());
            }
        }
        Some(v) => {
            return Err(VerifyError::statement(
                "predicate.serialization.ignore_paths",
                format!("expected an array, found {}", type_name(v)),
            ))
        }
    }

    let res = req_arr(mk, "predicate", pred, "resources")?;
    let mut resources = Vec::with_capacity(res.len());
    let mut seen = HashSet::with_capacity(res.len());
    for (i, r) in res.iter().enumerate() {
        let field = format!("predicate.resources[{i}]");
        let ro = obj(mk, &field, r)?;
        let name = req_str(mk, &field, ro, "name")?;
        check_resource_name(name)
            .map_err(|e| VerifyError::statement(format!("{field}.name"), e))?;
        let alg = req_str(mk, &field, ro, "algorithm")?;
        if alg != "sha256" {
            return Err(VerifyError::Unsupported(format!(
                "{field}.algorithm {alg:?} (only sha256 is supported)"
            )));
        }
        let digest = digest32(
            mk,
            &format!("{field}.digest"),
            req_str(mk, &field, ro, "digest")?,
        )?;
        if !seen.insert(name) {
            return Err(VerifyError::statement(
                format!("{field}.name"),
                format!("duplicate resource {name:?}"),
            ));
        }
        resources.push((name.to_string(), digest));
    }
    if resources.len() > 1 && seen.contains(".") {
        return Err(VerifyError::statement(
            "predicate.resources",
            "\".\" (a single-file model) listed together with other files",
        ));
    }
    Ok(SignedManifest {
        subject_name,
        subject_digest,
        ignore_paths,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_dsse_spec() {
        assert_eq!(
            pae(PAYLOAD_TYPE, b"{}"),
            b"DSSEv1 28 application/vnd.in-toto+json 2 {}".to_vec()
        );
        // DSSE spec example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        // Lengths are byte lengths.
        assert_eq!(pae("t", "é".as_bytes()), b"DSSEv1 1 t 2 \xc3\xa9".to_vec());
    }

    fn entries() -> Vec<ManifestEntry> {
        vec![ManifestEntry {
            name: "a".into(),
            digest: [1; 32],
            size: 1,
        }]
    }

    #[test]
    fn build_then_parse() {
        let st = statement_json("m", &[7; 32], &["model.sig".into()], &entries());
        let b = bundle_json(&st, b"\x30\x00", "ab");
        let p = parse_bundle(&b).unwrap();
        assert_eq!(p.payload, st);
        assert_eq!(p.hint.as_deref(), Some("ab"));
        let m = parse_statement(&p.payload).unwrap();
        assert_eq!(m.subject_name, "m");
        assert_eq!(m.subject_digest, [7; 32]);
        assert_eq!(m.ignore_paths, ["model.sig"]);
        assert_eq!(m.resources, vec![("a".to_string(), [1; 32])]);
        let text = String::from_utf8(st).unwrap();
        assert!(text.starts_with("{\n  \"_type\": \"https://in-toto.io/Statement/v1\",\n"));
    }

    fn edit(f: impl Fn(&mut Value)) -> Vec<u8> {
        let st = statement_json("m", &[7; 32], &[], &entries());
        let mut v: Value = serde_json::from_slice(&bundle_json(&st, b"\x30\x00", "ab")).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn err_of(b: &[u8]) -> String {
        parse_bundle(b).unwrap_err().to_string()
    }

    #[test]
    fn bundle_field_errors_name_the_field() {
        let e = err_of(&edit(|v| {
            v["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into()
        }));
        assert!(e.contains("unsupported bundle media type"), "{e}");
        let e = err_of(&edit(|v| {
            v.as_object_mut().unwrap().remove("mediaType");
        }));
        assert!(e.contains("mediaType: missing"), "{e}");
        let e = err_of(&edit(|v| v["dsseEnvelope"]["payload"] = "!!!".into()));
        assert!(e.contains("dsseEnvelope.payload: invalid base64"), "{e}");
        let e = err_of(&edit(|v| {
            v["dsseEnvelope"]["signatures"][0]["sig"] = 5.into()
        }));
        assert!(
            e.contains("dsseEnvelope.signatures[0].sig: expected a base64 string"),
            "{e}"
        );
        let e = err_of(&edit(|v| {
            v["dsseEnvelope"]["signatures"] = Value::Array(vec![])
        }));
        assert!(e.contains("dsseEnvelope.signatures: empty"), "{e}");
        let e = err_of(&edit(|v| {
            v["dsseEnvelope"]["payloadType"] = "text/plain".into()
        }));
        assert!(e.contains("dsseEnvelope.payloadType"), "{e}");
        let e = err_of(&edit(|v| {
            v["verificationMaterial"]["publicKey"]["hint"] = 1.into()
        }));
        assert!(e.contains("verificationMaterial.publicKey.hint"), "{e}");
        let e = err_of(&edit(|v| {
            v["verificationMaterial"] = serde_json::json!({"certificate": {"rawBytes": "AA=="}});
        }));
        assert!(e.contains("certificate"), "{e}");
        let e = err_of(b"{\"mediaType\": \"applic");
        assert!(e.contains("not valid JSON"), "{e}");
        // URL-safe / unpadded base64 is accepted, as protobuf JSON does.
        let ok = edit(|v| {
            let p = v["dsseEnvelope"]["payload"]
                .as_str()
                .unwrap()
                .trim_end_matches('=')
                .to_string();
            v["dsseEnvelope"]["payload"] = p.into();
        });
        parse_bundle(&ok).unwrap();
        // Missing hint is allowed (older bundles).
        let ok = edit(|v| {
            v["verificationMaterial"]["publicKey"] = serde_json::json!({});
        });
        assert!(parse_bundle(&ok).unwrap().hint.is_none());
    }

    fn st_err(f: impl Fn(&mut Value)) -> String {
        let st = statement_json("m", &[7; 32], &[], &entries());
        let mut v: Value = serde_json::from_slice(&st).unwrap();
        f(&mut v);
        parse_statement(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn statement_field_errors() {
        let e = st_err(|v| v["_type"] = "x".into());
        assert!(e.contains("_type"), "{e}");
        let e = st_err(|v| v["predicateType"] = PREDICATE_TYPE_V01.into());
        assert!(e.contains("pre-1.0"), "{e}");
        let e = st_err(|v| v["predicate"]["serialization"]["method"] = "shards".into());
        assert!(e.contains("shard"), "{e}");
        let e = st_err(|v| v["predicate"]["serialization"]["hash_type"] = "blake3".into());
        assert!(e.contains("blake3"), "{e}");
        let e = st_err(|v| v["predicate"]["resources"][0]["digest"] = "abc".into());
        assert!(e.contains("predicate.resources[0].digest"), "{e}");
        let e = st_err(|v| v["predicate"]["resources"][0]["name"] = "../etc/passwd".into());
        assert!(e.contains("'..' component"), "{e}");
        let e = st_err(|v| v["predicate"]["resources"][0]["name"] = "/abs".into());
        assert!(e.contains("canonical"), "{e}");
        let e = st_err(|v| {
            let r = v["predicate"]["resources"][0].clone();
            v["predicate"]["resources"].as_array_mut().unwrap().push(r);
        });
        assert!(e.contains("duplicate"), "{e}");
        let e = st_err(|v| v["subject"] = Value::Array(vec![]));
        assert!(e.contains("exactly one subject"), "{e}");
        let e = st_err(|v| v["subject"][0]["digest"]["sha256"] = "zz".into());
        assert!(e.contains("subject[0].digest.sha256"), "{e}");
    }
}
