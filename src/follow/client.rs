//! A replication client of a Pika master: it poses as a slave on the replication port (the main
//! port + 2000) and reads the binlog of each database from a position.
//!
//! The protocol (Pika's `src/pika_repl_server_conn.cc` and `src/pika_rm.cc`, the same in 3.5 and
//! 4.0; see `proto.rs` for the messages):
//! - one TCP connection, each message a 4-byte big-endian length and a protobuf body; the master
//!   never connects back;
//! - MetaSync (the only request that is authenticated: `auth` against `requirepass`) registers
//!   the slave by the ip:port it declares; `Slave AlreadyExist` answers a declared address the
//!   master still holds, so each connection declares a new port;
//! - TrySync per database from (filenum, offset): ok with a session id, or the point was purged,
//!   is ahead of the master, or is not the start of an item;
//! - a first BinlogSync (`first_send`) starts the stream; the master then sends up to a window of
//!   items (sync-window-size, 9000 by default) and waits for acknowledgements: each range acked
//!   is `[first item's end offset, last item's end offset]` of what was received, once, in order;
//!   an all-zero range is a ping. An entry's `binlog_offset` is the end of its item, which is
//!   where a later TrySync resumes;
//! - an empty entry is the master's keepalive (every 2 s when everything is acked). A master
//!   that hears nothing for 20 s drops the session silently: pings keep it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use prost::Message;

use super::proto::*;
use crate::format::snapshot::BinlogPosition;

/// How far the replication port is from the main port (Pika's `kPortShiftReplServer`).
pub const REPL_PORT_SHIFT: u16 = 2000;

/// Frames bigger than this are refused rather than allocated (Pika's own limit is 512 MiB).
const MAX_FRAME: usize = 1 << 30;

/// One acknowledged or received position, as the protocol carries it.
fn offset(p: BinlogPosition) -> BinlogOffset {
    BinlogOffset {
        filenum: p.filenum,
        offset: p.offset,
        term: None,
        index: None,
    }
}

fn position(o: &BinlogOffset) -> BinlogPosition {
    BinlogPosition {
        filenum: o.filenum,
        offset: o.offset,
    }
}

/// Why a TrySync was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The binlog file of the position was purged (expire-logs-nums, expire-logs-days).
    Purged { master: Option<BinlogPosition> },
    /// The position is past the master's own.
    Ahead { master: Option<BinlogPosition> },
    /// The position is not the start of an item, or the master failed otherwise.
    Error {
        master: Option<BinlogPosition>,
        reply: String,
    },
}

/// One item of the stream: where it ends (the position to resume from after it) and its bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub end: BinlogPosition,
    pub item: Vec<u8>,
}

/// What one read of the stream brought.
#[derive(Debug)]
pub enum Received {
    /// Items of one database, in order.
    Items { db: u32, entries: Vec<Entry> },
    /// Only keepalives.
    Keepalive,
    /// Nothing within the read timeout.
    Quiet,
}

pub struct Replica {
    stream: TcpStream,
    node: Node,
    master: String,
    /// Session per database following.
    sessions: std::collections::BTreeMap<u32, i32>,
}

fn db_name(db: u32) -> String {
    format!("db{db}")
}

impl Replica {
    /// Connects to the replication port of the Pika at `host:port` (its main port) and registers
    /// as a slave (MetaSync). `declared_port` is the port it registers under (nothing connects to
    /// it); choose one no real slave of this master uses.
    pub fn connect(host: &str, port: u16, auth: Option<&str>, declared_port: u16) -> anyhow::Result<Replica> {
        let repl = port
            .checked_add(REPL_PORT_SHIFT)
            .with_context(|| format!("port {port} has no replication port (port + {REPL_PORT_SHIFT})"))?;
        let master = format!("{host}:{repl}");
        let addr = (host, repl)
            .to_socket_addrs()
            .with_context(|| format!("{master}: cannot resolve"))?
            .next()
            .with_context(|| format!("{master}: no address"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).with_context(|| {
            format!("{master}: cannot connect to Pika's replication port (the main port + {REPL_PORT_SHIFT}); is it reachable from here?")
        })?;
        stream.set_nodelay(true).ok();
        let ip = stream.local_addr()?.ip().to_string();
        let mut r = Replica {
            stream,
            node: Node {
                ip,
                port: declared_port as i32,
            },
            master,
            sessions: Default::default(),
        };
        r.send(&InnerRequest {
            r#type: TYPE_META_SYNC,
            meta_sync: Some(MetaSyncRequest {
                node: r.node.clone(),
                auth: auth.map(String::from),
            }),
            try_sync: None,
            binlog_sync: None,
        })?;
        let resp = r.reply(TYPE_META_SYNC, Duration::from_secs(10))?;
        match resp.code {
            CODE_OK => Ok(r),
            CODE_ERROR if resp.reply.as_deref().is_some_and(|t| t.contains("auth")) => bail!(
                "{}: Pika refused the replication client: {} (its replication port takes only the admin password, requirepass, given in the source's URL; a user password, userpass, is refused)",
                r.master,
                resp.reply.unwrap_or_default()
            ),
            _ => bail!(
                "{}: Pika refused the replication client: {}",
                r.master,
                resp.reply.unwrap_or_else(|| format!("status {}", resp.code))
            ),
        }
    }

    /// The master's address, for messages.
    pub fn master(&self) -> &str {
        &self.master
    }

    fn send(&mut self, req: &InnerRequest) -> anyhow::Result<()> {
        let body = req.encode_to_vec();
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .with_context(|| format!("{}: the replication connection was lost", self.master))
    }

    /// Reads one frame; None when nothing came within `wait`.
    fn recv(&mut self, wait: Duration) -> anyhow::Result<Option<InnerResponse>> {
        self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut len = [0u8; 4];
        match self.stream.read(&mut len[..1]) {
            Ok(0) => bail!("{}: Pika closed the replication connection", self.master),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(e) => return Err(anyhow!(e).context(format!("{}: the replication connection was lost", self.master))),
        }
        // The rest of a frame that started comes within a generous time.
        self.stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let lost =
            |e: std::io::Error| anyhow!(e).context(format!("{}: the replication connection was lost", self.master));
        self.stream.read_exact(&mut len[1..]).map_err(lost)?;
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            bail!(
                "{}: a replication message of {n} bytes (more than {MAX_FRAME}): not Pika's protocol?",
                self.master
            );
        }
        let mut body = vec![0u8; n];
        self.stream.read_exact(&mut body).map_err(lost)?;
        let resp = InnerResponse::decode(&body[..]).with_context(|| {
            format!(
                "{}: a replication message that does not decode (not Pika?)",
                self.master
            )
        })?;
        Ok(Some(resp))
    }

    /// Waits for the reply of type `ty` to a handshake request.
    fn reply(&mut self, ty: i32, wait: Duration) -> anyhow::Result<InnerResponse> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!(
                    "{}: no reply to the replication handshake in {} s",
                    self.master,
                    wait.as_secs()
                );
            }
            match self.recv(left)? {
                Some(r) if r.r#type == ty => return Ok(r),
                Some(_) | None => {}
            }
        }
    }

    /// Asks to follow database `db` from `from`; Ok(Err(..)) when Pika refuses that position.
    /// [`Replica::start`] then starts its stream.
    pub fn try_sync(&mut self, db: u32, from: BinlogPosition) -> anyhow::Result<Result<(), Refused>> {
        self.send(&InnerRequest {
            r#type: TYPE_TRY_SYNC,
            meta_sync: None,
            try_sync: Some(TrySyncRequest {
                node: self.node.clone(),
                slot: Slot {
                    db_name: db_name(db),
                    slot_id: 0,
                },
                binlog_offset: offset(from),
            }),
            binlog_sync: None,
        })?;
        let resp = self.reply(TYPE_TRY_SYNC, Duration::from_secs(30))?;
        let Some(t) = resp.try_sync else {
            bail!(
                "{}: TrySync of db {db} failed: {}",
                self.master,
                resp.reply.unwrap_or_else(|| format!("status {}", resp.code))
            );
        };
        let master = t.binlog_offset.as_ref().map(position);
        match t.reply_code {
            TRY_OK => {
                let session = t.session_id.unwrap_or(0);
                self.sessions.insert(db, session);
                Ok(Ok(()))
            }
            TRY_PURGED => Ok(Err(Refused::Purged { master })),
            TRY_LARGER => Ok(Err(Refused::Ahead { master })),
            _ => Ok(Err(Refused::Error {
                master,
                reply: resp.reply.unwrap_or_default(),
            })),
        }
    }

    /// Starts the stream of `db` at `from`, the position its TrySync was accepted at. Call it
    /// once every database is accepted: a handshake reply is waited for by type, and binlog
    /// arriving meanwhile would be lost.
    pub fn start(&mut self, db: u32, from: BinlogPosition) -> anyhow::Result<()> {
        self.binlog_sync(db, from, from, true)
    }

    fn binlog_sync(&mut self, db: u32, start: BinlogPosition, end: BinlogPosition, first: bool) -> anyhow::Result<()> {
        let session = *self
            .sessions
            .get(&db)
            .with_context(|| format!("BUG: db {db} acknowledged before TrySync"))?;
        self.send(&InnerRequest {
            r#type: TYPE_BINLOG_SYNC,
            meta_sync: None,
            try_sync: None,
            binlog_sync: Some(BinlogSyncRequest {
                node: self.node.clone(),
                db_name: db_name(db),
                slot_id: 0,
                ack_range_start: offset(start),
                ack_range_end: offset(end),
                session_id: session,
                first_send: first,
            }),
        })
    }

    /// Acknowledges the items of `db` received from the one ending at `first` to the one ending
    /// at `last` (each range once, in order): the master then sends more.
    pub fn ack(&mut self, db: u32, first: BinlogPosition, last: BinlogPosition) -> anyhow::Result<()> {
        self.binlog_sync(db, first, last, false)
    }

    /// Tells the master the client is alive (an all-zero acknowledgement), for every database.
    pub fn ping(&mut self) -> anyhow::Result<()> {
        let zero = BinlogPosition { filenum: 0, offset: 0 };
        let dbs: Vec<u32> = self.sessions.keys().copied().collect();
        for db in dbs {
            self.binlog_sync(db, zero, zero, false)?;
        }
        Ok(())
    }

    /// Reads what the master sends next, waiting at most `wait`.
    pub fn receive(&mut self, wait: Duration) -> anyhow::Result<Received> {
        let Some(resp) = self.recv(wait)? else {
            return Ok(Received::Quiet);
        };
        if resp.r#type != TYPE_BINLOG_SYNC {
            return Ok(Received::Keepalive);
        }
        let mut db = None;
        let mut entries = Vec::new();
        for e in resp.binlog_sync {
            if e.binlog.is_empty() {
                continue; // a keepalive
            }
            let n: u32 = e
                .slot
                .db_name
                .strip_prefix("db")
                .and_then(|d| d.parse().ok())
                .with_context(|| format!("{}: binlog of an unknown database {:?}", self.master, e.slot.db_name))?;
            if self.sessions.get(&n) != Some(&e.session_id) {
                bail!(
                    "{}: binlog of db {n} from session {} where this client's is {:?}: the master restarted the session",
                    self.master,
                    e.session_id,
                    self.sessions.get(&n)
                );
            }
            if db.is_some_and(|d| d != n) {
                bail!("{}: one binlog message holds items of two databases", self.master);
            }
            db = Some(n);
            entries.push(Entry {
                end: position(&e.binlog_offset),
                item: e.binlog,
            });
        }
        Ok(match db {
            Some(db) => Received::Items { db, entries },
            None => Received::Keepalive,
        })
    }
}
