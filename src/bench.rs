//! `condenser bench`: throughput measurements (never timed assertions in tests).
//!
//! `bench prepare` runs the whole prepare pipeline over the given inputs and, as the floor, the same
//! documents' plain text through the bare tokenizer (`tokenizers` 1.0 `encode` of the whole batch on
//! its own pool, same thread count), and reports tokens/s and MB/s of both.

pub mod numerics;
pub mod profile;
pub mod train;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::examples;
use crate::corpus::{self, Item, ReadOptions};
use crate::prepare::pipeline::{self, PrepareConfig};
use crate::prepare::segment::SegmentConfig;
use crate::prepare::OnError;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// The prepare pipeline against the bare tokenizer on the same text.
    #[command(after_help = examples(&[
        "condenser bench prepare corpus.jsonl",
        "condenser bench prepare enwiki-*-pages-articles*.xml.bz2 -j 8 --json",
    ]))]
    Prepare(BenchPrepareArgs),
    /// Training throughput at fixed shapes (synthetic batches, or real shards with --data). A
    /// repeated option takes its last value, so a script can append overrides.
    // args_override_self: as the reference benchmark's argparse does; pipelines/gpu-bench.sh appends
    // its $EXTRA options after its own.
    #[command(
        args_override_self = true,
        after_help = examples(&[
            "condenser bench train --case condenser --seq 128 --batch-size 128",
            "condenser bench train --case cocondenser --batch-size 512 --gc-chunk 128   # gradient cache",
            "condenser bench train --data runs/demo/shards --loader-only",
        ])
    )]
    Train(train::BenchTrainArgs),
    /// Numerical checks for a new device: fp32 against bf16 over N steps from one init, and the gradient
    /// cache's dropout replay against one graph.
    #[command(after_help = examples(&[
        "condenser bench numerics --data runs/demo/shards",
        "condenser bench numerics --tiny --device cpu --steps 10",
    ]))]
    Numerics(numerics::BenchNumericsArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchPrepareArgs {
    /// Input files, directories or globs (as for `prepare`).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Hugging Face tokenizer.json [default: the bert-base-uncased one from set-up].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Threads for both measurements [default, or 0: all cores; at most 1024].
    #[arg(long, short = 'j', value_parser = crate::prepare::parse_threads)]
    pub threads: Option<usize>,
    /// Runs of each measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Measurement {
    what: &'static str,
    seconds: f64,
    /// CPU seconds of the whole process (user + system, every thread) in that run: on a machine
    /// shared with other work the wall time moves, this much less.
    cpu_seconds: f64,
    tokens: u64,
    tokens_per_s: f64,
    input_mb_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    documents: usize,
    input_bytes: u64,
    text_bytes: u64,
    bare_tokenizer: Measurement,
    pipeline: Measurement,
    /// pipeline tokens/s over bare tokenizer tokens/s.
    ratio: f64,
    /// The bare tokenizer's CPU seconds over the pipeline's (same tokens).
    cpu_ratio: f64,
    /// Where the fastest pipeline run's time went.
    stages: crate::prepare::stages::StageSeconds,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchWhat::Prepare(a) => prepare(a),
        BenchWhat::Train(a) => train::run(a),
        BenchWhat::Numerics(a) => numerics::run(a),
    }
}

fn prepare(args: BenchPrepareArgs) -> Result<()> {
    let threads = crate::prepare::resolve_threads(args.threads);
    let tok_path = args
        .tokenizer
        .clone()
        .unwrap_or_else(crate::paths::default_tokenizer);
    let tokenizer = crate::tokenizer::load(&tok_path)?;
    // The floor encodes on `tokenizers`' own pool (as Python's `encode_batch` does), with our threads.
    crate::tokenizer::set_batch_threads(threads);
    let repeat = args.repeat.max(1);

    // The documents' plain text, as the pipeline's tokenizer sees it (markup already converted).
    let inputs = corpus::expand_inputs(&args.inputs)?;
    let mut texts: Vec<String> = Vec::new();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for input in &inputs {
        corpus::read_input(
            input,
            &ReadOptions::default(),
            counter.clone(),
            &mut |item| {
                if let Item::Doc(mut d) = item {
                    d.to_plain();
                    texts.push(d.text);
                }
                Ok(())
            },
        )?;
    }
    let input_bytes = counter.load(std::sync::atomic::Ordering::Relaxed);
    let text_bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    log::info!(
        "{} documents, {:.1} MB of input, {:.1} MB of text, {threads} thread(s)",
        texts.len(),
        input_bytes as f64 / 1e6,
        text_bytes as f64 / 1e6
    );

    let mut best_bare = f64::MAX;
    let mut bare_cpu = 0.0;
    let mut bare_tokens = 0u64;
    for _ in 0..repeat {
        // The copy is made before the clock starts: `encode` takes owned strings.
        let batch = texts.clone();
        let (t, c) = (Instant::now(), process_cpu());
        let encs = tokenizer.encode_batch(batch)?;
        let secs = t.elapsed().as_secs_f64();
        if secs < best_bare {
            bare_cpu = process_cpu() - c;
        }
        best_bare = best_bare.min(secs);
        bare_tokens = encs.iter().map(|e| e.len() as u64).sum();
    }

    let mut best_pipe = f64::MAX;
    let mut pipe_cpu = 0.0;
    let mut pipe_tokens = 0u64;
    let mut best_stages = None;
    for run in 0..repeat {
        let dir = tempfile_dir(run)?;
        let cfg = PrepareConfig {
            inputs: args.inputs.clone(),
            out: dir.clone(),
            tokenizer: tok_path.clone(),
            read: ReadOptions::default(),
            segment: SegmentConfig {
                max_len: 128,
                short_seq_prob: 0.1,
                seed: 42,
                min_spans: 1,
            },
            writer: Default::default(),
            partition: None,
            bz2_index: None,
            threads,
            on_error: OnError::Skip,
            overwrite: true,
            print_shards: false,
        };
        let (t, c) = (Instant::now(), process_cpu());
        let m = pipeline::run_measured(&cfg);
        let secs = t.elapsed().as_secs_f64();
        let cpu = process_cpu() - c;
        let _ = std::fs::remove_dir_all(&dir);
        let (m, stages) = m?;
        if secs < best_pipe {
            best_stages = Some(stages);
            pipe_cpu = cpu;
        }
        best_pipe = best_pipe.min(secs);
        pipe_tokens = m.totals.tokens;
    }

    let mb = input_bytes as f64 / 1e6;
    let measure = |what, seconds: f64, cpu_seconds: f64, tokens: u64| Measurement {
        what,
        seconds,
        cpu_seconds,
        tokens,
        tokens_per_s: tokens as f64 / seconds,
        input_mb_per_s: mb / seconds,
    };
    let bare = measure(
        "bare tokenizers 1.0 encode_batch",
        best_bare,
        bare_cpu,
        bare_tokens,
    );
    let pipe = measure("whole prepare pipeline", best_pipe, pipe_cpu, pipe_tokens);
    let report = Report {
        threads,
        documents: texts.len(),
        input_bytes,
        text_bytes,
        ratio: pipe.tokens_per_s / bare.tokens_per_s,
        cpu_ratio: bare.cpu_seconds / pipe.cpu_seconds.max(1e-9),
        bare_tokenizer: bare,
        pipeline: pipe,
        stages: best_stages.expect("at least one run"),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:<34} {:>9} {:>9} {:>12} {:>14} {:>10}",
            "measurement", "seconds", "CPU s", "tokens", "tokens/s", "input MB/s"
        )?;
        for m in [&report.bare_tokenizer, &report.pipeline] {
            writeln!(
                out,
                "{:<34} {:>9.3} {:>9.3} {:>12} {:>14.0} {:>10.2}",
                m.what, m.seconds, m.cpu_seconds, m.tokens, m.tokens_per_s, m.input_mb_per_s
            )?;
        }
        writeln!(
            out,
            "pipeline / bare tokenizer: {:.1}% by wall time, {:.1}% by CPU ({} threads, {} documents, best of {repeat})",
            report.ratio * 100.0,
            report.cpu_ratio * 100.0,
            threads,
            report.documents
        )?;
        let st = &report.stages;
        writeln!(
            out,
            "stages of that run, CPU seconds: reader {:.2} | decode {:.2} | parse {:.2} | markup {:.2} | segment {:.2} | encode {:.2} | writer {:.2} ({:.2} s wall)",
            st.reader_cpu, st.decode_cpu, st.parse_cpu, st.markup_cpu, st.segment_cpu, st.encode_cpu, st.writer_cpu, st.wall
        )?;
        writeln!(
            out,
            "waits, seconds: reader blocked handing chunks on {:.2} | parallel stage waiting for chunks {:.2}; the {} binds at about {:.0} threads",
            st.reader_blocked,
            st.dispatch_waited,
            st.serial_bound().0,
            st.serial_bound().1
        )?;
    }
    Ok(())
}

/// CPU seconds (user + system) of this process so far, every thread.
fn process_cpu() -> f64 {
    // SAFETY: getrusage writes one rusage through a valid pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// A scratch folder for run `run` of this process (removed by the caller after the run).
fn tempfile_dir(run: usize) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("condenser-bench-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    Ok(dir)
}
