//! torch's legacy stream (`_use_new_zipfile_serialization=False`, torch < 1.6): five pickles —
//! magic number, protocol version, sys_info, the object, the sorted storage keys — followed by
//! each storage as a little-endian `i64` element count and its bytes (always little-endian:
//! torch converts on big-endian machines).

use std::collections::HashMap;
use std::sync::Arc;

use ckptguard_formats::ReadAt;
use ckptguard_pickle::{analyze_pickle_at, Analysis, ObjId, PickleEnd, Value as PV};

use crate::dtype::DType;
use crate::interp::{rebuild, Storages};
use crate::tensor::Storage;
use crate::torchzip::storage_pid;
use crate::value::Value;
use crate::{LoadError, LoadOptions};

/// `0x1950a86a20f9469cfc6c` as LONG1 writes it.
pub const MAGIC_LE: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Whether the first pickle of an analysis is the legacy magic number.
pub(crate) fn is_legacy(a: &Analysis<'_>) -> bool {
    a.pickles
        .first()
        .and_then(|p| p.root)
        .is_some_and(|r| matches!(a.value(r), PV::BigInt(b) if b.as_slice() == MAGIC_LE))
}

struct Root {
    dtype: DType,
    location: String,
    numel: u64,
}

struct LegacyStorages<'a> {
    src: &'a dyn ReadAt,
    /// Root key → (declaration, data offset in the source).
    roots: HashMap<String, (Root, u64)>,
    cache: HashMap<String, Arc<Storage<'a>>>,
}

impl<'a> Storages<'a> for LegacyStorages<'a> {
    fn storage(&mut self, a: &Analysis<'_>, pid: ObjId) -> Result<Arc<Storage<'a>>, LoadError> {
        let (dtype, key, _, _, view) = storage_pid(a, pid, true)?;
        let (root, offset) = self.roots.get(&key).ok_or_else(|| {
            LoadError::Malformed(format!("storage {key:?} has no data in the file"))
        })?;
        if root.dtype != dtype {
            return Err(LoadError::Malformed(format!(
                "storage {key:?} is declared with two different types"
            )));
        }
        let size = dtype.itemsize();
        let root_bytes = root.numel * size;
        let (cache_key, start, nbytes) = match view {
            None => (key.clone(), 0, root_bytes),
            Some(v) => {
                // (view_key, offset, view_size), in elements of the root storage.
                let t = a.as_tuple(v).filter(|t| t.len() == 3).ok_or_else(|| {
                    LoadError::Malformed(format!(
                        "storage {key:?}: view metadata is not (key, offset, size)"
                    ))
                })?;
                let vkey = a
                    .as_str(t[0])
                    .ok_or_else(|| LoadError::Malformed("view key is not a string".into()))?;
                let num = |id: ObjId| match a.value(id) {
                    PV::Int(n) if *n >= 0 => Some(*n as u64),
                    _ => None,
                };
                let (Some(off), Some(len)) = (num(t[1]), num(t[2])) else {
                    return Err(LoadError::Malformed(format!(
                        "storage view {vkey:?}: bad offset or size"
                    )));
                };
                let start = off.checked_mul(size);
                let end = off.checked_add(len).and_then(|e| e.checked_mul(size));
                match (start, end) {
                    (Some(s), Some(e)) if e <= root_bytes => (format!("{key}/{vkey}"), s, e - s),
                    _ => {
                        return Err(LoadError::Malformed(format!(
                            "storage view {vkey:?} lies outside storage {key:?}"
                        )))
                    }
                }
            }
        };
        if let Some(s) = self.cache.get(&cache_key) {
            return Ok(s.clone());
        }
        let at = offset + start;
        let s = Arc::new(Storage {
            key: cache_key.clone(),
            dtype,
            location: root.location.clone(),
            nbytes,
            big_endian: false,
            source_offset: Some(at),
            data: Storage::from_source(self.src, at, nbytes),
        });
        self.cache.insert(cache_key, s.clone());
        Ok(s)
    }
}

pub(crate) fn load<'a>(
    src: &'a dyn ReadAt,
    data: &[u8],
    opts: &LoadOptions,
) -> Result<Value<'a>, LoadError> {
    let mut a = Analysis::new(data);
    let mut pos = 0usize;
    for i in 0..5 {
        match analyze_pickle_at(&mut a, pos, &opts.scan.limits.pickle) {
            PickleEnd::Stop(end) => pos = end,
            PickleEnd::Failed => {
                let why = a.issues.last().map(|x| x.message()).unwrap_or_default();
                return Err(LoadError::Malformed(format!(
                    "legacy torch file: pickle {} of 5 is broken: {why}",
                    i + 1
                )));
            }
        }
    }
    let root_of = |i: usize| {
        a.pickles
            .get(i)
            .and_then(|p| p.root)
            .ok_or_else(|| LoadError::Malformed("legacy torch file: missing pickle".into()))
    };
    if !is_legacy(&a) {
        return Err(LoadError::Malformed(
            "legacy torch file: bad magic number".into(),
        ));
    }
    if !matches!(a.value(root_of(1)?), PV::Int(1001)) {
        return Err(LoadError::Malformed(
            "legacy torch file: protocol version is not 1001".into(),
        ));
    }
    if !matches!(a.value(root_of(2)?), PV::Dict(_)) {
        return Err(LoadError::Malformed(
            "legacy torch file: sys_info is not a dict".into(),
        ));
    }
    let object = root_of(3)?;
    // Only the object pickle may use persistent ids.
    if a.persistent_ids.iter().any(|p| p.pickle != 3) {
        return Err(LoadError::Malformed(
            "legacy torch file: persistent id outside the object pickle".into(),
        ));
    }
    let keys = match a.value(root_of(4)?) {
        PV::List(v) => v
            .iter()
            .map(|k| a.as_str(*k).map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                LoadError::Malformed("legacy torch file: a storage key is not a string".into())
            })?,
        _ => {
            return Err(LoadError::Malformed(
                "legacy torch file: storage keys are not a list".into(),
            ))
        }
    };
    // Root storages as the object declares them (the first declaration wins, like torch).
    let mut decl: HashMap<String, Root> = HashMap::new();
    for p in &a.persistent_ids {
        let (dtype, key, location, numel, _) = storage_pid(&a, p.pid, true)?;
        match decl.get(&key) {
            Some(r) if r.dtype != dtype || r.numel != numel => {
                return Err(LoadError::Malformed(format!(
                    "storage {key:?} is declared twice with different types or sizes"
                )))
            }
            Some(_) => {}
            None => {
                decl.insert(
                    key,
                    Root {
                        dtype,
                        location,
                        numel,
                    },
                );
            }
        }
    }
    // Storages follow the pickles, in key order.
    let mut at = pos as u64;
    let mut roots = HashMap::new();
    for key in keys {
        let r = decl.remove(&key).ok_or_else(|| {
            LoadError::Malformed(format!("storage key {key:?} is listed but never used"))
        })?;
        let mut n = [0u8; 8];
        src.read_exact_at(at, &mut n).map_err(|_| {
            LoadError::Malformed(format!("storage {key:?}: the file ends before its size"))
        })?;
        let numel = i64::from_le_bytes(n);
        if u64::try_from(numel).ok() != Some(r.numel) {
            return Err(LoadError::Malformed(format!(
                "storage {key:?} holds {numel} elements but {} are declared",
                r.numel
            )));
        }
        let nbytes = r
            .numel
            .checked_mul(r.dtype.itemsize())
            .ok_or_else(|| LoadError::Malformed("storage size overflows".into()))?;
        let start = at + 8;
        let end = start
            .checked_add(nbytes)
            .filter(|e| *e <= src.len())
            .ok_or_else(|| {
                LoadError::Malformed(format!(
                    "storage {key:?}: the file ends inside its {nbytes} bytes"
                ))
            })?;
        roots.insert(key, (r, start));
        at = end;
    }
    if let Some(k) = decl.keys().next() {
        return Err(LoadError::Malformed(format!(
            "storage {k:?} is used but has no data in the file"
        )));
    }
    let mut st = LegacyStorages {
        src,
        roots,
        cache: HashMap::new(),
    };
    rebuild(&a, object, &mut st, opts.tree)
}
