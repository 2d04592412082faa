//! `kvferry check`: verifies every checksum, record and count of a snapshot (SPEC §3-§6).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::format::check::{check, Progress};
use crate::util::human_bytes;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot directory, or one shard file (.kvf).
    pub snapshot: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Blocks checked at once, each on its own thread (default: all cores).
    #[arg(long, value_name = "N", alias = "threads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: Option<u32>,
}

pub fn run(a: Args) -> anyhow::Result<i32> {
    if !a.snapshot.exists() {
        anyhow::bail!("{}: no such file or directory", a.snapshot.display());
    }
    let threads = a
        .parallel
        .map(|n| n as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let started = Instant::now();
    let report = check(&a.snapshot, threads, &mut progress_printer(a.json));
    // A newer format is not damage: it cannot be checked here (exit 2), and copying the files
    // again would not help (issue 11).
    let newer = report
        .snapshot_problems
        .iter()
        .chain(report.files.iter().flat_map(|f| &f.problems))
        .any(|p| p.contains(NEWER));
    let mut out = std::io::stdout().lock();
    if a.json {
        // Through io::Error, so that a closed pipe (`| head -1`) is seen as one (exit 0).
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
        for p in &report.snapshot_problems {
            writeln!(out, "SNAPSHOT PROBLEM: {p}")?;
        }
        for f in report.files.iter().filter(|f| !f.ok()) {
            for p in &f.problems {
                let what = if p.contains(NEWER) { "NEWER FORMAT" } else { "DAMAGED" };
                writeln!(out, "{what}: {p}")?;
            }
            if !f.bad_blocks.is_empty() {
                writeln!(out, "  bad blocks in {}: {:?}", f.file.display(), f.bad_blocks)?;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let bad = report.files.iter().filter(|f| !f.ok()).count();
        let verdict = if report.ok() {
            "OK: every file is whole"
        } else if newer {
            "NOT CHECKED: the snapshot is of a newer format than this kvferry reads; use a newer kvferry"
        } else {
            "FAILED: the snapshot is damaged or incomplete; copy the damaged files again from their source"
        };
        writeln!(
            out,
            "{verdict} ({}, {bad} damaged, {} in {secs:.1} s, {}/s)",
            crate::util::count(report.files.len() as u64, "file"),
            human_bytes(bytes),
            human_bytes((bytes as f64 / secs.max(1e-9)) as u64)
        )?;
    }
    Ok(match (report.ok(), newer) {
        (true, _) => 0,
        (false, true) => 2,
        (false, false) => 1,
    })
}

/// What [`crate::format::FormatError::UnsupportedVersion`] and the manifest's version check say.
const NEWER: &str = "is not supported: this kvferry reads major version";

/// Progress on stderr: a bar with rate and ETA on a terminal; otherwise one line per file (none
/// with `--json`, whose consumer reads stdout).
fn progress_printer(json: bool) -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("checking {bytes}/{total_bytes} {wide_bar} {bytes_per_sec}, ETA {eta}")
            .expect("BUG: static template"),
    );
    move |p| match p {
        Progress::Total(n) => bar.set_length(n),
        Progress::Bytes(n) => bar.inc(n),
        Progress::File(f) => {
            let verdict = if f.ok() {
                "ok".to_string()
            } else {
                format!("DAMAGED ({} problems)", f.problems.len())
            };
            let line = format!(
                "checked {}: {verdict}, {} blocks, {}",
                f.file.display(),
                f.blocks,
                human_bytes(f.bytes)
            );
            if tty {
                bar.println(line);
            } else if !json {
                eprintln!("{line}");
            }
        }
    }
}
