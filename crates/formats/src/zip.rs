//! Zip reading that matches PyTorch's reader byte for byte.
//!
//! `torch.load` reads zip checkpoints with `caffe2/serialize/inline_container.cc`, which is built
//! on the `miniz` copy vendored in PyTorch (`third_party/miniz-3.0.2`, with its zip64 patches and
//! `MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS`). Scanners that read zips some other way have been
//! bypassed: the scanner looked at one set of bytes and torch ran another (picklescan
//! CVE-2025-1944, CVE-2025-1945, CVE-2025-10156). This module therefore copies miniz's rules,
//! bugs included, and reports every place where another reader (mainly Python's `zipfile`)
//! would see something different.
//!
//! # The rules this reader follows (checked against torch 2.15)
//!
//! * **Is it a zip?** `torch.load` takes the zip path only if the file starts with `PK\x03\x04`
//!   ([`looks_like_zip`]); otherwise it runs its legacy pickle loader. [`ZipArchive::open`] also
//!   opens archives that start some other way (npz, generic zips) and reports
//!   [`ZipAnomaly::NotZipMagic`] / [`ZipAnomaly::DataBeforeFirstEntry`].
//! * **End record.** miniz scans backwards in 4096-byte chunks (overlapping by 3 bytes) for the
//!   *last* `PK\x05\x06` that has at least 22 bytes after it. It stops once it is at least
//!   65 557 bytes (22 + 65 535) from the end. Because of an unsigned underflow, it never
//!   searches the first `(len - 4096) % 4093` bytes of a file longer than 4096 bytes. So a
//!   ~5 KB comment makes torch fail, while Python's `zipfile` still opens the file. There is no
//!   fallback to another record.
//! * **zip64.** When the 20 bytes before the end record are a zip64 locator, miniz reads the
//!   zip64 record at the locator's *absolute* offset (Python reads the 56 bytes just before the
//!   locator). The zip64 values then replace all the 16/32-bit end-record values.
//! * **No offset shift.** Central-directory and local-header offsets are absolute file offsets.
//!   Python's `zipfile` instead puts the central directory right before the end record and
//!   shifts every offset by the difference ("concat"), so it still reads zips with prepended
//!   data. When miniz cannot read the archive but Python can, this reader falls back to
//!   Python's view, so the contents are still scanned, and records
//!   [`ZipAnomaly::TorchRejects`].
//! * **Entries.** miniz parses exactly the number of records the end record declares and
//!   ignores any further records in the central directory (Python lists them:
//!   [`ZipEntry::hidden_from_torch`]). Sizes and offsets set to `0xFFFFFFFF` come from the
//!   first zip64 extra field (`0x0001`). miniz's open-time sanity checks are copied exactly,
//!   including its reading of the method and time fields as one 32-bit value.
//! * **Prefix.** torch's record prefix is the bytes before the first `/` of central-directory
//!   entry 0 ([`ZipArchive::prefix`]). Records are looked up as `<prefix>/<name>`, truncated
//!   at the first NUL (C strings). `torch.load` also lists all records and fails if any of them
//!   is outside the prefix or, once cut to 511 bytes and at a NUL, is not valid UTF-8.
//! * **Lookups.** `mz_zip_reader_locate_file` binary-searches an index that was heap-sorted by
//!   ASCII-case-insensitive name. With duplicate or case-colliding names, which copy comes
//!   back depends on every name in the archive. [`ZipArchive::torch_lookup`] runs the same
//!   heap sort and binary search, so it returns the copy torch reads.
//!   [`ZipArchive::lookup_all`] returns every copy so that callers can scan them all.
//! * **Data.** The local header is read only to find where the data starts
//!   (`offset + 30 + name_len + extra_len`) and to check its signature. Its name, sizes, CRC and
//!   flags are ignored. CRCs are never checked. Only stored (0) and deflate (8) are supported.
//!   Encryption, patch data and strong encryption make torch fail on that entry. A stored entry
//!   reads `uncompressed_size` bytes (not `compressed_size`). Deflate runs in tinfl's
//!   non-wrapping mode into a buffer of the declared size, so a back-reference before the start
//!   of the output is an error, not zeros. A stream longer than declared is silently cut to the
//!   declared size. A corrupt stream is silently returned half-filled (the rest is
//!   uninitialised memory).
//!
//! Everything is read through [`ReadAt`]: the end-record search window, the central directory,
//! each local header, and entry data only when asked. Every count and length taken from the
//! file is checked against [`ZipLimits`] and the file size before anything is allocated.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use flate2::{Crc, Decompress, FlushDecompress, Status};
use serde::{Deserialize, Serialize};

use crate::io::{read_vec, ReadAt};

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_Z64_LOCATOR: u32 = 0x0706_4b50;
const SIG_Z64_EOCD: u32 = 0x0606_4b50;
const EOCD_LEN: u64 = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: u64 = 30;
const Z64_LOCATOR_LEN: u64 = 20;
const Z64_EOCD_LEN: u64 = 56;
/// miniz's backwards-scan buffer size.
const MINIZ_CHUNK: u64 = 4096;
/// miniz gives up once it has looked this far back from the end (65535 + 22).
const MINIZ_WINDOW: u64 = 0xFFFF + EOCD_LEN;
/// Python's `zipfile` searches the last `(1 << 16) + 22` bytes.
const PYTHON_WINDOW: u64 = (1 << 16) + EOCD_LEN;
/// Value of a 32-bit size/offset field that defers to the zip64 extra field.
const SENTINEL32: u64 = 0xFFFF_FFFF;
/// torch copies entry names into a 512-byte buffer when it lists records.
const TORCH_NAME_BUF: usize = 511;
const IO_CHUNK: u64 = 64 * 1024;
/// Most names/offsets copied into a single anomaly.
const MAX_LISTED: usize = 32;

/// General-purpose flag bit 0: traditional PKWARE encryption.
pub const FLAG_ENCRYPTED: u16 = 1;
/// General-purpose flag bit 3: sizes and CRC follow the data in a data descriptor.
pub const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
/// General-purpose flag bit 5: compressed patch data.
pub const FLAG_PATCH: u16 = 1 << 5;
/// General-purpose flag bit 6: strong encryption.
pub const FLAG_STRONG_ENCRYPTION: u16 = 1 << 6;
/// General-purpose flag bit 11: the name is UTF-8.
pub const FLAG_UTF8: u16 = 1 << 11;
/// General-purpose flag bit 13: local header values are masked (central-directory encryption).
pub const FLAG_MASKED_LOCAL: u16 = 1 << 13;
/// Flag bits with an assigned meaning (0-6, 11, 13).
const KNOWN_FLAGS: u16 = 0x7F | FLAG_UTF8 | FLAG_MASKED_LOCAL;
/// Compression method 0: stored.
pub const METHOD_STORED: u16 = 0;
/// Compression method 8: deflate.
pub const METHOD_DEFLATE: u16 = 8;
/// DOS "directory" bit of the external attributes, which miniz honours.
const DOS_DIRECTORY_ATTR: u32 = 0x10;

/// Whether a file's first bytes are a zip local-file header (`PK\x03\x04`). This is the only
/// test `torch.load` makes before it picks its zip loader over its legacy pickle loader.
pub fn looks_like_zip(first4: &[u8]) -> bool {
    first4.get(..4) == Some(&b"PK\x03\x04"[..])
}

/// Resource limits applied while opening and reading an archive.
///
/// Every length and count read from the file is checked against these limits (and against
/// the file size) before memory is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZipLimits {
    /// Most central-directory records accepted, declared or found. Default 1 000 000.
    pub max_entries: u64,
    /// Longest entry name accepted, in bytes. Default 4096.
    pub max_name_len: usize,
    /// Largest central directory read into memory, in bytes. Default 256 MiB.
    pub max_central_directory_bytes: u64,
    /// Largest entry that [`ZipArchive::read_entry`] returns, whatever `max_bytes` is passed.
    /// Default 1 GiB.
    pub max_entry_bytes: u64,
    /// Largest accepted ratio of declared uncompressed size to compressed size for deflate
    /// entries. Default 1000. Deflate cannot legitimately exceed about 1032:1.
    pub max_compression_ratio: u64,
    /// Most anomalies kept. Further ones are counted in [`ZipAnomaly::AnomaliesOmitted`].
    /// Archive-level [`ZipAnomaly::TorchRejects`] are always kept, and
    /// [`ZipArchive::torch_can_open`] counts dropped ones too. Default 10 000.
    pub max_anomalies: usize,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_name_len: 4096,
            max_central_directory_bytes: 256 << 20,
            max_entry_bytes: 1 << 30,
            max_compression_ratio: 1000,
            max_anomalies: 10_000,
        }
    }
}

/// Errors that stop an archive from being opened or an entry from being read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// The byte source failed.
    #[error("I/O error while reading the archive: {0}")]
    Io(#[from] std::io::Error),
    /// Shorter than an end-of-central-directory record.
    #[error("not a zip archive: {0} bytes is smaller than an end-of-central-directory record")]
    TooSmall(u64),
    /// Neither miniz nor Python's `zipfile` finds an end-of-central-directory record.
    #[error("not a zip archive: no end-of-central-directory record in the last {searched} bytes")]
    NoEndOfCentralDirectory {
        /// How many bytes at the end of the file were searched.
        searched: u64,
    },
    /// There is an end record, but neither miniz nor Python's `zipfile` can read the central
    /// directory (truncated, past the end of the file, bad record signature, ...).
    #[error("unreadable central directory: {reason}")]
    BadCentralDirectory {
        /// Why miniz (and so torch) rejects it.
        reason: String,
        /// Where Python's `zipfile` would read the central directory, if it finds one.
        python_zipfile_offset: Option<u64>,
    },
    /// A length or count from the file is over a [`ZipLimits`] value.
    #[error("{what} is {value}, above the limit of {limit}")]
    LimitExceeded {
        /// What was measured.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The configured limit.
        limit: u64,
    },
    /// torch would raise an error instead of returning this entry's bytes.
    #[error("entry {index} ({name}) cannot be read: {reason}")]
    EntryUnreadable {
        /// Central-directory index of the entry.
        index: usize,
        /// Entry name, lossily decoded.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A structural oddity in an archive. Each one records a place where torch, Python's `zipfile`
/// and naive scanners may disagree about what the archive contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum ZipAnomaly {
    /// torch (miniz or `torch.load`) raises an error for this archive or entry.
    TorchRejects {
        /// The entry, if the rejection is about one entry.
        entry: Option<usize>,
        /// What torch objects to, in miniz's terms.
        reason: String,
    },
    /// The file does not start with `PK\x03\x04`, so `torch.load` uses its legacy loader.
    NotZipMagic,
    /// Bytes before the earliest local header.
    DataBeforeFirstEntry {
        /// Number of bytes.
        len: u64,
    },
    /// Bytes between one entry's data (and data descriptor) and the next local header.
    GapBetweenEntries {
        /// Where the gap starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Bytes between the last entry and the central directory.
    GapBeforeCentralDirectory {
        /// Where the gap starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Bytes between the central directory and the (zip64) end records.
    GapAfterCentralDirectory {
        /// Where the gap starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// Bytes after the end record and its declared comment.
    TrailingData {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// The archive has a comment (torch never writes one).
    Comment {
        /// Where the comment starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
    /// The end record declares a comment longer than the bytes left in the file.
    CommentPastEnd {
        /// Declared comment length.
        declared: u64,
        /// Bytes actually left after the end record.
        available: u64,
    },
    /// Several end-record signatures, or miniz and Python's `zipfile` pick different ones.
    EndRecordAmbiguity {
        /// Offsets of end-record signatures with room for a record (at most 32 listed).
        offsets: Vec<u64>,
        /// The one miniz (torch) uses.
        miniz: Option<u64>,
        /// The one Python's `zipfile` uses.
        python: Option<u64>,
    },
    /// End-record fields contradict each other (for example the zip64 record and the 32-bit
    /// record disagree, or the records overlap the central directory).
    EndRecordInconsistent {
        /// What is inconsistent.
        detail: String,
    },
    /// The central directory is not where the end record says, or Python's `zipfile` would
    /// read a different one because it computes its position from the end record's position.
    CentralDirectoryLocation {
        /// The offset from the end record (what miniz uses).
        declared: u64,
        /// Where Python's `zipfile` reads it, if it can open the file at all.
        python_zipfile: Option<u64>,
    },
    /// The end record's central directory runs past the end of the file.
    CentralDirectoryPastEnd {
        /// Declared offset.
        offset: u64,
        /// Declared size.
        size: u64,
        /// File length.
        file_len: u64,
    },
    /// Central-directory records after the number declared in the end record. Python's
    /// `zipfile` lists them (and lets them replace earlier names); miniz never sees them.
    HiddenEntries {
        /// Number of records the end record declares.
        declared: u64,
        /// Records found after them.
        found: u64,
        /// Their names (at most 32 listed).
        names: Vec<String>,
    },
    /// Unused bytes at the end of the central directory.
    CentralDirectorySlack {
        /// Where they start.
        offset: u64,
        /// How many.
        len: u64,
    },
    /// Several entries with exactly the same name.
    DuplicateName {
        /// The name.
        name: String,
        /// Number of copies.
        count: usize,
        /// Central-directory indices of the copies (at most 32 listed).
        entries: Vec<usize>,
        /// The copy torch's lookup returns.
        torch_reads: Option<usize>,
    },
    /// Names that differ only in ASCII case, which miniz's lookup treats as the same name.
    CaseCollision {
        /// The colliding names (at most 32 listed).
        names: Vec<String>,
        /// Number of entries involved.
        count: usize,
        /// Central-directory indices (at most 32 listed).
        entries: Vec<usize>,
        /// The entry torch's lookup returns.
        torch_reads: Option<usize>,
    },
    /// The name contains a NUL byte: torch cannot look it up, while Python's `zipfile` cuts
    /// the name at the NUL.
    NameContainsNul {
        /// The entry.
        entry: usize,
    },
    /// The name torch lists for this entry is not valid UTF-8 (torch first cuts names to 511
    /// bytes and at the first NUL), so `torch.load` fails when it lists the records.
    NonUtf8Name {
        /// The entry.
        entry: usize,
    },
    /// The entry is not under torch's archive prefix.
    OutsidePrefix {
        /// The entry.
        entry: usize,
        /// Its name.
        name: String,
        /// torch's prefix.
        prefix: String,
    },
    /// The local header's name differs from the central directory's.
    LocalNameMismatch {
        /// The entry.
        entry: usize,
        /// Central-directory name.
        central: String,
        /// Local-header name.
        local: String,
    },
    /// A local-header field differs from the central directory's.
    LocalHeaderMismatch {
        /// The entry.
        entry: usize,
        /// Which field.
        field: &'static str,
        /// Central-directory value.
        central: u64,
        /// Local-header value.
        local: u64,
    },
    /// No local-header signature where the central directory points, or the header is cut
    /// off by the end of the file.
    BadLocalHeader {
        /// The entry.
        entry: usize,
        /// The offset the central directory gives.
        offset: u64,
    },
    /// Encryption flag set (bit 0 or 6).
    Encrypted {
        /// The entry.
        entry: usize,
    },
    /// Compression method other than stored (0) or deflate (8).
    UnsupportedMethod {
        /// The entry.
        entry: usize,
        /// The method.
        method: u16,
    },
    /// Flags miniz refuses: patch data (bit 5) or masked local headers (bit 13).
    UnsupportedFlags {
        /// The entry.
        entry: usize,
        /// All the entry's flags.
        flags: u16,
    },
    /// Flag bits with no assigned meaning.
    UnknownFlags {
        /// The entry.
        entry: usize,
        /// All the entry's flags.
        flags: u16,
    },
    /// miniz extracts nothing for this entry (a name ending in `/`, the DOS directory
    /// attribute, or a compressed size of 0), but the entry declares data.
    TorchSkipsData {
        /// The entry.
        entry: usize,
    },
    /// A stored entry whose compressed and uncompressed sizes differ. torch reads
    /// `uncompressed_size` bytes.
    StoredSizeMismatch {
        /// The entry.
        entry: usize,
        /// Declared compressed size.
        compressed: u64,
        /// Declared uncompressed size (what torch reads).
        uncompressed: u64,
    },
    /// Two entries' local-header-plus-data ranges overlap.
    OverlappingEntries {
        /// The earlier entry.
        first: usize,
        /// The entry that starts inside it.
        second: usize,
    },
    /// An entry's local header or data overlaps the central directory.
    OverlapsCentralDirectory {
        /// The entry.
        entry: usize,
    },
    /// An entry's data runs past the end of the file.
    DataPastEnd {
        /// The entry.
        entry: usize,
        /// Where its data would end.
        end: u64,
        /// File length.
        file_len: u64,
    },
    /// The extra field is malformed where miniz needs it (zip64 values), so torch cannot read
    /// the entry's metadata.
    MalformedExtraField {
        /// The entry.
        entry: usize,
        /// What is wrong.
        detail: &'static str,
    },
    /// More than one zip64 extra field: miniz uses the first, Python's `zipfile` the last.
    MultipleZip64Extra {
        /// The entry.
        entry: usize,
    },
    /// The data does not match the central directory's CRC-32 (found only when the entry is
    /// read or verified).
    BadCrc {
        /// The entry.
        entry: usize,
        /// CRC-32 in the central directory.
        expected: u32,
        /// CRC-32 of the bytes torch reads.
        actual: u32,
    },
    /// The deflate stream does not end at the declared size: it holds more data, or the end
    /// marker is missing. torch silently keeps the declared number of bytes.
    DeflateLongerThanDeclared {
        /// The entry.
        entry: usize,
        /// Declared uncompressed size.
        declared: u64,
    },
    /// The deflate stream is corrupt or cut short. torch returns the bytes decoded before the
    /// fault, followed by uninitialised memory, without raising an error.
    DeflateTruncated {
        /// The entry.
        entry: usize,
        /// Bytes decoded before the fault.
        decoded: u64,
        /// Declared uncompressed size.
        declared: u64,
    },
    /// More anomalies than [`ZipLimits::max_anomalies`]; this many were dropped.
    AnomaliesOmitted {
        /// How many were dropped.
        count: u64,
    },
}

impl ZipAnomaly {
    /// The central-directory index this anomaly is about, if it is about one entry.
    pub fn entry(&self) -> Option<usize> {
        use ZipAnomaly::*;
        match self {
            TorchRejects { entry, .. } => *entry,
            NameContainsNul { entry }
            | NonUtf8Name { entry }
            | OutsidePrefix { entry, .. }
            | LocalNameMismatch { entry, .. }
            | LocalHeaderMismatch { entry, .. }
            | BadLocalHeader { entry, .. }
            | Encrypted { entry }
            | UnsupportedMethod { entry, .. }
            | UnsupportedFlags { entry, .. }
            | UnknownFlags { entry, .. }
            | TorchSkipsData { entry }
            | StoredSizeMismatch { entry, .. }
            | OverlapsCentralDirectory { entry }
            | DataPastEnd { entry, .. }
            | MalformedExtraField { entry, .. }
            | MultipleZip64Extra { entry }
            | BadCrc { entry, .. }
            | DeflateLongerThanDeclared { entry, .. }
            | DeflateTruncated { entry, .. } => Some(*entry),
            OverlappingEntries { second, .. } => Some(*second),
            _ => None,
        }
    }

    /// A plain-English description of the anomaly and why it matters.
    pub fn message(&self) -> String {
        use ZipAnomaly::*;
        match self {
            TorchRejects { entry, reason } => {
                let what = match entry {
                    Some(i) => format!("entry {i}"),
                    None => "this archive".to_string(),
                };
                format!(
                    "torch cannot load {what}: {reason}. torch.load raises an error, but other \
                     zip readers may accept the file, so its entries are still scanned"
                )
            }
            NotZipMagic => "the file does not start with a zip local-file header (PK\\x03\\x04), \
                 so torch.load does not treat it as a zip checkpoint; it runs its legacy pickle \
                 loader on the raw bytes instead"
                .to_string(),
            DataBeforeFirstEntry { len } => format!(
                "{len} bytes come before the first entry's local header. torch uses the central \
                 directory's absolute offsets and never reads them, but they can hold a second \
                 archive or a pickle that other tools would load"
            ),
            GapBetweenEntries { offset, len } => format!(
                "{len} unexplained bytes at offset {offset} between entries: data hidden from \
                 the central directory that a reader walking local headers would see"
            ),
            GapBeforeCentralDirectory { offset, len } => format!(
                "{len} unexplained bytes at offset {offset} between the last entry and the \
                 central directory: room for a hidden entry or a second archive"
            ),
            GapAfterCentralDirectory { offset, len } => format!(
                "{len} unexplained bytes at offset {offset} between the central directory and \
                 the end records: room for a second central directory"
            ),
            TrailingData { offset, len } => format!(
                "{len} bytes at offset {offset} follow the end-of-central-directory record and \
                 its comment; torch ignores them, but they can hold an end record that other \
                 readers would pick"
            ),
            Comment { offset, len } => format!(
                "the archive has a {len}-byte comment at offset {offset} (torch never writes \
                 one); a comment can hide a second end-of-central-directory record"
            ),
            CommentPastEnd {
                declared,
                available,
            } => format!(
                "the end record declares a {declared}-byte comment but only {available} bytes \
                 follow it; readers that check comment length disagree about this file"
            ),
            EndRecordAmbiguity {
                offsets,
                miniz,
                python,
            } => format!(
                "found {} end-of-central-directory signatures (at {}); torch/miniz uses the one \
                 at {} and Python's zipfile the one at {}. Readers that pick a different record \
                 see a different list of files",
                offsets.len(),
                list_u64(offsets),
                opt_offset(*miniz),
                opt_offset(*python)
            ),
            EndRecordInconsistent { detail } => format!(
                "the end-of-central-directory records are inconsistent ({detail}); zip readers \
                 resolve this differently"
            ),
            CentralDirectoryLocation {
                declared,
                python_zipfile,
            } => match python_zipfile {
                Some(p) => format!(
                    "the end record places the central directory at offset {declared}, which \
                     torch uses as an absolute offset, but Python's zipfile computes it from the \
                     end record's position and reads offset {p} (shifting every entry offset by \
                     {}); the two readers see different archives",
                    i128::from(*p) - i128::from(*declared)
                ),
                None => format!(
                    "torch reads the central directory at offset {declared}, but Python's \
                     zipfile cannot open this archive; tools built on it see nothing"
                ),
            },
            CentralDirectoryPastEnd {
                offset,
                size,
                file_len,
            } => format!(
                "the end record places a {size}-byte central directory at offset {offset}, past \
                 the end of the {file_len}-byte file; torch cannot open it, and readers that \
                 search for the directory elsewhere can"
            ),
            HiddenEntries {
                declared,
                found,
                names,
            } => format!(
                "the central directory holds {found} more records than the {declared} the end \
                 record declares ({}). torch never sees them; Python's zipfile lists them, and a \
                 same-named hidden record replaces the visible one there. They were scanned too",
                list_str(names)
            ),
            CentralDirectorySlack { offset, len } => format!(
                "{len} unused bytes at offset {offset} at the end of the central directory; \
                 Python's zipfile fails on them, and they can hide data"
            ),
            DuplicateName {
                name,
                count,
                entries,
                torch_reads,
            } => format!(
                "{count} entries are named {name:?} (entries {}); torch reads {} (chosen by \
                 miniz's sorted lookup) and other readers may pick another copy, so all copies \
                 were scanned",
                list_usize(entries),
                opt_entry(*torch_reads)
            ),
            CaseCollision {
                names,
                count,
                entries,
                torch_reads,
            } => format!(
                "{count} names that differ only in letter case ({}, entries {}) are one name to \
                 torch's \
                 case-insensitive lookup; torch reads {} and other readers may read another, so \
                 all of them were scanned",
                list_str(names),
                list_usize(entries),
                opt_entry(*torch_reads)
            ),
            NameContainsNul { entry } => format!(
                "entry {entry}'s name contains a NUL byte: torch can never look it up, but \
                 Python's zipfile cuts the name at the NUL and may load it under a different \
                 name"
            ),
            NonUtf8Name { entry } => format!(
                "entry {entry}'s name is not valid UTF-8 as torch lists it (cut to 511 bytes and \
                 at the first NUL): torch.load fails with UnicodeDecodeError when it lists the \
                 records, while byte-oriented readers load the entry normally"
            ),
            OutsidePrefix {
                entry,
                name,
                prefix,
            } => format!(
                "entry {entry} ({name:?}) is not under the archive prefix {prefix:?}: torch's \
                 record lookups never reach it, and torch.load refuses the archive when it lists \
                 the records"
            ),
            LocalNameMismatch {
                entry,
                central,
                local,
            } => format!(
                "entry {entry} is named {central:?} in the central directory but {local:?} in \
                 its local header; torch uses the central name, and tools that walk local headers \
                 see the other"
            ),
            LocalHeaderMismatch {
                entry,
                field,
                central,
                local,
            } => format!(
                "entry {entry}'s {field} is {central} in the central directory but {local} in \
                 its local header; torch uses the central directory, and streaming readers use \
                 the local header"
            ),
            BadLocalHeader { entry, offset } => format!(
                "entry {entry} points to offset {offset}, where there is no valid local \
                 header; torch fails to read it, and other readers may read different bytes"
            ),
            Encrypted { entry } => format!(
                "entry {entry} is marked encrypted; torch refuses to read it, so a scanner \
                 cannot see what another reader with the key would load"
            ),
            UnsupportedMethod { entry, method } => format!(
                "entry {entry} uses compression method {method}; torch reads only stored (0) \
                 and deflate (8) and fails on it, while other readers may decode it"
            ),
            UnsupportedFlags { entry, flags } => format!(
                "entry {entry} has flags {flags:#06x} (patch data or masked local header) that \
                 torch refuses"
            ),
            UnknownFlags { entry, flags } => format!(
                "entry {entry} sets general-purpose flag bits with no defined meaning \
                 ({flags:#06x}); no legitimate writer produces these"
            ),
            TorchSkipsData { entry } => format!(
                "entry {entry} declares data but is a directory (name ends in '/' or DOS \
                 directory attribute) or has compressed size 0; torch extracts nothing and hands \
                 back uninitialised memory, while other readers return its bytes"
            ),
            StoredSizeMismatch {
                entry,
                compressed,
                uncompressed,
            } => format!(
                "stored entry {entry} declares {compressed} compressed bytes but {uncompressed} \
                 uncompressed; torch reads {uncompressed} bytes from the data start, which may \
                 run into the next record"
            ),
            OverlappingEntries { first, second } => format!(
                "entries {first} and {second} overlap in the file: the same bytes are read as \
                 two different entries (a zip-bomb or aliasing trick)"
            ),
            OverlapsCentralDirectory { entry } => format!(
                "entry {entry}'s data overlaps the central directory; it cannot come from a \
                 normal zip writer"
            ),
            DataPastEnd {
                entry,
                end,
                file_len,
            } => format!(
                "entry {entry}'s data would end at offset {end}, past the end of the \
                 {file_len}-byte file; torch fails to read it"
            ),
            MalformedExtraField { entry, detail } => format!(
                "entry {entry}'s extra field is malformed ({detail}); torch raises an error when \
                 it reads the entry's metadata"
            ),
            MultipleZip64Extra { entry } => format!(
                "entry {entry} has several zip64 extra fields; torch uses the first and Python's \
                 zipfile the last, so they may disagree about its size and offset"
            ),
            BadCrc {
                entry,
                expected,
                actual,
            } => format!(
                "entry {entry}'s data has CRC-32 {actual:#010x} but the central directory says \
                 {expected:#010x}; torch does not check CRCs and loads it anyway, while other \
                 readers reject it"
            ),
            DeflateLongerThanDeclared { entry, declared } => format!(
                "entry {entry}'s deflate stream does not end at the declared {declared} bytes (it \
                 holds more, or lacks its end marker); torch silently keeps the first \
                 {declared}, while other readers return more or reject it"
            ),
            DeflateTruncated {
                entry,
                decoded,
                declared,
            } => format!(
                "entry {entry}'s deflate stream is corrupt or cut short after {decoded} of \
                 {declared} bytes; torch does not report an error and loads those bytes followed \
                 by uninitialised memory"
            ),
            AnomaliesOmitted { count } => {
                format!("{count} further anomalies were not recorded (limit reached)")
            }
        }
    }
}

impl fmt::Display for ZipAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

fn opt_offset(v: Option<u64>) -> String {
    v.map_or_else(
        || "none (it cannot open the file)".to_string(),
        |o| format!("offset {o}"),
    )
}

fn opt_entry(v: Option<usize>) -> String {
    v.map_or_else(|| "none of them".to_string(), |i| format!("entry {i}"))
}

fn list_u64(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

fn list_usize(v: &[usize]) -> String {
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_str(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A local file header, as found where the central directory points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHeader {
    /// Whether the header starts with `PK\x03\x04` (torch fails to read the entry otherwise).
    pub signature_ok: bool,
    /// General-purpose flags.
    pub flags: u16,
    /// Compression method.
    pub method: u16,
    /// CRC-32 (0 when a data descriptor is used).
    pub crc32: u32,
    /// Compressed size (32-bit field).
    pub compressed_size: u32,
    /// Uncompressed size (32-bit field).
    pub uncompressed_size: u32,
    /// Declared name length.
    pub name_len: u16,
    /// Declared extra-field length.
    pub extra_len: u16,
    /// Name bytes (shorter than `name_len` if the file ends first).
    pub name: Vec<u8>,
}

/// One central-directory record, with the values torch uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    /// Position in the central directory (0-based).
    pub index: usize,
    /// Raw name bytes from the central directory.
    pub name: Vec<u8>,
    /// Compression method.
    pub method: u16,
    /// General-purpose flags.
    pub flags: u16,
    /// CRC-32 from the central directory.
    pub crc32: u32,
    /// Compressed size (zip64-resolved as miniz does).
    pub compressed_size: u64,
    /// Uncompressed size (zip64-resolved as miniz does).
    pub uncompressed_size: u64,
    /// Local-header offset (zip64-resolved; shifted only in the Python fallback view).
    pub local_header_offset: u64,
    /// `local_header_offset + 30 + local name length + local extra length`, if the 30-byte
    /// local header lies inside the file. This is torch's `getRecordOffset`.
    pub data_offset: Option<u64>,
    /// Absolute offset of this central-directory record.
    pub central_header_offset: u64,
    /// External file attributes.
    pub external_attributes: u32,
    /// `true` for records past the count declared in the end record: Python's `zipfile` lists
    /// them, torch never sees them.
    pub hidden_from_torch: bool,
    /// The local header, if its fixed 30 bytes lie inside the file.
    pub local_header: Option<LocalHeader>,
    /// Why miniz cannot stat this entry (malformed zip64 extra field), if it cannot.
    stat_error: Option<&'static str>,
    /// More than one zip64 extra field.
    multi_zip64: bool,
}

impl ZipEntry {
    /// The name, decoded lossily as UTF-8.
    pub fn name_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }

    /// Whether miniz treats the entry as a directory (name ends in `/` or DOS directory bit)
    /// and so extracts nothing for it.
    pub fn is_directory(&self) -> bool {
        self.name.last() == Some(&b'/') || self.external_attributes & DOS_DIRECTORY_ATTR != 0
    }

    /// Whether an encryption flag (bit 0 or 6) is set.
    pub fn is_encrypted(&self) -> bool {
        self.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION) != 0
    }

    /// How many bytes of file data torch reads for this entry: the uncompressed size for
    /// stored entries (miniz reads that many), the compressed size otherwise.
    pub fn torch_read_len(&self) -> u64 {
        if self.method == METHOD_STORED {
            self.uncompressed_size
        } else {
            self.compressed_size
        }
    }
}

/// The result of [`ZipArchive::read_entry_detailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryData {
    /// The bytes torch reads: all of them when `complete`, otherwise the part it decodes
    /// deterministically before a deflate fault.
    pub data: Vec<u8>,
    /// `false` when torch would fill the rest of its buffer with uninitialised memory.
    pub complete: bool,
    /// Anomalies found while reading ([`ZipAnomaly::BadCrc`],
    /// [`ZipAnomaly::DeflateLongerThanDeclared`], [`ZipAnomaly::DeflateTruncated`]).
    pub anomalies: Vec<ZipAnomaly>,
}

/// A zip archive opened the way torch opens it.
pub struct ZipArchive<'a> {
    src: &'a dyn ReadAt,
    limits: ZipLimits,
    file_len: u64,
    entries: Vec<ZipEntry>,
    /// Entries `0..torch_count` are the ones miniz indexes.
    torch_count: usize,
    /// miniz's heap-sorted lookup index over `entries[..torch_count]`.
    sorted: Vec<u32>,
    /// All entries sorted by lowercased name, for [`ZipArchive::lookup_all`].
    by_name: Vec<u32>,
    /// Entries whose name contains a NUL byte.
    nul_named: Vec<u32>,
    prefix: Option<Vec<u8>>,
    anomalies: Vec<ZipAnomaly>,
    torch_ok: bool,
    eocd_offset: u64,
    cd_offset: u64,
    cd_size: u64,
    zip64: bool,
    python_view: bool,
}

impl fmt::Debug for ZipArchive<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZipArchive")
            .field("file_len", &self.file_len)
            .field("entries", &self.entries.len())
            .field(
                "prefix",
                &self.prefix.as_deref().map(String::from_utf8_lossy),
            )
            .field("torch_can_open", &self.torch_ok)
            .field("anomalies", &self.anomalies)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Little-endian field access that never panics (out-of-range reads give 0; callers check
// lengths first).

fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.saturating_add(2)) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.saturating_add(4)) {
        Some(&[a, x, y, z]) => u32::from_le_bytes([a, x, y, z]),
        _ => 0,
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// `true` when `end` exists and is at most `len` (MSRV 1.80 has no `Option::is_none_or`).
fn within(end: Option<u64>, len: u64) -> bool {
    matches!(end, Some(end) if end <= len)
}

fn clamp_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// miniz's name ordering (`mz_zip_reader_filename_less` / `mz_zip_filename_compare`):
// bytewise after lowercasing ASCII A-Z only (`MZ_TOLOWER`), shorter name first on a tie.

fn miniz_compare(l: &[u8], r: &[u8]) -> Ordering {
    for (x, y) in l.iter().zip(r) {
        let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
        if x != y {
            return x.cmp(&y);
        }
    }
    l.len().cmp(&r.len())
}

fn miniz_less(l: &[u8], r: &[u8]) -> bool {
    miniz_compare(l, r) == Ordering::Less
}

/// `mz_zip_reader_sort_central_dir_offsets_by_filename`: an in-place heap sort of the indices
/// `0..count`. It is not stable, so the order of equal names (duplicates, case collisions)
/// depends on every name in the archive. That order decides which copy the lookup returns.
fn miniz_sorted_index(entries: &[ZipEntry], count: usize) -> Vec<u32> {
    let count = count.min(entries.len());
    let mut idx: Vec<u32> = (0..count)
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
        .collect();
    if count <= 1 {
        return idx;
    }
    let name = |i: u32| {
        entries
            .get(i as usize)
            .map_or(&[][..], |e| e.name.as_slice())
    };
    let less = |a: u32, b: u32| miniz_less(name(a), name(b));
    let sift = |idx: &mut [u32], mut root: usize, end: usize| loop {
        let mut child = root * 2 + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && less(idx[child], idx[child + 1]) {
            child += 1;
        }
        if !less(idx[root], idx[child]) {
            break;
        }
        idx.swap(root, child);
        root = child;
    };
    let mut start = (count - 2) >> 1;
    loop {
        sift(&mut idx, start, count);
        if start == 0 {
            break;
        }
        start -= 1;
    }
    let mut end = count - 1;
    while end > 0 {
        idx.swap(end, 0);
        sift(&mut idx, 0, end);
        end -= 1;
    }
    idx
}

// ---------------------------------------------------------------------------------------------
// End-of-central-directory search.

struct EocdScan {
    /// The record miniz uses.
    miniz: Option<u64>,
    /// The record Python's `zipfile` uses.
    python: Option<u64>,
    /// Every signature with at least 22 bytes after it, in the union of both windows.
    all: Vec<u64>,
    /// Lowest offset miniz searches.
    miniz_low: u64,
}

/// Lowest chunk start `mz_zip_reader_locate_header_sig` reaches. Chunks start at
/// `len - 4096` and step back by 4093. The scan stops at 0 or once it is 65 557 bytes from the
/// end. When a step would go below 0, miniz's `MZ_MAX(cur - 4093, 0)` wraps (signed/unsigned
/// mix), the next read fails, and the search gives up: bytes below the last chunk start are
/// never searched.
fn miniz_search_low(len: u64) -> u64 {
    let mut cur = len.saturating_sub(MINIZ_CHUNK);
    while cur != 0 && len - cur < MINIZ_WINDOW && cur >= MINIZ_CHUNK - 3 {
        cur -= MINIZ_CHUNK - 3;
    }
    cur
}

fn scan_eocd(src: &dyn ReadAt, len: u64) -> Result<EocdScan, ZipError> {
    let miniz_low = miniz_search_low(len);
    let python_low = len.saturating_sub(PYTHON_WINDOW);
    let low = miniz_low.min(python_low);
    let window = read_vec(src, low, len - low)?;
    let sig = SIG_EOCD.to_le_bytes();
    let is_sig = |i: usize| window.get(i..i + 4) == Some(&sig[..]);
    let room = window.len().saturating_sub(EOCD_LEN as usize);
    let all: Vec<u64> = (0..window.len().min(room + 1))
        .filter(|&i| is_sig(i))
        .map(|i| low + i as u64)
        .collect();
    let miniz = all.iter().rev().find(|&&p| p >= miniz_low).copied();
    // Python 3.11 `_EndRecData`: a comment-less record exactly at the end wins; otherwise it
    // takes the last signature in its window and gives up if fewer than 22 bytes follow it.
    let tail = room;
    let python = if is_sig(tail) && window.get(tail + 20..tail + 22) == Some(&[0, 0][..]) {
        Some(low + tail as u64)
    } else {
        let from = (python_low - low) as usize;
        (from..window.len().saturating_sub(3))
            .rev()
            .find(|&i| is_sig(i))
            .map(|i| low + i as u64)
            .filter(|&p| len - p >= EOCD_LEN)
    };
    Ok(EocdScan {
        miniz,
        python,
        all,
        miniz_low,
    })
}

// ---------------------------------------------------------------------------------------------
// End records.

#[derive(Debug, Clone, Copy)]
struct Tail {
    eocd: u64,
    this_disk: u64,
    comment_len: u64,
    total: u64,
    cd_size: u64,
    cd_offset: u64,
    /// Offset and total length of the zip64 end record used.
    zip64: Option<(u64, u64)>,
}

enum Fail {
    /// Stop: I/O error or a limit.
    Fatal(ZipError),
    /// miniz (and so torch) rejects the archive; another view may still read it.
    Torch(String),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Self {
        Fail::Fatal(ZipError::Io(e))
    }
}

impl From<ZipError> for Fail {
    fn from(e: ZipError) -> Self {
        Fail::Fatal(e)
    }
}

/// `mz_zip_reader_read_central_dir` up to reading the directory.
fn miniz_tail(src: &dyn ReadAt, len: u64, eocd: u64, sink: &mut Sink) -> Result<Tail, Fail> {
    let e = read_vec(src, eocd, EOCD_LEN)?;
    let mut this_disk = u64::from(le16(&e, 4));
    let mut cd_disk = u64::from(le16(&e, 6));
    let mut on_disk = u64::from(le16(&e, 8));
    let mut total = u64::from(le16(&e, 10));
    let mut cd_size = u64::from(le32(&e, 12));
    let mut cd_offset = u64::from(le32(&e, 16));
    let comment_len = u64::from(le16(&e, 20));
    let mut zip64 = None;
    if eocd >= Z64_LOCATOR_LEN + Z64_EOCD_LEN {
        let loc = read_vec(src, eocd - Z64_LOCATOR_LEN, Z64_LOCATOR_LEN)?;
        if le32(&loc, 0) == SIG_Z64_LOCATOR {
            let rec_at = le64(&loc, 8);
            if rec_at > len - Z64_EOCD_LEN {
                return Err(Fail::Torch(format!(
                    "not an archive (the zip64 locator points to offset {rec_at}, past the end \
                     of the file)"
                )));
            }
            let rec = read_vec(src, rec_at, Z64_EOCD_LEN)?;
            if le32(&rec, 0) == SIG_Z64_EOCD {
                let rec_size = le64(&rec, 4);
                let disks = le32(&loc, 16);
                let z_on_disk = le64(&rec, 24);
                let z_total = le64(&rec, 32);
                let z_cd_size = le64(&rec, 40);
                let z_cd_offset = le64(&rec, 48);
                let mut diffs = Vec::new();
                for (what, small, sentinel, big) in [
                    ("total entries", total, 0xFFFF, z_total),
                    ("entries on this disk", on_disk, 0xFFFF, z_on_disk),
                    ("central directory size", cd_size, SENTINEL32, z_cd_size),
                    (
                        "central directory offset",
                        cd_offset,
                        SENTINEL32,
                        z_cd_offset,
                    ),
                ] {
                    if small != sentinel && small != big {
                        diffs.push(format!("{what}: {small} in the end record, {big} in zip64"));
                    }
                }
                if !diffs.is_empty() {
                    sink.push(ZipAnomaly::EndRecordInconsistent {
                        detail: diffs.join("; "),
                    });
                }
                if rec_at != eocd - Z64_LOCATOR_LEN - Z64_EOCD_LEN {
                    sink.push(ZipAnomaly::EndRecordInconsistent {
                        detail: format!(
                            "the zip64 locator points to a zip64 record at offset {rec_at}, not \
                             the one immediately before it that Python's zipfile reads"
                        ),
                    });
                }
                if rec_size < Z64_EOCD_LEN - 12 {
                    return Err(Fail::Torch(format!(
                        "invalid header or archive is corrupted (zip64 record size {rec_size} is \
                         below 44)"
                    )));
                }
                if disks != 1 {
                    return Err(Fail::Torch(format!(
                        "unsupported multidisk archive (zip64 locator says {disks} disks)"
                    )));
                }
                if z_total > u64::from(u32::MAX) || z_on_disk > u64::from(u32::MAX) {
                    return Err(Fail::Torch(format!(
                        "too many files ({z_total} declared in the zip64 record)"
                    )));
                }
                if z_cd_size > u64::from(u32::MAX) {
                    return Err(Fail::Torch(format!(
                        "unsupported central directory size {z_cd_size}"
                    )));
                }
                total = z_total;
                on_disk = z_on_disk;
                cd_size = z_cd_size;
                this_disk = u64::from(le32(&rec, 16));
                cd_disk = u64::from(le32(&rec, 20));
                cd_offset = z_cd_offset;
                zip64 = Some((rec_at, rec_size.saturating_add(12)));
            }
        }
    }
    if total != on_disk {
        return Err(Fail::Torch(format!(
            "unsupported multidisk archive (end record declares {total} entries in total but \
             {on_disk} on this disk)"
        )));
    }
    if (this_disk | cd_disk) != 0 && (this_disk != 1 || cd_disk != 1) {
        return Err(Fail::Torch(format!(
            "unsupported multidisk archive (disk number {this_disk}, central directory on disk \
             {cd_disk})"
        )));
    }
    if cd_size < total * CENTRAL_LEN as u64 {
        return Err(Fail::Torch(format!(
            "invalid header or archive is corrupted (a {cd_size}-byte central directory cannot \
             hold {total} entries)"
        )));
    }
    if !within(cd_offset.checked_add(cd_size), len) {
        sink.push(ZipAnomaly::CentralDirectoryPastEnd {
            offset: cd_offset,
            size: cd_size,
            file_len: len,
        });
        return Err(Fail::Torch(format!(
            "invalid header or archive is corrupted (central directory at {cd_offset}+{cd_size} \
             runs past the end of the {len}-byte file)"
        )));
    }
    Ok(Tail {
        eocd,
        this_disk,
        comment_len,
        total,
        cd_size,
        cd_offset,
        zip64,
    })
}

/// Python's `_EndRecData64` plus the first part of `_RealGetContents`: returns the end values
/// and where Python reads the central directory, or `None` if Python raises.
fn python_tail(src: &dyn ReadAt, eocd: u64) -> Result<Option<(Tail, u64)>, ZipError> {
    let e = read_vec(src, eocd, EOCD_LEN)?;
    let mut total = u64::from(le16(&e, 10));
    let mut cd_size = u64::from(le32(&e, 12));
    let mut cd_offset = u64::from(le32(&e, 16));
    let comment_len = u64::from(le16(&e, 20));
    let mut zip64 = None;
    if eocd >= Z64_LOCATOR_LEN {
        let loc = read_vec(src, eocd - Z64_LOCATOR_LEN, Z64_LOCATOR_LEN)?;
        if le32(&loc, 0) == SIG_Z64_LOCATOR {
            if le32(&loc, 4) != 0 || le32(&loc, 16) > 1 {
                return Ok(None);
            }
            let Some(rec_at) = eocd.checked_sub(Z64_LOCATOR_LEN + Z64_EOCD_LEN) else {
                return Ok(None);
            };
            let rec = read_vec(src, rec_at, Z64_EOCD_LEN)?;
            if le32(&rec, 0) == SIG_Z64_EOCD {
                total = le64(&rec, 32);
                cd_size = le64(&rec, 40);
                cd_offset = le64(&rec, 48);
                zip64 = Some((rec_at, Z64_EOCD_LEN));
            }
        }
    }
    let before = if zip64.is_some() {
        Z64_LOCATOR_LEN + Z64_EOCD_LEN
    } else {
        0
    };
    let Some(start) = eocd
        .checked_sub(before)
        .and_then(|v| v.checked_sub(cd_size))
    else {
        return Ok(None);
    };
    let this_disk = u64::from(le16(&e, 4));
    Ok(Some((
        Tail {
            eocd,
            this_disk,
            comment_len,
            total,
            cd_size,
            cd_offset,
            zip64,
        },
        start,
    )))
}

// ---------------------------------------------------------------------------------------------
// Central-directory records.

struct RawRecord<'c> {
    header: &'c [u8],
    name: &'c [u8],
    extra: &'c [u8],
    len: usize,
}

fn raw_record(cd: &[u8], pos: usize) -> Result<RawRecord<'_>, &'static str> {
    let rest = cd.get(pos..).unwrap_or(&[]);
    if rest.len() < CENTRAL_LEN {
        return Err("the central directory ends in the middle of a record");
    }
    if le32(rest, 0) != SIG_CENTRAL {
        return Err("no central-directory record signature");
    }
    let n = usize::from(le16(rest, 28));
    let x = usize::from(le16(rest, 30));
    let c = usize::from(le16(rest, 32));
    let len = CENTRAL_LEN + n + x + c;
    if len > rest.len() {
        return Err("a record runs past the end of the central directory");
    }
    Ok(RawRecord {
        header: &rest[..CENTRAL_LEN],
        name: &rest[CENTRAL_LEN..CENTRAL_LEN + n],
        extra: &rest[CENTRAL_LEN + n..CENTRAL_LEN + n + x],
        len,
    })
}

/// The lenient zip64 pass in `mz_zip_reader_read_central_dir` (PyTorch's patched miniz). It
/// feeds only the open-time sanity checks: it finds the first `0x0001` field and reads values
/// bounded by the *remaining extra bytes*, not by the field's size.
fn miniz_open_sizes(extra: &[u8], comp: u64, uncomp: u64, lho: u64) -> Result<[u64; 3], ()> {
    let (mut comp, mut uncomp, mut lho) = (comp, uncomp, lho);
    if extra.is_empty() || comp.max(uncomp).max(lho) != SENTINEL32 {
        return Ok([comp, uncomp, lho]);
    }
    let (mut p, mut rem, mut found) = (0usize, extra.len(), false);
    loop {
        if rem < 4 {
            return Err(());
        }
        let size = usize::from(le16(extra, p + 2));
        if size + 4 > rem {
            return Err(());
        }
        if le16(extra, p) == 1 {
            found = true;
            break;
        }
        p += 4 + size;
        rem -= 4 + size;
        if rem == 0 {
            break;
        }
    }
    if found && rem >= 4 {
        rem -= 4;
        p += 4;
        for v in [&mut uncomp, &mut comp, &mut lho] {
            if *v == SENTINEL32 && rem >= 8 {
                *v = le64(extra, p);
                rem -= 8;
                p += 8;
            }
        }
    }
    Ok([comp, uncomp, lho])
}

/// `mz_zip_file_stat_internal`'s zip64 pass, which supplies the values torch reads with: the
/// first `0x0001` field, read strictly within its declared size.
fn miniz_stat_sizes(
    extra: &[u8],
    comp: u64,
    uncomp: u64,
    lho: u64,
) -> Result<[u64; 3], &'static str> {
    let (mut comp, mut uncomp, mut lho) = (comp, uncomp, lho);
    if extra.is_empty() || comp.max(uncomp).max(lho) != SENTINEL32 {
        return Ok([comp, uncomp, lho]);
    }
    let (mut p, mut rem) = (0usize, extra.len());
    loop {
        if rem < 4 {
            return Err("extra field shorter than a field header");
        }
        let size = usize::from(le16(extra, p + 2));
        if size + 4 > rem {
            return Err("extra field runs past the end of the extra data");
        }
        if le16(extra, p) == 1 {
            let mut field = extra.get(p + 4..p + 4 + size).unwrap_or(&[]);
            for v in [&mut uncomp, &mut comp, &mut lho] {
                if *v == SENTINEL32 {
                    if field.len() < 8 {
                        return Err("zip64 extra field too short for the values it must hold");
                    }
                    *v = le64(field, 0);
                    field = &field[8..];
                }
            }
            break;
        }
        p += 4 + size;
        rem -= 4 + size;
        if rem == 0 {
            break;
        }
    }
    Ok([comp, uncomp, lho])
}

fn count_zip64_fields(extra: &[u8]) -> usize {
    let (mut p, mut n) = (0usize, 0);
    while p + 4 <= extra.len() {
        if le16(extra, p) == 1 {
            n += 1;
        }
        p += 4 + usize::from(le16(extra, p + 2));
    }
    n
}

fn make_entry(
    raw: &RawRecord<'_>,
    index: usize,
    record_offset: u64,
    hidden: bool,
    limits: &ZipLimits,
) -> Result<ZipEntry, ZipError> {
    if raw.name.len() > limits.max_name_len {
        return Err(ZipError::LimitExceeded {
            what: "entry name length",
            value: raw.name.len() as u64,
            limit: limits.max_name_len as u64,
        });
    }
    let h = raw.header;
    let comp32 = u64::from(le32(h, 20));
    let uncomp32 = u64::from(le32(h, 24));
    let lho32 = u64::from(le32(h, 42));
    let (sizes, stat_error) = match miniz_stat_sizes(raw.extra, comp32, uncomp32, lho32) {
        Ok(v) => (v, None),
        Err(why) => ([comp32, uncomp32, lho32], Some(why)),
    };
    Ok(ZipEntry {
        index,
        name: raw.name.to_vec(),
        method: le16(h, 10),
        flags: le16(h, 8),
        crc32: le32(h, 16),
        compressed_size: sizes[0],
        uncompressed_size: sizes[1],
        local_header_offset: sizes[2],
        data_offset: None,
        central_header_offset: record_offset,
        external_attributes: le32(h, 38),
        hidden_from_torch: hidden,
        local_header: None,
        stat_error,
        multi_zip64: count_zip64_fields(raw.extra) > 1,
    })
}

/// The per-record sanity checks `mz_zip_reader_read_central_dir` makes. Any failure makes
/// torch refuse the whole archive.
fn miniz_record_checks(raw: &RawRecord<'_>, this_disk: u64, len: u64) -> Option<String> {
    let h = raw.header;
    let comp32 = u64::from(le32(h, 20));
    let uncomp32 = u64::from(le32(h, 24));
    let lho32 = u64::from(le32(h, 42));
    let Ok([comp, uncomp, lho]) = miniz_open_sizes(raw.extra, comp32, uncomp32, lho32) else {
        return Some("invalid header or archive is corrupted (malformed extra field)".into());
    };
    if comp != SENTINEL32 && uncomp != SENTINEL32 {
        // miniz reads the method with MZ_READ_LE32, so it takes in the modification time too:
        // the stored-size check only fires when method and time are both zero.
        let method_and_time = le32(h, 10);
        if (method_and_time == 0 && uncomp != comp) || (uncomp != 0 && comp == 0) {
            return Some(format!(
                "invalid header or archive is corrupted (sizes {comp} compressed / {uncomp} \
                 uncompressed are impossible)"
            ));
        }
    }
    let disk = u64::from(le16(h, 34));
    if disk == 0xFFFF || (disk != this_disk && disk != 1) {
        return Some(format!(
            "unsupported multidisk archive (entry on disk {disk})"
        ));
    }
    // C arithmetic on mz_uint64: wraps instead of failing.
    if comp != SENTINEL32 && lho.wrapping_add(LOCAL_LEN).wrapping_add(comp) > len {
        return Some(format!(
            "invalid header or archive is corrupted (data at {lho}+{comp} runs past the end)"
        ));
    }
    if le16(h, 8) & FLAG_MASKED_LOCAL != 0 {
        return Some("unsupported encryption (masked local headers, flag bit 13)".into());
    }
    None
}

/// [`ZipLimits::max_entries`], never above miniz's own `u32` limit (indices are `u32`).
fn max_entries(limits: &ZipLimits) -> u64 {
    limits.max_entries.min(u64::from(u32::MAX))
}

struct Parsed {
    entries: Vec<ZipEntry>,
    torch_count: usize,
}

/// Reads the central directory at `offset`, after the limit checks.
fn read_cd(src: &dyn ReadAt, offset: u64, size: u64, limits: &ZipLimits) -> Result<Vec<u8>, Fail> {
    if size > limits.max_central_directory_bytes {
        return Err(Fail::Fatal(ZipError::LimitExceeded {
            what: "central directory size",
            value: size,
            limit: limits.max_central_directory_bytes,
        }));
    }
    Ok(read_vec(src, offset, size)?)
}

/// miniz's view: exactly `tail.total` records, then (for reporting) any records after them.
fn parse_miniz(
    src: &dyn ReadAt,
    len: u64,
    tail: &Tail,
    limits: &ZipLimits,
    sink: &mut Sink,
) -> Result<Parsed, Fail> {
    if tail.total > max_entries(limits) {
        return Err(Fail::Fatal(ZipError::LimitExceeded {
            what: "declared entry count",
            value: tail.total,
            limit: max_entries(limits),
        }));
    }
    // miniz skips reading an empty directory; it is read anyway to find records it hides.
    let cd = read_cd(src, tail.cd_offset, tail.cd_size, limits)?;
    let mut entries = Vec::with_capacity(clamp_usize(tail.total.min(4096)));
    let mut rejections = Vec::new();
    let mut pos = 0usize;
    for i in 0..clamp_usize(tail.total) {
        let raw = raw_record(&cd, pos).map_err(|why| {
            Fail::Torch(format!(
                "invalid header or archive is corrupted (central-directory record {i} at offset \
                 {}: {why})",
                tail.cd_offset + pos as u64
            ))
        })?;
        if let Some(why) = miniz_record_checks(&raw, tail.this_disk, len) {
            rejections.push((i, why));
        }
        entries.push(make_entry(
            &raw,
            i,
            tail.cd_offset + pos as u64,
            false,
            limits,
        )?);
        pos += raw.len;
    }
    let torch_count = entries.len();
    // Records after the declared count: invisible to miniz, listed by Python's zipfile.
    let mut names = Vec::new();
    while let Ok(raw) = raw_record(&cd, pos) {
        if entries.len() as u64 >= max_entries(limits) {
            return Err(Fail::Fatal(ZipError::LimitExceeded {
                what: "entry count",
                value: entries.len() as u64 + 1,
                limit: max_entries(limits),
            }));
        }
        let index = entries.len();
        let e = make_entry(&raw, index, tail.cd_offset + pos as u64, true, limits)?;
        if names.len() < MAX_LISTED {
            names.push(e.name_lossy().into_owned());
        }
        entries.push(e);
        pos += raw.len;
    }
    if entries.len() > torch_count {
        sink.push(ZipAnomaly::HiddenEntries {
            declared: tail.total,
            found: (entries.len() - torch_count) as u64,
            names,
        });
    }
    if pos < cd.len() {
        sink.push(ZipAnomaly::CentralDirectorySlack {
            offset: tail.cd_offset + pos as u64,
            len: (cd.len() - pos) as u64,
        });
    }
    for (i, reason) in rejections {
        sink.push(ZipAnomaly::TorchRejects {
            entry: Some(i),
            reason,
        });
    }
    Ok(Parsed {
        entries,
        torch_count,
    })
}

/// Python's `zipfile` view, used only when miniz cannot read the archive: every record in the
/// directory found just before the end record, with offsets shifted by "concat".
fn parse_python(
    src: &dyn ReadAt,
    tail: &Tail,
    start: u64,
    limits: &ZipLimits,
) -> Result<Parsed, Fail> {
    let cd = read_cd(src, start, tail.cd_size, limits)?;
    let shift = i128::from(start) - i128::from(tail.cd_offset);
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while pos < cd.len() {
        if entries.len() as u64 >= max_entries(limits) {
            return Err(Fail::Fatal(ZipError::LimitExceeded {
                what: "entry count",
                value: entries.len() as u64 + 1,
                limit: max_entries(limits),
            }));
        }
        let raw = raw_record(&cd, pos).map_err(|why| Fail::Torch(why.into()))?;
        let mut e = make_entry(&raw, entries.len(), start + pos as u64, false, limits)?;
        if e.stat_error.is_some() {
            return Err(Fail::Torch("corrupt zip64 extra field".into()));
        }
        match u64::try_from(i128::from(e.local_header_offset) + shift) {
            Ok(v) => e.local_header_offset = v,
            Err(_) => {
                e.stat_error =
                    Some("Python's zipfile shifts the local-header offset outside the file")
            }
        }
        entries.push(e);
        pos += raw.len;
    }
    let torch_count = entries.len();
    Ok(Parsed {
        entries,
        torch_count,
    })
}

/// Anomaly collector with a cap ([`ZipLimits::max_anomalies`]).
struct Sink {
    list: Vec<ZipAnomaly>,
    max: usize,
    omitted: u64,
    torch_ok: bool,
}

impl Sink {
    fn new(max: usize) -> Self {
        Self {
            list: Vec::new(),
            max,
            omitted: 0,
            torch_ok: true,
        }
    }

    fn push(&mut self, a: ZipAnomaly) {
        let rejects = matches!(a, ZipAnomaly::TorchRejects { .. });
        if rejects
            || matches!(
                a,
                ZipAnomaly::OutsidePrefix { .. } | ZipAnomaly::NonUtf8Name { .. }
            )
        {
            self.torch_ok = false;
        }
        // Archive-level rejections are always kept; per-entry ones count against the cap.
        let always = matches!(a, ZipAnomaly::TorchRejects { entry: None, .. });
        if always || self.list.len() < self.max {
            self.list.push(a);
        } else {
            self.omitted += 1;
        }
    }

    fn finish(mut self) -> (Vec<ZipAnomaly>, bool) {
        if self.omitted > 0 {
            self.list.push(ZipAnomaly::AnomaliesOmitted {
                count: self.omitted,
            });
        }
        (self.list, self.torch_ok)
    }
}

fn read_local(
    src: &dyn ReadAt,
    len: u64,
    lho: u64,
    name_hint: usize,
) -> Result<Option<LocalHeader>, ZipError> {
    if !within(lho.checked_add(LOCAL_LEN), len) {
        return Ok(None);
    }
    let want = (LOCAL_LEN + name_hint as u64).min(len - lho);
    let buf = read_vec(src, lho, want)?;
    let name_len = le16(&buf, 26);
    let n = usize::from(name_len);
    let name = match buf.get(30..30 + n) {
        Some(s) => s.to_vec(),
        None => {
            let avail = (n as u64).min(len - lho - LOCAL_LEN);
            read_vec(src, lho + LOCAL_LEN, avail)?
        }
    };
    Ok(Some(LocalHeader {
        signature_ok: le32(&buf, 0) == SIG_LOCAL,
        flags: le16(&buf, 6),
        method: le16(&buf, 8),
        crc32: le32(&buf, 14),
        compressed_size: le32(&buf, 18),
        uncompressed_size: le32(&buf, 22),
        name_len,
        extra_len: le16(&buf, 28),
        name,
    }))
}

/// torch's `getAllRecords` check: the name, copied into a 512-byte C buffer, must start with
/// `<prefix>/` under `strncmp`.
fn torch_lists_under_prefix(name: &[u8], prefix_slash: &[u8]) -> bool {
    let buf = &name[..name.len().min(TORCH_NAME_BUF)];
    for (i, &p) in prefix_slash.iter().enumerate() {
        let b = buf.get(i).copied().unwrap_or(0);
        if b != p {
            return false;
        }
        if b == 0 {
            return true;
        }
    }
    true
}

/// What `torch.load` does with the record name: `getAllRecords` copies it into a 512-byte C
/// buffer and drops the prefix, then pybind11 decodes it as strict UTF-8.
fn torch_listed_name_is_utf8(name: &[u8], prefix_slash_len: usize) -> bool {
    let listed = c_string(&name[..name.len().min(TORCH_NAME_BUF)]);
    std::str::from_utf8(listed.get(prefix_slash_len..).unwrap_or(&[])).is_ok()
}

fn c_string(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

enum Plan {
    Empty,
    Stored { offset: u64, len: u64 },
    Deflate { offset: u64, comp: u64, uncomp: u64 },
}

enum InflateEnd {
    /// The stream ended where it should.
    Ended,
    /// More output than declared (or no end marker once the declared size is reached); torch
    /// keeps the declared prefix.
    Overflow,
    /// Corrupt or cut-short stream.
    Broken,
}

impl<'a> ZipArchive<'a> {
    /// Opens an archive the way torch (miniz) does.
    ///
    /// Fails only when neither miniz nor Python's `zipfile` can read a central directory, when
    /// a [`ZipLimits`] value is exceeded, or on I/O errors. Everything else, including archives
    /// torch itself refuses, opens and is reported through [`ZipArchive::anomalies`] (see
    /// [`ZipArchive::torch_can_open`]).
    pub fn open(src: &'a dyn ReadAt, limits: ZipLimits) -> Result<Self, ZipError> {
        let len = src.len();
        if len < EOCD_LEN {
            return Err(ZipError::TooSmall(len));
        }
        let mut sink = Sink::new(limits.max_anomalies);
        let mut first = [0u8; 4];
        src.read_exact_at(0, &mut first)?;
        if !looks_like_zip(&first) {
            sink.push(ZipAnomaly::NotZipMagic);
        }
        let scan = scan_eocd(src, len)?;
        if scan.all.len() > 1 || scan.miniz != scan.python {
            sink.push(ZipAnomaly::EndRecordAmbiguity {
                offsets: scan
                    .all
                    .iter()
                    .rev()
                    .take(MAX_LISTED)
                    .rev()
                    .copied()
                    .collect(),
                miniz: scan.miniz,
                python: scan.python,
            });
        }
        let python = match scan.python {
            Some(p) => python_tail(src, p)?,
            None => None,
        };

        let miniz = match scan.miniz {
            None => Err(Fail::Torch(format!(
                "failed finding central directory (no end record in the {} bytes miniz searches)",
                len - scan.miniz_low
            ))),
            Some(eocd) => miniz_tail(src, len, eocd, &mut sink)
                .and_then(|t| parse_miniz(src, len, &t, &limits, &mut sink).map(|p| (t, p))),
        };
        let (tail, parsed, python_view) = match miniz {
            Ok((t, p)) => {
                let py_start = python.as_ref().map(|(_, s)| *s);
                let py_size = python.as_ref().map(|(pt, _)| pt.cd_size);
                if py_start != Some(t.cd_offset) || py_size != Some(t.cd_size) {
                    sink.push(ZipAnomaly::CentralDirectoryLocation {
                        declared: t.cd_offset,
                        python_zipfile: py_start,
                    });
                }
                (t, p, false)
            }
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Torch(reason)) => {
                let Some((pt, start)) = python else {
                    return Err(match scan.miniz {
                        None => ZipError::NoEndOfCentralDirectory {
                            searched: len - scan.miniz_low.min(len.saturating_sub(PYTHON_WINDOW)),
                        },
                        Some(_) => ZipError::BadCentralDirectory {
                            reason,
                            python_zipfile_offset: None,
                        },
                    });
                };
                match parse_python(src, &pt, start, &limits) {
                    Ok(p) => {
                        sink.push(ZipAnomaly::TorchRejects {
                            entry: None,
                            reason,
                        });
                        if start != pt.cd_offset {
                            sink.push(ZipAnomaly::CentralDirectoryLocation {
                                declared: pt.cd_offset,
                                python_zipfile: Some(start),
                            });
                        }
                        (
                            Tail {
                                cd_offset: start,
                                ..pt
                            },
                            p,
                            true,
                        )
                    }
                    Err(Fail::Fatal(e)) => return Err(e),
                    Err(Fail::Torch(_)) => {
                        return Err(ZipError::BadCentralDirectory {
                            reason,
                            python_zipfile_offset: Some(start),
                        })
                    }
                }
            }
        };

        let mut zip = ZipArchive {
            src,
            limits,
            file_len: len,
            entries: parsed.entries,
            torch_count: parsed.torch_count,
            sorted: Vec::new(),
            by_name: Vec::new(),
            nul_named: Vec::new(),
            prefix: None,
            anomalies: Vec::new(),
            torch_ok: true,
            eocd_offset: tail.eocd,
            cd_offset: tail.cd_offset,
            cd_size: tail.cd_size,
            zip64: tail.zip64.is_some(),
            python_view,
        };
        zip.analyse(&tail, &mut sink)?;
        let (anomalies, torch_ok) = sink.finish();
        zip.anomalies = anomalies;
        zip.torch_ok = torch_ok;
        Ok(zip)
    }

    /// Reads local headers, builds the lookup indices and records per-entry and layout
    /// anomalies.
    fn analyse(&mut self, tail: &Tail, sink: &mut Sink) -> Result<(), ZipError> {
        let len = self.file_len;
        for e in &mut self.entries {
            e.local_header = read_local(self.src, len, e.local_header_offset, e.name.len())?;
            e.data_offset = e.local_header.as_ref().and_then(|l| {
                e.local_header_offset
                    .checked_add(LOCAL_LEN + u64::from(l.name_len) + u64::from(l.extra_len))
            });
        }
        self.sorted = miniz_sorted_index(&self.entries, self.torch_count);
        self.by_name = (0..self.entries.len()).map(|i| i as u32).collect();
        let entries = &self.entries;
        let name = |i: u32| {
            entries
                .get(i as usize)
                .map_or(&[][..], |e| e.name.as_slice())
        };
        self.by_name
            .sort_by(|&a, &b| miniz_compare(name(a), name(b)).then(a.cmp(&b)));
        self.nul_named = (0..self.entries.len() as u32)
            .filter(|&i| name(i).contains(&0))
            .collect();

        // torch's prefix: the bytes before the first '/' of entry 0.
        if self.torch_count == 0 {
            sink.push(ZipAnomaly::TorchRejects {
                entry: None,
                reason: "archive does not contain any files".into(),
            });
        } else if let Some(first) = self.entries.first() {
            match first.name.iter().position(|&b| b == b'/') {
                Some(p) => self.prefix = Some(first.name[..p].to_vec()),
                None => sink.push(ZipAnomaly::TorchRejects {
                    entry: Some(0),
                    reason: format!(
                        "file in archive is not in a subdirectory: {:?}",
                        first.name_lossy()
                    ),
                }),
            }
        }

        self.entry_anomalies(sink);
        self.duplicate_anomalies(sink);
        self.layout_anomalies(tail, sink);
        Ok(())
    }

    fn entry_anomalies(&self, sink: &mut Sink) {
        let len = self.file_len;
        let prefix_slash = self.prefix.as_ref().map(|p| {
            let mut v = p.clone();
            v.push(b'/');
            v
        });
        for e in &self.entries {
            let i = e.index;
            if e.name.contains(&0) {
                sink.push(ZipAnomaly::NameContainsNul { entry: i });
            }
            if let (Some(ps), false) = (&prefix_slash, e.hidden_from_torch) {
                if !torch_lists_under_prefix(&e.name, ps) {
                    sink.push(ZipAnomaly::OutsidePrefix {
                        entry: i,
                        name: e.name_lossy().into_owned(),
                        prefix: lossy(&ps[..ps.len() - 1]),
                    });
                } else if !torch_listed_name_is_utf8(&e.name, ps.len()) {
                    sink.push(ZipAnomaly::NonUtf8Name { entry: i });
                }
            }
            if e.method != METHOD_STORED && e.method != METHOD_DEFLATE {
                sink.push(ZipAnomaly::UnsupportedMethod {
                    entry: i,
                    method: e.method,
                });
            }
            if e.is_encrypted() {
                sink.push(ZipAnomaly::Encrypted { entry: i });
            }
            if e.flags & (FLAG_PATCH | FLAG_MASKED_LOCAL) != 0 {
                sink.push(ZipAnomaly::UnsupportedFlags {
                    entry: i,
                    flags: e.flags,
                });
            }
            if e.flags & !KNOWN_FLAGS != 0 {
                sink.push(ZipAnomaly::UnknownFlags {
                    entry: i,
                    flags: e.flags,
                });
            }
            if let Some(detail) = e.stat_error {
                sink.push(ZipAnomaly::MalformedExtraField { entry: i, detail });
            }
            if e.multi_zip64 {
                sink.push(ZipAnomaly::MultipleZip64Extra { entry: i });
            }
            let skips = e.is_directory() || e.compressed_size == 0;
            if skips && (e.uncompressed_size > 0 || e.compressed_size > 0) {
                sink.push(ZipAnomaly::TorchSkipsData { entry: i });
            }
            if e.method == METHOD_STORED && e.compressed_size != e.uncompressed_size {
                sink.push(ZipAnomaly::StoredSizeMismatch {
                    entry: i,
                    compressed: e.compressed_size,
                    uncompressed: e.uncompressed_size,
                });
            }
            match &e.local_header {
                Some(l) if l.signature_ok => {
                    if l.name != e.name {
                        sink.push(ZipAnomaly::LocalNameMismatch {
                            entry: i,
                            central: e.name_lossy().into_owned(),
                            local: lossy(&l.name),
                        });
                    }
                    let mut fields = vec![
                        (
                            "compression method",
                            u64::from(e.method),
                            u64::from(l.method),
                        ),
                        (
                            "encryption flag",
                            u64::from(e.flags & FLAG_ENCRYPTED),
                            u64::from(l.flags & FLAG_ENCRYPTED),
                        ),
                    ];
                    if l.flags & FLAG_DATA_DESCRIPTOR == 0 {
                        fields.push(("CRC-32", u64::from(e.crc32), u64::from(l.crc32)));
                        if u64::from(l.compressed_size) != SENTINEL32 {
                            fields.push((
                                "compressed size",
                                e.compressed_size,
                                u64::from(l.compressed_size),
                            ));
                        }
                        if u64::from(l.uncompressed_size) != SENTINEL32 {
                            fields.push((
                                "uncompressed size",
                                e.uncompressed_size,
                                u64::from(l.uncompressed_size),
                            ));
                        }
                    }
                    for (field, central, local) in fields {
                        if central != local {
                            sink.push(ZipAnomaly::LocalHeaderMismatch {
                                entry: i,
                                field,
                                central,
                                local,
                            });
                        }
                    }
                }
                _ => sink.push(ZipAnomaly::BadLocalHeader {
                    entry: i,
                    offset: e.local_header_offset,
                }),
            }
            if let Some(start) = e.data_offset {
                let end = start.checked_add(e.torch_read_len());
                let reads_nothing = skips && e.uncompressed_size == 0;
                if !reads_nothing && !within(end, len) {
                    sink.push(ZipAnomaly::DataPastEnd {
                        entry: i,
                        end: end.unwrap_or(u64::MAX),
                        file_len: len,
                    });
                }
            }
        }
    }

    fn duplicate_anomalies(&self, sink: &mut Sink) {
        let mut start = 0;
        while start < self.by_name.len() {
            let first = self.entry_at(self.by_name[start]);
            let mut end = start + 1;
            while end < self.by_name.len()
                && miniz_compare(&self.entry_at(self.by_name[end]).name, &first.name)
                    == Ordering::Equal
            {
                end += 1;
            }
            if end - start > 1 {
                let mut group: Vec<&ZipEntry> = self.by_name[start..end]
                    .iter()
                    .map(|&i| self.entry_at(i))
                    .collect();
                group.sort_by_key(|e| e.index);
                let entries: Vec<usize> = group.iter().map(|e| e.index).take(MAX_LISTED).collect();
                let torch_reads = if first.name.contains(&0) {
                    None
                } else {
                    self.miniz_locate_raw(&first.name).map(|e| e.index)
                };
                if group.iter().all(|e| e.name == first.name) {
                    sink.push(ZipAnomaly::DuplicateName {
                        name: first.name_lossy().into_owned(),
                        count: group.len(),
                        entries,
                        torch_reads,
                    });
                } else {
                    let mut names: Vec<String> = Vec::new();
                    for e in &group {
                        let n = e.name_lossy().into_owned();
                        if !names.contains(&n) && names.len() < MAX_LISTED {
                            names.push(n);
                        }
                    }
                    sink.push(ZipAnomaly::CaseCollision {
                        names,
                        count: group.len(),
                        entries,
                        torch_reads,
                    });
                }
            }
            start = end;
        }
    }

    fn layout_anomalies(&self, tail: &Tail, sink: &mut Sink) {
        let len = self.file_len;
        let cd_start = self.cd_offset;
        let cd_end = self.cd_offset.saturating_add(self.cd_size);
        // Each entry's extent as torch reads it: local header through the end of its data.
        let mut spans: Vec<(u64, u64, usize)> = self
            .entries
            .iter()
            .filter(|e| e.local_header_offset < len)
            .map(|e| {
                let start = e.local_header_offset;
                let end = match e.data_offset {
                    Some(d) => d.saturating_add(e.torch_read_len()),
                    None => start.saturating_add(LOCAL_LEN),
                };
                (start, end.min(len).max(start), e.index)
            })
            .collect();
        spans.sort_unstable();
        let mut covered_to = 0u64;
        let mut owner: Option<usize> = None;
        for &(start, end, i) in &spans {
            if start < cd_end && end > cd_start {
                sink.push(ZipAnomaly::OverlapsCentralDirectory { entry: i });
            }
            match owner {
                None => {
                    if start > 0 {
                        sink.push(ZipAnomaly::DataBeforeFirstEntry {
                            len: start.min(len),
                        });
                    }
                }
                Some(o) => {
                    if start < covered_to {
                        sink.push(ZipAnomaly::OverlappingEntries {
                            first: o,
                            second: i,
                        });
                    } else if start > covered_to && !self.is_descriptor_gap(o, start - covered_to) {
                        sink.push(ZipAnomaly::GapBetweenEntries {
                            offset: covered_to,
                            len: start - covered_to,
                        });
                    }
                }
            }
            if owner.is_none() || end > covered_to {
                covered_to = end.max(covered_to);
                owner = Some(i);
            }
        }
        match owner {
            None if cd_start > 0 => sink.push(ZipAnomaly::DataBeforeFirstEntry { len: cd_start }),
            Some(o)
                if cd_start > covered_to && !self.is_descriptor_gap(o, cd_start - covered_to) =>
            {
                sink.push(ZipAnomaly::GapBeforeCentralDirectory {
                    offset: covered_to,
                    len: cd_start - covered_to,
                })
            }
            _ => {}
        }

        // Between the central directory and the end record.
        let eocd = tail.eocd;
        let mut gap = |from: u64, to: u64| {
            if to > from {
                sink.push(ZipAnomaly::GapAfterCentralDirectory {
                    offset: from,
                    len: to - from,
                });
            }
        };
        let mut inconsistent = Vec::new();
        match tail.zip64 {
            Some((rec, rec_len)) => {
                let rec_end = rec.saturating_add(rec_len);
                let locator = eocd.saturating_sub(Z64_LOCATOR_LEN);
                gap(cd_end, rec);
                gap(rec_end, locator);
                if rec < cd_end || rec_end > locator {
                    inconsistent.push(format!(
                        "the zip64 record at {rec}..{rec_end} overlaps the central directory \
                         ({cd_start}..{cd_end}) or the locator at {locator}"
                    ));
                }
            }
            None => {
                gap(cd_end, eocd);
                if eocd < cd_end {
                    inconsistent.push(format!(
                        "the central directory ({cd_start}..{cd_end}) overlaps the end record at \
                         {eocd}"
                    ));
                }
            }
        }
        for detail in inconsistent {
            sink.push(ZipAnomaly::EndRecordInconsistent { detail });
        }
        let after = eocd + EOCD_LEN;
        let available = len - after;
        if tail.comment_len > 0 {
            sink.push(ZipAnomaly::Comment {
                offset: after,
                len: tail.comment_len.min(available),
            });
        }
        if tail.comment_len > available {
            sink.push(ZipAnomaly::CommentPastEnd {
                declared: tail.comment_len,
                available,
            });
        } else if tail.comment_len < available {
            sink.push(ZipAnomaly::TrailingData {
                offset: after + tail.comment_len,
                len: available - tail.comment_len,
            });
        }
    }

    /// Whether a gap of `gap` bytes after entry `owner` is its data descriptor (12-24 bytes,
    /// with or without signature, 32- or 64-bit sizes).
    fn is_descriptor_gap(&self, owner: usize, gap: u64) -> bool {
        self.entries.get(owner).is_some_and(|e| {
            e.flags & FLAG_DATA_DESCRIPTOR != 0 && matches!(gap, 12 | 16 | 20 | 24)
        })
    }

    fn entry_at(&self, i: u32) -> &ZipEntry {
        // Indices come from `0..entries.len()`.
        &self.entries[i as usize]
    }

    /// `mz_zip_locate_file_binary_search` over miniz's sorted index, without C-string
    /// truncation of the key.
    fn miniz_locate_raw(&self, key: &[u8]) -> Option<&ZipEntry> {
        let (mut l, mut h) = (0i64, self.sorted.len() as i64 - 1);
        while l <= h {
            let m = l + ((h - l) >> 1);
            let e = self.entry_at(*self.sorted.get(m as usize)?);
            match miniz_compare(&e.name, key) {
                Ordering::Equal => return Some(e),
                Ordering::Less => l = m + 1,
                Ordering::Greater => h = m - 1,
            }
        }
        None
    }

    // -----------------------------------------------------------------------------------------
    // Public queries.

    /// All central-directory records, in directory order (records hidden from torch last).
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// Everything unusual found while opening (and nothing found later by reads; see
    /// [`EntryData::anomalies`] and [`ZipArchive::verify_crc`]).
    pub fn anomalies(&self) -> &[ZipAnomaly] {
        &self.anomalies
    }

    /// Whether `torch.load` can open this archive: no [`ZipAnomaly::TorchRejects`],
    /// [`ZipAnomaly::OutsidePrefix`] or [`ZipAnomaly::NonUtf8Name`] (the last two fail
    /// `torch.load` when it lists the records) was recorded. Per-entry read failures (encryption, bad local header, ...) do not count; they
    /// show up when that record is read. When `false`, the entries are still the best available
    /// view: miniz's where it parses, Python's `zipfile`'s otherwise.
    pub fn torch_can_open(&self) -> bool {
        self.torch_ok
    }

    /// Whether the entries come from Python's `zipfile` view because miniz could not read the
    /// central directory at all (prepended data without adjusted offsets, miniz's end-record
    /// search bug, entry-count mismatches, ...).
    pub fn is_python_fallback(&self) -> bool {
        self.python_view
    }

    /// torch's archive prefix: the bytes of central-directory entry 0's name before its first
    /// `/` (for example `archive` or the saved file's stem). `None` if torch cannot determine
    /// one (no entries, or no `/` in the first name).
    pub fn prefix(&self) -> Option<&[u8]> {
        self.prefix.as_deref()
    }

    /// The record torch returns for `record` (as in `zip_file.get_record("data.pkl")`):
    /// `<prefix>/<record>`, cut at the first NUL, found by miniz's case-insensitive binary
    /// search over its heap-sorted index. With duplicate or case-colliding names, this is the
    /// copy torch loads.
    pub fn torch_lookup(&self, record: impl AsRef<[u8]>) -> Option<&ZipEntry> {
        self.locate(self.torch_key(record.as_ref())?)
    }

    /// Every entry that could answer `record` under torch's prefix, i.e. [`Self::lookup_all`]
    /// of `<prefix>/<record>`.
    pub fn torch_lookup_all(&self, record: impl AsRef<[u8]>) -> Vec<&ZipEntry> {
        match self.torch_key(record.as_ref()) {
            Some(key) => self.lookup_all(key),
            None => Vec::new(),
        }
    }

    /// `mz_zip_reader_locate_file(name, flags = 0)`: the entry miniz returns for a full name,
    /// matched case-insensitively (ASCII only) and cut at the first NUL like a C string.
    /// Records hidden from torch are never returned.
    pub fn locate(&self, name: impl AsRef<[u8]>) -> Option<&ZipEntry> {
        self.miniz_locate_raw(c_string(name.as_ref()))
    }

    /// Every entry whose full name equals `name` ignoring ASCII case, including records hidden
    /// from torch. Also included: entries whose name becomes `name` when cut at a NUL byte
    /// (Python's `zipfile` reading). Results are in central-directory order. Scan all of them.
    pub fn lookup_all(&self, name: impl AsRef<[u8]>) -> Vec<&ZipEntry> {
        let key = name.as_ref();
        let lo = self
            .by_name
            .partition_point(|&i| miniz_compare(&self.entry_at(i).name, key) == Ordering::Less);
        let hi = self
            .by_name
            .partition_point(|&i| miniz_compare(&self.entry_at(i).name, key) != Ordering::Greater);
        let mut out: Vec<&ZipEntry> = self.by_name[lo..hi]
            .iter()
            .map(|&i| self.entry_at(i))
            .collect();
        for &i in &self.nul_named {
            let e = self.entry_at(i);
            if miniz_compare(c_string(&e.name), key) == Ordering::Equal
                && !out.iter().any(|o| o.index == e.index)
            {
                out.push(e);
            }
        }
        out.sort_by_key(|e| e.index);
        out
    }

    fn torch_key(&self, record: &[u8]) -> Option<Vec<u8>> {
        let prefix = self.prefix.as_ref()?;
        let mut key = Vec::with_capacity(prefix.len() + 1 + record.len());
        key.extend_from_slice(prefix);
        key.push(b'/');
        key.extend_from_slice(record);
        Some(key)
    }

    /// Length of the byte source.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Offset of the end-of-central-directory record in use.
    pub fn end_of_central_directory_offset(&self) -> u64 {
        self.eocd_offset
    }

    /// `(offset, size)` of the central directory that was read.
    pub fn central_directory(&self) -> (u64, u64) {
        (self.cd_offset, self.cd_size)
    }

    /// Whether a zip64 end record was used.
    pub fn is_zip64(&self) -> bool {
        self.zip64
    }

    /// The limits this archive was opened with.
    pub fn limits(&self) -> &ZipLimits {
        &self.limits
    }

    // -----------------------------------------------------------------------------------------
    // Reading entry data.

    fn unreadable(e: &ZipEntry, reason: impl Into<String>) -> ZipError {
        ZipError::EntryUnreadable {
            index: e.index,
            name: e.name_lossy().into_owned(),
            reason: reason.into(),
        }
    }

    /// torch's `getRecord` checks, in miniz's order, and the byte range it would read.
    fn plan(&self, e: &ZipEntry) -> Result<Plan, ZipError> {
        if let Some(why) = e.stat_error {
            return Err(Self::unreadable(
                e,
                format!("retrieving file meta-data fails: {why}"),
            ));
        }
        if e.method != METHOD_STORED && e.method != METHOD_DEFLATE {
            return Err(Self::unreadable(
                e,
                format!("unsupported method {}", e.method),
            ));
        }
        if e.is_encrypted() {
            return Err(Self::unreadable(e, "unsupported encryption"));
        }
        if e.flags & FLAG_PATCH != 0 {
            return Err(Self::unreadable(e, "unsupported feature (patch data)"));
        }
        if e.is_directory() || e.compressed_size == 0 {
            return if e.uncompressed_size == 0 {
                Ok(Plan::Empty)
            } else {
                Err(Self::unreadable(
                    e,
                    "miniz extracts nothing for a directory or zero-compressed-size entry; torch \
                     would return uninitialised memory",
                ))
            };
        }
        let (Some(l), Some(offset)) = (&e.local_header, e.data_offset) else {
            return Err(Self::unreadable(e, "local header lies outside the file"));
        };
        if !l.signature_ok {
            return Err(Self::unreadable(
                e,
                "invalid header or archive is corrupted (no local header signature)",
            ));
        }
        if !within(offset.checked_add(e.compressed_size), self.file_len) {
            return Err(Self::unreadable(
                e,
                "invalid header or archive is corrupted (data runs past the end)",
            ));
        }
        Ok(if e.method == METHOD_STORED {
            Plan::Stored {
                offset,
                len: e.uncompressed_size,
            }
        } else {
            Plan::Deflate {
                offset,
                comp: e.compressed_size,
                uncomp: e.uncompressed_size,
            }
        })
    }

    /// `(offset, length)` of the bytes torch returns for a stored entry, for raw reads or
    /// mmap. `None` for deflate entries and for entries torch cannot read.
    pub fn entry_range(&self, entry: &ZipEntry) -> Option<(u64, u64)> {
        match self.plan(entry).ok()? {
            Plan::Stored { offset, len } => {
                (offset.checked_add(len)? <= self.file_len).then_some((offset, len))
            }
            Plan::Empty if entry.method == METHOD_STORED => entry
                .data_offset
                .filter(|o| *o <= self.file_len)
                .map(|o| (o, 0)),
            _ => None,
        }
    }

    /// The bytes torch's `getRecord` returns for `entry`, up to `max_bytes` (and
    /// [`ZipLimits::max_entry_bytes`]).
    ///
    /// Errors where torch raises, when a limit would be exceeded (checked before allocating),
    /// and when torch would return partly uninitialised memory (corrupt deflate; see
    /// [`Self::read_entry_detailed`] for the part it decodes).
    pub fn read_entry(&self, entry: &ZipEntry, max_bytes: u64) -> Result<Vec<u8>, ZipError> {
        let d = self.read_entry_detailed(entry, max_bytes)?;
        if d.complete {
            Ok(d.data)
        } else {
            Err(Self::unreadable(
                entry,
                format!(
                    "the deflate stream is corrupt after {} bytes; torch loads those bytes \
                     followed by uninitialised memory",
                    d.data.len()
                ),
            ))
        }
    }

    /// Like [`Self::read_entry`], but also returns the decoded prefix of a corrupt deflate
    /// stream (what torch loads before the uninitialised part) and the anomalies seen while
    /// reading (bad CRC, over-long or broken deflate streams).
    pub fn read_entry_detailed(
        &self,
        entry: &ZipEntry,
        max_bytes: u64,
    ) -> Result<EntryData, ZipError> {
        let cap = max_bytes.min(self.limits.max_entry_bytes);
        let too_big = |value: u64| ZipError::LimitExceeded {
            what: "entry size",
            value,
            limit: cap,
        };
        let mut anomalies = Vec::new();
        let (data, complete) = match self.plan(entry)? {
            Plan::Empty => {
                return Ok(EntryData {
                    data: Vec::new(),
                    complete: true,
                    anomalies,
                })
            }
            Plan::Stored { offset, len } => {
                if len > cap {
                    return Err(too_big(len));
                }
                if !within(offset.checked_add(len), self.file_len) {
                    return Err(Self::unreadable(
                        entry,
                        "file read failed (stored data runs past the end)",
                    ));
                }
                (read_vec(self.src, offset, len)?, true)
            }
            Plan::Deflate {
                offset,
                comp,
                uncomp,
            } => {
                if uncomp > cap {
                    return Err(too_big(uncomp));
                }
                self.check_ratio(comp, uncomp)?;
                let (data, end) = self.inflate(entry, offset, comp, uncomp)?;
                let produced = data.len() as u64;
                match end {
                    InflateEnd::Ended if produced != uncomp => {
                        return Err(Self::unreadable(
                            entry,
                            format!(
                                "unexpected decompressed size ({produced} bytes, {uncomp} \
                                 declared)"
                            ),
                        ))
                    }
                    InflateEnd::Ended => (data, true),
                    InflateEnd::Overflow => {
                        anomalies.push(ZipAnomaly::DeflateLongerThanDeclared {
                            entry: entry.index,
                            declared: uncomp,
                        });
                        (data, true)
                    }
                    InflateEnd::Broken => {
                        anomalies.push(ZipAnomaly::DeflateTruncated {
                            entry: entry.index,
                            decoded: produced,
                            declared: uncomp,
                        });
                        (data, false)
                    }
                }
            }
        };
        if complete {
            let mut crc = Crc::new();
            crc.update(&data);
            if crc.sum() != entry.crc32 {
                anomalies.push(ZipAnomaly::BadCrc {
                    entry: entry.index,
                    expected: entry.crc32,
                    actual: crc.sum(),
                });
            }
        }
        Ok(EntryData {
            data,
            complete,
            anomalies,
        })
    }

    /// Computes the CRC-32 of the bytes torch reads for `entry`, streaming them (no size
    /// limit; the deflate ratio limit still applies). Returns [`ZipAnomaly::BadCrc`] on a
    /// mismatch. torch itself never checks CRCs.
    pub fn verify_crc(&self, entry: &ZipEntry) -> Result<Option<ZipAnomaly>, ZipError> {
        let mut crc = Crc::new();
        match self.plan(entry)? {
            Plan::Empty => {}
            Plan::Stored { offset, len } => {
                if !within(offset.checked_add(len), self.file_len) {
                    return Err(Self::unreadable(
                        entry,
                        "file read failed (stored data runs past the end)",
                    ));
                }
                let mut buf = vec![0u8; clamp_usize(len.min(IO_CHUNK))];
                let mut done = 0u64;
                while done < len {
                    let n = clamp_usize((len - done).min(buf.len() as u64));
                    self.src.read_exact_at(offset + done, &mut buf[..n])?;
                    crc.update(&buf[..n]);
                    done += n as u64;
                }
            }
            Plan::Deflate { .. } => {
                let d = self.read_entry_detailed(entry, self.limits.max_entry_bytes)?;
                if !d.complete {
                    return Err(Self::unreadable(
                        entry,
                        format!("the deflate stream is corrupt after {} bytes", d.data.len()),
                    ));
                }
                crc.update(&d.data);
            }
        }
        let actual = crc.sum();
        Ok((actual != entry.crc32).then_some(ZipAnomaly::BadCrc {
            entry: entry.index,
            expected: entry.crc32,
            actual,
        }))
    }

    fn check_ratio(&self, comp: u64, uncomp: u64) -> Result<(), ZipError> {
        let ratio = self.limits.max_compression_ratio;
        if uncomp > comp.saturating_mul(ratio) {
            return Err(ZipError::LimitExceeded {
                what: "compression ratio",
                value: uncomp / comp.max(1),
                limit: ratio,
            });
        }
        Ok(())
    }

    /// Inflates the raw deflate data at `offset` the way `mz_zip_reader_extract_to_mem` does:
    /// tinfl in non-wrapping mode, writing straight into an output buffer of the declared size.
    /// A first `decompress` call with `FlushDecompress::Finish` makes flate2's miniz_oxide
    /// backend (a port of tinfl) run that same single-shot mode, including its refusal of
    /// back-references before the start of the output. A streaming decoder would read zeros
    /// there instead.
    ///
    /// The buffer has one spare byte, so an over-long stream (torch keeps the first `uncomp`
    /// bytes) can be told from an exact one. Input is capped at `uncomp + uncomp/16 + 64 KiB`,
    /// which is more than any encoder needs. Only a stream padded past that (for example with
    /// empty blocks) is reported as broken where torch might still decode it.
    fn inflate(
        &self,
        entry: &ZipEntry,
        offset: u64,
        comp: u64,
        uncomp: u64,
    ) -> Result<(Vec<u8>, InflateEnd), ZipError> {
        let in_len = comp.min(uncomp.saturating_add(uncomp / 16).saturating_add(IO_CHUNK));
        let input = read_vec(self.src, offset, in_len).map_err(|err| {
            Self::unreadable(entry, format!("decompression failed (read error: {err})"))
        })?;
        let mut out = vec![0u8; clamp_usize(uncomp.saturating_add(1))];
        let mut d = Decompress::new(false);
        let res = d.decompress(&input, &mut out, FlushDecompress::Finish);
        let produced = d.total_out().min(out.len() as u64);
        out.truncate(clamp_usize(produced.min(uncomp)));
        let end = if produced > uncomp {
            InflateEnd::Overflow
        } else if matches!(res, Ok(Status::StreamEnd)) {
            InflateEnd::Ended
        } else if produced == uncomp {
            // torch's buffer is full, so everything it returns was decoded: the stream simply
            // has no end marker where expected, which torch does not notice.
            InflateEnd::Overflow
        } else {
            InflateEnd::Broken
        };
        Ok((out, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn crc(data: &[u8]) -> u32 {
        let mut c = Crc::new();
        c.update(data);
        c.sum()
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// One entry for the test writer: every field can be made inconsistent on purpose.
    #[derive(Clone)]
    struct TE {
        name: Vec<u8>,
        data: Vec<u8>,
        payload: Vec<u8>,
        method: u16,
        flags: u16,
        time: u16,
        crc: u32,
        comp: u32,
        uncomp: u32,
        lname: Vec<u8>,
        lextra: Vec<u8>,
        cextra: Vec<u8>,
        ext_attr: u32,
        lho: Option<u32>,
        pad_after: Vec<u8>,
    }

    fn te(name: impl AsRef<[u8]>, data: &[u8]) -> TE {
        let name = name.as_ref().to_vec();
        TE {
            lname: name.clone(),
            name,
            data: data.to_vec(),
            payload: data.to_vec(),
            method: 0,
            flags: 0,
            time: 0,
            crc: crc(data),
            comp: data.len() as u32,
            uncomp: data.len() as u32,
            lextra: Vec::new(),
            cextra: Vec::new(),
            ext_attr: 0,
            lho: None,
            pad_after: Vec::new(),
        }
    }

    impl TE {
        fn deflated(mut self) -> Self {
            self.payload = deflate(&self.data);
            self.comp = self.payload.len() as u32;
            self.method = METHOD_DEFLATE;
            self
        }
        fn with(mut self, f: impl FnOnce(&mut TE)) -> Self {
            f(&mut self);
            self
        }
    }

    #[derive(Clone, Default)]
    struct Opts {
        /// Bytes written before the first entry; offsets account for them.
        prefix: Vec<u8>,
        comment: Vec<u8>,
        trailing: Vec<u8>,
        count: Option<u64>,
        on_disk: Option<u64>,
        cd_offset: Option<u64>,
        cd_size: Option<u64>,
        zip64: bool,
        /// Which entries the central directory lists (default: all).
        cd_select: Option<Vec<usize>>,
        extra_records: Vec<Vec<u8>>,
    }

    struct Built {
        bytes: Vec<u8>,
        lhos: Vec<u64>,
        cd_offset: u64,
        cd_len: u64,
        eocd: u64,
    }

    fn central_record(e: &TE, lho: u32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(SIG_CENTRAL.to_le_bytes());
        r.extend(20u16.to_le_bytes());
        r.extend(20u16.to_le_bytes());
        r.extend(e.flags.to_le_bytes());
        r.extend(e.method.to_le_bytes());
        r.extend(e.time.to_le_bytes());
        r.extend(0u16.to_le_bytes());
        r.extend(e.crc.to_le_bytes());
        r.extend(e.comp.to_le_bytes());
        r.extend(e.uncomp.to_le_bytes());
        r.extend((e.name.len() as u16).to_le_bytes());
        r.extend((e.cextra.len() as u16).to_le_bytes());
        r.extend(0u16.to_le_bytes());
        r.extend(0u16.to_le_bytes());
        r.extend(0u16.to_le_bytes());
        r.extend(e.ext_attr.to_le_bytes());
        r.extend(lho.to_le_bytes());
        r.extend(&e.name);
        r.extend(&e.cextra);
        r
    }

    fn eocd_record(on_disk: u16, total: u16, size: u32, offset: u32, comment_len: u16) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(SIG_EOCD.to_le_bytes());
        r.extend([0u8; 4]);
        r.extend(on_disk.to_le_bytes());
        r.extend(total.to_le_bytes());
        r.extend(size.to_le_bytes());
        r.extend(offset.to_le_bytes());
        r.extend(comment_len.to_le_bytes());
        r
    }

    fn build(es: &[TE], o: &Opts) -> Built {
        let mut out = o.prefix.clone();
        let mut lhos = Vec::new();
        for e in es {
            lhos.push(out.len() as u64);
            out.extend(SIG_LOCAL.to_le_bytes());
            out.extend(20u16.to_le_bytes());
            out.extend(e.flags.to_le_bytes());
            out.extend(e.method.to_le_bytes());
            out.extend(e.time.to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(e.crc.to_le_bytes());
            out.extend(e.comp.to_le_bytes());
            out.extend(e.uncomp.to_le_bytes());
            out.extend((e.lname.len() as u16).to_le_bytes());
            out.extend((e.lextra.len() as u16).to_le_bytes());
            out.extend(&e.lname);
            out.extend(&e.lextra);
            out.extend(&e.payload);
            out.extend(&e.pad_after);
        }
        let mut cd = Vec::new();
        let select: Vec<usize> = o
            .cd_select
            .clone()
            .unwrap_or_else(|| (0..es.len()).collect());
        for &i in &select {
            cd.extend(central_record(&es[i], es[i].lho.unwrap_or(lhos[i] as u32)));
        }
        for r in &o.extra_records {
            cd.extend(r);
        }
        let cd_offset = out.len() as u64;
        out.extend(&cd);
        let n = o
            .count
            .unwrap_or((select.len() + o.extra_records.len()) as u64);
        let on_disk = o.on_disk.unwrap_or(n);
        let declared_cd = o.cd_offset.unwrap_or(cd_offset);
        let declared_size = o.cd_size.unwrap_or(cd.len() as u64);
        if o.zip64 {
            let rec = out.len() as u64;
            out.extend(SIG_Z64_EOCD.to_le_bytes());
            out.extend(44u64.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend(45u16.to_le_bytes());
            out.extend([0u8; 8]);
            out.extend(on_disk.to_le_bytes());
            out.extend(n.to_le_bytes());
            out.extend(declared_size.to_le_bytes());
            out.extend(declared_cd.to_le_bytes());
            out.extend(SIG_Z64_LOCATOR.to_le_bytes());
            out.extend(0u32.to_le_bytes());
            out.extend(rec.to_le_bytes());
            out.extend(1u32.to_le_bytes());
        }
        let eocd = out.len() as u64;
        let rec = if o.zip64 {
            eocd_record(0xFFFF, 0xFFFF, u32::MAX, u32::MAX, o.comment.len() as u16)
        } else {
            eocd_record(
                on_disk as u16,
                n as u16,
                declared_size as u32,
                declared_cd as u32,
                o.comment.len() as u16,
            )
        };
        out.extend(rec);
        out.extend(&o.comment);
        out.extend(&o.trailing);
        Built {
            bytes: out,
            lhos,
            cd_offset,
            cd_len: cd.len() as u64,
            eocd,
        }
    }

    fn open(src: &dyn ReadAt) -> ZipArchive<'_> {
        ZipArchive::open(src, ZipLimits::default()).unwrap()
    }

    fn has(z: &ZipArchive<'_>, f: impl Fn(&ZipAnomaly) -> bool) -> bool {
        z.anomalies().iter().any(f)
    }

    /// A small torch-style archive.
    fn torch_like(data_pkl: &[u8]) -> Vec<TE> {
        vec![
            te("arch/data.pkl", data_pkl),
            te("arch/byteorder", b"little"),
            te("arch/version", b"3\n"),
        ]
    }

    /// Touches every query on an archive; used by the no-panic tests.
    fn exercise(z: &ZipArchive<'_>) {
        for e in z.entries() {
            let _ = z.read_entry_detailed(e, 1 << 16);
            let _ = z.read_entry(e, 1 << 16);
            let _ = z.verify_crc(e);
            let _ = z.entry_range(e);
            let _ = z.lookup_all(&e.name);
            let _ = z.locate(&e.name);
            let _ = e.name_lossy();
        }
        let _ = z.torch_lookup("data.pkl");
        let _ = z.torch_lookup_all("data.pkl");
        let _ = format!("{z:?}");
        for a in z.anomalies() {
            assert!(!a.message().is_empty());
            let _ = a.entry();
        }
    }

    #[test]
    fn magic() {
        assert!(looks_like_zip(b"PK\x03\x04rest"));
        assert!(!looks_like_zip(b"PK\x05\x06"));
        assert!(!looks_like_zip(b"PK\x03"));
        assert!(!looks_like_zip(b"\x80\x02"));
    }

    #[test]
    fn normal_stored_archive() {
        let es = vec![
            te("archive/data.pkl", b"\x80\x02}q\x00."),
            te("archive/byteorder", b"little"),
            te("archive/data/0", &[1, 2, 3, 4]),
            te("archive/version", b"3\n"),
        ];
        let b = build(&es, &Opts::default());
        let z = open(&b.bytes);
        assert_eq!(z.prefix(), Some(&b"archive"[..]));
        assert!(z.torch_can_open());
        assert!(!z.is_python_fallback() && !z.is_zip64());
        assert!(z.anomalies().is_empty(), "{:?}", z.anomalies());
        assert_eq!(z.central_directory(), (b.cd_offset, b.cd_len));
        assert_eq!(z.end_of_central_directory_offset(), b.eocd);
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(e.index, 0);
        assert_eq!(z.read_entry(e, 1 << 20).unwrap(), es[0].data);
        // miniz's lookup is ASCII-case-insensitive.
        assert_eq!(z.torch_lookup("DATA.PKL").unwrap().index, 0);
        assert!(z.torch_lookup("data.pk").is_none());
        assert!(z.torch_lookup("missing").is_none());
        // Keys are C strings: everything after a NUL is ignored.
        assert_eq!(z.torch_lookup("version\0junk").unwrap().index, 3);
        let d0 = z.torch_lookup("data/0").unwrap();
        assert_eq!(d0.data_offset, Some(b.lhos[2] + 30 + 14));
        assert_eq!(z.entry_range(d0), Some((b.lhos[2] + 44, 4)));
        assert_eq!(z.verify_crc(d0).unwrap(), None);
        assert_eq!(z.locate("archive/version").unwrap().index, 3);
        assert_eq!(z.torch_lookup_all("byteorder").len(), 1);
        assert_eq!(e.local_header.as_ref().unwrap().name, b"archive/data.pkl");
        // The limit passed to read_entry is honoured.
        assert!(matches!(
            z.read_entry(e, 3),
            Err(ZipError::LimitExceeded {
                what: "entry size",
                ..
            })
        ));
    }

    #[test]
    fn deflate_entries() {
        let pickle: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let mut es = torch_like(&pickle);
        es[0] = es[0].clone().deflated();
        let b = build(&es, &Opts::default());
        let z = open(&b.bytes);
        assert!(z.anomalies().is_empty(), "{:?}", z.anomalies());
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(e.method, METHOD_DEFLATE);
        assert!(e.compressed_size < e.uncompressed_size);
        assert_eq!(e.torch_read_len(), e.compressed_size);
        assert_eq!(z.read_entry(e, 1 << 20).unwrap(), pickle);
        assert_eq!(z.verify_crc(e).unwrap(), None);
        assert_eq!(z.entry_range(e), None);
        let d = z.read_entry_detailed(e, 1 << 20).unwrap();
        assert!(d.complete && d.anomalies.is_empty());
    }

    #[test]
    fn zip64_end_records_and_extra_field() {
        let data = b"zip64 sized payload";
        let mut extra = Vec::new();
        extra.extend(0x0001u16.to_le_bytes());
        extra.extend(24u16.to_le_bytes());
        extra.extend((data.len() as u64).to_le_bytes()); // uncompressed
        extra.extend((data.len() as u64).to_le_bytes()); // compressed
        extra.extend(0u64.to_le_bytes()); // local header offset
        let big = te("arch/data.pkl", data).with(|e| {
            e.comp = u32::MAX;
            e.uncomp = u32::MAX;
            e.lho = Some(u32::MAX);
            e.cextra = extra;
            e.flags = FLAG_DATA_DESCRIPTOR; // local header sizes are then not compared
        });
        let es = vec![big, te("arch/version", b"3\n")];
        let b = build(
            &es,
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(z.is_zip64());
        assert!(z.torch_can_open());
        assert!(z.anomalies().is_empty(), "{:?}", z.anomalies());
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!((e.compressed_size, e.uncompressed_size), (19, 19));
        assert_eq!(e.local_header_offset, 0);
        assert_eq!(z.read_entry(e, 100).unwrap(), data);
        assert_eq!(z.central_directory(), (b.cd_offset, b.cd_len));
    }

    #[test]
    fn zip64_extra_too_short_makes_entry_unreadable() {
        let bad = te("arch/data.pkl", b"x").with(|e| {
            e.uncomp = u32::MAX;
            e.cextra = vec![1, 0, 4, 0, 0, 0, 0, 0];
        });
        let b = build(&[bad, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::MalformedExtraField { entry: 0, .. }
        )));
        let e = z.torch_lookup("data.pkl").unwrap();
        assert!(matches!(
            z.read_entry(e, 100),
            Err(ZipError::EntryUnreadable { index: 0, .. })
        ));
    }

    #[test]
    fn real_torch_save_file() {
        // torch.save({'w': torch.arange(4.)}, 'torch_small.pt') with torch 2.15.
        let bytes = include_bytes!("../tests/data/torch_small.pt").to_vec();
        let z = open(&bytes);
        assert!(z.torch_can_open());
        assert!(z.is_zip64(), "torch always writes zip64 end records");
        assert!(z.anomalies().is_empty(), "{:?}", z.anomalies());
        assert_eq!(z.prefix(), Some(&b"torch_small"[..]));
        let pkl = z.torch_lookup("data.pkl").unwrap();
        let pickle = z.read_entry(pkl, 1 << 20).unwrap();
        assert_eq!(pickle.first(), Some(&0x80));
        assert_eq!(pickle.last(), Some(&b'.'));
        for name in [
            "version",
            "byteorder",
            ".data/serialization_id",
            ".format_version",
        ] {
            assert!(z.torch_lookup(name).is_some(), "{name}");
        }
        let d0 = z.torch_lookup("data/0").unwrap();
        let (off, len) = z.entry_range(d0).unwrap();
        assert_eq!(off % 64, 0, "torch aligns tensor data to 64 bytes");
        assert_eq!(Some(off), d0.data_offset);
        assert_eq!(len, 16);
        let floats: Vec<f32> = z
            .read_entry(d0, 16)
            .unwrap()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, [0.0, 1.0, 2.0, 3.0]);
        for e in z.entries() {
            assert_eq!(e.flags & FLAG_DATA_DESCRIPTOR, FLAG_DATA_DESCRIPTOR);
            assert_eq!(e.data_offset.unwrap() % 64, 0);
            assert_eq!(z.verify_crc(e).unwrap(), None, "{}", e.name_lossy());
        }
        assert_eq!(z.lookup_all("TORCH_SMALL/DATA.PKL").len(), 1);
    }

    #[test]
    fn duplicates_follow_minizs_heap_sort() {
        // Layouts checked against torch 2.15: torch.load returned the copy asserted here.
        let copy = |i: u8| te("arch/data.pkl", &[b'c', b'0' + i]);
        let first = vec![
            copy(1),
            copy(2),
            copy(3),
            te("arch/byteorder", b"little"),
            te("arch/version", b"3\n"),
        ];
        let b = build(&first, &Opts::default());
        let z = open(&b.bytes);
        assert_eq!(z.torch_lookup("data.pkl").unwrap().index, 0);
        assert_eq!(z.lookup_all("arch/data.pkl").len(), 3);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::DuplicateName { count: 3, torch_reads: Some(0), entries, .. } if entries == &[0, 1, 2]
        )));

        let second = vec![
            te("arch/byteorder", b"little"),
            copy(1),
            copy(2),
            copy(3),
            te("arch/version", b"3\n"),
        ];
        let b = build(&second, &Opts::default());
        let z = open(&b.bytes);
        assert_eq!(z.torch_lookup("data.pkl").unwrap().index, 3);
        assert_eq!(
            z.read_entry(z.torch_lookup("data.pkl").unwrap(), 10)
                .unwrap(),
            b"c3"
        );
        let all: Vec<usize> = z
            .torch_lookup_all("data.pkl")
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(all, [1, 2, 3]);

        // Only three equal names: the heap sort leaves the third copy in the middle.
        let b = build(&[copy(1), copy(2), copy(3)], &Opts::default());
        assert_eq!(open(&b.bytes).torch_lookup("data.pkl").unwrap().index, 2);
    }

    #[test]
    fn case_collisions() {
        // Checked against torch 2.15: it loads the upper-case copy here.
        let es = vec![
            te("arch/DATA.PKL", b"upper"),
            te("arch/data.pkl", b"lower"),
            te("arch/byteorder", b"little"),
            te("arch/version", b"3\n"),
        ];
        let b = build(&es, &Opts::default());
        let z = open(&b.bytes);
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(z.read_entry(e, 10).unwrap(), b"upper");
        assert_eq!(z.lookup_all("arch/data.pkl").len(), 2);
        assert_eq!(z.lookup_all("ARCH/Data.Pkl").len(), 2);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::CaseCollision {
                count: 2,
                torch_reads: Some(0),
                ..
            }
        )));
        assert!(!has(&z, |a| matches!(a, ZipAnomaly::DuplicateName { .. })));
    }

    #[test]
    fn local_header_name_and_field_mismatch() {
        let mut es = torch_like(b"pickle");
        es[0].lname = b"evil/zzz.pkl".to_vec();
        es[1].method = METHOD_STORED;
        es[2].crc = 0x1234; // central says 0x1234; local header says the same, so no mismatch
        let mut b = build(&es, &Opts::default());
        // Make the local CRC of entry 1 differ from the central one.
        let at = (b.lhos[1] + 14) as usize;
        b.bytes[at] ^= 0xFF;
        let z = open(&b.bytes);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::LocalNameMismatch { entry: 0, local, .. } if local == "evil/zzz.pkl"
        )));
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::LocalHeaderMismatch {
                entry: 1,
                field: "CRC-32",
                ..
            }
        )));
        // torch uses the central name and ignores the local one.
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(z.read_entry(e, 100).unwrap(), b"pickle");
        // Torch never checks CRCs: entry 2 reads fine, and the mismatch shows up when verified.
        let v = z.torch_lookup("version").unwrap();
        assert_eq!(z.read_entry(v, 10).unwrap(), b"3\n");
        assert!(matches!(
            z.verify_crc(v).unwrap(),
            Some(ZipAnomaly::BadCrc {
                entry: 2,
                expected: 0x1234,
                ..
            })
        ));
        let d = z.read_entry_detailed(v, 10).unwrap();
        assert!(matches!(
            d.anomalies.as_slice(),
            [ZipAnomaly::BadCrc { .. }]
        ));
    }

    #[test]
    fn prepended_data_without_offset_fix_is_python_only() {
        // `cat junk archive.zip`: the offsets still count from the archive's own start.
        let es = torch_like(b"pickle");
        let b = build(&es, &Opts::default());
        let mut bytes = b"PK\x03\x04".to_vec();
        bytes.extend([b'J'; 96]);
        bytes.extend(&b.bytes);
        let z = open(&bytes);
        // torch 2.15 fails ("invalid header or archive is corrupted"); Python's zipfile
        // shifts every offset by 100 and reads it.
        assert!(!z.torch_can_open());
        assert!(z.is_python_fallback());
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::TorchRejects { entry: None, .. }
        )));
        assert!(has(&z, |a| *a
            == ZipAnomaly::CentralDirectoryLocation {
                declared: b.cd_offset,
                python_zipfile: Some(b.cd_offset + 100)
            }));
        assert!(has(&z, |a| *a == ZipAnomaly::DataBeforeFirstEntry { len: 100 }));
        assert_eq!(z.entries()[0].local_header_offset, 100);
        let e = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(z.read_entry(e, 100).unwrap(), b"pickle");
    }

    #[test]
    fn prepended_data_with_fixed_offsets() {
        let es = torch_like(b"pickle");
        let b = build(
            &es,
            &Opts {
                prefix: vec![b'#'; 100],
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(z.torch_can_open() && !z.is_python_fallback());
        assert!(has(&z, |a| *a == ZipAnomaly::NotZipMagic));
        assert!(has(&z, |a| *a == ZipAnomaly::DataBeforeFirstEntry { len: 100 }));
        assert!(!has(&z, |a| matches!(
            a,
            ZipAnomaly::CentralDirectoryLocation { .. }
        )));
        assert_eq!(
            z.read_entry(z.torch_lookup("data.pkl").unwrap(), 10)
                .unwrap(),
            b"pickle"
        );
    }

    #[test]
    fn comments_and_trailing_bytes() {
        let es = torch_like(b"pickle");
        let b = build(
            &es,
            &Opts {
                comment: b"hello".to_vec(),
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(z.torch_can_open());
        assert_eq!(
            z.anomalies(),
            [ZipAnomaly::Comment {
                offset: b.eocd + 22,
                len: 5
            }]
        );

        let b = build(
            &es,
            &Opts {
                comment: b"hello".to_vec(),
                trailing: vec![7; 7],
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(has(&z, |a| *a
            == ZipAnomaly::TrailingData {
                offset: b.eocd + 27,
                len: 7
            }));

        // A 3000-byte comment is fine for torch 2.15 ...
        let b = build(
            &es,
            &Opts {
                comment: vec![b'C'; 3000],
                ..Opts::default()
            },
        );
        assert!(open(&b.bytes).torch_can_open());
        // ... but with a 5000-byte comment miniz's backwards search never reaches the end
        // record (torch 2.15 raises OSError: Invalid argument), while Python's zipfile reads it.
        let b = build(
            &es,
            &Opts {
                comment: vec![b'C'; 5000],
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(!z.torch_can_open());
        assert!(z.is_python_fallback());
        assert!(has(&z, |a| *a
            == ZipAnomaly::EndRecordAmbiguity {
                offsets: vec![b.eocd],
                miniz: None,
                python: Some(b.eocd)
            }));
        assert_eq!(
            z.read_entry(z.torch_lookup("data.pkl").unwrap(), 10)
                .unwrap(),
            b"pickle"
        );
    }

    #[test]
    fn miniz_search_window() {
        assert_eq!(miniz_search_low(22), 0);
        assert_eq!(miniz_search_low(4096), 0);
        assert_eq!(miniz_search_low(5000), 904);
        assert_eq!(miniz_search_low(4096 + 4093), 0);
        for len in [70_000u64, 100_000, 1 << 30] {
            let low = miniz_search_low(len);
            assert!(len - low >= MINIZ_WINDOW && len - low < MINIZ_WINDOW + MINIZ_CHUNK);
            assert_eq!((len - MINIZ_CHUNK - low) % (MINIZ_CHUNK - 3), 0);
        }
    }

    #[test]
    fn two_end_records_last_one_wins() {
        // Central directory 1 (listed by the first end record) names a benign pickle; the
        // first end record's comment holds central directory 2 and a second end record that
        // names another pickle. miniz and Python both use the last record; a reader that
        // scans forwards finds the first.
        let es = vec![
            te("arch/data.pkl", b"benign"),
            te("arch/data.pkl", b"evil"),
            te("arch/version", b"3\n"),
        ];
        let probe = build(
            &es,
            &Opts {
                cd_select: Some(vec![0, 2]),
                ..Opts::default()
            },
        );
        let mut cd2 = central_record(&es[1], probe.lhos[1] as u32);
        cd2.extend(central_record(&es[2], probe.lhos[2] as u32));
        let comment_len = cd2.len() + 22;
        let mut b = build(
            &es,
            &Opts {
                cd_select: Some(vec![0, 2]),
                comment: vec![0; comment_len],
                ..Opts::default()
            },
        );
        let cd2_at = b.eocd + 22;
        let mut comment = cd2.clone();
        comment.extend(eocd_record(2, 2, cd2.len() as u32, cd2_at as u32, 0));
        b.bytes.truncate(cd2_at as usize);
        b.bytes.extend(&comment);
        let z = open(&b.bytes);
        let eocd2 = cd2_at + cd2.len() as u64;
        assert_eq!(z.end_of_central_directory_offset(), eocd2);
        assert!(has(&z, |a| *a
            == ZipAnomaly::EndRecordAmbiguity {
                offsets: vec![b.eocd, eocd2],
                miniz: Some(eocd2),
                python: Some(eocd2)
            }));
        assert_eq!(
            z.read_entry(z.torch_lookup("data.pkl").unwrap(), 10)
                .unwrap(),
            b"evil"
        );
        assert_eq!(z.entries().len(), 2);
    }

    #[test]
    fn overlapping_entries() {
        let es = torch_like(b"shared bytes");
        let alias = central_record(&te("arch/alias.pkl", b"shared bytes"), 0);
        let b = build(
            &es,
            &Opts {
                extra_records: vec![alias],
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(has(&z, |a| *a
            == ZipAnomaly::OverlappingEntries {
                first: 0,
                second: 3
            }));
        // The alias's local name differs too, since it points at data.pkl's header.
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::LocalNameMismatch { entry: 3, .. }
        )));
        assert_eq!(
            z.read_entry(z.torch_lookup("alias.pkl").unwrap(), 100)
                .unwrap(),
            b"shared bytes"
        );
    }

    #[test]
    fn central_directory_past_the_end() {
        let es = torch_like(b"pickle");
        // Offset past the end: torch fails, Python's zipfile locates the directory from the
        // end record's position (but then shifts the entry offsets below zero).
        let b = build(
            &es,
            &Opts {
                cd_offset: Some(1_000_000),
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(!z.torch_can_open());
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::CentralDirectoryPastEnd {
                offset: 1_000_000,
                ..
            }
        )));
        assert!(has(&z, |a| *a
            == ZipAnomaly::CentralDirectoryLocation {
                declared: 1_000_000,
                python_zipfile: Some(b.cd_offset)
            }));
        assert!(z.read_entry(&z.entries()[0], 100).is_err());

        // Size larger than the file: nobody can read it.
        let b = build(
            &es,
            &Opts {
                cd_size: Some(1 << 20),
                ..Opts::default()
            },
        );
        assert!(matches!(
            ZipArchive::open(&b.bytes, ZipLimits::default()),
            Err(ZipError::BadCentralDirectory {
                python_zipfile_offset: None,
                ..
            })
        ));
    }

    #[test]
    fn records_beyond_the_declared_count_are_hidden_from_torch() {
        // Checked against torch 2.15: torch loads entry 0; Python's zipfile loads entry 3.
        let mut es = torch_like(b"benign");
        es.push(te("arch/data.pkl", b"hidden"));
        let b = build(
            &es,
            &Opts {
                count: Some(3),
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(z.torch_can_open());
        assert!(z.entries()[3].hidden_from_torch);
        assert_eq!(z.torch_lookup("data.pkl").unwrap().index, 0);
        let all: Vec<usize> = z
            .lookup_all("arch/data.pkl")
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(all, [0, 3]);
        assert!(z
            .locate("arch/data.pkl")
            .is_some_and(|e| !e.hidden_from_torch));
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::HiddenEntries { declared: 3, found: 1, names } if names == &["arch/data.pkl"]
        )));
        assert_eq!(z.read_entry(&z.entries()[3], 10).unwrap(), b"hidden");
    }

    #[test]
    fn end_record_count_inconsistency() {
        let es = torch_like(b"pickle");
        let b = build(
            &es,
            &Opts {
                on_disk: Some(1),
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(!z.torch_can_open(), "miniz: unsupported multidisk archive");
        assert!(z.is_python_fallback());
        assert_eq!(z.entries().len(), 3);

        // Fewer bytes than the declared records need.
        let b = build(
            &es,
            &Opts {
                count: Some(40),
                ..Opts::default()
            },
        );
        let z = open(&b.bytes);
        assert!(!z.torch_can_open());
        assert_eq!(z.entries().len(), 3);

        // zip64 record and 32-bit record disagree.
        let mut b = build(
            &es,
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        );
        let at = (b.eocd + 10) as usize;
        b.bytes[at..at + 2].copy_from_slice(&7u16.to_le_bytes());
        let z = open(&b.bytes);
        assert!(z.torch_can_open());
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::EndRecordInconsistent { .. }
        )));
    }

    #[test]
    fn hundred_thousand_entries_in_bounded_time() {
        let mut es: Vec<TE> = (0..100_000)
            .map(|i| te(format!("arch/data/{i}"), &[i as u8]))
            .collect();
        es.push(te("arch/version", b"3\n"));
        let b = build(
            &es,
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        );
        let t = Instant::now();
        let z = open(&b.bytes);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(30), "took {took:?}");
        assert_eq!(z.entries().len(), 100_001);
        assert!(
            z.anomalies().is_empty(),
            "{:?}",
            &z.anomalies()[..3.min(z.anomalies().len())]
        );
        let e = z.torch_lookup("data/99999").unwrap();
        assert_eq!(e.index, 99_999);
        assert_eq!(z.read_entry(e, 1).unwrap(), [99_999u32 as u8]);
        assert_eq!(z.lookup_all("ARCH/DATA/5").len(), 1);

        // Limits apply before anything is allocated.
        let small = ZipLimits {
            max_entries: 1000,
            ..ZipLimits::default()
        };
        assert!(matches!(
            ZipArchive::open(&b.bytes, small),
            Err(ZipError::LimitExceeded {
                what: "declared entry count",
                ..
            })
        ));
        let small = ZipLimits {
            max_central_directory_bytes: 1000,
            ..ZipLimits::default()
        };
        assert!(matches!(
            ZipArchive::open(&b.bytes, small),
            Err(ZipError::LimitExceeded {
                what: "central directory size",
                ..
            })
        ));
        let small = ZipLimits {
            max_name_len: 8,
            ..ZipLimits::default()
        };
        assert!(matches!(
            ZipArchive::open(&b.bytes, small),
            Err(ZipError::LimitExceeded {
                what: "entry name length",
                ..
            })
        ));
    }

    fn zeros_deflated(mib: usize) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            e.write_all(&chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn deflate_bomb_is_an_error_not_an_allocation() {
        let bomb = zeros_deflated(100);
        let declared = te("arch/data.pkl", b"").with(|e| {
            e.method = METHOD_DEFLATE;
            e.payload = bomb.clone();
            e.comp = bomb.len() as u32;
            e.uncomp = 100 << 20;
        });
        let b = build(&[declared, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        let e = z.torch_lookup("data.pkl").unwrap();
        // Over the caller's limit: refused before inflating anything.
        assert!(matches!(
            z.read_entry(e, 10 << 20),
            Err(ZipError::LimitExceeded { what: "entry size", value, .. }) if value == 100 << 20
        ));
        // Within the size limit but over the ratio limit.
        let strict = ZipLimits {
            max_compression_ratio: 100,
            ..ZipLimits::default()
        };
        let z = ZipArchive::open(&b.bytes, strict).unwrap();
        let e = z.torch_lookup("data.pkl").unwrap();
        assert!(matches!(
            z.read_entry(e, u64::MAX),
            Err(ZipError::LimitExceeded {
                what: "compression ratio",
                ..
            })
        ));
        assert!(matches!(
            z.verify_crc(e),
            Err(ZipError::LimitExceeded {
                what: "compression ratio",
                ..
            })
        ));

        // Declared small, stream huge: torch keeps the declared prefix and stops.
        let liar = te("arch/data.pkl", b"").with(|e| {
            e.method = METHOD_DEFLATE;
            e.payload = bomb.clone();
            e.comp = bomb.len() as u32;
            e.uncomp = 1000;
            e.crc = crc(&[0; 1000]);
        });
        let b = build(&[liar, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        let d = z
            .read_entry_detailed(z.torch_lookup("data.pkl").unwrap(), u64::MAX)
            .unwrap();
        assert_eq!(d.data, vec![0; 1000]);
        assert!(d.complete);
        assert_eq!(
            d.anomalies,
            [ZipAnomaly::DeflateLongerThanDeclared {
                entry: 0,
                declared: 1000
            }]
        );
    }

    #[test]
    fn deflate_size_mismatches_behave_like_torch() {
        let pickle: Vec<u8> = b"\x80\x02}q\x00(X\x04\x00\x00\x00copyq\x01".repeat(20);
        let good = te("arch/data.pkl", &pickle).deflated();
        // Stream longer than declared: torch 2.15 silently truncates (then fails to unpickle).
        let short = good.clone().with(|e| e.uncomp -= 5);
        let b = build(&[short, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        let got = z
            .read_entry(z.torch_lookup("data.pkl").unwrap(), 1 << 20)
            .unwrap();
        assert_eq!(got, pickle[..pickle.len() - 5]);
        // Stream shorter than declared: torch raises "unexpected decompressed size".
        let long = good.clone().with(|e| e.uncomp += 5);
        let b = build(&[long, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        let e = z.torch_lookup("data.pkl").unwrap();
        assert!(matches!(
            z.read_entry(e, 1 << 20),
            Err(ZipError::EntryUnreadable { .. })
        ));
        assert!(z.verify_crc(e).is_err());
        // Corrupt stream: torch returns what it decoded plus uninitialised memory, no error.
        let corrupt = good.clone().with(|e| {
            let half = e.payload.len() / 2;
            e.payload.truncate(half);
            e.payload.extend([0xFF; 8]);
            e.comp = e.payload.len() as u32;
        });
        let b = build(&[corrupt, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        let e = z.torch_lookup("data.pkl").unwrap();
        let d = z.read_entry_detailed(e, 1 << 20).unwrap();
        assert!(!d.complete);
        assert!(d.data.len() < pickle.len());
        assert_eq!(d.data, pickle[..d.data.len()]);
        assert!(matches!(
            d.anomalies.as_slice(),
            [ZipAnomaly::DeflateTruncated { entry: 0, .. }]
        ));
        assert!(z.read_entry(e, 1 << 20).is_err());
        // Junk after the end of the deflate stream is ignored (torch 2.15 loads the pickle).
        let junk = good.with(|e| {
            e.payload.extend(b"JUNKJUNK");
            e.comp = e.payload.len() as u32;
        });
        let b = build(&[junk, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        assert_eq!(
            z.read_entry(z.torch_lookup("data.pkl").unwrap(), 1 << 20)
                .unwrap(),
            pickle
        );
    }

    #[test]
    fn stored_size_checks_follow_minizs_method_and_time_read() {
        let p = b"pickle bytes";
        // method == 0 and time == 0: miniz rejects mismatched stored sizes at open.
        let t0 = te("arch/data.pkl", p).with(|e| e.uncomp -= 1);
        let b = build(&[t0, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::TorchRejects { entry: Some(0), .. }
        )));
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::StoredSizeMismatch { entry: 0, .. }
        )));
        // A non-zero time defeats the check (miniz reads method+time as one u32); torch then
        // reads `uncompressed_size` bytes, here running into the next local header.
        let t1 = te("arch/data.pkl", p).with(|e| {
            e.uncomp += 4;
            e.time = 1;
        });
        let b = build(&[t1, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        assert!(z.torch_can_open());
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::StoredSizeMismatch { entry: 0, .. }
        )));
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::OverlappingEntries {
                first: 0,
                second: 1
            }
        )));
        let got = z
            .read_entry(z.torch_lookup("data.pkl").unwrap(), 100)
            .unwrap();
        assert_eq!(&got[..p.len()], p);
        assert_eq!(&got[p.len()..], b"PK\x03\x04");
    }

    #[test]
    fn entry_level_refusals() {
        type Case = (&'static str, TE, fn(&ZipAnomaly) -> bool, bool);
        let variants: Vec<Case> = vec![
            (
                "encrypted",
                te("arch/data.pkl", b"x").with(|e| e.flags = FLAG_ENCRYPTED),
                |a| matches!(a, ZipAnomaly::Encrypted { entry: 0 }),
                true,
            ),
            (
                "bzip2",
                te("arch/data.pkl", b"x").with(|e| e.method = 12),
                |a| {
                    matches!(
                        a,
                        ZipAnomaly::UnsupportedMethod {
                            entry: 0,
                            method: 12
                        }
                    )
                },
                true,
            ),
            (
                "patch",
                te("arch/data.pkl", b"x").with(|e| e.flags = FLAG_PATCH),
                |a| matches!(a, ZipAnomaly::UnsupportedFlags { entry: 0, .. }),
                true,
            ),
            (
                "masked",
                te("arch/data.pkl", b"x").with(|e| e.flags = FLAG_MASKED_LOCAL),
                |a| matches!(a, ZipAnomaly::TorchRejects { entry: Some(0), .. }),
                false,
            ),
            (
                "unknown flag",
                te("arch/data.pkl", b"x").with(|e| e.flags = 1 << 9),
                |a| matches!(a, ZipAnomaly::UnknownFlags { entry: 0, .. }),
                false,
            ),
            (
                "dos directory",
                te("arch/data.pkl", b"x").with(|e| e.ext_attr = 0x10),
                |a| matches!(a, ZipAnomaly::TorchSkipsData { entry: 0 }),
                true,
            ),
        ];
        for (what, entry, expect, read_fails) in variants {
            let b = build(&[entry, te("arch/version", b"3\n")], &Opts::default());
            let z = open(&b.bytes);
            assert!(has(&z, expect), "{what}: {:?}", z.anomalies());
            let e = &z.entries()[0];
            if read_fails {
                assert!(z.read_entry(e, 10).is_err(), "{what}");
                assert_eq!(z.entry_range(e), None, "{what}");
            }
        }
    }

    #[test]
    fn names_torch_cannot_see() {
        let mut es = torch_like(b"pickle");
        es.push(te("other/x.pkl", b"outside"));
        es.push(te(b"arch/data.pkl\0zz", b"nul"));
        let b = build(&es, &Opts::default());
        let z = open(&b.bytes);
        assert!(
            !z.torch_can_open(),
            "torch.load refuses entries outside the prefix"
        );
        assert!(has(
            &z,
            |a| matches!(a, ZipAnomaly::OutsidePrefix { entry: 3, prefix, .. } if prefix == "arch")
        ));
        assert!(has(&z, |a| *a == ZipAnomaly::NameContainsNul { entry: 4 }));
        assert_eq!(z.torch_lookup("data.pkl").unwrap().index, 0);
        assert!(z.torch_lookup("data.pkl\0zz").is_some_and(|e| e.index == 0));
        // Python's zipfile cuts the NUL-named entry to "arch/data.pkl".
        let all: Vec<usize> = z
            .torch_lookup_all("data.pkl")
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(all, [0, 4]);

        // npz-style archive: no directory, so torch has no prefix.
        let b = build(&[te("arr_0.npy", b"\x93NUMPY")], &Opts::default());
        let z = open(&b.bytes);
        assert_eq!(z.prefix(), None);
        assert!(z.torch_lookup("arr_0.npy").is_none());
        assert_eq!(z.lookup_all("arr_0.npy").len(), 1);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::TorchRejects { entry: Some(0), .. }
        )));
    }

    #[test]
    fn gaps_and_data_descriptors() {
        let mut es = torch_like(b"pickle");
        es[0].pad_after = vec![b'?'; 40];
        es[1].flags = FLAG_DATA_DESCRIPTOR;
        es[1].pad_after = vec![0; 16];
        let b = build(&es, &Opts::default());
        let z = open(&b.bytes);
        let gap_at = b.lhos[1] - 40;
        assert!(has(&z, |a| *a
            == ZipAnomaly::GapBetweenEntries {
                offset: gap_at,
                len: 40
            }));
        assert_eq!(
            z.anomalies()
                .iter()
                .filter(|a| matches!(a, ZipAnomaly::GapBetweenEntries { .. }))
                .count(),
            1,
            "the 16-byte data descriptor is not a gap: {:?}",
            z.anomalies()
        );
    }

    #[test]
    fn data_past_end_and_bad_local_header() {
        let es = torch_like(b"pickle");
        let mut b = build(&es, &Opts::default());
        // Break entry 1's local signature.
        b.bytes[b.lhos[1] as usize] = b'X';
        let z = open(&b.bytes);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::BadLocalHeader { entry: 1, .. }
        )));
        assert!(z.read_entry(&z.entries()[1], 10).is_err());

        let big = te("arch/data.pkl", b"x").with(|e| {
            e.uncomp = 5000;
            e.time = 1;
        });
        let b = build(&[big, te("arch/version", b"3\n")], &Opts::default());
        let z = open(&b.bytes);
        assert!(has(&z, |a| matches!(
            a,
            ZipAnomaly::DataPastEnd { entry: 0, .. }
        )));
        assert!(z.read_entry(&z.entries()[0], 1 << 20).is_err());
    }

    /// A small archive exercising zip64 end records, a zip64 extra field, deflate, a data
    /// descriptor flag and a comment.
    fn fuzz_seed() -> Vec<u8> {
        let mut extra = Vec::new();
        extra.extend(1u16.to_le_bytes());
        extra.extend(8u16.to_le_bytes());
        extra.extend(2u64.to_le_bytes());
        let es = vec![
            te("arch/data.pkl", &b"\x80\x02}q\x00.".repeat(8)).deflated(),
            te("arch/byteorder", b"little").with(|e| e.flags = FLAG_DATA_DESCRIPTOR),
            te("arch/version", b"3\n").with(|e| {
                e.uncomp = u32::MAX;
                e.cextra = extra;
            }),
        ];
        build(
            &es,
            &Opts {
                zip64: true,
                comment: b"c".to_vec(),
                ..Opts::default()
            },
        )
        .bytes
    }

    #[test]
    fn truncation_at_every_offset_never_panics() {
        let seed = fuzz_seed();
        assert!(ZipArchive::open(&seed, ZipLimits::default()).is_ok());
        for cut in 0..=seed.len() {
            let v = seed[..cut].to_vec();
            if let Ok(z) = ZipArchive::open(&v, ZipLimits::default()) {
                exercise(&z);
            }
        }
    }

    #[test]
    fn byte_corruption_never_panics() {
        let seed = fuzz_seed();
        for i in 0..seed.len() {
            for val in [0x00, 0xFF, seed[i] ^ 0x01, seed[i].wrapping_add(0x80)] {
                let mut v = seed.clone();
                v[i] = val;
                if let Ok(z) = ZipArchive::open(&v, ZipLimits::default()) {
                    exercise(&z);
                }
            }
        }
        // Random multi-byte mutations (xorshift, fixed seed).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            let mut v = seed.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % v.len() as u64) as usize;
                v[at] = (x >> 32) as u8;
            }
            if let Ok(z) = ZipArchive::open(&v, ZipLimits::default()) {
                exercise(&z);
            }
        }
    }

    #[test]
    fn opening_reads_metadata_not_tensor_data() {
        let tensor = vec![7u8; 32 << 20];
        let es = vec![
            te("arch/data.pkl", b"\x80\x02}q\x00."),
            te("arch/data/0", &tensor),
            te("arch/version", b"3\n"),
        ];
        let b = build(
            &es,
            &Opts {
                zip64: true,
                ..Opts::default()
            },
        );
        let counted = crate::io::Counting::new(&b.bytes);
        let z = ZipArchive::open(&counted, ZipLimits::default()).unwrap();
        let pkl = z.torch_lookup("data.pkl").unwrap();
        assert_eq!(z.read_entry(pkl, 1 << 20).unwrap().len(), 6);
        let (off, len) = z.entry_range(z.torch_lookup("data/0").unwrap()).unwrap();
        assert_eq!((off, len), (b.lhos[1] + 30 + 11, 32 << 20));
        // End-record search window (<= 64 KiB + 22 + 4 KiB), central directory, local headers
        // and the pickle: nowhere near the 32 MiB tensor.
        assert!(
            counted.bytes_read() < 80 * 1024,
            "read {} bytes",
            counted.bytes_read()
        );
    }

    #[test]
    fn anomaly_cap() {
        let es: Vec<TE> = (0..50)
            .map(|_| te("arch/x", b"").with(|e| e.flags = 1 << 9))
            .collect();
        let b = build(&es, &Opts::default());
        let z = ZipArchive::open(
            &b.bytes,
            ZipLimits {
                max_anomalies: 10,
                ..ZipLimits::default()
            },
        )
        .unwrap();
        assert_eq!(z.anomalies().len(), 11);
        assert!(matches!(
            z.anomalies().last(),
            Some(ZipAnomaly::AnomaliesOmitted { .. })
        ));
    }

    #[test]
    fn tiny_and_empty_inputs() {
        assert!(matches!(
            ZipArchive::open(&Vec::new(), ZipLimits::default()),
            Err(ZipError::TooSmall(0))
        ));
        assert!(matches!(
            ZipArchive::open(&vec![0u8; 100], ZipLimits::default()),
            Err(ZipError::NoEndOfCentralDirectory { .. })
        ));
        // An empty archive is a zip, but torch refuses it.
        let empty = eocd_record(0, 0, 0, 0, 0);
        let z = open(&empty);
        assert!(z.entries().is_empty());
        assert!(!z.torch_can_open());
    }
}
