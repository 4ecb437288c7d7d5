//! Soundness cases of the channels-last conv rules (`rules/layout.rs`, [`channels_last_rules`]) and the choice of layout by
//! cost: a cost model that prices channels-last convs below channels-first ones gets a graph whose convs are all
//! `FusedConvNhwc` with Transposes only at its boundaries; op count keeps channels-first.
//!
//! [`channels_last_rules`]: super::super::rules::layout::channels_last_rules

use jiuzhou_ir::ops::{Activation, FusedConv};

use super::*;

/// `x: f32[1, c, 6, 6]`.
fn image(b: &mut GraphBuilder, c: usize) -> ValueId {
    f32_input(b, &[1, c, 6, 6])
}

/// Conv(x, W[, b]) with 4 input channels, group 2, stride 2, asymmetric pads (and dilation 2 with a bias).
fn conv_case(bias: bool) -> Graph {
    let mut r = Lcg(31);
    let mut b = GraphBuilder::new("case");
    let x = image(&mut b, 4);
    let w = b.constant("w", r.tensor(&[6, 2, 3, 3]));
    let mut ins = vec![x, w];
    let op = if bias {
        ins.push(b.constant("b", r.tensor(&[6])));
        ops::Conv {
            group: 2,
            dilations: Some(vec![2, 2]),
            pads: Some(vec![2, 1, 2, 2]),
            ..Default::default()
        }
    } else {
        ops::Conv {
            group: 2,
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 0, 1, 1]),
            ..Default::default()
        }
    };
    let y = b.node1(op, &ins).unwrap();
    finish(b, y)
}

/// FusedConv over x: f32[1, 4, 6, 6]: `bias` a bias, `residual` a residual input of the output's shape (with or
/// without the bias); `depthwise`: group = 4, else a 1×1 conv to 4 channels.
fn fused_case(bias: bool, residual: bool, depthwise: bool, activation: Activation) -> Graph {
    let mut r = Lcg(37);
    let mut b = GraphBuilder::new("case");
    let x = image(&mut b, 4);
    let (op, wdims) = if depthwise {
        (
            FusedConv {
                activation,
                group: 4,
                pads: Some(vec![1, 1, 1, 1]),
                ..Default::default()
            },
            [4, 1, 3, 3],
        )
    } else {
        (
            FusedConv {
                activation,
                ..Default::default()
            },
            [4, 4, 1, 1],
        )
    };
    let w = b.constant("w", r.tensor(&wdims));
    let mut ins = vec![Some(x), Some(w)];
    if bias || residual {
        ins.push(bias.then(|| b.constant("b", r.tensor(&[4]))));
    }
    if residual {
        ins.push(Some(
            b.input("z", TensorType::known(DType::F32, &[1, 4, 6, 6])),
        ));
    }
    let y = b.node_opt(op, &ins, 1).unwrap()[0];
    finish(b, y)
}

/// `pool(x)` over x: f32[1, 3, 7, 7]: MaxPool 3×3 stride 2 with padding, or AveragePool 2×2 with ceil_mode and
/// counted padding.
fn pool_case(max: bool) -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[1, 3, 7, 7]);
    let y = if max {
        let op = ops::MaxPool {
            kernel_shape: vec![3, 3],
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 1, 1, 1]),
            ..Default::default()
        };
        b.node1(op, &[x]).unwrap()
    } else {
        let op = ops::AveragePool {
            kernel_shape: vec![2, 2],
            strides: Some(vec![2, 2]),
            pads: Some(vec![1, 0, 0, 1]),
            ceil_mode: 1,
            count_include_pad: 1,
            ..Default::default()
        };
        b.node1(op, &[x]).unwrap()
    };
    finish(b, y)
}

/// `Relu(Transpose(x, [0, 3, 1, 2]))` with x: f32[2, 1, 1, 5]: only size-1 axes move.
fn unit_transpose_case() -> Graph {
    let mut b = GraphBuilder::new("case");
    let x = f32_input(&mut b, &[2, 1, 1, 5]);
    let t = un(&mut b, transpose(&[0, 3, 1, 2]), x);
    let y = relu(&mut b, t);
    finish(b, y)
}

/// `Concat(Transpose(x₀, perm), …; axis)` over inputs whose dims differ only along the concatenated one.
fn concat_case(n: usize, perm: &[i64], axis: i64) -> Graph {
    let mut b = GraphBuilder::new("case");
    let r = perm.len();
    let inner = perm[axis.rem_euclid(r as i64) as usize] as usize;
    let ts: Vec<ValueId> = (0..n)
        .map(|i| {
            let mut dims: Vec<usize> = (0..r).map(|d| d + 2).collect();
            dims[inner] = i + 1;
            let x = b.input(&format!("x{i}"), TensorType::known(DType::F32, &dims));
            un(&mut b, transpose(perm), x)
        })
        .collect();
    let y = b.node1(ops::Concat { axis }, &ts).unwrap();
    finish(b, y)
}

pub(super) fn cases() -> Vec<Case> {
    vec![
        case(
            "transpose-sink-concat2",
            "Transpose",
            concat_case(2, &[0, 3, 1, 2], 1),
        ),
        case(
            "transpose-sink-concat3",
            "Transpose",
            concat_case(3, &[0, 4, 1, 2, 3], -3),
        ),
        case(
            "transpose-sink-concat4",
            "Transpose",
            concat_case(4, &[0, 2, 1], 0),
        ),
        case("maxpool-to-nhwc", "MaxPool", pool_case(true)),
        case("averagepool-to-nhwc", "AveragePool", pool_case(false)),
        case(
            "globalaveragepool-to-nhwc",
            "GlobalAveragePool",
            unary_case(&[2, 3, 4, 5], ops::GlobalAveragePool::default(), &[]),
        ),
        case(
            "transpose-unit-axes-to-reshape",
            "Transpose",
            unit_transpose_case(),
        ),
        case("conv-to-nhwc", "Conv", conv_case(false)),
        case("conv-bias-to-nhwc", "Conv", conv_case(true)),
        case(
            "fusedconv-to-nhwc",
            "FusedConv",
            fused_case(false, false, false, Activation::Relu),
        ),
        case(
            "fusedconv-bias-to-nhwc",
            "FusedConv",
            fused_case(true, false, true, Activation::Clip { min: 0.0, max: 6.0 }),
        ),
        case(
            "fusedconv-residual-to-nhwc",
            "FusedConv",
            fused_case(true, true, false, Activation::Relu),
        ),
        case(
            "fusedconv-residual-to-nhwc",
            "FusedConv",
            fused_case(false, true, true, Activation::None),
        ),
    ]
}

/// Op count, with channels-last convs cheaper than channels-first ones (as on a target whose conv kernels work
/// channels-last): 2 per FusedConv or Conv, 0.5 per FusedConvNhwc, 1 per other node.
pub(super) struct PreferNhwc;

impl CostModel for PreferNhwc {
    fn node_cost(&self, op: &Op, _: &[Option<&ValueType>], _: &[ValueType]) -> f64 {
        match op {
            Op::Conv(_) | Op::FusedConv(_) => 2.0,
            Op::FusedConvNhwc(_) => 0.5,
            _ => 1.0,
        }
    }

    fn channels_last(&self) -> bool {
        true
    }
}

/// Op count, on a target that explores channels-last convs: the reference model's costs with the layout rules on.
pub(super) struct OpCountExploring;

impl CostModel for OpCountExploring {
    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        OpCountCost.node_cost(op, inputs, outputs)
    }

    fn channels_last(&self) -> bool {
        true
    }
}

/// A small residual CNN: conv → Relu → conv (+ bias) → Add(·, first) → Relu → depthwise conv → Sigmoid.
fn residual_cnn() -> Graph {
    let mut r = Lcg(41);
    let mut b = GraphBuilder::new("cnn");
    let x = image(&mut b, 3);
    let pad = || ops::Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let w1 = b.constant("w1", r.tensor(&[8, 3, 3, 3]));
    let c1 = b.node1(pad(), &[x, w1]).unwrap();
    let a1 = relu(&mut b, c1);
    let w2 = b.constant("w2", r.tensor(&[8, 8, 3, 3]));
    let b2 = b.constant("b2", r.tensor(&[8]));
    let c2 = b.node1(pad(), &[a1, w2, b2]).unwrap();
    let s = add(&mut b, c2, a1);
    let a2 = relu(&mut b, s);
    let w3 = b.constant("w3", r.tensor(&[8, 1, 3, 3]));
    let dw = ops::Conv { group: 8, ..pad() };
    let c3 = b.node1(dw, &[a2, w3]).unwrap();
    let y = un(&mut b, ops::Sigmoid::default(), c3);
    finish(b, y)
}

fn count(g: &Graph, name: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == name).count()
}

#[test]
fn the_layout_is_chosen_by_cost() {
    let g = residual_cnn();
    // Op count: the Transposes of the channels-last form are extra nodes, so the convs stay channels-first, with the
    // layout rules on (the same graph as with them off: the reference model does not explore channels-last).
    let (nchw, stats) = optimize_with(&g, &OpCountExploring, &test_options());
    assert_eq!(
        count(&nchw, "FusedConvNhwc"),
        0,
        "{}",
        jiuzhou_ir::text::print(&nchw)
    );
    assert_eq!(count(&nchw, "Transpose"), 0);
    let (plain, plain_stats) = optimize_ref(&g, &test_options());
    assert_eq!(
        jiuzhou_ir::text::print(&plain),
        jiuzhou_ir::text::print(&nchw)
    );
    assert!(plain_stats.egraph_nodes < stats.egraph_nodes);
    // A model that prefers channels-last convs: every conv is channels-last, and the Transposes between them
    // cancel; only the input's and the output's remain.
    let (nhwc, _) = optimize_with(&g, &PreferNhwc, &test_options());
    let text = jiuzhou_ir::text::print(&nhwc);
    assert_eq!(count(&nhwc, "FusedConvNhwc"), 3, "{text}");
    assert_eq!(
        count(&nhwc, "FusedConv") + count(&nhwc, "Conv"),
        0,
        "{text}"
    );
    assert_eq!(count(&nhwc, "Transpose"), 2, "{text}");
    for seed in [3, 4] {
        let inputs = random_inputs(&g, seed);
        let want = Interpreter::default().run(&g, inputs.clone()).unwrap();
        let got = Interpreter::default().run(&nhwc, inputs.clone()).unwrap();
        assert_close(&got, &want, "channels-last");
        let got = Interpreter::default().run(&nchw, inputs).unwrap();
        assert_close(&got, &want, "channels-first");
    }
}

#[test]
fn only_transposes_of_unit_axes_become_reshapes() {
    // [2, 1, 1, 5] by [0, 3, 1, 2] moves the 5 past the 1s only; [2, 1, 3, 5] by [0, 3, 1, 2] moves it past the 3.
    let mut b = GraphBuilder::new("moves");
    let x = f32_input(&mut b, &[2, 1, 3, 5]);
    let t = un(&mut b, transpose(&[0, 3, 1, 2]), x);
    let y = relu(&mut b, t);
    let g = finish(b, y);
    let (out, _) = optimize_with(
        &g,
        &Avoid("Transpose"),
        &only("transpose-unit-axes-to-reshape"),
    );
    assert_eq!(count(&out, "Transpose"), 1);
    let (out, _) = optimize_with(
        &unit_transpose_case(),
        &Avoid("Transpose"),
        &only("transpose-unit-axes-to-reshape"),
    );
    assert_eq!(count(&out, "Transpose"), 0);
    assert_eq!(count(&out, "Reshape"), 1);
}

#[test]
fn weights_are_relaid_out_once_and_only_constant_static_convs_change_layout() {
    // Two convs reading the same weight share one re-laid-out constant.
    let mut r = Lcg(43);
    let mut b = GraphBuilder::new("shared");
    let x = image(&mut b, 2);
    let w = b.constant("w", r.tensor(&[2, 2, 1, 1]));
    let c1 = b.node1(ops::Conv::default(), &[x, w]).unwrap();
    let c2 = b.node1(ops::Conv::default(), &[c1, w]).unwrap();
    let g = finish(b, c2);
    let (out, _) = optimize_with(&g, &PreferNhwc, &test_options());
    assert_eq!(count(&out, "FusedConvNhwc"), 2);
    let weights: std::collections::HashSet<_> = out
        .nodes
        .iter()
        .filter(|n| n.op.name() == "FusedConvNhwc")
        .map(|n| n.inputs[1])
        .collect();
    assert_eq!(weights.len(), 1, "{}", jiuzhou_ir::text::print(&out));
    // A weight computed at run time is not re-laid out: the conv keeps its layout.
    let mut b = GraphBuilder::new("dynamic");
    let x = image(&mut b, 2);
    let w = b.input("w", TensorType::known(DType::F32, &[2, 2, 1, 1]));
    let c = b.node1(ops::Conv::default(), &[x, w]).unwrap();
    let g = finish(b, c);
    let (out, _) = optimize_with(&g, &PreferNhwc, &test_options());
    assert_eq!(count(&out, "FusedConvNhwc"), 0);
}
