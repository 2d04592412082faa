//! Comparing servers key by key, for the import tests: every key's type, value (rendered,
//! order-independent where the type is) and expiry, read with plain commands.

use std::collections::BTreeMap;

use redis::Commands;

use super::Server;

/// A key's type, value (rendered, order-independent where the type is) and expiry.
#[derive(Debug, PartialEq)]
pub struct KeyState {
    pub ty: String,
    pub value: String,
    pub ttl: bool,
}

pub fn bytes(v: &[u8]) -> String {
    format!("{:?}", v.escape_ascii().to_string())
}

/// Everything in database `db` of `c`, read with plain commands, plus PTTLs.
pub fn contents(c: &mut redis::Connection, db: u32) -> (BTreeMap<Vec<u8>, KeyState>, BTreeMap<Vec<u8>, i64>) {
    if db != 0 {
        let _: () = redis::cmd("SELECT").arg(db).query(c).unwrap();
    }
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).unwrap();
    let mut out = BTreeMap::new();
    let mut ttls = BTreeMap::new();
    for k in keys {
        let ty: String = redis::cmd("TYPE").arg(&k).query(c).unwrap();
        let value = match ty.as_str() {
            "string" => bytes(&c.get::<_, Vec<u8>>(&k).unwrap()),
            "hash" => {
                let m: BTreeMap<Vec<u8>, Vec<u8>> = c.hgetall(&k).unwrap();
                m.iter()
                    .map(|(f, v)| format!("{}={}", bytes(f), bytes(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            "list" => {
                let l: Vec<Vec<u8>> = c.lrange(&k, 0, -1).unwrap();
                l.iter().map(|e| bytes(e)).collect::<Vec<_>>().join(",")
            }
            "set" => {
                let mut s: Vec<Vec<u8>> = c.smembers(&k).unwrap();
                s.sort();
                s.iter().map(|e| bytes(e)).collect::<Vec<_>>().join(",")
            }
            "zset" => {
                let z: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(c)
                    .unwrap();
                z.iter()
                    .map(|(m, s)| format!("{}:{s}", bytes(m)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
            "stream" => {
                let entries: redis::Value = redis::cmd("XRANGE").arg(&k).arg("-").arg("+").query(c).unwrap();
                let info: redis::Value = redis::cmd("XINFO").arg("STREAM").arg(&k).arg("FULL").query(c).unwrap();
                // XINFO FULL holds the groups, consumers and pending entries; drop what
                // differs by nature (seen-time and delivery times move).
                let info = format!("{info:?}");
                let info = regex_lite_strip_times(&info);
                format!("{entries:?} {info}")
            }
            other => panic!("unexpected type {other}"),
        };
        let pttl: i64 = redis::cmd("PTTL").arg(&k).query(c).unwrap();
        ttls.insert(k.clone(), pttl);
        out.insert(
            k,
            KeyState {
                ty,
                value,
                ttl: pttl >= 0,
            },
        );
    }
    if db != 0 {
        let _: () = redis::cmd("SELECT").arg(0).query(c).unwrap();
    }
    (out, ttls)
}

/// Removes the times in XINFO STREAM FULL (seen-time, active-time, delivery times: unix ms,
/// which move by a few ms between servers); keeps counts, ids and names.
fn regex_lite_strip_times(s: &str) -> String {
    let mut out = String::new();
    let mut skip_next = false;
    for part in s.split(", ") {
        let is_time = part
            .trim_start_matches("array([")
            .strip_prefix("int(")
            .and_then(|n| n.trim_end_matches(['(', ')', ']']).parse::<u64>().ok())
            .is_some_and(|n| n > 1_000_000_000_000);
        if skip_next || is_time {
            skip_next = false;
            out.push_str("<time>, ");
            continue;
        }
        if ["seen-time", "active-time"].iter().any(|t| part.contains(t)) {
            skip_next = true;
        }
        out.push_str(part);
        out.push_str(", ");
    }
    out
}

/// Asserts that database `from` of `a` and database `to` of `b` hold the same keys, types and
/// values, and expiries within a minute of each other.
pub fn assert_same(a: &Server, from: u32, b: &Server, to: u32) {
    let (ka, ta) = contents(&mut a.conn(), from);
    let (kb, tb) = contents(&mut b.conn(), to);
    assert_eq!(
        ka.keys().collect::<Vec<_>>(),
        kb.keys().collect::<Vec<_>>(),
        "the same keys"
    );
    for (k, v) in &ka {
        assert_eq!(Some(v), kb.get(k), "key {}", bytes(k));
        if v.ttl {
            let d = (ta[k] - tb[k]).abs();
            assert!(d < 60_000, "key {}: PTTL {} vs {}", bytes(k), ta[k], tb[k]);
        }
    }
}

/// Asserts that database `from` of `a` holds exactly what the nodes of a cluster hold together.
pub fn assert_same_in_cluster(a: &Server, from: u32, nodes: &[Server]) {
    let (ka, ta) = contents(&mut a.conn(), from);
    let mut kb = BTreeMap::new();
    let mut tb = BTreeMap::new();
    for n in nodes {
        let (k, t) = contents_of_node(n);
        for key in k.keys() {
            assert!(!kb.contains_key(key), "key {} on two nodes", bytes(key));
        }
        kb.extend(k);
        tb.extend(t);
    }
    assert_eq!(ka.len(), kb.len(), "as many keys in the cluster as in the source");
    for (k, v) in &ka {
        assert_eq!(Some(v), kb.get(k), "key {}", bytes(k));
        if v.ttl {
            assert!(
                (ta[k] - tb[k]).abs() < 60_000,
                "key {}: PTTL {} vs {}",
                bytes(k),
                ta[k],
                tb[k]
            );
        }
    }
}

/// A cluster node's keys (database 0, no SELECT: cluster nodes refuse other databases).
fn contents_of_node(n: &Server) -> (BTreeMap<Vec<u8>, KeyState>, BTreeMap<Vec<u8>, i64>) {
    contents(&mut n.conn(), 0)
}
