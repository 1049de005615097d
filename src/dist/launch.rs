//! Who this process is in a job, read from the environment the ecosystem's launchers set: torchrun
//! (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, and an agent that already
//! serves the store) and Slurm's `srun` (`SLURM_PROCID`, `SLURM_LOCALID`, `SLURM_NTASKS`, the first
//! host of `SLURM_JOB_NODELIST`). No launcher: world size 1, and no process group at all.

use anyhow::{bail, Context, Result};

/// torchrun's default rendezvous port, used under srun when MASTER_PORT is not set.
pub const DEFAULT_PORT: u16 = 29500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub local_rank: usize,
    pub world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Rank 0 serves the store (by hand, srun); under torchrun its agent does, and every rank is a
    /// client.
    pub store_server: bool,
    /// Keys of this attempt: an elastic restart must not read the previous attempt's.
    pub store_prefix: String,
    /// Which launcher set the variables (for messages).
    pub launcher: &'static str,
}

impl Launch {
    /// The process's place in the job from the real environment; None without a launcher (or with
    /// a world of one).
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// `from_env` over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let num = |k: &str| -> Result<Option<usize>> {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .with_context(|| format!("{k}={v:?} is not a non-negative integer"))
                })
                .transpose()
        };
        let port = |default: Option<u16>| -> Result<u16> {
            match var("MASTER_PORT") {
                Some(p) => p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .with_context(|| format!("MASTER_PORT={p:?} is not a port number")),
                None => default.context("MASTER_PORT is not set"),
            }
        };
        let (rank, local_rank, world_size, master_addr, master_port, store_server, launcher) =
            if let Some(world) = num("WORLD_SIZE")? {
                // torchrun, or variables set by hand in the same convention.
                if world == 1 {
                    return Ok(None);
                }
                let rank = num("RANK")?.context("WORLD_SIZE is set but RANK is not")?;
                let local = num("LOCAL_RANK")?.unwrap_or(rank);
                let agent = var("TORCHELASTIC_USE_AGENT_STORE")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
                let addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".to_string());
                let launcher = if var("TORCHELASTIC_RUN_ID").is_some() {
                    "torchrun"
                } else {
                    "RANK and WORLD_SIZE set by hand"
                };
                (
                    rank,
                    local,
                    world,
                    addr,
                    port(None)?,
                    !agent && rank == 0,
                    launcher,
                )
            } else if let (Some(world), Some(rank)) = (num("SLURM_NTASKS")?, num("SLURM_PROCID")?) {
                if world == 1 {
                    return Ok(None);
                }
                let local = num("SLURM_LOCALID")?.unwrap_or(0);
                let addr = match var("MASTER_ADDR") {
                    Some(a) => a,
                    None => first_host(
                        &var("SLURM_JOB_NODELIST")
                            .or_else(|| var("SLURM_NODELIST"))
                            .context("srun: SLURM_JOB_NODELIST is not set (or set MASTER_ADDR)")?,
                    )?,
                };
                (
                    rank,
                    local,
                    world,
                    addr,
                    port(Some(DEFAULT_PORT))?,
                    rank == 0,
                    "srun",
                )
            } else {
                return Ok(None);
            };
        if world_size == 0 || rank >= world_size {
            bail!("{launcher}: rank {rank} in a world of {world_size}: the rank must be below the world size");
        }
        let restart = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        let run = var("TORCHELASTIC_RUN_ID")
            .or_else(|| var("SLURM_JOB_ID"))
            .unwrap_or_else(|| "none".into());
        Ok(Some(Launch {
            rank,
            local_rank,
            world_size,
            master_addr,
            master_port,
            store_server,
            // PrefixStore adds the separator.
            store_prefix: format!("condenser/{run}/{restart}"),
            launcher,
        }))
    }
}

/// The first host of a Slurm node list: `node[01-04,07],gpu2` -> `node01`; `a,b` -> `a`.
pub fn first_host(list: &str) -> Result<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..];
        let first = inner
            .split([',', '-', ']'])
            .next()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("SLURM_JOB_NODELIST={list:?}: cannot read its first host"))?;
        return Ok(format!("{prefix}{first}"));
    }
    if prefix.is_empty() {
        bail!("SLURM_JOB_NODELIST={list:?}: cannot read its first host");
    }
    Ok(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn no_launcher_or_a_world_of_one_is_a_single_process() {
        assert_eq!(launch(&[]).unwrap(), None);
        let one = [("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_PORT", "1234")];
        assert_eq!(launch(&one).unwrap(), None);
        assert_eq!(
            launch(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(),
            None
        );
        // An allocation without srun has no SLURM_PROCID: not a job step.
        assert_eq!(launch(&[("SLURM_NTASKS", "4")]).unwrap(), None);
    }

    #[test]
    fn torchrun_makes_every_rank_a_store_client() {
        let l = launch(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RUN_ID", "job7"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert!(!l.store_server);
        assert_eq!(l.launcher, "torchrun");
        assert_eq!((l.master_addr.as_str(), l.master_port), ("10.0.0.1", 29400));
        assert_eq!(l.store_prefix, "condenser/job7/2");
        // By hand: rank 0 serves the store.
        let l = launch(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "5000")])
            .unwrap()
            .unwrap();
        assert!(l.store_server);
        assert_eq!(l.master_addr, "127.0.0.1");
    }

    #[test]
    fn srun_reads_slurm_and_the_first_host() {
        let l = launch(&[
            ("SLURM_NTASKS", "16"),
            ("SLURM_PROCID", "9"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[003-006,010],cpu1"),
            ("SLURM_JOB_ID", "4242"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.local_rank, l.world_size), (9, 1, 16));
        assert_eq!(l.master_addr, "gpu003");
        assert_eq!(l.master_port, DEFAULT_PORT);
        assert!(!l.store_server);
        assert_eq!(l.store_prefix, "condenser/4242/0");
        assert_eq!(first_host("a,b").unwrap(), "a");
        assert_eq!(first_host("node7").unwrap(), "node7");
    }

    #[test]
    fn inconsistent_variables_are_refused_with_their_names() {
        let e = launch(&[("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).unwrap_err();
        assert!(e.to_string().contains("RANK"), "{e}");
        let e = launch(&[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_PORT", "1")]).unwrap_err();
        assert!(e.to_string().contains("below the world size"), "{e}");
        let e = launch(&[("WORLD_SIZE", "two"), ("RANK", "0")]).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE"), "{e}");
        let e = launch(&[("WORLD_SIZE", "2"), ("RANK", "1")]).unwrap_err();
        assert!(e.to_string().contains("MASTER_PORT"), "{e}");
    }
}
