//! Criterion benchmarks of the CPU target's kernel families: matmul/gemm, convolution (3×3, pointwise,
//! depthwise), elementwise (broadcast binary, unary), BatchNormalization and pooling, at one thread and at every
//! core.
//!
//! Each case is a one-node graph compiled with [`CpuExecutable::compile_with`] and run through the executable, so it
//! measures what a model step costs (kernel, output allocation, dispatch) and stays valid however the kernels are
//! organised inside the crate. Run: `cargo bench -p jiuzhou-target-cpu --bench kernels` (`-- --test` runs each
//! case once, as a smoke test). Numbers are only meaningful on a quiet machine.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Graph, GraphBuilder, Op, Tensor, TensorType, Value, ValueId};
use jiuzhou_runtime::Executable;
use jiuzhou_target_cpu::{CpuExecutable, CpuOptions};

/// Deterministic data in [-1, 1).
fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), data).unwrap()
}

/// A one-node graph over inputs of `shapes` and constants `consts`, and random inputs for it.
fn one_node(op: impl Into<Op>, shapes: &[&[usize]], consts: Vec<Tensor>) -> (Graph, Vec<Value>) {
    let mut b = GraphBuilder::new("bench");
    let mut ids: Vec<ValueId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| b.input(&format!("x{i}"), TensorType::known(DType::F32, s)))
        .collect();
    for (i, c) in consts.into_iter().enumerate() {
        ids.push(b.constant(&format!("c{i}"), c));
    }
    let out = b.node1(op, &ids).unwrap();
    b.output(out);
    let inputs = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Value::Tensor(Arc::new(tensor(s, i as u64 + 1))))
        .collect();
    (b.finish().unwrap(), inputs)
}

/// Benchmarks the graph at one thread and at every core; `flops` sets the throughput unit (elements when 0).
fn bench(c: &mut Criterion, family: &str, name: &str, case: (Graph, Vec<Value>), flops: u64) {
    let (graph, inputs) = case;
    let graph = Arc::new(graph);
    let mut group = c.benchmark_group(family);
    if flops > 0 {
        group.throughput(Throughput::Elements(flops));
    }
    for threads in [1, 0] {
        let exec = CpuExecutable::compile_with(graph.clone(), &CpuOptions { threads }).unwrap();
        let label = format!("{name}/t{}", exec.threads());
        group.bench_function(label, |b| {
            b.iter(|| black_box(exec.run(black_box(inputs.clone())).unwrap()))
        });
    }
    group.finish();
}

fn conv(kernel: &[i64], pads: &[i64], group: i64) -> Conv {
    Conv {
        kernel_shape: Some(kernel.to_vec()),
        pads: Some(pads.to_vec()),
        group,
        ..Default::default()
    }
}

fn matmul(c: &mut Criterion) {
    for (m, k, n) in [(256, 256, 256), (1, 768, 768), (64, 1024, 512)] {
        let case = one_node(MatMul::default(), &[&[m, k]], vec![tensor(&[k, n], 7)]);
        bench(
            c,
            "matmul",
            &format!("{m}x{k}x{n}"),
            case,
            (2 * m * k * n) as u64,
        );
    }
    // Batched attention-style product.
    let case = one_node(MatMul::default(), &[&[8, 64, 64], &[8, 64, 64]], vec![]);
    bench(c, "matmul", "batch8x64x64x64", case, 2 * 8 * 64 * 64 * 64);
    // Gemm with a constant (pre-packed) weight and bias.
    let case = one_node(
        Gemm {
            transB: 1,
            ..Default::default()
        },
        &[&[16, 512]],
        vec![tensor(&[1000, 512], 3), tensor(&[1000], 4)],
    );
    bench(c, "matmul", "gemm16x512x1000", case, 2 * 16 * 512 * 1000);
}

fn convolution(c: &mut Criterion) {
    // (name, input, weight, op, output height and width): ResNet-50 shapes (the 7×7/2 stem, 3×3 at 56², 14² and
    // 7², a stride-2 3×3, a 1×1) and a depthwise 3×3. On AVX2+FMA CPUs: the stem and the stride-2 3×3 run the direct
    // kernel, stride-1 3×3 Winograd (F(4×4) at 56² and 14², F(2×2) at 7²), the 1×1 the packed GEMM
    // (`jiuzhou compile --stats` lists them as `conv_kernels`).
    let stem = Conv {
        strides: Some(vec![2, 2]),
        ..conv(&[7, 7], &[3, 3, 3, 3], 1)
    };
    type Case = (&'static str, [usize; 4], [usize; 4], Conv, [usize; 2]);
    let cases: [Case; 7] = [
        (
            "7x7s2_3x224x224",
            [1, 3, 224, 224],
            [64, 3, 7, 7],
            stem,
            [112, 112],
        ),
        (
            "3x3_64x56x56",
            [1, 64, 56, 56],
            [64, 64, 3, 3],
            conv(&[3, 3], &[1, 1, 1, 1], 1),
            [56, 56],
        ),
        (
            "3x3_256x14x14",
            [1, 256, 14, 14],
            [256, 256, 3, 3],
            conv(&[3, 3], &[1, 1, 1, 1], 1),
            [14, 14],
        ),
        (
            "3x3s2_128x56x56",
            [1, 128, 56, 56],
            [128, 128, 3, 3],
            Conv {
                strides: Some(vec![2, 2]),
                ..conv(&[3, 3], &[1, 1, 1, 1], 1)
            },
            [28, 28],
        ),
        (
            "3x3_512x7x7",
            [1, 512, 7, 7],
            [512, 512, 3, 3],
            conv(&[3, 3], &[1, 1, 1, 1], 1),
            [7, 7],
        ),
        (
            "1x1_256x28x28",
            [1, 256, 28, 28],
            [128, 256, 1, 1],
            conv(&[1, 1], &[0, 0, 0, 0], 1),
            [28, 28],
        ),
        (
            "dw3x3_128x56x56",
            [1, 128, 56, 56],
            [128, 1, 3, 3],
            conv(&[3, 3], &[1, 1, 1, 1], 128),
            [56, 56],
        ),
    ];
    for (name, x, w, op, [oh, ow]) in cases {
        let flops = 2 * w.iter().product::<usize>() * oh * ow;
        let case = one_node(op, &[&x], vec![tensor(&w, 5), tensor(&[w[0]], 6)]);
        bench(c, "conv", name, case, flops as u64);
    }
}

fn elementwise(c: &mut Criterion) {
    let shape: &[usize] = &[1, 64, 112, 112];
    let n = shape.iter().product::<usize>() as u64;
    bench(
        c,
        "elementwise",
        "add_same",
        one_node(Add::default(), &[shape, shape], vec![]),
        n,
    );
    bench(
        c,
        "elementwise",
        "mul_channel",
        one_node(Mul::default(), &[shape, &[64, 1, 1]], vec![]),
        n,
    );
    bench(
        c,
        "elementwise",
        "relu",
        one_node(Relu::default(), &[shape], vec![]),
        n,
    );
    let bn = one_node(
        BatchNormalization::default(),
        &[shape],
        vec![
            tensor(&[64], 1),
            tensor(&[64], 2),
            tensor(&[64], 3),
            Tensor::from_vec(vec![64], vec![1.0f32; 64]).unwrap(),
        ],
    );
    bench(c, "elementwise", "batchnorm", bn, n);
}

fn pooling(c: &mut Criterion) {
    // Inception v2's pools: a strided max pool with end padding, a padded 3×3 average over many small planes.
    let x: &[usize] = &[1, 64, 112, 112];
    let max = MaxPool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        pads: Some(vec![0, 0, 1, 1]),
        ..Default::default()
    };
    let n = 64 * 56 * 56;
    bench(c, "pooling", "max_3x3s2", one_node(max, &[x], vec![]), n);
    let x: &[usize] = &[1, 576, 14, 14];
    let avg = AveragePool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![1, 1]),
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let n = 576 * 14 * 14;
    bench(c, "pooling", "avg_3x3s1p1", one_node(avg, &[x], vec![]), n);
}

criterion_group!(kernels, matmul, convolution, elementwise, pooling);
criterion_main!(kernels);
