#!/usr/bin/env bash
# One-time set-up, idempotent (a second run does nothing and takes well under a second):
#   1. a project-local venv (.venv) with PyPI torch==2.11.0, whose torch/ folder is libtorch for tch;
#   2. .libtorch -> that folder (what .cargo/config.toml's LIBTORCH names), plus the CUDA headers the wheel
#      lacks, which build.rs needs to compile c10d's NCCL backend (csrc/c10d_nccl.cpp);
#   3. the pinned data of DATA.md under data/ (pipelines/fetch_data.py checks every sha256).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PYTHON=${PYTHON:-python3}

command -v "$PYTHON" >/dev/null || { echo "setup: error: $PYTHON not found (python3 >= 3.9 with pip and venv is needed)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup: error: cargo not found (install Rust with rustup)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv || { echo "setup: error: '$PYTHON -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi

# The dist-info folder tells whether the pinned torch is in, without importing it (import takes seconds).
if ! compgen -G ".venv/lib/python3*/site-packages/torch-${TORCH_VERSION}*.dist-info" >/dev/null; then
  echo "setup: installing torch==${TORCH_VERSION} into .venv (about 4.6 GB, a few minutes)" >&2
  .venv/bin/python -m pip install --disable-pip-version-check --no-input "torch==${TORCH_VERSION}" >&2 \
    || { echo "setup: error: pip install torch==${TORCH_VERSION} failed" >&2; exit 1; }
fi

# transformers (parity fixtures, checkpoint loading checks), sentence-transformers (the saved folder loads
# there as trained), pyarrow (reading shards as users do) and tensorboard (its event reader reads back the
# training event files).
PY_TOOLS="transformers==5.24.0 sentence-transformers==6.2.0 pyarrow==26.0.1 tensorboard==2.21.0"
for req in $PY_TOOLS; do
  name=${req%%==*}; name=${name//-/_}; version=${req##*==}
  if ! compgen -G ".venv/lib/python3*/site-packages/${name}-${version}.dist-info" >/dev/null; then
    echo "setup: installing $PY_TOOLS into .venv" >&2
    .venv/bin/python -m pip install --disable-pip-version-check --no-input $PY_TOOLS >&2 \
      || { echo "setup: error: pip install $PY_TOOLS failed" >&2; exit 1; }
    break
  fi
done

# Headers only (a few MB), beside torch in site-packages/nvidia/: ProcessGroupNCCL.hpp includes CUDA's
# crt/ and nv/ headers, which torch's own CUDA packages leave out. nccl.h comes with torch's NCCL, pinned
# here because ProcessGroupNCCL's layout follows its feature macros (csrc/c10d_nccl.cpp checks the sizes).
CUDA_HEADERS="nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-nccl-cu13==2.28.9"
for req in $CUDA_HEADERS; do
  name=${req%%==*}; name=${name//-/_}; version=${req##*==}
  if ! compgen -G ".venv/lib/python3*/site-packages/${name}-${version}.dist-info" >/dev/null; then
    echo "setup: installing $CUDA_HEADERS into .venv" >&2
    .venv/bin/python -m pip install --disable-pip-version-check --no-input $CUDA_HEADERS >&2 \
      || { echo "setup: error: pip install $CUDA_HEADERS failed" >&2; exit 1; }
    break
  fi
done

torch_dir=$(compgen -G ".venv/lib/python3*/site-packages/torch" | head -n 1)
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || { echo "setup: error: $torch_dir/lib/libtorch_cpu.so missing: the torch install is broken, remove .venv and rerun" >&2; exit 1; }
if [ "$(readlink .libtorch 2>/dev/null)" != "$torch_dir" ]; then
  ln -sfn "$torch_dir" .libtorch
fi

.venv/bin/python pipelines/fetch_data.py
.venv/bin/python pipelines/demo_corpus.py
.venv/bin/python pipelines/rag24_silver.py
