//! The three metadata frames of a shard file (SPEC §4): header, block header and trailer. This
//! module owns their byte layouts; the writer and reader only call it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::consts::*;
use super::error::FormatError;

/// The header body (F-HDR-3). Serialised as a MessagePack map with str keys (F-CONV-5).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub shard: String,
    pub part: u32,
    pub db: u32,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_str")]
    pub source_server: Option<String>,
    pub created_unix_ms: u64,
    pub writer: String,
}

/// An optional key that, when present, must be a str (F-HDR-3): nil is refused.
fn present_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// One entry of the trailer's block index: `[offset, D, R, records]` (F-TRL-3).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockEntry(pub u64, pub u32, pub u32, pub u32);

impl BlockEntry {
    pub fn offset(&self) -> u64 {
        self.0
    }
    pub fn data_len(&self) -> u32 {
        self.1
    }
    pub fn raw_len(&self) -> u32 {
        self.2
    }
    pub fn records(&self) -> u32 {
        self.3
    }
    /// Offset just past this block.
    pub fn end(&self) -> u64 {
        self.0 + BLOCK_HEADER_FRAME_LEN as u64 + self.1 as u64
    }
}

/// One of the biggest keys: `[key, type, value_bytes, elements]` (F-TRL-3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BigKey(#[serde(with = "serde_bytes")] pub Vec<u8>, pub String, pub u64, pub u64);

/// The trailer body (F-TRL-3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Trailer {
    pub blocks: Vec<BlockEntry>,
    pub records: u64,
    pub keys: u64,
    pub keys_by_type: BTreeMap<String, u64>,
    /// Key occurrences flagged MULTI_TYPE (format 1.1; absent, so 0, before).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub multi_type_keys: u64,
    pub raw_bytes: u64,
    pub expiring_keys: u64,
    pub min_expire_at_ms: Option<u64>,
    pub max_expire_at_ms: Option<u64>,
    pub big_keys: Vec<BigKey>,
    pub file_crc32: u32,
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn skippable_prefix(magic: u32, payload_len: usize) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&magic.to_le_bytes());
    p[4..].copy_from_slice(&(payload_len as u32).to_le_bytes());
    p
}

fn magic_error(what: &'static str, offset: u64, found: &[u8]) -> FormatError {
    FormatError::BadMagic {
        what,
        offset,
        found: hex::encode(found),
    }
}

/// The whole header frame for `h` (F-HDR-1).
pub fn encode_header(h: &ShardHeader) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(h).expect("BUG: a header always serialises");
    let mut payload = Vec::with_capacity(HEADER_OVERHEAD + body.len());
    payload.extend_from_slice(HEADER_MAGIC);
    payload.extend_from_slice(&VERSION_MAJOR.to_le_bytes());
    payload.extend_from_slice(&VERSION_MINOR.to_le_bytes());
    payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
    payload.extend_from_slice(&body);
    let crc = crc32fast::hash(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    let mut frame = skippable_prefix(HEADER_FRAME_MAGIC, payload.len()).to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// Bytes a reader needs to start checking a header (F-HDR-2).
pub const HEADER_START_LEN: usize = SKIPPABLE_PREFIX_LEN + HEADER_FIXED_LEN;

/// Checks the start of a header frame (magics, then version, then body length) and returns the
/// version and the whole frame's length (F-HDR-2). `start` holds the file's first bytes.
pub fn check_header_start(start: &[u8]) -> Result<((u16, u16), usize), FormatError> {
    if start.len() < 4 || le32(start, 0) != HEADER_FRAME_MAGIC {
        return Err(magic_error("header frame", 0, &start[..start.len().min(4)]));
    }
    if start.len() < HEADER_START_LEN {
        return Err(FormatError::Truncated {
            offset: start.len() as u64,
            detail: format!("the file has only {} bytes, less than a header", start.len()),
        });
    }
    if &start[8..16] != HEADER_MAGIC {
        return Err(magic_error("header", 8, &start[8..16]));
    }
    let (major, minor) = (le16(start, 16), le16(start, 18));
    if major != VERSION_MAJOR {
        return Err(FormatError::UnsupportedVersion {
            found_major: major,
            found_minor: minor,
            supported: VERSION_MAJOR,
        });
    }
    let body_len = le32(start, 20) as usize;
    if body_len > MAX_HEADER_BODY {
        return Err(FormatError::Limit {
            what: "header body length",
            offset: 20,
            value: body_len as u64,
            max: MAX_HEADER_BODY as u64,
        });
    }
    let frame_size = le32(start, 4) as usize;
    if frame_size != HEADER_OVERHEAD + body_len {
        return Err(FormatError::Layout {
            offset: 4,
            detail: format!(
                "header Frame_Size is {frame_size}, but a body of {body_len} bytes needs {}",
                HEADER_OVERHEAD + body_len
            ),
        });
    }
    Ok(((major, minor), SKIPPABLE_PREFIX_LEN + frame_size))
}

/// Parses a whole header frame, already checked by [`check_header_start`].
pub fn parse_header(frame: &[u8]) -> Result<ShardHeader, FormatError> {
    let payload = &frame[SKIPPABLE_PREFIX_LEN..];
    let crc_at = payload.len() - 4;
    let (expected, got) = (le32(payload, crc_at), crc32fast::hash(&payload[..crc_at]));
    if expected != got {
        return Err(FormatError::Checksum {
            what: "header",
            block: None,
            offset: (SKIPPABLE_PREFIX_LEN + crc_at) as u64,
            expected,
            got,
        });
    }
    rmp_serde::from_slice(&payload[HEADER_FIXED_LEN..crc_at]).map_err(|e| FormatError::Body {
        what: "header",
        detail: e.to_string(),
    })
}

/// The fixed fields of a block header (F-BLK-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub index: u32,
    pub data_len: u32,
    pub raw_len: u32,
    pub records: u32,
    pub data_crc: u32,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_FRAME_LEN] {
        let mut f = [0u8; BLOCK_HEADER_FRAME_LEN];
        f[..8].copy_from_slice(&skippable_prefix(BLOCK_FRAME_MAGIC, BLOCK_HEADER_PAYLOAD_LEN));
        let p = &mut f[8..];
        p[..4].copy_from_slice(BLOCK_TAG);
        for (i, v) in [self.index, self.data_len, self.raw_len, self.records, self.data_crc]
            .into_iter()
            .enumerate()
        {
            p[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&p[..24]);
        p[24..].copy_from_slice(&crc.to_le_bytes());
        f
    }

    /// Parses the block header frame found at `offset`, expected to be block `index` (F-BLK-1).
    pub fn parse(f: &[u8; BLOCK_HEADER_FRAME_LEN], offset: u64, index: u32) -> Result<BlockHeader, FormatError> {
        if le32(f, 0) != BLOCK_FRAME_MAGIC {
            let found = &f[..4];
            if le32(f, 0) == TRAILER_FRAME_MAGIC {
                return Err(FormatError::Layout {
                    offset,
                    detail: format!("trailer found where block {index} was expected"),
                });
            }
            return Err(magic_error("block header frame", offset, found));
        }
        if le32(f, 4) as usize != BLOCK_HEADER_PAYLOAD_LEN {
            return Err(FormatError::Layout {
                offset: offset + 4,
                detail: format!(
                    "block header Frame_Size is {}, not {BLOCK_HEADER_PAYLOAD_LEN}",
                    le32(f, 4)
                ),
            });
        }
        let p = &f[8..];
        if &p[..4] != BLOCK_TAG {
            return Err(magic_error("block header", offset + 8, &p[..4]));
        }
        let (expected, got) = (le32(p, 24), crc32fast::hash(&p[..24]));
        if expected != got {
            return Err(FormatError::Checksum {
                what: "block header",
                block: Some(index),
                offset,
                expected,
                got,
            });
        }
        let h = BlockHeader {
            index: le32(p, 4),
            data_len: le32(p, 8),
            raw_len: le32(p, 12),
            records: le32(p, 16),
            data_crc: le32(p, 20),
        };
        if h.index != index {
            return Err(FormatError::Layout {
                offset,
                detail: format!("block header says index {}, expected {index}", h.index),
            });
        }
        if h.raw_len as usize > MAX_BLOCK_RAW {
            return Err(FormatError::Limit {
                what: "block decompressed size",
                offset,
                value: h.raw_len as u64,
                max: MAX_BLOCK_RAW as u64,
            });
        }
        if h.data_len as usize > MAX_BLOCK_FRAME {
            return Err(FormatError::Limit {
                what: "block data frame size",
                offset,
                value: h.data_len as u64,
                max: MAX_BLOCK_FRAME as u64,
            });
        }
        if h.records == 0 {
            return Err(FormatError::Layout {
                offset,
                detail: format!("block {index} holds no records"),
            });
        }
        Ok(h)
    }
}

/// The whole trailer frame for `t` (F-TRL-1).
pub fn encode_trailer(t: &Trailer) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(t).expect("BUG: a trailer always serialises");
    let mut f = skippable_prefix(TRAILER_FRAME_MAGIC, body.len() + TRAILER_TAIL_LEN).to_vec();
    f.extend_from_slice(&body);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    f.extend_from_slice(TRAILER_TAG);
    f
}

/// From the file's last 16 bytes, where the trailer frame starts and how long it is (F-TRL-2).
pub fn locate_trailer(tail: &[u8], file_len: u64) -> Result<(u64, usize), FormatError> {
    let tail_at = file_len.saturating_sub(TRAILER_TAIL_LEN as u64);
    if tail.len() < TRAILER_TAIL_LEN || &tail[8..16] != TRAILER_TAG {
        return Err(FormatError::Truncated {
            offset: file_len,
            detail: format!("the file ({file_len} bytes) does not end with the trailer tag KVFTRAIL"),
        });
    }
    let body_len = le32(tail, 0) as usize;
    if body_len > MAX_TRAILER_BODY {
        return Err(FormatError::Limit {
            what: "trailer body length",
            offset: tail_at,
            value: body_len as u64,
            max: MAX_TRAILER_BODY as u64,
        });
    }
    let frame_len = SKIPPABLE_PREFIX_LEN + body_len + TRAILER_TAIL_LEN;
    if frame_len as u64 > file_len {
        return Err(FormatError::Layout {
            offset: tail_at,
            detail: format!("trailer body length {body_len} is larger than the file"),
        });
    }
    Ok((file_len - frame_len as u64, frame_len))
}

/// Parses the trailer frame located by [`locate_trailer`] at `offset`.
pub fn parse_trailer(f: &[u8], offset: u64) -> Result<Trailer, FormatError> {
    if le32(f, 0) != TRAILER_FRAME_MAGIC {
        return Err(magic_error("trailer frame", offset, &f[..4]));
    }
    let size = le32(f, 4) as usize;
    if size != f.len() - SKIPPABLE_PREFIX_LEN {
        return Err(FormatError::Layout {
            offset: offset + 4,
            detail: format!(
                "trailer Frame_Size is {size}, expected {}",
                f.len() - SKIPPABLE_PREFIX_LEN
            ),
        });
    }
    let body = &f[SKIPPABLE_PREFIX_LEN..f.len() - TRAILER_TAIL_LEN];
    let crc_at = f.len() - 12;
    let (expected, got) = (le32(f, crc_at), crc32fast::hash(body));
    if expected != got {
        return Err(FormatError::Checksum {
            what: "trailer",
            block: None,
            offset: offset + crc_at as u64,
            expected,
            got,
        });
    }
    rmp_serde::from_slice(body).map_err(|e| FormatError::Body {
        what: "trailer",
        detail: e.to_string(),
    })
}
