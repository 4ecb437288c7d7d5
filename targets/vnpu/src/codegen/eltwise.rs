//! Elementwise kernels on the vector unit: `out = op(a)` or `out = op(a, b)` over the stored elements of
//! identically laid out f32 tensors, streamed through two slots of the staging buffer.
//!
//! The second operand is a tensor of the same layout, an immediate, or a *row vector*: one stored row repeated
//! for every stored row of `a` (a per-channel constant of a channels-last tensor, a bias along the last axis),
//! materialized in the staging buffer by a DMA whose row stride is 0.
//!
//! Synchronization per chunk `i` (slot `i % 2`): `dma_in` waits FREE[slot] (i ≥ 2), loads, sets READY; `vector`
//! waits READY, computes in place, sets DONE; `dma_out` waits DONE, stores, sets FREE.

use super::{Ctx, round_up};
use crate::builder::ProgramBuilder;
use crate::dtype::DType;
use crate::isa::{Access, BinaryOp, Engine, Operand, UnaryOp};

const READY: u8 = 0;
const DONE: u8 = 2;
const FREE: u8 = 4;

/// The operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EltKind {
    /// `op(a)`.
    Unary(UnaryOp),
    /// `op(a, b)`.
    Binary(BinaryOp),
}

/// The second operand.
#[derive(Clone, Debug, PartialEq)]
pub enum EltB {
    /// None (unary ops).
    None,
    /// A tensor of `a`'s layout at this address.
    Full(u64),
    /// An immediate.
    Imm(f64),
    /// A stored row of `row` elements at this address, repeated for every row.
    RowVec(u64),
}

/// One elementwise kernel.
#[derive(Clone, Debug)]
pub struct EltOp {
    /// The operation.
    pub kind: EltKind,
    /// `a`'s address.
    pub a: u64,
    /// The second operand.
    pub b: EltB,
    /// The result's address (may equal `a`).
    pub out: u64,
    /// Stored elements of `a` and of the result.
    pub len: u64,
    /// The stored row length (the layout's pitch).
    pub row: u64,
}

/// Appends one elementwise kernel to `b`.
pub fn emit(ctx: &Ctx, op: &EltOp, b: &mut ProgramBuilder) -> Result<(), String> {
    let stage = ctx
        .stage
        .as_deref()
        .ok_or("no staging buffer for the vector unit")?;
    let align = ctx.buf_align(stage);
    let two = !matches!(op.b, EltB::None | EltB::Imm(_));
    // Chunks are whole rows for a row vector (its DMA repeats per row), else alignment units.
    let unit = if matches!(op.b, EltB::RowVec(_)) {
        op.row
    } else {
        ctx.pitch_gran()
    };
    let per_slot = ctx.buf_size(stage) / 2 / if two { 2 } else { 1 };
    // Leave room for aligning the second operand's region.
    let cs = (per_slot.saturating_sub(align) / 4 / unit) * unit;
    if cs == 0 {
        return Err(format!(
            "a chunk of {unit} elements does not fit the staging buffer {stage}"
        ));
    }
    let cs = cs.min(round_up(op.len, unit));
    let half = round_up(cs * 4, align);
    let slot = if two { 2 * half } else { half };
    for (ci, e0) in (0..op.len).step_by(cs as usize).enumerate() {
        let s = (ci % 2) as u64;
        let n = cs.min(op.len - e0);
        let a_at = Access::buf(stage, s * slot, DType::F32);
        let b_at = Access::buf(stage, s * slot + half, DType::F32);
        if ci >= 2 {
            b.wait_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
        }
        b.load(
            a_at.clone(),
            Access::gm(op.a + e0 * 4, DType::F32),
            &[n],
            &[1],
            &[1],
        );
        match op.b {
            EltB::Full(addr) => {
                b.load(
                    b_at.clone(),
                    Access::gm(addr + e0 * 4, DType::F32),
                    &[n],
                    &[1],
                    &[1],
                );
            }
            EltB::RowVec(addr) => {
                b.load(
                    b_at.clone(),
                    Access::gm(addr, DType::F32),
                    &[n / op.row, op.row],
                    &[op.row, 1],
                    &[0, 1],
                );
            }
            EltB::None | EltB::Imm(_) => {}
        }
        b.sync(Engine::DmaIn, Engine::Vector, READY + s as u8);
        match (op.kind, &op.b) {
            (EltKind::Unary(u), _) => {
                b.unary(u, a_at.clone(), a_at.clone(), [1, n]);
            }
            (EltKind::Binary(bo), EltB::Imm(x)) => {
                b.binary(bo, a_at.clone(), a_at.clone(), Operand::Imm(*x), [1, n]);
            }
            (EltKind::Binary(bo), EltB::Full(_) | EltB::RowVec(_)) => {
                b.binary(bo, a_at.clone(), a_at.clone(), Operand::Full(b_at), [1, n]);
            }
            (EltKind::Binary(_), EltB::None) => {
                return Err("a binary op needs a second operand".into());
            }
        }
        b.sync(Engine::Vector, Engine::DmaOut, DONE + s as u8);
        b.store(
            Access::gm(op.out + e0 * 4, DType::F32),
            a_at,
            &[n],
            &[1],
            &[1],
        );
        b.set_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
    }
    Ok(())
}
