//! The output folder of a prepare run: open it or resume it, and what the pipeline needs from it.
//!
//! Before a thread starts, [`open`] decides what this run is to the folder: the same run already
//! complete (nothing to do), the same run interrupted (resume after its last complete shard), a new
//! run (a fresh manifest on disk before any shard), or someone else's output (refused unless
//! `--overwrite`). It also decides which inputs this run owns (whole files of a partition), refuses
//! missing inputs the folder does not already cover, removes what an interrupted run left (temporary
//! files, shards the manifest does not list) and keeps the tokenizer copy beside the manifest. The
//! folder stays locked until the returned [`Folder`] is dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::PrepareConfig;
use super::lock::FolderLock;
use crate::corpus::{self, Input, ReadOptions};
use crate::shards::manifest::{
    store_tokenizer_copy, InputStats, Manifest, Settings, ShardEntry, TokenizerInfo, Totals,
    FORMAT_VERSION,
};
use crate::tokenizer::{SpecialIds, Tokenizer};

/// A folder ready for the pipeline: this run's manifest (new or resumed) and its inputs.
pub struct Folder {
    /// Every input of the command line, expanded, in order (missing ones kept, for their names).
    pub inputs: Vec<Input>,
    /// Which of `inputs` this run reads (all but a partition's others).
    pub owned: Vec<bool>,
    /// A partition with fewer inputs than partitions splits each input (by byte ranges or records).
    pub by_record: bool,
    /// A multi-stream bzip2 dump's index (`--index`), read and checked before anything is written.
    pub bz2_index: Option<Vec<u64>>,
    pub manifest: Manifest,
    /// Held until the run ends.
    pub lock: FolderLock,
}

/// Records the loaded tokenizer's vocabulary size and special ids in `manifest` (a new run's
/// manifest is stored by [`open`] before the tokenizer has loaded, with zeros there); true when they
/// changed, and the manifest must be stored again before the first shard.
pub fn record_tokenizer(manifest: &mut Manifest, tokenizer: &Tokenizer) -> Result<bool> {
    let vocab_size = tokenizer.vocab_size() as u32;
    let special_ids = crate::tokenizer::special_ids(tokenizer)?;
    let info = &mut manifest.tokenizer;
    let changed = (info.vocab_size, info.special_ids) != (vocab_size, special_ids);
    info.vocab_size = vocab_size;
    info.special_ids = special_ids;
    Ok(changed)
}

/// What [`open`] found.
pub enum Opened {
    /// The folder already holds this run, complete: its manifest.
    Complete(Manifest),
    /// A run to start or resume.
    Ready(Folder),
}

/// Where the reader starts again: the manifest's cursor and, per owned input, whether it was read
/// to its end and how many records it had.
pub struct Resume {
    pub cursor: u64,
    pub inputs: Vec<(bool, u64)>,
}

impl Resume {
    /// Whether an owned input (done, with `records` records, whose first item is number `seq`) is
    /// wholly covered by complete shards: its records and its end.
    pub fn covers(&self, (done, records): (bool, u64), seq: u64) -> bool {
        done && seq + records < self.cursor
    }
}

impl Resume {
    /// What the reader needs of `manifest`: the cursor and which inputs are wholly done.
    pub fn of(manifest: &Manifest) -> Resume {
        Resume {
            cursor: manifest.cursor,
            inputs: manifest
                .inputs
                .iter()
                .map(|i| (i.done, i.records))
                .collect(),
        }
    }
}

/// The inputs this run reads, in order.
pub fn our_inputs<'a>(inputs: &'a [Input], owned: &[bool]) -> Vec<&'a Input> {
    inputs
        .iter()
        .zip(owned)
        .filter(|(_, &o)| o)
        .map(|(i, _)| i)
        .collect()
}

/// Progress: raw (compressed) input bytes the complete shards already cover (inputs not read again
/// count as done), and the inputs' total size (`None` when one is stdin).
pub fn progress_bytes(our_inputs: &[&Input], resume: &Resume) -> (u64, Option<u64>) {
    let mut covered_bytes = 0u64;
    let mut total_bytes = Some(0u64);
    let mut seq = 0u64;
    for (idx, input) in our_inputs.iter().enumerate() {
        let (done, records) = resume.inputs[idx];
        let size = match input.is_stdin() {
            true => None,
            false => std::fs::metadata(&input.path).ok().map(|m| m.len()),
        };
        total_bytes = total_bytes.zip(size).map(|(t, s)| t + s);
        if resume.covers((done, records), seq) {
            covered_bytes += size.unwrap_or(0);
        }
        seq += records + 1;
    }
    (covered_bytes, total_bytes)
}

/// The folders a run would create (a partition's `part-K-of-N/`, and `--out` when it makes that
/// too): a run that fails before its first shard leaves nothing worth resuming, so they go again.
pub struct Created(Vec<PathBuf>);

impl Created {
    /// Notes which of the output's folders do not exist yet.
    pub fn before(cfg: &PrepareConfig) -> Created {
        Created(
            cfg.out
                .ancestors()
                .take(if cfg.partition.is_some() { 2 } else { 1 })
                .filter(|d| !d.as_os_str().is_empty() && !d.exists())
                .map(Path::to_path_buf)
                .collect(),
        )
    }

    /// After a failed run: removes the folders it created, when it wrote no shard.
    pub fn remove_if_no_shard(self, out: &Path) {
        let made = self.0;
        if !made.is_empty() && shard_files(out).is_ok_and(|s| s.is_empty()) {
            let _ = std::fs::remove_dir_all(&made[0]);
            for d in &made[1..] {
                let _ = std::fs::remove_dir(d); // only if nothing else is in it
            }
        }
    }
}

pub fn shard_file_name(index: usize) -> String {
    format!("shard-{index:05}.parquet")
}

/// Opens `cfg.out` for this run: see the module's documentation. The tokenizer is known by its file
/// here (its path, and `tokenizer_sha256` of the bytes the run loads), still loading; its vocabulary
/// reaches the manifest by [`record_tokenizer`].
pub fn open(cfg: &PrepareConfig, tokenizer_sha256: String) -> Result<Opened> {
    let tokenizer_info = TokenizerInfo {
        path: cfg.tokenizer.display().to_string(),
        sha256: tokenizer_sha256,
        // Known once the tokenizer has loaded: `record_tokenizer`.
        vocab_size: 0,
        special_ids: SpecialIds {
            pad: 0,
            unk: 0,
            cls: 0,
            sep: 0,
            mask: 0,
        },
    };
    let inputs = corpus::inputs::expand_inputs_keeping_missing(&cfg.inputs)?;
    if inputs.is_empty() {
        bail!("no inputs: {:?} matched nothing", cfg.inputs);
    }
    if cfg.bz2_index.is_some() && (cfg.partition.is_none() || inputs.len() != 1) {
        bail!("--index is the index of one multi-stream dump: give it with --partition and that dump as the only input");
    }
    // Read (and checked) before anything is written.
    let bz2_index = match &cfg.bz2_index {
        Some(path) => Some(corpus::partition::stream_ranges::load_index(path)?),
        None => None,
    };
    let owned = owned_inputs(&inputs, cfg.partition);
    let settings = Settings {
        inputs: inputs.iter().map(Input::name).collect(),
        // `--on-error` is how this run reacts to bad input, not a setting of its output (manifests do
        // not store it): a folder is the same run's whatever it says.
        read: ReadOptions {
            stop_at_error: false,
            ..cfg.read.clone()
        },
        segment: cfg.segment.clone(),
        writer: cfg.writer.clone(),
        partition: cfg.partition,
    };
    let same_run =
        |m: &Manifest| m.settings == settings && m.tokenizer.sha256 == tokenizer_info.sha256;
    // A complete folder of the same run written under the earlier row-group rule is whole and valid:
    // left alone as complete (only resuming would mix the two rules).
    let complete_under_old_rule = |m: &Manifest| {
        let mut as_now = m.settings.clone();
        as_now.writer.row_groups = settings.writer.row_groups.clone();
        m.complete
            && m.settings.writer.row_groups != settings.writer.row_groups
            && as_now == settings
            && m.tokenizer.sha256 == tokenizer_info.sha256
    };
    let ours = |m: &Manifest| same_run(m) || complete_under_old_rule(m);
    // A missing input is an error before anything is written, unless this folder already holds all
    // of its documents (a resume after the file went away).
    let covering = Manifest::load(&cfg.out)?.filter(ours);
    check_missing(&inputs, &owned, covering.as_ref())?;
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("{}: cannot create", cfg.out.display()))?;
    // One run per folder at a time, until the pipeline returns (or the process dies).
    let lock = FolderLock::acquire(&cfg.out)?;

    let existing = Manifest::load(&cfg.out)?;
    // Again under the lock: the manifest may have changed while another run held the folder.
    check_missing(&inputs, &owned, existing.as_ref().filter(|m| ours(m)))?;
    if existing.is_none() && !cfg.overwrite {
        // Every run writes its manifest before its first shard: shards without one are not ours.
        let shards = shard_files(&cfg.out)?;
        if let Some(first) = shards.first() {
            bail!(
                "{}: holds {} shard file(s) ({first}{}) but no _manifest.json, so not the output of this run; use --overwrite to replace them, or another --out",
                cfg.out.display(),
                shards.len(),
                if shards.len() > 1 { ", ..." } else { "" }
            );
        }
    }
    // The same run as the folder's (to resume or to leave alone), or a new one.
    let fresh = !existing.as_ref().is_some_and(ours);
    let mut manifest = match existing {
        Some(mut m) if !fresh => {
            if m.complete {
                // A folder from before the copy existed gets one; one from before the `_` names
                // gets them (so pyarrow can open it).
                store_tokenizer_copy(&cfg.out, &cfg.tokenizer, &m.tokenizer.sha256)?;
                if cfg.out.join(crate::shards::manifest::LEGACY_FILE_NAME).exists() {
                    m.store(&cfg.out)?;
                }
                log::info!("{}: already complete ({} shards); nothing to do", cfg.out.display(), m.shards.len());
                if cfg.print_shards {
                    print_shards(&cfg.out, &m.shards)?;
                }
                return Ok(Opened::Complete(m));
            }
            log::info!(
                "{}: resuming after {} complete shard(s), {} input records in",
                cfg.out.display(),
                m.shards.len(),
                m.cursor
            );
            m
        }
        Some(m) if !cfg.overwrite && m.settings.writer.row_groups != settings.writer.row_groups => bail!(
            "{}: was written by a condenser that cut row groups {} (this one cuts them {}, so its shards' bytes differ); it cannot be resumed or reused by this version: use --overwrite to prepare it again, or another --out",
            cfg.out.display(),
            m.settings.writer.row_groups,
            settings.writer.row_groups
        ),
        Some(_) if !cfg.overwrite => bail!(
            "{}: holds the output of a different prepare run (other inputs or settings); use --overwrite to replace it, or another --out",
            cfg.out.display()
        ),
        _ => Manifest {
            format_version: FORMAT_VERSION,
            tool: format!("condenser {}", env!("CARGO_PKG_VERSION")),
            written_at: 0,
            complete: false,
            settings,
            tokenizer: tokenizer_info,
            inputs: inputs
                .iter()
                .zip(&owned)
                .filter(|(_, &o)| o)
                .map(|(i, _)| InputStats { path: i.name(), ..Default::default() })
                .collect(),
            shards: Vec::new(),
            cursor: 0,
            totals: Totals::default(),
        },
    };
    if fresh {
        // On disk before any shard, so shards in a folder without a manifest are never this run's.
        manifest.store(&cfg.out)?;
    }
    remove_stale_files(&cfg.out, &manifest)?;
    store_tokenizer_copy(&cfg.out, &cfg.tokenizer, &manifest.tokenizer.sha256)?;
    if cfg.print_shards {
        print_shards(&cfg.out, &manifest.shards)?;
    }
    let by_record = matches!(cfg.partition, Some([_, n]) if inputs.len() < n as usize);
    Ok(Opened::Ready(Folder {
        inputs,
        owned,
        by_record,
        bz2_index,
        manifest,
        lock,
    }))
}

/// Fails naming the inputs that do not exist, except those `manifest` (the folder's, of this same
/// run) already covers wholly: the reader skips those without opening them.
fn check_missing(inputs: &[Input], owned: &[bool], manifest: Option<&Manifest>) -> Result<()> {
    let mut covered = vec![false; inputs.len()];
    if let Some(m) = manifest {
        // As the reader decides it: the manifest lists the owned inputs in order.
        let mut seq = 0u64;
        let owned_idx = (0..inputs.len()).filter(|&i| owned[i]);
        for (i, stats) in owned_idx.zip(&m.inputs) {
            covered[i] = m.complete || (stats.done && seq + stats.records < m.cursor);
            seq += stats.records + 1;
        }
    }
    let missing: Vec<&Input> = inputs
        .iter()
        .zip(&covered)
        .filter(|(i, &c)| !i.exists && !c)
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(corpus::inputs::missing_inputs_error(&missing))
}

/// Which inputs this partition reads: whole files when there are at least N of them.
fn owned_inputs(inputs: &[Input], partition: Option<[u32; 2]>) -> Vec<bool> {
    match partition {
        Some([k, n]) if inputs.len() >= n as usize => (0..inputs.len())
            .map(|i| i % n as usize == k as usize)
            .collect(),
        _ => vec![true; inputs.len()],
    }
}

fn print_shards(out: &Path, shards: &[ShardEntry]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    for s in shards {
        writeln!(stdout, "{}", out.join(&s.file).display())?;
    }
    stdout.flush()?;
    Ok(())
}

/// The names of the shard files in `out`, sorted.
fn shard_files(out: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("shard-") && name.ends_with(".parquet") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes temporary files and shards the manifest does not list (left by an interrupted run).
fn remove_stale_files(out: &Path, manifest: &Manifest) -> Result<()> {
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let stale_tmp = name.starts_with('.') && name.ends_with(".tmp");
        let stale_shard = name.starts_with("shard-")
            && name.ends_with(".parquet")
            && !manifest.shards.iter().any(|s| s.file == name);
        if stale_tmp || stale_shard {
            log::debug!("removing stale {name}");
            std::fs::remove_file(out.join(&name))
                .with_context(|| format!("{}: cannot remove", out.join(&name).display()))?;
        }
    }
    Ok(())
}
