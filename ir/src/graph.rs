//! The graph: typed values and the nodes that compute them.
//!
//! A [`Graph`] owns a table of values ([`ValueInfo`], addressed by [`ValueId`]) and a list of [`Node`]s in
//! topological order. A value is exactly one of: a graph input, a constant (it carries its tensor), a capture
//! (a subgraph's reference to a value of an enclosing graph, resolved by name), or the output of exactly one node.
//!
//! **Invariant:** `nodes` is topologically sorted: every node's inputs are defined before it. [`Graph::verify`]
//! checks this and the other structural rules; the importer, the text parser and every pass keep them.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Op, Tensor, ValueType};

/// The index of a value in its graph's value table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index into [`Graph::values`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A value of the graph: a name, a static type, and its data if it is a constant.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Unique name within the graph (the ONNX tensor name where there is one).
    pub name: String,
    /// Static type.
    pub ty: ValueType,
    /// The data, if this value is a constant.
    pub constant: Option<Arc<Tensor>>,
}

/// One operation applied to values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name (the ONNX node name; may be empty).
    pub name: String,
    /// The operation and its attributes.
    pub op: Op,
    /// Inputs in the op's order; `None` is an absent optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs in the op's order.
    pub outputs: Vec<ValueId>,
}

/// A graph of typed values and nodes. Also used for subgraphs (If branches, Loop and Scan bodies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Name (the ONNX graph name).
    pub name: String,
    /// All values, addressed by [`ValueId`].
    pub values: Vec<ValueInfo>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Graph inputs, in order.
    pub inputs: Vec<ValueId>,
    /// Graph outputs, in order.
    pub outputs: Vec<ValueId>,
    /// Values taken from an enclosing graph by name (subgraphs only).
    pub captures: Vec<ValueId>,
}

/// A structural problem found by [`Graph::verify`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("graph `{graph}`: {what}")]
pub struct VerifyError {
    /// The graph's name.
    pub graph: String,
    /// What is wrong.
    pub what: String,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a value and returns its id. The caller keeps names unique.
    pub fn add_value(&mut self, name: impl Into<String>, ty: ValueType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueInfo {
            name: name.into(),
            ty,
            constant: None,
        });
        id
    }

    /// Adds a constant value.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Arc<Tensor>) -> ValueId {
        let ty = crate::Value::Tensor(tensor.clone()).value_type();
        let id = self.add_value(name, ty);
        self.values[id.index()].constant = Some(tensor);
        id
    }

    /// The value's record.
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.index()]
    }

    /// The value's record, mutably.
    pub fn value_mut(&mut self, id: ValueId) -> &mut ValueInfo {
        &mut self.values[id.index()]
    }

    /// The id of the value called `name`, if any (linear scan; build a map for repeated look-ups).
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.values
            .iter()
            .position(|v| v.name == name)
            .map(|i| ValueId(i as u32))
    }

    /// Which node produces each value (`None` for inputs, constants and captures).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                p[o.index()] = Some(i);
            }
        }
        p
    }

    /// How many times each value is read (by nodes and as a graph output).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for i in n.inputs.iter().flatten() {
                c[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            c[o.index()] += 1;
        }
        c
    }

    /// Number of nodes here and in all nested subgraphs.
    pub fn node_count_deep(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| {
                1 + n
                    .op
                    .subgraphs()
                    .iter()
                    .map(|g| g.node_count_deep())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Checks the structural invariants: ids in range, unique names, every value defined exactly once, nodes in
    /// topological order, outputs defined. Subgraphs are checked too.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let err = |what: String| VerifyError {
            graph: self.name.clone(),
            what,
        };
        let n = self.values.len();
        let in_range = |id: ValueId| id.index() < n;
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, v) in self.values.iter().enumerate() {
            if let Some(prev) = names.insert(&v.name, i) {
                return Err(err(format!(
                    "values {prev} and {i} are both named `{}`",
                    v.name
                )));
            }
        }
        // 0 = undefined, 1 = defined.
        let mut defined = vec![false; n];
        let define = |id: ValueId, how: &str, defined: &mut Vec<bool>| {
            if !in_range(id) {
                return Err(err(format!(
                    "{how} refers to value {} which does not exist",
                    id.0
                )));
            }
            if std::mem::replace(&mut defined[id.index()], true) {
                return Err(err(format!(
                    "value `{}` is defined twice ({how})",
                    self.values[id.index()].name
                )));
            }
            Ok(())
        };
        for &i in &self.inputs {
            define(i, "a graph input", &mut defined)?;
        }
        for &c in &self.captures {
            define(c, "a capture", &mut defined)?;
        }
        for (i, v) in self.values.iter().enumerate() {
            if v.constant.is_some() {
                define(ValueId(i as u32), "a constant", &mut defined)?;
            }
        }
        for node in &self.nodes {
            for inp in node.inputs.iter().flatten() {
                if !in_range(*inp) || !defined[inp.index()] {
                    let what = if in_range(*inp) {
                        self.values[inp.index()].name.as_str()
                    } else {
                        "?"
                    };
                    return Err(err(format!(
                        "node `{}` ({}) reads `{what}` before it is defined",
                        node.name,
                        node.op.name()
                    )));
                }
            }
            for &o in &node.outputs {
                define(o, &format!("output of node `{}`", node.name), &mut defined)?;
            }
            for g in node.op.subgraphs() {
                g.verify()?;
            }
        }
        for &o in &self.outputs {
            if !in_range(o) || !defined[o.index()] {
                return Err(err(format!("graph output {} is never defined", o.0)));
            }
        }
        Ok(())
    }
}
