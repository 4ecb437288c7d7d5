//! The matrix-unit kernel: `C[M×N] = act(A[M×K] · B[K×N] (+ bias) (+ Z))`, f32 in global memory, the profile's
//! f16/bf16 on the cube, f32 accumulation; the residual `Z` and the activation run on the vector unit, on the
//! accumulator, before the store.
//!
//! **Blocking.** The output is cut into `mb×nb` blocks and K into `kb`-deep steps, the largest sizes for which two
//! A slots fit the cube's A buffer, two B slots its B buffer and two C slots its C buffer; `mb`, `nb`, `kb` are
//! multiples of the tile and of the alignment units, so every DMA base address is aligned. Edge blocks use fewer
//! tiles (`mmad` tile counts shrink); K remainders are zero-padded: the A (and, for activations, B) slot is
//! filled from a zeroed global-memory page before the data lands on it (same DMA queue, so in order), packed
//! weights carry zero rows already.
//!
//! **A sources.** A dense pitched matrix (MatMul, Gemm), or a convolution's im2col matrix gathered directly from
//! the channels-last input: K is laid out as `(kh, kw, channel)` with channels padded to `cq`, and each K step
//! holds whole `(kh, kw)` groups (or a channel chunk of one). For every output-pixel run inside one output row,
//! one strided DMA copies the input pixels' channel vectors (aligned: pixel rows start aligned in NHWC); pixels
//! that fall into the padding are skipped and stay zero.
//!
//! **Synchronization** (one program-wide step counter `s`, block counter `b`; slots `s % 2`, `b % 2`):
//!
//! ```text
//! dma_in : [wait AB_FREE[s%2] if s≥2] [bias: wait C_FREE[b%2] if b≥2, load bias → C] loads → set AB_READY[s%2]
//!          [residual: wait Z_FREE[b%2] if b≥2, load Z block → staging slot b%2, set Z_READY[b%2]]
//! cube   : wait AB_READY[s%2] [no bias, first step: wait C_FREE[b%2] if b≥2] mmad → set AB_FREE[s%2]
//! vector : (epilogue) wait C_DONE_V[b%2] [wait Z_READY[b%2], C += Z, set Z_FREE[b%2]] activation on C,
//!          set V_DONE[b%2]
//! dma_out: wait C_DONE[b%2] (or V_DONE), store C → set C_FREE[b%2] (to dma_in with bias, else to cube)
//! ```
//!
//! **Epilogue.** The residual block is staged in the vector unit's staging buffer (two slots, then one scratch
//! region for activations that need a temporary), added to the accumulator, and the activation runs on the
//! accumulator with the vector unit's ops: Relu; Clip as `max`/`min` with immediates; Sigmoid; Tanh; LeakyRelu as
//! `max(x, α·x)`; SiLU as `x·sigmoid(x)`; HardSwish as `x·min(max(x/6 + 1/2, 0), 1)`. Everything computes in f32.

use super::{Ctx, Window2d, lcm, round_up};
use crate::builder::ProgramBuilder;
use crate::dtype::DType;
use crate::isa::{Access, BinaryOp, Engine, Operand, UnaryOp, VectorOp};

const AB_READY: u8 = 0;
const AB_FREE: u8 = 2;
const C_DONE: u8 = 4;
const C_FREE: u8 = 6;
const C_DONE_V: u8 = 8;
const V_DONE: u8 = 10;
const Z_READY: u8 = 12;
const Z_FREE: u8 = 14;

/// The activation a GEMM's epilogue applies on the accumulator (vector unit, f32).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Act {
    /// None.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(x, α·x)` (`0 ≤ α ≤ 1`).
    LeakyRelu(f32),
    /// `x·sigmoid(x)`.
    Silu,
    /// `x·min(max(x/6 + 1/2, 0), 1)`.
    HardSwish,
}

impl Act {
    /// The epilogue form of an IR activation, or why the vector unit cannot compute it.
    pub fn from_ir(a: &jiuzhou_ir::ops::Activation) -> Result<Act, String> {
        use jiuzhou_ir::ops::Activation as A;
        Ok(match *a {
            A::None => Act::None,
            A::Relu => Act::Relu,
            A::Clip { min, max } => Act::Clip(min, max),
            A::Sigmoid => Act::Sigmoid,
            A::Tanh => Act::Tanh,
            A::LeakyRelu { alpha } if (0.0..=1.0).contains(&alpha) => Act::LeakyRelu(alpha),
            A::Silu => Act::Silu,
            A::HardSwish => Act::HardSwish,
            other => return Err(format!("no vnpu epilogue for activation {other}")),
        })
    }

    /// The vector ops it needs.
    pub fn vector_ops(self) -> Vec<VectorOp> {
        let (u, b) = (VectorOp::Unary, VectorOp::Binary);
        match self {
            Act::None => Vec::new(),
            Act::Relu => vec![u(UnaryOp::Relu)],
            Act::Clip(..) => vec![b(BinaryOp::Max), b(BinaryOp::Min)],
            Act::Sigmoid => vec![u(UnaryOp::Sigmoid)],
            Act::Tanh => vec![u(UnaryOp::Tanh)],
            Act::LeakyRelu(_) => vec![b(BinaryOp::Mul), b(BinaryOp::Max)],
            Act::Silu => vec![u(UnaryOp::Sigmoid), b(BinaryOp::Mul)],
            Act::HardSwish => vec![
                b(BinaryOp::Mul),
                b(BinaryOp::Add),
                b(BinaryOp::Max),
                b(BinaryOp::Min),
            ],
        }
    }

    /// Whether it needs a scratch region.
    fn needs_scratch(self) -> bool {
        matches!(self, Act::LeakyRelu(_) | Act::Silu | Act::HardSwish)
    }

    /// Emits the activation on `c` (`shape`), with `t` a scratch region of the same size.
    fn emit(self, c: &Access, t: &Access, shape: [u64; 2], b: &mut ProgramBuilder) {
        let bin = |b: &mut ProgramBuilder, op, dst: &Access, a: &Access, x: Operand| {
            b.binary(op, dst.clone(), a.clone(), x, shape);
        };
        match self {
            Act::None => {}
            Act::Relu => {
                b.unary(UnaryOp::Relu, c.clone(), c.clone(), shape);
            }
            Act::Clip(lo, hi) => {
                if lo > f32::NEG_INFINITY {
                    bin(b, BinaryOp::Max, c, c, Operand::Imm(f64::from(lo)));
                }
                if hi < f32::INFINITY {
                    bin(b, BinaryOp::Min, c, c, Operand::Imm(f64::from(hi)));
                }
            }
            Act::Sigmoid => {
                b.unary(UnaryOp::Sigmoid, c.clone(), c.clone(), shape);
            }
            Act::Tanh => {
                b.unary(UnaryOp::Tanh, c.clone(), c.clone(), shape);
            }
            Act::LeakyRelu(alpha) => {
                bin(b, BinaryOp::Mul, t, c, Operand::Imm(f64::from(alpha)));
                bin(b, BinaryOp::Max, c, c, Operand::Full(t.clone()));
            }
            Act::Silu => {
                b.unary(UnaryOp::Sigmoid, t.clone(), c.clone(), shape);
                bin(b, BinaryOp::Mul, c, c, Operand::Full(t.clone()));
            }
            Act::HardSwish => {
                bin(b, BinaryOp::Mul, t, c, Operand::Imm(1.0 / 6.0));
                bin(b, BinaryOp::Add, t, t, Operand::Imm(0.5));
                bin(b, BinaryOp::Max, t, t, Operand::Imm(0.0));
                bin(b, BinaryOp::Min, t, t, Operand::Imm(1.0));
                bin(b, BinaryOp::Mul, c, c, Operand::Full(t.clone()));
            }
        }
    }
}

/// Where A comes from.
#[derive(Clone, Debug)]
pub enum ASrc {
    /// A pitched f32 matrix: element `(i, k)` at `addr + (i·ld + k)·4`.
    Dense {
        /// Base address.
        addr: u64,
        /// Row pitch in elements.
        ld: u64,
    },
    /// The im2col matrix of a 2-D convolution over a channels-last input.
    Im2col(ConvGeom),
}

/// The geometry of a 2-D convolution as the kernel sees it (channels-last input in global memory).
#[derive(Clone, Debug)]
pub struct ConvGeom {
    /// Input base address.
    pub addr: u64,
    /// Batch.
    pub n: u64,
    /// Input height and width.
    pub h: u64,
    /// Input width.
    pub w: u64,
    /// Input channels.
    pub cin: u64,
    /// Input channel pitch in global memory.
    pub cpitch: u64,
    /// Channels per `(kh, kw)` group in the K layout (`cin` padded).
    pub cq: u64,
    /// The window.
    pub win: Window2d,
    /// Output height and width.
    pub out: [u64; 2],
}

impl ConvGeom {
    /// The K extent of the im2col matrix: `kh·kw·cq`.
    pub fn k_layout(&self) -> u64 {
        self.win.kernel[0] * self.win.kernel[1] * self.cq
    }
}

/// Where B comes from.
#[derive(Clone, Debug)]
pub enum BSrc {
    /// Weights packed at compile time in the cube's input dtype, K rows padded with zeros to a multiple of the
    /// tile and N to `ld`: element `(k, n)` at `addr + (k·ld + n)·size`.
    Packed {
        /// Base address.
        addr: u64,
        /// Row pitch in elements.
        ld: u64,
    },
    /// A pitched f32 matrix computed at run time.
    Dense {
        /// Base address.
        addr: u64,
        /// Row pitch in elements.
        ld: u64,
    },
}

/// One GEMM.
#[derive(Clone, Debug)]
pub struct GemmOp {
    /// Rows of C.
    pub m: u64,
    /// Columns of C.
    pub n: u64,
    /// Depth (for convolutions the K layout, `ConvGeom::k_layout`).
    pub k: u64,
    /// A.
    pub a: ASrc,
    /// B.
    pub b: BSrc,
    /// An f32 bias of at least `round_up(n, tile N)` elements (padded with anything), added to every row.
    pub bias: Option<u64>,
    /// C's base address (f32).
    pub out: u64,
    /// C's row pitch in elements.
    pub ldc: u64,
    /// The residual `Z`: a pitched f32 matrix of C's shape `(address, row pitch)`, added before the activation.
    pub residual: Option<(u64, u64)>,
    /// The activation on the accumulator before the store.
    pub act: Act,
}

/// Block sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Rows per block.
    pub mb: u64,
    /// Columns per block.
    pub nb: u64,
    /// Depth per step.
    pub kb: u64,
}

/// Checks that the vector unit can run an epilogue (residual add, `act`) on the accumulator with `blocks`.
pub fn epilogue_check(
    ctx: &Ctx,
    residual: bool,
    act: Act,
    blocks: Blocks,
) -> Result<(), GemmError> {
    let mx = &ctx.p.matrix;
    if !ctx.p.vector.buffers.contains(&mx.c_buffer) {
        return Err("the vector unit cannot reach the accumulator (no fused epilogue)".into());
    }
    let mut ops = act.vector_ops();
    if residual {
        ops.push(VectorOp::Binary(BinaryOp::Add));
    }
    if let Some(op) = ops.iter().find(|op| !ctx.vector_has(**op)) {
        return Err(format!("the vector unit lacks {} on f32", op.name()));
    }
    if residual || act.needs_scratch() {
        let stage = ctx
            .stage
            .as_deref()
            .ok_or("no staging buffer for the epilogue")?;
        if !ctx.p.dma.buffers.iter().any(|b| b == stage) {
            return Err("the staging buffer is not reachable by DMA".into());
        }
        let slot = round_up(blocks.mb * blocks.nb * 4, ctx.buf_align(stage));
        if 3 * slot > ctx.buf_size(stage) {
            return Err(format!(
                "the epilogue needs {} bytes of `{stage}`; it has {}",
                3 * slot,
                ctx.buf_size(stage)
            ));
        }
    }
    Ok(())
}

/// Counters that run over a whole program (several GEMMs in one program continue them).
#[derive(Clone, Debug, Default)]
pub struct GemmState {
    step: u64,
    block: u64,
    /// `Some(true)` once a GEMM with bias was emitted, `Some(false)` without: the C_FREE event goes to a different
    /// queue in each case, so one program must not mix them.
    bias_mode: Option<bool>,
}

/// Why a GEMM cannot be generated.
pub type GemmError = String;

/// The element granules: `(m, n, k)` multiples every block size must have.
fn granules(ctx: &Ctx, input: DType, conv: bool) -> (u64, u64, u64) {
    let [tm, tn, tk] = ctx.p.matrix.tile;
    let f32g = ctx.gm_gran(DType::F32);
    let ing = ctx.gm_gran(input);
    let ng = lcm(lcm(tn, f32g), ing);
    let mut kg = lcm(tk, f32g);
    if conv {
        kg = lcm(
            kg,
            (ctx.buf_align(&ctx.p.matrix.a_buffer) / input.size()).max(1),
        );
    }
    (tm, ng, kg)
}

/// The im2col channel group size for `cin` input channels.
pub fn conv_cq(ctx: &Ctx, cin: u64) -> Result<u64, GemmError> {
    let input = ctx
        .input
        .ok_or("the matrix unit takes no f16/bf16 inputs")?;
    let (_, _, kg) = granules(ctx, input, true);
    Ok(round_up(cin, kg))
}

/// The row pitch (in elements) of packed weights with `n` columns.
pub fn packed_ld(ctx: &Ctx, n: u64) -> Result<u64, GemmError> {
    let input = ctx
        .input
        .ok_or("the matrix unit takes no f16/bf16 inputs")?;
    let (_, ng, _) = granules(ctx, input, false);
    Ok(round_up(n, ng))
}

/// The rows packed weights of depth `k` need (zero rows beyond `k`).
pub fn packed_rows(ctx: &Ctx, k: u64) -> u64 {
    round_up(k, ctx.p.matrix.tile[2])
}

/// Chooses block sizes for an `m×n×k` GEMM: as large as fits two slots of every cube buffer.
pub fn choose_blocks(ctx: &Ctx, m: u64, n: u64, k: u64, conv: bool) -> Result<Blocks, GemmError> {
    let input = ctx
        .input
        .ok_or("the matrix unit takes no f16/bf16 inputs")?;
    let (mg, ng, kg) = granules(ctx, input, conv);
    let isz = input.size();
    let mx = &ctx.p.matrix;
    let (sa, sb, sc) = (
        ctx.buf_size(&mx.a_buffer),
        ctx.buf_size(&mx.b_buffer),
        ctx.buf_size(&mx.c_buffer),
    );
    const CAP: u64 = 256;
    let mut mb = round_up(m, mg).min(round_up(CAP, mg));
    let mut nb = round_up(n, ng).min(round_up(CAP, ng));
    let mut kb = round_up(k, kg).min(round_up(CAP, kg));
    // Halve the larger of two sizes (down to its granule), else the other; false when neither can shrink.
    fn shrink2(x: &mut u64, gx: u64, y: &mut u64, gy: u64) -> bool {
        fn shrink(v: &mut u64, g: u64) -> bool {
            if *v <= g {
                return false;
            }
            *v = round_up(*v / 2, g).max(g);
            true
        }
        let (first, g1, second, g2) = if *x >= *y {
            (x, gx, y, gy)
        } else {
            (y, gy, x, gx)
        };
        shrink(first, g1) || shrink(second, g2)
    }
    // Slot sizes are rounded to the buffers' alignment (slot 1 starts aligned).
    let slot = |bytes: u64, name: &str| 2 * round_up(bytes, ctx.buf_align(name));
    if mx.a_buffer == mx.b_buffer || mx.a_buffer == mx.c_buffer || mx.b_buffer == mx.c_buffer {
        return Err("the profile's cube shares a buffer between A, B and C".into());
    }
    loop {
        let a_over = slot(mb * kb * isz, &mx.a_buffer) > sa;
        let b_over = slot(kb * nb * isz, &mx.b_buffer) > sb;
        let c_over = slot(mb * nb * 4, &mx.c_buffer) > sc;
        let progressed = if a_over {
            shrink2(&mut kb, kg, &mut mb, mg)
        } else if b_over {
            shrink2(&mut kb, kg, &mut nb, ng)
        } else if c_over {
            shrink2(&mut mb, mg, &mut nb, ng)
        } else {
            break;
        };
        if !progressed {
            return Err(format!(
                "the cube buffers cannot hold two {mg}x{kg}, {kg}x{ng} and {mg}x{ng} tiles"
            ));
        }
    }
    Ok(Blocks { mb, nb, kb })
}

/// One piece of an im2col K step: the channels `[c0, c0+cvalid)` of kernel position `(kh, kw)`, at column `q` of
/// the step.
#[derive(Clone, Copy, Debug)]
struct Piece {
    kh: u64,
    kw: u64,
    c0: u64,
    cvalid: u64,
    span: u64,
    q: u64,
}

/// One K step: rows `[k0, k0+klen)` of B (`klen` valid), `span` columns of A in the slot (a multiple of the tile).
#[derive(Clone, Debug)]
struct KStep {
    k0: u64,
    klen: u64,
    span: u64,
    pieces: Vec<Piece>,
}

fn k_steps(op: &GemmOp, kb: u64, tk: u64) -> Vec<KStep> {
    match &op.a {
        ASrc::Dense { .. } => (0..op.k)
            .step_by(kb as usize)
            .map(|k0| {
                let klen = kb.min(op.k - k0);
                KStep {
                    k0,
                    klen,
                    span: round_up(klen, tk),
                    pieces: Vec::new(),
                }
            })
            .collect(),
        ASrc::Im2col(g) => {
            let groups = g.win.kernel[0] * g.win.kernel[1];
            let mut out = Vec::new();
            if g.cq <= kb {
                let per = kb / g.cq;
                let mut g0 = 0;
                while g0 < groups {
                    let cnt = per.min(groups - g0);
                    let pieces = (0..cnt)
                        .map(|i| Piece {
                            kh: (g0 + i) / g.win.kernel[1],
                            kw: (g0 + i) % g.win.kernel[1],
                            c0: 0,
                            cvalid: g.cin,
                            span: g.cq,
                            q: i * g.cq,
                        })
                        .collect();
                    out.push(KStep {
                        k0: g0 * g.cq,
                        klen: cnt * g.cq,
                        span: cnt * g.cq,
                        pieces,
                    });
                    g0 += cnt;
                }
            } else {
                for gi in 0..groups {
                    for c0 in (0..g.cq).step_by(kb as usize) {
                        let len = kb.min(g.cq - c0);
                        out.push(KStep {
                            k0: gi * g.cq + c0,
                            klen: len,
                            span: len,
                            pieces: vec![Piece {
                                kh: gi / g.win.kernel[1],
                                kw: gi % g.win.kernel[1],
                                c0,
                                cvalid: g.cin.saturating_sub(c0).min(len),
                                span: len,
                                q: 0,
                            }],
                        });
                    }
                }
            }
            out
        }
    }
}

/// One strided DMA of the im2col gather: `rows` pixels of `cols` channels.
struct Gather {
    src: u64,
    src_row: u64,
    dst_off: u64,
    rows: u64,
    cols: u64,
}

/// One run of output pixels inside one output row whose window position `(kh, kw)` falls inside the input: the
/// input pixel of the run's first element (`(b·h + ih)·w + iw`; consecutive elements are a horizontal stride
/// apart), the run's length, and its first pixel's index in the block.
pub(crate) struct Run {
    pub(crate) pixel: u64,
    pub(crate) len: u64,
    pub(crate) local: u64,
}

/// The runs of output pixels `[p0, p0+count)` (ordered batch, row, column over an `out[0]×out[1]` output) whose
/// window position `(kh, kw)` lies inside the `h×w` input; the bool says whether some pixel's position does not
/// (padding).
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_runs(
    h: u64,
    w: u64,
    out: [u64; 2],
    win: &Window2d,
    (kh, kw): (u64, u64),
    p0: u64,
    count: u64,
) -> (Vec<Run>, bool) {
    let mut runs = Vec::new();
    let mut holes = false;
    let (oh_n, ow_n) = (out[0], out[1]);
    let mut p = p0;
    while p < p0 + count {
        let (b, rest) = (p / (oh_n * ow_n), p % (oh_n * ow_n));
        let (oh, ow_a) = (rest / ow_n, rest % ow_n);
        let ow_b = ow_n.min(ow_a + (p0 + count - p));
        let seg_local = p - p0;
        p += ow_b - ow_a;
        let ih = (oh * win.strides[0] + kh * win.dilations[0]) as i64 - win.pads[0] as i64;
        if ih < 0 || ih >= h as i64 {
            holes = true;
            continue;
        }
        // iw(ow) = ow·sw + kw·dw − pw must lie in [0, w).
        let off = (kw * win.dilations[1]) as i64 - win.pads[1] as i64;
        let sw = win.strides[1] as i64;
        let lo_needed = if off >= 0 { 0 } else { (-off + sw - 1) / sw };
        let hi_excl = if (w as i64) - off <= 0 {
            0
        } else {
            ((w as i64) - off + sw - 1) / sw
        };
        let lo = (ow_a as i64).max(lo_needed);
        let hi = (ow_b as i64).min(hi_excl);
        if lo > ow_a as i64 || hi < ow_b as i64 {
            holes = true;
        }
        if lo >= hi {
            continue;
        }
        let iw = (lo * sw + off) as u64;
        runs.push(Run {
            pixel: (b * h + ih as u64) * w + iw,
            len: (hi - lo) as u64,
            local: seg_local + (lo as u64 - ow_a),
        });
    }
    (runs, holes)
}

/// The gathers of one A slot for pixel rows `[r0, r0+mvalid)` and step `ks`; the bool says whether any element of
/// the slot's valid rows stays uncovered (and must be zero).
fn im2col_gathers(g: &ConvGeom, ks: &KStep, r0: u64, mvalid: u64) -> (Vec<Gather>, bool) {
    let mut out = Vec::new();
    let mut holes = false;
    for pc in &ks.pieces {
        if pc.cvalid < pc.span {
            holes = true;
        }
        if pc.cvalid == 0 {
            continue;
        }
        let (runs, h) = window_runs(g.h, g.w, g.out, &g.win, (pc.kh, pc.kw), r0, mvalid);
        holes |= h;
        for r in runs {
            out.push(Gather {
                src: g.addr + (r.pixel * g.cpitch + pc.c0) * 4,
                src_row: g.win.strides[1] * g.cpitch,
                dst_off: r.local * ks.span + pc.q,
                rows: r.len,
                cols: pc.cvalid,
            });
        }
    }
    (out, holes)
}

/// Appends `op` to `b`, continuing `state`'s counters. `zero` is the address of a zeroed global-memory page of at
/// least the A and B buffers' size.
pub fn emit(
    ctx: &Ctx,
    op: &GemmOp,
    blocks: Blocks,
    zero: u64,
    state: &mut GemmState,
    b: &mut ProgramBuilder,
) -> Result<(), GemmError> {
    let input = ctx
        .input
        .ok_or("the matrix unit takes no f16/bf16 inputs")?;
    let mx = &ctx.p.matrix;
    let [tm, tn, tk] = mx.tile;
    let isz = input.size();
    let has_bias = op.bias.is_some();
    match state.bias_mode {
        Some(m) if m != has_bias => {
            return Err("one program mixes GEMMs with and without bias".into());
        }
        _ => state.bias_mode = Some(has_bias),
    }
    let epilogue = op.residual.is_some() || op.act != Act::None;
    if epilogue {
        epilogue_check(ctx, op.residual.is_some(), op.act, blocks)?;
    }
    let Blocks { mb, nb, kb } = blocks;
    let slot_a = round_up(mb * kb * isz, ctx.buf_align(&mx.a_buffer));
    let slot_b = round_up(kb * nb * isz, ctx.buf_align(&mx.b_buffer));
    let slot_c = round_up(mb * nb * 4, ctx.buf_align(&mx.c_buffer));
    // The staging buffer: two residual slots, then the scratch region (each the size of a C slot).
    let stage = ctx.stage.clone().unwrap_or_default();
    let slot_z = round_up(mb * nb * 4, ctx.buf_align(&stage));
    let scratch = Access::buf(&stage, 2 * slot_z, DType::F32);
    let steps = k_steps(op, kb, tk);
    let c_free_dst = if has_bias {
        Engine::DmaIn
    } else {
        Engine::Cube
    };
    let (a_buf, b_buf, c_buf) = (&mx.a_buffer, &mx.b_buffer, &mx.c_buffer);
    for r0 in (0..op.m).step_by(mb as usize) {
        let mvalid = mb.min(op.m - r0);
        let mt = mvalid.div_ceil(tm);
        for n0 in (0..op.n).step_by(nb as usize) {
            let nvalid = nb.min(op.n - n0);
            let nt = nvalid.div_ceil(tn);
            let cs = state.block % 2;
            let c_at = Access::buf(c_buf, cs * slot_c, DType::F32);
            for (ki, ks) in steps.iter().enumerate() {
                let s = state.step % 2;
                let kt = ks.span / tk;
                let a_at = Access::buf(a_buf, s * slot_a, input);
                let b_at = Access::buf(b_buf, s * slot_b, input);
                // dma_in: wait for the slot, (bias into C), A, B.
                if state.step >= 2 {
                    b.wait_flag(Engine::Cube, Engine::DmaIn, AB_FREE + s as u8);
                }
                if ki == 0
                    && let Some(bias) = op.bias
                {
                    if state.block >= 2 {
                        b.wait_flag(Engine::DmaOut, Engine::DmaIn, C_FREE + cs as u8);
                    }
                    b.load(
                        c_at.clone(),
                        Access::gm(bias + n0 * 4, DType::F32),
                        &[mt * tm, nt * tn],
                        &[nt * tn, 1],
                        &[0, 1],
                    );
                }
                if ki == 0
                    && let Some((z, ldz)) = op.residual
                {
                    if state.block >= 2 {
                        b.wait_flag(Engine::Vector, Engine::DmaIn, Z_FREE + cs as u8);
                    }
                    b.load(
                        Access::buf(&stage, cs * slot_z, DType::F32),
                        Access::gm(z + (r0 * ldz + n0) * 4, DType::F32),
                        &[mvalid, nvalid],
                        &[nt * tn, 1],
                        &[ldz, 1],
                    );
                    b.set_flag(Engine::DmaIn, Engine::Vector, Z_READY + cs as u8);
                }
                let a_elems = mt * tm * ks.span;
                match &op.a {
                    ASrc::Dense { addr, ld } => {
                        if ks.klen < ks.span {
                            b.load(
                                a_at.clone(),
                                Access::gm(zero, input),
                                &[a_elems],
                                &[1],
                                &[1],
                            );
                        }
                        b.load(
                            a_at.clone(),
                            Access::gm(addr + (r0 * ld + ks.k0) * 4, DType::F32),
                            &[mvalid, ks.klen],
                            &[ks.span, 1],
                            &[*ld, 1],
                        );
                    }
                    ASrc::Im2col(g) => {
                        let (gathers, holes) = im2col_gathers(g, ks, r0, mvalid);
                        if holes || ks.klen < ks.span {
                            b.load(
                                a_at.clone(),
                                Access::gm(zero, input),
                                &[a_elems],
                                &[1],
                                &[1],
                            );
                        }
                        for gt in gathers {
                            b.load(
                                Access::buf(a_buf, s * slot_a + gt.dst_off * isz, input),
                                Access::gm(gt.src, DType::F32),
                                &[gt.rows, gt.cols],
                                &[ks.span, 1],
                                &[gt.src_row, 1],
                            );
                        }
                    }
                }
                match &op.b {
                    BSrc::Packed { addr, ld } => {
                        b.load(
                            b_at.clone(),
                            Access::gm(addr + (ks.k0 * ld + n0) * isz, input),
                            &[ks.span, nt * tn],
                            &[nt * tn, 1],
                            &[*ld, 1],
                        );
                    }
                    BSrc::Dense { addr, ld } => {
                        if ks.klen < ks.span {
                            b.load(
                                b_at.clone(),
                                Access::gm(zero, input),
                                &[ks.span * nt * tn],
                                &[1],
                                &[1],
                            );
                        }
                        b.load(
                            b_at.clone(),
                            Access::gm(addr + (ks.k0 * ld + n0) * 4, DType::F32),
                            &[ks.klen, nvalid],
                            &[nt * tn, 1],
                            &[*ld, 1],
                        );
                    }
                }
                b.set_flag(Engine::DmaIn, Engine::Cube, AB_READY + s as u8);
                // cube: wait for the data (and, without bias, for C's previous store), multiply.
                b.wait_flag(Engine::DmaIn, Engine::Cube, AB_READY + s as u8);
                if ki == 0 && !has_bias && state.block >= 2 {
                    b.wait_flag(Engine::DmaOut, Engine::Cube, C_FREE + cs as u8);
                }
                b.mmad(c_at.clone(), a_at, b_at, [mt, nt, kt], ki > 0 || has_bias);
                b.set_flag(Engine::Cube, Engine::DmaIn, AB_FREE + s as u8);
                state.step += 1;
            }
            // Epilogue: (residual and activation on the vector unit), store, release the C slot.
            if epilogue {
                let shape = [mt * tm, nt * tn];
                b.sync(Engine::Cube, Engine::Vector, C_DONE_V + cs as u8);
                if op.residual.is_some() {
                    b.wait_flag(Engine::DmaIn, Engine::Vector, Z_READY + cs as u8);
                    b.binary(
                        BinaryOp::Add,
                        c_at.clone(),
                        c_at.clone(),
                        Operand::Full(Access::buf(&stage, cs * slot_z, DType::F32)),
                        shape,
                    );
                    b.set_flag(Engine::Vector, Engine::DmaIn, Z_FREE + cs as u8);
                }
                op.act.emit(&c_at, &scratch, shape, b);
                b.sync(Engine::Vector, Engine::DmaOut, V_DONE + cs as u8);
            } else {
                b.sync(Engine::Cube, Engine::DmaOut, C_DONE + cs as u8);
            }
            b.store(
                Access::gm(op.out + (r0 * op.ldc + n0) * 4, DType::F32),
                c_at,
                &[mvalid, nvalid],
                &[op.ldc, 1],
                &[nt * tn, 1],
            );
            b.set_flag(Engine::DmaOut, c_free_dst, C_FREE + cs as u8);
            state.block += 1;
        }
    }
    Ok(())
}
