//! Live health of the servers a run works on: a thread per server, on a connection of its own,
//! sends PING every 250 ms (what any client of the server waits now) and reads `INFO` every 2 s
//! (the server's ops/s, CPU and memory); the run's [`Throttle`] to that server tells what
//! kvferry itself sends and how long its requests wait. The progress display, the metrics
//! endpoint and the reports read the figures from here.
//!
//! With a latency bound (`--max-latency-ms`), the same thread steers the throttle: once a
//! second it compares the median PING of the last second with the PING measured before the run
//! started (the server's own latency); while the difference is over the bound the rate drops by
//! 30 %, and while it stays under half the bound the rate grows by 20 %, up to
//! `--max-ops-per-sec` (or back to unlimited).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::conn::ServerKind;
use super::endpoint::Endpoint;
use super::throttle::Throttle;

const PING_EVERY: Duration = Duration::from_millis(250);
/// Pings per [`INFO`](Stats) reading and per decision of the controller.
const INFO_EVERY: u32 = 8;
const DECIDE_EVERY: u32 = 4;
/// A PING unanswered for this long counts as over any bound.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The controller never goes under this many commands a second: the run slows, it never stops.
pub const MIN_RATE: u64 = 20;

/// What is known of one server now, and over the run so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// `source` or `target`.
    pub role: &'static str,
    /// The URL without credentials.
    pub server: String,
    /// False while the health connection gets no answer.
    pub up: bool,
    /// Median PING round trip over the last second.
    pub ping_ms: Option<f64>,
    /// PING before the run put any load on the server.
    pub ping_baseline_ms: Option<f64>,
    /// The highest median over the run.
    pub ping_max_ms: Option<f64>,
    /// The server's own count (INFO `instantaneous_ops_per_sec`), all clients together.
    pub server_ops_per_sec: Option<u64>,
    pub server_ops_per_sec_max: Option<u64>,
    /// Server CPU (user + system) over the last 2 s, in % of one core.
    pub cpu_percent: Option<f64>,
    pub cpu_percent_max: Option<f64>,
    /// INFO `used_memory` (Kvrocks: `used_memory_rss`).
    pub used_memory: Option<u64>,
    pub used_memory_max: Option<u64>,
    /// Commands kvferry sent to the server, and how many a second lately.
    pub commands: u64,
    pub commands_per_sec: f64,
    /// How long kvferry's requests (a pipeline counts once) waited for replies, on average over
    /// the last 2 s.
    pub request_ms: Option<f64>,
    /// The throttle's rate now (None: unlimited), its lowest, and how often the latency bound
    /// changed it.
    pub rate_limit: Option<u64>,
    pub rate_limit_min: Option<u64>,
    pub rate_changes: u64,
    /// Health readings that failed (no answer, an error).
    pub sample_errors: u64,
}

/// One watched server.
pub struct Watched {
    pub throttle: Arc<Throttle>,
    stats: Mutex<Stats>,
}

impl Watched {
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.commands = self.throttle.ops();
        s.rate_limit = self.throttle.rate();
        s
    }

    fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What to watch, and how to steer.
pub struct Spec {
    pub role: &'static str,
    pub endpoint: Endpoint,
    pub kind: ServerKind,
    pub throttle: Arc<Throttle>,
    /// The latency bound to steer the throttle by (None: only watch).
    pub max_latency: Option<Duration>,
    /// The rate the user allowed (`--max-ops-per-sec`): the controller never goes over it.
    pub max_rate: Option<u64>,
}

/// The running watch of a run's servers; stops its threads when dropped.
pub struct Health {
    pub servers: Vec<Arc<Watched>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Where the controller says that it changed a rate (the progress display's line printer).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

impl Health {
    /// Measures each server's latency before the run (its baseline), then starts watching.
    pub fn start(specs: Vec<Spec>, say: Say) -> Health {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let mut servers = Vec::new();
        let mut threads = Vec::new();
        for spec in specs {
            let w = Arc::new(Watched {
                throttle: spec.throttle.clone(),
                stats: Mutex::new(Stats {
                    role: spec.role,
                    server: spec.endpoint.name(),
                    ..Stats::default()
                }),
            });
            let mut sampler = Sampler::new(spec, w.clone(), say.clone());
            sampler.baseline();
            sampler.info();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name("kvferry-health".into())
                .spawn(move || sampler.run(&stop))
                .expect("BUG: cannot start the health thread");
            servers.push(w);
            threads.push(t);
        }
        WATCHING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(servers.iter().map(Arc::downgrade));
        Health { servers, stop, threads }
    }

    pub fn stats(&self) -> Vec<Stats> {
        self.servers.iter().map(|w| w.stats()).collect()
    }
}

/// The servers watched now in this process (for the progress display and the metrics).
static WATCHING: Mutex<Vec<std::sync::Weak<Watched>>> = Mutex::new(Vec::new());

/// The figures of every server watched now.
pub fn current() -> Vec<Stats> {
    let mut w = WATCHING.lock().unwrap_or_else(|e| e.into_inner());
    w.retain(|s| s.strong_count() > 0);
    w.iter().filter_map(|s| s.upgrade()).map(|s| s.stats()).collect()
}

impl Drop for Health {
    fn drop(&mut self) {
        WATCHING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| !self.servers.iter().any(|w| std::ptr::eq(s.as_ptr(), Arc::as_ptr(w))));
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        // Not joined: a thread waiting for a PING of a dead server (up to 5 s) must not hold
        // up the end of the run; it sees the stop at its next tick.
        self.threads.clear();
    }
}

struct Sampler {
    spec: Spec,
    w: Arc<Watched>,
    say: Say,
    conn: Option<redis::Connection>,
    pings: VecDeque<Option<f64>>,
    baseline: Option<f64>,
    /// CPU seconds and when they were read, for the next delta.
    cpu: Option<(f64, Instant)>,
    /// Requests and their wait, and kvferry's commands, at the last reading.
    requests: (u64, Duration),
    ops: (u64, Instant),
    /// kvferry's commands at the last decision.
    sent: (u64, Instant),
    /// When the controller last changed the rate, and last said so.
    changed: Option<Instant>,
    said: Option<Instant>,
}

impl Sampler {
    fn new(spec: Spec, w: Arc<Watched>, say: Say) -> Sampler {
        let requests = spec.throttle.requests();
        let ops = (spec.throttle.ops(), Instant::now());
        Sampler {
            spec,
            w,
            say,
            conn: None,
            pings: VecDeque::new(),
            baseline: None,
            cpu: None,
            requests,
            ops,
            sent: ops,
            changed: None,
            said: None,
        }
    }

    fn connection(&mut self) -> Option<&mut redis::Connection> {
        if self.conn.is_none() {
            // Not server::connect: that one waits for a loading server for minutes, and the
            // health must never hold up the end of a run.
            let mut c = self
                .spec
                .endpoint
                .client()
                .ok()?
                .get_connection_with_timeout(PING_TIMEOUT)
                .ok()?;
            c.set_read_timeout(Some(PING_TIMEOUT)).ok();
            let _ = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("kvferry-health")
                .query::<()>(&mut c);
            self.conn = Some(c);
        }
        self.conn.as_mut()
    }

    fn ping(&mut self) -> Option<f64> {
        let conn = self.connection()?;
        let t = Instant::now();
        match redis::cmd("PING").query::<String>(conn) {
            Ok(_) => Some(t.elapsed().as_secs_f64() * 1000.0),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    /// The server's latency before the run: the median of 5 PINGs.
    fn baseline(&mut self) {
        let mut v: Vec<f64> = (0..5).filter_map(|_| self.ping()).collect();
        self.baseline = median(&mut v);
        let b = self.baseline;
        self.w.update(|s| {
            s.ping_baseline_ms = b.map(round2);
            s.up = b.is_some();
        });
    }

    fn run(&mut self, stop: &(Mutex<bool>, Condvar)) {
        let mut tick: u32 = 0;
        let mut stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // A timed wait: a reading every 250 ms, and an end at once when told to stop.
            let (s, _) = stop
                .1
                .wait_timeout_while(stopped, PING_EVERY, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *s {
                return;
            }
            drop(s);
            tick += 1;
            let p = self.ping();
            self.pings.push_back(p);
            while self.pings.len() > DECIDE_EVERY as usize {
                self.pings.pop_front();
            }
            let mut answered: Vec<f64> = self.pings.iter().flatten().copied().collect();
            let med = median(&mut answered);
            self.w.update(|s| {
                s.up = p.is_some();
                s.ping_ms = med.map(round2);
                if let Some(m) = med {
                    s.ping_max_ms = Some(round2(s.ping_max_ms.map_or(m, |x: f64| x.max(m))));
                }
                if p.is_none() {
                    s.sample_errors += 1;
                }
            });
            if tick % DECIDE_EVERY == 0 {
                self.decide(med, self.pings.iter().any(|p| p.is_none()));
            }
            if tick % INFO_EVERY == 0 {
                self.info();
            }
            stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Reads INFO, and what kvferry sent and waited since the last reading.
    fn info(&mut self) {
        let (n, waited) = self.spec.throttle.requests();
        let (n0, w0) = std::mem::replace(&mut self.requests, (n, waited));
        let request_ms = (n > n0).then(|| (waited - w0).as_secs_f64() * 1000.0 / (n - n0) as f64);
        let ops = (self.spec.throttle.ops(), Instant::now());
        let (o0, t0) = std::mem::replace(&mut self.ops, ops);
        let per_sec = (ops.0 - o0) as f64 / ops.1.duration_since(t0).as_secs_f64().max(1e-3);
        let pika = matches!(self.spec.kind, ServerKind::Pika(..));
        let fields = self.connection().map(|conn| {
            let mut text = String::new();
            // Sections by name: a plain INFO on Pika includes the keyspace section; `data` is
            // where Pika puts used_memory.
            for section in ["stats", "cpu", if pika { "data" } else { "memory" }] {
                match redis::cmd("INFO").arg(section).query::<String>(conn) {
                    Ok(t) => text.push_str(&t),
                    Err(_) => return None,
                }
            }
            Some(parse_info(&text))
        });
        let Some(Some(f)) = fields else {
            self.conn = None;
            self.w.update(|s| s.sample_errors += 1);
            return;
        };
        let num = |k: &str| {
            f.iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        };
        let cpu_now = match (num("used_cpu_user"), num("used_cpu_sys")) {
            (Some(u), Some(s)) => Some((u + s, Instant::now())),
            _ => None,
        };
        let cpu = match (self.cpu, cpu_now) {
            (Some((c0, t0)), Some((c1, t1))) if c1 >= c0 => {
                Some(100.0 * (c1 - c0) / t1.duration_since(t0).as_secs_f64().max(1e-3))
            }
            _ => None,
        };
        self.cpu = cpu_now;
        let ops = num("instantaneous_ops_per_sec").map(|v| v as u64);
        let mem = num("used_memory").or_else(|| num("used_memory_rss")).map(|v| v as u64);
        self.w.update(|s| {
            s.server_ops_per_sec = ops;
            s.server_ops_per_sec_max = s.server_ops_per_sec_max.max(ops);
            s.cpu_percent = cpu.map(round1);
            if let Some(c) = cpu {
                s.cpu_percent_max = Some(round1(s.cpu_percent_max.map_or(c, |m| m.max(c))));
            }
            s.used_memory = mem;
            s.used_memory_max = s.used_memory_max.max(mem);
            s.commands_per_sec = per_sec.round();
            s.request_ms = request_ms.map(round2);
        });
    }

    /// Once a second, under a latency bound: lowers the rate while the server's added latency
    /// is over the bound (or a PING went unanswered), raises it while well under.
    fn decide(&mut self, median: Option<f64>, unanswered: bool) {
        let Some(bound) = self.spec.max_latency else { return };
        let sent = self.sent_rate();
        let bound_ms = bound.as_secs_f64() * 1000.0;
        // Right after a change the pings still show the load from before: one second to settle.
        if self.changed.is_some_and(|c| c.elapsed() < Duration::from_millis(1500)) {
            return;
        }
        let added = median.map(|m| m - self.baseline.unwrap_or(0.0));
        let t = &self.spec.throttle;
        let name = self.w.stats.lock().unwrap_or_else(|e| e.into_inner()).server.clone();
        let role = self.spec.role;
        if unanswered || added.is_some_and(|a| a > bound_ms) {
            // Where unlimited, start from what kvferry sent in the last second.
            let now = t.rate().unwrap_or(sent);
            let new = ((now as f64 * 0.7) as u64).max(MIN_RATE);
            if t.rate() == Some(new) {
                return;
            }
            t.set_rate(Some(new));
            self.changed = Some(Instant::now());
            self.w.update(|s| {
                s.rate_changes += 1;
                s.rate_limit_min = Some(s.rate_limit_min.map_or(new, |m| m.min(new)));
            });
            if self.said.is_none_or(|s| s.elapsed() >= Duration::from_secs(5)) {
                let why = match added {
                    Some(a) if !unanswered => {
                        format!("{a:.1} ms over its own latency, more than the {bound_ms:.0} ms bound")
                    }
                    _ => format!("PING unanswered for {} s", PING_TIMEOUT.as_secs()),
                };
                (self.say)(&format!(
                    "{role} {name}: {why}; rate lowered to {new} commands/s (--max-latency-ms)"
                ));
                self.said = Some(Instant::now());
            }
        } else if added.is_some_and(|a| a < bound_ms / 2.0) {
            let Some(now) = t.rate() else { return };
            if Some(now) == self.spec.max_rate {
                return;
            }
            let mut new = Some(((now as f64 * 1.2) as u64).max(now + 1));
            match self.spec.max_rate {
                Some(max) => new = new.map(|n| n.min(max)),
                // Unlimited again once the limit is far above what the run sends anyway.
                None if new.is_some_and(|n| n as f64 > 2.0 * sent as f64 + 100.0) => new = None,
                None => {}
            }
            t.set_rate(new);
            self.changed = Some(Instant::now());
            self.w.update(|s| s.rate_changes += 1);
            if new == self.spec.max_rate {
                let to = new.map_or("unlimited".to_string(), |n| format!("{n} commands/s"));
                (self.say)(&format!(
                    "{role} {name}: latency back under the {bound_ms:.0} ms bound; rate back to {to}"
                ));
                self.said = Some(Instant::now());
            }
        }
    }

    /// Commands a second kvferry sent to the server since the last decision (at least 1).
    fn sent_rate(&mut self) -> u64 {
        let now = (self.spec.throttle.ops(), Instant::now());
        let (o0, t0) = std::mem::replace(&mut self.sent, now);
        let secs = now.1.duration_since(t0).as_secs_f64().max(1e-3);
        (((now.0 - o0) as f64 / secs) as u64).max(1)
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `name:value` lines of an INFO reply.
fn parse_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields_and_medians() {
        let f = parse_info("# Stats\r\ninstantaneous_ops_per_sec:12\r\n# CPU\r\nused_cpu_sys:1.5\r\n");
        assert_eq!(f[0], ("instantaneous_ops_per_sec".into(), "12".into()));
        assert_eq!(f[1].1, "1.5");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut []), None);
    }
}
