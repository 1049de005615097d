//! The model against Hugging Face transformers: forward parity on a tiny random Condenser, save/load
//! round trips, loading in transformers, and bad checkpoints.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use condenser::model::{hf, Ctx, HeadConfig, Labels, Mask};
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-condenser")
}

fn expected() -> HashMap<String, Tensor> {
    let (t, _) = hf::read_safetensors(&fixture().join("expected.safetensors")).unwrap();
    t.into_iter().collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

fn load_tiny() -> hf::Loaded {
    hf::load(
        &fixture().join("model"),
        Device::Cpu,
        HeadConfig::default(),
        0,
    )
    .unwrap()
}

#[test]
fn forward_matches_transformers_within_1e_5() {
    let e = expected();
    let m = load_tiny();
    assert!(!m.fresh_mlm_head && !m.fresh_condenser_head);
    assert_eq!(
        m.model.head_config,
        HeadConfig {
            skip_from: 2,
            n_head_layers: 2,
            late_mlm: true
        }
    );
    let ctx = Ctx::eval(Kind::Float);
    let (ids, mask, labels) = (&e["input_ids"], &e["attention_mask"], &e["labels"]);
    let hs = tch::no_grad(|| {
        let mask_sdpa = Mask::detect(mask);
        m.model.bert.forward(ids, &mask_sdpa, &[0, 1, 2, 3, 4], ctx)
    });
    for (i, h) in hs {
        let d = max_diff(&h, &e[&format!("hidden_{i}")]);
        assert!(d < 1e-5, "hidden state {i}: max abs diff {d:e}");
    }
    let (_, head) = tch::no_grad(|| m.model.states(ids, &Mask::detect(mask), ctx));
    assert!(max_diff(&head, &e["head_output"]) < 1e-5, "head output");
    let out = tch::no_grad(|| {
        m.model
            .forward(ids, &Mask::detect(mask), &Labels::detect(labels), ctx)
    });
    assert!(max_diff(&out.cls, &e["cls"]) < 1e-5, "cls");
    let d_head = max_diff(&out.head_loss.reshape([1]), &e["head_loss"]);
    let d_late = max_diff(&out.late_loss.reshape([1]), &e["late_loss"]);
    assert!(
        d_head < 1e-5 && d_late < 1e-5,
        "losses: head {d_head:e}, late {d_late:e}"
    );
    let sum = (&out.head_loss + &out.late_loss - &out.loss)
        .abs()
        .double_value(&[]);
    assert!(sum < 1e-7, "late_mlm: loss = head + late");
}

#[test]
fn save_then_load_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let m = load_tiny();
    let tok = common::data("minilm/tokenizer.json");
    let out = dir.path().join("ckpt");
    hf::save(&out, &m.vs, &m.model, &tok, &[]).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "condenser_head.safetensors",
        "tokenizer.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary folders left: {leftovers:?}");
    let back = hf::load(&out, Device::Cpu, HeadConfig::default(), 1).unwrap();
    assert_eq!(back.model.head_config, m.model.head_config);
    let (a, b) = (m.vs.variables(), back.vs.variables());
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert!(v.equal(&b[k]), "{k} differs after save/load");
    }
    // Saving over an existing checkpoint replaces it whole.
    hf::save(
        &out,
        &back.vs,
        &back.model,
        &tok,
        &[("extra.json", b"{}".to_vec())],
    )
    .unwrap();
    assert!(out.join("extra.json").exists());
}

#[test]
fn a_saved_checkpoint_loads_in_transformers_with_the_same_cls() {
    let dir = tempfile::tempdir().unwrap();
    let m = load_tiny();
    let out = dir.path().join("ckpt");
    hf::save(
        &out,
        &m.vs,
        &m.model,
        &common::data("minilm/tokenizer.json"),
        &[],
    )
    .unwrap();
    let e = expected();
    let to_lists = |t: &Tensor| -> Vec<Vec<i64>> { Vec::<Vec<i64>>::try_from(t).unwrap() };
    let inputs = serde_json::json!({"input_ids": to_lists(&e["input_ids"]), "attention_mask": to_lists(&e["attention_mask"])});
    let inputs_path = dir.path().join("inputs.json");
    std::fs::write(&inputs_path, inputs.to_string()).unwrap();
    let r = common::python_json(
        &common::fixture("check_hf_load.py"),
        &[out.as_os_str(), inputs_path.as_os_str()],
    );
    assert_eq!(r["class"], "BertModel");
    // BertModel adds a pooler that pre-training neither has nor uses (the reference's checkpoints lack it
    // too, spec 2.7): it is the only thing transformers may call missing. No encoder key is missing.
    let missing: Vec<String> = serde_json::from_value(r["missing"].clone()).unwrap();
    assert!(
        missing.iter().all(|k| k.starts_with("pooler.")),
        "missing encoder keys: {missing:?}"
    );
    let unexpected: Vec<String> = serde_json::from_value(r["unexpected"].clone()).unwrap();
    assert!(
        unexpected.iter().all(|k| k.starts_with("cls.")),
        "unexpected encoder keys: {unexpected:?}"
    );
    assert_eq!(r["mlm_missing"], serde_json::json!([]), "{r}");
    assert_eq!(r["mlm_unexpected"], serde_json::json!([]), "{r}");
    let cls: Vec<Vec<f32>> = serde_json::from_value(r["cls"].clone()).unwrap();
    let ours = tch::no_grad(|| {
        m.model.cls(
            &e["input_ids"],
            &Mask::detect(&e["attention_mask"]),
            Ctx::eval(Kind::Float),
        )
    });
    let theirs = Tensor::from_slice2(&cls);
    assert!(
        max_diff(&ours, &theirs) < 1e-5,
        "CLS differs from transformers"
    );
}

/// The gradient cache keeps every chunk's [CLS] until its last chunk: a view of the (B, T, H) last
/// layer would keep that whole layer alive per chunk, so memory would grow with the batch.
#[test]
fn cls_is_a_compact_copy_not_a_view_of_the_last_layer() {
    let e = expected();
    let m = load_tiny();
    let (ids, mask) = (&e["input_ids"], &e["attention_mask"]);
    assert!(ids.size()[0] >= 2 && ids.size()[1] >= 2, "needs B, T >= 2");
    let cls = tch::no_grad(|| {
        m.model
            .cls(ids, &Mask::detect(mask), Ctx::eval(Kind::Float))
    });
    assert_eq!(cls.size(), [ids.size()[0], m.model.config.hidden_size]);
    assert!(cls.is_contiguous());
    assert_eq!(cls.stride(), [m.model.config.hidden_size, 1]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match hf::load(dir, Device::Cpu, HeadConfig::default(), 0) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A config that does not match the weights: shapes listed.
    let d = dir.path().join("wrong-config");
    copy_dir(&fixture().join("model"), &d);
    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 37", "\"intermediate_size\": 40");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("intermediate.dense.weight has shape [37, 32]")
            && err.contains("intermediate_size 40"),
        "{err}"
    );
    // Fewer layers in the config than in the weights: the extra tensors are named.
    let d = dir.path().join("fewer-layers");
    copy_dir(&fixture().join("model"), &d);
    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 4", "\"num_hidden_layers\": 3");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("4 encoder layer(s)") && err.contains("num_hidden_layers 3"),
        "{err}"
    );
    // A truncated safetensors file.
    let d = dir.path().join("truncated");
    copy_dir(&fixture().join("model"), &d);
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(&d);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated or corrupt"),
        "{err}"
    );
    // No config at all.
    let d = dir.path().join("empty");
    std::fs::create_dir_all(&d).unwrap();
    assert!(load_err(&d).contains("config.json"));
    // Saving without a tokenizer.json: a clear error, nothing left behind.
    let m = load_tiny();
    let err = hf::save(
        &dir.path().join("ckpt"),
        &m.vs,
        &m.model,
        Path::new("/nonexistent/tokenizer.json"),
        &[],
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("/nonexistent/tokenizer.json"),
        "{err:#}"
    );
    assert!(!dir.path().join("ckpt").exists());
}

#[test]
fn minilm_without_mlm_head_gets_a_fresh_tied_one() {
    let m = hf::load(
        &common::data("minilm"),
        Device::Cpu,
        HeadConfig {
            skip_from: 3,
            n_head_layers: 2,
            late_mlm: true,
        },
        0,
    )
    .unwrap();
    assert!(m.fresh_mlm_head && m.fresh_condenser_head);
    assert_eq!(m.model.config.hidden_size, 384);
    assert_eq!(
        m.model
            .lm_head
            .bias
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0,
        "zero MLM bias"
    );
    // The head is N(0, 0.02): its query weight has about that spread.
    let q = &m.vs.variables()["c_head.0.attention.self.query.weight"];
    let std = q.std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.002, "head init std {std}");
}

/// The CUDA precision path (bf16 matrix work, fp32 master weights, LayerNorm and losses) run on the
/// CPU, so a dtype mismatch shows here rather than on a GPU: forward and backward go through, the
/// gradients reach the fp32 parameters finite, and the losses and CLS track the fp32 ones.
#[test]
fn bf16_compute_runs_on_cpu_and_tracks_fp32() {
    use condenser::train::config::TrainConfig;
    use condenser::train::objective::cocondenser::cocondenser_step;
    use condenser::train::objective::condenser::condenser_micro;
    use condenser::train::objective::DeviceBatch;
    let e = expected();
    let m = load_tiny();
    let (ids, mask, labels) = (&e["input_ids"], &e["attention_mask"], &e["labels"]);
    let run = |kind: Kind| {
        let ctx = Ctx::eval(kind);
        tch::no_grad(|| {
            m.model
                .forward(ids, &Mask::detect(mask), &Labels::detect(labels), ctx)
        })
    };
    let (full, half) = (run(Kind::Float), run(Kind::BFloat16));
    for (name, a, b) in [
        ("head loss", &full.head_loss, &half.head_loss),
        ("late loss", &full.late_loss, &half.late_loss),
    ] {
        assert_eq!(b.kind(), Kind::Float, "{name} is fp32");
        let (a, b) = (a.double_value(&[]), b.double_value(&[]));
        assert!(
            (a - b).abs() < 0.02 * a.abs(),
            "{name}: fp32 {a} vs bf16 {b}"
        );
    }
    assert_eq!(half.cls.kind(), Kind::Float);
    let d = max_diff(&full.cls, &half.cls);
    assert!(d < 0.1, "cls: max abs diff {d}");

    // Training steps of both stages (the coCondenser one with the gradient cache) in bf16.
    // The fixture's rows, repeated to an even count of at least 4 (two-span documents).
    let k = 2 * (4 / (2 * ids.size()[0])).max(1);
    let (ids, mask, labels) = (
        ids.repeat([k, 1]),
        mask.repeat([k, 1]),
        labels.repeat([k, 1]),
    );
    let (rows, len) = (ids.size()[0] as usize, ids.size()[1] as usize);
    let flat = |t: &Tensor| Vec::<i64>::try_from(&t.reshape([-1])).unwrap();
    let batch = condenser::train::collate::Batch {
        rows,
        len,
        input_ids: flat(&ids),
        attention_mask: flat(&mask),
        labels: flat(&labels),
        real_tokens: flat(&mask).iter().filter(|&&v| v != 0).count(),
    };
    assert!(
        rows % 2 == 0 && rows >= 4,
        "pairs of rows for the coCondenser loss"
    );
    let b = DeviceBatch::new(&batch, Device::Cpu);
    let ctx = Ctx::train(Kind::BFloat16);
    let mut loss_cfg = TrainConfig::default().loss;
    let l = condenser_micro(&m.model, &b, &loss_cfg, ctx, 1.0);
    assert!(l.total.double_value(&[]).is_finite());
    loss_cfg.cache_chunk_size = 2;
    let l = cocondenser_step(
        &m.model,
        &b,
        &loss_cfg,
        ctx,
        0,
        0,
        &condenser::dist::Dist::single(),
    )
    .unwrap();
    assert!(l.part("co_loss").unwrap().double_value(&[]).is_finite());
    for (name, p) in m.vs.variables() {
        let g = p.grad();
        assert!(g.defined(), "{name}: no gradient");
        assert_eq!((p.kind(), g.kind()), (Kind::Float, Kind::Float), "{name}");
        assert!(
            g.isfinite().all().int64_value(&[]) == 1,
            "{name}: non-finite gradient"
        );
    }
}

/// A config.json that would divide by zero, allocate terabytes or grow without end, or that does not
/// fit its weight file, is refused before anything is built (train, encode and eval all load through
/// `hf::load`), with the key named.
#[test]
fn bad_model_configs_are_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (key, value, want)) in [
        (
            "num_attention_heads",
            "0",
            "num_attention_heads must be in [1, ",
        ),
        ("hidden_size", "1200000000", "hidden_size must be in [1, "),
        ("vocab_size", "1099511627776", "vocab_size must be in [1, "),
        (
            "num_hidden_layers",
            "1000000000",
            "num_hidden_layers must be in [1, ",
        ),
        (
            "max_position_embeddings",
            "-1",
            "max_position_embeddings must be in [1, ",
        ),
        (
            "hidden_dropout_prob",
            "1.5",
            "hidden_dropout_prob must be in [0, 1)",
        ),
        // Valid alone, but not what the weights hold: caught from the safetensors header.
        (
            "vocab_size",
            "100000",
            "word_embeddings.weight has shape [99, 32]",
        ),
        ("num_hidden_layers", "6", "4 encoder layer(s)"),
        ("hidden_size", "64", "hidden_size 64"),
        (
            "type_vocab_size",
            "3",
            "token_type_embeddings.weight has shape [2, 32]",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let d = dir.path().join(format!("bad-{i}"));
        copy_dir(&fixture().join("model"), &d);
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        cfg[key] = serde_json::from_str(value).unwrap();
        std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
        let err = load_err(&d);
        assert!(err.contains(want), "{key} = {value}: {err}");
        assert!(err.contains("config.json"), "{key} = {value}: {err}");
    }
    // A head file whose metadata asks for more layers than it holds.
    let d = dir.path().join("head-layers");
    copy_dir(&fixture().join("model"), &d);
    let bytes = std::fs::read(d.join(hf::HEAD_FILE)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]["n_head_layers"] = "1000000000".into();
    let mut header = header.to_string().into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(&header);
    file.extend(&bytes[8 + n..]);
    std::fs::write(d.join(hf::HEAD_FILE), file).unwrap();
    let err = load_err(&d);
    assert!(err.contains("n_head_layers 1000000000"), "{err}");
}

/// The residual stream with bf16 matrix work: fp32 by default (what the reference's autocast gives:
/// LayerNorm outputs and residual additions in fp32), bf16 on request; on the MiniLM warm start the fp32
/// stream stays closer to the all-fp32 model than the bf16 one.
#[test]
fn residual_stream_is_fp32_by_default_and_bf16_on_request() {
    let m = hf::load(
        &common::data("minilm"),
        Device::Cpu,
        HeadConfig::default(),
        0,
    )
    .unwrap();
    let mut rng = common::Lcg(11);
    let ids: Vec<i64> = (0..4 * 48)
        .map(|i| {
            if i % 48 == 0 {
                101
            } else {
                1000 + rng.below(20000) as i64
            }
        })
        .collect();
    let ids = Tensor::from_slice(&ids).view([4, 48]);
    let last = |ctx: Ctx| tch::no_grad(|| m.model.states(&ids, &Mask::none(), ctx).0);
    let full = last(Ctx::eval(Kind::Float));
    let fp32_residual = last(Ctx::eval(Kind::BFloat16));
    let bf16_residual = last(Ctx::eval(Kind::BFloat16).with_residual(Kind::BFloat16));
    assert_eq!(full.kind(), Kind::Float);
    assert_eq!(
        fp32_residual.kind(),
        Kind::Float,
        "the default residual stream is fp32"
    );
    assert_eq!(bf16_residual.kind(), Kind::BFloat16);
    let err = |t: &Tensor| {
        (t.to_kind(Kind::Float) - &full)
            .abs()
            .mean(Kind::Float)
            .double_value(&[])
    };
    let (e32, e16) = (err(&fp32_residual), err(&bf16_residual));
    assert!(
        e32 > 0.0,
        "bf16 matrix work changed nothing: the test proves nothing"
    );
    assert!(
        e32 < e16,
        "fp32 residual error {e32:e} not below bf16 residual error {e16:e}"
    );
    eprintln!("mean |last hidden - fp32|: fp32 residual {e32:e}, bf16 residual {e16:e}");
}
