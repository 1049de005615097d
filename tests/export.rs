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
    let py = std::process::Command::new(common::venv_python())
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .args([
            "-c",
            script,
            model.to_str().unwrap(),
            texts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
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
