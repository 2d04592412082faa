//! An import's checkpoints (issue 4, "Faults and resume"): a directory (beside the snapshot, or
//! `--state DIR`) with the run's options in `import.json` and, per shard, `<shard>.json`: where
//! to resume (the done prefix of acknowledged blocks), the counts of the keys before it, and the
//! multi-type choices made. Written atomically every few seconds; kept after the import ends,
//! marked done, so that `--resume` of a finished import does nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::format::KeyType;
use crate::target::track::{Counts, Pos};
use crate::util::write_atomic;

pub const RUN_FILE: &str = "import.json";

/// What must not change between a run and its resumption.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub target: String,
    pub shards: Vec<String>,
    /// Each shard's destination, described (tokens left out).
    pub destinations: Vec<String>,
    pub conflict: String,
    pub multi_type: String,
    pub skip_corrupt_blocks: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RunState {
    pub kvferry: String,
    /// The snapshot's creation time, to tell snapshots apart.
    pub snapshot_created_unix_ms: u64,
    pub started_unix_ms: u64,
    pub options: Options,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ShardState {
    pub done: bool,
    pub resume: Pos,
    pub counts: Counts,
    /// Multi-type keys and the type that keeps the name.
    chosen: crate::target::track::ChosenTypes,
}

impl ShardState {
    pub fn new(done: bool, resume: Pos, counts: Counts, chosen: &BTreeMap<Vec<u8>, KeyType>) -> ShardState {
        ShardState {
            done,
            resume,
            counts,
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
    pub fn new(dir: PathBuf) -> StateDir {
        StateDir { dir }
    }

    pub fn read_run(&self) -> anyhow::Result<Option<RunState>> {
        let path = self.dir.join(RUN_FILE);
        match std::fs::read(&path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("{}: not an import state file", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }

    /// Starts a fresh run: creates the directory, removes old shard states, writes the run.
    pub fn start(&self, run: &RunState) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| {
            format!(
                "{}: cannot create the import state directory; give a writable one with --state DIR",
                self.dir.display()
            )
        })?;
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let skip_log = e.file_name().to_string_lossy().contains(".skip.");
            if skip_log || e.path().extension().is_some_and(|x| x == "json") {
                std::fs::remove_file(e.path()).ok();
            }
        }
        self.write(&self.dir.join(RUN_FILE), &serde_json::to_vec_pretty(run)?)
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        write_atomic(path, bytes).with_context(|| {
            format!(
                "{}: cannot write the import checkpoint (disk full or read-only? give another place with --state DIR)",
                path.display()
            )
        })
    }

    pub fn save_shard(&self, id: &str, st: &ShardState) -> anyhow::Result<()> {
        self.write(&self.dir.join(format!("{id}.json")), &serde_json::to_vec(st)?)
    }

    pub fn load_shard(&self, id: &str) -> anyhow::Result<Option<ShardState>> {
        let path = self.dir.join(format!("{id}.json"));
        match std::fs::read(&path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("{}: not an import checkpoint", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }
}

impl RunState {
    /// Refuses to resume with other options, naming the difference.
    pub fn check_same(&self, now: &Options, snapshot_created: u64, dir: &Path) -> anyhow::Result<()> {
        if self.snapshot_created_unix_ms != snapshot_created {
            bail!(
                "{}: this checkpoint belongs to another snapshot; remove the directory to start over",
                dir.display()
            );
        }
        let was = &self.options;
        let diffs: Vec<String> = [
            ("target", format!("{:?}", was.target), format!("{:?}", now.target)),
            ("shards", format!("{:?}", was.shards), format!("{:?}", now.shards)),
            (
                "mapping",
                format!("{:?}", was.destinations),
                format!("{:?}", now.destinations),
            ),
            ("--conflict", was.conflict.clone(), now.conflict.clone()),
            ("--multi-type", was.multi_type.clone(), now.multi_type.clone()),
            (
                "--skip-corrupt-blocks",
                was.skip_corrupt_blocks.to_string(),
                now.skip_corrupt_blocks.to_string(),
            ),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what} was {a}, now {b}"))
        .collect();
        if !diffs.is_empty() {
            bail!(
                "{}: --resume needs the options of the interrupted import: {}",
                dir.display(),
                diffs.join("; ")
            );
        }
        Ok(())
    }
}
