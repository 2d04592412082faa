//! What an unfinished export leaves beside its shard files so that `--resume` can continue it
//! after a kill -9: the run's options and shard list (`kvferry-export.json`, written before any
//! shard starts), and per shard its last checkpoint (`<shard>.state.json`): how far its files are
//! durably written, where the enumeration stood then, and the report up to there. All are
//! written atomically; they are removed once the manifest is written.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::format::snapshot::{BinlogPosition, ShardEntry, SinkCheckpoint};
use crate::source::{DbReport, Position};

/// The run state file's name.
pub const RUN_STATE: &str = "kvferry-export.json";

/// What must be the same for a run to continue another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Options {
    /// Sources as given, without credentials.
    pub sources: Vec<String>,
    pub db: String,
    pub pattern: Option<String>,
    pub types: Vec<String>,
    pub exclude_prefixes: Vec<String>,
    pub skip_unknown_types: bool,
    /// `--sample` as given, and the rate it came to when the export started (kept, so that a
    /// resume samples the same keys).
    #[serde(default)]
    pub sample: Option<String>,
    #[serde(default)]
    pub sample_rate: Option<f64>,
}

/// One shard of the run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlannedShard {
    pub id: String,
    /// Index into the sources.
    pub source: usize,
    pub db: u32,
    /// A Pika source's binlog position for this database when the export began (read before
    /// any shard started, and kept across resumes): the manifest's `binlog_start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_start: Option<BinlogPosition>,
}

/// `kvferry-export.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct RunState {
    pub kvferry: String,
    pub created_unix_ms: u64,
    pub options: Options,
    pub shards: Vec<PlannedShard>,
}

/// `<shard>.state.json`: the shard's last checkpoint, or its end.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ShardState {
    pub sink: SinkCheckpoint,
    pub position: Position,
    pub report: DbReport,
    /// Seconds spent on the shard before the checkpoint, over all runs.
    pub seconds: f64,
    /// Set once the shard is finished: its manifest entry, and the server software it came from.
    pub done: Option<ShardEntry>,
    #[serde(default)]
    pub server: String,
}

pub fn run_state_path(dir: &Path) -> PathBuf {
    dir.join(RUN_STATE)
}

pub fn shard_state_path(dir: &Path, shard: &str) -> PathBuf {
    dir.join(format!("{shard}.state.json"))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(v).expect("BUG: state always serialises");
    text.push(b'\n');
    crate::util::write_atomic(path, &text).with_context(|| format!("{}: cannot write", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .with_context(|| format!("{}: not a kvferry export state file; it is damaged", path.display()))
}

impl RunState {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_json(&run_state_path(dir), self)
    }

    pub fn read(dir: &Path) -> anyhow::Result<Option<RunState>> {
        read_json(&run_state_path(dir))
    }

    /// Refuses to continue a run that was started with other options.
    pub fn check_same(&self, now: &Options, dir: &Path) -> anyhow::Result<()> {
        let (was, is) = (&self.options, now);
        let mut diffs = Vec::new();
        macro_rules! field {
            ($f:ident, $flag:expr) => {
                if was.$f != is.$f {
                    diffs.push(format!("{} was {:?}, now {:?}", $flag, was.$f, is.$f));
                }
            };
        }
        field!(sources, "--source");
        field!(db, "--db");
        field!(pattern, "--match");
        field!(types, "--type");
        field!(exclude_prefixes, "--exclude-prefix");
        field!(skip_unknown_types, "--skip-unknown-types");
        field!(sample, "--sample");
        if !diffs.is_empty() {
            bail!(
                "{}: the unfinished export there was started with other options ({}); resume it with the same options, or export into another directory",
                dir.display(),
                diffs.join("; ")
            );
        }
        Ok(())
    }
}

impl ShardState {
    pub fn write(&self, dir: &Path, shard: &str) -> anyhow::Result<()> {
        write_json(&shard_state_path(dir, shard), self)
    }

    pub fn read(dir: &Path, shard: &str) -> anyhow::Result<Option<ShardState>> {
        read_json(&shard_state_path(dir, shard))
    }
}

/// Removes the state files of a finished export.
pub fn remove(dir: &Path, run: &RunState) {
    for s in &run.shards {
        let _ = std::fs::remove_file(shard_state_path(dir, &s.id));
    }
    let _ = std::fs::remove_file(run_state_path(dir));
}
