//! Logs go to stderr, never stdout: stdout carries results so stages can be piped.

use log::LevelFilter;

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
        .format_target(false);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    // A second init (tests that call `run` twice) is harmless.
    let _ = builder.try_init();
}
