//! `condenser bench train`: training throughput at fixed shapes, beside the PyTorch reference
//! (bench/reference/bench_train.py): same model shape, same synthetic inputs, same FLOP model, so the
//! two print comparable lines. Also the loader on real shards, padded to each batch's longest span.
//!
//! FLOPs per step: `train::metrics::batch_flops`, the reference's model with MLM logits only at
//! labelled positions (as we compute them); the trainer's MFU uses the same function.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use tch::{nn::VarStore, Device};

use crate::device::DeviceChoice;
use crate::model::{BertConfig, Condenser, Ctx, HeadConfig, Precision};
use crate::train::collate::Batch;
use crate::train::config::{LossConfig, TrainConfig};
use crate::train::objective::cocondenser::CocondenserObjective;
use crate::train::objective::condenser::CondenserObjective;
use crate::train::objective::{DeviceBatch, Losses, Objective};
use crate::train::optim::{AdamW, Kernel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Case {
    Condenser,
    Cocondenser,
}

#[derive(Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// Which objective to time.
    #[arg(long, value_enum, default_value_t = Case::Condenser)]
    pub case: Case,
    /// Sequence length.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Rows per step (coCondenser: spans, 2 per document).
    #[arg(long = "batch-size", alias = "batch", default_value_t = 128)]
    pub batch: usize,
    /// coCondenser gradient-cache chunk (spans); 0 = no cache.
    #[arg(long, default_value_t = 0)]
    pub gc_chunk: usize,
    /// Timed steps, after --warmup untimed ones.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps before the timed ones (allocator, kernel selection, caches).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// A CPU-sized model (4 layers, H 128, 2 heads, FFN 512).
    #[arg(long)]
    pub tiny: bool,
    /// Real shards through the loader instead of synthetic full-length batches.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// With --data: time the loader alone (read, shuffle, pair, mask, collate), no model: the batch
    /// rate it can feed, to hold against the device's step rate.
    #[arg(long, requires = "data")]
    pub loader_only: bool,
    /// With --data: `data.group_by_length` (batches of similar length; 0 = off).
    #[arg(long, default_value_t = 0, requires = "data")]
    pub group_by_length: usize,
    /// Time forward, backward and optimizer separately (adds a device sync between them).
    #[arg(long)]
    pub breakdown: bool,
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
    /// The AdamW update: libtorch's fused kernel, or the in-place tch kernels.
    #[arg(long, value_enum, default_value_t = Kernel::Fused)]
    pub adamw: Kernel,
    /// Record the timed steps with libtorch's profiler and write a Chrome trace here (device kernels on
    /// CUDA); `pipelines/trace_summary.py FILE` sums time per kernel. Adds profiler overhead: the
    /// throughput line of a profiled run is not a measurement.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Let libtorch run attention through cuDNN (on) or only flash / memory-efficient attention (off);
    /// `run.cudnn_attention` in training configs.
    #[arg(
        long,
        default_value = "on",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub cudnn_attention: bool,
    /// Pack each batch's real tokens into one row, no padding (`run.unpad`); --breakdown keeps the
    /// padded forward.
    #[arg(long)]
    pub unpad: bool,
    /// With --data: pad each batch to a multiple of this length (`data.pad_to_multiple_of`; 1 = the
    /// longest row), so length-grouped batches come in fewer shapes.
    #[arg(
        long,
        default_value_t = 1,
        requires = "data",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    pub pad_multiple: usize,
    /// The residual stream with bf16 matrix work: fp32 (the reference's autocast) or bf16.
    #[arg(long, value_enum, default_value_t = crate::model::Residual::Fp32)]
    pub residual: crate::model::Residual,
    /// Matrix work in bf16 or fp32 (auto: bf16 on CUDA, fp32 on the CPU).
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// Under torchrun or srun (world size > 1): the gradient all-reduce's element type. bf16 halves
    /// the bytes; the run reports how far its sum is from the fp32 one (`condenser train` always
    /// sends fp32).
    #[arg(long, value_enum, default_value_t = CommDtype::Fp32)]
    pub comm_dtype: CommDtype,
}

/// `--comm-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CommDtype {
    Fp32,
    Bf16,
}

/// Data parallelism in the benchmark: the group, and the time and bytes of its all-reduces.
struct Comm {
    dist: crate::dist::Dist,
    dtype: CommDtype,
    time: Duration,
    bytes: u64,
    /// ||bf16 sum - fp32 sum|| / ||fp32 sum|| of the first timed step (bf16 only).
    rel_error: Option<f64>,
}

impl Comm {
    /// Joins the launcher's group, if there is one (the benchmark's model is the same on every rank:
    /// seed 0).
    fn join(device: Device) -> Result<Option<Comm>> {
        let Some(l) = crate::dist::Launch::from_env()? else {
            return Ok(None);
        };
        crate::logging::set_rank(l.rank);
        let backend = match device {
            Device::Cpu => crate::dist::BackendKind::Gloo,
            _ => crate::dist::BackendKind::Nccl,
        };
        let dist = crate::dist::Dist::join(&l, backend, Duration::from_secs(300))?;
        Ok(Some(Comm {
            dist,
            dtype: CommDtype::Fp32,
            time: Duration::ZERO,
            bytes: 0,
            rel_error: None,
        }))
    }

    /// Sums `grad` over the ranks (and scales it to the mean), timed between device syncs.
    fn all_reduce(&mut self, grad: &tch::Tensor, device: Device, timed: bool) -> Result<()> {
        sync(device);
        let t = Instant::now();
        let world = self.dist.world_size as f64;
        match self.dtype {
            CommDtype::Fp32 => {
                self.dist.all_reduce_sum(grad)?;
                sync(device);
                if timed {
                    self.bytes += 4 * grad.numel() as u64;
                }
            }
            CommDtype::Bf16 => {
                let exact = (timed && self.rel_error.is_none()).then(|| grad.copy());
                let half = grad.to_kind(tch::Kind::BFloat16);
                self.dist.all_reduce_sum(&half)?;
                tch::no_grad(|| grad.shallow_clone().copy_(&half));
                sync(device);
                if timed {
                    self.bytes += 2 * grad.numel() as u64;
                }
                if let Some(exact) = exact {
                    let elapsed = t.elapsed();
                    self.dist.all_reduce_sum(&exact)?;
                    let err = (&exact - grad).norm().double_value(&[])
                        / exact.norm().double_value(&[]).max(f64::MIN_POSITIVE);
                    self.rel_error = Some(err);
                    if timed {
                        self.time += elapsed;
                    }
                    let _ = grad.shallow_clone().g_div_scalar_(world);
                    return Ok(());
                }
            }
        }
        if timed {
            self.time += t.elapsed();
        }
        let _ = grad.shallow_clone().g_div_scalar_(world);
        Ok(())
    }
}

/// The benchmark's model, as the reference builds it: random init from seed 0 on `device`, the
/// Condenser head of 2 layers reading half the layers.
pub(super) fn bench_model(device: Device, tiny: bool) -> Result<(VarStore, Condenser)> {
    let cfg = config(tiny);
    let head = HeadConfig {
        skip_from: (cfg.num_hidden_layers / 2) as usize,
        n_head_layers: 2,
        late_mlm: true,
    };
    tch::manual_seed(0);
    let vs = VarStore::new(device);
    let model = Condenser::new(&vs.root(), cfg, head)?;
    Ok((vs, model))
}

pub(super) fn config(tiny: bool) -> BertConfig {
    let (h, layers, heads, ffn) = if tiny {
        (128, 4, 2, 512)
    } else {
        (768, 12, 12, 3072)
    };
    serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": h, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": ffn, "max_position_embeddings": 512
    }))
    .expect("a valid config")
}

/// A synthetic batch as the reference builds it: random ids, [CLS] .. [SEP], no padding, 15% of
/// positions 1..L-2 labelled (80% [MASK], 10% random, 10% kept).
pub(super) fn synthetic(rows: usize, len: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Batch {
    let mut b = Batch {
        rows,
        len,
        input_ids: vec![0; rows * len],
        attention_mask: vec![1; rows * len],
        labels: vec![-100; rows * len],
        real_tokens: rows * len,
    };
    for r in 0..rows {
        for t in 0..len {
            let at = r * len + t;
            b.input_ids[at] = match t {
                0 => 101,
                _ if t == len - 1 => 102,
                _ => rng.random_range(1000..30000),
            };
            if t >= 1 && t + 1 < len && rng.random::<f64>() < 0.15 {
                b.labels[at] = b.input_ids[at];
                let roll: f64 = rng.random();
                if roll < 0.8 {
                    b.input_ids[at] = 103;
                } else if roll < 0.9 {
                    b.input_ids[at] = rng.random_range(0..30522);
                }
            }
        }
    }
    b
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The training loader over a prepared folder: `per` examples a batch (spans, or documents for the
/// coCondenser case), padded to each batch's longest span, seed 0.
pub(super) fn shard_loader(
    dir: &std::path::Path,
    case: Case,
    seq: usize,
    per: usize,
    group_by_length: usize,
    pad_multiple: usize,
) -> Result<crate::train::loader::Loader> {
    use crate::train::config::Stage;
    let m = crate::shards::Manifest::load(dir)?
        .ok_or_else(|| anyhow::anyhow!("{}: no _manifest.json", dir.display()))?;
    let tok = crate::tokenizer::load(&m.tokenizer.locate(dir)?)?;
    let mut data = TrainConfig::default().data;
    data.max_len = seq;
    data.shuffle_buffer = 10_000;
    data.group_by_length = group_by_length;
    data.pad_to_multiple_of = pad_multiple;
    let stage = match case {
        Case::Cocondenser => Stage::Cocondenser,
        Case::Condenser => Stage::Condenser,
    };
    // Fewer examples than a batch: an error now, not a loader that never yields one.
    crate::train::loader::ensure_one_batch(dir, &m, stage, per)?;
    let vocab = crate::train::collate::Vocab::from_tokenizer(&tok)?;
    let model_vocab = config(false).vocab_size;
    anyhow::ensure!(
        vocab.size as i64 <= model_vocab,
        "{}: a tokenizer of {} ids; the bench model's vocabulary has {model_vocab}",
        dir.display(),
        vocab.size
    );
    let files = m.shards.iter().map(|s| dir.join(&s.file)).collect();
    Ok(crate::train::loader::start(
        crate::train::loader::ShardSource::Files(files),
        crate::train::loader::LoaderSpec {
            stage,
            data,
            seed: 0,
            vocab: std::sync::Arc::new(vocab),
            examples_per_batch: per,
            slice: crate::train::loader::RankSlice::all(1),
            start: Default::default(),
        },
    ))
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    let device = crate::device::select(args.device)?;
    crate::device::set_cudnn_attention(args.cudnn_attention);
    // Real shards: batches from the loader, padded to their longest span.
    let loader = match &args.data {
        Some(dir) => {
            let per = if args.case == Case::Cocondenser {
                args.batch / 2
            } else {
                args.batch
            };
            Some(shard_loader(
                dir,
                args.case,
                args.seq,
                per,
                args.group_by_length,
                args.pad_multiple,
            )?)
        }
        None => None,
    };

    if let (true, Some(l)) = (args.loader_only, &loader) {
        return time_loader(l, &args);
    }

    let mut comm = Comm::join(device)?.map(|c| Comm {
        dtype: args.comm_dtype,
        ..c
    });
    let (vs, model) = bench_model(device, args.tiny)?;
    let mut opt = AdamW::new(vs.variables().into_iter().collect());
    opt.kernel = args.adamw;
    let optim = TrainConfig::default().optim;
    let loss = LossConfig {
        cache_chunk_size: args.gc_chunk,
        ..TrainConfig::default().loss
    };
    let kind = args.precision.kind(device);
    let ctx = Ctx::train(kind).with_residual(args.residual.kind(kind));
    // The step training runs (`Objective::step`): seed 0, one batch a step, no process group (ranks
    // of a distributed bench time their own steps and the gradient all-reduce).
    let single = crate::dist::Dist::single();
    let m = &model;
    let mut objective_step: Box<dyn FnMut(&Batch, u64) -> Result<Losses> + '_> = match args.case {
        Case::Condenser => {
            let mut o = CondenserObjective {
                loss: loss.clone(),
                ctx,
                seed: 0,
                grad_accum: 1,
                device,
                unpad: args.unpad,
            };
            Box::new(move |b, step| o.step(m, std::slice::from_ref(b), step, &single))
        }
        Case::Cocondenser => {
            let mut o = CocondenserObjective {
                loss: loss.clone(),
                ctx,
                seed: 0,
                device,
                unpad: args.unpad,
            };
            Box::new(move |b, step| o.step(m, std::slice::from_ref(b), step, &single))
        }
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let batches: Vec<Batch> = (0..4)
        .map(|_| synthetic(args.batch, args.seq, &mut rng))
        .collect();

    let (mut t_data, mut t_fwd, mut t_bwd, mut t_opt) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let (mut tokens, mut real, mut flops) = (0usize, 0usize, 0f64);
    // Timed like the reference: between device syncs around all timed steps, so the host may run
    // ahead of the device (the per-phase syncs of --breakdown stop that).
    let mut timing = Instant::now();
    // Host time to issue a step (before waiting for the device): well under the step time when nothing
    // inside the step synchronises with the device.
    let mut t_host = Duration::ZERO;
    for step in 0..args.warmup + args.steps {
        if step == args.warmup {
            sync(device);
            if args.profile.is_some() {
                super::profile::start(device.is_cuda())?;
            }
            timing = Instant::now();
            (t_data, t_fwd, t_bwd, t_opt, tokens, real, flops) = (
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                0,
                0,
                0.0,
            );
        }
        let start = Instant::now();
        let t0 = Instant::now();
        let host = match &loader {
            Some(l) => next_batch(l)?,
            None => batches[step % batches.len()].clone(),
        };
        t_data += t0.elapsed();
        let t1 = Instant::now();
        let loss_for_check = match args.case {
            // The one path beside `Objective::step`: forward and backward timed apart need a device
            // sync between them, which a training step does not have.
            Case::Condenser if args.breakdown => {
                let b = DeviceBatch::new(&host, device);
                let out = model.forward(&b.input_ids, &b.mask(), &b.labels(), ctx);
                let l = &out.head_loss + &out.late_loss;
                sync(device);
                t_fwd += t1.elapsed();
                let t2 = Instant::now();
                l.backward();
                sync(device);
                t_bwd += t2.elapsed();
                l.detach()
            }
            _ => {
                let l = objective_step(&host, step as u64)?;
                if args.breakdown {
                    sync(device);
                }
                t_fwd += t1.elapsed();
                l.total
            }
        };
        if let Some(c) = comm.as_mut() {
            c.all_reduce(opt.grad_buffer(), device, step >= args.warmup)?;
        }
        let t3 = Instant::now();
        let _ = opt.clip_grad_norm(optim.max_grad_norm, &loss_for_check);
        opt.step(optim.lr, &optim);
        if args.breakdown {
            sync(device);
        }
        t_opt += t3.elapsed();
        if step >= args.warmup {
            t_host += start.elapsed();
            tokens += host.rows * host.len;
            real += host.real_tokens;
            flops +=
                crate::train::metrics::batch_flops(&model, &host, args.case == Case::Cocondenser);
        }
    }
    sync(device);
    let secs = timing.elapsed().as_secs_f64();
    if let Some(path) = &args.profile {
        super::profile::stop(path)?;
        eprintln!("profile of {} steps: {}", args.steps, path.display());
    }
    // Read once, outside the timed steps: the caching allocator keeps what it reserved, so the memory
    // in use at the end is the peak (plus the CUDA context).
    let peak_mem = if device == Device::Cpu {
        None
    } else {
        crate::device::cuda_memory_used()
    };
    if comm.as_ref().is_some_and(|c| !c.dist.is_main()) {
        return Ok(()); // rank 0 reports
    }
    let world = comm.as_ref().map_or(1, |c| c.dist.world_size);
    let rows = (world * args.batch * args.steps) as f64;
    let tflops = world as f64 * flops / secs / 1e12;
    let name = match (args.case, args.gc_chunk, &args.data) {
        (_, _, Some(_)) => format!("{:?}-shards", args.case).to_lowercase(),
        (Case::Cocondenser, c, None) if c > 0 => format!("cocondenser-gc{c}"),
        (c, _, None) => format!("{c:?}").to_lowercase(),
    };
    let name = if args.unpad {
        format!("{name}-unpad")
    } else {
        name
    };
    let name = match world {
        1 => name,
        w => format!("{name}-x{w}"),
    };
    let mem = peak_mem
        .map(|b| format!(" peak_mem_gib={:.1}", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    println!(
        "ours {name} seq/s={:.1} tok/s={:.0} real_tok/s={:.0} tflops={:.2} mfu790={:.2}% step_ms={:.1} rows={} len={}{mem} adamw={}",
        rows / secs,
        tokens as f64 / secs,
        real as f64 / secs,
        tflops,
        tflops / 790.0 * 100.0,
        1e3 * secs / args.steps as f64,
        args.batch,
        args.seq,
        // The kernel that ran: the fused one falls back to the in-place kernels if libtorch refuses it.
        clap::ValueEnum::to_possible_value(&opt.kernel).map_or_else(String::new, |v| v.get_name().to_string())
    );
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    let step_ms = 1e3 * secs / args.steps as f64;
    let label = crate::device::device_label(device);
    if let Some(c) = &comm {
        // Ring all-reduce moves 2 (W-1)/W of the buffer through each rank ("bus bandwidth", as
        // nccl-tests reports it).
        let per_step = c.bytes as f64 / args.steps as f64;
        let t = c.time.as_secs_f64() / args.steps as f64;
        let w = world as f64;
        eprintln!(
            "{world} ranks ({label}): compute {:.1} ms, gradient all-reduce {:.1} ms ({:.1}% of the step) of {:.1} MB {:?}: {:.2} GB/s algorithm, {:.2} GB/s bus{}",
            step_ms - 1e3 * t,
            1e3 * t,
            pct(c.time),
            per_step / 1e6,
            c.dtype,
            per_step / t.max(1e-12) / 1e9,
            per_step * 2.0 * (w - 1.0) / w / t.max(1e-12) / 1e9,
            c.rel_error
                .map(|e| format!("; bf16 sum vs fp32 sum: relative error {e:.2e}"))
                .unwrap_or_default()
        );
    }
    if args.breakdown {
        // Each phase ends with a device sync, so its share is device time.
        let work = match args.case {
            Case::Condenser => format!("forward {:.1}%, backward {:.1}%", pct(t_fwd), pct(t_bwd)),
            Case::Cocondenser => format!("forward+backward (both passes) {:.1}%", pct(t_fwd)),
        };
        eprintln!(
            "breakdown ({label}, synced between phases): data {:.1}%, {work}, optimizer {:.1}% of {step_ms:.1} ms/step",
            pct(t_data),
            pct(t_opt),
        );
    } else {
        // Unsynced, the phases' host times say nothing about the device; the host's issue time does.
        eprintln!(
            "{label}: data wait {:.1}% of {step_ms:.1} ms/step; the host issued a step in {:.1} ms (--breakdown splits forward, backward and optimizer)",
            pct(t_data),
            1e3 * t_host.as_secs_f64() / args.steps as f64
        );
    }
    Ok(())
}

/// The next batch from the loader (epoch ends pass by).
pub(super) fn next_batch(l: &crate::train::loader::Loader) -> Result<Batch> {
    loop {
        match l.rx.recv()? {
            crate::train::loader::Msg::Batch { batch, .. } => return Ok(batch),
            crate::train::loader::Msg::Error(e) => return Err(e),
            _ => {}
        }
    }
}

/// Batches per second the loader produces when nothing waits for the device.
fn time_loader(l: &crate::train::loader::Loader, args: &BenchTrainArgs) -> Result<()> {
    let next = || next_batch(l);
    for _ in 0..args.warmup {
        next()?;
    }
    let t = Instant::now();
    let (mut rows, mut real, mut slots) = (0usize, 0usize, 0usize);
    for _ in 0..args.steps {
        let b = next()?;
        rows += b.rows;
        real += b.real_tokens;
        slots += b.rows * b.len;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ours loader seq/s={:.1} batches/s={:.1} real_tok/s={:.0} real_share={:.1}% rows={}",
        rows as f64 / secs,
        args.steps as f64 / secs,
        real as f64 / secs,
        100.0 * real as f64 / slots.max(1) as f64,
        args.batch
    );
    Ok(())
}
