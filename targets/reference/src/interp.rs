//! The graph interpreter and the per-op evaluation interface.

use std::collections::HashMap;
use std::sync::Arc;

use jiuzhou_ir::{Graph, Op, Tensor, TensorError, Value};
use jiuzhou_runtime::{Executable, Observer, RunError};

/// Why evaluating a node failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl EvalError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> EvalError {
        EvalError(msg.into())
    }
}

impl From<TensorError> for EvalError {
    fn from(e: TensorError) -> EvalError {
        EvalError(e.to_string())
    }
}

/// Returns early with an [`EvalError`] built from a format string.
#[macro_export]
macro_rules! eval_bail {
    ($($t:tt)*) => { return Err($crate::EvalError::new(format!($($t)*))) };
}

/// Bounds that keep untrusted models from running forever.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// The most iterations one Loop node may run.
    pub max_loop_iterations: u64,
    /// The deepest nesting of subgraph calls.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_loop_iterations: 1 << 24,
            max_depth: 64,
        }
    }
}

/// What an op's evaluation sees of a node.
pub struct EvalCx<'a> {
    /// Input values in order; `None` for absent optional inputs.
    pub inputs: &'a [Option<Value>],
    /// How many outputs the node has.
    pub num_outputs: usize,
    /// The interpreter, for ops that run subgraphs.
    pub interp: &'a Interpreter,
    /// The enclosing scopes, innermost first, for subgraph captures.
    pub(crate) scope: &'a Scope<'a>,
}

/// Name → value bindings visible to subgraphs.
pub(crate) struct Scope<'a> {
    graph: &'a Graph,
    env: &'a [Option<Value>],
    parent: Option<&'a Scope<'a>>,
    depth: usize,
}

impl Scope<'_> {
    fn lookup(&self, name: &str) -> Option<Value> {
        if let Some(id) = self.graph.value_by_name(name)
            && let Some(v) = &self.env[id.index()]
        {
            return Some(v.clone());
        }
        self.parent.and_then(|p| p.lookup(name))
    }
}

impl<'a> EvalCx<'a> {
    /// The number of inputs given (absent trailing inputs are not counted).
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Whether input `i` is present.
    pub fn has_input(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|v| v.is_some())
    }

    /// A required input of any kind.
    pub fn value(&self, i: usize) -> Result<&'a Value, EvalError> {
        match self.inputs.get(i) {
            Some(Some(v)) => Ok(v),
            _ => Err(EvalError::new(format!("input {i} is required but missing"))),
        }
    }

    /// A required tensor input.
    pub fn tensor(&self, i: usize) -> Result<&'a Arc<Tensor>, EvalError> {
        self.value(i)?
            .as_tensor()
            .ok_or_else(|| EvalError::new(format!("input {i} should be a tensor")))
    }

    /// An optional tensor input.
    pub fn opt_tensor(&self, i: usize) -> Result<Option<&'a Arc<Tensor>>, EvalError> {
        if self.has_input(i) {
            self.tensor(i).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An integer tensor input as i64s.
    pub fn ints(&self, i: usize) -> Result<Vec<i64>, EvalError> {
        let t = self.tensor(i)?;
        t.to_i64_vec().ok_or_else(|| {
            EvalError::new(format!(
                "input {i} should be an integer tensor, got {}",
                t.dtype()
            ))
        })
    }

    /// An optional integer tensor input as i64s.
    pub fn opt_ints(&self, i: usize) -> Result<Option<Vec<i64>>, EvalError> {
        if self.has_input(i) {
            self.ints(i).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Runs a subgraph with `inputs` bound to its inputs; captures resolve in the enclosing scopes.
    pub fn run_subgraph(&self, graph: &Graph, inputs: Vec<Value>) -> Result<Vec<Value>, EvalError> {
        if self.scope.depth >= self.interp.limits.max_depth {
            eval_bail!(
                "subgraphs nest deeper than {}",
                self.interp.limits.max_depth
            );
        }
        self.interp.run_graph(graph, inputs, Some(self.scope))
    }

    /// The interpreter's limits.
    pub fn limits(&self) -> &Limits {
        &self.interp.limits
    }
}

/// The reference semantics of one op.
pub trait EvalOp {
    /// Whether this target implements the op (false only for ops still listed in `not_yet_evaluated!`).
    const SUPPORTED: bool = true;

    /// Computes the node's outputs (at least `cx.num_outputs` of them) from its inputs.
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError>;
}

macro_rules! dispatch_eval {
    ($( $(#[$meta:meta])* $name:ident { $($body:tt)* } )*) => {
        impl EvalOp for Op {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                match self {
                    $( Op::$name(op) => op.eval(cx), )*
                }
            }
        }

        /// Whether the reference target implements `op`.
        pub fn is_supported(op: &Op) -> bool {
            match op {
                $( Op::$name(_) => <jiuzhou_ir::ops::$name as EvalOp>::SUPPORTED, )*
            }
        }
    };
}

jiuzhou_ir::for_each_op!(dispatch_eval);

/// Implements [`EvalOp`] for ops whose reference semantics are not written yet: they report so.
macro_rules! not_yet_evaluated {
    ($($name:ident),* $(,)?) => {$(
        impl $crate::EvalOp for jiuzhou_ir::ops::$name {
            const SUPPORTED: bool = false;

            fn eval(&self, _cx: &$crate::EvalCx<'_>) -> Result<Vec<jiuzhou_ir::Value>, $crate::EvalError> {
                Err($crate::EvalError::new(concat!("the reference target does not implement ", stringify!($name))))
            }
        }
    )*};
}
pub(crate) use not_yet_evaluated;

/// Evaluates graphs node by node.
#[derive(Clone, Debug, Default)]
pub struct Interpreter {
    /// Bounds on loops and nesting.
    pub limits: Limits,
}

impl Interpreter {
    /// Evaluates one op on constant tensors (`None` is an absent optional input) and returns its
    /// `num_outputs` outputs: what constant folding asks of the reference semantics.
    pub fn eval_op(
        &self,
        op: &Op,
        inputs: &[Option<Arc<Tensor>>],
        num_outputs: usize,
    ) -> Result<Vec<Value>, EvalError> {
        let mut g = Graph::new("eval_op");
        let ins = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_ref()
                    .map(|t| g.add_constant(format!("c{i}"), t.clone()))
            })
            .collect();
        let outs: Vec<_> = (0..num_outputs)
            .map(|k| {
                let ty = jiuzhou_ir::TensorType::unranked(jiuzhou_ir::DType::F32);
                g.add_value(format!("o{k}"), ty.into())
            })
            .collect();
        g.nodes.push(jiuzhou_ir::Node {
            name: "eval_op".into(),
            op: op.clone(),
            inputs: ins,
            outputs: outs.clone(),
        });
        g.outputs = outs;
        self.run(&g, vec![])
    }

    /// Runs `graph` on `inputs` (in graph-input order) and returns its outputs.
    pub fn run(&self, graph: &Graph, inputs: Vec<Value>) -> Result<Vec<Value>, EvalError> {
        self.run_graph(graph, inputs, None)
    }

    /// Runs `graph` like [`Interpreter::run`] and calls `observer` with every output of every node of `graph`
    /// (not of its subgraphs) right after the node is evaluated, in node order.
    pub fn run_observed(
        &self,
        graph: &Graph,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, EvalError> {
        self.run_graph_observed(graph, inputs, None, Some(observer))
    }

    pub(crate) fn run_graph(
        &self,
        graph: &Graph,
        inputs: Vec<Value>,
        parent: Option<&Scope<'_>>,
    ) -> Result<Vec<Value>, EvalError> {
        self.run_graph_observed(graph, inputs, parent, None)
    }

    fn run_graph_observed(
        &self,
        graph: &Graph,
        inputs: Vec<Value>,
        parent: Option<&Scope<'_>>,
        mut observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<Value>, EvalError> {
        if inputs.len() != graph.inputs.len() {
            eval_bail!(
                "graph `{}` takes {} inputs, got {}",
                graph.name,
                graph.inputs.len(),
                inputs.len()
            );
        }
        let mut env: Vec<Option<Value>> = vec![None; graph.values.len()];
        for (id, v) in graph.inputs.iter().zip(inputs) {
            env[id.index()] = Some(v);
        }
        for (i, v) in graph.values.iter().enumerate() {
            if let Some(c) = &v.constant {
                env[i] = Some(Value::Tensor(c.clone()));
            }
        }
        for &c in &graph.captures {
            let name = &graph.value(c).name;
            let v = parent.and_then(|p| p.lookup(name)).ok_or_else(|| {
                EvalError::new(format!(
                    "graph `{}` captures `{name}`, which is not defined",
                    graph.name
                ))
            })?;
            env[c.index()] = Some(v);
        }
        // Free each value after its last use so whole models run in bounded memory. A node reads its inputs and,
        // if it has subgraphs, the values of this graph that they capture by name (at any depth).
        let mut reads: Vec<Vec<usize>> = graph
            .nodes
            .iter()
            .map(|n| n.inputs.iter().flatten().map(|i| i.index()).collect())
            .collect();
        if graph.nodes.iter().any(|n| !n.op.subgraphs().is_empty()) {
            let by_name: HashMap<&str, usize> = graph
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (v.name.as_str(), i))
                .collect();
            for (ni, n) in graph.nodes.iter().enumerate() {
                let mut names = Vec::new();
                for g in n.op.subgraphs() {
                    captured_names(g, &mut names);
                }
                reads[ni].extend(names.iter().filter_map(|name| by_name.get(name).copied()));
            }
        }
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (ni, r) in reads.iter().enumerate() {
            for &i in r {
                last_use.insert(i, ni);
            }
        }
        let mut keep = vec![false; graph.values.len()];
        for o in &graph.outputs {
            keep[o.index()] = true;
        }
        let depth = parent.map_or(0, |p| p.depth + 1);
        for (ni, node) in graph.nodes.iter().enumerate() {
            let inputs: Vec<Option<Value>> = node
                .inputs
                .iter()
                .map(|i| match i {
                    None => Ok(None),
                    Some(id) => env[id.index()].clone().map(Some).ok_or_else(|| {
                        EvalError::new(format!(
                            "value `{}` is read before it is computed",
                            graph.value(*id).name
                        ))
                    }),
                })
                .collect::<Result<_, _>>()?;
            // Trailing absent inputs are the same as not given.
            let mut inputs = inputs;
            while matches!(inputs.last(), Some(None)) {
                inputs.pop();
            }
            let scope = Scope {
                graph,
                env: &env,
                parent,
                depth,
            };
            let cx = EvalCx {
                inputs: &inputs,
                num_outputs: node.outputs.len(),
                interp: self,
                scope: &scope,
            };
            let outputs = node.op.eval(&cx).map_err(|e| {
                EvalError::new(format!(
                    "node `{}` ({}): {}",
                    node.name,
                    node.op.name(),
                    e.0
                ))
            })?;
            if outputs.len() < node.outputs.len() {
                eval_bail!(
                    "node `{}` ({}): produced {} outputs, the node has {}",
                    node.name,
                    node.op.name(),
                    outputs.len(),
                    node.outputs.len()
                );
            }
            tracing::trace!(node = %node.name, op = node.op.name(), "evaluated");
            if let Some(observe) = observer.as_mut() {
                for (id, v) in node.outputs.iter().zip(&outputs) {
                    observe(&graph.value(*id).name, v);
                }
            }
            for (id, v) in node.outputs.iter().zip(outputs) {
                env[id.index()] = Some(v);
            }
            for &i in &reads[ni] {
                if last_use.get(&i) == Some(&ni) && !keep[i] && graph.values[i].constant.is_none() {
                    env[i] = None;
                }
            }
        }
        graph
            .outputs
            .iter()
            .map(|o| {
                env[o.index()].clone().ok_or_else(|| {
                    EvalError::new(format!(
                        "graph output `{}` was never computed",
                        graph.value(*o).name
                    ))
                })
            })
            .collect()
    }
}

/// The names `g` and the subgraphs nested in it capture from enclosing graphs.
fn captured_names<'g>(g: &'g Graph, out: &mut Vec<&'g str>) {
    out.extend(g.captures.iter().map(|&c| g.value(c).name.as_str()));
    for n in &g.nodes {
        for sg in n.op.subgraphs() {
            captured_names(sg, out);
        }
    }
}

/// A graph prepared for the reference target.
pub struct ReferenceExecutable {
    graph: Arc<Graph>,
    interp: Interpreter,
}

impl ReferenceExecutable {
    /// Wraps `graph` to run with the default limits.
    pub fn new(graph: Arc<Graph>) -> ReferenceExecutable {
        ReferenceExecutable {
            graph,
            interp: Interpreter::default(),
        }
    }
}

impl Executable for ReferenceExecutable {
    fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
        self.interp
            .run(&self.graph, inputs)
            .map_err(|e| RunError::Exec(e.0))
    }

    fn target_name(&self) -> &str {
        "reference"
    }

    fn run_observed(
        &self,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, RunError> {
        self.interp
            .run_observed(&self.graph, inputs, observer)
            .map_err(|e| RunError::Exec(e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::{DType, GraphBuilder, TensorType, ops};

    #[test]
    fn observer_sees_every_node_output_in_order() {
        // y = Relu(x + x) · x
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", TensorType::known(DType::F32, &[3]));
        let s = b.node1(ops::Add::default(), &[x, x]).unwrap();
        let r = b.node1(ops::Relu::default(), &[s]).unwrap();
        let y = b.node1(ops::Mul::default(), &[r, x]).unwrap();
        b.output(y);
        let g = b.finish().unwrap();
        let names: Vec<String> = [s, r, y].iter().map(|v| g.value(*v).name.clone()).collect();
        let x = Value::Tensor(Arc::new(Tensor::vector(vec![-1.0f32, 2.0, 3.0])));
        let mut seen: Vec<(String, Vec<f32>)> = Vec::new();
        let out = Interpreter::default()
            .run_observed(&g, vec![x], &mut |name, v| {
                let t = v.as_tensor().unwrap();
                seen.push((name.to_string(), t.as_slice::<f32>().unwrap().to_vec()));
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (names[0].clone(), vec![-2.0, 4.0, 6.0]),
                (names[1].clone(), vec![0.0, 4.0, 6.0]),
                (names[2].clone(), vec![0.0, 8.0, 18.0]),
            ]
        );
        assert_eq!(
            out[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[0.0, 8.0, 18.0]
        );
    }
}
