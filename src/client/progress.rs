//! Progress output on stderr (stdout carries only the result): an indicatif
//! bar on a terminal, a plain line every few seconds otherwise (logs, CI),
//! nothing when quiet.
//!
//! Uploads count bytes into one atomic counter as their bodies are read; a
//! ticker turns the counter into output, so parts running in parallel never
//! contend for the terminal. A failed attempt takes its bytes back out.
//! Once every byte is sent, [`Progress::phase`] says what the wait is for
//! (the server completing and verifying), so a full bar never sits silent.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::human;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else plain lines.
    #[default]
    Auto,
    /// An indicatif bar: bytes, rate, ETA.
    Bar,
    /// A plain line every few seconds, and one at the end.
    Lines,
    /// Nothing at all, notices included.
    Quiet,
}

impl ProgressMode {
    fn resolve(self) -> Self {
        match self {
            Self::Auto if std::io::stderr().is_terminal() => Self::Bar,
            Self::Auto => Self::Lines,
            other => other,
        }
    }
}

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(2);
/// How often the bar is redrawn from the counter.
const BAR_EVERY: Duration = Duration::from_millis(100);

struct Shared {
    sent: AtomicU64,
    /// Bytes already stored before this run (a resume): not part of the rate.
    skipped: AtomicU64,
    total: u64,
    started: Instant,
    bar: Option<ProgressBar>,
    mode: ProgressMode,
    /// Set by [`Progress::phase`]: the periodic lines stop, the bar spins.
    waiting: AtomicBool,
    /// Lines written instead of printed, for tests ([`Progress::capture`]).
    captured: Option<Mutex<Vec<String>>>,
}

/// The progress of one upload; cheap to clone into each part's task.
#[derive(Clone)]
pub struct Progress {
    shared: Arc<Shared>,
}

/// Stops the ticker when the upload ends, however it ends.
pub struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("mode", &self.shared.mode).field("total", &self.shared.total).finish()
    }
}

impl Progress {
    /// Progress of `total` bytes, shown as `mode` says.
    pub fn new(mode: ProgressMode, total: u64) -> Self {
        Self::build(mode.resolve(), total, false)
    }

    /// Plain lines kept in memory instead of printed ([`Self::captured`]), so
    /// a test can read what a user would.
    pub fn capture(total: u64) -> Self {
        Self::build(ProgressMode::Lines, total, true)
    }

    fn build(mode: ProgressMode, total: u64, capture: bool) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
        });
        let shared = Shared {
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            total,
            started: Instant::now(),
            bar,
            mode,
            waiting: AtomicBool::new(false),
            captured: capture.then(Mutex::default),
        };
        Self { shared: Arc::new(shared) }
    }

    /// The lines a [`Self::capture`] progress has written.
    pub fn captured(&self) -> Vec<String> {
        self.shared.captured.as_ref().map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }

    /// One line on stderr (or into the capture), prefixed `mediaflow: `.
    fn print(&self, line: &str) {
        match &self.shared.captured {
            Some(c) => c.lock().unwrap_or_else(|e| e.into_inner()).push(format!("mediaflow: {line}")),
            None => eprintln!("mediaflow: {line}"),
        }
    }

    /// Starts the periodic output; it stops when the returned guard is dropped.
    pub fn start(&self) -> Ticker {
        let this = self.clone();
        Ticker(tokio::spawn(async move {
            let every = if this.shared.mode == ProgressMode::Bar { BAR_EVERY } else { LINE_EVERY };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                this.draw();
            }
        }))
    }

    /// Counts bytes already stored by an earlier run.
    pub fn skip(&self, bytes: u64) {
        self.shared.skipped.fetch_add(bytes, Ordering::Relaxed);
        self.shared.sent.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.shared.bar {
            bar.set_position(self.sent());
            bar.reset_eta();
        }
    }

    /// Counts bytes handed to the network.
    pub fn add(&self, bytes: u64) {
        self.shared.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes back the bytes of a failed attempt.
    pub fn undo(&self, bytes: u64) {
        let _ = self.shared.sent.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(bytes)));
    }

    /// Bytes sent or already stored.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Prints a notice (stderr) without tearing the bar; nothing when quiet.
    pub fn note(&self, message: &str) {
        match (&self.shared.bar, self.shared.mode) {
            (_, ProgressMode::Quiet) => {}
            (Some(bar), _) => bar.println(format!("mediaflow: {message}")),
            (None, _) => self.print(message),
        }
    }

    /// Every byte is sent and the wait is for something else (`what`,
    /// such as "completing and verifying…"): the bar turns into a spinner
    /// saying so, plain output prints it once and its periodic lines stop.
    pub fn phase(&self, what: &str) {
        self.shared.waiting.store(true, Ordering::Relaxed);
        match (&self.shared.bar, self.shared.mode) {
            (_, ProgressMode::Quiet) => {}
            (Some(bar), _) => {
                let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                bar.set_message(format!("{} sent; {what}", human::size(self.sent())));
                bar.enable_steady_tick(BAR_EVERY);
            }
            (None, _) => self.print(&format!("{} sent; {what}", human::size(self.sent()))),
        }
    }

    /// The last word: the bar is replaced by a plain line (on a terminal
    /// the result follows on stdout, and a bar leaves the cursor on its own
    /// line), as is the last periodic line.
    pub fn finish(&self) {
        if let Some(bar) = &self.shared.bar {
            bar.finish_and_clear();
        }
        if self.shared.mode != ProgressMode::Quiet {
            self.print(&self.line(true));
        }
    }

    fn draw(&self) {
        match &self.shared.bar {
            Some(bar) => bar.set_position(self.sent()),
            None if self.shared.mode == ProgressMode::Lines && !self.shared.waiting.load(Ordering::Relaxed) => {
                self.print(&self.line(false))
            }
            None => {}
        }
    }

    /// `12 MiB of 60 MiB (20%), 5.1 MiB/s, ETA 9.4 s`, or at the end
    /// `60 MiB of 60 MiB (100%), 5.1 MiB/s, done in 11.8 s`.
    fn line(&self, done: bool) -> String {
        let s = &self.shared;
        let sent = self.sent();
        let percent = sent.saturating_mul(100).checked_div(s.total).unwrap_or(100);
        let elapsed = s.started.elapsed().as_secs_f64();
        let fresh = sent.saturating_sub(s.skipped.load(Ordering::Relaxed));
        let rate = if elapsed > 0.0 { fresh as f64 / elapsed } else { 0.0 };
        let when = if done {
            format!("done in {}", human::duration(s.started.elapsed()))
        } else if rate > 0.0 {
            // Capped: a stalled start must not overflow a Duration.
            let eta = Duration::from_secs_f64((s.total.saturating_sub(sent) as f64 / rate).min(1e9));
            format!("ETA {}", human::duration(eta))
        } else {
            "ETA unknown".into()
        };
        format!(
            "{} of {} ({percent}%), {}/s, {when}",
            human::size(sent),
            human::size(s.total),
            human::size(rate as u64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_bytes_rate_and_eta() {
        let p = Progress::new(ProgressMode::Lines, 10 * 1024 * 1024);
        p.skip(2 * 1024 * 1024);
        p.add(3 * 1024 * 1024);
        p.undo(1024 * 1024);
        let line = p.line(false);
        assert!(line.starts_with("4 MiB of 10 MiB (40%), "), "{line}");
        assert!(line.contains("/s, ETA "), "{line}");
        assert!(p.line(true).contains("/s, done in "), "{}", p.line(true));
    }

    #[test]
    fn the_wait_after_the_last_byte_is_named() {
        let p = Progress::capture(3 * 1024 * 1024);
        p.add(3 * 1024 * 1024);
        p.draw();
        p.phase("completing and verifying…");
        p.draw();
        p.finish();
        let lines = p.captured();
        assert_eq!(lines.len(), 3, "no periodic line while waiting: {lines:?}");
        assert!(lines[0].starts_with("mediaflow: 3 MiB of 3 MiB (100%), "), "{lines:?}");
        assert_eq!(lines[1], "mediaflow: 3 MiB sent; completing and verifying…");
        assert!(lines[2].contains("(100%), ") && lines[2].contains(", done in "), "{lines:?}");
    }
}
