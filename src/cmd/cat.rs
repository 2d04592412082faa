//! `kvferry cat`: prints records as JSON lines, in the canonical rendering of SPEC §10.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context;

use crate::format::reader::{ReadMode, ShardReader};
use crate::format::record::{PartSeq, Record};
use crate::format::render::render_record;
use crate::format::snapshot::Snapshot;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot directory, or one shard file (.kvf).
    pub snapshot: PathBuf,
    /// Only this shard (its id, as `kvferry inspect` lists).
    #[arg(long, value_name = "ID")]
    pub shard: Option<String>,
    /// Only this key (its bytes, as the shell passes them).
    #[arg(long, conflicts_with = "prefix", value_name = "KEY")]
    pub key: Option<OsString>,
    /// Only keys that start with these bytes.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<OsString>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    let key = a.key.as_ref().map(|k| k.as_bytes().to_vec());
    let prefix = a.prefix.as_ref().map(|p| p.as_bytes().to_vec());
    let keep =
        |k: &[u8]| key.as_deref().is_none_or(|want| k == want) && prefix.as_deref().is_none_or(|p| k.starts_with(p));
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if a.snapshot.is_file() {
        let r = ShardReader::open(&a.snapshot)?;
        if a.shard.as_ref().is_none_or(|s| *s == r.header().shard) {
            cat_file(&r, &keep, &mut out)?;
        }
    } else {
        let snap = Snapshot::open(&a.snapshot)?;
        if let Some(s) = &a.shard {
            if !snap.manifest.shards.iter().any(|x| x.id == *s) {
                let ids: Vec<&str> = snap.manifest.shards.iter().map(|x| x.id.as_str()).collect();
                anyhow::bail!(
                    "{}: no shard {s:?}; the snapshot has: {}",
                    a.snapshot.display(),
                    ids.join(", ")
                );
            }
        }
        for (si, shard) in snap.manifest.shards.iter().enumerate() {
            if a.shard.as_ref().is_some_and(|s| *s != shard.id) {
                continue;
            }
            for r in snap.open_shard_verified(si, ReadMode::Mmap)? {
                cat_file(&r, &keep, &mut out)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn cat_file(r: &ShardReader, keep: &dyn Fn(&[u8]) -> bool, out: &mut impl Write) -> anyhow::Result<()> {
    let shard = r.header().shard.clone();
    let mut seq = PartSeq::default();
    let mut line = String::new();
    for block in r.blocks() {
        let block = block?;
        for rec in block.records() {
            let rec = rec.with_context(|| r.path().display().to_string())?;
            seq.accept(&rec)
                .map_err(|e| anyhow::anyhow!("{}: block {}: {e}", r.path().display(), block.index))?;
            if let Record::Key(k) = &rec {
                if keep(k.key) {
                    line.clear();
                    render_record(&mut line, &shard, k);
                    out.write_all(line.as_bytes())?;
                }
            }
        }
    }
    seq.finish()
        .map_err(|e| anyhow::anyhow!("{}: {e}", r.path().display()))?;
    Ok(())
}
