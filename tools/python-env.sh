#!/usr/bin/env bash
# Create (once) and print the path of the Python virtual environment used by the
# jiuzhou fixture generators (tools/gen_*.py).
#
#   PY=$(tools/python-env.sh | tail -1)
#   "$PY" tools/gen_node_suite.py "$JIUZHOU_CACHE/node"
#
# The venv lives at ${JIUZHOU_CACHE:-$HOME/.cache/jiuzhou}/venv and holds pinned
# onnx, onnxruntime, numpy and ml_dtypes. A stamp file inside the venv records the exact
# requirement list it was built from; when the stamp matches, the venv is reused
# without touching the network. When it does not match (first run, changed pins,
# a half-finished earlier install) the venv is rebuilt from scratch.
#
# Environment:
#   JIUZHOU_CACHE   cache root (default: $HOME/.cache/jiuzhou)
#   JIUZHOU_PYTHON  interpreter used to create the venv (default: python3)
#
# Only the last line of stdout is the interpreter path; progress goes to stderr.
# Needs no stdin and no terminal, so it works under CI=true.
set -euo pipefail

# The pins. Change them here only; the stamp makes every cache pick the change up.
REQUIREMENTS=(
  "onnx==1.23.2"
  "onnxruntime==1.32.0"
  "numpy==2.4.6"
  # onnx's Cast test generators convert out-of-range floats to 4/2-bit integers through ml_dtypes; 0.7 changed
  # that (undefined) conversion from wrapping to 0, which changes the expected outputs of 24 node cases.
  "ml_dtypes==0.5.4"
)

cache="${JIUZHOU_CACHE:-$HOME/.cache/jiuzhou}"
venv="$cache/venv"
stamp="$venv/.jiuzhou-requirements"
base_python="${JIUZHOU_PYTHON:-python3}"
want="$(printf '%s\n' "${REQUIREMENTS[@]}")"

venv_python="$venv/bin/python"

if [[ -x "$venv_python" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] \
  && "$venv_python" -c 'import onnx, onnxruntime, numpy' >/dev/null 2>&1; then
  echo "python-env: reusing $venv" >&2
else
  echo "python-env: creating $venv with: ${REQUIREMENTS[*]}" >&2
  if ! command -v "$base_python" >/dev/null 2>&1; then
    echo "python-env: '$base_python' not found; set JIUZHOU_PYTHON" >&2
    exit 1
  fi
  mkdir -p "$cache"
  rm -rf "$venv"
  "$base_python" -m venv "$venv" >&2
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  "$venv_python" -m pip install -q "${REQUIREMENTS[@]}" >&2 </dev/null
  "$venv_python" -c 'import onnx, onnxruntime, numpy' >&2
  # Written last: a stamp exists only for a venv whose install finished.
  printf '%s\n' "$want" >"$stamp"
fi

echo "$venv_python"
