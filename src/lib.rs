//! `condenser`: Condenser and coCondenser pre-training of dense-retrieval encoders.
//!
//! The data flow (see ARCHITECTURE.md): raw text -> `prepare` (sentences, tokens, spans, Parquet shards) ->
//! `inspect` -> `train` (Condenser, then coCondenser) -> a Hugging Face checkpoint -> `encode` / `eval`.
//! This crate holds every stage; `main.rs` is only the command line.

pub mod bench;
pub mod cli;
pub mod corpus;
pub mod cputime;
pub mod device;
pub mod dist;
pub mod eval;
pub mod ffi;
pub mod inspect;
pub mod logging;
pub mod model;
pub mod paths;
pub mod plot;
pub mod prepare;
pub mod progress;
pub mod rng;
pub mod shards;
pub mod tokenizer;
pub mod train;
