//! Pooling: MaxPool and AveragePool (1 to 3 spatial axes, pads, dilations, `ceil_mode`, `count_include_pad`,
//! `auto_pad`) and GlobalAveragePool/GlobalMaxPool.
//!
//! Windows are those of the reference (and onnxruntime): the taps of output `o` along an axis are
//! `o·stride - pad_begin + k·dilation`; taps inside the input are pooled; with `count_include_pad` an average
//! divides by the taps inside the input or its explicit padding (taps past the end padding, which `ceil_mode` can
//! create, never count). MaxPool keeps the first element and replaces it only by a strictly larger one (so a NaN in
//! first place wins and later NaNs are skipped), and an empty window gives −∞; averages sum in f64. Per axis the
//! taps are computed once per call; the common unit-dilation 2-D case walks contiguous row ranges.

use jiuzhou_ir::infer::nn::window::Window;

use crate::ExecError;
use crate::native::{In, NativeKernel, check_buffers};

/// A windowed pool.
pub struct Pool {
    max: bool,
    count_include_pad: bool,
    win: Window,
}

fn geo(e: jiuzhou_ir::infer::InferError) -> ExecError {
    ExecError::new(e.to_string())
}

impl Pool {
    /// A MaxPool with one output (no indices).
    pub fn max(p: &jiuzhou_ir::ops::MaxPool) -> Result<Pool, ExecError> {
        let win = Window::new(
            p.kernel_shape.len(),
            &p.kernel_shape,
            p.strides.as_deref(),
            p.dilations.as_deref(),
            p.pads.as_deref(),
            &p.auto_pad,
            p.ceil_mode,
        )
        .map_err(geo)?;
        Ok(Pool {
            max: true,
            count_include_pad: false,
            win,
        })
    }

    /// An AveragePool.
    pub fn average(p: &jiuzhou_ir::ops::AveragePool) -> Result<Pool, ExecError> {
        let win = Window::new(
            p.kernel_shape.len(),
            &p.kernel_shape,
            p.strides.as_deref(),
            p.dilations.as_deref(),
            p.pads.as_deref(),
            &p.auto_pad,
            p.ceil_mode,
        )
        .map_err(geo)?;
        Ok(Pool {
            max: false,
            count_include_pad: p.count_include_pad != 0,
            win,
        })
    }
}

/// The taps of every output position along one axis.
struct AxisTaps {
    /// Output size.
    len: usize,
    /// For output `o`, its input taps are `first[o] + j·step` for `j < count[o]`.
    first: Vec<usize>,
    count: Vec<usize>,
    step: usize,
    /// For output `o`, how many taps lie inside the input or its explicit padding.
    counted: Vec<usize>,
}

impl AxisTaps {
    fn unit() -> AxisTaps {
        AxisTaps {
            len: 1,
            first: vec![0],
            count: vec![1],
            step: 1,
            counted: vec![1],
        }
    }
}

fn axis_taps(win: &Window, i: usize, size: usize) -> Result<AxisTaps, ExecError> {
    let g = win.axis(i, size).map_err(geo)?;
    let (s, d, k) = (
        win.strides[i] as i64,
        win.dilations[i] as i64,
        win.kernel[i] as i64,
    );
    let limit = (size + g.pad_end) as i64;
    let mut t = AxisTaps {
        len: g.output,
        first: Vec::with_capacity(g.output),
        count: Vec::with_capacity(g.output),
        step: d as usize,
        counted: Vec::with_capacity(g.output),
    };
    for o in 0..g.output as i64 {
        let start = o * s - g.pad_begin as i64;
        // Taps `start + j·d` for j in 0..k, kept while below `limit`; inside the input when in [0, size).
        let below_limit = (0..k).filter(|&j| start + j * d < limit).count();
        t.counted.push(below_limit);
        let inside: Vec<i64> = (0..k)
            .map(|j| start + j * d)
            .filter(|&p| p >= 0 && p < size as i64 && p < limit)
            .collect();
        t.first.push(inside.first().copied().unwrap_or(0) as usize);
        t.count.push(inside.len());
    }
    Ok(t)
}

/// The taps of the three (padded) spatial axes, the padded input dims and the output shape.
type PoolPlan = ([AxisTaps; 3], [usize; 3], Vec<usize>);

impl Pool {
    fn plan(&self, shape: &[usize]) -> Result<PoolPlan, ExecError> {
        let n = self.win.rank();
        if n == 0 || n > 3 || shape.len() != n + 2 {
            return Err(ExecError::new(format!(
                "pooling input {shape:?} with a {n}-D kernel: expected 1 to 3 spatial axes"
            )));
        }
        let mut axes = Vec::with_capacity(3);
        for _ in n..3 {
            axes.push(AxisTaps::unit());
        }
        let mut out_shape = shape[..2].to_vec();
        for i in 0..n {
            let t = axis_taps(&self.win, i, shape[i + 2])?;
            out_shape.push(t.len);
            axes.push(t);
        }
        let mut input = [1usize; 3];
        input[3 - n..].copy_from_slice(&shape[2..]);
        let axes: [AxisTaps; 3] = axes
            .try_into()
            .map_err(|_| ExecError::new("internal error: pooling axes"))?;
        Ok((axes, input, out_shape))
    }
}

impl NativeKernel for Pool {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let n = self.win.rank();
        let shape = ins[0];
        if n == 0 || n > 3 || shape.len() != n + 2 {
            return Err(ExecError::new(format!(
                "pooling input {shape:?} with a {n}-D kernel: expected 1 to 3 spatial axes"
            )));
        }
        let mut out = shape[..2].to_vec();
        for i in 0..n {
            out.push(self.win.axis(i, shape[i + 2]).map_err(geo)?.output);
        }
        Ok(out)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let x = ins[0];
        let ([ad, ah, aw], [_, ih, iw], out_shape) = self.plan(x.shape)?;
        check_buffers(ins, out, &out_shape)?;
        let plane = x.shape[2..].iter().product::<usize>();
        let out_plane = ad.len * ah.len * aw.len;
        if out_plane == 0 {
            return Ok(());
        }
        for (xs, os) in x
            .data
            .chunks_exact(plane.max(1))
            .zip(out.chunks_exact_mut(out_plane))
        {
            let mut o = 0;
            for zd in 0..ad.len {
                for zh in 0..ah.len {
                    for zw in 0..aw.len {
                        let (fd, nd, sd) = (ad.first[zd], ad.count[zd], ad.step);
                        let (fh, nh, sh) = (ah.first[zh], ah.count[zh], ah.step);
                        let (fw, nw, sw) = (aw.first[zw], aw.count[zw], aw.step);
                        os[o] = if self.max {
                            let mut acc = f32::NEG_INFINITY;
                            let mut seen = false;
                            for a in 0..nd {
                                for b in 0..nh {
                                    let base = ((fd + a * sd) * ih + fh + b * sh) * iw + fw;
                                    for c in 0..nw {
                                        let v = xs[base + c * sw];
                                        if !seen || v > acc {
                                            acc = v;
                                            seen = true;
                                        }
                                    }
                                }
                            }
                            acc
                        } else {
                            let mut acc = 0.0f64;
                            for a in 0..nd {
                                for b in 0..nh {
                                    let base = ((fd + a * sd) * ih + fh + b * sh) * iw + fw;
                                    for c in 0..nw {
                                        acc += xs[base + c * sw] as f64;
                                    }
                                }
                            }
                            let n = if self.count_include_pad {
                                ad.counted[zd] * ah.counted[zh] * aw.counted[zw]
                            } else {
                                nd * nh * nw
                            };
                            (acc / n as f64) as f32
                        };
                        o += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// GlobalAveragePool or GlobalMaxPool: each `[N, C]` plane reduces to one value.
pub struct GlobalPool {
    /// Max instead of average.
    pub max: bool,
}

impl NativeKernel for GlobalPool {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let s = ins[0];
        if s.len() < 2 {
            return Err(ExecError::new(format!(
                "global pooling needs rank at least 2, got {s:?}"
            )));
        }
        let mut out = s[..2].to_vec();
        out.extend(s[2..].iter().map(|_| 1));
        Ok(out)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let shape = self.out_shape(&[ins[0].shape])?;
        check_buffers(ins, out, &shape)?;
        let plane: usize = ins[0].shape[2..].iter().product();
        if plane == 0 {
            out.fill(f32::NAN);
            return Ok(());
        }
        for (o, p) in out.iter_mut().zip(ins[0].data.chunks_exact(plane)) {
            *o = if self.max {
                // As the reference's `fold(-inf, f64::max)`: NaNs are skipped unless all are NaN.
                p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
            } else {
                (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32
            };
        }
        Ok(())
    }
}
