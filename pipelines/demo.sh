#!/usr/bin/env bash
# The end-to-end demo, after `pipelines/setup.sh`: build, then each stage that exists so far.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
bin=target/release/condenser

echo "== condenser env" >&2
"$bin" env
