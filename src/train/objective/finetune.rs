//! Fine-tuning a bi-encoder retriever (the papers' second half, Tevatron's recipe): one shared encoder
//! for queries and passages, last-layer [CLS], dot products divided by `loss.temperature` (or, with
//! `loss.similarity = "cos"`, cosines times `loss.cos_scale`, sentence-transformers' loss), and
//! cross-entropy over every passage of the (global) batch: the query's positive, its hard negatives,
//! and every other query's passages (in-batch negatives). It is an `Objective` of the one training
//! loop; its data come from `pairs`.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::grad_cache::{self, Chunk};
use super::{seed_dropout, DeviceBatch, Losses, Objective, Work};
use crate::dist::Dist;
use crate::model::{Condenser, Ctx};
use crate::train::config::LossConfig;
use crate::train::metrics::step_flops;
use crate::train::pairs::PairBatch;

/// Mean cross-entropy of `q` (Q, H) against `p` (Q·n, H): query i's target is passage i·n (its
/// positive); every other passage of the batch is a negative.
pub fn retrieval_loss(q: &Tensor, p: &Tensor, n: i64, temperature: f64) -> Tensor {
    let nq = q.size()[0];
    let scores = q.to_kind(Kind::Float).matmul(&p.to_kind(Kind::Float).tr()) / temperature;
    let target = Tensor::arange(nq, (Kind::Int64, q.device())) * n;
    scores.cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, -100, 0.0)
}

pub struct FinetuneObjective {
    pub loss: LossConfig,
    pub ctx: Ctx,
    pub seed: u64,
    pub device: Device,
    /// Packed batches (`run.unpad`).
    pub unpad: bool,
}

impl Objective for FinetuneObjective {
    type Batch = PairBatch;
    const UNIT: &'static str = "queries";
    const SKIPPED: Option<&'static str> =
        Some("training line(s) skipped (malformed, without a positive or a negative, or empty)");

    fn micro_batches(&self) -> usize {
        1
    }

    fn work(&self, model: &Condenser, b: &PairBatch) -> Work {
        let encoder = |x: &crate::train::collate::Batch| {
            step_flops(&model.config, 0, x.rows, x.len, 0, false)
        };
        Work {
            sequences: (b.queries.rows + b.passages.rows) as u64,
            tokens: (b.queries.real_tokens + b.passages.real_tokens) as u64,
            flops: encoder(&b.queries) + encoder(&b.passages),
        }
    }

    fn step(
        &mut self,
        model: &Condenser,
        batches: &[PairBatch],
        step: u64,
        dist: &Dist,
    ) -> Result<Losses> {
        let [batch] = batches else {
            anyhow::bail!("a fine-tuning step takes one batch, not {}", batches.len());
        };
        let q = DeviceBatch::with_layout(&batch.queries, self.device, self.unpad);
        let p = DeviceBatch::with_layout(&batch.passages, self.device, self.unpad);
        let loss = finetune_step(
            model,
            &q,
            &p,
            batch.n_passages as i64,
            &self.loss,
            self.ctx,
            (self.seed, step),
            dist,
        )?;
        Ok(Losses::total(loss))
    }
}

/// One step's gradients (into .grad) and the detached loss, exact across ranks and with the gradient
/// cache (`grad_cache`), as `cocondenser::cocondenser_step`: the [CLS] vectors of every rank's queries and passages are
/// gathered (rank order is batch order) and the loss is computed over them as leaves on every rank;
/// each rank back-propagates its own rows of the gradient through its own encoder passes. With
/// `loss.negatives_across_ranks` off nothing is gathered: the loss is this rank's queries against its
/// own passages, its gradient divided by the world size (the returned loss is the rank's own; the
/// trainer averages it over ranks). Without the
/// cache (`cache_chunk_size` 0) a rank keeps the graph of its one forward; with it, pass 1 encodes in
/// chunks without a graph and pass 2 replays each chunk under the same dropout seed. Dropout is keyed
/// by the chunk's place in the global batch (queries even, passages odd), so it does not depend on the
/// world size when chunks divide each rank's rows.
#[allow(clippy::too_many_arguments)]
pub fn finetune_step(
    model: &Condenser,
    q: &DeviceBatch,
    p: &DeviceBatch,
    n: i64,
    w: &LossConfig,
    ctx: Ctx,
    (seed, step): (u64, u64),
    dist: &Dist,
) -> Result<Tensor> {
    let c = w.cache_chunk_size;
    let q_parts = grad_cache::split(q.rows, c, |i, k| 2 * (dist.rank * k + i) as u64);
    let p_parts = grad_cache::split(p.rows, c, |i, k| 2 * (dist.rank * k + i) as u64 + 1);
    // Cosine: the vectors are normalised inside the graph, so the gradient goes through the norm.
    let encode = |b: &DeviceBatch| {
        w.similarity
            .prepare(&model.cls(&b.input_ids, &b.mask(), ctx).to_kind(Kind::Float))
    };
    let keep_graph = c == 0;
    // Pass 1: this rank's vectors (with their graph when there is no cache).
    let (q_live, p_live) = if keep_graph {
        seed_dropout(seed, step, q_parts[0].part);
        let qv = encode(q);
        seed_dropout(seed, step, p_parts[0].part);
        let pv = encode(p);
        (Some(qv), Some(pv))
    } else {
        (None, None)
    };
    let chunked = |b: &DeviceBatch, parts: &[Chunk]| {
        grad_cache::encode_without_graph(parts, (seed, step), |c| encode(&b.rows(c.start, c.len)))
    };
    let q_local = match &q_live {
        Some(v) => v.detach(),
        None => chunked(q, &q_parts),
    };
    let p_local = match &p_live {
        Some(v) => v.detach(),
        None => chunked(p, &p_parts),
    };
    // Negatives across ranks: the loss over the gathered global batch, the same on every rank. Without:
    // this rank's queries against its own passages, over the world size, so the summed gradient is the
    // mean of the ranks' losses' gradients (DDP's average in Tevatron with `negatives_x_device` off).
    let (q_all, p_all, own, scale) = match w.negatives_across_ranks {
        true => (
            dist.all_gather(&q_local)?,
            dist.all_gather(&p_local)?,
            dist.rank as i64,
            1.0,
        ),
        false => (q_local, p_local, 0, 1.0 / dist.world_size as f64),
    };
    let (q_all, p_all) = (grad_cache::leaf(&q_all), grad_cache::leaf(&p_all));
    let loss = retrieval_loss(&q_all, &p_all, n, w.score_divisor());
    let mut grads = grad_cache::gradients(&(&loss * scale), &[&q_all, &p_all]);
    let gp = grads
        .pop()
        .expect("two inputs")
        .narrow(0, own * p.rows, p.rows);
    let gq = grads
        .pop()
        .expect("two inputs")
        .narrow(0, own * q.rows, q.rows);
    // Pass 2: this rank's rows of the gradient through its encoder passes.
    match (q_live, p_live) {
        (Some(qv), Some(pv)) => {
            (grad_cache::surrogate(&gq, &qv) + grad_cache::surrogate(&gp, &pv)).backward();
        }
        _ => {
            for (b, parts, g) in [(q, &q_parts, &gq), (p, &p_parts, &gp)] {
                grad_cache::replay(parts, (seed, step), |c| {
                    let v = encode(&b.rows(c.start, c.len));
                    grad_cache::surrogate(&g.narrow(0, c.start, c.len), &v)
                });
            }
        }
    }
    Ok(loss.detach())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_loss_by_hand() {
        // Two queries, two passages each (positive first), temperature 0.5.
        let q = Tensor::from_slice2(&[[1.0f32, 0.0], [0.0, 1.0]]);
        let p = Tensor::from_slice2(&[[1.0f32, 0.0], [0.0, 0.0], [0.0, 2.0], [1.0, 1.0]]);
        let got = retrieval_loss(&q, &p, 2, 0.5).double_value(&[]);
        // Query 0 scores [1, 0, 0, 1] / 0.5 = [2, 0, 0, 2], target 0 (its positive). Query 1 scores
        // [0, 0, 2, 1] / 0.5 = [0, 0, 4, 2], target 2: the other query's passages are negatives too.
        let ce =
            |s: [f64; 4], t: usize| -(s[t].exp() / s.iter().map(|x| x.exp()).sum::<f64>()).ln();
        let want = (ce([2.0, 0.0, 0.0, 2.0], 0) + ce([0.0, 0.0, 4.0, 2.0], 2)) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
