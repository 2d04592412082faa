//! The worked values of format-spec/SPEC.md §11 and its layout constants, checked against the
//! code, so that the document and the implementation cannot drift apart.

use kvferry::format::consts::*;
use kvferry::format::frame::BlockHeader;
use kvferry::format::record::{KeyRecord, Value};

/// F-CONV-2: the CRC-32 check value.
#[test]
fn crc32_check_value() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

/// §11: the block header worked example, byte for byte, and its CRC.
#[test]
fn block_header_worked_example() {
    let h = BlockHeader {
        index: 0,
        data_len: 0x20,
        raw_len: 0x30,
        records: 1,
        data_crc: 0x1122_3344,
    };
    let f = h.encode();
    assert_eq!(f.len(), BLOCK_HEADER_FRAME_LEN);
    assert_eq!(BLOCK_HEADER_FRAME_LEN, 36, "F-BLK-1: a block occupies 36 + D bytes");
    assert_eq!(&f[..8], &[0x5B, 0x2A, 0x4D, 0x18, 28, 0, 0, 0]);
    let want = "4B 56 46 42 00 00 00 00 20 00 00 00 30 00 00 00 01 00 00 00 44 33 22 11 58 C2 03 7E";
    assert_eq!(hex::encode_upper(&f[8..]), want.replace(' ', ""));
}

/// §11: the string record worked example.
#[test]
fn string_record_worked_example() {
    let r = KeyRecord {
        db: 0,
        key: b"k",
        part: 0,
        flags: FLAG_LAST,
        expire_at_ms: None,
        value: Value::String(b"v"),
    };
    let mut out = Vec::new();
    r.encode(&mut out);
    assert_eq!(
        out,
        [0x97, 0x01, 0x00, 0xC4, 0x01, 0x6B, 0x00, 0x01, 0xC0, 0xC4, 0x01, 0x76]
    );
}

/// §4.1 and §4.2: frame magics as they appear on disk, header and trailer layouts.
#[test]
fn layout_constants_match_the_spec() {
    assert_eq!(HEADER_FRAME_MAGIC.to_le_bytes(), [0x5A, 0x2A, 0x4D, 0x18]);
    assert_eq!(TRAILER_FRAME_MAGIC.to_le_bytes(), [0x5C, 0x2A, 0x4D, 0x18]);
    assert_eq!(ZSTD_FRAME_MAGIC.to_le_bytes(), [0x28, 0xB5, 0x2F, 0xFD]);
    assert_eq!(HEADER_MAGIC, b"KVFSHARD");
    assert_eq!(TRAILER_TAG, b"KVFTRAIL");
    assert_eq!(HEADER_OVERHEAD, 20, "F-HDR-1: Frame_Size = 20 + B");
    assert_eq!(TRAILER_TAIL_LEN, 16, "F-TRL-1: Frame_Size = B + 16");
    assert_eq!(MAX_BLOCK_RAW, 268_435_456, "§7");
    assert_eq!(MAX_HEADER_BODY, 1_048_576, "§7");
    let header = kvferry::format::frame::ShardHeader {
        shard: "s".into(),
        part: 0,
        db: 0,
        source: "x".into(),
        source_server: None,
        created_unix_ms: 0,
        writer: "w".into(),
    };
    let f = kvferry::format::frame::encode_header(&header);
    let body_len = u32::from_le_bytes(f[20..24].try_into().unwrap()) as usize;
    assert_eq!(f.len(), 8 + HEADER_OVERHEAD + body_len);
    assert_eq!(
        u32::from_le_bytes(f[4..8].try_into().unwrap()) as usize,
        HEADER_OVERHEAD + body_len
    );
}
