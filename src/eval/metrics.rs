//! Retrieval metrics, computed as trec_eval computes them on the same run: documents ranked by score,
//! ties broken by document id in decreasing order; gains are the graded labels (linear); a query counts
//! when the qrels give it at least one relevant (label > 0) document; relevant documents missing from
//! the corpus count as relevant and unretrievable. Judged queries that have no ranking at all (absent
//! from the queries file) are counted and left out, as trec_eval leaves out queries absent from the run.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// qid -> docid -> label.
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// Sorts (docid, score) as trec_eval does: score descending, then docid descending.
pub fn trec_order(ranked: &mut [(String, f32)]) {
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
    /// k -> mean recall@k (k capped by the corpus size).
    pub recall: BTreeMap<usize, f64>,
    /// Queries with at least one relevant document: the denominator of every mean.
    pub queries: usize,
    /// Queries of the qrels with no relevant document (left out of the means).
    pub queries_without_relevant: usize,
    /// Relevant (qid, docid) pairs whose document is not in the corpus.
    pub relevant_not_in_corpus: usize,
    /// Queries of the qrels (with a relevant document) that the run has no entry for, i.e. missing from
    /// the queries file: left out of the means, not scored 0.
    pub judged_queries_not_in_queries: usize,
}

/// `run`: qid -> documents in rank order (already `trec_order`ed). `in_corpus` says whether a docid
/// exists in the corpus.
pub fn evaluate(
    run: &HashMap<String, Vec<(String, f32)>>,
    qrels: &Qrels,
    ks: &[usize],
    in_corpus: &dyn Fn(&str) -> bool,
) -> Metrics {
    let (mut mrr, mut ndcg) = (0.0, 0.0);
    let mut recall: BTreeMap<usize, f64> = ks.iter().map(|&k| (k, 0.0)).collect();
    let (mut n, mut without, mut missing, mut unasked) = (0usize, 0usize, 0usize, 0usize);
    let mut qids: Vec<&String> = qrels.keys().collect();
    qids.sort();
    for qid in qids {
        let judged = &qrels[qid];
        let relevant: Vec<i32> = judged.values().copied().filter(|&r| r > 0).collect();
        if relevant.is_empty() {
            without += 1;
            continue;
        }
        let Some(ranked) = run.get(qid) else {
            unasked += 1;
            continue;
        };
        missing += judged
            .iter()
            .filter(|(d, &r)| r > 0 && !in_corpus(d))
            .count();
        n += 1;
        let label = |d: &str| judged.get(d).copied().unwrap_or(0);
        if let Some(pos) = ranked.iter().take(10).position(|(d, _)| label(d) > 0) {
            mrr += 1.0 / (pos + 1) as f64;
        }
        let dcg: f64 = ranked
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, (d, _))| label(d).max(0) as f64 / (i as f64 + 2.0).log2())
            .sum();
        let mut ideal = relevant.clone();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal
            .iter()
            .take(10)
            .enumerate()
            .map(|(i, &g)| g as f64 / (i as f64 + 2.0).log2())
            .sum();
        ndcg += if idcg > 0.0 { dcg / idcg } else { 0.0 };
        for &k in ks {
            let hits = ranked.iter().take(k).filter(|(d, _)| label(d) > 0).count();
            *recall.get_mut(&k).unwrap() += hits as f64 / relevant.len() as f64;
        }
    }
    let mean = |x: f64| if n > 0 { x / n as f64 } else { 0.0 };
    Metrics {
        mrr_at_10: mean(mrr),
        ndcg_at_10: mean(ndcg),
        recall: recall.into_iter().map(|(k, v)| (k, mean(v))).collect(),
        queries: n,
        queries_without_relevant: without,
        relevant_not_in_corpus: missing,
        judged_queries_not_in_queries: unasked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(list: &[(&str, &[(&str, f32)])]) -> HashMap<String, Vec<(String, f32)>> {
        list.iter()
            .map(|(q, docs)| {
                let mut v: Vec<(String, f32)> =
                    docs.iter().map(|(d, s)| (d.to_string(), *s)).collect();
                trec_order(&mut v);
                (q.to_string(), v)
            })
            .collect()
    }

    fn qrels_of(list: &[(&str, &str, i32)]) -> Qrels {
        let mut q = Qrels::new();
        for (qid, d, r) in list {
            q.entry(qid.to_string())
                .or_default()
                .insert(d.to_string(), *r);
        }
        q
    }

    #[test]
    fn hand_computed_case() {
        // q1: relevant d2 (label 2) and d5 (label 1); ranking d1, d2, d3, d4, d5.
        let run = run_of(&[(
            "q1",
            &[
                ("d1", 5.0),
                ("d2", 4.0),
                ("d3", 3.0),
                ("d4", 2.0),
                ("d5", 1.0),
            ],
        )]);
        let qrels = qrels_of(&[("q1", "d2", 2), ("q1", "d5", 1), ("q1", "d1", 0)]);
        let m = evaluate(&run, &qrels, &[1, 2, 5], &|_| true);
        assert!((m.mrr_at_10 - 0.5).abs() < 1e-12);
        // DCG = 2/log2(3) + 1/log2(6); IDCG = 2/log2(2) + 1/log2(3).
        let dcg = 2.0 / 3f64.log2() + 1.0 / 6f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        assert!((m.ndcg_at_10 - dcg / idcg).abs() < 1e-12);
        assert_eq!(m.recall[&1], 0.0);
        assert_eq!(m.recall[&2], 0.5);
        assert_eq!(m.recall[&5], 1.0);
        assert_eq!(m.queries, 1);
    }

    #[test]
    fn ties_break_by_docid_descending_like_trec_eval() {
        // Equal scores: trec_eval ranks "b" before "a"; only "a" is relevant -> rank 2.
        let run = run_of(&[("q", &[("a", 1.0), ("b", 1.0)])]);
        let m = evaluate(&run, &qrels_of(&[("q", "a", 1)]), &[1], &|_| true);
        assert_eq!(m.mrr_at_10, 0.5);
        assert_eq!(m.recall[&1], 0.0);
    }

    #[test]
    fn unknown_documents_and_queries_without_relevant() {
        // q1: one relevant doc found, one relevant doc absent from the corpus -> recall 1/2.
        // q2: only non-relevant judgements -> not in the means. q3: relevant, but nothing retrieved ->
        // zeros. q4: judged but not asked (no run entry) -> counted and left out.
        let run = run_of(&[("q1", &[("d1", 1.0)]), ("q2", &[("d1", 1.0)]), ("q3", &[])]);
        let qrels = qrels_of(&[
            ("q1", "d1", 1),
            ("q1", "ghost", 1),
            ("q2", "d1", 0),
            ("q3", "d1", 1),
            ("q4", "d1", 1),
        ]);
        let m = evaluate(&run, &qrels, &[10], &|d| d != "ghost");
        assert_eq!(m.queries, 2);
        assert_eq!(m.queries_without_relevant, 1);
        assert_eq!(m.relevant_not_in_corpus, 1);
        assert_eq!(m.judged_queries_not_in_queries, 1);
        assert_eq!(m.recall[&10], (0.5 + 0.0) / 2.0);
        assert_eq!(m.mrr_at_10, (1.0 + 0.0) / 2.0);
    }
}
