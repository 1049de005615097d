//! A saved model folder as other tools see it: file modes, transformers' tokenizer files, and
//! sentence-transformers encoding exactly what `condenser encode` writes (CLS pooling, not mean).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every file of the folder has the mode config.json got (0666 less the umask): the weights are not
/// private to their writer.
#[test]
fn saved_files_share_one_mode() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(dir.path());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let want = mode(&model.join("config.json"));
    assert_eq!(
        want & 0o044,
        0o044,
        "config.json {want:o} is not group/other readable under this umask"
    );
    for name in [
        "model.safetensors",
        "condenser_head.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert_eq!(mode(&model.join(name)), want, "{name}");
    }
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("transformers_version").is_none() && cfg.get("_name_or_path").is_none());
}

/// transformers truncates to the model's positions, and sentence-transformers returns the [CLS] vectors
/// `condenser encode` writes, within 1e-4.
#[test]
fn transformers_and_sentence_transformers_load_it_as_trained() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(dir.path());
    let texts = dir.path().join("texts.txt");
    std::fs::write(
        &texts,
        "Paris is the capital of France.\nPlants turn light into sugar.\nJazz began in New Orleans, a city of music.\n",
    )
    .unwrap();
    let out = dir.path().join("e.parquet");
    let o = common::run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        "--input",
        texts.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let ours: Vec<Vec<f32>> = common::read_embeddings(&out)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let script = r#"
import json, sys
from transformers import AutoTokenizer
from sentence_transformers import SentenceTransformer
folder, texts = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(folder)
n = len(tok("word " * 2000, truncation=True)["input_ids"])
st = SentenceTransformer(folder, device="cpu")
modes = [type(m).__name__ + ":" + str(getattr(m, "pooling_mode", "")) for m in st]
lines = [l for l in open(texts).read().splitlines() if l]
emb = st.encode(lines, convert_to_numpy=True, normalize_embeddings=False).tolist()
print(json.dumps({"truncated_len": n, "modules": modes, "emb": emb}))
"#;
    let r = common::python_json(script, &[model.as_os_str(), texts.as_os_str()]);
    // The tiny model has 130 positions.
    assert_eq!(r["truncated_len"], 130, "{r}");
    let st: Vec<Vec<f32>> = serde_json::from_value(r["emb"].clone()).unwrap();
    assert_eq!(st.len(), ours.len());
    for (row, (a, b)) in st.iter().zip(&ours).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            d < 1e-4,
            "row {row}: sentence-transformers differs from encode by {d:e} ({r})"
        );
    }
}

/// `condenser encode`'s vectors of `texts` (one a line) with `model`.
fn encode_lines(model: &Path, texts: &Path, out: &Path) -> Vec<Vec<f32>> {
    let o = common::run(&[
        "encode",
        texts.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::read_embeddings(out)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

/// A retriever fine-tuned with `loss.similarity = "cos"`: its folder declares a Normalize module and
/// cosine similarity, `SentenceTransformer(folder)` returns the unit vectors `condenser encode` writes
/// for it (within 1e-5), and `eval` scores with cosines.
#[test]
fn a_cosine_retriever_loads_in_sentence_transformers_as_encode_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let init = common::tiny_model(dir.path());
    let train = common::write_tevatron(dir.path(), 8, 3, 4);
    let run = dir.path().join("cos");
    let o = common::run(&[
        "finetune",
        train.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--device",
        "cpu",
        "--set",
        "loss.similarity=cos",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.train_n_passages=2",
        "--set",
        "data.passage_max_len=32",
        "--set",
        "optim.max_steps=2",
        "--set",
        "optim.lr=1e-3",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let model = run.join("final");
    let texts = dir.path().join("texts.txt");
    std::fs::write(
        &texts,
        "Paris is the capital of France.\nPlants turn light into sugar.\nJazz began in New Orleans.\n",
    )
    .unwrap();
    let ours = encode_lines(&model, &texts, &dir.path().join("e.parquet"));
    for v in &ours {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "encode writes unit vectors: {norm}"
        );
    }
    let script = r#"
import json, sys
from sentence_transformers import SentenceTransformer
folder, texts = sys.argv[1], sys.argv[2]
st = SentenceTransformer(folder, device="cpu")
lines = [l for l in open(texts).read().splitlines() if l]
emb = st.encode(lines, convert_to_numpy=True, normalize_embeddings=False).tolist()
print(json.dumps({"modules": [type(m).__name__ for m in st], "similarity": st.similarity_fn_name, "emb": emb}))
"#;
    let r = common::python_json(script, &[model.as_os_str(), texts.as_os_str()]);
    assert_eq!(
        r["modules"],
        serde_json::json!(["Transformer", "Pooling", "Normalize"]),
        "{r}"
    );
    assert_eq!(r["similarity"], "cosine", "{r}");
    let st: Vec<Vec<f32>> = serde_json::from_value(r["emb"].clone()).unwrap();
    assert_eq!(st.len(), ours.len());
    for (row, (a, b)) in st.iter().zip(&ours).enumerate() {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            d < 1e-5,
            "row {row}: sentence-transformers differs from encode by {d:e}"
        );
    }

    // eval reads the similarity from the folder: every score of its run is a cosine.
    let corpus = dir.path().join("corpus.tsv");
    let queries = dir.path().join("queries.tsv");
    let qrels = dir.path().join("qrels.txt");
    std::fs::write(
        &corpus,
        "d1\tParis is the capital of France.\nd2\tPlants turn light into sugar.\n",
    )
    .unwrap();
    std::fs::write(&queries, "q1\tcapital of France\n").unwrap();
    std::fs::write(&qrels, "q1 0 d1 1\n").unwrap();
    let run_file = dir.path().join("run.trec");
    let o = common::run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--queries",
        queries.to_str().unwrap(),
        "--qrels",
        qrels.to_str().unwrap(),
        "--run",
        run_file.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let scores: Vec<f64> = std::fs::read_to_string(&run_file)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    assert_eq!(scores.len(), 2);
    assert!(scores.iter().all(|s| s.abs() <= 1.0 + 1e-6), "{scores:?}");
    // The same model read as dot product scores otherwise (the tiny model's [CLS] is far from unit).
    std::fs::remove_file(model.join("condenser_retriever.json")).unwrap();
    let raw = encode_lines(&model, &texts, &dir.path().join("raw.parquet"));
    let norm = raw[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "{norm}");
}
