//! The process group seen from the training loop: joining the group the launcher describes, agreeing
//! on the start (every rank the same run: the data, the position, every configuration key, exchanged
//! as text so a difference is named), and stopping together after the same step (`StopVotes`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::objective::{LossPart, Losses};
use super::setup::Setup;
use super::DistBackend;
use crate::dist::{BackendKind, Dist, Launch};

/// Joins the process group the launcher describes: NCCL for CUDA tensors, Gloo for CPU ones.
pub fn join_group(
    l: &Launch,
    device: Device,
    backend: Option<DistBackend>,
    timeout: u64,
) -> Result<Dist> {
    crate::logging::set_rank(l.rank);
    let backend = match (backend, device) {
        (Some(DistBackend::Gloo), _) => BackendKind::Gloo,
        (Some(DistBackend::Nccl), _) => BackendKind::Nccl,
        (None, Device::Cuda(_)) => BackendKind::Nccl,
        (None, _) => BackendKind::Gloo,
    };
    if backend == BackendKind::Nccl && device == Device::Cpu {
        bail!("--dist-backend nccl needs CUDA tensors; this rank trains on the CPU (use gloo)");
    }
    if backend == BackendKind::Gloo && device != Device::Cpu {
        bail!(
            "--dist-backend gloo reduces CPU tensors; this rank trains on {} (use nccl, or --device cpu)",
            crate::device::device_label(device)
        );
    }
    let dist = Dist::join(l, backend, Duration::from_secs(timeout.max(1)))?;
    log::info!(
        "rank {} of {} ({}, {:?}, store {}:{})",
        l.rank,
        l.world_size,
        l.launcher,
        backend,
        l.master_addr,
        l.master_port
    );
    Ok(dist)
}

/// Every rank starts from rank 0's state: the weights and moments are broadcast (a resumed or freshly
/// initialised head is then the same everywhere by construction), and the step, data position, step
/// count, configuration and data must agree (`start_agreement`: ranks started with other arguments or
/// files would train another run). Also waits for rank 0 to have prepared the run folder.
pub fn agree_on_start(s: &Setup, dist: &Dist) -> Result<()> {
    if !dist.is_distributed() {
        return Ok(());
    }
    agree(dist, s.device, &start_lines(s))?;
    for t in s.opt.state_buffers() {
        dist.broadcast(t, 0)?;
    }
    dist.barrier()
}

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

/// With a process group, a signal reaches the ranks at different moments (torchrun forwards it to each),
/// yet all must stop after the same step. Each step's loss all-reduce carries every rank's "stop" vote
/// (the sum is the number of ranks that saw one), and every rank reads the vote of the step `LAG` steps
/// back: the same value at the same step everywhere, and on CUDA the read waits for a step that has
/// long finished, so the host keeps queueing work ahead of the device.
#[derive(Default)]
pub struct StopVotes {
    pending: std::collections::VecDeque<Tensor>,
}

impl StopVotes {
    const LAG: usize = 2;

    /// The step's losses averaged over ranks (parts that are already global stay as they are), with
    /// this rank's stop vote (`stop`: it saw SIGINT/SIGTERM) summed alongside.
    pub fn reduce(&mut self, l: Losses, dist: &Dist, step: u64, stop: bool) -> Result<Losses> {
        let device = l.total.device();
        let vote = Tensor::from(stop as u8 as f32).to_device(device);
        let mut row: Vec<&Tensor> = vec![&l.total];
        row.extend(l.parts.iter().filter(|p| p.per_rank).map(|p| &p.value));
        row.push(&vote);
        let v = Tensor::stack(&row, 0).to_kind(tch::Kind::Float);
        dist.all_reduce_sum(&v)
            .with_context(|| format!("step {}: averaging the losses", step + 1))?;
        let mean = &v / dist.world_size as f64;
        self.pending.push_back(v.get(row.len() as i64 - 1));
        // Averaged parts sit at 1.. in the stacked row, in their order.
        let mut averaged = (1..).map(|i| mean.get(i));
        let parts = l
            .parts
            .into_iter()
            .map(|p| match p.per_rank {
                true => LossPart {
                    value: averaged.next().expect("one row slot per averaged part"),
                    ..p
                },
                false => p,
            })
            .collect();
        Ok(Losses {
            total: mean.get(0),
            parts,
        })
    }

    /// True when a rank saw SIGINT/SIGTERM `LAG` steps ago.
    pub fn agreed(&mut self) -> Result<bool> {
        if self.pending.len() < Self::LAG {
            return Ok(false);
        }
        let v = self.pending.pop_front().expect("LAG > 0 votes pending");
        Ok(v.double_value(&[]) > 0.0)
    }
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
