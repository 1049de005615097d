//! `condenser inspect`: counts against an independent count of a synthetic corpus, verification of
//! damaged shard sets, JSON against text, pyarrow's view of the same shards, chaining after prepare.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use common::*;
use condenser::prepare::segment::Segmented;
use condenser::shards::{ShardWriter, WriterConfig};

/// Writes two shards of known content and returns the expected statistics.
fn synthetic(dir: &Path) -> serde_json::Value {
    let mut span_len = BTreeMap::<u64, u64>::new();
    let mut per_doc = BTreeMap::<u64, u64>::new();
    let mut freq = HashMap::<u32, u64>::new();
    let (mut spans, mut tokens, mut unk, mut under_two) = (0u64, 0u64, 0u64, 0u64);
    for shard in 0..2 {
        let mut w = ShardWriter::create(
            &dir.join(format!("shard-{shard:05}.parquet")),
            WriterConfig::default(),
        )
        .unwrap();
        for i in (shard * 150)..(shard * 150 + 150) {
            let n = 1 + (i % 4) as usize;
            let mut doc = Vec::new();
            for j in 0..n {
                let len = 1 + (i * 7 + j * 13) % 126;
                let mut span: Vec<u32> =
                    (0..len).map(|k| 1000 + ((i + j + k) % 50) as u32).collect();
                if i % 10 == 0 && j == 0 {
                    span[0] = 100; // [UNK]
                }
                *span_len.entry(len as u64).or_default() += 1;
                for &t in &span {
                    *freq.entry(t).or_default() += 1;
                    unk += (t == 100) as u64;
                }
                tokens += len as u64;
                doc.push(span);
            }
            spans += n as u64;
            under_two += (n < 2) as u64;
            *per_doc.entry(n as u64).or_default() += 1;
            let num_tokens = doc.iter().map(Vec::len).sum();
            w.push(Segmented {
                doc_id: format!("doc-{i}"),
                spans: doc,
                num_tokens,
            })
            .unwrap();
        }
        w.close().unwrap();
    }
    let top = freq
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(t, c)| (*t, *c))
        .unwrap();
    serde_json::json!({
        "documents": 300, "spans": spans, "tokens": tokens, "unk": unk, "under_two": under_two,
        "span_len": span_len, "per_doc": per_doc, "top_id": top.0, "top_count": top.1,
    })
}

fn inspect_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["inspect", "--json"];
    all.extend(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn counts_match_an_independent_count() {
    let dir = tempfile::tempdir().unwrap();
    let want = synthetic(dir.path());
    let r = inspect_json(&[dir.path().to_str().unwrap(), "--samples", "5"]);
    assert_eq!(r["shards"], 2);
    for (ours, theirs) in [
        ("documents", "documents"),
        ("spans", "spans"),
        ("tokens", "tokens"),
        ("unk_tokens", "unk"),
        ("documents_under_two_spans", "under_two"),
    ] {
        assert_eq!(r[ours], want[theirs], "{ours}");
    }
    let hist = |v: &serde_json::Value| -> BTreeMap<String, u64> {
        serde_json::from_value(v.clone()).unwrap()
    };
    assert_eq!(
        hist(&r["span_length"]["histogram"]),
        hist(&want["span_len"])
    );
    assert_eq!(
        hist(&r["spans_per_document"]["histogram"]),
        hist(&want["per_doc"])
    );
    assert_eq!(r["spans_per_document"]["max"], 4);
    assert_eq!(r["top_tokens"][0]["id"], want["top_id"]);
    assert_eq!(r["top_tokens"][0]["count"], want["top_count"]);
    assert_eq!(r["samples"].as_array().unwrap().len(), 5);
    // The same seed draws the same samples; another seed others.
    let again = inspect_json(&[dir.path().to_str().unwrap(), "--samples", "5"]);
    assert_eq!(r["samples"], again["samples"]);
    let other = inspect_json(&[
        dir.path().to_str().unwrap(),
        "--samples",
        "5",
        "--seed",
        "7",
    ]);
    assert_ne!(r["samples"], other["samples"]);
}

fn prepared(dir: &Path) -> std::path::PathBuf {
    let inputs = [
        write_jsonl(dir, "a.jsonl", 300, 1),
        write_tsv(dir, "b.tsv", 300, 2),
    ];
    let out = dir.join("shards");
    let o = run(&[
        "prepare",
        "--out",
        out.to_str().unwrap(),
        "--shard-size",
        "40KB",
        inputs[0].to_str().unwrap(),
        inputs[1].to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let o = run(&["inspect", "--verify", dir.to_str().unwrap()]);
    (o.status.code(), stderr(&o))
}

#[test]
fn verify_names_each_damaged_shard() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    assert_eq!(verify(&out).0, Some(0));
    let shards: Vec<String> = manifest(&out)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect();
    assert!(shards.len() >= 3, "{shards:?}");
    let backup = |name: &str| std::fs::read(out.join(name)).unwrap();

    // A truncated shard.
    let original = backup(&shards[0]);
    std::fs::write(out.join(&shards[0]), &original[..original.len() - 100]).unwrap();
    let (code, err) = verify(&out);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&shards[0])
            && (err.contains("bytes, the manifest says") || err.contains("unreadable")),
        "{err}"
    );
    std::fs::write(out.join(&shards[0]), &original).unwrap();

    // One flipped byte in the middle of a shard.
    let mut flipped = backup(&shards[1]);
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(out.join(&shards[1]), &flipped).unwrap();
    let (code, err) = verify(&out);
    assert_eq!(code, Some(2));
    assert!(err.contains(&shards[1]) && err.contains("sha256"), "{err}");
    flipped[mid] ^= 0x40;
    std::fs::write(out.join(&shards[1]), &flipped).unwrap();
    assert_eq!(verify(&out).0, Some(0), "restored");

    // A manifest whose count of pairable documents (the coCondenser epoch length) is wrong.
    let manifest_path = out.join("_manifest.json");
    let saved = std::fs::read(&manifest_path).unwrap();
    let mut m = manifest(&out);
    let n = m["shards"][0]["pairable"]
        .as_u64()
        .expect("pairable is counted");
    m["shards"][0]["pairable"] = (n + 1).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let (code, err) = verify(&out);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&shards[0]) && err.contains("two or more spans, the manifest says"),
        "{err}"
    );
    std::fs::write(&manifest_path, saved).unwrap();

    // A missing shard, and a file the manifest does not know.
    std::fs::rename(out.join(&shards[2]), dir.path().join("moved.parquet")).unwrap();
    let (code, err) = verify(&out);
    assert_eq!(code, Some(2));
    assert!(err.contains(&shards[2]) && err.contains("missing"), "{err}");
    std::fs::rename(dir.path().join("moved.parquet"), out.join("stray.parquet")).unwrap();
    let (_, err) = verify(&out);
    assert!(
        err.contains("stray.parquet") && err.contains("does not know"),
        "{err}"
    );
}

#[test]
fn json_and_text_agree_and_stdin_chains_after_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let j = inspect_json(&[out.to_str().unwrap()]);
    let o = run(&["inspect", out.to_str().unwrap()]);
    let text = stdout(&o);
    let field = |name: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{text}"));
        line[name.len()..]
            .trim()
            .replace(',', "")
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for key in ["documents", "spans", "tokens", "shards"] {
        assert_eq!(j[key].as_u64().unwrap(), field(key), "{key}");
    }
    let m = manifest(&out);
    assert_eq!(j["documents"], m["totals"]["documents"]);
    assert_eq!(j["tokens"], m["totals"]["tokens"]);
    assert_eq!(j["inputs"].as_array().unwrap().len(), 2);
    // `prepare ... | inspect -`: shard paths on stdin.
    let listed = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| out.join(s["file"].as_str().unwrap()).display().to_string() + "\n")
        .collect::<String>();
    let mut child = condenser()
        .args(["inspect", "--json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), listed.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let from_stdin: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_stdin["tokens"], j["tokens"]);
}

#[test]
fn counts_agree_with_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let script = "import sys, glob, pyarrow.parquet as pq, pyarrow.compute as pc, json\n\
        t = pq.ParquetDataset(sorted(glob.glob(sys.argv[1] + '/shard-*.parquet'))).read()\n\
        spans = pc.list_value_length(t['spans'])\n\
        flat = pc.list_flatten(t['spans'])\n\
        print(json.dumps({'documents': t.num_rows, 'spans': pc.sum(spans).as_py(), 'tokens': len(pc.list_flatten(flat)), 'num_tokens': pc.sum(t['num_tokens']).as_py()}))";
    let py = python_json(script, &[out.as_os_str()]);
    let j = inspect_json(&[out.to_str().unwrap()]);
    assert_eq!(py["documents"], j["documents"]);
    assert_eq!(py["spans"], j["spans"]);
    assert_eq!(py["tokens"], j["tokens"]);
    assert_eq!(py["num_tokens"], j["tokens"]);
}

#[test]
fn plot_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let png = dir.path().join("h.png");
    let o = run(&[
        "inspect",
        out.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 10_000,
        "a nearly empty picture: {} bytes",
        bytes.len()
    );
}

/// A manifest entry that points outside its folder (`../x.parquet`, `/etc/passwd`) is refused, naming
/// the manifest and the entry, with or without --verify; a merged folder's `part-K-of-N/shard` is not.
#[test]
fn manifest_entries_outside_the_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let original = std::fs::read(out.join("_manifest.json")).unwrap();
    let first = manifest(&out)["shards"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    // A real shard outside the folder: without the check it is read as if it were listed.
    std::fs::copy(out.join(&first), dir.path().join("outside.parquet")).unwrap();
    for entry in ["../outside.parquet", "/etc/passwd", "./x.parquet", ""] {
        let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
        m["shards"][0]["file"] = entry.into();
        std::fs::write(out.join("_manifest.json"), m.to_string()).unwrap();
        for extra in [None, Some("--verify")] {
            let mut a = vec!["inspect", out.to_str().unwrap()];
            a.extend(extra);
            let o = run(&a);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{entry} {extra:?}: {err}");
            assert!(
                err.contains(&out.join("_manifest.json").display().to_string())
                    && err.contains(&format!("{entry:?}"))
                    && err.contains("not a file name inside"),
                "{entry} {extra:?}: {err}"
            );
        }
    }
    // A path inside a subfolder (what `prepare --merge` writes) is fine.
    std::fs::create_dir(out.join("part-0-of-1")).unwrap();
    std::fs::rename(out.join(&first), out.join("part-0-of-1").join(&first)).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&original).unwrap();
    m["shards"][0]["file"] = format!("part-0-of-1/{first}").into();
    std::fs::write(out.join("_manifest.json"), m.to_string()).unwrap();
    let (code, err) = verify(&out);
    assert_eq!(code, Some(0), "{err}");
}

/// An unfinished folder (`complete: false`: prepare was interrupted or is still running) says so, in
/// the text, the log and the JSON (`complete`), with and without --verify.
#[test]
fn an_unfinished_folder_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = prepared(dir.path());
    let r = inspect_json(&[out.to_str().unwrap()]);
    assert_eq!(r["complete"], true);
    let mut m = manifest(&out);
    m["complete"] = false.into();
    std::fs::write(out.join("_manifest.json"), m.to_string()).unwrap();
    let r = inspect_json(&[out.to_str().unwrap()]);
    assert_eq!(r["complete"], false);
    let r = inspect_json(&[out.to_str().unwrap(), "--verify"]);
    assert_eq!(r["complete"], false);
    for extra in [None, Some("--verify")] {
        let mut a = vec!["inspect", out.to_str().unwrap()];
        a.extend(extra);
        let o = run(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).starts_with("UNFINISHED")
                && stdout(&o).contains("prepare has not finished")
                && stderr(&o).contains("prepare has not finished"),
            "{extra:?}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
    }
}

#[test]
fn a_missing_path_is_an_error_not_empty_statistics() {
    let o = run(&["inspect", "/nonexistent/condenser-shards"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/condenser-shards: no such file or folder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "");
}
