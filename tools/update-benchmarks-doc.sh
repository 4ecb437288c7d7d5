#!/usr/bin/env bash
# Regenerates docs/benchmarks.md: jiuzhou vs onnxruntime on the model set at 1 and 2 threads (tools/bench.py).
# Run it on a quiet machine: other load on the cores distorts both runtimes. Extra arguments go to bench.py
# (e.g. --only resnet50 --iters 5). Generates the model fixtures into the cache first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${JIUZHOU_CACHE:-$HOME/.cache/jiuzhou}"
models="${JIUZHOU_MODELS:-$cache/models}"
py="$(tools/python-env.sh | tail -n 1)"
"$py" tools/gen_models.py "$models" >/dev/null
cargo build --release -q -p jiuzhou-compiler
JIUZHOU_MODELS="$models" "$py" tools/bench.py --jiuzhou target/release/jiuzhou --out docs/benchmarks.md "$@"
grep -m4 'Geometric-mean\|^## ' docs/benchmarks.md || true
