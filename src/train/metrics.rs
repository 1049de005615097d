//! Training metrics: one JSON line per logging interval in `RUN/metrics.jsonl`, and `condenser curves`
//! to draw them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Measured bf16 dense peak of an H100/H200 (../shared/GPU.md), the MFU denominator.
pub const PEAK_FLOPS: f64 = 790e12;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub head_loss: f64,
    pub late_loss: f64,
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
    pub elapsed_s: f64,
}

pub struct MetricsFile {
    file: std::fs::File,
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
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(MetricsFile { file })
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.file, r)?;
        self.file.write_all(b"\n")?;
        self.file.flush()?;
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
    #[arg(long)]
    pub out: PathBuf,
}

/// `condenser curves`: loss parts and the learning rate against the step.
pub fn curves(args: CurvesArgs) -> Result<()> {
    let path = if args.metrics.is_dir() {
        args.metrics.join("metrics.jsonl")
    } else {
        args.metrics.clone()
    };
    let recs = read(&path)?;
    anyhow::ensure!(!recs.is_empty(), "{}: no records", path.display());
    crate::plot::curves(&args.out, &recs)?;
    log::info!("{} records drawn into {}", recs.len(), args.out.display());
    Ok(())
}

pub fn series(recs: &[Record]) -> Vec<(&'static str, RGBColor, Vec<(f64, f64)>)> {
    let pick = |f: fn(&Record) -> Option<f64>| {
        recs.iter()
            .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
            .collect::<Vec<_>>()
    };
    let mut out = vec![
        ("loss", BLACK, pick(|r| Some(r.loss))),
        ("head MLM", BLUE, pick(|r| Some(r.head_loss))),
        ("late MLM", GREEN, pick(|r| Some(r.late_loss))),
    ];
    let co = pick(|r| r.co_loss);
    if !co.is_empty() {
        out.push(("contrastive", RED, co));
    }
    out
}
