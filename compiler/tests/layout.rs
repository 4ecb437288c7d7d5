//! The layout chosen by cost on real models: with a cost model that prices channels-last convolutions below
//! channels-first ones, ResNet-50 comes out channels-last end to end (convs and pools, one Transpose at the input)
//! and ShuffleNet mostly so (its channel shuffles stay channels-first); the reference target's own model keeps
//! everything channels-first. Both optimized graphs compute what the imported one computes.

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
