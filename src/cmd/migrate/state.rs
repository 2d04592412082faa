//! A migration's checkpoints: a directory (`--state DIR`, by default one per source and target
//! under the user's state directory) with the run's options in `migrate.json` and, per shard,
//! `<shard>.json`: where the source's listing stands (every key listed before it is written and
//! acknowledged by the target), the source-side report and the target-side counts of those
//! keys, and the multi-type choices made. Written atomically; kept after the end, marked done,
//! so that `--resume` of a finished migration writes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::format::KeyType;
use crate::source::{DbReport, Position};
use crate::target::track::Counts;
use crate::util::write_atomic;

pub const RUN_FILE: &str = "migrate.json";

/// What must not change between a run and its resumption.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub sources: Vec<String>,
    pub target: String,
    pub shards: Vec<String>,
    pub destinations: Vec<String>,
    pub conflict: String,
    pub multi_type: String,
    pub filters: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RunState {
    pub kvferry: String,
    pub started_unix_ms: u64,
    pub options: Options,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ShardState {
    pub done: bool,
    pub position: Position,
    pub read: DbReport,
    pub counts: Counts,
    pub seconds: f64,
    /// Multi-type keys and the type that keeps the name.
    chosen: crate::target::track::ChosenTypes,
}

impl ShardState {
    pub fn new(
        done: bool,
        position: Position,
        read: DbReport,
        counts: Counts,
        seconds: f64,
        chosen: &BTreeMap<Vec<u8>, KeyType>,
    ) -> ShardState {
        ShardState {
            done,
            position,
            read,
            counts,
            seconds,
            chosen: crate::target::track::ChosenTypes::encode(chosen),
        }
    }

    pub fn chosen(&self) -> anyhow::Result<BTreeMap<Vec<u8>, KeyType>> {
        self.chosen.decode()
    }
}

pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    fn shard_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn read_run(&self) -> anyhow::Result<Option<RunState>> {
        read_json(&self.dir.join(RUN_FILE))
    }

    pub fn start(&self, run: &RunState) -> anyhow::Result<()> {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    std::fs::remove_file(e.path()).with_context(|| format!("{}: cannot remove", e.path().display()))?;
                }
            }
        }
        write_json(&self.dir.join(RUN_FILE), run)
    }

    pub fn load_shard(&self, id: &str) -> anyhow::Result<Option<ShardState>> {
        read_json(&self.shard_path(id))
    }

    pub fn save_shard(&self, id: &str, s: &ShardState) -> anyhow::Result<()> {
        write_json(&self.shard_path(id), s)
    }

    pub fn remove_shard(&self, id: &str) -> anyhow::Result<()> {
        match std::fs::remove_file(self.shard_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(anyhow::Error::new(e).context(format!("{}: cannot remove", self.shard_path(id).display())))
            }
            _ => Ok(()),
        }
    }
}

impl RunState {
    pub fn check_same(&self, now: &Options, dir: &Path) -> anyhow::Result<()> {
        if &self.options != now {
            bail!(
                "{}: the migration recorded there ran with other options ({:?}); give the same options to resume it, or remove the directory to start over",
                dir.display(),
                self.options
            );
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{}: damaged; remove it to start over", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{}: cannot read", path.display()))),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(v).expect("BUG: state serialises");
    write_atomic(path, &bytes).with_context(|| format!("{}: cannot write the checkpoint", path.display()))
}
