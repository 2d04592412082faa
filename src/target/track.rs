//! Which blocks of a shard are fully acknowledged by the target, and what their keys came to.
//!
//! The dispatcher opens a block, counts the commands it sends for it, and seals it; connections
//! acknowledge commands as replies arrive, and report each key's outcome with the block of its
//! last part. A block is done when it is sealed and every command of it was acknowledged; the
//! done prefix of blocks is what a checkpoint records (issue 4, "Faults and resume"), together
//! with the counts of the keys that ended in it, so a resumed import counts every key once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::format::KeyType;
use crate::util::{key_json, Problem};

/// Where to (re)start reading a shard: the first record to process.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub part: u32,
    pub block: u32,
    pub record: u32,
}

/// The most keys listed by name per list and shard; the counts stay exact beyond it.
pub const LISTED: usize = 100_000;

/// Keys per type for each outcome, and the keys that need an operator's attention by name.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub written: BTreeMap<String, u64>,
    /// Expired before the import reached them: not written (issue 4).
    pub expired: BTreeMap<String, u64>,
    /// Left alone: they existed (`--conflict skip`), or a multi-type policy dropped them.
    pub skipped: BTreeMap<String, u64>,
    pub failed: BTreeMap<String, u64>,
    /// Raw bytes of the records written (for rates).
    pub bytes: u64,
    /// Failed keys: the key, the command and the server's error.
    pub failed_keys: Vec<Problem>,
    /// Keys stored under several types in the source (Pika <= 3.5), and what became of each.
    pub multi_type: Vec<Problem>,
    /// Pika HyperLogLog values, written as plain strings.
    pub pika_hll: Vec<Problem>,
    /// Keys skipped because they existed, by name.
    pub skipped_keys: Vec<Problem>,
    /// Lines beyond [`LISTED`] per list, not kept.
    pub unlisted: u64,
}

fn bump(m: &mut BTreeMap<String, u64>, ty: KeyType, n: u64) {
    *m.entry(ty.name().to_string()).or_insert(0) += n;
}

fn merge_map(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

impl Counts {
    fn list(list: &mut Vec<Problem>, unlisted: &mut u64, key: &[u8], reason: String) {
        if list.len() < LISTED {
            list.push(Problem {
                key: key_json(key),
                reason,
            });
        } else {
            *unlisted += 1;
        }
    }

    pub fn written(&mut self, ty: KeyType, bytes: u64) {
        bump(&mut self.written, ty, 1);
        self.bytes += bytes;
    }
    pub fn expired(&mut self, ty: KeyType) {
        bump(&mut self.expired, ty, 1);
    }
    pub fn skipped(&mut self, ty: KeyType, key: &[u8], reason: Option<String>) {
        bump(&mut self.skipped, ty, 1);
        if let Some(r) = reason {
            Counts::list(&mut self.skipped_keys, &mut self.unlisted, key, r);
        }
    }
    pub fn failed(&mut self, ty: KeyType, key: &[u8], reason: String) {
        bump(&mut self.failed, ty, 1);
        Counts::list(&mut self.failed_keys, &mut self.unlisted, key, reason);
    }
    pub fn multi_type(&mut self, key: &[u8], reason: String) {
        Counts::list(&mut self.multi_type, &mut self.unlisted, key, reason);
    }
    pub fn pika_hll(&mut self, key: &[u8], reason: String) {
        Counts::list(&mut self.pika_hll, &mut self.unlisted, key, reason);
    }

    pub fn merge(&mut self, o: &Counts) {
        merge_map(&mut self.written, &o.written);
        merge_map(&mut self.expired, &o.expired);
        merge_map(&mut self.skipped, &o.skipped);
        merge_map(&mut self.failed, &o.failed);
        self.bytes += o.bytes;
        for (a, b) in [
            (&mut self.failed_keys, &o.failed_keys),
            (&mut self.multi_type, &o.multi_type),
            (&mut self.pika_hll, &o.pika_hll),
            (&mut self.skipped_keys, &o.skipped_keys),
        ] {
            let room = LISTED.saturating_sub(a.len());
            a.extend(b.iter().take(room).cloned());
            self.unlisted += b.len().saturating_sub(room) as u64;
        }
        self.unlisted += o.unlisted;
    }

    /// Keys with any outcome.
    pub fn keys(&self) -> u64 {
        [&self.written, &self.expired, &self.skipped, &self.failed]
            .iter()
            .flat_map(|m| m.values())
            .sum()
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// What became of a key, applied to the counts of the block where it ended.
pub type Outcome = Box<dyn FnOnce(&mut Counts) + Send>;
/// One acknowledged command: its block, and the key's outcome if it was the key's last.
pub type Ack = (u64, Option<Outcome>);

struct Blk {
    seq: u64,
    pending: u64,
    sealed: bool,
    /// Where to resume once this block and all before it are done.
    resume_after: Pos,
    counts: Counts,
}

struct Inner {
    blocks: VecDeque<Blk>,
    committed: Counts,
    resume: Pos,
    /// Multi-type keys and the type that keeps the key's name (`--multi-type first|suffix`),
    /// as of the done prefix.
    chosen: BTreeMap<Vec<u8>, KeyType>,
    chosen_pending: Vec<(u64, Vec<u8>, KeyType)>,
    /// The last block of the done prefix.
    done_seq: u64,
}

/// The shared record of a shard's progress.
pub struct Tracker {
    inner: Mutex<Inner>,
    done: Condvar,
}

impl Tracker {
    pub fn new(start: Pos, committed: Counts, chosen: BTreeMap<Vec<u8>, KeyType>) -> Tracker {
        Tracker {
            inner: Mutex::new(Inner {
                blocks: VecDeque::new(),
                committed,
                resume: start,
                chosen,
                chosen_pending: Vec::new(),
                done_seq: 0,
            }),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dispatcher starts block `seq`.
    pub fn begin(&self, seq: u64) {
        self.lock().blocks.push_back(Blk {
            seq,
            pending: 0,
            sealed: false,
            resume_after: Pos::default(),
            counts: Counts::default(),
        });
    }

    fn with<R>(inner: &mut Inner, seq: u64, f: impl FnOnce(&mut Blk) -> R) -> R {
        let front = inner
            .blocks
            .front()
            .map(|b| b.seq)
            .expect("BUG: a block of the shard is open");
        let b = &mut inner.blocks[(seq - front) as usize];
        debug_assert_eq!(b.seq, seq);
        f(b)
    }

    /// `n` more commands of block `seq` are on their way.
    pub fn sent(&self, seq: u64, n: u64) {
        Tracker::with(&mut self.lock(), seq, |b| b.pending += n);
    }

    /// Records an outcome decided without the target (expired, skipped...) in block `seq`.
    pub fn note(&self, seq: u64, f: impl FnOnce(&mut Counts)) {
        Tracker::with(&mut self.lock(), seq, |b| f(&mut b.counts));
    }

    /// A multi-type key's surviving type was chosen in block `seq`.
    pub fn chose(&self, seq: u64, key: &[u8], ty: KeyType) {
        self.lock().chosen_pending.push((seq, key.to_vec(), ty));
    }

    /// The dispatcher has sent everything of block `seq`; `resume_after` is where to resume once
    /// it is done.
    pub fn seal(&self, seq: u64, resume_after: Pos) {
        let mut g = self.lock();
        Tracker::with(&mut g, seq, |b| {
            b.sealed = true;
            b.resume_after = resume_after;
        });
        Tracker::advance(&mut g);
        drop(g);
        self.done.notify_all();
    }

    /// Replies arrived: one acknowledgement per `(block, outcome)`; an outcome is given with
    /// the last command of a key.
    pub fn ack(&self, acks: &mut Vec<Ack>) {
        let mut g = self.lock();
        for (seq, outcome) in acks.drain(..) {
            Tracker::with(&mut g, seq, |b| {
                b.pending -= 1;
                if let Some(f) = outcome {
                    f(&mut b.counts);
                }
            });
        }
        Tracker::advance(&mut g);
        drop(g);
        self.done.notify_all();
    }

    fn advance(g: &mut Inner) {
        while g.blocks.front().is_some_and(|b| b.sealed && b.pending == 0) {
            let b = g.blocks.pop_front().expect("BUG: checked above");
            g.committed.merge(&b.counts);
            g.resume = b.resume_after;
            g.done_seq = b.seq;
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut g.chosen_pending)
                .into_iter()
                .partition(|(s, ..)| *s <= b.seq);
            g.chosen_pending = later;
            for (_, k, t) in now {
                g.chosen.insert(k, t);
            }
        }
    }

    /// What a checkpoint records: where to resume, the counts of the keys done before it, and
    /// the multi-type choices made before it.
    pub fn committed(&self) -> (Pos, Counts, BTreeMap<Vec<u8>, KeyType>) {
        let g = self.lock();
        (g.resume, g.committed.clone(), g.chosen.clone())
    }

    /// The counts of every key done so far, in the done prefix or after it (for a summary
    /// after an error; a checkpoint takes [`Tracker::committed`]).
    pub fn so_far(&self) -> Counts {
        let g = self.lock();
        let mut c = g.committed.clone();
        for b in &g.blocks {
            c.merge(&b.counts);
        }
        c
    }

    /// The last block of the done prefix (0: none yet).
    pub fn done_seq(&self) -> u64 {
        self.lock().done_seq
    }

    /// Waits until every block is done (all replies counted).
    pub fn wait_all(&self) {
        let mut g = self.lock();
        while !g.blocks.is_empty() {
            g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Forgets the counts and choices of every block done (the records are to come again:
    /// a migration whose source restarted lists it again from the first key). Call it with no
    /// block open.
    pub fn forget(&self) {
        let mut g = self.lock();
        debug_assert!(g.blocks.is_empty());
        g.committed = Counts::default();
        g.chosen.clear();
        g.chosen_pending.clear();
    }

    /// Blocks opened and not yet done.
    pub fn outstanding(&self) -> usize {
        self.lock().blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_done_prefix_moves_only_over_sealed_acknowledged_blocks() {
        let t = Tracker::new(Pos::default(), Counts::default(), BTreeMap::new());
        t.begin(0);
        t.sent(0, 2);
        t.begin(1);
        t.sent(1, 1);
        let p1 = Pos {
            part: 0,
            block: 1,
            record: 0,
        };
        // A key open across blocks 1 and 2 started at block 1, record 3.
        let straddle = Pos {
            part: 0,
            block: 1,
            record: 3,
        };
        t.seal(0, p1);
        t.seal(1, straddle);
        let mut acks: Vec<Ack> = vec![(1, Some(Box::new(|c: &mut Counts| c.written(KeyType::Hash, 5))))];
        t.ack(&mut acks);
        assert_eq!(t.committed().0, Pos::default(), "block 0 still waits for replies");
        acks.push((0, None));
        acks.push((0, Some(Box::new(|c: &mut Counts| c.written(KeyType::String, 1)))));
        t.ack(&mut acks);
        let (pos, counts, _) = t.committed();
        assert_eq!(pos, straddle);
        assert_eq!(counts.keys(), 2);
        assert_eq!(t.outstanding(), 0);
    }
}

/// Multi-type keys and the type that keeps the name, as the checkpoints of import and migrate
/// keep them: key in hex, type by name.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(transparent)]
pub struct ChosenTypes(BTreeMap<String, String>);

impl ChosenTypes {
    pub fn encode(chosen: &BTreeMap<Vec<u8>, KeyType>) -> ChosenTypes {
        ChosenTypes(
            chosen
                .iter()
                .map(|(k, t)| (hex::encode(k), t.name().to_string()))
                .collect(),
        )
    }

    pub fn decode(&self) -> anyhow::Result<BTreeMap<Vec<u8>, KeyType>> {
        use anyhow::Context;
        self.0
            .iter()
            .map(|(k, t)| {
                let key = hex::decode(k).context("a checkpoint's multi-type key is not hex")?;
                let ty = KeyType::from_name(t).with_context(|| format!("a checkpoint names an unknown type {t}"))?;
                Ok((key, ty))
            })
            .collect()
    }
}
