//! How a fine-tuned retriever reads and scores passages, the same in `finetune`, `eval`, `mine` and
//! `encode`: `data.title_separator` (title and text joined by a space or by the tokenizer's [SEP]),
//! recorded in the model folder (`condenser_retriever.json`) and read back by the other commands.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

const TOPICS: &[(&str, &str)] = &[
    ("volcano", "lava erupts from the volcano crater ash"),
    ("piano", "the piano keys and strings make music notes"),
    ("glacier", "ice of the glacier moves slowly down valleys"),
    ("rocket", "a rocket engine burns fuel to reach orbit"),
    ("bread", "bakers knead dough and bake bread in ovens"),
    ("coral", "coral reefs grow in warm shallow seas"),
];

/// Tevatron lines: one query per topic (twice), its topic's passage positive, two others negative.
fn write_train(dir: &Path) -> PathBuf {
    let path = dir.join("train.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    let passage = |i: usize| {
        let (title, text) = TOPICS[i % TOPICS.len()];
        serde_json::json!({"docid": format!("d{}", i % TOPICS.len()), "title": title, "text": text})
    };
    for q in 0..2 * TOPICS.len() {
        let t = q % TOPICS.len();
        let line = serde_json::json!({
            "query_id": format!("q{q}"),
            "query": format!("tell me about the {}", TOPICS[t].0),
            "positive_passages": [passage(t)],
            "negative_passages": [passage(t + 1), passage(t + 2)],
        });
        writeln!(f, "{line}").unwrap();
    }
    path
}

/// A BEIR corpus (with titles), its queries and qrels.
fn write_beir(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let corpus = dir.join("corpus.jsonl");
    let queries = dir.join("queries.jsonl");
    let qrels = dir.join("qrels.tsv");
    let mut fc = std::fs::File::create(&corpus).unwrap();
    let mut fq = std::fs::File::create(&queries).unwrap();
    let mut fr = std::fs::File::create(&qrels).unwrap();
    writeln!(fr, "query-id\tcorpus-id\tscore").unwrap();
    for (i, (title, text)) in TOPICS.iter().enumerate() {
        writeln!(
            fc,
            "{}",
            serde_json::json!({"_id": format!("d{i}"), "title": title, "text": text})
        )
        .unwrap();
        writeln!(
            fq,
            "{}",
            serde_json::json!({"_id": format!("q{i}"), "text": format!("about the {title}")})
        )
        .unwrap();
        writeln!(fr, "q{i}\td{i}\t1").unwrap();
    }
    (corpus, queries, qrels)
}

fn finetune(init: &Path, train: &Path, out: &Path, sets: &[&str]) {
    let mut a: Vec<String> = [
        "finetune",
        "--train",
        train.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    a.extend([
        "--out".into(),
        out.display().to_string(),
        "--device".into(),
        "cpu".into(),
    ]);
    for s in [
        "data.batch_size=4",
        "data.train_n_passages=2",
        "data.passage_max_len=32",
        "data.query_max_len=16",
        "optim.max_steps=2",
        "run.log_every=1",
    ]
    .iter()
    .chain(sets)
    {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn encode(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> Vec<(String, Vec<f32>)> {
    let mut a = vec![
        "encode",
        input.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    a.extend(extra);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    read_embeddings(out)
}

fn max_diff(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|((ia, va), (ib, vb))| {
            assert_eq!(ia, ib);
            va.iter().zip(vb).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

/// The TREC run `eval` writes (for comparing the scores of two settings).
fn eval_run(
    model: &Path,
    beir: &(PathBuf, PathBuf, PathBuf),
    out: &Path,
    extra: &[&str],
) -> String {
    let mut a = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--corpus",
        beir.0.to_str().unwrap(),
        "--queries",
        beir.1.to_str().unwrap(),
        "--qrels",
        beir.2.to_str().unwrap(),
        "--run",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    a.extend(extra);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(out).unwrap()
}

fn first_loss(run: &Path) -> f64 {
    condenser::train::metrics::read(&run.join("metrics.jsonl")).unwrap()[0].loss
}

#[test]
fn the_title_separator_is_trained_with_recorded_and_used_by_eval_and_encode() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path());
    let beir = write_beir(dir.path());

    // The joined text tokenizes with the separator token between title and text.
    let tok = condenser::tokenizer::load(&init.join("tokenizer.json")).unwrap();
    let special = condenser::tokenizer::special_ids(&tok).unwrap();
    let joiner = condenser::model::retriever::TitleSeparator::Sep
        .joiner(&tok, &special)
        .unwrap();
    assert_eq!(joiner, "[SEP]");
    let ids =
        condenser::tokenizer::encode_for_model(&tok, &special, "volcano[SEP]lava", 16).unwrap();
    let inner = |w: &str| {
        let v = condenser::tokenizer::encode_for_model(&tok, &special, w, 16).unwrap();
        v[1..v.len() - 1].to_vec()
    };
    let mut want = vec![special.cls as i64];
    want.extend(inner("volcano"));
    want.push(special.sep as i64);
    want.extend(inner("lava"));
    want.push(special.sep as i64);
    assert_eq!(ids, want);

    // Fine-tuning reads the passages otherwise (another first loss), and says so in the folder.
    let (space, sep) = (dir.path().join("space"), dir.path().join("sep"));
    finetune(&init, &train, &space, &[]);
    finetune(&init, &train, &sep, &["data.title_separator=sep"]);
    assert!(
        (first_loss(&space) - first_loss(&sep)).abs() > 1e-6,
        "{} vs {}",
        first_loss(&space),
        first_loss(&sep)
    );
    let recorded = |run: &Path| {
        condenser::model::retriever::RetrieverConfig::read(&run.join("final"))
            .unwrap()
            .title_separator
    };
    use condenser::model::retriever::TitleSeparator;
    assert_eq!(recorded(&space), TitleSeparator::Space);
    assert_eq!(recorded(&sep), TitleSeparator::Sep);
    let model = sep.join("final");

    // encode joins a record's title as the model was trained: the BEIR corpus encodes as the same
    // texts joined by hand ("title[SEP]text", no title field), and otherwise with --title-separator space.
    let joined = dir.path().join("joined.tsv");
    let mut f = std::fs::File::create(&joined).unwrap();
    for (i, (title, text)) in TOPICS.iter().enumerate() {
        writeln!(f, "d{i}\t{title}[SEP]{text}").unwrap();
    }
    drop(f);
    let by_model = encode(&model, &beir.0, &dir.path().join("a.parquet"), &[]);
    let by_hand = encode(&model, &joined, &dir.path().join("b.parquet"), &[]);
    assert!(max_diff(&by_model, &by_hand) < 1e-6);
    let spaced = encode(
        &model,
        &beir.0,
        &dir.path().join("c.parquet"),
        &["--title-separator", "space"],
    );
    assert!(max_diff(&by_model, &spaced) > 1e-4);

    // eval (and mine, the same search) reads the model's separator: its run equals the one with
    // --title-separator sep, and differs from the one with space.
    let default = eval_run(&model, &beir, &dir.path().join("run-default"), &[]);
    let explicit = eval_run(
        &model,
        &beir,
        &dir.path().join("run-sep"),
        &["--title-separator", "sep"],
    );
    let with_space = eval_run(
        &model,
        &beir,
        &dir.path().join("run-space"),
        &["--title-separator", "space"],
    );
    assert_eq!(default, explicit);
    assert_ne!(default, with_space);
}

/// `mine --absolute-margin 0`: no written negative scores above its query's positive (scores from
/// `eval`'s run file of the same model), and some candidates were dropped for it.
#[test]
fn mine_with_a_margin_keeps_only_candidates_below_the_positive() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let beir = write_beir(dir.path());
    let run = eval_run(&model, &beir, &dir.path().join("run"), &[]);
    let score = |q: &str, d: &str| -> f64 {
        run.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[0] == q && f[2] == d)
            .map(|f| f[4].parse().unwrap())
            .unwrap()
    };
    let mine = |out: &Path, extra: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec![
            "mine",
            "--model",
            model.to_str().unwrap(),
            "--corpus",
            beir.0.to_str().unwrap(),
            "--queries",
            beir.1.to_str().unwrap(),
            "--qrels",
            beir.2.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--negatives",
            "10",
            "--device",
            "cpu",
        ];
        a.extend(extra);
        run_cmd(&a);
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let negatives = |lines: &[serde_json::Value]| -> Vec<(String, String)> {
        lines
            .iter()
            .flat_map(|l| {
                let q = l["query_id"].as_str().unwrap().to_string();
                l["negative_passages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |n| (q.clone(), n["docid"].as_str().unwrap().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let all = negatives(&mine(&dir.path().join("all.jsonl"), &[]));
    let kept = negatives(&mine(
        &dir.path().join("margin.jsonl"),
        &["--absolute-margin", "0"],
    ));
    assert_eq!(
        all.len(),
        TOPICS.len() * (TOPICS.len() - 1),
        "every other passage without a margin"
    );
    assert!(kept.len() < all.len(), "{kept:?}");
    for (q, d) in &kept {
        let positive = format!("d{}", &q[1..]);
        assert!(
            score(q, d) <= score(q, &positive) + 1e-5,
            "{q}: {d} scores {} above the positive's {}",
            score(q, d),
            score(q, &positive)
        );
    }
    // Every candidate at or below the positive is kept (the margin drops nothing else).
    let below = all
        .iter()
        .filter(|(q, d)| score(q, d) <= score(q, &format!("d{}", &q[1..])) - 1e-5)
        .count();
    assert!(
        kept.len() >= below,
        "{} kept, {below} below their positive",
        kept.len()
    );
}

fn run_cmd(args: &[&str]) -> std::process::Output {
    let o = run(args);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// `finetune --eval-corpus ... --eval-every 1`: every step's dev figures in metrics.jsonl, and
/// `OUT/best` holds the model of the step the metric picks (the first to reach the highest nDCG@10),
/// the same weights as that step's checkpoint.
#[test]
fn evaluation_while_training_keeps_the_best_checkpoint_the_metric_picks() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    let train = write_train(dir.path());
    let beir = write_beir(dir.path());
    let out = dir.path().join("run");
    let mut a: Vec<String> = [
        "finetune",
        train.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    for (k, v) in [
        ("--out", out.to_str().unwrap()),
        ("--device", "cpu"),
        ("--eval-corpus", beir.0.to_str().unwrap()),
        ("--eval-queries", beir.1.to_str().unwrap()),
        ("--eval-qrels", beir.2.to_str().unwrap()),
        ("--eval-every", "1"),
        ("--best-metric", "ndcg@10"),
    ] {
        a.extend([k.to_string(), v.to_string()]);
    }
    for s in [
        "data.batch_size=4",
        "data.train_n_passages=2",
        "data.passage_max_len=32",
        "data.query_max_len=16",
        "optim.max_steps=4",
        "optim.warmup_ratio=0",
        "optim.lr=3e-4",
        "run.log_every=2",
        "run.save_every=1",
        "run.keep_checkpoints=10",
    ] {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let recs = condenser::train::metrics::read(&out.join("metrics.jsonl")).unwrap();
    let evals: Vec<(u64, f64)> = recs
        .iter()
        .map(|r| (r.step, r.eval_ndcg_at_10.expect("every step evaluated")))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(recs
        .iter()
        .all(|r| r.eval_mrr_at_10.is_some() && r.eval_recall_at_100.is_some()));
    let (mut best_step, mut best) = (0, f64::NEG_INFINITY);
    for &(s, v) in &evals {
        if v > best {
            (best_step, best) = (s, v);
        }
    }
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("best/eval.json")).unwrap()).unwrap();
    assert_eq!(note["step"], best_step, "{note} vs {evals:?}");
    assert_eq!(note["metric"], "ndcg@10");
    assert!((note["value"].as_f64().unwrap() - best).abs() < 1e-12);
    let same_as = if best_step == 4 {
        out.join("final")
    } else {
        out.join(format!("checkpoint-{best_step}"))
    };
    assert_eq!(
        std::fs::read(out.join("best/model.safetensors")).unwrap(),
        std::fs::read(same_as.join("model.safetensors")).unwrap(),
        "best/ holds step {best_step}'s weights"
    );
    assert!(out.join("best/condenser_retriever.json").is_file());
    let card = std::fs::read_to_string(out.join("final/README.md")).unwrap();
    assert!(
        card.contains(&format!(
            "the best nDCG@10 was {best:.4}, at step {best_step}"
        )),
        "{card}"
    );
    eprintln!("dev nDCG@10 per step: {evals:?}; best step {best_step}");
    // `condenser curves` draws the dev metrics in a panel of their own: a taller picture (PNG's IHDR
    // holds width and height at bytes 16..24).
    let png = dir.path().join("curves.png");
    let o = run(&[
        "curves",
        out.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!(height, 900 + 350, "the picture has no evaluation panel");
}
