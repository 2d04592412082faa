//! Enumerates one database with SCAN and reads every key: TYPE and PTTL pipelined per page of
//! keys (no round trip per key), then each key by its type (read.rs). What could not be read is
//! counted or reported by name; nothing is dropped silently.
//!
//! Pika facts relied on (SERVERS.md): TYPE answers `streams` for a stream on 4.0; PTTL answers 0
//! for a missing key or any stream on 4.0 (never "expire now"); with `slotmigrate yes`, SCAN lists
//! internal `_internal:slotkey:4migrate:*` / `_internal:slottag:4migrate:*` sets that are not user
//! data. The stateless PKSCANRANGE path for Pika comes next (issue 3); until then SCAN is used
//! with one cursor per connection and a fixed COUNT and MATCH.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};
use redis::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::conn::ServerKind;
use super::link::{is_connection_error, Link};
use super::read::{batch_commands, batch_whole, read_key, Emit, KeyRef, Outcome, ReadOptions};
use super::throttle::Throttle;
use crate::format::consts::FLAG_LAST;
use crate::format::record::{KeyRecord, KeyType, Lossy};

/// Pika's internal slot-migration sets, skipped by default (SERVERS.md).
const PIKA_INTERNAL: [&[u8]; 2] = [b"_internal:slotkey:4migrate:", b"_internal:slottag:4migrate:"];

/// How many times a key that changed while read is read again before it is reported as failed.
const REREADS: usize = 3;

/// What to export from a database.
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
}

/// A key that was not exported, by name, and why.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, rendered as in `kvferry cat` (UTF-8, or base64).
    pub key: serde_json::Value,
    pub reason: String,
}

/// What exporting one database came to.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct DbReport {
    pub keys_by_type: BTreeMap<String, u64>,
    /// Listed by SCAN but gone (deleted or expired) before they were read.
    pub gone: u64,
    /// Skipped by filters (type, prefix, Pika internals).
    pub filtered: u64,
    /// Keys of unknown types skipped with --skip-unknown-types.
    pub skipped_unknown: Vec<Problem>,
    /// Keys that could not be exported: the run's exit code is non-zero when there are any.
    pub failed: Vec<Problem>,
    /// Keys read more than once because they changed while read.
    pub reread: u64,
    /// Times the connection was lost and re-established.
    pub reconnects: u64,
    /// Times the database was scanned again from the start because the server restarted.
    pub rescans: u64,
}

impl DbReport {
    /// Adds the counts of a completed page.
    fn merge(&mut self, page: DbReport) {
        for (t, n) in page.keys_by_type {
            *self.keys_by_type.entry(t).or_default() += n;
        }
        self.gone += page.gone;
        self.filtered += page.filtered;
        self.skipped_unknown.extend(page.skipped_unknown);
        self.failed.extend(page.failed);
        self.reread += page.reread;
    }
}

/// Where the enumeration of a database stands between two pages: enough to continue it in
/// another process (`export --resume`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Position {
    /// SCAN with this cursor next ("0" at the start). A cursor means nothing to another run of
    /// the server, so it is kept with the server's run_id and used only on the same run.
    Scan { cursor: String, run_id: Option<String> },
}

/// Where an export goes: its records, and the end of every page, when everything listed before
/// `next` has been handed to `record` and no key is half-written, so the caller may checkpoint.
pub trait Out {
    fn record(&mut self, r: &KeyRecord) -> anyhow::Result<()>;
    /// `keys`: keys listed on the page (exported, skipped or gone). `report`: all pages so far.
    fn page(&mut self, keys: u64, next: &Position, report: &DbReport) -> anyhow::Result<()>;
}

fn key_json(k: &[u8]) -> serde_json::Value {
    let mut s = String::new();
    crate::format::render::bytes(&mut s, k);
    serde_json::from_str(&s).expect("BUG: render::bytes writes valid JSON")
}

/// The type TYPE names, if kvferry can export it.
fn key_type(name: &str) -> Option<KeyType> {
    match name {
        "streams" => Some(KeyType::Stream), // Pika 4.0 (SERVERS.md)
        other => KeyType::from_name(other),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Exports database `db` of the server behind `link` into `out`, from the start or from where an
/// earlier run stopped (`from`: its position and report). A lost connection is recovered: the
/// page is done again from the same cursor; after a restart of the server (SCAN cursors do not
/// survive one: Redis' hash seed changes, Pika restarts them silently, SERVERS.md) the database
/// is scanned again from the start. Keys exported twice are resolved by F-PART-3 (the last
/// occurrence wins), and the report counts each key once: page counts join it only when the page
/// is complete, and a rescan starts it afresh.
pub fn export_db(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    from: Option<(Position, DbReport)>,
    out: &mut dyn Out,
) -> anyhow::Result<DbReport> {
    link.select(db)?;
    let kind = link.server.kind.clone();
    let (mut report, mut cursor) = match from {
        None => (DbReport::default(), b"0".to_vec()),
        Some((Position::Scan { cursor, run_id }, report)) => {
            if run_id.is_some() && run_id.as_deref() == link.run_id() {
                (report, cursor.into_bytes())
            } else {
                (rescan(&report), b"0".to_vec())
            }
        }
    };
    loop {
        let mut page = DbReport::default();
        let mut emit = |r: &KeyRecord| out.record(r);
        match scan_page(&mut link.conn(throttle), &kind, db, &cursor, opts, &mut emit, &mut page) {
            Ok((next, done)) => {
                report.merge(page);
                let at = Position::Scan {
                    cursor: String::from_utf8(next.clone())
                        .map_err(|_| anyhow!("SCAN returned a cursor that is not text"))?,
                    run_id: link.run_id().map(str::to_string),
                };
                out.page(done, &at, &report)?;
                if next == b"0" {
                    return Ok(report);
                }
                cursor = next;
            }
            Err(e) if is_connection_error(&e) => {
                let reconnects = report.reconnects + 1;
                if link.recover()? {
                    (report, cursor) = (rescan(&report), b"0".to_vec());
                }
                report.reconnects = reconnects;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The report to start a rescan with: the counts start afresh, the fault counters go on.
fn rescan(r: &DbReport) -> DbReport {
    DbReport {
        rescans: r.rescans + 1,
        reconnects: r.reconnects,
        ..DbReport::default()
    }
}

/// One SCAN page and its keys; returns the next cursor and how many keys it exported or skipped.
fn scan_page(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    cursor: &[u8],
    opts: &ScanOptions,
    emit: &mut Emit,
    page: &mut DbReport,
) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor).arg("COUNT").arg(opts.count.max(1));
    if let Some(p) = &opts.pattern {
        scan.arg("MATCH").arg(p);
    }
    let (next, keys): (Vec<u8>, Vec<Vec<u8>>) = scan.query(conn).context("SCAN")?;
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|k| {
            let skip = opts.exclude_prefixes.iter().any(|p| k.starts_with(p))
                || (matches!(kind, ServerKind::Pika(..)) && PIKA_INTERNAL.iter().any(|p| k.starts_with(p)));
            page.filtered += u64::from(skip);
            !skip
        })
        .collect();
    export_page(conn, kind, db, &keys, opts, emit, page)?;
    Ok((next, keys.len() as u64))
}

fn export_page(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    keys: &[Vec<u8>],
    opts: &ScanOptions,
    emit: &mut Emit,
    report: &mut DbReport,
) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
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
    // Small keys are read whole in one more pipeline; the others, and any key that the batch
    // did not get whole, on their own.
    let mut batch = Vec::new();
    let mut pipe = redis::pipe();
    let lengths = matches!(kind, ServerKind::Pika(..)) || opts.check_lengths;
    for (k, r) in keys.iter().zip(replies.chunks(2)) {
        let ty: String = redis::from_redis_value(&r[0]).with_context(|| format!("TYPE {:?}", Lossy(k)))?;
        let pttl: i64 = redis::from_redis_value(&r[1]).with_context(|| format!("PTTL {:?}", Lossy(k)))?;
        let l = Listed {
            db,
            key: k,
            ty,
            pttl,
            read_at,
        };
        match classify(kind, &l, opts) {
            Class::Read(t, _) => match batch_commands(&mut pipe, k, t, lengths) {
                0 => export_key(conn, kind, l, opts, emit, report)?,
                n => batch.push((l, n)),
            },
            _ => export_key(conn, kind, l, opts, emit, report)?,
        }
    }
    let commands: usize = batch.iter().map(|(_, n)| n).sum();
    if batch.is_empty() {
        return Ok(());
    }
    let packed = pipe.get_packed_pipeline();
    let replies = conn
        .req_packed_commands(&packed, 0, commands)
        .context("reading small keys (pipeline)")?;
    if replies.len() != commands {
        return Err(anyhow!(
            "read pipeline: {} replies for {commands} commands",
            replies.len()
        ));
    }
    let mut at = 0;
    for (l, n) in batch {
        let r = &replies[at..at + n];
        at += n;
        let Class::Read(t, expire_at_ms) = classify(kind, &l, opts) else {
            unreachable!("BUG: only keys to read are batched")
        };
        match batch_whole(t, r) {
            Some(whole) => {
                emit(&KeyRecord {
                    db,
                    key: l.key,
                    part: 0,
                    flags: FLAG_LAST,
                    expire_at_ms,
                    value: whole.value(),
                })?;
                *report.keys_by_type.entry(t.name().to_string()).or_default() += 1;
            }
            None => export_key(conn, kind, l, opts, emit, report)?,
        }
    }
    Ok(())
}

/// A listed key with the TYPE and PTTL read for it at `read_at`.
struct Listed<'k> {
    db: u32,
    key: &'k [u8],
    ty: String,
    pttl: i64,
    read_at: u64,
}

/// What to do with a listed key, from its TYPE and PTTL.
enum Class {
    /// Deleted or expired since it was listed.
    Gone,
    /// A type kvferry does not know.
    Unknown,
    /// Not of a type asked for.
    Filtered,
    /// Read it as this type, with this absolute expiry.
    Read(KeyType, Option<u64>),
}

fn classify(kind: &ServerKind, l: &Listed, opts: &ScanOptions) -> Class {
    if l.ty == "none" || l.pttl == -2 {
        return Class::Gone;
    }
    let Some(t) = key_type(&l.ty) else {
        return Class::Unknown;
    };
    if !opts.types.is_empty() && !opts.types.contains(&t) {
        return Class::Filtered;
    }
    // Pika 4.0 answers PTTL 0 for streams and missing keys: never "expire now" (SERVERS.md).
    let expire_at_ms = match l.pttl {
        0 if matches!(kind, ServerKind::Pika(..)) => None,
        p if p >= 0 => Some(l.read_at + p as u64),
        _ => None,
    };
    Class::Read(t, expire_at_ms)
}

/// Exports one key; when it changes while read, asks TYPE and PTTL again and reads it again, up
/// to REREADS times, then reports it as failed.
fn export_key(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    mut l: Listed,
    opts: &ScanOptions,
    emit: &mut Emit,
    report: &mut DbReport,
) -> anyhow::Result<()> {
    for attempt in 0..=REREADS {
        if attempt > 0 {
            report.reread += 1;
            (l.ty, l.pttl) = redis::pipe()
                .cmd("TYPE")
                .arg(l.key)
                .cmd("PTTL")
                .arg(l.key)
                .query(conn)
                .context("TYPE/PTTL")?;
            l.read_at = now_ms();
        }
        let (t, expire_at_ms) = match classify(kind, &l, opts) {
            Class::Gone => {
                report.gone += 1;
                return Ok(());
            }
            Class::Unknown => {
                let p = Problem {
                    key: key_json(l.key),
                    reason: format!("unknown type {:?}", l.ty),
                };
                if opts.skip_unknown_types {
                    report.skipped_unknown.push(p)
                } else {
                    report.failed.push(p)
                }
                return Ok(());
            }
            Class::Filtered => {
                report.filtered += 1;
                return Ok(());
            }
            Class::Read(t, e) => (t, e),
        };
        let key = KeyRef {
            db: l.db,
            key: l.key,
            ty: t,
            expire_at_ms,
            flags: 0,
        };
        let outcome = read_key(conn, key, &opts.read, emit)
            .with_context(|| format!("reading {} {:?}", t.name(), Lossy(l.key)))?;
        match outcome {
            Outcome::Read { .. } => {
                *report.keys_by_type.entry(t.name().to_string()).or_default() += 1;
                return Ok(());
            }
            Outcome::Gone => {
                report.gone += 1;
                return Ok(());
            }
            Outcome::Changed(why) if attempt == REREADS => {
                let reason = format!("kept changing while read ({why})");
                report.failed.push(Problem {
                    key: key_json(l.key),
                    reason,
                });
            }
            Outcome::Changed(_) => {}
        }
    }
    Ok(())
}
