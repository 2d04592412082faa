//! Reads untrusted bytes through every reader path; the fuzz target (`fuzz/`) and its corpus
//! replay test (`tests/fuzz_replay.rs`) call this. Whatever the input, it returns; it never
//! panics and never allocates beyond the limits of SPEC §7.

use std::path::Path;

use super::frame;
use super::reader::{walk_bytes, ShardReader};
use super::record::{PartSeq, Record};
use super::render::render_record;
use super::stats::TrailerStats;

/// Drives `data`, taken as a shard file, through header and trailer parsing, every block, every
/// record, the part sequence, the statistics, the JSON rendering, the file CRC, the parallel
/// decoder and the trailer-less walk. Returns how many records decoded (to keep the work live).
pub fn read_everything(data: &[u8]) -> usize {
    let mut n = 0;
    let _ = frame::check_header_start(&data[..data.len().min(frame::HEADER_START_LEN)]);
    if let Ok(w) = walk_bytes(data) {
        n += w.blocks.len();
    }
    let Ok(r) = ShardReader::from_bytes(Path::new("fuzz-input"), data.to_vec()) else {
        return n;
    };
    let mut seq = PartSeq::default();
    let mut stats = TrailerStats::default();
    let mut line = String::new();
    for block in r.blocks() {
        let Ok(block) = block else { continue };
        for rec in block.records() {
            let Ok(rec) = rec else { break };
            n += 1;
            let _ = seq.accept(&rec);
            stats.add(&rec);
            if let Record::Key(k) = &rec {
                line.clear();
                render_record(&mut line, "fuzz", k);
            }
        }
    }
    let _ = seq.finish();
    let _ = stats.compare(r.trailer());
    let _ = r.verify_file_crc();
    r.par_blocks(
        2,
        |b| b.map(|b| b.records().count()).unwrap_or(0),
        |_, c| {
            n += c;
            true
        },
    );
    n
}
