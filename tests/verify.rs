//! `kvferry verify` against real redis-server processes: after a clean import it finds nothing;
//! then each kind of difference is made on the target, and verify must name the key and what
//! differs: a deleted key, a changed string, a missing hash field, a reordered list, a changed
//! zset score (-0 for 0, and 1/3 with fewer digits), a dropped TTL, a TTL far off, a key of
//! another type, an extra key, an element changed deep inside a million-member list, and a
//! stream's consumer group moved back.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use redis::Commands;
use serde_json::Value as J;
use support::{kvferry, text, Kind, Server};

/// Pika has no consumer groups: there the stream has none, and a change of its entries stands in
/// for a group moved back.
fn populate(s: &Server) {
    let mut c = s.conn();
    let _: () = c.set("str", "hello").unwrap();
    let _: () = c.set("gone", "bye").unwrap();
    let _: () = c.hset_multiple("hash", &[("f1", "v1"), ("f2", "v2")]).unwrap();
    let _: () = c.rpush("list", &["a", "b", "c"]).unwrap();
    // Over 128 members: a skiplist, which keeps -0 apart from 0 (a small listpack zset stores
    // an integral score as an integer, and -0 becomes 0).
    let _: () = redis::cmd("ZADD").arg("zneg").arg("0").arg("m").query(&mut c).unwrap();
    let filler: Vec<(f64, String)> = (0..200).map(|i| (i as f64 + 1.0, format!("f{i}"))).collect();
    let _: () = c.zadd_multiple("zneg", &filler).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("zthird")
        .arg("0.333333333333333314829616256247390992939472198486328125")
        .arg("m")
        .query(&mut c)
        .unwrap();
    let _: () = c.set_ex("ttl-drop", "x", 3600).unwrap();
    let _: () = c.set_ex("ttl-far", "x", 3600).unwrap();
    let _: () = c.sadd("retyped", "m").unwrap();
    let _: () = c.set_ex("ok-ttl", "x", 3600).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("stream")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    if s.kind != Kind::Pika {
        support::group_with_a_pending_entry(&mut c, "stream");
    }
    for chunk in (0..1_000_000).collect::<Vec<u32>>().chunks(50_000) {
        let items: Vec<String> = chunk.iter().map(|i| format!("e{i}")).collect();
        let _: () = c.rpush("biglist", items).unwrap();
    }
}

fn report_lines(path: &Path) -> Vec<J> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn verify_finds_each_kind_of_difference_and_names_the_key() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap").to_string_lossy().into_owned();
    let o = kvferry(&[
        "export",
        "--source",
        &s.url(),
        "--db",
        "0",
        "--out",
        &snap,
        "--progress",
        "none",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = Server::target();
    let o = kvferry(&["import", &snap, "--target", &t.url(), "--progress", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    let rep = dir.path().join("diff.jsonl");
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            snap.as_str(),
            "--target",
            "",
            "--progress",
            "none",
            "--report",
            rep.to_str().unwrap(),
        ];
        let url = t.url();
        args[3] = &url;
        args.extend(extra);
        kvferry(&args)
    };
    let o = verify(&["--extra"]);
    assert_eq!(o.status.code(), Some(0), "a clean import verifies: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("12 keys compared"),
        "{}",
        text(&o)
    );
    assert!(report_lines(&rep).is_empty());

    let mut c = t.conn();
    let _: () = c.del("gone").unwrap();
    let _: () = c.set("str", "hellO").unwrap();
    let _: () = c.hdel("hash", "f2").unwrap();
    let _: () = c.del("list").unwrap();
    let _: () = c.rpush("list", &["a", "c", "b"]).unwrap();
    // Redis does not update a score that compares equal (-0 == 0): remove, then add.
    let _: () = c.zrem("zneg", "m").unwrap();
    let _: () = redis::cmd("ZADD").arg("zneg").arg("-0").arg("m").query(&mut c).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("zthird")
        .arg("0.333333")
        .arg("m")
        .query(&mut c)
        .unwrap();
    let _: () = c.persist("ttl-drop").unwrap();
    let _: () = c.expire("ttl-far", 90_000).unwrap();
    let _: () = c.del("retyped").unwrap();
    let _: () = c.set("retyped", "m").unwrap();
    let _: () = c.set("extra", "not in the snapshot").unwrap();
    let _: () = c.lset("biglist", 765_432, "changed").unwrap();
    if s.kind == Kind::Pika {
        let _: String = redis::cmd("XADD")
            .arg("stream")
            .arg("2-1")
            .arg("f")
            .arg("later")
            .query(&mut c)
            .unwrap();
    } else {
        let _: () = redis::cmd("XGROUP")
            .arg("SETID")
            .arg("stream")
            .arg("g")
            .arg("0")
            .query(&mut c)
            .unwrap();
    }

    let o = verify(&["--extra"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let got: BTreeSet<(String, String)> = report_lines(&rep)
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().to_string(),
                l["problem"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("gone", "missing"),
        ("str", "wrong_value"),
        ("hash", "wrong_value"),
        ("list", "wrong_value"),
        ("zneg", "wrong_value"),
        ("zthird", "wrong_value"),
        ("ttl-drop", "wrong_ttl"),
        ("ttl-far", "wrong_ttl"),
        ("retyped", "wrong_type"),
        ("extra", "extra"),
        ("biglist", "wrong_value"),
        ("stream", "wrong_value"),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want, "{}", text(&o));
    let lines = report_lines(&rep);
    // The detail reported for `key`, which must name what differs.
    let detail = |key: &str| -> String {
        let l = lines
            .iter()
            .find(|l| l["key"] == key)
            .unwrap_or_else(|| panic!("no line for {key}"));
        l["detail"].as_str().unwrap().to_string()
    };
    let big = detail("biglist");
    assert!(big.contains("element 765432"), "{big}");
    let stream = detail("stream");
    let want = if s.kind == Kind::Pika {
        "XLEN is 2, expected 1"
    } else {
        "group \"g\": last delivered id 1-1 expected, found \"0-0\""
    };
    assert!(stream.contains(want), "{stream}");
    let zneg = detail("zneg");
    assert!(zneg.contains("score 0.0 expected, found -0"), "{zneg}");

    // A sample checks a fixed part of the keys: the same ones each time.
    // (Connections report in parallel: compare the lines as a set.)
    let lines_of = || -> BTreeSet<String> {
        std::fs::read_to_string(&rep)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    let o1 = verify(&["--sample", "0.3"]);
    let first = lines_of();
    let o2 = verify(&["--sample", "0.3"]);
    assert_eq!(first, lines_of());
    assert!(first.len() < 12, "a sample, not every difference: {first:?}");
    assert_eq!(o1.status.code(), o2.status.code());
    assert!(
        String::from_utf8_lossy(&o1.stdout).contains("(a sample of 0.3)"),
        "{}",
        text(&o1)
    );

    // Against the source: how far it drifted since the export.
    let _: () = s.conn().set("str", "changed at the source").unwrap();
    let o = kvferry(&[
        "verify",
        &snap,
        "--source",
        &s.url(),
        "--progress",
        "none",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines = report_lines(&rep);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["key"], "str");
}

#[test]
fn a_server_that_cannot_be_reached_exits_2() {
    let port = support::free_port_any();
    let o = kvferry(&[
        "verify",
        "fixtures/good/all-types",
        "--target",
        &format!("redis://127.0.0.1:{port}"),
        "--shard",
        "src0-db0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("could not verify") && text(&o).contains("connection refused"),
        "{}",
        text(&o)
    );
}

/// A snapshot of every database where only one holds keys: `verify --extra` needs no mapping for
/// the empty ones, as import does not (issue 11), and still finds a key the snapshot lacks.
#[test]
fn extra_skips_empty_shards_like_import() {
    let s = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("k", "v").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap").to_string_lossy().into_owned();
    let o = kvferry(&["export", "--source", &s.url(), "--out", &snap, "--progress", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = Server::start(Kind::Redis, &[]);
    let o = kvferry(&["import", &snap, "--target", &t.url(), "--progress", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kvferry(&["verify", &snap, "--target", &t.url(), "--extra", "--progress", "none"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _: () = t.conn().set("stray", "x").unwrap();
    let o = kvferry(&["verify", &snap, "--target", &t.url(), "--extra", "--progress", "none"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stray"), "{}", text(&o));
}
