//! Opcode decoding: every decoded opcode lies inside the input and decoding makes progress.
#![no_main]
use ckptguard_pickle::ops::read_op;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    while pos < data.len() {
        match read_op(data, pos, 1 << 16) {
            Ok(op) => {
                assert_eq!(op.offset, pos);
                assert!(op.end > pos && op.end <= data.len(), "opcode must end inside the input");
                pos = op.end;
            }
            Err(e) => {
                assert_eq!(e.offset, pos);
                break;
            }
        }
    }
});
