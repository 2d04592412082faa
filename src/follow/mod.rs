//! `kvferry follow` (issue 14): catching up with a Pika's writes after an export, by reading its
//! binlog as a replication client and copying again every key the writes touched.

pub mod binlog;
pub mod client;
pub mod copy;
pub mod proto;
