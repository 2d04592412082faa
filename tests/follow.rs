//! `kvferry follow`: after an export and its import, the writes the source took are caught up
//! on the target, key by key.
//!
//! - With Redis standing in (CI): the binlog items, in the forms Pika logs them (`pksetexat`,
//!   `expireat`, one `del` per key...), come from a file (`--binlog-file`), and the keys they
//!   touched are copied again from the Redis source: the decoding, the command table, the copy,
//!   the deletes, the checkpoint and `--resume` are all exercised.
//! - With a real Pika (`KVFERRY_TEST_PIKA`): the binlog comes from Pika's replication port, with
//!   writes of every type during the export and during the follow; a kill -9 of follow, a
//!   restart of Pika, and a binlog purged past the snapshot are tested there. Without Pika those
//!   tests print that they did not run.

mod support;

use std::path::Path;

use redis::Commands;
use serde_json::Value as J;
use support::compare::assert_same;
use support::{kvferry, text, Kind, Server};

fn pika() -> bool {
    std::env::var_os("KVFERRY_TEST_PIKA").is_some()
}

/// A binlog item as Pika's master sends it: the 34-byte header, then the command as RESP.
fn item(args: &[&[u8]]) -> Vec<u8> {
    let mut content = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        content.extend(format!("${}\r\n", a.len()).bytes());
        content.extend_from_slice(a);
        content.extend_from_slice(b"\r\n");
    }
    let mut b = Vec::new();
    b.extend(1u16.to_le_bytes());
    b.extend(1_764_000_000u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(7u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((content.len() as u32).to_le_bytes());
    b.extend(content);
    b
}

/// Appends items of db 0 to a `--binlog-file`, each ending at `offset` 100, 200, ... after `from`.
fn append_items(path: &Path, from: u64, items: &[Vec<u8>]) -> u64 {
    let mut b = std::fs::read(path).unwrap_or_default();
    let mut end = from;
    for it in items {
        end += 100;
        b.extend(0u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(end.to_le_bytes());
        b.extend((it.len() as u32).to_le_bytes());
        b.extend(it);
    }
    std::fs::write(path, b).unwrap();
    end
}

fn export(s: &Server, out: &Path) {
    let o = kvferry(&[
        "export",
        "--source",
        &s.url(),
        "--db",
        "0",
        "--progress",
        "none",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn import(out: &Path, t: &Server, extra: &[&str]) {
    let args = [
        "import",
        out.to_str().unwrap(),
        "--target",
        &t.url(),
        "--progress",
        "none",
    ];
    let o = kvferry(&[&args[..], extra].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// On Redis there is no binlog: the test gives the snapshot the position a Pika export records.
fn give_binlog_start(out: &Path) {
    let path = out.join("MANIFEST.json");
    let mut m: J = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["shards"][0]["binlog_start"] = serde_json::json!({"filenum": 0, "offset": 0});
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Exports `s` into `dir/snap` with the position a Pika export records, and imports it into `t`.
fn exported_and_imported(s: &Server, t: &Server, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("snap");
    export(s, &out);
    give_binlog_start(&out);
    import(&out, t, &[]);
    out
}

/// The follow command's arguments, from `s` to `t` with its checkpoint in `state`, and `extra`.
fn follow_args(out: &Path, s: &Server, t: &Server, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "follow".into(),
        out.to_string_lossy().into_owned(),
        "--source".into(),
        s.url(),
        "--target".into(),
        t.url(),
        "--state".into(),
        state.to_string_lossy().into_owned(),
        "--progress".into(),
        "none".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `follow --until-caught-up` of the items in `dir/binlog`, its checkpoint in `dir/st` and its
/// report in `dir/report.json` (read back by [`report`]).
fn caught_up_from_file(out: &Path, s: &Server, t: &Server, dir: &Path) -> Vec<String> {
    let (binlog, report) = (dir.join("binlog"), dir.join("report.json"));
    let extra = [
        "--binlog-file",
        binlog.to_str().unwrap(),
        "--until-caught-up",
        "--report",
        report.to_str().unwrap(),
    ];
    follow_args(out, s, t, &dir.join("st"), &extra)
}

/// The report [`caught_up_from_file`] had follow write.
fn report(dir: &Path) -> J {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// Runs kvferry with `args`.
fn run(args: &[String]) -> std::process::Output {
    kvferry(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn writes_after_the_export_are_copied_key_by_key_from_a_binlog_file() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    let _: () = c.set("counter", 10).unwrap();
    let _: () = c.rpush("list", &["a", "b"]).unwrap();
    let _: () = c.hset("h", "f", "1").unwrap();
    let _: () = c.set("doomed", "x").unwrap();
    let _: () = c.set("retyped", "a string").unwrap();
    let _: () = c.set("untouched", "same").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    // Writes after the export, and the items Pika would log for them.
    let _: i64 = c.incr("counter", 5).unwrap();
    let _: () = c.rpush("list", "c").unwrap();
    let _: () = c.hset("h", "g", "2").unwrap();
    let _: () = c.del("doomed").unwrap();
    let _: () = c.del("retyped").unwrap();
    let _: () = c.sadd("retyped", &["now", "a", "set"]).unwrap();
    let _: () = c.set_ex("new", "with a ttl", 3600).unwrap();
    let _: () = c.zadd("z", "m", 1.5).unwrap();
    let binlog = dir.path().join("binlog");
    let end = append_items(
        &binlog,
        0,
        &[
            item(&[b"pksetexat", b"counter", b"0", b"15"]),
            item(&[b"RPUSH", b"list", b"c"]),
            item(&[b"hset", b"h", b"g", b"2"]),
            item(&[b"del", b"doomed"]),
            item(&[b"del", b"retyped"]),
            item(&[b"sadd", b"retyped", b"now", b"a", b"set"]),
            item(&[b"pksetexat", b"new", b"1764003600", b"with a ttl"]),
            item(&[b"zadd", b"z", b"1.5", b"m"]),
            item(&[b"sunion", b"h", b"list"]),
        ],
    );
    let state = dir.path().join("state");
    let report = dir.path().join("follow.json");
    let (su, tu) = (s.url(), t.url());
    let follow = |extra: &[&str]| {
        let binlog_file = ["--binlog-file", binlog.to_str().unwrap(), "--until-caught-up"];
        let report_file = ["--report", report.to_str().unwrap()];
        run(&follow_args(
            &out,
            &s,
            &t,
            &state,
            &[&binlog_file[..], &report_file, extra].concat(),
        ))
    };
    let o = follow(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("9 binlog items applied"), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let r: J = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["caught_up"], true);
    assert_eq!(r["deleted"], 1, "doomed: {r}");
    assert_eq!(r["copied"], 6, "the 7 keys touched but doomed: {r}");
    assert_eq!(r["positions"]["0"], serde_json::json!({"filenum": 0, "offset": end}));
    // The checkpoint is there: a second run without --resume refuses; with it, only the items
    // after the checkpoint are applied.
    let o = follow(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    let _: i64 = c.lpush("list", "first").unwrap();
    append_items(&binlog, end, &[item(&[b"lpush", b"list", b"first"])]);
    let o = follow(&["--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 binlog item applied"), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let untouched: String = t.conn().get("untouched").unwrap();
    assert_eq!(untouched, "same");
    // verify --source --target compares the target with the source as it is now.
    let verify = || {
        kvferry(&[
            "verify",
            out.to_str().unwrap(),
            "--source",
            &su,
            "--target",
            &tu,
            "--extra",
            "--progress",
            "none",
        ])
    };
    let o = verify();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _: () = c.set("untouched", "changed at the source").unwrap();
    let _: () = t.conn().set("only-on-target", "x").unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("\"untouched\"") && text(&o).contains("only-on-target"),
        "{}",
        text(&o)
    );
}

/// A command kvferry does not know stops the follow and names it: its write is never skipped
/// silently. A flush of the source empties the target's database (only it) and the keys written
/// after it are copied.
#[test]
fn an_unknown_command_stops_by_name_and_a_flush_empties_the_destination() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    let _: () = c.set("a", "1").unwrap();
    let _: () = c.set("b", "2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    let mut tc = t.conn();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut tc).unwrap();
    let _: () = tc.set("other-db", "kept").unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    let _: () = c.set("c", "after the flush").unwrap();
    let binlog = dir.path().join("binlog");
    append_items(
        &binlog,
        0,
        &[item(&[b"flushdb"]), item(&[b"set", b"c", b"after the flush"])],
    );
    let follow = |state: &str| {
        let extra = ["--binlog-file", binlog.to_str().unwrap(), "--until-caught-up"];
        run(&follow_args(&out, &s, &t, &dir.path().join(state), &extra))
    };
    let o = follow("s1");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let kept: String = tc.get("other-db").unwrap();
    assert_eq!(kept, "kept", "another database is not touched");
    std::fs::remove_file(&binlog).unwrap();
    append_items(&binlog, 0, &[item(&[b"brandnewcmd", b"k", b"v"])]);
    let o = follow("s2");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`brandnewcmd`") && text(&o).contains("does not know"),
        "{}",
        text(&o)
    );
}

/// A snapshot without binlog positions (from Redis, or an older kvferry) is refused, saying
/// why; so is a source that is not Pika when the real binlog is asked for.
#[test]
fn follow_needs_a_pika_snapshot_and_a_pika_source() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("a", "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    export(&s, &out);
    let args = |out: &Path| run(&follow_args(out, &s, &t, &dir.path().join("st"), &[]));
    let o = args(&out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("binlog_start"), "{}", text(&o));
    give_binlog_start(&out);
    let o = args(&out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not Pika"), "{}", text(&o));
}

// ----- against a real Pika -----

fn skip(name: &str) -> bool {
    if !pika() {
        eprintln!("{name}: did not run: it needs a real Pika (KVFERRY_TEST_PIKA=/path/to/pika)");
        return true;
    }
    false
}

/// Writes of every type (and deletes, expiries) made during the export and after it are all on
/// the target once follow has caught up, compared key by key.
#[test]
fn pika_writes_during_and_after_the_export_are_caught_up() {
    if skip("pika_writes_during_and_after_the_export_are_caught_up") {
        return;
    }
    let s = Server::start(Kind::Pika, &[]);
    let t = Server::target();
    let mut c = s.conn();
    for i in 0..3000 {
        let _: () = c.set(format!("s{i}"), i).unwrap();
    }
    let _: () = c.rpush("list", &["a", "b"]).unwrap();
    let _: () = c.hset("h", "f", "1").unwrap();
    let _: () = c.set("doomed", "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    // A writer runs during the whole export: counters, lists, hashes, sets, deletes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mut w) = (stop.clone(), s.conn());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 200 {
                let _: i64 = w.incr(format!("s{}", n % 3000), 1).unwrap();
                let _: () = w.rpush(format!("during:list{}", n % 7), n).unwrap();
                let _: () = w.hset("during:h", format!("f{}", n % 50), n).unwrap();
                let _: () = w.sadd(format!("during:set{}", n % 5), n % 13).unwrap();
                let _: () = w.zadd(format!("during:z{}", n % 3), n % 11, n as f64 / 4.0).unwrap();
                if n % 10 == 0 {
                    let _: () = w.del(format!("s{}", (n * 7) % 3000)).unwrap();
                }
                n += 1;
            }
            n
        })
    };
    export(&s, &out);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written >= 200, "{written} rounds of writes during the export");
    import(&out, &t, &[]);
    // After the export: every type, non-idempotent writes, deletes, expiries.
    let _: i64 = c.incr("s1", 100).unwrap();
    let _: () = c.rpush("list", "c").unwrap();
    let _: () = c.hset("h", "g", "2").unwrap();
    let _: () = c.del("doomed").unwrap();
    let _: () = c.sadd("set", &["x", "y"]).unwrap();
    let _: () = c.zadd("z", "m", 2.5).unwrap();
    let _: () = c.set_ex("ttl", "v", 3600).unwrap();
    let _: () = c.expire("s2", 7200).unwrap();
    let _: () = c.mset(&[("m1", "1"), ("m2", "2")]).unwrap();
    // A type change, an expiry that fires (a time in the past), and a stream where Pika can
    // list them (4.0: 3.5's streams break SCAN, SERVERS.md).
    let _: () = c.del("list").unwrap();
    let _: () = c.hset("list", "now", "a hash").unwrap();
    let _: () = c.expire_at("s5", 1).unwrap();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    if info.contains("pika_version:4") {
        let _: String = redis::cmd("XADD")
            .arg("stream")
            .arg("1-1")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg("stream")
            .arg("2-1")
            .arg("f")
            .arg("w")
            .query(&mut c)
            .unwrap();
    }
    let o = run(&follow_args(
        &out,
        &s,
        &t,
        &dir.path().join("st"),
        &["--until-caught-up"],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let mut tc = t.conn();
    assert!(!tc.exists::<_, bool>("s5").unwrap(), "the expired key");
    assert_eq!(tc.hget::<_, _, String>("list", "now").unwrap(), "a hash");
    if info.contains("pika_version:4") {
        assert_eq!(redis::cmd("XLEN").arg("stream").query::<u64>(&mut tc).unwrap(), 2);
    }
}

/// Starts a follow in the background, its output into `log` (appended).
fn spawn_follow(args: &[String], log: &Path) -> std::process::Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

/// Items the follow's checkpoint has applied.
fn applied(state: &Path) -> u64 {
    std::fs::read(state.join("follow.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<J>(&t).ok())
        .and_then(|j| j["items"].as_u64())
        .unwrap_or(0)
}

/// Waits (polling, up to 60 s) until `f` holds; else fails with the follow's output in `log`.
fn wait_until(what: &str, log: &Path, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s; the follow said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling interval
    }
}

/// kill -9 of a follow that is keeping up, writes meanwhile, then `--resume`: every write is on
/// the target; and a restart of the Pika during a follow: it reconnects and catches up.
#[test]
fn pika_follow_survives_kill_9_and_a_restart_of_pika() {
    if skip("pika_follow_survives_kill_9_and_a_restart_of_pika") {
        return;
    }
    let mut s = Server::start(Kind::Pika, &[]);
    let t = Server::target();
    let mut c = s.conn();
    for i in 0..200 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    export(&s, &out);
    import(&out, &t, &[]);
    let state = dir.path().join("st");
    let log = dir.path().join("follow.log");
    let mut child = spawn_follow(&follow_args(&out, &s, &t, &state, &[]), &log);
    for i in 0..300 {
        let _: i64 = c.incr(format!("k{}", i % 50), 1).unwrap();
        let _: () = c.rpush("log", i).unwrap();
    }
    wait_until("the follow applies items", &log, || applied(&state) > 0);
    child.kill().unwrap();
    child.wait().unwrap();
    for i in 0..100 {
        let _: () = c.hset("h", format!("f{i}"), i).unwrap();
    }
    let _: () = c.del("k3").unwrap();
    // Resumed, it keeps up; the Pika restarts under it; more writes after the restart.
    let mut child = spawn_follow(&follow_args(&out, &s, &t, &state, &["--resume"]), &log);
    let tc = &mut t.conn();
    wait_until("the writes during the kill are on the target", &log, || {
        tc.hlen::<_, u64>("h").unwrap_or(0) == 100
    });
    drop(c);
    s.restart();
    let mut c = s.conn();
    let _: () = c.set("after-restart", "yes").unwrap();
    let _: () = c.sadd("set", &["a", "b"]).unwrap();
    wait_until("the writes after the restart are on the target", &log, || {
        tc.exists::<_, bool>("set").unwrap_or(false)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let o = run(&follow_args(&out, &s, &t, &state, &["--resume", "--until-caught-up"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    s.assert_alive();
}

/// A binlog purged past the snapshot's position is a clear error that says how to keep it.
#[test]
fn pika_binlog_purged_since_the_export_is_a_clear_error() {
    if skip("pika_binlog_purged_since_the_export_is_a_clear_error") {
        return;
    }
    // Small binlog files, so that a few KiB of writes fill more files than Pika keeps.
    let s = Server::start(Kind::Pika, &[("binlog-file-size", "1024")]);
    let t = Server::target();
    let mut c = s.conn();
    let _: () = c.set("a", "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    export(&s, &out);
    import(&out, &t, &[]);
    let big = "x".repeat(900);
    for i in 0..60 {
        let _: () = c.set(format!("fill{i}"), &big).unwrap();
    }
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap();
    let filenum: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("db0:binlog_offset="))
        .and_then(|v| v.split(' ').next())
        .and_then(|f| f.parse().ok())
        .unwrap();
    assert!(filenum > 20, "the writes filled {filenum} binlog files");
    let _: redis::Value = redis::cmd("PURGELOGSTO")
        .arg(format!("write2file{}", filenum - 12))
        .arg("db0")
        .query(&mut c)
        .unwrap();
    let o = run(&follow_args(
        &out,
        &s,
        &t,
        &dir.path().join("st"),
        &["--until-caught-up"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("purged its binlog") && text(&o).contains("expire-logs-nums"),
        "{}",
        text(&o)
    );
}

/// Pika 3.x holds one name under several types at once: follow applies the import's
/// `--multi-type` policy to the keys it copies again. With `suffix`, the first type keeps the
/// name and the others are written as `KEY:TYPE`; a type gone from the source is gone from the
/// target. With the default (`fail`), a key that became multi-type is reported by name and the
/// follow exits 1. On Pika 4 (one type per key) it prints that it did not run.
#[test]
fn pika_multi_type_keys_follow_the_imports_policy() {
    let name = "pika_multi_type_keys_follow_the_imports_policy";
    if skip(name) {
        return;
    }
    let mut s = Server::start(Kind::Pika, &[]);
    let mut c = s.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    if info.lines().any(|l| l.starts_with("pika_version:4")) {
        eprintln!("{name}: did not run: Pika 4 holds one type per key (give a Pika 3.5)");
        return;
    }
    let t = Server::target();
    let _: () = c.set("k", "v").unwrap();
    let _: () = c.hset("k", "f", "1").unwrap();
    let _: () = c.rpush("mixed", "a").unwrap();
    let _: () = c.sadd("mixed", "m").unwrap();
    let _: () = c.set("plain", "p").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    export(&s, &out);
    import(&out, &t, &["--multi-type", "suffix"]);
    let mut tc = t.conn();
    assert_eq!(tc.get::<_, String>("k").unwrap(), "v");
    assert_eq!(tc.hget::<_, _, String>("k:hash", "f").unwrap(), "1");
    // After the export: a third type under k, a multi-type key deleted (all its types), a new
    // one whose second type is a zset.
    let _: () = c.hset("k", "g", "2").unwrap();
    let _: () = c.sadd("k", "x").unwrap();
    let _: () = c.del("mixed").unwrap();
    let _: () = c.set("new", "s").unwrap();
    let _: () = c.zadd("new", "m", 1).unwrap();
    let state = dir.path().join("st");
    let o = run(&follow_args(
        &out,
        &s,
        &t,
        &state,
        &["--multi-type", "suffix", "--until-caught-up"],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(tc.get::<_, String>("k").unwrap(), "v");
    let h: std::collections::BTreeMap<String, String> = tc.hgetall("k:hash").unwrap();
    assert_eq!(h, [("f".into(), "1".into()), ("g".into(), "2".into())].into());
    assert_eq!(tc.smembers::<_, Vec<String>>("k:set").unwrap(), ["x"]);
    for gone in ["mixed", "mixed:set"] {
        assert!(!tc.exists::<_, bool>(gone).unwrap(), "{gone} is still on the target");
    }
    assert_eq!(tc.get::<_, String>("new").unwrap(), "s");
    assert_eq!(tc.zscore::<_, _, f64>("new:zset", "m").unwrap(), 1.0);
    // Pika 3.5 logs a pattern delete whole: `k`'s hash goes, its string and set stay.
    let _: redis::Value = redis::cmd("PKPATTERNMATCHDEL")
        .arg("k*")
        .arg("hash")
        .query(&mut c)
        .unwrap();
    let o = run(&follow_args(
        &out,
        &s,
        &t,
        &state,
        &["--resume", "--multi-type", "suffix", "--until-caught-up"],
    ));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!tc.exists::<_, bool>("k:hash").unwrap(), "the hash the pattern deleted");
    assert_eq!(tc.get::<_, String>("k").unwrap(), "v");
    assert_eq!(tc.smembers::<_, Vec<String>>("k:set").unwrap(), ["x"]);
    // The default policy refuses a key that became multi-type, by name, and says what to give;
    // the round is not acknowledged, so a follow resumed with a policy copies it.
    let _: () = c.hset("plain", "f", "1").unwrap();
    let o = run(&follow_args(&out, &s, &t, &state, &["--resume", "--until-caught-up"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("\"plain\" is held under several types") && text(&o).contains("--multi-type first or suffix"),
        "{}",
        text(&o)
    );
    let extra = ["--resume", "--until-caught-up", "--multi-type", "first"];
    let o = run(&follow_args(&out, &s, &t, &state, &extra));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(tc.get::<_, String>("plain").unwrap(), "p");
    assert!(
        !tc.exists::<_, bool>("plain:hash").unwrap(),
        "--multi-type first writes no suffix"
    );
    s.assert_alive();
}

/// The target's connection cut in the middle of a round: follow reconnects and copies the round
/// again, and every figure counts the round once (the report, the summary, the checkpoint).
#[test]
fn a_round_copied_again_after_a_cut_counts_once() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("before", "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    let value = "v".repeat(8192);
    let mut c = s.conn();
    let mut items = Vec::new();
    for i in 0..50 {
        let k = format!("k{i}");
        let _: () = c.set(&k, &value).unwrap();
        items.push(item(&[b"set", k.as_bytes(), value.as_bytes()]));
    }
    let binlog = dir.path().join("binlog");
    append_items(&binlog, 0, &items);
    // 50 SETs of 8 KiB go in one batch of about 400 KiB: the cut comes in the middle of it.
    let proxy = support::Proxy::start(t.port, support::Fault::CutOnce(200 << 10));
    let mut args = caught_up_from_file(&out, &s, &t, dir.path());
    let at = args.iter().position(|a| a == "--target").unwrap() + 1;
    args[at] = format!("redis://127.0.0.1:{}", proxy.port);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("copying the round again"),
        "no cut happened: {}",
        text(&o)
    );
    assert!(text(&o).contains("50 binlog items applied"), "{}", text(&o));
    assert!(text(&o).contains("50 keys copied again"), "{}", text(&o));
    let r = report(dir.path());
    assert_eq!((r["items"].as_u64(), r["copied"].as_u64()), (Some(50), Some(50)), "{r}");
    let checkpoint: J = serde_json::from_slice(&std::fs::read(dir.path().join("st/follow.json")).unwrap()).unwrap();
    assert_eq!(checkpoint["items"], 50, "{checkpoint}");
    assert_same(&s, 0, &t, 0);
}

/// A Pika that refuses the replication client: its replication port takes only the admin
/// password (requirepass), so a follow given a user password (userpass), which reads the keys
/// well enough, is refused with that said, before anything is copied.
#[test]
fn pika_refusing_the_replication_client_is_a_clear_error() {
    if skip("pika_refusing_the_replication_client_is_a_clear_error") {
        return;
    }
    let s = Server::start(Kind::Pika, &[("requirepass", "admin-pw"), ("userpass", "user-pw")]);
    let t = Server::target();
    let admin = format!("redis://:admin-pw@127.0.0.1:{}", s.port);
    let user = format!("redis://:user-pw@127.0.0.1:{}", s.port);
    let mut c = redis::Client::open(admin.as_str()).unwrap().get_connection().unwrap();
    let _: () = c.set("a", "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let o = kvferry(&[
        "export",
        "--source",
        &admin,
        "--db",
        "0",
        "--progress",
        "none",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    import(&out, &t, &[]);
    let _: () = c.set("b", "2").unwrap();
    let mut args = follow_args(&out, &s, &t, &dir.path().join("st"), &["--until-caught-up"]);
    let at = args.iter().position(|a| a == "--source").unwrap() + 1;
    args[at] = user;
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("refused the replication client") && text(&o).contains("requirepass"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("user-pw"), "the password shows: {}", text(&o));
    assert!(!t.conn().exists::<_, bool>("b").unwrap(), "nothing is copied");
    // With the admin password it follows.
    args[at] = admin;
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(t.conn().get::<_, String>("b").unwrap(), "2");
}

/// Pika 3.5 logs `pkpatternmatchdel PATTERN TYPE` whole, not the keys it deleted: the target's
/// keys that match are copied again page by page (thousands here, over several SCAN pages), so
/// those the source deleted are deleted and those it kept (another type) stay, each counted once.
#[test]
fn a_pattern_delete_is_caught_up_page_by_page() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    let kv: Vec<(String, String)> = (0..2500).map(|i| (format!("user:{i}"), format!("v{i}"))).collect();
    let _: () = c.mset(&kv).unwrap();
    let _: () = c.hset("user:h", "f", "kept").unwrap();
    let _: () = c.set("other", "kept").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    // What `pkpatternmatchdel user:* string` does on a Pika 3.5, then a write after it.
    let names: Vec<&String> = kv.iter().map(|(k, _)| k).collect();
    let _: () = c.del(&names).unwrap();
    let _: () = c.set("user:new", "after").unwrap();
    let binlog = dir.path().join("binlog");
    append_items(
        &binlog,
        0,
        &[
            item(&[b"pkpatternmatchdel", b"user:*", b"string"]),
            item(&[b"set", b"user:new", b"after"]),
        ],
    );
    let o = run(&caught_up_from_file(&out, &s, &t, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let r = report(dir.path());
    assert_eq!(r["deleted"], 2500, "{r}");
    assert_eq!(r["copied"], 2, "user:h again, and user:new: {r}");
}

/// A backlog of many more touched keys than a round holds is copied in rounds of at most
/// 10,000 keys (and one message of items past them), each acknowledged before the next is
/// taken: follow's memory stays bounded while the rest waits in the binlog.
#[test]
fn a_backlog_is_copied_in_bounded_rounds() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("before", "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    let mut c = s.conn();
    let mut items = Vec::new();
    for chunk in 0..25 {
        let kv: Vec<(String, String)> = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let _: () = c.mset(&kv).unwrap();
        for (k, v) in &kv {
            items.push(item(&[b"set", k.as_bytes(), v.as_bytes()]));
        }
    }
    // Some keys written twice: a key counts once in its round.
    for i in 0..5000 {
        let k = format!("k{}", i * 5);
        items.push(item(&[b"set", k.as_bytes(), format!("v{}", i * 5).as_bytes()]));
    }
    let binlog = dir.path().join("binlog");
    append_items(&binlog, 0, &items);
    let o = run(&caught_up_from_file(&out, &s, &t, dir.path()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("30000 binlog items applied"), "{}", text(&o));
    let r = report(dir.path());
    assert_eq!(r["items"], 30_000, "{r}");
    let largest = r["largest_round_keys"].as_u64().unwrap();
    assert!((1..=10_100).contains(&largest), "a round held {largest} keys: {r}");
    assert!(r["copied"].as_u64().unwrap() >= 25_000, "{r}");
    assert_same(&s, 0, &t, 0);
}

/// A binlog file cut inside an item is refused, naming the file and where.
#[test]
fn a_cut_binlog_file_is_refused_by_where() {
    let s = Server::start(Kind::Redis, &[]);
    let t = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("before", "x").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = exported_and_imported(&s, &t, dir.path());
    let binlog = dir.path().join("binlog");
    append_items(&binlog, 0, &[item(&[b"set", b"a", b"1"]), item(&[b"set", b"b", b"2"])]);
    let b = std::fs::read(&binlog).unwrap();
    std::fs::write(&binlog, &b[..b.len() - 3]).unwrap();
    let o = run(&caught_up_from_file(&out, &s, &t, dir.path()));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let second = b.len() / 2;
    assert!(
        text(&o).contains("binlog: cut inside the item at byte") && text(&o).contains(&format!("byte {second}")),
        "{}",
        text(&o)
    );
}
