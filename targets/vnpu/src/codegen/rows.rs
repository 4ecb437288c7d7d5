//! Vector-unit kernels over rows and windows: softmax along the last axis, and max pooling of channels-last
//! tensors.
//!
//! **Softmax** streams chunks of whole rows through two slots of the staging buffer (same READY/DONE/FREE
//! discipline as the elementwise kernels): the rows are gathered without their pads, then `reduce_max`, `sub`
//! (per-row broadcast), `exp`, `reduce_sum`, `div` (per-row broadcast), all in f32.
//!
//! **Max pooling** works on chunks of output pixels: one staging region per window position is filled with −∞ on
//! the vector unit, the in-bounds input pixels of that position are gathered into it by strided DMA (positions in
//! the padding keep −∞), the regions are folded with `max`, and the first one is stored. Each chunk hands the
//! buffer from queue to queue with adjacent `set_flag`/`wait_flag` pairs (fill → gather → max → store → next
//! fill), so every access is ordered whatever the geometry.

use super::gemm::window_runs;
use super::{Ctx, Window2d, round_up};
use crate::builder::ProgramBuilder;
use crate::dtype::DType;
use crate::isa::{Access, BinaryOp, Engine, Operand, ReduceOp, UnaryOp};

const READY: u8 = 0;
const DONE: u8 = 2;
const FREE: u8 = 4;

/// Softmax along the last axis of a row-major tensor.
#[derive(Clone, Debug)]
pub struct SoftmaxOp {
    /// Input address.
    pub x: u64,
    /// Output address.
    pub out: u64,
    /// Rows.
    pub rows: u64,
    /// Elements per row.
    pub cols: u64,
    /// Row pitch in global memory.
    pub pitch: u64,
}

/// Appends a softmax kernel.
pub fn emit_softmax(ctx: &Ctx, op: &SoftmaxOp, b: &mut ProgramBuilder) -> Result<(), String> {
    let stage = ctx
        .stage
        .as_deref()
        .ok_or("no staging buffer for the vector unit")?;
    let align = ctx.buf_align(stage);
    let slot = ctx.buf_size(stage) / 2 / align * align;
    let need = |r: u64| round_up(r * op.cols * 4, align) + 2 * round_up(r * 4, align);
    if need(1) > slot {
        return Err(format!(
            "a row of {} elements does not fit the staging buffer",
            op.cols
        ));
    }
    let mut r = (slot / (op.cols * 4 + 8)).clamp(1, op.rows);
    while need(r) > slot {
        r -= 1;
    }
    for (ci, r0) in (0..op.rows).step_by(r as usize).enumerate() {
        let s = (ci % 2) as u64;
        let n = r.min(op.rows - r0);
        let base = s * slot;
        let x = Access::buf(stage, base, DType::F32);
        let mx_at = base + round_up(r * op.cols * 4, align);
        let mx = Access::buf(stage, mx_at, DType::F32);
        let sm = Access::buf(stage, mx_at + round_up(r * 4, align), DType::F32);
        let shape = [n, op.cols];
        if ci >= 2 {
            b.wait_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
        }
        b.load(
            x.clone(),
            Access::gm(op.x + r0 * op.pitch * 4, DType::F32),
            &shape,
            &[op.cols, 1],
            &[op.pitch, 1],
        )
        .sync(Engine::DmaIn, Engine::Vector, READY + s as u8)
        .reduce(ReduceOp::Max, mx.clone(), x.clone(), shape)
        .binary(BinaryOp::Sub, x.clone(), x.clone(), Operand::Row(mx), shape)
        .unary(UnaryOp::Exp, x.clone(), x.clone(), shape)
        .reduce(ReduceOp::Sum, sm.clone(), x.clone(), shape)
        .binary(BinaryOp::Div, x.clone(), x.clone(), Operand::Row(sm), shape)
        .sync(Engine::Vector, Engine::DmaOut, DONE + s as u8)
        .store(
            Access::gm(op.out + r0 * op.pitch * 4, DType::F32),
            x,
            &shape,
            &[op.pitch, 1],
            &[op.cols, 1],
        )
        .set_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
    }
    Ok(())
}

/// Max pooling of a channels-last tensor.
#[derive(Clone, Debug)]
pub struct MaxPoolOp {
    /// Input address.
    pub x: u64,
    /// Output address.
    pub out: u64,
    /// Batch.
    pub n: u64,
    /// Input height.
    pub h: u64,
    /// Input width.
    pub w: u64,
    /// Channels.
    pub c: u64,
    /// Channel pitch (input and output).
    pub cpitch: u64,
    /// Output height and width.
    pub out_hw: [u64; 2],
    /// The window.
    pub win: Window2d,
}

/// Appends a max-pooling kernel.
pub fn emit_maxpool(ctx: &Ctx, op: &MaxPoolOp, b: &mut ProgramBuilder) -> Result<(), String> {
    let stage = ctx
        .stage
        .as_deref()
        .ok_or("no staging buffer for the vector unit")?;
    let align = ctx.buf_align(stage);
    let positions = op.win.kernel[0] * op.win.kernel[1];
    let row = op.cpitch * 4;
    if !row.is_multiple_of(align) {
        return Err(format!(
            "a row of {} channels is not aligned in {stage}",
            op.cpitch
        ));
    }
    // Pixels per chunk: `positions` regions of `p` rows, each region aligned.
    let size = ctx.buf_size(stage);
    let mut p = (size / positions / row).max(1);
    while p > 0 && positions * round_up(p * row, align) > size {
        p -= 1;
    }
    if p == 0 {
        return Err(format!(
            "a {}x{} window of {} channels does not fit the staging buffer",
            op.win.kernel[0], op.win.kernel[1], op.cpitch
        ));
    }
    let total = op.n * op.out_hw[0] * op.out_hw[1];
    let p = p.min(total);
    let region = round_up(p * row, align);
    let at = |t: u64| Access::buf(stage, t * region, DType::F32);
    for p0 in (0..total).step_by(p as usize) {
        let np = p.min(total - p0);
        let shape = [np, op.cpitch];
        for t in 0..positions {
            b.fill(at(t), f64::NEG_INFINITY, shape);
        }
        b.sync(Engine::Vector, Engine::DmaIn, 0);
        for t in 0..positions {
            let (runs, _) = window_runs(
                op.h,
                op.w,
                op.out_hw,
                &op.win,
                (t / op.win.kernel[1], t % op.win.kernel[1]),
                p0,
                np,
            );
            for r in runs {
                b.load(
                    Access::buf(stage, t * region + r.local * row, DType::F32),
                    Access::gm(op.x + r.pixel * row, DType::F32),
                    &[r.len, op.c],
                    &[op.cpitch, 1],
                    &[op.win.strides[1] * op.cpitch, 1],
                );
            }
        }
        b.sync(Engine::DmaIn, Engine::Vector, 1);
        for t in 1..positions {
            b.binary(BinaryOp::Max, at(0), at(0), Operand::Full(at(t)), shape);
        }
        b.sync(Engine::Vector, Engine::DmaOut, 2)
            .store(
                Access::gm(op.out + p0 * row, DType::F32),
                at(0),
                &[np, op.c],
                &[op.cpitch, 1],
                &[op.cpitch, 1],
            )
            .sync(Engine::DmaOut, Engine::Vector, 3);
    }
    Ok(())
}
