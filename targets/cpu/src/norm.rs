//! Softmax/LogSoftmax along one axis, and the normalizations: LayerNormalization, RMSNormalization,
//! BatchNormalization (inference, statistics read at run time; constant statistics fold into the affine kernel of
//! [`crate::exec`]), InstanceNormalization and LRN.
//!
//! Each lane or row is computed in f64 and rounded once, as the reference does, so results agree with it to the
//! last bit or nearly; LRN with the usual `beta = 0.75` computes in f32 with two square roots instead of `powf`.

use crate::ExecError;
use crate::linalg::{broadcast, broadcast_strides};
use crate::native::{In, NativeKernel, check_buffers, norm_axis};
use crate::parallel::{MIN_CHUNK, Parallel};

/// Softmax (or LogSoftmax) along `axis`.
pub struct Softmax {
    /// The axis, possibly negative.
    pub axis: i64,
    /// LogSoftmax instead.
    pub log: bool,
}

impl NativeKernel for Softmax {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        norm_axis(self.axis, ins[0].len().max(1))?;
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let (x, shape) = (ins[0].data, ins[0].shape);
        check_buffers(ins, out, shape)?;
        let axis = norm_axis(self.axis, shape.len().max(1))?;
        if shape.is_empty() {
            // As the reference: a scalar passes through unchanged.
            out[0] = x[0];
            return Ok(());
        }
        let outer: usize = shape[..axis].iter().product();
        let len = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        if len == 0 || outer * inner == 0 {
            return Ok(());
        }
        if inner == 1 {
            // Contiguous lanes (the usual last-axis softmax): f32 with a vectorizable exp, sums in f64.
            // Lanes are independent: with threads, chunks of whole lanes.
            par.for_each_chunk(out, len, MIN_CHUNK, |start, chunk| {
                for (src, dst) in x[start..]
                    .chunks_exact(len)
                    .zip(chunk.chunks_exact_mut(len))
                {
                    softmax_lane(src, dst, self.log);
                }
            });
            return Ok(());
        }
        let mut lane = vec![0.0f64; len];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * len + j) * inner + i;
                for (j, l) in lane.iter_mut().enumerate() {
                    *l = x[at(j)] as f64;
                }
                // As the reference: `fold(-inf, f64::max)` skips NaNs.
                let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if self.log {
                    let log_sum = lane.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                    for (j, &v) in lane.iter().enumerate() {
                        out[at(j)] = (v - max - log_sum) as f32;
                    }
                } else {
                    lane.iter_mut().for_each(|v| *v = (*v - max).exp());
                    let sum: f64 = lane.iter().sum();
                    for (j, &v) in lane.iter().enumerate() {
                        out[at(j)] = (v / sum) as f32;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `e^x` in f32 to about 2 ulp (Cephes' `expf`: `x = n·ln2 + r`, a degree-6 polynomial in `r`, scaled by `2^n`),
/// branch-free so that loops over it vectorize. Below −87.3 it gives 0, above 88.7 +∞; NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.722_83;
    const LO: f32 = -87.336_55;
    let xc = x.clamp(LO, HI);
    // floor(v) without a libm call (base x86-64 has no rounding instruction, and a call stops vectorization):
    // round to nearest through the 1.5·2^23 magic constant (|v| < 130 here), minus one where that rounded up.
    let v = xc * std::f32::consts::LOG2_E + 0.5;
    let t = (v + 12_582_912.0) - 12_582_912.0;
    let n = if t > v { t - 1.0 } else { t };
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n as bits; n is in [-126, 128] here, 2^128 overflows to +inf below anyway.
    let scale = f32::from_bits((((n as i32) + 127).clamp(0, 255) as u32) << 23);
    let y = p * scale;
    if x > HI {
        f32::INFINITY
    } else if x < LO {
        0.0
    } else {
        y
    }
}

/// Softmax or LogSoftmax of one contiguous lane.
fn softmax_lane(src: &[f32], dst: &mut [f32], log: bool) {
    // As the reference's `fold(-inf, max)`: NaNs are skipped by the maximum (and propagate through the sum).
    let max = src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if log {
        let mut sum = 0.0f64;
        for &v in src {
            sum += exp_f32(v - max) as f64;
        }
        let ls = sum.ln();
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = ((v as f64 - max as f64) - ls) as f32;
        }
    } else {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = exp_f32(v - max);
        }
        let sum: f64 = dst.iter().map(|&v| v as f64).sum();
        let inv = 1.0 / sum;
        for d in dst.iter_mut() {
            *d = (*d as f64 * inv) as f32;
        }
    }
}

/// Mean and population variance of a row, in f64 (two passes).
fn mean_var(row: &[f32]) -> (f64, f64) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    (mean, var)
}

/// Offsets into a parameter of shape `p` broadcast over the trailing axes `tail` (row-major over `tail`).
fn tail_offsets(p: &[usize], tail: &[usize]) -> Result<Vec<usize>, ExecError> {
    if p.len() > tail.len() || broadcast(p, tail)? != tail {
        return Err(ExecError::new(format!(
            "a parameter of shape {p:?} does not broadcast to the normalized axes {tail:?}"
        )));
    }
    let st = broadcast_strides(p, tail.len());
    let n: usize = tail.iter().product();
    let mut offs = Vec::with_capacity(n);
    let mut idx = vec![0usize; tail.len()];
    for _ in 0..n {
        offs.push(idx.iter().zip(&st).map(|(i, s)| i * s).sum());
        for d in (0..tail.len()).rev() {
            idx[d] += 1;
            if idx[d] < tail[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(offs)
}

/// LayerNormalization (`rms = false`: inputs X, scale and optional B) or RMSNormalization (`rms = true`: X and
/// scale) over the axes from `axis` on; only the first output.
pub struct RowNorm {
    /// The first normalized axis, possibly negative.
    pub axis: i64,
    /// Added to the variance (or mean square).
    pub epsilon: f32,
    /// RMSNormalization instead of LayerNormalization.
    pub rms: bool,
}

impl NativeKernel for RowNorm {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let axis = norm_axis(self.axis, ins[0].len())?;
        for p in &ins[1..] {
            tail_offsets(p, &ins[0][axis..])?;
        }
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let (x, shape) = (ins[0].data, ins[0].shape);
        check_buffers(ins, out, shape)?;
        let axis = norm_axis(self.axis, shape.len())?;
        let tail = &shape[axis..];
        let cols: usize = tail.iter().product();
        let so = tail_offsets(ins[1].shape, tail)?;
        let scale = ins[1].data;
        let bias = match ins.get(2) {
            Some(b) => Some((b.data, tail_offsets(b.shape, tail)?)),
            None => None,
        };
        if cols == 0 {
            return Ok(());
        }
        let eps = self.epsilon as f64;
        // The parameters per column, in f64 (the same values the per-element lookups gave), so that the row
        // loops are plain zips the compiler vectorizes.
        let sc: Vec<f64> = so.iter().map(|&o| scale[o] as f64).collect();
        let bi: Vec<f64> = match &bias {
            Some((b, bo)) => bo.iter().map(|&o| b[o] as f64).collect(),
            None => vec![0.0; cols],
        };
        // Rows are independent: with threads, chunks of whole rows.
        par.for_each_chunk(out, cols, MIN_CHUNK, |start, chunk| {
            for (row, dst) in x[start..]
                .chunks_exact(cols)
                .zip(chunk.chunks_exact_mut(cols))
            {
                if self.rms {
                    let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cols as f64;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for ((d, &v), &c) in dst.iter_mut().zip(row).zip(&sc) {
                        *d = (v as f64 * (inv * c)) as f32;
                    }
                } else {
                    let (m, var) = mean_var(row);
                    let inv = 1.0 / (var + eps).sqrt();
                    for (((d, &v), &c), &b) in dst.iter_mut().zip(row).zip(&sc).zip(&bi) {
                        *d = ((v as f64 - m) * inv * c + b) as f32;
                    }
                }
            }
        });
        Ok(())
    }
}

/// `(N, C, rest)` of a tensor with a channel axis.
fn nc_rest(shape: &[usize]) -> Result<(usize, usize, usize), ExecError> {
    if shape.len() < 2 {
        return Err(ExecError::new(format!(
            "expected an input of rank at least 2, got {shape:?}"
        )));
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

fn per_channel(i: &In<'_>, c: usize, what: &str) -> Result<(), ExecError> {
    if i.data.len() != c {
        return Err(ExecError::new(format!(
            "{what} has {} values, expected {c}",
            i.data.len()
        )));
    }
    Ok(())
}

/// Inference BatchNormalization with run-time statistics: inputs X, scale, B, mean, var.
pub struct BatchNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

impl NativeKernel for BatchNorm {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        nc_rest(ins[0])?;
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        check_buffers(ins, out, ins[0].shape)?;
        let (_, c, rest) = nc_rest(ins[0].shape)?;
        for (i, what) in [(1, "scale"), (2, "B"), (3, "input_mean"), (4, "input_var")] {
            per_channel(&ins[i], c, what)?;
        }
        let (scale, bias, mean, var) = (ins[1].data, ins[2].data, ins[3].data, ins[4].data);
        if rest == 0 || c == 0 {
            return Ok(());
        }
        for (k, (src, dst)) in ins[0]
            .data
            .chunks_exact(rest)
            .zip(out.chunks_exact_mut(rest))
            .enumerate()
        {
            let ch = k % c;
            let m = mean[ch] as f64;
            let a = scale[ch] as f64 / (var[ch] as f64 + self.epsilon as f64).sqrt();
            let b = bias[ch] as f64;
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = ((v as f64 - m) * a + b) as f32;
            }
        }
        Ok(())
    }
}

/// InstanceNormalization: inputs X, scale, B; each `[n, c]` plane normalized by its own statistics.
pub struct InstanceNorm {
    /// Added to the variance.
    pub epsilon: f32,
}

impl NativeKernel for InstanceNorm {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        nc_rest(ins[0])?;
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        check_buffers(ins, out, ins[0].shape)?;
        let (_, c, rest) = nc_rest(ins[0].shape)?;
        per_channel(&ins[1], c, "scale")?;
        per_channel(&ins[2], c, "B")?;
        if rest == 0 || c == 0 {
            return Ok(());
        }
        for (k, (src, dst)) in ins[0]
            .data
            .chunks_exact(rest)
            .zip(out.chunks_exact_mut(rest))
            .enumerate()
        {
            let ch = k % c;
            let (m, v) = mean_var(src);
            let a = ins[1].data[ch] as f64 / (v + self.epsilon as f64).sqrt();
            let b = ins[2].data[ch] as f64;
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = ((x as f64 - m) * a + b) as f32;
            }
        }
        Ok(())
    }
}

/// Local response normalization across channels.
pub struct Lrn {
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
}

impl Lrn {
    /// Checks the attributes.
    pub fn new(l: &jiuzhou_ir::ops::LRN) -> Result<Lrn, ExecError> {
        if l.size < 1 || l.size > 1 << 20 {
            return Err(ExecError::new(format!(
                "LRN size {} must be positive",
                l.size
            )));
        }
        Ok(Lrn {
            size: l.size as usize,
            alpha: l.alpha,
            beta: l.beta,
            bias: l.bias,
        })
    }
}

impl NativeKernel for Lrn {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        nc_rest(ins[0])?;
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let x = ins[0].data;
        check_buffers(ins, out, ins[0].shape)?;
        let (n, c, rest) = nc_rest(ins[0].shape)?;
        // Channels [ch - floor((size-1)/2), ch + ceil((size-1)/2)] contribute to channel ch.
        let (before, after) = ((self.size - 1) / 2, (self.size - 1).div_ceil(2));
        let k = self.alpha as f64 / self.size as f64;
        let mut sq = vec![0.0f64; rest];
        for b in 0..n {
            for ch in 0..c {
                let (lo, hi) = (ch.saturating_sub(before), (ch + after).min(c - 1));
                sq.fill(0.0);
                for kc in lo..=hi {
                    let src = &x[(b * c + kc) * rest..][..rest];
                    sq.iter_mut()
                        .zip(src)
                        .for_each(|(s, &v)| *s += v as f64 * v as f64);
                }
                let at = (b * c + ch) * rest;
                let (src, dst) = (&x[at..at + rest], &mut out[at..at + rest]);
                if self.beta == 0.75 {
                    for ((d, &v), &s) in dst.iter_mut().zip(src).zip(&sq) {
                        let t = self.bias as f64 + k * s;
                        let r = t.sqrt();
                        *d = (v as f64 / (r * r.sqrt())) as f32;
                    }
                } else {
                    let beta = self.beta as f64;
                    for ((d, &v), &s) in dst.iter_mut().zip(src).zip(&sq) {
                        *d = (v as f64 / (self.bias as f64 + k * s).powf(beta)) as f32;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
