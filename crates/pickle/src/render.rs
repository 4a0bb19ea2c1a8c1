//! Renders symbolic values as Python source: `os.system("touch x")`. Bounded in length and
//! depth, so cyclic or enormous structures render in bounded time.

use crate::value::{ByteData, CallKind, ObjId, Value};
use crate::Analysis;

const MAX_DEPTH: usize = 8;
const MAX_ITEMS: usize = 8;
const MAX_STR: usize = 100;

pub(crate) fn render(a: &Analysis<'_>, id: ObjId, budget: usize) -> String {
    let mut r = Renderer {
        a,
        out: String::new(),
        budget,
    };
    r.value(id, 0);
    r.out
}

struct Renderer<'x, 'a> {
    a: &'x Analysis<'a>,
    out: String,
    budget: usize,
}

impl Renderer<'_, '_> {
    fn full(&self) -> bool {
        self.out.len() >= self.budget
    }

    fn push(&mut self, s: &str) {
        if self.full() {
            return;
        }
        let room = self.budget - self.out.len();
        if s.len() <= room {
            self.out.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.out.push_str(&s[..cut]);
            self.out.push('…');
        }
    }

    fn seq(&mut self, items: &[ObjId], depth: usize) {
        for (i, id) in items.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            if i == MAX_ITEMS {
                self.push(&format!("… {} more", items.len() - MAX_ITEMS));
                break;
            }
            self.value(*id, depth + 1);
        }
    }

    fn value(&mut self, id: ObjId, depth: usize) {
        if self.full() {
            return;
        }
        if depth > MAX_DEPTH {
            self.push("…");
            return;
        }
        match self.a.value(id) {
            Value::None => self.push("None"),
            Value::Bool(b) => self.push(if *b { "True" } else { "False" }),
            Value::Int(v) => self.push(&v.to_string()),
            Value::BigInt(b) => self.push(&big_int(b)),
            Value::Float(f) => self.push(&float(*f)),
            Value::Str(s) => self.push(&quote_str(s)),
            Value::Bytes(b) => {
                let s = quote_bytes(b, self.a.input);
                self.push(&s)
            }
            Value::ByteArray(b) => {
                let s = format!("bytearray({})", quote_bytes(b, self.a.input));
                self.push(&s)
            }
            Value::Tuple(t) => {
                self.push("(");
                self.seq(t, depth);
                self.push(if t.len() == 1 { ",)" } else { ")" });
            }
            Value::List(t) => {
                self.push("[");
                self.seq(t, depth);
                self.push("]");
            }
            Value::Set(t) => {
                if t.is_empty() {
                    self.push("set()");
                } else {
                    self.push("{");
                    self.seq(t, depth);
                    self.push("}");
                }
            }
            Value::FrozenSet(t) => {
                self.push("frozenset({");
                self.seq(t, depth);
                self.push("})");
            }
            Value::Dict(pairs) => {
                self.push("{");
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    if i == MAX_ITEMS {
                        self.push(&format!("… {} more", pairs.len() - MAX_ITEMS));
                        break;
                    }
                    self.value(*k, depth + 1);
                    self.push(": ");
                    self.value(*v, depth + 1);
                }
                self.push("}");
            }
            Value::Global(i) => {
                let s = self
                    .a
                    .imports
                    .get(*i)
                    .map(|imp| imp.qualified())
                    .unwrap_or_default();
                self.push(&s)
            }
            Value::Object(o) => {
                self.value(o.callable, depth + 1);
                if matches!(o.kind, CallKind::NewObj | CallKind::NewObjEx) {
                    self.push(".__new__");
                }
                self.push("(");
                match self.a.value(o.args) {
                    Value::Tuple(t) => {
                        let t = t.clone();
                        self.seq(&t, depth)
                    }
                    _ => {
                        self.push("*");
                        self.value(o.args, depth + 1);
                    }
                }
                if let Some(kw) = o.kwargs {
                    self.push(", **");
                    self.value(kw, depth + 1);
                }
                self.push(")");
            }
            Value::Persistent(i) => {
                self.push("persistent_load(");
                if let Some(p) = self.a.persistent_ids.get(*i) {
                    self.value(p.pid, depth + 1);
                }
                self.push(")");
            }
            Value::Extension(c) => self.push(&format!("copyreg._extension_registry[{c}]")),
            Value::Buffer { .. } => self.push("<out-of-band buffer>"),
        }
    }
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "float(\"nan\")".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "float(\"inf\")"
        } else {
            "-float(\"inf\")"
        }
        .into()
    } else {
        format!("{f:?}")
    }
}

/// Little-endian two's complement to decimal (small) or a size description (huge).
fn big_int(b: &[u8]) -> String {
    if b.len() <= 16 {
        let neg = b.last().is_some_and(|x| x & 0x80 != 0);
        let mut buf = if neg { [0xffu8; 16] } else { [0u8; 16] };
        buf[..b.len()].copy_from_slice(b);
        return i128::from_le_bytes(buf).to_string();
    }
    format!("<int of {} bytes>", b.len())
}

pub(crate) fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_STR) + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == MAX_STR {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_bytes(b: &ByteData, input: &[u8]) -> String {
    let bytes = b.get(input);
    let mut out = String::from("b\"");
    for (i, &c) in bytes.iter().enumerate() {
        if i == MAX_STR {
            out.push_str(&format!("…\" ({} bytes)", bytes.len()));
            return out;
        }
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('"');
    out
}
