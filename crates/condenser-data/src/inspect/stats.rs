//! What `inspect` reports: the `Report` (also the `--json` document), its distributions, and the
//! `Accumulator` the scan adds up before `finish` derives the figures.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::shards::manifest::Manifest;

/// Everything `inspect` reports (also the `--json` document).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The manifest's `complete`: false while `prepare` has not finished (the shards so far), null
    /// without a manifest.
    pub complete: Option<bool>,
    pub shards: u64,
    pub bytes_on_disk: u64,
    /// Token ids as int32 (4 bytes each) over bytes on disk.
    pub compression_ratio: f64,
    pub documents: u64,
    pub spans: u64,
    pub tokens: u64,
    /// Documents with fewer than two spans: the coCondenser stage cannot pair them.
    pub documents_under_two_spans: u64,
    pub span_length: Distribution,
    pub spans_per_document: Distribution,
    pub unk_tokens: u64,
    pub unk_share: f64,
    pub top_tokens: Vec<TopToken>,
    pub samples: Vec<Sample>,
    /// Per input, from the manifest: documents written and skips by reason.
    pub inputs: Vec<crate::shards::manifest::InputStats>,
    /// Only with --verify: what did not match (empty when everything did).
    pub findings: Vec<String>,
    pub verified: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Distribution {
    pub mean: f64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// value -> count
    pub histogram: BTreeMap<u64, u64>,
}

impl Distribution {
    fn from_counts(counts: &BTreeMap<u64, u64>) -> Self {
        let n: u64 = counts.values().sum();
        if n == 0 {
            return Distribution::default();
        }
        let total: f64 = counts.iter().map(|(v, c)| *v as f64 * *c as f64).sum();
        let pct = |p: f64| {
            let rank = ((p * n as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (v, c) in counts {
                seen += c;
                if seen >= rank {
                    return *v;
                }
            }
            *counts.keys().next_back().unwrap()
        };
        Distribution {
            mean: total / n as f64,
            min: *counts.keys().next().unwrap(),
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: *counts.keys().next_back().unwrap(),
            histogram: counts.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TopToken {
    pub id: u32,
    pub token: String,
    pub count: u64,
    pub share: f64,
}

#[derive(Debug, Serialize, Clone)]
pub struct Sample {
    pub shard: String,
    pub doc_id: String,
    pub span: usize,
    pub ids: Vec<u32>,
    pub text: String,
}

/// What the scan of the shards adds up, before `finish` makes a report of it.
pub struct Accumulator {
    pub span_len: BTreeMap<u64, u64>,
    pub spans_per_doc: BTreeMap<u64, u64>,
    pub token_counts: Vec<u64>,
    pub unk: u32,
    pub unk_count: u64,
    pub vocab: Option<u32>,
    pub reservoir: Vec<Sample>,
    pub seen_spans: u64,
    pub rng: rand_chacha::ChaCha8Rng,
    pub want_samples: usize,
}

/// The report's derived figures from what the scan added up: distributions, [UNK] share, the top
/// tokens and the samples decoded.
pub fn finish(
    report: &mut Report,
    acc: &Accumulator,
    tok: Option<&crate::tokenizer::Tokenizer>,
    top: usize,
    manifest: Option<&Manifest>,
) {
    report.compression_ratio = if report.bytes_on_disk > 0 {
        report.tokens as f64 * 4.0 / report.bytes_on_disk as f64
    } else {
        0.0
    };
    report.documents_under_two_spans = acc.spans_per_doc.range(..2).map(|(_, c)| c).sum();
    report.span_length = Distribution::from_counts(&acc.span_len);
    report.spans_per_document = Distribution::from_counts(&acc.spans_per_doc);
    report.unk_tokens = acc.unk_count;
    report.unk_share = if report.tokens > 0 {
        acc.unk_count as f64 / report.tokens as f64
    } else {
        0.0
    };
    let mut order: Vec<(u32, u64)> = acc
        .token_counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| (i as u32, *c))
        .collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    report.top_tokens = order
        .into_iter()
        .take(top)
        .map(|(id, count)| TopToken {
            id,
            token: tok
                .and_then(|t| t.id_to_token(id).map(str::to_owned))
                .unwrap_or_else(|| format!("#{id}")),
            count,
            share: count as f64 / report.tokens.max(1) as f64,
        })
        .collect();
    report.samples = acc
        .reservoir
        .iter()
        .map(|s| Sample {
            text: tok
                .and_then(|t| t.decode(&s.ids, false).ok())
                .unwrap_or_default(),
            ..s.clone()
        })
        .collect();
    if let Some(m) = manifest {
        report.inputs = m.inputs.clone();
    }
}

/// Values above `cap` folded into `cap`, so a long tail does not flatten the picture.
pub fn capped(h: &BTreeMap<u64, u64>, cap: u64) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for (&v, &c) in h {
        *out.entry(v.min(cap)).or_default() += c;
    }
    out
}

/// Where a picture of a distribution stops: a bit past its 99th percentile.
pub fn display_cap(d: &Distribution) -> u64 {
    (d.p99 * 2).max(10).min(d.max)
}
