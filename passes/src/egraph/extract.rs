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
    let mut choice: HashMap<Id, usize> = best.iter().map(|(c, (ni, _, _))| (*c, *ni)).collect();
    let roots: Vec<Id> = roots.iter().map(|r| egraph.find(*r)).collect();
    for r in &roots {
        if !choice.contains_key(r) {
            return Err(OptError(format!("no supported way to compute class {r}")));
        }
    }
    let mut total = dag_cost(egraph, &node_costs, &choice, &roots)
        .ok_or_else(|| OptError("the greedy extraction has a cycle".into()))?;
    switch_tuple_readers(egraph, &node_costs, &mut choice, &roots, &mut total);
    let choice = choice
        .iter()
        .map(|(c, ni)| (*c, egraph[*c].nodes[*ni].clone()))
        .collect();
    Ok(Extraction {
        choice,
        cost: total,
    })
}

/// The cost of the DAG that `choice` gives for `roots` (each class counted once), or `None` if it has a cycle or
/// a class without a choice.
fn dag_cost(
    egraph: &IrEGraph,
    node_costs: &HashMap<Id, Vec<Option<f64>>>,
    choice: &HashMap<Id, usize>,
    roots: &[Id],
) -> Option<f64> {
    // 0: unvisited, 1: on the stack, 2: done.
    let mut state: HashMap<Id, u8> = HashMap::new();
    let mut total = 0.0;
    let mut stack: Vec<(Id, bool)> = roots.iter().map(|r| (*r, false)).collect();
    while let Some((c, children_done)) = stack.pop() {
        if children_done {
            state.insert(c, 2);
            continue;
        }
        match state.get(&c) {
            Some(2) => continue,
            Some(1) => return None,
            _ => {}
        }
        state.insert(c, 1);
        let ni = *choice.get(&c)?;
        total += node_costs[&c][ni]?;
        stack.push((c, true));
        for ch in egraph[c].nodes[ni].children() {
            let ch = egraph.find(*ch);
            match state.get(&ch) {
                Some(1) => return None,
                Some(2) => {}
                _ => stack.push((ch, false)),
            }
        }
    }
    Some(total)
}

/// The greedy pass decides class by class, so it never takes `get.K` of a multi-output node when each reader alone
/// is cheaper computed directly, even where all readers together would be cheaper through the shared node (the
/// merged MatMul of `merge-parallel-matmul`). This tries, for each multi-output node, switching every class that
/// can read one of its outputs to that read at once, and keeps the switch when the whole DAG gets cheaper.
fn switch_tuple_readers(
    egraph: &IrEGraph,
    node_costs: &HashMap<Id, Vec<Option<f64>>>,
    choice: &mut HashMap<Id, usize>,
    roots: &[Id],
    total: &mut f64,
) {
    // Readers of each tuple class: (reader class, index of its Get node).
    let mut readers: std::collections::BTreeMap<Id, Vec<(Id, usize)>> = Default::default();
    let mut classes: Vec<Id> = egraph.classes().map(|c| c.id).collect();
    classes.sort();
    for c in classes {
        for (ni, n) in egraph[c].nodes.iter().enumerate() {
            if let ENode::Get { tuple, .. } = n {
                readers
                    .entry(egraph.find(tuple[0]))
                    .or_default()
                    .push((c, ni));
            }
        }
    }
    for (_, rs) in readers.into_iter().take(256) {
        if rs.len() < 2 || rs.iter().all(|(c, ni)| choice.get(c) == Some(ni)) {
            continue;
        }
        let mut trial = choice.clone();
        for (c, ni) in &rs {
            trial.insert(*c, *ni);
        }
        if let Some(t) = dag_cost(egraph, node_costs, &trial, roots)
            && t < *total - 1e-12 * total.abs().max(1.0)
        {
            *choice = trial;
            *total = t;
        }
    }
}
