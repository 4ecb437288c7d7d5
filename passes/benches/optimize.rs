//! How long the e-graph optimizer takes on a ResNet-50-shaped and a BERT-layer-shaped graph, both built in code
//! (the passes never read ONNX): the "under 1 s each on one core" is measured here, not by a timed test.
//!
//! `resnet50_fills` is the same ResNet-50 with every weight a `ConstantOfShape(shape)` fill, as in onnx's light
//! zoo model (`light_resnet50.onnx`, 415 nodes): the fills fold into real tensors first.
//!
//! `cargo bench -p jiuzhou-passes --bench optimize` measures; `-- --test` runs each case once as a smoke test.
//! Both graphs have the real models' structure and weight shapes (random weights): ResNet-50 v1 with its 53
//! Conv+BatchNormalization pairs, 16 residual Adds and 49 Relus, and one BERT-base encoder layer (hidden 768, 12
//! heads, sequence 128) with LayerNorm and GELU written out as ONNX exporters emit them.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use jiuzhou_ir::{DType, Graph, GraphBuilder, Op, Tensor, TensorType, ValueId, ops};
use jiuzhou_passes::egraph::{ConstEvaluator, OpCountCost, Options, optimize};
use jiuzhou_target_reference::Interpreter;

/// Constant folding with the reference semantics, as the driver does it.
struct ReferenceEvaluator;

impl ConstEvaluator for ReferenceEvaluator {
    fn eval(&self, op: &Op, inputs: &[Option<Arc<Tensor>>], n: usize) -> Option<Vec<Arc<Tensor>>> {
        let vals = Interpreter::default().eval_op(op, inputs, n).ok()?;
        vals.into_iter().map(|v| v.as_tensor().cloned()).collect()
    }
}

/// Deterministic weights in [-0.05, 0.05).
struct Weights {
    state: u64,
    count: usize,
    /// Whether weights are `ConstantOfShape(shape)` fills (as in onnx's light zoo models) instead of constants.
    fills: bool,
}

impl Weights {
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                self.state = self
                    .state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect::<Vec<f32>>();
        Tensor::from_vec(shape.to_vec(), data).expect("sizes match")
    }

    fn constant(&mut self, b: &mut GraphBuilder, shape: &[usize]) -> ValueId {
        self.count += 1;
        if self.fills {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let s = b.constant(&format!("w{}_shape", self.count), Tensor::vector(dims));
            let fill = ops::ConstantOfShape {
                value: Some(Arc::new(Tensor::vector(vec![0.02f32]))),
            };
            return b.node1(fill, &[s]).expect("fill");
        }
        let t = self.tensor(shape);
        b.constant(&format!("w{}", self.count), t)
    }
}

#[allow(clippy::too_many_arguments)] // The layer's hyper-parameters, as in a model definition.
fn conv_bn(
    b: &mut GraphBuilder,
    w: &mut Weights,
    x: ValueId,
    cin: usize,
    cout: usize,
    k: usize,
    stride: i64,
    relu: bool,
) -> ValueId {
    let p = (k / 2) as i64;
    let conv = ops::Conv {
        kernel_shape: Some(vec![k as i64; 2]),
        pads: Some(vec![p; 4]),
        strides: Some(vec![stride; 2]),
        ..Default::default()
    };
    let wt = w.constant(b, &[cout, cin, k, k]);
    let y = b.node1(conv, &[x, wt]).expect("conv");
    let scale = w.constant(b, &[cout]);
    let bias = w.constant(b, &[cout]);
    let mean = w.constant(b, &[cout]);
    let var = {
        w.count += 1;
        b.constant(&format!("w{}", w.count), Tensor::vector(vec![1.0f32; cout]))
    };
    let y = b
        .node1(
            ops::BatchNormalization::default(),
            &[y, scale, bias, mean, var],
        )
        .expect("bn");
    if relu {
        b.node1(ops::Relu::default(), &[y]).expect("relu")
    } else {
        y
    }
}

/// ResNet-50 v1: stem, 3-4-6-3 bottleneck blocks, global pooling, a Gemm classifier.
fn resnet50(fills: bool) -> Graph {
    let mut w = Weights {
        state: 1,
        count: 0,
        fills,
    };
    let mut b = GraphBuilder::new("resnet50");
    let x = b.input("x", TensorType::known(DType::F32, &[1, 3, 224, 224]));
    let mut y = conv_bn(&mut b, &mut w, x, 3, 64, 7, 2, true);
    let pool = ops::MaxPool {
        kernel_shape: vec![3, 3],
        pads: Some(vec![1; 4]),
        strides: Some(vec![2, 2]),
        ..Default::default()
    };
    y = b.node1(pool, &[y]).expect("maxpool");
    let mut cin = 64;
    for (stage, blocks) in [3usize, 4, 6, 3].into_iter().enumerate() {
        let mid = 64 << stage;
        let cout = mid * 4;
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let a = conv_bn(&mut b, &mut w, y, cin, mid, 1, 1, true);
            let a = conv_bn(&mut b, &mut w, a, mid, mid, 3, stride, true);
            let a = conv_bn(&mut b, &mut w, a, mid, cout, 1, 1, false);
            let shortcut = if block == 0 {
                conv_bn(&mut b, &mut w, y, cin, cout, 1, stride, false)
            } else {
                y
            };
            let s = b.node1(ops::Add::default(), &[a, shortcut]).expect("add");
            y = b.node1(ops::Relu::default(), &[s]).expect("relu");
            cin = cout;
        }
    }
    let y = b
        .node1(ops::GlobalAveragePool::default(), &[y])
        .expect("gap");
    let y = b.node1(ops::Flatten::default(), &[y]).expect("flatten");
    let fc = w.constant(&mut b, &[1000, 2048]);
    let fc_b = w.constant(&mut b, &[1000]);
    let gemm = ops::Gemm {
        transB: 1,
        ..Default::default()
    };
    let y = b.node1(gemm, &[y, fc, fc_b]).expect("gemm");
    b.output(y);
    b.finish().expect("a valid graph")
}

fn scalar(b: &mut GraphBuilder, name: &str, v: f32) -> ValueId {
    b.constant(name, Tensor::scalar(v))
}

fn ints(b: &mut GraphBuilder, name: &str, v: &[i64]) -> ValueId {
    b.constant(name, Tensor::vector(v.to_vec()))
}

/// `x·W + bias` as exporters write a Linear layer.
fn linear(b: &mut GraphBuilder, w: &mut Weights, x: ValueId, k: usize, n: usize) -> ValueId {
    let wt = w.constant(b, &[k, n]);
    let bias = w.constant(b, &[n]);
    let y = b.node1(ops::MatMul::default(), &[x, wt]).expect("matmul");
    b.node1(ops::Add::default(), &[y, bias]).expect("add")
}

/// LayerNorm over the last axis, decomposed (ReduceMean, Sub, Pow, ReduceMean, Add ε, Sqrt, Div, Mul γ, Add β).
fn layer_norm(b: &mut GraphBuilder, w: &mut Weights, x: ValueId, n: usize, tag: &str) -> ValueId {
    let axes = ints(b, &format!("{tag}_axes"), &[-1]);
    let mean = b
        .node1(ops::ReduceMean::default(), &[x, axes])
        .expect("mean");
    let d = b.node1(ops::Sub::default(), &[x, mean]).expect("sub");
    let two = scalar(b, &format!("{tag}_two"), 2.0);
    let sq = b.node1(ops::Pow::default(), &[d, two]).expect("pow");
    let var = b
        .node1(ops::ReduceMean::default(), &[sq, axes])
        .expect("var");
    let eps = scalar(b, &format!("{tag}_eps"), 1e-12);
    let v = b.node1(ops::Add::default(), &[var, eps]).expect("add");
    let s = b.node1(ops::Sqrt::default(), &[v]).expect("sqrt");
    let y = b.node1(ops::Div::default(), &[d, s]).expect("div");
    let gamma = w.constant(b, &[n]);
    let beta = w.constant(b, &[n]);
    let y = b.node1(ops::Mul::default(), &[y, gamma]).expect("mul");
    b.node1(ops::Add::default(), &[y, beta]).expect("add")
}

/// One BERT-base encoder layer: self-attention with a mask, residual + LayerNorm, GELU feed-forward, residual +
/// LayerNorm.
fn bert_layer() -> Graph {
    let (seq, hidden, heads) = (128usize, 768usize, 12usize);
    let dh = hidden / heads;
    let mut w = Weights {
        state: 2,
        count: 0,
        fills: false,
    };
    let mut b = GraphBuilder::new("bert_layer");
    let x = b.input("x", TensorType::known(DType::F32, &[1, seq, hidden]));
    let mask = b.input("mask", TensorType::known(DType::F32, &[1, 1, 1, seq]));
    let split = ints(
        &mut b,
        "split_shape",
        &[1, seq as i64, heads as i64, dh as i64],
    );
    let merge = ints(&mut b, "merge_shape", &[1, seq as i64, hidden as i64]);
    let heads_first = |b: &mut GraphBuilder, t: ValueId, perm: &[i64]| {
        let r = b
            .node1(ops::Reshape::default(), &[t, split])
            .expect("reshape");
        b.node1(
            ops::Transpose {
                perm: Some(perm.to_vec()),
            },
            &[r],
        )
        .expect("transpose")
    };
    let q = linear(&mut b, &mut w, x, hidden, hidden);
    let k = linear(&mut b, &mut w, x, hidden, hidden);
    let v = linear(&mut b, &mut w, x, hidden, hidden);
    let q = heads_first(&mut b, q, &[0, 2, 1, 3]);
    let k = heads_first(&mut b, k, &[0, 2, 3, 1]);
    let v = heads_first(&mut b, v, &[0, 2, 1, 3]);
    let scores = b.node1(ops::MatMul::default(), &[q, k]).expect("qk");
    let scale = scalar(&mut b, "scale", (dh as f32).sqrt());
    let scores = b.node1(ops::Div::default(), &[scores, scale]).expect("div");
    let scores = b.node1(ops::Add::default(), &[scores, mask]).expect("mask");
    let probs = b
        .node1(ops::Softmax { axis: -1 }, &[scores])
        .expect("softmax");
    let ctx = b.node1(ops::MatMul::default(), &[probs, v]).expect("pv");
    let ctx = b
        .node1(
            ops::Transpose {
                perm: Some(vec![0, 2, 1, 3]),
            },
            &[ctx],
        )
        .expect("transpose");
    let ctx = b
        .node1(ops::Reshape::default(), &[ctx, merge])
        .expect("reshape");
    let attn = linear(&mut b, &mut w, ctx, hidden, hidden);
    let h = b.node1(ops::Add::default(), &[attn, x]).expect("residual");
    let h = layer_norm(&mut b, &mut w, h, hidden, "ln1");
    let f = linear(&mut b, &mut w, h, hidden, 4 * hidden);
    // GELU as exported: x · 0.5 · (1 + erf(x / √2)).
    let sqrt2 = scalar(&mut b, "sqrt2", std::f32::consts::SQRT_2);
    let half = scalar(&mut b, "half", 0.5);
    let one = scalar(&mut b, "one", 1.0);
    let e = b.node1(ops::Div::default(), &[f, sqrt2]).expect("div");
    let e = b.node1(ops::Erf::default(), &[e]).expect("erf");
    let e = b.node1(ops::Add::default(), &[e, one]).expect("add");
    let g = b.node1(ops::Mul::default(), &[f, e]).expect("mul");
    let g = b.node1(ops::Mul::default(), &[g, half]).expect("mul");
    let o = linear(&mut b, &mut w, g, 4 * hidden, hidden);
    let o = b.node1(ops::Add::default(), &[o, h]).expect("residual");
    let y = layer_norm(&mut b, &mut w, o, hidden, "ln2");
    b.output(y);
    b.finish().expect("a valid graph")
}

fn bench(c: &mut Criterion) {
    let ev: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    let options = Options::default();
    for (name, graph) in [
        ("resnet50", resnet50(false)),
        ("resnet50_fills", resnet50(true)),
        ("bert_layer", bert_layer()),
    ] {
        let (_, stats) =
            optimize(&graph, &OpCountCost, Some(ev.clone()), &options).expect("it optimizes");
        eprintln!(
            "{name}: {} -> {} nodes, {} e-nodes, {} iterations, stopped: {}",
            stats.imported_nodes,
            stats.optimized_nodes,
            stats.egraph_nodes,
            stats.iterations,
            stats.stop_reason
        );
        let mut group = c.benchmark_group("optimize");
        group.sample_size(10);
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                optimize(black_box(&graph), &OpCountCost, Some(ev.clone()), &options)
                    .expect("it optimizes")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
