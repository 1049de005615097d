//! `condenser prepare` end to end: determinism, crash-safety and resume, bad input, partitions,
//! stdin, the stdout contract, and the schema file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use common::*;
use condenser::shards::read_shard;

fn corpus(dir: &Path) -> Vec<String> {
    vec![
        write_jsonl(dir, "a.jsonl", 400, 1).display().to_string(),
        write_tsv(dir, "b.tsv.gz", 600, 2).display().to_string(),
        write_jsonl(dir, "c.jsonl", 300, 3).display().to_string(),
    ]
}

/// `prepare --out OUT` with small shards and row groups (so a small corpus spans many), `inputs`, then
/// `extra`.
fn prepare_args(inputs: &[String], out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "prepare",
        "--out",
        out.to_str().unwrap(),
        "--shard-size",
        "60KB",
        "--row-group-size",
        "20KB",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(inputs.iter().cloned());
    args.extend(extra.iter().map(|e| e.to_string()));
    args
}

fn prepare(inputs: &[String], out: &Path, extra: &[&str]) -> std::process::Output {
    condenser()
        .args(prepare_args(inputs, out, extra))
        .output()
        .unwrap()
}

#[test]
fn output_is_byte_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let mut outputs = Vec::new();
    for threads in ["1", "2", "8"] {
        let out = dir.path().join(format!("out-{threads}"));
        let o = prepare(&inputs, &out, &["--threads", threads]);
        assert!(o.status.success(), "{}", stderr(&o));
        outputs.push(output_files(&out));
    }
    assert!(
        outputs[0].len() > 3,
        "several shards expected, got {}",
        outputs[0].len()
    );
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

#[test]
fn stdout_lists_each_shard_and_rows_match_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let out = dir.path().join("out");
    let o = prepare(&inputs, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    let listed: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let shards = m["shards"].as_array().unwrap();
    assert_eq!(listed.len(), shards.len());
    let (mut docs, mut spans, mut tokens) = (0u64, 0u64, 0u64);
    for (line, entry) in listed.iter().zip(shards) {
        assert_eq!(Path::new(line), out.join(entry["file"].as_str().unwrap()));
        let rows = read_shard(Path::new(line), None).unwrap();
        assert_eq!(rows.len() as u64, entry["rows"].as_u64().unwrap());
        for r in &rows {
            assert!(r.spans.iter().all(|s| !s.is_empty() && s.len() <= 126));
            assert_eq!(
                r.spans.iter().map(Vec::len).sum::<usize>() as u32,
                r.num_tokens
            );
            assert!(
                r.spans
                    .iter()
                    .flatten()
                    .all(|&t| !(100..=103).contains(&t) && t != 0),
                "special token in a span"
            );
        }
        docs += rows.len() as u64;
        spans += rows.iter().map(|r| r.spans.len() as u64).sum::<u64>();
        tokens += rows.iter().map(|r| r.num_tokens as u64).sum::<u64>();
    }
    assert_eq!(docs, 1300);
    assert_eq!(m["totals"]["documents"], docs);
    assert_eq!(m["totals"]["spans"], spans);
    assert_eq!(m["totals"]["tokens"], tokens);
    assert_eq!(m["complete"], true);
}

/// Kills `prepare` with SIGKILL at several moments; each time the folder holds only complete shards,
/// and rerunning the same command gives exactly the uninterrupted output.
#[test]
fn kill_9_then_rerun_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![
        write_jsonl(dir.path(), "big.jsonl", 2500, 11)
            .display()
            .to_string(),
        write_tsv(dir.path(), "big.tsv", 2500, 12)
            .display()
            .to_string(),
    ];
    let reference = dir.path().join("reference");
    assert!(prepare(&inputs, &reference, &[]).status.success());
    let expected = output_files(&reference);
    let total_shards = manifest(&reference)["shards"].as_array().unwrap().len();
    assert!(
        total_shards > 9,
        "the corpus must span more shards than the kill points ({total_shards})"
    );
    let mut interrupted = 0;

    // Kill after the k-th shard line (k = 0: as soon as the process started).
    for k in [0usize, 1, 4, 9] {
        let out = dir.path().join(format!("killed-{k}"));
        let args = prepare_args(&inputs, &out, &["-q"]);
        let mut child = condenser()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..k {
            if lines.next().is_none() {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if out.join("_manifest.json").exists() {
            let m = manifest(&out);
            let listed = m["shards"].as_array().unwrap().len();
            assert!(
                listed >= k,
                "the manifest lists {listed} shards after {k} were printed"
            );
            if m["complete"] == false {
                interrupted += 1;
            }
        }
        // Only complete shards under final names; each listed one matches its manifest entry.
        if out.exists() {
            for e in std::fs::read_dir(&out).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if name.starts_with("shard-") {
                    read_shard(&out.join(&name), None)
                        .unwrap_or_else(|e| panic!("{name} incomplete after kill at {k}: {e:#}"));
                } else {
                    assert!(
                        name.starts_with('_') || name.starts_with('.'),
                        "unexpected {name}"
                    );
                }
            }
        }
        let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            o.status.success(),
            "rerun after kill at {k}: {}",
            stderr(&o)
        );
        assert_eq!(output_files(&out), expected, "kill after shard {k}");
    }
    assert!(
        interrupted >= 2,
        "only {interrupted} kills landed mid-run: the test did not exercise resume"
    );
}

#[test]
fn a_completed_run_is_not_redone_and_a_different_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let out = dir.path().join("out");
    let first = prepare(&inputs, &out, &[]);
    let again = prepare(&inputs, &out, &[]);
    assert!(again.status.success());
    assert_eq!(
        stdout(&first),
        stdout(&again),
        "a finished run lists its shards again"
    );
    let other = prepare(&inputs, &out, &["--seed", "7"]);
    assert_eq!(other.status.code(), Some(2));
    assert!(
        stderr(&other).contains("different prepare run"),
        "{}",
        stderr(&other)
    );
    assert!(prepare(&inputs, &out, &["--seed", "7", "--overwrite"])
        .status
        .success());
    assert_eq!(manifest(&out)["settings"]["segment"]["seed"], 7);
}

/// A folder written before row groups were cut by uncompressed size (its manifest has no
/// `settings.writer.row_groups`: the compressed-size rule) has other shard bytes: it is refused, not
/// resumed with a mix of both rules, and `--overwrite` prepares it again.
#[test]
fn a_folder_of_the_old_row_group_rule_is_refused_unless_complete() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let out = dir.path().join("out");
    assert!(prepare(&inputs, &out, &[]).status.success());
    assert_eq!(
        manifest(&out)["settings"]["writer"]["row_groups"],
        "by-uncompressed-size"
    );
    let path = out.join("_manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["settings"]["writer"]
        .as_object_mut()
        .unwrap()
        .remove("row_groups");
    m["complete"] = false.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let old = prepare(&inputs, &out, &[]);
    assert_eq!(old.status.code(), Some(2), "{}", stderr(&old));
    let err = stderr(&old);
    assert!(
        err.contains("by-compressed-size")
            && err.contains("by-uncompressed-size")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert!(prepare(&inputs, &out, &["--overwrite"]).status.success());
    assert_eq!(manifest(&out)["complete"], true);
    // A complete folder of the old rule is whole: the same run leaves it alone, shards untouched.
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["settings"]["writer"]
        .as_object_mut()
        .unwrap()
        .remove("row_groups");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let before = output_files(&out);
    let again = prepare(&inputs, &out, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already complete"),
        "{}",
        stderr(&again)
    );
    assert_eq!(output_files(&out), before);
}

fn bad_inputs(dir: &Path) -> Vec<(String, &'static str)> {
    let w = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let text = "A good sentence here. Another one follows.\n".repeat(3000);
    let cut = |bytes: Vec<u8>| bytes[..bytes.len() * 2 / 3].to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(text.as_bytes()).unwrap();
    let zst = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let mut long = vec![b'x'; 50 << 20];
    long.push(b'\n');
    vec![
        (
            w("utf8.txt", b"fine line\nbad \xff\xfe bytes\nfine again\n"),
            "invalid_utf8",
        ),
        (
            w(
                "bad.jsonl",
                b"{\"id\": 1, \"text\": \"ok\"}\n{\"id\": 2, \"text\": \n",
            ),
            "malformed_json",
        ),
        (w("cut.txt.gz", &cut(gz.finish().unwrap())), "read_error"),
        (w("cut.txt.bz2", &cut(bz.finish().unwrap())), "read_error"),
        (w("cut.txt.zst", &cut(zst)), "read_error"),
        (
            w("rows.tsv", b"1\tpassage one\n2\n3\tpassage three\n"),
            "missing_column",
        ),
        (w("empty.txt", b""), "empty_file"),
        (w("long.txt", &long), "record_too_large"),
        (
            w("binary.bin", &[0x7f, b'E', b'L', b'F', 0, 0, 1, 2, 0, 3]),
            "binary_file",
        ),
    ]
}

#[test]
fn bad_input_is_skipped_counted_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_inputs(dir.path());
    let out = dir.path().join("out");
    let mut args = vec!["prepare", "--out", out.to_str().unwrap()];
    args.extend(bad.iter().map(|(p, _)| p.as_str()));
    let o = run(&args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let m = manifest(&out);
    for (path, reason) in &bad {
        let input = m["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["path"] == path.as_str())
            .unwrap();
        assert!(
            input["skipped"][reason].as_u64().unwrap_or(0) >= 1,
            "{path}: no {reason} in {input}"
        );
        assert!(
            err.contains(path.as_str()),
            "stderr does not name {path}:\n{err}"
        );
    }
    // Line numbers and byte offsets are named.
    assert!(err.contains("utf8.txt:2: invalid UTF-8"), "{err}");
    assert!(err.contains("bad.jsonl:2:"), "{err}");
    assert!(err.contains("rows.tsv:2:"), "{err}");
    assert!(err.contains("long.txt:1: line of 52428800 bytes"), "{err}");
    // The good records around the bad ones were kept.
    assert!(m["totals"]["documents"].as_u64().unwrap() >= 6);
    assert_eq!(m["totals"]["skipped"]["read_error"], 3);
}

#[test]
fn on_error_fail_stops_without_a_partial_shard() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_jsonl(dir.path(), "good.jsonl", 50, 9)
        .display()
        .to_string();
    for (i, (path, reason)) in bad_inputs(dir.path()).into_iter().enumerate() {
        let out = dir.path().join(format!("out-{i}"));
        let o = run(&[
            "prepare",
            "--on-error",
            "fail",
            "--out",
            out.to_str().unwrap(),
            &good,
            &path,
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{reason}: {err}");
        assert!(err.contains(&path), "{reason}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // A run that fails before its first shard removes the folder it made.
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet") || n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{reason}: left {leftovers:?}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn partitions_merged_hold_exactly_the_unpartitioned_documents() {
    let dir = tempfile::tempdir().unwrap();
    let many = corpus(dir.path());
    let one = vec![many[0].clone()];
    for (label, inputs, n) in [("by-file", &many, 2u32), ("by-record", &one, 3u32)] {
        let whole = dir.path().join(format!("{label}-whole"));
        assert!(prepare(inputs, &whole, &[]).status.success());
        let parts = dir.path().join(format!("{label}-parts"));
        for k in 0..n {
            let p = format!("{k}/{n}");
            let o = prepare(inputs, &parts, &["--partition", &p]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        let o = run(&["prepare", "--merge", "--out", parts.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(parts.join("_tokenizer.json")).unwrap(),
            std::fs::read(whole.join("_tokenizer.json")).unwrap(),
            "{label}: the merged folder keeps the tokenizer copy"
        );
        let (mw, mp) = (manifest(&whole), manifest(&parts));
        for key in ["documents", "spans", "tokens"] {
            assert_eq!(mw["totals"][key], mp["totals"][key], "{label}: {key}");
        }
        let ids = |dir: &Path, m: &serde_json::Value| {
            let mut ids: Vec<String> = m["shards"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| read_shard(&dir.join(s["file"].as_str().unwrap()), None).unwrap())
                .map(|r| r.doc_id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&whole, &mw), ids(&parts, &mp), "{label}");
    }
}

#[test]
fn stdin_is_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = condenser()
        .args(["prepare", "-", "--out", out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rng = Lcg(5);
    let text: String = (0..20).map(|_| document(&mut rng, 5) + "\n").collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = read_shard(Path::new(stdout(&o).trim()), None).unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0].doc_id, "<stdin>:1");
}

#[test]
fn min_spans_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let out = dir.path().join("out");
    assert!(prepare(&inputs, &out, &["--min-spans", "2"])
        .status
        .success());
    let m = manifest(&out);
    let dropped = m["totals"]["skipped"]["too_few_spans"].as_u64().unwrap();
    assert!(dropped > 0);
    assert_eq!(m["totals"]["documents"].as_u64().unwrap() + dropped, 1300);
}

#[test]
fn schema_file_is_in_sync_with_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/shard.schema.json");
    let expected =
        serde_json::to_string_pretty(&condenser::shards::schema::schema_json()).unwrap() + "\n";
    if std::env::var_os("CONDENSER_UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        on_disk, expected,
        "schemas/shard.schema.json is stale: rerun with CONDENSER_UPDATE_SCHEMAS=1"
    );
}

/// A Hugging Face `wikimedia/wikipedia`-style Parquet file (`id`, `url`, `title`, `text`).
#[test]
fn parquet_with_a_text_column() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train-00000-of-00001.parquet");
    let mut rng = Lcg(9);
    let texts: Vec<String> = (0..30).map(|_| document(&mut rng, 6)).collect();
    let ids: Vec<String> = (0..30).map(|i| format!("{}", 100 + i)).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(ids.clone())) as ArrayRef),
        (
            "url",
            Arc::new(StringArray::from(vec![
                "https://en.wikipedia.org/wiki/X";
                30
            ])) as ArrayRef,
        ),
        (
            "title",
            Arc::new(StringArray::from(vec!["X"; 30])) as ArrayRef,
        ),
        ("text", Arc::new(StringArray::from(texts)) as ArrayRef),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "prepare",
        "--out",
        out.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["format"], "parquet");
    assert_eq!(m["totals"]["documents"], 30);
    let rows = read_shard(Path::new(stdout(&o).trim()), None).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.doc_id.clone()).collect::<Vec<_>>(),
        ids
    );
}

/// A resumed run does not read again the inputs that complete shards already cover: with the first
/// input gone after the kill, the rerun still ends with the uninterrupted bytes.
#[test]
fn resume_does_not_reread_finished_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_jsonl(dir.path(), "a.jsonl", 100, 31);
    let b = write_jsonl(dir.path(), "b.jsonl", 6000, 32);
    let (a, b) = (
        a.to_str().unwrap().to_string(),
        b.to_str().unwrap().to_string(),
    );
    let reference = dir.path().join("reference");
    assert!(prepare(&[a.clone(), b.clone()], &reference, &[])
        .status
        .success());
    let out = dir.path().join("cut");
    let mut child = condenser()
        .args(prepare_args(&[a.clone(), b.clone()], &out, &["-q"]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let total = manifest(&reference)["shards"].as_array().unwrap().len();
    // a.jsonl is under 2% of the data: a third of the shards lie well past its end.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..total / 3 {
        lines.next();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let m = manifest(&out);
    assert_eq!(
        m["complete"], false,
        "the kill came too late to test anything"
    );
    assert_eq!(
        m["inputs"][0]["done"], true,
        "a.jsonl not finished at the kill: {}",
        m["inputs"]
    );
    std::fs::rename(&a, dir.path().join("a.away")).unwrap();
    let o = prepare(&[a.clone(), b.clone()], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(output_files(&out), output_files(&reference));
}

/// `--on-error fail` is how a run reacts to bad input, not a setting of its output: the same command
/// run again finds its own folder (it used to be refused as "a different prepare run", so a run with
/// it could never resume), and the other choice of it does too.
#[test]
fn on_error_fail_reruns_and_resumes_its_own_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![write_jsonl(dir.path(), "a.jsonl", 200, 3)
        .display()
        .to_string()];
    let out = dir.path().join("out");
    for extra in [&["--on-error", "fail"][..], &["--on-error", "fail"], &[]] {
        let o = prepare(&inputs, &out, extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    }
    assert!(stderr(&prepare(&inputs, &out, &["--on-error", "fail"])).contains("already complete"));
}

/// A prepared folder keeps a copy of its tokenizer: moved away from the file it was made with (say,
/// to the GPU machine), it still feeds the trainer's loader; a copy with other contents is refused.
#[test]
fn a_moved_folder_still_has_its_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok.json");
    std::fs::copy(data("minilm/tokenizer.json"), &tok).unwrap();
    let inputs = vec![write_jsonl(dir.path(), "a.jsonl", 200, 7)
        .display()
        .to_string()];
    let out = dir.path().join("out");
    let o = prepare(&inputs, &out, &["--tokenizer", tok.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("_tokenizer.json")).unwrap(),
        std::fs::read(&tok).unwrap()
    );
    std::fs::remove_file(&tok).unwrap();
    let moved = dir.path().join("moved");
    std::fs::rename(&out, &moved).unwrap();
    let load = || {
        run(&[
            "bench",
            "train",
            "--tiny",
            "--device",
            "cpu",
            "--loader-only",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--data",
            moved.to_str().unwrap(),
        ])
    };
    let o = load();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(moved.join("_tokenizer.json"), b"{}").unwrap();
    let o = load();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("tokenizer.json (other contents)") && err.contains("tok.json (missing)"),
        "{err}"
    );
}

/// a JSON Lines file whose first line is long (a whole article) is JSON Lines, not
/// the keyed-JSON format: every record is read, under `--on-error fail` too; a first line longer
/// than `--max-record-bytes` is a counted skip, and the records after it are still read.
#[test]
fn a_long_first_jsonl_line_is_still_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(13);
    let mut s = String::new();
    let long = document(&mut rng, 400); // ~40 KB: past any fixed detection window
    assert!(long.len() > 20_000);
    s.push_str(
        &serde_json::json!({"id": "a0", "title": "T", "text": long, "meta": {"k": 1}}).to_string(),
    );
    s.push('\n');
    for i in 1..4 {
        let text = document(&mut rng, 5);
        s.push_str(&serde_json::json!({"id": format!("a{i}"), "text": text}).to_string());
        s.push('\n');
    }
    let p = dir.path().join("long-first.jsonl");
    std::fs::write(&p, &s).unwrap();
    let input = vec![p.display().to_string()];
    let out = dir.path().join("out");
    let o = prepare(&input, &out, &["--on-error", "fail"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["format"], "jsonl", "{m}");
    assert_eq!(m["totals"]["documents"], 4, "{m}");
    // The same file with a record limit below the first line: that line is skipped, not decided on.
    let out = dir.path().join("out-capped");
    let o = prepare(&input, &out, &["--max-record-bytes", "10KB"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["format"], "jsonl", "{m}");
    assert_eq!(m["inputs"][0]["skipped"]["record_too_large"], 1, "{m}");
    assert_eq!(m["totals"]["documents"], 3, "{m}");
}

/// A run that fails before its first shard leaves no folder it created behind (a partition's
/// `part-K-of-N/` included), so the next attempt does not meet a half-made folder.
#[test]
fn a_run_failing_before_its_first_shard_leaves_no_folder_behind() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write_jsonl(dir.path(), "records.jsonl", 5, 3)
        .display()
        .to_string();
    let fail = ["--format", "json", "--on-error", "fail"];
    let out = dir.path().join("out");
    let o = prepare(std::slice::from_ref(&jsonl), &out, &fail);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists(), "{} left behind", out.display());
    // A partition failing on its first record: neither part-1-of-2/ nor --out stays.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"x\", bad\n".repeat(200)).unwrap();
    let bad = bad.display().to_string();
    let part = [
        "--format",
        "jsonl",
        "--on-error",
        "fail",
        "--partition",
        "1/2",
    ];
    let o = prepare(std::slice::from_ref(&bad), &out, &part);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists(), "{} left behind", out.display());
    // A folder the user made is theirs: only what the run created goes.
    std::fs::create_dir_all(&out).unwrap();
    let o = prepare(std::slice::from_ref(&bad), &out, &part);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(out.is_dir() && !out.join("part-1-of-2").exists());
}

/// a keyed-JSON object whose values are not objects (JSON Lines read with
/// `--format json`) is an error naming the file, not a corpus made of its field names; a keyed object
/// on one line is still detected as such.
#[test]
fn keyed_json_values_must_be_objects() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write_jsonl(dir.path(), "records.jsonl", 5, 3)
        .display()
        .to_string();
    let out = dir.path().join("out");
    let o = prepare(
        std::slice::from_ref(&jsonl),
        &out,
        &["--format", "json", "--on-error", "fail"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&jsonl) && err.contains("not an object"),
        "{err}"
    );
    let out = dir.path().join("out-skip");
    let o = prepare(std::slice::from_ref(&jsonl), &out, &["--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["totals"]["documents"], 0, "{m}");
    assert_eq!(m["inputs"][0]["skipped"]["malformed_json"], 1, "{m}");

    let mut rng = Lcg(5);
    let keyed = serde_json::json!({
        "Alpha": {"title": "Alpha", "extract": document(&mut rng, 3)},
        "Beta": {"title": "Beta", "extract": document(&mut rng, 3)},
    });
    let p = dir.path().join("summaries.json");
    std::fs::write(&p, format!("{keyed}\n")).unwrap();
    let out = dir.path().join("out-keyed");
    let o = prepare(&[p.display().to_string()], &out, &["--on-error", "fail"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["format"], "json", "{m}");
    assert_eq!(m["totals"]["documents"], 2, "{m}");
}

/// `--max-record-bytes` applies to every format, not only to lines: a wiki page,
/// a keyed-JSON value (gzip) and a Parquet cell over the limit are counted skips and the records
/// beside them are kept; `--on-error fail` stops on them.
#[test]
fn the_record_limit_applies_to_every_format() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(14);
    let big = "Many words in one long page. ".repeat(10_000); // 290 KB
    let small = document(&mut rng, 5);
    let xml = format!(
        "<mediawiki><page><title>Big</title><ns>0</ns><id>1</id><revision><text>{big}</text></revision></page>\n\
         <page><title>Small</title><ns>0</ns><id>2</id><revision><text>{small}</text></revision></page></mediawiki>\n"
    );
    let wiki = dir.path().join("dump.xml");
    std::fs::write(&wiki, xml).unwrap();
    let keyed = dir.path().join("summaries.json.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let body = serde_json::json!({"Big": {"extract": big}, "Small": {"extract": small}});
    gz.write_all(body.to_string().as_bytes()).unwrap();
    std::fs::write(&keyed, gz.finish().unwrap()).unwrap();
    let parquet = dir.path().join("cells.parquet");
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(StringArray::from(vec!["p1", "p2"])) as ArrayRef,
        ),
        (
            "text",
            Arc::new(StringArray::from(vec![big.as_str(), small.as_str()])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&parquet).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let inputs: Vec<String> = [&wiki, &keyed, &parquet]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let out = dir.path().join("out");
    let o = prepare(&inputs, &out, &["--max-record-bytes", "100KB"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    for (input, format) in m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["wiki", "json", "parquet"])
    {
        assert_eq!(input["format"], format, "{input}");
        assert_eq!(input["documents"], 1, "{input}");
        assert_eq!(input["skipped"]["record_too_large"], 1, "{input}");
    }
    for input in &inputs {
        let out = dir.path().join("out-fail");
        let o = prepare(
            std::slice::from_ref(input),
            &out,
            &[
                "--max-record-bytes",
                "100KB",
                "--on-error",
                "fail",
                "--overwrite",
            ],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{input}: {err}");
        assert!(err.contains("--max-record-bytes"), "{input}: {err}");
    }
}

/// a truncated multi-stream bzip2 dump reports where the read failed, not "byte 0".
#[test]
fn a_truncated_multistream_bz2_dump_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(21);
    let mut dump = Vec::new();
    let mut stream = |text: &str| {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(text.as_bytes()).unwrap();
        dump.extend(bz.finish().unwrap());
    };
    stream("<mediawiki>\n");
    for id in 1..=20 {
        let text = document(&mut rng, 40);
        stream(&format!(
            "<page><title>P{id}</title><ns>0</ns><id>{id}</id><revision><text>{text}</text></revision></page>\n"
        ));
    }
    stream("</mediawiki>\n");
    let path = dir.path().join("dump.xml.bz2");
    std::fs::write(&path, &dump[..dump.len() * 3 / 4]).unwrap();
    let out = dir.path().join("out");
    let o = prepare(&[path.display().to_string()], &out, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let m = manifest(&out);
    assert_eq!(m["inputs"][0]["skipped"]["read_error"], 1, "{m}");
    assert!(m["totals"]["documents"].as_u64().unwrap() >= 10, "{m}");
    let line = err
        .lines()
        .find(|l| l.contains("dump.xml.bz2") && l.contains("byte"))
        .unwrap_or_else(|| panic!("no position in:\n{err}"));
    assert!(!line.contains("byte 0 "), "{line}");
    assert!(
        line.contains("after 1") || line.contains("page(s)"),
        "{line}"
    );
}

/// a shard written elsewhere (pyarrow) with the shard schema's types but the standard list
/// field name `element` instead of arrow-rs's `item` is a shard: `read_shard` (train) and `inspect`
/// open it.
#[test]
fn a_shard_with_element_list_fields_is_read() {
    use arrow::array::{ArrayRef, Int32Array, ListArray, RecordBatch, StringArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let ids = Int32Array::from(vec![101, 102, 103, 104, 105]);
    let span = Arc::new(Field::new("element", DataType::Int32, false));
    let spans = ListArray::new(
        span.clone(),
        OffsetBuffer::from_lengths([2, 3]),
        Arc::new(ids),
        None,
    );
    let doc = Arc::new(Field::new("element", DataType::List(span), false));
    let docs = ListArray::new(
        doc.clone(),
        OffsetBuffer::from_lengths([2]),
        Arc::new(spans),
        None,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("spans", DataType::List(doc), false),
        Field::new("num_tokens", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["d1"])) as ArrayRef,
            Arc::new(docs),
            Arc::new(Int32Array::from(vec![5])),
        ],
    )
    .unwrap();
    let path = dir.path().join("shard-00000.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let rows = read_shard(&path, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].doc_id, "d1");
    assert_eq!(rows[0].spans, [vec![101, 102], vec![103, 104, 105]]);
    let o = run(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// a second `prepare` (or `--merge`) into a folder another run is writing is refused with
/// exit 2 naming the holder, and the first run ends well.
#[test]
fn a_second_run_into_a_busy_folder_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut first = condenser()
        .args(["prepare", "-", "-q", "--out", out.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first run holds the folder while it waits for stdin: it locks the folder before it
    // writes its first manifest.
    let lock = out.join(".condenser.lock");
    let started = std::time::Instant::now();
    while !out.join("_manifest.json").exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the first run never locked {}",
            out.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let good = write_jsonl(dir.path(), "good.jsonl", 20, 4)
        .display()
        .to_string();
    let merge = ["prepare", "--merge", "--out", out.to_str().unwrap()];
    for o in [
        prepare(std::slice::from_ref(&good), &out, &["--overwrite"]),
        run(&merge),
    ] {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("another prepare is writing"), "{err}");
        assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    }
    let mut rng = Lcg(6);
    let text: String = (0..10).map(|_| document(&mut rng, 3) + "\n").collect();
    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest(&out)["totals"]["documents"], 10);
    assert!(!lock.exists(), "a finished run leaves its lock file behind");
    // Free again: the next run may write.
    assert!(prepare(&[good], &out, &["--overwrite"]).status.success());
}

/// shards in a folder without a manifest are not deleted without `--overwrite`.
#[test]
fn shards_without_a_manifest_are_kept_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_jsonl(dir.path(), "good.jsonl", 20, 4)
        .display()
        .to_string();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("shard-00000.parquet"), b"someone's data").unwrap();
    let o = prepare(std::slice::from_ref(&good), &out, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shard-00000.parquet") && err.contains("no _manifest.json"),
        "{err}"
    );
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(
        std::fs::read(out.join("shard-00000.parquet")).unwrap(),
        b"someone's data"
    );
    let o = prepare(&[good], &out, &["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest(&out)["totals"]["documents"], 20);
}

/// a missing path, a glob matching nothing, a hub name or a URL is an error before
/// anything is written, whatever `--on-error` says; the corrected command then runs.
#[test]
fn a_missing_input_is_an_error_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_jsonl(dir.path(), "good.jsonl", 20, 4)
        .display()
        .to_string();
    let typo = dir.path().join("goood.jsonl").display().to_string();
    let out = dir.path().join("out");
    let cases: [(&str, &str); 4] = [
        (&typo, "goood.jsonl: no such file or directory"),
        (
            &format!("{}/*.tsv", dir.path().display()),
            "matches no file",
        ),
        ("wikimedia/wikipedia", "download it first"),
        ("s3://bucket/corpus.jsonl", "s3:// is not read directly"),
    ];
    for (missing, want) in cases {
        for on_error in ["skip", "fail"] {
            let o = prepare(
                &[good.clone(), missing.to_string()],
                &out,
                &["--on-error", on_error],
            );
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{missing}: {err}");
            assert!(err.contains(want), "{missing}: {err}");
            assert!(!out.exists(), "{missing}: {} was created", out.display());
        }
    }
    let o = prepare(&[good], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest(&out)["totals"]["documents"], 20);
}

/// a directory with a symlink loop (and a second link to one file) is read once.
#[test]
fn a_symlink_loop_reads_each_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    write_jsonl(&corpus, "docs.jsonl", 20, 4);
    std::os::unix::fs::symlink(&corpus, corpus.join("loop")).unwrap();
    std::os::unix::fs::symlink(corpus.join("docs.jsonl"), corpus.join("same.jsonl")).unwrap();
    let out = dir.path().join("out");
    let o = prepare(&[corpus.display().to_string()], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = manifest(&out);
    assert_eq!(m["inputs"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["totals"]["documents"], 20);
}

/// an absurd `-j` is refused at once (prepare and bench prepare); 0 means all cores.
#[test]
fn absurd_thread_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_jsonl(dir.path(), "good.jsonl", 20, 4)
        .display()
        .to_string();
    let out = dir.path().join("out");
    for cmd in [
        prepare_args(std::slice::from_ref(&good), &out, &["-j", "100000"]),
        vec![
            "bench".into(),
            "prepare".into(),
            good.clone(),
            "-j".into(),
            "100000".into(),
        ],
    ] {
        let started = std::time::Instant::now();
        let o = condenser().args(&cmd).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("more than the 1024 allowed"), "{err}");
        assert!(
            started.elapsed().as_secs() < 10,
            "took {:?}",
            started.elapsed()
        );
    }
    assert!(!out.exists());
    let o = prepare(&[good], &out, &["-j", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// a failed write of the manifest or a shard (ENOSPC from /dev/full) names the file.
#[test]
fn a_failed_manifest_or_shard_write_names_the_file() {
    use condenser::prepare::segment::Segmented;
    use condenser::shards::{Manifest, ShardWriter, WriterConfig};
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = write_jsonl(dir.path(), "good.jsonl", 20, 4)
        .display()
        .to_string();
    let out = dir.path().join("out");
    assert!(prepare(&[good], &out, &[]).status.success());
    let mut m = Manifest::load(&out).unwrap().unwrap();
    std::os::unix::fs::symlink("/dev/full", out.join("._manifest.json.tmp")).unwrap();
    let err = format!("{:#}", m.store(&out).unwrap_err());
    assert!(
        err.contains("._manifest.json.tmp") && err.contains("write failed"),
        "{err}"
    );

    let shard = dir.path().join("shard-00000.parquet");
    std::os::unix::fs::symlink("/dev/full", dir.path().join(".shard-00000.parquet.tmp")).unwrap();
    let result = ShardWriter::create(&shard, WriterConfig::default()).and_then(|mut w| {
        w.push(Segmented {
            doc_id: "d".into(),
            spans: vec![vec![1000, 1001]],
            num_tokens: 2,
        })?;
        w.close()
    });
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains(".shard-00000.parquet.tmp"), "{err}");
}

/// pyarrow opens a prepared folder by its name (plain, and merged from partitions
/// into `part-K-of-N/` subfolders): the manifest and tokenizer copy are `_`-prefixed, which pyarrow,
/// Spark and HF datasets skip, so every row it reads is a shard row.
#[test]
fn pyarrow_opens_a_shard_folder_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = corpus(dir.path());
    let plain = dir.path().join("plain");
    let o = prepare(&inputs, &plain, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = dir.path().join("merged");
    for k in 0..2 {
        let o = prepare(&inputs, &merged, &["--partition", &format!("{k}/2")]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = run(&["prepare", "--merge", "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = "import sys, pyarrow.dataset as ds, pyarrow.parquet as pq\n\
                  d = ds.dataset(sys.argv[1])\n\
                  t = pq.read_table(sys.argv[1])\n\
                  print(d.count_rows(), t.num_rows, ','.join(t.column_names))\n";
    for folder in [&plain, &merged] {
        let m = manifest(folder);
        let rows: u64 = m["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(rows, m["totals"]["documents"].as_u64().unwrap());
        assert!(m["shards"].as_array().unwrap().len() > 1);
        let o = std::process::Command::new(venv_python())
            .args(["-c", script, folder.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", folder.display(), stderr(&o));
        let out = stdout(&o);
        let fields: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(
            fields[0],
            rows.to_string(),
            "dataset rows of {}",
            folder.display()
        );
        assert_eq!(
            fields[1],
            rows.to_string(),
            "read_table rows of {}",
            folder.display()
        );
        assert!(fields[2].contains("doc_id"), "{out}");
    }
}

/// with stderr not a terminal, progress comes as plain log lines at a steady
/// interval (`CONDENSER_PROGRESS_SECS`, 30 s by default) with the share of the input bytes and an
/// ETA; stdout holds the shard paths only.
#[test]
fn progress_lines_with_a_percentage_and_an_eta_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_jsonl(dir.path(), "big.jsonl", 3000, 5);
    let out = dir.path().join("out");
    let o = condenser()
        .env("CONDENSER_PROGRESS_SECS", "0.01")
        .args(prepare_args(&[input.display().to_string()], &out, &[]))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("prepare: ")).collect();
    assert!(!lines.is_empty(), "no progress line in:\n{err}");
    for line in &lines {
        assert!(
            line.contains("% (") && line.contains(" of ") && line.contains("ETA"),
            "{line}"
        );
        assert!(line.contains("docs") && line.contains("shard(s)"), "{line}");
    }
    for line in stdout(&o).lines() {
        assert!(
            line.ends_with(".parquet"),
            "stdout holds shard paths only: {line:?}"
        );
    }
    // Quiet: nothing but errors.
    let out = dir.path().join("quiet");
    let o = condenser()
        .env("CONDENSER_PROGRESS_SECS", "0.01")
        .arg("-q")
        .args(prepare_args(&[input.display().to_string()], &out, &[]))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
}

/// The documents of a prepared folder (merged or not): (doc id, spans) sorted, and the manifest's
/// totals.
fn documents_of(dir: &Path) -> (Vec<(String, Vec<Vec<u32>>)>, serde_json::Value) {
    let m = manifest(dir);
    let mut docs: Vec<(String, Vec<Vec<u32>>)> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| read_shard(&dir.join(s["file"].as_str().unwrap()), None).unwrap())
        .map(|r| (r.doc_id, r.spans))
        .collect();
    docs.sort();
    (docs, m["totals"].clone())
}

/// `--partition K/N` on one uncompressed JSONL, TSV or text file reads byte ranges
/// cut at line boundaries (about 1/N of the bytes each); merged, the parts hold exactly the documents
/// of one unpartitioned run (same ids, `file:line` ones included, same spans), for N that do not divide
/// the record count; a compressed file still goes every N-th record.
#[test]
fn byte_range_partitions_merge_to_the_unpartitioned_documents() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write_jsonl(dir.path(), "one.jsonl", 401, 7);
    let tsv = write_tsv(dir.path(), "one.tsv", 503, 8);
    // No ids in the records: `file:line` ids, numbered from the start of the file in every partition.
    let text = dir.path().join("one.txt");
    let body: String = std::fs::read_to_string(&tsv)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| match i % 50 {
            7 => "\n".to_string(), // blank lines are no documents, but count as lines
            _ => format!("{}\n", l.split('\t').nth(1).unwrap()),
        })
        .collect();
    std::fs::write(&text, body).unwrap();
    let gz = write_tsv(dir.path(), "one.tsv.gz", 211, 9);
    // A multi-stream bzip2 dump (233 pages, 10 a stream) is cut at its streams, found by scanning or
    // read from its index (`offset:id:title`, as Wikipedia writes it beside the dump).
    let (dump, streams) = multistream_dump(233, 10, 5);
    let wiki = dir.path().join("enwiki-multistream.xml.bz2");
    std::fs::write(&wiki, &dump).unwrap();
    let largest_stream = streams.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap() as u64;
    let mut index_lines = String::new();
    let mut page = 1;
    for w in streams.windows(2) {
        for _ in 0..w[1].1 {
            index_lines.push_str(&format!("{}:{page}:P{page}\n", w[0].0));
            page += 1;
        }
    }
    let index = dir.path().join("enwiki-multistream-index.txt.bz2");
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    bz.write_all(index_lines.as_bytes()).unwrap();
    std::fs::write(&index, bz.finish().unwrap()).unwrap();
    let index_arg = index.display().to_string();
    let cases: [(&str, &Path, &[&str], &[u32]); 7] = [
        ("jsonl", &jsonl, &[], &[3, 7]),
        ("tsv", &tsv, &[], &[4]),
        ("tsv-line-ids", &tsv, &["--id-column", "none"], &[3]),
        ("text", &text, &[], &[6]),
        ("gzip-by-record", &gz, &[], &[3]),
        ("multistream-bz2", &wiki, &[], &[3, 7]),
        (
            "multistream-bz2-index",
            &wiki,
            &["--index", &index_arg],
            &[4],
        ),
    ];
    for (label, input, extra, ns) in cases {
        let inputs = vec![input.display().to_string()];
        let size = std::fs::metadata(input).unwrap().len();
        let whole = dir.path().join(format!("{label}-whole"));
        // --index belongs to partitions only (without --partition it is refused).
        let whole_extra = if extra.contains(&"--index") {
            &[][..]
        } else {
            extra
        };
        let o = prepare(&inputs, &whole, whole_extra);
        assert!(o.status.success(), "{}", stderr(&o));
        let (want, want_totals) = documents_of(&whole);
        assert!(want.len() > 100, "{label}");
        for &n in ns {
            let parts = dir.path().join(format!("{label}-parts-{n}"));
            let mut records = 0;
            for k in 0..n {
                let mut args = extra.to_vec();
                let p = format!("{k}/{n}");
                args.extend(["--partition", &p]);
                let o = prepare(&inputs, &parts, &args);
                assert!(o.status.success(), "{}", stderr(&o));
                let m = manifest(&parts.join(format!("part-{k}-of-{n}")));
                records += m["inputs"][0]["records"].as_u64().unwrap();
                let read = m["inputs"][0]["bytes"].as_u64().unwrap();
                if label.starts_with("multistream") {
                    // About 1/N of the compressed bytes: its cuts move to the next stream start.
                    assert!(
                        read <= size / n as u64 + 2 * largest_stream,
                        "{label} {k}/{n}: read {read} of {size}"
                    );
                } else if label != "gzip-by-record" {
                    // About 1/N of the file, plus at most the line that straddles the end.
                    assert!(
                        read < size / n as u64 + 2000,
                        "{label} {k}/{n}: read {read} of {size}"
                    );
                }
            }
            let o = run(&["prepare", "--merge", "--out", parts.to_str().unwrap()]);
            assert!(o.status.success(), "{}", stderr(&o));
            let (got, got_totals) = documents_of(&parts);
            assert_eq!(got.len(), want.len(), "{label} N={n}");
            assert!(got == want, "{label} N={n}: the merged documents differ");
            for key in ["documents", "spans", "tokens"] {
                assert_eq!(got_totals[key], want_totals[key], "{label} N={n}: {key}");
            }
            // Every line read exactly once: the parts' records add up to the whole run's.
            let whole_records = manifest(&whole)["inputs"][0]["records"].as_u64().unwrap();
            assert_eq!(records, whole_records, "{label} N={n}: records");
        }
    }
    // An index names one dump's streams: with a second input it is refused, before anything runs.
    let two = vec![wiki.display().to_string(), jsonl.display().to_string()];
    let o = prepare(
        &two,
        &dir.path().join("two"),
        &["--partition", "0/3", "--index", &index_arg],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--index is the index of one multi-stream dump"),
        "{}",
        stderr(&o)
    );
    // Something else given as the index: its first line is named, and nothing is written (the reader's
    // error used to be masked by the writer's "the pipeline stopped before the end of the input").
    let one = vec![wiki.display().to_string()];
    let wrong = dir.path().join("wrong-index");
    let o = prepare(&one, &wrong, &["--partition", "1/3", "--index", &one[0]]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(":1: expected `offset:page_id:title`"),
        "{}",
        stderr(&o)
    );
    assert!(!wrong.exists());
}

/// A Wikipedia-style multi-stream dump: a header stream, then pages in groups of `per_stream`, each
/// group its own bzip2 stream, then the closing tag. Returns the bytes and, per stream, (its end
/// offset, the pages it holds).
fn multistream_dump(pages: usize, per_stream: usize, seed: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut rng = Lcg(seed);
    let mut dump = Vec::new();
    let mut streams = Vec::new();
    let mut stream = |text: &str, n: usize, dump: &mut Vec<u8>| {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(text.as_bytes()).unwrap();
        dump.extend(bz.finish().unwrap());
        streams.push((dump.len(), n));
    };
    stream(
        "<mediawiki>\n  <siteinfo><sitename>T</sitename></siteinfo>\n",
        0,
        &mut dump,
    );
    for first in (1..=pages).step_by(per_stream) {
        let last = (first + per_stream - 1).min(pages);
        let mut text = String::new();
        for id in first..=last {
            let body = document(&mut rng, 3 + id % 20);
            text.push_str(&format!(
                "  <page>\n    <title>P{id}</title>\n    <ns>0</ns>\n    <id>{id}</id>\n    <revision><text>{body} [[Link|label]] {{{{cite}}}}</text></revision>\n  </page>\n"
            ));
        }
        stream(&text, last + 1 - first, &mut dump);
    }
    stream("</mediawiki>\n", 0, &mut dump);
    (dump, streams)
}

/// `prepare` of `inputs` into `out` with `-j j`, decoding in groups of 3,000 compressed bytes (so that
/// a small input has many); it must succeed.
fn prepare_in_small_groups(inputs: &[String], out: &Path, j: &str) -> std::process::Output {
    let o = condenser()
        .env("CONDENSER_DECODE_GROUP_BYTES", "3000")
        .args(prepare_args(inputs, out, &["-j", j]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}: {}", out.display(), stderr(&o));
    o
}

/// a multi-stream bzip2 dump decodes in parallel (groups of streams, here small so
/// that there are many) into byte-identical shards and manifest as the serial decoder (`-j 1`); a
/// truncated dump keeps every complete stream's pages and reports the truncation with its position.
#[test]
fn parallel_multistream_bz2_decoding_equals_the_serial_path() {
    let dir = tempfile::tempdir().unwrap();
    let (dump, streams) = multistream_dump(230, 10, 17);
    let path = dir.path().join("enwiki-multistream.xml.bz2");
    std::fs::write(&path, &dump).unwrap();
    let inputs = vec![path.display().to_string()];
    let serial = dir.path().join("serial");
    prepare_in_small_groups(&inputs, &serial, "1");
    assert_eq!(manifest(&serial)["totals"]["documents"], 230);
    for j in ["2", "5"] {
        let parallel = dir.path().join(format!("parallel-{j}"));
        prepare_in_small_groups(&inputs, &parallel, j);
        assert!(
            output_files(&serial) == output_files(&parallel),
            "-j {j}: outputs differ"
        );
    }

    // Cut inside the stream that holds pages 161..=170: pages 1..=160 are whole.
    let (cut_stream, _) = streams
        .iter()
        .enumerate()
        .find(|(_, (_, n))| *n > 0)
        .map(|(i, _)| (i + 16, ()))
        .unwrap();
    let cut = (streams[cut_stream - 1].0 + streams[cut_stream].0) / 2;
    let kept: usize = streams[..cut_stream].iter().map(|(_, n)| n).sum();
    assert_eq!(kept, 160);
    let short = dir.path().join("short.xml.bz2");
    std::fs::write(&short, &dump[..cut]).unwrap();
    let inputs = vec![short.display().to_string()];
    for j in ["1", "3"] {
        let out = dir.path().join(format!("short-{j}"));
        let err = stderr(&prepare_in_small_groups(&inputs, &out, j));
        let m = manifest(&out);
        assert_eq!(m["totals"]["documents"], kept as u64, "-j {j}: {m}");
        assert_eq!(m["inputs"][0]["skipped"]["read_error"], 1, "-j {j}: {m}");
        assert!(
            err.lines()
                .any(|l| l.contains("short.xml.bz2") && l.contains("after 160 page(s)")),
            "-j {j}: {err}"
        );
    }
}

/// a single-stream bzip2 dump of many blocks (what `bzip2 FILE` writes) decodes block by block in
/// parallel into byte-identical shards and manifest as the serial decoder; cut inside a block, both keep
/// the same pages and count one read error.
#[test]
fn single_stream_bz2_blocks_decode_in_parallel_as_the_serial_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(23);
    let mut xml = String::from("<mediawiki>\n");
    for id in 1..=400 {
        let body = document(&mut rng, 60 + id % 40);
        xml.push_str(&format!(
            "  <page>\n    <title>P{id}</title>\n    <ns>0</ns>\n    <id>{id}</id>\n    <revision><text>{body}</text></revision>\n  </page>\n"
        ));
    }
    xml.push_str("</mediawiki>\n");
    // Level 1: 100 kB blocks, so the one stream has several.
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
    bz.write_all(xml.as_bytes()).unwrap();
    let dump = bz.finish().unwrap();
    assert!(xml.len() > 400_000, "{}", xml.len());
    for (name, bytes) in [("whole", &dump[..]), ("cut", &dump[..dump.len() * 2 / 3])] {
        let path = dir.path().join(format!("{name}.xml.bz2"));
        std::fs::write(&path, bytes).unwrap();
        let inputs = vec![path.display().to_string()];
        let go = |j: &str| {
            let out = dir.path().join(format!("{name}-{j}"));
            prepare_in_small_groups(&inputs, &out, j);
            out
        };
        let serial = go("1");
        let m = manifest(&serial);
        match name {
            "whole" => assert_eq!(m["totals"]["documents"], 400, "{m}"),
            _ => {
                assert_eq!(m["inputs"][0]["skipped"]["read_error"], 1, "{m}");
                assert!(m["totals"]["documents"].as_u64().unwrap() > 100, "{m}");
            }
        }
        for j in ["2", "3"] {
            let parallel = go(j);
            assert_eq!(
                documents_of(&serial),
                documents_of(&parallel),
                "{name}, -j {j}: documents differ"
            );
            if name == "whole" {
                assert!(
                    output_files(&serial) == output_files(&parallel),
                    "-j {j}: outputs differ"
                );
            }
        }
    }
}

/// One BGZF member (bgzip's blocked gzip): a gzip member whose extra field's `BC` subfield holds the
/// member's length minus one.
fn bgzf_member(data: &[u8]) -> Vec<u8> {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(data).unwrap();
    let body = deflate.finish().unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let mut m = vec![
        0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff, 6, 0, b'B', b'C', 2, 0,
    ];
    m.extend(((12 + 6 + body.len() + 8 - 1) as u16).to_le_bytes());
    m.extend(body);
    m.extend(crc.sum().to_le_bytes());
    m.extend((data.len() as u32).to_le_bytes());
    m
}

/// a multi-frame zstd file (as pzstd writes: a skippable frame before each frame)
/// and a BGZF gzip file decode in parallel (small groups, so that there are many) into byte-identical
/// shards and manifest as the serial decoder (`-j 1`), whole and truncated.
#[test]
fn parallel_multiframe_zstd_and_bgzf_decoding_equals_the_serial_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(write_jsonl(dir.path(), "docs.jsonl", 600, 23)).unwrap();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let (mut zst, mut gz) = (Vec::new(), Vec::new());
    for part in lines.chunks(7) {
        let part = part.concat();
        let frame = zstd::encode_all(&part[..], 3).unwrap();
        zst.extend(0x184D_2A50u32.to_le_bytes());
        zst.extend(4u32.to_le_bytes());
        zst.extend((frame.len() as u32).to_le_bytes());
        zst.extend(frame);
        gz.extend(bgzf_member(&part));
    }
    gz.extend(bgzf_member(b""));
    for (name, bytes) in [("docs.jsonl.zst", zst), ("docs.jsonl.gz", gz)] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let inputs = vec![path.display().to_string()];
        let go = |j: &str| {
            let out = dir.path().join(format!("{name}-{j}"));
            let _ = std::fs::remove_dir_all(&out);
            prepare_in_small_groups(&inputs, &out, j);
            out
        };
        let serial = go("1");
        assert_eq!(manifest(&serial)["totals"]["documents"], 600, "{name}");
        let parallel = go("3");
        assert!(
            output_files(&serial) == output_files(&parallel),
            "{name}: -j 3 outputs differ"
        );

        // Truncated: the same documents either way, and the read error counted.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let (serial, parallel) = (go("1"), go("3"));
        let m = manifest(&serial);
        assert_eq!(m["inputs"][0]["skipped"]["read_error"], 1, "{name}: {m}");
        assert!(
            m["totals"]["documents"].as_u64().unwrap() >= 300,
            "{name}: {m}"
        );
        assert_eq!(manifest(&parallel)["totals"], m["totals"], "{name}");
        assert!(
            output_files(&serial) == output_files(&parallel),
            "{name}, truncated: -j 3 outputs differ"
        );
    }
}

/// The tokenizer loads while the folder opens and the reader starts: a file that is not a tokenizer
/// is refused before the folder is touched, one that fails only in the load leaves no folder of its
/// own behind, and a new run's manifest still records the loaded vocabulary.
#[test]
fn the_tokenizer_loading_beside_the_run_fails_cleanly_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = vec![write_jsonl(dir.path(), "a.jsonl", 50, 1)
        .display()
        .to_string()];
    let good = condenser::paths::default_tokenizer();
    let mut late: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&good).unwrap()).unwrap();
    // Still a WordPiece file at a glance; only the load finds the normalizer unknown.
    late["normalizer"] = serde_json::json!({"type": "NoSuchNormalizer"});
    let late_path = dir.path().join("late.json");
    std::fs::write(&late_path, late.to_string()).unwrap();
    let early_path = dir.path().join("early.json");
    std::fs::write(&early_path, "not a tokenizer").unwrap();
    for bad in [&late_path, &early_path] {
        let out = dir.path().join("out");
        let o = prepare(&inputs, &out, &["--tokenizer", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let msg = stderr(&o);
        assert!(
            msg.contains(&format!("{}: cannot load tokenizer", bad.display())),
            "{msg}"
        );
        assert!(!out.exists(), "{} left a folder", bad.display());
    }
    // Another run's complete output is left as it was by a tokenizer that is refused at a glance.
    let other = dir.path().join("other");
    assert!(prepare(&inputs, &other, &[]).status.success());
    let before = output_files(&other);
    let o = prepare(
        &inputs,
        &other,
        &["--overwrite", "--tokenizer", early_path.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(output_files(&other), before);
    // The manifest of a new run (stored before the load ended) has the vocabulary.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(other.join("_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["tokenizer"]["vocab_size"], 30522);
    assert_eq!(
        m["tokenizer"]["special_ids"],
        serde_json::json!({"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103})
    );
}
