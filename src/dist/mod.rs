//! Data-parallel training across processes: PyTorch's c10d collectives (Gloo on the CPU, NCCL on CUDA)
//! behind a safe API. ARCHITECTURE.md: train::Trainer -> dist::c10d (gradient all-reduce, [CLS] all-gather).
//!
//! `Dist` is what the trainer holds: a single process (no group, every collective the identity, so a
//! run without a launcher is exactly what it was before data parallelism), or one rank of a group.

pub mod c10d;
pub mod launch;

use std::time::Duration;

use anyhow::{Context, Result};
use tch::Tensor;

pub use c10d::BackendKind;
pub use launch::Launch;

/// This process's place in the job, and its process group when there is more than one rank.
pub struct Dist {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    group: Option<c10d::ProcessGroup>,
}

impl Dist {
    /// One process, no group.
    pub fn single() -> Self {
        Dist {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            group: None,
        }
    }

    /// Joins the job the launcher described.
    pub fn join(launch: &Launch, backend: BackendKind, timeout: Duration) -> Result<Self> {
        let loopback = matches!(
            launch.master_addr.as_str(),
            "127.0.0.1" | "localhost" | "::1"
        );
        let gloo_host = if loopback {
            "127.0.0.1".to_string()
        } else {
            hostname().unwrap_or_else(|| "127.0.0.1".to_string())
        };
        let group = c10d::ProcessGroup::new(&c10d::GroupOptions {
            backend,
            master_addr: launch.master_addr.clone(),
            master_port: launch.master_port,
            rank: launch.rank,
            world_size: launch.world_size,
            store_server: launch.store_server,
            prefix: launch.store_prefix.clone(),
            timeout,
            gloo_host,
        })
        .with_context(|| {
            format!(
                "rank {} of {} ({}) could not join the process group",
                launch.rank, launch.world_size, launch.launcher
            )
        })?;
        Ok(Dist {
            rank: launch.rank,
            local_rank: launch.local_rank,
            world_size: launch.world_size,
            group: Some(group),
        })
    }

    /// More than one rank.
    pub fn is_distributed(&self) -> bool {
        self.group.is_some()
    }

    /// Rank 0: the one that writes checkpoints, metrics and stdout, and draws the progress bar.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// In-place sum over ranks (the identity for one process).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce_sum(t),
            None => Ok(()),
        }
    }

    /// Every rank's `t` concatenated along dim 0 in rank order (`t` itself for one process).
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        match &self.group {
            Some(g) => g.all_gather(t),
            None => Ok(t.shallow_clone()),
        }
    }

    /// `t` of rank `root` into every rank's `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        match &self.group {
            Some(g) => g.broadcast(t, root),
            None => Ok(()),
        }
    }

    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }
}

/// This machine's host name, which Gloo resolves to the address its peers reach it on.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec())
        .ok()
        .filter(|s| !s.is_empty())
}
