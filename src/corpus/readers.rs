//! Format detection and the readers of line-based, JSON, TSV and Parquet inputs.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::de::{DeserializeSeed, MapAccess, Visitor};

use super::decompress::{self, Compression};
use super::lines::{read_line_capped, Line};
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
    /// One JSON object keyed by title whose values are objects (the ovos summaries file).
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
    let (compression, mut reader) = match decompress::open(&input.path, counter.clone()) {
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
    let format = match opts.format {
        Format::Auto => detect(&head, &input.path),
        f => f,
    };
    if head.is_empty() {
        sink(Item::Skip(Skip {
            reason: SkipReason::EmptyFile,
            detail: format!("{name}: empty input"),
        }))?;
        return sink(end(format, compression, &counter));
    }
    if format != Format::Parquet && looks_binary(&head) {
        let detail = format!(
            "{name}: binary content (NUL bytes in the first {} bytes), not text",
            head.len()
        );
        sink(Item::Skip(Skip {
            reason: SkipReason::BinaryFile,
            detail,
        }))?;
        return sink(end(format, compression, &counter));
    }
    let mut reader = decompress::unpeek(head, reader);
    let result = match format {
        Format::Wiki => wiki::read(&mut *reader, &name, sink),
        Format::Jsonl => read_jsonl(&mut *reader, &name, opts, sink),
        Format::Json => read_json_object(&mut *reader, &name, opts, sink),
        Format::Tsv => read_tsv(&mut *reader, &name, opts, sink),
        Format::Text => read_text(&mut *reader, &name, opts, sink),
        Format::Parquet => {
            drop(reader); // Parquet is read from the file by offset, not through the stream.
            let r = read_parquet(input, opts, sink);
            let size = std::fs::metadata(&input.path).map(|m| m.len()).unwrap_or(0);
            counter.store(start + size, Ordering::Relaxed);
            r
        }
        Format::Auto => unreachable!("resolved above"),
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
        // A first line that is a whole object holding a text or id field: JSON Lines. Otherwise one
        // object keyed by title (possibly pretty-printed over many lines).
        let first = t.lines().next().unwrap_or("");
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(first) {
            if m.values().all(|v| !v.is_object()) {
                return Format::Jsonl;
            }
        }
        return Format::Json;
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

/// Walks capped lines, mapping I/O errors to `ReadFailure` and over-long lines and bad UTF-8 to skips.
fn for_each_line(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
    mut f: impl FnMut(u64, &str, &mut dyn FnMut(Item) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let line = read_line_capped(reader, &mut buf, opts.max_record_bytes).map_err(|source| {
            ReadFailure {
                name: name.to_string(),
                line: line_no,
                source,
            }
        })?;
        line_no += 1;
        match line {
            Line::Eof => return Ok(()),
            Line::TooLong(n) => sink(Item::Skip(Skip {
                reason: SkipReason::RecordTooLarge,
                detail: format!(
                    "{name}:{line_no}: line of {n} bytes exceeds --max-record-bytes {}",
                    opts.max_record_bytes
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

/// Picks the text and id of one JSON object; `Err` names what is missing.
fn json_doc(
    obj: &serde_json::Map<String, serde_json::Value>,
    opts: &ReadOptions,
    fallback_id: String,
) -> std::result::Result<Document, String> {
    let text = match &opts.text_field {
        Some(f) => obj
            .get(f)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("no string field {f:?}"))?,
        None => TEXT_FIELDS
            .iter()
            .find_map(|f| obj.get(*f).and_then(|v| v.as_str()))
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
            .unwrap_or(fallback_id),
    };
    let title = obj
        .get("title")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(Document {
        id,
        title,
        text: text.to_string(),
        markup: Markup::Plain,
    })
}

fn read_jsonl(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    for_each_line(reader, name, opts, sink, |line_no, line, sink| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let item = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(obj)) => {
                match json_doc(&obj, opts, format!("{name}:{line_no}")) {
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
fn read_json_object(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    struct Entries<'a> {
        name: &'a str,
        opts: &'a ReadOptions,
        sink: &'a mut dyn FnMut(Item) -> Result<()>,
        failed: Option<anyhow::Error>,
    }
    impl<'de> Visitor<'de> for &mut Entries<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object keyed by title")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            let mut n = 0u64;
            while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                n += 1;
                let item = match value {
                    serde_json::Value::Object(obj) => {
                        match json_doc(&obj, self.opts, key.clone()) {
                            Ok(mut doc) => {
                                if self.opts.id_field.is_none()
                                    && !ID_FIELDS.iter().any(|f| obj.contains_key(*f))
                                {
                                    doc.id = key.clone();
                                }
                                doc.title.get_or_insert(key);
                                Item::Doc(doc)
                            }
                            Err(what) => Item::Skip(Skip {
                                reason: SkipReason::MissingField,
                                detail: format!("{}: entry {n} ({key:?}): {what}", self.name),
                            }),
                        }
                    }
                    serde_json::Value::String(text) => Item::Doc(Document {
                        id: key.clone(),
                        title: Some(key),
                        text,
                        markup: Markup::Plain,
                    }),
                    _ => Item::Skip(Skip {
                        reason: SkipReason::MalformedJson,
                        detail: format!(
                            "{}: entry {n} ({key:?}): expected an object or a string",
                            self.name
                        ),
                    }),
                };
                if let Err(e) = (self.sink)(item) {
                    self.failed = Some(e);
                    return Err(serde::de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for &mut Entries<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut entries = Entries {
        name,
        opts,
        sink,
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = (&mut entries).deserialize(&mut de);
    if let Some(e) = entries.failed {
        return Err(e);
    }
    if let Err(e) = result {
        let detail = format!(
            "{name}: line {} column {}: {e}; the rest of the file is skipped",
            e.line(),
            e.column()
        );
        let reason = if e.is_io() {
            SkipReason::ReadError
        } else {
            SkipReason::MalformedJson
        };
        (entries.sink)(Item::Skip(Skip { reason, detail }))?;
    }
    Ok(())
}

fn read_tsv(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    for_each_line(reader, name, opts, sink, |line_no, line, sink| {
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
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    if !opts.blank_line_docs {
        return for_each_line(reader, name, opts, sink, |line_no, line, sink| {
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
    for_each_line(reader, name, opts, sink, |line_no, line, sink| {
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
                start = line_no;
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
    let reader = builder
        .with_projection(mask)
        .with_batch_size(1024)
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
