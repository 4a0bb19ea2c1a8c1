//! The symbolic machine against streams CPython wrote, and against hand-assembled tricks.

use ckptguard_pickle::{analyze, IssueKind, Limits, Opcode, Value};
use proptest::prelude::*;

const P0: &[u8] = b"cposix\nsystem\np0\n(Vtrue\np1\ntp2\nRp3\n.";
const P1: &[u8] = b"cposix\nsystem\nq\x00(X\x04\x00\x00\x00trueq\x01tq\x02Rq\x03.";
const P2: &[u8] = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
const P3: &[u8] = b"\x80\x03cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
const P4: &[u8] = b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.";
const P5: &[u8] = b"\x80\x05\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94\x85\x94R\x94.";

fn lim() -> Limits {
    Limits::default()
}

#[test]
fn every_protocol_resolves_the_call() {
    for (p, data) in [P0, P1, P2, P3, P4, P5].iter().enumerate() {
        let a = analyze(data, &lim());
        assert!(!a.incomplete(), "protocol {p}: {:?}", a.issues);
        assert_eq!(a.imports.len(), 1, "protocol {p}");
        assert_eq!(a.imports[0].qualified(), "posix.system");
        assert_eq!(a.calls.len(), 1);
        assert_eq!(a.render_call(0), "posix.system(\"true\")", "protocol {p}");
        assert_eq!(a.pickles.len(), 1);
        assert_eq!(a.pickles[0].end, Some(data.len()));
    }
}

#[test]
fn python2_names_mapped_below_protocol_3_only() {
    let a = analyze(b"c__builtin__\neval\np0\n(V1\np1\ntp2\nRp3\n.", &lim());
    assert_eq!(a.imports[0].qualified(), "builtins.eval");
    assert_eq!(
        a.imports[0].written,
        Some(("__builtin__".into(), "eval".into()))
    );
    // Protocol 3: CPython does not map; the import of `__builtin__` would fail, and we keep it.
    let a = analyze(b"\x80\x03c__builtin__\neval\n)R.", &lim());
    assert_eq!(a.imports[0].qualified(), "__builtin__.eval");
}

#[test]
fn memo_trick_resolves_through_dup_pop_memoize() {
    // "os" DUP POP MEMOIZE POP BINGET 0 "system" STACK_GLOBAL ( "true" ) REDUCE STOP
    let data = b"\x80\x04\x8c\x02os20\x94\x30h\x00\x8c\x06system\x93\x8c\x04true\x85R.";
    let a = analyze(data, &lim());
    assert!(!a.incomplete(), "{:?}", a.issues);
    assert_eq!(a.imports[0].qualified(), "os.system");
    assert_eq!(a.render_call(0), "os.system(\"true\")");
}

#[test]
fn stack_global_fed_by_protocol0_strings() {
    let data = b"\x80\x04S'os'\nS'system'\n\x93S'true'\n\x85R.";
    let a = analyze(data, &lim());
    assert_eq!(a.imports[0].qualified(), "os.system");
    let data = b"\x80\x04U\x02osT\x06\x00\x00\x00system\x93)R.";
    let a = analyze(data, &lim());
    assert_eq!(a.imports[0].qualified(), "os.system");
}

#[test]
fn dotted_qualname_kept_whole() {
    let data = b"\x80\x04\x8c\x07pathlib\x8c\nPath.touch\x93\x8c\x01x\x85R.";
    let a = analyze(data, &lim());
    assert_eq!(a.imports[0].module, "pathlib");
    assert_eq!(a.imports[0].name, "Path.touch");
}

#[test]
fn ordered_dict_is_data_with_entries() {
    let data = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00aq\x02K\x01s.";
    let a = analyze(data, &lim());
    assert!(!a.incomplete());
    let root = a.pickles[0].root.unwrap();
    match a.value(root) {
        Value::Object(o) => assert_eq!(o.entries.len(), 1),
        v => panic!("{v:?}"),
    }
    assert_eq!(a.mutations.len(), 1);
    assert_eq!(a.mutations[0].opcode, Opcode::SETITEM);
}

#[test]
fn inst_and_obj_are_calls() {
    let a = analyze(b"(S'true'\nios\nsystem\n.", &lim());
    assert_eq!(a.calls.len(), 1);
    assert_eq!(a.calls[0].opcode, Opcode::INST);
    assert_eq!(a.render_call(0), "os.system(\"true\")");
    let a = analyze(b"(cos\nsystem\nS'true'\no.", &lim());
    assert_eq!(a.calls[0].opcode, Opcode::OBJ);
    assert_eq!(a.render_call(0), "os.system(\"true\")");
}

#[test]
fn payload_before_truncation_is_still_reported() {
    let full = P4;
    let cut = &full[..full.len() - 1]; // REDUCE done, STOP missing
    let a = analyze(cut, &lim());
    assert!(a.incomplete());
    assert_eq!(a.calls.len(), 1);
    assert!(a.issues.iter().any(|i| i.kind == IssueKind::MissingStop));
}

#[test]
fn second_pickle_in_stream_analysed() {
    let mut data = b"\x80\x02K\x01.".to_vec();
    data.extend_from_slice(P2);
    let a = analyze(&data, &lim());
    assert_eq!(a.pickles.len(), 2);
    assert_eq!(a.calls.len(), 1);
    assert_eq!(a.calls[0].pickle, 1);
}

#[test]
fn trailing_junk_is_reported_but_not_a_pickle() {
    let a = analyze(b"\x80\x02K\x01.\xff\xfegarbage", &lim());
    assert_eq!(a.pickles.len(), 1);
    assert!(!a.incomplete());
    assert!(matches!(
        a.issues[0].kind,
        IssueKind::TrailingData { len: 9 }
    ));
}

#[test]
fn memo_miss_and_underflow_stop_the_pickle() {
    let a = analyze(b"\x80\x02h\x05.", &lim());
    assert_eq!(a.issues[0].kind, IssueKind::MemoMissing(5));
    let a = analyze(b"\x80\x02(0.", &lim()); // POP removes the mark, then STOP underflows
    assert_eq!(a.issues[0].kind, IssueKind::StackUnderflow);
    let a = analyze(b"\x80\x02K\x01(R.", &lim()); // REDUCE cannot reach below the mark
    assert_eq!(a.issues[0].kind, IssueKind::StackUnderflow);
}

#[test]
fn stack_global_with_non_string_stops() {
    let a = analyze(b"\x80\x04K\x01K\x02\x93.", &lim());
    assert!(matches!(a.issues[0].kind, IssueKind::WrongType { .. }));
}

#[test]
fn dynamic_names_are_flagged_not_dropped() {
    // The module name is the result of a call: unknown until run time.
    let data = b"\x80\x04\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93)R.";
    let a = analyze(data, &lim());
    assert_eq!(a.imports.len(), 2);
    assert!(a.imports[1].dynamic);
}

#[test]
fn ext_and_persid_recorded() {
    let a = analyze(b"\x80\x02\x82\x01)R.", &lim());
    assert_eq!(a.extensions.len(), 1);
    assert_eq!(a.calls.len(), 1);
    let a = analyze(b"\x80\x02X\x01\x00\x00\x00aQ.", &lim());
    assert_eq!(a.persistent_ids.len(), 1);
    let a = analyze(b"\x80\x02\x82\x00.", &lim());
    assert_eq!(a.issues[0].kind, IssueKind::BadExtensionCode(0));
}

#[test]
fn limits_bound_bombs() {
    // 1e6 DUPs of a list with an op limit of 10k.
    let mut data = b"\x80\x02]".to_vec();
    data.extend(std::iter::repeat_n(b'2', 1_000_000));
    let l = Limits {
        max_ops: 10_000,
        ..Limits::default()
    };
    let a = analyze(&data, &l);
    assert_eq!(a.issues[0].kind, IssueKind::Limit("opcodes"));
    // Deep MARK nesting.
    let data = vec![b'('; 2_000_000];
    let a = analyze(&data, &Limits::default());
    assert_eq!(a.issues[0].kind, IssueKind::Limit("open marks"));
    // A memo bomb.
    let mut data = b"\x80\x02N".to_vec();
    for i in 0..1000u32 {
        data.push(b'r');
        data.extend_from_slice(&i.to_le_bytes());
    }
    let l = Limits {
        max_memo: 100,
        ..Limits::default()
    };
    let a = analyze(&data, &l);
    assert_eq!(a.issues[0].kind, IssueKind::Limit("memo entries"));
}

#[test]
fn self_referencing_list_renders_bounded() {
    // L = []; L.append(L); os.system(L)
    let data = b"\x80\x02cos\nsystem\n]q\x00h\x00a\x85R.";
    let a = analyze(data, &lim());
    let r = a.render_call(0);
    assert!(r.len() < 400, "{r}");
    assert!(r.starts_with("os.system(["));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn never_panics_and_offsets_stay_inside(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let a = analyze(&data, &Limits { max_ops: 10_000, ..Limits::default() });
        for i in &a.issues { prop_assert!(i.offset <= data.len()); }
        for i in &a.imports { prop_assert!(i.offset < data.len()); }
        for c in &a.calls { prop_assert!(c.offset < data.len()); }
        for c in 0..a.calls.len() { let _ = a.render_call(c); }
        // Deterministic.
        let b = analyze(&data, &Limits { max_ops: 10_000, ..Limits::default() });
        prop_assert_eq!(a.issues, b.issues);
        prop_assert_eq!(a.imports, b.imports);
    }

    #[test]
    fn mutations_of_real_pickles_never_panic(cut in 0usize..60, flip in 0usize..60, byte in any::<u8>()) {
        let mut d = P4.to_vec();
        let i = flip % d.len();
        d[i] = byte;
        d.truncate(cut.min(d.len()));
        let a = analyze(&d, &lim());
        prop_assert!(a.pickles.len() <= 2);
    }
}
