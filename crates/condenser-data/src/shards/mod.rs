//! Span shards: the Arrow schema, the Parquet writer (atomic, size-rotated), the reader and the
//! manifest. The hand-off between `prepare` and everything after it (ARCHITECTURE.md).

pub mod fs;
pub mod manifest;
pub mod reader;
pub mod schema;
pub mod writer;

pub use manifest::{Manifest, ShardEntry};
pub use reader::{read_shard, ShardRow};
pub use writer::{ShardWriter, WriterConfig};
