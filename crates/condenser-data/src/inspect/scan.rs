//! Reading the shards: which files the arguments name (`resolve`) and one pass over each shard's
//! record batches (`read_one`), memory bounded by the histograms, not the corpus.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::Rng;

use super::stats::{Accumulator, Report, Sample};
use crate::shards::manifest::Manifest;
use crate::shards::schema::{is_shard_schema, NUM_TOKENS, SPANS};

/// Where the shards come from, and the manifest that describes them (if any).
pub struct Source {
    pub shards: Vec<PathBuf>,
    pub manifest: Option<(PathBuf, Manifest)>,
}

/// The shards the arguments name: folders (their manifest's list, else their .parquet files), files,
/// or `-` for paths on stdin; and the manifest that describes them.
pub fn resolve(paths: &[String]) -> Result<Source> {
    let mut shards = Vec::new();
    let mut manifest = None;
    let mut add_dir = |dir: &Path, shards: &mut Vec<PathBuf>| -> Result<()> {
        match Manifest::load(dir)? {
            Some(m) => {
                shards.extend(m.shards.iter().map(|s| dir.join(&s.file)));
                manifest = Some((dir.to_path_buf(), m));
            }
            None => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                    .with_context(|| format!("{}: cannot list", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                    .collect();
                found.sort();
                shards.extend(found);
            }
        }
        Ok(())
    };
    for p in paths {
        if p == "-" {
            for line in std::io::stdin().lock().lines() {
                let line = line.context("reading shard paths from stdin")?;
                if !line.trim().is_empty() {
                    shards.push(PathBuf::from(line.trim()));
                }
            }
        } else if Path::new(p).is_dir() {
            add_dir(Path::new(p), &mut shards)?;
        } else if Path::new(p).exists() {
            shards.push(PathBuf::from(p));
        } else {
            bail!("{p}: no such file or folder (give a prepared folder, shard files, or - for paths on stdin)");
        }
    }
    // Shards named one by one: their folder's manifest, when there is one, describes them.
    if manifest.is_none() {
        if let Some(dir) = shards.first().and_then(|s| s.parent()) {
            if let Ok(Some(m)) = Manifest::load(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                manifest = Some((dir.to_path_buf(), m));
            }
        }
    }
    Ok(Source { shards, manifest })
}

/// Per-shard counts as read.
#[derive(Default)]
pub struct ShardCounts {
    pub rows: u64,
    pub spans: u64,
    pub tokens: u64,
    pub pairable: u64,
}

/// Streams one shard into `acc`, counting its rows, spans and tokens; ids outside the vocabulary and
/// inconsistent `num_tokens` become findings.
pub fn read_one<R: parquet::file::reader::ChunkReader + 'static>(
    shard: &Path,
    source: R,
    acc: &mut Accumulator,
    report: &mut Report,
) -> Result<ShardCounts> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(source)
        .with_context(|| format!("{}: not a readable Parquet file", shard.display()))?;
    if !is_shard_schema(builder.schema()) {
        bail!(
            "{}: schema is not the shard schema (schemas/shard.schema.json)",
            shard.display()
        );
    }
    let mut counts = ShardCounts::default();
    let mut bad_ids = 0u64;
    let mut bad_num = 0u64;
    for batch in builder.build()? {
        let batch = batch.with_context(|| {
            format!(
                "{}: corrupt data after row {}",
                shard.display(),
                counts.rows
            )
        })?;
        let ids = batch.column(0).as_string::<i32>();
        let spans = batch
            .column_by_name(SPANS)
            .context("spans")?
            .as_list::<i32>();
        let num = batch
            .column_by_name(NUM_TOKENS)
            .context("num_tokens")?
            .as_primitive::<Int32Type>();
        for row in 0..batch.num_rows() {
            let doc = spans.value(row);
            let doc = doc.as_list::<i32>();
            let mut doc_tokens = 0u64;
            for s in 0..doc.len() {
                let span = doc.value(s);
                let span = span.as_primitive::<Int32Type>().values();
                *acc.span_len.entry(span.len() as u64).or_default() += 1;
                doc_tokens += span.len() as u64;
                for &id in span.iter() {
                    let id = id as u32;
                    if acc.vocab.is_some_and(|v| id >= v) {
                        bad_ids += 1;
                        continue;
                    }
                    if id as usize >= acc.token_counts.len() {
                        acc.token_counts.resize(id as usize + 1, 0);
                    }
                    acc.token_counts[id as usize] += 1;
                    acc.unk_count += (id == acc.unk) as u64;
                }
                // Reservoir sampling: every span equally likely, reproducible for a seed and shard order.
                acc.seen_spans += 1;
                if acc.want_samples > 0 {
                    let sample = || Sample {
                        shard: shard.display().to_string(),
                        doc_id: ids.value(row).to_string(),
                        span: s,
                        ids: span.iter().map(|&v| v as u32).collect(),
                        text: String::new(),
                    };
                    if acc.reservoir.len() < acc.want_samples {
                        acc.reservoir.push(sample());
                    } else {
                        let j = acc.rng.random_range(0..acc.seen_spans);
                        if (j as usize) < acc.want_samples {
                            acc.reservoir[j as usize] = sample();
                        }
                    }
                }
            }
            if num.value(row) as u64 != doc_tokens {
                bad_num += 1;
            }
            *acc.spans_per_doc.entry(doc.len() as u64).or_default() += 1;
            counts.rows += 1;
            counts.spans += doc.len() as u64;
            counts.tokens += doc_tokens;
            counts.pairable += (doc.len() >= 2) as u64;
        }
    }
    report.documents += counts.rows;
    report.spans += counts.spans;
    report.tokens += counts.tokens;
    if bad_ids > 0 {
        report.findings.push(format!(
            "{}: {bad_ids} token id(s) outside the vocabulary of {}",
            shard.display(),
            acc.vocab.unwrap_or(0)
        ));
    }
    if bad_num > 0 {
        report.findings.push(format!(
            "{}: {bad_num} row(s) whose num_tokens is not the sum of their span lengths",
            shard.display()
        ));
    }
    Ok(counts)
}
