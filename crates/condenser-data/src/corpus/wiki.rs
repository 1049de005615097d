//! Streaming reader of MediaWiki XML exports (`*pages-articles*.xml[.bz2]`).
//!
//! Walks `<page>` elements with a pull parser; only the current page is held. Namespace-0 articles
//! become documents (markup converted later, in the parallel stage); redirects and other namespaces are
//! counted skips.

use std::io::BufRead;

use anyhow::Result;
use quick_xml::events::Event;

use super::{Document, Item, Markup, Skip, SkipReason};

#[derive(Default)]
struct Page {
    title: String,
    ns: String,
    id: String,
    redirect: bool,
    text: String,
    /// Bytes of the fields kept so far; past the record limit the page is dropped, not held.
    bytes: usize,
    too_large: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Field {
    None,
    Title,
    Ns,
    Id,
    Text,
}

/// Deepest element nesting accepted (a dump nests 4 deep); deeper is malformed, not a stack to grow.
const MAX_DEPTH: usize = 256;

/// Reads every page of `reader`, handing documents and skips to `sink`. A page whose fields exceed
/// `max_record_bytes` is skipped (`record_too_large`) without being held: no XML text node is read
/// into memory past that limit (see [`Capped`]).
pub fn read(
    reader: &mut dyn BufRead,
    name: &str,
    max_record_bytes: usize,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    read_with(reader, name, max_record_bytes, true, sink)
}

/// [`read`], with or without [`take_plain_text`] (the tests compare the two).
fn read_with(
    reader: &mut dyn BufRead,
    name: &str,
    max_record_bytes: usize,
    fast_text: bool,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut xml = quick_xml::Reader::from_reader(Capped::new(reader, max_record_bytes));
    xml.config_mut().trim_text(false);
    // A text run cut at the limit may end inside `&...`: keep such a lone `&` as text.
    xml.config_mut().allow_dangling_amp = true;
    let mut buf = Vec::new();
    let mut page: Option<Page> = None;
    let mut field = Field::None;
    // The page id is the first <id> directly under <page>; revision and contributor ids come later.
    let mut depth_in_page = 0usize;
    let mut depth = 0usize;
    let mut pages = 0u64;
    let mut last_id = String::new();
    let mut take_text = false;
    loop {
        let event = xml.read_event_into(&mut buf);
        let cut = xml.get_mut().end_event();
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                sink(failure(&xml, e, name, pages, &last_id))?;
                return Ok(());
            }
        };
        if cut {
            if let Some(p) = page.as_mut() {
                p.drop_fields();
            }
        }
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    sink(Item::Skip(Skip {
                        reason: SkipReason::MalformedXml,
                        detail: format!(
                            "{name}: byte {} of the decoded XML: elements nested more than {MAX_DEPTH} deep; the rest of the file is skipped",
                            xml.get_ref().offset
                        ),
                    }))?;
                    return Ok(());
                }
                let tag = e.local_name();
                match tag.as_ref() {
                    "page" => {
                        page = Some(Page::default());
                        depth_in_page = 0;
                    }
                    _ if page.is_some() => {
                        depth_in_page += 1;
                        field = match (tag.as_ref(), depth_in_page) {
                            ("title", 1) => Field::Title,
                            ("ns", 1) => Field::Ns,
                            ("id", 1) => Field::Id,
                            ("text", 2) => Field::Text,
                            _ => Field::None,
                        };
                        take_text = field == Field::Text;
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if let Some(p) = page.as_mut() {
                    if e.local_name().as_ref() == "redirect" {
                        p.redirect = true;
                    }
                }
            }
            Event::Text(t) => {
                if let Some(p) = page.as_mut() {
                    push_field(p, field, &t.xml10_content(), max_record_bytes);
                }
            }
            Event::CData(t) => {
                if let Some(p) = page.as_mut() {
                    push_field(p, field, &t, max_record_bytes);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(p) = page.as_mut() {
                    let mut char_buf = [0u8; 4];
                    let other;
                    let resolved: &str = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.encode_utf8(&mut char_buf),
                        _ => match r.xml10_content().as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            name => {
                                other = format!("&{name};");
                                &other
                            }
                        },
                    };
                    push_field(p, field, resolved, max_record_bytes);
                    take_text = field == Field::Text;
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                if e.local_name().as_ref() == "page" {
                    if let Some(p) = page.take() {
                        pages += 1;
                        last_id.clone_from(&p.id);
                        sink(page_item(p, name, max_record_bytes))?;
                    }
                } else if page.is_some() {
                    depth_in_page = depth_in_page.saturating_sub(1);
                    field = Field::None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        // After a start tag or a reference the parser reads text next: the plain part of a page's
        // text is taken here, bypassing its events.
        if std::mem::take(&mut take_text) && fast_text {
            if let Err(e) = take_plain_text(xml.get_mut(), page.as_mut(), max_record_bytes) {
                let e = quick_xml::Error::Io(std::sync::Arc::new(e));
                sink(failure(&xml, e, name, pages, &last_id))?;
                return Ok(());
            }
        }
        buf.clear();
    }
    Ok(())
}

/// The skip for an XML or read error at the parser's position (the rest of the file is skipped).
fn failure(
    xml: &quick_xml::Reader<Capped<'_>>,
    e: quick_xml::Error,
    name: &str,
    pages: u64,
    last_id: &str,
) -> Item {
    let after = if pages == 0 {
        "before the first page".to_string()
    } else {
        format!("after {pages} page(s), the last with id {last_id}")
    };
    let (reason, what) = match &e {
        quick_xml::Error::Io(io) if io.get_ref().is_some_and(|r| r.is::<TooLarge>()) => (
            SkipReason::RecordTooLarge,
            format!(
                "byte {} of the decoded XML ({after}): {io}",
                xml.get_ref().offset
            ),
        ),
        quick_xml::Error::Io(io) => (
            SkipReason::ReadError,
            format!(
                "read failed at byte {} of the decoded XML ({after}): {io}",
                xml.get_ref().offset
            ),
        ),
        _ => {
            // A syntax error has its own position; text that is not UTF-8 is found once its run is
            // read, so the parser's position is the run's end.
            let at = match &e {
                quick_xml::Error::Syntax(_) | quick_xml::Error::IllFormed(_) => {
                    xml.error_position()
                }
                _ => xml.buffer_position(),
            };
            (
                SkipReason::MalformedXml,
                format!(
                    "byte {} of the decoded XML ({after}): {e}",
                    at + xml.get_ref().discarded
                ),
            )
        }
    };
    Item::Skip(Skip {
        reason,
        detail: format!("{name}: {what}; the rest of the file is skipped"),
    })
}

/// Takes a page's text from the buffered bytes while it is plain, as the parser's Text and
/// GeneralRef events would give it: runs of UTF-8 without `\r` up to the next `<` or `&`, and the five
/// named references. It stops at markup and at anything else (another reference, a carriage return to
/// normalise, bytes that are not UTF-8, a run the buffer does not hold whole), which the parser then
/// reads as it would have: it is in its text state after a start tag or a reference, and this stops
/// only where one of its text or reference events would begin. Why: the parser's events cost about a
/// hundred nanoseconds each, and wikitext has a reference every hundred bytes; the reader thread is
/// the serial stage of a dump.
fn take_plain_text(
    capped: &mut Capped<'_>,
    page: Option<&mut Page>,
    limit: usize,
) -> std::io::Result<()> {
    let Some(page) = page else {
        return Ok(());
    };
    loop {
        let buf = capped.fill_buf()?;
        let mut at = 0;
        let mut stopped = false;
        while at < buf.len() {
            if buf[at] == b'<' {
                stopped = true;
                break;
            }
            if buf[at] == b'&' {
                let rest = &buf[at + 1..];
                let resolved = match memchr::memchr3(b';', b'&', b'<', rest) {
                    Some(end) if rest[end] == b';' => match &rest[..end] {
                        b"amp" => Some(("&", end + 2)),
                        b"lt" => Some(("<", end + 2)),
                        b"gt" => Some((">", end + 2)),
                        b"quot" => Some(("\"", end + 2)),
                        b"apos" => Some(("'", end + 2)),
                        _ => None,
                    },
                    _ => None,
                };
                let Some((text, len)) = resolved else {
                    stopped = true;
                    break;
                };
                push_field(page, Field::Text, text, limit);
                at += len;
                continue;
            }
            let run = match memchr::memchr2(b'<', b'&', &buf[at..]) {
                Some(end) => &buf[at..at + end],
                None => {
                    stopped = true;
                    break;
                }
            };
            let text = match std::str::from_utf8(run) {
                Ok(text) if memchr::memchr(b'\r', run).is_none() => text,
                _ => {
                    stopped = true;
                    break;
                }
            };
            push_field(page, Field::Text, text, limit);
            at += run.len();
        }
        let empty = buf.is_empty();
        capped.take(at);
        if stopped || empty {
            return Ok(());
        }
    }
}

const MARKUP_FLOOR: usize = 1 << 20;

/// The error [`Capped`] gives for markup (a tag, comment, CDATA section) longer than the limit.
#[derive(Debug, thiserror::Error)]
#[error("an XML tag, comment or CDATA section longer than --max-record-bytes {0}")]
struct TooLarge(usize);

/// The decoded stream as the XML parser sees it: no single event may take more than `limit` bytes.
/// A text run (or entity reference) that reaches the limit is cut at a character boundary and the
/// rest of it, up to the next `<` or `&`, is discarded unread (`end_event` then says so, and the
/// page it belongs to is dropped); markup that long is an error. Without this the parser buffers a
/// text node whole, however long.
struct Capped<'a> {
    inner: &'a mut dyn BufRead,
    limit: usize,
    /// Bytes handed to the parser in the current event.
    used: usize,
    /// The current event started with `<`.
    markup: bool,
    cut: bool,
    /// Decoded bytes consumed, and those the parser did not see (discarded past the limit, or taken
    /// by [`take_plain_text`]).
    offset: u64,
    discarded: u64,
}

impl<'a> Capped<'a> {
    fn new(inner: &'a mut dyn BufRead, limit: usize) -> Self {
        Capped {
            inner,
            limit: limit.max(1),
            used: 0,
            markup: false,
            cut: false,
            offset: 0,
            discarded: 0,
        }
    }

    /// The most one event may take: the record limit for text, at least 1 MiB for markup (a tag is
    /// not a record, and the root tag of a dump alone is a few hundred bytes).
    fn cap(&self) -> usize {
        if self.markup {
            self.limit.max(MARKUP_FLOOR)
        } else {
            self.limit
        }
    }

    /// Consumes `n` bytes the parser does not see (taken by [`take_plain_text`]): counted as
    /// discarded, so that the parser's positions plus `discarded` stay offsets of the stream.
    fn take(&mut self, n: usize) {
        self.inner.consume(n);
        self.offset += n as u64;
        self.discarded += n as u64;
    }

    /// Called after every event: whether it was cut; the next event starts afresh.
    fn end_event(&mut self) -> bool {
        self.used = 0;
        std::mem::take(&mut self.cut)
    }
}

impl std::io::Read for Capped<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        super::lines::read_from_buffer(self, out)
    }
}

impl BufRead for Capped<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        // The common case first, with one call to the inner reader: the event has room for all
        // that is buffered.
        let buf = self.inner.fill_buf()?;
        let avail = buf.len();
        if self.used == 0 && avail > 0 {
            self.markup = buf[0] == b'<';
        }
        let room = self.cap().saturating_sub(self.used);
        if avail <= room {
            // Reborrowed: the borrow checker cannot see that `self.markup` and `buf` are disjoint.
            return self.inner.fill_buf();
        }
        // Hand out at most `room` bytes, cut at a character boundary.
        let mut n = room;
        {
            let buf = self.inner.fill_buf()?;
            while n > 0 && buf[n] & 0xC0 == 0x80 {
                n -= 1;
            }
        }
        if n == 0 {
            if self.markup {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    TooLarge(self.cap()),
                ));
            }
            // Text past the limit: discard up to the next markup or reference.
            loop {
                let buf = self.inner.fill_buf()?;
                if buf.is_empty() {
                    return Ok(&[]);
                }
                match memchr::memchr2(b'<', b'&', buf) {
                    Some(0) => break,
                    Some(i) => {
                        self.cut = true;
                        self.inner.consume(i);
                        self.offset += i as u64;
                        self.discarded += i as u64;
                        break;
                    }
                    None => {
                        self.cut = true;
                        let i = buf.len();
                        self.inner.consume(i);
                        self.offset += i as u64;
                        self.discarded += i as u64;
                    }
                }
            }
            // The parser stops at this delimiter without taking it; the next event starts there.
            let buf = self.inner.fill_buf()?;
            return Ok(&buf[..1]);
        }
        Ok(&self.inner.fill_buf()?[..n])
    }

    fn consume(&mut self, amt: usize) {
        // An event may begin with a consume: the parser takes the `<` that ended the text before it
        // without asking for the buffer again, and that `<` makes the event markup.
        if self.used == 0 && amt > 0 {
            if let Ok(buf) = self.inner.fill_buf() {
                self.markup = buf.first() == Some(&b'<');
            }
        }
        self.inner.consume(amt);
        self.used += amt;
        self.offset += amt as u64;
    }
}

impl Page {
    /// Forgets the page's fields (it is over the limit); only the fact is kept.
    fn drop_fields(&mut self) {
        self.too_large = true;
        self.text = String::new();
        self.bytes = 0;
    }
}

fn push_field(p: &mut Page, field: Field, s: &str, limit: usize) {
    if field == Field::None || p.too_large {
        return;
    }
    p.bytes += s.len();
    if p.bytes > limit {
        p.drop_fields();
        return;
    }
    match field {
        Field::Title => p.title.push_str(s),
        Field::Ns => p.ns.push_str(s),
        Field::Id => p.id.push_str(s),
        Field::Text => p.text.push_str(s),
        Field::None => {}
    }
}

fn page_item(p: Page, name: &str, limit: usize) -> Item {
    let id = p.id.trim().to_string();
    if p.too_large {
        return Item::Skip(Skip {
            reason: SkipReason::RecordTooLarge,
            detail: format!(
                "{name}: page {id} ({}) is longer than --max-record-bytes {limit}; skipped unread",
                p.title
            ),
        });
    }
    if p.ns.trim() != "0" {
        return Item::Skip(Skip {
            reason: SkipReason::NotArticle,
            detail: format!(
                "{name}: page {id} ({}) is in namespace {}",
                p.title,
                p.ns.trim()
            ),
        });
    }
    if p.redirect
        || p.text
            .trim_start()
            .get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("#redirect"))
    {
        return Item::Skip(Skip {
            reason: SkipReason::Redirect,
            detail: format!("{name}: page {id} ({}) is a redirect", p.title),
        });
    }
    Item::Doc(Document {
        id,
        title: Some(p.title),
        text: p.text,
        markup: Markup::Wikitext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = r#"<mediawiki><siteinfo><sitename>W</sitename></siteinfo>
<page><title>Anarchism</title><ns>0</ns><id>12</id><revision><id>999</id><contributor><id>5</id></contributor>
<text xml:space="preserve">'''Anarchism''' is a [[political philosophy]] &amp; movement.&lt;ref&gt;x&lt;/ref&gt;</text></revision></page>
<page><title>AccessibleComputing</title><ns>0</ns><id>10</id><redirect title="Computer accessibility" /><revision><id>1</id><text>#REDIRECT [[Computer accessibility]]</text></revision></page>
<page><title>Talk:X</title><ns>1</ns><id>13</id><revision><text>talk</text></revision></page>
</mediawiki>"#;

    #[test]
    fn pages_redirects_namespaces() {
        let mut items = Vec::new();
        read(&mut XML.as_bytes(), "t.xml", 1 << 20, &mut |i| {
            items.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(items.len(), 3);
        match &items[0] {
            Item::Doc(d) => {
                assert_eq!(d.id, "12");
                assert_eq!(d.title.as_deref(), Some("Anarchism"));
                assert_eq!(
                    d.text,
                    "'''Anarchism''' is a [[political philosophy]] & movement.<ref>x</ref>"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&items[1], Item::Skip(s) if s.reason == SkipReason::Redirect));
        assert!(matches!(&items[2], Item::Skip(s) if s.reason == SkipReason::NotArticle));
    }

    #[test]
    fn pages_over_the_limit_are_skipped_unread() {
        let big = "é".repeat(3000);
        let xml = format!(
            r#"<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="en">
<page><title>Big</title><ns>0</ns><id>1</id><revision><text>{big} &amp; {big}&lt;</text></revision></page>
<page><title>Small</title><ns>0</ns><id>2</id><revision><text>small &amp; é text</text></revision></page>
</mediawiki>"#
        );
        let mut items = Vec::new();
        read(&mut xml.as_bytes(), "t.xml", 201, &mut |i| {
            items.push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(
            matches!(&items[0], Item::Skip(s) if s.reason == SkipReason::RecordTooLarge && s.detail.contains("page 1 (Big)")),
            "{items:?}"
        );
        match &items[1] {
            Item::Doc(d) => assert_eq!((d.id.as_str(), d.text.as_str()), ("2", "small & é text")),
            other => panic!("{other:?}"),
        }
    }

    /// Everything `read_with` produced, as text (items and the read's own error).
    fn read_all(xml: &[u8], buffer: usize, limit: usize, fast_text: bool) -> Vec<String> {
        let mut reader = std::io::BufReader::with_capacity(buffer, xml);
        let mut items = Vec::new();
        let result = read_with(&mut reader, "t.xml", limit, fast_text, &mut |i| {
            items.push(format!("{i:?}"));
            Ok(())
        });
        items.push(format!("{:?}", result.map_err(|e| e.to_string())));
        items
    }

    #[test]
    fn plain_text_taken_from_the_buffer_reads_as_the_parser_does() {
        // Pages built of pieces that the fast path takes (plain runs, the five named references)
        // and pieces it must leave to the parser (other and numeric references, a lone `&`, `\r`,
        // CDATA, comments, nested and unclosed tags, bytes that are not UTF-8), read through buffers
        // of many sizes and under record limits that cut pages.
        const PIECES: &[&[u8]] = &[
            b"plain words ",
            b"&amp;",
            b"&lt;ref&gt;",
            b"&quot;q&quot;",
            b"&apos;",
            b"&#160;",
            b"&#x263A;",
            b"&nbsp;",
            b"&;",
            b"& ",
            b"&amp",
            b"a\r\nb",
            b"\r",
            b"\xc3\xa9t\xc3\xa9 ",
            b"\xff",
            b"\xe2\x82",
            b"<![CDATA[x < y & z]]>",
            b"<!-- c -->",
            b"<b>bold</b>",
            b"<i>",
            b"</i>",
            b"x\ty\n",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..3000 {
            let mut xml = b"<mediawiki>".to_vec();
            for page in 0..1 + next(3) {
                xml.extend_from_slice(
                    format!("<page><title>T{page}</title><ns>0</ns><id>{page}</id><revision><text xml:space=\"preserve\">").as_bytes(),
                );
                for _ in 0..next(30) {
                    xml.extend_from_slice(PIECES[next(PIECES.len())]);
                }
                xml.extend_from_slice(b"</text></revision></page>\n");
            }
            if next(4) > 0 {
                xml.extend_from_slice(b"</mediawiki>");
            }
            let buffer = [1, 2, 3, 5, 8, 13, 64, 4096][next(8)];
            let limit = [1, 2, 3, 8, 40, 100, 1 << 20][next(7)];
            assert_eq!(
                read_all(&xml, buffer, limit, true),
                read_all(&xml, buffer, limit, false),
                "case {case}, buffer {buffer}, limit {limit}: {:?}",
                String::from_utf8_lossy(&xml)
            );
        }
    }

    #[test]
    fn markup_right_after_text_has_the_markup_limit() {
        // The parser takes the `<` that ends a text run without asking for the buffer again: the
        // CDATA section is still markup (limited to 1 MiB), not text limited to the record size.
        let xml = b"<mediawiki><page><title>T</title><ns>0</ns><id>1</id><revision><text>ab<![CDATA[0123456789abcde]]>cd</text></revision></page></mediawiki>";
        let items = read_all(xml, 4096, 24, false);
        assert!(
            items[0].contains("text: \"ab0123456789abcdecd\""),
            "{items:?}"
        );
    }
}
