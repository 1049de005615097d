//! What the training loop (`trainer::train`) asks of whatever it trains: `Objective`, called once per
//! optimizer step, and what it hands back (`Losses`, `Work`). One file per objective beside this one
//! (`condenser`, `cocondenser`, `finetune`), and the gradient cache they share (`grad_cache`).
//! ARCHITECTURE.md, "Adding an objective", lists the steps.
//!
//! Dropout is made replayable without saving generator states: before every forward the global
//! generator is seeded from (seed, step, part) (`seed_dropout`). Pass 1 and pass 2 of the gradient
//! cache therefore draw identical dropout masks, and a resumed run draws the masks the uninterrupted
//! run drew.

pub mod cocondenser;
pub mod condenser;
pub mod finetune;
pub mod grad_cache;

use anyhow::Result;
use tch::{Device, Tensor};

use super::collate::Batch;
use super::metrics::batch_flops;
use crate::dist::Dist;
use crate::model::{Condenser, Labels, Mask, Packing};
use crate::rng::stable_hash;

/// A batch on the device, with the host facts (row lengths, labels) that spare the device a sync.
/// Dense: (B, L) rows padded to the longest. Packed (`run.unpad`): the rows' real tokens in one
/// (1, T) row, no padding; each sequence attends within itself (`model::Mask::Packed`).
pub struct DeviceBatch {
    pub input_ids: Tensor,
    /// (B, L) 0/1; None when packed.
    attention_mask: Option<Tensor>,
    pub rows: i64,
    len: usize,
    row_lens: Vec<usize>,
    host_labels: std::sync::Arc<Vec<i64>>,
    first_row: usize,
}

impl DeviceBatch {
    /// The batch as dense rows.
    pub fn new(b: &Batch, device: Device) -> Self {
        Self::with_layout(b, device, false)
    }

    /// The batch as dense rows, or packed when `unpad`.
    pub fn with_layout(b: &Batch, device: Device, unpad: bool) -> Self {
        let shape = [b.rows as i64, b.len as i64];
        let put = |v: &[i64]| crate::device::upload(Tensor::from_slice(v).view(shape), device);
        // Real tokens come first in each row (the collators pad at the end).
        let row_lens: Vec<usize> = b
            .attention_mask
            .chunks(b.len)
            .map(|r| r.iter().filter(|&&m| m != 0).count())
            .collect();
        let (input_ids, attention_mask) = match unpad {
            true => {
                let ids: Vec<i64> = b
                    .input_ids
                    .chunks(b.len)
                    .zip(&row_lens)
                    .flat_map(|(r, &n)| r[..n].iter().copied())
                    .collect();
                let n = ids.len() as i64;
                let ids = crate::device::upload(Tensor::from_slice(&ids).view([1, n]), device);
                (ids, None)
            }
            false => (put(&b.input_ids), Some(put(&b.attention_mask))),
        };
        DeviceBatch {
            input_ids,
            attention_mask,
            rows: b.rows as i64,
            len: b.len,
            row_lens,
            host_labels: std::sync::Arc::new(b.labels.clone()),
            first_row: 0,
        }
    }

    fn packed(&self) -> bool {
        self.attention_mask.is_none()
    }

    /// Rows `start .. start + n` (a gradient-cache chunk).
    pub fn rows(&self, start: i64, n: i64) -> DeviceBatch {
        let (s, e) = (start as usize, (start + n) as usize);
        let input_ids = match &self.attention_mask {
            Some(_) => self.input_ids.narrow(0, start, n),
            None => {
                let offset: usize = self.row_lens[..s].iter().sum();
                let count: usize = self.row_lens[s..e].iter().sum();
                self.input_ids.narrow(1, offset as i64, count as i64)
            }
        };
        DeviceBatch {
            input_ids,
            attention_mask: self.attention_mask.as_ref().map(|m| m.narrow(0, start, n)),
            rows: n,
            len: self.len,
            row_lens: self.row_lens[s..e].to_vec(),
            host_labels: self.host_labels.clone(),
            first_row: self.first_row + s,
        }
    }

    /// How the tokens attend: dense with the padding known from the host, or packed.
    pub fn mask(&self) -> Mask {
        match &self.attention_mask {
            Some(m) => Mask::known(m, self.row_lens.iter().any(|&l| l < self.len)),
            None => Mask::Packed(Packing::of_lengths(&self.row_lens, self.input_ids.device())),
        }
    }

    /// This batch's labels as positions and targets, from the host copy (positions into the packed
    /// row when packed: the same labels in the same order).
    pub fn labels(&self) -> Labels {
        let (a, b) = (
            self.first_row * self.len,
            (self.first_row + self.rows as usize) * self.len,
        );
        let rows = &self.host_labels[a..b];
        if !self.packed() {
            return Labels::from_host(rows, self.input_ids.device());
        }
        let packed: Vec<i64> = rows
            .chunks(self.len)
            .zip(&self.row_lens)
            .flat_map(|(r, &n)| {
                debug_assert!(r[n..].iter().all(|&l| l == -100), "a label on padding");
                r[..n].iter().copied()
            })
            .collect();
        Labels::from_host(&packed, self.input_ids.device())
    }
}

/// The detached loss of one optimizer step and its named parts (device scalars: read them only when
/// logging). Each part is a key of `metrics.jsonl` (and a TensorBoard tag, and a line of `curves`).
pub struct Losses {
    pub total: Tensor,
    pub parts: Vec<LossPart>,
}

/// One part of a step's loss, e.g. the Condenser head's MLM loss as `head_loss`.
pub struct LossPart {
    /// Its key in metrics.jsonl: `<short name>_loss`.
    pub key: &'static str,
    pub value: Tensor,
    /// The rank's own value, averaged over the ranks by the loop; or false: already the global
    /// batch's (a loss over gathered vectors, the same on every rank), left as it is.
    pub per_rank: bool,
}

impl Losses {
    /// A loss without parts (fine-tuning's).
    pub fn total(total: Tensor) -> Self {
        Losses {
            total,
            parts: Vec::new(),
        }
    }

    /// The part under `key`, if this objective has it.
    pub fn part(&self, key: &str) -> Option<&Tensor> {
        self.parts.iter().find(|p| p.key == key).map(|p| &p.value)
    }
}

impl LossPart {
    /// A part averaged over the ranks.
    pub fn per_rank(key: &'static str, value: Tensor) -> Self {
        LossPart {
            key,
            value,
            per_rank: true,
        }
    }

    /// A part that is already the global batch's on every rank.
    pub fn global(key: &'static str, value: Tensor) -> Self {
        LossPart {
            key,
            value,
            per_rank: false,
        }
    }
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
    /// What one example of `data.batch_size` is, for the log: "spans", "documents", "queries".
    const UNIT: &'static str;
    /// Said after `UNIT` where the log describes a step, e.g. " (2 spans each)".
    const UNIT_NOTE: &'static str = "";
    /// What the loader's skip count counts ("document(s) with fewer than two spans skipped"), or
    /// None for an objective whose loader never skips (no `skipped_docs` in its metrics).
    const SKIPPED: Option<&'static str> = None;
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
