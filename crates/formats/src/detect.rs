//! Recognises containers by content, never by extension.

use crate::io::ReadAt;

/// What a byte source looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// A zip archive (torch ≥ 1.6, TorchScript, `.npz`): starts with a local file header, or is
    /// an empty archive.
    Zip,
    /// A numpy `.npy` array.
    Npy,
    /// A tar archive, recognised by its header checksum as Python's `tarfile` does (torch's
    /// oldest format).
    Tar,
    /// A pickle with a PROTO opcode (protocol 2–5), or anything else: to be analysed as a pickle
    /// stream from byte 0, which is what `pickle.load` and torch's legacy loader do.
    Pickle,
}

/// Sniffs a source from its first bytes.
pub fn sniff(src: &dyn ReadAt) -> std::io::Result<Sniffed> {
    let mut head = [0u8; 512];
    let n = src.len().min(512) as usize;
    src.read_exact_at(0, &mut head[..n])?;
    let head = &head[..n];
    Ok(
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Sniffed::Zip
        } else if head.starts_with(crate::npy::MAGIC) {
            Sniffed::Npy
        } else if crate::tar::is_header(head) {
            Sniffed::Tar
        } else {
            Sniffed::Pickle
        },
    )
}
