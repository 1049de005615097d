//! What every rank must agree on before the first step: where it starts (step, data position, step
//! count), the whole configuration key by key, and the data it reads (names, sizes, digests). Ranks
//! exchange these as text, so one that differs is told which key and both values, not two digests.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::setup::Setup;
use crate::dist::Dist;

/// `(key, value)` lines of this rank's start, in a fixed order.
pub fn start_lines(s: &Setup) -> Vec<(String, String)> {
    // The data first: other data also changes the step count, and the data is the cause to name.
    let mut lines = vec![(
        "condenser version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )];
    lines.push(("data inputs".to_string(), s.inputs.len().to_string()));
    for (i, r) in s.inputs.iter().enumerate() {
        lines.push((format!("data input {}", i + 1), r.to_string()));
        lines.push((format!("data input {} sha256", i + 1), r.sha256.clone()));
    }
    for (k, v) in [
        ("start step", s.step),
        ("start epoch", s.cursor.epoch),
        ("start batch", s.cursor.batches),
        ("total steps", s.total),
    ] {
        lines.push((k.to_string(), v.to_string()));
    }
    let cfg = toml::Value::try_from(&s.cfg).expect("the config serializes");
    flatten("", &cfg, &mut lines);
    lines
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v.as_table() {
        Some(t) => {
            for (k, v) in t {
                let key = match prefix {
                    "" => k.clone(),
                    p => format!("{p}.{k}"),
                };
                flatten(&key, v, out);
            }
        }
        None => out.push((prefix.to_string(), v.to_string())),
    }
}

fn encode(lines: &[(String, String)]) -> String {
    lines
        .iter()
        .map(|(k, v)| format!("{k}\t{}\n", v.replace(['\n', '\t'], " ")))
        .collect()
}

fn decode(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The first key on which a rank differs from rank 0, as a message naming both values.
pub fn first_difference(ranks: &[Vec<(String, String)>]) -> Option<String> {
    let zero = ranks.first()?;
    for (r, lines) in ranks.iter().enumerate().skip(1) {
        for i in 0..zero.len().max(lines.len()) {
            let (a, b) = (zero.get(i), lines.get(i));
            if a == b {
                continue;
            }
            let show = |l: Option<&(String, String)>| {
                l.map_or_else(|| "nothing".to_string(), |(k, v)| format!("{k} = {v}"))
            };
            return Some(match (a, b) {
                (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                    format!("rank {r} has {ka} = {vb}, rank 0 has {ka} = {va}")
                }
                _ => format!("rank {r} has {}, rank 0 has {}", show(b), show(a)),
            });
        }
    }
    None
}

/// Exchanges every rank's start lines (lengths first, then the texts padded to the longest) and fails
/// on every rank, with the same message, when any rank differs from rank 0.
pub fn agree(dist: &Dist, device: Device, lines: &[(String, String)]) -> Result<()> {
    let text = encode(lines).into_bytes();
    let up = |v: Vec<i64>| crate::device::upload(Tensor::from_slice(&v), device);
    let lens = dist.all_gather(&up(vec![text.len() as i64]))?;
    let lens = Vec::<i64>::try_from(lens.to_device(Device::Cpu).to_kind(Kind::Int64))?;
    let longest = lens.iter().copied().max().unwrap_or(0) as usize;
    let mut padded: Vec<i64> = text.iter().map(|&b| b as i64).collect();
    padded.resize(longest.max(1), 0);
    let all = dist.all_gather(&up(padded))?;
    let all = Vec::<i64>::try_from(all.to_device(Device::Cpu).to_kind(Kind::Int64))?;
    let ranks: Vec<Vec<(String, String)>> = all
        .chunks(longest.max(1))
        .zip(&lens)
        .map(|(c, &n)| {
            let bytes: Vec<u8> = c[..n as usize].iter().map(|&b| b as u8).collect();
            decode(&String::from_utf8_lossy(&bytes))
        })
        .collect();
    if let Some(diff) = first_difference(&ranks) {
        bail!("the ranks do not start the same run: {diff}; every rank needs the same arguments, configuration and data files");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_first_differing_key_is_named_with_both_values() {
        let zero = lines(&[("optim.lr", "0.0001"), ("data input 1", "a.jsonl")]);
        let one = lines(&[("optim.lr", "0.0002"), ("data input 1", "b.jsonl")]);
        assert_eq!(
            first_difference(&[zero.clone(), zero.clone(), one]).unwrap(),
            "rank 2 has optim.lr = 0.0002, rank 0 has optim.lr = 0.0001"
        );
        assert_eq!(first_difference(&[zero.clone(), zero.clone()]), None);
        let more = lines(&[
            ("optim.lr", "0.0001"),
            ("data input 1", "a.jsonl"),
            ("x", "1"),
        ]);
        assert_eq!(
            first_difference(&[zero, more]).unwrap(),
            "rank 1 has x = 1, rank 0 has nothing"
        );
    }

    #[test]
    fn lines_survive_the_text_exchange() {
        let l = lines(&[("a.b", "\"x\ty\""), ("c", "[1, 2]")]);
        let back = decode(&encode(&l));
        assert_eq!(back, lines(&[("a.b", "\"x y\""), ("c", "[1, 2]")]));
    }
}
