//! The miniz-faithful zip reader: never panics, entries and ranges lie inside the file, reads
//! respect the limits.
#![no_main]
use ckptguard_formats::zip::{ZipArchive, ZipLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src: &[u8] = data;
    let limits = ZipLimits { max_entry_bytes: 1 << 20, ..ZipLimits::default() };
    let Ok(zip) = ZipArchive::open(&src, limits) else { return };
    for e in zip.entries().iter().take(64) {
        if let Some((off, len)) = zip.entry_range(e) {
            assert!(off.checked_add(len).is_some_and(|end| end <= data.len() as u64));
        }
        if let Ok(bytes) = zip.read_entry(e, 1 << 20) {
            assert!(bytes.len() as u64 <= 1 << 20);
        }
    }
    let _ = zip.torch_lookup("data.pkl");
    for a in zip.anomalies() {
        let _ = a.message();
    }
});
