//! Which format an input is, from its decoded first bytes (the extension only tells TSV from text):
//! JSON is decided from the whole first line, never from a fixed window.

use super::*;

pub(super) fn looks_binary(head: &[u8]) -> bool {
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

pub(super) fn first_non_space(head: &[u8]) -> Option<u8> {
    let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(head);
    head.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Reads on (into `head`) until the first line of a JSON input has ended and the next
/// non-blank byte is known, or until `cap` bytes more than a record may hold: detection must never
/// decide from a truncated first line, and must not buffer more than one record to decide.
pub(super) fn extend_to_first_line(
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
pub(super) fn detect_json(t: &str) -> Format {
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

pub(super) struct Shape {
    first_is_object: bool,
}

/// The shape of `line` when it is exactly one JSON object: whether its first value is an object.
/// Values are skipped, not built.
pub(super) fn object_shape(line: &str) -> Option<Shape> {
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
pub(super) fn first_value_byte(t: &[u8]) -> Option<u8> {
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
