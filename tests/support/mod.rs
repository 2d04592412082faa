//! Real servers for integration tests: each test starts its own server on a free loopback port,
//! in its own temporary directory with its log, and stops it when the guard drops.
//!
//! The binaries come from environment variables:
//! - `KVFERRY_TEST_REDIS` (default `redis-server`, the Debian package);
//! - `KVFERRY_TEST_PIKA`: a Pika binary; when set, `Server::source()` starts Pika instead of Redis,
//!   with Pika's own stock configuration (`KVFERRY_TEST_PIKA_CONF`, else `<binary>.conf`, else
//!   the source tree's `conf/pika.conf` beside the binary's directory) with only its paths, port
//!   and `databases : 8` changed, so its defaults (the cache on, `timeout : 60`) are tested;
//! - `KVFERRY_TEST_KVROCKS`: a Kvrocks binary; when set, `Server::target()` starts Kvrocks.
//!
//! Every server start prints which server and binary it used, so a run's log says whether it
//! tested Pika and Kvrocks or Redis standing in for them; nothing is skipped silently.
//!
//! When a test ends, the guard checks that its server is still the process it started and still
//! answers PING (unless the test killed or restarted it): a tool that crashes its production
//! source fails every test that made it do so (issue 15: XINFO GROUPS killed Pika 4.0.1).
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod compare;

/// Runs the kvferry binary under test.
pub fn kvferry(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .args(args)
        .env("XDG_STATE_HOME", state_home())
        .output()
        .unwrap()
}

/// Where the binary under test keeps checkpoints by default (its `$XDG_STATE_HOME`): in the
/// build's scratch directory, not the user's home.
#[allow(dead_code)] // not every test file asks
pub fn state_home() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("state")
}

/// A command's status and output, for failure messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Pika,
    Kvrocks,
}

pub struct Server {
    pub kind: Kind,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    /// The test stopped or restarted the server itself: the guard does not check it.
    stopped: bool,
}

/// Pika uses its port and these offsets from it (`kPortShift*` in its pika_define.h), on every
/// interface: an rsync daemon on +1000 when a replica syncs, and, once started, the replication
/// server on +2000 and the rsync server on +10001 (seen listening on 4.0.1).
const PIKA_SHIFTS: [u32; 3] = [1000, 2000, 10001];
const PIKA_LISTENS: [u32; 2] = [2000, 10001];

/// A loopback port that is free now (and, for Pika, with the ports of [`PIKA_SHIFTS`] free too).
fn free_port(kind: Kind) -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let extra_free = |p: u32| p <= 65535 && std::net::TcpListener::bind(("0.0.0.0", p as u16)).is_ok();
        if kind != Kind::Pika || PIKA_SHIFTS.iter().all(|s| extra_free(port as u32 + s)) {
            return port;
        }
    }
}

/// A free loopback port, for a second listener (e.g. `tls-port`).
pub fn free_port_any() -> u16 {
    free_port(Kind::Redis)
}

impl Server {
    /// The server that exports read from: Pika when `KVFERRY_TEST_PIKA` is set, else Redis.
    pub fn source() -> Server {
        Self::start(
            if std::env::var_os("KVFERRY_TEST_PIKA").is_some() {
                Kind::Pika
            } else {
                Kind::Redis
            },
            &[],
        )
    }

    /// The server that imports write to: Kvrocks when `KVFERRY_TEST_KVROCKS` is set, else Redis.
    pub fn target() -> Server {
        Self::start(
            if std::env::var_os("KVFERRY_TEST_KVROCKS").is_some() {
                Kind::Kvrocks
            } else {
                Kind::Redis
            },
            &[],
        )
    }

    /// Starts a server of `kind` with extra configuration lines (`name value`, Redis syntax).
    /// The free port it picks can be taken by a concurrent test before the server binds it; then
    /// it tries another port.
    pub fn start(kind: Kind, extra: &[(&str, &str)]) -> Server {
        for attempt in 1.. {
            match Self::try_start(kind, extra) {
                Ok(s) => return s,
                Err(why)
                    if (why.contains("Address already in use") || why.contains("port conflict")) && attempt < 5 =>
                {
                    continue
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("BUG: the loop returns or panics")
    }

    fn try_start(kind: Kind, extra: &[(&str, &str)]) -> Result<Server, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port(kind);
        let log = dir.path().join("server.log");
        let (var, default) = match kind {
            Kind::Redis => ("KVFERRY_TEST_REDIS", Some("redis-server")),
            Kind::Pika => ("KVFERRY_TEST_PIKA", None),
            Kind::Kvrocks => ("KVFERRY_TEST_KVROCKS", None),
        };
        let bin = std::env::var(var)
            .ok()
            .or(default.map(String::from))
            .unwrap_or_else(|| panic!("{var} is not set"));
        let d = dir.path().display().to_string();
        let conf = dir.path().join("server.conf");
        let text = match kind {
            Kind::Redis => format!(
                "port {port}\nbind 127.0.0.1\ndir {d}\nsave \"\"\nappendonly no\nlogfile {}\n",
                log.display()
            ),
            // Pika's config is "key : value"; it also listens on port+1000 and port+2000.
            Kind::Pika => pika_conf(&bin, port, &d),
            Kind::Kvrocks => format!("bind 127.0.0.1\nport {port}\ndir {d}/data\nlog-dir {d}\n"),
        };
        let sep = if kind == Kind::Pika { " : " } else { " " };
        // Pika takes the first line of a name: the stock line of a name given here goes.
        let text = if kind == Kind::Pika {
            text.lines()
                .filter(|l| {
                    !extra
                        .iter()
                        .any(|(k, _)| l.split(':').next().is_some_and(|n| n.trim() == *k))
                })
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            text
        };
        let text = extra.iter().fold(text, |t, (k, v)| format!("{t}{k}{sep}{v}\n"));
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(&bin);
        match kind {
            Kind::Redis => cmd.arg(&conf),
            Kind::Pika | Kind::Kvrocks => cmd.arg("-c").arg(&conf),
        };
        let child = cmd
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        eprintln!("test server: {kind:?} ({bin}) on 127.0.0.1:{port}, dir {d}");
        let mut s = Server {
            kind,
            port,
            dir,
            child,
            log,
            stopped: false,
        };
        if let Err(why) = s.wait_ready() {
            s.stopped = true; // not started: the guard has nothing to check
            return Err(why);
        }
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection, RESP2.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// How many keys database `db` holds. On Kvrocks counted with SCAN: its DBSIZE is a cached
    /// count, 0 until `DBSIZE SCAN` has run (SERVERS.md); on Pika with KEYS.
    pub fn try_key_count(&self, db: u32) -> redis::RedisResult<u64> {
        let mut c = redis::Client::open(self.url())?.get_connection()?;
        if self.kind == Kind::Pika {
            // Pika's DBSIZE is a cached count too, and its streams are listed apart (SERVERS.md):
            // KEYS, then KEYS * stream (small test databases only).
            let _: () = redis::cmd("SELECT").arg(db).query(&mut c)?;
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c)?;
            let streams: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg("*")
                .arg("stream")
                .query(&mut c)
                .unwrap_or_default();
            let all: std::collections::HashSet<Vec<u8>> = keys.into_iter().chain(streams).collect();
            return Ok(all.len() as u64);
        }
        if self.kind != Kind::Kvrocks {
            let _: () = redis::cmd("SELECT").arg(db).query(&mut c)?;
            return redis::cmd("DBSIZE").query(&mut c);
        }
        let (mut cursor, mut n) = ("0".to_string(), 0u64);
        loop {
            let (next, keys): (String, Vec<Vec<u8>>) =
                redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(1000).query(&mut c)?;
            n += keys.len() as u64;
            if next == "0" {
                return Ok(n);
            }
            cursor = next;
        }
    }

    pub fn key_count(&self, db: u32) -> u64 {
        self.try_key_count(db).unwrap()
    }

    /// How many databases the server has (CONFIG GET databases; 1 where it has none to say).
    #[allow(dead_code)] // not every test file asks
    pub fn databases(&self) -> u32 {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("databases")
            .query(&mut self.conn())
            .unwrap_or_default();
        v.get(1).and_then(|n| n.parse().ok()).unwrap_or(1)
    }

    /// Everything the server wrote, for failure messages (the end of each log; Pika writes its
    /// logs into `log/`).
    pub fn logs(&self) -> String {
        let d = self.dir.path();
        let mut files: Vec<PathBuf> = ["server.log", "stdout.log", "stderr.log"]
            .iter()
            .map(|f| d.join(f))
            .collect();
        if let Ok(entries) = std::fs::read_dir(d.join("log")) {
            let mut more: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            more.sort();
            files.extend(more);
        }
        files
            .iter()
            .filter_map(|f| {
                let t = std::fs::read_to_string(f).ok()?;
                let tail = t.char_indices().rev().nth(8000).map_or(0, |(i, _)| i);
                Some(format!("== {} ==\n{}", f.display(), &t[tail..]))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls PING until the server answers, against a deadline; says why not, with its log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{:?} exited with {status} before answering; its log:\n{}",
                    self.kind,
                    self.logs()
                ));
            }
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            // Any reply, NOAUTH included (a server with requirepass), means it is up.
            let up = ping.as_ref().is_ok_and(|p| p == "PONG")
                || ping.is_err_and(|e| !e.is_io_error() && !e.is_connection_refusal());
            // Pika answers PING before it binds its last rsync port, and aborts when that one is
            // taken (by a concurrent test): ready only once every port of it listens.
            let all = self.kind != Kind::Pika
                || PIKA_LISTENS.iter().all(|s| {
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], (self.port as u32 + s) as u16));
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                });
            if up && all {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "{:?} on port {} did not answer PING in 20 s; its log:\n{}",
                self.kind,
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20)); // polling interval, not synchronisation
        }
    }

    /// Stops the server at once (like kill -9), keeping its directory.
    pub fn kill(&mut self) {
        self.stopped = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics, with the server's log, unless the server this guard started is still running and
    /// answers PING.
    pub fn assert_alive(&mut self) {
        let gone = match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot be waited for: {e}")),
        };
        let ping = redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                redis::cmd("PING").query::<String>(&mut c)
            });
        let why = gone.or_else(|| match ping {
            Ok(_) => None,
            Err(e) if !e.is_io_error() && !e.is_connection_refusal() && !e.is_timeout() => None, // NOAUTH
            Err(e) => Some(format!("does not answer PING ({e})")),
        });
        if let Some(why) = why {
            panic!(
                "the {:?} server on port {} {why} at the end of the test; its log:\n{}",
                self.kind,
                self.port,
                self.logs()
            );
        }
    }

    /// Starts the same server again on the same port and directory (a restart).
    pub fn restart(&mut self) {
        self.kill();
        let bin = std::env::var(match self.kind {
            Kind::Redis => "KVFERRY_TEST_REDIS",
            Kind::Pika => "KVFERRY_TEST_PIKA",
            Kind::Kvrocks => "KVFERRY_TEST_KVROCKS",
        })
        .unwrap_or_else(|_| "redis-server".into());
        let conf = self.dir.path().join("server.conf");
        let mut cmd = Command::new(bin);
        match self.kind {
            Kind::Redis => cmd.arg(&conf),
            Kind::Pika | Kind::Kvrocks => cmd.arg("-c").arg(&conf),
        };
        self.child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.stopped = false;
        self.wait_ready().unwrap_or_else(|why| panic!("restart: {why}"));
    }
}

/// A Redis Cluster of `n` masters that the test creates (cluster-enabled servers joined with
/// `redis-cli --cluster create`), ready when every node sees every slot served.
pub fn cluster(n: usize) -> Vec<Server> {
    let nodes: Vec<Server> = (0..n)
        .map(|_| {
            Server::start(
                Kind::Redis,
                &[
                    ("cluster-enabled", "yes"),
                    ("cluster-config-file", "nodes.conf"),
                    ("cluster-node-timeout", "5000"),
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli (package redis-tools) is needed to create a cluster");
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &nodes {
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut s.conn()).unwrap();
            if info.contains("cluster_state:ok") && info.contains(&format!("cluster_known_nodes:{n}")) {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle: {info}");
            std::thread::sleep(Duration::from_millis(20)); // polling interval, not synchronisation
        }
    }
    nodes
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped && !std::thread::panicking() {
            self.assert_alive();
        }
        if !self.stopped && std::thread::panicking() && matches!(self.child.try_wait(), Ok(Some(_))) {
            // The test failed and its server is gone: say so, and keep its directory.
            let kept = std::env::temp_dir().join(format!("kvferry-dead-server-{}", self.port));
            let _ = Command::new("cp").arg("-a").arg(self.dir.path()).arg(&kept).status();
            eprintln!(
                "the {:?} server on port {} had exited; its directory is kept in {}",
                self.kind,
                self.port,
                kept.display()
            );
        }
        self.kill();
    }
}

/// Pika's stock configuration (see the module's note) with this server's port and paths, the
/// process in the foreground and 8 databases (Pika's most, `MAX_DB_NUM`; the stock file has 1).
fn pika_conf(bin: &str, port: u16, d: &str) -> String {
    let beside = PathBuf::from(format!("{bin}.conf"));
    let tree = std::path::Path::new(bin)
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("conf/pika.conf"));
    let path = std::env::var_os("KVFERRY_TEST_PIKA_CONF")
        .map(PathBuf::from)
        .or_else(|| beside.exists().then_some(beside))
        .or_else(|| tree.filter(|t| t.exists()))
        .unwrap_or_else(|| {
            panic!("no stock pika.conf for {bin}: set KVFERRY_TEST_PIKA_CONF=/path/to/pika/conf/pika.conf")
        });
    let stock = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Pika needs `maxclients + 5000` open files (PIKA_MIN_RESERVED_FDS) and exits when it cannot
    // raise its limit that far: where the hard limit is lower (20000 in this sandbox, against
    // the stock maxclients of 20000), maxclients is lowered to fit, and the run says so.
    let stock_max: u64 = stock
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim() == "maxclients")
                .map(|(_, v)| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let hard = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_max
    } else {
        u64::MAX
    };
    let mut ours = vec![];
    if hard < stock_max + 5000 {
        let fit = hard.saturating_sub(5000).max(100);
        eprintln!(
            "test server: Pika's maxclients lowered from {stock_max} to {fit}: the open-files hard limit is {hard}"
        );
        ours.push(("maxclients", fit.to_string()));
    }
    ours.extend([
        ("port", port.to_string()),
        ("db-path", format!("{d}/db/")),
        ("log-path", format!("{d}/log/")),
        ("dump-path", format!("{d}/dump/")),
        ("db-sync-path", format!("{d}/dbsync/")),
        ("pidfile", format!("{d}/pika.pid")),
        ("daemonize", "no".into()),
        ("databases", "8".into()),
    ]);
    let key = |l: &str| l.split_once(':').map(|(k, _)| k.trim().to_string());
    let mut text: String = stock
        .lines()
        .filter(|l| l.starts_with('#') || !key(l).is_some_and(|k| ours.iter().any(|(o, _)| *o == k)))
        .map(|l| format!("{l}\n"))
        .collect();
    for (k, v) in &ours {
        text.push_str(&format!("{k} : {v}\n"));
    }
    text
}

/// Gives the stream `key` a consumer group `g` read from the start, with its first entry pending
/// for the consumer `alice`.
pub fn group_with_a_pending_entry(c: &mut redis::Connection, key: &str) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("g")
        .arg("0")
        .query(c)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("alice")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(key)
        .arg(">")
        .query(c)
        .unwrap();
}

/// What a [`Proxy`] does to the connections through it.
#[derive(Clone, Copy)]
pub enum Fault {
    /// Stall each connection at the first command holding these bytes: they go no further, so
    /// no reply ever comes (a server stuck on one command).
    Stall(&'static [u8]),
    /// Cut each connection (both ways) once this many bytes went through it in either
    /// direction: mid-pipeline, mid-reply.
    Cut(usize),
    /// As `Cut`, but only the first connection to reach this many bytes is cut: the client's
    /// reconnection goes through.
    CutOnce(usize),
    /// Hold back every n-th piece of a reply (as read from the server, up to 16 KiB) for so
    /// long: a slow network or a busy server, beyond the client's read timeout if longer.
    Delay(usize, std::time::Duration),
}

/// A TCP proxy in front of a server on loopback, injecting a [`Fault`] into every connection
/// and forwarding everything else. Its threads end with the test process.
pub struct Proxy {
    pub port: u16,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: u16, fault: Fault) -> Proxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let counted = cuts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let moved = Arc::new(AtomicUsize::new(0));
                let cut_once = cut_once.clone();
                let cuts = counted.clone();
                let pipe = move |mut from: std::net::TcpStream,
                                 mut to: std::net::TcpStream,
                                 upward: bool,
                                 moved: Arc<AtomicUsize>| {
                    let mut buf = [0u8; 16384];
                    let mut pieces = 0;
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        match fault {
                            Fault::Stall(t) if upward && buf[..n].windows(t.len()).any(|w| w == t) => {
                                // Read on and drop, so the client's writes never block.
                                while matches!(from.read(&mut buf), Ok(n) if n > 0) {}
                                break;
                            }
                            Fault::Cut(limit) => {
                                let before = moved.fetch_add(n, Relaxed);
                                if before + n > limit {
                                    let part = limit.saturating_sub(before);
                                    let _ = to.write_all(&buf[..part]);
                                    cuts.fetch_add(1, Relaxed);
                                    break;
                                }
                            }
                            Fault::CutOnce(limit) => {
                                let before = moved.fetch_add(n, Relaxed);
                                if before + n > limit && !cut_once.swap(true, Relaxed) {
                                    let part = limit.saturating_sub(before);
                                    let _ = to.write_all(&buf[..part]);
                                    cuts.fetch_add(1, Relaxed);
                                    break;
                                }
                            }
                            Fault::Delay(n, by) if !upward => {
                                pieces += 1;
                                if pieces % n == 0 {
                                    std::thread::sleep(by); // the fault itself, not synchronisation
                                }
                            }
                            _ => {}
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let m2 = moved.clone();
                let down = pipe.clone();
                std::thread::spawn(move || down(s2, c2, false, m2));
                std::thread::spawn(move || pipe(client, server, true, moved));
            }
        });
        Proxy { port, cuts }
    }

    /// How many connections it has cut so far (each direction of one counts).
    pub fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::Relaxed)
    }
}
