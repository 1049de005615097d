//! Training metrics as TensorBoard event files (`OUT/events.out.tfevents.*`), beside metrics.jsonl, so
//! `tensorboard --logdir OUT` shows the curves. The format is TensorFlow's: TFRecord framing (length,
//! masked CRC-32C of the length, the record, masked CRC-32C of the record) around `Event` protocol
//! buffers holding scalar `Summary` values, written by hand (a few fields, no protobuf dependency).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::metrics::Record;

/// CRC-32C (Castagnoli), reflected, as TFRecord uses.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `Event { wall_time = 1, step = 2, <payload> }`.
fn event(wall_time: f64, step: u64, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09); // field 1, 64-bit
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(0x10); // field 2, varint
    varint(step, &mut e);
    payload(&mut e);
    e
}

/// `Summary { value: [Value { tag = 1, simple_value = 2 }] }`.
fn summary(scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut s = Vec::new();
    for (tag, v) in scalars {
        let mut value = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut value);
        value.push(0x15); // field 2, 32-bit
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(1, &value, &mut s);
    }
    s
}

/// This machine's name for the file name (TensorBoard's convention), reduced to safe characters.
fn hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One event file of a run.
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl EventWriter {
    /// Starts a new event file in `dir`. A fresh run first removes the event files of an earlier one
    /// in `dir` (as metrics.jsonl is started again); a resumed run (`resume_step`) keeps them and
    /// writes a session start at its step, which makes TensorBoard drop their later steps.
    pub fn create(dir: &Path, resume_step: Option<u64>) -> Result<Self> {
        if resume_step.is_none() {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with("events.out.tfevents.")
                    {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        let host = hostname();
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.condenser",
            now() as u64,
            std::process::id()
        ));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        let mut w = EventWriter {
            path,
            file: std::io::BufWriter::new(file),
        };
        w.record(&event(now(), 0, |e| {
            bytes_field(3, b"brain.Event:2", e); // file_version
        }))?;
        if let Some(step) = resume_step {
            // session_log = 6 { status = 1: START }
            w.record(&event(now(), step, |e| bytes_field(6, &[0x08, 0x01], e)))?;
        }
        Ok(w)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let f = &mut self.file;
        f.write_all(&len)
            .and_then(|_| f.write_all(&masked_crc(&len).to_le_bytes()))
            .and_then(|_| f.write_all(data))
            .and_then(|_| f.write_all(&masked_crc(data).to_le_bytes()))
            .and_then(|_| f.flush())
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }

    /// Scalars at `step` (written through, so TensorBoard sees them while training runs).
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        let s = summary(scalars);
        self.record(&event(now(), step, |e| bytes_field(5, &s, e)))
    }

    /// A metrics record's values under `train/` tags.
    pub fn write(&mut self, r: &Record) -> Result<()> {
        let mut v: Vec<(&str, f64)> = vec![
            ("train/loss", r.loss),
            ("train/grad_norm", r.grad_norm),
            ("train/lr", r.lr),
            ("train/sequences_per_s", r.sequences_per_s),
            ("train/tokens_per_s", r.tokens_per_s),
            ("train/data_wait_fraction", r.data_wait_fraction),
            ("train/epoch", r.epoch as f64),
        ];
        let parts: Vec<(String, f64)> = r
            .parts
            .0
            .iter()
            .map(|(k, x)| (format!("train/{k}"), *x))
            .collect();
        v.extend(parts.iter().map(|(tag, x)| (tag.as_str(), *x)));
        for (tag, x) in [
            ("train/mfu", r.mfu),
            ("train/device_mem_gib", r.device_mem_gib),
            ("eval/mrr_at_10", r.eval_mrr_at_10),
            ("eval/ndcg_at_10", r.eval_ndcg_at_10),
            ("eval/recall_at_100", r.eval_recall_at_100),
        ] {
            if let Some(x) = x {
                v.push((tag, x));
            }
        }
        self.scalars(r.step, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_of_the_standard_check_string() {
        // The CRC-32C check value (RFC 3720's test vector "123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xAC, 0x02]);
    }
}
