//! RESP encoding of the commands kvferry writes, and the text form of zset scores.

/// Appends one command, a RESP array of bulk strings, to `out`.
pub fn pack(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(16 + args.iter().map(|a| bulk_len(a.len())).sum::<usize>());
    header(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

/// Appends `n` in decimal, without allocating (this runs once per argument written).
fn decimal(out: &mut Vec<u8>, n: usize) {
    decimal_u64(out, n as u64)
}

/// [`decimal`] of a u64 (stream ids).
pub fn decimal_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the header of a command of `n` arguments; the arguments follow with [`bulk`].
pub fn header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string.
pub fn bulk(out: &mut Vec<u8>, a: &[u8]) {
    // Reserved once: this runs for every argument of every command written (issue 13).
    let mut n = itoa::Buffer::new();
    let n = n.format(a.len()).as_bytes();
    out.reserve(n.len() + a.len() + 5);
    out.push(b'$');
    out.extend_from_slice(n);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(a);
    out.extend_from_slice(b"\r\n");
}

/// The arguments of a command packed by [`pack`] (for error reports; a malformed command gives
/// what could be read).
pub fn args(mut c: &[u8]) -> Vec<&[u8]> {
    fn line(c: &[u8]) -> Option<(usize, &[u8])> {
        let end = c.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&c[1..end]).ok()?.parse().ok()?;
        Some((n, &c[end + 2..]))
    }
    let mut out = Vec::new();
    let Some((n, rest)) = line(c) else { return out };
    c = rest;
    for _ in 0..n {
        let Some((len, rest)) = line(c) else { break };
        let Some(a) = rest.get(..len) else { break };
        out.push(a);
        c = rest.get(len + 2..).unwrap_or_default();
    }
    out
}

/// The size of `a` as a bulk string.
pub fn bulk_len(a: usize) -> usize {
    a + 5 + decimal_len(a)
}

fn decimal_len(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A score as text that every server parses back to the identical double (issue 4): the
/// shortest representation that round-trips (Rust's float formatting guarantees it, 17
/// significant digits at most), `-0` kept as `-0.0`, and `inf`, `-inf`, `nan`, which Redis,
/// Kvrocks and Pika accept (NaN only Pika; the others reject it, see `build`).
pub fn score(f: f64) -> String {
    String::from_utf8_lossy(ScoreText::new(f).as_bytes()).into_owned()
}

/// [`score`] without allocating, for the ZADDs of an import (one per member).
pub struct ScoreText {
    buf: [u8; 32],
    len: usize,
}

impl ScoreText {
    pub fn new(f: f64) -> ScoreText {
        use std::fmt::Write;
        let mut t = ScoreText { buf: [0; 32], len: 0 };
        if f.is_nan() {
            t.push(b"nan");
        } else if f.is_infinite() {
            t.push(if f > 0.0 { b"inf" } else { b"-inf" });
        } else {
            // The longest a finite double prints is 24 bytes ("-2.2250738585072014e-308").
            write!(t, "{f:?}").expect("BUG: a double's text is longer than 32 bytes");
        }
        t
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, b: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) else {
            return false;
        };
        dst.copy_from_slice(b);
        self.len += b.len();
        true
    }
}

impl std::fmt::Write for ScoreText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.push(s.as_bytes()) {
            Ok(())
        } else {
            Err(std::fmt::Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_read_back() {
        let mut c = Vec::new();
        pack(&mut c, &[b"XCLAIM", b"s", b"", b"a\r\nb"]);
        assert_eq!(args(&c), [&b"XCLAIM"[..], b"s", b"", b"a\r\nb"]);
    }

    #[test]
    fn scores_round_trip() {
        for f in [
            0.0,
            -0.0,
            1.0 / 3.0,
            0.1,
            1e300,
            -1e-300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            123456789.125,
        ] {
            let s = score(f);
            let back: f64 = s.parse().unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f} -> {s}");
        }
        assert_eq!(score(-0.0), "-0.0");
        assert_eq!(score(f64::INFINITY), "inf");
        assert_eq!(score(f64::NEG_INFINITY), "-inf");
        assert_eq!(score(f64::NAN), "nan");
    }

    #[test]
    fn score_text_fits_every_double() {
        // The longest texts: subnormals and 17 significant digits with a negative exponent.
        for f in [
            -f64::MIN_POSITIVE,
            f64::MIN,
            -f64::from_bits(1),
            -f64::from_bits(0x000F_FFFF_FFFF_FFFF),
            -1.0 / 3.0 * 1e-5,
        ] {
            assert_eq!(ScoreText::new(f).as_bytes(), format!("{f:?}").as_bytes());
        }
        // And any bit pattern at all.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            let t = ScoreText::new(f);
            if f.is_finite() {
                assert_eq!(t.as_bytes(), format!("{f:?}").as_bytes());
            }
        }
    }

    #[test]
    fn packs_resp() {
        let mut out = Vec::new();
        pack(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        let mut out = Vec::new();
        bulk(&mut out, &[b'x'; 1234]);
        assert!(out.starts_with(b"$1234\r\nx"));
        assert_eq!(bulk_len(0), 6);
        assert_eq!(bulk_len(10), 17);
    }
}
