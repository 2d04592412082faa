//! The canonical JSON rendering of records (SPEC §10), which `kvferry cat` prints and every reader
//! of the fixtures must reproduce byte for byte. Written by hand rather than through serde_json so
//! that each byte is the one the spec names.

use std::fmt::Write as _;

use base64::Engine as _;

use super::consts::*;
use super::record::{KeyRecord, StreamId, StreamMeta, Value};

/// Appends the rendering of `rec` from shard `shard`, with its newline, to `out` (F-JSON-1).
pub fn render_record(out: &mut String, shard: &str, rec: &KeyRecord) {
    out.push_str("{\"shard\":");
    string(out, shard);
    let _ = write!(out, ",\"db\":{},\"key\":", rec.db);
    bytes(out, rec.key);
    out.push_str(",\"type\":");
    string(out, rec.key_type().name());
    let _ = write!(
        out,
        ",\"part\":{},\"last\":{},\"expire_at_ms\":",
        rec.part,
        rec.is_last()
    );
    opt_uint(out, rec.expire_at_ms);
    out.push_str(",\"flags\":[");
    let mut names = Vec::new();
    if rec.flags & FLAG_PIKA_HLL != 0 {
        names.push("pika_hll".to_string());
    }
    if rec.flags & FLAG_MULTI_TYPE != 0 {
        names.push("multi_type".to_string());
    }
    names.extend(
        (16..32)
            .filter(|b| rec.flags & (1 << b) != 0)
            .map(|b| format!("bit{b}")),
    );
    list(out, &names, |out, n| string(out, n));
    out.push_str("],\"value\":");
    value(out, &rec.value);
    out.push_str("}\n");
}

fn list<T>(out: &mut String, items: &[T], mut f: impl FnMut(&mut String, &T)) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, item);
    }
}

fn pairs(out: &mut String, p: &[(&[u8], &[u8])]) {
    out.push('[');
    list(out, p, |out, (f, v)| {
        out.push('[');
        bytes(out, f);
        out.push(',');
        bytes(out, v);
        out.push(']');
    });
    out.push(']');
}

fn value(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => bytes(out, s),
        Value::Hash(p) => pairs(out, p),
        Value::List(items) | Value::Set(items) => {
            out.push('[');
            list(out, items, |out, b| bytes(out, b));
            out.push(']');
        }
        Value::ZSet(members) => {
            out.push('[');
            list(out, members, |out, (m, s)| {
                out.push('[');
                bytes(out, m);
                out.push(',');
                score(out, *s);
                out.push(']');
            });
            out.push(']');
        }
        Value::Stream { entries, meta } => {
            out.push_str("{\"entries\":[");
            list(out, entries, |out, e| {
                out.push('[');
                id(out, e.id);
                out.push(',');
                pairs(out, &e.fields);
                out.push(']');
            });
            out.push_str("],\"meta\":");
            match meta {
                None => out.push_str("null"),
                Some(m) => stream_meta(out, m),
            }
            out.push('}');
        }
    }
}

fn stream_meta(out: &mut String, m: &StreamMeta) {
    out.push_str("{\"last_id\":");
    id(out, m.last_id);
    out.push_str(",\"entries_added\":");
    opt_uint(out, m.entries_added);
    out.push_str(",\"max_deleted_id\":");
    match m.max_deleted_id {
        Some(i) => id(out, i),
        None => out.push_str("null"),
    }
    out.push_str(",\"groups\":[");
    list(out, &m.groups, |out, g| {
        out.push_str("{\"name\":");
        bytes(out, g.name);
        out.push_str(",\"last_delivered_id\":");
        id(out, g.last_delivered_id);
        out.push_str(",\"entries_read\":");
        opt_uint(out, g.entries_read);
        out.push_str(",\"consumers\":[");
        list(out, &g.consumers, |out, c| {
            out.push_str("{\"name\":");
            bytes(out, c.name);
            out.push_str(",\"seen_time_ms\":");
            opt_uint(out, c.seen_time_ms);
            out.push('}');
        });
        out.push_str("],\"pending\":[");
        list(out, &g.pending, |out, p| {
            out.push_str("{\"id\":");
            id(out, p.id);
            out.push_str(",\"consumer\":");
            bytes(out, p.consumer);
            let _ = write!(
                out,
                ",\"delivery_time_ms\":{},\"delivery_count\":{}}}",
                p.delivery_time_ms, p.delivery_count
            );
        });
        out.push_str("]}");
    });
    out.push_str("]}");
}

fn id(out: &mut String, i: StreamId) {
    let _ = write!(out, "\"{}-{}\"", i.ms, i.seq);
}

fn opt_uint(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// BYTES of F-JSON-1: a JSON string when valid UTF-8, else `{"base64":"..."}`.
pub fn bytes(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => string(out, s),
        Err(_) => {
            out.push_str("{\"base64\":\"");
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push_str("\"}");
        }
    }
}

/// A JSON string with exactly the escapes of F-JSON-1.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// SCORE of F-JSON-2: ECMAScript's Number::toString, with -0 and non-finite values pinned.
pub fn score(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("\"nan\"");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "\"inf\"" } else { "\"-inf\"" });
    } else if x == 0.0 {
        out.push_str(if x.is_sign_negative() { "-0" } else { "0" });
    } else {
        out.push_str(&es_number(x));
    }
}

/// Number::toString (ECMA-262 §6.1.6.1.20) for finite, non-zero `x`, from the shortest
/// round-trip digits that Rust's `{:e}` gives.
fn es_number(x: f64) -> String {
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("BUG: {:e} always has an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i64;
    let n = exp.parse::<i64>().expect("BUG: {:e} exponent is an integer") + 1;
    let sign = if x < 0.0 { "-" } else { "" };
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let esign = if e >= 0 { '+' } else { '-' };
        let frac = if k > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        format!("{}{frac}e{esign}{}", &digits[..1], e.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> String {
        let mut o = String::new();
        score(&mut o, x);
        o
    }

    /// The examples of F-JSON-2, and the boundaries of each of its four cases.
    #[test]
    fn scores_follow_ecmascript() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (100.0, "100"),
            (123000.0, "123000"),
            (1.5, "1.5"),
            (123.456, "123.456"),
            (0.1, "0.1"),
            (0.000123, "0.000123"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e16, "10000000000000000"),
            (2f64.powi(70), "1.1805916207174113e+21"),
            (5e-324, "5e-324"),
            (1e20, "100000000000000000000"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5, "-2.5"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::INFINITY, "\"inf\""),
            (f64::NEG_INFINITY, "\"-inf\""),
            (f64::NAN, "\"nan\""),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (x, want) in cases {
            assert_eq!(s(*x), *want, "score {x:e}");
        }
    }

    #[test]
    fn strings_escape_exactly_the_spec_set() {
        let mut o = String::new();
        string(&mut o, "a\"b\\c\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é\u{2028}/");
        assert_eq!(o, "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é\u{2028}/\"");
        let mut o = String::new();
        bytes(&mut o, &[0xff, 0x00, b'a']);
        assert_eq!(o, "{\"base64\":\"/wBh\"}");
    }
}
