//! The parallel, streaming, deterministic prepare pipeline.
//!
//! ```text
//! reader thread ──chunks──> rayon (clean, split, tokenize, pack) ──in order──> writer thread
//!   one input at a time       a bounded window of chunks                 shards + manifest
//! ```
//! The writer thread cuts the rows into row groups by their uncompressed size and hands each to the
//! pool to be encoded and compressed; it appends the finished row groups in order and rotates shards.
//! Every channel is bounded, chunks are bounded in documents and bytes, and at most `2 x threads` row
//! groups are in flight: memory does not grow with the corpus. Chunks keep their input order
//! through the parallel stage, and every random draw is keyed by document id, so the output bytes do
//! not depend on the thread count. Each completed shard is renamed into place and the manifest
//! rewritten with the input cursor it reaches; a rerun of the same command resumes from there
//! (`super::folder` decides, before the threads start, whether to start, resume or leave the folder).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

pub use super::config::PrepareConfig;
use super::folder::{self, shard_file_name, Created, Folder, Opened, Resume};
use super::segment::{Segmented, Segmenter};
use super::stages::{Clock, StageSeconds, Stages};
use super::OnError;
use crate::corpus::{self, Input, Item, Skip};
use crate::shards::manifest::{InputStats, Manifest};
use crate::shards::writer::{EncodedRowGroup, RowGroupCutter, RowGroupEncoder, ShardWriter};
use crate::tokenizer::Tokenizer;

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

/// Runs prepare; returns the final manifest.
pub fn run(cfg: &PrepareConfig) -> Result<Manifest> {
    let created = Created::before(cfg);
    let result = run_measured(cfg).map(|(m, _)| m);
    if result.is_err() {
        created.remove_if_no_shard(&cfg.out);
    }
    result
}

/// As [`run`], with where the time went (see [`super::stages`]).
pub fn run_measured(cfg: &PrepareConfig) -> Result<(Manifest, StageSeconds)> {
    let started = Instant::now();
    let text = crate::tokenizer::read_json(&cfg.tokenizer)?;
    let tokenizer = Loading::default();
    // A file that does not even look like a WordPiece tokenizer is loaded before anything else, so
    // that its error comes before the folder is touched; any other loads while the folder opens and
    // the reader starts.
    if !crate::tokenizer::looks_like_word_piece(&text) {
        tokenizer.set(crate::tokenizer::load_text(&cfg.tokenizer, &text)?);
    }
    std::thread::scope(|s| {
        if !tokenizer.is_set() {
            s.spawn(|| {
                tokenizer.load(&cfg.tokenizer, || {
                    crate::tokenizer::load_text(&cfg.tokenizer, &text)
                });
                log::debug!(
                    "tokenizer loaded in {:.3} s",
                    started.elapsed().as_secs_f64()
                );
            });
        }
        // The manifest records the hash of the bytes loaded, not of a second read of the file.
        let sha256 = crate::shards::manifest::sha256_bytes(text.as_bytes());
        run_with(cfg, (&tokenizer, sha256), started)
    })
}

/// The tokenizer of a run, loading on a thread of its own while the folder opens and the inputs are
/// read (its 0.06-0.1 s is most of a small input's run otherwise): the workers wait for it before
/// their first span, the writer before the manifest takes its vocabulary.
#[derive(Default)]
struct Loading(std::sync::OnceLock<std::result::Result<Tokenizer, String>>);

impl Loading {
    fn set(&self, tokenizer: Tokenizer) {
        self.set_result(Ok(tokenizer));
    }

    fn set_result(&self, loaded: Result<Tokenizer>) {
        let _ = self.0.set(loaded.map_err(|e| format!("{e:#}")));
    }

    /// Runs `load` and keeps what it gives; a panic in it becomes the error (the cell is set
    /// whatever happens: the workers and the writer wait for it).
    fn load(
        &self,
        path: &std::path::Path,
        load: impl FnOnce() -> Result<Tokenizer> + std::panic::UnwindSafe,
    ) {
        let loaded = std::panic::catch_unwind(load).unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "{}: cannot load tokenizer: the tokenizer library panicked",
                path.display()
            ))
        });
        self.set_result(loaded);
    }

    fn is_set(&self) -> bool {
        self.0.get().is_some()
    }

    /// The tokenizer, once loaded, or the load's error.
    fn wait(&self) -> Result<&Tokenizer> {
        self.0.wait().as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn run_with(
    cfg: &PrepareConfig,
    (tokenizer, tokenizer_sha256): (&Loading, String),
    started: Instant,
) -> Result<(Manifest, StageSeconds)> {
    let stages = Stages::default();
    let decode_cpu_before = corpus::decode::decompress::decode_cpu();
    let folder = match folder::open(cfg, tokenizer_sha256)? {
        // Nothing to do; a tokenizer that fails to load is still an error.
        Opened::Complete(m) => {
            tokenizer.wait()?;
            return Ok((m, stages.seconds(started.elapsed())));
        }
        Opened::Ready(folder) => folder,
    };
    let Folder {
        inputs,
        owned,
        by_record,
        bz2_index,
        mut manifest,
        // Held until this function returns.
        lock: _lock,
    } = folder;
    let our_inputs = folder::our_inputs(&inputs, &owned);
    let resume = Resume::of(&manifest);

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
    // Progress: raw (compressed) input bytes over the inputs' sizes; inputs that complete shards
    // already cover are not read again and count as done.
    let (covered_bytes, total_bytes) = folder::progress_bytes(&our_inputs, &resume);
    raw_bytes.store(covered_bytes, Ordering::Relaxed);
    let not_read = AtomicU64::new(0);
    let progress =
        crate::progress::Progress::new("prepare", crate::progress::Unit::Bytes, total_bytes);
    progress.update(covered_bytes, "");

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
                        (&pool, &stages),
                        (&mut manifest, tokenizer),
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
                let stages = &stages;
                scope.spawn(move |_| {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        process_chunk(cfg, tokenizer, chunk, stages)
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
    // JSON Lines and TSV records are parsed in the workers, not here; except when the first bad
    // record must end the run (`--on-error fail`): the reader finds it and stops reading at once.
    let read = corpus::ReadOptions {
        defer_parsing: !cfg.read.stop_at_error,
        ..cfg.read.clone()
    };
    // Fewer inputs than partitions: each input is split (by byte ranges where it can be, else every
    // N-th record); otherwise whole inputs were chosen already.
    let part = cfg
        .partition
        .filter(|_| by_record)
        .map(|[k, n]| corpus::Part { k, n, bz2_index });
    let mut seq = 0u64;
    let mut chunk: Vec<Tagged<Item>> = Vec::with_capacity(CHUNK_DOCS);
    let mut chunk_bytes = 0usize;
    // Read whole, each input is opened while the one before it is read, so its decoders start early
    // (`corpus::decode::ahead`); not an input a resume may skip, nor one a partition reads part of.
    let open_ahead = |idx: usize| {
        let input = inputs.get(idx)?;
        let read_whole = part.is_none() && input.exists && !resume.inputs[idx].0;
        read_whole.then(|| corpus::decode::ahead::open(&input.path))
    };
    let mut next = open_ahead(0);
    for (idx, input) in inputs.iter().enumerate() {
        let ahead = std::mem::replace(&mut next, open_ahead(idx + 1));
        let (done, records) = resume.inputs[idx];
        if resume.covers((done, records), seq) {
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
            chunk_bytes += match &item {
                Item::Doc(d) => d.text.len(),
                Item::Raw(r) => r.byte_len(),
                _ => 0,
            };
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
            &read,
            part,
            ahead,
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
    cfg: &PrepareConfig,
    tokenizer: &Loading,
    chunk: Vec<Tagged<Item>>,
    stages: &Stages,
) -> Result<Vec<Tagged<Processed>>> {
    let read = &cfg.read;
    // Lines the reader handed on unparsed become the documents or skips they stand for.
    let mut chunk: Vec<Tagged<Item>> = stages.parse_cpu.cpu(|| {
        chunk
            .into_iter()
            .map(|(seq, idx, item)| match item {
                Item::Raw(raw) => (seq, idx, raw.parse(read)),
                item => (seq, idx, item),
            })
            .collect()
    });
    // Markup first, over the whole chunk, so that its CPU is timed apart from segmenting's.
    stages.markup_cpu.cpu(|| {
        for (_, _, item) in &mut chunk {
            if let Item::Doc(doc) = item {
                doc.to_plain();
            }
        }
    });
    let segmenter = Segmenter {
        tokenizer: tokenizer.wait()?,
        config: &cfg.segment,
    };
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
                    Item::Raw(_) => unreachable!("parsed above"),
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
    (pool, stages): (&rayon::ThreadPool, &Stages),
    (manifest, tokenizer): (&mut Manifest, &Loading),
    rx: Receiver<Done>,
    slots: Receiver<()>,
    raw_bytes: &AtomicU64,
    (total_bytes, not_read): (Option<u64>, &AtomicU64),
    progress: &crate::progress::Progress,
) -> Result<()> {
    // The folder stored a new run's manifest before the tokenizer had loaded: its vocabulary now,
    // before any shard.
    if folder::record_tokenizer(manifest, tokenizer.wait()?)? {
        manifest.store(&cfg.out)?;
    }
    let (encoded_tx, encoded_rx) = unbounded();
    let mut w = Writer {
        cfg,
        manifest,
        current: None,
        groups: RowGroups {
            pool,
            stages,
            encoder: Arc::new(RowGroupEncoder::new()?),
            cutter: RowGroupCutter::new(&cfg.writer),
            snapshot: None,
            queued: VecDeque::new(),
            next_cut: 0,
            next_append: 0,
            done: BTreeMap::new(),
            max_in_flight: 2 * cfg.threads.max(1),
            tx: encoded_tx,
            rx: encoded_rx,
        },
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
            // Row groups encoded meanwhile go to the shard now (a shard is printed once it is full,
            // not when the next row group is cut).
            w.append_ready()?;
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
        // The last, short row group; then every row group still being encoded.
        if let Some(rows) = w.groups.cutter.take() {
            let at = match w.groups.snapshot.take() {
                Some(at) => at,
                None => w.here(),
            };
            w.cut(rows, at)?;
        }
        while w.groups.next_append < w.groups.next_cut {
            w.append_next()?;
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

/// Where the stream stands after a row group's last row: the cursor and input statistics a shard that
/// ends with that row group records.
struct Position {
    cursor: u64,
    inputs: Vec<InputStats>,
}

/// Row groups between the cut and the shard: encoded on the pool, appended in stream order.
struct RowGroups<'a> {
    pool: &'a rayon::ThreadPool,
    stages: &'a Stages,
    encoder: Arc<RowGroupEncoder>,
    cutter: RowGroupCutter,
    /// Where the stream stood after the last row given to `cutter`, once other items followed it.
    snapshot: Option<Position>,
    /// The positions of the row groups cut and not yet appended, in order.
    queued: VecDeque<Position>,
    next_cut: u64,
    next_append: u64,
    /// Encoded row groups that arrived before their turn, by index.
    done: BTreeMap<u64, Result<EncodedRowGroup>>,
    max_in_flight: usize,
    tx: Sender<(u64, Duration, Result<EncodedRowGroup>)>,
    rx: Receiver<(u64, Duration, Result<EncodedRowGroup>)>,
}

/// The writer's state between chunks.
struct Writer<'a> {
    cfg: &'a PrepareConfig,
    manifest: &'a mut Manifest,
    current: Option<ShardWriter>,
    groups: RowGroups<'a>,
    logged: BTreeMap<corpus::SkipReason, u64>,
    /// One past the last item written: the cursor a shard closed now would record.
    last_seq: u64,
    docs: u64,
    tokens: u64,
}

impl Writer<'_> {
    /// Where the stream stands now.
    fn here(&self) -> Position {
        Position {
            cursor: self.last_seq,
            inputs: self.manifest.inputs.clone(),
        }
    }

    /// Hands the rows of a row group ending at `at` to the pool, once fewer than `max_in_flight` are
    /// in flight (appending the oldest meanwhile).
    fn cut(&mut self, rows: Vec<Segmented>, at: Position) -> Result<()> {
        while self.groups.next_cut - self.groups.next_append >= self.groups.max_in_flight as u64 {
            self.append_next()?;
        }
        let index = self.groups.next_cut;
        self.groups.next_cut += 1;
        self.groups.queued.push_back(at);
        let (encoder, tx) = (self.groups.encoder.clone(), self.groups.tx.clone());
        self.groups.pool.spawn(move || {
            let t = super::stages::thread_cpu();
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| encoder.encode(rows)))
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a row-group encoder panicked")));
            let _ = tx.send((index, super::stages::thread_cpu().saturating_sub(t), result));
        });
        self.append_ready()
    }

    /// Appends the row groups whose encoding has finished, in order, without waiting.
    fn append_ready(&mut self) -> Result<()> {
        while let Ok((i, cpu, r)) = self.groups.rx.try_recv() {
            self.groups.stages.encode_cpu.add(cpu);
            self.groups.done.insert(i, r);
        }
        while self.groups.done.contains_key(&self.groups.next_append) {
            self.append_next()?;
        }
        Ok(())
    }

    /// Appends the oldest row group in flight (waiting for its encoding), closing the shard it fills.
    fn append_next(&mut self) -> Result<()> {
        let next = self.groups.next_append;
        let group = loop {
            if let Some(r) = self.groups.done.remove(&next) {
                break r?;
            }
            let (i, cpu, r) = self
                .groups
                .rx
                .recv()
                .map_err(|_| anyhow::anyhow!("the row-group encoders stopped"))?;
            self.groups.stages.encode_cpu.add(cpu);
            self.groups.done.insert(i, r);
        };
        self.groups.next_append += 1;
        let at = self
            .groups
            .queued
            .pop_front()
            .expect("a position per row group in flight");
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
        if shard.append(group)? {
            let shard = self.current.take().expect("just appended to it");
            // The manifest describes the stream up to this row group's last row, not the rows and
            // skips the writer has seen since.
            let live = std::mem::replace(&mut self.manifest.inputs, at.inputs);
            let closed = close_shard(self.cfg, self.manifest, shard, at.cursor);
            self.manifest.inputs = live;
            closed?;
        }
        Ok(())
    }

    fn write_chunk(&mut self, chunk: Vec<Tagged<Processed>>) -> Result<()> {
        for (seq, idx, p) in chunk {
            if !matches!(p, Processed::Row(_))
                && !self.groups.cutter.is_empty()
                && self.groups.snapshot.is_none()
            {
                // The first item after a row group's rows so far: a shard ending with them ends here.
                self.groups.snapshot = Some(self.here());
            }
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
                    self.groups.snapshot = None;
                    if let Some(rows) = self.groups.cutter.push(row) {
                        let at = self.here();
                        self.cut(rows, at)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokenizer_load_that_fails_or_panics_is_an_error_to_whoever_waits() {
        let failed = Loading::default();
        let path = std::path::Path::new("t.json");
        failed.load(path, || {
            Err(anyhow::anyhow!("t.json: cannot load tokenizer: bad"))
        });
        assert_eq!(
            failed.wait().unwrap_err().to_string(),
            "t.json: cannot load tokenizer: bad"
        );
        // A panic still sets the cell: a worker waiting for it gets an error, not a hang.
        let panicked = Arc::new(Loading::default());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waiting = panicked.clone();
        std::thread::spawn(move || {
            let _ = tx.send(waiting.wait().map(|_| ()).unwrap_err().to_string());
        });
        let loading = panicked.clone();
        std::thread::spawn(move || loading.load(path, || panic!("a bug in the tokenizer crate")));
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting worker got no answer: a panicking load left it waiting");
        assert_eq!(
            got,
            "t.json: cannot load tokenizer: the tokenizer library panicked"
        );
    }
}
