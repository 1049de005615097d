#!/usr/bin/env bash
# Training throughput on the device machine: our binary and the PyTorch reference at the same shapes, in
# one call, on one card. Builds nothing. NOT YET RUN ON A GPU (written in a session without one).
#   bash pipelines/gpu-bench.sh LOGDIR [SHARDS]
# Needs: target/release/condenser (built on the CPU machine), the reference folder (REF, default
# ../shared/bench: bench_train.py + ref_condenser.py), a torch with CUDA (its torch/lib is put on
# LD_LIBRARY_PATH, as ../shared/GPU.md says), and optionally a prepared shard folder for the loader case.
set -uo pipefail
logs=${1:?usage: gpu-bench.sh LOGDIR [SHARDS]}
shards=${2:-}
ref=${REF:-../shared/bench}
mkdir -p "$logs"
torch_lib=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
bin=target/release/condenser
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$logs/card.txt"
"$bin" env | tee "$logs/env.txt"

run() { # name, command...
  local name=$1; shift
  echo "== $name: $*" >&2
  "$@" > "$logs/$name.out" 2> "$logs/$name.err"
  grep -E '^(ours|ref) ' "$logs/$name.out" | tail -n 1
}
{
  run ref-condenser-eager        python3 "$ref/bench_train.py" --cases condenser
  run ref-condenser-masked       python3 "$ref/bench_train.py" --cases condenser --masked-only
  run ref-condenser-compile      python3 "$ref/bench_train.py" --cases condenser --compile
  run ours-condenser             "$bin" bench train --case condenser --seq 128 --batch 128
  run ref-condenser-512          python3 "$ref/bench_train.py" --cases condenser --seq 512 --batch 32
  run ours-condenser-512         "$bin" bench train --case condenser --seq 512 --batch 32
  run ref-cocondenser-gc         python3 "$ref/bench_train.py" --cases cocondenser --gc-chunk 128 --co-docs 256
  run ours-cocondenser-gc        "$bin" bench train --case cocondenser --batch 512 --gc-chunk 128
  run ours-cocondenser-2048      "$bin" bench train --case cocondenser --batch 2048 --gc-chunk 128 --steps 5 --warmup 2
  if [ -n "$shards" ]; then
    run ours-condenser-shards    "$bin" bench train --case condenser --seq 128 --batch 128 --data "$shards"
  fi
  run ours-condenser-breakdown   "$bin" bench train --case condenser --seq 128 --batch 128 --breakdown --steps 10
} | tee "$logs/table.txt"
echo "full logs in $logs" >&2
