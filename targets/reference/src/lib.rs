//! `jiuzhou-target-reference`: the semantics oracle.
//!
//! Straightforward, readable implementations of every op of the IR, written for correctness first. Every other
//! target and every rewrite is checked against this one. The [`Interpreter`] walks a graph in order, evaluating
//! each node with its op's [`EvalOp`] implementation; ops are grouped by family under [`ops`], one file each,
//! mirroring `jiuzhou_ir::infer`.
//!
//! **Architecture invariant:** this crate sees only the IR: never ONNX, never another target.
#![deny(missing_docs)]

mod interp;
pub mod kernels;
pub mod ops;

pub use interp::{
    EvalCx, EvalError, EvalOp, Interpreter, Limits, ReferenceExecutable, is_supported,
};
