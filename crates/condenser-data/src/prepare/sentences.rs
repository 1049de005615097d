//! Rule-based sentence splitting, close to what NLTK's punkt does on English prose.
//!
//! A boundary is a `.`, `!` or `?` (optionally followed by closing quotes or brackets) followed by
//! whitespace and then a word that can start a sentence (an uppercase letter, a digit, an opening quote
//! or bracket). A period is not a boundary after a known abbreviation ("Dr.", "e.g.", "No."), an
//! initial or initialism ("J.", "U.S."), or when the next word is lowercase. A newline always ends a
//! sentence (paragraphs, headings and list items of converted wikitext). Decimals ("3.14") never
//! qualify because no whitespace follows the period.

/// Lowercase abbreviations (without the final period) after which a period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "col", "lt", "sgt",
    "capt", "cmdr", "adm", "gov", "sen", "rep", "rev", "hon", "pres", "messrs", "mme", "mlle",
    "no", "nos", "vol", "vols", "fig", "figs", "eq", "ch", "sec", "art", "pp", "p", "ed", "eds",
    "vs", "v", "etc", "cf", "al", "approx", "ca", "c", "est", "inc", "ltd", "co", "corp", "bros",
    "dept", "univ", "assn", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "e.g", "i.e", "a.m", "p.m",
    "u.s", "u.k", "u.n", "b.c", "a.d", "ph.d", "op", "cit", "ibid", "viz", "ave", "blvd", "rd",
    "esq", "gr", "oz", "lb", "lbs", "km", "cm", "mm", "kg", "min", "max", "dist", "pop",
];

const CLOSERS: &[char] = &['"', '\'', '”', '’', ')', ']', '»'];
const OPENERS: &[char] = &['"', '\'', '“', '‘', '(', '[', '«', '¿', '¡'];

/// Byte ranges of the sentences of `text`, trimmed of surrounding whitespace, in order.
pub fn split(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    // Only newlines and terminal punctuation act; the bytes between them are skipped with memchr's
    // vector search (the next newline is kept until passed, so each byte is searched once).
    let mut next_newline = None;
    while i < bytes.len() {
        if next_newline.is_none_or(|n| n < i) {
            next_newline = Some(memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n));
        }
        let newline = next_newline.unwrap_or(bytes.len());
        i = match memchr::memchr3(b'.', b'!', b'?', &bytes[i..newline]) {
            Some(n) => i + n,
            None => newline,
        };
        if i >= bytes.len() {
            break;
        }
        let b = bytes[i];
        if b == b'\n' {
            push_trimmed(text, start, i, &mut out);
            start = i + 1;
        } else if matches!(b, b'.' | b'!' | b'?') {
            i = after_terminal(text, &mut start, i, &mut out);
            continue;
        }
        i += 1;
    }
    push_trimmed(text, start, text.len(), &mut out);
    out
}

/// At terminal punctuation `text[i]`: takes the whole run of terminal punctuation and closing
/// quotes/brackets ("?!", '."', ".)"), ends the sentence after it if that is a boundary (moving
/// `start`), and returns where the scan goes on.
fn after_terminal(
    text: &str,
    start: &mut usize,
    i: usize,
    out: &mut Vec<std::ops::Range<usize>>,
) -> usize {
    let bytes = text.as_bytes();
    let mut end = i + 1;
    while end < bytes.len() {
        let c = text[end..].chars().next().unwrap();
        if matches!(c, '.' | '!' | '?') || CLOSERS.contains(&c) {
            end += c.len_utf8();
        } else {
            break;
        }
    }
    if end < bytes.len() && is_space(&text[end..]) && is_boundary(text, *start, i, bytes[i], end) {
        push_trimmed(text, *start, end, out);
        *start = end;
    }
    end
}

fn is_space(s: &str) -> bool {
    s.chars().next().is_some_and(char::is_whitespace)
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<std::ops::Range<usize>>) {
    let s = &text[start..end];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead + trail < s.len() {
        out.push(start + lead..end - trail);
    }
}

/// `text[punct]` is the terminal byte `mark`, the run ends at `end` and whitespace follows.
fn is_boundary(text: &str, sent_start: usize, punct: usize, mark: u8, end: usize) -> bool {
    // The next word must be able to start a sentence.
    let next = text[end..].trim_start();
    if next.starts_with('\n') || next.is_empty() {
        return true;
    }
    let mut chars = next.chars();
    let first = chars.next().unwrap();
    let starts_sentence = if OPENERS.contains(&first) {
        chars.next().is_none_or(|c| !c.is_lowercase())
    } else {
        first.is_uppercase()
            || first.is_numeric()
            || !first.is_alphabetic() && !first.is_ascii_punctuation()
    };
    if !starts_sentence {
        return false;
    }
    if mark != b'.' || text[punct + 1..end].starts_with("..") {
        return true; // "!" and "?" (and an ellipsis before a capital) end sentences.
    }
    // The word before the period.
    let before = &text[sent_start..punct];
    let word = before
        .rsplit(|c: char| c.is_whitespace() || OPENERS.contains(&c))
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return true;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        // "No. 5", "Dr. Smith": an abbreviation before a number or a capital word does not end a sentence.
        return false;
    }
    // Initials and initialisms: "J.", "U.S", "e.g" (single letters separated by periods).
    if lower
        .split('.')
        .all(|p| p.chars().count() == 1 && p.chars().all(char::is_alphabetic))
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    fn s(text: &str) -> Vec<&str> {
        super::split(text).into_iter().map(|r| &text[r]).collect()
    }

    /// `split` as it was written before the memchr search: every byte visited in turn (what happens at
    /// a terminal mark is shared; the jumping between marks is what this checks).
    fn split_byte_by_byte(text: &str) -> Vec<std::ops::Range<usize>> {
        use super::*;
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                push_trimmed(text, start, i, &mut out);
                start = i + 1;
            } else if matches!(b, b'.' | b'!' | b'?') {
                i = after_terminal(text, &mut start, i, &mut out);
                continue;
            }
            i += 1;
        }
        push_trimmed(text, start, text.len(), &mut out);
        out
    }

    #[test]
    fn the_vector_search_finds_the_sentences_of_the_byte_by_byte_scan() {
        // Generated texts dense in what the splitter acts on: terminal punctuation runs, closers,
        // newlines, abbreviations, initials, capitals, digits, non-ASCII letters and spaces.
        const PIECES: &[&str] = &[
            "word", "Word", " ", " ", "  ", ".", ".", "!", "?", "...", "\n", "\n\n", "\"", "'",
            ")", "(", "”", "“", "»", "Dr", "e.g", "U.S", "J", "3.14", "10", "é", "Éclair", "日本",
            "\t", "\u{a0}", "¿", "x",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pieces = 1 + (state % 40) as usize;
            for _ in 0..pieces {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(PIECES[(state % PIECES.len() as u64) as usize]);
            }
            assert_eq!(super::split(&text), split_byte_by_byte(&text), "{text:?}");
        }
    }

    #[test]
    fn plain_sentences() {
        assert_eq!(
            s("One two. Three four! Five six? Seven."),
            ["One two.", "Three four!", "Five six?", "Seven."]
        );
    }

    #[test]
    fn abbreviations_do_not_split() {
        assert_eq!(
            s("Dr. Smith met Mr. Jones, e.g. at the U.S. Embassy on No. 5 Main St. Later they left."),
            ["Dr. Smith met Mr. Jones, e.g. at the U.S. Embassy on No. 5 Main St. Later they left."]
        );
        assert_eq!(
            s("It was made by J. R. R. Tolkien. He wrote it."),
            ["It was made by J. R. R. Tolkien.", "He wrote it."]
        );
        assert_eq!(
            s("See i.e. this. And that."),
            ["See i.e. this.", "And that."]
        );
    }

    #[test]
    fn decimals_and_numbers() {
        assert_eq!(
            s("Pi is 3.14 roughly. It grew 2.5% in 2020. 10 people came."),
            [
                "Pi is 3.14 roughly.",
                "It grew 2.5% in 2020.",
                "10 people came."
            ]
        );
    }

    #[test]
    fn quotes_and_brackets() {
        assert_eq!(
            s("He said \"Stop.\" Then he left. (It rained.) The end."),
            [
                "He said \"Stop.\"",
                "Then he left.",
                "(It rained.)",
                "The end."
            ]
        );
        assert_eq!(
            s("\"Why?\" she asked. \"Because.\""),
            ["\"Why?\" she asked.", "\"Because.\""]
        );
    }

    #[test]
    fn lowercase_continuation_and_newlines() {
        assert_eq!(
            s("The vs. match ended. then more words"),
            ["The vs. match ended. then more words"]
        );
        assert_eq!(
            s("Heading\nA line. Another\n\n  spaced  "),
            ["Heading", "A line.", "Another", "spaced"]
        );
        assert_eq!(s("Wait... What happened?"), ["Wait...", "What happened?"]);
    }
}
