//! Compressed inputs: `decompress` detects the compression from the magic bytes and picks a decoder;
//! the blocked formats (BGZF, multi-stream bzip2, multi-frame zstd) decode on several threads through
//! `parallel` (splitter -> decoder threads -> in-order reader), each telling where its pieces end;
//! `bz2blocks` makes each block of a bzip2 stream a stream of its own first; `ahead` opens the next
//! input while the current one is read.

pub mod ahead;
pub mod bgzf;
pub mod bz2blocks;
pub mod decompress;
pub mod multibz;
pub mod parallel;
#[cfg(test)]
pub(crate) mod test_data;
pub mod zstdframes;
