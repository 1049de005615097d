//! The model card of `train` and `finetune` outputs (`OUT/final/README.md`): YAML front matter in the
//! Hugging Face convention, read back by huggingface_hub's own parser from the set-up venv, and a body
//! that names the command, the data with its count and the steps.

mod common;

use std::path::Path;

use common::*;

/// huggingface_hub's reading of the card's metadata, and its body.
fn read_card(folder: &Path) -> (serde_json::Value, String) {
    let script = r#"
import json, sys
from huggingface_hub import ModelCard
card = ModelCard.load(sys.argv[1] + "/README.md")
print(json.dumps({"data": card.data.to_dict(), "text": card.text}))
"#;
    let v = python_json(script, &[folder.as_os_str()]);
    (v["data"].clone(), v["text"].as_str().unwrap().to_string())
}

#[test]
fn train_and_finetune_write_a_model_card_with_front_matter() {
    let dir = tempfile::tempdir().unwrap();
    let init = tiny_model(dir.path());
    // A warm start saved by transformers from the hub names itself in config.json: its base_model.
    let cfg_path = init.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["_name_or_path"] = "someone/tiny-bert".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let shards = small_shards(dir.path(), 40, 3);
    let pre = dir.path().join("pre");
    train_tiny(
        &shards,
        &init,
        &pre,
        &["optim.max_steps=2", "data.batch_size=4"],
    );
    let (meta, text) = read_card(&pre.join("final"));
    assert_eq!(meta["library_name"], "transformers", "{meta}");
    assert_eq!(meta["pipeline_tag"], "feature-extraction", "{meta}");
    assert_eq!(meta["base_model"], "someone/tiny-bert", "{meta}");
    let tags: Vec<String> = serde_json::from_value(meta["tags"].clone()).unwrap();
    assert!(tags.contains(&"condenser".to_string()), "{tags:?}");
    assert!(text.contains("- Stage: `condenser`"), "{text}");
    assert!(text.contains("`shards`: 40 documents"), "{text}");
    assert!(text.contains("- Steps: 2 of 2 optimizer steps"), "{text}");
    assert!(text.contains("condenser train"), "{text}");

    // Fine-tuning from that checkpoint: a folder condenser wrote has no hub name, so no base_model.
    let train = write_tevatron(dir.path(), 12, 3, 5);
    let ft = dir.path().join("ft");
    let model = pre.join("final");
    let o = run(&[
        "finetune",
        train.to_str().unwrap(),
        "--init",
        model.to_str().unwrap(),
        "--out",
        ft.to_str().unwrap(),
        "--device",
        "cpu",
        "--set",
        "optim.max_steps=2",
        "--set",
        "data.batch_size=4",
        "--set",
        "data.train_n_passages=2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (meta, text) = read_card(&ft.join("final"));
    assert_eq!(meta["library_name"], "sentence-transformers", "{meta}");
    assert_eq!(meta["pipeline_tag"], "feature-extraction", "{meta}");
    assert!(meta.get("base_model").is_none(), "{meta}");
    assert!(
        text.contains("`train.jsonl`: 12 training queries"),
        "{text}"
    );
    assert!(
        text.contains(&format!("- Initialised from: `{}`", model.display())),
        "{text}"
    );
    assert!(text.contains("stage = \"finetune\""), "{text}");
}
