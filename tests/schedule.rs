//! The learning-rate schedule against Hugging Face's: transformers' `get_linear_schedule_with_warmup`
//! (with HF Trainer's `ceil(warmup_ratio x total)` warm-up steps), run from the set-up venv, gives the
//! rate of every optimizer step; `lr_at` must give the same values, and so must the `lr` that each
//! stage (Condenser, coCondenser, fine-tuning) logs for each step it trains.

mod common;

use std::path::Path;

use common::*;
use condenser::train::config::TrainConfig;
use condenser::train::optim::lr_at;

/// HF's rate for optimizer steps 0..total (0-based) of each run (peak lr, total steps, warm-up ratio),
/// from one python process.
fn hf_rates(runs: &[(f64, usize, f64)]) -> Vec<Vec<f64>> {
    let script = r#"
import json, math, sys
import torch
from transformers import get_linear_schedule_with_warmup
out = []
for lr, total, ratio in json.loads(sys.argv[1]):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(total * ratio), total)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])  # the rate optimizer.step() uses now
        opt.step()
        sched.step()
    out.append(rates)
print(json.dumps(out))
"#;
    let runs = serde_json::to_string(runs).unwrap();
    serde_json::from_value(python_json(script, &[std::ffi::OsStr::new(&runs)])).unwrap()
}

fn assert_rates(what: &str, ours: &[f64], hf: &[f64]) {
    assert_eq!(ours.len(), hf.len(), "{what}: {ours:?} vs {hf:?}");
    for (s, (a, b)) in ours.iter().zip(hf).enumerate() {
        assert!(
            (a - b).abs() <= 1e-15 * b.abs(),
            "{what}: step {s}: ours {a:e}, transformers {b:e}\nours {ours:?}\nHF   {hf:?}"
        );
    }
}

#[test]
fn lr_at_equals_transformers_linear_schedule_with_warmup() {
    let runs: Vec<(f64, usize, f64)> = [
        (100, 0.1),
        (30, 0.1),
        (7, 0.3),
        (10, 0.0),
        (5, 1.0),
        (1, 0.1),
        (13, 0.06),
    ]
    .iter()
    .map(|&(total, ratio)| (5e-6, total, ratio))
    .collect();
    for ((lr, total, ratio), hf) in runs.iter().zip(hf_rates(&runs)) {
        let mut cfg = TrainConfig::default().optim;
        cfg.lr = *lr;
        cfg.warmup_ratio = *ratio;
        let ours: Vec<f64> = (0..*total).map(|s| lr_at(s, *total, &cfg)).collect();
        assert_rates(&format!("{total} steps, warm-up ratio {ratio}"), &ours, &hf);
    }
}

/// The `lr` of every metrics line of RUN (step k's line holds the rate step k trained with).
fn logged_rates(run: &Path) -> Vec<f64> {
    let recs = condenser::train::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=recs.len() as u64).collect::<Vec<_>>()
    );
    recs.iter().map(|r| r.lr).collect()
}

#[test]
fn every_stage_trains_with_transformers_rates() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let shards = small_shards(dir.path(), 40, 3);
    let train = write_tevatron(dir.path(), 24, 4, 9);
    let (steps, ratio, lr) = (7usize, 0.3, 1e-4);
    let hf = hf_rates(&[(lr, steps, ratio)]).remove(0);
    let common_sets = [
        format!("optim.max_steps={steps}"),
        format!("optim.warmup_ratio={ratio}"),
        format!("optim.lr={lr:e}"),
        "run.log_every=1".to_string(),
    ];
    let stage_runs: [(&str, Vec<String>); 3] = [
        (
            "condenser",
            vec![
                "train".into(),
                shards.display().to_string(),
                "--set".into(),
                "data.batch_size=4".into(),
            ],
        ),
        (
            "cocondenser",
            vec![
                "train".into(),
                shards.display().to_string(),
                "--set".into(),
                "stage=cocondenser".into(),
                "--set".into(),
                "data.batch_size=2".into(),
            ],
        ),
        (
            "finetune",
            vec![
                "finetune".into(),
                "--train".into(),
                train.display().to_string(),
                "--set".into(),
                "data.batch_size=2".into(),
                "--set".into(),
                "data.train_n_passages=2".into(),
                "--set".into(),
                "data.passage_max_len=32".into(),
            ],
        ),
    ];
    for (name, mut args) in stage_runs {
        let out = dir.path().join(name);
        args.extend([
            "--init".to_string(),
            init.display().to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ]);
        for s in &common_sets {
            args.extend(["--set".to_string(), s.clone()]);
        }
        match name {
            "finetune" => args.extend(["--device".to_string(), "cpu".to_string()]),
            _ => args.extend(TINY.iter().map(|s| s.to_string())),
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&refs);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_rates(name, &logged_rates(&out), &hf);
    }
}
