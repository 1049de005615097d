//! Fine-tuning's epoch order: a keyed permutation of every training query, as Tevatron draws one each
//! epoch, with memory bounded by an index of line offsets (16 bytes a query, 4 more for the epoch's
//! order), not by the texts.
//!
//! The index is built once, in one pass over the training files: each line that is a training record
//! is kept as (file, byte offset); the others are counted by reason, as the loader always did. A
//! compressed file cannot be read at an offset, so it is decompressed once into a cache folder beside
//! the run (`OUT/.train-cache.tmp-PID/`, its size logged), read from there, and removed when the loader
//! ends (a cache left by a killed run is removed at the next start, with the other temporaries). Epoch e
//! reads the queries in the order of a permutation drawn from (seed, e): the same for any world size,
//! and a resumed run skips the batches already trained on without reading them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;

use super::pair_lines::{parse_line_joined, Query, SkipCounts};
use crate::corpus::decode::decompress::Compression;
use crate::corpus::lines::{read_line_capped, Line};
use crate::rng::keyed_rng;

/// The longest training line read (as the streaming loader).
const MAX_LINE: usize = 64 << 20;

/// A reader that counts the bytes consumed (the offset of the next line).
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counted<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.pos += n as u64;
        self.inner.consume(n)
    }
}

/// Every training query's place in the (readable copies of the) training files.
pub struct QueryIndex {
    /// The files as read: the originals, or their decompressed copies in `cache`.
    files: Vec<PathBuf>,
    /// The names shown in messages (the originals).
    names: Vec<PathBuf>,
    /// (file, byte offset) of each training record, in file order.
    entries: Vec<(u32, u64)>,
    /// The lines that are not training records, by reason (named as they are found).
    pub skips: SkipCounts,
    cache: Option<PathBuf>,
}

impl QueryIndex {
    /// Indexes `files`; compressed ones are decompressed into `cache_dir` first.
    pub fn build(files: &[PathBuf], n_passages: usize, cache_dir: &Path) -> Result<Self> {
        let mut readable = Vec::with_capacity(files.len());
        let mut cache = None;
        for (i, f) in files.iter().enumerate() {
            let (kind, mut r) =
                crate::corpus::decode::decompress::open(f, Arc::new(AtomicU64::new(0)))?;
            if kind == Compression::None {
                readable.push(f.clone());
                continue;
            }
            std::fs::create_dir_all(cache_dir)
                .with_context(|| format!("{}: cannot create", cache_dir.display()))?;
            cache = Some(cache_dir.to_path_buf());
            let name = f
                .file_name()
                .map_or_else(|| "train".into(), |n| n.to_string_lossy().into_owned());
            let copy = cache_dir.join(format!("{i}-{name}.jsonl"));
            let mut out = std::io::BufWriter::new(
                File::create(&copy)
                    .with_context(|| format!("{}: cannot create", copy.display()))?,
            );
            let bytes = std::io::copy(&mut r, &mut out).with_context(|| {
                format!("decompressing {} into {}", f.display(), copy.display())
            })?;
            std::io::Write::flush(&mut out)
                .with_context(|| format!("{}: cannot write", copy.display()))?;
            log::info!(
                "{} is compressed: decompressed once into {} ({:.1} MB), removed when training ends",
                f.display(),
                copy.display(),
                bytes as f64 / 1e6
            );
            readable.push(copy);
        }
        let mut index = QueryIndex {
            files: readable,
            names: files.to_vec(),
            entries: Vec::new(),
            skips: SkipCounts::default(),
            cache,
        };
        let mut buf = Vec::new();
        for (i, path) in index.files.iter().enumerate() {
            let file =
                File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let mut r = Counted {
                inner: BufReader::with_capacity(1 << 20, file),
                pos: 0,
            };
            let name = &index.names[i];
            let mut lineno = 0u64;
            loop {
                let at = r.pos;
                let line =
                    read_line_capped(&mut r, &mut buf, MAX_LINE, false).with_context(|| {
                        format!("{}: line {}: cannot read", name.display(), lineno + 1)
                    })?;
                lineno += 1;
                let parsed = match line {
                    Line::Eof => break,
                    Line::TooLong(n) | Line::Abandoned(n) => {
                        Err(super::pair_lines::Skip::Malformed(format!(
                            "a line of {n} bytes, longer than {MAX_LINE}"
                        )))
                    }
                    Line::Some => match parse_line_joined(&buf, n_passages, " ") {
                        Ok(None) => continue,
                        Ok(Some(_)) => Ok(()),
                        Err(s) => Err(s),
                    },
                };
                match parsed {
                    Ok(()) => index.entries.push((i as u32, at)),
                    Err(s) => index.skips.add(name, lineno, &s, true),
                }
            }
        }
        Ok(index)
    }

    /// Training queries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Epoch `epoch`'s order: a permutation of 0..len drawn from (seed, epoch).
    pub fn order(&self, seed: u64, epoch: u64) -> Vec<u32> {
        epoch_order(self.len(), seed, epoch)
    }

    /// Opens the files for `read`.
    pub fn open(&self) -> Result<Vec<BufReader<File>>> {
        self.files
            .iter()
            .map(|p| {
                File::open(p)
                    .map(BufReader::new)
                    .with_context(|| format!("{}: cannot open", p.display()))
            })
            .collect()
    }

    /// Query `k` of the index, its passages' titles joined by `joiner`.
    pub fn read(
        &self,
        handles: &mut [BufReader<File>],
        k: u32,
        n_passages: usize,
        joiner: &str,
        buf: &mut Vec<u8>,
    ) -> Result<Query> {
        let (f, at) = self.entries[k as usize];
        let name = &self.names[f as usize];
        let h = &mut handles[f as usize];
        h.seek(SeekFrom::Start(at))
            .with_context(|| format!("{}: cannot seek to byte {at}", name.display()))?;
        read_line_capped(h, buf, MAX_LINE, false)
            .with_context(|| format!("{}: cannot read at byte {at}", name.display()))?;
        match parse_line_joined(buf, n_passages, joiner) {
            Ok(Some(q)) => Ok(q),
            _ => anyhow::bail!(
                "{}: the training record at byte {at} changed while training (the file was modified)",
                name.display()
            ),
        }
    }
}

impl Drop for QueryIndex {
    fn drop(&mut self) {
        if let Some(dir) = &self.cache {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => log::debug!("removed {}", dir.display()),
                Err(e) => log::warn!(
                    "{}: cannot remove the decompressed cache: {e}",
                    dir.display()
                ),
            }
        }
    }
}

/// A permutation of 0..n drawn from (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut keyed_rng(seed, "query-order", &epoch.to_string()));
    order
}

/// The cache folder of this process under the run folder `out` (a `.NAME.tmp-PID` name, so a killed
/// run's is removed at the next start).
pub fn cache_dir(out: &Path) -> PathBuf {
    out.join(format!(".train-cache.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_keyed_permutation() {
        let a = epoch_order(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(
            a,
            epoch_order(1000, 7, 0),
            "the same for the same (seed, epoch)"
        );
        assert_ne!(a, epoch_order(1000, 7, 1), "another each epoch");
        assert_ne!(a, epoch_order(1000, 8, 0), "another for another seed");
        // Not a local shuffle: the first tenth of the order reaches across the whole file.
        assert!(a[..100].iter().any(|&k| k >= 900) && a[..100].iter().any(|&k| k < 100));
    }

    #[test]
    fn an_index_reads_plain_and_compressed_files_and_removes_its_cache() {
        let dir = tempfile::tempdir().unwrap();
        let line = |q: usize| {
            format!(
                r#"{{"query_id": "q{q}", "query": "question {q}", "positive_passages": [{{"docid": "p", "title": "T{q}", "text": "pos"}}], "negative_passages": [{{"docid": "n", "text": "neg"}}]}}"#
            )
        };
        let plain = dir.path().join("a.jsonl");
        std::fs::write(&plain, format!("{}\nnot json\n\n{}\n", line(0), line(1))).unwrap();
        let gz = dir.path().join("b.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        std::io::Write::write_all(&mut enc, format!("{}\n{}", line(2), line(3)).as_bytes())
            .unwrap();
        enc.finish().unwrap();
        let cache = dir.path().join(".train-cache.tmp-1");
        let index = QueryIndex::build(&[plain, gz], 2, &cache).unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.skips.malformed, 1);
        assert!(cache.is_dir());
        let mut h = index.open().unwrap();
        let mut buf = Vec::new();
        let ids: Vec<String> = [3u32, 0, 2, 1]
            .iter()
            .map(|&k| index.read(&mut h, k, 2, "[SEP]", &mut buf).unwrap().id)
            .collect();
        assert_eq!(ids, ["q3", "q0", "q2", "q1"]);
        let q = index.read(&mut h, 1, 2, "[SEP]", &mut buf).unwrap();
        assert_eq!(q.positives, ["T1[SEP]pos"]);
        drop(h);
        drop(index);
        assert!(!cache.exists(), "the cache goes with the index");
    }
}
