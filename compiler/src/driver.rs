//! The compile pipeline: model → checked graph → executable for a target → runtime session.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jiuzhou_ir::{Graph, Node, Op, Tensor, ValueType};
use jiuzhou_passes::egraph::{self, ConstEvaluator, CostModel, OptError, Roofline};
use jiuzhou_runtime::{Executable, RunError, Session, Signature};
use jiuzhou_target_vnpu::{Profile, VnpuExecutable};

use crate::onnx::{self, ImportError, Model};

/// A target jiuzhou can compile for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The reference interpreter: the semantics oracle.
    Reference,
    /// The host CPU: GEMM-based heavy kernels, Cranelift-generated elementwise kernels, explicit reference
    /// fallbacks for everything else.
    Cpu,
    /// The simulated NPU of a profile (`vnpu`, `vnpu:NAME`, `vnpu:PATH.toml`), with the CPU target for the nodes
    /// the NPU cannot run. The profile is leaked once per parse so that `Target` stays `Copy`.
    Vnpu(&'static Profile),
}

impl Target {
    /// Every target, in the order `--help` lists them.
    pub const ALL: &'static [Target] = &[Target::Reference, Target::Cpu];

    /// The name used on the command line (`vnpu` for every profile; `Display` adds the profile).
    pub fn name(self) -> &'static str {
        match self {
            Target::Reference => "reference",
            Target::Cpu => "cpu",
            Target::Vnpu(_) => "vnpu",
        }
    }

    /// Parses a target name: `reference`, `cpu`, `vnpu` or `vnpu:PROFILE`. `None` for an unknown name; a vnpu
    /// profile that does not load is an error.
    pub fn from_name(name: &str) -> Option<Target> {
        Self::parse(name).ok()
    }

    /// Parses a target name, saying why it is not one.
    pub fn parse(name: &str) -> Result<Target, String> {
        if name == "vnpu" || name.starts_with("vnpu:") {
            let profile = Profile::from_target(name).map_err(|e| e.to_string())?;
            return Ok(Target::Vnpu(Box::leak(Box::new(profile))));
        }
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown target `{name}` (known: {}, vnpu[:PROFILE])",
                    names.join(", ")
                )
            })
    }

    /// Whether the target implements the op of `node`.
    pub fn supports(self, node: &Node) -> bool {
        match self {
            Target::Reference => jiuzhou_target_reference::is_supported(&node.op),
            // Every op without a CPU kernel runs the reference implementation, explicitly (see `fallback_ops`).
            Target::Cpu => jiuzhou_target_reference::is_supported(&node.op),
            // Every node the NPU cannot run goes to the CPU target (listed in the placement).
            Target::Vnpu(_) => jiuzhou_target_reference::is_supported(&node.op),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Vnpu(p) => write!(f, "vnpu:{}", p.name),
            t => f.write_str(t.name()),
        }
    }
}

/// An op of the graph that the chosen target does not implement.
#[derive(Clone, Debug, PartialEq)]
pub struct MissingOp {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: &'static str,
    /// Targets that lack the op.
    pub lacking: Vec<Target>,
}

/// Why compilation failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The model could not be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Some ops are not implemented by the target; every one is listed.
    #[error("{}", fmt_missing(.target, .opset, .missing))]
    Unsupported {
        /// The target asked for.
        target: Target,
        /// The model's default-domain opset.
        opset: i64,
        /// Every node whose op the target lacks.
        missing: Vec<MissingOp>,
    },
    /// The e-graph optimizer failed.
    #[error(transparent)]
    Optimize(#[from] OptError),
    /// The target's code generator failed.
    #[error("target {target}: {message}")]
    Codegen {
        /// The target.
        target: Target,
        /// What failed.
        message: String,
    },
}

fn fmt_missing(target: &Target, opset: &i64, missing: &[MissingOp]) -> String {
    let items: Vec<String> = missing
        .iter()
        .map(|m| {
            let lacking: Vec<&str> = m.lacking.iter().map(|t| t.name()).collect();
            format!(
                "{} (node `{}`, opset {opset}, missing on: {})",
                m.op,
                m.node,
                lacking.join(", ")
            )
        })
        .collect();
    format!(
        "target {target} does not implement {} node(s): {}",
        missing.len(),
        items.join(", ")
    )
}

/// Every node (subgraphs included) whose op `target` does not implement.
pub fn missing_ops(graph: &Graph, target: Target) -> Vec<MissingOp> {
    let mut out = Vec::new();
    collect_missing(graph, target, &mut out);
    out
}

fn collect_missing(graph: &Graph, target: Target, out: &mut Vec<MissingOp>) {
    for node in &graph.nodes {
        if !target.supports(node) {
            let lacking = Target::ALL
                .iter()
                .copied()
                .filter(|t| !t.supports(node))
                .collect();
            out.push(MissingOp {
                node: node.name.clone(),
                op: node.op.name(),
                lacking,
            });
        }
        for g in node.op.subgraphs() {
            collect_missing(g, target, out);
        }
    }
}

/// A node that runs the reference implementation on a target that lacks a kernel for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FallbackOp {
    /// The node's name.
    pub node: String,
    /// The node's op.
    pub op: String,
}

/// What a target's code generator reports about the executable it made.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TargetStats {
    /// Nodes that run the reference implementation instead of a kernel of the target, in graph order.
    pub fallback_ops: Vec<FallbackOp>,
    /// Bytes of the arena that holds intermediate tensors (0 when the target has none), as laid out at compile
    /// time: with `arena_symbols`, the part for the intermediates whose shapes are static.
    pub peak_arena_bytes: usize,
    /// The symbolic dims the CPU target plans the arena for at run time, per binding (empty: the arena is laid out
    /// once, at compile time).
    pub arena_symbols: Vec<String>,
    /// Threads the executable runs on.
    pub threads: usize,
    /// How many convolutions run each of the target's convolution kernels (CPU: `winograd`, `direct`,
    /// `packed_gemm`, `depthwise`, `gemm`; empty for other targets).
    pub conv_kernels: std::collections::BTreeMap<String, usize>,
}

/// A compiled graph: the session that runs it and what the code generator reports.
pub struct Compiled {
    /// The session.
    pub session: Session,
    /// The code generator's report.
    pub stats: TargetStats,
}

/// Compiles a graph for `target` into a runtime session, with the default [`CompileOptions`].
///
/// `opset` is only used in error messages.
pub fn compile_graph(graph: Graph, opset: i64, target: Target) -> Result<Session, CompileError> {
    compile_graph_with(graph, opset, target, &CompileOptions::default()).map(|c| c.session)
}

/// Generates code for an (already optimized, or deliberately unoptimized) graph for `target` with `options` (the
/// optimizer fields are not used here: see [`compile_with`]) into a session and the code generator's report.
///
/// `opset` is only used in error messages.
pub fn compile_graph_with(
    graph: Graph,
    opset: i64,
    target: Target,
    options: &CompileOptions,
) -> Result<Compiled, CompileError> {
    let missing = missing_ops(&graph, target);
    if !missing.is_empty() {
        return Err(CompileError::Unsupported {
            target,
            opset,
            missing,
        });
    }
    let signature = Signature::of(&graph);
    if let Target::Vnpu(profile) = target {
        let exec = compile_vnpu(
            graph,
            opset,
            profile,
            &jiuzhou_target_vnpu::Options::default(),
        )?;
        return Ok(Compiled {
            session: Session::new(signature, Box::new(SharedVnpu(exec))),
            stats: TargetStats {
                threads: 1,
                ..TargetStats::default()
            },
        });
    }
    let graph = Arc::new(graph);
    let (exec, stats): (Box<dyn jiuzhou_runtime::Executable>, TargetStats) = match target {
        Target::Reference => (
            Box::new(jiuzhou_target_reference::ReferenceExecutable::new(graph)),
            TargetStats {
                threads: 1,
                ..TargetStats::default()
            },
        ),
        Target::Cpu => {
            let cpu_options = jiuzhou_target_cpu::CpuOptions {
                threads: options.threads,
            };
            let exec = jiuzhou_target_cpu::CpuExecutable::compile_with(graph, &cpu_options)
                .map_err(|e| CompileError::Codegen {
                    target,
                    message: e.0,
                })?;
            let stats = TargetStats {
                fallback_ops: exec
                    .fallback_ops()
                    .iter()
                    .map(|f| FallbackOp {
                        node: f.node.clone(),
                        op: f.op.to_string(),
                    })
                    .collect(),
                peak_arena_bytes: exec.peak_arena_bytes(),
                arena_symbols: exec.plan_symbols().to_vec(),
                threads: exec.threads(),
                conv_kernels: exec
                    .conv_kernels()
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect(),
            };
            (Box::new(exec), stats)
        }
        Target::Vnpu(_) => unreachable!("handled above"),
    };
    tracing::debug!(%target, "compiled");
    Ok(Compiled {
        session: Session::new(signature, exec),
        stats,
    })
}

/// Host regions of a vnpu executable run on the CPU target.
struct CpuHost;

impl jiuzhou_target_vnpu::HostCompiler for CpuHost {
    fn compile(&self, graph: Graph) -> Result<Box<dyn Executable>, String> {
        let exec = jiuzhou_target_cpu::CpuExecutable::compile(Arc::new(graph)).map_err(|e| e.0)?;
        Ok(Box::new(exec))
    }
}

/// A shared vnpu executable, so that a caller can read its placement and run statistics while a session owns it.
#[derive(Clone, Debug)]
pub struct SharedVnpu(pub Arc<VnpuExecutable>);

impl Executable for SharedVnpu {
    fn run(&self, inputs: Vec<jiuzhou_ir::Value>) -> Result<Vec<jiuzhou_ir::Value>, RunError> {
        self.0.run(inputs)
    }

    fn target_name(&self) -> &str {
        self.0.target_name()
    }

    fn run_observed(
        &self,
        inputs: Vec<jiuzhou_ir::Value>,
        observer: &mut jiuzhou_runtime::Observer<'_>,
    ) -> Result<Vec<jiuzhou_ir::Value>, RunError> {
        self.0.run_observed(inputs, observer)
    }
}

/// Compiles a graph for the simulated NPU of `profile` (host regions on the CPU target), after the capability
/// check every target gets.
pub fn compile_vnpu(
    graph: Graph,
    opset: i64,
    profile: &Profile,
    options: &jiuzhou_target_vnpu::Options,
) -> Result<Arc<VnpuExecutable>, CompileError> {
    let target = Target::Vnpu(Box::leak(Box::new(profile.clone())));
    let missing = missing_ops(&graph, target);
    if !missing.is_empty() {
        return Err(CompileError::Unsupported {
            target,
            opset,
            missing,
        });
    }
    let mut options = options.clone();
    if options.fault.is_none() {
        options.fault =
            vnpu_fault().map_err(|message| CompileError::Codegen { target, message })?;
    }
    let exec = VnpuExecutable::compile(
        Arc::new(graph),
        profile.clone(),
        Arc::new(CpuHost),
        &options,
    )
    .map_err(|e| CompileError::Codegen {
        target,
        message: e.0,
    })?;
    for (op, reason, count) in exec.placement().fallbacks() {
        tracing::info!(%target, op, count, reason, "on the host CPU");
    }
    Ok(Arc::new(exec))
}

/// FLOPs of every node of `graph` (the optimizer's estimate, `egraph::cost::flops_and_bytes`), in node order:
/// what a vnpu placement's NPU share of the FLOPs is measured with ([`jiuzhou_target_vnpu::Placement::npu_flops_share`]).
pub fn node_flops(graph: &Graph) -> Vec<f64> {
    graph
        .nodes
        .iter()
        .map(|n| {
            let ins: Vec<Option<&ValueType>> = n
                .inputs
                .iter()
                .map(|i| i.map(|v| &graph.value(v).ty))
                .collect();
            let outs: Vec<ValueType> = n
                .outputs
                .iter()
                .map(|v| graph.value(*v).ty.clone())
                .collect();
            egraph::cost::flops_and_bytes(&n.op, &ins, &outs).0
        })
        .collect()
}

/// The vnpu fault selector that `JIUZHOU_FAULT=vnpu:SELECTOR` asks for (test only: the kernels of the nodes or
/// ops it names compute wrong results on purpose, see `jiuzhou_target_vnpu::exec`); `None` when the variable is
/// unset or names another target.
fn vnpu_fault() -> Result<Option<String>, String> {
    let Ok(spec) = std::env::var("JIUZHOU_FAULT") else {
        return Ok(None);
    };
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    let Some((target, selector)) = spec.split_once(':') else {
        return Err(format!(
            "JIUZHOU_FAULT=`{spec}`: expected TARGET:SELECTOR, e.g. vnpu:conv2 (a node or op name)"
        ));
    };
    if target != "vnpu" {
        return Ok(None);
    }
    if selector.is_empty() {
        return Err(format!(
            "JIUZHOU_FAULT=`{spec}`: the selector (a node or op name) is empty"
        ));
    }
    Ok(Some(selector.to_string()))
}

/// How to compile: whether to optimize, and the optimizer's bounds and switches.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Run the e-graph optimizer before code generation (on by default; `--no-opt` turns it off).
    pub optimize: bool,
    /// The optimizer's options (limits, disabled rules).
    pub opt: egraph::Options,
    /// Threads for intra-op parallelism (CPU target); 0 (the default) means every available core. Results do not
    /// depend on it.
    pub threads: usize,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            optimize: true,
            opt: egraph::Options::default(),
            threads: 0,
        }
    }
}

impl CompileOptions {
    /// The options with the optimizer off.
    pub fn no_opt() -> CompileOptions {
        CompileOptions {
            optimize: false,
            ..CompileOptions::default()
        }
    }
}

/// Compiles an imported model for `target` with the default options (optimizer on).
pub fn compile(model: Model, target: Target) -> Result<Session, CompileError> {
    compile_with(model, target, &CompileOptions::default())
}

/// Compiles an imported model for `target`: optimizes it (unless `options` say not to), then generates code.
pub fn compile_with(
    model: Model,
    target: Target,
    options: &CompileOptions,
) -> Result<Session, CompileError> {
    let graph = if options.optimize {
        // Ops the target lacks are reported by name before the optimizer would fail to extract them.
        let missing = missing_ops(&model.graph, target);
        if !missing.is_empty() {
            return Err(CompileError::Unsupported {
                target,
                opset: model.opset,
                missing,
            });
        }
        let (g, stats) = optimize_graph(&model.graph, target, &options.opt)?;
        tracing::debug!(?stats, "optimized");
        g
    } else {
        model.graph
    };
    compile_graph_with(graph, model.opset, target, options).map(|c| c.session)
}

/// Loads an ONNX file and compiles it for `target` with the default options.
pub fn load_and_compile(path: &Path, target: Target) -> Result<Session, CompileError> {
    let model = onnx::load_model(path)?;
    compile(model, target)
}

/// The reference target's cost model: every op it implements costs 1 (extraction minimizes the node count).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceCost;

impl CostModel for ReferenceCost {
    fn supports(&self, op: &Op) -> bool {
        jiuzhou_target_reference::is_supported(op)
    }

    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        egraph::OpCountCost.node_cost(op, inputs, outputs)
    }
}

/// Constant folding with the reference target's semantics: the op runs alone in a one-node graph.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceEvaluator;

impl ConstEvaluator for ReferenceEvaluator {
    fn eval(
        &self,
        op: &Op,
        inputs: &[Option<Arc<Tensor>>],
        num_outputs: usize,
    ) -> Option<Vec<Arc<Tensor>>> {
        if !jiuzhou_target_reference::is_supported(op) {
            return None;
        }
        let vals = jiuzhou_target_reference::Interpreter::default()
            .eval_op(op, inputs, num_outputs)
            .ok()?;
        vals.into_iter().map(|v| v.as_tensor().cloned()).collect()
    }
}

/// The CPU target's cost model: it counts ops like the reference, and takes only the fused ops whose epilogue the
/// CPU computes itself (today every activation of the IR, so a FusedMatMul with a GELU is chosen: one pass less
/// over the product's output than MatMul plus a separate Gelu).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuCost;

impl CostModel for CpuCost {
    fn supports(&self, op: &Op) -> bool {
        jiuzhou_target_reference::is_supported(op) && jiuzhou_target_cpu::fused::runs_natively(op)
    }

    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        egraph::OpCountCost.node_cost(op, inputs, outputs)
    }
}

impl Target {
    /// The cost model the optimizer uses for this target.
    pub fn cost_model(self) -> Box<dyn CostModel> {
        match self {
            Target::Reference => Box::new(ReferenceCost),
            // The CPU target runs every op the reference does (the rest through explicit fallbacks); until it has
            // a roofline model of its own kernels, it counts ops like the reference.
            Target::Cpu => Box::new(CpuCost),
            Target::Vnpu(p) => Box::new(VnpuCost {
                roofline: vnpu_roofline(p),
                profile: p,
            }),
        }
    }
}

/// The roofline of one vnpu core from its profile: the cube's peak (`2·M·N·K` FLOPs per `cycles_per_tile`), the
/// DMA rate (the lower of the channel's and global memory's), one DMA latency per kernel.
pub fn vnpu_roofline(p: &Profile) -> Roofline {
    let hz = p.clock_mhz as f64 * 1e6;
    let [m, n, k] = p.matrix.tile;
    let peak = 2.0 * (m * n * k) as f64 / p.matrix.cycles_per_tile.max(1) as f64 * hz;
    let bw = p.dma.bytes_per_cycle.min(p.global.bytes_per_cycle).max(1) as f64 * hz;
    Roofline {
        peak_flops: peak,
        bandwidth: bw,
        overhead: p.dma.latency_cycles as f64 / hz,
    }
}

/// The vnpu cost model: the profile's roofline; every op the reference implements is supported (the host runs
/// what the NPU cannot), except those of jiuzhou's own ops that the profile's NPU has no kernel for
/// (`jiuzhou_target_vnpu::codegen::lower::own_op_supported`: FusedConv — FusedConvNhwc, MaxPoolNhwc and
/// AveragePoolNhwc on a channels-last profile — and FusedMatMul whose activation the vector unit computes run on
/// the NPU; choosing any other would move a whole convolution or product to the host).
///
/// **Channels-last profiles** (`layout = "nhwc"`, [`Profile::channels_last`]) turn on the optimizer's channels-last
/// forms ([`CostModel::channels_last`]). Their conv datapath has no channels-first kernel: a channels-first Conv,
/// FusedConv, MaxPool, AveragePool or GlobalAveragePool runs on the host. Such a node costs at least what this NPU
/// would need to compute it — the same op at the roofline plus the two layout changes (its input to channels-last,
/// its result back), each priced as the explicit Transpose the optimizer would insert — plus the round trip of its
/// input and result between host and global memory, at the global-memory rate (no link is faster). The
/// channels-last form costs the kernel plus only those Transposes that do not cancel against a neighbour's, so
/// the extractor keeps a chain of convolutions channels-last and pays for layout changes at its ends.
#[derive(Clone, Copy, Debug)]
pub struct VnpuCost {
    /// The profile's roofline.
    pub roofline: Roofline,
    /// The profile.
    pub profile: &'static Profile,
}

impl CostModel for VnpuCost {
    fn supports(&self, op: &Op) -> bool {
        jiuzhou_target_reference::is_supported(op)
            && (!op.is_jiuzhou_own()
                || jiuzhou_target_vnpu::codegen::lower::own_op_supported(
                    &jiuzhou_target_vnpu::codegen::Ctx::new(self.profile),
                    op,
                )
                .is_ok())
    }

    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        let cost = self.roofline.estimate(op, inputs, outputs);
        let channels_first = matches!(
            op,
            Op::Conv(_)
                | Op::FusedConv(_)
                | Op::MaxPool(_)
                | Op::AveragePool(_)
                | Op::GlobalAveragePool(_)
        );
        if !self.profile.channels_last() || !channels_first {
            return cost;
        }
        let (Some(Some(x)), Some(y)) = (inputs.first(), outputs.first()) else {
            return cost;
        };
        cost + self.layout_change(x)
            + self.layout_change(y)
            + self.round_trip(x)
            + self.round_trip(y)
    }

    fn channels_last(&self) -> bool {
        self.profile.channels_last()
    }
}

impl VnpuCost {
    /// What the explicit Transpose that changes `t`'s layout costs.
    fn layout_change(&self, t: &ValueType) -> f64 {
        let rank = t.as_tensor().and_then(|t| t.rank()).unwrap_or(0);
        let perm: Vec<i64> = [0].into_iter().chain(2..rank as i64).chain([1]).collect();
        let op = Op::Transpose(jiuzhou_ir::ops::Transpose { perm: Some(perm) });
        self.roofline
            .estimate(&op, &[Some(t)], std::slice::from_ref(t))
    }

    /// Moving `t` between host and global memory once: its bytes at the global-memory rate, plus one transfer's
    /// fixed cost.
    fn round_trip(&self, t: &ValueType) -> f64 {
        let op = Op::Transpose(jiuzhou_ir::ops::Transpose::default());
        let (_, bytes) = egraph::cost::flops_and_bytes(&op, &[], std::slice::from_ref(t));
        bytes / self.roofline.bandwidth + self.roofline.overhead
    }
}

/// Optimizes `graph` for `target` with the e-graph optimizer (constants folded with the reference semantics).
pub fn optimize_graph(
    graph: &Graph,
    target: Target,
    options: &egraph::Options,
) -> Result<(Graph, egraph::Stats), CompileError> {
    let evaluator: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    let cost = target.cost_model();
    Ok(egraph::optimize(
        graph,
        cost.as_ref(),
        Some(evaluator),
        options,
    )?)
}

/// Optimizes like [`optimize_graph`] (the same graph) and also returns the optimizer's provenance: which original
/// values and nodes each part of the optimized graph stands for (what `jiuzhou compare` lines tensors up with).
pub fn optimize_graph_traced(
    graph: &Graph,
    target: Target,
    options: &egraph::Options,
) -> Result<(Graph, egraph::Stats, egraph::Provenance), CompileError> {
    let evaluator: Arc<dyn ConstEvaluator> = Arc::new(ReferenceEvaluator);
    let cost = target.cost_model();
    Ok(egraph::optimize_traced(
        graph,
        cost.as_ref(),
        Some(evaluator),
        options,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::{DType, GraphBuilder, ops};

    #[test]
    fn optimizing_for_the_reference_target_folds_and_cleans_up() {
        // Relu(Identity(x) · [1]) == Relu(x), and Add folds on constants.
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", jiuzhou_ir::TensorType::known(DType::F32, &[2]));
        let id = b.node1(ops::Identity::default(), &[x]).unwrap();
        let one = b.constant("one", Tensor::vector(vec![1.0f32]));
        let m = b.node1(ops::Mul::default(), &[id, one]).unwrap();
        let y = b.node1(ops::Relu::default(), &[m]).unwrap();
        b.output(y);
        let g = b.finish().unwrap();
        let (out, stats) = optimize_graph(&g, Target::Reference, &Default::default()).unwrap();
        assert_eq!((stats.imported_nodes, stats.optimized_nodes), (3, 1));
        assert_eq!(out.nodes[0].op.name(), "Relu");
        let folded = ReferenceEvaluator
            .eval(
                &Op::Add(jiuzhou_ir::ops::Add::default()),
                &[
                    Some(Arc::new(Tensor::scalar(1i64))),
                    Some(Arc::new(Tensor::scalar(2i64))),
                ],
                1,
            )
            .unwrap();
        assert_eq!(folded[0].to_i64_vec(), Some(vec![3]));
    }
}
