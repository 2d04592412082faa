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

use super::list::{filter, Listed, Lister, Page, Position, ScanOptions};
use crate::format::consts::FLAG_MULTI_TYPE;
use crate::format::record::KeyType;
use crate::format::snapshot::BinlogPosition;
use crate::server::conn::ServerKind;
use crate::util::now_ms;

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

/// The range-scan enumeration: pass by pass (a type, then streams), each from a start key.
/// Positions are keys, so they hold across restarts of the server and of kvferry.
pub(crate) struct RangeLister<'o> {
    opts: &'o ScanOptions,
    kind: ServerKind,
    pass: usize,
    start: Vec<u8>,
    /// The streams still to hand out, once `KEYS * stream` has listed them.
    streams: Option<std::vec::IntoIter<Vec<u8>>>,
}

impl<'o> RangeLister<'o> {
    /// Starts at the beginning, or at `at` (a pass and a start key, from a checkpoint).
    pub fn new(kind: &ServerKind, opts: &'o ScanOptions, at: Option<(usize, Vec<u8>)>) -> RangeLister<'o> {
        let (pass, start) = at.unwrap_or_default();
        RangeLister {
            opts,
            kind: kind.clone(),
            pass,
            start,
            streams: None,
        }
    }

    fn wanted(&self, ty: KeyType) -> bool {
        self.opts.types.is_empty() || self.opts.types.contains(&ty)
    }

    fn position(&self) -> Position {
        Position::Range {
            pass: self.pass,
            start: hex::encode(&self.start),
        }
    }

    /// One page of a type's range scan.
    fn range_page(&mut self, conn: &mut dyn ConnectionLike, ty: KeyType) -> anyhow::Result<Page> {
        let mut cmd = redis::cmd("PKSCANRANGE");
        cmd.arg(ty.name()).arg(&self.start).arg("");
        if let Some(p) = &self.opts.pattern {
            cmd.arg("MATCH").arg(p);
        }
        cmd.arg("LIMIT").arg(self.opts.count.max(1));
        let (next, keys): (Vec<u8>, Vec<Vec<u8>>) = cmd.query(conn).with_context(|| {
            format!(
                "PKSCANRANGE {} from {:?}",
                ty.name(),
                String::from_utf8_lossy(&self.start)
            )
        })?;
        let listed = keys.len() as u64;
        let (keys, filtered) = filter(keys, self.opts, true);
        if next.is_empty() {
            (self.pass, self.start) = (self.pass + 1, Vec::new());
        } else {
            self.start = next;
        }
        Ok(Page {
            keys,
            ty: Some(ty),
            listed,
            filtered,
            at: self.position(),
        })
    }

    /// Streams: `KEYS pattern stream`, sorted and handed out in pages. Servers without streams
    /// (before 3.5.3) reject the type: then there are none. In this pass the position is the
    /// last stream handed out, so a resume lists them again and skips those up to it: no stream
    /// is exported twice.
    fn stream_page(&mut self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Page> {
        if self.streams.is_none() {
            let pattern = self.opts.pattern.as_deref().unwrap_or("*");
            let mut keys: Vec<Vec<u8>> = match redis::cmd("KEYS").arg(pattern).arg("stream").query(conn) {
                Ok(k) => k,
                Err(e)
                    if e.kind() == redis::ErrorKind::ResponseError
                        && !matches!(self.kind, ServerKind::Pika(4.., _, _)) =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e).context("KEYS * stream"),
            };
            keys.sort_unstable();
            keys.dedup();
            keys.retain(|k| self.start.is_empty() || *k > self.start);
            self.streams = Some(keys.into_iter());
        }
        let it = self.streams.as_mut().expect("BUG: listed above");
        let keys: Vec<Vec<u8>> = it.by_ref().take(self.opts.count.max(1)).collect();
        if it.len() == 0 {
            (self.pass, self.start, self.streams) = (self.pass + 1, Vec::new(), None);
        } else if let Some(last) = keys.last() {
            self.start = last.clone();
        }
        let listed = keys.len() as u64;
        let (keys, filtered) = filter(keys, self.opts, true);
        Ok(Page {
            keys,
            ty: Some(KeyType::Stream),
            listed,
            filtered,
            at: self.position(),
        })
    }
}

impl Lister for RangeLister<'_> {
    fn next(&mut self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Option<Page>> {
        while self.pass < PASSES.len() && !self.wanted(PASSES[self.pass]) {
            (self.pass, self.start) = (self.pass + 1, Vec::new());
        }
        let Some(&ty) = PASSES.get(self.pass) else {
            return Ok(None);
        };
        let page = if ty == KeyType::Stream {
            self.stream_page(conn)?
        } else {
            self.range_page(conn, ty)?
        };
        Ok(Some(page))
    }

    fn reconnected(&mut self, _restarted: bool, _run_id: Option<&str>) -> bool {
        false // a range position is a key: still valid
    }
}

/// PTTL, and on 3.x EXISTS (one per type, so > 1 means several types), of keys listed by type.
pub(crate) fn list_typed<'k>(
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

/// Each database's binlog position from Pika's `INFO replication`: lines
/// `db0:binlog_offset=FILENUM OFFSET,safety_purge=...` (the same in 3.5 and 4.0). The position
/// is where the next write goes: every write after it is in the binlog from there on.
pub fn binlog_positions(info: &str) -> std::collections::BTreeMap<u32, BinlogPosition> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().strip_prefix("db")?.split_once(":binlog_offset=")?;
            let (filenum, offset) = rest.split(',').next()?.trim().split_once(' ')?;
            Some((
                db.parse().ok()?,
                BinlogPosition {
                    filenum: filenum.trim().parse().ok()?,
                    offset: offset.trim().parse().ok()?,
                },
            ))
        })
        .collect()
}

/// Reads [`binlog_positions`] from the server.
pub fn read_binlog_positions(
    conn: &mut dyn ConnectionLike,
) -> anyhow::Result<std::collections::BTreeMap<u32, BinlogPosition>> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(conn)
        .context("INFO replication (the binlog positions)")?;
    Ok(binlog_positions(&info))
}

#[cfg(test)]
mod binlog_tests {
    use super::*;

    /// As Pika 4.0.1 answers (seen), with a second database and a slave attached.
    const INFO: &str = "# Replication(MASTER)\r\nrole:master\r\nReplicationID:\r\nconnected_slaves:1\r\n\
        slave0:ip=127.0.0.1,port=21333,conn_fd=88,lag=(db0:0)\r\n\
        db0:binlog_offset=0 151802,safety_purge=none\r\n\
        db3:binlog_offset=12 99,safety_purge=write2file1\r\nslave_repl_offset:151901\r\n";

    #[test]
    fn positions_are_read_per_database() {
        let p = binlog_positions(INFO);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[&0],
            BinlogPosition {
                filenum: 0,
                offset: 151802
            }
        );
        assert_eq!(
            p[&3],
            BinlogPosition {
                filenum: 12,
                offset: 99
            }
        );
        assert!(binlog_positions("# Replication\r\nrole:master\r\n").is_empty());
    }
}
