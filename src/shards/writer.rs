//! Writes rows into size-rotated Parquet shards, each complete or absent.
//!
//! A shard is written under a temporary name, fsynced and renamed (then the folder is fsynced), so a
//! crash at any moment leaves only complete shards under final names. Row groups are flushed by bytes
//! (`in_progress_size`), which bounds the writer's memory, as arrow-rs's "memory limiting" example does.
//! Rotation is decided from byte counts of a deterministic stream of batches, so the same input gives
//! the same shard boundaries and bytes for any thread count.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Int32Builder, ListBuilder, RecordBatch, StringBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use super::manifest::ShardEntry;
use super::schema::Segmented;
use super::schema::{shard_schema, SPANS};

pub use super::manifest::WriterConfig;

/// Hashes and counts the bytes on their way to the file.
struct HashingFile {
    file: File,
    hasher: Sha256,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// One shard being written.
pub struct ShardWriter {
    config: WriterConfig,
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: ArrowWriter<HashingFile>,
    pending: Vec<Segmented>,
    rows: u64,
    spans: u64,
    tokens: u64,
    pairable: u64,
}

pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("zstd level 3 is valid"),
        ))
        .set_dictionary_enabled(false)
        .set_column_statistics_enabled(
            ColumnPath::from(vec![
                SPANS.to_string(),
                "list".into(),
                "item".into(),
                "list".into(),
                "item".into(),
            ]),
            EnabledStatistics::None,
        )
        .set_statistics_enabled(EnabledStatistics::None)
        // Row groups are cut by bytes (see `push`), never by the row-count default.
        .set_max_row_group_row_count(None)
        .set_created_by(format!("condenser {}", env!("CARGO_PKG_VERSION")))
        .build()
}

impl ShardWriter {
    /// Starts `path` (written as `.<name>.tmp` beside it until `close`).
    pub fn create(path: &Path, config: WriterConfig) -> Result<Self> {
        let name = path
            .file_name()
            .context("shard path has no file name")?
            .to_string_lossy();
        let tmp_path = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp_path)
            .with_context(|| format!("{}: cannot create", tmp_path.display()))?;
        let props = writer_properties();
        let writer = ArrowWriter::try_new(
            HashingFile {
                file,
                hasher: Sha256::new(),
            },
            shard_schema(),
            Some(props),
        )
        .with_context(|| format!("{}: cannot start the Parquet file", tmp_path.display()))?;
        Ok(ShardWriter {
            config,
            final_path: path.to_path_buf(),
            tmp_path,
            writer,
            pending: Vec::new(),
            rows: 0,
            spans: 0,
            tokens: 0,
            pairable: 0,
        })
    }

    /// Adds a row; returns true once the shard has reached its size (the caller then closes it).
    pub fn push(&mut self, row: Segmented) -> Result<bool> {
        self.pending.push(row);
        if self.pending.len() < self.config.batch_rows {
            return Ok(false);
        }
        self.write_pending()?;
        Ok(self.size_estimate() >= self.config.shard_bytes)
    }

    fn size_estimate(&self) -> u64 {
        self.writer.bytes_written() as u64 + self.writer.in_progress_size() as u64
    }

    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = to_batch(&self.pending)?;
        for row in &self.pending {
            self.rows += 1;
            self.spans += row.spans.len() as u64;
            self.tokens += row.num_tokens as u64;
            self.pairable += (row.spans.len() >= 2) as u64;
        }
        self.pending.clear();
        self.writer
            .write(&batch)
            .with_context(|| format!("{}: write failed", self.tmp_path.display()))?;
        if self.writer.in_progress_size() >= self.config.row_group_bytes {
            self.writer
                .flush()
                .with_context(|| format!("{}: write failed", self.tmp_path.display()))?;
        }
        Ok(())
    }

    /// Finishes the file, fsyncs it, renames it to its final name and fsyncs the folder.
    /// Returns the shard's manifest entry (`file` is the file name).
    pub fn close(mut self) -> Result<ShardEntry> {
        self.write_pending()?;
        let meta = self
            .writer
            .finish()
            .with_context(|| format!("{}: cannot finish", self.tmp_path.display()))?;
        let row_groups = meta.num_row_groups() as u64;
        // `finish` wrote the footer; the writer is done, its sink is ours to fsync and hash.
        let inner = self.writer.inner_mut();
        inner
            .file
            .sync_all()
            .with_context(|| format!("{}: fsync failed", self.tmp_path.display()))?;
        let bytes = inner
            .file
            .metadata()
            .with_context(|| format!("{}: cannot stat", self.tmp_path.display()))?
            .len();
        let sha256 = hex(&std::mem::take(&mut inner.hasher).finalize());
        std::fs::rename(&self.tmp_path, &self.final_path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp_path.display(),
                self.final_path.display()
            )
        })?;
        sync_dir(self.final_path.parent().unwrap_or(Path::new(".")))?;
        let file = self
            .final_path
            .file_name()
            .expect("a shard path has a file name");
        Ok(ShardEntry {
            file: file.to_string_lossy().into_owned(),
            rows: self.rows,
            spans: self.spans,
            tokens: self.tokens,
            bytes,
            row_groups,
            sha256,
            pairable: Some(self.pairable),
        })
    }

    /// Drops the temporary file (an aborted run).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp_path);
    }
}

pub use super::fs::{hex, sync_dir};

/// Rows -> one Arrow record batch of the shard schema.
pub fn to_batch(rows: &[Segmented]) -> Result<RecordBatch> {
    let mut ids = StringBuilder::new();
    let span_field = Arc::new(arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Int32,
        false,
    ));
    let inner = ListBuilder::new(Int32Builder::new()).with_field(span_field);
    let spans_field = match shard_schema().field(1).data_type() {
        arrow::datatypes::DataType::List(f) => f.clone(),
        _ => unreachable!("spans is a list"),
    };
    let mut spans = ListBuilder::new(inner).with_field(spans_field);
    let mut num_tokens = Int32Builder::new();
    for row in rows {
        ids.append_value(&row.doc_id);
        for span in &row.spans {
            spans
                .values()
                .values()
                .append_slice(bytemuck_u32_as_i32(span));
            spans.values().append(true);
        }
        spans.append(true);
        num_tokens
            .append_value(i32::try_from(row.num_tokens).context("document has over 2^31 tokens")?);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.finish()),
        Arc::new(spans.finish()),
        Arc::new(num_tokens.finish()),
    ];
    Ok(RecordBatch::try_new(shard_schema(), columns)?)
}

fn bytemuck_u32_as_i32(ids: &[u32]) -> &[i32] {
    // Token ids are < 2^31 (vocabularies are far smaller); u32 and i32 share size and alignment.
    debug_assert!(ids.iter().all(|&i| i <= i32::MAX as u32));
    // SAFETY: same size and alignment; every bit pattern is a valid i32.
    unsafe { std::slice::from_raw_parts(ids.as_ptr() as *const i32, ids.len()) }
}
