#!/usr/bin/env bash
# Issue 17's measurements of `prepare` at dump scale (the figures in BENCHMARKS.md):
#   1. the demo corpus and a Wikipedia-style multi-stream bzip2 dump against the bare tokenizer, with
#      each stage's CPU time, at -j 1 and -j 2;
#   2. byte-range partitions: one ~100 MB JSONL (and the dump) whole, then partition 0/4 and 3/4.
#   BIN=target/release/condenser bash pipelines/bench-prepare.sh [OUT_DIR]   (after pipelines/setup.sh)
# Run it on a quiet machine: every figure is a wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/condenser}
[ -n "${BIN:-}" ] || cargo build --release --locked >&2
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

echo "## bench prepare (best of 3)"
for j in 1 2; do
  echo "### demo corpus, -j $j"; "$bin" bench prepare "${demo[@]}" -j "$j" -q
  echo "### multi-stream dump, -j $j"; "$bin" bench prepare "$dump" -j "$j" -q
done

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
