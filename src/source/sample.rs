//! `export --sample N|RATE`: a small snapshot that stands for the whole, for trial runs.
//!
//! - **The same keys on every run.** A key is in the sample when the first 8 bytes of the
//!   SHA-256 of its name, read as a big-endian integer, are below `rate × 2^64`. The decision
//!   depends on the name only, so every run over the same data picks the same keys, and a
//!   smaller rate picks a subset of a larger one. `--sample N` asks for about N keys: the rate
//!   is the largest power of two (1/2, 1/4, ...) that still gives at least N keys of the
//!   source's key count, so small changes of the count keep the rate (and the keys).
//! - **Every type and size class.** Every listed key's type is known (TYPE, or Pika's per-type
//!   listing) and its length is asked (STRLEN, HLEN, LLEN, SCARD, ZCARD, XLEN: no values are
//!   read for keys outside the sample). Sizes fall in three classes (strings: under 1 KiB, under
//!   1 MiB, more; others: under 128 elements, under 10,000, more). Where a type and size class of
//!   a shard has no key in the hash sample, the key of that class with the lowest hash is added
//!   at the end of the shard: deterministic too.
//!
//! Keys outside the sample count as filtered, and `unsampled` says how many of them there are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use redis::ConnectionLike;
use sha2::{Digest, Sha256};

use crate::format::record::KeyType;

/// The hash that decides whether a key is in the sample.
pub fn key_hash(key: &[u8]) -> u64 {
    let d = Sha256::digest(key);
    u64::from_be_bytes(d[..8].try_into().expect("BUG: SHA-256 has 32 bytes"))
}

/// The threshold for a fraction of keys: those whose hash is below it are in the sample.
pub fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else {
        (rate.max(0.0) * 2f64.powi(64)) as u64
    }
}

/// `--sample N` over `total` keys: the largest power-of-two fraction 2^-k with
/// `total × 2^-k >= n` (1 when `n >= total`).
pub fn rate_for(n: u64, total: u64) -> f64 {
    let mut rate = 1.0;
    while rate / 2.0 * total as f64 >= n as f64 && rate > 2f64.powi(-60) {
        rate /= 2.0;
    }
    rate
}

/// What `--sample` asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Asked {
    /// About this many keys.
    Keys(u64),
    /// This fraction of the keys (0 < r <= 1).
    Rate(f64),
}

/// Parses `--sample`: an integer is a number of keys, a fraction below 1 a rate.
pub fn parse(s: &str) -> Result<Asked, String> {
    if let Ok(n) = s.parse::<u64>() {
        return if n == 0 {
            Err("--sample 0: give a number of keys (e.g. 1000) or a fraction (e.g. 0.01)".into())
        } else {
            Ok(Asked::Keys(n))
        };
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(Asked::Rate(r)),
        _ => Err(format!(
            "--sample {s}: give a number of keys (e.g. 1000) or a fraction above 0 and at most 1 (e.g. 0.01)"
        )),
    }
}

/// Size class of a key of type `t` and length `len` (bytes for strings, elements otherwise).
pub fn size_class(t: KeyType, len: u64) -> u8 {
    let (small, medium) = match t {
        KeyType::String => (1 << 10, 1 << 20),
        _ => (128, 10_000),
    };
    match len {
        l if l < small => 0,
        l if l < medium => 1,
        _ => 2,
    }
}

pub const CLASS_NAMES: [&str; 3] = ["small", "medium", "big"];

fn len_command(t: KeyType) -> &'static str {
    match t {
        KeyType::String => "STRLEN",
        KeyType::Hash => "HLEN",
        KeyType::List => "LLEN",
        KeyType::Set => "SCARD",
        KeyType::ZSet => "ZCARD",
        KeyType::Stream => "XLEN",
    }
}

/// A shard's sample: the threshold, and which types and size classes it holds so far.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub threshold: u64,
    coverage: Arc<Mutex<Coverage>>,
}

#[derive(Debug, Default)]
struct Coverage {
    /// (type, class) with a key in the hash sample.
    covered: BTreeSet<(KeyType, u8)>,
    /// (type, class) without: the key of lowest hash seen so far.
    best: BTreeMap<(KeyType, u8), (u64, Vec<u8>)>,
}

impl Sample {
    pub fn new(threshold: u64) -> Sample {
        Sample {
            threshold,
            coverage: Arc::default(),
        }
    }

    /// The same threshold with coverage of its own (one per shard).
    pub fn fresh(&self) -> Sample {
        Sample::new(self.threshold)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key_hash(key) < self.threshold || self.threshold == u64::MAX
    }

    /// Asks the length of `keys` (of types `types`) in one pipeline and notes their classes.
    pub fn note(&self, conn: &mut dyn ConnectionLike, keys: &[(&[u8], KeyType, bool)]) -> anyhow::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (k, t, _) in keys {
            pipe.cmd(len_command(*t)).arg(*k);
        }
        let replies: Vec<redis::Value> = pipe
            .query(conn)
            .context("--sample: the length pipeline (STRLEN/HLEN/LLEN/SCARD/ZCARD/XLEN)")?;
        let mut c = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        for ((k, t, sampled), r) in keys.iter().zip(replies) {
            // A key gone meanwhile answers 0 (or an error for a changed type): class 0.
            let len: u64 = redis::from_redis_value(&r).unwrap_or(0);
            let class = (*t, size_class(*t, len));
            if *sampled {
                c.covered.insert(class);
                c.best.remove(&class);
            } else if !c.covered.contains(&class) {
                let h = key_hash(k);
                let e = c.best.entry(class).or_insert_with(|| (h, k.to_vec()));
                if h < e.0 {
                    *e = (h, k.to_vec());
                }
            }
        }
        Ok(())
    }

    /// The keys to add for the types and size classes the hash sample missed, by type.
    pub fn extras(&self) -> BTreeMap<KeyType, Vec<Vec<u8>>> {
        let c = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_type: BTreeMap<KeyType, Vec<Vec<u8>>> = BTreeMap::new();
        for ((t, _), (_, k)) in &c.best {
            let keys = by_type.entry(*t).or_default();
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        by_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_thresholds() {
        assert_eq!(rate_for(1000, 100_000), 1.0 / 64.0); // 1562 keys; 1/128 would give 781
        assert_eq!(rate_for(10, 5), 1.0);
        assert_eq!(threshold(1.0), u64::MAX);
        assert_eq!(threshold(0.5), 1 << 63);
        assert_eq!(parse("1000"), Ok(Asked::Keys(1000)));
        assert_eq!(parse("0.01"), Ok(Asked::Rate(0.01)));
        assert!(parse("0").is_err() && parse("1.5").is_err() && parse("x").is_err());
        assert_eq!(size_class(KeyType::String, 1023), 0);
        assert_eq!(size_class(KeyType::Hash, 128), 1);
        assert_eq!(size_class(KeyType::ZSet, 10_000), 2);
    }

    #[test]
    fn the_hash_is_the_spec_one() {
        // SHA-256("a") starts ca978112ca1bbdca.
        assert_eq!(key_hash(b"a"), 0xca97_8112_ca1b_bdca);
    }
}
