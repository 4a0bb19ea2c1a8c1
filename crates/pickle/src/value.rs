//! The symbolic value model: what a pickle *would* build, without building it.
//!
//! Values live in an arena and refer to each other by [`ObjId`], so objects shared through the
//! memo, mutated in place (APPEND, SETITEM, BUILD) or cyclic are represented exactly — the same
//! model the safe loader rebuilds data from.

/// Index of a value in an [`Analysis`](crate::Analysis) arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(pub u32);

/// Bytes of a `bytes`/`bytearray` value: a range of the input when taken verbatim (zero-copy),
/// or owned when decoded (protocol-0 `STRING` escapes, `encoding="bytes"`-style data).
#[derive(Clone, Debug, PartialEq)]
pub enum ByteData {
    /// `[start, start + len)` of the analysed input.
    Input {
        /// Start offset in the input.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Decoded bytes.
    Owned(Vec<u8>),
}

impl ByteData {
    /// Resolves the bytes against the input they came from.
    pub fn get<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        match self {
            ByteData::Input { start, len } => input.get(*start..start + len).unwrap_or(&[]),
            ByteData::Owned(v) => v,
        }
    }
    /// Number of bytes.
    pub fn len(&self) -> usize {
        match self {
            ByteData::Input { len, .. } => *len,
            ByteData::Owned(v) => v.len(),
        }
    }
    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a callable would be invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallKind {
    /// `REDUCE`: `callable(*args)`.
    Reduce,
    /// `NEWOBJ`: `cls.__new__(cls, *args)`.
    NewObj,
    /// `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx,
    /// `OBJ`: `cls(*args)` (protocol 1).
    Obj,
    /// `INST`: `module.name(*args)` (protocol 0).
    Inst,
}

/// An object produced by calling something (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST), with what
/// later opcodes did to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// What is called (usually a [`Value::Global`]).
    pub callable: ObjId,
    /// The argument tuple (for OBJ and INST, the tuple of the marked items).
    pub args: ObjId,
    /// Keyword arguments (NEWOBJ_EX), a dict value.
    pub kwargs: Option<ObjId>,
    /// How it is called.
    pub kind: CallKind,
    /// Index of the call in [`Analysis::calls`](crate::Analysis::calls).
    pub call: usize,
    /// States applied by BUILD, in order (`__setstate__` or `__dict__` update).
    pub state: Vec<ObjId>,
    /// Items appended by APPEND/APPENDS/ADDITEMS (calls `append`/`extend`/`add`).
    pub items: Vec<ObjId>,
    /// Items set by SETITEM/SETITEMS (calls `__setitem__`).
    pub entries: Vec<(ObjId, ObjId)>,
}

/// A symbolic value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A larger integer: little-endian two's complement bytes (as LONG1/LONG4 store it).
    BigInt(Vec<u8>),
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// `bytes`.
    Bytes(ByteData),
    /// `bytearray`.
    ByteArray(ByteData),
    /// A tuple.
    Tuple(Vec<ObjId>),
    /// A list.
    List(Vec<ObjId>),
    /// A dict, in insertion order (duplicate keys kept as written).
    Dict(Vec<(ObjId, ObjId)>),
    /// A set.
    Set(Vec<ObjId>),
    /// A frozenset.
    FrozenSet(Vec<ObjId>),
    /// An imported object: index into [`Analysis::imports`](crate::Analysis::imports).
    Global(usize),
    /// The result of a call.
    Object(Box<Object>),
    /// The result of `persistent_load(pid)`: index into
    /// [`Analysis::persistent_ids`](crate::Analysis::persistent_ids).
    Persistent(usize),
    /// An object from the copyreg extension registry (EXT1/2/4): unknown until run time.
    Extension(i64),
    /// An out-of-band buffer (NEXT_BUFFER), possibly made read-only.
    Buffer {
        /// Whether READONLY_BUFFER was applied.
        readonly: bool,
    },
}

impl Value {
    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global(_) => "global",
            Value::Object(_) => "object",
            Value::Persistent(_) => "persistent",
            Value::Extension(_) => "extension",
            Value::Buffer { .. } => "buffer",
        }
    }
}
