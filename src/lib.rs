//! kvferry: moves the data of Redis-protocol databases through snapshot files.
//!
//! - [`format`]: the snapshot format of `format-spec/SPEC.md` (pure: no network, no CLI);
//! - [`server`]: connections to servers, shared by both sides;
//! - [`source`]: reading a server's keys into records (listing, typed reads);
//! - [`target`]: writing records to a server as commands;
//! - [`cmd`]: the subcommands, the only layer that adds file and server context to errors;
//! - [`cli`]: argument parsing and dispatch.

pub mod cli;
pub mod cmd;
pub mod follow;
pub mod format;
pub mod interrupt;
pub mod metrics;
pub mod progress;
pub mod server;
pub mod source;
pub mod target;
pub mod util;
