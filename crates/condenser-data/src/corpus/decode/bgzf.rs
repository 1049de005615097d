//! Parallel decoding of BGZF gzip (`bgzip`, htslib's blocked gzip), on [`super::parallel`].
//!
//! Every BGZF member's header carries an extra field with the subfield `BC` whose value is the
//! member's length minus one, so member boundaries are read off the headers without inflating. A
//! plain gzip file has no such field (deflate members can only be found by decoding them): it keeps
//! the serial decoder, and so does the rest of a file after a member without `BC`.

use std::io::{self, BufRead, Read};

use super::parallel::{Cut, Framing, ParallelDecoder};

/// The decoded bytes of a BGZF input, decoded by `threads` threads.
pub type ParallelBgzf = ParallelDecoder<BgzfMembers>;

/// Finds BGZF members by the block size in their headers.
#[derive(Default)]
pub struct BgzfMembers {
    /// Where the next member starts in the group; every member before it is whole.
    next: usize,
}

/// The length of the member starting at `buf[0]`: `Ok(None)` while its header is not all there,
/// `Err(())` for a member without a BGZF block size.
fn member_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    // ID1 ID2 CM FLG MTIME(4) XFL OS XLEN(2), then XLEN bytes of subfields.
    if buf.len() < 12 {
        return Ok(None);
    }
    if buf[..3] != [0x1f, 0x8b, 8] || buf[3] & 0x04 == 0 {
        return Err(());
    }
    let xlen = usize::from(u16::from_le_bytes([buf[10], buf[11]]));
    let Some(mut extra) = buf.get(12..12 + xlen) else {
        return Ok(None);
    };
    // Subfields: SI1 SI2 SLEN(2) then SLEN bytes.
    while extra.len() >= 4 {
        let slen = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let data = extra.get(4..4 + slen).ok_or(())?;
        if extra[..2] == *b"BC" && slen == 2 {
            return Ok(Some(
                usize::from(u16::from_le_bytes([data[0], data[1]])) + 1,
            ));
        }
        extra = &extra[4 + slen..];
    }
    Err(())
}

/// Whether a gzip input starting with `head` is BGZF (its first member's header says so).
pub fn is_bgzf(head: &[u8]) -> bool {
    matches!(member_len(head), Ok(Some(_)))
}

impl Framing for BgzfMembers {
    const SHORT: &'static str = "bgzf";
    const PIECE: &'static str = "gzip member";

    fn cut(&mut self, group: &[u8], min: usize) -> Cut {
        loop {
            let p = self.next;
            if p > group.len() {
                return Cut::More;
            }
            if p >= min {
                self.next = 0;
                return Cut::At(p);
            }
            match member_len(&group[p..]) {
                Ok(Some(n)) => self.next = p + n,
                Ok(None) => return Cut::More,
                Err(()) => return Cut::Serial(p),
            }
        }
    }

    fn decode(bytes: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        let err = flate2::bufread::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .err();
        (out, err)
    }

    fn serial(rest: Box<dyn BufRead + Send>) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::decode::test_data::*;
    use std::io::Write;

    /// A BGZF file: members of up to 60 000 bytes of text (some empty), then the empty EOF member.
    fn bgzf() -> (Vec<u8>, Vec<u8>) {
        let (mut raw, mut out) = (Vec::new(), Vec::new());
        for i in 0..200u64 {
            let part = text(
                if i % 31 == 0 {
                    0
                } else {
                    (i as usize * 7919) % 60_000
                },
                i,
            );
            raw.extend(bgzf_member(&part));
            out.extend(part);
        }
        raw.extend(bgzf_member(b""));
        (raw, out)
    }

    fn serial(raw: &[u8]) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        let err = flate2::read::MultiGzDecoder::new(raw)
            .read_to_end(&mut out)
            .err();
        (out, err)
    }

    fn parallel(raw: Vec<u8>, threads: usize, group: usize) -> (Vec<u8>, Option<io::Error>) {
        let mut r = ParallelBgzf::with_group_bytes(Box::new(io::Cursor::new(raw)), threads, group);
        drain(&mut r)
    }

    #[test]
    fn parallel_decoding_equals_the_serial_decoder() {
        let (raw, text) = bgzf();
        assert!(is_bgzf(&raw));
        let (s, err) = serial(&raw);
        assert!(err.is_none(), "{err:?}");
        assert!(s == text);
        for threads in [1, 2, 5] {
            for group in [1, 50_000] {
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
    fn a_truncated_input_keeps_every_complete_member_and_reports_where() {
        let (raw, _) = bgzf();
        check_truncated::<BgzfMembers>(&raw, "gzip member", |r| parallel(r, 3, 20_000), serial);
    }

    #[test]
    fn plain_gzip_is_not_bgzf_and_a_plain_member_after_bgzf_ones_decodes_serially() {
        let data = text(100_000, 3);
        let mut plain = Vec::new();
        for half in data.chunks(50_000) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(half).unwrap();
            plain.extend(gz.finish().unwrap());
        }
        assert!(!is_bgzf(&plain));
        let (mut raw, mut text) = bgzf();
        raw.extend(&plain);
        text.extend(&data);
        let (out, err) = parallel(raw, 3, 20_000);
        assert!(err.is_none(), "{err:?}");
        assert!(out == text);
    }
}
