//! `jiuzhou-target-vnpu`: a simulated NPU — machine profiles, an instruction set with text and binary forms, and a
//! functional + timing simulator that writes Chrome traces.
//!
//! # The machine
//!
//! The vnpu family is the shape most AI accelerators share. A core has:
//!
//! - a **matrix unit** ("cube") that computes `C[M×N] += A[M×K] · B[K×N]` on fixed tiles, from low-precision inputs
//!   (f16, bf16, i8) into a wide accumulator (f32, i32), reading A and B from dedicated buffers and accumulating into
//!   a third;
//! - a **vector unit** with a number of lanes that runs elementwise ops, broadcasts, row reductions and casts on
//!   the buffers it can reach;
//! - small **software-managed on-chip buffers** (no caches): every byte a unit touches was put there by a DMA;
//! - **DMA engines** that move strided 1-3-D blocks between global memory and the buffers, converting dtypes;
//! - **global memory** with a size and a bandwidth.
//!
//! A [`Profile`] (a TOML file under `profiles/`, see [`profile`]) gives all of these numbers; three ship with the
//! crate (`default`: a 16×16×16 f16 cube with L0A/L0B/L0C and a unified buffer UB; `vector_heavy`: a 32×8×16 bf16
//! cube with a wide vector unit and a single DMA channel; `channels_last`: the default machine whose conv datapath
//! takes the graph's channels-last tensors, [`GraphLayout::Nhwc`], so that the optimizer lays graphs out NHWC by
//! cost and the layout changes are explicit, counted Transpose kernels). Nothing in the code names a particular
//! profile.
//!
//! # Programs
//!
//! A [`Program`] ([`isa`]) is a fully unrolled instruction list for one core. A scalar front end dispatches each
//! instruction in order into one of four queues (`dma_in`, `dma_out`, `cube`, `vector`); queues run concurrently
//! and are ordered only by `set_flag`/`wait_flag` events and barriers. Programs have a text form
//! ([`isa::text`], `parse`/`print`) and a binary encoding ([`isa::binary`]); code generators build them with
//! [`ProgramBuilder`].
//!
//! # Simulation
//!
//! [`Machine::run`] ([`sim`]) executes a program exactly (f16/bf16 storage with f32 accumulation, i8 with i32) and
//! traps on out-of-bounds or misaligned accesses and on races the synchronization leaves open (found with vector
//! clocks, `race.rs`). It also times every instruction on its engine's timeline; [`trace::write_chrome_trace`] turns
//! the result into a Perfetto-loadable trace with one track per engine.
//!
//! # Compiling graphs
//!
//! [`codegen`] turns IR nodes into programs for one profile (GEMM/convolution on the cube, elementwise ops on the
//! vector unit), [`partition`] decides which nodes run on the NPU and which on the host (and why), and
//! [`VnpuExecutable`] ([`exec`]) runs a whole graph: NPU kernels on the simulator, host regions through a
//! [`HostCompiler`] the caller supplies (the compiler passes the CPU target), tensors moved and counted at region
//! boundaries. The ISA and simulator modules know nothing of the IR; only these three do.
#![deny(missing_docs)]

pub mod builder;
pub mod codegen;
pub mod dtype;
pub mod exec;
pub mod isa;
pub mod partition;
pub mod profile;
mod race;
pub mod sim;
pub mod trace;

pub use builder::ProgramBuilder;
pub use dtype::DType;
pub use exec::{HostCompiler, Options, RunStats, VnpuExecutable};
pub use isa::{
    Access, BinaryOp, Engine, Instr, Mem, Operand, Program, ReduceOp, UnaryOp, VectorInstr,
    VectorOp,
};
pub use partition::{NodePlacement, Placement};
pub use profile::{GraphLayout, Profile, ProfileError};
pub use sim::{Machine, SimReport, Trap, TrapKind};
