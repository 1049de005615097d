#!/usr/bin/env bash
# Training throughput on the device machine: our binary and the PyTorch reference at the same shapes, in
# one call, on one card, then one comparison table. Builds nothing. NOT YET RUN ON A GPU (written in
# sessions without one; the whole flow was dry-run on the 2-core CPU machine, see below).
#   bash pipelines/gpu-bench.sh OUTDIR
# Runs from the kit `make gpu-kit` packs (KIT, default target/gpu-kit: the stripped binary, its commit,
# the reference, the demo shards with their tokenizer), with a torch that has CUDA (its torch/lib goes on
# LD_LIBRARY_PATH, as ../shared/GPU.md says). BIN, REF and SHARDS override the kit's parts.
# From the CPU machine:
#   make gpu-kit
#   device run  command: bash pipelines/gpu-bench.sh $OUT   carry: ["target/gpu-kit"]   timeout_s: 600
# OUTDIR gets table.txt, lines.txt and logs.tgz (every case's stdout and stderr, the card, `condenser
# env`, the commit): the device tool brings back at most 8 files.
# A dry run on a CPU machine (the flow and the table, not figures):
#   PATH=.venv/bin:$PATH EXTRA="--tiny --device cpu --steps 1 --warmup 1" BUDGET=1200 \
#     bash pipelines/gpu-bench.sh /tmp/gpu-bench-dry
set -uo pipefail
extra=${EXTRA:-}
out=${1:?usage: gpu-bench.sh OUTDIR}
kit=${KIT:-target/gpu-kit}
bin=${BIN:-$kit/condenser}
ref=${REF:-$kit/bench-ref}
shards=${SHARDS:-$kit/shards}
mkdir -p "$out"
logs=$(mktemp -d)
torch_lib=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
cat "$kit/commit.txt" 2>/dev/null | tee "$logs/commit.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$logs/card.txt"
"$bin" env | tee "$logs/env.txt"

# One measurement: its `ours`/`ref` line goes to the table file, everything to LOGDIR/NAME.{out,err}.
# Cases past the time budget (BUDGET seconds, default 480: the device tool's calls end at 600) are
# skipped, so the table still comes out.
budget=${BUDGET:-480}
run() { # name, command...
  local name=$1; shift
  if (( SECONDS > budget )); then
    echo "$name SKIPPED (time budget of ${budget} s spent)" | tee -a "$logs/lines.txt"
    return
  fi
  echo "== $name: $*" >&2
  timeout $(( budget + 60 - SECONDS )) "$@" > "$logs/$name.out" 2> "$logs/$name.err"
  local rc=$?
  local line
  line=$(grep -E '^(ours|ref) ' "$logs/$name.out" | tail -n 1)
  echo "$name ${line:-FAILED rc=$rc}" | tee -a "$logs/lines.txt"
  tail -n 2 "$logs/$name.err" >&2
}
: > "$logs/lines.txt"
run ref-condenser-eager     python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 $extra
run ref-condenser-masked    python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 --masked-only $extra
run ref-condenser-compile   python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 --masked-only --compile $extra
run ours-condenser          "$bin" bench train --device cuda --case condenser --seq 128 --batch 128 $extra
run ref-condenser-512       python3 "$ref/bench_train.py" --cases condenser --seq 512 --batch 32 $extra
run ours-condenser-512      "$bin" bench train --device cuda --case condenser --seq 512 --batch 32 $extra
run ref-cocondenser-gc      python3 "$ref/bench_train.py" --cases cocondenser-gc --gc-chunk 128 --co-docs 256 $extra
run ours-cocondenser-gc     "$bin" bench train --device cuda --case cocondenser --batch 512 --gc-chunk 128 $extra
run ours-cocondenser-2048   "$bin" bench train --device cuda --case cocondenser --batch 2048 --gc-chunk 128 --steps 5 --warmup 2 $extra
if [ -f "$shards/manifest.json" ]; then
  run ours-shards           "$bin" bench train --device cuda --case condenser --seq 128 --batch 128 --data "$shards" $extra
  run ours-shards-grouped   "$bin" bench train --device cuda --case condenser --seq 128 --batch 128 --data "$shards" --group-by-length 50 $extra
fi
run ours-breakdown          "$bin" bench train --device cuda --case condenser --seq 128 --batch 128 --breakdown --steps 10 $extra

# The table: each of ours against its reference (ratios of sequences/s, or of real tokens/s for the
# shards, where the reference is the compiled one fed the same spans padded to 128: its seq/s times our
# mean real tokens per span).
python3 - "$logs/lines.txt" <<'EOF' | tee "$logs/table.txt"
import re, sys
rows = {}
for line in open(sys.argv[1]):
    name, _, rest = line.strip().partition(" ")
    rows[name] = dict(re.findall(r"([\w/]+)=([\d.]+)", rest))
def f(name, key):
    try:
        return float(rows[name][key])
    except (KeyError, ValueError):
        return None
print(f"{'case':28} {'ours':>10} {'reference':>10} {'ratio':>6}  target")
def line(label, ours, ref, target):
    ratio = f"{ours / ref:.2f}" if ours and ref else "-"
    fmt = lambda v: f"{v:,.0f}" if v else "-"
    print(f"{label:28} {fmt(ours):>10} {fmt(ref):>10} {ratio:>6}  {target}")
line("condenser 128x128 seq/s", f("ours-condenser", "seq/s"), f("ref-condenser-compile", "seq/s"), ">= 1.0 x compile")
line("  vs eager", f("ours-condenser", "seq/s"), f("ref-condenser-eager", "seq/s"), "")
line("condenser 512x32 seq/s", f("ours-condenser-512", "seq/s"), f("ref-condenser-512", "seq/s"), ">= 1.3 x eager")
line("cocondenser gc 512/128 seq/s", f("ours-cocondenser-gc", "seq/s"), f("ref-cocondenser-gc", "seq/s"), ">= 1.5 x gc_step")
for name in ["ours-shards", "ours-shards-grouped"]:
    real, seqs = f(name, "real_tok/s"), f(name, "seq/s")
    ref = f("ref-condenser-compile", "seq/s")
    per = real / seqs if real and seqs else None
    line(f"{name[5:]} real tok/s", real, ref * per if ref and per else None, ">= 1.3 x compile, same spans")
# Ours: cudaMemGetInfo after the timed steps (the caching allocator's reserve + the CUDA context); the
# reference prints torch.cuda.max_memory_allocated (tensors only) in its .err log: not the same measure.
for name in ["ours-condenser", "ours-cocondenser-gc", "ours-cocondenser-2048"]:
    mem = f(name, "peak_mem_gib")
    print(f"{name}: device memory in use {mem if mem is not None else '-'} GiB (driver view)")
EOF
cp "$logs/table.txt" "$logs/lines.txt" "$out/"
tar -czf "$out/logs.tgz" -C "$logs" .
echo "table.txt, lines.txt and logs.tgz (every case's output) in $out" >&2
