//! Graphs with symbolic dims: the arena is planned per binding of the dims the inputs bind, intermediates whose
//! shapes the binding determines run in it (views and in-place Concats included), data-dependent shapes stay on the
//! heap, and wrong or absurd input shapes give clear errors.

use std::sync::Arc;

use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Dim, Graph, GraphBuilder, Tensor, TensorType, Value};
use jiuzhou_runtime::Executable;
use jiuzhou_target_cpu::{BOUND_PLANS, CpuExecutable, CpuOptions};
use jiuzhou_target_reference::Interpreter;

mod common;
use common::Rng;

fn sym_input(b: &mut GraphBuilder, name: &str, dims: &[Dim]) -> jiuzhou_ir::ValueId {
    b.input(name, TensorType::new(DType::F32, dims.iter().cloned()))
}

fn value(t: Tensor) -> Value {
    Value::Tensor(Arc::new(t))
}

/// Asserts that `got` matches the reference's `want` (shapes equal, elements within 1e-4 relative).
fn assert_close(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_tensor().unwrap(), w.as_tensor().unwrap());
        assert_eq!(g.shape(), w.shape(), "{what}");
        let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(
                a == b || (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
                "{what}: element {i}: got {a}, want {b}"
            );
        }
    }
}

fn bits(outs: &[Value]) -> Vec<Vec<u32>> {
    outs.iter()
        .map(|v| {
            let t = v.as_tensor().unwrap();
            t.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

/// `x: f32[N,64]` → MatMul → Relu → Reshape `[N,16,16]` (a view) → Neg, Concat along axis 1 (in place when `N`
/// is 1) → Softmax → Add a bias: six intermediates whose shapes depend on `N`, then the output.
fn mlp() -> Graph {
    let mut rng = Rng(77);
    let mut b = GraphBuilder::new("dyn");
    let x = sym_input(&mut b, "x", &[Dim::from("N"), Dim::Known(64)]);
    let w = b.constant("w", rng.tensor(&[64, 256]));
    let h = b.node1(MatMul::default(), &[x, w]).unwrap();
    let r = b.node1(Relu::default(), &[h]).unwrap();
    let shape = b.constant("shape", Tensor::vector(vec![0i64, 16, 16]));
    let s = b.node1(Reshape::default(), &[r, shape]).unwrap();
    let n = b.node1(Neg::default(), &[s]).unwrap();
    let c = b.node1(Concat { axis: 1 }, &[s, n]).unwrap();
    let sm = b.node1(Softmax { axis: -1 }, &[c]).unwrap();
    let bias = b.constant("bias", rng.tensor(&[16]));
    let y = b.node1(Add::default(), &[sm, bias]).unwrap();
    b.output(y);
    b.finish().unwrap()
}

#[test]
fn each_binding_runs_its_intermediates_in_the_arena() {
    let g = Arc::new(mlp());
    // The intermediates really are symbolic.
    let h = g.nodes[0].outputs[0];
    assert_eq!(g.value(h).ty.to_string(), "f32[N,256]");
    let execs: Vec<CpuExecutable> = [1, 2]
        .map(|threads| CpuExecutable::compile_with(g.clone(), &CpuOptions { threads }).unwrap())
        .into();
    let exec = &execs[0];
    assert!(exec.is_planned_per_binding());
    assert_eq!(exec.plan_symbols(), ["N".to_string()]);
    // Every intermediate is symbolic: the static part of the arena is empty.
    assert_eq!(exec.peak_arena_bytes(), 0);
    assert!(exec.fallback_ops().is_empty(), "{:?}", exec.fallback_ops());
    let mut rng = Rng(5);
    let mut bytes = Vec::new();
    // More bindings than the cache keeps, and back to the first.
    let batches = [1, 3, 7, 64, 2, 1, 3];
    assert!(batches.len() > BOUND_PLANS + 1);
    for n in batches {
        let x = rng.tensor(&[n, 64]);
        let want = Interpreter::default()
            .run(&g, vec![value(x.clone())])
            .unwrap();
        let mut first: Option<Vec<Value>> = None;
        for exec in &execs {
            let got = exec.run(vec![value(x.clone())]).unwrap();
            assert_close(&got, &want, &format!("N={n}, {} thread(s)", exec.threads()));
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(bits(f), bits(&got), "N={n}: 1 vs 2 threads"),
            }
            let used = exec.last_run_arena().unwrap();
            let planned = exec.arena_bytes_for(&[("N", n)]).unwrap();
            assert_eq!(used.arena_bytes, planned, "N={n}");
            // MatMul, Relu, the Reshape view, Neg, Concat, Softmax: in the arena; the output on the heap.
            assert_eq!((used.in_arena, used.on_heap), (6, 1), "N={n}");
        }
        bytes.push((n, exec.last_run_arena().unwrap().arena_bytes));
    }
    let at = |n: usize| bytes.iter().find(|b| b.0 == n).unwrap().1;
    // At N=1 the Concat is in place: Relu's output (its Reshape a view of it) and Neg's are computed into the
    // Concat's [1,32,16], which with the MatMul's [1,256] and then the Softmax's [1,32,16] makes 2·512 floats.
    assert_eq!(at(1), 2 * 512 * 4, "{bytes:?}");
    assert!(
        at(1) < at(3) && at(3) < at(7) && at(7) < at(64),
        "{bytes:?}"
    );
    assert!(at(64) >= 64 * 512 * 4, "{bytes:?}");
    assert_eq!(exec.arena_bytes_for(&[("N", 1)]).unwrap(), at(1));
    let err = exec.arena_bytes_for(&[("M", 1)]).unwrap_err();
    assert!(err.0.contains("`N`"), "{err}");
}

#[test]
fn wrong_input_shapes_give_clear_errors() {
    let exec = CpuExecutable::compile(Arc::new(mlp())).unwrap();
    let err = match exec.run(vec![value(Rng(1).tensor(&[2, 3, 64]))]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a rank-3 input ran"),
    };
    assert!(
        err.contains("`x`") && err.contains("f32[2,3,64]") && err.contains("f32[N,64]"),
        "{err}"
    );
    // A known dim that does not match fails in the kernels, clearly, as for a static graph.
    let err = match exec.run(vec![value(Rng(1).tensor(&[2, 63]))]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a [2,63] input ran"),
    };
    assert!(err.contains("63"), "{err}");
    // Two inputs that bind one symbol to different sizes.
    let mut b = GraphBuilder::new("two");
    let x = sym_input(&mut b, "x", &[Dim::from("N"), Dim::Known(4)]);
    let z = sym_input(&mut b, "z", &[Dim::from("N"), Dim::Known(4)]);
    let s = b.node1(Add::default(), &[x, z]).unwrap();
    let y = b.node1(Relu::default(), &[s]).unwrap();
    b.output(y);
    let exec = CpuExecutable::compile(Arc::new(b.finish().unwrap())).unwrap();
    let mut rng = Rng(2);
    let err = match exec.run(vec![value(rng.tensor(&[2, 4])), value(rng.tensor(&[3, 4]))]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("N=2 and N=3 ran"),
    };
    assert!(
        err.contains("`N` is 2 in input `x` but 3 in input `z`"),
        "{err}"
    );
    // The executable still runs good inputs afterwards.
    let (a, c) = (rng.tensor(&[3, 4]), rng.tensor(&[3, 4]));
    let got = exec.run(vec![value(a.clone()), value(c.clone())]).unwrap();
    let want = Interpreter::default()
        .run(&exec_graph_two(), vec![value(a), value(c)])
        .unwrap();
    assert_close(&got, &want, "after the errors");
}

fn exec_graph_two() -> Graph {
    let mut b = GraphBuilder::new("two");
    let x = sym_input(&mut b, "x", &[Dim::from("N"), Dim::Known(4)]);
    let z = sym_input(&mut b, "z", &[Dim::from("N"), Dim::Known(4)]);
    let s = b.node1(Add::default(), &[x, z]).unwrap();
    let y = b.node1(Relu::default(), &[s]).unwrap();
    b.output(y);
    b.finish().unwrap()
}

/// An input of zero elements can bind a symbol to any size: a binding whose intermediates do not fit in memory
/// (or in `usize`) is refused with an error before anything is allocated.
#[test]
fn absurd_bindings_are_refused() {
    let mut b = GraphBuilder::new("zero");
    let x = sym_input(&mut b, "x", &[Dim::from("N"), Dim::Known(0)]);
    let w = b.constant(
        "w",
        Tensor::from_vec(vec![0, 4], Vec::<f32>::new()).unwrap(),
    );
    let h = b.node1(MatMul::default(), &[x, w]).unwrap();
    let y = b.node1(Relu::default(), &[h]).unwrap();
    b.output(y);
    let exec = CpuExecutable::compile(Arc::new(b.finish().unwrap())).unwrap();
    // A sane binding runs: [N,0]·[0,4] is zeros.
    let got = exec
        .run(vec![value(
            Tensor::from_vec(vec![3, 0], Vec::<f32>::new()).unwrap(),
        )])
        .unwrap();
    assert_eq!(
        got[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        &[0.0; 12]
    );
    // [N,4] overflows `usize`; then it is more than a tensor may hold (`checked_numel`'s limit).
    for (n, says) in [(usize::MAX / 2, "overflows"), (1usize << 40, "limit")] {
        let x = Tensor::from_vec(vec![n, 0], Vec::<f32>::new()).unwrap();
        let err = match exec.run(vec![value(x)]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("N={n} ran"),
        };
        assert!(
            err.contains(says) && err.contains(&format!("N={n}")),
            "{err}"
        );
    }
}

/// Sizes that depend on data (TopK's `k` read at run time) are not derived from the binding: those values stay
/// on the heap, the others still run in the arena.
#[test]
fn data_dependent_shapes_stay_on_the_heap() {
    let mut b = GraphBuilder::new("topk");
    let x = sym_input(&mut b, "x", &[Dim::from("N"), Dim::Known(32)]);
    let k = b.input("k", TensorType::known(DType::I64, &[1]));
    let r = b.node1(Relu::default(), &[x]).unwrap();
    let e = b.node1(Exp::default(), &[r]).unwrap();
    let top = b.node_opt(TopK::default(), &[Some(e), Some(k)], 2).unwrap();
    let t = b.node1(Neg::default(), &[top[0]]).unwrap();
    let y = b.node1(Abs::default(), &[t]).unwrap();
    b.output(y);
    let g = Arc::new(b.finish().unwrap());
    assert!(
        g.value(t).ty.to_string().contains("topk"),
        "{}",
        g.value(t).ty
    );
    let exec = CpuExecutable::compile(g.clone()).unwrap();
    assert!(exec.is_planned_per_binding());
    let mut rng = Rng(9);
    for (n, kk) in [(2usize, 3i64), (5, 7), (2, 3)] {
        let inputs = vec![value(rng.tensor(&[n, 32])), value(Tensor::vector(vec![kk]))];
        let want = Interpreter::default().run(&g, inputs.clone()).unwrap();
        let got = exec.run(inputs).unwrap();
        assert_close(&got, &want, &format!("N={n}, k={kk}"));
        let used = exec.last_run_arena().unwrap();
        // Relu and Exp in the arena; Neg of TopK's values (data-dependent) and the output on the heap.
        assert_eq!((used.in_arena, used.on_heap), (2, 2), "N={n}");
        assert!(used.arena_bytes >= n * 32 * 4);
    }
}
