//! `condenser encode`: last-layer [CLS] embeddings of texts with a trained encoder.
//!
//! Texts are read with the corpus readers (TSV `id<TAB>text`, JSON Lines, one text per line, ...),
//! tokenized with [CLS]/[SEP] and truncated to `--max-len`, sorted by length inside a bounded window
//! and batched (less padding), encoded on the GPU when present, and written in input order as Parquet
//! (`id: utf8`, `embedding: fixed_size_list<float32>[hidden]`) or NumPy (`embeddings_out`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::embeddings_out::{Output, Writer};
use crate::corpus::{self, Item};
use crate::device::DeviceChoice;
use crate::model::{hf, Condenser, Ctx, HeadConfig};
use crate::progress::{Progress, Unit};

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// A Hugging Face directory (our checkpoints, or any BERT with model.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Texts: TSV (`id<TAB>text`), JSON Lines, or one text per line (id `file:line`); `-` for stdin.
    #[arg(value_name = "INPUT", required_unless_present = "input_flag")]
    pub input: Option<String>,
    /// The same as INPUT (the older spelling, kept for scripts).
    #[arg(
        long = "input",
        hide = true,
        conflicts_with = "input",
        value_name = "INPUT"
    )]
    pub input_flag: Option<String>,
    /// Output: `FILE.parquet` (`id`, `embedding` as a fixed-size list of float32), `FILE.npy` (float32
    /// rows in input order, ids in `FILE.ids.txt` beside it), or `-` for Parquet on stdout.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Longest sequence, [CLS] and [SEP] included; longer texts are truncated.
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// tokenizer.json [default: the model directory's].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub input_args: crate::cli::InputArgs,
    /// Join a record's title (BEIR `title`) in front of its text as `eval` does: space ("title text")
    /// or sep ("title[SEP]text") [default: the model folder's condenser_retriever.json when it has one
    /// (a model `finetune` wrote), else the text alone].
    #[arg(long, value_enum)]
    pub title_separator: Option<crate::model::retriever::TitleSeparator>,
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
}

/// Texts sorted by length are encoded this many batches at a time (bounded memory, input order kept).
const WINDOW_BATCHES: usize = 32;

/// Encodes token id sequences (already with [CLS]/[SEP]) into CLS vectors (N, H) on the CPU.
pub fn encode_ids(
    model: &crate::model::Condenser,
    seqs: &[Vec<i64>],
    pad: i64,
    device: Device,
) -> Tensor {
    let t = seqs.iter().map(Vec::len).max().unwrap_or(1) as i64;
    let mut ids = Vec::with_capacity(seqs.len() * t as usize);
    let mut mask = Vec::with_capacity(seqs.len() * t as usize);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, t as usize - s.len()));
        mask.extend(std::iter::repeat_n(1i64, s.len()));
        mask.extend(std::iter::repeat_n(0i64, t as usize - s.len()));
    }
    let n = seqs.len() as i64;
    let ids = Tensor::from_slice(&ids).view([n, t]).to_device(device);
    let mask = Tensor::from_slice(&mask).view([n, t]).to_device(device);
    let ctx = Ctx::eval(crate::model::compute_kind(device));
    let padded = seqs.iter().any(|s| (s.len() as i64) < t);
    tch::no_grad(|| model.cls(&ids, &crate::model::Mask::known(&mask, padded), ctx))
        .to_kind(Kind::Float)
        .to_device(Device::Cpu)
}

/// CLS vectors (N, H) of sequences, batched by length, in input order, on `device`.
pub fn embed(
    model: &Condenser,
    seqs: &[Vec<i64>],
    pad: i64,
    batch: usize,
    device: Device,
) -> Tensor {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let h = model.config.hidden_size;
    let mut out = Tensor::zeros([seqs.len() as i64, h], (Kind::Float, Device::Cpu));
    for chunk in order.chunks(batch.max(1)) {
        let part: Vec<Vec<i64>> = chunk.iter().map(|&i| seqs[i].clone()).collect();
        let cls = encode_ids(model, &part, pad, device);
        let index = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let _ = out.index_copy_(0, &index, &cls);
    }
    out.to_device(device)
}

pub fn run(mut args: EncodeArgs) -> Result<()> {
    let given = crate::cli::either(args.input.take(), args.input_flag.take(), "INPUT")?;
    if args.max_len < 2 || args.batch_size == 0 {
        bail!("--max-len must be at least 2 and --batch-size at least 1");
    }
    // The output is checked (and its temporaries created) before any model is loaded or text encoded.
    let input = Path::new(&given);
    let tok_arg = args.tokenizer.clone().unwrap_or_default();
    let inputs: [(&str, &Path); 2] = [("INPUT", input), ("--tokenizer", &tok_arg)];
    crate::paths::refuse_output_over_inputs("--out", &args.out, &inputs)?;
    if args.out.extension().is_some_and(|e| e == "npy") {
        let ids = super::embeddings_out::ids_path(&args.out);
        crate::paths::refuse_output_over_inputs("the ids file beside --out,", &ids, &inputs)?;
    }
    let output = Output::open(&args.out)?;
    hf::check_model_dir(&args.model).context("--model")?;
    let device = crate::device::select(args.device)?;
    let tok_path = args
        .tokenizer
        .clone()
        .unwrap_or_else(|| args.model.join(hf::TOKENIZER_FILE));
    if !tok_path.exists() {
        bail!("{}: missing; pass --tokenizer", tok_path.display());
    }
    let tokenizer = crate::tokenizer::load(&tok_path)?;
    let special = crate::tokenizer::special_ids(&tokenizer)?;
    let loaded = hf::load(&args.model, device, HeadConfig::default(), 0)?;
    let model = &loaded.model;
    model.config.check_lengths(&[("--max-len", args.max_len)])?;
    if tokenizer.vocab_size() as i64 > model.config.vocab_size {
        bail!(
            "the tokenizer's vocabulary ({}) is larger than the model's ({})",
            tokenizer.vocab_size(),
            model.config.vocab_size
        );
    }
    let hidden = model.config.hidden_size as i32;
    // Titles: joined as the model was fine-tuned (its retriever file) or as asked; else left out.
    // A model trained with cosine similarity gets unit vectors (its sentence-transformers Normalize).
    let retriever = args
        .model
        .join(crate::model::retriever::FILE)
        .exists()
        .then(|| crate::model::retriever::RetrieverConfig::read(&args.model))
        .transpose()?;
    let similarity = retriever.map(|r| r.similarity).unwrap_or_default();
    let title_separator = args
        .title_separator
        .or(retriever.map(|r| r.title_separator));
    let joiner = title_separator
        .map(|t| t.joiner(&tokenizer, &special))
        .transpose()?;
    let mut writer = output.writer(hidden)?;
    let opts = args.input_args.read_options();
    let input = corpus::expand_inputs(std::slice::from_ref(&given))?
        .into_iter()
        .next()
        .context("no input")?;
    // Progress: raw (compressed) bytes read of the input's size; a rate alone for stdin.
    let read_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let size = match input.is_stdin() {
        true => None,
        false => std::fs::metadata(&input.path).ok().map(|m| m.len()),
    };
    let progress = Progress::new("encode", Unit::Bytes, size);
    progress.update(0, "");
    let (mut window_ids, mut window_seqs): (Vec<String>, Vec<Vec<i64>>) = (Vec::new(), Vec::new());
    let (mut written, mut skipped) = (0u64, 0u64);
    let window_len = args.batch_size * WINDOW_BATCHES;
    let mut flush =
        |ids: &mut Vec<String>, seqs: &mut Vec<Vec<i64>>, writer: &mut Writer| -> Result<()> {
            if ids.is_empty() {
                return Ok(());
            }
            // Batches of similar length inside the window; rows come back in input order.
            let cls = similarity.prepare(&embed(
                model,
                seqs,
                special.pad as i64,
                args.batch_size,
                device,
            ));
            let values = Vec::<f32>::try_from(cls.to_device(Device::Cpu).reshape([-1]))?;
            writer.write(ids, values)?;
            written += ids.len() as u64;
            progress.update(
                read_bytes.load(std::sync::atomic::Ordering::Relaxed),
                &format!("{written} texts encoded"),
            );
            ids.clear();
            seqs.clear();
            Ok(())
        };
    let result = corpus::read_input(&input, &opts, read_bytes.clone(), &mut |item| {
        match item {
            Item::Doc(mut d) => {
                d.to_plain();
                let text = match &joiner {
                    Some(j) => crate::corpus::passage::join_passage(d.title.as_deref(), &d.text, j),
                    None => d.text,
                };
                let ids =
                    crate::tokenizer::encode_for_model(&tokenizer, &special, &text, args.max_len)?;
                window_ids.push(d.id);
                window_seqs.push(ids);
                if window_ids.len() >= window_len {
                    flush(&mut window_ids, &mut window_seqs, &mut writer)?;
                }
            }
            Item::Skip(s) if s.reason.is_error() => {
                skipped += 1;
                log::warn!("skipped ({}): {}", s.reason, s.detail);
            }
            _ => {}
        }
        Ok(())
    })
    .and_then(|_| flush(&mut window_ids, &mut window_seqs, &mut writer));
    result?;
    writer.finish()?;
    progress.finish();
    log::info!(
        "encoded {written} texts ({skipped} skipped) into {} ({} dims, {})",
        args.out.display(),
        hidden,
        crate::device::device_label(device)
    );
    Ok(())
}
