//! A pipelined write connection to the target (issue 4, "Fast" and "Faults and resume"): it
//! sends batches of commands, each in one write and the next before the replies of the one
//! before are read (two in flight), counts one reply per command, and, when the
//! connection is lost, reconnects with backoff and resends what was not acknowledged: never
//! assumed. Kvrocks answers a protocol error and closes the connection, dropping the rest of
//! the pipeline (SERVERS.md); those commands are unacknowledged, so they are resent.
//!
//! Resending is exact: DEL, SET, SETRANGE, HSET, SADD, ZADD, XSETID and the expiry give the same
//! result twice; RPUSH would duplicate elements, so before resending pushes to a list whose
//! start was acknowledged, LLEN says how many of them the server did run; a resent XADD or
//! XGROUP CREATE that the server already ran fails harmlessly, and that failure is success.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use redis::Value;

use super::reply::{Replies, Wire};

use super::build::{Op, WCmd};
use super::cluster::Redirect;
use super::skiplog::SkipLog;
use super::track::{Counts, Outcome, Tracker};
use crate::format::KeyType;
use crate::progress::Task;
use crate::server::endpoint::Endpoint;
use crate::server::throttle::Throttle;

/// Batches a connection sends before it reads the replies of the first (see [`Lane::work`]).
const IN_FLIGHT: usize = 2;

/// How long to keep trying to reconnect before giving up.
const PATIENCE: Duration = Duration::from_secs(120);

/// One key occurrence being written, shared by its commands.
#[derive(Debug)]
pub struct KeyTag {
    /// The key as written (with a prefix or suffix where the mapping adds one).
    pub name: Vec<u8>,
    pub ty: KeyType,
    /// Raw bytes of its records so far (for rates).
    pub bytes: AtomicU64,
    /// The first error: command and server reply.
    failed: Mutex<Option<String>>,
    /// Elements of RPUSH acknowledged so far.
    pushed: AtomicU64,
    /// `--conflict skip`: the key existed and is left alone.
    skip: AtomicBool,
    /// `--conflict skip`: whether the key was checked yet.
    checked: AtomicBool,
}

impl KeyTag {
    pub fn new(name: Vec<u8>, ty: KeyType) -> KeyTag {
        KeyTag {
            name,
            ty,
            bytes: AtomicU64::new(0),
            failed: Mutex::new(None),
            pushed: AtomicU64::new(0),
            skip: AtomicBool::new(false),
            checked: AtomicBool::new(false),
        }
    }

    /// Records the key's first error.
    pub fn fail(&self, why: String) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_none() {
            *f = Some(why);
        }
    }

    pub fn has_failed(&self) -> bool {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// What became of the key, once its last command was answered.
    fn outcome(self: &Arc<Self>) -> Outcome {
        let k = self.clone();
        Box::new(move |c: &mut Counts| {
            let failed = k.failed.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(why) = failed {
                c.failed(k.ty, &k.name, why);
            } else if k.skip.load(Relaxed) {
                c.skipped(k.ty, &k.name, Some("existed on the target (--conflict skip)".into()));
            } else {
                c.written(k.ty, k.bytes.load(Relaxed));
            }
        })
    }
}

/// One command on its way, with what it belongs to.
pub struct Item {
    pub cmd: WCmd,
    pub key: Arc<KeyTag>,
    /// The block of the shard it came from.
    pub seq: u64,
    /// The key's first command / last command.
    pub first: bool,
    pub last: bool,
}

/// Where and how a lane connects.
#[derive(Clone, Debug)]
pub struct LaneConf {
    pub endpoint: Endpoint,
    /// SELECT this database after connecting (None: leave the connection's database alone,
    /// e.g. Kvrocks, which ignores SELECT, SERVERS.md).
    pub db: Option<u32>,
    /// `--conflict skip`: check EXISTS before a key's first command.
    pub skip_existing: bool,
}

/// What all lanes of a run share.
pub struct Shared<'a> {
    pub tracker: &'a Tracker,
    pub throttle: &'a Throttle,
    pub task: &'a Task,
    /// Set to stop early (`--fail-fast`, or another error).
    pub stop: &'a AtomicBool,
    pub fail_fast: bool,
    pub reconnects: &'a AtomicU64,
    pub restarts: &'a AtomicU64,
    /// The first failed key, for `--fail-fast`.
    pub first_failure: &'a Mutex<Option<String>>,
    /// A cluster node answered MOVED: the slot map should be read again.
    pub moved: &'a AtomicBool,
    /// Commands that followed a MOVED, ASK or TRYAGAIN.
    pub redirects: &'a AtomicU64,
    /// `--conflict skip`: where the keys decided "write" are logged before they are written.
    pub skip_log: Option<&'a SkipLog>,
    /// `--conflict skip`, resumed: keys the interrupted run had decided to write.
    pub ours: &'a std::collections::HashSet<Vec<u8>>,
}

pub struct Lane {
    conf: LaneConf,
    name: String,
    conn: redis::Connection,
    run_id: Option<String>,
    /// The connection's CLIENT ID, to kill it after a loss (see recover).
    client_id: Option<i64>,
    /// Failed keys whose last command was answered, to delete.
    failed_done: Vec<Vec<u8>>,
    /// Connections to other cluster nodes, opened to follow redirects.
    others: Vec<(String, redis::Connection)>,
    /// A second connection to the same node, to retry a command after TRYAGAIN.
    side: Option<redis::Connection>,
    /// The connection verify's reads go through, on a plain TCP server ([`Lane::read_all`]).
    wire: Option<Wire>,
    /// Whether the server may be reached by a [`Wire`] (not yet found to be TLS).
    plain: bool,
}

/// The connection's id on the server (CLIENT ID), where it has one.
fn client_id(conn: &mut redis::Connection) -> Option<i64> {
    redis::cmd("CLIENT").arg("ID").query(conn).ok()
}

fn run_id(conn: &mut redis::Connection) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query(conn).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:").map(|v| v.trim().to_string()))
}

/// Buffers a connection reuses from batch to batch, and the acknowledgements it owes.
#[derive(Default)]
struct Io {
    buf: Vec<u8>,
    replies: Vec<Value>,
    acks: Vec<(u64, Option<Outcome>)>,
}

/// A lost connection (or a reply that cannot be parsed, as after a cut in the middle of one):
/// reconnect and resend.
fn recoverable(e: &redis::RedisError) -> bool {
    connection_lost(e) || e.kind() == redis::ErrorKind::ParseError
}

fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl Lane {
    pub fn open(conf: &LaneConf) -> anyhow::Result<Lane> {
        let name = conf.endpoint.name();
        let conn = Lane::connect(conf, Duration::from_secs(10))?;
        let mut lane = Lane {
            conf: conf.clone(),
            name,
            conn,
            run_id: None,
            client_id: None,
            failed_done: Vec::new(),
            others: Vec::new(),
            side: None,
            wire: None,
            plain: true,
        };
        lane.run_id = run_id(&mut lane.conn);
        lane.client_id = client_id(&mut lane.conn);
        Ok(lane)
    }

    fn connect(conf: &LaneConf, timeout: Duration) -> anyhow::Result<redis::Connection> {
        let name = conf.endpoint.name();
        let mut conn = crate::server::conn::connect(&conf.endpoint, timeout)?;
        // A reply that does not come in --read-timeout counts as a lost connection: the lane
        // reconnects and resends what was not acknowledged.
        conn.set_read_timeout(Some(conf.endpoint.read_timeout())).ok();
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("kvferry-import")
            .query::<()>(&mut conn);
        if let Some(db) = conf.db {
            redis::cmd("SELECT")
                .arg(db)
                .query::<()>(&mut conn)
                .with_context(|| format!("{name}: SELECT {db}"))?;
        }
        Ok(conn)
    }

    /// A plain connection, for checks before writing.
    pub fn conn(&mut self) -> &mut redis::Connection {
        &mut self.conn
    }

    /// Reconnects with backoff (0.1 s doubling to 5 s, for up to 2 minutes); true when the
    /// server restarted meanwhile (its run_id changed).
    fn recover(&mut self) -> anyhow::Result<bool> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match Lane::connect(&self.conf, Duration::from_secs(5)) {
                Ok(mut conn) => {
                    let id = run_id(&mut conn);
                    let restarted = id.is_none() || id != self.run_id;
                    // The old connection may still hold commands the server has read but not
                    // yet run (it runs them before it notices the close): once killed, it runs
                    // none, so what LLEN says next stays true (a push is neither lost nor
                    // doubled). Not there any more, or no CLIENT KILL ID: nothing to do.
                    if let (Some(old), false) = (self.client_id, restarted) {
                        let _ = redis::cmd("CLIENT")
                            .arg("KILL")
                            .arg("ID")
                            .arg(old)
                            .query::<redis::Value>(&mut conn);
                    }
                    self.client_id = client_id(&mut conn);
                    (self.conn, self.run_id) = (conn, id);
                    return Ok(restarted);
                }
                Err(e) if started.elapsed() + delay > PATIENCE => {
                    return Err(anyhow!(
                        "{}: lost the connection and could not reconnect within {} s: {e:#}",
                        self.name,
                        PATIENCE.as_secs()
                    ));
                }
                Err(_) => {
                    std::thread::sleep(delay); // backoff between attempts
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Writes `cmds` (small ones gathered into one write; big ones, chunks of a big key, written
    /// as they are, so their bytes are not copied once more). Returns how many there were and
    /// whether all were written.
    fn send<'c>(
        &mut self,
        cmds: impl Iterator<Item = &'c [u8]>,
        buf: &mut Vec<u8>,
    ) -> (usize, Result<(), redis::RedisError>) {
        const DIRECT: usize = 64 << 10;
        buf.clear();
        let mut n = 0;
        let mut sent = Ok(());
        for c in cmds {
            n += 1;
            if sent.is_err() {
                continue;
            }
            if c.len() < DIRECT {
                buf.extend_from_slice(c);
                continue;
            }
            if !buf.is_empty() {
                sent = self.conn.send_packed_command(buf);
                buf.clear();
            }
            if sent.is_ok() {
                sent = self.conn.send_packed_command(c);
            }
        }
        if sent.is_ok() && !buf.is_empty() {
            sent = self.conn.send_packed_command(buf);
        }
        (n, sent)
    }

    /// Reads `n` replies into `replies`; on a lost connection, returns the error with `replies`
    /// holding those that did arrive.
    fn recv(&mut self, n: usize, replies: &mut Vec<Value>) -> Result<(), redis::RedisError> {
        replies.clear();
        for _ in 0..n {
            replies.push(self.conn.recv_response()?);
        }
        Ok(())
    }

    /// Sends `cmds` and reads their replies into `replies`; on a lost connection, returns the
    /// error with `replies` holding those that did arrive.
    fn exchange<'c>(
        &mut self,
        cmds: impl Iterator<Item = &'c [u8]>,
        buf: &mut Vec<u8>,
        replies: &mut Vec<Value>,
    ) -> Result<(), redis::RedisError> {
        let (n, sent) = self.send(cmds, buf);
        // Even when the write failed (the server answered an error and closed the connection,
        // as Kvrocks and Redis do on a protocol error), the replies it sent first can be read.
        match self.recv(n, replies) {
            Ok(()) => sent,
            Err(e) => Err(sent.err().unwrap_or(e)),
        }
    }

    /// Writes batches from `rx` until it closes; acknowledges every command to the tracker.
    ///
    /// Up to [`IN_FLIGHT`] batches are sent before the replies of the first are read, so the
    /// server finds the next batch in its socket while the client reads, counts and
    /// acknowledges the replies of the one before: it does not wait for the client between
    /// batches (with one batch at a time a connection left its server idle a tenth of the
    /// time). Replies come in the order of the commands, so they are matched batch by batch.
    /// What needs the connection to itself waits until nothing is in flight: `--conflict skip`
    /// asks EXISTS before a batch (so it keeps one batch at a time), and keys that failed part
    /// way are deleted before the batches holding them are acknowledged.
    pub fn work(mut self, rx: std::sync::mpsc::Receiver<Vec<Item>>, sh: &Shared) -> anyhow::Result<()> {
        let depth = if self.conf.skip_existing { 1 } else { IN_FLIGHT };
        let mut flight: VecDeque<Vec<Item>> = VecDeque::new();
        let mut io = Io::default();
        loop {
            let next = if flight.is_empty() {
                self.ack(&mut io.acks, sh);
                match rx.recv() {
                    Ok(b) => Some(b),
                    Err(_) => break,
                }
            } else if flight.len() < depth && self.failed_done.is_empty() {
                rx.try_recv().ok()
            } else {
                None
            };
            match next {
                Some(batch) => self.launch(batch, &mut flight, &mut io, sh)?,
                None => self.land(&mut flight, None, &mut io, sh)?,
            }
            if self.failed_done.is_empty() {
                self.ack(&mut io.acks, sh);
            }
        }
        if !self.failed_done.is_empty() {
            // The connection was lost after the last batch: delete them on a new one.
            self.note_recovery(sh)?;
            self.remove_failed();
            self.failed_done.clear();
            self.ack(&mut io.acks, sh);
        }
        Ok(())
    }

    /// Sends a batch without waiting for its replies (keys left alone by `--conflict skip` are
    /// acknowledged without sending).
    fn launch(
        &mut self,
        mut items: Vec<Item>,
        flight: &mut VecDeque<Vec<Item>>,
        io: &mut Io,
        sh: &Shared,
    ) -> anyhow::Result<()> {
        if self.conf.skip_existing {
            debug_assert!(flight.is_empty(), "EXISTS needs the connection to itself");
            self.check_existing(&items, &mut io.buf, &mut io.replies, sh)?;
        }
        items.retain_mut(|it| {
            if !it.key.skip.load(Relaxed) {
                return true;
            }
            io.acks.push((it.seq, it.last.then(|| it.key.outcome())));
            false
        });
        if items.is_empty() {
            return Ok(());
        }
        sh.throttle.take(items.len() as u64);
        let (_, sent) = self.send(items.iter().map(|i| i.cmd.packed()), &mut io.buf);
        flight.push_back(items);
        match sent {
            Ok(()) => Ok(()),
            // The replies that did arrive are read, and the rest is resent.
            Err(e) => self.land(flight, Some(e), io, sh),
        }
    }

    /// Reads the replies of the oldest batch in flight; after `lost` (a failed send), those of
    /// every batch in flight. When the connection is lost, every command in flight that was
    /// not answered is resent, in order, once the connection is back (see
    /// [`Lane::resume_after_loss`]), so that `flight` ends empty.
    fn land(
        &mut self,
        flight: &mut VecDeque<Vec<Item>>,
        mut lost: Option<redis::RedisError>,
        io: &mut Io,
        sh: &Shared,
    ) -> anyhow::Result<()> {
        while let Some(items) = flight.pop_front() {
            let waited = std::time::Instant::now();
            let r = self.recv(items.len(), &mut io.replies);
            sh.throttle.answered(waited.elapsed());
            let got = std::mem::take(&mut io.replies);
            let answered = got.len();
            self.settle(&items, got, false, &mut io.acks, sh)?;
            let e = match (r, lost.take()) {
                (Ok(()), None) => return Ok(()),
                (Ok(()), Some(l)) => {
                    lost = Some(l);
                    continue;
                }
                (Err(e), l) => l.unwrap_or(e),
            };
            if !recoverable(&e) {
                return Err(anyhow!("{}: {e}", self.name));
            }
            let mut rest: Vec<Item> = items
                .into_iter()
                .skip(answered)
                .chain(flight.drain(..).flatten())
                .collect();
            self.resume_after_loss(&mut rest, sh, &e)?;
            return self.write_all(rest, io, sh);
        }
        Ok(())
    }

    /// Sends `items` and reads their replies, one batch at a time, until every command is
    /// answered: after a lost connection (nothing else is in flight then), and for the
    /// commands that follow a poison.
    fn write_all(&mut self, mut items: Vec<Item>, io: &mut Io, sh: &Shared) -> anyhow::Result<()> {
        // Attempts in a row that got no reply at all: the first command may be one the server
        // closes the connection on (too big, too many arguments), a poison that resending would
        // repeat forever. After two, commands go one at a time; a command that fails alone
        // twice is given up, its key failed, by name.
        let mut stuck = 0;
        while !items.is_empty() {
            let limit = if stuck >= 2 { 1 } else { items.len() };
            sh.throttle.take(limit as u64);
            let r = self.exchange(
                items[..limit].iter().map(|i| i.cmd.packed()),
                &mut io.buf,
                &mut io.replies,
            );
            let answered = io.replies.len();
            stuck = if answered == 0 && r.is_err() { stuck + 1 } else { 0 };
            if stuck >= 4 {
                let it = items.remove(0);
                let e = r.as_ref().err().map_or(String::new(), |e| e.to_string());
                it.key.fail(format!(
                    "{}: the target closed the connection on this command ({e}); not written",
                    it.cmd.name
                ));
                if it.last {
                    self.failed_done.push(it.key.name.clone());
                    sh.task.fail(1);
                }
                io.acks.push((it.seq, it.last.then(|| it.key.outcome())));
                stuck = 0;
            }
            let got = std::mem::take(&mut io.replies);
            self.settle(&items, got, true, &mut io.acks, sh)?;
            items.drain(..answered);
            self.ack(&mut io.acks, sh);
            match r {
                Ok(()) => {}
                Err(e) if recoverable(&e) => self.resume_after_loss(&mut items, sh, &e)?,
                Err(e) => return Err(anyhow!("{}: {e}", self.name)),
            }
        }
        Ok(())
    }

    /// Takes the replies `got` of the first commands of `items`: follows redirects, records
    /// errors, and notes what to acknowledge.
    fn settle(
        &mut self,
        items: &[Item],
        got: Vec<Value>,
        resent: bool,
        acks: &mut Vec<(u64, Option<Outcome>)>,
        sh: &Shared,
    ) -> anyhow::Result<()> {
        for (it, v) in items.iter().zip(got) {
            let v = match &v {
                Value::ServerError(e) => match Redirect::from_error(e.code(), e.details()) {
                    Some(r) => self.follow(it, r, sh)?,
                    None => v,
                },
                _ => v,
            };
            self.answer(it, v, resent, sh);
            if it.last && it.key.has_failed() && !it.key.skip.load(Relaxed) {
                self.failed_done.push(it.key.name.clone());
                sh.task.fail(1);
            }
            acks.push((it.seq, it.last.then(|| it.key.outcome())));
        }
        Ok(())
    }

    /// Deletes the keys that failed part way, then acknowledges `acks` (called when nothing is
    /// in flight, or nothing failed: the deletes need the connection to themselves). While a
    /// delete waits for a new connection, the acknowledgements wait too, so that no checkpoint
    /// covers a failed key still half written.
    fn ack(&mut self, acks: &mut Vec<(u64, Option<Outcome>)>, sh: &Shared) {
        self.remove_failed();
        if acks.is_empty() || !self.failed_done.is_empty() {
            return;
        }
        sh.task.add(acks.iter().filter(|(_, o)| o.is_some()).count() as u64, 0);
        sh.tracker.ack(acks);
    }

    /// Follows a cluster redirect for one command (issue 4, "Cluster targets"): MOVED goes to
    /// the named node (and asks for a new slot map), ASK goes there once after ASKING, TRYAGAIN
    /// waits and asks again. Keys' later commands meet the same redirect, so their order holds.
    fn follow(&mut self, it: &Item, r: Redirect, sh: &Shared) -> anyhow::Result<Value> {
        self.follow_cmd(it.cmd.packed(), &it.key.name, r, sh.redirects, sh.moved)
    }

    fn follow_cmd(
        &mut self,
        cmd: &[u8],
        key: &[u8],
        mut r: Redirect,
        redirects: &AtomicU64,
        moved: &AtomicBool,
    ) -> anyhow::Result<Value> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..30 {
            redirects.fetch_add(1, Relaxed);
            let reply = match &r {
                Redirect::Moved(addr) => {
                    moved.store(true, Relaxed);
                    self.on_node(addr, &[cmd])
                }
                Redirect::Ask(addr) => {
                    let mut asking = Vec::new();
                    super::resp::pack(&mut asking, &[b"ASKING"]);
                    self.on_node(addr, &[&asking, cmd])
                }
                Redirect::TryAgain => {
                    std::thread::sleep(delay); // backoff: the cluster asked to retry later
                    delay = (delay * 2).min(Duration::from_secs(1));
                    self.on_side(cmd)
                }
            };
            let v = match reply {
                Ok(v) => v,
                Err(_) => continue, // the node is away: ask again, maybe elsewhere
            };
            match &v {
                Value::ServerError(e) => match Redirect::from_error(e.code(), e.details()) {
                    Some(next) => r = next,
                    None => return Ok(v),
                },
                _ => return Ok(v),
            }
        }
        Err(anyhow!(
            "{}: a command on key {:?} was redirected 30 times without an answer: is the cluster's slot map settled?",
            self.name,
            crate::format::record::Lossy(key)
        ))
    }

    /// Sends `cmd` on a second connection to this lane's node and returns its reply: batches
    /// may be in flight on the first.
    fn on_side(&mut self, cmd: &[u8]) -> anyhow::Result<Value> {
        if self.side.is_none() {
            self.side = Some(Lane::connect(&self.conf, Duration::from_secs(5))?);
        }
        let conn = self.side.as_mut().expect("BUG: just opened");
        let r = conn.send_packed_command(cmd).and_then(|()| conn.recv_response());
        r.map_err(|e| {
            self.side = None;
            anyhow!("{}: {e}", self.name)
        })
    }

    /// Sends `cmds` to the cluster node at `addr` and returns the last reply.
    fn on_node(&mut self, addr: &str, cmds: &[&[u8]]) -> anyhow::Result<Value> {
        let i = match self.others.iter().position(|(a, _)| a == addr) {
            Some(i) => i,
            None => {
                let mut conf = self.conf.clone();
                conf.endpoint = conf.endpoint.at(addr);
                let conn = Lane::connect(&conf, Duration::from_secs(5))?;
                self.others.push((addr.to_string(), conn));
                self.others.len() - 1
            }
        };
        let conn = &mut self.others[i].1;
        let mut last = Value::Nil;
        let r: redis::RedisResult<()> = (|| {
            for c in cmds {
                conn.send_packed_command(c)?;
            }
            for _ in cmds {
                last = conn.recv_response()?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.others.remove(i);
            return Err(anyhow!("{addr}: {e}"));
        }
        Ok(last)
    }

    /// Sends read-only commands and reads one reply per command into `out`, in their order
    /// (verify): redirects are followed, and after a lost connection the unanswered commands
    /// are sent again (reads can be repeated). `key_of` names a command's key for messages.
    ///
    /// On a plain TCP server the replies are read by [`Wire`] into `out` as they came (issue
    /// 13: building redis-rs values for every element read back was 43 % of verify's
    /// instructions); over TLS by redis-rs, and added to `out`.
    pub fn read_all(
        &mut self,
        cmds: &[&[u8]],
        key_of: &dyn Fn(usize) -> Vec<u8>,
        redirects: &AtomicU64,
        moved: &AtomicBool,
        throttle: &Throttle,
        out: &mut Replies,
    ) -> anyhow::Result<()> {
        out.clear();
        let mut buf = Vec::new();
        let mut values = Vec::new();
        let mut stuck = 0;
        while out.len() < cmds.len() {
            let done = out.len();
            let rest = &cmds[done..];
            throttle.take(rest.len() as u64);
            let r = self.read_some(rest, &mut buf, &mut values, out);
            stuck = if out.len() == done && r.is_err() { stuck + 1 } else { 0 };
            for (i, cmd) in cmds.iter().enumerate().take(out.len()).skip(done) {
                let Some(err) = out.get(i).error() else {
                    continue;
                };
                let text = String::from_utf8_lossy(err);
                let (code, details) = match text.split_once(' ') {
                    Some((c, d)) => (c, Some(d)),
                    None => (&*text, None),
                };
                if let Some(red) = Redirect::from_error(code, details) {
                    let v = self.follow_cmd(cmd, &key_of(i), red, redirects, moved)?;
                    out.push_value(&v);
                    out.replace_with_last(i);
                }
            }
            match r {
                Ok(()) => {}
                Err((e, true)) if stuck < 5 => {
                    self.recover().with_context(|| format!("after: {e}"))?;
                }
                Err((e, _)) => return Err(anyhow!("{}: {e}", self.name)),
            }
        }
        Ok(())
    }

    /// One exchange of [`Lane::read_all`]; an error says what happened and whether
    /// reconnecting may help.
    fn read_some(
        &mut self,
        cmds: &[&[u8]],
        buf: &mut Vec<u8>,
        values: &mut Vec<Value>,
        out: &mut Replies,
    ) -> Result<(), (String, bool)> {
        if self.wire.is_none() && self.plain {
            match Wire::open(&self.conf.endpoint, self.conf.db, Duration::from_secs(10)) {
                Ok(Some(w)) => self.wire = Some(w),
                Ok(None) => self.plain = false,
                Err(e) => return Err((format!("{e:#}"), true)),
            }
        }
        if let Some(w) = &mut self.wire {
            return w.exchange(cmds.iter().copied(), cmds.len(), out).map_err(|e| {
                self.wire = None; // made again on the next exchange
                (e.to_string(), true)
            });
        }
        let r = self.exchange(cmds.iter().copied(), buf, values);
        for v in values.drain(..) {
            out.push_value(&v);
        }
        r.map_err(|e| {
            let again = recoverable(&e);
            (e.to_string(), again)
        })
    }

    /// Keys that failed part way are deleted once their last command was answered, so that a
    /// failed key is absent from the target rather than partly written (best effort: the
    /// report names the key either way). When the connection was lost meanwhile (the
    /// command that closed it may be in the same batch), they are kept for the next call, on
    /// the new connection.
    fn remove_failed(&mut self) {
        if self.failed_done.is_empty() {
            return;
        }
        let mut p = redis::pipe();
        for k in &self.failed_done {
            p.cmd("DEL").arg(k).ignore();
        }
        match p.query::<()>(&mut self.conn) {
            Err(e) if connection_lost(&e) => {}
            _ => self.failed_done.clear(),
        }
    }

    /// `--conflict skip`: asks EXISTS for the keys that start in this batch; those that exist
    /// are left alone, with all their commands.
    fn check_existing(
        &mut self,
        items: &[Item],
        buf: &mut Vec<u8>,
        replies: &mut Vec<Value>,
        sh: &Shared,
    ) -> anyhow::Result<()> {
        let fresh: Vec<&Arc<KeyTag>> = items
            .iter()
            .filter(|i| i.first && !i.key.checked.load(Relaxed))
            .map(|i| &i.key)
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        // A key that an interrupted run had started to write (its decision log says so) is
        // ours: it is deleted and written again, never mistaken for one that existed.
        let cmds: Vec<Vec<u8>> = fresh
            .iter()
            .map(|k| {
                let mut c = Vec::new();
                let verb: &[u8] = if sh.ours.contains(&k.name) { b"DEL" } else { b"EXISTS" };
                super::resp::pack(&mut c, &[verb, &k.name]);
                c
            })
            .collect();
        loop {
            sh.throttle.take(cmds.len() as u64);
            match self.exchange(cmds.iter().map(Vec::as_slice), buf, replies) {
                Ok(()) => break,
                Err(e) if connection_lost(&e) => {
                    self.note_recovery(sh)?;
                }
                Err(e) => return Err(anyhow!("{}: EXISTS: {e}", self.name)),
            }
        }
        let got = std::mem::take(replies);
        let mut ours = Vec::new();
        for ((k, v), c) in fresh.iter().zip(got).zip(&cmds) {
            let v = match &v {
                Value::ServerError(e) => match Redirect::from_error(e.code(), e.details()) {
                    Some(r) => self.follow_cmd(c, &k.name, r, sh.redirects, sh.moved)?,
                    None => v,
                },
                _ => v,
            };
            let exists = match v {
                Value::Int(n) => n > 0 && !sh.ours.contains(&k.name),
                other => return Err(anyhow!("{}: EXISTS answered {other:?}", self.name)),
            };
            k.skip.store(exists, Relaxed);
            k.checked.store(true, Relaxed);
            if !exists {
                ours.push(k.name.as_slice());
            }
        }
        // The decision is logged before any write of these keys is sent.
        if let Some(log) = sh.skip_log {
            let seq = items.iter().map(|i| i.seq).max().unwrap_or(0);
            log.append(seq, &ours)?;
        }
        Ok(())
    }

    fn note_recovery(&mut self, sh: &Shared) -> anyhow::Result<()> {
        let restarted = self.recover()?;
        sh.reconnects.fetch_add(1, Relaxed);
        if restarted {
            sh.restarts.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// After a lost connection: reconnects, then drops the pushes that the server ran although
    /// their replies were lost (LLEN tells), so that resending `items` duplicates nothing.
    fn resume_after_loss(
        &mut self,
        items: &mut Vec<Item>,
        sh: &Shared,
        cause: &redis::RedisError,
    ) -> anyhow::Result<()> {
        self.note_recovery(sh).with_context(|| format!("after: {cause}"))?;
        let mut restarted_keys: Vec<*const KeyTag> = Vec::new();
        let mut ran: Vec<(*const KeyTag, u64)> = Vec::new();
        let mut keep = Vec::with_capacity(items.len());
        let mut acks = Vec::new();
        for it in items.drain(..) {
            let ptr = Arc::as_ptr(&it.key);
            if it.cmd.op == Op::Del {
                restarted_keys.push(ptr);
            }
            if let Op::Push(n) = it.cmd.op {
                if !restarted_keys.contains(&ptr) {
                    let extra = match ran.iter_mut().find(|(p, _)| *p == ptr) {
                        Some((_, e)) => e,
                        None => {
                            let len: u64 = redis::cmd("LLEN")
                                .arg(&it.key.name)
                                .query(&mut self.conn)
                                .with_context(|| format!("{}: LLEN after reconnecting", self.name))?;
                            let acked = it.key.pushed.load(Relaxed);
                            if len < acked {
                                it.key.fail(format!(
                                    "RPUSH: the target lost elements it had acknowledged (LLEN {len}, expected at least {acked}); did it restart without saving? Import this key again with --conflict replace"
                                ));
                            }
                            ran.push((ptr, len.saturating_sub(acked)));
                            &mut ran.last_mut().expect("BUG: just pushed").1
                        }
                    };
                    if *extra >= n as u64 {
                        *extra -= n as u64;
                        it.key.pushed.fetch_add(n as u64, Relaxed);
                        acks.push((it.seq, it.last.then(|| it.key.outcome())));
                        continue;
                    }
                }
            }
            keep.push(it);
        }
        sh.tracker.ack(&mut acks);
        *items = keep;
        Ok(())
    }

    fn answer(&self, it: &Item, v: Value, resent: bool, sh: &Shared) {
        match v {
            Value::ServerError(e) => {
                let text = match e.details() {
                    Some(d) => format!("{} {d}", e.code()),
                    None => e.code().to_string(),
                };
                // A resent XADD or XGROUP CREATE that ran before the connection was lost.
                let ran_before = text.contains("equal or smaller")
                    || text.starts_with("BUSYGROUP")
                    || text.contains("already exists");
                if resent && it.cmd.op == Op::OnceOnly && ran_before {
                    return;
                }
                let why = format!("{}: {text}", it.cmd.name);
                if sh.fail_fast {
                    let mut f = sh.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                    if f.is_none() {
                        *f = Some(format!("{:?}: {why}", crate::format::record::Lossy(&it.key.name)));
                    }
                    sh.stop.store(true, Relaxed);
                }
                it.key.fail(why);
            }
            // XCLAIM ... JUSTID answers the ids it claimed: none, when the message is not in
            // the stream, and the target then keeps no pending entry for it.
            Value::Array(claimed) if it.cmd.op == Op::Claim && claimed.is_empty() => {
                let args = super::resp::args(it.cmd.packed());
                let arg = |i: usize| {
                    args.get(i)
                        .map_or_else(String::new, |a| format!("{:?}", crate::format::record::Lossy(a)))
                };
                it.key.fail(format!(
                    "XCLAIM: the pending entry {} of group {} (consumer {}) was not kept: its message was deleted at the source, and the target keeps pending entries only for messages in the stream",
                    arg(5),
                    arg(2),
                    arg(3)
                ));
            }
            _ => {
                if let Op::Push(n) = it.cmd.op {
                    it.key.pushed.fetch_add(n as u64, Relaxed);
                }
            }
        }
    }
}
