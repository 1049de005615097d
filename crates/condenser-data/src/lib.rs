//! `condenser-data`: the data side of `condenser`, without libtorch.
//!
//! raw text -> `corpus` (formats, decompression, partitions) -> `prepare` (sentences, tokens, spans)
//! -> `shards` (Parquet span shards and their manifest) -> `inspect`. The `condenser` crate re-exports
//! every module here under its own name (`condenser::prepare`, ...), and its `condenser` binary runs
//! `prepare` and `inspect` from this crate alone, so they start without loading libtorch.

pub mod cli;
pub mod command;
pub mod corpus;
pub mod cputime;
pub mod inspect;
pub mod logging;
pub mod paths;
pub mod plot;
pub mod prepare;
pub mod progress;
pub mod rng;
pub mod shards;
pub mod tokenizer;
