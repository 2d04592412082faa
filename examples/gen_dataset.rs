//! The benchmark dataset of `bench/export.sh`, reproducible from a seed: writes Redis protocol
//! to stdout, for `redis-cli --pipe`.
//!
//! ```text
//! cargo run --release --example gen_dataset -- load  [--keys N] [--big M] [--hash-bytes B] [--seed S]
//!                                                    [--no-streams] [--binary] [--documents]
//! cargo run --release --example gen_dataset -- reads [same options]
//! ```
//! `load` writes the data; `reads` writes one read command per key of the same data (GET,
//! HGETALL, LRANGE 0 -1, SMEMBERS, ZRANGE 0 -1 WITHSCORES, XRANGE - +), and windows of 1000 for
//! the big list, zset and stream: what the server's read limit is measured with (the big hashes
//! and set are read by HSCAN/SSCAN chains that bench/export.sh adds).
//!
//! The mixed dataset: N keys, by key number: 40% strings (10-200 bytes), 20% hashes, 10% each
//! lists, sets, zsets and streams (5-20 elements of 5-40 bytes); every fourth key has a TTL (7
//! days, so nothing expires during a run). With `--big M`: a hash, a list, a set and a zset of M
//! members and a stream of M/5 entries (hash values and list elements text or binary as below). With `--hash-bytes B`: one more hash of B bytes in 1 KiB
//! values (the memory benchmark's 2 GB hash).
//!
//! `--no-streams` puts strings where the streams were (50% strings) and leaves out the big
//! stream: the mix that tools without streams (Pika 3.x, redis-dump-load) can hold. `--binary`
//! makes every value and element bytes 0-255 (key names, hash fields and scores stay text): the
//! case of serialised objects, which tools that go through JSON or text cannot hold. `--documents`
//! makes them JSON documents of words and numbers (as applications store records): data that
//! compresses as real data does, where the default's random letters (4.7 bits a byte) barely
//! compress at all. `--hmset`
//! writes hashes with HMSET (Pika's HSET takes one field).

use std::io::{BufWriter, Write};

/// splitmix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| b'a' + (self.next() % 26) as u8).collect()
    }

    /// A JSON document of about `n` bytes, of words and numbers, as applications store records:
    /// redundant, neither random nor constant (the same kind as examples/bench_format.rs's).
    fn document(&mut self, n: usize) -> Vec<u8> {
        let mut d = b"{".to_vec();
        while d.len() + 1 < n {
            let field = WORDS[(self.next() % WORDS.len() as u64) as usize];
            let word = WORDS[(self.next() % WORDS.len() as u64) as usize];
            let v = match self.next() % 3 {
                0 => format!("\"{word}\""),
                1 => (self.next() % 1_000_000).to_string(),
                _ => format!("\"{word}-{:x}\"", self.next() & 0xff_ffff),
            };
            d.extend(format!("\"{field}\":{v},").bytes());
        }
        d.truncate(n.max(2) - 1);
        d.push(b'}');
        d
    }

    /// `n` bytes of any value, always with a zero byte and one that is not UTF-8.
    fn binary(&mut self, n: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
        if n >= 2 {
            v[0] = 0;
            v[n - 1] = 0xff;
        }
        v
    }
}

/// The words of `--documents` values.
const WORDS: &[&str] = &[
    "id", "name", "user", "email", "status", "active", "created", "updated", "price", "count", "order", "item", "cart",
    "session", "token", "city", "country", "street", "phone", "score", "level", "group", "role", "admin", "guest",
    "amount", "currency", "euro", "dollar", "title", "body", "tags", "red", "green", "blue", "small", "large", "open",
    "closed", "pending",
];

/// Writes one command in RESP.
fn cmd(out: &mut impl Write, args: &[&[u8]]) -> std::io::Result<()> {
    write!(out, "*{}\r\n", args.len())?;
    for a in args {
        write!(out, "${}\r\n", a.len())?;
        out.write_all(a)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    String,
    Hash,
    List,
    Set,
    ZSet,
    Stream,
}

fn kind(i: u64, streams: bool) -> Kind {
    match i % 10 {
        9 if !streams => Kind::String,
        0..=3 => Kind::String,
        4 | 5 => Kind::Hash,
        6 => Kind::List,
        7 => Kind::Set,
        8 => Kind::ZSet,
        _ => Kind::Stream,
    }
}

const TTL_MS: &[u8] = b"604800000";

struct Opts {
    reads: bool,
    keys: u64,
    big: u64,
    hash_bytes: u64,
    seed: u64,
    streams: bool,
    binary: bool,
    documents: bool,
    hmset: bool,
}

impl Opts {
    /// The command that sets several hash fields: HSET, or HMSET for Pika (its HSET takes one).
    fn hset(&self) -> &'static [u8] {
        if self.hmset {
            b"HMSET"
        } else {
            b"HSET"
        }
    }

    /// A value of `n` bytes, text or binary as the options say.
    fn value(&self, rng: &mut Rng, n: usize) -> Vec<u8> {
        if self.binary {
            rng.binary(n)
        } else if self.documents {
            rng.document(n)
        } else {
            rng.bytes(n)
        }
    }
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let reads = match args.next().as_deref() {
        Some("load") => false,
        Some("reads") => true,
        _ => return Err(
            "usage: gen_dataset load|reads [--keys N] [--big M] [--hash-bytes B] [--seed S] [--no-streams] [--binary] [--documents] [--hmset]"
                .into(),
        ),
    };
    let mut o = Opts {
        reads,
        keys: 1_000_000,
        big: 0,
        hash_bytes: 0,
        seed: 1,
        streams: true,
        binary: false,
        documents: false,
        hmset: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--no-streams" => {
                o.streams = false;
                continue;
            }
            "--binary" => {
                o.binary = true;
                continue;
            }
            "--hmset" => {
                o.hmset = true;
                continue;
            }
            "--documents" => {
                o.documents = true;
                continue;
            }
            _ => {}
        }
        let v: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--keys" => o.keys = v,
            "--big" => o.big = v,
            "--hash-bytes" => o.hash_bytes = v,
            "--seed" => o.seed = v,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(o)
}

fn small_key(out: &mut impl Write, rng: &mut Rng, i: u64, o: &Opts) -> std::io::Result<()> {
    let reads = o.reads;
    let key = format!("key:{i:09}").into_bytes();
    let k = key.as_slice();
    let n = rng.range(5, 20);
    let mut elements = || -> Vec<Vec<u8>> { (0..n).map(|_| o.value(rng, rng_len(i, 5, 40))).collect() };
    match (kind(i, o.streams), reads) {
        (Kind::String, false) => {
            let v = o.value(rng, rng_len(i, 10, 200));
            cmd(out, &[b"SET", k, &v])?;
        }
        (Kind::Hash, false) => {
            let e = elements();
            let mut a: Vec<&[u8]> = vec![o.hset(), k];
            let fields: Vec<Vec<u8>> = (0..e.len()).map(|j| format!("f{j}").into_bytes()).collect();
            for (f, v) in fields.iter().zip(&e) {
                a.push(f);
                a.push(v);
            }
            cmd(out, &a)?;
        }
        (Kind::List | Kind::Set, false) => {
            let e = elements();
            let verb: &[u8] = if matches!(kind(i, o.streams), Kind::List) {
                b"RPUSH"
            } else {
                b"SADD"
            };
            let mut a: Vec<&[u8]> = vec![verb, k];
            a.extend(e.iter().map(Vec::as_slice));
            cmd(out, &a)?;
        }
        (Kind::ZSet, false) => {
            let e = elements();
            let scores: Vec<Vec<u8>> = (0..e.len())
                .map(|j| format!("{}.5", j as i64 - 3).into_bytes())
                .collect();
            let mut a: Vec<&[u8]> = vec![b"ZADD", k];
            for (s, m) in scores.iter().zip(&e) {
                a.push(s);
                a.push(m);
            }
            cmd(out, &a)?;
        }
        (Kind::Stream, false) => {
            for (j, v) in elements().iter().enumerate() {
                let id = format!("{}-1", j + 1).into_bytes();
                cmd(out, &[b"XADD", k, &id, b"f", v])?;
            }
        }
        (Kind::String, true) => cmd(out, &[b"GET", k])?,
        (Kind::Hash, true) => cmd(out, &[b"HGETALL", k])?,
        (Kind::List, true) => cmd(out, &[b"LRANGE", k, b"0", b"-1"])?,
        (Kind::Set, true) => cmd(out, &[b"SMEMBERS", k])?,
        (Kind::ZSet, true) => cmd(out, &[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"])?,
        (Kind::Stream, true) => cmd(out, &[b"XRANGE", k, b"-", b"+"])?,
    }
    if !reads && i % 4 == 0 {
        cmd(out, &[b"PEXPIRE", k, TTL_MS])?;
    }
    Ok(())
}

/// A length in `lo..=hi` that depends on the key only.
fn rng_len(i: u64, lo: u64, hi: u64) -> usize {
    Rng(i).range(lo, hi) as usize
}

fn big_keys(out: &mut impl Write, rng: &mut Rng, m: u64, o: &Opts) -> std::io::Result<()> {
    let (reads, streams) = (o.reads, o.streams);
    if reads {
        // In windows of 1000, as a reader that bounds its memory must read them (and because
        // redis-cli --pipe takes time quadratic in the size of one reply). The hash and the set
        // are read with HSCAN/SSCAN chains, whose cursors bench/export.sh asks the server for.
        for start in (0..m).step_by(1000) {
            let (a, b) = (start.to_string().into_bytes(), (start + 999).to_string().into_bytes());
            cmd(out, &[b"LRANGE", b"big:list", &a, &b])?;
            cmd(out, &[b"ZRANGE", b"big:zset", &a, &b, b"WITHSCORES"])?;
        }
        for start in (0..if streams { m / 5 } else { 0 }).step_by(1000) {
            let a = format!("{}-1", start + 1).into_bytes();
            let b = format!("{}-1", (start + 1000).min(m / 5)).into_bytes();
            cmd(out, &[b"XRANGE", b"big:stream", &a, &b])?;
        }
        return Ok(());
    }
    const BATCH: u64 = 1000;
    for start in (0..m).step_by(BATCH as usize) {
        let end = (start + BATCH).min(m);
        let members: Vec<Vec<u8>> = (start..end).map(|j| format!("member:{j:09}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (start..end).map(|_| o.value(rng, 20)).collect();
        let scores: Vec<Vec<u8>> = (start..end)
            .map(|j| format!("{}", j as f64 / 7.0).into_bytes())
            .collect();
        let mut h: Vec<&[u8]> = vec![o.hset(), b"big:hash"];
        let mut z: Vec<&[u8]> = vec![b"ZADD", b"big:zset"];
        for ((mb, v), s) in members.iter().zip(&values).zip(&scores) {
            h.extend([mb.as_slice(), v.as_slice()]);
            z.extend([s.as_slice(), mb.as_slice()]);
        }
        cmd(out, &h)?;
        cmd(out, &z)?;
        let mut l: Vec<&[u8]> = vec![b"RPUSH", b"big:list"];
        l.extend(values.iter().map(Vec::as_slice));
        cmd(out, &l)?;
        let mut s: Vec<&[u8]> = vec![b"SADD", b"big:set"];
        s.extend(members.iter().map(Vec::as_slice));
        cmd(out, &s)?;
    }
    for j in 0..if streams { m / 5 } else { 0 } {
        let id = format!("{}-1", j + 1).into_bytes();
        let v = o.value(rng, 20);
        cmd(out, &[b"XADD", b"big:stream", &id, b"f", &v])?;
    }
    Ok(())
}

fn huge_hash(out: &mut impl Write, rng: &mut Rng, bytes: u64, reads: bool) -> std::io::Result<()> {
    if reads {
        return Ok(()); // an HSCAN chain, from bench/export.sh
    }
    let fields = bytes / 1024;
    for start in (0..fields).step_by(100) {
        let names: Vec<Vec<u8>> = (start..(start + 100).min(fields))
            .map(|j| format!("field:{j:010}").into_bytes())
            .collect();
        let values: Vec<Vec<u8>> = names.iter().map(|_| rng.bytes(1024)).collect();
        let mut a: Vec<&[u8]> = vec![b"HSET", b"huge:hash"];
        for (f, v) in names.iter().zip(&values) {
            a.extend([f.as_slice(), v.as_slice()]);
        }
        cmd(out, &a)?;
    }
    Ok(())
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut rng = Rng(o.seed);
    let result = (|| {
        for i in 0..o.keys {
            small_key(&mut out, &mut rng, i, &o)?;
        }
        if o.big > 0 {
            big_keys(&mut out, &mut rng, o.big, &o)?;
        }
        if o.hash_bytes > 0 {
            huge_hash(&mut out, &mut rng, o.hash_bytes, o.reads)?;
        }
        out.flush()
    })();
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("gen_dataset: {e}");
            std::process::exit(1);
        }
    }
}
