#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine:
#   1. makes a Python venv with the pinned onnx/onnxruntime (tools/python-env.sh),
#   2. generates the ONNX node conformance suite and the real-model fixtures into the cache
#      (${JIUZHOU_CACHE:-~/.cache/jiuzhou}; nothing generated is committed),
#   3. runs `cargo test` over the workspace in release mode (the reference target runs whole CNNs).
# Extra arguments go to `cargo test` (e.g. `tools/run-tests.sh -p jiuzhou-ir`).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${JIUZHOU_CACHE:-$HOME/.cache/jiuzhou}"
py="$(tools/python-env.sh | tail -n 1)"
"$py" tools/gen_node_suite.py "$cache/node"
"$py" tools/gen_models.py "$cache/models"

export JIUZHOU_NODE_SUITE="$cache/node"
export JIUZHOU_MODELS="$cache/models"
# onnx's light zoo models (weights stored as ConstantOfShape fills), as the onnx wheel ships them.
JIUZHOU_ONNX_LIGHT="$("$py" -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light"))')"
export JIUZHOU_ONNX_LIGHT
cargo test --workspace --release "$@"
