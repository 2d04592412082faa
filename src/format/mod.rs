//! The snapshot format (format-spec/SPEC.md): pure, no network, no CLI. It reads `Read`/files and
//! writes `Write`/files, and owns every byte offset.

pub mod check;
pub mod consts;
pub mod error;
pub mod exercise;
pub mod frame;
pub(crate) mod msgpack;
pub mod reader;
pub mod record;
pub mod render;
pub mod snapshot;
pub mod stats;
pub mod writer;

pub use error::{FormatError, ShardError, SnapshotError};
pub use frame::{ShardHeader, Trailer};
pub use reader::{Block, ReadMode, ShardReader};
pub use record::{KeyRecord, KeyType, Record, Value};
pub use writer::{ShardWriter, WriterOptions};
