#!/usr/bin/env bash
# The papers' claim at small scale: from the same initialisation and the same step budget, train
#   (a) plain MLM (no head: loss.head_weight = 0, the head gets no gradient),
#   (b) Condenser,
#   (c) Condenser for half the steps, then coCondenser for the other half,
# and evaluate each, and the untrained initialisation, on the RAG 2024 SILVER set (citation-count labels,
# not human judgements) and on held-out span pairs of the training corpus. Writes a Markdown table.
#   STEPS=30 bash pipelines/experiment.sh        (after pipelines/setup.sh; outputs in runs/experiment/)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-30}
half=$((steps / 2))
out=${OUT:-runs/experiment}
bin=target/release/condenser
cargo build --release --locked >&2
mkdir -p "$out"
shards="$out/shards"
"$bin" prepare data/wiki-leads/summaries_en-us.json \
  data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 \
  data/demo/msmarco-passages.tsv --out "$shards" --shard-size 2MB >/dev/null
common=(--data "$shards" --device "${DEVICE:-auto}")
"$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/mlm" \
  --set optim.max_steps="$steps" --set loss.head_weight=0 >/dev/null
"$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/condenser" \
  --set optim.max_steps="$steps" >/dev/null
"$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/condenser-half" \
  --set optim.max_steps="$half" >/dev/null
"$bin" train "${common[@]}" --init "$out/condenser-half/final" --config configs/demo-cocondenser.toml \
  --out "$out/cocondenser" --set optim.max_steps="$((steps - half))" >/dev/null

silver=data/rag24-silver
for name in init mlm condenser cocondenser; do
  model=$out/$name/final
  [ "$name" = init ] && model=data/minilm
  "$bin" eval --model "$model" --corpus $silver/collection.tsv --queries $silver/queries.tsv \
    --qrels $silver/qrels.silver.txt --json --device "${DEVICE:-auto}" > "$out/$name.silver.json"
  "$bin" eval-spans "$shards" --model "$model" --holdout-fraction 0.02 --json \
    --device "${DEVICE:-auto}" > "$out/$name.spans.json"
done

python3 - "$out" "$steps" <<'PY'
import json, sys
out, steps = sys.argv[1], sys.argv[2]
rows = [("init", "all-MiniLM-L6-v2, untrained"), ("mlm", f"plain MLM, {steps} steps"),
        ("condenser", f"Condenser, {steps} steps"), ("cocondenser", f"Condenser {int(steps)//2} + coCondenser {int(steps) - int(steps)//2} steps")]
lines = ["| model | silver MRR@10 | silver nDCG@10 | silver R@100 | span MRR | span R@1 |", "|---|---|---|---|---|---|"]
for key, label in rows:
    s = json.load(open(f"{out}/{key}.silver.json")); p = json.load(open(f"{out}/{key}.spans.json"))
    lines.append(f"| {label} | {s['mrr_at_10']:.4f} | {s['ndcg_at_10']:.4f} | {s['recall']['100']:.4f} | {p['mrr']:.4f} | {p['recall_at_1']:.4f} |")
p = json.load(open(f"{out}/init.spans.json")); s = json.load(open(f"{out}/init.silver.json"))
lines.append("")
lines.append(f"RAG 2024 SILVER set: {s['queries']} queries, 6,011 passages, labels from citation counts (not human judgements). "
             f"Span pairs: {p['documents']} held-out documents ({p['spans']} spans) of the demo corpus, never trained on.")
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
