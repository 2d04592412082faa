//! Exports one shard (one source × database) into its part files, checkpointing as it goes so
//! that a killed run can be resumed (state.rs), and counting its progress.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::state::{PlannedShard, ShardState};
use crate::format::record::KeyRecord;
use crate::format::snapshot::{ShardEntry, ShardSink, ShardSpec, SnapshotOptions};
use crate::progress::Task;
use crate::server::conn::ServerKind;
use crate::server::link::Link;
use crate::server::throttle::Throttle;
use crate::source::{export_db, DbReport, Out, Position, ScanOptions};

/// What every shard of a run shares.
pub struct Ctx<'a> {
    pub dir: &'a Path,
    pub endpoints: &'a [crate::server::endpoint::Endpoint],
    pub scan: &'a ScanOptions,
    pub snap: &'a SnapshotOptions,
    pub created_unix_ms: u64,
    pub throttle: &'a Throttle,
    /// Set when another shard failed: stop at the next page.
    pub stop: &'a AtomicBool,
    /// Checkpoint at the first page end after this much time since the last checkpoint.
    pub checkpoint_every: Duration,
    /// Where links say that their server does not answer.
    pub notify: Option<crate::server::link::Notify>,
}

/// The error a shard stops with when another one failed.
#[derive(Debug, thiserror::Error)]
#[error("stopped because another shard failed")]
pub struct Cancelled;

#[derive(Serialize, Clone, Debug)]
pub struct ShardReport {
    pub shard: String,
    pub source: String,
    pub server: String,
    pub db: u32,
    pub seconds: f64,
    /// The shard continued from a checkpoint of an earlier run.
    pub resumed: bool,
    #[serde(flatten)]
    pub db_report: DbReport,
}

/// Keys a report accounts for (exported, gone, filtered, skipped, failed).
fn listed(r: &DbReport) -> u64 {
    r.keys_by_type.values().sum::<u64>() + r.gone + r.filtered + r.skipped_unknown.len() as u64 + r.failed.len() as u64
}

/// Where the shard's records go: the sink, the progress counters and the checkpoints.
struct ShardOut<'a> {
    ctx: &'a Ctx<'a>,
    id: &'a str,
    sink: ShardSink,
    task: &'a Task,
    bytes: u64,
    /// Keys read (and rereads) over the pages done, as the report counted them at the last page.
    read: u64,
    rescans: u64,
    last_checkpoint: Instant,
    /// Seconds of earlier runs, and when this one started.
    seconds_before: f64,
    started: Instant,
}

impl Out for ShardOut<'_> {
    fn record(&mut self, r: &KeyRecord) -> anyhow::Result<()> {
        self.bytes += r.key.len() as u64 + r.value.size().0;
        self.sink.push(r).map_err(|e| disk_error(e.into()))?;
        // Progress moves with every key written, not with every page done: under a rate limit
        // a page takes long (issue 11: 0 % for 20-30 s, then a jump).
        if r.is_last() {
            self.task.add(1, std::mem::take(&mut self.bytes));
        }
        Ok(())
    }

    fn start_over(&mut self) -> anyhow::Result<()> {
        self.bytes = 0;
        // The checkpoint names files that go now: a resume before the next one starts afresh.
        let state = super::state::shard_state_path(self.ctx.dir, self.id);
        match std::fs::remove_file(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::Error::new(e).context(format!("{}: cannot remove", state.display())))
            }
            _ => {}
        }
        self.sink.start_over().map_err(|e| disk_error(e.into()))
    }

    fn checkpoint_due(&self) -> bool {
        crate::interrupt::interrupted() || self.last_checkpoint.elapsed() >= self.ctx.checkpoint_every
    }

    fn page(&mut self, keys: u64, next: &Position, report: &DbReport, quiet: bool) -> anyhow::Result<()> {
        let read = report.keys_by_type.values().sum::<u64>() + report.reread;
        if report.rescans != self.rescans {
            // Scanning again from the start: count again from zero.
            self.rescans = report.rescans;
            self.task.reset();
            self.task.add(listed(report), 0);
        } else {
            // The page's keys not counted as they were written: gone, filtered, failed.
            self.task.add(keys.saturating_sub(read.saturating_sub(self.read)), 0);
        }
        self.read = read;
        self.task.set_failed(report.failed.len() as u64);
        // Ctrl-C: checkpoint here, then stop (the run says how to resume).
        let interrupted = crate::interrupt::interrupted();
        if self.ctx.stop.load(Ordering::Relaxed) && !interrupted {
            return Err(Cancelled.into());
        }
        if !quiet {
            return Ok(());
        }
        if self.checkpoint_due() {
            let sink = self.sink.checkpoint().map_err(|e| disk_error(e.into()))?;
            let state = ShardState {
                sink,
                position: next.clone(),
                report: report.clone(),
                seconds: self.seconds_before + self.started.elapsed().as_secs_f64(),
                done: None,
                server: String::new(),
            };
            state.write(self.ctx.dir, self.id).map_err(disk_error)?;
            self.last_checkpoint = Instant::now();
        }
        if interrupted {
            return Err(crate::interrupt::Interrupted.into());
        }
        Ok(())
    }
}

/// Adds what to do to an error that comes from a full disk.
fn disk_error(e: anyhow::Error) -> anyhow::Error {
    let full = e.chain().any(|c| {
        let s = c.to_string();
        s.contains("No space left on device") || s.contains("os error 28")
    });
    if full {
        e.context("the disk is full: free space (or move the snapshot), then run the same command with --resume")
    } else {
        e
    }
}

/// How many keys database `db` holds, if the server can say cheaply. Not asked of Pika: its
/// DBSIZE is a cached count, and with `slotmigrate yes` it writes two replies (SERVERS.md).
/// Kvrocks answers 0 until `DBSIZE SCAN` has run, so 0 means unknown.
pub(crate) fn estimate(link: &mut Link, throttle: &Throttle, db: u32) -> Option<u64> {
    if matches!(link.server.kind, ServerKind::Pika(..)) {
        return None;
    }
    link.select(db).ok()?;
    let n: u64 = redis::cmd("DBSIZE").query(&mut link.conn(throttle)).ok()?;
    (n > 0).then_some(n)
}

/// Exports shard `plan`, continuing from its checkpoint when an earlier run left one.
pub fn run(ctx: &Ctx, plan: &PlannedShard, task: &Task) -> anyhow::Result<(ShardEntry, ShardReport)> {
    let state = ShardState::read(ctx.dir, &plan.id)?;
    let endpoint = &ctx.endpoints[plan.source];
    if let Some(ShardState {
        done: Some(entry),
        report,
        seconds,
        server,
        ..
    }) = &state
    {
        task.start(Some(listed(report)));
        task.add(listed(report), entry.raw_bytes);
        task.finish(true);
        let report = ShardReport {
            shard: plan.id.clone(),
            source: entry.source.clone(),
            server: server.clone(),
            db: plan.db,
            seconds: *seconds,
            resumed: true,
            db_report: report.clone(),
        };
        return Ok((entry.clone(), report));
    }
    let mut link = Link::open(endpoint)?.with_notify(ctx.notify.clone());
    let spec = ShardSpec {
        id: plan.id.clone(),
        source: link.server.name.clone(),
        source_server: Some(link.server.software()),
        db: plan.db,
    };
    let resumed = state.is_some();
    let (sink, from, seconds_before) = match state {
        Some(s) => (
            ShardSink::resume(ctx.dir, spec, ctx.snap.clone(), ctx.created_unix_ms, s.sink)?,
            Some((s.position, s.report)),
            s.seconds,
        ),
        None => (
            ShardSink::new(ctx.dir, spec, ctx.snap.clone(), ctx.created_unix_ms)?,
            None,
            0.0,
        ),
    };
    task.start(estimate(&mut link, ctx.throttle, plan.db));
    let before = from.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
    task.add(listed(&before), 0);
    let mut out = ShardOut {
        ctx,
        id: &plan.id,
        sink,
        task,
        bytes: 0,
        read: before.keys_by_type.values().sum::<u64>() + before.reread,
        rescans: before.rescans,
        last_checkpoint: Instant::now(),
        seconds_before,
        started: Instant::now(),
    };
    let report = export_db(&mut link, ctx.throttle, plan.db, ctx.scan, from, &mut out)?;
    let seconds = seconds_before + out.started.elapsed().as_secs_f64();
    let entry = out.sink.finish().map_err(|e| disk_error(e.into()))?;
    let done = ShardState {
        sink: Default::default(),
        server: link.server.software(),
        position: Position::Scan {
            cursor: "0".into(),
            run_id: None,
        },
        report: report.clone(),
        seconds,
        done: Some(entry.clone()),
    };
    done.write(ctx.dir, &plan.id).context("recording the finished shard")?;
    task.finish(true);
    Ok((
        entry,
        ShardReport {
            shard: plan.id.clone(),
            source: link.server.name.clone(),
            server: link.server.software(),
            db: plan.db,
            seconds,
            resumed,
            db_report: report,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk says so, and what to do; other errors are left as they are.
    #[test]
    fn full_disk_errors_say_what_to_do() {
        let full = std::io::Error::from_raw_os_error(28);
        let e = disk_error(anyhow::Error::new(full).context("/snap/src0-db0.0000.kvf: writing"));
        let text = format!("{e:#}");
        assert!(text.starts_with("the disk is full"), "{text}");
        assert!(
            text.contains("--resume") && text.contains("src0-db0.0000.kvf"),
            "{text}"
        );
        let other = disk_error(anyhow::anyhow!("permission denied"));
        assert_eq!(format!("{other:#}"), "permission denied");
    }
}
