//! Errors of the format layer: every variant carries what an operator needs to find the damage
//! (block, byte offset, expected and found values). They derive `PartialEq` so tests compare exact
//! errors. The file name is added by [`ShardError`], which the reader returns.

use std::path::PathBuf;

/// Something wrong with the bytes of a shard file or snapshot, or with reading them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Reading or writing failed (disk error, file vanished, disk full).
    #[error("I/O error at offset {offset}: {message}")]
    Io { offset: u64, message: String },
    /// A magic number or tag is not where the spec puts it: not a kvferry file, or damaged.
    #[error("bad {what} magic at offset {offset}: found {found}; this is not a kvferry shard file or it is damaged")]
    BadMagic {
        what: &'static str,
        offset: u64,
        found: String,
    },
    /// The file or manifest is of a major version this reader does not implement (F-VER-1).
    #[error("format version {found_major}.{found_minor} is not supported: this kvferry reads major version {supported}; use a kvferry release that reads version {found_major}")]
    UnsupportedVersion {
        found_major: u16,
        found_minor: u16,
        supported: u16,
    },
    /// The file ends before its trailer: it was cut short (e.g. an interrupted copy).
    #[error("truncated file: {detail}; copy it again from its source")]
    Truncated { offset: u64, detail: String },
    /// A checksum does not match: the bytes were damaged.
    #[error("{what} checksum mismatch{} at offset {offset}: expected {expected:#010x}, got {got:#010x}", block_suffix(*.block))]
    Checksum {
        what: &'static str,
        block: Option<u32>,
        offset: u64,
        expected: u32,
        got: u32,
    },
    /// A data frame does not decompress.
    #[error("block {block} at offset {offset} does not decompress: {message}")]
    Zstd { block: u32, offset: u64, message: String },
    /// A length or count exceeds the limits of SPEC §7.
    #[error("{what} of {value} at offset {offset} exceeds the limit of {max}")]
    Limit {
        what: &'static str,
        offset: u64,
        value: u64,
        max: u64,
    },
    /// The frames, index or counts disagree with each other.
    #[error("inconsistent file at offset {offset}: {detail}")]
    Layout { offset: u64, detail: String },
    /// A header or trailer body is not what §4.2 / §4.4 require.
    #[error("bad {what} body: {detail}")]
    Body { what: &'static str, detail: String },
    /// A record breaks §5 or §6.
    #[error("block {block}, record {record}: {detail}")]
    Record { block: u32, record: u32, detail: String },
    /// The writer was given a record that would break §5 or §6 (a bug in the caller); nothing
    /// of it was written.
    #[error("refused to write a record that breaks the snapshot format: {detail}")]
    Refused { detail: String },
}

fn block_suffix(block: Option<u32>) -> String {
    block.map(|b| format!(" in block {b}")).unwrap_or_default()
}

impl FormatError {
    pub(crate) fn io(offset: u64, err: &std::io::Error) -> Self {
        FormatError::Io {
            offset,
            message: err.to_string(),
        }
    }
}

/// A [`FormatError`] with the file it was found in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {error}", path.display())]
pub struct ShardError {
    pub path: PathBuf,
    pub error: FormatError,
}

/// A problem with a snapshot as a whole (its manifest and the files it names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// No `MANIFEST.json`: the export did not finish, or this is not a snapshot (F-SNAP-2).
    #[error("{}: no MANIFEST.json: the snapshot is incomplete (its export did not finish) or this is not a kvferry snapshot directory", dir.display())]
    Incomplete { dir: PathBuf },
    /// The path given is not a directory: nothing there, or a file.
    #[error("{}: {}", path.display(), if *.exists { "not a directory: a snapshot is a directory holding MANIFEST.json (check and cat also read a single .kvf file)" } else { "no such directory" })]
    NotADirectory { path: PathBuf, exists: bool },
    /// The manifest cannot be read or parsed, or breaks F-SNAP-3/4.
    #[error("{}: {detail}", path.display())]
    Manifest { path: PathBuf, detail: String },
    /// A file the manifest names is not there.
    #[error("{}: missing: the manifest lists it as part {part} of shard {shard}; copy it again", path.display())]
    MissingFile { path: PathBuf, shard: String, part: usize },
    /// A file differs from what the manifest says of it.
    #[error("{}: {what} differs from the manifest: expected {expected}, found {found}; the file was damaged or replaced, copy it again", path.display())]
    Mismatch {
        path: PathBuf,
        what: &'static str,
        expected: String,
        found: String,
    },
    /// A shard file is bad.
    #[error(transparent)]
    Shard(#[from] ShardError),
}
