#!/usr/bin/env bash
# Issues 17 and 25: the measurements of `prepare` in BENCHMARKS.md.
#   1. the demo corpus, a Wikipedia-style multi-stream bzip2 dump and two ~100 MB JSONL files (short
#      MS MARCO passages; the same passages joined into ~45 KB documents) against the bare tokenizer
#      (tokenizers 1.0 encode of the whole batch), with each stage's CPU time, at -j 1 and -j 2;
#   2. the whole prepare command against what a Python user runs instead, in the same call: Hugging Face
#      datasets map + tokenizers 1.0.0rc3 -> Parquet (pipelines/hf_prepare.py, num_proc 2), and the bare
#      Python encode_batch of the same texts; wall seconds, best of 3;
#   3. byte-range partitions: the short-document JSONL (and the dump) whole, then partition 0/4 and 3/4.
#   bash pipelines/bench-prepare.sh [OUT_DIR]   (after pipelines/setup.sh)
# The binary is the benchmarks' build, `cargo build --profile release-lto` (fat LTO, one codegen unit:
# BENCHMARKS.md says what it gives and costs); BIN=PATH measures another one instead.
# The Python side runs in a venv of its own (HF_VENV, default OUT_DIR/hfvenv; created with
# `pip install tokenizers==1.0.0rc3 datasets` if missing), not the project's .venv.
# Run it on a quiet machine: every figure is a wall time (bench prepare also prints CPU seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release-lto/condenser}
[ -n "${BIN:-}" ] || cargo build --profile release-lto --locked >&2
out=${1:-runs/bench-prepare}
mkdir -p "$out"
demo=(data/wiki-leads/summaries_en-us.json
      data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2
      data/demo/msmarco-passages.tsv)
dump=$out/enwiki-multistream.xml.bz2
[ -s "$dump" ] || python3 pipelines/make_multistream.py "${demo[1]}" "$dump" --copies 8
jsonl=$out/msmarco-100mb.jsonl
# MS MARCO passages as JSON Lines, repeated with fresh ids to about 100 MB.
[ -s "$jsonl" ] || python3 - "${demo[2]}" "$jsonl" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    copy, written = 0, 0
    while written < 100_000_000:
        for pid, text in rows:
            line = json.dumps({"id": f"{copy}-{pid}", "text": text}) + "\n"
            f.write(line)
            written += len(line.encode())
        copy += 1
PY
long=$out/long-docs-100mb.jsonl
# The same passages joined into ~45 KB documents (2,212 of them), rotated per copy: long documents.
[ -s "$long" ] || python3 - "${demo[2]}" "$long" <<'PY'
import json, sys
rows = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    copy, written, doc = 0, 0, 0
    while written < 100_000_000:
        order = rows[copy % len(rows):] + rows[:copy % len(rows)]
        buf, size = [], 0
        for pid, text in order:
            buf.append(text); size += len(text) + 1
            if size >= 45_000:
                line = json.dumps({"id": f"d{doc}", "text": " ".join(buf)}) + "\n"
                f.write(line); written += len(line.encode()); doc += 1; buf, size = [], 0
        copy += 97
PY
tok=data/minilm/tokenizer.json
venv=${HF_VENV:-$out/hfvenv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q "tokenizers==1.0.0rc3" datasets >&2
fi

echo "## bench prepare (best of 3)"
for j in 1 2; do
  echo "### demo corpus, -j $j"; "$bin" bench prepare "${demo[@]}" -j "$j" -q
  echo "### multi-stream dump, -j $j"; "$bin" bench prepare "$dump" -j "$j" -q
  echo "### short-document JSONL, -j $j"; "$bin" bench prepare "$jsonl" -j "$j" -q
  echo "### long-document JSONL, -j $j"; "$bin" bench prepare "$long" -j "$j" -q
done

echo "## whole commands, 2 threads, wall seconds (best of 3)"
best3() {  # LABEL CMD...: the best wall time of three runs (output thrown away)
  local label=$1; shift
  local best="" t0 t1 ms
  for _ in 1 2 3; do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  printf '%-60s %8.2f s\n' "$label" "${best}e-3"
}
prepare_fresh() {  # a complete folder of the same run would be left alone: start from none
  rm -rf "$out/p"
  "$bin" prepare "$@" -o "$out/p" -q
}
for input in "$jsonl" "$long"; do
  name=$(basename "$input")
  best3 "$name: condenser prepare -j 2" prepare_fresh "$input" -j 2
  best3 "$name: HF datasets map + tokenizers 1.0 -> Parquet (num_proc 2)" \
    "$venv/bin/python" pipelines/hf_prepare.py "$input" "$tok" "$out/hf" --num-proc 2
  # tokenizers' own pool: every core (2 on the machine of BENCHMARKS.md).
  echo "$name: $("$venv/bin/python" pipelines/hf_prepare.py "$input" "$tok" --bare)"
done
rm -rf "$out/p" "$out/hf"

echo "## partitions (-j 2, wall seconds of the whole prepare command)"
timed() {  # LABEL ARGS...: one prepare run into a fresh folder
  local label=$1; shift
  rm -rf "$out/p"
  local t0 t1
  t0=$(date +%s%N)
  "$bin" prepare "$@" -o "$out/p" -j 2 -q >/dev/null
  t1=$(date +%s%N)
  printf '%-44s %8.2f s\n' "$label" "$(( (t1 - t0) / 1000000 ))e-3"
}
for input in "$jsonl" "$dump"; do
  timed "$(basename "$input") whole" "$input"
  for k in 0 3; do timed "$(basename "$input") --partition $k/4" "$input" --partition "$k/4"; done
done
index=${dump%.xml.bz2}-index.txt.bz2
timed "$(basename "$dump") --partition 3/4 --index" "$dump" --partition 3/4 --index "$index"
rm -rf "$out/p"
