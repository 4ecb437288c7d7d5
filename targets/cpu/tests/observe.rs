//! Observed runs (`run_observed`: every step's outputs, copied out of the arena) and the test-only fault switch.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Graph, GraphBuilder, Tensor, TensorType, Value};
use jiuzhou_runtime::Executable;
use jiuzhou_target_cpu::CpuExecutable;
use jiuzhou_target_cpu::fault::{self, Fault};
use jiuzhou_target_reference::Interpreter;

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), data).unwrap()
}

/// Conv → Relu (fused into the Conv step) → Neg → Add(·, Neg) → Sigmoid (a reference fallback) → output, with
/// several intermediates in the arena (they share slots once dead).
fn graph() -> Graph {
    let mut b = GraphBuilder::new("t");
    let x = b.input("x", TensorType::known(DType::F32, &[1, 2, 6, 6]));
    let w = b.constant("w", tensor(&[4, 2, 3, 3], 1));
    let c = b
        .node1(
            Conv {
                kernel_shape: Some(vec![3, 3]),
                pads: Some(vec![1, 1, 1, 1]),
                ..Default::default()
            },
            &[x, w],
        )
        .unwrap();
    let r = b.node1(Relu::default(), &[c]).unwrap();
    let n = b.node1(Neg::default(), &[r]).unwrap();
    let a = b.node1(Add::default(), &[n, r]).unwrap();
    let m = b.node1(Mul::default(), &[a, n]).unwrap();
    let s = b.node1(Sigmoid::default(), &[m]).unwrap();
    let y = b.node1(Add::default(), &[s, m]).unwrap();
    b.output(y);
    b.finish().unwrap()
}

fn observe(exec: &dyn Executable, x: &Tensor) -> (Vec<String>, BTreeMap<String, Tensor>) {
    let mut order = Vec::new();
    let mut seen = BTreeMap::new();
    exec.run_observed(vec![Value::Tensor(Arc::new(x.clone()))], &mut |name, v| {
        order.push(name.to_string());
        seen.insert(name.to_string(), (**v.as_tensor().unwrap()).clone());
    })
    .unwrap();
    (order, seen)
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    let (g, w) = (
        got.as_slice::<f32>().unwrap(),
        want.as_slice::<f32>().unwrap(),
    );
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (a, b) in g.iter().zip(w) {
        assert!((a - b).abs() <= 1e-5 + 1e-5 * b.abs(), "{what}: {a} vs {b}");
    }
}

#[test]
fn every_step_output_is_observed_and_matches_the_reference() {
    let g = graph();
    let x = tensor(&[1, 2, 6, 6], 7);
    let mut want = BTreeMap::new();
    Interpreter::default()
        .run_observed(&g, vec![Value::Tensor(Arc::new(x.clone()))], &mut |n, v| {
            want.insert(n.to_string(), (**v.as_tensor().unwrap()).clone());
        })
        .unwrap();
    assert_eq!(want.len(), g.nodes.len());
    let exec = CpuExecutable::compile_with_fault(Arc::new(g.clone()), None).unwrap();
    let (order, seen) = observe(&exec, &x);
    // The Conv output is computed inside the Conv+Relu step and never materialized; everything else is seen once,
    // in order.
    let expected: Vec<String> = g.nodes[1..]
        .iter()
        .map(|n| g.value(n.outputs[0]).name.clone())
        .collect();
    assert_eq!(order, expected);
    for (name, t) in &seen {
        assert_close(t, &want[name], name);
    }
}

#[test]
fn a_fault_perturbs_exactly_the_selected_node() {
    let g = graph();
    let x = tensor(&[1, 2, 6, 6], 7);
    let clean = CpuExecutable::compile_with_fault(Arc::new(g.clone()), None).unwrap();
    let (_, want) = observe(&clean, &x);
    let neg = g.nodes.iter().find(|n| n.op.name() == "Neg").unwrap();
    let neg_out = g.value(neg.outputs[0]).name.clone();
    let fault = Fault::parse(&format!("cpu:{}", neg.name)).unwrap();
    let faulty = CpuExecutable::compile_with_fault(Arc::new(g.clone()), fault).unwrap();
    let (_, got) = observe(&faulty, &x);
    let relu_out = g.value(g.nodes[1].outputs[0]).name.clone();
    assert_eq!(got[&relu_out], want[&relu_out], "before the fault");
    let perturbed = fault::perturb(&Value::Tensor(Arc::new(want[&neg_out].clone())));
    assert_eq!(&got[&neg_out], &**perturbed.as_tensor().unwrap());
    let out = g.value(g.outputs[0]).name.clone();
    assert_ne!(got[&out], want[&out], "the fault propagates");
    // An op name selects every node of that op; the fused Relu selects its Conv+Relu step.
    let by_op = Fault::parse("cpu:Relu").unwrap();
    let faulty = CpuExecutable::compile_with_fault(Arc::new(g), by_op).unwrap();
    let (_, got) = observe(&faulty, &x);
    assert_ne!(got[&relu_out], want[&relu_out]);
}

#[test]
fn profiled_runs_time_every_step_and_compute_the_same() {
    let g = Arc::new(graph());
    let x = Value::Tensor(Arc::new(tensor(&[1, 2, 6, 6], 7)));
    let exec = CpuExecutable::compile(g.clone()).unwrap();
    let plain = exec.run(vec![x.clone()]).unwrap();
    let (outs, prof) = exec.run_profiled(vec![x]).unwrap();
    assert_eq!(
        outs[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        plain[0].as_tensor().unwrap().as_slice::<f32>().unwrap()
    );
    assert_eq!(prof.len(), exec.num_steps());
    // The Relu is fused into the Conv step, which counts 2·(4·6·6 outputs)·(2·3·3 taps) flops.
    assert_eq!(prof[0].op, "Conv+Relu");
    assert_eq!(prof[0].shape, vec![1, 4, 6, 6]);
    assert_eq!(prof[0].flops, 2.0 * 144.0 * 18.0);
    assert!(prof.iter().skip(1).all(|p| p.flops == 0.0));
    assert!(
        prof.iter()
            .any(|p| p.op == "Sigmoid (reference)" || p.op == "Sigmoid")
    );
    assert!(prof.iter().all(|p| p.seconds >= 0.0 && !p.node.is_empty()));
}

#[test]
fn runs_reusing_the_arena_compute_what_a_fresh_executable_does() {
    let g = Arc::new(graph());
    let input = |seed| Value::Tensor(Arc::new(tensor(&[1, 2, 6, 6], seed)));
    let exec = CpuExecutable::compile(g.clone()).unwrap();
    assert!(exec.peak_arena_bytes() > 0);
    // The second and third runs find the previous run's values in the arena.
    for seed in [3, 4, 3] {
        let got = exec.run(vec![input(seed)]).unwrap();
        let fresh = CpuExecutable::compile(g.clone())
            .unwrap()
            .run(vec![input(seed)])
            .unwrap();
        assert_eq!(
            got[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            fresh[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            "seed {seed}"
        );
    }
}
