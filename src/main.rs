//! `condenser`: the command users run. `prepare` and `inspect` run here, from the `condenser-data`
//! crate alone: this binary does not link libtorch, whose start-up (0.3 s of static constructors) and
//! exit (0.1 s of destructors) would otherwise be most of a small `prepare`. Every other command, and
//! anything this binary does not recognise as a data command, is handed to `condenser-torch` beside
//! it by `exec`: the same process (one PID for torchrun and Slurm), arguments, `argv[0]` and
//! environment, so help, messages and exit codes are that binary's own.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use condenser_data::command::{self, DataCommand, GlobalArgs};

/// The binary with every command, installed beside this one.
const TORCH_BINARY: &str = "condenser-torch";

/// The data commands' command line: the same definitions `condenser-torch` flattens into its own.
#[derive(Debug, Parser)]
#[command(name = "condenser", version)]
struct DataCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: DataCommand,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !runs_here(&args) {
        return hand_on(&args);
    }
    let cli = match DataCli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return command::parse_failure(e),
    };
    condenser_data::logging::init(cli.global.quiet, cli.global.verbose);
    command::finish(cli.command.run())
}

/// Whether the command line names a data command: its first argument that is not a global flag
/// (`-q`, `-v`, `-vv`, ...) is `prepare` or `inspect`. Anything else (other commands, `--help`,
/// `--version`, `help prepare`, a typo) goes to `condenser-torch`, which knows every command.
fn runs_here(args: &[OsString]) -> bool {
    let global = |a: &str| {
        matches!(a, "-q" | "--quiet" | "--verbose")
            || (a.len() > 1 && a.starts_with('-') && a[1..].bytes().all(|b| b == b'v'))
    };
    // The names are clap's own (the variants of `DataCommand`), not a list kept beside them.
    let data = <DataCli as clap::CommandFactory>::command();
    args.iter()
        .skip(1)
        .map(|a| a.to_str())
        .find(|a| !a.is_some_and(global))
        .flatten()
        .is_some_and(|a| data.find_subcommand(a).is_some())
}

/// Replaces this process with `condenser-torch` and the same arguments; returns only on failure.
fn hand_on(args: &[OsString]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let torch = torch_binary();
    let mut cmd = std::process::Command::new(&torch);
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args.iter().skip(1)).exec();
    eprintln!(
        "condenser: error: cannot run {}: {err} (the training and evaluation commands are in that binary, which `cargo build` puts beside `condenser`)",
        torch.display()
    );
    ExitCode::from(2)
}

/// `condenser-torch` in the folder of this executable (symbolic links resolved).
fn torch_binary() -> PathBuf {
    match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(TORCH_BINARY),
        Err(_) => PathBuf::from(TORCH_BINARY),
    }
}

// mimalloc: the tokenizer allocates per token; a faster allocator speeds up prepare.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(test)]
mod tests {
    use super::*;

    fn here(args: &[&str]) -> bool {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        runs_here(&args)
    }

    #[test]
    fn only_the_data_commands_run_without_libtorch() {
        assert!(here(&["condenser", "prepare", "c.jsonl", "-o", "s"]));
        assert!(here(&["condenser", "inspect", "s"]));
        assert!(here(&["condenser", "-q", "prepare", "--help"]));
        assert!(here(&["condenser", "-vv", "--quiet", "inspect"]));
        assert!(here(&["condenser", "--verbose", "prepare"]));
        for other in [
            &["condenser"][..],
            &["condenser", "--help"],
            &["condenser", "-V"],
            &["condenser", "help", "prepare"],
            &["condenser", "train", "s", "-o", "r"],
            &["condenser", "bench", "prepare", "c.jsonl"],
            &["condenser", "-v", "env"],
            &["condenser", "-x", "prepare"],
            &["condenser", "--", "prepare"],
            &["condenser", "Prepare"],
            &["condenser", "-"],
        ] {
            assert!(!here(other), "{other:?}");
        }
    }

    /// The data commands parse as `condenser-torch` parses them (the definitions are shared; this
    /// checks the light command line itself is consistent).
    #[test]
    fn the_data_command_line_is_consistent() {
        use clap::CommandFactory;
        DataCli::command().debug_assert();
        let cli = DataCli::try_parse_from(["condenser", "-v", "inspect", "s"]).unwrap();
        assert_eq!(cli.global.verbose, 1);
        assert!(matches!(cli.command, DataCommand::Inspect(_)));
    }
}
