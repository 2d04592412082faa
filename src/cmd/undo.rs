//! Rollback of an import: `import --undo DIR` records, before the import writes anything, what
//! it will change on the target: the keys it will create (their names) and the value of every
//! key it will replace (read from the target by type, like an export, into a snapshot in
//! `DIR/before`). `kvferry undo DIR --target URL` then puts the target back: it deletes the
//! created keys and writes the replaced ones back as they were (an import of `DIR/before` with
//! `--conflict replace`), and says what it did.
//!
//! The record is of the target at the moment the import started: keys written by others while
//! the import ran are not in it. It is made once per import: a `--resume` finds it complete
//! and leaves it; an `--undo` first given on a resume is refused, since the target then holds
//! the import's writes already.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::format::consts::FLAG_MULTI_TYPE;
use crate::format::record::KeyRecord;
use crate::format::snapshot::{write_manifest, Manifest, ShardSink, ShardSpec, Snapshot, SnapshotOptions};
use crate::progress::Mode;
use crate::server::conn::Server;
use crate::server::link::Link;
use crate::source::keys::{read_listed, DbReport};
use crate::source::list::{list_types, ScanOptions};
use crate::target::dest::{destinations, open_target, Dest, Holder, MapArgs};
use crate::target::lane::Lane;
use crate::util::{count, key_from_json, key_json, write_atomic};

/// The record's description, written last: without it (or with `complete: false`) the record
/// is unfinished.
pub const UNDO_FILE: &str = "UNDO.json";
/// The snapshot of the values the import replaces.
const BEFORE: &str = "before";

#[derive(Serialize, Deserialize, Debug)]
struct UndoState {
    kvferry: String,
    target: String,
    snapshot: String,
    snapshot_created_unix_ms: u64,
    recorded_unix_ms: u64,
    complete: bool,
    shards: Vec<UndoShard>,
}

#[derive(Serialize, Deserialize, Debug)]
struct UndoShard {
    /// The import's shard, and its database in the snapshot (the mapping applies to it).
    shard: String,
    db: u32,
    destination: String,
    /// Keys the import creates: their names, one JSON string per line, in this file.
    created_file: String,
    created: u64,
    /// Keys it replaces: their values are in `before/`, shard `shard`.
    replaced: u64,
}

fn read_state(dir: &Path) -> anyhow::Result<Option<UndoState>> {
    let path = dir.join(UNDO_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("{}: damaged undo record", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}

/// Records into `dir` what the import of `shards` to `dests` will change, unless a complete
/// record of this same import is there already. `resuming`: the import has written before, so
/// a record made now would be of the import's own writes: refused.
pub(crate) fn record(
    dir: &Path,
    snap: &Snapshot,
    shards: &[usize],
    dests: &[Dest],
    server: &Server,
    cluster: bool,
    resuming: bool,
) -> anyhow::Result<()> {
    if cluster {
        bail!("--undo: not on a cluster target (yet); take a backup of it with kvferry export instead");
    }
    match read_state(dir)? {
        Some(st) if st.complete => {
            if st.snapshot_created_unix_ms != snap.manifest.created_unix_ms || st.target != server.name {
                bail!(
                    "{}: holds the undo record of another import ({} into {}); choose another --undo DIR",
                    dir.display(),
                    st.snapshot,
                    st.target
                );
            }
            crate::note!("{}: the undo record was made when the import started; kept", dir.display());
            return Ok(());
        }
        _ if resuming => bail!(
            "--undo {}: no complete undo record, and the import has written already: a record made now would hold its own writes. Give --undo from the start of an import",
            dir.display()
        ),
        Some(_) => {
            // Killed while recording, before any write of the import: record again.
            std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot clear the unfinished record", dir.display()))?;
        }
        None => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!(
                    "--undo {}: the directory holds other files; give a new or empty one",
                    dir.display()
                );
            }
        }
    }
    let before = dir.join(BEFORE);
    std::fs::create_dir_all(&before).with_context(|| format!("{}: cannot create", before.display()))?;
    let now = crate::util::now_ms();
    let mut state = UndoState {
        kvferry: env!("CARGO_PKG_VERSION").into(),
        target: server.name.clone(),
        snapshot: snap.dir.display().to_string(),
        snapshot_created_unix_ms: snap.manifest.created_unix_ms,
        recorded_unix_ms: now,
        complete: false,
        shards: Vec::new(),
    };
    write_atomic(&dir.join(UNDO_FILE), &serde_json::to_vec_pretty(&state)?)?;
    crate::note!(
        "recording into {} what the import will change (the keys it creates, the values it replaces)...",
        dir.display()
    );
    let opts = SnapshotOptions::default();
    let mut entries = Vec::new();
    for (&si, d) in shards.iter().zip(dests) {
        let e = &snap.manifest.shards[si];
        let (shard, entry) = record_shard(dir, &before, snap, si, d, server, &opts, now)
            .with_context(|| format!("--undo: shard {} -> {}", e.id, d.describe))?;
        entries.push(entry);
        state.shards.push(shard);
    }
    write_manifest(&before, &Manifest::new(now, opts.writer_name.clone(), entries))?;
    state.complete = true;
    write_atomic(&dir.join(UNDO_FILE), &serde_json::to_vec_pretty(&state)?)?;
    let created: u64 = state.shards.iter().map(|s| s.created).sum();
    let replaced: u64 = state.shards.iter().map(|s| s.replaced).sum();
    crate::note!(
        "undo record: the import creates {} and replaces {} (their values are in {}); `kvferry undo {} --target URL` puts them back",
        count(created, "key"),
        count(replaced, "key"),
        before.display(),
        dir.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record_shard(
    dir: &Path,
    before: &Path,
    snap: &Snapshot,
    si: usize,
    d: &Dest,
    server: &Server,
    opts: &SnapshotOptions,
    now: u64,
) -> anyhow::Result<(UndoShard, crate::format::snapshot::ShardEntry)> {
    let e = &snap.manifest.shards[si];
    let mut link = Link::open(&d.lane.endpoint)?;
    let db = d.lane.db.unwrap_or(0);
    if let Some(db) = d.lane.db {
        link.select(db)?;
    }
    let kind = link.server.kind.clone();
    let scan = ScanOptions {
        read: crate::source::read::ReadOptions::default().for_server(&kind),
        count: 1000,
        ..ScanOptions::default()
    };
    let mut sink = ShardSink::new(
        before,
        ShardSpec {
            id: e.id.clone(),
            source: server.name.clone(),
            source_server: Some(server.software()),
            db: e.db,
        },
        opts.clone(),
        now,
    )?;
    let created_file = format!("created-{}.jsonl", e.id);
    let created_path = dir.join(&created_file);
    let mut created_out = std::io::BufWriter::new(
        std::fs::File::create(&created_path).with_context(|| format!("{}: cannot create", created_path.display()))?,
    );
    let (mut created, mut replaced) = (0u64, 0u64);
    let mut multi_seen = std::collections::HashSet::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut process = |batch: &mut Vec<Vec<u8>>, link: &mut Link, sink: &mut ShardSink| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let throttle = crate::server::throttle::Throttle::new(None);
        let mut conn = link.conn(&throttle);
        let mut pipe = redis::pipe();
        for k in batch.iter() {
            pipe.cmd("EXISTS").arg(k);
        }
        let replies: Vec<i64> = pipe.query(&mut conn).context("EXISTS")?;
        let mut existing = Vec::new();
        for (k, n) in batch.drain(..).zip(replies) {
            if n > 0 {
                existing.push(k);
            } else {
                serde_json::to_writer(&mut created_out, &key_json(&k))?;
                created_out.write_all(b"\n")?;
                created += 1;
            }
        }
        let listed = list_types(&mut conn, db, &existing)?;
        let mut report = DbReport::default();
        let mut done = std::collections::HashSet::new();
        let mut emit = |r: &KeyRecord| -> anyhow::Result<()> { sink.push(r).map_err(|e| anyhow!("{e}")) };
        read_listed(&mut conn, &kind, listed, &scan, &mut emit, &mut report, &mut done)?;
        if let Some(p) = report.failed.first() {
            bail!("reading {} (to keep its value) failed: {}", p.key, p.reason);
        }
        replaced += report.keys_by_type.values().sum::<u64>();
        Ok(())
    };
    let feed = crate::cmd::verify::snapshot_feed(snap, si);
    let mut each = |rec: &KeyRecord| -> anyhow::Result<()> {
        if rec.part != 0 || (rec.flags & FLAG_MULTI_TYPE != 0 && !multi_seen.insert(rec.key.to_vec())) {
            return Ok(());
        }
        batch.push([d.prefix.as_slice(), rec.key].concat());
        if batch.len() >= 1000 {
            process(&mut batch, &mut link, &mut sink)?;
        }
        Ok(())
    };
    feed(&mut each)?;
    process(&mut batch, &mut link, &mut sink)?;
    created_out.flush()?;
    created_out
        .get_ref()
        .sync_all()
        .with_context(|| format!("{}: cannot sync", created_path.display()))?;
    drop(created_out);
    let entry = sink.finish()?;
    Ok((
        UndoShard {
            shard: e.id.clone(),
            db: e.db,
            destination: d.describe.clone(),
            created_file,
            created,
            replaced,
        },
        entry,
    ))
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory that `kvferry import --undo DIR` recorded into.
    pub dir: PathBuf,
    /// The server the import wrote to.
    #[arg(long, value_name = "URL")]
    pub target: String,
    /// The import's --db-map or --namespace-map (its --prefix-map is in the recorded names
    /// already and is not given again).
    #[command(flatten)]
    pub map: MapArgs,
    /// Say what would be deleted and restored; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub progress: Mode,
    #[command(flatten)]
    pub connect: crate::server::endpoint::ConnectArgs,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    crate::interrupt::stops_cleanly();
    let st = read_state(&a.dir)?.ok_or_else(|| {
        anyhow!(
            "{}: no undo record ({UNDO_FILE}); it is made by kvferry import --undo DIR",
            a.dir.display()
        )
    })?;
    if !st.complete {
        bail!(
            "{}: the undo record is unfinished: the import stopped while recording, before it wrote anything; there is nothing to undo",
            a.dir.display()
        );
    }
    let map = MapArgs {
        prefix_map: None,
        ..a.map.clone()
    };
    let target = open_target(&a.connect, &a.target, &map, "target")?;
    if target.server.name != st.target {
        bail!(
            "{}: the record is of an import into {}, not {}; give that --target",
            a.dir.display(),
            st.target,
            target.server.name
        );
    }
    let dbs: Vec<u32> = st.shards.iter().map(|s| s.db).collect();
    let dests = destinations(
        &map,
        Holder::Snapshot,
        false,
        &dbs,
        Some((&target.probe, &target.server)),
        target.slots.is_some(),
    )?;
    for (s, d) in st.shards.iter().zip(&dests) {
        if d.describe != s.destination {
            bail!(
                "shard {}: the import wrote it to {}, this mapping says {}: give the import's --db-map or --namespace-map",
                s.shard,
                s.destination,
                d.describe
            );
        }
    }
    let created: u64 = st.shards.iter().map(|s| s.created).sum();
    let replaced: u64 = st.shards.iter().map(|s| s.replaced).sum();
    if a.dry_run {
        for s in &st.shards {
            println!(
                "{} -> {}: would delete {} the import created and restore {} it replaced",
                s.shard,
                s.destination,
                count(s.created, "key"),
                count(s.replaced, "key")
            );
        }
        println!("dry run: nothing was changed");
        return Ok(0);
    }
    // The keys the import created go.
    let mut deleted = 0u64;
    for (s, d) in st.shards.iter().zip(&dests) {
        let path = a.dir.join(&s.created_file);
        let file = std::fs::File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut lane = Lane::open(&d.lane)?;
        let mut batch = Vec::new();
        let mut del = |batch: &mut Vec<Vec<u8>>| -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for k in batch.iter() {
                pipe.cmd("DEL").arg(k);
            }
            let n: Vec<u64> = pipe
                .query(lane.conn())
                .with_context(|| format!("{}: DEL", d.describe))?;
            deleted += n.iter().sum::<u64>();
            batch.clear();
            Ok(())
        };
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
            let k = serde_json::from_str(&line)
                .ok()
                .and_then(|v| key_from_json(&v))
                .ok_or_else(|| anyhow!("{}: line {}: not a key", path.display(), i + 1))?;
            batch.push(k);
            if batch.len() >= 1000 {
                del(&mut batch)?;
            }
        }
        del(&mut batch)?;
    }
    println!(
        "undo: deleted {} of the {} the import created ({} gone already)",
        deleted,
        count(created, "key"),
        created - deleted.min(created)
    );
    // The keys it replaced are written back as they were.
    if replaced > 0 {
        let before = a.dir.join(BEFORE);
        let state = a.dir.join("restore-state");
        let code = super::import::run(super::import::Args {
            snapshot: before,
            target: Some(a.target.clone()),
            resp: None,
            shards: Vec::new(),
            map,
            write: super::import::WriteArgs {
                conflict: super::import::Conflict::Replace,
                multi_type: crate::target::dest::MultiType::First,
                connections: 2,
                pipeline: 1000,
                fail_fast: false,
            },
            parallel: 4,
            max_ops_per_sec: None,
            watch: Default::default(),
            resume: state.join(super::import::RUN_FILE).exists(),
            state: Some(state),
            undo: None,
            dry_run: false,
            skip_corrupt_blocks: false,
            no_check: false,
            progress: a.progress,
            report: None,
            connect: a.connect.clone(),
            checkpoint_secs: 5.0,
        })?;
        if code != 0 {
            return Ok(code);
        }
    }
    println!(
        "undo: restored {} the import had replaced; {} is as it was before the import",
        count(replaced, "key"),
        target.server.name
    );
    Ok(0)
}
