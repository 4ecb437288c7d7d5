//! The golden-test harness behind `jiuzhou compare`: run a model on the reference target (the oracle, never
//! optimized) and on a target as it is normally compiled, line up every intermediate tensor both sides have, and
//! grade each pair on the tolerance ladder ([`crate::compare::grade`]).
//!
//! Lining up goes through two maps. The optimizer's [`Provenance`] says, for every ONNX tensor, which value of the
//! optimized graph equals it, or which fused nodes absorbed it (weights folded into a Conv, say). The target then
//! reports the values it materializes ([`jiuzhou_runtime::Executable::run_observed`]); a value it computes inside
//! one of its own fused kernels (a Relu applied in a Conv's epilogue) is not seen, and the harness says which
//! kernel holds it. Graph inputs, graph outputs and folded constants are always available.
//!
//! The first tensor, in the original graph's topological order, whose verdict is worse than the one expected is
//! the first divergence; the harness reports its ONNX node and the ONNX nodes of the target kernel that computed
//! it. Since every tensor before it met the expectation, the error lies inside that kernel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiuzhou_ir::{DType, Dim, Graph, Tensor, Value, ValueId, ValueType};
use jiuzhou_passes::egraph::{self, Fate, Provenance};
use jiuzhou_runtime::RunError;

use crate::compare::{Grade, Verdict, grade};
use crate::driver::{CompileError, Target, compile_graph, optimize_graph_traced};

/// How to compare.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target checked against the reference.
    pub target: Target,
    /// Whether the target side is optimized first (as `compile` does by default).
    pub optimize: bool,
    /// The optimizer's options.
    pub opt: egraph::Options,
    /// The worst verdict a tensor may get and still pass.
    pub expect: Verdict,
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Compiling for one side failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Running one side failed.
    #[error("the {side} run failed: {source}")]
    Run {
        /// `reference` or the target's name.
        side: String,
        /// What failed.
        source: RunError,
    },
    /// An input could not be made up.
    #[error("{0}")]
    Input(String),
}

/// An ONNX node, by name and op.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeRef {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: String,
}

/// One ONNX tensor (a node output of the original graph) and how the target's counterpart compares.
#[derive(Clone, Debug)]
pub struct Row {
    /// The ONNX tensor name.
    pub tensor: String,
    /// The node that produces it.
    pub node: NodeRef,
    /// Its dtype and shape on the reference, e.g. `f32[1,8,32,32]`.
    pub ty: String,
    /// Whether it is a graph output.
    pub output: bool,
    /// The verdict; `None` when the target has no counterpart to compare.
    pub grade: Option<Grade>,
    /// The name of the counterpart in the graph the target ran.
    pub target_tensor: Option<String>,
    /// The ONNX nodes of the target kernel that computed the counterpart (or that absorbed the tensor).
    pub kernel: Vec<NodeRef>,
    /// Why it was not compared, or where the counterpart came from.
    pub note: String,
}

/// The result of one comparison.
#[derive(Debug)]
pub struct Comparison {
    /// The target checked.
    pub target: Target,
    /// Whether the target side was optimized.
    pub optimized: bool,
    /// The expectation.
    pub expect: Verdict,
    /// One row per ONNX tensor, in topological order.
    pub rows: Vec<Row>,
    /// The first row whose verdict does not meet the expectation.
    pub first_diverging: Option<usize>,
    /// For every compared row (by index): the reference value and the target's.
    pub pairs: Vec<(usize, Value, Value)>,
    /// Nodes the target ran (after optimization).
    pub target_nodes: usize,
}

impl Comparison {
    /// Whether every compared tensor meets the expectation.
    pub fn passed(&self) -> bool {
        self.first_diverging.is_none()
    }

    /// How many rows got each verdict, and how many were not compared.
    pub fn counts(&self) -> (HashMap<Verdict, usize>, usize) {
        let mut by = HashMap::new();
        let mut none = 0;
        for r in &self.rows {
            match &r.grade {
                Some(g) => *by.entry(g.verdict).or_insert(0) += 1,
                None => none += 1,
            }
        }
        (by, none)
    }
}

/// Values observed during one run, by name.
fn observe(
    session: &jiuzhou_runtime::Session,
    graph: &Graph,
    inputs: Vec<Value>,
    side: &str,
) -> Result<HashMap<String, Value>, HarnessError> {
    let mut seen: HashMap<String, Value> = HashMap::new();
    for (id, v) in graph.inputs.iter().zip(&inputs) {
        seen.insert(graph.value(*id).name.clone(), v.clone());
    }
    let outputs = session
        .run_observed(inputs, &mut |name, v| {
            seen.insert(name.to_string(), v.clone());
        })
        .map_err(|source| HarnessError::Run {
            side: side.to_string(),
            source,
        })?;
    for (id, v) in graph.outputs.iter().zip(outputs) {
        seen.insert(graph.value(*id).name.clone(), v);
    }
    Ok(seen)
}

/// Runs `graph` on the reference and on `options.target` with `inputs` (graph-input order) and grades every
/// intermediate tensor. `opset` is only used in messages.
pub fn compare_graph(
    graph: &Graph,
    opset: i64,
    inputs: Vec<Value>,
    options: &Options,
) -> Result<Comparison, HarnessError> {
    let reference = compile_graph(graph.clone(), opset, Target::Reference)?;
    let want = observe(&reference, graph, inputs.clone(), "reference")?;
    let (tgraph, prov) = if options.optimize {
        let (g, stats, prov) = optimize_graph_traced(graph, options.target, &options.opt)?;
        tracing::info!(?stats, "optimized the target side");
        (g, prov)
    } else {
        (graph.clone(), Provenance::identity(graph))
    };
    let session = compile_graph(tgraph.clone(), opset, options.target)?;
    let got = observe(&session, &tgraph, inputs, options.target.name())?;
    let observed: HashSet<ValueId> = got.keys().filter_map(|n| tgraph.value_by_name(n)).collect();
    let lineup = Lineup {
        original: graph,
        target: &tgraph,
        prov: &prov,
        producer: tgraph.producers(),
        observed: &observed,
        consumers: consumers(&tgraph),
    };
    let outputs: HashSet<ValueId> = graph.outputs.iter().copied().collect();
    let mut rows = Vec::new();
    let mut pairs = Vec::new();
    for node in &graph.nodes {
        for &o in &node.outputs {
            let name = graph.value(o).name.clone();
            let Some(w) = want.get(&name) else {
                continue;
            };
            let mut row = Row {
                tensor: name.clone(),
                node: NodeRef {
                    node: node.name.clone(),
                    op: node.op.name().to_string(),
                },
                ty: jiuzhou_runtime::describe(w),
                output: outputs.contains(&o),
                grade: None,
                target_tensor: None,
                kernel: Vec::new(),
                note: String::new(),
            };
            match prov.fate(o) {
                Fate::Kept(tv) => {
                    let tv = *tv;
                    let tname = tgraph.value(tv).name.clone();
                    row.target_tensor = Some(tname.clone());
                    let counterpart = match (&tgraph.value(tv).constant, got.get(&tname)) {
                        (Some(c), _) => {
                            row.note = "folded to a constant by the optimizer".into();
                            Some(Value::Tensor(c.clone()))
                        }
                        (None, Some(v)) => {
                            row.kernel = lineup.kernel_of(tv);
                            Some(v.clone())
                        }
                        (None, None) => {
                            let (holder, kernel) = lineup.holder_of(tv);
                            row.kernel = kernel;
                            row.note = match holder {
                                Some(h) => format!(
                                    "not materialized on {}: inside its kernel computing `{h}`",
                                    options.target
                                ),
                                None => format!("not reported by {}", options.target),
                            };
                            None
                        }
                    };
                    if let Some(g) = counterpart {
                        row.grade = Some(grade(&g, w));
                        pairs.push((rows.len(), w.clone(), g));
                    }
                }
                Fate::Absorbed(nodes) => {
                    let names: Vec<String> = nodes
                        .iter()
                        .map(|&n| {
                            let n = &tgraph.nodes[n];
                            format!("`{}` ({})", n.name, n.op.name())
                        })
                        .collect();
                    row.note = format!("inside fused kernel {}", names.join(", "));
                    row.kernel = lineup.origins_of(nodes.iter().copied());
                }
                Fate::Eliminated => row.note = "eliminated by the optimizer".into(),
                Fate::Undefined => row.note = "not defined".into(),
            }
            rows.push(row);
        }
    }
    let first_diverging = rows.iter().position(|r| {
        r.grade
            .as_ref()
            .is_some_and(|g| !g.verdict.meets(options.expect))
    });
    Ok(Comparison {
        target: options.target,
        optimized: options.optimize,
        expect: options.expect,
        rows,
        first_diverging,
        pairs,
        target_nodes: tgraph.nodes.len(),
    })
}

fn consumers(g: &Graph) -> Vec<Vec<usize>> {
    let mut c = vec![Vec::new(); g.values.len()];
    for (ni, n) in g.nodes.iter().enumerate() {
        for i in n.inputs.iter().flatten() {
            c[i.index()].push(ni);
        }
    }
    c
}

/// The graph the target ran, what it reported, and how it maps back to the original graph.
struct Lineup<'a> {
    original: &'a Graph,
    target: &'a Graph,
    prov: &'a Provenance,
    producer: Vec<Option<usize>>,
    observed: &'a HashSet<ValueId>,
    consumers: Vec<Vec<usize>>,
}

impl Lineup<'_> {
    /// Whether the target run has `v` (reported, or a constant).
    fn available(&self, v: ValueId) -> bool {
        self.observed.contains(&v) || self.target.value(v).constant.is_some()
    }

    /// The ONNX nodes covered by these target-graph nodes, in original order.
    fn origins_of(&self, nodes: impl IntoIterator<Item = usize>) -> Vec<NodeRef> {
        let mut orig: Vec<usize> = nodes
            .into_iter()
            .flat_map(|n| self.prov.node_origins.get(n).cloned().unwrap_or_default())
            .collect();
        orig.sort_unstable();
        orig.dedup();
        orig.iter()
            .map(|&i| {
                let n = &self.original.nodes[i];
                NodeRef {
                    node: n.name.clone(),
                    op: n.op.name().to_string(),
                }
            })
            .collect()
    }

    /// The ONNX nodes of the target kernel that produced the reported value `v`: its producer plus, through inputs
    /// the target did not report, the producers it fused.
    fn kernel_of(&self, v: ValueId) -> Vec<NodeRef> {
        let mut nodes: Vec<usize> = Vec::new();
        let mut stack: Vec<usize> = self.producer[v.index()].into_iter().collect();
        while let Some(n) = stack.pop() {
            if nodes.contains(&n) {
                continue;
            }
            nodes.push(n);
            for i in self.target.nodes[n].inputs.iter().flatten() {
                if !self.available(*i)
                    && let Some(p) = self.producer[i.index()]
                {
                    stack.push(p);
                }
            }
        }
        self.origins_of(nodes)
    }

    /// For a value the target did not report: the first reported value downstream (the output of the kernel that
    /// holds it) and that kernel's ONNX nodes.
    fn holder_of(&self, v: ValueId) -> (Option<String>, Vec<NodeRef>) {
        let mut seen = HashSet::from([v]);
        let mut stack = vec![v];
        while let Some(x) = stack.pop() {
            for &n in &self.consumers[x.index()] {
                for &o in &self.target.nodes[n].outputs {
                    if !seen.insert(o) {
                        continue;
                    }
                    if self.available(o) {
                        return (Some(self.target.value(o).name.clone()), self.kernel_of(o));
                    }
                    stack.push(o);
                }
            }
        }
        (None, Vec::new())
    }
}

/// A small deterministic generator (SplitMix64), so random inputs reproduce from their seed.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// A random value for an input of type `ty` (named `name`, for messages): floats uniform in `[-1, 1)`, integers
/// uniform in `[0, 4)` (small enough to be valid indices), bools fair coins; symbolic dims are 1.
pub fn random_input(name: &str, ty: &ValueType, rng: &mut Rng) -> Result<Value, HarnessError> {
    let bad = |why: &str| {
        HarnessError::Input(format!(
            "input `{name}` ({ty}) {why}: give it with --input {name}=PATH"
        ))
    };
    let ValueType::Tensor(tt) = ty else {
        return Err(bad("is not a tensor"));
    };
    let Some(dims) = &tt.shape else {
        return Err(bad("has no static rank"));
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(n) => *n,
            Dim::Sym(_) => 1,
        })
        .collect();
    let n = jiuzhou_ir::tensor::checked_numel(&shape, tt.dtype)
        .map_err(|e| HarnessError::Input(format!("input `{name}`: {e}")))?;
    let t = match tt.dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| rng.unit() as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|_| rng.unit()).collect()),
        DType::F16 => Tensor::from_vec(
            shape,
            (0..n)
                .map(|_| half::f16::from_f64(rng.unit()))
                .collect::<Vec<_>>(),
        ),
        DType::BF16 => Tensor::from_vec(
            shape,
            (0..n)
                .map(|_| half::bf16::from_f64(rng.unit()))
                .collect::<Vec<_>>(),
        ),
        DType::I64 => {
            Tensor::from_vec(shape, (0..n).map(|_| (rng.next_u64() % 4) as i64).collect())
        }
        DType::I32 => {
            Tensor::from_vec(shape, (0..n).map(|_| (rng.next_u64() % 4) as i32).collect())
        }
        DType::U8 => Tensor::from_vec(shape, (0..n).map(|_| (rng.next_u64() % 4) as u8).collect()),
        DType::I8 => Tensor::from_vec(shape, (0..n).map(|_| (rng.next_u64() % 4) as i8).collect()),
        DType::Bool => Tensor::from_vec(shape, (0..n).map(|_| rng.next_u64() & 1 == 1).collect()),
        other => {
            return Err(bad(&format!(
                "has dtype {other}, which is not made up at random"
            )));
        }
    }
    .map_err(|e| HarnessError::Input(format!("input `{name}`: {e}")))?;
    Ok(Value::Tensor(Arc::new(t)))
}
