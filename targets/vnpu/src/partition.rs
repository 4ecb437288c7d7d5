//! Heterogeneous placement: which node runs on the NPU and which on the host CPU, and why.
//!
//! Every node is lowered ([`crate::codegen::lower`]); one that lowers goes to the NPU unless the cost model says
//! otherwise, one that does not goes to the host with the reason. Then:
//!
//! 1. **Relu fusion**: a Relu whose input is a GEMM/convolution result used only by it runs in that kernel's
//!    epilogue (on the accumulator, before the store) when the profile's vector unit can reach the accumulator.
//! 2. **Cost**: an elementwise node none of whose inputs comes from the NPU and whose result no NPU node reads
//!    would cost two transfers for a few vector passes; it stays on the host (repeated until nothing changes).
//!
//! Contiguous runs of nodes (in the graph's topological order) on one device become one region; the executable
//! ([`crate::exec`]) moves tensors at region boundaries and counts the bytes.

use std::collections::HashSet;

use jiuzhou_ir::{Graph, ValueId};

use crate::codegen::Ctx;
use crate::codegen::lower::{Kernel, lower};

/// Where one node runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePlacement {
    /// The node's index in the graph.
    pub index: usize,
    /// The node's name.
    pub name: String,
    /// The op's name.
    pub op: &'static str,
    /// Whether it runs on the NPU (as its own kernel or fused into another).
    pub npu: bool,
    /// Why it runs on the host, or which kernel it was fused into.
    pub reason: Option<String>,
    /// Floating-point operations of the node (matrix kernels; 0 for the rest).
    pub flops: f64,
}

/// The placement of a whole graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    /// One entry per node, in graph order.
    pub nodes: Vec<NodePlacement>,
}

impl Placement {
    /// Nodes on the NPU.
    pub fn npu_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.npu).count()
    }

    /// The share of the counted FLOPs that runs on the NPU (1 when nothing is counted).
    pub fn npu_flops_share(&self, flops: &[f64]) -> f64 {
        let total: f64 = flops.iter().sum();
        if total <= 0.0 {
            return 1.0;
        }
        let on: f64 = self
            .nodes
            .iter()
            .zip(flops)
            .filter(|(n, _)| n.npu)
            .map(|(_, f)| f)
            .sum();
        // An empty f64 sum is −0.0: add +0.0 so that nothing on the NPU reads as 0 %, not −0 %.
        (on + 0.0) / total
    }

    /// The nodes on the host grouped by op and reason: `(op, reason, count)`, most frequent first.
    pub fn fallbacks(&self) -> Vec<(&'static str, String, usize)> {
        let mut out: Vec<(&'static str, String, usize)> = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.npu) {
            let reason = n.reason.clone().unwrap_or_default();
            match out.iter_mut().find(|(o, r, _)| *o == n.op && *r == reason) {
                Some(e) => e.2 += 1,
                None => out.push((n.op, reason, 1)),
            }
        }
        out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        out
    }
}

/// The per-node decision: the kernel (NPU) or `None` (host, or fused into another node's kernel).
pub(crate) struct Decision {
    pub(crate) placement: Placement,
    pub(crate) kernels: Vec<Option<Kernel>>,
}

/// Places every node of `graph`.
pub(crate) fn place(ctx: &Ctx, graph: &Graph, cost: bool) -> Decision {
    let mut kernels: Vec<Option<Kernel>> = Vec::with_capacity(graph.nodes.len());
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for (i, node) in graph.nodes.iter().enumerate() {
        let lowered = if node.op.subgraphs().is_empty() {
            lower(ctx, graph, node)
        } else {
            Err("has subgraphs".into())
        };
        let (k, reason) = match lowered {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e)),
        };
        nodes.push(NodePlacement {
            index: i,
            name: node.name.clone(),
            op: node.op.name(),
            npu: k.is_some(),
            reason,
            flops: k.as_ref().map_or(0.0, Kernel::flops),
        });
        kernels.push(k);
    }
    let uses = graph.use_counts();
    let outputs: HashSet<ValueId> = graph.outputs.iter().copied().collect();
    let producers = graph.producers();

    // Relu fusion.
    if ctx.relu_on_acc() {
        for i in 0..graph.nodes.len() {
            let node = &graph.nodes[i];
            if !matches!(node.op, jiuzhou_ir::Op::Relu(_)) || kernels[i].is_none() {
                continue;
            }
            let Some(src) = node.inputs.first().copied().flatten() else {
                continue;
            };
            let Some(p) = producers[src.index()] else {
                continue;
            };
            if uses[src.index()] != 1 || outputs.contains(&src) {
                continue;
            }
            let fusable = kernels[p].as_ref().is_some_and(Kernel::can_fuse_relu);
            if fusable && let Some(k) = kernels[p].as_mut() {
                k.fuse_relu(node.outputs[0]);
                kernels[i] = None;
                nodes[i].reason = Some(format!("fused into `{}`", graph.nodes[p].name));
            }
        }
    }

    // Cost: isolated elementwise nodes stay on the host (repeated until no node moves).
    let mut changed = cost;
    while changed {
        let npu_out: HashSet<ValueId> = kernels.iter().flatten().map(Kernel::out).collect();
        let mut npu_reads: HashSet<ValueId> = HashSet::new();
        for k in kernels.iter().flatten() {
            npu_reads.extend(k.reads());
        }
        changed = false;
        for i in 0..kernels.len() {
            let Some(Kernel::Elt { out, .. }) = &kernels[i] else {
                continue;
            };
            let reads = kernels[i].as_ref().map(Kernel::reads).unwrap_or_default();
            if reads.iter().any(|v| npu_out.contains(v)) || npu_reads.contains(out) {
                continue;
            }
            kernels[i] = None;
            nodes[i].npu = false;
            nodes[i].reason = Some(
                "cost: inputs and users on the host (two transfers for a few vector passes)".into(),
            );
            changed = true;
        }
    }
    Decision {
        placement: Placement { nodes },
        kernels,
    }
}
