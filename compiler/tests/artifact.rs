//! Compiled artifacts (`.jz`): the round trip gives the same graph and the same outputs as compiling the model, and
//! every kind of bad file gives its own clear error — from the library and from the CLI — never a panic.

mod common;

use common::*;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use jiuzhou_compiler::artifact::{self, Artifact, ArtifactError, FORMAT_VERSION, MAGIC};
use jiuzhou_compiler::{CompileOptions, Target, io, onnx};
use jiuzhou_ir::{DType, Graph, GraphBuilder, Tensor, TensorType, Value, ops};

/// The bundled CNN, optimized for the CPU target.
fn optimized_cnn() -> (Graph, i64) {
    let model = onnx::load_model(&fixture("model.onnx")).unwrap();
    let (g, _) =
        jiuzhou_compiler::optimize_graph(&model.graph, Target::Cpu, &Default::default()).unwrap();
    (g, model.opset)
}

/// A small graph with constants of several dtypes (one of them a string, which stays in the text).
fn small_graph() -> Graph {
    let mut b = GraphBuilder::new("small");
    let x = b.input("x", TensorType::known(DType::F32, &[2, 3]));
    let w = b.constant(
        "w",
        Tensor::from_vec(vec![3], vec![1.5f32, -0.0, f32::NAN]).unwrap(),
    );
    let y = b.node1(ops::Add::default(), &[x, w]).unwrap();
    let shape = b.constant("shape", Tensor::vector(vec![3i64, 2]));
    let z = b.node1(ops::Reshape::default(), &[y, shape]).unwrap();
    let _s = b.constant(
        "names",
        Tensor::vector(vec!["a".to_string(), "b".to_string()]),
    );
    b.output(z);
    b.finish().unwrap()
}

fn run(graph: Graph, opset: i64, threads: usize, inputs: Vec<Value>) -> Vec<Vec<u8>> {
    let c = jiuzhou_compiler::compile_graph_with(
        graph,
        opset,
        Target::Cpu,
        &CompileOptions {
            threads,
            ..CompileOptions::default()
        },
    )
    .unwrap();
    c.session
        .run(inputs)
        .unwrap()
        .iter()
        .map(|v| v.as_tensor().unwrap().to_le_bytes().unwrap())
        .collect()
}

#[test]
fn round_trip_gives_the_same_graph_and_outputs() {
    let (g, opset) = optimized_cnn();
    let bytes = Artifact::new(g.clone(), opset, Target::Cpu)
        .to_bytes()
        .unwrap();
    // Deterministic: the same graph writes the same bytes.
    assert_eq!(
        bytes,
        Artifact::new(g.clone(), opset, Target::Cpu)
            .to_bytes()
            .unwrap()
    );
    let back = Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(back.target, "cpu");
    assert_eq!(back.opset, opset);
    assert_eq!(
        jiuzhou_ir::text::print(&back.graph),
        jiuzhou_ir::text::print(&g)
    );
    let input: Value = io::read_npy(&fixture("input.npy")).unwrap().into();
    let want = run(g, opset, 1, vec![input.clone()]);
    for threads in [1, 2] {
        assert_eq!(
            run(back.graph.clone(), opset, threads, vec![input.clone()]),
            want
        );
    }
}

#[test]
fn constants_of_every_kind_survive() {
    let g = small_graph();
    let bytes = Artifact::new(g.clone(), 17, Target::Reference)
        .to_bytes()
        .unwrap();
    let back = Artifact::from_bytes(&bytes).unwrap();
    assert_eq!(
        jiuzhou_ir::text::print(&back.graph),
        jiuzhou_ir::text::print(&g)
    );
    assert_eq!(back.graph.inputs.len(), 1);
    let w = back.graph.value(back.graph.value_by_name("w").unwrap());
    let bits: Vec<u32> = w
        .constant
        .as_ref()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(
        bits,
        [1.5f32.to_bits(), (-0.0f32).to_bits(), f32::NAN.to_bits()]
    );
}

fn expect_err(bytes: &[u8]) -> ArtifactError {
    match Artifact::from_bytes(bytes) {
        Ok(_) => panic!("a bad artifact loaded"),
        Err(e) => e,
    }
}

/// Rewrites the length and checksum after the body was changed, so the change reaches the decoder.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let body_len = (bytes.len() - 24) as u64;
    bytes[12..20].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&bytes[24..]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn every_error_kind() {
    let good = Artifact::new(small_graph(), 17, Target::Cpu)
        .to_bytes()
        .unwrap();
    assert_eq!(good[..8], MAGIC);
    assert!(matches!(
        expect_err(b"PK\x03\x04 a zip file"),
        ArtifactError::NotAnArtifact
    ));
    assert!(matches!(expect_err(b""), ArtifactError::NotAnArtifact));
    let mut stale = good.clone();
    stale[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        expect_err(&stale),
        ArtifactError::StaleFormat { found, .. } if found == FORMAT_VERSION + 1
    ));
    for cut in [3, 10, 20, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(expect_err(&good[..cut]), ArtifactError::Truncated { .. }),
            "cut at {cut}"
        );
    }
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let e = expect_err(&flipped);
    assert!(
        matches!(&e, ArtifactError::Corrupted(m) if m.contains("checksum")),
        "{e}"
    );
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(expect_err(&longer), ArtifactError::Corrupted(_)));

    let mut old = Artifact::new(small_graph(), 17, Target::Cpu);
    old.compiler_version = "jiuzhou 0.0.0-before-time".into();
    let e = expect_err(&old.to_bytes().unwrap());
    assert!(
        matches!(&e, ArtifactError::StaleCompiler { found, .. } if found.contains("before-time"))
    );

    let cpu = Artifact::from_bytes(&good).unwrap();
    assert_eq!(cpu.check_runnable(None).unwrap(), Target::Cpu);
    assert_eq!(cpu.check_runnable(Some(Target::Cpu)).unwrap(), Target::Cpu);
    let e = cpu.check_runnable(Some(Target::Reference)).unwrap_err();
    assert!(matches!(e, ArtifactError::WrongTarget { .. }), "{e}");
    let mut foreign = cpu.clone();
    foreign.target = "tpu9000".into();
    assert!(matches!(
        foreign.check_runnable(None),
        Err(ArtifactError::UnknownTarget(_))
    ));
    let mut needy = cpu.clone();
    needy.cpu_features.push("quantum-entangler".into());
    let e = needy.check_runnable(None).unwrap_err();
    assert!(
        matches!(&e, ArtifactError::MissingCpuFeatures { missing } if missing == &["quantum-entangler"]),
        "{e}"
    );
    let mut elsewhere = cpu;
    elsewhere.arch = "riscv128".into();
    assert!(matches!(
        elsewhere.check_runnable(None),
        Err(ArtifactError::MissingCpuFeatures { .. })
    ));
}

/// A body with a valid checksum whose lengths claim far more than the file holds is refused without allocating.
#[test]
fn forged_lengths_are_refused() {
    let good = Artifact::new(small_graph(), 17, Target::Cpu)
        .to_bytes()
        .unwrap();
    // The header of a good file, then a payload claiming an IR text of 2^60 bytes (bincode varint: 253 + u64).
    // The header's own encoding: compiler version, target, arch (strings with one-byte varint lengths), then the
    // feature list.
    let header_len = {
        let body = &good[24..];
        let mut at = 0usize;
        for _ in 0..3 {
            at += 1 + body[at] as usize;
        }
        let features = body[at] as usize;
        at += 1;
        for _ in 0..features {
            at += 1 + body[at] as usize;
        }
        at
    };
    for claim in [
        // opset 0, inputs 0, then a 2^60-byte string.
        vec![0u8, 0, 253, 0, 0, 0, 0, 0, 0, 0, 16, b'x'],
        // opset 0, inputs 0, empty text, then 2^60 constants.
        vec![0u8, 0, 0, 253, 0, 0, 0, 0, 0, 0, 0, 16, 1, 2, 3],
        // A constant with a 2^60-byte byte string.
        vec![
            0u8, 0, 0, 1, 1, b'w', 3, b'f', b'3', b'2', 1, 3, 253, 0, 0, 0, 0, 0, 0, 0, 16,
        ],
    ] {
        let mut forged = good[..24 + header_len].to_vec();
        forged.extend(claim);
        let e = expect_err(&reseal(forged));
        assert!(matches!(e, ArtifactError::Corrupted(_)), "{e}");
    }
}

/// Every prefix and many single-byte changes of an artifact (resealed, so they reach the decoder) give an error or,
/// rarely, a valid graph — never a panic.
#[test]
fn damaged_artifacts_never_panic() {
    let good = Artifact::new(small_graph(), 17, Target::Cpu)
        .to_bytes()
        .unwrap();
    for cut in 0..good.len() {
        assert!(Artifact::from_bytes(&good[..cut]).is_err());
    }
    let mut state = 0x1234_5678u64;
    for i in 24..good.len() {
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bad = good.clone();
            bad[i] = state as u8;
            let _ = Artifact::from_bytes(&reseal(bad));
        }
    }
}

/// The last stdout line as JSON.
fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("some output")).expect("JSON last line")
}

#[test]
fn cli_compile_run_and_bench_an_artifact() {
    let dir = tmp_dir("artifact", "cli");
    let jz = dir.join("cnn.jz");
    let (model, input) = (fixture("model.onnx"), fixture("input.npy"));
    let o = jiuzhou(&[
        "compile",
        model.to_str().unwrap(),
        "--target",
        "cpu",
        "-o",
        jz.to_str().unwrap(),
        "--threads",
        "2",
        "--stats",
    ]);
    assert!(o.ok, "{}", o.stderr);
    let stats = last_json(&o.stdout);
    for key in [
        "imported_nodes",
        "optimized_nodes",
        "kernels",
        "optimize_ms",
        "egraph_nodes",
        "stop_reason",
        "fallback_ops",
        "peak_arena_bytes",
        "arena_symbols",
        "threads",
        "conv_kernels",
        "artifact_bytes",
    ] {
        assert!(stats.get(key).is_some(), "--stats lacks `{key}`: {stats}");
    }
    // The CNN's shapes are static: its arena is laid out once, at compile time.
    assert_eq!(stats["arena_symbols"], serde_json::json!([]));
    assert_eq!(stats["threads"], 2);
    assert!(stats["fallback_ops"].is_array());
    // Every Conv kernel of the CNN counted once, under a kernel name.
    let convs: u64 = stats["ops"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(op, _)| op.contains("Conv"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    let kernels = stats["conv_kernels"].as_object().unwrap();
    assert!(convs > 0);
    assert_eq!(
        kernels.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        convs,
        "{stats}"
    );
    for name in kernels.keys() {
        assert!(
            ["winograd", "direct", "packed_gemm", "depthwise", "gemm"].contains(&name.as_str()),
            "{name}"
        );
    }
    assert_eq!(
        stats["artifact_bytes"].as_u64().unwrap(),
        std::fs::metadata(&jz).unwrap().len()
    );

    // The artifact runs with the same CLI and gives exactly the outputs of the optimized .onnx.
    let (from_jz, from_onnx) = (dir.join("jz"), dir.join("onnx"));
    let o = jiuzhou(&[
        "run",
        jz.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output-dir",
        from_jz.to_str().unwrap(),
        "--threads",
        "1",
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stdout.contains("loaded in"), "{}", o.stdout);
    let o = jiuzhou(&[
        "run",
        model.to_str().unwrap(),
        "--target",
        "cpu",
        "--opt",
        "--input",
        input.to_str().unwrap(),
        "--output-dir",
        from_onnx.to_str().unwrap(),
    ]);
    assert!(o.ok, "{}", o.stderr);
    let read = |d: &Path| {
        io::read_npy(&d.join("output_0.npy"))
            .unwrap()
            .to_le_bytes()
            .unwrap()
    };
    assert_eq!(read(&from_jz), read(&from_onnx));

    for m in [&jz, &model] {
        let o = jiuzhou(&[
            "bench",
            m.to_str().unwrap(),
            "--iters",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--json",
        ]);
        assert!(o.ok, "{}", o.stderr);
        let j = last_json(&o.stdout);
        for key in ["min_ms", "median_ms", "max_ms", "compile_ms"] {
            assert!(j[key].as_f64().is_some_and(|v| v >= 0.0), "{key}: {j}");
        }
        assert!(j["min_ms"].as_f64() <= j["median_ms"].as_f64());
        assert!(j["median_ms"].as_f64() <= j["max_ms"].as_f64());
        assert_eq!(j["iters"], 3);
        assert_eq!(j["threads"], 1);
        assert_eq!(j["target"], "cpu");
        // Static shapes: the runs used the arena laid out at compile time.
        assert_eq!(j["run_arena_bytes"], stats["peak_arena_bytes"], "{j}");
    }
}

#[test]
fn cli_bad_artifacts() {
    let dir = tmp_dir("artifact", "bad");
    let good = Artifact::new(small_graph(), 17, Target::Cpu)
        .to_bytes()
        .unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let run = |p: &Path, extra: &[&str]| {
        let mut args = vec!["run", p.to_str().unwrap()];
        args.extend(extra);
        jiuzhou(&args)
    };
    let p = write("text.jz", b"hello, I am text");
    assert_clean_error(&run(&p, &[]), &["text.jz", "not a jiuzhou artifact"]);
    let mut stale = good.clone();
    stale[8..12].copy_from_slice(&7u32.to_le_bytes());
    let p = write("stale.jz", &stale);
    assert_clean_error(&run(&p, &[]), &["format version 7", "recompile"]);
    let mut old = Artifact::new(small_graph(), 17, Target::Cpu);
    old.compiler_version = "jiuzhou 0.0.0-old".into();
    let p = write("old.jz", &old.to_bytes().unwrap());
    assert_clean_error(&run(&p, &[]), &["jiuzhou 0.0.0-old", "recompile"]);
    let p = write("cut.jz", &good[..good.len() - 5]);
    assert_clean_error(&run(&p, &[]), &["truncated"]);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2 + 12;
    flipped[mid] ^= 1;
    let p = write("flipped.jz", &flipped);
    assert_clean_error(&run(&p, &[]), &["corrupted", "checksum"]);
    let p = write("good.jz", &good);
    assert_clean_error(
        &run(&p, &["--target", "reference"]),
        &["compiled for target `cpu`", "not `reference`"],
    );
    let mut needy = Artifact::new(small_graph(), 17, Target::Cpu);
    needy.cpu_features.push("quantum-entangler".into());
    let p = write("needy.jz", &needy.to_bytes().unwrap());
    assert_clean_error(&run(&p, &[]), &["lacks quantum-entangler"]);
    // A .jz is not an ONNX model.
    assert_clean_error(
        &jiuzhou(&["inspect", p.to_str().unwrap()]),
        &["compiled artifact"],
    );
    // Loading reports its time through tracing at info level.
    let x = dir.join("x.npy");
    io::write_npy(&x, &Tensor::from_vec(vec![2, 3], vec![0.5f32; 6]).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jiuzhou"))
        .args([
            "run",
            dir.join("good.jz").to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
        ])
        .args(["--output-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loaded artifact") && stderr.contains("load_ms"),
        "{stderr}"
    );
}

#[test]
fn load_compiles_for_the_artifact_target() {
    let dir = tmp_dir("artifact", "load");
    let p = dir.join("small.jz");
    Artifact::new(small_graph(), 17, Target::Reference)
        .write(&p)
        .unwrap();
    let loaded = artifact::load(&p, None, &CompileOptions::default()).unwrap();
    assert_eq!(loaded.target, Target::Reference);
    assert!(loaded.load_ms() >= 0.0);
    let x = Value::Tensor(Arc::new(
        Tensor::from_vec(vec![2, 3], vec![1.0f32; 6]).unwrap(),
    ));
    let out = loaded.compiled.session.run(vec![x]).unwrap();
    assert_eq!(out[0].as_tensor().unwrap().shape(), &[3, 2]);
}

/// A graph whose intermediates have a symbolic batch: the CPU target's report names the symbol its arena is planned
/// for at run time, and `peak_arena_bytes` counts only the statically shaped intermediates.
#[test]
fn target_stats_name_the_symbols_the_arena_is_planned_for() {
    let mut b = GraphBuilder::new("sym");
    let x = b.input(
        "x",
        TensorType::new(DType::F32, [jiuzhou_ir::Dim::from("N"), 8.into()]),
    );
    let c = b.constant("c", Tensor::from_vec(vec![4], vec![1.0f32; 4]).unwrap());
    // Static: |c| and its negation; symbolic: Relu(x) and its negation.
    let a = b.node1(ops::Abs::default(), &[c]).unwrap();
    let n = b.node1(ops::Neg::default(), &[a]).unwrap();
    let r = b.node1(ops::Relu::default(), &[x]).unwrap();
    let m = b.node1(ops::Neg::default(), &[r]).unwrap();
    b.output(n);
    b.output(m);
    let compiled = jiuzhou_compiler::compile_graph_with(
        b.finish().unwrap(),
        21,
        Target::Cpu,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(compiled.stats.arena_symbols, vec!["N".to_string()]);
    // `a`: 4 floats, one 64-byte line.
    assert_eq!(compiled.stats.peak_arena_bytes, 64);
    let out = compiled
        .session
        .run(vec![Value::Tensor(Arc::new(
            Tensor::from_vec(vec![2, 8], vec![-1.0f32; 16]).unwrap(),
        ))])
        .unwrap();
    assert_eq!(
        out[1].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        &[-0.0; 16]
    );
}
