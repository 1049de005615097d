//! MediaWiki markup -> plain text, in the spirit of WikiExtractor and gensim's `filter_wiki`.
//!
//! Dropped whole: comments, `<ref>` and other non-prose tags with their content, templates `{{…}}`
//! (nested, parser functions included), tables `{|…|}`, files/images (with nested captions),
//! categories, interwiki and other namespaced links, magic words.
//! Kept as text: `[[target|label]]` -> label, `[[target]]` -> target (plus a link trail: `[[cat]]s`),
//! `[url label]` -> label, headings (own line), list items (markers dropped), bold/italic content,
//! HTML entities decoded. Paragraph breaks are kept as newlines: the sentence splitter treats each
//! line as ending a sentence.

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

/// Converts one article's wikitext to plain text.
pub fn to_plain_text(wikitext: &str) -> String {
    let s = strip_comments(wikitext);
    // Templates before tags: a `</ref>` typed inside a citation template must not end the ref early.
    let s = strip_nested(&s, "{{", "}}");
    let s = strip_drop_tags(&s);
    let s = strip_tables(&s);
    let s = rewrite_links(&s);
    let s = rewrite_external_links(&s);
    let s = strip_html_tags(&s);
    finish_lines(&s)
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

/// If `s` starts with an opening tag (`<name …>` or `<name …/>`), returns (name, tag length, self-closing).
fn opening_tag(s: &str) -> Option<(String, usize, bool)> {
    let b = s.as_bytes();
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
    let end = s.find('>')?;
    let self_closing = s[..end].ends_with('/');
    Some((
        s[1..1 + name_len].to_ascii_lowercase(),
        end + 1,
        self_closing,
    ))
}

fn strip_drop_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find('<') {
        let at = i + off;
        out.push_str(&s[i..at]);
        match opening_tag(&s[at..]) {
            Some((name, len, self_closing)) if DROP_TAGS.contains(&name.as_str()) => {
                if self_closing {
                    i = at + len;
                    continue;
                }
                let close = format!("</{name}");
                match find_ci(&s[at + len..], &close) {
                    Some(c) => {
                        let after = at + len + c;
                        i = s[after..]
                            .find('>')
                            .map(|g| after + g + 1)
                            .unwrap_or(s.len());
                    }
                    // An unclosed <ref> swallows nothing: drop only the tag itself.
                    None => i = at + len,
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

/// Removes balanced `open … close` regions, nesting included; an unbalanced opener is left as text.
fn strip_nested(s: &str, open: &str, close: &str) -> String {
    let (b, open_b, close_b) = (s.as_bytes(), open.as_bytes(), close.as_bytes());
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut i = 0;
    let mut start = 0;
    let mut outer = 0;
    // Byte-wise: the delimiters are ASCII, so every cut lands on a char boundary.
    while i < b.len() {
        if b[i..].starts_with(open_b) {
            if depth == 0 {
                out.push_str(&s[start..i]);
                outer = i;
            }
            depth += 1;
            i += open_b.len();
        } else if depth > 0 && b[i..].starts_with(close_b) {
            depth -= 1;
            i += close_b.len();
            if depth == 0 {
                start = i;
            }
        } else {
            i += 1;
        }
    }
    if depth == 0 {
        out.push_str(&s[start..]);
    } else {
        // An opener never closed: it is a stray brace pair, not a region; drop just it and go on, so
        // one typo does not swallow the rest of the article.
        out.push_str(&strip_nested(&s[outer + open_b.len()..], open, close));
    }
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

/// Finds the `]]` closing the link that starts at `s[0..2] == "[["`, with nesting.
fn link_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i..].starts_with(b"[[") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"]]") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn is_interwiki(prefix: &str) -> bool {
    // Language links: `en:`, `de:`, `zh-yue:`, `simple:`.
    let p = prefix.trim_start_matches(':');
    (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_lowercase())
        || p.contains('-') && p.len() <= 12 && p.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        || p == "simple"
}

fn rewrite_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find("[[") {
        let at = i + off;
        out.push_str(&s[i..at]);
        let Some(len) = link_end(&s[at..]) else {
            // Unclosed link: keep the rest as text without the brackets.
            i = at + 2;
            continue;
        };
        let inner = &s[at + 2..at + len - 2];
        let mut next = at + len;
        let target = inner.split('|').next().unwrap_or("").trim();
        let drop = match target.split_once(':') {
            Some((prefix, _)) => {
                let p = prefix.trim().trim_start_matches(':').to_ascii_lowercase();
                DROP_NAMESPACES.contains(&p.as_str()) || is_interwiki(&p)
            }
            None => false,
        };
        if !drop {
            let label = match inner.rsplit_once('|') {
                // `[[Target (disambiguation)|]]`: the pipe trick shows the target without the brackets.
                Some((t, "")) => t.split(" (").next().unwrap_or(t).trim(),
                Some((_, label)) => label.trim(),
                None => target.trim_start_matches(':'),
            };
            out.push_str(&rewrite_links(label));
            // Link trail: `[[bus]]es` -> "buses".
            let trail = s[next..]
                .bytes()
                .take_while(|c| c.is_ascii_lowercase())
                .count();
            out.push_str(&s[next..next + trail]);
            next += trail;
        }
        i = next;
    }
    out.push_str(&s[i..]);
    out
}

fn rewrite_external_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find('[') {
        let at = i + off;
        out.push_str(&s[i..at]);
        let rest = &s[at + 1..];
        let is_url = ["http://", "https://", "ftp://", "//", "mailto:"]
            .iter()
            .any(|p| rest.starts_with(p));
        match (is_url, rest.find(']')) {
            (true, Some(end)) if !rest[..end].contains('\n') => {
                if let Some((_, label)) = rest[..end].split_once(' ') {
                    out.push_str(label.trim());
                }
                i = at + 1 + end + 1;
            }
            _ => {
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
    let mut i = 0;
    while let Some(off) = s[i..].find('<') {
        let at = i + off;
        out.push_str(&s[i..at]);
        let rest = &s[at..];
        let closing = rest.starts_with("</");
        let name_start = if closing { 2 } else { 1 };
        let is_tag = rest[name_start..].starts_with(|c: char| c.is_ascii_alphabetic());
        match (is_tag, rest.find('>')) {
            (true, Some(end)) if !rest[..end].contains('\n') => {
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
                i = at + end + 1;
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
        let decoded = rest.find(';').filter(|&e| e > 0 && e <= 10).and_then(|e| {
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

    #[test]
    fn external_links() {
        assert_eq!(
            t("See [http://x.org the site] and [http://y.org]."),
            "See the site and."
        );
    }
}
