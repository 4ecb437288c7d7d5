//! Runs generated elementwise kernels over broadcast shapes.
//!
//! The output is walked as an outer loop over all but the innermost collapsed axis and one kernel call per
//! contiguous run; adjacent axes that broadcast alike are merged first, so equal shapes are one call over the whole
//! tensor and a per-channel bias is one call per row.

use crate::ExecError;
use crate::jit::{BinaryFn, Operand};
use crate::linalg::{broadcast, broadcast_strides};

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
    let mut idx = vec![0usize; dims.len()];
    let outer: usize = dims.iter().map(|d| d.0).product();
    for row in 0..outer {
        let ao: usize = idx.iter().zip(&dims).map(|(i, d)| i * d.1).sum();
        let bo: usize = idx.iter().zip(&dims).map(|(i, d)| i * d.2).sum();
        let dst = &mut out[row * inner..(row + 1) * inner];
        // SAFETY: the offsets and run length stay inside `a`, `b` and `out` (strides come from their shapes,
        // which were checked against the buffer lengths), and the kernel reads at most `n` elements of each vector
        // operand and one of each scalar operand.
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
                    inner,
                );
            }
        }
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d].0 {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}
