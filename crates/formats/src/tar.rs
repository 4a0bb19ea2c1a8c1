//! POSIX tar, read the way Python's `tarfile` reads it for torch's oldest checkpoint format.
//!
//! `tarfile.open(mode="r:")` recognises a tar by the header checksum, not by the `ustar` magic
//! (old V7 archives have none), applies PAX `path` records and GNU long names to the member
//! that follows, and `getmember(name)` returns the LAST member of that name.

use crate::io::ReadAt;

/// One regular-file member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    /// Name, after PAX/GNU long-name records.
    pub name: String,
    /// Offset of the member's data.
    pub offset: u64,
    /// Size of the data.
    pub size: u64,
}

/// Why an archive could not be walked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    /// Not a tar: the first header's checksum does not match.
    #[error("not a tar archive")]
    NotTar,
    /// A header or member runs past the end of the file.
    #[error("tar member at {0} runs past the end of the file")]
    Truncated(u64),
    /// A header field is malformed.
    #[error("malformed tar header at {0}: {1}")]
    Header(u64, &'static str),
    /// More members than the limit.
    #[error("more than {0} tar members")]
    TooMany(usize),
    /// I/O error.
    #[error("read error: {0}")]
    Io(String),
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field.iter().copied().take_while(|&b| b != 0).collect();
    let t = std::str::from_utf8(&s).ok()?.trim();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

/// Whether a 512-byte block is a header with a valid checksum (signed or unsigned, as Python
/// accepts both).
pub fn is_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|&b| b == 0) {
        return false;
    }
    let Some(stored) = octal(&block[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).ok() == Some(signed)
}

fn name_of(block: &[u8]) -> String {
    let cut = |f: &[u8]| -> String {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = cut(&block[0..100]);
    let prefix = if &block[257..262] == b"ustar" {
        cut(&block[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn pax_path(data: &[u8]) -> Option<String> {
    // Records: "<len> key=value\n"
    let mut i = 0;
    let mut path = None;
    while i < data.len() {
        let sp = data[i..].iter().position(|&b| b == b' ')? + i;
        let len: usize = std::str::from_utf8(&data[i..sp]).ok()?.parse().ok()?;
        let end = i.checked_add(len)?;
        let rec = data.get(sp + 1..end.checked_sub(1)?)?;
        if let Some(v) = rec.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(v).into_owned());
        }
        i = end;
    }
    path
}

/// Lists the regular-file members of a tar.
pub fn members(src: &dyn ReadAt, max_members: usize) -> Result<Vec<TarMember>, TarError> {
    let len = src.len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut pending_name: Option<String> = None;
    let mut first = true;
    let mut block = [0u8; 512];
    while pos + 512 <= len {
        src.read_exact_at(pos, &mut block)
            .map_err(|e| TarError::Io(e.to_string()))?;
        if block.iter().all(|&b| b == 0) {
            break; // end-of-archive marker
        }
        if !is_header(&block) {
            if first {
                return Err(TarError::NotTar);
            }
            return Err(TarError::Header(pos, "bad checksum"));
        }
        first = false;
        let size = octal(&block[124..136]).ok_or(TarError::Header(pos, "size"))?;
        let data = pos + 512;
        let padded = size.checked_add(511).ok_or(TarError::Truncated(pos))? / 512 * 512;
        let next = data.checked_add(padded).ok_or(TarError::Truncated(pos))?;
        if data.checked_add(size).is_none_or(|e| e > len) {
            return Err(TarError::Truncated(pos));
        }
        match block[156] {
            b'x' | b'L' => {
                if size > 1 << 20 {
                    return Err(TarError::Header(pos, "extended header too large"));
                }
                let mut buf = vec![0u8; size as usize];
                src.read_exact_at(data, &mut buf)
                    .map_err(|e| TarError::Io(e.to_string()))?;
                pending_name = if block[156] == b'x' {
                    pax_path(&buf)
                } else {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
                };
            }
            b'g' => {}
            b'0' | 0 | b'7' => {
                if out.len() >= max_members {
                    return Err(TarError::TooMany(max_members));
                }
                let name = pending_name.take().unwrap_or_else(|| name_of(&block));
                out.push(TarMember {
                    name,
                    offset: data,
                    size,
                });
            }
            _ => {
                pending_name = None;
            }
        }
        pos = next;
    }
    if first {
        return Err(TarError::NotTar);
    }
    Ok(out)
}

/// The member `tarfile.getmember(name)` returns: the last one so named.
pub fn get_member<'m>(members: &'m [TarMember], name: &str) -> Option<&'m TarMember> {
    members.iter().rev().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[156] = kind;
        h[257..262].copy_from_slice(b"ustar");
        for b in &mut h[148..156] {
            *b = b' ';
        }
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn member(name: &str, data: &[u8], kind: u8) -> Vec<u8> {
        let mut v = header(name, data.len(), kind);
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn walks_members_last_wins_and_pax_names() {
        let mut t = member("pickle", b"first", b'0');
        t.extend(member("pickle", b"second", b'0'));
        t.extend(member("PaxHeaders/x", b"17 path=storages\n", b'x'));
        t.extend(member("innocent", b"data", b'0'));
        t.extend(vec![0u8; 1024]);
        let m = members(&t, 100).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(get_member(&m, "pickle").unwrap().size, 6);
        assert_eq!(m[2].name, "storages");
    }

    #[test]
    fn not_tar_and_truncation() {
        assert_eq!(members(&vec![1u8; 1024], 10), Err(TarError::NotTar));
        let mut t = member("pickle", &[7u8; 1000], b'0');
        t.truncate(700);
        assert!(matches!(members(&t, 10), Err(TarError::Truncated(_))));
        let t = member("a", b"x", b'0');
        for cut in 0..t.len() {
            let _ = members(&t[..cut].to_vec(), 10);
        }
    }
}
