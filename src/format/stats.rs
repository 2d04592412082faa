//! The statistics a trailer carries (F-TRL-3): counts per type, expiry range, biggest keys.
//! The writer accumulates them to write the trailer; `check` accumulates them again from the
//! records it reads and compares, so both sides count with the same code.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::consts::{BIG_KEYS, FLAG_MULTI_TYPE};
use super::frame::{BigKey, Trailer};
use super::record::{KeyRecord, KeyType, Record};

/// Trailer statistics over a sequence of records.
#[derive(Default, Debug)]
pub struct TrailerStats {
    records: u64,
    keys: u64,
    keys_by_type: BTreeMap<String, u64>,
    multi_type: u64,
    expiring: u64,
    min_expire: Option<u64>,
    max_expire: Option<u64>,
    /// Size of the occurrence being read, over its parts so far.
    cur_bytes: u64,
    cur_elements: u64,
    big: Vec<BigKey>,
}

impl TrailerStats {
    /// Counts one record of any kind (a skippable one counts in `records` only, F-REC-1).
    pub fn add(&mut self, rec: &Record) {
        match rec {
            Record::Key(k) => self.add_key(k),
            Record::Skippable { .. } => self.records += 1,
        }
    }

    pub fn add_key(&mut self, r: &KeyRecord) {
        self.records += 1;
        if r.part == 0 {
            self.keys += 1;
            *self.keys_by_type.entry(r.key_type().name().to_string()).or_default() += 1;
            if r.flags & FLAG_MULTI_TYPE != 0 {
                self.multi_type += 1;
            }
            if let Some(at) = r.expire_at_ms {
                self.expiring += 1;
                self.min_expire = Some(self.min_expire.map_or(at, |m| m.min(at)));
                self.max_expire = Some(self.max_expire.map_or(at, |m| m.max(at)));
            }
            self.cur_bytes = 0;
            self.cur_elements = 0;
        }
        let (bytes, elements) = r.value.size();
        self.cur_bytes += bytes;
        self.cur_elements += elements;
        if r.is_last() {
            let elements = if r.key_type() == KeyType::String {
                1
            } else {
                self.cur_elements
            };
            self.offer_big(r.key, r.key_type(), self.cur_bytes, elements);
        }
    }

    /// Keeps the BIG_KEYS biggest occurrences in the order F-TRL-3 gives.
    fn offer_big(&mut self, key: &[u8], ty: KeyType, bytes: u64, elements: u64) {
        let rank = |b: &BigKey| (Reverse(b.2), b.0.clone(), b.1.clone(), Reverse(b.3));
        if self.big.len() == BIG_KEYS {
            let w = &self.big[BIG_KEYS - 1];
            if (Reverse(bytes), key, ty.name(), Reverse(elements))
                >= (Reverse(w.2), w.0.as_slice(), w.1.as_str(), Reverse(w.3))
            {
                return;
            }
        }
        self.big
            .push(BigKey(key.to_vec(), ty.name().to_string(), bytes, elements));
        self.big.sort_by_key(rank);
        self.big.truncate(BIG_KEYS);
    }

    /// Sets the trailer fields these statistics cover (all but the block index, `raw_bytes` and
    /// `file_crc32`, which belong to the bytes, not the records).
    pub fn fill(self, t: &mut Trailer) {
        t.records = self.records;
        t.keys = self.keys;
        t.keys_by_type = self.keys_by_type;
        t.multi_type_keys = self.multi_type;
        t.expiring_keys = self.expiring;
        t.min_expire_at_ms = self.min_expire;
        t.max_expire_at_ms = self.max_expire;
        t.big_keys = self.big;
    }

    /// Says which of the covered trailer fields differ from these statistics (F-TRL-4).
    pub fn compare(self, t: &Trailer) -> Result<(), String> {
        let want = t;
        let mut got = t.clone();
        self.fill(&mut got);
        let mut diffs = Vec::new();
        macro_rules! field {
            ($f:ident) => {
                if got.$f != want.$f {
                    diffs.push(format!(
                        "{}: trailer {:?}, records {:?}",
                        stringify!($f),
                        want.$f,
                        got.$f
                    ));
                }
            };
        }
        field!(records);
        field!(keys);
        field!(keys_by_type);
        field!(multi_type_keys);
        field!(expiring_keys);
        field!(min_expire_at_ms);
        field!(max_expire_at_ms);
        field!(big_keys);
        if diffs.is_empty() {
            return Ok(());
        }
        Err(format!("the records do not match the trailer: {}", diffs.join("; ")))
    }
}
