//! What a run reads, named so that two processes (ranks at start, a checkpoint and its resume) can
//! tell whether they train on the same data: file names (not paths: a folder copied to another node
//! is the same data), sizes and SHA-256 digests. Also resolves `finetune`'s TRAIN arguments.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::shards::Manifest;

/// One input of a run, as the checkpoint records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// A training file's name, or `N shard(s)` for a prepared folder.
    pub name: String,
    pub bytes: u64,
    /// Of the file's bytes as stored; for shards, of the manifest's (file, SHA-256) list.
    pub sha256: String,
}

impl std::fmt::Display for InputRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} bytes, sha256 {})",
            self.name,
            self.bytes,
            &self.sha256[..self.sha256.len().min(16)]
        )
    }
}

/// A prepared folder as one record: its shards' names and digests from the manifest (no shard is
/// read; the manifest's digests are checked by `inspect --verify`).
pub fn of_shards(m: &Manifest) -> InputRecord {
    let mut h = Sha256::new();
    for s in &m.shards {
        h.update(format!("{}\t{}\n", s.file, s.sha256).as_bytes());
    }
    InputRecord {
        name: format!("{} shard(s)", m.shards.len()),
        bytes: m.shards.iter().map(|s| s.bytes).sum(),
        sha256: crate::shards::fs::hex(&h.finalize()),
    }
}

/// Training files, each hashed whole (one sequential read, as the count of queries does anyway).
pub fn of_files(files: &[PathBuf]) -> Result<Vec<InputRecord>> {
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::metadata(f)
                .with_context(|| format!("{}: cannot read", f.display()))?
                .len();
            Ok(InputRecord {
                name: f
                    .file_name()
                    .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into()),
                bytes,
                sha256: crate::shards::manifest::sha256_file(f)?,
            })
        })
        .collect()
}

/// Refuses a resume on other data than the checkpoint's, naming the first difference; `allowed` (the
/// user's `--allow-data-change`) turns the refusal into a warning. A checkpoint from before inputs
/// were recorded, or a run reading a stream, has nothing to compare.
pub fn check_resume(
    ckpt: &Path,
    recorded: &[InputRecord],
    now: &[InputRecord],
    allowed: bool,
) -> Result<()> {
    if recorded.is_empty() || now.is_empty() || recorded == now {
        return Ok(());
    }
    let fmt = |r: &[InputRecord]| {
        r.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = format!(
        "--resume {}: the checkpoint was trained on {}; this run reads {}",
        ckpt.display(),
        fmt(recorded),
        fmt(now)
    );
    if allowed {
        log::warn!(
            "{what} (--allow-data-change: the cursor goes on counting batches of the new data)"
        );
        return Ok(());
    }
    bail!("{what}. The data cursor counts batches of the checkpoint's data; resume on the same files, or add --allow-data-change if continuing on other data is meant")
}

/// `finetune`'s TRAIN arguments as files: a folder stands for the files in it (sorted, hidden ones
/// left out: Tevatron's recipe links its training files into one folder); a file named twice is read
/// once. stdin cannot be read: the files are read once to count the queries, then once per epoch.
pub fn training_files(args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    for a in args {
        if a.as_os_str() == "-" {
            bail!("TRAIN -: fine-tuning cannot read its training lines from stdin (it reads them once to count the queries, then once per epoch); write them to a file and name it");
        }
        let meta = match std::fs::metadata(a) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "{}: no such file (TRAIN: Tevatron training lines)",
                    a.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("{}: cannot read", a.display())),
        };
        if meta.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(a)
                .with_context(|| format!("{}: cannot list", a.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            inside.sort();
            if inside.is_empty() {
                bail!(
                    "{}: a folder without training files (TRAIN: Tevatron training lines)",
                    a.display()
                );
            }
            files.extend(inside);
        } else {
            files.push(a.clone());
        }
    }
    let mut seen = std::collections::HashMap::new();
    let mut unique = Vec::new();
    for f in files {
        let meta =
            std::fs::metadata(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        if let Some(first) = seen.insert((meta.dev(), meta.ino()), f.clone()) {
            log::warn!("{} is {} again: read once", f.display(), first.display());
            seen.insert((meta.dev(), meta.ino()), first);
            continue;
        }
        if meta.len() == 0 {
            log::warn!("{}: empty, no training lines", f.display());
        }
        unique.push(f);
    }
    if unique
        .iter()
        .all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() == 0))
    {
        bail!(
            "the training files are empty: {}",
            unique
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_its_files_and_a_file_named_twice_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("train");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("b.jsonl"), "x\n").unwrap();
        std::fs::write(d.join("a.jsonl"), "x\n").unwrap();
        std::fs::write(d.join(".hidden"), "x\n").unwrap();
        let got = training_files(&[d.clone(), d.join("a.jsonl")]).unwrap();
        assert_eq!(got, [d.join("a.jsonl"), d.join("b.jsonl")]);
    }

    #[test]
    fn stdin_an_empty_folder_and_only_empty_files_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let e = training_files(&[PathBuf::from("-")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read its training lines from stdin"),
            "{e}"
        );
        let empty_dir = dir.path().join("e");
        std::fs::create_dir_all(&empty_dir).unwrap();
        let e = training_files(&[empty_dir]).unwrap_err().to_string();
        assert!(e.contains("a folder without training files"), "{e}");
        let f = dir.path().join("empty.jsonl");
        std::fs::write(&f, "").unwrap();
        let e = training_files(&[f]).unwrap_err().to_string();
        assert!(e.contains("the training files are empty"), "{e}");
    }

    #[test]
    fn a_resume_on_other_data_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        std::fs::write(&a, "one\n").unwrap();
        std::fs::write(&b, "two\n").unwrap();
        let (ra, rb) = (of_files(&[a]).unwrap(), of_files(&[b]).unwrap());
        check_resume(Path::new("ck"), &ra, &ra, false).unwrap();
        let e = check_resume(Path::new("ck"), &ra, &rb, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("trained on a.jsonl (4 bytes") && e.contains("--allow-data-change"),
            "{e}"
        );
        check_resume(Path::new("ck"), &ra, &rb, true).unwrap();
        check_resume(Path::new("ck"), &[], &rb, false).unwrap();
    }
}
