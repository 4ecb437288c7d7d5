//! Differential tests: every CPU kernel against the reference interpreter on random data, with broadcasting, odd
//! sizes (not multiples of the vector width) and chains that go through the arena.

use std::sync::Arc;

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Graph, GraphBuilder, Op, Tensor, TensorType, Value, ValueId};
use jiuzhou_runtime::Executable;
use jiuzhou_target_cpu::{CpuExecutable, CpuOptions};
use jiuzhou_target_reference::Interpreter;

mod common;
use common::Rng;

/// The bits of every f32 output.
fn bits(outs: &[Value]) -> Vec<Vec<u32>> {
    outs.iter()
        .map(|v| {
            let t = v.as_tensor().unwrap();
            t.as_slice::<f32>()
                .map(|s| s.iter().map(|x| x.to_bits()).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// How close an output element must be to the reference.
#[derive(Clone, Copy)]
enum Tol {
    /// Within `1e-4 + 1e-4·|want|` of each element.
    Element,
    /// Within `1e-4·max|want|`: the rule the model fixtures are checked by, for kernels that reassociate long sums
    /// (the Winograd convolution's transforms), where an element near zero amid large ones carries the rounding
    /// of the whole sum.
    Scale,
}

/// Runs `graph` on both targets with `inputs` and compares every output (and the CPU outputs at 1, 2 and 3 threads
/// bit for bit); returns the CPU executable (compiled for every core).
fn check(graph: Graph, inputs: Vec<Tensor>) -> CpuExecutable {
    check_within(graph, inputs, Tol::Element)
}

/// [`check`] at tolerance `tol`.
fn check_within(graph: Graph, inputs: Vec<Tensor>, tol: Tol) -> CpuExecutable {
    let values: Vec<Value> = inputs
        .into_iter()
        .map(|t| Value::Tensor(Arc::new(t)))
        .collect();
    let want = Interpreter::default().run(&graph, values.clone()).unwrap();
    let graph = Arc::new(graph);
    let exec = CpuExecutable::compile(graph.clone()).unwrap();
    let got = exec.run(values.clone()).unwrap();
    for threads in [1, 2, 3] {
        let other = CpuExecutable::compile_with(graph.clone(), &CpuOptions { threads }).unwrap();
        assert_eq!(other.threads(), threads);
        let again = other.run(values.clone()).unwrap();
        assert_eq!(bits(&again), bits(&got), "{threads} threads");
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let (g, w) = (g.as_tensor().unwrap(), w.as_tensor().unwrap());
        assert_eq!(g.shape(), w.shape());
        let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            let bound = match tol {
                Tol::Element => 1e-4 + 1e-4 * b.abs(),
                Tol::Scale => 1e-4 * scale,
            };
            let ok = a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= bound;
            assert!(ok, "element {i}: got {a}, want {b}");
        }
    }
    exec
}

fn input(b: &mut GraphBuilder, name: &str, shape: &[usize]) -> ValueId {
    b.input(name, TensorType::known(DType::F32, shape))
}

/// One node over graph inputs of the given shapes (and constants), checked on random data.
fn check_node(
    op: impl Into<Op>,
    shapes: &[&[usize]],
    consts: Vec<Tensor>,
    seed: u64,
) -> CpuExecutable {
    let mut rng = Rng(seed);
    let mut b = GraphBuilder::new("t");
    let mut ids: Vec<ValueId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| input(&mut b, &format!("x{i}"), s))
        .collect();
    for (i, c) in consts.into_iter().enumerate() {
        ids.push(b.constant(&format!("c{i}"), c));
    }
    let out = b.node1(op, &ids).unwrap();
    b.output(out);
    let g = b.finish().unwrap();
    let inputs = shapes.iter().map(|s| rng.tensor(s)).collect();
    check(g, inputs)
}

const PAIRS: &[(&[usize], &[usize])] = &[
    (&[7], &[7]),
    (&[37], &[37]),
    (&[3, 5], &[5]),
    (&[2, 3, 5], &[3, 1]),
    (&[1], &[2, 19]),
    (&[4, 1, 3], &[1, 6, 1]),
    (&[], &[5]),
    (&[2, 17], &[]),
    (&[0, 3], &[3]),
];

#[test]
fn binary_ops_broadcast() {
    let ops: Vec<Op> = vec![
        Add::default().into(),
        Sub::default().into(),
        Mul::default().into(),
        Div::default().into(),
        Max::default().into(),
        Min::default().into(),
        Sum::default().into(),
    ];
    for (k, op) in ops.into_iter().enumerate() {
        for (i, (a, b)) in PAIRS.iter().enumerate() {
            let e = check_node(op.clone(), &[a, b], vec![], (k * 100 + i + 1) as u64);
            assert!(e.fallback_ops().is_empty(), "{op:?} fell back");
        }
    }
}

#[test]
fn unary_ops() {
    let ops: Vec<Op> = vec![
        Relu::default().into(),
        Neg::default().into(),
        Abs::default().into(),
    ];
    for (k, op) in ops.into_iter().enumerate() {
        for (i, s) in [&[1usize][..], &[15], &[16], &[3, 7, 5], &[0]]
            .iter()
            .enumerate()
        {
            let e = check_node(op.clone(), &[s], vec![], (k * 10 + i + 1) as u64);
            assert!(e.fallback_ops().is_empty());
        }
    }
}

#[test]
fn sqrt_of_non_negative_and_nan() {
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[21]);
    let y = b.node1(Sqrt::default(), &[x]).unwrap();
    let z = b.node1(Relu::default(), &[y]).unwrap();
    b.output(z);
    let data: Vec<f32> = (0..21)
        .map(|i| if i == 5 { f32::NAN } else { i as f32 * 0.7 })
        .collect();
    check(
        b.finish().unwrap(),
        vec![Tensor::from_vec(vec![21], data).unwrap()],
    );
}

#[test]
fn clip_with_constant_bounds() {
    let lo = Tensor::scalar(-0.5f32);
    let hi = Tensor::scalar(0.75f32);
    let e = check_node(Clip::default(), &[&[5, 7]], vec![lo, hi], 3);
    assert!(e.fallback_ops().is_empty());
}

#[test]
fn matmul_shapes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 5], &[5, 7]),
        (&[2, 3, 5], &[5, 1]),
        (&[5], &[5, 3]),
        (&[2, 5], &[5]),
        (&[4], &[4]),
        (&[2, 1, 3, 4], &[3, 4, 5]),
        (&[1, 17, 33], &[2, 33, 9]),
    ];
    for (i, (a, b)) in cases.iter().enumerate() {
        let e = check_node(MatMul::default(), &[a, b], vec![], i as u64 + 7);
        assert!(e.fallback_ops().is_empty());
    }
}

#[test]
fn gemm_variants() {
    for trans_a in [0, 1] {
        for trans_b in [0, 1] {
            let (m, k, n) = (5, 7, 9);
            let a: &[usize] = if trans_a == 1 { &[k, m] } else { &[m, k] };
            let bs: &[usize] = if trans_b == 1 { &[n, k] } else { &[k, n] };
            let op = Gemm {
                alpha: 0.5,
                beta: 2.0,
                transA: trans_a,
                transB: trans_b,
            };
            // B as an input, C as [n].
            check_node(op.clone(), &[a, bs, &[n]], vec![], 11);
            // B as a constant (pre-packed), C as [m, 1].
            let mut rng = Rng(5);
            let e = check_node(
                op.clone(),
                &[a],
                vec![rng.tensor(bs), rng.tensor(&[m, 1])],
                12,
            );
            assert!(e.fallback_ops().is_empty());
        }
    }
}

fn conv(kernel: &[i64], pads: Option<Vec<i64>>, strides: Option<Vec<i64>>, group: i64) -> Conv {
    Conv {
        kernel_shape: Some(kernel.to_vec()),
        pads,
        strides,
        group,
        ..Default::default()
    }
}

#[test]
fn conv_variants() {
    let mut rng = Rng(9);
    // (input, weight, op, bias)
    let cases: Vec<(Vec<usize>, Vec<usize>, Conv, bool)> = vec![
        (
            vec![1, 3, 9, 11],
            vec![5, 3, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1),
            true,
        ),
        (
            vec![2, 4, 10, 7],
            vec![6, 2, 3, 2],
            conv(&[3, 2], Some(vec![0, 1, 2, 0]), Some(vec![2, 1]), 2),
            true,
        ),
        (
            vec![1, 6, 8, 8],
            vec![6, 1, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), Some(vec![2, 2]), 6),
            true,
        ),
        (
            vec![1, 5, 7, 7],
            vec![3, 5, 1, 1],
            conv(&[1, 1], None, None, 1),
            false,
        ),
        (
            vec![2, 3, 13],
            vec![4, 3, 3],
            conv(&[3], Some(vec![1, 1]), None, 1),
            true,
        ),
        (
            vec![1, 2, 9, 9],
            vec![3, 2, 3, 3],
            Conv {
                dilations: Some(vec![2, 2]),
                auto_pad: "SAME_UPPER".into(),
                ..Default::default()
            },
            false,
        ),
    ];
    for (i, (x, w, op, bias)) in cases.into_iter().enumerate() {
        let mut consts = vec![rng.tensor(&w)];
        if bias {
            consts.push(rng.tensor(&[w[0]]));
        }
        let e = check_node(op, &[&x], consts, i as u64 + 21);
        assert!(e.fallback_ops().is_empty());
    }
}

/// Conv → Relu (fused) → Add → Mul → Conv → Relu: intermediates live in the arena and Relu disappears into the
/// convolutions; a Hardmax has no kernel and runs on the reference, listed as a fallback.
#[test]
fn chain_through_the_arena_with_a_fallback() {
    let mut rng = Rng(77);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[1, 3, 10, 10]);
    let w1 = b.constant("w1", rng.tensor(&[8, 3, 3, 3]));
    let b1 = b.constant("b1", rng.tensor(&[8]));
    let c1 = b
        .node1(conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1), &[x, w1, b1])
        .unwrap();
    let r1 = b.node1(Relu::default(), &[c1]).unwrap();
    let k = b.constant("k", rng.tensor(&[8, 1, 1]));
    let a = b.node1(Add::default(), &[r1, k]).unwrap();
    let m = b.node1(Mul::default(), &[a, r1]).unwrap();
    let s = b.node1(Hardmax::default(), &[m]).unwrap();
    let w2 = b.constant("w2", rng.tensor(&[4, 8, 1, 1]));
    let c2 = b.node1(conv(&[1, 1], None, None, 1), &[s, w2]).unwrap();
    let r2 = b.node1(Relu::default(), &[c2]).unwrap();
    b.output(r2);
    let e = check(b.finish().unwrap(), vec![rng.tensor(&[1, 3, 10, 10])]);
    let ops: Vec<&str> = e.fallback_ops().iter().map(|f| f.op).collect();
    assert_eq!(ops, ["Hardmax"]);
    // Conv+Relu, Add, Mul, Hardmax, Conv+Relu.
    assert_eq!(e.num_steps(), 5);
    assert!(e.peak_arena_bytes() >= 2 * 8 * 100 * 4);
}

/// A node whose dtype the kernels do not cover runs on the reference implementation, listed as a fallback.
#[test]
fn other_dtypes_fall_back() {
    let mut b = GraphBuilder::new("t");
    let x = b.input("x", TensorType::known(DType::I64, &[3]));
    let y = b.node1(Add::default(), &[x, x]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    let exec = CpuExecutable::compile(Arc::new(g)).unwrap();
    let out = exec
        .run(vec![Value::Tensor(Arc::new(Tensor::vector(vec![
            1i64, 2, 3,
        ])))])
        .unwrap();
    assert_eq!(
        out[0].as_tensor().unwrap().as_slice::<i64>().unwrap(),
        &[2, 4, 6]
    );
    assert_eq!(exec.fallback_ops().len(), 1);
}

/// Inference BatchNormalization with constant statistics is folded into a per-channel affine kernel, and a
/// following Relu fuses into it.
#[test]
fn batch_norm_then_relu() {
    let mut rng = Rng(31);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[2, 5, 3, 7]);
    let scale = b.constant("scale", rng.tensor(&[5]));
    let bias = b.constant("bias", rng.tensor(&[5]));
    let mean = b.constant("mean", rng.tensor(&[5]));
    let var: Vec<f32> = (0..5).map(|i| 0.5 + i as f32).collect();
    let var = b.constant("var", Tensor::from_vec(vec![5], var).unwrap());
    let y = b
        .node1(BatchNormalization::default(), &[x, scale, bias, mean, var])
        .unwrap();
    let r = b.node1(Relu::default(), &[y]).unwrap();
    b.output(r);
    let e = check(b.finish().unwrap(), vec![rng.tensor(&[2, 5, 3, 7])]);
    assert!(e.fallback_ops().is_empty());
    assert_eq!(e.num_steps(), 1);
}

/// FusedConv and FusedMatMul run on the CPU kernels with their bias, residual and activation epilogue (in the
/// arena and as graph outputs), for every activation of the IR.
#[test]
fn fused_ops() {
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::Clip {
            min: -0.5,
            max: 1.5,
        },
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::HardSwish,
        Activation::LeakyRelu { alpha: 0.2 },
        Activation::Tanh,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        let mut rng = Rng(90 + i as u64);
        for residual in [false, true] {
            // FusedConv (bias, optional residual), then a FusedMatMul over its flattened result.
            let mut b = GraphBuilder::new("t");
            let x = input(&mut b, "x", &[2, 3, 6, 6]);
            let z = input(&mut b, "z", &[2, 4, 6, 6]);
            let w = b.constant("w", rng.tensor(&[4, 3, 3, 3]));
            let bias = b.constant("b", rng.tensor(&[4]));
            let conv = FusedConv {
                pads: Some(vec![1; 4]),
                activation: act,
                ..Default::default()
            };
            let ins = [Some(x), Some(w), Some(bias), residual.then_some(z)];
            let c = b.node_opt(conv, &ins, 1).unwrap()[0];
            let shape = b.constant("s", Tensor::vector(vec![2i64, 6, 24]));
            let r = b.node1(Reshape::default(), &[c, shape]).unwrap();
            let mw = b.constant("mw", rng.tensor(&[24, 5]));
            let mb = b.constant("mb", rng.tensor(&[5]));
            let mz = input(&mut b, "mz", &[2, 6, 5]);
            let mm = FusedMatMul { activation: act };
            let ins = [Some(r), Some(mw), Some(mb), residual.then_some(mz)];
            let y = b.node_opt(mm, &ins, 1).unwrap()[0];
            b.output(y);
            let g = b.finish().unwrap();
            let inputs = vec![
                rng.tensor(&[2, 3, 6, 6]),
                rng.tensor(&[2, 4, 6, 6]),
                rng.tensor(&[2, 6, 5]),
            ];
            let e = check(g, inputs);
            let ops: Vec<&str> = e.fallback_ops().iter().map(|f| f.op).collect();
            assert!(
                !ops.iter().any(|o| o.starts_with("Fused")),
                "{act} residual={residual}: {ops:?}"
            );
        }
    }
}

/// Shapes large enough that every kernel family splits its work across threads (the elementwise kernels only split
/// outputs of at least two chunks of `MIN_CHUNK`); `check` compares 1, 2 and 3 threads bit for bit.
#[test]
fn large_shapes_split_across_threads() {
    // Binary: chunks of rows, chunks of one row, and a scalar operand.
    for (i, (a, b)) in [
        (&[4usize, 64, 200][..], &[64usize, 1][..]),
        (&[70001], &[70001]),
        (&[70001], &[1]),
    ]
    .into_iter()
    .enumerate()
    {
        check_node(Add::default(), &[a, b], vec![], 100 + i as u64);
        check_node(Div::default(), &[a, b], vec![], 200 + i as u64);
    }
    check_node(Relu::default(), &[&[70001]], vec![], 300);
    // MatMul: batched, 2-D right operand, batch of 1 (every product split by gemm).
    check_node(
        MatMul::default(),
        &[&[6, 40, 50], &[6, 50, 61]],
        vec![],
        301,
    );
    check_node(
        MatMul::default(),
        &[&[3, 100, 200], &[200, 151]],
        vec![],
        302,
    );
    check_node(
        MatMul::default(),
        &[&[1, 64, 300], &[1, 300, 203]],
        vec![],
        303,
    );
    // Gemm with C and a fused Relu.
    let mut rng = Rng(304);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[200, 300]);
    let w = b.constant("w", rng.tensor(&[300, 251]));
    let c = b.constant("c", rng.tensor(&[251]));
    let y = b.node1(Gemm::default(), &[x, w, c]).unwrap();
    let r = b.node1(Relu::default(), &[y]).unwrap();
    b.output(r);
    check(b.finish().unwrap(), vec![rng.tensor(&[200, 300])]);
    // Conv: 2 images (the Winograd kernel), grouped, depthwise (one plane per task), each with a fused Relu.
    for (xs, ws, group) in [
        (&[2usize, 16, 40, 40][..], &[32usize, 16, 3, 3][..], 1),
        (&[1, 16, 40, 40], &[16, 4, 3, 3], 4),
        (&[2, 32, 40, 40], &[32, 1, 3, 3], 32),
    ] {
        let mut rng = Rng(305 + group as u64);
        let mut b = GraphBuilder::new("t");
        let x = input(&mut b, "x", xs);
        let w = b.constant("w", rng.tensor(ws));
        let bias = b.constant("b", rng.tensor(&[ws[0]]));
        let y = b
            .node1(
                conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, group),
                &[x, w, bias],
            )
            .unwrap();
        let r = b.node1(Relu::default(), &[y]).unwrap();
        b.output(r);
        let tol = if group == 1 { Tol::Scale } else { Tol::Element };
        let e = check_within(b.finish().unwrap(), vec![rng.tensor(xs)], tol);
        assert_eq!(e.num_steps(), 1);
    }
    // BatchNormalization as an affine kernel, one plane per task.
    let mut rng = Rng(320);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[2, 32, 40, 40]);
    let p: Vec<ValueId> = ["scale", "bias", "mean"]
        .iter()
        .map(|n| b.constant(n, rng.tensor(&[32])))
        .collect();
    let var = b.constant("var", Tensor::from_vec(vec![32], vec![1.5f32; 32]).unwrap());
    let y = b
        .node1(BatchNormalization::default(), &[x, p[0], p[1], p[2], var])
        .unwrap();
    b.output(y);
    check(b.finish().unwrap(), vec![rng.tensor(&[2, 32, 40, 40])]);
    // Movement (Transpose, Slice, Pad, Expand), softmax and row norms, chunks of whole rows.
    let i64s = |v: &[i64]| Tensor::vector(v.to_vec());
    check_node(
        Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        &[&[1, 58, 4, 300]],
        vec![],
        321,
    );
    check_node(
        Slice::default(),
        &[&[3, 130, 301]],
        vec![i64s(&[1, 2]), i64s(&[129, 300]), i64s(&[1, 2])],
        322,
    );
    check_node(
        Pad::default(),
        &[&[2, 100, 170]],
        vec![i64s(&[0, 1, 2, 0, 3, 1])],
        323,
    );
    check_node(
        Expand::default(),
        &[&[1, 300, 1]],
        vec![i64s(&[4, 300, 60])],
        324,
    );
    check_node(Softmax { axis: -1 }, &[&[300, 257]], vec![], 325);
    let ln = LayerNormalization {
        axis: -1,
        epsilon: 1e-5,
        ..Default::default()
    };
    check_node(ln, &[&[300, 257], &[257], &[257]], vec![], 326);
    let rms = RMSNormalization {
        axis: -1,
        epsilon: 1e-5,
        ..Default::default()
    };
    check_node(rms, &[&[300, 257], &[257]], vec![], 327);
    // FusedElementwise: runs of blocks of one row (same shapes), chunks of rows (a broadcast row).
    for (k, shapes) in [[&[70001usize][..], &[70001][..]], [&[300, 257], &[257]]]
        .into_iter()
        .enumerate()
    {
        let expr = FusedElementwise {
            expr: "i0 i1 sub gelu i0 mul sigmoid".parse().unwrap(),
        };
        check_node(expr, &shapes, vec![], 330 + k as u64);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Native kernels (pool, reduce, norm, movement, activations): each against the reference on random shapes and
// attributes, with no fallback. Tolerance: `1e-4 + 1e-4·|want|` per element (see `check`); most of these kernels
// compute in f64 as the reference does and agree to the last bit or nearly.

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        ((self.f32() + 2.0) / 4.0 * n as f32) as usize % n.max(1)
    }

    fn shape(&mut self, rank: usize, max: usize) -> Vec<usize> {
        (0..rank).map(|_| 1 + self.below(max)).collect()
    }
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::vector(v.to_vec())
}

/// Checks one node and that it ran natively.
fn native(op: impl Into<Op>, shapes: &[&[usize]], consts: Vec<Tensor>, seed: u64) {
    let op = op.into();
    let name = format!("{op:?}");
    let e = check_node(op, shapes, consts, seed);
    assert!(
        e.fallback_ops().is_empty(),
        "{name} fell back: {:?}",
        e.fallback_ops()
    );
}

#[test]
fn pools_random() {
    let mut rng = Rng(4242);
    for case in 0..60u64 {
        let n = 1 + rng.below(3);
        let mut shape = vec![1 + rng.below(2), 1 + rng.below(3)];
        let kernel: Vec<i64> = (0..n).map(|_| 1 + rng.below(3) as i64).collect();
        let dil: Vec<i64> = (0..n).map(|_| 1 + rng.below(2) as i64).collect();
        let strides: Vec<i64> = (0..n).map(|_| 1 + rng.below(3) as i64).collect();
        for i in 0..n {
            let ext = ((kernel[i] - 1) * dil[i] + 1) as usize;
            shape.push(ext + rng.below(if n == 3 { 4 } else { 7 }));
        }
        let pads: Vec<i64> = (0..n)
            .flat_map(|i| {
                let k = kernel[i];
                vec![rng.below(k as usize) as i64, rng.below(k as usize) as i64]
            })
            .collect();
        // Pads as [begin..., end...].
        let pads: Vec<i64> = (0..2 * n).map(|j| pads[(j % n) * 2 + j / n]).collect();
        let auto_pad = ["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"][rng.below(5)];
        let dil = if auto_pad == "NOTSET" {
            dil
        } else {
            vec![1; n]
        };
        let ceil_mode = rng.below(2) as i64;
        let (pads_attr, auto) = if auto_pad == "NOTSET" {
            (Some(pads), "NOTSET".to_string())
        } else {
            (None, auto_pad.to_string())
        };
        let mp = MaxPool {
            auto_pad: auto.clone(),
            ceil_mode,
            dilations: Some(dil.clone()),
            kernel_shape: kernel.clone(),
            pads: pads_attr.clone(),
            strides: Some(strides.clone()),
            ..Default::default()
        };
        native(mp, &[&shape], vec![], case + 1);
        let ap = AveragePool {
            auto_pad: auto,
            ceil_mode,
            count_include_pad: rng.below(2) as i64,
            dilations: Some(dil),
            kernel_shape: kernel,
            pads: pads_attr,
            strides: Some(strides),
        };
        native(ap, &[&shape], vec![], case + 100);
    }
    for s in [
        &[2usize, 3, 5, 7][..],
        &[1, 4, 6],
        &[1, 2, 3, 2, 2],
        &[2, 3],
    ] {
        native(GlobalAveragePool::default(), &[s], vec![], 5);
        native(GlobalMaxPool::default(), &[s], vec![], 6);
    }
}

/// Stride-2 max pools over rows long enough for the vectorized even/odd split, with NaNs: a NaN first tap of a
/// window wins, a later NaN loses (the reference's fold), on both the interior and the border outputs.
#[test]
fn max_pool_stride_2_wide_rows_with_nans() {
    for (shape, kernel, pads) in [
        ([1usize, 2, 9, 41], [3i64, 3], [0i64, 0, 0, 0]),
        ([1, 3, 12, 64], [3, 3], [1, 1, 1, 1]),
        ([1, 2, 7, 50], [2, 4], [0, 1, 1, 2]),
    ] {
        let mut rng = Rng(shape[3] as u64);
        let mut data = rng.tensor(&shape).as_slice::<f32>().unwrap().to_vec();
        for i in (0..data.len()).step_by(37) {
            data[i] = f32::NAN;
        }
        let x = Tensor::from_vec(shape.to_vec(), data).unwrap();
        let mut b = GraphBuilder::new("t");
        let xi = input(&mut b, "x", &shape);
        let mp = MaxPool {
            kernel_shape: kernel.to_vec(),
            pads: Some(pads.to_vec()),
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        let y = b.node1(mp, &[xi]).unwrap();
        b.output(y);
        check(b.finish().unwrap(), vec![x]);
    }
}

#[test]
fn reductions_random() {
    let mut rng = Rng(99);
    let axes_sets: &[&[i64]] = &[
        &[],
        &[0],
        &[1],
        &[-1],
        &[0, 2],
        &[1, 2],
        &[0, 1, 2],
        &[2, 0],
    ];
    for (k, &axes) in axes_sets.iter().enumerate() {
        for keepdims in [0, 1] {
            for noop in [0, 1] {
                let shape = rng.shape(3, 6);
                let consts = vec![i64s(axes)];
                macro_rules! red {
                    ($($op:ident),*) => {$(
                        native(
                            $op { keepdims, noop_with_empty_axes: noop },
                            &[&shape],
                            consts.clone(),
                            (k * 7 + keepdims as usize * 3 + noop as usize) as u64 + 1,
                        );
                    )*};
                }
                red!(
                    ReduceSum,
                    ReduceMean,
                    ReduceMax,
                    ReduceMin,
                    ReduceProd,
                    ReduceL1,
                    ReduceL2,
                    ReduceSumSquare,
                    ReduceLogSum,
                    ReduceLogSumExp
                );
            }
        }
    }
    // Rank 4 with non-adjacent axes, and no axes input at all.
    native(
        ReduceMean::default(),
        &[&[2, 3, 4, 5]],
        vec![i64s(&[1, 3])],
        3,
    );
    native(ReduceSum::default(), &[&[2, 3, 4]], vec![], 4);
    native(ReduceMax::default(), &[&[0, 3]], vec![i64s(&[0])], 4);
    native(ReduceSum::default(), &[&[0, 3]], vec![i64s(&[1])], 4);
}

#[test]
fn softmax_random() {
    let mut rng = Rng(3);
    for axis in [-3i64, -1, 0, 1, 2] {
        let shape = rng.shape(3, 7);
        native(Softmax { axis }, &[&shape], vec![], axis as u64 + 10);
        native(LogSoftmax { axis }, &[&shape], vec![], axis as u64 + 20);
    }
    native(Softmax { axis: -1 }, &[&[4, 1000]], vec![], 7);
}

#[test]
fn normalizations_random() {
    let mut rng = Rng(8);
    for axis in [-1i64, 1, 2, -2] {
        let shape = rng.shape(3, 6);
        let a = if axis < 0 { axis + 3 } else { axis } as usize;
        let tail = shape[a..].to_vec();
        let last = vec![*tail.last().unwrap()];
        for scale_shape in [tail.clone(), last] {
            let ln = LayerNormalization {
                axis,
                epsilon: 1e-5,
                ..Default::default()
            };
            native(
                ln.clone(),
                &[&shape, &scale_shape, &scale_shape],
                vec![],
                axis as u64 + 1,
            );
            native(ln, &[&shape, &scale_shape], vec![], axis as u64 + 2);
            let rms = RMSNormalization {
                axis,
                epsilon: 1e-3,
                ..Default::default()
            };
            native(rms, &[&shape, &scale_shape], vec![], axis as u64 + 3);
        }
    }
    // BatchNormalization with statistics read at run time (mean as an input), InstanceNormalization.
    let var: Vec<f32> = (0..4).map(|i| 0.25 + i as f32).collect();
    native(
        BatchNormalization::default(),
        &[&[2, 4, 3, 5], &[4], &[4], &[4]],
        vec![Tensor::from_vec(vec![4], var).unwrap()],
        9,
    );
    native(
        InstanceNormalization::default(),
        &[&[2, 3, 4, 5], &[3], &[3]],
        vec![],
        10,
    );
    for (size, beta) in [(3, 0.75f32), (5, 0.75), (4, 0.5), (1, 1.0)] {
        let lrn = LRN {
            size,
            beta,
            alpha: 0.01,
            bias: 1.5,
        };
        native(lrn, &[&[2, 7, 3, 4]], vec![], size as u64);
    }
}

#[test]
fn movement_ops() {
    let mut rng = Rng(17);
    // Copies under a new shape.
    native(Reshape::default(), &[&[2, 3, 4]], vec![i64s(&[0, -1])], 1);
    native(Reshape::default(), &[&[2, 3, 4]], vec![i64s(&[4, 3, 2])], 1);
    for axis in -3i64..=3 {
        native(Flatten { axis }, &[&[2, 3, 4]], vec![], 2);
    }
    native(Squeeze::default(), &[&[1, 3, 1, 4]], vec![], 3);
    native(Squeeze::default(), &[&[1, 3, 1, 4]], vec![i64s(&[-2])], 3);
    native(Unsqueeze::default(), &[&[3, 4]], vec![i64s(&[0, -1])], 4);
    native(Identity::default(), &[&[5, 2]], vec![], 5);
    native(Dropout::default(), &[&[5, 2]], vec![], 5);
    // Transpose by every permutation of rank 3 and a few of rank 4.
    let perms: &[&[i64]] = &[
        &[0, 1, 2],
        &[0, 2, 1],
        &[1, 0, 2],
        &[1, 2, 0],
        &[2, 0, 1],
        &[2, 1, 0],
    ];
    for (i, p) in perms.iter().enumerate() {
        let shape = rng.shape(3, 6);
        native(
            Transpose {
                perm: Some(p.to_vec()),
            },
            &[&shape],
            vec![],
            i as u64,
        );
    }
    native(
        Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        &[&[1, 2, 3, 5]],
        vec![],
        1,
    );
    native(Transpose { perm: None }, &[&[2, 3, 4, 5]], vec![], 2);
    // Concat of three along each axis.
    for axis in [-1i64, 0, 1, 2] {
        let base = rng.shape(3, 5);
        let a = if axis < 0 { axis + 3 } else { axis } as usize;
        let shapes: Vec<Vec<usize>> = (0..3)
            .map(|i| {
                let mut s = base.clone();
                s[a] = i + 1;
                s
            })
            .collect();
        let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        native(Concat { axis }, &refs, vec![], axis as u64 + 5);
    }
    // Slice: negative starts and steps, clamping, default axes and steps.
    type SliceCase<'a> = (&'a [i64], &'a [i64], Option<&'a [i64]>, Option<&'a [i64]>);
    let slices: &[SliceCase<'_>] = &[
        (&[1], &[-1], None, None),
        (&[0, 1], &[2, 100], Some(&[1, 2]), None),
        (&[-1, 0], &[-100, 5], Some(&[2, 0]), Some(&[-2, 2])),
        (&[5], &[1], Some(&[-1]), Some(&[-1])),
        (&[3], &[1], Some(&[0]), None),
    ];
    for (i, (st, en, ax, sp)) in slices.iter().enumerate() {
        let mut consts = vec![i64s(st), i64s(en)];
        if let Some(a) = ax {
            consts.push(i64s(a));
        }
        if let Some(s) = sp {
            consts.push(i64s(s));
        }
        native(Slice::default(), &[&[4, 5, 6]], consts, i as u64);
    }
    // Gather with negative indices, scalar and 2-D index tensors.
    for axis in [0i64, 1, -1] {
        native(Gather { axis }, &[&[3, 4, 5]], vec![i64s(&[0, -1, 2])], 1);
        native(
            Gather { axis },
            &[&[3, 4, 5]],
            vec![Tensor::scalar(1i64)],
            2,
        );
        native(
            Gather { axis },
            &[&[3, 4, 5]],
            vec![Tensor::from_vec(vec![2, 2], vec![0i64, 2, 1, -2]).unwrap()],
            3,
        );
    }
    // Pad in every mode, with negative (cropping) pads and axes.
    for mode in ["constant", "edge", "wrap", "reflect"] {
        native(
            Pad { mode: mode.into() },
            &[&[2, 3, 4]],
            vec![i64s(&[0, 1, 2, 1, 2, -1]), Tensor::scalar(0.5f32)],
            1,
        );
        let mut b = GraphBuilder::new("t");
        let x = input(&mut b, "x", &[2, 3, 4]);
        let pads = b.constant("pads", i64s(&[1, 3, 2, 2]));
        let axes = b.constant("axes", i64s(&[0, -1]));
        let y = b
            .node_opt(
                Pad { mode: mode.into() },
                &[Some(x), Some(pads), None, Some(axes)],
                1,
            )
            .unwrap()[0];
        b.output(y);
        let e = check(b.finish().unwrap(), vec![rng.tensor(&[2, 3, 4])]);
        assert!(e.fallback_ops().is_empty());
    }
    native(Expand::default(), &[&[3, 1]], vec![i64s(&[2, 1, 4])], 1);
    native(Expand::default(), &[&[2, 1, 4]], vec![i64s(&[3, 1])], 1);
}

#[test]
fn activations() {
    let ops: Vec<Op> = vec![
        Sigmoid::default().into(),
        Tanh::default().into(),
        Exp::default().into(),
        Log::default().into(),
        Reciprocal::default().into(),
        Floor::default().into(),
        Ceil::default().into(),
        Softplus::default().into(),
        Softsign::default().into(),
        LeakyRelu { alpha: 0.1 }.into(),
        Elu { alpha: 0.7 }.into(),
        HardSigmoid {
            alpha: 0.3,
            beta: 0.4,
        }
        .into(),
        HardSwish::default().into(),
        Swish { alpha: 1.5 }.into(),
        Erf::default().into(),
        Gelu::default().into(),
        Gelu {
            approximate: "tanh".into(),
        }
        .into(),
        Sin::default().into(),
        Cos::default().into(),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        native(op, &[&[3, 17]], vec![], i as u64 + 1);
    }
}

/// A CNN tail as the model fixtures have it: MaxPool → Conv → Relu → AveragePool → Reshape → Gemm → Softmax, all
/// native, with the intermediates in the arena.
#[test]
fn cnn_tail_runs_natively() {
    let mut rng = Rng(5);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[1, 4, 12, 12]);
    let p = b
        .node1(
            MaxPool {
                kernel_shape: vec![3, 3],
                strides: Some(vec![2, 2]),
                pads: Some(vec![1, 1, 1, 1]),
                ..Default::default()
            },
            &[x],
        )
        .unwrap();
    let w = b.constant("w", rng.tensor(&[6, 4, 3, 3]));
    let c = b
        .node1(conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1), &[p, w])
        .unwrap();
    let r = b.node1(Relu::default(), &[c]).unwrap();
    let a = b
        .node1(
            AveragePool {
                kernel_shape: vec![6, 6],
                ..Default::default()
            },
            &[r],
        )
        .unwrap();
    let shape = b.constant("shape", i64s(&[1, -1]));
    let f = b.node1(Reshape::default(), &[a, shape]).unwrap();
    let wg = b.constant("wg", rng.tensor(&[6, 3]));
    let g = b.node1(Gemm::default(), &[f, wg]).unwrap();
    let s = b.node1(Softmax::default(), &[g]).unwrap();
    b.output(s);
    let e = check(b.finish().unwrap(), vec![rng.tensor(&[1, 4, 12, 12])]);
    assert!(e.fallback_ops().is_empty());
}

/// Convolutions large enough to take several im2col column blocks (and several direct 1×1 blocks), strided,
/// dilated, grouped and depthwise, with bias; odd sizes so blocks end mid-row.
#[test]
fn conv_blocked_variants() {
    let mut rng = Rng(123);
    let cases: Vec<(Vec<usize>, Vec<usize>, Conv)> = vec![
        // Several column blocks: 3×3 over 64 channels (448 columns per block, 27×29 outputs), the same at stride 2
        // (28×29 outputs), and 1×1 over 256 channels (1024 columns per block, 40×41 outputs).
        (
            vec![1, 64, 27, 29],
            vec![4, 64, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1),
        ),
        (
            vec![1, 64, 55, 57],
            vec![3, 64, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), Some(vec![2, 2]), 1),
        ),
        (
            vec![1, 256, 40, 41],
            vec![3, 256, 1, 1],
            conv(&[1, 1], None, None, 1),
        ),
        // 3×3 over 16 channels, 31×33 outputs.
        (
            vec![1, 16, 31, 33],
            vec![8, 16, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1),
        ),
        // Pointwise over 64 channels, 47×49 outputs, batch 2.
        (
            vec![2, 64, 47, 49],
            vec![5, 64, 1, 1],
            conv(&[1, 1], None, None, 1),
        ),
        // 1×1 stride 2 (im2col subsampling).
        (
            vec![1, 40, 37, 35],
            vec![6, 40, 1, 1],
            conv(&[1, 1], None, Some(vec![2, 2]), 1),
        ),
        // 7×7 stride 2 pad 3 on 3 channels (a ResNet stem).
        (
            vec![1, 3, 45, 43],
            vec![4, 3, 7, 7],
            conv(&[7, 7], Some(vec![3, 3, 3, 3]), Some(vec![2, 2]), 1),
        ),
        // Dilated, asymmetric pads.
        (
            vec![1, 20, 29, 31],
            vec![3, 20, 3, 3],
            Conv {
                kernel_shape: Some(vec![3, 3]),
                dilations: Some(vec![2, 3]),
                pads: Some(vec![2, 0, 1, 3]),
                ..Default::default()
            },
        ),
        // Grouped 3×3, 4 groups.
        (
            vec![1, 32, 21, 23],
            vec![16, 8, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 4),
        ),
        // Depthwise stride 2, and dilated depthwise.
        (
            vec![2, 12, 19, 17],
            vec![12, 1, 3, 3],
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), Some(vec![2, 2]), 12),
        ),
        (
            vec![1, 6, 15, 16],
            vec![6, 1, 3, 3],
            Conv {
                kernel_shape: Some(vec![3, 3]),
                dilations: Some(vec![2, 2]),
                pads: Some(vec![2, 1, 2, 3]),
                group: 6,
                ..Default::default()
            },
        ),
        // 3-D.
        (
            vec![1, 4, 6, 7, 8],
            vec![3, 4, 3, 3, 3],
            Conv {
                kernel_shape: Some(vec![3, 3, 3]),
                pads: Some(vec![1, 0, 1, 1, 1, 0]),
                strides: Some(vec![1, 2, 1]),
                ..Default::default()
            },
        ),
    ];
    for (i, (x, w, op)) in cases.into_iter().enumerate() {
        let consts = vec![rng.tensor(&w), rng.tensor(&[w[0]])];
        native(op, &[&x], consts, i as u64 + 50);
    }
}

/// Conv → BatchNormalization → Add(residual) → Relu is one step: BatchNorm folds into the weights, the Add and the
/// Relu run in the Conv's epilogue. The residual is computed before the Conv; an Add whose other operand comes
/// later is not fused (and still right).
#[test]
fn conv_batchnorm_residual_relu_fuse() {
    let mut rng = Rng(606);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[1, 8, 9, 10]);
    // The shortcut first, then the main branch (as ResNet's ONNX graphs order them, or the reverse).
    let ws = b.constant("ws", rng.tensor(&[8, 8, 1, 1]));
    let short = b.node1(conv(&[1, 1], None, None, 1), &[x, ws]).unwrap();
    let w = b.constant("w", rng.tensor(&[8, 8, 3, 3]));
    let bias = b.constant("bias", rng.tensor(&[8]));
    let c = b
        .node1(
            conv(&[3, 3], Some(vec![1, 1, 1, 1]), None, 1),
            &[x, w, bias],
        )
        .unwrap();
    let scale = b.constant("scale", rng.tensor(&[8]));
    let shift = b.constant("shift", rng.tensor(&[8]));
    let mean = b.constant("mean", rng.tensor(&[8]));
    let var: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.25).collect();
    let var = b.constant("var", Tensor::from_vec(vec![8], var).unwrap());
    let bn = b
        .node1(BatchNormalization::default(), &[c, scale, shift, mean, var])
        .unwrap();
    let add = b.node1(Sum::default(), &[short, bn]).unwrap();
    let r = b.node1(Relu::default(), &[add]).unwrap();
    // A second block whose Add's other operand is computed after the Conv: not fused.
    let w2 = b.constant("w2", rng.tensor(&[8, 8, 1, 1]));
    let c2 = b.node1(conv(&[1, 1], None, None, 1), &[r, w2]).unwrap();
    let late = b.node1(Sigmoid::default(), &[r]).unwrap();
    let add2 = b.node1(Add::default(), &[c2, late]).unwrap();
    b.output(add2);
    let e = check(b.finish().unwrap(), vec![rng.tensor(&[1, 8, 9, 10])]);
    assert!(e.fallback_ops().is_empty());
    // Conv(shortcut), Conv+BN+Add+Relu, Conv, Sigmoid, Add.
    assert_eq!(e.num_steps(), 5);
}

/// Pow with broadcasting (f32 base and exponent; positive bases so most results are finite), and an inference
/// Dropout that lists its (unused) mask output.
#[test]
fn pow_and_dropout_with_mask() {
    let mut rng = Rng(1234);
    for (i, (a, b)) in PAIRS.iter().enumerate() {
        let mut g = GraphBuilder::new("t");
        let x = input(&mut g, "x", a);
        let e = input(&mut g, "e", b);
        let ax = g.node1(Abs::default(), &[x]).unwrap();
        let p = g.node1(Pow::default(), &[ax, e]).unwrap();
        g.output(p);
        let ex = check(g.finish().unwrap(), vec![rng.tensor(a), rng.tensor(b)]);
        assert!(ex.fallback_ops().is_empty(), "case {i}");
    }
    let mut g = GraphBuilder::new("t");
    let x = input(&mut g, "x", &[3, 4]);
    let outs = g.node_opt(Dropout::default(), &[Some(x)], 2).unwrap();
    let y = g.node1(Relu::default(), &[outs[0]]).unwrap();
    g.output(y);
    let e = check(g.finish().unwrap(), vec![rng.tensor(&[3, 4])]);
    assert!(e.fallback_ops().is_empty());
}

/// Attention as the pattern rules produce it: 4-D Q, K, V, grouped key/value heads, additive masks of every rank
/// (some shorter than the keys), causal, default and explicit scale.
#[test]
fn attention_variants() {
    /// (batch, q heads, kv heads, q seq, kv seq, mask shape, causal)
    type Case = (usize, usize, usize, usize, usize, Option<Vec<usize>>, bool);
    let cases: Vec<Case> = vec![
        // (batch, q heads, kv heads, q seq, kv seq, mask shape, causal)
        (1, 2, 2, 5, 5, None, false),
        (2, 4, 2, 3, 7, Some(vec![2, 1, 3, 7]), false),
        (1, 3, 1, 6, 6, Some(vec![6, 6]), true),
        (2, 2, 2, 4, 9, Some(vec![9]), false),
        (1, 2, 1, 4, 8, Some(vec![1, 4, 5]), false),
        (1, 1, 1, 7, 7, None, true),
    ];
    for (i, (b, hq, hkv, sq, kv, mask, causal)) in cases.into_iter().enumerate() {
        let (d, dv) = (4 + i % 3, 3 + i % 2);
        let op = Attention {
            is_causal: causal as i64,
            scale: (i % 2 == 1).then_some(0.3),
            ..Default::default()
        };
        let mut shapes = vec![
            vec![b, hq, sq, d],
            vec![b, hkv, kv, d],
            vec![b, hkv, kv, dv],
        ];
        shapes.extend(mask);
        let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        native(op, &refs, vec![], i as u64 + 300);
    }
    // Heads large enough for the `gemm` products and, with threads, one head per task (1, 2 and 3 threads agree
    // bit for bit in `check`).
    let op = Attention {
        is_causal: 1,
        ..Default::default()
    };
    let shapes: [&[usize]; 4] = [
        &[2, 4, 64, 32],
        &[2, 2, 96, 32],
        &[2, 2, 96, 24],
        &[2, 1, 64, 96],
    ];
    native(op, &shapes, vec![], 399);
}

/// Shape computations of dynamic-shape models (Shape → Gather → Unsqueeze → Concat → Reshape) and an embedding
/// Gather with run-time indices run as tensor kernels, not on the reference.
#[test]
fn shape_ops_run_natively() {
    let mut rng = Rng(77);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[2, 3, 4]);
    let s = b
        .node1(
            jiuzhou_ir::ops::Shape {
                start: 0,
                end: Some(-1),
            },
            &[x],
        )
        .unwrap();
    let i0 = b.constant("i0", Tensor::scalar(0i64));
    let d0 = b.node1(Gather { axis: 0 }, &[s, i0]).unwrap();
    let ax = b.constant("ax", i64s(&[0]));
    let u = b.node1(Unsqueeze::default(), &[d0, ax]).unwrap();
    let m1 = b.constant("m1", i64s(&[-1]));
    let shape = b.node1(Concat { axis: 0 }, &[u, m1]).unwrap();
    let r = b.node1(Reshape::default(), &[x, shape]).unwrap();
    let table = input(&mut b, "table", &[5, 3]);
    let idx = b.input("idx", TensorType::known(DType::I64, &[2, 2]));
    let emb = b.node1(Gather { axis: 0 }, &[table, idx]).unwrap();
    b.output(r);
    b.output(emb);
    let g = b.finish().unwrap();
    let inputs: Vec<Value> = vec![
        Value::Tensor(Arc::new(rng.tensor(&[2, 3, 4]))),
        Value::Tensor(Arc::new(rng.tensor(&[5, 3]))),
        Value::Tensor(Arc::new(
            Tensor::from_vec(vec![2, 2], vec![4i64, 0, -1, 2]).unwrap(),
        )),
    ];
    let want = Interpreter::default().run(&g, inputs.clone()).unwrap();
    let exec = CpuExecutable::compile(Arc::new(g)).unwrap();
    let got = exec.run(inputs).unwrap();
    assert_eq!(got, want);
    assert!(exec.fallback_ops().is_empty(), "{:?}", exec.fallback_ops());
}

/// The memory plan shares memory: reshapes of arena values are views (no copy) and the inputs of a Concat along
/// an axis with one position before it are computed into their slices of its output; an input already placed
/// elsewhere, a repeated input, a graph input and a Concat with more than one position before its axis are
/// copied. Results match the reference (and 1, 2 and 3 threads bit for bit).
#[test]
fn views_and_concat_in_place() {
    let mut rng = Rng(4242);
    let mut b = GraphBuilder::new("t");
    let x = input(&mut b, "x", &[1, 3, 4, 5]);
    let a = b.node1(Relu::default(), &[x]).unwrap();
    let n = b.node1(Neg::default(), &[x]).unwrap();
    // Both in place.
    let c = b.node1(Concat { axis: 1 }, &[a, n]).unwrap();
    // `c` in place, `a` already inside `c` and the graph input `x`: copied.
    let d = b.node1(Concat { axis: -3 }, &[c, a, x]).unwrap();
    // A view of `d`, then its view: both share `d`'s memory.
    let s1 = b.constant("s1", Tensor::vector(vec![1i64, 12, 20]));
    let r = b.node1(Reshape::default(), &[d, s1]).unwrap();
    let fl = b.node1(Flatten { axis: 1 }, &[r]).unwrap();
    // A view of a graph input: copied.
    let s2 = b.constant("s2", Tensor::vector(vec![3i64, 20]));
    let xr = b.node1(Reshape::default(), &[x, s2]).unwrap();
    // Two positions before the axis: copied.
    let e = b.node1(Concat { axis: 1 }, &[xr, xr]).unwrap();
    let s3 = b.constant("s3", Tensor::vector(vec![1i64, 120]));
    let er = b.node1(Reshape::default(), &[e, s3]).unwrap();
    let y = b.node1(Concat { axis: 1 }, &[fl, er]).unwrap();
    let z = b.node1(Abs::default(), &[y]).unwrap();
    b.output(z);
    // `c` is read after `d` is computed: its memory (inside `d`) must stay intact.
    let w = b.node1(Sqrt::default(), &[c]).unwrap();
    b.output(w);
    let exec = check(b.finish().unwrap(), vec![rng.tensor(&[1, 3, 4, 5])]);
    assert!(exec.fallback_ops().is_empty());
    // r, fl, er are views (xr reads a graph input); a, n into c; c into d; fl and er into y.
    assert_eq!(exec.views(), 3);
    assert_eq!(exec.concat_inputs_in_place(), 5);
}
