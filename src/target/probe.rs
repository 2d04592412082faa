//! `kvferry verify`'s reads (issue 5): for each part of a key in the snapshot, the commands that
//! read the same part back from a server, and the judgement of their replies. A part is compared
//! on its own (a window of a list, the fields of a hash part, the members of a set part...), so a
//! big key is compared page by page and never loaded whole; a key's last part adds a length
//! check, which catches members the server has and the snapshot does not.

use redis::Value;

use super::resp;
use crate::format::record::{KeyRecord, Lossy, StreamId, Value as RValue};
use crate::format::KeyType;

/// Members per read command.
const PER_COMMAND: usize = 10_000;

/// What the server can do.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// SMISMEMBER and ZMSCORE (Redis 6.2+, Valkey, Kvrocks); else one SISMEMBER / ZSCORE per
    /// member (Pika).
    pub multi: bool,
}

/// A stream entry: its id and field/value pairs.
pub type Entry = (StreamId, Vec<(Vec<u8>, Vec<u8>)>);

/// What a reply should be.
#[derive(Debug)]
pub enum Expect {
    Type(KeyType),
    /// PTTL, against this absolute expiry (unix ms).
    Ttl(Option<u64>),
    /// GETRANGE of this part of a string (one byte more for the last part: the string must
    /// end there).
    Range(u64, Vec<u8>),
    /// A length command (STRLEN, HLEN, LLEN, SCARD, ZCARD, XLEN) and the length expected.
    Len(&'static str, u64),
    /// HMGET: each field's value.
    Fields(Vec<(Vec<u8>, Vec<u8>)>),
    /// LRANGE from this index (one element more for the list's last window: it must end there).
    List(u64, Vec<Vec<u8>>),
    /// SMISMEMBER: every one a member.
    Members(Vec<Vec<u8>>),
    /// ZMSCORE: each member's score.
    Scores(Vec<(Vec<u8>, f64)>),
    /// XRANGE from the part's first id to its last: exactly these entries.
    Entries(Vec<Entry>),
}

/// One read and its expectation.
#[derive(Debug)]
pub struct Probe {
    pub cmd: Vec<u8>,
    pub expect: Expect,
}

impl Probe {
    /// About the memory it holds until judged: its command, its expected values (each a small
    /// allocation) and its reply.
    pub fn weight(&self) -> usize {
        let elements = match &self.expect {
            Expect::Fields(v) => v.len(),
            Expect::List(_, v) | Expect::Members(v) => v.len(),
            Expect::Scores(v) => v.len(),
            Expect::Entries(v) => v.len(),
            _ => 1,
        };
        2 * self.cmd.len() + 96 * elements
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
    if rec.part == 0 {
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
                    expect: Expect::Fields(chunk.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect()),
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
                    expect: Expect::List(st.offset, chunk.iter().map(|e| e.to_vec()).collect()),
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
                    expect: Expect::Members(chunk.iter().map(|e| e.to_vec()).collect()),
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
                    expect: Expect::Scores(chunk.iter().map(|(m, s)| (m.to_vec(), *s)).collect()),
                });
            }
            st.count += members.len() as u64;
        }
        RValue::Stream { entries, .. } => {
            for chunk in entries.chunks(PER_COMMAND) {
                let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                    continue;
                };
                out.push(Probe {
                    cmd: pack(&[b"XRANGE", name, &id(first.id), &id(last.id)]),
                    expect: Expect::Entries(
                        chunk
                            .iter()
                            .map(|e| (e.id, e.fields.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect()))
                            .collect(),
                    ),
                });
            }
            st.count += entries.len() as u64;
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
fn same_score(expected: f64, reply: &Value) -> Result<(), String> {
    let text = bytes(reply).map(|b| String::from_utf8_lossy(b).into_owned());
    let got = text.as_deref().and_then(|t| t.parse::<f64>().ok());
    match got {
        Some(g) if g.to_bits() == expected.to_bits() || (g.is_nan() && expected.is_nan()) => Ok(()),
        Some(_) => Err(format!(
            "score {} expected, found {}",
            resp::score(expected),
            text.unwrap_or_default()
        )),
        None => Err(format!("score {} expected, found no member", resp::score(expected))),
    }
}

/// Judges one reply. `now_ms` is when it was read; `tolerance_ms` how far an expiry may be off.
pub fn judge(e: &Expect, v: &Value, now_ms: u64, tolerance_ms: u64) -> Verdict {
    if let Value::ServerError(err) = v {
        let text = format!("{} {}", err.code(), err.details().unwrap_or(""));
        return if err.code() == "WRONGTYPE" {
            Verdict::WrongType(text)
        } else {
            Verdict::WrongValue(format!("the server answered {text}"))
        };
    }
    let wrong = |s: String| Verdict::WrongValue(s);
    match e {
        Expect::Type(t) => match bytes(v).map(|b| String::from_utf8_lossy(b).into_owned()) {
            Some(n) if n == "none" => Verdict::Missing,
            Some(n) if n == t.name() => Verdict::Ok,
            Some(n) => Verdict::WrongType(format!("a {n}, expected a {}", t.name())),
            None => wrong(format!("TYPE answered {v:?}")),
        },
        Expect::Ttl(want) => {
            let Value::Int(pttl) = v else {
                return wrong(format!("PTTL answered {v:?}"));
            };
            match (want, *pttl) {
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
        Expect::Range(off, want) => match bytes(v) {
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
        Expect::Len(verb, n) => match v {
            Value::Int(got) if *got as u64 == *n => Verdict::Ok,
            Value::Int(got) => wrong(format!("{verb} is {got}, expected {n}")),
            _ => wrong(format!("{verb} answered {v:?}")),
        },
        Expect::Fields(pairs) => {
            let got = items(v);
            for (i, (f, want)) in pairs.iter().enumerate() {
                match got.get(i).and_then(bytes) {
                    Some(g) if g == want.as_slice() => {}
                    Some(g) => return wrong(format!("field {}: {} expected, found {}", show(f), show(want), show(g))),
                    None => return wrong(format!("field {} is missing", show(f))),
                }
            }
            Verdict::Ok
        }
        Expect::List(start, want) => {
            let got = items(v);
            if got.len() > want.len() {
                return wrong(format!(
                    "longer than the snapshot's {} elements",
                    start + want.len() as u64
                ));
            }
            for (i, w) in want.iter().enumerate() {
                match got.get(i).and_then(bytes) {
                    Some(g) if g == w.as_slice() => {}
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
            let single = [v.clone()];
            let got = if want.len() == 1 && matches!(v, Value::Int(_)) {
                &single[..]
            } else {
                items(v)
            };
            for (i, m) in want.iter().enumerate() {
                if !matches!(got.get(i), Some(Value::Int(1))) {
                    return wrong(format!("member {} is missing", show(m)));
                }
            }
            Verdict::Ok
        }
        Expect::Scores(want) => {
            let single = [v.clone()];
            let got = if want.len() == 1 && !matches!(v, Value::Array(_)) {
                &single[..]
            } else {
                items(v)
            };
            for (i, (m, s)) in want.iter().enumerate() {
                if let Err(why) = same_score(*s, got.get(i).unwrap_or(&Value::Nil)) {
                    return wrong(format!("member {}: {why}", show(m)));
                }
            }
            Verdict::Ok
        }
        Expect::Entries(want) => {
            let got = items(v);
            if got.len() != want.len() {
                return wrong(format!(
                    "{} entries from {} to {} expected, found {}",
                    want.len(),
                    String::from_utf8_lossy(&id(want[0].0)),
                    String::from_utf8_lossy(&id(want[want.len() - 1].0)),
                    got.len()
                ));
            }
            for ((wid, wfields), g) in want.iter().zip(got) {
                let parts = items(g);
                let gid = parts.first().and_then(bytes).unwrap_or_default();
                let gfields: Vec<&[u8]> = parts
                    .get(1)
                    .map(items)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(bytes)
                    .collect();
                let wflat: Vec<&[u8]> = wfields.iter().flat_map(|(f, v)| [f.as_slice(), v.as_slice()]).collect();
                if gid != id(*wid).as_slice() || gfields != wflat {
                    return wrong(format!("entry {} differs", String::from_utf8_lossy(&id(*wid))));
                }
            }
            Verdict::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn scores_compare_bit_for_bit() {
        let e = Expect::Scores(vec![(b"m".to_vec(), -0.0)]);
        assert_eq!(judge(&e, &Value::Array(vec![bulk("-0")]), 0, 0), Verdict::Ok);
        assert!(matches!(
            judge(&e, &Value::Array(vec![bulk("0")]), 0, 0),
            Verdict::WrongValue(_)
        ));
        let third = Expect::Scores(vec![(b"m".to_vec(), 1.0 / 3.0)]);
        assert_eq!(
            judge(&third, &Value::Array(vec![bulk("0.33333333333333331")]), 0, 0),
            Verdict::Ok
        );
        assert!(matches!(
            judge(&third, &Value::Array(vec![bulk("0.333333")]), 0, 0),
            Verdict::WrongValue(_)
        ));
        let inf = Expect::Scores(vec![(b"m".to_vec(), f64::NEG_INFINITY)]);
        assert_eq!(judge(&inf, &Value::Array(vec![bulk("-inf")]), 0, 0), Verdict::Ok);
    }

    #[test]
    fn ttls_within_the_tolerance() {
        let e = Expect::Ttl(Some(10_000));
        assert_eq!(judge(&e, &Value::Int(5_000), 4_000, 2_000), Verdict::Ok);
        assert!(matches!(
            judge(&e, &Value::Int(50_000), 4_000, 2_000),
            Verdict::WrongTtl(_)
        ));
        assert!(matches!(judge(&e, &Value::Int(-1), 4_000, 2_000), Verdict::WrongTtl(_)));
        assert_eq!(judge(&Expect::Ttl(None), &Value::Int(-2), 0, 0), Verdict::Missing);
    }
}
