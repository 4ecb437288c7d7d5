//! `jiuzhou-ir`: the graph IR every other crate speaks.
//!
//! - [`DType`], [`Tensor`]: element types and dense tensors (constants and run-time values);
//! - [`Dim`], [`TensorType`], [`ValueType`]: static types with symbolic dims;
//! - [`Op`]: the closed op set, declared once in [`ops::table`];
//! - [`Graph`]: typed values and nodes in topological order;
//! - [`infer`]: shape and type inference for every op;
//! - [`text`]: a text form that round-trips (print → parse → print is identical);
//! - [`GraphBuilder`]: building graphs in code.
//!
//! **Architecture invariant:** this crate knows nothing about ONNX protobuf, files, targets or execution.
#![deny(missing_docs)]

pub mod attr;
pub mod builder;
pub mod dtype;
pub mod graph;
pub mod infer;
pub mod narrow;
pub mod num;
pub mod ops;
pub mod tensor;
pub mod text;
pub mod types;
pub mod value;

pub use attr::{Attr, AttrError, Attrs};
pub use builder::{BuildError, GraphBuilder};
pub use dtype::DType;
pub use graph::{Graph, Node, ValueId, ValueInfo, VerifyError};
pub use ops::Op;
pub use tensor::{Data, Elem, Tensor, TensorError};
pub use types::{Dim, Shape, TensorType, ValueType};
pub use value::Value;

#[doc(hidden)]
pub use half;
