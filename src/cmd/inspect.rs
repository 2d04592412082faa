//! `kvferry inspect`: a summary of a snapshot from its manifest and each file's header and
//! trailer (SPEC §3, §4.4), without reading the blocks.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::consts::PART_EXTENSION;
use crate::format::frame::ShardHeader;
use crate::format::reader::{ReadMode, ShardReader};
use crate::format::render;
use crate::format::snapshot::Snapshot;
use crate::format::SnapshotError;
use crate::util::{human_bytes, iso_utc};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot directory.
    pub snapshot: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Default)]
struct Summary {
    snapshot: PathBuf,
    /// True when MANIFEST.json is present (F-SNAP-2).
    complete: bool,
    format_version: Option<String>,
    writer: Option<String>,
    created_unix_ms: Option<u64>,
    /// `export --sample`: what was asked and the rate (SAMPLE.json); absent for a whole export.
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<serde_json::Value>,
    shards: Vec<ShardSummary>,
    per_db: BTreeMap<u32, TypeCounts>,
    totals: Totals,
    expiry: Expiry,
    biggest_keys: Vec<BigKey>,
    /// Files that could not be read (only for incomplete snapshots; `check` says more).
    problems: Vec<String>,
}

#[derive(Serialize, Default)]
struct ShardSummary {
    id: String,
    source: String,
    source_server: Option<String>,
    db: u32,
    parts: Vec<PartSummary>,
    blocks: u64,
    keys: u64,
    records: u64,
    raw_bytes: u64,
    file_bytes: u64,
    keys_by_type: BTreeMap<String, u64>,
    /// Key occurrences the source held under several types (format 1.1 counts them).
    multi_type_keys: u64,
    /// A Pika source's binlog position when the export began (format 1.2): where
    /// `kvferry follow` starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    binlog_start: Option<crate::format::snapshot::BinlogPosition>,
}

#[derive(Serialize)]
struct PartSummary {
    file: String,
    bytes: u64,
    blocks: u64,
    keys: u64,
    raw_bytes: u64,
}

#[derive(Serialize, Default)]
struct TypeCounts {
    keys: u64,
    keys_by_type: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct Totals {
    files: u64,
    blocks: u64,
    keys: u64,
    records: u64,
    raw_bytes: u64,
    file_bytes: u64,
    compression_ratio: f64,
    keys_by_type: BTreeMap<String, u64>,
}

#[derive(Serialize, Default)]
struct Expiry {
    expiring_keys: u64,
    persistent_keys: u64,
    earliest_unix_ms: Option<u64>,
    latest_unix_ms: Option<u64>,
}

#[derive(Serialize)]
struct BigKey {
    shard: String,
    db: u32,
    key: serde_json::Value,
    #[serde(rename = "type")]
    ty: String,
    value_bytes: u64,
    elements: u64,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let s = summarise(&a.snapshot)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        // Through io::Error, so that a closed pipe (`| head -1`) is seen as one (exit 0).
        serde_json::to_writer_pretty(&mut out, &s).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        print_text(&s, &mut out)?;
    }
    Ok(0)
}

/// Adds one file's header and trailer to the summary.
fn add_file(s: &mut Summary, shard: &mut ShardSummary, r: &ShardReader) {
    let t = r.trailer();
    let h: &ShardHeader = r.header();
    shard.parts.push(PartSummary {
        file: r
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: r.len(),
        blocks: t.blocks.len() as u64,
        keys: t.keys,
        raw_bytes: t.raw_bytes,
    });
    shard.blocks += t.blocks.len() as u64;
    shard.keys += t.keys;
    shard.records += t.records;
    shard.raw_bytes += t.raw_bytes;
    shard.file_bytes += r.len();
    shard.multi_type_keys += t.multi_type_keys;
    let db = s.per_db.entry(h.db).or_default();
    db.keys += t.keys;
    for (ty, n) in &t.keys_by_type {
        *shard.keys_by_type.entry(ty.clone()).or_default() += n;
        *db.keys_by_type.entry(ty.clone()).or_default() += n;
    }
    let e = &mut s.expiry;
    e.expiring_keys += t.expiring_keys;
    e.persistent_keys += t.keys - t.expiring_keys.min(t.keys);
    e.earliest_unix_ms = [e.earliest_unix_ms, t.min_expire_at_ms].into_iter().flatten().min();
    e.latest_unix_ms = [e.latest_unix_ms, t.max_expire_at_ms].into_iter().flatten().max();
    for b in &t.big_keys {
        s.biggest_keys.push(BigKey {
            shard: h.shard.clone(),
            db: h.db,
            key: bytes_json(&b.0),
            ty: b.1.clone(),
            value_bytes: b.2,
            elements: b.3,
        });
    }
}

fn bytes_json(b: &[u8]) -> serde_json::Value {
    let mut s = String::new();
    render::bytes(&mut s, b);
    serde_json::from_str(&s).expect("BUG: render::bytes writes valid JSON")
}

fn summarise(dir: &Path) -> anyhow::Result<Summary> {
    let mut s = Summary {
        snapshot: dir.to_path_buf(),
        sample: crate::cmd::export::sample_of(dir)
            .map(|(asked, rate)| serde_json::json!({"asked": asked, "rate": rate})),
        ..Default::default()
    };
    match Snapshot::open(dir) {
        Ok(snap) => {
            let m = &snap.manifest;
            s.complete = true;
            s.format_version = Some(m.version.clone());
            s.writer = Some(m.writer.clone());
            s.created_unix_ms = Some(m.created_unix_ms);
            for (si, entry) in m.shards.iter().enumerate() {
                let mut shard = ShardSummary {
                    id: entry.id.clone(),
                    source: entry.source.clone(),
                    db: entry.db,
                    binlog_start: entry.binlog_start,
                    ..Default::default()
                };
                for pi in 0..entry.parts.len() {
                    let r = snap.open_part(si, pi, ReadMode::Read)?;
                    shard.source_server = r.header().source_server.clone();
                    add_file(&mut s, &mut shard, &r);
                }
                s.shards.push(shard);
            }
        }
        Err(SnapshotError::Incomplete { .. }) => {
            summarise_files(&mut s, dir)?;
            if s.shards.is_empty() {
                anyhow::bail!(
                    "{}: holds no MANIFEST.json and no shard files (.kvf): not a kvferry snapshot",
                    dir.display()
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    for sh in &s.shards {
        let t = &mut s.totals;
        t.files += sh.parts.len() as u64;
        t.blocks += sh.blocks;
        t.keys += sh.keys;
        t.records += sh.records;
        t.raw_bytes += sh.raw_bytes;
        t.file_bytes += sh.file_bytes;
        for (ty, n) in &sh.keys_by_type {
            *t.keys_by_type.entry(ty.clone()).or_default() += n;
        }
    }
    s.totals.compression_ratio = if s.totals.file_bytes == 0 {
        0.0
    } else {
        (s.totals.raw_bytes as f64 / s.totals.file_bytes as f64 * 100.0).round() / 100.0
    };
    s.biggest_keys.sort_by(|a, b| {
        b.value_bytes
            .cmp(&a.value_bytes)
            .then_with(|| a.key.to_string().cmp(&b.key.to_string()))
    });
    s.biggest_keys.truncate(10);
    Ok(s)
}

/// Without a manifest: summarise the shard files that are whole and list those that are not.
fn summarise_files(s: &mut Summary, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == PART_EXTENSION))
        .collect();
    files.sort();
    let mut shards: BTreeMap<String, ShardSummary> = BTreeMap::new();
    for f in files {
        match ShardReader::open_with(&f, ReadMode::Read) {
            Ok(r) => {
                let h = r.header().clone();
                let mut shard = shards.remove(&h.shard).unwrap_or_else(|| ShardSummary {
                    id: h.shard.clone(),
                    source: h.source.clone(),
                    source_server: h.source_server.clone(),
                    db: h.db,
                    ..Default::default()
                });
                add_file(s, &mut shard, &r);
                shards.insert(h.shard, shard);
            }
            Err(e) => s.problems.push(e.to_string()),
        }
    }
    s.shards = shards.into_values().collect();
    Ok(())
}

fn print_text(s: &Summary, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "snapshot   {}", s.snapshot.display())?;
    if s.complete {
        writeln!(out, "complete   yes (MANIFEST.json present)")?;
        writeln!(
            out,
            "format     {}, written by {}",
            s.format_version.as_deref().unwrap_or("?"),
            s.writer.as_deref().unwrap_or("?")
        )?;
        if let Some(ms) = s.created_unix_ms {
            writeln!(out, "created    {}", iso_utc(ms))?;
        }
        if let Some(v) = &s.sample {
            writeln!(
                out,
                "sample     --sample {}: {} of the keys by name hash, and a key for each type and size class it missed; not a backup",
                v["asked"].as_str().unwrap_or("?"),
                v["rate"]
            )?;
        }
    } else {
        writeln!(
            out,
            "complete   NO: no MANIFEST.json (the export did not finish); figures below cover the whole files only"
        )?;
    }
    let t = &s.totals;
    writeln!(
        out,
        "shards     {} in {} files, {} blocks",
        s.shards.len(),
        t.files,
        t.blocks
    )?;
    writeln!(
        out,
        "keys       {} ({} records){}",
        t.keys,
        t.records,
        types(&t.keys_by_type)
    )?;
    let multi: u64 = s.shards.iter().map(|s| s.multi_type_keys).sum();
    if multi > 0 {
        writeln!(
            out,
            "multi-type {multi} key occurrences the source held under several types: an import needs --multi-type"
        )?;
    }
    for (db, c) in &s.per_db {
        writeln!(out, "  db {db:<6} {}{}", c.keys, types(&c.keys_by_type))?;
    }
    writeln!(
        out,
        "bytes      raw {}, compressed {}, ratio {:.2}",
        human_bytes(t.raw_bytes),
        human_bytes(t.file_bytes),
        t.compression_ratio
    )?;
    let e = &s.expiry;
    let pct = if t.keys == 0 {
        0.0
    } else {
        e.expiring_keys as f64 * 100.0 / t.keys as f64
    };
    write!(
        out,
        "expiry     {} keys expire ({pct:.1}%), {} persist",
        e.expiring_keys, e.persistent_keys
    )?;
    if let (Some(a), Some(b)) = (e.earliest_unix_ms, e.latest_unix_ms) {
        write!(out, "; earliest {}, latest {}", iso_utc(a), iso_utc(b))?;
    }
    writeln!(out)?;
    if !s.biggest_keys.is_empty() {
        writeln!(out, "biggest keys")?;
        for (i, b) in s.biggest_keys.iter().enumerate() {
            writeln!(
                out,
                "  {:>2}. {:<6} {:>10} {:>10} elements  {}  (shard {}, db {})",
                i + 1,
                b.ty,
                human_bytes(b.value_bytes),
                b.elements,
                b.key,
                b.shard,
                b.db
            )?;
        }
    }
    writeln!(out, "shards")?;
    // Empty databases take one line, not two each.
    let (empty, shards): (Vec<_>, Vec<_>) = s.shards.iter().partition(|sh| sh.keys == 0);
    for sh in shards {
        let server = sh
            .source_server
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}  {}{server} db {}  {}  {}  raw {}  file {}",
            sh.id,
            sh.source,
            sh.db,
            crate::util::count(sh.parts.len() as u64, "part"),
            crate::util::count(sh.keys, "key"),
            human_bytes(sh.raw_bytes),
            human_bytes(sh.file_bytes)
        )?;
        if let Some(b) = sh.binlog_start {
            writeln!(
                out,
                "      binlog at {} {} when the export began (kvferry follow starts there)",
                b.filenum, b.offset
            )?;
        }
        for p in &sh.parts {
            writeln!(
                out,
                "      {}  {}  {}  raw {}  file {}",
                p.file,
                crate::util::count(p.blocks, "block"),
                crate::util::count(p.keys, "key"),
                human_bytes(p.raw_bytes),
                human_bytes(p.bytes)
            )?;
        }
    }
    if !empty.is_empty() {
        let ids: Vec<&str> = empty.iter().map(|sh| sh.id.as_str()).collect();
        writeln!(
            out,
            "  {} with no keys: {}",
            crate::util::count(ids.len() as u64, "shard"),
            ids.join(", ")
        )?;
    }
    for p in &s.problems {
        writeln!(out, "UNREADABLE {p}")?;
    }
    Ok(())
}

fn types(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = m.iter().map(|(t, n)| format!("{t} {n}")).collect();
    format!(": {}", parts.join(", "))
}
