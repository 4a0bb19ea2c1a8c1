//! The adversarial corpus: hostile inputs built in the test, each of which must end as a
//! finding (never `safe`, never a crash) within the documented limits — the process finishing
//! at all, with bounded memory (files are mapped, lengths checked before allocating), is the
//! bound these tests hold the scanner to.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn scan(path: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["scan", "--format", "json"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_ckptguard"))
        .args(&args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap(), v)
}

fn codes(r: &serde_json::Value) -> Vec<String> {
    r["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| {
            f["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["code"].as_str().unwrap().to_string())
        })
        .collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn dup_appends_growth_bomb_hits_the_op_limit() {
    let d = tempfile::tempdir().unwrap();
    // L = []; repeat: DUP, APPENDS of the list into itself — quadratic for naive simulators.
    let mut b = b"\x80\x02]q\x00".to_vec();
    for _ in 0..200_000 {
        b.extend_from_slice(b"(h\x00h\x00h\x00e");
    }
    b.push(b'.');
    let p = write(d.path(), "bomb.pkl", &b);
    let c = tempfile::tempdir().unwrap(); // not beside the file: ckptguard.toml is found by walking up
    let cfg = write(
        c.path(),
        "limits.toml",
        b"[limits.pickle]\nmax_ops = 100000\n",
    );
    let (code, r) = scan(&p, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(codes(&r).contains(&"CG202".to_string()), "{r}");
    // With the default limits the same file is analysed completely (and is plain data).
    let (code, r) = scan(&p, &[]);
    assert_eq!(code, 0, "{r}");
}

#[test]
fn memo_blow_up_and_deep_nesting_hit_limits() {
    let d = tempfile::tempdir().unwrap();
    let mut b = b"\x80\x02N".to_vec();
    for i in 0..200_000u32 {
        b.push(b'r');
        b.extend_from_slice(&i.to_le_bytes());
    }
    b.push(b'.');
    let p = write(d.path(), "memo.pkl", &b);
    let c = tempfile::tempdir().unwrap();
    let cfg = write(
        c.path(),
        "limits.toml",
        b"[limits.pickle]\nmax_memo = 1000\n",
    );
    let (code, r) = scan(&p, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(codes(&r).contains(&"CG202".to_string()), "{r}");
    // Two million nested MARKs.
    let p = write(d.path(), "marks.pkl", &[b'('; 2_000_000]);
    let (code, r) = scan(&p, &[]);
    assert_eq!(code, 1);
    assert!(codes(&r).contains(&"CG202".to_string()), "{r}");
    // os.system(<500 000 nested tuples>): deep values must not break rendering or evaluation.
    let mut b = b"\x80\x02cos\nsystem\n".to_vec();
    b.extend(std::iter::repeat_n(b'(', 500_000));
    b.extend(std::iter::repeat_n(b't', 500_000));
    b.extend_from_slice(b"\x85R.");
    let p = write(d.path(), "deep.pkl", &b);
    let (code, r) = scan(&p, &[]);
    assert_eq!(code, 1);
    assert!(codes(&r).contains(&"CG101".to_string()), "{r}");
}

#[test]
fn lengths_claiming_gigabytes_are_findings() {
    let d = tempfile::tempdir().unwrap();
    for (name, data) in [
        (
            "bytes8.pkl",
            b"\x80\x04\x8e\x00\x00\x00\x00\x00\x00\x00\x40abc".to_vec(),
        ),
        ("unicode.pkl", b"\x80\x02X\xff\xff\xff\x7fabc".to_vec()),
        (
            "frame.pkl",
            b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7fN.".to_vec(),
        ),
        ("long4.pkl", b"\x80\x02\x8b\xff\xff\xff\x7f".to_vec()),
        ("npy.npy", {
            let mut v = b"\x93NUMPY\x02\x00\xff\xff\xff\x7f".to_vec();
            v.extend_from_slice(b"{'descr': '|O'");
            v
        }),
    ] {
        let p = write(d.path(), name, &data);
        let (code, r) = scan(&p, &[]);
        assert_eq!(code, 1, "{name}: {r}");
        assert!(
            r["files"][0]["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["blocking"] == true),
            "{name}: {r}"
        );
    }
}

/// A minimal stored zip writer for hostile archives.
fn zip_with(
    entries: &[(&str, &[u8])],
    cd_offset_override: Option<u32>,
    count_override: Option<u16>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in entries {
        let off = out.len() as u32;
        let crc = 0u32;
        out.extend_from_slice(b"PK\x03\x04\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        cd.extend_from_slice(b"PK\x01\x02\x14\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        cd.extend_from_slice(&crc.to_le_bytes());
        cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(data.len() as u32).to_le_bytes());
        cd.extend_from_slice(&(name.len() as u16).to_le_bytes());
        cd.extend_from_slice(&[0u8; 12]);
        cd.extend_from_slice(&off.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&cd);
    let n = count_override.unwrap_or(entries.len() as u16);
    out.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset_override.unwrap_or(cd_off).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

#[test]
fn hostile_zips_are_findings() {
    let d = tempfile::tempdir().unwrap();
    let pkl: &[u8] = b"\x80\x02}q\x00.";
    // Central directory pointing past the end.
    let z = zip_with(&[("archive/data.pkl", pkl)], Some(0x7fff_ffff), None);
    let (code, r) = scan(&write(d.path(), "cd_past_end.pt", &z), &[]);
    assert_eq!(code, 1, "{r}");
    // 100k entries (the zip64-free count limit is 65535, so declare 0xffff and hold 100k).
    let names: Vec<String> = (0..100_000).map(|i| format!("archive/data/{i}")).collect();
    let mut entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    entries.insert(0, ("archive/data.pkl", pkl));
    let z = zip_with(&entries, None, Some(0xffff));
    let (code, r) = scan(&write(d.path(), "many.pt", &z), &[]);
    assert!(code == 0 || code == 1, "{r}");
    // Overlapping entries: two names for the same bytes, one a payload.
    let evil: &[u8] = b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.";
    let mut z = zip_with(
        &[("archive/data.pkl", evil), ("archive/version", b"3\n")],
        None,
        None,
    );
    // Point the second central record's local-header offset at the first entry.
    let cd = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let second = cd + 46 + "archive/data.pkl".len();
    z[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
    let (code, r) = scan(&write(d.path(), "overlap.pt", &z), &[]);
    assert_eq!(code, 1, "{r}");
    assert!(codes(&r).iter().any(|c| c == "CG101"), "{r}");
}

#[cfg(unix)]
#[test]
fn ten_gib_sparse_file_is_judged_without_reading_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("sparse.pt");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"PK\x03\x04").unwrap();
    f.set_len(10 << 30).unwrap();
    drop(f);
    let (code, r) = scan(&p, &["--stats"]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["files"][0]["findings"][0]["code"], "CG301");
    assert!(
        r["files"][0]["bytes_read"].as_u64().unwrap() < 1 << 20,
        "{r}"
    );
    // The same sparse file as a pickle stream: over max_pickle_bytes, a finding.
    let p2 = d.path().join("sparse.pkl");
    let f = std::fs::File::create(&p2).unwrap();
    f.set_len(10 << 30).unwrap();
    drop(f);
    let (code, r) = scan(&p2, &[]);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["files"][0]["findings"][0]["code"], "CG202");
}

#[test]
fn recursive_dcp_metadata_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    // .metadata whose storage_data value refers back to the containing dict (a cycle).
    let meta = b"\x80\x04\x8c%torch.distributed.checkpoint.metadata\x94\x8c\x08Metadata\x94\x93\x94)\x81\x94}\x94(\x8c\x0cstorage_data\x94}\x94h\x04h\x04sub.";
    std::fs::write(d.path().join(".metadata"), meta).unwrap();
    std::fs::write(d.path().join("__0_0.distcp"), b"").unwrap();
    let (code, r) = scan(d.path(), &[]);
    assert_eq!(code, 1, "{r}");
    assert!(codes(&r).iter().any(|c| c == "CG404"), "{r}");
}
