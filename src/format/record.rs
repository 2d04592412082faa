//! Records (SPEC §5) and the rule that joins the parts of a key (SPEC §6).
//!
//! Decoded records borrow their byte strings from the decompressed block, so reading costs one
//! small vector per record, not an allocation per element.

use super::consts::*;
use super::msgpack::{Cur, DResult, Enc};

/// The type of a key record; its discriminant is the record kind (F-REC-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    String = 1,
    Hash = 2,
    List = 3,
    Set = 4,
    ZSet = 5,
    Stream = 6,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::String,
        KeyType::Hash,
        KeyType::List,
        KeyType::Set,
        KeyType::ZSet,
        KeyType::Stream,
    ];

    /// The type name used in the trailer, manifest and JSON rendering (F-REC-2).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Hash => "hash",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::ZSet => "zset",
            KeyType::Stream => "stream",
        }
    }

    pub fn from_name(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn kind(self) -> u64 {
        self as u64
    }

    fn from_kind(kind: u64) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.kind() == kind)
    }
}

/// A stream entry id `ms-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamEntry<'a> {
    pub id: StreamId,
    pub fields: Vec<(&'a [u8], &'a [u8])>,
}

/// Stream metadata, carried by the last part of a stream (F-REC-5).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMeta<'a> {
    pub last_id: StreamId,
    pub entries_added: Option<u64>,
    pub max_deleted_id: Option<StreamId>,
    pub groups: Vec<StreamGroup<'a>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamGroup<'a> {
    pub name: &'a [u8],
    pub last_delivered_id: StreamId,
    pub entries_read: Option<u64>,
    pub consumers: Vec<StreamConsumer<'a>>,
    pub pending: Vec<StreamPending<'a>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamConsumer<'a> {
    pub name: &'a [u8],
    pub seen_time_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StreamPending<'a> {
    pub id: StreamId,
    pub consumer: &'a [u8],
    pub delivery_time_ms: u64,
    pub delivery_count: u64,
}

/// One part's share of a key's value (F-REC-4).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    String(&'a [u8]),
    Hash(Vec<(&'a [u8], &'a [u8])>),
    List(Vec<&'a [u8]>),
    Set(Vec<&'a [u8]>),
    ZSet(Vec<(&'a [u8], f64)>),
    Stream {
        entries: Vec<StreamEntry<'a>>,
        meta: Option<StreamMeta<'a>>,
    },
}

impl Value<'_> {
    pub fn key_type(&self) -> KeyType {
        match self {
            Value::String(_) => KeyType::String,
            Value::Hash(_) => KeyType::Hash,
            Value::List(_) => KeyType::List,
            Value::Set(_) => KeyType::Set,
            Value::ZSet(_) => KeyType::ZSet,
            Value::Stream { .. } => KeyType::Stream,
        }
    }

    /// Bytes and elements this part contributes to `value_bytes` / `elements` (F-TRL-3).
    /// A string's parts count as one element in all, which the caller handles.
    pub fn size(&self) -> (u64, u64) {
        let len = |b: &[u8]| b.len() as u64;
        match self {
            Value::String(v) => (len(v), 0),
            Value::Hash(p) => (p.iter().map(|(f, v)| len(f) + len(v)).sum(), p.len() as u64),
            Value::List(e) | Value::Set(e) => (e.iter().map(|e| len(e)).sum(), e.len() as u64),
            Value::ZSet(m) => (m.iter().map(|(m, _)| len(m) + 8).sum(), m.len() as u64),
            Value::Stream { entries, .. } => (
                entries
                    .iter()
                    .map(|e| 16 + e.fields.iter().map(|(f, v)| len(f) + len(v)).sum::<u64>())
                    .sum(),
                entries.len() as u64,
            ),
        }
    }
}

/// A key record (kinds 1-6): one part of one key occurrence (F-REC-2).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord<'a> {
    pub db: u32,
    pub key: &'a [u8],
    pub part: u64,
    /// All flag bits, LAST included (F-REC-3).
    pub flags: u64,
    pub expire_at_ms: Option<u64>,
    pub value: Value<'a>,
}

impl KeyRecord<'_> {
    pub fn key_type(&self) -> KeyType {
        self.value.key_type()
    }
    pub fn is_last(&self) -> bool {
        self.flags & FLAG_LAST != 0
    }
}

/// The records of one key occurrence whose value comes in `values`, one per part, in order:
/// parts numbered from 0, the last flagged LAST (F-PART-1). `flags` must not hold LAST.
pub fn key_parts<'a>(
    db: u32,
    key: &'a [u8],
    flags: u64,
    expire_at_ms: Option<u64>,
    values: Vec<Value<'a>>,
) -> impl Iterator<Item = KeyRecord<'a>> {
    let n = values.len();
    values.into_iter().enumerate().map(move |(i, value)| KeyRecord {
        db,
        key,
        part: i as u64,
        flags: flags | if i + 1 == n { FLAG_LAST } else { 0 },
        expire_at_ms,
        value,
    })
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record<'a> {
    Key(KeyRecord<'a>),
    /// A record of a skippable kind (64-127) that this version does not define (F-REC-1).
    Skippable {
        kind: u8,
    },
}

impl KeyRecord<'_> {
    /// Appends this record's MessagePack encoding to `out` (F-REC-2).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        e.array(KEY_RECORD_LEN as usize);
        e.uint(self.key_type().kind());
        e.uint(self.db as u64);
        e.bin(self.key);
        e.uint(self.part);
        e.uint(self.flags);
        e.opt_uint(self.expire_at_ms);
        match &self.value {
            Value::String(v) => e.bin(v),
            Value::Hash(pairs) => {
                e.array(2 * pairs.len());
                for (f, v) in pairs {
                    e.bin(f);
                    e.bin(v);
                }
            }
            Value::List(items) | Value::Set(items) => {
                e.array(items.len());
                items.iter().for_each(|i| e.bin(i));
            }
            Value::ZSet(members) => {
                e.array(2 * members.len());
                for (m, s) in members {
                    e.bin(m);
                    e.f64(*s);
                }
            }
            Value::Stream { entries, meta } => {
                e.array(2);
                e.array(entries.len());
                for entry in entries {
                    e.array(3);
                    e.uint(entry.id.ms);
                    e.uint(entry.id.seq);
                    encode_pairs(&mut e, &entry.fields);
                }
                match meta {
                    None => e.nil(),
                    Some(m) => encode_meta(&mut e, m),
                }
            }
        }
    }
}

fn encode_pairs(e: &mut Enc, pairs: &[(&[u8], &[u8])]) {
    e.array(2 * pairs.len());
    for (f, v) in pairs {
        e.bin(f);
        e.bin(v);
    }
}

fn encode_id(e: &mut Enc, id: StreamId) {
    e.array(2);
    e.uint(id.ms);
    e.uint(id.seq);
}

fn encode_meta(e: &mut Enc, m: &StreamMeta) {
    e.array(4);
    encode_id(e, m.last_id);
    e.opt_uint(m.entries_added);
    match m.max_deleted_id {
        Some(id) => encode_id(e, id),
        None => e.nil(),
    }
    e.array(m.groups.len());
    for g in &m.groups {
        e.array(5);
        e.bin(g.name);
        encode_id(e, g.last_delivered_id);
        e.opt_uint(g.entries_read);
        e.array(g.consumers.len());
        for c in &g.consumers {
            e.array(2);
            e.bin(c.name);
            e.opt_uint(c.seen_time_ms);
        }
        e.array(g.pending.len());
        for p in &g.pending {
            e.array(4);
            encode_id(e, p.id);
            e.bin(p.consumer);
            e.uint(p.delivery_time_ms);
            e.uint(p.delivery_count);
        }
    }
}

/// Decodes the record at the cursor (F-REC-1..5). Checks everything a single record can break;
/// the part sequence is [`PartSeq`]'s job.
pub(crate) fn decode<'a>(c: &mut Cur<'a>) -> DResult<Record<'a>> {
    let start = c.pos;
    let len = c.array("record")?;
    if len == 0 {
        return c.err(start, "empty record: a record starts with its kind");
    }
    let kind = c.uint("record kind")?;
    if (64..=MAX_SKIPPABLE_KIND).contains(&kind) {
        for _ in 1..len {
            c.skip(1)?;
        }
        return Ok(Record::Skippable { kind: kind as u8 });
    }
    let Some(ty) = KeyType::from_kind(kind) else {
        let why = match kind {
            0 => "reserved",
            1..=MAX_MUST_UNDERSTAND_KIND => "must-understand and unknown to this version (written by a newer kvferry?)",
            _ => "reserved",
        };
        return c.err(start, format!("record kind {kind} is {why}"));
    };
    if len != KEY_RECORD_LEN as usize {
        return c.err(
            start,
            format!("a {} record has {KEY_RECORD_LEN} elements, found {len}", ty.name()),
        );
    }
    let db_at = c.pos;
    let db = c.uint("db")?;
    let db = u32::try_from(db).or_else(|_| c.err(db_at, format!("db {db} exceeds 2^32-1")))?;
    let key = c.bin("key")?;
    let part = c.uint("part")?;
    let flags_at = c.pos;
    let flags = c.uint("flags")?;
    let reserved = flags & !(FLAGS_KNOWN | FLAGS_ADVISORY);
    if reserved != 0 {
        return c.err(flags_at, format!("reserved flag bits {reserved:#x} are set"));
    }
    if flags & FLAG_PIKA_HLL != 0 && ty != KeyType::String {
        return c.err(
            flags_at,
            format!("flag PIKA_HLL on a {} record (only strings may carry it)", ty.name()),
        );
    }
    let exp_at = c.pos;
    let expire_at_ms = c.opt_uint("expire_at_ms")?;
    if expire_at_ms == Some(0) {
        return c.err(exp_at, "expire_at_ms is 0 (no expiry is nil)");
    }
    let last = flags & FLAG_LAST != 0;
    let value = decode_value(c, ty, last)?;
    Ok(Record::Key(KeyRecord {
        db,
        key,
        part,
        flags,
        expire_at_ms,
        value,
    }))
}

fn decode_value<'a>(c: &mut Cur<'a>, ty: KeyType, last: bool) -> DResult<Value<'a>> {
    Ok(match ty {
        KeyType::String => Value::String(c.bin("string value")?),
        KeyType::Hash => Value::Hash(decode_pairs(c, "hash")?),
        KeyType::List => Value::List(decode_bins(c, "list")?),
        KeyType::Set => Value::Set(decode_bins(c, "set")?),
        KeyType::ZSet => {
            let at = c.pos;
            let n = c.array("zset")?;
            if n % 2 != 0 {
                return c.err(at, format!("zset value has an odd number of elements ({n})"));
            }
            let mut members = Vec::with_capacity(n / 2);
            for _ in 0..n / 2 {
                members.push((c.bin("zset member")?, c.f64("zset score")?));
            }
            Value::ZSet(members)
        }
        KeyType::Stream => {
            c.array_of(2, "stream value")?;
            let n = c.array("stream entries")?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                c.array_of(3, "stream entry")?;
                let id = StreamId {
                    ms: c.uint("entry id ms")?,
                    seq: c.uint("entry id seq")?,
                };
                entries.push(StreamEntry {
                    id,
                    fields: decode_pairs(c, "stream entry fields")?,
                });
            }
            let at = c.pos;
            let meta = if c.nil()? { None } else { Some(decode_meta(c)?) };
            if meta.is_some() != last {
                let why = if last {
                    "the last part of a stream has no meta"
                } else {
                    "meta on a part that is not the last"
                };
                return c.err(at, why);
            }
            Value::Stream { entries, meta }
        }
    })
}

fn decode_bins<'a>(c: &mut Cur<'a>, what: &str) -> DResult<Vec<&'a [u8]>> {
    let n = c.array(what)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(c.bin(what)?);
    }
    Ok(v)
}

fn decode_pairs<'a>(c: &mut Cur<'a>, what: &str) -> DResult<Vec<(&'a [u8], &'a [u8])>> {
    let at = c.pos;
    let n = c.array(what)?;
    if n % 2 != 0 {
        return c.err(at, format!("{what} has an odd number of elements ({n})"));
    }
    let mut v = Vec::with_capacity(n / 2);
    for _ in 0..n / 2 {
        v.push((c.bin(what)?, c.bin(what)?));
    }
    Ok(v)
}

fn decode_id(c: &mut Cur) -> DResult<StreamId> {
    c.array_of(2, "stream id")?;
    Ok(StreamId {
        ms: c.uint("stream id ms")?,
        seq: c.uint("stream id seq")?,
    })
}

fn decode_meta<'a>(c: &mut Cur<'a>) -> DResult<StreamMeta<'a>> {
    c.array_of(4, "stream meta")?;
    let last_id = decode_id(c)?;
    let entries_added = c.opt_uint("entries_added")?;
    let max_deleted_id = if c.nil()? { None } else { Some(decode_id(c)?) };
    let n = c.array("stream groups")?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        c.array_of(5, "stream group")?;
        let name = c.bin("group name")?;
        let last_delivered_id = decode_id(c)?;
        let entries_read = c.opt_uint("entries_read")?;
        let nc = c.array("group consumers")?;
        let mut consumers = Vec::with_capacity(nc);
        for _ in 0..nc {
            c.array_of(2, "consumer")?;
            consumers.push(StreamConsumer {
                name: c.bin("consumer name")?,
                seen_time_ms: c.opt_uint("seen_time_ms")?,
            });
        }
        let np = c.array("group pending")?;
        let mut pending = Vec::with_capacity(np);
        for _ in 0..np {
            c.array_of(4, "pending entry")?;
            pending.push(StreamPending {
                id: decode_id(c)?,
                consumer: c.bin("pending consumer")?,
                delivery_time_ms: c.uint("delivery_time_ms")?,
                delivery_count: c.uint("delivery_count")?,
            });
        }
        groups.push(StreamGroup {
            name,
            last_delivered_id,
            entries_read,
            consumers,
            pending,
        });
    }
    Ok(StreamMeta {
        last_id,
        entries_added,
        max_deleted_id,
        groups,
    })
}

/// The part-sequence rule of SPEC §6 (F-PART-1, F-PART-2), shared by the writer (which refuses
/// to write a bad sequence) and the reader (which rejects one).
#[derive(Debug, Default, Clone)]
pub struct PartSeq {
    open: Option<OpenKey>,
}

#[derive(Debug, Clone)]
struct OpenKey {
    ty: KeyType,
    db: u32,
    key: Vec<u8>,
    next_part: u64,
    flags: u64,
    expire_at_ms: Option<u64>,
}

impl PartSeq {
    /// Accepts the next record of the file, or says why it breaks the sequence.
    pub fn accept(&mut self, rec: &Record) -> Result<(), String> {
        let Record::Key(r) = rec else {
            return match &self.open {
                Some(o) => Err(format!(
                    "a skippable record interrupts key {:?}, which awaits part {}",
                    Lossy(&o.key),
                    o.next_part
                )),
                None => Ok(()),
            };
        };
        // Validate first, change state after: a refused record leaves the sequence as it was.
        match &self.open {
            None if r.part != 0 => {
                return Err(format!(
                    "part {} of key {:?} without its part 0 before it",
                    r.part,
                    Lossy(r.key)
                ));
            }
            None => {
                self.open = Some(OpenKey {
                    ty: r.key_type(),
                    db: r.db,
                    key: r.key.to_vec(),
                    next_part: 0,
                    flags: r.flags & !FLAG_LAST,
                    expire_at_ms: r.expire_at_ms,
                });
            }
            Some(o) => {
                if r.part == 0 {
                    return Err(format!(
                        "key {:?} starts while key {:?} awaits part {}",
                        Lossy(r.key),
                        Lossy(&o.key),
                        o.next_part
                    ));
                }
                if r.part != o.next_part || r.key != o.key.as_slice() || r.db != o.db {
                    return Err(format!(
                        "part {} of key {:?} where part {} of key {:?} was due",
                        r.part,
                        Lossy(r.key),
                        o.next_part,
                        Lossy(&o.key)
                    ));
                }
                if r.key_type() != o.ty || r.flags & !FLAG_LAST != o.flags || r.expire_at_ms != o.expire_at_ms {
                    return Err(format!(
                        "part {} of key {:?} disagrees with its part 0 on type, flags or expiry",
                        r.part,
                        Lossy(r.key)
                    ));
                }
            }
        }
        let o = self.open.as_mut().expect("BUG: occurrence opened above");
        o.next_part += 1;
        if r.is_last() {
            self.open = None;
        }
        Ok(())
    }

    /// At the end of a file: no occurrence may be left open (F-PART-2).
    pub fn finish(&self) -> Result<(), String> {
        match &self.open {
            Some(o) => Err(format!(
                "the file ends inside key {:?}, which awaits part {}",
                Lossy(&o.key),
                o.next_part
            )),
            None => Ok(()),
        }
    }
}

/// Formats key bytes for messages: UTF-8 where it is, escapes elsewhere.
pub struct Lossy<'a>(pub &'a [u8]);

impl std::fmt::Debug for Lossy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}
