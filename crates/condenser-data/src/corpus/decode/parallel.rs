//! Parallel, in-order decoding of a compressed input made of independent pieces (bzip2 streams, zstd
//! frames, BGZF gzip members).
//!
//! ```text
//! splitter thread ──groups of whole pieces──> decoder threads ──in order──> the reader
//!   finds piece boundaries (a [`Framing`])        bounded: a slot per group in flight
//! ```
//! The splitter cuts the compressed bytes into groups of whole pieces of at least `group_bytes`; each
//! group is decoded on its own and handed out in file order, so the decoded bytes are exactly those of
//! the serial decoder. At most `2 * threads + 2` groups exist at a time: memory is bounded whatever the
//! input's size.
//!
//! Where boundaries cannot be found (a header the framing does not know, or one piece larger than
//! [`MAX_GROUP_FACTOR`] groups), the splitter decodes the rest of the input itself with the serial
//! decoder and passes the decoded bytes through in order: same output, bounded memory.
//!
//! A truncated (or corrupt) group: the bytes decoded from it before the failure are handed out (as
//! the serial decoder does), then an error naming the group's compressed byte range; every complete
//! piece before it is read.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use crossbeam_channel::{bounded, Receiver, Sender};

/// CPU nanoseconds spent by parallel decoding threads in this process (for `prepare`'s stage timings).
static DECODE_CPU_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds a decoding thread's CPU time.
pub fn add_decode_cpu(d: std::time::Duration) {
    DECODE_CPU_NS.fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// CPU time spent by parallel decoding threads so far.
pub fn decode_cpu() -> std::time::Duration {
    std::time::Duration::from_nanos(DECODE_CPU_NS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Compressed bytes per group (a Wikipedia bzip2 stream is ~100 kB to ~1 MB compressed; a BGZF member
/// at most 64 KiB).
pub const GROUP_BYTES: usize = 1 << 20;

/// The first groups of an input are smaller: `2 x threads` groups of this many bytes, then twice as
/// many bytes every `2 x threads` groups, up to the group size. Decoded bytes reach the reader after
/// one small group rather than one large one, and a small input (the demo's 1.7 MB single-stream
/// dump: 8 blocks, two 1 MB groups) still spreads over every decoder thread.
pub const FIRST_GROUP_BYTES: usize = 128 << 10;

/// A group that has found no boundary after this many times `group_bytes` is decoded serially from
/// its start on: one huge piece (a single-frame zstd file) must not be held in memory whole.
pub const MAX_GROUP_FACTOR: usize = 64;

/// Where the splitter may cut a group.
#[derive(Debug, PartialEq, Eq)]
pub enum Cut {
    /// A piece boundary at this position (at or after the minimum asked for).
    At(usize),
    /// No boundary at or after the minimum in the bytes so far.
    More,
    /// Boundaries cannot be found from this position on (a piece boundary): decode the rest serially.
    Serial(usize),
}

/// How to find the pieces of one compressed format and decode them.
pub trait Framing: Send + 'static {
    /// Short name, for thread names.
    const SHORT: &'static str;
    /// What one piece is called in error messages ("bzip2 stream").
    const PIECE: &'static str;

    /// The first piece boundary at or after `min` (> 0) in `group`, which starts at a boundary. Called
    /// again with more bytes appended after [`Cut::More`]; after [`Cut::At`]`(i)` the next call's group
    /// starts at `i`.
    fn cut(&mut self, group: &[u8], min: usize) -> Cut;

    /// Decodes whole pieces; on a failure, what was decoded before it and the error.
    fn decode(bytes: &[u8]) -> (Vec<u8>, Option<io::Error>);

    /// The serial decoder, for the rest of an input whose boundaries cannot be found.
    fn serial(rest: Box<dyn BufRead + Send>) -> io::Result<Box<dyn Read + Send>>;
}

/// `CONDENSER_DECODE_GROUP_BYTES` (or its older name `CONDENSER_BZ2_GROUP_BYTES`), else
/// [`GROUP_BYTES`]: tests use small groups so that a small input has many.
pub fn group_bytes_from_env() -> usize {
    ["CONDENSER_DECODE_GROUP_BYTES", "CONDENSER_BZ2_GROUP_BYTES"]
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|&n: &usize| n > 0)
        })
        .unwrap_or(GROUP_BYTES)
}

/// The least compressed bytes of group `index` of an input decoded by `threads` threads, with groups
/// of `group_bytes`: see [`FIRST_GROUP_BYTES`].
fn least_group_bytes(index: u64, threads: usize, group_bytes: usize) -> usize {
    let doublings = (index / (2 * threads.max(1) as u64)).min(16) as u32;
    group_bytes.min(FIRST_GROUP_BYTES << doublings)
}

enum Payload {
    /// Whole pieces, for a decoder thread.
    Compressed(Vec<u8>),
    /// Bytes the splitter decoded serially, passed through (and the error that ended them).
    Decoded(Vec<u8>, Option<io::Error>),
}

/// A group: its index, its offset in the compressed input, its bytes.
struct Job(u64, u64, Payload);

enum Msg {
    /// A decoded group: its index, the decoded bytes, and the error that ended it.
    Group(u64, Vec<u8>, Option<io::Error>),
    /// The splitter is done: the number of groups, and its read error if it ended on one.
    End(u64, Option<io::Error>),
}

/// The decoded bytes of an input of independent pieces, decoded by `threads` threads.
pub struct ParallelDecoder<F> {
    results: Receiver<Msg>,
    slots: Receiver<()>,
    reorder: BTreeMap<u64, (Vec<u8>, Option<io::Error>)>,
    next: u64,
    /// The number of groups (and the splitter's error), once it is known.
    end: Option<(u64, Option<io::Error>)>,
    current: Vec<u8>,
    pos: usize,
    pending_error: Option<io::Error>,
    _framing: std::marker::PhantomData<fn() -> F>,
}

/// Maps an offset of the bytes the splitter reads to one of the file, for messages (where a reader in
/// front rewrote the input, as `bz2blocks` does).
pub type InputOffsets = std::sync::Arc<dyn Fn(u64) -> u64 + Send + Sync>;

impl<F: Framing + Default> ParallelDecoder<F> {
    /// Starts the splitter and `threads` decoders over `raw` (positioned at the first piece), with
    /// groups of [`group_bytes_from_env`].
    pub fn new(raw: Box<dyn BufRead + Send>, threads: usize) -> Self {
        Self::with_group_bytes(raw, threads, group_bytes_from_env())
    }

    /// As [`ParallelDecoder::new`] over a rewritten input: messages give offsets of the file.
    pub fn with_input_offsets(
        raw: Box<dyn BufRead + Send>,
        threads: usize,
        offsets: InputOffsets,
    ) -> Self {
        Self::with_framing(
            raw,
            threads,
            group_bytes_from_env(),
            F::default(),
            Some(offsets),
        )
    }

    /// As [`ParallelDecoder::new`], with groups of at least `group_bytes` compressed bytes.
    pub fn with_group_bytes(
        raw: Box<dyn BufRead + Send>,
        threads: usize,
        group_bytes: usize,
    ) -> Self {
        Self::with_framing(raw, threads, group_bytes.max(1), F::default(), None)
    }
}

impl<F: Framing> ParallelDecoder<F> {
    fn with_framing(
        raw: Box<dyn BufRead + Send>,
        threads: usize,
        group_bytes: usize,
        framing: F,
        offsets: Option<InputOffsets>,
    ) -> Self {
        let offsets: InputOffsets = offsets.unwrap_or_else(|| std::sync::Arc::new(|o| o));
        let threads = threads.max(1);
        let in_flight = 2 * threads + 2;
        let (job_tx, job_rx) = bounded::<Job>(in_flight);
        let (result_tx, result_rx) = bounded::<Msg>(in_flight + 1);
        let (slot_tx, slot_rx) = bounded::<()>(in_flight);
        let end_tx = result_tx.clone();
        let split_offsets = offsets.clone();
        std::thread::Builder::new()
            .name(format!("{}-split", F::SHORT))
            .spawn(move || {
                let mut splitter = Splitter {
                    framing,
                    group_bytes,
                    threads,
                    jobs: job_tx,
                    slots: slot_tx,
                    count: 0,
                    offsets: split_offsets,
                };
                let t = crate::cputime::thread_cpu();
                let err = splitter.run(raw).err();
                add_decode_cpu(crate::cputime::thread_cpu() - t);
                let count = splitter.count;
                drop(splitter);
                let _ = end_tx.send(Msg::End(count, err));
            })
            .expect("spawn the splitter thread");
        for i in 0..threads {
            let (rx, tx, offsets) = (job_rx.clone(), result_tx.clone(), offsets.clone());
            std::thread::Builder::new()
                .name(format!("{}-decode-{i}", F::SHORT))
                .spawn(move || {
                    for Job(index, offset, payload) in rx {
                        let t = crate::cputime::thread_cpu();
                        let (out, err) = match payload {
                            Payload::Compressed(bytes) => {
                                let (out, err) = F::decode(&bytes);
                                let end = offsets(offset + bytes.len() as u64);
                                let offset = offsets(offset);
                                let err = err.map(|e| {
                                    io::Error::new(
                                        e.kind(),
                                        format!(
                                            "{} in compressed bytes {offset}..{end}: {e}",
                                            F::PIECE
                                        ),
                                    )
                                });
                                (out, err)
                            }
                            Payload::Decoded(out, err) => (out, err),
                        };
                        add_decode_cpu(crate::cputime::thread_cpu() - t);
                        if tx.send(Msg::Group(index, out, err)).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a decoder thread");
        }
        ParallelDecoder {
            results: result_rx,
            slots: slot_rx,
            reorder: BTreeMap::new(),
            next: 0,
            end: None,
            current: Vec::new(),
            pos: 0,
            pending_error: None,
            _framing: std::marker::PhantomData,
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
                    return Err(io::Error::other(format!(
                        "the {} decoder threads stopped",
                        F::SHORT
                    )));
                }
            }
        }
    }
}

impl<F: Framing> BufRead for ParallelDecoder<F> {
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

impl<F: Framing> Read for ParallelDecoder<F> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

/// The splitter thread's state: cuts the compressed input into groups and sends them off.
struct Splitter<F> {
    framing: F,
    group_bytes: usize,
    /// Decoder threads (the ramp of [`FIRST_GROUP_BYTES`] is as long as they are many).
    threads: usize,
    jobs: Sender<Job>,
    slots: Sender<()>,
    /// Groups sent so far.
    count: u64,
    offsets: InputOffsets,
}

impl<F: Framing> Splitter<F> {
    /// Sends one group; false when the reader is gone.
    fn send(&mut self, offset: u64, payload: Payload) -> bool {
        // A slot first: at most `in_flight` groups between here and the reader.
        if self.slots.send(()).is_err() {
            return false;
        }
        let ok = self.jobs.send(Job(self.count, offset, payload)).is_ok();
        self.count += 1;
        ok
    }

    fn run(&mut self, mut raw: Box<dyn BufRead + Send>) -> io::Result<()> {
        let cap = self.group_bytes.saturating_mul(MAX_GROUP_FACTOR);
        let mut group: Vec<u8> = Vec::with_capacity(self.group_bytes + (1 << 18));
        let mut offset = 0u64; // of the group in the input
        loop {
            let buf = raw.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            group.extend_from_slice(buf);
            raw.consume(n);
            loop {
                let min = least_group_bytes(self.count, self.threads, self.group_bytes);
                match self.framing.cut(&group, min) {
                    Cut::At(i) => {
                        let rest = group.split_off(i);
                        let full = std::mem::replace(&mut group, rest);
                        let len = full.len() as u64;
                        if !self.send(offset, Payload::Compressed(full)) {
                            return Ok(());
                        }
                        offset += len;
                    }
                    Cut::More if group.len() <= cap => break,
                    // One piece larger than `cap`: the group starts at a boundary.
                    Cut::More => return self.serial(group, offset, raw),
                    Cut::Serial(i) => {
                        let rest = group.split_off(i);
                        let whole = std::mem::replace(&mut group, rest);
                        let len = whole.len() as u64;
                        if !whole.is_empty() && !self.send(offset, Payload::Compressed(whole)) {
                            return Ok(());
                        }
                        return self.serial(group, offset + len, raw);
                    }
                }
            }
        }
        if !group.is_empty() {
            self.send(offset, Payload::Compressed(group));
        }
        Ok(())
    }

    /// Decodes `head` and the rest of `raw` with the serial decoder, passing the bytes on in order.
    fn serial(
        &mut self,
        head: Vec<u8>,
        offset: u64,
        raw: Box<dyn BufRead + Send>,
    ) -> io::Result<()> {
        let at = (self.offsets)(offset);
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} at or after compressed byte {at} (decoded serially): {e}",
                    F::PIECE
                ),
            )
        };
        let rest: Box<dyn BufRead + Send> = Box::new(io::Cursor::new(head).chain(raw));
        let mut dec = match F::serial(rest) {
            Ok(d) => d,
            Err(e) => {
                self.send(offset, Payload::Decoded(Vec::new(), Some(context(e))));
                return Ok(());
            }
        };
        let chunk = self.group_bytes.saturating_mul(4).max(1 << 16) as u64;
        loop {
            let mut out = Vec::new();
            let err = (&mut dec).take(chunk).read_to_end(&mut out).err();
            let done = err.is_some() || (out.len() as u64) < chunk;
            if out.is_empty() && err.is_none() {
                return Ok(());
            }
            if !self.send(offset, Payload::Decoded(out, err.map(context))) || done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_groups_are_small_and_grow_to_the_group_size() {
        let sizes = |threads| {
            (0..12)
                .map(|i| least_group_bytes(i, threads, GROUP_BYTES) >> 10)
                .collect::<Vec<_>>()
        };
        // Two threads: four groups of 128 KiB, then 256, 512, and 1 MiB from the 13th group on.
        assert_eq!(
            sizes(2),
            [128, 128, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512]
        );
        assert_eq!(least_group_bytes(12, 2, GROUP_BYTES), GROUP_BYTES);
        assert_eq!(least_group_bytes(u64::MAX, 2, GROUP_BYTES), GROUP_BYTES);
        // More threads, a longer ramp: every thread gets small groups first.
        assert!(sizes(8).iter().all(|&k| k == 128));
        // Tests' small groups (CONDENSER_DECODE_GROUP_BYTES) are not made larger.
        assert_eq!(least_group_bytes(0, 2, 8192), 8192);
        assert_eq!(least_group_bytes(100, 2, 8192), 8192);
    }
}
