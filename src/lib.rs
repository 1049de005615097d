//! `condenser`: Condenser and coCondenser pre-training of dense-retrieval encoders.
//!
//! The data flow (see ARCHITECTURE.md): raw text -> `prepare` (sentences, tokens, spans, Parquet shards) ->
//! `inspect` -> `train` (Condenser, then coCondenser) -> a Hugging Face checkpoint -> `encode` / `eval`.
//! The data stages (`corpus`, `prepare`, `shards`, `inspect`, the tokenizer) live in the
//! `condenser-data` crate (crates/condenser-data), which does not link libtorch; they are re-exported
//! here under their own names, so `condenser::prepare` and `crate::corpus` mean what they always did.
//! This crate holds the model, training and evaluation; `src/bin/condenser-torch.rs` is the command
//! line and `src/main.rs` the `condenser` binary that runs the data commands without libtorch.

pub use condenser_data::{
    cli, command, corpus, cputime, inspect, logging, paths, plot, prepare, progress, rng, shards,
    tokenizer,
};

pub mod bench;
pub mod device;
pub mod dist;
pub mod eval;
pub mod ffi;
pub mod model;
pub mod train;
