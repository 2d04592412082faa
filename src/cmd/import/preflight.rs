//! `import --dry-run`: everything the import would meet, reported before any write and without
//! stopping at the first problem. The snapshot is checked whole; the mapping is worked out; the
//! target is asked whether it may be written (role, rights) and has room; the snapshot's
//! records are read once to count Pika HyperLogLogs and, on each destination that already holds
//! keys, which of the snapshot's keys exist there (what `--conflict` would refuse, replace or
//! keep); multi-type keys come from the manifest, big keys from the trailers. Each finding is
//! ok, a warning, or a refusal (what the real import would refuse): with a refusal the dry run
//! ends as the import would, with exit 2.

use std::io::Write;

use anyhow::{anyhow, bail};

use super::{Args, Conflict};
use crate::format::consts::{FLAG_MULTI_TYPE, FLAG_PIKA_HLL};
use crate::format::record::Lossy;
use crate::format::snapshot::Snapshot;
use crate::target::dest::{destinations, first_key, Dest, Holder, MultiType, Target};
use crate::target::lane::Lane;
use crate::target::preflight::{self, Findings, Level};
use crate::util::{count, human_bytes};

/// At most this many example keys in one finding.
const EXAMPLES: usize = 5;

pub(super) fn run(a: &Args, snap: &Snapshot, shards: &[usize], target: &Target) -> anyhow::Result<i32> {
    let mut f = Findings::default();
    let mut out = std::io::stdout().lock();
    let keys: u64 = shards.iter().map(|&i| snap.manifest.shards[i].keys).sum();
    let data: u64 = shards.iter().map(|&i| snap.manifest.shards[i].raw_bytes).sum();
    writeln!(
        out,
        "dry run: the import of {} ({} in {}, {} of data) into {}; nothing is written",
        snap.dir.display(),
        count(keys, "key"),
        count(shards.len() as u64, "shard"),
        human_bytes(data),
        target.server.name
    )?;
    // The snapshot, whole.
    let mut multi = 0;
    let mut multi_examples = Vec::new();
    if a.no_check {
        f.add(
            Level::Warn,
            "snapshot",
            "not checked (--no-check): damage would be found while writing",
        );
    } else {
        let report = super::precheck(snap, shards);
        let problems: Vec<&String> = report
            .snapshot_problems
            .iter()
            .chain(report.files.iter().flat_map(|fr| &fr.problems))
            .collect();
        multi = report.files.iter().map(|fr| fr.multi_type_keys).sum::<u64>();
        multi_examples = report
            .files
            .iter()
            .flat_map(|fr| fr.multi_type_examples.iter().cloned())
            .take(EXAMPLES)
            .collect();
        let files = count(report.files.len() as u64, "file");
        match problems.first() {
            None => f.add(
                Level::Ok,
                "snapshot",
                format!("{files} whole (sizes, counts, checksums)"),
            ),
            Some(p) if a.skip_corrupt_blocks => f.add(
                Level::Warn,
                "snapshot",
                format!(
                    "damaged ({}, e.g. {p}): --skip-corrupt-blocks would import the rest and list what is lost",
                    count(problems.len() as u64, "problem")
                ),
            ),
            Some(p) => f.add(
                Level::Refuse,
                "snapshot",
                format!(
                    "damaged ({}, e.g. {p}): copy the damaged files again (kvferry check lists them)",
                    count(problems.len() as u64, "problem")
                ),
            ),
        }
    }
    // Where each shard goes.
    let dests = match destinations(
        &a.map,
        Holder::Snapshot,
        a.write.conflict == Conflict::Skip,
        &snap.dbs(shards),
        Some((&target.probe, &target.server)),
        target.slots.is_some(),
    ) {
        Ok(d) => {
            for (&i, d) in shards.iter().zip(&d) {
                let e = &snap.manifest.shards[i];
                writeln!(
                    out,
                    "  {} ({}, db {}) -> {}",
                    e.id,
                    count(e.keys, "key"),
                    e.db,
                    d.describe
                )?;
            }
            f.add(
                Level::Ok,
                "mapping",
                format!("every database has a destination ({})", count(d.len() as u64, "shard")),
            );
            Some(d)
        }
        Err(e) => {
            f.add(Level::Refuse, "mapping", format!("{e:#}"));
            None
        }
    };
    preflight::writable(&target.probe, &target.server, &mut f)?;
    preflight::room(&target.probe, &target.server, data, &mut f)?;
    // Keys held under several types (Pika <= 3.5).
    if multi > 0 {
        let eg = multi_examples.join(", ");
        match a.write.multi_type {
            MultiType::Fail => f.add(
                Level::Refuse,
                "multi-type",
                format!("{multi} occurrences of keys the source held under several types (e.g. {eg}): choose --multi-type first (the first type written, the others listed) or suffix (the others as KEY:TYPE)"),
            ),
            MultiType::First => f.add(
                Level::Warn,
                "multi-type",
                format!("{multi} occurrences of keys held under several types (e.g. {eg}): the first type of each is written, the others listed as skipped"),
            ),
            MultiType::Suffix => f.add(
                Level::Warn,
                "multi-type",
                format!("{multi} occurrences of keys held under several types (e.g. {eg}): types after the first are written as KEY:TYPE"),
            ),
        }
    } else {
        f.add(Level::Ok, "multi-type", "no key held under several types");
    }
    // One pass over the records: HyperLogLogs, and the keys that exist on the target already.
    let pass = records_pass(snap, shards, dests.as_deref(), target)?;
    if pass.hll.is_empty() {
        f.add(Level::Ok, "hyperloglog", "no Pika HyperLogLog");
    } else {
        f.add(
            Level::Warn,
            "hyperloglog",
            format!(
                "{} in Pika's own format (e.g. {}): written as plain strings, which the target's PFCOUNT does not read; rebuild them from their source data",
                count(pass.hll_count, "Pika HyperLogLog"),
                pass.hll.join(", ")
            ),
        );
    }
    for c in &pass.conflicts {
        let held = if c.existing > 0 {
            format!(
                "{} of the snapshot's keys {} there (e.g. {})",
                c.existing,
                if c.existing == 1 { "exists" } else { "exist" },
                c.examples.join(", ")
            )
        } else {
            "none of the snapshot's keys exist there".to_string()
        };
        let (level, text) = match a.write.conflict {
            Conflict::Fail => (
                Level::Refuse,
                format!("{} already holds keys (e.g. {}); {held}. --conflict fail needs an empty target: use --conflict replace to overwrite, or skip to keep them", c.describe, c.first),
            ),
            Conflict::Replace if c.existing > 0 => (
                Level::Warn,
                format!("{}: {held}: --conflict replace overwrites them", c.describe),
            ),
            Conflict::Skip if c.existing > 0 => (
                Level::Warn,
                format!("{}: {held}: --conflict skip keeps them as they are (not written)", c.describe),
            ),
            _ => (Level::Ok, format!("{} holds other keys; {held}", c.describe)),
        };
        f.add(level, "conflicts", text);
    }
    if dests.is_some() && pass.conflicts.is_empty() {
        f.add(Level::Ok, "conflicts", "every destination is empty");
    }
    // The biggest keys, from the trailers.
    let mut big: Vec<(u64, String)> = Vec::new();
    for &si in shards {
        for pi in 0..snap.manifest.shards[si].parts.len() {
            if let Ok(r) = snap.open_part(si, pi, crate::format::reader::ReadMode::Read) {
                for b in &r.trailer().big_keys {
                    big.push((
                        b.2,
                        format!(
                            "{} {:?} {} ({})",
                            b.1,
                            Lossy(&b.0),
                            human_bytes(b.2),
                            count(b.3, "element")
                        ),
                    ));
                }
            }
        }
    }
    big.sort_by_key(|b| std::cmp::Reverse(b.0));
    // Big: 1 MiB of value or more (a value is written in parts of at most that).
    let shown: Vec<&str> = big
        .iter()
        .filter(|(b, _)| *b >= 1 << 20)
        .take(3)
        .map(|(_, s)| s.as_str())
        .collect();
    match (shown.is_empty(), big.first()) {
        (false, _) => f.add(
            Level::Ok,
            "big keys",
            format!(
                "the biggest: {}; each is written in parts, so memory stays bounded",
                shown.join(", ")
            ),
        ),
        (true, Some((_, b))) => f.add(
            Level::Ok,
            "big keys",
            format!("none of 1 MiB or more (the biggest: {b})"),
        ),
        (true, None) => {}
    }
    writeln!(out, "what the import would meet:")?;
    f.print(&mut out)?;
    let (refusals, warnings) = (f.refusals(), f.warnings());
    if refusals > 0 {
        out.flush()?;
        bail!(
            "dry run: the import would refuse to start ({} above, {}); nothing was written",
            count(refusals as u64, "refusal"),
            count(warnings as u64, "warning")
        );
    }
    writeln!(
        out,
        "dry run: the import can start ({}); nothing was written",
        count(warnings as u64, "warning")
    )?;
    Ok(0)
}

/// A destination that holds keys already.
struct Conflicts {
    describe: String,
    first: String,
    existing: u64,
    examples: Vec<String>,
}

#[derive(Default)]
struct Pass {
    hll: Vec<String>,
    hll_count: u64,
    conflicts: Vec<Conflicts>,
}

/// Reads every record of `shards` once: counts Pika HyperLogLogs, and asks each non-empty
/// destination, in pipelines of 1000 EXISTS, which of the snapshot's keys it holds.
fn records_pass(snap: &Snapshot, shards: &[usize], dests: Option<&[Dest]>, target: &Target) -> anyhow::Result<Pass> {
    let mut pass = Pass::default();
    // Which destinations hold keys (on a cluster, on any master).
    let mut busy: std::collections::BTreeMap<String, (Lane, usize)> = std::collections::BTreeMap::new();
    if let Some(dests) = dests {
        for d in dests {
            if pass.conflicts.iter().any(|c| c.describe == d.describe) {
                continue;
            }
            for n in &d.nodes(target.slots.as_ref()) {
                if let Some(k) = first_key(n)? {
                    // A cluster is asked through its slot routing by the import; here one
                    // connection per destination answers for the keys it holds (-MOVED counts
                    // as absent), which is enough for a dry run's estimate.
                    busy.insert(d.describe.clone(), (Lane::open(&n.lane)?, pass.conflicts.len()));
                    pass.conflicts.push(Conflicts {
                        describe: d.describe.clone(),
                        first: format!("{:?}", Lossy(&k)),
                        existing: 0,
                        examples: Vec::new(),
                    });
                    break;
                }
            }
        }
    }
    for (n, &si) in shards.iter().enumerate() {
        let dest = dests.map(|d| &d[n]);
        let mut lane = dest.and_then(|d| busy.remove(&d.describe));
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let flush =
            |batch: &mut Vec<Vec<u8>>, lane: &mut Option<(Lane, usize)>, pass: &mut Pass| -> anyhow::Result<()> {
                let Some((l, ci)) = lane.as_mut() else {
                    batch.clear();
                    return Ok(());
                };
                let mut pipe = redis::pipe();
                for k in batch.iter() {
                    pipe.cmd("EXISTS").arg(k);
                }
                let replies: Vec<redis::Value> = pipe
                    .query(l.conn())
                    .map_err(|e| anyhow!("{}: EXISTS: {e}", pass.conflicts[*ci].describe))?;
                let c = &mut pass.conflicts[*ci];
                for (k, r) in batch.iter().zip(replies) {
                    if matches!(r, redis::Value::Int(1..)) {
                        c.existing += 1;
                        if c.examples.len() < EXAMPLES {
                            c.examples.push(format!("{:?}", Lossy(k)));
                        }
                    }
                }
                batch.clear();
                Ok(())
            };
        let prefix = dest.map(|d| d.prefix.clone()).unwrap_or_default();
        let mut multi_seen = std::collections::HashSet::new();
        let feed = crate::cmd::verify::snapshot_feed(snap, si);
        let mut sink = |rec: &crate::format::record::KeyRecord| -> anyhow::Result<()> {
            if rec.part != 0 {
                return Ok(());
            }
            if rec.flags & FLAG_PIKA_HLL != 0 {
                pass.hll_count += 1;
                if pass.hll.len() < EXAMPLES {
                    pass.hll.push(format!("{:?}", Lossy(rec.key)));
                }
            }
            // A key under several types is asked once, at its first occurrence.
            if rec.flags & FLAG_MULTI_TYPE != 0 && !multi_seen.insert(rec.key.to_vec()) {
                return Ok(());
            }
            if lane.is_some() {
                batch.push([prefix.as_slice(), rec.key].concat());
                if batch.len() >= 1000 {
                    flush(&mut batch, &mut lane, &mut pass)?;
                }
            }
            Ok(())
        };
        feed(&mut sink)?;
        flush(&mut batch, &mut lane, &mut pass)?;
        if let (Some(l), Some(d)) = (lane, dest) {
            busy.insert(d.describe.clone(), l);
        }
    }
    Ok(pass)
}
