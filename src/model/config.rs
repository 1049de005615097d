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
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a BERT config.json", path.display()))?;
        cfg.validate().with_context(|| path.display().to_string())?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
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
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v <= 0 {
                bail!("{name} must be positive, got {v}");
            }
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The config as saved in our checkpoints: `BertForMaskedLM`, model_type bert.
    pub fn to_checkpoint_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a config serializes");
        v["architectures"] = serde_json::json!(["BertForMaskedLM"]);
        v["model_type"] = serde_json::json!("bert");
        v
    }
}
