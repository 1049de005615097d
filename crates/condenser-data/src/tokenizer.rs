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
//!
//! **Unicode tables.** 1.0 classifies 143 code points differently from 0.23 (punctuation added in
//! Unicode 10 and later, and U+166D, U+111C9): a word holding one was one [UNK] for 0.23 and three
//! tokens for 1.0. Such characters are replaced by stand-ins of 0.23's class before encoding
//! ([`as_0_23_sees_it`]), so the ids stay those the models were trained on.

use std::borrow::Cow;
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
    /// The pipeline of `canonical` (a 1.0 `tokenizer.json` text) without its normalizer, when that
    /// normalizer is a `BertNormalizer` (else there is no fast path to build). Built while the full
    /// pipeline is (see [`Tokenizer::from_json`]); [`AsciiFast::new`] decides whether it is used.
    fn without_normalizer(canonical: &str) -> Option<PipelineTokenizer> {
        let mut json: serde_json::Value = serde_json::from_str(canonical).ok()?;
        let normalizer = json.get_mut("normalizer")?;
        if normalizer.get("type")?.as_str()? != "BertNormalizer" {
            return None;
        }
        *normalizer = serde_json::Value::Null;
        match tokenizers::from_json(&json.to_string()) {
            Ok(p) => Some(p),
            Err(e) => {
                log::debug!("no ASCII fast path: the tokenizer without its normalizer: {e}");
                None
            }
        }
    }

    /// For an uncased BERT tokenizer `full`: `pipeline` is [`AsciiFast::without_normalizer`]'s.
    fn new(full: &PipelineTokenizer, pipeline: Option<PipelineTokenizer>) -> Option<Self> {
        match full.get_normalizers() {
            [PipelineNormalizer::Bert(b)] if b.clean_text && b.lowercase => {}
            _ => return None,
        }
        let pipeline = pipeline?;
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

/// Code points that 1.0's pre-tokenizer splits off as punctuation and 0.23's keeps inside a word
/// (punctuation added in Unicode 10 and later, which 0.23's tables predate); found by encoding
/// `a{c}b` with both crates for every code point (issue 25's differential test). Sorted.
const PUNCT_IN_1_0_ONLY: &[u32] = &[
    0x061D, 0x09FD, 0x0A76, 0x0C77, 0x0C84, 0x1B4E, 0x1B4F, 0x1B7D, 0x1B7E, 0x1B7F, 0x2E43, 0x2E44,
    0x2E45, 0x2E46, 0x2E47, 0x2E48, 0x2E49, 0x2E4A, 0x2E4B, 0x2E4C, 0x2E4D, 0x2E4E, 0x2E4F, 0x2E52,
    0x2E53, 0x2E54, 0x2E55, 0x2E56, 0x2E57, 0x2E58, 0x2E59, 0x2E5A, 0x2E5B, 0x2E5C, 0x2E5D,
    0x10D6E, 0x10EAD, 0x10ED0, 0x10F55, 0x10F56, 0x10F57, 0x10F58, 0x10F59, 0x10F86, 0x10F87,
    0x10F88, 0x10F89, 0x113D4, 0x113D5, 0x113D7, 0x113D8, 0x1144B, 0x1144C, 0x1144D, 0x1144E,
    0x1144F, 0x1145A, 0x1145B, 0x1145D, 0x11660, 0x11661, 0x11662, 0x11663, 0x11664, 0x11665,
    0x11666, 0x11667, 0x11668, 0x11669, 0x1166A, 0x1166B, 0x1166C, 0x116B9, 0x1183B, 0x11944,
    0x11945, 0x11946, 0x119E2, 0x11A3F, 0x11A40, 0x11A41, 0x11A42, 0x11A43, 0x11A44, 0x11A45,
    0x11A46, 0x11A9A, 0x11A9B, 0x11A9C, 0x11A9E, 0x11A9F, 0x11AA0, 0x11AA1, 0x11AA2, 0x11B00,
    0x11B01, 0x11B02, 0x11B03, 0x11B04, 0x11B05, 0x11B06, 0x11B07, 0x11B08, 0x11B09, 0x11BE1,
    0x11C41, 0x11C42, 0x11C43, 0x11C44, 0x11C45, 0x11C70, 0x11C71, 0x11EF7, 0x11EF8, 0x11F43,
    0x11F44, 0x11F45, 0x11F46, 0x11F47, 0x11F48, 0x11F49, 0x11F4A, 0x11F4B, 0x11F4C, 0x11F4D,
    0x11F4E, 0x11F4F, 0x11FFF, 0x12FF1, 0x12FF2, 0x16D6D, 0x16D6E, 0x16D6F, 0x16E97, 0x16E98,
    0x16E99, 0x16E9A, 0x16FE2, 0x1E5FF, 0x1E95E, 0x1E95F,
];
/// The reverse: punctuation for 0.23, not for 1.0 (U+166D became a symbol in Unicode 12).
const PUNCT_IN_0_23_ONLY: &[u32] = &[0x166D, 0x111C9];
/// Stand-ins 1.0 treats as 0.23 treated the characters above, neither in the BERT vocabulary, both
/// left alone by the normalizer: U+166D is a word character for 1.0, U+2E43 punctuation.
const WORD_STAND_IN: char = '\u{166D}';
const PUNCT_STAND_IN: char = '\u{2E43}';

/// `text` with the characters whose class differs between the two crates' Unicode tables replaced by
/// stand-ins of the class 0.23 gave them, so 1.0 gives 0.23's ids (the ids every shard and model was
/// made with); borrowed when there is none (always for ASCII).
fn as_0_23_sees_it(text: &str) -> Cow<'_, str> {
    let differs = |c: char| {
        let cp = c as u32;
        cp >= 0x61D
            && (PUNCT_IN_1_0_ONLY.binary_search(&cp).is_ok() || PUNCT_IN_0_23_ONLY.contains(&cp))
    };
    if text.is_ascii() || !text.chars().any(differs) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| match c as u32 {
                cp if PUNCT_IN_0_23_ONLY.contains(&cp) => PUNCT_STAND_IN,
                cp if cp >= 0x61D && PUNCT_IN_1_0_ONLY.binary_search(&cp).is_ok() => WORD_STAND_IN,
                _ => c,
            })
            .collect(),
    )
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

/// Whether `text` says it is a `tokenizer.json` of 1.0's layout (`"version": "2.0"`), which
/// `tokenizers::from_json` reads as it is; older ones are upgraded first.
fn in_1_0_layout(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        version: Option<String>,
    }
    serde_json::from_str::<Version>(text).is_ok_and(|v| v.version.as_deref() == Some("2.0"))
}

/// Loads `path`; truncation and padding are off for every encode.
pub fn load(path: &Path) -> Result<Tokenizer> {
    load_text(path, &read_json(path)?)
}

/// The text of the `tokenizer.json` at `path` ([`load`]'s first half).
pub fn read_json(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot load tokenizer", path.display()))
}

/// The tokenizer of `text`, read from `path` ([`load`]'s second half, the slow one: 0.06-0.1 s).
pub fn load_text(path: &Path, text: &str) -> Result<Tokenizer> {
    Tokenizer::from_json(text).with_context(|| format!("{}: cannot load tokenizer", path.display()))
}

/// Whether `text` reads as a WordPiece `tokenizer.json` (a JSON object whose model says `WordPiece`
/// and has a vocabulary), in a few ms: what `prepare` checks before it opens its folder while the
/// tokenizer loads; a file that fails it is loaded first, so its error comes before any change.
pub fn looks_like_word_piece(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct File {
        model: Model,
    }
    #[derive(serde::Deserialize)]
    struct Model {
        #[serde(rename = "type")]
        kind: String,
        #[allow(dead_code)] // present, not read
        vocab: serde::de::IgnoredAny,
    }
    serde_json::from_str::<File>(text).is_ok_and(|f| f.model.kind == "WordPiece")
}

impl Tokenizer {
    /// A tokenizer from the text of a `tokenizer.json` (any version `canonicalize_str` upgrades).
    pub fn from_json(text: &str) -> Result<Self> {
        // Not in 1.0's layout (a 0.x file says version "1.0"): upgrade it in memory.
        let canonical = match in_1_0_layout(text) {
            true => Cow::Borrowed(text),
            false => Cow::Owned(tokenizers::canonicalize_str(text).map_err(|e| {
                let direct = tokenizers::from_json(text).err();
                match direct {
                    Some(direct) => {
                        anyhow::anyhow!("{e} (reading it as a tokenizers 1.0 file: {direct})")
                    }
                    None => anyhow::anyhow!("{e}"),
                }
            })?),
        };
        let want_fast = std::env::var_os("CONDENSER_NO_ASCII_FAST_PATH").is_none();
        // The two pipelines are built at once (each builds its vocabulary's double-array trie: most of
        // a load's 0.1 s, which every `prepare` waits for before its first span).
        let (pipeline, without_normalizer) = std::thread::scope(|s| {
            let fast = want_fast.then(|| s.spawn(|| AsciiFast::without_normalizer(&canonical)));
            let full = tokenizers::from_json(&canonical).map_err(tk_err);
            let fast = fast.and_then(|h| h.join().expect("building the ASCII fast path panicked"));
            full.map(|p| (p, fast))
        })?;
        let fast = AsciiFast::new(&pipeline, without_normalizer);
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
        let text = &*as_0_23_sees_it(text);
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
    Ok(with_specials(
        &encode_ids(tok, text, false)?,
        special,
        max_len,
    ))
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
        .encode_into(&as_0_23_sees_it(text), opts, &mut out)
        .map_err(tk_err)
        .context("tokenizer failed")?;
    Ok(out.into_iter().map(|t| t.id()).collect())
}
