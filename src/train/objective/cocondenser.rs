//! The coCondenser stage (spec 2.4-2.6): the Condenser's MLM plus the contrastive loss of span pairs
//! (two spans of one document are positives, every other span of the global batch a negative), one
//! batch of documents a step through the gradient cache.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::condenser::{mlm, mlm_parts};
use super::grad_cache::{self, chunks};
use super::{seed_dropout, DeviceBatch, LossPart, Losses, Objective, Work};
use crate::dist::Dist;
use crate::model::{Condenser, Ctx};
use crate::train::collate::Batch;
use crate::train::config::LossConfig;

pub struct CocondenserObjective {
    pub loss: LossConfig,
    pub ctx: Ctx,
    pub seed: u64,
    pub device: Device,
    /// Packed batches (`run.unpad`).
    pub unpad: bool,
}

impl Objective for CocondenserObjective {
    type Batch = Batch;
    const UNIT: &'static str = "documents";
    const UNIT_NOTE: &'static str = " (2 spans each)";
    const SKIPPED: Option<&'static str> = Some("document(s) with fewer than two spans skipped");

    fn micro_batches(&self) -> usize {
        1
    }

    fn work(&self, model: &Condenser, b: &Batch) -> Work {
        Work::of(model, b, true)
    }

    fn step(
        &mut self,
        model: &Condenser,
        batches: &[Batch],
        step: u64,
        dist: &Dist,
    ) -> Result<Losses> {
        let [batch] = batches else {
            anyhow::bail!("a coCondenser step takes one batch, not {}", batches.len());
        };
        let b = DeviceBatch::with_layout(batch, self.device, self.unpad);
        cocondenser_step(model, &b, &self.loss, self.ctx, self.seed, step, dist)
    }
}

/// coCondenser's span loss: S = V Vᵀ (raw dot products, fp32, no temperature), the diagonal excluded,
/// the sibling (index xor 1) the positive, cross-entropy averaged over all rows.
pub fn contrastive_loss(reps: &Tensor) -> Tensor {
    let n = reps.size()[0];
    let r = reps.to_kind(Kind::Float);
    let scores = r.matmul(&r.tr());
    let eye = Tensor::eye(n, (Kind::Bool, reps.device()));
    let scores = scores.masked_fill(&eye, f64::NEG_INFINITY);
    let target = Tensor::arange(n, (Kind::Int64, reps.device())).bitwise_xor(1);
    scores.cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, -100, 0.0)
}

/// coCondenser stage, one optimizer step's gradients (accumulated into .grad).
/// Objective: co_weight x co(V) + sum_i mlm_weight x rows_i / 2B x mlm_i, with V the last-layer CLS of
/// all 2B spans of the global batch and mlm_i chunk i's (head + late) mean. Without the cache (one
/// chunk) this is the plain loss head + late + co. With it (`grad_cache`): pass 1 computes V chunk by
/// chunk without a graph, the contrastive loss on a detached V gives G = dL/dV, and pass 2 replays
/// each chunk (same dropout seed) and back-propagates scale_i x mlm_i + <G_i, V_i>.
///
/// Across ranks the same holds exactly: each rank's V is gathered (rank order is batch order), every
/// rank computes co(V) over the whole gathered V as a leaf, and back-propagates its own rows of G
/// through its own chunks; the sum of the ranks' gradients (the loop's all-reduce) is the gradient of
/// the global objective. A rank without the cache counts as one chunk of its 2b spans.
pub fn cocondenser_step(
    model: &Condenser,
    b: &DeviceBatch,
    w: &LossConfig,
    ctx: Ctx,
    seed: u64,
    step: u64,
    dist: &Dist,
) -> Result<Losses> {
    let n_local = b.rows;
    let n = n_local * dist.world_size as i64;
    // Dropout keyed by the chunk's place in the global batch (chunks divide each rank's rows).
    let parts = grad_cache::split(n_local, w.cache_chunk_size, |i, k| {
        (dist.rank * k + i) as u64
    });
    // Pass 1: representations, no graph.
    let reps = grad_cache::encode_without_graph(&parts, (seed, step), |c| {
        let c = b.rows(c.start, c.len);
        model.cls(&c.input_ids, &c.mask(), ctx).to_kind(Kind::Float)
    });
    let reps = grad_cache::leaf(&dist.all_gather(&reps)?);
    let co = contrastive_loss(&reps);
    let cached = grad_cache::gradients(&(&co * w.co_weight), &[&reps])
        .pop()
        .expect("one input")
        .narrow(0, dist.rank as i64 * n_local, n_local);
    // Pass 2: replay each chunk with its dropout seed; MLM and the surrogate <G, V>.
    let mut total = co.detach() * w.co_weight;
    let (mut head, mut late) = (
        Tensor::zeros([], (Kind::Float, b.input_ids.device())),
        Tensor::zeros([], (Kind::Float, b.input_ids.device())),
    );
    grad_cache::replay(&parts, (seed, step), |chunk| {
        let (s, len) = (chunk.start, chunk.len);
        let c = b.rows(s, len);
        let out = model.forward(&c.input_ids, &c.mask(), &c.labels(), ctx);
        let scale = w.mlm_weight * len as f64 / n as f64;
        let surrogate = grad_cache::surrogate(&cached.narrow(0, s, len), &out.cls);
        let loss = mlm(&out, model, w);
        // The reported parts are this rank's means (their mean over ranks is the global one).
        let share = len as f64 / n_local as f64;
        total += loss.detach() * (w.mlm_weight * len as f64 / n_local as f64);
        head += out.head_loss.detach() * share;
        late += out.late_loss.detach() * share;
        &loss * scale + surrogate
    });
    let mut parts = mlm_parts(head, late);
    parts.push(LossPart::global("co_loss", co.detach()));
    Ok(Losses { total, parts })
}

/// The coCondenser objective of `cocondenser_step` in one graph, each chunk's forward under the dropout
/// seed the gradient cache uses: the reference its gradients must equal (tests, `bench numerics`).
/// Back-propagates into .grad and returns the detached total.
pub fn cocondenser_one_graph(
    model: &Condenser,
    b: &DeviceBatch,
    w: &LossConfig,
    ctx: Ctx,
    seed: u64,
    step: u64,
) -> Tensor {
    let n = b.rows;
    let mut reps = Vec::new();
    let mut mlm_sum = Tensor::zeros([], (Kind::Float, b.input_ids.device()));
    for (i, (s, len)) in chunks(n, w.cache_chunk_size).into_iter().enumerate() {
        seed_dropout(seed, step, i as u64);
        let c = b.rows(s, len);
        let out = model.forward(&c.input_ids, &c.mask(), &c.labels(), ctx);
        mlm_sum += mlm(&out, model, w) * (w.mlm_weight * len as f64 / n as f64);
        reps.push(out.cls);
    }
    let total = contrastive_loss(&Tensor::cat(&reps, 0)) * w.co_weight + mlm_sum;
    total.backward();
    total.detach()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrastive_loss_by_hand() {
        // Two documents, orthogonal pairs: row 0 = (1,0), its sibling row 1 = (1,0); rows 2, 3 = (0,1).
        let v = Tensor::from_slice2(&[[1.0f32, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]);
        let loss = contrastive_loss(&v).double_value(&[]);
        // Each row: logits over the 3 others = [1, 0, 0] with the positive at 1 -> -log(e/(e+2)).
        let e = std::f64::consts::E;
        assert!((loss - (-(e / (e + 2.0)).ln())).abs() < 1e-6, "{loss}");
    }
}
