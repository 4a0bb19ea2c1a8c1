//! Whole-file scan from bytes: deterministic, offsets inside the input, and never `safe` when
//! anything blocking (a parse error, a limit) was found.
#![no_main]
use ckptguard_scan::{scan_source, FileReport, Limits, ScanOptions, Severity, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut opts = ScanOptions::default();
    opts.limits = Limits { max_entry_bytes: 1 << 22, ..Limits::default() };
    opts.limits.pickle.max_ops = 200_000;
    let src = data.to_vec();
    let a = scan_source(&src, "fuzz.pkl", &opts);
    let b = scan_source(&src, "fuzz.pkl", &opts);
    assert_eq!(a, b, "same bytes, same scan");
    let r = FileReport::new("fuzz.pkl".into(), a, data.len() as u64, 0, Severity::High);
    if r.findings.iter().any(|f| f.blocking) {
        assert_ne!(r.verdict, Verdict::Safe);
    }
    for f in &r.findings {
        if f.entry.is_none() {
            if let Some(o) = f.offset {
                assert!(o <= data.len() as u64, "finding offset {o} outside the input: {f:?}");
            }
        }
    }
});
