//! Opening an input before the reader gets to it: its decoder threads (bzip2, zstd, BGZF) start at
//! once and decode into their bounded window of groups while the reader is still on the input before
//! it, so a corpus of several inputs does not wait for each one's first groups (the demo's single
//! bzip2 stream, behind a JSON file, took a third of the run's wall at `-j 2` that way).
//!
//! The raw bytes read ahead are counted apart and handed to the shared counter when the reader
//! attaches the input ([`Ahead::attach`]), so an input's byte count and progress come out as if it had
//! been opened then. Memory stays bounded: an input nobody reads fills at most its decoder's window
//! (`2 x threads + 2` groups, the first ones [`super::parallel::FIRST_GROUP_BYTES`] small).

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::decompress::{self, Compression};

/// An input opened ahead: its decoder (or the error opening it gave), and what it has read so far.
pub struct Ahead {
    opened: Result<(Compression, Box<dyn BufRead + Send>)>,
    tally: Arc<Mutex<Tally>>,
}

/// Raw bytes read before the reader attached the input, then the counter they go to.
#[derive(Default)]
struct Tally {
    before: u64,
    counter: Option<Arc<AtomicU64>>,
}

/// A raw source counting into a [`Tally`].
struct Tallied<R> {
    inner: R,
    tally: Arc<Mutex<Tally>>,
}

impl<R: Read> Read for Tallied<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        match &tally.counter {
            Some(counter) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            None => tally.before += n as u64,
        }
        Ok(n)
    }
}

/// Opens `path` as [`decompress::open`] does (same decoders, same errors), counting apart.
pub fn open(path: &Path) -> Ahead {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let source = tally.clone();
    let opened = decompress::open_with(path, Arc::new(AtomicU64::new(0)), move |raw| {
        Box::new(Tallied {
            inner: raw,
            tally: source,
        })
    });
    Ahead { opened, tally }
}

impl Ahead {
    /// The decoded input, its raw bytes counted into `counter` from now on (those read ahead are
    /// added first): what [`decompress::open`] with `counter` would have given.
    pub fn attach(
        self,
        counter: &Arc<AtomicU64>,
    ) -> Result<(Compression, Box<dyn BufRead + Send>)> {
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        counter.fetch_add(tally.before, Ordering::Relaxed);
        tally.counter = Some(counter.clone());
        drop(tally);
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_input_opened_ahead_reads_and_counts_as_one_opened_then() {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {i} of the text\n").into_bytes())
            .collect();
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
        enc.write_all(&text).unwrap();
        let compressed = enc.finish().unwrap();
        for (name, bytes) in [("t.txt", &text), ("t.txt.bz2", &compressed)] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let ahead = open(&path);
            // The decoder threads read (some of) the file before anyone attaches it.
            std::thread::sleep(std::time::Duration::from_millis(50));
            let counter = Arc::new(AtomicU64::new(1000));
            let (_, mut reader) = ahead.attach(&counter).unwrap();
            let mut out = Vec::new();
            reader.read_to_end(&mut out).unwrap();
            assert!(out == text, "{name}: decoded bytes differ");
            assert_eq!(
                counter.load(Ordering::Relaxed),
                1000 + bytes.len() as u64,
                "{name}"
            );
        }
        // A missing file: the error `decompress::open` gives, when attached.
        let missing = dir.path().join("none.jsonl");
        let err = open(&missing)
            .attach(&Arc::new(AtomicU64::new(0)))
            .err()
            .unwrap();
        let direct = decompress::open(&missing, Arc::new(AtomicU64::new(0)))
            .err()
            .unwrap();
        assert_eq!(format!("{err:#}"), format!("{direct:#}"));
    }
}
