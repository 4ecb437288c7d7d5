//! The `jiuzhou` command line: inspect, optimize, compile, run, benchmark, conformance-test and compare ONNX
//! models and compiled `.jz` artifacts.
//!
//! Every failure prints one `error: ...` line and exits non-zero; `-v`/`-vv` turn on `tracing` diagnostics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use jiuzhou_compiler::artifact::{self, Artifact};
use jiuzhou_compiler::compare::Verdict;
use jiuzhou_compiler::conformance::{self, Status, Summary};
use jiuzhou_compiler::harness::{self, Comparison};
use jiuzhou_compiler::{CompileOptions, Compiled, Target, io, onnx};
use jiuzhou_ir::{Dim, Graph, Value, ValueType};
use jiuzhou_passes::egraph;

#[derive(Parser)]
#[command(
    name = "jiuzhou",
    version,
    about = "jiuzhou: compile and run ONNX models on many AI chips"
)]
struct Cli {
    /// More diagnostics on stderr (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, op histogram, parameter count and opset.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
    },
    /// Run a model (.onnx, or a .jz artifact from `compile -o`) on input tensors and write its outputs as .npy files.
    Run {
        /// The ONNX model or compiled artifact.
        model: PathBuf,
        /// Target to run on (default: reference for .onnx, the artifact's own target for .jz).
        #[arg(long, value_parser = parse_target)]
        target: Option<Target>,
        /// Threads for intra-op parallelism (0: every available core). Results do not depend on it.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// An input: NAME=PATH, or PATH to bind graph inputs in order. PATH is a .npy or a TensorProto .pb file.
        #[arg(long = "input", value_name = "[NAME=]PATH")]
        inputs: Vec<String>,
        /// Folder for output_K.npy (the K-th graph output).
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Do not run the e-graph optimizer (it runs by default; a .jz artifact is already optimized).
        #[arg(long)]
        no_opt: bool,
        /// Accepted for compatibility: optimization is on by default now.
        #[arg(long, hide = true, conflicts_with = "no_opt")]
        opt: bool,
        /// Write a Chrome trace-event file (Perfetto, chrome://tracing) of the simulated NPU: one track per
        /// engine (vnpu targets only).
        #[arg(long, value_name = "FILE.json")]
        trace: Option<PathBuf>,
    },
    /// Measure a model's run latency (compilation excluded) on random or given inputs.
    Bench {
        /// The ONNX model or compiled artifact.
        model: PathBuf,
        /// Target to run on (default: cpu for .onnx, the artifact's own target for .jz).
        #[arg(long, value_parser = parse_target)]
        target: Option<Target>,
        /// Threads for intra-op parallelism (0: every available core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Untimed runs before the timed ones.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// An input: NAME=PATH, or PATH to bind graph inputs in order (.npy or .pb); inputs not given are random
        /// (seeded by --seed; symbolic dims set to 1).
        #[arg(long = "input", value_name = "[NAME=]PATH")]
        inputs: Vec<String>,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Do not run the e-graph optimizer on an .onnx model.
        #[arg(long)]
        no_opt: bool,
        /// Print, as the last stdout line, one JSON object with the latencies.
        #[arg(long)]
        json: bool,
        /// After the timed runs, time every kernel over --iters more runs and print the costliest (op, node,
        /// output shape, ms, % of the run, GFLOP/s of matrix products) and a summary per op; with --json, every
        /// step under "profile".
        #[arg(long)]
        profile: bool,
        /// How many kernels the --profile table lists.
        #[arg(long, default_value_t = 20, requires = "profile")]
        profile_top: usize,
    },
    /// Optimize a model with the e-graph optimizer and print the optimized IR text.
    Opt {
        /// The ONNX model.
        model: PathBuf,
        /// Target whose cost model steers the optimizer.
        #[arg(long, default_value = "reference", value_parser = parse_target)]
        target: Target,
        /// Rules not to run, comma-separated.
        #[arg(long, value_delimiter = ',')]
        disable_rules: Vec<String>,
    },
    /// Compile a model for a target (optimizing it first), optionally into a .jz artifact.
    Compile {
        /// The ONNX model.
        model: PathBuf,
        /// Target to compile for.
        #[arg(long, default_value = "reference", value_parser = parse_target)]
        target: Target,
        /// Write the compiled model to this .jz artifact (`jiuzhou run FILE.jz` runs it).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Threads the executable is compiled for (0: every available core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Print, as the last stdout line, one JSON object with what the compilation did.
        #[arg(long)]
        stats: bool,
        /// Do not run the e-graph optimizer.
        #[arg(long)]
        no_opt: bool,
        /// Rules not to run, comma-separated.
        #[arg(long, value_delimiter = ',')]
        disable_rules: Vec<String>,
    },
    /// Run an ONNX backend-style test suite (CASE/model.onnx, CASE/test_data_set_N/{input,output}_K.pb).
    Conformance {
        /// Target to test.
        #[arg(long, default_value = "reference", value_parser = parse_target)]
        target: Target,
        /// The suite folder.
        #[arg(long)]
        suite: PathBuf,
        /// Write a JSON report of every case here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Only run cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// A list of cases expected to pass: exit non-zero only if one of them fails.
        #[arg(long)]
        pass_list: Option<PathBuf>,
        /// Add newly passing cases to the --pass-list file (the list only grows).
        #[arg(long, requires = "pass_list")]
        update_pass_list: bool,
        /// Worker threads (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Threads each case's executable runs on (0: every available core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Do not run the e-graph optimizer (it runs by default).
        #[arg(long)]
        no_opt: bool,
    },
    /// Run a model on the reference and on a target and compare every intermediate tensor both have.
    ///
    /// Exit status: 0 when every compared tensor meets --expect, 3 when one does not, 1 on errors.
    Compare {
        /// The ONNX model.
        model: PathBuf,
        /// Target to check against the reference.
        #[arg(long, value_parser = parse_target)]
        target: Target,
        /// An input: NAME=PATH, or PATH to bind graph inputs in order (.npy or TensorProto .pb); inputs not given
        /// are random (see --seed).
        #[arg(long = "input", value_name = "[NAME=]PATH")]
        inputs: Vec<String>,
        /// Do not run the e-graph optimizer on the target side.
        #[arg(long)]
        no_opt: bool,
        /// Write a JSON report of every tensor here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write every compared tensor of both sides as .npy files under DIR/reference and DIR/TARGET.
        #[arg(long, value_name = "DIR")]
        dump_dir: Option<PathBuf>,
        /// The worst verdict a tensor may get and still pass: equal, close or similar [default: close; similar
        /// for vnpu targets, whose cube computes from f16/bf16 inputs]
        #[arg(long, value_parser = parse_expect)]
        expect: Option<Verdict>,
        /// Seed of the random inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn parse_expect(s: &str) -> Result<Verdict, String> {
    match Verdict::from_name(s) {
        Some(v) if v != Verdict::Different => Ok(v),
        _ => Err(format!(
            "unknown verdict `{s}` (expected one of: equal, close, similar)"
        )),
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::parse(s)
}

/// A command-line usage error as one `error: ...` line (clap's message without the usage block).
fn usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = parts.join(" ");
    match line.strip_prefix("error:") {
        Some(rest) => format!("error: {}", rest.trim()),
        None => format!("error: {line}"),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{}", usage_error(&e));
            return ExitCode::FAILURE;
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Inspect { model } => inspect(&model),
        Command::Run {
            model,
            target,
            threads,
            inputs,
            output_dir,
            no_opt,
            opt: _,
            trace,
        } => run_model(
            &model,
            target,
            threads,
            &inputs,
            &output_dir,
            !no_opt,
            trace.as_deref(),
        ),
        Command::Bench {
            model,
            target,
            threads,
            iters,
            warmup,
            inputs,
            seed,
            no_opt,
            json,
            profile,
            profile_top,
        } => bench_model(
            &model,
            target,
            threads,
            BenchOptions {
                iters,
                warmup,
                seed,
                opt: !no_opt,
                json,
                profile: profile.then_some(profile_top),
            },
            &inputs,
        ),
        Command::Opt {
            model,
            target,
            disable_rules,
        } => opt_model(&model, target, disable_rules),
        Command::Compile {
            model,
            target,
            output,
            threads,
            stats,
            no_opt,
            disable_rules,
        } => compile_model(
            &model,
            target,
            output.as_deref(),
            threads,
            stats,
            no_opt,
            disable_rules,
        ),
        Command::Conformance {
            target,
            suite,
            report,
            filter,
            pass_list,
            update_pass_list,
            jobs,
            threads,
            no_opt,
        } => run_conformance(
            target,
            &suite,
            ConformanceArgs {
                report: report.as_deref(),
                filter: filter.as_deref(),
                pass_list: pass_list.as_deref(),
                update: update_pass_list,
                jobs,
                threads,
                no_opt,
            },
        ),
        Command::Compare {
            model,
            target,
            inputs,
            no_opt,
            report,
            dump_dir,
            expect,
            seed,
        } => compare_model(
            &model,
            &harness::Options {
                target,
                optimize: !no_opt,
                opt: egraph::Options::default(),
                expect: expect.unwrap_or(match target {
                    Target::Vnpu(_) => Verdict::Similar,
                    _ => Verdict::Close,
                }),
            },
            &inputs,
            report.as_deref(),
            dump_dir.as_deref(),
            seed,
        ),
    }
}

fn load(path: &Path) -> Result<onnx::Model> {
    if artifact::is_artifact_path(path) {
        bail!(
            "cannot load {}: a .jz file is a compiled artifact, not an ONNX model (`jiuzhou run` and `jiuzhou \
             bench` take it)",
            path.display()
        );
    }
    onnx::load_model(path).with_context(|| format!("cannot load {}", path.display()))
}

/// How a model became a session, for timing reports.
enum Prepared {
    /// Imported (and maybe optimized) from ONNX and compiled.
    Compiled { compile_ms: f64 },
    /// Loaded from a .jz artifact.
    Loaded { decode_ms: f64, codegen_ms: f64 },
}

impl Prepared {
    /// Milliseconds from the file to a runnable session.
    fn total_ms(&self) -> f64 {
        match self {
            Prepared::Compiled { compile_ms } => *compile_ms,
            Prepared::Loaded {
                decode_ms,
                codegen_ms,
            } => decode_ms + codegen_ms,
        }
    }
}

/// Opens an .onnx model (import, optionally optimize, compile for `target` or `default_target`) or a .jz artifact
/// (load for `target` or its own target).
fn prepare(
    path: &Path,
    target: Option<Target>,
    default_target: Target,
    threads: usize,
    opt: bool,
) -> Result<(Compiled, Target, Prepared)> {
    let options = CompileOptions {
        threads,
        ..CompileOptions::default()
    };
    if artifact::is_artifact_path(path) {
        let loaded = artifact::load(path, target, &options)
            .with_context(|| format!("cannot load {}", path.display()))?;
        let prepared = Prepared::Loaded {
            decode_ms: loaded.decode_ms,
            codegen_ms: loaded.codegen_ms,
        };
        return Ok((loaded.compiled, loaded.target, prepared));
    }
    let target = target.unwrap_or(default_target);
    let started = std::time::Instant::now();
    let mut model = load(path)?;
    // Ops the target lacks are left for the compile step to name (the optimizer could not extract them).
    if opt && jiuzhou_compiler::driver::missing_ops(&model.graph, target).is_empty() {
        let (g, stats) =
            jiuzhou_compiler::optimize_graph(&model.graph, target, &egraph::Options::default())
                .context("cannot optimize the model")?;
        tracing::info!(?stats, "optimized");
        model.graph = g;
    }
    let compiled = jiuzhou_compiler::compile_graph_with(model.graph, model.opset, target, &options)
        .context("cannot compile the model")?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok((compiled, target, Prepared::Compiled { compile_ms }))
}

/// Reads the `--input` files: `NAME=PATH` binds by name, `PATH` binds the next input in order.
fn read_inputs(sig: &jiuzhou_runtime::Signature, specs: &[String]) -> Result<Vec<(String, Value)>> {
    let mut named: Vec<(String, Value)> = Vec::new();
    let mut positional = 0usize;
    for spec in specs {
        let (name, file) = match spec.split_once('=') {
            Some((n, f)) if sig.inputs.iter().any(|p| p.name == n) => (n.to_string(), f),
            Some((n, _)) if !Path::new(spec).exists() => {
                let known: Vec<&str> = sig.inputs.iter().map(|p| p.name.as_str()).collect();
                bail!(
                    "unknown input `{n}` in --input {spec} (the model's inputs are: {})",
                    known.join(", ")
                );
            }
            _ => {
                let port = sig.inputs.get(positional).ok_or_else(|| {
                    anyhow!(
                        "--input {spec}: the model has only {} inputs",
                        sig.inputs.len()
                    )
                })?;
                positional += 1;
                (port.name.clone(), spec.as_str())
            }
        };
        let port = sig
            .inputs
            .iter()
            .find(|p| p.name == name)
            .expect("name was checked above");
        let value = io::read_value_file(Path::new(file), &port.ty)
            .with_context(|| format!("cannot read input `{name}`"))?;
        named.push((name, value));
    }
    Ok(named)
}

fn fmt_shape(ty: &ValueType) -> (String, String) {
    match ty {
        ValueType::Tensor(t) => (
            t.dtype.to_string(),
            match &t.shape {
                None => "[*]".into(),
                Some(d) => format!(
                    "[{}]",
                    d.iter().map(Dim::to_string).collect::<Vec<_>>().join(",")
                ),
            },
        ),
        other => (other.to_string(), String::new()),
    }
}

/// Prints rows as left-aligned columns.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

fn count_ops(g: &Graph, hist: &mut BTreeMap<&'static str, usize>) {
    for n in &g.nodes {
        *hist.entry(n.op.name()).or_default() += 1;
        for sub in n.op.subgraphs() {
            count_ops(sub, hist);
        }
    }
}

fn inspect(path: &Path) -> Result<ExitCode> {
    let model = load(path)?;
    let g = &model.graph;
    println!("model: {}", path.display());
    if !model.producer.is_empty() {
        println!("producer: {}", model.producer);
    }
    let opsets: Vec<String> = model
        .opsets
        .iter()
        .map(|(d, v)| format!("{} {v}", if d.is_empty() { "ai.onnx" } else { d.as_str() }))
        .collect();
    println!("ir_version: {}", model.ir_version);
    println!("opset: {} ({})", model.opset, opsets.join(", "));
    let ports = |ids: &[jiuzhou_ir::ValueId]| -> Vec<Vec<String>> {
        ids.iter()
            .map(|&id| {
                let v = g.value(id);
                let (dtype, shape) = fmt_shape(&v.ty);
                vec![v.name.clone(), dtype, shape]
            })
            .collect()
    };
    println!("inputs ({}):", g.inputs.len());
    print_table(&ports(&g.inputs));
    println!("outputs ({}):", g.outputs.len());
    print_table(&ports(&g.outputs));
    let (mut params, mut bytes, mut consts) = (0usize, 0usize, 0usize);
    for v in &g.values {
        if let Some(t) = &v.constant {
            consts += 1;
            params += t.len();
            bytes += t.len() * t.dtype().size_in_bytes();
        }
    }
    println!("parameters: {params} ({consts} constants, {bytes} bytes)");
    let mut hist = BTreeMap::new();
    count_ops(g, &mut hist);
    let mut rows: Vec<(&str, usize)> = hist.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: usize = rows.iter().map(|r| r.1).sum();
    println!("ops ({} kinds, {total} nodes):", rows.len());
    print_table(
        &rows
            .iter()
            .map(|(n, c)| vec![n.to_string(), c.to_string()])
            .collect::<Vec<_>>(),
    );
    Ok(ExitCode::SUCCESS)
}

fn opt_options(disabled_rules: Vec<String>) -> Result<egraph::Options> {
    let known = egraph::rules::all_rule_names();
    if let Some(bad) = disabled_rules.iter().find(|r| !known.contains(r)) {
        bail!(
            "unknown rule `{bad}` in --disable-rules (known: {})",
            known.join(", ")
        );
    }
    Ok(egraph::Options {
        disabled_rules,
        ..egraph::Options::default()
    })
}

fn opt_model(path: &Path, target: Target, disabled_rules: Vec<String>) -> Result<ExitCode> {
    let model = load(path)?;
    let (g, stats) =
        jiuzhou_compiler::optimize_graph(&model.graph, target, &opt_options(disabled_rules)?)
            .context("cannot optimize the model")?;
    print!("{}", jiuzhou_ir::text::print(&g));
    eprintln!(
        "optimized {} -> {} nodes in {:.1} ms ({} e-nodes, {} iterations, stopped: {})",
        stats.imported_nodes,
        stats.optimized_nodes,
        stats.optimize_ms,
        stats.egraph_nodes,
        stats.iterations,
        stats.stop_reason
    );
    Ok(ExitCode::SUCCESS)
}

fn compile_model(
    path: &Path,
    target: Target,
    output: Option<&Path>,
    threads: usize,
    print_stats: bool,
    no_opt: bool,
    disabled_rules: Vec<String>,
) -> Result<ExitCode> {
    let model = load(path)?;
    let imported_nodes = model.graph.nodes.len();
    let (graph, stats) = if no_opt {
        (model.graph, None)
    } else {
        let (g, s) =
            jiuzhou_compiler::optimize_graph(&model.graph, target, &opt_options(disabled_rules)?)
                .context("cannot optimize the model")?;
        (g, Some(s))
    };
    let kernels = graph.nodes.len();
    // How many nodes of each op the compiled graph has (sorted by op name); fused ops with an activation are
    // counted as `Op[activation]`, so that an activation recognized and then fused still shows; a FusedElementwise
    // as `FusedElementwise[its expression]` (a SiLU fused with what follows shows as `silu`).
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    for node in &graph.nodes {
        let activation = match &node.op {
            jiuzhou_ir::Op::FusedConv(c) => Some(c.activation),
            jiuzhou_ir::Op::FusedConvNhwc(c) => Some(c.activation),
            jiuzhou_ir::Op::FusedMatMul(m) => Some(m.activation),
            _ => None,
        };
        let key = match (activation, &node.op) {
            (Some(a), _) if a != jiuzhou_ir::ops::Activation::None => {
                format!("{}[{a}]", node.op.name())
            }
            (_, jiuzhou_ir::Op::FusedElementwise(f)) => format!("{}[{}]", node.op.name(), f.expr),
            _ => node.op.name().to_string(),
        };
        *ops.entry(key).or_default() += 1;
    }
    let ops = serde_json::json!(ops);
    if output.is_some() && matches!(target, Target::Vnpu(_)) {
        bail!("-o: compiled artifacts are written for the reference and cpu targets, not {target}");
    }
    // The artifact holds the graph the executable was compiled from.
    let saved = output.map(|_| graph.clone());
    let mut vnpu = None;
    let mut compiled = None;
    if let Target::Vnpu(profile) = target {
        let flops = jiuzhou_compiler::node_flops(&graph);
        let exec = jiuzhou_compiler::compile_vnpu(
            graph,
            model.opset,
            profile,
            &jiuzhou_target_vnpu::Options::default(),
        )
        .context("cannot compile the model")?;
        vnpu = Some((exec, flops));
    } else {
        compiled = Some(
            jiuzhou_compiler::compile_graph_with(
                graph,
                model.opset,
                target,
                &CompileOptions {
                    threads,
                    ..CompileOptions::default()
                },
            )
            .context("cannot compile the model")?,
        );
    }
    println!(
        "compiled {} for {target}: {kernels} kernel(s)",
        path.display()
    );
    let mut artifact_bytes = None;
    if let (Some(out), Some(graph)) = (output, saved) {
        let n = Artifact::new(graph, model.opset, target)
            .write(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!("wrote {} ({n} bytes)", out.display());
        artifact_bytes = Some(n);
    }
    let target_stats = compiled.map(|c| c.stats).unwrap_or_default();
    let mut vnpu_stats = None;
    if let Some((exec, flops)) = &vnpu {
        print_placement(exec.placement(), flops);
        if exec.is_dynamic() {
            println!(
                "  the inputs have dynamic shapes: `run` places the nodes again for the shapes it is given"
            );
        }
        println!("transfers: {} bytes per run", exec.transfers_bytes());
        if print_stats {
            let cycles = exec
                .simulate_cycles()
                .context("cannot simulate the model")?;
            vnpu_stats = Some((
                placement_json(exec.placement(), flops),
                cycles,
                exec.transfers_bytes(),
            ));
        }
    }
    if print_stats {
        let mut json = serde_json::json!({
            "target": target.to_string(),
            "imported_nodes": imported_nodes,
            "optimized_nodes": stats.as_ref().map_or(imported_nodes, |s| s.optimized_nodes),
            "kernels": kernels,
            "optimize_ms": stats.as_ref().map_or(0.0, |s| s.optimize_ms),
            "egraph_nodes": stats.as_ref().map_or(0, |s| s.egraph_nodes),
            "iterations": stats.as_ref().map_or(0, |s| s.iterations),
            "stop_reason": stats.as_ref().map_or("not run".to_string(), |s| s.stop_reason.clone()),
            "fallback_ops": target_stats.fallback_ops,
            "peak_arena_bytes": target_stats.peak_arena_bytes,
            "arena_symbols": target_stats.arena_symbols,
            "threads": target_stats.threads,
            "conv_kernels": target_stats.conv_kernels,
            "ops": ops,
        });
        if let Some((placement, cycles, bytes)) = vnpu_stats {
            json["placement"] = placement;
            json["sim_cycles"] = cycles.into();
            json["transfers_bytes"] = bytes.into();
        }
        if let Some(n) = artifact_bytes {
            json["artifact_bytes"] = n.into();
        }
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// How `bench` runs.
struct BenchOptions {
    iters: usize,
    warmup: usize,
    seed: u64,
    opt: bool,
    json: bool,
    /// Profile the kernels, listing this many.
    profile: Option<usize>,
}

/// A small deterministic generator (splitmix64), so random bench inputs are the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A random tensor for an input port: floats uniform in [-1, 1), integers and bools 0 or 1 (valid indices and
/// masks), symbolic dims set to 1.
fn random_input(port: &jiuzhou_runtime::Port, rng: &mut SplitMix) -> Result<Value> {
    use jiuzhou_ir::{DType, Tensor};
    let ValueType::Tensor(tt) = &port.ty else {
        bail!(
            "input `{}` is a {}: give it with --input {}=PATH",
            port.name,
            port.ty,
            port.name
        );
    };
    let Some(dims) = &tt.shape else {
        bail!(
            "input `{}` has an unknown rank: give it with --input {}=PATH",
            port.name,
            port.name
        );
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Sym(s) => {
                tracing::warn!(input = %port.name, dim = %s, "random input: symbolic dim set to 1");
                1
            }
        })
        .collect();
    let n = jiuzhou_ir::tensor::checked_numel(&shape, tt.dtype)
        .with_context(|| format!("input `{}`", port.name))?;
    let t = match tt.dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| rng.unit() as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|_| rng.unit()).collect()),
        DType::I64 => Tensor::from_vec(shape, (0..n).map(|_| (rng.next() & 1) as i64).collect()),
        DType::I32 => Tensor::from_vec(shape, (0..n).map(|_| (rng.next() & 1) as i32).collect()),
        DType::U8 => Tensor::from_vec(shape, (0..n).map(|_| (rng.next() & 1) as u8).collect()),
        DType::Bool => Tensor::from_vec(shape, (0..n).map(|_| rng.next() & 1 == 1).collect()),
        other => bail!(
            "no random {other} inputs: give `{}` with --input {}=PATH",
            port.name,
            port.name
        ),
    }?;
    Ok(Value::Tensor(std::sync::Arc::new(t)))
}

fn bench_model(
    path: &Path,
    target: Option<Target>,
    threads: usize,
    opts: BenchOptions,
    specs: &[String],
) -> Result<ExitCode> {
    if opts.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let (compiled, target, prepared) = prepare(path, target, Target::Cpu, threads, opts.opt)?;
    let session = compiled.session;
    let sig = session.signature().clone();
    let mut named = read_inputs(&sig, specs)?;
    let mut rng = SplitMix(opts.seed);
    for port in &sig.inputs {
        if !named.iter().any(|(n, _)| *n == port.name) {
            named.push((port.name.clone(), random_input(port, &mut rng)?));
        }
    }
    let mut inputs = Vec::with_capacity(sig.inputs.len());
    for port in &sig.inputs {
        let i = named
            .iter()
            .position(|(n, _)| *n == port.name)
            .expect("every input was bound above");
        inputs.push(named.swap_remove(i).1);
    }
    for _ in 0..opts.warmup {
        session.run(inputs.clone()).context("run failed")?;
    }
    let mut times = Vec::with_capacity(opts.iters);
    for _ in 0..opts.iters {
        let started = std::time::Instant::now();
        let out = session.run(inputs.clone()).context("run failed")?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    times.sort_by(f64::total_cmp);
    let (min, max) = (times[0], times[times.len() - 1]);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    };
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let threads = compiled.stats.threads;
    println!(
        "{} on {target} ({threads} thread(s)): {} in {:.1} ms",
        path.display(),
        if matches!(prepared, Prepared::Loaded { .. }) {
            "loaded"
        } else {
            "compiled"
        },
        prepared.total_ms()
    );
    println!(
        "latency over {} run(s) after {} warm-up: min {min:.3} ms, median {median:.3} ms, max {max:.3} ms",
        opts.iters, opts.warmup
    );
    let profile = match opts.profile {
        Some(top) => Some(profile_kernels(&session, &inputs, opts.iters, top)?),
        None => None,
    };
    if opts.json {
        let mut json = serde_json::json!({
            "model": path.display().to_string(),
            "target": target.to_string(),
            "threads": threads,
            "iters": opts.iters,
            "warmup": opts.warmup,
            "min_ms": min,
            "median_ms": median,
            "max_ms": max,
            "mean_ms": mean,
            "compile_ms": prepared.total_ms(),
        });
        if let Some(bytes) = session.last_run_arena_bytes() {
            json["run_arena_bytes"] = bytes.into();
        }
        if let Some(p) = profile {
            json["profile"] = p;
        }
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `iters` profiled runs, prints the `top` costliest steps (each step's minimum time over the runs) and a
/// summary per op, and returns every step as JSON.
fn profile_kernels(
    session: &jiuzhou_runtime::Session,
    inputs: &[Value],
    iters: usize,
    top: usize,
) -> Result<serde_json::Value> {
    let mut steps: Vec<jiuzhou_runtime::StepProfile> = Vec::new();
    for _ in 0..iters {
        let (out, prof) = session
            .run_profiled(inputs.to_vec())
            .context("profiled run failed")?;
        drop(out);
        if steps.is_empty() {
            steps = prof;
        } else if prof.len() == steps.len() {
            for (s, p) in steps.iter_mut().zip(prof) {
                s.seconds = s.seconds.min(p.seconds);
            }
        } else {
            bail!("the profiled runs ran different numbers of kernels");
        }
    }
    let total: f64 = steps.iter().map(|s| s.seconds).sum();
    let pct = |s: f64| if total > 0.0 { 100.0 * s / total } else { 0.0 };
    let gflops = |s: &jiuzhou_runtime::StepProfile| {
        (s.flops > 0.0 && s.seconds > 0.0).then(|| s.flops / s.seconds / 1e9)
    };
    let shape = |s: &[usize]| {
        let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(","))
    };
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by(|&a, &b| {
        steps[b]
            .seconds
            .total_cmp(&steps[a].seconds)
            .then(a.cmp(&b))
    });
    println!(
        "profile: {} kernels, {:.3} ms in kernels (each kernel's minimum over {iters} profiled run(s))",
        steps.len(),
        total * 1e3
    );
    println!(
        "{:>4}  {:>9}  {:>6}  {:>8}  {:<28}  {:<32}  shape",
        "rank", "ms", "%", "GFLOP/s", "op", "node"
    );
    for (rank, &i) in order.iter().take(top).enumerate() {
        let s = &steps[i];
        println!(
            "{:>4}  {:>9.3}  {:>6.2}  {:>8}  {:<28}  {:<32}  {}",
            rank + 1,
            s.seconds * 1e3,
            pct(s.seconds),
            gflops(s).map_or_else(|| "-".to_string(), |g| format!("{g:.1}")),
            s.op,
            s.node,
            shape(&s.shape)
        );
    }
    // Per op: count, time, share, and the GFLOP/s of all its matrix products together.
    let mut by_op: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for s in &steps {
        let e = by_op.entry(&s.op).or_default();
        e.0 += 1;
        e.1 += s.seconds;
        e.2 += s.flops;
    }
    let mut ops: Vec<(&str, (usize, f64, f64))> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.1.total_cmp(&a.1.1).then(a.0.cmp(b.0)));
    println!("by op:");
    println!(
        "{:>5}  {:>9}  {:>6}  {:>8}  op",
        "count", "ms", "%", "GFLOP/s"
    );
    for (op, (count, secs, flops)) in &ops {
        let g = (*flops > 0.0 && *secs > 0.0).then(|| flops / secs / 1e9);
        println!(
            "{count:>5}  {:>9.3}  {:>6.2}  {:>8}  {op}",
            secs * 1e3,
            pct(*secs),
            g.map_or_else(|| "-".to_string(), |g| format!("{g:.1}"))
        );
    }
    Ok(steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "op": s.op,
                "node": s.node,
                "shape": s.shape,
                "ms": s.seconds * 1e3,
                "percent": pct(s.seconds),
                "gflops": gflops(s),
            })
        })
        .collect())
}

/// Prints where the nodes run: how many on the NPU, their share of the FLOPs, and every op on the host with why.
/// The estimated FLOPs on the NPU and on the host CPU.
fn flops_by_device(p: &jiuzhou_target_vnpu::Placement, flops: &[f64]) -> (f64, f64) {
    let (mut npu, mut cpu) = (0.0, 0.0);
    for (n, f) in p.nodes.iter().zip(flops) {
        if n.npu {
            npu += f;
        } else {
            cpu += f;
        }
    }
    (npu, cpu)
}

fn print_placement(p: &jiuzhou_target_vnpu::Placement, flops: &[f64]) {
    let (npu, cpu) = flops_by_device(p, flops);
    let human = |f: f64| {
        if f >= 1e9 {
            format!("{:.2} GFLOP", f / 1e9)
        } else if f >= 1e6 {
            format!("{:.2} MFLOP", f / 1e6)
        } else {
            format!("{f:.0} FLOP")
        }
    };
    println!(
        "placement: {} of {} nodes on the NPU ({:.1}% of FLOPs: {} on the NPU, {} on the host)",
        p.npu_nodes(),
        p.nodes.len(),
        100.0 * p.npu_flops_share(flops),
        human(npu),
        human(cpu)
    );
    let fused = p
        .nodes
        .iter()
        .filter(|n| n.npu && n.reason.is_some())
        .count();
    if fused > 0 {
        println!("  {fused} node(s) fused into NPU kernels");
    }
    for (op, reason, count) in p.fallbacks() {
        println!("  on the host CPU: {count} x {op}: {reason}");
    }
}

fn placement_json(p: &jiuzhou_target_vnpu::Placement, flops: &[f64]) -> serde_json::Value {
    let fallbacks: Vec<serde_json::Value> = p
        .fallbacks()
        .into_iter()
        .map(
            |(op, reason, count)| serde_json::json!({ "op": op, "reason": reason, "count": count }),
        )
        .collect();
    let nodes: Vec<serde_json::Value> = p
        .nodes
        .iter()
        .zip(flops)
        .map(|(n, f)| {
            serde_json::json!({
                "name": n.name,
                "op": n.op,
                "device": if n.npu { "npu" } else { "cpu" },
                "reason": n.reason,
                "flops": f,
            })
        })
        .collect();
    let (npu_flops, cpu_flops) = flops_by_device(p, flops);
    serde_json::json!({
        "npu_nodes": p.npu_nodes(),
        "cpu_nodes": p.nodes.len() - p.npu_nodes(),
        "total_nodes": p.nodes.len(),
        "npu_flops_fraction": p.npu_flops_share(flops),
        "npu_flops": npu_flops,
        "cpu_flops": cpu_flops,
        "fallbacks": fallbacks,
        "nodes": nodes,
    })
}

fn run_model(
    path: &Path,
    target: Option<Target>,
    threads: usize,
    specs: &[String],
    out_dir: &Path,
    opt: bool,
    trace: Option<&Path>,
) -> Result<ExitCode> {
    let vnpu_profile = match target {
        Some(Target::Vnpu(p)) => Some(p),
        _ if trace.is_some() => bail!("--trace needs a vnpu target (--target vnpu[:PROFILE])"),
        _ => None,
    };
    let mut vnpu = None;
    let (session, prepared) = match vnpu_profile {
        Some(profile) => {
            let started = std::time::Instant::now();
            let mut model = load(path)?;
            if opt {
                let (g, stats) = jiuzhou_compiler::optimize_graph(
                    &model.graph,
                    Target::Vnpu(profile),
                    &egraph::Options::default(),
                )
                .context("cannot optimize the model")?;
                tracing::info!(?stats, "optimized");
                model.graph = g;
            }
            let signature = jiuzhou_runtime::Signature::of(&model.graph);
            let options = jiuzhou_target_vnpu::Options {
                record_trace: trace.is_some(),
                ..Default::default()
            };
            let exec = jiuzhou_compiler::compile_vnpu(model.graph, model.opset, profile, &options)
                .context("cannot compile the model")?;
            vnpu = Some(exec.clone());
            let session = jiuzhou_runtime::Session::new(
                signature,
                Box::new(jiuzhou_compiler::SharedVnpu(exec)),
            );
            let compile_ms = started.elapsed().as_secs_f64() * 1e3;
            (session, Prepared::Compiled { compile_ms })
        }
        None => {
            let (compiled, _, prepared) = prepare(path, target, Target::Reference, threads, opt)?;
            (compiled.session, prepared)
        }
    };
    let sig = session.signature().clone();
    let named = read_inputs(&sig, specs)?;
    let started = std::time::Instant::now();
    let outputs = session.run_named(named).context("run failed")?;
    let run_time = started.elapsed();
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut rows = vec![vec![
        "#".to_string(),
        "name".into(),
        "dtype".into(),
        "shape".into(),
    ]];
    for (k, (port, v)) in sig.outputs.iter().zip(&outputs).enumerate() {
        let Value::Tensor(t) = v else {
            bail!(
                "output {k} (`{}`) is a {}, which cannot be written as .npy",
                port.name,
                jiuzhou_runtime::describe(v)
            );
        };
        let file = out_dir.join(format!("output_{k}.npy"));
        io::write_npy(&file, t).with_context(|| format!("cannot write {}", file.display()))?;
        let shape = format!(
            "[{}]",
            t.shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        rows.push(vec![
            k.to_string(),
            port.name.clone(),
            t.dtype().to_string(),
            shape,
        ]);
    }
    let run_ms = run_time.as_secs_f64() * 1e3;
    match prepared {
        Prepared::Compiled { compile_ms } => {
            println!("compiled in {compile_ms:.1} ms, ran in {run_ms:.1} ms")
        }
        Prepared::Loaded {
            decode_ms,
            codegen_ms,
        } => println!(
            "loaded in {:.1} ms (decode {decode_ms:.1} ms, codegen {codegen_ms:.1} ms), ran in {run_ms:.1} ms",
            decode_ms + codegen_ms
        ),
    }
    println!("outputs ({} on {}):", outputs.len(), session.target_name());
    print_table(&rows);
    println!(
        "wrote {} output file(s) to {}",
        outputs.len(),
        out_dir.display()
    );
    if let Some(exec) = vnpu {
        let stats = exec.last_run().unwrap_or_default();
        // A dynamic-shape graph ran as its specialization to the given input shapes.
        let p = stats.placement.as_ref().unwrap_or(exec.placement());
        let mhz = exec.profile().clock_mhz.max(1);
        println!(
            "vnpu: {} of {} nodes on the NPU; simulated {} cycles ({:.1} us at {mhz} MHz); transfers {} bytes",
            p.npu_nodes(),
            p.nodes.len(),
            stats.sim_cycles,
            stats.sim_cycles as f64 / mhz as f64,
            stats.transfers_bytes
        );
        if let Some(file) = trace {
            let mut tb = jiuzhou_target_vnpu::trace::TraceBuilder::new(exec.profile());
            for (name, report) in &stats.kernels {
                tb.add(name, report);
            }
            let f = std::fs::File::create(file)
                .with_context(|| format!("cannot create {}", file.display()))?;
            tb.write(std::io::BufWriter::new(f))
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "wrote trace of {} kernel(s) to {}",
                stats.kernels.len(),
                file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The options of `conformance`.
struct ConformanceArgs<'a> {
    report: Option<&'a Path>,
    filter: Option<&'a str>,
    pass_list: Option<&'a Path>,
    update: bool,
    jobs: Option<usize>,
    threads: usize,
    no_opt: bool,
}

fn run_conformance(target: Target, suite: &Path, args: ConformanceArgs<'_>) -> Result<ExitCode> {
    let ConformanceArgs {
        report,
        filter,
        pass_list,
        update,
        jobs,
        threads,
        no_opt,
    } = args;
    let mut cases = conformance::list_cases(suite)
        .with_context(|| format!("cannot read suite folder {}", suite.display()))?;
    if let Some(f) = filter {
        cases.retain(|c| c.contains(f));
    }
    if cases.is_empty() {
        bail!(
            "no cases in {} (expected CASE/model.onnx folders)",
            suite.display()
        );
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = CompileOptions {
        optimize: !no_opt,
        threads,
        ..CompileOptions::default()
    };
    let results = conformance::run_cases_with(suite, &cases, target, jobs, &options);
    for r in &results {
        if r.status == Status::Failed {
            println!("FAIL {}: {}", r.name, r.reason.as_deref().unwrap_or(""));
        }
    }
    let summary = Summary::of(&results);
    let mut code = if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if let Some(list_path) = pass_list {
        let mut listed = conformance::read_pass_list(list_path)
            .with_context(|| format!("cannot read pass list {}", list_path.display()))?;
        let regressions: Vec<&str> = results
            .iter()
            .filter(|r| r.status != Status::Passed && listed.contains(&r.name))
            .map(|r| r.name.as_str())
            .collect();
        let new: Vec<String> = results
            .iter()
            .filter(|r| r.status == Status::Passed && !listed.contains(&r.name))
            .map(|r| r.name.clone())
            .collect();
        for r in &regressions {
            println!(
                "REGRESSION {r}: listed in {} but failed",
                list_path.display()
            );
        }
        println!(
            "pass list: {} listed, {} regressions, {} newly passing",
            listed.len(),
            regressions.len(),
            new.len()
        );
        if update && !new.is_empty() {
            listed.extend(new);
            conformance::write_pass_list(list_path, target, &listed)
                .with_context(|| format!("cannot write {}", list_path.display()))?;
            println!("updated {}", list_path.display());
        }
        code = if regressions.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(path) = report {
        let json = serde_json::json!({
            "target": target.to_string(),
            "suite": suite.display().to_string(),
            "summary": summary,
            "cases": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    println!("{summary}");
    Ok(code)
}

/// A number for the JSON report: finite numbers as they are, infinities as the strings `inf` and `-inf`.
fn json_num(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else if x.is_nan() {
        serde_json::json!("nan")
    } else if x > 0.0 {
        serde_json::json!("inf")
    } else {
        serde_json::json!("-inf")
    }
}

/// A file name for tensor `name` (row `index`, so that names stay unique and files sort in graph order).
fn dump_name(index: usize, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index:04}_{safe}.npy")
}

fn fmt_kernel(kernel: &[harness::NodeRef]) -> String {
    kernel
        .iter()
        .map(|k| format!("{} ({})", k.node, k.op))
        .collect::<Vec<_>>()
        .join(", ")
}

fn compare_model(
    path: &Path,
    options: &harness::Options,
    specs: &[String],
    report: Option<&Path>,
    dump_dir: Option<&Path>,
    seed: u64,
) -> Result<ExitCode> {
    let model = load(path)?;
    let sig = jiuzhou_runtime::Signature::of(&model.graph);
    let mut given = read_inputs(&sig, specs)?;
    let mut sources = Vec::new();
    let mut rng = harness::Rng::new(seed);
    let mut ordered = Vec::with_capacity(sig.inputs.len());
    for port in &sig.inputs {
        let mut matching = given.iter().filter(|(n, _)| *n == port.name);
        if matching.clone().count() > 1 {
            bail!("input `{}` is given more than once", port.name);
        }
        match matching.next() {
            Some((_, v)) => {
                ordered.push(v.clone());
                sources.push((port.name.clone(), "file"));
            }
            None => {
                ordered.push(harness::random_input(&port.name, &port.ty, &mut rng)?);
                sources.push((port.name.clone(), "random"));
            }
        }
    }
    given.clear();
    let cmp = harness::compare_graph(&model.graph, model.opset, ordered, options)
        .context("compare failed")?;
    print_comparison(path, &cmp, seed, &sources);
    if let Some(dir) = dump_dir {
        write_dumps(dir, &cmp)?;
    }
    if let Some(file) = report {
        let json = comparison_json(path, &cmp, seed, &sources);
        std::fs::write(file, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write report {}", file.display()))?;
    }
    Ok(if cmp.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn write_dumps(dir: &Path, cmp: &Comparison) -> Result<()> {
    let sides = [dir.join("reference"), dir.join(cmp.target.name())];
    for d in &sides {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut written = 0;
    for (row, want, got) in &cmp.pairs {
        let (Value::Tensor(w), Value::Tensor(g)) = (want, got) else {
            tracing::warn!(tensor = %cmp.rows[*row].tensor, "not a tensor: not dumped");
            continue;
        };
        let name = dump_name(*row, &cmp.rows[*row].tensor);
        for (d, t) in sides.iter().zip([w, g]) {
            let file = d.join(&name);
            io::write_npy(&file, t).with_context(|| format!("cannot write {}", file.display()))?;
        }
        written += 1;
    }
    println!(
        "wrote {written} tensor pair(s) to {}/{{reference,{}}}",
        dir.display(),
        cmp.target.name()
    );
    Ok(())
}

fn print_comparison(path: &Path, cmp: &Comparison, seed: u64, sources: &[(String, &str)]) {
    let random: Vec<&str> = sources
        .iter()
        .filter(|(_, s)| *s == "random")
        .map(|(n, _)| n.as_str())
        .collect();
    println!(
        "compare {} on {} ({}) against reference, expect {}",
        path.display(),
        cmp.target,
        if cmp.optimized {
            format!("optimized, {} nodes", cmp.target_nodes)
        } else {
            "not optimized".to_string()
        },
        cmp.expect.name().to_lowercase()
    );
    if !random.is_empty() {
        println!("random inputs (seed {seed}): {}", random.join(", "));
    }
    let mut rows = vec![
        [
            "#",
            "tensor",
            "node",
            "op",
            "type",
            "verdict",
            "max|diff|",
            "cosine",
            "euclid",
            "sqnr_db",
            "note",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for (i, r) in cmp.rows.iter().enumerate() {
        let (verdict, nums) = match &r.grade {
            Some(g) => (
                g.verdict.name().to_string(),
                match &g.metrics {
                    Some(m) => vec![
                        format!("{:.3e}", m.max_abs_diff),
                        format!("{:.6}", m.cosine),
                        format!("{:.6}", m.euclidean),
                        if m.sqnr_db.is_infinite() && m.sqnr_db > 0.0 {
                            "inf".to_string()
                        } else {
                            format!("{:.1}", m.sqnr_db)
                        },
                    ],
                    None => vec!["-".into(); 4],
                },
            ),
            None => ("-".to_string(), vec!["".into(); 4]),
        };
        let mut note = r.note.clone();
        if let Some(n) = r.grade.as_ref().and_then(|g| g.note.as_ref())
            && r.grade
                .as_ref()
                .is_some_and(|g| !g.verdict.meets(cmp.expect))
        {
            note = if note.is_empty() {
                n.clone()
            } else {
                format!("{note}; {n}")
            };
        }
        if Some(i) == cmp.first_diverging {
            note = if note.is_empty() {
                "<- first divergence".into()
            } else {
                format!("<- first divergence; {note}")
            };
        }
        let mut row = vec![
            i.to_string(),
            if r.output {
                format!("{} (output)", r.tensor)
            } else {
                r.tensor.clone()
            },
            r.node.node.clone(),
            r.node.op.clone(),
            r.ty.clone(),
            verdict,
        ];
        row.extend(nums);
        row.push(note);
        rows.push(row);
    }
    print_table(&rows);
    let (by, none) = cmp.counts();
    let count = |v: Verdict| by.get(&v).copied().unwrap_or(0);
    println!(
        "compare: {} tensors: {} EQUAL, {} CLOSE, {} SIMILAR, {} DIFFERENT, {} not compared",
        cmp.rows.len(),
        count(Verdict::Equal),
        count(Verdict::Close),
        count(Verdict::Similar),
        count(Verdict::Different),
        none
    );
    match cmp.first_diverging {
        None => println!(
            "no divergence: every compared tensor is {} or better",
            cmp.expect
        ),
        Some(i) => {
            let r = &cmp.rows[i];
            let verdict = r.grade.as_ref().map_or(Verdict::Different, |g| g.verdict);
            let kernel = if r.kernel.len() > 1 {
                format!(
                    "; on {} it is computed by one fused kernel of ONNX nodes {}: the error is inside it",
                    cmp.target,
                    fmt_kernel(&r.kernel)
                )
            } else {
                String::new()
            };
            println!(
                "first diverging node: {} ({}), tensor `{}`: {verdict}, expected {} or better{kernel}",
                r.node.node, r.node.op, r.tensor, cmp.expect
            );
        }
    }
}

fn comparison_json(
    path: &Path,
    cmp: &Comparison,
    seed: u64,
    sources: &[(String, &str)],
) -> serde_json::Value {
    use serde_json::json;
    let tensors: Vec<serde_json::Value> = cmp
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut o = json!({
                "index": i,
                "tensor": r.tensor,
                "node": r.node.node,
                "op": r.node.op,
                "type": r.ty,
                "output": r.output,
                "compared": r.grade.is_some(),
                "verdict": r.grade.as_ref().map(|g| g.verdict.name()),
                "target_tensor": r.target_tensor,
                "kernel": r.kernel,
                "note": r.note,
            });
            if let Some(g) = &r.grade {
                o["mismatch"] = json!(g.note);
                if let Some(m) = &g.metrics {
                    o["max_abs_diff"] = json_num(m.max_abs_diff);
                    o["mismatches"] = json!(m.mismatches);
                    o["elements"] = json!(m.elements);
                    o["cosine"] = json_num(m.cosine);
                    o["euclidean"] = json_num(m.euclidean);
                    o["sqnr_db"] = json_num(m.sqnr_db);
                    o["agreement"] = json_num(m.agreement);
                }
            }
            o
        })
        .collect();
    let thresholds: serde_json::Map<String, serde_json::Value> = cmp
        .pairs
        .iter()
        .filter_map(|(_, w, _)| w.as_tensor().map(|t| t.dtype()))
        .map(|d| {
            (
                d.to_string(),
                json!(jiuzhou_compiler::compare::thresholds(d)),
            )
        })
        .collect();
    let (by, none) = cmp.counts();
    let count = |v: Verdict| by.get(&v).copied().unwrap_or(0);
    let first = cmp.first_diverging.map(|i| {
        let r = &cmp.rows[i];
        json!({
            "index": i,
            "tensor": r.tensor,
            "node": r.node.node,
            "op": r.node.op,
            "verdict": r.grade.as_ref().map(|g| g.verdict.name()),
            "kernel": r.kernel,
        })
    });
    json!({
        "model": path.display().to_string(),
        "target": cmp.target.name(),
        "optimized": cmp.optimized,
        "expect": cmp.expect.name(),
        "seed": seed,
        "inputs": sources.iter().map(|(n, s)| json!({"name": n, "source": s})).collect::<Vec<_>>(),
        "thresholds": thresholds,
        "tensors": tensors,
        "summary": {
            "tensors": cmp.rows.len(),
            "equal": count(Verdict::Equal),
            "close": count(Verdict::Close),
            "similar": count(Verdict::Similar),
            "different": count(Verdict::Different),
            "not_compared": none,
            "pass": cmp.passed(),
            "first_diverging": first,
        },
    })
}
