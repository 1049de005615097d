//! Reading a Hugging Face folder into the model: names mapped to ours, shapes and layer counts
//! checked against config.json, what the folder lacks freshly initialised (and said so).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::{CONFIG_FILE, HEAD_FILE, WEIGHTS_FILE};
use crate::model::condenser::{Condenser, HeadConfig};
use crate::model::config::BertConfig;

/// A loaded model with the store that owns its parameters.
pub struct Loaded {
    pub vs: VarStore,
    pub model: Condenser,
    /// Which parts were freshly initialised because the directory lacked them.
    pub fresh_mlm_head: bool,
    pub fresh_condenser_head: bool,
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file (CPU) and its metadata.
pub fn read_safetensors(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| {
        format!(
            "{}: not a valid safetensors file (truncated or corrupt?)",
            path.display()
        )
    })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: bad header", path.display()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).with_context(|| {
            format!(
                "{}: tensor {name} has unsupported dtype {:?}",
                path.display(),
                view.dtype()
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        out.push((name, Tensor::from_data_size(view.data(), &shape, kind)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Maps a checkpoint name to our variable name; None for tensors we know and do not use.
fn our_name(name: &str) -> Option<String> {
    let name = name.strip_prefix("model.").unwrap_or(name);
    let ours =
        if name.starts_with("bert.") || name.starts_with("cls.") || name.starts_with("c_head.") {
            name.to_string()
        } else if ["embeddings.", "encoder.", "pooler."]
            .iter()
            .any(|p| name.starts_with(p))
        {
            format!("bert.{name}") // BertModel names without the prefix (e.g. all-MiniLM-L6-v2)
        } else {
            name.to_string()
        };
    let unused = ours.starts_with("bert.pooler.")
        || ours == "bert.embeddings.position_ids"
        || ours.starts_with("cls.seq_relationship.")
        || ours == "cls.predictions.decoder.weight"; // tied to the word embeddings
    (!unused).then_some(ours)
}

fn head_config_from(meta: &HashMap<String, String>, default: HeadConfig) -> Result<HeadConfig> {
    let get = |k: &str| meta.get(k).map(|v| v.trim().to_string());
    Ok(HeadConfig {
        skip_from: match get("skip_from") {
            Some(v) => v
                .parse()
                .with_context(|| format!("head metadata skip_from {v:?}"))?,
            None => default.skip_from,
        },
        n_head_layers: match get("n_head_layers") {
            Some(v) => v
                .parse()
                .with_context(|| format!("head metadata n_head_layers {v:?}"))?,
            None => default.n_head_layers,
        },
        late_mlm: match get("late_mlm") {
            Some(v) => {
                serde_json::from_str(&v).with_context(|| format!("head metadata late_mlm {v:?}"))?
            }
            None => default.late_mlm,
        },
    })
}

/// The tensor shapes of a safetensors file, by our variable names, from its header alone (the
/// weights are not read): enough to hold a config.json against the file before allocating anything.
pub fn header_shapes(path: &Path) -> Result<HashMap<String, Vec<i64>>> {
    use std::io::Read;
    // safetensors' own bound on the header.
    const MAX_HEADER: u64 = 100_000_000;
    let bad = || {
        format!(
            "{}: not a valid safetensors file (bad header)",
            path.display()
        )
    };
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).with_context(bad)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        bail!("{}: a header of {n} bytes (at most {MAX_HEADER})", bad());
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).with_context(bad)?;
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).with_context(bad)?;
    let mut out = HashMap::new();
    for (name, info) in entries {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<i64> = info
            .get("shape")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .with_context(|| format!("{}: tensor {name} has no shape", bad()))?;
        if let Some(ours) = our_name(&name) {
            out.insert(ours, shape);
        }
    }
    Ok(out)
}

/// The layer indices `i` of names `{prefix}{i}.*`.
fn layer_indices(
    shapes: &HashMap<String, Vec<i64>>,
    prefix: &str,
) -> std::collections::BTreeSet<i64> {
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split_once('.')?.0.parse().ok())
        .collect()
}

/// Holds a (valid) config.json against the weight file's shapes before the model is built from it:
/// the embedding tables, the encoder layer count and the feed-forward width; and, when there is a head
/// file, its layer count and width against `head`. `assign` checks every tensor after the build.
fn check_weights(
    cfg: &BertConfig,
    head: HeadConfig,
    weights: (&Path, &HashMap<String, Vec<i64>>),
    head_file: Option<(&Path, &HashMap<String, Vec<i64>>)>,
) -> Result<()> {
    let (file, shapes) = weights;
    let h = cfg.hidden_size;
    for (name, rows, key) in [
        ("word_embeddings", cfg.vocab_size, "vocab_size"),
        (
            "position_embeddings",
            cfg.max_position_embeddings,
            "max_position_embeddings",
        ),
        (
            "token_type_embeddings",
            cfg.type_vocab_size,
            "type_vocab_size",
        ),
    ] {
        let says = format!("{key} {rows}, hidden_size {h}");
        expect_shape(
            shapes,
            file,
            &format!("bert.embeddings.{name}.weight"),
            [rows, h],
            says,
        )?;
    }
    let layers = layer_indices(shapes, "bert.encoder.layer.");
    if layers != (0..cfg.num_hidden_layers).collect() {
        bail!(
            "{}: holds {} encoder layer(s) (bert.encoder.layer.{{{}}}.*), config.json says num_hidden_layers {}",
            file.display(),
            layers.len(),
            layers.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
            cfg.num_hidden_layers
        );
    }
    let says = format!(
        "intermediate_size {}, hidden_size {h}",
        cfg.intermediate_size
    );
    let ffn = "bert.encoder.layer.0.intermediate.dense.weight";
    expect_shape(shapes, file, ffn, [cfg.intermediate_size, h], says)?;
    if let Some((file, shapes)) = head_file {
        if head.n_head_layers as i64 > crate::model::config::MAX_LAYERS {
            bail!(
                "{}: n_head_layers {} (at most {})",
                file.display(),
                head.n_head_layers,
                crate::model::config::MAX_LAYERS
            );
        }
        let layers = layer_indices(shapes, "c_head.");
        if layers != (0..head.n_head_layers as i64).collect() {
            bail!(
                "{}: holds {} head layer(s), its metadata says n_head_layers {}",
                file.display(),
                layers.len(),
                head.n_head_layers
            );
        }
        if head.n_head_layers > 0 {
            let says = format!("hidden_size {h}");
            expect_shape(
                shapes,
                file,
                "c_head.0.attention.self.query.weight",
                [h, h],
                says,
            )?;
        }
    }
    Ok(())
}

/// `name` in `shapes` (of `file`) must have the shape `want`, which config.json (`says`) implies.
fn expect_shape(
    shapes: &HashMap<String, Vec<i64>>,
    file: &Path,
    name: &str,
    want: [i64; 2],
    says: String,
) -> Result<()> {
    match shapes.get(name) {
        Some(got) if got[..] == want[..] => Ok(()),
        Some(got) => bail!(
            "{}: {name} has shape {got:?}, but config.json ({says}) makes it {want:?}",
            file.display()
        ),
        None => bail!("{}: no tensor {name}", file.display()),
    }
}

/// Copies `tensors` into the store's variables by name; returns the names it filled.
fn assign(
    vars: &HashMap<String, Tensor>,
    tensors: Vec<(String, Tensor)>,
    file: &Path,
) -> Result<Vec<String>> {
    let mut filled = Vec::new();
    let mut unknown = Vec::new();
    let mut mismatched = Vec::new();
    let mut decoder_bias = None;
    for (name, t) in tensors {
        let Some(ours) = our_name(&name) else {
            continue;
        };
        if ours == "cls.predictions.decoder.bias" {
            decoder_bias = Some(t); // tied to cls.predictions.bias; used when that one is absent
            continue;
        }
        match vars.get(&ours) {
            Some(var) if var.size() == t.size() => {
                tch::no_grad(|| var.shallow_clone().copy_(&t.to_kind(var.kind())));
                filled.push(ours);
            }
            Some(var) => mismatched.push(format!(
                "{name}: checkpoint {:?}, model {:?}",
                t.size(),
                var.size()
            )),
            None => unknown.push(name),
        }
    }
    if let Some(t) = decoder_bias {
        let ours = "cls.predictions.bias".to_string();
        if !filled.contains(&ours) {
            if let Some(var) = vars.get(&ours).filter(|v| v.size() == t.size()) {
                tch::no_grad(|| var.shallow_clone().copy_(&t.to_kind(var.kind())));
                filled.push(ours);
            }
        }
    }
    if !mismatched.is_empty() || !unknown.is_empty() {
        let mut msg = format!("{}: does not fit the model of config.json", file.display());
        if !mismatched.is_empty() {
            msg += &format!(
                "\n  shape mismatches ({}):\n    {}",
                mismatched.len(),
                mismatched.join("\n    ")
            );
        }
        if !unknown.is_empty() {
            msg += &format!(
                "\n  unknown tensors ({}):\n    {}",
                unknown.len(),
                unknown.join("\n    ")
            );
        }
        bail!(msg);
    }
    Ok(filled)
}

/// Loads a Hugging Face directory onto `device`. Missing MLM head: fresh transform and LayerNorm, the
/// tied decoder and a zero bias. Missing Condenser head: N(0, initializer_range), as the reference.
/// `head` sets the Condenser settings when the directory has no head file; `seed` drives fresh inits.
/// A model argument (`--model`, `--init`) must name a local folder; a hub name or URL gets a hint,
/// since nothing is downloaded at run time.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let arg = dir.to_string_lossy();
    if dir.exists() {
        bail!("{arg}: not a folder (a model is a Hugging Face folder: config.json, model.safetensors, tokenizer.json)");
    }
    let url = arg.contains("://");
    let hub_like = !url
        && !arg.starts_with(['/', '.', '~'])
        && arg.matches('/').count() <= 1
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if url || hub_like {
        let name = arg.rsplit('/').next().unwrap_or(&arg).to_string();
        bail!(
            "{arg}: not a local folder. condenser reads models from disk and downloads nothing; fetch it first{}, then pass the folder",
            if url {
                String::new()
            } else {
                format!(" (e.g. `hf download {arg} --local-dir models/{name}`)")
            }
        );
    }
    bail!("{arg}: no such folder")
}

pub fn load(dir: &Path, device: Device, head: HeadConfig, seed: i64) -> Result<Loaded> {
    check_model_dir(dir)?;
    let config = BertConfig::load(&dir.join(CONFIG_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() {
        bail!(
            "{}: missing (only safetensors checkpoints are read)",
            weights.display()
        );
    }
    let head_path = dir.join(HEAD_FILE);
    let head_tensors = if head_path.exists() {
        Some(read_safetensors(&head_path)?)
    } else {
        None
    };
    let head_config = match &head_tensors {
        Some((_, meta)) => head_config_from(meta, head)?,
        // No head saved: a skip_from past this model's layers is a default made for bert-base (the
        // trainer checks the ones users set); half the layers instead, for encode and eval on small
        // models, which do not use the head.
        None if head.skip_from as i64 >= config.num_hidden_layers => HeadConfig {
            skip_from: (config.num_hidden_layers / 2).max(1) as usize,
            ..head
        },
        None => head,
    };
    let head_shapes = if head_tensors.is_some() {
        Some(header_shapes(&head_path)?)
    } else {
        None
    };
    check_weights(
        &config,
        head_config,
        (&weights, &header_shapes(&weights)?),
        head_shapes.as_ref().map(|s| (head_path.as_path(), s)),
    )
    .with_context(|| format!("{}: config.json does not fit its weights", dir.display()))?;
    tch::manual_seed(seed);
    let vs = VarStore::new(device);
    let model = Condenser::new(&vs.root(), config, head_config)?;
    let vars = vs.variables();

    let (tensors, _) = read_safetensors(&weights)?;
    let mut filled = assign(&vars, tensors, &weights)?;
    let fresh_condenser_head = match head_tensors {
        Some((tensors, _)) => {
            let got = assign(&vars, tensors, &head_path)?;
            let expected = vars.keys().filter(|k| k.starts_with("c_head.")).count();
            if got.len() != expected {
                let missing: Vec<_> = vars
                    .keys()
                    .filter(|k| k.starts_with("c_head.") && !got.contains(k))
                    .cloned()
                    .collect();
                bail!(
                    "{}: missing head tensors: {}",
                    head_path.display(),
                    missing.join(", ")
                );
            }
            filled.extend(got);
            false
        }
        None => {
            // Debug only: the trainer says it once where it matters; encode and eval do not use the head.
            log::debug!(
                "{}: no {HEAD_FILE}; the Condenser head is freshly initialised N(0, {})",
                dir.display(),
                model.config.initializer_range
            );
            true
        }
    };
    let mlm: Vec<&String> = vars.keys().filter(|k| k.starts_with("cls.")).collect();
    let mlm_filled = mlm.iter().filter(|k| filled.contains(k)).count();
    let fresh_mlm_head = mlm_filled == 0;
    if fresh_mlm_head {
        log::debug!("{}: no MLM head (cls.predictions.*); a fresh one is initialised, decoder tied to the word embeddings, zero bias", dir.display());
    } else if mlm_filled != mlm.len() {
        let missing: Vec<_> = mlm
            .iter()
            .filter(|k| !filled.contains(k))
            .map(|s| s.as_str())
            .collect();
        bail!(
            "{}: incomplete MLM head, missing {}",
            weights.display(),
            missing.join(", ")
        );
    }
    let mut missing: Vec<&String> = vars
        .keys()
        .filter(|k| k.starts_with("bert.") && !filled.contains(k))
        .collect();
    if !missing.is_empty() {
        missing.sort();
        bail!(
            "{}: missing encoder tensors ({}): {}",
            weights.display(),
            missing.len(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(Loaded {
        vs,
        model,
        fresh_mlm_head,
        fresh_condenser_head,
    })
}
