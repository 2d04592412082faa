//! The source line, stage 2: typed reads. Each listed key is classified by its TYPE and PTTL
//! (gone, filtered, of an unknown type, or to read with its absolute expiry); small keys are
//! read whole in one pipeline per page, big ones on their own in parts (read.rs); a key that
//! changes while read is read again. The records go to the caller's `emit`, and every key is
//! counted in a [`DbReport`] or named in it: nothing is dropped silently.
//!
//! Pika facts relied on (SERVERS.md): TYPE answers `streams` for a stream on 4.0; PTTL answers
//! 0 for a missing key or any stream on 4.0 (never "expire now"); a HyperLogLog is a
//! 131072-byte string in Pika's own encoding.

use std::collections::{BTreeMap, HashSet};

use anyhow::{anyhow, Context};
use redis::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::list::{Listed, ScanOptions};
use super::read::{batch_commands, batch_whole, read_key, Emit, KeyRef, Outcome};
use crate::format::consts::{FLAG_LAST, FLAG_MULTI_TYPE, FLAG_PIKA_HLL};
use crate::format::record::{KeyRecord, KeyType, Lossy};
use crate::server::conn::ServerKind;
use crate::util::{key_json, now_ms, Problem};

/// How many times a key that changed while read is read again before it is reported as failed.
const REREADS: usize = 3;

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
    /// Keys the source held under several types at once (Pika <= 3.5): every type was exported,
    /// flagged MULTI_TYPE; the target can hold only one (import applies a policy).
    #[serde(default)]
    pub multi_type: Vec<Problem>,
    /// Pika HyperLogLog keys, exported as opaque strings flagged PIKA_HLL: Kvrocks' and Redis'
    /// PFCOUNT cannot read Pika's encoding.
    #[serde(default)]
    pub pika_hll: Vec<Problem>,
    /// `export --sample`: keys left out of the sample (counted in `filtered` too).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsampled: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DbReport {
    /// Adds the counts of a completed page.
    pub(crate) fn merge(&mut self, page: DbReport) {
        for (t, n) in page.keys_by_type {
            *self.keys_by_type.entry(t).or_default() += n;
        }
        self.gone += page.gone;
        self.filtered += page.filtered;
        self.skipped_unknown.extend(page.skipped_unknown);
        self.failed.extend(page.failed);
        self.reread += page.reread;
        self.multi_type.extend(page.multi_type);
        self.pika_hll.extend(page.pika_hll);
        self.unsampled += page.unsampled;
    }
}

/// The type TYPE names, if kvferry can export it.
fn key_type(name: &str) -> Option<KeyType> {
    match name {
        "streams" => Some(KeyType::Stream), // Pika 4.0 (SERVERS.md)
        other => KeyType::from_name(other),
    }
}

/// Reads listed keys: small ones whole in one pipeline, the others, and any key the batch did
/// not get whole, on their own. Each key whose outcome is in `report` goes into `done`, so
/// that a page read again after a lost connection skips them: no key is written twice, none
/// counted twice, and a page too big for a connection that is cut after so many bytes still
/// progresses.
pub(crate) fn read_listed(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    listed: Vec<Listed>,
    opts: &ScanOptions,
    emit: &mut Emit,
    report: &mut DbReport,
    done: &mut HashSet<Vec<u8>>,
) -> anyhow::Result<()> {
    // Small keys are read whole in one more pipeline; the others, and any key that the batch
    // did not get whole, on their own.
    let mut batch = Vec::new();
    let mut pipe = redis::pipe();
    let lengths = matches!(kind, ServerKind::Pika(..)) || opts.check_lengths;
    for l in listed {
        match classify(kind, &l, opts) {
            Class::Read(t, _) => match batch_commands(&mut pipe, l.key, t, lengths) {
                0 => {
                    let key = l.key;
                    export_key(conn, kind, l, opts, emit, report)?;
                    done.insert(key.to_vec());
                }
                n => batch.push((l, n)),
            },
            _ => {
                let key = l.key;
                export_key(conn, kind, l, opts, emit, report)?;
                done.insert(key.to_vec());
            }
        }
    }
    let commands: usize = batch.iter().map(|(_, n)| n).sum();
    if batch.is_empty() {
        return Ok(());
    }
    let packed = pipe.get_packed_pipeline();
    let replies = conn.req_packed_commands(&packed, 0, commands).with_context(|| {
        let (first, last) = (&batch[0].0.key, &batch[batch.len() - 1].0.key);
        format!(
            "reading {} small keys, {:?} to {:?} (one pipeline of GETRANGE/HSCAN/LRANGE/SSCAN/ZSCAN)",
            batch.len(),
            Lossy(first),
            Lossy(last)
        )
    })?;
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
                    db: l.db,
                    key: l.key,
                    part: 0,
                    flags: FLAG_LAST | l.flags,
                    expire_at_ms,
                    value: whole.value(),
                })?;
                count_read(report, &l, t);
                done.insert(l.key.to_vec());
            }
            None => {
                let key = l.key;
                export_key(conn, kind, l, opts, emit, report)?;
                done.insert(key.to_vec());
            }
        }
    }
    Ok(())
}

/// `export --sample`: keeps the listed keys of the sample; the others count as filtered
/// (and unsampled), after their length was noted for the sample's coverage of types and sizes.
pub(crate) fn sample_split<'k>(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    listed: Vec<Listed<'k>>,
    sample: &super::sample::Sample,
    opts: &ScanOptions,
    report: &mut DbReport,
    done: &mut HashSet<Vec<u8>>,
) -> anyhow::Result<Vec<Listed<'k>>> {
    let mut keep = Vec::new();
    let mut note = Vec::new();
    for l in listed {
        let sampled = sample.contains(l.key);
        if let Class::Read(t, _) = classify(kind, &l, opts) {
            note.push((l.key, t, sampled));
        }
        if sampled {
            keep.push(l);
        } else {
            report.filtered += 1;
            report.unsampled += 1;
            done.insert(l.key.to_vec());
        }
    }
    sample.note(conn, &note)?;
    Ok(keep)
}

/// Length of the string Pika stores a HyperLogLog as (SERVERS.md: PFADD stores a 131072-byte
/// string readable with GET; TYPE says string).
const PIKA_HLL_LEN: u64 = 131_072;

/// True when string `key` is a Pika HyperLogLog (SERVERS.md): on Pika, a 131072-byte string;
/// on 4.0 also one that PFCOUNT accepts (there PFCOUNT succeeds only on HLL keys; on 3.x any
/// string of that length is read as registers, so the length decides). Never on other servers.
fn is_pika_hll(conn: &mut dyn ConnectionLike, kind: &ServerKind, key: &[u8]) -> anyhow::Result<bool> {
    if !matches!(kind, ServerKind::Pika(..)) {
        return Ok(false);
    }
    let len: u64 = redis::cmd("STRLEN").arg(key).query(conn).context("STRLEN")?;
    Ok(pika_hll(kind, len, || {
        redis::cmd("PFCOUNT").arg(key).query::<i64>(conn).is_ok()
    }))
}

/// The rule of [`is_pika_hll`], given the length and a way to ask PFCOUNT.
fn pika_hll(kind: &ServerKind, len: u64, pfcount_accepts: impl FnOnce() -> bool) -> bool {
    match kind {
        ServerKind::Pika(major, ..) if len == PIKA_HLL_LEN => *major < 4 || pfcount_accepts(),
        _ => false,
    }
}

/// Counts a key read, and lists it by name when the target needs telling.
fn count_read(report: &mut DbReport, l: &Listed, t: KeyType) {
    *report.keys_by_type.entry(t.name().to_string()).or_default() += 1;
    if l.flags & FLAG_MULTI_TYPE != 0 {
        report.multi_type.push(Problem {
            key: key_json(l.key),
            reason: format!("also held under other types; this is its {} occurrence", t.name()),
        });
    }
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
    let Some(t) = key_type(&l.ty) else {
        return if l.ty == "none" { Class::Gone } else { Class::Unknown };
    };
    // Pika streams have no TTL: PTTL answers -2 on 3.5 (streams are invisible to the generic
    // commands there) and 0 on 4.0 (SERVERS.md); whether one is gone, XLEN/XINFO tell.
    let pika = matches!(kind, ServerKind::Pika(..));
    if pika && t == KeyType::Stream && l.fixed {
        return Class::Read(t, None);
    }
    if l.pttl == -2 {
        return Class::Gone;
    }
    if !opts.types.is_empty() && !opts.types.contains(&t) {
        return Class::Filtered;
    }
    // Pika 4.0 answers PTTL 0 for streams and missing keys: never "expire now" (SERVERS.md).
    // Pika 3.x counts whole seconds and answers 0 in a key's last second: it expires now (seen
    // on 3.5.5; taken for "no TTL", such a key lived on for ever on the target).
    let expire_at_ms = match l.pttl {
        0 if matches!(kind, ServerKind::Pika(major, ..) if *major >= 4) => None,
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
            if l.fixed {
                l.pttl = redis::cmd("PTTL").arg(l.key).query(conn).context("PTTL")?;
            } else {
                (l.ty, l.pttl) = redis::pipe()
                    .cmd("TYPE")
                    .arg(l.key)
                    .cmd("PTTL")
                    .arg(l.key)
                    .query(conn)
                    .context("TYPE/PTTL")?;
            }
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
        let mut flags = l.flags;
        if t == KeyType::String && is_pika_hll(conn, kind, l.key)? {
            flags |= FLAG_PIKA_HLL;
        }
        let key = KeyRef {
            db: l.db,
            key: l.key,
            ty: t,
            expire_at_ms,
            flags,
        };
        let outcome = read_key(conn, key, &opts.read, emit)
            .with_context(|| format!("reading {} {:?}", t.name(), Lossy(l.key)))?;
        match outcome {
            Outcome::Read { .. } => {
                count_read(report, &l, t);
                if flags & FLAG_PIKA_HLL != 0 {
                    report.pika_hll.push(Problem {
                        key: key_json(l.key),
                        reason: "a Pika HyperLogLog, copied as an opaque string: PFCOUNT on Kvrocks or Redis will not read it".into(),
                    });
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pika_hll_rule() {
        let never = || panic!("PFCOUNT asked when it cannot matter");
        assert!(!pika_hll(&ServerKind::Redis, PIKA_HLL_LEN, never));
        assert!(!pika_hll(&ServerKind::Pika(4, 0, 1), PIKA_HLL_LEN - 1, never));
        assert!(pika_hll(&ServerKind::Pika(3, 5, 5), PIKA_HLL_LEN, never));
        assert!(pika_hll(&ServerKind::Pika(4, 0, 1), PIKA_HLL_LEN, || true));
        assert!(!pika_hll(&ServerKind::Pika(4, 0, 1), PIKA_HLL_LEN, || false));
    }

    #[test]
    fn classify_follows_pika_ttl_rules() {
        let opts = ScanOptions::default();
        let l = |ty: &str, pttl: i64, fixed: bool| Listed {
            db: 0,
            key: b"k",
            ty: ty.into(),
            pttl,
            read_at: 1_000,
            fixed,
            flags: 0,
        };
        let pika4 = ServerKind::Pika(4, 0, 1);
        let read = |c: Class| match c {
            Class::Read(t, e) => Some((t, e)),
            _ => None,
        };
        // Pika 4.0: PTTL 0 is "missing or stream", never "expire now".
        assert_eq!(
            read(classify(&pika4, &l("hash", 0, false), &opts)),
            Some((KeyType::Hash, None))
        );
        assert_eq!(
            read(classify(&ServerKind::Redis, &l("hash", 0, false), &opts)),
            Some((KeyType::Hash, Some(1_000)))
        );
        // TYPE `streams` (4.0) is a stream; listed streams on 3.5 answer PTTL -2 and are read.
        assert_eq!(
            read(classify(&pika4, &l("streams", 0, false), &opts)),
            Some((KeyType::Stream, None))
        );
        let pika35 = ServerKind::Pika(3, 5, 5);
        assert_eq!(
            read(classify(&pika35, &l("stream", -2, true), &opts)),
            Some((KeyType::Stream, None))
        );
        assert!(matches!(classify(&pika35, &l("hash", -2, true), &opts), Class::Gone));
        // Pika 3.x: PTTL 0 is a key in its last second, expiring now (whole seconds).
        assert_eq!(
            read(classify(&pika35, &l("hash", 0, true), &opts)),
            Some((KeyType::Hash, Some(1_000)))
        );
        assert!(matches!(
            classify(&ServerKind::Redis, &l("none", -2, false), &opts),
            Class::Gone
        ));
        assert!(matches!(
            classify(&ServerKind::Redis, &l("pkhash", -1, false), &opts),
            Class::Unknown
        ));
        assert_eq!(
            read(classify(&ServerKind::Redis, &l("string", 500, false), &opts)),
            Some((KeyType::String, Some(1_500)))
        );
    }
}
