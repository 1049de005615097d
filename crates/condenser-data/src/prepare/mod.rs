//! `condenser prepare`: raw text -> sentences -> tokens -> spans -> sharded Parquet + manifest.
//!
//! The data half of ARCHITECTURE.md's flow: `corpus` readers feed `pipeline`, which segments documents in
//! parallel (`segment`, `sentences`) and hands them in input order to `shards::ShardWriter`.

pub mod config;
pub mod folder;
pub mod lock;
pub mod merge;
pub mod pipeline;
pub mod segment;
pub mod sentences;
pub mod stages;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::corpus::ReadOptions;
use segment::SegmentConfig;

/// What to do with a bad record or input.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum OnError {
    /// Skip it, count it by reason in the manifest and the summary, and go on.
    Skip,
    /// Stop with a non-zero exit, leaving no partial shard.
    Fail,
}

#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Input files, directories or globs; `-` reads stdin. Compression (gzip, bzip2, zstd, xz) is
    /// detected from magic bytes.
    #[arg(required_unless_present = "merge")]
    pub inputs: Vec<String>,
    /// Output folder for the shards and _manifest.json.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Hugging Face tokenizer.json [default: the bert-base-uncased one from set-up].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub input: crate::cli::InputArgs,
    /// Sequence length the spans are made for: spans hold at most max_len - 2 ids ([CLS], [SEP]).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(3..=8192))]
    pub max_len: u32,
    /// Probability that a span gets a random shorter target length, uniform in [1, max_len - 2].
    #[arg(long, default_value_t = 0.1)]
    pub short_seq_prob: f64,
    /// Seed of every random choice (keyed by document id, so independent of threads).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Drop (and count) documents with fewer spans; coCondenser needs 2.
    #[arg(long, default_value_t = 1)]
    pub min_spans: usize,
    /// Rotate shards at this size on disk (e.g. 64MB, 512KiB), after the row group that reaches it.
    #[arg(long, default_value = "64MB", value_parser = parse_size)]
    pub shard_size: u64,
    /// Cut a Parquet row group once its rows reach this uncompressed size (4 bytes per token id plus
    /// the doc ids); the loader shuffles by row group.
    #[arg(long, default_value = "8MB", value_parser = parse_size)]
    pub row_group_size: u64,
    /// Records longer than this (lines, keyed-JSON entries, wiki pages, Parquet rows) are skipped and
    /// counted, never held whole.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_record_bytes: u64,
    /// Worker threads for segmentation [default, or 0: all cores; at most 1024]. Output bytes do not
    /// depend on it.
    #[arg(long, short = 'j', value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Bad input: skip and count it, or fail.
    #[arg(long, value_enum, default_value_t = OnError::Skip)]
    pub on_error: OnError,
    /// Prepare partition K of N (e.g. 0/4): whole files when there are at least N inputs, else a
    /// byte range cut at lines of each uncompressed JSONL/TSV/text file, a range of the bzip2 streams of
    /// a multi-stream MediaWiki dump, and every N-th record of other inputs. Output goes to
    /// OUT/part-K-of-N/; join the parts with --merge.
    #[arg(long, value_parser = parse_partition)]
    pub partition: Option<[u32; 2]>,
    /// With --partition on one multi-stream bzip2 dump: its `-index.txt.bz2` (`offset:id:title`
    /// lines), so each partition finds its first stream without scanning for it.
    #[arg(long, value_name = "FILE", requires = "partition")]
    pub index: Option<PathBuf>,
    /// Join the manifests of OUT/part-*-of-N/ into OUT/_manifest.json (no inputs needed).
    #[arg(long)]
    pub merge: bool,
    /// Replace the output of a different earlier run in OUT instead of refusing.
    #[arg(long)]
    pub overwrite: bool,
}

/// `64MB`, `512KiB`, `1G`, `1000`: decimal (KB, MB, GB) and binary (KiB, MiB, GiB) units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = (num * mult as f64).round() as u64;
    if bytes == 0 {
        return Err(format!("{s:?}: a size must be positive"));
    }
    Ok(bytes)
}

/// The most worker threads `-j` accepts. Tokenizing is CPU-bound, so threads beyond the cores add
/// nothing but memory (each worker keeps chunks in flight) and start-up time; 1024 is above the hardware
/// threads of any single machine today, and a fixed bound (not a multiple of this machine's cores)
/// keeps a command line valid on every machine it is copied to.
pub const MAX_THREADS: usize = 1024;

/// `-j N` of `prepare` and `bench prepare`: 0 means every core (as leaving it out does); above
/// [`MAX_THREADS`] is refused.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a thread count"))?;
    if n > MAX_THREADS {
        return Err(format!(
            "{n} threads is more than the {MAX_THREADS} allowed (this machine has {} cores; more threads than cores make nothing faster; 0 means all cores)",
            cores()
        ));
    }
    Ok(n)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The thread count to use for `-j`: every core when it is absent or 0.
pub fn resolve_threads(threads: Option<usize>) -> usize {
    match threads {
        None | Some(0) => cores(),
        Some(n) => n,
    }
}

fn parse_partition(s: &str) -> Result<[u32; 2], String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected K/N, e.g. 0/4"))?;
    let number = |v: &str, what: &str| -> Result<u32, String> {
        let v = v.trim();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            v.parse()
                .map_err(|_| format!("{s:?}: {what} is too large (at most {})", u32::MAX))
        } else {
            Err(format!("{s:?}: {what} is not a number"))
        }
    };
    let (k, n) = (number(k, "K")?, number(n, "N")?);
    if n == 0 || k >= n {
        return Err(format!("{s:?}: need 0 <= K < N"));
    }
    Ok([k, n])
}

pub fn run(args: PrepareArgs) -> Result<()> {
    if args.merge {
        return merge::merge(&args.out);
    }
    if !(0.0..=1.0).contains(&args.short_seq_prob) {
        bail!(
            "--short-seq-prob {} is not a probability",
            args.short_seq_prob
        );
    }
    let threads = resolve_threads(args.threads);
    let tokenizer = args
        .tokenizer
        .clone()
        .unwrap_or_else(crate::paths::default_tokenizer);
    let out = match args.partition {
        Some([k, n]) => args.out.join(format!("part-{k}-of-{n}")),
        None => args.out.clone(),
    };
    refuse_inputs_among_outputs(&out, &args.inputs, &tokenizer)?;
    let config = pipeline::PrepareConfig {
        inputs: args.inputs.clone(),
        out,
        tokenizer,
        read: ReadOptions {
            max_record_bytes: usize::try_from(args.max_record_bytes)
                .context("--max-record-bytes")?,
            stop_at_error: args.on_error == OnError::Fail,
            ..args.input.read_options()
        },
        segment: SegmentConfig {
            max_len: args.max_len as usize,
            short_seq_prob: args.short_seq_prob,
            seed: args.seed,
            min_spans: args.min_spans,
        },
        writer: crate::shards::WriterConfig {
            shard_bytes: args.shard_size,
            row_group_bytes: args.row_group_size as usize,
            ..Default::default()
        },
        partition: args.partition,
        bz2_index: args.index.clone(),
        threads,
        on_error: args.on_error,
        overwrite: args.overwrite,
        print_shards: true,
    };
    pipeline::run(&config).map(|_| ())
}

/// Refuses an input that is a file `prepare` writes into `out` (a shard, the manifest, the tokenizer
/// copy), or `out` itself as an input folder: the run would replace what it reads.
fn refuse_inputs_among_outputs(out: &Path, inputs: &[String], tokenizer: &Path) -> Result<()> {
    let Ok(out_real) = out.canonicalize() else {
        return Ok(()); // a new folder holds nothing yet
    };
    let ours = |name: &str| {
        (name.starts_with("shard-") && name.ends_with(".parquet"))
            || matches!(
                name,
                "_manifest.json" | "_tokenizer.json" | "manifest.json" | "tokenizer.json"
            )
    };
    let given = inputs
        .iter()
        .map(|i| ("INPUT", Path::new(i.as_str())))
        .chain([("--tokenizer", tokenizer)]);
    for (flag, path) in given {
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if real == out_real {
            bail!(
                "{flag} {} is the output folder --out {}: prepare would read the shards it writes; give another --out",
                path.display(),
                out.display()
            );
        }
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned());
        if real.parent() == Some(out_real.as_path()) && name.as_deref().is_some_and(ours) {
            bail!(
                "{flag} {} is a file prepare writes in --out {}: the run would replace the input; copy it elsewhere or give another --out",
                path.display(),
                out.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_that_prepare_would_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("shards");
        std::fs::create_dir_all(&out).unwrap();
        let tok = out.join("_tokenizer.json");
        std::fs::write(&tok, "{}").unwrap();
        let text = dir.path().join("c.txt");
        std::fs::write(&text, "a\n").unwrap();
        let inputs = [text.display().to_string()];
        let e = refuse_inputs_among_outputs(&out, &inputs, &tok).unwrap_err();
        assert!(e.to_string().contains("--tokenizer"), "{e}");
        let e = refuse_inputs_among_outputs(&out, &[out.display().to_string()], &text).unwrap_err();
        assert!(e.to_string().contains("is the output folder"), "{e}");
        refuse_inputs_among_outputs(&out, &inputs, &text).unwrap();
        refuse_inputs_among_outputs(&dir.path().join("new"), &inputs, &tok).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn partitions() {
        assert_eq!(parse_partition("1/4"), Ok([1, 4]));
        assert!(parse_partition("4/4").is_err());
        assert!(parse_partition("x").is_err());
        assert!(parse_partition("0/4294967297")
            .unwrap_err()
            .contains("N is too large"));
    }

    #[test]
    fn thread_counts() {
        assert_eq!(parse_threads("8"), Ok(8));
        assert_eq!(parse_threads("1024"), Ok(1024));
        assert!(parse_threads("1025").unwrap_err().contains("1024 allowed"));
        assert!(parse_threads("-1").is_err());
        assert_eq!(resolve_threads(Some(0)), resolve_threads(None));
        assert!(resolve_threads(None) >= 1);
    }
}
