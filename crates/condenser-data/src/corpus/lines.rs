//! Line reading with a cap on the line length, so one 50 MB line (or a binary file without newlines)
//! cannot grow a buffer without bound.

use std::io::{self, BufRead};

/// One read of a capped line.
pub enum Line {
    /// A line (without its `\n` / `\r\n`) is in the buffer.
    Some,
    /// The line was longer than the cap; it was consumed and discarded. Its length in bytes.
    TooLong(u64),
    /// The line passed the cap and, as asked, was not read to its end: the reader stands inside it.
    /// The bytes read of it.
    Abandoned(u64),
    Eof,
}

/// Reads the next line into `buf` (cleared first), keeping at most `cap` bytes. With `stop_at_cap`, a
/// line that passes the cap is abandoned there (for a run that ends at its first bad record: the rest
/// of the line may never come).
pub fn read_line_capped(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
    stop_at_cap: bool,
) -> io::Result<Line> {
    buf.clear();
    let mut total: u64 = 0;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let piece = if done {
            &chunk[..take - 1]
        } else {
            &chunk[..take]
        };
        total += piece.len() as u64;
        if buf.len() + piece.len() <= cap {
            buf.extend_from_slice(piece);
        }
        r.consume(take);
        if done {
            break;
        }
        if stop_at_cap && total > cap as u64 {
            buf.clear();
            return Ok(Line::Abandoned(total));
        }
    }
    if !any {
        return Ok(Line::Eof);
    }
    if total > cap as u64 {
        buf.clear();
        return Ok(Line::TooLong(total));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_long_lines_and_keeps_going() {
        let data = format!("short\n{}\nafter\r\nlast", "x".repeat(100));
        let mut r = io::BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_capped(&mut r, &mut buf, 50, false).unwrap() {
                Line::Some => got.push(String::from_utf8(buf.clone()).unwrap()),
                Line::TooLong(n) => got.push(format!("<too long {n}>")),
                Line::Abandoned(_) => unreachable!("not asked to stop"),
                Line::Eof => break,
            }
        }
        assert_eq!(got, ["short", "<too long 100>", "after", "last"]);
    }

    #[test]
    fn stops_inside_a_long_line_when_asked() {
        let data = format!(
            "short
{}
after
",
            "x".repeat(100)
        );
        let mut r = io::BufReader::with_capacity(16, data.as_bytes());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line_capped(&mut r, &mut buf, 50, true).unwrap(),
            Line::Some
        ));
        match read_line_capped(&mut r, &mut buf, 50, true).unwrap() {
            // Abandoned at the first read past the cap: 64 of the 100 bytes (reads of 16).
            Line::Abandoned(n) => assert!((51..100).contains(&n), "{n}"),
            _ => panic!("expected the line to be abandoned"),
        }
    }
}

/// `Read::read` for a reader whose `BufRead` side is the real one: copies from `fill_buf`, then
/// consumes what it copied (the readers of this module tree buffer themselves).
pub fn read_from_buffer<R: std::io::BufRead + ?Sized>(
    r: &mut R,
    out: &mut [u8],
) -> std::io::Result<usize> {
    let n = {
        let buf = r.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        n
    };
    r.consume(n);
    Ok(n)
}
