//! The data commands' command line, shared by both binaries: the global flags, the `prepare` and
//! `inspect` subcommands, and how a run ends (message, exit code). `condenser` parses exactly these
//! (and hands every other command to `condenser-torch`), `condenser-torch` flattens them into its full
//! command list, so a data command parses, helps and fails alike whichever binary runs it.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::examples;

/// The heading of `-q`/`-v` in every command's help.
pub const GLOBAL_OPTIONS: &str = "Global options";

/// Flags every command takes, before or after its name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL_OPTIONS)]
    pub quiet: bool,
    /// More detail on stderr: -v for debug, -vv for trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL_OPTIONS)]
    pub verbose: u8,
}

/// The commands that need no libtorch.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Raw text (Wikipedia XML, JSONL, TSV, Parquet, plain text) -> sentences -> tokens -> span shards.
    #[command(after_help = examples(&[
        "condenser prepare corpus.jsonl -o runs/demo/shards",
        "condenser prepare enwiki-*-pages-articles*.xml.bz2 -o shards/wiki --min-spans 2",
        "condenser prepare corpus.jsonl --partition 0/2 -o shards   # then 1/2, then --merge",
        "condenser prepare --merge -o shards",
    ]))]
    Prepare(crate::prepare::PrepareArgs),
    /// Statistics, verification and samples of prepared shards.
    #[command(after_help = examples(&[
        "condenser inspect runs/demo/shards",
        "condenser inspect runs/demo/shards --verify --samples 5 --plot hist.png --json",
        "condenser prepare corpus.jsonl -o shards | condenser inspect -   # shard paths on stdin",
    ]))]
    Inspect(crate::inspect::InspectArgs),
}

impl DataCommand {
    pub fn run(self) -> Result<()> {
        match self {
            DataCommand::Prepare(args) => crate::prepare::run(args),
            DataCommand::Inspect(args) => crate::inspect::run(args),
        }
    }
}

/// The exit of a run: 0, or the error on stderr (`condenser: error: ...`) and 2. A closed stdout
/// (`condenser ... | head`) is not a failure.
pub fn finish(result: Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    if err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return ExitCode::SUCCESS;
    }
    eprintln!("condenser: error: {}", crate::cli::error_text(&err));
    ExitCode::from(2)
}

/// `--help` and `--version` print to stdout and exit 0, as clap does; a usage error goes to stderr
/// with the prefix every run error has (`condenser: error:`), and exits 2.
pub fn parse_failure(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{}", usage_message(&e));
            ExitCode::from(2)
        }
    }
}

/// clap's rendering of a parse error, its own `error: ` prefix replaced by ours (a missing
/// subcommand's help, which has no prefix, is kept as it is).
pub fn usage_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    match text.strip_prefix("error: ") {
        Some(rest) => format!("condenser: error: {rest}"),
        None => text,
    }
}
