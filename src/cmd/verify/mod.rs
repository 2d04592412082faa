//! `kvferry verify`: proves that a server holds what a snapshot holds (issue 5). Every key of the
//! snapshot (or a sample) is read back by type, part by part, pipelined over parallel
//! connections with the same database, namespace and cluster routing as import; each difference
//! is named in a JSON-lines report. With `--extra` the server is also listed for keys the
//! snapshot does not have. With `--source` it measures how far a live source drifted since the
//! export. Exit codes: 0 identical, 1 differences, 2 could not verify.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use crate::cmd::watch::{WatchArgs, Watched};
use crate::format::consts::FLAG_MULTI_TYPE;
use crate::format::reader::ReadMode;
use crate::format::record::{KeyRecord, Record};
use crate::format::snapshot::Snapshot;
use crate::format::KeyType;
use crate::interrupt::Interrupted;
use crate::progress::{Mode, Progress, Task};
use crate::server::conn::ServerKind;
use crate::server::endpoint::Endpoint;
use crate::server::link::Link;
use crate::server::throttle::Throttle;
use crate::source::list::Lister;
use crate::source::pika::RangeLister;
use crate::source::{DbReport, Out, Position, ScanOptions};
use crate::target::dest::{
    destinations, glob_escape, open_target, ClusterRoute, Dest, Holder, MapArgs, MultiType, Target,
};
use crate::target::lane::{Lane, LaneConf};
use crate::target::probe::{self, Caps, Probe, ProbeState, Verdict};
use crate::target::reply::Replies;
use crate::util::{count, key_json, parse_duration_ms};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot directory (the one holding MANIFEST.json).
    pub snapshot: PathBuf,
    /// The server an import wrote the snapshot to.
    #[arg(long, required_unless_present = "source", value_name = "URL")]
    pub target: Option<String>,
    /// The server the snapshot was exported from: alone, how far it has drifted since (databases
    /// map to themselves); with --target, the target is compared with the source as it is now,
    /// every key the source holds in the snapshot's databases (after `follow`, before a cut-over).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Verify only this shard; repeatable.
    #[arg(long = "shard", value_name = "ID")]
    pub shards: Vec<String>,
    #[command(flatten)]
    pub map: MapArgs,
    /// What the import did with keys the source held under several types (give the import's
    /// --multi-type): `fail` (none written: they are not compared, only counted), `first` (the
    /// first type under the key, the others not written) or `suffix` (the others under KEY:TYPE).
    #[arg(long, value_enum, default_value = "fail", value_name = "POLICY")]
    pub multi_type: MultiType,
    /// Verify a random sample of this fraction of the keys (0 to 1); the same keys each time.
    #[arg(long, default_value_t = 1.0, value_name = "FRACTION")]
    pub sample: f64,
    /// How far an expiry may be off, e.g. `5s`, `500ms`, `2m`.
    #[arg(long, default_value = "5s", value_parser = parse_duration_ms, value_name = "DURATION")]
    pub ttl_tolerance: u64,
    /// Shards verified at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Connections per shard (per master on a cluster) that read the target.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,
    /// Also list the server's keys and report those the snapshot does not have (keeps 16 bytes
    /// per snapshot key in memory).
    #[arg(long)]
    pub extra: bool,
    /// Send at most this many commands per second.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_ops_per_sec: Option<u64>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Write every difference as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    #[command(flatten)]
    pub connect: crate::server::endpoint::ConnectArgs,
}

/// How keys are compared (from verify's options, or migrate's).
pub(crate) struct Check {
    pub sample: f64,
    pub multi_type: MultiType,
    pub ttl_tolerance: u64,
    pub extra: bool,
    /// Shards compared at once.
    pub parallel: usize,
    /// Connections per shard (per master on a cluster).
    pub connections: usize,
}

/// Hands every record of a shard, in order, to the sink it is given.
pub(crate) type Feed<'f> =
    Box<dyn FnOnce(&mut (dyn FnMut(&KeyRecord) -> anyhow::Result<()> + Send)) -> anyhow::Result<()> + Send + 'f>;

/// An [`Out`] that hands records to the verify's sink.
pub(crate) struct SourceFeed<'s> {
    sink: &'s mut (dyn FnMut(&crate::format::record::KeyRecord) -> anyhow::Result<()> + Send),
}

impl Out for SourceFeed<'_> {
    fn record(&mut self, r: &crate::format::record::KeyRecord) -> anyhow::Result<()> {
        (self.sink)(r)
    }
    fn page(&mut self, _: u64, _: &Position, _: &DbReport, _: bool) -> anyhow::Result<()> {
        if crate::interrupt::interrupted() {
            return Err(Interrupted.into());
        }
        Ok(())
    }
    fn checkpoint_due(&self) -> bool {
        false
    }
    fn start_over(&mut self) -> anyhow::Result<()> {
        bail!("the source restarted during the verify: run the same command with --resume (nothing is written again) to verify again")
    }
}

/// The records of database `db` of the source at `ep`, read now (as export reads them).
pub(crate) fn source_feed<'f>(ep: &'f Endpoint, db: u32, scan: &'f ScanOptions, throttle: &'f Throttle) -> Feed<'f> {
    Box::new(move |sink| {
        let mut link = Link::open(ep)?;
        crate::source::export_db(&mut link, throttle, db, scan, None, &mut SourceFeed { sink })?;
        Ok(())
    })
}

/// A shard to verify: its records, how many keys it holds (for the progress), and where they
/// went.
pub(crate) struct Shard<'f> {
    pub id: String,
    pub keys: Option<u64>,
    pub dest: Dest,
    pub feed: Feed<'f>,
}

/// The outcome kinds of the summary, in the report's words.
const KINDS: [&str; 7] = [
    "ok",
    "missing",
    "wrong_type",
    "wrong_value",
    "wrong_ttl",
    "expired",
    "extra",
];

/// Counts per kind and type, and the report.
struct Results {
    counts: BTreeMap<(&'static str, String), u64>,
    report: Option<Box<dyn Write + Send>>,
    /// The first differences, for the summary.
    shown: Vec<String>,
    differences: u64,
}

impl Results {
    fn add(&mut self, shard: &str, key: &[u8], ty: &str, kind: &'static str, detail: &str) -> anyhow::Result<()> {
        *self.counts.entry((kind, ty.to_string())).or_insert(0) += 1;
        if kind == "ok" || kind == "expired" {
            return Ok(());
        }
        self.differences += 1;
        let line = json!({"shard": shard, "key": key_json(key), "type": ty, "problem": kind, "detail": detail});
        if self.shown.len() < 20 {
            self.shown
                .push(format!("  {kind} {} ({ty}, {shard}): {detail}", key_json(key)));
        }
        if let Some(w) = &mut self.report {
            writeln!(w, "{line}").context("--report: cannot write")?;
        }
        Ok(())
    }
}

/// One key being verified.
struct KeyCheck {
    name: Vec<u8>,
    ty: KeyType,
    /// Expected to be gone (its expiry passed): absence is fine.
    may_be_gone: bool,
    /// The findings so far: (priority, kind, detail).
    found: Mutex<Option<(u8, &'static str, String)>>,
}

impl KeyCheck {
    fn note(&self, v: Verdict) {
        let (p, kind, detail) = match v {
            Verdict::Ok => return,
            Verdict::Missing => (4, "missing", "not on the server".to_string()),
            Verdict::WrongType(d) => (3, "wrong_type", d),
            Verdict::WrongValue(d) => (2, "wrong_value", d),
            Verdict::WrongTtl(d) => (1, "wrong_ttl", d),
        };
        let mut f = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if f.as_ref().is_none_or(|(q, ..)| p > *q) {
            *f = Some((p, kind, detail));
        }
    }

    fn outcome(&self) -> (&'static str, String) {
        match self.found.lock().unwrap_or_else(|e| e.into_inner()).take() {
            None if self.may_be_gone => ("expired", String::new()),
            None => ("ok", String::new()),
            Some((_, "missing", _)) if self.may_be_gone => ("expired", String::new()),
            Some((_, kind, d)) => (kind, d),
        }
    }
}

struct Item {
    probe: Probe,
    key: Arc<KeyCheck>,
    last: bool,
}

struct Shared<'a> {
    results: &'a Mutex<Results>,
    shard: &'a str,
    tolerance: u64,
    redirects: &'a AtomicU64,
    moved: &'a AtomicBool,
    throttle: &'a Throttle,
    task: &'a Task,
}

fn now_ms() -> u64 {
    crate::util::now_ms()
}

/// A connection's loop: read, judge, record.
fn worker(mut lane: Lane, rx: std::sync::mpsc::Receiver<Vec<Item>>, sh: &Shared) -> anyhow::Result<()> {
    let mut replies = Replies::default();
    for batch in rx {
        let cmds: Vec<&[u8]> = batch.iter().map(|i| i.probe.cmd.as_slice()).collect();
        lane.read_all(
            &cmds,
            &|i| batch[i].key.name.clone(),
            sh.redirects,
            sh.moved,
            sh.throttle,
            &mut replies,
        )?;
        let now = now_ms();
        let mut done = 0;
        for (k, it) in batch.iter().enumerate() {
            it.key
                .note(probe::judge(&it.probe.expect, replies.get(k), now, sh.tolerance));
            if it.last {
                let (kind, detail) = it.key.outcome();
                let mut r = sh.results.lock().unwrap_or_else(|e| e.into_inner());
                r.add(sh.shard, &it.key.name, it.key.ty.name(), kind, &detail)?;
                done += 1;
            }
        }
        sh.task.add(done, 0);
    }
    Ok(())
}

/// Whether `key` is in the sample: a fixed function of the key, so a rerun checks the same keys.
fn sampled(key: &[u8], rate: f64) -> bool {
    rate >= 1.0 || (crc32fast::hash(key) as f64) < rate * u32::MAX as f64
}

struct Open {
    key: Option<Arc<KeyCheck>>,
    st: ProbeState,
    lane: usize,
    held: Option<Probe>,
}

#[allow(clippy::too_many_arguments)]
fn verify_shard(
    c: &Check,
    id: &str,
    feed: Feed,
    dest: &Dest,
    lanes: Vec<LaneConf>,
    route: Option<ClusterRoute>,
    caps: Caps,
    results: &Mutex<Results>,
    throttle: &Throttle,
    seen: &mut HashSet<u64>,
    stop: &AtomicBool,
    task: &Task,
) -> anyhow::Result<(u64, u64)> {
    let redirects = AtomicU64::new(0);
    let moved = AtomicBool::new(false);
    let sh = Shared {
        results,
        shard: id,
        tolerance: c.ttl_tolerance,
        redirects: &redirects,
        moved: &moved,
        throttle,
        task,
    };
    let opened = lanes.iter().map(Lane::open).collect::<anyhow::Result<Vec<_>>>()?;
    let n = opened.len();
    let not_written = std::thread::scope(|s| -> anyhow::Result<u64> {
        let mut txs: Vec<SyncSender<Vec<Item>>> = Vec::new();
        let mut workers = Vec::new();
        for lane in opened {
            let (tx, rx) = sync_channel::<Vec<Item>>(2);
            txs.push(tx);
            let sh = &sh;
            workers.push(s.spawn(move || worker(lane, rx, sh)));
        }
        // Per connection: the probes waiting, and about how much memory they hold.
        let mut bufs: Vec<(Vec<Item>, usize)> = (0..n).map(|_| (Vec::new(), 0)).collect();
        let mut chosen: BTreeMap<Vec<u8>, KeyType> = BTreeMap::new();
        let mut open: Option<Open> = None;
        let send = |bufs: &mut Vec<(Vec<Item>, usize)>, lane: usize, force: bool| -> anyhow::Result<()> {
            let (items, bytes) = &mut bufs[lane];
            if !items.is_empty() && (force || items.len() >= 1000 || *bytes >= 4 << 20) {
                *bytes = 0;
                let b = std::mem::take(items);
                txs[lane]
                    .send(b)
                    .map_err(|_| anyhow!("a connection to the server stopped"))?;
            }
            Ok(())
        };
        let mut sink = |rec: &KeyRecord| -> anyhow::Result<()> {
            if stop.load(Relaxed) {
                bail!("stopped: another shard failed");
            }
            let now = now_ms();
            dispatch(
                c,
                rec,
                dest,
                &route,
                n,
                now,
                caps,
                &mut chosen,
                &mut open,
                seen,
                &mut bufs,
            )?;
            if let Some(o) = &open {
                send(&mut bufs, o.lane, false)?;
            }
            if rec.is_last() {
                open = None;
            }
            Ok(())
        };
        feed(&mut sink)?;
        for l in 0..n {
            send(&mut bufs, l, true)?;
        }
        drop(txs);
        for w in workers {
            w.join()
                .unwrap_or_else(|_| Err(anyhow!("BUG: a connection thread panicked")))?;
        }
        Ok(if c.multi_type == MultiType::Fail {
            chosen.len() as u64
        } else {
            0
        })
    })?;
    Ok((redirects.load(Relaxed), not_written))
}

/// The records of shard `si` of a snapshot, block by block.
pub(crate) fn snapshot_feed(snap: &Snapshot, si: usize) -> Feed<'_> {
    Box::new(move |sink| {
        let entry = &snap.manifest.shards[si];
        let mut result = Ok(());
        for pi in 0..entry.parts.len() {
            let reader = snap
                .open_part(si, pi, ReadMode::Read)
                .with_context(|| entry.parts[pi].file.clone())?;
            reader.par_blocks(
                2,
                |b| b,
                |_, block| {
                    let r = (|| -> anyhow::Result<()> {
                        let block = block.map_err(|e| anyhow!("{e}"))?;
                        for rec in block.records() {
                            let Record::Key(rec) = rec.map_err(|e| anyhow!("{}: {e}", reader.path().display()))? else {
                                continue;
                            };
                            sink(&rec)?;
                        }
                        Ok(())
                    })();
                    match r {
                        Ok(()) => true,
                        Err(e) => {
                            result = Err(e);
                            false
                        }
                    }
                },
            );
            std::mem::replace(&mut result, Ok(()))?;
        }
        Ok(())
    })
}

/// Turns one record into probes for the lane of its key.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    a: &Check,
    rec: &KeyRecord,
    dest: &Dest,
    route: &Option<ClusterRoute>,
    n: usize,
    now: u64,
    caps: Caps,
    chosen: &mut BTreeMap<Vec<u8>, KeyType>,
    open: &mut Option<Open>,
    seen: &mut HashSet<u64>,
    bufs: &mut [(Vec<Item>, usize)],
) -> anyhow::Result<()> {
    if rec.part == 0 {
        let ty = rec.key_type();
        let mut name = [dest.prefix.as_slice(), rec.key].concat();
        let mut compare = sampled(rec.key, a.sample);
        if rec.flags & FLAG_MULTI_TYPE != 0 && a.multi_type == MultiType::Fail {
            // The import wrote none of the key's types (it named the key as failed): nothing
            // to compare; the key is counted once, in `chosen`.
            compare = false;
            chosen.entry(rec.key.to_vec()).or_insert(ty);
        } else if rec.flags & FLAG_MULTI_TYPE != 0 {
            match chosen.get(rec.key).copied() {
                None => {
                    chosen.insert(rec.key.to_vec(), ty);
                }
                Some(t) if t == ty => {}
                Some(_) if a.multi_type == MultiType::Suffix => {
                    name.extend_from_slice(format!(":{}", ty.name()).as_bytes())
                }
                Some(_) => compare = false, // not written by `--multi-type first`
            }
        }
        if a.extra {
            seen.insert(xhash(&name));
        }
        let lane = match route {
            Some(r) => r.lane_of(&name),
            None => crc32fast::hash(&name) as usize % n,
        };
        let may_be_gone = rec.expire_at_ms.is_some_and(|t| t <= now + a.ttl_tolerance);
        *open = Some(Open {
            key: compare.then(|| {
                Arc::new(KeyCheck {
                    name,
                    ty,
                    may_be_gone,
                    found: Mutex::new(None),
                })
            }),
            st: ProbeState::default(),
            lane,
            held: None,
        });
    }
    let Some(o) = open.as_mut() else { return Ok(()) };
    let Some(key) = o.key.clone() else { return Ok(()) };
    let mut probes = Vec::new();
    probe::probes(rec, &key.name, &mut o.st, caps, &mut probes);
    if key.may_be_gone {
        // An expired key is expected gone: only its PTTL is asked (gone, or expiring in time).
        probes.retain(|p| matches!(p.expect, probe::Expect::Ttl(_)));
    }
    for p in probes {
        if let Some(prev) = o.held.replace(p) {
            bufs[o.lane].1 += prev.weight();
            bufs[o.lane].0.push(Item {
                probe: prev,
                key: key.clone(),
                last: false,
            });
        }
    }
    if rec.is_last() {
        if let Some(p) = o.held.take() {
            bufs[o.lane].1 += p.weight();
            bufs[o.lane].0.push(Item {
                probe: p,
                key,
                last: true,
            });
        }
    }
    Ok(())
}

fn xhash(name: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A fixed-key SipHash: the same in every run.
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write(name);
    h.finish()
}

/// `--extra`: lists the destination's keys (every master of a cluster) and reports those whose
/// names the snapshot does not have. Pika is listed with its range scans, as export lists it:
/// its SCAN loses keys or loops forever on 3.5 once a stream exists (SERVERS.md).
fn find_extra(
    dest: &Dest,
    kind: &ServerKind,
    nodes: &[String],
    seen: &HashSet<u64>,
    results: &Mutex<Results>,
    shard: &str,
    what: &str,
) -> anyhow::Result<()> {
    let detail = format!("on the server, not in {what}");
    let report = |k: &[u8], ty: &str| -> anyhow::Result<()> {
        let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
        r.add(shard, k, ty, "extra", &detail)
    };
    if matches!(kind, ServerKind::Pika(..)) {
        let opts = ScanOptions {
            count: 1000,
            pattern: (!dest.prefix.is_empty()).then(|| {
                let mut p = String::from_utf8_lossy(&glob_escape(&dest.prefix)).into_owned();
                p.push('*');
                p
            }),
            ..ScanOptions::default()
        };
        let mut lister = RangeLister::new(kind, &opts, None);
        let mut lane = Lane::open(&dest.lane)?;
        while let Some(page) = lister
            .next(lane.conn())
            .with_context(|| format!("{}: listing keys", dest.describe))?
        {
            let ty = page.ty.map_or("", |t| t.name());
            for k in page.keys.iter().filter(|k| !seen.contains(&xhash(k))) {
                report(k, ty)?;
            }
        }
        return Ok(());
    }
    let confs: Vec<LaneConf> = if nodes.is_empty() {
        vec![dest.lane.clone()]
    } else {
        nodes
            .iter()
            .map(|n| {
                let mut c = dest.lane.clone();
                c.endpoint = c.endpoint.at(n);
                c
            })
            .collect()
    };
    let mut pattern = glob_escape(&dest.prefix);
    pattern.push(b'*');
    for conf in confs {
        let mut lane = Lane::open(&conf)?;
        let conn = lane.conn();
        let mut cursor = "0".to_string();
        loop {
            let (next, keys): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(conn)
                .with_context(|| format!("{}: SCAN", dest.describe))?;
            for k in keys.into_iter().filter(|k| !seen.contains(&xhash(k))) {
                let ty: String = redis::cmd("TYPE").arg(&k).query(conn).unwrap_or_default();
                report(&k, &ty)?;
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if !(0.0..=1.0).contains(&a.sample) || a.sample == 0.0 {
        bail!("--sample {}: a fraction above 0 and at most 1, e.g. 0.01", a.sample);
    }
    crate::util::check_report_path(a.report.as_deref())?;
    let snap = Snapshot::open(&a.snapshot)?; // its errors name the path
    let shards = snap.select(&a.shards)?;
    let shards: Vec<usize> = shards
        .into_iter()
        // Empty shards are skipped, as import skips them, --extra too: it lists the databases
        // the import wrote (issue 11: it demanded a --db-map for 16 empty shards).
        .filter(|&i| snap.manifest.shards[i].keys > 0)
        .collect();
    let (url, role) = match (&a.target, &a.source) {
        (Some(t), _) => (t.clone(), "target"),
        (None, Some(s)) => (s.clone(), "source"),
        (None, None) => unreachable!("BUG: clap requires one of them"),
    };
    // Both: the target against the source as it is now.
    let live = match (&a.target, &a.source) {
        (Some(_), Some(s)) => {
            let ep = a.connect.endpoints(std::slice::from_ref(s))?.remove(0);
            let caches = crate::source::pika_cache::Sources::open(std::slice::from_ref(&ep), a.connect.pika_cache_off)?;
            let select = crate::cmd::export::SelectArgs {
                db: "all".into(),
                pattern: None,
                types: Vec::new(),
                exclude_prefix: Vec::new(),
                skip_unknown_types: false,
            };
            Some((ep, caches, select.scan_options(a.max_ops_per_sec, a.connections)?))
        }
        _ => None,
    };
    // Against the source, databases map to themselves.
    let map = if a.source.is_some() && live.is_none() {
        let dbs: std::collections::BTreeSet<u32> = shards.iter().map(|&i| snap.manifest.shards[i].db).collect();
        MapArgs {
            db_map: Some(dbs.iter().map(|d| format!("{d}={d}")).collect::<Vec<_>>().join(",")),
            ..MapArgs::default()
        }
    } else {
        a.map.clone()
    };
    let target = open_target(&a.connect, &url, &map, role).map_err(|e| e.context("could not verify"))?;
    let dests = destinations(
        &map,
        Holder::Snapshot,
        false,
        &snap.dbs(&shards),
        Some((&target.probe, &target.server)),
        target.slots.is_some(),
    )?;
    let check = Check {
        sample: a.sample,
        multi_type: a.multi_type,
        ttl_tolerance: a.ttl_tolerance,
        extra: a.extra,
        parallel: a.parallel as usize,
        connections: a.connections as usize,
    };
    let throttle = Arc::new(Throttle::new(a.max_ops_per_sec));
    let list = shards
        .iter()
        .zip(dests)
        .map(|(&si, dest)| Shard {
            id: snap.manifest.shards[si].id.clone(),
            keys: if live.is_some() {
                None
            } else {
                Some(snap.manifest.shards[si].keys)
            },
            dest,
            feed: match &live {
                Some((ep, _, scan)) => source_feed(ep, snap.manifest.shards[si].db, scan, &throttle),
                None => snapshot_feed(&snap, si),
            },
        })
        .collect();
    let watched = vec![Watched {
        role,
        endpoint: &target.probe,
        kind: &target.server.kind,
        throttle: throttle.clone(),
    }];
    let watch = a.watch.start("verify", watched, a.max_ops_per_sec)?;
    let code = compare(
        &check,
        &target,
        list,
        &throttle,
        a.progress,
        a.report.as_deref(),
        a.connect.pika_cache_off,
        if live.is_some() { "the source" } else { "the snapshot" },
    )?;
    watch.print_summary();
    Ok(code)
}

/// Compares the records of `shards` with what `target` holds, prints the summary and returns
/// the exit code: 0 identical, 1 differences.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compare(
    c: &Check,
    target: &Target,
    shards: Vec<Shard>,
    throttle: &Throttle,
    progress: Mode,
    report_path: Option<&std::path::Path>,
    pika_cache_off: bool,
    what: &str,
) -> anyhow::Result<i32> {
    // verify reads PTTL: Pika 3.x with its cache on only with --pika-cache-off (pika_cache.rs).
    let _cache_off = {
        let mut conn = crate::server::conn::connect(&target.probe, std::time::Duration::from_secs(10))?;
        crate::source::pika_cache::CacheOff::guard(&target.probe, &mut conn, &target.server, pika_cache_off)?
    };
    let major: u32 = target
        .server
        .version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kind = target.server.kind.clone();
    let pika = matches!(kind, ServerKind::Pika(..));
    let caps = Caps {
        multi: match target.server.kind {
            ServerKind::Pika(..) => false,
            ServerKind::Redis => major >= 7 || target.server.version.as_str() >= "6.2",
            _ => true,
        },
        pttl_missing: !pika,
        groups: !pika,
    };
    let report: Option<Box<dyn Write + Send>> = match report_path {
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("{}: cannot create the report", p.display()))?,
        ))),
        None => None,
    };
    let results = Mutex::new(Results {
        counts: BTreeMap::new(),
        report,
        shown: Vec::new(),
        differences: 0,
    });
    let progress = Progress::start_phase(progress, "verify", shards.iter().map(|s| s.id.clone()).collect());
    for (n, s) in shards.iter().enumerate() {
        if let Some(k) = s.keys {
            progress.task(n).expect(k);
        }
    }
    let nodes: Vec<String> = target.slots.as_ref().map_or_else(Vec::new, |m| m.nodes.clone());
    let mut seen_by_dest: BTreeMap<String, (usize, HashSet<u64>)> = BTreeMap::new();
    let mut redirects = 0;
    let started = std::time::Instant::now();
    // Shards run `--parallel` at a time, each returning the names it saw (for --extra); after
    // an error the others stop at their next record.
    let stop = AtomicBool::new(false);
    let first_failed = Mutex::new(None);
    let ids: Vec<String> = shards.iter().map(|s| s.id.clone()).collect();
    let dests: Vec<Dest> = shards.iter().map(|s| s.dest.clone()).collect();
    let shards: Vec<Mutex<Option<Shard>>> = shards.into_iter().map(|s| Mutex::new(Some(s))).collect();
    let outcomes = crate::util::run_parallel(c.parallel, shards.len(), |n| {
        let sh = shards[n]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("BUG: each shard runs once");
        let task = progress.task(n);
        if stop.load(Relaxed) {
            task.finish(false);
            return None;
        }
        task.start(sh.keys);
        let d = &sh.dest;
        let (lanes, route) = d.lanes(target.slots.as_ref(), c.connections);
        let mut seen = HashSet::new();
        let r = verify_shard(
            c, &sh.id, sh.feed, d, lanes, route, caps, &results, throttle, &mut seen, &stop, &task,
        );
        task.finish(r.is_ok());
        if r.is_err() {
            first_failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(n);
            stop.store(true, Relaxed);
        }
        Some(
            r.map(|(redirects, not_written)| (redirects, not_written, seen))
                .map_err(|e| e.context(format!("shard {} -> {}", sh.id, sh.dest.describe))),
        )
    });
    let (mut failure, mut not_written) = (None, 0);
    for (n, r) in outcomes.into_iter().enumerate() {
        match r {
            Some(Ok((r, multi, seen))) => {
                redirects += r;
                not_written += multi;
                let entry = seen_by_dest
                    .entry(dests[n].describe.clone())
                    .or_insert_with(|| (n, HashSet::new()));
                entry.1.extend(seen);
            }
            Some(Err(e)) if *first_failed.lock().unwrap_or_else(|e| e.into_inner()) == Some(n) => failure = Some(e),
            _ => {}
        }
    }
    progress.stop();
    if let Some(e) = failure {
        return Err(e.context("could not verify"));
    }
    if c.extra {
        for (describe, (n, seen)) in &seen_by_dest {
            let d = dests
                .iter()
                .find(|d| &d.describe == describe)
                .expect("BUG: a destination of a shard");
            find_extra(d, &kind, &nodes, seen, &results, &ids[*n], what)?;
        }
    }
    let mut r = results.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = &mut r.report {
        w.flush().context("--report: cannot write")?;
    }
    let mut out = std::io::stdout().lock();
    let types: std::collections::BTreeSet<&String> = r.counts.keys().map(|(_, t)| t).collect();
    writeln!(
        out,
        "{:<10} {}",
        "type",
        KINDS.iter().map(|k| format!("{k:>12}")).collect::<String>()
    )?;
    for t in &types {
        let row: String = KINDS
            .iter()
            .map(|k| format!("{:>12}", r.counts.get(&(*k, (*t).clone())).copied().unwrap_or(0)))
            .collect();
        writeln!(out, "{t:<10} {row}")?;
    }
    for line in &r.shown {
        writeln!(out, "{line}")?;
    }
    if r.differences > r.shown.len() as u64 {
        writeln!(
            out,
            "  ... and {} more {}",
            r.differences - r.shown.len() as u64,
            crate::cmd::rest(r.report.is_some())
        )?;
    }
    let checked: u64 = r
        .counts
        .iter()
        .filter(|((k, _), _)| *k != "extra")
        .map(|(_, n)| n)
        .sum();
    crate::progress::set_result(serde_json::json!({
        "compared": checked,
        "differences": r.differences,
        "not_compared_multi_type": not_written,
    }));
    writeln!(
        out,
        "{}: {} compared{} in {:.1} s, {}{}{}",
        target.server.name,
        count(checked, "key"),
        if c.sample < 1.0 {
            format!(" (a sample of {})", c.sample)
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64(),
        count(r.differences, "difference"),
        if not_written > 0 {
            format!(
                "; {} held several types and {} not compared (with --multi-type fail none is written; if the import wrote them, give verify its --multi-type first or suffix)",
                count(not_written, "key"),
                if not_written == 1 { "was" } else { "were" }
            )
        } else {
            String::new()
        },
        if redirects > 0 {
            format!("; {} followed cluster redirects", count(redirects, "read"))
        } else {
            String::new()
        }
    )?;
    Ok(if r.differences == 0 { 0 } else { 1 })
}
