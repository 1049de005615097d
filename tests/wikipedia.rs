//! The markup stripper on real MediaWiki exports: the gensim test dump (206 pages) and its table-markup
//! sample (both from the pinned gensim wheel, see DATA.md).

mod common;

use condenser::corpus::{read_input, wikitext, Input, Item, ReadOptions, SkipReason};

fn pages(file: &str) -> (Vec<(String, String)>, Vec<SkipReason>) {
    let path = common::data(&format!("enwiki/{file}"));
    let mut docs = Vec::new();
    let mut skips = Vec::new();
    read_input(
        &Input { path, exists: true },
        &ReadOptions::default(),
        Default::default(),
        &mut |item| {
            match item {
                Item::Doc(d) => docs.push((d.id, wikitext::to_plain_text(&d.text))),
                Item::Skip(s) => skips.push(s.reason),
                Item::End { .. } => {}
                Item::Raw(_) => unreachable!("lines are parsed unless deferral is asked for"),
            }
            Ok(())
        },
    )
    .unwrap();
    (docs, skips)
}

fn assert_clean(id: &str, text: &str) {
    for residue in [
        "{{", "}}", "[[", "]]", "<ref", "</ref", "'''", "{|", "|}", "<!--", "&nbsp;", "&amp;",
        "[http",
    ] {
        assert!(
            !text.contains(residue),
            "page {id}: {residue:?} left in:\n{}",
            &text[..text.len().min(2000)]
        );
    }
    assert!(
        text.split_whitespace().count() > 20,
        "page {id}: almost no text left"
    );
}

#[test]
fn gensim_dump_articles_redirects_and_clean_text() {
    let (docs, skips) =
        pages("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2");
    assert_eq!(docs.len(), 106, "106 full articles");
    assert_eq!(
        skips.iter().filter(|r| **r == SkipReason::Redirect).count(),
        99
    );
    assert_eq!(skips.len(), 100, "206 pages in all: {skips:?}");
    for (id, text) in &docs {
        assert_clean(id, text);
    }
    let anarchism = &docs.iter().find(|(id, _)| id == "12").unwrap().1;
    assert!(
        anarchism.starts_with(
            "Anarchism is a political philosophy that advocates self-governed societies"
        ),
        "{}",
        &anarchism[..300]
    );
}

#[test]
fn table_markup_sample_loses_its_tables() {
    let (docs, _) = pages("enwiki-table-markup.xml.bz2");
    assert!(!docs.is_empty());
    for (id, text) in &docs {
        assert_clean(id, text);
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with('|') || l.starts_with('!')),
            "page {id}: table rows left"
        );
        assert!(
            !text.contains("class=") && !text.contains("style="),
            "page {id}: table attributes left"
        );
    }
}
