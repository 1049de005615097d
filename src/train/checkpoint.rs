//! Checkpoints: the model directory of `model::hf` plus the trainer state (optimizer moments, step,
//! data cursor, configuration), written atomically. RNG states need no saving: every random draw is
//! keyed by (seed, epoch, step, ...), so the cursor and the step determine them.
//!
//! `checkpoint-N/` are resume points and hold both, as HF Trainer's do. `final/` is the model to
//! publish, so it holds the model alone and its resume state (twice the model's size in optimizer
//! moments) goes beside it in `final-state/`, where `--resume RUN/final` finds it. Run folders from
//! before that keep the state inside `final/`, and resume from there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::loader::Cursor;
use super::optim::AdamW;
use crate::model::{hf, Condenser};
use crate::shards::writer::sync_dir;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const CONFIG_FILE: &str = "train_config.toml";
/// The run's last checkpoint, saved as a clean model folder.
pub const FINAL_DIR: &str = "final";

/// The folder holding the resume state of checkpoint `dir`: `dir` itself when its trainer state is
/// inside (`checkpoint-N/`, or `final/` of an older run), else the sibling `NAME-state/`.
pub fn state_dir(dir: &Path) -> PathBuf {
    if dir.join(STATE_FILE).is_file() {
        return dir.to_path_buf();
    }
    separate_state_dir(dir).unwrap_or_else(|| dir.to_path_buf())
}

/// `NAME-state/` beside `dir` (`--resume .` inside it resolved through the real path).
fn separate_state_dir(dir: &Path) -> Option<PathBuf> {
    let dir = match dir.file_name() {
        Some(_) => dir.to_path_buf(),
        None => dir.canonicalize().ok()?,
    };
    let name = dir.file_name()?.to_string_lossy().into_owned();
    Some(dir.with_file_name(format!("{name}-state")))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    /// Data position after the last step.
    pub cursor: Cursor,
    /// The effective configuration of the run.
    pub config: TrainConfig,
    pub tool: String,
    /// Processes that trained it (data parallelism): the cursor counts batches of all of them.
    #[serde(default = "one")]
    pub world_size: usize,
    /// What the run read (names, sizes, SHA-256): a resume on other data is refused. Empty in
    /// checkpoints from before it was recorded, and for shard paths on stdin.
    #[serde(default)]
    pub inputs: Vec<super::inputs::InputRecord>,
}

fn one() -> usize {
    1
}

impl TrainerState {
    /// Refuses a state no run could have written (`path` is its file, for the message): a step past
    /// the run's total or past `MAX_STEPS` (say 10^12), or a data cursor past the batches that many
    /// steps consume. Its configuration is checked where it is merged (`TrainConfig::load_over`).
    pub fn check(&self, path: &Path) -> Result<()> {
        let max = super::config::MAX_STEPS;
        if self.step > max || self.total_steps > max {
            bail!(
                "{}: step {} of total_steps {}; a run has at most {max} steps",
                path.display(),
                self.step,
                self.total_steps
            );
        }
        if self.step > self.total_steps {
            bail!(
                "{}: step {} is past the run's total_steps {}",
                path.display(),
                self.step,
                self.total_steps
            );
        }
        // Every step consumes world_size x grad_accum batches, and every finished epoch at least one.
        let consumed =
            self.step * self.config.optim.grad_accum.max(1) as u64 * self.world_size.max(1) as u64;
        if self.cursor.batches > consumed || self.cursor.epoch > consumed {
            bail!(
                "{}: the data cursor (epoch {}, batch {}) is past the {consumed} batch(es) that {} step(s) consume",
                path.display(),
                self.cursor.epoch,
                self.cursor.batches,
                self.step
            );
        }
        Ok(())
    }
}

/// Removes the `.checkpoint-N.tmp-PID` / `.final.tmp-PID` folders (and `.old-PID` ones) in `out` that
/// a process which no longer runs left behind (killed while saving): each holds a whole checkpoint.
/// Those of a live process (kill(pid, 0) succeeds or is refused for permission) are kept.
pub fn remove_stale_temporaries(out: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // no run folder yet
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temporary_pid(&name) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) || !entry.path().is_dir() {
            continue;
        }
        let path = entry.path();
        log::info!(
            "removing {} (left by process {pid}, which no longer runs)",
            path.display()
        );
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    Ok(())
}

/// The PID of a temporary checkpoint folder's name (`hf::save`'s `.NAME.tmp-PID`, `.NAME.old-PID`).
fn temporary_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    // (`.train-cache.tmp-PID`: fine-tuning's decompressed training files, `query_order::cache_dir`.)
    let ours = [
        "checkpoint-",
        "final.",
        "final-state.",
        "train-cache.",
        "best.",
    ];
    if !ours.iter().any(|p| rest.starts_with(p)) {
        return None;
    }
    let (_, pid) = rest
        .rsplit_once(".tmp-")
        .or_else(|| rest.rsplit_once(".old-"))?;
    pid.parse().ok().filter(|&p| p > 0)
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub fn save(
    dir: &Path,
    vs: &tch::nn::VarStore,
    model: &Condenser,
    tokenizer: &Path,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<()> {
    let moments = opt.moments();
    let extra = [
        (OPTIMIZER_FILE, hf::safetensors_bytes(&moments)?),
        (STATE_FILE, serde_json::to_vec_pretty(state)?),
        (CONFIG_FILE, state.config.to_toml().into_bytes()),
    ];
    // A fine-tuned retriever is saved without the heads it never trained, and with how it reads
    // and scores passages (for eval, mine and encode).
    let encoder_only = state.config.stage == super::config::Stage::Finetune;
    let model_files = retriever_files(&state.config);
    if dir.file_name().and_then(|n| n.to_str()) != Some(FINAL_DIR) {
        let all: Vec<(&str, Vec<u8>)> = extra.into_iter().chain(model_files).collect();
        return hf::save_parts(dir, vs, model, tokenizer, &all, encoder_only);
    }
    let state_dir = separate_state_dir(dir).context("final checkpoint path has no parent")?;
    save_apart(dir, &state_dir, &extra, || {
        hf::save_parts(dir, vs, model, tokenizer, &model_files, encoder_only)
    })
}

/// The files beside a fine-tuned retriever's weights (none for the pre-training stages): how it reads
/// and scores passages (`condenser_retriever.json`) and sentence-transformers' files for that similarity
/// (a Normalize module for cosine).
pub fn retriever_files(cfg: &super::config::TrainConfig) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    if cfg.stage == super::config::Stage::Finetune {
        let r = crate::model::retriever::RetrieverConfig {
            title_separator: cfg.data.title_separator,
            similarity: cfg.loss.similarity,
        };
        files.push((crate::model::retriever::FILE, r.to_json()));
        files.extend(crate::model::export::sentence_transformers_files(
            r.similarity,
        ));
    }
    files
}

/// Writes the state `files` to `state_dir` and the model (by `save_model`, atomic itself) to `dir`,
/// so that a `state_dir` present always belongs to the `dir` beside it: the old state is moved aside
/// before the model changes and the new one put in place only after. A crash in between leaves a
/// model without resume state (refused by `--resume`, which names it), never a mismatched pair.
fn save_apart(
    dir: &Path,
    state_dir: &Path,
    files: &[(&str, Vec<u8>)],
    save_model: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let parent = state_dir.parent().context("no parent folder")?;
    let name = state_dir
        .file_name()
        .context("no folder name")?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let written = files.iter().try_for_each(|(file, bytes)| {
        let path = tmp.join(file);
        std::fs::write(&path, bytes)
            .and_then(|_| std::fs::File::open(&path)?.sync_all())
            .with_context(|| format!("{}: cannot write", path.display()))
    });
    if let Err(e) = written.and_then(|_| sync_dir(&tmp)) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("saving {}", state_dir.display())));
    }
    let moved = state_dir.exists();
    if moved {
        std::fs::rename(state_dir, &old)
            .with_context(|| format!("cannot move {} aside", state_dir.display()))?;
        sync_dir(parent)?;
    }
    if let Err(e) = save_model() {
        // The model is still the old one: so is its state again.
        if moved {
            let _ = std::fs::rename(&old, state_dir);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, state_dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), state_dir.display()))?;
    sync_dir(parent)?;
    if moved {
        let _ = std::fs::remove_dir_all(&old);
    }
    log::debug!("{}: resume state of {}", state_dir.display(), dir.display());
    Ok(())
}

/// Reads the trainer state of a checkpoint and restores the optimizer moments into `opt`.
pub fn load_state(dir: &Path, opt: &mut AdamW) -> Result<TrainerState> {
    let dir = &state_dir(dir);
    let state_path = dir.join(STATE_FILE);
    let state: TrainerState =
        serde_json::from_slice(&std::fs::read(&state_path).with_context(|| {
            format!(
                "{}: cannot read (not a training checkpoint, or its state was not saved)",
                state_path.display()
            )
        })?)
        .with_context(|| format!("{}: not a trainer state", state_path.display()))?;
    state.check(&state_path)?;
    let (tensors, _) = hf::read_safetensors(&dir.join(OPTIMIZER_FILE))?;
    let by_name: HashMap<String, tch::Tensor> = tensors.into_iter().collect();
    for (key, mut slot) in opt.moments() {
        let t = by_name
            .get(&key)
            .with_context(|| format!("{}: no {key}", dir.join(OPTIMIZER_FILE).display()))?;
        if t.size() != slot.size() {
            bail!(
                "{key}: shape {:?} in the checkpoint, {:?} in the model",
                t.size(),
                slot.size()
            );
        }
        tch::no_grad(|| slot.copy_(t));
    }
    opt.set_steps(state.step as i64);
    Ok(state)
}

/// `RUN/checkpoint-STEP`.
pub fn step_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// Removes all but the newest `keep` step checkpoints.
pub fn prune(out: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    steps.sort();
    let n = steps.len();
    for (_, p) in steps.into_iter().take(n.saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
    }
    Ok(())
}
