//! Byte-range partitions of one uncompressed line file (`--partition K/N` on a single big JSONL, TSV or
//! text file): partition K reads bytes `[size*K/N, size*(K+1)/N)`, moved to line boundaries.
//!
//! The rule: a line belongs to the range that holds its first byte. A reader starting at `s > 0` skips
//! the rest of a line that began before `s` (unless byte `s - 1` is a newline), and reads on past its
//! end `e` to finish a line that began before `e`; so a line that straddles a cut is read exactly once,
//! and the N ranges together hold every line of the file once, whatever N.
//!
//! Line numbers (`file:line` ids, messages) are absolute: the number of newlines before the range is
//! counted only when first needed ([`LineBase`]), so a JSONL or TSV file whose records carry their own
//! ids is read only over its range.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The byte range `[start, end)` of partition `k` of `n` of a file of `size` bytes.
pub fn cut(size: u64, k: u32, n: u32) -> (u64, u64) {
    let at = |i: u32| (size as u128 * i as u128 / n as u128) as u64;
    (at(k), at(k + 1))
}

/// A reader over the lines whose first byte lies in `[start, end)` (see the module header).
pub struct RangeReader<R> {
    inner: R,
    /// Byte offset in the file of the next byte served.
    pos: u64,
    end: u64,
    /// The last byte consumed was a newline (or nothing was consumed at the start of the file).
    at_line_start: bool,
    /// Bytes consumed are added here (progress; read-ahead past the range is not counted).
    counter: Arc<AtomicU64>,
}

impl<R: BufRead> RangeReader<R> {
    /// `inner` stands at byte `start` of the file; `prev` is byte `start - 1` (None at the file's
    /// start). A line that began before `start` is skipped here.
    pub fn new(
        inner: R,
        start: u64,
        end: u64,
        prev: Option<u8>,
        counter: Arc<AtomicU64>,
    ) -> io::Result<Self> {
        let mut r = RangeReader {
            inner,
            pos: start,
            end,
            at_line_start: prev.is_none_or(|b| b == b'\n'),
            counter,
        };
        // The rest of a line that began before the range belongs to the range before.
        while !r.at_line_start {
            let buf = r.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (n, done) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            r.inner.consume(n);
            r.pos += n as u64;
            r.counter.fetch_add(n as u64, Ordering::Relaxed);
            r.at_line_start = done;
        }
        Ok(r)
    }

    /// The byte offset in the file of the next byte.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl<R: BufRead> BufRead for RangeReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let (pos, end) = (self.pos, self.end);
        if pos >= end && self.at_line_start {
            return Ok(&[]);
        }
        let buf = self.inner.fill_buf()?;
        if pos < end {
            // Up to the cut: whatever is read there starts (or continues) a line of this range.
            let room = (end - pos).min(buf.len() as u64) as usize;
            Ok(&buf[..room])
        } else {
            // Past the cut, inside a line that began before it: up to that line's newline.
            let n = memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1);
            Ok(&buf[..n])
        }
    }

    fn consume(&mut self, amt: usize) {
        if amt == 0 {
            return;
        }
        // The bytes just handed out are still in the inner buffer: no I/O here.
        if let Ok(buf) = self.inner.fill_buf() {
            if let Some(&b) = buf.get(amt - 1) {
                self.at_line_start = b == b'\n';
            }
        }
        self.pos += amt as u64;
        self.counter.fetch_add(amt as u64, Ordering::Relaxed);
        self.inner.consume(amt);
    }
}

impl<R: BufRead> Read for RangeReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        crate::corpus::lines::read_from_buffer(self, out)
    }
}

/// Opens `path` at byte `start` (reading byte `start - 1` to know whether a line starts there).
pub fn open_at(path: &Path, start: u64) -> io::Result<(BufReader<File>, Option<u8>)> {
    let mut file = File::open(path)?;
    let prev = match start {
        0 => None,
        _ => {
            file.seek(SeekFrom::Start(start - 1))?;
            let mut b = [0u8];
            file.read_exact(&mut b)?;
            Some(b[0])
        }
    };
    Ok((BufReader::with_capacity(1 << 18, file), prev))
}

/// The number of lines before a byte offset of a file, counted when first asked for (by whichever
/// thread first needs it: records are parsed, and their line numbers shown, in the workers).
#[derive(Debug)]
pub struct LineBase {
    known: std::sync::OnceLock<u64>,
    /// The file and offset to count newlines up to; None: the base is 0.
    source: Option<(PathBuf, u64)>,
}

impl LineBase {
    /// Line numbers from the start of the input.
    pub fn zero() -> LineBase {
        LineBase {
            known: std::sync::OnceLock::from(0),
            source: None,
        }
    }

    /// Line numbers of a range that starts at byte `offset` of `path`.
    pub fn before(path: &Path, offset: u64) -> LineBase {
        match offset {
            0 => LineBase::zero(),
            _ => LineBase {
                known: std::sync::OnceLock::new(),
                source: Some((path.to_path_buf(), offset)),
            },
        }
    }

    /// The number of lines before the range (an unreadable prefix counts as none, with a warning:
    /// the ids of this range are then relative).
    pub fn get(&self) -> u64 {
        *self.known.get_or_init(|| {
            let (path, offset) = self
                .source
                .as_ref()
                .expect("a base without a source is known");
            let n = count_newlines(path, *offset).unwrap_or_else(|e| {
                log::warn!(
                    "{}: cannot count the lines before byte {offset} ({e}); line numbers of this partition start at 0",
                    path.display()
                );
                0
            });
            log::debug!("{}: {n} lines before byte {offset}", path.display());
            n
        })
    }
}

/// A line number: `rel` lines into a range whose lines start after `base` ones; Display prints the
/// absolute number (counting the lines before the range only when printed).
#[derive(Clone, Copy)]
pub struct LineNo<'a> {
    pub rel: u64,
    pub base: &'a LineBase,
}

impl LineNo<'_> {
    pub fn get(self) -> u64 {
        self.base.get() + self.rel
    }
}

impl std::fmt::Display for LineNo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.get())
    }
}

fn count_newlines(path: &Path, upto: u64) -> io::Result<u64> {
    let mut file = File::open(path)?.take(upto);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = file.read(&mut buf)?;
        if got == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split of a file into N ranges reads each line exactly once, at every cut position.
    #[test]
    fn ranges_read_every_line_once_for_any_n() {
        let lines: Vec<String> = (0..37)
            .map(|i| format!("line {i} {}", "x".repeat(i * 7 % 23)))
            .collect();
        let mut text = lines.join("\n");
        text.push('\n');
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in [
            ("a.txt", text.clone()),
            ("b.txt", text.trim_end().to_string()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &body).unwrap();
            let size = body.len() as u64;
            for n in [1u32, 2, 3, 5, 8, 13, 64, 1000] {
                let mut got = Vec::new();
                for k in 0..n {
                    let (s, e) = cut(size, k, n);
                    let (inner, prev) = open_at(&path, s).unwrap();
                    let mut r = RangeReader::new(inner, s, e, prev, Default::default()).unwrap();
                    let mut part = String::new();
                    r.read_to_string(&mut part).unwrap();
                    got.extend(part.lines().map(str::to_string));
                }
                assert_eq!(got, lines, "{name}, N = {n}");
            }
        }
    }

    #[test]
    fn a_line_straddling_a_cut_belongs_to_the_range_of_its_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(&path, "aaaa\nbbbbbbbbbb\ncc\n").unwrap(); // "b..." spans bytes 5..16
        let read = |s: u64, e: u64| {
            let (inner, prev) = open_at(&path, s).unwrap();
            let mut out = String::new();
            RangeReader::new(inner, s, e, prev, Default::default())
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            out
        };
        assert_eq!(read(0, 7), "aaaa\nbbbbbbbbbb\n");
        assert_eq!(read(7, 12), "");
        assert_eq!(read(12, 19), "cc\n");
        assert_eq!(read(5, 6), "bbbbbbbbbb\n"); // starts exactly at a line start
        assert_eq!(read(4, 5), ""); // only the newline of "aaaa"
        let base = LineBase::before(&path, 16);
        assert_eq!(
            LineNo {
                rel: 1,
                base: &base
            }
            .to_string(),
            "3"
        );
    }
}
