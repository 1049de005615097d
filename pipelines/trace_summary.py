#!/usr/bin/env python3
"""Device time per kernel in a Chrome trace from libtorch's profiler (ours: `condenser bench train
--profile FILE`; the reference: pipelines/profile_ref.py), so both are summed the same way.

    python3 pipelines/trace_summary.py TRACE.json [--steps N] [--top 25]

Prints the kernels' total time (per step with --steps), the share of each kernel class (matrix products,
attention, normalisation, softmax and losses, optimizer, copies and casts, other elementwise) and the top
kernels by time. Kernel time is summed, so concurrent kernels (rare here: one stream) would count twice.
"""
import argparse
import collections
import json
import re

CLASSES = [
    ("matmul (gemm)", r"gemm|cutlass|sm90_xmma|sm80_xmma|cublas|nvjet|xmma|wgmma"),
    ("attention", r"flash|fmha|attention|efficient_attention|sdpa"),
    ("layernorm", r"layer_norm|layernorm|LayerNorm"),
    ("softmax / loss", r"softmax|log_softmax|nll_loss|cross_entropy"),
    ("optimizer", r"adam|Adam|multi_tensor|foreach"),
    ("dropout / rng", r"dropout|bernoulli|philox|fused_dropout|masked_scale"),
    ("copy / cast", r"copy|Copy|cast|to_copy|memcpy|Memcpy|CatArrayBatched|cat_"),
    ("reduce", r"reduce_kernel|Reduce|sum_|norm_kernel"),
    ("index / gather", r"index|gather|scatter|embedding"),
    ("elementwise", r"elementwise|vectorized|unrolled|triton_"),
]


def classify(name):
    for label, pat in CLASSES:
        if re.search(pat, name):
            return label
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=1, help="divide totals by this many steps")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    with open(a.trace) as f:
        events = json.load(f)
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    kernels = [e for e in events if e.get("cat") in ("kernel", "Kernel") and "dur" in e]
    memcpy = [e for e in events if e.get("cat") in ("gpu_memcpy", "gpu_memset") and "dur" in e]
    total = sum(e["dur"] for e in kernels)
    if not kernels:
        print(f"{a.trace}: no device kernels in the trace")
        return
    span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    per = a.steps
    print(
        f"{a.trace}: {len(kernels) / per:.0f} kernels/step, kernel time {total / per / 1e3:.2f} ms/step, "
        f"first-to-last kernel {span / per / 1e3:.2f} ms/step (device busy {100 * total / span:.1f}%), "
        f"memcpy/memset {sum(e['dur'] for e in memcpy) / per / 1e3:.2f} ms/step"
    )
    by_class = collections.Counter()
    by_name = collections.Counter()
    count = collections.Counter()
    for e in kernels:
        by_class[classify(e["name"])] += e["dur"]
        short = e["name"][:110]
        by_name[short] += e["dur"]
        count[short] += 1
    print("  by class:")
    for label, d in by_class.most_common():
        print(f"    {label:16} {d / per / 1e3:8.2f} ms/step {100 * d / total:5.1f}%")
    print(f"  top {a.top} kernels:")
    for name, d in by_name.most_common(a.top):
        print(f"    {d / per / 1e3:8.2f} ms {100 * d / total:5.1f}% x{count[name] / per:5.0f}  {name}")


if __name__ == "__main__":
    main()
