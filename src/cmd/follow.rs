//! `kvferry follow SNAPSHOT --source PIKA --target URL`: catches up with the writes a Pika took
//! during and after an export, so that a cut-over waits seconds, not the hours of a copy.
//!
//! It reads the Pika's binlog as a replication client (follow/client.rs) from each database's
//! position at the export's start (the manifest's `binlog_start`), and copies again every key
//! the writes touched (follow/copy.rs). A round of items is acknowledged to the Pika, and its
//! end position checkpointed (`--state DIR`), only once its keys are written on the target, so a
//! killed follow resumes without loss: items after the checkpoint come again, and copying a key
//! twice changes nothing. Its memory is bounded however many keys the writes touch: a round
//! holds at most `ROUND_KEYS` distinct keys (and what one message brings past them), and the
//! Pika sends no more than one replication window (`sync-window-size`, 9000 items by default)
//! unacknowledged; the rest of a backlog waits in the Pika's binlog files, on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cmd::export::SelectArgs;
use crate::follow::binlog::{decode, touched, Touched};
use crate::follow::client::{Entry, Received, Refused, Replica};
use crate::follow::copy::{copy_keys, Copied};
use crate::format::snapshot::{BinlogPosition, Snapshot};
use crate::progress::Mode;
use crate::server::conn::{connect, ServerKind};
use crate::server::endpoint::{ConnectArgs, Endpoint};
use crate::server::link::{is_connection_error, Link};
use crate::server::throttle::Throttle;
use crate::target::dest::{destinations, dialect_of, glob_escape, open_target, Dest, Holder, MapArgs, MultiType};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot an export of the Pika wrote (its manifest has each database's binlog
    /// position, `binlog_start`), imported into the target already.
    pub snapshot: PathBuf,
    /// The Pika the snapshot was exported from (its replication port, the main port + 2000,
    /// must be reachable too).
    #[arg(long, value_name = "URL")]
    pub source: String,
    /// The server the snapshot was imported into.
    #[arg(long, value_name = "URL")]
    pub target: String,
    #[command(flatten)]
    pub map: MapArgs,
    /// The export's filters (give the same as the export): --db picks the databases to follow.
    #[command(flatten)]
    pub select: SelectArgs,
    /// What the import did with keys the source held under several types (Pika <= 3.5): give
    /// the import's --multi-type. With fail, a touched key under several types stops the follow
    /// (its round unacknowledged): run again with first or suffix and --resume.
    #[arg(long, value_enum, default_value = "fail", value_name = "POLICY")]
    pub multi_type: MultiType,
    /// Exit 0 once every write the Pika took is on the target (the lag is zero and no touched
    /// key waits), after the application stopped writing: the moment to cut over.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Where to keep the checkpoint (default: $XDG_STATE_HOME/kvferry, or ~/.local/state/kvferry,
    /// `follow-<target>`).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Continue a follow that stopped (killed, interrupted, failed) from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Send at most this many commands per second to each server.
    #[arg(long, allow_hyphen_values = true, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub max_ops_per_sec: Option<u64>,
    /// How to show progress on stderr: plain lines (every 10 s, or bars' place on a terminal),
    /// JSON lines (every 2 s), or nothing.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    /// Write a JSON report of the run to this file when it ends.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Read binlog items from this file instead of a Pika's replication port (tests: the copy
    /// path with Redis standing in). Each item: db u32, filenum u32, offset u64 (its end), length
    /// u32, all little-endian, then the item as Pika sends it.
    #[arg(long, value_name = "FILE", hide = true)]
    pub binlog_file: Option<PathBuf>,
}

/// `follow.json` in the state directory.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct State {
    /// The snapshot followed: its creation time identifies it.
    snapshot_created_unix_ms: u64,
    source: String,
    target: String,
    /// Per database: the end of the last item whose keys are on the target.
    positions: BTreeMap<u32, BinlogPosition>,
    items: u64,
    copied: Copied,
    /// The most keys one round held (the bound on follow's memory: a round copies at most
    /// `ROUND_KEYS` and what one message brings past it).
    #[serde(default)]
    largest_round_keys: u64,
}

/// A round stops taking items once it holds this many distinct keys, copies them and is
/// acknowledged: a backlog of millions of touched keys waits in the Pika's binlog, on its disk,
/// not in follow's memory.
const ROUND_KEYS: usize = 10_000;

fn state_file(dir: &Path) -> PathBuf {
    dir.join("follow.json")
}

impl State {
    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).expect("BUG: state always serialises");
        text.push(b'\n');
        crate::util::write_atomic(&state_file(dir), &text)
            .with_context(|| format!("{}: cannot write the checkpoint", state_file(dir).display()))
    }
}

/// Items received and not yet acknowledged: one range per message, acknowledged in order.
struct Batch {
    db: u32,
    first: BinlogPosition,
    last: BinlogPosition,
}

/// Where the binlog comes from.
enum Feed {
    Pika(PikaFeed),
    File(FileFeed),
}

struct PikaFeed {
    host: String,
    port: u16,
    password: Option<String>,
    replica: Option<Replica>,
    attempt: u16,
    last_heard: Instant,
    last_ping: Instant,
}

struct FileFeed {
    reader: std::io::BufReader<std::fs::File>,
    path: PathBuf,
    from: BTreeMap<u32, BinlogPosition>,
    /// An item read ahead, of another database than the message it would have joined.
    ahead: Option<(u32, Entry)>,
    last: BTreeMap<u32, BinlogPosition>,
}

/// Silence after which the master is taken to have dropped the session (it does at 20 s).
const SILENCE: Duration = Duration::from_secs(20);
/// How long to keep trying to reach the Pika's replication port.
const PATIENCE: Duration = Duration::from_secs(120);

impl PikaFeed {
    /// Connects, registers and asks for every database from its position; tries again (with
    /// backoff, for up to two minutes) while the Pika cannot be reached or drops the connection,
    /// as after a restart.
    fn start(&mut self, from: &BTreeMap<u32, BinlogPosition>, name: &str) -> anyhow::Result<()> {
        let began = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            // Each connection declares a new port: the master may still hold the last one.
            self.attempt = self.attempt.wrapping_add(1);
            let declared = 30000 + ((std::process::id() as u16 % 1000) * 20 + self.attempt % 20);
            match self.attempt_once(from, name, declared) {
                Ok(r) => {
                    self.replica = Some(r);
                    self.last_heard = Instant::now();
                    return Ok(());
                }
                Err(e) if e.is::<Fatal>() || e.to_string().contains("refused the replication client") => return Err(e),
                Err(e) if began.elapsed() > PATIENCE => {
                    return Err(e.context(format!(
                        "{name}: could not follow for {} s; once it answers, run the same command with --resume",
                        PATIENCE.as_secs()
                    )))
                }
                Err(e) => {
                    crate::note!("{name}: {e:#}; trying again in {:.1} s", wait.as_secs_f64());
                    std::thread::sleep(wait); // backoff before reconnecting
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn attempt_once(&self, from: &BTreeMap<u32, BinlogPosition>, name: &str, declared: u16) -> anyhow::Result<Replica> {
        let mut r = Replica::connect(&self.host, self.port, self.password.as_deref(), declared)?;
        for (&db, &pos) in from {
            let refused = match r.try_sync(db, pos)? {
                Ok(()) => continue,
                Err(Refused::Purged { master }) => format!(
                    "{name} db {db}: Pika purged its binlog past {pos} (where this follow stands){}: the writes since are lost to follow. Export again and start follow sooner after it; and keep more binlog meanwhile: raise expire-logs-nums (CONFIG SET expire-logs-nums N; it keeps N files of binlog-file-size each) and expire-logs-days",
                    master.map(|m| format!("; the binlog now is at {m}")).unwrap_or_default()
                ),
                Err(Refused::Ahead { master }) => format!(
                    "{name} db {db}: the position {pos} is past the Pika's own binlog{}: this snapshot (or checkpoint) is not of this Pika, or its binlog was reset",
                    master.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
                Err(Refused::Error { master, reply }) => format!(
                    "{name} db {db}: Pika refused to replay from {pos}{}{}: the position is not the start of a binlog item",
                    master.map(|m| format!(" (its binlog is at {m})")).unwrap_or_default(),
                    if reply.is_empty() { String::new() } else { format!(": {reply}") }
                ),
            };
            return Err(Fatal(refused).into());
        }
        for (&db, &pos) in from {
            r.start(db, pos)?;
        }
        Ok(r)
    }
}

/// A refusal that trying again cannot change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

impl Feed {
    fn receive(&mut self, wait: Duration) -> anyhow::Result<Received> {
        match self {
            Feed::Pika(p) => {
                let r = p
                    .replica
                    .as_mut()
                    .expect("BUG: started before receiving")
                    .receive(wait)?;
                match &r {
                    Received::Quiet if p.last_heard.elapsed() > SILENCE => {
                        bail!(
                            "the Pika sent nothing for {} s (not even its keepalive)",
                            SILENCE.as_secs()
                        )
                    }
                    Received::Quiet => {}
                    _ => p.last_heard = Instant::now(),
                }
                if p.last_ping.elapsed() > Duration::from_secs(2) {
                    p.replica.as_mut().expect("BUG: started").ping()?;
                    p.last_ping = Instant::now();
                }
                Ok(r)
            }
            Feed::File(f) => {
                // Messages of up to 100 items of one database, as a Pika sends them.
                let first = match f.ahead.take() {
                    Some(e) => e,
                    None => match f.next()? {
                        Some(e) => e,
                        None => return Ok(Received::Quiet),
                    },
                };
                let db = first.0;
                let mut entries = vec![first.1];
                while entries.len() < 100 {
                    match f.next()? {
                        Some((d, e)) if d == db => entries.push(e),
                        Some(other) => {
                            f.ahead = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                Ok(Received::Items { db, entries })
            }
        }
    }

    fn ack(&mut self, round: &[Batch]) -> anyhow::Result<()> {
        if let Feed::Pika(p) = self {
            let r = p.replica.as_mut().expect("BUG: started");
            for b in round {
                r.ack(b.db, b.first, b.last)?;
            }
            p.last_ping = Instant::now();
            // The master sends nothing while a round is unacknowledged: its silence counts from
            // here, not from the round's last item.
            p.last_heard = Instant::now();
        }
        Ok(())
    }

    /// Keeps the session alive during a long round.
    fn ping(&mut self) -> anyhow::Result<()> {
        if let Feed::Pika(p) = self {
            if let Some(r) = p.replica.as_mut() {
                r.ping()?;
                p.last_ping = Instant::now();
            }
        }
        Ok(())
    }
}

/// Reads `--binlog-file` as it goes, an item at a time, as a Pika sends them: a first pass over
/// the headers only finds where each database's binlog ends (the master's position).
fn read_binlog_file(path: &Path, from: &BTreeMap<u32, BinlogPosition>) -> anyhow::Result<FileFeed> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .with_context(|| format!("{}: cannot read", path.display()))
    };
    let mut r = open()?;
    let len = r.get_ref().metadata()?.len();
    let mut last = BTreeMap::new();
    while let Some((db, end, _)) = file_entry(&mut r, path, Some(len))? {
        last.insert(db, end);
    }
    Ok(FileFeed {
        reader: open()?,
        path: path.to_path_buf(),
        from: from.clone(),
        ahead: None,
        last,
    })
}

/// The next item of a binlog file (its db, its end and its bytes), or None at its end. Given
/// the file's length, `skip` passes over the item's bytes instead of reading them.
fn file_entry(
    r: &mut std::io::BufReader<std::fs::File>,
    path: &Path,
    skip: Option<u64>,
) -> anyhow::Result<Option<(u32, BinlogPosition, Vec<u8>)>> {
    use std::io::{Read, Seek};
    let at = r.stream_position()?;
    let mut h = [0u8; 20];
    let mut got = 0;
    while got < 20 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => bail!("{}: cut inside an entry header at byte {at}", path.display()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    let db = u32_at(0);
    let end = BinlogPosition {
        filenum: u32_at(4),
        offset: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
    };
    let n = u32_at(16) as usize;
    let cut = || format!("{}: cut inside the item at byte {at}", path.display());
    match skip {
        None => {
            let mut item = vec![0u8; n];
            r.read_exact(&mut item).with_context(cut)?;
            Ok(Some((db, end, item)))
        }
        Some(len) => {
            if at + 20 + n as u64 > len {
                bail!(cut());
            }
            r.seek_relative(n as i64)?;
            Ok(Some((db, end, Vec::new())))
        }
    }
}

impl FileFeed {
    /// The next item after the position `from` holds for its database.
    fn next(&mut self) -> anyhow::Result<Option<(u32, Entry)>> {
        while let Some((db, end, item)) = file_entry(&mut self.reader, &self.path, None)? {
            if self.from.get(&db).is_some_and(|p| end > *p) {
                return Ok(Some((db, Entry { end, item })));
            }
        }
        Ok(None)
    }
}

/// What a round collected from its items, per database.
#[derive(Default)]
struct Dirty {
    keys: BTreeSet<Vec<u8>>,
    flushed: bool,
    patterns: Vec<Vec<u8>>,
}

/// The master's binlog positions now, per database.
fn master_positions(feed: &Feed, source: &mut Link) -> anyhow::Result<BTreeMap<u32, BinlogPosition>> {
    match feed {
        Feed::File(f) => Ok(f.last.clone()),
        Feed::Pika(_) => crate::source::pika::read_binlog_positions(&mut source.conn(&Throttle::new(None))),
    }
}

/// Bytes of binlog between `a` and `b` (b ahead), with files of `file_size` bytes.
fn lag_bytes(a: BinlogPosition, b: BinlogPosition, file_size: u64) -> u64 {
    if b <= a {
        0
    } else if a.filenum == b.filenum {
        b.offset - a.offset
    } else {
        (b.filenum - a.filenum) as u64 * file_size + b.offset - a.offset.min(file_size)
    }
}

/// Deletes every key of the destination (a FLUSHDB or FLUSHALL on the source): the keys under
/// its prefix, or all the keys of its database; never more than the mapping holds.
fn delete_all(target: &mut redis::Connection, dest: &Dest, throttle: &Throttle) -> anyhow::Result<u64> {
    let pattern = [glob_escape(&dest.prefix), b"*".to_vec()].concat();
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        throttle.take(1);
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(target)
            .with_context(|| format!("{}: SCAN to empty it (the source was flushed)", dest.describe))?;
        if !keys.is_empty() {
            throttle.take(1);
            n += redis::cmd("DEL").arg(&keys).query::<u64>(target)?;
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

/// One page of the target's keys under the destination that match a source glob (Pika 3.5's
/// `pkpatternmatchdel`), as source names: with `--multi-type suffix` a `KEY:TYPE` name also gives
/// `KEY`, whose other types it may hold. Copied again page by page, so those the source deleted
/// are deleted and memory holds one page, however many keys match.
fn matching_page(
    target: &mut redis::Connection,
    dest: &Dest,
    pattern: &[u8],
    cursor: u64,
    policy: MultiType,
) -> anyhow::Result<(u64, BTreeSet<Vec<u8>>)> {
    let glob = [glob_escape(&dest.prefix), pattern.to_vec()].concat();
    let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(&glob)
        .arg("COUNT")
        .arg(1000)
        .query(target)
        .with_context(|| format!("{}: SCAN for the keys a pattern deleted on the source", dest.describe))?;
    let mut out = BTreeSet::new();
    for k in keys {
        let k = k[dest.prefix.len()..].to_vec();
        if policy == MultiType::Suffix {
            if let Some(base) = crate::format::record::KeyType::ALL
                .iter()
                .find_map(|t| k.strip_suffix([b":", t.name().as_bytes()].concat().as_slice()))
            {
                out.insert(base.to_vec());
            }
        }
        out.insert(k);
    }
    Ok((next, out))
}

fn host_port(ep: &Endpoint) -> anyhow::Result<(String, u16, Option<String>)> {
    let info = ep.client()?.get_connection_info().clone();
    match info.addr {
        redis::ConnectionAddr::Tcp(h, p) => Ok((h, p, info.redis.password.clone())),
        _ => bail!(
            "{}: follow reads Pika's replication port over plain TCP; a TLS or Unix-socket source is not supported",
            ep.name()
        ),
    }
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    crate::interrupt::stops_cleanly();
    crate::util::check_report_path(a.report.as_deref())?;
    let snap = Snapshot::open(&a.snapshot).with_context(|| a.snapshot.display().to_string())?;
    let m = &snap.manifest;
    let all_dbs: Vec<u32> = m.shards.iter().map(|s| s.db).collect();
    let wanted = crate::cmd::export::parse_dbs(&a.select.db, &all_dbs).context("--db")?;
    let mut starts: BTreeMap<u32, BinlogPosition> = BTreeMap::new();
    for s in m.shards.iter().filter(|s| wanted.contains(&s.db)) {
        match s.binlog_start {
            Some(p) => {
                starts.insert(s.db, p);
            }
            None => bail!(
                "{}: shard {} (db {}) has no binlog position (binlog_start): follow needs a snapshot exported from a Pika by kvferry 0.1 or later (format 1.2)",
                a.snapshot.display(),
                s.id,
                s.db
            ),
        }
    }
    if starts.is_empty() {
        bail!("{}: no shard to follow", a.snapshot.display());
    }
    let scan = a.select.scan_options(a.max_ops_per_sec, 1)?;
    let source_ep = a.connect.endpoints(std::slice::from_ref(&a.source))?.remove(0);
    // Pika 3.x with its cache on is not read without --pika-cache-off, as in export (the guard
    // switches the cache on again when the follow ends, however it ends).
    let _caches = crate::source::pika_cache::Sources::open(std::slice::from_ref(&source_ep), a.connect.pika_cache_off)?;
    let mut source = Link::open(&source_ep)?;
    let name = source.server.name.clone();
    if a.binlog_file.is_none() && !matches!(source.server.kind, ServerKind::Pika(..)) {
        bail!(
            "{name}: is {}, not Pika: follow reads Pika's binlog (for Redis sources, use a replica and cut over from it)",
            source.server.software()
        );
    }
    if let Some(p) = &m
        .shards
        .iter()
        .find(|s| wanted.contains(&s.db))
        .map(|s| s.source.clone())
    {
        if *p != name {
            crate::note!("note: the snapshot was exported from {p}; following {name}");
        }
    }
    // The target and the mapping, as the import had them.
    let target = open_target(&a.connect, &a.target, &a.map, "target")?;
    if target.slots.is_some() {
        bail!("{}: follow does not write to a cluster yet", target.server.name);
    }
    let dbs: Vec<u32> = starts.keys().copied().collect();
    let dests = destinations(
        &a.map,
        Holder::Snapshot,
        false,
        &dbs,
        Some((&target.probe, &target.server)),
        false,
    )?;
    let dialect = dialect_of(&target.server, &target.probe, false)?;
    let mut conns = BTreeMap::new();
    for (db, d) in dbs.iter().zip(&dests) {
        let mut c = connect(&d.lane.endpoint, Duration::from_secs(10))?;
        if let Some(n) = d.lane.db {
            redis::cmd("SELECT").arg(n).query::<()>(&mut c)?;
        }
        conns.insert(*db, (c, d.clone()));
    }
    // The checkpoint.
    let state_dir = match &a.state {
        Some(d) => d.clone(),
        None => crate::util::state_home(&format!("follow-{}", crate::util::safe_name(&target.server.name)))?,
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("{}: cannot create the state directory", state_dir.display()))?;
    let mut state = match std::fs::read(state_file(&state_dir)) {
        Ok(text) => {
            let st: State = serde_json::from_slice(&text)
                .with_context(|| format!("{}: not a follow checkpoint", state_file(&state_dir).display()))?;
            if st.snapshot_created_unix_ms != m.created_unix_ms {
                bail!(
                    "{}: holds the follow of another snapshot (created {}); give another --state DIR, or remove it",
                    state_dir.display(),
                    crate::util::iso_utc(st.snapshot_created_unix_ms)
                );
            }
            // A checkpoint where a new follow would start (a follow that was refused, or stopped
            // before its first round) is started again without --resume: nothing was applied.
            let unmoved = st.items == 0 && st.positions == starts;
            if !a.resume && !unmoved {
                bail!(
                    "{}: holds this follow's checkpoint; add --resume to continue it",
                    state_dir.display()
                );
            }
            crate::note!(
                "resuming the follow from its checkpoint: {}",
                st.positions
                    .iter()
                    .map(|(db, p)| format!("db {db} at {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            st
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
            snapshot_created_unix_ms: m.created_unix_ms,
            source: name.clone(),
            target: target.server.name.clone(),
            positions: starts.clone(),
            items: 0,
            copied: Copied::default(),
            largest_round_keys: 0,
        },
        Err(e) => return Err(e).with_context(|| state_file(&state_dir).display().to_string()),
    };
    state.save(&state_dir)?;
    let mut feed = match &a.binlog_file {
        Some(f) => Feed::File(read_binlog_file(f, &state.positions)?),
        None => {
            let (host, port, password) = host_port(&source_ep)?;
            let mut p = PikaFeed {
                host,
                port,
                password,
                replica: None,
                attempt: 0,
                last_heard: Instant::now(),
                last_ping: Instant::now(),
            };
            p.start(&state.positions, &name)?;
            Feed::Pika(p)
        }
    };
    crate::note!(
        "{name}: following {} from {}",
        crate::util::count(state.positions.len() as u64, "database"),
        state
            .positions
            .iter()
            .map(|(db, p)| format!("db {db} at {p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let file_size: u64 = redis::cmd("CONFIG")
        .arg("GET")
        .arg("binlog-file-size")
        .query::<Vec<String>>(&mut source.conn(&Throttle::new(None)))
        .ok()
        .and_then(|v| v.get(1).and_then(|s| s.parse().ok()))
        .unwrap_or(100 << 20);
    let throttle = Throttle::new(a.max_ops_per_sec);
    let started = Instant::now();
    // Counts of earlier runs (the checkpoint's): the summary says this run's.
    let before = (
        state.items,
        state.copied.written,
        state.copied.deleted,
        state.copied.failed_count,
    );
    let mut last_status = Instant::now();
    let mut last_exec: BTreeMap<u32, u32> = BTreeMap::new();
    // Plain lines in place of bars: a follow runs for hours, in logs more than on terminals.
    let mode = match a.progress {
        Mode::Json => Mode::Json,
        Mode::None => Mode::None,
        _ => Mode::Plain,
    };
    let status_every = if mode == Mode::Json {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(10)
    };
    let mut master = master_positions(&feed, &mut source)?;
    let outcome: anyhow::Result<i32> = loop {
        if crate::interrupt::interrupted() {
            println!(
                "interrupted: the follow stopped at its checkpoint ({}).\nContinue with:\n  {}",
                describe(&state.positions),
                crate::interrupt::resume_command()
            );
            break Ok(crate::interrupt::EXIT_INTERRUPTED);
        }
        // A round: what arrives until it stops coming, or enough for one copy.
        let mut round: Vec<Batch> = Vec::new();
        let mut dirty: BTreeMap<u32, Dirty> = BTreeMap::new();
        let began = Instant::now();
        let mut keys_waiting = 0usize;
        // Counted into the checkpoint only once the round is acknowledged: a round copied again
        // (after a lost connection, or resumed) counts once.
        let mut round_items = 0u64;
        let mut failed: Option<anyhow::Error> = None;
        loop {
            let wait = if round.is_empty() {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(20)
            };
            let got = match feed.receive(wait) {
                Ok(g) => g,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            match got {
                Received::Items { db, entries } => {
                    if !state.positions.contains_key(&db) {
                        // A database not followed: acknowledged, not copied.
                        round.push(Batch {
                            db,
                            first: entries[0].end,
                            last: entries[entries.len() - 1].end,
                        });
                        continue;
                    }
                    let d = dirty.entry(db).or_default();
                    for e in &entries {
                        let item = decode(&e.item)
                            .with_context(|| format!("{name} db {db}: the binlog item ending at {}", e.end))?;
                        last_exec.insert(db, item.exec_time);
                        match touched(&item.argv)
                            .with_context(|| format!("{name} db {db}, the item ending at {}", e.end))?
                        {
                            Touched::Key(k) => {
                                d.keys.insert(k);
                            }
                            Touched::All => {
                                d.flushed = true;
                            }
                            Touched::Pattern { pattern, .. } => d.patterns.push(pattern),
                            Touched::Nothing => {}
                        }
                    }
                    round_items += entries.len() as u64;
                    keys_waiting = dirty.values().map(|d| d.keys.len()).sum();
                    round.push(Batch {
                        db,
                        first: entries[0].end,
                        last: entries[entries.len() - 1].end,
                    });
                }
                Received::Keepalive => {}
                Received::Quiet => break,
            }
            if keys_waiting >= ROUND_KEYS || began.elapsed() > Duration::from_millis(500) {
                break;
            }
        }
        if let Some(e) = failed {
            // The replication connection is gone: start again from the checkpoint (what this
            // round received comes again).
            match &mut feed {
                Feed::Pika(p) => {
                    crate::note!("{name}: {e:#}; reconnecting from the checkpoint");
                    p.replica = None;
                    p.start(&state.positions, &name)?;
                    continue;
                }
                Feed::File(_) => break Err(e),
            }
        }
        // Copy the round's keys, then acknowledge it and move the checkpoint. A lost connection
        // to either server (a restart, a network cut) is re-established and the round copied
        // again: a copy deletes and rewrites, so doing it twice changes nothing.
        let mut attempts = 0;
        let copy = loop {
            let mut copied = Copied::default();
            let r = (|| -> anyhow::Result<()> {
                for (db, d) in &mut dirty {
                    let (conn, dest) = conns.get_mut(db).expect("BUG: a destination per followed db");
                    if d.flushed {
                        let n = delete_all(conn, dest, &throttle)?;
                        crate::note!("{name} db {db} was flushed: {n} keys deleted on {}", dest.describe);
                    }
                    // Copied again here, before the round's keys, page by page: kept until the
                    // round is acknowledged, so a round copied again does them again.
                    for p in &d.patterns {
                        let mut cursor = 0;
                        loop {
                            let (next, keys) = matching_page(conn, dest, p, cursor, a.multi_type)?;
                            // The round's own keys are copied below: once is enough, as every
                            // copy reads what the source holds now.
                            let keys = keys.into_iter().filter(|k| !d.keys.contains(k)).collect();
                            let (kept, _) = crate::source::list::filter(keys, &scan, true);
                            let feed_ref = &mut feed;
                            let mut tick = || feed_ref.ping();
                            copy_keys(
                                &mut source,
                                &throttle,
                                *db,
                                &scan,
                                &kept.into_iter().collect(),
                                conn,
                                dest,
                                dialect,
                                a.multi_type,
                                &mut copied,
                                &mut tick,
                            )?;
                            if next == 0 {
                                break;
                            }
                            cursor = next;
                        }
                    }
                    let (kept, _) = crate::source::list::filter(d.keys.iter().cloned().collect(), &scan, true);
                    let keys: BTreeSet<Vec<u8>> = kept.into_iter().collect();
                    let feed_ref = &mut feed;
                    let mut tick = || feed_ref.ping();
                    copy_keys(
                        &mut source,
                        &throttle,
                        *db,
                        &scan,
                        &keys,
                        conn,
                        dest,
                        dialect,
                        a.multi_type,
                        &mut copied,
                        &mut tick,
                    )?;
                }
                Ok(())
            })();
            let r = r.map(|()| copied);
            match r {
                Err(e) if is_connection_error(&e) && attempts < 5 => {
                    attempts += 1;
                    crate::note!("{e:#}; reconnecting and copying the round again");
                    source.recover()?;
                    for (db, (conn, dest)) in conns.iter_mut() {
                        if redis::cmd("PING").query::<String>(conn).is_err() {
                            let mut c = crate::server::conn::connect(&dest.lane.endpoint, Duration::from_secs(10))
                                .with_context(|| format!("the target for db {db}"))?;
                            if let Some(n) = dest.lane.db {
                                redis::cmd("SELECT").arg(n).query::<()>(&mut c)?;
                            }
                            *conn = c;
                        }
                    }
                }
                other => break other,
            }
        };
        let copied = match copy {
            Ok(c) => c,
            Err(e) => {
                break Err(e.context(format!(
                    "the follow stopped at its checkpoint ({}); fix the cause and run the same command with --resume",
                    describe(&state.positions)
                )))
            }
        };
        if let Err(e) = feed.ack(&round) {
            if let Feed::Pika(p) = &mut feed {
                crate::note!("{name}: {e:#}; reconnecting");
                p.replica = None;
            }
        }
        for b in &round {
            if let Some(p) = state.positions.get_mut(&b.db) {
                *p = (*p).max(b.last);
            }
        }
        state.items += round_items;
        state.copied.add(copied);
        state.largest_round_keys = state.largest_round_keys.max(keys_waiting as u64);
        state.save(&state_dir)?;
        if let Feed::Pika(p) = &mut feed {
            if p.replica.is_none() {
                p.start(&state.positions, &name)?;
            }
        }
        // Where the master is, and whether everything is on the target.
        let idle = round.is_empty();
        if idle || last_status.elapsed() >= status_every {
            master = match master_positions(&feed, &mut source) {
                Ok(m) => m,
                Err(e) if is_connection_error(&e) => {
                    source.recover()?;
                    master_positions(&feed, &mut source)?
                }
                Err(e) => return Err(e),
            };
        }
        let behind: u64 = state
            .positions
            .iter()
            .map(|(db, p)| master.get(db).map_or(0, |m| lag_bytes(*p, *m, file_size)))
            .sum();
        let caught_up = idle && behind == 0;
        if mode != Mode::None && (last_status.elapsed() >= status_every || caught_up) {
            let secs = if behind == 0 {
                0
            } else {
                let now = (crate::util::now_ms() / 1000) as u32;
                last_exec.values().map(|t| now.saturating_sub(*t)).max().unwrap_or(0)
            };
            status(mode, &state, &master, behind, secs, keys_waiting, started.elapsed());
            last_status = Instant::now();
        }
        if caught_up && a.until_caught_up {
            break Ok(if state.copied.failed_count == 0 { 0 } else { 1 });
        }
    };
    state.save(&state_dir)?;
    let code = match outcome {
        Ok(c) => c,
        Err(e) => {
            write_report(&a, &state, &master, false)?;
            return Err(e);
        }
    };
    let c = &state.copied;
    println!(
        "follow: {} applied in {:.1} s{}: {} copied again, {} deleted, {} failed{}; {}",
        crate::util::count(state.items - before.0, "binlog item"),
        started.elapsed().as_secs_f64(),
        if before.0 > 0 {
            format!(" ({} since the export)", state.items)
        } else {
            String::new()
        },
        crate::util::count(c.written - before.1, "key"),
        crate::util::count(c.deleted - before.2, "key"),
        crate::util::count(c.failed_count - before.3, "key"),
        if c.multi_type > 0 {
            format!(
                ", {} of multi-type keys not under their name (--multi-type)",
                c.multi_type
            )
        } else {
            String::new()
        },
        if code == 0 || code == 1 {
            "caught up: every write the source took is on the target".to_string()
        } else {
            format!("stopped at {}", describe(&state.positions))
        }
    );
    for p in c.failed.iter().take(20) {
        println!("  failed {}: {}", p.key, p.reason);
    }
    write_report(&a, &state, &master, code != crate::interrupt::EXIT_INTERRUPTED)?;
    Ok(code)
}

fn describe(p: &BTreeMap<u32, BinlogPosition>) -> String {
    p.iter()
        .map(|(db, p)| format!("db {db} at {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(
    mode: Mode,
    state: &State,
    master: &BTreeMap<u32, BinlogPosition>,
    behind: u64,
    secs: u32,
    waiting: usize,
    elapsed: Duration,
) {
    let c = &state.copied;
    if mode == Mode::Json {
        let line = serde_json::json!({
            "event": "progress", "phase": "follow", "elapsed_s": elapsed.as_secs_f64(), "items": state.items,
            "copied": c.written, "deleted": c.deleted, "failed": c.failed_count,
            "lag_bytes": behind, "lag_seconds": secs, "keys_waiting": waiting,
            "positions": state.positions, "master": master,
        });
        eprintln!("{line}");
    } else {
        eprintln!(
            "follow: {} items, {} keys copied, {} deleted, {} failed; lag {} ({} s), {} waiting; {} (master {})",
            state.items,
            c.written,
            c.deleted,
            c.failed_count,
            crate::util::human_bytes(behind),
            secs,
            crate::util::count(waiting as u64, "key"),
            describe(&state.positions),
            describe(master)
        );
    }
}

fn write_report(
    a: &Args,
    state: &State,
    master: &BTreeMap<u32, BinlogPosition>,
    caught_up: bool,
) -> anyhow::Result<()> {
    let Some(path) = &a.report else { return Ok(()) };
    let text = serde_json::to_vec_pretty(&serde_json::json!({
        "snapshot": a.snapshot, "source": state.source, "target": state.target,
        "caught_up": caught_up, "items": state.items, "positions": state.positions, "master": master,
        "copied": state.copied.written, "deleted": state.copied.deleted,
        "failed": state.copied.failed_count, "failed_keys": state.copied.failed,
        "multi_type_not_under_their_name": state.copied.multi_type,
        "largest_round_keys": state.largest_round_keys,
    }))?;
    std::fs::write(path, text).with_context(|| format!("{}: cannot write the report", path.display()))
}
