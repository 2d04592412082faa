//! `--max-ops-per-sec`: keeps the commands sent to a source under a rate, so an export can run
//! beside production traffic. Counts every command (a pipeline of n commands counts n) and, when
//! ahead of the allowed rate, waits until the rate is met again. One throttle is shared by all
//! the connections of a run (all shards together), from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A limit on commands per second; `None` means unlimited.
#[derive(Debug)]
pub struct Throttle {
    rate: Option<u64>,
    start: Instant,
    ops: AtomicU64,
}

impl Throttle {
    pub fn new(rate: Option<u64>) -> Throttle {
        Throttle {
            rate: rate.filter(|r| *r > 0),
            start: Instant::now(),
            ops: AtomicU64::new(0),
        }
    }

    /// Accounts for `n` commands about to be sent, waiting first if they would exceed the rate.
    pub fn take(&self, n: u64) {
        let Some(rate) = self.rate else { return };
        let ops = self.ops.fetch_add(n, Ordering::Relaxed) + n;
        let due = Duration::from_secs_f64(ops as f64 / rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed); // rate limiting, not synchronisation
        }
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
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.throttle.take((offset + count) as u64);
        self.conn.req_packed_commands(cmd, offset, count)
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
