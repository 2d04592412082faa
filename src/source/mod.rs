//! The source side: reads the keys of a Redis-protocol server (Pika first) and yields records.
//! It knows nothing of files or targets: export writes what it yields into a snapshot, migrate
//! writes it to a target. It reads as a line, one module per stage:
//!
//! 1. [`list`]: listing a database's keys page by page (SCAN, or Pika's range scans in
//!    [`pika`]), with each key's TYPE and PTTL;
//! 2. [`keys`]: typed reads: what each listed key is (gone, filtered, unknown, or to read with
//!    its expiry), small keys whole in one pipeline, big ones in parts through [`read`] (the
//!    commands per type), every key counted or named in a report;
//! 3. records, handed to an [`Out`] by [`drive`], which runs the line with one connection
//!    listing and several reading, and says when a checkpoint is exact.
//!
//! [`sample`] narrows stage 2 to a sample (`export --sample`). [`pika_cache`] guards Pika 3.x, whose cache must be off while it is read. Facts about Pika
//! relied on here are in ../shared/SERVERS.md; each is cited where it is used.

pub mod drive;
pub mod keys;
pub mod list;
pub mod pika;
pub mod pika_cache;
pub mod read;
pub mod sample;

pub use drive::{export_db, holds_keys, Out};
pub use keys::DbReport;
pub use list::{Position, ScanOptions};
