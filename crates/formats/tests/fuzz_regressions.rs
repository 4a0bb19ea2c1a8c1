//! Inputs the fuzzers found, kept as regression tests (see fuzz/README.md).

use ckptguard_formats::zip::{ZipArchive, ZipLimits};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

/// zip_reader: an empty stored entry whose local header puts its data start past the end of
/// the file made `entry_range` return an offset outside the file.
#[test]
fn empty_entry_with_data_start_past_the_end_has_no_range() {
    let d = data("fuzz_empty_entry_data_past_end.zip");
    let src: &[u8] = &d;
    let zip = ZipArchive::open(&src, ZipLimits::default()).unwrap();
    for e in zip.entries() {
        if let Some((off, len)) = zip.entry_range(e) {
            assert!(
                off.checked_add(len)
                    .is_some_and(|end| end <= d.len() as u64),
                "{e:?}"
            );
        }
    }
}
