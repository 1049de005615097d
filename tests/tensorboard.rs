//! TensorBoard event files of `train` and `finetune` runs, read back by the `tensorboard` package's own
//! event reader (set-up venv): every metrics.jsonl record's values, under `train/` tags, at its step.

mod common;

use std::path::Path;

use common::*;

/// (tag -> [(step, value)]) as TensorBoard's EventAccumulator reads the run folder.
fn read_events(run: &Path) -> serde_json::Value {
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1])
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    python_json(script, &[run.as_os_str()])
}

fn assert_same_as_metrics(run: &Path, with_mlm: bool) {
    let events = read_events(run);
    let recs = condenser::train::metrics::read(&run.join("metrics.jsonl")).unwrap();
    assert!(!recs.is_empty());
    let mut tags: Vec<(&str, Box<dyn Fn(&condenser::train::metrics::Record) -> f64>)> = vec![
        ("train/loss", Box::new(|r| r.loss)),
        ("train/lr", Box::new(|r| r.lr)),
        ("train/grad_norm", Box::new(|r| r.grad_norm)),
        ("train/sequences_per_s", Box::new(|r| r.sequences_per_s)),
    ];
    if with_mlm {
        tags.push((
            "train/head_loss",
            Box::new(|r| r.part("head_loss").unwrap()),
        ));
    }
    for (tag, get) in tags {
        let got: Vec<(u64, f64)> = serde_json::from_value(events[tag].clone())
            .unwrap_or_else(|e| panic!("{tag}: {e} in {events}"));
        let want: Vec<(u64, f64)> = recs.iter().map(|r| (r.step, get(r))).collect();
        assert_eq!(got.len(), want.len(), "{tag}: {got:?} vs {want:?}");
        for ((gs, gv), (ws, wv)) in got.iter().zip(&want) {
            assert_eq!(gs, ws, "{tag}");
            assert!(
                (gv - wv).abs() <= 1e-6 * wv.abs().max(1e-30) + 1e-12,
                "{tag} at step {ws}: {gv} vs {wv}"
            );
        }
    }
}

#[test]
fn train_and_finetune_write_event_files_tensorboard_reads() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let shards = small_shards(dir.path(), 40, 3);
    let pre = dir.path().join("pre");
    train_tiny(
        &shards,
        &init,
        &pre,
        &["optim.max_steps=3", "data.batch_size=4", "run.log_every=1"],
    );
    assert_same_as_metrics(&pre, true);

    let train = write_tevatron(dir.path(), 12, 3, 5);
    let ft = dir.path().join("ft");
    let o = run(&[
        "finetune",
        train.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--out",
        ft.to_str().unwrap(),
        "--device",
        "cpu",
        "--set",
        "optim.max_steps=2",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.train_n_passages=2",
        "--set",
        "run.log_every=1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_as_metrics(&ft, false);
}
