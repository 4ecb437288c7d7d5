//! Soundness of every rule, checked on the reference interpreter, and end-to-end optimizer tests.
//!
//! Each rule has at least one case: a small graph whose left side the rule matches, built with random constants.
//! The case is optimized with only that rule enabled; the rule must fire (fewer nodes, or the named op gone), and
//! the graphs before and after must agree on random inputs within 1e-5 relative. A rule without a case fails
//! [`every_rule_has_a_soundness_case`].

use std::sync::Arc;

use jiuzhou_ir::{
    DType, Graph, GraphBuilder, Op, Tensor, TensorType, Value, ValueId, ValueType, ops,
};
use jiuzhou_target_reference::Interpreter;

use super::rules::all_rule_names;
use super::*;

mod fusion;
mod layout;

/// The reference target's semantics as a constant folder (the driver supplies the same).
struct ReferenceEvaluator;

impl ConstEvaluator for ReferenceEvaluator {
    fn eval(
        &self,
        op: &Op,
        inputs: &[Option<Arc<Tensor>>],
        num_outputs: usize,
    ) -> Option<Vec<Arc<Tensor>>> {
        let vals = Interpreter::default()
            .eval_op(op, inputs, num_outputs)
            .ok()?;
        vals.into_iter().map(|v| v.as_tensor().cloned()).collect()
    }
}

/// A deterministic pseudo-random stream in [-2, 2).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(
            shape.to_vec(),
            (0..n).map(|_| self.next()).collect::<Vec<f32>>(),
        )
        .unwrap()
    }
}

fn f32_input(b: &mut GraphBuilder, dims: &[usize]) -> ValueId {
    b.input("x", TensorType::known(DType::F32, dims))
}

fn ints(b: &mut GraphBuilder, name: &str, v: &[i64]) -> ValueId {
    b.constant(name, Tensor::vector(v.to_vec()))
}

fn full(b: &mut GraphBuilder, name: &str, dims: &[usize], v: f32) -> ValueId {
    let n = dims.iter().product();
    b.constant(name, Tensor::from_vec(dims.to_vec(), vec![v; n]).unwrap())
}

fn relu(b: &mut GraphBuilder, x: ValueId) -> ValueId {
    b.node1(ops::Relu::default(), &[x]).unwrap()
}

fn finish(mut b: GraphBuilder, y: ValueId) -> Graph {
    b.output(y);
    b.finish().unwrap()
}

/// `Relu(op(x, extra...))` with x: f32[dims].
fn unary_case(dims: &[usize], op: impl Into<Op>, extra: &[(&str, Tensor)]) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, dims);
    let mut ins = vec![x];
    for (n, t) in extra {
        ins.push(b.constant(n, t.clone()));
    }
    let y = b.node1(op, &ins).unwrap();
    let y = relu(&mut b, y);
    finish(b, y)
}

/// `Relu(Dropout(x, ratio).output)` of a Dropout that also declares its (unread) mask output, as old exporters
/// write it.
fn masked_dropout_case() -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let r = b.constant("ratio", Tensor::scalar(0.5f32));
    let outs = b
        .node_opt(ops::Dropout::default(), &[Some(x), Some(r)], 2)
        .unwrap();
    let y = relu(&mut b, outs[0]);
    finish(b, y)
}

/// `Relu(op(a, b))` with constant `c` on one side.
fn binary_case(op: impl Into<Op>, c: f32, const_first: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let k = full(&mut b, "k", &[3], c);
    let ins = if const_first { [k, x] } else { [x, k] };
    let y = b.node1(op, &ins).unwrap();
    let y = relu(&mut b, y);
    finish(b, y)
}

fn transpose(perm: &[i64]) -> ops::Transpose {
    ops::Transpose {
        perm: Some(perm.to_vec()),
    }
}

fn double_transpose(p: &[i64], q: &[i64]) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let t = b.node1(transpose(p), &[x]).unwrap();
    let y = b.node1(transpose(q), &[t]).unwrap();
    finish(b, y)
}

fn squeeze_pair(unsqueeze_first: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, if unsqueeze_first { &[2, 3] } else { &[2, 1, 3] });
    let ax = ints(&mut b, "axes", &[1]);
    let y = if unsqueeze_first {
        let u = b.node1(ops::Unsqueeze::default(), &[x, ax]).unwrap();
        b.node1(ops::Squeeze::default(), &[u, ax]).unwrap()
    } else {
        let s = b.node1(ops::Squeeze::default(), &[x, ax]).unwrap();
        b.node1(ops::Unsqueeze::default(), &[s, ax]).unwrap()
    };
    let y = relu(&mut b, y);
    finish(b, y)
}

/// `Conv(x, W[, b]) op k` with a per-channel constant `k` of shape `kdims`.
fn conv_then(bias: bool, op: impl Into<Op>, kdims: &[usize]) -> Graph {
    let mut r = Lcg(11);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[1, 2, 4, 4]);
    let w = b.constant("w", r.tensor(&[3, 2, 3, 3]));
    let mut ins = vec![x, w];
    if bias {
        ins.push(b.constant("b", r.tensor(&[3])));
    }
    let c = b.node1(ops::Conv::default(), &ins).unwrap();
    let k = b.constant("k", r.tensor(kdims));
    let y = b.node1(op, &[c, k]).unwrap();
    finish(b, y)
}

fn conv_bn(bias: bool) -> Graph {
    let mut r = Lcg(7);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[1, 2, 5, 5]);
    let w = b.constant("w", r.tensor(&[3, 2, 3, 3]));
    let mut ins = vec![x, w];
    if bias {
        ins.push(b.constant("b", r.tensor(&[3])));
    }
    let conv = ops::Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let c = b.node1(conv, &ins).unwrap();
    let s = b.constant("s", r.tensor(&[3]));
    let beta = b.constant("beta", r.tensor(&[3]));
    let m = b.constant("mean", r.tensor(&[3]));
    let v = r.tensor(&[3]).into_vec::<f32>().unwrap();
    let v = b.constant(
        "var",
        Tensor::vector(v.iter().map(|e| e.abs() + 0.5).collect::<Vec<f32>>()),
    );
    let y = b
        .node1(ops::BatchNormalization::default(), &[c, s, beta, m, v])
        .unwrap();
    finish(b, y)
}

/// `op(BatchNormalization(x, s, β, μ, σ²), k)` with a constant `k` of dims `kdims` (a pre-activation BN followed
/// by a Caffe-style Scale layer).
fn bn_then(op: impl Into<Op>, kdims: &[usize]) -> Graph {
    let mut r = Lcg(5);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[1, 3, 4, 4]);
    let s = b.constant("s", r.tensor(&[3]));
    let beta = b.constant("beta", r.tensor(&[3]));
    let m = b.constant("mean", r.tensor(&[3]));
    let v = r.tensor(&[3]).into_vec::<f32>().unwrap();
    let v = b.constant(
        "var",
        Tensor::vector(v.iter().map(|e| e.abs() + 0.5).collect::<Vec<f32>>()),
    );
    let y = b
        .node1(ops::BatchNormalization::default(), &[x, s, beta, m, v])
        .unwrap();
    let k = b.constant("k", r.tensor(kdims));
    let z = b.node1(op, &[y, k]).unwrap();
    finish(b, z)
}

// ---- Pattern recognition cases ------------------------------------------------------------------------------------

fn scalar_const(b: &mut GraphBuilder, name: &str, v: f32) -> ValueId {
    b.constant(name, Tensor::scalar(v))
}

fn bin(b: &mut GraphBuilder, op: impl Into<Op>, x: ValueId, y: ValueId) -> ValueId {
    b.node1(op, &[x, y]).unwrap()
}

fn un(b: &mut GraphBuilder, op: impl Into<Op>, x: ValueId) -> ValueId {
    b.node1(op, &[x]).unwrap()
}

fn mul(b: &mut GraphBuilder, x: ValueId, y: ValueId) -> ValueId {
    bin(b, ops::Mul::default(), x, y)
}

fn add(b: &mut GraphBuilder, x: ValueId, y: ValueId) -> ValueId {
    bin(b, ops::Add::default(), x, y)
}

/// `x · x + 0.5`: positive, for roots and reciprocals (made of binary ops only, so that the layout cases can look
/// for the unary op they test).
fn positive(b: &mut GraphBuilder, x: ValueId) -> ValueId {
    let a = mul(b, x, x);
    let h = scalar_const(b, "half", 0.5);
    add(b, a, h)
}

/// A reduction `op` of `x` over `axes` with keepdims.
fn reduce(b: &mut GraphBuilder, op: impl Into<Op>, x: ValueId, axes: &[i64]) -> ValueId {
    let ax = ints(b, "axes", axes);
    bin(b, op, x, ax)
}

/// `x ^ 2` (`pow`) or `x · x`.
fn square(b: &mut GraphBuilder, x: ValueId, pow: bool) -> ValueId {
    if pow {
        let two = scalar_const(b, "two", 2.0);
        bin(b, ops::Pow::default(), x, two)
    } else {
        mul(b, x, x)
    }
}

/// `Pow(x, 2)`, `Pow(x² + ½, −½)`, `x · (1 / (x² + ½))` (or reversed).
fn canon_case(which: &str) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let y = match which {
        "pow2" => square(&mut b, x, true),
        "rsqrt" => {
            let p = positive(&mut b, x);
            let e = scalar_const(&mut b, "e", -0.5);
            bin(&mut b, ops::Pow::default(), p, e)
        }
        _ => {
            let p = positive(&mut b, x);
            let r = un(&mut b, ops::Reciprocal::default(), p);
            if which == "recip" {
                mul(&mut b, x, r)
            } else {
                mul(&mut b, r, x)
            }
        }
    };
    let y = relu(&mut b, y);
    finish(b, y)
}

/// `exp(x − max(x)) / sum(exp(x − max(x)))` over `axis` (or without the shift).
fn softmax_case(axis: i64, shift: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 5, 3]);
    let d = if shift {
        let m = reduce(&mut b, ops::ReduceMax::default(), x, &[axis]);
        bin(&mut b, ops::Sub::default(), x, m)
    } else {
        x
    };
    let e = un(&mut b, ops::Exp::default(), d);
    let s = reduce(&mut b, ops::ReduceSum::default(), e, &[axis]);
    let y = bin(&mut b, ops::Div::default(), e, s);
    finish(b, y)
}

/// `(x − mean(x)) / √(mean((x − mean(x))²) + ε)` over `axes` of x: f32[2, 3, 4].
fn layernorm_case(axes: &[i64], pow: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let m = reduce(&mut b, ops::ReduceMean::default(), x, axes);
    let d = bin(&mut b, ops::Sub::default(), x, m);
    let sq = square(&mut b, d, pow);
    let v = reduce(&mut b, ops::ReduceMean::default(), sq, axes);
    let eps = scalar_const(&mut b, "eps", 1e-5);
    let v = add(&mut b, v, eps);
    let sd = un(&mut b, ops::Sqrt::default(), v);
    let y = bin(&mut b, ops::Div::default(), d, sd);
    finish(b, y)
}

/// `x / √(mean(x²) + ε)` over the last axis of x: f32[2, 3, 4].
fn rmsnorm_case() -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let sq = square(&mut b, x, false);
    let ms = reduce(&mut b, ops::ReduceMean::default(), sq, &[-1]);
    let eps = scalar_const(&mut b, "eps", 1e-6);
    let ms = add(&mut b, eps, ms);
    let r = un(&mut b, ops::Sqrt::default(), ms);
    let y = bin(&mut b, ops::Div::default(), x, r);
    finish(b, y)
}

/// `norm(x, ones) · γ`, `γ · norm(x, ones)`, `norm(x, γ) + β` or `β + norm(x, γ)` (`kind`: scale, scale-left,
/// bias, bias-left) for norm = LayerNormalization or RMSNormalization over the last axis.
fn absorb_case(layer: bool, kind: &str) -> Graph {
    let mut r = Lcg(5);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let scale = if kind.starts_with("bias") {
        b.constant("gamma", r.tensor(&[4]))
    } else {
        full(&mut b, "ones", &[4], 1.0)
    };
    let n = if layer {
        b.node1(ops::LayerNormalization::default(), &[x, scale])
            .unwrap()
    } else {
        b.node1(ops::RMSNormalization::default(), &[x, scale])
            .unwrap()
    };
    let p = b.constant("param", r.tensor(&[4]));
    let y = match kind {
        "scale" => mul(&mut b, n, p),
        "scale-left" => mul(&mut b, p, n),
        "bias" => add(&mut b, n, p),
        _ => add(&mut b, p, n),
    };
    finish(b, y)
}

/// GELU, erf form `½ · x · (1 + erf(x / √2))` in three groupings (`form` 0..3) or the tanh form (`form` 3).
fn gelu_case(form: u8) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 5]);
    let half = scalar_const(&mut b, "half", 0.5);
    let one = scalar_const(&mut b, "one", 1.0);
    let phi = if form < 3 {
        let u = if form == 1 {
            let k = scalar_const(&mut b, "inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
            mul(&mut b, x, k)
        } else {
            let k = scalar_const(&mut b, "sqrt2", std::f32::consts::SQRT_2);
            bin(&mut b, ops::Div::default(), x, k)
        };
        let e = un(&mut b, ops::Erf::default(), u);
        add(&mut b, e, one)
    } else {
        let three = scalar_const(&mut b, "three", 3.0);
        let cube = bin(&mut b, ops::Pow::default(), x, three);
        let c = scalar_const(&mut b, "c", 0.044715);
        let m = mul(&mut b, c, cube);
        let inner = add(&mut b, x, m);
        let k = scalar_const(&mut b, "k", (2.0 / std::f32::consts::PI).sqrt());
        let u = mul(&mut b, k, inner);
        let t = un(&mut b, ops::Tanh::default(), u);
        add(&mut b, one, t)
    };
    let y = match form {
        0 | 3 => {
            let xp = mul(&mut b, x, phi);
            mul(&mut b, xp, half)
        }
        1 => {
            let hx = mul(&mut b, half, x);
            mul(&mut b, hx, phi)
        }
        _ => {
            let hp = mul(&mut b, phi, half);
            mul(&mut b, x, hp)
        }
    };
    finish(b, y)
}

/// `x · sigmoid(x)` or `sigmoid(x) · x`.
fn silu_case(left: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 5]);
    let s = un(&mut b, ops::Sigmoid::default(), x);
    let y = if left {
        mul(&mut b, s, x)
    } else {
        mul(&mut b, x, s)
    };
    finish(b, y)
}

/// `Softmax(MatMul(Q, Kᵀ) / 2 + M) · V` (`mask`) or `Softmax(MatMul(Q, Kᵀ) · ½) · V`.
fn attention_case(mask: bool) -> Graph {
    attention_graph(mask, 0.5)
}

/// [`attention_case`] with the unmasked scores scaled by `c`.
fn attention_graph(mask: bool, c: f32) -> Graph {
    let mut b = GraphBuilder::new("case");
    let q = b.input("q", TensorType::known(DType::F32, &[2, 3, 4, 8]));
    let kt = b.input("kt", TensorType::known(DType::F32, &[2, 3, 8, 5]));
    let v = b.input("v", TensorType::known(DType::F32, &[2, 3, 5, 6]));
    let s = bin(&mut b, ops::MatMul::default(), q, kt);
    let s = if mask {
        let two = scalar_const(&mut b, "two", 2.0);
        let s = bin(&mut b, ops::Div::default(), s, two);
        let m = b.input("mask", TensorType::known(DType::F32, &[2, 1, 1, 5]));
        add(&mut b, s, m)
    } else {
        let half = scalar_const(&mut b, "half", c);
        mul(&mut b, half, s)
    };
    let p = un(&mut b, ops::Softmax::default(), s);
    let y = bin(&mut b, ops::MatMul::default(), p, v);
    finish(b, y)
}

/// `Softmax(Where(cond, MatMul(Q, Kᵀ) · ½, f32::MIN)) · V` with `cond = m > 0` for an input m: f32[4, 5]
/// (`runtime`), else `Softmax(Where(cond, f32::MIN, ·))` with a constant `cond` that masks one row entirely.
fn where_attention_case(runtime: bool) -> Graph {
    where_attention_graph(runtime, f32::MIN)
}

/// [`where_attention_case`] with the fill value `fill`.
fn where_attention_graph(runtime: bool, fill: f32) -> Graph {
    let mut b = GraphBuilder::new("case");
    let q = b.input("q", TensorType::known(DType::F32, &[2, 3, 4, 8]));
    let kt = b.input("kt", TensorType::known(DType::F32, &[2, 3, 8, 5]));
    let v = b.input("v", TensorType::known(DType::F32, &[2, 3, 5, 6]));
    let s = bin(&mut b, ops::MatMul::default(), q, kt);
    let half = scalar_const(&mut b, "half", 0.5);
    let s = mul(&mut b, s, half);
    let fill = scalar_const(&mut b, "fill", fill);
    let s = if runtime {
        let m = b.input("m", TensorType::known(DType::F32, &[4, 5]));
        let zero = scalar_const(&mut b, "zero", 0.0);
        let cond = bin(&mut b, ops::Greater::default(), m, zero);
        b.node1(ops::Where::default(), &[cond, s, fill]).unwrap()
    } else {
        // True masks; row 2 is masked everywhere (Softmax then gives a uniform row, and so must Attention).
        let bits: Vec<bool> = (0..20).map(|i| i / 5 == 2 || i % 5 > i / 5).collect();
        let cond = b.constant("cond", Tensor::from_vec(vec![4, 5], bits).unwrap());
        b.node1(ops::Where::default(), &[cond, fill, s]).unwrap()
    };
    let p = un(&mut b, ops::Softmax::default(), s);
    let y = bin(&mut b, ops::MatMul::default(), p, v);
    finish(b, y)
}

/// `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [2, 3]))` for x: f32[n, 6].
fn dynamic_reshape_case() -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = b.input(
        "x",
        TensorType::new(DType::F32, [jiuzhou_ir::Dim::Sym("n".into()), 6.into()]),
    );
    let sh = un(&mut b, ops::Shape::default(), x);
    let i0 = b.constant("i0", Tensor::scalar(0i64));
    let n = bin(&mut b, ops::Gather::default(), sh, i0);
    let ax = ints(&mut b, "ax", &[0]);
    let n1 = bin(&mut b, ops::Unsqueeze::default(), n, ax);
    let rest = ints(&mut b, "rest", &[2, 3]);
    let target = bin(&mut b, ops::Concat { axis: 0 }, n1, rest);
    let y = bin(&mut b, ops::Reshape::default(), x, target);
    let y = relu(&mut b, y);
    finish(b, y)
}

// ---- Layout and TASO cases ----------------------------------------------------------------------------------------

/// Op count, except that `op` reading a first input of shape `dims` costs 1000: extraction then takes the layout a
/// rule moved it to.
struct AvoidOn {
    op: &'static str,
    dims: Vec<usize>,
}

impl CostModel for AvoidOn {
    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], _: &[ValueType]) -> f64 {
        let dims = inputs
            .first()
            .copied()
            .flatten()
            .and_then(|t| t.as_tensor())
            .and_then(|t| t.known_dims());
        if op.name() == self.op && dims.as_deref() == Some(self.dims.as_slice()) {
            1000.0
        } else {
            1.0
        }
    }
}

/// A unary op with default attributes, by name.
fn unary_op(name: &str) -> Op {
    Op::from_attrs(name, Default::default()).unwrap().unwrap()
}

/// One layout case: the rule, the graph, and which op must no longer read the given shape.
struct LayoutCase {
    rule: String,
    graph: Graph,
    avoid: AvoidOn,
}

const PERM: [i64; 3] = [2, 0, 1];

/// For every generated layout rule: `op(Transpose(a))` (sink), `Transpose(op(a))` (hoist), `op(Transpose(a),
/// Transpose(b))` (sink-same), `op(Transpose(a), 1.5)` (sink-const), `op(Transpose(a), c)` with c: [2, 3]
/// (sink-bcast) and `op(c, Transpose(a))` with c: [4, 2, 3] (sink-bcast-first), with a = x² + ½ (positive, so Sqrt and
/// Reciprocal stay finite): f32[2, 3, 4], transposed to [4, 2, 3].
fn layout_cases() -> Vec<LayoutCase> {
    use super::rules::layout::{BINARY, UNARY, rule_name};
    let mut out = Vec::new();
    for op in UNARY {
        for kind in ["sink", "hoist"] {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[2, 3, 4]);
            let a = positive(&mut b, x);
            let y = if kind == "sink" {
                let t = un(&mut b, transpose(&PERM), a);
                un(&mut b, unary_op(op), t)
            } else {
                let u = un(&mut b, unary_op(op), a);
                un(&mut b, transpose(&PERM), u)
            };
            let dims = if kind == "sink" {
                vec![4, 2, 3]
            } else {
                vec![2, 3, 4]
            };
            out.push(LayoutCase {
                rule: rule_name(kind, op),
                graph: finish(b, y),
                avoid: AvoidOn { op, dims },
            });
        }
    }
    for op in BINARY {
        for kind in ["sink-same", "sink-const", "sink-bcast", "sink-bcast-first"] {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[2, 3, 4]);
            let a = positive(&mut b, x);
            let ta = un(&mut b, transpose(&PERM), a);
            let mut r = Lcg(47);
            let y = match kind {
                "sink-same" => {
                    let x2 = b.input("x2", TensorType::known(DType::F32, &[2, 3, 4]));
                    let a2 = positive(&mut b, x2);
                    let tb = un(&mut b, transpose(&PERM), a2);
                    bin(&mut b, binary_op(op), ta, tb)
                }
                "sink-const" => {
                    let c = scalar_const(&mut b, "c", 1.5);
                    bin(&mut b, binary_op(op), ta, c)
                }
                // A constant broadcast over the leading axis, after the Transpose: [2, 3] against [4, 2, 3].
                "sink-bcast" => {
                    let c = b.constant("c", r.tensor(&[2, 3]));
                    bin(&mut b, binary_op(op), ta, c)
                }
                // A constant first, of the transposed shape (so that the op's first input moves with the rule);
                // its elements kept away from 0 for Div.
                _ => {
                    let c = b.constant("c", r.tensor(&[4, 2, 3]));
                    let c = positive(&mut b, c);
                    bin(&mut b, binary_op(op), c, ta)
                }
            };
            out.push(LayoutCase {
                rule: rule_name(kind, op),
                graph: finish(b, y),
                avoid: AvoidOn {
                    op,
                    dims: vec![4, 2, 3],
                },
            });
        }
    }
    out
}

fn binary_op(name: &str) -> Op {
    unary_op(name)
}

#[test]
fn layout_rules_are_sound_on_their_cases() {
    for c in layout_cases() {
        let (out, _) = optimize_with(&c.graph, &c.avoid, &only(&c.rule));
        // The rule fired: no `op` node reads the avoided shape any more.
        let moved = out
            .nodes
            .iter()
            .filter(|n| n.op.name() == c.avoid.op)
            .all(|n| {
                let t = out.value(n.inputs[0].unwrap()).ty.as_tensor().unwrap();
                t.known_dims().unwrap() != c.avoid.dims
            });
        assert!(
            moved && has_op(&out, c.avoid.op),
            "rule `{}` did not fire on its case:\n{}",
            c.rule,
            jiuzhou_ir::text::print(&out)
        );
        for seed in [1, 2] {
            let inputs = random_inputs(&c.graph, seed);
            let want = Interpreter::default()
                .run(&c.graph, inputs.clone())
                .unwrap();
            let got = Interpreter::default().run(&out, inputs).unwrap();
            assert_close(&got, &want, &c.rule);
        }
    }
}

/// `MatMul(x, W₁..₃)` with W: [4, 3], [4, 5], [4, 2] as three outputs, or (`merged`) one MatMul on the
/// concatenated weights split into those three.
fn parallel_matmuls(merged: bool) -> Graph {
    let mut r = Lcg(13);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 4]);
    let ws: Vec<Tensor> = [3, 5, 2].iter().map(|n| r.tensor(&[4, *n])).collect();
    let outs = if merged {
        let mut cat = Vec::new();
        for row in 0..4 {
            for w in &ws {
                let n = w.shape()[1];
                cat.extend_from_slice(&w.to_f64_vec().unwrap()[row * n..(row + 1) * n]);
            }
        }
        let cat: Vec<f32> = cat.into_iter().map(|v| v as f32).collect();
        let w = b.constant("w", Tensor::from_vec(vec![4, 10], cat).unwrap());
        let mm = bin(&mut b, ops::MatMul::default(), x, w);
        let sizes = ints(&mut b, "sizes", &[3, 5, 2]);
        let split = ops::Split {
            axis: -1,
            num_outputs: None,
        };
        b.node_opt(split, &[Some(mm), Some(sizes)], 3).unwrap()
    } else {
        ws.into_iter()
            .enumerate()
            .map(|(i, w)| {
                let w = b.constant(&format!("w{i}"), w);
                bin(&mut b, ops::MatMul::default(), x, w)
            })
            .collect()
    };
    for o in outs {
        b.output(o);
    }
    b.finish().unwrap()
}

/// One soundness case: the rule, an op that must be gone afterwards (or fewer nodes), and the graph.
struct Case {
    rule: &'static str,
    gone: &'static str,
    graph: Graph,
}

fn case(rule: &'static str, gone: &'static str, graph: Graph) -> Case {
    Case { rule, gone, graph }
}

fn cases() -> Vec<Case> {
    let mut all = core_cases();
    all.extend(fusion::cases());
    all.extend(layout::cases());
    all
}

fn core_cases() -> Vec<Case> {
    let cast = ops::Cast {
        to: DType::F32.onnx_code() as i64,
        ..Default::default()
    };
    vec![
        case(
            "identity",
            "Identity",
            unary_case(&[2, 3], ops::Identity::default(), &[]),
        ),
        case(
            "dropout-inference",
            "Dropout",
            unary_case(&[2, 3], ops::Dropout::default(), &[]),
        ),
        case(
            "dropout-inference-ratio",
            "Dropout",
            unary_case(
                &[2, 3],
                ops::Dropout::default(),
                &[("ratio", Tensor::scalar(0.5f32))],
            ),
        ),
        case("dropout-inference-masked", "Dropout", masked_dropout_case()),
        case("cast-noop", "Cast", unary_case(&[2, 3], cast, &[])),
        case(
            "reshape-noop",
            "Reshape",
            unary_case(
                &[2, 3],
                ops::Reshape::default(),
                &[("s", Tensor::vector(vec![2i64, -1]))],
            ),
        ),
        case(
            "transpose-identity",
            "Transpose",
            unary_case(&[2, 3], transpose(&[0, 1]), &[]),
        ),
        case(
            "transpose-transpose",
            "Transpose",
            double_transpose(&[1, 2, 0], &[2, 0, 1]),
        ),
        case(
            "transpose-transpose",
            "-",
            double_transpose(&[1, 2, 0], &[1, 0, 2]),
        ),
        case("transpose-transpose", "-", {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[2, 3, 4]);
            let t = b.node1(ops::Transpose::default(), &[x]).unwrap();
            let y = b.node1(ops::Transpose::default(), &[t]).unwrap();
            finish(b, y)
        }),
        case("reshape-reshape", "-", {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[2, 3, 4]);
            let s1 = ints(&mut b, "s1", &[6, 4]);
            let s2 = ints(&mut b, "s2", &[4, -1]);
            let r = b.node1(ops::Reshape::default(), &[x, s1]).unwrap();
            let y = b.node1(ops::Reshape::default(), &[r, s2]).unwrap();
            finish(b, y)
        }),
        case("squeeze-unsqueeze", "Squeeze", squeeze_pair(true)),
        case("unsqueeze-squeeze", "Squeeze", squeeze_pair(false)),
        case(
            "add-zero",
            "Add",
            binary_case(ops::Add::default(), 0.0, false),
        ),
        case(
            "zero-add",
            "Add",
            binary_case(ops::Add::default(), 0.0, true),
        ),
        case(
            "sub-zero",
            "Sub",
            binary_case(ops::Sub::default(), 0.0, false),
        ),
        case(
            "mul-one",
            "Mul",
            binary_case(ops::Mul::default(), 1.0, false),
        ),
        case(
            "one-mul",
            "Mul",
            binary_case(ops::Mul::default(), 1.0, true),
        ),
        case(
            "div-by-const",
            "Div",
            binary_case(ops::Div::default(), 3.0, false),
        ),
        case("neg-neg", "Neg", {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[2, 3]);
            let n = b.node1(ops::Neg::default(), &[x]).unwrap();
            let n = b.node1(ops::Neg::default(), &[n]).unwrap();
            let y = relu(&mut b, n);
            finish(b, y)
        }),
        case("fold-bn-into-conv", "BatchNormalization", conv_bn(true)),
        case(
            "fold-bn-into-conv-nobias",
            "BatchNormalization",
            conv_bn(false),
        ),
        case(
            "fold-mul-into-conv",
            "Mul",
            conv_then(true, ops::Mul::default(), &[3, 1, 1]),
        ),
        case(
            "fold-mul-into-conv",
            "Mul",
            conv_then(true, ops::Mul::default(), &[]),
        ),
        case(
            "fold-mul-into-conv-nobias",
            "Mul",
            conv_then(false, ops::Mul::default(), &[1, 3, 1, 1]),
        ),
        case(
            "fold-add-into-conv",
            "Add",
            conv_then(true, ops::Add::default(), &[3, 1, 1]),
        ),
        case(
            "fold-add-into-conv-nobias",
            "Add",
            conv_then(false, ops::Add::default(), &[1]),
        ),
        case(
            "fold-mul-into-bn",
            "Mul",
            bn_then(ops::Mul::default(), &[3, 1, 1]),
        ),
        case("fold-mul-into-bn", "Mul", bn_then(ops::Mul::default(), &[])),
        case(
            "fold-add-into-bn",
            "Add",
            bn_then(ops::Add::default(), &[1, 3, 1, 1]),
        ),
        case("reshape-dynamic-to-static", "Shape", dynamic_reshape_case()),
        case("pow2-to-mul", "Pow", canon_case("pow2")),
        case("pow-rsqrt", "Pow", canon_case("rsqrt")),
        case("recip-to-div", "Reciprocal", canon_case("recip")),
        case("recip-to-div-left", "Reciprocal", canon_case("recip-left")),
        case("softmax", "Exp", softmax_case(-1, true)),
        case("softmax", "Exp", softmax_case(1, true)),
        case("softmax", "Exp", softmax_case(0, false)),
        case("layernorm", "Sqrt", layernorm_case(&[-1], false)),
        case("layernorm", "Sqrt", layernorm_case(&[1, 2], false)),
        case("layernorm-scale", "Mul", absorb_case(true, "scale")),
        case(
            "layernorm-scale-left",
            "Mul",
            absorb_case(true, "scale-left"),
        ),
        case("layernorm-bias", "Add", absorb_case(true, "bias")),
        case("layernorm-bias-left", "Add", absorb_case(true, "bias-left")),
        case("rmsnorm", "Sqrt", rmsnorm_case()),
        case("rmsnorm-scale", "Mul", absorb_case(false, "scale")),
        case(
            "rmsnorm-scale-left",
            "Mul",
            absorb_case(false, "scale-left"),
        ),
        case("gelu", "Erf", gelu_case(0)),
        case("gelu", "Erf", gelu_case(1)),
        case("gelu", "Erf", gelu_case(2)),
        case("gelu", "Tanh", gelu_case(3)),
        case("silu", "Sigmoid", silu_case(false)),
        case("silu-left", "Sigmoid", silu_case(true)),
        case("attention", "Softmax", attention_case(true)),
        case("attention", "Softmax", attention_case(false)),
        case("attention", "Softmax", where_attention_case(true)),
        case("attention", "Softmax", where_attention_case(false)),
        case("merge-parallel-matmul", "MatMul", parallel_matmuls(false)),
        case("split-matmul", "Split", parallel_matmuls(true)),
    ]
}

/// Random inputs for every graph input (f32 only in these cases).
fn random_inputs(g: &Graph, seed: u64) -> Vec<Value> {
    let mut r = Lcg(seed);
    g.inputs
        .iter()
        .map(|i| {
            // Symbolic dims are bound to 3.
            let t = g.value(*i).ty.as_tensor().unwrap();
            let dims: Vec<usize> = t
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|d| d.known().unwrap_or(3))
                .collect();
            Value::from(r.tensor(&dims))
        })
        .collect()
}

fn assert_close(a: &[Value], b: &[Value], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: output count");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_tensor().unwrap(), y.as_tensor().unwrap());
        assert_eq!(x.shape(), y.shape(), "{what}: shapes");
        let (xs, ys) = (x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap());
        for (p, q) in xs.iter().zip(&ys) {
            assert!(
                (p - q).abs() <= 1e-5 * q.abs().max(1e-1),
                "{what}: {p} vs {q}"
            );
        }
    }
}

/// The default options without the wall-time limit (a loaded test machine must not change results): the
/// iteration and node limits bound the runs.
fn test_options() -> Options {
    Options {
        time_limit: std::time::Duration::from_secs(3600),
        ..Options::default()
    }
}

fn only(rule: &str) -> Options {
    Options {
        disabled_rules: all_rule_names().into_iter().filter(|r| r != rule).collect(),
        ..test_options()
    }
}

fn optimize_ref(g: &Graph, options: &Options) -> (Graph, Stats) {
    optimize_with(g, &OpCountCost, options)
}

fn optimize_with(g: &Graph, cost: &dyn CostModel, options: &Options) -> (Graph, Stats) {
    let ev: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    optimize(g, cost, Some(ev), options).unwrap()
}

/// Op count, except that one op is very expensive: extraction then takes a rule's right side even where the op
/// count ties (`x / c` vs `x * (1/c)`), so the soundness check evaluates what the rule wrote.
struct Avoid(&'static str);

impl CostModel for Avoid {
    fn node_cost(&self, op: &Op, _: &[Option<&ValueType>], _: &[ValueType]) -> f64 {
        if op.name() == self.0 { 1000.0 } else { 1.0 }
    }

    // The channels-last conv rules run only for targets that say so; the soundness cases enable one rule at a time.
    fn channels_last(&self) -> bool {
        true
    }
}

fn has_op(g: &Graph, name: &str) -> bool {
    g.nodes.iter().any(|n| n.op.name() == name)
}

#[test]
fn every_rule_is_sound_on_its_cases() {
    for c in cases() {
        let (out, stats) = optimize_with(&c.graph, &Avoid(c.gone), &only(c.rule));
        let fired = stats.optimized_nodes < stats.imported_nodes || !has_op(&out, c.gone);
        assert!(
            fired,
            "rule `{}` did not fire on its case:\n{}",
            c.rule,
            jiuzhou_ir::text::print(&out)
        );
        for seed in [1, 2] {
            let inputs = random_inputs(&c.graph, seed);
            let want = Interpreter::default()
                .run(&c.graph, inputs.clone())
                .unwrap();
            let got = Interpreter::default().run(&out, inputs).unwrap();
            assert_close(&got, &want, c.rule);
        }
        // Graph outputs keep their names and types.
        let names = |g: &Graph| {
            g.outputs
                .iter()
                .map(|o| g.value(*o).name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&out), names(&c.graph), "{}", c.rule);
    }
}

#[test]
fn where_masks_need_a_fill_that_absorbs_every_score() {
    // x + (−1e4) is not −1e4 for every score, and a row masked by −∞ everywhere is NaN after the Softmax: neither
    // is the Attention with the mask Where(cond, 0, fill).
    for fill in [-1e4, f32::NEG_INFINITY] {
        let g = where_attention_graph(true, fill);
        let (out, _) = optimize_with(&g, &Avoid("Softmax"), &only("attention"));
        assert!(
            has_op(&out, "Softmax") && !has_op(&out, "Attention"),
            "{fill}"
        );
    }
}

#[test]
fn attention_needs_a_positive_scale() {
    // Attention multiplies Q and K by √scale each: a negative scale is no Attention.
    let g = attention_graph(false, -0.5);
    let (out, _) = optimize_with(&g, &Avoid("Softmax"), &only("attention"));
    assert!(has_op(&out, "Softmax") && !has_op(&out, "Attention"));
}

#[test]
fn every_rule_has_a_soundness_case() {
    let cases = cases();
    let layout = layout_cases();
    for name in all_rule_names() {
        assert!(
            cases.iter().any(|c| c.rule == name) || layout.iter().any(|c| c.rule == name),
            "rule `{name}` has no soundness case in egraph/tests.rs"
        );
    }
    let names = all_rule_names();
    for c in &cases {
        assert!(
            names.iter().any(|n| n == c.rule),
            "case for unknown rule `{}`",
            c.rule
        );
    }
}

#[test]
fn shape_chains_fold_to_constants() {
    // Reshape(x, Concat(Gather(Shape(x), 0), [-1])) == Reshape(x, [2, -1]).
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let s = b.node1(ops::Shape::default(), &[x]).unwrap();
    let i0 = b.constant("i0", Tensor::vector(vec![0i64]));
    let d0 = b.node1(ops::Gather::default(), &[s, i0]).unwrap();
    let m1 = ints(&mut b, "m1", &[-1]);
    let target = b.node1(ops::Concat { axis: 0 }, &[d0, m1]).unwrap();
    let y = b.node1(ops::Reshape::default(), &[x, target]).unwrap();
    let g = finish(b, y);
    let (out, stats) = optimize_ref(&g, &test_options());
    assert_eq!((stats.imported_nodes, stats.optimized_nodes), (4, 1));
    assert_eq!(out.value(out.outputs[0]).ty.to_string(), "f32[2,12]");
    let inputs = random_inputs(&g, 3);
    assert_close(
        &Interpreter::default().run(&out, inputs.clone()).unwrap(),
        &Interpreter::default().run(&g, inputs).unwrap(),
        "fold",
    );
}

#[test]
fn multi_output_ops_and_shared_values_round_trip() {
    // Split into two halves, each used twice; Identity on an output is kept as the output's name.
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[4, 3]);
    let parts = b
        .node_opt(
            ops::Split {
                axis: 0,
                num_outputs: Some(2),
            },
            &[Some(x)],
            2,
        )
        .unwrap();
    let a = b.node1(ops::Add::default(), &[parts[0], parts[1]]).unwrap();
    let m = b.node1(ops::Mul::default(), &[parts[0], a]).unwrap();
    let y = b.node1(ops::Sub::default(), &[m, parts[1]]).unwrap();
    let id = b.node1(ops::Identity::default(), &[x]).unwrap();
    b.output(y);
    b.output(id);
    let g = b.finish().unwrap();
    let (out, stats) = optimize_ref(&g, &test_options());
    // The Identity of an input that is a graph output stays (the output keeps its name); the Add, Mul and Sub
    // become one FusedElementwise over the two halves.
    assert_eq!(
        stats.optimized_nodes,
        3,
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    let inputs = random_inputs(&g, 4);
    assert_close(
        &Interpreter::default().run(&out, inputs.clone()).unwrap(),
        &Interpreter::default().run(&g, inputs).unwrap(),
        "split",
    );
    assert_eq!(
        out.outputs
            .iter()
            .map(|o| out.value(*o).name.clone())
            .collect::<Vec<_>>(),
        g.outputs
            .iter()
            .map(|o| g.value(*o).name.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn extraction_counts_shared_subgraphs_once() {
    // y = Relu(x) + Relu(x): hash-consing shares the Relu; the extracted graph has 2 nodes, not 3.
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[3]);
    let r1 = relu(&mut b, x);
    let r2 = relu(&mut b, x);
    let y = b.node1(ops::Add::default(), &[r1, r2]).unwrap();
    let g = finish(b, y);
    let no_fusion = Options {
        disabled_rules: vec!["fuse-elementwise".into()],
        ..test_options()
    };
    let (out, stats) = optimize_ref(&g, &no_fusion);
    assert_eq!(
        stats.optimized_nodes,
        2,
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    // With elementwise fusion, the shared Relu is read by one node only: one FusedElementwise.
    let (out, stats) = optimize_ref(&g, &test_options());
    assert_eq!(
        stats.optimized_nodes,
        1,
        "{}",
        jiuzhou_ir::text::print(&out)
    );
}

/// `Conv(x, ConstantOfShape([oc, 2, 3, 3]))`: a weight stored as a fill, as in onnx's light zoo models.
fn conv_with_fill_weight(oc: i64) -> Graph {
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[1, 2, 5, 5]);
    let shape = ints(&mut b, "w_shape", &[oc, 2, 3, 3]);
    let fill = ops::ConstantOfShape {
        value: Some(Arc::new(Tensor::vector(vec![0.25f32]))),
    };
    let w = b.node1(fill, &[shape]).unwrap();
    let y = b.node1(ops::Conv::default(), &[x, w]).unwrap();
    finish(b, y)
}

#[test]
fn constant_fills_fold_into_weights_within_the_limits() {
    // 4·2·3·3 = 72 elements: more than a folded constant may have, within the fill limit.
    let g = conv_with_fill_weight(4);
    let options = Options {
        fold_limit: 16,
        ..test_options()
    };
    let (out, stats) = optimize_ref(&g, &options);
    assert_eq!((stats.imported_nodes, stats.optimized_nodes), (2, 1));
    assert!(!has_op(&out, "ConstantOfShape"));
    let inputs = random_inputs(&g, 4);
    assert_close(
        &Interpreter::default().run(&out, inputs.clone()).unwrap(),
        &Interpreter::default().run(&g, inputs).unwrap(),
        "fill",
    );
    // Over the per-tensor limit, or over the budget, the fill stays an op: a model's few bytes cannot make the
    // optimizer allocate what it asks for.
    for (fill_limit, fill_budget) in [(71, 1 << 20), (1 << 20, 71)] {
        let options = Options {
            fold_limit: 16,
            fill_limit,
            fill_budget,
            ..test_options()
        };
        let (out, _) = optimize_ref(&g, &options);
        assert!(
            has_op(&out, "ConstantOfShape"),
            "{fill_limit} {fill_budget}"
        );
    }
    // A shape asking for 2^62 elements is not materialized with the default limits either.
    let huge = {
        let mut b = GraphBuilder::new("g");
        let shape = ints(&mut b, "s", &[1 << 31, 1 << 31]);
        let fill = ops::ConstantOfShape {
            value: Some(Arc::new(Tensor::vector(vec![1.0f32]))),
        };
        let y = b.node1(fill, &[shape]).unwrap();
        finish(b, y)
    };
    let (out, _) = optimize_ref(&huge, &test_options());
    assert!(has_op(&out, "ConstantOfShape"));
}

#[test]
fn dropout_with_both_outputs_read_keeps_them_apart() {
    // y = Dropout(x).output equals x (an input), the mask still needs the node: both outputs keep their names.
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[2, 3]);
    let outs = b.node_opt(ops::Dropout::default(), &[Some(x)], 2).unwrap();
    b.output(outs[0]);
    b.output(outs[1]);
    let g = b.finish().unwrap();
    let (out, _) = optimize_ref(&g, &test_options());
    let names = |g: &Graph| {
        g.outputs
            .iter()
            .map(|o| g.value(*o).name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&out), names(&g));
    let inputs = random_inputs(&g, 5);
    assert_eq!(
        Interpreter::default().run(&out, inputs.clone()).unwrap(),
        Interpreter::default().run(&g, inputs).unwrap()
    );
}
