//! The streaming loader: shards -> epoch order over (shard, row group) -> examples -> bounded shuffle
//! buffer -> collator -> batches in a bounded channel. The corpus never sits in memory.
//!
//! Every choice is a function of (seed, epoch, ...): the unit order of (seed, epoch), the span pair of a
//! document of (seed, epoch, doc_id), the shuffle of (seed, epoch), the masks of (seed, epoch, example
//! index). A resumed run regenerates the epoch and skips the batches already trained on without
//! collating them, so it sees exactly the batches the uninterrupted run saw.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::collate::{collate, Batch, Vocab};
use super::config::{DataConfig, Stage};
use crate::rng::keyed_rng;
use crate::shards::read_shard;

/// Where shards come from.
pub enum ShardSource {
    /// A fixed list (a prepared folder): epochs repeat it.
    Files(Vec<PathBuf>),
    /// Paths arriving on a channel (`--data -` following a running `prepare`): one pass.
    Stream(Receiver<PathBuf>),
}

/// Position in the data: batches of `epoch` already consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub batches: u64,
}

/// What a loader sends: `B` is the objective's batch (`collate::Batch` for both pre-training stages).
pub enum Msg<B = Batch> {
    Batch {
        batch: B,
        after: Cursor,
    },
    /// A batch of another rank's slice (not collated): only the position moves.
    Skipped {
        after: Cursor,
    },
    /// An epoch ended; documents with fewer than two spans skipped in it (coCondenser).
    EpochEnd {
        epoch: u64,
        skipped_docs: u64,
    },
    Error(anyhow::Error),
}

pub struct Loader<B = Batch> {
    pub rx: Receiver<Msg<B>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Documents skipped so far for having fewer than two spans.
    pub skipped_docs: Arc<AtomicU64>,
}

impl<B> Loader<B> {
    /// A loader around a thread that sends on `rx` until `stop` is set (or `rx` is dropped).
    pub fn new(
        rx: Receiver<Msg<B>>,
        stop: Arc<AtomicBool>,
        handle: JoinHandle<()>,
        skipped_docs: Arc<AtomicU64>,
    ) -> Self {
        Loader {
            rx,
            stop,
            handle: Some(handle),
            skipped_docs,
        }
    }
}

impl<B> Drop for Loader<B> {
    fn drop(&mut self) {
        // Tell the thread to stop, and keep draining so a blocked send returns and it can see that.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            while !h.is_finished() {
                let _ = self.rx.recv_timeout(std::time::Duration::from_millis(5));
            }
            let _ = h.join();
        }
    }
}

struct Example {
    spans: Vec<Vec<u32>>, // one span (condenser) or two (cocondenser)
}

pub struct LoaderSpec {
    pub stage: Stage,
    pub data: DataConfig,
    pub seed: u64,
    pub vocab: Arc<Vocab>,
    /// Examples (documents for coCondenser) per batch.
    pub examples_per_batch: usize,
    pub start: Cursor,
    /// Which batches of the stream this process trains on.
    pub slice: RankSlice,
}

/// Data parallelism over one example stream: the global step's `world x per_rank` consecutive batches,
/// rank r the r-th run of `per_rank`. Every rank reads the whole stream (so all agree on its order and
/// its end) and collates only its own batches; the others pass as `Msg::Skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankSlice {
    pub rank: usize,
    pub world: usize,
    /// Batches of one rank in one optimizer step (grad_accum).
    pub per_rank: usize,
}

impl RankSlice {
    /// A single process: every batch.
    pub fn all(per_rank: usize) -> Self {
        RankSlice {
            rank: 0,
            world: 1,
            per_rank,
        }
    }

    /// Whether the `n`-th batch since the start (a step boundary) is this rank's.
    fn owns(&self, n: u64) -> bool {
        (n / self.per_rank.max(1) as u64) % self.world.max(1) as u64 == self.rank as u64
    }
}

pub fn start(source: ShardSource, spec: LoaderSpec) -> Loader {
    let (tx, rx) = bounded(spec.data.prefetch);
    let stop = Arc::new(AtomicBool::new(false));
    let skipped = Arc::new(AtomicU64::new(0));
    let (stop2, skipped2) = (stop.clone(), skipped.clone());
    let handle = std::thread::Builder::new()
        .name("loader".into())
        .spawn(move || {
            if let Err(e) = run(source, &spec, &tx, &stop2, &skipped2) {
                let _ = tx.send(Msg::Error(e));
            }
        })
        .expect("spawn the loader thread");
    Loader {
        rx,
        stop,
        handle: Some(handle),
        skipped_docs: skipped,
    }
}

/// Refuses, before anything starts, a prepared folder whose manifest counts cannot fill one batch of
/// `per_batch` examples: spans (Condenser) or documents with two or more spans (coCondenser). Held-out
/// documents only make fewer (a pass that still makes no batch is the loader's error). A manifest
/// without pairable counts (written before they were) is left to that check too.
pub fn ensure_one_batch(
    dir: &std::path::Path,
    m: &crate::shards::Manifest,
    stage: Stage,
    per_batch: usize,
) -> Result<()> {
    let (n, what) = match stage {
        Stage::Condenser => (Some(m.shards.iter().map(|s| s.spans).sum::<u64>()), "spans"),
        Stage::Cocondenser => (
            m.shards.iter().map(|s| s.pairable).sum::<Option<u64>>(),
            "pairable documents (two or more spans)",
        ),
        Stage::Finetune => return Ok(()), // reads no shards
    };
    match n {
        Some(n) if n < per_batch as u64 => anyhow::bail!(
            "{}: {n} {what} in its {} shard(s), fewer than one batch of {per_batch}: lower data.batch_size or prepare more data",
            dir.display(),
            m.shards.len()
        ),
        _ => Ok(()),
    }
}

/// Row groups of a shard (from its footer).
fn row_groups(path: &PathBuf) -> Result<usize> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    Ok(b.metadata().num_row_groups())
}

struct Epoch<'a> {
    spec: &'a LoaderSpec,
    /// Batches sent (or skipped for another rank) since the start, across epochs.
    sent: &'a std::cell::Cell<u64>,
    epoch: u64,
    tx: &'a Sender<Msg>,
    stop: &'a AtomicBool,
    buffer: Vec<Example>,
    shuffle: ChaCha8Rng,
    pending: Vec<Example>,
    batches: u64,
    /// Length groups cut so far (keys the order of their batches).
    groups: u64,
    skipped_docs: u64,
    /// Examples that entered the epoch (spans, or span pairs).
    examples: u64,
}

impl Epoch<'_> {
    /// A pass that made no batch would be repeated without end (and the trainer would wait forever):
    /// an error that says how many examples there were.
    fn ensure_a_batch(&self, what: &str) -> Result<()> {
        if self.batches == 0 {
            let per = self.spec.examples_per_batch;
            let (examples, skipped) = match self.spec.stage {
                Stage::Condenser => ("spans", String::new()),
                Stage::Cocondenser | Stage::Finetune => (
                    "pairable documents",
                    format!(
                        "; {} document(s) with fewer than two spans skipped",
                        self.skipped_docs
                    ),
                ),
            };
            anyhow::bail!(
                "{what} made no batch: {} {examples} (after the held-out documents{skipped}), fewer than one batch of {per}",
                self.examples
            );
        }
        Ok(())
    }

    /// Adds the examples of one row group (through the shuffle buffer).
    fn feed(&mut self, path: &PathBuf, group: usize, skipped_total: &AtomicU64) -> Result<bool> {
        let rows = read_shard(path, Some(vec![group]))?;
        check_ids(&rows, self.spec.vocab.size, path)?;
        let d = &self.spec.data;
        for row in rows {
            if crate::eval::spans::is_held_out(&row.doc_id, d.holdout_seed, d.holdout_fraction) {
                continue; // kept for `condenser eval-spans`
            }
            match self.spec.stage {
                Stage::Condenser => {
                    for span in row.spans {
                        if !self.push(Example { spans: vec![span] })? {
                            return Ok(false);
                        }
                    }
                }
                Stage::Finetune => anyhow::bail!("fine-tuning reads no span shards"),
                Stage::Cocondenser => {
                    if row.spans.len() < 2 {
                        self.skipped_docs += 1;
                        skipped_total.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Two distinct spans, drawn from (seed, epoch, doc_id).
                    let mut rng =
                        keyed_rng(self.spec.seed, &format!("pair/{}", self.epoch), &row.doc_id);
                    let picked: Vec<usize> =
                        rand::seq::index::sample(&mut rng, row.spans.len(), 2).into_vec();
                    let mut spans = row.spans;
                    let (a, b) = (
                        std::mem::take(&mut spans[picked[0]]),
                        std::mem::take(&mut spans[picked[1]]),
                    );
                    if !self.push(Example { spans: vec![a, b] })? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    fn push(&mut self, ex: Example) -> Result<bool> {
        self.examples += 1;
        let cap = self.spec.data.shuffle_buffer.max(1);
        if self.buffer.len() < cap {
            self.buffer.push(ex);
            return Ok(true);
        }
        let i = self.shuffle.random_range(0..self.buffer.len());
        let out = std::mem::replace(&mut self.buffer[i], ex);
        self.emit(out)
    }

    fn drain(&mut self) -> Result<bool> {
        self.buffer.shuffle(&mut self.shuffle);
        while let Some(ex) = self.buffer.pop() {
            if !self.emit(ex)? {
                return Ok(false);
            }
        }
        // A last, partial length group still yields its full batches; an incomplete batch is dropped.
        self.flush()
    }

    /// Examples cut into batches together: one batch, or `group_by_length` batches.
    fn group_size(&self) -> usize {
        self.spec.examples_per_batch * self.spec.data.group_by_length.max(1)
    }

    /// Collects examples into batches; returns false when the trainer has gone.
    fn emit(&mut self, ex: Example) -> Result<bool> {
        self.pending.push(ex);
        if self.pending.len() < self.group_size() {
            return Ok(true);
        }
        self.flush()
    }

    /// Sends the pending examples as full batches. With `group_by_length` > 1 they are first sorted
    /// by length (stable; an example's length is its longest span), so each batch pads little, and the
    /// batches go out in an order shuffled by (seed, epoch, group).
    fn flush(&mut self) -> Result<bool> {
        let per = self.spec.examples_per_batch;
        let mut examples = std::mem::take(&mut self.pending);
        examples.truncate(examples.len() / per * per);
        if examples.is_empty() {
            return Ok(true);
        }
        let mut batches: Vec<Vec<Example>> = Vec::with_capacity(examples.len() / per);
        if self.spec.data.group_by_length > 1 {
            examples.sort_by_key(|e| e.spans.iter().map(Vec::len).max().unwrap_or(0));
            let mut rng = keyed_rng(
                self.spec.seed,
                &format!("group/{}", self.epoch),
                &self.groups.to_string(),
            );
            self.groups += 1;
            let mut it = examples.into_iter();
            while it.len() > 0 {
                batches.push(it.by_ref().take(per).collect());
            }
            batches.shuffle(&mut rng);
        } else {
            batches.push(examples);
        }
        for batch in batches {
            if !self.send(batch)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Collates one batch and sends it; returns false when the trainer has gone.
    fn send(&mut self, examples: Vec<Example>) -> Result<bool> {
        let index = self.batches;
        self.batches += 1;
        if self.epoch == self.spec.start.epoch && index < self.spec.start.batches {
            return Ok(true); // trained on before the resume: skipped without collating
        }
        if self.stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let after = Cursor {
            epoch: self.epoch,
            batches: index + 1,
        };
        let n = self.sent.get();
        self.sent.set(n + 1);
        if !self.spec.slice.owns(n) {
            return Ok(self.tx.send(Msg::Skipped { after }).is_ok());
        }
        // Masks keyed by the span's index in the epoch's stream, whatever the batch and world size.
        let spans: Vec<&[u32]> = examples
            .iter()
            .flat_map(|e| e.spans.iter().map(Vec::as_slice))
            .collect();
        let first = index * spans.len() as u64;
        let mut rngs: Vec<ChaCha8Rng> = (0..spans.len() as u64)
            .map(|j| {
                keyed_rng(
                    self.spec.seed,
                    &format!("mask/{}", self.epoch),
                    &(first + j).to_string(),
                )
            })
            .collect();
        let d = &self.spec.data;
        let batch = collate(
            &spans,
            &mut rngs,
            &self.spec.vocab,
            d.max_len,
            d.mlm_probability,
            if d.pad_to_max_len {
                d.max_len
            } else {
                d.pad_to_multiple_of
            },
        );
        Ok(self.tx.send(Msg::Batch { batch, after }).is_ok())
    }
}

fn run(
    source: ShardSource,
    spec: &LoaderSpec,
    tx: &Sender<Msg>,
    stop: &AtomicBool,
    skipped: &AtomicU64,
) -> Result<()> {
    let sent = std::cell::Cell::new(0u64);
    match source {
        ShardSource::Files(files) => {
            let mut units = Vec::new();
            for f in &files {
                for g in 0..row_groups(f)? {
                    units.push((f.clone(), g));
                }
            }
            anyhow::ensure!(!units.is_empty(), "the shards hold no row groups");
            for epoch in spec.start.epoch.. {
                let mut order = units.clone();
                order.shuffle(&mut keyed_rng(spec.seed, "order", &epoch.to_string()));
                let mut e = new_epoch(spec, &sent, epoch, tx, stop);
                for (path, g) in &order {
                    if !e.feed(path, *g, skipped)? {
                        return Ok(());
                    }
                }
                if !e.drain()? {
                    return Ok(());
                }
                e.ensure_a_batch("a pass over the shards")?;
                // The incomplete last batch is dropped (the coCondenser targets assume full batches).
                if tx
                    .send(Msg::EpochEnd {
                        epoch,
                        skipped_docs: e.skipped_docs,
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
            Ok(())
        }
        ShardSource::Stream(paths) => {
            let mut e = new_epoch(spec, &sent, 0, tx, stop);
            while let Some(path) = next_path(&paths, stop) {
                let n = row_groups(&path)?;
                let mut groups: Vec<usize> = (0..n).collect();
                groups.shuffle(&mut keyed_rng(
                    spec.seed,
                    "order",
                    &path.display().to_string(),
                ));
                for g in groups {
                    if !e.feed(&path, g, skipped)? {
                        return Ok(());
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if e.drain()? {
                e.ensure_a_batch("the whole stream of shards")?;
                let _ = tx.send(Msg::EpochEnd {
                    epoch: 0,
                    skipped_docs: e.skipped_docs,
                });
            }
            Ok(())
        }
    }
}

fn new_epoch<'a>(
    spec: &'a LoaderSpec,
    sent: &'a std::cell::Cell<u64>,
    epoch: u64,
    tx: &'a Sender<Msg>,
    stop: &'a AtomicBool,
) -> Epoch<'a> {
    Epoch {
        spec,
        sent,
        epoch,
        tx,
        stop,
        buffer: Vec::with_capacity(spec.data.shuffle_buffer.min(1 << 20)),
        shuffle: keyed_rng(spec.seed, "shuffle", &epoch.to_string()),
        pending: Vec::new(),
        batches: 0,
        groups: 0,
        skipped_docs: 0,
        examples: 0,
    }
}

/// The next shard path of a stream, waiting for it; None at the end of the stream or when the
/// trainer has stopped (so a stopped trainer never waits on a producer that sends nothing).
fn next_path(paths: &Receiver<PathBuf>, stop: &AtomicBool) -> Option<PathBuf> {
    loop {
        match paths.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(p) => return Some(p),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
            Err(_) => return None,
        }
    }
}

/// Every token id of `rows` must be inside the vocabulary of `vocab` ids: an id outside would index
/// past the embedding table (a panic inside libtorch) or train a row that does not exist. One max per
/// span: a negative int32 id reads as a u32 above every vocabulary.
fn check_ids(rows: &[crate::shards::ShardRow], vocab: u32, path: &std::path::Path) -> Result<()> {
    for row in rows {
        for span in &row.spans {
            if span.iter().max().is_some_and(|&m| m >= vocab) {
                let id = span.iter().copied().find(|&i| i >= vocab).unwrap_or(vocab);
                anyhow::bail!(
                    "{}: document {:?} holds the token id {} (as stored, int32), outside the vocabulary of {vocab} ids; the shard was not made with this tokenizer, or is damaged (`condenser inspect --verify` lists every such shard)",
                    path.display(),
                    row.doc_id,
                    id as i32
                );
            }
        }
    }
    Ok(())
}
