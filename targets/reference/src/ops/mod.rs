//! Reference semantics of every op, one file per family (the same families as `jiuzhou_ir::infer`).

pub mod control;
pub mod elementwise;
pub mod nn;
pub mod reduce;
pub mod tensor;
