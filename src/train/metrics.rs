//! Training metrics: one JSON line per logging interval in `RUN/metrics.jsonl`, and `condenser curves`
//! to draw them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Measured bf16 dense peak of an H100/H200 (bench/reference/README.md), the MFU denominator.
pub const PEAK_FLOPS: f64 = 790e12;

/// Model FLOPs of one training step on `batch`, with the PyTorch reference's model
/// (bench/reference/bench_train.py) so MFU figures compare: 6 P_mm T (every matrix weight, forward and
/// backward, on every position), 12 (H^2 + H V) per labelled token (the MLM transform and tied decoder,
/// run for the late and the head loss, at labelled positions only as we compute them), 12 L^2 H per
/// layer and sequence (attention scores and values), and 6 N^2 H for the contrastive scores.
pub fn batch_flops(
    model: &crate::model::Condenser,
    batch: &crate::train::collate::Batch,
    contrastive: bool,
) -> f64 {
    let labelled = batch.labels.iter().filter(|&&l| l != -100).count();
    step_flops(
        &model.config,
        model.head_config.n_head_layers,
        batch.rows,
        batch.len,
        labelled,
        contrastive,
    )
}

/// `batch_flops` from the shapes: `rows` sequences of `len` positions, `labelled` MLM targets.
pub fn step_flops(
    c: &crate::model::BertConfig,
    head_layers: usize,
    rows: usize,
    len: usize,
    labelled: usize,
    contrastive: bool,
) -> f64 {
    let (h, f, v) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.vocab_size as f64,
    );
    let layers = (c.num_hidden_layers + head_layers as i64) as f64;
    let (rows, len, labelled) = (rows as f64, len as f64, labelled as f64);
    let mut flops = 6.0 * layers * (4.0 * h * h + 2.0 * h * f) * rows * len
        + 12.0 * (h * h + h * v) * labelled
        + 12.0 * layers * len * len * h * rows;
    if contrastive {
        flops += 6.0 * rows * rows * h;
    }
    flops
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    /// The pre-training stages' MLM parts (absent when fine-tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub co_loss: Option<f64>,
    pub grad_norm: f64,
    pub lr: f64,
    pub sequences_per_s: f64,
    pub tokens_per_s: f64,
    /// Share of wall time the trainer waited for the loader in this interval.
    pub data_wait_fraction: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mfu: Option<f64>,
    /// coCondenser: documents skipped so far for having fewer than two spans.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub skipped_docs: Option<u64>,
    /// CUDA: device memory in use at this log step, GiB (`device::cuda_memory_used`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_mem_gib: Option<f64>,
    pub elapsed_s: f64,
    /// Fine-tuning with --eval-corpus: the dev set's figures at this step (`train::dev_eval`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_mrr_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_ndcg_at_10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_recall_at_100: Option<f64>,
}

pub struct MetricsFile {
    path: std::path::PathBuf,
    /// Opened at the first record, so a run that fails before its first log step leaves no empty
    /// metrics.jsonl behind.
    file: Option<std::fs::File>,
}

impl MetricsFile {
    /// Opens `path` for appending (a resumed run continues the same file, dropping lines past `step`).
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        if let Some(step) = resume_step {
            if let Ok(text) = std::fs::read_to_string(path) {
                let kept: String = text
                    .lines()
                    .filter(|l| serde_json::from_str::<Record>(l).is_ok_and(|r| r.step <= step))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(path, kept)?;
            }
        } else {
            let _ = std::fs::remove_file(path);
        }
        Ok(MetricsFile {
            path: path.to_path_buf(),
            file: None,
        })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("{}: cannot open", self.path.display()))?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        serde_json::to_writer(&mut *file, r)?;
        file.write_all(b"\n")?;
        file.flush()?;
        Ok(())
    }
}

pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a metrics record", path.display(), i + 1))
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct CurvesArgs {
    /// A run's metrics.jsonl (or the run folder).
    pub metrics: PathBuf,
    /// The PNG to write.
    #[arg(short, long)]
    pub out: PathBuf,
}

/// `condenser curves`: loss parts and the learning rate against the step.
pub fn curves(args: CurvesArgs) -> Result<()> {
    let path = if args.metrics.is_dir() {
        args.metrics.join("metrics.jsonl")
    } else {
        args.metrics.clone()
    };
    crate::paths::refuse_output_over_inputs("--out", &args.out, &[("METRICS", &path)])?;
    let recs = read(&path)?;
    anyhow::ensure!(!recs.is_empty(), "{}: no records", path.display());
    let lr: Vec<(u64, f64)> = recs.iter().map(|r| (r.step, r.lr)).collect();
    crate::plot::curves(&args.out, &series(&recs), &lr, &eval_series(&recs))?;
    log::info!("{} records drawn into {}", recs.len(), args.out.display());
    Ok(())
}

/// The dev metrics of evaluation while fine-tuning (`finetune --eval-*`), one line per metric the
/// records hold; empty for a run without evaluations.
pub fn eval_series(recs: &[Record]) -> Vec<crate::plot::Curve> {
    let pick = |f: fn(&Record) -> Option<f64>| {
        recs.iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect::<Vec<_>>()
    };
    [
        ("MRR@10", RGBColor(230, 120, 0), pick(|r| r.eval_mrr_at_10)),
        (
            "nDCG@10",
            RGBColor(0, 128, 128),
            pick(|r| r.eval_ndcg_at_10),
        ),
        (
            "R@100",
            RGBColor(128, 0, 128),
            pick(|r| r.eval_recall_at_100),
        ),
    ]
    .into_iter()
    .filter(|(_, _, points)| !points.is_empty())
    .map(|(name, color, points)| crate::plot::Curve {
        name,
        color,
        points,
    })
    .collect()
}

/// The loss lines of `condenser curves`, one per part the records hold.
pub fn series(recs: &[Record]) -> Vec<crate::plot::Curve> {
    let pick = |f: fn(&Record) -> Option<f64>| {
        recs.iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect::<Vec<_>>()
    };
    let curve = |name, color, points| crate::plot::Curve {
        name,
        color,
        points,
    };
    let mut out = vec![
        curve("loss", BLACK, pick(|r| Some(r.loss))),
        curve("head MLM", BLUE, pick(|r| r.head_loss)),
        curve("late MLM", GREEN, pick(|r| r.late_loss)),
    ];
    let co = pick(|r| r.co_loss);
    if !co.is_empty() {
        out.push(curve("contrastive", RED, co));
    }
    out
}

#[cfg(test)]
mod tests {
    /// bench/reference/README.md: 10.71 TFLOP per Condenser step at 128 x 128 for bert-base with logits only at
    /// masked positions (15% of positions 1..126 labelled: 2,419 tokens on average).
    #[test]
    fn flop_model_matches_the_reference_figure() {
        let cfg: crate::model::BertConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "max_position_embeddings": 512
        }))
        .unwrap();
        let flops = super::step_flops(&cfg, 2, 128, 128, 2419, false);
        assert!((flops / 1e12 - 10.71).abs() < 0.02, "{}", flops / 1e12);
    }
}
