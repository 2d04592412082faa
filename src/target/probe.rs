//! `kvferry verify`'s reads (issue 5): for each part of a key in the snapshot, the commands that
//! read the same part back from a server, and the judgement of their replies. A part is compared
//! on its own (a window of a list, the fields of a hash part, the members of a set part...), so a
//! big key is compared page by page and never loaded whole; a key's last part adds a length
//! check, which catches members the server has and the snapshot does not, and a stream's last
//! part its metadata: last id, counters, consumer groups and their pending entries.

use redis::Value;

use super::reply::Reply;
use super::resp;
use crate::format::record::{KeyRecord, Lossy, StreamId, StreamMeta, Value as RValue};
use crate::format::KeyType;
use crate::source::read::{field, fields, id_field, int};

/// Members per read command.
const PER_COMMAND: usize = 10_000;

/// What the server can do.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// SMISMEMBER and ZMSCORE (Redis 6.2+, Valkey, Kvrocks); else one SISMEMBER / ZSCORE per
    /// member (Pika).
    pub multi: bool,
    /// PTTL answers -2 for a missing key. Pika answers 0 for a missing key and for every stream
    /// (SERVERS.md, seen on 4.0.1): there EXISTS says whether a key is there, and a stream, which
    /// has no expiry on Pika, gets neither read (its XLEN and XRANGE show a missing one).
    pub pttl_missing: bool,
    /// Consumer groups can be read (XINFO GROUPS, XINFO CONSUMERS, XPENDING). Not on Pika, which
    /// has none, and which XINFO GROUPS crashes (4.0.1) or hangs (SERVERS.md): a snapshot's
    /// groups are then reported as not kept, without asking.
    pub groups: bool,
}

impl Caps {
    /// Redis 6.2 or later, Valkey, Kvrocks.
    pub const ALL: Caps = Caps {
        multi: true,
        pttl_missing: true,
        groups: true,
    };
}

/// Byte strings in one buffer: a probe's expected members or values, in one allocation rather
/// than one each (issue 13: copying them one by one was a sixth of verify's instructions).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Strings {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Strings {
    /// The strings of `it`, in buffers sized once.
    pub fn of<'a>(it: impl Iterator<Item = &'a [u8]> + Clone) -> Strings {
        let (n, bytes) = it.clone().fold((0, 0), |(n, b), s| (n + 1, b + s.len()));
        let mut s = Strings {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        };
        for b in it {
            s.push(b);
        }
        s
    }

    pub fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[from..self.ends[i]]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Its strings two by two (field and value).
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len() / 2).map(|i| (self.get(2 * i), self.get(2 * i + 1)))
    }
}

impl<'a> FromIterator<&'a [u8]> for Strings {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(it: I) -> Strings {
        let mut s = Strings::default();
        for b in it {
            s.push(b);
        }
        s
    }
}

/// What a reply should be.
#[derive(Debug)]
pub enum Expect {
    Type(KeyType),
    /// EXISTS: the key is there (Pika, where PTTL cannot say).
    Exists,
    /// The snapshot's stream has this many consumer groups, which the server cannot hold.
    NoGroups(u64),
    /// PTTL, against this absolute expiry (unix ms).
    Ttl(Option<u64>),
    /// GETRANGE of this part of a string (one byte more for the last part: the string must
    /// end there).
    Range(u64, Vec<u8>),
    /// A length command (STRLEN, HLEN, LLEN, SCARD, ZCARD, XLEN) and the length expected.
    Len(&'static str, u64),
    /// HMGET: each field's value (fields and values in turn).
    Fields(Strings),
    /// LRANGE from this index (one element more for the list's last window: it must end there).
    List(u64, Strings),
    /// SMISMEMBER: every one a member.
    Members(Strings),
    /// ZMSCORE: each member's score.
    Scores(Strings, Vec<f64>),
    /// XRANGE from the part's first id to its last: exactly these entries, each an id and how
    /// many of the strings are its fields and values (in turn).
    Entries(Vec<(StreamId, usize)>, Strings),
    /// XINFO STREAM: the stream's metadata (entries added and the greatest deleted id where
    /// both the snapshot and the server know them) and how many consumer groups it has.
    Stream {
        last_id: StreamId,
        entries_added: Option<u64>,
        max_deleted_id: Option<StreamId>,
        groups: u64,
    },
    /// XINFO GROUPS: each group of the snapshot, with its last delivered id, entries read
    /// (where known), consumers and pending entries.
    Groups(Vec<GroupWant>),
    /// XINFO CONSUMERS of a group: these consumers.
    Consumers(Vec<u8>, Vec<Vec<u8>>),
    /// XPENDING of a group from an id on: exactly these entries (id, consumer, deliveries).
    Pending(Vec<u8>, Vec<(StreamId, Vec<u8>, u64)>),
}

/// A consumer group as the snapshot has it.
#[derive(Debug)]
pub struct GroupWant {
    pub name: Vec<u8>,
    pub last_delivered_id: StreamId,
    pub entries_read: Option<u64>,
    pub consumers: u64,
    pub pending: u64,
}

/// One read and its expectation.
#[derive(Debug)]
pub struct Probe {
    pub cmd: Vec<u8>,
    pub expect: Expect,
}

impl Probe {
    /// About the memory it holds until judged: its command, its expected values and its reply
    /// (each about the size of the command), and their elements' bookkeeping.
    pub fn weight(&self) -> usize {
        let elements = match &self.expect {
            Expect::Fields(v) | Expect::List(_, v) | Expect::Members(v) | Expect::Scores(v, _) => v.len(),
            Expect::Entries(_, v) => v.len(),
            Expect::Groups(v) => v.len(),
            Expect::Consumers(_, v) => v.len(),
            Expect::Pending(_, v) => v.len(),
            _ => 1,
        };
        3 * self.cmd.len() + 64 * elements
    }
}

/// The judgement on one reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Missing,
    WrongType(String),
    WrongValue(String),
    WrongTtl(String),
}

/// A key's progress through its parts.
#[derive(Debug, Default)]
pub struct ProbeState {
    /// String bytes or list elements so far.
    offset: u64,
    /// Members, fields or entries so far.
    count: u64,
}

fn pack(args: &[&[u8]]) -> Vec<u8> {
    let mut c = Vec::new();
    resp::pack(&mut c, args);
    c
}

fn id(i: StreamId) -> Vec<u8> {
    format!("{}-{}", i.ms, i.seq).into_bytes()
}

fn show(b: &[u8]) -> String {
    if b.len() > 64 {
        format!("{:?}... ({} bytes)", Lossy(&b[..64]), b.len())
    } else {
        format!("{:?}", Lossy(b))
    }
}

/// The probes for one part of a key stored under `name`. Part 0 starts with TYPE and PTTL.
pub fn probes(rec: &KeyRecord, name: &[u8], st: &mut ProbeState, caps: Caps, out: &mut Vec<Probe>) {
    let ty = rec.key_type();
    // No TYPE: PTTL says -2 for a missing key, and a key of another type answers the value
    // reads with WRONGTYPE. Fewer reads per key keep verify as fast as the import.
    if rec.part == 0 && (caps.pttl_missing || ty != KeyType::Stream) {
        if !caps.pttl_missing {
            out.push(Probe {
                cmd: pack(&[b"EXISTS", name]),
                expect: Expect::Exists,
            });
        }
        out.push(Probe {
            cmd: pack(&[b"PTTL", name]),
            expect: Expect::Ttl(rec.expire_at_ms),
        });
    }
    match &rec.value {
        RValue::String(v) => {
            // The last part asks one byte more: a longer string on the server shows.
            let end = st.offset + v.len() as u64 + u64::from(rec.is_last());
            if end > st.offset {
                let (from, to) = (st.offset.to_string(), (end - 1).to_string());
                out.push(Probe {
                    cmd: pack(&[b"GETRANGE", name, from.as_bytes(), to.as_bytes()]),
                    expect: Expect::Range(st.offset, v.to_vec()),
                });
            }
            st.offset += v.len() as u64;
        }
        RValue::Hash(pairs) => {
            for chunk in pairs.chunks(PER_COMMAND) {
                let mut args: Vec<&[u8]> = vec![b"HMGET", name];
                args.extend(chunk.iter().map(|(f, _)| *f));
                out.push(Probe {
                    cmd: pack(&args),
                    expect: Expect::Fields(Strings::of(chunk.iter().flat_map(|(f, v)| [*f, *v]))),
                });
            }
            st.count += pairs.len() as u64;
        }
        RValue::List(items) => {
            let windows = items.len().div_ceil(PER_COMMAND);
            for (w, chunk) in items.chunks(PER_COMMAND).enumerate() {
                // The list's last window asks one element more: a longer list shows.
                let more = u64::from(rec.is_last() && w + 1 == windows);
                let (from, to) = (
                    st.offset.to_string(),
                    (st.offset + chunk.len() as u64 - 1 + more).to_string(),
                );
                out.push(Probe {
                    cmd: pack(&[b"LRANGE", name, from.as_bytes(), to.as_bytes()]),
                    expect: Expect::List(st.offset, Strings::of(chunk.iter().copied())),
                });
                st.offset += chunk.len() as u64;
            }
            st.count += items.len() as u64;
        }
        RValue::Set(items) => {
            for chunk in items.chunks(if caps.multi { PER_COMMAND } else { 1 }) {
                let verb: &[u8] = if caps.multi { b"SMISMEMBER" } else { b"SISMEMBER" };
                let mut args: Vec<&[u8]> = vec![verb, name];
                args.extend(chunk.iter().copied());
                out.push(Probe {
                    cmd: pack(&args),
                    expect: Expect::Members(Strings::of(chunk.iter().copied())),
                });
            }
            st.count += items.len() as u64;
        }
        RValue::ZSet(members) => {
            for chunk in members.chunks(if caps.multi { PER_COMMAND } else { 1 }) {
                let verb: &[u8] = if caps.multi { b"ZMSCORE" } else { b"ZSCORE" };
                let mut args: Vec<&[u8]> = vec![verb, name];
                args.extend(chunk.iter().map(|(m, _)| *m));
                out.push(Probe {
                    cmd: pack(&args),
                    expect: Expect::Scores(
                        Strings::of(chunk.iter().map(|(m, _)| *m)),
                        chunk.iter().map(|(_, s)| *s).collect(),
                    ),
                });
            }
            st.count += members.len() as u64;
        }
        RValue::Stream { entries, meta } => {
            for chunk in entries.chunks(PER_COMMAND) {
                let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                    continue;
                };
                out.push(Probe {
                    cmd: pack(&[b"XRANGE", name, &id(first.id), &id(last.id)]),
                    expect: Expect::Entries(
                        chunk.iter().map(|e| (e.id, 2 * e.fields.len())).collect(),
                        Strings::of(chunk.iter().flat_map(|e| e.fields.iter().flat_map(|(f, v)| [*f, *v]))),
                    ),
                });
            }
            st.count += entries.len() as u64;
            if let Some(m) = meta {
                stream_meta(m, name, st.count, entries.last().map(|e| e.id), caps, out);
            }
        }
    }
    if rec.is_last() {
        let len: Option<(&'static str, u64)> = match ty {
            // Strings and lists asked one byte or element more above; an empty list does not
            // exist, and LRANGE of one more would show a list that does.
            KeyType::String => None,
            KeyType::List if st.count > 0 => None,
            KeyType::List => Some(("LLEN", 0)),
            KeyType::Hash => Some(("HLEN", st.count)),
            KeyType::Set => Some(("SCARD", st.count)),
            KeyType::ZSet => Some(("ZCARD", st.count)),
            KeyType::Stream => Some(("XLEN", st.count)),
        };
        if let Some((verb, n)) = len {
            out.push(Probe {
                cmd: pack(&[verb.as_bytes(), name]),
                expect: Expect::Len(verb, n),
            });
        }
    }
}

/// The probes of a stream's metadata (its last part carries it): XINFO STREAM, and for its
/// consumer groups XINFO GROUPS, XINFO CONSUMERS and XPENDING over the snapshot's pending ids.
///
/// A stream whose metadata follows from its entries (no groups, nothing deleted, every entry
/// added still there, the last one the last id) gets none of these reads: XADD of the same
/// entries gives the same metadata, and XINFO STREAM costs Redis about as much as reading a
/// small stream (with it on every stream, verify took 0.93 of the import's time on the
/// standard dataset instead of 0.8).
fn stream_meta(m: &StreamMeta, name: &[u8], entries: u64, last: Option<StreamId>, caps: Caps, out: &mut Vec<Probe>) {
    let nothing_deleted = m.max_deleted_id.is_none_or(|d| d == StreamId { ms: 0, seq: 0 });
    if m.groups.is_empty() && nothing_deleted && m.entries_added.is_none_or(|n| n == entries) && last == Some(m.last_id)
    {
        return;
    }
    out.push(Probe {
        cmd: pack(&[b"XINFO", b"STREAM", name]),
        expect: Expect::Stream {
            last_id: m.last_id,
            entries_added: m.entries_added,
            max_deleted_id: m.max_deleted_id,
            groups: if caps.groups { m.groups.len() as u64 } else { 0 },
        },
    });
    if m.groups.is_empty() {
        return;
    }
    if !caps.groups {
        out.push(Probe {
            cmd: pack(&[b"XLEN", name]),
            expect: Expect::NoGroups(m.groups.len() as u64),
        });
        return;
    }
    out.push(Probe {
        cmd: pack(&[b"XINFO", b"GROUPS", name]),
        expect: Expect::Groups(
            m.groups
                .iter()
                .map(|g| GroupWant {
                    name: g.name.to_vec(),
                    last_delivered_id: g.last_delivered_id,
                    entries_read: g.entries_read,
                    consumers: g.consumers.len() as u64,
                    pending: g.pending.len() as u64,
                })
                .collect(),
        ),
    });
    for g in &m.groups {
        if !g.consumers.is_empty() {
            out.push(Probe {
                cmd: pack(&[b"XINFO", b"CONSUMERS", name, g.name]),
                expect: Expect::Consumers(g.name.to_vec(), g.consumers.iter().map(|c| c.name.to_vec()).collect()),
            });
        }
        for chunk in g.pending.chunks(PER_COMMAND) {
            let Some(first) = chunk.first() else {
                continue;
            };
            // From the chunk's first id on, as many as it holds: an entry the snapshot lacks
            // shows in their place. (Not up to the last id: Kvrocks 2.10.1's XPENDING answers
            // nothing, or an error, for an end other than `+`.)
            let count = chunk.len().to_string();
            out.push(Probe {
                cmd: pack(&[b"XPENDING", name, g.name, &id(first.id), b"+", count.as_bytes()]),
                expect: Expect::Pending(
                    g.name.to_vec(),
                    chunk
                        .iter()
                        .map(|p| (p.id, p.consumer.to_vec(), p.delivery_count))
                        .collect(),
                ),
            });
        }
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

/// The score a server printed; NaN equals NaN here, anything else compares bit for bit (so -0
/// and 0 differ, and 1/3 printed with fewer digits differs from 1/3).
fn same_score(expected: f64, reply: Option<Reply>) -> Result<(), String> {
    let text = reply.and_then(Reply::bytes).and_then(unwrap_resp);
    let got = text
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse::<f64>().ok());
    match got {
        Some(g) if g.to_bits() == expected.to_bits() || (g.is_nan() && expected.is_nan()) => Ok(()),
        Some(_) => Err(format!(
            "score {} expected, found {}",
            resp::score(expected),
            String::from_utf8_lossy(text.unwrap_or_default())
        )),
        None => Err(format!("score {} expected, found no member", resp::score(expected))),
    }
}

/// Kvrocks 2.10.1 (and its development branch of 2024-10) answers ZMSCORE with each score
/// encoded twice: a bulk string holding `$19\r\n0.33333333333333331\r\n`, or `$-1\r\n` for
/// a missing member (seen running it; cmd_zset.cc puts `conn->Double()` replies into
/// `MultiBulkString`). A score's text never starts with `$`, so such a reply is unwrapped; any
/// other is taken as it is. `None`: no member.
fn unwrap_resp(b: &[u8]) -> Option<&[u8]> {
    let Some(inner) = b.strip_prefix(b"$") else {
        return Some(b);
    };
    let (len, rest) = inner.split_at(inner.iter().position(|&c| c == b'\r')?);
    let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
    rest.strip_prefix(b"\r\n")?.get(..len)
}

/// The replies of a reply that answers for one member or several (SISMEMBER or SMISMEMBER,
/// ZSCORE or ZMSCORE): itself when it is not an array and one member was asked.
fn answers<'a>(v: Reply<'a>, asked: usize) -> impl Iterator<Item = Reply<'a>> {
    let single = asked == 1 && !v.is_array();
    single.then_some(v).into_iter().chain(v.items())
}

/// Writes a stream id as the server prints it into `buf`.
fn id_into(buf: &mut Vec<u8>, i: StreamId) -> &[u8] {
    buf.clear();
    resp::decimal_u64(buf, i.ms);
    buf.push(b'-');
    resp::decimal_u64(buf, i.seq);
    buf
}

/// Judges one reply, as it lies in the buffer it was read into. `now_ms` is when it was read;
/// `tolerance_ms` how far an expiry may be off.
pub fn judge(e: &Expect, v: Reply, now_ms: u64, tolerance_ms: u64) -> Verdict {
    if let Some(err) = v.error() {
        let text = String::from_utf8_lossy(err);
        // Kvrocks 2.10.1 says `ERR Invalid argument: WRONGTYPE Operation against a key...`.
        return if text.contains("WRONGTYPE") {
            Verdict::WrongType(text.into_owned())
        } else {
            Verdict::WrongValue(format!("the server answered {text}"))
        };
    }
    let wrong = |s: String| Verdict::WrongValue(s);
    match e {
        Expect::Type(t) => match v.bytes().map(String::from_utf8_lossy) {
            Some(n) if n == "none" => Verdict::Missing,
            Some(n) if n == t.name() => Verdict::Ok,
            Some(n) => Verdict::WrongType(format!("a {n}, expected a {}", t.name())),
            None => wrong(format!("TYPE answered {v:?}")),
        },
        Expect::Exists => match v.int() {
            Some(0) => Verdict::Missing,
            Some(_) => Verdict::Ok,
            None => wrong(format!("EXISTS answered {v:?}")),
        },
        Expect::NoGroups(n) => wrong(format!(
            "{n} consumer groups not kept: the server has no consumer groups (Pika)"
        )),
        Expect::Ttl(want) => {
            let Some(pttl) = v.int() else {
                return wrong(format!("PTTL answered {v:?}"));
            };
            match (want, pttl) {
                (_, -2) => Verdict::Missing,
                (None, -1) => Verdict::Ok,
                (None, ms) => Verdict::WrongTtl(format!("expires in {ms} ms, expected no expiry")),
                (Some(t), -1) => {
                    Verdict::WrongTtl(format!("no expiry, expected to expire at {}", crate::util::iso_utc(*t)))
                }
                (Some(t), ms) => {
                    let at = now_ms + ms.max(0) as u64;
                    if at.abs_diff(*t) <= tolerance_ms {
                        Verdict::Ok
                    } else {
                        Verdict::WrongTtl(format!(
                            "expires at {}, expected {} ({} s apart)",
                            crate::util::iso_utc(at),
                            crate::util::iso_utc(*t),
                            at.abs_diff(*t) / 1000
                        ))
                    }
                }
            }
        }
        Expect::Range(off, want) => match v.bytes() {
            Some(got) if got == want.as_slice() => Verdict::Ok,
            Some(got) if got.starts_with(want) => {
                wrong(format!("longer than the snapshot's {} bytes", off + want.len() as u64))
            }
            got => {
                let got = got.unwrap_or_default();
                let at = want
                    .iter()
                    .zip(got)
                    .position(|(a, b)| a != b)
                    .unwrap_or(want.len().min(got.len()));
                wrong(format!("bytes differ at offset {}", off + at as u64))
            }
        },
        Expect::Len(verb, n) => match v.int() {
            Some(got) if got as u64 == *n => Verdict::Ok,
            Some(got) => wrong(format!("{verb} is {got}, expected {n}")),
            None => wrong(format!("{verb} answered {v:?}")),
        },
        Expect::Fields(pairs) => {
            let mut got = v.items();
            for (f, want) in pairs.pairs() {
                match got.next().and_then(Reply::bytes) {
                    Some(g) if g == want => {}
                    Some(g) => return wrong(format!("field {}: {} expected, found {}", show(f), show(want), show(g))),
                    None => return wrong(format!("field {} is missing", show(f))),
                }
            }
            Verdict::Ok
        }
        Expect::List(start, want) => {
            let mut got = v.items();
            if got.len() > want.len() {
                return wrong(format!(
                    "longer than the snapshot's {} elements",
                    start + want.len() as u64
                ));
            }
            for (i, w) in want.iter().enumerate() {
                match got.next().and_then(Reply::bytes) {
                    Some(g) if g == w => {}
                    Some(g) => {
                        return wrong(format!(
                            "element {}: {} expected, found {}",
                            start + i as u64,
                            show(w),
                            show(g)
                        ))
                    }
                    None => return wrong(format!("element {} is missing", start + i as u64)),
                }
            }
            Verdict::Ok
        }
        Expect::Members(want) => {
            let mut got = answers(v, want.len());
            for m in want.iter() {
                if got.next().and_then(Reply::int) != Some(1) {
                    return wrong(format!("member {} is missing", show(m)));
                }
            }
            Verdict::Ok
        }
        Expect::Scores(want, scores) => {
            let mut got = answers(v, want.len());
            for (m, s) in want.iter().zip(scores) {
                if let Err(why) = same_score(*s, got.next()) {
                    return wrong(format!("member {}: {why}", show(m)));
                }
            }
            Verdict::Ok
        }
        Expect::Entries(want, strings) => {
            let got = v.items();
            if got.len() != want.len() {
                return wrong(format!(
                    "{} entries from {} to {} expected, found {}",
                    want.len(),
                    show_id(want[0].0),
                    show_id(want[want.len() - 1].0),
                    got.len()
                ));
            }
            let mut buf = Vec::new();
            let mut wstrings = strings.iter();
            for ((wid, n), g) in want.iter().zip(got) {
                let mut parts = g.items();
                let gid = parts.next().and_then(Reply::bytes).unwrap_or_default();
                let gfields = parts.next().map(Reply::items);
                let wfields = wstrings.by_ref().take(*n).map(Some);
                let same_fields = gfields.is_some_and(|gf| gf.len() == *n && gf.map(Reply::bytes).eq(wfields));
                if gid != id_into(&mut buf, *wid) || !same_fields {
                    return wrong(format!("entry {} differs", show_id(*wid)));
                }
            }
            Verdict::Ok
        }
        Expect::Stream { .. } | Expect::Groups(_) | Expect::Consumers(..) | Expect::Pending(..) => {
            judge_meta(e, &v.to_value())
        }
    }
}

/// Judges a stream's metadata and consumer groups: few replies, read as redis-rs's values.
fn judge_meta(e: &Expect, v: &Value) -> Verdict {
    let wrong = |s: String| Verdict::WrongValue(s);
    match e {
        Expect::Stream {
            last_id,
            entries_added,
            max_deleted_id,
            groups,
        } => {
            let f = fields(v);
            if id_field(field(&f, "last-generated-id")) != Some(*last_id) {
                return wrong(format!(
                    "last id {} expected, found {}",
                    show_id(*last_id),
                    shown(field(&f, "last-generated-id"))
                ));
            }
            // Servers before Redis 7 (and Pika before 3.5.3) do not report these.
            if let (Some(want), Some(got)) = (entries_added, int(field(&f, "entries-added"))) {
                if got != *want {
                    return wrong(format!("entries added {want} expected, found {got}"));
                }
            }
            if let (Some(want), Some(got)) = (max_deleted_id, id_field(field(&f, "max-deleted-entry-id"))) {
                if got != *want {
                    return wrong(format!(
                        "greatest deleted id {} expected, found {}",
                        show_id(*want),
                        show_id(got)
                    ));
                }
            }
            match int(field(&f, "groups")) {
                Some(n) if n != *groups => wrong(format!("{groups} consumer groups expected, found {n}")),
                _ => Verdict::Ok,
            }
        }
        Expect::Groups(want) => {
            let got: Vec<Vec<(String, &Value)>> = items(v).iter().map(fields).collect();
            for w in want {
                let Some(g) = got
                    .iter()
                    .find(|g| field(g, "name").and_then(bytes) == Some(w.name.as_slice()))
                else {
                    return wrong(format!("consumer group {} is missing", show(&w.name)));
                };
                let group = show(&w.name);
                if id_field(field(g, "last-delivered-id")) != Some(w.last_delivered_id) {
                    return wrong(format!(
                        "group {group}: last delivered id {} expected, found {}",
                        show_id(w.last_delivered_id),
                        shown(field(g, "last-delivered-id"))
                    ));
                }
                if let (Some(want), Some(got)) = (w.entries_read, int(field(g, "entries-read"))) {
                    if got != want {
                        return wrong(format!("group {group}: entries read {want} expected, found {got}"));
                    }
                }
                for (what, n) in [("consumers", w.consumers), ("pending", w.pending)] {
                    let got = int(field(g, what));
                    if got != Some(n) {
                        let got = got.map_or_else(|| "none".to_string(), |g| g.to_string());
                        return wrong(format!("group {group}: {n} {what} expected, found {got}"));
                    }
                }
            }
            Verdict::Ok
        }
        Expect::Consumers(group, want) => {
            let got: Vec<&[u8]> = items(v)
                .iter()
                .filter_map(|c| field(&fields(c), "name").and_then(bytes))
                .collect();
            match want.iter().find(|w| !got.contains(&w.as_slice())) {
                Some(w) => wrong(format!("group {}: consumer {} is missing", show(group), show(w))),
                None => Verdict::Ok,
            }
        }
        Expect::Pending(group, want) => {
            let got = items(v);
            for (i, (wid, consumer, count)) in want.iter().enumerate() {
                let e = got.get(i).map(items).unwrap_or_default();
                let same = e.first().and_then(bytes) == Some(id(*wid).as_slice())
                    && e.get(1).and_then(bytes) == Some(consumer.as_slice())
                    && int(e.get(3)) == Some(*count);
                if !same {
                    return wrong(format!(
                        "group {}: pending entry {} of {} delivered {count} times expected, found {}",
                        show(group),
                        show_id(*wid),
                        show(consumer),
                        if e.is_empty() {
                            "none".into()
                        } else {
                            format!(
                                "{} of {} delivered {} times",
                                shown(e.first()),
                                shown(e.get(1)),
                                int(e.get(3)).map_or_else(|| "?".into(), |n| n.to_string())
                            )
                        }
                    ));
                }
            }
            Verdict::Ok
        }
        _ => unreachable!("BUG: judged where it lies"),
    }
}

fn show_id(i: StreamId) -> String {
    format!("{}-{}", i.ms, i.seq)
}

/// A reply value as an operator reads it.
fn shown(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Nil) => "none".into(),
        Some(Value::Int(n)) => n.to_string(),
        Some(v) => bytes(v).map_or_else(|| format!("{v:?}"), show),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict on a reply as redis-rs would have read it.
    fn judged(e: &Expect, v: &Value, now_ms: u64, tolerance_ms: u64) -> Verdict {
        let r = super::super::reply::Replies::of_values(std::slice::from_ref(v));
        judge(e, r.get(0), now_ms, tolerance_ms)
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn scores_compare_bit_for_bit() {
        let e = Expect::Scores([&b"m"[..]].into_iter().collect(), vec![-0.0]);
        assert_eq!(judged(&e, &Value::Array(vec![bulk("-0")]), 0, 0), Verdict::Ok);
        assert!(matches!(
            judged(&e, &Value::Array(vec![bulk("0")]), 0, 0),
            Verdict::WrongValue(_)
        ));
        let third = Expect::Scores([&b"m"[..]].into_iter().collect(), vec![1.0 / 3.0]);
        assert_eq!(
            judged(&third, &Value::Array(vec![bulk("0.33333333333333331")]), 0, 0),
            Verdict::Ok
        );
        assert!(matches!(
            judged(&third, &Value::Array(vec![bulk("0.333333")]), 0, 0),
            Verdict::WrongValue(_)
        ));
        // Kvrocks 2.10.1 encodes each score twice.
        assert_eq!(
            judged(
                &third,
                &Value::Array(vec![bulk("$19\r\n0.33333333333333331\r\n")]),
                0,
                0
            ),
            Verdict::Ok
        );
        assert!(matches!(
            judged(&third, &Value::Array(vec![bulk("$-1\r\n")]), 0, 0),
            Verdict::WrongValue(d) if d.contains("found no member")
        ));
        let inf = Expect::Scores([&b"m"[..]].into_iter().collect(), vec![f64::NEG_INFINITY]);
        assert_eq!(judged(&inf, &Value::Array(vec![bulk("-inf")]), 0, 0), Verdict::Ok);
    }

    #[test]
    fn stream_groups_consumers_and_pending_entries() {
        let sid = |ms, seq| StreamId { ms, seq };
        let xinfo =
            |pairs: &[(&str, Value)]| Value::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), v.clone()]).collect());
        let meta = Expect::Stream {
            last_id: sid(5, 1),
            entries_added: Some(3),
            max_deleted_id: None,
            groups: 1,
        };
        let info = |added| {
            xinfo(&[
                ("last-generated-id", bulk("5-1")),
                ("entries-added", Value::Int(added)),
                ("groups", Value::Int(1)),
            ])
        };
        assert_eq!(judged(&meta, &info(3), 0, 0), Verdict::Ok);
        assert!(matches!(judged(&meta, &info(4), 0, 0), Verdict::WrongValue(d) if d.contains("entries added 3")));
        let groups = Expect::Groups(vec![GroupWant {
            name: b"g".to_vec(),
            last_delivered_id: sid(5, 1),
            entries_read: None,
            consumers: 1,
            pending: 1,
        }]);
        let group = |pending| {
            Value::Array(vec![xinfo(&[
                ("name", bulk("g")),
                ("consumers", Value::Int(1)),
                ("pending", Value::Int(pending)),
                ("last-delivered-id", bulk("5-1")),
            ])])
        };
        assert_eq!(judged(&groups, &group(1), 0, 0), Verdict::Ok);
        assert!(matches!(judged(&groups, &group(2), 0, 0), Verdict::WrongValue(d) if d.contains("1 pending expected")));
        assert!(matches!(
            judged(&groups, &Value::Array(vec![]), 0, 0),
            Verdict::WrongValue(d) if d.contains("group \"g\" is missing")
        ));
        let consumers = Expect::Consumers(b"g".to_vec(), vec![b"alice".to_vec()]);
        let named = |n| Value::Array(vec![xinfo(&[("name", bulk(n))])]);
        assert_eq!(judged(&consumers, &named("alice"), 0, 0), Verdict::Ok);
        assert!(matches!(
            judged(&consumers, &named("bob"), 0, 0),
            Verdict::WrongValue(_)
        ));
        let pending = Expect::Pending(b"g".to_vec(), vec![(sid(5, 1), b"alice".to_vec(), 2)]);
        let entry = |c| {
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                bulk("alice"),
                Value::Int(10),
                Value::Int(c),
            ])])
        };
        assert_eq!(judged(&pending, &entry(2), 0, 0), Verdict::Ok);
        assert!(matches!(judged(&pending, &entry(1), 0, 0), Verdict::WrongValue(_)));
        assert!(matches!(
            judged(&pending, &Value::Array(vec![]), 0, 0),
            Verdict::WrongValue(_)
        ));
    }

    /// XINFO is asked only where the metadata does not follow from the entries.
    #[test]
    fn stream_metadata_read_where_it_says_more_than_the_entries() {
        use crate::format::consts::FLAG_LAST;
        use crate::format::record::{StreamEntry, StreamGroup};
        let sid = |ms, seq| StreamId { ms, seq };
        let commands = |meta: StreamMeta, caps: Caps| -> Vec<Probe> {
            let rec = KeyRecord {
                db: 0,
                key: b"s",
                part: 0,
                flags: FLAG_LAST,
                expire_at_ms: None,
                value: RValue::Stream {
                    entries: vec![StreamEntry {
                        id: sid(5, 1),
                        fields: vec![(b"f", b"v")],
                    }],
                    meta: Some(meta),
                },
            };
            let mut out = Vec::new();
            probes(&rec, b"s", &mut ProbeState::default(), caps, &mut out);
            out
        };
        let has = |p: &Probe, what: &[u8]| p.cmd.windows(what.len()).any(|w| w == what);
        let xinfo = |meta| commands(meta, Caps::ALL).iter().filter(|p| has(p, b"XINFO")).count();
        let plain = || StreamMeta {
            last_id: sid(5, 1),
            entries_added: Some(1),
            max_deleted_id: Some(sid(0, 0)),
            groups: vec![],
        };
        assert_eq!(xinfo(plain()), 0);
        assert_eq!(
            xinfo(StreamMeta {
                last_id: sid(9, 0),
                ..plain()
            }),
            1,
            "a later last id"
        );
        assert_eq!(
            xinfo(StreamMeta {
                entries_added: Some(3),
                ..plain()
            }),
            1,
            "entries deleted"
        );
        assert_eq!(
            xinfo(StreamMeta {
                max_deleted_id: Some(sid(4, 0)),
                ..plain()
            }),
            1
        );
        let group = StreamGroup {
            name: b"g",
            last_delivered_id: sid(5, 1),
            entries_read: None,
            consumers: vec![],
            pending: vec![],
        };
        let grouped = || StreamMeta {
            groups: vec![group.clone()],
            ..plain()
        };
        assert_eq!(xinfo(grouped()), 2, "STREAM and GROUPS");
        // Pika: never XINFO GROUPS, XINFO CONSUMERS or XPENDING (they crash Pika 4.0.1), and no
        // PTTL or EXISTS of a stream (PTTL is 0 for every stream there); the groups the server
        // cannot hold are a difference.
        let pika = Caps {
            multi: false,
            pttl_missing: false,
            groups: false,
        };
        let out = commands(grouped(), pika);
        for verb in [&b"GROUPS"[..], b"CONSUMERS", b"XPENDING", b"PTTL", b"EXISTS"] {
            assert!(!out.iter().any(|p| has(p, verb)), "{out:?}");
        }
        assert!(out.iter().any(|p| has(p, b"XINFO") && has(p, b"STREAM")), "{out:?}");
        let nogroups = out
            .iter()
            .find(|p| matches!(p.expect, Expect::NoGroups(1)))
            .expect("a difference");
        assert!(
            matches!(judged(&nogroups.expect, &Value::Int(1), 0, 0), Verdict::WrongValue(d) if d.contains("1 consumer groups not kept"))
        );
    }

    /// On Pika, PTTL answers 0 for a missing key: EXISTS says whether it is there.
    #[test]
    fn pika_keys_are_found_by_exists() {
        let rec = KeyRecord {
            db: 0,
            key: b"k",
            part: 0,
            flags: crate::format::consts::FLAG_LAST,
            expire_at_ms: None,
            value: RValue::String(b"v"),
        };
        let pika = Caps {
            multi: false,
            pttl_missing: false,
            groups: false,
        };
        let mut out = Vec::new();
        probes(&rec, b"k", &mut ProbeState::default(), pika, &mut out);
        assert!(out[0].cmd.starts_with(b"*2\r\n$6\r\nEXISTS"), "{out:?}");
        assert_eq!(judged(&out[0].expect, &Value::Int(0), 0, 0), Verdict::Missing);
        assert_eq!(judged(&out[0].expect, &Value::Int(2), 0, 0), Verdict::Ok);
    }

    #[test]
    fn wrong_type_as_redis_and_kvrocks_say_it() {
        let e = Expect::Fields([&b"f"[..], b"v"].into_iter().collect());
        let err = |line: &str| redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        let redis = err("WRONGTYPE Operation against a key holding the wrong kind of value");
        assert!(matches!(judged(&e, &redis, 0, 0), Verdict::WrongType(_)), "{redis:?}");
        let kvrocks = err("ERR Invalid argument: WRONGTYPE Operation against a key holding the wrong kind of value");
        assert!(
            matches!(judged(&e, &kvrocks, 0, 0), Verdict::WrongType(_)),
            "{kvrocks:?}"
        );
        assert!(matches!(
            judged(&e, &err("ERR unknown command"), 0, 0),
            Verdict::WrongValue(_)
        ));
    }

    #[test]
    fn ttls_within_the_tolerance() {
        let e = Expect::Ttl(Some(10_000));
        assert_eq!(judged(&e, &Value::Int(5_000), 4_000, 2_000), Verdict::Ok);
        assert!(matches!(
            judged(&e, &Value::Int(50_000), 4_000, 2_000),
            Verdict::WrongTtl(_)
        ));
        assert!(matches!(
            judged(&e, &Value::Int(-1), 4_000, 2_000),
            Verdict::WrongTtl(_)
        ));
        assert_eq!(judged(&Expect::Ttl(None), &Value::Int(-2), 0, 0), Verdict::Missing);
    }
}
