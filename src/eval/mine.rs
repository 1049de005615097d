//! `condenser mine`: hard negatives for the second round of fine-tuning. The `eval` search (queries
//! encoded once, the corpus streamed in blocks, a running top-k, so memory never holds the corpus)
//! retrieves each judged query's top documents; the judged positives are dropped, the first
//! `--skip-top` of the rest too (a guard against relevant passages nobody judged), and `--negatives` of
//! what remains are drawn keyed by (seed, query id). The result is Tevatron training JSON Lines, which
//! `condenser finetune --train` reads.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::seq::IndexedRandom;

use super::retrieval::{for_each_doc, read_qrels, retrieve, SearchArgs};
use crate::prepare::segment::keyed_rng;

#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// The model (the first round's fine-tuned retriever, or any BERT), corpus, queries and labels
    /// (judged positives are never negatives).
    #[command(flatten)]
    pub search: SearchArgs,
    /// Output: Tevatron training JSON Lines (`-` for stdout).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Documents retrieved per query to draw negatives from.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// Leave out the first N non-positive documents (likely unjudged positives).
    #[arg(long, default_value_t = 0)]
    pub skip_top: usize,
    /// Negatives written per query (all the candidates when fewer).
    #[arg(long, default_value_t = 30)]
    pub negatives: usize,
    /// Seed of the draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Longest query (as fine-tuning cuts them).
    #[arg(long, default_value_t = 32)]
    pub query_max_len: usize,
}

#[derive(serde::Serialize)]
struct Passage<'a> {
    docid: &'a str,
    title: &'a str,
    text: &'a str,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    query_id: &'a str,
    query: &'a str,
    positive_passages: Vec<Passage<'a>>,
    negative_passages: Vec<Passage<'a>>,
}

pub fn run(args: MineArgs) -> Result<()> {
    anyhow::ensure!(
        args.depth >= 1 && args.depth <= 1000,
        "--depth must be in [1, 1000], got {}",
        args.depth
    );
    anyhow::ensure!(
        args.negatives >= 1,
        "--negatives must be at least 1 (a line without negatives is one `finetune` skips)"
    );
    args.search.refuse_output_over_inputs("--out", &args.out)?;
    let s = args.search.load()?;
    s.check_lengths(&[
        ("--max-len", args.search.max_len),
        ("--query-max-len", args.query_max_len),
    ])?;
    let qrels = read_qrels(&args.search.qrels)?;
    let spec = args.search.spec(args.query_max_len);
    let found = retrieve(&s.model, &s.tokenizer, &s.special, &spec, s.device)?;

    // Per judged query: its positives in the corpus, and the drawn negatives.
    let in_corpus: HashSet<&str> = found.docids.iter().map(String::as_str).collect();
    super::retrieval::JudgedCoverage::of(&qrels, &found.qids, &|d| in_corpus.contains(d))
        .check(&args.search)?;
    let mut picked: Vec<(usize, Vec<String>, Vec<String>)> = Vec::new();
    let (mut no_positive, mut few) = (0usize, 0usize);
    for (qi, qid) in found.qids.iter().enumerate() {
        let Some(judged) = qrels.get(qid) else {
            continue;
        };
        let mut positives: Vec<String> = judged
            .iter()
            .filter(|(d, &rel)| rel > 0 && in_corpus.contains(d.as_str()))
            .map(|(d, _)| d.clone())
            .collect();
        positives.sort();
        if positives.is_empty() {
            no_positive += 1;
            continue;
        }
        let candidates: Vec<&String> = found.run[qid]
            .iter()
            .take(args.depth)
            .map(|(d, _)| d)
            .filter(|d| judged.get(*d).is_none_or(|&rel| rel <= 0))
            .skip(args.skip_top)
            .collect();
        let mut rng = keyed_rng(args.seed, "mine", qid);
        let k = args.negatives.min(candidates.len());
        if k < args.negatives {
            few += 1;
        }
        let negatives: Vec<String> = candidates
            .choose_multiple(&mut rng, k)
            .map(|d| (*d).clone())
            .collect();
        picked.push((qi, positives, negatives));
    }
    anyhow::ensure!(!picked.is_empty(), "no judged query to mine");

    // A second pass over the corpus for the texts of the documents written (not the whole corpus).
    let wanted: HashSet<&str> = picked
        .iter()
        .flat_map(|(_, p, n)| p.iter().chain(n))
        .map(String::as_str)
        .collect();
    let mut texts: HashMap<String, (String, String)> = HashMap::with_capacity(wanted.len());
    for_each_doc(&args.search.corpus, |id, title, text| {
        if wanted.contains(id.as_str()) {
            texts.insert(id, (title.unwrap_or_default(), text));
        }
        Ok(())
    })?;
    let write = |out: &mut dyn Write| -> Result<()> {
        let mut out = std::io::BufWriter::new(out);
        for (qi, pos, neg) in &picked {
            let line = Line {
                query_id: &found.qids[*qi],
                query: &found.query_texts[*qi],
                positive_passages: passages_of(&texts, pos, &args.search.corpus)?,
                negative_passages: passages_of(&texts, neg, &args.search.corpus)?,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    };
    // A file appears whole under its name, or not at all.
    if args.out.as_os_str() == "-" {
        write(&mut std::io::stdout().lock())?;
    } else {
        let mut tmp = crate::eval::embeddings_out::TempOut::create(&args.out)?;
        write(tmp.file()).with_context(|| format!("writing {}", args.out.display()))?;
        tmp.persist()?;
    }
    let negatives_written: usize = picked.iter().map(|(_, _, n)| n.len()).sum();
    log::info!(
        "{} queries written with {:.1} negatives each on average ({} judged queries without a relevant document in the corpus left out; {} with fewer than {} candidates)",
        picked.len(),
        negatives_written as f64 / picked.len() as f64,
        no_positive,
        few,
        args.negatives
    );
    Ok(())
}

/// The written form of documents `ids` (their texts were read in the second pass).
fn passages_of<'a>(
    texts: &'a HashMap<String, (String, String)>,
    ids: &'a [String],
    corpus: &std::path::Path,
) -> Result<Vec<Passage<'a>>> {
    ids.iter()
        .map(|id| {
            let (title, text) = texts
                .get(id)
                .with_context(|| format!("{}: document {id} went missing", corpus.display()))?;
            Ok(Passage {
                docid: id,
                title,
                text,
            })
        })
        .collect()
}
