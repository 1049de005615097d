//! The training loop, readable in one sitting in nanoGPT's order: lr -> micro-steps (or gradient-cache
//! chunks) -> clip -> step -> zero grads -> log -> checkpoint -> stop. It calls `loader`, `objective`,
//! `optim` and `checkpoint` rather than inlining them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::checkpoint::{self, TrainerState};
use super::collate::{Batch, Vocab};
use super::config::{Stage, TrainConfig};
use super::loader::{self, Cursor, Loader, LoaderSpec, Msg, ShardSource};
use super::metrics::{batch_flops, MetricsFile, Record, PEAK_FLOPS};
use super::objective::{cocondenser_step, condenser_micro, seed_dropout, DeviceBatch, Losses};
use super::optim::{lr_at, AdamW};
use super::TrainArgs;
use crate::model::{hf, Ctx, HeadConfig};
use crate::shards::Manifest;

const GIB: f64 = (1u64 << 30) as f64;

/// Set by SIGINT / SIGTERM: finish the step, write a checkpoint, exit 0.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
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
            "{}: no manifest.json (run `condenser prepare` into it)",
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
            };
        }
    }
    Ok(n)
}

type SaveFn<'a> = dyn Fn(&Path, &AdamW, u64, Cursor) -> Result<()> + 'a;

/// Reads the optimizer's device-side health flag (a host sync, so only when logging or saving). After
/// a non-finite step it writes the state before that step (weights, moments, step and data position;
/// that update and every later one were skipped) as a checkpoint and fails the run.
fn stop_if_diverged(
    opt: &mut AdamW,
    unchecked: &mut Vec<(u64, Cursor)>,
    save: &SaveFn,
    out: &Path,
) -> Result<()> {
    let last = *unchecked.last().expect("the checked step is kept");
    if let Some(good) = opt.diverged() {
        let (good, cursor) = unchecked
            .iter()
            .copied()
            .find(|&(s, _)| s == good as u64)
            .context("a non-finite step before the last check")?;
        opt.set_steps(good as i64);
        opt.zero_grad();
        let dir = checkpoint::step_dir(out, good);
        save(&dir, opt, good, cursor)?;
        bail!(
            "the loss or gradient norm was not finite at step {}; that update and the {} after it were skipped, and the state before it is in {} (resume from it with a lower optim.lr, or check the data)",
            good + 1,
            last.0 - good - 1,
            dir.display()
        );
    }
    unchecked.clear();
    unchecked.push(last);
    Ok(())
}

/// What waiting for the next batch ended with.
enum Next {
    Batch(Batch, Cursor),
    /// The data ran out (a finished stream).
    End,
    /// SIGINT or SIGTERM came while waiting (a stream that sends nothing yet, a slow disk).
    Stopped,
}

/// Waits for the next batch, counting the wait, and watching for SIGINT / SIGTERM meanwhile.
fn next_batch(loader: &Loader, wait: &mut Duration) -> Result<Next> {
    use crossbeam_channel::RecvTimeoutError;
    let t = Instant::now();
    loop {
        let msg = match loader.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) if !STOP.load(Ordering::SeqCst) => continue,
            Err(e) => {
                *wait += t.elapsed();
                return Ok(match e {
                    RecvTimeoutError::Timeout => Next::Stopped,
                    RecvTimeoutError::Disconnected => Next::End,
                });
            }
        };
        match msg {
            Msg::Batch { batch, after } => {
                *wait += t.elapsed();
                return Ok(Next::Batch(batch, after));
            }
            Msg::EpochEnd {
                epoch,
                skipped_docs,
            } => {
                if skipped_docs > 0 {
                    log::info!("epoch {epoch} done; {skipped_docs} document(s) with fewer than two spans skipped");
                } else {
                    log::info!("epoch {epoch} done");
                }
            }
            Msg::Error(e) => return Err(e.context("the data loader failed")),
        }
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let device = crate::device::select(args.device)?;
    // Configuration: the file and overrides, or the resumed checkpoint's (architecture fixed).
    let (mut cfg, resumed) = match &args.resume {
        Some(dir) => {
            let path = dir.join(checkpoint::STATE_FILE);
            let state: TrainerState = serde_json::from_slice(
                &std::fs::read(&path)
                    .with_context(|| format!("{}: cannot read", path.display()))?,
            )
            .with_context(|| format!("{}: not a trainer state", path.display()))?;
            state.check(&path)?;
            let cfg = TrainConfig::load_over(
                state.config.clone(),
                args.config.as_deref(),
                &args.overrides,
            )?;
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
                ("data.batch_size", a.data.batch_size == b.data.batch_size),
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
                ("optim.grad_accum", a.optim.grad_accum == b.optim.grad_accum),
            ] {
                if !same {
                    bail!("--resume {}: {key} cannot change when resuming (it decides the data order the checkpoint's cursor counts in); start a new run with --init {} instead", dir.display(), dir.display());
                }
            }
            // The schedule's shape: the checkpoint is part-way through one warm-up and decay; another
            // length would bend it silently (the learning rate itself may change, on purpose).
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
            (cfg, Some(dir.clone()))
        }
        None => (
            TrainConfig::load(args.config.as_deref(), &args.overrides)?,
            None,
        ),
    };
    let init = resumed
        .clone()
        .or_else(|| args.init.clone())
        .context("--init DIR is needed (a Hugging Face directory to start from), or --resume")?;
    hf::check_model_dir(&init).context(if resumed.is_some() {
        "--resume"
    } else {
        "--init"
    })?;
    let (source, manifest) = data_source(&args.data)?;
    if let Some((dir, m)) = &manifest {
        loader::ensure_one_batch(dir, m, cfg.stage, cfg.data.batch_size)?;
    }
    let tok_path = args
        .tokenizer
        .clone()
        .or_else(|| {
            let (dir, m) = manifest.as_ref()?;
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
        .unwrap_or_else(crate::paths::default_tokenizer);
    let tokenizer = crate::tokenizer::load(&tok_path)?;
    let vocab = Arc::new(Vocab::from_tokenizer(&tokenizer)?);

    // model.skip_from unset: the init's head file decides (hf::load reads its metadata over this
    // default), else half the layers.
    let layers = crate::model::BertConfig::load(&init.join(hf::CONFIG_FILE))?.num_hidden_layers;
    if let Some(s) = cfg.model.skip_from {
        crate::model::condenser::check_skip_from(s, layers)?;
    }
    let head = HeadConfig {
        skip_from: cfg.model.skip_from.unwrap_or((layers / 2).max(1) as usize),
        n_head_layers: cfg.model.n_head_layers,
        late_mlm: cfg.model.late_mlm,
    };
    let loaded = hf::load(&init, device, head, cfg.run.seed as i64)?;
    let head = match cfg.model.skip_from {
        Some(_) => head,
        None => {
            let skip_from = loaded.model.head_config.skip_from;
            log::info!("model.skip_from unset: the head reads layer {skip_from} of {layers}");
            cfg.model.skip_from = Some(skip_from);
            HeadConfig { skip_from, ..head }
        }
    };
    if loaded.model.head_config != head {
        bail!(
            "{}: its Condenser head was trained with {:?}, the configuration asks for {:?}",
            init.display(),
            loaded.model.head_config,
            head
        );
    }
    let model = &loaded.model;
    if loaded.fresh_mlm_head {
        log::info!("{}: no MLM head (cls.predictions.*); a fresh one is initialised, decoder tied to the word embeddings, zero bias", init.display());
    }
    if loaded.fresh_condenser_head {
        log::info!(
            "{}: no {}; the Condenser head is freshly initialised N(0, {})",
            init.display(),
            hf::HEAD_FILE,
            model.config.initializer_range
        );
    }
    if let Some((dir, m)) = &manifest {
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
    if cfg.data.max_len as i64 > model.config.max_position_embeddings {
        bail!(
            "data.max_len {} exceeds the model's max_position_embeddings {}",
            cfg.data.max_len,
            model.config.max_position_embeddings
        );
    }

    let vars: BTreeMap<String, Tensor> = loaded.vs.variables().into_iter().collect();
    let mut opt = AdamW::new(vars);
    let (mut step, mut cursor) = (0u64, Cursor::default());
    if let Some(dir) = &resumed {
        let state = checkpoint::load_state(dir, &mut opt)?;
        step = state.step;
        cursor = state.cursor;
        log::info!(
            "resuming {} at step {step} (epoch {}, batch {})",
            dir.display(),
            cursor.epoch,
            cursor.batches
        );
    }

    // Total optimizer steps: max_steps, or epochs over the data.
    let ga = if cfg.stage == Stage::Condenser {
        cfg.optim.grad_accum
    } else {
        1
    };
    let total = if cfg.optim.max_steps > 0 {
        cfg.optim.max_steps as u64
    } else {
        let (dir, m) = manifest.as_ref().context(
            "--data - (a stream) needs optim.max_steps: the length of the data is unknown",
        )?;
        let examples = epoch_examples(dir, m, &cfg)?;
        let per_epoch = examples / cfg.data.batch_size as u64 / ga as u64;
        anyhow::ensure!(
            per_epoch > 0,
            "{} examples are less than one batch of {}",
            examples,
            cfg.data.batch_size
        );
        per_epoch * cfg.optim.epochs as u64
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    checkpoint::remove_stale_temporaries(&args.out)?;
    std::fs::write(args.out.join("train_config.toml"), cfg.to_toml())?;
    let loader = loader::start(
        source,
        LoaderSpec {
            stage: cfg.stage,
            data: cfg.data.clone(),
            seed: cfg.run.seed,
            vocab,
            examples_per_batch: cfg.data.batch_size,
            start: cursor,
        },
    );
    let mut metrics = MetricsFile::open(
        &args.out.join("metrics.jsonl"),
        resumed.as_ref().map(|_| step),
    )?;
    install_signal_handlers();
    crate::device::set_cudnn_attention(cfg.run.cudnn_attention);
    let kind = cfg.run.precision.kind(device);
    let ctx = Ctx::train(kind).with_residual(cfg.run.residual.kind(kind));
    let save = |dir: &Path, opt: &AdamW, step: u64, cursor: Cursor| -> Result<()> {
        let state = TrainerState {
            step,
            total_steps: total,
            cursor,
            config: cfg.clone(),
            tool: format!("condenser {}", env!("CARGO_PKG_VERSION")),
        };
        checkpoint::save(dir, &loaded.vs, model, &tok_path, opt, &state)
            .with_context(|| format!("writing checkpoint {}", dir.display()))
    };

    let progress = indicatif::ProgressBar::new(total);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:25} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    progress.set_position(step);
    let started = Instant::now();
    let (mut interval_start, mut wait, mut seqs, mut tokens, mut flops) =
        (Instant::now(), Duration::ZERO, 0u64, 0u64, 0f64);
    let mut stopped_early = false;
    // Steps since the optimizer's health was last read, with the data position after each.
    let mut unchecked: Vec<(u64, Cursor)> = vec![(step, cursor)];
    log::info!(
        "{:?} stage: {} steps of {} {} on {} (matrix work in {}), from {}",
        cfg.stage,
        total,
        cfg.data.batch_size * ga,
        if cfg.stage == Stage::Cocondenser {
            "documents (2 spans each)"
        } else {
            "spans"
        },
        crate::device::device_label(device),
        if ctx.kind == tch::Kind::BFloat16 {
            "bf16"
        } else {
            "fp32"
        },
        init.display()
    );

    while step < total {
        if STOP.load(Ordering::SeqCst) || args.stop_after.is_some_and(|s| step >= s) {
            stopped_early = true;
            break;
        }
        let lr = lr_at(step as usize, total as usize, &cfg.optim);
        // Micro-steps (Condenser, with accumulation) or one gradient-cache step (coCondenser).
        let mut losses: Option<Losses> = None;
        let (mut ran_out, mut interrupted) = (false, false);
        let step_start = cursor;
        for k in 0..ga {
            let (batch, after) = match next_batch(&loader, &mut wait)? {
                Next::Batch(batch, after) => (batch, after),
                Next::End => {
                    ran_out = true;
                    break;
                }
                Next::Stopped => {
                    interrupted = true;
                    break;
                }
            };
            cursor = after;
            seqs += batch.rows as u64;
            tokens += batch.real_tokens as u64;
            flops += batch_flops(model, &batch, cfg.stage == Stage::Cocondenser);
            let b = DeviceBatch::new(&batch, device);
            let l = match cfg.stage {
                Stage::Condenser => {
                    seed_dropout(cfg.run.seed, step, k as u64);
                    condenser_micro(model, &b, &cfg.loss, ctx, 1.0 / ga as f64)
                }
                Stage::Cocondenser => {
                    cocondenser_step(model, &b, &cfg.loss, ctx, cfg.run.seed, step)
                }
            };
            losses = Some(match losses {
                None => l,
                Some(acc) => Losses {
                    total: acc.total + l.total,
                    head: acc.head + l.head,
                    late: acc.late + l.late,
                    co: acc.co,
                },
            });
        }
        if interrupted {
            // Stopped inside the step: its micro-batches are given back (cursor and gradients), so the
            // checkpoint is the state after `step` steps and a resume redoes this one whole.
            cursor = step_start;
            opt.zero_grad();
            stopped_early = true;
            break;
        }
        if ran_out {
            log::warn!("the data ended after {step} of {total} steps");
            break;
        }
        let mut l = losses.expect("at least one micro-batch");
        if ga > 1 {
            l = Losses {
                total: l.total / ga as f64,
                head: l.head / ga as f64,
                late: l.late / ga as f64,
                co: l.co,
            };
        }
        // No host sync here: a non-finite loss or gradient is caught on the device, and that update and
        // all later ones are skipped until the next log or save reads the flag (`stop_if_diverged`).
        let grad_norm = opt.clip_grad_norm(cfg.optim.max_grad_norm, &l.total);
        opt.step(lr, &cfg.optim); // consumes the gradients: they are 0 for the next step
        step += 1;
        unchecked.push((step, cursor));
        progress.set_position(step);

        let log_now = step % cfg.run.log_every.max(1) as u64 == 0 || step == total;
        let save_now =
            cfg.run.save_every > 0 && step % cfg.run.save_every as u64 == 0 && step < total;
        if log_now || save_now {
            stop_if_diverged(&mut opt, &mut unchecked, &save, &args.out)?;
        }
        if log_now {
            let secs = interval_start.elapsed().as_secs_f64().max(1e-9);
            let rec = Record {
                step,
                epoch: cursor.epoch,
                loss: l.total.double_value(&[]),
                head_loss: l.head.double_value(&[]),
                late_loss: l.late.double_value(&[]),
                co_loss: l.co.as_ref().map(|c| c.double_value(&[])),
                grad_norm: grad_norm.double_value(&[]),
                lr,
                sequences_per_s: seqs as f64 / secs,
                tokens_per_s: tokens as f64 / secs,
                data_wait_fraction: wait.as_secs_f64() / secs,
                mfu: (device != Device::Cpu).then(|| flops / secs / PEAK_FLOPS),
                skipped_docs: (cfg.stage == Stage::Cocondenser)
                    .then(|| loader.skipped_docs.load(Ordering::Relaxed)),
                device_mem_gib: (device != Device::Cpu)
                    .then(crate::device::cuda_memory_used)
                    .flatten()
                    .map(|b| b as f64 / GIB),
                elapsed_s: started.elapsed().as_secs_f64(),
            };
            metrics.write(&rec)?;
            let co = rec
                .co_loss
                .map(|c| format!(", co {c:.3}"))
                .unwrap_or_default();
            let mem = rec
                .device_mem_gib
                .map(|g| format!(" mem {g:.1} GiB"))
                .unwrap_or_default();
            let msg = format!(
                "loss {:.3} (head {:.3}, late {:.3}{co}) lr {:.2e} {:.1} seq/s {:.0} tok/s wait {:.0}%{mem}",
                rec.loss,
                rec.head_loss,
                rec.late_loss,
                rec.lr,
                rec.sequences_per_s,
                rec.tokens_per_s,
                100.0 * rec.data_wait_fraction
            );
            // No terminal for the bar (a pipe, CI): the same line as a log message.
            if progress.is_hidden() {
                log::info!("step {step}/{total}: {msg}");
            }
            progress.set_message(msg);
            (interval_start, wait, seqs, tokens, flops) =
                (Instant::now(), Duration::ZERO, 0, 0, 0.0);
        }
        if save_now {
            save(&checkpoint::step_dir(&args.out, step), &opt, step, cursor)?;
            checkpoint::prune(&args.out, cfg.run.keep_checkpoints)?;
        }
    }
    progress.finish_and_clear();
    drop(loader);
    stop_if_diverged(&mut opt, &mut unchecked, &save, &args.out)?;
    let dir = if stopped_early || step < total {
        checkpoint::step_dir(&args.out, step)
    } else {
        args.out.join("final")
    };
    save(&dir, &opt, step, cursor)?;
    if stopped_early {
        log::info!(
            "stopped at step {step} of {total}; resume with --resume {}",
            dir.display()
        );
    } else {
        log::info!(
            "trained {step} steps in {:.1} s; model in {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", dir.display())?;
    out.flush()?;
    Ok(())
}
