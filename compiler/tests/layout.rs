//! The layout chosen by cost on real models: with a cost model that prices channels-last convolutions below
//! channels-first ones, ResNet-50 comes out channels-last end to end (convs and pools, one Transpose at the input)
//! and ShuffleNet mostly so (its channel shuffles stay channels-first); the reference target's own model keeps
//! everything channels-first. Both optimized graphs compute what the imported one computes. The vnpu's own cost
//! model does the same by itself: channels-last on the `vnpu:channels_last` profile, channels-first on the others.

use std::path::PathBuf;
use std::sync::Arc;

use jiuzhou_compiler::driver::{ReferenceCost, ReferenceEvaluator};
use jiuzhou_ir::{Graph, Op, Tensor, Value, ValueType};
use jiuzhou_passes::egraph::{self, ConstEvaluator, CostModel};
use jiuzhou_target_reference::Interpreter;

/// The reference target's costs, except that channels-last convs cost a quarter of a channels-first one (as on a
/// target whose conv kernels work channels-last).
struct PreferNhwc;

impl CostModel for PreferNhwc {
    fn supports(&self, op: &Op) -> bool {
        ReferenceCost.supports(op)
    }

    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        match op {
            Op::Conv(_) | Op::FusedConv(_) => 2.0,
            Op::FusedConvNhwc(_) => 0.5,
            _ => ReferenceCost.node_cost(op, inputs, outputs),
        }
    }

    fn channels_last(&self) -> bool {
        true
    }
}

fn model(name: &str) -> Graph {
    let dir = std::env::var_os("JIUZHOU_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/jiuzhou/models")
        });
    let path = dir.join(name).join("model.onnx");
    assert!(
        path.is_file(),
        "{} is missing: run tools/run-tests.sh (it generates the model fixtures)",
        path.display()
    );
    jiuzhou_compiler::onnx::load_model(&path).unwrap().graph
}

fn count(g: &Graph, name: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == name).count()
}

/// A deterministic input in [-1, 1) for every graph input (static f32 shapes).
fn inputs(g: &Graph) -> Vec<Value> {
    let mut s = 7u64;
    g.inputs
        .iter()
        .map(|i| {
            let dims = g.value(*i).ty.as_tensor().unwrap().known_dims().unwrap();
            let n = dims.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            Value::from(Tensor::from_vec(dims, v).unwrap())
        })
        .collect()
}

fn assert_close(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_tensor().unwrap(), w.as_tensor().unwrap());
        assert_eq!(g.shape(), w.shape(), "{what}");
        let (g, w) = (g.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
        let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        let worst = g
            .iter()
            .zip(&w)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale,
            "{what}: max |diff| {worst} (scale {scale})"
        );
    }
}

/// Optimizes `name` both ways and checks the layouts and the results: the channels-last graph keeps `first`
/// convs channels-first and has `transposes` Transposes more than the channels-first one (`None`: at least three
/// quarters of the convs are channels-last; the Transposes, and a conv the greedy extraction computes in both
/// layouts for readers of each, are the cost model's business).
fn check(name: &str, exact: Option<(usize, usize)>) {
    let g = model(name);
    let ev: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    let options = egraph::Options {
        time_limit: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let (nchw, _) = egraph::optimize(&g, &ReferenceCost, Some(ev.clone()), &options).unwrap();
    let (nhwc, stats) = egraph::optimize(&g, &PreferNhwc, Some(ev), &options).unwrap();
    let convs = count(&nchw, "Conv") + count(&nchw, "FusedConv");
    assert!(convs > 0 && count(&nchw, "FusedConvNhwc") == 0, "{name}");
    let ops = |g: &Graph| {
        let mut m = std::collections::BTreeMap::<&str, usize>::new();
        for n in &g.nodes {
            *m.entry(n.op.name()).or_default() += 1;
        }
        format!("{m:?}")
    };
    let text = format!(
        "channels-first {}, channels-last {}",
        ops(&nchw),
        ops(&nhwc)
    );
    let last = count(&nhwc, "FusedConvNhwc");
    match exact {
        Some((first, transposes)) => {
            assert_eq!(
                count(&nhwc, "Conv") + count(&nhwc, "FusedConv"),
                first,
                "{name}: {text}"
            );
            assert_eq!(last, convs - first, "{name}: {text}");
            assert_eq!(
                count(&nhwc, "Transpose"),
                count(&nchw, "Transpose") + transposes,
                "{name}: {text}"
            );
        }
        None => assert!(4 * last >= 3 * convs, "{name}: {text}"),
    }
    assert!(stats.egraph_nodes < 50_000, "{name}: {stats:?}");
    let x = inputs(&g);
    let want = Interpreter::default().run(&g, x.clone()).unwrap();
    let got = Interpreter::default().run(&nhwc, x.clone()).unwrap();
    assert_close(&got, &want, name);
    let got = Interpreter::default().run(&nchw, x).unwrap();
    assert_close(&got, &want, name);
}

#[test]
fn resnet50_goes_channels_last_end_to_end() {
    // All 53 convs, the stem's MaxPool and the final AveragePool channels-last: one Transpose, at the input (the
    // one after the AveragePool moves only size-1 axes and becomes part of the head's Reshape).
    check("resnet50", Some((0, 1)));
}

#[test]
fn shufflenet_convs_go_channels_last_where_the_cost_says() {
    // Its channel shuffles (Reshape, Transpose, Reshape) are channels-first: around them, a conv goes channels-last
    // only where the Transposes it needs are shared enough to pay.
    check("shufflenet", None);
}

fn vnpu(name: &str) -> jiuzhou_compiler::Target {
    jiuzhou_compiler::Target::parse(name).unwrap()
}

/// A small CNN: Conv+Relu → MaxPool → Conv (+bias) + the pool's output as a residual → Relu → GlobalAveragePool.
fn small_cnn() -> Graph {
    use jiuzhou_ir::{DType, GraphBuilder, TensorType, ops};
    let values = |n: usize, seed: u64| -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0) * 0.2)
            .collect()
    };
    let mut b = GraphBuilder::new("small_cnn");
    let x = b.input("x", TensorType::known(DType::F32, &[1, 3, 15, 15]));
    let w1 = b.constant(
        "w1",
        Tensor::from_vec(vec![8, 3, 3, 3], values(8 * 27, 1)).unwrap(),
    );
    let c1 = ops::Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let y = b.node1(c1, &[x, w1]).unwrap();
    let y = b.node1(ops::Relu::default(), &[y]).unwrap();
    let mp = ops::MaxPool {
        kernel_shape: vec![3, 3],
        strides: Some(vec![2, 2]),
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let p = b.node1(mp, &[y]).unwrap();
    let w2 = b.constant(
        "w2",
        Tensor::from_vec(vec![8, 8, 3, 3], values(8 * 72, 2)).unwrap(),
    );
    let b2 = b.constant("b2", Tensor::from_vec(vec![8], values(8, 3)).unwrap());
    let c2 = ops::Conv {
        pads: Some(vec![1, 1, 1, 1]),
        ..Default::default()
    };
    let z = b.node1(c2, &[p, w2, b2]).unwrap();
    let z = b.node1(ops::Add::default(), &[z, p]).unwrap();
    let z = b.node1(ops::Relu::default(), &[z]).unwrap();
    let g = b.node1(ops::GlobalAveragePool::default(), &[z]).unwrap();
    b.output(g);
    b.finish().unwrap()
}

/// The vnpu's channels-last profile chooses channels-last by its own cost model (the profile's roofline, a
/// channels-first conv priced with the layout changes and host round trip it needs there); the other profiles keep
/// channels-first. On ResNet-50: every conv and pool channels-last, one Transpose at the input.
#[test]
fn vnpu_channels_last_profile_chooses_channels_last_by_cost() {
    let ev: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    let options = egraph::Options {
        time_limit: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    for (name, g) in [("resnet50", model("resnet50")), ("small_cnn", small_cnn())] {
        let x = inputs(&g);
        let want = Interpreter::default().run(&g, x.clone()).unwrap();
        for profile in ["vnpu:default", "vnpu:vector_heavy", "vnpu:channels_last"] {
            let cost = vnpu(profile).cost_model();
            let (opt, _) = egraph::optimize(&g, cost.as_ref(), Some(ev.clone()), &options).unwrap();
            let first = count(&opt, "Conv") + count(&opt, "FusedConv");
            let last = count(&opt, "FusedConvNhwc");
            let pools_first = count(&opt, "MaxPool") + count(&opt, "AveragePool");
            let what = format!("{name} for {profile}");
            if profile == "vnpu:channels_last" {
                assert!(first == 0 && last > 0 && pools_first == 0, "{what}");
                assert_eq!(count(&opt, "MaxPoolNhwc"), 1, "{what}");
                assert_eq!(
                    count(&opt, "Transpose"),
                    1,
                    "{what}: one layout change, at the input"
                );
                if name == "resnet50" {
                    assert_eq!(last, 53, "{what}");
                }
            } else {
                assert!(first > 0 && last == 0, "{what}");
            }
            let got = Interpreter::default().run(&opt, x.clone()).unwrap();
            assert_close(&got, &want, &what);
        }
    }
}

/// On the channels-last profile a channels-first conv costs more than its channels-last form with both layout
/// changes; on the default profile the two convs cost the same and the Transposes only add.
#[test]
fn vnpu_channels_first_convs_cost_their_layout_changes_on_the_channels_last_profile() {
    use jiuzhou_ir::{DType, TensorType, ops};
    let t = |d: &[usize]| ValueType::Tensor(TensorType::known(DType::F32, d));
    let (x, w, y) = (t(&[1, 64, 56, 56]), t(&[64, 64, 3, 3]), t(&[1, 64, 56, 56]));
    let (xl, wl, yl) = (t(&[1, 56, 56, 64]), t(&[3, 3, 64, 64]), t(&[1, 56, 56, 64]));
    let conv = Op::FusedConv(ops::FusedConv::default());
    let nhwc = Op::FusedConvNhwc(ops::FusedConvNhwc::default());
    let tr = Op::Transpose(ops::Transpose::default());
    for profile in ["vnpu:default", "vnpu:channels_last"] {
        let cost = vnpu(profile).cost_model();
        let first = cost.node_cost(&conv, &[Some(&x), Some(&w)], std::slice::from_ref(&y));
        let last = cost.node_cost(&nhwc, &[Some(&xl), Some(&wl)], std::slice::from_ref(&yl));
        let to_last = cost.node_cost(&tr, &[Some(&x)], std::slice::from_ref(&xl));
        let to_first = cost.node_cost(&tr, &[Some(&yl)], std::slice::from_ref(&y));
        assert!(to_last > 0.0 && to_first > 0.0, "{profile}");
        if profile == "vnpu:channels_last" {
            assert!(cost.channels_last());
            assert!(
                first > last + to_last + to_first,
                "{profile}: {first} vs {last}"
            );
        } else {
            assert!(!cost.channels_last());
            assert_eq!(first, last, "{profile}");
        }
    }
}
