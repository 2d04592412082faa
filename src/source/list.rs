//! The source line, stage 1: listing. A database's keys are listed page by page, with SCAN
//! ([`ScanLister`]) or, on Pika, with its range scans (pika.rs), and each listed key gets its
//! TYPE and PTTL in one pipeline per page ([`list_types`]; pika.rs's `list_typed` when the
//! listing gives the type). Stage 2, keys.rs, reads what the keys hold; drive.rs runs the line.
//!
//! Pika facts relied on (SERVERS.md): with `slotmigrate yes`, SCAN lists internal
//! `_internal:slotkey:4migrate:*` / `_internal:slottag:4migrate:*` sets that are not user data.

use anyhow::{anyhow, Context};
use redis::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::read::ReadOptions;
use crate::format::record::{KeyType, Lossy};
use crate::util::now_ms;

/// Pika's internal slot-migration sets, skipped by default (SERVERS.md).
pub(crate) const PIKA_INTERNAL: [&[u8]; 2] = [b"_internal:slotkey:4migrate:", b"_internal:slottag:4migrate:"];

/// What to list and read from a database.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub read: ReadOptions,
    /// SCAN COUNT.
    pub count: usize,
    /// SCAN MATCH pattern.
    pub pattern: Option<String>,
    /// Only these types (all when empty).
    pub types: Vec<KeyType>,
    /// Keys starting with any of these are skipped.
    pub exclude_prefixes: Vec<Vec<u8>>,
    /// Report keys of unknown types as skipped instead of failed.
    pub skip_unknown_types: bool,
    /// Compare every read with the key's length, as on Pika, whatever the server (for tests).
    pub check_lengths: bool,
    /// Connections reading keys, besides the one listing them.
    pub readers: usize,
    /// `export --sample`: only the keys of this sample are read (sample.rs).
    pub sample: Option<super::sample::Sample>,
}

/// Where the enumeration of a database stands between two pages: enough to continue it in
/// another process (`export --resume`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Position {
    /// SCAN with this cursor next ("0" at the start). A cursor means nothing to another run of
    /// the server, so it is kept with the server's run_id and used only on the same run.
    Scan { cursor: String, run_id: Option<String> },
    /// Pika's range scans (pika.rs): pass `pass` (a type, then streams) from key `start` (hex;
    /// empty: from the first key). Keys stay valid across restarts of the server.
    Range { pass: usize, start: String },
}

/// A page of listed keys and where the enumeration stands after it.
pub(crate) struct Page {
    pub keys: Vec<Vec<u8>>,
    /// The keys' type when the listing gives it (Pika's per-type scans); else TYPE is asked.
    pub ty: Option<KeyType>,
    /// Keys listed, including those filtered out.
    pub listed: u64,
    pub filtered: u64,
    pub at: Position,
}

/// An enumeration of a database's keys.
pub(crate) trait Lister {
    /// The next page, or None when every key was listed.
    fn next(&mut self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Option<Page>>;
    /// The listing connection was re-established (`restarted`: the server restarted meanwhile,
    /// now with `run_id`). Returns true when the enumeration starts over.
    fn reconnected(&mut self, restarted: bool, run_id: Option<&str>) -> bool;
}

/// A listed key with the TYPE and PTTL read for it at `read_at`.
pub(crate) struct Listed<'k> {
    pub db: u32,
    pub key: &'k [u8],
    /// The type as the server names it.
    pub ty: String,
    pub pttl: i64,
    pub read_at: u64,
    /// The type is known from how the key was listed (Pika's per-type scans): never ask TYPE,
    /// which on Pika <= 3.5 names only one of a multi-type key's types (SERVERS.md).
    pub fixed: bool,
    /// Flags for its records (MULTI_TYPE).
    pub flags: u64,
}

/// SCAN, one cursor sequence on one connection, with a fixed COUNT and MATCH.
pub(crate) struct ScanLister<'o> {
    pub(crate) cursor: Vec<u8>,
    pub(crate) run_id: Option<String>,
    pub(crate) opts: &'o ScanOptions,
    pub(crate) pika: bool,
    pub(crate) done: bool,
}

impl Lister for ScanLister<'_> {
    fn next(&mut self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Option<Page>> {
        if self.done {
            return Ok(None);
        }
        let mut scan = redis::cmd("SCAN");
        scan.arg(&self.cursor).arg("COUNT").arg(self.opts.count.max(1));
        if let Some(p) = &self.opts.pattern {
            scan.arg("MATCH").arg(p);
        }
        let (next, keys): (Vec<u8>, Vec<Vec<u8>>) = scan.query(conn).context("SCAN")?;
        let listed = keys.len() as u64;
        let (keys, filtered) = filter(keys, self.opts, self.pika);
        let at = Position::Scan {
            cursor: String::from_utf8(next.clone()).map_err(|_| anyhow!("SCAN returned a cursor that is not text"))?,
            run_id: self.run_id.clone(),
        };
        self.done = next == b"0";
        self.cursor = next;
        Ok(Some(Page {
            keys,
            ty: None,
            listed,
            filtered,
            at,
        }))
    }

    fn reconnected(&mut self, restarted: bool, run_id: Option<&str>) -> bool {
        self.run_id = run_id.map(str::to_string);
        if restarted {
            (self.cursor, self.done) = (b"0".to_vec(), false);
        }
        restarted
    }
}

/// Drops excluded prefixes and, on Pika, its internal slot-migration sets; says how many.
pub(crate) fn filter(keys: Vec<Vec<u8>>, opts: &ScanOptions, pika: bool) -> (Vec<Vec<u8>>, u64) {
    let before = keys.len();
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|k| {
            !(opts.exclude_prefixes.iter().any(|p| k.starts_with(p))
                || (pika && PIKA_INTERNAL.iter().any(|p| k.starts_with(p))))
        })
        .collect();
    let filtered = (before - keys.len()) as u64;
    (keys, filtered)
}

/// TYPE and PTTL of every key of a SCAN page, in one pipeline.
pub(crate) fn list_types<'k>(
    conn: &mut dyn ConnectionLike,
    db: u32,
    keys: &'k [Vec<u8>],
) -> anyhow::Result<Vec<Listed<'k>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
    }
    let replies: Vec<redis::Value> = pipe.query(conn).context("TYPE/PTTL pipeline")?;
    let read_at = now_ms();
    if replies.len() != 2 * keys.len() {
        return Err(anyhow!(
            "TYPE/PTTL pipeline: {} replies for {} commands",
            replies.len(),
            2 * keys.len()
        ));
    }
    keys.iter()
        .zip(replies.chunks(2))
        .map(|(k, r)| {
            Ok(Listed {
                db,
                key: k,
                ty: redis::from_redis_value(&r[0]).with_context(|| format!("TYPE {:?}", Lossy(k)))?,
                pttl: redis::from_redis_value(&r[1]).with_context(|| format!("PTTL {:?}", Lossy(k)))?,
                read_at,
                fixed: false,
                flags: 0,
            })
        })
        .collect()
}
