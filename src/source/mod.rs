//! The source side: reads keys from a Redis-protocol server (Pika first) and yields records. It
//! knows nothing of files; `cmd/export.rs` writes what it yields.
//!
//! Facts about Pika relied on here are in ../shared/SERVERS.md; each is cited where it is used.

pub mod conn;
pub(crate) mod drive;
pub mod link;
pub mod pika;
pub mod pika_cache;
pub mod read;
pub mod scan;
pub mod throttle;

pub use conn::{connect, describe, redact, Server, ServerKind};
