//! Copying keys again from the source to the target: the keys a round of binlog items touched.
//! Keys are copied, not commands: the export read each key at its own moment, so replaying
//! INCR or RPUSH on top of it would apply some writes twice; the key's current value converges.
//!
//! A round: every touched key is deleted on the target (with `--multi-type suffix`, its
//! `KEY:TYPE` names too), then read from the source by type as an export reads it
//! (source/drive.rs, with a lister of exactly these keys) and written as an import writes it
//! (target/build.rs), in pipelined batches of bounded size, so one big key never sits whole in
//! memory. A key the source no longer has stays deleted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::ConnectionLike;

use crate::format::consts::FLAG_MULTI_TYPE;
use crate::format::record::{KeyRecord, KeyType};
use crate::server::conn::ServerKind;
use crate::server::link::Link;
use crate::server::throttle::Throttle;
use crate::source::drive::drive;
use crate::source::list::{filter, Lister, Page};
use crate::source::{DbReport, Out, Position, ScanOptions};
use crate::target::build::{self, Dialect, KeyState, WCmd};
use crate::target::dest::{Dest, MultiType};
use crate::util::{key_json, Problem};

/// Commands or bytes after which a batch of writes is sent.
const BATCH_COMMANDS: usize = 1000;
const BATCH_BYTES: usize = 4 << 20;

/// The types Pika keeps apart, in the order an export lists them (pika.rs's passes).
const PIKA_TYPES: [KeyType; 5] = [
    KeyType::String,
    KeyType::Hash,
    KeyType::List,
    KeyType::ZSet,
    KeyType::Set,
];

/// Lists exactly the given keys: on Pika by type (TYPE names only one of a 3.x key's types and
/// none of a stream, so see by_type); elsewhere in one page whose types TYPE tells.
struct KeysLister<'k> {
    keys: &'k [Vec<u8>],
    pika: bool,
    /// Pika 4: one type per key, so EXISTS, TYPE and XLEN tell it.
    one_type: bool,
    opts: &'k ScanOptions,
    pages: Option<std::vec::IntoIter<Page>>,
}

fn at() -> Position {
    Position::Scan {
        cursor: "0".into(),
        run_id: None,
    }
}

impl KeysLister<'_> {
    /// Pika 4 (one type per key): EXISTS (0 for a deleted collection, whose TYPE still answers
    /// until compaction), TYPE, and XLEN for streams (which TYPE does not name, and a deleted
    /// one answers EXISTS 1 with no entries). Three commands per key, pipelined; a range scan from
    /// the key to itself, per type, costs Pika a scan of the keys after it when the type has none.
    fn by_type_4(&self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Vec<Page>> {
        let mut found: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PIKA_TYPES.len() + 1];
        for chunk in self.keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("EXISTS").arg(k).cmd("TYPE").arg(k).cmd("XLEN").arg(k);
            }
            let replies = conn
                .req_packed_commands(&pipe.get_packed_pipeline(), 0, 3 * chunk.len())
                .context("EXISTS / TYPE / XLEN of the touched keys")?;
            if replies.len() != 3 * chunk.len() {
                bail!("{} replies to {} commands", replies.len(), 3 * chunk.len());
            }
            for (k, r) in chunk.iter().zip(replies.chunks(3)) {
                if matches!(r[2], redis::Value::Int(n) if n > 0) {
                    found[PIKA_TYPES.len()].push(k.clone());
                    continue;
                }
                if !matches!(r[0], redis::Value::Int(n) if n > 0) {
                    continue; // gone
                }
                let ty = match &r[1] {
                    redis::Value::SimpleString(t) => t.clone(),
                    redis::Value::BulkString(t) => String::from_utf8_lossy(t).into_owned(),
                    _ => String::new(),
                };
                if let Some(i) = PIKA_TYPES.iter().position(|t| t.name() == ty) {
                    found[i].push(k.clone());
                }
            }
        }
        Ok(self.pages_of(found))
    }

    /// Pika 3.5, where a name can hold several types: PTYPE lists them all but streams, which
    /// XLEN tells. Two commands per key, pipelined. None when the server lacks PTYPE (3.3, 3.4).
    fn by_type_ptype(&self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Option<Vec<Page>>> {
        let mut found: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PIKA_TYPES.len() + 1];
        for chunk in self.keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("PTYPE").arg(k).cmd("XLEN").arg(k);
            }
            let replies = conn
                .req_packed_commands(&pipe.get_packed_pipeline(), 0, 2 * chunk.len())
                .context("PTYPE / XLEN of the touched keys")?;
            if replies.len() != 2 * chunk.len() {
                bail!("{} replies to {} commands", replies.len(), 2 * chunk.len());
            }
            for (k, r) in chunk.iter().zip(replies.chunks(2)) {
                let types = match &r[0] {
                    redis::Value::Array(v) => v,
                    redis::Value::ServerError(e) if e.details().is_some_and(|d| d.contains("unknown")) => {
                        return Ok(None);
                    }
                    other => bail!("PTYPE of {} answered {other:?}", key_json(k)),
                };
                for t in types {
                    let name = match t {
                        redis::Value::SimpleString(t) => t.as_bytes(),
                        redis::Value::BulkString(t) => t.as_slice(),
                        _ => continue,
                    };
                    if let Some(i) = PIKA_TYPES.iter().position(|t| t.name().as_bytes() == name) {
                        found[i].push(k.clone());
                    }
                }
                // A deleted Pika stream keeps answering until compaction, with no entries.
                if matches!(r[1], redis::Value::Int(n) if n > 0) {
                    found[PIKA_TYPES.len()].push(k.clone());
                }
            }
        }
        Ok(Some(self.pages_of(found)))
    }

    /// Which of the keys exist under each type: by_type_4 on Pika 4, by_type_ptype on 3.5, and
    /// on a Pika without PTYPE a range scan per type from the key to itself, and XLEN for streams
    /// (slow on a big database: Pika scans on past the key when the type has none).
    fn by_type(&self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Vec<Page>> {
        if self.one_type {
            return self.by_type_4(conn);
        }
        if let Some(pages) = self.by_type_ptype(conn)? {
            return Ok(pages);
        }
        let mut found: Vec<Vec<Vec<u8>>> = vec![Vec::new(); PIKA_TYPES.len() + 1];
        for chunk in self.keys.chunks(200) {
            let mut pipe = redis::pipe();
            for k in chunk {
                for t in PIKA_TYPES {
                    pipe.cmd("PKSCANRANGE").arg(t.name()).arg(k).arg(k).arg("LIMIT").arg(1);
                }
                pipe.cmd("XLEN").arg(k);
            }
            // Replies come back whole, errors among them: XLEN of a key of another type is
            // WRONGTYPE on Pika 4, which says only that it is no stream.
            let n = chunk.len() * (PIKA_TYPES.len() + 1);
            let replies: Vec<redis::Value> = conn
                .req_packed_commands(&pipe.get_packed_pipeline(), 0, n)
                .context("PKSCANRANGE / XLEN of the touched keys")?;
            let per = PIKA_TYPES.len() + 1;
            if replies.len() != per * chunk.len() {
                bail!("{} replies to {} commands", replies.len(), per * chunk.len());
            }
            for (k, r) in chunk.iter().zip(replies.chunks(per)) {
                for (i, reply) in r[..PIKA_TYPES.len()].iter().enumerate() {
                    let held = match reply {
                        redis::Value::Array(v) => v
                            .get(1)
                            .is_some_and(|ks| matches!(ks, redis::Value::Array(ks) if !ks.is_empty())),
                        _ => false,
                    };
                    if held {
                        found[i].push(k.clone());
                    }
                }
                // A deleted Pika stream keeps answering until compaction, with no entries.
                if matches!(r[PIKA_TYPES.len()], redis::Value::Int(n) if n > 0) {
                    found[PIKA_TYPES.len()].push(k.clone());
                }
            }
        }
        Ok(self.pages_of(found))
    }

    /// A page per type, of the keys found under it.
    fn pages_of(&self, found: Vec<Vec<Vec<u8>>>) -> Vec<Page> {
        let types = PIKA_TYPES.iter().copied().chain([KeyType::Stream]);
        types
            .zip(found)
            .filter(|(t, _)| self.opts.types.is_empty() || self.opts.types.contains(t))
            .map(|(t, keys)| {
                let listed = keys.len() as u64;
                let (keys, filtered) = filter(keys, self.opts, true);
                Page {
                    keys,
                    ty: Some(t),
                    listed,
                    filtered,
                    at: at(),
                }
            })
            .collect()
    }
}

impl Lister for KeysLister<'_> {
    fn next(&mut self, conn: &mut dyn ConnectionLike) -> anyhow::Result<Option<Page>> {
        if self.pages.is_none() {
            let pages = if self.pika {
                self.by_type(conn)?
            } else {
                let (keys, filtered) = filter(self.keys.to_vec(), self.opts, false);
                vec![Page {
                    keys,
                    ty: None,
                    listed: self.keys.len() as u64,
                    filtered,
                    at: at(),
                }]
            };
            // Pages of the listing's size, as a scan hands them out: the readers pipeline a page.
            let size = self.opts.count.max(1);
            let pages: Vec<Page> = pages
                .into_iter()
                .flat_map(|p| {
                    let n = p.keys.len().div_ceil(size).max(1);
                    let (ty, filtered, listed) = (p.ty, p.filtered, p.listed);
                    let mut chunks: Vec<Page> = p
                        .keys
                        .chunks(size)
                        .map(|c| Page {
                            keys: c.to_vec(),
                            ty,
                            listed: c.len() as u64,
                            filtered: 0,
                            at: at(),
                        })
                        .collect();
                    if chunks.is_empty() {
                        chunks.push(Page {
                            keys: Vec::new(),
                            ty,
                            listed: 0,
                            filtered: 0,
                            at: at(),
                        });
                    }
                    // The filtered keys count once, with the page's first chunk.
                    chunks[0].filtered = filtered;
                    chunks[0].listed += listed - chunks.iter().map(|c| c.keys.len() as u64).sum::<u64>();
                    debug_assert!(chunks.len() == n);
                    chunks
                })
                .collect();
            self.pages = Some(pages.into_iter());
        }
        Ok(self.pages.as_mut().and_then(Iterator::next))
    }

    fn reconnected(&mut self, restarted: bool, _run_id: Option<&str>) -> bool {
        if restarted {
            self.pages = None; // asked again, from the first key
        }
        restarted
    }
}

/// What copying came to, added up over rounds.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Copied {
    /// Keys written again (each type of a multi-type key counts once).
    pub written: u64,
    /// Touched keys the source no longer had: deleted on the target.
    pub deleted: u64,
    /// Keys that could not be copied, by name, with the reason (the newest 1000).
    pub failed: Vec<Problem>,
    pub failed_count: u64,
    /// Multi-type occurrences not written under their name (`first`: skipped, `suffix`: renamed).
    pub multi_type: u64,
}

impl Copied {
    /// Adds a round's figures.
    pub fn add(&mut self, round: Copied) {
        self.written += round.written;
        self.deleted += round.deleted;
        self.multi_type += round.multi_type;
        self.failed_count += round.failed_count;
        for p in round.failed {
            if self.failed.len() == 1000 {
                self.failed.remove(0);
            }
            self.failed.push(p);
        }
    }

    fn fail(&mut self, key: &[u8], reason: String) {
        self.failed_count += 1;
        if self.failed.len() == 1000 {
            self.failed.remove(0);
        }
        self.failed.push(Problem {
            key: key_json(key),
            reason,
        });
    }
}

/// Where the round's records go: packed writes to the target, sent in batches.
struct Writer<'w> {
    conn: &'w mut (dyn ConnectionLike + Send),
    throttle: &'w Throttle,
    dialect: Dialect,
    prefix: &'w [u8],
    /// The destination, as errors name it.
    describe: &'w str,
    policy: MultiType,
    /// The batch: packed commands, and for each its key.
    buf: Vec<u8>,
    keys: Vec<Vec<u8>>,
    names: Vec<&'static str>,
    state: KeyState,
    /// The key being written, the types it was written under, and whether it is being skipped.
    current: Option<(Vec<u8>, KeyType)>,
    skipping: bool,
    seen: Vec<(Vec<u8>, KeyType)>,
    copied: &'w mut Copied,
    /// Called every few seconds while a round runs (the replication keepalive).
    tick: &'w mut (dyn FnMut() -> anyhow::Result<()> + Send),
    last_tick: Instant,
}

impl Writer<'_> {
    fn push(&mut self, key: &[u8], cmds: Vec<WCmd>) -> anyhow::Result<()> {
        for c in cmds {
            self.buf.extend_from_slice(c.packed());
            self.keys.push(key.to_vec());
            self.names.push(c.name);
        }
        if self.keys.len() >= BATCH_COMMANDS || self.buf.len() >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> anyhow::Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let n = self.keys.len();
        self.throttle.take(n as u64);
        let t = Instant::now();
        let replies = self
            .conn
            .req_packed_commands(&self.buf, 0, n)
            .with_context(|| format!("{}: a batch of writes", self.describe))?;
        self.throttle.answered(t.elapsed());
        let mut failed_key: Option<&[u8]> = None;
        for (i, r) in replies.iter().enumerate() {
            if let redis::Value::ServerError(e) = r {
                if failed_key != Some(&self.keys[i]) {
                    let k = self.keys[i].clone();
                    self.copied
                        .fail(&k, format!("{}: {}", self.names[i], e.details().unwrap_or(e.code())));
                    failed_key = Some(&self.keys[i]);
                }
            }
        }
        self.buf.clear();
        self.keys.clear();
        self.names.clear();
        if self.last_tick.elapsed() >= Duration::from_secs(2) {
            (self.tick)()?;
            self.last_tick = Instant::now();
        }
        Ok(())
    }
}

impl Out for Writer<'_> {
    fn record(&mut self, r: &KeyRecord) -> anyhow::Result<()> {
        let ty = r.key_type();
        if r.part == 0 {
            self.state = KeyState::default();
            let same_key_before = self.seen.iter().filter(|(k, _)| k == r.key).count();
            let multi = r.flags & FLAG_MULTI_TYPE != 0;
            self.skipping = false;
            let mut name: Vec<u8> = [self.prefix, r.key].concat();
            if multi && same_key_before > 0 {
                match self.policy {
                    MultiType::Fail => self.skipping = true,
                    MultiType::First => {
                        self.skipping = true;
                        self.copied.multi_type += 1;
                    }
                    MultiType::Suffix => {
                        name.push(b':');
                        name.extend_from_slice(ty.name().as_bytes());
                        self.copied.multi_type += 1;
                    }
                }
            } else if multi && self.policy == MultiType::Fail {
                // As the import refuses before writing: the round is not acknowledged, so a
                // follow resumed with a policy copies the key again.
                bail!(
                    "{} is held under several types on the source; with --multi-type fail (the \
                     default) it is not written: give --multi-type first or suffix, as the import did",
                    key_json(r.key)
                );
            }
            self.seen.push((r.key.to_vec(), ty));
            self.current = Some((name, ty));
            if !self.skipping {
                self.copied.written += 1;
            }
        }
        if self.skipping {
            return Ok(());
        }
        let Some((name, _)) = self.current.clone() else {
            bail!("BUG: a part of a key before its part 0");
        };
        let mut cmds = Vec::new();
        build::part(
            &self.dialect,
            &name,
            r,
            &mut self.state,
            false,
            crate::util::now_ms(),
            &mut cmds,
        );
        self.push(r.key, cmds)
    }

    fn page(&mut self, _keys: u64, _next: &Position, _report: &DbReport, _quiet: bool) -> anyhow::Result<()> {
        self.send()
    }

    fn checkpoint_due(&self) -> bool {
        false
    }

    fn start_over(&mut self) -> anyhow::Result<()> {
        // The source restarted: the keys are read again from the first, each deleted again
        // before it is written, so what was written meanwhile does not matter.
        self.send()?;
        self.seen.clear();
        Ok(())
    }
}

/// Copies `keys` of database `db` from the source behind `link` to `target` (a connection on the
/// destination's database): deletes them there, then writes what the source holds now.
#[allow(clippy::too_many_arguments)]
pub fn copy_keys(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    keys: &BTreeSet<Vec<u8>>,
    target: &mut (dyn ConnectionLike + Send),
    dest: &Dest,
    dialect: Dialect,
    policy: MultiType,
    copied: &mut Copied,
    tick: &mut (dyn FnMut() -> anyhow::Result<()> + Send),
) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = keys.iter().cloned().collect();
    let pika = matches!(link.server.kind, ServerKind::Pika(..));
    let multi_possible = pika && !matches!(link.server.kind, ServerKind::Pika(4.., _, _));
    // Every touched key is deleted first: those the source still has are written again below.
    for chunk in keys.chunks(BATCH_COMMANDS) {
        let mut pipe = redis::pipe();
        for k in chunk {
            let name = [dest.prefix.as_slice(), k].concat();
            pipe.cmd("DEL").arg(&name);
            if multi_possible && policy == MultiType::Suffix {
                for t in PIKA_TYPES.iter().chain([&KeyType::Stream]) {
                    pipe.cmd("DEL")
                        .arg([name.as_slice(), b":", t.name().as_bytes()].concat());
                }
            }
        }
        throttle.take(pipe.cmd_iter().count() as u64);
        let _: Vec<redis::Value> = pipe
            .query(target)
            .with_context(|| format!("{}: DEL of the touched keys", dest.describe))?;
    }
    let mut writer = Writer {
        conn: target,
        throttle,
        dialect,
        prefix: &dest.prefix,
        describe: &dest.describe,
        policy,
        buf: Vec::new(),
        keys: Vec::new(),
        names: Vec::new(),
        state: KeyState::default(),
        current: None,
        skipping: false,
        seen: Vec::new(),
        copied,
        tick,
        last_tick: Instant::now(),
    };
    let opts = ScanOptions {
        read: opts.read.for_server(&link.server.kind),
        // One reader: the types of a multi-type key come in the export's order, so the policy
        // picks the same one as the import did.
        readers: 1,
        sample: None,
        ..opts.clone()
    };
    let mut lister = KeysLister {
        keys: &keys,
        pika,
        one_type: matches!(link.server.kind, ServerKind::Pika(4.., _, _)),
        opts: &opts,
        pages: None,
    };
    link.select(db)?;
    let report = drive(link, throttle, db, &opts, &mut lister, DbReport::default(), &mut writer)?;
    writer.send()?;
    let distinct: BTreeSet<&[u8]> = writer.seen.iter().map(|(k, _)| k.as_slice()).collect();
    writer.copied.deleted +=
        (keys.len() as u64).saturating_sub(distinct.len() as u64 + report.filtered + report.failed.len() as u64);
    for p in report.failed {
        writer.copied.failed_count += 1;
        writer.copied.failed.push(p);
    }
    Ok(())
}
