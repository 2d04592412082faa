//! Small helpers: formatting for people-facing output, atomic file writes.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed over
/// it, then the directory synced. A reader sees the old content or the new, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A duration as people write it: `500ms`, `5s`, `2m`, `1h`; a bare number is seconds. In
/// milliseconds. Every option that takes a duration takes it this way.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: expected e.g. 5s, 500ms, 2m"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        "h" => n * 3600e3,
        _ => return Err(format!("{s:?}: the unit is ms, s, m or h")),
    };
    Ok(ms as u64)
}

/// Where kvferry keeps the checkpoints of runs that have no snapshot of their own to keep
/// them in, and of imports (never inside a snapshot, which is a backup): `$XDG_STATE_HOME`, or
/// `~/.local/state`, then `kvferry/LEAF`.
pub fn state_home(leaf: &str) -> anyhow::Result<std::path::PathBuf> {
    let base = match (std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME")) {
        (Some(x), _) if !x.is_empty() => std::path::PathBuf::from(x),
        (_, Some(h)) if !h.is_empty() => std::path::PathBuf::from(h).join(".local/state"),
        _ => anyhow::bail!("neither XDG_STATE_HOME nor HOME is set: say where to keep checkpoints with --state DIR"),
    };
    Ok(base.join("kvferry").join(leaf))
}

/// A server URL (or any name) as a file name: the scheme dropped, anything but letters, digits,
/// `.` and `-` made `_`.
pub fn safe_name(s: &str) -> String {
    s.split_once("://")
        .map_or(s, |(_, h)| h)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `1 key`, `2 keys`: a count and its noun, plural unless the count is one.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Runs `f(0)` .. `f(n - 1)` on up to `parallel` threads, each taking the next index when it
/// is free, and returns the results in index order. The shards of export, import, verify and
/// migrate run this way (`--parallel`).
pub fn run_parallel<R: Send>(parallel: usize, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let r = f(i);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("BUG: every index runs once")
        })
        .collect()
}

/// `1.5 MiB`-style size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Unix milliseconds as an ISO-8601 UTC time, `2026-11-24T21:56:00.123Z`.
pub fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An exclusive lock on a directory, held while a command writes there: a second kvferry
/// writing the same snapshot or import state is refused by name instead of both writing
/// (issue 11). The lock file (`.kvferry.lock`, holding the pid) goes when the lock is dropped.
pub struct DirLock {
    path: std::path::PathBuf,
    _file: std::fs::File,
}

impl DirLock {
    pub const NAME: &'static str = ".kvferry.lock";

    /// Takes the lock of `dir`, or says who holds it.
    pub fn take(dir: &Path) -> anyhow::Result<DirLock> {
        use anyhow::Context;
        use std::os::unix::io::AsRawFd;
        let path = dir.join(Self::NAME);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot create the lock file", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            anyhow::bail!(
                "{}: another kvferry{} is writing here; wait for it to end (or stop it: Ctrl-C checkpoints), then run this command again",
                dir.display(),
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }
            );
        }
        file.set_len(0).ok();
        write!(file, "{}", std::process::id()).ok();
        Ok(DirLock { path, _file: file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks, before any slow work, that `--report FILE` can be written (issue 11: an unwritable
/// path was found only after the whole run). Creates the file, empty, if it is not there.
pub fn check_report_path(path: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(p) = path {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .with_context(|| format!("--report {}: cannot write the file", p.display()))?;
    }
    Ok(())
}

/// A key that was not exported, written or verified, by name, and why.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, rendered as in `kvferry cat` (UTF-8, or base64).
    pub key: serde_json::Value,
    pub reason: String,
}

/// A key as JSON, rendered as in `kvferry cat` (a string when UTF-8, else `{"base64": ...}`).
pub fn key_json(k: &[u8]) -> serde_json::Value {
    let mut s = String::new();
    crate::format::render::bytes(&mut s, k);
    serde_json::from_str(&s).expect("BUG: render::bytes writes valid JSON")
}

/// The key [`key_json`] rendered.
pub fn key_from_json(v: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine;
    match v {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        serde_json::Value::Object(m) => base64::engine::general_purpose::STANDARD
            .decode(m.get("base64")?.as_str()?)
            .ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_utc_matches_known_instants() {
        assert_eq!(super::iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso_utc(1_795_996_800_123), "2026-11-30T00:00:00.123Z");
        assert_eq!(super::iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn counts_are_plural_unless_one() {
        assert_eq!(super::count(1, "key"), "1 key");
        assert_eq!(super::count(0, "difference"), "0 differences");
        assert_eq!(super::count(2, "part"), "2 parts");
    }

    #[test]
    fn run_parallel_runs_each_index_once_in_order() {
        let seen = std::sync::Mutex::new(Vec::new());
        let r = super::run_parallel(3, 10, |i| {
            seen.lock().unwrap().push(i);
            i * 2
        });
        assert_eq!(r, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(super::run_parallel(4, 0, |i| i).is_empty());
    }

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(super::human_bytes(10), "10 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn keys_round_trip_through_json() {
        for k in [&b"plain"[..], b"\xff\x00bin", b""] {
            assert_eq!(super::key_from_json(&super::key_json(k)).as_deref(), Some(k));
        }
    }
}
