//! Migrating one shard (a source × database) straight into its destination, with no file in
//! between: the source line (source/drive.rs) yields records, a [`Dispatch`] turns them into
//! commands for the target's connections, as an import does. Records are grouped into blocks
//! that end at exact points of the listing (quiet pages, source/drive.rs), every few seconds;
//! when the target has acknowledged a block and every one before it, the source position at its
//! end is the checkpoint, with the counts of its keys. A resume reads on from there and writes
//! no key twice: each key is written from a DEL, or logged with `--conflict skip`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::state::{ShardState, StateDir};
use crate::format::record::KeyRecord;
use crate::progress::Task;
use crate::server::link::{Link, Notify};
use crate::server::throttle::Throttle;
use crate::source::{export_db, DbReport, Out, Position, ScanOptions};
use crate::target::cluster::SlotMap;
use crate::target::dest::Dest;
use crate::target::dispatch::{now_ms, Dispatch, WriteConf};
use crate::target::lane::{Item, Lane, Shared};
use crate::target::skiplog::SkipLog;
use crate::target::track::{Counts, Pos, Tracker};

/// What every shard of a run shares.
pub struct Ctx<'a> {
    pub write: WriteConf,
    pub scan: &'a ScanOptions,
    pub connections: usize,
    /// `--max-ops-per-sec`, for the source's commands and, separately, the target's.
    pub source_throttle: &'a Throttle,
    pub target_throttle: &'a Throttle,
    /// Set when another shard failed, or a key failed with --fail-fast: stop at the next page.
    pub stop: &'a AtomicBool,
    pub fail_fast: bool,
    pub checkpoint_every: Duration,
    pub state: &'a StateDir,
    pub notify: Option<Notify>,
    pub slots: Option<&'a SlotMap>,
}

/// What migrating a shard came to.
#[derive(Default)]
pub struct ShardOutcome {
    /// The source side: keys read per type, gone, filtered, failed reads.
    pub read: DbReport,
    /// The target side: keys written, expired, skipped, failed.
    pub counts: Counts,
    pub seconds: f64,
    pub resumed: bool,
    pub target_reconnects: u64,
    pub redirects: u64,
}

/// The error a shard stops with when another one failed.
#[derive(Debug, thiserror::Error)]
#[error("stopped because another shard failed")]
pub struct Cancelled;

/// Keys a source report accounts for that are not written (gone, filtered, skipped, failed).
fn not_read(r: &DbReport) -> u64 {
    r.gone + r.filtered + r.skipped_unknown.len() as u64 + r.failed.len() as u64
}

/// Where the source's records go: the dispatcher, the progress, the checkpoints.
struct MigrateOut<'c> {
    d: Dispatch<'c>,
    ctx: &'c Ctx<'c>,
    id: &'c str,
    task: &'c Task,
    /// Keys read (and rereads) as the report counted them at the last page.
    read: u64,
    rescans: u64,
    last_cut: Instant,
    /// Blocks sealed and not yet known done, with the source position and report at their end.
    cuts: VecDeque<(u64, Position, DbReport)>,
    /// The last checkpoint written: its block.
    saved_seq: u64,
    seconds_before: f64,
    started: Instant,
    skip_log: Option<&'c SkipLog>,
}

impl MigrateOut<'_> {
    /// Ends the open block at a quiet page: its end is `next`.
    fn cut(&mut self, next: &Position, report: &DbReport) -> anyhow::Result<()> {
        self.d.flush_all()?;
        self.d.tracker.seal(self.d.seq, Pos::default());
        self.cuts.push_back((self.d.seq, next.clone(), report.clone()));
        self.d.seq += 1;
        self.d.tracker.begin(self.d.seq);
        self.last_cut = Instant::now();
        Ok(())
    }

    /// Writes the newest checkpoint the target has acknowledged everything before.
    fn save_done(&mut self) -> anyhow::Result<()> {
        let done = self.d.tracker.done_seq();
        let mut newest = None;
        while self.cuts.front().is_some_and(|(s, ..)| *s <= done) {
            newest = self.cuts.pop_front();
        }
        if let Some((seq, position, read)) = newest {
            let (_, counts, chosen) = self.d.tracker.committed();
            let seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
            let st = ShardState::new(false, position, read, counts, seconds, &chosen);
            self.ctx.state.save_shard(self.id, &st)?;
            if let Some(log) = self.skip_log {
                log.prune(seq)?;
            }
            self.saved_seq = seq;
        }
        Ok(())
    }
}

impl Out for MigrateOut<'_> {
    fn record(&mut self, r: &KeyRecord) -> anyhow::Result<()> {
        if r.part == 0 {
            self.d.now_ms = now_ms();
        }
        self.task.add(0, r.key.len() as u64 + r.value.size().0);
        self.d.record(r, Pos::default())
    }

    fn page(&mut self, keys: u64, next: &Position, report: &DbReport, quiet: bool) -> anyhow::Result<()> {
        let read = report.keys_by_type.values().sum::<u64>() + report.reread;
        if report.rescans != self.rescans {
            self.rescans = report.rescans;
            self.task.reset();
            self.task.add(not_read(report), 0);
        } else {
            // Keys written count as their replies come; the page's others count now.
            self.task.add(keys.saturating_sub(read.saturating_sub(self.read)), 0);
        }
        self.read = read;
        let interrupted = crate::interrupt::interrupted();
        if self.ctx.stop.load(Relaxed) && !interrupted {
            return Err(Cancelled.into());
        }
        if quiet && self.checkpoint_due() {
            self.cut(next, report)?;
        }
        self.save_done()?;
        if interrupted && quiet {
            return Err(crate::interrupt::Interrupted.into());
        }
        Ok(())
    }

    fn checkpoint_due(&self) -> bool {
        crate::interrupt::interrupted() || self.last_cut.elapsed() >= self.ctx.checkpoint_every
    }

    fn start_over(&mut self) -> anyhow::Result<()> {
        // The source restarted and is listed again from its first key: every key comes again
        // (each written from a DEL), and the counts start afresh.
        self.d.flush_all()?;
        self.d.tracker.seal(self.d.seq, Pos::default());
        self.d.tracker.wait_all();
        self.d.tracker.forget();
        self.d.chosen.clear();
        self.cuts.clear();
        self.ctx.state.remove_shard(self.id)?;
        self.d.seq += 1;
        self.d.tracker.begin(self.d.seq);
        Ok(())
    }
}

/// Migrates shard `id` (database `db` of the source behind `link`) into `dest`, from its
/// checkpoint `from` or the start.
pub fn run(
    ctx: &Ctx,
    id: &str,
    link: &mut Link,
    db: u32,
    dest: &Dest,
    from: Option<ShardState>,
    task: &Task,
) -> Result<ShardOutcome, (anyhow::Error, Box<ShardOutcome>)> {
    let started = Instant::now();
    let resumed = from.is_some();
    let (position, read_before, counts, chosen, seconds_before) = match from {
        Some(s) => {
            let chosen = s.chosen().map_err(|e| (e, Box::default()))?;
            (Some(s.position), s.read, s.counts, chosen, s.seconds)
        }
        None => (None, DbReport::default(), Counts::default(), BTreeMap::new(), 0.0),
    };
    task.start(crate::cmd::export::shard::estimate(link, ctx.source_throttle, db));
    task.add(counts.keys() + not_read(&read_before), 0);
    let tracker = Tracker::new(Pos::default(), counts, chosen.clone());
    let (reconnects, restarts, redirects) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let first_failure = Mutex::new(None);
    let moved = AtomicBool::new(false);
    let mut read_report = DbReport::default();
    let result = (|| -> anyhow::Result<()> {
        let (skip_log, ours) = if ctx.write.del_first {
            (None, HashSet::new())
        } else {
            let (log, mut ours) = SkipLog::open(&ctx.state.dir, id)?;
            if !resumed {
                ours.clear();
            }
            (Some(log), ours)
        };
        let shared = Shared {
            tracker: &tracker,
            throttle: ctx.target_throttle,
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
        let (confs, route) = dest.lanes(ctx.slots, ctx.connections);
        let lanes = confs.iter().map(Lane::open).collect::<anyhow::Result<Vec<_>>>()?;
        let n = lanes.len();
        let r = std::thread::scope(|s| -> anyhow::Result<()> {
            let mut txs = Vec::new();
            let mut workers = Vec::new();
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
            let d = Dispatch {
                conf: &ctx.write,
                dest,
                tracker: &tracker,
                txs,
                bufs: (0..n).map(|_| (Vec::new(), 0)).collect(),
                open: None,
                chosen,
                seq: 1,
                now_ms: now_ms(),
                lost: Vec::new(),
                orphan_noted: false,
                last_key: None,
                after_lost: false,
                route,
                moved: &moved,
                only: None,
            };
            tracker.begin(1);
            let mut out = MigrateOut {
                d,
                ctx,
                id,
                task,
                read: read_before.keys_by_type.values().sum::<u64>() + read_before.reread,
                rescans: read_before.rescans,
                last_cut: Instant::now(),
                cuts: VecDeque::new(),
                saved_seq: 0,
                seconds_before,
                started,
                skip_log: skip_log.as_ref(),
            };
            let from = position.map(|p| (p, read_before.clone()));
            let exported = export_db(link, ctx.source_throttle, db, ctx.scan, from, &mut out);
            let finished = exported.is_ok();
            let end = match exported {
                Ok(report) => {
                    read_report = report.clone();
                    Some((
                        Position::Scan {
                            cursor: "0".into(),
                            run_id: None,
                        },
                        report,
                    ))
                }
                Err(e) => {
                    read_report = DbReport::default();
                    // Stopped: the last quiet cut stands; what came after it is sent again by
                    // the resume. Send what is queued, so the cut's blocks complete.
                    let sent = out.d.flush_all();
                    drop(out.d.txs.drain(..));
                    let _ = sent;
                    out.d.tracker.seal(out.d.seq, Pos::default());
                    let mut worker_error = None;
                    for w in std::mem::take(&mut workers) {
                        if let Err(we) = w
                            .join()
                            .unwrap_or_else(|_| Err(anyhow!("BUG: a connection thread panicked")))
                        {
                            worker_error.get_or_insert(we);
                        }
                    }
                    if worker_error.is_none() {
                        out.d.tracker.wait_all();
                    }
                    out.save_done()?;
                    return Err(match worker_error {
                        Some(we) if !e.is::<crate::interrupt::Interrupted>() => we,
                        _ => e,
                    });
                }
            };
            if out.d.open.is_some() {
                bail!("BUG: the source ended inside a key");
            }
            out.d.flush_all()?;
            out.d.tracker.seal(out.d.seq, Pos::default());
            drop(out.d.txs.drain(..));
            let mut worker_error = None;
            for w in workers {
                if let Err(we) = w
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("BUG: a connection thread panicked")))
                {
                    worker_error.get_or_insert(we);
                }
            }
            if let Some(we) = worker_error {
                out.save_done()?;
                return Err(we);
            }
            tracker.wait_all();
            if let Some(f) = first_failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
                out.save_done()?;
                bail!("stopped at the first failed key (--fail-fast): {f}");
            }
            if let (true, Some((position, report))) = (finished, end) {
                let (_, counts, chosen) = tracker.committed();
                let seconds = seconds_before + started.elapsed().as_secs_f64();
                ctx.state
                    .save_shard(id, &ShardState::new(true, position, report, counts, seconds, &chosen))?;
                if let Some(log) = &skip_log {
                    log.remove();
                }
            }
            Ok(())
        });
        r
    })();
    let outcome = ShardOutcome {
        read: if result.is_ok() { read_report } else { read_before },
        counts: if result.is_ok() {
            tracker.committed().1
        } else {
            tracker.so_far()
        },
        seconds: seconds_before + started.elapsed().as_secs_f64(),
        resumed,
        target_reconnects: reconnects.load(Relaxed),
        redirects: redirects.load(Relaxed),
    };
    match result {
        Ok(()) => Ok(outcome),
        Err(e) => Err((e, Box::new(outcome))),
    }
}
