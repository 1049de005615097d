//! Turning the command line's paths into an ordered list of inputs: files, directories (walked in
//! sorted order), globs (sorted), or `-` for stdin. The order is part of the output's identity.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One input file, or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// False when the path did not exist: the reader reports it as a `missing_path` skip.
    pub exists: bool,
}

impl Input {
    pub fn is_stdin(&self) -> bool {
        self.path == Path::new("-")
    }

    /// How the input is named in messages, doc ids and the manifest.
    pub fn name(&self) -> String {
        if self.is_stdin() {
            "<stdin>".to_string()
        } else {
            self.path.display().to_string()
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands paths, directories and globs; hidden files inside directories are left out.
pub fn expand_inputs(args: &[String]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            out.push(Input {
                path: PathBuf::from("-"),
                exists: true,
            });
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files).with_context(|| format!("{arg}: cannot list directory"))?;
            files.sort();
            out.extend(files.into_iter().map(|path| Input { path, exists: true }));
        } else if path.exists() {
            out.push(Input {
                path: path.to_path_buf(),
                exists: true,
            });
        } else if is_glob(arg) {
            let mut files: Vec<PathBuf> = glob::glob(arg)
                .with_context(|| format!("{arg}: not a valid glob pattern"))?
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                out.push(Input {
                    path: path.to_path_buf(),
                    exists: false,
                });
            }
            out.extend(files.into_iter().map(|path| Input { path, exists: true }));
        } else {
            out.push(Input {
                path: path.to_path_buf(),
                exists: false,
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_and_globs_expand_sorted_and_missing_paths_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", ".hidden", "c.jsonl"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let d = dir.path().display().to_string();
        let got = expand_inputs(&[
            d.clone(),
            format!("{d}/*.txt"),
            format!("{d}/nope"),
            "-".into(),
        ])
        .unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|i| {
                (
                    i.path.file_name().unwrap().to_string_lossy().into_owned(),
                    i.exists,
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a.txt".into(), true),
                ("b.txt".into(), true),
                ("c.jsonl".into(), true),
                ("a.txt".into(), true),
                ("b.txt".into(), true),
                ("nope".into(), false),
                ("-".into(), true)
            ]
        );
    }
}
