//! Fine-tuning data: Tevatron's training JSON Lines (one query a line: `query_id`, `query`,
//! `positive_passages`, `negative_passages`, each passage `{docid, title, text}`), compressed or not,
//! streamed into batches of queries with their passages, in a bounded shuffle buffer.
//!
//! Every choice is keyed, as in the span loader: the shuffle by (seed, epoch); a query's positive and
//! negatives by (seed, epoch, query id), following Tevatron's rule (the positive rotates with the
//! epoch; negatives are a fixed keyed permutation read in a window that moves each epoch, or drawn with
//! replacement when there are too few). A resumed run regenerates the epoch and skips the batches
//! already trained on without tokenizing them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use crossbeam_channel::{bounded, Sender};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;

use super::collate::Batch;
use super::config::DataConfig;
use super::loader::{Cursor, Loader, Msg, RankSlice};
use crate::corpus::lines::{read_line_capped, Line};
use crate::prepare::segment::{keyed_rng, stable_hash};
use crate::tokenizer::SpecialIds;

/// The longest training line read (a query with hundreds of negatives is a few hundred KB).
const MAX_LINE: usize = 64 << 20;

/// One step's queries and their passages: query i's passages are rows i*n .. (i+1)*n of `passages`,
/// its positive first.
#[derive(Debug, Clone)]
pub struct PairBatch {
    pub queries: Batch,
    pub passages: Batch,
    /// Passages per query (`data.train_n_passages`).
    pub n_passages: usize,
}

#[derive(Deserialize)]
struct RawPassage {
    #[serde(default)]
    title: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct RawQuery {
    query_id: serde_json::Value,
    query: String,
    positive_passages: Vec<RawPassage>,
    #[serde(default)]
    negative_passages: Vec<RawPassage>,
}

/// A training query with its passages' texts.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: String,
    pub text: String,
    pub positives: Vec<String>,
    pub negatives: Vec<String>,
}

/// A passage as the model reads it: "title text" (or the text when there is no title), exactly as
/// `condenser eval` joins BEIR titles, so training and evaluation see the same input.
pub fn passage_text(title: Option<&str>, text: &str) -> String {
    match title {
        Some(t) if !t.is_empty() => format!("{t} {text}"),
        _ => text.to_string(),
    }
}

/// Why a line was not trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a Tevatron training record (bad JSON, a missing field, longer than MAX_LINE).
    Malformed(String),
    NoPositive,
    /// Fewer than one negative while `train_n_passages` > 1.
    NoNegative,
}

/// Parses one line; Ok(None) for a blank line.
pub fn parse_line(line: &[u8], n_passages: usize) -> Result<Option<Query>, Skip> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let raw: RawQuery = serde_json::from_slice(line).map_err(|e| Skip::Malformed(e.to_string()))?;
    let id = match raw.query_id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(Skip::Malformed(format!(
                "query_id must be a string or a number, got {other}"
            )))
        }
    };
    if raw.positive_passages.is_empty() {
        return Err(Skip::NoPositive);
    }
    if n_passages > 1 && raw.negative_passages.is_empty() {
        return Err(Skip::NoNegative);
    }
    let join = |ps: Vec<RawPassage>| -> Vec<String> {
        ps.into_iter()
            .map(|p| passage_text(p.title.as_deref(), &p.text))
            .collect()
    };
    Ok(Some(Query {
        id,
        text: raw.query,
        positives: join(raw.positive_passages),
        negatives: join(raw.negative_passages),
    }))
}

/// Tevatron's choice for `q` in `epoch`: the positive, then `n - 1` negatives.
pub fn sample_passages(q: &Query, n: usize, seed: u64, epoch: u64) -> Vec<&str> {
    let hashed = stable_hash(&[&seed.to_le_bytes(), b"passages", q.id.as_bytes()]);
    let pos = &q.positives[((hashed >> 1).wrapping_add(epoch) % q.positives.len() as u64) as usize];
    let mut out = Vec::with_capacity(n);
    out.push(pos.as_str());
    let k = n - 1;
    if k == 0 {
        return out;
    }
    let negs = &q.negatives;
    if negs.len() < k {
        let mut rng = keyed_rng(seed, &format!("negatives/{epoch}"), &q.id);
        out.extend((0..k).map(|_| negs[rng.random_range(0..negs.len())].as_str()));
    } else {
        // A permutation fixed for the query, read in a window that moves by k each epoch (wrapping), so
        // successive epochs see different negatives.
        let mut order: Vec<usize> = (0..negs.len()).collect();
        order.shuffle(&mut keyed_rng(seed, "negatives", &q.id));
        let offset = (epoch as usize * k) % negs.len();
        out.extend((0..k).map(|j| negs[order[(offset + j) % negs.len()]].as_str()));
    }
    out
}

/// `[CLS] text [SEP]` rows, truncated to `max_len`, padded to the longest (no MLM labels).
pub fn tokenize_rows(
    tok: &crate::tokenizer::Tokenizer,
    special: &SpecialIds,
    texts: &[&str],
    max_len: usize,
) -> Result<Batch> {
    let seqs: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| crate::tokenizer::encode_for_model(tok, special, t, max_len))
        .collect::<Result<_>>()?;
    let len = seqs.iter().map(Vec::len).max().unwrap_or(2);
    let mut input_ids = Vec::with_capacity(seqs.len() * len);
    let mut attention_mask = Vec::with_capacity(seqs.len() * len);
    let mut real = 0;
    for s in &seqs {
        input_ids.extend_from_slice(s);
        input_ids.extend(std::iter::repeat_n(special.pad as i64, len - s.len()));
        attention_mask.extend(std::iter::repeat_n(1i64, s.len()));
        attention_mask.extend(std::iter::repeat_n(0i64, len - s.len()));
        real += s.len();
    }
    Ok(Batch {
        rows: seqs.len(),
        len,
        input_ids,
        attention_mask,
        labels: Vec::new(),
        real_tokens: real,
    })
}

/// Reads every line of `files` in order, calling `f(file, line number, parsed)`.
pub fn for_each_query(
    files: &[PathBuf],
    n_passages: usize,
    stop: &AtomicBool,
    mut f: impl FnMut(&Path, u64, Result<Query, Skip>) -> Result<bool>,
) -> Result<()> {
    let mut buf = Vec::new();
    for file in files {
        let (_, mut r) = crate::corpus::decompress::open(file, Arc::new(AtomicU64::new(0)))?;
        let mut lineno = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let line = read_line_capped(&mut *r, &mut buf, MAX_LINE, true)
                .with_context(|| format!("{}: line {}: cannot read", file.display(), lineno + 1))?;
            lineno += 1;
            let parsed = match line {
                Line::Eof => break,
                Line::Abandoned(n) => Err(Skip::Malformed(format!(
                    "a line of {n} bytes, longer than {MAX_LINE}"
                ))),
                _ => match parse_line(&buf, n_passages) {
                    Ok(None) => continue,
                    Ok(Some(q)) => Ok(q),
                    Err(s) => Err(s),
                },
            };
            if !f(file, lineno, parsed)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Skipped lines by reason; the first few are named with file:line.
#[derive(Debug, Default)]
pub struct SkipCounts {
    pub malformed: u64,
    pub no_positive: u64,
    pub no_negative: u64,
}

impl SkipCounts {
    const NAMED: u64 = 5;

    pub fn total(&self) -> u64 {
        self.malformed + self.no_positive + self.no_negative
    }

    /// Counts `skip` (and logs it, for the first few of each reason, when `log`).
    pub fn add(&mut self, file: &Path, line: u64, skip: &Skip, log: bool) {
        let (n, what) = match skip {
            Skip::Malformed(e) => (&mut self.malformed, format!("not a training record: {e}")),
            Skip::NoPositive => (&mut self.no_positive, "no positive passage".to_string()),
            Skip::NoNegative => (
                &mut self.no_negative,
                "no negative passage (data.train_n_passages > 1)".to_string(),
            ),
        };
        *n += 1;
        if log && *n <= Self::NAMED {
            log::warn!("{}:{line}: skipped: {what}", file.display());
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} line(s) skipped: {} malformed, {} without a positive, {} without a negative",
            self.total(),
            self.malformed,
            self.no_positive,
            self.no_negative
        )
    }
}

/// Queries one epoch trains on, and the lines skipped (one pass; the loader names them by line).
pub fn count_queries(files: &[PathBuf], n_passages: usize) -> Result<(u64, SkipCounts)> {
    let (mut n, mut skips) = (0u64, SkipCounts::default());
    for_each_query(
        files,
        n_passages,
        &AtomicBool::new(false),
        |file, line, q| {
            match q {
                Ok(_) => n += 1,
                Err(s) => skips.add(file, line, &s, false),
            }
            Ok(true)
        },
    )?;
    Ok((n, skips))
}

pub struct PairSpec {
    pub files: Vec<PathBuf>,
    pub data: DataConfig,
    pub seed: u64,
    pub tokenizer: Arc<crate::tokenizer::Tokenizer>,
    pub special: SpecialIds,
    pub start: Cursor,
    pub slice: RankSlice,
}

/// Starts the loader thread: batches of `data.batch_size` queries, epoch after epoch.
pub fn start(spec: PairSpec) -> Loader<PairBatch> {
    let (tx, rx) = bounded(spec.data.prefetch);
    let stop = Arc::new(AtomicBool::new(false));
    let skipped = Arc::new(AtomicU64::new(0));
    let (stop2, skipped2) = (stop.clone(), skipped.clone());
    let handle = std::thread::Builder::new()
        .name("pairs".into())
        .spawn(move || {
            if let Err(e) = run(&spec, &tx, &stop2, &skipped2) {
                let _ = tx.send(Msg::Error(e));
            }
        })
        .expect("spawn the fine-tuning loader thread");
    Loader::new(rx, stop, handle, skipped)
}

fn run(
    spec: &PairSpec,
    tx: &Sender<Msg<PairBatch>>,
    stop: &AtomicBool,
    skipped: &AtomicU64,
) -> Result<()> {
    let d = &spec.data;
    let mut sent = 0u64; // batches since the start (a step boundary), for the rank slice
    for epoch in spec.start.epoch.. {
        let mut shuffle = keyed_rng(spec.seed, "query-shuffle", &epoch.to_string());
        let mut buffer: Vec<Query> = Vec::new();
        let mut pending: Vec<Query> = Vec::new();
        let mut batches = 0u64;
        let mut skips = SkipCounts::default();
        let mut alive = true;
        let mut emit = |q: Query, batches: &mut u64, sent: &mut u64| -> Result<bool> {
            pending.push(q);
            if pending.len() < d.batch_size {
                return Ok(true);
            }
            let group = std::mem::take(&mut pending);
            let index = *batches;
            *batches += 1;
            if epoch == spec.start.epoch && index < spec.start.batches {
                return Ok(true); // trained on before the resume
            }
            let after = Cursor {
                epoch,
                batches: index + 1,
            };
            let n = *sent;
            *sent += 1;
            if (n / spec.slice.per_rank.max(1) as u64) % spec.slice.world.max(1) as u64
                != spec.slice.rank as u64
            {
                return Ok(tx.send(Msg::Skipped { after }).is_ok());
            }
            let batch = collate_pairs(spec, &group, epoch)?;
            Ok(tx.send(Msg::Batch { batch, after }).is_ok())
        };
        for_each_query(&spec.files, d.train_n_passages, stop, |file, line, q| {
            let q = match q {
                Ok(q) => q,
                Err(s) => {
                    // Named (the first few of each reason) in this process's first epoch only.
                    skips.add(file, line, &s, epoch == spec.start.epoch);
                    if epoch == spec.start.epoch {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(true);
                }
            };
            let cap = d.shuffle_buffer.max(1);
            let out = if buffer.len() < cap {
                buffer.push(q);
                return Ok(true);
            } else {
                let i = shuffle.random_range(0..buffer.len());
                std::mem::replace(&mut buffer[i], q)
            };
            alive = emit(out, &mut batches, &mut sent)?;
            Ok(alive)
        })?;
        if !alive || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        buffer.shuffle(&mut shuffle);
        while let Some(q) = buffer.pop() {
            if !emit(q, &mut batches, &mut sent)? {
                return Ok(());
            }
        }
        if epoch == spec.start.epoch && skips.total() > 0 {
            log::warn!("{}", skips.summary());
        }
        // An incomplete last batch is dropped (in-batch negatives assume full batches).
        if batches == 0 {
            anyhow::bail!(
                "a pass over the training files made no batch of {} queries ({})",
                d.batch_size,
                skips.summary()
            );
        }
        if tx
            .send(Msg::EpochEnd {
                epoch,
                skipped_docs: skips.total(),
            })
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Tokenizes a batch: the queries, then each query's positive and negatives.
fn collate_pairs(spec: &PairSpec, group: &[Query], epoch: u64) -> Result<PairBatch> {
    let d = &spec.data;
    let n = d.train_n_passages;
    let texts: Vec<&str> = group.iter().map(|q| q.text.as_str()).collect();
    let queries = tokenize_rows(&spec.tokenizer, &spec.special, &texts, d.query_max_len)?;
    let passages: Vec<&str> = group
        .iter()
        .flat_map(|q| sample_passages(q, n, spec.seed, epoch))
        .collect();
    let passages = tokenize_rows(&spec.tokenizer, &spec.special, &passages, d.passage_max_len)?;
    Ok(PairBatch {
        queries,
        passages,
        n_passages: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pos: usize, neg: usize) -> Query {
        Query {
            id: "q1".into(),
            text: "what".into(),
            positives: (0..pos).map(|i| format!("p{i}")).collect(),
            negatives: (0..neg).map(|i| format!("n{i}")).collect(),
        }
    }

    #[test]
    fn lines_parse_or_are_skipped_with_a_reason() {
        let ok = br#"{"query_id": 7, "query": "q", "positive_passages": [{"docid": "1", "title": "T", "text": "body"}], "negative_passages": [{"docid": "2", "text": "neg"}]}"#;
        let parsed = parse_line(ok, 8).unwrap().unwrap();
        assert_eq!(parsed.id, "7");
        assert_eq!(parsed.positives, ["T body"]);
        assert_eq!(parsed.negatives, ["neg"]);
        assert_eq!(parse_line(b"  ", 8).unwrap().map(|q| q.id), None);
        assert!(matches!(
            parse_line(b"{not json", 8),
            Err(Skip::Malformed(_))
        ));
        let no_pos =
            br#"{"query_id": "a", "query": "q", "positive_passages": [], "negative_passages": []}"#;
        assert_eq!(parse_line(no_pos, 8).unwrap_err(), Skip::NoPositive);
        let no_neg = br#"{"query_id": "a", "query": "q", "positive_passages": [{"text": "x"}]}"#;
        assert_eq!(parse_line(no_neg, 8).unwrap_err(), Skip::NoNegative);
        assert!(parse_line(no_neg, 1).unwrap().is_some());
    }

    #[test]
    fn sampling_follows_tevatron_and_is_keyed() {
        // Enough negatives: distinct, a window that moves with the epoch, the same for a seed.
        let query = q(2, 10);
        let e0 = sample_passages(&query, 4, 1, 0);
        let e1 = sample_passages(&query, 4, 1, 1);
        assert_eq!(e0.len(), 4);
        assert!(e0[0].starts_with('p') && e1[0].starts_with('p'));
        assert_ne!(e0[0], e1[0], "the positive rotates with the epoch");
        let negs0: std::collections::HashSet<_> = e0[1..].iter().collect();
        assert_eq!(negs0.len(), 3, "without replacement");
        assert!(
            e0[1..].iter().all(|n| !e1[1..].contains(n)),
            "the next window"
        );
        assert_eq!(e0, sample_passages(&query, 4, 1, 0));
        // Too few: drawn with replacement.
        let few = q(1, 2);
        let s = sample_passages(&few, 6, 1, 0);
        assert_eq!(s.len(), 6);
        assert!(s[1..].iter().all(|n| n.starts_with('n')));
        assert_eq!(sample_passages(&few, 1, 1, 0), ["p0"]);
    }
}
