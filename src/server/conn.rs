//! Connecting to a server and finding out what it is: the software and version (Pika's
//! differences depend on it) and which databases it has.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::server::endpoint::Endpoint;

/// Server software, from `INFO server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Redis,
    Valkey,
    /// Pika with its (major, minor, patch) version: behaviour differs between 3.3/3.4, 3.5 and 4.0.
    Pika(u32, u32, u32),
    Kvrocks,
}

/// What kvferry knows about a server it connected to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// The URL without credentials, for messages, manifests and reports.
    pub name: String,
    pub kind: ServerKind,
    /// The version string as the server reports it.
    pub version: String,
    /// Database numbers that exist (SELECT-able); `[0]` where the server has one.
    pub databases: Vec<u32>,
}

impl Server {
    /// `"pika 3.5.5"`-style description, recorded as the shard's `source_server`.
    pub fn software(&self) -> String {
        let name = match self.kind {
            ServerKind::Redis => "redis",
            ServerKind::Valkey => "valkey",
            ServerKind::Pika(..) => "pika",
            ServerKind::Kvrocks => "kvrocks",
        };
        format!("{name} {}", self.version)
    }
}

/// The URL with any user name and password removed: passwords never reach logs, manifests,
/// reports or error messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{host}")
        }
        None => url.rsplit_once('@').map_or(url, |(_, h)| h).to_string(),
    }
}

/// How long a command may go without a reply before it counts as lost, by default
/// (`--read-timeout`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a RESP2 connection (Pika answers HELLO 3 with RESP2: speak RESP2 and never negotiate,
/// SERVERS.md) and checks it with PING. Errors name the server and say what to do.
pub fn connect(ep: &Endpoint, timeout: Duration) -> anyhow::Result<redis::Connection> {
    let name = ep.name();
    let tls = name.starts_with("rediss://");
    let client = ep.client()?;
    // The connection's first replies (redis-rs's CLIENT SETINFO) are replies too: a silent
    // host is given up after --read-timeout, not the longer connect timeout.
    let mut conn = client
        .get_connection_with_timeout(timeout.min(ep.read_timeout()))
        .map_err(|e| explain(&name, tls, e))?;
    conn.set_read_timeout(Some(ep.read_timeout())).ok();
    let pong: String = ping_when_loaded(&name, &mut conn).map_err(|e| explain(&name, tls, e))?;
    if pong != "PONG" {
        return Err(anyhow!(
            "{name}: answered PING with {pong:?}: is this a Redis-protocol server?"
        ));
    }
    Ok(conn)
}

/// How long a server that is loading its dataset (a restarted Redis reading its AOF or RDB
/// file answers LOADING) is waited for.
const LOADING_PATIENCE: Duration = Duration::from_secs(600);

/// PING, waiting while the server answers LOADING (saying so every 10 s), for up to
/// [`LOADING_PATIENCE`].
fn ping_when_loaded(name: &str, conn: &mut redis::Connection) -> redis::RedisResult<String> {
    let started = std::time::Instant::now();
    let mut told: Option<std::time::Instant> = None;
    loop {
        match redis::cmd("PING").query(conn) {
            Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError && started.elapsed() < LOADING_PATIENCE => {
                if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    crate::note!(
                        "{name}: the server is loading its dataset; waiting ({} s so far, at most {} s)",
                        started.elapsed().as_secs(),
                        LOADING_PATIENCE.as_secs()
                    );
                    told = Some(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(200)); // polling the server, not synchronisation
            }
            other => return other,
        }
    }
}

/// Turns a connection error into one line an operator can act on.
fn explain(name: &str, tls: bool, e: redis::RedisError) -> anyhow::Error {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let cert = [
        "certificate",
        "unknownissuer",
        "unknown issuer",
        "notvalidforname",
        "badsignature",
    ];
    let wrong_password = e.kind() == redis::ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("invalid password")
        || lower.contains("invalid username-password");
    let hint = if wrong_password {
        "authentication failed: check the user and password (in the URL, or its environment variable or file)"
    } else if lower.contains("noauth") || lower.contains("authentication required") {
        "the server requires a password: give it with --password-env VAR or --password-file FILE, or in the URL (redis://:PASSWORD@host:port)"
    } else if tls && cert.iter().any(|c| lower.contains(c)) {
        "its TLS certificate is not trusted: give the CA that signed it with --tls-ca FILE (or --tls-insecure to skip verification)"
    } else if tls
        && (e.is_timeout()
            || lower.contains("corrupt message")
            || lower.contains("invalidcontenttype")
            || lower.contains("handshake"))
    {
        "no TLS answer: does the server speak TLS on this port? (plain servers take redis://; else check the host, port and firewall)"
    } else if !tls
        && (e.is_connection_dropped() || lower.contains("connection reset") || lower.contains("unexpected end"))
    {
        "the server closed the connection: if it expects TLS on this port, use rediss://"
    } else if e.is_connection_refusal() {
        "connection refused: is the server running, and is this the right host and port?"
    } else if e.is_timeout() {
        "no answer in time (--read-timeout): check the host, port and firewall"
    } else if e.kind() == redis::ErrorKind::ParseError || lower.contains("response") {
        "the peer does not speak the Redis protocol: is this the right port?"
    } else {
        "cannot connect"
    };
    anyhow!("{name}: {hint} ({text})")
}

/// Finds out what the server is (INFO server) and which databases it has (CONFIG GET databases,
/// not INFO keyspace: Pika's keyspace section has another format and is filled in lazily,
/// SERVERS.md).
pub fn describe(url: &str, conn: &mut redis::Connection) -> anyhow::Result<Server> {
    let name = redact(url);
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(conn)
        .with_context(|| format!("{name}: INFO server"))?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    let (kind, version) = if let Some(v) = field("pika_version:") {
        (ServerKind::Pika(part(&v, 0), part(&v, 1), part(&v, 2)), v)
    } else if let Some(v) = field("kvrocks_version:") {
        (ServerKind::Kvrocks, v)
    } else if let Some(v) = field("valkey_version:") {
        (ServerKind::Valkey, v)
    } else if let Some(v) = field("redis_version:") {
        (ServerKind::Redis, v)
    } else {
        return Err(anyhow!(
            "{name}: INFO server names no known server (no redis_version, pika_version or kvrocks_version)"
        ));
    };
    let databases = match kind {
        // Kvrocks answers SELECT n with OK and ignores it (SERVERS.md): one keyspace.
        ServerKind::Kvrocks => vec![0],
        _ => {
            let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG").arg("GET").arg("databases").query(conn);
            // A server that refuses CONFIG has db 0 at least; a reply that does not come is an
            // error, not one database.
            let reply = match reply {
                Err(e) if e.is_timeout() => {
                    return Err(anyhow!(
                        "{name}: CONFIG GET databases: no reply in time (--read-timeout); is the server overloaded?"
                    ))
                }
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    return Err(anyhow::Error::new(e).context(format!("{name}: CONFIG GET databases")))
                }
                r => r,
            };
            match reply.ok().and_then(|r| r.get(1).and_then(|n| n.parse::<u32>().ok())) {
                Some(n) if n > 0 => (0..n).collect(),
                _ => vec![0],
            }
        }
    };
    Ok(Server {
        name,
        kind,
        version,
        databases,
    })
}

fn part(version: &str, i: usize) -> u32 {
    version
        .split('.')
        .nth(i)
        .and_then(|p| p.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_credentials() {
        assert_eq!(redact("redis://user:secret@10.0.0.1:9221/0"), "redis://10.0.0.1:9221/0");
        assert_eq!(redact("rediss://:p%40ss@host:6380"), "rediss://host:6380");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("redis://u:p@ss@host:1"),
            "redis://host:1",
            "the last @ separates the host"
        );
    }

    #[test]
    fn version_parts() {
        assert_eq!((part("3.5.5", 0), part("3.5.5", 1), part("3.5.5", 2)), (3, 5, 5));
        assert_eq!(part("4.0.1-alpha", 2), 1);
    }
}
