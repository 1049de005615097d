#!/usr/bin/env bash
# Training throughput on the device machine: our binary and the PyTorch reference at the same shapes, in
# one call, on one card, then one comparison table; before them the numerical checks and a smoke run of
# the real commands, after them a kernel profile of each. Builds nothing. Run once on an H200 (2026-11-29,
# 262 s; BENCHMARKS.md); the grouped-shard lever rows were added after that run and have not run yet.
#   bash pipelines/gpu-bench.sh OUTDIR
# Runs from the kit `make gpu-kit` packs (KIT, default target/gpu-kit: the stripped binary, its commit,
# the reference, the demo shards with their tokenizer), with a torch that has CUDA (its torch/lib goes on
# LD_LIBRARY_PATH, as bench/reference/README.md says). BIN, REF and SHARDS override the kit's parts.
# From the CPU machine:
#   make gpu-kit
#   device run  command: bash pipelines/gpu-bench.sh $OUT   carry: ["target/gpu-kit"]   timeout_s: 600
# OUTDIR gets table.txt, lines.txt, the two kernel profiles (ours-profile.txt, ref-profile.txt) and
# logs.tgz (every case's stdout and stderr, the card, `condenser env`, the commit): the device tool brings
# back at most 8 files.
# A dry run on a CPU machine (the flow and the table, not figures):
#   PATH=.venv/bin:$PATH EXTRA="--tiny --device cpu --steps 1 --warmup 1" BUDGET=1200 \
#     NUMERICS_EXTRA="--tiny --device cpu --steps 5" \
#     bash pipelines/gpu-bench.sh /tmp/gpu-bench-dry
set -uo pipefail
extra=${EXTRA:-}
out=${1:?usage: gpu-bench.sh OUTDIR}
kit=${KIT:-target/gpu-kit}
bin=${BIN:-$kit/condenser-torch}
ref=${REF:-$kit/bench-ref}
shards=${SHARDS:-$kit/shards}
tools=${TOOLS:-$kit/tools}
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
skipped=99
timed() { # name, command...: runs it within the budget (status $skipped when past it)
  local name=$1; shift
  if (( SECONDS > budget )); then
    echo "$name SKIPPED (time budget of ${budget} s spent)" | tee -a "$logs/lines.txt"
    return $skipped
  fi
  echo "== $name: $*" >&2
  timeout $(( budget + 60 - SECONDS )) "$@" > "$logs/$name.out" 2> "$logs/$name.err"
}
run() { # name, command...
  local name=$1
  timed "$@"
  local rc=$?
  (( rc == skipped )) && return
  local line
  line=$(grep -E '^(ours|ref) ' "$logs/$name.out" | tail -n 1)
  echo "$name ${line:-FAILED rc=$rc}" | tee -a "$logs/lines.txt"
  tail -n 2 "$logs/$name.err" >&2
}
: > "$logs/lines.txt"
# Numerics first (short, and the GPU issue's point 4): fp32 against bf16 over 50 steps on the demo
# shards, and the gradient cache's dropout replay against one graph, in fp32 and bf16. `check` lines.
numerics_extra=${NUMERICS_EXTRA:---device cuda}
timeout 150 "$bin" bench numerics --data "$shards" $numerics_extra > "$logs/numerics.out" 2> "$logs/numerics.err"
echo "numerics rc=$?" >> "$logs/numerics.err"
grep '^check ' "$logs/numerics.out" | tee -a "$logs/lines.txt" || echo "numerics FAILED" | tee -a "$logs/lines.txt"
tail -n 3 "$logs/numerics.err" >&2

# Smoke run of the real commands on CUDA (not a measurement): the Condenser stage (40 steps, checkpoint at
# 20), the coCondenser stage from it (gradient cache), eval-spans, encode and eval, on the kit's small
# random model. Each command's exit status goes into lines.txt; its logs into logs.tgz.
smoke=$(mktemp -d)
smoke_run() { # name, command...
  local name=$1; shift
  echo "== $name: $*" >&2
  timeout 120 "$@" > "$logs/$name.out" 2> "$logs/$name.err"
  local rc=$?
  echo "$name rc=$rc $(grep -Eo '(MRR@10|mrr|loss)[^,]*' "$logs/$name.out" "$logs/$name.err" 2>/dev/null | tail -n 1)" | tee -a "$logs/lines.txt"
  tail -n 2 "$logs/$name.err" >&2
}
smoke_device=${SMOKE_DEVICE:-cuda}
if [ -d "$kit/tiny-model" ] && [ -z "${SKIP_SMOKE:-}" ]; then
  smoke_run smoke-condenser "$bin" train "$shards" --init "$kit/tiny-model" --out "$smoke/condenser" \
    --config configs/demo.toml --set model.skip_from=2 --set data.batch_size=64 --set optim.max_steps=40 \
    --set run.save_every=20 --set run.log_every=10 --device "$smoke_device"
  smoke_run smoke-cocondenser "$bin" train "$shards" --init "$smoke/condenser/final" --out "$smoke/co" \
    --config configs/demo-cocondenser.toml --set model.skip_from=2 --set data.batch_size=64 \
    --set loss.cache_chunk_size=32 --set optim.max_steps=20 --set run.log_every=5 --device "$smoke_device"
  smoke_run smoke-eval-spans "$bin" eval-spans "$shards" --model "$smoke/co/final" --device "$smoke_device"
  head -n 200 "$kit/silver/queries.tsv" > "$smoke/q.tsv"
  smoke_run smoke-encode "$bin" encode "$smoke/q.tsv" --model "$smoke/co/final" --out "$smoke/q.parquet" --device "$smoke_device"
  smoke_run smoke-eval "$bin" eval --model "$smoke/co/final" --corpus "$kit/silver/collection.tsv.gz" \
    --queries "$kit/silver/queries.tsv" --qrels "$kit/silver/qrels.silver.txt" --device "$smoke_device"
  cp "$smoke/condenser/metrics.jsonl" "$logs/smoke-condenser-metrics.jsonl" 2>/dev/null
  cp "$smoke/co/metrics.jsonl" "$logs/smoke-co-metrics.jsonl" 2>/dev/null
fi
run ref-condenser-eager     python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 $extra
run ref-condenser-masked    python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 --masked-only $extra
run ref-condenser-compile   python3 "$ref/bench_train.py" --cases condenser --seq 128 --batch 128 --masked-only --compile $extra
run ours-condenser          "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 $extra
run ours-condenser-bf16res  "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --residual bf16 $extra
run ref-condenser-512       python3 "$ref/bench_train.py" --cases condenser --seq 512 --batch 32 $extra
run ours-condenser-512      "$bin" bench train --device cuda --case condenser --seq 512 --batch-size 32 $extra
run ref-cocondenser-gc      python3 "$ref/bench_train.py" --cases cocondenser-gc --gc-chunk 128 --co-docs 256 $extra
run ours-cocondenser-gc     "$bin" bench train --device cuda --case cocondenser --batch-size 512 --gc-chunk 128 $extra
run ours-cocondenser-2048   "$bin" bench train --device cuda --case cocondenser --batch-size 2048 --gc-chunk 128 --steps 5 --warmup 2 $extra
# Which kernels dominate, ours and the reference's (eager, logits at masked positions only), 5 timed
# steps of each at 128 x 128 under libtorch's profiler, summed per kernel by the same script. The traces
# stay on the device machine (tens of MB); their summaries come back.
traces=$(mktemp -d)
profile() { # name, command... (writing the trace $traces/NAME.json)
  local name=$1
  timed "$@"
  local rc=$?
  (( rc == skipped )) && return
  echo "$name rc=$rc" | tee -a "$logs/lines.txt"
  python3 "$tools/trace_summary.py" "$traces/$name.json" --steps 5 > "$logs/$name.txt" 2>&1
  head -n 14 "$logs/$name.txt" >&2
}
profile ours-profile        "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --steps 5 --warmup 3 --profile "$traces/ours-profile.json" $extra
profile ref-profile         python3 "$tools/profile_ref.py" "$traces/ref-profile.json" "$ref" --cases condenser --seq 128 --batch 128 --masked-only --steps 5 --warmup 3 $extra

if [ -f "$shards/_manifest.json" ] || [ -f "$shards/manifest.json" ]; then
  run ours-shards           "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" $extra
  run ours-shards-grouped   "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --group-by-length 50 $extra
  # The levers against cuDNN attention's plan per batch shape (BENCHMARKS.md, 2026-11-29): fewer
  # shapes, no cuDNN attention, libtorch's opt-in single plan (documented to apply only without a mask).
  run ours-shards-grouped-pad8 "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --group-by-length 50 --pad-multiple 8 $extra
  run ours-shards-grouped-nocudnn "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --group-by-length 50 --cudnn-attention off $extra
  run ours-shards-grouped-avoid env TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1 "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --group-by-length 50 $extra
  run ours-shards-grouped-long "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --group-by-length 50 --warmup 150 --steps 50 $extra  # Packed batches (run.unpad, issue 27): no padding at all. Until the varlen flash kernel exists
  # this is attention sequence by sequence: a baseline, not the packed path's speed.
  run ours-shards-unpad     "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --data "$shards" --unpad --steps 10 $extra
fi
run ours-breakdown          "$bin" bench train --device cuda --case condenser --seq 128 --batch-size 128 --breakdown --steps 10 $extra

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
line("  bf16 residual vs compile", f("ours-condenser-bf16res", "seq/s"), f("ref-condenser-compile", "seq/s"), "")
line("condenser 512x32 seq/s", f("ours-condenser-512", "seq/s"), f("ref-condenser-512", "seq/s"), ">= 1.3 x eager")
line("cocondenser gc 512/128 seq/s", f("ours-cocondenser-gc", "seq/s"), f("ref-cocondenser-gc", "seq/s"), ">= 1.5 x gc_step")
for name in ["ours-shards", "ours-shards-grouped", "ours-shards-grouped-pad8", "ours-shards-grouped-nocudnn",
             "ours-shards-grouped-avoid", "ours-shards-grouped-long", "ours-shards-unpad"]:
    real, seqs = f(name, "real_tok/s"), f(name, "seq/s")
    ref = f("ref-condenser-compile", "seq/s")
    per = real / seqs if real and seqs else None
    line(f"{name[5:]} real tok/s", real, ref * per if ref and per else None, ">= 1.3 x compile, same spans")
# Ours: cudaMemGetInfo after the timed steps (the caching allocator's reserve + the CUDA context); the
# reference prints torch.cuda.max_memory_allocated (tensors only) in its .err log: not the same measure.
for name in ["ours-condenser", "ours-cocondenser-gc", "ours-cocondenser-2048"]:
    mem = f(name, "peak_mem_gib")
    print(f"{name}: device memory in use {mem if mem is not None else '-'} GiB (driver view)")
for line in open(sys.argv[1]):
    if line.startswith("check ") or line.startswith("numerics "):
        print(line.strip())
EOF
cp "$logs/table.txt" "$logs/lines.txt" "$out/"
cp "$logs/ours-profile.txt" "$logs/ref-profile.txt" "$out/" 2>/dev/null
tar -czf "$out/logs.tgz" -C "$logs" .
echo "table.txt, lines.txt and logs.tgz (every case's output) in $out" >&2
