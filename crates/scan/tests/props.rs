//! Property tests over real fixtures, mutated: the scanner never panics, is deterministic, and
//! never reports a file safe when a finding says it could not be fully analysed.

use ckptguard_scan::{scan_source, FileReport, ScanOptions, Severity, Verdict};
use proptest::prelude::*;

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel),
    )
    .unwrap()
}

fn check(data: Vec<u8>, name: &str) -> Result<(), TestCaseError> {
    let opts = ScanOptions::default();
    let a = scan_source(&data, name, &opts);
    let b = scan_source(&data, name, &opts);
    prop_assert_eq!(&a, &b);
    let r = FileReport::new(name.into(), a, data.len() as u64, 0, Severity::High);
    if r.findings.iter().any(|f| f.blocking) {
        prop_assert_ne!(r.verdict, Verdict::Safe);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_torch_zip(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut d = fixture("fixtures/containers/torch_zip/benign_state_dict.pt");
        for (i, b) in flips {
            let n = d.len();
            d[i % n] = b;
        }
        let n = d.len();
        d.truncate(n - cut % (n / 4));
        check(d, "model.pt")?;
    }

    #[test]
    fn mutated_legacy(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut d = fixture("fixtures/containers/legacy/benign.pt");
        for (i, b) in flips {
            let n = d.len();
            d[i % n] = b;
        }
        check(d, "legacy.pt")?;
    }

    #[test]
    fn mutated_pickle(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut d = fixture("fixtures/pickle/benign/plain/plain_data_p4.pkl");
        for (i, b) in flips {
            let n = d.len();
            d[i % n] = b;
        }
        let n = d.len();
        d.truncate(n - cut % n);
        check(d, "data.pkl")?;
    }
}

#[test]
fn truncating_a_benign_pickle_anywhere_is_never_safe() {
    let d = fixture("fixtures/pickle/benign/plain/plain_data_p2.pkl");
    for cut in 1..d.len() {
        let s = scan_source(&d[..cut].to_vec(), "data.pkl", &ScanOptions::default());
        let r = FileReport::new("data.pkl".into(), s, cut as u64, 0, Severity::Critical);
        assert_eq!(r.verdict, Verdict::Unsafe, "cut at {cut}");
    }
}
