//! The symbolic unpickler. It follows `Modules/_pickle.c` opcode by opcode — stack with a
//! fence at the last mark, marks, memo (MEMOIZE uses the number of entries), frames, Python 2
//! name mapping below protocol 3 — but where CPython imports or calls, it records.
//!
//! Rule: the analysis never stops earlier than CPython would. Where CPython's behaviour depends
//! on a value we cannot know (the result of a call), it continues with a symbolic value.

use std::collections::HashMap;

use crate::ops::{read_op, Arg, Op, Opcode};
use crate::text::{self, IntLit};
use crate::value::{ByteData, CallKind, ObjId, Object, Value};
use crate::{
    compat, Analysis, Build, Call, ExtensionRef, Import, Issue, IssueKind, Limits, Mutation,
    PersistentRef, PickleInfo, TraceEntry,
};

/// How one pickle ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PickleEnd {
    /// Reached STOP; the next pickle would start at this offset.
    Stop(usize),
    /// Stopped early (a fatal issue was recorded).
    Failed,
}

/// Analyses every pickle in `data`, one after another from offset 0 (as repeated `pickle.load`
/// calls on a file would). Bytes after the last STOP that do not form a pickle are reported as
/// [`IssueKind::TrailingData`].
pub fn analyze<'a>(data: &'a [u8], limits: &Limits) -> Analysis<'a> {
    analyze_stream(data, limits, false)
}

/// Like [`analyze`], recording an opcode trace for disassembly.
pub fn analyze_traced<'a>(data: &'a [u8], limits: &Limits) -> Analysis<'a> {
    analyze_stream(data, limits, true)
}

fn analyze_stream<'a>(data: &'a [u8], limits: &Limits, trace: bool) -> Analysis<'a> {
    let mut a = empty(data, trace);
    let mut budget = limits.max_ops;
    let mut pos = 0usize;
    loop {
        if a.pickles.len() >= limits.max_pickles {
            a.issues.push(Issue {
                offset: pos,
                pickle: a.pickles.len(),
                kind: IssueKind::Limit("pickles per stream"),
                fatal: true,
            });
            break;
        }
        let first = a.pickles.is_empty();
        let mark = Snapshot::of(&a);
        match run_pickle(&mut a, pos, limits, &mut budget) {
            PickleEnd::Stop(end) => {
                if end >= data.len() {
                    break;
                }
                pos = end;
            }
            PickleEnd::Failed => {
                // Trailing bytes that the unpickler rejects before doing anything are data
                // after the stream, not a pickle; anything that imported, called or reached
                // further stays a finding.
                if !first && mark.nothing_happened_since(&a) {
                    mark.restore(&mut a);
                    a.issues.push(Issue {
                        offset: pos,
                        pickle: a.pickles.len().saturating_sub(1),
                        kind: IssueKind::TrailingData {
                            len: data.len() - pos,
                        },
                        fatal: false,
                    });
                }
                break;
            }
        }
    }
    a
}

/// Analyses exactly one pickle starting at `start` (for containers that know where their
/// pickles are, such as torch's legacy format), appending to `a`.
pub fn analyze_pickle_at(a: &mut Analysis<'_>, start: usize, limits: &Limits) -> PickleEnd {
    let mut budget = limits.max_ops;
    run_pickle(a, start, limits, &mut budget)
}

impl<'a> Analysis<'a> {
    /// An empty analysis of `input`, to be filled by [`analyze_pickle_at`].
    pub fn new(input: &'a [u8]) -> Self {
        empty(input, false)
    }
}

fn empty(data: &[u8], trace: bool) -> Analysis<'_> {
    Analysis {
        input: data,
        values: Vec::new(),
        pickles: Vec::new(),
        imports: Vec::new(),
        calls: Vec::new(),
        builds: Vec::new(),
        mutations: Vec::new(),
        persistent_ids: Vec::new(),
        extensions: Vec::new(),
        issues: Vec::new(),
        trace: trace.then(Vec::new),
        opcodes_seen: [0; 4],
    }
}

struct Snapshot {
    values: usize,
    pickles: usize,
    imports: usize,
    calls: usize,
    builds: usize,
    mutations: usize,
    persistent: usize,
    extensions: usize,
    issues: usize,
    trace: usize,
    opcodes_seen: [u64; 4],
}

impl Snapshot {
    fn of(a: &Analysis<'_>) -> Self {
        Snapshot {
            values: a.values.len(),
            pickles: a.pickles.len(),
            imports: a.imports.len(),
            calls: a.calls.len(),
            builds: a.builds.len(),
            mutations: a.mutations.len(),
            persistent: a.persistent_ids.len(),
            extensions: a.extensions.len(),
            issues: a.issues.len(),
            trace: a.trace.as_ref().map_or(0, Vec::len),
            opcodes_seen: a.opcodes_seen,
        }
    }
    fn nothing_happened_since(&self, a: &Analysis<'_>) -> bool {
        a.imports.len() == self.imports
            && a.calls.len() == self.calls
            && a.builds.len() == self.builds
            && a.mutations.len() == self.mutations
            && a.persistent_ids.len() == self.persistent
            && a.extensions.len() == self.extensions
            && !a.issues[self.issues..]
                .iter()
                .any(|i| matches!(i.kind, IssueKind::Limit(_)))
    }
    fn restore(&self, a: &mut Analysis<'_>) {
        a.opcodes_seen = self.opcodes_seen;
        a.values.truncate(self.values);
        a.pickles.truncate(self.pickles);
        a.issues.truncate(self.issues);
        if let Some(t) = a.trace.as_mut() {
            t.truncate(self.trace);
        }
    }
}

/// An error that stops the current pickle.
struct Stop(IssueKind);

type R<T> = Result<T, Stop>;

struct Vm<'a, 'b> {
    a: &'b mut Analysis<'a>,
    limits: &'b Limits,
    stack: Vec<ObjId>,
    marks: Vec<usize>,
    memo: HashMap<u64, ObjId>,
    proto: u8,
    pickle: usize,
    offset: usize,
    /// Value pushed or stored by the current opcode, for the trace.
    last: Option<ObjId>,
}

fn run_pickle(a: &mut Analysis<'_>, start: usize, limits: &Limits, budget: &mut u64) -> PickleEnd {
    let pickle = a.pickles.len();
    a.pickles.push(PickleInfo {
        start,
        end: None,
        protocol: None,
        root: None,
        ops: 0,
    });
    let data = a.input;
    let mut vm = Vm {
        a,
        limits,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        proto: 0,
        pickle,
        offset: start,
        last: None,
    };
    let mut pos = start;
    let mut ops = 0u64;
    let outcome = loop {
        if pos >= data.len() {
            vm.offset = pos;
            break Err(Stop(IssueKind::MissingStop));
        }
        if *budget == 0 {
            vm.offset = pos;
            break Err(Stop(IssueKind::Limit("opcodes")));
        }
        *budget -= 1;
        ops += 1;
        let op = match read_op(data, pos, limits.max_line) {
            Ok(op) => op,
            Err(e) => {
                vm.offset = e.offset;
                break Err(Stop(IssueKind::Decode(e.kind)));
            }
        };
        vm.offset = op.offset;
        vm.last = None;
        let b = op.code.byte() as usize;
        vm.a.opcodes_seen[b / 64] |= 1 << (b % 64);
        let depth = vm.marks.len();
        let step = vm.step(&op);
        if let Some(t) = vm.a.trace.as_mut() {
            t.push(TraceEntry {
                offset: op.offset,
                opcode: op.code,
                arg: arg_text(&op),
                depth,
                result: vm.last,
            });
        }
        match step {
            Ok(Some(root)) => break Ok((root, op.end)),
            Ok(None) => pos = op.end,
            Err(e) => break Err(e),
        }
    };
    let offset = vm.offset;
    let info = &mut a.pickles[pickle];
    info.ops = ops;
    match outcome {
        Ok((root, end)) => {
            info.root = Some(root);
            info.end = Some(end);
            PickleEnd::Stop(end)
        }
        Err(Stop(kind)) => {
            a.issues.push(Issue {
                offset,
                pickle,
                kind,
                fatal: true,
            });
            PickleEnd::Failed
        }
    }
}

fn arg_text(op: &Op<'_>) -> String {
    fn clip(b: &[u8]) -> String {
        let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
        if b.len() > 80 {
            format!("{s:?}…")
        } else {
            format!("{s:?}")
        }
    }
    match op.arg {
        Arg::None => String::new(),
        Arg::UInt(v) => v.to_string(),
        Arg::Int(v) => v.to_string(),
        Arg::Float(v) => format!("{v:?}"),
        Arg::Line(l) => clip(l),
        Arg::Lines(m, n) => format!("{} {}", clip(m), clip(n)),
        Arg::Bytes(b) => match op.code {
            Opcode::LONG1 | Opcode::LONG4 => format!("<{} bytes>", b.len()),
            _ => clip(b),
        },
    }
}

impl<'a, 'b> Vm<'a, 'b> {
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn new_value(&mut self, v: Value) -> R<ObjId> {
        if self.a.values.len() >= self.limits.max_values {
            return Err(Stop(IssueKind::Limit("values")));
        }
        let id = ObjId(self.a.values.len() as u32);
        self.a.values.push(v);
        Ok(id)
    }

    fn push_id(&mut self, id: ObjId) -> R<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(Stop(IssueKind::Limit("stack depth")));
        }
        self.stack.push(id);
        self.last = Some(id);
        Ok(())
    }

    fn push(&mut self, v: Value) -> R<ObjId> {
        let id = self.new_value(v)?;
        self.push_id(id)?;
        Ok(id)
    }

    fn pop(&mut self) -> R<ObjId> {
        if self.stack.len() <= self.fence() {
            return Err(Stop(IssueKind::StackUnderflow));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> R<ObjId> {
        if self.stack.len() <= self.fence() {
            return Err(Stop(IssueKind::StackUnderflow));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    /// CPython's `marker()`: pops the last mark and returns its stack position.
    fn marker(&mut self) -> R<usize> {
        self.marks.pop().ok_or(Stop(IssueKind::NoMark))
    }

    /// Pops everything above stack position `k`.
    fn pop_from(&mut self, k: usize) -> R<Vec<ObjId>> {
        if k > self.stack.len() {
            return Err(Stop(IssueKind::StackUnderflow));
        }
        Ok(self.stack.split_off(k))
    }

    fn val(&self, id: ObjId) -> &Value {
        &self.a.values[id.0 as usize]
    }

    fn memo_put(&mut self, key: u64, id: ObjId) -> R<()> {
        if !self.memo.contains_key(&key) && self.memo.len() >= self.limits.max_memo {
            return Err(Stop(IssueKind::Limit("memo entries")));
        }
        self.memo.insert(key, id);
        self.last = Some(id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> R<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or(Stop(IssueKind::MemoMissing(key)))?;
        self.push_id(id)
    }

    fn import(&mut self, opcode: Opcode, module: String, name: String, dynamic: bool) -> R<ObjId> {
        let (module, name, written) = match (self.proto < 3 && !dynamic)
            .then(|| compat::map_py2(&module, &name))
            .flatten()
        {
            Some((m, n)) => (m, n, Some((module, name))),
            None => (module, name, None),
        };
        let index = self.a.imports.len();
        let value = self.new_value(Value::Global(index))?;
        self.a.imports.push(Import {
            offset: self.offset,
            opcode,
            module,
            name,
            written,
            dynamic,
            pickle: self.pickle,
            value,
        });
        Ok(value)
    }

    fn call(
        &mut self,
        opcode: Opcode,
        kind: CallKind,
        callable: ObjId,
        args: ObjId,
        kwargs: Option<ObjId>,
    ) -> R<ObjId> {
        let index = self.a.calls.len();
        let result = self.new_value(Value::Object(Box::new(Object {
            callable,
            args,
            kwargs,
            kind,
            call: index,
            state: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
        })))?;
        self.a.calls.push(Call {
            offset: self.offset,
            opcode,
            kind,
            callable,
            args,
            kwargs,
            result,
            pickle: self.pickle,
        });
        Ok(result)
    }

    /// Whether a value's Python type is only known at run time.
    fn symbolic(&self, id: ObjId) -> bool {
        matches!(
            self.val(id),
            Value::Global(_)
                | Value::Object(_)
                | Value::Persistent(_)
                | Value::Extension(_)
                | Value::Buffer { .. }
        )
    }

    fn wrong(&self, expected: &'static str, id: ObjId) -> Stop {
        Stop(IssueKind::WrongType {
            expected,
            found: self.val(id).type_name(),
        })
    }

    /// Executes one opcode. `Ok(Some(root))` on STOP.
    fn step(&mut self, op: &Op<'_>) -> R<Option<ObjId>> {
        use Opcode::*;
        let input_len = self.a.input.len();
        match (op.code, op.arg) {
            (STOP, _) => return self.pop().map(Some),
            (PROTO, Arg::UInt(p)) => {
                if p > 5 {
                    return Err(Stop(IssueKind::UnsupportedProtocol(p)));
                }
                self.proto = p as u8;
                self.a.pickles[self.pickle].protocol = Some(p as u8);
            }
            (FRAME, Arg::UInt(n)) => {
                let remaining = (input_len - op.end) as u64;
                if n > remaining {
                    // C `_pickle` fails here; the pure-Python unpickler (used by joblib and
                    // others) does not check and runs the opcodes that follow: keep going.
                    self.a.issues.push(Issue {
                        offset: self.offset,
                        pickle: self.pickle,
                        kind: IssueKind::FrameOverrun {
                            claimed: n,
                            remaining,
                        },
                        fatal: true,
                    });
                }
            }
            (MARK, _) => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(Stop(IssueKind::Limit("open marks")));
                }
                self.marks.push(self.stack.len());
            }
            (POP, _) => {
                if self.marks.last() == Some(&self.stack.len()) && !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            (POP_MARK, _) => {
                let k = self.marker()?;
                self.pop_from(k)?;
            }
            (DUP, _) => {
                let t = self.top()?;
                self.push_id(t)?;
            }
            (NONE, _) => {
                self.push(Value::None)?;
            }
            (NEWTRUE, _) => {
                self.push(Value::Bool(true))?;
            }
            (NEWFALSE, _) => {
                self.push(Value::Bool(false))?;
            }
            (INT, Arg::Line(l)) => {
                let v = match l {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => int_value(l).ok_or(Stop(IssueKind::BadText("INT literal")))?,
                };
                self.push(v)?;
            }
            (LONG, Arg::Line(l)) => {
                let l = l.strip_suffix(b"L").unwrap_or(l);
                let v = int_value(l).ok_or(Stop(IssueKind::BadText("LONG literal")))?;
                self.push(v)?;
            }
            (BININT, Arg::Int(v)) => {
                self.push(Value::Int(i64::from(v)))?;
            }
            (BININT1 | BININT2, Arg::UInt(v)) => {
                self.push(Value::Int(v as i64))?;
            }
            (LONG1 | LONG4, Arg::Bytes(b)) => {
                self.push(long_value(b))?;
            }
            (FLOAT, Arg::Line(l)) => {
                let f = text::parse_float(l).ok_or(Stop(IssueKind::BadText("FLOAT literal")))?;
                self.push(Value::Float(f))?;
            }
            (BINFLOAT, Arg::Float(f)) => {
                self.push(Value::Float(f))?;
            }
            (STRING, Arg::Line(l)) => {
                let b = text::decode_string(l).ok_or(Stop(IssueKind::BadText("STRING literal")))?;
                self.push(Value::Str(text::lossy(&b)))?;
            }
            (BINSTRING | SHORT_BINSTRING, Arg::Bytes(b)) => {
                self.push(Value::Str(text::lossy(b)))?;
            }
            (UNICODE, Arg::Line(l)) => {
                self.push(Value::Str(text::decode_raw_unicode_escape(l)))?;
            }
            (BINUNICODE | SHORT_BINUNICODE | BINUNICODE8, Arg::Bytes(b)) => {
                self.push(Value::Str(text::lossy(b)))?;
            }
            (BINBYTES | SHORT_BINBYTES | BINBYTES8, Arg::Bytes(b)) => {
                let start = op.end - b.len();
                self.push(Value::Bytes(ByteData::Input {
                    start,
                    len: b.len(),
                }))?;
            }
            (BYTEARRAY8, Arg::Bytes(b)) => {
                let start = op.end - b.len();
                self.push(Value::ByteArray(ByteData::Input {
                    start,
                    len: b.len(),
                }))?;
            }
            (EMPTY_TUPLE, _) => {
                self.push(Value::Tuple(Vec::new()))?;
            }
            (TUPLE1 | TUPLE2 | TUPLE3, _) => {
                let n = match op.code {
                    TUPLE1 => 1,
                    TUPLE2 => 2,
                    _ => 3,
                };
                if self.stack.len() < n || self.stack.len() - n < self.fence() {
                    return Err(Stop(IssueKind::StackUnderflow));
                }
                let k = self.stack.len() - n;
                let items = self.pop_from(k)?;
                self.push(Value::Tuple(items))?;
            }
            (TUPLE, _) => {
                let k = self.marker()?;
                let items = self.pop_from(k)?;
                self.push(Value::Tuple(items))?;
            }
            (EMPTY_LIST, _) => {
                self.push(Value::List(Vec::new()))?;
            }
            (LIST, _) => {
                let k = self.marker()?;
                let items = self.pop_from(k)?;
                self.push(Value::List(items))?;
            }
            (EMPTY_DICT, _) => {
                self.push(Value::Dict(Vec::new()))?;
            }
            (DICT, _) => {
                let k = self.marker()?;
                let items = self.pop_from(k)?;
                if !items.len().is_multiple_of(2) {
                    return Err(Stop(IssueKind::OddItems));
                }
                let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                self.push(Value::Dict(pairs))?;
            }
            (EMPTY_SET, _) => {
                self.push(Value::Set(Vec::new()))?;
            }
            (FROZENSET, _) => {
                let k = self.marker()?;
                let items = self.pop_from(k)?;
                self.push(Value::FrozenSet(items))?;
            }
            (APPEND, _) => {
                if self.stack.len() < 2 || self.stack.len() - 1 <= self.fence() {
                    return Err(Stop(IssueKind::StackUnderflow));
                }
                let x = self.stack.len() - 1;
                self.extend(op.code, x)?;
            }
            (APPENDS | ADDITEMS, _) => {
                let x = self.marker()?;
                self.extend(op.code, x)?;
            }
            (SETITEM, _) => {
                let x = self
                    .stack
                    .len()
                    .checked_sub(2)
                    .ok_or(Stop(IssueKind::StackUnderflow))?;
                self.set_items(op.code, x)?;
            }
            (SETITEMS, _) => {
                let x = self.marker()?;
                self.set_items(op.code, x)?;
            }
            (GET, Arg::Line(l)) => {
                let k = memo_key(l)?;
                self.memo_get(k)?;
            }
            (BINGET | LONG_BINGET, Arg::UInt(k)) => self.memo_get(k)?,
            (PUT, Arg::Line(l)) => {
                let k = memo_key(l)?;
                let t = self.top()?;
                self.memo_put(k, t)?;
            }
            (BINPUT | LONG_BINPUT, Arg::UInt(k)) => {
                let t = self.top()?;
                self.memo_put(k, t)?;
            }
            (MEMOIZE, _) => {
                let t = self.top()?;
                let k = self.memo.len() as u64;
                self.memo_put(k, t)?;
            }
            (GLOBAL, Arg::Lines(m, n)) => {
                let module = std::str::from_utf8(m)
                    .map_err(|_| Stop(IssueKind::BadText("GLOBAL module name")))?;
                let name =
                    std::str::from_utf8(n).map_err(|_| Stop(IssueKind::BadText("GLOBAL name")))?;
                let v = self.import(GLOBAL, module.to_string(), name.to_string(), false)?;
                self.push_id(v)?;
            }
            (STACK_GLOBAL, _) => {
                let name = self.pop()?;
                let module = self.pop()?;
                let v = match (self.val(module), self.val(name)) {
                    (Value::Str(m), Value::Str(n)) => {
                        let (m, n) = (m.clone(), n.clone());
                        self.import(STACK_GLOBAL, m, n, false)?
                    }
                    _ => {
                        for id in [module, name] {
                            if !matches!(self.val(id), Value::Str(_)) && !self.symbolic(id) {
                                return Err(self.wrong("str", id));
                            }
                        }
                        let m = self.a.as_str(module).map_or("?", |s| s).to_string();
                        let n = self.a.as_str(name).map_or("?", |s| s).to_string();
                        self.import(STACK_GLOBAL, m, n, true)?
                    }
                };
                self.push_id(v)?;
            }
            (INST, Arg::Lines(m, n)) => {
                let k = self.marker()?;
                let module = std::str::from_utf8(m)
                    .map_err(|_| Stop(IssueKind::BadText("INST module name")))?;
                let name =
                    std::str::from_utf8(n).map_err(|_| Stop(IssueKind::BadText("INST name")))?;
                let cls = self.import(INST, module.to_string(), name.to_string(), false)?;
                let items = self.pop_from(k)?;
                let args = self.new_value(Value::Tuple(items))?;
                let r = self.call(INST, CallKind::Inst, cls, args, None)?;
                self.push_id(r)?;
            }
            (OBJ, _) => {
                let k = self.marker()?;
                if self.stack.len() <= k {
                    return Err(Stop(IssueKind::StackUnderflow));
                }
                let items = self.pop_from(k + 1)?;
                let cls = self.stack.pop().expect("len > k checked above");
                let args = self.new_value(Value::Tuple(items))?;
                let r = self.call(OBJ, CallKind::Obj, cls, args, None)?;
                self.push_id(r)?;
            }
            (REDUCE, _) => {
                let args = self.pop()?;
                let callable = self.pop()?;
                if !matches!(self.val(args), Value::Tuple(_)) && !self.symbolic(args) {
                    return Err(self.wrong("an argument tuple", args));
                }
                let r = self.call(REDUCE, CallKind::Reduce, callable, args, None)?;
                self.push_id(r)?;
            }
            (NEWOBJ | NEWOBJ_EX, _) => {
                let kwargs = if op.code == NEWOBJ_EX {
                    Some(self.pop()?)
                } else {
                    None
                };
                let args = self.pop()?;
                let cls = self.pop()?;
                if !self.symbolic(cls) {
                    return Err(self.wrong("a class", cls));
                }
                if !matches!(self.val(args), Value::Tuple(_)) && !self.symbolic(args) {
                    return Err(self.wrong("an argument tuple", args));
                }
                if let Some(kw) = kwargs {
                    if !matches!(self.val(kw), Value::Dict(_)) && !self.symbolic(kw) {
                        return Err(self.wrong("a keyword dict", kw));
                    }
                }
                let kind = if op.code == NEWOBJ {
                    CallKind::NewObj
                } else {
                    CallKind::NewObjEx
                };
                let r = self.call(op.code, kind, cls, args, kwargs)?;
                self.push_id(r)?;
            }
            (BUILD, _) => {
                if self.stack.len() < 2 || self.stack.len() - 2 < self.fence() {
                    return Err(Stop(IssueKind::StackUnderflow));
                }
                let state = self.pop()?;
                let target = *self.stack.last().expect("len >= 2 checked above");
                self.a.builds.push(Build {
                    offset: self.offset,
                    target,
                    state,
                    pickle: self.pickle,
                });
                if let Value::Object(o) = &mut self.a.values[target.0 as usize] {
                    o.state.push(state);
                }
                self.last = Some(target);
            }
            (PERSID, Arg::Line(l)) => {
                let pid = self.new_value(Value::Str(text::lossy(l)))?;
                self.persistent(pid)?;
            }
            (BINPERSID, _) => {
                let pid = self.pop()?;
                self.persistent(pid)?;
            }
            (EXT1 | EXT2, Arg::UInt(c)) => self.extension(c as i64)?,
            (EXT4, Arg::Int(c)) => self.extension(i64::from(c))?,
            (NEXT_BUFFER, _) => return Err(Stop(IssueKind::OutOfBandBuffer)),
            (READONLY_BUFFER, _) => {
                let t = self.top()?;
                let sym = self.symbolic(t);
                match &mut self.a.values[t.0 as usize] {
                    Value::Buffer { readonly } => *readonly = true,
                    Value::Bytes(_) | Value::ByteArray(_) => {}
                    _ if sym => {}
                    _ => return Err(self.wrong("a buffer", t)),
                }
            }
            // read_op only pairs each opcode with its own argument shape.
            (code, _) => unreachable!("opcode {code:?} decoded with a mismatched argument"),
        }
        Ok(None)
    }

    fn persistent(&mut self, pid: ObjId) -> R<()> {
        let index = self.a.persistent_ids.len();
        let value = self.new_value(Value::Persistent(index))?;
        self.a.persistent_ids.push(PersistentRef {
            offset: self.offset,
            pid,
            value,
            pickle: self.pickle,
        });
        self.push_id(value)
    }

    fn extension(&mut self, code: i64) -> R<()> {
        if code <= 0 {
            return Err(Stop(IssueKind::BadExtensionCode(code)));
        }
        self.a.extensions.push(ExtensionRef {
            offset: self.offset,
            code,
            pickle: self.pickle,
        });
        self.push(Value::Extension(code)).map(|_| ())
    }

    /// `do_append` / ADDITEMS: items above position `x` go into the object at `x - 1`.
    fn extend(&mut self, code: Opcode, x: usize) -> R<()> {
        let len = self.stack.len();
        if x > len || x == 0 {
            return Err(Stop(IssueKind::StackUnderflow));
        }
        if x == len {
            return Ok(());
        }
        let items = self.stack.split_off(x);
        let target = self.stack[x - 1];
        let set_op = code == Opcode::ADDITEMS;
        let sym = self.symbolic(target);
        match &mut self.a.values[target.0 as usize] {
            Value::List(v) if !set_op => v.extend(items),
            Value::Set(v) if set_op => v.extend(items),
            Value::Object(o) => {
                o.items.extend(items);
                self.mutation(code, target);
            }
            _ if sym => self.mutation(code, target),
            _ => return Err(self.wrong(if set_op { "a set" } else { "a list" }, target)),
        }
        Ok(())
    }

    /// `do_setitems`: key/value pairs above position `x` go into the object at `x - 1`.
    fn set_items(&mut self, code: Opcode, x: usize) -> R<()> {
        let len = self.stack.len();
        if x > len || x == 0 {
            return Err(Stop(IssueKind::StackUnderflow));
        }
        if x == len {
            return Ok(());
        }
        if !(len - x).is_multiple_of(2) {
            return Err(Stop(IssueKind::OddItems));
        }
        let items = self.stack.split_off(x);
        let target = self.stack[x - 1];
        let pairs = items.chunks_exact(2).map(|p| (p[0], p[1]));
        let sym = self.symbolic(target);
        match &mut self.a.values[target.0 as usize] {
            Value::Dict(v) => v.extend(pairs),
            Value::Object(o) => {
                o.entries.extend(pairs);
                self.mutation(code, target);
            }
            _ if sym => self.mutation(code, target),
            _ => return Err(self.wrong("a dict", target)),
        }
        Ok(())
    }

    fn mutation(&mut self, opcode: Opcode, target: ObjId) {
        self.a.mutations.push(Mutation {
            offset: self.offset,
            opcode,
            target,
            pickle: self.pickle,
        });
    }
}

fn int_value(l: &[u8]) -> Option<Value> {
    Some(match text::parse_int(l)? {
        IntLit::Small(v) => Value::Int(v),
        IntLit::Big(b) => Value::BigInt(b),
    })
}

/// LONG1/LONG4: little-endian two's complement.
fn long_value(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        buf[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(b.to_vec())
}

fn memo_key(l: &[u8]) -> R<u64> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or(Stop(IssueKind::BadText("memo index")))
}
