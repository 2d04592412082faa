//! Runs the export of one database with several connections: one lists the keys page by page
//! (a [`Lister`]: SCAN, or Pika's range scans), `readers` others read the pages' keys in
//! parallel. The server does its part of one page while kvferry decodes and writes another, and
//! a multi-threaded server (Pika, Kvrocks) serves several pages at once.
//!
//! Records go to the one [`Out`] of the shard; a reader holds it for the whole of a key, so a
//! key's parts stay together (F-PART-1). Pages complete out of order; the report takes them in
//! order, and `Out::page` is called for a page only when it and every page before it are
//! complete, and a checkpoint is taken only when no page is out (the listing pauses for it), so
//! a resume from it writes no key twice. Readers read on a steady connection ([`Link::steady`]):
//! a lost connection is re-made and the command sent again, so a key read in several commands
//! goes on in the same occurrence; only after a restart of the server is a key read again from
//! its start (the later occurrence wins, F-PART-3, and the lister starts the shard over).

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::anyhow;
use redis::ConnectionLike;

use super::keys::{read_listed, DbReport};
use super::list::{list_types, Lister, Page, Position, ScanLister, ScanOptions};
use super::pika::RangeLister;
use crate::format::record::{KeyRecord, KeyType};
use crate::server::conn::ServerKind;
use crate::server::link::{is_connection_error, is_timeout, stuck, Link, TIMEOUT_RETRIES};
use crate::server::throttle::Throttle;

/// Where an export goes: its records, and the end of every page, when everything listed before
/// `next` has been handed to `record` and no key is half-written, so the caller may checkpoint.
pub trait Out {
    /// Called from the reader threads, one key at a time.
    fn record(&mut self, r: &KeyRecord) -> anyhow::Result<()>;
    /// `keys`: keys listed on the page (exported, skipped or gone). `report`: all pages so far.
    /// `quiet`: every page listed so far is complete, so the records written are exactly those
    /// of the pages up to `next`: the only moment a checkpoint is exact (a resume from it
    /// writes no key twice, issue 11).
    fn page(&mut self, keys: u64, next: &Position, report: &DbReport, quiet: bool) -> anyhow::Result<()>;
    /// A checkpoint is wanted: the listing stops handing out pages until a quiet one.
    fn checkpoint_due(&self) -> bool;
    /// The enumeration starts over from the first key (the server restarted and its cursor is
    /// void): forget every record written, so no key is in the shard twice.
    fn start_over(&mut self) -> anyhow::Result<()>;
}

/// Whether database `db` holds any key, when the server can say so exactly; None when it
/// cannot. Redis and Valkey: DBSIZE. Pika: its DBSIZE is a cached count, refreshed only by
/// `DBSIZE SCAN` or `INFO keyspace 1` (SERVERS.md), so it is asked the way export lists: a range
/// scan per type and the streams (pika.rs), stopping at the first key found. Filters are not
/// applied: a database whose keys are all filtered out still counts as holding keys.
pub fn holds_keys(link: &mut Link, throttle: &Throttle, db: u32) -> anyhow::Result<Option<bool>> {
    link.select(db)?;
    let name = link.server.name.clone();
    let kind = link.server.kind.clone();
    let mut conn = link.conn(throttle);
    match kind {
        ServerKind::Redis | ServerKind::Valkey => {
            let n: u64 = redis::cmd("DBSIZE")
                .query(&mut conn)
                .map_err(|e| anyhow!("{name}: DBSIZE in database {db}: {e}"))?;
            Ok(Some(n > 0))
        }
        ServerKind::Pika(..) if super::pika::has_range_scan(&mut conn) => {
            let opts = ScanOptions {
                count: 1,
                ..ScanOptions::default()
            };
            let mut lister = RangeLister::new(&kind, &opts, None);
            while let Some(page) = lister
                .next(&mut conn)
                .map_err(|e| anyhow!("{name}: database {db}: {e:#}"))?
            {
                if page.listed > 0 {
                    return Ok(Some(true));
                }
            }
            Ok(Some(false))
        }
        _ => Ok(None),
    }
}

/// Exports database `db` of the server behind `link` into `out`, from the start or from where an
/// earlier run stopped (`from`: its position and report), reading with `opts.readers`
/// connections besides `link`. On Pika with range scans, enumerates with them
/// (pika.rs); otherwise with SCAN. A lost connection is recovered: the page is done again from
/// the same cursor; after a restart of the server (SCAN cursors do not survive one: Redis' hash
/// seed changes, Pika restarts them silently, SERVERS.md) the database is scanned again from the
/// start. Keys exported twice are resolved by F-PART-3 (the last occurrence wins), and the report
/// counts each key once: page counts join it only when the page is complete, and a rescan
/// starts it afresh.
pub fn export_db(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    from: Option<(Position, DbReport)>,
    out: &mut (dyn Out + Send),
) -> anyhow::Result<DbReport> {
    link.select(db)?;
    let kind = link.server.kind.clone();
    let opts = &ScanOptions {
        read: opts.read.for_server(&kind),
        sample: opts.sample.as_ref().map(|s| s.fresh()),
        ..opts.clone()
    };
    let report = export_listed(link, throttle, db, opts, from, out)?;
    match &opts.sample {
        Some(sample) => sample_extras(link, throttle, db, opts, sample, report, out),
        None => Ok(report),
    }
}

/// `export --sample`: reads, at the end of the shard, a key for each type and size class that
/// the hash sample missed (sample.rs); they were counted as filtered when listed.
fn sample_extras(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    sample: &super::sample::Sample,
    mut report: DbReport,
    out: &mut (dyn Out + Send),
) -> anyhow::Result<DbReport> {
    let kind = link.server.kind.clone();
    let pika = matches!(kind, ServerKind::Pika(..)) && super::pika::has_range_scan(&mut link.conn(throttle));
    let mut emit = |r: &KeyRecord| out.record(r);
    for (ty, keys) in sample.extras() {
        let mut conn = link.steady(throttle);
        let listed = if pika {
            super::pika::list_typed(&mut conn, &kind, db, ty, &keys)?
        } else {
            list_types(&mut conn, db, &keys)?
        };
        let mut page = DbReport::default();
        let mut done = HashSet::new();
        let opts = ScanOptions {
            sample: None,
            ..opts.clone()
        };
        read_listed(&mut conn, &kind, listed, &opts, &mut emit, &mut page, &mut done)?;
        let n = keys.len() as u64;
        report.filtered = report.filtered.saturating_sub(n);
        report.unsampled = report.unsampled.saturating_sub(n);
        report.merge(page);
    }
    Ok(report)
}

/// [`export_db`] without the sample's extras (`opts` already fitted to the server).
fn export_listed(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    from: Option<(Position, DbReport)>,
    out: &mut (dyn Out + Send),
) -> anyhow::Result<DbReport> {
    let kind = link.server.kind.clone();
    if matches!(kind, ServerKind::Pika(..)) && super::pika::has_range_scan(&mut link.conn(throttle)) {
        let (at, report) = match from {
            None => (None, DbReport::default()),
            Some((Position::Range { pass, start }, report)) => {
                let start = hex::decode(&start).map_err(|_| anyhow!("the checkpoint's range position is damaged"))?;
                (Some((pass, start)), report)
            }
            // A checkpoint taken with SCAN (the server lacked range scans then): start over.
            Some((Position::Scan { .. }, report)) => {
                out.start_over()?;
                (None, rescan(&report))
            }
        };
        let mut lister = RangeLister::new(&kind, opts, at);
        return drive(link, throttle, db, opts, &mut lister, report, out);
    }
    let run_id = link.run_id().map(str::to_string);
    // A checkpoint is taken after a page, so a checkpointed cursor 0 is the end of the scan
    // (SCAN's last reply), not its start: the listing is done.
    let (report, cursor, done) = match from {
        None => (DbReport::default(), b"0".to_vec(), false),
        Some((Position::Range { .. }, _)) => {
            return Err(anyhow!(
                "the checkpoint was taken with Pika's range scans, which this server does not answer"
            ))
        }
        Some((Position::Scan { cursor, run_id: was }, report)) => {
            if was.is_some() && was == run_id {
                let done = cursor == "0";
                (report, cursor.into_bytes(), done)
            } else {
                out.start_over()?;
                (rescan(&report), b"0".to_vec(), false)
            }
        }
    };
    let mut lister = ScanLister {
        cursor,
        run_id,
        opts,
        pika: matches!(kind, ServerKind::Pika(..)),
        done,
    };
    drive(link, throttle, db, opts, &mut lister, report, out)
}

/// The report to start a rescan with: the counts start afresh, the fault counters go on.
fn rescan(r: &DbReport) -> DbReport {
    DbReport {
        rescans: r.rescans + 1,
        reconnects: r.reconnects,
        ..DbReport::default()
    }
}

struct Job {
    seq: u64,
    epoch: u64,
    page: Page,
}

struct Done {
    seq: u64,
    epoch: u64,
    listed: u64,
    at: Position,
    report: DbReport,
}

type Shared<'o> = Mutex<&'o mut (dyn Out + Send)>;

fn lock<'a, 'o>(out: &'a Shared<'o>) -> MutexGuard<'a, &'o mut (dyn Out + Send)> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exports the keys `lister` lists, reading them with `opts.readers` connections besides
/// `link`, starting from `report` (a resumed export's, or empty).
pub(crate) fn drive(
    link: &mut Link,
    throttle: &Throttle,
    db: u32,
    opts: &ScanOptions,
    lister: &mut dyn Lister,
    report: DbReport,
    out: &mut (dyn Out + Send),
) -> anyhow::Result<DbReport> {
    let kind = link.server.kind.clone();
    let mut readers = Vec::new();
    for _ in 0..opts.readers.max(1) {
        readers.push(link.another()?);
    }
    let out: Shared = Mutex::new(out);
    let (job_tx, job_rx) = sync_channel::<Job>(2 * readers.len());
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = channel::<anyhow::Result<Done>>();
    std::thread::scope(|s| {
        for mut r in readers {
            let (jobs, done, out, kind) = (job_rx.clone(), done_tx.clone(), &out, &kind);
            s.spawn(move || reader(&mut r, throttle, kind, db, opts, &jobs, &done, out));
        }
        drop((job_rx, done_tx));
        let result = list(link, throttle, lister, report, &job_tx, &done_rx, &out);
        drop(job_tx); // the readers finish their page and stop
        result
    })
}

/// The listing side: hands pages to the readers and takes their results in order.
fn list(
    link: &mut Link,
    throttle: &Throttle,
    lister: &mut dyn Lister,
    mut report: DbReport,
    jobs: &SyncSender<Job>,
    done: &Receiver<anyhow::Result<Done>>,
    out: &Shared,
) -> anyhow::Result<DbReport> {
    let (mut seq, mut epoch, mut next_merge, mut outstanding) = (0u64, 0u64, 0u64, 0u64);
    let mut pending = BTreeMap::new();
    let mut listing = true;
    let mut timeouts = 0;
    // Pages listed by type (Pika) go out one type after another: a page of the next type waits
    // here until every page of the last is complete, so a key held under several types (Pika
    // 3.x) has its occurrences in the shard in the listing's order, string first, and the import's
    // `--multi-type first|suffix` gives the name to the same type on every run (and as follow does).
    let (mut held, mut last_ty): (Option<Page>, Option<KeyType>) = (None, None);
    loop {
        // A checkpoint is due, or the next type waits: hand out no more pages until the ones
        // out are complete.
        let draining = listing && outstanding > 0 && (held.is_some() || lock(out).checkpoint_due());
        let mut results = Vec::new();
        if (!listing || draining) && outstanding > 0 {
            results.push(done.recv().map_err(|_| anyhow::anyhow!("BUG: the readers stopped"))?);
        }
        results.extend(done.try_iter());
        for d in results {
            let d = d?;
            outstanding -= 1;
            if d.epoch == epoch {
                pending.insert(d.seq, d);
            }
        }
        while let Some(d) = pending.remove(&next_merge) {
            report.reconnects += d.report.reconnects;
            report.merge(d.report);
            let quiet = next_merge + 1 == seq;
            lock(out).page(d.listed, &d.at, &report, quiet)?;
            next_merge += 1;
        }
        if !listing && outstanding == 0 {
            return Ok(report);
        }
        if !listing || draining {
            continue;
        }
        let next = match held.take() {
            Some(page) => Ok(Some(page)),
            None => lister.next(&mut link.conn(throttle)),
        };
        match next {
            Ok(Some(page)) => {
                timeouts = 0;
                if page.ty.is_some() && last_ty.is_some() && page.ty != last_ty && outstanding > 0 {
                    held = Some(page);
                    continue;
                }
                last_ty = page.ty;
                let job = Job { seq, epoch, page };
                // Blocks while the readers are busy; fails only when they all stopped on errors.
                if jobs.send(job).is_err() {
                    let err = done.try_iter().find_map(Result::err);
                    return Err(err.unwrap_or_else(|| anyhow::anyhow!("BUG: the readers stopped")));
                }
                (seq, outstanding) = (seq + 1, outstanding + 1);
            }
            Ok(None) => listing = false,
            Err(e) if is_timeout(&e) && timeouts == TIMEOUT_RETRIES => return Err(stuck(e, link)),
            Err(e) if is_connection_error(&e) => {
                timeouts += u32::from(is_timeout(&e));
                let restarted = link.recover()?;
                report.reconnects += 1;
                if lister.reconnected(restarted, link.run_id()) {
                    // Start over: pages listed before no longer count, and what they wrote
                    // goes, once the pages still out are done (they write until then).
                    while outstanding > 0 {
                        done.recv().map_err(|_| anyhow::anyhow!("BUG: the readers stopped"))??;
                        outstanding -= 1;
                    }
                    lock(out).start_over()?;
                    (epoch, next_merge) = (epoch + 1, seq);
                    pending.clear();
                    report = DbReport {
                        rescans: report.rescans + 1,
                        reconnects: report.reconnects,
                        ..DbReport::default()
                    };
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many times a page is read again after its connection was lost, before the export stops:
/// a page that can never be read whole (a connection cut after so many bytes) must not loop.
const PAGE_ATTEMPTS: u64 = 10;

/// A reader: reads the keys of one page after another on its own connection.
#[allow(clippy::too_many_arguments)]
fn reader(
    link: &mut Link,
    throttle: &Throttle,
    kind: &ServerKind,
    db: u32,
    opts: &ScanOptions,
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<anyhow::Result<Done>>,
    out: &Shared,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else { return };
        let (mut reconnects, mut timeouts, before) = (0, 0, link.reconnects);
        // Across attempts: the keys read (or found gone, filtered, failed) and their counts.
        let mut page = DbReport {
            filtered: job.page.filtered,
            ..DbReport::default()
        };
        let mut read = HashSet::new();
        let result = loop {
            match read_page(&mut link.steady(throttle), kind, db, &job.page, opts, out, &mut page, &mut read) {
                Ok(()) => {
                    page.reconnects = link.reconnects - before;
                    break Ok(std::mem::take(&mut page));
                }
                Err(e) if is_timeout(&e) && timeouts == TIMEOUT_RETRIES => break Err(stuck(e, link)),
                Err(e) if is_connection_error(&e) && reconnects == PAGE_ATTEMPTS => {
                    break Err(e.context(format!(
                        "{}: the connection was lost {} times in a row while reading one page of {} keys (the first {}); is something cutting long connections or big replies (a proxy, a firewall, the server's client-output-buffer-limit)? Fix that, then run the same command with --resume",
                        link.server.name,
                        PAGE_ATTEMPTS + 1,
                        job.page.keys.len(),
                        job.page.keys.first().map(|k| format!("{:?}", crate::format::record::Lossy(k))).unwrap_or_default()
                    )))
                }
                Err(e) if is_connection_error(&e) => {
                    // The server restarted (a steady connection goes on by itself otherwise): read
                    // the rest of the page on a new connection; the keys done are skipped.
                    timeouts += u32::from(is_timeout(&e));
                    if let Err(e) = link.recover() {
                        break Err(e);
                    }
                    reconnects += 1;
                }
                Err(e) => break Err(e),
            }
        };
        let failed = result.is_err();
        let _ = done.send(result.map(|report| Done {
            seq: job.seq,
            epoch: job.epoch,
            listed: job.page.listed,
            at: job.page.at,
            report,
        }));
        if failed {
            return;
        }
    }
}

/// Reads one page's keys, writing each key's records while holding the shard's output.
#[allow(clippy::too_many_arguments)]
fn read_page(
    conn: &mut dyn ConnectionLike,
    kind: &ServerKind,
    db: u32,
    page: &Page,
    opts: &ScanOptions,
    out: &Shared,
    report: &mut DbReport,
    done: &mut HashSet<Vec<u8>>,
) -> anyhow::Result<()> {
    // A page read again after a lost connection: the keys done before are not read again.
    let left: Vec<Vec<u8>> = page.keys.iter().filter(|k| !done.contains(*k)).cloned().collect();
    let listed = match page.ty {
        None => list_types(conn, db, &left)?,
        Some(ty) => super::pika::list_typed(conn, kind, db, ty, &left)?,
    };
    let listed = match &opts.sample {
        Some(sample) => super::keys::sample_split(conn, kind, listed, sample, opts, report, done)?,
        None => listed,
    };
    let mut held: Option<MutexGuard<&mut (dyn Out + Send)>> = None;
    let mut emit = |r: &KeyRecord| {
        let g = held.get_or_insert_with(|| lock(out));
        g.record(r)?;
        if r.is_last() {
            held = None;
        }
        Ok(())
    };
    read_listed(conn, kind, listed, opts, &mut emit, report, done)
}
