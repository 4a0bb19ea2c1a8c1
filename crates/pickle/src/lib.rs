//! Static analysis of Python pickles: bytes in, facts out. Nothing is executed, no file is
//! opened, nothing is printed.
//!
//! [`analyze`] runs a symbolic copy of CPython's unpickler (`Modules/_pickle.c`) over a byte
//! stream: the same opcodes, the same stack/mark/memo rules, the same Python 2 name mapping. It
//! records every import the real unpickler would perform, every call it would make, every
//! `BUILD`, every persistent id, and every place where the real unpickler would fail. Values
//! are kept in an arena ([`value`]) faithful enough to rebuild the data, so a loader can use
//! the very same machine instead of a second interpreter.
//!
//! ```
//! let data = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
//! let a = ckptguard_pickle::analyze(data, &ckptguard_pickle::Limits::default());
//! assert_eq!(a.imports[0].qualified(), "os.system");
//! assert_eq!(a.render_call(0), "os.system(\"true\")");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod compat;
#[allow(missing_docs, clippy::type_complexity)]
mod compat_table;
pub mod disasm;
mod machine;
pub mod ops;
mod render;
mod text;
pub mod value;

pub use machine::{analyze, analyze_pickle_at, analyze_traced, PickleEnd};
pub use ops::{OpErrorKind, Opcode};
pub use value::{ByteData, CallKind, ObjId, Object, Value};

/// Bounds that turn hostile input into an [`Issue`] in bounded time and memory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Opcodes executed per stream (all pickles in it together).
    pub max_ops: u64,
    /// Values created (the arena size).
    pub max_values: usize,
    /// Depth of the value stack.
    pub max_stack: usize,
    /// Marks open at once (nesting of MARK ... TUPLE/LIST/DICT).
    pub max_marks: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Pickles analysed one after another in one stream.
    pub max_pickles: usize,
    /// Length of a protocol-0 text argument (GLOBAL names, INT, STRING, ...).
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ops: 100_000_000,
            max_values: 20_000_000,
            max_stack: 10_000_000,
            max_marks: 1_000_000,
            max_memo: 10_000_000,
            max_pickles: 1_000,
            max_line: 16 << 20,
        }
    }
}

/// An import the unpickler would perform (`find_class(module, name)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// Offset of the importing opcode.
    pub offset: usize,
    /// GLOBAL, STACK_GLOBAL or INST.
    pub opcode: Opcode,
    /// Module, after CPython's Python 2 mapping.
    pub module: String,
    /// Name (may be a dotted qualname: `Path.touch`), after the mapping.
    pub name: String,
    /// The names as written in the stream, when the Python 2 mapping changed them.
    pub written: Option<(String, String)>,
    /// The names came from values the analysis cannot know (results of calls, ...).
    pub dynamic: bool,
    /// Which pickle of the stream.
    pub pickle: usize,
    /// The value the import produced.
    pub value: ObjId,
}

impl Import {
    /// `module.name`, as Python would spell the object.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// A call the unpickler would make.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Offset of the calling opcode.
    pub offset: usize,
    /// REDUCE, NEWOBJ, NEWOBJ_EX, OBJ or INST.
    pub opcode: Opcode,
    /// How the callable is invoked.
    pub kind: CallKind,
    /// What is called.
    pub callable: ObjId,
    /// The argument value (a tuple unless the stream is malformed).
    pub args: ObjId,
    /// Keyword arguments (NEWOBJ_EX).
    pub kwargs: Option<ObjId>,
    /// The value the call produces.
    pub result: ObjId,
    /// Which pickle of the stream.
    pub pickle: usize,
}

/// A BUILD: `inst.__setstate__(state)`, or an update of `inst.__dict__` / `setattr` calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    /// Offset of the BUILD opcode.
    pub offset: usize,
    /// The object whose state is set.
    pub target: ObjId,
    /// The state.
    pub state: ObjId,
    /// Which pickle of the stream.
    pub pickle: usize,
}

/// APPEND/APPENDS/SETITEM/SETITEMS/ADDITEMS on something that is not a plain list, dict or
/// set: the unpickler calls its `append`/`extend`/`__setitem__`/`add` method.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    /// Offset of the opcode.
    pub offset: usize,
    /// The opcode.
    pub opcode: Opcode,
    /// The object whose method is called.
    pub target: ObjId,
    /// Which pickle of the stream.
    pub pickle: usize,
}

/// A persistent id handed to `persistent_load` (torch: storages).
#[derive(Clone, Debug, PartialEq)]
pub struct PersistentRef {
    /// Offset of PERSID/BINPERSID.
    pub offset: usize,
    /// The id value.
    pub pid: ObjId,
    /// The value `persistent_load` returns.
    pub value: ObjId,
    /// Which pickle of the stream.
    pub pickle: usize,
}

/// An EXT1/EXT2/EXT4 lookup in copyreg's extension registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionRef {
    /// Offset of the opcode.
    pub offset: usize,
    /// The extension code.
    pub code: i64,
    /// Which pickle of the stream.
    pub pickle: usize,
}

/// Why the real unpickler would fail, or something it would do that deserves a look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssueKind {
    /// An opcode could not be decoded.
    Decode(OpErrorKind),
    /// The stream ended before STOP.
    MissingStop,
    /// An opcode popped below the last mark or from an empty stack.
    StackUnderflow,
    /// An opcode needed a MARK and there was none.
    NoMark,
    /// GET/BINGET/LONG_BINGET of an index never stored.
    MemoMissing(u64),
    /// An operand has a type the real unpickler rejects.
    WrongType {
        /// What the opcode needs.
        expected: &'static str,
        /// What it got.
        found: &'static str,
    },
    /// PROTO above 5.
    UnsupportedProtocol(u64),
    /// A protocol-0 text argument the real unpickler rejects.
    BadText(&'static str),
    /// FRAME claims more bytes than remain.
    FrameOverrun {
        /// Claimed frame length.
        claimed: u64,
        /// Bytes left.
        remaining: u64,
    },
    /// NEXT_BUFFER: out-of-band data, which no checkpoint loader supplies.
    OutOfBandBuffer,
    /// EXT code not above zero.
    BadExtensionCode(i64),
    /// An odd number of items for DICT/SETITEMS.
    OddItems,
    /// A configured limit was reached; the name says which.
    Limit(&'static str),
    /// Bytes after the last STOP that are not a pickle.
    TrailingData {
        /// How many bytes.
        len: usize,
    },
}

/// One issue, at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// Offset of the opcode concerned.
    pub offset: usize,
    /// Which pickle of the stream.
    pub pickle: usize,
    /// What happened.
    pub kind: IssueKind,
    /// The real unpickler fails here (the stream is malformed). The analysis itself stops only
    /// where every unpickler would stop; otherwise it goes on to find what lies beyond.
    pub fatal: bool,
}

impl Issue {
    /// A one-line description.
    pub fn message(&self) -> String {
        use IssueKind::*;
        match &self.kind {
            Decode(k) => {
                let e = ops::OpError {
                    offset: self.offset,
                    kind: k.clone(),
                };
                e.to_string()
            }
            MissingStop => format!("stream ends at {} before STOP", self.offset),
            StackUnderflow => format!("stack underflow at {}", self.offset),
            NoMark => format!("opcode at {} needs a MARK and there is none", self.offset),
            MemoMissing(i) => format!("memo index {i} read at {} was never stored", self.offset),
            WrongType { expected, found } => {
                format!(
                    "opcode at {} expects {expected}, found {found}",
                    self.offset
                )
            }
            UnsupportedProtocol(p) => format!("unsupported pickle protocol {p} at {}", self.offset),
            BadText(what) => format!("invalid {what} at {}", self.offset),
            FrameOverrun { claimed, remaining } => format!(
                "FRAME at {} claims {claimed} bytes but only {remaining} remain",
                self.offset
            ),
            OutOfBandBuffer => format!(
                "NEXT_BUFFER at {}: out-of-band buffer that no checkpoint loader supplies",
                self.offset
            ),
            BadExtensionCode(c) => format!("EXT code {c} at {} is not positive", self.offset),
            OddItems => format!("odd number of items for a dict at {}", self.offset),
            Limit(which) => format!("limit on {which} reached at {}", self.offset),
            TrailingData { len } => {
                format!(
                    "{len} bytes after the last STOP (at {}) are not a pickle",
                    self.offset
                )
            }
        }
    }
}

/// One pickle of a stream.
#[derive(Clone, Debug, PartialEq)]
pub struct PickleInfo {
    /// Offset of its first opcode.
    pub start: usize,
    /// Offset just past its STOP, if it reached one.
    pub end: Option<usize>,
    /// The protocol its PROTO opcode declared.
    pub protocol: Option<u8>,
    /// Its result, if it reached STOP.
    pub root: Option<ObjId>,
    /// Opcodes executed.
    pub ops: u64,
}

/// One traced opcode (for [`disasm`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEntry {
    /// Offset of the opcode.
    pub offset: usize,
    /// The opcode.
    pub opcode: Opcode,
    /// Its argument, as text.
    pub arg: String,
    /// Marks open before it ran (indentation).
    pub depth: usize,
    /// The value it pushed or stored, if any.
    pub result: Option<ObjId>,
}

/// Everything the analysis learned about a stream.
#[derive(Clone, Debug)]
pub struct Analysis<'a> {
    /// The analysed bytes.
    pub input: &'a [u8],
    /// The value arena.
    pub values: Vec<Value>,
    /// Pickles, in stream order.
    pub pickles: Vec<PickleInfo>,
    /// Imports, in stream order.
    pub imports: Vec<Import>,
    /// Calls, in stream order.
    pub calls: Vec<Call>,
    /// BUILDs, in stream order.
    pub builds: Vec<Build>,
    /// Method calls through APPEND/SETITEM/ADDITEMS on non-container objects.
    pub mutations: Vec<Mutation>,
    /// Persistent ids.
    pub persistent_ids: Vec<PersistentRef>,
    /// Extension-registry lookups.
    pub extensions: Vec<ExtensionRef>,
    /// Failures and oddities.
    pub issues: Vec<Issue>,
    /// Opcode trace, when requested.
    pub trace: Option<Vec<TraceEntry>>,
    /// Which opcodes the stream executed (bit `b` set for opcode byte `b`).
    pub opcodes_seen: [u64; 4],
}

impl<'a> Analysis<'a> {
    /// The value with this id.
    pub fn value(&self, id: ObjId) -> &Value {
        &self.values[id.0 as usize]
    }
    /// Whether the stream executed opcode `op`.
    pub fn used(&self, op: Opcode) -> bool {
        let b = op.byte() as usize;
        self.opcodes_seen[b / 64] & (1 << (b % 64)) != 0
    }
    /// Every opcode the stream executed.
    pub fn opcodes_used(&self) -> Vec<Opcode> {
        (0..=255u8)
            .filter_map(Opcode::from_byte)
            .filter(|o| self.used(*o))
            .collect()
    }
    /// Whether any pickle failed to parse or hit a limit (the stream was not fully analysed).
    pub fn incomplete(&self) -> bool {
        self.issues.iter().any(|i| i.fatal)
    }
    /// If `id` is an imported global, that import.
    pub fn as_import(&self, id: ObjId) -> Option<&Import> {
        match self.value(id) {
            Value::Global(i) => self.imports.get(*i),
            _ => None,
        }
    }
    /// A string value's text.
    pub fn as_str(&self, id: ObjId) -> Option<&str> {
        match self.value(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The items of a tuple value.
    pub fn as_tuple(&self, id: ObjId) -> Option<&[ObjId]> {
        match self.value(id) {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }
    /// Renders a value as Python source (bounded in size, cycle-safe).
    pub fn render(&self, id: ObjId) -> String {
        render::render(self, id, 240)
    }
    /// Renders call number `i` as Python source: `os.system("touch x")`.
    pub fn render_call(&self, i: usize) -> String {
        self.calls
            .get(i)
            .map(|c| render::render(self, c.result, 240))
            .unwrap_or_default()
    }
}
