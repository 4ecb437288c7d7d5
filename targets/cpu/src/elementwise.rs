//! Runs generated elementwise kernels over broadcast shapes.
//!
//! The output is walked as an outer loop over all but the innermost collapsed axis and one kernel call per
//! contiguous run; adjacent axes that broadcast alike are merged first, so equal shapes are one call over the whole
//! tensor and a per-channel bias is one call per row. With threads, the output is split into chunks of whole rows
//! (or, for a single row, into chunks of that row); every element is computed by the same kernel either way.

use crate::ExecError;
use crate::jit::{BinaryFn, Operand};
use crate::linalg::{broadcast, broadcast_strides};
use crate::parallel::{MIN_CHUNK, Parallel};

/// The three kernels of one binary op, by operand pattern.
#[derive(Clone, Copy, Debug)]
pub struct BinaryKernels {
    /// Both operands vectors.
    pub vv: BinaryFn,
    /// A vector, b scalar.
    pub vs: BinaryFn,
    /// A scalar, b vector.
    pub sv: BinaryFn,
}

impl BinaryKernels {
    fn pick(&self, a: Operand, b: Operand) -> BinaryFn {
        match (a, b) {
            (Operand::Vector, Operand::Vector) | (Operand::Scalar, Operand::Scalar) => self.vv,
            (Operand::Vector, Operand::Scalar) => self.vs,
            (Operand::Scalar, Operand::Vector) => self.sv,
        }
    }
}

/// The output shape of a binary op.
pub fn binary_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ExecError> {
    broadcast(a, b)
}

/// `out = op(a, b)` with numpy broadcasting; `out` has the broadcast shape.
pub fn binary(
    k: &BinaryKernels,
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    out: &mut [f32],
    par: &Parallel,
) -> Result<(), ExecError> {
    let osh = broadcast(ash, bsh)?;
    let total: usize = osh.iter().product();
    if a.len() != ash.iter().product::<usize>()
        || b.len() != bsh.iter().product::<usize>()
        || out.len() != total
    {
        return Err(ExecError::new(
            "elementwise buffers do not match their shapes",
        ));
    }
    if total == 0 {
        return Ok(());
    }
    let r = osh.len();
    let (sa, sb) = (broadcast_strides(ash, r), broadcast_strides(bsh, r));
    // Merge adjacent axes (dims, a-strides, b-strides) that are contiguous for both operands.
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..r {
        if osh[i] == 1 {
            continue;
        }
        let cur = (osh[i], sa[i], sb[i]);
        if let Some(last) = dims.last_mut()
            && last.1 == cur.1 * cur.0
            && last.2 == cur.2 * cur.0
        {
            *last = (last.0 * cur.0, cur.1, cur.2);
            continue;
        }
        dims.push(cur);
    }
    let (inner, ia, ib) = dims.pop().unwrap_or((1, 0, 0));
    let mode = |s: usize| {
        if s == 0 {
            Operand::Scalar
        } else {
            Operand::Vector
        }
    };
    let (ma, mb) = (mode(ia), mode(ib));
    let f = k.pick(ma, mb);
    let both_scalar = ma == Operand::Scalar && mb == Operand::Scalar;
    // The element offsets of `a` and `b` at the start of output row `row`.
    let offsets = |row: usize| {
        let (mut rest, mut ao, mut bo) = (row, 0usize, 0usize);
        for d in dims.iter().rev() {
            let i = rest % d.0;
            rest /= d.0;
            ao += i * d.1;
            bo += i * d.2;
        }
        (ao, bo)
    };
    // Runs the kernel over `dst`, the part of output row `row` that starts at element `col`.
    let run = |row: usize, col: usize, dst: &mut [f32]| {
        let (ao, bo) = offsets(row);
        let (ao, bo) = (ao + col * ia, bo + col * ib);
        // SAFETY: the offsets and run length stay inside `a`, `b` and `out` (strides come from their shapes,
        // which were checked against the buffer lengths), and the kernel reads at most `dst.len()` elements of each
        // vector operand and one of each scalar operand.
        unsafe {
            if both_scalar {
                f(a.as_ptr().add(ao), b.as_ptr().add(bo), dst.as_mut_ptr(), 1);
                let v = dst[0];
                dst.fill(v);
            } else {
                f(
                    a.as_ptr().add(ao),
                    b.as_ptr().add(bo),
                    dst.as_mut_ptr(),
                    dst.len(),
                );
            }
        }
    };
    if inner >= total {
        // One row: split it into chunks.
        par.for_each_chunk(out, 1, MIN_CHUNK, |start, dst| run(0, start, dst));
    } else {
        // Chunks of whole rows.
        par.for_each_chunk(out, inner, MIN_CHUNK, |start, rows| {
            for (r, dst) in rows.chunks_exact_mut(inner).enumerate() {
                run(start / inner + r, 0, dst);
            }
        });
    }
    Ok(())
}
