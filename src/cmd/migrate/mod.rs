//! `kvferry migrate`: export, import and verify as one pipeline, for when the files are not
//! needed. Records stream from the source's reads to the target's writes (shard.rs) with the
//! guarantees of both commands: the same filters, mapping, conflict and multi-type policies,
//! reconnects, checkpoints and `--resume`, progress, summary and report. It ends with a verify
//! that reads the source again and compares every key with the target (unless `--no-verify`).
//! With `--via DIR` it runs export, import and verify through a snapshot in DIR, and keeps it.

mod shard;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::export::SelectArgs;
use super::import::{Conflict, WriteArgs};
use crate::cmd::watch::{WatchArgs, Watched};
use crate::interrupt::Interrupted;
use crate::progress::{Mode, Progress};
use crate::server::conn::{connect, redact};
use crate::server::endpoint::Endpoint;
use crate::server::link::Link;
use crate::server::throttle::Throttle;
use crate::source;
use crate::source::{DbReport, ScanOptions};
use crate::target::dest::{
    check_writable, destinations, dialect_of, open_target, refuse_non_empty, Dest, Holder, MapArgs,
};
use crate::target::dispatch::WriteConf;
use crate::target::track::Counts;
use shard::{Cancelled, ShardOutcome};
use state::{Options, RunState, StateDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The server to read, redis://[user:pass@]host:port (Pika, Redis, Kvrocks, Valkey); repeat
    /// for several. Each source × database is a shard.
    #[arg(long = "source", value_name = "URL", required = true)]
    pub sources: Vec<String>,
    /// The server to write into.
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// Go through a snapshot in this directory and keep it (export, import, verify one after
    /// the other), instead of streaming with no files.
    #[arg(long, value_name = "DIR")]
    pub via: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub map: MapArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Shards migrated at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256), value_name = "N")]
    pub parallel: u32,
    /// Connections per shard that read the source's keys (besides the one that lists them),
    /// like export's --connections.
    #[arg(long, alias = "readers", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64), value_name = "N")]
    pub source_connections: u32,
    /// Send at most this many commands per second to the sources, and as many to the target.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_ops_per_sec: Option<u64>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Continue an interrupted migration from its checkpoints; give the same options.
    #[arg(long)]
    pub resume: bool,
    /// Where to keep checkpoints (default: $XDG_STATE_HOME/kvferry, or ~/.local/state/kvferry,
    /// one directory per target). Kept, marked done, after the migration: a `--resume` of a
    /// finished one writes nothing and verifies again.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Connect, plan the shards, check the mapping and conflicts; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not read the source again at the end to compare every key with the target.
    #[arg(long)]
    pub no_verify: bool,
    /// How far an expiry may be off in the verify, e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = crate::util::parse_duration_ms, value_name = "DURATION")]
    pub ttl_tolerance: u64,
    /// How to show progress on stderr (see `kvferry export --help`).
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    /// Write a JSON report of the run to this file (with --via: FILE.export, FILE.import and
    /// FILE.verify, one per step).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub connect: crate::server::endpoint::ConnectArgs,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 5.0, hide = true)]
    pub checkpoint_secs: f64,
}

/// A shard of the migration: a source's database.
struct Planned {
    id: String,
    source: usize,
    db: u32,
}

/// The default place for checkpoints: the user's state directory, one per target.
/// The data the sources hold, when every one of them says (Redis and Valkey: INFO memory's
/// `used_memory_dataset`).
fn source_data(endpoints: &[Endpoint]) -> Option<u64> {
    let mut total = 0;
    for ep in endpoints {
        let mut c = connect(ep, Duration::from_secs(10)).ok()?;
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).ok()?;
        let n: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory_dataset:"))?
            .trim()
            .parse()
            .ok()?;
        total += n;
    }
    Some(total)
}

fn default_state(target: &str) -> anyhow::Result<PathBuf> {
    crate::util::state_home(&format!("migrate-{}", crate::util::safe_name(target)))
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    crate::interrupt::stops_cleanly();
    crate::util::check_report_path(a.report.as_deref())?;
    if a.via.is_some() {
        return run_via(a);
    }
    let scan = a.select.scan_options(a.max_ops_per_sec, a.source_connections)?;
    let endpoints = a.connect.endpoints(&a.sources)?;
    // Every argument is checked before the slow work: the target and the mapping too.
    let target = open_target(&a.connect, &a.target, &a.map, "target")?;
    let sources = crate::source::pika_cache::Sources::open(&endpoints, a.connect.pika_cache_off)?;
    let kinds = &sources.kinds;
    let (shards, empty) = plan(&a.select, &endpoints)?;
    if empty > 0 {
        crate::note!(
            "{} left out: nothing to migrate from {}",
            crate::util::count(empty as u64, "empty database"),
            if empty == 1 { "it" } else { "them" }
        );
    }
    let dests = destinations(
        &a.map,
        Holder::Source,
        a.write.conflict == Conflict::Skip,
        &shards.iter().map(|s| s.db).collect::<Vec<_>>(),
        Some((&target.probe, &target.server)),
        target.slots.is_some(),
    )?;
    check_writable(&target.probe, &target.server.name, a.dry_run)?;
    let dialect = dialect_of(&target.server, &target.probe, a.dry_run)?;
    let state_dir = StateDir {
        dir: match &a.state {
            Some(d) => d.clone(),
            None => default_state(&target.server.name)?,
        },
    };
    let options = Options {
        sources: a.sources.iter().map(|u| redact(u)).collect(),
        target: target.server.name.clone(),
        shards: shards.iter().map(|s| s.id.clone()).collect(),
        destinations: dests.iter().map(|d| d.describe.clone()).collect(),
        conflict: format!("{:?}", a.write.conflict).to_lowercase(),
        multi_type: format!("{:?}", a.write.multi_type).to_lowercase(),
        filters: format!(
            "db={} match={:?} types={:?} exclude={:?} skip_unknown={}",
            a.select.db, a.select.pattern, a.select.types, a.select.exclude_prefix, a.select.skip_unknown_types
        ),
    };
    let previous = state_dir.read_run()?;
    let resuming = match (&previous, a.resume) {
        (Some(run), true) => {
            run.check_same(&options, &state_dir.dir)?;
            true
        }
        (Some(_), false) if !a.dry_run => {
            let unfinished = shards
                .iter()
                .any(|s| !state_dir.load_shard(&s.id).ok().flatten().is_some_and(|st| st.done));
            if unfinished {
                bail!(
                    "{}: an unfinished migration into {} is recorded there; add --resume to continue it, or remove the directory to start over",
                    state_dir.dir.display(),
                    target.server.name
                );
            }
            false
        }
        (None, true) => {
            crate::note!(
                "{}: no checkpoint: starting the migration from the beginning",
                state_dir.dir.display()
            );
            false
        }
        _ => false,
    };
    if a.write.conflict == Conflict::Fail && !resuming {
        refuse_non_empty(&dests, target.slots.as_ref())?;
    }
    if a.dry_run {
        for (s, d) in shards.iter().zip(&dests) {
            println!(
                "{} ({} db {}) -> {}",
                s.id,
                redact(&a.sources[s.source]),
                s.db,
                d.describe
            );
        }
        // What the writes would meet: the target's rights, and room for the sources' data
        // (Redis and Valkey say how much they hold; other sources are known only once read).
        let mut f = crate::target::preflight::Findings::default();
        crate::target::preflight::writable(&target.probe, &target.server, &mut f)?;
        match source_data(&endpoints) {
            Some(bytes) => crate::target::preflight::room(&target.probe, &target.server, bytes, &mut f)?,
            None => f.add(
                crate::target::preflight::Level::Ok,
                "room",
                "not estimated: the source does not say how much data it holds (export it first, or run import --dry-run on its snapshot)",
            ),
        }
        println!("what the migration would meet:");
        f.print(&mut std::io::stdout().lock())?;
        if f.refusals() > 0 {
            bail!(
                "dry run: the migration would refuse to start ({} above); nothing was written",
                crate::util::count(f.refusals() as u64, "refusal")
            );
        }
        println!("dry run: the source and the target answer, the mapping and conflict rules hold; nothing was written");
        return Ok(0);
    }
    std::fs::create_dir_all(&state_dir.dir).with_context(|| {
        format!(
            "{}: cannot create the migration's state directory; give a writable one with --state DIR",
            state_dir.dir.display()
        )
    })?;
    let _lock = crate::util::DirLock::take(&state_dir.dir)?;
    if !resuming {
        state_dir.start(&RunState {
            kvferry: env!("CARGO_PKG_VERSION").into(),
            started_unix_ms: crate::util::now_ms(),
            options,
        })?;
    }
    crate::note!("checkpoints in {}", state_dir.dir.display());
    let source_throttle = Arc::new(Throttle::new(a.max_ops_per_sec));
    let target_throttle = Arc::new(Throttle::new(a.max_ops_per_sec));
    let mut watched: Vec<Watched> = Watched::sources(&endpoints, kinds, &source_throttle);
    watched.push(Watched {
        role: "target",
        endpoint: &target.probe,
        kind: &target.server.kind,
        throttle: target_throttle.clone(),
    });
    let watch = a.watch.start("migrate", watched, a.max_ops_per_sec)?;
    let stop = AtomicBool::new(false);
    let progress = Progress::start_phase(a.progress, "migrate", shards.iter().map(|s| s.id.clone()).collect());
    let ctx = shard::Ctx {
        write: WriteConf {
            dialect,
            del_first: a.write.conflict != Conflict::Skip,
            multi: a.write.multi_type,
            pipeline: a.write.pipeline as usize,
            batch_bytes: 4 << 20,
        },
        scan: &scan,
        connections: a.write.connections as usize,
        source_throttle: &source_throttle,
        target_throttle: &target_throttle,
        stop: &stop,
        fail_fast: a.write.fail_fast,
        checkpoint_every: Duration::from_secs_f64(a.checkpoint_secs.max(0.05)),
        state: &state_dir,
        notify: Some(progress.printer()),
        slots: target.slots.as_ref(),
    };
    let started = std::time::Instant::now();
    let results = run_shards(
        &ctx,
        &endpoints,
        &shards,
        &dests,
        resuming,
        a.parallel as usize,
        &progress,
    );
    progress.stop();
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    for (s, r) in shards.iter().zip(results) {
        match r {
            Ok(o) => outcomes.push((s, o)),
            Err((e, o)) => {
                if !(e.is::<Cancelled>() || e.is::<Interrupted>()) {
                    errors.push(format!(
                        "shard {} ({} db {}): {e:#}",
                        s.id,
                        redact(&a.sources[s.source]),
                        s.db
                    ));
                }
                outcomes.push((s, *o));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if crate::interrupt::interrupted() && errors.is_empty() {
        let keys: u64 = outcomes.iter().map(|(_, o)| o.counts.keys()).sum();
        println!(
            "interrupted: {keys} keys migrated so far; every shard stopped at a checkpoint in {}.\nContinue with:\n  {}",
            state_dir.dir.display(),
            crate::interrupt::resume_command()
        );
        return Ok(crate::interrupt::EXIT_INTERRUPTED);
    }
    let failed = summary(&outcomes, &dests, seconds, a.report.is_some())?;
    watch.print_summary();
    if let Some(path) = &a.report {
        write_report(path, &target.server.name, &outcomes, &errors, &watch.stats())?;
    }
    if !errors.is_empty() {
        for e in &errors[1..] {
            crate::note!("error: {e}");
        }
        bail!(
            "{}\nThe migration is unfinished; its checkpoints are in {}: fix the cause and run the same command with --resume.",
            errors[0],
            state_dir.dir.display()
        );
    }
    if failed > 0 {
        println!(
            "the checkpoints stay in {}: once the cause is fixed, run the same command with --resume to write the failed keys again",
            state_dir.dir.display()
        );
    }
    if a.no_verify {
        return Ok(if failed == 0 { 0 } else { 1 });
    }
    let verified = verify(
        &a,
        &scan,
        &endpoints,
        &shards,
        &dests,
        &target,
        (&source_throttle, &target_throttle),
    )?;
    Ok(if failed == 0 && verified == 0 { 0 } else { 1 })
}

/// Lists the shards: one per source × database; on Redis and Valkey, whose DBSIZE is exact,
/// empty databases are left out (and counted).
fn plan(select: &SelectArgs, endpoints: &[Endpoint]) -> anyhow::Result<(Vec<Planned>, usize)> {
    let mut shards = Vec::new();
    let mut empty = 0;
    for (i, ep) in endpoints.iter().enumerate() {
        let mut link = Link::open(ep)?;
        let server = link.server.clone();
        crate::note!(
            "{}: {} with {} databases (source)",
            server.name,
            server.software(),
            server.databases.len()
        );
        for db in super::export::parse_dbs(&select.db, &server.databases).with_context(|| server.name.clone())? {
            // Asked for all databases, the empty ones are left out, where the server can tell.
            if select.db == "all" && source::holds_keys(&mut link, &Throttle::new(None), db)? == Some(false) {
                empty += 1;
                continue;
            }
            shards.push(Planned {
                id: format!("src{i}-db{db}"),
                source: i,
                db,
            });
        }
    }
    if shards.is_empty() {
        bail!(
            "the sources hold no keys in the databases asked for (--db {}); nothing to migrate",
            select.db
        );
    }
    Ok((shards, empty))
}

type ShardResult = Result<ShardOutcome, (anyhow::Error, Box<ShardOutcome>)>;

/// Runs the shards on up to `parallel` threads; after a failure the others stop at their next
/// page (keeping their checkpoints).
fn run_shards(
    ctx: &shard::Ctx,
    endpoints: &[Endpoint],
    shards: &[Planned],
    dests: &[Dest],
    resuming: bool,
    parallel: usize,
    progress: &Progress,
) -> Vec<ShardResult> {
    crate::util::run_parallel(parallel, shards.len(), |i| {
        let task = progress.task(i);
        let r = one_shard(ctx, endpoints, &shards[i], &dests[i], resuming, &task);
        task.finish(r.is_ok());
        if r.is_err() {
            ctx.stop.store(true, Ordering::Relaxed);
        }
        r
    })
}

fn one_shard(
    ctx: &shard::Ctx,
    endpoints: &[Endpoint],
    s: &Planned,
    dest: &Dest,
    resuming: bool,
    task: &crate::progress::Task,
) -> ShardResult {
    let fail = |e: anyhow::Error| (e, Box::default());
    if ctx.stop.load(Ordering::Relaxed) {
        return Err(fail(Cancelled.into()));
    }
    let from = if resuming {
        ctx.state.load_shard(&s.id).map_err(fail)?
    } else {
        None
    };
    if let Some(st) = from.as_ref().filter(|st| st.done) {
        if st.counts.failed_total() == 0 && st.read.failed.is_empty() {
            task.start(Some(st.counts.keys()));
            task.add(st.counts.keys(), 0);
            return Ok(ShardOutcome {
                read: st.read.clone(),
                counts: st.counts.clone(),
                seconds: st.seconds,
                resumed: true,
                ..ShardOutcome::default()
            });
        }
    }
    // A finished shard with failed keys is migrated again whole (each key from a DEL): the
    // keys that failed are written this time, the others once more.
    let from = from.filter(|st| !st.done);
    let mut link = Link::open(&endpoints[s.source])
        .map_err(fail)?
        .with_notify(ctx.notify.clone());
    shard::run(ctx, &s.id, &mut link, s.db, dest, from, task)
}

fn types(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the summary; returns the keys that failed (read or written).
fn summary(outcomes: &[(&Planned, ShardOutcome)], dests: &[Dest], seconds: f64, report: bool) -> std::io::Result<u64> {
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    let (mut total, mut read) = (Counts::default(), DbReport::default());
    for ((s, o), d) in outcomes.iter().zip(dests) {
        let c = &o.counts;
        writeln!(
            out,
            "{} -> {}: written {} ({}), expired {}, skipped {}, failed {}{}",
            s.id,
            d.describe,
            c.written.values().sum::<u64>(),
            types(&c.written),
            c.expired.values().sum::<u64>(),
            c.skipped.values().sum::<u64>(),
            c.failed_total() + o.read.failed.len() as u64,
            if o.resumed { " (resumed)" } else { "" }
        )?;
        total.merge(c);
        read.merge(o.read.clone());
    }
    let failed = total.failed_total() + read.failed.len() as u64;
    let bytes: u64 = total.bytes;
    crate::progress::set_result(serde_json::json!({
        "written": total.written.values().sum::<u64>(),
        "expired": total.expired.values().sum::<u64>(),
        "skipped": total.skipped.values().sum::<u64>(),
        "failed": failed,
        "gone_before_read": read.gone,
    }));
    writeln!(
        out,
        "total: written {} ({}), expired {}, skipped {}, failed {}; gone before read {}; in {:.1} s ({:.0} keys/s)",
        crate::util::count(total.written.values().sum::<u64>(), "key"),
        crate::util::human_bytes(bytes),
        total.expired.values().sum::<u64>(),
        total.skipped.values().sum::<u64>(),
        failed,
        read.gone,
        seconds,
        total.written.values().sum::<u64>() as f64 / seconds.max(0.001),
    )?;
    let read_failed: Vec<crate::util::Problem> = read.failed.clone();
    super::list_keys(&mut out, "failed to read", &read_failed, report)?;
    super::list_keys(&mut out, "failed", &total.failed_keys, report)?;
    super::list_keys(&mut out, "multi-type", &total.multi_type, report)?;
    super::list_keys(&mut out, "Pika HyperLogLog", &total.pika_hll, report)?;
    Ok(failed)
}

fn write_report(
    path: &std::path::Path,
    target: &str,
    outcomes: &[(&Planned, ShardOutcome)],
    errors: &[String],
    servers: &[crate::server::health::Stats],
) -> anyhow::Result<()> {
    let shards: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|(s, o)| {
            serde_json::json!({
                "shard": s.id,
                "db": s.db,
                "seconds": o.seconds,
                "resumed": o.resumed,
                "read": o.read,
                "written": o.counts,
                "target_reconnects": o.target_reconnects,
                "redirects": o.redirects,
            })
        })
        .collect();
    let text = serde_json::to_vec_pretty(&serde_json::json!({
        "target": target,
        "shards": shards,
        "errors": errors,
        "servers": servers,
    }))?;
    std::fs::write(path, text).with_context(|| format!("{}: cannot write the report", path.display()))
}

/// Reads the source again and compares every key with the target; returns the differences'
/// exit code (0 none, 1 some).
fn verify(
    a: &Args,
    scan: &ScanOptions,
    endpoints: &[Endpoint],
    shards: &[Planned],
    dests: &[Dest],
    target: &crate::target::dest::Target,
    (throttle, verify_throttle): (&Throttle, &Throttle),
) -> anyhow::Result<i32> {
    println!("verifying: reading the source again and comparing every key with the target");
    let list = shards
        .iter()
        .zip(dests)
        .map(|(s, d)| {
            let (ep, db) = (&endpoints[s.source], s.db);
            super::verify::Shard {
                id: s.id.clone(),
                keys: None,
                dest: d.clone(),
                feed: super::verify::source_feed(ep, db, scan, throttle),
            }
        })
        .collect();
    let check = super::verify::Check {
        sample: 1.0,
        multi_type: a.write.multi_type,
        ttl_tolerance: a.ttl_tolerance,
        extra: false,
        parallel: a.parallel as usize,
        connections: a.write.connections as usize,
    };
    super::verify::compare(
        &check,
        target,
        list,
        verify_throttle,
        a.progress,
        None,
        a.connect.pika_cache_off,
        "the source",
    )
}

/// `--via DIR`: export into DIR, import it, verify it; the snapshot stays.
fn run_via(a: Args) -> anyhow::Result<i32> {
    let dir = a.via.clone().expect("BUG: called with --via");
    let step_report = |step: &str| {
        a.report.as_ref().map(|p| {
            let mut s = p.clone().into_os_string();
            s.push(format!(".{step}"));
            PathBuf::from(s)
        })
    };
    // One metrics endpoint for the three steps; each step watches its own servers.
    let _metrics = match &a.watch.metrics_addr {
        Some(addr) => Some(crate::metrics::Metrics::start(addr, "migrate")?),
        None => None,
    };
    let watch = WatchArgs {
        max_latency_ms: a.watch.max_latency_ms,
        metrics_addr: None,
    };
    println!("step 1 of 3: export into {}", dir.display());
    let done = dir.join(crate::format::consts::MANIFEST_NAME).exists();
    if !done {
        let code = super::export::run(super::export::Args {
            sources: a.sources.clone(),
            out: dir.clone(),
            select: a.select.clone(),
            max_ops_per_sec: a.max_ops_per_sec,
            watch: watch.clone(),
            parallel: a.parallel,
            connections: a.source_connections,
            resume: a.resume,
            progress: a.progress,
            report: step_report("export"),
            connect: a.connect.clone(),
            check_lengths: false,
            sample: None,
            checkpoint_secs: a.checkpoint_secs,
        })?;
        if code != 0 {
            println!("the export ended with exit code {code}: the import does not start. Fix the cause and run the same command with --resume.");
            return Ok(code);
        }
    } else {
        println!("{}: the snapshot is complete already", dir.display());
    }
    println!("step 2 of 3: import into {}", redact(&a.target));
    let code = super::import::run(super::import::Args {
        snapshot: dir.clone(),
        target: Some(a.target.clone()),
        resp: None,
        shards: Vec::new(),
        map: a.map.clone(),
        write: a.write.clone(),
        parallel: a.parallel,
        max_ops_per_sec: a.max_ops_per_sec,
        watch: watch.clone(),
        resume: a.resume,
        state: a.state.clone(),
        undo: None,
        dry_run: a.dry_run,
        skip_corrupt_blocks: false,
        no_check: false,
        progress: a.progress,
        report: step_report("import"),
        connect: a.connect.clone(),
        checkpoint_secs: a.checkpoint_secs,
    })?;
    if code != 0 || a.no_verify || a.dry_run {
        return Ok(code);
    }
    println!("step 3 of 3: verify {} against the snapshot", redact(&a.target));
    super::verify::run(super::verify::Args {
        snapshot: dir,
        target: Some(a.target.clone()),
        source: None,
        shards: Vec::new(),
        map: a.map.clone(),
        multi_type: a.write.multi_type,
        sample: 1.0,
        ttl_tolerance: a.ttl_tolerance,
        parallel: a.parallel,
        connections: a.write.connections,
        extra: false,
        max_ops_per_sec: a.max_ops_per_sec,
        watch,
        report: step_report("verify"),
        progress: a.progress,
        connect: a.connect.clone(),
    })
}
