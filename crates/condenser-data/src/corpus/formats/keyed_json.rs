//! One JSON object keyed by title whose values are objects (the ovos summaries file), streamed entry
//! by entry through a byte scanner that never builds more than one record.

use super::*;

/// One JSON object keyed by title, values objects (the ovos summaries file), streamed entry by entry.
///
/// The object is walked by a small scanner, not a JSON parser, so that no entry is built before its
/// size is known: an entry's key and value are copied out only up to `--max-record-bytes` (a longer
/// one is skipped, counted as `record_too_large`, without being held), then parsed on their own.
/// A first value that is not an object means the input is not this format (an error naming the
/// file, not a corpus of field names), and so does content after the object (JSON Lines).
pub(super) fn read_json_object(
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

pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
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
pub(super) enum Took {
    /// The whole value is in the buffer.
    Whole,
    /// The value is longer than the cap: the buffer holds a prefix, the scan stopped mid-value
    /// (resume with [`JsonScan::skip_rest`]).
    TooLarge,
    /// The input ended inside the value.
    Eof,
}

/// A byte scanner over a JSON stream that finds where one value ends without building it.
pub(super) struct JsonScan<'a> {
    r: &'a mut dyn BufRead,
    name: &'a str,
    offset: u64,
    line: u64,
    state: ValueState,
}

/// Where the scanner is inside the current value.
#[derive(Default, Clone, Copy)]
pub(super) struct ValueState {
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
