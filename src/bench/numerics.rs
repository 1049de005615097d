//! `condenser bench numerics`: the numerical checks a new device needs (GPU issue, point 4), printed as
//! `check ...` lines on stdout.
//!
//! - `precision`: N Condenser steps from one init on the same batches, dropout off (so precision is the
//!   only difference), in fp32 twice (the run-to-run floor: CUDA's atomics need not be deterministic),
//!   in bf16 with the fp32 residual stream (the default) and with the bf16 one; the loss curves and the
//!   final weights compared.
//! - `gradient-cache`: one coCondenser step with dropout on, gradient cache against the same objective in
//!   one graph under the same dropout seeds (`objective::cocondenser::cocondenser_one_graph`); and the same one-graph
//!   objective under other seeds, to show that dropout moves the gradients far more than the cache does.
//! - `unpad`: one Condenser step padded and packed (`run.unpad`) from one init, dropout off, in fp32
//!   and bf16 (on CUDA in bf16 the packed attention is the varlen flash kernel).

use std::collections::BTreeMap;

use anyhow::Result;
use rand::SeedableRng;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::train::{bench_model, next_batch, shard_loader, synthetic, Case};
use crate::device::DeviceChoice;
use crate::model::{Condenser, Ctx, Residual};
use crate::train::collate::Batch;
use crate::train::config::{LossConfig, TrainConfig};
use crate::train::objective::cocondenser::{cocondenser_one_graph, CocondenserObjective};
use crate::train::objective::condenser::CondenserObjective;
use crate::train::objective::{DeviceBatch, Objective};
use crate::train::optim::AdamW;

#[derive(Debug, clap::Args)]
pub struct BenchNumericsArgs {
    /// Optimizer steps of the precision check.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Rows per step (the gradient-cache check takes twice as many spans).
    #[arg(long = "batch-size", alias = "batch", default_value_t = 32)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Gradient-cache chunk (spans) of the gradient-cache check.
    #[arg(long, default_value_t = 16)]
    pub gc_chunk: usize,
    /// A CPU-sized model (4 layers, H 128), as `bench train --tiny`.
    #[arg(long)]
    pub tiny: bool,
    /// Batches from real shards (masked by the loader) instead of random ids, so the loss really falls.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
}

/// The bench model (seed 0 on this device), or a twin with `from`'s weights.
fn model(device: Device, tiny: bool, from: Option<&VarStore>) -> Result<(VarStore, Condenser)> {
    let (mut vs, m) = bench_model(device, tiny)?;
    if let Some(src) = from {
        vs.copy(src)?;
    }
    Ok((vs, m))
}

fn batches(args: &BenchNumericsArgs, rows: usize, n: usize, case: Case) -> Result<Vec<Batch>> {
    match &args.data {
        Some(dir) => {
            let per = if case == Case::Cocondenser {
                rows / 2
            } else {
                rows
            };
            let l = shard_loader(dir, case, args.seq, per, 0, 1)?;
            (0..n).map(|_| next_batch(&l)).collect()
        }
        None => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            Ok((0..n)
                .map(|_| synthetic(rows, args.seq, &mut rng))
                .collect())
        }
    }
}

/// Losses of `steps` Condenser steps (dropout off) and the final weights.
fn train_curve(
    args: &BenchNumericsArgs,
    device: Device,
    init: &VarStore,
    kind: Kind,
    residual: Residual,
    data: &[Batch],
) -> Result<(Vec<f64>, BTreeMap<String, Tensor>)> {
    let (vs, m) = model(device, args.tiny, Some(init))?;
    let mut opt = AdamW::new(vs.variables().into_iter().collect());
    let optim = TrainConfig::default().optim;
    let w = TrainConfig::default().loss;
    // Dropout off: precision is the only difference between the curves.
    let mut objective = CondenserObjective {
        loss: w,
        ctx: Ctx::eval(kind).with_residual(residual.kind(kind)),
        seed: 0,
        grad_accum: 1,
        device,
        unpad: false,
    };
    let single = crate::dist::Dist::single();
    let mut losses = Vec::with_capacity(data.len());
    for (step, b) in data.iter().enumerate() {
        let l = objective.step(&m, std::slice::from_ref(b), step as u64, &single)?;
        let _ = opt.clip_grad_norm(optim.max_grad_norm, &l.total);
        opt.step(optim.lr, &optim);
        losses.push(l.total.double_value(&[]));
    }
    Ok((losses, vs.variables().into_iter().collect()))
}

/// ||a - b|| / ||b|| over all parameters.
fn relative_distance(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (k, t) in b {
        let t = t.to_kind(Kind::Double);
        num += (&a[k].to_kind(Kind::Double) - &t)
            .square()
            .sum(Kind::Double)
            .double_value(&[]);
        den += t.square().sum(Kind::Double).double_value(&[]);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn precision(args: &BenchNumericsArgs, device: Device) -> Result<()> {
    let data = batches(args, args.batch, args.steps, Case::Condenser)?;
    let (init, _m) = model(device, args.tiny, None)?;
    let curve = |kind, residual| train_curve(args, device, &init, kind, residual, &data);
    let (fp32, w32) = curve(Kind::Float, Residual::Fp32)?;
    let (again, w32b) = curve(Kind::Float, Residual::Fp32)?;
    let (bf16, w16) = curve(Kind::BFloat16, Residual::Fp32)?;
    let (bf16r, w16r) = curve(Kind::BFloat16, Residual::Bf16)?;
    let worst = |x: &[f64]| {
        x.iter()
            .zip(&fp32)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max)
    };
    let at = |c: &[f64]| {
        let mut steps: Vec<usize> = [1, 10, 25, c.len()]
            .into_iter()
            .filter(|&i| i >= 1 && i <= c.len())
            .collect();
        steps.dedup();
        steps
            .iter()
            .map(|&i| format!("{i}:{:.4}", c[i - 1]))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "check precision steps={} rows={} len={} fp32_loss={} bf16_loss={} bf16_residual_loss={} max_abs_dloss_fp32_rerun={:.2e} max_abs_dloss_bf16={:.2e} max_abs_dloss_bf16_residual={:.2e} final_dloss_bf16={:.2e} weights_rel_dist_fp32_rerun={:.2e} weights_rel_dist_bf16={:.2e} weights_rel_dist_bf16_residual={:.2e}",
        args.steps,
        args.batch,
        args.seq,
        at(&fp32),
        at(&bf16),
        at(&bf16r),
        worst(&again),
        worst(&bf16),
        worst(&bf16r),
        bf16.last().unwrap_or(&0.0) - fp32.last().unwrap_or(&0.0),
        relative_distance(&w32b, &w32),
        relative_distance(&w16, &w32),
        relative_distance(&w16r, &w32),
    );
    Ok(())
}

fn gradient_cache(args: &BenchNumericsArgs, device: Device, kind: Kind) -> Result<()> {
    let rows = 2 * args.batch;
    let host = batches(args, rows, 1, Case::Cocondenser)?.remove(0);
    let b = DeviceBatch::new(&host, device);
    let w = LossConfig {
        cache_chunk_size: args.gc_chunk,
        ..TrainConfig::default().loss
    };
    let ctx = Ctx::train(kind);
    let (init, _m) = model(device, args.tiny, None)?;
    let grads = |vs: &VarStore| -> BTreeMap<String, Tensor> {
        vs.variables()
            .into_iter()
            .map(|(k, v)| (k, v.grad().to_kind(Kind::Double)))
            .collect()
    };
    let (seed, step) = (7u64, 3u64);
    let (vs, m) = model(device, args.tiny, Some(&init))?;
    let mut objective = CocondenserObjective {
        loss: w.clone(),
        ctx,
        seed,
        device,
        unpad: false,
    };
    let cached_loss = objective
        .step(
            &m,
            std::slice::from_ref(&host),
            step,
            &crate::dist::Dist::single(),
        )?
        .total
        .double_value(&[]);
    let g_cache = grads(&vs);
    let one_graph = |seed: u64| -> Result<(BTreeMap<String, Tensor>, f64)> {
        let (vs, m) = model(device, args.tiny, Some(&init))?;
        let total = cocondenser_one_graph(&m, &b, &w, ctx, seed, step).double_value(&[]);
        Ok((grads(&vs), total))
    };
    let (g_full, full_loss) = one_graph(seed)?;
    let (g_other, _) = one_graph(seed + 1)?;
    // Largest |difference| over all parameters, relative to the largest |gradient| of that parameter.
    let compare = |x: &BTreeMap<String, Tensor>| -> (f64, f64) {
        let (mut abs, mut rel) = (0f64, 0f64);
        for (k, g) in &g_full {
            let d = (&x[k] - g).abs().max().double_value(&[]);
            let scale = g.abs().max().double_value(&[]).max(f64::MIN_POSITIVE);
            abs = abs.max(d);
            rel = rel.max(d / scale);
        }
        (abs, rel)
    };
    let (cache_abs, cache_rel) = compare(&g_cache);
    let (other_abs, other_rel) = compare(&g_other);
    println!(
        "check gradient-cache kind={kind:?} spans={rows} chunk={} len={} loss_cache={cached_loss:.6} loss_one_graph={full_loss:.6} max_abs_dgrad={cache_abs:.2e} max_rel_dgrad={cache_rel:.2e} other_dropout_max_abs_dgrad={other_abs:.2e} other_dropout_max_rel_dgrad={other_rel:.2e}",
        args.gc_chunk, args.seq,
    );
    Ok(())
}

/// One Condenser step (dropout off) from one init on the same batch, padded and packed (`run.unpad`;
/// on CUDA in bf16 the packed attention is the varlen flash kernel): the losses and the largest
/// gradient difference, also relative to the largest gradient of the model.
fn unpadded(args: &BenchNumericsArgs, device: Device, kind: Kind) -> Result<()> {
    let host = batches(args, args.batch, 1, Case::Condenser)?.remove(0);
    let real = host.real_tokens as f64 / (host.rows * host.len) as f64;
    let (init, _m) = model(device, args.tiny, None)?;
    let step = |unpad: bool| -> Result<(f64, BTreeMap<String, Tensor>)> {
        let (vs, m) = model(device, args.tiny, Some(&init))?;
        let mut objective = CondenserObjective {
            loss: TrainConfig::default().loss,
            ctx: Ctx::eval(kind),
            seed: 0,
            grad_accum: 1,
            device,
            unpad,
        };
        let single = crate::dist::Dist::single();
        let loss = objective
            .step(&m, std::slice::from_ref(&host), 0, &single)?
            .total
            .double_value(&[]);
        let grads = vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.grad().to_kind(Kind::Double)))
            .collect();
        Ok((loss, grads))
    };
    let (padded, g_padded) = step(false)?;
    let (packed, g_packed) = step(true)?;
    // Relative to the largest gradient of the model: a key bias's gradient is zero up to rounding
    // (softmax ignores it), so a per-parameter ratio would measure noise.
    let (mut worst, mut largest) = (0f64, 0f64);
    for (k, g) in &g_padded {
        worst = worst.max((&g_packed[k] - g).abs().max().double_value(&[]));
        largest = largest.max(g.abs().max().double_value(&[]));
    }
    let rel = worst / largest.max(f64::MIN_POSITIVE);
    println!(
        "check unpad kind={kind:?} rows={} len={} real_share={real:.3} loss_padded={padded:.6} loss_packed={packed:.6} max_abs_dgrad={worst:.2e} relative_to_largest_grad={rel:.2e}",
        host.rows, host.len
    );
    Ok(())
}

pub fn run(args: BenchNumericsArgs) -> Result<()> {
    let device = crate::device::select(args.device)?;
    eprintln!("numerics on {}", crate::device::device_label(device));
    precision(&args, device)?;
    gradient_cache(&args, device, Kind::Float)?;
    gradient_cache(&args, device, Kind::BFloat16)?;
    unpadded(&args, device, Kind::Float)?;
    unpadded(&args, device, Kind::BFloat16)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_distance_of_equal_and_scaled_weights() {
        let a: BTreeMap<String, Tensor> =
            [("w".to_string(), Tensor::from_slice(&[3.0f32, 4.0]))].into();
        let b: BTreeMap<String, Tensor> =
            [("w".to_string(), Tensor::from_slice(&[3.3f32, 4.4]))].into();
        assert_eq!(relative_distance(&a, &a), 0.0);
        assert!((relative_distance(&b, &a) - 0.1).abs() < 1e-6);
    }
}
