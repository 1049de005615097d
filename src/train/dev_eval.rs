//! Evaluation while fine-tuning (`finetune --eval-corpus C --eval-queries Q --eval-qrels R
//! --eval-every N`): the `eval` code path (queries encoded once, the corpus streamed in blocks, a
//! running top-1000) on a dev set with the model being trained, MRR@10, nDCG@10 and R@100 into
//! metrics.jsonl, the log and TensorBoard, and the best model by `--best-metric` kept as `OUT/best`.
//! Rank 0 evaluates while the others wait; every evaluation encodes the whole dev corpus, so it is
//! meant for a dev set, not the full corpus.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tch::Device;

use super::config::TrainConfig;
use crate::eval::metrics::{evaluate, Qrels};
use crate::eval::retrieval::{read_qrels, retrieve, SearchSpec};
use crate::model::Condenser;

/// The metric that picks `OUT/best`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BestMetric {
    #[value(name = "mrr@10")]
    MrrAt10,
    #[value(name = "ndcg@10")]
    NdcgAt10,
    #[value(name = "recall@100")]
    RecallAt100,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DevEvalArgs {
    /// Evaluate while training against this corpus (BEIR corpus.jsonl or MS MARCO collection.tsv; a dev
    /// set: it is encoded whole at every evaluation), with --eval-queries and --eval-qrels.
    #[arg(long, requires_all = ["eval_queries", "eval_qrels"])]
    pub eval_corpus: Option<PathBuf>,
    /// The dev queries (BEIR queries.jsonl or MS MARCO queries.tsv).
    #[arg(long, requires = "eval_corpus")]
    pub eval_queries: Option<PathBuf>,
    /// The dev judgements (BEIR qrels TSV or TREC qrels).
    #[arg(long, requires = "eval_corpus")]
    pub eval_qrels: Option<PathBuf>,
    /// Evaluate every N optimizer steps, and after the last; 0 = after the last only.
    #[arg(long, default_value_t = 0, requires = "eval_corpus")]
    pub eval_every: u64,
    /// The metric whose best value picks the model kept as OUT/best (the first step to reach it).
    #[arg(long, value_enum, default_value_t = BestMetric::MrrAt10, requires = "eval_corpus")]
    pub best_metric: BestMetric,
}

/// One evaluation's figures.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct DevScores {
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
}

impl DevScores {
    pub fn get(&self, m: BestMetric) -> f64 {
        match m {
            BestMetric::MrrAt10 => self.mrr_at_10,
            BestMetric::NdcgAt10 => self.ndcg_at_10,
            BestMetric::RecallAt100 => self.recall_at_100,
        }
    }
}

/// The dev set and the best value so far.
pub struct DevEval {
    corpus: PathBuf,
    queries: PathBuf,
    qrels_path: PathBuf,
    qrels: Qrels,
    every: u64,
    pub metric: BestMetric,
    /// (value, step) of the best evaluation so far.
    pub best: Option<(f64, u64)>,
}

impl DevEval {
    /// None without --eval-corpus; the qrels are read (and checked) now, before training.
    pub fn new(args: &DevEvalArgs) -> Result<Option<Self>> {
        let (Some(corpus), Some(queries), Some(qrels_path)) = (
            args.eval_corpus.clone(),
            args.eval_queries.clone(),
            args.eval_qrels.clone(),
        ) else {
            return Ok(None);
        };
        for (flag, p) in [("--eval-corpus", &corpus), ("--eval-queries", &queries)] {
            anyhow::ensure!(p.is_file(), "{flag} {}: no such file", p.display());
        }
        let qrels = read_qrels(&qrels_path).context("--eval-qrels")?;
        Ok(Some(DevEval {
            corpus,
            queries,
            qrels_path,
            qrels,
            every: args.eval_every,
            metric: args.best_metric,
            best: None,
        }))
    }

    /// Whether step `step` (1-based, after the update) of `total` is evaluated.
    pub fn due(&self, step: u64, total: u64) -> bool {
        step == total || (self.every > 0 && step % self.every == 0)
    }

    /// Evaluates `model` as `cfg` reads and scores passages.
    pub fn run(
        &self,
        model: &Condenser,
        tok: &crate::tokenizer::Tokenizer,
        special: &crate::tokenizer::SpecialIds,
        cfg: &TrainConfig,
        device: Device,
    ) -> Result<DevScores> {
        let spec = SearchSpec {
            queries: &self.queries,
            corpus: &self.corpus,
            max_len: cfg.data.passage_max_len,
            query_max_len: cfg.data.query_max_len,
            batch_size: 64,
            block: 4096,
            title: Some(cfg.data.title_separator.joiner(tok, special)?),
            similarity: cfg.loss.similarity,
        };
        let found =
            retrieve(model, tok, special, &spec, device).context("evaluating on the dev set")?;
        let known: HashSet<&str> = found.docids.iter().map(String::as_str).collect();
        let ks: Vec<usize> = [10usize, 100]
            .iter()
            .map(|&k| k.min(found.docids.len()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let m = evaluate(&found.run, &self.qrels, &ks, &|d| known.contains(d));
        anyhow::ensure!(
            m.queries > 0,
            "--eval-qrels {}: no judged query has a relevant document and is in {}",
            self.qrels_path.display(),
            self.queries.display()
        );
        let r100 = 100usize.min(found.docids.len());
        Ok(DevScores {
            mrr_at_10: m.mrr_at_10,
            ndcg_at_10: m.ndcg_at_10,
            recall_at_100: m.recall.get(&r100).copied().unwrap_or(0.0),
        })
    }

    /// Records `scores` of `step`; true when they are the best so far (strictly better, so the
    /// first step to reach a value keeps it).
    pub fn improved(&mut self, step: u64, scores: &DevScores) -> bool {
        let v = scores.get(self.metric);
        let better = self.best.is_none_or(|(b, _)| v > b);
        if better {
            self.best = Some((v, step));
        }
        better
    }
}

impl DevEval {
    /// The model card's account of the evaluations.
    pub fn summary(&self) -> Option<String> {
        let (v, step) = self.best?;
        Some(format!(
            "Evaluated while training on `{}` (queries `{}`, judgements `{}`): the best {} was {v:.4}, at step {step} \
             (that model is `best/` in the run folder; every evaluation is in its metrics.jsonl). This \
             folder holds the last step's model.",
            self.corpus.file_name().map_or_else(|| self.corpus.display().to_string(), |n| n.to_string_lossy().into_owned()),
            self.queries.file_name().map_or_else(|| self.queries.display().to_string(), |n| n.to_string_lossy().into_owned()),
            self.qrels_path.file_name().map_or_else(|| self.qrels_path.display().to_string(), |n| n.to_string_lossy().into_owned()),
            match self.metric {
                BestMetric::MrrAt10 => "MRR@10",
                BestMetric::NdcgAt10 => "nDCG@10",
                BestMetric::RecallAt100 => "R@100",
            }
        ))
    }
}

/// `best/eval.json`: which step the folder holds and its figures.
pub fn best_note(metric: BestMetric, step: u64, scores: &DevScores) -> Vec<u8> {
    let name = match metric {
        BestMetric::MrrAt10 => "mrr@10",
        BestMetric::NdcgAt10 => "ndcg@10",
        BestMetric::RecallAt100 => "recall@100",
    };
    serde_json::to_vec_pretty(&serde_json::json!({
        "step": step,
        "metric": name,
        "value": scores.get(metric),
        "mrr_at_10": scores.mrr_at_10,
        "ndcg_at_10": scores.ndcg_at_10,
        "recall_at_100": scores.recall_at_100,
    }))
    .expect("JSON serializes")
}

/// Where the best model goes.
pub fn best_dir(out: &Path) -> PathBuf {
    out.join("best")
}
