//! Differential tests: every CPU kernel against the reference interpreter on random data, with broadcasting, odd
//! sizes (not multiples of the vector width) and chains that go through the arena.

use std::sync::Arc;

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Graph, GraphBuilder, Op, Tensor, TensorType, Value, ValueId};
use jiuzhou_runtime::Executable;
use jiuzhou_target_cpu::{CpuExecutable, CpuOptions};
use jiuzhou_target_reference::Interpreter;

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }

    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(shape.to_vec(), (0..n).map(|_| self.f32()).collect()).unwrap()
    }
}

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

/// Runs `graph` on both targets with `inputs` and compares every output (and the CPU outputs at 1, 2 and 3 threads
/// bit for bit); returns the CPU executable (compiled for every core).
fn check(graph: Graph, inputs: Vec<Tensor>) -> CpuExecutable {
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
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 + 1e-4 * b.abs();
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
/// convolutions; a Sigmoid has no kernel and runs on the reference, listed as a fallback.
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
    let s = b.node1(Sigmoid::default(), &[m]).unwrap();
    let w2 = b.constant("w2", rng.tensor(&[4, 8, 1, 1]));
    let c2 = b.node1(conv(&[1, 1], None, None, 1), &[s, w2]).unwrap();
    let r2 = b.node1(Relu::default(), &[c2]).unwrap();
    b.output(r2);
    let e = check(b.finish().unwrap(), vec![rng.tensor(&[1, 3, 10, 10])]);
    let ops: Vec<&str> = e.fallback_ops().iter().map(|f| f.op).collect();
    assert_eq!(ops, ["Sigmoid"]);
    // Conv+Relu, Add, Mul, Sigmoid, Conv+Relu.
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
    // MatMul: one product per task (6 products), one product split by gemm (2-D right operand, batch of 1).
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
    // Conv: 2 images (one block per task at 2 threads, split by gemm and im2col at 3), grouped, depthwise, each
    // with a fused Relu.
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
        let e = check(b.finish().unwrap(), vec![rng.tensor(xs)]);
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
}
