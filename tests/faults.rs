//! The fault suite (issue 11), bounded for CI: real redis-server processes on loopback, every
//! loop bounded in count and time, every random choice from a printed seed so that a failure
//! can be replayed (`KVFERRY_FAULT_SEED=N`). `KVFERRY_FAULT_POINTS` sets how many kill points
//! each kill test tries (default 20). docs/reliability.md has the matrix and what it showed.
//!
//! - kill -9 of export, import and migrate at seeded moments, each followed by `--resume`: the result
//!   equals the source (no key lost, none twice, no list element twice), and the manifest counts
//!   each key once;
//! - seeded single-byte flips and truncations of snapshot files: `check` and `import` refuse
//!   each one (exit 1 / 2, naming the file), never panic (exit 101), never import silently.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use serde_json::Value as J;
use support::compare::assert_same;
use support::{kvferry, text, Kind, Server};

/// xorshift64*: enough randomness for fault points, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("KVFERRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201)
}

fn points() -> u64 {
    std::env::var("KVFERRY_FAULT_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// Strings, hashes, lists (whose pushes must never run twice), sets, zsets and streams, some
/// big enough to be read and written in several parts (a list of 120,000 elements takes two
/// RPUSH commands), in two databases.
fn populate(s: &Server) {
    let mut c = s.conn();
    for db in [0, 2] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        let kv: Vec<(String, String)> = (0..300).map(|i| (format!("s{i}"), format!("v{i}"))).collect();
        let _: () = c.mset(&kv).unwrap();
        for i in 0..30 {
            let items: Vec<String> = (0..(i * 40 + 1)).map(|j| format!("e{j}")).collect();
            let _: () = c.rpush(format!("l{i}"), &items).unwrap();
            let pairs: Vec<(String, String)> = (0..(i * 10 + 1))
                .map(|j| (format!("f{j}"), "x".repeat(j % 50)))
                .collect();
            let _: () = c.hset_multiple(format!("h{i}"), &pairs).unwrap();
            let _: () = c.sadd(format!("set{i}"), &items).unwrap();
            let scored: Vec<(f64, String)> = items
                .iter()
                .enumerate()
                .map(|(n, m)| (n as f64 / 3.0, m.clone()))
                .collect();
            let _: () = c.zadd_multiple(format!("z{i}"), &scored).unwrap();
            let _: String = redis::cmd("XADD")
                .arg(format!("x{i}"))
                .arg("*")
                .arg("n")
                .arg(i)
                .query(&mut c)
                .unwrap();
        }
        let _: () = c
            .rpush("biglist", (0..120_000).map(|j| j.to_string()).collect::<Vec<_>>())
            .unwrap();
    }
}

fn manifest_keys(snap: &Path) -> u64 {
    let m: J = serde_json::from_slice(&std::fs::read(snap.join("MANIFEST.json")).unwrap()).unwrap();
    m["totals"]["keys"].as_u64().unwrap()
}

/// How long a whole run of `args` takes (it must succeed).
fn run_time(args: &[String]) -> Duration {
    let started = Instant::now();
    let o = kvferry(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    started.elapsed()
}

/// Runs `args` and kills it with SIGKILL after `after`; `Some(how long it took)` when it ended
/// by itself before that.
fn kill_after(args: &[String], after: Duration) -> Option<Duration> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5)); // the fault's moment, not synchronisation
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// The seeded kill moments: each run is killed at a seeded fraction of a whole run's time, as
/// first measured and lowered whenever a run ends before its moment (a machine whose load drops
/// runs faster), until `points()` runs were killed mid-way; `attempt` runs, kills and checks one.
fn kill_at_seeded_points(
    rng: &mut Rng,
    whole: Duration,
    points: u64,
    mut attempt: impl FnMut(Duration) -> Option<Duration>,
) {
    let mut whole = whole;
    let mut killed = 0;
    let mut runs = 0;
    while killed < points {
        runs += 1;
        assert!(
            runs <= 3 * points,
            "the kill points land during the run: {killed} of {runs} did"
        );
        let after = whole.mul_f64(0.05 + 0.9 * (rng.below(1000) as f64 / 1000.0));
        match attempt(after) {
            None => killed += 1,
            Some(took) => whole = whole.min(took),
        }
    }
    eprintln!("{killed} of {runs} runs killed mid-way (seed {})", seed());
}

/// kill -9 of an export at seeded moments, then `--resume`: each snapshot holds exactly the
/// source (verify against it finds nothing) and the manifest counts each key once.
#[test]
fn export_killed_at_seeded_points_resumes_exactly() {
    let s = Server::start(Kind::Redis, &[]);
    populate(&s);
    let total = s.key_count(0) + s.key_count(2);
    let mut rng = Rng::new(seed());
    let dir = tempfile::tempdir().unwrap();
    let mut point = 0;
    let args = |point: u32| -> (Vec<String>, PathBuf) {
        let snap = dir.path().join(format!("snap{point}"));
        let mut args: Vec<String> = ["export", "--source", &s.url(), "--db", "0,2", "--progress", "none"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend([
            "--checkpoint-secs".into(),
            "0.2".into(),
            "--out".into(),
            snap.to_string_lossy().into(),
        ]);
        (args, snap)
    };
    let slow = |args: &[String]| [args, &["--max-ops-per-sec".into(), "20000".into()]].concat();
    let whole = run_time(&slow(&args(0).0));
    kill_at_seeded_points(&mut rng, whole, points(), |after| {
        point += 1;
        let (args, snap) = args(point);
        let ended = kill_after(&slow(&args), after);
        let o = kvferry(
            &[&args[..], &["--resume".to_string()]]
                .concat()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let why = format!("seed {} point {point} (killed after {after:?})", seed());
        assert_eq!(o.status.code(), Some(0), "{why}: {}", text(&o));
        assert_eq!(manifest_keys(&snap), total, "{why}: each key once in the manifest");
        let snap_s = snap.to_string_lossy();
        let o = kvferry(&["verify", &snap_s, "--source", &s.url(), "--progress", "none"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{why}: the snapshot differs from the source: {}",
            text(&o)
        );
        ended
    });
}

/// kill -9 of an import at seeded moments, then `--resume`: the target equals the source, with no
/// list element pushed twice and no key lost.
#[test]
fn import_killed_at_seeded_points_resumes_exactly() {
    let s = Server::start(Kind::Redis, &[]);
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap").to_string_lossy().into_owned();
    let o = kvferry(&[
        "export",
        "--source",
        &s.url(),
        "--db",
        "0,2",
        "--out",
        &snap,
        "--progress",
        "none",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut rng = Rng::new(seed() ^ 0xFACE);
    let args = |t: &Server, point: u32| -> Vec<String> {
        let state = dir.path().join(format!("state{point}")).to_string_lossy().into_owned();
        [
            "import",
            &snap,
            "--target",
            &t.url(),
            "--db-map",
            "0=0,2=2",
            "--state",
            &state,
            "--progress",
            "none",
            "--checkpoint-secs",
            "0.1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let slow = |args: &[String]| {
        [
            args,
            &[
                "--max-ops-per-sec".into(),
                "3000".into(),
                "--pipeline".into(),
                "20".into(),
            ],
        ]
        .concat()
    };
    let whole = run_time(&slow(&args(&Server::start(Kind::Redis, &[]), 0)));
    let mut point = 0;
    kill_at_seeded_points(&mut rng, whole, points(), |after| {
        point += 1;
        let t = Server::start(Kind::Redis, &[]);
        let args = args(&t, point);
        let ended = kill_after(&slow(&args), after);
        let o = kvferry(
            &[&args[..], &["--resume".to_string()]]
                .concat()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let why = format!("seed {} point {point} (killed after {after:?})", seed());
        assert_eq!(o.status.code(), Some(0), "{why}: {}", text(&o));
        assert_same(&s, 0, &t, 0);
        assert_same(&s, 2, &t, 2);
        ended
    });
}

/// kill -9 of a migration at seeded moments, then `--resume`: the target equals the source,
/// with no list element pushed twice and no key lost, and the resumed run's verify finds
/// nothing.
#[test]
fn migrate_killed_at_seeded_points_resumes_exactly() {
    let s = Server::start(Kind::Redis, &[]);
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed() ^ 0x316);
    let args = |t: &Server, point: u32| -> Vec<String> {
        let state = dir.path().join(format!("state{point}")).to_string_lossy().into_owned();
        [
            "migrate",
            "--source",
            &s.url(),
            "--target",
            &t.url(),
            "--db",
            "0,2",
            "--db-map",
            "0=0,2=2",
            "--state",
            &state,
            "--progress",
            "none",
            "--checkpoint-secs",
            "0.1",
            "--max-ops-per-sec",
            "3000",
            "--pipeline",
            "20",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let no_verify = |args: &[String]| [args, &["--no-verify".to_string()]].concat();
    let whole = run_time(&no_verify(&args(&Server::start(Kind::Redis, &[]), 0)));
    let mut point = 0;
    // Half the points of export and import: a migration is an export and an import in one,
    // whose kill points those tests cover apart.
    kill_at_seeded_points(&mut rng, whole, points().div_ceil(2), |after| {
        point += 1;
        let t = Server::start(Kind::Redis, &[]);
        let args = args(&t, point);
        let ended = kill_after(&no_verify(&args), after);
        let o = kvferry(
            &[&args[..], &["--resume".to_string()]]
                .concat()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let why = format!("seed {} point {point} (killed after {after:?})", seed());
        assert_eq!(o.status.code(), Some(0), "{why}: {}", text(&o));
        assert!(text(&o).contains(", 0 differences"), "{why}: {}", text(&o));
        assert_same(&s, 0, &t, 0);
        assert_same(&s, 2, &t, 2);
        ended
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Hundreds of seeded single-byte flips and truncations of a snapshot's files: `check` says
/// damaged (exit 1) naming the file, `import` refuses before writing (exit 2), and neither
/// panics. A flip is never silently imported.
#[test]
fn flipped_and_truncated_files_are_always_refused() {
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/good/all-types");
    let files: Vec<PathBuf> = std::fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kvf"))
        .collect();
    let mut rng = Rng::new(seed() ^ 0xB17);
    let dir = tempfile::tempdir().unwrap();
    let cases = 10 * points();
    for case in 0..cases {
        let snap = dir.path().join(format!("c{case}"));
        copy_dir(&good, &snap);
        let file = &files[rng.below(files.len() as u64) as usize];
        let target = snap.join(file.file_name().unwrap());
        let mut bytes = std::fs::read(&target).unwrap();
        let what = if case % 4 == 3 {
            let cut = rng.below(bytes.len() as u64) as usize;
            bytes.truncate(cut);
            format!("truncated at {cut}")
        } else {
            let at = rng.below(bytes.len() as u64) as usize;
            let bit = 1u8 << rng.below(8);
            bytes[at] ^= bit;
            format!("bit {bit:#x} flipped at {at}")
        };
        std::fs::write(&target, &bytes).unwrap();
        let why = format!("seed {} case {case}: {} {what}", seed(), target.display());
        let snap_s = snap.to_string_lossy();
        let o = kvferry(&["check", &snap_s]);
        assert_eq!(o.status.code(), Some(1), "{why}: check: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(&*file.file_name().unwrap().to_string_lossy()),
            "{why}"
        );
        let o = kvferry(&[
            "import",
            &snap_s,
            "--resp",
            "-",
            "--db-map",
            "0=0,3=3",
            "--multi-type",
            "first",
        ]);
        assert_eq!(o.status.code(), Some(2), "{why}: import: {}", text(&o));
        assert!(o.stdout.is_empty(), "{why}: nothing is written before the check");
    }
}

/// Connections cut mid-pipeline and mid-reply (a proxy that cuts each one after so many bytes
/// in either direction): export and import reconnect and redo exactly what was not done, and the
/// results equal the source; under `--max-ops-per-sec` the rate still holds.
#[test]
fn cut_connections_lose_nothing() {
    let s = Server::start(Kind::Redis, &[]);
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    // A key cut in the middle of its own reads goes on where it was, on a new connection.
    let snap = export_through(&s, support::Fault::Cut(2 << 20), &[], &dir);
    let t = Server::start(Kind::Redis, &[]);
    // One connection, cut every 1.5 MiB: more than the biggest command (an RPUSH of 100,000
    // elements, 1.1 MiB), less than a shard.
    let target = support::Proxy::start(t.port, support::Fault::Cut(1536 << 10));
    let via = format!("redis://127.0.0.1:{}", target.port);
    let started = Instant::now();
    let o = kvferry(&[
        "import",
        &snap,
        "--target",
        &via,
        "--db-map",
        "0=0,2=2",
        "--progress",
        "none",
        "--max-ops-per-sec",
        "4000",
        "--connections",
        "1",
        "--report",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    assert_same(&s, 2, &t, 2);
    assert!(
        reconnects(&snap_report(&dir, "r.json")) > 0,
        "the proxy cut connections"
    );
    // Every command counts against the limit, resent ones too: at least the snapshot's keys.
    let keys = manifest_keys(Path::new(&snap)) as f64;
    assert!(
        took >= keys / 4000.0,
        "{keys} keys at 4000 commands/s took only {took:.2}s"
    );
    // verify reads the keys back through the same cuts, in the middle of its replies too:
    // every key compared once, none found different.
    let before = target.cuts();
    verify_through(&snap, &via, &["--connections", "1"]);
    assert!(target.cuts() > before, "the proxy cut verify's connections");
}

/// `verify` of `snap` (dbs 0 and 2) against `via`: exit 0, and every key of the snapshot
/// compared.
fn verify_through(snap: &str, via: &str, extra: &[&str]) {
    let o = kvferry(
        &[
            &[
                "verify",
                snap,
                "--target",
                via,
                "--db-map",
                "0=0,2=2",
                "--progress",
                "none",
            ][..],
            extra,
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let keys = manifest_keys(Path::new(snap));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(" {keys} keys compared")),
        "{keys} keys: {}",
        text(&o)
    );
}

/// Exports dbs 0 and 2 of `s` through a proxy injecting `fault` into `dir/snap`: the export
/// succeeds after reconnecting, each key is in the snapshot once, and verify finds it equal to
/// the source. Returns the snapshot's path.
fn export_through(s: &Server, fault: support::Fault, extra: &[&str], dir: &tempfile::TempDir) -> String {
    let snap = dir.path().join("snap").to_string_lossy().into_owned();
    let source = support::Proxy::start(s.port, fault);
    let via = format!("redis://127.0.0.1:{}", source.port);
    let report = dir.path().join("e.json").to_string_lossy().into_owned();
    let args = [
        "export",
        "--source",
        &via,
        "--db",
        "0,2",
        "--out",
        &snap,
        "--progress",
        "none",
        "--report",
        &report,
    ];
    let o = kvferry(&[&args[..], extra].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        reconnects(&snap_report(dir, "e.json")) > 0,
        "the proxy's fault made it reconnect"
    );
    let total = s.key_count(0) + s.key_count(2);
    assert_eq!(manifest_keys(Path::new(&snap)), total, "each key once");
    let r = kvferry(&["verify", &snap, "--source", &s.url(), "--progress", "none"]);
    assert_eq!(r.status.code(), Some(0), "the snapshot equals the source: {}", text(&r));
    snap
}

fn snap_report(dir: &tempfile::TempDir, name: &str) -> J {
    serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
}

/// Reconnections, over the shards of an export's or import's report.
fn reconnects(r: &J) -> u64 {
    let n = r["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("a report with shards: {r}"))
        .iter()
        .map(|s| s["reconnects"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("reconnections: {n}");
    n
}

/// Replies held back past the read timeout (a slow network or a busy server): the command is
/// sent again on a new connection, and export and import lose nothing and write nothing twice.
#[test]
fn delayed_replies_lose_nothing() {
    let s = Server::start(Kind::Redis, &[]);
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let slow = Duration::from_millis(1500);
    let snap = export_through(&s, support::Fault::Delay(40, slow), &["--read-timeout", "1"], &dir);
    let t = Server::start(Kind::Redis, &[]);
    // Replies to writes are short: a few pieces per connection (and fewer than 16 for the
    // checks before writing, which stop the import when they get no reply).
    let target = support::Proxy::start(t.port, support::Fault::Delay(16, slow));
    let via = format!("redis://127.0.0.1:{}", target.port);
    let o = kvferry(&[
        "import",
        &snap,
        "--target",
        &via,
        "--db-map",
        "0=0,2=2",
        "--read-timeout",
        "1",
        "--progress",
        "none",
        "--report",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(reconnects(&snap_report(&dir, "r.json")) > 0, "replies came too late");
    assert_same(&s, 0, &t, 0);
    assert_same(&s, 2, &t, 2);
    // verify's replies, bigger, come late more often: it reconnects and reads again.
    verify_through(&snap, &via, &["--read-timeout", "1"]);
}

/// A small filesystem of its own (tmpfs), unmounted at the end; None where this process may
/// not mount (not root).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }

    fn grow(&self, size: &str) {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(s.success(), "remount {size}");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// An export onto a filesystem that fills up, with several readers and shards: one clear line
/// naming the file, exit 2, no MANIFEST.json, never a panic; once there is room, `--resume`
/// finishes it with each key once and the snapshot equal to the source.
#[test]
fn a_full_disk_stops_the_export_and_a_resume_finishes_it() {
    let Some(fs) = SmallFs::mount("3m") else {
        eprintln!("did not run: cannot mount a small tmpfs here (needs root)");
        return;
    };
    let s = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    let mut rng = Rng::new(seed());
    for db in [0, 1, 2] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        for i in 0..150 {
            // Values that do not compress: 3 databases of 1.5 MB each on 3 MB.
            let v: Vec<u8> = (0..10_000).map(|_| rng.next() as u8).collect();
            let _: () = c.set(format!("k{i}"), v).unwrap();
        }
    }
    let snap = fs.dir.path().join("snap");
    let args = [
        "export",
        "--source",
        &s.url(),
        "--db",
        "0,1,2",
        "--out",
        snap.to_str().unwrap(),
        "--connections",
        "3",
        "--progress",
        "none",
    ];
    let o = kvferry(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the disk is full") && err.contains(&snap.display().to_string()) && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked") && !err.contains("BUG"), "{err}");
    assert!(!snap.join("MANIFEST.json").exists());
    // Still full: the resume says the same.
    let o = kvferry(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the disk is full"),
        "{}",
        text(&o)
    );
    fs.grow("64m");
    let o = kvferry(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(manifest_keys(&snap), 450, "each key once");
    let v = kvferry(&[
        "verify",
        snap.to_str().unwrap(),
        "--source",
        &s.url(),
        "--progress",
        "none",
    ]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
}

/// A host that accepts connections and never answers (a hung server, a black-holing firewall):
/// one line naming it, exit 2, within a few read timeouts, for export and import alike.
#[test]
fn a_silent_host_is_named_in_one_line() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Holds every connection open, reading nothing and answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    let url = format!("redis://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let good = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/good/all-types");
    for args in [
        vec![
            "export",
            "--source",
            &url,
            "--out",
            dir.path().join("s").to_str().unwrap(),
        ],
        vec![
            "import",
            good.to_str().unwrap(),
            "--target",
            &url,
            "--multi-type",
            "first",
        ],
    ] {
        let started = Instant::now();
        let o = kvferry(&[&args[..], &["--read-timeout", "1", "--progress", "none"]].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("kvferry: error")).collect();
        assert_eq!(errors.len(), 1, "one line: {err}");
        assert!(
            errors[0].contains(&url) && errors[0].contains("no answer in time"),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(30), "{args:?} gave up in time");
    }
}
