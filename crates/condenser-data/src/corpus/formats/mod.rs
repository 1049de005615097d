//! The readers of every input format behind one entry point (`read_input`, `read_input_part`): the
//! format (detected or forced), the options, partitioning of one input, and the shared line walker;
//! each format's reader in its own file.

mod detect;
mod jsonl;
mod keyed_json;
mod parquet;
mod raw_record;
mod text;

pub use detect::detect;
use detect::*;
use jsonl::*;
use keyed_json::*;
use parquet::*;
pub use raw_record::RawRecord;
use text::*;

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::de::{MapAccess, Visitor};

use super::decode::ahead::Ahead;
use super::decode::decompress::{self, Compression};
use super::lines::{read_line_capped, Line};
use super::partition::byte_ranges::{LineBase, LineNo};
use super::{wiki, Document, Input, Item, Markup, Skip, SkipReason};

/// An input format, as detected or as forced with `--format`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Detect from the content (and the extension as a hint).
    Auto,
    /// MediaWiki XML export.
    Wiki,
    /// JSON Lines: one object per line (WikiExtractor, Hugging Face style).
    Jsonl,
    /// One JSON object keyed by title whose values are objects (`{"Title": {"text": ...}, ...}`).
    Json,
    /// Tab-separated: MS MARCO `collection.tsv` (`pid<TAB>text`).
    Tsv,
    /// Plain text: one document per line (or per blank-line-separated block).
    Text,
    /// Parquet with a text column (Hugging Face `wikimedia/wikipedia`).
    Parquet,
}

/// How to read records: fields, columns, limits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReadOptions {
    pub format: Format,
    /// JSON / Parquet field with the text; None: the first of text, contents, extract, body, passage.
    pub text_field: Option<String>,
    /// JSON / Parquet field with the id; None: the first of id, _id, docid, doc_id, pid.
    pub id_field: Option<String>,
    /// TSV column (0-based) with the text.
    pub text_column: usize,
    /// TSV column with the id, or none (then `file:line`).
    pub id_column: Option<usize>,
    /// Plain text: documents are separated by blank lines instead of one per line.
    pub blank_line_docs: bool,
    /// Longest record (line) read; longer ones are skipped and counted.
    pub max_record_bytes: usize,
    /// The run ends at the first bad record (`--on-error fail`): an over-long line is reported as soon
    /// as it passes the limit instead of after reading to its end, which may never come (a stream).
    /// Not a setting of the output, so not written into manifests.
    #[serde(skip)]
    pub stop_at_error: bool,
    /// JSONL and TSV lines are handed on unparsed ([`Item::Raw`]) for the caller to parse on other
    /// threads: `prepare`'s reader thread then only finds line ends. Not a setting of the output.
    #[serde(skip)]
    pub defer_parsing: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: Format::Auto,
            text_field: None,
            id_field: None,
            text_column: 1,
            id_column: Some(0),
            blank_line_docs: false,
            max_record_bytes: 16 << 20,
            stop_at_error: false,
            defer_parsing: false,
        }
    }
}

const TEXT_FIELDS: &[&str] = &["text", "contents", "extract", "body", "passage"];
const ID_FIELDS: &[&str] = &["id", "_id", "docid", "doc_id", "pid"];

/// Reads one input whole, handing every item to `sink`, and ends with `Item::End`.
/// An error from `sink` (`--on-error fail`) stops the read and is returned.
/// `counter` accumulates the raw bytes read (shared across inputs for progress; `End.bytes` is this
/// input's share).
pub fn read_input(
    input: &Input,
    opts: &ReadOptions,
    counter: Arc<AtomicU64>,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    read_input_part(input, opts, None, None, counter, &AtomicU64::new(0), sink)
}

/// Partition K of N of one input, and the stream offsets of a multi-stream bzip2 dump's index if
/// given (`--index`).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub k: u32,
    pub n: u32,
    pub bz2_index: Option<&'a [u64]>,
}

/// As [`read_input`], for partition `[K, N]` of the input (`None`: all of it). An uncompressed JSONL,
/// TSV or one-document-per-line text file is cut into N byte ranges at line boundaries and only range
/// K is read ([`super::partition::byte_ranges`]); a multi-stream bzip2 MediaWiki dump is cut at stream starts
/// ([`super::partition::stream_ranges`]); the bytes left to other partitions are added to `not_read` (for
/// progress). Any other input is read whole and every N-th record kept, from the K-th on (a record is
/// a document or a skip, so a skip about the whole input belongs to partition 0). `ahead`: the input
/// as [`super::decode::ahead::open`] opened it earlier (used when the input is read whole).
pub fn read_input_part(
    input: &Input,
    opts: &ReadOptions,
    part: Option<Part<'_>>,
    ahead: Option<Ahead>,
    counter: Arc<AtomicU64>,
    not_read: &AtomicU64,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    // Every N-th record, until the input turns out to be split by bytes.
    let by_bytes = std::cell::Cell::new(false);
    let mut record = 0u64;
    let mut filtered = |item: Item| -> Result<()> {
        if let Some(Part { k, n, .. }) = part {
            if !by_bytes.get() && !matches!(item, Item::End { .. }) {
                let r = record;
                record += 1;
                if r % n as u64 != k as u64 {
                    return Ok(());
                }
            }
        }
        sink(item)
    };
    let sink = &mut filtered;
    let name = input.name();
    let start = counter.load(Ordering::Relaxed);
    let end = |format, compression, counter: &AtomicU64| Item::End {
        bytes: counter.load(Ordering::Relaxed) - start,
        format,
        compression,
    };
    if !input.exists {
        sink(Item::Skip(Skip {
            reason: SkipReason::MissingPath,
            detail: format!("{name}: no such file"),
        }))?;
        return sink(end(opts.format, Compression::None, &counter));
    }
    // A partition may read only part of a compressed file (a dump's own streams): its head is looked
    // at with the serial decoder, and the parallel one started only to read the file through.
    let look_serially = part.is_some() && !input.is_stdin();
    let opened = match (look_serially, ahead) {
        (true, _) => decompress::open_serial(&input.path, counter.clone()),
        (false, Some(ahead)) => ahead.attach(&counter),
        (false, None) => decompress::open(&input.path, counter.clone()),
    };
    let (compression, mut reader) = match opened {
        Ok(x) => x,
        Err(e) => {
            sink(Item::Skip(Skip {
                reason: SkipReason::ReadError,
                detail: format!("{e:#}"),
            }))?;
            return sink(end(opts.format, Compression::None, &counter));
        }
    };
    let head = match decompress::peek(&mut *reader, 8192) {
        Ok(h) => h,
        Err(e) => {
            let detail = format!("{name}: cannot read ({compression:?} stream): {e}");
            sink(Item::Skip(Skip {
                reason: SkipReason::ReadError,
                detail,
            }))?;
            return sink(end(opts.format, compression, &counter));
        }
    };
    let mut head = head;
    let format = match opts.format {
        Format::Auto => {
            // A JSON head is decided from the whole first line (never from a truncated one), read
            // up to --max-record-bytes; beyond that the first entry's value decides, streaming.
            if first_non_space(&head) == Some(b'{') {
                if let Err(e) = extend_to_first_line(&mut *reader, &mut head, opts.max_record_bytes)
                {
                    let detail = format!("{name}: cannot read ({compression:?} stream): {e}");
                    sink(Item::Skip(Skip {
                        reason: SkipReason::ReadError,
                        detail,
                    }))?;
                    return sink(end(Format::Jsonl, compression, &counter));
                }
            }
            detect(&head, &input.path)
        }
        f => f,
    };
    if head.is_empty() {
        sink(Item::Skip(Skip {
            reason: SkipReason::EmptyFile,
            detail: format!("{name}: empty input"),
        }))?;
        return sink(end(format, compression, &counter));
    }
    // The same window for every format (a JSON head may have been read further, to its first
    // line's end; a NUL far into it is that line's problem, not the file's).
    let window = &head[..head.len().min(8192)];
    if format != Format::Parquet && looks_binary(window) {
        let detail = format!(
            "{name}: binary content (NUL bytes in the first {} bytes), not text",
            window.len()
        );
        sink(Item::Skip(Skip {
            reason: SkipReason::BinaryFile,
            detail,
        }))?;
        return sink(end(format, compression, &counter));
    }
    let head_len = head.len() as u64;
    if format != Format::Parquet && head.starts_with("\u{feff}".as_bytes()) {
        head.drain(..3); // a UTF-8 byte-order mark is not part of the first record
    }
    let splittable = matches!(format, Format::Jsonl | Format::Tsv)
        || (format == Format::Text && !opts.blank_line_docs);
    let file_size = || {
        std::fs::metadata(&input.path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    let size = match (part, compression, splittable) {
        (Some(_), Compression::None, true) => file_size(),
        _ => None,
    };
    // A bzip2 dump is cut at its streams (one stream holds it all: partition 0 reads it).
    let dump_size = match (part, compression, format) {
        (Some(_), Compression::Bzip2, Format::Wiki) => file_size(),
        _ => None,
    };
    let result = match (part, size, dump_size) {
        (Some(Part { k, n, bz2_index }), None, Some(size)) => {
            drop(reader);
            by_bytes.set(true);
            counter.store(start, Ordering::Relaxed);
            let (mut pages, (s, e)) = super::partition::stream_ranges::open_partition(
                &input.path,
                size,
                [k, n],
                bz2_index,
                counter.clone(),
            )?;
            not_read.fetch_add(size - (e - s), Ordering::Relaxed);
            log::debug!("{name}: partition {k}/{n} decodes compressed bytes {s}..{e} of {size}");
            wiki::read(&mut pages, &name, opts.max_record_bytes, sink)
        }
        (Some(Part { k, n, .. }), Some(size), _) => {
            drop(reader);
            let (s, e) = super::partition::byte_ranges::cut(size, k, n);
            by_bytes.set(true);
            not_read.fetch_add(size - (e - s), Ordering::Relaxed);
            // The head read to detect the format is not this partition's (unless it is partition 0).
            counter.store(start, Ordering::Relaxed);
            read_range(input, opts, format, (s, e), counter.clone(), sink)
        }
        _ => {
            if look_serially && !matches!(compression, Compression::None | Compression::Xz) {
                // Read through after all (every N-th record): with the parallel decoder, from the
                // start, past the head already read.
                drop(reader);
                counter.store(start, Ordering::Relaxed);
                let (_, mut again) = decompress::open(&input.path, counter.clone())?;
                let skipped = std::io::copy(
                    &mut std::io::Read::take(&mut *again, head_len),
                    &mut std::io::sink(),
                )
                .with_context(|| format!("{name}: cannot read"))?;
                if skipped != head_len {
                    anyhow::bail!("{name}: changed while being read ({skipped} of {head_len} bytes of its head read again)");
                }
                reader = again;
            }
            let mut reader = decompress::unpeek(head, reader);
            let base = Arc::new(LineBase::zero());
            match format {
                Format::Wiki => wiki::read(&mut *reader, &name, opts.max_record_bytes, sink),
                Format::Jsonl => read_jsonl(&mut *reader, &name, opts, &base, sink),
                Format::Json => read_json_object(&mut *reader, &name, opts, sink),
                Format::Tsv => read_tsv(&mut *reader, &name, opts, &base, sink),
                Format::Text => read_text(&mut *reader, &name, opts, &base, sink),
                Format::Parquet => {
                    drop(reader); // Parquet is read from the file by offset, not through the stream.
                    let r = read_parquet(input, opts, sink);
                    let size = std::fs::metadata(&input.path).map(|m| m.len()).unwrap_or(0);
                    counter.store(start + size, Ordering::Relaxed);
                    r
                }
                Format::Auto => unreachable!("resolved above"),
            }
        }
    };
    match result {
        Ok(()) => {}
        // An I/O error mid-stream (a truncated gzip, a disk error) ends this input, counted.
        Err(e) if e.downcast_ref::<ReadFailure>().is_some() => {
            sink(Item::Skip(Skip {
                reason: SkipReason::ReadError,
                detail: format!("{e:#}"),
            }))?;
        }
        Err(e) => return Err(e),
    }
    sink(end(format, compression, &counter))
}

/// Reads the lines of byte range `(start, end)` of an uncompressed line file (see `ranges`).
fn read_range(
    input: &Input,
    opts: &ReadOptions,
    format: Format,
    (start, end): (u64, u64),
    counter: Arc<AtomicU64>,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let name = input.name();
    let failed = |source: std::io::Error| ReadFailure {
        name: format!("{name} (bytes {start}..{end})"),
        line: 0,
        source,
    };
    let (inner, prev) =
        super::partition::byte_ranges::open_at(&input.path, start).map_err(failed)?;
    let mut reader =
        super::partition::byte_ranges::RangeReader::new(inner, start, end, prev, counter)
            .map_err(failed)?;
    if start == 0
        && reader
            .fill_buf()
            .map_err(failed)?
            .starts_with("\u{feff}".as_bytes())
    {
        reader.consume(3); // a UTF-8 byte-order mark is not part of the first record
    }
    log::debug!(
        "{name}: partition reads bytes {}..{end} (cut at {start}, moved to a line start)",
        reader.position()
    );
    let base = Arc::new(LineBase::before(&input.path, reader.position()));
    match format {
        Format::Jsonl => read_jsonl(&mut reader, &name, opts, &base, sink),
        Format::Tsv => read_tsv(&mut reader, &name, opts, &base, sink),
        Format::Text => read_text(&mut reader, &name, opts, &base, sink),
        _ => unreachable!("only line formats are read by byte range"),
    }
}

/// An I/O failure of the input itself (as opposed to a sink's decision to stop).
#[derive(Debug, thiserror::Error)]
#[error("{name}: read failed after line {line} ({source}); the rest of this input is skipped")]
pub struct ReadFailure {
    name: String,
    line: u64,
    source: std::io::Error,
}

/// Walks capped lines, mapping I/O errors to `ReadFailure` and over-long lines and bad UTF-8 to skips.
/// Line numbers count from `base` (the lines before a byte-range partition, counted when first shown).
pub(super) fn for_each_line(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
    sink: &mut dyn FnMut(Item) -> Result<()>,
    mut f: impl FnMut(LineNo<'_>, &str, &mut dyn FnMut(Item) -> Result<()>) -> Result<()>,
) -> Result<()> {
    for_each_line_bytes(reader, name, opts, base, sink, |line_no, buf, sink| {
        match std::str::from_utf8(buf) {
            Ok(s) => f(line_no, s, sink),
            Err(e) => sink(invalid_utf8(name, line_no, e)),
        }
    })
}

/// As [`for_each_line`], handing `f` each line's bytes unchecked (it may take them).
pub(super) fn for_each_line_bytes(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
    sink: &mut dyn FnMut(Item) -> Result<()>,
    mut f: impl FnMut(LineNo<'_>, &mut Vec<u8>, &mut dyn FnMut(Item) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut rel = 0u64;
    loop {
        let cap = opts.max_record_bytes;
        let line =
            read_line_capped(reader, &mut buf, cap, opts.stop_at_error).map_err(|source| {
                ReadFailure {
                    name: name.to_string(),
                    line: LineNo { rel, base }.get(),
                    source,
                }
            })?;
        rel += 1;
        let line_no = LineNo { rel, base };
        match line {
            Line::Eof => return Ok(()),
            Line::TooLong(n) => sink(Item::Skip(Skip {
                reason: SkipReason::RecordTooLarge,
                detail: format!("{name}:{line_no}: line of {n} bytes exceeds --max-record-bytes {cap}"),
            }))?,
            Line::Abandoned(n) => sink(Item::Skip(Skip {
                reason: SkipReason::RecordTooLarge,
                detail: format!(
                    "{name}:{line_no}: line exceeds --max-record-bytes {cap} (not read past byte {n})"
                ),
            }))?,
            Line::Some => f(line_no, &mut buf, sink)?,
        }
    }
}

/// The skip of a line that is not UTF-8.
fn invalid_utf8(name: &str, line_no: LineNo<'_>, e: std::str::Utf8Error) -> Item {
    Item::Skip(Skip {
        reason: SkipReason::InvalidUtf8,
        detail: format!(
            "{name}:{line_no}: invalid UTF-8 at byte {} of the line",
            e.valid_up_to()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read_all(path: &Path, opts: &ReadOptions) -> Vec<Item> {
        let mut items = Vec::new();
        read_input(
            &Input {
                path: path.into(),
                exists: path.exists(),
            },
            opts,
            Default::default(),
            &mut |i| {
                items.push(i);
                Ok(())
            },
        )
        .unwrap();
        items
    }

    fn docs(items: &[Item]) -> Vec<(String, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Doc(d) => Some((d.id.clone(), d.text.clone())),
                _ => None,
            })
            .collect()
    }

    fn skips(items: &[Item]) -> Vec<SkipReason> {
        items
            .iter()
            .filter_map(|i| {
                if let Item::Skip(s) = i {
                    Some(s.reason)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn detection() {
        let p = Path::new("x");
        assert_eq!(detect(b"<mediawiki xmlns=", p), Format::Wiki);
        assert_eq!(detect(b"{\"id\": 1, \"text\": \"a\"}\n{", p), Format::Jsonl);
        assert_eq!(
            detect(b"{\"A\": {\"title\": \"A\", \"extract\": \"x\"}", p),
            Format::Json
        );
        assert_eq!(detect(b"{\n  \"A\": {", p), Format::Json);
        // Never from a truncated line: a long first record is JSON Lines, and so is a first line
        // cut (longer than a record may be) whose first value is not an object.
        let long = format!(
            "{{\"id\": 1, \"text\": \"{}\"}}\n{{\"id\": 2}}\n",
            "x".repeat(20000)
        );
        assert_eq!(detect(long.as_bytes(), p), Format::Jsonl);
        assert_eq!(detect(&long.as_bytes()[..9000], p), Format::Jsonl);
        // Nested objects in a record do not make it the keyed format when more records follow.
        assert_eq!(
            detect(
                b"{\"meta\": {\"a\": 1}, \"text\": \"t\"}\n{\"text\": \"u\"}\n",
                p
            ),
            Format::Jsonl
        );
        // A keyed object on one line, alone in its file.
        assert_eq!(
            detect(
                b"{\"A\": {\"extract\": \"a\"}, \"B\": {\"extract\": \"b\"}}\n",
                p
            ),
            Format::Json
        );
        assert_eq!(
            detect(b"{\n  \"id\": 1,\n  \"text\": \"t\"\n}\n", p),
            Format::Jsonl
        );
        assert_eq!(detect(b"0\tsome passage\n", p), Format::Tsv);
        assert_eq!(detect(b"some text\n", Path::new("c.tsv.gz")), Format::Tsv);
        assert_eq!(detect(b"plain text\n", p), Format::Text);
        assert_eq!(detect(b"PAR1....", p), Format::Parquet);
    }

    #[test]
    fn jsonl_bad_lines_are_counted_skips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, b"{\"id\": 7, \"text\": \"seven\"}\n{bad json\n{\"title\": \"no text\"}\n[1]\n{\"text\": \"no id\"}\n\xff\xfe\n").unwrap();
        let items = read_all(&p, &ReadOptions::default());
        let name = p.display().to_string();
        assert_eq!(
            docs(&items),
            [
                ("7".into(), "seven".into()),
                (format!("{name}:5"), "no id".into())
            ]
        );
        assert_eq!(
            skips(&items),
            [
                SkipReason::MalformedJson,
                SkipReason::MissingField,
                SkipReason::MalformedJson,
                SkipReason::InvalidUtf8
            ]
        );
        assert!(matches!(
            items.last(),
            Some(Item::End {
                format: Format::Jsonl,
                ..
            })
        ));
    }

    #[test]
    fn tsv_missing_column_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("collection.tsv");
        std::fs::write(&p, "0\tfirst passage\nonly-one-column\n2\tthird\n").unwrap();
        let items = read_all(&p, &ReadOptions::default());
        assert_eq!(
            docs(&items),
            [
                ("0".into(), "first passage".into()),
                ("2".into(), "third".into())
            ]
        );
        assert_eq!(skips(&items), [SkipReason::MissingColumn]);
        match items
            .iter()
            .find_map(|i| if let Item::Skip(s) = i { Some(s) } else { None })
        {
            Some(s) => assert!(s.detail.contains("collection.tsv:2"), "{}", s.detail),
            None => unreachable!(),
        }
    }

    #[test]
    fn json_object_keyed_by_title() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summaries.json");
        std::fs::write(&p, r#"{"Alpha": {"title": "Alpha", "extract": "A is first."}, "Beta": {"title": "Beta", "extract": "B."}, "Gamma": 5}"#).unwrap();
        let items = read_all(&p, &ReadOptions::default());
        assert_eq!(
            docs(&items),
            [
                ("Alpha".into(), "A is first.".into()),
                ("Beta".into(), "B.".into())
            ]
        );
        assert_eq!(skips(&items), [SkipReason::MalformedJson]);
    }

    #[test]
    fn keyed_json_entries_over_the_limit_are_skipped_unread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summaries.json");
        let big = "y".repeat(5000);
        std::fs::write(
            &p,
            format!(
                "{{\"A\": {{\"extract\": \"{big}\"}},\n \"B\": {{\"extract\": \"b [x] {{y}} \\\"q\\\"\"}}, \"{big}\": {{\"extract\": \"c\"}}, \"D\": {{\"extract\": \"d\"}}}}\n"
            ),
        )
        .unwrap();
        let opts = ReadOptions {
            max_record_bytes: 1000,
            ..Default::default()
        };
        let items = read_all(&p, &opts);
        assert_eq!(
            docs(&items),
            [
                ("B".into(), "b [x] {y} \"q\"".into()),
                ("D".into(), "d".into())
            ]
        );
        assert_eq!(
            skips(&items),
            [SkipReason::RecordTooLarge, SkipReason::RecordTooLarge]
        );
        // A byte-order mark is not content.
        std::fs::write(&p, "\u{feff}{\"A\": {\"extract\": \"a\"}}").unwrap();
        assert_eq!(
            docs(&read_all(&p, &ReadOptions::default())),
            [("A".into(), "a".into())]
        );
        // Content after the object (JSON Lines read as keyed JSON) is an error, not dropped.
        std::fs::write(
            &p,
            "{\"A\": {\"extract\": \"a\"}}\n{\"B\": {\"extract\": \"b\"}}\n",
        )
        .unwrap();
        let opts = ReadOptions {
            format: Format::Json,
            ..Default::default()
        };
        let items = read_all(&p, &opts);
        assert_eq!(docs(&items).len(), 1);
        assert_eq!(skips(&items), [SkipReason::MalformedJson]);
    }

    #[test]
    fn text_blocks_and_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "one\ntwo\n\n\nthree\n").unwrap();
        assert_eq!(docs(&read_all(&p, &ReadOptions::default())).len(), 3);
        let opts = ReadOptions {
            blank_line_docs: true,
            ..Default::default()
        };
        let got = docs(&read_all(&p, &opts));
        let name = p.display().to_string();
        assert_eq!(
            got,
            [
                (format!("{name}:1"), "one\ntwo".into()),
                (format!("{name}:5"), "three".into())
            ]
        );
    }

    #[test]
    fn missing_empty_binary_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        assert_eq!(
            skips(&read_all(&missing, &ReadOptions::default())),
            [SkipReason::MissingPath]
        );
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            skips(&read_all(&empty, &ReadOptions::default())),
            [SkipReason::EmptyFile]
        );
        let bin = dir.path().join("bin.dat");
        std::fs::write(&bin, [0u8, 1, 2, 3, 0, 255, 7]).unwrap();
        assert_eq!(
            skips(&read_all(&bin, &ReadOptions::default())),
            [SkipReason::BinaryFile]
        );
        let gz = dir.path().join("cut.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, "a line of text\n".repeat(20000).as_bytes()).unwrap();
        let full = enc.finish().unwrap();
        std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
        let items = read_all(&gz, &ReadOptions::default());
        assert!(!docs(&items).is_empty());
        assert_eq!(skips(&items), [SkipReason::ReadError]);
    }

    /// Every item of `path` (partition `part` of it), with deferred lines parsed as the caller would.
    fn read_parsed(path: &Path, opts: &ReadOptions, part: Option<[u32; 2]>) -> Vec<String> {
        let mut items = Vec::new();
        read_input_part(
            &Input {
                path: path.into(),
                exists: true,
            },
            opts,
            part.map(|[k, n]| Part {
                k,
                n,
                bz2_index: None,
            }),
            None,
            Default::default(),
            &AtomicU64::new(0),
            &mut |item| {
                let item = match item {
                    Item::Raw(raw) => raw.parse(opts),
                    Item::End { .. } => return Ok(()), // its byte count is the reader's
                    item => item,
                };
                items.push(format!("{item:?}"));
                Ok(())
            },
        )
        .unwrap();
        items
    }

    #[test]
    fn lines_parsed_later_are_the_items_parsed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Lines, each with its newline.
        let lines = |lines: &[&[u8]]| {
            lines
                .iter()
                .flat_map(|l| [*l, b"\n"])
                .flatten()
                .copied()
                .collect::<Vec<u8>>()
        };
        let mut jsonl: Vec<u8> = "\u{feff}{\"id\": 1, \"text\": \"one\"}\n".into();
        jsonl.extend(lines(&[
            &b""[..],
            b"   ",
            b" \t\r",
            b"\x0b",
            b"\x0c ",
            "\u{3000}".as_bytes(),
            "\u{a0}\u{85} ".as_bytes(),
            "\u{200b}".as_bytes(),
            b"\xff",
            b"  \xc3",
            b"{\"text\": \"\xe9t\xe9\"}",
            b"  {\"text\": \"padded\"}  ",
            b"{\"title\": \"no text\"}",
            b"[1, 2]",
            b"{bad",
            b"{\"text\": \"no id, CRLF\"}\r",
            b"{\"pid\": 7.5, \"passage\": \"\\u00e9 \\ud83d\\ude00\"}",
            b"{\"text\": \"over the limit .................................................\"}",
            b"{\"id\": \"z\", \"text\": \"last\"}",
        ]));
        let tsv = lines(&[
            &b"0\tfirst"[..],
            b"",
            b"\t",
            b" ",
            b"only-one-column",
            b"\xff\tbad",
            b"2\t\xc3\xa9t\xc3\xa9\textra",
            b"3\tcrlf\r",
        ]);
        for (name, content) in [("a.jsonl", &jsonl), ("c.tsv", &tsv)] {
            let plain = dir.path().join(name);
            std::fs::write(&plain, content).unwrap();
            let gz = dir.path().join(format!("{name}.gz"));
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, content).unwrap();
            std::fs::write(&gz, enc.finish().unwrap()).unwrap();
            // Whole, by byte ranges (line numbers counted before the range), every N-th record.
            for (path, part) in [
                (&plain, None),
                (&plain, Some([1, 3])),
                (&plain, Some([2, 3])),
                (&gz, Some([1, 2])),
            ] {
                let at_once = ReadOptions {
                    max_record_bytes: 64,
                    ..Default::default()
                };
                let later = ReadOptions {
                    defer_parsing: true,
                    ..at_once.clone()
                };
                let expected = read_parsed(path, &at_once, part);
                assert!(!expected.is_empty(), "{expected:?}");
                assert_eq!(
                    read_parsed(path, &later, part),
                    expected,
                    "{} {part:?}",
                    path.display()
                );
            }
        }
    }
}
