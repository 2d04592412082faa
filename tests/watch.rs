//! Live health, `--max-latency-ms` and `--metrics-addr` (issue 12, "Live health and
//! throttling"), on real servers: Redis, or Pika with KVFERRY_TEST_PIKA set.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::Commands;
use serde_json::Value as J;
use support::{Kind, Server};

fn fill(s: &Server, n: usize) {
    let kv: Vec<(String, String)> = (0..n).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    for chunk in kv.chunks(1000) {
        let _: () = s.conn().mset(chunk).unwrap();
    }
}

fn kvferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kvferry"));
    c.env("XDG_STATE_HOME", support::state_home());
    c
}

/// The JSON objects of `--progress json` stderr.
fn json_lines(stderr: &str) -> Vec<J> {
    stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// While another client keeps the source busy (DEBUG SLEEP in a loop), PINGs wait far longer
/// than before the run: the export lowers its rate and says so; once the load is gone the rate
/// goes up again. Nothing is lost meanwhile.
#[test]
fn the_latency_bound_lowers_the_rate_under_load_and_raises_it_after() {
    let s = Server::start(Kind::Redis, &[("enable-debug-command", "yes")]);
    fill(&s, 8000);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let report = dir.path().join("report.json");
    let mut child = kvferry()
        .args(["export", "--source", &s.url(), "--db", "0", "--progress", "json"])
        .args(["--max-ops-per-sec", "3000", "--max-latency-ms", "20"])
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let busy = Arc::new(AtomicBool::new(true));
    let loader = {
        let busy = busy.clone();
        let mut c = s.conn();
        std::thread::spawn(move || {
            while busy.load(Ordering::Relaxed) {
                let _: () = redis::cmd("DEBUG").arg("SLEEP").arg("0.1").query(&mut c).unwrap();
            }
        })
    };
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("rate lowered to") {
            busy.store(false, Ordering::Relaxed); // the load goes away once the run reacted
        }
        lines.push(line);
    }
    busy.store(false, Ordering::Relaxed);
    loader.join().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = lines.join("\n");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let events = json_lines(&stderr);
    let lowered = events
        .iter()
        .find(|e| e["event"] == "message" && e["message"].as_str().unwrap().contains("rate lowered to"))
        .unwrap_or_else(|| panic!("no lowering: {stderr}"));
    let m = lowered["message"].as_str().unwrap();
    assert!(
        m.contains("source redis://127.0.0.1:") && m.contains("--max-latency-ms"),
        "{m}"
    );
    // The rate seen in the progress lines went under the limit, then up again.
    let limits: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .filter_map(|e| e["servers"][0]["rate_limit"].as_u64())
        .collect();
    let low = limits
        .iter()
        .position(|&l| l < 3000)
        .unwrap_or_else(|| panic!("{limits:?}"));
    assert!(
        limits[low..].windows(2).any(|w| w[1] > w[0]),
        "never raised again: {limits:?}"
    );
    let r: J = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let h = &r["servers"][0];
    assert_eq!(h["role"], "source");
    assert!(h["rate_changes"].as_u64().unwrap() >= 2, "{h}");
    assert!(h["rate_limit_min"].as_u64().unwrap() < 3000, "{h}");
    assert!(h["ping_max_ms"].as_f64().unwrap() > 20.0, "{h}");
    let keys: u64 = r["shards"][0]["keys_by_type"]["string"].as_u64().unwrap();
    assert_eq!(keys, 8000, "nothing lost under the throttle");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("--max-latency-ms changed the rate"), "{stdout}");
}

/// GET /metrics from a real HTTP client while an export runs: the keys it reached, per shard,
/// what is left, and the source's health; unknown paths answer 404.
#[test]
fn the_metrics_endpoint_answers_during_a_run_with_the_counters_it_reached() {
    let s = Server::source();
    fill(&s, 1500);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let mut child = kvferry()
        .args(["export", "--source", &s.url(), "--db", "0", "--progress", "json"])
        .args(["--max-ops-per-sec", "1500", "--metrics-addr", "127.0.0.1:0"])
        .arg("--out")
        .arg(&out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = None;
    let mut scraped = None;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let e: J = serde_json::from_str(&line).unwrap_or(J::Null);
        if let Some(m) = e["message"].as_str().and_then(|m| m.strip_prefix("metrics at ")) {
            url = Some(m.to_string());
        }
        // A progress line with keys done and more to do: the metrics are asked for then.
        let keys = e["keys"].as_u64().unwrap_or(0);
        if e["event"] == "progress" && keys > 0 && keys < 1500 && scraped.is_none() {
            let u = url
                .as_ref()
                .expect("the address is said before the first progress line");
            let body = ureq::get(u).call().unwrap().into_string().unwrap();
            let missing = ureq::get(&u.replace("/metrics", "/nothing")).call();
            assert!(matches!(missing, Err(ureq::Error::Status(404, _))), "{missing:?}");
            scraped = Some((keys, body));
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    let (seen, body) = scraped.unwrap_or_else(|| panic!("no progress line between: {}", lines.join("\n")));
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .unwrap_or_else(|| panic!("{name} missing in:\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(body.contains("# TYPE kvferry_keys gauge"), "{body}");
    assert!(body.contains("kvferry_info{command=\"export\""), "{body}");
    let keys = value("kvferry_keys");
    assert!(keys >= seen as f64 && keys < 1500.0, "{keys} after {seen}:\n{body}");
    if std::env::var_os("KVFERRY_TEST_PIKA").is_none() {
        assert_eq!(value("kvferry_keys_expected"), 1500.0);
        assert_eq!(value("kvferry_keys_remaining"), 1500.0 - keys);
    } else {
        // Pika's DBSIZE is a cached count: no total, so no "remaining" either (not a guess).
        assert!(!body.contains("kvferry_keys_expected{"), "{body}");
    }
    assert_eq!(value("kvferry_task_running"), 1.0);
    assert_eq!(value("kvferry_server_up"), 1.0);
    assert_eq!(value("kvferry_server_rate_limit"), 1500.0);
    assert!(value("kvferry_server_commands_total") >= keys, "{body}");
    assert!(body.contains("role=\"source\",server=\"redis://127.0.0.1:"), "{body}");
}

/// An import's summary, report and JSON result say how its target fared: PING before and
/// during, ops/s, the commands kvferry sent.
#[test]
fn an_import_reports_the_health_of_its_target() {
    let s = Server::source();
    fill(&s, 300);
    let t = Server::target();
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let o = kvferry()
        .args(["export", "--source", &s.url(), "--db", "0", "--progress", "none"])
        .arg("--out")
        .arg(&snap)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", support::text(&o));
    let report = dir.path().join("import.json");
    let o = kvferry()
        .args(["import", "--target", &t.url(), "--progress", "json"])
        .arg(&snap)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", support::text(&o));
    let r: J = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let h = &r["servers"][0];
    assert_eq!(h["role"], "target");
    assert!(h["server"].as_str().unwrap().starts_with("redis://127.0.0.1:"), "{h}");
    assert!(h["ping_baseline_ms"].as_f64().is_some(), "{h}");
    assert!(
        h["commands"].as_u64().unwrap() >= 300,
        "one command a key at least: {h}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("target redis://127.0.0.1:") && stdout.contains("ms before the run"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    let result = json_lines(&stderr)
        .into_iter()
        .find(|e| e["event"] == "result")
        .unwrap();
    assert_eq!(result["servers"][0]["role"], "target", "{result}");
}
