//! Shape and type inference.
//!
//! Every op implements [`InferOp`]: from the static types of its inputs (and the values of inputs that are
//! constants) it computes the static types of its outputs. Dims that depend on data that is not known until run time
//! get fresh symbols (`nonzero_0`, `unique_1`, ...). [`infer_graph`] runs the rules over a whole graph in order and
//! writes the results into the value table.
//!
//! Ops are grouped by family, one file each; the dispatch over [`Op`] is generated from the op table, so a new op
//! does not compile until it has an inference rule.

use std::sync::Arc;

use crate::{DType, Dim, Graph, Op, Tensor, TensorType, ValueType};

mod control;
mod elementwise;
mod image;
pub mod nn;
mod recurrent;
mod reduce;
mod tensor;
#[cfg(test)]
pub(crate) mod test_util;

pub use elementwise::broadcast_shapes;

/// Why inference failed for a node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InferError(pub String);

impl InferError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> InferError {
        InferError(msg.into())
    }
}

/// Returns early with an [`InferError`] built from a format string.
#[macro_export]
macro_rules! infer_bail {
    ($($t:tt)*) => { return Err($crate::infer::InferError::new(format!($($t)*))) };
}

/// Generates fresh dim symbols for sizes only known at run time. Names are unique within one inference run.
#[derive(Debug, Default)]
pub struct SymGen {
    next: usize,
}

impl SymGen {
    /// A fresh symbol `hint_N`.
    pub fn fresh(&mut self, hint: &str) -> Dim {
        let n = self.next;
        self.next += 1;
        Dim::Sym(format!("{hint}_{n}"))
    }
}

/// What an inference rule sees of a node.
pub struct InferCx<'a> {
    /// Static types of the inputs; `None` for absent optional inputs.
    pub inputs: &'a [Option<ValueType>],
    /// Values of inputs that are constants.
    pub consts: &'a [Option<Arc<Tensor>>],
    /// How many outputs the node has.
    pub num_outputs: usize,
    /// Symbol generator for data-dependent dims.
    pub syms: &'a mut SymGen,
}

impl<'a> InferCx<'a> {
    /// The number of inputs given (absent trailing inputs are not counted).
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Whether input `i` is present.
    pub fn has_input(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|t| t.is_some())
    }

    /// The type of a present input of any kind.
    pub fn value(&self, i: usize) -> Result<&'a ValueType, InferError> {
        match self.inputs.get(i) {
            Some(Some(t)) => Ok(t),
            _ => Err(InferError::new(format!(
                "input {i} is required but missing"
            ))),
        }
    }

    /// The tensor type of a required input.
    pub fn tensor(&self, i: usize) -> Result<&'a TensorType, InferError> {
        match self.value(i)? {
            ValueType::Tensor(t) => Ok(t),
            other => Err(InferError::new(format!(
                "input {i} should be a tensor, got {other}"
            ))),
        }
    }

    /// The tensor type of an optional input.
    pub fn opt_tensor(&self, i: usize) -> Result<Option<&'a TensorType>, InferError> {
        if self.has_input(i) {
            self.tensor(i).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The dims of a required input, if its rank is known.
    pub fn dims(&self, i: usize) -> Result<Option<&'a [Dim]>, InferError> {
        Ok(self.tensor(i)?.shape.as_deref())
    }

    /// The constant value of input `i`, if it is a constant.
    pub fn const_tensor(&self, i: usize) -> Option<&'a Arc<Tensor>> {
        self.consts.get(i).and_then(|c| c.as_ref())
    }

    /// The constant value of integer input `i` as i64s, if it is a constant.
    pub fn const_ints(&self, i: usize) -> Option<Vec<i64>> {
        self.const_tensor(i).and_then(|t| t.to_i64_vec())
    }

    /// A fresh symbol for a data-dependent dim.
    pub fn fresh(&mut self, hint: &str) -> Dim {
        self.syms.fresh(hint)
    }

    /// Checks that input `i` has one of `allowed` dtypes.
    pub fn expect_dtype(&self, i: usize, allowed: &[DType]) -> Result<DType, InferError> {
        let d = self.tensor(i)?.dtype;
        if allowed.contains(&d) {
            Ok(d)
        } else {
            Err(InferError::new(format!(
                "input {i} has dtype {d}, expected one of {allowed:?}"
            )))
        }
    }
}

/// The inference rule of one op.
pub trait InferOp {
    /// Computes the static types of the node's outputs (exactly `cx.num_outputs` of them).
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError>;
}

macro_rules! dispatch_infer {
    ($( $(#[$meta:meta])* $name:ident { $($body:tt)* } )*) => {
        impl InferOp for Op {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                match self {
                    $( Op::$name(op) => op.infer(cx), )*
                }
            }
        }
    };
}

crate::for_each_op!(dispatch_infer);

/// Implements [`InferOp`] for ops whose inference rule is not written yet: they report so.
macro_rules! not_yet_inferred {
    ($($name:ident),* $(,)?) => {$(
        impl $crate::infer::InferOp for $crate::ops::$name {
            fn infer(
                &self,
                _cx: &mut $crate::infer::InferCx<'_>,
            ) -> Result<Vec<$crate::ValueType>, $crate::infer::InferError> {
                Err($crate::infer::InferError::new(concat!("shape inference for ", stringify!($name), " is not implemented")))
            }
        }
    )*};
}
pub(crate) use not_yet_inferred;

/// Normalizes a possibly negative axis against `rank` (`-1` is the last axis).
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, InferError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        infer_bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// One output of the same type as input `i` (the rule of most unary ops).
pub fn same_as_input(cx: &InferCx<'_>, i: usize) -> Result<Vec<ValueType>, InferError> {
    Ok(vec![cx.value(i)?.clone()])
}

/// A failed inference, with the node that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node `{node}` ({op}): {error}")]
pub struct NodeInferError {
    /// Node name.
    pub node: String,
    /// Op name.
    pub op: &'static str,
    /// The failure.
    pub error: InferError,
}

/// Infers the types of every node output in `graph`, in order, and stores them in the value table.
///
/// Input, constant and capture types must already be set. Subgraphs are expected to carry their own types (the
/// importer infers them first, with the enclosing scope's types bound to the captures).
pub fn infer_graph(graph: &mut Graph, syms: &mut SymGen) -> Result<(), NodeInferError> {
    for ni in 0..graph.nodes.len() {
        let node = &graph.nodes[ni];
        let inputs: Vec<Option<ValueType>> = node
            .inputs
            .iter()
            .map(|i| i.map(|id| graph.values[id.index()].ty.clone()))
            .collect();
        let consts: Vec<Option<Arc<Tensor>>> = node
            .inputs
            .iter()
            .map(|i| i.and_then(|id| graph.values[id.index()].constant.clone()))
            .collect();
        let mut cx = InferCx {
            inputs: &inputs,
            consts: &consts,
            num_outputs: node.outputs.len(),
            syms,
        };
        let result = node.op.infer(&mut cx).and_then(|tys| {
            if tys.len() < node.outputs.len() {
                Err(InferError::new(format!(
                    "the op gives {} outputs but the node names {}",
                    tys.len(),
                    node.outputs.len()
                )))
            } else {
                Ok(tys)
            }
        });
        let tys = result.map_err(|error| NodeInferError {
            node: node.name.clone(),
            op: node.op.name(),
            error,
        })?;
        let outputs = node.outputs.clone();
        for (o, t) in outputs.into_iter().zip(tys) {
            graph.values[o.index()].ty = t;
        }
    }
    Ok(())
}
