//! Parallel decoding of multi-frame zstd (`pzstd`, the seekable format, concatenated files), on
//! [`super::parallel`].
//!
//! Frame boundaries are found without decoding by walking headers (RFC 8878): a frame header gives
//! the header's length, then each block's 3-byte header gives its compressed length, the last block
//! is flagged, and a checksum may follow. Skippable frames carry their length. A single-frame file
//! (what `zstd` writes, with or without `-T0`) cannot be split: [`multi_frame_lookahead`] sends it to
//! the serial decoder before any thread starts.

use std::io::{self, BufRead, Read};

use super::parallel::{Cut, Framing, ParallelDecoder};

/// The decoded bytes of a multi-frame zstd input, decoded by `threads` threads.
pub type ParallelZstd = ParallelDecoder<ZstdFrames>;

const MAGIC: u32 = 0xFD2F_B528;

/// Compressed bytes read ahead to see whether the first frame ends (and another follows).
pub const LOOKAHEAD: usize = 8 << 20;

/// Where the walk through frames stands, as positions in the current group.
#[derive(Debug, Clone, Copy)]
enum Walk {
    /// A frame (or skippable frame) starts here.
    Frame(usize),
    /// A block header of a frame starts here; `checksum`: 4 bytes follow the last block.
    Block { at: usize, checksum: bool },
}

/// Finds zstd frame boundaries by walking frame and block headers.
pub struct ZstdFrames {
    walk: Walk,
}

impl Default for ZstdFrames {
    fn default() -> Self {
        ZstdFrames {
            walk: Walk::Frame(0),
        }
    }
}

/// One step of the walk.
enum Step {
    /// The walk moved on.
    To(Walk),
    /// The bytes of the next header are not there yet.
    More,
    /// Not a zstd frame (or a reserved value): boundaries cannot be found from here.
    Bad,
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// Takes one step from `walk` over `buf`.
fn step(buf: &[u8], walk: Walk) -> Step {
    match walk {
        Walk::Frame(p) => {
            let Some(magic) = buf.get(p..p + 4) else {
                return Step::More;
            };
            let magic = le(magic) as u32;
            if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                // Skippable frame: magic, 4-byte length, that many bytes.
                let Some(size) = buf.get(p + 4..p + 8) else {
                    return Step::More;
                };
                return Step::To(Walk::Frame(p + 8 + le(size) as usize));
            }
            if magic != MAGIC {
                return Step::Bad;
            }
            let Some(&fhd) = buf.get(p + 4) else {
                return Step::More;
            };
            if fhd & 0x08 != 0 {
                return Step::Bad; // reserved bit
            }
            let single_segment = fhd & 0x20 != 0;
            let fcs = match fhd >> 6 {
                0 => usize::from(single_segment),
                1 => 2,
                2 => 4,
                _ => 8,
            };
            let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
            let window = usize::from(!single_segment);
            Step::To(Walk::Block {
                at: p + 5 + window + dict + fcs,
                checksum: fhd & 0x04 != 0,
            })
        }
        Walk::Block { at, checksum } => {
            let Some(header) = buf.get(at..at + 3) else {
                return Step::More;
            };
            let header = le(header) as usize;
            let size = header >> 3;
            let content = match (header >> 1) & 3 {
                0 | 2 => size, // raw, compressed
                1 => 1,        // RLE: one byte, repeated `size` times
                _ => return Step::Bad,
            };
            let next = at + 3 + content;
            if header & 1 == 1 {
                Step::To(Walk::Frame(next + if checksum { 4 } else { 0 }))
            } else {
                Step::To(Walk::Block { at: next, checksum })
            }
        }
    }
}

impl Framing for ZstdFrames {
    const SHORT: &'static str = "zstd";
    const PIECE: &'static str = "zstd frame";

    fn cut(&mut self, group: &[u8], min: usize) -> Cut {
        loop {
            if let Walk::Frame(p) = self.walk {
                if p > group.len() {
                    return Cut::More; // a skippable frame or the last block runs past the bytes so far
                }
                if p >= min {
                    self.walk = Walk::Frame(0);
                    return Cut::At(p);
                }
            }
            match step(group, self.walk) {
                Step::To(w) => self.walk = w,
                Step::More => return Cut::More,
                Step::Bad => {
                    // From the start of the frame that does not parse (a boundary) on.
                    let at = match self.walk {
                        Walk::Frame(p) => p,
                        Walk::Block { .. } => self.frame_start(group),
                    };
                    return Cut::Serial(at);
                }
            }
        }
    }

    fn decode(bytes: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        let err = match zstd::stream::read::Decoder::with_buffer(bytes) {
            Ok(mut dec) => dec.read_to_end(&mut out).err(),
            Err(e) => Some(e),
        };
        (out, err)
    }

    fn serial(rest: Box<dyn BufRead + Send>) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(rest)?))
    }
}

impl ZstdFrames {
    /// The start of the frame the walk is inside: walks again from the group's start (rare: only
    /// when a reserved block type is met).
    fn frame_start(&self, group: &[u8]) -> usize {
        let (mut walk, mut start) = (Walk::Frame(0), 0);
        loop {
            if let Walk::Frame(p) = walk {
                start = p;
            }
            match step(group, walk) {
                Step::To(w) => walk = w,
                _ => return start,
            }
        }
    }
}

/// Reads up to [`LOOKAHEAD`] compressed bytes from `raw`, far enough to see whether the first zstd
/// data frame ends and more bytes follow: then the input has several frames and decodes in parallel.
/// Returns the bytes read (to be read again before the rest of `raw`) and that verdict.
pub fn multi_frame_lookahead(raw: &mut dyn BufRead) -> io::Result<(Vec<u8>, bool)> {
    let mut head = Vec::new();
    let mut walk = Walk::Frame(0);
    let mut data_frames = 0;
    loop {
        // Walk as far as the bytes so far allow.
        loop {
            if let Walk::Frame(p) = walk {
                if p > head.len() {
                    break;
                }
                if data_frames > 0 && p < head.len() {
                    return Ok((head, true));
                }
            }
            match step(&head, walk) {
                Step::To(w) => {
                    if matches!((walk, w), (Walk::Block { .. }, Walk::Frame(_))) {
                        data_frames += 1;
                    }
                    walk = w;
                }
                Step::More => break,
                Step::Bad => return Ok((head, false)),
            }
        }
        if head.len() >= LOOKAHEAD {
            return Ok((head, false));
        }
        let buf = raw.fill_buf()?;
        if buf.is_empty() {
            return Ok((head, false));
        }
        let n = buf.len().min(LOOKAHEAD - head.len());
        head.extend_from_slice(&buf[..n]);
        raw.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;

    fn skippable(payload: &[u8], n: u8) -> Vec<u8> {
        let mut f = (0x184D_2A50u32 + u32::from(n)).to_le_bytes().to_vec();
        f.extend((payload.len() as u32).to_le_bytes());
        f.extend(payload);
        f
    }

    /// A frame of one raw block (no FCS, no checksum, single segment off, window descriptor).
    fn raw_frame(content: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_le_bytes().to_vec();
        f.push(0x00); // FHD: no FCS, not single segment, no checksum, no dict
        f.push(0x58); // window descriptor: 2^(10 + 11) bytes
        let h = ((content.len() as u32) << 3) | 1; // last, raw
        f.extend(&h.to_le_bytes()[..3]);
        f.extend(content);
        f
    }

    /// A frame of an RLE block then a raw block, single segment with a 1-byte FCS, checksum flagged.
    fn rle_frame(byte: u8, times: usize, tail: &[u8]) -> Vec<u8> {
        let mut content = vec![byte; times];
        content.extend(tail);
        assert!(content.len() < 256);
        let mut f = MAGIC.to_le_bytes().to_vec();
        f.push(0x24); // FHD: single segment, checksum, FCS field 1 byte
        f.push(content.len() as u8);
        let rle = ((times as u32) << 3) | (1 << 1);
        f.extend(&rle.to_le_bytes()[..3]);
        f.push(byte);
        let raw = ((tail.len() as u32) << 3) | 1;
        f.extend(&raw.to_le_bytes()[..3]);
        f.extend(tail);
        let hash = xxhash64(&content) as u32;
        f.extend(hash.to_le_bytes());
        f
    }

    /// XXH64 with seed 0 (the frame checksum is its low 32 bits); only for the test's short inputs.
    fn xxhash64(data: &[u8]) -> u64 {
        const P1: u64 = 0x9E37_79B1_85EB_CA87;
        const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
        const P3: u64 = 0x1656_67B1_9E37_79F9;
        const P4: u64 = 0x85EB_CA77_C2B2_AE63;
        const P5: u64 = 0x27D4_EB2F_1656_67C5;
        let round = |acc: u64, lane: u64| {
            acc.wrapping_add(lane.wrapping_mul(P2))
                .rotate_left(31)
                .wrapping_mul(P1)
        };
        let merge = |acc: u64, v: u64| (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4);
        let mut rest = data;
        let mut h = if data.len() >= 32 {
            let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
            while rest.len() >= 32 {
                for (i, acc) in v.iter_mut().enumerate() {
                    *acc = round(*acc, le(&rest[i * 8..i * 8 + 8]));
                }
                rest = &rest[32..];
            }
            let mut h = v[0]
                .rotate_left(1)
                .wrapping_add(v[1].rotate_left(7))
                .wrapping_add(v[2].rotate_left(12))
                .wrapping_add(v[3].rotate_left(18));
            for lane in v {
                h = merge(h, lane);
            }
            h
        } else {
            P5
        };
        h = h.wrapping_add(data.len() as u64);
        while rest.len() >= 8 {
            h = (h ^ round(0, le(&rest[..8])))
                .rotate_left(27)
                .wrapping_mul(P1)
                .wrapping_add(P4);
            rest = &rest[8..];
        }
        if rest.len() >= 4 {
            h = (h ^ le(&rest[..4]).wrapping_mul(P1))
                .rotate_left(23)
                .wrapping_mul(P2)
                .wrapping_add(P3);
            rest = &rest[4..];
        }
        for &b in rest {
            h = (h ^ u64::from(b).wrapping_mul(P5))
                .rotate_left(11)
                .wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }

    /// Many frames (compressed with and without checksum and content size, empty ones, large ones),
    /// skippable frames between them, and hand-made raw and RLE frames.
    fn multi_frame() -> (Vec<u8>, Vec<u8>) {
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        for i in 0..120u64 {
            let len = match i % 23 {
                0 => 0,
                1 => 300_000,
                _ => (i as usize * 7919) % 6000,
            };
            let part = text(len, i);
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.include_checksum(i % 2 == 0).unwrap();
            enc.include_contentsize(i % 3 != 0).unwrap();
            if i % 3 != 0 {
                enc.set_pledged_src_size(Some(len as u64)).unwrap();
            }
            std::io::Write::write_all(&mut enc, &part).unwrap();
            raw.extend(enc.finish().unwrap());
            out.extend(&part);
            match i % 10 {
                4 => raw.extend(skippable(b"seek table, say", (i % 16) as u8)),
                5 => {
                    raw.extend(raw_frame(b"a raw block\n"));
                    out.extend(b"a raw block\n");
                }
                6 => {
                    raw.extend(rle_frame(b'z', 40, b" and raw\n"));
                    out.extend([b'z'; 40]);
                    out.extend(b" and raw\n");
                }
                _ => {}
            }
        }
        (raw, out)
    }

    fn serial(raw: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let err = zstd::stream::read::Decoder::new(raw)
            .unwrap()
            .read_to_end(&mut out)
            .err();
        (out, err)
    }

    fn parallel(raw: Vec<u8>, threads: usize, group: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut r = ParallelZstd::with_group_bytes(Box::new(io::Cursor::new(raw)), threads, group);
        drain(&mut r)
    }

    #[test]
    fn hand_made_frames_decode_with_the_zstd_library() {
        let mut raw = skippable(b"", 0);
        raw.extend(raw_frame(b"hello\n"));
        raw.extend(rle_frame(b'x', 7, b"yz"));
        let (out, err) = serial(&raw);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, b"hello\nxxxxxxxyz");
    }

    #[test]
    fn parallel_decoding_equals_the_serial_decoder() {
        let (raw, text) = multi_frame();
        let (s, err) = serial(&raw);
        assert!(err.is_none(), "{err:?}");
        assert!(s == text);
        assert!(raw.len() > 50 * 8192, "{}", raw.len());
        for threads in [1, 2, 5] {
            for group in [1, 8192] {
                let (out, err) = parallel(raw.clone(), threads, group);
                assert!(err.is_none(), "{err:?}");
                assert!(
                    out == text,
                    "{threads} threads, {group}: decoded bytes differ"
                );
            }
        }
    }

    #[test]
    fn the_walk_finds_every_frame() {
        let (raw, _) = multi_frame();
        let mut f = ZstdFrames::default();
        let (mut at, mut pieces) = (0, 0);
        while let Cut::At(i) = f.cut(&raw[at..], 1) {
            at += i;
            pieces += 1;
        }
        assert_eq!(at, raw.len());
        assert!(pieces >= 120 + 12 + 12 + 12, "{pieces}");
    }

    #[test]
    fn a_truncated_input_keeps_every_complete_frame_and_reports_where() {
        let (raw, _) = multi_frame();
        check_truncated::<ZstdFrames>(&raw, "zstd frame", |r| parallel(r, 3, 8192), serial);
    }

    #[test]
    fn trailing_garbage_and_one_huge_frame_fall_back_to_the_serial_decoder() {
        let (mut raw, _) = multi_frame();
        let big = text(2_000_000, 5);
        raw.extend(zstd::encode_all(&big[..], 1).unwrap());
        let (s, err) = serial(&raw);
        assert!(err.is_none(), "{err:?}");
        // Groups of 1000 bytes: the big frame is far over 64 groups.
        let (out, err) = parallel(raw.clone(), 3, 1000);
        assert!(err.is_none(), "{err:?}");
        assert!(out == s);
        raw.extend(b"not zstd at all");
        let (s, serial_err) = serial(&raw);
        let (out, err) = parallel(raw, 3, 1000);
        assert!(serial_err.is_some());
        assert!(out == s);
        let err = err.expect("garbage is an error").to_string();
        assert!(err.contains("compressed byte"), "{err}");
    }

    #[test]
    fn only_a_multi_frame_input_is_split() {
        let (raw, _) = multi_frame();
        // Read as a file is: a buffer at a time; it stops soon after the first frame.
        let mut file = io::BufReader::with_capacity(4096, &raw[..]);
        let (head, multi) = multi_frame_lookahead(&mut file).unwrap();
        assert!(multi && raw.starts_with(&head) && head.len() <= 4096);
        // One frame, however large, and a short file of one frame: serial.
        let one = zstd::encode_all(&text(3_000_000, 1)[..], 1).unwrap();
        let (head, multi) = multi_frame_lookahead(&mut &one[..]).unwrap();
        assert!(!multi && head == one);
        let small = zstd::encode_all(&b"tiny"[..], 1).unwrap();
        let (head, multi) = multi_frame_lookahead(&mut &small[..]).unwrap();
        assert!(!multi && head == small);
        // A leading skippable frame (as pzstd writes) is not a data frame.
        let mut pz = skippable(&[0; 4], 2);
        pz.extend(&small);
        assert!(!multi_frame_lookahead(&mut &pz[..]).unwrap().1);
        pz.extend(skippable(&[0; 4], 2));
        pz.extend(&small);
        assert!(multi_frame_lookahead(&mut &pz[..]).unwrap().1);
    }
}
