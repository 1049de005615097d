//! `condenser-torch`: the whole `condenser` command line, one subcommand per stage, each handed to
//! its module; the training and evaluation commands load libtorch. Users run `condenser` (src/main.rs),
//! which runs `prepare` and `inspect` itself and hands every other command to this binary (exec), so
//! messages and help name `condenser` either way.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use condenser::command::{self, DataCommand, GlobalArgs};
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
#[command(after_help = examples(&[
    "condenser prepare corpus.jsonl -o runs/demo/shards",
    "condenser train runs/demo/shards --init data/minilm --config configs/demo.toml -o runs/c",
    "condenser encode texts.tsv --model runs/c/final -o emb.parquet",
]))]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

use condenser::cli::examples;

#[derive(Debug, Subcommand)]
enum Command {
    /// Print condenser's and libtorch's versions, CUDA availability, devices and thread counts.
    #[command(after_help = examples(&[
        "condenser env                     # versions, CUDA, devices, threads",
        "condenser env --json              # the same as one JSON document",
        "condenser env --device cuda:1",
    ]))]
    Env(EnvArgs),
    /// `prepare` and `inspect` (the same definitions as `condenser`'s own).
    #[command(flatten)]
    Data(DataCommand),
    /// Pre-train an encoder: the Condenser stage, then the coCondenser stage.
    #[command(after_help = examples(&[
        "condenser train runs/demo/shards --init data/minilm --config configs/demo.toml -o runs/c",
        "condenser train runs/demo/shards --init runs/c/final --config configs/demo-cocondenser.toml -o runs/co",
        "condenser train runs/demo/shards --resume runs/c/checkpoint-15 -o runs/c   # exact continuation",
        "condenser train --print-config --config configs/demo.toml --set optim.lr=2e-4 > my.toml",
    ]))]
    Train(condenser::train::TrainArgs),
    /// Fine-tune an encoder into a retriever on labelled queries and passages (Tevatron's data).
    #[command(after_help = examples(&[
        "condenser finetune train.jsonl.gz --init runs/co/final --config configs/finetune-msmarco.toml -o runs/r1",
        "condenser finetune train-r2.jsonl --init runs/r1/final --config configs/finetune-msmarco.toml -o runs/r2",
        "torchrun --no-python --nproc-per-node 8 condenser finetune train.jsonl --init runs/co/final -o runs/r1",
    ]))]
    Finetune(condenser::train::FinetuneArgs),
    /// Draw a run's training curves (metrics.jsonl) into a PNG.
    #[command(after_help = examples(&[
        "condenser curves runs/c -o curves.png",
        "condenser curves runs/c/metrics.jsonl -o curves.png",
    ]))]
    Curves(condenser::train::metrics::CurvesArgs),
    /// Write last-layer [CLS] embeddings of texts with a trained encoder.
    #[command(after_help = examples(&[
        "condenser encode texts.tsv --model runs/co/final -o emb.parquet",
        "condenser encode passages.txt --model runs/co/final -o emb.npy   # emb.npy + emb.ids.txt",
        "zcat queries.tsv.gz | condenser encode - --model runs/co/final -o - > queries.parquet",
    ]))]
    Encode(condenser::eval::encode::EncodeArgs),
    /// Retrieval evaluation (MRR@10, nDCG@10, Recall@k) of an encoder.
    #[command(after_help = examples(&[
        "condenser eval --model runs/co/final --corpus corpus.jsonl --queries queries.jsonl --qrels qrels/test.tsv",
        "condenser eval --model runs/co/final --corpus collection.tsv --queries queries.tsv --qrels qrels.txt --run run.trec --json",
    ]))]
    Eval(condenser::eval::retrieval::EvalArgs),
    /// Hard negatives for a second round of fine-tuning: Tevatron training lines from a model's top-k.
    #[command(after_help = examples(&[
        "condenser mine --model runs/r1/final --corpus collection.tsv --queries queries.train.tsv --qrels qrels.train.tsv -o train-r2.jsonl",
        "condenser mine --model runs/r1/final --corpus corpus.jsonl --queries queries.jsonl --qrels qrels/train.tsv --depth 200 --skip-top 3 --negatives 30 -o -",
    ]))]
    Mine(condenser::eval::mine::MineArgs),
    /// Held-out span-pair retrieval (MRR, R@1) of an encoder on a prepared corpus.
    #[command(after_help = examples(&[
        "condenser eval-spans runs/demo/shards --model runs/co/final",
        "condenser eval-spans runs/demo/shards --model runs/co/final --holdout-fraction 0.02 --json",
    ]))]
    EvalSpans(condenser::eval::spans::SpansArgs),
    /// Throughput benchmarks: `bench prepare` (against the bare tokenizer), `bench train`, `bench numerics`.
    #[command(after_help = examples(&[
        "condenser bench prepare corpus.jsonl -j 2",
        "condenser bench train --case condenser --seq 128 --batch-size 128",
        "condenser bench numerics --data runs/demo/shards",
    ]))]
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return command::parse_failure(e),
    };
    condenser::logging::init(cli.global.quiet, cli.global.verbose);
    command::finish(run(cli))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Env(args) => env(args),
        Command::Data(command) => command.run(),
        Command::Train(args) => condenser::train::run_cli(args),
        Command::Finetune(args) => condenser::train::finetune_cli(args),
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

    /// Every argument of every command, nested ones and hidden aliases included, has a description;
    /// clap's own consistency checks pass.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&cmd, "condenser", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// One spelling for one idea: `--batch-size` with `--batch` kept as an alias;
    /// the input positional with the older `--input`/`--data` flags kept; `-o` for `--out`.
    #[test]
    fn old_spellings_parse_as_the_new_ones() {
        let batch = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Bench(b) => match b.what {
                condenser::bench::BenchWhat::Train(t) => t.batch,
                condenser::bench::BenchWhat::Numerics(n) => n.batch,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        for sub in ["train", "numerics"] {
            assert_eq!(batch(&["condenser", "bench", sub, "--batch-size", "7"]), 7);
            assert_eq!(batch(&["condenser", "bench", sub, "--batch", "7"]), 7);
        }
        let encode = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(Cli {
                command: Command::Encode(e),
                ..
            }) => Ok((e.input.or(e.input_flag), e.out)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.kind()),
        };
        let want = Ok((Some("t.tsv".to_string()), std::path::PathBuf::from("e.npy")));
        assert_eq!(
            encode(&[
                "condenser",
                "encode",
                "t.tsv",
                "--model",
                "m",
                "-o",
                "e.npy"
            ]),
            want
        );
        assert_eq!(
            encode(&[
                "condenser",
                "encode",
                "--input",
                "t.tsv",
                "--model",
                "m",
                "--out",
                "e.npy"
            ]),
            want
        );
        assert!(encode(&["condenser", "encode", "--model", "m", "-o", "e.npy"]).is_err());
        assert!(encode(&[
            "condenser",
            "encode",
            "a",
            "--input",
            "b",
            "--model",
            "m",
            "-o",
            "e"
        ])
        .is_err());
        for args in [
            &["condenser", "train", "shards", "-o", "run"][..],
            &["condenser", "train", "--data", "shards", "--out", "run"],
        ] {
            assert!(
                matches!(
                    Cli::try_parse_from(args).unwrap().command,
                    Command::Train(_)
                ),
                "{args:?}"
            );
        }
        assert!(
            Cli::try_parse_from(["condenser", "train", "a", "--data", "b", "-o", "r"]).is_err()
        );
        for args in [
            &["condenser", "eval-spans", "shards", "--model", "m"][..],
            &[
                "condenser",
                "eval-spans",
                "--data",
                "shards",
                "--model",
                "m",
            ],
        ] {
            match Cli::try_parse_from(args).unwrap().command {
                Command::EvalSpans(a) => assert_eq!(
                    a.data.or(a.data_flag),
                    Some(std::path::PathBuf::from("shards"))
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn usage_errors_carry_the_run_errors_prefix() {
        let e = Cli::try_parse_from(["condenser", "env", "--bogus"]).unwrap_err();
        let msg = command::usage_message(&e);
        assert!(
            msg.starts_with("condenser: error: unexpected argument '--bogus'"),
            "{msg}"
        );
    }

    #[test]
    fn quiet_and_verbose_conflict() {
        assert!(Cli::try_parse_from(["condenser", "-q", "-v", "env"]).is_err());
        let cli = Cli::try_parse_from(["condenser", "-vv", "env"]).unwrap();
        assert_eq!(cli.global.verbose, 2);
    }
}

// mimalloc: the tokenizer allocates per token; a faster allocator speeds up prepare and encode.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
