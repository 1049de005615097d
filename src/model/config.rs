//! `BertConfig`, deserialized straight from a Hugging Face `config.json` (as candle's bert.rs does).
//! Unknown keys are kept and written back unchanged into every checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_init_range() -> f64 {
    0.02
}
fn default_type_vocab() -> i64 {
    2
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_pad() -> i64 {
    0
}

/// Upper bounds of a config.json's sizes: far above any BERT (bert-large: H 1024, 24 layers; the
/// largest vocabularies about 256k ids), far below what would exhaust memory by a typo.
pub const MAX_VOCAB: i64 = 1 << 22;
pub const MAX_HIDDEN: i64 = 1 << 16;
pub const MAX_LAYERS: i64 = 1024;
pub const MAX_POSITIONS: i64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_pad")]
    pub pad_token_id: i64,
    /// Every other key of the original file (architectures, model_type, torch_dtype, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl BertConfig {
    /// Refuses sequence lengths (each named by its setting, [CLS] and [SEP] included) that the
    /// position table cannot hold: past it the model would index out of its embeddings. Every command
    /// checks its lengths here at start, so no user input reaches the model longer than this.
    pub fn check_lengths(&self, lengths: &[(&str, usize)]) -> anyhow::Result<()> {
        for &(name, len) in lengths {
            if len < 2 {
                anyhow::bail!("{name} {len} is too short: at least 2 ([CLS] and [SEP])");
            }
            if len as i64 > self.max_position_embeddings {
                anyhow::bail!(
                    "{name} {len} exceeds the model's max_position_embeddings {}",
                    self.max_position_embeddings
                );
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a BERT config.json", path.display()))?;
        cfg.validate().with_context(|| path.display().to_string())?;
        Ok(cfg)
    }

    /// Checks the configuration on its own, before anything is allocated from it: sizes positive and
    /// within `LIMITS` (a typo such as `hidden_size: 1200000000` would otherwise try to allocate
    /// terabytes, and `num_hidden_layers: 1000000000` grow until killed), heads dividing the hidden
    /// size, probabilities in [0, 1). `check_weights` then holds it against the weight file.
    pub fn validate(&self) -> Result<()> {
        for (name, v, max) in self.sizes() {
            if v <= 0 || v > max {
                bail!("{name} must be in [1, {max}], got {v}");
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_python") {
            bail!(
                "hidden_act {:?} is not supported (BERT uses the exact, erf-based \"gelu\")",
                self.hidden_act
            );
        }
        for (name, v) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must be in [0, 1), got {v}");
            }
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            bail!(
                "layer_norm_eps must be a positive finite number, got {}",
                self.layer_norm_eps
            );
        }
        if !(self.initializer_range.is_finite() && self.initializer_range >= 0.0) {
            bail!(
                "initializer_range must be a finite number >= 0, got {}",
                self.initializer_range
            );
        }
        Ok(())
    }

    /// The sizes that decide what is allocated, with the largest value accepted for each.
    fn sizes(&self) -> [(&'static str, i64, i64); 7] {
        [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, 4 * MAX_HIDDEN),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
            ("type_vocab_size", self.type_vocab_size, MAX_VOCAB),
        ]
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}
