//! `condenser eval-spans`: intrinsic evaluation on any prepared corpus. Documents are held out by a
//! seeded hash of their id (the trainer skips the same documents through the same rule, see
//! `is_held_out`); for each held-out document with two spans or more, two spans are drawn, and each span
//! must retrieve its sibling among all held-out spans (self excluded) by CLS dot product.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::device::DeviceChoice;
use crate::model::{hf, HeadConfig};
use crate::rng::{keyed_rng, stable_hash};
use crate::shards::{read_shard, Manifest};

/// True when `doc_id` belongs to the held-out share `fraction` under `seed`.
pub fn is_held_out(doc_id: &str, seed: u64, fraction: f64) -> bool {
    fraction > 0.0
        && (stable_hash(&[&seed.to_le_bytes(), b"holdout", doc_id.as_bytes()]) as f64
            / u64::MAX as f64)
            < fraction
}

#[derive(Debug, clap::Args)]
pub struct SpansArgs {
    /// Model: a Hugging Face directory.
    #[arg(long)]
    pub model: PathBuf,
    /// A prepared shard folder (with _manifest.json).
    #[arg(value_name = "DATA", required_unless_present = "data_flag")]
    pub data: Option<PathBuf>,
    /// The same as DATA (the older spelling, kept for scripts).
    #[arg(
        long = "data",
        hide = true,
        conflicts_with = "data",
        value_name = "DATA"
    )]
    pub data_flag: Option<PathBuf>,
    /// Share of documents held out (the trainer's data.holdout_fraction).
    #[arg(long, default_value_t = 0.02)]
    pub holdout_fraction: f64,
    /// Seed of the hold-out rule (the trainer's data.holdout_seed).
    #[arg(long, default_value_t = 42)]
    pub holdout_seed: u64,
    /// Longest span sequence, [CLS] and [SEP] included; longer spans are truncated.
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Metrics as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
}

#[derive(Debug, Serialize)]
pub struct SpanMetrics {
    pub documents: usize,
    pub spans: usize,
    pub mrr: f64,
    pub recall_at_1: f64,
}

pub fn evaluate(
    model: &crate::model::Condenser,
    special: &crate::tokenizer::SpecialIds,
    args: &SpansArgs,
    device: tch::Device,
) -> Result<SpanMetrics> {
    let data = crate::cli::either(args.data.as_deref(), args.data_flag.as_deref(), "DATA")?;
    let m =
        Manifest::load(data)?.with_context(|| format!("{}: no _manifest.json", data.display()))?;
    let mut seqs: Vec<Vec<i64>> = Vec::new();
    for s in &m.shards {
        for row in read_shard(&data.join(&s.file), None)? {
            if row.spans.len() < 2
                || !is_held_out(&row.doc_id, args.holdout_seed, args.holdout_fraction)
            {
                continue;
            }
            let mut rng = keyed_rng(args.holdout_seed, "eval-pair", &row.doc_id);
            for i in rand::seq::index::sample(&mut rng, row.spans.len(), 2).into_vec() {
                seqs.push(crate::tokenizer::with_specials(
                    &row.spans[i],
                    special,
                    args.max_len,
                ));
            }
        }
    }
    anyhow::ensure!(
        seqs.len() >= 4,
        "fewer than two held-out documents with two spans: raise --holdout-fraction"
    );
    let reps = tch::no_grad(|| {
        super::encode::embed(model, &seqs, special.pad as i64, args.batch_size, device)
    });
    let n = reps.size()[0];
    let scores = reps.matmul(&reps.tr()).masked_fill(
        &Tensor::eye(n, (Kind::Bool, reps.device())),
        f64::NEG_INFINITY,
    );
    let target = Tensor::arange(n, (Kind::Int64, reps.device())).bitwise_xor(1);
    let sibling = scores.gather(1, &target.unsqueeze(1), false); // (N, 1)
                                                                 // Rank of the sibling: 1 + spans scoring strictly higher.
    let rank = scores
        .gt_tensor(&sibling)
        .sum_dim_intlist(1, false, Kind::Float)
        + 1.0;
    let mrr = rank.reciprocal().mean(Kind::Float).double_value(&[]);
    let r1 = rank
        .eq(1.0)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    Ok(SpanMetrics {
        documents: n as usize / 2,
        spans: n as usize,
        mrr,
        recall_at_1: r1,
    })
}

pub fn run(args: SpansArgs) -> Result<()> {
    hf::check_model_dir(&args.model).context("--model")?;
    let device = crate::device::select(args.device)?;
    let tok = crate::tokenizer::load(&args.model.join(hf::TOKENIZER_FILE))?;
    let special = crate::tokenizer::special_ids(&tok)?;
    let loaded = hf::load(&args.model, device, HeadConfig::default(), 0)?;
    loaded
        .model
        .config
        .check_lengths(&[("--max-len", args.max_len)])?;
    let m = evaluate(&loaded.model, &special, &args, device)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &m)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "span pairs: MRR {:.4}  R@1 {:.4}  ({} held-out documents, {} spans)",
            m.mrr, m.recall_at_1, m.documents, m.spans
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn holdout_share_is_about_the_fraction_and_stable() {
        let n = (0..20000)
            .filter(|i| super::is_held_out(&format!("doc-{i}"), 42, 0.05))
            .count();
        assert!((800..1200).contains(&n), "{n}");
        assert!(!super::is_held_out("x", 42, 0.0));
        assert_eq!(
            super::is_held_out("doc-1", 42, 0.5),
            super::is_held_out("doc-1", 42, 0.5)
        );
    }
}
