//! What export, import, verify and migrate share to watch a run while it goes on: the health of
//! its servers (always, beside the progress and in the report), `--max-latency-ms` (the
//! throttle steered by the latency the run adds) and `--metrics-addr` (Prometheus metrics).

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::server::health::{Health, Spec, Stats};
use crate::server::throttle::Throttle;
use crate::server::{Endpoint, ServerKind};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct WatchArgs {
    /// Keep the latency the run adds to its servers under this bound, for running beside
    /// production traffic: once a second the median PING of the last second is compared with the
    /// PING before the run; while the difference is over the bound, commands slow down by 30 %,
    /// and while it stays under half the bound they speed up again by 20 % (never over
    /// --max-ops-per-sec).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub max_latency_ms: Option<u64>,
    /// Serve Prometheus metrics of the run at http://HOST:PORT/metrics (keys, bytes, failed keys,
    /// rate, keys left and ETA per shard; PING, ops/s, CPU, memory, kvferry's commands and
    /// rate limit per server). Port 0 takes a free port; the address is printed.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// A server to watch: its role (`source`, `target`), where it is, what it is, and the run's
/// throttle to it.
pub struct Watched<'a> {
    pub role: &'static str,
    pub endpoint: &'a Endpoint,
    pub kind: &'a ServerKind,
    pub throttle: Arc<Throttle>,
}

impl<'a> Watched<'a> {
    /// The sources of a run (export, migrate), all sharing one throttle.
    pub fn sources(endpoints: &'a [Endpoint], kinds: &'a [ServerKind], throttle: &Arc<Throttle>) -> Vec<Watched<'a>> {
        endpoints
            .iter()
            .zip(kinds)
            .map(|(endpoint, kind)| Watched {
                role: "source",
                endpoint,
                kind,
                throttle: throttle.clone(),
            })
            .collect()
    }
}

/// The running watch; ends when dropped.
pub struct Watch {
    metrics: Option<Metrics>,
    health: Option<Health>,
}

impl WatchArgs {
    /// Starts the metrics endpoint (first: a taken address fails before any work) and the
    /// health of `servers`, steered by the latency bound where one is given. Where several
    /// servers share a throttle, the first of them steers it.
    pub fn start(&self, command: &'static str, servers: Vec<Watched>, max_rate: Option<u64>) -> anyhow::Result<Watch> {
        let metrics = match &self.metrics_addr {
            Some(addr) => Some(Metrics::start(addr, command)?),
            None => None,
        };
        let mut steered: Vec<Arc<Throttle>> = Vec::new();
        let specs = servers
            .into_iter()
            .map(|w| {
                let first = !steered.iter().any(|t| Arc::ptr_eq(t, &w.throttle));
                steered.push(w.throttle.clone());
                Spec {
                    role: w.role,
                    endpoint: w.endpoint.clone(),
                    kind: w.kind.clone(),
                    throttle: w.throttle,
                    max_latency: self.max_latency_ms.filter(|_| first).map(Duration::from_millis),
                    max_rate,
                }
            })
            .collect();
        let health = Health::start(specs, Arc::new(crate::progress::say));
        Ok(Watch {
            metrics,
            health: Some(health),
        })
    }
}

impl Watch {
    /// The servers' figures now (for the summary and the report).
    pub fn stats(&self) -> Vec<Stats> {
        self.health.as_ref().map_or_else(Vec::new, |h| h.stats())
    }

    /// One line per server for the summary on stdout.
    pub fn summary_lines(&self) -> Vec<String> {
        self.stats().iter().map(summary_line).collect()
    }

    /// Prints the servers' lines (stdout, with the summary) and records them for the JSON
    /// result line.
    pub fn print_summary(&self) {
        let stats = self.stats();
        for s in &stats {
            println!("{}", summary_line(s));
        }
        crate::progress::set_result(serde_json::json!({ "servers": stats }));
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The health first: the metrics keep answering until the end.
        self.health.take();
        self.metrics.take();
    }
}

/// `source redis://h:6379: PING 0.21 ms before the run, up to 3.40 ms; up to 45k ops/s, CPU
/// up to 87%, memory up to 1.2 GiB; kvferry sent 123456 commands; rate lowered 3 times, to
/// 2000 commands/s at the lowest`.
pub fn summary_line(s: &Stats) -> String {
    let mut parts = Vec::new();
    match (s.ping_baseline_ms, s.ping_max_ms) {
        (Some(b), Some(m)) => parts.push(format!("PING {b:.2} ms before the run, up to {m:.2} ms")),
        (Some(b), None) => parts.push(format!("PING {b:.2} ms before the run")),
        _ => parts.push("no answer to PING".to_string()),
    }
    if let Some(o) = s.server_ops_per_sec_max {
        parts.push(format!("up to {o} ops/s"));
    }
    if let Some(c) = s.cpu_percent_max {
        parts.push(format!("CPU up to {c:.0}%"));
    }
    if let Some(m) = s.used_memory_max {
        parts.push(format!("memory up to {}", indicatif::HumanBytes(m)));
    }
    parts.push(format!("kvferry sent {}", crate::util::count(s.commands, "command")));
    if s.rate_changes > 0 {
        parts.push(format!(
            "--max-latency-ms changed the rate {}, {}",
            crate::util::count(s.rate_changes, "time"),
            s.rate_limit_min
                .map_or_else(String::new, |m| format!("lowest {m} commands/s"))
        ));
    }
    format!("{} {}: {}", s.role, s.server, parts.join("; "))
}
