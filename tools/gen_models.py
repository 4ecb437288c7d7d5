#!/usr/bin/env python3
"""Build whole-model fixtures with expected outputs from onnxruntime.

Usage:
    PY=$(tools/python-env.sh | tail -1)
    "$PY" tools/gen_models.py OUT_DIR [--only NAME ...] [--force] [--activations]

Writes, in ONNX backend-test layout::

    OUT_DIR/<name>/model.onnx
    OUT_DIR/<name>/test_data_set_N/input_K.pb    (TensorProto named after graph input K)
    OUT_DIR/<name>/test_data_set_N/output_K.pb   (TensorProto named after graph output K)

The models:

* The nine CNNs the onnx wheel ships in ``onnx/backend/test/data/light``
  (bvlc_alexnet, densenet121, inception_v1, inception_v2, resnet50, shufflenet,
  squeezenet, vgg19, zfnet512). Their big weights were stripped to
  ``ConstantOfShape(shape initializer)`` nodes filled with 0.02, and every
  initializer is also listed as a graph input (IR 3 style), together with
  dummies such as ``OC2_DUMMY_1`` (a Reshape target shape) and unused blobs.
  Here every parameter becomes a real random initializer (see
  ``materialize_light_model``), the graph inputs shrink to the image input
  (1x3x224x224), ir_version goes to 4 (the first that lets an initializer be
  no graph input) and the opset stays 9. Each Conv/Gemm is then rescaled by a
  power of two so that activations stay O(1) on the sample input (``calibrate``).
* ``bert_layer`` (opset 17): a pre-LN BERT encoder layer, x[batch, seq, 64] and
  a 0/1 attention mask[batch, seq]; test data at batch=2, seq=7.
* ``llama_layer`` (opset 18): a Llama decoder layer (RMSNorm, rotary embedding,
  causal mask, SiLU-gated MLP) plus an lm-head ArgMax; x[1, seq, 64]; outputs
  the hidden state and int64 token ids; test data at seq=9.
* ``dynamic_batch_mlp`` (opset 13): Flatten + Gemm + Relu + MatMul + Reshape(-1)
  + Softmax with a symbolic batch ``N``; test_data_set_0 at N=1, _1 at N=5.

Expected outputs come from onnxruntime on the CPU with graph optimizations
disabled and one thread. Everything is seeded (one numpy Generator per model,
seeded from the model's name), so a rerun writes the same bytes.

Each model is built in ``<name>.partial`` and renamed into place with a stamp
``<name>/.complete``; when all are done ``OUT_DIR/.complete`` records the
versions, and a later run with a matching stamp does nothing. The vgg19 model
is ~550 MB and all nine CNNs ~1.4 GB: meant for a cache, not for git.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
import warnings
import zlib

STAMP_NAME = ".complete"
# Bump when the models or data written by this script change.
GENERATOR_VERSION = 1

LIGHT_MODELS = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]
BUILT_MODELS = ["bert_layer", "llama_layer", "dynamic_batch_mlp"]
ALL_MODELS = LIGHT_MODELS + BUILT_MODELS

# Ops a parameter may pass through (unchanged in value) before it is used.
_PASS_THROUGH = {"Unsqueeze", "Reshape", "Identity", "Squeeze", "Flatten"}


def _stamp_key() -> str:
    """The stamp text for the current generator and package versions."""
    from importlib.metadata import version

    return (
        f"generator=gen_models v{GENERATOR_VERSION}\n"
        f"onnx={version('onnx')}\n"
        f"onnxruntime={version('onnxruntime')}\n"
        f"numpy={version('numpy')}\n"
    )


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _rng(name: str, attempt: int = 0):
    import numpy as np

    return np.random.default_rng([zlib.crc32(name.encode()), attempt])


# --------------------------------------------------------------------------
# The onnx wheel's "light" CNNs
# --------------------------------------------------------------------------


class _Uses:
    """Producer/consumer index of a graph."""

    def __init__(self, graph):
        self.consumers: dict[str, list] = {}
        self.producer = {}
        for node in graph.node:
            for k, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, k))
            for name in node.output:
                self.producer[name] = node

    def final_uses(self, name: str) -> list:
        """(node, input index) pairs that use name, looking through _PASS_THROUGH ops."""
        out = []
        for node, k in self.consumers.get(name, []):
            if node.op_type in _PASS_THROUGH and k == 0:
                out.extend(self.final_uses(node.output[0]))
            else:
                out.append((node, k))
        return out


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _random_parameter(name: str, shape: tuple, uses: _Uses, rng):
    """A float32 array for the parameter `name`, scaled for its role.

    Conv/Gemm weights ~ N(0, 2/fan_in) (He), biases and shifts ~ N(0, 0.02^2).
    BatchNormalization: scale 1 +- 0.1, bias small, mean small,
    var ~ U[0.5, 1.5]. A Mul after a BN (caffe2 "Scale") gets 1 +- 0.1, an
    Add gets a small shift. `calibrate` then fixes the overall scale of each
    Conv/Gemm layer.
    """
    import numpy as np

    final = uses.final_uses(name)
    roles = {(node.op_type, k) for node, k in final}
    if len(roles) != 1:
        raise ValueError(f"parameter {name} has no single role: {sorted(roles)}")
    (op, k), node = roles.pop(), final[0][0]

    def normal(std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def uniform(lo, hi):
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    if (op, k) in {("Conv", 1), ("Gemm", 1)}:
        if op == "Conv":
            fan_in = int(np.prod(shape[1:]))
        else:
            fan_in = shape[1] if _attr(node, "transB", 0) else shape[0]
        return normal(math.sqrt(2.0 / fan_in))
    if (op, k) in {("Conv", 2), ("Gemm", 2), ("BatchNormalization", 2), ("Add", 1), ("Add", 0)}:
        return normal(0.02)
    if (op, k) in {("BatchNormalization", 1), ("Mul", 0), ("Mul", 1)}:
        return uniform(0.9, 1.1)
    if (op, k) == ("BatchNormalization", 3):
        return normal(0.05)
    if (op, k) == ("BatchNormalization", 4):
        return uniform(0.5, 1.5)
    raise ValueError(f"parameter {name}: no random scheme for role {op} input {k}")


def materialize_light_model(model, rng):
    """Turn a 'light' model into a self-contained one with random weights.

    1. Every ConstantOfShape whose shape is an initializer (or Constant) is
       replaced by an initializer of that shape, named after its output.
    2. The float initializers the file did keep (biases, BN statistics, taken
       from the trained model) are redrawn the same way: trained BN statistics
       next to random conv weights would blow activations up or down.
    3. Graph inputs backed by an initializer (all but the image) stop being
       inputs; int64 ones (Reshape target shapes such as OC2_DUMMY_1) stay as
       initializers; initializers no node uses (ConstantOfShape shapes once
       their node is gone, caffe2 blob queues) are dropped.
    4. ir_version is raised to 4 so that initializers need not be inputs.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {
        n.output[0]: numpy_helper.to_array(_attr(n, "value", None))
        for n in graph.node
        if n.op_type == "Constant" and _attr(n, "value", None) is not None
    }
    uses = _Uses(graph)

    # 1. ConstantOfShape with a constant shape -> parameter initializer.
    new_params: dict[str, tuple] = {}
    drop_nodes = set()
    for node in graph.node:
        if node.op_type != "ConstantOfShape":
            continue
        src = node.input[0]
        if src in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[src]))
        elif src in constants:
            shape = tuple(int(d) for d in constants[src])
        else:
            continue
        value = _attr(node, "value", None)
        dtype = value.data_type if value is not None else TensorProto.FLOAT
        if dtype != TensorProto.FLOAT:
            raise ValueError(f"{node.output[0]}: ConstantOfShape of type {dtype}")
        new_params[node.output[0]] = shape
        drop_nodes.add(id(node))

    # 2. Float initializers kept from the trained model that act as parameters.
    for name, tensor in inits.items():
        if tensor.data_type == TensorProto.FLOAT and uses.consumers.get(name):
            new_params.setdefault(name, tuple(tensor.dims))

    kept_nodes = [n for n in graph.node if id(n) not in drop_nodes]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    uses = _Uses(graph)

    # Draw in node order so that the values depend only on the graph.
    order = []
    for node in graph.node:
        for name in node.input:
            if name in new_params and name not in order:
                order.append(name)
    fresh = {name: numpy_helper.from_array(_random_parameter(name, new_params[name], uses, rng), name) for name in order}

    # 3. Rebuild the initializer list and the graph inputs.
    used = {name for node in graph.node for name in node.input}
    graph_outputs = {o.name for o in graph.output}
    new_inits = []
    for name in order:
        new_inits.append(fresh[name])
    for tensor in graph.initializer:
        if tensor.name in fresh or (tensor.name not in used and tensor.name not in graph_outputs):
            continue
        new_inits.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    init_names = {t.name for t in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in init_names and vi.name not in new_params]
    # An input neither used nor an initializer would be a leftover dummy.
    real_inputs = [vi for vi in real_inputs if vi.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    produced = {o for n in graph.node for o in n.output}
    keep_vi = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)

    # 4. Initializers that are not inputs need IR version 4.
    model.ir_version = max(model.ir_version, 4)
    missing = sorted(used - init_names - produced - {vi.name for vi in graph.input} - {""})
    if missing:
        raise ValueError(f"dangling values after materializing: {missing[:5]}")
    onnx.checker.check_model(model, full_check=True)
    return model


def calibrate(model, feeds, target_rms: float = 1.0) -> int:
    """Rescale each Conv/Gemm layer so that its output has an RMS near target_rms.

    He-initialized weights keep activations O(1) through a plain conv+relu
    stack, but max pooling, residual sums and BatchNormalization with random
    statistics drift them: without this, inception_v1/resnet50/shufflenet
    reach logits of ~100 and a one-hot softmax. Layer by layer in topological
    depth order (a layer's inputs are final when it is measured), the weight
    and bias of every Conv/Gemm are multiplied by a power of two
    2^round(log2(target/rms)) measured with onnxruntime on the sample input
    (LSUV-style). Powers of two keep the weights exact scalings of the seeded
    draw and make tiny run-to-run differences in the measured RMS harmless.
    Returns the number of onnxruntime runs.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}

    def source(name: str) -> str | None:
        """The initializer behind a value, looking through Reshape and the like."""
        while name not in inits:
            node = producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH:
                return None
            name = node.input[0]
        return name

    # Layers to calibrate: Conv/Gemm whose weight is an initializer -> [weight, bias].
    layer_params = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and source(node.input[1]):
            layer_params[id(node)] = [src for src in map(source, node.input[1:3]) if src]
    depth: dict[str, int] = {}
    levels: dict[int, list] = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        d = max((depth.get(x, 0) for x in node.input), default=0)
        if id(node) in layer_params:
            d += 1
            levels.setdefault(d, []).append(node)
        for out in node.output:
            depth[out] = d
    scaled = [name for names in layer_params.values() for name in names]
    if len(set(scaled)) != len(scaled):
        raise ValueError("a Conv/Gemm parameter is shared between layers; cannot calibrate")
    params = {name: numpy_helper.to_array(inits[name]).copy() for name in scaled}

    # A probe model: the parameters become overridable inputs, the layer outputs outputs.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name, value in params.items():
        probe.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, value.shape))
    for group in levels.values():
        for p in group:
            probe.graph.output.append(helper.make_empty_tensor_value_info(p.output[0]))
    sess = ort_session(probe.SerializeToString())
    for d in sorted(levels):
        group = levels[d]
        outs = sess.run([p.output[0] for p in group], {**feeds, **params})
        for p, y in zip(group, outs):
            rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
            if not np.isfinite(rms) or rms == 0.0:
                raise ValueError(f"calibrate: layer output {p.output[0]} has rms {rms}")
            factor = np.float32(2.0 ** round(math.log2(target_rms / rms)))
            for name in layer_params[id(p)]:
                params[name] *= factor
    for name, value in params.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    return len(levels)


def light_model(name: str):
    """Load onnx's light_<name>.onnx and materialize it; returns (model, data sets)."""
    import numpy as np
    import onnx

    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    rng = _rng(name)
    model = materialize_light_model(onnx.load(path), rng)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32)
    calibrate(model, feeds)
    onnx.checker.check_model(model, full_check=True)
    return model, [feeds]


# --------------------------------------------------------------------------
# Models built with onnx.helper
# --------------------------------------------------------------------------


class GraphBuilder:
    """A tiny helper around onnx.helper that names values and initializers."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes = []
        self.initializers = []
        self.counter = 0

    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, name: str, array):
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def i64(self, name: str, values):
        import numpy as np

        return self.const(name, np.asarray(values, dtype=np.int64))

    def f32(self, name: str, values):
        import numpy as np

        return self.const(name, np.asarray(values, dtype=np.float32))

    def weight(self, name: str, shape, std: float):
        import numpy as np

        return self.f32(name, self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def near_one(self, name: str, shape):
        return self.f32(name, self.rng.uniform(0.9, 1.1, size=shape))

    def op(self, op_type: str, inputs, hint: str | None = None, outputs=None, **attrs):
        """Add a node; returns its output name (or the list, if several)."""
        from onnx import helper

        if outputs is None:
            outputs = [self.fresh(hint or op_type.lower())]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.fresh(op_type), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def linear(self, x: str, prefix: str, d_in: int, d_out: int, bias: bool = True) -> str:
        y = self.op("MatMul", [x, self.weight(f"{prefix}.weight", (d_in, d_out), 1.0 / math.sqrt(d_in))], prefix)
        if bias:
            y = self.op("Add", [y, self.weight(f"{prefix}.bias", (d_out,), 0.02)], prefix + "_bias")
        return y

    def model(self, name: str, inputs, outputs, opset: int):
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model_gen_version(
            graph, producer_name="jiuzhou-tools", opset_imports=[helper.make_opsetid("", opset)]
        )
        onnx.checker.check_model(model, full_check=True)
        return model


def bert_layer():
    """Pre-LN BERT encoder layer: 4 heads of 16, FFN 64 -> 256 -> 64, Erf GELU."""
    import numpy as np
    from onnx import TensorProto, helper

    d, heads, dk, ff = 64, 4, 16, 256
    rng = _rng("bert_layer")
    b = GraphBuilder(rng)

    # Additive mask: (1 - mask) * -10000, broadcast to [batch, 1, 1, seq].
    inv = b.op("Sub", [b.f32("one", 1.0), "attention_mask"], "mask_inv")
    add_mask = b.op("Mul", [inv, b.f32("mask_neg", -10000.0)], "mask_add")
    add_mask = b.op("Unsqueeze", [add_mask, b.i64("mask_axes", [1, 2])], "mask_4d")

    # Dynamic shape pieces: batch and seq as 1-D int64 tensors.
    shape = b.op("Shape", ["x"], "x_shape")
    batch = b.op("Gather", [shape, b.i64("idx0", 0)], "batch")
    seq = b.op("Gather", [shape, b.i64("idx1", 1)], "seq")
    batch1 = b.op("Unsqueeze", [batch, b.i64("axis0", [0])], "batch_1d")
    seq1 = b.op("Unsqueeze", [seq, "axis0"], "seq_1d")
    heads_shape = b.op("Concat", [batch1, seq1, b.i64("heads_dk", [heads, dk])], "heads_shape", axis=0)
    merged_shape = b.op("Concat", [batch1, seq1, b.i64("model_dim", [d])], "merged_shape", axis=0)

    h = b.op(
        "LayerNormalization", ["x", b.near_one("ln1.weight", (d,)), b.weight("ln1.bias", (d,), 0.02)], "ln1",
        axis=-1, epsilon=1e-12,
    )

    def split_heads(t: str, perm) -> str:
        t = b.op("Reshape", [t, heads_shape], t + "_heads")
        return b.op("Transpose", [t], t + "_t", perm=perm)

    q = split_heads(b.linear(h, "attn.q", d, d), [0, 2, 1, 3])  # [b, h, s, dk]
    k = split_heads(b.linear(h, "attn.k", d, d), [0, 2, 3, 1])  # [b, h, dk, s]
    v = split_heads(b.linear(h, "attn.v", d, d), [0, 2, 1, 3])  # [b, h, s, dk]
    scores = b.op("MatMul", [q, k], "scores")
    scores = b.op("Div", [scores, b.f32("sqrt_dk", math.sqrt(dk))], "scores_scaled")
    scores = b.op("Add", [scores, add_mask], "scores_masked")
    probs = b.op("Softmax", [scores], "attn_probs", axis=-1)
    ctx = b.op("MatMul", [probs, v], "ctx")
    ctx = b.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, merged_shape], "ctx_merged")
    attn = b.linear(ctx, "attn.out", d, d)
    x1 = b.op("Add", ["x", attn], "residual1")

    h2 = b.op(
        "LayerNormalization", [x1, b.near_one("ln2.weight", (d,)), b.weight("ln2.bias", (d,), 0.02)], "ln2",
        axis=-1, epsilon=1e-12,
    )
    f = b.linear(h2, "ffn.in", d, ff)
    # GELU(f) = 0.5 * f * (1 + erf(f / sqrt(2)))
    g = b.op("Div", [f, b.f32("sqrt2", math.sqrt(2.0))], "gelu_div")
    g = b.op("Erf", [g], "gelu_erf")
    g = b.op("Add", [g, "one"], "gelu_add")
    g = b.op("Mul", [f, g], "gelu_mul")
    g = b.op("Mul", [g, b.f32("half", 0.5)], "gelu")
    f = b.linear(g, "ffn.out", ff, d)
    b.op("Add", [x1, f], outputs=["y"])

    model = b.model(
        "bert_layer",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d]),
            helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        opset=17,
    )
    mask = np.ones((2, 7), dtype=np.float32)
    mask[1, 5:] = 0.0  # the second sequence is padded after 5 tokens
    feeds = {"x": rng.standard_normal((2, 7, d), dtype=np.float32), "attention_mask": mask}
    return model, [feeds]


def llama_layer(attempt: int = 0):
    """Llama decoder layer (4 heads of 16, RoPE, causal mask, SiLU MLP) + lm-head ArgMax."""
    import numpy as np
    from onnx import TensorProto, helper

    d, heads, dk, ff, vocab = 64, 4, 16, 128, 32
    rng = _rng("llama_layer", attempt)
    b = GraphBuilder(rng)
    b.f32("eps", 1e-6)
    b.f32("two", 2.0)
    b.i64("last_axis", [-1])

    def rms_norm(x: str, prefix: str) -> str:
        # x / sqrt(mean(x^2) + eps) * weight
        sq = b.op("Pow", [x, "two"], prefix + "_sq")
        ms = b.op("ReduceMean", [sq, "last_axis"], prefix + "_ms", keepdims=1)
        ms = b.op("Add", [ms, "eps"], prefix + "_ms_eps")
        rms = b.op("Sqrt", [ms], prefix + "_rms")
        inv = b.op("Reciprocal", [rms], prefix + "_inv")
        y = b.op("Mul", [x, inv], prefix + "_normed")
        return b.op("Mul", [y, b.near_one(prefix + ".weight", (d,))], prefix)

    # Positions 0..seq-1 from the dynamic sequence length.
    shape = b.op("Shape", ["x"], "x_shape")
    seq = b.op("Gather", [shape, b.i64("idx1", 1)], "seq")  # scalar
    pos = b.op("Range", [b.i64("zero", 0), seq, b.i64("step", 1)], "positions")  # [s] int64

    # Rotary embedding tables cos/sin: [s, dk].
    inv_freq = (1.0 / (10000.0 ** (np.arange(0, dk, 2, dtype=np.float64) / dk))).astype(np.float32)
    posf = b.op("Cast", [pos], "positions_f", to=TensorProto.FLOAT)
    posf = b.op("Unsqueeze", [posf, b.i64("axis1", [1])], "positions_col")  # [s, 1]
    freqs = b.op("Mul", [posf, b.f32("inv_freq", inv_freq[None, :])], "freqs")  # [s, dk/2]
    emb = b.op("Concat", [freqs, freqs], "rope_emb", axis=-1)
    cos = b.op("Cos", [emb], "rope_cos")
    sin = b.op("Sin", [emb], "rope_sin")
    b.i64("half_lo", [0])
    b.i64("half_mid", [dk // 2])
    b.i64("half_hi", [dk])

    def rope(t: str) -> str:
        # t * cos + rotate_half(t) * sin, rotate_half(t) = concat(-t[..., dk/2:], t[..., :dk/2])
        lo = b.op("Slice", [t, "half_lo", "half_mid", "last_axis"], t + "_lo")
        hi = b.op("Slice", [t, "half_mid", "half_hi", "last_axis"], t + "_hi")
        rot = b.op("Concat", [b.op("Neg", [hi], t + "_neg"), lo], t + "_rot", axis=-1)
        return b.op("Add", [b.op("Mul", [t, cos], t + "_c"), b.op("Mul", [rot, sin], t + "_s")], t + "_rope")

    # Causal mask: key position j visible from query position i iff j <= i.
    rows = b.op("Unsqueeze", [pos, "axis1"], "mask_rows")  # [s, 1]
    cols = b.op("Unsqueeze", [pos, b.i64("axis0", [0])], "mask_cols")  # [1, s]
    causal = b.op("LessOrEqual", [cols, rows], "causal")  # [s, s] bool
    neg = b.f32("mask_value", np.finfo(np.float32).min)

    heads_shape = b.i64("heads_shape", [0, 0, heads, dk])  # Reshape's 0 copies the input dim
    merged_shape = b.i64("merged_shape", [0, 0, d])

    h = rms_norm("x", "input_norm")
    q = b.op("Transpose", [b.op("Reshape", [b.linear(h, "attn.q", d, d, bias=False), heads_shape], "q_heads")], "q", perm=[0, 2, 1, 3])
    k = b.op("Transpose", [b.op("Reshape", [b.linear(h, "attn.k", d, d, bias=False), heads_shape], "k_heads")], "k", perm=[0, 2, 1, 3])
    v = b.op("Transpose", [b.op("Reshape", [b.linear(h, "attn.v", d, d, bias=False), heads_shape], "v_heads")], "v", perm=[0, 2, 1, 3])
    q, k = rope(q), rope(k)
    kt = b.op("Transpose", [k], "k_t", perm=[0, 1, 3, 2])
    scores = b.op("MatMul", [q, kt], "scores")
    scores = b.op("Mul", [scores, b.f32("inv_sqrt_dk", 1.0 / math.sqrt(dk))], "scores_scaled")
    scores = b.op("Where", [causal, scores, neg], "scores_masked")
    probs = b.op("Softmax", [scores], "attn_probs", axis=-1)
    ctx = b.op("MatMul", [probs, v], "ctx")
    ctx = b.op("Reshape", [b.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3]), merged_shape], "ctx_merged")
    x1 = b.op("Add", ["x", b.linear(ctx, "attn.o", d, d, bias=False)], "residual1")

    h2 = rms_norm(x1, "post_attn_norm")
    gate = b.linear(h2, "mlp.gate", d, ff, bias=False)
    up = b.linear(h2, "mlp.up", d, ff, bias=False)
    silu = b.op("Mul", [gate, b.op("Sigmoid", [gate], "gate_sigmoid")], "gate_silu")
    down = b.linear(b.op("Mul", [silu, up], "gated"), "mlp.down", ff, d, bias=False)
    b.op("Add", [x1, down], outputs=["y"])

    logits = b.linear(rms_norm("y", "final_norm"), "lm_head", d, vocab, bias=False)
    b.op("ArgMax", [logits], outputs=["next_token"], axis=-1, keepdims=0)

    model = b.model(
        "llama_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", d])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq", d]),
            helper.make_tensor_value_info("next_token", TensorProto.INT64, [1, "seq"]),
        ],
        opset=18,
    )
    feeds = {"x": rng.standard_normal((1, 9, d), dtype=np.float32)}
    return model, [feeds], logits


def dynamic_batch_mlp():
    """x[N,1,8,8] -> Flatten -> Gemm+Relu -> MatMul+Add -> Reshape[-1,2,10] -> Softmax."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = _rng("dynamic_batch_mlp")
    b = GraphBuilder(rng)
    flat = b.op("Flatten", ["x"], "flat", axis=1)  # [N, 64]
    h = b.op(
        "Gemm", [flat, b.weight("fc1.weight", (32, 64), math.sqrt(2.0 / 64)), b.weight("fc1.bias", (32,), 0.02)],
        "fc1", transB=1,
    )
    h = b.op("Relu", [h], "relu")
    logits = b.linear(h, "fc2", 32, 20)  # [N, 20]
    logits = b.op("Reshape", [logits, b.i64("groups_shape", [-1, 2, 10])], "logits")  # [N, 2, 10]
    b.op("Softmax", [logits], outputs=["probs"], axis=-1)
    model = b.model(
        "dynamic_batch_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2, 10])],
        opset=13,
    )
    data = [{"x": rng.standard_normal((n, 1, 8, 8), dtype=np.float32)} for n in (1, 5)]
    return model, data


# --------------------------------------------------------------------------
# Running, checking and writing
# --------------------------------------------------------------------------


def ort_session(model_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def run_ort(model, data_sets):
    """Expected outputs for every data set: a list of {output name: array}."""
    sess = ort_session(model.SerializeToString())
    names = [o.name for o in model.graph.output]
    return [dict(zip(names, sess.run(names, feeds))) for feeds in data_sets]


def check_outputs(name: str, results) -> float:
    """Reject NaN/inf and degenerate (constant) float outputs; return max |output|."""
    import numpy as np

    biggest = 0.0
    for i, outs in enumerate(results):
        for out_name, value in outs.items():
            if value.dtype.kind != "f":
                continue
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name}: set {i} output {out_name} has NaN/inf")
            per_row = value.reshape(value.shape[0], -1) if value.ndim > 1 else value[None]
            if value.size > 1 and np.any(np.ptp(per_row, axis=-1) < 1e-6 * max(1.0, float(np.abs(value).max()))):
                raise ValueError(f"{name}: set {i} output {out_name} is (nearly) constant")
            biggest = max(biggest, float(np.abs(value).max()))
    return biggest


def activation_report(model, feeds) -> str:
    """Min and max RMS over every float intermediate value (for --activations)."""
    import numpy as np
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(m)
    float_values = {
        vi.name
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }
    existing = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for out in node.output:
            if out and out in float_values and out not in existing:
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(out))
    sess = ort_session(m.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    rms = []
    for n, v in zip(names, sess.run(names, feeds)):
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size:
            rms.append((float(np.sqrt(np.mean(np.square(v.astype(np.float64))))), n))
    rms.sort()
    return f"activation rms {rms[0][0]:.3g} ({rms[0][1]}) .. {rms[-1][0]:.3g} ({rms[-1][1]}) over {len(rms)} values"


def write_case(case_dir: str, model, data_sets, results) -> None:
    import onnx
    from onnx import numpy_helper

    os.makedirs(case_dir)
    onnx.save(model, os.path.join(case_dir, "model.onnx"))
    for i, (feeds, outs) in enumerate(zip(data_sets, results)):
        ds = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(ds)
        for k, vi in enumerate(model.graph.input):
            with open(os.path.join(ds, f"input_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(feeds[vi.name], vi.name).SerializeToString())
        for k, vi in enumerate(model.graph.output):
            with open(os.path.join(ds, f"output_{k}.pb"), "wb") as f:
                f.write(numpy_helper.from_array(outs[vi.name], vi.name).SerializeToString())


def build(name: str):
    """Return (model, data sets, expected outputs, extra summary text)."""
    import numpy as np
    import onnx

    extra = ""
    if name in LIGHT_MODELS:
        model, data = light_model(name)
    elif name == "bert_layer":
        model, data = bert_layer()
    elif name == "dynamic_batch_mlp":
        model, data = dynamic_batch_mlp()
    elif name == "llama_layer":
        # Redraw until the two best logits differ clearly at every position, so
        # that a compiler's rounding cannot flip the ArgMax output.
        for attempt in range(100):
            model, data, logits = llama_layer(attempt)
            probe = onnx.ModelProto()
            probe.CopyFrom(model)
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(logits))
            sess = ort_session(probe.SerializeToString())
            values = sess.run([logits], data[0])[0]
            top2 = np.sort(values, axis=-1)[..., -2:]
            margin = float((top2[..., 1] - top2[..., 0]).min())
            if margin > 0.05:
                extra = f", argmax margin {margin:.3f} (attempt {attempt})"
                break
        else:
            raise RuntimeError("llama_layer: no seed gives a clear ArgMax margin")
    else:
        raise ValueError(f"unknown model {name}")
    results = run_ort(model, data)
    return model, data, results, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--only", nargs="+", choices=ALL_MODELS, help="build just these models")
    parser.add_argument("--force", action="store_true", help="rebuild even if stamps match")
    parser.add_argument(
        "--activations", action="store_true", help="also print the RMS range of all intermediate values"
    )
    args = parser.parse_args(argv)

    out_dir = os.path.abspath(args.out_dir)
    key = _stamp_key()
    names = args.only or ALL_MODELS
    global_stamp = key + "models=" + ",".join(ALL_MODELS) + "\n"
    if not args.force and not args.only and _read(os.path.join(out_dir, STAMP_NAME)) == global_stamp:
        print("gen_models: stamp matches, nothing to do", file=sys.stderr)
        for name in names:
            print(f"model {name}: up to date")
        return 0

    warnings.filterwarnings("ignore")
    import numpy as np

    np.seterr(all="ignore")
    os.makedirs(out_dir, exist_ok=True)
    for name in names:
        case_dir = os.path.join(out_dir, name)
        if not args.force and _read(os.path.join(case_dir, STAMP_NAME)) == key and not args.activations:
            print(f"model {name}: up to date")
            continue
        start = time.monotonic()
        model, data, results, extra = build(name)
        biggest = check_outputs(name, results)
        if args.activations:
            extra += ", " + activation_report(model, data[0])
        partial = case_dir + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_case(partial, model, data, results)
        with open(os.path.join(partial, STAMP_NAME), "w") as f:
            f.write(key)
        shutil.rmtree(case_dir, ignore_errors=True)
        os.rename(partial, case_dir)
        size = os.path.getsize(os.path.join(case_dir, "model.onnx"))
        print(
            f"model {name}: max |output| = {biggest:.4g}{extra} "
            f"({size / 1e6:.1f} MB, {time.monotonic() - start:.1f}s)",
            flush=True,
        )

    if all(_read(os.path.join(out_dir, n, STAMP_NAME)) == key for n in ALL_MODELS):
        with open(os.path.join(out_dir, STAMP_NAME), "w") as f:
            f.write(global_stamp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
