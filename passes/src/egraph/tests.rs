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
    ]
}

/// Random inputs for every graph input (f32 only in these cases).
fn random_inputs(g: &Graph, seed: u64) -> Vec<Value> {
    let mut r = Lcg(seed);
    g.inputs
        .iter()
        .map(|i| {
            let t = g.value(*i).ty.as_tensor().unwrap();
            Value::from(r.tensor(&t.known_dims().unwrap()))
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
fn every_rule_has_a_soundness_case() {
    let cases = cases();
    for name in all_rule_names() {
        assert!(
            cases.iter().any(|c| c.rule == name),
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
    // The Identity of an input that is a graph output stays (the output keeps its name).
    assert_eq!(
        stats.optimized_nodes,
        5,
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
    let (out, stats) = optimize_ref(&g, &test_options());
    assert_eq!(
        stats.optimized_nodes,
        2,
        "{}",
        jiuzhou_ir::text::print(&out)
    );
}
