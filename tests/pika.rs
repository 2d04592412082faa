//! Pika's differences (SERVERS.md), each run against the source server: Pika when
//! `KVFERRY_TEST_PIKA` names a binary, else Redis standing in (the harness prints which). On
//! Redis the same keys must come out as plain Redis data; on Pika the Pika rules apply.

mod support;

use std::process::Command;

use redis::Commands;
use serde_json::{json, Value as J};
use support::{Kind, Server};

/// The source's Pika version, if it is Pika.
fn pika_version(s: &Server) -> Option<(u32, u32)> {
    let info: String = redis::cmd("INFO").arg("server").query(&mut s.conn()).unwrap();
    let v = info.lines().find_map(|l| l.strip_prefix("pika_version:"))?;
    let mut p = v.trim().split('.').map(|n| n.parse().unwrap_or(0));
    Some((p.next()?, p.next()?))
}

/// The arguments of an export of db 0 of `s` into `out`, with `extra`.
fn export_args(s: &Server, out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "export",
        "--source",
        &s.url(),
        "--db",
        "0",
        "--progress",
        "none",
        "--out",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    a.push(out.to_string_lossy().into_owned());
    a.extend(extra.iter().map(|a| a.to_string()));
    a
}

/// Starts the export `args` rate-limited, checkpointing at every quiet page, and kills it
/// (SIGKILL) once its checkpoint holds at least `at_least` keys of type `ty`, before it ends.
fn kill_at_a_checkpoint(args: &[String], out: &std::path::Path, ty: &str, at_least: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .args(["--max-ops-per-sec", "1500", "--checkpoint-secs", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpointed = || -> u64 {
        std::fs::read(out.join("src0-db0.state.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<J>(&t).ok())
            .and_then(|j| j["report"]["keys_by_type"][ty].as_u64())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while checkpointed() < at_least {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint with {at_least} keys of type {ty} in 60 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .output()
        .unwrap()
}

/// Exports db 0 of `s`; returns the JSON report and the records `kvferry cat` prints with `cat`
/// (extra arguments of cat, e.g. `--key k`).
fn export_db0(s: &Server, cat: &[&str]) -> (J, Vec<J>) {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("snap"), dir.path().join("r.json"));
    let (out, report) = (out.to_str().unwrap(), report.to_str().unwrap());
    let o = run(&[
        "export",
        "--source",
        &s.url(),
        "--db",
        "0",
        "--out",
        out,
        "--report",
        report,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let r = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let printed = run(&[&["cat", out][..], cat].concat());
    let records = String::from_utf8(printed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, records)
}

/// HyperLogLog keys, the slot-migration sets, streams and a -inf score, exported from the source.
/// - Pika: the HLL is carried as a string flagged `pika_hll` and reported by name; the
///   `_internal:slotkey:4migrate:*` set is skipped and counted as filtered.
/// - Redis: an HLL is an ordinary string there (Redis' own encoding), and the internal-looking
///   set is user data: both are exported unflagged.
#[test]
fn hyperloglogs_internal_sets_and_streams() {
    let s = Server::source();
    let pika = pika_version(&s);
    assert_eq!(pika.is_some(), s.kind == Kind::Pika);
    let mut c = s.conn();
    let _: () = redis::cmd("PFADD")
        .arg("visitors")
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    let _: () = c.sadd("_internal:slotkey:4migrate:7", "k").unwrap();
    let _: () = c.set("plain", "v").unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("z")
        .arg("-inf")
        .arg("lo")
        .arg("1")
        .arg("one")
        .query(&mut c)
        .unwrap();
    let streams = pika.is_none_or(|v| v >= (3, 5));
    if streams {
        let _: String = redis::cmd("XADD")
            .arg("events")
            .arg("1-1")
            .arg("f")
            .arg("v")
            .query(&mut c)
            .unwrap();
    }
    let (r, records) = export_db0(&s, &[]);
    let shard = &r["shards"][0];
    let find = |k: &str| records.iter().find(|r| r["key"] == k).cloned();
    let hll = find("visitors").expect("the HLL key is exported");
    assert_eq!(hll["type"], "string");
    let zset = find("z").unwrap();
    let mut members: Vec<String> = zset["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    members.sort();
    assert_eq!(
        members,
        ["[\"lo\",\"-inf\"]", "[\"one\",1]"],
        "ZSCAN keeps -inf members"
    );
    if streams {
        assert_eq!(
            find("events").expect("the stream is exported")["value"]["entries"],
            json!([["1-1", [["f", "v"]]]])
        );
    }
    if pika.is_some() {
        assert_eq!(hll["flags"], json!(["pika_hll"]), "{hll}");
        assert_eq!(shard["pika_hll"][0]["key"], "visitors", "{shard}");
        assert!(find("_internal:slotkey:4migrate:7").is_none());
        assert_eq!(shard["filtered"], 1);
    } else {
        assert!(hll.get("flags").is_none_or(|f| f == &json!([])), "{hll}");
        assert_eq!(shard["pika_hll"], json!([]));
        assert!(find("_internal:slotkey:4migrate:7").is_some(), "user data on Redis");
        assert_eq!(shard["filtered"], 0);
    }
}

/// Pika <= 3.5 holds one name under several types at once: every type is exported as its own
/// occurrence flagged `multi_type` and reported by name. Redis and Pika 4.0 hold one type per
/// name: there the second write fails with WRONGTYPE and nothing is flagged.
#[test]
fn keys_under_several_types() {
    let s = Server::source();
    let multi = pika_version(&s).is_some_and(|v| v < (4, 0));
    let mut c = s.conn();
    let _: () = c.set("k", "string value").unwrap();
    let second: redis::RedisResult<()> = c.hset("k", "f", "hash value");
    assert_eq!(second.is_ok(), multi, "{second:?}");
    let (r, records) = export_db0(&s, &["--key", "k"]);
    let listed = r["shards"][0]["multi_type"].as_array().unwrap().len();
    if multi {
        let mut types: Vec<&str> = records.iter().map(|r| r["type"].as_str().unwrap()).collect();
        types.sort();
        assert_eq!(types, ["hash", "string"]);
        assert!(
            records.iter().all(|r| r["flags"] == json!(["multi_type"])),
            "{records:?}"
        );
        assert_eq!(listed, 2);
    } else {
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["value"], "string value");
        assert_eq!(listed, 0);
    }
    if multi {
        // Read by several connections at once, each key's occurrences still come in the
        // listing's order (string, hash, list, zset, set), on every run: so an import's
        // --multi-type first|suffix names the same type every time, as follow does.
        for i in 0..3 {
            let m = format!("m{i}");
            let _: () = c.set(&m, i).unwrap();
            let _: () = c.hset(&m, "f", i).unwrap();
            let _: () = c.rpush(&m, i).unwrap();
            let _: () = c.sadd(&m, i).unwrap();
        }
        let order = ["string", "hash", "list", "zset", "set"];
        for run in 0..10 {
            let (_, all) = export_db0(&s, &[]);
            let mut last: std::collections::HashMap<String, usize> = Default::default();
            for r in &all {
                let key = r["key"].as_str().unwrap().to_string();
                let ty = order.iter().position(|t| *t == r["type"]).unwrap();
                let before = last.insert(key.clone(), ty);
                assert!(
                    before.is_none_or(|b| b < ty),
                    "run {run}: {key}: its {} came after its {}",
                    order[ty],
                    order[before.unwrap()]
                );
            }
        }
    }
}

/// An export killed while it reads streams (Pika lists them apart, with `KEYS * stream`, after
/// the other types), then resumed: every key is in the snapshot exactly once, and the manifest,
/// the summary and `kvferry cat` agree with the source (issue 11: a resumed export wrote 1,018
/// streams twice). On Redis the same run goes through SCAN.
#[test]
fn a_resumed_export_writes_each_stream_once() {
    let s = Server::source();
    let mut c = s.conn();
    let kv: Vec<(String, String)> = (0..1000).map(|i| (format!("s{i}"), format!("v{i}"))).collect();
    let _: () = c.mset(&kv).unwrap();
    for i in 0..400 {
        let _: String = redis::cmd("XADD")
            .arg(format!("st{i:03}"))
            .arg("1-1")
            .arg("f")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let args = |extra: &[&str]| export_args(&s, &out, extra);
    kill_at_a_checkpoint(&args(&[]), &out, "stream", 50);
    let resumed: Vec<String> = args(&["--resume"]);
    let o = run(&resumed.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1400 keys [stream 400, string 1000]"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let m: J = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(m["totals"]["keys"], 1400, "each key once in the manifest");
    let printed = run(&["cat", out.to_str().unwrap()]);
    let names: Vec<String> = String::from_utf8(printed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<J>(l).unwrap()["key"].to_string())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        (names.len(), distinct.len()),
        (1400, 1400),
        "each key once in the files"
    );
}

/// Pika 3.x with its cache on (the stock `cache-model : 1`) answers PTTL from the cache without
/// a lock, and concurrent reads corrupt it (docs/servers-seen.md): an export refuses, reading
/// nothing, unless `--pika-cache-off`, which switches the cache off for the run and back on at
/// its end; the server stays up either way. Elsewhere (Redis, Pika 4) the flag changes nothing.
#[test]
fn pika_3_cache_is_switched_off_only_when_asked() {
    let s = Server::source();
    let kv: Vec<(String, String)> = (0..2000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let model = |s: &Server| -> Option<String> {
        let r: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("cache-model")
            .query(&mut s.conn())
            .ok()?;
        r.get(1).cloned()
    };
    let before = model(&s);
    let pika3 = pika_version(&s).is_some_and(|(major, _)| major < 4) && before.as_deref().is_some_and(|m| m != "0");
    let dir = tempfile::tempdir().unwrap();
    let export = |name: &str, off: bool| {
        let out = dir.path().join(name);
        let mut c = Command::new(env!("CARGO_BIN_EXE_kvferry"));
        c.env("XDG_STATE_HOME", support::state_home());
        c.args([
            "export",
            "--source",
            &s.url(),
            "--db",
            "0",
            "--progress",
            "none",
            "--out",
        ])
        .arg(&out)
        .env_remove("KVFERRY_PIKA_CACHE_OFF");
        if off {
            c.arg("--pika-cache-off");
        }
        (c.output().unwrap(), out)
    };
    let (o, out) = export("refused", false);
    if pika3 {
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cache-model") && err.contains("--pika-cache-off"), "{err}");
        assert!(!out.exists(), "nothing written");
    } else {
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (o, _) = export("off", true);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cache switched on again") == pika3,
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(model(&s), before, "the cache mode is as it was");
}

/// The binlog position each database had, from INFO replication (Pika), by database.
fn binlog_positions(s: &Server) -> std::collections::BTreeMap<u64, (u64, u64)> {
    let info: String = redis::cmd("INFO").arg("replication").query(&mut s.conn()).unwrap();
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.strip_prefix("db")?.split_once(":binlog_offset=")?;
            let (f, o) = rest.split(',').next()?.split_once(' ')?;
            Some((db.parse().ok()?, (f.parse().ok()?, o.trim().parse().ok()?)))
        })
        .collect()
}

/// An export from Pika records in the manifest, per shard, where its database's binlog stood
/// when the export began (format 1.2, for `kvferry follow`), and a resumed export keeps its first
/// run's position even though writes moved the binlog on meanwhile; `inspect` shows it. From
/// Redis, which has no such binlog, the manifest has no `binlog_start`.
#[test]
fn the_manifest_records_where_the_binlog_stood_when_the_export_began() {
    let s = Server::source();
    let mut c = s.conn();
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("b{i}"), format!("v{i}"))).collect();
    let _: () = c.mset(&kv).unwrap();
    let pika = pika_version(&s).is_some();
    let before = binlog_positions(&s);
    assert_eq!(
        !before.is_empty(),
        pika,
        "INFO replication shows binlog positions on Pika only"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let args = |extra: &[&str]| export_args(&s, &out, extra);
    kill_at_a_checkpoint(&args(&[]), &out, "string", 100);
    // Writes during the export move the binlog on; the resumed run must not take the new position.
    let _: () = c.set("written-meanwhile", "x").unwrap();
    let moved = binlog_positions(&s);
    if pika {
        assert!(
            moved[&0] > before[&0],
            "the write moved db 0's binlog: {before:?} -> {moved:?}"
        );
    }
    let o = run(&args(&["--resume"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let m: J = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(m["version"], "1.2");
    let start = &m["shards"][0]["binlog_start"];
    let inspect = String::from_utf8(run(&["inspect", out.to_str().unwrap()]).stdout).unwrap();
    if pika {
        let (f, o) = before[&0];
        assert_eq!(start, &json!({"filenum": f, "offset": o}), "the first run's position");
        assert!(
            inspect.contains(&format!("binlog at {f} {o} when the export began")),
            "{inspect}"
        );
    } else {
        assert!(start.is_null(), "no binlog on Redis: {m}");
        assert!(!inspect.contains("binlog at"), "{inspect}");
    }
}
