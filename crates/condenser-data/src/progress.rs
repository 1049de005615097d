//! Progress on stderr that says when a run will end: a bar on a terminal, and a plain log line at a
//! steady interval (30 s; `CONDENSER_PROGRESS_SECS` changes it) when stderr is not one, so a Slurm or
//! nohup log shows life.
//!
//! The figure is `done / total` of a unit (input bytes for `prepare`, compressed bytes for compressed
//! inputs; texts or bytes for `encode`, `eval`, `inspect --verify`) with an ETA from the rate since the
//! start; without a known total, the rate alone. While a bar is drawn, log records and stdout lines go
//! through [`crate::logging::suspended`], so no frozen copy of the bar is left between them.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes, shown as kB/MB/GB.
    Bytes,
    /// Things, named (`texts`, `passages`, `shards`).
    Items(&'static str),
}

/// A progress report: a terminal bar, or log lines every [`interval`].
pub struct Progress {
    /// What runs (`prepare`, `encode`): the log lines start with it.
    what: &'static str,
    unit: Unit,
    /// 0: unknown.
    total: AtomicU64,
    bar: indicatif::ProgressBar,
    /// No terminal (or a hidden bar): log lines instead.
    log_lines: bool,
    started: Instant,
    /// `done` when counting started (a resumed run starts part way), for the rate.
    done0: AtomicU64,
    last_log: Mutex<Instant>,
    interval: Duration,
}

/// The log-line interval: `CONDENSER_PROGRESS_SECS` (seconds, may be fractional), else 30 s.
pub fn interval() -> Duration {
    std::env::var("CONDENSER_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && s.is_finite())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

impl Progress {
    /// A report of `total` units (`None` or 0: unknown). Quiet (`-q`) shows nothing.
    pub fn new(what: &'static str, unit: Unit, total: Option<u64>) -> Progress {
        let info = log::log_enabled!(log::Level::Info);
        let terminal = std::io::stderr().is_terminal();
        let bar = if info && terminal {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
            crate::logging::set_bar(Some(bar.clone()));
        }
        let now = Instant::now();
        Progress {
            what,
            unit,
            total: AtomicU64::new(total.unwrap_or(0)),
            log_lines: info && !terminal,
            bar,
            started: now,
            done0: AtomicU64::new(u64::MAX),
            last_log: Mutex::new(now),
            interval: interval(),
        }
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// `done` units so far, and what else to say (documents, tokens, shards): redraws the bar, or logs
    /// a line when the interval has passed. The first call sets where counting started.
    pub fn update(&self, done: u64, detail: &str) {
        let _ = self
            .done0
            .compare_exchange(u64::MAX, done, Ordering::Relaxed, Ordering::Relaxed);
        let figures = self.figures(done);
        let msg = match detail.is_empty() {
            true => figures,
            false => format!("{figures} | {detail}"),
        };
        if self.log_lines {
            let mut last = self.last_log.lock().expect("not poisoned");
            if last.elapsed() >= self.interval {
                *last = Instant::now();
                log::info!("{}: {msg}", self.what);
            }
        } else if !self.bar.is_hidden() {
            self.bar.set_message(msg);
        }
    }

    /// `37.5% of 1.20 GB, ETA 3m 12s (6.1 MB/s)`, or `450.2 MB (6.1 MB/s)` without a total.
    pub fn figures(&self, done: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let done0 = self.done0.load(Ordering::Relaxed).min(done);
        let rate = (done - done0) as f64 / secs.max(1e-9);
        let rate_s = match self.unit {
            Unit::Bytes => format!("{}/s", bytes(rate as u64)),
            Unit::Items(name) => format!("{rate:.0} {name}/s"),
        };
        let amount = |n: u64| match self.unit {
            Unit::Bytes => bytes(n),
            Unit::Items(name) => format!("{n} {name}"),
        };
        match self.total() {
            Some(total) => {
                let share = (done as f64 / total as f64).min(1.0);
                let eta = match rate > 0.0 && secs >= 1.0 {
                    true => duration(total.saturating_sub(done) as f64 / rate),
                    false => "?".to_string(),
                };
                let done_s = match self.unit {
                    Unit::Bytes => bytes(done),
                    Unit::Items(_) => done.to_string(),
                };
                format!(
                    "{:.1}% ({done_s} of {}), ETA {eta} ({rate_s})",
                    share * 100.0,
                    amount(total)
                )
            }
            None => format!("{} ({rate_s})", amount(done)),
        }
    }

    /// Runs `f` (a write to stdout or stderr) with the bar cleared, then redraws it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Clears the bar (the summary that follows is a log line).
    pub fn finish(&self) {
        if !self.bar.is_hidden() {
            crate::logging::set_bar(None);
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `950 B`, `12.3 kB`, `450.2 MB`, `1.20 GB` (decimal units, as the summaries use).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n:.0} B")
    }
}

/// `45s`, `3m 12s`, `2h 05m`, `3d 4h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".to_string();
    }
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_with_and_without_a_total() {
        let p = Progress::new("test", Unit::Bytes, Some(2_000_000));
        p.update(0, "");
        assert!(
            p.figures(500_000)
                .starts_with("25.0% (500.0 kB of 2.0 MB), ETA "),
            "{}",
            p.figures(500_000)
        );
        p.set_total(None);
        assert!(
            p.figures(500_000).starts_with("500.0 kB ("),
            "{}",
            p.figures(500_000)
        );
        let q = Progress::new("test", Unit::Items("texts"), Some(10));
        q.update(0, "");
        assert!(
            q.figures(5).starts_with("50.0% (5 of 10 texts)"),
            "{}",
            q.figures(5)
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(45.0), "45s");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(7500.0), "2h 05m");
        assert_eq!(duration(90000.0), "1d 1h");
        assert_eq!(bytes(950), "950 B");
        assert_eq!(bytes(1_200_000_000), "1.20 GB");
    }
}
