//! `jiuzhou-passes`: graph-to-graph rewrites.
//!
//! The pass interface, dead-code elimination, and the e-graph optimizer ([`egraph`]). **Architecture invariant:** passes never depend on a concrete target; what a target wants reaches them
//! through traits.
#![deny(missing_docs)]

use jiuzhou_ir::{Graph, ValueId};

pub mod egraph;

/// A rewrite of a whole graph that keeps its semantics.
pub trait Pass {
    /// A short name, for `-v` logs and for switching the pass off.
    fn name(&self) -> &'static str;
    /// Rewrites `graph` in place; returns whether anything changed.
    fn run(&self, graph: &mut Graph) -> bool;
}

/// Removes nodes none of whose outputs are used (by a later node, a graph output or a subgraph capture), and the
/// values only they defined. Constants that nothing reads are removed too.
#[derive(Debug, Default)]
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph) -> bool {
        let mut live = vec![false; graph.values.len()];
        for o in &graph.outputs {
            live[o.index()] = true;
        }
        let mut keep = vec![false; graph.nodes.len()];
        for (i, node) in graph.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|o| live[o.index()]) {
                keep[i] = true;
                for inp in node.inputs.iter().flatten() {
                    live[inp.index()] = true;
                }
                for sub in node.op.subgraphs() {
                    for c in &sub.captures {
                        if let Some(id) = graph.value_by_name(&sub.value(*c).name) {
                            live[id.index()] = true;
                        }
                    }
                }
            }
        }
        for v in graph.inputs.iter().chain(&graph.captures) {
            live[v.index()] = true;
        }
        let removed_nodes = keep.iter().filter(|k| !**k).count();
        let dead_values = live.iter().filter(|l| !**l).count();
        if removed_nodes == 0 && dead_values == 0 {
            return false;
        }
        let mut k = keep.iter();
        graph
            .nodes
            .retain(|_| *k.next().expect("one flag per node"));
        compact_values(graph, &live);
        tracing::debug!(removed_nodes, dead_values, "dce");
        true
    }
}

/// Drops the values not marked live and renumbers the rest, keeping their order.
fn compact_values(graph: &mut Graph, live: &[bool]) {
    let mut remap = vec![None; graph.values.len()];
    let mut next = 0u32;
    for (i, l) in live.iter().enumerate() {
        if *l {
            remap[i] = Some(ValueId(next));
            next += 1;
        }
    }
    let map = |id: &mut ValueId| *id = remap[id.index()].expect("live values are kept");
    let mut i = 0;
    graph.values.retain(|_| {
        i += 1;
        live[i - 1]
    });
    graph.inputs.iter_mut().for_each(map);
    graph.outputs.iter_mut().for_each(map);
    graph.captures.iter_mut().for_each(map);
    for node in &mut graph.nodes {
        node.inputs.iter_mut().flatten().for_each(map);
        node.outputs.iter_mut().for_each(map);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::{DType, GraphBuilder, Tensor, TensorType, ops};

    #[test]
    fn removes_unused_nodes_and_constants() {
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", TensorType::known(DType::F32, &[2]));
        let c = b.constant("c", Tensor::vector(vec![1.0f32, 2.0]));
        let unused = b.node1(ops::Add::default(), &[x, c]).unwrap();
        let _ = b.node1(ops::Relu::default(), &[unused]).unwrap();
        let y = b.node1(ops::Neg::default(), &[x]).unwrap();
        b.output(y);
        let mut g = b.finish().unwrap();
        assert!(DeadCodeElimination.run(&mut g));
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.values.len(), 2);
        g.verify().unwrap();
        assert!(!DeadCodeElimination.run(&mut g));
    }
}
