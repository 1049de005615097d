//! Compressed test inputs built in memory, shared by the decoders' unit tests.

use std::io::Write;

/// Text that compresses about as badly as prose.
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b"etaoin shrdlu\n"[(x >> 59) as usize % 14]
        })
        .collect()
}

/// Everything `r` gives, and the error that ended it.
pub fn drain(mut r: impl std::io::Read) -> Decoded {
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).err();
    (out, err)
}

/// `text` as one bzip2 stream.
pub fn bz(text: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

/// One BGZF member: gzip with the `BC` extra subfield (and another subfield before it, which a reader
/// must step over).
pub fn bgzf_member(data: &[u8]) -> Vec<u8> {
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    deflate.write_all(data).unwrap();
    let body = deflate.finish().unwrap();
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let total = 12 + 6 + 6 + body.len() + 8;
    let mut m = vec![0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff, 12, 0];
    m.extend(b"XY\x02\x00ab");
    m.extend(b"BC\x02\x00");
    m.extend(((total - 1) as u16).to_le_bytes());
    m.extend(body);
    m.extend(crc.sum().to_le_bytes());
    m.extend((data.len() as u32).to_le_bytes());
    assert_eq!(m.len(), total);
    m
}

type Decoded = (Vec<u8>, Option<std::io::Error>);

/// A parallel decoder (`parallel`) on `raw` cut at two thirds: an error naming the `piece` kind and
/// the cut's offset, and every piece wholly before the cut (as framing `F` finds them) decoded to the
/// same bytes as the serial decoder (`serial`) gives.
pub fn check_truncated<F: super::parallel::Framing + Default>(
    raw: &[u8],
    piece: &str,
    parallel: impl Fn(Vec<u8>) -> Decoded,
    serial: impl Fn(&[u8]) -> Decoded,
) {
    let cut = raw.len() * 2 / 3;
    let (out, err) = parallel(raw[..cut].to_vec());
    let err = err.expect("a truncated input is an error").to_string();
    assert!(
        err.contains(&format!("{piece} in compressed bytes")),
        "{err}"
    );
    assert!(err.contains(&format!("..{cut}:")), "{err}");
    let (s, serial_err) = serial(&raw[..cut]);
    assert!(serial_err.is_some());
    let mut framing = F::default();
    let mut whole = 0;
    while let super::parallel::Cut::At(i) = framing.cut(&raw[whole..cut], 1) {
        whole += i;
    }
    let (complete, _) = serial(&raw[..whole]);
    assert!(
        out.len() >= complete.len(),
        "{} < {}",
        out.len(),
        complete.len()
    );
    assert_eq!(out[..], s[..out.len()]);
}
