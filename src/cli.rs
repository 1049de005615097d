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
