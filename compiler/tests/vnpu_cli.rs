//! The `jiuzhou` CLI with the simulated NPU: `run --target vnpu --trace`, `compile --target vnpu:PROFILE --stats`
//! and bad target specs, on the bundled tiny CNN.

mod common;

use common::*;

use jiuzhou_compiler::io;

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += f64::from(*x) * f64::from(*y);
        aa += f64::from(*x) * f64::from(*x);
        bb += f64::from(*y) * f64::from(*y);
    }
    ab / (aa.sqrt() * bb.sqrt())
}

#[test]
fn runs_tiny_cnn_on_every_profile_and_writes_a_trace() {
    for (target, min_cos) in [("vnpu", 0.999), ("vnpu:vector_heavy", 0.99)] {
        let dir = tmp_dir("vnpu", &target.replace(':', "_"));
        let trace = dir.join("trace.json");
        let o = jiuzhou(&[
            "run",
            fixture("model.onnx").to_str().unwrap(),
            "--target",
            target,
            "--opt",
            "--input",
            fixture("input.npy").to_str().unwrap(),
            "--output-dir",
            dir.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
        ]);
        assert!(o.ok, "{target}: {}", o.stderr);
        assert!(
            o.stdout.contains("nodes on the NPU; simulated"),
            "{}",
            o.stdout
        );
        let got = io::read_npy(&dir.join("output_0.npy")).unwrap();
        let want = io::read_npy(&fixture("expected_output.npy")).unwrap();
        let (g, w) = (
            got.as_slice::<f32>().unwrap(),
            want.as_slice::<f32>().unwrap(),
        );
        let c = cosine(g, w);
        assert!(c >= min_cos, "{target}: cosine {c}");
        // The trace is valid JSON with one named track per engine and slices on the cube.
        let text = std::fs::read_to_string(&trace).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let events = json["traceEvents"].as_array().unwrap();
        for engine in ["dma_in", "dma_out", "cube", "vector"] {
            assert!(
                events
                    .iter()
                    .any(|e| e["name"] == "thread_name" && e["args"]["name"] == engine),
                "{target}: no {engine} track"
            );
        }
        assert!(events.iter().any(|e| e["name"] == "mmad" && e["ph"] == "X"));
    }
}

#[test]
fn compile_prints_the_placement_and_stats() {
    let o = jiuzhou(&[
        "compile",
        fixture("model.onnx").to_str().unwrap(),
        "--target",
        "vnpu:default",
        "--stats",
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("nodes on the NPU"), "{}", o.stdout);
    // Without the optimizer, BatchNormalization has no NPU kernel: it is listed with the reason.
    let o2 = jiuzhou(&[
        "compile",
        fixture("model.onnx").to_str().unwrap(),
        "--target",
        "vnpu",
        "--no-opt",
    ]);
    assert!(o2.ok, "{}", o2.stderr);
    assert!(
        o2.stdout.contains(
            "on the host CPU: 2 x BatchNormalization: no vnpu kernel for BatchNormalization"
        ),
        "{}",
        o2.stdout
    );
    let last = o.stdout.lines().last().unwrap();
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(json["target"], "vnpu:default");
    let p = &json["placement"];
    assert!(p["npu_nodes"].as_u64().unwrap() >= 3, "{p}");
    assert_eq!(
        p["npu_nodes"].as_u64().unwrap() + p["cpu_nodes"].as_u64().unwrap(),
        p["total_nodes"].as_u64().unwrap()
    );
    assert!(p["npu_flops_fraction"].as_f64().unwrap() > 0.9, "{p}");
    // FLOPs per device: the two add up to the nodes' FLOPs, and the fraction is the NPU's share of them.
    let (npu, cpu) = (
        p["npu_flops"].as_f64().unwrap(),
        p["cpu_flops"].as_f64().unwrap(),
    );
    let per_node: f64 = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["flops"].as_f64().unwrap())
        .sum();
    assert!(
        npu > 0.0 && (npu + cpu - per_node).abs() <= 1e-6 * per_node,
        "{p}"
    );
    let fraction = p["npu_flops_fraction"].as_f64().unwrap();
    assert!((fraction - npu / (npu + cpu)).abs() < 1e-9, "{p}");
    assert!(json["sim_cycles"].as_u64().unwrap() > 0);
    assert!(json["transfers_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn bad_vnpu_targets_are_clean_errors() {
    let model = fixture("model.onnx");
    let o = jiuzhou(&["compile", model.to_str().unwrap(), "--target", "vnpu:nope"]);
    assert!(!o.ok);
    assert!(o.stderr.contains("no profile named `nope`"), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"));
    let o = jiuzhou(&[
        "run",
        model.to_str().unwrap(),
        "--target",
        "cpu",
        "--input",
        fixture("input.npy").to_str().unwrap(),
        "--trace",
        "/tmp/never.json",
    ]);
    assert!(!o.ok);
    assert!(
        o.stderr.starts_with("error: --trace needs a vnpu target"),
        "{}",
        o.stderr
    );
}
