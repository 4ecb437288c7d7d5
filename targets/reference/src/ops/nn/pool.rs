//! Pooling: AveragePool, MaxPool (with indices), LpPool and their global forms.
//!
//! Windows follow onnxruntime (and the ONNX reference): a window's taps are `out * stride - pad_begin +
//! k * dilation`; taps inside the input are pooled; with `count_include_pad` an average divides by the taps that
//! fall inside the input or its explicit padding (taps past the end padding, which `ceil_mode` can create, never
//! count). Values compute in f64 and round once to the input dtype.

use jiuzhou_ir::infer::nn::window::Window;
use jiuzhou_ir::{DType, Tensor, Value};

use super::{from_f64s, geometry, to_f64s};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The taps of every window along one axis.
struct AxisTaps {
    /// For each output position, the input positions it reads.
    inside: Vec<Vec<usize>>,
    /// For each output position, how many taps lie inside the input or its explicit padding.
    counted: Vec<usize>,
}

/// How a window reduces its values.
#[derive(Clone, Copy, PartialEq)]
enum Reduce {
    Max,
    Average { count_include_pad: bool },
    Lp(i64),
}

/// The window geometry of a pool over `x` (`[N, C, spatial..]`), spatial axes padded to three.
struct PoolPlan {
    axes: [AxisTaps; 3],
    input: [usize; 3],
    out_shape: Vec<usize>,
}

fn plan(x: &[usize], win: &Window) -> Result<PoolPlan, EvalError> {
    let n = win.rank();
    if n == 0 || n > 3 || x.len() != n + 2 {
        eval_bail!("pooling input {x:?} with a {n}-D kernel: expected 1 to 3 spatial axes");
    }
    let mut axes: Vec<AxisTaps> = Vec::with_capacity(3);
    for _ in n..3 {
        axes.push(AxisTaps {
            inside: vec![vec![0]],
            counted: vec![1],
        });
    }
    let mut out_shape = x[..2].to_vec();
    for i in 0..n {
        let size = x[i + 2];
        let g = win.axis(i, size).map_err(geometry)?;
        let (s, d) = (win.strides[i] as i64, win.dilations[i] as i64);
        let limit = (size + g.pad_end) as i64;
        let mut inside = Vec::with_capacity(g.output);
        let mut counted = Vec::with_capacity(g.output);
        for o in 0..g.output as i64 {
            let start = o * s - g.pad_begin as i64;
            let taps: Vec<i64> = (0..win.kernel[i] as i64)
                .map(|k| start + k * d)
                .filter(|&p| p < limit)
                .collect();
            counted.push(taps.len());
            inside.push(
                taps.into_iter()
                    .filter(|&p| p >= 0 && p < size as i64)
                    .map(|p| p as usize)
                    .collect(),
            );
        }
        out_shape.push(g.output);
        axes.push(AxisTaps { inside, counted });
    }
    let input = {
        let mut v = [1usize; 3];
        v[3 - n..].copy_from_slice(&x[2..]);
        v
    };
    let axes: [AxisTaps; 3] = axes
        .try_into()
        .map_err(|_| EvalError::new("internal error: pooling axes"))?;
    Ok(PoolPlan {
        axes,
        input,
        out_shape,
    })
}

/// Pools `x` by `plan`; returns values and (for max pooling) the flat index of each chosen element, numbered
/// row-major (`storage_order` 0) or column-major over the spatial axes (1).
fn pool(x: &[f64], plan: &PoolPlan, reduce: Reduce, storage_order: i64) -> (Vec<f64>, Vec<i64>) {
    let [d_ax, h_ax, w_ax] = &plan.axes;
    let [id, ih, iw] = plan.input;
    let plane = id * ih * iw;
    let planes = plan.out_shape[0] * plan.out_shape[1];
    let out_len = d_ax.inside.len() * h_ax.inside.len() * w_ax.inside.len();
    let mut values = Vec::with_capacity(planes * out_len);
    let mut indices = Vec::new();
    for p in 0..planes {
        let xs = &x[p * plane..(p + 1) * plane];
        for (td, cd) in d_ax.inside.iter().zip(&d_ax.counted) {
            for (th, ch) in h_ax.inside.iter().zip(&h_ax.counted) {
                for (tw, cw) in w_ax.inside.iter().zip(&w_ax.counted) {
                    let mut acc = match reduce {
                        Reduce::Max => f64::NEG_INFINITY,
                        _ => 0.0,
                    };
                    let mut best = None;
                    for &a in td {
                        for &b in th {
                            let base = (a * ih + b) * iw;
                            for &c in tw {
                                let v = xs[base + c];
                                match reduce {
                                    Reduce::Max => {
                                        if best.is_none() || v > acc {
                                            acc = v;
                                            best = Some((a, b, c));
                                        }
                                    }
                                    Reduce::Average { .. } => acc += v,
                                    Reduce::Lp(q) => acc += v.abs().powi(q as i32),
                                }
                            }
                        }
                    }
                    values.push(match reduce {
                        Reduce::Max => acc,
                        Reduce::Average { count_include_pad } => {
                            let n = if count_include_pad {
                                cd * ch * cw
                            } else {
                                td.len() * th.len() * tw.len()
                            };
                            acc / n as f64
                        }
                        Reduce::Lp(q) => acc.powf(1.0 / q as f64),
                    });
                    if reduce == Reduce::Max {
                        indices.push(match best {
                            None => -1,
                            Some((a, b, c)) => {
                                let within = if storage_order == 0 {
                                    (a * ih + b) * iw + c
                                } else {
                                    a + b * id + c * id * ih
                                };
                                (p * plane + within) as i64
                            }
                        });
                    }
                }
            }
        }
    }
    (values, indices)
}

/// Shared evaluation of the windowed pools.
#[allow(clippy::too_many_arguments)]
fn eval_pool(
    cx: &EvalCx<'_>,
    reduce: Reduce,
    auto_pad: &str,
    ceil_mode: i64,
    kernel: &[i64],
    strides: Option<&[i64]>,
    dilations: Option<&[i64]>,
    pads: Option<&[i64]>,
    storage_order: i64,
) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    let win = Window::new(
        kernel.len(),
        kernel,
        strides,
        dilations,
        pads,
        auto_pad,
        ceil_mode,
    )
    .map_err(geometry)?;
    let plan = plan(x.shape(), &win)?;
    jiuzhou_ir::tensor::checked_numel(&plan.out_shape, DType::F64)?;
    let (values, indices) = pool(&to_f64s(x)?, &plan, reduce, storage_order);
    let mut out = vec![from_f64s(x.dtype(), plan.out_shape.clone(), values)?.into()];
    if cx.num_outputs > 1 {
        out.push(Tensor::from_vec(plan.out_shape, indices)?.into());
    }
    Ok(out)
}

impl EvalOp for jiuzhou_ir::ops::MaxPool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_pool(
            cx,
            Reduce::Max,
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            self.storage_order,
        )
    }
}

impl EvalOp for jiuzhou_ir::ops::AveragePool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_pool(
            cx,
            Reduce::Average {
                count_include_pad: self.count_include_pad != 0,
            },
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            0,
        )
    }
}

impl EvalOp for jiuzhou_ir::ops::LpPool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_pool(
            cx,
            Reduce::Lp(self.p),
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            0,
        )
    }
}

/// Global pooling: every `[N, C]` plane reduces to one value; spatial dims become 1.
fn global_pool(cx: &EvalCx<'_>, reduce: Reduce) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    let shape = x.shape();
    if shape.len() < 2 {
        eval_bail!("global pooling needs rank at least 2, got {shape:?}");
    }
    let plane: usize = shape[2..].iter().product();
    let v = to_f64s(x)?;
    let values: Vec<f64> = v
        .chunks_exact(plane.max(1))
        .take(shape[0] * shape[1])
        .map(|p| match reduce {
            Reduce::Max => p.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Reduce::Average { .. } => p.iter().sum::<f64>() / plane as f64,
            Reduce::Lp(q) => p
                .iter()
                .map(|x| x.abs().powi(q as i32))
                .sum::<f64>()
                .powf(1.0 / q as f64),
        })
        .collect();
    let mut out_shape = shape[..2].to_vec();
    out_shape.extend(shape[2..].iter().map(|_| 1));
    let values = if plane == 0 {
        vec![f64::NAN; shape[0] * shape[1]]
    } else {
        values
    };
    Ok(vec![from_f64s(x.dtype(), out_shape, values)?.into()])
}

impl EvalOp for jiuzhou_ir::ops::GlobalAveragePool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        global_pool(
            cx,
            Reduce::Average {
                count_include_pad: false,
            },
        )
    }
}

impl EvalOp for jiuzhou_ir::ops::GlobalMaxPool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        global_pool(cx, Reduce::Max)
    }
}

impl EvalOp for jiuzhou_ir::ops::GlobalLpPool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        global_pool(cx, Reduce::Lp(self.p))
    }
}
