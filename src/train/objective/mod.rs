//! The losses of both stages, and the gradient cache (spec 2.3-2.6), behind `Objective`: what the
//! training loop (`trainer::train`) calls once per optimizer step, whatever it trains.
//!
//! Dropout is made replayable without saving generator states: before every forward the global
//! generator is seeded from (seed, step, chunk). Pass 1 and pass 2 of the gradient cache therefore draw
//! identical dropout masks, and a resumed run draws the masks the uninterrupted run drew.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::collate::Batch;
use super::config::LossConfig;
use super::metrics::batch_flops;
use crate::dist::Dist;
use crate::model::{Condenser, Ctx, Labels, Mask};
use crate::rng::stable_hash;

/// A batch on the device, with the host facts (row lengths, labels) that spare the device a sync.
pub struct DeviceBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub rows: i64,
    len: usize,
    row_lens: Vec<usize>,
    host_labels: std::sync::Arc<Vec<i64>>,
    first_row: usize,
}

impl DeviceBatch {
    pub fn new(b: &Batch, device: Device) -> Self {
        let shape = [b.rows as i64, b.len as i64];
        let put = |v: &[i64]| crate::device::upload(Tensor::from_slice(v).view(shape), device);
        let row_lens = b
            .attention_mask
            .chunks(b.len)
            .map(|r| r.iter().filter(|&&m| m != 0).count())
            .collect();
        DeviceBatch {
            input_ids: put(&b.input_ids),
            attention_mask: put(&b.attention_mask),
            rows: b.rows as i64,
            len: b.len,
            row_lens,
            host_labels: std::sync::Arc::new(b.labels.clone()),
            first_row: 0,
        }
    }

    /// Rows `start .. start + n` (a gradient-cache chunk).
    pub fn rows(&self, start: i64, n: i64) -> DeviceBatch {
        DeviceBatch {
            input_ids: self.input_ids.narrow(0, start, n),
            attention_mask: self.attention_mask.narrow(0, start, n),
            rows: n,
            len: self.len,
            row_lens: self.row_lens[start as usize..(start + n) as usize].to_vec(),
            host_labels: self.host_labels.clone(),
            first_row: self.first_row + start as usize,
        }
    }

    /// The attention mask, padding known from the host.
    pub fn mask(&self) -> Mask {
        Mask::known(
            &self.attention_mask,
            self.row_lens.iter().any(|&l| l < self.len),
        )
    }

    /// This batch's labels as positions and targets, from the host copy.
    pub fn labels(&self) -> Labels {
        let (a, b) = (
            self.first_row * self.len,
            (self.first_row + self.rows as usize) * self.len,
        );
        Labels::from_host(&self.host_labels[a..b], self.input_ids.device())
    }
}

/// Detached loss parts of one optimizer step (device scalars: read them only when logging). The MLM
/// parts are the pre-training stages'; `co` is the contrastive loss (coCondenser's span pairs).
pub struct Losses {
    pub total: Tensor,
    pub head: Option<Tensor>,
    pub late: Option<Tensor>,
    pub co: Option<Tensor>,
}

/// Work in one batch, for the throughput figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Work {
    pub sequences: u64,
    /// Non-padding tokens.
    pub tokens: u64,
    /// Model FLOPs (`metrics::batch_flops`).
    pub flops: f64,
}

impl Work {
    /// A pre-training batch: its rows, real tokens and FLOPs (with the contrastive scores or not).
    pub fn of(model: &Condenser, b: &Batch, contrastive: bool) -> Self {
        Work {
            sequences: b.rows as u64,
            tokens: b.real_tokens as u64,
            flops: batch_flops(model, b, contrastive),
        }
    }
}

/// A training objective: the loop hands it one optimizer step's batches and it leaves that step's
/// gradients in the parameters' .grad (the flat buffer of `optim::AdamW`). Everything else (data,
/// schedule, clipping, the update, checkpoints, metrics) is the loop's and shared by every objective.
pub trait Objective {
    /// What the loader sends.
    type Batch: Send + 'static;
    /// Batches one optimizer step consumes.
    fn micro_batches(&self) -> usize;
    fn work(&self, model: &Condenser, batch: &Self::Batch) -> Work;
    /// Forward and backward of optimizer step `step` (0-based) over this rank's batches, in order,
    /// scaled so that the sum over ranks (the loop's all-reduce) is the global batch's gradient. The
    /// losses returned are this rank's; their mean over ranks is the global batch's.
    fn step(
        &mut self,
        model: &Condenser,
        batches: &[Self::Batch],
        step: u64,
        dist: &Dist,
    ) -> Result<Losses>;
}

/// The Condenser stage: head and late MLM on single spans, `grad_accum` micro-batches a step.
pub struct CondenserObjective {
    pub loss: LossConfig,
    pub ctx: Ctx,
    pub seed: u64,
    pub grad_accum: usize,
    pub device: Device,
}

impl Objective for CondenserObjective {
    type Batch = Batch;

    fn micro_batches(&self) -> usize {
        self.grad_accum
    }

    fn work(&self, model: &Condenser, b: &Batch) -> Work {
        Work::of(model, b, false)
    }

    fn step(
        &mut self,
        model: &Condenser,
        batches: &[Batch],
        step: u64,
        dist: &Dist,
    ) -> Result<Losses> {
        let n = batches.len() as f64;
        let scale = 1.0 / (n * dist.world_size as f64);
        // Dropout keyed by the micro-batch's place in the global step: world x grad_accum parts.
        let first_part = (dist.rank * batches.len()) as u64;
        let mut acc: Option<Losses> = None;
        for (k, batch) in batches.iter().enumerate() {
            let b = DeviceBatch::new(batch, self.device);
            seed_dropout(self.seed, step, first_part + k as u64);
            let l = condenser_micro(model, &b, &self.loss, self.ctx, scale);
            acc = Some(match acc {
                None => l,
                Some(a) => Losses {
                    total: a.total + l.total,
                    head: sum(a.head, l.head),
                    late: sum(a.late, l.late),
                    co: None,
                },
            });
        }
        let l = acc.ok_or_else(|| anyhow::anyhow!("a Condenser step without batches"))?;
        Ok(if batches.len() > 1 {
            Losses {
                total: l.total / n,
                head: l.head.map(|h| h / n),
                late: l.late.map(|h| h / n),
                co: None,
            }
        } else {
            l
        })
    }
}

/// The coCondenser stage: MLM plus the contrastive span-pair loss over the batch, one batch of
/// documents a step through the gradient cache.
pub struct CocondenserObjective {
    pub loss: LossConfig,
    pub ctx: Ctx,
    pub seed: u64,
    pub device: Device,
}

impl Objective for CocondenserObjective {
    type Batch = Batch;

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
        let b = DeviceBatch::new(batch, self.device);
        cocondenser_step(model, &b, &self.loss, self.ctx, self.seed, step, dist)
    }
}

fn sum(a: Option<Tensor>, b: Option<Tensor>) -> Option<Tensor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// Seeds the global generator (CPU and CUDA) for the forward of (step, part).
pub fn seed_dropout(seed: u64, step: u64, part: u64) {
    let s = stable_hash(&[
        &seed.to_le_bytes(),
        b"dropout",
        &step.to_le_bytes(),
        &part.to_le_bytes(),
    ]);
    tch::manual_seed((s >> 1) as i64);
}

fn mlm(out: &crate::model::CondenserOutput, model: &Condenser, w: &LossConfig) -> Tensor {
    let head = &out.head_loss * w.head_weight;
    if model.head_config.late_mlm {
        head + &out.late_loss * w.late_weight
    } else {
        head
    }
}

/// Condenser stage, one micro-batch: backward of `scale` x (head + late) and the detached parts.
pub fn condenser_micro(
    model: &Condenser,
    b: &DeviceBatch,
    w: &LossConfig,
    ctx: Ctx,
    scale: f64,
) -> Losses {
    let out = model.forward(&b.input_ids, &b.mask(), &b.labels(), ctx);
    let loss = mlm(&out, model, w);
    (&loss * scale).backward();
    Losses {
        total: loss.detach(),
        head: Some(out.head_loss.detach()),
        late: Some(out.late_loss.detach()),
        co: None,
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

/// Chunk boundaries of `n` rows in chunks of `chunk` (0 = one chunk).
pub fn chunks(n: i64, chunk: usize) -> Vec<(i64, i64)> {
    let c = if chunk == 0 { n } else { chunk as i64 };
    (0..n)
        .step_by(c as usize)
        .map(|s| (s, c.min(n - s)))
        .collect()
}

/// coCondenser stage, one optimizer step's gradients (accumulated into .grad).
/// Objective: co_weight x co(V) + sum_i mlm_weight x rows_i / 2B x mlm_i, with V the last-layer CLS of
/// all 2B spans of the global batch and mlm_i chunk i's (head + late) mean. Without the cache (one
/// chunk) this is the plain loss head + late + co. With it: pass 1 computes V chunk by chunk without a
/// graph, the contrastive loss on a detached V gives G = dL/dV, and pass 2 replays each chunk (same
/// dropout seed) and back-propagates scale_i x mlm_i + <G_i, V_i>.
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
    let parts = chunks(n_local, w.cache_chunk_size);
    // Dropout keyed by the chunk's place in the global batch (chunks divide each rank's rows).
    let first_part = (dist.rank * parts.len()) as u64;
    // Pass 1: representations, no graph.
    let reps: Vec<Tensor> = tch::no_grad(|| {
        parts
            .iter()
            .enumerate()
            .map(|(i, &(s, len))| {
                seed_dropout(seed, step, first_part + i as u64);
                let c = b.rows(s, len);
                model.cls(&c.input_ids, &c.mask(), ctx).to_kind(Kind::Float)
            })
            .collect()
    });
    let reps = dist
        .all_gather(&Tensor::cat(&reps, 0))?
        .detach()
        .set_requires_grad(true);
    let co = contrastive_loss(&reps);
    let cached = Tensor::run_backward(&[&co * w.co_weight], &[&reps], false, false)
        .pop()
        .expect("one input")
        .narrow(0, dist.rank as i64 * n_local, n_local);
    // Pass 2: replay each chunk with its dropout seed; MLM and the surrogate <G, V>.
    let mut total = co.detach() * w.co_weight;
    let (mut head, mut late) = (
        Tensor::zeros([], (Kind::Float, b.input_ids.device())),
        Tensor::zeros([], (Kind::Float, b.input_ids.device())),
    );
    for (i, &(s, len)) in parts.iter().enumerate() {
        seed_dropout(seed, step, first_part + i as u64);
        let c = b.rows(s, len);
        let out = model.forward(&c.input_ids, &c.mask(), &c.labels(), ctx);
        let scale = w.mlm_weight * len as f64 / n as f64;
        let surrogate = (cached.narrow(0, s, len) * &out.cls).sum(Kind::Float);
        let loss = mlm(&out, model, w);
        (&loss * scale + surrogate).backward();
        // The reported parts are this rank's means (their mean over ranks is the global one).
        let share = len as f64 / n_local as f64;
        total += loss.detach() * (w.mlm_weight * len as f64 / n_local as f64);
        head += out.head_loss.detach() * share;
        late += out.late_loss.detach() * share;
    }
    Ok(Losses {
        total,
        head: Some(head),
        late: Some(late),
        co: Some(co.detach()),
    })
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

    #[test]
    fn chunking() {
        assert_eq!(chunks(10, 4), [(0, 4), (4, 4), (8, 2)]);
        assert_eq!(chunks(6, 0), [(0, 6)]);
    }
}
