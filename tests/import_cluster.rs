//! `kvferry import` into a 3-node Redis Cluster that the test creates: keys are routed by slot
//! (hash tags included), and a resharding during the import (MOVED and ASK replies, a slot map
//! that changes under the import) loses and duplicates nothing.

mod support;

use std::process::Command;

use redis::Commands;
use serde_json::Value as J;
use support::compare::assert_same_in_cluster;
use support::{text, Server};

fn export(s: &Server, dir: &std::path::Path) -> String {
    let out = dir.join("snap").to_string_lossy().into_owned();
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args([
            "export",
            "--source",
            &s.url(),
            "--db",
            "0",
            "--out",
            &out,
            "--progress",
            "none",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    out
}

/// Keys of every type spread over the slots, some sharing a hash tag, one big list.
fn populate(s: &Server, n: usize) {
    let mut c = s.conn();
    let mut p = redis::pipe();
    for i in 0..n {
        p.set(format!("s:{i}"), i).ignore();
        if i % 10 == 0 {
            p.hset(format!("h:{i}"), "f", i).ignore();
            p.rpush(format!("l:{{tag}}:{i}"), &["a", "b"]).ignore();
            p.sadd(format!("set:{i}"), i).ignore();
            p.zadd(format!("z:{i}"), "m", i).ignore();
            p.expire(format!("h:{i}"), 3600).ignore();
        }
    }
    let _: () = p.query(&mut c).unwrap();
    let items: Vec<String> = (0..30_000).map(|i| format!("e{i}")).collect();
    let _: () = c.rpush("biglist", items).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("stream")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
}

fn report(path: &std::path::Path) -> J {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn keys_go_to_the_node_that_holds_their_slot() {
    let s = Server::source();
    populate(&s, 3000);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let nodes = support::cluster(3);
    let rep = dir.path().join("r.json");
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["import", &snap, "--target", &nodes[1].url(), "--progress", "none"])
        .args(["--report", rep.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("a cluster of 3 masters"), "{}", text(&o));
    assert_same_in_cluster(&s, 0, &nodes);
    let r = report(&rep);
    assert_eq!(
        r["shards"][0]["redirects"], 0,
        "a settled cluster needs no redirect: {r}"
    );
    // verify routes its reads the same way, and finds a change on whichever node holds it.
    let verify = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvferry"))
            .env("XDG_STATE_HOME", support::state_home())
            .args(["verify", &snap, "--target", &nodes[2].url(), "--progress", "none"])
            .args(extra)
            .output()
            .unwrap()
    };
    let o = verify(&["--extra"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let owner = nodes
        .iter()
        .find(|n| n.conn().exists::<_, bool>("l:{tag}:10").unwrap_or(false))
        .unwrap();
    let _: () = owner.conn().rpush("l:{tag}:10", "more").unwrap();
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"l:{tag}:10\""),
        "{}",
        text(&o)
    );
    // Every node got some keys.
    for n in &nodes {
        let k: u64 = redis::cmd("DBSIZE").query(&mut n.conn()).unwrap();
        assert!(k > 100, "node {} holds {k} keys", n.port);
    }
    // A non-empty cluster is refused by default, whichever node holds the keys.
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["import", &snap, "--target", &nodes[0].url(), "--progress", "none"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already holds keys"), "{}", text(&o));
}

fn node_id(s: &Server) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(&mut s.conn()).unwrap()
}

#[test]
fn a_resharding_during_the_import_loses_nothing() {
    let s = Server::source();
    populate(&s, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let snap = export(&s, dir.path());
    let nodes = support::cluster(3);
    let rep = dir.path().join("r.json");
    let child = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["import", &snap, "--target", &nodes[0].url(), "--progress", "none"])
        .args([
            "--pipeline",
            "50",
            "--max-ops-per-sec",
            "6000",
            "--report",
            rep.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the import is under way, then move 3000 slots from node 0 to node 1.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while redis::cmd("DBSIZE").query::<u64>(&mut nodes[1].conn()).unwrap() < 500 {
        assert!(std::time::Instant::now() < deadline, "the import did not start");
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling interval
    }
    let reshard = Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", nodes[0].port)])
        .args([
            "--cluster-from",
            &node_id(&nodes[0]),
            "--cluster-to",
            &node_id(&nodes[1]),
        ])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(reshard.status.success(), "{}", text(&reshard));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&rep);
    assert!(
        r["shards"][0]["redirects"].as_u64().unwrap() > 0,
        "the import met redirects: {r}"
    );
    assert_same_in_cluster(&s, 0, &nodes);
    let l: Vec<String> = nodes
        .iter()
        .find_map(|n| {
            n.conn()
                .lrange::<_, Vec<String>>("biglist", 0, -1)
                .ok()
                .filter(|l| !l.is_empty())
        })
        .unwrap();
    assert_eq!(l.len(), 30_000, "no element pushed twice");
}
