//! Helpers shared by the integration tests: the binary, and small synthetic corpora.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::AsArray;
use arrow::datatypes::Float32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn condenser() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_condenser"));
    c.env_remove("RUST_LOG");
    c
}

pub fn run(args: &[&str]) -> Output {
    condenser()
        .args(args)
        .output()
        .expect("the condenser binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn data(rel: &str) -> PathBuf {
    let p = condenser::paths::data_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make setup` first",
        p.display()
    );
    p
}

const WORDS: &[&str] = &[
    "the",
    "river",
    "city",
    "ancient",
    "museum",
    "runs",
    "through",
    "northern",
    "valley",
    "was",
    "built",
    "in",
    "century",
    "by",
    "merchants",
    "who",
    "traded",
    "salt",
    "and",
    "silver",
    "across",
    "mountains",
    "today",
    "visitors",
    "walk",
    "along",
    "stone",
    "bridges",
    "while",
    "scholars",
    "study",
    "old",
    "maps",
    "of",
    "region",
    "its",
    "population",
    "grew",
    "quickly",
    "after",
    "railway",
    "arrived",
    "many",
    "families",
    "moved",
    "there",
    "from",
    "coastal",
    "towns",
    "seeking",
    "work",
    "factories",
];

/// A small deterministic pseudo-random generator (tests must not depend on `rand` streams).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A collated batch of `rows` rows padded to `len`, row r holding `lens[r % lens.len()]` random ids of
/// the tiny vocabulary; with `mlm`, about 30% of the positions after [CLS] masked ([MASK] = 4) and
/// labelled.
#[allow(dead_code)] // not every test binary builds batches
pub fn masked_batch(
    rows: usize,
    len: usize,
    lens: &[usize],
    mlm: bool,
    seed: u64,
) -> condenser::train::collate::Batch {
    let mut rng = Lcg(seed);
    let mut b = condenser::train::collate::Batch {
        rows,
        len,
        input_ids: vec![0; rows * len],
        attention_mask: vec![0; rows * len],
        labels: vec![-100; rows * len],
        real_tokens: 0,
    };
    for r in 0..rows {
        let n = lens[r % lens.len()];
        for t in 0..n {
            let at = r * len + t;
            b.input_ids[at] = 5 + rng.below(94) as i64;
            b.attention_mask[at] = 1;
            if mlm && t > 0 && rng.below(10) < 3 {
                b.labels[at] = b.input_ids[at];
                b.input_ids[at] = 4;
            }
        }
        b.real_tokens += n;
    }
    b
}

/// One document of `sentences` English-like sentences.
pub fn document(rng: &mut Lcg, sentences: usize) -> String {
    let mut out = String::new();
    for s in 0..sentences {
        if s > 0 {
            out.push(' ');
        }
        let n = 4 + rng.below(18) as usize;
        for w in 0..n {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize];
            if w == 0 {
                let mut c = word.chars();
                out.extend(c.next().unwrap().to_uppercase());
                out.push_str(c.as_str());
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push('.');
    }
    out
}

/// `docs` generated documents (seed `seed`) prepared into DIR/shards: spans of at most 64 tokens in
/// shards of about 30 KB (several shards and row groups from a few hundred documents).
pub fn small_shards(dir: &Path, docs: usize, seed: u64) -> PathBuf {
    let input = write_jsonl(dir, "corpus.jsonl", docs, seed);
    let out = dir.join("shards");
    prepare_small(&input, &out);
    out
}

/// `small_shards`' prepare run of `input` into `out` (asserted to succeed).
pub fn prepare_small(input: &Path, out: &Path) {
    let o = run(&[
        "prepare",
        "--out",
        out.to_str().unwrap(),
        "--shard-size",
        "30KB",
        "--max-len",
        "64",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Writes Tevatron training lines: `queries` queries of a few words, each with a positive and `negs`
/// negatives of one or two sentences; returns the path.
pub fn write_tevatron(dir: &Path, queries: usize, negs: usize, seed: u64) -> PathBuf {
    let mut rng = Lcg(seed);
    let path = dir.join("train.jsonl");
    let mut s = String::new();
    for q in 0..queries {
        let passage = |rng: &mut Lcg, k: usize| serde_json::json!({"docid": format!("d{q}-{k}"), "title": "", "text": document(rng, 1 + k % 2)});
        let line = serde_json::json!({
            "query_id": format!("q{q}"),
            "query": document(&mut rng, 1),
            "positive_passages": [passage(&mut rng, 0)],
            "negative_passages": (1..=negs).map(|k| passage(&mut rng, k)).collect::<Vec<_>>(),
        });
        s.push_str(&line.to_string());
        s.push('\n');
    }
    std::fs::write(&path, s).unwrap();
    path
}

/// Writes `docs` documents as JSON Lines (`{"id","title","text"}`) and returns the path.
pub fn write_jsonl(dir: &Path, name: &str, docs: usize, seed: u64) -> PathBuf {
    let mut rng = Lcg(seed);
    let mut s = String::new();
    for i in 0..docs {
        let n = 1 + rng.below(30) as usize;
        let text = document(&mut rng, n);
        s.push_str(&serde_json::json!({"id": format!("{name}-{i}"), "title": format!("T{i}"), "text": text}).to_string());
        s.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

/// Writes an MS MARCO style `pid<TAB>text` file, gzip-compressed when `name` ends in `.gz`.
pub fn write_tsv(dir: &Path, name: &str, docs: usize, seed: u64) -> PathBuf {
    let mut rng = Lcg(seed);
    let mut s = String::new();
    for i in 0..docs {
        let n = 1 + rng.below(8) as usize;
        s.push_str(&format!("{}\t{}\n", 1000 + i, document(&mut rng, n)));
    }
    let p = dir.join(name);
    if name.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, s.as_bytes()).unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(&p, s).unwrap();
    }
    p
}

/// Every file of a prepare output folder with its bytes; `_manifest.json` without its timestamp.
pub fn output_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let mut bytes = std::fs::read(&p).unwrap();
            if name == "_manifest.json" {
                let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                v["written_at"] = serde_json::Value::Null;
                bytes = serde_json::to_vec_pretty(&v).unwrap();
            }
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap()
}

/// A tiny random BERT with the bert-base-uncased vocabulary (so real shards fit it), saved as a
/// checkpoint with a Condenser head (skip_from 1, one head layer): fast enough to train in tests.
pub fn tiny_model(dir: &Path) -> PathBuf {
    use condenser::model::{hf, BertConfig, Condenser, HeadConfig};
    let cfg: BertConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 48, "max_position_embeddings": 130, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1
    }))
    .unwrap();
    tch::manual_seed(7);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = Condenser::new(
        &vs.root(),
        cfg,
        HeadConfig {
            skip_from: 1,
            n_head_layers: 1,
            late_mlm: true,
        },
    )
    .unwrap();
    let out = dir.join("tiny-init");
    hf::save(&out, &vs, &model, &data("minilm/tokenizer.json"), &[]).unwrap();
    out
}

/// `--set` arguments for training the tiny model.
pub const TINY: &[&str] = &[
    "--set",
    "model.skip_from=1",
    "--set",
    "model.n_head_layers=1",
    "--device",
    "cpu",
];

/// The project venv's python (transformers, pyarrow), which set-up installs.
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "the project venv is missing: run `make setup`"
    );
    python
}

/// A file of tests/fixtures, as a path string.
pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// Runs a Python check with the set-up venv's python, offline (no hub access), and returns what it
/// printed as JSON: `script` is inline code (`python -c`), or the path of a `.py` file of the tests.
/// Fails the test with Python's stderr when it does not exit 0.
pub fn python_json(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let mut cmd = Command::new(venv_python());
    if script.ends_with(".py") && Path::new(script).is_file() {
        cmd.arg(script);
    } else {
        cmd.args(["-c", script]);
    }
    let o = cmd
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// (id, vector) rows of an embeddings Parquet file written by `condenser encode`, in file order.
pub fn read_embeddings(path: &Path) -> Vec<(String, Vec<f32>)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column(0).as_string::<i32>().clone();
        let emb = batch.column(1).as_fixed_size_list().clone();
        for i in 0..batch.num_rows() {
            let v = emb.value(i);
            out.push((
                ids.value(i).to_string(),
                v.as_primitive::<Float32Type>().values().to_vec(),
            ));
        }
    }
    out
}

/// `condenser train DATA --init INIT --out OUT`, a `--set` for each of `sets`, on the tiny CPU model
/// (`TINY`); must succeed.
#[allow(dead_code)] // not every test binary trains
pub fn train_tiny(data: &Path, init: &Path, out: &Path, sets: &[&str]) -> Output {
    let (data, init, out) = (
        data.display().to_string(),
        init.display().to_string(),
        out.display().to_string(),
    );
    let mut a = vec!["train", &data, "--init", &init, "--out", &out];
    for s in sets {
        a.extend(["--set", s]);
    }
    a.extend(TINY);
    let o = run(&a);
    assert!(o.status.success(), "train {sets:?}: {}", stderr(&o));
    o
}
