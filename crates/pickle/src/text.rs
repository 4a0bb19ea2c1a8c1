//! Protocol-0 text arguments: INT, LONG, FLOAT, STRING and UNICODE literals, parsed the way
//! CPython's unpickler accepts them.

/// CPython 3.11's default limit on digits converted from text to int (`sys.int_info`).
const MAX_STR_DIGITS: usize = 4300;

/// A parsed integer: small, or big as little-endian two's complement.
pub(crate) enum IntLit {
    Small(i64),
    Big(Vec<u8>),
}

/// Parses an INT/LONG literal (`strtol`/`PyLong_FromString` with base 0).
pub(crate) fn parse_int(line: &[u8]) -> Option<IntLit> {
    let s = std::str::from_utf8(line).ok()?.trim();
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let body = body.replace('_', "");
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, r.to_string())
    } else if let Some(r) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, r.to_string())
    } else if let Some(r) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, r.to_string())
    } else if body.len() > 1 && body.starts_with('0') {
        (8, body[1..].to_string())
    } else {
        (10, body)
    };
    if digits.is_empty() || digits.len() > MAX_STR_DIGITS {
        return None;
    }
    if let Ok(v) = i64::from_str_radix(&digits, radix) {
        return Some(IntLit::Small(if neg { v.checked_neg()? } else { v }));
    }
    // Big: accumulate magnitude in base 256, little-endian.
    let mut mag: Vec<u8> = vec![0];
    for ch in digits.chars() {
        let d = ch.to_digit(radix)?;
        let mut carry = d;
        for byte in mag.iter_mut() {
            let v = u32::from(*byte) * radix + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    mag.push(0); // sign byte
    if neg {
        let mut carry = 1u16;
        for byte in mag.iter_mut() {
            let v = u16::from(!*byte) + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
    }
    Some(IntLit::Big(mag))
}

/// Parses a FLOAT literal.
pub(crate) fn parse_float(line: &[u8]) -> Option<f64> {
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// Decodes a STRING argument: quoted, with Python bytes escapes. `None` if CPython rejects it.
pub(crate) fn decode_string(line: &[u8]) -> Option<Vec<u8>> {
    let n = line.len();
    if n < 2 || line[0] != line[n - 1] || !(line[0] == b'\'' || line[0] == b'"') {
        return None;
    }
    let body = &line[1..n - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let h = body.get(i..i + 2)?;
                let v = u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decodes a UNICODE argument (raw-unicode-escape).
pub(crate) fn decode_raw_unicode_escape(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                if let Some(h) = line.get(i + 2..i + 2 + width) {
                    if let Some(c) = std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                    {
                        out.push(c);
                        i += 2 + width;
                        continue;
                    }
                }
            }
        }
        out.push(char::from(b));
        i += 1;
    }
    out
}

/// Decodes bytes as the unpickler would for a `str` (UTF-8; surrogates and invalid bytes are
/// replaced: the analysis must continue at least as far as CPython does).
pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(s: &str) -> Option<i64> {
        match parse_int(s.as_bytes())? {
            IntLit::Small(v) => Some(v),
            IntLit::Big(_) => None,
        }
    }

    #[test]
    fn ints() {
        assert_eq!(small("42"), Some(42));
        assert_eq!(small("-7"), Some(-7));
        assert_eq!(small("0x10"), Some(16));
        assert_eq!(small("0"), Some(0));
        assert!(parse_int(b"abc").is_none());
        match parse_int(b"18446744073709551616").unwrap() {
            IntLit::Big(b) => assert_eq!(b, vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            IntLit::Small(_) => panic!(),
        }
        match parse_int(b"-18446744073709551616").unwrap() {
            IntLit::Big(b) => assert_eq!(b, vec![0, 0, 0, 0, 0, 0, 0, 0, 255, 255]),
            IntLit::Small(_) => panic!(),
        }
        assert!(parse_int("9".repeat(5000).as_bytes()).is_none());
    }

    #[test]
    fn strings() {
        assert_eq!(decode_string(b"'os'").unwrap(), b"os");
        assert_eq!(decode_string(b"\"a\\x41\\n\\101\"").unwrap(), b"aA\nA");
        assert!(decode_string(b"os").is_none());
        assert!(decode_string(b"'os\"").is_none());
        assert_eq!(decode_raw_unicode_escape(b"a\\u00e9b"), "a\u{e9}b");
    }
}
