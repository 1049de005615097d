//! How a report is shown: the text on stdout (with block-character histograms) and the histograms
//! `--plot` draws.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::stats::{capped, display_cap, Distribution, Report};
use crate::shards::manifest::Manifest;

/// What an unfinished folder is, for the log and the text report.
pub fn unfinished(dir: &Path, m: &Manifest) -> String {
    format!(
        "{}: prepare has not finished (manifest complete: false): these are the {} shard(s) written so far; rerun the same prepare to finish",
        dir.display(),
        m.shards.len()
    )
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The span-length and spans-per-document histograms of a report, as `plot` draws them: each capped
/// at its display cap, the bar at the cap holding every larger value too (drawn apart as the tail).
pub fn histograms(report: &Report) -> Result<[crate::plot::Histogram; 2]> {
    if report.spans == 0 {
        anyhow::bail!("nothing to plot: no spans");
    }
    let tail = |d: &Distribution| {
        let cap = display_cap(d);
        (cap < d.max).then_some((cap, d.max))
    };
    let tail_note = |t: Option<(u64, u64)>| match t {
        Some((cap, max)) => format!(", the orange bar holds {cap} to {max}"),
        None => String::new(),
    };
    let (spans, docs) = (&report.span_length, &report.spans_per_document);
    Ok([
        crate::plot::Histogram {
            title: format!(
                "span length ({} spans, mean {:.1}{})",
                report.spans,
                spans.mean,
                tail_note(tail(spans))
            ),
            axes: ("span length (tokens, without [CLS] and [SEP])", "spans"),
            bars: capped(&spans.histogram, display_cap(spans)),
            tail: tail(spans),
        },
        crate::plot::Histogram {
            title: format!(
                "spans per document ({} documents, mean {:.2}{})",
                report.documents,
                docs.mean,
                tail_note(tail(docs))
            ),
            axes: ("spans per document", "documents"),
            bars: capped(&docs.histogram, display_cap(docs)),
            tail: tail(docs),
        },
    ])
}

/// A histogram drawn with block characters, values grouped into at most `rows` bins; the last bin
/// holds everything at or above `cap`.
fn draw(out: &mut dyn Write, d: &Distribution, rows: usize) -> std::io::Result<()> {
    let cap = display_cap(d);
    let h = &capped(&d.histogram, cap);
    let (Some(&lo), Some(&hi)) = (h.keys().next(), h.keys().next_back()) else {
        return Ok(());
    };
    let width = ((hi - lo + 1) as f64 / rows as f64).ceil().max(1.0) as u64;
    let mut bins: Vec<(u64, u64)> = Vec::new();
    for (v, c) in h {
        let b = lo + (v - lo) / width * width;
        match bins.last_mut() {
            Some((start, n)) if *start == b => *n += c,
            _ => bins.push((b, *c)),
        }
    }
    let max = bins.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    for (start, n) in bins {
        let end = (start + width - 1).min(hi);
        let label = match (start == end, end == cap && cap < d.max) {
            (_, true) => format!("{start}+"),
            (true, false) => format!("{start}"),
            (false, false) => format!("{start}-{end}"),
        };
        let bar = "█".repeat(((n as f64 / max as f64) * 50.0).round() as usize);
        writeln!(out, "  {label:>9} │{bar} {}", thousands(n))?;
    }
    Ok(())
}

/// The report as text (the default output).
pub fn print_text(
    out: &mut dyn Write,
    r: &Report,
    manifest: Option<&(PathBuf, Manifest)>,
) -> std::io::Result<()> {
    if let Some((dir, m)) = manifest.filter(|(_, m)| !m.complete) {
        writeln!(out, "UNFINISHED  {}\n", unfinished(dir, m))?;
    }
    writeln!(
        out,
        "shards      {} ({:.1} MB on disk; {:.2}x smaller than int32 token ids)",
        r.shards,
        r.bytes_on_disk as f64 / 1e6,
        r.compression_ratio
    )?;
    writeln!(out, "documents   {}", thousands(r.documents))?;
    writeln!(out, "spans       {}", thousands(r.spans))?;
    writeln!(out, "tokens      {}", thousands(r.tokens))?;
    let pct = 100.0 * r.documents_under_two_spans as f64 / r.documents.max(1) as f64;
    writeln!(
        out,
        "documents with fewer than two spans: {} ({pct:.1}%). The coCondenser stage pairs two spans of a document, so it skips these; the Condenser stage still trains on their spans.",
        thousands(r.documents_under_two_spans)
    )?;
    for (title, d) in [
        ("span length (tokens)", &r.span_length),
        ("spans per document", &r.spans_per_document),
    ] {
        writeln!(
            out,
            "\n{title}: mean {:.1}, min {}, p50 {}, p90 {}, p99 {}, max {}",
            d.mean, d.min, d.p50, d.p90, d.p99, d.max
        )?;
        draw(out, d, 16)?;
    }
    writeln!(
        out,
        "\n[UNK]: {} tokens ({:.4}% of all)",
        thousands(r.unk_tokens),
        100.0 * r.unk_share
    )?;
    if !r.top_tokens.is_empty() {
        let tops: Vec<String> = r
            .top_tokens
            .iter()
            .map(|t| format!("{} {:.2}%", t.token, 100.0 * t.share))
            .collect();
        writeln!(out, "most frequent tokens: {}", tops.join(", "))?;
    }
    if !r.inputs.is_empty() {
        writeln!(out, "\ninputs (from the manifest):")?;
        for i in &r.inputs {
            let skipped: Vec<String> = i.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let skipped = if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            };
            writeln!(
                out,
                "  {}: {} documents, {} spans, {} tokens; skipped: {skipped}",
                i.path,
                thousands(i.documents),
                thousands(i.spans),
                thousands(i.tokens)
            )?;
        }
    }
    if !r.samples.is_empty() {
        writeln!(out, "\nsamples:")?;
        for s in &r.samples {
            writeln!(
                out,
                "  [{} span {} of {}] ({} tokens) {}",
                s.doc_id,
                s.span,
                s.shard,
                s.ids.len(),
                s.text
            )?;
        }
    }
    if r.verified {
        if r.findings.is_empty() {
            writeln!(out, "\nverify: every shard matches the manifest (rows, spans, tokens, sha256), schema and vocabulary ok")?;
        } else {
            writeln!(out, "\nverify: {} finding(s)", r.findings.len())?;
            for f in &r.findings {
                writeln!(out, "  {f}")?;
            }
        }
    }
    Ok(())
}
