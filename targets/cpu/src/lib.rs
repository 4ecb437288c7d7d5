//! `jiuzhou-target-cpu`: compiles graphs for the host CPU.
//!
//! [`CpuExecutable::compile`] turns a graph into a launch plan with one step per node: MatMul, Gemm and Conv run
//! through the `gemm` crate's microkernels ([`linalg`]) with a fused bias/Relu epilogue; f32 elementwise ops run
//! kernels generated and JIT-compiled with Cranelift ([`jit`], [`elementwise`]); pooling ([`pool`]), reductions
//! ([`reduce`]), softmax and normalizations ([`norm`]), data movement ([`movement`]) and float activations run
//! native kernels chosen by [`native::select`]; every other node (and every dtype these kernels do not cover) runs
//! the reference implementation, explicitly: the executable lists those nodes in [`CpuExecutable::fallback_ops`]
//! and compilation logs them. Intermediate f32 tensors with static shapes live in one arena laid out at compile
//! time from liveness ([`plan`]). Execution is single-threaded and deterministic. Runs can report every step's
//! outputs (`run_observed`, for `jiuzhou compare`); [`fault`] is a test-only switch that makes chosen nodes compute
//! wrong results on purpose.
//!
//! **Architecture invariant:** this crate sees only the IR, never ONNX; it uses the reference target only through
//! its public interpreter, for the fallback nodes.
#![deny(missing_docs)]

pub mod attention;
pub mod elementwise;
mod exec;
pub mod fault;
pub mod fused;
pub mod jit;
pub mod linalg;
pub mod movement;
pub mod native;
pub mod norm;
pub mod plan;
pub mod pool;
pub mod reduce;
pub mod tensor_ops;

pub use exec::{CpuExecutable, FallbackOp};

/// Why compiling or running on the CPU target failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

impl ExecError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> ExecError {
        ExecError(msg.into())
    }
}

impl From<jit::JitError> for ExecError {
    fn from(e: jit::JitError) -> ExecError {
        ExecError(e.to_string())
    }
}
