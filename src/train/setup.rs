//! Everything `condenser train` settles before its first step: the configuration (a new run's, or a
//! resumed checkpoint's with the changes resuming allows), the data source, the tokenizer, the model and
//! its heads, the optimizer with its restored state, and the number of steps. The loop
//! (`trainer::train`) takes the result and never looks at the command line again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::checkpoint::{self, TrainerState};
use super::collate::Vocab;
use super::config::{Stage, TrainConfig};
use super::inputs::{self, InputRecord};
use super::loader::{self, Cursor, ShardSource};
use super::optim::AdamW;
use crate::model::{hf, HeadConfig};
use crate::shards::Manifest;

/// What the command line says about a run, whichever command (`train`, `finetune`) it came from.
pub struct RunArgs<'a> {
    pub config: Option<&'a Path>,
    pub overrides: &'a [String],
    pub init: Option<&'a Path>,
    pub resume: Option<&'a Path>,
    pub out: &'a Path,
    pub stop_after: Option<u64>,
    pub tokenizer: Option<&'a Path>,
    /// `--allow-data-change`: resume on other data than the checkpoint recorded.
    pub allow_data_change: bool,
}

/// Where the examples come from.
pub enum DataArg<'a> {
    /// Prepared span shards: a folder, or `-` for shard paths on stdin (pre-training).
    Shards(&'a str),
    /// Tevatron training JSON Lines (fine-tuning).
    Pairs(&'a [PathBuf]),
}

/// The data source, ready for its loader.
pub enum Data {
    Shards(ShardSource),
    Pairs(Vec<PathBuf>),
}

/// A run ready to train.
pub struct Setup {
    pub cfg: TrainConfig,
    pub device: Device,
    /// The warm start (or the resumed checkpoint).
    pub init: PathBuf,
    /// Set when resuming: the checkpoint's folder.
    pub resumed: Option<PathBuf>,
    /// tokenizer.json used for the data and copied into every checkpoint.
    pub tok_path: PathBuf,
    pub vocab: Arc<Vocab>,
    pub loaded: hf::Loaded,
    pub opt: AdamW,
    /// Optimizer steps done (0, or the checkpoint's).
    pub step: u64,
    /// Data position after `step` steps.
    pub cursor: Cursor,
    /// Optimizer steps of the whole run.
    pub total: u64,
    /// Where batches come from (taken when the loader starts).
    pub data: Option<Data>,
    pub out: PathBuf,
    pub stop_after: Option<u64>,
    /// What the run reads (recorded in checkpoints, compared between ranks).
    pub inputs: Vec<InputRecord>,
}

/// Reads the configuration, loads the model and optimizer state, and counts the run's steps. Writes
/// nothing yet except what `prepare_out` does. `base` is the configuration a new run starts from
/// before its file and overrides (the command's defaults).
pub fn prepare(
    args: &RunArgs,
    data: DataArg,
    base: TrainConfig,
    device: Device,
    world: usize,
) -> Result<Setup> {
    // clap's `requires` does not hold this flag to --resume (it sits among conflicting flags).
    if args.allow_data_change && args.resume.is_none() {
        bail!("--allow-data-change goes with --resume (a new run records its data; there is nothing to change)");
    }
    let (mut cfg, resumed) = match args.resume {
        Some(dir) => (resumed_config(dir, args, world)?, Some(dir.to_path_buf())),
        None => (
            TrainConfig::load_over(base, args.config, args.overrides)?,
            None,
        ),
    };
    let finetune = cfg.stage == Stage::Finetune;
    match (&data, finetune) {
        (DataArg::Shards(_), true) => bail!("stage = \"finetune\" is `condenser finetune`'s (labelled queries and passages); `condenser train` pre-trains on span shards"),
        (DataArg::Pairs(_), false) => bail!("`condenser finetune` trains stage \"finetune\", not {:?} (that is `condenser train`)", cfg.stage),
        _ => {}
    }
    if world > 1 && matches!(data, DataArg::Shards("-")) {
        bail!("--data - (shard paths on stdin) reaches one process only; with {world} processes give the prepared folder");
    }
    let init = resumed
        .clone()
        .or_else(|| args.init.map(Path::to_path_buf))
        .context("--init DIR is needed (a Hugging Face directory to start from), or --resume")?;
    hf::check_model_dir(&init).context(if resumed.is_some() {
        "--resume"
    } else {
        "--init"
    })?;
    let (data, manifest) = match data {
        DataArg::Shards(d) => {
            let (source, manifest) = data_source(d)?;
            if let Some((dir, m)) = &manifest {
                loader::ensure_one_batch(dir, m, cfg.stage, cfg.data.batch_size)?;
            }
            (Data::Shards(source), manifest)
        }
        DataArg::Pairs(files) => (Data::Pairs(inputs::training_files(files)?), None),
    };
    let inputs = match (&data, &manifest) {
        (Data::Pairs(files), _) => inputs::of_files(files)?,
        (_, Some((_, m))) => vec![inputs::of_shards(m)],
        _ => Vec::new(), // shard paths on stdin: nothing known in advance
    };
    let tok_path = tokenizer_path(args, manifest.as_ref(), &init);
    let tokenizer = crate::tokenizer::load(&tok_path)?;
    let vocab = Arc::new(Vocab::from_tokenizer(&tokenizer)?);
    let loaded = load_model(&mut cfg, &init, device)?;
    check_fit(&cfg, &loaded, manifest.as_ref(), &vocab, &tok_path)?;

    // Fine-tuning trains the encoder alone: the Condenser and MLM heads get no gradient and are not
    // saved, so the optimizer leaves them out.
    let vars: BTreeMap<String, Tensor> = loaded
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !finetune || hf::is_encoder_weight(name))
        .collect();
    let mut opt = AdamW::new(vars);
    let (mut step, mut cursor) = (0u64, Cursor::default());
    if let Some(dir) = &resumed {
        let state = checkpoint::load_state(dir, &mut opt)?;
        inputs::check_resume(dir, &state.inputs, &inputs, args.allow_data_change)?;
        step = state.step;
        cursor = state.cursor;
        // Another batch size (same examples a step, another world size): the same position in the
        // same stream, counted in the new batches (resumed_config checked that it divides).
        let old = state.config.data.batch_size as u64;
        cursor.batches = cursor.batches * old / cfg.data.batch_size as u64;
        if state.world_size != world {
            log::info!(
                "resuming a run of {} process(es) with {world}: the same {} examples a step",
                state.world_size,
                effective_batch(&cfg, world)
            );
        }
        log::info!(
            "resuming {} at step {step} (epoch {}, batch {})",
            dir.display(),
            cursor.epoch,
            cursor.batches
        );
    }
    let total = match &data {
        Data::Pairs(files) if cfg.optim.max_steps == 0 => {
            let (queries, skips) = super::pairs::count_queries(files, cfg.data.train_n_passages)?;
            // Too few queries is often too many bad lines: say how many were skipped, and why.
            per_epoch_steps(queries, &cfg, world).with_context(|| skips.summary())?
                * cfg.optim.epochs as u64
        }
        _ => total_steps(&cfg, manifest.as_ref(), world)?,
    };
    Ok(Setup {
        cfg,
        device,
        init,
        resumed,
        tok_path,
        vocab,
        loaded,
        opt,
        step,
        cursor,
        total,
        data: Some(data),
        out: args.out.to_path_buf(),
        stop_after: args.stop_after,
        inputs,
    })
}

impl Setup {
    /// Micro-batches one optimizer step consumes: `optim.grad_accum` for the Condenser stage; the
    /// coCondenser stage's big batches go through the gradient cache instead.
    pub fn micro_batches(&self) -> usize {
        micro_batches(&self.cfg)
    }

    /// Creates the run folder, clears what a killed save left there, and records the configuration.
    pub fn prepare_out(&self) -> Result<()> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("{}: cannot create", self.out.display()))?;
        checkpoint::remove_stale_temporaries(&self.out)?;
        let path = self.out.join("train_config.toml");
        std::fs::write(&path, self.cfg.to_toml())
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}

/// The resumed checkpoint's configuration with the file and overrides over it, refusing the changes
/// that would make its optimizer state, data cursor or schedule mean something else.
fn resumed_config(dir: &Path, args: &RunArgs, world: usize) -> Result<TrainConfig> {
    let path = checkpoint::state_dir(dir).join(checkpoint::STATE_FILE);
    let state: TrainerState = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not a trainer state", path.display()))?;
    state.check(&path)?;
    let cfg = TrainConfig::load_over(state.config.clone(), args.config, args.overrides)?;
    if cfg.stage != state.config.stage
        || cfg.model != state.config.model
        || cfg.data.max_len != state.config.data.max_len
    {
        bail!("--resume {}: the stage, model and max_len cannot change when resuming (checkpoint: {:?}, {:?})", dir.display(), state.config.stage, state.config.model);
    }
    // The data cursor counts batches of one order: what decides that order must stay.
    let (a, b) = (&state.config, &cfg);
    for (key, same) in [
        ("run.seed", a.run.seed == b.run.seed),
        (
            "data.shuffle_buffer",
            a.data.shuffle_buffer == b.data.shuffle_buffer,
        ),
        (
            "data.group_by_length",
            a.data.group_by_length == b.data.group_by_length,
        ),
        (
            "data.holdout_fraction",
            a.data.holdout_fraction == b.data.holdout_fraction,
        ),
        (
            "data.holdout_seed",
            a.data.holdout_seed == b.data.holdout_seed,
        ),
    ] {
        if !same {
            bail!("--resume {}: {key} cannot change when resuming (it decides the data order the checkpoint's cursor counts in); start a new run with --init {} instead", dir.display(), dir.display());
        }
    }
    // The world size, batch size and accumulation may change together if a step still takes the same
    // examples: the stream and its masks are keyed by the example's place in it, not by who trains it.
    let (before, now) = (
        effective_batch(a, state.world_size),
        effective_batch(b, world),
    );
    if before != now {
        bail!("--resume {}: the checkpoint's steps took {before} examples (world size {} x data.batch_size {} x optim.grad_accum {}), this run's would take {now} (world size {world} x {} x {}): keep the product, or start a new run with --init {}", dir.display(), state.world_size, a.data.batch_size, micro_batches(a), b.data.batch_size, micro_batches(b), dir.display());
    }
    if a.data.batch_size != b.data.batch_size {
        if b.data.group_by_length > 1 {
            bail!("--resume {}: data.batch_size cannot change with data.group_by_length > 1 (length groups are cut in batches of it)", dir.display());
        }
        let examples = state.cursor.batches * a.data.batch_size as u64;
        if examples % b.data.batch_size as u64 != 0 {
            bail!("--resume {}: the checkpoint's cursor is {examples} examples into epoch {}, not a whole number of batches of {}", dir.display(), state.cursor.epoch, b.data.batch_size);
        }
    }
    // The schedule's shape: the checkpoint is part-way through one warm-up and decay; another length
    // would bend it silently (the learning rate itself may change, on purpose).
    for (key, same) in [
        ("optim.max_steps", a.optim.max_steps == b.optim.max_steps),
        ("optim.epochs", a.optim.epochs == b.optim.epochs),
        (
            "optim.warmup_ratio",
            a.optim.warmup_ratio == b.optim.warmup_ratio,
        ),
    ] {
        if !same {
            bail!("--resume {}: {key} cannot change when resuming (it sets the length of the learning-rate schedule the checkpoint is part-way through); start a new run with --init {} to train on with another schedule", dir.display(), dir.display());
        }
    }
    Ok(cfg)
}

/// Resolved data: where shards come from, and their manifest when there is one.
fn data_source(data: &str) -> Result<(ShardSource, Option<(PathBuf, Manifest)>)> {
    if data == "-" {
        let (tx, rx) = crossbeam_channel::bounded(64);
        std::thread::Builder::new()
            .name("stdin-paths".into())
            .spawn(move || {
                use std::io::BufRead;
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    let line = line.trim().to_string();
                    if !line.is_empty() && tx.send(PathBuf::from(line)).is_err() {
                        break;
                    }
                }
            })?;
        return Ok((ShardSource::Stream(rx), None));
    }
    let dir = PathBuf::from(data);
    let m = Manifest::load(&dir)?.with_context(|| {
        format!(
            "{}: no _manifest.json (run `condenser prepare` into it)",
            dir.display()
        )
    })?;
    if !m.complete {
        log::warn!(
            "{}: the manifest says prepare has not finished; training on the {} complete shard(s)",
            dir.display(),
            m.shards.len()
        );
    }
    anyhow::ensure!(!m.shards.is_empty(), "{}: no shards", dir.display());
    let files = m.shards.iter().map(|s| dir.join(&s.file)).collect();
    Ok((ShardSource::Files(files), Some((dir, m))))
}

/// --tokenizer, else the manifest's copy, else the warm start's, else the default.
fn tokenizer_path(args: &RunArgs, manifest: Option<&(PathBuf, Manifest)>, init: &Path) -> PathBuf {
    args.tokenizer
        .map(Path::to_path_buf)
        .or_else(|| {
            let (dir, m) = manifest?;
            m.tokenizer
                .locate(dir)
                .map_err(|e| {
                    log::warn!(
                        "{e:#}; falling back to the warm start's (else the default) tokenizer"
                    )
                })
                .ok()
        })
        .or_else(|| Some(init.join(hf::TOKENIZER_FILE)).filter(|p| p.exists()))
        .unwrap_or_else(crate::paths::default_tokenizer)
}

/// Loads the warm start with the configured heads. `model.skip_from` unset: the init's head file
/// decides (hf::load reads its metadata over this default), else half the layers; the value chosen is
/// written back into `cfg` so checkpoints record it.
fn load_model(cfg: &mut TrainConfig, init: &Path, device: Device) -> Result<hf::Loaded> {
    let layers = crate::model::BertConfig::load(&init.join(hf::CONFIG_FILE))?.num_hidden_layers;
    if let Some(s) = cfg.model.skip_from {
        crate::model::condenser::check_skip_from(s, layers)?;
    }
    let head = HeadConfig {
        skip_from: cfg.model.skip_from.unwrap_or((layers / 2).max(1) as usize),
        n_head_layers: cfg.model.n_head_layers,
        late_mlm: cfg.model.late_mlm,
    };
    let loaded = hf::load(init, device, head, cfg.run.seed as i64)?;
    let head = match cfg.model.skip_from {
        Some(_) => head,
        None => {
            let skip_from = loaded.model.head_config.skip_from;
            if cfg.stage != Stage::Finetune {
                log::info!("model.skip_from unset: the head reads layer {skip_from} of {layers}");
            }
            cfg.model.skip_from = Some(skip_from);
            HeadConfig { skip_from, ..head }
        }
    };
    if cfg.stage == Stage::Finetune {
        return Ok(loaded); // the heads are neither trained nor saved: whatever the init has
    }
    if loaded.model.head_config != head {
        bail!(
            "{}: its Condenser head was trained with {:?}, the configuration asks for {:?}",
            init.display(),
            loaded.model.head_config,
            head
        );
    }
    if loaded.fresh_mlm_head {
        log::info!("{}: no MLM head (cls.predictions.*); a fresh one is initialised, decoder tied to the word embeddings, zero bias", init.display());
    }
    if loaded.fresh_condenser_head {
        log::info!(
            "{}: no {}; the Condenser head is freshly initialised N(0, {})",
            init.display(),
            hf::HEAD_FILE,
            loaded.model.config.initializer_range
        );
    }
    Ok(loaded)
}

/// The shards, tokenizer and max_len must fit the model.
fn check_fit(
    cfg: &TrainConfig,
    loaded: &hf::Loaded,
    manifest: Option<&(PathBuf, Manifest)>,
    vocab: &Vocab,
    tok_path: &Path,
) -> Result<()> {
    let model = &loaded.model;
    if let Some((dir, m)) = manifest {
        if m.tokenizer.vocab_size as i64 != model.config.vocab_size {
            bail!(
                "{}: the shards were tokenized with a vocabulary of {} ids, the model has {}: tokenize with the model's tokenizer",
                dir.display(),
                m.tokenizer.vocab_size,
                model.config.vocab_size
            );
        }
    }
    if vocab.size as i64 > model.config.vocab_size {
        bail!(
            "{}: a vocabulary of {} ids for a model of {}",
            tok_path.display(),
            vocab.size,
            model.config.vocab_size
        );
    }
    model
        .config
        .check_lengths(&[("data.max_len", cfg.data.max_len)])?;
    if cfg.stage == Stage::Finetune {
        model.config.check_lengths(&[
            ("data.query_max_len", cfg.data.query_max_len),
            ("data.passage_max_len", cfg.data.passage_max_len),
        ])?;
    }
    Ok(())
}

/// Batches of one process in one optimizer step: `optim.grad_accum` for the Condenser stage; the
/// coCondenser stage's big batches go through the gradient cache instead.
pub fn micro_batches(cfg: &TrainConfig) -> usize {
    match cfg.stage {
        Stage::Condenser => cfg.optim.grad_accum.max(1),
        Stage::Cocondenser | Stage::Finetune => 1,
    }
}

/// Examples (spans, or documents for coCondenser) of one optimizer step over `world` processes.
pub fn effective_batch(cfg: &TrainConfig, world: usize) -> usize {
    world * cfg.data.batch_size * micro_batches(cfg)
}

/// Total optimizer steps: max_steps, or epochs over the data.
fn total_steps(
    cfg: &TrainConfig,
    manifest: Option<&(PathBuf, Manifest)>,
    world: usize,
) -> Result<u64> {
    if cfg.optim.max_steps > 0 {
        return Ok(cfg.optim.max_steps as u64);
    }
    let (dir, m) = manifest
        .context("--data - (a stream) needs optim.max_steps: the length of the data is unknown")?;
    let examples = epoch_examples(dir, m, cfg)?;
    Ok(per_epoch_steps(examples, cfg, world)? * cfg.optim.epochs as u64)
}

/// Optimizer steps of one epoch of `examples`.
fn per_epoch_steps(examples: u64, cfg: &TrainConfig, world: usize) -> Result<u64> {
    let per_step = effective_batch(cfg, world);
    let per_epoch = examples / per_step as u64;
    anyhow::ensure!(
        per_epoch > 0,
        "{} examples are less than one step of {} ({world} process(es) x batch {} x grad_accum {})",
        examples,
        per_step,
        cfg.data.batch_size,
        micro_batches(cfg)
    );
    Ok(per_epoch)
}

/// Examples of one epoch: spans (Condenser) or documents with two or more spans (coCondenser), less
/// the held-out documents. From the manifest's counts when nothing is held out and it has them (no
/// pass over the data); else one pass over the shards.
fn epoch_examples(dir: &Path, m: &Manifest, cfg: &TrainConfig) -> Result<u64> {
    let d = &cfg.data;
    if d.holdout_fraction <= 0.0 {
        match cfg.stage {
            Stage::Condenser => return Ok(m.totals.spans),
            Stage::Cocondenser => {
                if let Some(n) = m.shards.iter().map(|s| s.pairable).sum::<Option<u64>>() {
                    return Ok(n);
                }
            }
            Stage::Finetune => bail!("fine-tuning reads no span shards"),
        }
    }
    log::info!(
        "counting the training examples of {} (one pass)",
        dir.display()
    );
    let mut n = 0;
    for s in &m.shards {
        for r in crate::shards::read_shard(&dir.join(&s.file), None)? {
            if crate::eval::spans::is_held_out(&r.doc_id, d.holdout_seed, d.holdout_fraction) {
                continue;
            }
            n += match cfg.stage {
                Stage::Condenser => r.spans.len() as u64,
                Stage::Cocondenser => (r.spans.len() >= 2) as u64,
                Stage::Finetune => 0,
            };
        }
    }
    Ok(n)
}
