//! MediaWiki markup -> plain text, in the spirit of WikiExtractor and gensim's `filter_wiki`.
//!
//! Dropped whole: comments, `<ref>` and other non-prose tags with their content, templates `{{…}}`
//! (nested, parser functions included), tables `{|…|}`, files/images (with nested captions),
//! categories, interwiki and other namespaced links, magic words.
//! Kept as text: `[[target|label]]` -> label, `[[target]]` -> target (plus a link trail: `[[cat]]s`),
//! `[url label]` -> label, headings (own line), list items (markers dropped), bold/italic content,
//! HTML entities decoded. Paragraph breaks are kept as newlines: the sentence splitter treats each
//! line as ending a sentence.
//!
//! Unclosed constructs are text, as MediaWiki renders them, minus the markup itself: a `{{` or `[[`
//! never closed loses its brackets and its content stays (MediaWiki shows both literally; the brackets
//! would be noise in prose). An unclosed `<ref>` (or other dropped tag) loses the tag and keeps what
//! follows: MediaWiki's preprocessor prints such a tag as literal text and parses on (only
//! `<includeonly>`/`<noinclude>` run to the end there), and swallowing to the end would lose the rest
//! of the article for one typo. An unclosed comment runs to the end, as in MediaWiki.
//!
//! Hostile pages (tens of thousands of unclosed or nested openers) must cost time and memory linear in
//! the page: no pass recurses on the input, and no search is repeated from each of many openers —
//! a search whose start only moves forward reuses its last hit (`NextFinder`), and brackets are
//! matched once per page with an explicit stack.

use std::num::NonZeroUsize;

use memchr::memmem;

/// Tags dropped with everything inside them (case-insensitive).
const DROP_TAGS: &[&str] = &[
    "ref",
    "math",
    "chem",
    "gallery",
    "timeline",
    "syntaxhighlight",
    "source",
    "pre",
    "code",
    "score",
    "imagemap",
    "noinclude",
    "templatedata",
    "graph",
    "mapframe",
    "maplink",
    "hiero",
    "references",
    "table",
    "ce",
    "includeonly",
];

/// Link prefixes (namespaces) whose links are dropped whole.
const DROP_NAMESPACES: &[&str] = &[
    "file",
    "image",
    "media",
    "category",
    "wikipedia",
    "wp",
    "template",
    "help",
    "portal",
    "special",
    "user",
    "talk",
    "module",
    "draft",
    "mediawiki",
    "book",
    "timedtext",
    "wikt",
    "wiktionary",
];

/// Longest link prefix that can drop a link: the namespaces above and interwiki codes (`zh-min-nan`).
const MAX_DROP_PREFIX: usize = 12;

/// Converts one article's wikitext to plain text.
pub fn to_plain_text(wikitext: &str) -> String {
    // Each pass frees the previous one's text, so a page costs a few copies of itself, not eight.
    let mut s = strip_comments(wikitext);
    // Templates before tags: a `</ref>` typed inside a citation template must not end the ref early.
    s = strip_nested(&s, "{{", "}}");
    s = strip_drop_tags(&s);
    s = strip_tables(&s);
    s = rewrite_links(&s);
    s = rewrite_external_links(&s);
    s = strip_html_tags(&s);
    finish_lines(&s)
}

/// The next `needle` at or after a position, for a pass whose positions only grow: a hit still ahead
/// is reused and a miss holds for every later start, so one pass scans its text about once where
/// searching afresh from each of n openers (`<ref>` repeated, no `>`) would scan it n times.
/// Asked for an earlier position it searches again: slower, never wrong.
struct NextFinder<'a> {
    hay: &'a [u8],
    needle: &'static [u8],
    /// The last search: where it started and what it found.
    last: Option<(usize, Option<usize>)>,
}

impl<'a> NextFinder<'a> {
    fn new(hay: &'a str, needle: &'static str) -> Self {
        NextFinder {
            hay: hay.as_bytes(),
            needle: needle.as_bytes(),
            last: None,
        }
    }

    fn find(&mut self, from: usize) -> Option<usize> {
        if let Some((start, hit)) = self.last {
            if from >= start && hit.is_none_or(|h| h >= from) {
                return hit;
            }
        }
        let hit = self
            .hay
            .get(from..)
            .and_then(|h| memmem::find(h, self.needle))
            .map(|off| from + off);
        self.last = Some((from, hit));
        hit
    }
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start + 4..].find("-->") {
            Some(end) => rest = &rest[start + 4 + end + 3..],
            None => return out, // An unclosed comment runs to the end, as MediaWiki renders it.
        }
    }
    out.push_str(rest);
    out
}

/// ASCII case-insensitive `find` of a lowercase needle.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// If `s[at..]` starts with an opening tag (`<name …>` or `<name …/>`), returns (name, tag length,
/// self-closing). `gt` finds the next `>` in `s`.
fn opening_tag(s: &str, at: usize, gt: &mut NextFinder) -> Option<(String, usize, bool)> {
    let b = s.as_bytes().get(at..)?;
    if b.first() != Some(&b'<') {
        return None;
    }
    let name_len = b[1..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if name_len == 0 {
        return None;
    }
    let after = b.get(1 + name_len)?;
    if !matches!(after, b' ' | b'>' | b'/' | b'\t' | b'\n') {
        return None;
    }
    let end = gt.find(at)? - at;
    let self_closing = b[..end].ends_with(b"/");
    Some((
        s[at + 1..at + 1 + name_len].to_ascii_lowercase(),
        end + 1,
        self_closing,
    ))
}

fn strip_drop_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gt = NextFinder::new(s, ">");
    // Tags whose closing tag does not occur after some earlier opener: searches only move forward,
    // so none will be found later either (MediaWiki's preprocessor keeps the same cache).
    let mut never_closed: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find('<') {
        let at = i + off;
        out.push_str(&s[i..at]);
        match opening_tag(s, at, &mut gt) {
            Some((name, len, self_closing)) if DROP_TAGS.contains(&name.as_str()) => {
                if self_closing {
                    i = at + len;
                    continue;
                }
                let close = format!("</{name}");
                let found = if never_closed.contains(&name) {
                    None
                } else {
                    find_ci(&s[at + len..], &close)
                };
                match found {
                    Some(c) => {
                        let after = at + len + c;
                        i = s[after..]
                            .find('>')
                            .map(|g| after + g + 1)
                            .unwrap_or(s.len());
                    }
                    // An unclosed <ref> swallows nothing: drop only the tag itself.
                    None => {
                        if !never_closed.contains(&name) {
                            never_closed.push(name);
                        }
                        i = at + len;
                    }
                }
            }
            _ => {
                out.push('<');
                i = at + 1;
            }
        }
    }
    out.push_str(&s[i..]);
    out
}

/// Removes balanced `open … close` regions, nesting included; an unbalanced opener is dropped and the
/// text after it kept, so one typo does not swallow the rest of the article. A closer pairs with the
/// nearest open opener; one with no opener open is text.
fn strip_nested(s: &str, open: &str, close: &str) -> String {
    let (b, open_b, close_b) = (s.as_bytes(), open.as_bytes(), close.as_bytes());
    let mut out = String::with_capacity(s.len());
    // For each opener still open: the length of `out` when it opened. Text after an opener is written
    // at once and cut back when (if) the opener closes, so unclosed openers cost no second pass.
    let mut opened: Vec<usize> = Vec::new();
    let mut i = 0;
    let mut start = 0;
    // Byte-wise: the delimiters are ASCII, so every cut lands on a char boundary.
    while i < b.len() {
        if b[i..].starts_with(open_b) {
            out.push_str(&s[start..i]);
            opened.push(out.len());
            i += open_b.len();
            start = i;
        } else if !opened.is_empty() && b[i..].starts_with(close_b) {
            out.push_str(&s[start..i]);
            if let Some(len) = opened.pop() {
                out.truncate(len);
            }
            i += close_b.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[start..]);
    out
}

/// Tables: `{|` opens at the start of a line (possibly indented by `:`), `|}` closes; nested.
fn strip_tables(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for line in s.split_inclusive('\n') {
        let t = line.trim_start_matches([' ', ':', '\t']);
        if t.starts_with("{|") {
            depth += 1;
            continue;
        }
        if depth > 0 {
            if t.starts_with("|}") {
                depth -= 1;
            }
            continue;
        }
        out.push_str(line);
    }
    out
}

/// A closed `[[…]]` link: where its `[[` starts, where it ends (just past `]]`), and the last `|`
/// inside it.
struct Link {
    open: usize,
    end: usize,
    /// Never 0 (a `|` inside a link follows its `[[`), so the option costs no extra word.
    last_pipe: Option<NonZeroUsize>,
}

/// Pairs every `[[` with its `]]` (nesting included) in one pass; sorted by `open`. A `]]` with no
/// `[[` open is text; a `[[` never closed gets no entry.
fn match_links(s: &str) -> Vec<Link> {
    let b = s.as_bytes();
    let mut opened = Vec::new();
    let mut links = Vec::new();
    let mut last_pipe = None;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'[' && b[i + 1] == b'[' {
            opened.push(i);
            i += 2;
        } else if b[i] == b']' && b[i + 1] == b']' && !opened.is_empty() {
            if let Some(open) = opened.pop() {
                links.push(Link {
                    open,
                    end: i + 2,
                    last_pipe: last_pipe
                        .filter(|&p| p >= open + 2)
                        .and_then(NonZeroUsize::new),
                });
            }
            i += 2;
        } else {
            if b[i] == b'|' {
                last_pipe = Some(i);
            }
            i += 1;
        }
    }
    links.sort_unstable_by_key(|l| l.open);
    links
}

fn is_interwiki(prefix: &str) -> bool {
    // Language links: `en:`, `de:`, `zh-yue:`, `simple:`.
    let p = prefix.trim_start_matches(':');
    (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase())
        || p.contains('-') && p.len() <= 12 && p.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        || p == "simple"
}

/// `s[lo..hi]` trimmed of whitespace, as a range; costs only the whitespace it removes.
fn trim_range(s: &str, lo: usize, hi: usize) -> (usize, usize) {
    let t = &s[lo..hi];
    let start = t.trim_start();
    let lo = lo + (t.len() - start.len());
    (lo, lo + start.trim_end().len())
}

/// One stretch of text being rewritten: the page, or a link's label (links inside a label become their
/// labels too). Kept on a heap stack instead of recursing, so nesting depth costs no thread stack.
struct Frame {
    /// Next position to look at, and the end of this stretch.
    i: usize,
    hi: usize,
    /// Where the text to write when the frame resumes starts (it ends at `i`): the link trail after
    /// the label being rewritten. `usize::MAX` when there is none.
    trail_from: usize,
}

fn rewrite_links(s: &str) -> String {
    let links = match_links(s);
    let mut out = String::with_capacity(s.len());
    // Every search below starts just inside a link, and links are visited in page order.
    let mut pipes = NextFinder::new(s, "|");
    let mut colons = NextFinder::new(s, ":");
    let mut parens = NextFinder::new(s, " (");
    // The last colon looked at and where its prefix ends without trailing spaces: nested links share
    // it, and trimming it afresh for each would cost the spaces once per level.
    let mut colon_trim: Option<(usize, usize)> = None;
    let mut frames = vec![Frame {
        i: 0,
        hi: s.len(),
        trail_from: usize::MAX,
    }];
    while let Some(f) = frames.last_mut() {
        if f.trail_from < f.i {
            out.push_str(&s[f.trail_from..f.i]);
        }
        f.trail_from = usize::MAX;
        let Some(off) = s[f.i..f.hi].find("[[") else {
            out.push_str(&s[f.i..f.hi]);
            frames.pop();
            continue;
        };
        let at = f.i + off;
        out.push_str(&s[f.i..at]);
        let link = match links.binary_search_by_key(&at, |l| l.open) {
            Ok(k) if links[k].end <= f.hi => &links[k],
            _ => {
                // Unclosed link (within this stretch): keep the rest as text without the brackets.
                f.i = at + 2;
                continue;
            }
        };
        let (inner_lo, inner_hi) = (at + 2, link.end - 2);
        // The target is the text before the first `|`; a namespace prefix before its first `:`.
        let last_pipe = link.last_pipe.map(NonZeroUsize::get);
        let target_hi = match last_pipe {
            Some(_) => pipes.find(inner_lo).map_or(inner_hi, |p| p.min(inner_hi)),
            None => inner_hi,
        };
        let drop = match colons.find(inner_lo).filter(|&c| c < target_hi) {
            Some(c) => {
                // Only the leading spaces: the trailing ones are the shared part, trimmed below.
                let lo = c - s[inner_lo..c].trim_start().len();
                let hi = match colon_trim {
                    Some((at_c, hi)) if at_c == c => hi,
                    _ => {
                        let hi = s[..c].trim_end().len();
                        colon_trim = Some((c, hi));
                        hi
                    }
                };
                let prefix = &s[lo..hi.max(lo)];
                prefix.len() <= MAX_DROP_PREFIX && {
                    let p = prefix.to_ascii_lowercase();
                    DROP_NAMESPACES.contains(&p.as_str()) || is_interwiki(&p)
                }
            }
            None => false,
        };
        if drop {
            f.i = link.end;
            continue;
        }
        let (lo, hi) = match last_pipe {
            // `[[Target (disambiguation)|]]`: the pipe trick shows the target without the brackets.
            Some(p) if p + 1 == inner_hi => {
                let cut = parens.find(inner_lo).filter(|&q| q < p).unwrap_or(p);
                trim_range(s, inner_lo, cut)
            }
            Some(p) => trim_range(s, p + 1, inner_hi),
            None => {
                let (lo, hi) = trim_range(s, inner_lo, inner_hi);
                let label = &s[lo..hi];
                (lo + label.len() - label.trim_start_matches(':').len(), hi)
            }
        };
        // Link trail: `[[bus]]es` -> "buses".
        let trail = s[link.end..f.hi]
            .bytes()
            .take_while(|c| c.is_ascii_lowercase())
            .count();
        f.trail_from = link.end;
        f.i = link.end + trail;
        frames.push(Frame {
            i: lo,
            hi,
            trail_from: usize::MAX,
        });
    }
    out
}

fn rewrite_external_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut closes = NextFinder::new(s, "]");
    let mut newlines = NextFinder::new(s, "\n");
    let mut i = 0;
    while let Some(off) = s[i..].find('[') {
        let at = i + off;
        out.push_str(&s[i..at]);
        let rest = &s[at + 1..];
        let is_url = ["http://", "https://", "ftp://", "//", "mailto:"]
            .iter()
            .any(|p| rest.starts_with(p));
        let end = if is_url {
            closes
                .find(at + 1)
                .filter(|&e| newlines.find(at + 1).is_none_or(|n| n > e))
        } else {
            None
        };
        match end {
            Some(end) => {
                if let Some((_, label)) = s[at + 1..end].split_once(' ') {
                    out.push_str(label.trim());
                }
                i = end + 1;
            }
            None => {
                out.push('[');
                i = at + 1;
            }
        }
    }
    out.push_str(&s[i..]);
    out
}

/// Drops remaining HTML-like tags (`<br/>`, `<span …>`, `</div>`), keeping their content.
fn strip_html_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gts = NextFinder::new(s, ">");
    let mut newlines = NextFinder::new(s, "\n");
    let mut i = 0;
    while let Some(off) = s[i..].find('<') {
        let at = i + off;
        out.push_str(&s[i..at]);
        let rest = &s[at..];
        let closing = rest.starts_with("</");
        let name_start = if closing { 2 } else { 1 };
        let is_tag = rest[name_start..].starts_with(|c: char| c.is_ascii_alphabetic());
        let end = if is_tag {
            gts.find(at)
                .filter(|&e| newlines.find(at).is_none_or(|n| n > e))
        } else {
            None
        };
        match end {
            Some(end) => {
                let name: String = rest[name_start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                // Line-breaking tags keep the words apart.
                if matches!(
                    name.to_ascii_lowercase().as_str(),
                    "br" | "p" | "div" | "li" | "hr"
                ) {
                    out.push(' ');
                }
                i = end + 1;
            }
            None => {
                out.push('<');
                i = at + 1;
            }
        }
    }
    out.push_str(&s[i..]);
    out
}

/// Decodes the HTML entities that occur in prose; unknown ones stay as they are.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find('&') {
        let at = i + off;
        out.push_str(&s[i..at]);
        let rest = &s[at + 1..];
        // An entity name is at most 10 bytes: look no further for its `;`, or `&&&…` is quadratic.
        let semi = rest.bytes().take(11).position(|c| c == b';');
        let decoded = semi.filter(|&e| e > 0).and_then(|e| {
            let name = &rest[..e];
            let c = if let Some(num) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(num, 16).ok().and_then(char::from_u32)
            } else if let Some(num) = name.strip_prefix('#') {
                num.parse().ok().and_then(char::from_u32)
            } else {
                named_entity(name)
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                i = at + 1 + e + 1;
            }
            None => {
                out.push('&');
                i = at + 1;
            }
        }
    }
    out.push_str(&s[i..]);
    out
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" | "ensp" | "emsp" | "thinsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "minus" => '−',
        "times" => '×',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "deg" => '°',
        "middot" => '·',
        "bull" => '•',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "frac12" => '½',
        "frac14" => '¼',
        "frac34" => '¾',
        "plusmn" => '±',
        "prime" => '′',
        "Prime" => '″',
        "shy" | "zwj" | "zwnj" | "lrm" | "rlm" => '\u{200b}',
        _ => return None,
    })
}

/// Line-level markup: headings, lists, quotes, rules, magic words, entities and whitespace.
fn finish_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        let mut t = line.trim();
        if t.starts_with("----") || t.starts_with("__") && t.ends_with("__") {
            continue;
        }
        // Headings: `== Title ==`.
        if t.len() >= 2 && t.starts_with('=') && t.ends_with('=') {
            t = t.trim_matches('=').trim();
        }
        // Lists and indents: `*`, `#`, `:`, `;`.
        t = t.trim_start_matches(['*', '#', ':', ';']).trim_start();
        if t.starts_with('|') || t.starts_with('!') {
            continue; // Stray table rows outside a well-formed table.
        }
        let t = t.replace("'''''", "").replace("'''", "").replace("''", "");
        // Stray braces and brackets from unbalanced markup.
        let t = t
            .replace("{{", "")
            .replace("}}", "")
            .replace("[[", "")
            .replace("]]", "");
        let t = t
            .replace("__NOTOC__", "")
            .replace("__TOC__", "")
            .replace("__NOEDITSECTION__", "");
        let t = decode_entities(&t).replace('\u{200b}', "");
        let mut last_space = true;
        let start = out.len();
        for c in t.chars() {
            if c.is_whitespace() {
                if !last_space {
                    out.push(' ');
                }
                last_space = true;
            } else {
                out.push(c);
                last_space = false;
            }
        }
        while out.ends_with(' ') {
            out.pop();
        }
        // Lines left with nothing but punctuation (`()`, `,`) from removed templates carry no prose.
        if out[start..].chars().all(|c| !c.is_alphanumeric()) {
            out.truncate(start);
        } else {
            out.push('\n');
        }
    }
    // Spaces before punctuation left by removed templates/refs: "word ." -> "word.".
    let out = out
        .replace(" ,", ",")
        .replace(" .", ".")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("()", "");
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::to_plain_text as t;

    #[test]
    fn links_labels_and_trails() {
        assert_eq!(
            t("A [[cat]]s and [[Dog|dogs]] and [[Paris (France)|]]."),
            "A cats and dogs and Paris."
        );
        // A leading colon makes a category link an ordinary visible link.
        assert_eq!(
            t("See [[:Category:Foo|the category]] page."),
            "See the category page."
        );
    }

    #[test]
    fn files_categories_interwiki_go() {
        let s = "Text [[File:X.jpg|thumb|A [[nested]] caption]] more.\n[[Category:Things]]\n[[de:Ding]]";
        assert_eq!(t(s), "Text more.");
    }

    #[test]
    fn templates_refs_comments_go() {
        let s = "Born{{efn|x {{nested}} y}} in 1900<ref name=a>{{cite web|url=x}}</ref><ref name=b/> <!-- hidden -->here.";
        assert_eq!(t(s), "Born in 1900 here.");
    }

    #[test]
    fn tables_go_and_headings_stay() {
        let s = "Intro.\n{| class=\"wikitable\"\n|-\n| a || b\n{|\n| nested\n|}\n|}\n== History ==\nOld.";
        assert_eq!(t(s), "Intro.\nHistory\nOld.");
    }

    #[test]
    fn quotes_lists_entities() {
        let s = "'''Bold''' and ''it''.\n* item one\n# item two\nA&nbsp;B &amp; C &#233; &#x41;";
        assert_eq!(t(s), "Bold and it.\nitem one\nitem two\nA B & C é A");
    }

    #[test]
    fn multibyte_text_survives_every_pass() {
        let s = "Ἀναρχία {{x|ἀ}} and [[Ἀθῆναι|Athens]] — “quoted” [http://x.org ἀβγ] <span>é</span>\n{|\n|ἀ\n|}\nend";
        assert_eq!(t(s), "Ἀναρχία and Athens — “quoted” ἀβγ é\nend");
    }

    #[test]
    fn unbalanced_markup_does_not_swallow_the_article() {
        assert_eq!(
            t("Start {{unclosed|x and then more text. [[Link]] end."),
            "Start unclosed|x and then more text. Link end."
        );
        assert_eq!(t("A<ref>{{cite|t=x</ref name=a> y}}</ref> B."), "A B.");
        assert_eq!(t("Stray }} close."), "Stray close.");
    }

    /// Converts `page` on a thread with a 256 KiB stack: recursion whose depth the page controls
    /// overflows it (aborting the test binary) long before the sizes below.
    fn on_small_stack(page: String) -> String {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || t(&page))
            .expect("spawn")
            .join()
            .expect("converter panicked")
    }

    // The hostile pages below (up to 2.75 MB) are sized so that the old recursive converter overflowed
    // the stack and the old quadratic one took many minutes; these take milliseconds. No timing is
    // asserted: a quadratic regression shows as a test that does not end.

    #[test]
    fn unclosed_templates_are_text_without_recursion() {
        // Used to recurse once per unclosed `{{` (and keep a copy of the page per level).
        let page = format!("Start {} end.\nNext [[line]].", "{{".repeat(20_000));
        assert_eq!(on_small_stack(page), "Start end.\nNext line.");
        // Closed templates after unclosed openers still go.
        let page = format!("A {}b {{{{x|y}}}} c.", "{{a ".repeat(20_000));
        let want = format!("A {}b c.", "a ".repeat(20_000));
        assert_eq!(on_small_stack(page), want);
    }

    #[test]
    fn deeply_nested_templates_go() {
        let page = format!(
            "Before {}core{} after.",
            "{{x|".repeat(20_000),
            "}}".repeat(20_000)
        );
        assert_eq!(on_small_stack(page), "Before after.");
    }

    #[test]
    fn deeply_nested_links_keep_the_innermost_label() {
        // A label's links are rewritten too; that used to recurse once per level.
        let page = format!(
            "A {}word{}s here.",
            "[[".repeat(20_000),
            "]]".repeat(20_000)
        );
        assert_eq!(on_small_stack(page), "A words here.");
    }

    #[test]
    fn unclosed_file_links_are_linear() {
        // Each unclosed `[[` used to scan the rest of the page for its `]]`.
        let page = format!(
            "Intro.\n{}\nText [[File:b.jpg|thumb|cap]] and [[dog]]s.",
            "[[File:a.jpg|".repeat(60_000)
        );
        let want = format!("Intro.\n{}\nText and dogs.", "File:a.jpg|".repeat(60_000));
        assert_eq!(on_small_stack(page), want);
    }

    #[test]
    fn unclosed_refs_are_linear() {
        // Each unclosed `<ref>` used to scan the rest of the page for `</ref`.
        let page = format!("A<ref>gone</ref> {}B.", "<ref>x ".repeat(150_000));
        let want = format!("A {}B.", "x ".repeat(150_000));
        assert_eq!(on_small_stack(page), want);
    }

    #[test]
    fn other_unclosed_markup_is_linear() {
        // `<tag` without `>`, `&` without `;`, `[http://` without `]`: each used to search the rest.
        let page = format!(
            "{}{}{}",
            "<a ".repeat(500_000),
            "&".repeat(500_000),
            "[http://x ".repeat(125_000)
        );
        let want = page.trim_end().to_string();
        assert_eq!(on_small_stack(page), want);
    }

    #[test]
    fn external_links() {
        assert_eq!(
            t("See [http://x.org the site] and [http://y.org]."),
            "See the site and."
        );
    }
}
