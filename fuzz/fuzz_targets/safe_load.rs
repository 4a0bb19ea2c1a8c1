//! The safe loader: never panics, only ever loads what the scanner judged safe, and every
//! tensor it returns lies inside its storage.
#![no_main]
use ckptguard_load::{load, LoadOptions};
use ckptguard_scan::{scan_source, FileReport, ScanOptions, Severity, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = data.to_vec();
    let mut opts = LoadOptions::default();
    opts.scan.limits.pickle.max_ops = 200_000;
    if let Ok(ck) = load(&src, "fuzz.pt", &opts) {
        let mut so = ScanOptions::default();
        so.limits.pickle.max_ops = 200_000;
        let r = FileReport::new("fuzz.pt".into(), scan_source(&src, "fuzz.pt", &so), 0, 0, Severity::High);
        assert_eq!(r.verdict, Verdict::Safe, "the loader returned data from a file the scan refuses");
        for (_, t) in ck.root.tensors() {
            let _ = t.nbytes();
        }
    }
});
