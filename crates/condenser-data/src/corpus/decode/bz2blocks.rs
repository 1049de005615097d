//! Blocks of one bzip2 stream decoded in parallel: [`Restream`] rewrites a bzip2 input so that each
//! of its blocks is a stream of its own, and the multi-stream decoder ([`super::multibz`]) then decodes
//! the blocks on all its threads. `bzip2 FILE` writes one stream of 100-900 kB blocks, which
//! otherwise decodes on one thread whatever `-j` says.
//!
//! Blocks are bit-aligned: a block starts with the 48-bit magic `0x314159265359` at any bit, and a
//! stream ends with `0x177245385090`, the stream's combined CRC and padding to a byte. At each block
//! magic the block before it is written out as a stream: `BZh` and the level, the block's bits as they
//! were (its own CRC among them), the end-of-stream magic, the block's CRC as the stream's, padding. At a
//! stream's end the stored combined CRC is checked against its blocks' CRCs; on a mismatch the last
//! block's stream gets a wrong CRC, so that its decoder fails after its bytes, as the serial decoder
//! fails at the stream's end. The decoded bytes are the input's exactly (tests compare them with the
//! serial decoder's).
//!
//! Block data can hold the magic by chance (about once in 2^48 bit positions; a candidate whose
//! `origPtr` is beyond the block size is not one). A false block start splits a block in two whose
//! streams fail to decode: the input ends with an error (each block's CRC is checked), never with other
//! bytes. Input that is not a bzip2 stream where one should start is passed through unchanged, for the
//! decoder to report.

use std::io::{self, BufRead, Read};

const BLOCK_MAGIC: u64 = 0x3141_5926_5359;
const EOS_MAGIC: u64 = 0x1772_4538_5090;
/// Compressed bytes one block may take before the input is called corrupt (a block holds at most
/// 900 kB; incompressible data grows it a little).
const MAX_BLOCK_BYTES: usize = 8 << 20;
/// Bytes read from the input at a time.
const READ_BYTES: usize = 1 << 18;

/// `n` (at most 57) bits of `buf` from bit `p` (most significant first), zeros past its end.
fn bits(buf: &[u8], p: usize, n: u32) -> u64 {
    if n == 0 {
        return 0;
    }
    let j = p / 8;
    let mut word = [0u8; 8];
    let have = buf.len().saturating_sub(j).min(8);
    if have > 0 {
        word[..have].copy_from_slice(&buf[j..j + have]);
    }
    (u64::from_be_bytes(word) << (p % 8)) >> (64 - n)
}

/// Where magics may start: a magic at bit `s` of byte `j` puts 4 fixed bytes at `j + 1..j + 5` (its
/// bits `8 - s..40 - s`), one of 16 patterns (8 offsets, 2 magics), found by a SIMD multi-pattern
/// search; candidates are then checked bit by bit.
struct MagicFinder {
    searcher: Option<aho_corasick::packed::Searcher>,
}

impl MagicFinder {
    fn new() -> Self {
        let mut builder = aho_corasick::packed::Config::new().builder();
        for magic in [BLOCK_MAGIC, EOS_MAGIC] {
            for s in 0..8 {
                builder.add((((magic >> (8 + s)) & 0xFFFF_FFFF) as u32).to_be_bytes());
            }
        }
        MagicFinder {
            searcher: builder.build(),
        }
    }

    /// The first magic at or after bit `from` of `buf` with its 48 bits there: its bit, and
    /// whether it ends a stream.
    fn find(&self, buf: &[u8], from: usize) -> Option<(usize, bool)> {
        let total = buf.len() * 8;
        // The magic (if any) at byte `j`, at or after `from`.
        let at = |j: usize| {
            (0..8).map(|s| j * 8 + s).find_map(|p| {
                if p < from || p + 48 > total {
                    return None;
                }
                match bits(buf, p, 48) {
                    BLOCK_MAGIC => Some((p, false)),
                    EOS_MAGIC => Some((p, true)),
                    _ => None,
                }
            })
        };
        let Some(searcher) = &self.searcher else {
            return (from / 8..buf.len()).find_map(at);
        };
        let mut pos = from / 8 + 1;
        while pos < buf.len() {
            let m = searcher.find_in(buf, aho_corasick::Span::from(pos..buf.len()))?;
            if let Some(found) = at(m.start() - 1) {
                return Some(found);
            }
            pos = m.start() + 1;
        }
        None
    }
}

/// A bit writer onto a byte vector (most significant bit first, as bzip2 packs).
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits<'_> {
    fn put(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                self.acc = 0;
                self.n = 0;
            }
        }
    }

    /// Bits `[a, b)` of `src`; the writer must be at a byte boundary.
    fn copy(&mut self, src: &[u8], a: usize, b: usize) {
        debug_assert_eq!(self.n, 0);
        let (whole, s) = ((b - a) / 8, (a % 8) as u32);
        let j = a / 8;
        if s == 0 {
            self.out.extend_from_slice(&src[j..j + whole]);
        } else {
            self.out.extend(
                src[j..j + whole + 1]
                    .windows(2)
                    .map(|w| (w[0] << s) | (w[1] >> (8 - s))),
            );
        }
        let done = a + whole * 8;
        self.put(bits(src, done, (b - done) as u32), (b - done) as u32);
    }

    fn pad(&mut self) {
        if self.n > 0 {
            let n = 8 - self.n;
            self.put(0, n);
        }
    }
}

/// Where the rewriting stands in the input.
enum State {
    /// A stream header is expected at this byte of `buf`.
    Header(usize),
    /// Inside a stream: its level, its blocks' combined CRC so far, the current block's first bit
    /// and CRC, and the bit from which to look for the next magic.
    Block {
        level: u8,
        combined: u32,
        start: usize,
        crc: u32,
        scan: usize,
    },
    /// The rest of the input is passed through unchanged, from this byte of `buf`.
    Through(usize),
}

/// A bzip2 input rewritten with one stream per block (see the module's documentation).
pub struct Restream<R> {
    inner: R,
    buf: Vec<u8>,
    eof: bool,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    finder: MagicFinder,
    /// Bytes of `out` handed out and cleared before it, and bytes of the input dropped from `buf`.
    flushed: u64,
    dropped: u64,
    /// (offset in the output, offset in the input) where each written stream (or passed-through
    /// run) starts, for messages.
    starts: std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

impl<R: BufRead> Restream<R> {
    pub fn new(inner: R) -> Self {
        Restream {
            inner,
            buf: Vec::new(),
            eof: false,
            state: State::Header(0),
            out: Vec::new(),
            out_pos: 0,
            finder: MagicFinder::new(),
            flushed: 0,
            dropped: 0,
            starts: Default::default(),
        }
    }

    /// Maps an offset of the rewritten bytes to the input's: exact where a stream starts (where the
    /// parallel decoder cuts its groups), the nearest stream start's plus the distance elsewhere.
    pub fn input_offsets(&self) -> super::parallel::InputOffsets {
        let starts = self.starts.clone();
        std::sync::Arc::new(move |at| {
            let starts = starts.lock().unwrap_or_else(|e| e.into_inner());
            let i = starts.partition_point(|&(out, _)| out <= at);
            match i {
                0 => at,
                _ => {
                    let (out, input) = starts[i - 1];
                    input + (at - out)
                }
            }
        })
    }

    /// Notes that output written from now on comes from input byte `input` (of `buf`).
    fn note_start(&mut self, input: usize) {
        let out = self.flushed + self.out.len() as u64;
        let input = self.dropped + input as u64;
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        // A block's end is the next block's start: noted once.
        if starts.last() != Some(&(out, input)) {
            starts.push((out, input));
        }
    }

    /// Clears `buf`, counting its bytes as dropped.
    fn clear_buf(&mut self) {
        self.dropped += self.buf.len() as u64;
        self.buf.clear();
    }

    /// Appends more input to `buf`; false at its end.
    fn read_more(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let got = self.inner.fill_buf()?;
        if got.is_empty() {
            self.eof = true;
            return Ok(false);
        }
        let n = got.len().min(READ_BYTES);
        self.buf.extend_from_slice(&got[..n]);
        self.inner.consume(n);
        Ok(true)
    }

    /// Drops the bytes of `buf` before byte `keep` (positions in the state move with them).
    fn drop_before(&mut self, keep: usize) {
        let keep = keep.min(self.buf.len());
        if keep == 0 {
            return;
        }
        self.buf.drain(..keep);
        self.dropped += keep as u64;
        let bits = keep * 8;
        match &mut self.state {
            State::Header(i) | State::Through(i) => *i -= keep,
            State::Block { start, scan, .. } => {
                *start -= bits;
                *scan -= bits;
            }
        }
    }

    /// The next magic at or after bit `from` in `buf`: its bit, and whether it ends the stream.
    fn find_magic(&self, from: usize) -> Option<(usize, bool)> {
        self.finder.find(&self.buf, from)
    }

    /// Writes bits `[a, b)` of `buf` (whole blocks) out as a stream whose combined CRC is `crc`;
    /// without `crc`, no end is written (a cut-off block, for the decoder to report).
    fn emit(&mut self, level: u8, a: usize, b: usize, crc: Option<u32>) {
        self.note_start(a / 8);
        self.out.extend_from_slice(&[b'B', b'Z', b'h', level]);
        let mut w = Bits {
            out: &mut self.out,
            acc: 0,
            n: 0,
        };
        w.copy(&self.buf, a, b);
        if let Some(crc) = crc {
            w.put(EOS_MAGIC, 48);
            w.put(crc as u64, 32);
        }
        w.pad();
        // Where the next output comes from, until told otherwise: the byte holding bit `b`.
        self.note_start(b / 8);
    }

    /// Produces more output (or learns that there is none); false at the end.
    fn step(&mut self) -> io::Result<bool> {
        match self.state {
            State::Through(i) => {
                if i < self.buf.len() {
                    self.note_start(i);
                    self.out.extend_from_slice(&self.buf[i..]);
                    self.clear_buf();
                    self.state = State::Through(0);
                    return Ok(true);
                }
                self.clear_buf();
                self.state = State::Through(0);
                self.read_more()
            }
            State::Header(h) => {
                self.drop_before(h);
                // "BZh", the level, a block or end-of-stream magic, and its CRC.
                while self.buf.len() < 14 && self.read_more()? {}
                if self.buf.is_empty() {
                    return Ok(false);
                }
                let b = &self.buf;
                let header = b.len() >= 10
                    && &b[..3] == b"BZh"
                    && (b'1'..=b'9').contains(&b[3])
                    && matches!(bits(b, 32, 48), BLOCK_MAGIC | EOS_MAGIC);
                if !header {
                    self.state = State::Through(0);
                    return Ok(true);
                }
                if bits(b, 32, 48) == EOS_MAGIC {
                    // An empty stream: as it is.
                    let n = self.buf.len().min(14);
                    self.note_start(0);
                    self.out.extend_from_slice(&self.buf[..n]);
                    self.state = State::Header(n);
                    return Ok(true);
                }
                self.state = State::Block {
                    level: b[3],
                    combined: 0,
                    start: 32,
                    crc: bits(b, 80, 32) as u32,
                    scan: 80,
                };
                Ok(true)
            }
            State::Block {
                level,
                combined,
                start,
                crc,
                scan,
            } => {
                // A block start needs its CRC, randomised bit and origPtr after the magic; a
                // stream's end its CRC and the next stream's "BZh" and level (or the input's end).
                let found = self.find_magic(scan);
                let need = match found {
                    Some((p, false)) => p + 48 + 32 + 1 + 24,
                    Some((p, true)) => (p + 80).div_ceil(8) * 8 + 32,
                    None => 0,
                };
                if need > self.buf.len() * 8 && !self.eof {
                    if let Some((p, _)) = found {
                        self.set_scan(p); // found again after the read, without a rescan
                    }
                    self.read_more()?;
                    return Ok(true);
                }
                match found {
                    Some((p, false)) if need > self.buf.len() * 8 => {
                        // Cut off by the input's end: not a block start.
                        self.set_scan(p + 1);
                        Ok(true)
                    }
                    Some((p, false)) => {
                        let orig_ptr = bits(&self.buf, p + 81, 24);
                        if orig_ptr > 10 + 100_000 * u64::from(level - b'0') {
                            self.set_scan(p + 1);
                            return Ok(true);
                        }
                        self.emit(level, start, p, Some(crc));
                        self.state = State::Block {
                            level,
                            combined: combined.rotate_left(1) ^ crc,
                            start: p,
                            crc: bits(&self.buf, p + 48, 32) as u32,
                            scan: p + 48,
                        };
                        self.drop_before(p / 8);
                        Ok(true)
                    }
                    Some((p, true)) if p + 80 > self.buf.len() * 8 => {
                        // The input ends inside the end-of-stream marker: a cut-off block.
                        let end = self.buf.len() * 8;
                        self.emit(level, start, end, None);
                        self.clear_buf();
                        self.state = State::Through(0);
                        Ok(true)
                    }
                    Some((p, true)) => {
                        let next = (p + 80).div_ceil(8);
                        // The stream's end if its CRC is the blocks', or if the input ends or
                        // another stream starts after it; else block data that looks like it.
                        let stored = bits(&self.buf, p + 48, 32) as u32;
                        let whole = combined.rotate_left(1) ^ crc;
                        let at_next = &self.buf[next.min(self.buf.len())..];
                        let ends = whole == stored
                            || at_next.is_empty()
                            || (at_next.len() >= 4
                                && &at_next[..3] == b"BZh"
                                && (b'1'..=b'9').contains(&at_next[3]));
                        if !ends {
                            self.set_scan(p + 1);
                            return Ok(true);
                        }
                        let crc = if whole == stored { crc } else { !crc };
                        self.emit(level, start, p, Some(crc));
                        self.state = State::Header(next);
                        Ok(true)
                    }
                    None => {
                        // Every candidate with its bits in `buf` was looked at: go on after them.
                        let checked = (self.buf.len() * 8).saturating_sub(48) + 1;
                        self.set_scan(scan.max(checked));
                        if self.buf.len() > MAX_BLOCK_BYTES + start / 8 || !self.read_more()? {
                            // A block cut off by the input's end (or no end in sight): written
                            // without an end, the decoder fails on it; the rest passes through.
                            let end = self.buf.len() * 8;
                            self.emit(level, start, end, None);
                            self.clear_buf();
                            self.state = State::Through(0);
                        }
                        Ok(true)
                    }
                }
            }
        }
    }

    fn set_scan(&mut self, to: usize) {
        if let State::Block { scan, .. } = &mut self.state {
            *scan = to;
        }
    }
}

impl<R: BufRead> BufRead for Restream<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.out_pos >= self.out.len() {
            self.flushed += self.out.len() as u64;
            self.out.clear();
            self.out_pos = 0;
            if !self.step()? && self.out.is_empty() {
                return Ok(&[]);
            }
        }
        Ok(&self.out[self.out_pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.out_pos = (self.out_pos + amt).min(self.out.len());
    }
}

impl<R: BufRead> Read for Restream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;
    use std::io::Write;

    /// `text` as one bzip2 stream of 100 kB blocks.
    fn blocks(text: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    fn serial(raw: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        drain(bzip2::read::MultiBzDecoder::new(raw))
    }

    fn restreamed(raw: &[u8], buffer: usize) -> Vec<u8> {
        let mut out = Vec::new();
        Restream::new(io::BufReader::with_capacity(buffer, raw))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn stream_count(raw: &[u8]) -> usize {
        (0..raw.len())
            .filter(|&i| super::super::multibz::stream_starts_at(raw, i))
            .count()
    }

    #[test]
    fn every_block_becomes_a_stream_with_the_same_bytes() {
        // Two multi-block streams, an empty one and a one-block one, concatenated.
        let (a, b, c) = (text(450_000, 1), text(330_000, 2), text(5_000, 3));
        let mut raw = blocks(&a);
        raw.extend(bz(b""));
        raw.extend(blocks(&b));
        raw.extend(blocks(&c));
        let expected = [a, b, c].concat();
        assert_eq!(serial(&raw).0, expected);
        for buffer in [1, 7, 4096, 1 << 20] {
            let out = restreamed(&raw, buffer);
            // 5 + 4 + 1 blocks, and the empty stream as it was.
            assert_eq!(stream_count(&out), 11, "buffer {buffer}");
            let (decoded, err) = serial(&out);
            assert!(err.is_none(), "{err:?}");
            assert!(decoded == expected, "buffer {buffer}: decoded bytes differ");
        }
    }

    #[test]
    fn a_bad_crc_or_a_cut_still_fails_after_the_good_blocks() {
        let a = text(450_000, 4);
        let raw = blocks(&a);
        // The stored combined CRC is the 4 bytes before the last padding: flip a bit of it.
        let mut bad = raw.clone();
        let crc_at = bad.len() - 2;
        bad[crc_at] ^= 0x10;
        let (ser, ser_err) = serial(&bad);
        assert!(ser_err.is_some());
        let (out, err) = serial(&restreamed(&bad, 4096));
        assert!(err.is_some(), "a wrong stream CRC must fail");
        assert_eq!(out, ser, "the same blocks before the failure");
        // Cut inside the third block: the first two decode, then an error.
        let cut = raw.len() * 2 / 3;
        let (out, err) = serial(&restreamed(&raw[..cut], 4096));
        assert!(err.is_some(), "a cut-off block must fail");
        assert!(out.len() >= 100_000 && a.starts_with(&out), "{}", out.len());
        // Not bzip2 after a stream: passed through, and the decoder says so.
        let mut junk = raw.clone();
        junk.extend_from_slice(b"not bzip2 at all");
        let (out, _) = serial(&restreamed(&junk, 4096));
        assert_eq!(out, a);
    }

    #[test]
    fn hostile_input_fails_as_the_serial_decoder_does_and_never_adds_bytes() {
        let good = blocks(&text(250_000, 5));
        let mut cases: Vec<Vec<u8>> = vec![
            b"BZh9".to_vec(),
            b"BZh91AY&SY".to_vec(),
            b"BZh0not a stream".to_vec(),
            [
                &b"BZh9"[..],
                &[0x31, 0x41, 0x59, 0x26, 0x53, 0x59],
                &text(5000, 6),
            ]
            .concat(),
            good[..good.len() - 3].to_vec(),
            good[..good.len() - 9].to_vec(),
            [&good[..], &good[..20]].concat(),
        ];
        // The block magic repeated at every bit offset, inside a stream.
        let mut fake = b"BZh9".to_vec();
        let mut w = Bits {
            out: &mut fake,
            acc: 0,
            n: 0,
        };
        for shift in 0..64u32 {
            w.put(BLOCK_MAGIC, 48);
            w.put(u64::from(shift), 32 + shift % 7);
        }
        w.pad();
        cases.push(fake);
        let mut x = 99u64;
        for len in [10usize, 100, 5000] {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            cases.push([&good[..good.len() / 2], &noise[..]].concat());
        }
        for (i, raw) in cases.iter().enumerate() {
            let (want, want_err) = serial(raw);
            for buffer in [1, 4096] {
                let (got, err) = serial(&restreamed(raw, buffer));
                assert!(
                    want.starts_with(&got),
                    "case {i}: bytes not the serial decoder's"
                );
                // Its failures, and without one all its bytes.
                assert_eq!(
                    err.is_some(),
                    want_err.is_some(),
                    "case {i}, buffer {buffer}: {want_err:?} / {err:?}"
                );
                if err.is_none() {
                    assert_eq!(got.len(), want.len(), "case {i}, buffer {buffer}");
                }
            }
        }
    }

    #[test]
    fn the_pattern_search_finds_every_magic_the_bit_scan_finds() {
        // Noise with both magics written at every bit offset, and lookalikes that differ in one bit.
        let mut buf = Vec::new();
        let mut w = Bits {
            out: &mut buf,
            acc: 0,
            n: 0,
        };
        let mut x = 5u64;
        for i in 0..400u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            w.put(x >> 40, 3 + (i % 29) as u32);
            let magic = if i % 3 == 0 { EOS_MAGIC } else { BLOCK_MAGIC };
            w.put(
                if i % 5 == 0 {
                    magic ^ (1 << (i % 48))
                } else {
                    magic
                },
                48,
            );
        }
        w.pad();
        let fast = MagicFinder::new();
        assert!(fast.searcher.is_some(), "no SIMD search on this machine");
        let slow = MagicFinder { searcher: None };
        let (mut a, mut b) = (0, 0);
        let mut found = 0;
        loop {
            let (f, s) = (fast.find(&buf, a), slow.find(&buf, b));
            assert_eq!(f, s);
            let Some((p, _)) = f else { break };
            found += 1;
            (a, b) = (p + 1, p + 1);
        }
        assert!(found >= 320, "{found}");
    }

    #[test]
    fn a_corrupt_block_gives_none_of_its_bytes() {
        let text = text(450_000, 11);
        let raw = blocks(&text);
        // Where the text's blocks end: decode the rewritten streams one by one.
        let streams = restreamed(&raw, 4096);
        let starts: Vec<usize> = (0..streams.len())
            .filter(|&i| super::super::multibz::stream_starts_at(&streams, i))
            .chain([streams.len()])
            .collect();
        let mut ends = vec![0];
        for w in starts.windows(2) {
            let n = serial(&streams[w[0]..w[1]]).0.len();
            ends.push(ends.last().unwrap() + n);
        }
        assert_eq!(*ends.last().unwrap(), text.len());
        for at in [raw.len() / 3, raw.len() / 2, raw.len() * 4 / 5] {
            let mut bad = raw.clone();
            bad[at] ^= 0x20;
            let mut r = super::super::multibz::ParallelBz2::with_group_bytes(
                Box::new(Restream::new(io::Cursor::new(bad))),
                3,
                8192,
            );
            let (out, err) = drain(&mut r);
            assert!(err.is_some(), "byte {at}: a corrupt block must fail");
            // Whole blocks of the original text, nothing of the corrupt one.
            assert!(
                text.starts_with(&out),
                "byte {at}: bytes that are not the text's"
            );
            assert!(ends.contains(&out.len()), "byte {at}: {} bytes", out.len());
        }
    }
}
