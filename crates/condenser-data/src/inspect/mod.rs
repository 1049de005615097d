//! `condenser inspect`: statistics, verification and samples of prepared shards.
//!
//! Sits after `prepare` in ARCHITECTURE.md's flow. Streams every shard record batch by record batch
//! (memory bounded by the histograms, not the corpus), and with `--verify` checks each shard against
//! its manifest entry (rows, spans, tokens, sha256, schema, token ids inside the vocabulary).

mod scan;
pub mod stats;
mod text;
mod verify;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;

use crate::shards::manifest::sha256_bytes;
use scan::{read_one, resolve};
use stats::{finish, Accumulator, Report};
use text::{histograms, print_text, unfinished};
use verify::{unknown_files, verify_shard};

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
            let digest = (bytes.len() as u64, sha256_bytes(&bytes));
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
