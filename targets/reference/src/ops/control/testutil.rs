//! Helpers for the control-family tests: one-node graphs, hand-built bodies, short printouts of values.

use std::sync::Arc;

use jiuzhou_ir::{DType, Graph, Node, Op, Tensor, TensorType, Value, ValueId};

use crate::{EvalError, Interpreter, Limits};

/// A string tensor.
pub fn strs(shape: &[usize], v: &[&str]) -> Value {
    Tensor::from_vec(shape.to_vec(), v.iter().map(|s| s.to_string()).collect())
        .unwrap()
        .into()
}

/// An i64 tensor.
pub fn ints(shape: &[usize], v: &[i64]) -> Value {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap().into()
}

/// A sequence of values (element type taken from the first).
pub fn seq(items: Vec<Value>) -> Value {
    Value::Sequence {
        elem: items
            .first()
            .map(Value::value_type)
            .unwrap_or(TensorType::unranked(DType::F32).into()),
        items,
    }
}

/// A short printout: `shape [elements]` for tensors, `seq(...)`, `opt(...)`/`opt()`.
pub fn show(v: &Value) -> String {
    match v {
        Value::Tensor(t) => {
            let elems = if let Ok(s) = t.as_slice::<String>() {
                format!("{s:?}")
            } else if let Ok(b) = t.as_slice::<bool>() {
                format!("{b:?}")
            } else if let Some(i) = t.to_i64_vec() {
                format!("{i:?}")
            } else {
                format!("{:?}", t.to_f64_vec().unwrap_or_default())
            };
            format!("{:?} {elems}", t.shape())
        }
        Value::Sequence { items, .. } => {
            format!(
                "seq({})",
                items.iter().map(show).collect::<Vec<_>>().join("; ")
            )
        }
        Value::Optional { item, .. } => {
            format!("opt({})", item.as_deref().map(show).unwrap_or_default())
        }
    }
}

/// Builds graphs by hand: named values, nodes that are not type-checked (the interpreter does not need types).
pub struct Body {
    /// The graph under construction.
    pub g: Graph,
}

impl Body {
    /// An empty graph.
    pub fn new(name: &str) -> Body {
        Body {
            g: Graph::new(name),
        }
    }

    /// Adds a graph input.
    pub fn input(&mut self, name: &str) -> ValueId {
        let id = self.value(name);
        self.g.inputs.push(id);
        id
    }

    /// Adds a capture of an enclosing graph's value.
    pub fn capture(&mut self, name: &str) -> ValueId {
        let id = self.value(name);
        self.g.captures.push(id);
        id
    }

    /// Adds a constant.
    pub fn constant(&mut self, name: &str, v: Value) -> ValueId {
        let Value::Tensor(t) = v else {
            panic!("constants are tensors")
        };
        self.g.add_constant(name, t)
    }

    fn value(&mut self, name: &str) -> ValueId {
        self.g
            .add_value(name, TensorType::unranked(DType::F32).into())
    }

    /// Adds a node; outputs are named.
    pub fn node(
        &mut self,
        op: impl Into<Op>,
        inputs: &[Option<ValueId>],
        outputs: &[&str],
    ) -> Vec<ValueId> {
        let outs: Vec<ValueId> = outputs.iter().map(|n| self.value(n)).collect();
        let name = format!("n{}", self.g.nodes.len());
        self.g.nodes.push(Node {
            name,
            op: op.into(),
            inputs: inputs.to_vec(),
            outputs: outs.clone(),
        });
        outs
    }

    /// Marks graph outputs and returns the graph.
    pub fn finish(mut self, outputs: &[ValueId]) -> Arc<Graph> {
        self.g.outputs = outputs.to_vec();
        self.g.verify().unwrap();
        Arc::new(self.g)
    }
}

/// Runs one node of `op` on `inputs` (absent ones `None`) with the given limits, in a graph that also defines
/// `captures` (values `c0`, `c1`, ... that subgraphs can capture).
pub fn run_with(
    op: impl Into<Op>,
    inputs: Vec<Option<Value>>,
    captures: Vec<Value>,
    num_outputs: usize,
    limits: Limits,
) -> Result<Vec<Value>, EvalError> {
    let mut b = Body::new("main");
    let mut ids = Vec::new();
    let mut given = Vec::new();
    for (i, v) in captures.into_iter().enumerate() {
        b.input(&format!("c{i}"));
        given.push(v);
    }
    for (i, v) in inputs.into_iter().enumerate() {
        match v {
            Some(v) => {
                let id = b.input(&format!("x{i}"));
                b.g.value_mut(id).ty = v.value_type();
                ids.push(Some(id));
                given.push(v);
            }
            None => ids.push(None),
        }
    }
    let names: Vec<String> = (0..num_outputs).map(|k| format!("y{k}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let outs = b.node(op, &ids, &names);
    let g = b.finish(&outs);
    Interpreter { limits }.run(&g, given)
}

/// Runs one node and prints its outputs (or the error).
pub fn run(op: impl Into<Op>, inputs: Vec<Option<Value>>, num_outputs: usize) -> String {
    run_cap(op, inputs, vec![], num_outputs)
}

/// Runs one node in a graph that also defines `captures` (see [`run_with`]) and prints its outputs (or the error).
pub fn run_cap(
    op: impl Into<Op>,
    inputs: Vec<Option<Value>>,
    captures: Vec<Value>,
    num_outputs: usize,
) -> String {
    match run_with(op, inputs, captures, num_outputs, Limits::default()) {
        Ok(vs) => vs.iter().map(show).collect::<Vec<_>>().join(" | "),
        Err(e) => format!("error: {e}"),
    }
}
