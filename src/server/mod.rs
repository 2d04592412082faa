//! Connections to servers, one home for both sides (export, import, verify, migrate):
//!
//! - [`endpoint`]: what a `--source`/`--target` URL, a password option and TLS options mean;
//! - [`conn`]: connecting (with the errors an operator can act on) and telling which server
//!   answered (Pika, Kvrocks, Redis, Valkey, and its version);
//! - [`link`]: a connection that survives faults: it reconnects, re-selects its database, sends
//!   a lost read again and says when its server does not answer;
//! - [`throttle`]: `--max-ops-per-sec`, shared by every connection to a server in a run;
//! - [`health`]: live PING, INFO and request latency of the servers of a run, and the
//!   `--max-latency-ms` controller that steers the throttle by them.

pub mod conn;
pub mod endpoint;
pub mod health;
pub mod link;
pub mod throttle;

pub use conn::{connect, describe, redact, Server, ServerKind};
pub use endpoint::{ConnectArgs, Endpoint};
