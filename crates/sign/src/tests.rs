//! Sign/verify round trips and tamper cases on temporary directories.

use super::*;
use serde_json::Value;
use std::fs;

fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("model");
    fs::create_dir_all(m.join("sub/deep")).unwrap();
    fs::create_dir_all(m.join(".hidden")).unwrap();
    fs::create_dir_all(m.join("empty")).unwrap();
    fs::create_dir_all(m.join(".git")).unwrap();
    fs::write(m.join("a.bin"), b"a\n").unwrap();
    fs::write(m.join("sub/b.txt"), b"b\n").unwrap();
    fs::write(m.join("sub/deep/c"), b"c\n").unwrap();
    fs::write(m.join(".hidden/x"), b"h\n").unwrap();
    fs::write(m.join(".gitignore"), b"g\n").unwrap();
    fs::write(m.join(".git/HEAD"), b"ref\n").unwrap();
    fs::write(m.join("sub-x"), b"z\n").unwrap();
    fs::write(m.join("sub.a"), b"y\n").unwrap();
    t
}

struct Fx {
    _t: tempfile::TempDir,
    model: PathBuf,
    sig: PathBuf,
    key: PrivateKey,
    pub_pem: String,
}

fn signed(curve: Curve) -> Fx {
    let t = tree();
    let model = t.path().join("model");
    let sig = default_signature_path(&model);
    let key = PrivateKey::generate(curve);
    sign_model(&model, &sig, &key, &SignOptions::default()).unwrap();
    let pub_pem = key.public_key().to_spki_pem();
    Fx {
        _t: t,
        model,
        sig,
        key,
        pub_pem,
    }
}

impl Fx {
    fn verify(&self) -> Result<VerifiedModel, VerifyError> {
        verify_model(
            &self.model,
            &self.sig,
            self.pub_pem.as_bytes(),
            &VerifyOptions::default(),
        )
    }
    fn payload(&self) -> Value {
        let b: Value = serde_json::from_slice(&fs::read(&self.sig).unwrap()).unwrap();
        let p = b["dsseEnvelope"]["payload"].as_str().unwrap();
        serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, p).unwrap(),
        )
        .unwrap()
    }
    fn edit_bundle(&self, f: impl Fn(&mut Value)) {
        let mut b: Value = serde_json::from_slice(&fs::read(&self.sig).unwrap()).unwrap();
        f(&mut b);
        fs::write(&self.sig, serde_json::to_vec(&b).unwrap()).unwrap();
    }
}

#[test]
fn directory_round_trip_and_manifest_shape() {
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        let fx = signed(curve);
        let v = fx.verify().unwrap();
        assert_eq!(v.files, 6, "{curve}");
        assert_eq!(v.subject_name, "model");
        assert_eq!(v.curve, curve);
        let p = fx.payload();
        let names: Vec<&str> = p["predicate"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        // Hidden files included, .git/.gitignore/model.sig/empty dir excluded, component order.
        assert_eq!(
            names,
            [
                ".hidden/x",
                "a.bin",
                "sub/b.txt",
                "sub/deep/c",
                "sub-x",
                "sub.a"
            ]
        );
        let ig: Vec<&str> = p["predicate"]["serialization"]["ignore_paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(
            ig,
            [
                ".git",
                ".gitattributes",
                ".github",
                ".gitignore",
                "model.sig"
            ]
        );
        assert_eq!(p["subject"][0]["digest"]["sha256"], v.root_digest.as_str());
        // Same digests model_signing computed for the same tree.
        assert_eq!(
            p["predicate"]["resources"][1]["digest"],
            "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"
        );
    }
}

#[test]
fn single_file_round_trip() {
    let t = tree();
    let f = t.path().join("model/a.bin");
    let sig = default_signature_path(&f);
    assert_eq!(sig, t.path().join("model/model.sig"));
    let key = PrivateKey::generate(Curve::P256);
    let s = sign_model(&f, &sig, &key, &SignOptions::default()).unwrap();
    assert_eq!(s.files, 1);
    assert_eq!(s.subject_name, "a.bin");
    // model_signing's digest for "a\n" as a single-file model.
    assert_eq!(
        s.root_digest,
        "225f1bbbc4b1a3d97c622a492d91ea8d6858d7e1164bbbb5953f74311d6d222e"
    );
    let pem = key.public_key().to_spki_pem();
    let v = verify_model(&f, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap();
    assert_eq!(v.entries[0].name, ".");
    // A renamed file still verifies (names are informative).
    let g = t.path().join("renamed.bin");
    fs::rename(&f, &g).unwrap();
    verify_model(&g, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap();
    fs::write(&g, b"b\n").unwrap();
    let e = verify_model(&g, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Mismatch(d) if d.changed.len() == 1 && d.changed[0].name == "."),
        "{e}"
    );
    // Single-file signature against a directory.
    let e = verify_model(
        &t.path().join("model"),
        &sig,
        pem.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::ModelKindMismatch { .. }), "{e}");
    assert!(e.is_invalid());
}

#[test]
fn one_byte_flipped() {
    let fx = signed(Curve::P256);
    let p = fx.model.join("sub/deep/c");
    fs::write(&p, b"C\n").unwrap();
    let e = fx.verify().unwrap_err();
    let VerifyError::Mismatch(d) = &e else {
        panic!("{e}")
    };
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].name, "sub/deep/c");
    assert!(d.added.is_empty() && d.missing.is_empty());
    assert!(e.to_string().contains("1 changed (\"sub/deep/c\")"), "{e}");
    assert_eq!(e.kind(), "mismatch");
}

#[test]
fn added_removed_renamed() {
    let fx = signed(Curve::P256);
    fs::write(fx.model.join("sub/new.py"), b"import os").unwrap();
    let e = fx.verify().unwrap_err();
    assert!(
        matches!(&e, VerifyError::Mismatch(d) if d.added == ["sub/new.py"]),
        "{e}"
    );
    fs::remove_file(fx.model.join("sub/new.py")).unwrap();
    fx.verify().unwrap();

    fs::remove_file(fx.model.join("a.bin")).unwrap();
    let e = fx.verify().unwrap_err();
    assert!(
        matches!(&e, VerifyError::Mismatch(d) if d.missing == ["a.bin"]),
        "{e}"
    );
    fs::write(fx.model.join("a.bin"), b"a\n").unwrap();
    fx.verify().unwrap();

    fs::rename(fx.model.join("sub.a"), fx.model.join("sub.b")).unwrap();
    let e = fx.verify().unwrap_err();
    assert!(
        matches!(&e, VerifyError::Mismatch(d) if d.missing == ["sub.a"] && d.added == ["sub.b"]),
        "{e}"
    );
}

#[test]
fn ignored_and_git_files_may_change() {
    let fx = signed(Curve::P256);
    fs::write(fx.model.join(".git/HEAD"), b"other\n").unwrap();
    fs::write(fx.model.join(".gitattributes"), b"*.bin lfs\n").unwrap();
    fs::create_dir(fx.model.join("more-empty")).unwrap();
    fx.verify().unwrap();
    // Ignoring at verify time never hides a signed file.
    let opts = VerifyOptions {
        ignore_paths: vec!["sub".into()],
        ..Default::default()
    };
    fs::write(fx.model.join("sub/b.txt"), b"changed").unwrap();
    let e = verify_model(&fx.model, &fx.sig, fx.pub_pem.as_bytes(), &opts).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Mismatch(d) if d.changed[0].name == "sub/b.txt"),
        "{e}"
    );
    // But it tolerates unsigned files there.
    fs::write(fx.model.join("sub/b.txt"), b"b\n").unwrap();
    fs::write(fx.model.join("sub/notes.md"), b"n").unwrap();
    verify_model(&fx.model, &fx.sig, fx.pub_pem.as_bytes(), &opts).unwrap();
    assert!(fx.verify().is_err());
}

#[test]
fn sign_time_ignores_are_recorded_and_honoured() {
    let t = tree();
    let model = t.path().join("model");
    let sig = t.path().join("outside.sig");
    let key = PrivateKey::generate(Curve::P256);
    let opts = SignOptions {
        ignore_paths: vec!["sub/deep".into(), "./a.bin".into()],
        ..Default::default()
    };
    let s = sign_model(&model, &sig, &key, &opts).unwrap();
    assert_eq!(s.files, 4);
    assert_eq!(
        s.ignore_paths,
        [
            ".git",
            ".gitattributes",
            ".github",
            ".gitignore",
            "a.bin",
            "sub/deep"
        ]
    );
    // The verifier reads the recorded ignore paths: no options needed.
    fs::write(model.join("sub/deep/c"), b"whatever").unwrap();
    fs::write(model.join("a.bin"), b"whatever").unwrap();
    let pem = key.public_key().to_spki_pem();
    verify_model(&model, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap();
    // Bad ignore paths are refused.
    for bad in ["../x", "/abs", "."] {
        let opts = SignOptions {
            ignore_paths: vec![bad.into()],
            ..Default::default()
        };
        let e = sign_model(&model, &sig, &key, &opts).unwrap_err();
        assert!(e.to_string().contains("invalid ignore path"), "{bad}: {e}");
    }
}

#[test]
fn wrong_key_and_curve() {
    let fx = signed(Curve::P256);
    let other = PrivateKey::generate(Curve::P256).public_key().to_spki_pem();
    let e = verify_model(
        &fx.model,
        &fx.sig,
        other.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
    assert!(e.to_string().starts_with("wrong key"), "{e}");
    // Without the hint, the signature check itself catches it.
    fx.edit_bundle(|b| b["verificationMaterial"]["publicKey"] = serde_json::json!({}));
    let e = verify_model(
        &fx.model,
        &fx.sig,
        other.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature(_)), "{e}");
    let p384 = PrivateKey::generate(Curve::P384).public_key().to_spki_pem();
    let e = verify_model(
        &fx.model,
        &fx.sig,
        p384.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature(_)), "{e}");
    // The right key still works, with a warning about the missing hint.
    let v = fx.verify().unwrap();
    assert_eq!(v.warnings.len(), 1);
    let _ = &fx.key;
}

#[test]
fn edited_bundles_are_rejected() {
    let fx = signed(Curve::P256);
    let original = fs::read(&fx.sig).unwrap();
    let restore = || fs::write(&fx.sig, &original).unwrap();

    // Payload: change one digest, re-encode (signature no longer matches).
    fx.edit_bundle(|b| {
        let mut p = fx.payload();
        p["predicate"]["resources"][0]["digest"] = "00".repeat(32).into();
        let enc = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            serde_json::to_vec(&p).unwrap(),
        );
        b["dsseEnvelope"]["payload"] = enc.into();
    });
    let e = fx.verify().unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature(_)), "{e}");
    restore();

    // Signature bytes: flip one bit inside the DER (still valid base64).
    fx.edit_bundle(|b| {
        let s = b["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap();
        let mut der =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).unwrap();
        let n = der.len();
        der[n - 3] ^= 1;
        b["dsseEnvelope"]["signatures"][0]["sig"] =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der).into();
    });
    let e = fx.verify().unwrap_err();
    assert!(matches!(e, VerifyError::BadSignature(_)), "{e}");
    restore();

    fx.edit_bundle(|b| b["dsseEnvelope"]["signatures"][0]["sig"] = "not base64!".into());
    let e = fx.verify().unwrap_err();
    assert!(
        e.to_string()
            .contains("dsseEnvelope.signatures[0].sig: invalid base64"),
        "{e}"
    );
    restore();

    fx.edit_bundle(|b| b["verificationMaterial"]["publicKey"]["hint"] = "ab".repeat(32).into());
    let e = fx.verify().unwrap_err();
    assert!(matches!(e, VerifyError::WrongKey { .. }), "{e}");
    restore();

    fx.edit_bundle(|b| b["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.2+json".into());
    let e = fx.verify().unwrap_err();
    assert!(matches!(e, VerifyError::UnsupportedMediaType { .. }), "{e}");
    restore();

    fs::write(&fx.sig, &original[..original.len() / 2]).unwrap();
    let e = fx.verify().unwrap_err();
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    assert!(e.is_invalid());
    restore();

    fx.verify().unwrap();
}

#[test]
fn signed_but_inconsistent_manifest() {
    // A correctly signed statement whose subject digest does not match its resources.
    let t = tree();
    let model = t.path().join("model");
    let key = PrivateKey::generate(Curve::P256);
    let entries = hash_model(&model, None, &SignOptions::default()).unwrap();
    let payload = bundle::statement_json("model", &[0; 32], &[], &entries);
    let sig = key.sign_der(&pae(PAYLOAD_TYPE, &payload)).unwrap();
    let b = bundle::bundle_json(&payload, &sig, &key.public_key().hint());
    let sp = t.path().join("x.sig");
    fs::write(&sp, b).unwrap();
    let pem = key.public_key().to_spki_pem();
    let e = verify_model(&model, &sp, pem.as_bytes(), &VerifyOptions::default()).unwrap_err();
    assert!(matches!(e, VerifyError::ManifestInconsistent { .. }), "{e}");
}

#[test]
fn oversized_and_missing_bundles() {
    let fx = signed(Curve::P256);
    let opts = VerifyOptions {
        max_bundle_bytes: 100,
        ..Default::default()
    };
    let e = verify_model(&fx.model, &fx.sig, fx.pub_pem.as_bytes(), &opts).unwrap_err();
    assert!(matches!(e, VerifyError::BundleTooLarge { .. }), "{e}");
    let e = verify_model(
        &fx.model,
        &fx.model.join("nope.sig"),
        fx.pub_pem.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(!e.is_invalid(), "{e}");
    let e = verify_model(&fx.model, &fx.sig, b"garbage", &VerifyOptions::default()).unwrap_err();
    assert!(!e.is_invalid(), "{e}");
}

#[cfg(unix)]
#[test]
fn symlinks_and_special_files_are_refused() {
    let t = tree();
    let model = t.path().join("model");
    std::os::unix::fs::symlink("/etc/passwd", model.join("link")).unwrap();
    let key = PrivateKey::generate(Curve::P256);
    let e = sign_model(
        &model,
        &t.path().join("m.sig"),
        &key,
        &SignOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // An ignored symlink is fine.
    let opts = SignOptions {
        ignore_paths: vec!["link".into()],
        ..Default::default()
    };
    sign_model(&model, &t.path().join("m.sig"), &key, &opts).unwrap();
    // A model path that is a symlink is refused too.
    let l2 = t.path().join("model-link");
    std::os::unix::fs::symlink(&model, &l2).unwrap();
    let e = sign_model(&l2, &t.path().join("m.sig"), &key, &opts).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = sign_model(
        &t.path().join("model-link/"),
        &t.path().join("m.sig"),
        &key,
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // At verification, a symlink added to a signed model is "invalid".
    sign_model(&model, &t.path().join("m.sig"), &key, &opts).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", model.join("sub/evil")).unwrap();
    let pem = key.public_key().to_spki_pem();
    let e = verify_model(
        &model,
        &t.path().join("m.sig"),
        pem.as_bytes(),
        &VerifyOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.is_invalid() && e.to_string().contains("symbolic link"),
        "{e}"
    );
}

#[test]
fn signature_inside_custom_location_is_excluded() {
    let t = tree();
    let model = t.path().join("model");
    let sig = model.join("sub/sigs.json");
    let key = PrivateKey::generate(Curve::P256);
    let s = sign_model(&model, &sig, &key, &SignOptions::default()).unwrap();
    assert!(s.ignore_paths.contains(&"sub/sigs.json".to_string()));
    let pem = key.public_key().to_spki_pem();
    verify_model(&model, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap();
    // Re-signing over an existing signature works and does not include it.
    let s2 = sign_model(&model, &sig, &key, &SignOptions::default()).unwrap();
    assert_eq!(s2.files, s.files);
}

#[test]
fn model_name_for_dot_paths() {
    let t = tree();
    let model = t.path().join("model");
    assert_eq!(model::model_name(&model.join(".")), "model");
    assert_eq!(model::model_name(&model.join("sub/..")), "model");
    assert_eq!(model::model_name(&model.join("a.bin")), "a.bin");
}

#[test]
fn empty_directory_model() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("empty");
    fs::create_dir(&m).unwrap();
    let key = PrivateKey::generate(Curve::P256);
    let sig = default_signature_path(&m);
    let s = sign_model(&m, &sig, &key, &SignOptions::default()).unwrap();
    assert_eq!(s.files, 0);
    let pem = key.public_key().to_spki_pem();
    verify_model(&m, &sig, pem.as_bytes(), &VerifyOptions::default()).unwrap();
    fs::write(m.join("x"), b"").unwrap();
    assert!(verify_model(&m, &sig, pem.as_bytes(), &VerifyOptions::default()).is_err());
}

#[test]
fn large_file_parallel_hashing_matches_sha256() {
    use sha2::{Digest, Sha256};
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    fs::create_dir(&m).unwrap();
    let mut big = vec![0u8; model::PIPELINE_MIN as usize + model::READ_BUF + 12345];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    fs::write(m.join("big"), &big).unwrap();
    for i in 0..50 {
        fs::write(m.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    // Medium file on the plain (non-pipelined) path.
    fs::write(m.join("medium"), &big[..model::READ_BUF * 2 + 7]).unwrap();
    let entries = hash_model(&m, None, &SignOptions::default()).unwrap();
    assert_eq!(entries.len(), 52);
    let med = entries.iter().find(|e| e.name == "medium").unwrap();
    assert_eq!(
        med.digest,
        <[u8; 32]>::from(Sha256::digest(&big[..model::READ_BUF * 2 + 7]))
    );
    let e = entries.iter().find(|e| e.name == "big").unwrap();
    assert_eq!(e.digest, <[u8; 32]>::from(Sha256::digest(&big)));
    assert_eq!(e.size, big.len() as u64);
}

#[test]
fn refuses_to_overwrite_a_non_signature_file() {
    let t = tree();
    let model = t.path().join("model");
    let key = PrivateKey::generate(Curve::P256);
    let e = sign_model(&model, &model.join("a.bin"), &key, &SignOptions::default()).unwrap_err();
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
    assert_eq!(fs::read(model.join("a.bin")).unwrap(), b"a\n");
    // Replacing an existing signature is fine.
    let sig = default_signature_path(&model);
    sign_model(&model, &sig, &key, &SignOptions::default()).unwrap();
    sign_model(&model, &sig, &key, &SignOptions::default()).unwrap();
}
