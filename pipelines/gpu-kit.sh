#!/usr/bin/env bash
# Packs what one device-machine call of pipelines/gpu-bench.sh needs into target/gpu-kit/ (about 44 MB,
# under the device tool's 64 MiB carry limit), built from the working tree as it is now, so the GPU run
# cannot pick up a stale binary or shards whose tokenizer stayed behind:
#   condenser-torch  the release binary with every command, stripped (18 MB; the `condenser` binary,
#                  which only adds prepare and inspect without libtorch, stays home: the carry limit)
#   libcondenser_nccl.so  c10d's NCCL backend, which the binary dlopens from beside itself for CUDA runs
#   commit.txt     the commit it was built from (gpu-bench.sh prints it into the logs)
#   bench-ref/     the PyTorch reference (a copy of bench/reference/)
#   tools/         trace_summary.py and profile_ref.py (kernel time per kernel, ours and the reference's)
#   shards/        the demo corpus prepared by this binary (with its tokenizer copy)
#   tiny-model/    a random 4-layer BERT (bert-base vocabulary) for the smoke run of train/encode/eval
#   silver/        the RAG 2024 silver set (collection gzipped) for `eval` on CUDA
# Needs `make setup` (data/). Then, with the device tool:
#   run  command: bash pipelines/gpu-bench.sh $OUT   carry: ["target/gpu-kit"]   timeout_s: 600
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/gpu-kit
ref=${REF_SRC:-bench/reference}
[ -f "$ref/bench_train.py" ] || { echo "gpu-kit: no reference at $ref (set REF_SRC)" >&2; exit 1; }

cargo build --release --locked
[ -d "$kit" ] && chmod -R u+w "$kit" # a reference copied from a read-only REF_SRC keeps its modes otherwise
rm -rf "$kit"
mkdir -p "$kit"
strip -o "$kit/condenser-torch" target/release/condenser-torch
# The build folder whose path the binary remembers is not on the device machine; beside the binary is.
nccl_so=$(ls -t target/release/build/condenser-*/out/libcondenser_nccl.so | head -n 1)
strip --strip-unneeded -o "$kit/libcondenser_nccl.so" "$nccl_so"
{ git rev-parse HEAD; git status --porcelain --untracked-files=no | sed 's/^/dirty: /'; } > "$kit/commit.txt"
cp -r "$ref" "$kit/bench-ref"
mkdir -p "$kit/tools"
cp pipelines/trace_summary.py pipelines/profile_ref.py "$kit/tools/"
chmod -R u+w "$kit/bench-ref"
rm -rf "$kit/bench-ref/__pycache__"
"$kit/condenser-torch" prepare -q \
  data/wiki-leads/summaries_en-us.json \
  data/enwiki/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 \
  data/demo/msmarco-passages.tsv \
  --out "$kit/shards" --shard-size 2MB > /dev/null
# A small random BERT with the bert-base-uncased vocabulary (4 layers, H 128; 16 MB) for the smoke run of
# the real trainer, encode and eval on CUDA (the MiniLM warm start, 91 MB, is over the carry limit), and
# the RAG 2024 silver set, gzipped (the readers detect compression from the bytes).
.venv/bin/python - "$kit/tiny-model" <<'PY'
import sys, torch, transformers
torch.manual_seed(0)
cfg = transformers.BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=4, num_attention_heads=2,
                              intermediate_size=512, max_position_embeddings=512)
transformers.BertForMaskedLM(cfg).save_pretrained(sys.argv[1])
PY
cp data/minilm/tokenizer.json "$kit/tiny-model/"
mkdir -p "$kit/silver"
gzip -c data/rag24-silver/collection.tsv > "$kit/silver/collection.tsv.gz"
cp data/rag24-silver/queries.tsv data/rag24-silver/qrels.silver.txt "$kit/silver/"
du -sh "$kit" >&2
