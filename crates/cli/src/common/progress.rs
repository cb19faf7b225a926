//! Drawing progress: an indicatif bar for people, JSON lines for programs.

use clap::ValueEnum;
use diskcast_block::progress::{NoProgress, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `--progress`: how progress is reported.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    Auto,
    /// Always a bar on stderr.
    Bar,
    /// JSON lines on stderr: {"done":..,"total":..,"rate":..}.
    Json,
    /// Nothing.
    None,
}

/// The reporter for `mode` (`-p` forces a bar). A bar asked for when stderr is not a
/// terminal (a log file, CI) becomes one line per percent instead of escape codes.
pub fn reporter(mode: ProgressMode, force_bar: bool) -> Box<dyn Progress> {
    let tty = std::io::stderr().is_terminal();
    match (mode, force_bar) {
        (ProgressMode::Json, _) => Box::new(JsonLines::default()),
        (_, true) | (ProgressMode::Bar, _) if tty => Box::new(Bar::new()),
        (_, true) | (ProgressMode::Bar, _) => Box::new(Percent::default()),
        (ProgressMode::Auto, false) if tty => Box::new(Bar::new()),
        _ => Box::new(NoProgress),
    }
}

/// Where qemu-img's progress lines go ([`qemu_reporter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuProgress {
    /// Standard output, where qemu-img prints them.
    Stdout,
    /// Standard error, when standard output carries the image (`convert ... -`).
    Stderr,
}

/// qemu-img's `-p` progress, for its verbs (`convert`, `commit`, `rebase`, `amend`):
/// `    (NN.NN/100%)` and a carriage return, terminal or not, at the start, whenever a
/// percent more is done (qemu's step), and at the end, then a newline.
pub fn qemu_reporter(to: QemuProgress) -> Box<dyn Progress> {
    Box::new(QemuLines { to, total: AtomicU64::new(0), done: AtomicU64::new(0), shown: Mutex::new(None) })
}

/// qemu's smallest step between two progress lines, in percent.
const QEMU_MIN_STEP: f64 = 1.0;

struct QemuLines {
    to: QemuProgress,
    total: AtomicU64,
    done: AtomicU64,
    /// The percentage printed last.
    shown: Mutex<Option<f64>>,
}

impl QemuLines {
    fn percent(&self) -> f64 {
        let total = self.total.load(Ordering::Relaxed).max(1);
        let done = self.done.load(Ordering::Relaxed).min(total);
        (done as f64) * 100.0 / (total as f64)
    }

    fn print(&self, text: &str) {
        let _ = match self.to {
            QemuProgress::Stdout => {
                std::io::stdout().lock().write_all(text.as_bytes()).and_then(|()| std::io::stdout().flush())
            }
            QemuProgress::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    fn show(&self, force: bool) {
        let pct = self.percent();
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if force || shown.is_none_or(|last| pct >= last + QEMU_MIN_STEP) {
            *shown = Some(pct);
            self.print(&format!("    ({pct:.2}/100%)\r"));
        }
    }
}

impl Progress for QemuLines {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.show(true);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.show(false);
    }
    fn finish(&self) {
        self.show(true);
        self.print("\n");
    }
}

/// `(42/100%)` lines on stderr, one per percent, for logs.
#[derive(Default)]
struct Percent {
    total: AtomicU64,
    done: AtomicU64,
    shown: Mutex<Option<u64>>,
}

impl Progress for Percent {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.advance(0);
    }
    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let total = self.total.load(Ordering::Relaxed).max(1);
        let pct = (u128::from(done.min(total)) * 100 / u128::from(total)) as u64;
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        if *shown != Some(pct) {
            *shown = Some(pct);
            let _ = writeln!(std::io::stderr().lock(), "    ({pct}/100%)");
        }
    }
}

/// Bytes, rate and ETA on stderr.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    /// Leaves the bar where the work got to: full on success, short of it on an error or
    /// Ctrl-C (indicatif's `finish` would draw it full either way).
    fn finish(&self) {
        self.0.abandon();
    }
}

/// One JSON object per line on stderr, at most every 200 ms and once at the end:
/// `{"done":N,"total":N,"rate":BYTES_PER_SEC}`.
struct JsonLines {
    total: AtomicU64,
    done: AtomicU64,
    state: Mutex<(Option<Instant>, Option<Instant>)>, // (start, last emitted)
}

impl Default for JsonLines {
    fn default() -> Self {
        JsonLines { total: AtomicU64::new(0), done: AtomicU64::new(0), state: Mutex::new((None, None)) }
    }
}

const JSON_INTERVAL: Duration = Duration::from_millis(200);

impl JsonLines {
    fn emit(&self, force: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !force && st.1.is_some_and(|last| now.duration_since(last) < JSON_INTERVAL) {
            return;
        }
        st.1 = Some(now);
        let done = self.done.load(Ordering::Relaxed);
        let secs = st.0.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        let rate = if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 };
        let line = serde_json::json!({"done": done, "total": self.total.load(Ordering::Relaxed), "rate": rate});
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

impl Progress for JsonLines {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
        self.emit(true);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.emit(false);
    }
    fn finish(&self) {
        self.emit(true);
    }
}

/// One progress over several passes of a command (`write`: the copy, then the read-back):
/// the passes' own `start` and `finish` are swallowed, so a bar, its rate and ETA, or
/// the JSON lines run once from 0 to the sum of the passes.
pub struct Passes {
    inner: Box<dyn Progress>,
}

impl Passes {
    /// `inner`, started at once for `total` bytes over all passes.
    pub fn new(inner: Box<dyn Progress>, total: u64) -> Self {
        inner.start(total);
        Passes { inner }
    }
}

impl Drop for Passes {
    fn drop(&mut self) {
        self.inner.finish();
    }
}

impl Progress for Passes {
    fn start(&self, _total: u64) {}
    fn advance(&self, bytes: u64) {
        self.inner.advance(bytes);
    }
}
