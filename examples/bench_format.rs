//! Benchmark of the snapshot format (issue: "encode+compress and decompress+decode throughput on
//! one core at the default level", and snapshot size against Redis' RDB). Run through
//! `bench/format.sh`, which pins it to one core and loads the same data into redis-server.
//!
//! `bench_format --out DIR [--resp FILE] [--keys N] [--seed S] [--level L]` generates a reproducible mixed
//! dataset (fixed-seed PRNG), writes it as a snapshot into DIR, timing the writer, then reads it
//! back on one thread, timing the reader; with `--resp` it also writes the same data as Redis
//! commands for `redis-cli --pipe`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kvferry::format::reader::ReadMode;
use kvferry::format::record::*;
use kvferry::format::snapshot::*;

/// The clock of the dataset: expiries are relative to 2026-11-30, in the future of the runs.
const BASE_MS: u64 = 1_795_996_800_000;
/// Value bytes per part when a collection is split (what export will use).
const PART_BYTES: usize = 1 << 20;

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "order",
    "status",
    "active",
    "pending",
    "shipped",
    "user",
    "session",
    "cart",
    "price",
    "amount",
    "currency",
    "EUR",
    "USD",
    "country",
    "DE",
    "FR",
    "CN",
    "city",
    "Berlin",
    "Paris",
    "Shanghai",
    "email",
    "example.com",
    "mobile",
    "android",
    "ios",
    "web",
    "true",
    "false",
    "null",
    "created",
    "updated",
];

fn word(r: &mut Rng) -> &'static str {
    WORDS[r.below(WORDS.len() as u64) as usize]
}

/// A JSON-ish document of about `len` bytes: realistic redundancy, neither random nor constant.
fn doc(r: &mut Rng, len: usize) -> Vec<u8> {
    let mut s = String::from("{");
    while s.len() < len {
        let v = match r.below(3) {
            0 => format!("\"{}\"", word(r)),
            1 => r.below(1_000_000).to_string(),
            _ => format!("\"{}-{:x}\"", word(r), r.next() & 0xff_ffff),
        };
        s.push_str(&format!("\"{}\":{v},", word(r)));
    }
    s.push('}');
    s.into_bytes()
}

/// Field-value pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Clone)]
enum Val {
    Str(Vec<u8>),
    Hash(Pairs),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Stream(Vec<(u64, Pairs)>),
}

struct Key {
    key: Vec<u8>,
    expire: Option<u64>,
    val: Val,
}

fn short(r: &mut Rng) -> Vec<u8> {
    format!("{}:{}", word(r), r.below(100_000)).into_bytes()
}

/// The standard mixed dataset: `n` keys across all types, 25% with an expiry, plus one big
/// collection of each kind (split into parts like an export splits them).
fn dataset(n: u64, seed: u64) -> Vec<Key> {
    let mut r = Rng(seed | 1);
    let mut keys = Vec::with_capacity(n as usize + 5);
    for i in 0..n {
        let kind = r.below(100);
        let (prefix, val) = match kind {
            0..=59 => {
                let len = r.range(20, 600) as usize;
                ("session", Val::Str(doc(&mut r, len)))
            }
            60..=74 => (
                "user",
                Val::Hash(
                    (0..r.range(3, 20))
                        .map(|j| (format!("{}_{j}", word(&mut r)).into_bytes(), short(&mut r)))
                        .collect(),
                ),
            ),
            75..=84 => ("log", Val::List((0..r.range(3, 40)).map(|_| doc(&mut r, 40)).collect())),
            85..=92 => ("tags", Val::Set((0..r.range(3, 40)).map(|_| short(&mut r)).collect())),
            93..=98 => (
                "rank",
                Val::ZSet(
                    (0..r.range(3, 40))
                        .map(|_| (short(&mut r), r.below(10_000) as f64 / 4.0))
                        .collect(),
                ),
            ),
            _ => (
                "events",
                Val::Stream(
                    (0..r.range(3, 30))
                        .map(|j| {
                            (
                                BASE_MS - 1_000_000 + j * 7,
                                vec![
                                    (b"type".to_vec(), word(&mut r).as_bytes().to_vec()),
                                    (b"payload".to_vec(), doc(&mut r, 60)),
                                ],
                            )
                        })
                        .collect(),
                ),
            ),
        };
        let expire = (r.below(4) == 0).then(|| BASE_MS + r.range(3_600_000, 30 * 86_400_000));
        keys.push(Key {
            key: format!("{prefix}:{i}:{}", word(&mut r)).into_bytes(),
            expire,
            val,
        });
    }
    let big = 1_000_000u64;
    keys.push(Key {
        key: b"big:hash".to_vec(),
        expire: None,
        val: Val::Hash(
            (0..big)
                .map(|i| (format!("field:{i}").into_bytes(), short(&mut r)))
                .collect(),
        ),
    });
    keys.push(Key {
        key: b"big:list".to_vec(),
        expire: None,
        val: Val::List((0..big).map(|_| short(&mut r)).collect()),
    });
    keys.push(Key {
        key: b"big:set".to_vec(),
        expire: None,
        val: Val::Set((0..big).map(|i| format!("member:{i}").into_bytes()).collect()),
    });
    keys.push(Key {
        key: b"big:zset".to_vec(),
        expire: None,
        val: Val::ZSet(
            (0..big)
                .map(|i| (format!("player:{i}").into_bytes(), (r.below(1 << 40) as f64) / 1024.0))
                .collect(),
        ),
    });
    keys
}

fn pairs(v: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    v.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect()
}

/// Splits a collection into parts of about PART_BYTES of value bytes.
fn split<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, it) in items.iter().enumerate() {
        bytes += size(it);
        if bytes >= PART_BYTES {
            parts.push(&items[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < items.len() || parts.is_empty() {
        parts.push(&items[start..]);
    }
    parts
}

fn records(k: &Key) -> Vec<KeyRecord<'_>> {
    let values: Vec<Value> = match &k.val {
        Val::Str(s) => vec![Value::String(s)],
        Val::Hash(h) => split(h, |(f, v)| f.len() + v.len())
            .into_iter()
            .map(|c| Value::Hash(pairs(c)))
            .collect(),
        Val::List(l) => split(l, |e| e.len())
            .into_iter()
            .map(|c| Value::List(c.iter().map(|e| e.as_slice()).collect()))
            .collect(),
        Val::Set(l) => split(l, |e| e.len())
            .into_iter()
            .map(|c| Value::Set(c.iter().map(|e| e.as_slice()).collect()))
            .collect(),
        Val::ZSet(z) => split(z, |(m, _)| m.len() + 8)
            .into_iter()
            .map(|c| Value::ZSet(c.iter().map(|(m, s)| (m.as_slice(), *s)).collect()))
            .collect(),
        Val::Stream(s) => {
            let entries = s
                .iter()
                .enumerate()
                .map(|(j, (ms, f))| StreamEntry {
                    id: StreamId { ms: *ms, seq: j as u64 },
                    fields: pairs(f),
                })
                .collect::<Vec<_>>();
            let last = entries.last().map(|e| e.id).unwrap_or(StreamId { ms: 0, seq: 1 });
            vec![Value::Stream {
                entries,
                meta: Some(StreamMeta {
                    last_id: last,
                    entries_added: Some(s.len() as u64),
                    max_deleted_id: None,
                    groups: vec![],
                }),
            }]
        }
    };
    key_parts(0, &k.key, 0, k.expire, values).collect()
}

/// One RESP command (an array of bulk strings).
fn resp(out: &mut impl Write, args: &[&[u8]]) -> std::io::Result<()> {
    write!(out, "*{}\r\n", args.len())?;
    for a in args {
        write!(out, "${}\r\n", a.len())?;
        out.write_all(a)?;
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// The same data as Redis write commands, in chunks of 1000 elements.
fn write_resp(keys: &[Key], path: &PathBuf) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for k in keys {
        let key = k.key.as_slice();
        match &k.val {
            Val::Str(s) => resp(&mut out, &[b"SET", key, s])?,
            Val::Hash(h) => {
                for c in h.chunks(1000) {
                    let mut a: Vec<&[u8]> = vec![b"HSET", key];
                    c.iter().for_each(|(f, v)| a.extend([f.as_slice(), v.as_slice()]));
                    resp(&mut out, &a)?;
                }
            }
            Val::List(l) | Val::Set(l) => {
                let cmd: &[u8] = if matches!(k.val, Val::List(_)) {
                    b"RPUSH"
                } else {
                    b"SADD"
                };
                for c in l.chunks(1000) {
                    let mut a: Vec<&[u8]> = vec![cmd, key];
                    a.extend(c.iter().map(|e| e.as_slice()));
                    resp(&mut out, &a)?;
                }
            }
            Val::ZSet(z) => {
                for c in z.chunks(1000) {
                    let scores: Vec<String> = c.iter().map(|(_, s)| format!("{s:?}")).collect();
                    let mut a: Vec<&[u8]> = vec![b"ZADD", key];
                    c.iter()
                        .zip(&scores)
                        .for_each(|((m, _), s)| a.extend([s.as_bytes(), m.as_slice()]));
                    resp(&mut out, &a)?;
                }
            }
            Val::Stream(s) => {
                for (j, (ms, fields)) in s.iter().enumerate() {
                    let id = format!("{ms}-{j}");
                    let mut a: Vec<&[u8]> = vec![b"XADD", key, id.as_bytes()];
                    fields.iter().for_each(|(f, v)| a.extend([f.as_slice(), v.as_slice()]));
                    resp(&mut out, &a)?;
                }
            }
        }
        if let Some(at) = k.expire {
            resp(&mut out, &[b"PEXPIREAT", key, at.to_string().as_bytes()])?;
        }
    }
    out.flush()
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    // After the command name: field 3 (state) is index 0, so utime (14) and stime (15) are 11, 12.
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut out, mut resp_path, mut n, mut seed) = (None, None, 1_000_000u64, 42u64);
    let mut opts = SnapshotOptions::default();
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(val())),
            "--resp" => resp_path = Some(PathBuf::from(val())),
            "--keys" => n = val().parse().expect("--keys N"),
            "--seed" => seed = val().parse().expect("--seed S"),
            "--level" => opts.writer.level = val().parse().expect("--level L"),
            _ => panic!("usage: bench_format --out DIR [--resp FILE] [--keys N] [--seed S] [--level L]"),
        }
    }
    let out = out.expect("--out DIR");
    let t = Instant::now();
    let keys = dataset(n, seed);
    eprintln!("generated {} keys in {:.1}s", keys.len(), t.elapsed().as_secs_f64());

    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let spec = ShardSpec {
        id: "bench-db0".into(),
        source: "generated".into(),
        source_server: None,
        db: 0,
    };
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut sink = ShardSink::new(&out, spec, opts.clone(), BASE_MS).unwrap();
    for k in &keys {
        for r in records(k) {
            sink.push(&r).unwrap();
        }
    }
    let entry = sink.finish().unwrap();
    let (write_s, write_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    // finish() waits for the file to reach the disk (fsync): wall time includes it, CPU time not.
    write_manifest(&out, &Manifest::new(BASE_MS, opts.writer_name, vec![entry.clone()])).unwrap();
    let raw = entry.raw_bytes as f64;
    let file: u64 = entry.parts.iter().map(|p| p.bytes).sum();

    let snap = Snapshot::open(&out).unwrap();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut recs = 0u64;
    for pi in 0..entry.parts.len() {
        let r = snap.open_part(0, pi, ReadMode::Mmap).unwrap();
        for b in r.blocks() {
            for rec in b.unwrap().records() {
                rec.unwrap();
                recs += 1;
            }
        }
    }
    let (read_s, read_cpu) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert_eq!(recs, entry.records);

    println!("zstd level           {}", opts.writer.level);
    println!("keys                 {}", entry.keys);
    println!("records              {}", entry.records);
    println!("raw record bytes     {:.1} MB", raw / 1e6);
    println!(
        "snapshot file bytes  {:.1} MB (ratio {:.2})",
        file as f64 / 1e6,
        raw / file as f64
    );
    println!("write (encode+compress): {write_s:.2} s wall, {write_cpu:.2} s CPU -> {:.0} MB/s per CPU-second, {:.0} MB/s wall", raw / 1e6 / write_cpu.max(0.01), raw / 1e6 / write_s);
    println!("read (decompress+decode): {read_s:.2} s wall, {read_cpu:.2} s CPU -> {:.0} MB/s per CPU-second, {:.0} MB/s wall", raw / 1e6 / read_cpu.max(0.01), raw / 1e6 / read_s);
    println!("snapshot_bytes={file}");
    if let Some(p) = resp_path {
        write_resp(&keys, &p).unwrap();
        eprintln!("wrote {}", p.display());
    }
}
