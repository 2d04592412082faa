//! Every magic number, layout size and limit of the snapshot format, in one place.
//!
//! Each constant cites the section of `format-spec/SPEC.md` that defines it. Tests check the
//! encoded lengths against these values, so the code and the spec cannot drift apart silently.

/// Major format version this code reads and writes (SPEC §8, F-VER-1).
pub const VERSION_MAJOR: u16 = 1;
/// Minor format version this code writes (SPEC §8, F-VER-4).
pub const VERSION_MINOR: u16 = 2;

/// Name of the manifest in a snapshot directory (SPEC §3, F-SNAP-1).
pub const MANIFEST_NAME: &str = "MANIFEST.json";
/// Value of the manifest's `format` field (SPEC §3, F-SNAP-3).
pub const MANIFEST_FORMAT: &str = "kvferry-snapshot";
/// Extension of part files as kvferry names them (SPEC §3, F-SNAP-5).
pub const PART_EXTENSION: &str = "kvf";

/// Skippable-frame magic of the header frame (SPEC §4.1, F-FRAME-1).
pub const HEADER_FRAME_MAGIC: u32 = 0x184D_2A5A;
/// Skippable-frame magic of a block header frame (SPEC §4.1, F-FRAME-1).
pub const BLOCK_FRAME_MAGIC: u32 = 0x184D_2A5B;
/// Skippable-frame magic of the trailer frame (SPEC §4.1, F-FRAME-1).
pub const TRAILER_FRAME_MAGIC: u32 = 0x184D_2A5C;
/// Magic of a standard zstd frame (RFC 8878 §3.1.1).
pub const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Frame_Header_Descriptor bit: the frame ends with a content checksum (RFC 8878; F-BLK-2).
pub const ZSTD_FHD_CHECKSUM: u8 = 0x04;
/// Frame_Header_Descriptor bits: size of a Dictionary_ID, which must be 0 (F-BLK-4).
pub const ZSTD_FHD_DICT_ID: u8 = 0x03;
/// Size of a skippable frame's magic plus Frame_Size fields.
pub const SKIPPABLE_PREFIX_LEN: usize = 8;

/// Magic at the start of the header payload (SPEC §4.2, F-HDR-1).
pub const HEADER_MAGIC: &[u8; 8] = b"KVFSHARD";
/// Fixed bytes of the header payload before the body: magic, major, minor, body length.
pub const HEADER_FIXED_LEN: usize = 16;
/// Bytes of the header payload besides the body: fixed part plus the trailing CRC (F-HDR-1).
pub const HEADER_OVERHEAD: usize = HEADER_FIXED_LEN + 4;
/// Largest header body a reader accepts (SPEC §7).
pub const MAX_HEADER_BODY: usize = 1 << 20;

/// Tag at the start of a block header payload (SPEC §4.3, F-BLK-1).
pub const BLOCK_TAG: &[u8; 4] = b"KVFB";
/// Size of the block header payload (SPEC §4.3, F-BLK-1).
pub const BLOCK_HEADER_PAYLOAD_LEN: usize = 28;
/// Bytes a block occupies besides its data frame: the whole block header frame (F-BLK-1).
pub const BLOCK_HEADER_FRAME_LEN: usize = SKIPPABLE_PREFIX_LEN + BLOCK_HEADER_PAYLOAD_LEN;
/// Largest decompressed block a reader accepts, and so the largest record (SPEC §7).
pub const MAX_BLOCK_RAW: usize = 256 << 20;
/// Largest data frame a reader accepts (SPEC §7).
pub const MAX_BLOCK_FRAME: usize = MAX_BLOCK_RAW + (1 << 20);

/// Tag at the very end of a complete shard file (SPEC §4.4, F-TRL-1).
pub const TRAILER_TAG: &[u8; 8] = b"KVFTRAIL";
/// The fixed tail of the trailer payload: body length, body CRC, tag (F-TRL-1).
pub const TRAILER_TAIL_LEN: usize = 16;
/// Largest trailer body a reader accepts (SPEC §7).
pub const MAX_TRAILER_BODY: usize = 64 << 20;

/// Deepest MessagePack nesting a reader accepts (SPEC §7).
pub const MAX_NESTING: usize = 16;
/// Number of elements of a key record (SPEC §5.2, F-REC-2).
pub const KEY_RECORD_LEN: u32 = 7;
/// Largest must-understand record kind (SPEC §5.1, F-REC-1).
pub const MAX_MUST_UNDERSTAND_KIND: u64 = 63;
/// Largest skippable record kind (SPEC §5.1, F-REC-1).
pub const MAX_SKIPPABLE_KIND: u64 = 127;

/// Flag: last part of a key occurrence (SPEC §5.2, F-REC-3).
pub const FLAG_LAST: u64 = 1 << 0;
/// Flag: a string holding Pika's own HyperLogLog encoding (F-REC-3).
pub const FLAG_PIKA_HLL: u64 = 1 << 1;
/// Flag: the source held this key under several types at once (F-REC-3).
pub const FLAG_MULTI_TYPE: u64 = 1 << 2;
/// Flags a v1 reader must understand; bits 3-15 and 32-63 are reserved (F-REC-3).
pub const FLAGS_KNOWN: u64 = FLAG_LAST | FLAG_PIKA_HLL | FLAG_MULTI_TYPE;
/// Advisory flags: later minor versions may define them, readers ignore unknown ones (F-REC-3).
pub const FLAGS_ADVISORY: u64 = 0xFFFF_0000;

/// How many of the biggest keys a trailer lists (SPEC §4.4, F-TRL-3).
pub const BIG_KEYS: usize = 10;

/// Default zstd level of kvferry's writer. Level 1 rather than 3: on the benchmark dataset
/// (BENCHMARKS.md) the writer does a median 217 MB/s per core instead of about 160, for files 5%
/// larger (0.44 of Redis' RDB size instead of 0.42).
pub const DEFAULT_LEVEL: i32 = 1;
/// Default target of uncompressed bytes per block (F-BLK-3).
pub const DEFAULT_BLOCK_TARGET: usize = 1 << 20;
