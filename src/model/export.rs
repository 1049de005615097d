//! The files other tools read beside the weights of a saved folder, so it loads as it was trained:
//! transformers' tokenizer files (`tokenizer_config.json` with the model's length limit,
//! `special_tokens_map.json`, `vocab.txt` for slow tokenizers and older tools) and sentence-transformers'
//! module files (CLS pooling, dot-product similarity), and a `config.json` that says what is true of this
//! checkpoint rather than of the warm start it came from.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::config::BertConfig;
use super::retriever::Similarity;

/// BERT's special tokens, under the names transformers gives them.
const SPECIAL: [(&str, &str); 5] = [
    ("cls_token", "[CLS]"),
    ("sep_token", "[SEP]"),
    ("pad_token", "[PAD]"),
    ("mask_token", "[MASK]"),
    ("unk_token", "[UNK]"),
];

/// `config.json`: the model's settings as `BertForMaskedLM`, without the warm start's `_name_or_path` and
/// `transformers_version` (a folder written by condenser, not by that transformers release).
/// `with_mlm_head`: whether the weights saved beside it include the MLM head (`cls.*`); transformers
/// calls a `BertForMaskedLM` without one corrupted, so a folder without it declares `BertModel`.
pub fn config_json(cfg: &BertConfig, with_mlm_head: bool) -> Value {
    let mut v = serde_json::to_value(cfg).expect("a config serializes");
    if let Some(o) = v.as_object_mut() {
        o.remove("_name_or_path");
        o.remove("transformers_version");
        let architecture = match with_mlm_head {
            true => "BertForMaskedLM",
            false => "BertModel",
        };
        o.insert("architectures".into(), json!([architecture]));
        o.insert("model_type".into(), json!("bert"));
        o.insert("condenser_version".into(), json!(env!("CARGO_PKG_VERSION")));
    }
    v
}

/// (relative path, bytes) of every file written beside the weights, from the tokenizer's JSON and the
/// model's settings.
pub fn companion_files(cfg: &BertConfig, tokenizer_json: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let tok: Value =
        serde_json::from_slice(tokenizer_json).context("tokenizer.json is not valid JSON")?;
    let lower = tok["normalizer"]["lowercase"].as_bool().unwrap_or(false);
    let vocab = tok["model"]["vocab"].as_object();
    let max_len = cfg.max_position_embeddings;
    let present = |t: &str| vocab.is_none_or(|v| v.contains_key(t));
    let specials: serde_json::Map<String, Value> = SPECIAL
        .iter()
        .filter(|(_, t)| present(t))
        .map(|(k, t)| (k.to_string(), json!(t)))
        .collect();
    let mut tokenizer_config = json!({
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": lower,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": true,
        "tokenize_chinese_chars": true,
        "strip_accents": null,
    });
    for (k, v) in &specials {
        tokenizer_config[k] = v.clone();
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON serializes");
    let mut files = vec![
        (
            "tokenizer_config.json".to_string(),
            pretty(&tokenizer_config),
        ),
        (
            "special_tokens_map.json".to_string(),
            pretty(&Value::Object(specials)),
        ),
    ];
    // vocab.txt: the WordPiece vocabulary, one token a line at its id's position.
    if let Some(v) = vocab {
        let mut by_id: Vec<Option<&str>> = vec![None; v.len()];
        for (token, id) in v {
            let id = id
                .as_u64()
                .context("tokenizer.json: a vocabulary id is not a number")?;
            if let Some(slot) = by_id.get_mut(id as usize) {
                *slot = Some(token);
            }
        }
        if by_id.iter().all(Option::is_some) {
            let mut text = String::new();
            for t in by_id.into_iter().flatten() {
                text.push_str(t);
                text.push('\n');
            }
            files.push(("vocab.txt".to_string(), text.into_bytes()));
        }
    }
    // sentence-transformers: the encoder, then CLS pooling; scores are dot products, as trained.
    let max_seq_length = max_len.min(512);
    files.extend(
        sentence_transformers_files(Similarity::Dot)
            .into_iter()
            .map(|(n, b)| (n.to_string(), b)),
    );
    files.push((
        "sentence_bert_config.json".to_string(),
        pretty(&json!({"max_seq_length": max_seq_length, "do_lower_case": false})),
    ));
    files.push((
        "1_Pooling/config.json".to_string(),
        pretty(&json!({
            "word_embedding_dimension": cfg.hidden_size,
            "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": false,
            "include_prompt": true
        })),
    ));
    Ok(files)
}

/// sentence-transformers' `modules.json` and `config_sentence_transformers.json` for a model scored by
/// `similarity`: the encoder and CLS pooling, then for cosine a `Normalize` module (unit vectors, what
/// `condenser encode` writes for such a model) and `similarity_fn_name` "cosine".
pub fn sentence_transformers_files(similarity: Similarity) -> Vec<(&'static str, Vec<u8>)> {
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON serializes");
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if similarity == Similarity::Cos {
        modules.push(
            json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}),
        );
    }
    vec![
        ("modules.json", pretty(&Value::Array(modules))),
        (
            "config_sentence_transformers.json",
            pretty(&json!({
                "__version__": {"condenser": env!("CARGO_PKG_VERSION")},
                "prompts": {},
                "default_prompt_name": null,
                "similarity_fn_name": similarity.st_name()
            })),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BertConfig {
        serde_json::from_value(json!({
            "vocab_size": 4, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 8, "max_position_embeddings": 40,
            "_name_or_path": "nreimers/MiniLM", "transformers_version": "4.8.2"
        }))
        .unwrap()
    }

    #[test]
    fn config_json_drops_the_warm_starts_provenance() {
        let v = config_json(&cfg(), true);
        assert!(v.get("_name_or_path").is_none() && v.get("transformers_version").is_none());
        assert_eq!(v["architectures"][0], "BertForMaskedLM");
        assert_eq!(v["hidden_size"], 8);
    }

    #[test]
    fn a_folder_without_the_mlm_head_declares_bert_model() {
        assert_eq!(config_json(&cfg(), false)["architectures"][0], "BertModel");
    }

    #[test]
    fn companion_files_from_a_wordpiece_tokenizer() {
        let tok = json!({
            "normalizer": {"type": "BertNormalizer", "lowercase": true},
            "model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "hello": 3}}
        });
        let files = companion_files(&cfg(), &serde_json::to_vec(&tok).unwrap()).unwrap();
        let get =
            |name: &str| -> Vec<u8> { files.iter().find(|(n, _)| n == name).unwrap().1.clone() };
        let tc: Value = serde_json::from_slice(&get("tokenizer_config.json")).unwrap();
        assert_eq!(tc["model_max_length"], 40);
        assert_eq!(tc["do_lower_case"], true);
        assert_eq!(tc["cls_token"], "[CLS]");
        // Tokens the vocabulary lacks are not declared.
        assert!(tc.get("mask_token").is_none());
        assert_eq!(get("vocab.txt"), b"[PAD]\n[UNK]\n[CLS]\nhello\n");
        let pooling: Value = serde_json::from_slice(&get("1_Pooling/config.json")).unwrap();
        assert_eq!(pooling["pooling_mode_cls_token"], true);
        assert_eq!(pooling["word_embedding_dimension"], 8);
    }
}
