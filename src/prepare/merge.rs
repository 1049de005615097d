//! `condenser prepare --merge OUT`: joins the manifests of `OUT/part-K-of-N/` into `OUT/_manifest.json`,
//! so N machines can prepare one corpus into one folder tree.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::shards::manifest::{InputStats, Manifest};

pub fn merge(out: &Path) -> Result<()> {
    if !out.is_dir() {
        bail!("{}: no such folder to merge", out.display());
    }
    // The merged manifest is written into `out`: no other prepare may write there meanwhile.
    let _lock = super::lock::FolderLock::acquire(out)?;
    let mut parts: Vec<(u32, u32, Manifest, String)> = Vec::new();
    for entry in
        std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?
    {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some((k, n)) = name
            .strip_prefix("part-")
            .and_then(|r| r.split_once("-of-"))
        else {
            continue;
        };
        let (Ok(k), Ok(n)) = (k.parse::<u32>(), n.parse::<u32>()) else {
            continue;
        };
        let m = Manifest::load(&out.join(&name))?
            .with_context(|| format!("{}/{name}: no _manifest.json", out.display()))?;
        if !m.complete {
            bail!(
                "{}/{name}: partition {k}/{n} is not complete; rerun its prepare first",
                out.display()
            );
        }
        parts.push((k, n, m, name));
    }
    if parts.is_empty() {
        bail!("{}: no part-K-of-N folders to merge", out.display());
    }
    parts.sort_by_key(|p| p.0);
    let n = parts[0].1;
    let ks: Vec<u32> = parts.iter().map(|p| p.0).collect();
    if parts.iter().any(|p| p.1 != n) || ks != (0..n).collect::<Vec<_>>() {
        bail!(
            "{}: partitions {ks:?} of {n} found; every partition 0..{n} is needed, once",
            out.display()
        );
    }
    let first = parts[0].2.clone();
    let mut merged = first.clone();
    merged.settings.partition = None;
    merged.inputs = first
        .settings
        .inputs
        .iter()
        .map(|p| InputStats {
            path: p.clone(),
            ..Default::default()
        })
        .collect();
    merged.shards.clear();
    merged.cursor = 0;
    for (k, _, m, dir) in &parts {
        let mut same = m.settings.clone();
        same.partition = None;
        if same != merged.settings || m.tokenizer != first.tokenizer {
            bail!(
                "{}/{dir}: partition {k} was prepared with other inputs, settings or tokenizer",
                out.display()
            );
        }
        for s in &m.shards {
            let mut s = s.clone();
            s.file = format!("{dir}/{}", s.file);
            merged.shards.push(s);
        }
        merged.cursor += m.cursor;
        for i in &m.inputs {
            let t = merged
                .inputs
                .iter_mut()
                .find(|t| t.path == i.path)
                .context("input missing from settings")?;
            t.format = t.format.or(i.format);
            t.compression = t.compression.or(i.compression);
            // In record partitions every part reads the whole file: its size, not the sum.
            t.bytes = t.bytes.max(i.bytes);
            t.done |= i.done;
            t.records += i.records;
            t.documents += i.documents;
            t.spans += i.spans;
            t.tokens += i.tokens;
            for (r, c) in &i.skipped {
                *t.skipped.entry(r.clone()).or_default() += c;
            }
        }
    }
    merged.complete = true;
    // The tokenizer copy goes up beside the merged manifest (every part holds the same one).
    match first.tokenizer.locate(&out.join(&parts[0].3)) {
        Ok(tok) => {
            crate::shards::manifest::store_tokenizer_copy(out, &tok, &first.tokenizer.sha256)?
        }
        Err(e) => log::warn!("{e:#}; the merged folder has no tokenizer copy"),
    }
    merged.store(out)?;
    log::info!(
        "merged {} partitions: {} documents in {} shards into {}",
        n,
        merged.totals.documents,
        merged.totals.shards,
        out.join(crate::shards::manifest::FILE_NAME).display()
    );
    Ok(())
}
