//! A connection to a source that survives faults: after a dropped connection or a restarted
//! server it reconnects with backoff, says whether the server restarted (its `run_id` changed),
//! and counts every command through the run's [`Throttle`].

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use super::conn::{connect, describe, Server};
use super::throttle::{Throttle, Throttled};
use crate::server::endpoint::Endpoint;

/// How long to keep trying to reconnect before giving up.
const PATIENCE: Duration = Duration::from_secs(120);

/// Where a link says that it is waiting for its server (the progress display's line printer).
pub type Notify = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// How often a link still waiting for its server says so again.
const NOTIFY_EVERY: Duration = Duration::from_secs(10);

pub struct Link {
    endpoint: Endpoint,
    /// Told when the server does not answer a reconnection at once, and every 10 s after, so
    /// that an operator sees which server is gone, since when, and when the export gives up
    /// (issue 11: a dead source showed only `0/3000 keys` for two minutes).
    notify: Option<Notify>,
    pub server: Server,
    conn: redis::Connection,
    run_id: Option<String>,
    db: Option<u32>,
    /// Reconnections so far.
    pub reconnects: u64,
}

fn run_id(conn: &mut redis::Connection) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query(conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:").map(|v| v.trim().to_string()))
}

/// Names the connection, so an operator sees the export in CLIENT LIST.
fn name(conn: &mut redis::Connection) {
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("kvferry-export")
        .query::<()>(conn);
}

/// True when `e` comes from a lost or refused connection rather than from a command.
pub fn is_connection_error(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<redis::RedisError>())
        .any(lost)
}

fn lost(r: &redis::RedisError) -> bool {
    r.is_io_error() || r.is_connection_dropped() || r.is_connection_refusal() || r.is_timeout()
}

/// True when `e` comes from a command that got no reply in time (the read timeout of
/// [`connect`]).
pub fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<redis::RedisError>())
        .any(|r| r.is_timeout())
}

/// How many times a page whose command got no reply is read again (on a new connection) before
/// the export stops and names the command: a server stuck on one command must not hang the
/// export (issue 15).
pub const TIMEOUT_RETRIES: u32 = 2;

/// The error for a command of `link` that got no reply `TIMEOUT_RETRIES + 1` times.
pub fn stuck(e: anyhow::Error, link: &Link) -> anyhow::Error {
    e.context(stuck_text(link))
}

fn stuck_text(link: &Link) -> String {
    format!(
        "{}: no reply in {} s, {} times: the server is stuck on this command or overloaded; check it (or give more time with --read-timeout), then run the same command with --resume",
        link.server.name,
        link.endpoint.read_timeout().as_secs(),
        TIMEOUT_RETRIES + 1
    )
}

/// How many lost connections in a row (with no command answered between them) a [`Steady`]
/// connection takes before it gives up.
pub const LOSSES: u64 = 10;

/// See [`Link::steady`].
pub struct Steady<'c> {
    link: &'c mut Link,
    throttle: &'c Throttle,
    /// Lost connections and timeouts since the last command answered.
    lost: u64,
    timeouts: u32,
}

impl Steady<'_> {
    fn resend<T>(&mut self, mut send: impl FnMut(&mut Throttled) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        loop {
            let e = match send(&mut self.link.conn(self.throttle)) {
                Ok(v) => {
                    (self.lost, self.timeouts) = (0, 0);
                    return Ok(v);
                }
                Err(e) if !lost(&e) => return Err(e),
                Err(e) => e,
            };
            if e.is_timeout() {
                self.timeouts += 1;
                if self.timeouts > TIMEOUT_RETRIES {
                    return Err(given_up(format!("{}: {e}", stuck_text(self.link))));
                }
            } else {
                self.lost += 1;
                if self.lost > LOSSES {
                    return Err(given_up(format!(
                        "{}: the connection was lost {} times in a row, with no reply between (the last: {e}); is something cutting long connections or big replies (a proxy, a firewall, the server's client-output-buffer-limit)? Fix that, then run the same command with --resume",
                        self.link.server.name,
                        LOSSES + 1
                    )));
                }
            }
            match self.link.recover() {
                Ok(false) => {}
                Ok(true) => return Err(e),
                Err(r) => return Err(given_up(format!("{r:#}"))),
            }
        }
    }
}

/// An error that a caller must not retry: the [`Steady`] connection did, as often as it may.
fn given_up(text: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::ClientError, "gave up", text))
}

impl redis::ConnectionLike for Steady<'_> {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.resend(|c| c.req_packed_command(cmd))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.resend(|c| c.req_packed_commands(cmd, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.link.db.map_or(0, i64::from)
    }

    fn check_connection(&mut self) -> bool {
        self.link.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.link.conn.is_open()
    }
}

impl Link {
    /// Connects to `url` and finds out what the server is.
    pub fn open(endpoint: &Endpoint) -> anyhow::Result<Link> {
        let mut conn = connect(endpoint, Duration::from_secs(10))?;
        let server = describe(&endpoint.name(), &mut conn)?;
        name(&mut conn);
        let run_id = run_id(&mut conn);
        Ok(Link {
            endpoint: endpoint.clone(),
            notify: None,
            server,
            conn,
            run_id,
            db: None,
            reconnects: 0,
        })
    }

    /// Says where to tell that the server does not answer (every link made from this one too).
    pub fn with_notify(mut self, notify: Option<Notify>) -> Link {
        self.notify = notify;
        self
    }

    /// Another connection to the same server, on the same database.
    pub fn another(&self) -> anyhow::Result<Link> {
        let mut l = Link::open(&self.endpoint)?.with_notify(self.notify.clone());
        if let Some(db) = self.db {
            l.select(db)?;
        }
        Ok(l)
    }

    /// The server's `run_id` (INFO server) when last connected; None if it reports none, and then
    /// every reconnection counts as a restart.
    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// The connection, throttled.
    pub fn conn<'c>(&'c mut self, throttle: &'c Throttle) -> Throttled<'c> {
        Throttled {
            conn: &mut self.conn,
            throttle,
        }
    }

    /// The connection, throttled, and steady: a read whose connection is lost (or that gets no
    /// reply in time) is sent again on a new connection, so a key read in several commands goes
    /// on where it was rather than being read again from its start (which would write it twice,
    /// issue 11). It gives up, with an error that names the server and says what to do, after
    /// `TIMEOUT_RETRIES + 1` timeouts or `LOSSES + 1` lost connections in a row, when it cannot
    /// reconnect, and at once (with the connection error) when the server restarted meanwhile:
    /// positions held on it (scan cursors) are void then, and the caller reads again.
    pub fn steady<'c>(&'c mut self, throttle: &'c Throttle) -> Steady<'c> {
        Steady {
            link: self,
            throttle,
            lost: 0,
            timeouts: 0,
        }
    }

    /// SELECTs `db`, and again after every reconnection.
    pub fn select(&mut self, db: u32) -> anyhow::Result<()> {
        redis::cmd("SELECT")
            .arg(db)
            .query::<()>(&mut self.conn)
            .with_context(|| format!("{}: SELECT {db}", self.server.name))?;
        self.db = Some(db);
        Ok(())
    }

    /// After a connection error: reconnects with backoff (0.1 s doubling to 5 s, for up to
    /// 2 minutes) and re-selects the database. Returns true when the server restarted meanwhile
    /// (its run_id changed, or it has none to compare), so positions held on it are void.
    pub fn recover(&mut self) -> anyhow::Result<bool> {
        let started = Instant::now();
        let lost_at = crate::util::now_ms();
        let mut delay = Duration::from_millis(100);
        let mut told: Option<Instant> = None;
        loop {
            match connect(&self.endpoint, Duration::from_secs(5)) {
                Ok(mut conn) => {
                    name(&mut conn);
                    let id = run_id(&mut conn);
                    let restarted = id.is_none() || id != self.run_id;
                    (self.conn, self.run_id) = (conn, id);
                    self.reconnects += 1;
                    if let Some(db) = self.db {
                        self.select(db)?;
                    }
                    if let (Some(n), Some(_)) = (&self.notify, told) {
                        n(&format!(
                            "{}: reconnected after {} s{}",
                            self.server.name,
                            started.elapsed().as_secs(),
                            if restarted { " (the server restarted)" } else { "" }
                        ));
                    }
                    return Ok(restarted);
                }
                Err(e) if started.elapsed() + delay > PATIENCE => {
                    return Err(anyhow!(
                        "{}: lost the connection and could not reconnect within {} s: {e:#}",
                        self.server.name,
                        PATIENCE.as_secs()
                    ));
                }
                Err(e) => {
                    if let Some(n) = &self.notify {
                        if told.is_none_or(|t| t.elapsed() >= NOTIFY_EVERY) {
                            n(&format!(
                                "{}: no connection since {} ({} s): {e:#}; next try in {:.1} s, giving up at {} (in {} s)",
                                self.server.name,
                                crate::util::iso_utc(lost_at),
                                started.elapsed().as_secs(),
                                delay.as_secs_f64(),
                                crate::util::iso_utc(lost_at + PATIENCE.as_millis() as u64),
                                PATIENCE.saturating_sub(started.elapsed()).as_secs()
                            ));
                            told = Some(Instant::now());
                        }
                    }
                    std::thread::sleep(delay); // backoff between attempts
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
