//! `kvferry import`: writes a snapshot into any Redis-protocol server (Kvrocks first) with plain
//! pipelined commands over parallel connections (issue 4). Before writing anything it checks
//! the whole snapshot, the database mapping and the target's emptiness; while writing it counts
//! every reply and checkpoints the acknowledged blocks, so `--resume` continues a killed import.

mod preflight;
pub(crate) mod shard;
mod state;

pub(crate) use state::RUN_FILE;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::cmd::watch::{WatchArgs, Watched};
use crate::format::check::{self, CheckReport};
use crate::format::reader::ReadMode;
use crate::format::snapshot::Snapshot;
use crate::progress::{Mode, Progress};
use crate::server::throttle::Throttle;
use crate::target::build::Dialect;
use crate::target::dest::{
    check_writable, destinations, dialect_of, open_target, refuse_non_empty, Dest, Holder, Target,
};
pub use crate::target::dest::{MapArgs, MultiType};
use crate::target::dispatch::WriteConf;
use crate::target::lane::Lane;
use crate::target::track::Counts;
use crate::util::{count, key_from_json};
use shard::{Output, ShardOutcome};
use state::{Options, RunState, StateDir};

/// What to do when a key already exists on the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Conflict {
    /// Refuse to start when a target database (or namespace) holds any key.
    Fail,
    /// Delete each key before writing it.
    Replace,
    /// Leave keys that exist alone, and count them.
    Skip,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot directory (the one holding MANIFEST.json).
    pub snapshot: PathBuf,
    /// The server to write into, redis://[user:pass@]host:port or rediss://.
    #[arg(long, required_unless_present = "resp", value_name = "URL")]
    pub target: Option<String>,
    /// Write the commands as RESP to this file (`-`: stdout) instead, e.g. for `redis-cli --pipe`.
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    pub resp: Option<PathBuf>,
    /// Import only this shard (see `kvferry inspect`); repeatable.
    #[arg(long = "shard", value_name = "ID")]
    pub shards: Vec<String>,
    #[command(flatten)]
    pub map: MapArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    /// Shards imported at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Send at most this many commands per second (all connections together).
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_ops_per_sec: Option<u64>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Continue an interrupted import from its checkpoints; give the same options.
    #[arg(long)]
    pub resume: bool,
    /// Where to keep checkpoints (default: under $XDG_STATE_HOME/kvferry, or
    /// ~/.local/state/kvferry, named after the target and the snapshot; never in the snapshot).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Before writing, record in this new directory what the import changes (the keys it
    /// creates, the values of those it replaces), so that `kvferry undo DIR` can put the
    /// target back as it was.
    #[arg(long, value_name = "DIR", conflicts_with = "resp")]
    pub undo: Option<PathBuf>,
    /// Check the snapshot, connect, check the mapping and conflicts, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Import around corrupt blocks instead of refusing, and list what was lost.
    #[arg(long)]
    pub skip_corrupt_blocks: bool,
    /// Skip the check of every checksum before writing (when `kvferry check` just passed).
    /// Damage is then found while writing, and the import stops there.
    #[arg(long)]
    pub no_check: bool,
    /// How to show progress on stderr (see `kvferry export --help`).
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    /// Write a JSON report of the run to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub connect: crate::server::endpoint::ConnectArgs,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 5.0, hide = true)]
    pub checkpoint_secs: f64,
}

/// How to write into a target (shared by import and migrate).
#[derive(clap::Args, Debug, Clone)]
pub struct WriteArgs {
    /// Keys that exist on the target: `fail` refuses to start unless every target database is
    /// empty (a first migration), `replace` overwrites them, `skip` leaves them and counts them.
    #[arg(long, value_enum, default_value = "fail", value_name = "POLICY")]
    pub conflict: Conflict,
    /// Keys the source held under several types (Pika <= 3.5): `fail` writes none of them and
    /// lists them, `first` writes the first type, `suffix` writes the others as KEY:TYPE.
    #[arg(long, value_enum, default_value = "fail", value_name = "POLICY")]
    pub multi_type: MultiType,
    /// Connections per shard to the target (per master on a cluster); a key always goes through
    /// the same one, in order. Each keeps two batches in flight. Two keep a single-threaded
    /// server (Redis) busy; a multi-threaded one (Kvrocks) serves each connection on one worker
    /// thread, so more pay off where it has cores to spare.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// Commands per pipelined batch on a connection (batches are also cut at 4 MiB).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    pub pipeline: u32,
    /// Stop at the first key the target refuses (the default goes on and lists them all).
    #[arg(long)]
    pub fail_fast: bool,
}

/// The run was stopped (another shard failed, or --fail-fast): not an error of its own.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Cancelled {}

/// `--conflict fail`: one key of the destination, if it holds any (under its prefix).
/// A key that a resumed import's checkpoint says was written and that the target no longer
/// holds, if any: up to 32 keys from the start of the shard that the checkpoint covers (not
/// expiring within a minute, not multi-type, not failed), asked with EXISTS (issue 11: a
/// resume into an emptied target said "complete"). Not for clusters, whose keys live on
/// several nodes.
fn lost_key(snap: &Snapshot, si: usize, d: &Dest, st: &state::ShardState) -> anyhow::Result<Option<Vec<u8>>> {
    use crate::format::consts::FLAG_MULTI_TYPE;
    use crate::format::record::Record;
    let part = snap.open_part(si, 0, ReadMode::Read)?;
    if part.block_count() == 0 {
        return Ok(None);
    }
    let block = part.read_block(0)?;
    let failed: HashSet<Vec<u8>> = st
        .counts
        .failed_keys
        .iter()
        .filter_map(|p| key_from_json(&p.key))
        .collect();
    let soon = crate::util::now_ms() + 60_000;
    let mut names = Vec::new();
    for (n, r) in block.records().enumerate() {
        let covered = st.done
            || st.resume
                > crate::target::track::Pos {
                    part: 0,
                    block: 0,
                    record: n as u32,
                };
        let Record::Key(k) = r.map_err(|e| anyhow!("{}: {e}", part.path().display()))? else {
            continue;
        };
        if !covered || names.len() == 32 {
            break;
        }
        let keep = k.part == 0
            && k.flags & FLAG_MULTI_TYPE == 0
            && k.expire_at_ms.is_none_or(|t| t > soon)
            && !failed.contains(k.key);
        if keep {
            names.push([d.prefix.as_slice(), k.key].concat());
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let mut lane = Lane::open(&d.lane)?;
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.cmd("EXISTS").arg(n);
    }
    let there: Vec<i64> = pipe
        .query(lane.conn())
        .with_context(|| format!("{}: EXISTS of keys the checkpoint covers", d.describe))?;
    Ok(names.into_iter().zip(there).find(|(_, n)| *n == 0).map(|(k, _)| k))
}

/// The check before writing (issue 4: refuse before writing anything when the manifest or a
/// file is inconsistent, naming the file and block). Every file of the selected shards must open
/// and match the manifest (size, header identity, trailer counts) and its CRC-32 must cover every
/// byte before the trailer: a damaged or truncated file is found at the speed of reading it. A
/// file that fails gets the full check (every block decoded), which names the damaged blocks.
/// Files that hold keys the source had under several types (their trailer counts them from
/// format 1.1; in 1.0 files, those of Pika before 4.0 or of an unknown source) are decoded in
/// full too, to name those keys before writing. The SHA-256 of the manifest is left
/// to `kvferry check`: the CRCs already catch damage, at a fraction of the cost.
fn precheck(snap: &Snapshot, shards: &[usize]) -> CheckReport {
    let jobs: Vec<(usize, usize)> = shards
        .iter()
        .flat_map(|&si| (0..snap.manifest.shards[si].parts.len()).map(move |pi| (si, pi)))
        .collect();
    crate::note!(
        "checking {} of {} before writing...",
        count(jobs.len() as u64, "file"),
        snap.dir.display()
    );
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let counted = snap.manifest.version != "1.0";
    let next = std::sync::atomic::AtomicUsize::new(0);
    let reports: Vec<Mutex<Option<check::FileReport>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|sc| {
        for _ in 0..threads.min(jobs.len()) {
            sc.spawn(|| loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(si, pi)) = jobs.get(j) else { return };
                let shard = &snap.manifest.shards[si];
                let part = &shard.parts[pi];
                let path = snap.part_path(part);
                let quick = snap.open_part(si, pi, ReadMode::Read).ok().filter(|r| {
                    // From format 1.1 the trailer counts them; a 1.0 file does not, and then its
                    // source decides.
                    let may_multi = if counted {
                        r.trailer().multi_type_keys > 0
                    } else {
                        r.header()
                            .source_server
                            .as_deref()
                            .is_none_or(|s| s.starts_with("pika 2") || s.starts_with("pika 3"))
                    };
                    !may_multi && r.file_crc().is_ok_and(|c| c == r.trailer().file_crc32)
                });
                let mut f = match quick {
                    Some(r) => check::FileReport {
                        file: path.clone(),
                        blocks: r.block_count() as u64,
                        records: r.trailer().records,
                        bytes: r.len(),
                        ..Default::default()
                    },
                    None => {
                        let mut f = check::check_file(&path, Some(&part.sha256), 1, &mut |_| {});
                        if let Err(e @ crate::format::error::SnapshotError::Mismatch { .. }) =
                            snap.open_part(si, pi, ReadMode::Read)
                        {
                            f.problems.insert(0, e.to_string());
                        }
                        f
                    }
                };
                f.shard = Some(shard.id.clone());
                f.part = Some(pi);
                *reports[j].lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
            });
        }
    });
    CheckReport {
        snapshot: snap.dir.clone(),
        snapshot_problems: Vec::new(),
        files: reports
            .into_iter()
            .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect(),
    }
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    crate::interrupt::stops_cleanly();
    crate::util::check_report_path(a.report.as_deref())?;
    let snap = Snapshot::open(&a.snapshot)?; // its errors name the path
    if let Some((asked, rate)) = crate::cmd::export::sample_of(&a.snapshot) {
        crate::note!(
            "{}: a sample (--sample {asked}: {rate} of the source's keys), not a whole export",
            a.snapshot.display()
        );
    }
    let shards = snap.select(&a.shards)?;
    // Empty shards (an export writes one per database, SERVERS.md's 16 Redis databases
    // included) have nothing to write and need no mapping.
    let empty = shards.iter().filter(|&&i| snap.manifest.shards[i].keys == 0).count();
    let shards: Vec<usize> = shards
        .into_iter()
        .filter(|&i| snap.manifest.shards[i].keys > 0)
        .collect();
    if empty > 0 {
        crate::note!("{empty} empty shards: nothing to import from them");
    }
    // The target first: an unreachable one is found before the snapshot is read through.
    let target = match (&a.resp, &a.target) {
        (None, Some(url)) => Some(open_target(&a.connect, url, &a.map, "target")?),
        _ => None,
    };
    if let (true, Some(t)) = (a.dry_run, &target) {
        return preflight::run(&a, &snap, &shards, t);
    }
    // Every argument is checked before the slow work, the checksum pass over the whole snapshot
    // (issue 12: a typo in --db-map was found only after it): the mapping, and the target's
    // writability and dialect.
    let checked = match &target {
        Some(t) => {
            let dests = destinations(
                &a.map,
                Holder::Snapshot,
                a.write.conflict == Conflict::Skip,
                &snap.dbs(&shards),
                Some((&t.probe, &t.server)),
                t.slots.is_some(),
            )?;
            check_writable(&t.probe, &t.server.name, a.dry_run)?;
            let dialect = dialect_of(&t.server, &t.probe, a.dry_run)?;
            Some((dests, dialect))
        }
        None => {
            destinations(&a.map, Holder::Snapshot, false, &snap.dbs(&shards), None, false)?;
            None
        }
    };
    let mut lost_files = Vec::new();
    if !a.no_check {
        let report = precheck(&snap, &shards);
        let problems: Vec<&String> = report
            .snapshot_problems
            .iter()
            .chain(report.files.iter().flat_map(|f| &f.problems))
            .collect();
        if !problems.is_empty() {
            if !a.skip_corrupt_blocks || !report.snapshot_problems.is_empty() {
                let shown: Vec<String> = problems.iter().take(10).map(|p| format!("  {p}")).collect();
                bail!(
                    "the snapshot is damaged; nothing was written:\n{}{}\nCopy the damaged files again (kvferry check lists them), or add --skip-corrupt-blocks to import the rest and list what is lost.",
                    shown.join("\n"),
                    if problems.len() > 10 { format!("\n  ... and {} more", problems.len() - 10) } else { String::new() }
                );
            }
            for f in report.files.iter().filter(|f| !f.ok()) {
                lost_files.push(format!(
                    "{}: blocks {:?} are damaged and will be skipped",
                    f.file.display(),
                    f.bad_blocks
                ));
                crate::note!(
                    "warning: {}: damaged blocks {:?} will be skipped (--skip-corrupt-blocks)",
                    f.file.display(),
                    f.bad_blocks
                );
            }
        }
        let multi: u64 = report.files.iter().map(|f| f.multi_type_keys).sum();
        if multi > 0 && a.write.multi_type == MultiType::Fail {
            let examples: Vec<&String> = report
                .files
                .iter()
                .flat_map(|f| &f.multi_type_examples)
                .take(10)
                .collect();
            bail!(
                "the snapshot holds {multi} occurrences of keys that the source (Pika <= 3.5) stored under several types, e.g. {}; Kvrocks and Redis hold one type per key. Choose: --multi-type first (write the first type, list the others) or --multi-type suffix (write the others as KEY:TYPE). Nothing was written.",
                examples.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Some(path) = &a.resp {
        return run_resp(&a, &snap, &shards, path);
    }
    let Target { server, slots, probe } = target.expect("BUG: clap requires --target without --resp");
    let (dests, dialect) = checked.expect("BUG: checked above, with the target");
    let state_dir = StateDir::new(match &a.state {
        Some(d) => d.clone(),
        None => default_state(&snap, &server.name)?,
    });
    let options = Options {
        target: server.name.clone(),
        shards: shards.iter().map(|&i| snap.manifest.shards[i].id.clone()).collect(),
        destinations: dests.iter().map(|d| d.describe.clone()).collect(),
        conflict: format!("{:?}", a.write.conflict).to_lowercase(),
        multi_type: format!("{:?}", a.write.multi_type).to_lowercase(),
        skip_corrupt_blocks: a.skip_corrupt_blocks,
    };
    let previous = state_dir.read_run()?;
    let mut shard_states = BTreeMap::new();
    let resuming = match (&previous, a.resume) {
        (Some(run), true) => {
            run.check_same(&options, snap.manifest.created_unix_ms, &state_dir.dir)?;
            for &i in &shards {
                let id = &snap.manifest.shards[i].id;
                if let Some(s) = state_dir.load_shard(id)? {
                    shard_states.insert(i, s);
                }
            }
            true
        }
        (Some(_), false) if !a.dry_run => {
            let unfinished = shards.iter().any(|&i| {
                !state_dir
                    .load_shard(&snap.manifest.shards[i].id)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.done)
            });
            if unfinished {
                bail!(
                    "{}: an unfinished import of this snapshot into {} is recorded there; add --resume to continue it, or remove the directory to start over",
                    state_dir.dir.display(),
                    server.name
                );
            }
            false
        }
        (None, true) => {
            crate::note!(
                "{}: no checkpoint: starting the import from the beginning",
                state_dir.dir.display()
            );
            false
        }
        _ => false,
    };
    if resuming && slots.is_none() {
        for (&i, d) in shards.iter().zip(&dests) {
            if let Some(k) = shard_states
                .get(&i)
                .map(|st| lost_key(&snap, i, d, st))
                .transpose()?
                .flatten()
            {
                bail!(
                    "{}: the checkpoint says keys of shard {} were written, but the target no longer holds {:?}: it was emptied, or restarted without saving what it had acknowledged. The checkpoint cannot be trusted: run the same command without --resume (into an empty target), or with --conflict replace. Nothing was written.",
                    d.describe,
                    snap.manifest.shards[i].id,
                    crate::format::record::Lossy(&k)
                );
            }
        }
    }
    let whole = |s: &state::ShardState| s.done && s.counts.failed.values().sum::<u64>() == 0;
    if shards.iter().all(|i| shard_states.get(i).is_some_and(whole)) && resuming {
        crate::note!("the import into {} is complete already; nothing to resume", server.name);
        return Ok(0);
    }
    if a.write.conflict == Conflict::Fail && !resuming {
        refuse_non_empty(&dests, slots.as_ref())?;
    }
    if a.dry_run {
        for (&i, d) in shards.iter().zip(&dests) {
            let e = &snap.manifest.shards[i];
            println!("{} ({} keys, db {}) -> {}", e.id, e.keys, e.db, d.describe);
        }
        println!("dry run: the snapshot is whole, the target answers, the mapping and conflict rules hold; nothing was written");
        return Ok(0);
    }
    if let Some(dir) = &a.undo {
        crate::cmd::undo::record(dir, &snap, &shards, &dests, &server, slots.is_some(), resuming)?;
    }
    std::fs::create_dir_all(&state_dir.dir).with_context(|| {
        format!(
            "{}: cannot create the import state directory; give a writable one with --state DIR",
            state_dir.dir.display()
        )
    })?;
    let _lock = crate::util::DirLock::take(&state_dir.dir)?;
    if !resuming {
        state_dir.start(&RunState {
            kvferry: env!("CARGO_PKG_VERSION").into(),
            snapshot_created_unix_ms: snap.manifest.created_unix_ms,
            started_unix_ms: crate::util::now_ms(),
            options,
        })?;
    }
    let throttle = Arc::new(Throttle::new(a.max_ops_per_sec));
    let watched = vec![Watched {
        role: "target",
        endpoint: &probe,
        kind: &server.kind,
        throttle: throttle.clone(),
    }];
    let watch = a.watch.start("import", watched, a.max_ops_per_sec)?;
    let stop = AtomicBool::new(false);
    let ctx = shard::Ctx {
        snap: &snap,
        write: WriteConf {
            dialect,
            del_first: a.write.conflict != Conflict::Skip,
            multi: a.write.multi_type,
            pipeline: a.write.pipeline as usize,
            batch_bytes: 4 << 20,
        },
        connections: a.write.connections as usize,
        skip_corrupt: a.skip_corrupt_blocks,
        throttle: &throttle,
        stop: &stop,
        fail_fast: a.write.fail_fast,
        checkpoint_every: Duration::from_secs_f64(a.checkpoint_secs.max(0.05)),
        state: Some(&state_dir),
        decode_threads: 2,
    };
    let names: Vec<String> = shards.iter().map(|&i| snap.manifest.shards[i].id.clone()).collect();
    let progress = Progress::start_phase(a.progress, "import", names);
    // The manifest counts every shard's keys: the total and its ETA hold from the start.
    for (n, &i) in shards.iter().enumerate() {
        progress.task(n).expect(snap.manifest.shards[i].keys);
    }
    // Shards run `--parallel` at a time; after an error the others stop at their next
    // checkpoint (they keep it, so --resume continues them).
    let results = crate::util::run_parallel(a.parallel as usize, shards.len(), |n| {
        let (i, d) = (shards[n], &dests[n]);
        let task = progress.task(n);
        if stop.load(Ordering::Relaxed) {
            task.finish(false);
            return Err(shard::Failed::nothing(Cancelled.into()));
        }
        let mut from = shard_states.get(&i).cloned();
        let mut only = None;
        if let Some(s) = from.as_ref().filter(|s| s.done) {
            let failed: u64 = s.counts.failed.values().sum();
            if failed == 0 {
                task.start(Some(snap.manifest.shards[i].keys));
                task.add(s.counts.keys(), 0);
                task.finish(true);
                return Ok(done_outcome(s));
            }
            // A resume retries the keys that failed (issue 11: it used to say "complete").
            let id = &snap.manifest.shards[i].id;
            let names: HashSet<Vec<u8>> = s
                .counts
                .failed_keys
                .iter()
                .filter_map(|p| key_from_json(&p.key))
                .collect();
            if names.len() as u64 == failed {
                progress.println(&format!("{id}: retrying the {} that failed", count(failed, "key")));
                let mut counts = s.counts.clone();
                (counts.failed, counts.failed_keys) = Default::default();
                let chosen = s.chosen().map_err(shard::Failed::nothing)?;
                from = Some(state::ShardState::new(false, Default::default(), counts, &chosen));
                only = Some(names);
            } else {
                progress.println(&format!(
                    "{id}: {} failed, more than were named: importing the whole shard again",
                    count(failed, "key")
                ));
                from = None;
            }
        }
        let (lanes, route) = d.lanes(slots.as_ref(), ctx.connections);
        let r = shard::run(
            &ctx,
            i,
            d,
            Output::Lanes(lanes, route),
            from.as_ref(),
            only.as_ref(),
            &task,
        );
        task.finish(r.is_ok());
        if r.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        r
    });
    // The outcomes of the shards that ran, in order, and the first error that was not a
    // cancellation by another shard's.
    let mut outcomes = Vec::new();
    let mut error = None;
    let mut complete = 0;
    for (n, r) in results.into_iter().enumerate() {
        let (i, d) = (shards[n], &dests[n]);
        match r {
            Ok(o) => {
                complete += 1;
                outcomes.push((i, d, o));
            }
            Err(f) if f.error.is::<Cancelled>() => {
                if f.outcome.counts.keys() > 0 {
                    outcomes.push((i, d, *f.outcome));
                }
            }
            Err(f) => {
                if error.is_none() {
                    error = Some(
                        f.error
                            .context(format!("shard {} -> {}", snap.manifest.shards[i].id, d.describe)),
                    );
                }
                outcomes.push((i, d, *f.outcome));
            }
        }
    }
    progress.stop();
    if crate::interrupt::interrupted() {
        let keys: u64 = outcomes.iter().map(|(_, _, o)| o.counts.keys()).sum();
        println!(
            "interrupted: {complete} of {} shards complete ({} written so far); the others stopped at a checkpoint in {}.\nContinue with:\n  {}",
            shards.len(),
            count(keys, "key"),
            state_dir.dir.display(),
            crate::interrupt::resume_command()
        );
        return Ok(crate::interrupt::EXIT_INTERRUPTED);
    }
    let failed = summary(&snap, &outcomes, &lost_files, a.report.is_some())?;
    watch.print_summary();
    if let Some(path) = &a.report {
        report(path, &snap, &server.name, &outcomes, error.as_ref(), &watch.stats())?;
    }
    if let Some(e) = error {
        return Err(e.context(format!(
            "the import is unfinished; its checkpoint is in {}: fix the cause and run the same command with --resume",
            state_dir.dir.display()
        )));
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Where an import keeps its checkpoints without --state: under `$XDG_STATE_HOME` (or
/// `~/.local/state`), named after the target and the snapshot (its directory's name and
/// creation time), never inside the snapshot, which is a backup (issue 12). An import started
/// by an earlier kvferry kept them in the snapshot, in `.import-TARGET`: that one is resumed
/// there.
fn default_state(snap: &Snapshot, target: &str) -> anyhow::Result<PathBuf> {
    let name = snap
        .dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "snapshot".into());
    let home = crate::util::state_home(&format!(
        "import-{}-{}-{}",
        crate::util::safe_name(target),
        crate::util::safe_name(&name),
        snap.manifest.created_unix_ms
    ))?;
    let old = snap.dir.join(format!(".import-{}", crate::util::safe_name(target)));
    if !home.exists() && old.join("import.json").exists() {
        crate::note!(
            "{}: the checkpoints of an earlier kvferry, used from there",
            old.display()
        );
        return Ok(old);
    }
    Ok(home)
}

fn done_outcome(s: &state::ShardState) -> ShardOutcome {
    ShardOutcome {
        counts: s.counts.clone(),
        seconds: 0.0,
        resumed: true,
        reconnects: 0,
        restarts: 0,
        redirects: 0,
        lost: Vec::new(),
    }
}

/// `--resp FILE`: the same commands, written to a file for `redis-cli --pipe`.
fn run_resp(a: &Args, snap: &Snapshot, shards: &[usize], path: &std::path::Path) -> anyhow::Result<i32> {
    let dests = destinations(&a.map, Holder::Snapshot, false, &snap.dbs(shards), None, false)?;
    let w: Box<dyn Write + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()))
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?,
        ))
    };
    let w = Mutex::new(w);
    let throttle = Throttle::new(None);
    let stop = AtomicBool::new(false);
    let ctx = shard::Ctx {
        snap,
        write: WriteConf {
            dialect: Dialect::REDIS,
            del_first: true,
            multi: a.write.multi_type,
            pipeline: 1000,
            batch_bytes: 4 << 20,
        },
        connections: 1,
        skip_corrupt: a.skip_corrupt_blocks,
        throttle: &throttle,
        stop: &stop,
        fail_fast: false,
        checkpoint_every: Duration::from_secs(3600),
        state: None,
        decode_threads: 2,
    };
    let progress = Progress::start(
        if path.as_os_str() == "-" {
            Mode::None
        } else {
            a.progress
        },
        shards.iter().map(|&i| snap.manifest.shards[i].id.clone()).collect(),
    );
    let mut outcomes = Vec::new();
    for (n, (&i, d)) in shards.iter().zip(&dests).enumerate() {
        if let Some(db) = d.lane.db {
            let mut sel = Vec::new();
            crate::target::resp::pack(&mut sel, &[b"SELECT", db.to_string().as_bytes()]);
            w.lock().unwrap_or_else(|e| e.into_inner()).write_all(&sel)?;
        }
        let task = progress.task(n);
        let o = shard::run(&ctx, i, d, Output::Resp(&w), None, None, &task)?;
        task.finish(true);
        outcomes.push((i, d, o));
    }
    progress.stop();
    w.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .flush()
        .context("--resp: cannot write")?;
    if path.as_os_str() != "-" {
        summary(snap, &outcomes, &[], a.report.is_some())?;
    }
    Ok(0)
}

fn types(m: &BTreeMap<String, u64>) -> String {
    let total: u64 = m.values().sum();
    if m.is_empty() {
        return "0".into();
    }
    let parts: Vec<String> = m.iter().map(|(t, n)| format!("{t} {n}")).collect();
    format!("{total} [{}]", parts.join(", "))
}

/// Prints the summary; returns the number of failed keys (and lost blocks).
fn summary(
    snap: &Snapshot,
    outcomes: &[(usize, &Dest, ShardOutcome)],
    lost_files: &[String],
    report: bool,
) -> anyhow::Result<u64> {
    let mut out = std::io::stdout().lock();
    let mut total = Counts::default();
    let (mut bad, mut lost) = (0u64, 0u64);
    let mut empty = Vec::new();
    for (i, d, o) in outcomes {
        let c = &o.counts;
        let e = &snap.manifest.shards[*i];
        // Empty shards take one line together, below.
        if e.keys == 0 && c.keys() == 0 && o.lost.is_empty() && o.reconnects == 0 {
            empty.push(e.id.as_str());
            continue;
        }
        let rate = if o.seconds > 0.0 {
            c.bytes as f64 / o.seconds
        } else {
            0.0
        };
        writeln!(
            out,
            "{} -> {}: written {}, expired {}, skipped {}, failed {}, {:.1} s, {}/s{}",
            e.id,
            d.describe,
            types(&c.written),
            types(&c.expired),
            types(&c.skipped),
            types(&c.failed),
            o.seconds,
            crate::util::human_bytes(rate as u64),
            if o.resumed { " (resumed)" } else { "" }
        )?;
        if o.redirects > 0 {
            writeln!(
                out,
                "  {} followed a cluster redirect (MOVED, ASK, TRYAGAIN)",
                count(o.redirects, "command")
            )?;
        }
        if o.reconnects > 0 {
            writeln!(
                out,
                "  reconnected {} and resent what was unacknowledged; the target restarted {}{}",
                count(o.reconnects, "time"),
                count(o.restarts, "time"),
                if o.restarts > 0 {
                    ": if it did not save before restarting, acknowledged writes may be lost; run kvferry verify"
                } else {
                    ""
                }
            )?;
        }
        for (what, list) in [
            ("FAILED", &c.failed_keys),
            ("multi-type", &c.multi_type),
            ("Pika HyperLogLog", &c.pika_hll),
            ("skipped", &c.skipped_keys),
        ] {
            crate::cmd::list_keys(&mut out, what, list, report)?;
        }
        for l in &o.lost {
            writeln!(out, "  LOST {l}")?;
        }
        let gone = lost_keys(e.keys, o);
        if gone > 0 {
            writeln!(
                out,
                "  LOST {} with those blocks (the manifest counts {} in this shard): their names were in the damaged blocks only. Copy the file again and import it with --conflict replace, or export them again from the source",
                count(gone, "key"),
                e.keys
            )?;
        }
        lost += gone;
        bad += o.lost.len() as u64;
        total.merge(c);
    }
    crate::cmd::empty_line(&mut out, "empty shard", &empty)?;
    for l in lost_files {
        writeln!(out, "  {l}")?;
    }
    let failed = total.failed_total();
    crate::progress::set_result(serde_json::json!({
        "written": total.written.values().sum::<u64>(),
        "expired": total.expired.values().sum::<u64>(),
        "skipped": total.skipped.values().sum::<u64>(),
        "failed": failed,
        "lost": lost,
    }));
    writeln!(
        out,
        "total: written {}, expired {}, skipped {}, failed {failed}{}",
        types(&total.written),
        types(&total.expired),
        types(&total.skipped),
        if lost > 0 {
            format!(", lost {lost} (in damaged blocks)")
        } else {
            String::new()
        }
    )?;
    Ok(failed + lost + bad)
}

/// Keys of a shard (`listed`, the manifest's count) that were in its damaged blocks: neither
/// written, expired, skipped nor failed. Their names were only in those blocks.
fn lost_keys(listed: u64, o: &ShardOutcome) -> u64 {
    if o.lost.is_empty() {
        return 0;
    }
    let c = &o.counts;
    let seen: u64 = [&c.written, &c.expired, &c.skipped, &c.failed]
        .iter()
        .flat_map(|m| m.values())
        .sum();
    listed.saturating_sub(seen)
}

fn report(
    path: &std::path::Path,
    snap: &Snapshot,
    target: &str,
    outcomes: &[(usize, &Dest, ShardOutcome)],
    error: Option<&anyhow::Error>,
    servers: &[crate::server::health::Stats],
) -> anyhow::Result<()> {
    let shards: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|(i, d, o)| {
            serde_json::json!({
                "shard": snap.manifest.shards[*i].id,
                "destination": d.describe,
                "written": o.counts.written,
                "expired": o.counts.expired,
                "skipped": o.counts.skipped,
                "failed": o.counts.failed,
                "bytes": o.counts.bytes,
                "seconds": o.seconds,
                "resumed": o.resumed,
                "reconnects": o.reconnects,
                "target_restarts": o.restarts,
                "redirects": o.redirects,
                "failed_keys": o.counts.failed_keys,
                "skipped_keys": o.counts.skipped_keys,
                "multi_type": o.counts.multi_type,
                "pika_hll": o.counts.pika_hll,
                "lost": o.lost,
                "lost_keys": lost_keys(snap.manifest.shards[*i].keys, o),
                "unlisted": o.counts.unlisted,
            })
        })
        .collect();
    let v = serde_json::json!({
        "snapshot": snap.dir,
        "target": target,
        "complete": error.is_none(),
        "error": error.map(|e| format!("{e:#}")),
        "shards": shards,
        "servers": servers,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("{}: cannot write the report", path.display()))
}
