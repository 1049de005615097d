//! `condenser mine`: hard negatives for the second round of fine-tuning. The `eval` search (queries
//! encoded once, the corpus streamed in blocks, a running top-k, so memory never holds the corpus)
//! retrieves each judged query's ranking; the judged positives are dropped, so are candidates scoring
//! within `--absolute-margin` / `--relative-margin` of the query's lowest-scoring positive (or above
//! it), then the first `--depth` of what is left are kept (Tevatron's depth: the first `depth`
//! non-positives), the first `--skip-top` of those dropped (a guard against relevant passages nobody
//! judged), and `--negatives` of the rest are drawn keyed by (seed, query id). The result is Tevatron
//! training JSON Lines, which `condenser finetune --train` reads.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::seq::IndexedRandom;

use super::metrics::Qrels;
use super::retrieval::{
    for_each_doc, for_each_text, read_qrels, retrieve, Retrieved, SearchArgs, Searcher,
};
use crate::rng::keyed_rng;

#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// The model (the first round's fine-tuned retriever, or any BERT), corpus, queries and labels
    /// (judged positives are never negatives).
    #[command(flatten)]
    pub search: SearchArgs,
    /// Output: Tevatron training JSON Lines (`-` for stdout).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Non-positive documents per query to draw negatives from: the first DEPTH of the ranking once the
    /// judged positives (and candidates failing a margin) are left out, as Tevatron counts it
    /// (sentence-transformers' `range_max`).
    #[arg(long, visible_alias = "range-max", default_value_t = 100)]
    pub depth: usize,
    /// Leave out the first N of those (likely unjudged positives; sentence-transformers' `range_min`).
    #[arg(long, visible_alias = "range-min", default_value_t = 0)]
    pub skip_top: usize,
    /// Negatives written per query (all the candidates when fewer).
    #[arg(long, default_value_t = 30)]
    pub negatives: usize,
    /// Seed of the draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Longest query (as fine-tuning cuts them).
    #[arg(long, default_value_t = 32)]
    pub query_max_len: usize,
    /// Leave out candidates scoring above (lowest positive score - M): false negatives score near the
    /// positive (sentence-transformers' `absolute_margin`). Off by default.
    #[arg(long, value_name = "M")]
    pub absolute_margin: Option<f64>,
    /// Leave out candidates scoring above (lowest positive score - |that score| x R), R in [0, 1]
    /// (sentence-transformers' `relative_margin`). Off by default.
    #[arg(long, value_name = "R")]
    pub relative_margin: Option<f64>,
}

/// Which retrieved documents a query's negatives are drawn from (`MineArgs`' filters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Filters {
    pub depth: usize,
    pub skip_top: usize,
    pub absolute_margin: Option<f64>,
    pub relative_margin: Option<f64>,
}

impl Filters {
    fn of(args: &MineArgs) -> Result<Self> {
        anyhow::ensure!(
            args.depth >= 1 && args.depth <= 1000,
            "--depth must be in [1, 1000], got {}",
            args.depth
        );
        anyhow::ensure!(
            args.skip_top < args.depth,
            "--skip-top ({}) must be below --depth ({}): no candidate would be left",
            args.skip_top,
            args.depth
        );
        if let Some(m) = args.absolute_margin {
            anyhow::ensure!(
                m.is_finite() && m >= 0.0,
                "--absolute-margin must be a finite number of at least 0, got {m}"
            );
        }
        if let Some(r) = args.relative_margin {
            anyhow::ensure!(
                (0.0..=1.0).contains(&r),
                "--relative-margin must be in [0, 1], got {r}"
            );
        }
        Ok(Filters {
            depth: args.depth,
            skip_top: args.skip_top,
            absolute_margin: args.absolute_margin,
            relative_margin: args.relative_margin,
        })
    }

    fn margins(&self) -> bool {
        self.absolute_margin.is_some() || self.relative_margin.is_some()
    }

    /// The candidates of one query's `ranked` documents (best first), in rank order: the judged
    /// positives left out, then those within a margin of `lowest_positive` (the query's lowest
    /// positive score; needed when a margin is set), then the first `depth` kept and the first
    /// `skip_top` of them dropped.
    pub fn candidates<'a>(
        &self,
        ranked: &'a [(String, f32)],
        is_positive: impl Fn(&str) -> bool,
        lowest_positive: Option<f32>,
    ) -> Vec<&'a String> {
        let ceiling = lowest_positive.map(|p| {
            let p = p as f64;
            let a = self.absolute_margin.map_or(f64::INFINITY, |m| p - m);
            let r = self
                .relative_margin
                .map_or(f64::INFINITY, |r| p - p.abs() * r);
            a.min(r)
        });
        ranked
            .iter()
            .filter(|(d, _)| !is_positive(d))
            .filter(|(_, s)| ceiling.is_none_or(|c| *s as f64 <= c))
            .take(self.depth)
            .skip(self.skip_top)
            .map(|(d, _)| d)
            .collect()
    }
}

#[derive(serde::Serialize)]
struct Passage<'a> {
    docid: &'a str,
    title: &'a str,
    text: &'a str,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    query_id: &'a str,
    query: &'a str,
    positive_passages: Vec<Passage<'a>>,
    negative_passages: Vec<Passage<'a>>,
}

pub fn run(args: MineArgs) -> Result<()> {
    let filters = Filters::of(&args)?;
    anyhow::ensure!(
        args.negatives >= 1,
        "--negatives must be at least 1 (a line without negatives is one `finetune` skips)"
    );
    args.search.refuse_output_over_inputs("--out", &args.out)?;
    let s = args.search.load()?;
    s.model.config.check_lengths(&[
        ("--max-len", args.search.max_len),
        ("--query-max-len", args.query_max_len),
    ])?;
    let qrels = read_qrels(&args.search.qrels)?;
    let spec = args
        .search
        .spec(args.query_max_len, &s.tokenizer, &s.special)?;
    let found = retrieve(&s.model, &s.tokenizer, &s.special, &spec, s.device)?;
    let (joiner, similarity) = (spec.title.clone(), spec.similarity);

    let lowest_positive = match filters.margins() {
        true => lowest_positive_scores(&s, &args, joiner.as_deref(), similarity, &found, &qrels)?,
        false => HashMap::new(),
    };
    // Per judged query: its positives in the corpus, and the drawn negatives.
    let in_corpus: HashSet<&str> = found.docids.iter().map(String::as_str).collect();
    super::retrieval::JudgedCoverage::of(&qrels, &found.qids, &|d| in_corpus.contains(d))
        .check(&args.search)?;
    let mut picked: Vec<(usize, Vec<String>, Vec<String>)> = Vec::new();
    let (mut no_positive, mut few) = (0usize, 0usize);
    for (qi, qid) in found.qids.iter().enumerate() {
        let Some(judged) = qrels.get(qid) else {
            continue;
        };
        let mut positives: Vec<String> = judged
            .iter()
            .filter(|(d, &rel)| rel > 0 && in_corpus.contains(d.as_str()))
            .map(|(d, _)| d.clone())
            .collect();
        positives.sort();
        if positives.is_empty() {
            no_positive += 1;
            continue;
        }
        let candidates = filters.candidates(
            &found.run[qid],
            |d| judged.get(d).is_some_and(|&rel| rel > 0),
            lowest_positive.get(qid).copied(),
        );
        let mut rng = keyed_rng(args.seed, "mine", qid);
        let k = args.negatives.min(candidates.len());
        if k < args.negatives {
            few += 1;
        }
        let negatives: Vec<String> = candidates
            .choose_multiple(&mut rng, k)
            .map(|d| (*d).clone())
            .collect();
        picked.push((qi, positives, negatives));
    }
    anyhow::ensure!(!picked.is_empty(), "no judged query to mine");

    // A second pass over the corpus for the texts of the documents written (not the whole corpus).
    let wanted: HashSet<&str> = picked
        .iter()
        .flat_map(|(_, p, n)| p.iter().chain(n))
        .map(String::as_str)
        .collect();
    let mut texts: HashMap<String, (String, String)> = HashMap::with_capacity(wanted.len());
    for_each_doc(&args.search.corpus, |id, title, text| {
        if wanted.contains(id.as_str()) {
            texts.insert(id, (title.unwrap_or_default(), text));
        }
        Ok(())
    })?;
    let write = |out: &mut dyn Write| -> Result<()> {
        let mut out = std::io::BufWriter::new(out);
        for (qi, pos, neg) in &picked {
            let line = Line {
                query_id: &found.qids[*qi],
                query: &found.query_texts[*qi],
                positive_passages: passages_of(&texts, pos, &args.search.corpus)?,
                negative_passages: passages_of(&texts, neg, &args.search.corpus)?,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    };
    // A file appears whole under its name, or not at all.
    if args.out.as_os_str() == "-" {
        write(&mut std::io::stdout().lock())?;
    } else {
        let mut tmp = crate::eval::embeddings_out::TempOut::create(&args.out)?;
        write(tmp.file()).with_context(|| format!("writing {}", args.out.display()))?;
        tmp.persist()?;
    }
    let negatives_written: usize = picked.iter().map(|(_, _, n)| n.len()).sum();
    log::info!(
        "{} queries written with {:.1} negatives each on average ({} judged queries without a relevant document in the corpus left out; {} with fewer than {} candidates)",
        picked.len(),
        negatives_written as f64 / picked.len() as f64,
        no_positive,
        few,
        args.negatives
    );
    Ok(())
}

/// Each judged query's lowest score over its judged positives in the corpus, for the margins: the
/// queries and the positives encoded as the search encodes them (the positives' texts read in one
/// more pass over the corpus, only theirs tokenized).
fn lowest_positive_scores(
    s: &Searcher,
    args: &MineArgs,
    joiner: Option<&str>,
    similarity: crate::model::retriever::Similarity,
    found: &Retrieved,
    qrels: &Qrels,
) -> Result<HashMap<String, f32>> {
    let mut pairs: Vec<(usize, &str)> = Vec::new();
    for (qi, qid) in found.qids.iter().enumerate() {
        if let Some(judged) = qrels.get(qid) {
            pairs.extend(
                judged
                    .iter()
                    .filter(|(_, &rel)| rel > 0)
                    .map(|(d, _)| (qi, d.as_str())),
            );
        }
    }
    let wanted: HashSet<&str> = pairs.iter().map(|(_, d)| *d).collect();
    let (mut doc_row, mut doc_seqs) = (HashMap::new(), Vec::new());
    for_each_text(
        &args.search.corpus,
        joiner,
        Default::default(),
        |id, text| {
            if wanted.contains(id.as_str()) && !doc_row.contains_key(&id) {
                doc_seqs.push(crate::tokenizer::encode_for_model(
                    &s.tokenizer,
                    &s.special,
                    &text,
                    args.search.max_len,
                )?);
                doc_row.insert(id, doc_seqs.len() as i64 - 1);
            }
            Ok(())
        },
    )?;
    pairs.retain(|(_, d)| doc_row.contains_key(*d));
    let (mut query_row, mut query_seqs) = (HashMap::new(), Vec::new());
    for &(qi, _) in &pairs {
        if let std::collections::hash_map::Entry::Vacant(e) = query_row.entry(qi) {
            query_seqs.push(crate::tokenizer::encode_for_model(
                &s.tokenizer,
                &s.special,
                &found.query_texts[qi],
                args.query_max_len,
            )?);
            e.insert(query_seqs.len() as i64 - 1);
        }
    }
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let embed = |seqs: &[Vec<i64>]| {
        tch::no_grad(|| {
            similarity.prepare(&crate::eval::encode::embed(
                &s.model,
                seqs,
                s.special.pad as i64,
                args.search.batch_size,
                s.device,
            ))
        })
    };
    let (q, p) = (embed(&query_seqs), embed(&doc_seqs));
    let rows = |v: Vec<i64>| tch::Tensor::from_slice(&v).to_device(s.device);
    let qi = rows(pairs.iter().map(|(qi, _)| query_row[qi]).collect());
    let di = rows(pairs.iter().map(|(_, d)| doc_row[*d]).collect());
    let scores = (q.index_select(0, &qi) * p.index_select(0, &di))
        .sum_dim_intlist([1i64].as_slice(), false, tch::Kind::Float)
        .to_device(tch::Device::Cpu);
    let scores = Vec::<f32>::try_from(&scores).context("positive scores")?;
    let mut lowest: HashMap<String, f32> = HashMap::new();
    for ((qi, _), score) in pairs.iter().zip(scores) {
        let e = lowest
            .entry(found.qids[*qi].clone())
            .or_insert(f32::INFINITY);
        *e = e.min(score);
    }
    Ok(lowest)
}

/// The written form of documents `ids` (their texts were read in the second pass).
fn passages_of<'a>(
    texts: &'a HashMap<String, (String, String)>,
    ids: &'a [String],
    corpus: &std::path::Path,
) -> Result<Vec<Passage<'a>>> {
    ids.iter()
        .map(|id| {
            let (title, text) = texts
                .get(id)
                .with_context(|| format!("{}: document {id} went missing", corpus.display()))?;
            Ok(Passage {
                docid: id,
                title,
                text,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked() -> Vec<(String, f32)> {
        [
            ("p", 10.0),
            ("a", 9.0),
            ("b", 8.0),
            ("q", 7.5),
            ("c", 7.0),
            ("d", 6.0),
            ("e", 5.0),
        ]
        .iter()
        .map(|(d, s)| (d.to_string(), *s))
        .collect()
    }

    fn pick(f: Filters, lowest: Option<f32>) -> Vec<String> {
        let r = ranked();
        f.candidates(&r, |d| d == "p" || d == "q", lowest)
            .into_iter()
            .cloned()
            .collect()
    }

    const PLAIN: Filters = Filters {
        depth: 3,
        skip_top: 0,
        absolute_margin: None,
        relative_margin: None,
    };

    #[test]
    fn depth_counts_the_first_non_positives_as_tevatron_does() {
        // Positives at ranks 1 and 4 do not use up the depth: the first 3 non-positives.
        assert_eq!(pick(PLAIN, None), ["a", "b", "c"]);
        // --skip-top drops the first of those.
        assert_eq!(
            pick(
                Filters {
                    skip_top: 1,
                    ..PLAIN
                },
                None
            ),
            ["b", "c"]
        );
    }

    #[test]
    fn margins_drop_candidates_near_or_above_the_lowest_positive() {
        // Lowest positive 7.5 (q): absolute margin 0.5 keeps scores <= 7.0.
        let abs = Filters {
            absolute_margin: Some(0.5),
            ..PLAIN
        };
        assert_eq!(pick(abs, Some(7.5)), ["c", "d", "e"]);
        // Relative 0.15 of 10: keeps scores <= 8.5.
        let rel = Filters {
            relative_margin: Some(0.15),
            ..PLAIN
        };
        assert_eq!(pick(rel, Some(10.0)), ["b", "c", "d"]);
        // A negative positive score: the threshold goes down by |score| x R (as sentence-transformers).
        let r = vec![("x".to_string(), -1.0f32), ("y".to_string(), -1.5)];
        let got: Vec<&String> = rel.candidates(&r, |_| false, Some(-1.0));
        assert_eq!(got, [&"y".to_string()]);
        // Both: the stricter one.
        let both = Filters {
            absolute_margin: Some(0.5),
            relative_margin: Some(0.15),
            ..PLAIN
        };
        assert_eq!(pick(both, Some(10.0)), ["b", "c", "d"]); // relative: 8.5 < 9.5
        assert_eq!(pick(both, Some(8.0)), ["d", "e"]); // relative: 6.8 < 7.5
    }
}
