//! Checkpoints: the model directory of `model::hf` plus the trainer state (optimizer moments, step,
//! data cursor, configuration), written atomically. RNG states need no saving: every random draw is
//! keyed by (seed, epoch, step, ...), so the cursor and the step determine them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::loader::Cursor;
use super::optim::AdamW;
use crate::model::{hf, Condenser};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

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
        ("train_config.toml", state.config.to_toml().into_bytes()),
    ];
    hf::save(dir, vs, model, tokenizer, &extra)
}

/// Reads the trainer state of a checkpoint and restores the optimizer moments into `opt`.
pub fn load_state(dir: &Path, opt: &mut AdamW) -> Result<TrainerState> {
    let state_path = dir.join(STATE_FILE);
    let state: TrainerState =
        serde_json::from_slice(&std::fs::read(&state_path).with_context(|| {
            format!(
                "{}: cannot read (not a training checkpoint?)",
                state_path.display()
            )
        })?)
        .with_context(|| format!("{}: not a trainer state", state_path.display()))?;
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
