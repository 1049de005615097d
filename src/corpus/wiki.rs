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
}

#[derive(Clone, Copy, PartialEq)]
enum Field {
    None,
    Title,
    Ns,
    Id,
    Text,
}

/// Reads every page of `reader`, handing documents and skips to `sink`.
pub fn read(
    reader: &mut dyn BufRead,
    name: &str,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut xml = quick_xml::Reader::from_reader(reader);
    xml.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut page: Option<Page> = None;
    let mut field = Field::None;
    // The page id is the first <id> directly under <page>; revision and contributor ids come later.
    let mut depth_in_page = 0usize;
    loop {
        let event = match xml.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(e) => {
                let at = xml.error_position();
                sink(Item::Skip(Skip {
                    reason: SkipReason::MalformedXml,
                    detail: format!("{name}: byte {at} of the decoded XML: {e}; the rest of the file is skipped"),
                }))?;
                return Ok(());
            }
        };
        match event {
            Event::Start(e) => {
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
                    push_field(p, field, &t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(p) = page.as_mut() {
                    push_field(p, field, &t);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(p) = page.as_mut() {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => match r.xml10_content().as_ref() {
                            "amp" => "&".to_string(),
                            "lt" => "<".to_string(),
                            "gt" => ">".to_string(),
                            "quot" => "\"".to_string(),
                            "apos" => "'".to_string(),
                            other => format!("&{other};"),
                        },
                    };
                    push_field(p, field, &resolved);
                }
            }
            Event::End(e) => {
                if e.local_name().as_ref() == "page" {
                    if let Some(p) = page.take() {
                        sink(page_item(p, name))?;
                    }
                } else if page.is_some() {
                    depth_in_page = depth_in_page.saturating_sub(1);
                    field = Field::None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(())
}

fn push_field(p: &mut Page, field: Field, s: &str) {
    match field {
        Field::Title => p.title.push_str(s),
        Field::Ns => p.ns.push_str(s),
        Field::Id => p.id.push_str(s),
        Field::Text => p.text.push_str(s),
        Field::None => {}
    }
}

fn page_item(p: Page, name: &str) -> Item {
    let id = p.id.trim().to_string();
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
        read(&mut XML.as_bytes(), "t.xml", &mut |i| {
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
}
