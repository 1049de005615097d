//! Format detection and the readers of line-based, JSON, TSV and Parquet inputs.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::de::{MapAccess, Visitor};

use super::decompress::{self, Compression};
use super::lines::{read_line_capped, Line};
use super::ranges::{LineBase, LineNo};
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
    read_input_part(input, opts, None, counter, &AtomicU64::new(0), sink)
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
/// K is read ([`super::ranges`]); a multi-stream bzip2 MediaWiki dump is cut at stream starts
/// ([`super::stream_ranges`]); the bytes left to other partitions are added to `not_read` (for
/// progress). Any other input is read whole and every N-th record kept, from the K-th on (a record is
/// a document or a skip, so a skip about the whole input belongs to partition 0).
pub fn read_input_part(
    input: &Input,
    opts: &ReadOptions,
    part: Option<Part<'_>>,
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
    let opened = match look_serially {
        true => decompress::open_serial(&input.path, counter.clone()),
        false => decompress::open(&input.path, counter.clone()),
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
            let (mut pages, (s, e)) = super::stream_ranges::open_partition(
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
            let (s, e) = super::ranges::cut(size, k, n);
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
            let base = LineBase::zero();
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
    let (inner, prev) = super::ranges::open_at(&input.path, start).map_err(failed)?;
    let mut reader =
        super::ranges::RangeReader::new(inner, start, end, prev, counter).map_err(failed)?;
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
    let base = LineBase::before(&input.path, reader.position());
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

fn looks_binary(head: &[u8]) -> bool {
    memchr::memchr(0, head).is_some()
}

/// Detects the format from the decoded first bytes, using the extension only to tell TSV from text.
pub fn detect(head: &[u8], path: &std::path::Path) -> Format {
    if head.starts_with(b"PAR1") {
        return Format::Parquet;
    }
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with("<mediawiki") || (t.starts_with("<?xml") && t.contains("<mediawiki")) {
        return Format::Wiki;
    }
    if t.starts_with('{') {
        return detect_json(t);
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    let stem = ["gz", "bz2", "zst", "xz"]
        .iter()
        .fold(name.as_str(), |n, ext| {
            n.strip_suffix(&format!(".{ext}")).unwrap_or(n)
        })
        .to_string();
    if stem.ends_with(".tsv") {
        return Format::Tsv;
    }
    if !stem.ends_with(".txt") && t.lines().next().is_some_and(|l| l.contains('\t')) {
        return Format::Tsv;
    }
    Format::Text
}

fn first_non_space(head: &[u8]) -> Option<u8> {
    let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(head);
    head.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Reads on (into `head`) until the first line of a JSON input has ended and the next
/// non-blank byte is known, or until `cap` bytes more than a record may hold: detection must never
/// decide from a truncated first line, and must not buffer more than one record to decide.
fn extend_to_first_line(
    reader: &mut dyn BufRead,
    head: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<()> {
    const STEP: usize = 1 << 16;
    let limit = cap.saturating_add(1);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let mut scanned = start;
    let line_end = loop {
        if let Some(i) = memchr::memchr(b'\n', &head[scanned..]) {
            break scanned + i;
        }
        scanned = head.len();
        if head.len() - start >= limit {
            return Ok(());
        }
        let more = decompress::peek(reader, STEP.min(limit - (head.len() - start)))?;
        if more.is_empty() {
            return Ok(());
        }
        head.extend_from_slice(&more);
    };
    let mut scanned = line_end + 1;
    loop {
        if head[scanned..].iter().any(|b| !b.is_ascii_whitespace()) {
            return Ok(());
        }
        scanned = head.len();
        if head.len() - start >= limit.saturating_mul(2) {
            return Ok(());
        }
        let more = decompress::peek(reader, STEP)?;
        if more.is_empty() {
            return Ok(());
        }
        head.extend_from_slice(&more);
    }
}

/// JSON Lines or one keyed object, from a head that holds the whole first line (or more than a
/// record may hold). A first line that is a whole object followed by more is JSON Lines. Otherwise
/// (the object is all there is, is pretty-printed, or its line is too long to hold) the first entry
/// decides: an object value is the keyed format, anything else a JSON Lines record.
fn detect_json(t: &str) -> Format {
    let (line, rest) = match t.find('\n') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    if let Some(shape) = object_shape(line) {
        let more = !rest.trim().is_empty();
        if !more && shape.first_is_object {
            return Format::Json;
        }
        return Format::Jsonl;
    }
    match first_value_byte(t.as_bytes()) {
        Some(b'{') => Format::Json,
        _ => Format::Jsonl,
    }
}

struct Shape {
    first_is_object: bool,
}

/// The shape of `line` when it is exactly one JSON object: whether its first value is an object.
/// Values are skipped, not built.
fn object_shape(line: &str) -> Option<Shape> {
    use serde::de::IgnoredAny;
    use serde::Deserializer as _;

    struct IsObject(bool);
    impl<'de> serde::Deserialize<'de> for IsObject {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = IsObject;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<IsObject, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(IsObject(true))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<IsObject, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(IsObject(false))
                }
                fn visit_bool<E>(self, _: bool) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
                fn visit_i64<E>(self, _: i64) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
                fn visit_u64<E>(self, _: u64) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
                fn visit_f64<E>(self, _: f64) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
                fn visit_str<E>(self, _: &str) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
                fn visit_unit<E>(self) -> std::result::Result<IsObject, E> {
                    Ok(IsObject(false))
                }
            }
            d.deserialize_any(V)
        }
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Shape;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Shape, A::Error> {
            let first_is_object = match map.next_entry()? {
                Some((IgnoredAny, IsObject(obj))) => obj,
                None => false,
            };
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Shape { first_is_object })
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    let shape = (&mut de).deserialize_map(V).ok()?;
    de.end().ok()?;
    Some(shape)
}

/// The first byte of the first entry's value of the object `t` starts with, scanning only the
/// first key (`{ "key" :`); None when that is not what `t` starts with.
fn first_value_byte(t: &[u8]) -> Option<u8> {
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < t.len() && t[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    (t.get(i) == Some(&b'{')).then_some(())?;
    i += 1;
    skip_ws(&mut i);
    (t.get(i) == Some(&b'"')).then_some(())?;
    i += 1;
    loop {
        match t.get(i)? {
            b'\\' => i += 2,
            b'"' => break,
            _ => i += 1,
        }
    }
    i += 1;
    skip_ws(&mut i);
    (t.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    skip_ws(&mut i);
    t.get(i).copied()
}

/// Walks capped lines, mapping I/O errors to `ReadFailure` and over-long lines and bad UTF-8 to skips.
/// Line numbers count from `base` (the lines before a byte-range partition, counted when first shown).
fn for_each_line(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
    sink: &mut dyn FnMut(Item) -> Result<()>,
    mut f: impl FnMut(LineNo<'_>, &str, &mut dyn FnMut(Item) -> Result<()>) -> Result<()>,
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
            Line::Some => match std::str::from_utf8(&buf) {
                Ok(s) => f(line_no, s, sink)?,
                Err(e) => sink(Item::Skip(Skip {
                    reason: SkipReason::InvalidUtf8,
                    detail: format!(
                        "{name}:{line_no}: invalid UTF-8 at byte {} of the line",
                        e.valid_up_to()
                    ),
                }))?,
            },
        }
    }
}

fn json_str(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Picks the text and id of one JSON object; `Err` names what is missing. The text is moved out of
/// the object, not copied (a record may be as large as `--max-record-bytes`).
fn json_doc(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    opts: &ReadOptions,
    fallback_id: impl FnOnce() -> String,
) -> std::result::Result<Document, String> {
    let is_str = |obj: &serde_json::Map<String, serde_json::Value>, f: &str| {
        obj.get(f).is_some_and(serde_json::Value::is_string)
    };
    let text_key: String = match &opts.text_field {
        Some(f) if is_str(obj, f) => f.clone(),
        Some(f) => return Err(format!("no string field {f:?}")),
        None => TEXT_FIELDS
            .iter()
            .find(|f| is_str(obj, f))
            .map(|f| f.to_string())
            .ok_or_else(|| format!("none of the text fields {TEXT_FIELDS:?} (use --text-field)"))?,
    };
    let id = match &opts.id_field {
        Some(f) => obj
            .get(f)
            .and_then(json_str)
            .ok_or_else(|| format!("no id field {f:?}"))?,
        None => ID_FIELDS
            .iter()
            .find_map(|f| obj.get(*f).and_then(json_str))
            .unwrap_or_else(fallback_id),
    };
    let title = obj
        .get("title")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let text = match obj.get_mut(&text_key).map(serde_json::Value::take) {
        Some(serde_json::Value::String(text)) => text,
        _ => unreachable!("checked above to be a string"),
    };
    Ok(Document {
        id,
        title,
        text,
        markup: Markup::Plain,
    })
}

fn read_jsonl(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let item = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(mut obj)) => {
                match json_doc(&mut obj, opts, || format!("{name}:{line_no}")) {
                    Ok(doc) => Item::Doc(doc),
                    Err(what) => Item::Skip(Skip {
                        reason: SkipReason::MissingField,
                        detail: format!("{name}:{line_no}: {what}"),
                    }),
                }
            }
            Ok(_) => Item::Skip(Skip {
                reason: SkipReason::MalformedJson,
                detail: format!("{name}:{line_no}: expected a JSON object"),
            }),
            Err(e) => Item::Skip(Skip {
                reason: SkipReason::MalformedJson,
                detail: format!("{name}:{line_no}: {e}"),
            }),
        };
        sink(item)
    })
}

/// One JSON object keyed by title, values objects (the ovos summaries file), streamed entry by entry.
///
/// The object is walked by a small scanner, not a JSON parser, so that no entry is built before its
/// size is known: an entry's key and value are copied out only up to `--max-record-bytes` (a longer
/// one is skipped, counted as `record_too_large`, without being held), then parsed on their own.
/// A first value that is not an object means the input is not this format (an error naming the
/// file, not a corpus of field names), and so does content after the object (JSON Lines).
fn read_json_object(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let cap = opts.max_record_bytes;
    let mut scan = JsonScan {
        r: reader,
        name,
        offset: 0,
        line: 1,
        state: ValueState::default(),
    };
    let malformed = |sink: &mut dyn FnMut(Item) -> Result<()>, scan: &JsonScan, what: String| {
        sink(Item::Skip(Skip {
            reason: SkipReason::MalformedJson,
            detail: format!(
                "{name}: line {} (byte {}): {what}; the rest of the file is skipped",
                scan.line, scan.offset
            ),
        }))
    };
    match scan.skip_ws()? {
        Some(b'{') => scan.bump(1),
        Some(_) => return malformed(sink, &scan, "expected an object keyed by title".into()),
        None => return Ok(()),
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut n = 0u64;
    loop {
        match scan.skip_ws()? {
            Some(b'}') if n == 0 => {
                scan.bump(1);
                break;
            }
            Some(b'"') => {}
            Some(c) => {
                return malformed(
                    sink,
                    &scan,
                    format!("expected a key string, found {:?}", c as char),
                )
            }
            None => {
                return malformed(
                    sink,
                    &scan,
                    "the object is not closed (end of input)".into(),
                )
            }
        }
        n += 1;
        let (at_line, at_byte) = (scan.line, scan.offset);
        let too_large = |what: &str| Skip {
            reason: SkipReason::RecordTooLarge,
            detail: format!(
                "{name}: entry {n} at line {at_line} (byte {at_byte}): {what} longer than \
                 --max-record-bytes {cap}; skipped unread"
            ),
        };
        let key = match scan.take(&mut buf, cap)? {
            Took::Whole => match serde_json::from_slice::<String>(&buf) {
                Ok(k) => Some(k),
                Err(e) => return malformed(sink, &scan, format!("entry {n}: bad key: {e}")),
            },
            Took::TooLarge => {
                sink(Item::Skip(too_large("key")))?;
                scan.skip_rest()?;
                None
            }
            Took::Eof => {
                return malformed(sink, &scan, format!("entry {n}: end of input in the key"))
            }
        };
        match scan.skip_ws()? {
            Some(b':') => scan.bump(1),
            _ => {
                return malformed(
                    sink,
                    &scan,
                    format!("entry {n}: expected ':' after the key"),
                )
            }
        }
        if scan.skip_ws()?.is_none() {
            return malformed(
                sink,
                &scan,
                format!("entry {n}: end of input before the value"),
            );
        }
        let took = if key.is_some() {
            scan.take(&mut buf, cap)?
        } else {
            scan.skip_value()?
        };
        match (took, key) {
            (Took::Eof, _) => {
                return malformed(sink, &scan, format!("entry {n}: end of input in the value"))
            }
            (Took::TooLarge, Some(_)) => {
                sink(Item::Skip(too_large("value")))?;
                if scan.skip_rest()? == Took::Eof {
                    return malformed(sink, &scan, format!("entry {n}: end of input in the value"));
                }
            }
            (_, None) => {}
            (Took::Whole, Some(key)) => {
                let value = match serde_json::from_slice::<serde_json::Value>(&buf) {
                    Ok(v) => v,
                    Err(e) => return malformed(sink, &scan, format!("entry {n} ({key:?}): {e}")),
                };
                let item = match value {
                    serde_json::Value::Object(mut obj) => {
                        let has_id = ID_FIELDS.iter().any(|f| obj.contains_key(*f));
                        match json_doc(&mut obj, opts, || key.clone()) {
                            Ok(mut doc) => {
                                if opts.id_field.is_none() && !has_id {
                                    doc.id = key.clone();
                                }
                                doc.title.get_or_insert(key);
                                Item::Doc(doc)
                            }
                            Err(what) => Item::Skip(Skip {
                                reason: SkipReason::MissingField,
                                detail: format!("{name}: entry {n} ({key:?}): {what}"),
                            }),
                        }
                    }
                    other if n == 1 => {
                        return malformed(
                            sink,
                            &scan,
                            format!(
                            "entry 1 ({key:?}) is {}, not an object: this is not the keyed-JSON \
                                 format (one object whose values are objects); for JSON Lines use \
                                 --format jsonl",
                            json_kind(&other)
                        ),
                        )
                    }
                    other => Item::Skip(Skip {
                        reason: SkipReason::MalformedJson,
                        detail: format!(
                            "{name}: entry {n} ({key:?}) is {}, expected an object",
                            json_kind(&other)
                        ),
                    }),
                };
                sink(item)?;
            }
        }
        match scan.skip_ws()? {
            Some(b',') => scan.bump(1),
            Some(b'}') => {
                scan.bump(1);
                break;
            }
            _ => {
                return malformed(
                    sink,
                    &scan,
                    format!("entry {n}: expected ',' or '}}' after the value"),
                )
            }
        }
    }
    if scan.skip_ws()?.is_some() {
        return malformed(
            sink,
            &scan,
            "content after the keyed object ends (JSON Lines? use --format jsonl)".into(),
        );
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// How much of one JSON value [`JsonScan::take`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    /// The whole value is in the buffer.
    Whole,
    /// The value is longer than the cap: the buffer holds a prefix, the scan stopped mid-value
    /// (resume with [`JsonScan::skip_rest`]).
    TooLarge,
    /// The input ended inside the value.
    Eof,
}

/// A byte scanner over a JSON stream that finds where one value ends without building it.
struct JsonScan<'a> {
    r: &'a mut dyn BufRead,
    name: &'a str,
    offset: u64,
    line: u64,
    state: ValueState,
}

/// Where the scanner is inside the current value.
#[derive(Default, Clone, Copy)]
struct ValueState {
    started: bool,
    depth: u32,
    in_str: bool,
    esc: bool,
    scalar: bool,
    done: bool,
}

impl JsonScan<'_> {
    fn fail(name: &str, line: u64, source: std::io::Error) -> anyhow::Error {
        ReadFailure {
            name: name.to_string(),
            line,
            source,
        }
        .into()
    }

    fn bump(&mut self, n: usize) {
        self.r.consume(n);
        self.offset += n as u64;
    }

    /// Skips whitespace; the next byte, not consumed (None at the end of the input).
    fn skip_ws(&mut self) -> Result<Option<u8>> {
        loop {
            let (name, line) = (self.name, self.line);
            let buf = self.r.fill_buf().map_err(|e| Self::fail(name, line, e))?;
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let n = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            if n == 0 {
                return Ok(Some(first));
            }
            self.line += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            self.bump(n);
        }
    }

    /// Copies the value that starts here into `buf` (cleared first) while it fits in `cap` bytes.
    fn take(&mut self, buf: &mut Vec<u8>, cap: usize) -> Result<Took> {
        buf.clear();
        self.state = ValueState::default();
        self.scan(Some(buf), cap)
    }

    /// Reads the value that starts here, keeping nothing.
    fn skip_value(&mut self) -> Result<Took> {
        self.state = ValueState::default();
        self.scan(None, usize::MAX)
    }

    /// Reads the rest of a value that [`JsonScan::take`] left as too large, keeping nothing.
    fn skip_rest(&mut self) -> Result<Took> {
        if self.state.done {
            return Ok(Took::Whole);
        }
        self.scan(None, usize::MAX)
    }

    fn scan(&mut self, mut out: Option<&mut Vec<u8>>, cap: usize) -> Result<Took> {
        loop {
            let (name, line) = (self.name, self.line);
            let chunk = self.r.fill_buf().map_err(|e| Self::fail(name, line, e))?;
            if chunk.is_empty() {
                return Ok(Took::Eof);
            }
            let st = &mut self.state;
            let mut i = 0;
            let mut done = false;
            while i < chunk.len() {
                let b = chunk[i];
                if !st.started {
                    st.started = true;
                    match b {
                        b'"' => st.in_str = true,
                        b'{' | b'[' => st.depth = 1,
                        _ => st.scalar = true,
                    }
                } else if st.in_str {
                    // Jump to the next quote or backslash.
                    if st.esc {
                        st.esc = false;
                    } else if b == b'\\' {
                        st.esc = true;
                    } else if b == b'"' {
                        st.in_str = false;
                        if st.depth == 0 {
                            i += 1;
                            done = true;
                            break;
                        }
                    } else if let Some(j) = memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                        i += j;
                        continue;
                    } else {
                        i = chunk.len();
                        continue;
                    }
                } else if st.scalar {
                    if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                        done = true;
                        break;
                    }
                } else {
                    match b {
                        b'"' => st.in_str = true,
                        b'{' | b'[' => st.depth += 1,
                        b'}' | b']' => {
                            st.depth -= 1;
                            if st.depth == 0 {
                                i += 1;
                                done = true;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            let mut too_large = false;
            if let Some(buf) = out.as_deref_mut() {
                if buf.len() + i <= cap {
                    buf.extend_from_slice(&chunk[..i]);
                } else {
                    too_large = true;
                }
            }
            self.line += memchr::memchr_iter(b'\n', &chunk[..i]).count() as u64;
            self.bump(i);
            self.state.done = done;
            if done {
                return Ok(if too_large {
                    Took::TooLarge
                } else {
                    Took::Whole
                });
            }
            if too_large {
                return Ok(Took::TooLarge);
            }
        }
    }
}

fn read_tsv(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
        if line.is_empty() {
            return Ok(());
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let Some(text) = cols.get(opts.text_column) else {
            return sink(Item::Skip(Skip {
                reason: SkipReason::MissingColumn,
                detail: format!(
                    "{name}:{line_no}: {} column(s), text column {} expected (use --text-column)",
                    cols.len(),
                    opts.text_column
                ),
            }));
        };
        let id = match opts.id_column.and_then(|c| cols.get(c)) {
            Some(id) if opts.id_column != Some(opts.text_column) => id.to_string(),
            _ => format!("{name}:{line_no}"),
        };
        sink(Item::Doc(Document {
            id,
            title: None,
            text: text.to_string(),
            markup: Markup::Plain,
        }))
    })
}

fn read_text(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &LineBase,
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

fn read_parquet(
    input: &Input,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    let name = input.name();
    anyhow::ensure!(
        !input.is_stdin(),
        "{name}: Parquet cannot be read from stdin (it needs a seekable file)"
    );
    let file = std::fs::File::open(&input.path).with_context(|| format!("{name}: cannot open"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{name}: not a readable Parquet file"))?;
    let schema = builder.schema().clone();
    let find = |wanted: &Option<String>, defaults: &[&str]| -> Option<usize> {
        match wanted {
            Some(f) => schema.index_of(f).ok(),
            None => defaults.iter().find_map(|f| schema.index_of(f).ok()),
        }
    };
    let text_idx = find(&opts.text_field, TEXT_FIELDS).with_context(|| {
        format!(
            "{name}: no text column (looked for {:?}; use --text-field)",
            opts.text_field
                .as_deref()
                .map_or(TEXT_FIELDS.to_vec(), |f| vec![f])
        )
    })?;
    let id_idx = find(&opts.id_field, ID_FIELDS);
    let title_idx = schema.index_of("title").ok();
    let mut cols: Vec<usize> = [Some(text_idx), id_idx, title_idx]
        .into_iter()
        .flatten()
        .collect();
    cols.sort();
    cols.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), cols.iter().copied());
    // Rows per batch from the footer: a batch holds about one record's worth of text (at most
    // 1024 rows), so a row group of large cells is not decoded 1024 rows at a time.
    let text_leaf = builder.parquet_schema().columns().iter().position(|c| {
        c.path().parts().first().map(String::as_str) == Some(schema.field(text_idx).name())
    });
    let widest_row = builder
        .metadata()
        .row_groups()
        .iter()
        .filter(|g| g.num_rows() > 0)
        .map(|g| {
            let bytes = text_leaf.map_or(g.total_byte_size(), |c| g.column(c).uncompressed_size());
            bytes.max(0) as u64 / g.num_rows() as u64
        })
        .max()
        .unwrap_or(0);
    let batch_rows = (opts.max_record_bytes as u64 / widest_row.max(1)).clamp(1, 1024) as usize;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()?;
    let mut row = 0u64;
    for batch in reader {
        let batch =
            batch.with_context(|| format!("{name}: corrupt Parquet data after row {row}"))?;
        let col = |idx: usize| batch.column_by_name(schema.field(idx).name()).cloned();
        let strings = |a: &Option<arrow::array::ArrayRef>, i: usize| -> Option<String> {
            let a = a.as_ref()?;
            if a.is_null(i) {
                return None;
            }
            match a.data_type() {
                DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
                DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i).to_string()),
                DataType::Utf8View => Some(a.as_string_view().value(i).to_string()),
                DataType::Int64 => Some(
                    a.as_primitive::<arrow::datatypes::Int64Type>()
                        .value(i)
                        .to_string(),
                ),
                DataType::Int32 => Some(
                    a.as_primitive::<arrow::datatypes::Int32Type>()
                        .value(i)
                        .to_string(),
                ),
                _ => None,
            }
        };
        let (text_col, id_col, title_col) =
            (col(text_idx), id_idx.and_then(col), title_idx.and_then(col));
        for i in 0..batch.num_rows() {
            row += 1;
            let cell_len = |a: &Option<arrow::array::ArrayRef>| -> usize {
                match a.as_ref().filter(|a| !a.is_null(i)) {
                    Some(a) => match a.data_type() {
                        DataType::Utf8 => a.as_string::<i32>().value(i).len(),
                        DataType::LargeUtf8 => a.as_string::<i64>().value(i).len(),
                        DataType::Utf8View => a.as_string_view().value(i).len(),
                        _ => 0,
                    },
                    None => 0,
                }
            };
            // The record's size from the Arrow offsets, before any of it is copied.
            let text_len = cell_len(&text_col) + cell_len(&id_col) + cell_len(&title_col);
            if text_len > opts.max_record_bytes {
                sink(Item::Skip(Skip {
                    reason: SkipReason::RecordTooLarge,
                    detail: format!(
                        "{name}: row {row}: record of {text_len} bytes (text, id and title) exceeds --max-record-bytes {}",
                        opts.max_record_bytes
                    ),
                }))?;
                continue;
            }
            let item = match strings(&text_col, i) {
                Some(text) => Item::Doc(Document {
                    id: strings(&id_col, i).unwrap_or_else(|| format!("{name}:{row}")),
                    title: strings(&title_col, i),
                    text,
                    markup: Markup::Plain,
                }),
                None => Item::Skip(Skip {
                    reason: SkipReason::MissingField,
                    detail: format!("{name}: row {row}: text is null or not a string"),
                }),
            };
            sink(item)?;
        }
    }
    Ok(())
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
}
