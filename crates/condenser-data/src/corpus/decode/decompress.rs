//! Opening an input: compression is detected from magic bytes, never from the extension.
//!
//! gzip and bzip2 are read multi-stream (Wikipedia's `.bz2` dumps are concatenated streams), zstd
//! frames and xz streams likewise, so a file of several concatenated streams reads whole. With
//! several decoding threads, an input of pieces whose boundaries can be found without decoding
//! (multi-stream bzip2, multi-frame zstd, BGZF gzip) decodes in parallel, in order
//! (`parallel`); any other keeps the serial decoder.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};

/// A compression codec, as detected or as forced with `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Zstd,
    Xz,
}

impl Compression {
    /// Detects the codec from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [b'B', b'Z', b'h', ..] => Compression::Bzip2,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            // A skippable frame first: pzstd writes one before each frame.
            [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..] => Compression::Zstd,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Xz,
            _ => Compression::None,
        }
    }
}

/// Counts the bytes pulled from the raw (still compressed) source, for MB/s and progress.
pub struct CountingReader<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

const BUF: usize = 1 << 18;

/// Threads that decode an input of independent pieces (multi-stream bzip2, multi-frame zstd, BGZF
/// gzip); 1 (the default): the serial decoder.
static DECODE_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// Sets the decoding threads of this process (`prepare` and `bench prepare`: `-j`).
pub fn set_decode_threads(n: usize) {
    DECODE_THREADS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn decode_threads() -> usize {
    DECODE_THREADS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Decoder threads for a fast codec (zstd, BGZF) under `threads` segmenting threads. Measured here,
/// one thread decodes zstd at 1.2-2.2 GB/s and BGZF at 0.4-0.56 GB/s of text, against
/// ~4.4 MB/s a core for the tokenizer: one decoder keeps up with about 100 (BGZF) to 300 (zstd)
/// tokenizing cores, so one per 32 threads, which still takes decoding off the reader thread. More
/// would only add groups in flight (memory) and allocation. bzip2 (~40 MB/s, about 9 cores) gets one
/// decoder per thread.
fn fast_codec_decoders(threads: usize) -> usize {
    threads.div_ceil(32)
}

/// The parallel decoders' CPU time (counted where they run).
pub use super::parallel::{add_decode_cpu, decode_cpu};

/// Wraps a raw byte source in the decoder its magic bytes call for, counting raw bytes into `counter`.
pub fn decoded(
    raw: Box<dyn Read + Send>,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Compression, Box<dyn BufRead + Send>)> {
    decoded_with(raw, counter, decode_threads())
}

/// [`decoded`] with `threads` decoding threads (tests set it here, not process-wide).
fn decoded_with(
    raw: Box<dyn Read + Send>,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: usize,
) -> Result<(Compression, Box<dyn BufRead + Send>)> {
    let mut raw = BufReader::with_capacity(
        BUF,
        CountingReader {
            inner: raw,
            count: counter,
        },
    );
    let head = raw.fill_buf().context("cannot read")?;
    let codec = Compression::sniff(head);
    let reader: Box<dyn BufRead + Send> = match codec {
        Compression::None => Box::new(raw),
        // BGZF: member boundaries are in the headers. Plain gzip: serial (members cannot be found
        // without inflating).
        Compression::Gzip if threads > 1 && super::bgzf::is_bgzf(head) => Box::new(
            super::bgzf::ParallelBgzf::new(Box::new(raw), fast_codec_decoders(threads)),
        ),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            BUF,
            flate2::bufread::MultiGzDecoder::new(raw),
        )),
        // Several threads: every block becomes a stream of its own (`bz2blocks`), and the streams
        // decode in parallel, in order: a single-stream file (what `bzip2 FILE` writes) too.
        Compression::Bzip2 if threads > 1 => {
            let blocks = super::bz2blocks::Restream::new(raw);
            let offsets = blocks.input_offsets();
            Box::new(super::multibz::ParallelBz2::with_input_offsets(
                Box::new(blocks),
                threads,
                offsets,
            ))
        }
        Compression::Bzip2 => Box::new(BufReader::with_capacity(
            BUF,
            bzip2::bufread::MultiBzDecoder::new(raw),
        )),
        // Several frames (seen in the first few MB): decoded in parallel; one frame: serial. The bytes
        // read to decide are read again.
        Compression::Zstd if threads > 1 => {
            let (head, multi) =
                super::zstdframes::multi_frame_lookahead(&mut raw).context("cannot read")?;
            let rest = io::Cursor::new(head).chain(raw);
            if multi {
                Box::new(super::zstdframes::ParallelZstd::new(
                    Box::new(rest),
                    fast_codec_decoders(threads),
                ))
            } else {
                Box::new(BufReader::with_capacity(
                    BUF,
                    zstd::stream::read::Decoder::with_buffer(rest)
                        .context("cannot start the zstd decoder")?,
                ))
            }
        }
        Compression::Zstd => Box::new(BufReader::with_capacity(
            BUF,
            zstd::stream::read::Decoder::with_buffer(raw)
                .context("cannot start the zstd decoder")?,
        )),
        Compression::Xz => Box::new(BufReader::with_capacity(
            BUF,
            liblzma::bufread::XzDecoder::new_multi_decoder(raw),
        )),
    };
    Ok((codec, reader))
}

/// Opens a file (or stdin for `-`) and decodes it.
pub fn open(
    path: &Path,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Compression, Box<dyn BufRead + Send>)> {
    open_with(path, counter, |raw| raw)
}

/// As [`open`], the raw source wrapped by `wrap` first (`ahead` counts its bytes so).
pub(super) fn open_with(
    path: &Path,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    wrap: impl FnOnce(Box<dyn Read + Send>) -> Box<dyn Read + Send>,
) -> Result<(Compression, Box<dyn BufRead + Send>)> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("{}: cannot open", path.display()))?)
    };
    decoded(wrap(raw), counter).with_context(|| path.display().to_string())
}

/// As [`open`], decoding on the calling thread: for a look at the head of an input that may not be
/// read on (a partition of a dump reads only its own streams), where parallel decoders would decode
/// megabytes ahead for nothing.
pub fn open_serial(
    path: &Path,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(Compression, Box<dyn BufRead + Send>)> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    decoded_with(Box::new(file), counter, 1).with_context(|| path.display().to_string())
}

/// Reads up to `n` bytes of the decoded stream without consuming them.
pub fn peek(reader: &mut dyn BufRead, n: usize) -> io::Result<Vec<u8>> {
    // fill_buf returns what one read gave; decoders may hand out small pieces, so gather into a Vec and
    // chain it back in front by the caller (see `Peeked`).
    let mut head = Vec::with_capacity(n);
    while head.len() < n {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = buf.len().min(n - head.len());
        head.extend_from_slice(&buf[..take]);
        reader.consume(take);
    }
    Ok(head)
}

/// A stream whose first bytes were peeked and are served again before the rest.
pub fn unpeek(head: Vec<u8>, rest: Box<dyn BufRead + Send>) -> Box<dyn BufRead + Send> {
    Box::new(Unpeeked { head, at: 0, rest })
}

/// The head, then the rest's own buffer: no second buffer in front, so no byte of the rest is
/// copied once more on its way to the parser (a `BufReader` over `Cursor::chain` copied them all).
struct Unpeeked {
    head: Vec<u8>,
    /// Bytes of `head` consumed.
    at: usize,
    rest: Box<dyn BufRead + Send>,
}

impl Read for Unpeeked {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

impl BufRead for Unpeeked {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at < self.head.len() {
            return Ok(&self.head[self.at..]);
        }
        self.rest.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if self.at < self.head.len() {
            self.at = (self.at + amt).min(self.head.len());
            if self.at == self.head.len() {
                self.head = Vec::new();
                self.at = 0;
            }
        } else {
            self.rest.consume(amt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;
    use std::io::Write;

    fn roundtrip(data: &[u8]) -> Vec<(Compression, Vec<u8>)> {
        let mut out = Vec::new();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        out.push(gz.finish().unwrap());
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(data).unwrap();
        out.push(bz.finish().unwrap());
        out.push(zstd::encode_all(data, 3).unwrap());
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(data).unwrap();
        out.push(xz.finish().unwrap());
        out.push(data.to_vec());
        out.into_iter()
            .map(|bytes| {
                let (c, mut r) =
                    decoded(Box::new(io::Cursor::new(bytes)), Default::default()).unwrap();
                let mut s = Vec::new();
                r.read_to_end(&mut s).unwrap();
                (c, s)
            })
            .collect()
    }

    #[test]
    fn every_codec_is_detected_and_decoded() {
        let data = b"hello\tworld\nsecond line\n".repeat(100);
        let got = roundtrip(&data);
        let codecs: Vec<_> = got.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codecs,
            [
                Compression::Gzip,
                Compression::Bzip2,
                Compression::Zstd,
                Compression::Xz,
                Compression::None
            ]
        );
        for (c, bytes) in got {
            assert_eq!(bytes, data, "{c:?}");
        }
    }

    #[test]
    fn zstd_that_starts_with_a_skippable_frame_is_zstd() {
        let mut pz = 0x184D_2A50u32.to_le_bytes().to_vec();
        pz.extend(4u32.to_le_bytes());
        pz.extend(7u32.to_le_bytes());
        pz.extend(zstd::encode_all(&b"pzstd\n"[..], 3).unwrap());
        for threads in [1, 3] {
            assert_eq!(
                decode_with(pz.clone(), threads),
                (Compression::Zstd, b"pzstd\n".to_vec())
            );
        }
    }

    #[test]
    fn concatenated_streams_read_whole() {
        let mut cat = Vec::new();
        for part in [&b"first\n"[..], b"second\n"] {
            let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            bz.write_all(part).unwrap();
            cat.extend(bz.finish().unwrap());
        }
        let (_, mut r) = decoded(Box::new(io::Cursor::new(cat)), Default::default()).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "first\nsecond\n");
    }

    fn decode_with(bytes: Vec<u8>, threads: usize) -> (Compression, Vec<u8>) {
        let (c, mut r) = decoded_with(
            Box::new(io::Cursor::new(bytes)),
            Default::default(),
            threads,
        )
        .unwrap();
        let mut s = Vec::new();
        r.read_to_end(&mut s).unwrap();
        (c, s)
    }

    /// With several threads: multi-frame zstd and BGZF decode in parallel, a single zstd frame and
    /// plain (multi-member) gzip keep the serial decoder; all give the serial decoder's bytes.
    #[test]
    fn every_layout_decodes_alike_with_several_threads() {
        let lines: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                format!("line {i} of some text\n")
                    .repeat(i % 7 + 1)
                    .into_bytes()
            })
            .collect();
        let data = lines.concat();
        let (mut zstd_frames, mut bgzf, mut gzip_members) = (Vec::new(), Vec::new(), Vec::new());
        for part in lines.chunks(30) {
            let part = part.concat();
            zstd_frames.extend(zstd::encode_all(&part[..], 3).unwrap());
            bgzf.extend(bgzf_member(&part));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&part).unwrap();
            gzip_members.extend(gz.finish().unwrap());
        }
        bgzf.extend(bgzf_member(b""));
        let one_frame = zstd::encode_all(&data[..], 3).unwrap();
        for threads in [1, 2, 5] {
            for (name, bytes) in [
                ("zstd frames", &zstd_frames),
                ("one zstd frame", &one_frame),
                ("bgzf", &bgzf),
                ("gzip members", &gzip_members),
            ] {
                let (_, out) = decode_with(bytes.clone(), threads);
                assert!(
                    out == data,
                    "{name}, {threads} threads: decoded bytes differ"
                );
            }
        }
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_short_read() {
        let data = b"some text that compresses\n".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let full = gz.finish().unwrap();
        let cut = full[..full.len() / 2].to_vec();
        let (_, mut r) = decoded(Box::new(io::Cursor::new(cut)), Default::default()).unwrap();
        let mut s = Vec::new();
        assert!(r.read_to_end(&mut s).is_err());
    }

    #[test]
    fn a_cut_single_stream_bzip2_reports_offsets_of_the_file() {
        // One stream of 100 kB blocks, cut inside its third block: the decoder reads it with every
        // block rewritten as a stream, and the error still names bytes of the file.
        let text = text(450_000, 9);
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(1));
        e.write_all(&text).unwrap();
        let raw = e.finish().unwrap();
        let cut = raw.len() * 2 / 3;
        let (_, mut r) = decoded_with(
            Box::new(io::Cursor::new(raw[..cut].to_vec())),
            Default::default(),
            3,
        )
        .unwrap();
        let (out, err) = drain(&mut r);
        assert!(
            text.starts_with(&out) && out.len() >= 200_000,
            "{}",
            out.len()
        );
        let err = err.expect("a cut stream is an error").to_string();
        let range = err
            .split("compressed bytes ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("{err}"));
        let (a, b) = range.split_once("..").unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        // The group ends where the file does; it starts at a block's first byte (after the
        // stream's 4-byte header).
        assert_eq!(b, cut, "{err}");
        assert!((4..cut).contains(&a), "{err}");
    }
}
