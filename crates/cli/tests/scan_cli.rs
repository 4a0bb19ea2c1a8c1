//! End-to-end tests of `ckptguard scan` / `disasm` / `codes`: run the binary, assert exit codes
//! and output. Fixture verdicts come from the manifests the fixture generators write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn ckptguard(args: &[&str]) -> Output {
    ckptguard_in(&root(), args)
}

fn ckptguard_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckptguard"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_scan(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = vec!["scan", "--format", "json"];
    a.extend_from_slice(args);
    let o = ckptguard(&a);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    (o.status.code().unwrap(), v)
}

/// Every fixture in a manifest gets the verdict the manifest expects.
fn check_manifest(manifest: &str, dir: &str) {
    let m: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join(manifest)).unwrap()).unwrap();
    assert!(m.len() > 10, "manifest {manifest} is nearly empty");
    let (code, report) = json_scan(&[dir]);
    assert_eq!(code, 1, "the fixture tree holds unsafe files");
    let files = report["files"].as_array().unwrap();
    let mut wrong = Vec::new();
    for e in &m {
        let path = e["path"].as_str().unwrap();
        let expect = e["expect"].as_str().unwrap();
        let got: Vec<&serde_json::Value> = files
            .iter()
            .filter(|f| {
                let p = f["path"].as_str().unwrap();
                p == path || p.starts_with(&format!("{path}/"))
            })
            .collect();
        assert!(!got.is_empty(), "{path} not reported");
        let verdict = if got.iter().any(|f| f["verdict"] == "unsafe") {
            "unsafe"
        } else if got.iter().any(|f| f["verdict"] == "error") {
            "error"
        } else {
            "safe"
        };
        if verdict != expect {
            let why: Vec<String> = got
                .iter()
                .flat_map(|f| {
                    f["findings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| format!("{} {}", x["code"], x["message"]))
                })
                .take(4)
                .collect();
            wrong.push(format!("{path}: expected {expect}, got {verdict}: {why:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn pickle_fixtures_match_manifest() {
    check_manifest("fixtures/pickle/manifest.json", "fixtures/pickle");
}

#[test]
fn container_fixtures_match_manifest() {
    check_manifest("fixtures/containers/manifest.json", "fixtures/containers");
}

#[test]
fn dcp_relative_path_escape_is_critical() {
    let (code, r) = json_scan(&["fixtures/containers/dcp/mal_relative_path"]);
    assert_eq!(code, 1);
    let dir = &r["files"][0];
    assert_eq!(dir["format"], "dcp-dir");
    assert_eq!(dir["findings"][0]["code"], "CG402");
}

#[test]
fn deepspeed_latest_traversal_and_shipped_script() {
    let (code, r) = json_scan(&["fixtures/containers/deepspeed/mal_latest_traversal/model.ckpt"]);
    assert_eq!(code, 1);
    let codes: Vec<&str> = r["files"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["CG402", "CG403"]);
    // The benign DeepSpeed directory: the script is a warning, not a failure.
    let (code, r) = json_scan(&["fixtures/containers/deepspeed/benign/model.ckpt"]);
    assert_eq!(code, 0, "{r}");
}

#[test]
fn torch_zip_bytes_read_stay_small_and_weights_only_is_reported() {
    let (code, r) = json_scan(&["fixtures/containers/lightning/trainer_fit.ckpt"]);
    assert_eq!(code, 0);
    let f = &r["files"][0];
    assert_eq!(f["format"], "torch-zip");
    let w = &f["weights_only"];
    assert_eq!(w["accepted"], false);
    let needs: Vec<&str> = w["needs_safe_globals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(
        needs.contains(&"argparse.Namespace") && needs.contains(&"numpy.dtypes.Float64DType"),
        "{needs:?}"
    );
    let (_, r) = json_scan(&["fixtures/containers/torch_zip/benign_state_dict.pt"]);
    assert_eq!(r["files"][0]["weights_only"]["accepted"], true);
}

#[test]
fn torchscript_is_unsafe_even_at_fail_on_critical() {
    let (code, r) = json_scan(&[
        "--fail-on",
        "critical",
        "fixtures/containers/torchscript/scripted_module.pt",
    ]);
    assert_eq!(code, 1);
    assert_eq!(r["files"][0]["format"], "torchscript");
    assert!(r["files"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["code"] == "CG312"));
}

#[test]
fn unsafe_file_text_output_names_the_call() {
    let o = ckptguard(&[
        "scan",
        "fixtures/pickle/malicious/opcode/memo_dup_pop_memoize.pkl",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(s.starts_with("UNSAFE "), "{s}");
    assert!(s.contains("CG101 dangerous-call"), "{s}");
    assert!(s.contains("os.system(\"touch ckptguard_pwned\")"), "{s}");
    assert!(s.contains("at:    byte "), "{s}");
    assert!(s.contains("why:"), "{s}");
    assert!(!s.contains("\x1b["), "no colour when not a terminal");
}

#[test]
fn safe_file_exits_zero() {
    let o = ckptguard(&["scan", "fixtures/pickle/benign/plain/plain_data_p4.pkl"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("SAFE "));
}

#[test]
fn json_schema_fields() {
    let (code, r) = json_scan(&[
        "fixtures/pickle/malicious/opcode/inst_opcode.pkl",
        "fixtures/pickle/benign/plain/plain_data_p2.pkl",
    ]);
    assert_eq!(code, 1);
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["tool"]["name"], "ckptguard");
    assert_eq!(r["fail_on"], "high");
    assert_eq!(r["summary"]["files"], 2);
    assert_eq!(r["summary"]["unsafe"], 1);
    let f = &r["files"][0];
    assert_eq!(f["path"], "fixtures/pickle/benign/plain/plain_data_p2.pkl");
    assert_eq!(f["verdict"], "safe");
    let f = &r["files"][1];
    assert_eq!(f["verdict"], "unsafe");
    let x = &f["findings"][0];
    for k in [
        "code", "name", "severity", "message", "offset", "global", "call",
    ] {
        assert!(!x[k].is_null(), "finding field {k} missing: {x}");
    }
    assert!(f["size"].as_u64().unwrap() > 0);
    assert!(f["bytes_read"].as_u64().unwrap() > 0);
}

#[test]
fn fail_on_critical_lets_unknown_globals_pass_but_never_malformed() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown class: high, not critical.
    let p = dir.path().join("custom.pkl");
    std::fs::write(&p, b"\x80\x02cmypkg.models\nNet\n)R.").unwrap();
    let (code, _) = json_scan(&[p.to_str().unwrap()]);
    assert_eq!(code, 1);
    let (code, r) = json_scan(&["--fail-on", "critical", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["files"][0]["findings"][0]["code"], "CG103");
    // A truncated stream is never safe.
    let t = dir.path().join("trunc.pkl");
    std::fs::write(&t, b"\x80\x02]q\x00(K\x01").unwrap();
    let (code, r) = json_scan(&["--fail-on", "critical", t.to_str().unwrap()]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["files"][0]["findings"][0]["blocking"], true);
}

#[test]
fn config_allows_a_global_and_bad_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let p = models.join("custom.pkl");
    std::fs::write(&p, b"\x80\x02cmypkg.models\nNet\n)R.").unwrap();
    std::fs::write(
        dir.path().join("ckptguard.toml"),
        "[allow]\nglobals = [\"mypkg.models.Net\"]\n",
    )
    .unwrap();
    let scan_in = |args: &[&str]| {
        let mut a = vec!["scan", "--format", "json"];
        a.extend_from_slice(args);
        let o = ckptguard_in(dir.path(), &a);
        (
            o.status.code().unwrap(),
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default(),
            o,
        )
    };
    let (code, r, _) = scan_in(&["models/custom.pkl"]);
    assert_eq!(
        code, 0,
        "the project config (in the working directory) applies: {r}"
    );
    // Scanned from elsewhere, the project config is not in effect.
    assert_eq!(json_scan(&[p.to_str().unwrap()]).0, 1);
    // os.system stays unsafe whatever the config adds.
    std::fs::write(
        models.join("evil.pkl"),
        b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.",
    )
    .unwrap();
    assert_eq!(scan_in(&["models/evil.pkl"]).0, 1);
    std::fs::write(dir.path().join("ckptguard.toml"), "[allow]\nglobalz = 1\n").unwrap();
    let (code, _, o) = scan_in(&["models/custom.pkl"]);
    assert_eq!(code, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("ckptguard: error: invalid config"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let o = ckptguard(&["scan", "no/such/file.pkl"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no/such/file.pkl") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1);
    assert_eq!(ckptguard(&["scan"]).status.code(), Some(2));
    assert_eq!(
        ckptguard(&["scan", "--format", "xml", "x"]).status.code(),
        Some(2)
    );
    assert_eq!(ckptguard(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(ckptguard(&["codes", "CG999"]).status.code(), Some(2));
}

#[test]
fn directories_are_deterministic_and_survive_loops_and_junk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("b/c")).unwrap();
    std::fs::write(
        d.join("b/c/evil.pkl"),
        b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.",
    )
    .unwrap();
    std::fs::write(d.join("a.pkl"), b"\x80\x02K\x01.").unwrap();
    std::fs::write(d.join("README.md"), b"# just text\n").unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(d, d.join("b/loop")).unwrap();
        std::os::unix::fs::symlink(d.join("missing"), d.join("dangling")).unwrap();
    }
    let (code, r) = json_scan(&[d.to_str().unwrap()]);
    assert_eq!(code, 1);
    let verdicts: Vec<(String, String)> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(d.to_str().unwrap())
                    .unwrap()
                    .to_string(),
                f["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect: Vec<(&str, &str)> = vec![
        ("/README.md", "skipped"),
        ("/a.pkl", "safe"),
        ("/b/c/evil.pkl", "unsafe"),
        ("/b/loop", "error"),
        ("/dangling", "error"),
    ];
    let got: Vec<(&str, &str)> = verdicts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, expect);
    let (_, again) = json_scan(&[d.to_str().unwrap()]);
    assert_eq!(r, again, "same input, same report");
}

#[test]
fn globals_flag_lists_imports() {
    let o = ckptguard(&[
        "scan",
        "--globals",
        "fixtures/pickle/benign/plain/plain_data_p2.pkl",
    ]);
    let s = stdout(&o);
    assert!(s.contains("globals:"), "{s}");
    assert!(s.contains("collections.OrderedDict"), "{s}");
}

#[test]
fn disasm_annotates_symbolically() {
    let o = ckptguard(&[
        "disasm",
        "fixtures/pickle/malicious/opcode/memo_dup_pop_memoize.pkl",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("STACK_GLOBAL"), "{s}");
    assert!(s.contains("-> os.system\n"), "{s}");
    assert!(s.contains("REDUCE"), "{s}");
    assert!(s.contains("-> os.system(\"touch ckptguard_pwned\")"), "{s}");
}

#[test]
fn codes_are_listed() {
    let o = ckptguard(&["codes"]);
    let s = stdout(&o);
    assert!(s.contains("CG101 dangerous-call (critical)"), "{s}");
    assert!(s.contains("CG201 malformed-pickle (high, blocking)"), "{s}");
    let o = ckptguard(&["codes", "unknown-call"]);
    assert!(stdout(&o).starts_with("CG103 unknown-call"));
}

#[test]
fn help_mentions_every_command() {
    let s = stdout(&ckptguard(&["--help"]));
    for c in ["scan", "disasm", "codes", "keygen", "sign", "verify"] {
        assert!(s.contains(c), "{c} missing from --help");
    }
    let s = stdout(&ckptguard(&["scan", "--help"]));
    for f in ["--format", "--fail-on", "--globals", "--config", "--stats"] {
        assert!(s.contains(f), "{f} missing from scan --help");
    }
}

#[test]
fn require_signature_makes_unsigned_or_tampered_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(
        root().join("fixtures/containers/torch_zip/benign_state_dict.pt"),
        model.join("weights.pt"),
    )
    .unwrap();
    let key = dir.path().join("key");
    let k = key.to_str().unwrap();
    assert_eq!(ckptguard(&["keygen", "-o", k]).status.code(), Some(0));
    let m = model.to_str().unwrap();
    let pubkey = format!("{k}.pub.pem");
    // Unsigned: unsafe although the weights are clean.
    let (code, r) = json_scan(&["--require-signature", "--key", &pubkey, m]);
    assert_eq!(code, 1, "{r}");
    let sig_row = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["format"] == "signature")
        .unwrap();
    assert_eq!(sig_row["findings"][0]["code"], "CG501");
    // Signed: safe.
    let o = ckptguard(&["sign", "--key", &format!("{k}.pem"), m]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (code, r) = json_scan(&["--require-signature", "--key", &pubkey, m]);
    assert_eq!(code, 0, "{r}");
    // Tampered: one byte flipped.
    let mut w = std::fs::read(model.join("weights.pt")).unwrap();
    let n = w.len();
    w[n - 100] ^= 1;
    std::fs::write(model.join("weights.pt"), w).unwrap();
    let (code, r) = json_scan(&["--require-signature", "--key", &pubkey, m]);
    assert_eq!(code, 1, "{r}");
    let msg = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["format"] == "signature")
        .unwrap()["findings"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("weights.pt"), "{msg}");
    // --key without --require-signature is a usage error.
    assert_eq!(
        ckptguard(&["scan", "--key", &pubkey, m]).status.code(),
        Some(2)
    );
}

#[test]
fn a_scanned_artifact_cannot_vouch_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("downloaded_model");
    std::fs::create_dir_all(model.join("sub")).unwrap();
    std::fs::write(
        model.join("sub/weights.pkl"),
        b"\x80\x02cevilpkg.loader\nRun\n)R.",
    )
    .unwrap();
    // The model ships a config allowing its own loader class and lowering the bar.
    std::fs::write(
        model.join("ckptguard.toml"),
        "[allow]\nglobals = [\"evilpkg.loader.Run\"]\n[scan]\nfail_on = \"critical\"\n",
    )
    .unwrap();
    // Scanned from outside, or as a whole from inside: the model's config is part of the model.
    // (From inside the download, scanning a sub-path, its config is indistinguishable from a
    // project's; the report then names it — README "Configuration" explains the trust model.)
    for (cwd, target) in [
        (dir.path(), "downloaded_model"),
        (dir.path(), "downloaded_model/sub/weights.pkl"),
        (model.as_path(), "."),
    ] {
        let o = ckptguard_in(cwd, &["scan", "--format", "json", target]);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{target} from {cwd:?}: the artifact's own config must not apply: {r}"
        );
        assert!(r.get("configs").is_none(), "{r}");
    }
    // A config can never allow a known-dangerous primitive, even passed explicitly.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[allow]\nglobals = [\"posix.system\"]\n").unwrap();
    let o = ckptguard(&[
        "scan",
        "--config",
        bad.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be allowed"));
    // A project config above the model, in the working directory, applies — and the report says so.
    std::fs::write(
        dir.path().join("ckptguard.toml"),
        "[allow]\nglobals = [\"evilpkg.loader.Run\"]\n",
    )
    .unwrap();
    let o = ckptguard_in(
        dir.path(),
        &["scan", "--format", "json", "downloaded_model"],
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{r}");
    assert!(
        r["configs"][0]
            .as_str()
            .unwrap()
            .ends_with("ckptguard.toml"),
        "{r}"
    );
}
