//! Loading a Hugging Face `tokenizer.json` for span segmentation and encoding.
//!
//! Spans are stored without special tokens and never padded or truncated by the tokenizer: the
//! segmenter and the collator decide lengths. Some published `tokenizer.json` files (the MiniLM one
//! among them) bake in truncation and padding to 128, so both are switched off here.

use std::path::Path;

use anyhow::{Context, Result};
use tokenizers::Tokenizer;

/// The special ids a BERT vocabulary must have, looked up by token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// Loads `path` with truncation and padding turned off.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let mut tok = Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{}: cannot load tokenizer", path.display()))?;
    tok.with_truncation(None)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{}: cannot turn truncation off", path.display()))?;
    tok.with_padding(None);
    Ok(tok)
}

/// Looks up [PAD], [UNK], [CLS], [SEP] and [MASK]; a vocabulary lacking one is an error naming it.
pub fn special_ids(tok: &Tokenizer) -> Result<SpecialIds> {
    let id = |t: &str| {
        tok.token_to_id(t).with_context(|| {
            format!("tokenizer has no {t} token (a BERT WordPiece vocabulary is expected)")
        })
    };
    Ok(SpecialIds {
        pad: id("[PAD]")?,
        unk: id("[UNK]")?,
        cls: id("[CLS]")?,
        sep: id("[SEP]")?,
        mask: id("[MASK]")?,
    })
}

/// `[CLS] ids [SEP]` with the ids cut to fit `max_len` (the model's input layout for encoding).
pub fn with_specials(ids: &[u32], special: &SpecialIds, max_len: usize) -> Vec<i64> {
    let body = &ids[..ids.len().min(max_len.saturating_sub(2))];
    let mut v = Vec::with_capacity(body.len() + 2);
    v.push(special.cls as i64);
    v.extend(body.iter().map(|&i| i as i64));
    v.push(special.sep as i64);
    v
}

/// Tokenizes a text for encoding: `[CLS] text [SEP]`, truncated to `max_len` (as a Hugging Face BERT
/// tokenizer does with truncation to max_length).
pub fn encode_for_model(
    tok: &Tokenizer,
    special: &SpecialIds,
    text: &str,
    max_len: usize,
) -> Result<Vec<i64>> {
    Ok(with_specials(
        &encode_ids(tok, text, false)?,
        special,
        max_len,
    ))
}

/// Encodes one text; `special` adds [CLS]/[SEP] as the tokenizer's post-processor says.
pub fn encode_ids(tok: &Tokenizer, text: &str, special: bool) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, special)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("tokenizer failed")?;
    Ok(enc.get_ids().to_vec())
}
