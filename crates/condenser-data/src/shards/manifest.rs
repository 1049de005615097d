//! `_manifest.json`: what a prepared folder holds and how it was made.
//!
//! Everything beside the shards has a name starting with `_` or `.`, which pyarrow, Spark and HF
//! datasets skip, so the folder opens as a dataset by its name. Folders written before that carry
//! `manifest.json` and `tokenizer.json`; they are still read, and renamed by the next `prepare` there.
//!
//! Rewritten atomically (temporary file, fsync, rename) after every completed shard, so it always
//! describes exactly the complete shards on disk plus the input cursor they reach: an interrupted
//! `prepare` resumes from it. Its JSON Schema is `schemas/manifest.schema.json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::fs::sync_dir;
use crate::corpus::decode::decompress::Compression;
use crate::corpus::{Format, ReadOptions};
use crate::tokenizer::SpecialIds;

/// How `prepare` segments documents into spans: recorded in the manifest's settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentConfig {
    /// Sequence length the spans are made for; spans hold at most `max_len - 2` ids.
    pub max_len: usize,
    /// Probability of a short random target length for a span.
    pub short_seq_prob: f64,
    pub seed: u64,
    /// Documents with fewer spans are dropped (counted as `too_few_spans`).
    pub min_spans: usize,
}

/// How `prepare` cuts its output into files: recorded in the manifest's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct WriterConfig {
    /// Rotate to a new shard once a shard reaches this many bytes on disk (checked after each row
    /// group, so a shard may exceed it by up to one row group).
    pub shard_bytes: u64,
    /// Cut a row group once its rows' uncompressed size reaches this (see `row_groups`).
    pub row_group_bytes: usize,
    /// Rows per record batch handed to the Parquet writer by the old rule (`by-compressed-size`);
    /// unused by `by-uncompressed-size`, kept so that the settings of older folders still compare.
    pub batch_rows: usize,
    /// How row groups are cut: [`ROW_GROUPS_BY_UNCOMPRESSED_SIZE`] (from the rows before encoding, 4
    /// bytes per token id plus the document id's bytes, so they encode in parallel), or, in manifests
    /// written before the field, [`ROW_GROUPS_BY_COMPRESSED_SIZE`] (arrow-rs's running compressed
    /// estimate, checked every `batch_rows` rows). A folder is resumed only by the rule that wrote it.
    #[serde(default = "row_groups_old_rule")]
    pub row_groups: String,
}

/// The row-group rule of this version: cut from the rows' uncompressed size, encode in parallel.
pub const ROW_GROUPS_BY_UNCOMPRESSED_SIZE: &str = "by-uncompressed-size";
/// The rule of manifests without a `row_groups` field: cut on the writer's compressed size.
pub const ROW_GROUPS_BY_COMPRESSED_SIZE: &str = "by-compressed-size";

fn row_groups_old_rule() -> String {
    ROW_GROUPS_BY_COMPRESSED_SIZE.to_string()
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            shard_bytes: 64 << 20,
            row_group_bytes: 8 << 20,
            batch_rows: 256,
            row_groups: ROW_GROUPS_BY_UNCOMPRESSED_SIZE.to_string(),
        }
    }
}

pub const FORMAT_VERSION: u32 = 1;
pub const FILE_NAME: &str = "_manifest.json";
/// The manifest's name in folders prepared before the `_` prefix.
pub const LEGACY_FILE_NAME: &str = "manifest.json";
/// The copy of the tokenizer that `prepare` keeps beside the manifest: a prepared folder stays usable
/// when it moves to another machine (say, the GPU box) without the file it was made from.
pub const TOKENIZER_FILE: &str = "_tokenizer.json";
/// The tokenizer copy's name in folders prepared before the `_` prefix.
pub const LEGACY_TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    /// `condenser <version>`.
    pub tool: String,
    /// Unix seconds when this manifest was written (the one field that differs between equal runs).
    pub written_at: u64,
    /// All inputs were read to the end and the last shard is closed.
    pub complete: bool,
    pub settings: Settings,
    pub tokenizer: TokenizerInfo,
    pub inputs: Vec<InputStats>,
    pub shards: Vec<ShardEntry>,
    /// Input items (documents and skips, after partitioning) covered by the listed shards.
    pub cursor: u64,
    pub totals: Totals,
}

/// Everything that decides the output bytes; a resume must find the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub inputs: Vec<String>,
    pub read: ReadOptions,
    pub segment: SegmentConfig,
    pub writer: WriterConfig,
    /// `[K, N]`: this run prepared partition K of N.
    pub partition: Option<[u32; 2]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizerInfo {
    pub path: String,
    pub sha256: String,
    pub vocab_size: u32,
    pub special_ids: SpecialIds,
}

impl TokenizerInfo {
    /// The tokenizer these shards were made with: the copy in `dir` (the manifest's folder), else
    /// the file `prepare` read. Only a file with the recorded SHA-256 counts: another vocabulary
    /// would mask and pair word pieces by the wrong ids.
    pub fn locate(&self, dir: &Path) -> Result<std::path::PathBuf> {
        let mut tried = Vec::new();
        for candidate in [
            dir.join(TOKENIZER_FILE),
            dir.join(LEGACY_TOKENIZER_FILE),
            std::path::PathBuf::from(&self.path),
        ] {
            if !candidate.is_file() {
                tried.push(format!("{} (missing)", candidate.display()));
                continue;
            }
            if sha256_file(&candidate)? == self.sha256 {
                return Ok(candidate);
            }
            tried.push(format!("{} (other contents)", candidate.display()));
        }
        anyhow::bail!(
            "{}: the tokenizer the shards were prepared with (sha256 {}) is not there: tried {}",
            dir.display(),
            self.sha256,
            tried.join(", ")
        )
    }
}

/// SHA-256 of a whole file, as lowercase hex, read in 1 MiB pieces (training files run to gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 20]);
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            return Ok(super::fs::hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// SHA-256 of bytes already in memory, as [`sha256_file`] gives it for a file holding them.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    super::fs::hex(&Sha256::digest(bytes))
}

/// Puts a copy of `tokenizer` (whose hash is `sha256`) at `dir/_tokenizer.json`, atomically, unless
/// that copy is already there. An old-named copy goes once the new one is in place.
pub fn store_tokenizer_copy(dir: &Path, tokenizer: &Path, sha256: &str) -> Result<()> {
    let path = dir.join(TOKENIZER_FILE);
    if path.is_file() && sha256_file(&path)? == sha256 {
        return remove_legacy_tokenizer(dir, tokenizer, sha256);
    }
    let tmp = dir.join(format!(".{TOKENIZER_FILE}.tmp"));
    std::fs::copy(tokenizer, &tmp)
        .with_context(|| format!("cannot copy {} to {}", tokenizer.display(), tmp.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("{}: cannot sync", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    sync_dir(dir)?;
    remove_legacy_tokenizer(dir, tokenizer, sha256)
}

/// Removes an older folder's `tokenizer.json` copy, but only a copy: not the file `prepare` was
/// given (`--tokenizer DIR/tokenizer.json`), nor a file with other contents.
fn remove_legacy_tokenizer(dir: &Path, tokenizer: &Path, sha256: &str) -> Result<()> {
    let legacy = dir.join(LEGACY_TOKENIZER_FILE);
    if !legacy.is_file() {
        return Ok(());
    }
    let same_file = match (legacy.canonicalize(), tokenizer.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    };
    if same_file || sha256_file(&legacy)? != sha256 {
        return Ok(());
    }
    remove_legacy(dir, LEGACY_TOKENIZER_FILE)
}

/// Removes `dir/name` (an old-layout file whose replacement is already written), if present: left
/// there, it would keep pyarrow from opening the folder.
fn remove_legacy(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot remove", path.display())),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InputStats {
    pub path: String,
    pub format: Option<Format>,
    pub compression: Option<Compression>,
    /// Raw (compressed) bytes read; known once the input is done.
    pub bytes: u64,
    /// Read to its end (or abandoned after a read error, counted in `skipped`).
    pub done: bool,
    /// Records seen: documents plus skips.
    pub records: u64,
    /// Documents written to shards.
    pub documents: u64,
    pub spans: u64,
    pub tokens: u64,
    /// Skipped records by reason (see the README for the reasons).
    pub skipped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    /// Path relative to the manifest's folder.
    pub file: String,
    pub rows: u64,
    pub spans: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub row_groups: u64,
    pub sha256: String,
    /// Documents with at least two spans: the coCondenser stage's examples (absent in manifests
    /// written before it was counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairable: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub documents: u64,
    pub spans: u64,
    pub tokens: u64,
    pub shards: u64,
    pub shard_bytes: u64,
    pub input_bytes: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl Manifest {
    /// Recomputes `totals` from the inputs and shards.
    pub fn update_totals(&mut self) {
        let mut t = Totals::default();
        for i in &self.inputs {
            t.documents += i.documents;
            t.spans += i.spans;
            t.tokens += i.tokens;
            t.input_bytes += i.bytes;
            for (k, v) in &i.skipped {
                *t.skipped.entry(k.clone()).or_default() += v;
            }
        }
        t.shards = self.shards.len() as u64;
        t.shard_bytes = self.shards.iter().map(|s| s.bytes).sum();
        self.totals = t;
    }

    /// The manifest of `dir` (`_manifest.json`, else an older folder's `manifest.json`), or `None`.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        match Self::load_file(&dir.join(FILE_NAME))? {
            Some(m) => Ok(Some(m)),
            None => Self::load_file(&dir.join(LEGACY_FILE_NAME)),
        }
    }

    fn load_file(path: &Path) -> Result<Option<Manifest>> {
        let path = path.to_path_buf();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let m: Manifest = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a condenser manifest", path.display()))?;
                m.check_shard_paths(&path)?;
                Ok(Some(m))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
        }
    }

    /// Every shard entry names a file inside the manifest's folder: a relative path of plain names
    /// (`shard-00000.parquet`, or `part-0-of-2/shard-00000.parquet` as `prepare --merge` writes). An
    /// absolute path, `..` or `.` is refused, so a manifest cannot make `inspect` or `train` read (or
    /// `prepare` replace) a file elsewhere. `path` is the manifest's, for the message.
    pub fn check_shard_paths(&self, path: &Path) -> Result<()> {
        for s in &self.shards {
            let plain = !s.file.is_empty()
                && Path::new(&s.file)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                anyhow::bail!(
                    "{}: shard entry {:?} is not a file name inside the manifest's folder (absolute paths, `..` and `.` are refused)",
                    path.display(),
                    s.file
                );
            }
        }
        Ok(())
    }

    /// Writes `dir/_manifest.json` atomically (and then drops an older folder's `manifest.json`).
    pub fn store(&mut self, dir: &Path) -> Result<()> {
        self.update_totals();
        self.written_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        serde_json::to_writer_pretty(&mut f, self)
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(f.write_all(b"\n")?))
            .with_context(|| format!("{}: write failed", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("{}: fsync failed", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)?;
        remove_legacy(dir, LEGACY_FILE_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &Path, sha256: String) -> TokenizerInfo {
        TokenizerInfo {
            path: path.display().to_string(),
            sha256,
            vocab_size: 3,
            special_ids: SpecialIds {
                pad: 0,
                unk: 1,
                cls: 2,
                sep: 3,
                mask: 4,
            },
        }
    }

    #[test]
    fn locate_prefers_the_copy_then_the_recorded_file_and_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (shards, original) = (dir.path().join("shards"), dir.path().join("tok.json"));
        std::fs::create_dir(&shards).unwrap();
        std::fs::write(&original, b"{\"v\": 1}").unwrap();
        let t = info(&original, sha256_file(&original).unwrap());
        // No copy yet (a folder from before copies): the recorded file.
        assert_eq!(t.locate(&shards).unwrap(), original);
        store_tokenizer_copy(&shards, &original, &t.sha256).unwrap();
        assert_eq!(t.locate(&shards).unwrap(), shards.join(TOKENIZER_FILE));
        // The recorded file edited since, and the copy gone: nothing matches.
        std::fs::write(&original, b"{\"v\": 2}").unwrap();
        std::fs::remove_file(shards.join(TOKENIZER_FILE)).unwrap();
        let err = format!("{:#}", t.locate(&shards).unwrap_err());
        assert!(
            err.contains("(missing)") && err.contains("tok.json (other contents)"),
            "{err}"
        );
        // A stale copy is replaced by the next store.
        std::fs::write(shards.join(TOKENIZER_FILE), b"stale").unwrap();
        let fresh = info(&original, sha256_file(&original).unwrap());
        store_tokenizer_copy(&shards, &original, &fresh.sha256).unwrap();
        assert_eq!(
            std::fs::read(shards.join(TOKENIZER_FILE)).unwrap(),
            b"{\"v\": 2}"
        );
    }

    #[test]
    fn old_layout_copies_are_found_and_replaced_but_never_the_given_file() {
        let dir = tempfile::tempdir().unwrap();
        let (shards, original) = (dir.path().join("shards"), dir.path().join("tok.json"));
        std::fs::create_dir(&shards).unwrap();
        std::fs::write(&original, b"{\"v\": 1}").unwrap();
        let t = info(&original, sha256_file(&original).unwrap());
        // A folder from before the `_` names: its `tokenizer.json` copy counts.
        std::fs::copy(&original, shards.join(LEGACY_TOKENIZER_FILE)).unwrap();
        assert_eq!(
            t.locate(&shards).unwrap(),
            shards.join(LEGACY_TOKENIZER_FILE)
        );
        // The next store writes the new name and drops the old copy.
        store_tokenizer_copy(&shards, &original, &t.sha256).unwrap();
        assert!(shards.join(TOKENIZER_FILE).is_file());
        assert!(!shards.join(LEGACY_TOKENIZER_FILE).exists());
        // `--tokenizer OUT/tokenizer.json`: the user's own file stays.
        let own = shards.join(LEGACY_TOKENIZER_FILE);
        std::fs::copy(&original, &own).unwrap();
        store_tokenizer_copy(&shards, &own, &t.sha256).unwrap();
        assert!(own.is_file());
    }
}
