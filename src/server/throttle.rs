//! `--max-ops-per-sec`: keeps the commands sent to a server under a rate, so a run can go on
//! beside production traffic. Counts every command (a pipeline of n commands counts n) and, when
//! ahead of the allowed rate, waits until the rate is met again. One throttle is shared by all
//! the connections to one server of a run (all shards together), from any thread.
//!
//! The rate can change while the run goes on (`--max-latency-ms` lowers and raises it, see
//! `cmd::watch`): commands are paced on a clock of their own, each moving it on by 1/rate, so a
//! new rate holds from the next command, without a burst to make up for the time before. The
//! throttle also counts, unlimited or not, the commands sent and how long the server took to
//! answer them, for the health display and the metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far the pacing clock may lag behind the real one: after a pause (the run waited for
/// something else), at most this much of unused rate is spent at once.
const SLACK: Duration = Duration::from_millis(100);

/// A limit on commands per second; a rate of 0 means unlimited.
#[derive(Debug)]
pub struct Throttle {
    rate: AtomicU64,
    /// When the next command may go (the pacing clock).
    next: Mutex<Instant>,
    ops: AtomicU64,
    requests: AtomicU64,
    request_us: AtomicU64,
}

impl Throttle {
    pub fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: AtomicU64::new(rate.unwrap_or(0)),
            next: Mutex::new(Instant::now()),
            ops: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            request_us: AtomicU64::new(0),
        }
    }

    /// The rate now; None when unlimited.
    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Relaxed)).filter(|r| *r > 0)
    }

    /// Changes the rate for the commands from now on (None: unlimited).
    pub fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Relaxed);
    }

    /// Commands sent so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Relaxed)
    }

    /// Requests answered so far (a pipeline is one) and the time the server took for them all.
    pub fn requests(&self) -> (u64, Duration) {
        (
            self.requests.load(Relaxed),
            Duration::from_micros(self.request_us.load(Relaxed)),
        )
    }

    /// Accounts for a request answered after `took`.
    pub fn answered(&self, took: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.request_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Accounts for `n` commands about to be sent, waiting first if they would exceed the rate.
    pub fn take(&self, n: u64) {
        let Some(rate) = self.rate() else {
            self.ops.fetch_add(n, Relaxed);
            return;
        };
        let wait = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(SLACK).unwrap_or(now));
            *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
            next.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait); // rate limiting, not synchronisation
        }
        // Counted once sent: what the server got, not what waits.
        self.ops.fetch_add(n, Relaxed);
    }
}

/// A connection whose every command passes through a [`Throttle`].
pub struct Throttled<'c> {
    pub conn: &'c mut dyn redis::ConnectionLike,
    pub throttle: &'c Throttle,
}

impl redis::ConnectionLike for Throttled<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.throttle.take(1);
        let t = Instant::now();
        let r = self.conn.req_packed_command(cmd);
        self.throttle.answered(t.elapsed());
        r
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.throttle.take((offset + count) as u64);
        let t = Instant::now();
        let r = self.conn.req_packed_commands(cmd, offset, count);
        self.throttle.answered(t.elapsed());
        r
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_and_takes_a_new_one_at_once() {
        let t = Throttle::new(Some(1000));
        let start = Instant::now();
        for _ in 0..10 {
            t.take(20); // 200 commands at 1000/s: at least 0.1 s (less the slack)
        }
        assert!(start.elapsed() >= Duration::from_millis(95), "{:?}", start.elapsed());
        t.set_rate(Some(100));
        let start = Instant::now();
        for _ in 0..3 {
            t.take(10); // 30 commands at 100/s: 0.3 s
        }
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
        t.set_rate(None);
        let start = Instant::now();
        t.take(1_000_000);
        assert!(start.elapsed() < Duration::from_millis(50));
        assert_eq!(t.ops(), 200 + 30 + 1_000_000);
    }
}
