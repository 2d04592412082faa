//! `kvferry export`: reads every key of one or more sources into a snapshot, one shard per
//! source × database, and writes the manifest last (F-SNAP-2), so an interrupted export never
//! looks complete.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::format::record::KeyRecord;
use crate::format::snapshot::{write_manifest, Manifest, ShardSink, ShardSpec, SnapshotOptions};
use crate::format::{consts::MANIFEST_NAME, KeyType};
use crate::source::link::Link;
use crate::source::read::ReadOptions;
use crate::source::scan::{export_db, DbReport, ScanOptions};
use crate::source::throttle::Throttle;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source server, redis://[user:pass@]host:port; repeat for several (e.g. every Pika of a
    /// Codis deployment). Each source × database becomes a shard.
    #[arg(long = "source", required = true)]
    pub sources: Vec<String>,
    /// Directory to write the snapshot into (created; must not hold a snapshot already).
    #[arg(long)]
    pub out: PathBuf,
    /// Databases to export: `all` or a list such as `0,3`.
    #[arg(long, default_value = "all")]
    pub db: String,
    /// Only keys matching this glob (SCAN MATCH).
    #[arg(long = "match")]
    pub pattern: Option<String>,
    /// Only these types, e.g. `string,hash`.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Skip keys that start with this prefix; repeatable.
    #[arg(long)]
    pub exclude_prefix: Vec<String>,
    /// Report keys of types kvferry does not know as skipped, instead of failing them.
    #[arg(long)]
    pub skip_unknown_types: bool,
    /// Send at most this many commands per second to the sources (all shards together), so the
    /// export can run beside production traffic.
    #[arg(long)]
    pub max_ops_per_sec: Option<u64>,
    /// Write a JSON report of the run to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Serialize)]
struct ShardReport {
    shard: String,
    source: String,
    server: String,
    db: u32,
    seconds: f64,
    #[serde(flatten)]
    db_report: DbReport,
}

fn parse_dbs(spec: &str, available: &[u32]) -> anyhow::Result<Vec<u32>> {
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

fn prepare_out(out: &PathBuf) -> anyhow::Result<()> {
    if out.join(MANIFEST_NAME).exists() {
        bail!(
            "{}: already holds a complete snapshot; choose another directory",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create the directory", out.display()))?;
    let used = std::fs::read_dir(out)?
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "kvf"));
    if used {
        bail!(
            "{}: holds shard files of an unfinished export; remove them (resume is not supported yet)",
            out.display()
        );
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let types = a
        .types
        .iter()
        .map(|t| {
            KeyType::from_name(t).ok_or_else(|| anyhow!("--type {t}: not one of string, hash, list, set, zset, stream"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = ScanOptions {
        read: ReadOptions::default(),
        count: 1000,
        pattern: a.pattern.clone(),
        types,
        exclude_prefixes: a.exclude_prefix.iter().map(|p| p.as_bytes().to_vec()).collect(),
        skip_unknown_types: a.skip_unknown_types,
    };
    prepare_out(&a.out)?;
    let started = now_ms();
    let snap_opts = SnapshotOptions::default();
    let (mut entries, mut reports) = (Vec::new(), Vec::new());
    let tty = std::io::stderr().is_terminal();
    let mut throttle = Throttle::new(a.max_ops_per_sec);
    for (i, url) in a.sources.iter().enumerate() {
        let mut link = Link::open(url)?;
        let server = link.server.clone();
        eprintln!(
            "{}: {} with {} databases",
            server.name,
            server.software(),
            server.databases.len()
        );
        for db in parse_dbs(&a.db, &server.databases).with_context(|| server.name.clone())? {
            let t = Instant::now();
            let spec = ShardSpec {
                id: format!("src{i}-db{db}"),
                source: server.name.clone(),
                source_server: Some(server.software()),
                db,
            };
            let mut sink = ShardSink::new(&a.out, spec.clone(), snap_opts.clone(), started)?;
            let mut emit = |r: &KeyRecord| sink.push(r).map_err(anyhow::Error::new);
            let mut done = 0u64;
            let mut progress = |n: u64| {
                done += n;
                if tty {
                    eprint!(
                        "\r{} db {db}: {done} keys, {:.0} keys/s   ",
                        server.name,
                        done as f64 / t.elapsed().as_secs_f64().max(1e-3)
                    );
                }
            };
            let report = export_db(&mut link, &mut throttle, db, &opts, &mut emit, &mut progress)
                .with_context(|| format!("{} db {db}", server.name))?;
            if tty {
                eprintln!();
            }
            entries.push(sink.finish()?);
            reports.push(ShardReport {
                shard: spec.id,
                source: server.name.clone(),
                server: server.software(),
                db,
                seconds: t.elapsed().as_secs_f64(),
                db_report: report,
            });
        }
    }
    write_manifest(&a.out, &Manifest::new(started, snap_opts.writer_name.clone(), entries))?;
    print_summary(&reports)?;
    if let Some(path) = &a.report {
        let text = serde_json::to_vec_pretty(&serde_json::json!({ "snapshot": a.out, "shards": reports }))?;
        std::fs::write(path, text).with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    let failed: usize = reports.iter().map(|r| r.db_report.failed.len()).sum();
    Ok(if failed == 0 { 0 } else { 1 })
}

fn print_summary(reports: &[ShardReport]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for r in reports {
        let d = &r.db_report;
        let types: Vec<String> = d.keys_by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let total: u64 = d.keys_by_type.values().sum();
        writeln!(
            out,
            "{} ({} db {}): {total} keys [{}], {} gone before read, {} filtered, {} failed, {:.1}s",
            r.shard,
            r.source,
            r.db,
            types.join(", "),
            d.gone,
            d.filtered,
            d.failed.len(),
            r.seconds
        )?;
        if d.reconnects > 0 {
            writeln!(
                out,
                "  reconnected {} times; scanned again from the start after {} restarts of the source",
                d.reconnects, d.rescans
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
    }
    Ok(())
}
