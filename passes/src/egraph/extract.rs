//! DAG-aware extraction: choose one e-node per class so that the *DAG* (not the tree) is cheapest.
//!
//! egg's `Extractor` sums child costs as a tree, so a value used twice is paid twice, which misjudges every
//! rewrite that shares work. Here, as in extraction-gym's "faster-greedy-dag", the cost of choosing a node is the sum
//! of the node costs over the *set* of classes it reaches: each class carries the set of classes (with their node
//! costs) its current best choice needs, and choices improve in sweeps until a fixpoint. A node whose children
//! reach its own class would make a cycle and is never chosen.

use std::collections::HashMap;
use std::sync::Arc;

use egg::{Id, Language};
use jiuzhou_ir::{Op, ValueType};

use super::analysis::{IrEGraph, attrs_of, is_absent};
use super::convert::OptError;
use super::cost::CostModel;
use super::lang::ENode;

/// The chosen node of every class that has one, and the total cost of what the roots need.
pub struct Extraction {
    /// The chosen e-node per canonical class.
    pub choice: HashMap<Id, ENode>,
    /// The cost of the union of everything the roots reach.
    pub cost: f64,
}

/// The classes (with their node's cost) that a choice needs, itself included.
type CostSet = Arc<HashMap<Id, f64>>;

/// The cost of one e-node alone, or `None` if the target cannot run it.
fn node_cost(egraph: &IrEGraph, cost: &dyn CostModel, class: Id, node: &ENode) -> Option<f64> {
    let (op, inputs): (Op, &[Id]) = match node {
        ENode::Op { name, children, .. } => (
            Op::from_attrs(name, attrs_of(egraph, children[0])).ok()??,
            &children[1..],
        ),
        ENode::Opaque { index, children } => {
            let e = egraph.analysis.opaque.get(*index as usize)?;
            (e.op.clone(), &children[..e.num_inputs])
        }
        _ => return Some(0.0),
    };
    if !cost.supports(&op) {
        return None;
    }
    let tys: Vec<Option<&ValueType>> = inputs
        .iter()
        .map(|&c| {
            if is_absent(egraph, c) {
                None
            } else {
                egraph[c].data.types.first()
            }
        })
        .collect();
    let c = cost.node_cost(&op, &tys, &egraph[class].data.types);
    Some(if c.is_nan() { f64::INFINITY } else { c })
}

/// Extracts the cheapest DAG for `roots` under `cost`.
pub fn extract_dag(
    egraph: &IrEGraph,
    cost: &dyn CostModel,
    roots: &[Id],
) -> Result<Extraction, OptError> {
    let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    classes.sort();
    // Node costs are computed once.
    let node_costs: HashMap<Id, Vec<Option<f64>>> = classes
        .iter()
        .map(|&c| {
            let costs = egraph[c]
                .nodes
                .iter()
                .map(|n| node_cost(egraph, cost, c, n))
                .collect();
            (c, costs)
        })
        .collect();
    let mut best: HashMap<Id, (usize, f64, CostSet)> = HashMap::new();
    let mut changed = true;
    let mut sweeps = 0;
    while changed && sweeps < 1000 {
        changed = false;
        sweeps += 1;
        for &c in &classes {
            for (ni, node) in egraph[c].nodes.iter().enumerate() {
                let Some(own) = node_costs[&c][ni] else {
                    continue;
                };
                let kids: Option<Vec<&CostSet>> = node
                    .children()
                    .iter()
                    .map(|ch| best.get(&egraph.find(*ch)).map(|b| &b.2))
                    .collect();
                let Some(kids) = kids else { continue };
                if kids.iter().any(|k| k.contains_key(&c)) {
                    continue;
                }
                // Union, starting from the largest child set.
                let mut set: HashMap<Id, f64> = kids
                    .iter()
                    .max_by_key(|k| k.len())
                    .map(|k| (***k).clone())
                    .unwrap_or_default();
                for k in &kids {
                    for (id, v) in k.iter() {
                        set.entry(*id).or_insert(*v);
                    }
                }
                set.insert(c, own);
                let total: f64 = set.values().sum();
                let better = match best.get(&c) {
                    None => true,
                    Some((_, t, _)) => total < *t - 1e-12 * t.abs().max(1.0),
                };
                if better && total.is_finite() {
                    best.insert(c, (ni, total, Arc::new(set)));
                    changed = true;
                }
            }
        }
    }
    let mut need: HashMap<Id, f64> = HashMap::new();
    for r in roots {
        let r = egraph.find(*r);
        let (_, _, set) = best
            .get(&r)
            .ok_or_else(|| OptError(format!("no supported way to compute class {r}")))?;
        need.extend(set.iter().map(|(k, v)| (*k, *v)));
    }
    let choice = best
        .iter()
        .map(|(c, (ni, _, _))| (*c, egraph[*c].nodes[*ni].clone()))
        .collect();
    Ok(Extraction {
        choice,
        cost: need.values().sum(),
    })
}
