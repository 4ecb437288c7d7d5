//! Concatenation along the last axis of row-major tensors (a channel Concat of a channels-last profile's NHWC
//! graph), as DMA through two slots of the staging buffer.
//!
//! Input `i` (`rows × widths[i]`, row pitch `pitches[i]`) lands at column `offsets[i]` of every output row (pitch
//! `out_pitch`). A block of rows (or, for an input wider than a slot, of columns cut at alignment units) is loaded
//! with one 2-D DMA reading the input's rows and stored with one 2-D DMA writing them into the output's rows. Every
//! global-memory base address is a row start plus a multiple of the alignment unit, so each offset must be a
//! multiple of it (the lowering checks; other concats run on the host).
//!
//! Synchronization per block `i` (slot `i % 2`, counted over all inputs): `dma_in` waits FREE[slot] (i ≥ 2),
//! loads, sets READY; `dma_out` waits READY, stores, sets FREE.

use super::Ctx;
use crate::builder::ProgramBuilder;
use crate::dtype::DType;
use crate::isa::{Access, Engine};

const READY: u8 = 0;
const FREE: u8 = 2;

/// One concatenation.
#[derive(Clone, Debug)]
pub struct ConcatOp {
    /// Each input's `(address, width, row pitch)`.
    pub inputs: Vec<(u64, u64, u64)>,
    /// Rows (the product of the leading dims).
    pub rows: u64,
    /// The result's address.
    pub out: u64,
    /// The result's row pitch.
    pub out_pitch: u64,
}

/// The column offset of each input in the output row.
pub fn offsets(widths: &[u64]) -> Vec<u64> {
    widths
        .iter()
        .scan(0, |at, w| {
            let o = *at;
            *at += w;
            Some(o)
        })
        .collect()
}

/// Appends one concatenation to `b`.
pub fn emit(ctx: &Ctx, op: &ConcatOp, b: &mut ProgramBuilder) -> Result<(), String> {
    let stage = ctx
        .stage
        .as_deref()
        .ok_or("no staging buffer for the concatenation")?;
    let align = ctx.buf_align(stage);
    let slot = (ctx.buf_size(stage) / 2) / align * align;
    let cap = slot / 4;
    let gran = ctx.pitch_gran();
    let widths: Vec<u64> = op.inputs.iter().map(|i| i.1).collect();
    let mut k = 0u64;
    for (&(addr, width, pitch), off) in op.inputs.iter().zip(offsets(&widths)) {
        if off % gran != 0 {
            return Err(format!(
                "concat offset {off} is not a multiple of the alignment unit {gran}"
            ));
        }
        let (rb, cb) = if width <= cap {
            (cap / width, width)
        } else {
            (1, cap / gran * gran)
        };
        if cb == 0 {
            return Err("one alignment unit does not fit the staging buffer".into());
        }
        for r0 in (0..op.rows).step_by(rb as usize) {
            let rl = rb.min(op.rows - r0);
            for c0 in (0..width).step_by(cb as usize) {
                let cl = cb.min(width - c0);
                let s = k % 2;
                let buf = Access::buf(stage, s * slot, DType::F32);
                if k >= 2 {
                    b.wait_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
                }
                b.load(
                    buf.clone(),
                    Access::gm(addr + (r0 * pitch + c0) * 4, DType::F32),
                    &[rl, cl],
                    &[cl, 1],
                    &[pitch, 1],
                );
                b.sync(Engine::DmaIn, Engine::DmaOut, READY + s as u8);
                b.store(
                    Access::gm(op.out + (r0 * op.out_pitch + off + c0) * 4, DType::F32),
                    buf,
                    &[rl, cl],
                    &[op.out_pitch, 1],
                    &[cl, 1],
                );
                b.set_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
                k += 1;
            }
        }
    }
    Ok(())
}
