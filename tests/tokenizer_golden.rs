//! The pinned bert-base-uncased tokenizer gives the golden ids of DATA.md.

use condenser::{paths, tokenizer};

fn load() -> tokenizer::Tokenizer {
    let path = paths::default_tokenizer();
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (pipelines/setup.sh) first",
        path.display()
    );
    tokenizer::load(&path).unwrap()
}

#[test]
fn golden_ids_with_special_tokens() {
    let tok = load();
    let ids = tokenizer::encode_ids(
        &tok,
        "Condenser pre-trains dense retrievers on Wikipedia and MS MARCO.",
        true,
    )
    .unwrap();
    assert_eq!(
        ids,
        [
            101, 24707, 12325, 2099, 3653, 1011, 4499, 9742, 12850, 2869, 2006, 16948, 1998, 5796,
            8879, 1012, 102
        ]
    );
}

#[test]
fn special_ids_are_berts() {
    let tok = load();
    let s = tokenizer::special_ids(&tok).unwrap();
    assert_eq!(
        (s.pad, s.unk, s.cls, s.sep, s.mask),
        (0, 100, 101, 102, 103)
    );
    assert_eq!(tok.vocab_size(), 30522);
}

#[test]
fn baked_in_truncation_and_padding_are_off() {
    // The MiniLM tokenizer.json truncates and pads to 128; spans must be neither.
    let tok = load();
    let long = "word ".repeat(300);
    assert_eq!(
        tokenizer::encode_ids(&tok, &long, false).unwrap().len(),
        300
    );
    let short = tokenizer::encode_ids(&tok, "hello", false).unwrap();
    assert_eq!(short, [7592]);
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let err = tokenizer::load(std::path::Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("/nonexistent/tokenizer.json"), "{msg}");
}

#[test]
fn a_tokenizer_json_in_the_1_0_layout_loads_as_its_0_x_original() {
    // bert-base-uncased's file is 0.x's layout (version "1.0"), upgraded in memory on load; the same
    // tokenizer saved in 1.0's layout ("2.0") is read as it is, and must be the same tokenizer.
    let original = std::fs::read_to_string(paths::default_tokenizer()).unwrap();
    assert!(original.contains("\"version\": \"1.0\"") || original.contains("\"version\":\"1.0\""));
    let upgraded = tokenizers::canonicalize_str(&original).unwrap();
    let (old, new) = (
        tokenizer::Tokenizer::from_json(&original).unwrap(),
        tokenizer::Tokenizer::from_json(&upgraded).unwrap(),
    );
    assert!(old.has_ascii_fast_path() && new.has_ascii_fast_path());
    assert_eq!(old.vocab_size(), new.vocab_size());
    assert_eq!(
        tokenizer::special_ids(&old).unwrap(),
        tokenizer::special_ids(&new).unwrap()
    );
    for text in [
        "Condenser pre-trains dense retrievers on Wikipedia and MS MARCO.",
        "Crème brûlée, 東京, naïve [MASK] façade \u{1F600} x\u{0301}",
        "[CLS] a [SEP] b",
    ] {
        for special in [false, true] {
            assert_eq!(
                tokenizer::encode_ids(&old, text, special).unwrap(),
                tokenizer::encode_ids(&new, text, special).unwrap(),
                "{text:?}"
            );
        }
    }
    // Not a tokenizer at all: a clear error, not a panic.
    let err = tokenizer::Tokenizer::from_json("{\"version\": \"2.0\"}").unwrap_err();
    assert!(!format!("{err:#}").is_empty());
}
