//! End-to-end tests of `ckptguard keygen | sign | verify` through the built binary:
//! exit codes (0 valid, 1 invalid, 2 usage/IO) and messages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ckptguard"))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = bin();
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run ckptguard");
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn run(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, args, &[])
}

#[track_caller]
fn expect(r: &Run, code: i32, needle: &str) {
    assert_eq!(
        r.code,
        code,
        "expected exit {code}, got {}:\n{}",
        r.code,
        r.all()
    );
    assert!(
        r.all().contains(needle),
        "expected {needle:?} in output:\n{}",
        r.all()
    );
}

/// A nested model directory plus a key pair, in a temp dir used as the working directory.
struct Fx {
    t: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("model");
        fs::create_dir_all(m.join("layers/0")).unwrap();
        fs::create_dir_all(m.join(".git")).unwrap();
        fs::write(m.join("config.json"), b"{\"dim\": 4}").unwrap();
        fs::write(m.join("layers/0/weights.bin"), vec![7u8; 100_000]).unwrap();
        fs::write(m.join("layers/bias.bin"), b"\x00\x01\x02").unwrap();
        fs::write(m.join(".hidden"), b"hidden files are signed").unwrap();
        fs::write(m.join(".git/HEAD"), b"ref: main").unwrap();
        let fx = Fx { t };
        expect(&fx.run(&["keygen", "-o", "key"]), 0, "key.pub.pem");
        fx
    }
    fn dir(&self) -> &Path {
        self.t.path()
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.t.path().join(rel)
    }
    fn run(&self, args: &[&str]) -> Run {
        run(self.dir(), args)
    }
    fn sign(&self) {
        expect(
            &self.run(&["sign", "--key", "key.pem", "model"]),
            0,
            "signed model: 4 files",
        );
    }
    fn verify(&self) -> Run {
        self.run(&["verify", "--key", "key.pub.pem", "model"])
    }
    fn bundle(&self) -> Value {
        serde_json::from_slice(&fs::read(self.p("model/model.sig")).unwrap()).unwrap()
    }
    fn write_bundle(&self, v: &Value) {
        fs::write(self.p("model/model.sig"), serde_json::to_vec(v).unwrap()).unwrap();
    }
}

// Minimal standard base64 (the CLI crate has no base64 dev-dependency).
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn b64_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .bytes()
        .filter(|&c| c != b'=')
        .map(|c| B64.iter().position(|&x| x == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let mut n = 0u32;
        for (i, v) in chunk.iter().enumerate() {
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn base64_helpers_roundtrip() {
    for s in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\xff\x00\x10"] {
        assert_eq!(b64_decode(&b64_encode(s)), s);
    }
    assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
}

#[test]
fn keygen_files_modes_and_overwrite() {
    let fx = Fx::new();
    let pem = fs::read_to_string(fx.p("key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let pubp = fs::read_to_string(fx.p("key.pub.pem")).unwrap();
    assert!(pubp.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pubp}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(fx.p("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    expect(
        &fx.run(&["keygen", "-o", "key"]),
        2,
        "already exists (use --force",
    );
    assert_eq!(
        fs::read_to_string(fx.p("key.pem")).unwrap(),
        pem,
        "must not be overwritten"
    );
    expect(
        &fx.run(&["keygen", "-o", "key.pem", "--force", "--curve", "p384"]),
        0,
        "P-384",
    );
    assert_ne!(fs::read_to_string(fx.p("key.pem")).unwrap(), pem);
    expect(
        &fx.run(&["keygen", "-o", "k", "--curve", "p999"]),
        2,
        "invalid value",
    );
}

#[test]
fn round_trip_directory_and_json() {
    let fx = Fx::new();
    fx.sign();
    let r = fx.verify();
    expect(&r, 0, "OK: model matches model/model.sig (4 files");
    let r = fx.run(&["verify", "-k", "key.pub.pem", "model", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["files"], 4);
    assert_eq!(v["subject_name"], "model");
    // The bundle has the model_signing shape.
    let b = fx.bundle();
    assert_eq!(
        b["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(
        b["dsseEnvelope"]["payloadType"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(
        b["verificationMaterial"]["tlogEntries"],
        Value::Array(vec![])
    );
    let payload: Value =
        serde_json::from_slice(&b64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap()))
            .unwrap();
    let names: Vec<&str> = payload["predicate"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            ".hidden",
            "config.json",
            "layers/0/weights.bin",
            "layers/bias.bin"
        ]
    );
    // Git files may change without invalidating.
    fs::write(fx.p("model/.git/HEAD"), b"ref: other").unwrap();
    expect(&fx.verify(), 0, "OK");
}

#[test]
fn round_trip_single_file_and_custom_signature() {
    let fx = Fx::new();
    let r = fx.run(&["sign", "-k", "key.pem", "model/config.json"]);
    expect(&r, 0, "signature: model/model.sig");
    expect(
        &fx.run(&["verify", "-k", "key.pub.pem", "model/config.json"]),
        0,
        "1 file",
    );
    let r = fx.run(&[
        "sign",
        "-k",
        "key.pem",
        "-s",
        "cfg.sig",
        "model/config.json",
        "--format",
        "json",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["subject_name"], "config.json");
    expect(
        &fx.run(&[
            "verify",
            "-k",
            "key.pub.pem",
            "-s",
            "cfg.sig",
            "model/config.json",
        ]),
        0,
        "OK",
    );
    fs::write(fx.p("model/config.json"), b"{\"dim\": 5}").unwrap();
    expect(
        &fx.run(&[
            "verify",
            "-k",
            "key.pub.pem",
            "-s",
            "cfg.sig",
            "model/config.json",
        ]),
        1,
        "1 changed (\".\")",
    );
    // A single-file signature does not verify a directory.
    expect(
        &fx.run(&["verify", "-k", "key.pub.pem", "-s", "cfg.sig", "model"]),
        1,
        "the signature is for a single file, but model is a directory",
    );
}

#[test]
fn tampered_files_are_reported_by_name() {
    let fx = Fx::new();
    fx.sign();
    // One byte flipped.
    let w = fx.p("model/layers/0/weights.bin");
    let mut data = fs::read(&w).unwrap();
    data[5000] ^= 1;
    fs::write(&w, &data).unwrap();
    let r = fx.verify();
    expect(&r, 1, "1 changed (\"layers/0/weights.bin\")");
    assert!(
        r.stderr.contains("changed  layers/0/weights.bin"),
        "{}",
        r.all()
    );
    data[5000] ^= 1;
    fs::write(&w, &data).unwrap();
    expect(&fx.verify(), 0, "OK");

    // A file added.
    fs::write(fx.p("model/layers/extra.py"), b"import os").unwrap();
    expect(&fx.verify(), 1, "1 added (\"layers/extra.py\")");
    let r = fx.run(&["verify", "-k", "key.pub.pem", "model", "--format", "json"]);
    assert_eq!(r.code, 1);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["error"]["kind"], "mismatch");
    assert_eq!(v["error"]["added"][0], "layers/extra.py");
    // ... tolerated with --ignore (a path relative to the working directory).
    expect(
        &fx.run(&[
            "verify",
            "-k",
            "key.pub.pem",
            "model",
            "--ignore",
            "model/layers/extra.py",
        ]),
        0,
        "OK",
    );
    fs::remove_file(fx.p("model/layers/extra.py")).unwrap();

    // A file removed.
    fs::remove_file(fx.p("model/layers/bias.bin")).unwrap();
    expect(&fx.verify(), 1, "1 missing (\"layers/bias.bin\")");
    fs::write(fx.p("model/layers/bias.bin"), b"\x00\x01\x02").unwrap();
    expect(&fx.verify(), 0, "OK");

    // A file renamed.
    fs::rename(fx.p("model/config.json"), fx.p("model/config2.json")).unwrap();
    let r = fx.verify();
    expect(&r, 1, "1 added (\"config2.json\")");
    assert!(
        r.all().contains("1 missing (\"config.json\")"),
        "{}",
        r.all()
    );
}

#[test]
fn another_key_is_rejected() {
    let fx = Fx::new();
    fx.sign();
    expect(&fx.run(&["keygen", "-o", "other"]), 0, "other.pub.pem");
    expect(
        &fx.run(&["verify", "-k", "other.pub.pem", "model"]),
        1,
        "wrong key: the signature was made with a different key",
    );
    expect(
        &fx.run(&["keygen", "-o", "p384", "--curve", "p384"]),
        0,
        "P-384",
    );
    expect(
        &fx.run(&["verify", "-k", "p384.pub.pem", "model"]),
        1,
        "wrong key",
    );
}

#[test]
fn edited_bundles_are_rejected() {
    let fx = Fx::new();
    fx.sign();
    let orig = fx.bundle();

    // Payload edited (a digest replaced), re-encoded: the signature no longer matches.
    let mut b = orig.clone();
    let mut payload: Value =
        serde_json::from_slice(&b64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap()))
            .unwrap();
    payload["predicate"]["resources"][0]["digest"] = "0".repeat(64).into();
    b["dsseEnvelope"]["payload"] = b64_encode(&serde_json::to_vec(&payload).unwrap()).into();
    fx.write_bundle(&b);
    expect(&fx.verify(), 1, "bad signature");

    // Signature bytes edited.
    let mut b = orig.clone();
    let mut sig = b64_decode(b["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap());
    let n = sig.len();
    sig[n - 2] ^= 0x10;
    b["dsseEnvelope"]["signatures"][0]["sig"] = b64_encode(&sig).into();
    fx.write_bundle(&b);
    expect(&fx.verify(), 1, "bad signature");

    // Signature not base64.
    let mut b = orig.clone();
    b["dsseEnvelope"]["signatures"][0]["sig"] = "%%%".into();
    fx.write_bundle(&b);
    expect(
        &fx.verify(),
        1,
        "dsseEnvelope.signatures[0].sig: invalid base64",
    );

    // Hint edited.
    let mut b = orig.clone();
    b["verificationMaterial"]["publicKey"]["hint"] = "1".repeat(64).into();
    fx.write_bundle(&b);
    expect(&fx.verify(), 1, "wrong key");

    // Media type edited.
    let mut b = orig.clone();
    b["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2".into();
    fx.write_bundle(&b);
    expect(&fx.verify(), 1, "unsupported bundle media type");

    // Field removed.
    let mut b = orig.clone();
    b["dsseEnvelope"]
        .as_object_mut()
        .unwrap()
        .remove("signatures");
    fx.write_bundle(&b);
    expect(&fx.verify(), 1, "dsseEnvelope.signatures: missing");

    // Truncated bundle.
    let bytes = serde_json::to_vec(&orig).unwrap();
    fs::write(fx.p("model/model.sig"), &bytes[..bytes.len() / 3]).unwrap();
    expect(
        &fx.verify(),
        1,
        "malformed signature bundle: (document): not valid JSON",
    );

    // Oversized bundle refused before parsing.
    fx.write_bundle(&orig);
    expect(
        &fx.run(&[
            "verify",
            "-k",
            "key.pub.pem",
            "model",
            "--max-signature-size",
            "100",
        ]),
        1,
        "refusing to parse it",
    );

    fx.write_bundle(&orig);
    expect(&fx.verify(), 0, "OK");
}

#[test]
fn encrypted_keys() {
    let fx = Fx::new();
    let env = [("CG_TEST_PW", "correct horse")];
    expect(
        &run_in(
            fx.dir(),
            &["keygen", "-o", "enc", "--password-env", "CG_TEST_PW"],
            &env,
        ),
        0,
        "encrypted",
    );
    let pem = fs::read_to_string(fx.p("enc.pem")).unwrap();
    assert!(
        pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{pem}"
    );
    expect(
        &fx.run(&["sign", "-k", "enc.pem", "model"]),
        2,
        "the private key is encrypted",
    );
    fs::write(fx.p("wrong.txt"), b"nope\n").unwrap();
    expect(
        &fx.run(&[
            "sign",
            "-k",
            "enc.pem",
            "--password-file",
            "wrong.txt",
            "model",
        ]),
        2,
        "wrong password",
    );
    fs::write(fx.p("pw.txt"), b"correct horse\n").unwrap();
    expect(
        &fx.run(&[
            "sign",
            "-k",
            "enc.pem",
            "--password-file",
            "pw.txt",
            "model",
        ]),
        0,
        "signed model",
    );
    expect(&fx.run(&["verify", "-k", "enc.pub.pem", "model"]), 0, "OK");
    expect(
        &fx.run(&[
            "sign",
            "-k",
            "enc.pem",
            "--password-env",
            "CG_UNSET_VAR_X",
            "model",
        ]),
        2,
        "CG_UNSET_VAR_X",
    );
}

#[test]
fn usage_and_key_errors_exit_2() {
    let fx = Fx::new();
    fx.sign();
    expect(
        &fx.run(&["verify", "-k", "missing.pem", "model"]),
        2,
        "cannot read public key missing.pem",
    );
    fs::write(fx.p("junk.pem"), b"this is not a key").unwrap();
    expect(
        &fx.run(&["verify", "-k", "junk.pem", "model"]),
        2,
        "not a PEM file",
    );
    expect(
        &fx.run(&["sign", "-k", "junk.pem", "model"]),
        2,
        "not a PEM file",
    );
    // Ed25519 (RFC 8410 test key) and RSA are refused by name.
    fs::write(
        fx.p("ed.pem"),
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    expect(
        &fx.run(&["sign", "-k", "ed.pem", "model"]),
        2,
        "unsupported key type Ed25519",
    );
    fs::write(
        fx.p("rsa.pem"),
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    expect(
        &fx.run(&["sign", "-k", "rsa.pem", "model"]),
        2,
        "unsupported key type RSA",
    );
    // A public key where a private key is needed.
    expect(
        &fx.run(&["sign", "-k", "key.pub.pem", "model"]),
        2,
        "expected a private key",
    );
    // The private key is accepted for verification (its public half is used).
    expect(&fx.run(&["verify", "-k", "key.pem", "model"]), 0, "OK");
    expect(
        &fx.run(&["verify", "-k", "key.pub.pem", "-s", "nope.sig", "model"]),
        2,
        "cannot read signature nope.sig",
    );
    expect(
        &fx.run(&["verify", "-k", "key.pub.pem", "no-such-model"]),
        2,
        "does not exist",
    );
    expect(
        &fx.run(&["sign", "-k", "key.pem", "no-such-model"]),
        2,
        "does not exist",
    );
    expect(
        &fx.run(&["sign", "-k", "key.pem", "--ignore", "elsewhere", "model"]),
        2,
        "not inside the model directory",
    );
    expect(&fx.run(&["verify", "--bogus-flag"]), 2, "");
    expect(&fx.run(&["sign", "model"]), 2, "--key");
}

#[cfg(unix)]
#[test]
fn symlinks_are_refused() {
    let fx = Fx::new();
    std::os::unix::fs::symlink("/etc/hostname", fx.p("model/link")).unwrap();
    expect(
        &fx.run(&["sign", "-k", "key.pem", "model"]),
        2,
        "is a symbolic link",
    );
    expect(
        &fx.run(&["sign", "-k", "key.pem", "--ignore", "model/link", "model"]),
        0,
        "signed model",
    );
    // Added after signing: invalid (exit 1), not a usage error.
    std::os::unix::fs::symlink("/etc/hostname", fx.p("model/layers/link2")).unwrap();
    expect(&fx.verify(), 1, "is a symbolic link");
}

#[test]
fn sign_time_ignore_is_recorded() {
    let fx = Fx::new();
    expect(
        &fx.run(&[
            "sign",
            "-k",
            "key.pem",
            "--ignore",
            "model/layers/0",
            "model",
        ]),
        0,
        "signed model: 3 files",
    );
    // The verifier needs no flag: the ignore path is in the signature.
    fs::write(fx.p("model/layers/0/weights.bin"), b"retrained").unwrap();
    fs::write(fx.p("model/layers/0/new.bin"), b"new").unwrap();
    expect(&fx.verify(), 0, "3 files");
}
