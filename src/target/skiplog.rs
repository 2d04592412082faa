//! `--conflict skip` across a kill (issue 4, "Faults and resume"): a key that exists on the
//! target is left alone, but after a kill -9 a key that the killed run had started to write
//! exists too, partly written. So before a key's writes are sent, its "write" decision is
//! appended to a log (a plain write reaches the kernel, so it survives the process being
//! killed); a resumed run reads the log and deletes and rewrites those keys instead of skipping
//! them. Segments are dropped once a checkpoint covers their keys.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;

struct Seg {
    n: u32,
    file: File,
    /// The highest block sequence number of an entry in it (u64::MAX: from an earlier run).
    max_seq: u64,
    empty: bool,
}

pub struct SkipLog {
    dir: PathBuf,
    shard: String,
    cur: Mutex<(Seg, Vec<(u32, u64)>)>,
}

fn seg_path(dir: &Path, shard: &str, n: u32) -> PathBuf {
    dir.join(format!("{shard}.skip.{n}"))
}

impl SkipLog {
    /// Opens the log of `shard` in `dir`, returning the keys that earlier runs decided to write.
    pub fn open(dir: &Path, shard: &str) -> anyhow::Result<(SkipLog, HashSet<Vec<u8>>)> {
        let prefix = format!("{shard}.skip.");
        let mut ours = HashSet::new();
        let mut old = Vec::new();
        let entries = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let text =
                std::fs::read_to_string(e.path()).with_context(|| format!("{}: cannot read", e.path().display()))?;
            // A line cut by the kill has no newline: it was never followed by a write.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                if let Ok(k) = hex::decode(line.trim_end()) {
                    ours.insert(k);
                }
            }
            old.push((n, u64::MAX));
        }
        let next = old.iter().map(|(n, _)| n + 1).max().unwrap_or(0);
        let seg = SkipLog::create(dir, shard, next)?;
        Ok((
            SkipLog {
                dir: dir.to_path_buf(),
                shard: shard.to_string(),
                cur: Mutex::new((seg, old)),
            },
            ours,
        ))
    }

    fn create(dir: &Path, shard: &str, n: u32) -> anyhow::Result<Seg> {
        let path = seg_path(dir, shard, n);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create the skip log", path.display()))?;
        Ok(Seg {
            n,
            file,
            max_seq: 0,
            empty: true,
        })
    }

    /// Logs that `keys` (of block `seq` or before) are about to be written.
    pub fn append(&self, seq: u64, keys: &[&[u8]]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for k in keys {
            text.push_str(&hex::encode(k));
            text.push('\n');
        }
        let mut g = self.cur.lock().unwrap_or_else(|e| e.into_inner());
        g.0.file
            .write_all(text.as_bytes())
            .with_context(|| format!("{}: cannot write the skip log (disk full?)", self.dir.display()))?;
        g.0.max_seq = g.0.max_seq.max(seq);
        g.0.empty = false;
        Ok(())
    }

    /// After a checkpoint that covers every block up to `done_seq`: starts a new segment and
    /// removes those whose keys are all covered.
    pub fn prune(&self, done_seq: u64) -> anyhow::Result<()> {
        let mut g = self.cur.lock().unwrap_or_else(|e| e.into_inner());
        if !g.0.empty {
            let next = SkipLog::create(&self.dir, &self.shard, g.0.n + 1)?;
            let full = std::mem::replace(&mut g.0, next);
            g.1.push((full.n, full.max_seq));
        }
        g.1.retain(|&(n, max)| {
            let gone = max <= done_seq;
            if gone {
                std::fs::remove_file(seg_path(&self.dir, &self.shard, n)).ok();
            }
            !gone
        });
        Ok(())
    }

    /// The shard is done: no segment is needed any more.
    pub fn remove(&self) {
        let g = self.cur.lock().unwrap_or_else(|e| e.into_inner());
        for (n, _) in &g.1 {
            std::fs::remove_file(seg_path(&self.dir, &self.shard, *n)).ok();
        }
        std::fs::remove_file(seg_path(&self.dir, &self.shard, g.0.n)).ok();
    }
}
