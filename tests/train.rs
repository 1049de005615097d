//! `condenser train` on CPU: bit-identical resume, SIGTERM, the loss falling, the coCondenser batch
//! layout, checkpoints loading in transformers, following a running prepare. (The gradient-cache test
//! lives in tests/gradient_cache.rs.)

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use condenser::model::hf;
use tch::Tensor;

fn shards(dir: &Path, docs: usize) -> PathBuf {
    small_shards(dir, docs, 3)
}

/// `--data DATA FROM --out OUT`, a `--set` for each setting, then `extra`. FROM is `("--init", model)`
/// for a fresh run or `("--resume", checkpoint)`.
fn args(
    data: &Path,
    from: (&str, &Path),
    out: &Path,
    sets: &[&str],
    extra: &[&str],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--data".into(),
        data.display().to_string(),
        from.0.into(),
        from.1.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    for set in sets {
        a.extend(["--set".to_string(), set.to_string()]);
    }
    a.extend(extra.iter().map(|e| e.to_string()));
    a
}

/// `condenser train ARGS` on the tiny CPU model, whatever its exit status.
fn try_train(args: &[String]) -> std::process::Output {
    let mut all = vec!["train"];
    all.extend(args.iter().map(String::as_str));
    all.extend(TINY);
    run(&all)
}

/// `condenser train ARGS`, which must succeed.
fn train(args: &[String]) -> std::process::Output {
    let o = try_train(args);
    assert!(o.status.success(), "train {args:?}: {}", stderr(&o));
    o
}

fn losses(run_dir: &Path) -> Vec<(u64, f64, Option<f64>, Option<f64>, Option<f64>)> {
    condenser::train::metrics::read(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.step,
                r.loss,
                r.part("head_loss"),
                r.part("late_loss"),
                r.part("co_loss"),
            )
        })
        .collect()
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    hf::read_safetensors(path).unwrap().0.into_iter().collect()
}

#[test]
fn resume_is_bit_identical_for_both_stages() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 600);
    let init = tiny_model(dir.path());
    for (stage, stage_sets) in [
        ("condenser", vec!["data.batch_size=8"]),
        (
            "cocondenser",
            vec![
                "stage=cocondenser",
                "data.batch_size=4",
                "loss.cache_chunk_size=3",
            ],
        ),
        (
            "cocondenser-unpadded",
            vec![
                "stage=cocondenser",
                "data.batch_size=4",
                "loss.cache_chunk_size=3",
                "run.unpad=true",
            ],
        ),
    ] {
        let straight = dir.path().join(format!("{stage}-straight"));
        let split = dir.path().join(format!("{stage}-split"));
        let mut sets = vec![
            "optim.max_steps=8",
            "run.log_every=1",
            "data.max_len=64",
            "data.shuffle_buffer=50",
        ];
        sets.extend(&stage_sets);
        train(&args(&data, ("--init", &init), &straight, &sets, &[]));
        let o = train(&args(
            &data,
            ("--init", &init),
            &split,
            &sets,
            &["--stop-after", "4"],
        ));
        let ckpt = split.join("checkpoint-4");
        assert_eq!(stdout(&o).trim(), ckpt.display().to_string());
        train(&args(&data, ("--resume", &ckpt), &split, &[], &[]));
        for file in [
            "final/model.safetensors",
            "final/condenser_head.safetensors",
            "final-state/optimizer.safetensors",
        ] {
            let (x, y) = (tensors(&straight.join(file)), tensors(&split.join(file)));
            assert_eq!(x.len(), y.len());
            for (k, t) in &x {
                assert!(t.equal(&y[k]), "{stage}: {file}: {k} differs after resume");
            }
        }
        assert_eq!(
            losses(&straight),
            losses(&split),
            "{stage}: the loss sequence differs"
        );
        assert_eq!(losses(&straight).len(), 8);
    }
}

/// A learning rate of 1e30 blows the weights up after one step; the second step's loss is not finite.
/// The optimizer finds it on the device (no per-step sync), skips it and every later update, and the
/// next log step writes the last good state and fails the run.
#[test]
fn a_non_finite_step_stops_the_run_at_the_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 200);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    let o = try_train(&args(
        &data,
        ("--init", &init),
        &out,
        &[
            "optim.max_steps=10",
            "optim.lr=1e30",
            "optim.warmup_ratio=0",
            "run.log_every=5",
            "data.batch_size=8",
            "data.max_len=64",
        ],
        &[],
    ));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("not finite at step 2; that update and the 3 after it were skipped"),
        "{err}"
    );
    let good = out.join("checkpoint-1");
    assert!(err.contains(&good.display().to_string()), "{err}");
    assert!(!out.join("final").exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(good.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 1);
    for file in ["model.safetensors", "optimizer.safetensors"] {
        for (k, t) in tensors(&good.join(file)) {
            let finite = t.isfinite().all().int64_value(&[]) == 1;
            assert!(finite, "{file}: {k} is not finite");
        }
    }
}

/// `optim.epochs` without max_steps: the step count of one coCondenser epoch comes from the
/// manifest's per-shard `pairable` counts, or from a pass over the shards when documents are held out.
#[test]
fn the_epoch_length_counts_pairable_documents_less_the_held_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 120);
    let init = tiny_model(dir.path());
    let m = condenser::shards::Manifest::load(&data).unwrap().unwrap();
    let (mut pairable, mut kept) = (0u64, 0u64);
    for s in &m.shards {
        let rows = condenser::shards::read_shard(&data.join(&s.file), None).unwrap();
        let here = rows.iter().filter(|r| r.spans.len() >= 2).count() as u64;
        assert_eq!(s.pairable, Some(here), "{}", s.file);
        pairable += here;
        kept += rows
            .iter()
            .filter(|r| r.spans.len() >= 2)
            .filter(|r| !condenser::eval::spans::is_held_out(&r.doc_id, 42, 0.5))
            .count() as u64;
    }
    assert!(pairable > 20 && kept < pairable, "{pairable} {kept}");
    for (holdout, want) in [("0", pairable / 4), ("0.5", kept / 4)] {
        let out = dir.path().join(format!("run-{holdout}"));
        let o = train(&args(
            &data,
            ("--init", &init),
            &out,
            &[
                "stage=cocondenser",
                "data.batch_size=4",
                "data.max_len=64",
                "optim.epochs=1",
                &format!("data.holdout_fraction={holdout}"),
            ],
            &["--stop-after", "1"],
        ));
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("checkpoint-1").join("trainer_state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            state["total_steps"],
            want,
            "holdout {holdout}: {}",
            stderr(&o)
        );
        // Only with documents held out does the trainer pass over the shards to count.
        assert_eq!(
            stderr(&o).contains("counting the training examples"),
            holdout != "0",
            "holdout {holdout}: {}",
            stderr(&o)
        );
    }
}

/// The checkpoint's cursor counts batches of one data order: a resume may not change what decides it.
#[test]
fn resume_refuses_a_different_data_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 100);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    train(&args(
        &data,
        ("--init", &init),
        &out,
        &["optim.max_steps=4", "data.batch_size=4", "data.max_len=64"],
        &["--stop-after", "1"],
    ));
    let ckpt = out.join("checkpoint-1");
    // Another batch size alone changes the examples a step takes (world x batch x grad_accum).
    let r = try_train(&args(
        &data,
        ("--resume", &ckpt),
        &out,
        &["data.batch_size=8"],
        &[],
    ));
    assert!(!r.status.success());
    assert!(
        stderr(&r).contains("took 4 examples (world size 1 x data.batch_size 4 x optim.grad_accum 1), this run's would take 8"),
        "{}",
        stderr(&r)
    );
    for change in [
        "data.group_by_length=5",
        "run.seed=7",
        "optim.max_steps=8",
        "optim.warmup_ratio=0.5",
    ] {
        let r = try_train(&args(&data, ("--resume", &ckpt), &out, &[change], &[]));
        let key = change.split('=').next().unwrap();
        assert!(!r.status.success(), "{change}");
        assert!(
            stderr(&r).contains(&format!("{key} cannot change when resuming")),
            "{change}: {}",
            stderr(&r)
        );
    }
    // What does not touch the order may change: the learning rate, the precision (bf16 matrix work
    // on the CPU here: the trainer end to end in the CUDA path's precision).
    train(&args(
        &data,
        ("--resume", &ckpt),
        &out,
        &["optim.lr=5e-5", "run.precision=bf16"],
        &[],
    ));
}

#[test]
fn sigterm_finishes_the_step_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 300);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    let child = condenser()
        .arg("train")
        .args(args(
            &data,
            ("--init", &init),
            &out,
            &[
                "optim.max_steps=100000",
                "run.log_every=1",
                "data.batch_size=4",
            ],
            &[],
        ))
        .args(TINY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = out.join("metrics.jsonl");
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(t.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "exit {:?}", o.status);
    let ckpt = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("trainer_state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(step >= 2 && step < 100000, "step {step}");
    assert_eq!(ckpt, out.join(format!("checkpoint-{step}")));
    assert!(ckpt.join("model.safetensors").exists() && ckpt.join("optimizer.safetensors").exists());
}

#[test]
fn the_loss_falls_on_demo_text_and_the_checkpoint_loads_in_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let leads = data("wiki-leads/summaries_en-us.json");
    let shards = dir.path().join("leads");
    let o = run(&[
        "prepare",
        "--out",
        shards.to_str().unwrap(),
        leads.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    train(&args(
        &shards,
        ("--init", &init),
        &out,
        &[
            "optim.max_steps=60",
            "optim.lr=2e-3",
            "run.log_every=1",
            "data.batch_size=16",
        ],
        &[],
    ));
    let l: Vec<f64> = losses(&out).iter().map(|r| r.1).collect();
    let first: f64 = l[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < first - 1.0,
        "the loss did not fall: first {first:.3}, last {last:.3}"
    );
    let recs = condenser::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
    assert!(
        recs.iter()
            .all(|r| (0.0..=1.0).contains(&r.data_wait_fraction)),
        "data-wait fraction reported"
    );
    // The trained checkpoint loads in transformers with no missing encoder keys.
    let inputs = dir.path().join("inputs.json");
    std::fs::write(
        &inputs,
        r#"{"input_ids": [[101, 7592, 2088, 102]], "attention_mask": [[1, 1, 1, 1]]}"#,
    )
    .unwrap();
    let r = python_json(
        &fixture("check_hf_load.py"),
        &[out.join("final").as_os_str(), inputs.as_os_str()],
    );
    let missing: Vec<String> = serde_json::from_value(r["missing"].clone()).unwrap();
    assert!(
        missing.iter().all(|k| k.starts_with("pooler.")),
        "{missing:?}"
    );
    assert_eq!(r["mlm_missing"], serde_json::json!([]));
    // The curves command draws the run.
    let png = dir.path().join("curves.png");
    let o = run(&[
        "curves",
        out.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[test]
fn shards_of_another_vocabulary_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 50);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-condenser/model");
    let o = condenser()
        .arg("train")
        .args(args(
            &data,
            ("--init", &fixture),
            &dir.path().join("r"),
            &["model.skip_from=2", "optim.max_steps=1"],
            &["--device", "cpu"],
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("vocabulary of 30522 ids, the model has 99"),
        "{}",
        stderr(&o)
    );
}

/// coCondenser batches: two distinct spans of one document in adjacent rows, single-span documents
/// skipped and counted, the incomplete last batch dropped.
#[test]
fn cocondenser_batches_pair_spans_of_one_document() {
    use condenser::prepare::segment::Segmented;
    use condenser::shards::{ShardWriter, WriterConfig};
    use condenser::train::collate::Vocab;
    use condenser::train::loader::{self, Cursor, LoaderSpec, Msg, ShardSource};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let mut w = ShardWriter::create(&path, WriterConfig::default()).unwrap();
    // Document d: (d % 3) + 1 spans; span j of document d holds the ids 1000 + 10 d + j (x 5).
    let mut pairable = 0;
    for d in 0..50u32 {
        let n = (d % 3) + 1;
        pairable += (n >= 2) as usize;
        let spans: Vec<Vec<u32>> = (0..n).map(|j| vec![1000 + 10 * d + j; 5]).collect();
        w.push(Segmented {
            doc_id: format!("d{d}"),
            spans,
            num_tokens: 5 * n as usize,
        })
        .unwrap();
    }
    w.close().unwrap();
    let tok = condenser::tokenizer::load(&data("minilm/tokenizer.json")).unwrap();
    let mut cfg = condenser::train::config::TrainConfig::default();
    cfg.data.shuffle_buffer = 7;
    cfg.data.max_len = 16;
    let spec = LoaderSpec {
        stage: condenser::train::config::Stage::Cocondenser,
        data: cfg.data.clone(),
        seed: 1,
        vocab: std::sync::Arc::new(Vocab::from_tokenizer(&tok).unwrap()),
        examples_per_batch: 4,
        start: Cursor::default(),
        slice: condenser::train::loader::RankSlice::all(1),
    };
    let l = loader::start(ShardSource::Files(vec![path]), spec);
    let mut batches = 0;
    loop {
        match l.rx.recv().unwrap() {
            Msg::Batch { batch, after } => {
                assert_eq!(batch.rows, 8);
                assert_eq!(after.epoch, 0);
                let original = |r: usize| {
                    let i = r * batch.len + 1;
                    (if batch.labels[i] != -100 {
                        batch.labels[i]
                    } else {
                        batch.input_ids[i]
                    }) as u32
                };
                for pair in 0..4 {
                    let (a, b) = (original(2 * pair), original(2 * pair + 1));
                    assert_eq!(
                        (a - 1000) / 10,
                        (b - 1000) / 10,
                        "rows {} and {} come from one document",
                        2 * pair,
                        2 * pair + 1
                    );
                    assert_ne!(a, b, "two distinct spans");
                }
                batches += 1;
            }
            Msg::EpochEnd {
                epoch,
                skipped_docs,
            } => {
                assert_eq!(epoch, 0);
                assert_eq!(skipped_docs, 50 - pairable as u64);
                break;
            }
            Msg::Skipped { .. } => panic!("one process owns every batch"),
            Msg::Error(e) => panic!("{e:#}"),
        }
    }
    assert_eq!(
        batches,
        pairable / 4,
        "the incomplete last batch is dropped"
    );
}

/// Epoch 0's batches of a Condenser loader over `path` (examples_per_batch 8).
fn epoch_batches(
    path: &Path,
    group_by_length: usize,
    start: condenser::train::loader::Cursor,
) -> Vec<condenser::train::collate::Batch> {
    use condenser::train::collate::Vocab;
    use condenser::train::loader::{self, LoaderSpec, Msg, ShardSource};
    let tok = condenser::tokenizer::load(&data("minilm/tokenizer.json")).unwrap();
    let mut cfg = condenser::train::config::TrainConfig::default();
    cfg.data.shuffle_buffer = 50;
    cfg.data.max_len = 64;
    cfg.data.group_by_length = group_by_length;
    let spec = LoaderSpec {
        stage: condenser::train::config::Stage::Condenser,
        data: cfg.data,
        seed: 3,
        vocab: std::sync::Arc::new(Vocab::from_tokenizer(&tok).unwrap()),
        examples_per_batch: 8,
        start,
        slice: condenser::train::loader::RankSlice::all(1),
    };
    let l = loader::start(ShardSource::Files(vec![path.to_path_buf()]), spec);
    let mut out = Vec::new();
    loop {
        match l.rx.recv().unwrap() {
            Msg::Batch { batch, .. } => out.push(batch),
            Msg::Skipped { .. } => panic!("one process owns every batch"),
            Msg::EpochEnd { .. } => return out,
            Msg::Error(e) => panic!("{e:#}"),
        }
    }
}

/// `data.group_by_length`: the same examples, in batches of similar length (less padding), in a
/// reproducible order that a resumed loader continues exactly.
#[test]
fn group_by_length_cuts_batches_of_similar_length() {
    use condenser::prepare::segment::Segmented;
    use condenser::shards::{ShardWriter, WriterConfig};
    use condenser::train::loader::Cursor;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let mut w = ShardWriter::create(&path, WriterConfig::default()).unwrap();
    // 200 one-span documents; document d has 1 + (d * 37) % 60 tokens, all the id 1000 + d.
    for d in 0..200u32 {
        let n = 1 + (d as usize * 37) % 60;
        w.push(Segmented {
            doc_id: format!("d{d}"),
            spans: vec![vec![1000 + d; n]],
            num_tokens: n,
        })
        .unwrap();
    }
    w.close().unwrap();
    // The document of each row: its first token, unmasked.
    let docs = |batches: &[condenser::train::collate::Batch]| -> Vec<i64> {
        let mut v: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                (0..b.rows).map(move |r| {
                    let i = r * b.len + 1;
                    if b.labels[i] != -100 {
                        b.labels[i]
                    } else {
                        b.input_ids[i]
                    }
                })
            })
            .collect();
        v.sort();
        v
    };
    let padded = |batches: &[condenser::train::collate::Batch]| -> usize {
        batches.iter().map(|b| b.rows * b.len).sum()
    };
    let plain = epoch_batches(&path, 0, Cursor::default());
    let grouped = epoch_batches(&path, 5, Cursor::default());
    assert_eq!(plain.len(), 25);
    assert_eq!(grouped.len(), 25);
    assert_eq!(docs(&plain), (1000..1200).collect::<Vec<i64>>());
    assert_eq!(docs(&grouped), docs(&plain), "the same examples are seen");
    let real: usize = plain.iter().map(|b| b.real_tokens).sum();
    assert_eq!(real, grouped.iter().map(|b| b.real_tokens).sum::<usize>());
    let (p, g) = (padded(&plain), padded(&grouped));
    assert!(
        (g as f64) < 0.8 * p as f64,
        "grouped batches pad less: {g} vs {p} token slots for {real} real tokens"
    );
    // Sorted within a group, but the batches of a group go out shuffled.
    let lens: Vec<usize> = grouped.iter().map(|b| b.len).collect();
    assert!(lens.windows(2).any(|w| w[0] > w[1]), "{lens:?}");
    // Reproducible, and a resume after 7 batches continues with the 8th.
    let again = epoch_batches(&path, 5, Cursor::default());
    let resumed = epoch_batches(
        &path,
        5,
        Cursor {
            epoch: 0,
            batches: 7,
        },
    );
    let ids = |b: &condenser::train::collate::Batch| (b.input_ids.clone(), b.labels.clone());
    assert_eq!(
        grouped.iter().map(ids).collect::<Vec<_>>(),
        again.iter().map(ids).collect::<Vec<_>>()
    );
    assert_eq!(
        grouped[7..].iter().map(ids).collect::<Vec<_>>(),
        resumed.iter().map(ids).collect::<Vec<_>>()
    );
}

/// `condenser prepare ... | condenser train --data -`: training follows a running prepare.
#[test]
fn train_follows_a_running_prepare_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_jsonl(dir.path(), "c.jsonl", 600, 8);
    let init = tiny_model(dir.path());
    let bin = env!("CARGO_BIN_EXE_condenser");
    let out = dir.path().join("run");
    let script = format!(
        "set -o pipefail; {bin} prepare -q {} --out {} --shard-size 20KB --max-len 64 | {bin} train -q --data - --init {} --out {} \
         --set optim.max_steps=5 --set data.batch_size=4 --set data.max_len=64 --set model.skip_from=1 --set model.n_head_layers=1 --device cpu",
        input.display(),
        dir.path().join("shards").display(),
        init.display(),
        out.display()
    );
    let o = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        out.join("final").display().to_string()
    );
    assert_eq!(losses(&out).last().unwrap().0, 5);
}

/// `condenser ARGS` with stdin from `stdin` (else closed), output to files, killed after `secs`: a
/// hang fails the test (naming the last of its log) instead of hanging it. (status code, stdout,
/// the end of stderr).
fn run_within(all: &[String], stdin: Option<&Path>, secs: u64) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = condenser()
        .args(all)
        .stdin(match stdin {
            Some(p) => std::process::Stdio::from(std::fs::File::open(p).unwrap()),
            None => std::process::Stdio::null(),
        })
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let tail = || {
        let s = String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned();
        s[s.len().saturating_sub(3000)..].to_string()
    };
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed().as_secs() >= secs {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "condenser {all:?} still running after {secs} s; its log ends: {}",
                tail()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&out).unwrap(),
        tail(),
    )
}

/// `train ARGS` on the tiny model, bounded in time.
fn train_within(args: &[String], stdin: Option<&Path>) -> (Option<i32>, String, String) {
    let mut all = vec!["train".to_string()];
    all.extend(args.iter().cloned());
    all.extend(TINY.iter().map(|s| s.to_string()));
    run_within(&all, stdin, 90)
}

/// When no full batch can be made the trainer used to log "epoch N done" without end: from a folder
/// it is an error at start (the manifest's counts) or after the first pass (held-out documents), from
/// a stream after the whole stream, and `bench train --loader-only` stops too.
#[test]
fn no_full_batch_is_an_error_not_an_endless_loop() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 40);
    let init = tiny_model(dir.path());
    let m = condenser::shards::Manifest::load(&data).unwrap().unwrap();
    let spans: u64 = m.shards.iter().map(|s| s.spans).sum();
    let pairable: u64 = m.shards.iter().map(|s| s.pairable.unwrap()).sum();
    let too_many = format!("data.batch_size={}", spans + 1);
    let too_many_docs = format!("data.batch_size={}", pairable + 1);
    let base = ["optim.max_steps=3", "data.max_len=64"];
    for (what, sets, want) in [
        (
            "condenser, batch larger than the spans",
            vec![too_many.as_str()],
            format!("{spans} spans in its"),
        ),
        (
            "cocondenser, batch larger than the pairable documents",
            vec!["stage=cocondenser", too_many_docs.as_str()],
            format!("{pairable} pairable documents (two or more spans) in its"),
        ),
        (
            "every document but a few held out",
            vec!["data.holdout_fraction=0.999", "data.batch_size=8"],
            "a pass over the shards made no batch".to_string(),
        ),
    ] {
        let mut all_sets = base.to_vec();
        all_sets.extend(sets);
        let out = dir.path().join("run");
        let (code, _, err) =
            train_within(&args(&data, ("--init", &init), &out, &all_sets, &[]), None);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(
            err.contains(&want) && err.contains("fewer than one batch"),
            "{what}: {err}"
        );
    }
    // `--data -`: shard paths on stdin; the stream ends without a batch.
    let list = dir.path().join("paths.txt");
    let paths: Vec<String> = m
        .shards
        .iter()
        .map(|s| data.join(&s.file).display().to_string())
        .collect();
    std::fs::write(&list, paths.join("\n") + "\n").unwrap();
    let out = dir.path().join("stream-run");
    let sets: Vec<&str> = base.iter().copied().chain([too_many.as_str()]).collect();
    let (code, _, err) = train_within(
        &args(Path::new("-"), ("--init", &init), &out, &sets, &[]),
        Some(&list),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the whole stream of shards made no batch"),
        "{err}"
    );
    assert!(!out.join("checkpoint-0").exists());
    // The loader alone.
    let batch = (spans + 1).to_string();
    let bench: Vec<String> = [
        "bench",
        "train",
        "--data",
        data.to_str().unwrap(),
        "--loader-only",
        "--batch",
        &batch,
        "--seq",
        "64",
        "--steps",
        "2",
        "--warmup",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, _, err) = run_within(&bench, None, 90);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("fewer than one batch"), "{err}");
}

/// SIGTERM reaches a trainer that waits for data (a stream that sends nothing): it writes the state
/// it has (step 0) and exits 0, as when it stops between steps.
#[test]
fn sigterm_stops_a_trainer_waiting_for_data() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    let mut child = condenser()
        .arg("train")
        .args(args(
            Path::new("-"),
            ("--init", &init),
            &out,
            &["optim.max_steps=5"],
            &[],
        ))
        .args(TINY)
        .stdin(std::process::Stdio::piped()) // held open, nothing written
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !out.join("train_config.toml").exists() {
        assert!(t.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000)); // now in the wait for a batch
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed().as_secs() > 30 {
            let _ = child.kill();
            panic!("still waiting 30 s after SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        out.join("checkpoint-0").display().to_string()
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("checkpoint-0").join("trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 0);
}

/// Writes rows of (doc_id, spans of int32 ids) as a shard, any id allowed (the shard writer only
/// writes ids of a vocabulary).
fn write_raw_shard(path: &Path, rows: &[(String, Vec<Vec<i32>>)]) {
    use arrow::array::{ArrayRef, Int32Builder, ListBuilder, StringBuilder};
    let schema = condenser::shards::schema::shard_schema();
    let field = |i: usize| match schema.field(1).data_type() {
        arrow::datatypes::DataType::List(f) if i == 0 => f.clone(),
        arrow::datatypes::DataType::List(f) => match f.data_type() {
            arrow::datatypes::DataType::List(g) => g.clone(),
            _ => unreachable!(),
        },
        _ => unreachable!(),
    };
    let mut ids = StringBuilder::new();
    let mut spans = ListBuilder::new(ListBuilder::new(Int32Builder::new()).with_field(field(1)))
        .with_field(field(0));
    let mut num = Int32Builder::new();
    for (id, doc) in rows {
        ids.append_value(id);
        for span in doc {
            spans.values().values().append_slice(span);
            spans.values().append(true);
        }
        spans.append(true);
        num.append_value(doc.iter().map(|s| s.len() as i32).sum());
    }
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(ids.finish()),
        std::sync::Arc::new(spans.finish()),
        std::sync::Arc::new(num.finish()),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Token ids outside the vocabulary (30522 for a vocabulary of 30522, 999999, a negative int32) used
/// to panic inside libtorch; the loader stops with the shard and the id named, in `train` and in
/// `bench train`.
#[test]
fn out_of_vocabulary_ids_stop_with_the_shard_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 30);
    let init = tiny_model(dir.path());
    let m = condenser::shards::Manifest::load(&data).unwrap().unwrap();
    for (bad, shown) in [(30522, "30522"), (999_999, "999999"), (-5i32, "-5")] {
        // Every shard rewritten: 40 two-span documents, one of them holding the bad id.
        for s in &m.shards {
            let rows: Vec<(String, Vec<Vec<i32>>)> = (0..40i32)
                .map(|d| {
                    let mut spans = vec![vec![2000 + d; 6], vec![3000 + d; 6]];
                    if d == 17 {
                        spans[1][3] = bad;
                    }
                    (format!("d{d}"), spans)
                })
                .collect();
            write_raw_shard(&data.join(&s.file), &rows);
        }
        let out = dir.path().join(format!("run-{shown}"));
        let (code, _, err) = train_within(
            &args(
                &data,
                ("--init", &init),
                &out,
                &["optim.max_steps=2", "data.batch_size=4"],
                &[],
            ),
            None,
        );
        assert_eq!(code, Some(2), "{shown}: {err}");
        assert!(
            err.contains(".parquet")
                && err.contains(&format!("token id {shown} "))
                && err.contains("\"d17\""),
            "{shown}: {err}"
        );
        let bench: Vec<String> = [
            "bench",
            "train",
            "--tiny",
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--batch",
            "4",
            "--seq",
            "16",
            "--steps",
            "2",
            "--warmup",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, _, err) = run_within(&bench, None, 90);
        assert_eq!(code, Some(2), "bench {shown}: {err}");
        assert!(
            err.contains(&format!("token id {shown} ")),
            "bench {shown}: {err}"
        );
    }
}

/// Settings that would leave a run that cannot be resumed are refused where the configuration and a
/// resumed state are read, with what is allowed.
#[test]
fn unrecoverable_settings_and_states_are_refused() {
    use condenser::train::config::TrainConfig;
    for (set, want) in [
        ("optim.lr=inf", "optim.lr must be a finite number in [0, "),
        ("optim.lr=nan", "optim.lr must be a finite number in [0, "),
        ("optim.lr=1e39", "optim.lr must be a finite number in [0, "),
        ("optim.eps=1e-50", "optim.eps must be positive"),
        (
            "data.holdout_fraction=1.0",
            "data.holdout_fraction must be a finite number in [0, 1)",
        ),
        (
            "data.holdout_fraction=-0.1",
            "data.holdout_fraction must be a finite number in [0, 1)",
        ),
        (
            "optim.warmup_ratio=1.5",
            "optim.warmup_ratio must be a finite number in [0, 1]",
        ),
        (
            "data.pad_to_multiple_of=0",
            "data.pad_to_multiple_of must be in [1, data.max_len = 128]",
        ),
        (
            "optim.warmup_ratio=nan",
            "optim.warmup_ratio must be a finite number in [0, 1]",
        ),
        (
            "optim.beta2=1",
            "optim.beta2 must be a finite number in [0, 1)",
        ),
        ("optim.max_grad_norm=inf", "optim.max_grad_norm must be"),
        ("loss.co_weight=nan", "loss.co_weight must be"),
        (
            "optim.max_steps=1000000000000",
            "optim.max_steps must be at most",
        ),
        (
            "model.n_head_layers=1000000000",
            "model.n_head_layers must be at most",
        ),
    ] {
        let err = format!("{:#}", TrainConfig::load(None, &[set.into()]).unwrap_err());
        assert!(err.contains(want), "{set}: {err}");
    }
    // A resumed state past its run, or with an absurd step.
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 60);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    train(&args(
        &data,
        ("--init", &init),
        &out,
        &["optim.max_steps=4", "data.batch_size=4", "data.max_len=64"],
        &["--stop-after", "1"],
    ));
    let ckpt = out.join("checkpoint-1");
    let path = ckpt.join("trainer_state.json");
    let good = std::fs::read(&path).unwrap();
    for (field, value, want) in [
        ("step", 1_000_000_000_000u64, "a run has at most"),
        ("step", 5, "step 5 is past the run's total_steps 4"),
    ] {
        let mut state: serde_json::Value = serde_json::from_slice(&good).unwrap();
        state[field] = value.into();
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let r = try_train(&args(&data, ("--resume", &ckpt), &out, &[], &[]));
        assert!(!r.status.success(), "{field} {value}");
        assert!(stderr(&r).contains(want), "{field} {value}: {}", stderr(&r));
    }
    let mut state: serde_json::Value = serde_json::from_slice(&good).unwrap();
    state["cursor"]["batches"] = 1_000_000.into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let r = try_train(&args(&data, ("--resume", &ckpt), &out, &[], &[]));
    assert!(
        stderr(&r).contains("the data cursor (epoch 0, batch 1000000) is past"),
        "{}",
        stderr(&r)
    );
}

/// `.checkpoint-N.tmp-PID` folders of processes that no longer run (killed while saving) are removed
/// when a run starts in that folder; those of a live process are kept.
#[test]
fn stale_checkpoint_temporaries_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 60);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let live_pid = std::process::id();
    let stale = [
        format!(".checkpoint-3.tmp-{dead_pid}"),
        format!(".final.tmp-{dead_pid}"),
        format!(".checkpoint-2.old-{dead_pid}"),
    ];
    let kept = [format!(".checkpoint-4.tmp-{live_pid}"), "notes".to_string()];
    for name in stale.iter().chain(&kept) {
        std::fs::create_dir_all(out.join(name)).unwrap();
        std::fs::write(out.join(name).join("model.safetensors"), b"x").unwrap();
    }
    train(&args(
        &data,
        ("--init", &init),
        &out,
        &["optim.max_steps=1", "data.batch_size=4", "data.max_len=64"],
        &[],
    ));
    for name in &stale {
        assert!(!out.join(name).exists(), "{name} is still there");
    }
    for name in &kept {
        assert!(out.join(name).exists(), "{name} was removed");
    }
}

/// A manifest entry that points outside its folder is refused, naming the manifest and the entry.
#[test]
fn train_refuses_manifest_entries_outside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 60);
    let init = tiny_model(dir.path());
    let mut m = manifest(&data);
    let first = m["shards"][0]["file"].as_str().unwrap().to_string();
    // A real shard outside the folder: read and trained on without the check.
    std::fs::copy(data.join(&first), dir.path().join("outside.parquet")).unwrap();
    m["shards"][0]["file"] = "../outside.parquet".into();
    std::fs::write(data.join("_manifest.json"), m.to_string()).unwrap();
    let o = try_train(&args(
        &data,
        ("--init", &init),
        &dir.path().join("run"),
        &["optim.max_steps=1", "data.batch_size=4", "data.max_len=64"],
        &[],
    ));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("_manifest.json")
            && err.contains("\"../outside.parquet\"")
            && err.contains("not a file name inside"),
        "{err}"
    );
}

/// `model.skip_from` unset: the init's head file decides (else half the layers), and the run says so;
/// set to the layer count it would feed the head the last layer, and is refused.
#[test]
fn skip_from_comes_from_the_head_file_when_unset_and_must_be_below_the_layer_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 50);
    let init = tiny_model(dir.path()); // 2 layers; its head file says skip_from 1
    let go = |sets: &[&str], out: &str| {
        let mut all = vec![
            "model.n_head_layers=1",
            "optim.max_steps=1",
            "data.batch_size=4",
        ];
        all.extend(sets);
        condenser()
            .arg("train")
            .args(args(
                &data,
                ("--init", &init),
                &dir.path().join(out),
                &all,
                &["--device", "cpu"],
            ))
            .output()
            .unwrap()
    };
    let o = go(&[], "unset");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("model.skip_from unset: the head reads layer 1 of 2"),
        "{}",
        stderr(&o)
    );
    let o = go(&["model.skip_from=2"], "last");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("model.skip_from 2 must be in [1, 1] for a model of 2 layers"),
        "{}",
        stderr(&o)
    );
}

/// a shard folder prepared before the `_` names (`manifest.json`, `tokenizer.json`)
/// still inspects and trains after the tokenizer it was made from is gone, and the next `prepare`
/// into it moves it to the new names.
#[test]
fn an_old_layout_shard_folder_still_inspects_and_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 60);
    let init = tiny_model(dir.path());
    for (new, old) in [
        ("_manifest.json", "manifest.json"),
        ("_tokenizer.json", "tokenizer.json"),
    ] {
        std::fs::rename(data.join(new), data.join(old)).unwrap();
    }
    // Only the folder's own copy can serve as the tokenizer.
    let mut m = manifest_old(&data);
    m["tokenizer"]["path"] = "/nonexistent/tokenizer.json".into();
    std::fs::write(data.join("manifest.json"), m.to_string()).unwrap();
    let o = run(&["inspect", data.to_str().unwrap(), "--samples", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("{}", m["totals"]["documents"])));
    let out = dir.path().join("run");
    train(&args(
        &data,
        ("--init", &init),
        &out,
        &["optim.max_steps=2", "data.batch_size=4", "data.max_len=64"],
        &[],
    ));
    assert!(out.join("final/model.safetensors").is_file());
    // The same prepare again (a complete run: nothing to add) rewrites the manifest under its new
    // name and drops the old files.
    common::prepare_small(&dir.path().join("corpus.jsonl"), &data);
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("shard-"))
        .collect();
    assert!(
        names.contains(&"_manifest.json".to_string())
            && names.contains(&"_tokenizer.json".to_string())
            && !names
                .iter()
                .any(|n| n == "manifest.json" || n == "tokenizer.json"),
        "{names:?}"
    );
}

fn manifest_old(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// `final/` is the model alone (what a hub push uploads); its resume state is in
/// `final-state/`, and `--resume RUN/final` finds it there, or inside `final/` in a run folder from
/// before the split. Either way the resumed run ends with the same bytes.
#[test]
fn final_is_a_clean_model_folder_and_still_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path(), 200);
    let init = tiny_model(dir.path());
    let out = dir.path().join("run");
    let sets = [
        "optim.max_steps=3",
        "data.batch_size=4",
        "data.max_len=64",
        "run.save_every=2",
    ];
    train(&args(&data, ("--init", &init), &out, &sets, &[]));
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let model_files = names(&out.join("final"));
    for f in [
        "optimizer.safetensors",
        "trainer_state.json",
        "train_config.toml",
    ] {
        assert!(
            !model_files.contains(&f.to_string()),
            "final/ holds {f}: {model_files:?}"
        );
    }
    for f in [
        "model.safetensors",
        "condenser_head.safetensors",
        "config.json",
        "tokenizer.json",
    ] {
        assert!(
            model_files.contains(&f.to_string()),
            "final/ lacks {f}: {model_files:?}"
        );
    }
    assert_eq!(
        names(&out.join("final-state")),
        [
            "optimizer.safetensors",
            "train_config.toml",
            "trainer_state.json"
        ]
    );
    // A step checkpoint is a whole resume point, as before.
    assert!(out.join("checkpoint-2/optimizer.safetensors").is_file());
    // Tensors, not bytes: the head file's metadata is a hash map, written in no fixed order.
    let snapshot = |run: &Path| -> Vec<(String, BTreeMap<String, Tensor>)> {
        [
            "final/model.safetensors",
            "final/condenser_head.safetensors",
            "final-state/optimizer.safetensors",
        ]
        .iter()
        .map(|f| (f.to_string(), tensors(&run.join(f))))
        .collect()
    };
    let same = |a: &[(String, BTreeMap<String, Tensor>)],
                b: &[(String, BTreeMap<String, Tensor>)]| {
        a.iter()
            .zip(b)
            .all(|((_, x), (_, y))| x.len() == y.len() && x.iter().all(|(k, t)| t.equal(&y[k])))
    };
    let before = snapshot(&out);
    // Resuming the finished run: nothing left to train, the same files again.
    let o = train(&args(
        &data,
        ("--resume", &out.join("final")),
        &out,
        &[],
        &[],
    ));
    assert_eq!(stdout(&o).trim(), out.join("final").display().to_string());
    assert!(
        same(&snapshot(&out), &before),
        "a resume from final/ changed the weights or moments"
    );
    // An older run folder: the state inside final/.
    for f in names(&out.join("final-state")) {
        std::fs::rename(out.join("final-state").join(&f), out.join("final").join(&f)).unwrap();
    }
    std::fs::remove_dir(out.join("final-state")).unwrap();
    train(&args(
        &data,
        ("--resume", &out.join("final")),
        &out,
        &[],
        &[],
    ));
    assert!(
        same(&snapshot(&out), &before),
        "a resume from an old-layout final/ changed them"
    );
    assert!(!out.join("final/optimizer.safetensors").exists());
    // final/ without its state is refused, naming where the state belongs.
    std::fs::remove_dir_all(out.join("final-state")).unwrap();
    let o = try_train(&args(
        &data,
        ("--resume", &out.join("final")),
        &out,
        &[],
        &[],
    ));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("final-state/trainer_state.json"),
        "{}",
        stderr(&o)
    );
}
