//! `condenser eval`: dense retrieval with last-layer CLS vectors and dot products, as in the papers.
//!
//! Queries are encoded once; the corpus is streamed in blocks (encoded, scored against every query,
//! merged into a running top-k per query), so memory holds one block and the top-k lists, never the
//! corpus. Layouts: BEIR (`corpus.jsonl`, `queries.jsonl`, `qrels/test.tsv`) and MS MARCO
//! (`collection.tsv`, `queries.tsv`, TREC 4-column qrels).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::encode::embed;
use super::metrics::{evaluate, trec_order, Metrics, Qrels};
use crate::corpus::{self, Item, ReadOptions};
use crate::device::DeviceChoice;
use crate::model::{hf, Condenser, HeadConfig};
use crate::progress::{Progress, Unit};

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub search: SearchArgs,
    /// Longest query.
    #[arg(long, default_value_t = 64)]
    pub query_max_len: usize,
    /// Write the ranking as a TREC run file (`qid Q0 docid rank score condenser`) for trec_eval.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Metrics as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A model searching a corpus for judged queries: what `eval` and `mine` share.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Model: a Hugging Face directory (a checkpoint, or any BERT).
    #[arg(long)]
    pub model: PathBuf,
    /// Corpus: BEIR corpus.jsonl (`_id`, `title`, `text`) or MS MARCO collection.tsv (`pid<TAB>text`).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Queries: BEIR queries.jsonl or MS MARCO queries.tsv (`qid<TAB>text`).
    #[arg(long)]
    pub queries: PathBuf,
    /// Relevance labels: BEIR qrels TSV (`query-id corpus-id score`, header) or TREC (`qid 0 docid rel`).
    #[arg(long)]
    pub qrels: PathBuf,
    /// Longest passage, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Corpus passages encoded and scored per block.
    #[arg(long, default_value_t = 4096)]
    pub block: usize,
    /// Leave the BEIR title out of the passage text (default: "title text").
    #[arg(long)]
    pub no_title: bool,
    /// What joins a passage's title and text: space ("title text") or sep ("title[SEP]text", the
    /// tokenizer's separator) [default: the model folder's condenser_retriever.json, else space].
    #[arg(long, value_enum)]
    pub title_separator: Option<crate::model::retriever::TitleSeparator>,
    /// Where to run: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "auto|cpu|cuda|cuda:N")]
    pub device: DeviceChoice,
}

/// The model of `SearchArgs`, ready to encode.
pub struct Searcher {
    pub device: Device,
    pub tokenizer: crate::tokenizer::Tokenizer,
    pub special: crate::tokenizer::SpecialIds,
    pub model: Condenser,
    _vs: tch::nn::VarStore,
}

impl SearchArgs {
    /// Loads the model (its own tokenizer) on the chosen device.
    pub fn load(&self) -> Result<Searcher> {
        hf::check_model_dir(&self.model).context("--model")?;
        let device = crate::device::select(self.device)?;
        let tokenizer = crate::tokenizer::load(&self.model.join(hf::TOKENIZER_FILE))?;
        let special = crate::tokenizer::special_ids(&tokenizer)?;
        let loaded = hf::load(&self.model, device, HeadConfig::default(), 0)?;
        // Ids past the model's embeddings would fail inside it: refuse the pair at start.
        let vocab = tokenizer.vocab_size() as i64;
        if vocab > loaded.model.config.vocab_size {
            bail!(
                "{}: the tokenizer's vocabulary ({vocab}) is larger than the model's ({})",
                self.model.display(),
                loaded.model.config.vocab_size
            );
        }
        Ok(Searcher {
            device,
            tokenizer,
            special,
            model: loaded.model,
            _vs: loaded.vs,
        })
    }

    /// Refuses an output of the command (`flag PATH`) that is the corpus, queries or qrels file.
    pub fn refuse_output_over_inputs(&self, flag: &str, out: &Path) -> Result<()> {
        crate::paths::refuse_output_over_inputs(
            flag,
            out,
            &[
                ("--corpus", &self.corpus),
                ("--queries", &self.queries),
                ("--qrels", &self.qrels),
            ],
        )
    }

    /// How the model reads and scores passages: its folder's `condenser_retriever.json` (defaults
    /// without one), overridden by `--title-separator`.
    pub fn retriever(&self) -> Result<crate::model::retriever::RetrieverConfig> {
        let mut r = crate::model::retriever::RetrieverConfig::read(&self.model)?;
        if let Some(t) = self.title_separator {
            r.title_separator = t;
        }
        Ok(r)
    }

    /// What `retrieve` reads, with queries cut to `query_max_len`; titles joined as the model was
    /// trained (`retriever`) with `tok`'s separator.
    pub fn spec(
        &self,
        query_max_len: usize,
        tok: &crate::tokenizer::Tokenizer,
        special: &crate::tokenizer::SpecialIds,
    ) -> Result<SearchSpec<'_>> {
        let r = self.retriever()?;
        Ok(SearchSpec {
            queries: &self.queries,
            corpus: &self.corpus,
            max_len: self.max_len,
            query_max_len,
            batch_size: self.batch_size,
            block: self.block,
            title: (!self.no_title)
                .then(|| r.title_separator.joiner(tok, special))
                .transpose()?,
            similarity: r.similarity,
        })
    }
}

/// Deepest rank kept (Recall@1000).
const DEPTH: usize = 1000;

/// Reads qrels in either layout; a malformed line is an error naming it.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut q = Qrels::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (qid, doc, rel) = match cols.as_slice() {
            [] => continue,
            [q, _, d, r] => (q, d, r),
            [q, d, r] => (q, d, r),
            _ => bail!(
                "{}:{}: expected `qid docid label` or `qid 0 docid label`",
                path.display(),
                i + 1
            ),
        };
        let Ok(rel) = rel.parse::<f64>() else {
            if i == 0 {
                continue; // the BEIR header `query-id corpus-id score`
            }
            bail!(
                "{}:{}: label {rel:?} is not a number",
                path.display(),
                i + 1
            );
        };
        q.entry(qid.to_string())
            .or_default()
            .insert(doc.to_string(), rel as i32);
    }
    anyhow::ensure!(
        !q.is_empty(),
        "{}: no relevance judgements (expected `qid docid label` or `qid 0 docid label` lines)",
        path.display()
    );
    Ok(q)
}

/// Which judged queries can be scored (or mined): those in the queries file with a relevant document
/// in the corpus. `eval` and `mine` share it, so both say which of the two is missing.
pub struct JudgedCoverage {
    pub judged: usize,
    /// Judged queries the queries file does not hold.
    pub not_in_queries: usize,
    /// Judged queries in the queries file whose relevant documents are all missing from the corpus.
    pub no_relevant_in_corpus: usize,
}

impl JudgedCoverage {
    pub fn of(qrels: &Qrels, qids: &[String], in_corpus: &dyn Fn(&str) -> bool) -> Self {
        let asked: HashSet<&str> = qids.iter().map(String::as_str).collect();
        let mut c = JudgedCoverage {
            judged: qrels.len(),
            not_in_queries: 0,
            no_relevant_in_corpus: 0,
        };
        for (qid, judged) in qrels {
            if !asked.contains(qid.as_str()) {
                c.not_in_queries += 1;
            } else if !judged.iter().any(|(d, &rel)| rel > 0 && in_corpus(d)) {
                c.no_relevant_in_corpus += 1;
            }
        }
        c
    }

    /// Judged queries that can be scored.
    pub fn usable(&self) -> usize {
        self.judged - self.not_in_queries - self.no_relevant_in_corpus
    }

    /// Warns about judged queries missing from the queries file; fails, naming both causes, when no
    /// judged query is left.
    pub fn check(&self, s: &SearchArgs) -> Result<()> {
        if self.not_in_queries > 0 {
            log::warn!(
                "{} of the {} judged queries of {} are not in {}: left out",
                self.not_in_queries,
                self.judged,
                s.qrels.display(),
                s.queries.display()
            );
        }
        anyhow::ensure!(
            self.usable() > 0,
            "no judged query to use: of the {} judged queries of {}, {} are not in the queries file {} and {} have no relevant document in the corpus {}",
            self.judged,
            s.qrels.display(),
            self.not_in_queries,
            s.queries.display(),
            self.no_relevant_in_corpus,
            s.corpus.display()
        );
        Ok(())
    }
}

/// Refuses a second record with an id already seen, naming both records (1-based, in file order): a
/// duplicate corpus id would be retrieved twice and counted twice (recall above 1).
struct UniqueIds {
    what: &'static str,
    path: PathBuf,
    seen: HashMap<String, usize>,
}

impl UniqueIds {
    fn new(what: &'static str, path: &Path) -> Self {
        UniqueIds {
            what,
            path: path.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    fn check(&mut self, id: &str) -> Result<()> {
        let n = self.seen.len() + 1;
        if let Some(first) = self.seen.insert(id.to_string(), n) {
            bail!(
                "{}: {} id {id:?} appears twice (records {first} and {n}); ids must be unique",
                self.path.display(),
                self.what
            );
        }
        Ok(())
    }
}

/// Reads (id, text) records of a file through the corpus readers; `title` (a joiner) joins a BEIR
/// title in front ("title text", as fine-tuning joins them: `corpus::passage::join_passage`).
pub fn for_each_text(
    path: &Path,
    title: Option<&str>,
    read_bytes: Arc<AtomicU64>,
    mut f: impl FnMut(String, String) -> Result<()>,
) -> Result<()> {
    for_each_doc_counting(path, read_bytes, |id, t, text| match title {
        Some(joiner) => f(
            id,
            crate::corpus::passage::join_passage(t.as_deref(), &text, joiner),
        ),
        None => f(id, text),
    })
}

/// Reads (id, title, text) records of a file through the corpus readers.
pub fn for_each_doc(
    path: &Path,
    f: impl FnMut(String, Option<String>, String) -> Result<()>,
) -> Result<()> {
    for_each_doc_counting(path, Default::default(), f)
}

/// As [`for_each_doc`], adding the raw (compressed) bytes read to `read_bytes`, for progress.
pub fn for_each_doc_counting(
    path: &Path,
    read_bytes: Arc<AtomicU64>,
    mut f: impl FnMut(String, Option<String>, String) -> Result<()>,
) -> Result<()> {
    let input = corpus::Input {
        path: path.to_path_buf(),
        exists: path.exists(),
    };
    if !input.exists {
        bail!("{}: no such file", path.display());
    }
    let opts = ReadOptions::default();
    corpus::read_input(&input, &opts, read_bytes, &mut |item| match item {
        Item::Doc(d) => f(d.id, d.title, d.text),
        Item::Skip(s) if s.reason.is_error() => bail!("{}", s.detail),
        _ => Ok(()),
    })
}

/// Scores every query against the corpus, block by block, keeping the top DEPTH per query.
pub struct Search {
    queries: Tensor,     // (Q, H)
    best_scores: Tensor, // (Q, <=K)
    best_docs: Tensor,   // (Q, <=K), global document index
}

impl Search {
    pub fn new(queries: Tensor) -> Self {
        let q = queries.size()[0];
        let device = queries.device();
        Search {
            queries,
            best_scores: Tensor::zeros([q, 0], (Kind::Float, device)),
            best_docs: Tensor::zeros([q, 0], (Kind::Int64, device)),
        }
    }

    /// Adds a block of document vectors whose first global index is `offset`.
    pub fn add(&mut self, docs: &Tensor, offset: i64) {
        let scores = self.queries.matmul(&docs.tr()); // (Q, B)
        let b = scores.size()[1];
        let idx = (Tensor::arange(b, (Kind::Int64, scores.device())) + offset)
            .unsqueeze(0)
            .expand([scores.size()[0], b], false);
        let all_scores = Tensor::cat(&[&self.best_scores, &scores], 1);
        let all_docs = Tensor::cat(&[&self.best_docs, &idx], 1);
        let k = (DEPTH as i64).min(all_scores.size()[1]);
        let (top, at) = all_scores.topk(k, 1, true, true);
        self.best_docs = all_docs.gather(1, &at, false);
        self.best_scores = top;
    }

    /// (scores, doc indices) on the CPU.
    pub fn finish(self) -> (Vec<Vec<f32>>, Vec<Vec<i64>>) {
        let s = self.best_scores.to_device(Device::Cpu);
        let d = self.best_docs.to_device(Device::Cpu);
        (
            Vec::<Vec<f32>>::try_from(&s).unwrap_or_default(),
            Vec::<Vec<i64>>::try_from(&d).unwrap_or_default(),
        )
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(run) = &args.run {
        args.search.refuse_output_over_inputs("--run", run)?;
    }
    let s = args.search.load()?;
    s.model.config.check_lengths(&[
        ("--max-len", args.search.max_len),
        ("--query-max-len", args.query_max_len),
    ])?;
    let m = evaluate_model(&s.model, &s.tokenizer, &s.special, &args, s.device)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &m)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", format_metrics(&m))?;
    }
    Ok(())
}

pub fn format_metrics(m: &Metrics) -> String {
    let recalls: Vec<String> = m
        .recall
        .iter()
        .map(|(k, v)| format!("R@{k} {:.4}", v))
        .collect();
    format!(
        "MRR@10 {:.4}  nDCG@10 {:.4}  {}  ({} queries; {} without relevant documents and {} not in the queries file left out; {} relevant documents not in the corpus)",
        m.mrr_at_10,
        m.ndcg_at_10,
        recalls.join("  "),
        m.queries,
        m.queries_without_relevant,
        m.judged_queries_not_in_queries,
        m.relevant_not_in_corpus
    )
}

/// What `retrieve` found: the queries and each one's ranked documents (best first, TREC order).
pub struct Retrieved {
    pub qids: Vec<String>,
    pub query_texts: Vec<String>,
    /// Every corpus document, in corpus order.
    pub docids: Vec<String>,
    pub run: HashMap<String, Vec<(String, f32)>>,
}

/// What `retrieve` reads and how it encodes.
pub struct SearchSpec<'a> {
    pub queries: &'a Path,
    pub corpus: &'a Path,
    pub max_len: usize,
    pub query_max_len: usize,
    pub batch_size: usize,
    pub block: usize,
    /// The joiner of a BEIR passage's title and text ("title text" with " "); None: the text alone.
    pub title: Option<String>,
    /// How queries and passages are compared (the model folder's: dot, or cosine).
    pub similarity: crate::model::retriever::Similarity,
}

/// Encodes the queries once and streams the corpus in blocks, keeping the top DEPTH per query.
pub fn retrieve(
    model: &Condenser,
    tok: &crate::tokenizer::Tokenizer,
    special: &crate::tokenizer::SpecialIds,
    spec: &SearchSpec,
    device: Device,
) -> Result<Retrieved> {
    let (mut qids, mut qseqs, mut query_texts) = (Vec::new(), Vec::new(), Vec::new());
    let mut unique = UniqueIds::new("query", spec.queries);
    for_each_text(spec.queries, None, Default::default(), |id, text| {
        unique.check(&id)?;
        qids.push(id);
        qseqs.push(crate::tokenizer::encode_for_model(
            tok,
            special,
            &text,
            spec.query_max_len,
        )?);
        query_texts.push(text);
        Ok(())
    })?;
    anyhow::ensure!(!qids.is_empty(), "{}: no queries", spec.queries.display());
    let queries = tch::no_grad(|| {
        spec.similarity.prepare(&embed(
            model,
            &qseqs,
            special.pad as i64,
            spec.batch_size,
            device,
        ))
    });
    let mut search = Search::new(queries);
    // Progress: bytes of the corpus file read (compressed bytes when compressed) of its size.
    let read_bytes = Arc::new(AtomicU64::new(0));
    let size = std::fs::metadata(spec.corpus).ok().map(|m| m.len());
    let progress = Progress::new("eval", Unit::Bytes, size);
    progress.update(0, "");
    let mut docids: Vec<String> = Vec::new();
    let mut block: Vec<Vec<i64>> = Vec::new();
    let flush = |block: &mut Vec<Vec<i64>>, search: &mut Search, offset: usize| {
        if !block.is_empty() {
            let d = tch::no_grad(|| {
                spec.similarity.prepare(&embed(
                    model,
                    block,
                    special.pad as i64,
                    spec.batch_size,
                    device,
                ))
            });
            search.add(&d, offset as i64);
            progress.update(
                read_bytes.load(Ordering::Relaxed),
                &format!("{} passages encoded and searched", offset + block.len()),
            );
            block.clear();
        }
    };
    let mut unique = UniqueIds::new("document", spec.corpus);
    for_each_text(
        spec.corpus,
        spec.title.as_deref(),
        read_bytes.clone(),
        |id, text| {
            unique.check(&id)?;
            docids.push(id);
            block.push(crate::tokenizer::encode_for_model(
                tok,
                special,
                &text,
                spec.max_len,
            )?);
            if block.len() >= spec.block {
                let offset = docids.len() - block.len();
                flush(&mut block, &mut search, offset);
            }
            Ok(())
        },
    )?;
    let offset = docids.len() - block.len();
    flush(&mut block, &mut search, offset);
    progress.finish();
    drop(unique);
    let (scores, docs) = search.finish();
    let mut run: HashMap<String, Vec<(String, f32)>> = HashMap::new();
    for (qi, qid) in qids.iter().enumerate() {
        let mut ranked: Vec<(String, f32)> = docs[qi]
            .iter()
            .zip(&scores[qi])
            .map(|(&d, &s)| (docids[d as usize].clone(), s))
            .collect();
        trec_order(&mut ranked);
        run.insert(qid.clone(), ranked);
    }
    Ok(Retrieved {
        qids,
        query_texts,
        docids,
        run,
    })
}

/// Encodes, searches and scores; writes the run file when asked.
pub fn evaluate_model(
    model: &Condenser,
    tok: &crate::tokenizer::Tokenizer,
    special: &crate::tokenizer::SpecialIds,
    args: &EvalArgs,
    device: Device,
) -> Result<Metrics> {
    let qrels = read_qrels(&args.search.qrels)?;
    let spec = args.search.spec(args.query_max_len, tok, special)?;
    let Retrieved {
        qids, docids, run, ..
    } = retrieve(model, tok, special, &spec, device)?;
    if let Some(path) = &args.run {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create", path.display()))?,
        );
        for qid in &qids {
            for (rank, (d, s)) in run[qid].iter().enumerate() {
                writeln!(w, "{qid} Q0 {d} {} {s} condenser", rank + 1)?;
            }
        }
        w.flush()?;
    }
    let known: HashSet<&str> = docids.iter().map(String::as_str).collect();
    let ks: Vec<usize> = [10, 100, 1000]
        .iter()
        .map(|&k: &usize| k.min(docids.len()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    JudgedCoverage::of(&qrels, &qids, &|d| known.contains(d)).check(&args.search)?;
    let m = evaluate(&run, &qrels, &ks, &|d| known.contains(d));
    Ok(m)
}
