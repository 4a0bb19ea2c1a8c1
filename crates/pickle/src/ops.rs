//! Pickle opcodes, protocols 0–5, decoded the way CPython's `Modules/_pickle.c` reads them.
//!
//! [`read_op`] decodes one opcode and its argument at a byte offset. Every length is checked
//! against the bytes that remain before anything is sliced; nothing here allocates in
//! proportion to a length read from the input.

use std::fmt;

macro_rules! opcodes {
    ($( $name:ident = $byte:literal, $proto:literal, $effect:literal ;)*) => {
        /// A pickle opcode.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms, missing_docs)]
        pub enum Opcode { $( $name, )* }

        impl Opcode {
            /// Decodes an opcode byte; `None` for bytes CPython rejects ("invalid load key").
            pub fn from_byte(b: u8) -> Option<Opcode> {
                match b { $( $byte => Some(Opcode::$name), )* _ => None }
            }
            /// The opcode byte.
            pub fn byte(self) -> u8 {
                match self { $( Opcode::$name => $byte, )* }
            }
            /// The name `pickletools` uses.
            pub fn name(self) -> &'static str {
                match self { $( Opcode::$name => stringify!($name), )* }
            }
            /// The protocol that introduced the opcode.
            pub fn protocol(self) -> u8 {
                match self { $( Opcode::$name => $proto, )* }
            }
            /// Symbolic stack effect, as `pickletools` documents it.
            pub fn stack_effect(self) -> &'static str {
                match self { $( Opcode::$name => $effect, )* }
            }
        }
    };
}

opcodes! {
    MARK = b'(', 0, "-> mark";
    STOP = b'.', 0, "any ->";
    POP = b'0', 0, "any ->";
    POP_MARK = b'1', 1, "mark stackslice ->";
    DUP = b'2', 0, "any -> any any";
    FLOAT = b'F', 0, "-> float";
    INT = b'I', 0, "-> int_or_bool";
    BININT = b'J', 1, "-> int";
    BININT1 = b'K', 1, "-> int";
    LONG = b'L', 0, "-> int";
    BININT2 = b'M', 1, "-> int";
    NONE = b'N', 0, "-> None";
    PERSID = b'P', 0, "-> any (persistent_load(id))";
    BINPERSID = b'Q', 1, "id -> any (persistent_load(id))";
    REDUCE = b'R', 0, "callable args -> callable(*args)";
    STRING = b'S', 0, "-> str";
    BINSTRING = b'T', 1, "-> str";
    SHORT_BINSTRING = b'U', 1, "-> str";
    UNICODE = b'V', 0, "-> str";
    BINUNICODE = b'X', 1, "-> str";
    APPEND = b'a', 0, "list any -> list";
    BUILD = b'b', 0, "obj state -> obj (obj.__setstate__(state))";
    GLOBAL = b'c', 0, "-> any (import module.name)";
    DICT = b'd', 0, "mark stackslice -> dict";
    EMPTY_DICT = b'}', 1, "-> dict";
    APPENDS = b'e', 1, "list mark stackslice -> list";
    GET = b'g', 0, "-> any (memo)";
    BINGET = b'h', 1, "-> any (memo)";
    INST = b'i', 0, "mark stackslice -> obj (import module.name; call)";
    LONG_BINGET = b'j', 1, "-> any (memo)";
    LIST = b'l', 0, "mark stackslice -> list";
    EMPTY_LIST = b']', 1, "-> list";
    OBJ = b'o', 1, "mark cls stackslice -> obj (cls(*args))";
    PUT = b'p', 0, "any -> any (memo)";
    BINPUT = b'q', 1, "any -> any (memo)";
    LONG_BINPUT = b'r', 1, "any -> any (memo)";
    SETITEM = b's', 0, "dict key value -> dict";
    TUPLE = b't', 0, "mark stackslice -> tuple";
    EMPTY_TUPLE = b')', 1, "-> tuple";
    SETITEMS = b'u', 1, "dict mark stackslice -> dict";
    BINFLOAT = b'G', 1, "-> float";
    PROTO = 0x80, 2, "->";
    NEWOBJ = 0x81, 2, "cls args -> cls.__new__(cls, *args)";
    EXT1 = 0x82, 2, "-> any (copyreg extension)";
    EXT2 = 0x83, 2, "-> any (copyreg extension)";
    EXT4 = 0x84, 2, "-> any (copyreg extension)";
    TUPLE1 = 0x85, 2, "any -> tuple";
    TUPLE2 = 0x86, 2, "any any -> tuple";
    TUPLE3 = 0x87, 2, "any any any -> tuple";
    NEWTRUE = 0x88, 2, "-> bool";
    NEWFALSE = 0x89, 2, "-> bool";
    LONG1 = 0x8a, 2, "-> int";
    LONG4 = 0x8b, 2, "-> int";
    BINBYTES = b'B', 3, "-> bytes";
    SHORT_BINBYTES = b'C', 3, "-> bytes";
    SHORT_BINUNICODE = 0x8c, 4, "-> str";
    BINUNICODE8 = 0x8d, 4, "-> str";
    BINBYTES8 = 0x8e, 4, "-> bytes";
    EMPTY_SET = 0x8f, 4, "-> set";
    ADDITEMS = 0x90, 4, "set mark stackslice -> set";
    FROZENSET = 0x91, 4, "mark stackslice -> frozenset";
    NEWOBJ_EX = 0x92, 4, "cls args kwargs -> cls.__new__(cls, *args, **kwargs)";
    STACK_GLOBAL = 0x93, 4, "module name -> any (import module.name)";
    MEMOIZE = 0x94, 4, "any -> any (memo)";
    FRAME = 0x95, 4, "->";
    BYTEARRAY8 = 0x96, 5, "-> bytearray";
    NEXT_BUFFER = 0x97, 5, "-> any (out-of-band buffer)";
    READONLY_BUFFER = 0x98, 5, "buffer -> buffer";
}

/// The decoded argument of an opcode. Byte payloads borrow from the input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg<'a> {
    /// No argument.
    None,
    /// An unsigned integer argument (lengths, memo indices, protocol, extension codes).
    UInt(u64),
    /// A signed 32-bit integer (BININT).
    Int(i32),
    /// A float (BINFLOAT, 8 bytes big-endian).
    Float(f64),
    /// One text line, without its `\n` (protocol-0 opcodes).
    Line(&'a [u8]),
    /// Two text lines (GLOBAL, INST: module and name).
    Lines(&'a [u8], &'a [u8]),
    /// A length-prefixed payload (strings, bytes, LONG1/LONG4 little-endian integers).
    Bytes(&'a [u8]),
}

/// One decoded opcode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Op<'a> {
    /// The opcode.
    pub code: Opcode,
    /// Offset of the opcode byte in the input.
    pub offset: usize,
    /// Its argument.
    pub arg: Arg<'a>,
    /// Offset just past the opcode and its argument.
    pub end: usize,
}

/// Why an opcode could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpErrorKind {
    /// The input ends inside the opcode or its argument.
    Truncated,
    /// A byte that is not an opcode (CPython: "invalid load key").
    UnknownOpcode(u8),
    /// A length field claims more bytes than the input has left.
    LengthPastEnd {
        /// The claimed length.
        claimed: u64,
        /// Bytes that remain after the length field.
        remaining: u64,
    },
    /// A signed length field is negative (BINSTRING, LONG4).
    NegativeLength(i64),
    /// A protocol-0 text line is longer than the configured limit.
    LineTooLong(usize),
}

/// An opcode decoding error at a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// Offset of the opcode that failed.
    pub offset: usize,
    /// What went wrong.
    pub kind: OpErrorKind,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            OpErrorKind::Truncated => {
                write!(f, "stream truncated inside the opcode at {}", self.offset)
            }
            OpErrorKind::UnknownOpcode(b) => {
                write!(f, "invalid opcode byte 0x{b:02x} at {}", self.offset)
            }
            OpErrorKind::LengthPastEnd { claimed, remaining } => write!(
                f,
                "opcode at {} claims {claimed} bytes but only {remaining} remain",
                self.offset
            ),
            OpErrorKind::NegativeLength(n) => {
                write!(f, "opcode at {} has a negative length {n}", self.offset)
            }
            OpErrorKind::LineTooLong(n) => {
                write!(
                    f,
                    "text argument at {} is longer than {n} bytes",
                    self.offset
                )
            }
        }
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    start: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, kind: OpErrorKind) -> OpError {
        OpError {
            offset: self.start,
            kind,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], OpError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| self.err(OpErrorKind::Truncated))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| self.err(OpErrorKind::Truncated))?;
        self.pos = end;
        Ok(s)
    }
    fn uint(&mut self, n: usize) -> Result<u64, OpError> {
        let s = self.take(n)?;
        let mut v = 0u64;
        for (i, b) in s.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        Ok(v)
    }
    /// A length-prefixed payload whose length has already been read.
    fn payload(&mut self, len: u64) -> Result<&'a [u8], OpError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if len > remaining {
            return Err(self.err(OpErrorKind::LengthPastEnd {
                claimed: len,
                remaining,
            }));
        }
        self.take(len as usize)
    }
    fn line(&mut self, max: usize) -> Result<&'a [u8], OpError> {
        let rest = &self.data[self.pos..];
        let window = &rest[..rest.len().min(max.saturating_add(1))];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None if rest.len() > max => Err(self.err(OpErrorKind::LineTooLong(max))),
            None => Err(self.err(OpErrorKind::Truncated)),
        }
    }
}

/// Decodes the opcode at `pos`. `max_line` bounds protocol-0 text arguments.
pub fn read_op(data: &[u8], pos: usize, max_line: usize) -> Result<Op<'_>, OpError> {
    let mut c = Cursor {
        data,
        pos,
        start: pos,
    };
    let byte = *c
        .take(1)?
        .first()
        .ok_or_else(|| c.err(OpErrorKind::Truncated))?;
    let code = Opcode::from_byte(byte).ok_or_else(|| c.err(OpErrorKind::UnknownOpcode(byte)))?;
    use Opcode::*;
    let arg = match code {
        MARK | STOP | POP | POP_MARK | DUP | NONE | BINPERSID | REDUCE | APPEND | BUILD | DICT
        | EMPTY_DICT | APPENDS | LIST | EMPTY_LIST | OBJ | SETITEM | TUPLE | EMPTY_TUPLE
        | SETITEMS | NEWOBJ | TUPLE1 | TUPLE2 | TUPLE3 | NEWTRUE | NEWFALSE | EMPTY_SET
        | ADDITEMS | FROZENSET | NEWOBJ_EX | STACK_GLOBAL | MEMOIZE | NEXT_BUFFER
        | READONLY_BUFFER => Arg::None,
        FLOAT | INT | LONG | PERSID | STRING | UNICODE | GET | PUT => Arg::Line(c.line(max_line)?),
        GLOBAL | INST => {
            let m = c.line(max_line)?;
            let n = c.line(max_line)?;
            Arg::Lines(m, n)
        }
        BININT => Arg::Int(c.uint(4)? as u32 as i32),
        BININT1 | BINGET | BINPUT | PROTO | EXT1 => Arg::UInt(c.uint(1)?),
        BININT2 | EXT2 => Arg::UInt(c.uint(2)?),
        LONG_BINGET | LONG_BINPUT => Arg::UInt(c.uint(4)?),
        EXT4 => Arg::Int(c.uint(4)? as u32 as i32),
        FRAME => Arg::UInt(c.uint(8)?),
        BINFLOAT => {
            let s = c.take(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(s);
            Arg::Float(f64::from_be_bytes(b))
        }
        SHORT_BINSTRING | SHORT_BINBYTES | SHORT_BINUNICODE | LONG1 => {
            let n = c.uint(1)?;
            Arg::Bytes(c.payload(n)?)
        }
        BINSTRING | LONG4 => {
            let n = c.uint(4)? as u32 as i32;
            if n < 0 {
                return Err(c.err(OpErrorKind::NegativeLength(i64::from(n))));
            }
            Arg::Bytes(c.payload(n as u64)?)
        }
        BINUNICODE | BINBYTES => {
            let n = c.uint(4)?;
            Arg::Bytes(c.payload(n)?)
        }
        BINUNICODE8 | BINBYTES8 | BYTEARRAY8 => {
            let n = c.uint(8)?;
            Arg::Bytes(c.payload(n)?)
        }
    };
    Ok(Op {
        code,
        offset: pos,
        arg,
        end: c.pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_byte_roundtrips() {
        let mut n = 0;
        for b in 0..=255u8 {
            if let Some(op) = Opcode::from_byte(b) {
                assert_eq!(op.byte(), b);
                assert!(op.protocol() <= 5);
                n += 1;
            }
        }
        assert_eq!(n, 68, "protocols 0-5 define 68 opcodes");
    }

    #[test]
    fn decodes_arguments() {
        let d = b"cos\nsystem\n";
        let op = read_op(d, 0, 1000).unwrap();
        assert_eq!(op.arg, Arg::Lines(b"os", b"system"));
        assert_eq!(op.end, d.len());
        let d = b"\x8c\x02osX\x01\x00\x00\x00a";
        let op = read_op(d, 0, 10).unwrap();
        assert_eq!(op.arg, Arg::Bytes(b"os"));
        let op = read_op(d, op.end, 10).unwrap();
        assert_eq!((op.code, op.arg), (Opcode::BINUNICODE, Arg::Bytes(b"a")));
        let op = read_op(b"J\xff\xff\xff\xff", 0, 10).unwrap();
        assert_eq!(op.arg, Arg::Int(-1));
        let op = read_op(b"G?\xf0\x00\x00\x00\x00\x00\x00", 0, 10).unwrap();
        assert_eq!(op.arg, Arg::Float(1.0));
    }

    #[test]
    fn lengths_checked_before_slicing() {
        let e = read_op(b"\x8e\xff\xff\xff\xff\xff\xff\xff\xffab", 0, 10).unwrap_err();
        assert_eq!(
            e.kind,
            OpErrorKind::LengthPastEnd {
                claimed: u64::MAX,
                remaining: 2
            }
        );
        let e = read_op(b"T\xff\xff\xff\xff", 0, 10).unwrap_err();
        assert_eq!(e.kind, OpErrorKind::NegativeLength(-1));
        let e = read_op(b"X\x05\x00", 0, 10).unwrap_err();
        assert_eq!(e.kind, OpErrorKind::Truncated);
        let e = read_op(b"\xff", 0, 10).unwrap_err();
        assert_eq!(e.kind, OpErrorKind::UnknownOpcode(0xff));
        let e = read_op(b"cos", 0, 10).unwrap_err();
        assert_eq!(e.kind, OpErrorKind::Truncated);
        let e = read_op(b"cosxxxxxxxxxxxxxxxx\n", 0, 5).unwrap_err();
        assert_eq!(e.kind, OpErrorKind::LineTooLong(5));
    }

    #[test]
    fn truncation_at_every_offset_is_an_error_not_a_panic() {
        let full: &[u8] =
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x93.";
        for cut in 0..full.len() {
            let mut pos = 0;
            while pos < cut {
                match read_op(&full[..cut], pos, 100) {
                    Ok(op) => pos = op.end,
                    Err(_) => break,
                }
            }
        }
    }
}
