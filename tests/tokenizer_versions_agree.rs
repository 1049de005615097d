//! `tokenizers` 1.0 (what condenser runs) gives the ids of the 0.23 crate (what every shard and model
//! so far was made with) on every corpus the project has and on generated Unicode text.
//!
//! Compared, per text: the plain ids (no special tokens), the ids with [CLS]/[SEP], and the ids per
//! sentence that `prepare` packs (each sentence tokenized on its own with 1.0) against the old
//! segmenter's (pieces of whole sentences tokenized by 0.23, each token given to the sentence holding
//! its first byte). Also the vocabulary tables and `decode`. Any difference fails, naming the corpus,
//! the text and the first differing position.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use condenser::corpus::{self, Item, ReadOptions};
use condenser::prepare::{segment, sentences};
use condenser::tokenizer::{self, Tokenizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn data(rel: &str) -> PathBuf {
    condenser::paths::data_dir().join(rel)
}

struct Pair {
    new: Tokenizer,
    old: tokenizers_old::Tokenizer,
}

fn load() -> Pair {
    let path = condenser::paths::default_tokenizer();
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (pipelines/setup.sh) first",
        path.display()
    );
    let mut old = tokenizers_old::Tokenizer::from_file(&path).unwrap();
    old.with_truncation(None).unwrap();
    old.with_padding(None);
    Pair {
        new: tokenizer::load(&path).unwrap(),
        old,
    }
}

/// The 0.23 segmenter as it was: pieces of whole sentences (at most 64 KB) tokenized in one call, each
/// token given to the sentence holding its first byte; a longer sentence in pieces cut after
/// whitespace or punctuation. Empty sentences left out.
fn old_sentence_ids(old: &tokenizers_old::Tokenizer, text: &str) -> Vec<Vec<u32>> {
    const PIECE: usize = 64 << 10;
    let ranges = sentences::split(text);
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); ranges.len()];
    let mut first = 0;
    while first < ranges.len() {
        if ranges[first].len() > PIECE {
            let mut rest = &text[ranges[first].clone()];
            while !rest.is_empty() {
                let cut = segment::piece_end(rest, PIECE);
                let enc = old.encode(&rest[..cut], false).unwrap();
                out[first].extend_from_slice(enc.get_ids());
                rest = &rest[cut..];
            }
            first += 1;
            continue;
        }
        let mut last = first;
        while last + 1 < ranges.len() && ranges[last + 1].end - ranges[first].start <= PIECE {
            last += 1;
        }
        let base = ranges[first].start;
        let enc = old.encode(&text[base..ranges[last].end], false).unwrap();
        let mut s = first;
        for (&id, &(start, _)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            while s < last && base + start >= ranges[s + 1].start {
                s += 1;
            }
            out[s].push(id);
        }
        first = last + 1;
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_difference(a: &[u32], b: &[u32]) -> String {
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    format!(
        "lengths {} and {}, first difference at {i}: 1.0 {:?} vs 0.23 {:?}",
        a.len(),
        b.len(),
        &a[i..a.len().min(i + 5)],
        &b[i..b.len().min(i + 5)]
    )
}

fn excerpt(text: &str) -> String {
    let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    format!(
        "{:?}{}",
        &text[..cut],
        if cut < text.len() { "..." } else { "" }
    )
}

/// Compares every text; returns the number of tokens compared. Panics on the first difference.
fn agree(pair: &Pair, corpus: &str, texts: &[String]) -> usize {
    assert!(!texts.is_empty(), "{corpus}: no texts read");
    let mut tokens = 0;
    for (n, text) in texts.iter().enumerate() {
        let new = tokenizer::encode_ids(&pair.new, text, false).unwrap();
        let old = pair
            .old
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert!(
            new == old,
            "{corpus}, text {n}: plain ids differ ({}) on {}",
            first_difference(&new, &old),
            excerpt(text)
        );
        let new = tokenizer::encode_ids(&pair.new, text, true).unwrap();
        let old = pair
            .old
            .encode(text.as_str(), true)
            .unwrap()
            .get_ids()
            .to_vec();
        assert!(
            new == old,
            "{corpus}, text {n}: ids with [CLS]/[SEP] differ ({}) on {}",
            first_difference(&new, &old),
            excerpt(text)
        );
        let new: Vec<Vec<u32>> = segment::sentence_ids(&pair.new, text)
            .unwrap()
            .iter()
            .map(<[u32]>::to_vec)
            .collect();
        let old = old_sentence_ids(&pair.old, text);
        if new != old {
            let s = new.iter().zip(&old).take_while(|(a, b)| a == b).count();
            panic!(
                "{corpus}, text {n}: sentence ids differ ({} and {} sentences; sentence {s}: {}) on {}",
                new.len(),
                old.len(),
                first_difference(new.get(s).map_or(&[][..], |v| v), old.get(s).map_or(&[][..], |v| v)),
                excerpt(text)
            );
        }
        tokens += new.iter().map(Vec::len).sum::<usize>();
    }
    eprintln!("{corpus}: {} texts, {tokens} tokens: same ids", texts.len());
    tokens
}

/// The documents' plain text as `prepare` sees it (markup converted), every `every`-th document.
fn read_corpus(path: &Path, opts: ReadOptions, every: usize) -> Vec<String> {
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (pipelines/setup.sh) first",
        path.display()
    );
    let inputs = corpus::expand_inputs(&[path.display().to_string()]).unwrap();
    let mut texts = Vec::new();
    let mut n = 0usize;
    for input in &inputs {
        corpus::read_input(input, &opts, Arc::new(AtomicU64::new(0)), &mut |item| {
            if let Item::Doc(mut d) = item {
                if n % every == 0 {
                    d.to_plain();
                    texts.push(d.text);
                }
                n += 1;
            }
            Ok(())
        })
        .unwrap();
    }
    texts
}

#[test]
fn vocabulary_and_special_ids_agree() {
    let pair = load();
    assert_eq!(pair.new.vocab_size(), pair.old.get_vocab_size(true));
    let old_vocab = pair.old.get_vocab(true);
    assert_eq!(old_vocab.len(), pair.new.vocab().count());
    for (token, &id) in &old_vocab {
        assert_eq!(pair.new.token_to_id(token), Some(id), "{token:?}");
        assert_eq!(
            pair.new.id_to_token(id),
            pair.old.id_to_token(id).as_deref(),
            "{id}"
        );
    }
    let s = tokenizer::special_ids(&pair.new).unwrap();
    for (t, id) in [
        ("[PAD]", s.pad),
        ("[UNK]", s.unk),
        ("[CLS]", s.cls),
        ("[SEP]", s.sep),
        ("[MASK]", s.mask),
    ] {
        assert_eq!(pair.old.token_to_id(t), Some(id), "{t}");
    }
    // decode (inspect's samples) on the ids of real text and on arbitrary ids.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for text in [
        "Condenser pre-trains dense retrievers, e.g. on MS MARCO.",
        "unaffable ##s [MASK] x",
    ] {
        let ids = tokenizer::encode_ids(&pair.new, text, true).unwrap();
        for skip in [false, true] {
            assert_eq!(
                pair.new.decode(&ids, skip).unwrap(),
                pair.old.decode(&ids, skip).unwrap()
            );
        }
    }
    for _ in 0..200 {
        let ids: Vec<u32> = (0..rng.random_range(0..40))
            .map(|_| rng.random_range(0..pair.new.vocab_size() as u32))
            .collect();
        assert_eq!(
            pair.new.decode(&ids, false).unwrap(),
            pair.old.decode(&ids, false).unwrap(),
            "{ids:?}"
        );
    }
}

#[test]
fn ids_agree_on_the_demo_msmarco_passages() {
    // MS MARCO passages: the demo corpus's TSV (the silver set's collection.tsv is the same file).
    let texts = read_corpus(
        &data("demo/msmarco-passages.tsv"),
        ReadOptions::default(),
        1,
    );
    agree(&load(), "demo MS MARCO passages", &texts);
}

#[test]
fn ids_agree_on_the_wikipedia_leads() {
    let texts = read_corpus(
        &data("wiki-leads/summaries_en-us.json"),
        ReadOptions::default(),
        1,
    );
    agree(&load(), "wiki-leads summaries", &texts);
}

#[test]
fn ids_agree_on_the_dump_pages_after_markup() {
    let pair = load();
    for dump in [
        "enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "enwiki/enwiki-table-markup.xml.bz2",
    ] {
        let texts = read_corpus(&data(dump), ReadOptions::default(), 1);
        agree(&pair, dump, &texts);
    }
}

#[test]
fn ids_agree_on_queries_and_rag_responses() {
    let pair = load();
    let queries = read_corpus(&data("rag24-silver/queries.tsv"), ReadOptions::default(), 1);
    agree(&pair, "rag24-silver queries", &queries);
    // 57 MB of LLM answers: a deterministic sample (every 25th), which keeps the debug test short.
    let opts = ReadOptions {
        text_field: Some("raw_text".into()),
        ..ReadOptions::default()
    };
    let answers = read_corpus(&data("rag24/responses.jsonl.gz"), opts, 25);
    agree(&pair, "rag24 responses (raw_text, every 25th)", &answers);
}

/// Pieces the generator draws from: what breaks tokenizers (normalization, punctuation, CJK, control
/// and combining characters, special-token text, sentence ends).
const PIECES: &[&str] = &[
    "the",
    "Café",
    "naïve",
    "résumé",
    "Straße",
    "ÅNGSTRÖM",
    "İstanbul",
    "ǅemal",
    "ﬁne",
    "Ⅻ",
    "①",
    "東京",
    "日本語",
    "中文字符",
    "한국어",
    "ひらがな",
    "カタカナ",
    "ｆｕｌｌｗｉｄｔｈ",
    "😀",
    "👩‍👩‍👧",
    "🇫🇷",
    "e\u{301}",
    "a\u{308}\u{304}",
    "\u{0}",
    "\u{1}",
    "\u{7f}",
    "\u{ad}",
    "\u{200b}",
    "\u{200d}",
    "\u{feff}",
    "\u{fffd}",
    "\u{85}",
    "\u{2028}",
    "\u{2029}",
    "\u{b}",
    "\u{c}",
    "\u{a0}",
    "\u{3000}",
    "\u{202f}",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[UNK]",
    "[PAD]",
    "[mask]",
    "##ing",
    "##",
    ".",
    "!",
    "?",
    "...",
    "?!",
    "\"",
    "'",
    "”",
    "’",
    ")",
    "»",
    "(",
    "«",
    "¿",
    "-",
    "—",
    "$",
    "%",
    "3.14",
    "U.S.",
    "e.g.",
    "Dr.",
    "No.",
    "J.",
    "http://x.org/a?b=c",
    "user@example.com",
    "C++",
    "don't",
    "o'clock",
    "٣",
    "עברית",
    "العربية",
    "हिन्दी",
    "ไทย",
    "Ελληνικά",
    "Русский",
    "𝔘𝔫𝔦",
    "\u{10ffff}",
    "\u{e000}",
];
const SPACES: &[&str] = &[
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\n\n",
    " \u{3000} ",
    "\u{a0}",
    "",
];

fn fuzz_text(rng: &mut ChaCha8Rng) -> String {
    let mut s = String::new();
    let words = rng.random_range(0..60);
    for _ in 0..words {
        match rng.random_range(0..10) {
            // A very long word: past WordPiece's 100-character limit, or just under it.
            0 => {
                let n = [99, 100, 101, 250, 2000][rng.random_range(0..5)];
                let c = ["a", "é", "日", "😀", "x1"][rng.random_range(0..5)];
                s.push_str(&c.repeat(n));
            }
            // Random code points (any plane, surrogates excluded by char::from_u32).
            1 => {
                for _ in 0..rng.random_range(1..6) {
                    if let Some(c) = char::from_u32(rng.random_range(0..0x11_0000)) {
                        s.push(c);
                    }
                }
            }
            // A whitespace run.
            2 => {
                for _ in 0..rng.random_range(1..8) {
                    s.push_str(SPACES[rng.random_range(0..SPACES.len())]);
                }
            }
            _ => s.push_str(PIECES[rng.random_range(0..PIECES.len())]),
        }
        s.push_str(SPACES[rng.random_range(0..SPACES.len())]);
    }
    s
}

/// All-ASCII text (condenser's ASCII fast path): every byte 0..=127, controls included, words,
/// punctuation, special tokens whole and broken, long words, whitespace runs.
fn fuzz_ascii(rng: &mut ChaCha8Rng) -> String {
    const WORDS: &[&str] = &[
        "The",
        "quick",
        "BROWN",
        "fox",
        "Dr.",
        "U.S.",
        "e.g.",
        "3.14",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[UNK]",
        "[PAD]",
        "[mask]",
        "[MA\u{1}SK]",
        "[",
        "]",
        "##ing",
        "don't",
        "C++",
        "a.b.c",
        "http://x.org/a?b=c",
        "!?",
        "...",
        "\"Quoted.\"",
        "(Bracket.)",
        "x\u{0}y",
        "a\u{7f}b",
        "tab\tsep",
        "v\u{b}t",
        "f\u{c}f",
    ];
    let mut s = String::new();
    for _ in 0..rng.random_range(0..60) {
        match rng.random_range(0..8) {
            0 => {
                for _ in 0..rng.random_range(1..12) {
                    s.push(rng.random_range(0u8..128) as char);
                }
            }
            1 => s.push_str(
                &["a", "Z", "9", "-"][rng.random_range(0..4)]
                    .repeat([99, 100, 101, 300][rng.random_range(0..4)]),
            ),
            _ => s.push_str(WORDS[rng.random_range(0..WORDS.len())]),
        }
        s.push_str([" ", " ", "  ", "\n", "\t", "\r\n", ". ", "! "][rng.random_range(0..8)]);
    }
    s
}

#[test]
fn ids_agree_on_generated_ascii_text() {
    let pair = load();
    assert!(
        pair.new.has_ascii_fast_path(),
        "bert-base-uncased should take the ASCII fast path"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut texts: Vec<String> = (0..3000).map(|_| fuzz_ascii(&mut rng)).collect();
    texts.push((0u8..128).map(char::from).collect());
    agree(&pair, "generated ASCII text", &texts);
}

#[test]
fn ids_agree_on_generated_unicode_text() {
    let pair = load();
    let mut rng = ChaCha8Rng::seed_from_u64(20261205);
    let mut texts: Vec<String> = (0..3000).map(|_| fuzz_text(&mut rng)).collect();
    // Edge cases kept whole: empty, only whitespace, only controls, a 70 KB line without a sentence
    // end (the segmenter's piece cutting), a long word at the piece boundary.
    texts.push(String::new());
    texts.push(" \t\n\u{3000}\u{a0} ".into());
    texts.push("\u{0}\u{1}\u{7f}\u{200b}\u{feff}".into());
    texts.push("word, ".repeat(12_000));
    texts.push(format!("{}{}", "a ".repeat(32_760), "b".repeat(300)));
    texts.push("日本語".repeat(25_000));
    agree(&pair, "generated Unicode text", &texts);
}
