//! Logs go to stderr, never stdout: stdout carries results so stages can be piped.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    // A second init (tests that call `run` twice) is harmless.
    let _ = builder.try_init();
}
