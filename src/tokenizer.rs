//! The project's tokenizer: a Hugging Face `tokenizer.json` run by `tokenizers` 1.0 (the read-only
//! `PipelineTokenizer`), for span segmentation, encoding and training.
//!
//! Every tokenizer call of the project goes through this module. Spans are stored without special
//! tokens and never padded or truncated by the tokenizer: the segmenter and the collator decide
//! lengths. Some published `tokenizer.json` files (the MiniLM one among them) bake in truncation and
//! padding to 128, so every encode here turns both off (`Override::Off`); where a command needs
//! truncation ([`encode_for_model`]) we cut the ids ourselves.
//!
//! `tokenizers` 1.0 reads only its own (2.0) `tokenizer.json` layout: an older file (version 1.0, as
//! bert-base-uncased's and MiniLM's are) is upgraded in memory by `canonicalize_str` first. The user's
//! file is never rewritten: manifests keep the sha256 of the file as given, and `_tokenizer.json` is a
//! copy of it. The 1.0 pipeline keeps no vocabulary map for callers, so the id <-> token tables
//! (special ids, `##` word pieces for masking, `inspect`'s top tokens) are built once here from the
//! model's and the added vocabulary.
//!
//! **ASCII fast path.** 1.0's `BertNormalizer` looks every character up in Unicode tables (its
//! no-op check and its rewrite both), which was half of the tokenizer's CPU on English text in
//! `perf`. For an uncased BERT tokenizer (the normalizer is exactly one `BertNormalizer` with
//! `clean_text` and `lowercase`), a text that is all ASCII is normalized here instead, in one pass
//! over its bytes: control bytes other than tab, newline and carriage return are dropped, those three
//! become spaces, `A-Z` are lowercased; that is what the normalizer does to ASCII (NFD, accent
//! stripping and CJK spacing leave ASCII alone). The result goes through a second pipeline built from
//! the same file without its normalizer. A text in which the first byte of an added token (`[` for
//! BERT) occurs, before or after normalizing, takes the ordinary path, so special-token matching is
//! never in question. `tests/tokenizer_versions_agree.rs` compares both paths with 0.23.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tokenizers::pipeline::{
    EncodeOptions, Override, PipelineModel, PipelineNormalizer, PipelineToken, PipelineTokenizer,
};

/// The special ids a BERT vocabulary must have, looked up by token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
}

/// A loaded tokenizer: the 1.0 pipeline and its vocabulary tables. Cheap to share across threads
/// (`&Tokenizer` is `Sync`; every encode is independent).
pub struct Tokenizer {
    pipeline: PipelineTokenizer,
    /// The ASCII fast path, where the tokenizer allows it.
    fast: Option<AsciiFast>,
    /// id -> token (added tokens over the model's, as the 0.x `get_vocab(true)` merged them).
    tokens: Vec<Option<String>>,
    ids: HashMap<String, u32>,
    plain: EncodeOptions,
    with_specials: EncodeOptions,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.ids.len())
            .finish_non_exhaustive()
    }
}

/// The same tokenizer without its normalizer, and the bytes that send a text to the ordinary path.
struct AsciiFast {
    pipeline: PipelineTokenizer,
    trigger: [bool; 256],
}

impl AsciiFast {
    /// For an uncased BERT tokenizer: `canonical` is its 1.0 `tokenizer.json` text.
    fn new(full: &PipelineTokenizer, canonical: &str) -> Option<Self> {
        match full.get_normalizers() {
            [PipelineNormalizer::Bert(b)] if b.clean_text && b.lowercase => {}
            _ => return None,
        }
        let mut json: serde_json::Value = serde_json::from_str(canonical).ok()?;
        *json.get_mut("normalizer")? = serde_json::Value::Null;
        let pipeline = match tokenizers::from_json(&json.to_string()) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("no ASCII fast path: the tokenizer without its normalizer: {e}");
                return None;
            }
        };
        let mut trigger = [false; 256];
        for token in full.get_added_vocabulary().get_vocab().keys() {
            trigger[*token.as_bytes().first()? as usize] = true;
        }
        Some(AsciiFast { pipeline, trigger })
    }

    /// `text` normalized into `buf` as the BERT normalizer would; false (and `buf` undefined) when
    /// `text` is not all ASCII or holds a trigger byte, before or after normalizing.
    fn normalize(&self, text: &str, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        buf.reserve(text.len());
        for &b in text.as_bytes() {
            if b >= 0x80 || self.trigger[b as usize] {
                return false;
            }
            let out = match b {
                b'\t' | b'\n' | b'\r' => b' ',
                // Cc: removed by clean_text (\x0b and \x0c too: controls before whitespace).
                0x00..=0x1f | 0x7f => continue,
                b'A'..=b'Z' => b + 32,
                _ => b,
            };
            if self.trigger[out as usize] {
                return false;
            }
            buf.push(out);
        }
        true
    }
}

/// Buffers reused between encodes on one thread ([`Tokenizer::encode_append`]).
#[derive(Default)]
pub struct EncodeScratch {
    tokens: Vec<PipelineToken>,
    text: Vec<u8>,
}

fn tk_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Loads `path`; truncation and padding are off for every encode.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot load tokenizer", path.display()))?;
    Tokenizer::from_json(&text).with_context(|| format!("{}: cannot load tokenizer", path.display()))
}

impl Tokenizer {
    /// A tokenizer from the text of a `tokenizer.json` (any version `canonicalize_str` upgrades).
    pub fn from_json(text: &str) -> Result<Self> {
        let (pipeline, canonical) = match tokenizers::from_json(text) {
            Ok(p) => (p, std::borrow::Cow::Borrowed(text)),
            // Not in 1.0's layout (a 0.x file says version "1.0"): upgrade it in memory.
            Err(direct) => {
                let canonical = tokenizers::canonicalize_str(text).map_err(|e| {
                    anyhow::anyhow!("{e} (reading it as a tokenizers 1.0 file: {direct})")
                })?;
                let p = tokenizers::from_json(&canonical).map_err(tk_err)?;
                (p, std::borrow::Cow::Owned(canonical))
            }
        };
        let fast = match std::env::var_os("CONDENSER_NO_ASCII_FAST_PATH") {
            Some(_) => None,
            None => AsciiFast::new(&pipeline, &canonical),
        };
        let mut ids: HashMap<String, u32> = match pipeline.get_model() {
            PipelineModel::WordPiece(m) => m.vocab().into_iter().collect(),
            #[allow(unreachable_patterns)]
            _ => anyhow::bail!(
                "not a WordPiece model: condenser needs a BERT WordPiece vocabulary ([CLS], [SEP], [MASK], ## pieces)"
            ),
        };
        // Added tokens win over the model's entry of the same text, as in the 0.x crate.
        ids.extend(pipeline.get_added_vocabulary().get_vocab());
        let size = ids.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut tokens = vec![None; size];
        for (token, &id) in &ids {
            tokens[id as usize] = Some(token.clone());
        }
        let plain = EncodeOptions {
            add_special_tokens: false,
            encode_special_tokens: false,
            padding: Override::Off,
            truncation: Override::Off,
        };
        let with_specials = EncodeOptions {
            add_special_tokens: true,
            ..plain.clone()
        };
        Ok(Tokenizer {
            pipeline,
            fast,
            tokens,
            ids,
            plain,
            with_specials,
        })
    }

    /// Distinct tokens of the vocabulary, added tokens included (the 0.x `get_vocab_size(true)`).
    pub fn vocab_size(&self) -> usize {
        self.ids.len()
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize)?.as_deref()
    }

    /// Every (token, id) of the vocabulary, added tokens included, in no particular order.
    pub fn vocab(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.ids.iter().map(|(t, &i)| (t.as_str(), i))
    }

    /// The text of `ids` (the tokenizer's decoder: `##` pieces joined, spaces between words).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.pipeline
            .decode(ids, skip_special_tokens)
            .map_err(tk_err)
            .context("decoding failed")
    }

    /// Appends the ids of `text` (no special tokens) to `out`; `scratch` holds buffers reused
    /// between calls. One serial call on this thread (the ASCII fast path where it applies).
    pub fn encode_append(
        &self,
        text: &str,
        scratch: &mut EncodeScratch,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        scratch.tokens.clear();
        let fast = self
            .fast
            .as_ref()
            .filter(|f| f.normalize(text, &mut scratch.text));
        let done = match fast {
            Some(f) => {
                // ASCII in, ASCII out.
                let normalized = std::str::from_utf8(&scratch.text).expect("ASCII bytes");
                f.pipeline
                    .encode_into(normalized, &self.plain, &mut scratch.tokens)
            }
            None => self
                .pipeline
                .encode_into(text, &self.plain, &mut scratch.tokens),
        };
        done.map_err(tk_err).context("tokenizer failed")?;
        out.extend(scratch.tokens.iter().map(|t| t.id()));
        Ok(())
    }

    /// Whether the ASCII fast path is on (see the module docs).
    pub fn has_ascii_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// The ids of many texts (no special tokens), in order, encoded on the tokenizer's own threads
    /// (`tokenizers`' pool, sized by [`set_batch_threads`]). The bare-tokenizer floor of
    /// `bench prepare`.
    pub fn encode_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .pipeline
            .encode(texts, &self.plain)
            .wait()
            .map_err(tk_err)
            .context("tokenizer failed")?;
        Ok(encs
            .iter()
            .map(|e| e.ids().iter().map(|t| t.id()).collect())
            .collect())
    }
}

/// Threads of `tokenizers`' own pool, which [`Tokenizer::encode_batch`] uses.
pub fn set_batch_threads(n: usize) {
    tokenizers::utils::parallelism::set_num_threads(n.max(1));
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
    Ok(with_specials(&encode_ids(tok, text, false)?, special, max_len))
}

/// Encodes one text; `special` adds [CLS]/[SEP] as the tokenizer's post-processor says.
pub fn encode_ids(tok: &Tokenizer, text: &str, special: bool) -> Result<Vec<u32>> {
    if !special {
        let mut ids = Vec::new();
        tok.encode_append(text, &mut EncodeScratch::default(), &mut ids)?;
        return Ok(ids);
    }
    let opts = &tok.with_specials;
    let mut out = Vec::new();
    tok.pipeline
        .encode_into(text, opts, &mut out)
        .map_err(tk_err)
        .context("tokenizer failed")?;
    Ok(out.into_iter().map(|t| t.id()).collect())
}
