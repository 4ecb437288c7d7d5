#!/usr/bin/env python3
"""Regenerate the committed fixture fixtures/tiny_cnn/.

Usage:
    PY=$(tools/python-env.sh | tail -1)
    "$PY" tools/gen_tiny_cnn.py [OUT_DIR]        # default: fixtures/tiny_cnn

Writes:
    model.onnx            opset 13; input `image` float32 [1,3,32,32], output `probs` [1,10]:
                          Conv3x3(3->8)+BatchNormalization+Relu+MaxPool2
                          -> Conv3x3(8->16)+BatchNormalization+Relu+MaxPool2
                          -> GlobalAveragePool -> Flatten -> Gemm(16->10) -> Softmax
                          Weights are seeded random values stored as initializers.
    input.npy             the input image, float32 ~ U(0, 1)
    expected_output.npy   onnxruntime's output for it (CPU, no graph optimizations, 1 thread)

Everything comes from one seeded numpy Generator, so rerunning rewrites the
same model and input bytes (the expected output may differ in the last bits
between CPUs, since it is onnxruntime's).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

SEED = 20240613
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_model(rng):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = []

    def param(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def conv_block(x, idx, c_in, c_out):
        fan_in = c_in * 3 * 3
        w = param(f"conv{idx}.weight", rng.standard_normal((c_out, c_in, 3, 3)) * math.sqrt(2.0 / fan_in))
        b = param(f"conv{idx}.bias", rng.standard_normal(c_out) * 0.02)
        scale = param(f"bn{idx}.scale", rng.uniform(0.9, 1.1, c_out))
        shift = param(f"bn{idx}.bias", rng.standard_normal(c_out) * 0.02)
        mean = param(f"bn{idx}.mean", rng.standard_normal(c_out) * 0.05)
        var = param(f"bn{idx}.var", rng.uniform(0.5, 1.5, c_out))
        return [
            helper.make_node("Conv", [x, w, b], [f"conv{idx}"], name=f"conv{idx}", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node(
                "BatchNormalization", [f"conv{idx}", scale, shift, mean, var], [f"bn{idx}"], name=f"bn{idx}", epsilon=1e-5
            ),
            helper.make_node("Relu", [f"bn{idx}"], [f"relu{idx}"], name=f"relu{idx}"),
            helper.make_node(
                "MaxPool", [f"relu{idx}"], [f"pool{idx}"], name=f"pool{idx}", kernel_shape=[2, 2], strides=[2, 2]
            ),
        ]

    nodes = conv_block("image", 1, 3, 8) + conv_block("pool1", 2, 8, 16)
    fc_w = param("fc.weight", rng.standard_normal((10, 16)) * math.sqrt(1.0 / 16))
    fc_b = param("fc.bias", rng.standard_normal(10) * 0.02)
    nodes += [
        helper.make_node("GlobalAveragePool", ["pool2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model_gen_version(
        graph, producer_name="jiuzhou-tools", opset_imports=[helper.make_opsetid("", 13)]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default=os.path.join(REPO_ROOT, "fixtures", "tiny_cnn"))
    args = parser.parse_args(argv)

    import numpy as np
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(SEED)
    model = build_model(rng)
    image = rng.uniform(0.0, 1.0, (1, 3, 32, 32)).astype(np.float32)

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (probs,) = sess.run(["probs"], {"image": image})
    if not np.all(np.isfinite(probs)) or np.ptp(probs) < 1e-3 or abs(float(probs.sum()) - 1.0) > 1e-5:
        raise SystemExit(f"gen_tiny_cnn: degenerate output {probs}")

    os.makedirs(args.out_dir, exist_ok=True)
    onnx.save(model, os.path.join(args.out_dir, "model.onnx"))
    np.save(os.path.join(args.out_dir, "input.npy"), image)
    np.save(os.path.join(args.out_dir, "expected_output.npy"), probs)
    print(f"tiny_cnn: probs {np.array2string(probs[0], precision=4)} (argmax {int(probs.argmax())}) in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
