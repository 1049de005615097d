//! Pieces shared by the subcommands' clap definitions (the commands themselves live in `main.rs` and
//! each stage's module). The rule: a command's flags are defined in its own module; what several
//! commands take alike is defined once here; lower layers (corpus, shards, model, dist) derive no clap
//! traits beyond `ValueEnum` on an enum whose values are the user's words (`corpus::Format`).

use crate::corpus::{Format, ReadOptions};

/// How an input's records are read, as `prepare` and `encode` take it on the command line: the
/// format, the JSON/Parquet fields, the TSV columns and the plain-text layout.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
    /// Input format; `auto` detects it from the content.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// JSON/Parquet field holding the text [default: text, contents, extract, body or passage].
    #[arg(long)]
    pub text_field: Option<String>,
    /// JSON/Parquet field holding the document id [default: id, _id, docid, doc_id or pid].
    #[arg(long)]
    pub id_field: Option<String>,
    /// TSV column (0-based) holding the text.
    #[arg(long, default_value_t = 1)]
    pub text_column: usize,
    /// TSV column holding the id; `none` names records `file:line`.
    #[arg(long, default_value = "0", value_parser = parse_id_column)]
    pub id_column: IdColumn,
    /// Plain text: records are separated by blank lines (default: one record per line).
    #[arg(long)]
    pub blank_line_docs: bool,
}

impl InputArgs {
    /// The read options these flags give, the others at their defaults.
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            format: self.format,
            text_field: self.text_field.clone(),
            id_field: self.id_field.clone(),
            text_column: self.text_column,
            id_column: self.id_column.0,
            blank_line_docs: self.blank_line_docs,
            ..Default::default()
        }
    }
}

/// `--id-column`: a column number or `none`.
#[derive(Debug, Clone, Copy)]
pub struct IdColumn(pub Option<usize>);

fn parse_id_column(s: &str) -> Result<IdColumn, String> {
    if s == "none" {
        return Ok(IdColumn(None));
    }
    s.parse()
        .map(|c| IdColumn(Some(c)))
        .map_err(|_| format!("{s:?} is not a column number or `none`"))
}

/// The "Examples:" section closing a command's `--help`: real command lines, as in the README.
pub fn examples(lines: &[&str]) -> String {
    let mut out = String::from("Examples:");
    for line in lines {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out
}

/// A command's one input given positionally or, as older command lines spell it, by a hidden
/// flag (`--input`, `--data`): whichever was given. clap enforces that exactly one was.
pub fn either<T>(positional: Option<T>, flag: Option<T>, what: &str) -> anyhow::Result<T> {
    positional
        .or(flag)
        .ok_or_else(|| anyhow::anyhow!("{what} is needed"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn examples_are_indented_under_a_heading() {
        assert_eq!(
            super::examples(&["condenser env", "condenser env --json"]),
            "Examples:\n  condenser env\n  condenser env --json"
        );
    }
}

/// An error and its causes on one line, as `{:#}` prints them, but without a cause that only repeats
/// what the text before it already says (a Parquet or zstd error that displays its I/O source, then
/// the same I/O error as that source).
pub fn error_text(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod error_text_tests {
    use super::*;

    #[test]
    fn a_cause_repeating_its_parent_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "External: {}", self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = anyhow::Error::new(Wrap(io)).context("writing stdout");
        assert_eq!(
            error_text(&err),
            "writing stdout: External: No space left on device"
        );
    }
}
