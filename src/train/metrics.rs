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
    /// The objective's loss parts under their keys, in its order (`head_loss`, `late_loss` and
    /// coCondenser's `co_loss`; none when fine-tuning).
    #[serde(flatten)]
    pub parts: LossParts,
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

impl Record {
    /// The loss part under `key` (`head_loss`, ...), if the record has it.
    pub fn part(&self, key: &str) -> Option<f64> {
        self.parts.0.iter().find(|(k, _)| k == key).map(|p| p.1)
    }
}

/// The loss parts of a record: `<name>_loss` keys of the JSON line, kept in their order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossParts(pub Vec<(String, f64)>);

impl Serialize for LossParts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for LossParts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = LossParts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("loss parts (`<name>_loss` numbers)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<LossParts, A::Error> {
                let mut parts = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    // Keys a newer version added are not parts: passed over.
                    if k.ends_with("_loss") {
                        parts.push((k, m.next_value::<f64>()?));
                    } else {
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(LossParts(parts))
            }
        }
        d.deserialize_map(Visit)
    }
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
        name: name.to_string(),
        color,
        points,
    })
    .collect()
}

/// The loss lines of `condenser curves`: the loss, then one per part the records hold, in the
/// objective's order (today's parts in their colours; another objective's in the palette's).
pub fn series(recs: &[Record]) -> Vec<crate::plot::Curve> {
    let mut keys: Vec<&str> = Vec::new();
    for r in recs {
        for (k, _) in &r.parts.0 {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let loss = recs.iter().map(|r| (r.step as f64, r.loss)).collect();
    let mut out = vec![crate::plot::Curve {
        name: "loss".to_string(),
        color: BLACK,
        points: loss,
    }];
    for (i, key) in keys.into_iter().enumerate() {
        let (name, color) = match key {
            "head_loss" => ("head MLM".to_string(), BLUE),
            "late_loss" => ("late MLM".to_string(), GREEN),
            "co_loss" => ("contrastive".to_string(), RED),
            other => {
                let (r, g, b) = Palette99::pick(i).rgb();
                (other.to_string(), RGBColor(r, g, b))
            }
        };
        let points = recs
            .iter()
            .filter_map(|r| r.part(key).map(|v| (r.step as f64, v)))
            .collect();
        out.push(crate::plot::Curve {
            name,
            color,
            points,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_parts_keep_their_keys_and_order_in_the_json_line() {
        let line = r#"{"step":3,"epoch":0,"loss":2.5,"head_loss":1.5,"late_loss":0.75,"co_loss":0.25,"grad_norm":1.0,"lr":0.001,"sequences_per_s":1.0,"tokens_per_s":2.0,"data_wait_fraction":0.0,"skipped_docs":4,"elapsed_s":9.0}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!(
            r.parts.0,
            [
                ("head_loss".to_string(), 1.5),
                ("late_loss".to_string(), 0.75),
                ("co_loss".to_string(), 0.25)
            ]
        );
        assert_eq!(r.part("co_loss"), Some(0.25));
        assert_eq!(r.skipped_docs, Some(4));
        assert_eq!(serde_json::to_string(&r).unwrap(), line);
        // A fine-tuning line: no parts; a key of a newer version is passed over.
        let ft = r#"{"step":1,"epoch":0,"loss":1.0,"grad_norm":1.0,"lr":0.0,"sequences_per_s":1.0,"tokens_per_s":2.0,"data_wait_fraction":0.0,"elapsed_s":1.0,"new_field":[1]}"#;
        let r: Record = serde_json::from_str(ft).unwrap();
        assert!(r.parts.0.is_empty());
        assert!(!serde_json::to_string(&r).unwrap().contains("_loss"));
    }

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
