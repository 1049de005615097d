//! The model in tch: BERT backbone (`bert`), Condenser head (`condenser`), Hugging Face config and
//! checkpoint layout (`config`, `hf`). DESIGN.md: `model::Condenser`, between the collator and the
//! objective.

pub mod bert;
pub mod condenser;
pub mod config;
pub mod hf;

pub use bert::Ctx;
pub use bert::Mask;
pub use condenser::{Condenser, CondenserOutput, HeadConfig, Labels};
pub use config::BertConfig;

/// The kind matrix work runs in on `device`: fp32 on CPU, bf16 on CUDA (fp32 master weights).
pub fn compute_kind(device: tch::Device) -> tch::Kind {
    match device {
        tch::Device::Cpu => tch::Kind::Float,
        _ => tch::Kind::BFloat16,
    }
}
