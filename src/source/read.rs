//! Reads one key by its type, in pages, and hands it on as records of bounded size (SPEC §6), so
//! memory stays bounded however big the key is. After reading a collection it compares the count
//! read with the length the server reported first: reading fewer is never success (SERVERS.md:
//! "compare the count read with HLEN/LLEN/SCARD/ZCARD/XLEN ... never as success").
//!
//! Zsets are read with ZSCAN, never ZRANGE: Pika's ZRANGE drops, misplaces or duplicates members
//! scored -inf (SERVERS.md, seen on Pika 3.5.5 and 4.0.1); ZSCAN is right.

use anyhow::{anyhow, Context};
use redis::{ConnectionLike, Value as RV};

use crate::format::consts::FLAG_LAST;
use crate::format::record::{
    KeyRecord, KeyType, StreamConsumer, StreamEntry, StreamGroup, StreamId, StreamMeta, StreamPending, Value,
};
use crate::server::conn::ServerKind;

/// Sizes of what is read and written at a time.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// Start a new part once a part holds this many value bytes.
    pub part_bytes: usize,
    /// Elements asked for per command (SCAN COUNT, LRANGE window, XRANGE COUNT).
    pub page: usize,
    /// Read streams' consumer groups (XINFO GROUPS, XINFO CONSUMERS, XPENDING). Off for Pika,
    /// which has no consumer groups and which XINFO GROUPS crashes (4.0.1) or hangs (SERVERS.md).
    pub stream_groups: bool,
}

impl ReadOptions {
    /// The options for reading from a server of this kind.
    pub fn for_server(self, kind: &ServerKind) -> ReadOptions {
        ReadOptions {
            stream_groups: !matches!(kind, ServerKind::Pika(..)),
            ..self
        }
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            part_bytes: 1 << 20,
            page: 1000,
            stream_groups: true,
        }
    }
}

/// What reading a key came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key was read and emitted, in this many parts, with this many elements.
    Read { parts: u64, elements: u64 },
    /// The key no longer exists (deleted or expired since it was listed): nothing was emitted.
    Gone,
    /// The key changed while it was read (fewer elements read than it had). What was emitted is
    /// a complete but possibly stale occurrence; read it again, and the later occurrence wins
    /// (F-PART-3).
    Changed(String),
}

/// Where records go.
pub type Emit<'e> = dyn FnMut(&KeyRecord) -> anyhow::Result<()> + 'e;

/// Numbers parts and sends them on.
struct Parts<'k, 'e, 'f> {
    db: u32,
    key: &'k [u8],
    expire_at_ms: Option<u64>,
    flags: u64,
    next: u64,
    emit: &'f mut Emit<'e>,
    /// The last part was sent.
    closed: bool,
}

impl Parts<'_, '_, '_> {
    fn send(&mut self, value: Value, last: bool) -> anyhow::Result<()> {
        let rec = KeyRecord {
            db: self.db,
            key: self.key,
            part: self.next,
            flags: self.flags | if last { FLAG_LAST } else { 0 },
            expire_at_ms: self.expire_at_ms,
            value,
        };
        self.next += 1;
        self.closed = last;
        (self.emit)(&rec)
    }
}

/// The key to read: where it is, what it is, and what its records carry.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'k> {
    /// Database number, already SELECTed on the connection.
    pub db: u32,
    pub key: &'k [u8],
    /// The type TYPE reported.
    pub ty: KeyType,
    /// Absolute expiry, computed when its PTTL was read.
    pub expire_at_ms: Option<u64>,
    /// Flags every part carries (e.g. PIKA_HLL, MULTI_TYPE), LAST excluded.
    pub flags: u64,
}

/// Reads `k` and emits its records. Whatever happens, the occurrence it started is closed (its
/// last part sent), so the snapshot stays well-formed (F-PART-2): after a failure midway, the
/// closed occurrence is incomplete, and the caller must read the key again (the later occurrence
/// wins, F-PART-3) or report it. A key whose type changed midway (WRONGTYPE) is `Changed`.
pub fn read_key(
    conn: &mut dyn ConnectionLike,
    k: KeyRef,
    opts: &ReadOptions,
    emit: &mut Emit,
) -> anyhow::Result<Outcome> {
    let mut parts = Parts {
        db: k.db,
        key: k.key,
        expire_at_ms: k.expire_at_ms,
        flags: k.flags,
        next: 0,
        emit,
        closed: false,
    };
    let result = match k.ty {
        KeyType::String => read_string(conn, &mut parts, opts),
        KeyType::Hash => read_scanned(conn, &mut parts, opts, "HLEN", "HSCAN", k.ty),
        KeyType::Set => read_scanned(conn, &mut parts, opts, "SCARD", "SSCAN", k.ty),
        KeyType::ZSet => read_scanned(conn, &mut parts, opts, "ZCARD", "ZSCAN", k.ty),
        KeyType::List => read_list(conn, &mut parts, opts),
        KeyType::Stream => read_stream(conn, &mut parts, opts),
    };
    if parts.next > 0 && !parts.closed {
        parts.send(empty(k.ty), true)?;
    }
    match result {
        Err(e) if is_wrongtype(&e) => Ok(Outcome::Changed(format!("its type changed: {e}"))),
        other => other,
    }
}

/// The key changed type while it was read. Redis says `WRONGTYPE Operation against...`; Pika
/// 4.0.1 `ERR Invalid argument: WRONGTYPE, key: k, expect type: hash, get type: list` (seen
/// running it, docs/servers-seen.md).
fn is_wrongtype(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("WRONGTYPE"))
}

/// An empty value of type `ty`, to close an occurrence cut short.
fn empty(ty: KeyType) -> Value<'static> {
    match ty {
        KeyType::String => Value::String(b""),
        KeyType::Hash => Value::Hash(Vec::new()),
        KeyType::List => Value::List(Vec::new()),
        KeyType::Set => Value::Set(Vec::new()),
        KeyType::ZSet => Value::ZSet(Vec::new()),
        KeyType::Stream => Value::Stream {
            entries: Vec::new(),
            meta: Some(StreamMeta {
                last_id: StreamId { ms: 0, seq: 0 },
                entries_added: None,
                max_deleted_id: None,
                groups: Vec::new(),
            }),
        },
    }
}

fn read_string(conn: &mut dyn ConnectionLike, p: &mut Parts, opts: &ReadOptions) -> anyhow::Result<Outcome> {
    let len: usize = redis::cmd("STRLEN").arg(p.key).query(conn).context("STRLEN")?;
    if len <= opts.part_bytes {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(p.key).query(conn).context("GET")?;
        let Some(v) = v else { return Ok(Outcome::Gone) };
        p.send(Value::String(&v), true)?;
        return Ok(Outcome::Read { parts: 1, elements: 1 });
    }
    // A big string in windows: GETRANGE start end (inclusive).
    let mut at = 0;
    while at < len {
        let end = (at + opts.part_bytes).min(len);
        let chunk: Vec<u8> = redis::cmd("GETRANGE")
            .arg(p.key)
            .arg(at)
            .arg(end - 1)
            .query(conn)
            .context("GETRANGE")?;
        let short = chunk.len() < end - at;
        p.send(Value::String(&chunk), end == len || short)?;
        if short {
            return Ok(Outcome::Changed(format!(
                "string shrank while read: {} of {len} bytes",
                at + chunk.len()
            )));
        }
        at = end;
    }
    Ok(Outcome::Read {
        parts: p.next,
        elements: 1,
    })
}

/// HSCAN / SSCAN / ZSCAN loops. They may return an element twice, which the format allows
/// (F-REC-4: the later wins), so counts can exceed the length; fewer than it means a change.
fn read_scanned(
    conn: &mut dyn ConnectionLike,
    p: &mut Parts,
    opts: &ReadOptions,
    len_cmd: &'static str,
    scan_cmd: &'static str,
    ty: KeyType,
) -> anyhow::Result<Outcome> {
    let len: u64 = redis::cmd(len_cmd)
        .arg(p.key)
        .query(conn)
        .with_context(|| len_cmd.to_string())?;
    if len == 0 {
        return Ok(Outcome::Gone);
    }
    let (mut cursor, mut buf, mut bytes, mut read) = (b"0".to_vec(), Vec::<Vec<u8>>::new(), 0usize, 0u64);
    loop {
        let (next, items): (Vec<u8>, Vec<Vec<u8>>) = redis::cmd(scan_cmd)
            .arg(p.key)
            .arg(&cursor)
            .arg("COUNT")
            .arg(opts.page)
            .query(conn)
            .with_context(|| format!("{scan_cmd} cursor {}", String::from_utf8_lossy(&cursor)))?;
        let per = if ty == KeyType::Set { 1 } else { 2 };
        if items.len() % per != 0 {
            return Err(anyhow!("{scan_cmd} returned an odd number of items ({})", items.len()));
        }
        read += (items.len() / per) as u64;
        bytes += items.iter().map(Vec::len).sum::<usize>();
        buf.extend(items);
        let done = next == b"0";
        if done || bytes >= opts.part_bytes {
            send_scanned(p, ty, &buf, done)?;
            (buf, bytes) = (Vec::new(), 0);
        }
        if done {
            break;
        }
        cursor = next;
    }
    if read < len {
        return Ok(Outcome::Changed(format!(
            "{scan_cmd} returned {read} elements, {len_cmd} said {len}"
        )));
    }
    Ok(Outcome::Read {
        parts: p.next,
        elements: read,
    })
}

fn send_scanned(p: &mut Parts, ty: KeyType, buf: &[Vec<u8>], last: bool) -> anyhow::Result<()> {
    let value = match ty {
        KeyType::Hash => Value::Hash(buf.chunks(2).map(|c| (c[0].as_slice(), c[1].as_slice())).collect()),
        KeyType::Set => Value::Set(buf.iter().map(Vec::as_slice).collect()),
        KeyType::ZSet => Value::ZSet(
            buf.chunks(2)
                .map(|c| Ok((c[0].as_slice(), parse_score(&c[1])?)))
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        _ => unreachable!("BUG: read_scanned is only called for hashes, sets and zsets"),
    };
    p.send(value, last)
}

/// A score as servers print it: Redis `inf`/`-inf`, Pika `%.17g` with `inf`, `-inf`, `nan`, `-0`.
fn parse_score(b: &[u8]) -> anyhow::Result<f64> {
    let s =
        std::str::from_utf8(b).map_err(|_| anyhow!("a zset score is not text: {:?}", b.escape_ascii().to_string()))?;
    s.parse::<f64>()
        .map_err(|_| anyhow!("a zset score is not a number: {s:?}"))
}

fn read_list(conn: &mut dyn ConnectionLike, p: &mut Parts, opts: &ReadOptions) -> anyhow::Result<Outcome> {
    let len: u64 = redis::cmd("LLEN").arg(p.key).query(conn).context("LLEN")?;
    if len == 0 {
        return Ok(Outcome::Gone);
    }
    let (mut at, mut buf, mut bytes) = (0u64, Vec::<Vec<u8>>::new(), 0usize);
    while at < len {
        let end = (at + opts.page as u64).min(len);
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(p.key)
            .arg(at)
            .arg(end - 1)
            .query(conn)
            .context("LRANGE")?;
        let short = (items.len() as u64) < end - at;
        at += items.len() as u64;
        bytes += items.iter().map(Vec::len).sum::<usize>();
        buf.extend(items);
        let done = at >= len || short;
        if done || bytes >= opts.part_bytes {
            p.send(Value::List(buf.iter().map(Vec::as_slice).collect()), done)?;
            (buf, bytes) = (Vec::new(), 0);
        }
        if short {
            return Ok(Outcome::Changed(format!(
                "LRANGE returned {at} elements, LLEN said {len}"
            )));
        }
    }
    Ok(Outcome::Read {
        parts: p.next,
        elements: len,
    })
}

// ----- small keys, read whole in a batch -----

/// Elements a batch asks for per collection: small collections come back whole in one reply.
const BATCH_ELEMENTS: usize = 128;
/// Bytes a batch asks for per string; longer strings are read on their own, in parts.
const BATCH_STRING: usize = 16 << 10;

/// The whole value of a small key, read in a batch with other keys.
pub enum Whole {
    String(Vec<u8>),
    /// Field, value, field, value...
    Hash(Vec<Vec<u8>>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
}

impl Whole {
    pub fn value(&self) -> Value<'_> {
        match self {
            Whole::String(v) => Value::String(v),
            Whole::Hash(kv) => Value::Hash(kv.chunks(2).map(|c| (c[0].as_slice(), c[1].as_slice())).collect()),
            Whole::List(v) => Value::List(v.iter().map(Vec::as_slice).collect()),
            Whole::Set(v) => Value::Set(v.iter().map(Vec::as_slice).collect()),
            Whole::ZSet(v) => Value::ZSet(v.iter().map(|(m, s)| (m.as_slice(), *s)).collect()),
        }
    }
}

/// Appends to `pipe` the commands that read key `key` of type `ty` whole if it is small: its first
/// page (GETRANGE, HSCAN, LRANGE, SSCAN, ZSCAN: never ZRANGE, which Pika gets wrong for -inf
/// scores, SERVERS.md), and with `lengths` first its length (STRLEN, HLEN...) to compare with.
/// Returns how many commands it added: none for streams, which are read on their own.
///
/// Lengths are asked of Pika only. On Redis, Valkey and Kvrocks one command is atomic, so a page
/// that is the last (cursor 0, or fewer elements than asked) is the whole key; on Pika reads
/// have gone wrong (SERVERS.md: compare the count read with the length, never assume).
pub fn batch_commands(pipe: &mut redis::Pipeline, key: &[u8], ty: KeyType, lengths: bool) -> usize {
    let n = BATCH_ELEMENTS;
    let len_cmd = match ty {
        KeyType::String => "STRLEN",
        KeyType::Hash => "HLEN",
        KeyType::List => "LLEN",
        KeyType::Set => "SCARD",
        KeyType::ZSet => "ZCARD",
        KeyType::Stream => return 0,
    };
    if lengths {
        pipe.cmd(len_cmd).arg(key);
    }
    match ty {
        KeyType::String => pipe.cmd("GETRANGE").arg(key).arg(0).arg(BATCH_STRING - 1),
        KeyType::Hash => pipe.cmd("HSCAN").arg(key).arg(0).arg("COUNT").arg(n),
        KeyType::List => pipe.cmd("LRANGE").arg(key).arg(0).arg(n - 1),
        KeyType::Set => pipe.cmd("SSCAN").arg(key).arg(0).arg("COUNT").arg(n),
        KeyType::ZSet => pipe.cmd("ZSCAN").arg(key).arg(0).arg("COUNT").arg(n),
        KeyType::Stream => unreachable!("BUG: returned above"),
    };
    1 + usize::from(lengths)
}

/// The whole value from the replies to [`batch_commands`], when they hold all of it. None means
/// "read it on its own": big, changed meanwhile, gone, an empty string (which could also be a
/// deleted key), or an error such as WRONGTYPE.
pub fn batch_whole(ty: KeyType, replies: &[RV]) -> Option<Whole> {
    let (len, page) = match replies {
        [len, page] => (Some(redis::from_redis_value::<u64>(len).ok()?), page),
        [page] => (None, page),
        _ => return None,
    };
    // With a length: exactly that many. Without: at least one, and the page was the last.
    let whole = |n: usize, last: bool| n > 0 && len.map_or(last, |l| l == n as u64);
    let scanned = |per: usize| -> Option<Vec<Vec<u8>>> {
        let (cursor, items): (Vec<u8>, Vec<Vec<u8>>) = redis::from_redis_value(page).ok()?;
        (cursor == b"0" && items.len() % per == 0 && whole(items.len() / per, true)).then_some(items)
    };
    match ty {
        KeyType::String => {
            let v: Vec<u8> = redis::from_redis_value(page).ok()?;
            whole(v.len(), v.len() < BATCH_STRING).then_some(Whole::String(v))
        }
        KeyType::Hash => scanned(2).map(Whole::Hash),
        KeyType::List => {
            let v: Vec<Vec<u8>> = redis::from_redis_value(page).ok()?;
            whole(v.len(), v.len() < BATCH_ELEMENTS).then_some(Whole::List(v))
        }
        KeyType::Set => scanned(1).map(Whole::Set),
        KeyType::ZSet => {
            let items = scanned(2)?;
            let mut z = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(m), Some(s)) = (it.next(), it.next()) {
                z.push((m, parse_score(&s).ok()?));
            }
            Some(Whole::ZSet(z))
        }
        KeyType::Stream => None,
    }
}

// ----- streams -----

pub(crate) fn parse_id(b: &[u8]) -> anyhow::Result<StreamId> {
    let s = std::str::from_utf8(b).ok().and_then(|s| s.split_once('-'));
    let id = s.and_then(|(ms, seq)| {
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    });
    id.ok_or_else(|| anyhow!("not a stream id: {:?}", b.escape_ascii().to_string()))
}

/// The id right after `id`, for paging with an inclusive start.
fn after(id: StreamId) -> String {
    match id.seq.checked_add(1) {
        Some(seq) => format!("{}-{seq}", id.ms),
        None => format!("{}-0", id.ms + 1),
    }
}

/// A RESP2 flat array of names and values (XINFO replies) as pairs.
pub(crate) fn fields(v: &RV) -> Vec<(String, &RV)> {
    match v {
        RV::Array(items) => items
            .chunks(2)
            .filter_map(|c| match (&c[0], c.get(1)) {
                (RV::BulkString(k), Some(v)) => Some((String::from_utf8_lossy(k).into_owned(), v)),
                (RV::SimpleString(k), Some(v)) => Some((k.clone(), v)),
                _ => None,
            })
            .collect(),
        RV::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((redis::from_redis_value::<String>(k).ok()?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn field<'v>(f: &[(String, &'v RV)], name: &str) -> Option<&'v RV> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

pub(crate) fn int(v: Option<&RV>) -> Option<u64> {
    v.and_then(|v| redis::from_redis_value::<i64>(v).ok())
        .and_then(|i| u64::try_from(i).ok())
}

pub(crate) fn id_field(v: Option<&RV>) -> Option<StreamId> {
    v.and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
        .and_then(|b| parse_id(&b).ok())
}

type Entry = (StreamId, Vec<(Vec<u8>, Vec<u8>)>);

fn read_stream(conn: &mut dyn ConnectionLike, p: &mut Parts, opts: &ReadOptions) -> anyhow::Result<Outcome> {
    let len: u64 = redis::cmd("XLEN").arg(p.key).query(conn).context("XLEN")?;
    let info: RV = match redis::cmd("XINFO").arg("STREAM").arg(p.key).query(conn) {
        Ok(v) => v,
        // No such key: it went away. (Pika 4.0 says XLEN 0 for a deleted stream, SERVERS.md.)
        Err(e) if e.to_string().to_lowercase().contains("no such key") => return Ok(Outcome::Gone),
        Err(e) => return Err(e).context("XINFO STREAM"),
    };
    let info = fields(&info);
    let (mut start, mut buf, mut bytes, mut read) = ("-".to_string(), Vec::<Entry>::new(), 0usize, 0u64);
    loop {
        let page: Vec<(Vec<u8>, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
            .arg(p.key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(opts.page)
            .query(conn)
            .with_context(|| format!("XRANGE from {start}"))?;
        let n = page.len();
        for (id, kv) in page {
            let id = parse_id(&id)?;
            bytes += 16 + kv.iter().map(Vec::len).sum::<usize>();
            let mut pairs = Vec::with_capacity(kv.len() / 2);
            let mut it = kv.into_iter();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                pairs.push((f, v));
            }
            buf.push((id, pairs));
        }
        read += n as u64;
        let done = n < opts.page;
        if let Some((last, _)) = buf.last() {
            start = after(*last);
        }
        if done {
            break;
        }
        if bytes >= opts.part_bytes {
            send_entries(p, &buf, None)?;
            (buf, bytes) = (Vec::new(), 0);
        }
    }
    let groups = if opts.stream_groups {
        read_groups(conn, p.key, opts)?
    } else {
        Vec::new()
    };
    let meta = StreamMeta {
        last_id: id_field(field(&info, "last-generated-id")).unwrap_or(StreamId { ms: 0, seq: 0 }),
        entries_added: int(field(&info, "entries-added")),
        max_deleted_id: id_field(field(&info, "max-deleted-entry-id")),
        groups: groups.iter().map(OwnedGroup::borrow).collect(),
    };
    send_entries(p, &buf, Some(meta))?;
    if read < len {
        return Ok(Outcome::Changed(format!(
            "XRANGE returned {read} entries, XLEN said {len}"
        )));
    }
    Ok(Outcome::Read {
        parts: p.next,
        elements: read,
    })
}

fn send_entries(p: &mut Parts, buf: &[Entry], meta: Option<StreamMeta>) -> anyhow::Result<()> {
    let entries = buf
        .iter()
        .map(|(id, kv)| StreamEntry {
            id: *id,
            fields: kv.iter().map(|(f, v)| (f.as_slice(), v.as_slice())).collect(),
        })
        .collect();
    let last = meta.is_some();
    p.send(Value::Stream { entries, meta }, last)
}

struct OwnedGroup {
    name: Vec<u8>,
    last_delivered_id: StreamId,
    entries_read: Option<u64>,
    consumers: Vec<(Vec<u8>, Option<u64>)>,
    pending: Vec<(StreamId, Vec<u8>, u64, u64)>,
}

impl OwnedGroup {
    fn borrow(&self) -> StreamGroup<'_> {
        StreamGroup {
            name: &self.name,
            last_delivered_id: self.last_delivered_id,
            entries_read: self.entries_read,
            consumers: self
                .consumers
                .iter()
                .map(|(n, s)| StreamConsumer {
                    name: n,
                    seen_time_ms: *s,
                })
                .collect(),
            pending: self
                .pending
                .iter()
                .map(|(id, c, t, n)| StreamPending {
                    id: *id,
                    consumer: c,
                    delivery_time_ms: *t,
                    delivery_count: *n,
                })
                .collect(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Consumer groups with their consumers and pending entries (XINFO GROUPS, XINFO CONSUMERS,
/// XPENDING). Never asked of Pika ([`ReadOptions::stream_groups`]); a server that rejects
/// XINFO GROUPS has no groups.
fn read_groups(conn: &mut dyn ConnectionLike, key: &[u8], opts: &ReadOptions) -> anyhow::Result<Vec<OwnedGroup>> {
    let Ok(RV::Array(groups)) = redis::cmd("XINFO").arg("GROUPS").arg(key).query::<RV>(conn) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for g in &groups {
        let g = fields(g);
        let name: Vec<u8> = field(&g, "name")
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let now = now_ms();
        let consumers: RV = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg(&name)
            .query(conn)
            .context("XINFO")?;
        let consumers = match &consumers {
            RV::Array(cs) => cs
                .iter()
                .map(|c| {
                    let c = fields(c);
                    let name = field(&c, "name")
                        .and_then(|v| redis::from_redis_value(v).ok())
                        .unwrap_or_default();
                    // Redis 7.2 reports seen-time; older ones only idle (ms since last seen).
                    let idle = int(field(&c, "seen-time")).or_else(|| int(field(&c, "idle")));
                    (name, idle.map(|i| now.saturating_sub(i)))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut pending = Vec::new();
        let mut start = "-".to_string();
        loop {
            let page: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg(&start)
                .arg("+")
                .arg(opts.page)
                .query(conn)
                .context("XPENDING")?;
            let n = page.len();
            for (id, consumer, idle, count) in page {
                pending.push((parse_id(&id)?, consumer, now.saturating_sub(idle), count));
            }
            if n < opts.page {
                break;
            }
            start = after(pending.last().map(|p| p.0).expect("BUG: a full page has a last entry"));
        }
        out.push(OwnedGroup {
            name,
            last_delivered_id: id_field(field(&g, "last-delivered-id")).unwrap_or(StreamId { ms: 0, seq: 0 }),
            entries_read: int(field(&g, "entries-read")),
            consumers,
            pending,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrongtype_as_redis_and_pika_say_it() {
        let err = |line: &str| -> anyhow::Error {
            match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap() {
                RV::ServerError(e) => anyhow::Error::new(redis::RedisError::from(e)).context("HSCAN cursor 0"),
                v => panic!("{v:?}"),
            }
        };
        assert!(is_wrongtype(&err(
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        )));
        assert!(is_wrongtype(&err(
            "ERR Invalid argument: WRONGTYPE, key: churn:18, expect type: hash, get type: list"
        )));
        assert!(!is_wrongtype(&err("ERR syntax error")));
    }
}
