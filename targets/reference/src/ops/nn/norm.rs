//! Normalizations (batch, instance, layer, group, RMS, mean-variance, Lp, LRN), softmax-like ops along one axis,
//! and Dropout. Everything computes in f64 and rounds once to the input dtype.

use jiuzhou_ir::{Tensor, Value};

use super::{expect_float, from_f64s, to_f64s};
use crate::kernels::{axis as norm_axis, broadcast_offsets, broadcast_shape};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// A per-channel parameter (`[C]`) as f64s, checked.
fn per_channel(t: &Tensor, channels: usize, what: &str) -> Result<Vec<f64>, EvalError> {
    let v = to_f64s(t)?;
    if v.len() != channels {
        eval_bail!("{what} has {} values, expected {channels}", v.len());
    }
    Ok(v)
}

/// `[N, C, rest]` split of a tensor with a channel axis: (N, C, product of the rest).
fn nc_rest(shape: &[usize]) -> Result<(usize, usize, usize), EvalError> {
    if shape.len() < 2 {
        eval_bail!("expected an input of rank at least 2, got {shape:?}");
    }
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}

/// Mean and population variance of `v`.
fn mean_var(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count().max(1) as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var)
}

impl EvalOp for jiuzhou_ir::ops::BatchNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "BatchNormalization input")?;
        let (n, c, rest) = nc_rest(x.shape())?;
        let scale = per_channel(cx.tensor(1)?, c, "scale")?;
        let bias = per_channel(cx.tensor(2)?, c, "B")?;
        let mut mean = per_channel(cx.tensor(3)?, c, "input_mean")?;
        let mut var = per_channel(cx.tensor(4)?, c, "input_var")?;
        let xv = to_f64s(x)?;
        let eps = self.epsilon as f64;
        let mut extra = Vec::new();
        if self.training_mode != 0 {
            // Normalize with the batch statistics; also return the updated running statistics.
            let momentum = self.momentum as f64;
            let (mut run_mean, mut run_var) = (Vec::with_capacity(c), Vec::with_capacity(c));
            for ch in 0..c {
                let vals = (0..n).flat_map(|b| {
                    xv[(b * c + ch) * rest..(b * c + ch + 1) * rest]
                        .iter()
                        .copied()
                });
                let (m, v) = mean_var(vals);
                run_mean.push(mean[ch] * momentum + m * (1.0 - momentum));
                run_var.push(var[ch] * momentum + v * (1.0 - momentum));
                mean[ch] = m;
                var[ch] = v;
            }
            let stat_dtype = cx.tensor(3)?.dtype();
            extra.push(from_f64s(stat_dtype, vec![c], run_mean)?.into());
            extra.push(from_f64s(stat_dtype, vec![c], run_var)?.into());
        }
        let mut y = xv;
        for (i, chunk) in y.chunks_exact_mut(rest.max(1)).enumerate() {
            let ch = i % c;
            let k = scale[ch] / (var[ch] + eps).sqrt();
            chunk
                .iter_mut()
                .for_each(|v| *v = (*v - mean[ch]) * k + bias[ch]);
        }
        let mut out = vec![from_f64s(x.dtype(), x.shape().to_vec(), y)?.into()];
        out.extend(extra);
        Ok(out)
    }
}

impl EvalOp for jiuzhou_ir::ops::InstanceNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "InstanceNormalization input")?;
        let (_, c, rest) = nc_rest(x.shape())?;
        let scale = per_channel(cx.tensor(1)?, c, "scale")?;
        let bias = per_channel(cx.tensor(2)?, c, "B")?;
        let mut y = to_f64s(x)?;
        for (i, chunk) in y.chunks_exact_mut(rest.max(1)).enumerate() {
            let ch = i % c;
            let (m, v) = mean_var(chunk.iter().copied());
            let k = scale[ch] / (v + self.epsilon as f64).sqrt();
            chunk.iter_mut().for_each(|x| *x = (*x - m) * k + bias[ch]);
        }
        Ok(vec![from_f64s(x.dtype(), x.shape().to_vec(), y)?.into()])
    }
}

impl EvalOp for jiuzhou_ir::ops::GroupNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "GroupNormalization input")?;
        let (_, c, rest) = nc_rest(x.shape())?;
        let groups = usize::try_from(self.num_groups).unwrap_or(0);
        if groups == 0 || c % groups != 0 {
            eval_bail!(
                "num_groups {} does not divide {c} channels",
                self.num_groups
            );
        }
        let scale = per_channel(cx.tensor(1)?, c, "scale")?;
        let bias = per_channel(cx.tensor(2)?, c, "bias")?;
        let per_group = c / groups * rest;
        let mut y = to_f64s(x)?;
        for (gi, chunk) in y.chunks_exact_mut(per_group.max(1)).enumerate() {
            let (m, v) = mean_var(chunk.iter().copied());
            let inv = 1.0 / (v + self.epsilon as f64).sqrt();
            for (j, x) in chunk.iter_mut().enumerate() {
                let ch = (gi % groups) * (c / groups) + j / rest.max(1);
                *x = (*x - m) * inv * scale[ch] + bias[ch];
            }
        }
        Ok(vec![from_f64s(x.dtype(), x.shape().to_vec(), y)?.into()])
    }
}

/// For LayerNormalization and RMSNormalization: the row count, row length, and the offsets of `t` (scale or bias)
/// broadcast over the normalized trailing axes.
fn trailing_param(
    x_shape: &[usize],
    axis: usize,
    t: &Tensor,
    what: &str,
) -> Result<(Vec<f64>, Vec<usize>), EvalError> {
    let tail = &x_shape[axis..];
    if broadcast_shape(&[t.shape(), tail]).ok().as_deref() != Some(tail) {
        eval_bail!(
            "{what} of shape {:?} does not broadcast to the normalized axes {tail:?}",
            t.shape()
        );
    }
    Ok((to_f64s(t)?, broadcast_offsets(t.shape(), tail)))
}

impl EvalOp for jiuzhou_ir::ops::LayerNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "LayerNormalization input")?;
        let shape = x.shape();
        let axis = norm_axis(self.axis, shape.len())?;
        let cols: usize = shape[axis..].iter().product();
        let (scale, so) = trailing_param(shape, axis, cx.tensor(1)?, "scale")?;
        let bias = match cx.opt_tensor(2)? {
            Some(b) => Some(trailing_param(shape, axis, b, "B")?),
            None => None,
        };
        let mut y = to_f64s(x)?;
        let (mut means, mut inv_stds) = (Vec::new(), Vec::new());
        for row in y.chunks_exact_mut(cols.max(1)) {
            let (m, v) = mean_var(row.iter().copied());
            let inv = 1.0 / (v + self.epsilon as f64).sqrt();
            for (j, x) in row.iter_mut().enumerate() {
                *x = (*x - m) * inv * scale[so[j]] + bias.as_ref().map_or(0.0, |(b, bo)| b[bo[j]]);
            }
            means.push(m);
            inv_stds.push(inv);
        }
        let stat_shape: Vec<usize> = shape[..axis]
            .iter()
            .copied()
            .chain(shape[axis..].iter().map(|_| 1))
            .collect();
        Ok(vec![
            from_f64s(x.dtype(), shape.to_vec(), y)?.into(),
            from_f64s(x.dtype(), stat_shape.clone(), means)?.into(),
            from_f64s(x.dtype(), stat_shape, inv_stds)?.into(),
        ])
    }
}

impl EvalOp for jiuzhou_ir::ops::RMSNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "RMSNormalization input")?;
        let shape = x.shape();
        let axis = norm_axis(self.axis, shape.len())?;
        let cols: usize = shape[axis..].iter().product();
        let (scale, so) = trailing_param(shape, axis, cx.tensor(1)?, "scale")?;
        let mut y = to_f64s(x)?;
        for row in y.chunks_exact_mut(cols.max(1)) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
            let inv = 1.0 / (ms + self.epsilon as f64).sqrt();
            for (j, x) in row.iter_mut().enumerate() {
                *x *= inv * scale[so[j]];
            }
        }
        Ok(vec![from_f64s(x.dtype(), shape.to_vec(), y)?.into()])
    }
}

/// For every element of a tensor of `shape`, the index of its group when the `axes` are reduced (row-major over
/// the kept axes), and the number of groups.
fn reduction_groups(shape: &[usize], axes: &[usize]) -> (Vec<usize>, usize) {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let groups = kept.iter().product();
    (broadcast_offsets(&kept, shape), groups)
}

impl EvalOp for jiuzhou_ir::ops::MeanVarianceNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "MeanVarianceNormalization input")?;
        let shape = x.shape();
        let axes: Vec<usize> = self
            .axes
            .iter()
            .map(|&a| norm_axis(a, shape.len()))
            .collect::<Result<_, _>>()?;
        let (group_of, groups) = reduction_groups(shape, &axes);
        let v = to_f64s(x)?;
        let (mut sum, mut sq, mut count) =
            (vec![0.0; groups], vec![0.0; groups], vec![0usize; groups]);
        for (&g, &x) in group_of.iter().zip(&v) {
            sum[g] += x;
            sq[g] += x * x;
            count[g] += 1;
        }
        // As the ONNX function body: (x - E[x]) / (sqrt(E[x²] - E[x]²) + 1e-9).
        let y: Vec<f64> = group_of
            .iter()
            .zip(&v)
            .map(|(&g, &x)| {
                let n = count[g].max(1) as f64;
                let mean = sum[g] / n;
                let std = (sq[g] / n - mean * mean).max(0.0).sqrt();
                (x - mean) / (std + 1e-9)
            })
            .collect();
        Ok(vec![from_f64s(x.dtype(), shape.to_vec(), y)?.into()])
    }
}

/// The `(outer, len, inner)` split of `shape` around `axis`: element `j` of lane `(o, i)` is at
/// `(o * len + j) * inner + i`.
fn lanes(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Applies `f` to every lane along `axis` (copied out and back, so `f` sees a contiguous slice).
fn map_lanes(v: &mut [f64], shape: &[usize], axis: usize, mut f: impl FnMut(&mut [f64])) {
    let (outer, len, inner) = lanes(shape, axis);
    let mut lane = vec![0.0; len];
    for o in 0..outer {
        for i in 0..inner {
            for (j, slot) in lane.iter_mut().enumerate() {
                *slot = v[(o * len + j) * inner + i];
            }
            f(&mut lane);
            for (j, &x) in lane.iter().enumerate() {
                v[(o * len + j) * inner + i] = x;
            }
        }
    }
}

/// Evaluates a float op that transforms each lane along `axis`.
fn along_axis(
    cx: &EvalCx<'_>,
    axis: i64,
    what: &str,
    f: impl FnMut(&mut [f64]),
) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    expect_float(x, what)?;
    let shape = x.shape();
    let axis = norm_axis(axis, shape.len().max(1))?;
    let mut v = to_f64s(x)?;
    if !shape.is_empty() {
        map_lanes(&mut v, shape, axis, f);
    }
    Ok(vec![from_f64s(x.dtype(), shape.to_vec(), v)?.into()])
}

fn softmax(lane: &mut [f64]) {
    let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lane.iter_mut().for_each(|x| *x = (*x - max).exp());
    let sum: f64 = lane.iter().sum();
    lane.iter_mut().for_each(|x| *x /= sum);
}

impl EvalOp for jiuzhou_ir::ops::Softmax {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        along_axis(cx, self.axis, "Softmax input", softmax)
    }
}

impl EvalOp for jiuzhou_ir::ops::LogSoftmax {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        along_axis(cx, self.axis, "LogSoftmax input", |lane| {
            let max = lane.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = lane.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lane.iter_mut().for_each(|x| *x = *x - max - log_sum);
        })
    }
}

impl EvalOp for jiuzhou_ir::ops::Hardmax {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        along_axis(cx, self.axis, "Hardmax input", |lane| {
            // The first maximum wins, as numpy's argmax.
            let mut best = 0;
            for (j, &x) in lane.iter().enumerate() {
                if x > lane[best] {
                    best = j;
                }
            }
            lane.iter_mut()
                .enumerate()
                .for_each(|(j, x)| *x = if j == best { 1.0 } else { 0.0 });
        })
    }
}

impl EvalOp for jiuzhou_ir::ops::LpNormalization {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let p = self.p;
        if p != 1 && p != 2 {
            eval_bail!("LpNormalization p must be 1 or 2, got {p}");
        }
        along_axis(cx, self.axis, "LpNormalization input", |lane| {
            let norm = if p == 1 {
                lane.iter().map(|x| x.abs()).sum::<f64>()
            } else {
                lane.iter().map(|x| x * x).sum::<f64>().sqrt()
            };
            lane.iter_mut()
                .for_each(|x| *x = if norm == 0.0 { 0.0 } else { *x / norm });
        })
    }
}

impl EvalOp for jiuzhou_ir::ops::LRN {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        expect_float(x, "LRN input")?;
        let (n, c, rest) = nc_rest(x.shape())?;
        if self.size < 1 {
            eval_bail!("LRN size {} must be positive", self.size);
        }
        let size = self.size as usize;
        // Channels [ch - floor((size-1)/2), ch + ceil((size-1)/2)] contribute to channel ch.
        let (before, after) = ((size - 1) / 2, (size - 1).div_ceil(2));
        let v = to_f64s(x)?;
        let mut y = vec![0.0; v.len()];
        let (alpha, beta, bias) = (self.alpha as f64, self.beta as f64, self.bias as f64);
        for b in 0..n {
            for ch in 0..c {
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                for i in 0..rest {
                    let sq: f64 = (lo..=hi).map(|k| v[(b * c + k) * rest + i].powi(2)).sum();
                    let at = (b * c + ch) * rest + i;
                    y[at] = v[at] / (bias + alpha / size as f64 * sq).powf(beta);
                }
            }
        }
        Ok(vec![from_f64s(x.dtype(), x.shape().to_vec(), y)?.into()])
    }
}

/// numpy's legacy Mersenne Twister (`np.random.seed(s)` then `np.random.uniform(0, 1, n)`), so that training-mode
/// Dropout reproduces the ONNX test data for a given seed.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Mt19937 {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1812433253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform double in `[0, 1)` with 53 random bits, as numpy's `random_sample`.
    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }
}

impl EvalOp for jiuzhou_ir::ops::Dropout {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let ratio = match cx.opt_tensor(1)? {
            Some(r) => match to_f64s(r)?.as_slice() {
                [r] => *r,
                v => eval_bail!("ratio must hold one value, got {}", v.len()),
            },
            None => 0.5,
        };
        let training = match cx.opt_tensor(2)? {
            Some(t) => t
                .to_i64_vec()
                .is_some_and(|v| v.first().is_some_and(|&b| b != 0)),
            None => false,
        };
        if !training || ratio == 0.0 {
            let mask = Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?;
            return Ok(vec![Value::Tensor(x.clone()), mask.into()]);
        }
        if !(0.0..1.0).contains(&ratio) {
            eval_bail!("ratio {ratio} must be in [0, 1)");
        }
        expect_float(x, "Dropout input")?;
        // Without a seed the mask is still reproducible: seed 0, as the ONNX test generator uses.
        let mut rng = Mt19937::new(self.seed.unwrap_or(0) as u32);
        let scale = 1.0 / (1.0 - ratio);
        let mask: Vec<bool> = (0..x.len()).map(|_| rng.next_f64() >= ratio).collect();
        let y: Vec<f64> = to_f64s(x)?
            .iter()
            .zip(&mask)
            .map(|(&v, &m)| if m { v * scale } else { 0.0 })
            .collect();
        Ok(vec![
            from_f64s(x.dtype(), x.shape().to_vec(), y)?.into(),
            Tensor::from_vec(x.shape().to_vec(), mask)?.into(),
        ])
    }
}
