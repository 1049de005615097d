//! Logs go to stderr, never stdout: stdout carries results so stages can be piped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use log::LevelFilter;

/// The rank of a data-parallel process, once known (usize::MAX: none).
static RANK: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A rank other than 0 logs only warnings and errors, each prefixed `[rank N]`; rank 0 tells the story.
pub fn set_rank(rank: usize) {
    RANK.store(rank, Ordering::Relaxed);
    if rank != 0 && log::max_level() > LevelFilter::Warn {
        log::set_max_level(LevelFilter::Warn);
    }
}

/// Sets up the logger from `-q` / `-v` (`RUST_LOG` still overrides per module).
pub fn init(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::Error,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level)
        .target(env_logger::Target::Stderr)
        .format_timestamp(None)
        .format_target(false)
        .format(|buf, record| {
            use std::io::Write;
            let level = buf.default_level_style(record.level());
            match RANK.load(Ordering::Relaxed) {
                usize::MAX => writeln!(
                    buf,
                    "[{level}{:<5}{level:#}] {}",
                    record.level(),
                    record.args()
                ),
                r => writeln!(
                    buf,
                    "[{level}{:<5}{level:#} rank {r}] {}",
                    record.level(),
                    record.args()
                ),
            }
        });
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let logger = builder.build();
    let max = logger.filter();
    // A second init (tests that call `run` twice) is harmless.
    if log::set_boxed_logger(Box::new(Suspending(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// The progress bar drawn now, if any: log records clear it while they are written.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Registers the bar on stderr (`None` when it goes), so that log records and [`suspended`] writes
/// clear it first and leave no frozen copy of it between their lines.
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Runs `f` (a line to stdout or stderr) with the progress bar, if one is drawn, cleared.
pub fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// env_logger's logger, writing each record with the bar cleared (as indicatif-log-bridge does).
struct Suspending(env_logger::Logger);

impl log::Log for Suspending {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.0.matches(record) {
            suspended(|| self.0.log(record));
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}
