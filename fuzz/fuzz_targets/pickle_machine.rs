//! The symbolic unpickler: offsets inside the input, deterministic results, renderers bounded,
//! and a stream with a fatal issue is never "complete".
#![no_main]
use ckptguard_pickle::{analyze, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_ops: 200_000, max_values: 200_000, ..Limits::default() };
    let a = analyze(data, &limits);
    for i in &a.issues {
        assert!(i.offset <= data.len());
    }
    for i in &a.imports {
        assert!(i.offset < data.len());
    }
    for c in &a.calls {
        assert!(c.offset < data.len());
    }
    for p in &a.pickles {
        if let Some(end) = p.end {
            assert!(end <= data.len() && end > p.start);
        }
    }
    let complete = a.pickles.iter().all(|p| p.end.is_some());
    if a.incomplete() {
        assert!(a.issues.iter().any(|i| i.fatal));
    }
    if !complete {
        assert!(a.incomplete(), "a pickle without STOP must be reported incomplete");
    }
    for i in 0..a.calls.len() {
        assert!(a.render_call(i).len() < 2000);
    }
    let b = analyze(data, &limits);
    assert_eq!(a.issues, b.issues);
    assert_eq!(a.imports, b.imports);
    assert_eq!(a.calls.len(), b.calls.len());
});
