//! Input formats: every source becomes a stream of [`Item`]s (documents, counted skips, input ends).
//!
//! First stage of ARCHITECTURE.md's flow. Readers are push-based: each walks its input once, in order, and
//! hands items to a sink, so a keyed JSON object or an XML dump streams as easily as a line file and
//! nothing holds a whole input in memory. The sink decides about resume and chunking; a partition of
//! one input is read by `read_input_part` (a byte range of a line file, else every N-th record).

pub mod decode;
pub mod formats;
pub mod inputs;
pub mod lines;
pub mod partition;
pub mod passage;
pub mod wiki;
pub mod wikitext;

use std::fmt;

pub use formats::{read_input, read_input_part, Format, Part, RawRecord, ReadOptions};
pub use inputs::{expand_inputs, Input};

/// How a document's text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    Plain,
    /// MediaWiki markup, converted to plain text in the parallel stage (see `wikitext`).
    Wikitext,
}

/// One document as read from its source.
#[derive(Debug, Clone)]
pub struct Document {
    /// The source's own id: Wikipedia page id, MS MARCO pid, JSON id, or `file:line`.
    pub id: String,
    pub title: Option<String>,
    pub text: String,
    pub markup: Markup,
}

impl Document {
    /// Converts the text to plain text in place (wikitext markup; plain text is left alone).
    pub fn to_plain(&mut self) {
        if self.markup == Markup::Wikitext {
            self.text = wikitext::to_plain_text(&self.text);
            self.markup = Markup::Plain;
        }
    }
}

/// Why a record (or a whole input) produced no document.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    // Bad input: these are errors (`--on-error fail` stops on them).
    MissingPath,
    EmptyFile,
    BinaryFile,
    ReadError,
    InvalidUtf8,
    MalformedJson,
    MissingField,
    MissingColumn,
    RecordTooLarge,
    MalformedXml,
    // Ordinary filtering: counted, never errors.
    Redirect,
    NotArticle,
    EmptyText,
    NoTokens,
    TooFewSpans,
}

impl SkipReason {
    /// Bad input rather than ordinary filtering.
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            SkipReason::Redirect
                | SkipReason::NotArticle
                | SkipReason::EmptyText
                | SkipReason::NoTokens
                | SkipReason::TooFewSpans
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MissingPath => "missing_path",
            SkipReason::EmptyFile => "empty_file",
            SkipReason::BinaryFile => "binary_file",
            SkipReason::ReadError => "read_error",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::MalformedJson => "malformed_json",
            SkipReason::MissingField => "missing_field",
            SkipReason::MissingColumn => "missing_column",
            SkipReason::RecordTooLarge => "record_too_large",
            SkipReason::MalformedXml => "malformed_xml",
            SkipReason::Redirect => "redirect",
            SkipReason::NotArticle => "not_article",
            SkipReason::EmptyText => "empty_text",
            SkipReason::NoTokens => "no_tokens",
            SkipReason::TooFewSpans => "too_few_spans",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A skipped record: the reason, and where (file, line or byte offset, what was expected).
#[derive(Debug, Clone)]
pub struct Skip {
    pub reason: SkipReason,
    pub detail: String,
}

/// What a reader hands to its sink.
#[derive(Debug, Clone)]
pub enum Item {
    Doc(Document),
    Skip(Skip),
    /// A line not parsed yet: only when [`ReadOptions::defer_parsing`] asks for it, and then the
    /// caller makes it the `Doc` or `Skip` it stands for with [`RawRecord::parse`].
    Raw(RawRecord),
    /// The input was read to its end (or abandoned after an error); `bytes` raw bytes were read.
    End {
        bytes: u64,
        format: Format,
        compression: decode::decompress::Compression,
    },
}

/// The sink's answer: go on, or stop reading this input (a partition or resume decision never stops
/// a reader; `--on-error fail` does, by returning an error).
pub type SinkResult = anyhow::Result<()>;
