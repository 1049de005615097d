#!/usr/bin/env bash
# The papers' claim at small scale: from the same initialisation and the same step budget, train
#   (a) plain MLM (no head: loss.head_weight = 0, the head gets no gradient),
#   (b) Condenser,
#   (c) Condenser for half the steps, then coCondenser for the other half,
# and evaluate each, and the untrained initialisation, on the RAG 2024 SILVER set (citation-count labels,
# not human judgements) and on held-out span pairs of the training corpus. Then the papers' second half:
# the silver queries split by a seeded hash of their id (about two thirds for training), hard negatives
# mined once with the untouched initialisation (so every model fine-tunes on the same lines: round one's
# "BM25" negatives), the same fine-tuning (configs/demo-finetune.toml) from each model with each of SEEDS,
# and `eval` on the test queries. Then round two as Tevatron's coCondenser MS MARCO recipe: negatives
# mined with each round-one model, and a fine-tuning from the *pre-trained* model again, 2 epochs, on
# round one's lines and the mined ones together. Writes Markdown tables.
#   STEPS=30 bash pipelines/experiment.sh        (after pipelines/setup.sh; outputs in runs/experiment/)
#   FINETUNE=0 skips the fine-tuning part; SEEDS="1 2" sets its seeds; BIN=path uses another binary;
#   PRETRAIN_EVAL=0 skips the first table; ROUND2=0 skips round two; ROUND2_FROM=round1 starts round
#   two from round one's model instead (on the mined lines alone, the other common practice).
# Knobs for variants (issue 26 item 14), all off by default:
#   ARMS="init condenser cocondenser cocondenser-co0" picks the arms (default: init mlm condenser
#   cocondenser); cocondenser-co0 is the coCondenser stage with loss.co_weight = 0 (its MLM losses
#   alone), a control. PRETRAIN_SEED=N passes run.seed=N to every pre-training and names its models
#   NAME-psN (init has none). FT_SET="loss.similarity=cos ..." adds --set KEY=VALUE to every
#   fine-tuning; FT_TAG=-cos names those runs ft-NAME-cos-seedS (give one when FT_SET changes more
#   than logging). SHARDS=dir reuses prepared shards.
#   TEST_RUN=1 also writes each test ranking (ft-NAME-seedS.test.trec) for per-query comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-30}
half=$((steps / 2))
out=${OUT:-runs/experiment}
bin=${BIN:-target/release/condenser}
[ -n "${BIN:-}" ] || cargo build --release --locked >&2
mkdir -p "$out"
shards=${SHARDS:-$out/shards}
arms=${ARMS:-init mlm condenser cocondenser}
for a in $arms; do
  case "$a" in init|mlm|condenser|cocondenser|cocondenser-co0) ;; *) echo "unknown arm $a" >&2; exit 2;; esac
done
has_arm() { [[ " $arms " == *" $1 "* ]]; }
tag=${PRETRAIN_SEED:+-ps$PRETRAIN_SEED}
pretrain_set=()
[ -z "${PRETRAIN_SEED:-}" ] || pretrain_set=(--set run.seed="$PRETRAIN_SEED")
ft_set=()
for kv in ${FT_SET:-}; do ft_set+=(--set "$kv"); done
ft_tag=${FT_TAG:-}
model_of() {  # ARM: its pre-trained model
  if [ "$1" = init ]; then echo data/minilm; else echo "$out/$1$tag/final"; fi
}
# Each step is skipped when its output exists, so an interrupted run picks up where it stopped.
[ -e "$shards/_manifest.json" ] || [ -e "$shards/manifest.json" ] || "$bin" prepare data/wiki-leads/summaries_en-us.json \
  data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 \
  data/demo/msmarco-passages.tsv --out "$shards" --shard-size 2MB >/dev/null
common=("$shards" --device "${DEVICE:-auto}")
common+=("${pretrain_set[@]}")
! has_arm mlm || [ -d "$out/mlm$tag/final" ] || "$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/mlm$tag" --overwrite \
  --set optim.max_steps="$steps" --set loss.head_weight=0 >/dev/null
! has_arm condenser || [ -d "$out/condenser$tag/final" ] || "$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/condenser$tag" --overwrite \
  --set optim.max_steps="$steps" >/dev/null
if has_arm cocondenser || has_arm cocondenser-co0; then
  [ -d "$out/condenser-half$tag/final" ] || "$bin" train "${common[@]}" --init data/minilm --config configs/demo.toml --out "$out/condenser-half$tag" --overwrite \
    --set optim.max_steps="$half" >/dev/null
fi
! has_arm cocondenser || [ -d "$out/cocondenser$tag/final" ] || "$bin" train "${common[@]}" --init "$out/condenser-half$tag/final" --config configs/demo-cocondenser.toml \
  --out "$out/cocondenser$tag" --overwrite --set optim.max_steps="$((steps - half))" >/dev/null
! has_arm cocondenser-co0 || [ -d "$out/cocondenser-co0$tag/final" ] || "$bin" train "${common[@]}" --init "$out/condenser-half$tag/final" --config configs/demo-cocondenser.toml \
  --out "$out/cocondenser-co0$tag" --overwrite --set optim.max_steps="$((steps - half))" --set loss.co_weight=0 >/dev/null

silver=data/rag24-silver
# PRETRAIN_EVAL=0 skips the evaluation of the pre-trained models themselves (the first table).
if [ "${PRETRAIN_EVAL:-1}" = 1 ]; then
for arm in $arms; do
  model=$(model_of "$arm")
  name=$arm; [ "$arm" = init ] || name=$arm$tag
  [ -s "$out/$name.spans.json" ] && continue
  "$bin" eval --model "$model" --corpus $silver/collection.tsv --queries $silver/queries.tsv \
    --qrels $silver/qrels.silver.txt --json --device "${DEVICE:-auto}" > "$out/$name.silver.json"
  "$bin" eval-spans "$shards" --model "$model" --holdout-fraction 0.02 --json \
    --device "${DEVICE:-auto}" > "$out/$name.spans.json"
done

python3 - "$out" "$steps" "$tag" <<'PY'
import json, os, sys
out, steps, tag = sys.argv[1], sys.argv[2], sys.argv[3]
half = f"Condenser {int(steps)//2} + coCondenser {int(steps) - int(steps)//2} steps"
rows = [("init", "all-MiniLM-L6-v2, untrained"), ("mlm", f"plain MLM, {steps} steps"),
        ("condenser", f"Condenser, {steps} steps"), ("cocondenser", half), ("cocondenser-co0", half + ", co_weight 0")]
rows = [(k if k == "init" else k + tag, label) for k, label in rows]
rows = [(k, label) for k, label in rows if os.path.exists(f"{out}/{k}.spans.json")]
lines = ["| model | silver MRR@10 | silver nDCG@10 | silver R@100 | span MRR | span R@1 |", "|---|---|---|---|---|---|"]
for key, label in rows:
    s = json.load(open(f"{out}/{key}.silver.json")); p = json.load(open(f"{out}/{key}.spans.json"))
    lines.append(f"| {label} | {s['mrr_at_10']:.4f} | {s['ndcg_at_10']:.4f} | {s['recall']['100']:.4f} | {p['mrr']:.4f} | {p['recall_at_1']:.4f} |")
p = json.load(open(f"{out}/init.spans.json")); s = json.load(open(f"{out}/init.silver.json"))
lines.append("")
lines.append(f"RAG 2024 SILVER set: {s['queries']} queries, 6,011 passages, labels from citation counts (not human judgements). "
             f"Span pairs: {p['documents']} held-out documents ({p['spans']} spans) of the demo corpus, never trained on.")
open(f"{out}/results{tag}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
fi

[ "${FINETUNE:-1}" = 1 ] || exit 0
seeds=${SEEDS:-1 2}
round2=${ROUND2:-1}
round2_from=${ROUND2_FROM:-pretrained}
case "$round2_from" in pretrained|round1) ;; *) echo "ROUND2_FROM must be pretrained or round1, got $round2_from" >&2; exit 2;; esac
split=$out/silver-split  # shared by every arm, seed and PRETRAIN_SEED of this OUT
python3 pipelines/silver_split.py $silver "$split"
test_eval() {  # MODEL JSON: the test queries of the split (TEST_RUN=1: the ranking too, as JSON's name .trec)
  local run=()
  [ "${TEST_RUN:-0}" = 0 ] || run=(--run "${2%.json}.trec")
  "$bin" eval --model "$1" --corpus $silver/collection.tsv --queries "$split/queries.test.tsv" \
    --qrels "$split/qrels.test.txt" --json "${run[@]}" --device "${DEVICE:-auto}" > "$2"
}
[ -s "$split/train.jsonl" ] || "$bin" mine --model data/minilm --corpus $silver/collection.tsv \
  --queries "$split/queries.train.tsv" --qrels "$split/qrels.train.txt" --depth 100 --negatives 15 \
  --out "$split/train.jsonl" --device "${DEVICE:-auto}"
[ -s "$out/init.test.json" ] || test_eval data/minilm "$out/init.test.json"
for seed in $seeds; do
  for arm in $arms; do
    model=$(model_of "$arm")
    name=$arm; [ "$arm" = init ] || name=$arm$tag
    name=$name$ft_tag
    ft=$out/ft-$name-seed$seed
    [ -s "$ft.test.json" ] || {
      "$bin" finetune "$split/train.jsonl" --init "$model" --config configs/demo-finetune.toml \
        --set run.seed="$seed" "${ft_set[@]}" --out "$ft" --overwrite --device "${DEVICE:-auto}" >/dev/null
      test_eval "$ft/final" "$ft.test.json"
    }
    [ "$round2" = 1 ] || continue
    # Round two: negatives mined with this round-one model.
    [ -s "$ft.mined.jsonl" ] || "$bin" mine --model "$ft/final" --corpus $silver/collection.tsv \
      --queries "$split/queries.train.tsv" --qrels "$split/qrels.train.txt" --depth 100 --negatives 15 \
      --out "$ft.mined.jsonl" --device "${DEVICE:-auto}"
    if [ "$round2_from" = pretrained ]; then
      ft2=$out/ft2-$name-seed$seed; from=$model; lines=("$split/train.jsonl" "$ft.mined.jsonl")
    else
      ft2=$out/ft2r1-$name-seed$seed; from=$ft/final; lines=("$ft.mined.jsonl")
    fi
    [ -s "$ft2.test.json" ] && continue
    "$bin" finetune "${lines[@]}" --init "$from" --config configs/demo-finetune.toml --set optim.epochs=2 \
      --set run.seed="$seed" "${ft_set[@]}" --out "$ft2" --overwrite --device "${DEVICE:-auto}" >/dev/null
    test_eval "$ft2/final" "$ft2.test.json"
  done
done

python3 - "$out" "$seeds" "$round2" "$round2_from" "$tag" "$ft_tag" "${FT_SET:-}" <<'PY'
import json, os, statistics, sys
out, seeds, round2, round2_from = sys.argv[1], sys.argv[2].split(), sys.argv[3] == "1", sys.argv[4]
tag, ft_tag, ft_set = sys.argv[5], sys.argv[6], sys.argv[7]
rows = [("init", "all-MiniLM-L6-v2, no pre-training"), ("mlm", "plain MLM"), ("condenser", "Condenser"),
        ("cocondenser", "Condenser then coCondenser"), ("cocondenser-co0", "Condenser then coCondenser, co_weight 0")]
note = (f", pre-training seed {tag[3:]}" if tag else "") + (f", fine-tuning with {ft_set}" if ft_set else "")
rows = [((k if k == "init" else k + tag) + ft_tag, label + ("" if k == "init" and not ft_set else note)) for k, label in rows]
base = json.load(open(f"{out}/init.test.json"))
lines = [f"| pre-training, then the same fine-tuning | test MRR@10 (seeds {', '.join(seeds)}) | mean | test nDCG@10 mean | test R@100 mean |",
         "|---|---|---|---|---|",
         f"| all-MiniLM-L6-v2 untouched (no fine-tuning) | {base['mrr_at_10']:.4f} | | {base['ndcg_at_10']:.4f} | {base['recall']['100']:.4f} |"]
spreads = []
for key, label in rows:
    runs = [json.load(open(p)) for s in seeds if os.path.exists(p := f"{out}/ft-{key}-seed{s}.test.json")]
    if not runs:
        continue
    mrr = [r["mrr_at_10"] for r in runs]
    spreads.append(max(mrr) - min(mrr))
    lines.append(f"| {label} | {' / '.join(f'{m:.4f}' for m in mrr)} | {statistics.mean(mrr):.4f} | "
                 f"{statistics.mean(r['ndcg_at_10'] for r in runs):.4f} | {statistics.mean(r['recall']['100'] for r in runs):.4f} |")
if round2:
    prefix = "ft2" if round2_from == "pretrained" else "ft2r1"
    how = ("from the pre-trained model, 2 epochs, round one's lines + mined" if round2_from == "pretrained"
           else "from round one's model, 2 epochs, mined lines")
    lines += ["", f"| round two ({how}) | test MRR@10 (seeds {', '.join(seeds)}) | mean | test nDCG@10 mean | test R@100 mean |",
              "|---|---|---|---|---|"]
    for key, label in rows:
        runs = [json.load(open(p)) for s in seeds if os.path.exists(p := f"{out}/{prefix}-{key}-seed{s}.test.json")]
        if not runs:
            continue
        mrr = [r["mrr_at_10"] for r in runs]
        lines.append(f"| {label} | {' / '.join(f'{m:.4f}' for m in mrr)} | {statistics.mean(mrr):.4f} | "
                     f"{statistics.mean(r['ndcg_at_10'] for r in runs):.4f} | {statistics.mean(r['recall']['100'] for r in runs):.4f} |")
lines.append("")
lines.append(f"Test: {base['queries']} silver queries (a seeded third of 301), the 6,011 silver passages. "
             f"Largest spread between round-one fine-tuning seeds of one model: {max(spreads) if spreads else 0:.4f} MRR@10.")
open(f"{out}/finetune{tag}{ft_tag}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
