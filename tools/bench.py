#!/usr/bin/env python3
"""Benchmarks jiuzhou against onnxruntime on the model set and writes docs/benchmarks.md.

Usage (normally through tools/update-benchmarks-doc.sh, on a quiet machine):

    PY=$(tools/python-env.sh | tail -1)
    "$PY" tools/bench.py [--jiuzhou target/release/jiuzhou] [--models DIR] [--threads 1,2]
                         [--iters 20] [--warmup 3] [--rounds 3] [--only resnet50,squeezenet]
                         [--out docs/benchmarks.md] [--json results.json]

For every model of MODELS (from $JIUZHOU_MODELS, default ~/.cache/jiuzhou/models, as written by
tools/gen_models.py) and every thread count N:

* the model is compiled once with `jiuzhou compile MODEL --target cpu -o MODEL.jz` (compile time reported
  separately, never timed with the runs);
* the inputs are the model's test_data_set_0/input_K.pb when present, else seeded random data (symbolic dims 1);
  both runtimes get the very same arrays (jiuzhou through .npy files and --input NAME=PATH);
* ROUNDS rounds alternate the two runtimes: `jiuzhou bench MODEL.jz --threads N --iters K --warmup W --json`,
  then onnxruntime (intra_op_num_threads=N, inter_op_num_threads=1, sequential, all graph optimizations) for W
  warm-up and K timed runs in this process; a runtime's latency is the median of its round medians;
* jiuzhou's outputs (`jiuzhou run MODEL.jz`) are compared with onnxruntime's: max|got-want| / max|want|;
* FLOPs are counted from the ONNX graph: 2·MACs of every Conv, ConvTranspose, MatMul and Gemm, with shapes from
  ONNX shape inference on the concrete input shapes (or, where inference cannot tell, from onnxruntime itself);
* GFLOP/s = FLOPs / latency; ratio = jiuzhou / onnxruntime latency (< 1: jiuzhou is faster); the geometric mean of
  the ratios is over the models that ran.

Text under a `## Notes` heading of an existing output file is kept, so hand-written analysis survives a rerun.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

MODELS = [
    "resnet50",
    "densenet121",
    "inception_v2",
    "squeezenet",
    "shufflenet",
    "bert_layer",
    "llama_layer",
]

REPO = Path(__file__).resolve().parent.parent
NOTES_HEADING = "## Notes"


def notes_section(text: str) -> str:
    """The `## Notes` section of an earlier output: from the first line that is exactly the heading to the end.

    Only a whole line counts: the preamble mentions the heading inside backquotes, and matching that mention kept
    a stale copy of the whole previous document as "notes".
    """
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\r\n").rstrip() == NOTES_HEADING:
            return "".join(lines[i:])
    return ""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def real_inputs(model: onnx.ModelProto) -> list:
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def make_inputs(name: str, model: onnx.ModelProto, model_dir: Path) -> dict:
    """The model's test_data_set_0 inputs, or seeded random data for inputs without a file."""
    feeds = {}
    data_dir = model_dir / "test_data_set_0"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for k, vi in enumerate(real_inputs(model)):
        pb = data_dir / f"input_{k}.pb"
        if pb.exists():
            t = onnx.TensorProto()
            t.ParseFromString(pb.read_bytes())
            feeds[vi.name] = numpy_helper.to_array(t)
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.uniform(-1, 1, shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feeds


# ---------------------------------------------------------------------------------------------------------------
# FLOPs


def _dims(vi) -> list | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    out = []
    for d in vi.type.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(d.dim_value)
    return out


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def count_flops(model: onnx.ModelProto, feeds: dict) -> float:
    """2·MACs of Conv, ConvTranspose, MatMul and Gemm at the shapes of `feeds`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in feeds:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for n in feeds[vi.name].shape:
                shape.dim.add().dim_value = int(n)
    try:
        m = shape_inference.infer_shapes(m, data_prop=True)
    except Exception as e:  # noqa: BLE001 - inference is best effort; ort fills the gaps
        log(f"  shape inference failed ({e}); asking onnxruntime for the shapes")
    shapes = {}
    types = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    heavy = [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    needed = {x for n in heavy for x in list(n.input[:2]) + [n.output[0]] if x}
    missing = sorted(x for x in needed if x not in shapes)
    if missing:
        # Ask onnxruntime: expose the missing values as outputs and run once.
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        have = {o.name for o in probe.graph.output}
        for x in missing:
            if x not in have:
                probe.graph.output.append(
                    onnx.helper.make_tensor_value_info(x, types.get(x) or onnx.TensorProto.FLOAT, None)
                )
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        for x, v in zip(names, sess.run(names, feeds)):
            shapes[x] = list(np.asarray(v).shape)
    macs = 0
    for n in heavy:
        try:
            if n.op_type == "Conv":
                w, y = shapes[n.input[1]], shapes[n.output[0]]
                macs += math.prod(y) * math.prod(w[1:])
            elif n.op_type == "ConvTranspose":
                x, w = shapes[n.input[0]], shapes[n.input[1]]
                macs += math.prod(x) * math.prod(w[1:])
            elif n.op_type == "MatMul":
                a, y = shapes[n.input[0]], shapes[n.output[0]]
                macs += math.prod(y) * a[-1]
            else:  # Gemm
                a, y = shapes[n.input[0]], shapes[n.output[0]]
                k = a[0] if _attr(n, "transA", 0) else a[1]
                macs += math.prod(y) * k
        except KeyError as e:
            log(f"  no shape for {e} of {n.op_type} {n.name}: not counted")
    return 2.0 * macs


# ---------------------------------------------------------------------------------------------------------------
# Runs


def run_cmd(cmd: list[str]) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr.strip()}")
    return p.stdout


def jiuzhou_bench(exe: str, jz: Path, npys: dict, threads: int, iters: int, warmup: int) -> dict:
    cmd = [exe, "bench", str(jz), "--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup), "--json"]
    for name, path in npys.items():
        cmd += ["--input", f"{name}={path}"]
    return json.loads(run_cmd(cmd).strip().splitlines()[-1])


def ort_session(model_path: Path, threads: int):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def ort_bench(sess, feeds: dict, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def max_rel_error(exe: str, jz: Path, npys: dict, want: list, out_dir: Path) -> float:
    cmd = [exe, "run", str(jz), "--threads", "1", "--output-dir", str(out_dir)]
    for name, path in npys.items():
        cmd += ["--input", f"{name}={path}"]
    run_cmd(cmd)
    worst = 0.0
    for k, w in enumerate(want):
        got = np.load(out_dir / f"output_{k}.npy")
        w = np.asarray(w)
        if got.shape != w.shape:
            return math.inf
        if not np.issubdtype(w.dtype, np.floating):
            worst = max(worst, 0.0 if np.array_equal(got, w) else math.inf)
            continue
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        diff = float(np.max(np.abs(got.astype(np.float64) - w.astype(np.float64)))) if w.size else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def bench_model(args, name: str, work: Path) -> dict:
    model_dir = Path(args.models) / name
    model_path = model_dir / "model.onnx"
    if not model_path.exists():
        log(f"{name}: {model_path} not found (generate it with tools/gen_models.py)")
        return {"model": name, "missing": True}
    log(f"{name}: preparing")
    model = onnx.load(str(model_path))
    feeds = make_inputs(name, model, model_dir)
    npys = {}
    for i, (k, v) in enumerate(feeds.items()):
        p = work / f"{name}_in{i}.npy"
        np.save(p, v)
        npys[k] = p
    flops = count_flops(model, feeds)
    jz = work / f"{name}.jz"
    t = time.perf_counter()
    stats = json.loads(
        run_cmd([args.jiuzhou, "compile", str(model_path), "--target", "cpu", "-o", str(jz), "--stats"])
        .strip()
        .splitlines()[-1]
    )
    compile_ms = (time.perf_counter() - t) * 1e3
    want = ort_session(model_path, 1).run(None, feeds)
    out_dir = work / f"{name}_out"
    out_dir.mkdir(exist_ok=True)
    err = max_rel_error(args.jiuzhou, jz, npys, want, out_dir)
    result = {
        "model": name,
        "gflop": flops / 1e9,
        "compile_ms": compile_ms,
        "fallback_ops": len(stats.get("fallback_ops", [])),
        "max_rel_error": err,
        "threads": {},
    }
    for n in args.threads:
        sess = ort_session(model_path, n)
        jz_medians, ort_medians = [], []
        for r in range(args.rounds):
            j = jiuzhou_bench(args.jiuzhou, jz, npys, n, args.iters, args.warmup)
            jz_medians.append(j["median_ms"])
            ort_medians.append(ort_bench(sess, feeds, args.iters, args.warmup))
            log(f"{name} t{n} round {r + 1}/{args.rounds}: jiuzhou {jz_medians[-1]:.2f} ms, ort {ort_medians[-1]:.2f} ms")
        jm, om = statistics.median(jz_medians), statistics.median(ort_medians)
        result["threads"][str(n)] = {
            "jiuzhou_ms": jm,
            "ort_ms": om,
            "jiuzhou_gflops": flops / 1e9 / (jm / 1e3) if jm > 0 else 0.0,
            "ort_gflops": flops / 1e9 / (om / 1e3) if om > 0 else 0.0,
            "ratio": jm / om if om > 0 else math.inf,
        }
    return result


# ---------------------------------------------------------------------------------------------------------------
# The document


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPU(s), {platform.system()} {platform.release()}"


def git_commit() -> str:
    try:
        return run_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    except Exception:  # noqa: BLE001 - not a checkout
        return "unknown"


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def render(results: list[dict], args, old_notes: str) -> str:
    out = [
        "# Benchmarks: jiuzhou vs onnxruntime",
        "",
        "Generated by `tools/update-benchmarks-doc.sh` (which runs `tools/bench.py`); do not edit by hand except",
        f"under `{NOTES_HEADING}`, which a rerun keeps.",
        "",
        f"- Machine: {machine()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- jiuzhou commit: {git_commit()}; onnxruntime {ort.__version__}",
        f"- Method: {args.rounds} alternating rounds per model and thread count, each {args.warmup} warm-up and"
        f" {args.iters} timed runs; latency = median of the round medians. Compilation is excluded (jiuzhou runs a"
        " `.jz` compiled once). Inputs: the model's test_data_set_0 (seeded random where absent), the same arrays"
        " for both runtimes.",
        "- GFLOP counts 2·MACs of Conv/ConvTranspose/MatMul/Gemm. Ratio = jiuzhou / onnxruntime latency (lower is"
        " better for jiuzhou). Error = max|jiuzhou − onnxruntime| / max|onnxruntime| over the outputs.",
        "",
    ]
    for n in args.threads:
        out += [
            f"## {n} thread{'s' if n != 1 else ''}",
            "",
            "| model | GFLOP | jiuzhou ms | onnxruntime ms | jiuzhou GFLOP/s | onnxruntime GFLOP/s | ratio | error |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        ratios = []
        for r in results:
            if r.get("missing"):
                out.append(f"| {r['model']} | not generated | | | | | | |")
                continue
            t = r["threads"][str(n)]
            ratios.append(t["ratio"])
            out.append(
                f"| {r['model']} | {r['gflop']:.4g} | {t['jiuzhou_ms']:.2f} | {t['ort_ms']:.2f} | "
                f"{t['jiuzhou_gflops']:.1f} | {t['ort_gflops']:.1f} | {t['ratio']:.2f} | {r['max_rel_error']:.1e} |"
            )
        out += ["", f"Geometric-mean ratio over {len(ratios)} model(s): **{geomean(ratios):.2f}**", ""]
    out += ["## Compilation", "", "| model | compile + write .jz (ms) | fallback nodes |", "|---|---:|---:|"]
    for r in results:
        if not r.get("missing"):
            out.append(f"| {r['model']} | {r['compile_ms']:.0f} | {r['fallback_ops']} |")
    out += ["", old_notes.rstrip() if old_notes else f"{NOTES_HEADING}\n\n(What stands in the way of ratio ≤ 1.0.)", ""]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jiuzhou", default=str(REPO / "target/release/jiuzhou"))
    ap.add_argument(
        "--models", default=os.environ.get("JIUZHOU_MODELS", str(Path.home() / ".cache/jiuzhou/models"))
    )
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--out", default=str(REPO / "docs/benchmarks.md"))
    ap.add_argument("--json", default="", help="also write the raw results here")
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",") if t]
    names = [m for m in args.only.split(",") if m] or MODELS
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s): {', '.join(unknown)}")
    if not Path(args.jiuzhou).exists():
        ap.error(f"{args.jiuzhou} not found: cargo build --release -p jiuzhou-compiler")
    out_path = Path(args.out)
    old_notes = ""
    if out_path.exists():
        text = out_path.read_text()
        old_notes = notes_section(text)
    with tempfile.TemporaryDirectory(prefix="jiuzhou-bench-") as tmp:
        results = [bench_model(args, name, Path(tmp)) for name in names]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render(results, args, old_notes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    log(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
