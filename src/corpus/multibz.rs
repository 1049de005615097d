//! Parallel decoding of multi-stream bzip2 (Wikipedia's `pages-articles-multistream` dumps: about 100
//! pages per bzip2 stream, the streams concatenated).
//!
//! ```text
//! splitter thread ──groups of whole streams──> decoder threads ──in order──> the reader (XML parser)
//!   finds stream headers in the compressed bytes      bounded: a slot per group in flight
//! ```
//! A new stream starts at a byte boundary with `BZh1`..`BZh9` followed by a block magic
//! (`0x314159265359`) or, for an empty stream, the end-of-stream magic (`0x177245385090`): 10 bytes
//! that the bit-packed inside of a stream reproduces by chance about once in 2^80 positions. Streams are
//! grouped to at least [`GROUP_BYTES`] compressed bytes, decoded on their own, and handed out in file
//! order, so the decoded bytes are exactly those of the serial decoder (a test checks it). At most
//! `2 * threads + 2` groups exist at a time: memory is bounded whatever the dump's size.
//!
//! A truncated (or corrupt) stream: the bytes decoded from it before the failure are handed out (as
//! the serial decoder does), then an error naming the stream's compressed offset; every complete
//! stream before it is read.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use crossbeam_channel::{bounded, Receiver, Sender};

/// Compressed bytes per group of streams (a Wikipedia stream is ~100 kB to ~1 MB compressed).
pub const GROUP_BYTES: usize = 1 << 20;

const BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
const EOS_MAGIC: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];

/// Whether a bzip2 stream starts at `buf[i]` (needs 10 bytes there).
pub fn stream_starts_at(buf: &[u8], i: usize) -> bool {
    buf.len() >= i + 10
        && &buf[i..i + 3] == b"BZh"
        && (b'1'..=b'9').contains(&buf[i + 3])
        && (buf[i + 4..i + 10] == BLOCK_MAGIC || buf[i + 4..i + 10] == EOS_MAGIC)
}

/// A group: its index, its offset in the compressed input, its compressed bytes.
struct Job(u64, u64, Vec<u8>);

enum Msg {
    /// A decoded group: its index, the decoded bytes, and the error that ended it.
    Group(u64, Vec<u8>, Option<io::Error>),
    /// The splitter is done: the number of groups, and its read error if it ended on one.
    End(u64, Option<io::Error>),
}

/// The decoded bytes of a multi-stream bzip2 input, decoded by `threads` threads.
pub struct ParallelBz2 {
    results: Receiver<Msg>,
    slots: Receiver<()>,
    reorder: BTreeMap<u64, (Vec<u8>, Option<io::Error>)>,
    next: u64,
    /// The number of groups (and the splitter's error), once it is known.
    end: Option<(u64, Option<io::Error>)>,
    current: Vec<u8>,
    pos: usize,
    pending_error: Option<io::Error>,
}

impl ParallelBz2 {
    /// Starts the splitter and `threads` decoders over `raw` (positioned at the first stream).
    /// `CONDENSER_BZ2_GROUP_BYTES` overrides [`GROUP_BYTES`] (tests use small groups).
    pub fn new(raw: Box<dyn BufRead + Send>, threads: usize) -> ParallelBz2 {
        let group = std::env::var("CONDENSER_BZ2_GROUP_BYTES")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(GROUP_BYTES);
        ParallelBz2::with_group_bytes(raw, threads, group)
    }

    /// As [`ParallelBz2::new`], with groups of at least `group_bytes` compressed bytes.
    pub fn with_group_bytes(
        raw: Box<dyn BufRead + Send>,
        threads: usize,
        group_bytes: usize,
    ) -> ParallelBz2 {
        let threads = threads.max(1);
        let in_flight = 2 * threads + 2;
        let (job_tx, job_rx) = bounded::<Job>(in_flight);
        let (result_tx, result_rx) = bounded::<Msg>(in_flight + 1);
        let (slot_tx, slot_rx) = bounded::<()>(in_flight);
        let end_tx = result_tx.clone();
        std::thread::Builder::new()
            .name("bz2-split".into())
            .spawn(move || {
                let mut count = 0u64;
                let t = crate::prepare::stages::thread_cpu();
                let err = split(raw, group_bytes, &job_tx, &slot_tx, &mut count).err();
                super::decompress::add_decode_cpu(crate::prepare::stages::thread_cpu() - t);
                drop(job_tx);
                let _ = end_tx.send(Msg::End(count, err));
            })
            .expect("spawn the bzip2 splitter");
        for i in 0..threads {
            let (rx, tx) = (job_rx.clone(), result_tx.clone());
            std::thread::Builder::new()
                .name(format!("bz2-decode-{i}"))
                .spawn(move || {
                    for Job(index, offset, bytes) in rx {
                        let t = crate::prepare::stages::thread_cpu();
                        let (out, err) = decode(&bytes, offset);
                        super::decompress::add_decode_cpu(crate::prepare::stages::thread_cpu() - t);
                        if tx.send(Msg::Group(index, out, err)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a bzip2 decoder");
        }
        ParallelBz2 {
            results: result_rx,
            slots: slot_rx,
            reorder: BTreeMap::new(),
            next: 0,
            end: None,
            current: Vec::new(),
            pos: 0,
            pending_error: None,
        }
    }

    /// Moves to the next group in order; false at the end of the input.
    fn next_group(&mut self) -> io::Result<bool> {
        loop {
            if let Some((out, err)) = self.reorder.remove(&self.next) {
                self.next += 1;
                let _ = self.slots.try_recv(); // its slot is free: one more group may be read
                self.current = out;
                self.pos = 0;
                self.pending_error = err;
                return Ok(true);
            }
            if let Some((n, err)) = &mut self.end {
                if self.next >= *n {
                    return match err.take() {
                        Some(e) => Err(e),
                        None => Ok(false),
                    };
                }
            }
            match self.results.recv() {
                Ok(Msg::Group(i, out, err)) => {
                    self.reorder.insert(i, (out, err));
                }
                Ok(Msg::End(n, err)) => self.end = Some((n, err)),
                Err(_) => {
                    return Err(io::Error::other("the bzip2 decoder threads stopped"));
                }
            }
        }
    }
}

impl BufRead for ParallelBz2 {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.current.len() {
            // A group that ended in an error: its bytes first, then the error (and nothing after).
            if let Some(e) = self.pending_error.take() {
                self.end = Some((self.next, None));
                self.reorder.clear();
                return Err(e);
            }
            if !self.next_group()? {
                return Ok(&[]);
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.current.len());
    }
}

impl Read for ParallelBz2 {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let buf = self.fill_buf()?;
            let n = buf.len().min(out.len());
            out[..n].copy_from_slice(&buf[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

/// Cuts the compressed input into groups of whole streams and sends them off; counts them in `count`.
fn split(
    mut raw: Box<dyn BufRead + Send>,
    group_bytes: usize,
    jobs: &Sender<Job>,
    slots: &Sender<()>,
    count: &mut u64,
) -> io::Result<()> {
    let mut group: Vec<u8> = Vec::with_capacity(group_bytes + (1 << 18));
    let mut offset = 0u64; // of the group in the input
    let mut scanned = 1usize; // positions of `group` already checked for a stream start (0 is one)
    let send = |group: Vec<u8>, offset: u64, count: &mut u64| -> bool {
        // A slot first: at most `in_flight` groups between here and the reader.
        if slots.send(()).is_err() {
            return false;
        }
        let ok = jobs.send(Job(*count, offset, group)).is_ok();
        *count += 1;
        ok
    };
    loop {
        let buf = raw.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        group.extend_from_slice(buf);
        raw.consume(n);
        if group.len() < group_bytes + 10 {
            continue;
        }
        // The first stream start at or after `group_bytes` ends this group.
        let from = scanned.max(group_bytes);
        let finder = memchr::memmem::Finder::new(b"BZh");
        let mut cut = None;
        for i in finder.find_iter(&group[from..]).map(|i| i + from) {
            if i + 10 > group.len() {
                break;
            }
            if stream_starts_at(&group, i) {
                cut = Some(i);
                break;
            }
        }
        match cut {
            Some(i) => {
                let rest = group.split_off(i);
                let full = std::mem::replace(&mut group, rest);
                let len = full.len() as u64;
                if !send(full, offset, count) {
                    return Ok(());
                }
                offset += len;
                scanned = 1;
            }
            None => scanned = group.len().saturating_sub(9),
        }
    }
    if !group.is_empty() {
        send(group, offset, count);
    }
    Ok(())
}

/// Decodes one group of whole streams; on a failure, what was decoded before it and the error.
fn decode(bytes: &[u8], offset: u64) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::with_capacity(bytes.len() * 5);
    let mut dec = bzip2::bufread::MultiBzDecoder::new(bytes);
    match dec.read_to_end(&mut out) {
        Ok(_) => (out, None),
        Err(e) => {
            let err = io::Error::new(
                e.kind(),
                format!(
                    "bzip2 stream in compressed bytes {offset}..{}: {e}",
                    offset + bytes.len() as u64
                ),
            );
            (out, Some(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bz(text: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    /// Many streams (some empty, some large), grouped small so that groups cut between many of them.
    fn dump() -> (Vec<u8>, Vec<u8>) {
        let (mut raw, mut text) = (Vec::new(), Vec::new());
        let mut x = 7u64;
        for i in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = match i % 37 {
                0 => 0,
                1 => 400_000,
                _ => (x >> 40) as usize % 5000,
            };
            // Text that compresses about as badly as prose.
            let part: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"etaoin shrdlu\n"[(x >> 59) as usize % 14]
                })
                .collect();
            raw.extend(bz(&part));
            text.extend(part);
        }
        (raw, text)
    }

    fn parallel(raw: Vec<u8>, threads: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut r = ParallelBz2::with_group_bytes(Box::new(io::Cursor::new(raw)), threads, 8192);
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).err();
        (out, err)
    }

    #[test]
    fn parallel_decoding_equals_the_serial_decoder() {
        let (raw, text) = dump();
        assert!(raw.len() > 100 * 8192, "{}", raw.len());
        let mut serial = Vec::new();
        bzip2::read::MultiBzDecoder::new(&raw[..])
            .read_to_end(&mut serial)
            .unwrap();
        assert_eq!(serial, text);
        for threads in [1, 2, 5] {
            let (out, err) = parallel(raw.clone(), threads);
            assert!(err.is_none(), "{err:?}");
            assert!(out == text, "{threads} threads: decoded bytes differ");
        }
        // A single stream reads whole too.
        let (out, err) = parallel(bz(&text), 3);
        assert!(err.is_none() && out == text);
    }

    #[test]
    fn a_truncated_input_keeps_every_complete_stream_and_reports_where() {
        let (raw, _) = dump();
        let cut = raw.len() * 2 / 3;
        let (out, err) = parallel(raw[..cut].to_vec(), 3);
        let err = err.expect("a truncated input is an error").to_string();
        assert!(err.contains("compressed bytes"), "{err}");
        // Every stream wholly before the cut decodes.
        let mut serial = Vec::new();
        let serial_err = bzip2::read::MultiBzDecoder::new(&raw[..cut]).read_to_end(&mut serial);
        assert!(serial_err.is_err());
        // At most the last (truncated) group's streams differ: the rest decoded, as far as the serial
        // decoder got.
        assert!(
            out.len() + 400_000 + 8 * 8192 >= serial.len(),
            "{} vs {}",
            out.len(),
            serial.len()
        );
        assert!(
            out.len() > serial.len() / 2,
            "{} vs {}",
            out.len(),
            serial.len()
        );
        assert_eq!(out[..], serial[..out.len()]);
    }
}
