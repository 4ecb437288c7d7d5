#!/usr/bin/env python3
"""Write the ONNX node conformance suite to disk in backend-test layout.

Usage:
    PY=$(tools/python-env.sh | tail -1)
    "$PY" tools/gen_node_suite.py OUT_DIR

The pip wheel of onnx ships the node test *generators*
(``onnx.backend.test.case.node``) but not their data. This script runs every
generator (``collect_testcases()``; 1884 cases with onnx 1.23.2) and writes each
case the way onnx's own ``onnx/backend/test/cmd_tools.py generate-data`` does
for ``onnx/backend/test/data/node``::

    OUT_DIR/<case.name>/model.onnx                      (the case's ModelProto, as is)
    OUT_DIR/<case.name>/test_data_set_0/input_K.pb      (one per graph input)
    OUT_DIR/<case.name>/test_data_set_0/output_K.pb     (one per graph output)

Each ``.pb`` holds the proto that matches the graph value's type, named after
the graph input/output it belongs to:

* tensor   -> TensorProto    (``numpy_helper.from_array``; values the generator
                              already gave as a TensorProto, e.g. float8 data,
                              are written as given)
* sequence -> SequenceProto  (``numpy_helper.from_list``)
* optional -> OptionalProto  (``numpy_helper.from_optional``; an empty optional
                              is written with elem_type UNDEFINED)
* map      -> MapProto       (``numpy_helper.from_dict``)

The generators seed numpy themselves (``np.random.seed(0)`` before every
export function), so the output is deterministic for a given onnx/numpy.

The suite is built in ``OUT_DIR.partial`` and renamed into place, then a stamp
``OUT_DIR/.complete`` records the case count and the onnx/numpy versions; a
later run with a matching stamp does nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from collections import Counter

STAMP_NAME = ".complete"
# Bump when the on-disk format written by this script changes.
GENERATOR_VERSION = 1


def _quiet_numpy() -> None:
    """Silence the overflow/invalid-value warnings some generators provoke."""
    import numpy as np

    warnings.filterwarnings("ignore")
    np.seterr(all="ignore")


def _stamp_key() -> str:
    """The part of the stamp that decides whether a suite on disk is current.

    Read from package metadata so the up-to-date check needs no onnx import.
    """
    from importlib.metadata import version

    return (
        f"generator=gen_node_suite v{GENERATOR_VERSION}\n"
        f"onnx={version('onnx')}\n"
        f"numpy={version('numpy')}\n"
        f"ml_dtypes={version('ml_dtypes')}\n"
    )


def _stamp_is_current(stamp_path: str) -> int | None:
    """Return the recorded case count if the stamp matches this environment."""
    try:
        with open(stamp_path) as f:
            text = f.read()
    except OSError:
        return None
    key, _, count_line = text.rpartition("cases=")
    if key != _stamp_key() or not count_line.strip().isdigit():
        return None
    return int(count_line.strip())


def _value_proto(value, value_info):
    """Return the proto that onnx's generate-data writes for one graph value.

    Mirrors onnx/backend/test/cmd_tools.py: the proto kind follows the graph
    input/output's declared type, not the Python type of the value.
    """
    from onnx import TensorProto, numpy_helper

    kind = value_info.type
    name = value_info.name
    if kind.HasField("map_type"):
        return numpy_helper.from_dict(value, name)
    if kind.HasField("sequence_type"):
        return numpy_helper.from_list(value, name)
    if kind.HasField("optional_type"):
        return numpy_helper.from_optional(value, name)
    assert kind.HasField("tensor_type"), f"{name}: unsupported value type {kind}"
    if isinstance(value, TensorProto):
        return value
    return numpy_helper.from_array(value, name)


def write_case(case, case_dir: str) -> None:
    """Write one TestCase (model + data sets) into case_dir, which must not exist."""
    os.makedirs(case_dir)
    model = case.model
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    for i, (inputs, outputs) in enumerate(case.data_sets):
        ds_dir = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds_dir)
        for j, value in enumerate(inputs):
            proto = _value_proto(value, model.graph.input[j])
            with open(os.path.join(ds_dir, f"input_{j}.pb"), "wb") as f:
                f.write(proto.SerializeToString())
        for j, value in enumerate(outputs):
            proto = _value_proto(value, model.graph.output[j])
            with open(os.path.join(ds_dir, f"output_{j}.pb"), "wb") as f:
                f.write(proto.SerializeToString())


def _is_ours_or_empty(path: str) -> bool:
    """True if path may be replaced wholesale: missing, empty or stamped by us."""
    if not os.path.exists(path):
        return True
    if not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    return not entries or STAMP_NAME in entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory to create (e.g. $JIUZHOU_CACHE/onnx-node)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the stamp matches")
    args = parser.parse_args(argv)

    out_dir = os.path.abspath(args.out_dir)
    stamp_path = os.path.join(out_dir, STAMP_NAME)
    if not args.force:
        count = _stamp_is_current(stamp_path)
        if count is not None:
            print("gen_node_suite: stamp matches, nothing to do", file=sys.stderr)
            print(f"node suite: {count} cases in {out_dir}")
            return 0

    _quiet_numpy()
    import onnx  # noqa: F401  (imported after the warning filters are set)
    from onnx.backend.test.case.node import collect_testcases

    start = time.monotonic()
    cases = collect_testcases()
    stamp = _stamp_key() + f"cases={len(cases)}\n"

    if not _is_ours_or_empty(out_dir):
        print(
            f"gen_node_suite: {out_dir} exists, is not empty and has no {STAMP_NAME}; "
            "refusing to overwrite it",
            file=sys.stderr,
        )
        return 2

    dupes = sorted(n for n, k in Counter(c.name for c in cases).items() if k > 1)
    if dupes:
        print(f"gen_node_suite: duplicate case names: {dupes[:10]}", file=sys.stderr)
        return 1

    partial = out_dir + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    for case in cases:
        write_case(case, os.path.join(partial, case.name))
    with open(os.path.join(partial, STAMP_NAME), "w") as f:
        f.write(stamp)

    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(partial, out_dir)
    elapsed = time.monotonic() - start
    print(f"gen_node_suite: wrote {len(cases)} cases in {elapsed:.1f}s", file=sys.stderr)
    print(f"node suite: {len(cases)} cases in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
