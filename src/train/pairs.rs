//! Fine-tuning data: Tevatron's training JSON Lines (one query a line: `query_id`, `query`,
//! `positive_passages`, `negative_passages`, each passage `{docid, title, text}`), compressed or not,
//! read into batches of queries with their passages in a keyed order over all of them.
//!
//! Every choice is keyed, as in the span loader: the epoch's order (a permutation of every training
//! query, `query_order`) by (seed, epoch); a query's positive and
//! negatives by (seed, epoch, query id), following Tevatron's rule (the positive rotates with the
//! epoch; negatives are a fixed keyed permutation read in a window that moves each epoch, or drawn with
//! replacement when there are too few). A resumed run regenerates the epoch and skips the batches
//! already trained on without tokenizing them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use crossbeam_channel::{bounded, Sender};
use rand::seq::SliceRandom;
use rand::Rng;

use super::collate::Batch;
use super::config::DataConfig;
use super::loader::{Cursor, Loader, Msg, RankSlice};
use super::pair_lines::Query;
use super::query_order::QueryIndex;
use crate::rng::{keyed_rng, stable_hash};
use crate::tokenizer::SpecialIds;

pub use super::pair_lines::{count_queries, parse_line, parse_line_joined, Skip};
pub use crate::corpus::passage::{join_passage, passage_text};

/// One step's queries and their passages: query i's passages are rows i*n .. (i+1)*n of `passages`,
/// its positive first.
#[derive(Debug, Clone)]
pub struct PairBatch {
    pub queries: Batch,
    pub passages: Batch,
    /// Passages per query (`data.train_n_passages`).
    pub n_passages: usize,
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

pub struct PairSpec {
    pub files: Vec<PathBuf>,
    pub data: DataConfig,
    pub seed: u64,
    pub tokenizer: Arc<crate::tokenizer::Tokenizer>,
    pub special: SpecialIds,
    pub start: Cursor,
    pub slice: RankSlice,
    /// Where compressed training files are decompressed for reading at offsets (removed at the end).
    pub cache_dir: PathBuf,
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
    let joiner = d.title_separator.joiner(&spec.tokenizer, &spec.special)?;
    // Every training query's offset (compressed files decompressed into the run's cache first); each
    // epoch reads them in a permutation drawn from (seed, epoch).
    let index = QueryIndex::build(&spec.files, d.train_n_passages, &spec.cache_dir)?;
    skipped.fetch_add(index.skips.total(), Ordering::Relaxed);
    if index.skips.total() > 0 {
        log::warn!("{}", index.skips.summary());
    }
    // An incomplete last batch is dropped (in-batch negatives assume full batches).
    let per_epoch = index.len() / d.batch_size;
    if per_epoch == 0 {
        anyhow::bail!(
            "the training files hold {} queries, fewer than one batch of {} ({})",
            index.len(),
            d.batch_size,
            index.skips.summary()
        );
    }
    let mut handles = index.open()?;
    let mut buf = Vec::new();
    let mut sent = 0u64; // batches since the start (a step boundary), for the rank slice
    for epoch in spec.start.epoch.. {
        let order = index.order(spec.seed, epoch);
        for (b, ks) in order.chunks_exact(d.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let b = b as u64;
            if epoch == spec.start.epoch && b < spec.start.batches {
                continue; // trained on before the resume
            }
            let after = Cursor {
                epoch,
                batches: b + 1,
            };
            let n = sent;
            sent += 1;
            if (n / spec.slice.per_rank.max(1) as u64) % spec.slice.world.max(1) as u64
                != spec.slice.rank as u64
            {
                if tx.send(Msg::Skipped { after }).is_err() {
                    return Ok(());
                }
                continue;
            }
            let group: Vec<Query> = ks
                .iter()
                .map(|&k| index.read(&mut handles, k, d.train_n_passages, &joiner, &mut buf))
                .collect::<Result<_>>()?;
            let batch = collate_pairs(spec, &group, epoch)?;
            if tx.send(Msg::Batch { batch, after }).is_err() {
                return Ok(());
            }
        }
        if tx
            .send(Msg::EpochEnd {
                epoch,
                skipped_docs: index.skips.total(),
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
        // Empty texts are not trained on: an empty query or only empty positives skip the line,
        // empty negatives are dropped.
        let p = |t: &str| format!(r#"{{"docid":"d","title":"","text":"{t}"}}"#);
        let line = |q: &str, pos: &[&str], neg: &[&str]| {
            let list = |v: &[&str]| v.iter().map(|t| p(t)).collect::<Vec<_>>().join(",");
            format!(
                r#"{{"query_id":1,"query":"{q}","positive_passages":[{}],"negative_passages":[{}]}}"#,
                list(pos),
                list(neg)
            )
        };
        let parse = |l: String, n| parse_line(l.as_bytes(), n);
        assert_eq!(
            parse(line(" ", &["a"], &["b"]), 2).unwrap_err(),
            Skip::EmptyQuery
        );
        assert_eq!(
            parse(line("q", &[" ", ""], &["b"]), 2).unwrap_err(),
            Skip::EmptyPositive
        );
        assert_eq!(
            parse(line("q", &["a"], &[""]), 2).unwrap_err(),
            Skip::EmptyNegatives
        );
        let kept = parse(line("q", &["", "a"], &["", "b"]), 2)
            .unwrap()
            .unwrap();
        assert_eq!(
            (kept.positives, kept.negatives),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        // data.title_separator = "sep": the joiner between title and text; no title, the text alone.
        let sep = parse_line_joined(ok, 8, "[SEP]").unwrap().unwrap();
        assert_eq!(sep.positives, ["T[SEP]body"]);
        assert_eq!(sep.negatives, ["neg"]);
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
