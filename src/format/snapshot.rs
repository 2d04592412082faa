//! A snapshot directory (SPEC §3): the manifest, and the writer and reader of whole snapshots.
//! Shards are written independently (one [`ShardSink`] each, on any thread); the manifest is
//! written last and atomically, so its presence means "complete" (F-SNAP-2).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::consts::*;
use super::error::{FormatError, ShardError, SnapshotError};
use super::frame::{is_zero, ShardHeader};
use super::reader::{ReadMode, ShardReader};
use super::record::KeyRecord;
use super::writer::{FinishedPart, Resume, ShardWriter, WriterOptions};

/// `MANIFEST.json` (F-SNAP-3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub version: String,
    pub created_unix_ms: u64,
    pub writer: String,
    pub shards: Vec<ShardEntry>,
    pub totals: Totals,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    pub id: String,
    pub source: String,
    pub db: u32,
    pub parts: Vec<PartEntry>,
    pub keys: u64,
    pub records: u64,
    pub raw_bytes: u64,
    pub keys_by_type: BTreeMap<String, u64>,
    /// Key occurrences the source held under several types (flagged MULTI_TYPE), so that an
    /// import knows before reading the records whether it needs a policy (format 1.1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub multi_type_keys: u64,
    /// Pika sources: where the database's binlog stood when the export began, so that
    /// `kvferry follow` replays the writes made since from there (format 1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_start: Option<BinlogPosition>,
}

/// A position in a Pika database's binlog, as `INFO replication` shows it
/// (`db0:binlog_offset=FILENUM OFFSET`): the file `write2file<FILENUM>` and the byte offset in it
/// where the next write goes (F-SNAP-3, format 1.2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogPosition {
    pub filenum: u32,
    pub offset: u64,
}

impl std::fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.filenum, self.offset)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PartEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub blocks: u64,
    pub records: u64,
    pub keys: u64,
    pub raw_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    pub keys: u64,
    pub records: u64,
    pub raw_bytes: u64,
    pub file_bytes: u64,
    pub files: u64,
    pub keys_by_type: BTreeMap<String, u64>,
}

fn add_types(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (t, n) in from {
        *into.entry(t.clone()).or_default() += n;
    }
}

/// True for names F-SNAP-3 allows for shard ids (`max` 128) and files (`max` 200).
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Manifest {
    /// Builds a manifest, computing the totals, from finished shards.
    pub fn new(created_unix_ms: u64, writer: String, shards: Vec<ShardEntry>) -> Manifest {
        let mut totals = Totals::default();
        for s in &shards {
            totals.keys += s.keys;
            totals.records += s.records;
            totals.raw_bytes += s.raw_bytes;
            totals.files += s.parts.len() as u64;
            totals.file_bytes += s.parts.iter().map(|p| p.bytes).sum::<u64>();
            add_types(&mut totals.keys_by_type, &s.keys_by_type);
        }
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: format!("{VERSION_MAJOR}.{VERSION_MINOR}"),
            created_unix_ms,
            writer,
            shards,
            totals,
        }
    }

    /// Checks F-SNAP-3/4 rules that need no file: format, version, names, sums.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "\"format\" is {:?}, not {MANIFEST_FORMAT:?}: not a kvferry snapshot",
                self.format
            ));
        }
        let major = self.version.split('.').next().and_then(|m| m.parse::<u16>().ok());
        let minor_ok = self
            .version
            .split_once('.')
            .is_some_and(|(_, m)| m.parse::<u16>().is_ok());
        match major {
            Some(VERSION_MAJOR) if minor_ok => {}
            Some(m) if minor_ok => return Err(format!("format version {} is not supported: this kvferry reads major version {VERSION_MAJOR}; use a kvferry release that reads version {m}", self.version)),
            _ => return Err(format!("\"version\" {:?} is not MAJOR.MINOR", self.version)),
        }
        if self.shards.is_empty() || self.shards.iter().any(|s| s.parts.is_empty()) {
            return Err("a snapshot has at least one shard, and a shard at least one part".into());
        }
        let mut ids = HashSet::new();
        let mut files = HashSet::new();
        let mut sum = Totals::default();
        for s in &self.shards {
            if !valid_name(&s.id, 128) || !ids.insert(&s.id) {
                return Err(format!("shard id {:?} is invalid or repeated", s.id));
            }
            let (mut keys, mut records, mut raw) = (0, 0, 0);
            for p in &s.parts {
                if !valid_name(&p.file, 200) || !files.insert(&p.file) {
                    return Err(format!(
                        "file name {:?} of shard {} is invalid or repeated",
                        p.file, s.id
                    ));
                }
                keys += p.keys;
                records += p.records;
                raw += p.raw_bytes;
                sum.file_bytes += p.bytes;
                sum.files += 1;
            }
            if (keys, records, raw) != (s.keys, s.records, s.raw_bytes)
                || s.keys_by_type.values().sum::<u64>() != s.keys
            {
                return Err(format!("the counts of shard {} do not add up to its parts'", s.id));
            }
            sum.keys += keys;
            sum.records += records;
            sum.raw_bytes += raw;
            add_types(&mut sum.keys_by_type, &s.keys_by_type);
        }
        if sum != self.totals {
            return Err("\"totals\" do not add up to the shards".into());
        }
        Ok(())
    }
}

/// An opened snapshot: the manifest, validated, and where its files are.
pub struct Snapshot {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Snapshot {
    /// The shards named by `--shard` (all when none), by index in the manifest.
    pub fn select(&self, ids: &[String]) -> anyhow::Result<Vec<usize>> {
        if ids.is_empty() {
            return Ok((0..self.manifest.shards.len()).collect());
        }
        ids.iter()
            .map(|id| {
                self.manifest.shards.iter().position(|s| &s.id == id).ok_or_else(|| {
                    let all: Vec<&str> = self.manifest.shards.iter().map(|s| s.id.as_str()).collect();
                    anyhow::anyhow!(
                        "--shard {id}: the snapshot has no such shard (it has {})",
                        all.join(", ")
                    )
                })
            })
            .collect()
    }

    /// The database of each of `shards` (indexes in the manifest), in order.
    pub fn dbs(&self, shards: &[usize]) -> Vec<u32> {
        shards.iter().map(|&i| self.manifest.shards[i].db).collect()
    }

    /// Reads and validates `DIR/MANIFEST.json` (F-SNAP-2..4). Files are checked when opened.
    pub fn open(dir: &Path) -> Result<Snapshot, SnapshotError> {
        let path = dir.join(MANIFEST_NAME);
        let bad = |detail: String| SnapshotError::Manifest {
            path: path.clone(),
            detail,
        };
        if !dir.is_dir() {
            return Err(SnapshotError::NotADirectory {
                path: dir.to_path_buf(),
                exists: dir.exists(),
            });
        }
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::Incomplete { dir: dir.to_path_buf() });
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        manifest.validate().map_err(bad)?;
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    pub fn part_path(&self, part: &PartEntry) -> PathBuf {
        self.dir.join(&part.file)
    }

    /// Opens part `part` of shard `shard`, checking it against the manifest: size, header
    /// identity and trailer counts (F-SNAP-4). The SHA-256 is checked by [`Snapshot::check_digest`].
    pub fn open_part(&self, shard: usize, part: usize, mode: ReadMode) -> Result<ShardReader, SnapshotError> {
        let s = &self.manifest.shards[shard];
        let p = &s.parts[part];
        let path = self.part_path(p);
        let mismatch = |what, expected: String, found: String| SnapshotError::Mismatch {
            path: path.clone(),
            what,
            expected,
            found,
        };
        let len = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::MissingFile {
                    path,
                    shard: s.id.clone(),
                    part,
                })
            }
            Err(e) => {
                return Err(ShardError {
                    path,
                    error: FormatError::io(0, &e),
                }
                .into())
            }
        };
        if len != p.bytes {
            return Err(mismatch("size", format!("{} bytes", p.bytes), format!("{len} bytes")));
        }
        let r = ShardReader::open_with(&path, mode)?;
        let h = r.header();
        if (h.shard.as_str(), h.db, h.part as usize) != (s.id.as_str(), s.db, part) {
            return Err(mismatch(
                "header identity (shard/db/part)",
                format!("{}/{}/{}", s.id, s.db, part),
                format!("{}/{}/{}", h.shard, h.db, h.part),
            ));
        }
        let t = r.trailer();
        let found = (t.blocks.len() as u64, t.records, t.keys, t.raw_bytes);
        if found != (p.blocks, p.records, p.keys, p.raw_bytes) {
            return Err(mismatch(
                "blocks/records/keys/raw_bytes",
                format!("{:?}", (p.blocks, p.records, p.keys, p.raw_bytes)),
                format!("{found:?}"),
            ));
        }
        Ok(r)
    }

    /// [`Snapshot::open_part`], then checks the whole file's SHA-256 against the manifest and its
    /// `file_crc32` (F-SNAP-4, F-TRL-3): one more read of the file, before any of it is used.
    pub fn open_part_verified(&self, shard: usize, part: usize, mode: ReadMode) -> Result<ShardReader, SnapshotError> {
        let r = self.open_part(shard, part, mode)?;
        let p = &self.manifest.shards[shard].parts[part];
        let (crc, sha) = r.digests()?;
        if sha != p.sha256 {
            return Err(SnapshotError::Mismatch {
                path: self.part_path(p),
                what: "SHA-256",
                expected: p.sha256.clone(),
                found: sha,
            });
        }
        if crc != r.trailer().file_crc32 {
            let error = FormatError::Checksum {
                what: "file",
                block: None,
                offset: 0,
                expected: r.trailer().file_crc32,
                got: crc,
            };
            return Err(ShardError {
                path: self.part_path(p),
                error,
            }
            .into());
        }
        Ok(r)
    }
}

impl Snapshot {
    /// Opens every part of shard `shard` with [`Snapshot::open_part_verified`] and checks that the
    /// shard's keys per type and multi-type count are the sums of its files' trailers (F-SNAP-4),
    /// before any record is used.
    pub fn open_shard_verified(&self, shard: usize, mode: ReadMode) -> Result<Vec<ShardReader>, SnapshotError> {
        let s = &self.manifest.shards[shard];
        let readers = (0..s.parts.len())
            .map(|p| self.open_part_verified(shard, p, mode))
            .collect::<Result<Vec<_>, _>>()?;
        let mut types = BTreeMap::new();
        readers
            .iter()
            .for_each(|r| add_types(&mut types, &r.trailer().keys_by_type));
        let multi: u64 = readers.iter().map(|r| r.trailer().multi_type_keys).sum();
        let differs = if types != s.keys_by_type {
            format!(
                "keys_by_type {:?} differs from its files' trailers {types:?}",
                s.keys_by_type
            )
        } else if multi != s.multi_type_keys {
            format!(
                "multi_type_keys {} differs from its files' trailers ({multi})",
                s.multi_type_keys
            )
        } else {
            return Ok(readers);
        };
        Err(SnapshotError::Manifest {
            path: self.dir.join(MANIFEST_NAME),
            detail: format!("shard {}: {differs}", s.id),
        })
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Settings of a snapshot writer.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    pub writer: WriterOptions,
    /// Start a new part file once a part holds this many uncompressed bytes, at the next key
    /// boundary (F-PART-1: an occurrence never spans files).
    pub part_target: u64,
    /// The `writer` string recorded in headers and the manifest.
    pub writer_name: String,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            writer: WriterOptions::default(),
            part_target: 4 << 30,
            writer_name: format!("kvferry {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Identity of a shard to write.
#[derive(Clone, Debug)]
pub struct ShardSpec {
    pub id: String,
    pub source: String,
    pub source_server: Option<String>,
    pub db: u32,
}

/// Writes one shard as one or more part files.
pub struct ShardSink {
    dir: PathBuf,
    spec: ShardSpec,
    opts: SnapshotOptions,
    created_unix_ms: u64,
    current: Option<ShardWriter<BufWriter<File>>>,
    /// The current part's file, to sync at checkpoints.
    current_file: Option<File>,
    parts: Vec<PartEntry>,
    keys_by_type: BTreeMap<String, u64>,
    multi_type_keys: u64,
}

/// How far a shard's files are durably written: from here [`ShardSink::resume`] continues after
/// the process was killed. Serialisable, so the caller keeps it beside its own position.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SinkCheckpoint {
    /// Parts finished before the checkpoint.
    pub parts: Vec<PartEntry>,
    pub keys_by_type: BTreeMap<String, u64>,
    #[serde(default)]
    pub multi_type_keys: u64,
    /// The part being written and the offset up to which it is whole, if one was open.
    pub current: Option<(usize, u64)>,
}

/// File name of a part (F-SNAP-5).
pub fn part_file_name(shard: &str, part: usize) -> String {
    format!("{shard}.{part:04}.{PART_EXTENSION}")
}

impl ShardSink {
    /// Starts writing shard `spec` into `dir`. `created_unix_ms` goes into every part's header.
    pub fn new(
        dir: &Path,
        spec: ShardSpec,
        opts: SnapshotOptions,
        created_unix_ms: u64,
    ) -> Result<ShardSink, ShardError> {
        if !valid_name(&spec.id, 128) {
            return Err(ShardError {
                path: dir.to_path_buf(),
                error: FormatError::Body {
                    what: "shard id",
                    detail: format!("{:?} is not [A-Za-z0-9._-]{{1,128}}", spec.id),
                },
            });
        }
        Ok(ShardSink {
            dir: dir.to_path_buf(),
            spec,
            opts,
            created_unix_ms,
            current: None,
            current_file: None,
            parts: Vec::new(),
            keys_by_type: BTreeMap::new(),
            multi_type_keys: 0,
        })
    }

    /// Writes what was pushed as whole blocks, syncs the current part to disk, and says how far
    /// the shard is written. Call only between keys.
    pub fn checkpoint(&mut self) -> Result<SinkCheckpoint, ShardError> {
        let part = self.parts.len();
        let path = self.path(part);
        let current = match (self.current.as_mut(), self.current_file.as_ref()) {
            (Some(w), Some(f)) => {
                let located = |error| ShardError {
                    path: path.clone(),
                    error,
                };
                let offset = w.checkpoint().map_err(located)?;
                f.sync_data().map_err(|e| located(FormatError::io(offset, &e)))?;
                Some((part, offset))
            }
            _ => None,
        };
        Ok(SinkCheckpoint {
            parts: self.parts.clone(),
            keys_by_type: self.keys_by_type.clone(),
            multi_type_keys: self.multi_type_keys,
            current,
        })
    }

    /// Continues shard `spec` in `dir` from checkpoint `cp`, after the process that wrote it was
    /// killed: removes the part files started after the checkpoint, cuts the current part back to
    /// its checkpoint, re-reads it to rebuild the writer's state, and appends from there. The
    /// finished parts are checked by size (their digests are checked by `kvferry check`).
    pub fn resume(
        dir: &Path,
        spec: ShardSpec,
        opts: SnapshotOptions,
        created_unix_ms: u64,
        cp: SinkCheckpoint,
    ) -> Result<ShardSink, ShardError> {
        let mut sink = ShardSink::new(dir, spec, opts, created_unix_ms)?;
        for (i, p) in cp.parts.iter().enumerate() {
            let path = sink.path(i);
            let len = std::fs::metadata(&path).map(|m| m.len());
            if len.as_ref().ok() != Some(&p.bytes) {
                let found = len.map_or_else(|e| e.to_string(), |n| format!("{n} bytes"));
                return Err(ShardError {
                    path,
                    error: FormatError::Layout {
                        offset: 0,
                        detail: format!("a finished part of {} bytes was expected; found {found}", p.bytes),
                    },
                });
            }
        }
        let first_unfinished = cp.parts.len();
        let keep = cp.current.map_or(first_unfinished, |(i, _)| i + 1);
        sink.remove_parts_from(keep)?;
        sink.parts = cp.parts;
        sink.keys_by_type = cp.keys_by_type;
        sink.multi_type_keys = cp.multi_type_keys;
        if let Some((i, end)) = cp.current {
            let path = sink.path(i);
            let located = |error| ShardError {
                path: path.clone(),
                error,
            };
            if i != first_unfinished {
                return Err(located(FormatError::Layout {
                    offset: 0,
                    detail: format!("the checkpoint names part {i} as current after {first_unfinished} finished parts"),
                }));
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| located(FormatError::io(0, &e)))?;
            file.set_len(end).map_err(|e| located(FormatError::io(end, &e)))?;
            let r = Resume::read(&path, end)?;
            if r.header.shard != sink.spec.id || r.header.part as usize != i || r.header.db != sink.spec.db {
                return Err(located(FormatError::Layout {
                    offset: 0,
                    detail: format!(
                        "the header says shard {:?} part {} db {}, not shard {:?} part {i} db {}",
                        r.header.shard, r.header.part, r.header.db, sink.spec.id, sink.spec.db
                    ),
                }));
            }
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| located(FormatError::io(end, &e)))?;
            let sync = file.try_clone().map_err(|e| located(FormatError::io(end, &e)))?;
            let w =
                ShardWriter::resume(BufWriter::with_capacity(1 << 20, file), r, sink.opts.writer).map_err(located)?;
            sink.current = Some(w);
            sink.current_file = Some(sync);
        }
        Ok(sink)
    }

    /// Forgets everything written: the shard is written again from its first record (its
    /// enumeration started over, so every key will come again and none may be there twice).
    /// Removes the part files.
    pub fn start_over(&mut self) -> Result<(), ShardError> {
        // Dropping the writer stops its thread; a block it still writes goes to a removed file.
        (self.current, self.current_file) = (None, None);
        self.parts.clear();
        self.keys_by_type.clear();
        self.multi_type_keys = 0;
        self.remove_parts_from(0)
    }

    /// Removes the part files from part `first` on, up to the first that is not there.
    fn remove_parts_from(&self, first: usize) -> Result<(), ShardError> {
        for i in first.. {
            let path = self.path(i);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    return Err(ShardError {
                        path,
                        error: FormatError::io(0, &e),
                    })
                }
            }
        }
        Ok(())
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(part_file_name(&self.spec.id, part))
    }

    /// Appends a record, opening the next part file first when the current one is full and the
    /// record starts a key.
    pub fn push(&mut self, rec: &KeyRecord) -> Result<(), ShardError> {
        if rec.part == 0
            && self
                .current
                .as_ref()
                .is_some_and(|w| w.raw_bytes_pushed() >= self.opts.part_target)
        {
            self.close_part()?;
        }
        if self.current.is_none() {
            self.open_part()?;
        }
        let part = self.parts.len();
        let w = self.current.as_mut().expect("BUG: part opened above");
        w.push(rec).map_err(|error| ShardError {
            path: self.dir.join(part_file_name(&self.spec.id, part)),
            error,
        })
    }

    /// Direct access to the current part's writer, for fixtures that break the format on purpose.
    #[doc(hidden)]
    pub fn current_writer(&mut self) -> Result<&mut ShardWriter<BufWriter<File>>, ShardError> {
        if self.current.is_none() {
            self.open_part()?;
        }
        Ok(self.current.as_mut().expect("BUG: part opened above"))
    }

    fn open_part(&mut self) -> Result<(), ShardError> {
        let part = self.parts.len();
        let path = self.path(part);
        let file = File::create(&path).map_err(|e| ShardError {
            path: path.clone(),
            error: FormatError::io(0, &e),
        })?;
        let header = ShardHeader {
            shard: self.spec.id.clone(),
            part: part as u32,
            db: self.spec.db,
            source: self.spec.source.clone(),
            source_server: self.spec.source_server.clone(),
            created_unix_ms: self.created_unix_ms,
            writer: self.opts.writer_name.clone(),
        };
        let sync = file.try_clone().map_err(|e| ShardError {
            path: path.clone(),
            error: FormatError::io(0, &e),
        })?;
        let w = ShardWriter::new(BufWriter::with_capacity(1 << 20, file), header, self.opts.writer)
            .map_err(|error| ShardError { path, error })?;
        self.current = Some(w);
        self.current_file = Some(sync);
        Ok(())
    }

    fn close_part(&mut self) -> Result<(), ShardError> {
        let Some(w) = self.current.take() else { return Ok(()) };
        self.current_file = None;
        let part = self.parts.len();
        let path = self.path(part);
        let located = |error| ShardError {
            path: path.clone(),
            error,
        };
        let done: FinishedPart<BufWriter<File>> = w.finish().map_err(located)?;
        let file = done
            .out
            .into_inner()
            .map_err(|e| located(FormatError::io(done.bytes, e.error())))?;
        file.sync_all().map_err(|e| located(FormatError::io(done.bytes, &e)))?;
        add_types(&mut self.keys_by_type, &done.trailer.keys_by_type);
        self.multi_type_keys += done.trailer.multi_type_keys;
        let t = &done.trailer;
        self.parts.push(PartEntry {
            file: part_file_name(&self.spec.id, part),
            bytes: done.bytes,
            sha256: done.sha256,
            blocks: t.blocks.len() as u64,
            records: t.records,
            keys: t.keys,
            raw_bytes: t.raw_bytes,
        });
        Ok(())
    }

    /// Finishes the last part (a shard with no records still gets one, empty, part) and returns
    /// the shard's manifest entry.
    pub fn finish(mut self) -> Result<ShardEntry, ShardError> {
        if self.current.is_none() && self.parts.is_empty() {
            self.open_part()?;
        }
        self.close_part()?;
        let sum = |f: fn(&PartEntry) -> u64| self.parts.iter().map(f).sum::<u64>();
        Ok(ShardEntry {
            id: self.spec.id.clone(),
            source: self.spec.source.clone(),
            db: self.spec.db,
            keys: sum(|p| p.keys),
            records: sum(|p| p.records),
            raw_bytes: sum(|p| p.raw_bytes),
            keys_by_type: std::mem::take(&mut self.keys_by_type),
            multi_type_keys: self.multi_type_keys,
            binlog_start: None,
            parts: std::mem::take(&mut self.parts),
        })
    }
}

/// Writes `MANIFEST.json` atomically: temporary file, flush, rename, directory flush (F-SNAP-2).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), SnapshotError> {
    let path = dir.join(MANIFEST_NAME);
    let tmp = dir.join(format!("{MANIFEST_NAME}.tmp"));
    let io = |e: std::io::Error| SnapshotError::Manifest {
        path: path.clone(),
        detail: format!("cannot write: {e}"),
    };
    let mut text = serde_json::to_vec_pretty(manifest).expect("BUG: a manifest always serialises");
    text.push(b'\n');
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&text).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}
