//! `inspect --verify`: each shard against its manifest entry (size, sha256, rows, spans, tokens,
//! pairable documents), and shard files the manifest does not list.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::scan::ShardCounts;
use crate::shards::manifest::Manifest;

/// Checks one shard, `file` = (its size, its sha256), against its manifest entry.
pub fn verify_shard(
    shard: &Path,
    file: (u64, &str),
    counts: &ShardCounts,
    entry: Option<&crate::shards::ShardEntry>,
    have_manifest: bool,
    findings: &mut Vec<String>,
) -> Result<()> {
    let name = shard.display();
    let Some(e) = entry else {
        if have_manifest {
            findings.push(format!("{name}: not listed in the manifest"));
        }
        return Ok(());
    };
    let (len, sha) = file;
    if len != e.bytes {
        findings.push(format!(
            "{name}: {len} bytes, the manifest says {} (truncated or rewritten?)",
            e.bytes
        ));
    }
    if sha != e.sha256 {
        findings.push(format!(
            "{name}: sha256 {sha} does not match the manifest's {}",
            e.sha256
        ));
    }
    for (what, got, want) in [
        ("rows", counts.rows, e.rows),
        ("spans", counts.spans, e.spans),
        ("tokens", counts.tokens, e.tokens),
    ] {
        if got != want {
            findings.push(format!("{name}: {got} {what}, the manifest says {want}"));
        }
    }
    if let Some(want) = e.pairable.filter(|&p| p != counts.pairable) {
        findings.push(format!(
            "{name}: {} documents with two or more spans, the manifest says {want}",
            counts.pairable
        ));
    }
    Ok(())
}

/// Parquet files in a manifest's folder that the manifest does not list.
pub fn unknown_files(dir: &Path, m: &Manifest, findings: &mut Vec<String>) -> Result<()> {
    let listed: std::collections::HashSet<PathBuf> =
        m.shards.iter().map(|s| dir.join(&s.file)).collect();
    let mut check = |d: &Path| -> Result<()> {
        for e in std::fs::read_dir(d).with_context(|| format!("{}: cannot list", d.display()))? {
            let p = e?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && p.extension().is_some_and(|x| x == "parquet") && !listed.contains(&p) {
                findings.push(format!(
                    "{}: a shard file the manifest does not know",
                    p.display()
                ));
            }
        }
        Ok(())
    };
    check(dir)?;
    let mut subdirs: Vec<PathBuf> = m
        .shards
        .iter()
        .filter_map(|s| dir.join(&s.file).parent().map(Path::to_path_buf))
        .collect();
    subdirs.sort();
    subdirs.dedup();
    for d in subdirs.into_iter().filter(|d| d != dir) {
        check(&d)?;
    }
    Ok(())
}
