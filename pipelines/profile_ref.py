#!/usr/bin/env python3
"""The PyTorch reference's timed steps under torch.profiler, as a Chrome trace for trace_summary.py.

    python3 pipelines/profile_ref.py TRACE.json REF_DIR [bench_train.py options...]

bench_train.run_case syncs the device once after the warm-up steps and once after the timed steps; the
profiler starts at the first of those syncs and stops at the second, so the trace holds exactly the
timed steps (run one case at a time).
"""
import sys

import torch

trace, ref, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, ref)
import bench_train as bt  # noqa: E402

real_sync = bt.sync
state = {"calls": 0, "prof": None}


def sync(device):
    real_sync(device)
    state["calls"] += 1
    if state["calls"] == 1:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        state["prof"] = torch.profiler.profile(activities=acts)
        state["prof"].__enter__()
    elif state["calls"] == 2:
        state["prof"].__exit__(None, None, None)
        state["prof"].export_chrome_trace(trace)
        print(f"# profile of the timed steps: {trace}", file=sys.stderr)


bt.sync = sync
sys.argv = ["bench_train.py"] + argv
bt.main()
