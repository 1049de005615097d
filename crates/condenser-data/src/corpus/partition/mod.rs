//! Partitions of one input for `prepare --partition K/N` and `encode`'s parts: byte ranges of a line
//! file (cut at line starts), and stream ranges of a multi-stream bzip2 MediaWiki dump (cut at stream
//! starts). Other formats take every N-th record (`formats::read_input_part`).

pub mod byte_ranges;
pub mod stream_ranges;
