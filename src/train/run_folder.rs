//! Whose run folder `--out` is. A second `train` or `finetune` into a folder that holds a run would
//! replace its `final/`, cut its `metrics.jsonl` and mix its checkpoints with the new ones, so a folder
//! holding a run is taken only when the user says what to do: `--resume` one of its checkpoints (the
//! run goes on), or `--overwrite` (its run files are removed first). `prepare` refuses the same way.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checkpoint::{CONFIG_FILE, FINAL_DIR};

/// What marks a folder as holding a run: a checkpoint, the final model (or its state), or metrics
/// lines. A `train_config.toml` alone is what a run that failed before its first step leaves; it is
/// rewritten, not counted.
fn run_files(out: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("--out {}: cannot list", out.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("--out {}: cannot list", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_run_file = name == FINAL_DIR
            || name == format!("{FINAL_DIR}-state")
            || name
                .strip_prefix("checkpoint-")
                .is_some_and(|n| n.parse::<u64>().is_ok())
            || (name == "metrics.jsonl" && entry.metadata().is_ok_and(|m| m.len() > 0));
        if is_run_file {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Refuses `out` when it is a file, or holds a run the command was not told to continue or replace;
/// with `overwrite`, removes that run's files (and nothing else). `resume` is the checkpoint being
/// continued: the folder may hold its own run, not another.
pub fn claim(out: &Path, resume: Option<&Path>, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!(
            "--out {}: is a file, not a run folder (give a folder to create, or an existing run folder)",
            out.display()
        );
    }
    let found = run_files(out)?;
    if found.is_empty() {
        return Ok(());
    }
    let names = found
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(ckpt) = resume {
        if overwrite {
            bail!("--overwrite with --resume: --overwrite would remove the run the checkpoint may belong to; resume into the checkpoint's own run folder or an empty one");
        }
        if is_run_of(ckpt, out) {
            return Ok(());
        }
        bail!(
            "--out {} holds another run ({names}) than the checkpoint {} belongs to: resuming there would mix the two; resume into {} (the checkpoint's run folder) or an empty folder, or add --overwrite without --resume to start over",
            out.display(),
            ckpt.display(),
            ckpt.parent().map_or_else(|| ".".into(), |p| p.display().to_string())
        );
    }
    if !overwrite {
        bail!(
            "--out {} holds a run ({names}): a new run there would replace its model and metrics; add --resume {}/checkpoint-N (or {}/final) to continue it, --overwrite to remove it and start over, or give another --out",
            out.display(),
            out.display(),
            out.display()
        );
    }
    log::warn!(
        "--overwrite: removing the earlier run in {} ({names})",
        out.display()
    );
    for path in found
        .iter()
        .cloned()
        .chain([out.join(CONFIG_FILE)].into_iter().filter(|p| p.exists()))
    {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("--overwrite: cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// Whether checkpoint `ckpt` (`RUN/checkpoint-N`, `RUN/final`) lies in run folder `out`.
fn is_run_of(ckpt: &Path, out: &Path) -> bool {
    let (Ok(ckpt), Ok(out)) = (ckpt.canonicalize(), out.canonicalize()) else {
        return false;
    };
    ckpt.parent() == Some(out.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_folder(dir: &Path) -> PathBuf {
        let out = dir.join("run");
        std::fs::create_dir_all(out.join("checkpoint-2")).unwrap();
        std::fs::create_dir_all(out.join("final")).unwrap();
        std::fs::write(out.join("metrics.jsonl"), "{}\n").unwrap();
        std::fs::write(out.join(CONFIG_FILE), "").unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        out
    }

    #[test]
    fn a_new_or_empty_folder_or_one_left_by_a_failed_start_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        claim(&dir.path().join("new"), None, false).unwrap();
        let out = dir.path().join("failed");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(CONFIG_FILE), "").unwrap();
        std::fs::write(out.join("metrics.jsonl"), "").unwrap();
        claim(&out, None, false).unwrap();
    }

    #[test]
    fn a_folder_holding_a_run_is_refused_without_overwrite_or_resume() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_folder(dir.path());
        let e = format!("{:#}", claim(&out, None, false).unwrap_err());
        assert!(
            e.contains("holds a run (checkpoint-2, final, metrics.jsonl)"),
            "{e}"
        );
        assert!(e.contains("--overwrite") && e.contains("--resume"), "{e}");
        assert!(out.join("final").is_dir());
    }

    #[test]
    fn resume_is_taken_only_into_the_checkpoints_own_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_folder(dir.path());
        claim(&out, Some(&out.join("checkpoint-2")), false).unwrap();
        let other = dir.path().join("other");
        std::fs::create_dir_all(other.join("final")).unwrap();
        let e = format!(
            "{:#}",
            claim(&other, Some(&out.join("checkpoint-2")), false).unwrap_err()
        );
        assert!(e.contains("holds another run"), "{e}");
        claim(
            &dir.path().join("empty"),
            Some(&out.join("checkpoint-2")),
            false,
        )
        .unwrap();
    }

    #[test]
    fn overwrite_removes_the_run_files_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let out = run_folder(dir.path());
        claim(&out, None, true).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt"]);
    }

    #[test]
    fn a_file_is_not_a_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "").unwrap();
        let e = format!("{:#}", claim(&f, None, false).unwrap_err());
        assert!(e.contains("is a file, not a run folder"), "{e}");
    }
}
