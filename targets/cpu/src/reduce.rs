//! `Reduce*` over any set of (compile-time constant) axes.
//!
//! Semantics are the reference's for f32: each output reduces its elements in row-major order, accumulating in
//! f32; `ReduceMax`/`ReduceMin` propagate NaN and start from ∓∞; square roots and logarithms are taken in f64; an
//! empty set reduces to the identity (0, 1, −∞, +∞; Mean gives NaN). With no axes every axis is reduced, unless
//! `noop_with_empty_axes` is set. After merging adjacent axes, one reduced block between kept blocks
//! (`[outer, reduced, inner]`, the usual case) is walked directly; any other pattern walks offset tables.

use crate::ExecError;
use crate::native::{In, NativeKernel, check_buffers, norm_axes};

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Σx.
    Sum,
    /// Σx / n.
    Mean,
    /// Πx.
    Prod,
    /// max x.
    Max,
    /// min x.
    Min,
    /// Σ|x|.
    L1,
    /// √Σx².
    L2,
    /// Σx².
    SumSquare,
    /// ln Σx.
    LogSum,
    /// ln Σeˣ.
    LogSumExp,
}

/// A reduction node.
pub struct Reduce {
    /// Which reduction.
    pub kind: Kind,
    /// The axes as given (possibly negative).
    pub axes: Vec<i64>,
    /// Keep reduced axes as size 1.
    pub keepdims: bool,
    /// With no axes, reduce nothing.
    pub noop_with_empty_axes: bool,
}

impl Reduce {
    fn reduced(&self, rank: usize) -> Result<Vec<bool>, ExecError> {
        let mut r = vec![self.axes.is_empty() && !self.noop_with_empty_axes; rank];
        for a in norm_axes(&self.axes, rank)? {
            r[a] = true;
        }
        Ok(r)
    }
}

/// Reduces the values `it` yields (in order).
fn reduce_values(kind: Kind, it: impl Iterator<Item = f32> + Clone) -> f32 {
    let sum = |f: fn(f32) -> f32| it.clone().fold(0.0f32, |s, x| s + f(x));
    match kind {
        Kind::Sum => sum(|x| x),
        Kind::Mean => {
            let n = it.clone().count();
            sum(|x| x) / n as f32
        }
        Kind::Prod => it.fold(1.0f32, |p, x| p * x),
        Kind::Max => it.fold(
            f32::NEG_INFINITY,
            |m, x| if x.is_nan() || x > m { x } else { m },
        ),
        Kind::Min => it.fold(
            f32::INFINITY,
            |m, x| if x.is_nan() || x < m { x } else { m },
        ),
        Kind::L1 => sum(|x| if x < 0.0 { 0.0 - x } else { x }),
        Kind::SumSquare => sum(|x| x * x),
        Kind::L2 => (sum(|x| x * x) as f64).sqrt() as f32,
        Kind::LogSum => (sum(|x| x) as f64).ln() as f32,
        Kind::LogSumExp => {
            // Shift by the largest finite value so exp never overflows.
            let mx = it
                .clone()
                .filter(|x| x.is_finite())
                .fold(None, |m: Option<f32>, a| match m {
                    Some(m) if m >= a => Some(m),
                    _ => Some(a),
                })
                .unwrap_or(0.0);
            let s = it.fold(0.0f32, |s, x| s + ((x - mx) as f64).exp() as f32);
            ((s as f64).ln() as f32) + mx
        }
    }
}

impl NativeKernel for Reduce {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let shape = ins[0];
        let red = self.reduced(shape.len())?;
        Ok(shape
            .iter()
            .zip(&red)
            .filter_map(|(&d, &r)| match (r, self.keepdims) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(d),
            })
            .collect())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let (x, shape) = (ins[0].data, ins[0].shape);
        let out_shape = self.out_shape(&[shape])?;
        check_buffers(ins, out, &out_shape)?;
        if out.is_empty() {
            return Ok(());
        }
        let red = self.reduced(shape.len())?;
        // Merge adjacent axes of the same class (dropping size-1 axes, which change nothing).
        let mut blocks: Vec<(bool, usize)> = Vec::new();
        for (&d, &r) in shape.iter().zip(&red) {
            if d == 1 {
                continue;
            }
            match blocks.last_mut() {
                Some((lr, ld)) if *lr == r => *ld *= d,
                _ => blocks.push((r, d)),
            }
        }
        let nred = blocks.iter().filter(|b| b.0).count();
        if nred <= 1 {
            // [outer, reduced, inner].
            let at = blocks.iter().position(|b| b.0);
            let (outer, len, inner) = match at {
                None => (x.len(), 1, 1),
                Some(i) => (
                    blocks[..i].iter().map(|b| b.1).product(),
                    blocks[i].1,
                    blocks[i + 1..].iter().map(|b| b.1).product(),
                ),
            };
            // A zero-sized reduced block: every output is the empty reduction.
            if len == 0 || x.is_empty() {
                let v = reduce_values(self.kind, std::iter::empty());
                out.fill(v);
                return Ok(());
            }
            if inner == 1 {
                for (o, row) in out.iter_mut().zip(x.chunks_exact(len)) {
                    *o = reduce_values(self.kind, row.iter().copied());
                }
            } else if matches!(self.kind, Kind::Sum | Kind::Mean | Kind::SumSquare) {
                // Row accumulation: the same per-output order (ascending j), vectorizable over `inner`.
                for o in 0..outer {
                    let dst = &mut out[o * inner..(o + 1) * inner];
                    dst.fill(0.0);
                    for j in 0..len {
                        let src = &x[(o * len + j) * inner..][..inner];
                        if self.kind == Kind::SumSquare {
                            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s * s);
                        } else {
                            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                        }
                    }
                    if self.kind == Kind::Mean {
                        dst.iter_mut().for_each(|d| *d /= len as f32);
                    }
                }
            } else {
                for o in 0..outer {
                    for i in 0..inner {
                        let base = o * len * inner + i;
                        out[o * inner + i] =
                            reduce_values(self.kind, (0..len).map(|j| x[base + j * inner]));
                    }
                }
            }
            return Ok(());
        }
        // General: offsets of the kept and of the reduced elements.
        let mut strides = vec![0usize; blocks.len()];
        let mut acc = 1;
        for (s, b) in strides.iter_mut().zip(&blocks).rev() {
            *s = acc;
            acc *= b.1;
        }
        let offsets = |want: bool| -> Vec<usize> {
            let mut offs = vec![0usize];
            for (b, &s) in blocks.iter().zip(&strides) {
                if b.0 == want {
                    offs = offs
                        .iter()
                        .flat_map(|&o| (0..b.1).map(move |k| o + k * s))
                        .collect();
                }
            }
            offs
        };
        let (bases, rel) = (offsets(false), offsets(true));
        for (o, &b) in out.iter_mut().zip(&bases) {
            *o = reduce_values(self.kind, rel.iter().map(|&r| x[b + r]));
        }
        Ok(())
    }
}
