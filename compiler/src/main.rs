//! The `jiuzhou` command line: inspect, run and conformance-test ONNX models.
//!
//! Every failure prints one `error: ...` line and exits non-zero; `-v`/`-vv` turn on `tracing` diagnostics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use jiuzhou_compiler::conformance::{self, Status, Summary};
use jiuzhou_compiler::{CompileOptions, Target, io, onnx};
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
    /// Run a model on input tensors and write its outputs as .npy files.
    Run {
        /// The ONNX model.
        model: PathBuf,
        /// Target to run on.
        #[arg(long, default_value = "reference", value_parser = parse_target)]
        target: Target,
        /// An input: NAME=PATH, or PATH to bind graph inputs in order. PATH is a .npy or a TensorProto .pb file.
        #[arg(long = "input", value_name = "[NAME=]PATH")]
        inputs: Vec<String>,
        /// Folder for output_K.npy (the K-th graph output).
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// Do not run the e-graph optimizer (it runs by default).
        #[arg(long)]
        no_opt: bool,
        /// Accepted for compatibility: optimization is on by default now.
        #[arg(long, hide = true, conflicts_with = "no_opt")]
        opt: bool,
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
    /// Compile a model for a target (optimizing it first).
    Compile {
        /// The ONNX model.
        model: PathBuf,
        /// Target to compile for.
        #[arg(long, default_value = "reference", value_parser = parse_target)]
        target: Target,
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
        /// Do not run the e-graph optimizer (it runs by default).
        #[arg(long)]
        no_opt: bool,
    },
}

fn parse_target(s: &str) -> Result<Target, String> {
    Target::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        format!("unknown target `{s}` (known: {})", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            inputs,
            output_dir,
            no_opt,
            opt: _,
        } => run_model(&model, target, &inputs, &output_dir, no_opt),
        Command::Opt {
            model,
            target,
            disable_rules,
        } => opt_model(&model, target, disable_rules),
        Command::Compile {
            model,
            target,
            stats,
            no_opt,
            disable_rules,
        } => compile_model(&model, target, stats, no_opt, disable_rules),
        Command::Conformance {
            target,
            suite,
            report,
            filter,
            pass_list,
            update_pass_list,
            jobs,
            no_opt,
        } => run_conformance(
            target,
            &suite,
            report.as_deref(),
            filter.as_deref(),
            pass_list.as_deref(),
            update_pass_list,
            jobs,
            no_opt,
        ),
    }
}

fn load(path: &Path) -> Result<onnx::Model> {
    onnx::load_model(path).with_context(|| format!("cannot load {}", path.display()))
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
    jiuzhou_compiler::compile_graph(graph, model.opset, target)
        .context("cannot compile the model")?;
    println!(
        "compiled {} for {target}: {kernels} kernel(s)",
        path.display()
    );
    if print_stats {
        let json = serde_json::json!({
            "target": target.name(),
            "imported_nodes": imported_nodes,
            "optimized_nodes": stats.as_ref().map_or(imported_nodes, |s| s.optimized_nodes),
            "kernels": kernels,
            "optimize_ms": stats.as_ref().map_or(0.0, |s| s.optimize_ms),
            "egraph_nodes": stats.as_ref().map_or(0, |s| s.egraph_nodes),
            "iterations": stats.as_ref().map_or(0, |s| s.iterations),
            "stop_reason": stats.as_ref().map_or("not run".to_string(), |s| s.stop_reason.clone()),
        });
        println!("{json}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_model(
    path: &Path,
    target: Target,
    specs: &[String],
    out_dir: &Path,
    no_opt: bool,
) -> Result<ExitCode> {
    let model = load(path)?;
    let options = if no_opt {
        CompileOptions::no_opt()
    } else {
        CompileOptions::default()
    };
    let started = std::time::Instant::now();
    let session = jiuzhou_compiler::compile_with(model, target, &options)
        .context("cannot compile the model")?;
    let compile_time = started.elapsed();
    let sig = session.signature().clone();
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
    println!(
        "compiled in {:.1} ms, ran in {:.1} ms",
        compile_time.as_secs_f64() * 1e3,
        run_time.as_secs_f64() * 1e3
    );
    println!("outputs ({} on {}):", outputs.len(), session.target_name());
    print_table(&rows);
    println!(
        "wrote {} output file(s) to {}",
        outputs.len(),
        out_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)] // One argument per command-line flag.
fn run_conformance(
    target: Target,
    suite: &Path,
    report: Option<&Path>,
    filter: Option<&str>,
    pass_list: Option<&Path>,
    update: bool,
    jobs: Option<usize>,
    no_opt: bool,
) -> Result<ExitCode> {
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
    let options = if no_opt {
        CompileOptions::no_opt()
    } else {
        CompileOptions::default()
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
            "target": target.name(),
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
