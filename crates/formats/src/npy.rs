//! numpy `.npy` headers (format versions 1.0, 2.0, 3.0).
//!
//! The header is a Python dict literal (`{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }`)
//! that numpy parses with a restricted literal evaluator. An object dtype (`'|O'`, or a
//! structured dtype with an object field) means the body is a pickle.

use crate::io::{read_vec, ReadAt};

/// The magic string every `.npy` starts with.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Largest header numpy itself accepts by default (`max_header_size` is 10 000) — we allow a
/// little more but refuse anything enormous before allocating.
pub const MAX_HEADER: u64 = 1 << 20;

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    /// Format version (major, minor).
    pub version: (u8, u8),
    /// The `descr` value as written.
    pub descr: Literal,
    /// `fortran_order`.
    pub fortran_order: bool,
    /// `shape`.
    pub shape: Vec<u64>,
    /// Offset of the array body.
    pub body_offset: u64,
}

impl NpyHeader {
    /// Whether the dtype holds Python objects (the body is then a pickle).
    pub fn has_object(&self) -> bool {
        fn obj(l: &Literal) -> bool {
            match l {
                Literal::Str(s) => {
                    let t = s.trim_start_matches(['<', '>', '|', '=']);
                    t.starts_with('O')
                }
                Literal::List(v) | Literal::Tuple(v) => v.iter().any(obj),
                _ => false,
            }
        }
        obj(&self.descr)
    }
}

/// A Python literal, as far as `.npy` headers use them.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// True/False.
    Bool(bool),
    /// None.
    None,
    /// A list.
    List(Vec<Literal>),
    /// A tuple.
    Tuple(Vec<Literal>),
    /// A dict.
    Dict(Vec<(Literal, Literal)>),
}

/// Why a header is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NpyError {
    /// Not a `.npy` file.
    #[error("missing the \\x93NUMPY magic")]
    NoMagic,
    /// Unknown format version.
    #[error("unsupported .npy format version {0}.{1}")]
    Version(u8, u8),
    /// Header truncated or too long.
    #[error("header of {0} bytes is truncated or over the limit")]
    Length(u64),
    /// Header text invalid.
    #[error("header is not a valid dict literal: {0}")]
    Syntax(String),
    /// A required key is missing or of the wrong type.
    #[error("header key {0:?} is missing or invalid")]
    Key(&'static str),
}

/// Reads and parses the header of a `.npy` source.
pub fn parse_header(src: &dyn ReadAt) -> Result<NpyHeader, NpyError> {
    let mut pre = [0u8; 12];
    let n = src.len().min(12) as usize;
    src.read_exact_at(0, &mut pre[..n])
        .map_err(|_| NpyError::NoMagic)?;
    if n < 10 || &pre[..6] != MAGIC {
        return Err(NpyError::NoMagic);
    }
    let (major, minor) = (pre[6], pre[7]);
    let (hlen, start) = match major {
        1 => (u64::from(u16::from_le_bytes([pre[8], pre[9]])), 10u64),
        2 | 3 if n >= 12 => (
            u64::from(u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]])),
            12u64,
        ),
        _ => return Err(NpyError::Version(major, minor)),
    };
    if hlen > MAX_HEADER || start + hlen > src.len() {
        return Err(NpyError::Length(hlen));
    }
    let raw = read_vec(src, start, hlen).map_err(|_| NpyError::Length(hlen))?;
    let text = if major == 3 {
        String::from_utf8(raw).map_err(|_| NpyError::Syntax("not UTF-8".into()))?
    } else {
        raw.iter().map(|&b| char::from(b)).collect()
    };
    let mut p = Parser {
        s: text.trim_end().as_bytes(),
        i: 0,
        depth: 0,
    };
    let lit = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(NpyError::Syntax(format!("unexpected text at {}", p.i)));
    }
    let Literal::Dict(items) = lit else {
        return Err(NpyError::Syntax("not a dict".into()));
    };
    let get = |k: &str| {
        items
            .iter()
            .find(|(key, _)| *key == Literal::Str(k.into()))
            .map(|(_, v)| v)
    };
    let descr = get("descr").cloned().ok_or(NpyError::Key("descr"))?;
    let fortran_order = match get("fortran_order") {
        Some(Literal::Bool(b)) => *b,
        _ => return Err(NpyError::Key("fortran_order")),
    };
    let shape = match get("shape") {
        Some(Literal::Tuple(v)) => v
            .iter()
            .map(|d| match d {
                Literal::Int(i) if *i >= 0 => Ok(*i as u64),
                _ => Err(NpyError::Key("shape")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(NpyError::Key("shape")),
    };
    Ok(NpyHeader {
        version: (major, minor),
        descr,
        fortran_order,
        shape,
        body_offset: start + hlen,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn err(&self, what: &str) -> NpyError {
        NpyError::Syntax(format!("{what} at {}", self.i))
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn seq(&mut self, close: u8) -> Result<(Vec<Literal>, bool), NpyError> {
        let mut v = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.eat(close) {
                return Ok((v, trailing_comma));
            }
            v.push(self.value()?);
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                if self.eat(close) {
                    return Ok((v, false));
                }
                return Err(self.err("expected , or closing bracket"));
            }
        }
    }
    fn value(&mut self) -> Result<Literal, NpyError> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(self.err("nesting too deep"));
        }
        self.ws();
        let c = *self
            .s
            .get(self.i)
            .ok_or_else(|| self.err("unexpected end"))?;
        let v = match c {
            b'{' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(b'}') {
                        break;
                    }
                    let k = self.value()?;
                    if !self.eat(b':') {
                        return Err(self.err("expected :"));
                    }
                    let v = self.value()?;
                    items.push((k, v));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            break;
                        }
                        return Err(self.err("expected , or }"));
                    }
                }
                Literal::Dict(items)
            }
            b'[' => {
                self.i += 1;
                Literal::List(self.seq(b']')?.0)
            }
            b'(' => {
                self.i += 1;
                let (v, comma) = self.seq(b')')?;
                if v.len() == 1 && !comma {
                    v.into_iter().next().expect("one element")
                } else {
                    Literal::Tuple(v)
                }
            }
            b'\'' | b'"' => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != c {
                    if self.s[self.i] == b'\\' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err(self.err("unterminated string"));
                }
                let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Literal::Str(text)
            }
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                self.i += 1;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'L')
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.i])
                    .unwrap_or("")
                    .trim_end_matches('L');
                Literal::Int(t.parse().map_err(|_| self.err("bad integer"))?)
            }
            _ => {
                let rest = &self.s[self.i..];
                let (lit, n) = if rest.starts_with(b"True") {
                    (Literal::Bool(true), 4)
                } else if rest.starts_with(b"False") {
                    (Literal::Bool(false), 5)
                } else if rest.starts_with(b"None") {
                    (Literal::None, 4)
                } else {
                    return Err(self.err("unexpected character"));
                };
                self.i += n;
                lit
            }
        };
        self.depth -= 1;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        v.extend_from_slice(header.as_bytes());
        v
    }

    #[test]
    fn parses_plain_and_object() {
        let h = parse_header(&npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }          \n",
        ))
        .unwrap();
        assert_eq!(h.shape, vec![3, 4]);
        assert!(!h.has_object());
        let h = parse_header(&npy(
            "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }\n",
        ))
        .unwrap();
        assert!(h.has_object());
        assert_eq!(h.shape, vec![2]);
        let h = parse_header(&npy(
            "{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': True, 'shape': (), }\n",
        ))
        .unwrap();
        assert!(h.has_object());
        assert!(h.fortran_order);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            parse_header(&b"\x93NUMPX\x01\x00".to_vec()),
            Err(NpyError::NoMagic)
        );
        assert!(parse_header(&npy("{'descr': '<f4'")).is_err());
        assert!(parse_header(&npy("{'descr': '<f4', 'shape': (3,)}")).is_err());
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0, 0xff, 0xff]);
        assert!(matches!(parse_header(&v), Err(NpyError::Length(_))));
        assert!(parse_header(&npy(&"[".repeat(100))).is_err());
    }
}
