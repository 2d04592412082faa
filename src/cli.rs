//! Command-line definitions and dispatch: one subcommand, one module in `cmd/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd;

/// The end of `kvferry --help`: examples, the words every command shares, the exit codes.
const TOP_HELP: &str = "\
Examples:
  kvferry migrate --source redis://pika:9221 --target redis://kvrocks:6666 --dry-run   # what would happen
  kvferry migrate --source redis://pika:9221 --target redis://kvrocks:6666             # all of it, no files
  kvferry export --source redis://pika:9221 --out /backups/snap    # a server into a snapshot
  kvferry check /backups/snap                                      # after copying it anywhere
  kvferry import /backups/snap --target redis://kvrocks:6666       # a snapshot into a server
  kvferry verify /backups/snap --target redis://kvrocks:6666       # every key compared
  kvferry <COMMAND> --help                                         # each command's options and examples

The same words in every command:
  --source URL, --target URL  the server read, the server written: redis://[user:pass@]host:port, or rediss:// (TLS)
  --parallel N                shards at once (a shard is one source x database; check: blocks at once)
  --connections N             connections per shard to the server (migrate: to the target; its
                              --source-connections N: to the source)
  --max-ops-per-sec N         commands per second to each server, all connections together (a key
                              takes about three: TYPE, PTTL and a read; progress counts keys)
  --max-latency-ms MS         keep the PING latency the run adds to a server under MS, by slowing down
  --metrics-addr HOST:PORT    Prometheus metrics of the run at http://HOST:PORT/metrics
  --resume                    continue a killed or failed run from its checkpoints
  --progress MODE             on stderr: auto, bar, plain, json or none
  --report FILE               a JSON report of the run
  Sizes are in binary units (KiB, MiB, GiB); durations are written 500ms, 5s, 2m or 1h.

Exit codes, the same in every command:
  0    done: every key exported, written or identical; every file whole
  1    done, with problems listed by name: keys that failed or were lost (export, import,
       migrate), differences (verify, migrate), damage (check)
  2    error: the work could not be done or finished; the message says what, where and what to do
  130  interrupted (Ctrl-C, SIGTERM): the message says how to resume

The snapshot format is specified in format-spec/SPEC.md.";

#[derive(Parser, Debug)]
#[command(
    name = "kvferry",
    version,
    about = "Move the data of Redis-protocol databases (Pika, Kvrocks, Redis, Valkey) through snapshot files"
)]
#[command(after_help = TOP_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read every key of one or more servers (Pika, Redis, Kvrocks, Valkey) into a snapshot.
    #[command(
        after_help = "Examples:\n  kvferry export --source redis://10.0.0.5:9221 --out /backups/pika-2026-11-24\n  kvferry export --source redis://:PASSWORD@10.0.0.5:9221 --db 0,3 --out snap --report export.json\n  kvferry export --source redis://a:9221 --source redis://b:9221 --out snap --parallel 8   # one shard per source x db\n  kvferry export --source redis://10.0.0.5:9221 --out snap --resume   # continue a killed or failed run\n  kvferry export --source redis://10.0.0.5:9221 --out snap --progress json 2>progress.jsonl\n  KVFERRY_PW=... kvferry export --source redis://10.0.0.5:9221 --password-env KVFERRY_PW --out snap\n  kvferry export --source rediss://db.internal:6380 --tls-ca ca.pem --password-file /run/secrets/redis --out snap\n  kvferry export --source redis://10.0.0.5:9221 --out snap --max-latency-ms 5 --metrics-addr 0.0.0.0:9898   # in business hours, watched\n\nThe manifest is written last: a snapshot without MANIFEST.json is incomplete. Each shard is\ncheckpointed every 5 s; after a kill, a crash or an error, run the same command with --resume.\nExit code 0: every key exported. 1: some keys failed (listed by name). 2: error.\nAn export is not a point-in-time snapshot: for a consistent one, stop writes, export a replica,\nor export a second Pika started on a bgsave checkpoint."
    )]
    Export(Box<cmd::export::Args>),
    /// Write a snapshot into a server (Kvrocks, Redis, Valkey, Pika) with pipelined, parallel writes.
    #[command(
        after_help = "Examples:\n  kvferry import /backups/pika-2026-11-24 --target redis://10.0.0.9:6666 --dry-run\n  kvferry import /backups/snap --target redis://10.0.0.9:6666 --report import.json\n  kvferry import /backups/snap --target redis://kvrocks:6666 --namespace-map 0=env:NS0_TOKEN,1=env:NS1_TOKEN\n  kvferry import /backups/snap --target redis://redis:6379 --db-map 0=0,3=1 --conflict replace\n  kvferry import /backups/snap --target redis://10.0.0.9:6666 --resume   # continue a killed or failed run\n  kvferry import /backups/snap --target redis://kvrocks:6666 --connections 8   # a target with cores to spare\n  kvferry import /backups/snap --resp - | redis-cli --pipe\n\nBefore writing, every file of the snapshot is checked (sizes, counts, CRCs), the target is asked\nwhether it is empty (--conflict fail, the default), and databases must be mapped when there are\nseveral. Checkpoints\nare kept beside the snapshot (or in --state DIR) every 5 s; after a kill or an error, run the\nsame command with --resume.\nExit code 0: every key written (or expired). 1: some keys failed or were lost (listed by name). 2: error."
    )]
    Import(Box<cmd::import::Args>),
    /// Prove that a server holds what a snapshot holds: every key's type, value and expiry.
    #[command(
        after_help = "Examples:\n  kvferry verify /backups/snap --target redis://10.0.0.9:6666 --report diff.jsonl\n  kvferry verify /backups/snap --target redis://kvrocks:6666 --namespace-map 0=env:NS0_TOKEN --sample 0.01\n  kvferry verify /backups/snap --target redis://10.0.0.9:6666 --extra   # also keys the snapshot lacks\n  kvferry verify /backups/snap --source redis://10.0.0.5:9221          # drift of the source since the export\n  kvferry verify /backups/snap --source redis://pika:9221 --target redis://kvrocks:6666 --extra   # the target against the source now (after follow)\n\nUse the mapping options of the import. Keys that expired by now are expected to be absent. Big keys\nare compared part by part.\nExit code 0: identical. 1: differences (each named in the summary and --report). 2: could not verify."
    )]
    Verify(Box<cmd::verify::Args>),
    /// Export, import and verify as one pipeline: stream every key from source to target, with no files.
    #[command(
        after_help = "Examples:\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --dry-run\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --report migrate.json\n  kvferry migrate --source redis://pika:9221 --target redis://kvrocks:6666 --namespace-map 0=env:NS0_TOKEN,1=env:NS1_TOKEN\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --resume   # continue a killed or failed run\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --via /backups/snap   # keep a snapshot too\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --max-ops-per-sec 20000   # beside production traffic\n  kvferry migrate --source redis://10.0.0.5:9221 --target redis://10.0.0.9:6666 --max-latency-ms 5 --metrics-addr 127.0.0.1:9898\n\nEach source x database is a shard; records go from the source's reads to the target's writes\nwith the filters of export and the mapping and conflict rules of import. Checkpoints (every\n5 s, of what the target has acknowledged) are kept in --state DIR, by default under\n~/.local/state/kvferry; after a kill or an error, run the same command with --resume. At the\nend the source is read again and every key compared with the target (--no-verify skips it).\nExit code 0: every key written and verified. 1: some keys failed or differ (listed by name). 2: error."
    )]
    Migrate(Box<cmd::migrate::Args>),
    /// Catch up with a Pika's writes since an export, by its binlog, for a cut-over of seconds.
    #[command(
        after_help = "Examples:\n  kvferry export --source redis://pika:9221 --out /backups/snap\n  kvferry import /backups/snap --target redis://kvrocks:6666\n  kvferry follow /backups/snap --source redis://pika:9221 --target redis://kvrocks:6666   # keeps up until stopped\n  # stop the application's writes, then:\n  kvferry follow /backups/snap --source redis://pika:9221 --target redis://kvrocks:6666 --resume --until-caught-up\n  kvferry verify /backups/snap --source redis://pika:9221   # then switch the application\n\nIt connects to the Pika's replication port (the main port + 2000) as a replication client,\nfrom each database's binlog position at the export's start (in the manifest), and copies again\nevery key the writes touched (deleted on the target when the source no longer has it). Rounds\nare acknowledged to the Pika, and checkpointed in --state DIR, only once their keys are written.\nUse the import's mapping and --multi-type.\nExit code 0: caught up (--until-caught-up). 1: caught up, some keys failed (listed by name).\n2: error (the binlog purged since the export, an unreachable Pika...). 130: interrupted."
    )]
    Follow(Box<cmd::follow::Args>),
    /// Summarise a snapshot: shards, keys per type and db, sizes, expiry, biggest keys.
    #[command(
        after_help = "Examples:\n  kvferry inspect /backups/pika-2026-11-24\n  kvferry inspect /backups/pika-2026-11-24 --json | jq .totals\n\nReads only the manifest and each file's header and trailer, so it is instant on any size.\nRun `kvferry check` to verify the data itself."
    )]
    Inspect(cmd::inspect::Args),
    /// Print records as JSON lines (SPEC §10), optionally one shard, key or key prefix.
    #[command(
        after_help = "Examples:\n  kvferry cat /backups/snap | head\n  kvferry cat /backups/snap --shard src0-db0 --prefix 'user:'\n  kvferry cat /backups/snap --key 'session:42'\n  kvferry cat /backups/snap/src0-db0.0000.kvf\n\nBytes that are not UTF-8 print as {\"base64\":\"...\"}. A big key prints as several lines, one per part."
    )]
    Cat(cmd::cat::Args),
    /// Verify every checksum, record and count of a snapshot against its manifest.
    #[command(
        after_help = "Examples:\n  kvferry check /backups/snap          # after copying a snapshot across a network\n  kvferry check /backups/snap --json   # machine-readable report\n  kvferry check /backups/snap/src0-db0.0000.kvf\n\nExit code 0: every file is whole. 1: damage found; each problem names the file, block and offset.\n2: the check could not run (no such directory, unreadable)."
    )]
    Check(cmd::check::Args),
    /// Put a target back as it was before an import made with --undo DIR.
    #[command(
        after_help = "Examples:\n  kvferry import /backups/snap --target redis://10.0.0.9:6666 --conflict replace --undo /backups/undo-2026-12-02\n  kvferry undo /backups/undo-2026-12-02 --target redis://10.0.0.9:6666 --dry-run\n  kvferry undo /backups/undo-2026-12-02 --target redis://10.0.0.9:6666\n\nThe import recorded, before writing, the keys it would create and the values of those it\nwould replace (a snapshot in DIR/before). Undo deletes the first and writes the second back.\nWrites made to those keys by others since the import are overwritten.\nExit code 0: the target is as it was. 2: error (run it again: it is idempotent)."
    )]
    Undo(Box<cmd::undo::Args>),
    /// Print shell completions for kvferry (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  kvferry completions bash > ~/.local/share/bash-completion/completions/kvferry\n  kvferry completions zsh > \"${fpath[1]}/_kvferry\"\n  kvferry completions fish > ~/.config/fish/completions/kvferry.fish"
    )]
    Completions(cmd::docs::CompletionsArgs),
    /// Print the manual page (roff), or write one per command into a directory.
    #[command(
        after_help = "Examples:\n  kvferry man | man -l -\n  sudo kvferry man --out /usr/local/share/man/man1 && man kvferry-import"
    )]
    Man(cmd::docs::ManArgs),
}

/// Parses the command line and runs the command; returns the exit code.
pub fn run() -> anyhow::Result<i32> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return Ok(parse_error(&e)),
    };
    crate::progress::set_mode(match &cli.command {
        Command::Export(a) => a.progress,
        Command::Import(a) => a.progress,
        Command::Verify(a) => a.progress,
        Command::Migrate(a) => a.progress,
        Command::Follow(a) => a.progress,
        Command::Undo(a) => a.progress,
        _ => crate::progress::Mode::None,
    });
    match cli.command {
        Command::Export(a) => cmd::export::run(*a),
        Command::Import(a) => cmd::import::run(*a),
        Command::Verify(a) => cmd::verify::run(*a),
        Command::Migrate(a) => cmd::migrate::run(*a),
        Command::Follow(a) => cmd::follow::run(*a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Cat(a) => cmd::cat::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Undo(a) => cmd::undo::run(*a),
        Command::Completions(a) => cmd::docs::completions(a),
        Command::Man(a) => cmd::docs::man(a),
    }
}

/// Prints what the parser said, in kvferry's words for errors (`kvferry: error: ...`, like
/// every other error), and returns the exit code: 0 for --help and --version, else 2.
fn parse_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            2
        }
        _ => {
            eprint!("kvferry: {}", e.render());
            2
        }
    }
}

/// True when the error is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A path argument for snapshots.
pub type SnapshotPath = PathBuf;
