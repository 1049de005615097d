//! Partitions of one multi-stream bzip2 MediaWiki dump (`--partition K/N` on Wikipedia's
//! `pages-articles-multistream.xml.bz2`): partition K decodes only the bzip2 streams that start in
//! bytes `[size*K/N, size*(K+1)/N)` of the compressed file.
//!
//! The cuts move forward to the next stream start, found by scanning the compressed bytes for a stream
//! header (see [`crate::corpus::decode::multibz::stream_starts_at`]) or read from the dump's `-index.txt.bz2`
//! (`--index`). The rule, as for line files: **a page belongs to the partition whose streams hold the
//! first byte of its `<page>` tag.** So partition K (K > 0) drops the decoded bytes before its first
//! `<page>` (the tail of a page that began earlier), and reads on into the next partition's streams to
//! finish a page that began in its own, stopping at the next `<page>`. Wikipedia's streams hold whole
//! pages, so the reading on never happens there; it makes any multi-stream dump safe. Partition 0
//! keeps the dump's header; the others get a bare `<mediawiki>` root before their first page (which
//! the dump's closing tag, in the last partition, closes).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::corpus::decode::decompress;
use crate::corpus::decode::multibz::stream_starts_at;

/// The compressed bytes `[start, end)` of partition `k` of `n`: both cuts at stream starts.
pub fn stream_cut(
    path: &Path,
    size: u64,
    [k, n]: [u32; 2],
    index: Option<&[u64]>,
) -> Result<(u64, u64)> {
    let (s, e) = super::byte_ranges::cut(size, k, n);
    let at = |pos: u64| -> Result<u64> {
        match index {
            Some(offsets) => {
                let i = offsets.partition_point(|&o| o < pos);
                let Some(&o) = offsets.get(i) else {
                    return Ok(size);
                };
                check_stream_start(path, o).map(|()| o)
            }
            None => next_stream_start(path, pos, size).with_context(|| {
                format!(
                    "{}: finding the bzip2 stream after byte {pos}",
                    path.display()
                )
            }),
        }
    };
    let start = if k == 0 { 0 } else { at(s)? };
    let end = if k + 1 == n { size } else { at(e)? };
    Ok((start, end.max(start)))
}

/// The offset of the first stream that starts at or after `pos` (the file's size if none).
fn next_stream_start(path: &Path, pos: u64, size: u64) -> io::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(pos))?;
    let mut buf = vec![0u8; 1 << 20];
    // Bytes kept from the last block: a header may straddle two reads.
    let mut kept = 0usize;
    let mut base = pos; // file offset of buf[0]
    let finder = memchr::memmem::Finder::new(b"BZh");
    loop {
        let n = file.read(&mut buf[kept..])?;
        let len = kept + n;
        let at_eof = n == 0;
        for i in finder.find_iter(&buf[..len]) {
            if i + 10 > len {
                break;
            }
            if stream_starts_at(&buf[..len], i) {
                return Ok(base + i as u64);
            }
        }
        if at_eof {
            return Ok(size);
        }
        // Keep the last 9 bytes: a header starting there is checked with the next read.
        let keep = len.min(9);
        buf.copy_within(len - keep..len, 0);
        base += (len - keep) as u64;
        kept = keep;
    }
}

fn check_stream_start(path: &Path, offset: u64) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut head = [0u8; 10];
    let ok = file.read_exact(&mut head).is_ok() && stream_starts_at(&head, 0);
    if !ok {
        bail!(
            "{}: no bzip2 stream starts at byte {offset}, where the --index file says one does (is it this dump's index?)",
            path.display()
        );
    }
    Ok(())
}

/// The stream offsets of a Wikipedia multistream index (`offset:page_id:title` lines, bzip2 or not),
/// sorted and without repeats.
pub fn load_index(path: &Path) -> Result<Vec<u64>> {
    let counter = Arc::new(AtomicU64::new(0));
    let (_, mut reader) = decompress::open(path, counter)?;
    let mut offsets = Vec::new();
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: read failed after line {number}", path.display()))?
            == 0
        {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            continue;
        }
        let field = text.split(|&b| b == b':').next().unwrap_or_default();
        let offset: u64 = std::str::from_utf8(field)
            .ok()
            .and_then(|f| f.parse().ok())
            .with_context(|| {
                format!(
                    "{}:{number}: expected `offset:page_id:title`, found {:?}",
                    path.display(),
                    String::from_utf8_lossy(&text[..text.len().min(80)])
                )
            })?;
        if offsets.last() != Some(&offset) {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    offsets.dedup();
    if offsets.is_empty() {
        bail!("{}: an empty --index file", path.display());
    }
    Ok(offsets)
}

/// Decoded bytes of the streams in compressed bytes `[start, end)` of `path`, raw bytes counted into
/// `counter`.
pub fn open_streams(
    path: &Path,
    start: u64,
    end: u64,
    counter: Arc<AtomicU64>,
) -> Result<Box<dyn BufRead + Send>> {
    if start >= end {
        return Ok(Box::new(io::empty()));
    }
    let mut file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    file.seek(SeekFrom::Start(start))?;
    let (_, reader) = decompress::decoded(Box::new(file.take(end - start)), counter)
        .with_context(|| format!("{} (bytes {start}..{end})", path.display()))?;
    Ok(Box::new(FromOffset {
        inner: reader,
        start,
    }))
}

/// The decoders number compressed bytes from where they started: their errors get the partition's
/// first byte in the file, so that the offsets can be found.
struct FromOffset {
    inner: Box<dyn BufRead + Send>,
    start: u64,
}

impl BufRead for FromOffset {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let start = self.start;
        self.inner.fill_buf().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e} (compressed offsets counted from this partition's first stream, byte {start} of the file)"),
            )
        })
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}

impl Read for FromOffset {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

enum State {
    /// Dropping the tail of a page that began in an earlier partition, up to the first `<page>`.
    Skipping,
    /// Inside this partition's own streams.
    Own,
    /// Past them: finishing a page that began inside them, up to the next `<page>`.
    Finishing,
    Done,
}

/// The decoded XML of one partition, as the rule in the module header cuts it.
pub struct PageRange {
    own: Box<dyn BufRead + Send>,
    /// The file and the offset of the streams after this partition's, opened only when a page has to
    /// be finished there.
    after: Option<(PathBuf, u64)>,
    rest: Option<Box<dyn BufRead + Send>>,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes held back from the last read: the start of a `<page>` tag split across reads.
    held: Vec<u8>,
}

const PAGE_TAG: &[u8] = b"<page>";

impl PageRange {
    /// `own`: the decoded streams of this partition; `skip_head`: whether it starts after the file's
    /// start (K > 0); `after`: where the streams that follow start, if any.
    fn new(own: Box<dyn BufRead + Send>, skip_head: bool, after: Option<(PathBuf, u64)>) -> Self {
        PageRange {
            own,
            after,
            rest: None,
            state: if skip_head {
                State::Skipping
            } else {
                State::Own
            },
            buf: Vec::new(),
            pos: 0,
            held: Vec::new(),
        }
    }

    /// Reads the next piece of `src` after the held bytes, and whether `src` has ended.
    fn next_piece(src: &mut dyn BufRead, held: &mut Vec<u8>) -> io::Result<(Vec<u8>, bool)> {
        let mut piece = std::mem::take(held);
        let got = src.fill_buf()?;
        let n = got.len();
        piece.extend_from_slice(got);
        src.consume(n);
        Ok((piece, n == 0))
    }

    /// How many bytes at the end of `piece` could begin a `<page>` tag completed by the next read.
    fn partial_tag(piece: &[u8]) -> usize {
        (1..PAGE_TAG.len())
            .rev()
            .find(|&k| piece.len() >= k && piece.ends_with(&PAGE_TAG[..k]))
            .unwrap_or(0)
    }

    fn refill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.pos = 0;
        while self.buf.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Skipping => {
                    let (piece, ended) = Self::next_piece(&mut *self.own, &mut self.held)?;
                    match memchr::memmem::find(&piece, PAGE_TAG) {
                        Some(i) => {
                            // Under a root of its own, so the dump's closing tag closes it.
                            self.buf.extend_from_slice(b"<mediawiki>\n");
                            self.buf.extend_from_slice(&piece[i..]);
                            self.state = State::Own;
                        }
                        // No page begins in this partition.
                        None if ended => self.state = State::Done,
                        None => {
                            let k = Self::partial_tag(&piece);
                            self.held.extend_from_slice(&piece[piece.len() - k..]);
                        }
                    }
                }
                State::Own => {
                    let got = self.own.fill_buf()?;
                    if got.is_empty() {
                        self.state = State::Finishing;
                        continue;
                    }
                    let n = got.len();
                    self.buf.extend_from_slice(got);
                    self.own.consume(n);
                }
                State::Finishing => {
                    if self.rest.is_none() {
                        match self.after.take() {
                            Some((path, at)) => self.rest = Some(open_rest(&path, at)?),
                            None => {
                                self.state = State::Done;
                                continue;
                            }
                        }
                    }
                    let rest = self.rest.as_mut().expect("opened above");
                    let (piece, ended) = Self::next_piece(&mut **rest, &mut self.held)?;
                    match memchr::memmem::find(&piece, PAGE_TAG) {
                        Some(i) => {
                            self.buf.extend_from_slice(&piece[..i]);
                            self.state = State::Done;
                        }
                        None if ended => {
                            self.buf.extend_from_slice(&piece);
                            self.state = State::Done;
                        }
                        None => {
                            let k = Self::partial_tag(&piece);
                            self.buf.extend_from_slice(&piece[..piece.len() - k]);
                            self.held.extend_from_slice(&piece[piece.len() - k..]);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl BufRead for PageRange {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            self.refill()?;
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

impl Read for PageRange {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

/// The decoded streams from compressed byte `at` on, decoded serially and lazily: only as much as
/// it takes to find the next `<page>` (one bzip2 block of a Wikipedia dump), where the parallel decoder
/// would decode groups ahead.
fn open_rest(path: &Path, at: u64) -> io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(at))?;
    let decoder = bzip2::bufread::MultiBzDecoder::new(BufReader::new(file));
    Ok(Box::new(BufReader::with_capacity(1 << 16, decoder)))
}

/// Opens partition `[k, n]` of a multi-stream bzip2 dump of `size` bytes; returns its reader and the
/// compressed bytes it owns. Raw bytes of its own streams are counted into `counter` (the reading on
/// is not).
pub fn open_partition(
    path: &Path,
    size: u64,
    [k, n]: [u32; 2],
    index: Option<&[u64]>,
    counter: Arc<AtomicU64>,
) -> Result<(PageRange, (u64, u64))> {
    let (start, end) = stream_cut(path, size, [k, n], index)?;
    let own = open_streams(path, start, end, counter)?;
    let after = (end < size).then(|| (path.to_path_buf(), end));
    Ok((PageRange::new(own, k > 0, after), (start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;

    /// A dump whose streams cut pages anywhere (not only between them), to check the rule.
    fn awkward_dump(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let mut xml = b"<mediawiki>\n  <siteinfo>x</siteinfo>\n".to_vec();
        for i in 0..60 {
            xml.extend(
                format!(
                    "  <page>\n    <title>T{i}</title>\n    <text>{}</text>\n  </page>\n",
                    "word ".repeat(i * 7)
                )
                .as_bytes(),
            );
        }
        xml.extend(b"</mediawiki>\n");
        // Streams of 97 bytes: cuts fall inside tags, inside `<page>` itself, anywhere.
        let raw: Vec<u8> = xml.chunks(97).flat_map(bz).collect();
        let path = dir.join("dump.xml.bz2");
        std::fs::write(&path, raw).unwrap();
        (path, xml)
    }

    fn pages(xml: &[u8]) -> Vec<String> {
        let s = String::from_utf8_lossy(xml);
        s.split("<page>")
            .skip(1)
            .map(|p| p.split("</page>").next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn partitions_hold_every_page_once_whatever_the_stream_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (path, xml) = awkward_dump(dir.path());
        let size = std::fs::metadata(&path).unwrap().len();
        let want = pages(&xml);
        for n in [1, 2, 3, 7, 40] {
            let mut got = Vec::new();
            let mut owned = 0;
            for k in 0..n {
                let (mut r, (s, e)) =
                    open_partition(&path, size, [k, n], None, Arc::new(AtomicU64::new(0))).unwrap();
                owned += e - s;
                let mut out = Vec::new();
                r.read_to_end(&mut out).unwrap();
                assert!(
                    out.is_empty() || out.starts_with(b"<mediawiki>\n"),
                    "{n}/{k}"
                );
                if k > 0 && !out.is_empty() {
                    assert!(
                        out[12..].starts_with(b"<page>"),
                        "{n}/{k}: {:?}",
                        String::from_utf8_lossy(&out[..20])
                    );
                }
                got.extend(pages(&out));
            }
            assert_eq!(owned, std::fs::metadata(&path).unwrap().len(), "{n}");
            assert_eq!(got, want, "{n} partitions");
        }
    }

    #[test]
    fn an_index_gives_the_same_cuts_and_a_wrong_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = awkward_dump(dir.path());
        let size = std::fs::metadata(&path).unwrap().len();
        let raw = std::fs::read(&path).unwrap();
        let starts: Vec<u64> = (0..raw.len())
            .filter(|&i| stream_starts_at(&raw, i))
            .map(|i| i as u64)
            .collect();
        let lines: String = starts
            .iter()
            .enumerate()
            .map(|(i, o)| format!("{o}:{i}:Title {i}\n"))
            .collect();
        let index = dir.path().join("dump-index.txt.bz2");
        std::fs::write(&index, bz(lines.as_bytes())).unwrap();
        let offsets = load_index(&index).unwrap();
        assert_eq!(offsets, starts);
        for k in 0..5 {
            assert_eq!(
                stream_cut(&path, size, [k, 5], Some(&offsets)).unwrap(),
                stream_cut(&path, size, [k, 5], None).unwrap()
            );
        }
        let wrong: Vec<u64> = offsets.iter().map(|o| o + 1).collect();
        let err = stream_cut(&path, size, [1, 5], Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--index"), "{err}");
        std::fs::write(&index, "12:3:x\nnot a number\n").unwrap();
        let err = format!("{:#}", load_index(&index).unwrap_err());
        assert!(err.contains(":2: expected `offset:page_id:title`"), "{err}");
    }
}
