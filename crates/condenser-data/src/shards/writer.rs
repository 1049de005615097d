//! Writes rows into size-rotated Parquet shards, each complete or absent.
//!
//! A shard is written under a temporary name, fsynced and renamed (then the folder is fsynced), so a
//! crash at any moment leaves only complete shards under final names.
//!
//! Row groups are cut from the rows before they are encoded ([`RowGroupCutter`]): consecutive rows
//! until their uncompressed size (4 bytes per token id plus the document id's bytes) reaches
//! `min(row_group_bytes, shard_bytes)`. The cut depends on the row stream alone, so a row group can be
//! encoded and zstd-compressed on any thread ([`RowGroupEncoder`], which `prepare` runs on its worker
//! pool) and the shard file only appends finished row groups ([`ShardWriter::append`]). A shard is
//! closed after the row group that takes it to `shard_bytes` or more: shards exceed `shard_bytes` by
//! up to one row group, and the same input gives the same row groups, shard boundaries and bytes for
//! any thread count.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Int32Builder, ListBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
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
        // Row groups are cut by `RowGroupCutter`, never by the row-count default.
        .set_max_row_group_row_count(None)
        .set_created_by(format!("condenser {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// [`writer_properties`] with the Arrow schema in the key-value metadata, as `ArrowWriter` stores it
/// (so pyarrow, DuckDB and our reader see the same Arrow types).
fn file_properties() -> Arc<WriterProperties> {
    let mut props = writer_properties();
    add_encoded_arrow_schema_to_metadata(&shard_schema(), &mut props);
    Arc::new(props)
}

/// A Parquet file writer of the shard schema over `sink`.
fn file_writer<W: Write + Send>(sink: W) -> parquet::errors::Result<SerializedFileWriter<W>> {
    let props = file_properties();
    let schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&shard_schema())?;
    SerializedFileWriter::new(sink, schema.root_schema_ptr(), props)
}

/// The uncompressed size a row counts for in the row-group cut: 4 bytes per token id plus its
/// document id's bytes.
pub fn row_bytes(row: &Segmented) -> usize {
    row.doc_id.len() + 4 * row.spans.iter().map(Vec::len).sum::<usize>()
}

/// Cuts the row stream into row groups: consecutive rows until their [`row_bytes`] reach
/// `min(row_group_bytes, shard_bytes)`. Greedy from the last cut, so the cuts depend on the rows alone
/// (and a resume that restarts at a shard boundary, which is always a cut, makes the same ones).
#[derive(Debug)]
pub struct RowGroupCutter {
    target: usize,
    rows: Vec<Segmented>,
    bytes: usize,
}

impl RowGroupCutter {
    pub fn new(config: &WriterConfig) -> Self {
        let shard = usize::try_from(config.shard_bytes).unwrap_or(usize::MAX);
        RowGroupCutter {
            target: config.row_group_bytes.min(shard).max(1),
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a row; returns the rows of a row group once they reach the target.
    pub fn push(&mut self, row: Segmented) -> Option<Vec<Segmented>> {
        self.bytes += row_bytes(&row);
        self.rows.push(row);
        if self.bytes >= self.target {
            return self.take();
        }
        None
    }

    /// The rows not yet cut (the last, short row group), if any.
    pub fn take(&mut self) -> Option<Vec<Segmented>> {
        self.bytes = 0;
        match self.rows.is_empty() {
            true => None,
            false => Some(std::mem::take(&mut self.rows)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Encodes and compresses row groups of the shard schema, on any thread.
#[derive(Debug)]
pub struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
}

/// A row group encoded and compressed, ready to be appended to a shard, with its counts.
#[derive(Debug)]
pub struct EncodedRowGroup {
    chunks: Vec<ArrowColumnChunk>,
    rows: u64,
    spans: u64,
    tokens: u64,
    pairable: u64,
}

impl EncodedRowGroup {
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl RowGroupEncoder {
    pub fn new() -> Result<Self> {
        // The factory takes the Parquet schema and properties from a file writer; the column chunks it
        // encodes do not depend on the file they are appended to.
        let template = file_writer(std::io::sink()).context("cannot set up the Parquet encoder")?;
        let schema = shard_schema();
        let factory = ArrowRowGroupWriterFactory::new(&template, schema.clone());
        Ok(RowGroupEncoder { factory, schema })
    }

    /// Encodes `rows` as one row group (dropping them once they are an Arrow batch).
    pub fn encode(&self, rows: Vec<Segmented>) -> Result<EncodedRowGroup> {
        let batch = to_batch(&rows)?;
        let mut group = EncodedRowGroup {
            chunks: Vec::new(),
            rows: rows.len() as u64,
            spans: 0,
            tokens: 0,
            pairable: 0,
        };
        for row in &rows {
            group.spans += row.spans.len() as u64;
            group.tokens += row.num_tokens as u64;
            group.pairable += (row.spans.len() >= 2) as u64;
        }
        drop(rows);
        let mut writers = self.factory.create_column_writers(0)?;
        let mut next = writers.iter_mut();
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, column)? {
                next.next()
                    .context("more Parquet leaves than column writers")?
                    .write(&leaf)?;
            }
        }
        drop(batch);
        group.chunks = writers
            .into_iter()
            .map(|w| w.close())
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        Ok(group)
    }
}

/// One shard being written.
pub struct ShardWriter {
    config: WriterConfig,
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: SerializedFileWriter<HashingFile>,
    /// For [`Self::push`]: rows not yet cut into a row group, and their encoder.
    cutter: RowGroupCutter,
    encoder: Option<RowGroupEncoder>,
    rows: u64,
    spans: u64,
    tokens: u64,
    pairable: u64,
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
        let writer = file_writer(HashingFile {
            file,
            hasher: Sha256::new(),
        })
        .with_context(|| format!("{}: cannot start the Parquet file", tmp_path.display()))?;
        Ok(ShardWriter {
            cutter: RowGroupCutter::new(&config),
            config,
            final_path: path.to_path_buf(),
            tmp_path,
            writer,
            encoder: None,
            rows: 0,
            spans: 0,
            tokens: 0,
            pairable: 0,
        })
    }

    /// Adds a row, cutting and encoding row groups on this thread; returns true once the shard has
    /// reached its size (the caller then closes it). `prepare` cuts and encodes on its worker pool
    /// instead and calls [`Self::append`].
    pub fn push(&mut self, row: Segmented) -> Result<bool> {
        match self.cutter.push(row) {
            Some(rows) => self.encode_and_append(rows),
            None => Ok(false),
        }
    }

    fn encode_and_append(&mut self, rows: Vec<Segmented>) -> Result<bool> {
        let encoder = match self.encoder.as_ref() {
            Some(e) => e,
            None => self.encoder.insert(RowGroupEncoder::new()?),
        };
        let group = encoder
            .encode(rows)
            .with_context(|| format!("{}: cannot encode a row group", self.tmp_path.display()))?;
        self.append(group)
    }

    /// Appends an encoded row group; returns true once the shard has reached its size (the caller
    /// then closes it).
    pub fn append(&mut self, group: EncodedRowGroup) -> Result<bool> {
        let context = || format!("{}: write failed", self.tmp_path.display());
        let mut row_group = self.writer.next_row_group().with_context(context)?;
        for chunk in group.chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .with_context(context)?;
        }
        row_group.close().with_context(context)?;
        self.rows += group.rows;
        self.spans += group.spans;
        self.tokens += group.tokens;
        self.pairable += group.pairable;
        Ok(self.writer.bytes_written() as u64 >= self.config.shard_bytes)
    }

    /// Finishes the file, fsyncs it, renames it to its final name and fsyncs the folder.
    /// Returns the shard's manifest entry (`file` is the file name).
    pub fn close(mut self) -> Result<ShardEntry> {
        if let Some(rows) = self.cutter.take() {
            self.encode_and_append(rows)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, ids: usize) -> Segmented {
        Segmented {
            doc_id: format!("d{i}"),
            spans: vec![vec![1000; ids]],
            num_tokens: ids,
        }
    }

    #[test]
    fn row_groups_are_cut_by_uncompressed_size_from_the_last_cut() {
        let config = WriterConfig {
            shard_bytes: 1 << 20,
            row_group_bytes: 100,
            ..Default::default()
        };
        let mut cutter = RowGroupCutter::new(&config);
        // Rows of 2 + 4 * 10 = 42 bytes: a cut after every third row (126 >= 100).
        let mut cuts = Vec::new();
        for i in 0..8 {
            if let Some(rows) = cutter.push(row(i, 10)) {
                cuts.push(rows.iter().map(|r| r.doc_id.clone()).collect::<Vec<_>>());
            }
        }
        assert_eq!(cuts, [["d0", "d1", "d2"], ["d3", "d4", "d5"]]);
        assert_eq!(cutter.take().unwrap().len(), 2);
        assert!(cutter.take().is_none() && cutter.is_empty());
        // A shard smaller than a row group caps the target.
        let small = WriterConfig {
            shard_bytes: 50,
            ..config
        };
        assert_eq!(
            RowGroupCutter::new(&small).push(row(0, 12)).unwrap().len(),
            1
        );
    }

    #[test]
    fn encoded_row_groups_append_into_a_readable_shard() {
        let dir = tempfile::tempdir().unwrap();
        let config = WriterConfig {
            row_group_bytes: 4000,
            ..Default::default()
        };
        let encoder = RowGroupEncoder::new().unwrap();
        let mut cutter = RowGroupCutter::new(&config);
        let path = dir.path().join("shard-00000.parquet");
        let mut shard = ShardWriter::create(&path, config).unwrap();
        for i in 0..300 {
            if let Some(rows) = cutter.push(row(i, 1 + i % 50)) {
                shard.append(encoder.encode(rows).unwrap()).unwrap();
            }
        }
        shard
            .append(encoder.encode(cutter.take().unwrap()).unwrap())
            .unwrap();
        let entry = shard.close().unwrap();
        assert_eq!(entry.rows, 300);
        assert!(entry.row_groups > 1, "{entry:?}");
        let file = File::open(&path).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.schema().as_ref(), shard_schema().as_ref());
        assert_eq!(reader.metadata().num_row_groups() as u64, entry.row_groups);
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 300);
    }
}
