//! The collator (spec section 3): crop, whole-word masking, 80/10/10 replacement, padding.
//!
//! Runs in the loader thread, off the trainer's path. Every draw for an example comes from an RNG keyed
//! by (seed, epoch, example index), so a resumed run masks exactly as the uninterrupted one did.
//! Deviation (README): an over-long span is cropped once, at one random offset (the reference crops
//! twice, independently, for the mask and for the ids).

use rand::seq::SliceRandom;
use rand::Rng;

use crate::tokenizer::SpecialIds;

/// What the collator needs to know about the vocabulary.
pub struct Vocab {
    pub size: u32,
    pub special: SpecialIds,
    /// Ids whose token starts with `##` (a word-piece continuing the previous word).
    pub continuation: Vec<bool>,
}

impl Vocab {
    pub fn from_tokenizer(tok: &crate::tokenizer::Tokenizer) -> anyhow::Result<Self> {
        let special = crate::tokenizer::special_ids(tok)?;
        let size = tok.vocab_size() as u32;
        let mut continuation = vec![false; size as usize];
        for (token, id) in tok.vocab() {
            if token.starts_with("##") && (id as usize) < continuation.len() {
                continuation[id as usize] = true;
            }
        }
        Ok(Vocab {
            size,
            special,
            continuation,
        })
    }

    fn is_special(&self, id: u32) -> bool {
        let s = &self.special;
        // [UNK] counts as special: the reference never masks it (spec 3.2).
        id == s.pad || id == s.unk || id == s.cls || id == s.sep || id == s.mask
    }
}

/// One collated batch, host-side, row-major (B, T).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub labels: Vec<i64>,
    /// Non-padding tokens in the batch.
    pub real_tokens: usize,
}

/// Python's round(): half to even.
pub fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

/// Crops `span` to `budget` tokens at one random offset (deviation: the reference draws twice).
pub fn crop<'a>(span: &'a [u32], budget: usize, rng: &mut impl Rng) -> &'a [u32] {
    if span.len() <= budget {
        return span;
    }
    let start = rng.random_range(0..=span.len() - budget);
    &span[start..start + budget]
}

/// Whole-word mask positions of `tokens` (indices into `tokens`), as HF's DataCollatorForWholeWordMask
/// does it: words are runs of `##` pieces, specials never join, budget round_half_even(n p) >= 1, words
/// that would overshoot the budget are skipped.
pub fn whole_word_mask(tokens: &[u32], vocab: &Vocab, p: f64, rng: &mut impl Rng) -> Vec<usize> {
    let mut words: Vec<Vec<usize>> = Vec::new();
    for (i, &id) in tokens.iter().enumerate() {
        if vocab.is_special(id) {
            continue;
        }
        let cont = vocab
            .continuation
            .get(id as usize)
            .copied()
            .unwrap_or(false);
        match words.last_mut() {
            Some(w) if cont => w.push(i),
            _ => words.push(vec![i]),
        }
    }
    words.shuffle(rng);
    let budget = round_half_even(tokens.len() as f64 * p).clamp(1, 512);
    let mut picked = Vec::new();
    for w in words {
        if picked.len() >= budget {
            break;
        }
        if picked.len() + w.len() > budget {
            continue;
        }
        picked.extend(w);
    }
    picked.sort_unstable();
    picked
}

/// Collates spans into a batch: [CLS] span [SEP], masked, padded to the longest row rounded up to a
/// multiple of `pad_multiple` (1 = the longest; `max_len` = always max_len), never beyond `max_len`.
pub fn collate(
    spans: &[&[u32]],
    rngs: &mut [rand_chacha::ChaCha8Rng],
    vocab: &Vocab,
    max_len: usize,
    p: f64,
    pad_multiple: usize,
) -> Batch {
    let budget = max_len - 2;
    let cropped: Vec<&[u32]> = spans
        .iter()
        .zip(rngs.iter_mut())
        .map(|(s, r)| crop(s, budget, r))
        .collect();
    let longest = cropped.iter().map(|s| s.len() + 2).max().unwrap_or(2);
    let len = longest.next_multiple_of(pad_multiple.max(1)).min(max_len);
    let rows = spans.len();
    let mut b = Batch {
        rows,
        len,
        input_ids: vec![vocab.special.pad as i64; rows * len],
        attention_mask: vec![0; rows * len],
        labels: vec![-100; rows * len],
        real_tokens: 0,
    };
    for (r, (span, rng)) in cropped.iter().zip(rngs.iter_mut()).enumerate() {
        let row = r * len;
        let n = span.len() + 2;
        b.input_ids[row] = vocab.special.cls as i64;
        for (i, &t) in span.iter().enumerate() {
            b.input_ids[row + 1 + i] = t as i64;
        }
        b.input_ids[row + n - 1] = vocab.special.sep as i64;
        b.attention_mask[row..row + n].fill(1);
        b.real_tokens += n;
        for i in whole_word_mask(span, vocab, p, rng) {
            let at = row + 1 + i; // position 0 is [CLS]
            b.labels[at] = span[i] as i64;
            let roll: f64 = rng.random();
            if roll < 0.8 {
                b.input_ids[at] = vocab.special.mask as i64;
            } else if roll < 0.9 {
                b.input_ids[at] = rng.random_range(0..vocab.size) as i64;
            }
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn vocab() -> Vocab {
        let mut continuation = vec![false; 200];
        for id in 150..200 {
            continuation[id] = true; // ids 150.. are "##" pieces
        }
        Vocab {
            size: 200,
            special: SpecialIds {
                pad: 0,
                unk: 100,
                cls: 101,
                sep: 102,
                mask: 103,
            },
            continuation,
        }
    }

    #[test]
    fn round_half_even_matches_python() {
        assert_eq!(
            [0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 0.0].map(round_half_even),
            [0, 2, 2, 4, 2, 3, 0]
        );
    }

    #[test]
    fn masks_whole_words_within_budget_never_specials() {
        let v = vocab();
        // words: [10 150 151] [11] [100=UNK] [12 152] [13] ...
        let tokens: Vec<u32> = vec![
            10, 150, 151, 11, 100, 12, 152, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        ];
        for seed in 0..200 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let picked = whole_word_mask(&tokens, &v, 0.15, &mut rng);
            assert!(
                !picked.is_empty() && picked.len() <= 3,
                "budget round(20 * 0.15) = 3: {picked:?}"
            );
            assert!(!picked.contains(&4), "[UNK] masked");
            // A picked piece drags its whole word along.
            if picked.contains(&1) || picked.contains(&2) || picked.contains(&0) {
                assert!(
                    picked.contains(&0) && picked.contains(&1) && picked.contains(&2),
                    "{picked:?}"
                );
            }
            if picked.contains(&6) {
                assert!(picked.contains(&5));
            }
        }
        // At least one token even for a 1-token span.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(whole_word_mask(&[42], &v, 0.15, &mut rng), [0]);
    }

    #[test]
    fn replacement_shares_and_layout() {
        let v = vocab();
        let span: Vec<u32> = (10..130).collect();
        let (mut masked, mut random, mut kept, mut total) = (0, 0, 0, 0);
        for seed in 0..300 {
            let mut rngs = vec![rand_chacha::ChaCha8Rng::seed_from_u64(seed)];
            let b = collate(&[&span], &mut rngs, &v, 128, 0.15, 1);
            assert_eq!(b.len, 122);
            assert_eq!(b.input_ids[0], 101);
            assert_eq!(b.input_ids[121], 102);
            for i in 0..b.len {
                if b.labels[i] != -100 {
                    total += 1;
                    match b.input_ids[i] {
                        103 => masked += 1,
                        x if x == b.labels[i] => kept += 1,
                        _ => random += 1,
                    }
                }
            }
            assert_eq!(
                b.labels.iter().filter(|&&l| l != -100).count(),
                18,
                "round(120 * 0.15)"
            );
        }
        let share = |n: i32| n as f64 / total as f64;
        assert!((share(masked) - 0.8).abs() < 0.03, "mask {}", share(masked));
        assert!(
            (share(random) - 0.1).abs() < 0.03,
            "random {}",
            share(random)
        );
        assert!((share(kept) - 0.1).abs() < 0.03, "kept {}", share(kept));
    }

    #[test]
    fn crops_once_and_pads_to_the_longest() {
        let mut v = vocab();
        v.size = 600;
        v.continuation.resize(600, false);
        let long: Vec<u32> = (200..500).collect(); // unique ids: the window is recognisable
        let short = vec![11u32, 12, 13];
        let mut rngs = vec![
            rand_chacha::ChaCha8Rng::seed_from_u64(1),
            rand_chacha::ChaCha8Rng::seed_from_u64(2),
        ];
        let b = collate(&[&long, &short], &mut rngs, &v, 64, 0.15, 1);
        assert_eq!(b.len, 64);
        assert_eq!(b.attention_mask[64..].iter().sum::<i64>(), 5);
        // Original ids of row 0 (labels where masked): one contiguous window of the span.
        let body: Vec<i64> = (1..63)
            .map(|i| {
                if b.labels[i] != -100 {
                    b.labels[i]
                } else {
                    b.input_ids[i]
                }
            })
            .collect();
        let start = (body[0] - 200) as usize;
        let window: Vec<i64> = long[start..start + 62].iter().map(|&t| t as i64).collect();
        assert_eq!(body, window);
        let padded = collate(
            &[&short],
            &mut [rand_chacha::ChaCha8Rng::seed_from_u64(3)],
            &v,
            64,
            0.15,
            64,
        );
        assert_eq!(padded.len, 64);
    }

    #[test]
    fn pads_the_longest_row_up_to_a_multiple_never_past_max_len() {
        let v = vocab();
        let len_of = |n: usize, multiple: usize, max_len: usize| {
            let span: Vec<u32> = (0..n as u32).map(|i| 5 + i % 90).collect();
            let mut rngs = [rand_chacha::ChaCha8Rng::seed_from_u64(4)];
            let b = collate(&[&span], &mut rngs, &v, max_len, 0.15, multiple);
            // The padding is padding: the real row is n + 2 long whatever the multiple.
            assert_eq!(
                b.attention_mask.iter().sum::<i64>() as usize,
                (n + 2).min(max_len)
            );
            b.len
        };
        assert_eq!(len_of(10, 1, 128), 12);
        assert_eq!(len_of(10, 8, 128), 16);
        assert_eq!(len_of(14, 8, 128), 16);
        assert_eq!(len_of(15, 8, 128), 24);
        assert_eq!(len_of(10, 0, 128), 12); // 0 acts as 1
        assert_eq!(len_of(120, 16, 126), 126); // capped at max_len
    }
}
