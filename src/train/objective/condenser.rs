//! The Condenser stage (spec 2.3): the head's and the last layer's MLM losses on single spans,
//! `grad_accum` micro-batches a step.

use anyhow::Result;
use tch::{Device, Tensor};

use super::{seed_dropout, DeviceBatch, LossPart, Losses, Objective, Work};
use crate::dist::Dist;
use crate::model::{Condenser, CondenserOutput, Ctx};
use crate::train::collate::Batch;
use crate::train::config::LossConfig;

pub struct CondenserObjective {
    pub loss: LossConfig,
    pub ctx: Ctx,
    pub seed: u64,
    pub grad_accum: usize,
    pub device: Device,
    /// Packed batches (`run.unpad`).
    pub unpad: bool,
}

impl Objective for CondenserObjective {
    type Batch = Batch;
    const UNIT: &'static str = "spans";

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
            let b = DeviceBatch::with_layout(batch, self.device, self.unpad);
            seed_dropout(self.seed, step, first_part + k as u64);
            let l = condenser_micro(model, &b, &self.loss, self.ctx, scale);
            acc = Some(match acc {
                None => l,
                Some(a) => Losses {
                    total: a.total + l.total,
                    parts: a
                        .parts
                        .into_iter()
                        .zip(l.parts)
                        .map(|(a, b)| LossPart {
                            value: a.value + b.value,
                            ..a
                        })
                        .collect(),
                },
            });
        }
        let l = acc.ok_or_else(|| anyhow::anyhow!("a Condenser step without batches"))?;
        Ok(if batches.len() > 1 {
            Losses {
                total: l.total / n,
                parts: l
                    .parts
                    .into_iter()
                    .map(|p| LossPart {
                        value: p.value / n,
                        ..p
                    })
                    .collect(),
            }
        } else {
            l
        })
    }
}

/// The MLM loss a pre-training stage back-propagates: head_weight x head (+ late_weight x late).
pub fn mlm(out: &CondenserOutput, model: &Condenser, w: &LossConfig) -> Tensor {
    let head = &out.head_loss * w.head_weight;
    if model.head_config.late_mlm {
        head + &out.late_loss * w.late_weight
    } else {
        head
    }
}

/// The MLM parts as the pre-training stages report them.
pub fn mlm_parts(head: Tensor, late: Tensor) -> Vec<LossPart> {
    vec![
        LossPart::per_rank("head_loss", head),
        LossPart::per_rank("late_loss", late),
    ]
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
        parts: mlm_parts(out.head_loss.detach(), out.late_loss.detach()),
    }
}
