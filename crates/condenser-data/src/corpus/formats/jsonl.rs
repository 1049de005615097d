//! JSON Lines (WikiExtractor, Hugging Face `{"id","title","text"}`), and how a JSON object becomes a
//! document (its text and id fields), which the keyed-JSON and Parquet readers share.

use super::*;

pub(super) fn json_str(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Picks the text and id of one JSON object; `Err` names what is missing. The text is moved out of
/// the object, not copied (a record may be as large as `--max-record-bytes`).
pub(super) fn json_doc(
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

pub(super) fn read_jsonl(
    reader: &mut dyn BufRead,
    name: &str,
    opts: &ReadOptions,
    base: &Arc<LineBase>,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    if opts.defer_parsing {
        return RawRecord::read_lines(reader, name, opts, base, Format::Jsonl, sink);
    }
    for_each_line(reader, name, opts, base, sink, |line_no, line, sink| {
        if line.trim().is_empty() {
            return Ok(());
        }
        sink(jsonl_item(line, name, line_no, opts))
    })
}

/// Whether a JSON Lines line is blank (`trim` leaves nothing), from its bytes: only the first byte
/// that is not ASCII white space is looked at unless it starts a multi-byte character. A line that
/// is not UTF-8 is not blank (it is an `invalid_utf8` skip).
pub(super) fn is_blank_json_line(line: &[u8]) -> bool {
    match line
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
    {
        None => true,
        Some(i) if line[i] < 0x80 => false,
        Some(_) => std::str::from_utf8(line).is_ok_and(|s| s.trim().is_empty()),
    }
}

/// The document (or skip) of one non-blank JSON Lines line.
pub(super) fn jsonl_item(line: &str, name: &str, line_no: LineNo<'_>, opts: &ReadOptions) -> Item {
    match serde_json::from_str::<serde_json::Value>(line) {
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
    }
}
