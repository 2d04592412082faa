//! Where records go on a target: the mapping options (`--db-map`, `--namespace-map`,
//! `--prefix-map`) and what they mean for each shard ([`destinations`]), connecting to the
//! target and finding out whether it is a cluster ([`open_target`]) and whether it can be
//! written ([`check_writable`]), and the routing of keys to a cluster's masters. Import, verify
//! and migrate share it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::build::Dialect;
use super::cluster::SlotMap;
use super::lane::{Lane, LaneConf};
use crate::server::conn::{connect, describe, Server, ServerKind};
use crate::server::endpoint::{ConnectArgs, Endpoint};

/// What to do with a key the snapshot holds under several types (Pika <= 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum MultiType {
    /// Do not write such keys; each is a failed key, by name.
    Fail,
    /// Write the first type the snapshot holds; report the others by name as skipped.
    First,
    /// The first type keeps the name; each other type is written as KEY:TYPE (e.g. user:1:hash).
    Suffix,
}

/// Where a shard goes.
#[derive(Clone, Debug)]
pub struct Dest {
    pub lane: LaneConf,
    /// Prepended to every key (`--prefix-map`).
    pub prefix: Vec<u8>,
    /// "redis://h:p db 3"-style, for messages.
    pub describe: String,
}

/// Where each snapshot database goes on the target (shared by import, verify and migrate).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MapArgs {
    /// Map snapshot databases to target databases, e.g. `0=0,1=5`. Required when the snapshot
    /// holds several databases (Redis, Valkey, Pika targets).
    #[arg(long, value_name = "MAP", conflicts_with = "namespace_map")]
    pub db_map: Option<String>,
    /// Map snapshot databases to Kvrocks namespaces by token, e.g. `0=tok0,1=env:NS1_TOKEN,2=file:/run/ns2`.
    /// Each connection authenticates with its namespace's token.
    #[arg(long, value_name = "MAP")]
    pub namespace_map: Option<String>,
    /// Prefix the keys of a snapshot database, e.g. `1=db1:` (lets databases share one target
    /// keyspace without colliding).
    #[arg(long, value_name = "MAP")]
    pub prefix_map: Option<String>,
}

/// `0=0,1=5`-style maps.
pub(crate) fn parse_map(flag: &str, spec: Option<&str>) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut m = BTreeMap::new();
    let Some(spec) = spec else { return Ok(m) };
    for pair in spec.split(',').filter(|p| !p.is_empty()) {
        let (db, to) = pair
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag}: {pair:?} is not DB=VALUE"))?;
        let db: u32 = db
            .trim()
            .parse()
            .map_err(|_| anyhow!("{flag}: {db:?} is not a database number"))?;
        if m.insert(db, to.to_string()).is_some() {
            bail!("{flag}: database {db} is mapped twice");
        }
    }
    Ok(m)
}

/// A namespace token: literal, `env:VAR` or `file:PATH` (keeps it out of `ps`).
fn token(spec: &str) -> anyhow::Result<String> {
    if let Some(var) = spec.strip_prefix("env:") {
        std::env::var(var).map_err(|_| anyhow!("--namespace-map: the variable {var} is not set"))
    } else if let Some(path) = spec.strip_prefix("file:") {
        let t = std::fs::read_to_string(path).with_context(|| format!("--namespace-map: cannot read {path}"))?;
        Ok(t.trim_end_matches(['\n', '\r']).to_string())
    } else {
        Ok(spec.to_string())
    }
}

/// What holds the databases being mapped, for the words of a mapping error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A snapshot: a database is left out with `--shard`.
    Snapshot,
    /// A source server (migrate): a database is left out with `--db`.
    Source,
}

impl Holder {
    fn noun(self) -> &'static str {
        match self {
            Holder::Snapshot => "the snapshot",
            Holder::Source => "the source",
        }
    }

    fn pick(self) -> &'static str {
        match self {
            Holder::Snapshot => "--shard",
            Holder::Source => "--db",
        }
    }
}

/// Works out where each shard goes (given by its database, in order), refusing ambiguous or
/// lossy setups.
pub(crate) fn destinations(
    a: &MapArgs,
    holder: Holder,
    skip_existing: bool,
    shard_dbs: &[u32],
    target: Option<(&Endpoint, &Server)>,
    cluster: bool,
) -> anyhow::Result<Vec<Dest>> {
    let dbs: std::collections::BTreeSet<u32> = shard_dbs.iter().copied().collect();
    let db_map = parse_map("--db-map", a.db_map.as_deref())?;
    let ns_map = parse_map("--namespace-map", a.namespace_map.as_deref())?;
    let prefix_map = parse_map("--prefix-map", a.prefix_map.as_deref())?;
    let kvrocks = target.is_some_and(|(_, s)| s.kind == ServerKind::Kvrocks);
    if cluster && !ns_map.is_empty() {
        bail!("--namespace-map: the target is a cluster, and Kvrocks refuses namespaces in cluster mode; map databases to key prefixes with --db-map DB=0 --prefix-map DB=PREFIX");
    }
    if cluster && db_map.values().any(|v| v != "0") {
        bail!("--db-map: the target is a cluster, which has database 0 only; map every database to 0 with a --prefix-map to keep them apart");
    }
    // A cluster, like Kvrocks, has one keyspace: no SELECT.
    let kvrocks = kvrocks || cluster;
    let mapped = !db_map.is_empty() || !ns_map.is_empty();
    if dbs.len() > 1 && !mapped {
        let list: Vec<String> = dbs.iter().map(u32::to_string).collect();
        bail!(
            "{} holds databases {}: say where each goes with {} (e.g. {}), or take one with {}",
            holder.noun(),
            list.join(", "),
            if kvrocks {
                "--namespace-map (Kvrocks ignores SELECT, so databases would merge)"
            } else {
                "--db-map"
            },
            dbs.iter()
                .map(|d| format!("{d}={}", if kvrocks { format!("TOKEN{d}") } else { d.to_string() }))
                .collect::<Vec<_>>()
                .join(","),
            holder.pick()
        );
    }
    for (flag, m) in [("--db-map", &db_map), ("--namespace-map", &ns_map)] {
        if let Some(d) = dbs.iter().find(|d| !m.is_empty() && !m.contains_key(d)) {
            bail!(
                "{flag}: {}'s database {d} is not mapped; map it, or leave it out with {}",
                holder.noun(),
                holder.pick()
            );
        }
    }
    if kvrocks && db_map.values().any(|v| v != "0") {
        bail!("--db-map: the target is Kvrocks, which ignores SELECT (up to 2.14) and would merge the databases; map databases to namespaces with --namespace-map DB=TOKEN");
    }
    let mut out = Vec::new();
    let mut seen: BTreeMap<(String, Vec<u8>), u32> = BTreeMap::new();
    for &db in shard_dbs {
        let prefix = prefix_map.get(&db).cloned().unwrap_or_default().into_bytes();
        let (endpoint, keyspace, describe_to, to_db) = match target {
            None => {
                let to = match db_map.get(&db) {
                    Some(v) => v
                        .parse()
                        .map_err(|_| anyhow!("--db-map: {v:?} is not a database number"))?,
                    None => db,
                };
                (
                    Endpoint::plain("resp"),
                    format!("db {to}"),
                    format!("db {to}"),
                    Some(to),
                )
            }
            Some((ep, server)) => {
                if let Some(t) = ns_map.get(&db) {
                    // Namespaces isolate keyspaces on Kvrocks only; elsewhere a token is just a
                    // password, and every mapped database lands in the same keyspace.
                    let keyspace = if kvrocks {
                        format!("namespace of db {db}")
                    } else {
                        "db 0".into()
                    };
                    (
                        ep.with_token(token(t)?),
                        keyspace,
                        format!("the namespace whose token is mapped to db {db}"),
                        None,
                    )
                } else {
                    let to = match db_map.get(&db) {
                        Some(v) => v
                            .parse()
                            .map_err(|_| anyhow!("--db-map: {v:?} is not a database number"))?,
                        None => db,
                    };
                    if !kvrocks && !server.databases.contains(&to) {
                        bail!(
                            "{}: has no database {to} (it has {}); map db {db} elsewhere with --db-map",
                            server.name,
                            server.databases.len()
                        );
                    }
                    let keyspace = if kvrocks { "db 0".into() } else { format!("db {to}") };
                    (ep.clone(), keyspace.clone(), keyspace, (!kvrocks).then_some(to))
                }
            }
        };
        if let Some(other) = seen.insert((keyspace.clone(), prefix.clone()), db) {
            if other != db {
                bail!(
                    "databases {other} and {db} would both be written to {keyspace}{}: their keys would merge. Map them apart, or give them different prefixes with --prefix-map",
                    if prefix.is_empty() { String::new() } else { format!(" with prefix {:?}", String::from_utf8_lossy(&prefix)) }
                );
            }
        }
        let name = target.map_or_else(|| "RESP".to_string(), |(_, s)| s.name.clone());
        let describe = format!(
            "{name} {describe_to}{}",
            if prefix.is_empty() {
                String::new()
            } else {
                format!(" prefix {:?}", String::from_utf8_lossy(&prefix))
            }
        );
        out.push(Dest {
            lane: LaneConf {
                endpoint,
                db: to_db,
                skip_existing,
            },
            prefix,
            describe,
        });
    }
    Ok(out)
}

/// Routing by slot to a cluster's masters.
#[derive(Clone)]
pub struct ClusterRoute {
    pub map: SlotMap,
    pub per_node: usize,
    /// Where to ask for the slot map again after a MOVED.
    pub seed: LaneConf,
}

impl ClusterRoute {
    pub(crate) fn lane_of(&self, name: &[u8]) -> usize {
        self.map.node_of(name) * self.per_node + crc32fast::hash(name) as usize % self.per_node
    }

    /// Reads the slot map again; slots that moved to a node the import has no connections to
    /// stay routed where they were (their commands follow MOVED from there).
    pub(crate) fn refresh(&mut self) -> anyhow::Result<()> {
        let mut lane = Lane::open(&self.seed)?;
        let fresh = SlotMap::fetch(lane.conn(), &self.seed.endpoint.name())?;
        for (slot, &o) in fresh.owner.iter().enumerate() {
            let addr = &fresh.nodes[o as usize];
            if let Some(i) = self.map.nodes.iter().position(|n| n == addr) {
                self.map.owner[slot] = i as u16;
            }
        }
        Ok(())
    }
}

/// A server to write to (or verify against), as found on connecting.
pub(crate) struct Target {
    /// How to reach it; with namespaces and no admin password, through the first token.
    pub probe: Endpoint,
    pub server: Server,
    /// Its slot map, when it is a cluster.
    pub slots: Option<SlotMap>,
}

/// Connects to `url`, finds out what it is and whether it is a cluster, and says so on stderr.
pub(crate) fn open_target(connect_args: &ConnectArgs, url: &str, map: &MapArgs, role: &str) -> anyhow::Result<Target> {
    let endpoint = connect_args.endpoints(&[url.to_string()])?.remove(0);
    // With namespaces and no admin password, the first token opens the first connection.
    let first_token = parse_map("--namespace-map", map.namespace_map.as_deref())?
        .values()
        .next()
        .map(|t| token(t))
        .transpose()?;
    let probe = match first_token {
        Some(t) if !endpoint.has_password() => endpoint.with_token(t),
        _ => endpoint.clone(),
    };
    let mut conn = connect(&probe, Duration::from_secs(10))?;
    let server = describe(&endpoint.name(), &mut conn)?;
    let cluster: String = redis::cmd("INFO").arg("cluster").query(&mut conn).unwrap_or_default();
    let slots = if cluster.lines().any(|l| l.trim() == "cluster_enabled:1") {
        Some(SlotMap::fetch(&mut conn, &server.name)?)
    } else {
        None
    };
    match &slots {
        Some(m) => crate::note!(
            "{}: {} ({role}), a cluster of {} masters: {}",
            server.name,
            server.software(),
            m.nodes.len(),
            m.nodes.join(", ")
        ),
        None => crate::note!("{}: {} ({role})", server.name, server.software()),
    }
    Ok(Target { probe, server, slots })
}

/// Glob-escapes `p` for SCAN MATCH.
pub(crate) fn glob_escape(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len() + 1);
    for &b in p {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Refuses, before anything is written, a target that would refuse every key one by one: a
/// read-only replica (INFO replication), or a user without write rights (a probe key, written
/// and deleted; not in a dry run, which writes nothing). Issue 11.
pub(crate) fn check_writable(probe: &Endpoint, name: &str, dry_run: bool) -> anyhow::Result<()> {
    let mut c = connect(probe, Duration::from_secs(10))?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut c).unwrap_or_default();
    let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
    if matches!(field("role:"), Some("slave" | "replica")) {
        let master = match (field("master_host:"), field("master_port:")) {
            (Some(h), Some(p)) => format!(" of {h}:{p}"),
            _ => String::new(),
        };
        bail!("{name}: is a replica{master}, which cannot be written: import into its master. Nothing was written.");
    }
    if dry_run {
        return Ok(());
    }
    let key = format!("kvferry:write-probe:{}:{}", std::process::id(), crate::util::now_ms());
    let set: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg("1").query(&mut c);
    match set {
        Ok(()) => {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query(&mut c);
            Ok(())
        }
        // A cluster node that does not hold the probe's slot: writable as far as it can tell.
        Err(e) if matches!(e.kind(), redis::ErrorKind::Moved | redis::ErrorKind::Ask) => Ok(()),
        // An ACL limited to some key patterns refuses the probe's key, not necessarily the
        // snapshot's: no verdict.
        Err(e) if e.to_string().contains("access a key") => Ok(()),
        Err(e) => bail!(
            "{name}: refuses writes ({e}): check the user's rights (ACL), that the server is not read-only, and that it has room. Nothing was written."
        ),
    }
}

impl Dest {
    /// This destination on each master of a cluster, or itself alone.
    pub(crate) fn nodes(&self, slots: Option<&SlotMap>) -> Vec<Dest> {
        match slots {
            Some(m) => m
                .nodes
                .iter()
                .map(|n| {
                    let mut d = self.clone();
                    d.lane.endpoint = d.lane.endpoint.at(n);
                    d
                })
                .collect(),
            None => vec![self.clone()],
        }
    }

    /// The connections of this destination: `connections` to it, or, on a cluster, that many
    /// to each master with the routing of keys to them.
    pub fn lanes(&self, slots: Option<&SlotMap>, connections: usize) -> (Vec<LaneConf>, Option<ClusterRoute>) {
        match slots {
            Some(m) => {
                let lanes = m
                    .nodes
                    .iter()
                    .flat_map(|n| {
                        let mut l = self.lane.clone();
                        l.endpoint = l.endpoint.at(n);
                        vec![l; connections]
                    })
                    .collect();
                let route = ClusterRoute {
                    map: m.clone(),
                    per_node: connections,
                    seed: self.lane.clone(),
                };
                (lanes, Some(route))
            }
            None => (vec![self.lane.clone(); connections], None),
        }
    }
}

/// `--conflict fail`: refuses, before anything is written, destinations that hold keys (under
/// their prefix; on a cluster, on any master), naming one.
pub(crate) fn refuse_non_empty(dests: &[Dest], slots: Option<&SlotMap>) -> anyhow::Result<()> {
    let mut checked = std::collections::BTreeSet::new();
    for d in dests {
        if !checked.insert(d.describe.clone()) {
            continue;
        }
        for n in &d.nodes(slots) {
            if let Some(k) = first_key(n)? {
                bail!(
                    "{}: already holds keys (e.g. {:?}); a first migration needs an empty target. Use --conflict replace to overwrite keys that exist, or --conflict skip to keep them. Nothing was written.",
                    d.describe,
                    crate::format::record::Lossy(&k)
                );
            }
        }
    }
    Ok(())
}

/// One key of the destination, if it holds any (under its prefix).
pub(crate) fn first_key(d: &Dest) -> anyhow::Result<Option<Vec<u8>>> {
    let mut lane = Lane::open(&d.lane)?;
    let conn = lane.conn();
    let mut pattern = glob_escape(&d.prefix);
    pattern.push(b'*');
    let mut cursor = "0".to_string();
    // A bounded look: a non-empty keyspace shows a key within the first pages.
    for _ in 0..1000 {
        let (next, keys): (String, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)
            .with_context(|| format!("{}: SCAN", d.describe))?;
        if let Some(k) = keys.into_iter().next() {
            return Ok(Some(k));
        }
        if next == "0" {
            return Ok(None);
        }
        cursor = next;
    }
    Ok(None)
}

/// How to write to `server`: its commands, and whether it keeps expiry in milliseconds. Pika's
/// precision is asked of the server itself (a probe key, deleted at once); a dry run writes
/// nothing, not even that.
pub(crate) fn dialect_of(server: &Server, probe: &Endpoint, dry_run: bool) -> anyhow::Result<Dialect> {
    let ms_expiry = match server.kind {
        // Pika 3.x keeps whole seconds (SERVERS.md); its PTTL is not asked: with its cache on,
        // PTTL reads the cache without a lock (source/pika_cache.rs).
        ServerKind::Pika(major, ..) if major < 4 => false,
        ServerKind::Pika(..) if !dry_run => {
            let mut c = connect(probe, Duration::from_secs(10))?;
            super::build::ms_expiry(&mut c).with_context(|| format!("{}: probing its expiry precision", server.name))?
        }
        _ => true,
    };
    Ok(Dialect::for_server(&server.kind, &server.version, ms_expiry))
}
