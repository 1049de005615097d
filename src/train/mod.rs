//! `condenser train`: the streaming loader, the Condenser and coCondenser stages (with gradient cache),
//! AdamW, atomic checkpoints and exact resume, metrics. ARCHITECTURE.md: train::Loader -> train::Collator ->
//! model::Condenser -> train::Objective -> checkpoint dir.

pub mod card;
pub mod checkpoint;
pub mod collate;
pub mod config;
pub mod dev_eval;
pub mod group;
pub mod inputs;
pub mod loader;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod pair_lines;
pub mod pairs;
pub mod print_config;
pub mod query_order;
pub mod run_folder;
pub mod setup;
pub mod tensorboard;
pub mod trainer;

use std::path::PathBuf;

use crate::device::DeviceChoice;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Prepared shards: a folder with _manifest.json, or `-` for shard paths on stdin as a running
    /// `prepare` prints them (one pass over the stream; needs optim.max_steps).
    #[arg(value_name = "DATA", required_unless_present_any = ["data_flag", "print_config"])]
    data_arg: Option<String>,
    /// The same as DATA (the older spelling, kept for scripts).
    #[arg(
        long = "data",
        hide = true,
        conflicts_with = "data_arg",
        value_name = "DATA"
    )]
    data_flag: Option<String>,
    /// DATA, however it was given (set by `run_cli`).
    #[arg(skip)]
    pub data: String,
    /// Run folder: checkpoints, metrics.jsonl, the final model.
    #[arg(short, long = "out", value_name = "OUT")]
    out_arg: Option<PathBuf>,
    /// The run folder (set by `run_cli`).
    #[arg(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunOptions,
    /// Print the effective configuration (defaults, --config, --set) as commented TOML, which
    /// --config reads back, and exit.
    #[arg(long, conflicts_with = "resume")]
    pub print_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// Training data: Tevatron's JSON Lines (`query_id`, `query`, `positive_passages`,
    /// `negative_passages`; passages `{docid, title, text}`), plain or compressed; one or more files,
    /// or folders holding them.
    #[arg(value_name = "TRAIN", required_unless_present_any = ["train_flag", "print_config"])]
    train_arg: Vec<PathBuf>,
    /// The same as TRAIN (a flag spelling).
    #[arg(long = "train", hide = true, conflicts_with = "train_arg", num_args = 1.., value_name = "TRAIN")]
    train_flag: Vec<PathBuf>,
    /// TRAIN however it was spelled (filled by `finetune_cli`).
    #[arg(skip)]
    pub train: Vec<PathBuf>,
    /// Run folder: checkpoints, metrics.jsonl, the final model (OUT/final).
    #[arg(short, long = "out", value_name = "OUT")]
    out_arg: Option<PathBuf>,
    /// The run folder (set by `finetune_cli`).
    #[arg(skip)]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunOptions,
    /// Print the effective configuration (the fine-tuning defaults, --config, --set) as commented
    /// TOML, which --config reads back, and exit.
    #[arg(long, conflicts_with = "resume")]
    pub print_config: bool,
    #[command(flatten)]
    pub dev: dev_eval::DevEvalArgs,
}

/// What `train` and `finetune` share: the configuration, where to start, where to stop, the device
/// and the process group.
#[derive(Debug, clap::Args)]
pub struct RunOptions {
    /// TOML configuration (configs/*.toml); keys it leaves out keep their defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a configuration field, e.g. --set optim.lr=2e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Start from: a Hugging Face directory (e.g. all-MiniLM-L6-v2, any BERT) or a checkpoint of ours
    /// (with its Condenser head when pre-training).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue a run exactly from one of its checkpoints (model, optimizer, step, data cursor).
    #[arg(long, conflicts_with = "init")]
    pub resume: Option<PathBuf>,
    /// Replace the run OUT holds (its checkpoints, final model, metrics and configuration are removed
    /// first). Without it a folder holding a run is refused, unless --resume continues that run.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// With --resume: continue on other data than the checkpoint recorded (its training files' or
    /// shards' names, sizes and SHA-256), which is otherwise refused.
    #[arg(long, requires = "resume")]
    pub allow_data_change: bool,
    /// Stop after this many optimizer steps with a checkpoint, as SIGINT does (the schedule still
    /// assumes the configured total).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Where to train: auto (CUDA when available), cpu, cuda (under torchrun or srun: the local
    /// rank's GPU) or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
    /// Data parallelism (under torchrun or srun): the c10d backend [default: nccl on CUDA, gloo on
    /// the CPU].
    #[arg(long, value_enum)]
    pub dist_backend: Option<DistBackend>,
    /// Data parallelism: seconds a rank waits for the others (joining, a collective, a checkpoint
    /// being written) before it fails with a message naming what it waited for.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub dist_timeout: u64,
    /// tokenizer.json [default: the shards' manifest's when pre-training, else the --init model's].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

impl RunOptions {
    /// The run's view of these options, writing to `out`.
    pub fn run_args<'a>(&'a self, out: &'a std::path::Path) -> setup::RunArgs<'a> {
        setup::RunArgs {
            config: self.config.as_deref(),
            overrides: &self.overrides,
            init: self.init.as_deref(),
            resume: self.resume.as_deref(),
            out,
            stop_after: self.stop_after,
            tokenizer: self.tokenizer.as_deref(),
            allow_data_change: self.allow_data_change,
        }
    }
}

/// `--dist-backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistBackend {
    /// CPU tensors over TCP.
    Gloo,
    /// CUDA tensors (one GPU per process).
    Nccl,
}

pub use trainer::{finetune, run};

/// `condenser finetune` from the command line: the training files however they were spelled.
pub fn finetune_cli(mut args: FinetuneArgs) -> anyhow::Result<()> {
    if args.print_config {
        return print_config::print(args.run.config.as_deref(), &args.run.overrides, true);
    }
    args.out = args
        .out_arg
        .take()
        .ok_or_else(|| anyhow::anyhow!("--out RUN is needed (the run folder)"))?;
    args.train = if args.train_arg.is_empty() {
        std::mem::take(&mut args.train_flag)
    } else {
        std::mem::take(&mut args.train_arg)
    };
    finetune(args)
}

/// `condenser train` from the command line: the input however it was spelled, then the run.
pub fn run_cli(mut args: TrainArgs) -> anyhow::Result<()> {
    if args.print_config {
        return print_config::print(args.run.config.as_deref(), &args.run.overrides, false);
    }
    args.data = crate::cli::either(args.data_arg.take(), args.data_flag.take(), "DATA")?;
    args.out = args
        .out_arg
        .take()
        .ok_or_else(|| anyhow::anyhow!("--out RUN is needed (the run folder)"))?;
    run(args)
}
