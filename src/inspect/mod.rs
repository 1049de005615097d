//! `condenser inspect`: statistics, verification and samples of prepared shards.
//!
//! Sits after `prepare` in ARCHITECTURE.md's flow. Streams every shard record batch by record batch
//! (memory bounded by the histograms, not the corpus), and with `--verify` checks each shard against
//! its manifest entry (rows, spans, tokens, sha256, schema, token ids inside the vocabulary).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::shards::manifest::Manifest;
use crate::shards::schema::{is_shard_schema, NUM_TOKENS, SPANS};
use crate::shards::writer::hex;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A shard folder (with its _manifest.json), shard files, or `-` for shard paths on stdin.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Recompute rows, spans, tokens and sha256 of every shard against the manifest, check the schema
    /// and that every id is inside the vocabulary; exit 2 naming each mismatch.
    #[arg(long)]
    pub verify: bool,
    /// Show N spans chosen with --seed, decoded with the tokenizer.
    #[arg(long, default_value_t = 0)]
    pub samples: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Most frequent tokens to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// tokenizer.json to decode with [default: the manifest's, else the set-up one].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// The statistics as one JSON document on stdout (fields in the README).
    #[arg(long)]
    pub json: bool,
    /// Draw the histograms into a PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Everything `inspect` reports (also the `--json` document).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The manifest's `complete`: false while `prepare` has not finished (the shards so far), null
    /// without a manifest.
    pub complete: Option<bool>,
    pub shards: u64,
    pub bytes_on_disk: u64,
    /// Token ids as int32 (4 bytes each) over bytes on disk.
    pub compression_ratio: f64,
    pub documents: u64,
    pub spans: u64,
    pub tokens: u64,
    /// Documents with fewer than two spans: the coCondenser stage cannot pair them.
    pub documents_under_two_spans: u64,
    pub span_length: Distribution,
    pub spans_per_document: Distribution,
    pub unk_tokens: u64,
    pub unk_share: f64,
    pub top_tokens: Vec<TopToken>,
    pub samples: Vec<Sample>,
    /// Per input, from the manifest: documents written and skips by reason.
    pub inputs: Vec<crate::shards::manifest::InputStats>,
    /// Only with --verify: what did not match (empty when everything did).
    pub findings: Vec<String>,
    pub verified: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Distribution {
    pub mean: f64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// value -> count
    pub histogram: BTreeMap<u64, u64>,
}

impl Distribution {
    fn from_counts(counts: &BTreeMap<u64, u64>) -> Self {
        let n: u64 = counts.values().sum();
        if n == 0 {
            return Distribution::default();
        }
        let total: f64 = counts.iter().map(|(v, c)| *v as f64 * *c as f64).sum();
        let pct = |p: f64| {
            let rank = ((p * n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (v, c) in counts {
                seen += c;
                if seen >= rank {
                    return *v;
                }
            }
            *counts.keys().next_back().unwrap()
        };
        Distribution {
            mean: total / n as f64,
            min: *counts.keys().next().unwrap(),
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: *counts.keys().next_back().unwrap(),
            histogram: counts.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TopToken {
    pub id: u32,
    pub token: String,
    pub count: u64,
    pub share: f64,
}

#[derive(Debug, Serialize, Clone)]
pub struct Sample {
    pub shard: String,
    pub doc_id: String,
    pub span: usize,
    pub ids: Vec<u32>,
    pub text: String,
}

/// Where the shards come from, and the manifest that describes them (if any).
struct Source {
    shards: Vec<PathBuf>,
    manifest: Option<(PathBuf, Manifest)>,
}

fn resolve(paths: &[String]) -> Result<Source> {
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
struct ShardCounts {
    rows: u64,
    spans: u64,
    tokens: u64,
    pairable: u64,
}

struct Accumulator {
    span_len: BTreeMap<u64, u64>,
    spans_per_doc: BTreeMap<u64, u64>,
    token_counts: Vec<u64>,
    unk: u32,
    unk_count: u64,
    vocab: Option<u32>,
    reservoir: Vec<Sample>,
    seen_spans: u64,
    rng: rand_chacha::ChaCha8Rng,
    want_samples: usize,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let source = resolve(&args.paths)?;
    if source.shards.is_empty() {
        bail!("no shards found in {:?}", args.paths);
    }
    let tok_path = args
        .tokenizer
        .clone()
        .or_else(|| {
            let (dir, m) = source.manifest.as_ref()?;
            m.tokenizer
                .locate(dir)
                .map_err(|e| log::warn!("{e:#}; falling back to the default tokenizer"))
                .ok()
        })
        .unwrap_or_else(crate::paths::default_tokenizer);
    let tokenizer = crate::tokenizer::load(&tok_path).ok();
    let special = tokenizer
        .as_ref()
        .and_then(|t| crate::tokenizer::special_ids(t).ok());
    let vocab = source
        .manifest
        .as_ref()
        .map(|(_, m)| m.tokenizer.vocab_size)
        .or_else(|| tokenizer.as_ref().map(|t| t.vocab_size() as u32));
    let mut acc = Accumulator {
        span_len: BTreeMap::new(),
        spans_per_doc: BTreeMap::new(),
        token_counts: vec![0; vocab.unwrap_or(30522) as usize],
        unk: special
            .map(|s| s.unk)
            .or(source
                .manifest
                .as_ref()
                .map(|(_, m)| m.tokenizer.special_ids.unk))
            .unwrap_or(100),
        unk_count: 0,
        vocab,
        reservoir: Vec::new(),
        seen_spans: 0,
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(args.seed),
        want_samples: args.samples,
    };
    let mut report = Report {
        verified: args.verify,
        complete: source.manifest.as_ref().map(|(_, m)| m.complete),
        ..Default::default()
    };
    if let Some((dir, m)) = source.manifest.as_ref().filter(|(_, m)| !m.complete) {
        log::warn!("{}", unfinished(dir, m));
    }
    // Progress: bytes of the shards read of their total size.
    let sizes: Vec<u64> = source
        .shards
        .iter()
        .map(|s| std::fs::metadata(s).map(|m| m.len()).unwrap_or(0))
        .collect();
    let what = if args.verify {
        "inspect --verify"
    } else {
        "inspect"
    };
    let progress = crate::progress::Progress::new(
        what,
        crate::progress::Unit::Bytes,
        Some(sizes.iter().sum()),
    );
    progress.update(0, "");
    let mut read_bytes = 0u64;
    let mut shard_no = 0usize;
    let mut advance = |progress: &crate::progress::Progress| {
        read_bytes += sizes[shard_no];
        shard_no += 1;
        progress.update(read_bytes, &format!("{shard_no}/{} shards", sizes.len()));
    };

    let entries: BTreeMap<PathBuf, &crate::shards::ShardEntry> = source
        .manifest
        .iter()
        .flat_map(|(dir, m)| m.shards.iter().map(move |s| (dir.join(&s.file), s)))
        .collect();
    for shard in &source.shards {
        let name = shard.display().to_string();
        if !shard.exists() {
            report
                .findings
                .push(format!("{name}: missing (listed in the manifest)"));
            advance(&progress);
            continue;
        }
        report.shards += 1;
        report.bytes_on_disk += std::fs::metadata(shard)?.len();
        // --verify reads each shard once: the bytes are hashed and decoded from memory (one shard at
        // a time, so memory is bounded by the shard size); otherwise the file is streamed.
        let (read, file_bytes) = if args.verify {
            let bytes = match std::fs::read(shard) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => {
                    report.findings.push(format!("{name}: unreadable: {e}"));
                    advance(&progress);
                    continue;
                }
            };
            let digest = (bytes.len() as u64, hex(&Sha256::digest(&bytes)));
            (read_one(shard, bytes, &mut acc, &mut report), Some(digest))
        } else {
            let file =
                std::fs::File::open(shard).with_context(|| format!("{name}: cannot open"))?;
            (read_one(shard, file, &mut acc, &mut report), None)
        };
        match read {
            Ok(counts) => {
                if let Some((len, sha)) = &file_bytes {
                    verify_shard(
                        shard,
                        (*len, sha),
                        &counts,
                        entries.get(shard).copied(),
                        source.manifest.is_some(),
                        &mut report.findings,
                    )?;
                }
            }
            Err(e) if args.verify => report.findings.push(format!("{name}: unreadable: {e:#}")),
            Err(e) => return Err(e),
        }
        advance(&progress);
    }
    progress.finish();
    if args.verify {
        if let Some((dir, m)) = &source.manifest {
            unknown_files(dir, m, &mut report.findings)?;
        }
    }
    finish(
        &mut report,
        &acc,
        tokenizer.as_ref(),
        args.top,
        source.manifest.as_ref().map(|(_, m)| m),
    );

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report, source.manifest.as_ref())?;
    }
    if let Some(png) = &args.plot {
        let [top, bottom] = histograms(&report)?;
        crate::plot::histograms(png, &top, &bottom)?;
        log::info!("histograms drawn into {}", png.display());
    }
    if args.verify && !report.findings.is_empty() {
        for f in &report.findings {
            eprintln!("condenser: verify: {f}");
        }
        bail!("verification failed: {} finding(s)", report.findings.len());
    }
    Ok(())
}

fn read_one<R: parquet::file::reader::ChunkReader + 'static>(
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

/// Checks one shard, `file` = (its size, its sha256), against its manifest entry.
fn verify_shard(
    shard: &Path,
    file: (u64, &str),
    counts: &ShardCounts,
    entry: Option<&crate::shards::ShardEntry>,
    have_manifest: bool,
    findings: &mut Vec<String>,
) -> Result<()> {
    let name = shard.display();
    let Some(e) = entry else {
        if have_manifest {
            findings.push(format!("{name}: not listed in the manifest"));
        }
        return Ok(());
    };
    let (len, sha) = file;
    if len != e.bytes {
        findings.push(format!(
            "{name}: {len} bytes, the manifest says {} (truncated or rewritten?)",
            e.bytes
        ));
    }
    if sha != e.sha256 {
        findings.push(format!(
            "{name}: sha256 {sha} does not match the manifest's {}",
            e.sha256
        ));
    }
    for (what, got, want) in [
        ("rows", counts.rows, e.rows),
        ("spans", counts.spans, e.spans),
        ("tokens", counts.tokens, e.tokens),
    ] {
        if got != want {
            findings.push(format!("{name}: {got} {what}, the manifest says {want}"));
        }
    }
    if let Some(want) = e.pairable.filter(|&p| p != counts.pairable) {
        findings.push(format!(
            "{name}: {} documents with two or more spans, the manifest says {want}",
            counts.pairable
        ));
    }
    Ok(())
}

/// Parquet files in a manifest's folder that the manifest does not list.
fn unknown_files(dir: &Path, m: &Manifest, findings: &mut Vec<String>) -> Result<()> {
    let listed: std::collections::HashSet<PathBuf> =
        m.shards.iter().map(|s| dir.join(&s.file)).collect();
    let mut check = |d: &Path| -> Result<()> {
        for e in std::fs::read_dir(d).with_context(|| format!("{}: cannot list", d.display()))? {
            let p = e?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && p.extension().is_some_and(|x| x == "parquet") && !listed.contains(&p) {
                findings.push(format!(
                    "{}: a shard file the manifest does not know",
                    p.display()
                ));
            }
        }
        Ok(())
    };
    check(dir)?;
    let mut subdirs: Vec<PathBuf> = m
        .shards
        .iter()
        .filter_map(|s| dir.join(&s.file).parent().map(Path::to_path_buf))
        .collect();
    subdirs.sort();
    subdirs.dedup();
    for d in subdirs.into_iter().filter(|d| d != dir) {
        check(&d)?;
    }
    Ok(())
}

fn finish(
    report: &mut Report,
    acc: &Accumulator,
    tok: Option<&crate::tokenizer::Tokenizer>,
    top: usize,
    manifest: Option<&Manifest>,
) {
    report.compression_ratio = if report.bytes_on_disk > 0 {
        report.tokens as f64 * 4.0 / report.bytes_on_disk as f64
    } else {
        0.0
    };
    report.documents_under_two_spans = acc.spans_per_doc.range(..2).map(|(_, c)| c).sum();
    report.span_length = Distribution::from_counts(&acc.span_len);
    report.spans_per_document = Distribution::from_counts(&acc.spans_per_doc);
    report.unk_tokens = acc.unk_count;
    report.unk_share = if report.tokens > 0 {
        acc.unk_count as f64 / report.tokens as f64
    } else {
        0.0
    };
    let mut order: Vec<(u32, u64)> = acc
        .token_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (i as u32, *c))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.top_tokens = order
        .into_iter()
        .take(top)
        .map(|(id, count)| TopToken {
            id,
            token: tok
                .and_then(|t| t.id_to_token(id).map(str::to_owned))
                .unwrap_or_else(|| format!("#{id}")),
            count,
            share: count as f64 / report.tokens.max(1) as f64,
        })
        .collect();
    report.samples = acc
        .reservoir
        .iter()
        .map(|s| Sample {
            text: tok
                .and_then(|t| t.decode(&s.ids, false).ok())
                .unwrap_or_default(),
            ..s.clone()
        })
        .collect();
    if let Some(m) = manifest {
        report.inputs = m.inputs.clone();
    }
}

/// What an unfinished folder is, for the log and the text report.
fn unfinished(dir: &Path, m: &Manifest) -> String {
    format!(
        "{}: prepare has not finished (manifest complete: false): these are the {} shard(s) written so far; rerun the same prepare to finish",
        dir.display(),
        m.shards.len()
    )
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Values above `cap` folded into `cap`, so a long tail does not flatten the picture.
/// The span-length and spans-per-document histograms of a report, as `plot` draws them: each capped
/// at its display cap, the bar at the cap holding every larger value too (drawn apart as the tail).
fn histograms(report: &Report) -> Result<[crate::plot::Histogram; 2]> {
    if report.spans == 0 {
        anyhow::bail!("nothing to plot: no spans");
    }
    let tail = |d: &Distribution| {
        let cap = display_cap(d);
        (cap < d.max).then_some((cap, d.max))
    };
    let tail_note = |t: Option<(u64, u64)>| match t {
        Some((cap, max)) => format!(", the orange bar holds {cap} to {max}"),
        None => String::new(),
    };
    let (spans, docs) = (&report.span_length, &report.spans_per_document);
    Ok([
        crate::plot::Histogram {
            title: format!(
                "span length ({} spans, mean {:.1}{})",
                report.spans,
                spans.mean,
                tail_note(tail(spans))
            ),
            axes: ("span length (tokens, without [CLS] and [SEP])", "spans"),
            bars: capped(&spans.histogram, display_cap(spans)),
            tail: tail(spans),
        },
        crate::plot::Histogram {
            title: format!(
                "spans per document ({} documents, mean {:.2}{})",
                report.documents,
                docs.mean,
                tail_note(tail(docs))
            ),
            axes: ("spans per document", "documents"),
            bars: capped(&docs.histogram, display_cap(docs)),
            tail: tail(docs),
        },
    ])
}

pub fn capped(h: &BTreeMap<u64, u64>, cap: u64) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for (&v, &c) in h {
        *out.entry(v.min(cap)).or_default() += c;
    }
    out
}

/// Where a picture of a distribution stops: a bit past its 99th percentile.
pub fn display_cap(d: &Distribution) -> u64 {
    (d.p99 * 2).max(10).min(d.max)
}

/// A histogram drawn with block characters, values grouped into at most `rows` bins; the last bin
/// holds everything at or above `cap`.
fn draw(out: &mut dyn Write, d: &Distribution, rows: usize) -> std::io::Result<()> {
    let cap = display_cap(d);
    let h = &capped(&d.histogram, cap);
    let (Some(&lo), Some(&hi)) = (h.keys().next(), h.keys().next_back()) else {
        return Ok(());
    };
    let width = ((hi - lo + 1) as f64 / rows as f64).ceil().max(1.0) as u64;
    let mut bins: Vec<(u64, u64)> = Vec::new();
    for (v, c) in h {
        let b = lo + (v - lo) / width * width;
        match bins.last_mut() {
            Some((start, n)) if *start == b => *n += c,
            _ => bins.push((b, *c)),
        }
    }
    let max = bins.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    for (start, n) in bins {
        let end = (start + width - 1).min(hi);
        let label = match (start == end, end == cap && cap < d.max) {
            (_, true) => format!("{start}+"),
            (true, false) => format!("{start}"),
            (false, false) => format!("{start}-{end}"),
        };
        let bar = "█".repeat(((n as f64 / max as f64) * 50.0).round() as usize);
        writeln!(out, "  {label:>9} │{bar} {}", thousands(n))?;
    }
    Ok(())
}

fn print_text(
    out: &mut dyn Write,
    r: &Report,
    manifest: Option<&(PathBuf, Manifest)>,
) -> std::io::Result<()> {
    if let Some((dir, m)) = manifest.filter(|(_, m)| !m.complete) {
        writeln!(out, "UNFINISHED  {}\n", unfinished(dir, m))?;
    }
    writeln!(
        out,
        "shards      {} ({:.1} MB on disk; {:.2}x smaller than int32 token ids)",
        r.shards,
        r.bytes_on_disk as f64 / 1e6,
        r.compression_ratio
    )?;
    writeln!(out, "documents   {}", thousands(r.documents))?;
    writeln!(out, "spans       {}", thousands(r.spans))?;
    writeln!(out, "tokens      {}", thousands(r.tokens))?;
    let pct = 100.0 * r.documents_under_two_spans as f64 / r.documents.max(1) as f64;
    writeln!(
        out,
        "documents with fewer than two spans: {} ({pct:.1}%). The coCondenser stage pairs two spans of a document, so it skips these; the Condenser stage still trains on their spans.",
        thousands(r.documents_under_two_spans)
    )?;
    for (title, d) in [
        ("span length (tokens)", &r.span_length),
        ("spans per document", &r.spans_per_document),
    ] {
        writeln!(
            out,
            "\n{title}: mean {:.1}, min {}, p50 {}, p90 {}, p99 {}, max {}",
            d.mean, d.min, d.p50, d.p90, d.p99, d.max
        )?;
        draw(out, d, 16)?;
    }
    writeln!(
        out,
        "\n[UNK]: {} tokens ({:.4}% of all)",
        thousands(r.unk_tokens),
        100.0 * r.unk_share
    )?;
    if !r.top_tokens.is_empty() {
        let tops: Vec<String> = r
            .top_tokens
            .iter()
            .map(|t| format!("{} {:.2}%", t.token, 100.0 * t.share))
            .collect();
        writeln!(out, "most frequent tokens: {}", tops.join(", "))?;
    }
    if !r.inputs.is_empty() {
        writeln!(out, "\ninputs (from the manifest):")?;
        for i in &r.inputs {
            let skipped: Vec<String> = i.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let skipped = if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            };
            writeln!(
                out,
                "  {}: {} documents, {} spans, {} tokens; skipped: {skipped}",
                i.path,
                thousands(i.documents),
                thousands(i.spans),
                thousands(i.tokens)
            )?;
        }
    }
    if !r.samples.is_empty() {
        writeln!(out, "\nsamples:")?;
        for s in &r.samples {
            writeln!(
                out,
                "  [{} span {} of {}] ({} tokens) {}",
                s.doc_id,
                s.span,
                s.shard,
                s.ids.len(),
                s.text
            )?;
        }
    }
    if r.verified {
        if r.findings.is_empty() {
            writeln!(out, "\nverify: every shard matches the manifest (rows, spans, tokens, sha256), schema and vocabulary ok")?;
        } else {
            writeln!(out, "\nverify: {} finding(s)", r.findings.len())?;
            for f in &r.findings {
                writeln!(out, "  {f}")?;
            }
        }
    }
    Ok(())
}
