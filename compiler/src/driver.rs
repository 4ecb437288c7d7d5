//! The compile pipeline: model → checked graph → executable for a target → runtime session.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use jiuzhou_ir::{Graph, Node};
use jiuzhou_runtime::{Session, Signature};

use crate::onnx::{self, ImportError, Model};

/// A target jiuzhou can compile for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The reference interpreter: the semantics oracle.
    Reference,
    /// The host CPU: GEMM-based heavy kernels, Cranelift-generated elementwise kernels, explicit reference
    /// fallbacks for everything else.
    Cpu,
}

impl Target {
    /// Every target, in the order `--help` lists them.
    pub const ALL: &'static [Target] = &[Target::Reference, Target::Cpu];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Reference => "reference",
            Target::Cpu => "cpu",
        }
    }

    /// Parses a target name.
    pub fn from_name(name: &str) -> Option<Target> {
        Self::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// Whether the target implements the op of `node`.
    pub fn supports(self, node: &Node) -> bool {
        match self {
            Target::Reference => jiuzhou_target_reference::is_supported(&node.op),
            // Every op without a CPU kernel runs the reference implementation, explicitly (see `fallback_ops`).
            Target::Cpu => jiuzhou_target_reference::is_supported(&node.op),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

/// Compiles a graph for `target` into a runtime session.
///
/// `opset` is only used in error messages.
pub fn compile_graph(graph: Graph, opset: i64, target: Target) -> Result<Session, CompileError> {
    let missing = missing_ops(&graph, target);
    if !missing.is_empty() {
        return Err(CompileError::Unsupported {
            target,
            opset,
            missing,
        });
    }
    let signature = Signature::of(&graph);
    let graph = Arc::new(graph);
    let exec: Box<dyn jiuzhou_runtime::Executable> = match target {
        Target::Reference => Box::new(jiuzhou_target_reference::ReferenceExecutable::new(graph)),
        Target::Cpu => Box::new(jiuzhou_target_cpu::CpuExecutable::compile(graph).map_err(
            |e| CompileError::Codegen {
                target,
                message: e.0,
            },
        )?),
    };
    tracing::debug!(%target, "compiled");
    Ok(Session::new(signature, exec))
}

/// Compiles an imported model for `target`.
pub fn compile(model: Model, target: Target) -> Result<Session, CompileError> {
    compile_graph(model.graph, model.opset, target)
}

/// Loads an ONNX file and compiles it for `target`.
pub fn load_and_compile(path: &Path, target: Target) -> Result<Session, CompileError> {
    let model = onnx::load_model(path)?;
    compile(model, target)
}
