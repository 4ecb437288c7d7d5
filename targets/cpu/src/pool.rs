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
use crate::parallel::Parallel;

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
    /// The stride between the windows of consecutive outputs.
    stride: usize,
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
            stride: 1,
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
        stride: s as usize,
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
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let x = ins[0];
        let (axes, [_, ih, iw], out_shape) = self.plan(x.shape)?;
        check_buffers(ins, out, &out_shape)?;
        let plane = x.shape[2..].iter().product::<usize>().max(1);
        let out_plane = axes.iter().map(|a| a.len).product::<usize>();
        if out_plane == 0 {
            return Ok(());
        }
        // One (image, channel) plane per task; 1-D and 2-D windows take the row-wise path.
        let rows = axes[0].len == 1 && axes[0].count[0] == 1 && axes[0].first[0] == 0;
        let split = out.len() >= 4096;
        par.for_each_item(out, out_plane, split, |k, os| {
            let xs = &x.data[k * plane..][..plane];
            if rows {
                self.plane_rows(xs, os, &axes[1], &axes[2], iw);
            } else {
                self.plane(xs, os, &axes, ih, iw);
            }
        });
        Ok(())
    }
}

/// Row buffers of [`Pool::plane_rows`]: column sums, column maxima, output sums, window maxima, the window rows'
/// first row at even columns.
type RowBufs = (Vec<f64>, Vec<f32>, Vec<f64>, Vec<f32>, Vec<f32>);

thread_local! {
    static ROW_BUFS: std::cell::Cell<RowBufs> = const {
        std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()))
    };
}

/// The run `[lo, hi)` of outputs along an axis whose windows are whole (the most taps) and evenly spaced by the
/// stride: the interior, away from clipped borders.
fn interior(t: &AxisTaps) -> (usize, usize) {
    let full = t.count.iter().copied().max().unwrap_or(0);
    let Some(lo) = (0..t.len).find(|&o| t.count[o] == full && full > 0) else {
        return (0, 0);
    };
    let mut hi = lo + 1;
    while hi < t.len && t.count[hi] == full && t.first[hi] == t.first[lo] + (hi - lo) * t.stride {
        hi += 1;
    }
    (lo, hi)
}

/// `f(dst[k], x[k·s])` for every `k` of `dst` (`x` long enough), with a plain loop for `s = 1` that the
/// compiler vectorizes.
#[inline(always)]
fn strided<T: Copy, U>(dst: &mut [U], x: &[T], s: usize, f: impl Fn(&mut U, T)) {
    if s == 1 {
        for (d, &v) in dst.iter_mut().zip(x) {
            f(d, v);
        }
    } else {
        for (d, c) in dst.iter_mut().zip(x.chunks(s)) {
            f(d, c[0]);
        }
    }
}

impl Pool {
    /// One plane of a 1-D or 2-D pool, an output row at a time. Border outputs are computed one by one, as
    /// [`Pool::plane`] does. Interior outputs separably: each input column is reduced over the window rows, then
    /// each output over its window columns. Maxima come out the same (except that of two equal zeros of different
    /// signs either may be kept); averages are summed in f64 in another order, which changes the f32 result only
    /// when the window's values span more than ~29 binary orders of magnitude.
    fn plane_rows(&self, xs: &[f32], os: &mut [f32], ah: &AxisTaps, aw: &AxisTaps, iw: usize) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { self.plane_rows_avx2(xs, os, ah, aw, iw) };
        }
        self.plane_rows_impl(xs, os, ah, aw, iw)
    }

    /// [`Pool::plane_rows`] with 256-bit vectors: the same operations in the same order (no fused multiply-adds),
    /// so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn plane_rows_avx2(&self, xs: &[f32], os: &mut [f32], ah: &AxisTaps, aw: &AxisTaps, iw: usize) {
        self.plane_rows_impl(xs, os, ah, aw, iw)
    }

    #[inline(always)]
    fn plane_rows_impl(&self, xs: &[f32], os: &mut [f32], ah: &AxisTaps, aw: &AxisTaps, iw: usize) {
        let ow = aw.len;
        let (lo, hi) = interior(aw);
        let full = if hi > lo { aw.count[lo] } else { 0 };
        // This thread's row buffers, reused from plane to plane (every use below overwrites what it reads; an
        // allocation per plane measured most of a 7×7 AveragePool over 2048 planes).
        let mut bufs = ROW_BUFS.take();
        let (sums, colmax, accs, hmax, first_even) = &mut bufs;
        sums.resize(if self.max { 0 } else { iw }, 0.0);
        colmax.resize(if self.max { iw } else { 0 }, 0.0);
        accs.resize(if self.max { 0 } else { ow }, 0.0);
        hmax.resize(if self.max { iw } else { 0 }, 0.0);
        first_even.resize(if self.max { iw.div_ceil(2) } else { 0 }, 0.0);
        for zh in 0..ah.len {
            let (fh, nh, sh) = (ah.first[zh], ah.count[zh], ah.step);
            let orow = &mut os[zh * ow..][..ow];
            let run = hi - lo;
            if run > 0 && self.max {
                let dst = &mut orow[lo..hi];
                if nh == 0 {
                    dst.fill(f32::NEG_INFINITY);
                } else {
                    // Separable: each input column's max over the window rows, then each output's max over its
                    // window columns. `f32::max` skips NaNs, so this is the max of the window's non-NaN values,
                    // which is what the row-major fold gives unless its first tap is NaN (then NaN wins).
                    let (x0, s, st) = (aw.first[lo], aw.stride, aw.step);
                    let span = aw.first[hi - 1] + (full - 1) * st + 1 - x0;
                    let cm = &mut colmax[..span];
                    cm.copy_from_slice(&xs[fh * iw + x0..][..span]);
                    for b in 1..nh {
                        let r = &xs[(fh + b * sh) * iw + x0..][..span];
                        for (m, &v) in cm.iter_mut().zip(r) {
                            *m = m.max(v);
                        }
                    }
                    // A window column at a time over all outputs of the row (loops the compiler vectorizes).
                    // Then the window max at every column (a stride-1 loop the compiler vectorizes, also for
                    // strided pools), with the first tap winning when it is NaN; the outputs pick every s-th.
                    let first = &xs[fh * iw + x0..][..span];
                    if s == 2 && st == 1 {
                        // Stride 2: output `k`'s window columns are `2k + c`, that is even column `k + c/2` or
                        // odd column `k + (c - 1)/2` — contiguous runs once the column maxima are split.
                        let (ne, no) = (span.div_ceil(2), span / 2);
                        let (ce, co) = hmax[..span].split_at_mut(ne);
                        crate::linalg::split_even_odd(cm, ce, &mut co[..no]);
                        let (acc, odd_first) = colmax[..span].split_at_mut(ne);
                        let fe = &mut first_even[..ne];
                        crate::linalg::split_even_odd(first, fe, &mut odd_first[..no]);
                        let acc = &mut acc[..run];
                        if full > 1 {
                            for ((d, &a), &b) in acc.iter_mut().zip(&ce[..run]).zip(&co[..run]) {
                                *d = a.max(b);
                            }
                        } else {
                            acc.copy_from_slice(&ce[..run]);
                        }
                        for c in 2..full {
                            let src = if c % 2 == 0 {
                                &ce[c / 2..]
                            } else {
                                &co[c / 2..]
                            };
                            for (d, &v) in acc.iter_mut().zip(&src[..run]) {
                                *d = d.max(v);
                            }
                        }
                        // Every output written once, as a select (a conditional store here becomes a masked
                        // store, slow on AMD cores: 80 % of a 3×3 stride-2 MaxPool).
                        for ((d, &t0), &v) in dst.iter_mut().zip(&fe[..run]).zip(&*acc) {
                            *d = if t0.is_nan() { t0 } else { v };
                        }
                    } else {
                        let m = (run - 1) * s + 1;
                        let hm = &mut hmax[..m];
                        hm.copy_from_slice(&cm[..m]);
                        for c in 1..full {
                            for (d, &v) in hm.iter_mut().zip(&cm[c * st..][..m]) {
                                *d = d.max(v);
                            }
                        }
                        // Every output written once, as a select (see above).
                        for (k, d) in dst.iter_mut().enumerate() {
                            let (t0, v) = (first[k * s], hm[k * s]);
                            *d = if t0.is_nan() { t0 } else { v };
                        }
                    }
                }
            } else if run > 0 {
                // Separable, in f64: each input column's sum over the window rows, then each output's sum of
                // its window columns' sums.
                let dst = &mut orow[lo..hi];
                let (x0, s, st) = (aw.first[lo], aw.stride, aw.step);
                let span = aw.first[hi - 1] + (full - 1) * st + 1 - x0;
                let cs = &mut sums[..span];
                cs.fill(0.0);
                for b in 0..nh {
                    let r = &xs[(fh + b * sh) * iw + x0..][..span];
                    for (a, &v) in cs.iter_mut().zip(r) {
                        *a += v as f64;
                    }
                }
                // A window column at a time over all outputs of the row, each sum in the same order as one at
                // a time (0 + first column + second + ...).
                let acc = &mut accs[..run];
                acc.fill(0.0);
                for c in 0..full {
                    strided(acc, &cs[c * st..], s, |a, v| *a += v);
                }
                if self.count_include_pad {
                    let counted = &aw.counted[lo..hi];
                    for ((d, &a), &cw) in dst.iter_mut().zip(acc.iter()).zip(counted) {
                        *d = (a / (ah.counted[zh] * cw) as f64) as f32;
                    }
                } else {
                    let n = (nh * full) as f64;
                    for (d, &a) in dst.iter_mut().zip(acc.iter()) {
                        *d = (a / n) as f32;
                    }
                }
            }
            for zw in (0..lo).chain(hi..ow) {
                let (fw, nw, sw) = (aw.first[zw], aw.count[zw], aw.step);
                orow[zw] = if self.max {
                    let mut acc = f32::NEG_INFINITY;
                    let mut seen = false;
                    for b in 0..nh {
                        let base = (fh + b * sh) * iw + fw;
                        for c in 0..nw {
                            let v = xs[base + c * sw];
                            if !seen || v > acc {
                                acc = v;
                                seen = true;
                            }
                        }
                    }
                    acc
                } else {
                    let mut acc = 0.0f64;
                    for b in 0..nh {
                        let base = (fh + b * sh) * iw + fw;
                        for c in 0..nw {
                            acc += xs[base + c * sw] as f64;
                        }
                    }
                    let n = if self.count_include_pad {
                        ah.counted[zh] * aw.counted[zw]
                    } else {
                        nh * nw
                    };
                    (acc / n as f64) as f32
                };
            }
        }
        ROW_BUFS.set(bufs);
    }

    /// One plane of any pool, output by output.
    fn plane(&self, xs: &[f32], os: &mut [f32], axes: &[AxisTaps; 3], ih: usize, iw: usize) {
        let [ad, ah, aw] = axes;
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
