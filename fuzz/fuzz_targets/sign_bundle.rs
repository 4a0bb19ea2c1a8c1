//! Signature bundle parsing: never panics; anything it accepts re-parses identically, and file
//! digests are well-formed hex.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = ckptguard_sign::parse_unverified(data) {
        for (_, d) in &b.files {
            assert_eq!(d.len(), 64);
            assert!(d.bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(ckptguard_sign::parse_unverified(data).ok(), Some(b));
    }
});
