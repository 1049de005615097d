#!/usr/bin/env bash
# The end-to-end demo, after `pipelines/setup.sh`: build, then each stage that exists so far.
# Outputs go to runs/demo/ (git-ignored); a rerun reuses what is complete.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
bin=target/release/condenser
runs=runs/demo
mkdir -p "$runs"

echo "== condenser env" >&2
"$bin" env

# The demo corpus: Wikipedia leads (JSON keyed by title), the raw MediaWiki dump through our own markup
# stripper, and the MS MARCO passages of the RAG 2024 set (pid<TAB>text).
echo "== condenser prepare (demo corpus -> $runs/shards)" >&2
"$bin" prepare \
  data/wiki-leads/summaries_en-us.json \
  data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 \
  data/demo/msmarco-passages.tsv \
  --out "$runs/shards" --shard-size 2MB

echo "== condenser inspect $runs/shards" >&2
"$bin" inspect "$runs/shards" --verify --samples 3 --plot "$runs/shards-histograms.png"

# Condenser stage from the MiniLM warm start (fresh MLM head and Condenser head), then the coCondenser
# stage from that checkpoint with its head; both write Hugging Face checkpoints.
echo "== condenser train: Condenser stage ($runs/condenser)" >&2
# A stage whose final model exists is reused; one that stopped part-way starts over (--overwrite).
[ -d "$runs/condenser/final" ] || "$bin" train "$runs/shards" --init data/minilm --config configs/demo.toml \
  --out "$runs/condenser" --overwrite
echo "== condenser train: coCondenser stage ($runs/cocondenser)" >&2
[ -d "$runs/cocondenser/final" ] || "$bin" train "$runs/shards" --init "$runs/condenser/final" \
  --config configs/demo-cocondenser.toml --out "$runs/cocondenser" --overwrite
"$bin" curves "$runs/condenser" --out "$runs/condenser-curves.png"
"$bin" curves "$runs/cocondenser" --out "$runs/cocondenser-curves.png"

# Retrieval on the RAG 2024 SILVER set (citation-count labels, not human judgements), before and after.
silver=data/rag24-silver
for model in data/minilm "$runs/cocondenser/final"; do
  echo "== condenser eval --model $model (RAG 2024 silver)" >&2
  "$bin" eval --model "$model" --corpus $silver/collection.tsv --queries $silver/queries.tsv \
    --qrels $silver/qrels.silver.txt --run "$runs/$(basename "$(dirname "$model")")-$(basename "$model").silver.trec"
done
