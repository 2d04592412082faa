//! Importing one shard: a decoder reads its blocks in order (decompression on its own threads),
//! this thread turns records into commands and hands them to the connections, a key's commands
//! always to the same connection and in order (issue 4, "Fast"); the tracker counts the replies
//! per block, and a checkpointer saves the done prefix every few seconds.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::state::{ShardState, StateDir};
use crate::format::reader::ReadMode;
use crate::format::record::{Lossy, Record};
use crate::format::snapshot::Snapshot;
use crate::progress::Task;
use crate::server::throttle::Throttle;
use crate::target::dest::{ClusterRoute, Dest};
use crate::target::dispatch::{now_ms, Dispatch, WriteConf};
use crate::target::lane::{Item, KeyTag, Lane, LaneConf, Shared};
use crate::target::skiplog::SkipLog;
use crate::target::track::{Counts, Outcome, Pos, Tracker};

/// Settings shared by all shards.
pub struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub write: WriteConf,
    pub connections: usize,
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
    pub(crate) fn nothing(error: anyhow::Error) -> Failed {
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
                conf: &ctx.write,
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
            let dispatched = dispatch(&mut d, ctx, si, start, task);
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
fn dispatch(d: &mut Dispatch, ctx: &Ctx, si: usize, start: Pos, task: &Task) -> anyhow::Result<()> {
    let entry = &ctx.snap.manifest.shards[si];
    for pi in start.part as usize..entry.parts.len() {
        let path = ctx.snap.part_path(&entry.parts[pi]);
        let reader = ctx
            .snap
            .open_part(si, pi, ReadMode::Read)
            .with_context(|| format!("{}", path.display()))?;
        let first = if pi == start.part as usize { start.block } else { 0 };
        let records: Vec<u32> = reader.trailer().blocks.iter().map(|b| b.records()).collect();
        let mut err = None;
        reader.par_blocks_from(
            first,
            ctx.decode_threads,
            |b| b,
            |bi, block| {
                if ctx.stop.load(Relaxed) {
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
                                    ctx.stop.store(true, Relaxed);
                                    return Ok(());
                                }
                                match rec {
                                    Ok(Record::Key(rec)) => d.record(&rec, here(ri as u32))?,
                                    Ok(Record::Skippable { .. }) => {}
                                    Err(e) => {
                                        lose(d, ctx, &path, bi, records.get(bi as usize).copied(), &e.to_string())?;
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) => lose(
                            d,
                            ctx,
                            &path,
                            bi,
                            records.get(bi as usize).copied(),
                            &e.error.to_string(),
                        )?,
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
        if ctx.stop.load(Relaxed) {
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
fn lose(
    d: &mut Dispatch,
    ctx: &Ctx,
    path: &std::path::Path,
    block: u32,
    records: Option<u32>,
    why: &str,
) -> anyhow::Result<()> {
    if !ctx.skip_corrupt {
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
