//! Building graphs in code, with types inferred as nodes are added.
//!
//! ```
//! use jiuzhou_ir::{DType, Dim, GraphBuilder, TensorType, ops};
//!
//! let mut b = GraphBuilder::new("relu_add");
//! let x = b.input("x", TensorType::new(DType::F32, [Dim::from("batch"), Dim::Known(4)]));
//! let y = b.input("y", TensorType::known(DType::F32, &[4]));
//! let sum = b.node1(ops::Add::default(), &[x, y]).unwrap();
//! let out = b.node1(ops::Relu::default(), &[sum]).unwrap();
//! b.output(out);
//! let graph = b.finish().unwrap();
//! assert_eq!(graph.value(out).ty.to_string(), "f32[batch,4]");
//! ```

use std::sync::Arc;

use crate::infer::{InferCx, InferOp, SymGen};
use crate::{Graph, Node, Op, Tensor, ValueId, ValueType, VerifyError};

/// Why a node could not be added or the graph finished.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// Type inference rejected the node.
    #[error("{op}: {error}")]
    Infer {
        /// Op name.
        op: &'static str,
        /// The failure.
        error: crate::infer::InferError,
    },
    /// The finished graph breaks a structural rule.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Builds a [`Graph`] node by node.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: Graph,
    syms: SymGen,
}

impl GraphBuilder {
    /// A builder for an empty graph called `name`.
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder {
            graph: Graph::new(name),
            syms: SymGen::default(),
        }
    }

    fn unique_name(&self, base: &str) -> String {
        if self.graph.value_by_name(base).is_none() {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| self.graph.value_by_name(n).is_none())
            .expect("some name is free")
    }

    /// Adds a graph input.
    pub fn input(&mut self, name: &str, ty: impl Into<ValueType>) -> ValueId {
        let name = self.unique_name(name);
        let id = self.graph.add_value(name, ty.into());
        self.graph.inputs.push(id);
        id
    }

    /// Adds a constant.
    pub fn constant(&mut self, name: &str, tensor: Tensor) -> ValueId {
        let name = self.unique_name(name);
        self.graph.add_constant(name, Arc::new(tensor))
    }

    /// Adds a node with `num_outputs` outputs; absent optional inputs are `None`.
    pub fn node_opt(
        &mut self,
        op: impl Into<Op>,
        inputs: &[Option<ValueId>],
        num_outputs: usize,
    ) -> Result<Vec<ValueId>, BuildError> {
        let op = op.into();
        let tys: Vec<Option<ValueType>> = inputs
            .iter()
            .map(|i| i.map(|id| self.graph.value(id).ty.clone()))
            .collect();
        let consts: Vec<Option<Arc<Tensor>>> = inputs
            .iter()
            .map(|i| i.and_then(|id| self.graph.value(id).constant.clone()))
            .collect();
        let mut cx = InferCx {
            inputs: &tys,
            consts: &consts,
            num_outputs,
            syms: &mut self.syms,
        };
        let out_tys = op.infer(&mut cx).map_err(|error| BuildError::Infer {
            op: op.name(),
            error,
        })?;
        let index = self.graph.nodes.len();
        let outputs: Vec<ValueId> = out_tys
            .into_iter()
            .take(num_outputs)
            .enumerate()
            .map(|(k, ty)| {
                let name = self.unique_name(&format!("{}_{index}_{k}", op.name().to_lowercase()));
                self.graph.add_value(name, ty)
            })
            .collect();
        let name = format!("{}_{index}", op.name().to_lowercase());
        self.graph.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
        });
        Ok(outputs)
    }

    /// Adds a node with one output and all inputs present.
    pub fn node1(&mut self, op: impl Into<Op>, inputs: &[ValueId]) -> Result<ValueId, BuildError> {
        let inputs: Vec<Option<ValueId>> = inputs.iter().copied().map(Some).collect();
        Ok(self.node_opt(op, &inputs, 1)?[0])
    }

    /// The static type of a value added so far.
    pub fn ty(&self, id: ValueId) -> &ValueType {
        &self.graph.value(id).ty
    }

    /// Marks a value as a graph output.
    pub fn output(&mut self, id: ValueId) {
        self.graph.outputs.push(id);
    }

    /// Checks and returns the graph.
    pub fn finish(self) -> Result<Graph, BuildError> {
        self.graph.verify()?;
        Ok(self.graph)
    }
}
