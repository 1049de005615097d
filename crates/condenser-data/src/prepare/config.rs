//! What a prepare run is asked to do, resolved from the command line (`super::run`) or by
//! `bench prepare`.

use std::path::PathBuf;

use super::segment::SegmentConfig;
use super::OnError;
use crate::corpus::ReadOptions;
use crate::shards::WriterConfig;

/// Everything a prepare run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub tokenizer: PathBuf,
    pub read: ReadOptions,
    pub segment: SegmentConfig,
    pub writer: WriterConfig,
    pub partition: Option<[u32; 2]>,
    /// A multi-stream bzip2 dump's `-index.txt.bz2`: where a partition's streams start, unscanned.
    pub bz2_index: Option<PathBuf>,
    pub threads: usize,
    pub on_error: OnError,
    pub overwrite: bool,
    /// Print each completed shard's path on stdout (off for benchmarks).
    pub print_shards: bool,
}
