//! Line records handed on unparsed (`ReadOptions::defer_parsing`): `prepare`'s reader thread only finds
//! line ends, and the JSON or TSV parsing of each line, UTF-8 check included, runs in the workers.

use super::*;

/// One JSON Lines or TSV line as read, with where it came from. [`RawRecord::parse`] makes it exactly
/// the item the reader would have made of it (the same document, or the same skip and message).
#[derive(Debug, Clone)]
pub struct RawRecord {
    line: Vec<u8>,
    format: Format,
    name: Arc<str>,
    /// The line's number within its range, counted from `base`.
    rel: u64,
    base: Arc<LineBase>,
}

impl RawRecord {
    /// Reads every line of `reader` into raw records; blank lines (which make no record) are
    /// dropped here, as the parsing readers drop them, so records are counted the same (partitions
    /// keep every N-th record).
    pub(super) fn read_lines(
        reader: &mut dyn BufRead,
        name: &str,
        opts: &ReadOptions,
        base: &Arc<LineBase>,
        format: Format,
        sink: &mut dyn FnMut(Item) -> Result<()>,
    ) -> Result<()> {
        let shared_name: Arc<str> = name.into();
        for_each_line_bytes(reader, name, opts, base, sink, |line_no, buf, sink| {
            let blank = match format {
                Format::Jsonl => is_blank_json_line(buf),
                _ => buf.is_empty(),
            };
            if blank {
                return Ok(());
            }
            sink(Item::Raw(RawRecord {
                line: std::mem::take(buf),
                format,
                name: shared_name.clone(),
                rel: line_no.rel,
                base: base.clone(),
            }))
        })
    }

    /// The line's length in bytes.
    pub fn byte_len(&self) -> usize {
        self.line.len()
    }

    /// The document or skip this line makes.
    pub fn parse(self, opts: &ReadOptions) -> Item {
        let line_no = LineNo {
            rel: self.rel,
            base: &self.base,
        };
        let line = match String::from_utf8(self.line) {
            Ok(line) => line,
            Err(e) => return invalid_utf8(&self.name, line_no, e.utf8_error()),
        };
        match self.format {
            Format::Jsonl => jsonl_item(&line, &self.name, line_no, opts),
            Format::Tsv => tsv_item(&line, &self.name, line_no, opts),
            other => unreachable!("{other:?} lines are not deferred"),
        }
    }
}
