//! Conversion between a [`Graph`] and its e-graph, both ways.
//!
//! Import walks the nodes in order and adds one e-node per node (hash-consing merges identical nodes on the way).
//! Export rebuilds a topologically sorted graph from an extraction (one chosen e-node per class), reachable from the
//! graph outputs only. Values keep their original names where their class still holds the original value; graph
//! outputs and values that subgraphs capture by name always keep theirs (an `Identity` is added when the class's
//! value already has another name, e.g. when an output became a graph input). Types are re-inferred and the result
//! is verified.

use std::collections::{HashMap, HashSet};

use egg::{Id, Language};
use jiuzhou_ir::infer::{SymGen, infer_graph};
use jiuzhou_ir::{Graph, Node, Op, TensorType, ValueId, ValueType, ops};

use super::analysis::{GraphAnalysis, IrEGraph, OpaqueEntry, attrs_of, is_random};
use super::lang::{AttrsLeaf, ENode};

/// Why a graph could not be optimized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("e-graph optimizer: {0}")]
pub struct OptError(pub String);

/// A graph loaded into an e-graph, with what is needed to export it again.
pub struct Imported {
    /// The e-graph.
    pub egraph: IrEGraph,
    /// The class of each original value (by [`ValueId`] index); `None` for values never defined.
    pub value_class: Vec<Option<Id>>,
}

/// Whether a node must stay opaque: subgraphs, non-tensor values, or randomness.
fn is_opaque(graph: &Graph, node: &Node) -> bool {
    let non_tensor = |v: &ValueId| graph.value(*v).ty.as_tensor().is_none();
    !node.op.subgraphs().is_empty()
        || is_random(node.op.name())
        || node.inputs.iter().flatten().any(non_tensor)
        || node.outputs.iter().any(non_tensor)
        // Dropout in training mode is random too; only the inference form (no `training_mode`) is a plain op.
        || (matches!(node.op, Op::Dropout(_)) && node.inputs.get(2).is_some_and(|i| i.is_some()))
}

/// Loads `graph` into a new e-graph with `analysis` (its side tables must be empty).
pub fn import(graph: &Graph, mut analysis: GraphAnalysis) -> Result<Imported, OptError> {
    if !graph.captures.is_empty() {
        return Err(OptError(
            "subgraphs (with captures) are not optimized".into(),
        ));
    }
    analysis.input_types = graph
        .inputs
        .iter()
        .map(|i| graph.value(*i).ty.clone())
        .collect();
    let mut eg = IrEGraph::new(analysis);
    let mut cls: Vec<Option<Id>> = vec![None; graph.values.len()];
    for (k, &i) in graph.inputs.iter().enumerate() {
        cls[i.index()] = Some(eg.add(ENode::Input(k as u32)));
    }
    for (i, v) in graph.values.iter().enumerate() {
        if let Some(t) = &v.constant {
            let c = eg.analysis.intern_const(t.clone(), Some(v.name.clone()));
            cls[i] = Some(eg.add(ENode::Const(c)));
        }
    }
    let absent = eg.add(ENode::Absent);
    for node in &graph.nodes {
        let mut inputs = node.inputs.clone();
        while matches!(inputs.last(), Some(None)) {
            inputs.pop();
        }
        let mut children = Vec::with_capacity(inputs.len() + 1);
        for i in &inputs {
            children.push(match i {
                None => absent,
                Some(v) => cls.get(v.index()).copied().flatten().ok_or_else(|| {
                    OptError(format!("node `{}` reads an undefined value", node.name))
                })?,
            });
        }
        let n = node.outputs.len();
        let id = if is_opaque(graph, node) {
            let num_inputs = children.len();
            for sub in node.op.subgraphs() {
                for c in &sub.captures {
                    let name = &sub.value(*c).name;
                    if let Some(v) = graph.value_by_name(name)
                        && let Some(id) = cls[v.index()]
                    {
                        children.push(id);
                    }
                }
            }
            let index = eg.analysis.opaque.len() as u32;
            eg.analysis.opaque.push(OpaqueEntry {
                op: node.op.clone(),
                num_inputs,
                types: node
                    .outputs
                    .iter()
                    .map(|o| graph.value(*o).ty.clone())
                    .collect(),
            });
            eg.add(ENode::Opaque { index, children })
        } else {
            let attrs = eg.add(ENode::Attrs(AttrsLeaf::new(node.op.attrs())));
            children.insert(0, attrs);
            let name = Op::NAMES
                .iter()
                .find(|n| **n == node.op.name())
                .ok_or_else(|| OptError(format!("unknown op {}", node.op.name())))?;
            eg.add(ENode::Op {
                name,
                outputs: n as u32,
                children,
            })
        };
        if n == 1 && !matches!(eg[id].nodes[0], ENode::Opaque { .. }) {
            cls[node.outputs[0].index()] = Some(id);
        } else {
            for (k, o) in node.outputs.iter().enumerate() {
                cls[o.index()] = Some(eg.add(ENode::Get {
                    index: k as u32,
                    tuple: [id],
                }));
            }
        }
    }
    eg.analysis.outputs = graph
        .outputs
        .iter()
        .filter_map(|o| cls[o.index()])
        .collect();
    eg.rebuild();
    Ok(Imported {
        egraph: eg,
        value_class: cls,
    })
}

/// Rebuilds a graph from `choice` (the chosen e-node of every class reachable from the outputs).
pub fn export(
    original: &Graph,
    egraph: &IrEGraph,
    value_class: &[Option<Id>],
    choice: &HashMap<Id, ENode>,
) -> Result<Graph, OptError> {
    export_traced(original, egraph, value_class, choice).map(|e| e.graph)
}

/// An exported graph and where its values came from.
pub struct Exported {
    /// The rebuilt graph.
    pub graph: Graph,
    /// The values of the rebuilt graph that hold each single-value class that was emitted (canonical ids): the
    /// value computed for the class first, then the `Identity` copies made for pinned names.
    pub class_values: HashMap<Id, Vec<ValueId>>,
}

/// Rebuilds a graph like [`export`] and reports which class each of its values holds.
pub fn export_traced(
    original: &Graph,
    egraph: &IrEGraph,
    value_class: &[Option<Id>],
    choice: &HashMap<Id, ENode>,
) -> Result<Exported, OptError> {
    let mut ex = Exporter {
        egraph,
        choice,
        g: Graph::new(original.name.clone()),
        memo: HashMap::new(),
        used: HashSet::new(),
        names: HashMap::new(),
        pinned: HashMap::new(),
        input_vals: Vec::new(),
        next: 0,
    };
    let find = |id: Id| egraph.find(id);
    // Graph inputs keep their ids' order, names and types.
    let mut input_vals = Vec::new();
    for &i in &original.inputs {
        let v = original.value(i);
        let id = ex.g.add_value(v.name.clone(), v.ty.clone());
        ex.used.insert(v.name.clone());
        ex.g.inputs.push(id);
        input_vals.push(id);
    }
    // Names that must survive: graph outputs and values captured by subgraphs.
    let mut must: Vec<(Id, String)> = Vec::new();
    for o in &original.outputs {
        let c = value_class[o.index()].ok_or_else(|| OptError("undefined graph output".into()))?;
        must.push((find(c), original.value(*o).name.clone()));
    }
    for n in &original.nodes {
        for sub in n.op.subgraphs() {
            for c in &sub.captures {
                let name = &sub.value(*c).name;
                if let Some(v) = original.value_by_name(name)
                    && let Some(cl) = value_class[v.index()]
                {
                    must.push((find(cl), name.clone()));
                }
            }
        }
    }
    for (c, name) in &must {
        ex.used.insert(name.clone());
        ex.pinned.entry(*c).or_default().push(name.clone());
    }
    // Other original names, first value first, for classes that still hold them.
    for (i, v) in original.values.iter().enumerate() {
        if let Some(c) = value_class[i] {
            let c = find(c);
            if !ex.used.contains(&v.name) {
                ex.names.entry(c).or_insert_with(|| v.name.clone());
            }
        }
    }
    ex.input_vals = input_vals;
    // Emit everything reachable from the outputs and the captured values.
    let mut pinned_vals: HashMap<String, ValueId> = HashMap::new();
    let mut copies: Vec<(Id, ValueId)> = Vec::new();
    for (c, name) in &must {
        let v = ex.value(*c)?;
        let v = if ex.g.value(v).name == *name {
            v
        } else {
            let ty = ex.g.value(v).ty.clone();
            let out = ex.g.add_value(name.clone(), ty);
            ex.g.nodes.push(Node {
                name: format!("{name}_identity"),
                op: Op::Identity(ops::Identity::default()),
                inputs: vec![Some(v)],
                outputs: vec![out],
            });
            copies.push((*c, out));
            out
        };
        pinned_vals.insert(name.clone(), v);
    }
    for o in &original.outputs {
        let name = &original.value(*o).name;
        ex.g.outputs.push(pinned_vals[name]);
    }
    let mut g = ex.g;
    infer_graph(&mut g, &mut SymGen::default())
        .map_err(|e| OptError(format!("re-inference: {e}")))?;
    g.verify()
        .map_err(|e| OptError(format!("the rebuilt graph is invalid: {e}")))?;
    let mut class_values: HashMap<Id, Vec<ValueId>> = ex
        .memo
        .into_iter()
        .filter(|(_, vals)| vals.len() == 1)
        .collect();
    for (c, v) in copies {
        class_values.entry(egraph.find(c)).or_default().push(v);
    }
    Ok(Exported {
        graph: g,
        class_values,
    })
}

struct Exporter<'a> {
    egraph: &'a IrEGraph,
    choice: &'a HashMap<Id, ENode>,
    g: Graph,
    memo: HashMap<Id, Vec<ValueId>>,
    used: HashSet<String>,
    names: HashMap<Id, String>,
    pinned: HashMap<Id, Vec<String>>,
    input_vals: Vec<ValueId>,
    next: usize,
}

impl Exporter<'_> {
    fn fresh_name(&mut self, class: Id, hint: &str) -> String {
        let class = self.egraph.find(class);
        if let Some(names) = self.pinned.get_mut(&class)
            && !names.is_empty()
        {
            return names.remove(0);
        }
        if let Some(n) = self.names.remove(&class)
            && self.used.insert(n.clone())
        {
            return n;
        }
        self.unique_name(hint)
    }

    /// A new name `{hint}_N` no value has.
    fn unique_name(&mut self, hint: &str) -> String {
        loop {
            let n = format!("{hint}_{}", self.next);
            self.next += 1;
            if self.used.insert(n.clone()) {
                return n;
            }
        }
    }

    fn node_of(&self, class: Id) -> Result<&ENode, OptError> {
        self.choice
            .get(&self.egraph.find(class))
            .ok_or_else(|| OptError(format!("class {class} was not extracted")))
    }

    /// The single value of `class`.
    fn value(&mut self, class: Id) -> Result<ValueId, OptError> {
        let vals = self.emit(class)?;
        match vals.as_slice() {
            [v] => Ok(*v),
            _ => Err(OptError(format!("class {class} is not a single value"))),
        }
    }

    /// Emits `class` and everything it needs (iteratively: graphs can be deep), returning its values.
    fn emit(&mut self, root: Id) -> Result<Vec<ValueId>, OptError> {
        let root = self.egraph.find(root);
        let mut stack = vec![(root, false)];
        let mut on_stack = HashSet::new();
        while let Some((c, ready)) = stack.pop() {
            if self.memo.contains_key(&c) {
                continue;
            }
            let node = self.node_of(c)?.clone();
            if !ready {
                if !on_stack.insert(c) {
                    return Err(OptError("the extraction has a cycle".into()));
                }
                stack.push((c, true));
                for &ch in node.children() {
                    let ch = self.egraph.find(ch);
                    if !self.memo.contains_key(&ch) {
                        stack.push((ch, false));
                    }
                }
                continue;
            }
            let vals = self.build(c, &node)?;
            self.memo.insert(c, vals);
        }
        Ok(self.memo[&root].clone())
    }

    fn input(&self, class: Id) -> Result<Option<ValueId>, OptError> {
        let c = self.egraph.find(class);
        if matches!(self.node_of(c)?, ENode::Absent) {
            return Ok(None);
        }
        match self.memo.get(&c).map(|v| v.as_slice()) {
            Some([v]) => Ok(Some(*v)),
            _ => Err(OptError(format!("input class {c} has no single value"))),
        }
    }

    fn build(&mut self, c: Id, node: &ENode) -> Result<Vec<ValueId>, OptError> {
        Ok(match node {
            ENode::Input(k) => vec![
                *self
                    .input_vals
                    .get(*k as usize)
                    .ok_or_else(|| OptError("bad input index".into()))?,
            ],
            ENode::Const(i) => {
                let entry = self
                    .egraph
                    .analysis
                    .consts
                    .get(*i as usize)
                    .ok_or_else(|| OptError("bad constant index".into()))?;
                let name = match &entry.name {
                    Some(n) if !self.used.contains(n) => {
                        self.used.insert(n.clone());
                        // A pinned name of this class takes precedence (it is added through an Identity).
                        n.clone()
                    }
                    _ => self.fresh_name(c, "const"),
                };
                vec![self.g.add_constant(name, entry.tensor.clone())]
            }
            ENode::Absent | ENode::Attrs(_) => vec![],
            ENode::Get { index, tuple } => {
                let t = self.egraph.find(tuple[0]);
                let v = self
                    .memo
                    .get(&t)
                    .and_then(|v| v.get(*index as usize))
                    .copied();
                vec![v.ok_or_else(|| OptError(format!("no output {index} of class {t}")))?]
            }
            ENode::Op {
                name,
                outputs,
                children,
            } => {
                let attrs = attrs_of(self.egraph, children[0]);
                let op = Op::from_attrs(name, attrs)
                    .ok()
                    .flatten()
                    .ok_or_else(|| OptError(format!("bad attributes for {name}")))?;
                let inputs = children[1..]
                    .iter()
                    .map(|ch| self.input(*ch))
                    .collect::<Result<Vec<_>, _>>()?;
                self.add_node(c, op, inputs, *outputs as usize)?
            }
            ENode::Opaque { index, children } => {
                let entry = self
                    .egraph
                    .analysis
                    .opaque
                    .get(*index as usize)
                    .ok_or_else(|| OptError("bad opaque index".into()))?
                    .clone();
                let inputs = children[..entry.num_inputs]
                    .iter()
                    .map(|ch| self.input(*ch))
                    .collect::<Result<Vec<_>, _>>()?;
                self.add_node(c, entry.op, inputs, entry.types.len())?
            }
        })
    }

    fn add_node(
        &mut self,
        c: Id,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        n: usize,
    ) -> Result<Vec<ValueId>, OptError> {
        let hint = op.name().to_lowercase();
        let types = &self.egraph[c].data.types;
        let mut outputs = Vec::with_capacity(n);
        for k in 0..n {
            let ty = types
                .get(k)
                .cloned()
                .unwrap_or(ValueType::Tensor(TensorType::unranked(
                    jiuzhou_ir::DType::F32,
                )));
            // A single output is named after its class; tuple outputs after their projection classes.
            let name = if n == 1 {
                self.fresh_name(c, &hint)
            } else {
                let get = self.egraph.lookup(ENode::Get {
                    index: k as u32,
                    tuple: [c],
                });
                // A projection class whose value comes from elsewhere (Dropout's data output is its input) names
                // that value, not this output.
                let elsewhere = get.is_some_and(|g| {
                    self.choice.get(&self.egraph.find(g)).is_some_and(|n| {
                        !matches!(n, ENode::Get { index, tuple }
                            if *index == k as u32 && self.egraph.find(tuple[0]) == self.egraph.find(c))
                    })
                });
                if elsewhere {
                    self.unique_name(&hint)
                } else {
                    self.fresh_name(get.unwrap_or(c), &hint)
                }
            };
            outputs.push(self.g.add_value(name, ty));
        }
        let name = format!("{hint}_n{}", self.g.nodes.len());
        self.g.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: outputs.clone(),
        });
        Ok(outputs)
    }
}
