//! `Resize` (opset 19): nearest, linear and cubic interpolation with every coordinate transformation mode,
//! antialiasing, `axes`, `keep_aspect_ratio_policy`, and scales or sizes.
//!
//! Interpolation is separable: the tensor is resized one axis at a time (onnx's reference does the same, in f64).
//! For each output coordinate the source coordinate `x_ori` is computed, a small kernel of coefficients around it
//! is evaluated, and the neighbours are read with edge clamping.

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::Resize;

use super::{reals, to_dtype};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The interpolation kernel of one resize.
#[derive(Clone, Copy)]
enum Kernel {
    /// Nearest neighbour with a rounding rule.
    Nearest(Rounding),
    /// Linear, optionally antialiased when downsampling.
    Linear { antialias: bool },
    /// Cubic with coefficient `a`, optionally antialiased when downsampling.
    Cubic { a: f64, antialias: bool },
}

/// How nearest mode rounds a fractional source coordinate.
#[derive(Clone, Copy)]
enum Rounding {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

impl Kernel {
    /// The coefficients for a source coordinate whose distance past the left neighbour is `ratio` (in `(0, 1]`).
    fn coeffs(self, ratio: f64, scale: f64) -> Vec<f64> {
        let b = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            Kernel::Nearest(mode) => {
                if ratio.fract() == 0.0 {
                    return vec![0.0, 1.0];
                }
                match mode {
                    Rounding::PreferFloor => vec![b(ratio <= 0.5), b(ratio > 0.5)],
                    Rounding::PreferCeil => vec![b(ratio < 0.5), b(ratio >= 0.5)],
                    Rounding::Floor => vec![1.0, 0.0],
                    Rounding::Ceil => vec![0.0, 1.0],
                }
            }
            Kernel::Linear { antialias: false } => vec![1.0 - ratio, ratio],
            Kernel::Linear { antialias: true } => {
                let scale = scale.min(1.0);
                let start = (-1.0 / scale).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|x| x / sum).collect()
            }
            Kernel::Cubic {
                a,
                antialias: false,
            } => {
                let r = ratio;
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                    ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a)
                        * ((1.0 - r) + 1.0)
                        - 4.0 * a,
                ]
            }
            Kernel::Cubic { a, antialias: true } => {
                let scale = scale.min(1.0);
                let f = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / scale).floor() as i64 + 1;
                let c: Vec<f64> = (start..2 - start)
                    .map(|i| f(scale * (i as f64 - ratio)))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|x| x / sum).collect()
            }
        }
    }
}

/// The per-axis parameters of one resize: the scale used for coordinates, the output size, and the ROI.
struct AxisPlan {
    scale: f64,
    out: usize,
    /// `(start, end, in_f32)`: the ROI along this axis, and whether it came as f32 (numpy then computes its
    /// first products in f32).
    roi: Option<(f64, f64, bool)>,
    /// Whether this axis is resized at all (it is in `axes`).
    active: bool,
}

/// Reads an optional input, treating an empty tensor as absent (older models pass empty `roi` and `scales`).
fn nonempty<'a>(
    cx: &EvalCx<'a>,
    i: usize,
) -> Result<Option<&'a std::sync::Arc<jiuzhou_ir::Tensor>>, EvalError> {
    Ok(cx.opt_tensor(i)?.filter(|t| !t.is_empty()))
}

/// Normalized `axes` (all axes if absent).
fn resize_axes(op: &Resize, rank: usize) -> Result<Vec<usize>, EvalError> {
    let Some(axes) = &op.axes else {
        return Ok((0..rank).collect());
    };
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = crate::kernels::axis(a, rank)?;
        if out.contains(&a) {
            eval_bail!("axes {axes:?} repeat an axis");
        }
        out.push(a);
    }
    Ok(out)
}

/// The kernel `op` asks for.
fn resize_kernel(op: &Resize) -> Result<Kernel, EvalError> {
    let antialias = op.antialias != 0;
    Ok(match op.mode.as_str() {
        "nearest" => Kernel::Nearest(match op.nearest_mode.as_str() {
            "round_prefer_floor" => Rounding::PreferFloor,
            "round_prefer_ceil" => Rounding::PreferCeil,
            "floor" => Rounding::Floor,
            "ceil" => Rounding::Ceil,
            m => eval_bail!("unknown nearest_mode `{m}`"),
        }),
        "linear" => Kernel::Linear { antialias },
        "cubic" => Kernel::Cubic {
            a: op.cubic_coeff_a as f64,
            antialias,
        },
        m => eval_bail!("unknown mode `{m}`"),
    })
}

/// Maps an output index to a source coordinate; `None` means "use the extrapolation value".
fn source_coord(
    mode: &str,
    y: f64,
    scale: f64,
    in_w: usize,
    out_w: usize,
    roi: Option<(f64, f64, bool)>,
) -> Result<Option<f64>, EvalError> {
    let out_f = scale * in_w as f64;
    let in_f = in_w as f64;
    Ok(Some(match mode {
        "align_corners" => {
            if out_f == 1.0 {
                0.0
            } else {
                y * (in_f - 1.0) / (out_f - 1.0)
            }
        }
        "asymmetric" => y / scale,
        "tf_crop_and_resize" => {
            let Some((r0, r1, f32_roi)) = roi else {
                eval_bail!("tf_crop_and_resize needs a roi input");
            };
            let x = if f32_roi {
                // numpy computes `(roi[1] - roi[0])` and `roi[0] * (in - 1)` in f32 for an f32 roi.
                let (a, b, n) = (r0 as f32, r1 as f32, (in_w as f32) - 1.0);
                let x = if out_f == 1.0 {
                    ((b - a) * n / 2.0) as f64
                } else {
                    y * (b - a) as f64 * (in_f - 1.0) / (out_f - 1.0)
                };
                x + (a * n) as f64
            } else {
                let x = if out_f == 1.0 {
                    (r1 - r0) * (in_f - 1.0) / 2.0
                } else {
                    y * (r1 - r0) * (in_f - 1.0) / (out_f - 1.0)
                };
                x + r0 * (in_f - 1.0)
            };
            if x < 0.0 || x > in_f - 1.0 {
                return Ok(None);
            }
            x
        }
        "pytorch_half_pixel" => {
            if out_f == 1.0 {
                -0.5
            } else {
                (y + 0.5) / scale - 0.5
            }
        }
        "half_pixel" => (y + 0.5) / scale - 0.5,
        "half_pixel_symmetric" => {
            let adjustment = out_w as f64 / out_f;
            let center = in_f / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (y + 0.5) / scale - 0.5
        }
        m => eval_bail!("unknown coordinate_transformation_mode `{m}`"),
    }))
}

/// Resizes `data` (shape `shape`) along `axis` to `plan.out` elements.
fn resize_axis(
    op: &Resize,
    kernel: Kernel,
    data: &[f64],
    shape: &[usize],
    axis: usize,
    plan: &AxisPlan,
) -> Result<Vec<f64>, EvalError> {
    let in_w = shape[axis];
    let out_w = plan.out;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![0.0; outer * out_w * inner];
    if out_w == 0 || out.is_empty() {
        return Ok(out);
    }
    if in_w == 0 {
        eval_bail!("cannot resize an empty axis {axis} to {out_w} elements");
    }
    let extrapolation = op.extrapolation_value as f64;
    for y in 0..out_w {
        let coord = source_coord(
            &op.coordinate_transformation_mode,
            y as f64,
            plan.scale,
            in_w,
            out_w,
            plan.roi,
        )?;
        let Some(x) = coord else {
            for o in 0..outer {
                out[(o * out_w + y) * inner..][..inner].fill(extrapolation);
            }
            continue;
        };
        let xi = x.floor();
        let ratio = if x == xi { 1.0 } else { x - xi };
        let mut coeffs = kernel.coeffs(ratio, plan.scale);
        let n = coeffs.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let p = xp.floor();
        let frac = xp - p;
        let offset = if n % 2 == 0 {
            if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 { base } else { base + 1 }
        };
        let start = p as i64 + offset - pad;
        let idx: Vec<i64> = (0..n).map(|k| start + k).collect();
        if op.exclude_outside != 0 {
            for (c, &i) in coeffs.iter_mut().zip(&idx) {
                if i < 0 || i >= in_w as i64 {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            coeffs.iter_mut().for_each(|c| *c /= sum);
        }
        let clamped: Vec<usize> = idx
            .iter()
            .map(|&i| i.clamp(0, in_w as i64 - 1) as usize)
            .collect();
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = 0.0;
                for (c, &s) in coeffs.iter().zip(&clamped) {
                    acc += c * data[(o * in_w + s) * inner + i];
                }
                out[(o * out_w + y) * inner + i] = acc;
            }
        }
    }
    Ok(out)
}

impl EvalOp for Resize {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let shape = x.shape().to_vec();
        let r = shape.len();
        let axes = resize_axes(self, r)?;
        let kernel = resize_kernel(self)?;
        if self.antialias != 0 && matches!(kernel, Kernel::Nearest(_)) {
            eval_bail!("antialias is not supported for nearest mode");
        }
        let roi = match nonempty(cx, 1)? {
            Some(t) => {
                let v = reals(t, "roi")?;
                if v.len() != 2 * axes.len() {
                    eval_bail!("roi has {} values, expected {}", v.len(), 2 * axes.len());
                }
                // numpy keeps f32 roi values in f32 for the first products.
                Some((v, t.dtype() == jiuzhou_ir::DType::F32))
            }
            None => None,
        };
        let scales = nonempty(cx, 2)?;
        let sizes = match cx.opt_tensor(3)? {
            Some(t) if !t.is_empty() => Some(cx.ints(3)?),
            _ => None,
        };
        let mut plans: Vec<AxisPlan> = shape
            .iter()
            .map(|&d| AxisPlan {
                scale: 1.0,
                out: d,
                roi: None,
                active: false,
            })
            .collect();
        match (scales, sizes) {
            (_, Some(sizes)) => {
                if sizes.len() != axes.len() {
                    eval_bail!("sizes has {} values for {} axes", sizes.len(), axes.len());
                }
                if sizes.iter().any(|&s| s < 0) {
                    eval_bail!("sizes {sizes:?} must be non-negative");
                }
                let ratio = |k: usize| sizes[k] as f64 / shape[axes[k]] as f64;
                let policy = self.keep_aspect_ratio_policy.as_str();
                let common = match policy {
                    "stretch" => None,
                    "not_larger" => Some((0..axes.len()).map(ratio).fold(f64::INFINITY, f64::min)),
                    "not_smaller" => {
                        Some((0..axes.len()).map(ratio).fold(f64::NEG_INFINITY, f64::max))
                    }
                    p => eval_bail!("unknown keep_aspect_ratio_policy `{p}`"),
                };
                for (k, &a) in axes.iter().enumerate() {
                    let p = &mut plans[a];
                    p.active = true;
                    match common {
                        None => {
                            p.scale = ratio(k);
                            p.out = sizes[k] as usize;
                        }
                        Some(s) => {
                            p.scale = s;
                            p.out = (s * shape[a] as f64 + 0.5) as usize;
                        }
                    }
                }
            }
            (Some(scales), None) => {
                let scales = reals(scales, "scales")?;
                if scales.len() != axes.len() {
                    eval_bail!("scales has {} values for {} axes", scales.len(), axes.len());
                }
                for (k, &a) in axes.iter().enumerate() {
                    let s = scales[k];
                    if !(s > 0.0 && s.is_finite()) {
                        eval_bail!("scale {s} must be positive and finite");
                    }
                    let out = s * shape[a] as f64;
                    if out >= (1u64 << 40) as f64 {
                        eval_bail!("scale {s} makes axis {a} too large");
                    }
                    plans[a] = AxisPlan {
                        scale: s,
                        out: out as usize,
                        roi: None,
                        active: true,
                    };
                }
            }
            (None, None) => eval_bail!("Resize needs scales or sizes"),
        }
        if let Some((roi, is_f32)) = &roi {
            let n = axes.len();
            for (k, &a) in axes.iter().enumerate() {
                let (r0, r1) = (roi[k], roi[n + k]);
                plans[a].roi = Some((r0, r1, *is_f32));
            }
        }
        let out_shape: Vec<usize> = plans.iter().map(|p| p.out).collect();
        jiuzhou_ir::tensor::checked_numel(&out_shape, x.dtype())?;
        let mut data = reals(x, "X")?;
        let mut cur = shape.clone();
        for &a in &axes {
            let p = &plans[a];
            let identity_roi = p
                .roi
                .is_none_or(|(r0, r1, _)| (r0 - 0.0).abs() <= 1e-9 && (r1 - 1.0).abs() <= 1e-9);
            if !p.active || ((p.scale - 1.0).abs() <= 1e-9 && p.out == cur[a] && identity_roi) {
                continue;
            }
            data = resize_axis(self, kernel, &data, &cur, a, p)?;
            cur[a] = p.out;
        }
        Ok(vec![Value::from(to_dtype(x.dtype(), cur, data)?)])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::Resize;

    use crate::ops::recurrent::test_util::{close, f, i, run};

    #[test]
    fn nearest_and_linear() {
        let up = vec![f(&[1, 2], &[1.0, 2.0]), None, f(&[2], &[1.0, 2.0])];
        let out = run(Resize::default(), up.clone(), 1).unwrap();
        close(&out[0], &[1, 4], &[1.0, 1.0, 2.0, 2.0]);
        let linear = Resize {
            mode: "linear".into(),
            coordinate_transformation_mode: "align_corners".into(),
            ..Default::default()
        };
        let sizes = vec![f(&[1, 2], &[0.0, 3.0]), None, None, i(&[2], &[1, 4])];
        let out = run(linear.clone(), sizes, 1).unwrap();
        close(&out[0], &[1, 4], &[0.0, 1.0, 2.0, 3.0]);
        // Half-pixel linear downsampling by 2 averages neighbours.
        let down = vec![f(&[4], &[0.0, 2.0, 4.0, 6.0]), None, f(&[1], &[0.5])];
        let half = Resize {
            mode: "linear".into(),
            ..Default::default()
        };
        let out = run(half, down, 1).unwrap();
        close(&out[0], &[2], &[1.0, 5.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        // Wrong number of scales, and neither scales nor sizes.
        assert!(
            run(
                Resize::default(),
                vec![f(&[2], &[1.0, 2.0]), None, f(&[2], &[1.0, 2.0])],
                1
            )
            .is_err()
        );
        assert!(run(Resize::default(), vec![f(&[2], &[1.0, 2.0])], 1).is_err());
        let antialias_nearest = Resize {
            antialias: 1,
            ..Default::default()
        };
        assert!(
            run(
                antialias_nearest,
                vec![f(&[2], &[1.0, 2.0]), None, f(&[1], &[2.0])],
                1
            )
            .is_err()
        );
    }
}
