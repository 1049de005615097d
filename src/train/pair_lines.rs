//! Tevatron's training lines: one query a line (`query_id`, `query`, `positive_passages`,
//! `negative_passages`, each passage `{docid, title, text}`), parsed into `Query`s, with the lines that
//! cannot be trained on counted by reason. What the fine-tuning loader (`pairs`) and the epoch's
//! global order (`query_order`) both read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::corpus::lines::{read_line_capped, Line};
use crate::corpus::passage::join_passage;

/// The longest training line read (a query with hundreds of negatives is a few hundred KB).
const MAX_LINE: usize = 64 << 20;

#[derive(Deserialize)]
struct RawPassage {
    #[serde(default)]
    title: Option<String>,
    text: String,
}

#[derive(Deserialize)]
struct RawQuery {
    query_id: serde_json::Value,
    query: String,
    positive_passages: Vec<RawPassage>,
    #[serde(default)]
    negative_passages: Vec<RawPassage>,
}

/// A training query with its passages' texts.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: String,
    pub text: String,
    pub positives: Vec<String>,
    pub negatives: Vec<String>,
}

/// Why a line was not trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not a Tevatron training record (bad JSON, a missing field, longer than MAX_LINE).
    Malformed(String),
    NoPositive,
    /// Fewer than one negative while `train_n_passages` > 1.
    NoNegative,
    /// The query text is empty (or whitespace).
    EmptyQuery,
    /// Every positive passage is empty (or whitespace).
    EmptyPositive,
    /// Every negative passage is empty while `train_n_passages` > 1.
    EmptyNegatives,
}

/// Parses one line; Ok(None) for a blank line.
pub fn parse_line(line: &[u8], n_passages: usize) -> Result<Option<Query>, Skip> {
    parse_line_joined(line, n_passages, " ")
}

/// As `parse_line`, passages' titles and texts joined by `joiner` (`join_passage`).
pub fn parse_line_joined(
    line: &[u8],
    n_passages: usize,
    joiner: &str,
) -> Result<Option<Query>, Skip> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let raw: RawQuery = serde_json::from_slice(line).map_err(|e| Skip::Malformed(e.to_string()))?;
    let id = match raw.query_id {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(Skip::Malformed(format!(
                "query_id must be a string or a number, got {other}"
            )))
        }
    };
    if raw.positive_passages.is_empty() {
        return Err(Skip::NoPositive);
    }
    if raw.query.trim().is_empty() {
        return Err(Skip::EmptyQuery);
    }
    // An empty passage would train the model to match [CLS] [SEP]: empty ones are dropped, and a
    // line left without a positive (or without a negative when some are needed) is skipped.
    let join = |ps: Vec<RawPassage>| -> Vec<String> {
        ps.into_iter()
            .map(|p| join_passage(p.title.as_deref(), &p.text, joiner))
            .filter(|t| !t.trim().is_empty())
            .collect()
    };
    let had_negatives = !raw.negative_passages.is_empty();
    let positives = join(raw.positive_passages);
    if positives.is_empty() {
        return Err(Skip::EmptyPositive);
    }
    let negatives = join(raw.negative_passages);
    if n_passages > 1 && negatives.is_empty() {
        return Err(match had_negatives {
            true => Skip::EmptyNegatives,
            false => Skip::NoNegative,
        });
    }
    Ok(Some(Query {
        id,
        text: raw.query,
        positives,
        negatives,
    }))
}

/// Reads every line of `files` in order, calling `f(file, line number, parsed)`; passages' titles
/// and texts joined by `joiner`.
pub fn for_each_query(
    files: &[PathBuf],
    n_passages: usize,
    joiner: &str,
    stop: &AtomicBool,
    mut f: impl FnMut(&Path, u64, Result<Query, Skip>) -> Result<bool>,
) -> Result<()> {
    let mut buf = Vec::new();
    for file in files {
        let (_, mut r) =
            crate::corpus::decode::decompress::open(file, Arc::new(AtomicU64::new(0)))?;
        let mut lineno = 0u64;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let line = read_line_capped(&mut *r, &mut buf, MAX_LINE, true)
                .with_context(|| format!("{}: line {}: cannot read", file.display(), lineno + 1))?;
            lineno += 1;
            let parsed = match line {
                Line::Eof => break,
                Line::Abandoned(n) => Err(Skip::Malformed(format!(
                    "a line of {n} bytes, longer than {MAX_LINE}"
                ))),
                _ => match parse_line_joined(&buf, n_passages, joiner) {
                    Ok(None) => continue,
                    Ok(Some(q)) => Ok(q),
                    Err(s) => Err(s),
                },
            };
            if !f(file, lineno, parsed)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Skipped lines by reason; the first few are named with file:line.
#[derive(Debug, Default)]
pub struct SkipCounts {
    pub malformed: u64,
    pub no_positive: u64,
    pub no_negative: u64,
    /// Empty query text, or only empty positives (or negatives, when some are needed).
    pub empty: u64,
}

impl SkipCounts {
    const NAMED: u64 = 5;

    pub fn total(&self) -> u64 {
        self.malformed + self.no_positive + self.no_negative + self.empty
    }

    /// Counts `skip` (and logs it, for the first few of each reason, when `log`).
    pub fn add(&mut self, file: &Path, line: u64, skip: &Skip, log: bool) {
        let (n, what) = match skip {
            Skip::Malformed(e) => (&mut self.malformed, format!("not a training record: {e}")),
            Skip::NoPositive => (&mut self.no_positive, "no positive passage".to_string()),
            Skip::NoNegative => (
                &mut self.no_negative,
                "no negative passage (data.train_n_passages > 1)".to_string(),
            ),
            Skip::EmptyQuery => (&mut self.empty, "the query text is empty".to_string()),
            Skip::EmptyPositive => (
                &mut self.empty,
                "every positive passage is empty".to_string(),
            ),
            Skip::EmptyNegatives => (
                &mut self.empty,
                "every negative passage is empty (data.train_n_passages > 1)".to_string(),
            ),
        };
        *n += 1;
        if log && *n <= Self::NAMED {
            log::warn!("{}:{line}: skipped: {what}", file.display());
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} line(s) skipped: {} malformed, {} without a positive, {} without a negative, {} with an empty query or only empty passages",
            self.total(),
            self.malformed,
            self.no_positive,
            self.no_negative,
            self.empty
        )
    }
}

/// Queries one epoch trains on, and the lines skipped (one pass; the loader names them by line).
pub fn count_queries(files: &[PathBuf], n_passages: usize) -> Result<(u64, SkipCounts)> {
    let (mut n, mut skips) = (0u64, SkipCounts::default());
    for_each_query(
        files,
        n_passages,
        " ",
        &AtomicBool::new(false),
        |file, line, q| {
            match q {
                Ok(_) => n += 1,
                Err(s) => skips.add(file, line, &s, false),
            }
            Ok(true)
        },
    )?;
    Ok((n, skips))
}
