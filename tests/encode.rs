//! `condenser encode` with the pinned MiniLM weights equals transformers' BertModel CLS (golden values
//! made by tests/fixtures/minilm/make_golden.py), and the output is a readable Parquet file.

mod common;

use std::path::Path;

use common::read_embeddings;

#[test]
fn minilm_cls_equals_transformers_within_1e_4() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm");
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("golden.json")).unwrap()).unwrap();
    let expected: Vec<Vec<f32>> = serde_json::from_value(golden["cls"].clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.parquet");
    let input = fixtures.join("sentences.txt");
    // A small batch size so several batches (of different lengths) are exercised.
    let o = common::run(&[
        "encode",
        "--model",
        common::data("minilm").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    // MiniLM has no Condenser head; encode does not use one, so it says nothing about it.
    assert!(
        !common::stderr(&o).contains("Condenser head"),
        "{}",
        common::stderr(&o)
    );
    let got = read_embeddings(&out);
    assert_eq!(got.len(), expected.len());
    for (row, ((id, v), want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            id,
            &format!("{}:{}", input.display(), row + 1),
            "input order is kept"
        );
        assert_eq!(v.len(), 384);
        let d = v
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-4, "sentence {row}: max abs diff {d:e}");
    }
}

#[test]
fn encode_bad_model_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let o = common::run(&[
        "encode",
        "--model",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.path().join("o.parquet").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o).contains("tokenizer.json"),
        "{}",
        common::stderr(&o)
    );
    assert!(!dir.path().join("o.parquet").exists());
}

/// `--out` naming a folder fails before any model is loaded, and leaves no temporary file behind (in the
/// working folder or beside the target).
#[test]
fn encode_out_folder_fails_first_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = dir.path().join("embeddings");
    std::fs::create_dir(&out).unwrap();
    let o = common::condenser()
        .current_dir(dir.path())
        .args([
            "encode",
            "--model",
            "no-such-model",
            "--input",
            input.to_str().unwrap(),
            "--out",
            "embeddings",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = common::stderr(&o);
    assert!(e.contains("is a folder"), "{e}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["embeddings", "t.txt"]);
}

/// A hub name or URL where a model folder is expected (`--model`, `--init`) says it is not a local
/// folder and how to fetch one, instead of "config.json: cannot read".
#[test]
fn hub_names_for_models_get_a_download_hint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let (input, out) = (input.to_str().unwrap(), dir.path().join("o.parquet"));
    let encode = |model: &'static str| {
        vec![
            "encode",
            "--model",
            model,
            "--input",
            input,
            "--out",
            out.to_str().unwrap(),
        ]
    };
    let eval = |model: &'static str| {
        vec![
            "eval",
            "--model",
            model,
            "--corpus",
            input,
            "--queries",
            input,
            "--qrels",
            input,
        ]
    };
    for (args, want) in [
        (
            encode("bert-base-uncased"),
            "hf download bert-base-uncased --local-dir models/bert-base-uncased",
        ),
        (
            eval("sentence-transformers/all-MiniLM-L6-v2"),
            "hf download sentence-transformers/all-MiniLM-L6-v2",
        ),
        (encode("https://example.org/bert"), "downloads nothing"),
        (
            vec![
                "train",
                "--data",
                input,
                "--init",
                "bert-base-uncased",
                "--out",
                input,
            ],
            "hf download bert-base-uncased",
        ),
    ] {
        let o = common::run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", common::stderr(&o));
        let e = common::stderr(&o);
        assert!(
            e.contains("not a local folder") && e.contains(want),
            "{args:?}: {e}"
        );
    }
    assert!(!out.exists());
}

/// `--out` decides the format by its extension: `.parquet`, `.npy` (with `.ids.txt` beside it; numpy
/// reads the same vectors), `-` (Parquet on stdout); anything else is refused before any work. The TSV
/// column options of `prepare` apply.
#[test]
fn out_extension_decides_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_model(dir.path());
    let input = dir.path().join("t.tsv");
    // Text in column 0, no id column: ids are file:line.
    std::fs::write(
        &input,
        "Paris is in France.\tx\nJazz began in New Orleans.\ty\n",
    )
    .unwrap();
    let encode = |out: &str| {
        common::run(&[
            "encode",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--format",
            "tsv",
            "--text-column",
            "0",
            "--id-column",
            "none",
            "--out",
            out,
            "--device",
            "cpu",
        ])
    };
    let parquet = dir.path().join("e.parquet");
    let o = encode(parquet.to_str().unwrap());
    assert!(o.status.success(), "{}", common::stderr(&o));
    let want = read_embeddings(&parquet);
    assert_eq!(want.len(), 2);
    assert_eq!(want[1].0, format!("{}:2", input.display()));

    let npy = dir.path().join("e.npy");
    let o = encode(npy.to_str().unwrap());
    assert!(o.status.success(), "{}", common::stderr(&o));
    let ids = std::fs::read_to_string(dir.path().join("e.ids.txt")).unwrap();
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        want.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>()
    );
    let r = common::python_json(
        "import json, sys, numpy; a = numpy.load(sys.argv[1]); print(json.dumps({'dtype': str(a.dtype), 'rows': a.tolist()}))",
        &[npy.as_os_str()],
    );
    assert_eq!(r["dtype"], "float32");
    let rows: Vec<Vec<f32>> = serde_json::from_value(r["rows"].clone()).unwrap();
    assert_eq!(
        rows,
        want.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()
    );

    // `-`: the same Parquet, on stdout.
    let o = encode("-");
    assert!(o.status.success(), "{}", common::stderr(&o));
    let piped = dir.path().join("piped.parquet");
    std::fs::write(&piped, &o.stdout).unwrap();
    assert_eq!(read_embeddings(&piped), want);
    assert!(!dir.path().join("-").exists());

    let o = encode(dir.path().join("e.txt").to_str().unwrap());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o).contains("name a .parquet or a .npy file"),
        "{}",
        common::stderr(&o)
    );
}

/// A full disk on stdout is named once (Parquet's error displays its I/O source, which used to be
/// printed again after it), and the ids file beside a `.npy` that is a folder is named as such.
#[test]
fn a_full_stdout_and_an_ids_folder_are_reported_once_and_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("t.txt");
    std::fs::write(&texts, "lava erupts\nbees make honey\n").unwrap();
    let model = common::data("minilm");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = common::condenser()
        .args([
            "encode",
            "--model",
            model.to_str().unwrap(),
            texts.to_str().unwrap(),
        ])
        .args(["-o", "-", "--device", "cpu"])
        .stdout(full)
        .output()
        .unwrap();
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    let npy = dir.path().join("blk.npy");
    std::fs::create_dir_all(dir.path().join("blk.ids.txt")).unwrap();
    let o = common::run(&[
        "encode",
        "--model",
        model.to_str().unwrap(),
        texts.to_str().unwrap(),
        "-o",
        npy.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let err = common::stderr(&o);
    assert!(
        err.contains("the ids are written beside it as") && err.contains("which is a folder"),
        "{err}"
    );
}
