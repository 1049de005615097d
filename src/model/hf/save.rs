//! Writing the model as a Hugging Face folder (and the optimizer's tensors as safetensors): into a
//! temporary folder, fsynced, renamed into place.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use safetensors::tensor::{Dtype, View};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::{CONFIG_FILE, HEAD_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::condenser::Condenser;

/// A CPU fp32 copy of a tensor as safetensors sees it.
struct F32View {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl F32View {
    fn new(t: &Tensor) -> Self {
        let t = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let n = t.numel();
        let mut data = vec![0u8; n * 4];
        t.copy_data_u8(&mut data, n);
        F32View {
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        }
    }
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Named tensors (stored as fp32) as safetensors bytes, e.g. optimizer moments for a checkpoint.
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let views: BTreeMap<String, F32View> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), F32View::new(t)))
        .collect();
    Ok(safetensors::tensor::serialize(
        views.iter().map(|(k, v)| (k.as_str(), v)),
        None,
    )?)
}

fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, F32View>,
    meta: HashMap<String, String>,
) -> Result<()> {
    if meta.len() <= 1 {
        // One metadata key: nothing to order, and no copy of the file in memory.
        return safetensors::tensor::serialize_to_file(
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some(meta),
            path,
        )
        .with_context(|| format!("{}: cannot write", path.display()));
    }
    let mut bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))?;
    sort_header(&mut bytes);
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// Rewrites a safetensors header with its JSON keys sorted, so that equal contents give equal bytes:
/// the crate writes `__metadata__` from a HashMap, whose order changes from run to run. Same keys and
/// values, so the same length; the header is left alone if anything is off.
fn sort_header(bytes: &mut [u8]) {
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return;
    };
    let Some(header) = bytes.get(8..8 + n) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return;
    };
    // serde_json's maps are ordered by key (no `preserve_order` feature here).
    let Ok(sorted) = serde_json::to_vec(&value) else {
        return;
    };
    if sorted.len() <= n {
        bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
        bytes[8 + sorted.len()..8 + n].fill(b' ');
    }
}

/// Writes one file of a checkpoint folder (its parent folder created), synced.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    std::fs::File::open(path)?
        .sync_all()
        .with_context(|| format!("{}: cannot sync", path.display()))
}

/// Writes `dir` atomically: config.json (BertForMaskedLM, or BertModel without the MLM head),
/// model.safetensors (HF names),
/// condenser_head.safetensors (with the head settings in its metadata), tokenizer.json with the
/// tokenizer and sentence-transformers files of `export`, and any `extra` files (trainer state), all in
/// a temporary folder renamed into place at the end.
/// Whether a parameter belongs to the encoder (BertModel) rather than the Condenser head
/// (`c_head.*`) or the MLM head (`cls.*`).
pub fn is_encoder_weight(name: &str) -> bool {
    !(name.starts_with("c_head.") || name.starts_with("cls."))
}

/// Saves the whole model: encoder, MLM head and Condenser head (see `save_parts`).
pub fn save(
    dir: &Path,
    loaded_vs: &VarStore,
    model: &Condenser,
    tokenizer: &Path,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    save_parts(dir, loaded_vs, model, tokenizer, extra, false)
}

/// Saves `dir` atomically; `encoder_only` leaves out both heads (a fine-tuned retriever: what
/// transformers' AutoModel, sentence-transformers and Tevatron load, nothing missing or unexpected).
pub fn save_parts(
    dir: &Path,
    loaded_vs: &VarStore,
    model: &Condenser,
    tokenizer: &Path,
    extra: &[(&str, Vec<u8>)],
    encoder_only: bool,
) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let name = dir
        .file_name()
        .context("checkpoint path has no name")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let result = (|| -> Result<()> {
        let tok = std::fs::read(tokenizer)
            .with_context(|| format!("{}: cannot read the tokenizer", tokenizer.display()))?;
        let with_mlm_head =
            !encoder_only && loaded_vs.variables().keys().any(|k| k.starts_with("cls."));
        let cfg = serde_json::to_vec_pretty(&crate::model::export::config_json(
            &model.config,
            with_mlm_head,
        ))?;
        let companions = crate::model::export::companion_files(&model.config, &tok)
            .with_context(|| format!("{}", tokenizer.display()))?;
        write_file(&tmp.join(TOKENIZER_FILE), &tok)?;
        write_file(&tmp.join(CONFIG_FILE), &cfg)?;
        for (file, bytes) in &companions {
            write_file(&tmp.join(file), bytes)?;
        }
        let mut backbone = BTreeMap::new();
        let mut head = BTreeMap::new();
        for (k, v) in loaded_vs.variables() {
            if encoder_only && !is_encoder_weight(&k) {
                continue;
            }
            if k.starts_with("c_head.") {
                head.insert(k, F32View::new(&v));
            } else {
                backbone.insert(k, F32View::new(&v));
            }
        }
        let pt = HashMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&tmp.join(WEIGHTS_FILE), &backbone, pt)?;
        let hc = model.head_config;
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("skip_from".to_string(), hc.skip_from.to_string()),
            ("n_head_layers".to_string(), hc.n_head_layers.to_string()),
            ("late_mlm".to_string(), hc.late_mlm.to_string()),
            ("model".to_string(), "CondenserRef".to_string()),
        ]);
        if !encoder_only {
            write_safetensors(&tmp.join(HEAD_FILE), &head, meta)?;
        }
        // The safetensors writer creates its files 0600; give the weights the mode every other file
        // got (0666 less the umask), so colleagues who can read the folder can read the model.
        // write_file synced every other file; these two are synced here.
        let mode = std::fs::metadata(tmp.join(CONFIG_FILE))?.permissions();
        let files: &[&str] = if encoder_only {
            &[WEIGHTS_FILE]
        } else {
            &[WEIGHTS_FILE, HEAD_FILE]
        };
        for file in files {
            let path = tmp.join(file);
            std::fs::set_permissions(&path, mode.clone())
                .with_context(|| format!("{}: cannot set its mode", path.display()))?;
            std::fs::File::open(&path)?
                .sync_all()
                .with_context(|| format!("{}: cannot sync", path.display()))?;
        }
        for (file, bytes) in extra {
            write_file(&tmp.join(file), bytes)?;
        }
        crate::shards::writer::sync_dir(&tmp.join("1_Pooling"))?;
        crate::shards::writer::sync_dir(&tmp)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("saving {}", dir.display())));
    }
    // Swap in: an existing checkpoint is moved aside first and removed only after the rename.
    let old: Option<PathBuf> = dir
        .exists()
        .then(|| parent.join(format!(".{name}.old-{}", std::process::id())));
    if let Some(old) = &old {
        std::fs::rename(dir, old)
            .with_context(|| format!("cannot move {} aside", dir.display()))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    crate::shards::writer::sync_dir(parent)?;
    if let Some(old) = old {
        // The new folder is in place; a leftover of the old one only costs disk, so the save stands,
        // but the user is told what to remove (a later run's start removes it once this process ended).
        if let Err(e) = std::fs::remove_dir_all(&old) {
            log::warn!(
                "{} is saved; the previous one, moved aside to {}, could not be removed ({e}): remove it by hand",
                dir.display(),
                old.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata comes from a HashMap: two writes of the same contents must give the same bytes, and the
    /// file must still read back with every key.
    #[test]
    fn a_head_file_with_several_metadata_keys_is_byte_stable() {
        let dir = tempfile::tempdir().unwrap();
        let tensors: BTreeMap<String, F32View> = [("c_head.w", 3usize), ("c_head.b", 2)]
            .into_iter()
            .map(|(k, n)| {
                (
                    k.to_string(),
                    F32View::new(&Tensor::arange(n as i64, (Kind::Float, Device::Cpu))),
                )
            })
            .collect();
        let meta = || -> HashMap<String, String> {
            (0..12)
                .map(|i| (format!("key{i}"), format!("value {i}")))
                .collect()
        };
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        write_safetensors(&a, &tensors, meta()).unwrap();
        write_safetensors(&b, &tensors, meta()).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        let (_, read) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(read.metadata().as_ref().unwrap(), &meta());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("c_head.w").unwrap().shape(), &[3]);
    }
}
