//! Documents -> spans: clean, split sentences, tokenize, pack sentences greedily into spans.
//!
//! Packing follows the reference (`helper/create_train.py`): target length `T = max_len - 2`; with
//! probability `short_seq_prob` the target is drawn uniformly from [1, T]; it is redrawn after every
//! emitted span; a sentence that does not fit closes the current span. Deviation (README): a sentence
//! longer than the target is cut into pieces of the target length instead of becoming one over-long
//! span. Every draw comes from an RNG seeded by (seed, "segment", doc_id): thread scheduling never
//! changes a span.

use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::sentences;
use crate::corpus::{Document, Skip, SkipReason};
use crate::tokenizer::{EncodeScratch, Tokenizer};

pub use crate::shards::manifest::SegmentConfig;
pub use crate::shards::schema::Segmented;

/// Longest text handed to the tokenizer in one call: a sentence longer than this (a line without
/// sentence ends) is tokenized in pieces cut at word boundaries, so a 50 MB line is never one call.
const TOKENIZE_PIECE_BYTES: usize = 64 << 10;

/// The token ids of a document's sentences, end to end in one buffer: sentence `i` is
/// `ids[ends[i - 1]..ends[i]]`. Two vectors per document instead of one per sentence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SentenceIds {
    pub ids: Vec<u32>,
    pub ends: Vec<usize>,
}

impl SentenceIds {
    /// The non-empty sentences' ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let s = &self.ids[start..end];
            start = end;
            s
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

pub struct Segmenter<'a> {
    pub tokenizer: &'a Tokenizer,
    pub config: &'a SegmentConfig,
}

pub use crate::rng::{keyed_rng, stable_hash};

impl Segmenter<'_> {
    /// Segments one document; `Err(Skip)` for a document that yields no usable spans.
    pub fn segment(&self, mut doc: Document) -> Result<std::result::Result<Segmented, Skip>> {
        doc.to_plain(); // nothing to do when the caller converted it already
        let text = doc.text;
        if text.trim().is_empty() {
            return Ok(Err(Skip {
                reason: SkipReason::EmptyText,
                detail: format!("document {}: no text", doc.id),
            }));
        }
        let sentences = self.tokenize_sentences(&text)?;
        let mut rng = keyed_rng(self.config.seed, "segment", &doc.id);
        let spans = pack(
            sentences.iter(),
            self.config.max_len - 2,
            self.config.short_seq_prob,
            &mut rng,
        );
        let num_tokens: usize = spans.iter().map(Vec::len).sum();
        if num_tokens == 0 {
            return Ok(Err(Skip {
                reason: SkipReason::NoTokens,
                detail: format!("document {}: no tokens", doc.id),
            }));
        }
        if spans.len() < self.config.min_spans {
            let detail = format!(
                "document {}: {} span(s), --min-spans {}",
                doc.id,
                spans.len(),
                self.config.min_spans
            );
            return Ok(Err(Skip {
                reason: SkipReason::TooFewSpans,
                detail,
            }));
        }
        Ok(Ok(Segmented {
            doc_id: doc.id,
            spans,
            num_tokens,
        }))
    }

    /// Token ids per sentence, each sentence tokenized on its own as the reference does (one serial
    /// `encode_into` per sentence on this worker's thread, into one buffer). `tokenizers` 1.0 gives no
    /// offsets, so a whole-document call could not say where each sentence's ids end.
    fn tokenize_sentences(&self, text: &str) -> Result<SentenceIds> {
        sentence_ids(self.tokenizer, text)
    }
}

/// The ids of `text`'s sentences (see [`sentences::split`]), no special tokens; empty sentences are
/// left out. What `prepare` packs into spans.
pub fn sentence_ids(tokenizer: &Tokenizer, text: &str) -> Result<SentenceIds> {
    let ranges = sentences::split(text);
    let mut out = SentenceIds {
        ids: Vec::with_capacity(text.len() / 4 + 16),
        ends: Vec::with_capacity(ranges.len()),
    };
    let mut scratch = EncodeScratch::default();
    for range in ranges {
        let mut rest = &text[range];
        // A sentence longer than a piece is tokenized in pieces cut after whitespace or punctuation
        // (same ids as the whole: both are word boundaries of BERT's pre-tokenizer).
        while !rest.is_empty() {
            let cut = piece_end(rest, TOKENIZE_PIECE_BYTES);
            tokenizer.encode_append(&rest[..cut], &mut scratch, &mut out.ids)?;
            rest = &rest[cut..];
        }
        if out.ends.last().copied().unwrap_or(0) < out.ids.len() {
            out.ends.push(out.ids.len());
        }
    }
    Ok(out)
}

/// Where to end a piece of at most `max` bytes of `s`: after the last whitespace, else after the
/// last ASCII punctuation mark (both are word boundaries of BERT's pre-tokenizer, so the ids are
/// those of the whole), else (a run with neither, far past WordPiece's 100-character word limit) at
/// a character boundary.
pub fn piece_end(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max.max(4).min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let window = &s[..end];
    if let Some((i, c)) = window.char_indices().rev().find(|(_, c)| c.is_whitespace()) {
        if i > 0 {
            return i + c.len_utf8();
        }
    }
    if let Some(i) = window.rfind(|c: char| c.is_ascii_punctuation()) {
        if i > 0 {
            return i + 1;
        }
    }
    end
}

fn draw_target(target: usize, short_seq_prob: f64, rng: &mut ChaCha8Rng) -> usize {
    if short_seq_prob > 0.0 && rng.random::<f64>() < short_seq_prob {
        rng.random_range(1..=target)
    } else {
        target
    }
}

/// Greedy sentence packing (see the module docs).
pub fn pack<'a>(
    sentences: impl IntoIterator<Item = &'a [u32]>,
    target: usize,
    short_seq_prob: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<u32>> {
    let mut spans = Vec::new();
    let mut cur: Vec<u32> = Vec::new();
    let mut t = draw_target(target, short_seq_prob, rng);
    for sent in sentences {
        if !cur.is_empty() && cur.len() + sent.len() > t {
            spans.push(std::mem::take(&mut cur));
            t = draw_target(target, short_seq_prob, rng);
        }
        let mut rest = sent;
        // An over-long sentence is cut into pieces of the current target (deviation from the reference).
        while cur.is_empty() && rest.len() > t {
            spans.push(rest[..t].to_vec());
            rest = &rest[t..];
            t = draw_target(target, short_seq_prob, rng);
        }
        cur.extend_from_slice(rest);
    }
    if !cur.is_empty() {
        spans.push(cur);
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn packing_is_greedy_and_bounded() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sents = vec![vec![1; 3], vec![2; 4], vec![3; 2], vec![4; 12], vec![5; 1]];
        let spans = pack(sents.iter().map(Vec::as_slice), 5, 0.0, &mut rng);
        assert_eq!(
            spans,
            [
                vec![1; 3],
                [vec![2; 4]].concat(),
                vec![3; 2],
                vec![4; 5],
                vec![4; 5],
                [vec![4; 2], vec![5; 1]].concat()
            ]
        );
        // Nothing is lost, no span is over the target.
        let total: usize = spans.iter().map(Vec::len).sum();
        assert_eq!(total, 22);
    }

    #[test]
    fn short_targets_come_from_the_rng_and_stay_in_range() {
        let sents: Vec<Vec<u32>> = (0..500).map(|i| vec![i; 7]).collect();
        let spans = pack(
            sents.iter().map(Vec::as_slice),
            126,
            0.5,
            &mut keyed_rng(42, "segment", "doc"),
        );
        assert!(spans.iter().all(|s| (1..=126).contains(&s.len())));
        assert!(
            spans.iter().any(|s| s.len() < 100),
            "some short spans expected"
        );
        let again = pack(
            sents.iter().map(Vec::as_slice),
            126,
            0.5,
            &mut keyed_rng(42, "segment", "doc"),
        );
        assert_eq!(spans, again);
        let other = pack(
            sents.iter().map(Vec::as_slice),
            126,
            0.5,
            &mut keyed_rng(42, "segment", "doc2"),
        );
        assert_ne!(spans, other);
    }

    #[test]
    fn long_sentences_are_cut_at_word_boundaries() {
        let s = "abc def, ghi";
        assert_eq!(&s[..piece_end(s, 9)], "abc def, ");
        assert_eq!(&s[..piece_end(s, 7)], "abc ");
        let t = "abc,defghi";
        assert_eq!(&t[..piece_end(t, 8)], "abc,");
        assert_eq!(piece_end("abcdefghij", 6), 6);
        assert_eq!(piece_end("ééééé", 5), 4);
        assert_eq!(piece_end(s, 100), s.len());
    }

    #[test]
    fn stable_hash_is_stable() {
        // Pinned: changing it would change every prepared corpus.
        assert_eq!(stable_hash(&[b"abc"]), stable_hash(&[b"abc"]));
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
        assert_eq!(stable_hash(&[]), 17665956581633026203);
    }
}
