//! Line reading with a cap on the line length, so one 50 MB line (or a binary file without newlines)
//! cannot grow a buffer without bound.

use std::io::{self, BufRead};

/// One read of a capped line.
pub enum Line {
    /// A line (without its `\n` / `\r\n`) is in the buffer.
    Some,
    /// The line was longer than the cap; it was consumed and discarded. Its length in bytes.
    TooLong(u64),
    Eof,
}

/// Reads the next line into `buf` (cleared first), keeping at most `cap` bytes.
pub fn read_line_capped(r: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<Line> {
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
            match read_line_capped(&mut r, &mut buf, 50).unwrap() {
                Line::Some => got.push(String::from_utf8(buf.clone()).unwrap()),
                Line::TooLong(n) => got.push(format!("<too long {n}>")),
                Line::Eof => break,
            }
        }
        assert_eq!(got, ["short", "<too long 100>", "after", "last"]);
    }
}
