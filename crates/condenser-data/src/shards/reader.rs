//! Reading shards back: an iterator of rows per row group, for `inspect`, training and tests.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::schema::{is_shard_schema, DOC_ID, NUM_TOKENS, SPANS};

/// One document of a shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRow {
    pub doc_id: String,
    pub spans: Vec<Vec<u32>>,
    pub num_tokens: u32,
}

/// Reads every row of a shard (row groups `groups`, or all), checking the schema.
pub fn read_shard(path: &Path, groups: Option<Vec<usize>>) -> Result<Vec<ShardRow>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    if !is_shard_schema(builder.schema()) {
        bail!(
            "{}: schema {:?} is not the shard schema",
            path.display(),
            builder.schema()
        );
    }
    if let Some(g) = groups {
        builder = builder.with_row_groups(g);
    }
    let mut rows = Vec::new();
    for batch in builder.build()? {
        let batch = batch.with_context(|| {
            format!("{}: corrupt data after row {}", path.display(), rows.len())
        })?;
        let ids = batch
            .column_by_name(DOC_ID)
            .context("doc_id")?
            .as_string::<i32>()
            .clone();
        let spans = batch
            .column_by_name(SPANS)
            .context("spans")?
            .as_list::<i32>()
            .clone();
        let num = batch
            .column_by_name(NUM_TOKENS)
            .context("num_tokens")?
            .as_primitive::<Int32Type>()
            .clone();
        for i in 0..batch.num_rows() {
            let doc_spans = spans.value(i);
            let doc_spans = doc_spans.as_list::<i32>();
            let spans: Vec<Vec<u32>> = (0..doc_spans.len())
                .map(|j| {
                    doc_spans
                        .value(j)
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|&v| v as u32)
                        .collect()
                })
                .collect();
            rows.push(ShardRow {
                doc_id: ids.value(i).to_string(),
                spans,
                num_tokens: num.value(i) as u32,
            });
        }
    }
    Ok(rows)
}
