//! Cluster targets (Redis Cluster, Kvrocks cluster): which node holds a key's slot (CRC16 of the
//! key or of its `{hash tag}`, modulo 16384), from `CLUSTER SLOTS`, which both answer in Redis'
//! format (SERVERS.md), and how a redirect reply reads.

use anyhow::{anyhow, Context};

pub const SLOTS: usize = 16384;

/// CRC16/XMODEM, the checksum of Redis Cluster's key slots.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of `key`: the part between the first `{` and the next `}` when non-empty (a hash
/// tag), else the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The masters of a cluster and which of them holds each slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    /// `host:port` of each master.
    pub nodes: Vec<String>,
    /// For each slot, its master's index in `nodes`.
    pub owner: Vec<u16>,
}

impl SlotMap {
    /// Asks `CLUSTER SLOTS`; every slot must be served.
    pub fn fetch(conn: &mut redis::Connection, name: &str) -> anyhow::Result<SlotMap> {
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(conn)
            .with_context(|| format!("{name}: CLUSTER SLOTS"))?;
        let mut nodes: Vec<String> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS];
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let (Some(lo), Some(hi), Some(redis::Value::Array(master))) =
                (r.first().and_then(int), r.get(1).and_then(int), r.get(2))
            else {
                return Err(anyhow!("{name}: CLUSTER SLOTS: unexpected reply"));
            };
            let host = master.first().and_then(text).unwrap_or_default();
            let port = master.get(1).and_then(int).unwrap_or(0);
            let addr = format!("{host}:{port}");
            let i = match nodes.iter().position(|n| *n == addr) {
                Some(i) => i,
                None => {
                    nodes.push(addr);
                    nodes.len() - 1
                }
            };
            let (lo, hi) = (lo.max(0) as usize, (hi.max(0) as usize).min(SLOTS - 1));
            if lo <= hi {
                owner[lo..=hi].fill(i as u16);
            }
        }
        if let Some(s) = owner.iter().position(|&o| o == u16::MAX) {
            return Err(anyhow!(
                "{name}: the cluster serves no node for slot {s}: fix the cluster (CLUSTER SLOTS) before importing"
            ));
        }
        Ok(SlotMap { nodes, owner })
    }

    pub fn node_of(&self, key: &[u8]) -> usize {
        self.owner[slot(key) as usize] as usize
    }
}

fn int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A reply that sends a command elsewhere or asks to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives at this `host:port` now (refresh the map).
    Moved(String),
    /// Ask this node once, after ASKING (a slot being migrated, Redis only).
    Ask(String),
    /// Retry later (TRYAGAIN during a migration).
    TryAgain,
}

impl Redirect {
    /// Reads `MOVED 3999 127.0.0.1:6381`, `ASK ...` and `TRYAGAIN ...` errors.
    pub fn from_error(code: &str, details: Option<&str>) -> Option<Redirect> {
        let addr = || details?.split_whitespace().nth(1).map(String::from);
        match code {
            "MOVED" => addr().map(Redirect::Moved),
            "ASK" => addr().map(Redirect::Ask),
            "TRYAGAIN" => Some(Redirect::TryAgain),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster() {
        assert_eq!(crc16(b"123456789"), 0x31C3, "CRC16/XMODEM check value");
        // Values from Redis' CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"user:{42}:name"), slot(b"42"));
        assert_eq!(slot(b"{}x"), slot(b"{}x"), "an empty tag is no tag");
        assert_ne!(slot(b"{}x"), slot(b""));
    }
}
