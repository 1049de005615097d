//! Turning the command line's paths into an ordered list of inputs: files, directories (walked in
//! sorted order), globs (sorted), or `-` for stdin. The order is part of the output's identity.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One input file, or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// False when the path did not exist: the reader reports it as a `missing_path` skip.
    /// [`expand_inputs`] never returns such an input (a missing path is an error there).
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

/// A hint for an argument that names something to download rather than a local path: a URL
/// (`s3://`, `https://`, `hf://`, ...) or a hub name like `wikimedia/wikipedia`.
fn remote_hint(arg: &str) -> Option<String> {
    if let Some((scheme, _)) = arg.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
        {
            return Some(format!(
                "{scheme}:// is not read directly: condenser reads local files and stdin; download it first, or stream it in (e.g. `curl -sL URL | condenser prepare - ...`)"
            ));
        }
    }
    let name_part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match arg.split_once('/') {
        Some((owner, name)) if name_part(owner) && name_part(name) => Some(format!(
            "{arg:?} looks like a Hugging Face hub name: condenser reads local files and stdin; download it first (e.g. `huggingface-cli download --repo-type dataset {arg} --local-dir DIR`) and pass the local files"
        )),
        _ => None,
    }
}

/// Expands paths, directories and globs; hidden files inside directories are left out. A path
/// that does not exist, a glob that matches no file and a directory without files are errors (all
/// of them named at once): nothing is read or written before the inputs are all there. Each real
/// file is read once, however many paths (symlinks, repeated arguments) lead to it; directory
/// walks follow symlinks but never enter a directory twice, so a symlink loop ends.
pub fn expand_inputs(args: &[String]) -> Result<Vec<Input>> {
    let inputs = expand_inputs_keeping_missing(args)?;
    let missing: Vec<&Input> = inputs.iter().filter(|i| !i.exists).collect();
    if !missing.is_empty() {
        return Err(missing_inputs_error(&missing));
    }
    Ok(inputs)
}

/// The error for paths that do not exist, with a hint for hub names and URLs.
pub fn missing_inputs_error(missing: &[&Input]) -> anyhow::Error {
    let parts: Vec<String> = missing.iter().copied().map(missing_message).collect();
    anyhow::anyhow!("missing input: {}", parts.join("; "))
}

fn missing_message(input: &Input) -> String {
    let arg = input.name();
    match remote_hint(&arg) {
        Some(hint) => format!("{arg}: no such file or directory ({hint})"),
        None => format!("{arg}: no such file or directory"),
    }
}

/// As [`expand_inputs`], but a plain path that does not exist is returned with `exists: false`
/// instead of failing (`prepare` resuming a folder that already holds that input's documents does
/// not need it again; every other caller must refuse it). Empty globs and directories are errors.
pub fn expand_inputs_keeping_missing(args: &[String]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
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
            let mut visited = HashSet::new();
            walk(path, &mut visited, &mut files, &mut missing)
                .with_context(|| format!("{arg}: cannot list directory"))?;
            files.sort();
            if files.is_empty() {
                missing.push(format!("{arg}: the directory holds no (non-hidden) files"));
            }
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
                missing.push(format!("{arg}: the pattern matches no file"));
            }
            out.extend(files.into_iter().map(|path| Input { path, exists: true }));
        } else {
            out.push(Input {
                path: path.to_path_buf(),
                exists: false,
            });
        }
    }
    if !missing.is_empty() {
        // Named all at once, the paths that do not exist too.
        missing.extend(out.iter().filter(|i| !i.exists).map(missing_message));
        bail!("missing input: {}", missing.join("; "));
    }
    // The same real file twice would be the same documents twice: the first path read wins.
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    let mut unique = Vec::with_capacity(out.len());
    for input in out {
        if !input.is_stdin() {
            // A pipe (`<(zcat x.gz)`, /dev/fd/N) has no real path: its own name is the key.
            let real = std::fs::canonicalize(&input.path).unwrap_or_else(|_| input.path.clone());
            if let Some(first) = seen.get(&real) {
                log::warn!(
                    "{}: the same file as {first}; read once",
                    input.path.display()
                );
                continue;
            }
            seen.insert(real, input.name());
        }
        unique.push(input);
    }
    Ok(unique)
}

/// Collects the files under `dir`, entries in sorted order, entering each real directory once.
fn walk(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<PathBuf>,
    missing: &mut Vec<String>,
) -> std::io::Result<()> {
    if !visited.insert(std::fs::canonicalize(dir)?) {
        log::debug!("{}: a directory already walked; skipped", dir.display());
        return Ok(());
    }
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, visited, files, missing)?;
        } else if path.exists() {
            files.push(path);
        } else {
            missing.push(format!("{}: a symlink to nothing", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(inputs: &[Input]) -> Vec<String> {
        inputs
            .iter()
            .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dirs_and_globs_expand_sorted_and_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", ".hidden", "c.jsonl"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let d = dir.path().display().to_string();
        let got = expand_inputs(&[d.clone(), format!("{d}/*.txt"), "-".into()]).unwrap();
        assert_eq!(names(&got), ["a.txt", "b.txt", "c.jsonl", "-"]);
        assert!(got.iter().all(|i| i.exists));
    }

    #[test]
    fn missing_paths_empty_globs_and_hub_names_are_errors_with_hints() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let d = dir.path().display().to_string();
        let err = format!(
            "{:#}",
            expand_inputs(&[
                format!("{d}/nope.jsonl"),
                format!("{d}/*.md"),
                format!("{d}/empty"),
                "wikimedia/wikipedia".into(),
                "s3://bucket/x.jsonl".into(),
                "hf://datasets/x/y".into(),
            ])
            .unwrap_err()
        );
        for want in [
            "nope.jsonl: no such file",
            "*.md: the pattern matches no file",
            "empty: the directory holds no",
            "looks like a Hugging Face hub name",
            "huggingface-cli download --repo-type dataset wikimedia/wikipedia",
            "s3:// is not read directly",
            "hf:// is not read directly",
        ] {
            assert!(err.contains(want), "{want:?} missing from {err}");
        }
        assert!(remote_hint("data/x.jsonl").is_some()); // hub-shaped, but only hinted when missing
        assert!(remote_hint("/abs/x").is_none() && remote_hint("./a/b").is_none());
    }

    #[test]
    fn a_symlink_loop_is_walked_once_and_a_file_reached_twice_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("x.txt"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path(), sub.join("loop")).unwrap();
        std::os::unix::fs::symlink(sub.join("x.txt"), dir.path().join("alias.txt")).unwrap();
        let got = expand_inputs(&[dir.path().display().to_string()]).unwrap();
        assert_eq!(names(&got), ["alias.txt"]);
        std::os::unix::fs::symlink(dir.path().join("gone"), sub.join("dangling")).unwrap();
        let err = format!(
            "{:#}",
            expand_inputs(&[dir.path().display().to_string()]).unwrap_err()
        );
        assert!(err.contains("dangling: a symlink to nothing"), "{err}");
    }
}
