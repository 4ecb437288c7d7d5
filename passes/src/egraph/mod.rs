//! The e-graph optimizer: equality saturation over the IR with a target-aware cost model.
//!
//! [`optimize`] loads a graph into an e-graph ([`convert::import`]), runs the rule tables ([`rules`]) with a bounded
//! [`egg::Runner`], extracts the cheapest equivalent graph under the target's [`CostModel`] with a DAG-aware
//! extractor ([`extract::extract_dag`]), and rebuilds a verified [`Graph`] ([`convert::export`]).
//!
//! - [`lang`]: the e-graph language (op nodes carry their attributes in a child leaf, Tensat-style);
//! - [`analysis`]: per-class static types (the IR's own inference) and constant values (folding through a
//!   [`ConstEvaluator`] the driver supplies);
//! - [`cost`]: the [`CostModel`] trait, [`OpCountCost`] (the reference target) and a [`cost::Roofline`] helper;
//! - [`rules`]: one file per rule family, each rule named and checked for soundness by a test.
//!
//! - [`provenance`]: which original values and nodes each part of the optimized graph stands for
//!   ([`optimize_traced`]); optimized nodes keep the names of the original nodes of the same op they cover.
//!
//! Runs are always bounded (iterations, e-nodes, time) and report why they stopped; rules can be switched off by
//! name ([`Options::disabled_rules`]), which allows bisecting a bad rule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiuzhou_ir::Graph;

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod provenance;
pub mod rules;
pub mod shapes;
#[cfg(test)]
mod tests;

pub use analysis::{ConstEvaluator, Facts, GraphAnalysis};
pub use convert::OptError;
pub use cost::{CostModel, OpCountCost, Roofline};
pub use lang::ENode;
pub use provenance::{Fate, Provenance};

/// Bounds and switches of one optimization.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names of rules not to run.
    pub disabled_rules: Vec<String>,
    /// The most rule-application iterations.
    pub iter_limit: usize,
    /// The most e-nodes; the run stops once the e-graph is larger.
    pub node_limit: usize,
    /// The longest the rule applications may take.
    pub time_limit: Duration,
    /// The most elements of a folded constant (and of each of its constant inputs).
    pub fold_limit: usize,
    /// The most elements of one `ConstantOfShape` fill with a constant shape that folds into a real tensor (models
    /// that store weights as fills, like onnx's light zoo models, then get their weights folded); bigger fills stay
    /// ops, evaluated at run time.
    pub fill_limit: usize,
    /// The most elements all folded fills together may have: the memory the optimizer may spend on them.
    pub fill_budget: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            disabled_rules: Vec::new(),
            iter_limit: 16,
            node_limit: 50_000,
            // A guard for pathological graphs (the node and iteration limits are the real bounds): ResNet-50 takes
            // about 0.2 s of CPU time to saturate (passes/benches/optimize.rs), but this limit is wall time, which a
            // machine shared by many jobs stretches tenfold or more; results must not depend on that.
            time_limit: Duration::from_secs(10),
            fold_limit: 4096,
            // VGG-19's fc6 weight (25088 x 4096) is the largest fixture parameter; all its weights are 143 M.
            fill_limit: 1 << 27,
            fill_budget: 1 << 28,
        }
    }
}

/// What one optimization did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Nodes of the input graph.
    pub imported_nodes: usize,
    /// Nodes of the optimized graph.
    pub optimized_nodes: usize,
    /// E-nodes when the run stopped.
    pub egraph_nodes: usize,
    /// E-classes when the run stopped.
    pub egraph_classes: usize,
    /// Rule-application iterations run.
    pub iterations: usize,
    /// Why the run stopped (`saturated`, `iteration limit`, `node limit`, `time limit`, ...).
    pub stop_reason: String,
    /// Wall time of the whole optimization, in milliseconds.
    pub optimize_ms: f64,
}

/// Optimizes `graph` for a target described by `cost`; `evaluator` folds constants (none: only `Shape` folds).
///
/// Returns the optimized graph (types re-inferred, verified) and what happened. Graphs with captures (subgraphs
/// themselves) are refused; ops with subgraphs inside the graph are kept as they are.
pub fn optimize(
    graph: &Graph,
    cost: &dyn CostModel,
    evaluator: Option<Arc<dyn ConstEvaluator>>,
    options: &Options,
) -> Result<(Graph, Stats), OptError> {
    optimize_traced(graph, cost, evaluator, options).map(|(g, stats, _)| (g, stats))
}

/// Optimizes like [`optimize`] (the same graph) and also reports the [`Provenance`] of the result: for every
/// original value, the optimized value it equals or the fused nodes that absorbed it; for every optimized node,
/// the original nodes it covers.
pub fn optimize_traced(
    graph: &Graph,
    cost: &dyn CostModel,
    evaluator: Option<Arc<dyn ConstEvaluator>>,
    options: &Options,
) -> Result<(Graph, Stats, Provenance), OptError> {
    let start = Instant::now();
    let analysis = GraphAnalysis::new(evaluator, options.fold_limit)
        .with_fill_limits(options.fill_limit, options.fill_budget);
    let imported = convert::import(graph, analysis)?;
    // The channels-last conv rules only run for a target with channels-last kernels.
    let layout_off: Vec<String> = if cost.channels_last() {
        Vec::new()
    } else {
        rules::layout::channels_last_rules()
            .iter()
            .map(|r| r.name.to_string())
            .collect()
    };
    let rules: Vec<rules::Rule> = rules::all_rules()
        .into_iter()
        .filter(|r| !options.disabled_rules.iter().any(|d| r.name.as_str() == d))
        .filter(|r| !layout_off.iter().any(|d| r.name.as_str() == d))
        .collect();
    let runner: egg::Runner<ENode, GraphAnalysis, ()> =
        egg::Runner::new(GraphAnalysis::new(None, 0))
            .with_egraph(imported.egraph)
            .with_iter_limit(options.iter_limit)
            .with_node_limit(options.node_limit)
            .with_time_limit(options.time_limit)
            .with_hook(|runner| {
                tracing::debug!(
                    iteration = runner.iterations.len(),
                    enodes = runner.egraph.total_number_of_nodes(),
                    eclasses = runner.egraph.number_of_classes(),
                    "e-graph iteration"
                );
                Ok(())
            })
            .run(&rules);
    let stop_reason = match &runner.stop_reason {
        Some(egg::StopReason::Saturated) => "saturated".to_string(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(egg::StopReason::TimeLimit(s)) => format!("time limit ({s} s)"),
        Some(egg::StopReason::Other(s)) => s.clone(),
        None => "not run".to_string(),
    };
    tracing::debug!(stop_reason = %stop_reason, "e-graph run stopped");
    let egraph = runner.egraph;
    let roots: Vec<egg::Id> = graph
        .outputs
        .iter()
        .filter_map(|o| imported.value_class[o.index()])
        .collect();
    let extraction = extract::extract_dag(&egraph, cost, &roots)?;
    let exported =
        convert::export_traced(graph, &egraph, &imported.value_class, &extraction.choice)?;
    let mut out = exported.graph;
    let prov = provenance::trace(
        graph,
        &out,
        &egraph,
        &imported.value_class,
        &exported.class_values,
    );
    provenance::name_nodes(graph, &mut out, &prov);
    let stats = Stats {
        imported_nodes: graph.nodes.len(),
        optimized_nodes: out.nodes.len(),
        egraph_nodes: egraph.total_number_of_nodes(),
        egraph_classes: egraph.number_of_classes(),
        iterations: runner.iterations.len(),
        stop_reason,
        optimize_ms: start.elapsed().as_secs_f64() * 1e3,
    };
    tracing::debug!(?stats, cost = extraction.cost, "e-graph optimization done");
    Ok((out, stats, prov))
}
