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
    parts.sort_by_key(|p| (p.1, p.0));
    check_one_whole_set(out, &parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>())?;
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
        parts.len(),
        merged.totals.documents,
        merged.totals.shards,
        out.join(crate::shards::manifest::FILE_NAME).display()
    );
    Ok(())
}

/// Refuses partition folders (K, N) that are not exactly 0/N .. N-1/N of one N, naming the folders of
/// each N, or the partitions missing, as the user wrote them (`--partition K/N`).
fn check_one_whole_set(out: &Path, parts: &[(u32, u32)]) -> Result<()> {
    let mut by_n: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    for &(k, n) in parts {
        by_n.entry(n).or_default().push(k);
    }
    if by_n.len() > 1 {
        let sets: Vec<String> = by_n
            .iter()
            .map(|(n, ks)| {
                let names: Vec<String> = ks.iter().map(|k| format!("part-{k}-of-{n}")).collect();
                format!("N = {n}: {}", names.join(", "))
            })
            .collect();
        bail!(
            "{}: holds partitions of more than one N ({}); --merge joins the partitions of one N: move the others away",
            out.display(),
            sets.join("; ")
        );
    }
    let (&n, ks) = by_n.iter().next().context("no partitions")?;
    let missing: Vec<String> = (0..n)
        .filter(|k| !ks.contains(k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: partition(s) {} missing (found {}); run `condenser prepare ... --partition K/{n}` for each, then --merge",
            out.display(),
            missing.join(", "),
            ks.iter().map(|k| format!("{k}/{n}")).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod set_tests {
    use super::*;

    #[test]
    fn partitions_of_several_n_or_missing_ones_are_named_as_the_user_wrote_them() {
        let out = Path::new("shards");
        let e = check_one_whole_set(out, &[(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "N = 2: part-0-of-2, part-1-of-2; N = 3: part-0-of-3, part-1-of-3, part-2-of-3"
            ),
            "{e}"
        );
        let e = check_one_whole_set(out, &[(0, 3), (2, 3)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partition(s) 1/3 missing (found 0/3, 2/3)"),
            "{e}"
        );
        check_one_whole_set(out, &[(0, 2), (1, 2)]).unwrap();
    }
}
