//! Importing one shard: a decoder reads its blocks in order (decompression on its own threads),
//! this thread turns records into commands and hands them to the connections, a key's commands
//! always to the same connection and in order (issue 4, "Fast"); the tracker counts the replies
//! per block, and a checkpointer saves the done prefix every few seconds.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::state::{ShardState, StateDir};
use crate::format::consts::{FLAG_MULTI_TYPE, FLAG_PIKA_HLL};
use crate::format::reader::ReadMode;
use crate::format::record::{KeyRecord, Lossy, Record};
use crate::format::snapshot::Snapshot;
use crate::format::KeyType;
use crate::progress::Task;
use crate::source::throttle::Throttle;
use crate::target::build::{self, Dialect, KeyState, Op, WCmd};
use crate::target::cluster::SlotMap;
use crate::target::lane::{Item, KeyTag, Lane, LaneConf, Shared};
use crate::target::skiplog::SkipLog;
use crate::target::track::{Counts, Outcome, Pos, Tracker};

/// What to do with a key the snapshot holds under several types (Pika <= 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum MultiType {
    /// Do not write such keys; each is a failed key, by name.
    Fail,
    /// Write the first type the snapshot holds; report the others by name as skipped.
    First,
    /// The first type keeps the name; each other type is written as KEY:TYPE (e.g. user:1:hash).
    Suffix,
}

/// Where a shard goes.
#[derive(Clone, Debug)]
pub struct Dest {
    pub lane: LaneConf,
    /// Prepended to every key (`--prefix-map`).
    pub prefix: Vec<u8>,
    /// "redis://h:p db 3"-style, for messages.
    pub describe: String,
}

/// Settings shared by all shards.
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub dialect: Dialect,
    /// DEL a key before its first part (replace, and resent or duplicated keys); false in skip
    /// mode, where a key that exists is left alone.
    pub del_first: bool,
    pub multi: MultiType,
    pub connections: usize,
    pub pipeline: usize,
    pub batch_bytes: usize,
    pub skip_corrupt: bool,
    pub throttle: &'a Throttle,
    pub stop: &'a AtomicBool,
    pub fail_fast: bool,
    pub checkpoint_every: Duration,
    pub state: Option<&'a StateDir>,
    pub decode_threads: usize,
}

/// What importing a shard came to.
pub struct ShardOutcome {
    pub counts: Counts,
    pub seconds: f64,
    pub resumed: bool,
    pub reconnects: u64,
    pub restarts: u64,
    /// Commands that followed a cluster redirect.
    pub redirects: u64,
    /// Corrupt blocks skipped (`--skip-corrupt-blocks`), each with what was lost.
    pub lost: Vec<String>,
}

/// A shard's import that stopped on an error, with what it did before.
pub struct Failed {
    pub error: anyhow::Error,
    pub outcome: Box<ShardOutcome>,
}

impl Failed {
    fn nothing(error: anyhow::Error) -> Failed {
        Failed {
            error,
            outcome: Box::new(ShardOutcome {
                counts: Counts::default(),
                seconds: 0.0,
                resumed: false,
                reconnects: 0,
                restarts: 0,
                redirects: 0,
                lost: Vec::new(),
            }),
        }
    }
}

impl From<Failed> for anyhow::Error {
    fn from(f: Failed) -> anyhow::Error {
        f.error
    }
}

/// Where commands go: connections, or a RESP file.
pub enum Output<'w> {
    /// Connections; with a cluster, `per_node` of them to each master, in the map's order.
    Lanes(Vec<LaneConf>, Option<ClusterRoute>),
    Resp(&'w Mutex<Box<dyn std::io::Write + Send>>),
}

/// Routing by slot to a cluster's masters.
#[derive(Clone)]
pub struct ClusterRoute {
    pub map: SlotMap,
    pub per_node: usize,
    /// Where to ask for the slot map again after a MOVED.
    pub seed: LaneConf,
}

impl ClusterRoute {
    pub(crate) fn lane_of(&self, name: &[u8]) -> usize {
        self.map.node_of(name) * self.per_node + crc32fast::hash(name) as usize % self.per_node
    }

    /// Reads the slot map again; slots that moved to a node the import has no connections to
    /// stay routed where they were (their commands follow MOVED from there).
    fn refresh(&mut self) -> anyhow::Result<()> {
        let mut lane = Lane::open(&self.seed)?;
        let fresh = SlotMap::fetch(lane.conn(), &self.seed.endpoint.name())?;
        for (slot, &o) in fresh.owner.iter().enumerate() {
            let addr = &fresh.nodes[o as usize];
            if let Some(i) = self.map.nodes.iter().position(|n| n == addr) {
                self.map.owner[slot] = i as u16;
            }
        }
        Ok(())
    }
}

/// The key occurrence being dispatched.
struct Open {
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

struct Dispatch<'c, 'a> {
    ctx: &'c Ctx<'a>,
    dest: &'c Dest,
    tracker: &'c Tracker,
    txs: Vec<SyncSender<Vec<Item>>>,
    bufs: Vec<(Vec<Item>, usize)>,
    open: Option<Open>,
    chosen: BTreeMap<Vec<u8>, KeyType>,
    seq: u64,
    now_ms: u64,
    lost: Vec<String>,
    /// A part > 0 without its part 0 was met (after a corrupt block): skip until a part 0.
    orphan_noted: bool,
    /// The last key read, and whether a block was lost since: the keys around a lost block
    /// are named, so an operator sees where it was (its own keys are named nowhere else).
    last_key: Option<Vec<u8>>,
    after_lost: bool,
    route: Option<ClusterRoute>,
    moved: &'c AtomicBool,
    /// Only these keys are written (a resume retrying the keys that failed); the others pass
    /// uncounted, as they were counted by the run that wrote them.
    only: Option<&'c HashSet<Vec<u8>>>,
}

impl Dispatch<'_, '_> {
    fn push(&mut self, lane: usize, item: Item) -> anyhow::Result<()> {
        self.tracker.sent(item.seq, 1);
        let (buf, bytes) = &mut self.bufs[lane];
        *bytes += item.cmd.packed().len();
        buf.push(item);
        if buf.len() >= self.ctx.pipeline || *bytes >= self.ctx.batch_bytes {
            self.flush(lane)?;
        }
        Ok(())
    }

    fn flush(&mut self, lane: usize) -> anyhow::Result<()> {
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

    fn flush_all(&mut self) -> anyhow::Result<()> {
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
            match (self.ctx.multi, self.chosen.get(rec.key).copied()) {
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

    fn record(&mut self, rec: &KeyRecord, at: Pos) -> anyhow::Result<()> {
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
                &self.ctx.dialect,
                &tag.name,
                rec,
                &mut o.st,
                self.ctx.del_first && rec.part == 0,
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
    fn finish(&mut self) -> anyhow::Result<()> {
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
    fn broken(&mut self, why: &str) -> anyhow::Result<()> {
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
    fn resume_point(&self, next: Pos) -> Pos {
        self.open.as_ref().map_or(next, |o| o.start)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Imports shard `si` of the snapshot into `dest` through `out`, from `from` (a checkpoint) or
/// the start.
pub fn run(
    ctx: &Ctx,
    si: usize,
    dest: &Dest,
    out: Output,
    from: Option<&ShardState>,
    only: Option<&HashSet<Vec<u8>>>,
    task: &Task,
) -> Result<ShardOutcome, Failed> {
    let entry = &ctx.snap.manifest.shards[si];
    let started = Instant::now();
    let (start, counts, chosen) = match from {
        Some(s) => (s.resume, s.counts.clone(), s.chosen().map_err(Failed::nothing)?),
        None => (Pos::default(), Counts::default(), BTreeMap::new()),
    };
    task.start(Some(entry.keys));
    task.add(counts.keys(), 0);
    let tracker = Tracker::new(start, counts, chosen.clone());
    let reconnects = AtomicU64::new(0);
    let restarts = AtomicU64::new(0);
    let first_failure = Mutex::new(None);
    let moved = AtomicBool::new(false);
    let redirects = AtomicU64::new(0);
    // On an error, what was done so far is counted all the same (issue 11: `--no-check`
    // said "written 0" after a damaged block stopped it part way).
    let result = (|| -> anyhow::Result<ShardOutcome> {
        // --conflict skip: decisions are logged before writes, for a resumed run (see skiplog).
        let (skip_log, ours) = match (ctx.state, &out) {
            (Some(state), Output::Lanes(confs, _)) if confs.first().is_some_and(|c| c.skip_existing) => {
                let (log, mut ours) = SkipLog::open(&state.dir, &entry.id)?;
                if from.is_none() {
                    ours.clear();
                }
                (Some(log), ours)
            }
            _ => (None, std::collections::HashSet::new()),
        };
        let shared = Shared {
            tracker: &tracker,
            throttle: ctx.throttle,
            task,
            stop: ctx.stop,
            fail_fast: ctx.fail_fast,
            reconnects: &reconnects,
            restarts: &restarts,
            first_failure: &first_failure,
            moved: &moved,
            redirects: &redirects,
            skip_log: skip_log.as_ref(),
            ours: &ours,
        };
        let lanes = match &out {
            Output::Lanes(confs, _) => confs.iter().map(Lane::open).collect::<anyhow::Result<Vec<_>>>()?,
            Output::Resp(_) => Vec::new(),
        };
        let n = match &out {
            Output::Lanes(c, _) => c.len(),
            Output::Resp(_) => 1,
        };
        let ckpt_stop = (Mutex::new(false), std::sync::Condvar::new());
        let mut lost = Vec::new();
        let result: anyhow::Result<()> = std::thread::scope(|s| {
            let mut txs = Vec::new();
            let mut workers = Vec::new();
            match &out {
                Output::Lanes(..) => {
                    for lane in lanes {
                        let (tx, rx) = sync_channel::<Vec<Item>>(2);
                        txs.push(tx);
                        let sh = &shared;
                        workers.push(s.spawn(move || {
                            let r = lane.work(rx, sh);
                            if r.is_err() {
                                sh.stop.store(true, Relaxed);
                            }
                            r
                        }));
                    }
                }
                Output::Resp(w) => {
                    let (tx, rx) = sync_channel::<Vec<Item>>(2);
                    txs.push(tx);
                    let (sh, w) = (&shared, *w);
                    workers.push(s.spawn(move || resp_worker(rx, w, sh)));
                }
            }
            let checkpointer = ctx.state.map(|state| {
                let (tracker, ckpt_stop, id, skip_log) = (&tracker, &ckpt_stop, entry.id.as_str(), skip_log.as_ref());
                s.spawn(move || -> anyhow::Result<()> {
                    let (m, cv) = ckpt_stop;
                    let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
                    while !*stopped {
                        stopped = cv
                            .wait_timeout(stopped, ctx.checkpoint_every)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                        let done_seq = tracker.done_seq();
                        let (resume, counts, chosen) = tracker.committed();
                        state.save_shard(id, &ShardState::new(false, resume, counts, &chosen))?;
                        if let Some(log) = skip_log {
                            log.prune(done_seq)?;
                        }
                    }
                    Ok(())
                })
            });
            let mut d = Dispatch {
                ctx,
                dest,
                tracker: &tracker,
                txs,
                bufs: (0..n).map(|_| (Vec::new(), 0)).collect(),
                open: None,
                chosen,
                seq: 0,
                now_ms: now_ms(),
                lost: Vec::new(),
                orphan_noted: false,
                last_key: None,
                after_lost: false,
                route: match &out {
                    Output::Lanes(_, r) => r.clone(),
                    Output::Resp(_) => None,
                },
                moved: &moved,
                only,
            };
            let dispatched = dispatch(&mut d, si, start, task);
            let dispatched = dispatched.and_then(|()| d.flush_all());
            lost = std::mem::take(&mut d.lost);
            drop(d); // closes the channels: the workers finish their queues and return
                     // A connection's own error is the cause; the dispatcher then only saw its channel close.
            let mut worker_error = None;
            for w in workers {
                let wr = w
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("BUG: a connection thread panicked")));
                if let Err(e) = wr {
                    worker_error.get_or_insert(e);
                }
            }
            let mut r = match worker_error {
                Some(e) => Err(e),
                None => dispatched,
            };
            {
                *ckpt_stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                ckpt_stop.1.notify_all();
            }
            if let Some(c) = checkpointer {
                let cr = c
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("BUG: the checkpointer panicked")));
                if r.is_ok() {
                    r = cr;
                }
            }
            r
        });
        if let Some(f) = first_failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            result?;
            bail!("stopped at the first failed key (--fail-fast): {f}");
        }
        result?;
        if ctx.stop.load(Relaxed) {
            bail!(super::Cancelled);
        }
        tracker.wait_all();
        let (resume, counts, chosen) = tracker.committed();
        if let Some(state) = ctx.state {
            state.save_shard(&entry.id, &ShardState::new(true, resume, counts.clone(), &chosen))?;
            if let Some(log) = &skip_log {
                log.remove();
            }
        }
        Ok(ShardOutcome {
            counts,
            seconds: started.elapsed().as_secs_f64(),
            resumed: from.is_some(),
            reconnects: reconnects.load(Relaxed),
            restarts: restarts.load(Relaxed),
            redirects: redirects.load(Relaxed),
            lost,
        })
    })();
    result.map_err(|error| Failed {
        error,
        outcome: Box::new(ShardOutcome {
            counts: tracker.so_far(),
            seconds: started.elapsed().as_secs_f64(),
            resumed: from.is_some(),
            reconnects: reconnects.load(Relaxed),
            restarts: restarts.load(Relaxed),
            redirects: redirects.load(Relaxed),
            lost: Vec::new(),
        }),
    })
}

/// Reads the shard's blocks from `start` and dispatches their records.
fn dispatch(d: &mut Dispatch, si: usize, start: Pos, task: &Task) -> anyhow::Result<()> {
    let entry = &d.ctx.snap.manifest.shards[si];
    for pi in start.part as usize..entry.parts.len() {
        let path = d.ctx.snap.part_path(&entry.parts[pi]);
        let reader = d
            .ctx
            .snap
            .open_part(si, pi, ReadMode::Read)
            .with_context(|| format!("{}", path.display()))?;
        let first = if pi == start.part as usize { start.block } else { 0 };
        let records: Vec<u32> = reader.trailer().blocks.iter().map(|b| b.records()).collect();
        let mut err = None;
        reader.par_blocks_from(
            first,
            d.ctx.decode_threads,
            |b| b,
            |bi, block| {
                if d.ctx.stop.load(Relaxed) {
                    return false;
                }
                d.seq += 1;
                d.now_ms = now_ms();
                if d.moved.swap(false, Relaxed) {
                    if let Some(r) = d.route.as_mut() {
                        // Best effort: routing stays right through MOVED replies meanwhile.
                        let _ = r.refresh();
                    }
                }
                d.tracker.begin(d.seq);
                let here = |record: u32| Pos {
                    part: pi as u32,
                    block: bi,
                    record,
                };
                let skip_to = if here(0) == (Pos { record: 0, ..start }) {
                    start.record
                } else {
                    0
                };
                let r = (|| -> anyhow::Result<()> {
                    match block {
                        Ok(block) => {
                            task.add(0, block.raw.len() as u64);
                            for (ri, rec) in block.records().enumerate() {
                                if (ri as u32) < skip_to {
                                    continue;
                                }
                                if crate::interrupt::interrupted() {
                                    // Ctrl-C: the block stays unsealed, so the checkpoint
                                    // resumes at its start (every key starts with DEL, or
                                    // is logged in skip mode: resending is exact).
                                    d.ctx.stop.store(true, Relaxed);
                                    return Ok(());
                                }
                                match rec {
                                    Ok(Record::Key(rec)) => d.record(&rec, here(ri as u32))?,
                                    Ok(Record::Skippable { .. }) => {}
                                    Err(e) => {
                                        lose(d, &path, bi, records.get(bi as usize).copied(), &e.to_string())?;
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => lose(d, &path, bi, records.get(bi as usize).copied(), &e.error.to_string())?,
                    }
                    d.flush_all()?;
                    let next = Pos {
                        part: pi as u32,
                        block: bi + 1,
                        record: 0,
                    };
                    d.tracker.seal(d.seq, d.resume_point(next));
                    Ok(())
                })();
                if let Err(e) = r {
                    err = Some(e);
                    return false;
                }
                true
            },
        );
        if let Some(e) = err {
            return Err(e);
        }
        if d.ctx.stop.load(Relaxed) {
            return Ok(());
        }
        if d.open.is_some() {
            d.broken("is missing: the file ends inside it")?;
        }
    }
    Ok(())
}

/// A block that cannot be read: without `--skip-corrupt-blocks`, the import stops there (the
/// check before writing found nothing, so the file changed since); with it, what was lost is
/// listed and the key it cut is deleted.
fn lose(d: &mut Dispatch, path: &std::path::Path, block: u32, records: Option<u32>, why: &str) -> anyhow::Result<()> {
    if !d.ctx.skip_corrupt {
        bail!(
            "{} block {block}: {why}; the import stopped here. Copy the file again, or add --skip-corrupt-blocks to import the rest",
            path.display()
        );
    }
    let records = records.map_or(String::new(), |n| format!(" ({n} records, as its file's index says)"));
    let before = d
        .last_key
        .as_ref()
        .map_or(String::new(), |k| format!("; the last key before it: {:?}", Lossy(k)));
    d.lost
        .push(format!("{} block {block}{records}: {why}{before}", path.display()));
    d.after_lost = true;
    if d.open.is_some() {
        d.broken("lost its next part in a corrupt block")?;
    }
    Ok(())
}

/// `--resp`: writes the commands to a file instead of a server, acknowledging them as written.
fn resp_worker(
    rx: std::sync::mpsc::Receiver<Vec<Item>>,
    w: &Mutex<Box<dyn std::io::Write + Send>>,
    sh: &Shared,
) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    for batch in rx {
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        for it in batch {
            w.write_all(it.cmd.packed()).context("--resp: cannot write")?;
            acks.push((it.seq, it.last.then(|| written(&it.key))));
        }
        drop(w);
        sh.task.add(acks.iter().filter(|(_, o)| o.is_some()).count() as u64, 0);
        sh.tracker.ack(&mut acks);
    }
    Ok(())
}

fn written(k: &Arc<KeyTag>) -> Outcome {
    let (ty, bytes) = (k.ty, k.bytes.load(Relaxed));
    Box::new(move |c: &mut Counts| c.written(ty, bytes))
}
