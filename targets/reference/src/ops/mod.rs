//! Reference semantics of every op, one file per family (the same families as `jiuzhou_ir::infer`).

pub mod control;
pub mod elementwise;
pub mod image;
pub mod nn;
pub mod recurrent;
pub mod reduce;
pub mod tensor;
