//! End-to-end tests of `ckptguard inspect` / `convert`: run the binary on real torch fixtures
//! (`fixtures/gen_load.py`, `fixtures/gen_containers.py`) and malicious ones; check exit codes,
//! output files, and that failures leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn fixture(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn run(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckptguard"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn manifest(rel: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(root().join(rel))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default()
}

/// A parsed safetensors file: header JSON and the data section.
fn read_safetensors(p: &Path) -> (serde_json::Value, Vec<u8>) {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data section is 8-byte aligned");
    let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (h, b[8 + n..].to_vec())
}

/// The directory holds only `keep` (no output, no temporary file).
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        keep.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn inspect_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(
        &["inspect", &fixture("fixtures/load/nested.pt")],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let t = out(&o);
    for want in [
        "torch-zip, scanned safe",
        "layer.weight: Tensor float32 [2, 2] 16 B",
        "namespace: argparse.Namespace",
        "bigint: 1267650600228229401496703205377",
        "device: device('cuda:1')",
        "11 tensors",
    ] {
        assert!(t.contains(want), "{want:?} not in\n{t}");
    }
    let o = run(
        &[
            "inspect",
            "--format",
            "json",
            &fixture("fixtures/load/views.pt"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tensor_count"], 12);
    assert_eq!(j["storage_count"], 3);
    let tr = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "transposed")
        .unwrap();
    assert_eq!(tr["strides"], serde_json::json!([1, 8]));
    assert_eq!(tr["contiguous"], false);
    assert_eq!(
        j["tree"]["transposed"],
        serde_json::json!({"__tensor__": "transposed"})
    );
    let o = run(
        &[
            "inspect",
            "--key",
            "state_dict",
            &fixture("fixtures/load/optimizer.pt"),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0);
    assert!(
        out(&o).contains("0.weight: Tensor float32 [2, 1, 3, 3]"),
        "{}",
        out(&o)
    );
    only(tmp.path(), &[]);
}

#[test]
fn convert_writes_valid_unaliased_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("views.safetensors");
    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/views.pt"),
            "-o",
            dst.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let (h, data) = read_safetensors(&dst);
    let mut ranges: Vec<(u64, u64, String)> = Vec::new();
    for (k, v) in h.as_object().unwrap() {
        if k == "__metadata__" {
            assert_eq!(v["format"], "pt");
            continue;
        }
        let off = v["data_offsets"].as_array().unwrap();
        let (b, e) = (off[0].as_u64().unwrap(), off[1].as_u64().unwrap());
        let n: u64 = v["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .product();
        let size = match v["dtype"].as_str().unwrap() {
            "F32" | "I32" => 4,
            "I64" => 8,
            d => panic!("{d}"),
        };
        assert_eq!(e - b, n * size, "{k}");
        ranges.push((b, e, k.clone()));
    }
    // No aliasing: ranges tile the data section exactly.
    ranges.sort();
    let mut at = 0;
    for (b, e, _) in &ranges {
        assert_eq!(*b, at);
        at = *e;
    }
    assert_eq!(at as usize, data.len());
    // transposed [8, 6] of arange(48).view(6, 8), made contiguous: (i, j) = 8 j + i
    let r = &h["transposed"]["data_offsets"];
    let (b, e) = (
        r[0].as_u64().unwrap() as usize,
        r[1].as_u64().unwrap() as usize,
    );
    let vals: Vec<f32> = data[b..e]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = (0..8)
        .flat_map(|i| (0..6).map(move |j| (8 * j + i) as f32))
        .collect();
    assert_eq!(vals, want);
    assert_eq!(h["expanded"]["shape"], serde_json::json!([3, 4]));
    assert_eq!(h["scalar_view"]["shape"], serde_json::json!([]));
    only(tmp.path(), &["views.safetensors"]);
}

#[test]
fn convert_key_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("sd.safetensors");
    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/optimizer.pt"),
            "-o",
            dst.to_str().unwrap(),
            "--key",
            "state_dict",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let (h, _) = read_safetensors(&dst);
    assert!(
        h.get("0.weight").is_some() && h.get("1.num_batches_tracked").is_some(),
        "{h}"
    );
    assert!(h.get("state_dict.0.weight").is_none());

    let dst = tmp.path().join("all.safetensors");
    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/optimizer.pt"),
            "-o",
            dst.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0);
    let (h, _) = read_safetensors(&dst);
    assert!(h.get("optimizer.state.0.exp_avg").is_some(), "{h}");
    let meta = &h["__metadata__"];
    let opt: serde_json::Value = serde_json::from_str(meta["optimizer"].as_str().unwrap()).unwrap();
    assert_eq!(
        opt["state"]["0"]["exp_avg"],
        serde_json::json!({"__tensor__": "optimizer.state.0.exp_avg"})
    );
    assert_eq!(opt["param_groups"][0]["lr"], 0.001);
    assert!(
        meta.get("state_dict").is_none(),
        "pure-tensor subtrees need no metadata"
    );

    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/nested.pt"),
            "-o",
            dst.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 0);
    let (h, _) = read_safetensors(&dst);
    let meta = &h["__metadata__"];
    let big: serde_json::Value = serde_json::from_str(meta["bigint"].as_str().unwrap()).unwrap();
    assert_eq!(
        big,
        serde_json::json!({"__int__": "1267650600228229401496703205377"})
    );
    let t: serde_json::Value = serde_json::from_str(meta["tuple"].as_str().unwrap()).unwrap();
    assert_eq!(
        t,
        serde_json::json!([1.5, {"__float__": "inf"}, {"__float__": "-inf"}, {"__float__": "nan"}, -0.0])
    );
    assert_eq!(h["np_array"]["dtype"], "F32");

    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/optimizer.pt"),
            "-o",
            "x.safetensors",
            "--key",
            "missing",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    assert!(err(&o).contains("not found"), "{}", err(&o));
    only(tmp.path(), &["all.safetensors", "sd.safetensors"]);
}

#[test]
fn manifest_failures_exit_cleanly() {
    let entries = manifest("fixtures/load/manifest.json");
    assert!(!entries.is_empty(), "run fixtures/gen_load.py");
    for e in entries {
        let expect = e["expect"].as_str().unwrap();
        if expect == "convert" {
            continue;
        }
        let path = fixture(e["path"].as_str().unwrap());
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("out.safetensors"), b"keep").unwrap();
        let o = run(&["convert", &path, "-o", "out.safetensors"], tmp.path());
        let c = code(&o);
        match expect {
            "inspect_only" | "malformed" => assert_eq!(c, 2, "{path}: {}", err(&o)),
            _ => assert!(c == 1 || c == 2, "{path}: {c}"),
        }
        assert_eq!(
            err(&o).trim_end().lines().count(),
            1,
            "{path}: one-line error: {}",
            err(&o)
        );
        assert!(err(&o).starts_with("ckptguard: "), "{}", err(&o));
        assert_eq!(
            std::fs::read(tmp.path().join("out.safetensors")).unwrap(),
            b"keep",
            "{path}: output clobbered"
        );
        only(tmp.path(), &["out.safetensors"]);
        let o = run(&["inspect", &path], tmp.path());
        assert_eq!(
            code(&o) == 0,
            expect == "inspect_only",
            "{path}: {}",
            err(&o)
        );
    }
}

#[test]
fn unsafe_inputs_are_refused_with_findings() {
    let mut files = vec![
        "fixtures/pickle/malicious/reduce/builtins_compile_exec_p2.pkl".to_string(),
        "fixtures/pickle/malicious/opcode/memo_dup_pop_memoize.pkl".to_string(),
        "fixtures/pickle/malicious/opcode/payload_named_ckpt.ckpt".to_string(),
    ];
    for e in manifest("fixtures/containers/manifest.json") {
        let p = e["path"].as_str().unwrap();
        if e["expect"] == "unsafe"
            && ["torch_zip", "legacy", "lightning_ckpt", "deepspeed_dir"]
                .contains(&e["kind"].as_str().unwrap())
        {
            files.push(p.to_string());
        }
    }
    for rel in files {
        let path = fixture(&rel);
        if !Path::new(&path).exists() {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let o = run(&["convert", &path, "-o", "out.safetensors"], tmp.path());
        // 1: the scan found something dangerous; 2: part of the file cannot be read the way
        // the loader reads it (an encrypted data.pkl), so it cannot be cleared either.
        let c = code(&o);
        assert!(
            c == 1 || (c == 2 && err(&o).contains("cannot be read")),
            "{rel}: {c} {}",
            err(&o)
        );
        assert!(
            err(&o).starts_with("ckptguard: refused: "),
            "{rel}: {}",
            err(&o)
        );
        assert_eq!(err(&o).trim_end().lines().count(), 1);
        only(tmp.path(), &[]);
        let o = run(&["inspect", &path], tmp.path());
        assert_eq!(code(&o), c, "{rel}");
        assert!(out(&o).contains("UNSAFE"), "{rel}: {}", out(&o));
        only(tmp.path(), &[]);
    }
}

#[test]
fn containers_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    for e in manifest("fixtures/containers/manifest.json") {
        let kind = e["kind"].as_str().unwrap();
        if e["expect"] != "safe" {
            continue;
        }
        let path = fixture(e["path"].as_str().unwrap());
        let o = run(&["convert", &path, "-o", "o.safetensors"], tmp.path());
        match kind {
            "torch_zip" | "legacy" | "lightning_ckpt" | "fabric_ckpt" | "deepspeed_dir" | "npz"
            | "dcp_dir" => {
                assert_eq!(code(&o), 0, "{path}: {}", err(&o));
                let (h, _) = read_safetensors(&tmp.path().join("o.safetensors"));
                assert!(h.as_object().unwrap().len() > 1, "{path}");
            }
            "litdata_dir" | "legacy_tar" => {
                assert_eq!(code(&o), 2, "{path}: {}", err(&o));
                assert!(err(&o).contains("not loaded"), "{path}: {}", err(&o));
            }
            _ => {}
        }
        let _ = std::fs::remove_file(tmp.path().join("o.safetensors"));
    }
    let o = run(
        &["convert", "/nonexistent/x.pt", "-o", "o.safetensors"],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    let o = run(
        &[
            "convert",
            &fixture("fixtures/load/views.pt"),
            "-o",
            "/nonexistent/dir/o.safetensors",
        ],
        tmp.path(),
    );
    assert_eq!(code(&o), 2);
    assert_eq!(err(&o).trim_end().lines().count(), 1, "{}", err(&o));
    only(tmp.path(), &[]);
}

#[test]
fn dcp_directories_load_like_torch() {
    let tmp = tempfile::tempdir().unwrap();
    // Plain DCP: the nested state dict rebuilt from planner_data, in metadata order.
    let plain = fixture("fixtures/containers/dcp/benign_plain");
    let o = run(&["inspect", &plain], tmp.path());
    assert_eq!(code(&o), 0, "{}", err(&o));
    let t = out(&o);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].ends_with("dcp-dir, scanned safe"), "{t}");
    let want = [
        "  model: dict (3 items)",
        "    w: Tensor float32 [3, 2] 24 B",
        "    b: Tensor float32 [2] 8 B",
        "    emb: Tensor int64 [6] 48 B",
        "  step: 3",
        "  name: 'tiny-dcp'",
        "  nested: dict (2 items)",
        "    lr: 0.1",
        "    flags: {'amp': False, 'tag': 'x'}",
        "  history: [1, 2, 3]",
        "3 tensors (80 B) in 3 storages",
    ];
    assert_eq!(&lines[1..], &want[..], "{t}");
    let o = run(&["convert", &plain, "-o", "p.safetensors"], tmp.path());
    assert_eq!(code(&o), 0, "{}", err(&o));
    let (h, data) = read_safetensors(&tmp.path().join("p.safetensors"));
    let emb = &h["model.emb"];
    assert_eq!(emb["dtype"], "I64");
    let (a, b) = (
        emb["data_offsets"][0].as_u64().unwrap() as usize,
        emb["data_offsets"][1].as_u64().unwrap() as usize,
    );
    let vals: Vec<i64> = data[a..b]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(vals, [0, 1, 2, 3, 4, 5]);
    let meta = &h["__metadata__"];
    assert!(meta.is_object(), "{h}");

    // Lightning's sharded layout: DCP items, then meta.pt merged into the top level.
    let lit = fixture("fixtures/containers/dcp/lightning_sharded/epoch=0-step=3.ckpt");
    let o = run(&["inspect", &lit, "--format", "json"], tmp.path());
    assert_eq!(code(&o), 0, "{}", err(&o));
    let doc: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(doc["format"], "dcp-dir+meta.pt");
    assert_eq!(doc["verdict"], "safe");
    let tree = &doc["tree"];
    for k in [
        "model",
        "optimizer_0",
        "epoch",
        "global_step",
        "loops",
        "hyper_parameters",
    ] {
        assert!(tree.get(k).is_some(), "{k} missing: {tree}");
    }
    assert_eq!(
        tree["optimizer_0"]["state"]["0"]["exp_avg"]["__tensor__"],
        "optimizer_0.state.0.exp_avg"
    );
    assert_eq!(
        tree["optimizer_0"]["param_groups"][0]["params"],
        serde_json::json!([0, 1, 2, 3])
    );
    let names: Vec<&str> = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..2], &["model.net.0.weight", "model.net.0.bias"]);
    for t in doc["tensors"].as_array().unwrap() {
        if t["name"].as_str().unwrap().starts_with("model.") {
            assert_eq!(t["contiguous"], true);
            assert_eq!(t["requires_grad"], false);
        }
    }
    let o = run(
        &["convert", &lit, "-o", "l.safetensors", "--key", "model"],
        tmp.path(),
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let (h, _) = read_safetensors(&tmp.path().join("l.safetensors"));
    assert_eq!(h["net.0.weight"]["shape"], serde_json::json!([4, 3]));
    std::fs::remove_file(tmp.path().join("p.safetensors")).unwrap();
    std::fs::remove_file(tmp.path().join("l.safetensors")).unwrap();

    // Malicious DCP directories: refused (exit 1) before anything is loaded.
    for (rel, what) in [
        ("fixtures/containers/dcp/mal_bytes_item", "posix.system"),
        ("fixtures/containers/dcp/mal_metadata", "posix.system"),
        (
            "fixtures/containers/dcp/mal_relative_path",
            "outside the checkpoint directory",
        ),
        (
            "fixtures/containers/dcp/mal_meta_pt/epoch=0-step=3.ckpt",
            "posix.system",
        ),
    ] {
        let path = fixture(rel);
        let o = run(&["convert", &path, "-o", "o.safetensors"], tmp.path());
        assert_eq!(code(&o), 1, "{rel}: {}", err(&o));
        assert!(
            err(&o).contains("unsafe to load") && err(&o).contains(what),
            "{rel}: {}",
            err(&o)
        );
        let o = run(&["inspect", &path], tmp.path());
        assert_eq!(code(&o), 1, "{rel}: {}", err(&o));
        assert!(out(&o).contains("UNSAFE"), "{rel}: {}", out(&o));
        only(tmp.path(), &[]);
    }
}
