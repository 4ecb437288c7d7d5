//! The conformance runner: runs ONNX backend-style test cases on a target and compares with expected outputs.
//!
//! A suite is a folder of cases, each `CASE/model.onnx` with `CASE/test_data_set_N/{input,output}_K.pb` (the
//! layout of onnx's own backend test data). Results are deterministic and ordered by case name.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use jiuzhou_ir::Value;

use crate::compare::{Tolerance, compare_values};
use crate::driver::{CompileError, CompileOptions, Target, compile_graph_with};
use crate::onnx::{self, ImportError};

/// Cases whose expected outputs come from a random generator, so no implementation can reproduce them.
pub const SKIPPED: &[(&str, &str)] = &[
    ("test_bernoulli", "output is random"),
    ("test_dropout_random", "output is random"),
    (
        "test_training_dropout",
        "output is random (training-mode dropout mask)",
    ),
    ("test_randomnormal", "output is random"),
    ("test_randomuniform", "output is random"),
    ("test_multinomial", "output is random"),
];

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every output of every data set matched.
    Passed,
    /// Something failed; see the reason.
    Failed,
    /// Not run; see the reason.
    Skipped,
}

/// The result of one case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    /// Case name (its folder name).
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// Totals of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
}

impl Summary {
    /// Totals of `results`.
    pub fn of(results: &[CaseResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            match r.status {
                Status::Passed => s.passed += 1,
                Status::Failed => s.failed += 1,
                Status::Skipped => s.skipped += 1,
            }
        }
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conformance: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// The case folders of a suite (sub-folders holding a `model.onnx`), sorted by name.
pub fn list_cases(suite: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(suite)? {
        let entry = entry?;
        if entry.path().join("model.onnx").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Runs every case of `suite` whose name is in `cases` on `target`, on `jobs` threads, with the default
/// [`CompileOptions`].
pub fn run_cases(suite: &Path, cases: &[String], target: Target, jobs: usize) -> Vec<CaseResult> {
    run_cases_with(suite, cases, target, jobs, &CompileOptions::default())
}

/// Runs every case of `suite` whose name is in `cases` on `target`, on `jobs` threads, each compiled with
/// `options`.
pub fn run_cases_with(
    suite: &Path,
    cases: &[String],
    target: Target,
    jobs: usize,
    options: &CompileOptions,
) -> Vec<CaseResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<CaseResult>> = Mutex::new(Vec::with_capacity(cases.len()));
    // Ops report bad input as errors; a panic would be a bug. Catch it per case so one bug does not hide the rest
    // of the report, and keep the default hook from printing a backtrace for it.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = cases.get(i) else { break };
                    let r = run_case_with(&suite.join(name), name, target, options);
                    results
                        .lock()
                        .expect("no thread panics while holding the lock")
                        .push(r);
                }
            });
        }
    });
    std::panic::set_hook(hook);
    let mut results = results
        .into_inner()
        .expect("no thread panics while holding the lock");
    results.sort_by(|a, b| a.name.cmp(&b.name));
    results
}

/// Runs one case folder with the default [`CompileOptions`].
pub fn run_case(dir: &Path, name: &str, target: Target) -> CaseResult {
    run_case_with(dir, name, target, &CompileOptions::default())
}

/// Runs one case folder, compiled with `options`.
pub fn run_case_with(
    dir: &Path,
    name: &str,
    target: Target,
    options: &CompileOptions,
) -> CaseResult {
    let start = Instant::now();
    let (status, reason) =
        if let Some((_, why)) = SKIPPED.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            (Status::Skipped, Some(why.to_string()))
        } else {
            match std::panic::catch_unwind(|| check_case(dir, target, options)) {
                Ok(Ok(())) => (Status::Passed, None),
                Ok(Err(why)) => (Status::Failed, Some(why)),
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    (Status::Failed, Some(format!("panic (a bug): {msg}")))
                }
            }
        };
    CaseResult {
        name: name.to_string(),
        status,
        reason,
        millis: start.elapsed().as_millis() as u64,
    }
}

fn data_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sets: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test_data_set_N folder".into());
    }
    Ok(sets)
}

fn read_numbered(
    set: &Path,
    prefix: &str,
    types: &[jiuzhou_runtime::Port],
) -> Result<Vec<Value>, String> {
    let mut values = Vec::new();
    for (k, port) in types.iter().enumerate() {
        let path = set.join(format!("{prefix}_{k}.pb"));
        if !path.exists() {
            break;
        }
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let v = onnx::value_from_pb_bytes(&bytes, &port.ty)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        values.push(v);
    }
    Ok(values)
}

fn check_case(dir: &Path, target: Target, options: &CompileOptions) -> Result<(), String> {
    let model = onnx::load_model(&dir.join("model.onnx")).map_err(|e| match e {
        ImportError::UnsupportedOps(ops) => {
            let names: BTreeSet<String> = ops.iter().map(|o| o.op_type.clone()).collect();
            format!(
                "unsupported op {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
        e => format!("import error: {e}"),
    })?;
    let session = compile_graph_with(model.graph, model.opset, target, options)
        .map(|c| c.session)
        .map_err(|e| match e {
            CompileError::Unsupported { missing, .. } => {
                let names: BTreeSet<&str> = missing.iter().map(|m| m.op).collect();
                format!(
                    "unsupported op {} on {target}",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                )
            }
            e => format!("error: {e}"),
        })?;
    let sig = session.signature().clone();
    for set in data_sets(dir)? {
        let inputs = read_numbered(&set, "input", &sig.inputs)?;
        let expected = read_numbered(&set, "output", &sig.outputs)?;
        // Trailing optional inputs may be left out.
        let mut inputs = inputs;
        while inputs.len() < sig.inputs.len() {
            let port = &sig.inputs[inputs.len()];
            match &port.ty {
                jiuzhou_ir::ValueType::Optional(elem) => inputs.push(Value::Optional {
                    elem: (**elem).clone(),
                    item: None,
                }),
                _ => {
                    return Err(format!(
                        "{}: missing input_{}.pb for `{}`",
                        set.display(),
                        inputs.len(),
                        port.name
                    ));
                }
            }
        }
        let got = session.run(inputs).map_err(|e| format!("error: {e}"))?;
        for (k, (g, w)) in got.iter().zip(&expected).enumerate() {
            compare_values(g, w, Tolerance::CONFORMANCE)
                .map_err(|m| format!("output {k} (`{}`): {m}", sig.outputs[k].name))?;
        }
    }
    Ok(())
}

/// Reads a pass list: one case name per line; `#` starts a comment.
pub fn read_pass_list(path: &Path) -> std::io::Result<BTreeSet<String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Writes a pass list with a header naming the command that regenerates it.
pub fn write_pass_list(
    path: &Path,
    target: Target,
    names: &BTreeSet<String>,
) -> std::io::Result<()> {
    let mut text = format!(
        "# ONNX node conformance cases that pass on the `{target}` target. CI fails if one of them fails.\n\
         # The list only grows; add newly passing cases with:\n\
         #   jiuzhou conformance --target {target} --suite DIR --pass-list {} --update-pass-list\n",
        path.display()
    );
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    fs::write(path, text)
}
