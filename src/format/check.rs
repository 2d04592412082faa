//! Full verification of a snapshot or a shard file (what `kvferry check` runs): every checksum,
//! every record, the part sequence, and every count against the trailer and the manifest. It goes
//! on after a bad block so that the report names every damaged block, not just the first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::consts::PART_EXTENSION;
use super::error::{FormatError, SnapshotError};
use super::reader::{self, ReadMode, ShardReader};
use super::record::PartSeq;
use super::snapshot::Snapshot;
use super::stats::TrailerStats;

/// The verdict on one file.
#[derive(Serialize, Debug, Clone, Default)]
pub struct FileReport {
    pub file: PathBuf,
    pub shard: Option<String>,
    pub part: Option<usize>,
    pub blocks: u64,
    pub records: u64,
    pub bytes: u64,
    /// Indexes of blocks that failed their checks.
    pub bad_blocks: Vec<u32>,
    /// Every problem found, each naming the file, and the block and offset where one applies.
    pub problems: Vec<String>,
    /// Key occurrences flagged MULTI_TYPE (F-REC-3): the source held the key under several
    /// types; an import needs a policy for them.
    #[serde(skip_serializing_if = "is_zero")]
    pub multi_type_keys: u64,
    /// The first few of them, rendered as in `cat`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub multi_type_examples: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FileReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The verdict on a snapshot.
#[derive(Serialize, Debug, Clone, Default)]
pub struct CheckReport {
    pub snapshot: PathBuf,
    /// A problem with the snapshot as a whole (no manifest, a bad manifest).
    pub snapshot_problems: Vec<String>,
    pub files: Vec<FileReport>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.snapshot_problems.is_empty() && self.files.iter().all(FileReport::ok)
    }
}

/// What `check` reports as it goes.
pub enum Progress<'a> {
    /// The total bytes to check, once known.
    Total(u64),
    /// This many more bytes were checked.
    Bytes(u64),
    /// A file is done.
    File(&'a FileReport),
}

/// Checks the snapshot in `dir` (or a single shard file, when `path` is a file), decoding blocks
/// on `threads` threads, reporting to `progress` as it goes. Files are read, not mapped, so that
/// memory stays bounded however big they are (mapped pages count as resident once touched).
pub fn check(path: &Path, threads: usize, progress: &mut dyn FnMut(Progress)) -> CheckReport {
    let mut report = CheckReport {
        snapshot: path.to_path_buf(),
        ..Default::default()
    };
    if path.is_file() {
        progress(Progress::Total(std::fs::metadata(path).map_or(0, |m| m.len())));
        let f = check_file(path, None, threads, progress);
        progress(Progress::File(&f));
        report.files.push(f);
        return report;
    }
    let snap = match Snapshot::open(path) {
        Ok(s) => s,
        Err(e) => {
            // Without a manifest, check every shard file on its own: an operator wants to know
            // which files are whole (SPEC §9).
            report.snapshot_problems.push(e.to_string());
            if matches!(e, SnapshotError::Incomplete { .. }) {
                for file in shard_files(path) {
                    let f = check_file(&file, None, threads, progress);
                    progress(Progress::File(&f));
                    report.files.push(f);
                }
            }
            return report;
        }
    };
    progress(Progress::Total(snap.manifest.totals.file_bytes));
    for (si, shard) in snap.manifest.shards.iter().enumerate() {
        let mut types = BTreeMap::new();
        for (pi, part) in shard.parts.iter().enumerate() {
            let path = snap.part_path(part);
            let mut f = match snap.open_part(si, pi, ReadMode::Read) {
                Ok(r) => {
                    for (t, n) in &r.trailer().keys_by_type {
                        *types.entry(t.clone()).or_insert(0u64) += n;
                    }
                    check_reader(&r, Some(&part.sha256), threads, progress)
                }
                Err(SnapshotError::Shard(e)) => check_broken(&e.path, e.error),
                // The file differs from the manifest: say so, and then what is wrong inside it.
                Err(e @ SnapshotError::Mismatch { .. }) => {
                    let mut f = check_file(&path, Some(&part.sha256), threads, progress);
                    f.problems.insert(0, e.to_string());
                    f
                }
                Err(e) => FileReport {
                    file: path.clone(),
                    problems: vec![e.to_string()],
                    ..Default::default()
                },
            };
            f.file = path;
            f.shard = Some(shard.id.clone());
            f.part = Some(pi);
            progress(Progress::File(&f));
            report.files.push(f);
        }
        // F-SNAP-4: the shard's keys per type are the sums of its parts' trailers.
        if report.files.iter().all(FileReport::ok) && types != shard.keys_by_type {
            report.snapshot_problems.push(format!(
                "{}: shard {}: keys_by_type {:?} differs from its files' trailers {types:?}",
                snap.dir.join(crate::format::consts::MANIFEST_NAME).display(),
                shard.id,
                shard.keys_by_type
            ));
        }
    }
    report
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == PART_EXTENSION))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Checks one file; `sha256` is the manifest's digest when there is one.
pub fn check_file(path: &Path, sha256: Option<&str>, threads: usize, progress: &mut dyn FnMut(Progress)) -> FileReport {
    match ShardReader::open_with(path, ReadMode::Read) {
        Ok(r) => check_reader(&r, sha256, threads, progress),
        Err(e) => check_broken(path, e.error),
    }
}

/// A file that does not open: say why, and, walking from its header, how much of it is whole.
fn check_broken(path: &Path, error: FormatError) -> FileReport {
    let mut f = FileReport {
        file: path.to_path_buf(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        ..Default::default()
    };
    f.problems.push(format!("{}: {error}", path.display()));
    if let Ok(w) = reader::walk(path) {
        f.blocks = w.blocks.len() as u64;
        f.records = w.blocks.iter().map(|b| b.records() as u64).sum();
        let stop = match &w.stopped {
            Some(e) => format!("then: {e}"),
            None => "then the trailer".into(),
        };
        f.problems.push(format!(
            "{}: the first {} blocks (up to offset {}) are whole; {stop}",
            path.display(),
            w.blocks.len(),
            w.end
        ));
        if let Some(FormatError::Checksum { block: Some(b), .. } | FormatError::Zstd { block: b, .. }) = &w.stopped {
            f.bad_blocks.push(*b);
        }
    }
    f
}

fn check_reader(
    r: &ShardReader,
    sha256: Option<&str>,
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> FileReport {
    let path = r.path();
    let mut f = FileReport {
        file: path.to_path_buf(),
        blocks: r.block_count() as u64,
        records: r.trailer().records,
        bytes: r.len(),
        ..Default::default()
    };
    let mut seq = PartSeq::default();
    let mut stats = TrailerStats::default();
    let problem = |f: &mut FileReport, block: Option<u32>, msg: String| {
        if let Some(b) = block {
            if f.bad_blocks.last() != Some(&b) {
                f.bad_blocks.push(b);
            }
        }
        f.problems.push(format!("{}: {msg}", path.display()));
    };
    // The whole-file digests (CRC and SHA-256) are computed on their own thread while the
    // blocks are checked, so the file's bytes are read in parallel rather than twice in a row.
    std::thread::scope(|scope| {
        let digests = scope.spawn(|| r.digests());
        r.par_blocks(
            threads,
            |b| b,
            |i, block| {
                progress(Progress::Bytes(
                    r.trailer().blocks[i as usize].end() - r.trailer().blocks[i as usize].offset(),
                ));
                let block = match block {
                    Ok(b) => b,
                    Err(e) => {
                        problem(&mut f, Some(i), e.error.to_string());
                        seq = PartSeq::default(); // resynchronise after the lost block
                        return true;
                    }
                };
                for (n, rec) in block.records().enumerate() {
                    let at = |detail: String| {
                        FormatError::Record {
                            block: i,
                            record: n as u32,
                            detail,
                        }
                        .to_string()
                    };
                    let rec = match rec {
                        Ok(rec) => rec,
                        Err(e) => {
                            problem(&mut f, Some(i), e.to_string());
                            break;
                        }
                    };
                    if let Err(e) = seq.accept(&rec) {
                        problem(&mut f, Some(i), at(e));
                    }
                    if let super::record::Record::Key(k) = &rec {
                        if k.part == 0 && k.flags & super::consts::FLAG_MULTI_TYPE != 0 {
                            f.multi_type_keys += 1;
                            if f.multi_type_examples.len() < 10 {
                                f.multi_type_examples.push(format!(
                                    "{:?} ({})",
                                    super::record::Lossy(k.key),
                                    k.key_type().name()
                                ));
                            }
                        }
                    }
                    stats.add(&rec);
                }
                true
            },
        );
        if let Err(e) = seq.finish() {
            problem(&mut f, None, e);
        }
        let t = r.trailer();
        if f.bad_blocks.is_empty() {
            if let Err(e) = stats.compare(t) {
                problem(&mut f, None, e);
            }
        }
        let digests = digests
            .join()
            .unwrap_or_else(|_| unreachable!("BUG: the digest thread panicked"));
        match digests {
            Ok((crc, sha)) => {
                if crc != t.file_crc32 {
                    problem(
                        &mut f,
                        None,
                        FormatError::Checksum {
                            what: "file",
                            block: None,
                            offset: 0,
                            expected: t.file_crc32,
                            got: crc,
                        }
                        .to_string(),
                    );
                }
                if let Some(want) = sha256.filter(|w| *w != sha) {
                    problem(&mut f, None, format!("SHA-256 differs from the manifest: expected {want}, found {sha}; the file was damaged or replaced, copy it again"));
                }
            }
            Err(e) => problem(&mut f, None, e.error.to_string()),
        }
        f
    })
}
