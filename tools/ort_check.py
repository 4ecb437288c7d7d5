#!/usr/bin/env python3
"""Cross-check test cases in backend-test layout against onnxruntime.

Usage:
    PY=$(tools/python-env.sh | tail -1)
    "$PY" tools/ort_check.py SUITE_DIR [--sample N] [--seed S] [--match SUBSTR] [-v]

SUITE_DIR holds one folder per case (``<case>/model.onnx`` and
``<case>/test_data_set_N/{input,output}_K.pb``), as written by
gen_node_suite.py and gen_models.py. For every selected case the script loads
the model with ``onnx.load``, reads each ``.pb`` as the proto kind the graph
declares (TensorProto, SequenceProto or OptionalProto), runs onnxruntime on the
CPU and compares its outputs with the stored ones.

Each case ends up as one of:
  pass      every output matches (floats: |got-want| <= atol + rtol*|want|)
  mismatch  onnxruntime ran but an output differs
  no-ort    onnxruntime cannot load or run the model (unsupported op or type);
            expected for a part of the node suite, not an error here

The exit status is 1 if any case is a mismatch, else 0. This is a sanity
check of the fixtures, not a conformance run of onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import warnings


def read_value(path: str, value_info):
    """Read one input_K.pb/output_K.pb according to the graph value's type."""
    import onnx
    from onnx import numpy_helper

    with open(path, "rb") as f:
        data = f.read()
    kind = value_info.type
    if kind.HasField("sequence_type"):
        proto = onnx.SequenceProto()
        proto.ParseFromString(data)
        return numpy_helper.to_list(proto)
    if kind.HasField("optional_type"):
        proto = onnx.OptionalProto()
        proto.ParseFromString(data)
        return numpy_helper.to_optional(proto)
    if kind.HasField("map_type"):
        proto = onnx.MapProto()
        proto.ParseFromString(data)
        return numpy_helper.to_dict(proto)
    proto = onnx.TensorProto()
    proto.ParseFromString(data)
    return numpy_helper.to_array(proto)


def same(got, want, rtol: float, atol: float) -> bool:
    """Compare an onnxruntime output with a stored value (recursing into lists)."""
    import numpy as np

    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same(g, w, rtol, atol) for g, w in zip(got, want))
        )
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return False
    if want.dtype.kind in "fc" or got.dtype.kind in "fc":
        try:
            g = got.astype(np.float64)
            w = want.astype(np.float64)
        except (TypeError, ValueError):
            return False
        return bool(np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True))
    if want.dtype.kind in "OSU":
        return got.astype(object).tolist() == want.astype(object).tolist()
    return bool(np.array_equal(got, want))


def check_case(case_dir: str, rtol: float, atol: float) -> tuple[str, str]:
    """Return (status, detail) for one case folder."""
    import onnx
    import onnxruntime as ort

    model_path = os.path.join(case_dir, "model.onnx")
    model = onnx.load(model_path)
    graph = model.graph
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises many kinds
        return "no-ort", f"load: {str(e).splitlines()[0][:160]}"

    data_sets = sorted(
        d for d in os.listdir(case_dir) if d.startswith("test_data_set_")
    )
    if not data_sets:
        return "mismatch", "no test_data_set_* folder"
    for ds in data_sets:
        ds_dir = os.path.join(case_dir, ds)
        feeds = {}
        for k, vi in enumerate(graph.input):
            path = os.path.join(ds_dir, f"input_{k}.pb")
            if os.path.exists(path):
                feeds[vi.name] = read_value(path, vi)
        wants = []
        for k, vi in enumerate(graph.output):
            wants.append(read_value(os.path.join(ds_dir, f"output_{k}.pb"), vi))
        try:
            gots = sess.run([vi.name for vi in graph.output], feeds)
        except Exception as e:  # noqa: BLE001
            return "no-ort", f"run: {str(e).splitlines()[0][:160]}"
        for vi, got, want in zip(graph.output, gots, wants):
            if not same(got, want, rtol, atol):
                return "mismatch", f"{ds}/{vi.name}"
    return "pass", ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite_dir")
    parser.add_argument("--sample", type=int, default=0, help="check N random cases (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample")
    parser.add_argument("--match", default="", help="only cases whose name contains this")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    cases = sorted(
        d
        for d in os.listdir(args.suite_dir)
        if os.path.isfile(os.path.join(args.suite_dir, d, "model.onnx")) and args.match in d
    )
    if args.sample and args.sample < len(cases):
        cases = sorted(random.Random(args.seed).sample(cases, args.sample))

    counts = {"pass": 0, "mismatch": 0, "no-ort": 0}
    for name in cases:
        status, detail = check_case(os.path.join(args.suite_dir, name), args.rtol, args.atol)
        counts[status] += 1
        if args.verbose or status == "mismatch":
            print(f"{status:8} {name} {detail}".rstrip())
    print(
        f"ort check: {len(cases)} cases, {counts['pass']} pass, "
        f"{counts['mismatch']} mismatch, {counts['no-ort']} not runnable by onnxruntime"
    )
    return 1 if counts["mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
