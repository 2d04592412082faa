//! Progress of long work split into tasks (export: one per shard): keys and bytes done, rates and
//! ETA per task and in total. Shown as bars on a terminal, as plain lines for logs, or as JSON
//! lines for machines (`--progress auto|bar|plain|json|none`), always on stderr so that stdout
//! keeps the summary. Workers only bump atomic counters; one reporter thread draws.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Bars, redrawn in place.
    Bar,
    /// A few lines every 10 seconds.
    Plain,
    /// A JSON object per line every 2 seconds.
    Json,
    /// Nothing.
    None,
}

/// Set when the run's progress is JSON lines: every line kvferry writes on stderr is then a JSON
/// object (`{"event": "progress" | "message" | "result", ...}`), so a machine reads stderr whole.
static JSON_LINES: AtomicBool = AtomicBool::new(false);

/// What the command reached, for the `result` line of `--progress json` (set by the command).
static RESULT: Mutex<Option<serde_json::Value>> = Mutex::new(None);

/// Says how the run shows progress (before anything is printed): `json` turns every later line
/// on stderr into a JSON object.
pub fn set_mode(mode: Mode) {
    JSON_LINES.store(mode == Mode::Json, Relaxed);
}

/// True when stderr carries JSON lines only (`--progress json`).
pub fn json_lines() -> bool {
    JSON_LINES.load(Relaxed)
}

/// Prints a line for people on stderr: as it is, or as `{"event":"message","message":...}`
/// under `--progress json`. Every message of a command goes through here (or [`note!`]).
pub fn note(line: &str) {
    let mut err = std::io::stderr().lock();
    if json_lines() {
        let v = serde_json::json!({"event": "message", "message": line});
        let _ = writeln!(err, "{v}");
    } else {
        let _ = writeln!(err, "{line}");
    }
}

/// Records what the command reached (keys, differences, ...), for the `result` line; the
/// fields of later calls join (or replace) those of earlier ones.
pub fn set_result(v: serde_json::Value) {
    let mut r = RESULT.lock().unwrap_or_else(|e| e.into_inner());
    match (r.as_mut(), v) {
        (Some(serde_json::Value::Object(m)), serde_json::Value::Object(new)) => m.extend(new),
        (_, v) => *r = Some(v),
    }
}

/// Under `--progress json`, the last line: `{"event":"result","exit_code":N,"error":...}` with
/// what the command recorded with [`set_result`]. Nothing otherwise.
pub fn print_result(exit_code: i32, error: Option<&str>) {
    if !json_lines() {
        return;
    }
    let mut v = serde_json::json!({"event": "result", "exit_code": exit_code, "error": error});
    if let Some(serde_json::Value::Object(m)) = RESULT.lock().unwrap_or_else(|e| e.into_inner()).take() {
        for (k, x) in m {
            v[k] = x;
        }
    }
    let _ = writeln!(std::io::stderr().lock(), "{v}");
}

/// `note!("{x} ...")`: [`note`] with format arguments.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        $crate::progress::note(&format!($($t)*))
    };
}

const WAITING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const FAILED: u8 = 3;

/// One task's counters, updated by the thread doing it.
pub struct Task {
    pub name: String,
    keys: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    /// Estimated keys in all, +1 (0: unknown).
    total: AtomicU64,
    state: AtomicU8,
    /// Milliseconds since the progress started, when the task started and ended.
    started_ms: AtomicU64,
    ended_ms: AtomicU64,
    t0: Instant,
}

impl Task {
    /// The number of keys the task will do, known before it starts (from a manifest): the
    /// total and its ETA count it from the beginning.
    pub fn expect(&self, total: u64) {
        self.total.store(total + 1, Relaxed);
    }

    /// The task starts; `total` is the number of keys expected, if known.
    pub fn start(&self, total: Option<u64>) {
        self.total.store(total.map_or(0, |t| t + 1), Relaxed);
        self.started_ms.store(self.t0.elapsed().as_millis() as u64, Relaxed);
        self.state.store(RUNNING, Relaxed);
    }

    pub fn add(&self, keys: u64, bytes: u64) {
        self.keys.fetch_add(keys, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts keys that failed (they are also counted by [`Task::add`] as done with).
    pub fn fail(&self, keys: u64) {
        self.failed.fetch_add(keys, Relaxed);
    }

    /// Sets the count of failed keys (where the caller keeps the count).
    pub fn set_failed(&self, keys: u64) {
        self.failed.store(keys, Relaxed);
    }

    /// Starts the counts again (the work restarted from the beginning).
    pub fn reset(&self) {
        self.keys.store(0, Relaxed);
        self.bytes.store(0, Relaxed);
        self.failed.store(0, Relaxed);
    }

    pub fn finish(&self, ok: bool) {
        self.ended_ms.store(self.t0.elapsed().as_millis() as u64, Relaxed);
        self.state.store(if ok { DONE } else { FAILED }, Relaxed);
    }

    fn view(&self, now_ms: u64) -> TaskView {
        let state = self.state.load(Relaxed);
        let keys = self.keys.load(Relaxed);
        let started = self.started_ms.load(Relaxed);
        let end = if state >= DONE {
            self.ended_ms.load(Relaxed)
        } else {
            now_ms
        };
        let secs = end.saturating_sub(started) as f64 / 1000.0;
        let rate = if state == WAITING || secs <= 0.0 {
            0.0
        } else {
            keys as f64 / secs
        };
        let total = match self.total.load(Relaxed) {
            _ if state == DONE => Some(keys),
            t if state == WAITING && t > 0 => Some(t - 1),
            0 => None,
            t => Some(t - 1),
        };
        TaskView {
            task: self.name.clone(),
            state: ["waiting", "running", "done", "failed"][state as usize],
            keys,
            bytes: self.bytes.load(Relaxed),
            failed: self.failed.load(Relaxed),
            total_keys: total,
            keys_per_sec: rate.round(),
            eta_s: eta(keys, total, rate),
        }
    }
}

/// Seconds left at `rate`, when a total is known and not yet passed (estimates can be low).
fn eta(done: u64, total: Option<u64>, rate: f64) -> Option<u64> {
    let total = total?;
    (total >= done && rate > 0.0).then(|| ((total - done) as f64 / rate).ceil() as u64)
}

#[derive(Serialize, Clone)]
pub(crate) struct TaskView {
    pub task: String,
    pub state: &'static str,
    pub keys: u64,
    pub bytes: u64,
    /// Keys that failed (reported by name in the summary).
    pub failed: u64,
    pub total_keys: Option<u64>,
    pub keys_per_sec: f64,
    pub eta_s: Option<u64>,
}

#[derive(Serialize)]
pub(crate) struct View {
    pub event: &'static str,
    /// What the tasks are (`export`, `import`, `verify`, `migrate`...).
    pub phase: String,
    pub elapsed_s: u64,
    /// Tasks with keys (done empty ones are in `tasks_empty` instead).
    pub tasks: usize,
    pub tasks_done: usize,
    /// Tasks that ended with no key (empty databases): left out of `tasks`.
    pub tasks_empty: usize,
    pub keys: u64,
    pub bytes: u64,
    pub failed: u64,
    pub total_keys: Option<u64>,
    pub keys_per_sec: f64,
    pub eta_s: Option<u64>,
    pub running: Vec<TaskView>,
    /// Every task, for the metrics (not in the JSON lines: `running` has those that move).
    #[serde(skip)]
    pub all: Vec<TaskView>,
    /// The watched servers' health (`--progress json`: under `servers`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<crate::server::health::Stats>,
}

struct Inner {
    phase: String,
    tasks: Vec<Arc<Task>>,
    t0: Instant,
    mode: Mode,
    stop: Mutex<bool>,
    wake: Condvar,
    multi: Option<MultiProgress>,
}

impl Inner {
    fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => note(line),
        }
    }

    fn view(&self) -> View {
        let now = self.t0.elapsed().as_millis() as u64;
        let tasks: Vec<TaskView> = self.tasks.iter().map(|t| t.view(now)).collect();
        let keys = tasks.iter().map(|t| t.keys).sum();
        let total = tasks.iter().map(|t| t.total_keys).sum::<Option<u64>>();
        let secs = now as f64 / 1000.0;
        let rate = if secs > 0.0 { keys as f64 / secs } else { 0.0 };
        let empty = tasks.iter().filter(|t| t.state == "done" && t.keys == 0).count();
        View {
            event: "progress",
            phase: self.phase.clone(),
            elapsed_s: now / 1000,
            tasks: tasks.len() - empty,
            tasks_done: tasks.iter().filter(|t| t.state == "done").count() - empty,
            tasks_empty: empty,
            keys,
            bytes: tasks.iter().map(|t| t.bytes).sum(),
            failed: tasks.iter().map(|t| t.failed).sum(),
            total_keys: total,
            keys_per_sec: rate.round(),
            eta_s: eta(keys, total, rate),
            running: tasks.iter().filter(|t| t.state == "running").cloned().collect(),
            all: tasks,
            servers: crate::server::health::current(),
        }
    }
}

/// The progress of a run, with its reporter thread.
pub struct Progress {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of tasks named `names`, in `mode`; `phase` says what the
    /// tasks do (the metrics' label).
    pub fn start(mode: Mode, names: Vec<String>) -> Progress {
        Self::start_phase(mode, "run", names)
    }

    pub fn start_phase(mode: Mode, phase: &str, names: Vec<String>) -> Progress {
        use std::io::IsTerminal;
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bar,
            Mode::Auto => Mode::Plain,
            m => m,
        };
        let t0 = Instant::now();
        let tasks = names
            .into_iter()
            .map(|name| {
                Arc::new(Task {
                    name,
                    keys: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    total: AtomicU64::new(0),
                    state: AtomicU8::new(WAITING),
                    started_ms: AtomicU64::new(0),
                    ended_ms: AtomicU64::new(0),
                    t0,
                })
            })
            .collect();
        // `bar` asked for where stderr is no terminal (a log, a pipe): drawn anyway.
        let multi = (mode == Mode::Bar).then(|| {
            MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::term_like_with_hz(Box::new(Forced), 5)
            })
        });
        let inner = Arc::new(Inner {
            phase: phase.to_string(),
            tasks,
            t0,
            mode,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            multi,
        });
        let thread = (mode != Mode::None).then(|| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("kvferry-progress".into())
                .spawn(move || report(&inner))
                .expect("BUG: cannot start the progress thread")
        });
        *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(&inner));
        Progress { inner, thread }
    }

    pub fn task(&self, i: usize) -> Arc<Task> {
        self.inner.tasks[i].clone()
    }

    /// Prints a line on stderr without breaking the bars.
    pub fn println(&self, line: &str) {
        self.inner.println(line)
    }

    /// A printer of lines like [`Progress::println`], for threads that outlive a borrow of it.
    pub fn printer(&self) -> Arc<dyn Fn(&str) + Send + Sync> {
        let inner = self.inner.clone();
        Arc::new(move |line: &str| inner.println(line))
    }

    /// Stops the reporter after a last report.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.inner.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The progress shown now (one at a time in a process): for [`say`] and the metrics.
static CURRENT: Mutex<Option<std::sync::Weak<Inner>>> = Mutex::new(None);

/// Prints a line on stderr without breaking the bars of the progress shown now, if any.
pub fn say(line: &str) {
    let inner = CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|w| w.upgrade());
    match inner {
        Some(i) => i.println(line),
        None => note(line),
    }
}

/// The figures of the progress shown now, if any.
pub(crate) fn current_view() -> Option<View> {
    let inner = CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|w| w.upgrade())?;
    Some(inner.view())
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.halt();
    }
}

fn report(inner: &Inner) {
    let every = match inner.mode {
        Mode::Bar => Duration::from_millis(200),
        Mode::Json => Duration::from_secs(2),
        _ => Duration::from_secs(10),
    };
    let mut bars = Bars::default();
    let mut stop = inner.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        // A timed wait: the reporter draws every `every`, and at once when told to stop.
        let (s, _) = inner
            .wake
            .wait_timeout_while(stop, every, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        stop = s;
        let last = *stop;
        let v = inner.view();
        match inner.mode {
            Mode::Bar => bars.draw(inner, &v, last),
            Mode::Json => {
                let mut line = serde_json::to_string(&v).expect("BUG: a view always serialises");
                line.push('\n');
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Mode::Plain => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{}", plain_total(&v));
                if !last {
                    for t in &v.running {
                        let _ = writeln!(err, "  {}", plain_task(t));
                    }
                    for h in &v.servers {
                        let _ = writeln!(err, "  {}", server_text(h));
                    }
                }
            }
            Mode::Auto | Mode::None => {}
        }
        if last {
            return;
        }
    }
}

/// `1234567` as `1.2M`.
fn count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn duration(s: u64) -> String {
    indicatif::HumanDuration(Duration::from_secs(s)).to_string()
}

fn of_total(done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "{}/{} keys ({:.0}%)",
            count(done),
            count(t),
            100.0 * done.min(t) as f64 / t as f64
        ),
        _ => format!("{} keys", count(done)),
    }
}

fn eta_text(eta: Option<u64>) -> String {
    eta.map_or_else(String::new, |s| format!(", ETA {}", duration(s)))
}

/// `3/5 done (14 empty)`.
fn done_text(v: &View) -> String {
    let empty = if v.tasks_empty > 0 {
        format!(" ({} empty)", v.tasks_empty)
    } else {
        String::new()
    };
    format!("{}/{} done{empty}", v.tasks_done, v.tasks)
}

fn plain_total(v: &View) -> String {
    format!("[{}] {}, {}", duration(v.elapsed_s), done_text(v), plain_rest(v))
}

/// Stderr as a terminal for `--progress bar` where it is none: ANSI escapes, 100 columns.
#[derive(Debug)]
struct Forced;

impl Forced {
    fn put(s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }

    /// `ESC [ n A|B|C|D`: the cursor n lines up or down, n columns right or left.
    fn cursor(n: usize, direction: char) -> std::io::Result<()> {
        if n > 0 {
            Self::put(&format!("\x1b[{n}{direction}"))?;
        }
        Ok(())
    }
}

impl indicatif::TermLike for Forced {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        Self::cursor(n, 'A')
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        Self::cursor(n, 'B')
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        Self::cursor(n, 'C')
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        Self::cursor(n, 'D')
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        Self::put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        Self::put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Self::put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn plain_task(t: &TaskView) -> String {
    format!("{}: {}", t.task, plain_task_rest(t))
}

/// The bars on a terminal: one for the total, one per running task.
#[derive(Default)]
struct Bars {
    total: Option<ProgressBar>,
    tasks: std::collections::BTreeMap<String, ProgressBar>,
}

impl Bars {
    fn bar(multi: &MultiProgress, name: &str) -> ProgressBar {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(
            ProgressStyle::with_template("{prefix:>18} [{bar:30}] {msg}")
                .expect("BUG: a valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(name.to_string());
        b
    }

    fn set(b: &ProgressBar, done: u64, total: Option<u64>, msg: String) {
        b.set_length(total.unwrap_or(0).max(done));
        b.set_position(done);
        b.set_message(msg);
    }

    fn draw(&mut self, inner: &Inner, v: &View, last: bool) {
        let Some(multi) = &inner.multi else { return };
        let total = self.total.get_or_insert_with(|| Self::bar(multi, "total"));
        let done = done_text(v);
        Self::set(total, v.keys, v.total_keys, format!("{done}, {}", plain_rest(v)));
        for t in &v.running {
            let b = self
                .tasks
                .entry(t.task.clone())
                .or_insert_with(|| Self::bar(multi, &t.task));
            Self::set(b, t.keys, t.total_keys, plain_task_rest(t));
        }
        for h in &v.servers {
            let key = format!("\0{} {}", h.role, h.server);
            let b = self.tasks.entry(key).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(ProgressStyle::with_template("{msg}").expect("BUG: a valid template"));
                b
            });
            b.set_message(server_text(h));
        }
        let mut running: Vec<String> = v.running.iter().map(|t| t.task.clone()).collect();
        running.extend(v.servers.iter().map(|h| format!("\0{} {}", h.role, h.server)));
        self.tasks.retain(|name, b| {
            let keep = running.contains(name) && !last;
            if !keep {
                b.finish_and_clear();
                multi.remove(b);
            }
            keep
        });
        if last {
            total.finish_and_clear();
        }
    }
}

/// `1.2k/3.4k keys (35%), 1.2 MiB, 900 keys/s, ETA 3 seconds`.
fn figures(keys: u64, total: Option<u64>, bytes_done: u64, rate: f64, eta: Option<u64>) -> String {
    format!(
        "{}, {}, {} keys/s{}",
        of_total(keys, total),
        bytes(bytes_done),
        count(rate as u64),
        eta_text(eta)
    )
}

fn plain_rest(v: &View) -> String {
    figures(v.keys, v.total_keys, v.bytes, v.keys_per_sec, v.eta_s)
}

fn plain_task_rest(t: &TaskView) -> String {
    figures(t.keys, t.total_keys, t.bytes, t.keys_per_sec, t.eta_s)
}

/// `source redis://h:6379: PING 0.4 ms (0.2 before), 12k ops/s, CPU 45%, 1.2 GiB; kvferry 3.4k
/// commands/s, 0.8 ms a request, limit 2000/s`.
pub(crate) fn server_text(h: &crate::server::health::Stats) -> String {
    let mut parts = Vec::new();
    match (h.up, h.ping_ms) {
        (false, _) => parts.push("no answer to PING".to_string()),
        (true, Some(p)) => parts.push(match h.ping_baseline_ms {
            Some(b) => format!("PING {p:.2} ms ({b:.2} before)"),
            None => format!("PING {p:.2} ms"),
        }),
        (true, None) => {}
    }
    if let Some(o) = h.server_ops_per_sec {
        parts.push(format!("{} ops/s", count(o)));
    }
    if let Some(c) = h.cpu_percent {
        parts.push(format!("CPU {c:.0}%"));
    }
    if let Some(m) = h.used_memory {
        parts.push(bytes(m));
    }
    let mut ours = format!("kvferry {} commands/s", count(h.commands_per_sec as u64));
    if let Some(r) = h.request_ms {
        ours.push_str(&format!(", {r:.2} ms a request"));
    }
    if let Some(l) = h.rate_limit {
        ours.push_str(&format!(", limit {l}/s"));
    }
    format!("{} {}: {}; {ours}", h.role, h.server, parts.join(", "))
}
