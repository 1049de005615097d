//! The `condenser` command line: one subcommand per stage, each handed to its module.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use condenser::device::{self, DeviceChoice};

#[derive(Debug, Parser)]
#[command(
    name = "condenser",
    version,
    about = "Condenser and coCondenser pre-training for dense retrievers",
    long_about = "Condenser and coCondenser pre-training for dense retrievers.\n\n\
        raw text -> `prepare` (Parquet span shards) -> `inspect` -> `train` (Condenser, then coCondenser) \
        -> a Hugging Face checkpoint -> `encode` / `eval`.\n\
        Results go to stdout, logs and progress to stderr."
)]
struct Cli {
    /// Print only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail on stderr: -v for debug, -vv for trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print condenser's and libtorch's versions, CUDA availability, devices and thread counts.
    Env(EnvArgs),
    /// Raw text (Wikipedia XML, JSONL, TSV, Parquet, plain text) -> sentences -> tokens -> span shards.
    Prepare(condenser::prepare::PrepareArgs),
    /// Statistics, verification and samples of prepared shards.
    Inspect(condenser::inspect::InspectArgs),
    /// Pre-train an encoder: the Condenser stage, then the coCondenser stage.
    Train(condenser::train::TrainArgs),
    /// Fine-tune an encoder into a retriever on labelled queries and passages (Tevatron's data).
    Finetune(condenser::train::FinetuneArgs),
    /// Draw a run's training curves (metrics.jsonl) into a PNG.
    Curves(condenser::train::metrics::CurvesArgs),
    /// Write last-layer [CLS] embeddings of texts with a trained encoder.
    Encode(condenser::eval::encode::EncodeArgs),
    /// Retrieval evaluation (MRR@10, nDCG@10, Recall@k) of an encoder.
    Eval(condenser::eval::retrieval::EvalArgs),
    /// Hard negatives for a second round of fine-tuning: Tevatron training lines from a model's top-k.
    Mine(condenser::eval::mine::MineArgs),
    /// Held-out span-pair retrieval (MRR, R@1) of an encoder on a prepared corpus.
    EvalSpans(condenser::eval::spans::SpansArgs),
    /// Throughput benchmarks: `bench prepare` (against the bare tokenizer), `bench train`.
    Bench(condenser::bench::BenchArgs),
}

#[derive(Debug, Args)]
struct EnvArgs {
    /// Where tensors would live: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    device: DeviceChoice,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    condenser::logging::init(cli.quiet, cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed stdout (`condenser ... | head`) is not a failure.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("condenser: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Env(args) => env(args),
        Command::Prepare(args) => condenser::prepare::run(args),
        Command::Inspect(args) => condenser::inspect::run(args),
        Command::Train(args) => condenser::train::run(args),
        Command::Finetune(args) => condenser::train::finetune(args),
        Command::Mine(args) => condenser::eval::mine::run(args),
        Command::Curves(args) => condenser::train::metrics::curves(args),
        Command::Encode(args) => condenser::eval::encode::run(args),
        Command::Eval(args) => condenser::eval::retrieval::run(args),
        Command::EvalSpans(args) => condenser::eval::spans::run(args),
        Command::Bench(args) => condenser::bench::run(args),
    }
}

fn env(args: EnvArgs) -> Result<()> {
    use std::io::Write;
    let report = device::EnvReport::gather(args.device)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flag_parses() {
        let cli = Cli::try_parse_from(["condenser", "env", "--device", "cpu"]).unwrap();
        match cli.command {
            Command::Env(a) => assert_eq!(a.device, DeviceChoice::Cpu),
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["condenser", "env", "--device", "tpu"]).is_err());
    }

    #[test]
    fn quiet_and_verbose_conflict() {
        assert!(Cli::try_parse_from(["condenser", "-q", "-v", "env"]).is_err());
        let cli = Cli::try_parse_from(["condenser", "-vv", "env"]).unwrap();
        assert_eq!(cli.verbose, 2);
    }
}

// mimalloc: the tokenizer allocates per token; a faster allocator speeds up prepare and encode.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
