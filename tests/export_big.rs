//! `kvferry export` of big keys and of keys that expire while it runs, against a real source
//! server: collections of a million members and a big stream come out whole, in bounded parts,
//! and `kvferry import` writes them back whole into another server; expiring keys come out with
//! their expiry or are counted as gone, never with a wrong one.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use kvferry::format::reader::ReadMode;
use kvferry::format::record::{Record, Value};
use kvferry::format::snapshot::Snapshot;
use serde_json::Value as J;
use support::Server;

const MEMBERS: usize = 1_000_000;
const STREAM: usize = 200_000;

fn export(s: &Server, out: &Path, extra: &[&str]) -> (std::process::Output, J) {
    let report = out.with_extension("report.json");
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["export", "--source", &s.url(), "--db", "0", "--progress", "none"])
        .arg("--out")
        .arg(out)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let r = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (o, r)
}

/// Everything one key's parts held, owned.
#[derive(Default)]
struct Got {
    parts: usize,
    biggest_part: u64,
    hash: HashMap<Vec<u8>, Vec<u8>>,
    list: Vec<Vec<u8>>,
    set: BTreeSet<Vec<u8>>,
    zset: HashMap<Vec<u8>, f64>,
    stream: Vec<(u64, u64)>,
    expire_at_ms: Option<u64>,
    string: Vec<u8>,
}

/// Reads every record of a snapshot through the library's reader, verifying checksums.
fn read_all(out: &Path) -> BTreeMap<Vec<u8>, Got> {
    let snap = Snapshot::open(out).unwrap();
    let mut m: BTreeMap<Vec<u8>, Got> = BTreeMap::new();
    for shard in 0..snap.manifest.shards.len() {
        for part in snap.open_shard_verified(shard, ReadMode::Mmap).unwrap() {
            for block in part.blocks() {
                let block = block.unwrap();
                for rec in block.records() {
                    let Record::Key(r) = rec.unwrap() else { continue };
                    let g = m.entry(r.key.to_vec()).or_default();
                    g.parts += 1;
                    g.biggest_part = g.biggest_part.max(r.value.size().0);
                    g.expire_at_ms = r.expire_at_ms;
                    match r.value {
                        Value::String(v) => g.string.extend_from_slice(v),
                        Value::Hash(p) => g.hash.extend(p.iter().map(|(f, v)| (f.to_vec(), v.to_vec()))),
                        Value::List(e) => g.list.extend(e.iter().map(|e| e.to_vec())),
                        Value::Set(e) => g.set.extend(e.iter().map(|e| e.to_vec())),
                        Value::ZSet(e) => g.zset.extend(e.iter().map(|(m, s)| (m.to_vec(), *s))),
                        Value::Stream { entries, .. } => g.stream.extend(entries.iter().map(|e| (e.id.ms, e.id.seq))),
                    }
                }
            }
        }
    }
    m
}

/// A hash, a list, a set and a zset of a million members each, and a stream of 200,000 entries:
/// each is exported whole, in parts of about 1 MiB (memory stays bounded however big the key).
#[test]
fn million_member_collections_and_a_big_stream() {
    let s = Server::source();
    let mut c = s.conn();
    let member = |i: usize| format!("member:{i:07}");
    for chunk in (0..MEMBERS).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        let fields: Vec<(String, String)> = chunk.iter().map(|&i| (member(i), format!("v{i}"))).collect();
        let members: Vec<String> = chunk.iter().map(|&i| member(i)).collect();
        let scored: Vec<(f64, String)> = chunk.iter().map(|&i| (i as f64 - 500_000.5, member(i))).collect();
        pipe.hset_multiple("hash", &fields)
            .rpush("list", &members)
            .sadd("set", &members)
            .zadd_multiple("zset", &scored)
            .ignore();
        let _: () = pipe.query(&mut c).unwrap();
    }
    for chunk in (1..=STREAM).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("XADD")
                .arg("stream")
                .arg(format!("{i}-1"))
                .arg("f")
                .arg(i)
                .ignore();
        }
        let _: () = pipe.query(&mut c).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let (_, report) = export(&s, &out, &[]);
    let types = &report["shards"][0]["keys_by_type"];
    assert_eq!(
        types,
        &serde_json::json!({"hash": 1, "list": 1, "set": 1, "zset": 1, "stream": 1})
    );
    let got = read_all(&out);
    for (key, g) in &got {
        assert!(g.parts >= 5, "{} in {} parts", String::from_utf8_lossy(key), g.parts);
        assert!(g.biggest_part <= 2 << 20, "a part of {} bytes", g.biggest_part);
    }
    let hash = &got[b"hash".as_slice()].hash;
    assert_eq!(hash.len(), MEMBERS);
    assert!((0..MEMBERS).all(|i| hash.get(member(i).as_bytes()) == Some(&format!("v{i}").into_bytes())));
    let list = &got[b"list".as_slice()].list;
    assert!(
        list.len() == MEMBERS && list.iter().enumerate().all(|(i, m)| m == member(i).as_bytes()),
        "the list in order"
    );
    let set = &got[b"set".as_slice()].set;
    assert!(set.len() == MEMBERS && (0..MEMBERS).all(|i| set.contains(member(i).as_bytes())));
    let zset = &got[b"zset".as_slice()].zset;
    assert_eq!(zset.len(), MEMBERS);
    assert!((0..MEMBERS).all(|i| zset.get(member(i).as_bytes()) == Some(&(i as f64 - 500_000.5))));
    let stream = &got[b"stream".as_slice()].stream;
    assert_eq!(stream, &(1..=STREAM as u64).map(|i| (i, 1)).collect::<Vec<_>>());

    // The same keys through `kvferry import` into another server, in bounded commands.
    let t = Server::target();
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args([
            "import",
            out.to_str().unwrap(),
            "--target",
            &t.url(),
            "--progress",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let mut tc = t.conn();
    let h: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL").arg("hash").query(&mut tc).unwrap();
    assert!(&h == hash, "the hash, field by field");
    let l: Vec<Vec<u8>> = redis::cmd("LRANGE").arg("list").arg(0).arg(-1).query(&mut tc).unwrap();
    assert!(&l == list, "the list, in order, nothing doubled");
    let st: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS").arg("set").query(&mut tc).unwrap();
    assert!(&st == set, "the set");
    let z: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
        .arg("zset")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut tc)
        .unwrap();
    assert!(
        z.len() == MEMBERS && z.iter().all(|(m, sc)| zset.get(m) == Some(sc)),
        "the zset"
    );
    let ids: Vec<(String, redis::Value)> = redis::cmd("XRANGE")
        .arg("stream")
        .arg("-")
        .arg("+")
        .query(&mut tc)
        .unwrap();
    let ids: Vec<(u64, u64)> = ids
        .iter()
        .map(|(id, _)| {
            let (ms, seq) = id.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert_eq!(&ids, stream);
}

/// Keys that expire during the export (TTLs of 1 ms to 2 s, while the export is held to a slow
/// rate): each comes out with the expiry it had on the server, or not at all and counted as gone;
/// no key comes out without its TTL, and the keys without TTL all come out.
#[test]
fn keys_expiring_during_the_export() {
    let s = Server::source();
    let mut c = s.conn();
    let set_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Pika 3.x keeps whole seconds (SERVERS.md): it refuses an expiry under 1 s and cuts the
    // others to whole seconds (and PTTL too), so there the TTLs are 1 to 3 s and an expiry may
    // come out up to a second early or late.
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let whole_seconds = info
        .lines()
        .find_map(|l| l.strip_prefix("pika_version:"))
        .is_some_and(|v| v.trim().starts_with(|d: char| d.is_ascii_digit() && d < '4'));
    let (base, early) = if whole_seconds { (1000, 1000) } else { (1, 0) };
    let mut pipe = redis::pipe();
    for i in 0..4000u64 {
        pipe.cmd("SET")
            .arg(format!("exp{i}"))
            .arg(i)
            .arg("PX")
            .arg(base + i / 2)
            .ignore();
        pipe.cmd("SET").arg(format!("keep{i}")).arg(i).ignore();
        pipe.cmd("HSET").arg(format!("hexp{i}")).arg("f").arg(i).ignore();
        pipe.cmd("PEXPIRE").arg(format!("hexp{i}")).arg(base + i / 2).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let set_done = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    // About 36,000 commands at 15,000/s: the export spans the 2 s of expiries.
    let (_, report) = export(&s, &out, &["--max-ops-per-sec", "15000"]);
    let got = read_all(&out);
    let shard = &report["shards"][0];
    assert_eq!(shard["failed"], serde_json::json!([]));
    for i in 0..4000u64 {
        let keep = got
            .get(format!("keep{i}").as_bytes())
            .expect("every key without TTL is exported");
        assert_eq!(keep.expire_at_ms, None);
        for key in [format!("exp{i}"), format!("hexp{i}")] {
            if let Some(g) = got.get(key.as_bytes()) {
                let at = g
                    .expire_at_ms
                    .unwrap_or_else(|| panic!("{key} came out without its TTL"));
                let (lo, hi) = (set_at + base + i / 2 - early, set_done + base + i / 2 + early);
                // An expiry is PTTL plus the time its reply arrived, so it can be late by the
                // reply's latency: 100 ms on a loaded machine (8 ms was seen in CI-like runs).
                assert!(
                    at + 5 >= lo && at <= hi + 100,
                    "{key}: expiry {at} outside [{lo}, {hi}]"
                );
            }
        }
    }
    let exported =
        shard["keys_by_type"]["string"].as_u64().unwrap() + shard["keys_by_type"]["hash"].as_u64().unwrap_or(0);
    assert_eq!(
        exported as usize,
        got.len(),
        "the report counts what the snapshot holds"
    );
    assert!(got.len() < 12_000, "some keys expired before they were read");
}
