//! `TrainConfig`: one serde struct with commented defaults (nanoGPT's config block), read from a TOML
//! file, overridden with `--set section.key=value`, stored in every checkpoint.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Head MLM + late MLM on single spans.
    Condenser,
    /// Adds the contrastive span-pair loss; two spans of a document per example.
    Cocondenser,
    /// A bi-encoder retriever on labelled queries and passages (`condenser finetune`).
    Finetune,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// "condenser" (head MLM + late MLM on single spans) or "cocondenser" (adds the contrastive
    /// span-pair loss; two spans of a document per example).
    pub stage: Stage,
    /// The Condenser head: the layer that feeds it, its depth, the late MLM loss.
    pub model: ModelConfig,
    /// Batches: lengths, masking, padding, shuffling, the held-out share.
    pub data: DataConfig,
    /// Weights of the losses, and the gradient cache.
    pub loss: LossConfig,
    /// AdamW and the learning-rate schedule (linear warm-up, then linear decay to 0).
    pub optim: OptimConfig,
    /// Seeds, checkpoints, logging and numerics.
    pub run: RunConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Early layer feeding the head (HF indexing, 0 = embeddings): 6 of 12 for bert-base. Unset: the
    /// init's head file says, else half the model's layers (logged). Must be below the layer count.
    #[serde(default)]
    pub skip_from: Option<usize>,
    /// Fresh BERT layers in the Condenser head.
    pub n_head_layers: usize,
    /// Add the last layer's own MLM loss.
    pub late_mlm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Sequence length with [CLS] and [SEP]; longer spans are cropped once at a random offset.
    pub max_len: usize,
    /// Condenser: sequences per optimizer step (per micro-batch with grad_accum). coCondenser:
    /// documents per step, i.e. 2 x batch_size spans.
    pub batch_size: usize,
    /// Share of tokens selected for masking (whole words).
    pub mlm_probability: f64,
    /// Pad to max_len instead of the batch's longest sequence (the reference pads to max_len).
    pub pad_to_max_len: bool,
    /// Otherwise pad the batch's longest sequence up to a multiple of this (capped at max_len); 1 = the
    /// longest. Fewer distinct batch shapes for backends that plan per shape (cuDNN attention on a GPU
    /// with length grouping), at the cost of a few padding tokens a row.
    #[serde(default = "one")]
    pub pad_to_multiple_of: usize,
    /// Examples held in the shuffle buffer.
    pub shuffle_buffer: usize,
    /// Length grouping: this many batches' worth of shuffled examples are sorted by length and cut
    /// into batches of similar length (sent in shuffled order), so padding shrinks; 0 (or 1) = off, as the
    /// reference (batches of random lengths). Changes which examples share a batch, not which are seen.
    #[serde(default)]
    pub group_by_length: usize,
    /// Batches prepared ahead of the trainer (bounded channel depth).
    pub prefetch: usize,
    /// Share of documents held out of training for `condenser eval-spans` (same rule, same seed).
    pub holdout_fraction: f64,
    /// Seed of the hold-out rule (a hash of seed and document id).
    pub holdout_seed: u64,
    /// Fine-tuning: passages per query, its positive and `train_n_passages - 1` hard negatives.
    #[serde(default = "train_n_passages")]
    pub train_n_passages: usize,
    /// Fine-tuning: query length with [CLS] and [SEP] (longer queries are cut).
    #[serde(default = "query_max_len")]
    pub query_max_len: usize,
    /// Fine-tuning: passage length with [CLS] and [SEP] (longer passages are cut).
    #[serde(default = "passage_max_len")]
    pub passage_max_len: usize,
    /// Fine-tuning: what joins a passage's title and text: "space" ("title text") or "sep" (the
    /// tokenizer's separator token, "title[SEP]text", as Tevatron's MS MARCO preprocessing). Saved in
    /// the model folder (condenser_retriever.json), so `eval`, `mine` and `encode` join them the same way.
    #[serde(default)]
    pub title_separator: crate::model::retriever::TitleSeparator,
}

fn train_n_passages() -> usize {
    8
}

fn query_max_len() -> usize {
    32
}

fn passage_max_len() -> usize {
    128
}

fn temperature() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the head's MLM loss (the early layer's tokens and the last layer's [CLS]).
    pub head_weight: f64,
    /// Weight of the last layer's own MLM loss (with model.late_mlm).
    pub late_weight: f64,
    /// coCondenser: weight of the contrastive loss.
    pub co_weight: f64,
    /// coCondenser: split the batch into chunks of this many spans (gradient cache); 0 = no cache.
    pub cache_chunk_size: usize,
    /// coCondenser with the cache: chunk i's MLM loss (a mean over its masked tokens) is scaled by
    /// mlm_weight x rows_i / 2B, so with 1.0 (ours) the MLM term is a row-weighted sum of per-chunk token
    /// means: the uncached weight, and the uncached mean over the batch's masked tokens only when every
    /// chunk holds the same share of them as of rows. The original coCondenser code's cache path amounts
    /// to 2.0, which produced the released checkpoints.
    pub mlm_weight: f64,
    /// Fine-tuning: scores are dot products divided by this.
    #[serde(default = "temperature")]
    pub temperature: f64,
    /// Fine-tuning with several ranks: true = every query's negatives include every rank's passages
    /// (the global batch, exact: N ranks equal one process with the whole batch); false = only its own
    /// rank's passages, Tevatron's default (`negatives_x_device` off), each rank's loss the mean over
    /// its queries and the gradients averaged over ranks. One process: no difference.
    #[serde(default = "yes")]
    pub negatives_across_ranks: bool,
    /// Fine-tuning: "dot" (dot products of the [CLS] vectors, Tevatron's) or "cos" (cosine: the
    /// vectors normalised to unit length, sentence-transformers' default loss). Saved in the model
    /// folder: eval and mine search with it, encode writes unit vectors, and sentence-transformers
    /// loads a Normalize module.
    #[serde(default)]
    pub similarity: crate::model::retriever::Similarity,
    /// Fine-tuning with similarity "cos": scores are cosines times this (sentence-transformers' scale;
    /// 20 = temperature 0.05), then divided by loss.temperature.
    #[serde(default = "cos_scale")]
    pub cos_scale: f64,
}

impl LossConfig {
    /// What fine-tuning divides its similarities by: loss.temperature, or for cosines
    /// loss.temperature / loss.cos_scale.
    pub fn score_divisor(&self) -> f64 {
        match self.similarity {
            crate::model::retriever::Similarity::Dot => self.temperature,
            crate::model::retriever::Similarity::Cos => self.temperature / self.cos_scale,
        }
    }
}

fn cos_scale() -> f64 {
    20.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate (AdamW), reached at the end of the warm-up.
    pub lr: f64,
    /// AdamW's decoupled weight decay (not on biases and LayerNorm weights).
    pub weight_decay: f64,
    /// AdamW's first-moment decay.
    pub beta1: f64,
    /// AdamW's second-moment decay.
    pub beta2: f64,
    /// AdamW's denominator term (at least the smallest normal fp32).
    pub eps: f64,
    /// Gradient-norm clipping; 0 = off.
    pub max_grad_norm: f64,
    /// Share of the total steps spent warming the learning rate up linearly; then linear decay to 0.
    pub warmup_ratio: f64,
    /// Passes over the data (ignored when max_steps > 0).
    pub epochs: usize,
    /// Stop after this many optimizer steps (0 = run `epochs`).
    pub max_steps: usize,
    /// Condenser stage only: micro-batches per optimizer step.
    pub grad_accum: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seed of every random draw (data order, masks, dropout, head initialisation).
    pub seed: u64,
    /// Write a checkpoint every N steps (and at the end); 0 = only at the end.
    pub save_every: usize,
    /// Log metrics every N steps.
    pub log_every: usize,
    /// Keep only the newest N step checkpoints (the final one is always kept).
    pub keep_checkpoints: usize,
    /// Matrix work in "bf16" or "fp32"; "auto" = bf16 on CUDA, fp32 on the CPU. Master weights,
    /// LayerNorm and losses stay fp32.
    #[serde(default)]
    pub precision: crate::model::Precision,
    /// The residual stream (LayerNorm outputs and the additions into them) with bf16 matrix work: "fp32"
    /// as under the reference's autocast (default), or "bf16".
    #[serde(default)]
    pub residual: crate::model::Residual,
    /// Let libtorch run attention through cuDNN on CUDA (its choice); false = flash or
    /// memory-efficient attention only, which plan nothing per batch shape.
    #[serde(default = "yes")]
    pub cudnn_attention: bool,
    /// Pack each batch's real tokens into one row, no padding (each sequence attends within itself),
    /// instead of padding every row to the batch's longest. The same losses within float rounding; on
    /// the CPU (and in fp32) each sequence's attention runs apart; on CUDA in bf16 it goes through
    /// FlashAttention's variable-length kernel, which has not yet run on a GPU here. Not measured
    /// faster, so the default stays false.
    #[serde(default)]
    pub unpad: bool,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            stage: Stage::Condenser,
            model: ModelConfig {
                skip_from: None,
                n_head_layers: 2,
                late_mlm: true,
            },
            data: DataConfig {
                max_len: 128,
                batch_size: 128,
                mlm_probability: 0.15,
                pad_to_max_len: false,
                pad_to_multiple_of: 1,
                shuffle_buffer: 10_000,
                group_by_length: 0,
                prefetch: 4,
                holdout_fraction: 0.0,
                holdout_seed: 42,
                train_n_passages: 8,
                query_max_len: 32,
                passage_max_len: 128,
                title_separator: crate::model::retriever::TitleSeparator::Space,
            },
            loss: LossConfig {
                head_weight: 1.0,
                late_weight: 1.0,
                co_weight: 1.0,
                cache_chunk_size: 0,
                mlm_weight: 1.0,
                temperature: 1.0,
                negatives_across_ranks: true,
                similarity: crate::model::retriever::Similarity::Dot,
                cos_scale: 20.0,
            },
            optim: OptimConfig {
                lr: 1e-4,
                weight_decay: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                max_grad_norm: 1.0,
                warmup_ratio: 0.1,
                epochs: 8,
                max_steps: 0,
                grad_accum: 1,
            },
            run: RunConfig {
                seed: 42,
                save_every: 0,
                log_every: 10,
                keep_checkpoints: 2,
                precision: crate::model::Precision::Auto,
                residual: crate::model::Residual::Fp32,
                cudnn_attention: true,
                unpad: false,
            },
        }
    }
}

impl TrainConfig {
    /// `condenser finetune`'s starting point: Tevatron's defaults where they differ from
    /// pre-training's (no weight decay; 8 queries of 8 passages; 3 epochs; lr 5e-6, the papers' MS
    /// MARCO setting).
    pub fn finetune_defaults() -> Self {
        let mut c = TrainConfig {
            stage: Stage::Finetune,
            ..TrainConfig::default()
        };
        c.data.batch_size = 8;
        c.optim.lr = 5e-6;
        c.optim.weight_decay = 0.0;
        c.optim.epochs = 3;
        c
    }

    /// Reads a TOML file (missing keys keep their defaults; unknown keys are errors) and applies
    /// `--set key=value` overrides.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        Self::load_over(TrainConfig::default(), path, overrides)
    }

    /// As `load`, over a base configuration (a resumed checkpoint's).
    pub fn load_over(base: TrainConfig, path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut value = toml::Value::try_from(base)?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let file: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{}: not valid TOML", path.display()))?;
            merge(&mut value, toml::Value::Table(file), "")
                .with_context(|| path.display().to_string())?;
        }
        for o in overrides {
            let (key, raw) = o
                .split_once('=')
                .with_context(|| format!("--set {o:?}: expected section.key=value"))?;
            let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
                Ok(mut t) => t.remove("v").expect("just parsed"),
                Err(_) => toml::Value::String(raw.to_string()),
            };
            let mut patch = parsed;
            for part in key.trim().split('.').rev() {
                let mut t = toml::Table::new();
                t.insert(part.to_string(), patch);
                patch = toml::Value::Table(t);
            }
            merge(&mut value, patch, "").with_context(|| format!("--set {o}"))?;
        }
        let cfg: TrainConfig = value.try_into().context("invalid training configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses settings that would fail later or leave a run that cannot be resumed (an infinite
    /// learning rate writes a "last good" checkpoint of infinities); each message says what is allowed.
    pub fn validate(&self) -> Result<()> {
        self.validate_data()?;
        self.validate_optim()?;
        self.validate_loss_and_model()
    }

    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        if d.batch_size == 0 || d.max_len < 3 || d.prefetch == 0 {
            bail!("data.batch_size and data.prefetch must be positive and data.max_len at least 3");
        }
        if d.prefetch > 1024 {
            bail!(
                "data.prefetch must be at most 1024 batches (the channel is allocated up front), got {}",
                d.prefetch
            );
        }
        if d.pad_to_multiple_of == 0 || d.pad_to_multiple_of > d.max_len {
            bail!(
                "data.pad_to_multiple_of must be in [1, data.max_len = {}] (1 = pad to the longest row), got {}",
                d.max_len,
                d.pad_to_multiple_of
            );
        }
        in_range("data.mlm_probability", d.mlm_probability, 0.0, 1.0, false)?;
        if d.train_n_passages == 0 || d.query_max_len < 3 || d.passage_max_len < 3 {
            bail!("data.train_n_passages must be at least 1 and data.query_max_len and data.passage_max_len at least 3");
        }
        in_range(
            "data.holdout_fraction",
            d.holdout_fraction,
            0.0,
            1.0,
            false,
        )
        .context("data.holdout_fraction is the share of documents held out of training: 1 would leave none")?;
        Ok(())
    }

    fn validate_optim(&self) -> Result<()> {
        let o = &self.optim;
        if o.grad_accum == 0 {
            bail!("optim.grad_accum must be at least 1");
        }
        if self.stage == Stage::Finetune && o.grad_accum != 1 {
            bail!(
                "optim.grad_accum = {} when fine-tuning: the in-batch negatives are the other queries' passages of \
                 the same batch, so accumulating micro-batches would change the loss; use loss.cache_chunk_size \
                 (gradient cache) to fit large batches instead",
                o.grad_accum
            );
        }
        if self.stage == Stage::Cocondenser && o.grad_accum != 1 {
            bail!(
                "optim.grad_accum = {} with the cocondenser stage: the contrastive loss needs every span of \
                 the batch at once (the negatives are the other documents of the same batch), so accumulating \
                 micro-batches would change the loss, not just the memory; use loss.cache_chunk_size \
                 (gradient cache) to fit large batches instead",
                o.grad_accum
            );
        }
        // The update runs in fp32: a value past f32::MAX becomes infinite there.
        let f32_max = f32::MAX as f64;
        in_range("optim.lr", o.lr, 0.0, f32_max, true)?;
        in_range("optim.weight_decay", o.weight_decay, 0.0, f32_max, true)?;
        in_range("optim.max_grad_norm", o.max_grad_norm, 0.0, f32_max, true)
            .context("optim.max_grad_norm = 0 turns clipping off")?;
        // eps > 0 keeps the update finite where the second moment is 0 (also for skipped steps); below
        // f32::MIN_POSITIVE it would be 0 in fp32.
        if !(o.eps.is_finite() && o.eps >= f32::MIN_POSITIVE as f64) {
            bail!(
                "optim.eps must be positive: a finite number of at least {:e} (the smallest normal fp32), got {}",
                f32::MIN_POSITIVE,
                o.eps
            );
        }
        in_range("optim.beta1", o.beta1, 0.0, 1.0, false)?;
        in_range("optim.beta2", o.beta2, 0.0, 1.0, false)?;
        in_range("optim.warmup_ratio", o.warmup_ratio, 0.0, 1.0, true)?;
        if o.epochs == 0 && o.max_steps == 0 {
            bail!("set optim.epochs or optim.max_steps");
        }
        if o.max_steps as u64 > MAX_STEPS {
            bail!(
                "optim.max_steps must be at most {MAX_STEPS}, got {}",
                o.max_steps
            );
        }
        Ok(())
    }

    fn validate_loss_and_model(&self) -> Result<()> {
        let l = &self.loss;
        for (key, v) in [
            ("loss.head_weight", l.head_weight),
            ("loss.late_weight", l.late_weight),
            ("loss.co_weight", l.co_weight),
            ("loss.mlm_weight", l.mlm_weight),
        ] {
            in_range(key, v, 0.0, f32::MAX as f64, true)?;
        }
        if !(l.temperature.is_finite() && l.temperature > 0.0) {
            bail!(
                "loss.temperature must be a positive finite number, got {}",
                l.temperature
            );
        }
        if !(l.cos_scale.is_finite() && l.cos_scale > 0.0) {
            bail!(
                "loss.cos_scale must be a positive finite number, got {}",
                l.cos_scale
            );
        }
        let m = &self.model;
        if m.n_head_layers > crate::model::config::MAX_LAYERS as usize {
            bail!(
                "model.n_head_layers must be at most {}, got {}",
                crate::model::config::MAX_LAYERS,
                m.n_head_layers
            );
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }
}

/// The most optimizer steps a run may have (`optim.max_steps`, a checkpoint's step): far beyond any
/// real run, small enough that step arithmetic never overflows.
pub const MAX_STEPS: u64 = 1_000_000_000;

/// `value` must be a finite number in [lo, hi] (`hi_inclusive`) or [lo, hi); NaN and infinities never
/// pass. The message names the key, what is allowed and the value.
fn in_range(key: &str, value: f64, lo: f64, hi: f64, hi_inclusive: bool) -> Result<()> {
    let ok = value.is_finite()
        && value >= lo
        && if hi_inclusive {
            value <= hi
        } else {
            value < hi
        };
    if !ok {
        let close = if hi_inclusive { ']' } else { ')' };
        let hi = if hi < 1e6 {
            hi.to_string()
        } else {
            format!("{hi:e}")
        };
        bail!("{key} must be a finite number in [{lo}, {hi}{close}, got {value}");
    }
    Ok(())
}

/// Keys whose default is "unset" (`Option`), so the serialized defaults do not list them.
const OPTIONAL_KEYS: &[&str] = &["model.skip_from"];

/// Copies `patch` into `base`; a key `base` does not have is an error that names it.
fn merge(base: &mut toml::Value, patch: toml::Value, at: &str) -> Result<()> {
    match (base, patch) {
        (toml::Value::Table(b), toml::Value::Table(p)) => {
            for (k, v) in p {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &path)?,
                    // Unset optional keys are absent from the serialized defaults.
                    None if OPTIONAL_KEYS.contains(&path.as_str()) => {
                        b.insert(k, v);
                    }
                    None => {
                        let known: Vec<&String> = b.keys().collect();
                        bail!("unknown configuration key `{path}` (known here: {known:?})");
                    }
                }
            }
            Ok(())
        }
        (slot, v) => {
            // Integers are accepted where floats are expected (lr = 1 is fine).
            *slot = match (&*slot, v) {
                (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
                (_, v) => v,
            };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_unknown_keys() {
        let c = TrainConfig::load(
            None,
            &[
                "optim.lr=2e-4".into(),
                "stage=\"cocondenser\"".into(),
                "data.batch_size=8".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optim.lr, 2e-4);
        assert_eq!(c.stage, Stage::Cocondenser);
        assert_eq!(c.data.batch_size, 8);
        let bare =
            TrainConfig::load(None, &["stage=cocondenser".into(), "optim.lr=1".into()]).unwrap();
        assert_eq!(bare.stage, Stage::Cocondenser);
        assert_eq!(bare.optim.lr, 1.0);
        let err = format!(
            "{:#}",
            TrainConfig::load(None, &["optim.lrr=1".into()]).unwrap_err()
        );
        assert!(err.contains("optim.lrr"), "{err}");
        let err = format!(
            "{:#}",
            TrainConfig::load(
                None,
                &["stage=cocondenser".into(), "optim.grad_accum=2".into()]
            )
            .unwrap_err()
        );
        assert!(err.contains("gradient cache"), "{err}");
        for bad in ["optim.eps=0", "optim.lr=-1", "optim.weight_decay=-0.1"] {
            let err = format!("{:#}", TrainConfig::load(None, &[bad.into()]).unwrap_err());
            let key = bad.split('=').next().unwrap();
            assert!(err.contains(&format!("{key} must be")), "{bad}: {err}");
        }
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for name in [
            "condenser-base.toml",
            "cocondenser-base.toml",
            "demo.toml",
            "demo-cocondenser.toml",
            "demo-finetune.toml",
            "finetune-msmarco.toml",
        ] {
            TrainConfig::load(Some(&dir.join(name)), &[])
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }
}
