//! Layout changes of a channels-last profile: `Transpose(x, [0, 2, 3, 1])` (NCHW → NHWC) and its inverse
//! `[0, 3, 1, 2]`, as DMA through two slots of the staging buffer.
//!
//! Both tensors are stored row-major (pitched). A block of `hb` rows × `cb` channels × `wb` columns (one batch
//! element) is loaded with one 3-D DMA whose global side reads the source's contiguous rows (W runs of the NCHW
//! side, C runs of the NHWC side) and whose buffer side scatters them into the destination's order; one 3-D DMA
//! stores the block's contiguous rows. The global side of every transfer starts at an aligned row start: blocks
//! cut W and C only at multiples of the global-memory alignment unit. The cost is two DMAs per block (latency plus
//! bytes at the DMA rate), so whole rows (all channels of a pixel row) per block keep it close to the bandwidth
//! bound.
//!
//! Synchronization per block `i` (slot `i % 2`): `dma_in` waits FREE[slot] (i ≥ 2), loads, sets READY;
//! `dma_out` waits READY, stores, sets FREE.

use super::Ctx;
use crate::builder::ProgramBuilder;
use crate::dtype::DType;
use crate::isa::{Access, Engine};

const READY: u8 = 0;
const FREE: u8 = 2;

/// One layout change between an NCHW and an NHWC tensor.
#[derive(Clone, Debug)]
pub struct TransposeOp {
    /// The source's address.
    pub x: u64,
    /// The result's address.
    pub out: u64,
    /// `[n, c, h, w]` (the channels-first side's shape).
    pub nchw: [u64; 4],
    /// NCHW → NHWC (`true`) or NHWC → NCHW.
    pub to_last: bool,
    /// The NCHW side's row pitch (W padded), in elements.
    pub wpitch: u64,
    /// The NHWC side's row pitch (C padded), in elements.
    pub cpitch: u64,
}

/// The block `(hb, cb, wb)` for a slot of `cap` elements: whole pixel rows (all channels) when one fits, else cuts
/// of W, then of C, at multiples of `gran`.
fn block(cap: u64, [_, c, h, w]: [u64; 4], gran: u64) -> Result<(u64, u64, u64), String> {
    if w * c <= cap {
        return Ok(((cap / (w * c)).min(h), c, w));
    }
    if c * gran <= cap {
        return Ok((1, c, (cap / c) / gran * gran));
    }
    let wb = gran.min(w);
    let cb = (cap / wb) / gran * gran;
    if cb == 0 {
        return Err("a block of one alignment unit does not fit the staging buffer".into());
    }
    Ok((1, cb, wb))
}

/// Appends one layout change to `b`.
pub fn emit(ctx: &Ctx, op: &TransposeOp, b: &mut ProgramBuilder) -> Result<(), String> {
    let stage = ctx
        .stage
        .as_deref()
        .ok_or("no staging buffer for the layout change")?;
    let align = ctx.buf_align(stage);
    let slot = (ctx.buf_size(stage) / 2) / align * align;
    let [n, c, h, w] = op.nchw;
    let (hl, cl, wl) = block(slot / 4, op.nchw, ctx.pitch_gran())?;
    let (wp, cp) = (op.wpitch, op.cpitch);
    let mut i = 0u64;
    for bn in 0..n {
        for h0 in (0..h).step_by(hl as usize) {
            let hb = hl.min(h - h0);
            for c0 in (0..c).step_by(cl as usize) {
                let cb = cl.min(c - c0);
                for w0 in (0..w).step_by(wl as usize) {
                    let wb = wl.min(w - w0);
                    let s = i % 2;
                    let buf = Access::buf(stage, s * slot, DType::F32);
                    // Element offsets of the block's first element on each side.
                    let first = ((bn * c + c0) * h + h0) * wp + w0;
                    let last = ((bn * h + h0) * w + w0) * cp + c0;
                    if i >= 2 {
                        b.wait_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
                    }
                    if op.to_last {
                        // Buffer order [hb][wb][cb]: the source's W runs scatter to channel stride 1.
                        b.load(
                            buf.clone(),
                            Access::gm(op.x + first * 4, DType::F32),
                            &[hb, cb, wb],
                            &[wb * cb, 1, cb],
                            &[wp, h * wp, 1],
                        );
                    } else {
                        // Buffer order [hb][cb][wb]: the source's C runs scatter to column stride 1.
                        b.load(
                            buf.clone(),
                            Access::gm(op.x + last * 4, DType::F32),
                            &[hb, wb, cb],
                            &[cb * wb, 1, wb],
                            &[w * cp, cp, 1],
                        );
                    }
                    b.sync(Engine::DmaIn, Engine::DmaOut, READY + s as u8);
                    if op.to_last {
                        b.store(
                            Access::gm(op.out + last * 4, DType::F32),
                            buf,
                            &[hb, wb, cb],
                            &[w * cp, cp, 1],
                            &[wb * cb, cb, 1],
                        );
                    } else {
                        b.store(
                            Access::gm(op.out + first * 4, DType::F32),
                            buf,
                            &[hb, cb, wb],
                            &[wp, h * wp, 1],
                            &[cb * wb, wb, 1],
                        );
                    }
                    b.set_flag(Engine::DmaOut, Engine::DmaIn, FREE + s as u8);
                    i += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_take_whole_rows_when_they_fit_and_cut_at_alignment_units() {
        assert_eq!(block(1000, [1, 3, 50, 20], 8), Ok((16, 3, 20)));
        assert_eq!(block(1000, [1, 100, 5, 20], 8), Ok((1, 100, 8)));
        assert_eq!(block(100, [1, 100, 5, 20], 8), Ok((1, 8, 8)));
        assert!(block(10, [1, 100, 5, 20], 8).is_err());
    }
}
