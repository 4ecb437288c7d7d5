//! Soundness cases of the fusion rules (`rules/fusion.rs`, and `fold-bn-into-matmul`) and end-to-end fusion tests.

use jiuzhou_ir::ops::FusedMatMul;

use super::*;

fn conv_op() -> ops::Conv {
    ops::Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    }
}

/// `Conv(x, W, b)` with x: f32[1, 2, 4, 4], W: [3, 2, 3, 3] (padded: the result is [1, 3, 4, 4]).
fn conv_in(b: &mut GraphBuilder, r: &mut Lcg, bias: bool) -> ValueId {
    let x = f32_input(b, &[1, 2, 4, 4]);
    let w = b.constant("w", r.tensor(&[3, 2, 3, 3]));
    let mut ins = vec![x, w];
    if bias {
        ins.push(b.constant("b", r.tensor(&[3])));
    }
    b.node1(conv_op(), &ins).unwrap()
}

/// `MatMul(x, W)` with x: f32[2, 3, 4], W: [4, 5].
fn matmul_in(b: &mut GraphBuilder, r: &mut Lcg) -> ValueId {
    let x = f32_input(b, &[2, 3, 4]);
    let w = b.constant("w", r.tensor(&[4, 5]));
    b.node1(ops::MatMul::default(), &[x, w]).unwrap()
}

/// `then(P)` for P a Conv (with bias) or a MatMul.
fn after(conv: bool, then: impl FnOnce(&mut GraphBuilder, &mut Lcg, ValueId) -> ValueId) -> Graph {
    let mut r = Lcg(21);
    let mut b = GraphBuilder::new("case");
    let p = if conv {
        conv_in(&mut b, &mut r, true)
    } else {
        matmul_in(&mut b, &mut r)
    };
    let y = then(&mut b, &mut r, p);
    finish(b, y)
}

fn unary(conv: bool, op: impl Into<Op>) -> Graph {
    let op = op.into();
    after(conv, move |b, _, p| b.node1(op, &[p]).unwrap())
}

fn gemm_case(gemm: ops::Gemm, c: bool) -> Graph {
    let mut r = Lcg(5);
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let w = if gemm.transB != 0 { [4, 3] } else { [3, 4] };
    let w = b.constant("w", r.tensor(&w));
    let mut ins = vec![x, w];
    if c {
        ins.push(b.constant("c", r.tensor(&[4])));
    }
    let y = b.node1(gemm, &ins).unwrap();
    finish(b, y)
}

fn bn_after(b: &mut GraphBuilder, r: &mut Lcg, y: ValueId, n: usize) -> ValueId {
    let s = b.constant("s", r.tensor(&[n]));
    let beta = b.constant("beta", r.tensor(&[n]));
    let m = b.constant("mean", r.tensor(&[n]));
    let v = r.tensor(&[n]).into_vec::<f32>().unwrap();
    let v = b.constant(
        "var",
        Tensor::vector(v.iter().map(|e| e.abs() + 0.5).collect::<Vec<f32>>()),
    );
    b.node1(ops::BatchNormalization::default(), &[y, s, beta, m, v])
        .unwrap()
}

pub(super) fn cases() -> Vec<Case> {
    let scalar = |v: f32| Tensor::scalar(v);
    vec![
        case(
            "gemm-to-fused",
            "Gemm",
            gemm_case(
                ops::Gemm {
                    alpha: 0.5,
                    transB: 1,
                    ..Default::default()
                },
                false,
            ),
        ),
        case(
            "gemm-to-fused",
            "Gemm",
            gemm_case(ops::Gemm::default(), false),
        ),
        case(
            "gemm-bias-to-fused",
            "Gemm",
            gemm_case(
                ops::Gemm {
                    beta: 2.0,
                    transB: 1,
                    ..Default::default()
                },
                true,
            ),
        ),
        case(
            "gemm-bias-to-fused",
            "Gemm",
            gemm_case(ops::Gemm::default(), true),
        ),
        case(
            "matmul-bias-add",
            "Add",
            after(false, |b, r, p| {
                let k = b.constant("bias", r.tensor(&[5]));
                b.node1(ops::Add::default(), &[p, k]).unwrap()
            }),
        ),
        case(
            "matmul-bias-add",
            "Add",
            after(false, |b, r, p| {
                let k = b.constant("bias", r.tensor(&[1, 1, 5]));
                b.node1(ops::Add::default(), &[k, p]).unwrap()
            }),
        ),
        case(
            "residual-add",
            "Add",
            after(true, |b, _, p| {
                let z = b.input("z", TensorType::known(DType::F32, &[1, 3, 4, 4]));
                b.node1(ops::Add::default(), &[p, z]).unwrap()
            }),
        ),
        case(
            "residual-add",
            "Add",
            after(false, |b, _, p| {
                let z = b.input("z", TensorType::known(DType::F32, &[2, 3, 5]));
                b.node1(ops::Add::default(), &[z, p]).unwrap()
            }),
        ),
        case(
            "residual-sum",
            "Sum",
            after(true, |b, _, p| {
                let z = b.input("z", TensorType::known(DType::F32, &[1, 3, 4, 4]));
                b.node1(ops::Sum::default(), &[z, p]).unwrap()
            }),
        ),
        case("fuse-relu", "Relu", unary(true, ops::Relu::default())),
        case("fuse-relu", "Relu", unary(false, ops::Relu::default())),
        case(
            "fuse-clip",
            "Clip",
            after(true, move |b, _, p| {
                let lo = b.constant("lo", scalar(0.0));
                let hi = b.constant("hi", scalar(6.0));
                b.node1(ops::Clip::default(), &[p, lo, hi]).unwrap()
            }),
        ),
        case(
            "fuse-clip",
            "Clip",
            after(false, move |b, _, p| {
                let hi = b.constant("hi", scalar(0.5));
                b.node_opt(ops::Clip::default(), &[Some(p), None, Some(hi)], 1)
                    .unwrap()[0]
            }),
        ),
        case(
            "fuse-clip-min",
            "Clip",
            after(false, move |b, _, p| {
                let lo = b.constant("lo", scalar(-0.5));
                b.node1(ops::Clip::default(), &[p, lo]).unwrap()
            }),
        ),
        case(
            "fuse-sigmoid",
            "Sigmoid",
            unary(true, ops::Sigmoid::default()),
        ),
        case(
            "fuse-silu",
            "Sigmoid",
            after(true, |b, _, p| {
                let s = b.node1(ops::Sigmoid::default(), &[p]).unwrap();
                b.node1(ops::Mul::default(), &[p, s]).unwrap()
            }),
        ),
        case(
            "fuse-silu-rev",
            "Sigmoid",
            after(false, |b, _, p| {
                let s = b.node1(ops::Sigmoid::default(), &[p]).unwrap();
                b.node1(ops::Mul::default(), &[s, p]).unwrap()
            }),
        ),
        case("fuse-swish", "Swish", unary(false, ops::Swish::default())),
        case("fuse-gelu", "Gelu", unary(false, ops::Gelu::default())),
        case(
            "fuse-gelu",
            "Gelu",
            unary(
                true,
                ops::Gelu {
                    approximate: "tanh".into(),
                },
            ),
        ),
        case(
            "fuse-hardswish",
            "HardSwish",
            unary(true, ops::HardSwish::default()),
        ),
        case(
            "fuse-leakyrelu",
            "LeakyRelu",
            unary(false, ops::LeakyRelu { alpha: 0.2 }),
        ),
        case("fuse-tanh", "Tanh", unary(true, ops::Tanh::default())),
        case("fold-bn-into-matmul", "BatchNormalization", {
            let mut r = Lcg(9);
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[4, 3]);
            let w = b.constant("w", r.tensor(&[3, 5]));
            let m = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
            let y = bn_after(&mut b, &mut r, m, 5);
            finish(b, y)
        }),
        case("fold-bn-into-matmul", "BatchNormalization", {
            let mut r = Lcg(10);
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[4, 3]);
            let w = b.constant("w", r.tensor(&[3, 5]));
            let k = b.constant("bias", r.tensor(&[5]));
            let m = b.node1(FusedMatMul::default(), &[x, w, k]).unwrap();
            let y = bn_after(&mut b, &mut r, m, 5);
            finish(b, y)
        }),
        // Relu(Sigmoid(x − y) · x + c) with y: [3] broadcast over x: [2, 3] and a scalar constant c.
        case("fuse-elementwise", "Sigmoid", elementwise_chain()),
        // Composite steps: Swish(x) · u and Gelu(x) + u.
        case("fuse-elementwise", "Swish", composite_chain(false)),
        case("fuse-elementwise", "Gelu", composite_chain(true)),
        // Unary chains and a value read twice by one op: (√|x| + 0.5) · (√|x| + 0.5) = t · t.
        case("fuse-elementwise", "Sqrt", {
            let mut b = GraphBuilder::new("case");
            let x = f32_input(&mut b, &[3, 4]);
            let a = un(&mut b, ops::Abs::default(), x);
            let r = un(&mut b, ops::Sqrt::default(), a);
            let h = scalar_const(&mut b, "half", 0.5);
            let t = add(&mut b, r, h);
            let y = mul(&mut b, t, t);
            finish(b, y)
        }),
    ]
}

/// `Swish(x) · u` (`gelu`: `Gelu(x) + u`) with x, u: f32[2, 3].
fn composite_chain(gelu: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let u = b.input("u", TensorType::known(DType::F32, &[2, 3]));
    let y = if gelu {
        let g = un(&mut b, ops::Gelu::default(), x);
        add(&mut b, g, u)
    } else {
        let s = un(&mut b, ops::Swish::default(), x);
        mul(&mut b, s, u)
    };
    finish(b, y)
}

#[test]
fn recognized_silu_stays_one_step_of_the_fused_program() {
    // x · sigmoid(x) · u: the silu rule names x · sigmoid(x), and the fused program uses that step rather than the
    // spelled-out form.
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[2, 3]);
    let u = b.input("u", TensorType::known(DType::F32, &[2, 3]));
    let s = un(&mut b, ops::Sigmoid::default(), x);
    let m = mul(&mut b, x, s);
    let y = mul(&mut b, m, u);
    let g = finish(b, y);
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(
        exprs_of(&out),
        ["i0 silu i1 mul"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    check_same(&g, &out, "silu");
}

/// `Relu(Sigmoid(x − y) · x + c)` with x: f32[2, 3], y: f32[3] and a scalar constant c.
fn elementwise_chain() -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 3]);
    let y = b.input("y", TensorType::known(DType::F32, &[3]));
    let d = bin(&mut b, ops::Sub::default(), x, y);
    let s = un(&mut b, ops::Sigmoid::default(), d);
    let m = mul(&mut b, s, x);
    let c = scalar_const(&mut b, "c", 0.25);
    let a = add(&mut b, m, c);
    let out = relu(&mut b, a);
    finish(b, out)
}

/// The expression attributes of the graph's FusedElementwise nodes.
fn exprs_of(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::FusedElementwise(f) => Some(f.expr.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn elementwise_chains_fuse_into_one_node() {
    let g = elementwise_chain();
    let (out, stats) = optimize_ref(&g, &test_options());
    assert_eq!((stats.imported_nodes, stats.optimized_nodes), (5, 1));
    assert_eq!(
        exprs_of(&out),
        ["i0 i1 sub sigmoid i0 mul i2 add relu"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    // Named after the first node of the chain.
    assert_eq!(out.nodes[0].name, g.nodes[0].name);
    check_same(&g, &out, "chain");
}

#[test]
fn values_read_elsewhere_are_not_absorbed() {
    // t = exp(x + y) is read by two nodes (and u by the graph and by v): x + y joins t's program, but t and u are
    // computed once, each by its own node.
    let mut b = GraphBuilder::new("g");
    let x = f32_input(&mut b, &[2, 3]);
    let y = b.input("y", TensorType::known(DType::F32, &[2, 3]));
    let s = add(&mut b, x, y);
    let t = un(&mut b, ops::Exp::default(), s);
    let u = relu(&mut b, t);
    let n = un(&mut b, ops::Neg::default(), t);
    let v = mul(&mut b, n, u);
    b.output(u);
    let g = finish(b, v);
    let (out, _) = optimize_ref(&g, &test_options());
    let mut exprs = exprs_of(&out);
    exprs.sort();
    assert_eq!(
        exprs,
        ["i0 i1 add exp", "i0 neg i1 mul"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    assert_eq!(ops_of(&out).len(), 3, "{}", jiuzhou_ir::text::print(&out));
    check_same(&g, &out, "shared");
}

#[test]
fn elementwise_fusion_leaves_other_dtypes_and_vnpu_like_targets_alone() {
    // A target that does not support FusedElementwise keeps the chain.
    struct NoOwnOps;
    impl CostModel for NoOwnOps {
        fn supports(&self, op: &Op) -> bool {
            !op.is_jiuzhou_own()
        }
        fn node_cost(&self, _: &Op, _: &[Option<&ValueType>], _: &[ValueType]) -> f64 {
            1.0
        }
    }
    let g = elementwise_chain();
    let (out, _) = optimize_with(&g, &NoOwnOps, &test_options());
    assert_eq!(out.nodes.len(), 5);
    // f64 chains are not fused (the fused op's CPU kernel computes f32).
    let mut b = GraphBuilder::new("g");
    let x = b.input("x", TensorType::known(DType::F64, &[2, 3]));
    let n = un(&mut b, ops::Neg::default(), x);
    let e = un(&mut b, ops::Exp::default(), n);
    let g = finish(b, e);
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(out.nodes.len(), 2);
}

fn ops_of(g: &Graph) -> Vec<String> {
    g.nodes
        .iter()
        .map(|n| {
            let a = n.op.attrs();
            match a.get("activation") {
                Some(jiuzhou_ir::Attr::String(s)) => format!("{}[{s}]", n.op.name()),
                _ => n.op.name().to_string(),
            }
        })
        .collect()
}

fn check_same(g: &Graph, out: &Graph, what: &str) {
    for seed in [1, 2] {
        let inputs = random_inputs(g, seed);
        let want = Interpreter::default().run(g, inputs.clone()).unwrap();
        let got = Interpreter::default().run(out, inputs).unwrap();
        assert_close(&got, &want, what);
    }
}

#[test]
fn resnet_block_fuses_into_one_node() {
    // Relu(BN(Conv(x, W)) + z) == FusedConv[relu](x, W', b', z): BN folded, residual and activation fused.
    let mut r = Lcg(3);
    let mut b = GraphBuilder::new("block");
    let x = f32_input(&mut b, &[1, 2, 5, 5]);
    let z = b.input("z", TensorType::known(DType::F32, &[1, 3, 5, 5]));
    let w = b.constant("w", r.tensor(&[3, 2, 3, 3]));
    let c = b.node1(conv_op(), &[x, w]).unwrap();
    let n = bn_after(&mut b, &mut r, c, 3);
    let s = b.node1(ops::Add::default(), &[z, n]).unwrap();
    let y = relu(&mut b, s);
    let g = finish(b, y);
    let (out, stats) = optimize_ref(&g, &test_options());
    assert_eq!(
        ops_of(&out),
        ["FusedConv[relu]"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    assert_eq!(stats.imported_nodes, 4);
    check_same(&g, &out, "resnet block");
}

#[test]
fn transformer_projection_fuses_bias_residual_and_gelu() {
    // Gelu(MatMul(x, W) + bias + z) and Relu(Gemm(x, W, c; transB)) each become one node.
    let mut r = Lcg(4);
    let mut b = GraphBuilder::new("ffn");
    let x = f32_input(&mut b, &[2, 3, 4]);
    let z = b.input("z", TensorType::known(DType::F32, &[2, 3, 5]));
    let w = b.constant("w", r.tensor(&[4, 5]));
    let k = b.constant("bias", r.tensor(&[5]));
    let m = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
    let m = b.node1(ops::Add::default(), &[m, k]).unwrap();
    let m = b.node1(ops::Add::default(), &[m, z]).unwrap();
    let y = b.node1(ops::Gelu::default(), &[m]).unwrap();
    let g = finish(b, y);
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(
        ops_of(&out),
        ["FusedMatMul[gelu]"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    check_same(&g, &out, "ffn");

    let mut b = GraphBuilder::new("gemm");
    let x = f32_input(&mut b, &[2, 3]);
    let w = b.constant("w", r.tensor(&[4, 3]));
    let c = b.constant("c", r.tensor(&[4]));
    let gemm = ops::Gemm {
        transB: 1,
        alpha: 0.5,
        ..Default::default()
    };
    let m = b.node1(gemm, &[x, w, c]).unwrap();
    let y = relu(&mut b, m);
    let g = finish(b, y);
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(
        ops_of(&out),
        ["FusedMatMul[relu]"],
        "{}",
        jiuzhou_ir::text::print(&out)
    );
    check_same(&g, &out, "gemm");
}

#[test]
fn a_gemm_with_nothing_to_fuse_stays_a_gemm() {
    let g = gemm_case(ops::Gemm::default(), true);
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(ops_of(&out), ["Gemm"]);
}

#[test]
fn non_scalar_clip_bounds_and_bad_addends_do_not_fuse() {
    // A residual that broadcasts the result larger is not a residual; a Clip with a non-constant bound is kept.
    let g = after(false, |b, _, p| {
        let z = b.input("z", TensorType::known(DType::F32, &[4, 2, 3, 5]));
        b.node1(ops::Add::default(), &[p, z]).unwrap()
    });
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(ops_of(&out), ["MatMul", "Add"]);
    let g = after(true, |b, _, p| {
        let lo = b.input("lo", TensorType::known(DType::F32, &[]));
        b.node1(ops::Clip::default(), &[p, lo]).unwrap()
    });
    let (out, _) = optimize_ref(&g, &test_options());
    assert_eq!(ops_of(&out), ["Conv", "Clip"]);
}
