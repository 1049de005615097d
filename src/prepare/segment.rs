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
use tokenizers::Tokenizer;

use super::sentences;
use crate::corpus::{Document, Skip, SkipReason};

/// Segmentation settings (stored in the manifest).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentConfig {
    /// Sequence length the spans are made for; spans hold at most `max_len - 2` ids.
    pub max_len: usize,
    /// Probability of a short random target length for a span.
    pub short_seq_prob: f64,
    pub seed: u64,
    /// Documents with fewer spans are dropped (counted as `too_few_spans`).
    pub min_spans: usize,
}

/// A segmented document: what one shard row holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    pub doc_id: String,
    pub spans: Vec<Vec<u32>>,
    pub num_tokens: usize,
}

/// Longest text handed to the tokenizer in one call: long documents are tokenized in pieces cut at
/// sentence boundaries, so a 50 MB document does not need 50 MB worth of offsets at once.
const TOKENIZE_PIECE_BYTES: usize = 64 << 10;

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
            &sentences,
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

    /// Token ids per sentence. The text is tokenized in pieces of whole sentences and each token is
    /// given to the sentence holding its first byte: BERT's pre-tokenizer splits on whitespace, and
    /// sentences are separated by whitespace, so this equals tokenizing every sentence on its own
    /// (the reference) at a fraction of the calls.
    fn tokenize_sentences(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        let ranges = sentences::split(text);
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); ranges.len()];
        let mut first = 0;
        while first < ranges.len() {
            if ranges[first].len() > TOKENIZE_PIECE_BYTES {
                // One sentence longer than a piece (a line without sentence ends): tokenized in
                // pieces too, so its offsets and alignments never exist all at once.
                let mut rest = &text[ranges[first].clone()];
                while !rest.is_empty() {
                    let cut = piece_end(rest, TOKENIZE_PIECE_BYTES);
                    let enc = self
                        .tokenizer
                        .encode(&rest[..cut], false)
                        .map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?;
                    out[first].extend_from_slice(enc.get_ids());
                    rest = &rest[cut..];
                }
                first += 1;
                continue;
            }
            let mut last = first;
            while last + 1 < ranges.len()
                && ranges[last + 1].end - ranges[first].start <= TOKENIZE_PIECE_BYTES
            {
                last += 1;
            }
            let base = ranges[first].start;
            let piece = &text[base..ranges[last].end];
            let enc = self
                .tokenizer
                .encode(piece, false)
                .map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?;
            let mut s = first;
            for (&id, &(start, _)) in enc.get_ids().iter().zip(enc.get_offsets()) {
                let at = base + start;
                while s < last && at >= ranges[s + 1].start {
                    s += 1;
                }
                out[s].push(id);
            }
            first = last + 1;
        }
        out.retain(|s| !s.is_empty());
        Ok(out)
    }
}

/// Where to end a piece of at most `max` bytes of `s`: after the last whitespace, else after the
/// last ASCII punctuation mark (both are word boundaries of BERT's pre-tokenizer, so the ids are
/// those of the whole), else (a run with neither, far past WordPiece's 100-character word limit) at
/// a character boundary.
fn piece_end(s: &str, max: usize) -> usize {
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
pub fn pack(
    sentences: &[Vec<u32>],
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
        let mut rest = &sent[..];
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
        let spans = pack(&sents, 5, 0.0, &mut rng);
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
        let spans = pack(&sents, 126, 0.5, &mut keyed_rng(42, "segment", "doc"));
        assert!(spans.iter().all(|s| (1..=126).contains(&s.len())));
        assert!(
            spans.iter().any(|s| s.len() < 100),
            "some short spans expected"
        );
        let again = pack(&sents, 126, 0.5, &mut keyed_rng(42, "segment", "doc"));
        assert_eq!(spans, again);
        let other = pack(&sents, 126, 0.5, &mut keyed_rng(42, "segment", "doc2"));
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
