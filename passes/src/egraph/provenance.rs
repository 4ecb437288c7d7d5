//! Provenance: which values and nodes of the original graph each part of the optimized graph stands for.
//!
//! The e-graph is its own record: an original value and an optimized value that end up in the same e-class are
//! equal (up to the rounding of the rewrites, which the rules' soundness tests bound). From the class of every
//! original value and the classes the export emitted, [`trace`] works out the [`Fate`] of every original value:
//!
//! - [`Fate::Kept`]: the optimized graph computes it, as that value (possibly a folded constant);
//! - [`Fate::Absorbed`]: it is not materialized any more, but the optimized nodes listed compute it as part of
//!   their work — a fused kernel, or weights folded into a following node. They are the first optimized nodes
//!   downstream of it (walking the original graph's uses until a kept value);
//! - [`Fate::Eliminated`]: nothing computes it any more (dead code, or every use was simplified away).
//!
//! and, per optimized node, the original nodes it covers (the producers of the values it keeps plus those it
//! absorbed). `jiuzhou compare` uses this to line up intermediate tensors of an optimized target run with the
//! reference run of the original graph, and to say "inside fused kernel X" for the rest. [`name_nodes`] gives
//! optimized nodes the name of the original node of the same op they cover, so node names (and selectors such as
//! the CPU target's test-only fault switch) survive optimization.

use std::collections::{HashMap, HashSet};

use egg::Id;
use jiuzhou_ir::{Graph, ValueId};

use super::analysis::IrEGraph;

/// What became of one value of the original graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Computed by the optimized graph as this value (a node output, a graph input or a folded constant).
    Kept(ValueId),
    /// Computed inside these nodes of the optimized graph (indices into its `nodes`), never materialized.
    Absorbed(Vec<usize>),
    /// Not computed by the optimized graph at all.
    Eliminated,
    /// Not a defined value of the original graph (never happens for node outputs, inputs and constants).
    Undefined,
}

/// Where the parts of an optimized graph came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Provenance {
    /// Per original value (by [`ValueId`] index): its fate.
    pub fates: Vec<Fate>,
    /// Per optimized value (by [`ValueId`] index): the original values it equals, in original order.
    pub origins: Vec<Vec<ValueId>>,
    /// Per optimized node (by index): the original nodes (indices) it covers, in original order.
    pub node_origins: Vec<Vec<usize>>,
}

impl Provenance {
    /// The provenance of a graph that was not optimized: everything is kept as itself.
    pub fn identity(graph: &Graph) -> Provenance {
        Provenance {
            fates: (0..graph.values.len())
                .map(|i| Fate::Kept(ValueId(i as u32)))
                .collect(),
            origins: (0..graph.values.len())
                .map(|i| vec![ValueId(i as u32)])
                .collect(),
            node_origins: (0..graph.nodes.len()).map(|i| vec![i]).collect(),
        }
    }

    /// The fate of original value `v` ([`Fate::Undefined`] when out of range).
    pub fn fate(&self, v: ValueId) -> &Fate {
        self.fates.get(v.index()).unwrap_or(&Fate::Undefined)
    }
}

/// Works out the provenance of `optimized`, exported from `egraph`: `value_class` is the class of every original
/// value at import, `class_values` the values the export made for each emitted class.
pub fn trace(
    original: &Graph,
    optimized: &Graph,
    egraph: &IrEGraph,
    value_class: &[Option<Id>],
    class_values: &HashMap<Id, Vec<ValueId>>,
) -> Provenance {
    let producer = optimized.producers();
    let kept: Vec<Option<ValueId>> = (0..original.values.len())
        .map(|i| {
            let c = egraph.find(value_class.get(i).copied().flatten()?);
            let vals = class_values.get(&c)?;
            // Prefer the copy that kept the original name (a pinned graph output).
            let name = &original.values[i].name;
            vals.iter()
                .find(|v| optimized.value(**v).name == *name)
                .or(vals.first())
                .copied()
        })
        .collect();
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); original.values.len()];
    for (ni, n) in original.nodes.iter().enumerate() {
        for i in n.inputs.iter().flatten() {
            consumers[i.index()].push(ni);
        }
    }
    let fates: Vec<Fate> = (0..original.values.len())
        .map(|i| {
            if let Some(v) = kept[i] {
                return Fate::Kept(v);
            }
            if value_class.get(i).copied().flatten().is_none() {
                return Fate::Undefined;
            }
            // Walk the uses until kept values; the optimized nodes computing them absorbed this one.
            let mut nodes: Vec<usize> = Vec::new();
            let mut seen = HashSet::from([i]);
            let mut stack = vec![i];
            while let Some(v) = stack.pop() {
                for &ni in &consumers[v] {
                    for o in &original.nodes[ni].outputs {
                        if !seen.insert(o.index()) {
                            continue;
                        }
                        match kept[o.index()] {
                            Some(k) => nodes.extend(producer[k.index()]),
                            None => stack.push(o.index()),
                        }
                    }
                }
            }
            nodes.sort_unstable();
            nodes.dedup();
            if nodes.is_empty() {
                Fate::Eliminated
            } else {
                Fate::Absorbed(nodes)
            }
        })
        .collect();
    let mut origins: Vec<Vec<ValueId>> = vec![Vec::new(); optimized.values.len()];
    for (i, f) in fates.iter().enumerate() {
        if let Fate::Kept(v) = f {
            origins[v.index()].push(ValueId(i as u32));
        }
    }
    let mut node_origins: Vec<Vec<usize>> = vec![Vec::new(); optimized.nodes.len()];
    for (ni, n) in original.nodes.iter().enumerate() {
        for o in &n.outputs {
            match &fates[o.index()] {
                Fate::Kept(v) => {
                    if let Some(p) = producer[v.index()] {
                        node_origins[p].push(ni);
                    }
                }
                Fate::Absorbed(ps) => {
                    for &p in ps {
                        node_origins[p].push(ni);
                    }
                }
                Fate::Eliminated | Fate::Undefined => {}
            }
        }
    }
    for o in &mut node_origins {
        o.sort_unstable();
        o.dedup();
    }
    Provenance {
        fates,
        origins,
        node_origins,
    }
}

/// The ops whose node a fused op of jiuzhou's is named after (a FusedConv made of `conv2`, `bn2` and `relu2` is
/// `conv2`).
fn fused_from(op: &str) -> &'static [&'static str] {
    match op {
        "FusedConv" | "FusedConvNhwc" => &["Conv"],
        "MaxPoolNhwc" => &["MaxPool"],
        "AveragePoolNhwc" => &["AveragePool"],
        "FusedMatMul" => &["MatMul", "Gemm"],
        // Named after the first node of the chain it covers.
        "FusedElementwise" => &[
            "Add",
            "Sub",
            "Mul",
            "Div",
            "Max",
            "Min",
            "Pow",
            "Neg",
            "Abs",
            "Relu",
            "Sqrt",
            "Exp",
            "Log",
            "Tanh",
            "Sigmoid",
            "Erf",
            "Reciprocal",
            "Floor",
            "Ceil",
        ],
        _ => &[],
    }
}

/// Renames each node of `optimized` after the first original node of the same op (or, for a fused op, of the op it
/// was built around) that it covers, when that name is not taken yet, so that `conv2` is still called `conv2` after
/// a BatchNormalization and a Relu were fused into it. Nodes that cover no such original node keep their generated
/// names.
pub fn name_nodes(original: &Graph, optimized: &mut Graph, provenance: &Provenance) {
    let mut taken: HashSet<String> = HashSet::new();
    let mut renames: Vec<Option<String>> = vec![None; optimized.nodes.len()];
    for (ni, node) in optimized.nodes.iter().enumerate() {
        let origins = provenance
            .node_origins
            .get(ni)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let same_op = origins.iter().map(|&o| &original.nodes[o]).find(|o| {
            (o.op.name() == node.op.name() || fused_from(node.op.name()).contains(&o.op.name()))
                && !taken.contains(&o.name)
                && !o.name.is_empty()
        });
        if let Some(o) = same_op {
            taken.insert(o.name.clone());
            renames[ni] = Some(o.name.clone());
        }
    }
    // A generated name that collides with a kept original one gets a suffix.
    for (node, rename) in optimized.nodes.iter_mut().zip(renames) {
        match rename {
            Some(name) => node.name = name,
            None => {
                while taken.contains(&node.name) {
                    node.name.push('_');
                }
                taken.insert(node.name.clone());
            }
        }
    }
}
