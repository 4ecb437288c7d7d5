//! The `jiuzhou` CLI on good and bad input: bad input gives one `error:` line and a non-zero exit, never a panic.

mod common;

use common::*;

use std::path::{Path, PathBuf};

use jiuzhou_compiler::io;
use jiuzhou_compiler::onnx::proto;
use jiuzhou_ir::Tensor;
use prost::Message;

#[test]
fn runs_the_bundled_model() {
    let dir = tmp_dir("cli", "run");
    let o = jiuzhou(&[
        "run",
        fixture("model.onnx").to_str().unwrap(),
        "--input",
        fixture("input.npy").to_str().unwrap(),
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("probs") && o.stdout.contains("f32") && o.stdout.contains("[1,10]"),
        "{}",
        o.stdout
    );
    let got = io::read_npy(&dir.join("output_0.npy")).unwrap();
    let want = io::read_npy(&fixture("expected_output.npy")).unwrap();
    jiuzhou_compiler::compare::compare_tensors(
        &got,
        &want,
        jiuzhou_compiler::compare::Tolerance::CONFORMANCE,
    )
    .unwrap();
}

#[test]
fn named_input_and_inspect() {
    let dir = tmp_dir("cli", "named");
    let spec = format!("image={}", fixture("input.npy").display());
    let o = jiuzhou(&[
        "run",
        fixture("model.onnx").to_str().unwrap(),
        "--input",
        &spec,
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.ok, "{}", o.stderr);
    let o = jiuzhou(&["inspect", fixture("model.onnx").to_str().unwrap()]);
    assert!(o.ok, "{}", o.stderr);
    for needle in ["image", "probs", "Conv", "parameters:", "opset: 13"] {
        assert!(
            o.stdout.contains(needle),
            "inspect output lacks `{needle}`:\n{}",
            o.stdout
        );
    }
}

#[test]
fn truncated_model() {
    let dir = tmp_dir("cli", "truncated");
    let bytes = std::fs::read(fixture("model.onnx")).unwrap();
    let path = dir.join("truncated.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &jiuzhou(&["inspect", path.to_str().unwrap()]),
        &["truncated.onnx"],
    );
    let path = dir.join("text.onnx");
    std::fs::write(&path, "this is not an ONNX model\n").unwrap();
    assert_clean_error(&jiuzhou(&["run", path.to_str().unwrap()]), &["text.onnx"]);
    assert_clean_error(
        &jiuzhou(&["inspect", dir.join("absent.onnx").to_str().unwrap()]),
        &["absent.onnx"],
    );
}

fn tensor_type(elem_type: i32, dims: &[i64]) -> Option<proto::TypeProto> {
    Some(proto::TypeProto {
        value: Some(proto::type_proto::Value::TensorType(
            proto::type_proto::Tensor {
                elem_type,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| proto::tensor_shape_proto::Dimension {
                            value: Some(proto::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            },
        )),
        ..Default::default()
    })
}

#[test]
fn every_unsupported_op_is_named() {
    let node = |op: &str, domain: &str, name: &str, i: &str, o: &str| proto::NodeProto {
        op_type: op.into(),
        domain: domain.into(),
        name: name.into(),
        input: vec![i.into()],
        output: vec![o.into()],
        ..Default::default()
    };
    let model = proto::ModelProto {
        ir_version: 8,
        opset_import: vec![
            proto::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            proto::OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        graph: Some(proto::GraphProto {
            name: "g".into(),
            node: vec![
                node("FooOp", "", "foo_node", "x", "a"),
                node("Relu", "", "relu_node", "a", "b"),
                node("LabelEncoder", "ai.onnx.ml", "encoder_node", "b", "c"),
            ],
            input: vec![proto::ValueInfoProto {
                name: "x".into(),
                r#type: tensor_type(1, &[2]),
                ..Default::default()
            }],
            output: vec![proto::ValueInfoProto {
                name: "c".into(),
                r#type: tensor_type(1, &[2]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tmp_dir("cli", "unsupported");
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    assert_clean_error(
        &jiuzhou(&["inspect", path.to_str().unwrap()]),
        &["FooOp", "foo_node", "LabelEncoder", "encoder_node", "17"],
    );
}

#[test]
fn bad_inputs() {
    let dir = tmp_dir("cli", "inputs");
    let model = fixture("model.onnx");
    let model = model.to_str().unwrap();
    let input = fixture("input.npy");
    let out = dir.to_str().unwrap();
    // Missing input.
    assert_clean_error(&jiuzhou(&["run", model, "--output-dir", out]), &["image"]);
    // Misnamed input.
    let spec = format!("picture={}", input.display());
    assert_clean_error(
        &jiuzhou(&["run", model, "--input", &spec, "--output-dir", out]),
        &["picture", "image"],
    );
    // Wrong dtype.
    let f64_input = dir.join("f64.npy");
    io::write_npy(
        &f64_input,
        &Tensor::zeros(jiuzhou_ir::DType::F64, vec![1, 3, 32, 32]).unwrap(),
    )
    .unwrap();
    assert_clean_error(
        &jiuzhou(&[
            "run",
            model,
            "--input",
            f64_input.to_str().unwrap(),
            "--output-dir",
            out,
        ]),
        &["image", "f32", "f64"],
    );
    // Wrong shape.
    let small = dir.join("small.npy");
    io::write_npy(
        &small,
        &Tensor::zeros(jiuzhou_ir::DType::F32, vec![1, 3, 8, 8]).unwrap(),
    )
    .unwrap();
    assert_clean_error(
        &jiuzhou(&[
            "run",
            model,
            "--input",
            small.to_str().unwrap(),
            "--output-dir",
            out,
        ]),
        &["image", "[1,3,8,8]"],
    );
    // An .npy that does not parse.
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY garbage").unwrap();
    assert_clean_error(
        &jiuzhou(&[
            "run",
            model,
            "--input",
            junk.to_str().unwrap(),
            "--output-dir",
            out,
        ]),
        &["junk.npy"],
    );
    // Too many inputs.
    let i = input.to_str().unwrap();
    assert_clean_error(
        &jiuzhou(&[
            "run",
            model,
            "--input",
            i,
            "--input",
            i,
            "--output-dir",
            out,
        ]),
        &["1 input"],
    );
}

#[test]
fn conformance_summary_line() {
    // A one-case suite built from the bundled model: its expected output is onnxruntime's.
    let suite = tmp_dir("cli", "suite");
    let case = suite.join("test_tiny_cnn");
    let set = case.join("test_data_set_0");
    std::fs::create_dir_all(&set).unwrap();
    std::fs::copy(fixture("model.onnx"), case.join("model.onnx")).unwrap();
    let pb = |npy: &str, pb: &str| {
        let t = io::read_npy(&fixture(npy)).unwrap();
        std::fs::write(
            set.join(pb),
            jiuzhou_compiler::onnx::tensor_to_proto(&t, "").encode_to_vec(),
        )
        .unwrap();
    };
    pb("input.npy", "input_0.pb");
    pb("expected_output.npy", "output_0.pb");
    let report = suite.join("report.json");
    let o = jiuzhou(&[
        "conformance",
        "--target",
        "reference",
        "--suite",
        suite.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout.lines().last(),
        Some("conformance: 1 passed, 0 failed, 0 skipped")
    );
    assert!(
        std::fs::read_to_string(&report)
            .unwrap()
            .contains("\"passed\"")
    );
}

/// The generated model fixtures: `$JIUZHOU_MODELS`, else `~/.cache/jiuzhou/models` (as `jiuzhou-tests` finds them).
/// Panics with the command that makes them if they are missing: this test must not pass vacuously.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("JIUZHOU_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/jiuzhou/models")
        });
    assert!(
        dir.join("bert_layer/model.onnx").is_file() && dir.join("llama_layer/model.onnx").is_file(),
        "{} lacks bert_layer/llama_layer: run tools/run-tests.sh, or generate them with \
         `$(tools/python-env.sh | tail -1) tools/gen_models.py {}`",
        dir.display(),
        dir.display()
    );
    dir
}

/// `compile --stats` on a model: the JSON object of the last stdout line.
fn compile_stats(model: &Path) -> serde_json::Value {
    let path = model.to_str().unwrap();
    let o = jiuzhou(&["compile", path, "--target", "reference", "--stats"]);
    assert!(o.ok, "compile failed:\n{}", o.stderr);
    let last = o.stdout.lines().last().expect("a stats line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

#[test]
fn stats_show_recognized_composites() {
    let models = models_dir();
    let bert = compile_stats(&models.join("bert_layer/model.onnx"));
    for key in [
        "imported_nodes",
        "optimized_nodes",
        "kernels",
        "optimize_ms",
        "egraph_nodes",
        "stop_reason",
        "ops",
    ] {
        assert!(bert.get(key).is_some(), "stats lack `{key}`: {bert}");
    }
    let count = |stats: &serde_json::Value, op: &str| stats["ops"][op].as_u64().unwrap_or(0);
    let total: u64 = bert["ops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, bert["optimized_nodes"].as_u64().unwrap(), "{bert}");
    assert_eq!(count(&bert, "LayerNormalization"), 2, "{bert}");
    // GELU is recognized, then fused into the MatMul before it on the reference target.
    assert_eq!(
        count(&bert, "Gelu") + count(&bert, "FusedMatMul[gelu]"),
        1,
        "{bert}"
    );
    assert_eq!(count(&bert, "Attention"), 1, "{bert}");
    assert_eq!(count(&bert, "Erf"), 0, "{bert}");
    assert_eq!(count(&bert, "Softmax"), 0, "{bert}");

    let llama = compile_stats(&models.join("llama_layer/model.onnx"));
    assert_eq!(count(&llama, "RMSNormalization"), 3, "{llama}");
    // SiLU is recognized as Swish, then fused into the MatMul before it or, with the Mul by the up projection,
    // into one FusedElementwise whose expression names it.
    let fused_silu: u64 = llama["ops"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("FusedElementwise[") && k.contains("silu"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        count(&llama, "Swish") + count(&llama, "FusedMatMul[silu]") + fused_silu,
        1,
        "{llama}"
    );
    assert_eq!(count(&llama, "Attention"), 1, "{llama}");
    assert_eq!(count(&llama, "Softmax"), 0, "{llama}");
    assert_eq!(count(&llama, "Sqrt"), 0, "{llama}");
    assert_eq!(count(&llama, "Sigmoid"), 0, "{llama}");
    assert!(
        llama["optimized_nodes"].as_u64() < llama["imported_nodes"].as_u64(),
        "{llama}"
    );
}

/// onnx's own light ResNet-50 (`onnx/backend/test/data/light/light_resnet50.onnx`, found through
/// `JIUZHOU_ONNX_LIGHT`, which tools/run-tests.sh sets): 415 imported nodes, 239 of them `ConstantOfShape` weights.
/// The fills fold into real weights, then BatchNorm folds and conv + bias + residual + Relu fuse, as for the
/// materialized fixture below.
#[test]
fn light_resnet50_with_fill_weights_optimizes_to_at_most_64_nodes() {
    let dir = std::env::var_os("JIUZHOU_ONNX_LIGHT")
        .map(PathBuf::from)
        .expect(
            "JIUZHOU_ONNX_LIGHT is not set: run tools/run-tests.sh, or set it to the onnx wheel's \
         onnx/backend/test/data/light folder",
        );
    let stats = compile_stats(&dir.join("light_resnet50.onnx"));
    assert_eq!(stats["imported_nodes"].as_u64(), Some(415), "{stats}");
    let nodes = stats["optimized_nodes"].as_u64().unwrap();
    assert!(nodes <= 64, "{stats}");
    for gone in ["ConstantOfShape", "BatchNormalization", "Sum", "Relu"] {
        assert_eq!(stats["ops"][gone].as_u64(), None, "{gone} left: {stats}");
    }
}

/// Issue 3's ResNet-50 bar: weights and BatchNorm folded, conv + bias + residual + Relu fused, at most 64 nodes.
#[test]
fn resnet50_optimizes_to_at_most_64_nodes() {
    let stats = compile_stats(&models_dir().join("resnet50/model.onnx"));
    let nodes = stats["optimized_nodes"].as_u64().unwrap();
    assert!(nodes <= 64, "{stats}");
    assert!(
        stats["ops"]["FusedConv[relu]"].as_u64().unwrap_or(0) >= 48,
        "{stats}"
    );
    assert_eq!(stats["ops"]["BatchNormalization"].as_u64(), None, "{stats}");
}

#[test]
fn bench_profile_lists_kernels() {
    let model = fixture("model.onnx");
    let m = model.to_str().unwrap();
    let o = jiuzhou(&[
        "bench",
        m,
        "--threads",
        "1",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--profile",
        "--profile-top",
        "3",
        "--json",
    ]);
    assert!(o.ok, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("profile: "))
        .unwrap_or_else(|| panic!("no profile line in:\n{}", o.stdout));
    // "profile: N kernels, ..." then the header and exactly three ranked rows.
    let kernels: usize = lines[at]["profile: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("kernel count");
    let header: Vec<&str> = lines[at + 1].split_whitespace().collect();
    assert_eq!(
        header,
        ["rank", "ms", "%", "GFLOP/s", "op", "node", "shape"]
    );
    let mut last_ms = f64::INFINITY;
    for (i, row) in lines[at + 2..at + 5].iter().enumerate() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "{row}");
        assert_eq!(cols[0], (i + 1).to_string());
        let ms: f64 = cols[1].parse().unwrap();
        assert!(ms >= 0.0 && ms <= last_ms, "rows not sorted by time: {row}");
        last_ms = ms;
        assert!(cols[6].starts_with('[') && cols[6].ends_with(']'), "{row}");
    }
    assert_eq!(lines[at + 5], "by op:");
    // The tiny CNN's convolutions are listed with their GFLOP/s.
    assert!(
        lines[at + 2..]
            .iter()
            .any(|l| l.contains("FusedConv") && l.split_whitespace().nth(3) != Some("-")),
        "{}",
        o.stdout
    );
    let j: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let steps = j["profile"].as_array().expect("profile array");
    assert_eq!(steps.len(), kernels);
    let mut percent = 0.0;
    for s in steps {
        assert!(s["op"].is_string() && s["node"].is_string(), "{s}");
        assert!(s["shape"].is_array(), "{s}");
        assert!(s["ms"].as_f64().is_some_and(|v| v >= 0.0), "{s}");
        percent += s["percent"].as_f64().unwrap();
    }
    assert!((percent - 100.0).abs() < 1e-6, "percents sum to {percent}");
    let conv = steps.iter().find(|s| s["node"] == "conv1").expect("conv1");
    assert_eq!(conv["shape"], serde_json::json!([1, 8, 32, 32]));
    assert!(conv["gflops"].as_f64().is_some_and(|g| g > 0.0), "{conv}");

    // A target that cannot time its kernels says so.
    let o = jiuzhou(&[
        "bench",
        m,
        "--target",
        "vnpu",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--profile",
    ]);
    assert_clean_error(&o, &["cannot profile"]);
}
