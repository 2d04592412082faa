//! `kvferry export` end to end against a real source server (tests/support): every type, several
//! databases, binary keys and members, empty strings, 1 MB values, TTLs; the snapshot must pass
//! `check` and hold exactly what the source holds.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};

use redis::Commands;
use serde_json::{json, Value as J};
use support::Server;

fn kvferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .output()
        .unwrap()
}

/// One `kvferry export` run into a fresh directory, with a JSON report.
struct Run {
    _dir: tempfile::TempDir,
    out: String,
    report: std::path::PathBuf,
    output: Output,
}

fn export(s: &Server, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap").to_string_lossy().into_owned();
    let report = dir.path().join("report.json");
    let mut args = vec![
        "export",
        "--source",
        &s.url(),
        "--out",
        &out,
        "--report",
        report.to_str().unwrap(),
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|a| a.to_string()));
    let output = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(&args)
        .output()
        .unwrap();
    Run {
        _dir: dir,
        out,
        report,
        output,
    }
}

/// The snapshot's records, joined into whole keys, the last occurrence winning:
/// (shard, key JSON) -> (type, expiry, value parts).
fn keys(snapshot: &str) -> BTreeMap<(String, String), (String, J, Vec<J>)> {
    let out = kvferry(&["cat", snapshot]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m: BTreeMap<(String, String), (String, J, Vec<J>)> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let r: J = serde_json::from_str(line).unwrap();
        let id = (r["shard"].as_str().unwrap().to_string(), r["key"].to_string());
        // A key's part 0 starts a new occurrence, which replaces any earlier one (F-PART-3).
        if r["part"] == 0 {
            m.insert(
                id.clone(),
                (
                    r["type"].as_str().unwrap().to_string(),
                    r["expire_at_ms"].clone(),
                    Vec::new(),
                ),
            );
        }
        m.get_mut(&id).unwrap().2.push(r["value"].clone());
    }
    m
}

fn populate(s: &Server) {
    let mut c = s.conn();
    let big = "x".repeat(1 << 20);
    let _: () = c.set("str", "hello").unwrap();
    let _: () = c.set("empty", "").unwrap();
    let _: () = c.set(b"\xff\xfebin", b"\x00\xff").unwrap();
    let _: () = c.set("big", &big).unwrap();
    let _: () = c.hset_multiple("hash", &[("f1", "v1"), ("f2", "")]).unwrap();
    let _: () = c.rpush("list", &["a", "b", "a"]).unwrap();
    let _: () = c.sadd("set", &[b"m1".as_slice(), b"\x80"]).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("zset")
        .arg("-inf")
        .arg("lo")
        .arg("1.5")
        .arg("mid")
        .arg("+inf")
        .arg("hi")
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("stream")
        .arg("5-1")
        .arg("k")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = c.set_ex("ttl", "soon", 3600).unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: () = c.set("in-db3", "three").unwrap();
}

#[test]
fn exports_every_type_and_database_exactly() {
    let s = Server::source();
    populate(&s);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let run = export(&s, &[]);
    let (o, out, report) = (&run.output, run.out.as_str(), &run.report);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(kvferry(&["check", out]).status.code(), Some(0));

    let k = keys(out);
    let get = |shard: &str, key: J| {
        k.get(&(shard.to_string(), key.to_string()))
            .unwrap_or_else(|| panic!("{key} missing from {shard}"))
            .clone()
    };
    assert_eq!(get("src0-db0", json!("str")).2, vec![json!("hello")]);
    assert_eq!(get("src0-db0", json!("empty")).2, vec![json!("")]);
    assert_eq!(
        get("src0-db0", json!({"base64": "//5iaW4="})).2,
        vec![json!({"base64": "AP8="})]
    );
    assert_eq!(get("src0-db0", json!("big")).2, vec![json!("x".repeat(1 << 20))]);
    assert_eq!(get("src0-db0", json!("list")).2, vec![json!(["a", "b", "a"])]);
    let mut hash: Vec<J> = get("src0-db0", json!("hash")).2[0].as_array().unwrap().clone();
    hash.sort_by_key(|p| p.to_string());
    assert_eq!(hash, vec![json!(["f1", "v1"]), json!(["f2", ""])]);
    let (ty, _, z) = get("src0-db0", json!("zset"));
    assert_eq!(ty, "zset");
    let mut z: Vec<String> = z[0].as_array().unwrap().iter().map(|p| p.to_string()).collect();
    z.sort();
    assert_eq!(z, ["[\"hi\",\"inf\"]", "[\"lo\",\"-inf\"]", "[\"mid\",1.5]"]);
    assert_eq!(
        get("src0-db0", json!("stream")).2[0]["entries"],
        json!([["5-1", [["k", "v"]]]])
    );
    let (_, expiry, _) = get("src0-db0", json!("ttl"));
    let at = expiry.as_u64().expect("the TTL became an absolute expiry");
    assert!(at >= before + 3_590_000 && at <= before + 3_700_000, "{at} vs {before}");
    assert!(get("src0-db0", json!("str")).1.is_null(), "no TTL, no expiry");
    assert_eq!(get("src0-db3", json!("in-db3")).2, vec![json!("three")]);
    assert_eq!(
        k.len(),
        11,
        "exactly the source's keys: {:?}",
        k.keys().collect::<Vec<_>>()
    );

    let r: J = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let db0 = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == "src0-db0")
        .unwrap();
    assert_eq!(db0["keys_by_type"]["string"], 5);
    assert_eq!(db0["failed"], json!([]));
    let databases = kvferry::server::describe(&s.url(), &mut s.conn())
        .unwrap()
        .databases
        .len();
    assert_eq!(databases, if s.kind == support::Kind::Pika { 8 } else { 16 });
    assert_eq!(
        r["shards"].as_array().unwrap().len(),
        databases,
        "one shard per database of the source"
    );
}

#[test]
fn filters_by_db_type_and_prefix() {
    let s = Server::source();
    populate(&s);
    let run = export(&s, &["--db", "0", "--type", "string,list", "--exclude-prefix", "big"]);
    let o = &run.output;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let k = keys(&run.out);
    let names: Vec<&str> = k.keys().map(|(_, key)| key.as_str()).collect();
    assert_eq!(
        names,
        [
            "\"empty\"",
            "\"list\"",
            "\"str\"",
            "\"ttl\"",
            "{\"base64\":\"//5iaW4=\"}"
        ]
    );
}

#[test]
fn refuses_to_overwrite_a_snapshot_and_names_unreachable_sources() {
    let s = Server::source();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    assert_eq!(
        kvferry(&[
            "export",
            "--source",
            &s.url(),
            "--out",
            out.to_str().unwrap(),
            "--db",
            "0"
        ])
        .status
        .code(),
        Some(0)
    );
    let o = kvferry(&["export", "--source", &s.url(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a complete snapshot"));
    // Port 1 on loopback: nothing listens there, and no test binds it (they use ephemeral ports,
    // so a port freed a moment ago could be taken by a concurrent test).
    let port = 1;
    let o = kvferry(&[
        "export",
        "--source",
        &format!("redis://:secret@127.0.0.1:{port}"),
        "--out",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("redis://127.0.0.1:{port}: connection refused")) && !err.contains("secret"),
        "{err}"
    );
}

/// A writer deletes and retypes big keys while the export runs: the export finishes, the snapshot
/// is well-formed, untouched keys are exact, and every churned key is either absent, exported
/// with a type the writer used, or reported as failed by name.
#[test]
fn survives_a_concurrent_writer_deleting_and_retyping_keys() {
    let s = Server::source();
    let mut c = s.conn();
    let stable: Vec<(String, String)> = (0..20_000).map(|i| (format!("stable:{i}"), format!("v{i}"))).collect();
    for chunk in stable.chunks(1000) {
        let _: () = c.mset(chunk).unwrap();
    }
    let fields: Vec<(String, String)> = (0..3000).map(|i| (format!("f{i}"), format!("{i}"))).collect();
    for i in 0..40 {
        let _: () = c.hset_multiple(format!("churn:{i}"), &fields).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), s.url());
        let items: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("churn:{}", round % 40);
                let _: () = c.del(&key).unwrap();
                match round % 3 {
                    0 => c.hset_multiple::<_, _, _, ()>(&key, &fields).unwrap(),
                    1 => c.rpush::<_, _, ()>(&key, &items).unwrap(),
                    _ => {} // deleted
                }
                round += 1;
            }
            round
        })
    };
    let run = export(&s, &["--db", "0"]);
    let (o, out) = (&run.output, run.out.as_str());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 40, "the writer ran during the export ({rounds} rounds)");
    assert!(
        matches!(o.status.code(), Some(0 | 1)),
        "export failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        kvferry(&["check", out]).status.code(),
        Some(0),
        "the snapshot is well-formed"
    );
    let k = keys(out);
    for (key, v) in &stable {
        assert_eq!(
            k[&("src0-db0".to_string(), json!(key).to_string())].2,
            vec![json!(v)],
            "{key}"
        );
    }
    for ((_, key), (ty, _, _)) in &k {
        if key.starts_with("\"churn:") {
            assert!(ty == "hash" || ty == "list", "{key} exported as {ty}");
        }
    }
    let r: J = serde_json::from_slice(&std::fs::read(&run.report).unwrap()).unwrap();
    for f in r["shards"][0]["failed"].as_array().unwrap() {
        assert!(
            f["key"].as_str().unwrap().starts_with("churn:"),
            "only churned keys may fail: {f}"
        );
    }
}

/// --max-ops-per-sec holds the export to the rate: 3000 string keys cost at least 3 commands each
/// (TYPE, PTTL, GETRANGE), so at 20,000 commands/s the run cannot take less than 0.45 s.
#[test]
fn max_ops_per_sec_limits_the_rate() {
    let s = Server::source();
    let mut c = s.conn();
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = c.mset(&kv).unwrap();
    let t = std::time::Instant::now();
    let run = export(&s, &["--db", "0", "--max-ops-per-sec", "20000"]);
    let took = t.elapsed().as_secs_f64();
    assert_eq!(
        run.output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    assert!(took >= 0.45, "3000 keys at 20,000 commands/s took only {took:.2}s");
    assert_eq!(keys(&run.out).len(), 3000);
}

/// The source restarts (kill -9, then start on its append-only file) in the middle of an export:
/// the export reconnects, scans again, and the snapshot holds every key exactly once per the
/// report, and every key's value.
#[test]
fn continues_after_the_source_restarts() {
    let mut s = Server::start(
        support::Kind::Redis,
        &[("appendonly", "yes"), ("appendfsync", "always")],
    );
    let mut c = s.conn();
    let kv: Vec<(String, String)> = (0..5000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = c.mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("snap"), dir.path().join("report.json"));
    // At 8000 commands/s, 5000 keys take at least 2.5 s: the restart lands in the middle.
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["export", "--source", &s.url(), "--db", "0", "--max-ops-per-sec", "8000"])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The restart must land while the shard is being read (its file exists), not while the
    // export is still planning on its first connection.
    wait_for("the shard to start", || out.join("src0-db0.0000.kvf").exists());
    s.restart();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(kvferry(&["check", out.to_str().unwrap()]).status.code(), Some(0));
    let k = keys(out.to_str().unwrap());
    assert_eq!(k.len(), 5000);
    for (key, v) in &kv {
        assert_eq!(k[&("src0-db0".to_string(), json!(key).to_string())].2, vec![json!(v)]);
    }
    let r: J = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let shard = &r["shards"][0];
    assert!(shard["reconnects"].as_u64().unwrap() >= 1, "{shard}");
    // A restart during the listing means one rescan; once every key was listed, the readers
    // just reconnect (the data survived, appendfsync always).
    assert!(shard["rescans"].as_u64().unwrap() <= 1, "{shard}");
    assert_eq!(shard["keys_by_type"]["string"], 5000, "each key counted once: {shard}");
    let m: J = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(
        m["totals"]["keys"], 5000,
        "each key written once: a rescan starts the file over"
    );
}

/// Polls until `cond` holds, for at most 20 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
}

/// An export killed with SIGKILL in the middle, with several shards running in parallel, is
/// continued by `--resume` from each shard's last checkpoint: the snapshot then holds every key
/// of the source exactly once (the blocks written after a checkpoint are cut away, and the scan
/// continues from the checkpoint's cursor), and no state files are left behind.
#[test]
fn a_killed_export_resumes_from_its_checkpoints() {
    let s = Server::source();
    let mut c = s.conn();
    let mut want = BTreeMap::new();
    for db in 0..3 {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{db}-{i}"), format!("v{i}"))).collect();
        let _: () = c.mset(&kv).unwrap();
        for i in 0..300 {
            let _: () = c.hset(format!("h{db}-{i}"), "f", i).unwrap();
            want.insert(
                (format!("src0-db{db}"), json!(format!("h{db}-{i}")).to_string()),
                json!([["f", i.to_string()]]),
            );
        }
        for (k, v) in kv {
            want.insert((format!("src0-db{db}"), json!(k).to_string()), json!(v));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "export",
            "--source",
            &s.url(),
            "--db",
            "0,1,2",
            "--parallel",
            "2",
            "--progress",
            "none",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        a.extend(["--out".to_string(), out.to_string_lossy().into_owned()]);
        a.extend(extra.iter().map(|a| a.to_string()));
        a
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args(&["--max-ops-per-sec", "3000", "--checkpoint-secs", "0"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once both running shards have checkpointed at least twice.
    let checkpointed = |shard: &str| -> u64 {
        std::fs::read(out.join(format!("{shard}.state.json")))
            .ok()
            .and_then(|t| serde_json::from_slice::<J>(&t).ok())
            .and_then(|j| j["report"]["keys_by_type"]["string"].as_u64())
            .unwrap_or(0)
    };
    wait_for("two checkpoints of two shards", || {
        checkpointed("src0-db0") >= 1000 && checkpointed("src0-db1") >= 1000
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("MANIFEST.json").exists());

    let o = kvferry(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unfinished export") && err.contains("--resume"), "{err}");
    let mut other = args(&["--resume"]);
    other[4] = "0,1".into();
    let o = kvferry(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--db was \"0,1,2\", now \"0,1\""), "{err}");

    let o = kvferry(&args(&["--resume"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("src0-db0 (") && summary.contains("(resumed)"),
        "{summary}"
    );
    let out_s = out.to_str().unwrap();
    assert_eq!(kvferry(&["check", out_s]).status.code(), Some(0));
    let got: BTreeMap<(String, String), J> = keys(out_s)
        .into_iter()
        .map(|(id, (_, _, v))| (id, v[0].clone()))
        .collect();
    assert!(
        got == want,
        "the snapshot differs from the source: {} keys vs {}",
        got.len(),
        want.len()
    );
    let m: J = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(
        m["totals"]["keys"], 9900,
        "every key exactly once: no key written twice"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".kvf") && n != "MANIFEST.json")
        .collect();
    assert!(left.is_empty(), "state files left behind: {left:?}");
    let again = kvferry(&args(&["--resume"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(again.status.code(), Some(0), "resuming a complete export is a no-op");
}

/// The Pika read path (every batched read compared with STRLEN/HLEN/LLEN/SCARD/ZCARD, because
/// Pika's reads have gone wrong, SERVERS.md) gives the same snapshot content as the Redis path
/// (one atomic command per small key), with Redis standing in for Pika; and so do 1, 2 or 4
/// reader connections.
#[test]
fn pika_length_checks_give_the_same_content() {
    let s = Server::source();
    populate(&s);
    let mut c = s.conn();
    // Around the batch limits: 127/128/129 elements, 16 KiB strings.
    for n in [127usize, 128, 129] {
        let items: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
        let _: () = c.rpush(format!("list{n}"), &items).unwrap();
        let _: () = c.sadd(format!("set{n}"), &items).unwrap();
        let pairs: Vec<(String, String)> = items.iter().map(|i| (i.clone(), i.clone())).collect();
        let _: () = c.hset_multiple(format!("hash{n}"), &pairs).unwrap();
        let scored: Vec<(f64, String)> = items.iter().enumerate().map(|(i, m)| (i as f64, m.clone())).collect();
        let _: () = c.zadd_multiple(format!("zset{n}"), &scored).unwrap();
    }
    for n in [16383usize, 16384, 16385] {
        let _: () = c.set(format!("str{n}"), "s".repeat(n)).unwrap();
    }
    let plain = export(&s, &["--db", "0,3"]);
    let checked = export(&s, &["--db", "0,3", "--check-lengths", "--connections", "4"]);
    let single = export(&s, &["--db", "0,3", "--connections", "1"]);
    for run in [&plain, &checked, &single] {
        assert_eq!(
            run.output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.output.stderr)
        );
    }
    let (a, b) = (keys(&plain.out), keys(&checked.out));
    let c = keys(&single.out);
    assert_eq!(a.len(), 11 + 12 + 3);
    // Expiries are computed at read time, so they differ by the time between the two runs.
    let near = |x: &J, y: &J| match (x.as_u64(), y.as_u64()) {
        (Some(x), Some(y)) => x.abs_diff(y) < 60_000,
        _ => x == y,
    };
    let differ: Vec<_> = a
        .iter()
        .filter(|(k, v)| !b.get(*k).is_some_and(|w| v.0 == w.0 && v.2 == w.2 && near(&v.1, &w.1)))
        .map(|(k, v)| (k, v, b.get(k)))
        .collect();
    assert!(differ.is_empty(), "the two read paths differ: {differ:?}");
    let differ = a
        .iter()
        .filter(|(k, v)| !c.get(*k).is_some_and(|w| v.0 == w.0 && v.2 == w.2))
        .count();
    assert_eq!(differ, 0, "one reader or two: the same snapshot");
    let list = &a[&("src0-db0".to_string(), json!("list128").to_string())];
    assert_eq!(list.2.iter().map(|p| p.as_array().unwrap().len()).sum::<usize>(), 128);
    let s16k = &a[&("src0-db0".to_string(), json!("str16385").to_string())];
    assert_eq!(s16k.2, vec![json!("s".repeat(16385))]);
}

/// `--progress json` makes stderr JSON lines only: messages as `message` events, progress as
/// `progress` events (the last when the export ends: every shard done, the keys counted, the
/// empty databases apart), and a last `result` line with the exit code and the counts. Empty
/// databases take one line of the summary.
#[test]
fn progress_as_json_lines() {
    let s = Server::source();
    populate(&s);
    let run = export(&s, &["--progress", "json"]);
    assert_eq!(run.output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    let lines: Vec<J> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l:?} in {stderr}")))
        .collect();
    assert!(lines.iter().any(|l| l["event"] == "message"), "{stderr}");
    let result = lines.last().unwrap();
    assert_eq!(result["event"], "result", "{stderr}");
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(result["keys"], 11, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let last = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "progress")
        .unwrap_or_else(|| panic!("no JSON progress line in {stderr}"));
    let dbs = s.databases() as u64;
    assert_eq!(last["tasks"], 2, "{last}");
    assert_eq!(last["tasks_done"], 2, "{last}");
    assert_eq!(last["tasks_empty"], dbs - 2, "{last}");
    assert_eq!(last["keys"], 11, "{last}");
    assert_eq!(last["total_keys"], 11, "{last}");
    assert!(last["bytes"].as_u64().unwrap() > 1 << 20, "{last}");
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.contains("empty database")).count(),
        1,
        "one line for the empty databases: {stdout}"
    );
    assert!(stdout.contains(&format!("{} empty databases: ", dbs - 2)), "{stdout}");
    // inspect too: one line for the empty shards.
    let o = kvferry(&["inspect", &run.out]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains(&format!("{} shards with no keys: ", dbs - 2)) && shown.matches("part").count() < 6,
        "{shown}"
    );
    let quiet = export(&s, &["--db", "0", "--progress", "none"]);
    assert!(
        !String::from_utf8_lossy(&quiet.output.stderr).contains("keys"),
        "--progress none prints no progress"
    );
}

/// `--progress bar` draws bars even where stderr is no terminal (a log file, a pipe), with the
/// total's keys, rate and ETA (issue 12: it was silently ignored).
#[test]
fn progress_bars_are_drawn_when_asked_for_without_a_terminal() {
    let s = Server::source();
    let kv: Vec<(String, String)> = (0..100).map(|i| (format!("k{i}"), "v".into())).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let run = export(&s, &["--db", "0", "--progress", "bar", "--max-ops-per-sec", "150"]);
    assert_eq!(run.output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(
        stderr.contains("total [") && stderr.contains("keys/s") && stderr.contains("\x1b["),
        "{stderr:?}"
    );
}

/// Under a rate limit, progress moves as keys are written rather than jumping at the end of a
/// long page (issue 11: 0 % for 20-30 s, then a jump).
#[test]
fn progress_moves_under_a_rate_limit() {
    let s = Server::source();
    let kv: Vec<(String, String)> = (0..300).map(|i| (format!("k{i}"), "v".into())).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    // About 3 commands a key at 150 a second: 6 s, with a JSON line every 2 s.
    let run = export(&s, &["--db", "0", "--progress", "json", "--max-ops-per-sec", "150"]);
    assert_eq!(run.output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    let keys: Vec<u64> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<J>(l).ok())
        .filter(|l| l["event"] == "progress")
        .map(|l| l["keys"].as_u64().unwrap())
        .collect();
    assert_eq!(keys.last(), Some(&300), "{stderr}");
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "never backwards: {keys:?}");
    assert!(keys.iter().any(|&k| k > 0 && k < 300), "seen between: {keys:?}");
}

/// The source goes away in the middle of an export: while the export waits for it, it says which
/// server is gone, since when, when it tries next and when it gives up; once the server is back
/// it says so and finishes with every key (issue 11: a dead source showed only `0/3000 keys`).
#[test]
fn says_while_it_waits_for_a_source_that_went_away() {
    use std::io::BufRead;
    let mut s = Server::start(
        support::Kind::Redis,
        &[("appendonly", "yes"), ("appendfsync", "always")],
    );
    let kv: Vec<(String, String)> = (0..5000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["export", "--source", &s.url(), "--db", "0", "--max-ops-per-sec", "4000"])
        .args(["--progress", "none", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_for("the shard to start", || out.join("src0-db0.0000.kvf").exists());
    s.kill();
    let name = format!("redis://127.0.0.1:{}", s.port);
    let waiting = rx
        .iter()
        .find(|l| l.contains("no connection since"))
        .expect("the export says that it waits for the source");
    assert!(
        waiting.starts_with(&name) && waiting.contains("next try in") && waiting.contains("giving up at"),
        "{waiting}"
    );
    s.restart();
    let back = rx
        .iter()
        .find(|l| l.contains("reconnected after"))
        .expect("and that it is back");
    assert!(back.starts_with(&name), "{back}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(keys(out.to_str().unwrap()).len(), 5000);
}

/// Every file kvferry writes (shard files, MANIFEST.json, checkpoints, import state, reports,
/// RESP output) is 0600 and every directory it makes 0700, even under `umask 000` (issue 11).
#[test]
fn everything_written_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start(support::Kind::Redis, &[]);
    populate(&s);
    let t = Server::start(support::Kind::Redis, &[]);
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (snap, state) = (p("out/snap"), p("state/import"));
    let bin = env!("CARGO_BIN_EXE_kvferry");
    let open = |args: &str| {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("umask 000; exec {bin} {args}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{args}: {}", String::from_utf8_lossy(&o.stderr));
    };
    open(&format!(
        "export --source {} --db 0,3 --out {snap} --report {}",
        s.url(),
        p("export.json")
    ));
    open(&format!(
        "import {snap} --target {} --db-map 0=0,3=3 --state {state} --report {}",
        t.url(),
        p("import.json")
    ));
    open(&format!("import {snap} --resp {} --db-map 0=0,3=3", p("out.resp")));
    let mut seen = 0;
    let mut stack = vec![dir.path().join("out"), dir.path().join("state")];
    for f in ["export.json", "import.json", "out.resp"] {
        stack.push(dir.path().join(f));
    }
    while let Some(path) = stack.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 6, "shard files, manifest, state and reports: {seen} files");
}

/// Ctrl-C (SIGINT) or SIGTERM stops an export cleanly: it checkpoints, says what was done and
/// the command that continues it (without the password), and exits 130; that command finishes
/// the snapshot with every key exactly once (issue 11).
#[test]
fn an_interrupted_export_says_how_to_resume() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let s = Server::start(support::Kind::Redis, &[("requirepass", "s3cret")]);
        let url = format!("redis://:s3cret@127.0.0.1:{}", s.port);
        let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
        let kv: Vec<(String, String)> = (0..6000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let _: () = c.mset(&kv).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        let out_s = out.to_str().unwrap();
        let args = [
            "export",
            "--source",
            &url,
            "--db",
            "0",
            "--out",
            out_s,
            "--progress",
            "none",
        ];
        let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
            .env("XDG_STATE_HOME", support::state_home())
            .args(args)
            .args(["--max-ops-per-sec", "4000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the shard to start", || out.join("src0-db0.0000.kvf").exists());
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(130),
            "{stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            stdout.contains("interrupted: 0 of 1 shards complete (0 keys in them)"),
            "{stdout}"
        );
        let resume = stdout.lines().last().unwrap().trim();
        assert!(resume.ends_with("--resume") && !resume.contains("s3cret"), "{resume}");
        assert!(
            resume.contains(&format!("redis://:PASSWORD@127.0.0.1:{}", s.port)),
            "{resume}"
        );
        assert!(!out.join("MANIFEST.json").exists());
        let o = kvferry(&[&args[..], &["--resume"]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let m: J = serde_json::from_slice(&std::fs::read(out.join("MANIFEST.json")).unwrap()).unwrap();
        assert_eq!(
            m["totals"]["keys"],
            6000,
            "signal {signal}: {stdout}\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert_eq!(keys(out_s).len(), 6000);
    }
}

/// While an export writes a directory, a second one into it (a resume started by mistake) is
/// refused naming the first one's pid; after the first ends, no lock file is left (issue 11).
#[test]
fn a_second_export_into_the_same_directory_is_refused() {
    let s = Server::start(support::Kind::Redis, &[]);
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let out_s = out.to_str().unwrap();
    let args = [
        "export",
        "--source",
        &s.url(),
        "--db",
        "0",
        "--out",
        out_s,
        "--progress",
        "none",
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .args(["--max-ops-per-sec", "3000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the shard to start", || out.join("src0-db0.0000.kvf").exists());
    let o = kvferry(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("another kvferry (pid {}) is writing here", child.id())),
        "{err}"
    );
    let first = child.wait_with_output().unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(!out.join(".kvferry.lock").exists());
    assert_eq!(keys(out_s).len(), 3000);
}

/// A server stuck on one command (a proxy that never forwards STRLEN, which a string too big to
/// read in the batch is read with first): the export does not hang;
/// after the command got no reply three times (`--read-timeout 1`), it stops with exit 2,
/// naming the command, the key and the server, and says what to do (issue 15).
#[test]
fn a_command_that_never_answers_stops_the_export_by_name() {
    let s = Server::start(support::Kind::Redis, &[]);
    let _: () = s.conn().set("big", "x".repeat(100_000)).unwrap();
    let proxy = support::Proxy::start(s.port, support::Fault::Stall(b"STRLEN"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let started = std::time::Instant::now();
    let o = kvferry(&[
        "export",
        "--source",
        &url,
        "--db",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--read-timeout",
        "1",
        "--progress",
        "none",
    ]);
    assert!(started.elapsed().as_secs() < 60, "it gave up in time");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reading string \"big\": STRLEN")
            && err.contains(&format!("{url}: no reply in 1 s, 3 times"))
            && err.contains("--read-timeout"),
        "{err}"
    );
    assert!(!out.join("MANIFEST.json").exists());
}

/// `--out` takes a new or empty directory only, and a failed export that wrote no shard file
/// leaves no directory behind (issue 12: an unrelated directory got the files mixed in, and a
/// failed export left an empty --out).
#[test]
fn out_is_new_or_empty_and_a_failed_export_leaves_none() {
    let s = Server::source();
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    let o = kvferry(&["export", "--source", &s.url(), "--out", busy.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("notes.txt") && err.contains("new or empty directory"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1, "nothing added");
    let fresh = dir.path().join("fresh");
    let o = kvferry(&[
        "export",
        "--source",
        &s.url(),
        "--out",
        fresh.to_str().unwrap(),
        "--db",
        "99",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no database 99"));
    assert!(!fresh.exists(), "the failed export's directory is gone");
}

/// `export --sample` (issue 12, "Trial runs"): the same keys on every run, every type, the one
/// medium-sized hash and string (a size class the hash sample alone would likely miss), counts
/// that add up, and a snapshot that says it is a sample (inspect, import).
#[test]
fn a_sample_holds_the_same_keys_every_time_and_every_type_and_size() {
    let s = Server::source();
    let mut c = s.conn();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("medium:string")
        .arg("x".repeat(4000))
        .ignore()
        .cmd("HMSET") // Pika's HSET takes one field
        .arg("medium:hash")
        .arg((0..300).flat_map(|i| [format!("f{i}"), "v".into()]).collect::<Vec<_>>())
        .ignore()
        .query(&mut c)
        .unwrap();
    for i in 0..150 {
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(format!("s{i}"))
            .arg("v")
            .ignore()
            .cmd("HSET")
            .arg(format!("h{i}"))
            .arg("f")
            .arg("v")
            .ignore()
            .cmd("RPUSH")
            .arg(format!("l{i}"))
            .arg("a")
            .ignore()
            .cmd("SADD")
            .arg(format!("t{i}"))
            .arg("a")
            .ignore()
            .cmd("ZADD")
            .arg(format!("z{i}"))
            .arg(1)
            .arg("a")
            .ignore()
            .cmd("XADD")
            .arg(format!("x{i}"))
            .arg("*")
            .arg("f")
            .arg("v")
            .ignore()
            .query(&mut c)
            .unwrap();
    }
    let total = 2 + 6 * 150;
    let runs: Vec<Run> = (0..2).map(|_| export(&s, &["--db", "0", "--sample", "0.02"])).collect();
    let mut sets = Vec::new();
    for run in &runs {
        assert_eq!(run.output.status.code(), Some(0), "{}", support::text(&run.output));
        let k = keys(&run.out);
        let types: std::collections::BTreeSet<&str> = k.values().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(types.len(), 6, "every type: {types:?}");
        for big in ["\"medium:string\"", "\"medium:hash\""] {
            assert!(k.keys().any(|(_, key)| key == big), "{big} missing from the sample");
        }
        assert!(k.len() < total / 4, "a sample, not everything: {}", k.len());
        // Counts agree: the report's keys and those left out make the database.
        let r: J = serde_json::from_slice(&std::fs::read(&run.report).unwrap()).unwrap();
        let read: u64 = r["shards"][0]["keys_by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(read as usize, k.len());
        assert_eq!(read + r["shards"][0]["unsampled"].as_u64().unwrap(), total as u64);
        sets.push(k.into_keys().collect::<Vec<_>>());
        let stdout = String::from_utf8_lossy(&run.output.stdout);
        assert!(
            stdout.contains("outside the sample") && stdout.contains("Not a backup"),
            "{stdout}"
        );
    }
    assert_eq!(sets[0], sets[1], "the same keys on every run");
    let inspect = kvferry(&["inspect", &runs[0].out]);
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("sample     --sample 0.02"),
        "{}",
        support::text(&inspect)
    );
    if std::env::var_os("KVFERRY_TEST_PIKA").is_none() {
        // About N keys: a power-of-two fraction giving N to 2N, plus the types' and sizes' keys.
        let run = export(&s, &["--db", "0", "--sample", "100"]);
        assert_eq!(run.output.status.code(), Some(0), "{}", support::text(&run.output));
        let n = keys(&run.out).len();
        assert!((100..=200 + 18).contains(&n), "{n}");
    } else {
        let run = export(&s, &["--db", "0", "--sample", "100"]);
        assert_eq!(run.output.status.code(), Some(2));
        assert!(support::text(&run.output).contains("give a fraction instead"));
    }
}
