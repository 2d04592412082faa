//! `kvferry export`: reads every key of one or more sources into a snapshot, one shard per
//! source × database, and writes the manifest last (F-SNAP-2), so an interrupted export never
//! looks complete.

pub(crate) mod shard;
mod state;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::cmd::watch::{WatchArgs, Watched};
use crate::format::snapshot::{write_manifest, Manifest, SnapshotOptions};
use crate::format::{consts::MANIFEST_NAME, KeyType};
use crate::interrupt::Interrupted;
use crate::progress::{Mode, Progress};
use crate::server::conn::{redact, ServerKind};
use crate::server::endpoint::Endpoint;
use crate::server::link::Link;
use crate::server::throttle::Throttle;
use crate::source::read::ReadOptions;
use crate::source::sample::{self, Asked};
use crate::source::ScanOptions;
use crate::util::count;
use shard::{Cancelled, ShardReport};
use state::{Options, PlannedShard, RunState};

/// What to read from the sources (shared by export and migrate).
#[derive(clap::Args, Debug, Clone)]
pub struct SelectArgs {
    /// Databases to read: `all` or a list such as `0,3`.
    #[arg(long, value_name = "DBS", default_value = "all")]
    pub db: String,
    /// Only keys matching this glob (SCAN MATCH).
    #[arg(long = "match")]
    pub pattern: Option<String>,
    /// Only these types, e.g. `string,hash`.
    #[arg(long = "type", value_name = "TYPES", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Skip keys that start with this prefix; repeatable.
    #[arg(long, value_name = "PREFIX")]
    pub exclude_prefix: Vec<String>,
    /// Report keys of types kvferry does not know as skipped, instead of failing them.
    #[arg(long)]
    pub skip_unknown_types: bool,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source server, redis://[user:pass@]host:port; repeat for several (e.g. every Pika of a
    /// Codis deployment). Each source × database becomes a shard.
    #[arg(long = "source", value_name = "URL", required = true)]
    pub sources: Vec<String>,
    /// Directory to write the snapshot into (created; must not hold a snapshot already).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Send at most this many commands per second to the sources (all shards together), so the
    /// export can run beside production traffic.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_ops_per_sec: Option<u64>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Shards exported at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Connections per shard that read keys (besides the one that lists them): the server works on one
    /// page while kvferry writes another, and a multi-threaded server (Pika, Kvrocks) serves
    /// several at once.
    #[arg(long, value_name = "N", alias = "readers", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Continue an export that was interrupted (killed, failed), from the last checkpoint of
    /// each shard. Give the same options as the first time. Starts afresh in an empty directory.
    #[arg(long)]
    pub resume: bool,
    /// How to show progress on stderr: bars on a terminal, plain lines for logs (every 10 s),
    /// JSON lines for machines (every 2 s), or nothing. `auto`: bars on a terminal, else plain.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    /// Write a JSON report of the run to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub connect: crate::server::endpoint::ConnectArgs,
    /// A small snapshot that stands for the whole, for trial runs: N (about N keys: a power-of-two
    /// fraction of the source's keys, between N and 2N) or RATE (a fraction, e.g. 0.01). The same
    /// keys on every run (chosen by a hash of the name), and every type and size class included
    /// (a key each where the hash missed one). Every key is still listed and its type and length
    /// asked; only the sample's values are read. The snapshot says it is a sample (SAMPLE.json).
    #[arg(long, value_name = "N|RATE", value_parser = crate::source::sample::parse)]
    pub sample: Option<crate::source::sample::Asked>,
    /// Compare every read with the key's length, as on Pika, whatever the server (tests this
    /// Pika code path with Redis standing in).
    #[arg(long, hide = true)]
    pub check_lengths: bool,
    /// Seconds between checkpoints of a shard (what --resume continues from).
    #[arg(long, default_value_t = 5.0, hide = true)]
    pub checkpoint_secs: f64,
}

pub(crate) fn parse_dbs(spec: &str, available: &[u32]) -> anyhow::Result<Vec<u32>> {
    if spec == "all" {
        return Ok(available.to_vec());
    }
    let dbs = spec
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<u32>()
                .map_err(|_| anyhow!("--db {spec:?}: expected `all` or numbers like 0,3"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(d) = dbs.iter().find(|d| !available.contains(d)) {
        bail!(
            "--db {spec}: the source has no database {d} (it has {})",
            available.len()
        );
    }
    Ok(dbs)
}

/// What the output directory holds.
enum OutDir {
    /// Nothing of an export: start one.
    Fresh,
    /// An unfinished export to continue.
    Unfinished(Box<RunState>),
    /// A complete snapshot.
    Complete,
}

fn out_dir(out: &Path) -> anyhow::Result<OutDir> {
    if out.join(MANIFEST_NAME).exists() {
        return Ok(OutDir::Complete);
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the directory", out.display()))?;
    if let Some(run) = RunState::read(out)? {
        return Ok(OutDir::Unfinished(Box::new(run)));
    }
    // A new export goes into an empty directory only: its files would mix with others'
    // (issue 12), and a later cleanup of the snapshot would take them too.
    let other: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("{}: cannot list the directory", out.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != crate::util::DirLock::NAME)
        .collect();
    if let Some(first) = other.first() {
        let shards = other.iter().any(|n| n.ends_with(".kvf"));
        bail!(
            "{}: holds {} (e.g. {first:?}){}; an export goes into a new or empty directory: choose another with --out",
            out.display(),
            crate::util::count(other.len() as u64, "file"),
            if shards {
                format!(", shard files among them, but no export state ({})", state::RUN_STATE)
            } else {
                String::new()
            }
        );
    }
    Ok(OutDir::Fresh)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn scan_options(a: &Args) -> anyhow::Result<ScanOptions> {
    let mut o = a.select.scan_options(a.max_ops_per_sec, a.connections)?;
    o.check_lengths = a.check_lengths;
    Ok(o)
}

impl SelectArgs {
    /// How to list and read, with the rate limit and readers per shard.
    pub(crate) fn scan_options(&self, max_ops_per_sec: Option<u64>, readers: u32) -> anyhow::Result<ScanOptions> {
        let types = self
            .types
            .iter()
            .map(|t| {
                KeyType::from_name(t)
                    .ok_or_else(|| anyhow!("--type {t}: not one of string, hash, list, set, zset, stream"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ScanOptions {
            read: ReadOptions::default(),
            // Under a rate limit, pages of about a quarter second's commands (a key takes about
            // three): a page's keys are written when the page is read, so progress moves
            // smoothly and Ctrl-C or a checkpoint does not wait for a long page.
            count: max_ops_per_sec.map_or(1000, |r| (r / 12).clamp(10, 1000) as usize),
            pattern: self.pattern.clone(),
            types,
            exclude_prefixes: self.exclude_prefix.iter().map(|p| p.as_bytes().to_vec()).collect(),
            skip_unknown_types: self.skip_unknown_types,
            check_lengths: false,
            readers: readers as usize,
            sample: None,
        })
    }
}

/// Connects to every source and lists the shards: one per source × database.
fn plan(a: &Args, endpoints: &[Endpoint]) -> anyhow::Result<Vec<PlannedShard>> {
    let mut shards = Vec::new();
    for (i, ep) in endpoints.iter().enumerate() {
        let mut link = Link::open(ep)?;
        let server = link.server.clone();
        crate::note!(
            "{}: {} with {} databases",
            server.name,
            server.software(),
            server.databases.len()
        );
        // Pika: where each database's binlog stands now, before any key is read, so that
        // `kvferry follow` can replay every write made during and after the export.
        let binlog = match server.kind {
            ServerKind::Pika(..) => crate::source::pika::read_binlog_positions(&mut link.conn(&Throttle::new(None)))
                .with_context(|| server.name.clone())?,
            _ => Default::default(),
        };
        for db in parse_dbs(&a.select.db, &server.databases).with_context(|| server.name.clone())? {
            let binlog_start = binlog.get(&db).copied();
            if matches!(server.kind, ServerKind::Pika(..)) && binlog_start.is_none() {
                crate::note!(
                    "{}: INFO replication shows no binlog position for db {db}: the snapshot cannot be followed (kvferry follow) from it",
                    server.name
                );
            }
            shards.push(PlannedShard {
                id: format!("src{i}-db{db}"),
                source: i,
                db,
                binlog_start,
            });
        }
    }
    Ok(shards)
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    // A directory this run made is removed again when the run fails before any shard file was
    // written (an unreachable source, a bad --db): no empty --out is left behind (issue 12).
    let made = !a.out.exists();
    let out = a.out.clone();
    let r = run_export(a);
    if r.is_err() && made && out.is_dir() {
        let written = std::fs::read_dir(&out)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.path().extension().is_some_and(|x| x == "kvf"))
            })
            .unwrap_or(true);
        if !written {
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    r
}

fn run_export(a: Args) -> anyhow::Result<i32> {
    crate::interrupt::stops_cleanly();
    crate::util::check_report_path(a.report.as_deref())?;
    let scan = scan_options(&a)?;
    let endpoints = a.connect.endpoints(&a.sources)?;
    // Pika 3.x with its cache on is not read without --pika-cache-off (source/pika_cache.rs);
    // the guards switch the caches on again when the export ends, however it ends.
    let sources = crate::source::pika_cache::Sources::open(&endpoints, a.connect.pika_cache_off)?;
    let kinds = &sources.kinds;
    let options = Options {
        sources: a.sources.iter().map(|u| redact(u)).collect(),
        db: a.select.db.clone(),
        pattern: a.select.pattern.clone(),
        types: a.select.types.clone(),
        exclude_prefixes: a.select.exclude_prefix.clone(),
        skip_unknown_types: a.select.skip_unknown_types,
        sample: a.sample.map(|s| match s {
            Asked::Keys(n) => n.to_string(),
            Asked::Rate(r) => r.to_string(),
        }),
        sample_rate: None,
    };
    let out = out_dir(&a.out)?;
    let _lock = match out {
        OutDir::Complete => None,
        _ => Some(crate::util::DirLock::take(&a.out)?),
    };
    let run = match out {
        OutDir::Complete if a.resume => {
            crate::note!(
                "{}: the export is complete already (it has {MANIFEST_NAME}); nothing to resume",
                a.out.display()
            );
            return Ok(0);
        }
        OutDir::Complete => bail!(
            "{}: already holds a complete snapshot; choose another directory",
            a.out.display()
        ),
        OutDir::Unfinished(run) if a.resume => {
            run.check_same(&options, &a.out)?;
            crate::note!(
                "{}: resuming the export started {}",
                a.out.display(),
                crate::util::iso_utc(run.created_unix_ms)
            );
            *run
        }
        OutDir::Unfinished(_) => bail!(
            "{}: holds an unfinished export; add --resume to continue it, or choose another directory",
            a.out.display()
        ),
        OutDir::Fresh => {
            let shards = plan(&a, &endpoints)?;
            let mut options = options;
            options.sample_rate = match a.sample {
                None => None,
                Some(Asked::Rate(r)) => Some(r),
                Some(Asked::Keys(n)) => Some(sample::rate_for(n, key_count(&endpoints, &shards)?)),
            };
            let run = RunState {
                kvferry: env!("CARGO_PKG_VERSION").into(),
                created_unix_ms: now_ms(),
                options,
                shards,
            };
            run.write(&a.out)?;
            run
        }
    };
    let mut scan = scan;
    if let Some(rate) = run.options.sample_rate {
        scan.sample = Some(sample::Sample::new(sample::threshold(rate)));
        crate::note!(
            "sample: keys whose name hashes below {rate} of the range (about {:.4}% of them), and a key for each type and size class it misses",
            rate * 100.0
        );
    }
    let snap = SnapshotOptions::default();
    let throttle = Arc::new(Throttle::new(a.max_ops_per_sec));
    let watched = Watched::sources(&endpoints, kinds, &throttle);
    let watch = a.watch.start("export", watched, a.max_ops_per_sec)?;
    let stop = AtomicBool::new(false);
    let progress = Progress::start_phase(a.progress, "export", run.shards.iter().map(|s| s.id.clone()).collect());
    let ctx = shard::Ctx {
        dir: &a.out,
        endpoints: &endpoints,
        scan: &scan,
        snap: &snap,
        created_unix_ms: run.created_unix_ms,
        throttle: &throttle,
        stop: &stop,
        checkpoint_every: Duration::from_secs_f64(a.checkpoint_secs.max(0.0)),
        notify: Some(progress.printer()),
    };
    let results = run_shards(&ctx, &run.shards, a.parallel as usize, &progress);
    progress.stop();
    let mut entries = Vec::new();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (plan, r) in run.shards.iter().zip(results) {
        match r {
            Ok((mut e, rep)) => {
                e.binlog_start = plan.binlog_start;
                entries.push(e);
                reports.push(rep);
            }
            Err(e) if e.is::<Cancelled>() || e.is::<Interrupted>() => {}
            Err(e) => errors.push(format!(
                "shard {} ({} db {}): {e:#}",
                plan.id,
                redact(&a.sources[plan.source]),
                plan.db
            )),
        }
    }
    if crate::interrupt::interrupted() && errors.is_empty() {
        let keys: u64 = reports
            .iter()
            .map(|r| r.db_report.keys_by_type.values().sum::<u64>())
            .sum();
        println!(
            "interrupted: {} of {} shards complete ({keys} keys in them); the others stopped at a checkpoint in {}.\nContinue with:\n  {}",
            reports.len(),
            run.shards.len(),
            a.out.display(),
            crate::interrupt::resume_command()
        );
        return Ok(crate::interrupt::EXIT_INTERRUPTED);
    }
    if !errors.is_empty() {
        for e in &errors[1..] {
            crate::note!("error: {e}");
        }
        bail!(
            "{}\nThe export is unfinished (no {MANIFEST_NAME}); fix the cause and run the same command with --resume to continue it.",
            errors[0]
        );
    }
    if let Some(rate) = run.options.sample_rate {
        write_sample_note(&a.out, run.options.sample.as_deref().unwrap_or(""), rate, &reports)?;
    }
    write_manifest(
        &a.out,
        &Manifest::new(run.created_unix_ms, snap.writer_name.clone(), entries),
    )?;
    state::remove(&a.out, &run);
    print_summary(&reports, a.report.is_some())?;
    if let Some(rate) = run.options.sample_rate {
        let unsampled: u64 = reports.iter().map(|r| r.db_report.unsampled).sum();
        println!(
            "a sample: {rate} of the keys by name hash, plus a key for each type and size class it missed; {} left out. Not a backup.",
            count(unsampled, "key")
        );
    }
    watch.print_summary();
    if let Some(path) = &a.report {
        let failed: Vec<_> = reports
            .iter()
            .flat_map(|r| {
                r.db_report
                    .failed
                    .iter()
                    .map(move |p| serde_json::json!({"shard": r.shard, "key": p.key, "reason": p.reason}))
            })
            .collect();
        let text = serde_json::to_vec_pretty(
            &serde_json::json!({ "snapshot": a.out, "shards": reports, "failed_keys": failed, "servers": watch.stats() }),
        )?;
        std::fs::write(path, text).with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    let failed: usize = reports.iter().map(|r| r.db_report.failed.len()).sum();
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The sources' key count, for `--sample N`: DBSIZE of every planned shard.
fn key_count(endpoints: &[Endpoint], shards: &[PlannedShard]) -> anyhow::Result<u64> {
    let throttle = Throttle::new(None);
    let mut total = 0;
    for s in shards {
        let mut link = Link::open(&endpoints[s.source])?;
        if matches!(link.server.kind, crate::server::ServerKind::Pika(..)) {
            bail!(
                "{}: --sample N needs the key count, which Pika does not give exactly (its DBSIZE is a cached count); give a fraction instead, e.g. --sample 0.001",
                link.server.name
            );
        }
        link.select(s.db)?;
        let n: u64 = redis::cmd("DBSIZE")
            .query(&mut link.conn(&throttle))
            .with_context(|| format!("{}: DBSIZE of db {}", link.server.name, s.db))?;
        total += n;
    }
    Ok(total)
}

/// `SAMPLE.json`, beside the manifest: says that the snapshot is a sample, and of what. Not part
/// of the format (F-SNAP-1: other files are ignored by readers); kvferry's inspect and import
/// read it to say so.
fn write_sample_note(dir: &Path, asked: &str, rate: f64, reports: &[ShardReport]) -> anyhow::Result<()> {
    let unsampled: u64 = reports.iter().map(|r| r.db_report.unsampled).sum();
    let v = serde_json::json!({
        "sample": asked,
        "rate": rate,
        "rule": "a key is in the sample when the first 8 bytes of SHA-256(name), big-endian, are below rate x 2^64; plus, per shard, the key of lowest hash of each type and size class the rule missed",
        "keys_left_out": unsampled,
    });
    let path = dir.join(SAMPLE_NAME);
    std::fs::write(&path, serde_json::to_vec_pretty(&v)?).with_context(|| format!("{}: cannot write", path.display()))
}

/// The file that marks a snapshot as a sample.
pub const SAMPLE_NAME: &str = "SAMPLE.json";

/// What a snapshot's `SAMPLE.json` says, if it has one: `(asked, rate)`.
pub fn sample_of(dir: &Path) -> Option<(String, f64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(SAMPLE_NAME)).ok()?).ok()?;
    Some((v["sample"].as_str()?.to_string(), v["rate"].as_f64()?))
}

type ShardResult = anyhow::Result<(crate::format::snapshot::ShardEntry, ShardReport)>;

/// Runs the shards on up to `parallel` threads, in order; after a failure the others stop at
/// their next page (they keep their checkpoints, so --resume continues them).
fn run_shards(ctx: &shard::Ctx, shards: &[PlannedShard], parallel: usize, progress: &Progress) -> Vec<ShardResult> {
    crate::util::run_parallel(parallel, shards.len(), |i| {
        let plan = &shards[i];
        let task = progress.task(i);
        let r = if crate::interrupt::interrupted() {
            Err(Interrupted.into())
        } else if ctx.stop.load(Ordering::Relaxed) {
            Err(Cancelled.into())
        } else {
            shard::run(ctx, plan, &task)
        };
        if let Err(e) = &r {
            task.finish(false);
            if !e.is::<Cancelled>() && !e.is::<Interrupted>() {
                ctx.stop.store(true, Ordering::Relaxed);
                progress.println(&format!("error: shard {}: {e:#}", plan.id));
            }
        }
        r
    })
}

fn print_summary(reports: &[ShardReport], report: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let (mut keys, mut failed) = (0u64, 0usize);
    let mut empty = Vec::new();
    for r in reports {
        let d = &r.db_report;
        let types: Vec<String> = d.keys_by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let total: u64 = d.keys_by_type.values().sum();
        keys += total;
        failed += d.failed.len();
        // Empty databases take one line together, below.
        if total == 0 && d.gone == 0 && d.filtered == 0 && d.failed.is_empty() && d.reconnects == 0 {
            empty.push(format!("{} (db {})", r.shard, r.db));
            continue;
        }
        writeln!(
            out,
            "{} ({} db {}): {} [{}], {} gone before read, {} filtered{}, {} failed, {:.1} s{}",
            r.shard,
            r.source,
            r.db,
            count(total, "key"),
            types.join(", "),
            d.gone,
            d.filtered,
            if d.unsampled > 0 {
                format!(" ({} outside the sample)", d.unsampled)
            } else {
                String::new()
            },
            d.failed.len(),
            r.seconds,
            if r.resumed { " (resumed)" } else { "" }
        )?;
        if d.reconnects > 0 {
            writeln!(
                out,
                "  reconnected {}; scanned again from the start after {} of the source",
                count(d.reconnects, "time"),
                count(d.rescans, "restart")
            )?;
        }
        for p in d.failed.iter().chain(&d.skipped_unknown) {
            writeln!(
                out,
                "  {} {}: {}",
                if d.failed.contains(p) { "FAILED" } else { "skipped" },
                p.key,
                p.reason
            )?;
        }
        for (what, list) in [("multi-type", &d.multi_type), ("Pika HyperLogLog", &d.pika_hll)] {
            crate::cmd::list_keys(&mut out, what, list, report)?;
        }
    }
    crate::cmd::empty_line(&mut out, "empty database", &empty)?;
    crate::progress::set_result(serde_json::json!({
        "keys": keys, "failed": failed, "shards": reports.len()
    }));
    writeln!(
        out,
        "total: {} in {}, {failed} failed",
        count(keys, "key"),
        count(reports.len() as u64, "shard")
    )?;
    Ok(())
}
