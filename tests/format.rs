//! Round trips and error kinds of the shard-file writer and reader (SPEC §4-§7), in memory and
//! on disk. Requirement ids in comments point into format-spec/SPEC.md.

use std::path::Path;

use kvferry::format::check::check_file;
use kvferry::format::consts::*;
use kvferry::format::frame::ShardHeader;
use kvferry::format::reader::{walk, ShardReader};
use kvferry::format::record::*;
use kvferry::format::snapshot::*;
use kvferry::format::{FormatError, ShardError, ShardWriter, SnapshotError, WriterOptions};
use proptest::prelude::*;

fn header(db: u32) -> ShardHeader {
    ShardHeader {
        shard: "t".into(),
        part: 0,
        db,
        source: "redis://127.0.0.1:1".into(),
        source_server: None,
        created_unix_ms: 1,
        writer: "test".into(),
    }
}

/// Field-value pairs.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// An owned key with its value, to generate and compare.
#[derive(Debug, Clone)]
enum Val {
    Str(Vec<u8>),
    Hash(Pairs),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
    Stream(Vec<(u64, u64, Pairs)>),
}

#[derive(Debug, Clone)]
struct Key {
    key: Vec<u8>,
    expire: Option<u64>,
    flags: u64,
    val: Val,
    /// Split the value into this many parts (at most; fewer when it has fewer elements).
    parts: usize,
}

fn chunks<T>(v: &[T], parts: usize) -> Vec<&[T]> {
    if v.is_empty() {
        return vec![v];
    }
    v.chunks(v.len().div_ceil(parts.max(1))).collect()
}

fn pairs(v: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    v.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect()
}

/// The records of `k`, parts in order (F-PART-1).
fn records(k: &Key) -> Vec<KeyRecord<'_>> {
    let values: Vec<Value> = match &k.val {
        Val::Str(s) => chunks(s, k.parts).into_iter().map(Value::String).collect(),
        Val::Hash(h) => chunks(h, k.parts).into_iter().map(|c| Value::Hash(pairs(c))).collect(),
        Val::List(l) => chunks(l, k.parts)
            .into_iter()
            .map(|c| Value::List(c.iter().map(|e| e.as_slice()).collect()))
            .collect(),
        Val::Set(l) => chunks(l, k.parts)
            .into_iter()
            .map(|c| Value::Set(c.iter().map(|e| e.as_slice()).collect()))
            .collect(),
        Val::ZSet(z) => chunks(z, k.parts)
            .into_iter()
            .map(|c| Value::ZSet(c.iter().map(|(m, s)| (m.as_slice(), *s)).collect()))
            .collect(),
        Val::Stream(s) => {
            let cs = chunks(s, k.parts);
            let n = cs.len();
            cs.into_iter()
                .enumerate()
                .map(|(i, c)| Value::Stream {
                    entries: c
                        .iter()
                        .map(|(ms, seq, f)| StreamEntry {
                            id: StreamId { ms: *ms, seq: *seq },
                            fields: pairs(f),
                        })
                        .collect(),
                    meta: (i + 1 == n).then(|| StreamMeta {
                        last_id: StreamId { ms: 9, seq: 9 },
                        entries_added: Some(3),
                        max_deleted_id: None,
                        groups: vec![],
                    }),
                })
                .collect()
        }
    };
    key_parts(0, &k.key, k.flags, k.expire, values).collect()
}

/// A one-record key in db 0 without expiry.
fn single<'a>(key: &'a [u8], value: Value<'a>) -> KeyRecord<'a> {
    KeyRecord {
        db: 0,
        key,
        part: 0,
        flags: FLAG_LAST,
        expire_at_ms: None,
        value,
    }
}

fn encode(r: &KeyRecord) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(&mut v);
    v
}

fn write(keys: &[Key], block_target: usize) -> Vec<u8> {
    let mut w = ShardWriter::new(Vec::new(), header(0), WriterOptions { level: 1, block_target }).unwrap();
    for k in keys {
        for r in records(k) {
            w.push(&r).unwrap();
        }
    }
    w.finish().unwrap().out
}

/// Reads every record back and compares its encoding with what was written (bit-exact, so NaN,
/// -0.0 and ±inf scores are compared by their bits).
fn assert_round_trip(keys: &[Key], bytes: Vec<u8>) {
    let r = ShardReader::from_bytes(Path::new("mem"), bytes).unwrap();
    let want: Vec<Vec<u8>> = keys
        .iter()
        .flat_map(|k| records(k).iter().map(encode).collect::<Vec<_>>())
        .collect();
    let mut got = Vec::new();
    let mut seq = PartSeq::default();
    for b in r.blocks() {
        let b = b.unwrap();
        for rec in b.records() {
            let rec = rec.unwrap();
            seq.accept(&rec).unwrap();
            let Record::Key(k) = rec else {
                panic!("only key records were written")
            };
            got.push(encode(&k));
        }
    }
    seq.finish().unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "records differ after the round trip");
    let t = r.trailer();
    assert_eq!(t.records, want.len() as u64);
    assert_eq!(t.keys, keys.len() as u64);
    assert_eq!(
        t.expiring_keys,
        keys.iter().filter(|k| k.expire.is_some()).count() as u64
    );
    r.verify_file_crc().unwrap();
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(1.0 / 3.0),
        prop::num::f64::ANY
    ]
}

fn val() -> impl Strategy<Value = Val> {
    let pairs = || prop::collection::vec((bytes(40), bytes(200)), 0..50);
    prop_oneof![
        bytes(3000).prop_map(Val::Str),
        pairs().prop_map(Val::Hash),
        prop::collection::vec(bytes(100), 0..80).prop_map(Val::List),
        prop::collection::vec(bytes(100), 0..80).prop_map(Val::Set),
        prop::collection::vec((bytes(60), score()), 0..80).prop_map(Val::ZSet),
        prop::collection::vec((any::<u64>(), any::<u64>(), pairs()), 0..10).prop_map(Val::Stream),
    ]
}

fn key() -> impl Strategy<Value = Key> {
    (
        prop_oneof![bytes(64), bytes(70_000)],
        prop::option::of(1u64..u64::MAX),
        prop_oneof![Just(0), Just(FLAG_MULTI_TYPE), Just(1u64 << 17)],
        val(),
        1usize..6,
    )
        .prop_map(|(key, expire, flags, val, parts)| Key {
            key,
            expire,
            flags,
            val,
            parts,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random records of every type survive write and read bit for bit, whatever the block size:
    /// empty values, binary and 70 kB keys, NaN/±inf/-0.0 scores, keys split over parts and blocks.
    #[test]
    fn random_records_round_trip(keys in prop::collection::vec(key(), 0..30), block_target in prop_oneof![Just(64usize), Just(4096), Just(1 << 20)]) {
        let bytes = write(&keys, block_target);
        assert_round_trip(&keys, bytes);
    }
}

/// Values of many megabytes, one in a single record and one split over parts, round-trip; the
/// reader's memory is bounded by blocks, not keys (F-BLK-3).
#[test]
fn multi_megabyte_values_round_trip() {
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let members: Vec<Vec<u8>> = (0..200_000u32).map(|i| format!("member:{i}").into_bytes()).collect();
    let keys = vec![
        Key {
            key: b"one-record".to_vec(),
            expire: None,
            flags: 0,
            val: Val::Str(big.clone()),
            parts: 1,
        },
        Key {
            key: b"twelve-parts".to_vec(),
            expire: Some(5),
            flags: 0,
            val: Val::Str(big),
            parts: 12,
        },
        Key {
            key: b"big-set".to_vec(),
            expire: None,
            flags: 0,
            val: Val::Set(members),
            parts: 8,
        },
    ];
    let bytes = write(&keys, DEFAULT_BLOCK_TARGET);
    let r = ShardReader::from_bytes(Path::new("mem"), bytes.clone()).unwrap();
    let biggest = r.trailer().blocks.iter().map(|b| b.raw_len()).max().unwrap();
    assert!(
        biggest < (13 << 20),
        "a block holds at most one big record beyond its target"
    );
    assert_eq!(r.trailer().big_keys[0].0, b"one-record");
    assert_eq!(r.trailer().big_keys[0].2, 12 << 20);
    assert_eq!(
        r.trailer().big_keys[2].3,
        200_000,
        "elements of the split set are summed over its parts"
    );
    assert_round_trip(&keys, bytes);
}

/// A record larger than the block limit is refused by the writer, not written (SPEC §7).
#[test]
fn writer_refuses_a_record_over_the_limit() {
    let huge = vec![0u8; MAX_BLOCK_RAW + 1];
    let mut w = ShardWriter::new(Vec::new(), header(0), WriterOptions::default()).unwrap();
    let rec = single(b"k", Value::String(&huge));
    assert!(matches!(
        w.push(&rec),
        Err(FormatError::Limit {
            what: "record size",
            ..
        })
    ));
}

/// The writer refuses a bad part sequence, a wrong db and a zero expiry (F-PART-2, F-REC-2, F-EXP-1).
#[test]
fn writer_refuses_records_that_break_the_spec() {
    let mut w = ShardWriter::new(Vec::new(), header(0), WriterOptions::default()).unwrap();
    let ok = KeyRecord {
        db: 0,
        key: b"k",
        part: 0,
        flags: 0,
        expire_at_ms: None,
        value: Value::List(vec![b"a"]),
    };
    w.push(&ok).unwrap();
    assert!(
        w.push(&KeyRecord { part: 2, ..ok.clone() }).is_err(),
        "part 2 after part 0"
    );
    assert!(
        w.push(&KeyRecord {
            db: 1,
            part: 1,
            ..ok.clone()
        })
        .is_err(),
        "wrong db"
    );
    assert!(
        w.push(&KeyRecord {
            part: 1,
            expire_at_ms: Some(0),
            ..ok.clone()
        })
        .is_err(),
        "zero expiry"
    );
    assert!(
        w.push(&KeyRecord {
            key: b"other",
            part: 0,
            flags: FLAG_LAST,
            ..ok.clone()
        })
        .is_err(),
        "new key while k is open"
    );
    w.push(&KeyRecord {
        part: 1,
        flags: FLAG_LAST,
        ..ok
    })
    .unwrap();
    w.finish().unwrap();
}

/// The same records and header give the same bytes (deterministic writer, injected clock).
#[test]
fn writer_is_deterministic() {
    let keys = vec![Key {
        key: b"k".to_vec(),
        expire: Some(7),
        flags: 0,
        val: Val::List(vec![b"x".to_vec(); 1000]),
        parts: 3,
    }];
    assert_eq!(write(&keys, 256), write(&keys, 256));
}

fn sample() -> Vec<u8> {
    let keys: Vec<Key> = (0..50)
        .map(|i| Key {
            key: format!("key:{i}").into_bytes(),
            expire: None,
            flags: 0,
            val: Val::Str(format!("value {i} ").repeat(20).into_bytes()),
            parts: 2,
        })
        .collect();
    write(&keys, 1024)
}

fn open(bytes: Vec<u8>) -> Result<ShardReader, FormatError> {
    ShardReader::from_bytes(Path::new("f.kvf"), bytes).map_err(|e| e.error)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// F-TRL-2: a cut file is reported as truncated, at the file's length.
#[test]
fn truncated_file() {
    let b = sample();
    let cut = b[..b.len() - 100].to_vec();
    let len = cut.len() as u64;
    assert_eq!(
        open(cut).err(),
        Some(FormatError::Truncated {
            offset: len,
            detail: format!("the file ({len} bytes) does not end with the trailer tag KVFTRAIL")
        })
    );
}

/// F-BLK-2: a flipped byte in a block's data is caught by the block's CRC, naming the block.
#[test]
fn flipped_byte_in_a_block() {
    let mut b = sample();
    let r = open(b.clone()).unwrap();
    let e = r.trailer().blocks[2];
    let data_at = e.offset() as usize + BLOCK_HEADER_FRAME_LEN;
    b[data_at + 5] ^= 0x01;
    let r = open(b).unwrap();
    assert!(r.read_block(1).is_ok());
    match r.read_block(2).unwrap_err().error {
        FormatError::Checksum {
            what, block, offset, ..
        } => assert_eq!((what, block, offset), ("block data", Some(2), data_at as u64)),
        other => panic!("{other:?}"),
    }
}

/// F-HDR-2: a bad magic is reported with the bytes found.
#[test]
fn bad_magic() {
    let mut b = sample();
    b[8..16].copy_from_slice(b"NOTKVFER");
    assert_eq!(
        open(b).err(),
        Some(FormatError::BadMagic {
            what: "header",
            offset: 8,
            found: hex::encode(b"NOTKVFER")
        })
    );
    assert!(matches!(
        open(b"hello".to_vec()).err(),
        Some(FormatError::BadMagic {
            what: "header frame",
            offset: 0,
            ..
        })
    ));
    assert!(matches!(open(Vec::new()).err(), Some(FormatError::BadMagic { .. })));
}

/// F-VER-1 / F-HDR-2: a newer major version is reported as such before the CRC is looked at.
#[test]
fn newer_major_version() {
    let mut b = sample();
    b[16] = 7;
    b[18] = 3;
    assert_eq!(
        open(b).err(),
        Some(FormatError::UnsupportedVersion {
            found_major: 7,
            found_minor: 3,
            supported: 1
        })
    );
}

/// F-VER-2: a newer minor version is read (its header CRC fixed up to isolate the version).
#[test]
fn newer_minor_version_is_read() {
    let mut b = sample();
    b[18] = 9;
    let len = le32(&b, 4) as usize;
    let crc = crc32fast::hash(&b[8..8 + len - 4]);
    b[8 + len - 4..8 + len].copy_from_slice(&crc.to_le_bytes());
    // The file CRC covers the header too; the reader checks it only when asked.
    let r = open(b).unwrap();
    assert_eq!(r.version(), (1, 9));
    assert!(r.read_block(0).is_ok());
}

/// F-TRL-2: without the trailer frame the file is truncated; a walk still finds every block.
#[test]
fn missing_trailer_and_walk() {
    let b = sample();
    let r = open(b.clone()).unwrap();
    let n = r.block_count() as usize;
    let start = le32(&b, b.len() - 16) as usize;
    let cut = b[..b.len() - 16 - start - 8].to_vec();
    assert!(matches!(open(cut.clone()).err(), Some(FormatError::Truncated { .. })));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.kvf");
    std::fs::write(&path, &cut).unwrap();
    let w = walk(&path).unwrap();
    assert_eq!(w.blocks, r.trailer().blocks[..n]);
    assert!(matches!(w.stopped, Some(FormatError::Truncated { .. })));
    // Cut inside the last block: the walk keeps the blocks before it, and says where to resume.
    std::fs::write(&path, &cut[..cut.len() - 10]).unwrap();
    let w = walk(&path).unwrap();
    assert_eq!(w.blocks.len(), n - 1);
    assert_eq!(w.end, r.trailer().blocks[n - 1].offset());
}

/// Every single-byte corruption of a file is detected by a full check (every byte is covered by a
/// checksum, a magic or a length), and none makes the reader panic.
#[test]
fn every_flipped_byte_is_detected() {
    let b = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.kvf");
    for i in 0..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x04;
        std::fs::write(&path, &c).unwrap();
        let report = check_file(&path, None, 1, &mut |_| {});
        assert!(!report.ok(), "flipping byte {i} of {} went unnoticed", b.len());
    }
}

/// par_blocks hands blocks over in order, the same as sequential reading.
#[test]
fn parallel_decode_is_ordered() {
    let r = open(sample()).unwrap();
    let mut seen = Vec::new();
    r.par_blocks(
        4,
        |b| b.map(|b| (b.index, b.raw.len())),
        |i, got| {
            let (index, len) = got.unwrap();
            assert_eq!(i, index);
            seen.push(len);
            true
        },
    );
    let sequential: Vec<usize> = r.blocks().map(|b| b.unwrap().raw.len()).collect();
    assert_eq!(seen, sequential);
    assert!(seen.len() > 4);
}

fn snapshot_dir() -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let o = SnapshotOptions {
        part_target: 2000,
        writer: WriterOptions {
            level: 1,
            block_target: 500,
        },
        ..SnapshotOptions::default()
    };
    let spec = ShardSpec {
        id: "s0-db0".into(),
        source: "redis://x:1".into(),
        source_server: None,
        db: 0,
    };
    let mut sink = ShardSink::new(dir.path(), spec, o.clone(), 5).unwrap();
    let vals: Vec<String> = (0..100).map(|i| format!("value {i} ").repeat(10)).collect();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for (k, v) in keys.iter().zip(&vals) {
        sink.push(&KeyRecord {
            db: 0,
            key: k.as_bytes(),
            part: 0,
            flags: FLAG_LAST,
            expire_at_ms: None,
            value: Value::String(v.as_bytes()),
        })
        .unwrap();
    }
    let m = Manifest::new(5, o.writer_name.clone(), vec![sink.finish().unwrap()]);
    write_manifest(dir.path(), &m).unwrap();
    (dir, m)
}

/// A shard is split into parts at key boundaries once a part reaches its target (F-SNAP-3, F-PART-1).
#[test]
fn shards_split_into_parts() {
    let (dir, m) = snapshot_dir();
    let parts = &m.shards[0].parts;
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let snap = Snapshot::open(dir.path()).unwrap();
    let keys: u64 = (0..parts.len())
        .map(|p| {
            snap.open_part_verified(0, p, kvferry::format::ReadMode::Mmap)
                .unwrap()
                .trailer()
                .keys
        })
        .sum();
    assert_eq!(keys, 100);
    assert_eq!(m.totals.keys, 100);
}

/// F-SNAP-4: a file whose size differs from the manifest.
#[test]
fn manifest_file_mismatch() {
    let (dir, m) = snapshot_dir();
    let p = &m.shards[0].parts[1];
    let path = dir.path().join(&p.file);
    let mut b = std::fs::read(&path).unwrap();
    b.push(0);
    std::fs::write(&path, b).unwrap();
    let snap = Snapshot::open(dir.path()).unwrap();
    assert_eq!(
        snap.open_part(0, 1, kvferry::format::ReadMode::Read).err(),
        Some(SnapshotError::Mismatch {
            path,
            what: "size",
            expected: format!("{} bytes", p.bytes),
            found: format!("{} bytes", p.bytes + 1)
        })
    );
}

/// F-SNAP-4: a part file that is missing.
#[test]
fn missing_part_file() {
    let (dir, m) = snapshot_dir();
    let path = dir.path().join(&m.shards[0].parts[2].file);
    std::fs::remove_file(&path).unwrap();
    let snap = Snapshot::open(dir.path()).unwrap();
    assert_eq!(
        snap.open_part(0, 2, kvferry::format::ReadMode::Mmap).err(),
        Some(SnapshotError::MissingFile {
            path,
            shard: "s0-db0".into(),
            part: 2
        })
    );
}

/// F-SNAP-2: no manifest, no snapshot.
#[test]
fn no_manifest_is_incomplete() {
    let (dir, _) = snapshot_dir();
    std::fs::remove_file(dir.path().join(MANIFEST_NAME)).unwrap();
    assert_eq!(
        Snapshot::open(dir.path()).err(),
        Some(SnapshotError::Incomplete {
            dir: dir.path().to_path_buf()
        })
    );
}

/// A write error (here: a full disk, simulated by /dev/full) is reported, not swallowed.
#[test]
fn full_disk_is_an_error() {
    let f = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut w = ShardWriter::new(std::io::BufWriter::new(f), header(0), WriterOptions::default()).unwrap();
    let v = vec![7u8; 3 << 20];
    let rec = single(b"k", Value::String(&v));
    let err = w.push(&rec).and_then(|_| w.finish().map(|_| ())).unwrap_err();
    assert!(
        matches!(&err, FormatError::Io { message, .. } if message.contains("No space left")),
        "{err:?}"
    );
}

/// After a write error, every later push and checkpoint returns the same error instead of
/// panicking: a shard's second reader may still be writing when the first saw the disk fill
/// (issue 11: `BUG: send after finish` with `--readers 2`).
#[test]
fn full_disk_stays_an_error_for_every_later_call() {
    let f = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut w = ShardWriter::new(std::io::BufWriter::new(f), header(0), WriterOptions::default()).unwrap();
    let v = vec![7u8; 3 << 20];
    let full = |e: &FormatError| matches!(e, FormatError::Io { message, .. } if message.contains("No space left"));
    w.push(&single(b"k", Value::String(&v))).unwrap(); // buffered: the thread writes it
    let first = w.checkpoint().unwrap_err();
    assert!(full(&first), "{first:?}");
    assert_eq!(w.push(&single(b"later", Value::String(&v))).unwrap_err(), first);
    assert_eq!(w.checkpoint().unwrap_err(), first);
    assert_eq!(w.finish().map(|_| ()).unwrap_err(), first);
}

/// The wrong-file error names the file.
#[test]
fn errors_name_the_file() {
    let e: ShardError = ShardReader::open(Path::new("/nonexistent/x.kvf")).err().unwrap();
    assert!(e.to_string().starts_with("/nonexistent/x.kvf: I/O error"), "{e}");
}

fn resume_opts() -> SnapshotOptions {
    SnapshotOptions {
        part_target: 2000,
        writer: WriterOptions {
            level: 1,
            block_target: 500,
        },
        ..SnapshotOptions::default()
    }
}

fn resume_spec() -> ShardSpec {
    ShardSpec {
        id: "s0-db0".into(),
        source: "redis://x:1".into(),
        source_server: None,
        db: 0,
    }
}

/// Key `i` of the resume tests: strings, and every seventh a hash in three parts.
fn push_key(sink: &mut ShardSink, i: usize) {
    let key = format!("k{i}");
    let val = format!("value {i} ").repeat(10);
    if i % 7 == 0 {
        let field = format!("f{i}");
        for part in 0..3u64 {
            let pairs = [(field.as_bytes(), val.as_bytes())];
            sink.push(&KeyRecord {
                db: 0,
                key: key.as_bytes(),
                part,
                flags: if part == 2 { FLAG_LAST } else { 0 },
                expire_at_ms: Some(1_000 + i as u64),
                value: Value::Hash(pairs.to_vec()),
            })
            .unwrap();
        }
        return;
    }
    sink.push(&KeyRecord {
        db: 0,
        key: key.as_bytes(),
        part: 0,
        flags: FLAG_LAST,
        expire_at_ms: None,
        value: Value::String(val.as_bytes()),
    })
    .unwrap();
}

/// Every file of a directory, by name.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Writes keys 0..100 with a checkpoint before key `at`; returns the shard entry, the files, and
/// the checkpoint.
fn write_with_checkpoint(dir: &Path, at: usize) -> (ShardEntry, SinkCheckpoint) {
    let mut sink = ShardSink::new(dir, resume_spec(), resume_opts(), 5).unwrap();
    let mut cp = None;
    for i in 0..=100 {
        if i == at {
            cp = Some(sink.checkpoint().unwrap());
        }
        if i < 100 {
            push_key(&mut sink, i);
        }
    }
    (sink.finish().unwrap(), cp.unwrap())
}

/// A writer killed after a checkpoint (and after writing more that the checkpoint does not
/// cover) and resumed from it produces the same files, byte for byte, as one that checkpointed
/// at the same key and never stopped, whatever part and block the checkpoint fell in; and the
/// same counts as one that never checkpointed.
#[test]
fn resumed_shard_equals_uninterrupted() {
    let plain = tempfile::tempdir().unwrap();
    let mut sink = ShardSink::new(plain.path(), resume_spec(), resume_opts(), 5).unwrap();
    for i in 0..100 {
        push_key(&mut sink, i);
    }
    let plain = sink.finish().unwrap();
    assert!(plain.parts.len() >= 3);
    let counts = |e: &ShardEntry| (e.keys, e.records, e.raw_bytes, e.keys_by_type.clone());
    for (at, more) in [(0, 0), (0, 5), (13, 0), (37, 20), (60, 39), (99, 1), (100, 0)] {
        let whole = tempfile::tempdir().unwrap();
        let (entry, _) = write_with_checkpoint(whole.path(), at);
        assert_eq!(counts(&entry), counts(&plain));
        let dir = tempfile::tempdir().unwrap();
        let mut sink = ShardSink::new(dir.path(), resume_spec(), resume_opts(), 5).unwrap();
        for i in 0..at {
            push_key(&mut sink, i);
        }
        let cp = sink.checkpoint().unwrap();
        for i in at..(at + more).min(100) {
            push_key(&mut sink, i);
        }
        drop(sink); // the process is killed: nothing more is written
        let cp: SinkCheckpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
        let mut sink = ShardSink::resume(dir.path(), resume_spec(), resume_opts(), 5, cp).unwrap();
        for i in at..100 {
            push_key(&mut sink, i);
        }
        let what = format!("checkpoint before key {at}, {more} keys more before the kill");
        assert_eq!(sink.finish().unwrap(), entry, "{what}");
        assert!(files(dir.path()) == files(whole.path()), "{what}: the files differ");
    }
}

/// A part damaged before its checkpoint is not resumed silently: the error names the file.
#[test]
fn resume_refuses_a_damaged_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = ShardSink::new(dir.path(), resume_spec(), resume_opts(), 5).unwrap();
    for i in 0..5 {
        push_key(&mut sink, i);
    }
    let cp = sink.checkpoint().unwrap();
    drop(sink);
    let (part, end) = cp.current.unwrap();
    let path = dir.path().join(part_file_name("s0-db0", part));
    let mut b = std::fs::read(&path).unwrap();
    let at = end as usize - 10;
    b[at] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let err = ShardSink::resume(dir.path(), resume_spec(), resume_opts(), 5, cp)
        .err()
        .unwrap();
    assert_eq!(err.path, path);
    assert!(err.to_string().contains("s0-db0.0000.kvf"), "{err}");
}
