//! `condenser finetune` and `condenser mine` on CPU: the gradient cache against one graph, malformed
//! lines counted and named, bit-identical resume, an encoder-only folder that transformers loads with
//! the CLS `condenser encode` writes, and fine-tune -> mine -> fine-tune end to end. (The loss by hand
//! and Tevatron's sampling are unit tests in src/train/finetune.rs and src/train/pairs.rs.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use condenser::train::pairs::tokenize_rows;
use tch::Tensor;

/// A tiny retrieval world: topics with distinctive words; a query names its topic, its positive is
/// the topic's passage, negatives are other topics'.
const TOPICS: &[(&str, &str)] = &[
    ("volcano", "lava erupts from the volcano crater ash"),
    ("piano", "the piano keys and strings make music notes"),
    ("glacier", "ice of the glacier moves slowly down valleys"),
    ("rocket", "a rocket engine burns fuel to reach orbit"),
    ("bread", "bakers knead dough and bake bread in ovens"),
    ("coral", "coral reefs grow in warm shallow seas"),
    ("chess", "chess players move kings queens and pawns"),
    ("desert", "sand dunes and cacti fill the hot desert"),
    ("violin", "a violin bow draws sound from its strings"),
    ("comet", "a comet tail glows near the sun"),
    ("honey", "bees make honey from flower nectar"),
    ("tiger", "the striped tiger hunts in the jungle"),
];

fn passage(i: usize, variant: usize) -> serde_json::Value {
    let (title, text) = TOPICS[i % TOPICS.len()];
    serde_json::json!({"docid": format!("d{i}-{variant}"), "title": title, "text": format!("{text} {variant}")})
}

/// Tevatron training lines: `n` queries, each with a positive and `negs` negatives; plus `bad` lines.
fn write_train(dir: &Path, n: usize, negs: usize, bad: &[&str]) -> PathBuf {
    let path = dir.join("train.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for q in 0..n {
        let t = q % TOPICS.len();
        let line = serde_json::json!({
            "query_id": format!("q{q}"),
            "query": format!("tell me about the {} {}", TOPICS[t].0, q / TOPICS.len()),
            "positive_passages": [passage(t, 0)],
            "negative_passages": (1..=negs).map(|k| passage(t + k, k)).collect::<Vec<_>>(),
        });
        writeln!(f, "{line}").unwrap();
    }
    for b in bad {
        writeln!(f, "{b}").unwrap();
    }
    path
}

fn finetune(train: &Path, from: (&str, &Path), out: &Path, sets: &[&str]) -> std::process::Output {
    finetune_with(train, from, out, sets, &[])
}

/// `finetune` with more flags after the common ones (`--stop-after N`, `--overwrite`, ...).
fn finetune_with(
    train: &Path,
    from: (&str, &Path),
    out: &Path,
    sets: &[&str],
    extra: &[&str],
) -> std::process::Output {
    let mut a: Vec<String> = vec![
        "finetune".into(),
        "--train".into(),
        train.display().to_string(),
        from.0.into(),
        from.1.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--device".into(),
        "cpu".into(),
    ];
    for s in sets {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    a.extend(extra.iter().map(|e| e.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    run(&refs)
}

const SMALL: &[&str] = &[
    "data.batch_size=4",
    "data.train_n_passages=3",
    "data.passage_max_len=32",
    "data.query_max_len=16",
    "optim.lr=1e-3",
    "run.log_every=1",
];

fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    SMALL.iter().copied().chain(extra.iter().copied()).collect()
}

#[test]
fn the_gradient_cache_equals_one_graph() {
    use condenser::dist::Dist;
    use condenser::model::{hf, Ctx, HeadConfig};
    use condenser::train::objective::finetune::finetune_step;
    use condenser::train::objective::DeviceBatch;
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    // Dropout off, so chunked and whole passes see the same network.
    let cfg_path = init.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let tok = condenser::tokenizer::load(&init.join("tokenizer.json")).unwrap();
    let special = condenser::tokenizer::special_ids(&tok).unwrap();
    let queries: Vec<String> = (0..4)
        .map(|i| format!("about the {}", TOPICS[i].0))
        .collect();
    let passages: Vec<String> = (0..12).map(|i| TOPICS[i].1.to_string()).collect();
    let q = tokenize_rows(
        &tok,
        &special,
        &queries.iter().map(String::as_str).collect::<Vec<_>>(),
        16,
    )
    .unwrap();
    let p = tokenize_rows(
        &tok,
        &special,
        &passages.iter().map(String::as_str).collect::<Vec<_>>(),
        32,
    )
    .unwrap();
    let grads = |chunk: usize| -> (f64, Vec<Tensor>) {
        let loaded = hf::load(&init, tch::Device::Cpu, HeadConfig::default(), 0).unwrap();
        let mut w = condenser::train::config::TrainConfig::finetune_defaults().loss;
        w.cache_chunk_size = chunk;
        w.temperature = 0.5;
        let loss = finetune_step(
            &loaded.model,
            &DeviceBatch::new(&q, tch::Device::Cpu),
            &DeviceBatch::new(&p, tch::Device::Cpu),
            3,
            &w,
            Ctx::train(tch::Kind::Float),
            (1, 0),
            &Dist::single(),
        )
        .unwrap();
        let vars: std::collections::BTreeMap<String, Tensor> =
            loaded.vs.variables().into_iter().collect();
        let g = vars
            .into_iter()
            .filter(|(n, _)| hf::is_encoder_weight(n))
            .map(|(_, v)| v.grad().copy())
            .collect();
        (loss.double_value(&[]), g)
    };
    let (l0, g0) = grads(0);
    let (l2, g2) = grads(2);
    assert!((l0 - l2).abs() < 1e-6, "{l0} vs {l2}");
    let scale = g0
        .iter()
        .map(|g| g.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(scale > 0.0);
    let diff = g0
        .iter()
        .zip(&g2)
        .map(|(a, b)| (a - b).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(
        diff < 1e-5 * scale.max(1.0),
        "gradients differ by {diff} (largest {scale})"
    );
}

#[test]
fn malformed_lines_are_counted_and_named_and_the_model_is_encoder_only() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(
        dir.path(),
        16,
        4,
        &[
            "{not json",
            r#"{"query_id": "x", "query": "q", "positive_passages": [], "negative_passages": []}"#,
        ],
    );
    let out = dir.path().join("ft");
    let o = finetune(
        &train,
        ("--init", &init),
        &out,
        &with(&["optim.max_steps=3"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let name = train.display().to_string();
    assert!(
        err.contains(&format!("{name}:17: skipped: not a training record")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{name}:18: skipped: no positive passage")),
        "{err}"
    );
    assert!(
        err.contains("2 line(s) skipped: 1 malformed, 1 without a positive"),
        "{err}"
    );
    assert_eq!(stdout(&o).trim(), out.join("final").display().to_string());
    // The retriever alone: no Condenser head file, no MLM head weights.
    let final_dir = out.join("final");
    assert!(!final_dir.join("condenser_head.safetensors").exists());
    let (tensors, _) =
        condenser::model::hf::read_safetensors(&final_dir.join("model.safetensors")).unwrap();
    assert!(tensors
        .iter()
        .all(|(n, _)| !n.starts_with("cls.") && !n.starts_with("c_head.")));
    assert!(tensors
        .iter()
        .any(|(n, _)| n.contains("embeddings.word_embeddings")));
    let m: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(m.len(), 3);
    assert!(m[0].get("head_loss").is_none() && m[0]["loss"].as_f64().unwrap() > 0.0);
    // A file of nothing but bad lines says so, rather than only that there were too few queries.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{not json\n").unwrap();
    let o = finetune(&bad, ("--init", &init), &dir.path().join("y"), &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("1 line(s) skipped: 1 malformed"),
        "{}",
        stderr(&o)
    );
    // A fine-tuning config is refused by `train`, and a pre-training one by `finetune`.
    let o = finetune(
        &train,
        ("--init", &init),
        &dir.path().join("x"),
        &["stage=condenser"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`condenser finetune` trains stage \"finetune\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path(), 24, 4, &[]);
    let whole = dir.path().join("whole");
    let o = finetune(
        &train,
        ("--init", &init),
        &whole,
        &with(&["optim.max_steps=6"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let part = dir.path().join("part");
    let o = finetune_with(
        &train,
        ("--init", &init),
        &part,
        &with(&["optim.max_steps=6"]),
        &["--stop-after", "4"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = part.join("checkpoint-4");
    let o = finetune(&train, ("--resume", &ckpt), &part, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "final/model.safetensors",
        "final-state/optimizer.safetensors",
    ] {
        assert!(
            std::fs::read(whole.join(f)).unwrap() == std::fs::read(part.join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
}

#[test]
fn finetune_mine_finetune_and_the_model_loads_in_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path(), 24, 2, &[]);
    let round1 = dir.path().join("round1");
    let o = finetune(
        &train,
        ("--init", &init),
        &round1,
        &with(&["optim.max_steps=4"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // A BEIR corpus of every topic's passages, queries and qrels for the first 6 queries.
    let corpus = dir.path().join("corpus.jsonl");
    let mut f = std::fs::File::create(&corpus).unwrap();
    for i in 0..TOPICS.len() {
        for v in 0..3 {
            let p = passage(i, v);
            writeln!(
                f,
                "{}",
                serde_json::json!({"_id": p["docid"], "title": p["title"], "text": p["text"]})
            )
            .unwrap();
        }
    }
    let queries = dir.path().join("queries.jsonl");
    let qrels = dir.path().join("qrels.tsv");
    let mut fq = std::fs::File::create(&queries).unwrap();
    let mut fr = std::fs::File::create(&qrels).unwrap();
    writeln!(fr, "query-id\tcorpus-id\tscore").unwrap();
    for q in 0..6 {
        writeln!(fq, "{}", serde_json::json!({"_id": format!("q{q}"), "text": format!("tell me about the {}", TOPICS[q].0)})).unwrap();
        writeln!(fr, "q{q}\td{q}-0\t1").unwrap();
    }
    drop((f, fq, fr));
    let mined = dir.path().join("mined.jsonl");
    let model = round1.join("final");
    let mine = |out: &Path| {
        let o = run(&[
            "mine",
            "--model",
            model.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
            "--qrels",
            qrels.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--depth",
            "20",
            "--skip-top",
            "1",
            "--negatives",
            "5",
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    mine(&mined);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&mined)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for l in &lines {
        let q = l["query_id"].as_str().unwrap();
        let pos = format!("d{}-0", &q[1..]);
        assert_eq!(l["positive_passages"][0]["docid"], pos.as_str());
        let negs = l["negative_passages"].as_array().unwrap();
        assert_eq!(negs.len(), 5);
        assert!(negs
            .iter()
            .all(|n| n["docid"] != pos.as_str() && n["text"].as_str().is_some()));
    }
    // Hostile uses of mine and eval, each refused before any work with a message that says why.
    let cli = |args: &[&str]| -> std::process::Output {
        let mut a = args.to_vec();
        a.extend(["--device", "cpu"]);
        run(&a)
    };
    let search = |cmd: &'static str, q: &Path, extra: &[&str]| -> std::process::Output {
        let mut a = vec![
            cmd,
            "--model",
            model.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--queries",
            q.to_str().unwrap(),
            "--qrels",
            qrels.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let before = std::fs::read(&queries).unwrap();
    let link = dir.path().join("queries-link.jsonl");
    std::os::unix::fs::symlink(&queries, &link).unwrap();
    for out in [&queries, &link, &qrels, &corpus] {
        let o = search("mine", &queries, &["--out", out.to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("is the same file as --"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::read(&queries).unwrap(),
        before,
        "mine replaced its input"
    );
    let o = search("eval", &queries, &["--run", qrels.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("--run") && stderr(&o).contains("is the same file as --qrels"),
        "{}",
        stderr(&o)
    );
    let o = search("mine", &queries, &["--out", "x.jsonl", "--negatives", "0"]);
    assert!(
        stderr(&o).contains("--negatives must be at least 1"),
        "{}",
        stderr(&o)
    );
    for (cmd, flag) in [
        ("mine", "--max-len"),
        ("mine", "--query-max-len"),
        ("eval", "--max-len"),
        ("eval", "--query-max-len"),
    ] {
        let out = dir.path().join("never.jsonl");
        let mut extra = vec![flag, "1000"];
        if cmd == "mine" {
            extra.extend(["--out", out.to_str().unwrap()]);
        }
        let o = search(cmd, &queries, &extra);
        assert_eq!(o.status.code(), Some(2), "{cmd} {flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "{flag} 1000 exceeds the model's max_position_embeddings 130"
            )),
            "{cmd} {flag}: {}",
            stderr(&o)
        );
    }
    let o = cli(&[
        "eval-spans",
        "--model",
        model.to_str().unwrap(),
        "--max-len",
        "1000",
        ".",
    ]);
    assert!(
        stderr(&o).contains("--max-len 1000 exceeds"),
        "{}",
        stderr(&o)
    );
    // Judged queries missing from the queries file are named as such, not as missing documents.
    let other = dir.path().join("other-queries.jsonl");
    std::fs::write(&other, "{\"_id\": \"zz\", \"text\": \"nothing judged\"}\n").unwrap();
    let o = search(
        "mine",
        &other,
        &["--out", dir.path().join("m.jsonl").to_str().unwrap()],
    );
    assert!(
        stderr(&o).contains("6 are not in the queries file")
            && stderr(&o).contains("0 have no relevant document"),
        "{}",
        stderr(&o)
    );
    // encode cannot write over the texts it reads.
    let texts_in = dir.path().join("in.txt");
    std::fs::write(&texts_in, "lava\n").unwrap();
    let o = cli(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        texts_in.to_str().unwrap(),
        "-o",
        texts_in.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("is the same file as INPUT"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&texts_in).unwrap(), b"lava\n");

    // The same draw again: keyed by the seed.
    let again = dir.path().join("again.jsonl");
    mine(&again);
    assert_eq!(
        std::fs::read(&mined).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // Round two on the mined negatives, from round one's model.
    let round2 = dir.path().join("round2");
    let o = finetune(
        &mined,
        ("--init", &model),
        &round2,
        &with(&["optim.max_steps=2", "data.batch_size=3"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // An encoder without the MLM head declares itself as one.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(round2.join("final/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "BertModel", "{cfg}");

    // transformers loads the encoder with nothing missing or unexpected, and its CLS is encode's.
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "lava erupts from the volcano\nbees make honey\n").unwrap();
    let emb = dir.path().join("e.parquet");
    let final2 = round2.join("final");
    let o = run(&[
        "encode",
        "--model",
        final2.to_str().unwrap(),
        "--input",
        texts.to_str().unwrap(),
        "--out",
        emb.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: Vec<Vec<f32>> = read_embeddings(&emb).into_iter().map(|(_, v)| v).collect();
    let script = r#"
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
folder, texts = sys.argv[1], sys.argv[2]
model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
tok = AutoTokenizer.from_pretrained(folder)
lines = [l for l in open(texts).read().splitlines() if l]
with torch.no_grad():
    out = model(**tok(lines, padding=True, truncation=True, return_tensors="pt"))
cls = out.last_hidden_state[:, 0].tolist()
print(json.dumps({"missing": sorted(k for k in info["missing_keys"] if "pooler" not in k), "unexpected": sorted(info["unexpected_keys"]), "cls": cls}))
"#;
    let r = python_json(script, &[final2.as_os_str(), texts.as_os_str()]);
    assert_eq!(r["missing"], serde_json::json!([]), "{r}");
    assert_eq!(r["unexpected"], serde_json::json!([]), "{r}");
    let cls: Vec<Vec<f32>> = serde_json::from_value(r["cls"].clone()).unwrap();
    for (a, b) in cls.iter().zip(&ours) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "transformers' CLS differs from encode's by {d}");
    }
}

#[test]
fn a_second_run_into_a_finished_run_folder_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path(), 16, 2, &[]);
    let out = dir.path().join("run");
    let o = finetune(
        &train,
        ("--init", &init),
        &out,
        &with(&["optim.max_steps=2"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let model = std::fs::read(out.join("final/model.safetensors")).unwrap();
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let o = finetune(
        &train,
        ("--init", &init),
        &out,
        &with(&["optim.max_steps=1", "optim.lr=1e-2"]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds a run")
            && stderr(&o).contains("--overwrite")
            && stderr(&o).contains("--resume"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        model
    );
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
    // --overwrite replaces the whole run: no checkpoint of the old one stays mixed in.
    let sets = with(&["optim.max_steps=1", "run.save_every=1"]);
    let o = finetune_with(&train, ("--init", &init), &out, &sets, &["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(
        std::fs::read(out.join("final/model.safetensors")).unwrap(),
        model
    );
    let steps: Vec<String> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].to_string())
        .collect();
    assert_eq!(steps, ["1"]);
    assert!(!out.join("checkpoint-2").exists());
    // A file is not a run folder.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let o = finetune(
        &train,
        ("--init", &init),
        &file,
        &with(&["optim.max_steps=1"]),
    );
    assert!(
        stderr(&o).contains("is a file, not a run folder"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn lengths_past_the_models_positions_and_odd_training_inputs_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path(), 8, 2, &[]);
    for key in ["data.query_max_len", "data.passage_max_len"] {
        let set = format!("{key}=1000");
        let o = finetune(
            &train,
            ("--init", &init),
            &dir.path().join("r"),
            &with(&[&set]),
        );
        assert_eq!(o.status.code(), Some(2), "{key}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "{key} 1000 exceeds the model's max_position_embeddings 130"
            )),
            "{}",
            stderr(&o)
        );
    }
    let o = finetune(
        &dir.path().join("absent.jsonl"),
        ("--init", &init),
        &dir.path().join("r"),
        &with(&[]),
    );
    // Named once: not "no such file ...: No such file or directory".
    assert!(
        stderr(&o).contains("absent.jsonl: no such file (TRAIN"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
    let o = finetune(
        Path::new("-"),
        ("--init", &init),
        &dir.path().join("r"),
        &with(&[]),
    );
    assert!(
        stderr(&o).contains("cannot read its training lines from stdin"),
        "{}",
        stderr(&o)
    );
    // A folder is read as its files (here: the one training file).
    let folder = dir.path().join("train-dir");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&train, folder.join("a.jsonl")).unwrap();
    let o = finetune(
        &folder,
        ("--init", &init),
        &dir.path().join("r"),
        &with(&["optim.max_steps=1"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn finetune_prints_its_own_defaults_and_train_refuses_the_finetune_stage() {
    let o = run(&["finetune", "--print-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: toml::Table = toml::from_str(&stdout(&o)).unwrap();
    assert_eq!(printed["stage"].as_str(), Some("finetune"));
    assert_eq!(printed["optim"]["lr"].as_float(), Some(5e-6));
    assert_eq!(printed["optim"]["weight_decay"].as_float(), Some(0.0));
    assert_eq!(printed["optim"]["epochs"].as_integer(), Some(3));
    let o = run(&["train", "--print-config", "--set", "stage=finetune"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("condenser finetune --print-config"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn resume_on_other_training_data_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path(), 16, 2, &[]);
    let out = dir.path().join("run");
    let o = finetune_with(
        &train,
        ("--init", &init),
        &out,
        &with(&["optim.max_steps=3"]),
        &["--stop-after", "1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = finetune_with(
        &train,
        ("--init", &init),
        &dir.path().join("new"),
        &with(&[]),
        &["--allow-data-change"],
    );
    assert!(
        stderr(&o).contains("--allow-data-change goes with --resume"),
        "{}",
        stderr(&o)
    );
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = write_train(&other_dir, 20, 2, &[]);
    let ckpt = out.join("checkpoint-1");
    let o = finetune(&other, ("--resume", &ckpt), &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the checkpoint was trained on train.jsonl")
            && stderr(&o).contains("--allow-data-change"),
        "{}",
        stderr(&o)
    );
    let o = finetune_with(
        &other,
        ("--resume", &ckpt),
        &out,
        &[],
        &["--allow-data-change"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_run_that_fails_before_its_first_log_step_leaves_no_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    // Nothing to train on: every line is skipped, so there is not one batch.
    let train = write_train(
        dir.path(),
        0,
        2,
        &[
            "{not json",
            r#"{"query_id": 1, "query": "", "positive_passages": [{"text": "a"}]}"#,
        ],
    );
    let out = dir.path().join("run");
    let o = finetune(
        &train,
        ("--init", &init),
        &out,
        &with(&["optim.max_steps=2"]),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fewer than one batch"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("with an empty query"), "{}", stderr(&o));
    assert!(!out.join("metrics.jsonl").exists());
}
