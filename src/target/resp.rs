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
pub fn decimal_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends the header of a command of `n` arguments; the arguments follow with [`bulk`].
pub fn header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string.
pub fn bulk(out: &mut Vec<u8>, a: &[u8]) {
    out.push(b'$');
    decimal(out, a.len());
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
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{f:?}")
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
