//! `kvferry migrate` end to end: source -> target with no files, compared key by key (type,
//! value, TTL) with the source, with database mapping, its verify, its report, `--via` keeping
//! a snapshot, a non-empty target refused, and `--dry-run`. Servers are real (tests/support):
//! Pika as the source when `KVFERRY_TEST_PIKA` is set, Kvrocks as the target when
//! `KVFERRY_TEST_KVROCKS` is, else Redis. Killed and resumed runs are in tests/faults.rs.

mod support;

use redis::Commands;
use serde_json::Value as J;
use support::compare::assert_same;
use support::{kvferry, text, Kind, Server};

/// Every type, binary keys, an empty string, a 1 MiB value, odd scores, TTLs, a stream with a
/// deleted entry (and, off Pika, a consumer group with a pending entry), and a second database.
fn populate(s: &Server) {
    let mut c = s.conn();
    let _: () = c.set("str", "hello").unwrap();
    let _: () = c.set("empty", "").unwrap();
    let _: () = c.set(b"\xff\xfebin", b"\x00\xff").unwrap();
    let _: () = c.set("big", "x".repeat(1 << 20)).unwrap();
    for (f, v) in [("f1", "v1"), ("f2", "")] {
        let _: () = redis::cmd("HSET").arg("hash").arg(f).arg(v).query(&mut c).unwrap();
    }
    let _: () = c.rpush("list", &["a", "b", "a"]).unwrap();
    let _: () = c.sadd("set", &[b"m1".as_slice(), b"\x80"]).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("zset")
        .arg("-inf")
        .arg("lo")
        .arg("0.333333333333333314829616256247390992939472198486328125")
        .arg("third")
        .arg("+inf")
        .arg("hi")
        .query(&mut c)
        .unwrap();
    for id in ["5-1", "5-2", "7-0"] {
        let _: String = redis::cmd("XADD")
            .arg("stream")
            .arg(id)
            .arg("k")
            .arg(id)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("XDEL").arg("stream").arg("5-2").query(&mut c).unwrap();
    if s.kind != Kind::Pika {
        support::group_with_a_pending_entry(&mut c, "stream");
    }
    let _: () = c.set_ex("ttl", "soon", 3600).unwrap();
    let items: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
    let _: () = c.rpush("long", &items).unwrap();
    for i in 0..2000 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: () = c.set("in-db3", "three").unwrap();
    let _: () = c.rpush("list", &["other", "db"]).unwrap();
}

fn migrate(s: &Server, t: &Server, extra: &[&str]) -> std::process::Output {
    let (src, dst) = (s.url(), t.url());
    let mut args = vec!["migrate", "--source", &src, "--target", &dst, "--progress", "none"];
    args.extend_from_slice(extra);
    kvferry(&args)
}

#[test]
fn round_trip_with_no_files_is_verified_key_by_key() {
    let (mut s, mut t) = (Server::source(), Server::target());
    if t.kind == Kind::Kvrocks {
        eprintln!("did not run against Kvrocks: this test maps two databases; see the Redis run");
        return;
    }
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rep = dir.path().join("migrate.json");
    let (state_s, rep_s) = (state.to_string_lossy().into_owned(), rep.to_string_lossy().into_owned());
    let extra = ["--db-map", "0=0,3=3", "--state", &state_s, "--report", &rep_s];
    let o = migrate(&s, &t, &extra);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_same(&s, 0, &t, 0);
    assert_same(&s, 3, &t, 3);
    let keys = s.key_count(0) + s.key_count(3);
    assert!(
        out.contains(&format!("{keys} keys compared")),
        "the verify compares every key: {out}"
    );
    assert!(out.contains(", 0 differences"), "{out}");
    assert!(out.contains(&format!("total: written {keys} keys")), "{out}");
    // The report counts what the summary says; the checkpoints go once every key is written.
    let r: J = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    let written: u64 = r["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sh| {
            sh["written"]["written"]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(written, keys, "{r}");
    // A resume of the finished migration writes nothing and verifies again.
    let resumed: Vec<&str> = extra.iter().copied().chain(["--resume"]).collect();
    let o = migrate(&s, &t, &resumed);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("(resumed)") && text(&o).contains(", 0 differences"),
        "{}",
        text(&o)
    );
    // Again into the same target: refused before writing, naming a key.
    let o = migrate(&s, &t, &extra);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already holds keys"), "{}", text(&o));
    s.assert_alive();
    t.assert_alive();
}

#[test]
fn dry_run_writes_nothing_and_names_each_destination() {
    let (mut s, mut t) = (Server::source(), Server::target());
    if t.kind == Kind::Kvrocks {
        eprintln!("did not run against Kvrocks: this test maps two databases; see the Redis run");
        return;
    }
    populate(&s);
    let o = migrate(&s, &t, &["--db-map", "0=0,3=3", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("src0-db3"), "{}", text(&o));
    // What the writes would meet: the target's rights and room.
    assert!(
        text(&o).contains("ok      target") && text(&o).contains("room"),
        "{}",
        text(&o)
    );
    assert_eq!(t.key_count(0) + t.key_count(3), 0, "a dry run writes nothing");
    // Without a mapping for two databases: refused, saying how to map them.
    let o = migrate(&s, &t, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--db-map"), "{}", text(&o));
    assert!(
        text(&o).contains("the source holds databases 0, 3") && text(&o).contains("take one with --db\n"),
        "in migrate's words (--db, not import's --shard): {}",
        text(&o)
    );
    // A mapping that leaves out a database holding keys: refused, naming it.
    let o = migrate(&s, &t, &["--db-map", "0=0", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the source's database 3 is not mapped; map it, or leave it out with --db"),
        "{}",
        text(&o)
    );
    s.assert_alive();
    t.assert_alive();
}

#[test]
fn via_keeps_a_snapshot_that_matches_the_source() {
    let (mut s, mut t) = (Server::source(), Server::target());
    if t.kind == Kind::Kvrocks {
        eprintln!("did not run against Kvrocks: this test maps two databases; see the Redis run");
        return;
    }
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let snap_s = snap.to_string_lossy().into_owned();
    let state = dir.path().join("state").to_string_lossy().into_owned();
    let o = migrate(&s, &t, &["--db-map", "0=0,3=3", "--via", &snap_s, "--state", &state]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    assert_same(&s, 3, &t, 3);
    let o = kvferry(&["check", &snap_s]);
    assert_eq!(o.status.code(), Some(0), "the snapshot stays, whole: {}", text(&o));
    s.assert_alive();
    t.assert_alive();
}
