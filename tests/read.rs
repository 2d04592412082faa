//! Reading keys of every type from a real server into records (src/source/read.rs): values
//! exact, big keys split into bounded parts, vanished keys reported as gone.

mod support;

use kvferry::format::record::{KeyRecord, KeyType, PartSeq, Record};
use kvferry::format::render::render_record;
use kvferry::source::read::{read_key, KeyRef, Outcome, ReadOptions};
use redis::Commands;
use serde_json::Value as J;
use support::Server;

/// Reads `key` and returns its records rendered as JSON (SPEC §10), checking the part sequence.
fn read(s: &Server, key: &[u8], ty: KeyType, opts: ReadOptions) -> (Outcome, Vec<J>) {
    let mut c = s.conn();
    let mut lines = Vec::new();
    let mut seq = PartSeq::default();
    let mut emit = |r: &KeyRecord| {
        seq.accept(&Record::Key(r.clone())).map_err(anyhow::Error::msg)?;
        let mut line = String::new();
        render_record(&mut line, "t", r);
        lines.push(serde_json::from_str::<J>(&line).unwrap());
        Ok(())
    };
    let k = KeyRef {
        db: 0,
        key,
        ty,
        expire_at_ms: None,
        flags: 0,
    };
    let outcome = read_key(&mut c, k, &opts, &mut emit).unwrap();
    seq.finish().unwrap();
    (outcome, lines)
}

fn small_parts() -> ReadOptions {
    ReadOptions {
        part_bytes: 16 << 10,
        page: 100,
        ..ReadOptions::default()
    }
}

#[test]
fn strings_small_big_and_binary() {
    let s = Server::source();
    let mut c = s.conn();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let _: () = c.set(b"big", &big).unwrap();
    let _: () = c.set(b"\xffbin", b"\x00\x01").unwrap();
    let _: () = c.set("empty", "").unwrap();
    let (o, lines) = read(
        &s,
        b"big",
        KeyType::String,
        ReadOptions {
            part_bytes: 1 << 20,
            page: 100,
            ..ReadOptions::default()
        },
    );
    assert_eq!(o, Outcome::Read { parts: 3, elements: 1 });
    assert_eq!(lines.len(), 3);
    let (o, lines) = read(&s, b"\xffbin", KeyType::String, ReadOptions::default());
    assert_eq!(o, Outcome::Read { parts: 1, elements: 1 });
    assert_eq!(lines[0]["value"], serde_json::json!("\u{0}\u{1}"));
    let (_, lines) = read(&s, b"empty", KeyType::String, ReadOptions::default());
    assert_eq!(lines[0]["value"], "");
    assert_eq!(
        read(&s, b"missing", KeyType::String, ReadOptions::default()).0,
        Outcome::Gone
    );
}

#[test]
fn big_hash_in_bounded_parts() {
    let s = Server::source();
    let mut c = s.conn();
    let pairs: Vec<(String, String)> = (0..5000).map(|i| (format!("f{i}"), format!("value {i}"))).collect();
    let _: () = c.hset_multiple("h", &pairs).unwrap();
    let (o, lines) = read(&s, b"h", KeyType::Hash, small_parts());
    let Outcome::Read { parts, elements } = o else {
        panic!("{o:?}")
    };
    assert!(parts > 3, "{parts} parts");
    assert!(elements >= 5000);
    let mut got: Vec<(String, String)> = lines
        .iter()
        .flat_map(|l| l["value"].as_array().unwrap().clone())
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    got.dedup();
    let mut want = pairs.clone();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn lists_keep_their_order_across_parts() {
    let s = Server::source();
    let mut c = s.conn();
    let items: Vec<String> = (0..10_000).map(|i| format!("item-{i}")).collect();
    let _: () = c.rpush("l", &items).unwrap();
    let (o, lines) = read(&s, b"l", KeyType::List, small_parts());
    assert!(matches!(o, Outcome::Read { elements: 10_000, .. }), "{o:?}");
    let got: Vec<String> = lines
        .iter()
        .flat_map(|l| l["value"].as_array().unwrap().clone())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, items);
}

#[test]
fn sets_and_zsets_with_special_scores() {
    let s = Server::source();
    let mut c = s.conn();
    let _: () = c.sadd("s", &["a", "b", "c"]).unwrap();
    let _: () = redis::cmd("ZADD")
        .arg("z")
        .arg("-inf")
        .arg("lo")
        .arg("+inf")
        .arg("hi")
        .arg("-0")
        .arg("negzero")
        .arg("0.1")
        .arg("tenth")
        .query(&mut c)
        .unwrap();
    let (_, lines) = read(&s, b"s", KeyType::Set, ReadOptions::default());
    let mut got: Vec<&str> = lines[0]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
    let (_, lines) = read(&s, b"z", KeyType::ZSet, ReadOptions::default());
    let mut got: Vec<String> = lines[0]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}={}", p[0].as_str().unwrap(), p[1]))
        .collect();
    got.sort();
    // Redis keeps -0 as 0 in a small zset; Pika keeps -0 (seen on 4.0.1); inf and 0.1 come
    // back exact.
    let negzero = if s.kind == support::Kind::Pika {
        "negzero=-0.0"
    } else {
        "negzero=0"
    };
    assert_eq!(got, ["hi=\"inf\"", "lo=\"-inf\"", negzero, "tenth=0.1"]);
}

/// A stream with a consumer group, read from the source. Pika has no consumer groups (XGROUP
/// fails there) and must never be asked about them: XINFO GROUPS crashes Pika 4.0.1 (issue 15).
/// On Pika the test checks that, and that the entries come out whole; the guard checks that
/// Pika is still alive at the end.
#[test]
fn streams_with_groups_and_pending_entries() {
    let s = Server::source();
    let mut c = s.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let kind = kvferry::server::conn::describe(&s.url(), &mut c).unwrap().kind;
    let opts = ReadOptions {
        part_bytes: 1000,
        page: 100,
        ..ReadOptions::default()
    }
    .for_server(&kind);
    for i in 1..=250u64 {
        let _: String = redis::cmd("XADD")
            .arg("st")
            .arg(format!("{i}-1"))
            .arg("n")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("st")
        .arg("g1")
        .arg("0")
        .query(&mut c);
    if info.contains("pika_version") {
        assert!(created.is_err(), "Pika has no XGROUP: {created:?}");
        assert!(!opts.stream_groups);
        let (o, lines) = read(&s, b"st", KeyType::Stream, opts);
        assert!(matches!(o, Outcome::Read { elements: 250, .. }), "{o:?}");
        let meta = &lines.last().unwrap()["value"]["meta"];
        assert_eq!(meta["last_id"], "250-1");
        assert_eq!(meta["groups"], serde_json::json!([]));
        return;
    }
    created.unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g1")
        .arg("alice")
        .arg("COUNT")
        .arg(3)
        .arg("STREAMS")
        .arg("st")
        .arg(">")
        .query(&mut c)
        .unwrap();
    let (o, lines) = read(&s, b"st", KeyType::Stream, opts);
    assert!(matches!(o, Outcome::Read { elements: 250, .. }), "{o:?}");
    let entries: Vec<String> = lines
        .iter()
        .flat_map(|l| l["value"]["entries"].as_array().unwrap().clone())
        .map(|e| e[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(entries.len(), 250);
    assert_eq!(entries[0], "1-1");
    assert_eq!(entries[249], "250-1");
    let meta = &lines.last().unwrap()["value"]["meta"];
    assert_eq!(meta["last_id"], "250-1");
    let g = &meta["groups"][0];
    assert_eq!(g["name"], "g1");
    assert_eq!(g["last_delivered_id"], "3-1");
    assert_eq!(g["consumers"][0]["name"], "alice");
    assert_eq!(g["pending"].as_array().unwrap().len(), 3);
    assert_eq!(g["pending"][0]["delivery_count"], 1);
    assert!(
        lines[..lines.len() - 1].iter().all(|l| l["value"]["meta"].is_null()),
        "meta only on the last part"
    );
}

/// The Pika path with Redis standing in: reading a stream with the options for Pika sends none
/// of XINFO GROUPS, XINFO CONSUMERS and XPENDING (Redis' command statistics count them), and the
/// stream comes out whole, without groups.
#[test]
fn the_pika_options_never_ask_for_consumer_groups() {
    let s = Server::start(support::Kind::Redis, &[]);
    let mut c = s.conn();
    let _: String = redis::cmd("XADD")
        .arg("st")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    support::group_with_a_pending_entry(&mut c, "st");
    let opts = ReadOptions::default().for_server(&kvferry::server::ServerKind::Pika(4, 0, 1));
    let (o, lines) = read(&s, b"st", KeyType::Stream, opts);
    assert!(matches!(o, Outcome::Read { elements: 1, .. }), "{o:?}");
    assert_eq!(lines.last().unwrap()["value"]["meta"]["groups"], serde_json::json!([]));
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    assert!(
        stats.contains("cmdstat_xrange"),
        "the statistics count this server's reads: {stats}"
    );
    for cmd in ["cmdstat_xinfo|groups", "cmdstat_xinfo|consumers", "cmdstat_xpending"] {
        assert!(!stats.contains(cmd), "{cmd} was sent: {stats}");
    }
    let (_, lines) = read(&s, b"st", KeyType::Stream, ReadOptions::default());
    assert_eq!(lines.last().unwrap()["value"]["meta"]["groups"][0]["name"], "g");
}
