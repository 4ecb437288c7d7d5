//! Code generation: from IR nodes to vnpu [`Program`](crate::Program)s for one [`Profile`].
//!
//! Nothing here names a profile: tile shapes, buffer names and sizes, alignments and dtypes all come from the
//! [`Profile`] through a [`Ctx`]. The pieces:
//!
//! - [`layout`]: how a tensor lies in global memory (f32, row-major or channels-last for rank-4 tensors, the
//!   innermost axis padded so that every row starts at an aligned address — the simulator requires every DMA base
//!   address to be aligned, so a kernel can only start a transfer at a row start);
//! - [`gemm`]: the matrix-unit kernel shared by MatMul, Gemm and Conv (implicit GEMM: the im2col matrix is
//!   gathered by strided DMA straight from the channels-last input), tiled to fit the cube's buffers with
//!   double-buffered A/B/C slots, f32 bias preloaded into the accumulator, optional Relu on the vector unit;
//! - [`eltwise`]: unary and binary elementwise kernels on the vector unit, streamed through a double-buffered
//!   staging buffer;
//! - [`rows`]: softmax along rows and max pooling on the vector unit;
//! - [`transpose`]: the layout changes NCHW ⇄ NHWC of a channels-last profile, as DMA through the staging buffer;
//! - [`concat`]: a channels-last profile's channel Concat (along the last axis), the same way;
//! - [`lower`]: which IR node becomes which kernel (or why it cannot run on the NPU).
//!
//! # Synchronization
//!
//! Every kernel follows one discipline so that races cannot appear for any shape: each double-buffered slot has a
//! "ready" event (producer queue → consumer queue) set after every fill and waited before every use, and a "free"
//! event (consumer → producer) set after every use and waited before the fill that reuses the slot two uses later.
//! Slots are chosen by a counter that runs over the whole program (never reset per block or per batch), so the
//! n-th wait on an event always pairs with the n-th set of the same slot, whatever the edge tiles look like.

pub mod concat;
pub mod eltwise;
pub mod gemm;
pub mod layout;
pub mod lower;
pub mod rows;
pub mod transpose;

use crate::dtype::DType;
use crate::isa::{UnaryOp, VectorOp};
use crate::profile::Profile;

/// A 2-D sliding window (convolution or pooling) resolved against its input: what the kernels that gather windows
/// (implicit-GEMM convolution, max pooling) share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Window height and width.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Leading pads.
    pub pads: [u64; 2],
}

/// The profile-derived constants every kernel needs.
#[derive(Clone, Debug)]
pub struct Ctx<'p> {
    /// The machine.
    pub p: &'p Profile,
    /// The matrix unit's float input dtype (`None`: the cube takes no float inputs, so no GEMM).
    pub input: Option<DType>,
    /// Global-memory alignment in bytes (at least 1).
    pub gm_align: u64,
    /// The buffer the vector unit stages data in: reachable by DMA and the vector unit, not a cube buffer
    /// (`None`: no elementwise kernels).
    pub stage: Option<String>,
}

/// Least common multiple.
pub(crate) fn lcm(a: u64, b: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    if a == 0 || b == 0 {
        a.max(b)
    } else {
        a / gcd(a, b) * b
    }
}

/// `x` rounded up to a multiple of `m` (`m` ≥ 1).
pub(crate) fn round_up(x: u64, m: u64) -> u64 {
    x.div_ceil(m.max(1)) * m.max(1)
}

impl<'p> Ctx<'p> {
    /// The context of a profile.
    pub fn new(p: &'p Profile) -> Ctx<'p> {
        let input = p
            .matrix
            .input_dtypes
            .iter()
            .copied()
            .find(|d| matches!(d, DType::F16 | DType::BF16))
            .filter(|_| p.matrix.accumulator_dtypes.contains(&DType::F32));
        let cube = [&p.matrix.a_buffer, &p.matrix.b_buffer, &p.matrix.c_buffer];
        let reachable =
            |b: &&String| p.dma.buffers.contains(b) && p.vector.dtypes.contains(&DType::F32);
        let stage = p
            .vector
            .buffers
            .iter()
            .filter(reachable)
            .find(|b| !cube.contains(b))
            .or_else(|| p.vector.buffers.iter().find(reachable))
            .cloned();
        Ctx {
            p,
            input,
            gm_align: p.global.alignment.max(1),
            stage,
        }
    }

    /// Elements of `dtype` per global-memory alignment unit (at least 1).
    pub fn gm_gran(&self, dtype: DType) -> u64 {
        (self.gm_align / dtype.size()).max(1)
    }

    /// The alignment of buffer `name` in bytes (1 if unknown).
    pub fn buf_align(&self, name: &str) -> u64 {
        self.p.buffer(name).map_or(1, |b| b.alignment.max(1))
    }

    /// The size of buffer `name` in bytes (0 if unknown).
    pub fn buf_size(&self, name: &str) -> u64 {
        self.p.buffer(name).map_or(0, |b| b.size_bytes)
    }

    /// The padding unit of f32 tensors in global memory: a row of a multiple of this many elements keeps every
    /// row start aligned.
    pub fn pitch_gran(&self) -> u64 {
        self.gm_gran(DType::F32)
    }

    /// Whether the vector unit implements `op` on f32.
    pub fn vector_has(&self, op: VectorOp) -> bool {
        self.p.vector.ops.contains(&op) && self.p.vector.dtypes.contains(&DType::F32)
    }

    /// How a tensor of `shape` lies in global memory on this profile ([`layout`]).
    pub fn layout(&self, shape: &[usize]) -> layout::Layout {
        layout::Layout::with(shape, self.pitch_gran(), !self.p.channels_last())
    }

    /// Whether Relu can run on the accumulator buffer (fused into a GEMM's epilogue).
    pub fn relu_on_acc(&self) -> bool {
        self.vector_has(VectorOp::Unary(UnaryOp::Relu))
            && self.p.vector.buffers.contains(&self.p.matrix.c_buffer)
    }
}
