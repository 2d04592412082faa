//! Enumerating a Pika database with its stateless range scans instead of SCAN.
//!
//! Pika facts relied on (SERVERS.md, from Pika's source and from running 3.5.5 and 4.0.1):
//! - SCAN keeps its cursor on the server, in an LRU shared by all clients: concurrent scans
//!   overwrite each other, a forgotten cursor silently restarts, and on 3.5 with streams present
//!   it loops forever or skips keys. `PKSCANRANGE type start end [MATCH p] [LIMIT n]` has no
//!   server state: it replies `[next_key, keys]`, `next_key` empty when done, bounds inclusive,
//!   keys in bytewise order; so it resumes from a key, across restarts of Pika and of kvferry.
//! - It takes `string`, `hash`, `list`, `zset`, `set`, not streams. Streams are listed by
//!   `KEYS pattern stream` (3.5.3 and later).
//! - On 3.x one name can hold several types at once. PKSCANRANGE lists it under each type;
//!   `EXISTS` counts one per type, so EXISTS > 1 finds them. Each type is exported as its own
//!   occurrence flagged MULTI_TYPE (SPEC F-PART-3) and listed in the report; reads by type
//!   (HSCAN on the hash...) see only their own type. TYPE names only one type, so the type comes
//!   from the scan, never from TYPE. PTTL shows one type's TTL: all occurrences carry it.
//! - Pika 4.0 holds one type per key, and there PTTL is 0 for a missing key or any stream.

use anyhow::{anyhow, Context};
use redis::ConnectionLike;

use super::conn::ServerKind;
use super::link::{is_connection_error, Link};
use super::scan::{read_listed, DbReport, Listed, Out, Position, ScanOptions, PIKA_INTERNAL};
use super::throttle::Throttle;
use crate::format::consts::FLAG_MULTI_TYPE;
use crate::format::record::{KeyRecord, KeyType};

/// The passes, in order: one range scan per type, then streams.
const PASSES: [KeyType; 6] = [
    KeyType::String,
    KeyType::Hash,
    KeyType::List,
    KeyType::ZSet,
    KeyType::Set,
    KeyType::Stream,
];

/// True when the server answers PKSCANRANGE (detected, not assumed from the version).
pub fn has_range_scan(conn: &mut dyn ConnectionLike) -> bool {
    redis::cmd("PKSCANRANGE")
        .arg("string")
        .arg("")
        .arg("")
        .arg("LIMIT")
        .arg(1)
        .query::<redis::Value>(conn)
        .is_ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Exports database `db` (already SELECTed) pass by pass, from `from` if given. A lost connection
/// is recovered and the page done again from the same key: range positions survive restarts.
pub fn export_ranges(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    from: Option<(Position, DbReport)>,
    out: &mut dyn Out,
) -> anyhow::Result<DbReport> {
    let kind = link.server.kind.clone();
    let (mut report, mut pass, mut start) = match from {
        None => (DbReport::default(), 0, Vec::new()),
        Some((Position::Range { pass, start }, report)) => {
            let start = hex::decode(&start).map_err(|_| anyhow!("the checkpoint's range position is damaged"))?;
            (report, pass, start)
        }
        // A checkpoint taken with SCAN (the server lacked range scans then): start over.
        Some((Position::Scan { .. }, r)) => (
            DbReport {
                rescans: r.rescans + 1,
                reconnects: r.reconnects,
                ..DbReport::default()
            },
            0,
            Vec::new(),
        ),
    };
    while pass < PASSES.len() {
        let ty = PASSES[pass];
        if !opts.types.is_empty() && !opts.types.contains(&ty) {
            (pass, start) = (pass + 1, Vec::new());
            continue;
        }
        let mut page = DbReport::default();
        let mut emit = |r: &KeyRecord| out.record(r);
        let step = if ty == KeyType::Stream {
            stream_pass(&mut link.conn(throttle), &kind, db, opts, &mut emit, &mut page).map(|n| (Vec::new(), n))
        } else {
            range_page(
                &mut link.conn(throttle),
                &kind,
                db,
                ty,
                &start,
                opts,
                &mut emit,
                &mut page,
            )
        };
        match step {
            Ok((next, done)) => {
                report.merge(page);
                if next.is_empty() {
                    (pass, start) = (pass + 1, Vec::new());
                } else {
                    start = next;
                }
                let at = Position::Range {
                    pass,
                    start: hex::encode(&start),
                };
                out.page(done, &at, &report)?;
            }
            Err(e) if is_connection_error(&e) => {
                link.recover()?;
                report.reconnects += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// One page of a type's range scan; returns the next start key (empty: the pass is done) and
/// how many keys were listed.
#[allow(clippy::too_many_arguments)]
fn range_page(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    ty: KeyType,
    start: &[u8],
    opts: &ScanOptions,
    emit: &mut super::read::Emit,
    page: &mut DbReport,
) -> anyhow::Result<(Vec<u8>, u64)> {
    let mut cmd = redis::cmd("PKSCANRANGE");
    cmd.arg(ty.name()).arg(start).arg("");
    if let Some(p) = &opts.pattern {
        cmd.arg("MATCH").arg(p);
    }
    cmd.arg("LIMIT").arg(opts.count.max(1));
    let (next, keys): (Vec<u8>, Vec<Vec<u8>>) = cmd
        .query(conn)
        .with_context(|| format!("PKSCANRANGE {} from {:?}", ty.name(), String::from_utf8_lossy(start)))?;
    let n = keys.len() as u64;
    let keys = filter(keys, opts, page);
    let listed = list_typed(conn, kind, db, ty, &keys)?;
    read_listed(conn, kind, listed, opts, emit, page)?;
    Ok((next, n))
}

/// Streams: `KEYS pattern stream`, in pages of `count`. Servers without streams (before 3.5.3)
/// reject the type: then there are none.
fn stream_pass(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    opts: &ScanOptions,
    emit: &mut super::read::Emit,
    page: &mut DbReport,
) -> anyhow::Result<u64> {
    let pattern = opts.pattern.as_deref().unwrap_or("*");
    let keys: Vec<Vec<u8>> = match redis::cmd("KEYS").arg(pattern).arg("stream").query(conn) {
        Ok(k) => k,
        Err(e) if e.kind() == redis::ErrorKind::ResponseError && !matches!(kind, ServerKind::Pika(4.., _, _)) => {
            return Ok(0);
        }
        Err(e) => return Err(e).context("KEYS * stream"),
    };
    let n = keys.len() as u64;
    let keys = filter(keys, opts, page);
    for chunk in keys.chunks(opts.count.max(1)) {
        let listed = list_typed(conn, kind, db, KeyType::Stream, chunk)?;
        read_listed(conn, kind, listed, opts, emit, page)?;
    }
    Ok(n)
}

/// Drops Pika's internal slot-migration sets and excluded prefixes, counting them.
fn filter(keys: Vec<Vec<u8>>, opts: &ScanOptions, page: &mut DbReport) -> Vec<Vec<u8>> {
    keys.into_iter()
        .filter(|k| {
            let skip = opts.exclude_prefixes.iter().any(|p| k.starts_with(p))
                || PIKA_INTERNAL.iter().any(|p| k.starts_with(p));
            page.filtered += u64::from(skip);
            !skip
        })
        .collect()
}

/// PTTL, and on 3.x EXISTS (one per type, so > 1 means several types), of keys listed by type.
fn list_typed<'k>(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    ty: KeyType,
    keys: &'k [Vec<u8>],
) -> anyhow::Result<Vec<Listed<'k>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let multi_possible = !matches!(kind, ServerKind::Pika(4.., _, _)) && ty != KeyType::Stream;
    let per = 1 + usize::from(multi_possible);
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("PTTL").arg(k);
        if multi_possible {
            pipe.cmd("EXISTS").arg(k);
        }
    }
    let replies: Vec<redis::Value> = pipe.query(conn).context("PTTL/EXISTS pipeline")?;
    let read_at = now_ms();
    if replies.len() != per * keys.len() {
        return Err(anyhow!(
            "PTTL/EXISTS pipeline: {} replies for {} commands",
            replies.len(),
            per * keys.len()
        ));
    }
    keys.iter()
        .zip(replies.chunks(per))
        .map(|(k, r)| {
            let pttl: i64 = redis::from_redis_value(&r[0]).context("PTTL")?;
            let types: i64 = match r.get(1) {
                Some(v) => redis::from_redis_value(v).context("EXISTS")?,
                None => 1,
            };
            Ok(Listed {
                db,
                key: k,
                ty: ty.name().to_string(),
                pttl,
                read_at,
                fixed: true,
                flags: if types > 1 { FLAG_MULTI_TYPE } else { 0 },
            })
        })
        .collect()
}
