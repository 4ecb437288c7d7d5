#!/usr/bin/env bash
# Regenerates docs/conformance.md: runs the ONNX node suite on every target and writes pass counts and the
# reasons for failures. Generates the suite into the cache first if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${JIUZHOU_CACHE:-$HOME/.cache/jiuzhou}"
py="$(tools/python-env.sh | tail -n 1)"
"$py" tools/gen_node_suite.py "$cache/node" >/dev/null
cargo build --release -q -p jiuzhou-compiler
reports=()
for target in reference cpu vnpu:default vnpu:vector_heavy vnpu:channels_last; do
  report="$cache/conformance-$target.json"
  ./target/release/jiuzhou conformance --target "$target" --suite "$cache/node" --report "$report" >/dev/null || true
  reports+=("$report")
done
python3 tools/conformance_doc.py "${reports[@]}" > docs/conformance.md
tail -n +1 docs/conformance.md | grep -m3 '^| `' || true
