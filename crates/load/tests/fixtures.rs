//! The loader against real torch fixtures (`fixtures/gen_load.py`, `fixtures/containers`) and
//! hostile inputs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ckptguard_load::safetensors::{plan, ConvertError};
use ckptguard_load::{load, load_scanned, DType, LoadError, LoadOptions, Value};
use ckptguard_scan::{FileReport, FileScan, Severity};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e} (run fixtures/gen_load.py)"))
}

fn manifest(rel: &str) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(repo().join(rel)) {
        Ok(t) => serde_json::from_str(&t).unwrap(),
        Err(_) => Vec::new(),
    }
}

/// A report that says "safe", to drive the loader itself with inputs the scanner would refuse.
fn cleared(name: &str, len: u64) -> FileReport {
    FileReport::new(
        name.into(),
        FileScan {
            format: "test".into(),
            ..FileScan::default()
        },
        len,
        0,
        Severity::High,
    )
}

#[test]
fn every_load_fixture_behaves_as_its_manifest_says() {
    let entries = manifest("fixtures/load/manifest.json");
    assert!(entries.len() >= 15, "run fixtures/gen_load.py");
    let opts = LoadOptions::default();
    for e in entries {
        let path = e["path"].as_str().unwrap();
        let expect = e["expect"].as_str().unwrap();
        let data = read(path);
        let r = load(&data, path, &opts);
        match (expect, r) {
            ("convert", Ok(ck)) => {
                let p = plan(&ck.root, None).unwrap_or_else(|err| panic!("{path}: {err}"));
                let mut out = Vec::new();
                p.write(&mut out).unwrap();
                assert_eq!(out.len() as u64, p.total_len(), "{path}");
            }
            ("inspect_only", Ok(ck)) => {
                assert!(
                    matches!(plan(&ck.root, None), Err(ConvertError::Unsupported { .. })),
                    "{path}"
                );
            }
            ("unsupported", Err(LoadError::Unsupported(m))) => {
                assert!(m.contains("tensor"), "{path}: {m}")
            }
            (
                "unsupported",
                Err(LoadError::Unsafe {
                    unreadable_only: false,
                    ..
                }),
            ) => {}
            ("malformed", Err(LoadError::Malformed(_))) => {}
            (
                "malformed",
                Err(LoadError::Unsafe {
                    unreadable_only: true,
                    ..
                }),
            ) => {}
            (x, r) => panic!("{path}: expected {x}, got {:?}", r.map(|c| c.format)),
        }
    }
}

#[test]
fn storages_are_borrowed_and_shared_by_views() {
    let data = read("fixtures/load/views.pt");
    let ck = load(&data, "views.pt", &LoadOptions::default()).unwrap();
    let t = ck.root.tensors();
    assert_eq!(t.len(), 12);
    let get = |n: &str| t.iter().find(|(k, _)| k == n).unwrap().1;
    let base = get("base");
    assert!(base.storage.is_zero_copy());
    // The storage bytes are a window of the input buffer itself.
    let s = base.storage.bytes().unwrap();
    let start = s.as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(Some(start as u64), base.storage.source_offset);
    for v in [
        "slice",
        "matrix",
        "transposed",
        "column",
        "stepped",
        "block",
        "permuted",
        "scalar_view",
        "same_again",
    ] {
        assert!(Arc::ptr_eq(&base.storage, &get(v).storage), "{v}");
    }
    assert_eq!(ck.storage_count(), 3);
    // transposed [8, 6] of arange(48).view(6, 8): element (i, j) = 8 j + i
    let tr = get("transposed");
    assert_eq!(
        (tr.shape.clone(), tr.strides.clone()),
        (vec![8, 6], vec![1, 8])
    );
    let b = tr.contiguous_bytes().unwrap();
    let vals: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<f32> = (0..8)
        .flat_map(|i| (0..6).map(move |j| (8 * j + i) as f32))
        .collect();
    assert_eq!(vals, want);
    let e = get("expanded");
    assert_eq!(e.strides, vec![0, 1]);
    let b = e.contiguous_bytes().unwrap();
    assert_eq!(b.len(), 96);
}

#[test]
fn plain_values_are_rebuilt() {
    let data = read("fixtures/load/nested.pt");
    let ck = load(&data, "nested.pt", &LoadOptions::default()).unwrap();
    let r = &ck.root;
    let s =
        |p: &str| ckptguard_load::value::repr(r.lookup(p).unwrap_or_else(|| panic!("{p}")), 200);
    assert_eq!(s("bigint"), "1267650600228229401496703205377");
    assert_eq!(s("negbig"), "-1208925819614629174706176");
    assert_eq!(s("tuple"), "(1.5, inf, -inf, nan, -0.0)");
    assert_eq!(s("bytes"), "b'\\x00\\x01binary\\xff'");
    assert_eq!(s("path"), "'/tmp/run/ckpt'");
    assert_eq!(s("relpath"), "'a/b.txt'");
    assert_eq!(s("device"), "device('cuda:1')");
    assert_eq!(s("dtype"), "torch.bfloat16");
    assert_eq!(s("size"), "(2, 3)");
    assert_eq!(s("namespace.layers"), "[4, 8]");
    assert_eq!(s("np_float"), "0.125");
    assert_eq!(s("np_int"), "-3");
    assert_eq!(s("np_bool"), "True");
    assert_eq!(s("complex"), "(1.0+2.0j)");
    assert_eq!(s("int_keys.1.exp_avg"), "tensor(float32, [2])");
    match r.lookup("namespace") {
        Some(Value::Dict(d)) => assert_eq!(d.class.as_deref(), Some("argparse.Namespace")),
        v => panic!("{v:?}"),
    }
    match r.lookup("np_bigendian") {
        Some(Value::Tensor(t)) => {
            assert!(t.numpy && t.storage.big_endian);
            let b = t.contiguous_bytes().unwrap();
            assert_eq!(f64::from_le_bytes(b[24..32].try_into().unwrap()), 3.0);
        }
        v => panic!("{v:?}"),
    }
    match r.lookup("np_fortran") {
        Some(Value::Tensor(t)) => {
            let b = t.contiguous_bytes().unwrap();
            let v: Vec<i16> = b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            assert_eq!(v, vec![0, 1, 2, 3, 4, 5]);
        }
        v => panic!("{v:?}"),
    }
}

#[test]
fn dtypes_parameters_and_flags() {
    let data = read("fixtures/load/dtypes.pt");
    let ck = load(&data, "dtypes.pt", &LoadOptions::default()).unwrap();
    let names: Vec<(String, DType)> = ck
        .root
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype))
        .collect();
    assert_eq!(names.len(), 20);
    for (n, d) in &names {
        assert_eq!(n, d.name());
    }
    let data = read("fixtures/load/edge.pt");
    let ck = load(&data, "edge.pt", &LoadOptions::default()).unwrap();
    let t = ck.root.tensors();
    let get = |n: &str| t.iter().find(|(k, _)| k == n).unwrap().1;
    assert!(get("param").parameter && get("param").requires_grad);
    assert!(get("frozen").parameter && !get("frozen").requires_grad);
    assert!(get("grad").requires_grad && !get("grad").parameter);
    assert!(get("conj").conj && get("neg").neg);
    assert_eq!(get("zero_dim").shape, Vec::<u64>::new());
    assert_eq!(get("empty_mid").nbytes(), 0);
    let neg = get("neg").contiguous_bytes().unwrap();
    let v: Vec<f32> = neg
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, vec![-1.5, 2.0, -0.0]);
}

#[test]
fn legacy_and_big_endian_files() {
    let data = read("fixtures/load/legacy.pt");
    let ck = load(&data, "legacy.pt", &LoadOptions::default()).unwrap();
    assert_eq!(ck.format, "torch-legacy");
    let t = ck.root.tensors();
    let view = t.iter().find(|(k, _)| k == "view").unwrap().1;
    let b = view.contiguous_bytes().unwrap();
    let v: Vec<f64> = b
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, vec![2.0, 3.0, 4.0, 5.0]);

    let be = read("fixtures/load/bigendian_v3.pt");
    let le = read("fixtures/load/bigendian_v3_reference.pt");
    let a = load(&be, "be", &LoadOptions::default()).unwrap();
    let b = load(&le, "le", &LoadOptions::default()).unwrap();
    for ((na, ta), (nb, tb)) in a.root.tensors().iter().zip(b.root.tensors().iter()) {
        assert_eq!(na, nb);
        assert!(ta.storage.big_endian && !tb.storage.big_endian);
        assert_eq!(
            ta.contiguous_bytes().unwrap(),
            tb.contiguous_bytes().unwrap(),
            "{na}"
        );
    }
}

#[test]
fn malicious_fixtures_are_refused() {
    let mut n = 0;
    let opts = LoadOptions::default();
    let mut files: Vec<PathBuf> = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&repo().join("fixtures/pickle/malicious"), &mut files);
    for e in manifest("fixtures/containers/manifest.json") {
        let p = repo().join(e["path"].as_str().unwrap());
        if e["expect"] == "unsafe" && p.is_file() {
            files.push(p);
        }
    }
    for p in files {
        let data = std::fs::read(&p).unwrap();
        match load(&data, &p.display().to_string(), &opts) {
            Err(LoadError::Unsafe { .. }) => n += 1,
            other => panic!("{}: {:?}", p.display(), other.map(|c| c.format)),
        }
    }
    assert!(n > 100, "{n}");
}

#[test]
fn container_fixtures_load() {
    let opts = LoadOptions::default();
    let mut n = 0;
    for e in manifest("fixtures/containers/manifest.json") {
        let kind = e["kind"].as_str().unwrap();
        let p = repo().join(e["path"].as_str().unwrap());
        if e["expect"] != "safe"
            || !p.is_file()
            || !["torch_zip", "lightning_ckpt", "fabric_ckpt", "legacy"].contains(&kind)
        {
            continue;
        }
        let data = std::fs::read(&p).unwrap();
        let ck = load(&data, &p.display().to_string(), &opts)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!ck.root.tensors().is_empty());
        plan(&ck.root, None).unwrap();
        n += 1;
    }
    if n == 0 {
        eprintln!("no container fixtures (run fixtures/gen_containers.py)");
    }
}

/// The loader itself, with the scanner bypassed: no input may make it panic, and non-data
/// constructors are refused by name even when the scan is forced to say "safe".
#[test]
fn loader_refuses_code_even_when_scan_is_bypassed() {
    let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.".to_vec();
    let opts = LoadOptions::default();
    match load_scanned(&evil, cleared("x", evil.len() as u64), &opts) {
        Err(LoadError::Unsupported(m)) => assert!(m.contains("os.system"), "{m}"),
        other => panic!("{:?}", other.map(|c| c.format)),
    }
}

#[test]
fn hostile_structures_are_bounded() {
    let opts = LoadOptions::default().tree_limits(1_000_000, 200);
    // Exponential sharing: l0 = []; l(i+1) = [l(i), l(i)]: 2^60 leaves.
    let mut p = b"\x80\x02]q\x00".to_vec();
    for i in 0..60u8 {
        p.extend_from_slice(&[b'h', i, b'h', i, b'\x86', b'q', i + 1]);
    }
    p.push(b'.');
    match load_scanned(&p, cleared("x", p.len() as u64), &opts) {
        Err(LoadError::Malformed(m)) => assert!(m.contains("exceeds"), "{m}"),
        other => panic!("{:?}", other.map(|c| c.format)),
    }
    // Deep nesting.
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b']', 100_000));
    p.extend(std::iter::repeat_n(b'a', 99_999));
    p.push(b'.');
    match load_scanned(&p, cleared("x", p.len() as u64), &opts) {
        Err(LoadError::Malformed(m)) => assert!(m.contains("deeper"), "{m}"),
        other => panic!("{:?}", other.map(|c| c.format)),
    }
    // A list that contains itself.
    let p = b"\x80\x02]q\x00h\x00a.".to_vec();
    assert!(matches!(
        load_scanned(&p, cleared("x", p.len() as u64), &opts),
        Err(LoadError::Unsupported(_))
    ));
}

/// Deterministic mutations of real fixtures: truncations and byte flips through the loader
/// (scanner bypassed). Errors are fine; panics are not.
#[test]
fn mutated_fixtures_never_panic() {
    let opts = LoadOptions::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for rel in [
        "fixtures/load/views.pt",
        "fixtures/load/legacy.pt",
        "fixtures/load/nested.pt",
        "fixtures/load/edge.pt",
    ] {
        let orig = read(rel);
        for i in 0..300 {
            let mut d = orig.clone();
            if i % 5 == 0 {
                let cut = (next() % d.len() as u64) as usize;
                d.truncate(cut);
            } else {
                for _ in 0..(1 + next() % 4) {
                    let at = (next() % d.len() as u64) as usize;
                    d[at] = next() as u8;
                }
            }
            if let Ok(ck) = load_scanned(&d, cleared(rel, d.len() as u64), &opts) {
                for (_, t) in ck.root.tensors() {
                    let _ = t.contiguous_bytes();
                }
                if let Ok(p) = plan(&ck.root, None) {
                    let mut out = Vec::new();
                    let _ = p.write(&mut out);
                }
            }
        }
    }
}
