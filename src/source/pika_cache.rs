//! Pika 3.x reads TTL and PTTL from its cache without the cache's lock (`PikaCache::TTL(key,
//! type_status)` and `PikaCache::GetType` in 3.5.5's src/pika_cache.cc take no
//! `cache_mutexs_` lock, unlike every other cache read), and a read of the cache's hash table
//! moves its incremental rehash on. Under concurrent use the table is corrupted: seen on 3.5.5
//! with its stock `cache-model : 1`, an export's PTTLs make the server spin at 100 % CPU in
//! `dictFind`, never answering again, or abort on `dictRehash: Assertion ... failed`
//! (docs/servers-seen.md). Pika 4.0 reads PTTL from RocksDB, not the cache (its TTL still uses
//! the unlocked path; kvferry never sends TTL).
//!
//! So a kvferry command that would send PTTL to a Pika 3.x with its cache on refuses, unless
//! `--pika-cache-off` lets it switch the cache off (`CONFIG SET cache-model 0`) while it runs
//! and back on at its end.

use anyhow::{anyhow, bail, Context};

use crate::server::conn::{connect, Server, ServerKind};
use crate::server::endpoint::Endpoint;

/// The cache mode of a Pika 3.x whose TTL reads are unsafe (`cache-model` other than 0); None
/// for other servers and for Pika 3.x without a cache.
pub fn unsafe_cache_model(conn: &mut redis::Connection, server: &Server) -> anyhow::Result<Option<String>> {
    match server.kind {
        ServerKind::Pika(major, ..) if major < 4 => {}
        _ => return Ok(None),
    }
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("cache-model")
        .query(conn)
        .with_context(|| format!("{}: CONFIG GET cache-model", server.name))?;
    Ok(reply.get(1).filter(|m| unsafe_model(&server.kind, m)).cloned())
}

/// The rule: Pika before 4.0 with a cache mode other than 0.
fn unsafe_model(kind: &ServerKind, model: &str) -> bool {
    matches!(kind, ServerKind::Pika(major, ..) if *major < 4) && model.trim() != "0"
}

/// While alive, the cache of a Pika 3.x is off; dropping it sets `cache-model` back.
pub struct CacheOff {
    endpoint: Endpoint,
    name: String,
    before: String,
}

/// The sources of a run: what each is, and the guards of those whose cache had to be switched
/// off (export and migrate read every source through these).
pub struct Sources {
    pub kinds: Vec<crate::server::ServerKind>,
    pub guards: Vec<Option<CacheOff>>,
}

impl Sources {
    /// Connects to every source, says what it is, and applies [`CacheOff::guard`].
    pub fn open(endpoints: &[Endpoint], allowed: bool) -> anyhow::Result<Sources> {
        let mut kinds = Vec::new();
        let mut guards = Vec::new();
        for ep in endpoints {
            let mut conn = crate::server::connect(ep, std::time::Duration::from_secs(10))?;
            let server = crate::server::describe(&ep.name(), &mut conn)?;
            kinds.push(server.kind.clone());
            guards.push(CacheOff::guard(ep, &mut conn, &server, allowed)?);
        }
        Ok(Sources { kinds, guards })
    }
}

impl CacheOff {
    /// Checks the server behind `endpoint` (`server`, as described on `conn`): returns a guard
    /// that switched its cache off when `allowed` (--pika-cache-off), an error saying what to
    /// do when not, and None when there is nothing to do.
    pub fn guard(
        endpoint: &Endpoint,
        conn: &mut redis::Connection,
        server: &Server,
        allowed: bool,
    ) -> anyhow::Result<Option<CacheOff>> {
        let Some(before) = unsafe_cache_model(conn, server)? else {
            return Ok(None);
        };
        if !allowed {
            bail!(
                "{}: {} with its cache on (cache-model {before}): Pika 3.x answers PTTL from its cache without a lock, and concurrent reads corrupt it (the server hangs at 100% CPU or aborts; seen on 3.5.5). Nothing was read. Add --pika-cache-off to switch the cache off while kvferry runs and back on at its end (reads then go to RocksDB), or run `CONFIG SET cache-model 0` on it yourself, or use a replica whose cache is off",
                server.name,
                server.software()
            );
        }
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cache-model")
            .arg("0")
            .query::<()>(conn)
            .with_context(|| format!("{}: CONFIG SET cache-model 0 (--pika-cache-off)", server.name))?;
        crate::note!(
            "{}: cache switched off for this run (cache-model {before} -> 0, --pika-cache-off); it is set back at the end. If kvferry is killed first, run: CONFIG SET cache-model {before}",
            server.name
        );
        Ok(Some(CacheOff {
            endpoint: endpoint.clone(),
            name: server.name.clone(),
            before,
        }))
    }

    fn restore(&self) -> anyhow::Result<()> {
        let mut conn = connect(&self.endpoint, std::time::Duration::from_secs(10))?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cache-model")
            .arg(&self.before)
            .query::<()>(&mut conn)
            .map_err(|e| anyhow!("CONFIG SET cache-model {}: {e}", self.before))
    }
}

impl Drop for CacheOff {
    fn drop(&mut self) {
        match self.restore() {
            Ok(()) => crate::note!("{}: cache switched on again (cache-model {})", self.name, self.before),
            Err(e) => crate::note!(
                "{}: could not switch the cache on again ({e:#}): run CONFIG SET cache-model {} on it",
                self.name,
                self.before
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pika_3_with_a_cache_is_unsafe() {
        assert!(unsafe_model(&ServerKind::Pika(3, 5, 5), "1"));
        assert!(unsafe_model(&ServerKind::Pika(3, 5, 5), "2"));
        assert!(!unsafe_model(&ServerKind::Pika(3, 5, 5), "0"));
        assert!(!unsafe_model(&ServerKind::Pika(4, 0, 1), "1"));
        assert!(!unsafe_model(&ServerKind::Redis, "1"));
    }
}
