//! Hugging Face directories in and out.
//!
//! In: `config.json` + `model.safetensors` with `BertModel` names (with or without the `bert.` prefix)
//! or `BertForMaskedLM` names (`cls.predictions.*`), plus our `condenser_head.safetensors` when present
//! (keys `c_head.{i}.<BertLayer name>`, settings in its metadata, as the PyTorch reference writes it).
//! Out: the same layout, written to a temporary folder and renamed into place, so a crash never leaves
//! a half checkpoint under the final name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::condenser::{Condenser, HeadConfig};
use super::config::BertConfig;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const HEAD_FILE: &str = "condenser_head.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

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
        if head.n_head_layers as i64 > super::config::MAX_LAYERS {
            bail!(
                "{}: n_head_layers {} (at most {})",
                file.display(),
                head.n_head_layers,
                super::config::MAX_LAYERS
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
        let cfg =
            serde_json::to_vec_pretty(&super::export::config_json(&model.config, with_mlm_head))?;
        let companions = super::export::companion_files(&model.config, &tok)
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
