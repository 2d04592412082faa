//! Turning a stream of records into write commands for a shard's connections: each key
//! occurrence is decided (written, expired, skipped, failed, multi-type policy), its commands
//! built (build.rs) and handed to the connection of its key, always the same one and in order,
//! its outcome counted by the [`Tracker`] when its last command is acknowledged. Import feeds it
//! a snapshot's blocks, migrate the records a source yields.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use anyhow::anyhow;

use super::build::{self, Dialect, KeyState, Op, WCmd};
use super::dest::{ClusterRoute, Dest, MultiType};
use super::lane::{Item, KeyTag};
use super::track::{Counts, Outcome, Pos, Tracker};
use crate::format::consts::{FLAG_MULTI_TYPE, FLAG_PIKA_HLL};
use crate::format::record::{KeyRecord, Lossy};
use crate::format::KeyType;

/// How records become commands, the same for every shard of a run.
pub struct WriteConf {
    pub dialect: Dialect,
    /// DEL a key before its first part (replace, and resent or duplicated keys); false in skip
    /// mode, where a key that exists is left alone.
    pub del_first: bool,
    pub multi: MultiType,
    /// Commands per batch sent to a connection, and the most bytes a batch holds.
    pub pipeline: usize,
    pub batch_bytes: usize,
}

/// The key occurrence being dispatched.
pub(crate) struct Open {
    key: Vec<u8>,
    ty: KeyType,
    /// None: the occurrence is not written; the reason is noted at its last part.
    tag: Option<Arc<KeyTag>>,
    not_written: Option<Outcome>,
    lane: usize,
    st: KeyState,
    start: Pos,
    /// The latest command, held back until the next one shows whether it is the key's last.
    held: Option<WCmd>,
    sent: bool,
}

pub(crate) struct Dispatch<'c> {
    pub conf: &'c WriteConf,
    pub dest: &'c Dest,
    pub tracker: &'c Tracker,
    pub txs: Vec<SyncSender<Vec<Item>>>,
    pub bufs: Vec<(Vec<Item>, usize)>,
    pub open: Option<Open>,
    pub chosen: BTreeMap<Vec<u8>, KeyType>,
    pub seq: u64,
    pub now_ms: u64,
    pub lost: Vec<String>,
    /// A part > 0 without its part 0 was met (after a corrupt block): skip until a part 0.
    pub orphan_noted: bool,
    /// The last key read, and whether a block was lost since: the keys around a lost block
    /// are named, so an operator sees where it was (its own keys are named nowhere else).
    pub last_key: Option<Vec<u8>>,
    pub after_lost: bool,
    pub route: Option<ClusterRoute>,
    pub moved: &'c AtomicBool,
    /// Only these keys are written (a resume retrying the keys that failed); the others pass
    /// uncounted, as they were counted by the run that wrote them.
    pub only: Option<&'c HashSet<Vec<u8>>>,
}

impl Dispatch<'_> {
    pub fn push(&mut self, lane: usize, item: Item) -> anyhow::Result<()> {
        self.tracker.sent(item.seq, 1);
        let (buf, bytes) = &mut self.bufs[lane];
        *bytes += item.cmd.packed().len();
        buf.push(item);
        if buf.len() >= self.conf.pipeline || *bytes >= self.conf.batch_bytes {
            self.flush(lane)?;
        }
        Ok(())
    }

    pub fn flush(&mut self, lane: usize) -> anyhow::Result<()> {
        let (buf, bytes) = &mut self.bufs[lane];
        if buf.is_empty() {
            return Ok(());
        }
        *bytes = 0;
        let batch = std::mem::take(buf);
        self.txs[lane]
            .send(batch)
            .map_err(|_| anyhow!("a connection to the target stopped"))
    }

    pub fn flush_all(&mut self) -> anyhow::Result<()> {
        (0..self.bufs.len()).try_for_each(|l| self.flush(l))
    }

    /// Decides what becomes of a key occurrence that starts with `rec`.
    fn start(&mut self, rec: &KeyRecord, at: Pos) {
        let ty = rec.key_type();
        let mut name = [self.dest.prefix.as_slice(), rec.key].concat();
        let mut not_written: Option<Outcome> = None;
        let key = rec.key.to_vec();
        if self.only.is_some_and(|o| !o.contains(rec.key)) {
            not_written = Some(Box::new(|_: &mut Counts| {}));
        } else if rec.expire_at_ms.is_some_and(|t| t <= self.now_ms) {
            not_written = Some(Box::new(move |c: &mut Counts| c.expired(ty)));
        } else if rec.flags & FLAG_MULTI_TYPE != 0 {
            let k = key.clone();
            match (self.conf.multi, self.chosen.get(rec.key).copied()) {
                (MultiType::Fail, _) => {
                    not_written = Some(Box::new(move |c: &mut Counts| {
                        c.failed(ty, &k, format!("the source holds this key under several types (this is its {}); choose what to do with --multi-type first|suffix", ty.name()));
                    }));
                }
                (_, None) => {
                    self.chosen.insert(key.clone(), ty);
                    self.tracker.chose(self.seq, &key, ty);
                    self.tracker.note(self.seq, |c| {
                        c.multi_type(&k, format!("multi-type key: its {} keeps the name", ty.name()))
                    });
                }
                (_, Some(t)) if t == ty => {} // a duplicate of the chosen occurrence: last wins
                (MultiType::First, Some(t)) => {
                    not_written = Some(Box::new(move |c: &mut Counts| {
                        c.skipped(ty, &k, None);
                        c.multi_type(
                            &k,
                            format!(
                                "multi-type key: its {} was not written (--multi-type first kept its {})",
                                ty.name(),
                                t.name()
                            ),
                        );
                    }));
                }
                (MultiType::Suffix, Some(_)) => {
                    name.extend_from_slice(format!(":{}", ty.name()).as_bytes());
                    let n = name.clone();
                    self.tracker.note(self.seq, move |c| {
                        c.multi_type(
                            &k,
                            format!("multi-type key: its {} is written as {:?}", ty.name(), Lossy(&n)),
                        )
                    });
                }
            }
        }
        if not_written.is_none() && rec.flags & FLAG_PIKA_HLL != 0 {
            let k = key.clone();
            self.tracker.note(self.seq, move |c| {
                c.pika_hll(
                    &k,
                    "a Pika HyperLogLog, written as a plain string: PFCOUNT on Kvrocks or Redis will not read it"
                        .into(),
                )
            });
        }
        let lane = match &self.route {
            Some(r) => r.lane_of(&name),
            None => crc32fast::hash(&name) as usize % self.txs.len().max(1),
        };
        let tag = not_written.is_none().then(|| Arc::new(KeyTag::new(name, ty)));
        self.open = Some(Open {
            key,
            ty,
            tag,
            not_written,
            lane,
            st: KeyState::default(),
            start: at,
            held: None,
            sent: false,
        });
    }

    pub fn record(&mut self, rec: &KeyRecord, at: Pos) -> anyhow::Result<()> {
        if self.after_lost {
            self.after_lost = false;
            if let Some(l) = self.lost.last_mut() {
                l.push_str(&format!("; the first key after it: {:?}", Lossy(rec.key)));
            }
        }
        if self.last_key.as_deref() != Some(rec.key) {
            self.last_key = Some(rec.key.to_vec());
        }
        if rec.part == 0 {
            if self.open.is_some() {
                self.broken("its next part is missing")?;
            }
            self.start(rec, at);
        } else if self
            .open
            .as_ref()
            .is_none_or(|o| o.key != rec.key || o.ty != rec.key_type())
        {
            // The tail of a key whose start was lost with a corrupt block (or precedes the
            // resume point, which then began mid-key: never, see Pos).
            if !self.orphan_noted {
                self.lost.push(format!(
                    "the rest of key {:?} (from part {}), whose start was in a lost block",
                    Lossy(rec.key),
                    rec.part
                ));
                self.orphan_noted = true;
            }
            return Ok(());
        }
        let o = self.open.as_mut().expect("BUG: opened above");
        if let Some(tag) = &o.tag {
            let (bytes, _) = rec.value.size();
            tag.bytes.fetch_add(bytes + rec.key.len() as u64, Relaxed);
            let mut cmds = Vec::new();
            build::part(
                &self.conf.dialect,
                &tag.name,
                rec,
                &mut o.st,
                self.conf.del_first && rec.part == 0,
                self.now_ms,
                &mut cmds,
            );
            let (lane, tag) = (o.lane, tag.clone());
            for c in cmds {
                let o = self.open.as_mut().expect("BUG: open");
                if let Some(prev) = o.held.replace(c) {
                    let first = !o.sent;
                    o.sent = true;
                    let item = Item {
                        cmd: prev,
                        key: tag.clone(),
                        seq: self.seq,
                        first,
                        last: false,
                    };
                    self.push(lane, item)?;
                }
            }
        }
        if rec.is_last() {
            self.finish()?;
        }
        Ok(())
    }

    /// The open occurrence is complete: release its last command with its outcome.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        let Some(mut o) = self.open.take() else { return Ok(()) };
        self.orphan_noted = false;
        match (o.tag.take(), o.held.take()) {
            (Some(tag), Some(cmd)) => {
                let item = Item {
                    cmd,
                    key: tag,
                    seq: self.seq,
                    first: !o.sent,
                    last: true,
                };
                self.push(o.lane, item)?;
            }
            (Some(_), None) => {
                let (k, ty) = (o.key, o.ty);
                self.tracker.note(self.seq, move |c| {
                    c.skipped(ty, &k, Some("empty: nothing to write".into()))
                });
            }
            (None, _) => {
                if let Some(f) = o.not_written.take() {
                    self.tracker.note(self.seq, f);
                }
            }
        }
        Ok(())
    }

    /// The open occurrence cannot be completed (its next part was lost): it is deleted, so no
    /// partial key stays, and reported failed.
    pub fn broken(&mut self, why: &str) -> anyhow::Result<()> {
        let Some(o) = self.open.as_mut() else { return Ok(()) };
        let why = format!("{} {why}; the key was deleted from the target", o.ty.name());
        if let Some(tag) = o.tag.clone() {
            tag.fail(why.clone());
            if o.sent || o.held.is_some() {
                let mut del = Vec::new();
                crate::target::resp::pack(&mut del, &[b"DEL", &tag.name]);
                let del = WCmd::new(del, Op::Del, "DEL");
                let (lane, first) = (o.lane, !o.sent);
                o.sent = true;
                // The DEL goes last; finish() sends it with the key's (failed) outcome.
                if let Some(prev) = o.held.replace(del) {
                    let item = Item {
                        cmd: prev,
                        key: tag,
                        seq: self.seq,
                        first,
                        last: false,
                    };
                    self.push(lane, item)?;
                }
            } else {
                let (k, ty) = (o.key.clone(), o.ty);
                o.tag = None;
                o.not_written = Some(Box::new(move |c: &mut Counts| c.failed(ty, &k, why)));
            }
        }
        self.finish()
    }

    /// Where to resume when everything dispatched so far is done and `next` comes next.
    pub fn resume_point(&self, next: Pos) -> Pos {
        self.open.as_ref().map_or(next, |o| o.start)
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
