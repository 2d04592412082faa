//! The shard-file reader (SPEC §4-§6): opens a file by its header and trailer, then reads blocks
//! sequentially, by index (to resume), or in parallel. Every length is checked before it is used;
//! no input byte can make it panic or allocate beyond the limits of SPEC §7.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::consts::*;
use super::error::{FormatError, ShardError};
use super::frame::{self, BlockEntry, BlockHeader, ShardHeader, Trailer};
use super::msgpack::Cur;
use super::record::{self, Record};

/// How the reader gets at the file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Memory-map the file; falls back to reads when mapping fails. Snapshot files are immutable
    /// once written; a file truncated while mapped would fault, so tools that read files still
    /// being written use `Read`.
    Mmap,
    /// Positioned reads.
    Read,
}

enum Storage {
    Map(memmap2::Mmap),
    File(File),
    Mem(Vec<u8>),
}

impl Storage {
    fn read_at(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        match self {
            Storage::Map(_) | Storage::Mem(_) => {
                let m: &[u8] = match self {
                    Storage::Map(m) => m,
                    Storage::Mem(v) => v,
                    Storage::File(_) => unreachable!("BUG: matched above"),
                };
                let end = offset.checked_add(len as u64).filter(|&e| e <= m.len() as u64);
                match end {
                    Some(end) => Ok(Cow::Borrowed(&m[offset as usize..end as usize])),
                    None => Err(FormatError::Truncated {
                        offset,
                        detail: format!(
                            "{len} bytes at offset {offset} are past the end of the file ({} bytes)",
                            m.len()
                        ),
                    }),
                }
            }
            Storage::File(f) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => FormatError::Truncated {
                        offset,
                        detail: format!("{len} bytes at offset {offset} are past the end of the file"),
                    },
                    _ => FormatError::io(offset, &e),
                })?;
                Ok(Cow::Owned(buf))
            }
        }
    }
}

/// An open, complete shard file: header and trailer read and checked, blocks not yet read.
pub struct ShardReader {
    path: PathBuf,
    storage: Storage,
    len: u64,
    version: (u16, u16),
    header: ShardHeader,
    trailer: Trailer,
    trailer_offset: u64,
}

/// A decompressed, checksum-verified block.
#[derive(Debug)]
pub struct Block {
    pub index: u32,
    /// The file's db: every key record must carry it (F-REC-2).
    pub db: u32,
    pub offset: u64,
    pub raw: Vec<u8>,
    pub records: u32,
}

impl Block {
    /// The block's records, decoded one by one. After the last, checks that no bytes remain.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            cur: Cur::new(&self.raw),
            block: self.index,
            db: self.db,
            next: 0,
            count: self.records,
            done: false,
        }
    }
}

/// Iterator over a block's records (F-BLK-2).
pub struct RecordIter<'a> {
    cur: Cur<'a>,
    block: u32,
    db: u32,
    next: u32,
    count: u32,
    done: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, FormatError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.next == self.count {
            self.done = true;
            let left = self.cur.remaining();
            return (left != 0).then(|| {
                Err(FormatError::Record {
                    block: self.block,
                    record: self.next,
                    detail: format!("{left} bytes remain after the block's {} records", self.count),
                })
            });
        }
        let at = |detail: String| FormatError::Record {
            block: self.block,
            record: self.next,
            detail,
        };
        let rec = record::decode(&mut self.cur)
            .map_err(|e| at(format!("{} (byte {} of the decompressed block)", e.detail, e.offset)))
            .and_then(|r| match r {
                Record::Key(k) if k.db != self.db => Err(at(format!("db {} in a file of db {}", k.db, self.db))),
                r => Ok(r),
            });
        self.next += 1;
        if rec.is_err() {
            self.done = true;
        }
        Some(rec)
    }
}

impl ShardReader {
    /// Opens `path` with memory mapping where possible.
    pub fn open(path: &Path) -> Result<ShardReader, ShardError> {
        Self::open_with(path, ReadMode::Mmap)
    }

    pub fn open_with(path: &Path, mode: ReadMode) -> Result<ShardReader, ShardError> {
        let located = |error| ShardError {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(|e| located(FormatError::io(0, &e)))?;
        let len = file.metadata().map_err(|e| located(FormatError::io(0, &e)))?.len();
        let storage = match mode {
            // SAFETY: the map is read-only; snapshot files are not modified once complete (see
            // ReadMode::Mmap). Readers of files being written use ReadMode::Read.
            ReadMode::Mmap => match unsafe { memmap2::Mmap::map(&file) } {
                Ok(m) => Storage::Map(m),
                Err(_) => Storage::File(file),
            },
            ReadMode::Read => Storage::File(file),
        };
        Self::from_storage(path.to_path_buf(), storage, len).map_err(located)
    }

    /// Reads a shard file held in memory (tests, fuzzing). `path` only names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<ShardReader, ShardError> {
        let len = bytes.len() as u64;
        Self::from_storage(path.to_path_buf(), Storage::Mem(bytes), len).map_err(|error| ShardError {
            path: path.to_path_buf(),
            error,
        })
    }

    fn from_storage(path: PathBuf, storage: Storage, len: u64) -> Result<ShardReader, FormatError> {
        let (version, header, header_len) = read_header(&storage, len)?;
        if len < header_len + TRAILER_TAIL_LEN as u64 {
            return Err(FormatError::Truncated {
                offset: len,
                detail: format!(
                    "the file ends {} bytes after its header, before any trailer",
                    len - header_len
                ),
            });
        }
        let tail = storage.read_at(len - TRAILER_TAIL_LEN as u64, TRAILER_TAIL_LEN)?;
        let (trailer_offset, trailer_len) = frame::locate_trailer(&tail, len)?;
        if trailer_offset < header_len {
            return Err(FormatError::Layout {
                offset: trailer_offset,
                detail: "the trailer overlaps the header".into(),
            });
        }
        let trailer = frame::parse_trailer(&storage.read_at(trailer_offset, trailer_len)?, trailer_offset)?;
        check_index(&trailer, header_len, trailer_offset)?;
        Ok(ShardReader {
            path,
            storage,
            len,
            version,
            header,
            trailer,
            trailer_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.trailer.blocks.is_empty()
    }
    pub fn version(&self) -> (u16, u16) {
        self.version
    }
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }
    pub fn trailer(&self) -> &Trailer {
        &self.trailer
    }
    pub fn block_count(&self) -> u32 {
        self.trailer.blocks.len() as u32
    }

    fn located(&self, error: FormatError) -> ShardError {
        ShardError {
            path: self.path.clone(),
            error,
        }
    }

    /// Reads, checks and decompresses block `index` (F-BLK-1, F-BLK-2).
    pub fn read_block(&self, index: u32) -> Result<Block, ShardError> {
        let entry = *self.trailer.blocks.get(index as usize).ok_or_else(|| {
            self.located(FormatError::Layout {
                offset: self.trailer_offset,
                detail: format!("no block {index}: the file has {}", self.trailer.blocks.len()),
            })
        })?;
        read_block_at(&self.storage, entry.offset(), index, Some(entry), self.header.db)
            .map(|(b, _)| b)
            .map_err(|e| self.located(e))
    }

    /// All blocks in order.
    pub fn blocks(&self) -> impl Iterator<Item = Result<Block, ShardError>> + '_ {
        (0..self.block_count()).map(move |i| self.read_block(i))
    }

    /// Reads the whole file once and returns the CRC-32 of the bytes before the trailer (compare
    /// with `file_crc32`, F-TRL-3) and the SHA-256 of the whole file (F-CONV-3).
    pub fn digests(&self) -> Result<(u32, String), ShardError> {
        use sha2::Digest;
        let mut crc = crc32fast::Hasher::new();
        let mut sha = sha2::Sha256::new();
        let mut at = 0u64;
        const CHUNK: u64 = 8 << 20;
        while at < self.len {
            let n = CHUNK.min(self.len - at);
            let chunk = self.storage.read_at(at, n as usize).map_err(|e| self.located(e))?;
            let before_trailer = (self.trailer_offset.saturating_sub(at)).min(n) as usize;
            crc.update(&chunk[..before_trailer]);
            sha.update(&chunk);
            at += n;
        }
        Ok((crc.finalize(), hex::encode(sha.finalize())))
    }

    /// The CRC-32 of the bytes before the trailer alone (F-TRL-3): a fast whole-file check.
    pub fn file_crc(&self) -> Result<u32, ShardError> {
        let mut crc = crc32fast::Hasher::new();
        let mut at = 0u64;
        const CHUNK: u64 = 8 << 20;
        while at < self.trailer_offset {
            let n = CHUNK.min(self.trailer_offset - at);
            let chunk = self.storage.read_at(at, n as usize).map_err(|e| self.located(e))?;
            crc.update(&chunk);
            at += n;
        }
        Ok(crc.finalize())
    }

    /// Checks `file_crc32` (F-TRL-3).
    pub fn verify_file_crc(&self) -> Result<(), ShardError> {
        let got = self.file_crc()?;
        if got != self.trailer.file_crc32 {
            return Err(self.located(FormatError::Checksum {
                what: "file",
                block: None,
                offset: 0,
                expected: self.trailer.file_crc32,
                got,
            }));
        }
        Ok(())
    }

    /// Decodes blocks on `threads` threads with `map`, and hands the results to `consume` on the
    /// caller's thread in block order. At most `2 * threads` results wait at a time.
    pub fn par_blocks<T: Send>(
        &self,
        threads: usize,
        map: impl Fn(Result<Block, ShardError>) -> T + Sync,
        consume: impl FnMut(u32, T) -> bool,
    ) {
        self.par_blocks_from(0, threads, map, consume)
    }

    /// [`ShardReader::par_blocks`] from block `first` on (a resumed import).
    pub fn par_blocks_from<T: Send>(
        &self,
        first: u32,
        threads: usize,
        map: impl Fn(Result<Block, ShardError>) -> T + Sync,
        mut consume: impl FnMut(u32, T) -> bool,
    ) {
        let threads = threads.max(1);
        let n = self.block_count();
        let next = std::sync::atomic::AtomicU32::new(first);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u32, T)>(threads);
        let window = (threads * 2) as u32;
        let consumed = std::sync::Mutex::new(first);
        let cv = std::sync::Condvar::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..threads {
                let tx = tx.clone();
                let (next, consumed, cv, stop, map) = (&next, &consumed, &cv, &stop, &map);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    {
                        let mut c = consumed.lock().unwrap_or_else(|p| p.into_inner());
                        while i >= *c + window && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            c = cv.wait(c).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    if stop.load(std::sync::atomic::Ordering::SeqCst) || tx.send((i, map(self.read_block(i)))).is_err()
                    {
                        return;
                    }
                });
            }
            drop(tx);
            let mut pending = std::collections::BTreeMap::new();
            let mut want = first;
            for (i, t) in rx.iter() {
                pending.insert(i, t);
                while let Some(t) = pending.remove(&want) {
                    let go_on = consume(want, t);
                    want += 1;
                    *consumed.lock().unwrap_or_else(|p| p.into_inner()) = want;
                    cv.notify_all();
                    if !go_on {
                        stop.store(true, std::sync::atomic::Ordering::SeqCst);
                        cv.notify_all();
                        return;
                    }
                }
            }
        });
    }
}

fn read_header(storage: &Storage, len: u64) -> Result<((u16, u16), ShardHeader, u64), FormatError> {
    let start = storage.read_at(0, (frame::HEADER_START_LEN as u64).min(len) as usize)?;
    let (version, frame_len) = frame::check_header_start(&start)?;
    let header = frame::parse_header(&storage.read_at(0, frame_len)?)?;
    Ok((version, header, frame_len as u64))
}

/// The blocks must tile the file from the header to the trailer (F-TRL-4).
fn check_index(t: &Trailer, header_len: u64, trailer_offset: u64) -> Result<(), FormatError> {
    let mut at = header_len;
    let (mut records, mut raw) = (0u64, 0u64);
    for (i, b) in t.blocks.iter().enumerate() {
        if b.offset() != at {
            return Err(FormatError::Layout {
                offset: trailer_offset,
                detail: format!(
                    "the trailer puts block {i} at offset {}, but the previous block ends at {at}",
                    b.offset()
                ),
            });
        }
        at = b.end();
        records += b.records() as u64;
        raw += b.raw_len() as u64;
    }
    if at != trailer_offset {
        return Err(FormatError::Layout {
            offset: trailer_offset,
            detail: format!("the blocks end at offset {at}, but the trailer starts at {trailer_offset}"),
        });
    }
    if records != t.records || raw != t.raw_bytes {
        return Err(FormatError::Layout {
            offset: trailer_offset,
            detail: format!(
                "the block index sums to {records} records and {raw} bytes, the trailer says {} and {}",
                t.records, t.raw_bytes
            ),
        });
    }
    Ok(())
}

/// Reads the block whose header frame is at `offset`; checks it against its index entry when
/// there is one. Returns the block and its end offset.
fn read_block_at(
    storage: &Storage,
    offset: u64,
    index: u32,
    entry: Option<BlockEntry>,
    db: u32,
) -> Result<(Block, u64), FormatError> {
    let head = storage.read_at(offset, BLOCK_HEADER_FRAME_LEN)?;
    let head: &[u8; BLOCK_HEADER_FRAME_LEN] = head.as_ref().try_into().expect("BUG: read_at returns the length asked");
    let h = BlockHeader::parse(head, offset, index)?;
    if let Some(e) = entry {
        if (e.data_len(), e.raw_len(), e.records()) != (h.data_len, h.raw_len, h.records) {
            return Err(FormatError::Layout { offset, detail: format!("block {index}: the trailer index says {}/{}/{} (frame/raw/records), the block header says {}/{}/{}", e.data_len(), e.raw_len(), e.records(), h.data_len, h.raw_len, h.records) });
        }
    }
    let data_at = offset + BLOCK_HEADER_FRAME_LEN as u64;
    let data = storage.read_at(data_at, h.data_len as usize)?;
    let got = crc32fast::hash(&data);
    if got != h.data_crc {
        return Err(FormatError::Checksum {
            what: "block data",
            block: Some(index),
            offset: data_at,
            expected: h.data_crc,
            got,
        });
    }
    let zerr = |message: String| FormatError::Zstd {
        block: index,
        offset: data_at,
        message,
    };
    if data.len() < 5 || u32::from_le_bytes([data[0], data[1], data[2], data[3]]) != ZSTD_FRAME_MAGIC {
        return Err(zerr("not a zstd frame".into()));
    }
    // F-BLK-2, F-BLK-4: Frame_Header_Descriptor (RFC 8878 §3.1.1.1.1) must have the
    // Content_Checksum_flag (bit 2) set and no Dictionary_ID (bits 0-1).
    if data[4] & ZSTD_FHD_CHECKSUM == 0 || data[4] & ZSTD_FHD_DICT_ID != 0 {
        return Err(zerr(format!(
            "the zstd frame's descriptor {:#04x} lacks the content checksum or names a dictionary",
            data[4]
        )));
    }
    let mut raw = Vec::with_capacity(h.raw_len as usize);
    // One frame only (F-FRAME-2): decompress from a reader positioned on this frame's bytes and
    // require that it consumed them all and produced exactly R bytes.
    let mut dec = zstd::stream::read::Decoder::with_buffer(&data[..])
        .map_err(|e| zerr(e.to_string()))?
        .single_frame();
    use std::io::Read;
    let limit = h.raw_len as u64 + 1;
    (&mut dec)
        .take(limit)
        .read_to_end(&mut raw)
        .map_err(|e| zerr(e.to_string()))?;
    if raw.len() != h.raw_len as usize {
        return Err(zerr(format!(
            "decompressed to {} bytes{}, the block header says {}",
            raw.len(),
            if raw.len() as u64 == limit { " or more" } else { "" },
            h.raw_len
        )));
    }
    let consumed = dec.finish();
    if !consumed.is_empty() {
        return Err(zerr(format!(
            "{} bytes follow the zstd frame inside the block",
            consumed.len()
        )));
    }
    Ok((
        Block {
            index,
            db,
            offset,
            raw,
            records: h.records,
        },
        data_at + h.data_len as u64,
    ))
}

/// What a walk from the header finds in a file that may have lost its end.
pub struct Walk {
    pub header: ShardHeader,
    /// Blocks that are whole and verified, in order.
    pub blocks: Vec<BlockEntry>,
    /// Offset just past the last whole block: where a resumed writer continues.
    pub end: u64,
    /// Why the walk stopped before a trailer, if it did.
    pub stopped: Option<FormatError>,
}

/// Walks a shard file from its header block by block, without using the trailer: for files that
/// were cut short (SPEC §9). Decompresses each block to verify it.
pub fn walk(path: &Path) -> Result<Walk, ShardError> {
    let located = |error| ShardError {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(|e| located(FormatError::io(0, &e)))?;
    let len = file.metadata().map_err(|e| located(FormatError::io(0, &e)))?.len();
    walk_storage(&Storage::File(file), len, &mut |_| Ok(())).map_err(located)
}

/// [`walk`], handing every whole block, decompressed and verified, to `visit` in order: a
/// resumed writer rebuilds its trailer statistics this way. An error from `visit` ends the walk
/// with that error.
pub fn walk_visit(path: &Path, visit: &mut dyn FnMut(&Block) -> Result<(), FormatError>) -> Result<Walk, ShardError> {
    let located = |error| ShardError {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(|e| located(FormatError::io(0, &e)))?;
    let len = file.metadata().map_err(|e| located(FormatError::io(0, &e)))?.len();
    walk_storage(&Storage::File(file), len, visit).map_err(located)
}

/// [`walk`] over bytes in memory.
pub fn walk_bytes(data: &[u8]) -> Result<Walk, FormatError> {
    walk_storage(&Storage::Mem(data.to_vec()), data.len() as u64, &mut |_| Ok(()))
}

fn walk_storage(
    storage: &Storage,
    len: u64,
    visit: &mut dyn FnMut(&Block) -> Result<(), FormatError>,
) -> Result<Walk, FormatError> {
    let (_, header, mut at) = read_header(storage, len)?;
    let mut blocks = Vec::new();
    loop {
        if at == len {
            let detail = format!("the file ends after {} whole blocks, with no trailer", blocks.len());
            return Ok(Walk {
                header,
                blocks,
                end: at,
                stopped: Some(FormatError::Truncated { offset: at, detail }),
            });
        }
        let magic = storage
            .read_at(at, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if matches!(magic, Ok(TRAILER_FRAME_MAGIC)) {
            return Ok(Walk {
                header,
                blocks,
                end: at,
                stopped: None,
            });
        }
        match read_block_at(storage, at, blocks.len() as u32, None, header.db) {
            Ok((b, end)) => {
                visit(&b)?;
                blocks.push(BlockEntry(
                    at,
                    (end - at - BLOCK_HEADER_FRAME_LEN as u64) as u32,
                    b.raw.len() as u32,
                    b.records,
                ));
                at = end;
            }
            Err(e) => {
                return Ok(Walk {
                    header,
                    blocks,
                    end: at,
                    stopped: Some(e),
                })
            }
        }
    }
}
