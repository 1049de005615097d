//! Hugging Face directories in and out (`load`, `save`).
//!
//! In: `config.json` + `model.safetensors` with `BertModel` names (with or without the `bert.` prefix)
//! or `BertForMaskedLM` names (`cls.predictions.*`), plus our `condenser_head.safetensors` when present
//! (keys `c_head.{i}.<BertLayer name>`, settings in its metadata, as the PyTorch reference writes it).
//! Out: the same layout, written to a temporary folder and renamed into place, so a crash never leaves
//! a half checkpoint under the final name.

pub mod load;
pub mod save;

pub use load::{check_model_dir, header_shapes, load, read_safetensors, Loaded};
pub use save::{is_encoder_weight, safetensors_bytes, save, save_parts};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const HEAD_FILE: &str = "condenser_head.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
