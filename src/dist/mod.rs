//! Data-parallel training across processes: PyTorch's c10d collectives (Gloo on the CPU, NCCL on CUDA)
//! behind a safe API. DESIGN.md: train::Trainer -> dist::c10d (gradient all-reduce, [CLS] all-gather).

pub mod c10d;
