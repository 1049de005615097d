//! The training loop, readable in one sitting in nanoGPT's order: lr -> the step's batches ->
//! forward and backward (the objective's) -> clip -> update -> log -> checkpoint -> stop. Set-up is
//! `setup`'s, the losses are the `Objective`'s; the loop is the same for every objective.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::checkpoint::{self, TrainerState};
use super::config::{Stage, TrainConfig};
use super::group::{self, StopVotes};
use super::loader::{self, Cursor, Loader, LoaderSpec, Msg, RankSlice};
use super::metrics::{LossParts, MetricsFile, Record, PEAK_FLOPS};
use super::objective::cocondenser::CocondenserObjective;
use super::objective::condenser::CondenserObjective;
use super::objective::finetune::FinetuneObjective;
use super::objective::{Objective, Work};
use super::optim::{lr_at, AdamW};
use super::pairs::PairSpec;
use super::setup::{self, Data, DataArg, Setup};
use super::{DistBackend, FinetuneArgs, RunOptions, TrainArgs};
use crate::dist::{Dist, Launch};
use crate::model::Ctx;

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
enum Next<B> {
    /// This rank's batch (None: another rank's), and the position after it.
    Batch(Option<B>, Cursor),
    /// The data ran out (a finished stream).
    End,
    /// SIGINT or SIGTERM came while waiting (a stream that sends nothing yet, a slow disk).
    Stopped,
}

/// Waits for the next batch, counting the wait, and watching for SIGINT / SIGTERM meanwhile when
/// `interruptible` (one process; ranks of a group stop together, after a step: `StopVotes`).
/// `skipped` names what an epoch's skip count counts (span documents, or fine-tuning's lines).
fn next_batch<B>(
    loader: &Loader<B>,
    wait: &mut Duration,
    interruptible: bool,
    skipped: &str,
) -> Result<Next<B>> {
    use crossbeam_channel::RecvTimeoutError;
    let t = Instant::now();
    loop {
        let msg = match loader.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) if !(interruptible && STOP.load(Ordering::SeqCst)) => {
                continue
            }
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
                return Ok(Next::Batch(Some(batch), after));
            }
            Msg::Skipped { after } => return Ok(Next::Batch(None, after)),
            Msg::EpochEnd {
                epoch,
                skipped_docs,
            } => {
                if skipped_docs > 0 {
                    log::info!("epoch {epoch} done; {skipped_docs} {skipped}");
                } else {
                    log::info!("epoch {epoch} done");
                }
            }
            Msg::Error(e) => return Err(e.context("the data loader failed")),
        }
    }
}

/// `condenser train`: the process group (under a launcher), set-up, the stage's objective, the loop.
pub fn run(args: TrainArgs) -> Result<()> {
    Join::new(&args.run, &args.out).run(|device, world| {
        setup::prepare(
            &args.run.run_args(&args.out),
            DataArg::Shards(&args.data),
            TrainConfig::default(),
            device,
            world,
        )
    })
}

/// `condenser finetune`: as `run`, with the fine-tuning objective over Tevatron training data.
pub fn finetune(args: FinetuneArgs) -> Result<()> {
    let mut join = Join::new(&args.run, &args.out);
    join.dev = Some(args.dev.clone());
    join.run(|device, world| {
        setup::prepare(
            &args.run.run_args(&args.out),
            DataArg::Pairs(&args.train),
            TrainConfig::finetune_defaults(),
            device,
            world,
        )
    })
}

/// How a process finds its device and its group, and the run folder rank 0 claims.
struct Join<'a> {
    device: crate::device::DeviceChoice,
    backend: Option<DistBackend>,
    timeout: u64,
    out: &'a Path,
    resume: Option<&'a Path>,
    overwrite: bool,
    /// `finetune`'s evaluation while training.
    dev: Option<super::dev_eval::DevEvalArgs>,
}

impl<'a> Join<'a> {
    fn new(o: &'a RunOptions, out: &'a Path) -> Self {
        Join {
            device: o.device,
            backend: o.dist_backend,
            timeout: o.dist_timeout,
            out,
            resume: o.resume.as_deref(),
            overwrite: o.overwrite,
            dev: None,
        }
    }
}

impl Join<'_> {
    /// Joins the launcher's group (if any), sets the run up with `prepare(device, world size)`, starts
    /// its loader and trains its stage's objective.
    fn run(self, prepare: impl FnOnce(Device, usize) -> Result<Setup>) -> Result<()> {
        let launch = Launch::from_env()?;
        let local_rank = launch.as_ref().map_or(0, |l| l.local_rank);
        let device = crate::device::select(self.device.for_local_rank(local_rank))?;
        let dist = match &launch {
            None => Dist::single(),
            Some(l) => group::join_group(l, device, self.backend, self.timeout)?,
        };
        let mut s = prepare(device, dist.world_size)?;
        // Rank 0 alone owns the folder (the others would see the files it is about to write); it
        // refuses one holding another run before writing anything there.
        if dist.is_main() {
            super::run_folder::claim(self.out, self.resume, self.overwrite)?;
            s.prepare_out()?;
        }
        group::agree_on_start(&s, &dist)?;
        crate::device::set_cudnn_attention(s.cfg.run.cudnn_attention);
        let kind = s.cfg.run.precision.kind(device);
        let ctx = Ctx::train(kind).with_residual(s.cfg.run.residual.kind(kind));
        let slice = RankSlice {
            rank: dist.rank,
            world: dist.world_size,
            per_rank: s.micro_batches(),
        };
        let (loss, seed, unpad) = (s.cfg.loss.clone(), s.cfg.run.seed, s.cfg.run.unpad);
        let mut extras = Extras {
            card: CardData::of(s.data.as_ref()),
            dev: match &self.dev {
                Some(d) => super::dev_eval::DevEval::new(d)?,
                None => None,
            },
        };
        match s.data.take().context("the data source is taken once")? {
            Data::Shards(source) => {
                let loader = loader::start(
                    source,
                    LoaderSpec {
                        stage: s.cfg.stage,
                        data: s.cfg.data.clone(),
                        seed,
                        vocab: s.vocab.clone(),
                        examples_per_batch: s.cfg.data.batch_size,
                        start: s.cursor,
                        slice,
                    },
                );
                match s.cfg.stage {
                    Stage::Condenser => {
                        let grad_accum = s.micro_batches();
                        let objective = CondenserObjective {
                            loss,
                            ctx,
                            seed,
                            grad_accum,
                            device,
                            unpad,
                        };
                        train(s, objective, loader, &dist, &mut extras)
                    }
                    Stage::Cocondenser => train(
                        s,
                        CocondenserObjective {
                            loss,
                            ctx,
                            seed,
                            device,
                            unpad,
                        },
                        loader,
                        &dist,
                        &mut extras,
                    ),
                    Stage::Finetune => bail!("fine-tuning reads no span shards"),
                }
            }
            Data::Pairs(files) => {
                let tokenizer = crate::tokenizer::load(&s.tok_path)?;
                let special = crate::tokenizer::special_ids(&tokenizer)?;
                let loader = super::pairs::start(PairSpec {
                    files,
                    data: s.cfg.data.clone(),
                    seed,
                    tokenizer: std::sync::Arc::new(tokenizer),
                    special,
                    start: s.cursor,
                    slice,
                    cache_dir: super::query_order::cache_dir(&s.out),
                });
                let objective = FinetuneObjective {
                    loss,
                    ctx,
                    seed,
                    device,
                    unpad,
                };
                train(s, objective, loader, &dist, &mut extras)
            }
        }
    }
}

/// Partial sums of the throughput figures between two log lines.
struct Interval {
    start: Instant,
    wait: Duration,
    work: Work,
}

impl Interval {
    fn new() -> Self {
        Interval {
            start: Instant::now(),
            wait: Duration::ZERO,
            work: Work::default(),
        }
    }

    /// The work of every rank summed, and the slowest rank's data wait (seconds).
    fn over_ranks(&self, dist: &Dist, device: Device) -> Result<(Work, f64)> {
        let wait = self.wait.as_secs_f64();
        if !dist.is_distributed() {
            return Ok((self.work, wait));
        }
        let w = &self.work;
        let mine = [w.sequences as f64, w.tokens as f64, w.flops, wait];
        let all = dist.all_gather(&crate::device::upload(Tensor::from_slice(&mine), device))?;
        let all = Vec::<f64>::try_from(all.to_device(Device::Cpu))?;
        let mut sum = Work::default();
        let mut slowest = 0f64;
        for r in all.chunks(mine.len()) {
            sum.sequences += r[0] as u64;
            sum.tokens += r[1] as u64;
            sum.flops += r[2];
            slowest = slowest.max(r[3]);
        }
        Ok((sum, slowest))
    }
}

/// The loop, one optimizer step an iteration: lr -> the objective's forward and backward over the
/// step's batches -> clip -> update -> log -> checkpoint; until the total, the data's end, --stop-after
/// or a signal. Ends with a checkpoint (`final/` when the run is complete) and prints its path.
///
/// With a process group the loop is the same on every rank, in lock step: each rank trains on its slice
/// of the global step's batches, the gradients are summed (one all-reduce of the flat buffer), so the
/// clipping, the non-finite check and the update decide the same everywhere; rank 0 writes checkpoints
/// (between barriers), metrics and stdout. A signal stops every rank after the same step (`StopVotes`).
pub fn train<O: Objective>(
    mut s: Setup,
    mut objective: O,
    loader: Loader<O::Batch>,
    dist: &Dist,
    extras: &mut Extras,
) -> Result<()> {
    let card = &extras.card;
    let mut dev = extras.dev.take();
    // The dev set's tokenizer (the run's), loaded once.
    let dev_tok = match &dev {
        Some(_) => {
            let t = crate::tokenizer::load(&s.tok_path)?;
            let sp = crate::tokenizer::special_ids(&t)?;
            Some((t, sp))
        }
        None => None,
    };
    let (cfg, out, total, inputs) = (s.cfg.clone(), s.out.clone(), s.total, s.inputs.clone());
    let skipped_what = O::SKIPPED.unwrap_or("skipped");
    let model = &s.loaded.model;
    let mut metrics = match dist.is_main() {
        true => Some(MetricsFile::open(
            &out.join("metrics.jsonl"),
            s.resumed.as_ref().map(|_| s.step),
        )?),
        false => None,
    };
    // The same records as TensorBoard event files in OUT (`tensorboard --logdir OUT`).
    let mut events = match dist.is_main() {
        true => Some(super::tensorboard::EventWriter::create(
            &out,
            s.resumed.as_ref().map(|_| s.step),
        )?),
        false => None,
    };
    install_signal_handlers();
    let save = |dir: &Path, opt: &AdamW, step: u64, cursor: Cursor| -> Result<()> {
        let state = TrainerState {
            step,
            total_steps: total,
            cursor,
            config: cfg.clone(),
            tool: format!("condenser {}", env!("CARGO_PKG_VERSION")),
            world_size: dist.world_size,
            inputs: inputs.clone(),
        };
        // Every rank has finished the step before rank 0 writes, and none goes on (or exits) before the
        // checkpoint is complete under its final name.
        dist.barrier().context("before writing a checkpoint")?;
        if dist.is_main() {
            checkpoint::save(dir, &s.loaded.vs, model, &s.tok_path, opt, &state)
                .with_context(|| format!("writing checkpoint {}", dir.display()))?;
        }
        dist.barrier()
            .with_context(|| format!("waiting for rank 0 to write {}", dir.display()))
    };
    let (opt, mut step, mut cursor) = (&mut s.opt, s.step, s.cursor);

    let progress = match dist.is_main() {
        true => indicatif::ProgressBar::new(total),
        false => indicatif::ProgressBar::hidden(),
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:25} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    progress.set_position(step);
    // Log records clear the bar while they are written (no frozen copies between them).
    if !progress.is_hidden() {
        crate::logging::set_bar(Some(progress.clone()));
    }
    let started = Instant::now();
    let mut interval = Interval::new();
    let mut stopped_early = false;
    // Steps since the optimizer's health was last read, with the data position after each.
    let mut unchecked: Vec<(u64, Cursor)> = vec![(step, cursor)];
    let per_step = objective.micro_batches();
    let mut votes = StopVotes::default();
    let world = dist.world_size;
    if dist.is_distributed() {
        log::info!(
            "{world} processes x data.batch_size {} x {} micro-batch(es) = {} {} a step",
            cfg.data.batch_size,
            per_step,
            world * cfg.data.batch_size * per_step,
            O::UNIT
        );
    }
    log::info!(
        "{:?} stage: {} steps of {} {}{} on {} (matrix work in {}), from {}",
        cfg.stage,
        total,
        world * cfg.data.batch_size * per_step,
        O::UNIT,
        O::UNIT_NOTE,
        crate::device::device_label(s.device),
        if cfg.run.precision.kind(s.device) == tch::Kind::BFloat16 {
            "bf16"
        } else {
            "fp32"
        },
        s.init.display()
    );

    while step < total {
        let signalled = match dist.is_distributed() {
            true => votes.agreed()?,
            false => STOP.load(Ordering::SeqCst),
        };
        if signalled || s.stop_after.is_some_and(|n| step >= n) {
            stopped_early = true;
            break;
        }
        let lr = lr_at(step as usize, total as usize, &cfg.optim);
        // The step's batches. Stopped while waiting: they are given back (the cursor stays), so the
        // checkpoint is the state after `step` steps and a resume redoes this one whole.
        // With a process group every rank goes through the global step's batches (the others' pass by
        // uncollated), so all agree on the position and on the end of the data.
        let mut batches = Vec::with_capacity(per_step);
        let mut after = cursor;
        let mut ran_out = false;
        for _ in 0..world * per_step {
            match next_batch(
                &loader,
                &mut interval.wait,
                !dist.is_distributed(),
                skipped_what,
            )? {
                Next::Batch(b, a) => {
                    after = a;
                    batches.extend(b);
                }
                Next::End => {
                    ran_out = true;
                    break;
                }
                Next::Stopped => {
                    stopped_early = true;
                    break;
                }
            }
        }
        if stopped_early {
            break;
        }
        if ran_out {
            log::warn!("the data ended after {step} of {total} steps");
            break;
        }
        for b in &batches {
            let w = objective.work(model, b);
            interval.work.sequences += w.sequences;
            interval.work.tokens += w.tokens;
            interval.work.flops += w.flops;
        }
        let mut l = objective.step(model, &batches, step, dist)?;
        cursor = after;
        if dist.is_distributed() {
            dist.all_reduce_sum(opt.grad_buffer())
                .with_context(|| format!("step {}: summing the gradients", step + 1))?;
            l = votes.reduce(l, dist, step, STOP.load(Ordering::SeqCst))?;
        }
        // No host sync here: a non-finite loss or gradient is caught on the device, and that update and
        // all later ones are skipped until the next log or save reads the flag (`stop_if_diverged`).
        let grad_norm = opt.clip_grad_norm(cfg.optim.max_grad_norm, &l.total);
        opt.step(lr, &cfg.optim); // consumes the gradients: they are 0 for the next step
        step += 1;
        unchecked.push((step, cursor));
        progress.set_position(step);

        let eval_now = dev.as_ref().is_some_and(|d| d.due(step, total));
        let log_now = step % cfg.run.log_every.max(1) as u64 == 0 || step == total || eval_now;
        let save_now =
            cfg.run.save_every > 0 && step % cfg.run.save_every as u64 == 0 && step < total;
        if log_now || save_now {
            stop_if_diverged(opt, &mut unchecked, &save, &out)?;
        }
        if log_now {
            let secs = interval.start.elapsed().as_secs_f64().max(1e-9);
            let (work, wait) = interval.over_ranks(dist, s.device)?;
            let mut rec = Record {
                step,
                epoch: cursor.epoch,
                loss: l.total.double_value(&[]),
                parts: LossParts(
                    l.parts
                        .iter()
                        .map(|p| (p.key.to_string(), p.value.double_value(&[])))
                        .collect(),
                ),
                grad_norm: grad_norm.double_value(&[]),
                lr,
                sequences_per_s: work.sequences as f64 / secs,
                tokens_per_s: work.tokens as f64 / secs,
                data_wait_fraction: wait / secs,
                mfu: (s.device != Device::Cpu)
                    .then(|| work.flops / secs / PEAK_FLOPS / world as f64),
                skipped_docs: O::SKIPPED.map(|_| loader.skipped_docs.load(Ordering::Relaxed)),
                device_mem_gib: (s.device != Device::Cpu)
                    .then(crate::device::cuda_memory_used)
                    .flatten()
                    .map(|b| b as f64 / GIB),
                elapsed_s: started.elapsed().as_secs_f64(),
                eval_mrr_at_10: None,
                eval_ndcg_at_10: None,
                eval_recall_at_100: None,
            };
            // Evaluation on the dev set: rank 0 evaluates (and keeps the best model) while the others
            // wait at the barrier.
            if let (true, Some(d), Some((tok, special))) =
                (eval_now, dev.as_mut(), dev_tok.as_ref())
            {
                if dist.is_main() {
                    let sc = d.run(model, tok, special, &cfg, s.device)?;
                    rec.eval_mrr_at_10 = Some(sc.mrr_at_10);
                    rec.eval_ndcg_at_10 = Some(sc.ndcg_at_10);
                    rec.eval_recall_at_100 = Some(sc.recall_at_100);
                    let best = d.improved(step, &sc);
                    log::info!(
                        "step {step}: dev MRR@10 {:.4} nDCG@10 {:.4} R@100 {:.4}{}",
                        sc.mrr_at_10,
                        sc.ndcg_at_10,
                        sc.recall_at_100,
                        if best {
                            " (best so far: saved as best/)"
                        } else {
                            ""
                        }
                    );
                    if best {
                        let dir = super::dev_eval::best_dir(&out);
                        let mut files = checkpoint::retriever_files(&cfg);
                        files.push(("eval.json", super::dev_eval::best_note(d.metric, step, &sc)));
                        crate::model::hf::save_parts(
                            &dir,
                            &s.loaded.vs,
                            model,
                            &s.tok_path,
                            &files,
                            true,
                        )
                        .with_context(|| format!("writing {}", dir.display()))?;
                    }
                }
                dist.barrier().context("waiting for rank 0's evaluation")?;
            }
            if let Some(m) = metrics.as_mut() {
                m.write(&rec)?;
            }
            if let Some(e) = events.as_mut() {
                e.write(&rec)?;
            }
            let msg = progress_message(&rec);
            // No terminal for the bar (a pipe, CI): the same line as a log message.
            if progress.is_hidden() {
                log::info!("step {step}/{total}: {msg}");
            }
            progress.set_message(msg);
            interval = Interval::new();
        }
        if save_now {
            save(&checkpoint::step_dir(&out, step), opt, step, cursor)?;
            if dist.is_main() {
                checkpoint::prune(&out, cfg.run.keep_checkpoints)?;
            }
        }
    }
    progress.finish_and_clear();
    crate::logging::set_bar(None);
    drop(loader);
    stop_if_diverged(opt, &mut unchecked, &save, &out)?;
    let dir = if stopped_early || step < total {
        checkpoint::step_dir(&out, step)
    } else {
        out.join("final")
    };
    save(&dir, opt, step, cursor)?;
    if dist.is_main() && !(stopped_early || step < total) {
        let name = out
            .file_name()
            .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
        let path = super::card::write(
            &dir,
            &super::card::Card {
                name: &name,
                cfg: &cfg,
                command: std::env::args().collect(),
                init: &s.init,
                data: &card.lines(&cfg),
                steps: step,
                total_steps: total,
                world_size: dist.world_size,
                evaluation: dev.as_ref().and_then(|d| d.summary()),
            },
        )?;
        log::info!("model card: {}", path.display());
    }
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
    if dist.is_main() {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", dir.display())?;
        stdout.flush()?;
    }
    Ok(())
}

/// What a run carries besides its set-up: where its data came from (for the model card) and its
/// evaluation while training.
pub struct Extras {
    pub card: CardData,
    pub dev: Option<super::dev_eval::DevEval>,
}

/// Where the run's data came from, for the model card.
pub enum CardData {
    /// A prepared folder (its manifest counts the documents), or None for shard paths on stdin.
    Shards(Option<std::path::PathBuf>),
    /// Tevatron training files.
    Pairs(Vec<std::path::PathBuf>),
}

impl CardData {
    fn of(data: Option<&Data>) -> Self {
        match data {
            Some(Data::Pairs(files)) => CardData::Pairs(files.clone()),
            Some(Data::Shards(loader::ShardSource::Files(paths))) => CardData::Shards(
                paths
                    .first()
                    .and_then(|p| p.parent())
                    .map(Path::to_path_buf),
            ),
            _ => CardData::Shards(None),
        }
    }

    /// One line per source, with its count (training files are read once more to count their queries).
    fn lines(&self, cfg: &TrainConfig) -> Vec<String> {
        let name = |p: &Path| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        match self {
            CardData::Pairs(files) => files
                .iter()
                .map(|f| {
                    match super::pairs::count_queries(
                        std::slice::from_ref(f),
                        cfg.data.train_n_passages,
                    ) {
                        Ok((n, skips)) => format!(
                            "`{}`: {n} training queries (Tevatron lines; {})",
                            name(f),
                            skips.summary()
                        ),
                        Err(e) => format!("`{}` (not counted: {e:#})", name(f)),
                    }
                })
                .collect(),
            CardData::Shards(Some(dir)) => {
                vec![match crate::shards::manifest::Manifest::load(dir) {
                    Ok(Some(m)) => format!(
                        "`{}`: {} documents, {} spans, {} tokens (prepared shards)",
                        name(dir),
                        m.totals.documents,
                        m.totals.spans,
                        m.totals.tokens
                    ),
                    _ => format!("`{}` (prepared shards)", name(dir)),
                }]
            }
            CardData::Shards(None) => {
                vec!["shard paths read from stdin (a running `prepare`)".to_string()]
            }
        }
    }
}

/// The progress bar's (or log line's) summary of a metrics record.
fn progress_message(rec: &Record) -> String {
    let parts: Vec<String> = rec
        .parts
        .0
        .iter()
        .map(|(key, v)| format!("{} {v:.3}", key.strip_suffix("_loss").unwrap_or(key)))
        .collect();
    let parts = match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join(", ")),
    };
    let mem = rec
        .device_mem_gib
        .map(|g| format!(" mem {g:.1} GiB"))
        .unwrap_or_default();
    format!(
        "loss {:.3}{parts} lr {:.2e} {:.1} seq/s {:.0} tok/s wait {:.0}%{mem}",
        rec.loss,
        rec.lr,
        rec.sequences_per_s,
        rec.tokens_per_s,
        100.0 * rec.data_wait_fraction
    )
}
