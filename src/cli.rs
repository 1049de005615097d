//! Pieces shared by the subcommands' clap definitions (the commands themselves live in `main.rs` and
//! each stage's module).

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
