//! What a write into a target would meet, found before any write (`import --dry-run`,
//! `migrate --dry-run`): whether the target may be written (its role, the user's rights), and
//! whether the data fits (memory, or what a disk-based server says of its disk). Each finding
//! is ok, a warning, or a refusal: what the real run would refuse.

use std::io::Write;
use std::time::Duration;

use crate::server::conn::{connect, Server, ServerKind};
use crate::server::endpoint::Endpoint;
use crate::util::human_bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Refuse,
}

/// One thing found: its topic (`target`, `rights`, `room`, `conflicts`, ...) and what it is.
#[derive(Clone, Debug)]
pub struct Finding {
    pub level: Level,
    pub topic: &'static str,
    pub text: String,
}

/// The findings of a dry run, in the order they were found.
#[derive(Default)]
pub struct Findings(pub Vec<Finding>);

impl Findings {
    pub fn add(&mut self, level: Level, topic: &'static str, text: impl Into<String>) {
        self.0.push(Finding {
            level,
            topic,
            text: text.into(),
        });
    }

    pub fn refusals(&self) -> usize {
        self.0.iter().filter(|f| f.level == Level::Refuse).count()
    }

    pub fn warnings(&self) -> usize {
        self.0.iter().filter(|f| f.level == Level::Warn).count()
    }

    /// `  ok      room: ...`, one line each.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for f in &self.0 {
            let level = match f.level {
                Level::Ok => "ok",
                Level::Warn => "WARN",
                Level::Refuse => "REFUSE",
            };
            writeln!(out, "  {level:<7} {:<11} {}", f.topic, f.text)?;
        }
        Ok(())
    }
}

/// The commands an import or migrate sends, with arguments for a rights check.
const WRITES: [&[&str]; 9] = [
    &["DEL", "kvferry:probe"],
    &["SET", "kvferry:probe", "v"],
    &["HSET", "kvferry:probe", "f", "v"],
    &["RPUSH", "kvferry:probe", "v"],
    &["SADD", "kvferry:probe", "v"],
    &["ZADD", "kvferry:probe", "1", "v"],
    &["XADD", "kvferry:probe", "1-1", "f", "v"],
    &["PEXPIREAT", "kvferry:probe", "1"],
    &["EXPIRE", "kvferry:probe", "1"],
];

fn info(c: &mut redis::Connection, section: &str) -> String {
    redis::cmd("INFO").arg(section).query(c).unwrap_or_default()
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// Whether the target may be written: a replica may not (refused); the user's rights to each
/// write command are asked with `ACL DRYRUN` (Redis and Valkey 7 and later), which runs nothing.
/// Servers without it (older Redis, Kvrocks, Pika) are reported as not checked.
pub fn writable(probe: &Endpoint, server: &Server, out: &mut Findings) -> anyhow::Result<()> {
    let mut c = connect(probe, Duration::from_secs(10))?;
    let repl = info(&mut c, "replication");
    match field(&repl, "role") {
        Some("slave" | "replica") => {
            let master = match (field(&repl, "master_host"), field(&repl, "master_port")) {
                (Some(h), Some(p)) => format!(" of {h}:{p}"),
                _ => String::new(),
            };
            out.add(
                Level::Refuse,
                "target",
                format!(
                    "{} is a replica{master}, which cannot be written: import into its master",
                    server.name
                ),
            );
            return Ok(());
        }
        role => out.add(
            Level::Ok,
            "target",
            format!(
                "{}, {}",
                server.software(),
                role.map_or("role not reported".into(), |r| format!("role {r}"))
            ),
        ),
    }
    let user: Option<String> = redis::cmd("ACL").arg("WHOAMI").query(&mut c).ok();
    let dryrun_works = user.as_ref().is_some_and(|u| {
        redis::cmd("ACL")
            .arg("DRYRUN")
            .arg(u)
            .arg("PING")
            .query::<redis::Value>(&mut c)
            .is_ok()
    });
    let Some(user) = user.filter(|_| dryrun_works) else {
        out.add(
            Level::Ok,
            "rights",
            format!(
                "not checked: {} has no ACL DRYRUN (Redis and Valkey 7 have); the first write will tell",
                server.software()
            ),
        );
        return Ok(());
    };
    let mut refused = Vec::new();
    for w in WRITES {
        // Pika takes one field per HSET (HMSET is sent): the rights asked are the command sent.
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DRYRUN").arg(&user);
        for a in w {
            cmd.arg(*a);
        }
        match cmd.query::<redis::Value>(&mut c) {
            Ok(redis::Value::Okay) => {}
            Ok(redis::Value::SimpleString(s)) if s == "OK" => {}
            Ok(v) => refused.push((w[0], value_text(&v))),
            Err(e) => refused.push((w[0], e.to_string())),
        }
    }
    if refused.is_empty() {
        out.add(
            Level::Ok,
            "rights",
            format!("user {user:?} may run every write command kvferry sends (ACL DRYRUN)"),
        );
    } else {
        out.add(
            Level::Refuse,
            "rights",
            format!(
                "user {user:?} may not run {} ({}); grant them (ACL SETUSER {user} +@write ~*) or use another user",
                refused.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", "),
                refused[0].1
            ),
        );
    }
    Ok(())
}

fn value_text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Whether `data_bytes` (the keys and values as the snapshot holds them, uncompressed) fit on
/// the target. In memory (Redis, Valkey) against `maxmemory`: a warning when they do not fit,
/// since a server at its limit with `noeviction` refuses writes (and one with eviction drops
/// keys); in memory a key takes more than its raw size. Disk-based servers (Kvrocks, Pika) are
/// asked what they report of their disk; free disk space itself they do not report.
pub fn room(probe: &Endpoint, server: &Server, data_bytes: u64, out: &mut Findings) -> anyhow::Result<()> {
    let mut c = connect(probe, Duration::from_secs(10))?;
    let data = human_bytes(data_bytes);
    match server.kind {
        ServerKind::Redis | ServerKind::Valkey => {
            let mem = info(&mut c, "memory");
            let num = |k: &str| field(&mem, k).and_then(|v| v.parse::<u64>().ok());
            let used = num("used_memory").unwrap_or(0);
            let policy = field(&mem, "maxmemory_policy").unwrap_or("unknown").to_string();
            match num("maxmemory").filter(|&m| m > 0) {
                Some(max) => {
                    let left = max.saturating_sub(used);
                    let text = format!(
                        "{data} of data to write; {} used of maxmemory {} ({} left, policy {policy}); in memory keys take more than their raw size",
                        human_bytes(used),
                        human_bytes(max),
                        human_bytes(left)
                    );
                    let level = if data_bytes > left { Level::Warn } else { Level::Ok };
                    let text = if level == Level::Warn {
                        format!("does not fit: {text}; raise maxmemory or use a bigger target")
                    } else {
                        text
                    };
                    out.add(level, "room", text);
                }
                None => out.add(
                    Level::Ok,
                    "room",
                    format!(
                        "{data} of data to write; no maxmemory: the host's memory is the limit ({} used now)",
                        human_bytes(used)
                    ),
                ),
            }
        }
        _ => {
            let all = info(&mut c, "");
            let said: Vec<String> = [
                "used_disk_size",
                "disk_capacity",
                "used_disk_percent",
                "estimate_num_keys",
                "db_size_human",
                "db_size",
            ]
            .iter()
            .filter_map(|k| field(&all, k).map(|v| format!("{k} {v}")))
            .collect();
            out.add(
                Level::Ok,
                "room",
                format!(
                    "{data} of data to write (RocksDB compresses it on disk); the server reports {}; it does not report free disk space: check its data directory has room",
                    if said.is_empty() { "nothing of its disk".to_string() } else { said.join(", ") }
                ),
            );
        }
    }
    Ok(())
}
