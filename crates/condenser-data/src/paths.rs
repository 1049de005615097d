//! Where the pinned set-up data lives (`pipelines/fetch_data.py` puts it there).

use std::path::{Path, PathBuf};

/// The folder holding the pinned data: `$CONDENSER_DATA` when set, else `data/` of the source tree
/// this binary was built from.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("CONDENSER_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => source_tree().join("data"),
    }
}

/// The repository this crate was built in (it lives in `crates/condenser-data/`).
fn source_tree() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here)
}

/// The bert-base-uncased WordPiece `tokenizer.json` (shipped with the MiniLM warm start).
pub fn default_tokenizer() -> PathBuf {
    data_dir().join("minilm").join("tokenizer.json")
}

/// The all-MiniLM-L6-v2 Hugging Face directory used as the demo's warm start.
pub fn minilm_dir() -> PathBuf {
    data_dir().join("minilm")
}

/// Refuses an output that is one of the command's own inputs (the same file: device and inode, with
/// symlinks followed), before any work: writing it would replace the input, often with an empty or
/// partial file. `out_flag` names the output as the user gave it (`--out`), `inputs` each input with
/// its flag. An output that does not exist yet, or `-` (stdout), cannot be an input.
pub fn refuse_output_over_inputs(
    out_flag: &str,
    out: &std::path::Path,
    inputs: &[(&str, &std::path::Path)],
) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if out.as_os_str() == "-" {
        return Ok(());
    }
    let Ok(o) = std::fs::metadata(out) else {
        return Ok(());
    };
    for (flag, input) in inputs {
        if input.as_os_str() == "-" {
            continue;
        }
        if let Ok(i) = std::fs::metadata(input) {
            if i.dev() == o.dev() && i.ino() == o.ino() {
                anyhow::bail!(
                    "{out_flag} {} is the same file as {flag} {}: writing it would replace the input; give another output path",
                    out.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn an_output_that_is_an_input_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("queries.tsv");
        std::fs::write(&input, "1\tq\n").unwrap();
        let link = dir.path().join("link.tsv");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let e = refuse_output_over_inputs("--out", &link, &[("--queries", &input)]).unwrap_err();
        assert!(
            e.to_string().contains("is the same file as --queries"),
            "{e}"
        );
        let other = dir.path().join("other.tsv");
        std::fs::write(&other, "").unwrap();
        refuse_output_over_inputs("--out", &other, &[("--queries", &input)]).unwrap();
        refuse_output_over_inputs("--out", &dir.path().join("new"), &[("--queries", &input)])
            .unwrap();
        refuse_output_over_inputs("--out", Path::new("-"), &[("--queries", Path::new("-"))])
            .unwrap();
    }
}
