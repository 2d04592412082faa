//! `kvferry import` end to end: redis -> export -> import -> redis, checked key by key (type,
//! value, TTL), with database mapping, each conflict mode, a corrupt block, per-key errors,
//! authentication per connection, a target restarted mid-import and a killed import resumed.
//! Servers are real (tests/support): Kvrocks when `KVFERRY_TEST_KVROCKS` is set, else Redis.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use redis::Commands;
use serde_json::Value as J;
use support::compare::assert_same;
use support::{kvferry, text, Kind, Server};

/// Exports every database of `s` into `dir/snap`.
fn export(s: &Server, dir: &Path) -> String {
    let out = dir.join("snap").to_string_lossy().into_owned();
    let o = kvferry(&["export", "--source", &s.url(), "--out", &out, "--progress", "none"]);
    assert!(o.status.success(), "{}", text(&o));
    out
}

fn import(snap: &str, t: &Server, extra: &[&str]) -> Output {
    let mut args = vec!["import", snap, "--target", &t.url_owned(), "--progress", "none"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kvferry(&args)
}

/// The import checkpoint directories into the server on `port`: in the snapshot (none may be
/// there: it is a backup) and under the state home.
fn import_states(snap: &str, port: u16) -> Vec<PathBuf> {
    let inside = std::fs::read_dir(snap)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".import"));
    // This snapshot's, by its creation time: the state home is shared by every run of the
    // tests, and a port is used again.
    let home = support::state_home().join("kvferry");
    let prefix = format!("import-127.0.0.1_{port}-");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(snap).join("MANIFEST.json")).unwrap()).unwrap();
    let suffix = format!("-{}", manifest["created_unix_ms"]);
    let outside = std::fs::read_dir(&home)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(&suffix)
        });
    inside.chain(outside).collect()
}

trait UrlOwned {
    fn url_owned(&self) -> String;
}
impl UrlOwned for Server {
    fn url_owned(&self) -> String {
        self.url()
    }
}

/// Every type and edge case of the export tests: binary keys and members, empty strings, a 1 MB
/// value, ±inf, -0 and 1/3 scores, TTLs, a stream with a consumer group and a pending entry,
/// and a second database.
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
        .arg("-0")
        .arg("negzero")
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
        support::group_with_a_pending_entry(&mut c, "stream"); // Pika has no consumer groups
    }
    let _: () = c.set_ex("ttl", "soon", 3600).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("hash-ttl")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let _: () = c.expire("hash-ttl", 7200).unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: () = c.set("in-db3", "three").unwrap();
    let _: () = c.rpush("list", &["other", "db"]).unwrap();
}

fn report(path: &Path) -> J {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn sum(v: &J) -> u64 {
    v.as_object()
        .map_or(0, |m| m.values().map(|n| n.as_u64().unwrap()).sum())
}

#[test]
fn round_trip_of_every_type_and_database() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let rep = dir.path().join("import.json");
    // Kvrocks has one keyspace (SELECT is ignored): it takes db 0 here, and namespaces are
    // tested in namespaces_keep_databases_apart_on_kvrocks.
    let map: &[&str] = if t.kind == Kind::Kvrocks {
        &["--shard", "src0-db0"]
    } else {
        &["--db-map", "0=0,3=5"]
    };
    let o = import(&snap, &t, &[map, &["--report", rep.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    if t.kind != Kind::Kvrocks {
        assert_same(&s, 3, &t, 5);
    }
    let r = report(&rep);
    let written: u64 = r["shards"].as_array().unwrap().iter().map(|s| sum(&s["written"])).sum();
    assert_eq!(written, if t.kind == Kind::Kvrocks { 11 } else { 13 }, "{r}");
    assert_eq!(r["complete"], true);
    // The checkpoints are kept outside the snapshot (a backup), under the state home.
    let states = import_states(&snap, t.port);
    assert!(states.len() == 1 && !states[0].starts_with(&snap), "{states:?}");
    // A finished import resumed: nothing to do.
    let o = import(&snap, &t, &[map, &["--resume"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("complete already"),
        "{}",
        text(&o)
    );
}

/// Kvrocks namespaces (a connection enters one with AUTH <token>, SERVERS.md) keep the
/// snapshot's databases apart. Needs a Kvrocks binary (KVFERRY_TEST_KVROCKS); without one this
/// says so, and the token-per-connection mechanism is tested against Redis'
/// requirepass in each_connection_authenticates_with_its_token.
#[test]
fn namespaces_keep_databases_apart_on_kvrocks() {
    if std::env::var_os("KVFERRY_TEST_KVROCKS").is_none() {
        eprintln!("namespaces_keep_databases_apart_on_kvrocks: not run: set KVFERRY_TEST_KVROCKS=/path/to/kvrocks (namespaces are Kvrocks-only)");
        return;
    }
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::start(Kind::Kvrocks, &[("requirepass", "admin-pw")]);
    // Kvrocks ignores SELECT: a database map would merge the databases, and is refused.
    let admin_url = format!("redis://:admin-pw@127.0.0.1:{}", t.port);
    let o = kvferry(&["import", &snap, "--target", &admin_url, "--db-map", "0=0,3=3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ignores SELECT"), "{}", text(&o));
    let mut admin = redis::Client::open(format!("redis://:admin-pw@127.0.0.1:{}", t.port))
        .unwrap()
        .get_connection()
        .unwrap();
    for (ns, tok) in [("ns0", "tok0"), ("ns3", "tok3")] {
        let _: () = redis::cmd("NAMESPACE")
            .arg("ADD")
            .arg(ns)
            .arg(tok)
            .query(&mut admin)
            .unwrap();
    }
    let o = import(&snap, &t, &["--namespace-map", "0=tok0,3=tok3"]);
    assert!(o.status.success(), "{}", text(&o));
    for (tok, want) in [("tok0", "hello"), ("tok3", "")] {
        let mut c = redis::Client::open(format!("redis://:{tok}@127.0.0.1:{}", t.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let got: Option<String> = c.get("str").unwrap();
        assert_eq!(got.unwrap_or_default(), want, "namespace of {tok}");
    }
    let mut c3 = redis::Client::open(format!("redis://:tok3@127.0.0.1:{}", t.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(c3.lrange::<_, Vec<String>>("list", 0, -1).unwrap(), ["other", "db"]);
    // verify follows the same map, and finds a change inside one namespace.
    let url = t.url();
    let verify = || kvferry(&["verify", &snap, "--target", &url, "--namespace-map", "0=tok0,3=tok3"]);
    let o = verify();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let _: () = c3.rpush("list", "more").unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("\"list\"") && text(&o).contains("src0-db3"),
        "{}",
        text(&o)
    );
}

#[test]
fn several_databases_need_a_mapping_that_loses_nothing() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // Database numbers need a server with SELECT; for Kvrocks see the namespace test.
    let t = Server::start(Kind::Redis, &[]);
    let o = import(&snap, &t, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("holds databases 0, 3") && text(&o).contains("--db-map"),
        "{}",
        text(&o)
    );
    let o = import(&snap, &t, &["--db-map", "0=1,3=1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("would both be written to db 1"), "{}", text(&o));
    let o = import(&snap, &t, &["--db-map", "0=1"]);
    assert!(text(&o).contains("database 3 is not mapped"), "{}", text(&o));
    assert!(
        !text(&o).contains("checking"),
        "the mapping is checked before the snapshot is read through: {}",
        text(&o)
    );
    let n = t.key_count(0);
    assert_eq!(n, 0, "nothing written by refused runs");
    // Two databases into one, apart by prefix.
    let o = import(&snap, &t, &["--db-map", "0=1,3=1", "--prefix-map", "3=db3:"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = t.conn();
    let _: () = redis::cmd("SELECT").arg(1).query(&mut c).unwrap();
    let l: Vec<String> = c.lrange("db3:list", 0, -1).unwrap();
    assert_eq!(l, ["other", "db"]);
    let l: Vec<String> = c.lrange("list", 0, -1).unwrap();
    assert_eq!(l, ["a", "b", "a"]);
    // One shard alone needs no mapping.
    let t2 = Server::target();
    let o = import(&snap, &t2, &["--shard", "src0-db3"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&s, 3, &t2, 3);
}

#[test]
fn conflict_modes_on_a_target_that_holds_keys() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let mut c = t.conn();
    let _: () = c.rpush("list", &["old1", "old2"]).unwrap();
    let _: () = c.set("str", "old").unwrap();
    let _: () = c.set("mine", "kept").unwrap();
    // fail: refuses, writes nothing.
    let o = import(&snap, &t, &["--shard", "src0-db0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("already holds keys") && text(&o).contains("Nothing was written"),
        "{}",
        text(&o)
    );
    let n = t.key_count(0);
    assert_eq!(n, 3);
    // skip: existing keys stay, the rest is written, the skipped are named.
    let rep = dir.path().join("skip.json");
    let o = import(
        &snap,
        &t,
        &[
            "--shard",
            "src0-db0",
            "--conflict",
            "skip",
            "--report",
            rep.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let l: Vec<String> = c.lrange("list", 0, -1).unwrap();
    assert_eq!(l, ["old1", "old2"]);
    assert_eq!(c.get::<_, String>("str").unwrap(), "old");
    assert_eq!(c.get::<_, String>("big").unwrap().len(), 1 << 20);
    let r = report(&rep);
    let shard = &r["shards"][0];
    assert_eq!(sum(&shard["skipped"]), 2, "{r}");
    let named: Vec<&str> = shard["skipped_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(named.len(), 2);
    assert!(named.contains(&"list") && named.contains(&"str"), "{named:?}");
    // replace: the snapshot's values win; lists are not appended to; other keys stay.
    let o = import(&snap, &t, &["--shard", "src0-db0", "--conflict", "replace"]);
    assert!(o.status.success(), "{}", text(&o));
    let _: () = c.del("mine").unwrap();
    assert_same(&s, 0, &t, 0);
}

#[test]
fn dry_run_writes_nothing_and_resp_feeds_redis_cli() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // Database numbers need a server with SELECT; for Kvrocks see the namespace test.
    let t = Server::start(Kind::Redis, &[]);
    let o = import(&snap, &t, &["--db-map", "0=0,3=3", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing was written"),
        "{}",
        text(&o)
    );
    let n = t.key_count(0);
    assert_eq!(n, 0);
    assert!(import_states(&snap, t.port).is_empty(), "a dry run starts no import");
    let resp = dir.path().join("cmds.resp");
    let o = kvferry(&[
        "import",
        &snap,
        "--db-map",
        "0=0,3=3",
        "--resp",
        resp.to_str().unwrap(),
        "--progress",
        "none",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let pipe = Command::new("sh")
        .arg("-c")
        .arg(format!("redis-cli -p {} --pipe < {}", t.port, resp.display()))
        .output()
        .unwrap();
    assert!(pipe.status.success(), "{}", text(&pipe));
    assert!(
        String::from_utf8_lossy(&pipe.stdout).contains("errors: 0"),
        "{}",
        text(&pipe)
    );
    assert_same(&s, 0, &t, 0);
    assert_same(&s, 3, &t, 3);
}

/// Flips a byte inside the first data block of the snapshot's shard for db 0.
fn corrupt_first_block(snap: &str) -> PathBuf {
    corrupt_block(snap, |_| 0).0
}

/// Flips a byte inside block `which(blocks)` of the first shard file; returns the file and the
/// block.
fn corrupt_block(snap: &str, which: impl Fn(usize) -> usize) -> (PathBuf, usize) {
    let file = Path::new(snap).join("src0-db0.0000.kvf");
    let mut b = std::fs::read(&file).unwrap();
    let r = kvferry::format::reader::ShardReader::open(&file).unwrap();
    let block = which(r.trailer().blocks.len());
    let off = r.trailer().blocks[block].offset() as usize + 40;
    b[off] ^= 0xff;
    std::fs::write(&file, b).unwrap();
    (file, block)
}

/// A source with 3000 strings of 1000 bytes (enough for several blocks), and its snapshot.
fn several_blocks(dir: &Path) -> (Server, String) {
    let s = Server::source();
    let mut c = s.conn();
    for i in 0..3000 {
        let _: () = c.set(format!("k{i:05}"), "v".repeat(1000)).unwrap();
    }
    let snap = export(&s, dir);
    (s, snap)
}

/// `--no-check` imports without the check before writing: a damaged block then stops the import
/// part way, and the summary and report count what was written (issue 11: "written 0" after
/// 1008 keys); with --skip-corrupt-blocks the rest is imported and the lost keys counted.
#[test]
fn no_check_counts_what_it_wrote_before_a_damaged_block() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, snap) = several_blocks(dir.path());
    let (_, block) = corrupt_block(&snap, |blocks| {
        assert!(blocks >= 3, "several blocks: {blocks}");
        blocks / 2
    });
    let t = Server::target();
    let rep = dir.path().join("r.json");
    let o = import(&snap, &t, &["--no-check", "--report", rep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("block {block}")), "{}", text(&o));
    let written = sum(&report(&rep)["shards"][0]["written"]);
    let n = t.key_count(0);
    assert!(n > 0 && n < 3000, "stopped part way: {n}");
    assert_eq!(written, n, "the report counts what was written");
    assert!(text(&o).contains(&format!("total: written {n}")), "{}", text(&o));
    let t = Server::target();
    let o = import(
        &snap,
        &t,
        &["--no-check", "--skip-corrupt-blocks", "--report", rep.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&rep);
    let written = sum(&r["shards"][0]["written"]);
    assert_eq!(written, t.key_count(0));
    assert_eq!(written + r["shards"][0]["lost_keys"].as_u64().unwrap(), 3000, "{r}");
}

#[test]
fn a_corrupt_block_is_refused_before_writing_or_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, snap) = several_blocks(dir.path());
    let file = corrupt_first_block(&snap);
    let t = Server::target();
    let o = import(&snap, &t, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = text(&o);
    assert!(
        err.contains("nothing was written") && err.contains(&file.display().to_string()) && err.contains("block 0"),
        "{err}"
    );
    let n = t.key_count(0);
    assert_eq!(n, 0);
    let rep = dir.path().join("r.json");
    let o = import(&snap, &t, &["--skip-corrupt-blocks", "--report", rep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "lost data is not success: {}", text(&o));
    assert!(
        text(&o).contains("LOST") && text(&o).contains("block 0"),
        "{}",
        text(&o)
    );
    let r = report(&rep);
    let written = sum(&r["shards"][0]["written"]);
    let n = t.key_count(0);
    assert_eq!(n, written);
    assert!(
        written > 0 && written < 3000,
        "the other blocks are imported: {written}"
    );
    // The keys lost with the block are counted (issue 11: it said "failed 0").
    let lost = r["shards"][0]["lost_keys"].as_u64().unwrap();
    let failed = sum(&r["shards"][0]["failed"]);
    assert_eq!(written + failed + lost, 3000, "{r}");
    assert!(lost > 0, "{r}");
    assert!(
        text(&o).contains(&format!("lost {lost} (in damaged blocks)")),
        "{}",
        text(&o)
    );
    // Where the block was: its records, and the key after it.
    assert!(
        text(&o).contains("records, as its file's index says") && text(&o).contains("the first key after it: \"k"),
        "{}",
        text(&o)
    );
}

/// Builds a snapshot by hand, with what Redis cannot produce: keys flagged MULTI_TYPE (Pika
/// <= 3.5 holds one key under several types, SERVERS.md), a Pika HyperLogLog flag, a NaN score.
fn crafted_snapshot(dir: &Path) -> String {
    crafted_snapshot_from(dir, "pika 3.5.5")
}

/// The same, as if exported from `server`.
fn crafted_snapshot_from(dir: &Path, server: &str) -> String {
    use kvferry::format::consts::*;
    use kvferry::format::record::*;
    use kvferry::format::snapshot::*;
    let snap = dir.join(format!("crafted-{}", server.replace(' ', "-")));
    std::fs::create_dir_all(&snap).unwrap();
    let o = SnapshotOptions::default();
    let spec = ShardSpec {
        id: "src0-db0".into(),
        source: "redis://pika:9221".into(),
        source_server: Some(server.into()),
        db: 0,
    };
    let mut sink = ShardSink::new(&snap, spec, o.clone(), 1).unwrap();
    let m = FLAG_LAST | FLAG_MULTI_TYPE;
    let hll = vec![0u8; 131072];
    let recs = [
        KeyRecord {
            db: 0,
            key: b"mt",
            part: 0,
            flags: m,
            expire_at_ms: None,
            value: Value::String(b"s"),
        },
        KeyRecord {
            db: 0,
            key: b"plain",
            part: 0,
            flags: FLAG_LAST,
            expire_at_ms: None,
            value: Value::String(b"p"),
        },
        KeyRecord {
            db: 0,
            key: b"mt",
            part: 0,
            flags: m,
            expire_at_ms: None,
            value: Value::Hash(vec![(b"f", b"v")]),
        },
        KeyRecord {
            db: 0,
            key: b"mt",
            part: 0,
            flags: m,
            expire_at_ms: None,
            value: Value::List(vec![b"x"]),
        },
        KeyRecord {
            db: 0,
            key: b"hll",
            part: 0,
            flags: FLAG_LAST | FLAG_PIKA_HLL,
            expire_at_ms: None,
            value: Value::String(&hll),
        },
        KeyRecord {
            db: 0,
            key: b"nan",
            part: 0,
            flags: FLAG_LAST,
            expire_at_ms: None,
            value: Value::ZSet(vec![(b"a", 1.0), (b"b", f64::NAN)]),
        },
        KeyRecord {
            db: 0,
            key: b"gone",
            part: 0,
            flags: FLAG_LAST,
            expire_at_ms: Some(1000),
            value: Value::String(b"old"),
        },
    ];
    for r in &recs {
        sink.push(r).unwrap();
    }
    let entry = sink.finish().unwrap();
    write_manifest(&snap, &Manifest::new(1, o.writer_name.clone(), vec![entry])).unwrap();
    snap.to_string_lossy().into_owned()
}

#[test]
fn multi_type_keys_need_a_policy_and_target_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let snap = crafted_snapshot(dir.path());
    let t = Server::target();
    let o = import(&snap, &t, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--multi-type first") && text(&o).contains("\"mt\""),
        "{}",
        text(&o)
    );
    // The manifest and trailers count them (format 1.1), so they are found whatever the source
    // says it was.
    let other = crafted_snapshot_from(dir.path(), "redis 7.0.15");
    let manifest: J = serde_json::from_slice(&std::fs::read(Path::new(&other).join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["shards"][0]["multi_type_keys"], 3, "{manifest}");
    let o = import(&other, &t, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("\"mt\""), "{}", text(&o));
    let rep = dir.path().join("first.json");
    let o = import(&snap, &t, &["--multi-type", "first", "--report", rep.to_str().unwrap()]);
    // The NaN score is refused by Redis (Pika takes it): that key fails, by name, exit 1.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut c = t.conn();
    assert_eq!(c.get::<_, String>("mt").unwrap(), "s");
    let r = report(&rep);
    let shard = &r["shards"][0];
    let failed = shard["failed_keys"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    assert_eq!(failed[0]["key"], "nan");
    assert!(failed[0]["reason"].as_str().unwrap().starts_with("ZADD: "), "{r}");
    assert!(
        !c.exists::<_, bool>("nan").unwrap(),
        "a failed key is removed, not left partial"
    );
    assert_eq!(shard["multi_type"].as_array().unwrap().len(), 3, "{r}");
    // verify's default is the import's (--multi-type fail): the key held under several types
    // is not compared, and the summary says so; given the import's `first`, it is compared.
    let verify = |extra: &[&str]| {
        let base = ["verify", snap.as_str(), "--target", &t.url(), "--progress", "none"];
        kvferry(&[&base[..], extra].concat())
    };
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1), "the NaN key is missing: {}", text(&o));
    assert!(
        text(&o).contains("1 key held several types and was not compared"),
        "{}",
        text(&o)
    );
    let o = verify(&["--multi-type", "first"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        !text(&o).contains("not compared") && text(&o).contains("1 difference"),
        "only the NaN key differs: {}",
        text(&o)
    );
    assert_eq!(shard["pika_hll"][0]["key"], "hll");
    assert_eq!(c.strlen::<_, usize>("hll").unwrap(), 131072);
    assert_eq!(sum(&shard["expired"]), 1);
    assert!(!c.exists::<_, bool>("gone").unwrap(), "an expired key is not written");
    // suffix: every type survives.
    let t2 = Server::target();
    let o = import(&snap, &t2, &["--multi-type", "suffix"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut c = t2.conn();
    assert_eq!(c.get::<_, String>("mt").unwrap(), "s");
    assert_eq!(c.hget::<_, _, String>("mt:hash", "f").unwrap(), "v");
    assert_eq!(c.lrange::<_, Vec<String>>("mt:list", 0, -1).unwrap(), ["x"]);
    // verify follows the same policy: every type where suffix put it; the NaN key that Redis
    // refused is missing; the expired key is expected absent.
    let rep = dir.path().join("verify.jsonl");
    let o = kvferry(&[
        "verify",
        &snap,
        "--target",
        &t2.url(),
        "--multi-type",
        "suffix",
        "--progress",
        "none",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let lines = std::fs::read_to_string(&rep).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
    assert!(
        lines.contains("\"key\":\"nan\"") && lines.contains("missing"),
        "{lines}"
    );
}

#[test]
fn per_key_errors_are_listed_and_fail_fast_stops() {
    let s = Server::source();
    let mut c = s.conn();
    for i in 0..200 {
        let _: () = c.set(format!("k{i:03}"), "v".repeat(10_000)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // A target that runs out of memory part way (Redis: OOM; Kvrocks: "reach space limit").
    let t = Server::start(Kind::Redis, &[("maxmemory", "2mb"), ("maxmemory-policy", "noeviction")]);
    let rep = dir.path().join("r.json");
    let o = import(&snap, &t, &["--report", rep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&rep);
    let failed = r["shards"][0]["failed_keys"].as_array().unwrap();
    let written = sum(&r["shards"][0]["written"]);
    assert!(!failed.is_empty() && written > 0, "{r}");
    assert_eq!(written + failed.len() as u64, 200, "every key written or named: {r}");
    assert!(
        failed.iter().all(|f| f["reason"].as_str().unwrap().contains("OOM")),
        "{r}"
    );
    let n = t.key_count(0);
    assert_eq!(n, written);
    let _: () = redis::cmd("FLUSHALL").query(&mut t.conn()).unwrap();
    let o = import(&snap, &t, &["--fail-fast", "--connections", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--fail-fast") && text(&o).contains("OOM") && text(&o).contains("\"k"),
        "{}",
        text(&o)
    );
}

#[test]
fn each_connection_authenticates_with_its_token() {
    let s = Server::source();
    let mut c = s.conn();
    let _: () = c.set("a", "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // Redis' requirepass stands in for a Kvrocks namespace token: each connection sends
    // AUTH <token> alone, as a namespace needs (SERVERS.md).
    let t = Server::start(Kind::Redis, &[("requirepass", "ns-token-0")]);
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args([
            "import",
            &snap,
            "--target",
            &t.url(),
            "--namespace-map",
            "0=env:NS0",
            "--progress",
            "none",
        ])
        .env("NS0", "wrong-token")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("authentication failed") && !text(&o).contains("wrong-token"),
        "{}",
        text(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args([
            "import",
            &snap,
            "--target",
            &t.url(),
            "--namespace-map",
            "0=env:NS0",
            "--progress",
            "none",
        ])
        .env("NS0", "ns-token-0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut c = redis::Client::open(format!("redis://:ns-token-0@127.0.0.1:{}", t.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(c.get::<_, String>("a").unwrap(), "1");
}

/// A source with many small keys and a long list: an import of it takes seconds when throttled.
fn populate_many(s: &Server) {
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..20_000 {
        p.set(format!("key:{i:05}"), format!("{i:0200}")).ignore();
        if i % 2 == 0 {
            // Two commands per key (SET, PEXPIREAT): a kill can fall between them.
            p.expire(format!("key:{i:05}"), 3600).ignore();
        }
    }
    let _: () = p.query(&mut c).unwrap();
    let items: Vec<String> = (0..50_000).map(|i| format!("e{i}")).collect();
    for chunk in items.chunks(10_000) {
        let _: () = c.rpush("biglist", chunk).unwrap();
    }
}

/// Polls until `cond` holds, for at most 60 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
}

fn dbsize(t: &Server) -> u64 {
    t.try_key_count(0).unwrap_or(0)
}

#[test]
fn a_restarted_target_gets_what_was_not_acknowledged() {
    let s = Server::source();
    populate_many(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // Every acknowledged write is on disk before its reply, so a restart loses nothing.
    let mut t = Server::start(Kind::Redis, &[("appendonly", "yes"), ("appendfsync", "always")]);
    let rep = dir.path().join("r.json");
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args([
            "import",
            &snap,
            "--target",
            &t.url(),
            "--progress",
            "none",
            "--pipeline",
            "100",
            "--max-ops-per-sec",
            "8000",
        ])
        .args(["--report", rep.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the import to write some keys", || dbsize(&t) > 2000);
    t.restart();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let r = report(&rep);
    assert!(r["shards"][0]["reconnects"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(sum(&r["shards"][0]["written"]), 20_001, "{r}");
}

#[test]
fn a_killed_import_resumes_without_duplicates() {
    killed_then_resumed("fail", false);
}

/// The target restarts (keeping what it acknowledged) between the killed run and its resume.
#[test]
fn a_killed_import_resumes_into_a_restarted_target() {
    killed_then_resumed("fail", true);
}

/// In skip mode, a key that the killed run had begun to write exists on the target when the
/// import resumes: its logged decision makes the resumed run rewrite it, not skip it half
/// written; keys that existed before the import stay as they were.
#[test]
fn a_killed_skip_mode_import_resumes_without_partial_keys() {
    killed_then_resumed("skip", false);
}

fn killed_then_resumed(conflict: &str, restart_between: bool) {
    let s = Server::source();
    populate_many(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let mut t = Server::target();
    if restart_between && t.kind == Kind::Redis {
        // Every acknowledged write on disk before its reply.
        t = Server::start(Kind::Redis, &[("appendonly", "yes"), ("appendfsync", "always")]);
    }
    if conflict == "skip" {
        let _: () = t.conn().set("key:00005", "theirs").unwrap();
    }
    let state = dir.path().join("state");
    let url = t.url();
    let args = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "import",
            &snap,
            "--target",
            &url,
            "--progress",
            "none",
            "--pipeline",
            "100",
            "--conflict",
            conflict,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend([
            "--state".to_string(),
            state.to_string_lossy().into_owned(),
            "--checkpoint-secs".into(),
            "0.1".into(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args(&["--max-ops-per-sec", "8000"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let shard_state = state.join("src0-db0.json");
    wait_for("a checkpoint past the start", || {
        std::fs::read(&shard_state)
            .ok()
            .and_then(|b| serde_json::from_slice::<J>(&b).ok())
            .is_some_and(|j| j["resume"]["block"].as_u64().unwrap_or(0) >= 2)
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    if restart_between {
        t.restart();
    }
    let before = dbsize(&t);
    assert!(before < 20_001, "killed before the end: {before}");
    // Without --resume, the unfinished import is not silently restarted.
    let o = kvferry(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("add --resume"), "{}", text(&o));
    let rep = dir.path().join("r.json");
    let o = kvferry(
        &args(&["--resume", "--report", rep.to_str().unwrap()])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&rep);
    assert_eq!(r["shards"][0]["resumed"], true);
    if conflict == "skip" {
        let mut c = t.conn();
        assert_eq!(c.get::<_, String>("key:00005").unwrap(), "theirs");
        let _: () = c.set("key:00005", format!("{:0200}", 5)).unwrap();
        assert_eq!(sum(&r["shards"][0]["written"]), 20_000, "each key counted once: {r}");
        assert_eq!(sum(&r["shards"][0]["skipped"]), 1, "{r}");
    } else {
        assert_eq!(sum(&r["shards"][0]["written"]), 20_001, "each key counted once: {r}");
    }
    assert_same(&s, 0, &t, 0);
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".skip."))
        .collect();
    assert!(left.is_empty(), "the skip log is removed once the shard is done");
}

/// A command the target refuses with a protocol error and a closed connection (a bulk above
/// proto-max-bulk-len; Kvrocks does the same above 1,048,576 arguments, SERVERS.md): the rest of
/// the pipeline was dropped unexecuted, so it is resent; the refused key fails by name; nothing
/// loops forever.
#[test]
fn a_command_that_closes_the_connection_fails_only_its_key() {
    let s = Server::source();
    let mut c = s.conn();
    for i in 0..500 {
        let _: () = c.set(format!("k{i:03}"), i).unwrap();
    }
    // A 3 MB string comes in 1 MiB parts: its SETRANGE fails (the size limit), an error reply.
    let _: () = c.set("huge", "h".repeat(3 << 20)).unwrap();
    // A 2 MB hash value is one element: its HSET is a protocol error that closes the connection.
    let _: () = c.hset("hbig", "f", "v".repeat(2 << 20)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::start(Kind::Redis, &[("proto-max-bulk-len", "1mb")]);
    let rep = dir.path().join("r.json");
    let o = import(&snap, &t, &["--connections", "1", "--report", rep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = report(&rep);
    let failed = r["shards"][0]["failed_keys"].as_array().unwrap();
    let mut names: Vec<&str> = failed.iter().map(|f| f["key"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["hbig", "huge"], "{r}");
    let hbig = failed.iter().find(|f| f["key"] == "hbig").unwrap()["reason"]
        .as_str()
        .unwrap();
    assert!(hbig.starts_with("HSET: ") && hbig.contains("Protocol error"), "{hbig}");
    assert_eq!(sum(&r["shards"][0]["written"]), 500, "{r}");
    assert_eq!(dbsize(&t), 500, "failed keys are not left half written");
}

/// `--max-ops-per-sec` holds the import below a rate, so it can run beside production traffic.
#[test]
fn max_ops_per_sec_limits_the_rate() {
    let s = Server::source();
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let started = std::time::Instant::now();
    let o = import(&snap, &t, &["--max-ops-per-sec", "5000"]);
    let took = started.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", text(&o));
    assert!(took >= 0.55, "3000 SETs at 5,000 commands/s took only {took:.2}s");
    assert_eq!(dbsize(&t), 3000);
}

/// An unreachable target or a wrong password: one line that names the target and says what to
/// do, and nothing else happens.
#[test]
fn unreachable_targets_and_wrong_passwords_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // (It holds keys under several types: --multi-type lets the import reach the target.)
    let snap = "fixtures/good/all-types";
    let port = support::free_port_any();
    let o = kvferry(&[
        "import",
        snap,
        "--target",
        &format!("redis://127.0.0.1:{port}"),
        "--shard",
        "src0-db0",
        "--multi-type",
        "first",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("redis://127.0.0.1:{port}: connection refused")),
        "{err}"
    );
    let t = Server::start(Kind::Redis, &[("requirepass", "right")]);
    let url = format!("redis://:wrong@127.0.0.1:{}", t.port);
    let state = dir.path().join("state");
    let o = kvferry(&[
        "import",
        snap,
        "--target",
        &url,
        "--shard",
        "src0-db0",
        "--multi-type",
        "first",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("authentication failed") && !err.contains("wrong"), "{err}");
    assert!(!state.exists(), "nothing was started");
}

/// The expiry-precision probe of a Pika target (Pika 4.0.1 keeps milliseconds but reports
/// `pika_version:4.0.0`, 3.x keeps seconds: detected, never read from the version). On a
/// millisecond server it says so, and its probe key is gone afterwards. With
/// `KVFERRY_TEST_PIKA` set it also runs against Pika and says what that Pika keeps.
#[test]
fn expiry_precision_is_detected_and_leaves_no_key() {
    let mut servers = vec![Server::start(Kind::Redis, &[])];
    if std::env::var_os("KVFERRY_TEST_PIKA").is_some() {
        servers.push(Server::start(Kind::Pika, &[]));
    }
    for s in &servers {
        let mut c = s.conn();
        let ms = kvferry::target::build::ms_expiry(&mut c).unwrap();
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("pika_version:"))
            .map(str::trim);
        eprintln!(
            "{:?} {version:?}: expiries in {}",
            s.kind,
            if ms { "milliseconds" } else { "seconds" }
        );
        match version {
            None => assert!(ms, "Redis keeps milliseconds"),
            Some(v) if v.starts_with('3') => assert!(!ms, "Pika {v} keeps seconds"),
            Some(_) => {}
        }
        let keys: Vec<String> = c.keys("kvferry:ttl-probe:*").unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}

/// Pending entries whose messages were deleted at the source (XREADGROUP, then XDEL) are kept:
/// the import puts a placeholder at the id, claims it and deletes it, then sets the stream's
/// counters, so the target's XPENDING, XINFO STREAM and entries equal the source's, and verify
/// finds nothing (issue 11: the import said "failed 0" and dropped them).
#[test]
fn pending_entries_of_deleted_messages_are_kept() {
    let s = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    for id in ["1-1", "2-1", "3-1", "4-1"] {
        let _: String = redis::cmd("XADD")
            .arg("st")
            .arg(id)
            .arg("f")
            .arg(id)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("st")
        .arg("g1")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g1")
        .arg("alice")
        .arg("STREAMS")
        .arg("st")
        .arg(">")
        .query(&mut c)
        .unwrap();
    // The first, a middle and the last message go; their pending entries stay.
    let _: () = redis::cmd("XDEL")
        .arg("st")
        .arg("1-1")
        .arg("3-1")
        .arg("4-1")
        .query(&mut c)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let o = import(&snap, &t, &["--shard", "src0-db0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
    let pending = |srv: &Server| -> redis::Value {
        redis::cmd("XPENDING")
            .arg("st")
            .arg("g1")
            .arg("-")
            .arg("+")
            .arg(10)
            .query(&mut srv.conn())
            .unwrap()
    };
    let ids = |v: redis::Value| -> Vec<String> {
        let rows: Vec<(String, String, i64, i64)> = redis::from_redis_value(&v).unwrap();
        rows.into_iter().map(|r| r.0).collect()
    };
    assert_eq!(ids(pending(&t)), ["1-1", "2-1", "3-1", "4-1"]);
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg("st")
        .arg("-")
        .arg("+")
        .query(&mut t.conn())
        .unwrap();
    assert_eq!(entries.len(), 1, "no placeholder left: {entries:?}");
    let o = kvferry(&[
        "verify",
        &snap,
        "--target",
        &t.url(),
        "--shard",
        "src0-db0",
        "--progress",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Keys the target refused (out of memory) are retried by `--resume` once the operator made
/// room: it writes exactly those, and the counts of the two runs add up to the source's keys
/// (issue 11: the resume said "complete already" and the failed keys stayed missing).
#[test]
fn a_resume_retries_the_keys_that_failed() {
    let s = Server::start(Kind::Redis, &[]);
    let value = "v".repeat(1000);
    let kv: Vec<(String, String)> = (0..4000).map(|i| (format!("k{i}"), value.clone())).collect();
    for chunk in kv.chunks(500) {
        let _: () = s.conn().mset(chunk).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::start(Kind::Redis, &[("maxmemory", "3mb"), ("maxmemory-policy", "noeviction")]);
    let rep = dir.path().join("r.json");
    let args = ["--shard", "src0-db0", "--report", rep.to_str().unwrap()];
    let o = import(&snap, &t, &args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = sum(&report(&rep)["shards"][0]["failed"]);
    assert!(failed > 0 && t.key_count(0) < 4000, "{}", text(&o));
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut t.conn())
        .unwrap();
    let o = import(&snap, &t, &[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("retrying the {failed} keys that failed")),
        "{}",
        text(&o)
    );
    assert_eq!(t.key_count(0), 4000);
    let r = report(&rep);
    assert_eq!(sum(&r["shards"][0]["written"]), 4000, "{r}");
    assert_eq!(sum(&r["shards"][0]["failed"]), 0, "{r}");
    let o = import(&snap, &t, &[&args[..], &["--resume"]].concat());
    assert!(text(&o).contains("complete already"), "{}", text(&o));
}

/// A resume whose checkpoint covers keys the target no longer holds (it was emptied, or
/// restarted without saving) is refused by name instead of reporting success (issue 11).
#[test]
fn a_resume_into_a_target_that_lost_its_data_is_refused() {
    let s = Server::start(Kind::Redis, &[]);
    let kv: Vec<(String, String)> = (0..500).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let mut t = Server::start(Kind::Redis, &[]);
    let o = import(&snap, &t, &["--shard", "src0-db0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    t.restart(); // no persistence: it comes back empty
    let o = import(&snap, &t, &["--shard", "src0-db0", "--resume"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the target no longer holds")
            && err.contains("without --resume")
            && err.contains("Nothing was written"),
        "{err}"
    );
    assert_eq!(t.key_count(0), 0);
    let o = import(&snap, &t, &["--shard", "src0-db0", "--conflict", "replace"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(t.key_count(0), 500);
}

/// Two imports of one snapshot into one target at once: the second is refused while the first
/// holds the import state, naming its pid (issue 11: both were accepted and both wrote).
#[test]
fn a_second_import_at_the_same_time_is_refused() {
    let s = Server::start(Kind::Redis, &[]);
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let state = dir.path().join("state");
    let state_s = state.to_str().unwrap();
    let args = [
        "import",
        &snap,
        "--target",
        &t.url(),
        "--shard",
        "src0-db0",
        "--state",
        state_s,
        "--progress",
        "none",
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .args(["--max-ops-per-sec", "2000", "--pipeline", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !state.join(".kvferry.lock").exists() {
        assert!(std::time::Instant::now() < deadline, "the first import took no lock");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
    let o = kvferry(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("another kvferry (pid {}) is writing here", child.id())),
        "{}",
        text(&o)
    );
    let first = child.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0));
    assert_eq!(t.key_count(0), 3000);
}

/// Ctrl-C during an import: it stops at a checkpoint, says the command that continues it, exits
/// 130; that command finishes the import exactly (no list element twice, no key lost).
#[test]
fn an_interrupted_import_says_how_to_resume() {
    let s = Server::start(Kind::Redis, &[]);
    let kv: Vec<(String, String)> = (0..3000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    let _: () = s.conn().mset(&kv).unwrap();
    for i in 0..200 {
        let _: () = s.conn().rpush(format!("list{i}"), &["a", "b", "c"]).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let t = Server::target();
    let args = [
        "import",
        &snap,
        "--target",
        &t.url(),
        "--shard",
        "src0-db0",
        "--progress",
        "none",
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(args)
        .args(["--max-ops-per-sec", "2000", "--pipeline", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while t.key_count(0) < 100 {
        assert!(std::time::Instant::now() < deadline, "the import wrote nothing");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("interrupted: 0 of 1 shards complete"), "{stdout}");
    assert!(stdout.lines().last().unwrap().trim().ends_with("--resume"), "{stdout}");
    assert!(t.key_count(0) < 3200, "it stopped before the end");
    let o = kvferry(&[&args[..], &["--resume"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&s, 0, &t, 0);
}

/// A target that would refuse every key is refused before anything is written, in one line:
/// a read-only replica, and a user whose ACL forbids writes (issue 11: 4000 × READONLY).
#[test]
fn a_target_that_cannot_be_written_is_refused_at_once() {
    let s = Server::start(Kind::Redis, &[]);
    let _: () = s.conn().set("k", "v").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let master = Server::start(Kind::Redis, &[]);
    let replica = Server::start(Kind::Redis, &[("replicaof", &format!("127.0.0.1 {}", master.port))]);
    let o = import(&snap, &replica, &["--shard", "src0-db0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("is a replica of 127.0.0.1:{}", master.port)) && err.contains("import into its master"),
        "{err}"
    );
    let t = Server::start(Kind::Redis, &[]);
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "reader",
            "on",
            ">pw",
            "~*",
            "+@read",
            "+@connection",
            "+info",
            "+select",
            "+scan",
            "+dbsize",
        ])
        .query(&mut t.conn())
        .unwrap();
    let url = format!("redis://reader:pw@127.0.0.1:{}", t.port);
    let o = kvferry(&[
        "import",
        &snap,
        "--target",
        &url,
        "--shard",
        "src0-db0",
        "--progress",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refuses writes") && err.contains("NOPERM") && err.contains("Nothing was written"),
        "{err}"
    );
    assert_eq!(t.key_count(0), 0);
}

/// The shards of an import run `--parallel` at a time, and its progress knows every shard's
/// keys from the manifest from its first line (issue 12: the total was unknown until the first
/// shard ended, and the shards ran one after the other). Slowed by a rate limit so that progress
/// lines are seen while both shards run.
#[test]
fn shards_run_in_parallel_with_totals_from_the_manifest() {
    let s = Server::start(Kind::Redis, &[]);
    let mut c = s.conn();
    for db in [0, 1] {
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        let kv: Vec<(String, String)> = (0..1000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let _: () = c.mset(&kv).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let run = |parallel: &str| {
        let t = Server::start(Kind::Redis, &[]);
        let o = kvferry(&[
            "import",
            &snap,
            "--target",
            &t.url(),
            "--db-map",
            "0=0,1=1",
            "--parallel",
            parallel,
            "--max-ops-per-sec",
            "400",
            "--progress",
            "json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(t.key_count(0) + t.key_count(1), 2000);
        let lines: Vec<J> = String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect();
        let result = lines.last().unwrap();
        assert_eq!(
            (result["event"].as_str(), result["written"].as_u64()),
            (Some("result"), Some(2000)),
            "{result}"
        );
        let progress: Vec<&J> = lines.iter().filter(|l| l["event"] == "progress").collect();
        assert!(progress.len() >= 2, "{lines:?}");
        assert!(
            progress.iter().all(|l| l["total_keys"] == 2000),
            "the total is known from the first line: {progress:?}"
        );
        progress
            .iter()
            .map(|l| l["running"].as_array().unwrap().len())
            .max()
            .unwrap()
    };
    assert_eq!(run("2"), 2, "both shards at once");
    assert_eq!(run("1"), 1, "one at a time");
}

/// `--dry-run` reports everything the import would meet, writes nothing, and does not stop at
/// the first problem: keys that exist on the target (refused by `--conflict fail`, overwritten
/// by `replace`), keys held under several types, Pika HyperLogLogs, a user without write rights
/// and a replica (refused). Exit 2 where the import would refuse, 0 where it could start.
#[test]
fn dry_run_reports_conflicts_and_read_only_targets() {
    let dir = tempfile::tempdir().unwrap();
    let snap = crafted_snapshot(dir.path());
    let t = Server::start(Kind::Redis, &[]);
    let mut c = t.conn();
    let _: () = c.set("mt", "theirs").unwrap();
    let _: () = c.set("other", "x").unwrap();
    let dry = |url: &str, extra: &[&str]| {
        let base = [
            "import",
            snap.as_str(),
            "--target",
            url,
            "--dry-run",
            "--progress",
            "none",
        ];
        let o = kvferry(&[&base[..], extra].concat());
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            text(&o),
        )
    };
    let (code, out, all) = dry(&t.url(), &[]);
    assert_eq!(code, Some(2), "{all}");
    for says in [
        "REFUSE  conflicts",
        "1 of the snapshot's keys exists there (e.g. \"mt\")",
        "REFUSE  multi-type",
        "WARN    hyperloglog",
        "ok      rights",
    ] {
        assert!(out.contains(says), "{says}: {all}");
    }
    assert!(all.contains("would refuse to start (2 refusals"), "{all}");
    let (code, out, all) = dry(&t.url(), &["--conflict", "replace", "--multi-type", "first"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(
        out.contains("WARN    conflicts") && out.contains("replace overwrites them"),
        "{all}"
    );
    assert!(out.contains("the import can start (3 warnings)"), "{all}");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reader")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("+@read")
        .arg("+@connection")
        .arg("+info")
        .arg("+acl|whoami")
        .arg("+acl|dryrun")
        .query(&mut c)
        .unwrap();
    let reader = format!("redis://reader:pw@127.0.0.1:{}", t.port);
    let (code, out, all) = dry(&reader, &["--conflict", "replace", "--multi-type", "first"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        out.contains("REFUSE  rights") && out.contains("may not run DEL, SET"),
        "{all}"
    );
    let replica = Server::start(Kind::Redis, &[("replicaof", &format!("127.0.0.1 {}", t.port))]);
    let (code, out, all) = dry(&replica.url(), &["--conflict", "replace", "--multi-type", "first"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(out.contains("REFUSE  target") && out.contains("is a replica"), "{all}");
    assert_eq!(c.get::<_, String>("mt").unwrap(), "theirs", "nothing was written");
    assert_eq!(t.key_count(0), 2);
}

/// `import --undo DIR` then `kvferry undo DIR` puts a non-empty target back as it was, key by
/// key (type, value, TTL): the keys the import created are gone, the ones it replaced with
/// `--conflict replace` (of another type, value or TTL) are back, the others untouched. A dry
/// run of the undo changes nothing; the undo's record is a snapshot `check` accepts.
#[test]
fn undo_puts_a_non_empty_target_back_as_it_was() {
    let s = Server::source();
    populate(&s);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    // The target before, and a witness holding the same.
    let before = |t: &Server| {
        let mut c = t.conn();
        let _: () = c.set("str", "theirs").unwrap(); // replaced: another value
        let _: () = c.set_ex("hash", "a string", 900).unwrap(); // another type, with a TTL
        let _: () = c.rpush("list", &["1", "2"]).unwrap();
        let _: () = c.set("unrelated", "stays").unwrap();
        let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
        let _: () = c.sadd("in-db3", "a set").unwrap();
        let _: () = c.set("db3-own", "stays").unwrap();
    };
    let (t, witness) = (Server::start(Kind::Redis, &[]), Server::start(Kind::Redis, &[]));
    before(&t);
    before(&witness);
    let undo = dir.path().join("undo");
    let undo_s = undo.to_str().unwrap();
    let o = import(
        &snap,
        &t,
        &["--db-map", "0=0,3=3", "--conflict", "replace", "--undo", undo_s],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut c = t.conn();
    let imported = |c: &mut redis::Connection| {
        c.get::<_, String>("str").unwrap() == "hello"
            && redis::cmd("TYPE").arg("hash").query::<String>(c).unwrap() == "hash"
    };
    assert!(imported(&mut c), "the import replaced them");
    assert_eq!(c.get::<_, String>("unrelated").unwrap(), "stays");
    assert!(
        text(&o).contains("undo record: the import creates") && text(&o).contains("replaces 4 keys"),
        "str, hash, list and in-db3 are replaced: {}",
        text(&o)
    );
    let o = kvferry(&["check", &undo.join("before").to_string_lossy()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let undo_cmd = |extra: &[&str]| {
        let base = [
            "undo",
            undo_s,
            "--target",
            &t.url(),
            "--db-map",
            "0=0,3=3",
            "--progress",
            "none",
        ];
        kvferry(&[&base[..], extra].concat())
    };
    let o = undo_cmd(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("would delete") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert!(imported(&mut c), "a dry run changes nothing");
    // A mapping other than the import's is refused.
    let o = kvferry(&[
        "undo",
        undo_s,
        "--target",
        &t.url(),
        "--db-map",
        "0=0,3=4",
        "--progress",
        "none",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("the import wrote it to"), "{}", text(&o));
    let o = undo_cmd(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("restored 4 keys"), "{}", text(&o));
    assert_same(&witness, 0, &t, 0);
    assert_same(&witness, 3, &t, 3);
    // Idempotent: a second undo leaves it so.
    let o = undo_cmd(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(&witness, 0, &t, 0);
    assert_same(&witness, 3, &t, 3);
}
