//! torch.save zip archives (torch ≥ 1.6; Lightning, Fabric and DeepSpeed files), read the way
//! torch reads them: miniz's central directory, records under the archive prefix, `data.pkl`,
//! `byteorder`, and storages at `data/<key>`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use ckptguard_formats::io::{bytes_at, SubRange};
use ckptguard_formats::zip::{ZipArchive, ZipEntry, ZipLimits, METHOD_STORED};
use ckptguard_formats::ReadAt;
use ckptguard_pickle::{analyze, Analysis, ObjId, Value as PV};

use crate::dtype::DType;
use crate::interp::{rebuild, Storages};
use crate::tensor::{Data, Storage};
use crate::value::{Dict, Value};
use crate::{LoadError, LoadOptions};

struct ZipStorages<'z, 'a> {
    src: &'a dyn ReadAt,
    zip: &'z ZipArchive<'a>,
    big_endian: bool,
    max_entry: u64,
    cache: HashMap<String, Arc<Storage<'a>>>,
}

/// `('storage', <storage class>, key, location, numel)` → its parts.
pub(crate) fn storage_pid(
    a: &Analysis<'_>,
    pid: ObjId,
    legacy: bool,
) -> Result<(DType, String, String, u64, Option<ObjId>), LoadError> {
    let bad = |why: &str| LoadError::Malformed(format!("persistent id {}: {why}", a.render(pid)));
    let t = a.as_tuple(pid).ok_or_else(|| bad("not a tuple"))?;
    let text = |id: ObjId| -> Option<String> {
        match a.value(id) {
            PV::Str(s) => Some(s.clone()),
            PV::Bytes(b) => std::str::from_utf8(b.get(a.input)).ok().map(str::to_string),
            _ => None,
        }
    };
    match t.first().and_then(|x| text(*x)).as_deref() {
        Some("storage") => {}
        Some("module") if legacy => {
            return Err(LoadError::Unsupported(
                "the file pickles a whole nn.Module (legacy 'module' persistent id); only data can be loaded".into(),
            ))
        }
        _ => return Err(bad("not a storage reference")),
    }
    let n = if legacy { 6 } else { 5 };
    if t.len() != n {
        return Err(bad(&format!("{} items instead of {n}", t.len())));
    }
    let class = a
        .as_import(t[1])
        .filter(|i| !i.dynamic && (i.module == "torch" || i.module == "torch.storage"))
        .and_then(|i| DType::from_storage_class(&i.name))
        .ok_or_else(|| bad("the storage class is not a torch storage type"))?;
    let key = text(t[2]).ok_or_else(|| bad("the key is not a string"))?;
    let location = text(t[3]).ok_or_else(|| bad("the location is not a string"))?;
    let numel = match a.value(t[4]) {
        PV::Int(v) if *v >= 0 => *v as u64,
        _ => return Err(bad("the element count is not a non-negative int")),
    };
    let view = if legacy {
        match a.value(t[5]) {
            PV::None => None,
            _ => Some(t[5]),
        }
    } else {
        None
    };
    Ok((class, key, location, numel, view))
}

impl<'a> Storages<'a> for ZipStorages<'_, 'a> {
    fn storage(&mut self, a: &Analysis<'_>, pid: ObjId) -> Result<Arc<Storage<'a>>, LoadError> {
        let (dtype, key, location, numel, _) = storage_pid(a, pid, false)?;
        let nbytes = numel
            .checked_mul(dtype.itemsize())
            .ok_or_else(|| LoadError::Malformed(format!("storage {key:?}: size overflows")))?;
        // torch caches by key; a later reference with another dtype (possible only for
        // storages without data) gets the same record reinterpreted, or its own storage when
        // the byte sizes disagree. Each (key, dtype, size) is one storage here, all bounded by
        // the record.
        let id = format!("{key}\u{0}{}\u{0}{nbytes}", dtype.name());
        if let Some(s) = self.cache.get(&id) {
            return Ok(s.clone());
        }
        let record = format!("data/{key}");
        let entry = self
            .zip
            .torch_lookup(&record)
            .ok_or_else(|| LoadError::Malformed(format!("storage record {record} is missing")))?;
        let (data, source_offset) = record_data(self.src, self.zip, entry, nbytes, self.max_entry)?;
        let s = Arc::new(Storage {
            key: key.clone(),
            dtype,
            location,
            nbytes,
            big_endian: self.big_endian,
            source_offset,
            data,
        });
        self.cache.insert(id, s.clone());
        Ok(s)
    }
}

/// The first `nbytes` of a record, borrowed from the source when stored.
fn record_data<'a>(
    src: &'a dyn ReadAt,
    zip: &ZipArchive<'a>,
    e: &ZipEntry,
    nbytes: u64,
    max: u64,
) -> Result<(Data<'a>, Option<u64>), LoadError> {
    let name = e.name_lossy().into_owned();
    let short = |have: u64| {
        LoadError::Malformed(format!(
            "record {name} holds {have} bytes but its storage declares {nbytes}"
        ))
    };
    if e.method == METHOD_STORED {
        let (off, len) = zip.entry_range(e).ok_or_else(|| {
            LoadError::Malformed(format!(
                "record {name} cannot be read the way torch reads it"
            ))
        })?;
        if len < nbytes {
            return Err(short(len));
        }
        return Ok((Storage::from_source(src, off, nbytes), Some(off)));
    }
    if e.uncompressed_size < nbytes {
        return Err(short(e.uncompressed_size));
    }
    let mut v = zip
        .read_entry(e, max)
        .map_err(|err| LoadError::Malformed(err.to_string()))?;
    if (v.len() as u64) < nbytes {
        return Err(short(v.len() as u64));
    }
    v.truncate(nbytes as usize);
    Ok((Data::Owned(v), None))
}

pub(crate) fn load<'a>(
    src: &'a dyn ReadAt,
    opts: &LoadOptions,
) -> Result<(&'static str, Value<'a>), LoadError> {
    let limits = ZipLimits {
        max_entries: opts.scan.limits.max_zip_entries,
        max_entry_bytes: opts.scan.limits.max_entry_bytes,
        max_compression_ratio: opts.scan.limits.max_compression_ratio,
        ..ZipLimits::default()
    };
    let zip = ZipArchive::open(src, limits)
        .map_err(|e| LoadError::Malformed(format!("not a readable torch zip: {e}")))?;
    if zip.torch_lookup("constants.pkl").is_some() {
        return Err(LoadError::Unsupported(
            "a TorchScript archive (constants.pkl): it is a program, not a checkpoint".into(),
        ));
    }
    let Some(pkl) = zip.torch_lookup("data.pkl") else {
        let files: Vec<&ZipEntry> = zip.entries().iter().filter(|e| !e.is_directory()).collect();
        if !files.is_empty()
            && files
                .iter()
                .all(|e| e.name_lossy().to_ascii_lowercase().ends_with(".npy"))
        {
            return Ok(("npz", load_npz(src, &zip, &files, opts)?));
        }
        return Err(LoadError::Unsupported(
            "a zip archive without <prefix>/data.pkl is not a torch checkpoint".into(),
        ));
    };
    if !zip.torch_can_open() {
        return Err(LoadError::Malformed(
            "torch cannot open this zip archive".into(),
        ));
    }
    let big_endian = match zip.torch_lookup("byteorder") {
        None => false,
        Some(e) => {
            let b = zip
                .read_entry(e, 64)
                .map_err(|err| LoadError::Malformed(format!("byteorder record: {err}")))?;
            match b.as_slice() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(LoadError::Malformed(format!(
                        "byteorder record says {:?}; torch accepts only 'little' or 'big'",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
        }
    };
    let max = opts.scan.limits.max_pickle_bytes;
    let data: Cow<'_, [u8]> = match zip.entry_range(pkl) {
        Some((off, len)) => bytes_at(src, off, len, max).map_err(LoadError::Io)?,
        None => Cow::Owned(
            zip.read_entry(pkl, max)
                .map_err(|e| LoadError::Malformed(format!("data.pkl: {e}")))?,
        ),
    };
    let a = analyze(&data, &opts.scan.limits.pickle);
    let root = crate::first_root(&a, "data.pkl")?;
    let mut st = ZipStorages {
        src,
        zip: &zip,
        big_endian,
        max_entry: opts.scan.limits.max_entry_bytes,
        cache: HashMap::new(),
    };
    Ok(("torch-zip", rebuild(&a, root, &mut st, opts.tree)?))
}

/// numpy `.npz`: a zip of `.npy` members, as a dict of arrays by member name (without `.npy`).
fn load_npz<'a>(
    src: &'a dyn ReadAt,
    zip: &ZipArchive<'a>,
    files: &[&ZipEntry],
    opts: &LoadOptions,
) -> Result<Value<'a>, LoadError> {
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for e in files {
        let name = e.name_lossy().into_owned();
        if !seen.insert(name.clone()) {
            return Err(LoadError::Malformed(format!(
                "the archive holds {name} twice"
            )));
        }
        let key = name[..name.len() - 4].to_string();
        let v = match zip.entry_range(e) {
            Some((off, len)) => {
                let sub = SubRange::new(src, off, len)
                    .ok_or_else(|| LoadError::Malformed(format!("{name} lies outside the file")))?;
                crate::npy_array(&sub, src, off).map_err(|err| prefix(&name, err))?
            }
            None => {
                let data = zip
                    .read_entry(e, opts.scan.limits.max_entry_bytes)
                    .map_err(|err| LoadError::Malformed(format!("{name}: {err}")))?;
                crate::npy_owned(data).map_err(|err| prefix(&name, err))?
            }
        };
        items.push((Value::Str(key), v));
    }
    Ok(Value::Dict(Dict {
        class: Some("numpy.lib.npyio.NpzFile".into()),
        items,
    }))
}

fn prefix(name: &str, e: LoadError) -> LoadError {
    match e {
        LoadError::Unsupported(m) => LoadError::Unsupported(format!("{name}: {m}")),
        LoadError::Malformed(m) => LoadError::Malformed(format!("{name}: {m}")),
        other => other,
    }
}
