//! From records to write commands (issue 4, "Commands per type"): SET for strings (bitmaps too:
//! never SETBIT, which creates Kvrocks' separate bitmap type), HSET / RPUSH / SADD / ZADD in
//! bounded chunks, XADD with the original ids then XSETID and the consumer groups, and the expiry
//! after a key's last part. Every command is packed as RESP here, off the network threads.

use super::resp::{self, bulk, bulk_len, header};
use crate::format::record::{KeyRecord, StreamEntry, StreamId, StreamMeta, Value};
use crate::server::conn::ServerKind;

/// How the target sets an expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// `PEXPIREAT key unix-ms` (Redis, Valkey, Kvrocks).
    PexpireAt,
    /// `PEXPIRE key ms-left`: Pika 4.0.1 cuts a PEXPIREAT time to 32 bits and deletes the key at
    /// once (SERVERS.md, "Seen on real servers").
    PexpireLeft,
    /// `EXPIRE key seconds-left, rounded up`: Pika before 4.0.1 keeps whole seconds, and
    /// `PEXPIRE k 999` deletes the key there (SERVERS.md).
    ExpireLeftCeil,
}

/// What the target's command set allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialect {
    pub expiry: Expiry,
    /// HSET takes several field/value pairs (Pika: one only, so HMSET).
    pub hset_pairs: bool,
    /// XSETID takes ENTRIESADDED / MAXDELETEDID, XGROUP CREATE takes ENTRIESREAD (Redis 7+,
    /// Kvrocks).
    pub stream_v7: bool,
}

impl Dialect {
    /// Redis 7 (what `--resp` writes for).
    pub const REDIS: Dialect = Dialect {
        expiry: Expiry::PexpireAt,
        hset_pairs: true,
        stream_v7: true,
    };

    /// The dialect of a server of this kind. On Pika, `ms_expiry` says whether the server keeps
    /// expiries in milliseconds ([`ms_expiry`]; 4.0.1 does, 3.x seconds): detected, not read
    /// from the version, since Pika 4.0.1 reports `pika_version:4.0.0` (SERVERS.md).
    pub fn for_server(kind: &ServerKind, version: &str, ms_expiry: bool) -> Dialect {
        let major: u32 = version.split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match kind {
            ServerKind::Pika(..) => Dialect {
                expiry: if ms_expiry {
                    Expiry::PexpireLeft
                } else {
                    Expiry::ExpireLeftCeil
                },
                hset_pairs: false,
                stream_v7: false,
            },
            ServerKind::Kvrocks => Dialect::REDIS,
            ServerKind::Redis | ServerKind::Valkey => Dialect {
                stream_v7: major >= 7 || *kind == ServerKind::Valkey,
                ..Dialect::REDIS
            },
        }
    }
}

/// Whether the server keeps expiries in milliseconds: a probe key given `PEXPIRE 1500` has a
/// PTTL above 1000 (Pika 3.x keeps whole seconds and answers 1000, SERVERS.md). The key, named
/// `kvferry:ttl-probe:PID:NANOS`, is deleted at once.
pub fn ms_expiry(conn: &mut dyn redis::ConnectionLike) -> redis::RedisResult<bool> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let key = format!("kvferry:ttl-probe:{}:{nanos}", std::process::id());
    let (_, _, pttl, _): ((), i64, i64, i64) = redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg("1")
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(1500)
        .cmd("PTTL")
        .arg(&key)
        .cmd("DEL")
        .arg(&key)
        .query(conn)?;
    Ok(pttl > 1000)
}

/// What a command does, for counting replies and resending after a lost connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The DEL that starts a key in replace mode: resending it resends the whole key.
    Del,
    /// A command that gives the same result when run twice (SET, SETRANGE, HSET, SADD, ZADD,
    /// XSETID, expiry).
    Idempotent,
    /// RPUSH of this many elements: run twice, it duplicates them; a resend first asks LLEN.
    Push(u32),
    /// XADD with an explicit id, or XGROUP CREATE: run twice, the second fails harmlessly.
    OnceOnly,
    /// XCLAIM ... FORCE JUSTID of one pending id whose message may be gone: an empty reply
    /// means the target kept no pending entry, which fails the key by name (issue 11).
    Claim,
}

/// One packed write command.
#[derive(Clone, Debug)]
pub struct WCmd {
    /// The command is `bytes[start..]` (chunked commands are built after room left for their
    /// header, so their arguments are never copied).
    bytes: Vec<u8>,
    start: usize,
    pub op: Op,
    /// The command name, for error reports.
    pub name: &'static str,
}

impl WCmd {
    pub fn new(bytes: Vec<u8>, op: Op, name: &'static str) -> WCmd {
        WCmd {
            bytes,
            start: 0,
            op,
            name,
        }
    }

    /// The command as RESP.
    pub fn packed(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// Bytes of arguments per command; Kvrocks writes a command as one batch, keep them a few MB.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Arguments per command: Kvrocks resets the connection above 1,048,576 (SERVERS.md).
pub const CHUNK_ARGS: usize = 100_000;

/// The state of one key occurrence being written, across its parts.
#[derive(Debug, Default)]
pub struct KeyState {
    /// Bytes of a string written so far: the next part goes there with SETRANGE, which, unlike
    /// APPEND, can be resent.
    pub string_offset: u64,
    /// Stream entries written so far.
    pub stream_entries: u64,
    /// The greatest entry id written so far.
    pub stream_top: Option<StreamId>,
}

/// Appends commands with a growing argument list, cutting them at the chunk limits.
struct Chunks<'o> {
    out: &'o mut Vec<WCmd>,
    cmd: &'static str,
    name: &'o [u8],
    /// Room for the header, then the arguments.
    body: Vec<u8>,
    /// Bytes of estimated value left, to size the next body.
    left: usize,
    args: usize,
    items: u32,
    push: bool,
}

impl<'o> Chunks<'o> {
    /// `estimate`: about how many bytes of arguments will come.
    fn new(out: &'o mut Vec<WCmd>, cmd: &'static str, name: &'o [u8], push: bool, estimate: usize) -> Chunks<'o> {
        let mut c = Chunks {
            out,
            cmd,
            name,
            body: Vec::new(),
            left: estimate,
            args: 0,
            items: 0,
            push,
        };
        c.fresh_body();
        c
    }

    fn room(&self) -> usize {
        // "*N\r\n" + the command's and the key's bulks.
        16 + bulk_len(self.cmd.len()) + bulk_len(self.name.len())
    }

    fn fresh_body(&mut self) {
        let room = self.room();
        self.body = Vec::with_capacity(room + self.left.min(CHUNK_BYTES) + 64);
        self.body.resize(room, 0);
    }

    fn item(&mut self, args: &[&[u8]]) {
        let len: usize = args.iter().map(|a| bulk_len(a.len())).sum();
        if self.items > 0 && (self.body.len() - self.room() + len > CHUNK_BYTES || self.args + args.len() > CHUNK_ARGS)
        {
            self.flush();
        }
        for a in args {
            bulk(&mut self.body, a);
        }
        self.args += args.len();
        self.items += 1;
    }

    fn flush(&mut self) {
        if self.items == 0 {
            return;
        }
        let mut head = Vec::with_capacity(self.room());
        header(&mut head, 2 + self.args);
        bulk(&mut head, self.cmd.as_bytes());
        bulk(&mut head, self.name);
        let room = self.room();
        let start = room - head.len();
        self.left = self.left.saturating_sub(self.body.len() - room);
        let mut bytes = std::mem::take(&mut self.body);
        bytes[start..room].copy_from_slice(&head);
        self.out.push(WCmd {
            bytes,
            start,
            op: if self.push {
                Op::Push(self.items)
            } else {
                Op::Idempotent
            },
            name: self.cmd,
        });
        self.fresh_body();
        self.args = 0;
        self.items = 0;
    }
}

impl Drop for Chunks<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

fn cmd(out: &mut Vec<WCmd>, op: Op, name: &'static str, args: &[&[u8]]) {
    let mut bytes = Vec::new();
    resp::pack(&mut bytes, args);
    out.push(WCmd::new(bytes, op, name));
}

fn id(i: StreamId) -> Vec<u8> {
    let mut b = Vec::with_capacity(41);
    resp::decimal_u64(&mut b, i.ms);
    b.push(b'-');
    resp::decimal_u64(&mut b, i.seq);
    b
}

/// The commands for one part of a key, written under `name` (the key, maybe with a prefix).
/// `del_first`: the part is part 0 and the key must be deleted first (replace, resume). The
/// expiry follows the last part; `now_ms` turns it into time left where the target needs that.
pub fn part(
    d: &Dialect,
    name: &[u8],
    rec: &KeyRecord,
    st: &mut KeyState,
    del_first: bool,
    now_ms: u64,
    out: &mut Vec<WCmd>,
) {
    // SET replaces a key of any type: a string needs no DEL.
    if del_first && !matches!(rec.value, Value::String(_)) {
        cmd(out, Op::Del, "DEL", &[b"DEL", name]);
    }
    // Argument bytes to expect: the values, plus RESP framing and score text per element.
    let est = {
        let (bytes, elements) = rec.value.size();
        (bytes + elements * 32) as usize
    };
    match &rec.value {
        Value::String(v) if rec.part == 0 => {
            cmd(out, Op::Idempotent, "SET", &[b"SET", name, v]);
            st.string_offset = v.len() as u64;
        }
        Value::String(v) => {
            let off = st.string_offset.to_string();
            cmd(out, Op::Idempotent, "SETRANGE", &[b"SETRANGE", name, off.as_bytes(), v]);
            st.string_offset += v.len() as u64;
        }
        Value::Hash(pairs) if d.hset_pairs => {
            let mut c = Chunks::new(out, "HSET", name, false, est);
            pairs.iter().for_each(|(f, v)| c.item(&[f, v]));
        }
        Value::Hash(pairs) => {
            let mut c = Chunks::new(out, "HMSET", name, false, est);
            pairs.iter().for_each(|(f, v)| c.item(&[f, v]));
        }
        Value::List(items) => {
            let mut c = Chunks::new(out, "RPUSH", name, true, est);
            items.iter().for_each(|e| c.item(&[e]));
        }
        Value::Set(items) => {
            let mut c = Chunks::new(out, "SADD", name, false, est);
            items.iter().for_each(|e| c.item(&[e]));
        }
        Value::ZSet(members) => {
            // One bad score fails a whole ZADD (Kvrocks and Redis reject NaN, SERVERS.md): NaN
            // members go alone, so only they fail, and the failure names the key.
            let (nan, good): (Vec<_>, Vec<_>) = members.iter().partition(|(_, s)| s.is_nan());
            {
                let mut c = Chunks::new(out, "ZADD", name, false, est);
                for (m, s) in good {
                    c.item(&[resp::ScoreText::new(s).as_bytes(), m]);
                }
            }
            for (m, _) in nan {
                cmd(out, Op::Idempotent, "ZADD", &[b"ZADD", name, b"nan", m]);
            }
        }
        Value::Stream { entries, meta } => {
            // Pending entries whose messages were deleted at the source: a target keeps a
            // pending entry only for a message in the stream, so placeholders go in at their ids
            // (in order among the entries), are claimed, and are deleted again (stream_meta).
            let holes = meta
                .as_ref()
                .map_or_else(Vec::new, |m| holes(m, entries, st.stream_top));
            let mut h = holes.iter().peekable();
            for e in entries {
                while let Some(p) = h.next_if(|p| **p < e.id) {
                    xadd(out, name, *p, &[(PLACEHOLDER, b"1")]);
                }
                xadd(out, name, e.id, &e.fields);
            }
            for p in h {
                xadd(out, name, *p, &[(PLACEHOLDER, b"1")]);
            }
            st.stream_entries += entries.len() as u64;
            st.stream_top = entries.last().map(|e| e.id).or(st.stream_top);
            if let Some(m) = meta {
                stream_meta(d, name, m, entries, &holes, st, now_ms, out);
            }
        }
    }
    if rec.is_last() {
        if let Some(at) = rec.expire_at_ms {
            expire(d, name, at, now_ms, out);
        }
    }
}

/// The field of a placeholder entry, which holds a deleted message's place while its pending
/// entry is claimed; it is deleted at once.
const PLACEHOLDER: &[u8] = b"kvferry-placeholder";

fn xadd(out: &mut Vec<WCmd>, name: &[u8], entry: StreamId, fields: &[(&[u8], &[u8])]) {
    let idb = id(entry);
    // Sized once: one XADD per entry, so growing the buffer would cost more than building it.
    let mut bytes = Vec::with_capacity(
        16 + bulk_len(4)
            + bulk_len(name.len())
            + bulk_len(idb.len())
            + fields
                .iter()
                .map(|(f, v)| bulk_len(f.len()) + bulk_len(v.len()))
                .sum::<usize>(),
    );
    header(&mut bytes, 3 + 2 * fields.len());
    for a in [b"XADD".as_slice(), name, &idb] {
        bulk(&mut bytes, a);
    }
    for (f, v) in fields {
        bulk(&mut bytes, f);
        bulk(&mut bytes, v);
    }
    out.push(WCmd::new(bytes, Op::OnceOnly, "XADD"));
}

/// The pending ids of the stream's groups that are neither among this (last) part's entries nor
/// at or below the entries written before it: their messages were deleted at the source. In id
/// order, each once. (One at or below an earlier part's entries may be there or not: its XCLAIM
/// says, `Op::Claim`.)
fn holes(m: &StreamMeta, entries: &[StreamEntry], top: Option<StreamId>) -> Vec<StreamId> {
    let mut ids: Vec<StreamId> = m
        .groups
        .iter()
        .flat_map(|g| g.pending.iter().map(|p| p.id))
        .filter(|p| top.is_none_or(|t| *p > t))
        .filter(|p| entries.binary_search_by(|e| e.id.cmp(p)).is_err())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[allow(clippy::too_many_arguments)]
fn stream_meta(
    d: &Dialect,
    name: &[u8],
    m: &StreamMeta,
    entries: &[StreamEntry],
    holes: &[StreamId],
    st: &KeyState,
    now_ms: u64,
    out: &mut Vec<WCmd>,
) {
    let last = id(m.last_id);
    if st.stream_entries == 0 && holes.is_empty() {
        // XADD creates a stream; MAXLEN 0 leaves it empty, as it was (Kvrocks and Redis keep
        // empty streams). The id must be above 0-0.
        let first = if m.last_id == (StreamId { ms: 0, seq: 0 }) {
            b"0-1".to_vec()
        } else {
            last.clone()
        };
        cmd(
            out,
            Op::OnceOnly,
            "XADD",
            &[b"XADD", name, b"MAXLEN", b"0", &first, b"_", b"_"],
        );
    }
    for g in &m.groups {
        let mut args: Vec<Vec<u8>> = vec![
            b"XGROUP".to_vec(),
            b"CREATE".to_vec(),
            name.to_vec(),
            g.name.to_vec(),
            id(g.last_delivered_id),
        ];
        if let (true, Some(n)) = (d.stream_v7, g.entries_read) {
            args.extend([b"ENTRIESREAD".to_vec(), n.to_string().into_bytes()]);
        }
        cmd(
            out,
            Op::OnceOnly,
            "XGROUP",
            &args.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        );
        for c in &g.consumers {
            cmd(
                out,
                Op::Idempotent,
                "XGROUP",
                &[b"XGROUP", b"CREATECONSUMER", name, g.name, c.name],
            );
        }
        // Pending entries: XCLAIM ... FORCE puts an id into a consumer's pending list with its
        // idle time and delivery count, if its message is in the stream.
        for p in &g.pending {
            let idle = now_ms.saturating_sub(p.delivery_time_ms).to_string();
            let count = p.delivery_count.to_string();
            let known = holes.binary_search(&p.id).is_ok() || entries.binary_search_by(|e| e.id.cmp(&p.id)).is_ok();
            cmd(
                out,
                if known { Op::Idempotent } else { Op::Claim },
                "XCLAIM",
                &[
                    b"XCLAIM",
                    name,
                    g.name,
                    p.consumer,
                    b"0",
                    &id(p.id),
                    b"IDLE",
                    idle.as_bytes(),
                    b"RETRYCOUNT",
                    count.as_bytes(),
                    b"FORCE",
                    b"JUSTID",
                ],
            );
        }
    }
    // One XDEL per placeholder, newest first: Kvrocks 2.10.1 answers XINFO STREAM "no such key"
    // after one XDEL of several ids that end the stream (seen: XADD 1-1..4-1, XDEL 3-1 4-1),
    // and verify reads XINFO STREAM.
    let mut holes = holes.to_vec();
    holes.sort_unstable();
    for h in holes.iter().rev() {
        cmd(out, Op::Idempotent, "XDEL", &[b"XDEL", name, &id(*h)]);
    }
    // Last: XADD and XDEL of placeholders moved the counters that XSETID now sets.
    let mut args: Vec<Vec<u8>> = vec![b"XSETID".to_vec(), name.to_vec(), last];
    if d.stream_v7 {
        if let Some(n) = m.entries_added {
            args.extend([b"ENTRIESADDED".to_vec(), n.to_string().into_bytes()]);
        }
        if let Some(mx) = m.max_deleted_id {
            args.extend([b"MAXDELETEDID".to_vec(), id(mx)]);
        }
    }
    cmd(
        out,
        Op::Idempotent,
        "XSETID",
        &args.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    );
}

/// The expiry command for a key that expires at `at` (unix ms). Never a non-positive expiry
/// (issue 4): where only time left can be given and none is left, the key is deleted instead.
fn expire(d: &Dialect, name: &[u8], at: u64, now_ms: u64, out: &mut Vec<WCmd>) {
    let left = at.saturating_sub(now_ms);
    match d.expiry {
        Expiry::PexpireAt => {
            let at = at.max(1).to_string();
            cmd(out, Op::Idempotent, "PEXPIREAT", &[b"PEXPIREAT", name, at.as_bytes()]);
        }
        _ if left == 0 => cmd(out, Op::Idempotent, "DEL", &[b"DEL", name]),
        Expiry::PexpireLeft => {
            cmd(
                out,
                Op::Idempotent,
                "PEXPIRE",
                &[b"PEXPIRE", name, left.to_string().as_bytes()],
            );
        }
        Expiry::ExpireLeftCeil => {
            let secs = left.div_ceil(1000).to_string();
            cmd(out, Op::Idempotent, "EXPIRE", &[b"EXPIRE", name, secs.as_bytes()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::consts::FLAG_LAST;

    #[test]
    fn stream_ids_are_written_in_decimal() {
        for (ms, seq, text) in [
            (0, 1, "0-1"),
            (1_764_000_000_123, 42, "1764000000123-42"),
            (u64::MAX, u64::MAX, "18446744073709551615-18446744073709551615"),
        ] {
            assert_eq!(id(StreamId { ms, seq }), text.as_bytes());
        }
        let mut out = Vec::new();
        xadd(&mut out, b"s", StreamId { ms: 5, seq: 0 }, &[(b"f", b"v")]);
        assert_eq!(
            out[0].packed(),
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$3\r\n5-0\r\n$1\r\nf\r\n$1\r\nv\r\n"
        );
    }

    fn rec(value: Value<'_>, part: u64, last: bool, exp: Option<u64>) -> KeyRecord<'_> {
        KeyRecord {
            db: 0,
            key: b"k",
            part,
            flags: if last { FLAG_LAST } else { 0 },
            expire_at_ms: exp,
            value,
        }
    }

    fn names(out: &[WCmd]) -> Vec<&str> {
        out.iter().map(|c| c.name).collect()
    }

    #[test]
    fn big_lists_are_cut_into_chunks_below_the_argument_limit() {
        let items: Vec<&[u8]> = (0..250_000).map(|_| b"x".as_slice()).collect();
        let mut out = Vec::new();
        let mut st = KeyState::default();
        part(
            &Dialect::REDIS,
            b"k",
            &rec(Value::List(items), 0, true, Some(5)),
            &mut st,
            true,
            0,
            &mut out,
        );
        assert_eq!(names(&out), ["DEL", "RPUSH", "RPUSH", "RPUSH", "PEXPIREAT"]);
        let pushed: u32 = out
            .iter()
            .filter_map(|c| if let Op::Push(n) = c.op { Some(n) } else { None })
            .sum();
        assert_eq!(pushed, 250_000);
        assert!(out.iter().all(|c| c.packed().len() < CHUNK_BYTES + 100));
    }

    #[test]
    fn strings_continue_with_setrange_and_pika_gets_time_left() {
        let pika = Dialect::for_server(&ServerKind::Pika(3, 5, 5), "3.5.5", false);
        let mut st = KeyState::default();
        let mut out = Vec::new();
        part(
            &pika,
            b"k",
            &rec(Value::String(b"abc"), 0, false, Some(10_500)),
            &mut st,
            true,
            0,
            &mut out,
        );
        part(
            &pika,
            b"k",
            &rec(Value::String(b"de"), 1, true, Some(10_500)),
            &mut st,
            true,
            9_000,
            &mut out,
        );
        assert_eq!(names(&out), ["SET", "SETRANGE", "EXPIRE"]);
        assert!(out[1].packed().ends_with(b"$1\r\n3\r\n$2\r\nde\r\n"));
        assert!(out[2].packed().ends_with(b"$1\r\n2\r\n"), "1.5 s left rounds up to 2 s");
        let mut out = Vec::new();
        part(
            &pika,
            b"k",
            &rec(Value::String(b"x"), 0, true, Some(10)),
            &mut st,
            false,
            10,
            &mut out,
        );
        assert_eq!(names(&out), ["SET", "DEL"], "no time left: delete, never EXPIRE 0");
    }

    #[test]
    fn nan_scores_go_alone() {
        let mut out = Vec::new();
        let m = vec![
            (b"a".as_slice(), 1.0),
            (b"b".as_slice(), f64::NAN),
            (b"c".as_slice(), -0.0),
        ];
        part(
            &Dialect::REDIS,
            b"k",
            &rec(Value::ZSet(m), 0, true, None),
            &mut st(),
            false,
            0,
            &mut out,
        );
        assert_eq!(names(&out), ["ZADD", "ZADD"]);
        assert!(out[0]
            .packed()
            .ends_with(b"$3\r\n1.0\r\n$1\r\na\r\n$4\r\n-0.0\r\n$1\r\nc\r\n"));
    }

    fn st() -> KeyState {
        KeyState::default()
    }
}
