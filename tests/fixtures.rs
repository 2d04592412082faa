//! The test vectors in `fixtures/` (SPEC §11): how each is made, and what every reader must do
//! with it. `KVFERRY_BLESS=1 cargo test --test fixtures` rewrites them; without it, the test
//! regenerates them in a temporary directory and requires every byte to match (the golden writer
//! test), so the writer cannot change the bytes on disk without the fixtures changing with it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kvferry::format::check::check;
use kvferry::format::consts::*;
use kvferry::format::record::*;
use kvferry::format::snapshot::*;
use kvferry::format::WriterOptions;

/// The injected clock: every fixture was "created" at 2026-11-30T00:00:00Z.
const CREATED: u64 = 1_795_996_800_000;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn opts(block_target: usize, part_target: u64) -> SnapshotOptions {
    SnapshotOptions {
        // Level 3, fixed: the fixtures pin bytes, not kvferry's default level.
        writer: WriterOptions { level: 3, block_target },
        part_target,
        writer_name: "kvferry fixtures".into(),
    }
}

fn spec(id: &str, db: u32) -> ShardSpec {
    ShardSpec {
        id: id.into(),
        source: "redis://127.0.0.1:6379".into(),
        source_server: Some("redis 7.0.15".into()),
        db,
    }
}

fn rec<'a>(db: u32, key: &'a [u8], expire: Option<u64>, value: Value<'a>) -> KeyRecord<'a> {
    KeyRecord {
        db,
        key,
        part: 0,
        flags: FLAG_LAST,
        expire_at_ms: expire,
        value,
    }
}

/// Writes shards (each a list of records) into `dir` and a manifest.
fn write_snapshot(dir: &Path, o: &SnapshotOptions, shards: Vec<(ShardSpec, Vec<KeyRecord>)>) -> Manifest {
    fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    for (spec, recs) in shards {
        let mut sink = ShardSink::new(dir, spec, o.clone(), CREATED).unwrap();
        for r in &recs {
            sink.push(r).unwrap();
        }
        entries.push(sink.finish().unwrap());
    }
    let m = Manifest::new(CREATED, o.writer_name.clone(), entries);
    write_manifest(dir, &m).unwrap();
    m
}

/// Writes one shard whose records are given already encoded (to break the format on purpose).
fn write_raw_snapshot(dir: &Path, raw: Vec<Vec<u8>>) {
    fs::create_dir_all(dir).unwrap();
    let o = opts(DEFAULT_BLOCK_TARGET, u64::MAX);
    let mut sink = ShardSink::new(dir, spec("src0-db0", 0), o.clone(), CREATED).unwrap();
    for r in &raw {
        sink.current_writer().unwrap().push_raw(r).unwrap();
    }
    let entry = sink.finish().unwrap();
    write_manifest(dir, &Manifest::new(CREATED, o.writer_name.clone(), vec![entry])).unwrap();
}

fn encode(r: &KeyRecord) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(&mut v);
    v
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&hay[..at], to, &hay[at + from.len()..]].concat()
}

fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(MANIFEST_NAME)).unwrap()).unwrap()
}

fn write_manifest_json(dir: &Path, v: &serde_json::Value) {
    let mut text = serde_json::to_vec_pretty(v).unwrap();
    text.push(b'\n');
    fs::write(dir.join(MANIFEST_NAME), text).unwrap();
}

/// After a deliberate edit of a file, makes the manifest agree with it again (size and digest), so
/// that the edit itself is the first thing a reader meets.
fn reseal(dir: &Path) {
    let mut m = read_manifest(dir);
    for s in m["shards"].as_array_mut().unwrap() {
        for p in s["parts"].as_array_mut().unwrap() {
            let path = dir.join(p["file"].as_str().unwrap());
            p["bytes"] = fs::metadata(&path).unwrap().len().into();
            p["sha256"] = sha256_file(&path).unwrap().into();
        }
    }
    let sum: u64 = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["parts"].as_array().unwrap())
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    m["totals"]["file_bytes"] = sum.into();
    write_manifest_json(dir, &m);
}

fn first_file(dir: &Path) -> PathBuf {
    dir.join(read_manifest(dir)["shards"][0]["parts"][0]["file"].as_str().unwrap())
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = fs::read(path).unwrap();
    f(&mut b);
    fs::write(path, b).unwrap();
}

fn le32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Rewrites the CRC of the header frame after its payload was edited.
fn fix_header_crc(b: &mut [u8]) {
    let len = le32_at(b, 4) as usize;
    let crc = crc32fast::hash(&b[8..8 + len - 4]);
    b[8 + len - 4..8 + len].copy_from_slice(&crc.to_le_bytes());
}

// ----- the good fixtures -----

fn good_minimal(dir: &Path) {
    write_snapshot(
        dir,
        &opts(DEFAULT_BLOCK_TARGET, u64::MAX),
        vec![(spec("src0-db0", 0), vec![rec(0, b"k", None, Value::String(b"v"))])],
    );
}

fn stream_value<'a>() -> Value<'a> {
    let id = |ms, seq| StreamId { ms, seq };
    Value::Stream {
        entries: vec![
            StreamEntry {
                id: id(1_700_000_000_000, 0),
                fields: vec![(b"temp", b"21.5"), (b"unit", b"C")],
            },
            StreamEntry {
                id: id(1_700_000_000_000, 1),
                fields: vec![(b"temp", b"\xff\xfe")],
            },
        ],
        meta: Some(StreamMeta {
            last_id: id(1_700_000_000_005, 0),
            entries_added: Some(7),
            max_deleted_id: Some(id(1_700_000_000_003, 0)),
            groups: vec![StreamGroup {
                name: b"workers",
                last_delivered_id: id(1_700_000_000_000, 1),
                entries_read: Some(2),
                consumers: vec![
                    StreamConsumer {
                        name: b"alice",
                        seen_time_ms: Some(1_795_996_700_000),
                    },
                    StreamConsumer {
                        name: b"bob",
                        seen_time_ms: None,
                    },
                ],
                pending: vec![StreamPending {
                    id: id(1_700_000_000_000, 1),
                    consumer: b"alice",
                    delivery_time_ms: 1_795_996_700_000,
                    delivery_count: 3,
                }],
            }],
        }),
    }
}

fn good_all_types(dir: &Path) {
    let scores = [
        1.0,
        -0.0,
        0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1.0 / 3.0,
        1e21,
        5e-324,
        -2.5e-7,
        123.456,
        f64::NAN,
    ];
    let names: Vec<String> = (0..scores.len()).map(|i| format!("m{i}")).collect();
    let zset: Vec<(&[u8], f64)> = names.iter().map(|n| n.as_bytes()).zip(scores).collect();
    let db0 = vec![
        rec(0, b"", None, Value::String(b"the empty key")),
        rec(
            0,
            b"user:1:name",
            Some(1_796_000_000_000),
            Value::String("Zoë \"quoted\" \\ tab\t nl\n bell\u{7} del\u{7f} \u{2028} 🦀".as_bytes()),
        ),
        rec(0, b"\xff\x00bin", None, Value::String(b"\x00\x01\x02\xfe")),
        rec(0, b"empty-value", None, Value::String(b"")),
        KeyRecord {
            flags: FLAG_LAST | FLAG_PIKA_HLL,
            ..rec(0, b"hll:visitors", None, Value::String(b"HYLL\x01\x00\x00"))
        },
        rec(
            0,
            b"hash:1",
            Some(1_796_000_000_001),
            Value::Hash(vec![
                (b"name", b"kvferry"),
                (b"\xc3\x28", b"invalid utf-8 field"),
                (b"empty", b""),
            ]),
        ),
        rec(0, b"list:1", None, Value::List(vec![b"a", b"b", b"a", b""])),
        rec(0, b"set:1", None, Value::Set(vec![b"x", b"\x80"])),
        rec(0, b"zset:scores", None, Value::ZSet(zset)),
        rec(0, b"stream:1", None, stream_value()),
        rec(
            0,
            b"stream:empty",
            None,
            Value::Stream {
                entries: vec![],
                meta: Some(StreamMeta {
                    last_id: StreamId { ms: 5, seq: 1 },
                    entries_added: None,
                    max_deleted_id: None,
                    groups: vec![],
                }),
            },
        ),
        KeyRecord {
            flags: FLAG_LAST | FLAG_MULTI_TYPE,
            ..rec(0, b"multi", None, Value::String(b"as string"))
        },
        KeyRecord {
            flags: FLAG_LAST | FLAG_MULTI_TYPE,
            ..rec(0, b"multi", None, Value::Hash(vec![(b"f", b"as hash")]))
        },
    ];
    let db3 = vec![rec(
        3,
        b"other-db",
        Some(1_796_000_000_002),
        Value::List(vec![b"in db 3"]),
    )];
    write_snapshot(
        dir,
        &opts(DEFAULT_BLOCK_TARGET, u64::MAX),
        vec![(spec("src0-db0", 0), db0), (spec("src0-db3", 3), db3)],
    );
}

fn good_parts(dir: &Path) {
    // Small blocks and parts, so that keys span blocks and the shard spans files.
    let fields: Vec<(Vec<u8>, Vec<u8>)> = (0..40)
        .map(|i| {
            (
                format!("field:{i:03}").into_bytes(),
                format!("value number {i}").into_bytes(),
            )
        })
        .collect();
    let mut recs = Vec::new();
    for (p, chunk) in fields.chunks(8).enumerate() {
        let pairs = chunk.iter().map(|(f, v)| (f.as_slice(), v.as_slice())).collect();
        let last = if p == 4 { FLAG_LAST } else { 0 };
        recs.push(KeyRecord {
            db: 0,
            key: b"big:hash",
            part: p as u64,
            flags: last,
            expire_at_ms: Some(1_796_000_000_000),
            value: Value::Hash(pairs),
        });
    }
    let text = b"A long string split into parts of sixteen bytes, concatenated in part order.";
    for (p, chunk) in text.chunks(16).enumerate() {
        let last = if (p + 1) * 16 >= text.len() { FLAG_LAST } else { 0 };
        recs.push(KeyRecord {
            db: 0,
            key: b"big:string",
            part: p as u64,
            flags: last,
            expire_at_ms: None,
            value: Value::String(chunk),
        });
    }
    recs.push(rec(0, b"dup", None, Value::String(b"first occurrence")));
    recs.push(KeyRecord {
        db: 0,
        key: b"big:list",
        part: 0,
        flags: 0,
        expire_at_ms: None,
        value: Value::List(vec![b"1", b"2", b"3"]),
    });
    recs.push(KeyRecord {
        db: 0,
        key: b"big:list",
        part: 1,
        flags: FLAG_LAST,
        expire_at_ms: None,
        value: Value::List(vec![b"4", b"5"]),
    });
    recs.push(rec(0, b"dup", None, Value::Set(vec![b"second occurrence wins"])));
    write_snapshot(dir, &opts(128, 400), vec![(spec("src0-db0", 0), recs)]);
}

fn good_forward_compat(dir: &Path) {
    let future_flag = 1u64 << 20;
    let a = encode(&KeyRecord {
        flags: FLAG_LAST | future_flag,
        ..rec(0, b"advisory-flag", None, Value::String(b"bit 20 is advisory"))
    });
    // A skippable record (kind 100) carrying values a v1 reader does not understand.
    let skippable = vec![0x93, 100, 0xa5, b'h', b'e', b'l', b'l', b'o', 0x81, 0xa1, b'x', 0xc3];
    let b = encode(&rec(0, b"after-skippable", None, Value::String(b"still read")));
    write_raw_snapshot(dir, vec![a, skippable, b]);
    // A newer minor version in the manifest, with a field this version does not know (F-VER-2).
    let mut m = read_manifest(dir);
    m["version"] = "1.3".into();
    m["future_field"] = serde_json::json!({"ignored": true});
    write_manifest_json(dir, &m);
}

fn good_empty(dir: &Path) {
    write_snapshot(
        dir,
        &opts(DEFAULT_BLOCK_TARGET, u64::MAX),
        vec![(spec("src0-db0", 0), vec![])],
    );
}

/// A shard from a Pika, with the binlog position its export began at (format 1.2).
fn good_from_pika(dir: &Path) {
    let spec = ShardSpec {
        id: "src0-db0".into(),
        source: "redis://127.0.0.1:9221".into(),
        source_server: Some("pika 4.0.1".into()),
        db: 0,
    };
    let recs = vec![
        rec(0, b"counter", None, Value::String(b"41")),
        rec(
            0,
            b"user:1",
            Some(1_796_000_000_000),
            Value::Hash(vec![(b"name", b"ada")]),
        ),
    ];
    let mut m = write_snapshot(dir, &opts(DEFAULT_BLOCK_TARGET, u64::MAX), vec![(spec, recs)]);
    m.shards[0].binlog_start = Some(BinlogPosition {
        filenum: 2,
        offset: 151_802,
    });
    write_manifest(dir, &m).unwrap();
}

// ----- the corrupt fixtures: each is a good one with one thing broken -----

fn multi_block(dir: &Path) {
    let vals: Vec<String> = (0..60)
        .map(|i| format!("value {i} with some padding to fill blocks"))
        .collect();
    let recs = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            rec(
                0,
                format!("key:{i:02}").leak().as_bytes(),
                None,
                Value::String(v.as_bytes()),
            )
        })
        .collect();
    write_snapshot(dir, &opts(512, u64::MAX), vec![(spec("src0-db0", 0), recs)]);
}

fn corrupt(name: &str, dir: &Path) {
    match name {
        "truncated" => {
            multi_block(dir);
            edit(&first_file(dir), |b| b.truncate(b.len() * 2 / 3));
        }
        "flipped-byte" => {
            multi_block(dir);
            // A byte in the middle of block 1's data frame, as a bad network copy would leave.
            edit(&first_file(dir), |b| {
                let h = 8 + le32_at(b, 4) as usize;
                let b0_end = h + 36 + le32_at(b, h + 16) as usize;
                let d1 = le32_at(b, b0_end + 16) as usize;
                b[b0_end + 36 + d1 / 2] ^= 0x10;
            });
        }
        "bad-magic" => {
            good_minimal(dir);
            edit(&first_file(dir), |b| b[15] = b'X');
            reseal(dir);
        }
        "newer-major" => {
            good_minimal(dir);
            edit(&first_file(dir), |b| {
                b[16..20].copy_from_slice(&[2, 0, 0, 0]); // version 2.0
                fix_header_crc(b);
            });
            reseal(dir);
        }
        "newer-major-manifest" => {
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["version"] = "2.0".into();
            write_manifest_json(dir, &m);
        }
        "header-crc" => {
            good_minimal(dir);
            edit(&first_file(dir), |b| b[30] ^= 0x01);
            reseal(dir);
        }
        "missing-trailer" => {
            multi_block(dir);
            edit(&first_file(dir), |b| {
                let body = le32_at(b, b.len() - 16) as usize;
                b.truncate(b.len() - 16 - body - 8);
            });
            reseal(dir);
        }
        "trailer-crc" => {
            good_minimal(dir);
            edit(&first_file(dir), |b| {
                let at = b.len() - 16 - 3;
                b[at] ^= 0x01;
            });
            reseal(dir);
        }
        "manifest-digest" => {
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["shards"][0]["parts"][0]["sha256"] = "0".repeat(64).into();
            write_manifest_json(dir, &m);
        }
        "manifest-sums" => {
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["totals"]["keys"] = 2.into();
            write_manifest_json(dir, &m);
        }
        "manifest-counts" => {
            // Consistent sums in the manifest, but they disagree with the file's trailer.
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["shards"][0]["parts"][0]["keys"] = 2.into();
            m["shards"][0]["keys"] = 2.into();
            m["shards"][0]["keys_by_type"]["string"] = 2.into();
            m["totals"]["keys"] = 2.into();
            m["totals"]["keys_by_type"]["string"] = 2.into();
            write_manifest_json(dir, &m);
        }
        "missing-part" => {
            good_parts(dir);
            fs::remove_file(dir.join(part_file_name("src0-db0", 1))).unwrap();
        }
        "no-manifest" => {
            good_minimal(dir);
            fs::remove_file(dir.join(MANIFEST_NAME)).unwrap();
        }
        "bad-file-name" => {
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["shards"][0]["parts"][0]["file"] = "../src0-db0.0000.kvf".into();
            write_manifest_json(dir, &m);
        }
        "shard-types" => {
            // Sums add up, but the shard's keys per type are not its files' (F-SNAP-4).
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["shards"][0]["keys_by_type"] = serde_json::json!({"hash": 1});
            m["totals"]["keys_by_type"] = serde_json::json!({"hash": 1});
            write_manifest_json(dir, &m);
        }
        "no-shards" => {
            good_minimal(dir);
            let mut m = read_manifest(dir);
            m["shards"] = serde_json::json!([]);
            m["totals"] = serde_json::json!({"keys": 0, "records": 0, "raw_bytes": 0, "file_bytes": 0, "files": 0, "keys_by_type": {}});
            write_manifest_json(dir, &m);
        }
        "deep-nesting" => {
            // A skippable record whose value nests 17 arrays deep (SPEC §7).
            let mut r = vec![0x92, 100];
            r.extend(std::iter::repeat_n(0x91, 16));
            r.push(0xc0);
            write_raw_snapshot(dir, vec![r]);
        }
        "unknown-kind" => {
            let r = encode(&rec(0, b"k", None, Value::String(b"v")));
            write_raw_snapshot(dir, vec![replace(&r, &[0x97, 0x01], &[0x97, 50])]);
        }
        "reserved-flag" => {
            let r = encode(&rec(0, b"k", None, Value::String(b"v")));
            write_raw_snapshot(dir, vec![replace(&r, &[0x6b, 0x00, 0x01], &[0x6b, 0x00, 0x21])]);
        }
        "part-sequence" => {
            let a = encode(&KeyRecord {
                flags: 0,
                ..rec(0, b"k", None, Value::List(vec![b"1"]))
            });
            let b = encode(&KeyRecord {
                part: 2,
                ..rec(0, b"k", None, Value::List(vec![b"3"]))
            });
            write_raw_snapshot(dir, vec![a, b]);
        }
        "open-at-end" => {
            let a = encode(&KeyRecord {
                flags: 0,
                ..rec(0, b"k", None, Value::List(vec![b"1"]))
            });
            write_raw_snapshot(dir, vec![a]);
        }
        "str-key" => {
            let r = encode(&rec(0, b"k", None, Value::String(b"v")));
            write_raw_snapshot(dir, vec![replace(&r, &[0xc4, 0x01, b'k'], &[0xa1, b'k'])]);
        }
        "float32-score" => {
            let r = encode(&rec(0, b"z", None, Value::ZSet(vec![(b"m", 1.5)])));
            write_raw_snapshot(
                dir,
                vec![replace(
                    &r,
                    &1.5f64
                        .to_bits()
                        .to_be_bytes()
                        .as_slice()
                        .iter()
                        .copied()
                        .fold(vec![0xcb], |mut v, b| {
                            v.push(b);
                            v
                        }),
                    &[0xca, 0x3f, 0xc0, 0x00, 0x00],
                )],
            );
        }
        "wrong-db" => {
            let r = encode(&rec(1, b"k", None, Value::String(b"v")));
            write_raw_snapshot(dir, vec![r]);
        }
        "zero-expiry" => {
            let r = encode(&rec(0, b"k", Some(5), Value::String(b"v")));
            write_raw_snapshot(dir, vec![replace(&r, &[0x01, 0x05, 0xc4], &[0x01, 0x00, 0xc4])]);
        }
        "binlog-start" => {
            good_from_pika(dir);
            let mut m = read_manifest(dir);
            m["shards"][0]["binlog_start"]["offset"] = "151802".into();
            write_manifest_json(dir, &m);
        }
        "trailing-bytes" => {
            let mut r = encode(&rec(0, b"k", None, Value::String(b"v")));
            r.push(0xc0);
            write_raw_snapshot(dir, vec![r]);
        }
        other => panic!("no corrupt fixture {other}"),
    }
}

/// Builds a fixture into a directory.
type Build = fn(&Path);

/// Good fixtures: name and builder.
const GOOD: &[(&str, Build)] = &[
    ("minimal", good_minimal),
    ("all-types", good_all_types),
    ("parts", good_parts),
    ("forward-compat", good_forward_compat),
    ("empty", good_empty),
    ("from-pika", good_from_pika),
];

/// Corrupt fixtures: name, and a piece of text that `check` must report (the precise error).
const CORRUPT: &[(&str, &str)] = &[
    ("truncated", "size differs from the manifest"),
    ("flipped-byte", "block data checksum mismatch in block 1"),
    ("bad-magic", "bad header magic at offset 8"),
    ("newer-major", "format version 2.0 is not supported"),
    ("newer-major-manifest", "format version 2.0 is not supported"),
    ("header-crc", "header checksum mismatch"),
    ("missing-trailer", "does not end with the trailer tag"),
    ("trailer-crc", "trailer checksum mismatch"),
    ("manifest-digest", "SHA-256 differs from the manifest"),
    ("manifest-sums", "\"totals\" do not add up"),
    (
        "manifest-counts",
        "blocks/records/keys/raw_bytes differs from the manifest",
    ),
    (
        "missing-part",
        "missing: the manifest lists it as part 1 of shard src0-db0",
    ),
    ("no-manifest", "no MANIFEST.json"),
    ("bad-file-name", "is invalid or repeated"),
    (
        "shard-types",
        "keys_by_type {\"hash\": 1} differs from its files' trailers {\"string\": 1}",
    ),
    ("no-shards", "a snapshot has at least one shard"),
    ("deep-nesting", "nested deeper than 16 levels"),
    ("unknown-kind", "record kind 50 is must-understand and unknown"),
    ("reserved-flag", "reserved flag bits 0x20 are set"),
    ("part-sequence", "part 2 of key \"k\" where part 1 of key \"k\" was due"),
    ("open-at-end", "the file ends inside key \"k\""),
    ("str-key", "key: expected bin, found a str"),
    ("float32-score", "zset score: expected float 64, found a float 32"),
    ("wrong-db", "db 1 in a file of db 0"),
    ("zero-expiry", "expire_at_ms is 0"),
    ("trailing-bytes", "1 bytes remain after the block's 1 records"),
    ("binlog-start", "invalid type: string \"151802\", expected u64"),
];

/// Builds every fixture under `root` (good/NAME, good/NAME.jsonl, corrupt/NAME).
fn build_all(root: &Path) {
    for (name, build) in GOOD {
        let dir = root.join("good").join(name);
        build(&dir);
        let rendering = cat(&dir);
        fs::write(root.join("good").join(format!("{name}.jsonl")), rendering).unwrap();
    }
    for (name, _) in CORRUPT {
        corrupt(name, &root.join("corrupt").join(name));
    }
}

fn cat(dir: &Path) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .arg("cat")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvferry cat {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "README.md" {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Golden test (issue: "a golden byte-exact writer test"): the writer, given the same records
/// and clock, reproduces every fixture byte for byte. F-HDR-1, F-BLK-1, F-TRL-1, F-SNAP-3.
#[test]
fn writer_reproduces_the_fixtures_byte_for_byte() {
    if std::env::var_os("KVFERRY_BLESS").is_some() {
        let root = fixtures_dir();
        for sub in ["good", "corrupt"] {
            let _ = fs::remove_dir_all(root.join(sub));
        }
        build_all(&root);
    }
    let tmp = tempfile::tempdir().unwrap();
    build_all(tmp.path());
    let (want, got) = (all_files(&fixtures_dir()), all_files(tmp.path()));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the set of fixture files changed; run KVFERRY_BLESS=1 cargo test --test fixtures and review"
    );
    for (path, bytes) in &want {
        assert!(
            got[path] == *bytes,
            "{} differs from what the writer produces now; if the format changed on purpose, update SPEC.md and bless",
            path.display()
        );
    }
}

/// Every good fixture passes `check` and renders as its .jsonl (F-JSON-1).
#[test]
fn good_fixtures_check_and_render() {
    for (name, _) in GOOD {
        let dir = fixtures_dir().join("good").join(name);
        let report = check(&dir, 2, &mut |_| {});
        assert!(report.ok(), "{name}: {report:#?}");
        let want = fs::read(fixtures_dir().join("good").join(format!("{name}.jsonl"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&cat(&dir)),
            String::from_utf8_lossy(&want),
            "{name}"
        );
    }
}

/// Every corrupt fixture is rejected by `check` with the precise error, and `cat` refuses it
/// (exit 2, message on stderr) rather than print it as valid.
#[test]
fn corrupt_fixtures_are_rejected_with_the_precise_error() {
    for (name, expected) in CORRUPT {
        let dir = fixtures_dir().join("corrupt").join(name);
        let report = check(&dir, 2, &mut |_| {});
        assert!(!report.ok(), "{name} passed check");
        let text = report
            .snapshot_problems
            .iter()
            .chain(report.files.iter().flat_map(|f| &f.problems))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains(expected), "{name}: expected {expected:?} in {text}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvferry"))
            .arg("cat")
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: cat exit code; stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("kvferry: error: "),
            "{name}"
        );
    }
}

/// `check` names the bad block of a corrupted copy (issue "Done when"), and also reports that
/// the digest no longer matches the manifest.
#[test]
fn check_names_the_bad_block_and_the_file() {
    let dir = fixtures_dir().join("corrupt").join("flipped-byte");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("src0-db0.0000.kvf: block data checksum mismatch in block 1"),
        "{stdout}"
    );
    assert!(stdout.contains("bad blocks in") && stdout.contains("[1]"), "{stdout}");
    assert!(stdout.contains("SHA-256 differs from the manifest"), "{stdout}");
    let report = check(&dir, 2, &mut |_| {});
    assert_eq!(report.files[0].bad_blocks, vec![1]);
}

/// A truncated file: check says which blocks survive (SPEC §9).
#[test]
fn check_reports_how_much_of_a_truncated_file_is_whole() {
    let report = check(&fixtures_dir().join("corrupt").join("truncated"), 2, &mut |_| {});
    let text = report.files[0].problems.join("\n");
    assert!(text.contains("truncated file") && text.contains("are whole"), "{text}");
}

/// F-FRAME-1: every shard file is a valid sequence of zstd frames, so the stock `zstd -t` checks
/// good files and catches a damaged block without kvferry (CI installs zstd).
#[test]
fn zstd_cli_validates_shard_files() {
    let zstd_t = |path: &Path| {
        std::process::Command::new("zstd")
            .arg("-tq")
            .arg(path)
            .output()
            .expect("zstd on PATH")
    };
    for (name, _) in GOOD {
        for e in fs::read_dir(fixtures_dir().join("good").join(name)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == PART_EXTENSION) {
                let o = zstd_t(&p);
                assert!(
                    o.status.success(),
                    "zstd -t {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
    let damaged = fixtures_dir()
        .join("corrupt/flipped-byte")
        .join(part_file_name("src0-db0", 0));
    assert!(
        !zstd_t(&damaged).status.success(),
        "zstd -t must reject the flipped byte"
    );
}
