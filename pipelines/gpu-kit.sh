#!/usr/bin/env bash
# Packs what one device-machine call of pipelines/gpu-bench.sh needs into target/gpu-kit/ (about 25 MB,
# under the device tool's 64 MiB carry limit), built from the working tree as it is now, so the GPU run
# cannot pick up a stale binary or shards whose tokenizer stayed behind:
#   condenser      the release binary, stripped (165 MB with line tables, 18 MB without)
#   commit.txt     the commit it was built from (gpu-bench.sh prints it into the logs)
#   bench-ref/     the PyTorch reference (a copy of ../shared/bench, which the device tool does not send)
#   shards/        the demo corpus prepared by this binary (with its tokenizer copy)
# Needs `make setup` (data/). Then, with the device tool:
#   run  command: bash pipelines/gpu-bench.sh $OUT   carry: ["target/gpu-kit"]   timeout_s: 600
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/gpu-kit
ref=${REF_SRC:-../shared/bench}
[ -f "$ref/bench_train.py" ] || { echo "gpu-kit: no reference at $ref (set REF_SRC)" >&2; exit 1; }

cargo build --release --locked
[ -d "$kit" ] && chmod -R u+w "$kit" # the reference copy keeps ../shared's read-only modes otherwise
rm -rf "$kit"
mkdir -p "$kit"
strip -o "$kit/condenser" target/release/condenser
{ git rev-parse HEAD; git status --porcelain --untracked-files=no | sed 's/^/dirty: /'; } > "$kit/commit.txt"
cp -r "$ref" "$kit/bench-ref"
chmod -R u+w "$kit/bench-ref"
rm -rf "$kit/bench-ref/__pycache__"
"$kit/condenser" prepare -q \
  data/wiki-leads/summaries_en-us.json \
  data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 \
  data/demo/msmarco-passages.tsv \
  --out "$kit/shards" --shard-size 2MB > /dev/null
du -sh "$kit" >&2
