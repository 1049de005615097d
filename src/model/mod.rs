//! The model in tch: BERT backbone (`bert`), Condenser head (`condenser`), Hugging Face config and
//! checkpoint layout (`config`, `hf`). ARCHITECTURE.md: `model::Condenser`, between the collator and the
//! objective.

pub mod bert;
pub mod condenser;
pub mod config;
pub mod export;
pub mod hf;
pub mod retriever;

pub use bert::Ctx;
pub use bert::{Mask, Packing};
pub use condenser::{Condenser, CondenserOutput, HeadConfig, Labels};
pub use config::BertConfig;

/// The kind matrix work runs in on `device`: fp32 on CPU, bf16 on CUDA (fp32 master weights).
pub fn compute_kind(device: tch::Device) -> tch::Kind {
    Precision::Auto.kind(device)
}

/// What matrix work runs in (`run.precision`, `--precision`). Master weights, LayerNorm, softmax
/// statistics and losses stay fp32 whatever the choice.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on CUDA, fp32 on the CPU (exact parity with transformers there).
    #[default]
    Auto,
    Fp32,
    /// bf16 everywhere: on a CPU with AMX or AVX512-BF16 much faster than fp32, as the reference's
    /// autocast does on the CPU.
    Bf16,
}

/// The residual stream's kind (`run.residual`, `--residual`): fp32 as under the reference's autocast, or
/// bf16 (less memory traffic, more rounding). Only matters when matrix work runs in bf16.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Residual {
    #[default]
    Fp32,
    Bf16,
}

impl Residual {
    /// The residual kind when matrix work runs in `kind` (bf16 residual = the matrix kind).
    pub fn kind(self, kind: tch::Kind) -> tch::Kind {
        match self {
            Residual::Fp32 => tch::Kind::Float,
            Residual::Bf16 => kind,
        }
    }
}

impl Precision {
    pub fn kind(self, device: tch::Device) -> tch::Kind {
        match (self, device) {
            (Precision::Fp32, _) | (Precision::Auto, tch::Device::Cpu) => tch::Kind::Float,
            _ => tch::Kind::BFloat16,
        }
    }
}
