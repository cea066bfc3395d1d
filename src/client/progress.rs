//! Progress output on stderr (stdout carries only the result): an indicatif
//! bar on a terminal, a plain line every few seconds otherwise (logs, CI),
//! nothing when quiet.
//!
//! Uploads count bytes into one atomic counter as their bodies are read; a
//! ticker turns the counter into output, so parts running in parallel never
//! contend for the terminal. A failed attempt takes its bytes back out.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        let mode = mode.resolve();
        let bar = (mode == ProgressMode::Bar).then(|| {
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
        });
        let shared =
            Shared { sent: AtomicU64::new(0), skipped: AtomicU64::new(0), total, started: Instant::now(), bar, mode };
        Self { shared: Arc::new(shared) }
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
            (None, _) => eprintln!("mediaflow: {message}"),
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
            eprintln!("mediaflow: {}", self.line(true));
        }
    }

    fn draw(&self) {
        match &self.shared.bar {
            Some(bar) => bar.set_position(self.sent()),
            None if self.shared.mode == ProgressMode::Lines => eprintln!("mediaflow: {}", self.line(false)),
            None => {}
        }
    }

    /// `12.00 MiB of 60.00 MiB (20%), 5.10 MiB/s, ETA 9 seconds`, or at the
    /// end `… (100%), 5.10 MiB/s, done in 12 seconds`.
    fn line(&self, done: bool) -> String {
        let s = &self.shared;
        let sent = self.sent();
        let percent = sent.saturating_mul(100).checked_div(s.total).unwrap_or(100);
        let elapsed = s.started.elapsed().as_secs_f64();
        let fresh = sent.saturating_sub(s.skipped.load(Ordering::Relaxed));
        let rate = if elapsed > 0.0 { fresh as f64 / elapsed } else { 0.0 };
        let when = if done {
            format!("done in {}", HumanDuration(s.started.elapsed()))
        } else if rate > 0.0 {
            let eta = Duration::from_secs_f64(s.total.saturating_sub(sent) as f64 / rate);
            format!("ETA {}", HumanDuration(eta))
        } else {
            "ETA unknown".into()
        };
        format!(
            "{} of {} ({percent}%), {}/s, {when}",
            BinaryBytes(sent),
            BinaryBytes(s.total),
            BinaryBytes(rate as u64)
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
        assert!(line.starts_with("4.00 MiB of 10.00 MiB (40%), "), "{line}");
        assert!(line.contains("/s, ETA "), "{line}");
        assert!(p.line(true).contains("/s, done in "), "{}", p.line(true));
    }
}
