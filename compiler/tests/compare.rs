//! `jiuzhou compare`, the golden-test harness, end to end: a clean run of the bundled CNN is all EQUAL/CLOSE, a
//! deliberately wrong kernel (the CPU target's test-only fault switch) is named as the first divergence with and
//! without the optimizer, and bad arguments give one clear error line.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tiny_cnn")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn tmp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jiuzhou-compare-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn jiuzhou(args: &[&str], fault: Option<&str>) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jiuzhou"));
    cmd.args(args).env_remove("JIUZHOU_FAULT");
    if let Some(f) = fault {
        cmd.env("JIUZHOU_FAULT", f);
    }
    let out = cmd.output().expect("the binary runs");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `compare` on tiny_cnn with its bundled input (on the CPU target unless `extra` names one); returns the
/// outcome and the JSON report.
fn compare(test: &str, extra: &[&str], fault: Option<&str>) -> (Outcome, Json) {
    let report = tmp_dir(test).join("report.json");
    let model = fixture("model.onnx");
    let input = format!("image={}", fixture("input.npy"));
    let mut args = vec![
        "compare",
        model.as_str(),
        "--input",
        input.as_str(),
        "--report",
        report.to_str().unwrap(),
    ];
    if !extra.contains(&"--target") {
        args.extend_from_slice(&["--target", "cpu"]);
    }
    args.extend_from_slice(extra);
    let o = jiuzhou(&args, fault);
    assert!(!o.stderr.contains("panicked"), "{}\n{}", o.stdout, o.stderr);
    let json = std::fs::read_to_string(&report)
        .map(|s| serde_json::from_str(&s).expect("the report is JSON"))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{}\n{}", o.stdout, o.stderr));
    (o, json)
}

fn tensors(report: &Json) -> &Vec<Json> {
    report["tensors"].as_array().unwrap()
}

fn kernel_nodes(k: &Json) -> Vec<&str> {
    k.as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect()
}

/// The ONNX tensors of tiny_cnn, in topological order.
const TENSORS: [&str; 12] = [
    "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "gap", "flat", "logits",
    "probs",
];

fn check_clean(report: &Json, o: &Outcome) {
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    let rows = tensors(report);
    let names: Vec<&str> = rows.iter().map(|r| r["tensor"].as_str().unwrap()).collect();
    assert_eq!(names, TENSORS);
    for r in rows {
        if r["compared"].as_bool().unwrap() {
            let v = r["verdict"].as_str().unwrap();
            assert!(v == "EQUAL" || v == "CLOSE", "{r}");
        }
    }
    let out = rows.last().unwrap();
    assert_eq!(out["output"], true);
    assert_eq!(out["compared"], true, "the graph output is always compared");
    assert_eq!(report["summary"]["pass"], true);
    assert!(report["summary"]["first_diverging"].is_null());
    assert!(o.stdout.contains("no divergence"), "{}", o.stdout);
}

#[test]
fn a_clean_run_is_equal_or_close() {
    let (o, report) = compare("clean-noopt", &["--no-opt"], None);
    check_clean(&report, &o);
    assert_eq!(report["optimized"], false);
    // Without the optimizer, the CPU target materializes everything but what it fuses itself (BatchNormalization
    // folded into the Conv, Relu in its epilogue).
    let rows = tensors(&report);
    let not: Vec<&str> = rows
        .iter()
        .filter(|r| r["compared"] == false)
        .map(|r| r["tensor"].as_str().unwrap())
        .collect();
    assert_eq!(not, ["conv1", "bn1", "conv2", "bn2"]);
    assert!(
        rows[1]["note"]
            .as_str()
            .unwrap()
            .contains("inside its kernel computing `relu1`"),
        "{}",
        rows[1]
    );
    assert!(report["thresholds"]["f32"]["rtol"].is_number());

    let (o, report) = compare("clean-opt", &[], None);
    check_clean(&report, &o);
    assert_eq!(report["optimized"], true);
    // The optimizer folds each BatchNormalization into its Conv: the Conv output lives inside that kernel.
    let rows = tensors(&report);
    assert_eq!(rows[0]["compared"], false);
    assert!(
        rows[0]["note"]
            .as_str()
            .unwrap()
            .contains("inside fused kernel `conv1` (FusedConv)"),
        "{}",
        rows[0]
    );
}

#[test]
fn dumps_both_sides_as_npy() {
    let dir = tmp_dir("dump");
    let (o, report) = compare(
        "dump",
        &["--no-opt", "--dump-dir", dir.to_str().unwrap()],
        None,
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let compared = tensors(&report)
        .iter()
        .filter(|r| r["compared"] == true)
        .count();
    for side in ["reference", "cpu"] {
        let n = std::fs::read_dir(dir.join(side)).unwrap().count();
        assert_eq!(n, compared, "{side}");
    }
    let want = jiuzhou_compiler::io::read_npy(&dir.join("reference/0002_relu1.npy")).unwrap();
    let got = jiuzhou_compiler::io::read_npy(&dir.join("cpu/0002_relu1.npy")).unwrap();
    assert_eq!(want.shape(), [1, 8, 32, 32]);
    assert_eq!(got.shape(), want.shape());
}

/// Checks a run with a wrong kernel on `conv2`: exit 3, and everything before the first divergence passed.
fn check_fault(o: &Outcome, report: &Json) -> Json {
    assert_eq!(o.code, Some(3), "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("WRONG on purpose"),
        "the fault is logged loudly:\n{}",
        o.stderr
    );
    let first = report["summary"]["first_diverging"].clone();
    assert!(first.is_object(), "{report}");
    let index = first["index"].as_u64().unwrap() as usize;
    for r in &tensors(report)[..index] {
        if r["compared"] == true {
            let v = r["verdict"].as_str().unwrap();
            assert!(v == "EQUAL" || v == "CLOSE", "before the fault: {r}");
        }
    }
    assert_eq!(report["summary"]["pass"], false);
    first
}

#[test]
fn a_wrong_kernel_is_named_as_the_first_divergence() {
    // pool2 is a kernel of its own, with and without the optimizer: the harness names exactly that node.
    for (test, extra) in [("pool-noopt", &["--no-opt"][..]), ("pool-opt", &[][..])] {
        let (o, report) = compare(test, extra, Some("cpu:pool2"));
        let first = check_fault(&o, &report);
        assert_eq!(first["node"], "pool2", "{test}");
        assert_eq!(first["op"], "MaxPool");
        assert_eq!(first["tensor"], "pool2");
        assert_eq!(kernel_nodes(&first["kernel"]), ["pool2"]);
        assert!(
            o.stdout
                .contains("first diverging node: pool2 (MaxPool), tensor `pool2`: DIFFERENT"),
            "{}",
            o.stdout
        );
    }

    // conv2 is fused with bn2 and relu2 (by the optimizer and by the CPU target itself): the first tensor the
    // target materializes after the fault is relu2, computed by one kernel that starts at conv2.
    for (test, extra) in [("conv-noopt", &["--no-opt"][..]), ("conv-opt", &[][..])] {
        let (o, report) = compare(test, extra, Some("cpu:conv2"));
        let first = check_fault(&o, &report);
        assert_eq!(
            kernel_nodes(&first["kernel"]),
            ["conv2", "bn2", "relu2"],
            "{test}"
        );
        assert_eq!(first["tensor"], "relu2");
        assert!(
            o.stdout
                .contains("conv2 (Conv), bn2 (BatchNormalization), relu2 (Relu)"),
            "{}",
            o.stdout
        );
        // Nothing upstream of conv2 was perturbed.
        let rows = tensors(&report);
        let pool1 = rows.iter().find(|r| r["tensor"] == "pool1").unwrap();
        assert_eq!(pool1["compared"], true);
        assert!(pool1["verdict"] == "EQUAL" || pool1["verdict"] == "CLOSE");
    }

    // A selector that matches no node warns and changes nothing.
    let (o, report) = compare("fault-none", &["--no-opt"], Some("cpu:no_such_node"));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("matches no node"), "{}", o.stderr);
    assert_eq!(report["summary"]["pass"], true);
}

#[test]
fn random_inputs_are_seeded() {
    let model = fixture("model.onnx");
    let run = |seed: &str, name: &str| -> Vec<u8> {
        let dir = tmp_dir(name);
        let o = jiuzhou(
            &[
                "compare",
                &model,
                "--target",
                "cpu",
                "--no-opt",
                "--seed",
                seed,
                "--expect",
                "similar",
                "--dump-dir",
                dir.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stdout
                .contains(&format!("random inputs (seed {seed}): image")),
            "{}",
            o.stdout
        );
        std::fs::read(dir.join("reference/0011_probs.npy")).unwrap()
    };
    let a = run("7", "seed-a");
    assert_eq!(a, run("7", "seed-b"), "the same seed gives the same inputs");
    assert_ne!(a, run("8", "seed-c"), "another seed gives other inputs");
}

fn assert_clean_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, Some(1), "{}\n{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{}", o.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks `{n}`: {}", lines[0]);
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let model = fixture("model.onnx");
    assert_clean_error(
        &jiuzhou(&["compare", &model, "--target", "tpu"], None),
        &["unknown target `tpu`", "reference, cpu"],
    );
    assert_clean_error(&jiuzhou(&["compare", &model], None), &["--target"]);
    assert_clean_error(
        &jiuzhou(
            &["compare", &model, "--target", "cpu", "--expect", "roughly"],
            None,
        ),
        &["unknown verdict `roughly`", "equal, close, similar"],
    );
    assert_clean_error(
        &jiuzhou(
            &["compare", "/nonexistent/model.onnx", "--target", "cpu"],
            None,
        ),
        &["/nonexistent/model.onnx"],
    );
    let bad_input = "nosuch=/tmp/x.npy";
    assert_clean_error(
        &jiuzhou(
            &["compare", &model, "--target", "cpu", "--input", bad_input],
            None,
        ),
        &["unknown input `nosuch`", "image"],
    );
    let wrong_shape = tmp_dir("bad").join("wrong.npy");
    jiuzhou_compiler::io::write_npy(
        &wrong_shape,
        &jiuzhou_ir::Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(),
    )
    .unwrap();
    let spec = format!("image={}", wrong_shape.display());
    assert_clean_error(
        &jiuzhou(
            &["compare", &model, "--target", "cpu", "--input", &spec],
            None,
        ),
        &["image"],
    );
    // A malformed fault switch is an error, not a silently clean run.
    assert_clean_error(
        &jiuzhou(&["compare", &model, "--target", "cpu"], Some("conv2")),
        &["JIUZHOU_FAULT", "TARGET:SELECTOR"],
    );
}

#[test]
fn compare_runs_on_the_simulated_npu_and_names_a_wrong_vnpu_kernel() {
    // The vnpu cube rounds its inputs to f16, so the NPU side is SIMILAR rather than CLOSE: a vnpu target expects
    // similar unless --expect says otherwise.
    let vnpu = ["--target", "vnpu"];
    let (o, report) = compare("vnpu-clean", &vnpu, None);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(report["summary"]["pass"], true, "{report}");
    assert_eq!(report["expect"], "SIMILAR", "{report}");
    let (o, report) = compare(
        "vnpu-close",
        &["--target", "vnpu", "--expect", "close"],
        None,
    );
    assert_eq!(o.code, Some(3), "f16 results are not CLOSE: {}", o.stdout);
    assert_eq!(report["expect"], "CLOSE");
    let rows = tensors(&report);
    // The NPU kernels' results are reported (relu1 from the kernel of conv1, pool1, ...), not only the output.
    for name in ["relu1", "pool1", "relu2", "pool2", "gap", "logits", "probs"] {
        let r = rows.iter().find(|r| r["tensor"] == name).unwrap();
        assert_eq!(r["compared"], true, "{r}");
    }

    // A wrong vnpu kernel (conv2, with bn2 folded in and relu2 in its epilogue) is the first divergence.
    let (o, report) = compare("vnpu-fault", &vnpu, Some("vnpu:conv2"));
    assert_eq!(o.code, Some(3), "{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("WRONG on purpose"), "{}", o.stderr);
    let first = report["summary"]["first_diverging"].clone();
    let index = first["index"].as_u64().unwrap() as usize;
    for r in &tensors(&report)[..index] {
        if r["compared"] == true {
            assert_ne!(r["verdict"], "DIFFERENT", "before the fault: {r}");
        }
    }
    assert_eq!(first["tensor"], "relu2", "{report}");
    assert_eq!(
        kernel_nodes(&first["kernel"]),
        ["conv2", "bn2", "relu2"],
        "{report}"
    );
    // A fault for the NPU leaves the CPU target alone, and one for the CPU leaves the NPU alone.
    let (o, report) = compare("vnpu-cpu-fault", &vnpu, Some("cpu:conv2"));
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(report["summary"]["pass"], true);
    let (o, _) = compare("vnpu-fault-none", &vnpu, Some("vnpu:no_such_node"));
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("matches no NPU kernel"), "{}", o.stderr);
}
