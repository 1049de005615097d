//! The line formats: MS MARCO-style TSV and plain text (a document per line, or per blank-line
//! separated block).

use super::*;

pub(super) fn read_tsv(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &Arc<LineBase>,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    if opts.defer_parsing {
        return RawRecord::read_lines(reader, name, opts, base, Format::Tsv, sink);
    }
    for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
        if line.is_empty() {
            return Ok(());
        }
        sink(tsv_item(line, name, line_no, opts))
    })
}

/// The document (or skip) of one non-empty TSV line.
pub(super) fn tsv_item(line: &str, name: &str, line_no: LineNo<'_>, opts: &ReadOptions) -> Item {
    let cols: Vec<&str> = line.split('\t').collect();
    let Some(text) = cols.get(opts.text_column) else {
        return Item::Skip(Skip {
            reason: SkipReason::MissingColumn,
            detail: format!(
                "{name}:{line_no}: {} column(s), text column {} expected (use --text-column)",
                cols.len(),
                opts.text_column
            ),
        });
    };
    let id = match opts.id_column.and_then(|c| cols.get(c)) {
        Some(id) if opts.id_column != Some(opts.text_column) => id.to_string(),
        _ => format!("{name}:{line_no}"),
    };
    Item::Doc(Document {
        id,
        title: None,
        text: text.to_string(),
        markup: Markup::Plain,
    })
}

pub(super) fn read_text(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &Arc<LineBase>,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    if !opts.blank_line_docs {
        return for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
            if line.trim().is_empty() {
                return Ok(());
            }
            let doc = Document {
                id: format!("{name}:{line_no}"),
                title: None,
                text: line.to_string(),
                markup: Markup::Plain,
            };
            sink(Item::Doc(doc))
        });
    }
    // Blank-line-separated documents: a paragraph's lines are joined with newlines.
    let mut block = String::new();
    let mut start = 0u64;
    for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
        if line.trim().is_empty() {
            if !block.is_empty() {
                let doc = Document {
                    id: format!("{name}:{start}"),
                    title: None,
                    text: std::mem::take(&mut block),
                    markup: Markup::Plain,
                };
                sink(Item::Doc(doc))?;
            }
        } else {
            if block.is_empty() {
                start = line_no.get();
            } else {
                block.push('\n');
            }
            block.push_str(line);
            if block.len() > opts.max_record_bytes {
                block.clear();
                return sink(Item::Skip(Skip {
                    reason: SkipReason::RecordTooLarge,
                    detail: format!(
                        "{name}:{start}: block exceeds --max-record-bytes {}",
                        opts.max_record_bytes
                    ),
                }));
            }
        }
        Ok(())
    })?;
    if !block.is_empty() {
        sink(Item::Doc(Document {
            id: format!("{name}:{start}"),
            title: None,
            text: block,
            markup: Markup::Plain,
        }))?;
    }
    Ok(())
}
