//! The shard-file writer (SPEC §4): one pass, streaming, bounded memory, compression on its own
//! thread. The caller's thread encodes records into a block buffer; full blocks go through a
//! bounded channel to a thread that compresses them, checksums them and writes them, so at most
//! `CHANNEL_BLOCKS + 2` blocks are in memory. Output is a function of the header and records
//! alone (no clock is read here), so the same input gives the same bytes.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::consts::*;
use super::error::FormatError;
use super::frame::{encode_header, encode_trailer, BlockEntry, BlockHeader, ShardHeader, Trailer};
use super::record::{KeyRecord, PartSeq, Record};
use super::stats::TrailerStats;

/// Blocks waiting for the compression thread.
const CHANNEL_BLOCKS: usize = 2;

/// Writer settings.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// zstd level.
    pub level: i32,
    /// Cut a block once it holds this many uncompressed bytes (F-BLK-3).
    pub block_target: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            level: DEFAULT_LEVEL,
            block_target: DEFAULT_BLOCK_TARGET,
        }
    }
}

/// What a finished file is: the manifest's part entry is made from this.
#[derive(Debug)]
pub struct FinishedPart<W> {
    pub header: ShardHeader,
    pub trailer: Trailer,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file, lowercase hex (F-CONV-3).
    pub sha256: String,
    /// The output, flushed, so the caller can sync it.
    pub out: W,
}

enum Msg {
    Block {
        raw: Vec<u8>,
        records: u32,
    },
    /// Flush everything written so far and answer with the offset reached.
    Sync(SyncSender<u64>),
    Finish(Box<Trailer>),
}

/// Where a file that was cut short at a block boundary stands, for a writer that continues it
/// ([`ShardWriter::resume`]): everything the writer would have accumulated up to there.
pub struct Resume {
    pub header: ShardHeader,
    /// Offset just past the last whole block: the writer appends from here.
    pub end: u64,
    pub blocks: Vec<BlockEntry>,
    pub raw_bytes: u64,
    pub stats: TrailerStats,
    /// CRC-32 and SHA-256 states over bytes `0..end`.
    pub crc: crc32fast::Hasher,
    pub sha: Sha256,
}

impl Resume {
    /// Reads the file at `path`, which must be `end` bytes long and hold a header and whole
    /// blocks whose records close every key they start: a file cut back to a checkpoint
    /// ([`ShardWriter::checkpoint`]).
    pub fn read(path: &std::path::Path, end: u64) -> Result<Resume, super::error::ShardError> {
        use std::io::Read;
        let located = |error| super::error::ShardError {
            path: path.to_path_buf(),
            error,
        };
        let mut stats = TrailerStats::default();
        let mut seq = PartSeq::default();
        let mut visit = |b: &super::reader::Block| -> Result<(), FormatError> {
            for rec in b.records() {
                let rec = rec?;
                seq.accept(&rec).map_err(|detail| FormatError::Layout {
                    offset: b.offset,
                    detail,
                })?;
                stats.add(&rec);
            }
            Ok(())
        };
        let walk = super::reader::walk_visit(path, &mut visit)?;
        if walk.end != end {
            let why = walk
                .stopped
                .map_or_else(|| "a trailer follows".to_string(), |e| e.to_string());
            return Err(located(FormatError::Layout {
                offset: walk.end,
                detail: format!("the file should end with a whole block at offset {end}, but: {why}"),
            }));
        }
        let blocks = walk.blocks;
        let cut = |detail: String| located(FormatError::Layout { offset: end, detail });
        seq.finish()
            .map_err(|d| cut(format!("a key is left open at the checkpoint: {d}")))?;
        let (mut crc, mut sha) = (crc32fast::Hasher::new(), Sha256::new());
        let mut f = std::fs::File::open(path)
            .map_err(|e| located(FormatError::io(0, &e)))?
            .take(end);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| located(FormatError::io(0, &e)))?;
            if n == 0 {
                break;
            }
            crc.update(&buf[..n]);
            sha.update(&buf[..n]);
        }
        Ok(Resume {
            header: walk.header,
            end,
            raw_bytes: blocks.iter().map(|b| b.raw_len() as u64).sum(),
            blocks,
            stats,
            crc,
            sha,
        })
    }
}

/// Writes one shard file. Call [`ShardWriter::push`] per record, then [`ShardWriter::finish`].
/// Dropping it without `finish` leaves a file without a trailer, which readers report as
/// truncated (F-TRL-2): that is what a killed export leaves, and it is resumable.
pub struct ShardWriter<W: Write + Send + 'static> {
    header: ShardHeader,
    opts: WriterOptions,
    buf: Vec<u8>,
    buf_records: u32,
    seq: PartSeq,
    stats: TrailerStats,
    raw_shipped: u64,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<FinishedPart<W>, FormatError>>>,
    /// The error that stopped the compression thread: every later call returns it again (a
    /// second reader of the shard may still be writing when the first one saw it: issue 11).
    failed: Option<FormatError>,
}

impl<W: Write + Send + 'static> ShardWriter<W> {
    /// Starts a file: writes the header frame and starts the compression thread.
    pub fn new(out: W, header: ShardHeader, opts: WriterOptions) -> Result<Self, FormatError> {
        let mut out = Out {
            w: out,
            offset: 0,
            crc: crc32fast::Hasher::new(),
            sha: Sha256::new(),
        };
        out.put(&encode_header(&header))?;
        Self::start(out, header, opts, Vec::new(), TrailerStats::default())
    }

    /// Continues a file cut back to a checkpoint: `out` appends at `r.end`, and the finished file
    /// is the same as if the writer had never stopped.
    pub fn resume(out: W, r: Resume, opts: WriterOptions) -> Result<Self, FormatError> {
        let out = Out {
            w: out,
            offset: r.end,
            crc: r.crc,
            sha: r.sha,
        };
        let mut w = Self::start(out, r.header, opts, r.blocks, r.stats)?;
        w.raw_shipped = r.raw_bytes;
        Ok(w)
    }

    fn start(
        out: Out<W>,
        header: ShardHeader,
        opts: WriterOptions,
        blocks: Vec<BlockEntry>,
        stats: TrailerStats,
    ) -> Result<Self, FormatError> {
        let (tx, rx) = sync_channel(CHANNEL_BLOCKS);
        let level = opts.level;
        let h = header.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kvferry-zstd-{}", header.shard))
            .spawn(move || compress_thread(out, h, blocks, level, rx))
            .map_err(|e| FormatError::io(0, &e))?;
        Ok(ShardWriter {
            header,
            opts,
            buf: Vec::new(),
            buf_records: 0,
            seq: PartSeq::default(),
            stats,
            raw_shipped: 0,
            tx: Some(tx),
            thread: Some(thread),
            failed: None,
        })
    }

    /// Writes what was pushed as whole blocks and flushes them to the output, so that the file,
    /// cut back to the returned offset, can be continued by [`ShardWriter::resume`]. Only between
    /// keys (no occurrence open). The caller syncs the file if it needs durability.
    pub fn checkpoint(&mut self) -> Result<u64, FormatError> {
        self.seq.finish().map_err(|detail| FormatError::Refused {
            detail: format!("checkpoint inside a key: {detail}"),
        })?;
        self.ship()?;
        let (ack_tx, ack_rx) = sync_channel(1);
        self.send(Msg::Sync(ack_tx))?;
        match ack_rx.recv() {
            Ok(offset) => Ok(offset),
            Err(_) => Err(self.stopped()),
        }
    }

    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    /// Uncompressed record bytes pushed so far.
    pub fn raw_bytes_pushed(&self) -> u64 {
        self.raw_shipped + self.buf.len() as u64
    }

    /// Appends one key record. Refuses records that break SPEC §5-§6 (a bug in the caller).
    pub fn push(&mut self, rec: &KeyRecord) -> Result<(), FormatError> {
        let bad = |detail: String| FormatError::Refused { detail };
        if rec.db != self.header.db {
            return Err(bad(format!("record db {} in a file of db {}", rec.db, self.header.db)));
        }
        if rec.expire_at_ms == Some(0) {
            return Err(bad("expire_at_ms 0 (use None for no expiry)".into()));
        }
        self.seq.accept(&Record::Key(rec.clone())).map_err(bad)?;
        let start = self.buf.len();
        rec.encode(&mut self.buf);
        self.stats.add_key(rec);
        self.after_record(start)
    }

    /// Appends already-encoded record bytes without any check. Only for building test fixtures
    /// that must break the format on purpose.
    #[doc(hidden)]
    /// Records that decode are counted in the trailer as usual.
    pub fn push_raw(&mut self, encoded: &[u8]) -> Result<(), FormatError> {
        let start = self.buf.len();
        self.buf.extend_from_slice(encoded);
        match super::record::decode(&mut super::msgpack::Cur::new(encoded)) {
            Ok(rec) => self.stats.add(&rec),
            Err(_) => self.stats.add(&Record::Skippable { kind: 0 }),
        }
        self.after_record(start)
    }

    /// Cuts a block when the buffer reaches its target (F-BLK-3) or would pass the limit (§7).
    fn after_record(&mut self, start: usize) -> Result<(), FormatError> {
        let rec_len = self.buf.len() - start;
        if rec_len > MAX_BLOCK_RAW {
            self.buf.truncate(start);
            return Err(FormatError::Limit {
                what: "record size",
                offset: 0,
                value: rec_len as u64,
                max: MAX_BLOCK_RAW as u64,
            });
        }
        if self.buf.len() > MAX_BLOCK_RAW {
            let tail = self.buf.split_off(start);
            self.ship()?;
            self.buf = tail;
        }
        self.buf_records += 1;
        if self.buf.len() >= self.opts.block_target {
            self.ship()?;
        }
        Ok(())
    }

    fn ship(&mut self) -> Result<(), FormatError> {
        if self.buf_records == 0 {
            return Ok(());
        }
        let raw = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(self.opts.block_target + self.opts.block_target / 8),
        );
        self.raw_shipped += raw.len() as u64;
        let records = std::mem::take(&mut self.buf_records);
        self.send(Msg::Block { raw, records })
    }

    fn send(&mut self, msg: Msg) -> Result<(), FormatError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let tx = self.tx.as_ref().expect("BUG: send after finish");
        if tx.send(msg).is_err() {
            return Err(self.stopped());
        }
        Ok(())
    }

    /// The compression thread stopped: the error it returned (which join reports), kept for
    /// every later call.
    fn stopped(&mut self) -> FormatError {
        let e = self.join().err().unwrap_or_else(|| FormatError::Io {
            offset: 0,
            message: "compression thread stopped".into(),
        });
        self.failed = Some(e.clone());
        e
    }

    fn join(&mut self) -> Result<FinishedPart<W>, FormatError> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(FormatError::Io {
                offset: 0,
                message: "compression thread panicked".into(),
            }),
            None => Err(self.failed.clone().unwrap_or_else(|| FormatError::Io {
                offset: 0,
                message: "writer already finished".into(),
            })),
        }
    }

    /// Writes the last block and the trailer, flushes, and returns what the manifest needs.
    pub fn finish(mut self) -> Result<FinishedPart<W>, FormatError> {
        self.seq.finish().map_err(|detail| FormatError::Refused { detail })?;
        self.ship()?;
        let mut trailer = Trailer::default();
        std::mem::take(&mut self.stats).fill(&mut trailer);
        self.send(Msg::Finish(Box::new(trailer)))?;
        self.join()
    }
}

/// Counts and hashes every byte on its way to the output.
struct Out<W: Write> {
    w: W,
    offset: u64,
    crc: crc32fast::Hasher,
    sha: Sha256,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.w.write_all(b).map_err(|e| FormatError::io(self.offset, &e))?;
        self.crc.update(b);
        self.sha.update(b);
        self.offset += b.len() as u64;
        Ok(())
    }
}

fn compress_thread<W: Write>(
    mut out: Out<W>,
    header: ShardHeader,
    mut blocks: Vec<BlockEntry>,
    level: i32,
    rx: Receiver<Msg>,
) -> Result<FinishedPart<W>, FormatError> {
    let zerr = |e: std::io::Error| FormatError::Io {
        offset: 0,
        message: format!("zstd: {e}"),
    };
    let mut z = zstd::bulk::Compressor::new(level).map_err(zerr)?;
    z.include_checksum(true).map_err(zerr)?; // F-BLK-2: zstd -t checks every block
    z.include_contentsize(true).map_err(zerr)?;
    let mut raw_bytes: u64 = blocks.iter().map(|b| b.raw_len() as u64).sum();
    let mut frame = Vec::new();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Block { raw, records } => {
                frame.clear();
                frame.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                z.compress_to_buffer(&raw, &mut frame).map_err(zerr)?;
                let h = BlockHeader {
                    index: blocks.len() as u32,
                    data_len: frame.len() as u32,
                    raw_len: raw.len() as u32,
                    records,
                    data_crc: crc32fast::hash(&frame),
                };
                blocks.push(BlockEntry(out.offset, h.data_len, h.raw_len, records));
                raw_bytes += raw.len() as u64;
                out.put(&h.encode())?;
                out.put(&frame)?;
            }
            Msg::Sync(ack) => {
                out.w.flush().map_err(|e| FormatError::io(out.offset, &e))?;
                let _ = ack.send(out.offset); // the writer waits for it
            }
            Msg::Finish(mut trailer) => {
                trailer.blocks = std::mem::take(&mut blocks);
                trailer.raw_bytes = raw_bytes;
                trailer.file_crc32 = out.crc.clone().finalize();
                out.put(&encode_trailer(&trailer))?;
                out.w.flush().map_err(|e| FormatError::io(out.offset, &e))?;
                return Ok(FinishedPart {
                    header,
                    trailer: *trailer,
                    bytes: out.offset,
                    sha256: hex::encode(out.sha.finalize()),
                    out: out.w,
                });
            }
        }
    }
    Err(FormatError::Io {
        offset: out.offset,
        message: "writer dropped before finish".into(),
    })
}
