//! `--metrics-addr HOST:PORT`: Prometheus metrics of the run, in the text exposition format, at
//! `/metrics`, for the dashboards that already watch the servers. Read from the progress shown
//! now (keys, bytes, failures, rate, what is left and the ETA per task) and from the servers'
//! health (PING, ops/s, CPU, memory, kvferry's commands, request wait and rate limit). Every
//! figure is a gauge except the `_total` ones; a task's keys can go down when its scan starts
//! over.

use std::fmt::Write as _;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::anyhow;

use crate::progress::{current_view, TaskView};
use crate::server::health::{current, Stats};

/// The endpoint's server; stops when dropped.
pub struct Metrics {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    pub addr: String,
}

impl Metrics {
    /// Listens on `addr` (`HOST:PORT`, port 0 for any) for the run of `command`.
    pub fn start(addr: &str, command: &'static str) -> anyhow::Result<Metrics> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            anyhow!("--metrics-addr {addr}: cannot listen there ({e}); give a free HOST:PORT, e.g. 127.0.0.1:9898")
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .map_or_else(|| addr.to_string(), |a| a.to_string());
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("kvferry-metrics".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let (code, body) = match req.url() {
                        "/metrics" => (200, render(command)),
                        "/" => (200, "kvferry: metrics are at /metrics\n".to_string()),
                        _ => (404, "not found: metrics are at /metrics\n".to_string()),
                    };
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    )
                    .expect("BUG: a valid header");
                    let _ = req.respond(
                        tiny_http::Response::from_string(body)
                            .with_status_code(code)
                            .with_header(header),
                    );
                }
            })
            .expect("BUG: cannot start the metrics thread");
        crate::note!("metrics at http://{bound}/metrics");
        Ok(Metrics {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `12`, `0.00026`: at most 6 decimals, no float noise.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let t = format!("{v:.6}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let _ = writeln!(self.text, "{name}{{{}}} {}", l.join(","), number(value));
    }
}

type TaskFig = (&'static str, &'static str, &'static str, fn(&TaskView) -> Option<f64>);
type ServerFig = (&'static str, &'static str, &'static str, fn(&Stats) -> Option<f64>);

/// The metrics now, in the Prometheus text format.
pub fn render(command: &str) -> String {
    let mut o = Out { text: String::new() };
    o.family("kvferry_info", "gauge", "The run: its command and kvferry's version.");
    o.sample(
        "kvferry_info",
        &[("command", command), ("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    if let Some(v) = current_view() {
        let phase = v.phase.as_str();
        o.family("kvferry_elapsed_seconds", "gauge", "Seconds since the phase started.");
        o.sample("kvferry_elapsed_seconds", &[("phase", phase)], v.elapsed_s as f64);
        let tasks: [TaskFig; 8] = [
            ("kvferry_keys", "gauge", "Keys done, per task (shard).", |t| {
                Some(t.keys as f64)
            }),
            (
                "kvferry_bytes",
                "gauge",
                "Bytes of keys and values done, per task.",
                |t| Some(t.bytes as f64),
            ),
            (
                "kvferry_keys_failed",
                "gauge",
                "Keys that failed, per task (the summary names them).",
                |t| Some(t.failed as f64),
            ),
            (
                "kvferry_keys_expected",
                "gauge",
                "Keys the task expects in all (a manifest's count or an estimate).",
                |t| t.total_keys.map(|k| k as f64),
            ),
            (
                "kvferry_keys_remaining",
                "gauge",
                "Keys left to do, per task: the lag behind the total.",
                |t| t.total_keys.map(|k| k.saturating_sub(t.keys) as f64),
            ),
            (
                "kvferry_keys_per_second",
                "gauge",
                "Keys a second, per task, since it started.",
                |t| Some(t.keys_per_sec),
            ),
            (
                "kvferry_eta_seconds",
                "gauge",
                "Seconds left, per task, at its rate.",
                |t| t.eta_s.map(|e| e as f64),
            ),
            ("kvferry_task_running", "gauge", "1 while the task runs.", |t| {
                Some(if t.state == "running" { 1.0 } else { 0.0 })
            }),
        ];
        for (name, kind, help, f) in tasks {
            o.family(name, kind, help);
            for t in &v.all {
                if let Some(x) = f(t) {
                    o.sample(name, &[("phase", phase), ("task", &t.task)], x);
                }
            }
        }
        o.family("kvferry_tasks", "gauge", "Tasks by state.");
        for state in ["waiting", "running", "done", "failed"] {
            let n = v.all.iter().filter(|t| t.state == state).count();
            o.sample("kvferry_tasks", &[("phase", phase), ("state", state)], n as f64);
        }
    }
    let servers: [ServerFig; 12] = [
        ("kvferry_server_up", "gauge", "1 while the server answers PING.", |s| {
            Some(if s.up { 1.0 } else { 0.0 })
        }),
        (
            "kvferry_server_ping_seconds",
            "gauge",
            "Median PING round trip over the last second.",
            |s| s.ping_ms.map(|p| p / 1000.0),
        ),
        (
            "kvferry_server_ping_baseline_seconds",
            "gauge",
            "PING before the run put load on the server.",
            |s| s.ping_baseline_ms.map(|p| p / 1000.0),
        ),
        (
            "kvferry_server_ops_per_second",
            "gauge",
            "The server's own ops/s, all clients (INFO).",
            |s| s.server_ops_per_sec.map(|o| o as f64),
        ),
        (
            "kvferry_server_cpu_ratio",
            "gauge",
            "Server CPU over the last 2 s, in cores.",
            |s| s.cpu_percent.map(|c| c / 100.0),
        ),
        (
            "kvferry_server_used_memory_bytes",
            "gauge",
            "The server's used memory (INFO).",
            |s| s.used_memory.map(|m| m as f64),
        ),
        (
            "kvferry_server_commands_total",
            "counter",
            "Commands kvferry sent to the server.",
            |s| Some(s.commands as f64),
        ),
        (
            "kvferry_server_commands_per_second",
            "gauge",
            "Commands a second kvferry sends to the server, lately.",
            |s| Some(s.commands_per_sec),
        ),
        (
            "kvferry_server_request_seconds",
            "gauge",
            "Mean wait of kvferry's requests for replies, last 2 s.",
            |s| s.request_ms.map(|r| r / 1000.0),
        ),
        (
            "kvferry_server_rate_limit",
            "gauge",
            "Commands a second allowed now (absent when unlimited).",
            |s| s.rate_limit.map(|r| r as f64),
        ),
        (
            "kvferry_server_rate_changes_total",
            "counter",
            "Changes of the rate by --max-latency-ms.",
            |s| Some(s.rate_changes as f64),
        ),
        (
            "kvferry_server_sample_errors_total",
            "counter",
            "Health readings that got no answer.",
            |s| Some(s.sample_errors as f64),
        ),
    ];
    let stats = current();
    for (name, kind, help, f) in servers {
        o.family(name, kind, help);
        for s in &stats {
            if let Some(x) = f(s) {
                o.sample(name, &[("role", s.role), ("server", &s.server)], x);
            }
        }
    }
    o.text
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_label_values() {
        assert_eq!(super::esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(super::number(0.00026000000000000003), "0.00026");
        assert_eq!(super::number(12.0), "12");
    }
}
