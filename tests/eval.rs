//! `condenser eval` and `condenser eval-spans` end to end: the blocked top-k search equals brute force
//! over `condenser encode` vectors, the metrics equal a count made from the written TREC run, and both
//! qrels layouts read.

mod common;

use std::collections::HashMap;
use std::path::Path;

use arrow::array::AsArray;
use arrow::datatypes::Float32Type;
use common::*;

const DOCS: &[(&str, &str, &str)] = &[
    (
        "d1",
        "Paris",
        "Paris is the capital and largest city of France.",
    ),
    (
        "d2",
        "Berlin",
        "Berlin is the capital of Germany and its largest city.",
    ),
    (
        "d3",
        "Photosynthesis",
        "Plants turn light, water and carbon dioxide into sugar and oxygen.",
    ),
    (
        "d4",
        "Mitochondria",
        "The mitochondrion is the powerhouse of the cell, making ATP.",
    ),
    (
        "d5",
        "Jazz",
        "Jazz is a music genre that originated in New Orleans.",
    ),
    (
        "d6",
        "Volcano",
        "A volcano is a rupture in the crust of a planet where lava escapes.",
    ),
    ("d7", "Rome", "Rome is the capital city of Italy."),
];

fn beir(dir: &Path) {
    let corpus: String = DOCS
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let queries = [
        ("q1", "What is the capital of France?"),
        ("q2", "how do plants make sugar"),
        ("q3", "who invented the telephone"),
    ];
    let q: String = queries
        .iter()
        .map(|(id, t)| serde_json::json!({"_id": id, "text": t}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("queries.jsonl"), q).unwrap();
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    // q3 has only a non-relevant judgement; q1 names a document the corpus lacks.
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td7\t1\nq1\tghost\t1\nq2\td3\t1\nq3\td5\t0\n",
    )
    .unwrap();
}

fn embeddings(path: &Path) -> HashMap<String, Vec<f32>> {
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut out = HashMap::new();
    for b in r {
        let b = b.unwrap();
        let ids = b.column(0).as_string::<i32>().clone();
        let emb = b.column(1).as_fixed_size_list().clone();
        for i in 0..b.num_rows() {
            out.insert(
                ids.value(i).to_string(),
                emb.value(i).as_primitive::<Float32Type>().values().to_vec(),
            );
        }
    }
    out
}

#[test]
fn blocked_search_equals_brute_force_and_metrics_equal_the_run_file() {
    let dir = tempfile::tempdir().unwrap();
    beir(dir.path());
    let model = data("minilm");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let run_file = p("run.trec");
    let o = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        &p("corpus.jsonl"),
        "--queries",
        &p("queries.jsonl"),
        "--qrels",
        &p("qrels/test.tsv"),
        "--run",
        &run_file,
        "--json",
        "--block",
        "2",
        "--batch-size",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["queries"], 2);
    assert_eq!(m["queries_without_relevant"], 1);
    assert_eq!(m["relevant_not_in_corpus"], 1);

    // Brute force over `condenser encode` vectors (title + text, as eval reads BEIR passages).
    let corpus_txt: String = DOCS
        .iter()
        .map(|(id, t, x)| format!("{id}\t{t} {x}\n"))
        .collect();
    std::fs::write(p("corpus.tsv"), corpus_txt).unwrap();
    std::fs::write(
        p("queries.tsv"),
        "q1\tWhat is the capital of France?\nq2\thow do plants make sugar\n",
    )
    .unwrap();
    for (input, out) in [("corpus.tsv", "c.parquet"), ("queries.tsv", "q.parquet")] {
        let o = run(&[
            "encode",
            "--model",
            model.to_str().unwrap(),
            "--input",
            &p(input),
            "--out",
            &p(out),
            "--max-len",
            if input == "queries.tsv" { "64" } else { "128" },
            "--device",
            "cpu",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (c, q) = (
        embeddings(&dir.path().join("c.parquet")),
        embeddings(&dir.path().join("q.parquet")),
    );
    let text = std::fs::read_to_string(&run_file).unwrap();
    for qid in ["q1", "q2"] {
        let mut brute: Vec<(String, f32)> = c
            .iter()
            .map(|(d, v)| (d.clone(), v.iter().zip(&q[qid]).map(|(a, b)| a * b).sum()))
            .collect();
        brute.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        let ours: Vec<(String, f32)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{qid} ")))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[2].to_string(), f[4].parse().unwrap())
            })
            .collect();
        assert_eq!(ours.len(), DOCS.len(), "every document ranked");
        for ((a, sa), (b, sb)) in ours.iter().zip(&brute) {
            assert_eq!(a, b, "{qid}: ranking differs from brute force");
            assert!((sa - sb).abs() < 1e-3, "{qid} {a}: score {sa} vs {sb}");
        }
    }
    // Metrics recounted from the run file by hand: q1 (d1 rel 2, d7 rel 1, ghost rel 1), q2 (d3 rel 1).
    let ranks = |qid: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{qid} ")))
            .map(|l| l.split(' ').nth(2).unwrap().to_string())
            .collect()
    };
    let (r1, r2) = (ranks("q1"), ranks("q2"));
    let rr = |r: &[String], rel: &[&str]| {
        1.0 / (1 + r.iter().position(|d| rel.contains(&d.as_str())).unwrap()) as f64
    };
    let mrr = (rr(&r1, &["d1", "d7"]) + rr(&r2, &["d3"])) / 2.0;
    assert!((m["mrr_at_10"].as_f64().unwrap() - mrr).abs() < 1e-9);
    // 7 documents: recall at 7 is the cap; q1 can find 2 of its 3 relevant documents.
    assert!(
        (m["recall"]["7"].as_f64().unwrap() - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-9,
        "{m}"
    );

    // The same judgements in the TREC layout give the same numbers.
    std::fs::write(
        p("qrels.txt"),
        "q1 0 d1 2\nq1 0 d7 1\nq1 0 ghost 1\nq2 0 d3 1\nq3 0 d5 0\n",
    )
    .unwrap();
    let o = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        &p("corpus.jsonl"),
        "--queries",
        &p("queries.jsonl"),
        "--qrels",
        &p("qrels.txt"),
        "--json",
        "--device",
        "cpu",
    ]);
    let m2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m, m2);
}

#[test]
fn span_pairs_on_held_out_documents() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_jsonl(dir.path(), "c.jsonl", 400, 5);
    let shards = dir.path().join("shards");
    assert!(run(&[
        "prepare",
        "--out",
        shards.to_str().unwrap(),
        "--max-len",
        "32",
        input.to_str().unwrap()
    ])
    .status
    .success());
    let o = run(&[
        "eval-spans",
        "--model",
        data("minilm").to_str().unwrap(),
        "--data",
        shards.to_str().unwrap(),
        "--holdout-fraction",
        "0.2",
        "--max-len",
        "32",
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let docs = m["documents"].as_u64().unwrap();
    assert!(docs > 20, "{m}");
    assert_eq!(m["spans"].as_u64().unwrap(), 2 * docs);
    let (mrr, r1) = (
        m["mrr"].as_f64().unwrap(),
        m["recall_at_1"].as_f64().unwrap(),
    );
    assert!(r1 <= mrr && mrr <= 1.0 && mrr > 1.0 / docs as f64, "{m}");
}

/// `eval` over the tiny model with `corpus`, `queries` and `qrels` written as given (BEIR layout).
fn eval_tiny(
    corpus: &str,
    queries: &str,
    qrels: &str,
) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let p = |n: &str| dir.path().join(n).display().to_string();
    std::fs::write(p("corpus.jsonl"), corpus).unwrap();
    std::fs::write(p("queries.jsonl"), queries).unwrap();
    std::fs::write(p("qrels.tsv"), qrels).unwrap();
    let o = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        &p("corpus.jsonl"),
        "--queries",
        &p("queries.jsonl"),
        "--qrels",
        &p("qrels.tsv"),
        "--run",
        &p("run.trec"),
        "--json",
        "--device",
        "cpu",
    ]);
    (o, dir)
}

const THREE_DOCS: &str = concat!(
    r#"{"_id": "d1", "text": "Paris is the capital of France."}"#,
    "\n",
    r#"{"_id": "d2", "text": "Plants make sugar from light."}"#,
    "\n",
    r#"{"_id": "d3", "text": "Jazz began in New Orleans."}"#,
    "\n"
);
const TWO_QUERIES: &str = concat!(
    r#"{"_id": "q1", "text": "capital of France"}"#,
    "\n",
    r#"{"_id": "q2", "text": "how plants make sugar"}"#,
    "\n"
);

/// A duplicate corpus id would be retrieved and counted twice (R@k above 1): refused, both records named,
/// no run file written.
#[test]
fn eval_refuses_duplicate_corpus_ids() {
    let corpus = format!(
        "{THREE_DOCS}{}\n",
        r#"{"_id": "d1", "text": "Paris again."}"#
    );
    let (o, dir) = eval_tiny(&corpus, TWO_QUERIES, "q1\t0\td1\t1\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("\"d1\"") && e.contains("records 1 and 4"), "{e}");
    assert!(!dir.path().join("run.trec").exists());
}

/// Empty qrels are an error, not a run with every metric 0.
#[test]
fn eval_refuses_empty_qrels() {
    let (o, _dir) = eval_tiny(THREE_DOCS, TWO_QUERIES, "query-id\tcorpus-id\tscore\n");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no relevance judgements"),
        "{}",
        stderr(&o)
    );
}

/// A judged query missing from the queries file is counted and left out of the means, not scored 0.
#[test]
fn eval_counts_judged_queries_missing_from_the_queries_file() {
    let (o, _dir) = eval_tiny(THREE_DOCS, TWO_QUERIES, "q1\t0\td1\t1\nq9\t0\td2\t1\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["queries"], 1);
    assert_eq!(m["judged_queries_not_in_queries"], 1);
    // Three documents: every relevant one is within the top 3.
    assert_eq!(m["recall"]["3"], 1.0);
    assert!(stderr(&o).contains("not in"), "{}", stderr(&o));
}
