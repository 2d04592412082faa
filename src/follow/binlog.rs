//! Pika's binlog items as its master sends them to a slave (`BinlogSync.binlog`), and which keys
//! each one touched.
//!
//! An item (`src/pika_binlog_transverter.cc` in Pika's source, the same in 3.5 and 4.0) is a
//! 34-byte little-endian header, then one command as a RESP array:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | type, 1 |
//! | 2 | 4 | exec time, unix seconds |
//! | 6 | 4 | term |
//! | 10 | 8 | logic id (a per-database sequence number) |
//! | 18 | 4 | file number before the write |
//! | 22 | 8 | offset before the write |
//! | 30 | 4 | content length |
//! | 34 | n | content |
//!
//! Pika rewrites commands before it logs them so that each item that changes a key names one key,
//! at argv\[1\] (DEL of several keys, MSET, SMOVE, RPOPLPUSH... become one item per key; SETEX,
//! INCR, APPEND become `pksetexat`; EXPIRE becomes `expireat`; the *STORE commands become `del`
//! then `sadd`/`zadd`). [`touched`] classifies every write command Pika has by that rule, and
//! refuses the ones it does not know, by name: a follower that skipped one would lose its write.

use crate::target::reply::Replies;
use anyhow::{bail, Context};

/// The item header's size.
pub const HEADER_LEN: usize = 34;

/// One decoded binlog item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// When the master wrote it (unix seconds).
    pub exec_time: u32,
    pub logic_id: u64,
    /// The command, argv\[0\] as the client spelled it.
    pub argv: Vec<Vec<u8>>,
}

fn le<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("BUG: length checked by the caller")
}

/// Decodes an item: its header, and the RESP command it holds.
pub fn decode(b: &[u8]) -> anyhow::Result<Item> {
    if b.len() < HEADER_LEN {
        bail!(
            "a binlog item of {} bytes is shorter than its {HEADER_LEN}-byte header",
            b.len()
        );
    }
    let kind = u16::from_le_bytes(le(b, 0));
    if kind != 1 {
        bail!("binlog item type {kind}; Pika writes only type 1");
    }
    let len = u32::from_le_bytes(le(b, 30)) as usize;
    if b.len() - HEADER_LEN != len {
        bail!(
            "the binlog item's header says {len} bytes of content, {} follow it",
            b.len() - HEADER_LEN
        );
    }
    let argv = resp_array(&b[HEADER_LEN..]).context("the binlog item's command")?;
    Ok(Item {
        exec_time: u32::from_le_bytes(le(b, 2)),
        logic_id: u64::from_le_bytes(le(b, 10)),
        argv,
    })
}

/// Parses one RESP array of bulk strings, the whole of `b`.
pub fn resp_array(b: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let r = Replies::parse_whole(b)?;
    if r.len() != 1 {
        bail!("{} RESP values where one command belongs", r.len());
    }
    let cmd = r.get(0);
    if !cmd.is_array() {
        bail!(
            "not a RESP array (it starts {:?})",
            String::from_utf8_lossy(&b[..b.len().min(16)])
        );
    }
    if cmd.elements() == 0 {
        bail!("an empty RESP array");
    }
    cmd.items()
        .enumerate()
        .map(|(i, e)| {
            e.bulk()
                .map(<[u8]>::to_vec)
                .with_context(|| format!("element {i} is not a bulk string"))
        })
        .collect()
}

/// What a binlog item did to the database's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Changed (or deleted) this key.
    Key(Vec<u8>),
    /// Emptied the whole database (FLUSHDB, and FLUSHALL, which Pika logs as FLUSHDB per db).
    All,
    /// Deleted the keys of some types that match a glob (Pika 3.5's `pkpatternmatchdel PATTERN
    /// TYPE`, logged as given): which ones is not known from the item.
    Pattern { pattern: Vec<u8>, kind: Vec<u8> },
    /// Changed no key (Pika 4.0 logs SUNION, SINTER and SDIFF; admin items).
    Nothing,
}

/// Write commands that Pika logs with the key they change at argv\[1\] (after its rewrites):
/// every write command of Pika 3.5.5 and 4.0.1 (`kCmdFlagsWrite` in `src/pika_command.cc`), and
/// the forms its rewrites produce (`pksetexat`, `expireat`, `pexpireat`).
const ONE_KEY: &[&str] = &[
    // strings
    "set",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "append",
    "incr",
    "incrby",
    "incrbyfloat",
    "decr",
    "decrby",
    "setrange",
    "delvx",
    "mset",
    "msetnx",
    "pksetexat",
    "setbit",
    // keys
    "del",
    "unlink",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "persist",
    // hashes
    "hset",
    "hsetnx",
    "hmset",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    // lists
    "lpush",
    "rpush",
    "lpushx",
    "rpushx",
    "linsert",
    "lset",
    "lrem",
    "ltrim",
    "lpop",
    "rpop",
    "blpop",
    "brpop",
    "rpoplpush",
    // sets
    "sadd",
    "srem",
    "spop",
    "smove",
    "sunionstore",
    "sinterstore",
    "sdiffstore",
    // sorted sets
    "zadd",
    "zincrby",
    "zrem",
    "zremrangebyrank",
    "zremrangebyscore",
    "zremrangebylex",
    "zpopmax",
    "zpopmin",
    "zunionstore",
    "zinterstore",
    // HyperLogLogs and geo
    "pfadd",
    "pfmerge",
    "geoadd",
    // streams
    "xadd",
    "xtrim",
    "xdel",
    // slot migration: `slotsmgrt-exec-wrapper KEY command...`
    "slotsmgrt-exec-wrapper",
];

/// Commands that change no key, or admin items with no key.
const NO_KEY: &[&str] = &[
    "sunion",
    "sinter",
    "sdiff",
    "padding",
    "dummy",
    "clearreplicationid",
    "clearcache",
    "exec",
    "multi",
    "select",
    "ping",
];

/// Which keys the item's command touched. A command this table does not know is an error naming
/// it: skipping it could lose a write.
pub fn touched(argv: &[Vec<u8>]) -> anyhow::Result<Touched> {
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
    // BITOP is logged as `set dest`; an unrewritten one (none seen) would name its dest at argv[2].
    if name == "bitop" {
        return match argv.get(2) {
            Some(k) => Ok(Touched::Key(k.clone())),
            None => bail!("a binlog item `bitop` without its destination key"),
        };
    }
    if ONE_KEY.contains(&name.as_str()) {
        return match argv.get(1) {
            Some(k) => Ok(Touched::Key(k.clone())),
            None => bail!("a binlog item `{name}` without its key"),
        };
    }
    match name.as_str() {
        "flushdb" | "flushall" => {
            // Pika 3.5's `flushdb TYPE` empties one type; which keys had it is not known either.
            Ok(Touched::All)
        }
        "pkpatternmatchdel" => Ok(Touched::Pattern {
            pattern: argv.get(1).cloned().unwrap_or_default(),
            kind: argv.get(2).cloned().unwrap_or_default(),
        }),
        n if NO_KEY.contains(&n) => Ok(Touched::Nothing),
        _ => bail!(
            "the binlog holds a command kvferry does not know, `{}` ({} arguments): stopping rather than skip its write; please report it",
            String::from_utf8_lossy(&argv[0]),
            argv.len() - 1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(args: &[&[u8]]) -> Vec<u8> {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend(format!("${}\r\n", a.len()).bytes());
            b.extend_from_slice(a);
            b.extend_from_slice(b"\r\n");
        }
        b
    }

    fn item(args: &[&[u8]]) -> Vec<u8> {
        let content = resp(args);
        let mut b = Vec::new();
        b.extend(1u16.to_le_bytes());
        b.extend(1_764_000_000u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(42u64.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(151_802u64.to_le_bytes());
        b.extend((content.len() as u32).to_le_bytes());
        b.extend(content);
        b
    }

    #[test]
    fn an_item_decodes_to_its_header_and_command() {
        let it = decode(&item(&[b"pksetexat", b"k\r\n\0", b"1764000100", b"v"])).unwrap();
        assert_eq!(it.exec_time, 1_764_000_000);
        assert_eq!(it.logic_id, 42);
        assert_eq!(
            it.argv,
            vec![
                b"pksetexat".to_vec(),
                b"k\r\n\0".to_vec(),
                b"1764000100".to_vec(),
                b"v".to_vec()
            ]
        );
        assert_eq!(touched(&it.argv).unwrap(), Touched::Key(b"k\r\n\0".to_vec()));
    }

    #[test]
    fn damaged_items_are_errors_not_panics() {
        let good = item(&[b"set", b"k", b"v"]);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_type = good.clone();
        wrong_type[0] = 2;
        assert!(decode(&wrong_type).unwrap_err().to_string().contains("type 2"));
        let mut long = good.clone();
        long.push(b'x');
        assert!(decode(&long).is_err());
        for bad in [
            &b"*1\r\n$5\r\nab\r\n"[..],
            b"*x\r\n",
            b"+OK\r\n",
            b"*1\r\n$1\r\nab",
            b"*0\r\n",
            b"*1\r\n*0\r\n",
            b"*1\r\n+a\r\n",
            b"*1\r\n$1\r\na\r\n+x\r\n",
            b"*1\r\n$1\r\na\r\nx",
            b"*-1\r\n",
            b"",
        ] {
            assert!(resp_array(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A payload may hold CRLF, and be empty.
        assert_eq!(
            resp_array(b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$0\r\n\r\n").unwrap(),
            [b"SET".to_vec(), b"a\r\nb".to_vec(), Vec::new()]
        );
    }

    #[test]
    fn every_rewritten_form_names_its_key_and_unknown_commands_stop() {
        let k = |args: &[&[u8]]| touched(&args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
        for (args, key) in [
            (&[&b"SET"[..], b"a", b"1"][..], &b"a"[..]),
            (&[b"DEL", b"b"], b"b"),
            (&[b"expireat", b"c", b"1764000000"], b"c"),
            (&[b"pexpireat", b"c", b"1764000000000"], b"c"),
            (&[b"RPOP", b"src"], b"src"),
            (&[b"LPUSH", b"dst", b"v"], b"dst"),
            (&[b"xadd", b"s", b"1-1", b"f", b"v"], b"s"),
            (&[b"slotsmgrt-exec-wrapper", b"k", b"set", b"k", b"v"], b"k"),
            (&[b"bitop", b"and", b"dest", b"x", b"y"], b"dest"),
        ] {
            assert_eq!(k(args).unwrap(), Touched::Key(key.to_vec()), "{args:?}");
        }
        assert_eq!(k(&[b"flushdb"]).unwrap(), Touched::All);
        assert_eq!(k(&[b"FLUSHALL"]).unwrap(), Touched::All);
        assert_eq!(k(&[b"sunion", b"a", b"b"]).unwrap(), Touched::Nothing);
        assert_eq!(
            k(&[b"pkpatternmatchdel", b"user:*", b"hash"]).unwrap(),
            Touched::Pattern {
                pattern: b"user:*".to_vec(),
                kind: b"hash".to_vec()
            }
        );
        let e = k(&[b"newcmd", b"x"]).unwrap_err().to_string();
        assert!(e.contains("`newcmd`") && e.contains("does not know"), "{e}");
        assert!(k(&[b"set"]).is_err(), "a write without its key is an error");
    }
}
