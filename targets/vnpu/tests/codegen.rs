//! Code generation against the reference target: one-node and small graphs with odd shapes (none a multiple of
//! any tile), compiled for every shipped profile with every node forced onto the NPU, run on the simulator, and
//! compared with the reference interpreter.
//!
//! Tolerances are explicit: the cube rounds its inputs to f16 (ε = 2⁻¹¹) or bf16 (ε = 2⁻⁸) and accumulates
//! exactly in f32, so each output of a K-deep product is within `K·(2ε+ε²)·max|a|·max|b|` (plus f32 summation
//! noise) of the exact one; on top of that, every float output has cosine similarity ≥ 0.999 against the
//! reference on f16 profiles and ≥ 0.99 on bf16 ones. Vector-unit kernels compute in f32 and must match to 1e-5
//! relative.

use std::sync::Arc;

use jiuzhou_ir::{DType as IrType, Dim, Graph, GraphBuilder, Op, Tensor, TensorType, Value, ops};
use jiuzhou_runtime::Executable;
use jiuzhou_target_reference::ReferenceExecutable;
use jiuzhou_target_vnpu::{DType, HostCompiler, Options, Profile, VnpuExecutable};

const PROFILES: [&str; 2] = ["default", "vector_heavy"];

/// Host regions run on the reference interpreter.
struct RefHost;

impl HostCompiler for RefHost {
    fn compile(&self, graph: Graph) -> Result<Box<dyn Executable>, String> {
        Ok(Box::new(ReferenceExecutable::new(Arc::new(graph))))
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape.to_vec(), values(n, seed)).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_tensor().unwrap().as_slice::<f32>().unwrap().to_vec()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += f64::from(*x) * f64::from(*y);
        aa += f64::from(*x) * f64::from(*x);
        bb += f64::from(*y) * f64::from(*y);
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

struct Run {
    outputs: Vec<Vec<f32>>,
    expected: Vec<Vec<f32>>,
    exec: VnpuExecutable,
}

/// Compiles `graph` for `profile` with everything possible on the NPU, checks that the nodes listed in
/// `npu_ops` are there, runs it on `inputs` and on the reference.
fn run(graph: Graph, profile: &str, inputs: Vec<Tensor>, npu_ops: &[&str]) -> Run {
    let graph = Arc::new(graph);
    let options = Options {
        host_cost: false,
        ..Options::default()
    };
    let exec = VnpuExecutable::compile(
        graph.clone(),
        Profile::by_name(profile).unwrap(),
        Arc::new(RefHost),
        &options,
    )
    .unwrap_or_else(|e| panic!("{profile}: {e}"));
    for p in &exec.placement().nodes {
        if npu_ops.contains(&p.op) {
            assert!(
                p.npu,
                "{profile}: {} ({}) fell back: {:?}",
                p.name, p.op, p.reason
            );
        }
    }
    let vals: Vec<Value> = inputs
        .into_iter()
        .map(|t| Value::Tensor(Arc::new(t)))
        .collect();
    let outputs = exec
        .run(vals.clone())
        .unwrap_or_else(|e| panic!("{profile}: {e}"))
        .iter()
        .map(f32s)
        .collect();
    let expected = ReferenceExecutable::new(graph)
        .run(vals)
        .unwrap()
        .iter()
        .map(f32s)
        .collect();
    Run {
        outputs,
        expected,
        exec,
    }
}

fn eps(profile: &str) -> f64 {
    let p = Profile::by_name(profile).unwrap();
    match p
        .matrix
        .input_dtypes
        .iter()
        .find(|d| matches!(d, DType::F16 | DType::BF16))
    {
        Some(DType::F16) => 2f64.powi(-11),
        _ => 2f64.powi(-8),
    }
}

fn min_cosine(profile: &str) -> f64 {
    if eps(profile) < 2f64.powi(-10) {
        0.999
    } else {
        0.99
    }
}

/// Checks a cube result: elementwise within the rounding bound of a `k`-deep product with inputs bounded by
/// `amax`·`bmax`, and the cosine threshold.
fn check_cube(r: &Run, profile: &str, k: usize, amax: f64, what: &str) {
    let e = eps(profile);
    let tol = k as f64 * (2.0 * e + e * e) * amax + 1e-4;
    for (got, want) in r.outputs.iter().zip(&r.expected) {
        assert_eq!(got.len(), want.len(), "{what} on {profile}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - f64::from(*w)).abs() <= tol,
                "{what} on {profile}: element {i} = {g}, reference {w} (tolerance {tol})"
            );
        }
        let c = cosine(got, want);
        assert!(c >= min_cosine(profile), "{what} on {profile}: cosine {c}");
    }
}

/// Checks every output `i` elementwise within `tol(i)` of the reference (lengths equal).
fn check_within(r: &Run, what: &str, tol: impl Fn(usize) -> f64) {
    for (i, (got, want)) in r.outputs.iter().zip(&r.expected).enumerate() {
        let tol = tol(i);
        assert_eq!(got.len(), want.len(), "{what}: output {i}");
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - f64::from(*w)).abs() <= tol,
                "{what}: output {i} element {j} = {g}, reference {w}"
            );
        }
    }
}

fn check_exact(r: &Run, profile: &str, what: &str) {
    for (got, want) in r.outputs.iter().zip(&r.expected) {
        assert_eq!(got.len(), want.len(), "{what} on {profile}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g - w).abs() <= 1e-5 * w.abs().max(1.0) || (g.is_nan() && w.is_nan());
            assert!(ok, "{what} on {profile}: element {i} = {g}, reference {w}");
        }
    }
}

fn f32_input(b: &mut GraphBuilder, name: &str, shape: &[usize]) -> jiuzhou_ir::ValueId {
    b.input(name, TensorType::known(IrType::F32, shape))
}

fn matmul_graph(m: usize, k: usize, n: usize, const_b: bool) -> (Graph, Vec<Tensor>) {
    let mut b = GraphBuilder::new("mm");
    let a = f32_input(&mut b, "a", &[m, k]);
    let mut inputs = vec![tensor(&[m, k], 1)];
    let w = if const_b {
        b.constant("w", tensor(&[k, n], 2))
    } else {
        inputs.push(tensor(&[k, n], 2));
        f32_input(&mut b, "w", &[k, n])
    };
    let y = b.node1(ops::MatMul::default(), &[a, w]).unwrap();
    b.output(y);
    (b.finish().unwrap(), inputs)
}

#[test]
fn matmul_on_odd_shapes_matches_the_reference() {
    let shapes = [
        (37, 70, 45),
        (1, 1, 1),
        (5, 300, 17),
        (129, 33, 130),
        (300, 20, 7),
        (16, 16, 16),
    ];
    for profile in PROFILES {
        for &(m, k, n) in &shapes {
            for const_b in [true, false] {
                let (g, inputs) = matmul_graph(m, k, n, const_b);
                let r = run(g, profile, inputs, &["MatMul"]);
                check_cube(
                    &r,
                    profile,
                    k,
                    1.0,
                    &format!("MatMul {m}x{k}x{n} const_b={const_b}"),
                );
            }
        }
    }
}

#[test]
fn batched_matmul_matches_the_reference() {
    for profile in PROFILES {
        // Rank-3 A by 2-D constant B (batch folded into M) and rank-3 by rank-3 activations (one GEMM per batch).
        let mut b = GraphBuilder::new("bmm");
        let a = f32_input(&mut b, "a", &[3, 19, 33]);
        let x = f32_input(&mut b, "x", &[3, 33, 21]);
        let w = b.constant("w", tensor(&[33, 9], 5));
        let y1 = b.node1(ops::MatMul::default(), &[a, w]).unwrap();
        let y2 = b.node1(ops::MatMul::default(), &[a, x]).unwrap();
        b.output(y1);
        b.output(y2);
        let r = run(
            b.finish().unwrap(),
            profile,
            vec![tensor(&[3, 19, 33], 3), tensor(&[3, 33, 21], 4)],
            &["MatMul"],
        );
        check_cube(&r, profile, 33, 1.0, "batched MatMul");
    }
}

#[test]
fn gemm_with_trans_b_alpha_beta_and_bias_matches_the_reference() {
    for profile in PROFILES {
        let mut b = GraphBuilder::new("gemm");
        let a = f32_input(&mut b, "a", &[7, 50]);
        let w = b.constant("w", tensor(&[23, 50], 6));
        let c = b.constant("c", tensor(&[23], 7));
        let g = ops::Gemm {
            transB: 1,
            alpha: 0.5,
            beta: 2.0,
            ..Default::default()
        };
        let y = b.node1(g, &[a, w, c]).unwrap();
        b.output(y);
        let r = run(
            b.finish().unwrap(),
            profile,
            vec![tensor(&[7, 50], 8)],
            &["Gemm"],
        );
        check_cube(&r, profile, 50, 0.5, "Gemm");
    }
}

/// A conv (optionally + Relu) on a `[n, c, h, w]` input with `cout` filters of `k×k`.
#[allow(clippy::too_many_arguments)]
fn conv_graph(
    shape: [usize; 4],
    cout: usize,
    k: usize,
    stride: i64,
    pad: i64,
    dilation: i64,
    bias: bool,
    relu: bool,
) -> Graph {
    let mut b = GraphBuilder::new("conv");
    let x = f32_input(&mut b, "x", &shape);
    let w = b.constant("w", tensor(&[cout, shape[1], k, k], 11));
    let mut ins = vec![x, w];
    if bias {
        ins.push(b.constant("b", tensor(&[cout], 12)));
    }
    let conv = ops::Conv {
        strides: Some(vec![stride, stride]),
        pads: Some(vec![pad, pad, pad, pad]),
        dilations: Some(vec![dilation, dilation]),
        ..Default::default()
    };
    let mut y = b.node1(conv, &ins).unwrap();
    if relu {
        y = b.node1(ops::Relu::default(), &[y]).unwrap();
    }
    b.output(y);
    b.finish().unwrap()
}

#[test]
fn conv_on_odd_shapes_matches_the_reference() {
    // (input, cout, kernel, stride, pad, dilation, bias, relu)
    type Case = ([usize; 4], usize, usize, i64, i64, i64, bool, bool);
    let cases: [Case; 6] = [
        ([1, 3, 11, 13], 5, 3, 1, 1, 1, true, false),
        ([2, 7, 9, 10], 19, 3, 2, 1, 1, false, true),
        ([1, 20, 6, 7], 33, 1, 1, 0, 1, true, true),
        ([1, 3, 17, 15], 8, 7, 2, 3, 1, true, true),
        ([1, 5, 12, 12], 6, 3, 1, 2, 2, true, false),
        ([1, 70, 5, 5], 9, 3, 1, 1, 1, false, false),
    ];
    for profile in PROFILES {
        for &(shape, cout, k, s, p, d, bias, relu) in &cases {
            let g = conv_graph(shape, cout, k, s, p, d, bias, relu);
            let what = format!("Conv {shape:?} cout={cout} k={k} s={s} p={p} d={d} relu={relu}");
            let r = run(g, profile, vec![tensor(&shape, 13)], &["Conv", "Relu"]);
            if relu {
                let fused = r.exec.placement().nodes.iter().any(|n| {
                    n.op == "Relu" && n.reason.as_deref().is_some_and(|x| x.starts_with("fused"))
                });
                assert!(fused, "{what}: Relu not fused on {profile}");
            }
            // Bias values are in [-1, 1) too: the bound grows by one term.
            check_cube(&r, profile, shape[1] * k * k + 1, 1.0, &what);
        }
    }
}

#[test]
fn elementwise_ops_match_the_reference() {
    let shapes: [&[usize]; 3] = [&[37, 45], &[2, 5, 7, 3], &[1001]];
    for profile in PROFILES {
        for shape in shapes {
            let mut b = GraphBuilder::new("elt");
            let x = f32_input(&mut b, "x", shape);
            let y = f32_input(&mut b, "y", shape);
            let mut outs = vec![
                b.node1(ops::Add::default(), &[x, y]).unwrap(),
                b.node1(ops::Sub::default(), &[x, y]).unwrap(),
                b.node1(ops::Mul::default(), &[x, y]).unwrap(),
                b.node1(ops::Max::default(), &[x, y]).unwrap(),
                b.node1(ops::Relu::default(), &[x]).unwrap(),
                b.node1(ops::Exp::default(), &[x]).unwrap(),
                b.node1(ops::Sigmoid::default(), &[x]).unwrap(),
                b.node1(ops::Tanh::default(), &[x]).unwrap(),
                b.node1(ops::Abs::default(), &[x]).unwrap(),
            ];
            // A constant scalar, and a constant varying along the stored inner axis.
            let two = b.constant("two", Tensor::scalar(2.0f32));
            outs.push(b.node1(ops::Mul::default(), &[x, two]).unwrap());
            let inner_shape: Vec<usize> = if shape.len() == 4 {
                vec![shape[1], 1, 1]
            } else {
                vec![*shape.last().unwrap()]
            };
            let row = b.constant("row", tensor(&inner_shape, 21));
            outs.push(b.node1(ops::Add::default(), &[row, x]).unwrap());
            let full = b.constant("full", tensor(shape, 22));
            outs.push(b.node1(ops::Div::default(), &[x, full]).unwrap());
            for o in outs {
                b.output(o);
            }
            let g = b.finish().unwrap();
            let elt_ops = [
                "Add", "Sub", "Mul", "Max", "Relu", "Exp", "Sigmoid", "Tanh", "Abs", "Div",
            ];
            let r = run(
                g,
                profile,
                vec![tensor(shape, 23), tensor(shape, 24)],
                &elt_ops,
            );
            check_exact(&r, profile, &format!("elementwise {shape:?}"));
        }
    }
}

#[test]
fn mixed_graph_moves_tensors_and_counts_them() {
    // MatMul (NPU) → Sin (host) → Add (NPU): two transfers each way and the host region in between.
    for profile in PROFILES {
        let mut b = GraphBuilder::new("mixed");
        let x = f32_input(&mut b, "x", &[9, 31]);
        let w = b.constant("w", tensor(&[31, 12], 31));
        let y = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
        let s = b.node1(ops::Sin::default(), &[y]).unwrap();
        let z = b.node1(ops::Add::default(), &[s, y]).unwrap();
        b.output(z);
        let r = run(
            b.finish().unwrap(),
            profile,
            vec![tensor(&[9, 31], 32)],
            &["MatMul", "Add"],
        );
        let p = r.exec.placement();
        assert_eq!(p.npu_nodes(), 2);
        let fl = p.nodes.iter().find(|n| n.op == "Sin").unwrap();
        assert!(!fl.npu && fl.reason.as_deref() == Some("no vnpu kernel for Sin"));
        // Up: x, sin; down: y, z (f32).
        assert_eq!(
            r.exec.transfers_bytes(),
            4 * (9 * 31 + 9 * 12 + 9 * 12 + 9 * 12)
        );
        check_cube(&r, profile, 31, 1.0, "mixed");
    }
}

#[test]
fn cycle_count_of_a_small_matmul_is_golden() {
    // Timing is deterministic and independent of the data: the same program always takes the same cycles.
    let (g, inputs) = matmul_graph(37, 70, 45, true);
    let mut got = Vec::new();
    for profile in PROFILES {
        let r = run(g.clone(), profile, inputs.clone(), &["MatMul"]);
        let cycles = r.exec.simulate_cycles().unwrap();
        assert_eq!(r.exec.last_run().unwrap().sim_cycles, cycles);
        got.push(format!("{profile} {cycles}"));
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/codegen_cycles.txt"
    );
    let actual = got.join("\n") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        expected, actual,
        "rerun with UPDATE_GOLDEN=1 to accept new cycle counts"
    );
}

#[test]
fn unsupported_nodes_say_why() {
    let mut b = GraphBuilder::new("why");
    let x = f32_input(&mut b, "x", &[1, 16, 5, 5]);
    let w = b.constant("w", tensor(&[16, 1, 3, 3], 1));
    let c = ops::Conv {
        group: 16,
        ..Default::default()
    };
    let y = b.node1(c, &[x, w]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    let r = run(g, "default", vec![tensor(&[1, 16, 5, 5], 2)], &[]);
    let n = &r.exec.placement().nodes[0];
    assert!(!n.npu);
    assert_eq!(
        n.reason.as_deref(),
        Some("grouped Conv (group = 16; the cube runs at most 8 groups, as one dense Conv)")
    );
    check_exact(&r, "default", "grouped conv on the host");
    assert!(matches!(Op::Relu(ops::Relu::default()), Op::Relu(_)));
}

#[test]
fn pools_softmax_and_views_match_the_reference() {
    // MaxPool (padding, stride, ceil mode), GlobalAveragePool, full-window AveragePool, Flatten and Softmax.
    let cases: [([usize; 4], i64, i64, i64, i64); 4] = [
        ([1, 5, 11, 13], 3, 2, 1, 0),
        ([2, 20, 8, 7], 2, 2, 0, 0),
        ([1, 3, 9, 9], 3, 2, 1, 1),
        ([1, 70, 6, 6], 3, 1, 1, 0),
    ];
    for profile in PROFILES {
        for &(shape, k, s, p, ceil) in &cases {
            let mut b = GraphBuilder::new("pools");
            let x = f32_input(&mut b, "x", &shape);
            let mp = ops::MaxPool {
                kernel_shape: vec![k, k],
                strides: Some(vec![s, s]),
                pads: Some(vec![p, p, p, p]),
                ceil_mode: ceil,
                ..Default::default()
            };
            let y = b.node1(mp, &[x]).unwrap();
            let g = b.node1(ops::GlobalAveragePool::default(), &[x]).unwrap();
            let ap = ops::AveragePool {
                kernel_shape: vec![shape[2] as i64, shape[3] as i64],
                ..Default::default()
            };
            let a = b.node1(ap, &[x]).unwrap();
            let f = b.node1(ops::Flatten::default(), &[g]).unwrap();
            let sm = b.node1(ops::Softmax::default(), &[f]).unwrap();
            for o in [y, g, a, f, sm] {
                b.output(o);
            }
            let what = format!("pools {shape:?} k={k} s={s} p={p} ceil={ceil}");
            let r = run(
                b.finish().unwrap(),
                profile,
                vec![tensor(&shape, 41)],
                &[
                    "MaxPool",
                    "GlobalAveragePool",
                    "AveragePool",
                    "Flatten",
                    "Softmax",
                ],
            );
            // MaxPool and the copies are exact; the averages go through the cube (inputs rounded once).
            let e = eps(profile);
            check_within(&r, &format!("{what} on {profile}"), |i| {
                if i == 0 { 0.0 } else { 2.0 * e + 1e-6 }
            });
        }
    }
}

#[test]
fn dynamic_shapes_are_specialized_at_run_time() {
    // MatMul → Relu → Add with a symbolic batch: nothing has a static shape at compile time, so the placement
    // sends every node to the host; a run specializes the graph to its input shapes and runs it on the NPU.
    for profile in PROFILES {
        let mut b = GraphBuilder::new("dyn");
        let x = b.input(
            "x",
            TensorType::new(IrType::F32, [Dim::Sym("batch".into()), Dim::Known(23)]),
        );
        let w = b.constant("w", tensor(&[23, 11], 41));
        let y = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
        let r = b.node1(ops::Relu::default(), &[y]).unwrap();
        let c = b.constant("c", tensor(&[11], 42));
        let z = b.node1(ops::Add::default(), &[r, c]).unwrap();
        b.output(z);
        let graph = Arc::new(b.finish().unwrap());
        let exec = VnpuExecutable::compile(
            graph.clone(),
            Profile::by_name(profile).unwrap(),
            Arc::new(RefHost),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(exec.placement().npu_nodes(), 0, "{profile}");
        for batch in [5, 17, 5] {
            let x = Value::Tensor(Arc::new(tensor(&[batch, 23], batch as u64)));
            let (got, stats) = exec.run_with_stats(vec![x.clone()]).unwrap();
            let want = ReferenceExecutable::new(graph.clone())
                .run(vec![x])
                .unwrap();
            let placement = stats.placement.expect("the run was specialized");
            assert_eq!(placement.npu_nodes(), 3, "{profile}: {placement:?}");
            assert!(stats.sim_cycles > 0);
            let cos = cosine(&f32s(&got[0]), &f32s(&want[0]));
            assert!(cos >= min_cosine(profile), "{profile} batch {batch}: {cos}");
        }
    }
}

/// Runs `graph` observed on `profile` (with `fault`) and returns what the observer saw, by name.
fn observe(
    graph: &Arc<Graph>,
    profile: &str,
    inputs: &[Tensor],
    fault: Option<&str>,
) -> std::collections::HashMap<String, Vec<f32>> {
    let exec = VnpuExecutable::compile(
        graph.clone(),
        Profile::by_name(profile).unwrap(),
        Arc::new(RefHost),
        &Options {
            host_cost: false,
            fault: fault.map(str::to_string),
            ..Options::default()
        },
    )
    .unwrap();
    let vals: Vec<Value> = inputs
        .iter()
        .map(|t| Value::Tensor(Arc::new(t.clone())))
        .collect();
    let mut seen = std::collections::HashMap::new();
    exec.run_observed(vals, &mut |name, v| {
        seen.insert(name.to_string(), f32s(v));
    })
    .unwrap();
    seen
}

#[test]
fn observed_runs_report_npu_kernels_and_host_regions() {
    // MatMul (NPU, Relu fused) → Sin (host) → Add (NPU).
    let mut b = GraphBuilder::new("obs");
    let x = f32_input(&mut b, "x", &[6, 20]);
    let w = b.constant("w", tensor(&[20, 9], 51));
    let y = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
    let r = b.node1(ops::Relu::default(), &[y]).unwrap();
    let s = b.node1(ops::Sin::default(), &[r]).unwrap();
    let z = b.node1(ops::Add::default(), &[s, r]).unwrap();
    b.output(z);
    let graph = Arc::new(b.finish().unwrap());
    let names = |id: jiuzhou_ir::ValueId| graph.value(id).name.clone();
    let inputs = [tensor(&[6, 20], 52)];
    let mut want = std::collections::HashMap::new();
    ReferenceExecutable::new(graph.clone())
        .run_observed(
            inputs
                .iter()
                .map(|t| Value::Tensor(Arc::new(t.clone())))
                .collect(),
            &mut |name, v| {
                want.insert(name.to_string(), f32s(v));
            },
        )
        .unwrap();
    for profile in PROFILES {
        let seen = observe(&graph, profile, &inputs, None);
        // The MatMul result lives only inside the kernel that applies the Relu.
        assert!(
            !seen.contains_key(&names(y)),
            "{profile}: {:?}",
            seen.keys()
        );
        for v in [r, s, z] {
            let got = seen
                .get(&names(v))
                .unwrap_or_else(|| panic!("{profile}: `{}` not observed", names(v)));
            let cos = cosine(got, &want[&names(v)]);
            assert!(
                cos >= min_cosine(profile),
                "{profile} `{}`: {cos}",
                names(v)
            );
        }
        // A fault in the MatMul kernel shows in its (fused) result and everything after it, not before.
        let bad = observe(&graph, profile, &inputs, Some("MatMul"));
        let off = bad[&names(r)]
            .iter()
            .zip(&want[&names(r)])
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(
            off > 0.2,
            "{profile}: the faulty kernel's result is still close ({off})"
        );
        let clean = observe(&graph, profile, &inputs, Some("no_such_node"));
        assert_eq!(clean[&names(z)], seen[&names(z)], "{profile}");
    }
}

/// The activations the GEMM epilogue computes (Clip with bounds inside the data's range, so that both act).
fn epilogue_activations() -> Vec<ops::Activation> {
    use ops::Activation as A;
    vec![
        A::None,
        A::Relu,
        A::Clip {
            min: -0.5,
            max: 0.75,
        },
        A::Clip {
            min: 0.0,
            max: f32::INFINITY,
        },
        A::Sigmoid,
        A::Tanh,
        A::LeakyRelu { alpha: 0.1 },
        A::Silu,
        A::HardSwish,
    ]
}

#[test]
fn fused_conv_and_matmul_with_residual_and_activation_match_the_reference() {
    for profile in PROFILES {
        for act in epilogue_activations() {
            for with_z in [false, true] {
                // FusedConv: 2 x 7 x 9 x 10 input, 19 3x3 filters, stride 2, pad 1, bias, residual of the result.
                let mut b = GraphBuilder::new("fconv");
                let x = f32_input(&mut b, "x", &[2, 7, 9, 10]);
                let w = b.constant("w", tensor(&[19, 7, 3, 3], 61));
                let bias = b.constant("b", tensor(&[19], 62));
                let mut ins = vec![x, w, bias];
                let mut inputs = vec![tensor(&[2, 7, 9, 10], 63)];
                if with_z {
                    ins.push(f32_input(&mut b, "z", &[2, 19, 5, 5]));
                    inputs.push(tensor(&[2, 19, 5, 5], 64));
                }
                let op = ops::FusedConv {
                    activation: act,
                    strides: Some(vec![2, 2]),
                    pads: Some(vec![1, 1, 1, 1]),
                    ..Default::default()
                };
                let y = b.node1(op, &ins).unwrap();
                b.output(y);
                let what = format!("FusedConv activation={act} residual={with_z}");
                let r = run(b.finish().unwrap(), profile, inputs, &["FusedConv"]);
                // Activations are at most 1.5-Lipschitz; the residual and bias add one term each.
                check_cube(&r, profile, 7 * 9 + 2, 1.5, &what);

                // FusedMatMul: rank-3 A by constant B, bias row, residual.
                let mut b = GraphBuilder::new("fmm");
                let a = f32_input(&mut b, "a", &[3, 19, 45]);
                let w = b.constant("w", tensor(&[45, 37], 65));
                let bias = b.constant("bias", tensor(&[37], 66));
                let mut ins = vec![a, w, bias];
                let mut inputs = vec![tensor(&[3, 19, 45], 67)];
                if with_z {
                    ins.push(f32_input(&mut b, "z", &[3, 19, 37]));
                    inputs.push(tensor(&[3, 19, 37], 68));
                }
                let op = ops::FusedMatMul { activation: act };
                let y = b.node1(op, &ins).unwrap();
                b.output(y);
                let what = format!("FusedMatMul activation={act} residual={with_z}");
                let r = run(b.finish().unwrap(), profile, inputs, &["FusedMatMul"]);
                check_cube(&r, profile, 45 + 2, 1.5, &what);
            }
        }
    }
}

#[test]
fn fused_ops_the_npu_cannot_run_say_why() {
    let mut b = GraphBuilder::new("gelu");
    let a = f32_input(&mut b, "a", &[4, 8]);
    let w = b.constant("w", tensor(&[8, 5], 71));
    let op = ops::FusedMatMul {
        activation: ops::Activation::Gelu,
    };
    let y = b.node1(op, &[a, w]).unwrap();
    b.output(y);
    let r = run(
        b.finish().unwrap(),
        "default",
        vec![tensor(&[4, 8], 72)],
        &[],
    );
    let n = &r.exec.placement().nodes[0];
    assert!(!n.npu);
    assert_eq!(
        n.reason.as_deref(),
        Some("no vnpu epilogue for activation gelu")
    );
    check_exact(&r, "default", "FusedMatMul gelu on the host");
}

#[test]
fn grouped_conv_runs_as_a_dense_conv_and_depthwise_stays_on_the_host() {
    // (input, cout, kernel, stride, pad, group)
    let cases: [([usize; 4], usize, usize, i64, i64, i64); 3] = [
        ([1, 6, 9, 11], 10, 3, 1, 1, 2),
        ([2, 12, 7, 7], 8, 1, 1, 0, 4),
        ([1, 16, 6, 5], 24, 3, 2, 1, 8),
    ];
    for profile in PROFILES {
        for &(shape, cout, k, s, p, group) in &cases {
            let mut b = GraphBuilder::new("gconv");
            let x = f32_input(&mut b, "x", &shape);
            let w = b.constant("w", tensor(&[cout, shape[1] / group as usize, k, k], 81));
            let bias = b.constant("b", tensor(&[cout], 82));
            let conv = ops::Conv {
                group,
                strides: Some(vec![s, s]),
                pads: Some(vec![p, p, p, p]),
                ..Default::default()
            };
            let y = b.node1(conv, &[x, w, bias]).unwrap();
            b.output(y);
            let what = format!("Conv {shape:?} cout={cout} k={k} group={group}");
            let r = run(
                b.finish().unwrap(),
                profile,
                vec![tensor(&shape, 83)],
                &["Conv"],
            );
            // The placement counts the model's FLOPs, not the zeros of the dense weights.
            let (oh, ow) = (
                (shape[2] + 2 * p as usize - k) / s as usize + 1,
                (shape[3] + 2 * p as usize - k) / s as usize + 1,
            );
            let flops = 2 * shape[0] * cout * oh * ow * (shape[1] / group as usize) * k * k;
            assert_eq!(r.exec.placement().nodes[0].flops, flops as f64, "{what}");
            check_cube(
                &r,
                profile,
                shape[1] / group as usize * k * k + 1,
                1.0,
                &what,
            );
        }
    }
    // Depthwise: 32 groups of one channel would make the cube do 32 times the work.
    let mut b = GraphBuilder::new("dw");
    let x = f32_input(&mut b, "x", &[1, 32, 6, 6]);
    let w = b.constant("w", tensor(&[32, 1, 3, 3], 84));
    let conv = ops::Conv {
        group: 32,
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let y = b.node1(conv, &[x, w]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    // The channels-last profile says the same: no layout would put it on the cube.
    for profile in ["default", "channels_last"] {
        let r = run(g.clone(), profile, vec![tensor(&[1, 32, 6, 6], 85)], &[]);
        let n = &r.exec.placement().nodes[0];
        assert!(!n.npu);
        assert!(
            n.reason
                .as_deref()
                .unwrap()
                .starts_with("grouped Conv (group = 32"),
            "{profile}: {:?}",
            n.reason
        );
    }
}

// ---- The channels-last profile: the graph's NHWC ops on the cube, layout changes as DMA kernels. ----

const CHANNELS_LAST: &str = "channels_last";

fn transpose(b: &mut GraphBuilder, x: jiuzhou_ir::ValueId, perm: [i64; 4]) -> jiuzhou_ir::ValueId {
    let t = ops::Transpose {
        perm: Some(perm.to_vec()),
    };
    b.node1(t, &[x]).unwrap()
}

#[test]
fn channels_last_conv_matches_the_reference() {
    // NCHW input → Transpose → FusedConvNhwc (HWIO weights, bias, NHWC residual, activation) → per-channel Add →
    // Transpose back: everything on the NPU. (input, cout, kernel, stride, pad, dilation, group, residual, act)
    type Case = (
        [usize; 4],
        usize,
        usize,
        i64,
        i64,
        i64,
        i64,
        bool,
        ops::Activation,
    );
    use ops::Activation as A;
    let cases: [Case; 8] = [
        ([1, 3, 11, 13], 5, 3, 1, 1, 1, 1, false, A::None),
        ([2, 7, 9, 10], 19, 3, 2, 1, 1, 1, true, A::Relu),
        ([1, 20, 6, 7], 33, 1, 1, 0, 1, 1, true, A::None),
        ([1, 3, 17, 15], 8, 7, 2, 3, 1, 1, false, A::Relu),
        ([1, 5, 12, 12], 6, 3, 1, 2, 2, 1, true, A::Silu),
        ([1, 70, 5, 5], 9, 3, 1, 1, 1, 1, false, A::Sigmoid),
        ([1, 6, 9, 11], 10, 3, 1, 1, 1, 2, true, A::Relu),
        (
            [1, 33, 4, 3],
            17,
            2,
            1,
            0,
            1,
            1,
            false,
            A::Clip {
                min: -0.5,
                max: 0.75,
            },
        ),
    ];
    for (i, &(shape, cout, k, s, p, d, group, with_z, act)) in cases.iter().enumerate() {
        let [n, c, h, w] = shape;
        let (oh, ow) = (
            (h + 2 * p as usize - d as usize * (k - 1) - 1) / s as usize + 1,
            (w + 2 * p as usize - d as usize * (k - 1) - 1) / s as usize + 1,
        );
        let mut b = GraphBuilder::new("nhwc_conv");
        let x = f32_input(&mut b, "x", &shape);
        let xl = transpose(&mut b, x, [0, 2, 3, 1]);
        let wt = b.constant(
            "w",
            tensor(&[k, k, c / group as usize, cout], 90 + i as u64),
        );
        let bias = b.constant("b", tensor(&[cout], 100 + i as u64));
        let mut ins = vec![xl, wt, bias];
        let mut inputs = vec![tensor(&shape, 110 + i as u64)];
        if with_z {
            ins.push(f32_input(&mut b, "z", &[n, oh, ow, cout]));
            inputs.push(tensor(&[n, oh, ow, cout], 120 + i as u64));
        }
        let op = ops::FusedConvNhwc {
            activation: act,
            group,
            strides: Some(vec![s, s]),
            pads: Some(vec![p, p, p, p]),
            dilations: Some(vec![d, d]),
            ..Default::default()
        };
        let y = b.node1(op, &ins).unwrap();
        let per_channel = b.constant("pc", tensor(&[cout], 130 + i as u64));
        let y = b.node1(ops::Add::default(), &[y, per_channel]).unwrap();
        let y = transpose(&mut b, y, [0, 3, 1, 2]);
        b.output(y);
        let what = format!(
            "FusedConvNhwc {shape:?} cout={cout} k={k} s={s} p={p} d={d} group={group} residual={with_z} {act}"
        );
        let r = run(
            b.finish().unwrap(),
            CHANNELS_LAST,
            inputs,
            &["Transpose", "FusedConvNhwc", "Add"],
        );
        // Bias, residual and the per-channel constant add a term each; activations are at most 1.5-Lipschitz.
        check_cube(&r, CHANNELS_LAST, c * k * k + 3, 1.5, &what);
    }
}

#[test]
fn channels_last_pools_and_layout_changes_match_the_reference() {
    // (NHWC input, kernel, stride, pad, ceil)
    let cases: [([usize; 4], i64, i64, i64, i64); 4] = [
        ([1, 11, 13, 5], 3, 2, 1, 0),
        ([2, 8, 7, 20], 2, 2, 0, 0),
        ([1, 9, 9, 3], 3, 2, 1, 1),
        ([1, 6, 6, 70], 3, 1, 1, 0),
    ];
    for &(shape, k, s, p, ceil) in &cases {
        let mut b = GraphBuilder::new("nhwc_pools");
        let x = f32_input(&mut b, "x", &shape);
        let mp = ops::MaxPoolNhwc {
            kernel_shape: vec![k, k],
            strides: Some(vec![s, s]),
            pads: Some(vec![p, p, p, p]),
            ceil_mode: ceil,
            ..Default::default()
        };
        let y = b.node1(mp, &[x]).unwrap();
        let ap = ops::AveragePoolNhwc {
            kernel_shape: vec![shape[1] as i64, shape[2] as i64],
            ..Default::default()
        };
        let a = b.node1(ap, &[x]).unwrap();
        // Both layout changes on their own (x as NHWC → NCHW → NHWC).
        let f = transpose(&mut b, x, [0, 3, 1, 2]);
        let l = transpose(&mut b, f, [0, 2, 3, 1]);
        // The channels-last GlobalAveragePool, with and without the unit axes.
        let axes = b.constant("axes", Tensor::vector(vec![1i64, -2]));
        let m = b.node1(ops::ReduceMean::default(), &[x, axes]).unwrap();
        let flat = ops::ReduceMean {
            keepdims: 0,
            ..Default::default()
        };
        let m0 = b.node1(flat, &[x, axes]).unwrap();
        for o in [y, a, f, l, m, m0] {
            b.output(o);
        }
        let what = format!("NHWC pools {shape:?} k={k} s={s} p={p} ceil={ceil}");
        let r = run(
            b.finish().unwrap(),
            CHANNELS_LAST,
            vec![tensor(&shape, 141)],
            &["MaxPoolNhwc", "AveragePoolNhwc", "Transpose", "ReduceMean"],
        );
        let e = eps(CHANNELS_LAST);
        // The averages go through the cube (inputs rounded once); the rest moves values exactly.
        check_within(&r, &what, |i| {
            if matches!(i, 1 | 4 | 5) {
                2.0 * e + 1e-6
            } else {
                0.0
            }
        });
    }
}

#[test]
fn large_layout_changes_cut_rows_and_channels_at_alignment_units() {
    // 300 channels × 250 columns do not fit a staging slot as one pixel row: the kernel cuts W, then C.
    for shape in [[1, 300, 3, 250], [2, 4100, 2, 9]] {
        let mut b = GraphBuilder::new("big_transpose");
        let x = f32_input(&mut b, "x", &shape);
        let l = transpose(&mut b, x, [0, 2, 3, 1]);
        let f = transpose(&mut b, l, [0, 3, 1, 2]);
        b.output(l);
        b.output(f);
        let r = run(
            b.finish().unwrap(),
            CHANNELS_LAST,
            vec![tensor(&shape, 151)],
            &["Transpose"],
        );
        check_exact(&r, CHANNELS_LAST, &format!("Transpose {shape:?}"));
    }
}

#[test]
fn each_profile_runs_only_its_own_layout_on_the_npu() {
    // On the channels-last profile a channels-first Conv and pools go to the host, and say so; on the default
    // profile the channels-last ops do. Results still match (the host is the reference here).
    let mut b = GraphBuilder::new("layouts");
    let x = f32_input(&mut b, "x", &[1, 4, 6, 6]);
    let w = b.constant("w", tensor(&[5, 4, 3, 3], 161));
    let y = b.node1(ops::Conv::default(), &[x, w]).unwrap();
    let m = ops::MaxPool {
        kernel_shape: vec![2, 2],
        ..Default::default()
    };
    let y = b.node1(m, &[y]).unwrap();
    let g = b.node1(ops::GlobalAveragePool::default(), &[y]).unwrap();
    b.output(g);
    let r = run(
        b.finish().unwrap(),
        CHANNELS_LAST,
        vec![tensor(&[1, 4, 6, 6], 162)],
        &[],
    );
    for n in &r.exec.placement().nodes {
        assert!(!n.npu, "{} on the NPU", n.op);
        let reason = n.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with(&format!(
                "channels-first {} (profile `channels_last` convolves and pools channels-last graphs",
                n.op
            )),
            "{}: {reason}",
            n.op
        );
    }
    check_cube(&r, CHANNELS_LAST, 36, 1.0, "channels-first ops on the host");

    let mut b = GraphBuilder::new("layouts");
    let x = f32_input(&mut b, "x", &[1, 6, 6, 4]);
    let w = b.constant("w", tensor(&[3, 3, 4, 5], 163));
    let y = b.node1(ops::FusedConvNhwc::default(), &[x, w]).unwrap();
    let m = ops::MaxPoolNhwc {
        kernel_shape: vec![2, 2],
        ..Default::default()
    };
    let y = b.node1(m, &[y]).unwrap();
    b.output(y);
    let g = b.finish().unwrap();
    for profile in PROFILES {
        let r = run(g.clone(), profile, vec![tensor(&[1, 6, 6, 4], 164)], &[]);
        for n in &r.exec.placement().nodes {
            assert!(!n.npu, "{} on the NPU of {profile}", n.op);
            assert_eq!(
                n.reason.as_deref(),
                Some(
                    format!(
                        "no vnpu kernel for {} on profile `{profile}` (its graphs are channels-first: rank-4 \
                         tensors are stored channels-last implicitly)",
                        n.op
                    )
                    .as_str()
                )
            );
        }
        check_cube(&r, profile, 36, 1.0, "channels-last ops on the host");
    }
}

#[test]
fn channels_last_concat_matches_the_reference_and_unaligned_ones_say_why() {
    // (leading dims, widths): odd last widths, a 3-input one, one wider than a staging slot.
    let cases: [(&[usize], &[usize]); 4] = [
        (&[1, 5, 6], &[8, 16, 3]),
        (&[2, 3, 7], &[32, 64]),
        (&[1, 1, 2], &[8, 40_000]),
        (&[9], &[24, 8, 8, 5]),
    ];
    for (i, (lead, widths)) in cases.iter().enumerate() {
        let mut b = GraphBuilder::new("concat");
        let mut inputs = Vec::new();
        let xs: Vec<_> = widths
            .iter()
            .enumerate()
            .map(|(j, w)| {
                let mut shape = lead.to_vec();
                shape.push(*w);
                inputs.push(tensor(&shape, 170 + (10 * i + j) as u64));
                b.input(&format!("x{j}"), TensorType::known(IrType::F32, &shape))
            })
            .collect();
        let y = b.node1(ops::Concat { axis: -1 }, &xs).unwrap();
        b.output(y);
        let r = run(b.finish().unwrap(), CHANNELS_LAST, inputs, &["Concat"]);
        check_exact(&r, CHANNELS_LAST, &format!("Concat {lead:?} {widths:?}"));
    }
    // The second input would start at column 5: not an aligned address.
    let mut b = GraphBuilder::new("concat");
    let x = f32_input(&mut b, "x", &[1, 4, 4, 5]);
    let z = f32_input(&mut b, "z", &[1, 4, 4, 8]);
    let y = b.node1(ops::Concat { axis: 3 }, &[x, z]).unwrap();
    b.output(y);
    let r = run(
        b.finish().unwrap(),
        CHANNELS_LAST,
        vec![tensor(&[1, 4, 4, 5], 190), tensor(&[1, 4, 4, 8], 191)],
        &[],
    );
    let n = &r.exec.placement().nodes[0];
    assert!(!n.npu);
    assert_eq!(
        n.reason.as_deref(),
        Some("Concat input at column 5, not a multiple of the alignment unit (8 elements)")
    );
    check_exact(&r, CHANNELS_LAST, "unaligned Concat on the host");
}
