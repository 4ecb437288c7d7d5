//! Golden-file tests of the e-graph optimizer: `golden/*.ir` hold an input graph, a `# ---- expected ----` line,
//! and the optimized graph's text (reference target cost model, constants folded with the reference semantics; a
//! file whose first line is `# cost: prefer-nhwc` is optimized with [`PreferNhwc`] instead, and one whose first line
//! is `# cost: op-count-nhwc` with op count on a target that explores channels-last convs).
//! A mismatch prints both texts; `JIUZHOU_BLESS=1 cargo test -p jiuzhou-passes --test golden` rewrites the
//! expectations.

use std::path::Path;
use std::sync::Arc;

use jiuzhou_ir::{Op, Tensor, ValueType};
use jiuzhou_passes::egraph::{ConstEvaluator, CostModel, OpCountCost, Options, optimize};
use jiuzhou_target_reference::Interpreter;

const SEPARATOR: &str = "# ---- expected ----\n";

struct ReferenceEvaluator;

impl ConstEvaluator for ReferenceEvaluator {
    fn eval(&self, op: &Op, inputs: &[Option<Arc<Tensor>>], n: usize) -> Option<Vec<Arc<Tensor>>> {
        let vals = Interpreter::default().eval_op(op, inputs, n).ok()?;
        vals.into_iter().map(|v| v.as_tensor().cloned()).collect()
    }
}

/// Op count, with channels-last convs cheaper than channels-first ones (a target whose conv kernels work
/// channels-last): 2 per Conv or FusedConv, 0.5 per FusedConvNhwc.
struct PreferNhwc;

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

/// Op count with the channels-last conv rules on.
struct OpCountNhwc;

impl CostModel for OpCountNhwc {
    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        OpCountCost.node_cost(op, inputs, outputs)
    }

    fn channels_last(&self) -> bool {
        true
    }
}

fn check(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (input, expected) = text.split_once(SEPARATOR).unwrap_or((&text, ""));
    let graph = jiuzhou_ir::text::parse(input).map_err(|e| format!("input: {e}"))?;
    let ev: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    // No wall-time limit: a loaded test machine must not change the output (the iteration limit bounds the run).
    let options = Options {
        time_limit: std::time::Duration::from_secs(3600),
        ..Options::default()
    };
    let cost: &dyn CostModel = match input.lines().next() {
        Some("# cost: prefer-nhwc") => &PreferNhwc,
        Some("# cost: op-count-nhwc") => &OpCountNhwc,
        _ => &OpCountCost,
    };
    let (out, _) = optimize(&graph, cost, Some(ev), &options).map_err(|e| e.to_string())?;
    let got = jiuzhou_ir::text::print(&out);
    if got == expected {
        return Ok(());
    }
    if std::env::var_os("JIUZHOU_BLESS").is_some() {
        std::fs::write(path, format!("{input}{SEPARATOR}{got}")).map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err(format!(
        "expected:\n{expected}\ngot:\n{got}\n(run with JIUZHOU_BLESS=1 to accept)"
    ))
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| check(f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
