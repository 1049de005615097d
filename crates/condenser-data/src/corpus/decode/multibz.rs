//! Parallel decoding of multi-stream bzip2 (Wikipedia's `pages-articles-multistream` dumps: about 100
//! pages per bzip2 stream, the streams concatenated), on [`super::parallel`].
//!
//! A new stream starts at a byte boundary with `BZh1`..`BZh9` followed by a block magic
//! (`0x314159265359`) or, for an empty stream, the end-of-stream magic (`0x177245385090`): 10 bytes
//! that the bit-packed inside of a stream reproduces by chance about once in 2^80 positions. Streams are
//! grouped, decoded on their own and handed out in file order (a test checks the bytes equal the
//! serial decoder's).

use std::io::{self, BufRead, Read};

use super::parallel::{Cut, Framing, ParallelDecoder};

pub use super::parallel::GROUP_BYTES;

const BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
const EOS_MAGIC: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];

/// Whether a bzip2 stream starts at `buf[i]` (needs 10 bytes there).
pub fn stream_starts_at(buf: &[u8], i: usize) -> bool {
    buf.len() >= i + 10
        && &buf[i..i + 3] == b"BZh"
        && (b'1'..=b'9').contains(&buf[i + 3])
        && (buf[i + 4..i + 10] == BLOCK_MAGIC || buf[i + 4..i + 10] == EOS_MAGIC)
}

/// The decoded bytes of a multi-stream bzip2 input, decoded by `threads` threads.
pub type ParallelBz2 = ParallelDecoder<Bz2Streams>;

/// Finds bzip2 stream starts by their 10-byte header.
#[derive(Default)]
pub struct Bz2Streams {
    /// Positions of the group already checked for a stream start (0 is one).
    scanned: usize,
}

impl Framing for Bz2Streams {
    const SHORT: &'static str = "bz2";
    const PIECE: &'static str = "bzip2 stream";

    fn cut(&mut self, group: &[u8], min: usize) -> Cut {
        if group.len() < min + 10 {
            return Cut::More;
        }
        // The first stream start at or after `min` ends this group.
        let from = self.scanned.max(1).max(min);
        let finder = memchr::memmem::Finder::new(b"BZh");
        for i in finder.find_iter(&group[from..]).map(|i| i + from) {
            if i + 10 > group.len() {
                break;
            }
            if stream_starts_at(group, i) {
                self.scanned = 1;
                return Cut::At(i);
            }
        }
        self.scanned = group.len().saturating_sub(9);
        Cut::More
    }

    /// Stream by stream; a stream that fails gives none of its bytes: its CRC did not hold, so what
    /// its decoder had handed out is not to be trusted (with every block a stream of its own,
    /// `bz2blocks`, only the failing block's bytes are dropped).
    fn decode(bytes: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::with_capacity(bytes.len() * 5);
        let mut rest = bytes;
        while !rest.is_empty() {
            let kept = out.len();
            let mut dec = bzip2::bufread::BzDecoder::new(&mut rest);
            if let Err(e) = dec.read_to_end(&mut out) {
                out.truncate(kept);
                return (out, Some(e));
            }
        }
        (out, None)
    }

    fn serial(rest: Box<dyn BufRead + Send>) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(bzip2::bufread::MultiBzDecoder::new(rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;

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
