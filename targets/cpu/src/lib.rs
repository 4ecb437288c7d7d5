//! `jiuzhou-target-cpu`: compiles graphs for the host CPU.
//!
//! [`CpuExecutable::compile`] turns a graph into a launch plan with one step per node: MatMul, Gemm and Conv run
//! through the `gemm` crate's microkernels ([`linalg`]) with a fused bias/Relu epilogue, convolutions with constant
//! weights on AVX2+FMA CPUs through our own GEMM with weights packed at compile time ([`packed_gemm`]); f32 elementwise ops run
//! kernels generated and JIT-compiled with Cranelift ([`jit`], [`elementwise`]); pooling ([`pool`]), reductions
//! ([`reduce`]), softmax and normalizations ([`norm`]), data movement ([`movement`]) and float activations run
//! native kernels chosen by [`native::select`]; every other node (and every dtype these kernels do not cover) runs
//! the reference implementation, explicitly: the executable lists those nodes in [`CpuExecutable::fallback_ops`]
//! and compilation logs them. Intermediate f32 tensors live in one arena laid out from liveness ([`plan`]): at
//! compile time when their shapes are static, per binding of the symbolic dims the inputs bind otherwise (shapes
//! that depend on data stay on the heap). Kernels split their work over threads ([`parallel`], [`CpuOptions::threads`]) only
//! along independent output elements, so results are bit-identical for every thread count. Runs can report every
//! step's outputs (`run_observed`, for `jiuzhou compare`); [`fault`] is a test-only switch that makes chosen nodes
//! compute wrong results on purpose.
//!
//! **Architecture invariant:** this crate sees only the IR, never ONNX; it uses the reference target only through
//! its public interpreter, for the fallback nodes.
#![deny(missing_docs)]

pub mod attention;
pub mod direct_conv;
pub mod elementwise;
mod exec;
pub mod fault;
pub mod fused;
pub mod fused_elementwise;
pub mod jit;
pub mod linalg;
pub mod movement;
pub mod native;
pub mod norm;
pub mod packed_gemm;
pub mod parallel;
pub mod plan;
pub mod pool;
pub mod reduce;
pub mod tensor_ops;
pub mod winograd;

pub use exec::{ArenaUse, BOUND_PLANS, CpuExecutable, CpuOptions, FallbackOp};
pub use parallel::Parallel;

/// The CPU features the code of this target requires of the machine that runs it, as `std::arch` names them.
///
/// Kernels are generated when an executable is compiled or an artifact is loaded, for the features of the host it
/// happens on (`cranelift_native`), and `gemm` picks its microkernels at run time, so the only hard requirement is
/// what Cranelift's x86-64 backend itself needs.
pub fn required_cpu_features() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["sse2"]
    } else {
        &[]
    }
}

/// Whether the running CPU has `feature` (a `std::arch` feature name); unknown names are reported missing.
pub fn has_cpu_feature(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($name:tt),*) => {
                match feature {
                    $($name => std::arch::is_x86_feature_detected!($name),)*
                    _ => false,
                }
            };
        }
        detect!(
            "sse2",
            "sse3",
            "ssse3",
            "sse4.1",
            "sse4.2",
            "popcnt",
            "avx",
            "avx2",
            "fma",
            "bmi1",
            "bmi2",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512cd",
            "avx512dq",
            "avx512vl",
            "avx512vnni"
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}

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
