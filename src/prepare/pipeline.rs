//! The parallel, streaming, deterministic prepare pipeline.
//!
//! ```text
//! reader thread ──chunks──> rayon (clean, split, tokenize, pack) ──in order──> writer thread
//!   one input at a time       a bounded window of chunks                 shards + manifest
//! ```
//! Every channel is bounded, chunks are bounded in documents and bytes, and the writer keeps at most
//! one row group in memory: memory does not grow with the corpus. Chunks keep their input order
//! through the parallel stage, and every random draw is keyed by document id, so the output bytes do
//! not depend on the thread count. Each completed shard is renamed into place and the manifest
//! rewritten with the input cursor it reaches; a rerun of the same command resumes from there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use super::segment::{SegmentConfig, Segmented, Segmenter};
use super::stages::{Clock, StageSeconds, Stages};
use super::OnError;
use crate::corpus::{self, Input, Item, ReadOptions, Skip};
use crate::shards::manifest::{
    sha256_file, store_tokenizer_copy, InputStats, Manifest, Settings, ShardEntry, TokenizerInfo,
    Totals, FORMAT_VERSION,
};
use crate::shards::writer::ShardWriter;
use crate::shards::WriterConfig;

/// Everything a prepare run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    pub inputs: Vec<String>,
    pub out: PathBuf,
    pub tokenizer: PathBuf,
    pub read: ReadOptions,
    pub segment: SegmentConfig,
    pub writer: WriterConfig,
    pub partition: Option<[u32; 2]>,
    /// A multi-stream bzip2 dump's `-index.txt.bz2`: where a partition's streams start, unscanned.
    pub bz2_index: Option<PathBuf>,
    pub threads: usize,
    pub on_error: OnError,
    pub overwrite: bool,
    /// Print each completed shard's path on stdout (off for benchmarks).
    pub print_shards: bool,
}

/// Documents per chunk, and the text bytes after which a chunk is sent early.
const CHUNK_DOCS: usize = 256;
const CHUNK_BYTES: usize = 256 << 10;
/// Error skips logged one by one per reason before only counting.
const LOGGED_SKIPS: u64 = 10;

/// One stream item with its position: `seq` counts items after partitioning.
type Tagged<T> = (u64, usize, T);

/// What the reader hands the parallel stage: the raw input bytes read so far (progress counts an input
/// byte as consumed when the documents read before it are written) and the items.
type RawChunk = (u64, Vec<Tagged<Item>>);

/// What the parallel stage hands the writer: chunk `i`'s result, or the number of chunks in all.
enum Done {
    /// Chunk `i`, the raw input bytes read when it was sent (for progress), its result.
    Chunk(u64, u64, Result<Vec<Tagged<Processed>>>),
    End(u64),
}

enum Processed {
    Row(Segmented),
    Skip(Skip),
    End {
        bytes: u64,
        format: corpus::Format,
        compression: corpus::decode::decompress::Compression,
    },
}

/// The reader stops quietly when the rest of the pipeline has gone (after an error there).
#[derive(Debug, thiserror::Error)]
#[error("pipeline closed")]
struct Closed;

pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.parquet")
}

/// Runs prepare; returns the final manifest.
pub fn run(cfg: &PrepareConfig) -> Result<Manifest> {
    // A run that fails before its first shard leaves nothing worth resuming: the folders it created
    // are removed again (a partition's `part-K-of-N/`, and `--out` when it made that too).
    let made: Vec<PathBuf> = cfg
        .out
        .ancestors()
        .take(if cfg.partition.is_some() { 2 } else { 1 })
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    let result = run_measured(cfg).map(|(m, _)| m);
    if result.is_err() && !made.is_empty() && shard_files(&cfg.out).is_ok_and(|s| s.is_empty()) {
        let _ = std::fs::remove_dir_all(&made[0]);
        for d in &made[1..] {
            let _ = std::fs::remove_dir(d); // only if nothing else is in it
        }
    }
    result
}

/// As [`run`], with where the time went (see [`super::stages`]).
pub fn run_measured(cfg: &PrepareConfig) -> Result<(Manifest, StageSeconds)> {
    let started = Instant::now();
    let stages = Stages::default();
    let decode_cpu_before = corpus::decode::decompress::decode_cpu();
    let tokenizer = crate::tokenizer::load(&cfg.tokenizer)?;
    log::debug!(
        "tokenizer loaded in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let special_ids = crate::tokenizer::special_ids(&tokenizer)?;
    let tokenizer_info = TokenizerInfo {
        path: cfg.tokenizer.display().to_string(),
        sha256: sha256_file(&cfg.tokenizer)?,
        vocab_size: tokenizer.vocab_size() as u32,
        special_ids,
    };
    let inputs = corpus::inputs::expand_inputs_keeping_missing(&cfg.inputs)?;
    if inputs.is_empty() {
        bail!("no inputs: {:?} matched nothing", cfg.inputs);
    }
    if cfg.bz2_index.is_some() && (cfg.partition.is_none() || inputs.len() != 1) {
        bail!("--index is the index of one multi-stream dump: give it with --partition and that dump as the only input");
    }
    // Read (and checked) before anything is written.
    let bz2_index = match &cfg.bz2_index {
        Some(path) => Some(corpus::partition::stream_ranges::load_index(path)?),
        None => None,
    };
    let owned = owned_inputs(&inputs, cfg.partition);
    let settings = Settings {
        inputs: inputs.iter().map(Input::name).collect(),
        // `--on-error` is how this run reacts to bad input, not a setting of its output (manifests do
        // not store it): a folder is the same run's whatever it says.
        read: ReadOptions {
            stop_at_error: false,
            ..cfg.read.clone()
        },
        segment: cfg.segment.clone(),
        writer: cfg.writer.clone(),
        partition: cfg.partition,
    };
    let same_run =
        |m: &Manifest| m.settings == settings && m.tokenizer.sha256 == tokenizer_info.sha256;
    // A missing input is an error before anything is written, unless this folder already holds all
    // of its documents (a resume after the file went away).
    let covering = Manifest::load(&cfg.out)?.filter(same_run);
    check_missing(&inputs, &owned, covering.as_ref())?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create", cfg.out.display()))?;
    // One run per folder at a time, until this function returns (or the process dies).
    let _lock = super::lock::FolderLock::acquire(&cfg.out)?;

    let existing = Manifest::load(&cfg.out)?;
    // Again under the lock: the manifest may have changed while another run held the folder.
    check_missing(&inputs, &owned, existing.as_ref().filter(|m| same_run(m)))?;
    if existing.is_none() && !cfg.overwrite {
        // Every run writes its manifest before its first shard: shards without one are not ours.
        let shards = shard_files(&cfg.out)?;
        if let Some(first) = shards.first() {
            bail!(
                "{}: holds {} shard file(s) ({first}{}) but no _manifest.json, so not the output of this run; use --overwrite to replace them, or another --out",
                cfg.out.display(),
                shards.len(),
                if shards.len() > 1 { ", ..." } else { "" }
            );
        }
    }
    // The same run as the folder's (to resume or to leave alone), or a new one.
    let fresh = !existing.as_ref().is_some_and(same_run);
    let mut manifest = match existing {
        Some(mut m) if !fresh => {
            if m.complete {
                // A folder from before the copy existed gets one; one from before the `_` names
                // gets them (so pyarrow can open it).
                store_tokenizer_copy(&cfg.out, &cfg.tokenizer, &m.tokenizer.sha256)?;
                if cfg.out.join(crate::shards::manifest::LEGACY_FILE_NAME).exists() {
                    m.store(&cfg.out)?;
                }
                log::info!("{}: already complete ({} shards); nothing to do", cfg.out.display(), m.shards.len());
                if cfg.print_shards {
                    print_shards(&cfg.out, &m.shards)?;
                }
                return Ok((m, stages.seconds(started.elapsed())));
            }
            log::info!(
                "{}: resuming after {} complete shard(s), {} input records in",
                cfg.out.display(),
                m.shards.len(),
                m.cursor
            );
            m
        }
        Some(_) if !cfg.overwrite => bail!(
            "{}: holds the output of a different prepare run (other inputs or settings); use --overwrite to replace it, or another --out",
            cfg.out.display()
        ),
        _ => Manifest {
            format_version: FORMAT_VERSION,
            tool: format!("condenser {}", env!("CARGO_PKG_VERSION")),
            written_at: 0,
            complete: false,
            settings,
            tokenizer: tokenizer_info,
            inputs: inputs
                .iter()
                .zip(&owned)
                .filter(|(_, &o)| o)
                .map(|(i, _)| InputStats { path: i.name(), ..Default::default() })
                .collect(),
            shards: Vec::new(),
            cursor: 0,
            totals: Totals::default(),
        },
    };
    if fresh {
        // On disk before any shard, so shards in a folder without a manifest are never this run's.
        manifest.store(&cfg.out)?;
    }
    remove_stale_files(&cfg.out, &manifest)?;
    store_tokenizer_copy(&cfg.out, &cfg.tokenizer, &manifest.tokenizer.sha256)?;
    if cfg.print_shards {
        print_shards(&cfg.out, &manifest.shards)?;
    }

    // Multi-stream bzip2 inputs decode on as many threads as segment (1: the serial decoder).
    corpus::decode::decompress::set_decode_threads(cfg.threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.max(1))
        .thread_name(|i| format!("prepare-{i}"))
        .build()?;
    // Chunks in flight between the reader and the writer: bounds memory and the reorder buffer.
    let in_flight = cfg.threads.max(1) * 4;
    // `None` is the reader's clean end; a channel that merely closes means it failed.
    let (chunk_tx, chunk_rx) = bounded::<Option<RawChunk>>(in_flight);
    let (result_tx, result_rx) = unbounded::<Done>();
    let (slot_tx, slot_rx) = bounded::<()>(in_flight);
    let raw_bytes = Arc::new(AtomicU64::new(0));
    let segmenter = Segmenter {
        tokenizer: &tokenizer,
        config: &cfg.segment,
    };
    let our_inputs: Vec<&Input> = inputs
        .iter()
        .zip(&owned)
        .filter(|(_, &o)| o)
        .map(|(i, _)| i)
        .collect();
    // What the reader needs of the manifest: the cursor and which inputs are wholly done.
    let resume = Resume {
        cursor: manifest.cursor,
        inputs: manifest
            .inputs
            .iter()
            .map(|i| (i.done, i.records))
            .collect(),
    };
    // Progress: raw (compressed) input bytes over the inputs' sizes; inputs that complete shards
    // already cover are not read again and count as done.
    let mut covered_bytes = 0u64;
    let mut total_bytes = Some(0u64);
    {
        let mut seq = 0u64;
        for (idx, input) in our_inputs.iter().enumerate() {
            let (done, records) = resume.inputs[idx];
            let size = match input.is_stdin() {
                true => None,
                false => std::fs::metadata(&input.path).ok().map(|m| m.len()),
            };
            total_bytes = total_bytes.zip(size).map(|(t, s)| t + s);
            if done && seq + records < resume.cursor {
                covered_bytes += size.unwrap_or(0);
            }
            seq += records + 1;
        }
    }
    raw_bytes.store(covered_bytes, Ordering::Relaxed);
    let not_read = AtomicU64::new(0);
    let progress =
        crate::progress::Progress::new("prepare", crate::progress::Unit::Bytes, total_bytes);
    progress.update(covered_bytes, "");

    let by_record = matches!(cfg.partition, Some([_, n]) if inputs.len() < n as usize);
    let (read_result, write_result) = std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("prepare-reader".into())
            .spawn_scoped(s, || {
                stages.reader_cpu.cpu(|| {
                    read_all(
                        &our_inputs,
                        cfg,
                        by_record,
                        &resume,
                        raw_bytes.clone(),
                        &not_read,
                        bz2_index.as_deref(),
                        &stages.reader_blocked,
                        chunk_tx,
                    )
                })
            })
            .expect("spawn the reader thread");
        let writer = std::thread::Builder::new()
            .name("prepare-writer".into())
            .spawn_scoped(s, || {
                stages.writer_cpu.cpu(|| {
                    write_all(
                        cfg,
                        &mut manifest,
                        result_rx,
                        slot_rx,
                        &raw_bytes,
                        (total_bytes, &not_read),
                        &progress,
                    )
                })
            })
            .expect("spawn the writer thread");
        // This thread hands each chunk to the pool as it arrives (no barrier between chunks); the
        // writer puts results back in order. A slot per chunk in flight bounds how far ahead we get.
        pool.in_place_scope(|scope| {
            let mut index = 0u64;
            let mut clean_end = false;
            loop {
                let waited = Instant::now();
                let next = chunk_rx.recv();
                stages.dispatch_waited.add(waited.elapsed());
                let (read_at, chunk) = match next {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => {
                        clean_end = true;
                        break;
                    }
                    Err(_) => break, // the reader failed; its error is reported below
                };
                if slot_tx.send(()).is_err() {
                    break; // The writer stopped; its error is reported below.
                }
                let tx = result_tx.clone();
                let segmenter = &segmenter;
                let stages = &stages;
                scope.spawn(move |_| {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        process_chunk(segmenter, chunk, stages)
                    }))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a segmentation worker panicked")));
                    let _ = tx.send(Done::Chunk(index, read_at, result));
                });
                index += 1;
            }
            // Only the reader's explicit end lets the writer call the job complete.
            if clean_end {
                let _ = result_tx.send(Done::End(index));
            }
        });
        // Closing our ends lets the reader and the writer finish (or notice the failure).
        drop(result_tx);
        drop(chunk_rx);
        drop(slot_tx);
        (reader.join(), writer.join())
    });
    progress.finish();
    let write_result = write_result.map_err(|_| anyhow::anyhow!("the shard writer panicked"))?;
    let read_result = read_result.map_err(|_| anyhow::anyhow!("the input reader panicked"))?;
    // The reader's own failure first: the writer then only saw its input end early.
    if let Err(e) = read_result {
        if e.downcast_ref::<Closed>().is_none() {
            return Err(e);
        }
    }
    write_result?;
    summary(&manifest, started.elapsed());
    stages
        .decode_cpu
        .add(corpus::decode::decompress::decode_cpu().saturating_sub(decode_cpu_before));
    let seconds = stages.seconds(started.elapsed());
    log::debug!("{}", seconds.line());
    Ok((manifest, seconds))
}

/// Fails naming the inputs that do not exist, except those `manifest` (the folder's, of this same
/// run) already covers wholly: the reader skips those without opening them.
fn check_missing(inputs: &[Input], owned: &[bool], manifest: Option<&Manifest>) -> Result<()> {
    let mut covered = vec![false; inputs.len()];
    if let Some(m) = manifest {
        // As `read_all` decides it: the manifest lists the owned inputs in order.
        let mut seq = 0u64;
        let owned_idx = (0..inputs.len()).filter(|&i| owned[i]);
        for (i, stats) in owned_idx.zip(&m.inputs) {
            covered[i] = m.complete || (stats.done && seq + stats.records < m.cursor);
            seq += stats.records + 1;
        }
    }
    let missing: Vec<&Input> = inputs
        .iter()
        .zip(&covered)
        .filter(|(i, &c)| !i.exists && !c)
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(corpus::inputs::missing_inputs_error(&missing))
}

/// Which inputs this partition reads: whole files when there are at least N of them.
fn owned_inputs(inputs: &[Input], partition: Option<[u32; 2]>) -> Vec<bool> {
    match partition {
        Some([k, n]) if inputs.len() >= n as usize => (0..inputs.len())
            .map(|i| i % n as usize == k as usize)
            .collect(),
        _ => vec![true; inputs.len()],
    }
}

fn print_shards(out: &Path, shards: &[ShardEntry]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    for s in shards {
        writeln!(stdout, "{}", out.join(&s.file).display())?;
    }
    stdout.flush()?;
    Ok(())
}

/// The names of the shard files in `out`, sorted.
fn shard_files(out: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("shard-") && name.ends_with(".parquet") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes temporary files and shards the manifest does not list (left by an interrupted run).
fn remove_stale_files(out: &Path, manifest: &Manifest) -> Result<()> {
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let stale_tmp = name.starts_with('.') && name.ends_with(".tmp");
        let stale_shard = name.starts_with("shard-")
            && name.ends_with(".parquet")
            && !manifest.shards.iter().any(|s| s.file == name);
        if stale_tmp || stale_shard {
            log::debug!("removing stale {name}");
            std::fs::remove_file(out.join(&name))
                .with_context(|| format!("{}: cannot remove", out.join(&name).display()))?;
        }
    }
    Ok(())
}

struct Resume {
    cursor: u64,
    inputs: Vec<(bool, u64)>,
}

/// The reader thread: every input in order, items tagged and chunked.
fn read_all(
    inputs: &[&Input],
    cfg: &PrepareConfig,
    by_record: bool,
    resume: &Resume,
    raw_bytes: Arc<AtomicU64>,
    not_read: &AtomicU64,
    bz2_index: Option<&[u64]>,
    blocked: &Clock,
    tx: Sender<Option<RawChunk>>,
) -> Result<()> {
    // Sends a chunk on, timing the wait for room.
    let send = |chunk: Option<RawChunk>| -> Result<()> {
        let t = Instant::now();
        let sent = tx.send(chunk).map_err(|_| Closed);
        blocked.add(t.elapsed());
        Ok(sent?)
    };
    let cursor = resume.cursor;
    // Fewer inputs than partitions: each input is split (by byte ranges where it can be, else every
    // N-th record); otherwise whole inputs were chosen already.
    let part = cfg
        .partition
        .filter(|_| by_record)
        .map(|[k, n]| corpus::Part { k, n, bz2_index });
    let mut seq = 0u64;
    let mut chunk: Vec<Tagged<Item>> = Vec::with_capacity(CHUNK_DOCS);
    let mut chunk_bytes = 0usize;
    for (idx, input) in inputs.iter().enumerate() {
        let (done, records) = resume.inputs[idx];
        if done && seq + records < cursor {
            // Wholly covered by complete shards (its records and its end): not even read again.
            seq += records + 1;
            continue;
        }
        let mut sink = |item: Item| -> Result<()> {
            let s = seq;
            seq += 1;
            if s < cursor {
                return Ok(());
            }
            if let Item::Doc(d) = &item {
                chunk_bytes += d.text.len();
            }
            // With --on-error fail the first error ends the run: hand it on now rather than when the
            // chunk fills, and stop reading (the rest of an endless record would never let it fill).
            let fatal = cfg.on_error == OnError::Fail
                && matches!(&item, Item::Skip(skip) if skip.reason.is_error());
            chunk.push((s, idx, item));
            if fatal {
                send(Some((
                    raw_bytes.load(Ordering::Relaxed),
                    std::mem::take(&mut chunk),
                )))?;
                return Err(Closed.into());
            }
            if chunk.len() >= CHUNK_DOCS || chunk_bytes >= CHUNK_BYTES {
                chunk_bytes = 0;
                send(Some((
                    raw_bytes.load(Ordering::Relaxed),
                    std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_DOCS)),
                )))?;
            }
            Ok(())
        };
        corpus::read_input_part(
            input,
            &cfg.read,
            part,
            raw_bytes.clone(),
            not_read,
            &mut sink,
        )?;
    }
    if !chunk.is_empty() {
        send(Some((raw_bytes.load(Ordering::Relaxed), chunk)))?;
    }
    send(None)
}

fn process_chunk(
    segmenter: &Segmenter,
    mut chunk: Vec<Tagged<Item>>,
    stages: &Stages,
) -> Result<Vec<Tagged<Processed>>> {
    // Markup first, over the whole chunk, so that its CPU is timed apart from segmenting's.
    stages.markup_cpu.cpu(|| {
        for (_, _, item) in &mut chunk {
            if let Item::Doc(doc) = item {
                doc.to_plain();
            }
        }
    });
    stages.segment_cpu.cpu(|| {
        chunk
            .into_iter()
            .map(|(seq, idx, item)| {
                let p = match item {
                    Item::Doc(doc) => match segmenter.segment(doc)? {
                        Ok(row) => Processed::Row(row),
                        Err(skip) => Processed::Skip(skip),
                    },
                    Item::Skip(skip) => Processed::Skip(skip),
                    Item::End {
                        bytes,
                        format,
                        compression,
                    } => Processed::End {
                        bytes,
                        format,
                        compression,
                    },
                };
                Ok((seq, idx, p))
            })
            .collect()
    })
}

/// The writer thread: results put back in input order -> shards, the manifest after each shard,
/// shard paths on stdout.
fn write_all(
    cfg: &PrepareConfig,
    manifest: &mut Manifest,
    rx: Receiver<Done>,
    slots: Receiver<()>,
    raw_bytes: &AtomicU64,
    (total_bytes, not_read): (Option<u64>, &AtomicU64),
    progress: &crate::progress::Progress,
) -> Result<()> {
    let mut w = Writer {
        cfg,
        manifest,
        current: None,
        logged: BTreeMap::new(),
        last_seq: 0,
        docs: 0,
        tokens: 0,
    };
    w.last_seq = w.manifest.cursor;
    let started = Instant::now();
    let mut last_tick = Instant::now();
    let tick = crate::progress::interval().min(Duration::from_millis(250));
    let mut reorder: BTreeMap<u64, (u64, Result<Vec<Tagged<Processed>>>)> = BTreeMap::new();
    let mut consumed = raw_bytes.load(Ordering::Relaxed);
    let (mut next, mut total) = (0u64, None);
    let result = (|| -> Result<()> {
        while total != Some(next) {
            // A timeout, so that a stalled input (a slow pipe) still gets its progress lines.
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Done::Chunk(i, read_at, r)) => {
                    reorder.insert(i, (read_at, r));
                }
                Ok(Done::End(n)) => total = Some(n),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    bail!("the pipeline stopped before the end of the input")
                }
            }
            while let Some((read_at, chunk)) = reorder.remove(&next) {
                next += 1;
                let _ = slots.recv(); // one more chunk may now enter the pipeline
                w.write_chunk(chunk?)?;
                consumed = consumed.max(read_at);
            }
            if last_tick.elapsed() > tick {
                last_tick = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                // Bytes of split inputs that other partitions read are not this run's to read.
                progress.set_total(
                    total_bytes.map(|t| t.saturating_sub(not_read.load(Ordering::Relaxed))),
                );
                progress.update(
                    consumed,
                    &format!(
                        "{} docs, {} tokens ({:.0}/s), {} shard(s)",
                        w.docs,
                        w.tokens,
                        w.tokens as f64 / secs,
                        w.manifest.shards.len()
                    ),
                );
            }
        }
        Ok(())
    })();
    drop(slots);
    if let Err(e) = result {
        if let Some(shard) = w.current.take() {
            shard.abandon();
        }
        return Err(e);
    }
    if let Some(shard) = w.current.take() {
        let cursor = w.last_seq;
        close_shard(cfg, w.manifest, shard, cursor)?;
    }
    for (reason, n) in &w.logged {
        if *n > LOGGED_SKIPS {
            log::warn!("skipped ({reason}): {} more not shown", n - LOGGED_SKIPS);
        }
    }
    w.manifest.cursor = w.last_seq;
    w.manifest.complete = true;
    w.manifest.store(&cfg.out)
}

/// The writer's state between chunks.
struct Writer<'a> {
    cfg: &'a PrepareConfig,
    manifest: &'a mut Manifest,
    current: Option<ShardWriter>,
    logged: BTreeMap<corpus::SkipReason, u64>,
    /// One past the last item written: the cursor a shard closed now would record.
    last_seq: u64,
    docs: u64,
    tokens: u64,
}

impl Writer<'_> {
    fn write_chunk(&mut self, chunk: Vec<Tagged<Processed>>) -> Result<()> {
        for (seq, idx, p) in chunk {
            self.last_seq = seq + 1;
            let stats = &mut self.manifest.inputs[idx];
            stats.records += !matches!(p, Processed::End { .. }) as u64;
            match p {
                Processed::Row(row) => {
                    stats.documents += 1;
                    stats.spans += row.spans.len() as u64;
                    stats.tokens += row.num_tokens as u64;
                    self.docs += 1;
                    self.tokens += row.num_tokens as u64;
                    let shard = match self.current.as_mut() {
                        Some(s) => s,
                        None => {
                            let path = self
                                .cfg
                                .out
                                .join(shard_file_name(self.manifest.shards.len()));
                            self.current
                                .insert(ShardWriter::create(&path, self.cfg.writer.clone())?)
                        }
                    };
                    if shard.push(row)? {
                        let shard = self.current.take().expect("just pushed to it");
                        close_shard(self.cfg, self.manifest, shard, seq + 1)?;
                    }
                }
                Processed::Skip(skip) => {
                    *stats
                        .skipped
                        .entry(skip.reason.as_str().to_string())
                        .or_default() += 1;
                    if skip.reason.is_error() {
                        if self.cfg.on_error == OnError::Fail {
                            bail!("{} (--on-error fail)", skip.detail);
                        }
                        let n = self.logged.entry(skip.reason).or_default();
                        *n += 1;
                        if *n <= LOGGED_SKIPS {
                            log::warn!("skipped ({}): {}", skip.reason, skip.detail);
                        }
                    } else {
                        log::debug!("skipped ({}): {}", skip.reason, skip.detail);
                    }
                }
                Processed::End {
                    bytes,
                    format,
                    compression,
                } => {
                    stats.done = true;
                    stats.bytes = bytes;
                    stats.format = Some(format);
                    stats.compression = Some(compression);
                }
            }
        }
        Ok(())
    }
}

fn close_shard(
    cfg: &PrepareConfig,
    manifest: &mut Manifest,
    shard: ShardWriter,
    cursor: u64,
) -> Result<()> {
    let entry = shard.close()?;
    let path = cfg.out.join(&entry.file);
    manifest.shards.push(entry);
    manifest.cursor = cursor;
    manifest.store(&cfg.out)?;
    if cfg.print_shards {
        crate::logging::suspended(|| -> Result<()> {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", path.display())?;
            stdout.flush()?;
            Ok(())
        })?;
    }
    Ok(())
}

fn summary(m: &Manifest, elapsed: Duration) {
    let t = &m.totals;
    let secs = elapsed.as_secs_f64().max(1e-9);
    log::info!(
        "prepared {} documents, {} spans, {} tokens into {} shard(s) ({:.1} MB) from {:.1} MB of input in {:.1} s ({:.0} tokens/s, {:.1} MB/s)",
        t.documents,
        t.spans,
        t.tokens,
        t.shards,
        t.shard_bytes as f64 / 1e6,
        t.input_bytes as f64 / 1e6,
        secs,
        t.tokens as f64 / secs,
        t.input_bytes as f64 / 1e6 / secs
    );
    if !t.skipped.is_empty() {
        let parts: Vec<String> = t.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        log::info!("skipped: {}", parts.join(", "));
    }
}
