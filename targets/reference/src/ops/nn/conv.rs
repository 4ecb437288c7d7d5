//! Convolutions: Conv (im2col + the shared matrix product), ConvTranspose (matrix product + col2im), and the
//! integer and quantized forms ConvInteger and QLinearConv.
//!
//! Up to three spatial axes are supported; 1-D and 2-D inputs are treated as 3-D with leading axes of size 1, so
//! one set of loops serves every rank.

use jiuzhou_ir::infer::nn::window::{AutoPad, Window, conv_transpose_axis};
use jiuzhou_ir::infer::nn::{output_padding, output_shape};
use std::sync::Arc;

use jiuzhou_ir::{DType, Tensor, Value};

use super::gemm::{matmul_acc, requantize, scale_ratio, sub_zero_point, transpose, widen_i32};
use super::{Scalar, expect_float, geometry, numel, to_f64s, with_compute_type};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The resolved geometry of one convolution, spatial axes padded to three.
#[derive(Clone, Debug, PartialEq)]
struct ConvGeom {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    pad_begin: [i64; 3],
    /// Output shape in the input's rank.
    out_shape: Vec<usize>,
}

impl ConvGeom {
    /// Checks that a bias, if given, has one value per output channel.
    fn check_bias<T>(&self, bias: Option<&[T]>) -> Result<(), EvalError> {
        match bias {
            Some(b) if b.len() != self.out_channels => eval_bail!(
                "the bias has {} values, expected {}",
                b.len(),
                self.out_channels
            ),
            _ => Ok(()),
        }
    }

    fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }
    fn input_len(&self) -> usize {
        self.input.iter().product()
    }
    fn output_len(&self) -> usize {
        self.output.iter().product()
    }
}

/// Pads a per-axis list of `n <= 3` values to three with `fill` in front.
fn pad3<T: Copy>(v: &[T], fill: T) -> [T; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

/// The attributes every convolution shares.
struct ConvAttrs<'a> {
    auto_pad: &'a str,
    dilations: Option<&'a [i64]>,
    group: i64,
    kernel_shape: Option<&'a [i64]>,
    pads: Option<&'a [i64]>,
    strides: Option<&'a [i64]>,
}

/// The [`ConvAttrs`] of `$op`, any op with Conv's attribute fields (Conv, ConvInteger, QLinearConv).
macro_rules! conv_attrs {
    ($op:expr) => {
        ConvAttrs {
            auto_pad: &$op.auto_pad,
            dilations: $op.dilations.as_deref(),
            group: $op.group,
            kernel_shape: $op.kernel_shape.as_deref(),
            pads: $op.pads.as_deref(),
            strides: $op.strides.as_deref(),
        }
    };
}

/// Checks shapes and resolves the geometry of a convolution of `x` by weight `w` (`[M, C/group, k..]`).
fn conv_geometry(x: &[usize], w: &[usize], a: &ConvAttrs<'_>) -> Result<ConvGeom, EvalError> {
    if x.len() < 3 || x.len() > 5 || w.len() != x.len() {
        eval_bail!("convolution of input {x:?} by weight {w:?}: expected ranks 3 to 5, equal");
    }
    let n = x.len() - 2;
    let group = usize::try_from(a.group)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| EvalError::new(format!("group {} must be positive", a.group)))?;
    let kernel: Vec<i64> = w[2..].iter().map(|&k| k as i64).collect();
    if let Some(k) = a.kernel_shape
        && k != kernel.as_slice()
    {
        eval_bail!(
            "kernel_shape {k:?} does not match the weight's spatial dims {:?}",
            &w[2..]
        );
    }
    if w[1].checked_mul(group) != Some(x[1]) || !w[0].is_multiple_of(group) {
        eval_bail!("input {x:?} and weight {w:?} do not fit group {group}");
    }
    let win =
        Window::new(n, &kernel, a.strides, a.dilations, a.pads, a.auto_pad, 0).map_err(geometry)?;
    let mut output = Vec::with_capacity(n);
    let mut pad_begin = Vec::with_capacity(n);
    for (i, &d) in x[2..].iter().enumerate() {
        let g = win.axis(i, d).map_err(geometry)?;
        output.push(g.output);
        pad_begin.push(g.pad_begin as i64);
    }
    let mut out_shape = vec![x[0], w[0]];
    out_shape.extend(&output);
    Ok(ConvGeom {
        batch: x[0],
        in_channels: x[1],
        out_channels: w[0],
        group,
        input: pad3(&x[2..], 1),
        output: pad3(&output, 1),
        kernel: pad3(&w[2..], 1),
        strides: pad3(&win.strides, 1),
        dilations: pad3(&win.dilations, 1),
        pad_begin: pad3(&pad_begin, 0),
        out_shape,
    })
}

/// Fills `col` (`[C·kd·kh·kw, od·oh·ow]`) with the input windows of `x` (`[C, id, ih, iw]`); padding reads zero.
fn im2col<T: Scalar>(g: &ConvGeom, channels: usize, x: &[T], col: &mut [T]) {
    let [id, ih, iw] = g.input.map(|v| v as i64);
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.strides.map(|v| v as i64);
    let [dd, dh, dw] = g.dilations.map(|v| v as i64);
    let [pd, ph, pw] = g.pad_begin;
    let plane = g.input_len();
    let mut rows = col.chunks_exact_mut(g.output_len());
    for c in 0..channels {
        let xc = &x[c * plane..(c + 1) * plane];
        for a in 0..kd as i64 {
            for b in 0..kh as i64 {
                for e in 0..kw as i64 {
                    let Some(row) = rows.next() else { return };
                    let mut out = row.iter_mut();
                    for o0 in 0..od as i64 {
                        let z = o0 * sd - pd + a * dd;
                        for o1 in 0..oh as i64 {
                            let y = o1 * sh - ph + b * dh;
                            let inside = (0..id).contains(&z) && (0..ih).contains(&y);
                            let base = (z * ih + y) * iw;
                            for o2 in 0..ow as i64 {
                                let xw = o2 * sw - pw + e * dw;
                                let v = if inside && (0..iw).contains(&xw) {
                                    xc[(base + xw) as usize]
                                } else {
                                    T::ZERO
                                };
                                if let Some(slot) = out.next() {
                                    *slot = v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Convolution in compute type `T`: `x` is `[N, C, ..]`, `w` is `[M, C/group, ..]`, `bias` is `[M]`.
fn conv_typed<T: Scalar>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    dtype: DType,
) -> Result<Vec<T>, EvalError> {
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let (klen, ilen, olen) = (g.kernel_len(), g.input_len(), g.output_len());
    let kdim = cg * klen;
    if x.len() != g.batch * g.in_channels * ilen || w.len() != g.out_channels * kdim {
        eval_bail!("convolution operands do not match their shapes");
    }
    g.check_bias(bias)?;
    let mut y = vec![T::ZERO; numel(&g.out_shape, dtype)?];
    // A 1x1 kernel with unit strides and no padding reads the input as it is: no im2col copy.
    let pointwise =
        klen == 1 && g.strides == [1; 3] && g.pad_begin == [0; 3] && g.input == g.output;
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![T::ZERO; numel(&[kdim, olen], dtype)?]
    };
    for n in 0..g.batch {
        for grp in 0..g.group {
            let x0 = (n * g.in_channels + grp * cg) * ilen;
            let xs = &x[x0..x0 + cg * ilen];
            let cols: &[T] = if pointwise {
                xs
            } else {
                im2col(g, cg, xs, &mut col);
                &col
            };
            let y0 = (n * g.out_channels + grp * mg) * olen;
            let ys = &mut y[y0..y0 + mg * olen];
            if let Some(b) = bias {
                for (oc, row) in ys.chunks_exact_mut(olen.max(1)).enumerate() {
                    row.fill(b[grp * mg + oc]);
                }
            }
            matmul_acc(
                mg,
                kdim,
                olen,
                &w[grp * mg * kdim..(grp + 1) * mg * kdim],
                cols,
                ys,
            )?;
        }
    }
    Ok(y)
}

impl EvalOp for jiuzhou_ir::ops::Conv {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, w) = (cx.tensor(0)?, cx.tensor(1)?);
        expect_float(x, "Conv input")?;
        if w.dtype() != x.dtype() {
            eval_bail!(
                "Conv input is {} but the weight is {}",
                x.dtype(),
                w.dtype()
            );
        }
        let g = conv_geometry(x.shape(), w.shape(), &conv_attrs!(self))?;
        let bias = cx.opt_tensor(2)?;
        let out = with_compute_type!(x.dtype(), "Conv", T => {
            let b = match bias { Some(b) => Some(T::elements(b)?), None => None };
            let y = conv_typed::<T>(&g, &T::elements(x)?, &T::elements(w)?, b.as_deref(), x.dtype())?;
            T::into_tensor(y, x.dtype(), g.out_shape.clone())?
        });
        Ok(vec![out.into()])
    }
}

/// The i32 input and weight of ConvInteger/QLinearConv with their zero points subtracted (the weight's may be
/// per output channel).
fn integer_operands(
    x: &Tensor,
    x_zp: Option<&Arc<Tensor>>,
    w: &Tensor,
    w_zp: Option<&Arc<Tensor>>,
) -> Result<(Vec<i32>, Vec<i32>), EvalError> {
    let mut xv = widen_i32(x, "x")?;
    let mut wv = widen_i32(w, "w")?;
    if let Some(z) = x_zp
        && z.len() != 1
    {
        eval_bail!("x_zero_point must hold one value, got {}", z.len());
    }
    sub_zero_point(&mut xv, x.shape(), x_zp, 1, "x_zero_point")?;
    sub_zero_point(&mut wv, w.shape(), w_zp, 0, "w_zero_point")?;
    Ok((xv, wv))
}

impl EvalOp for jiuzhou_ir::ops::ConvInteger {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, w) = (cx.tensor(0)?, cx.tensor(1)?);
        let g = conv_geometry(x.shape(), w.shape(), &conv_attrs!(self))?;
        let (xv, wv) = integer_operands(x, cx.opt_tensor(2)?, w, cx.opt_tensor(3)?)?;
        let y = conv_typed::<i32>(&g, &xv, &wv, None, DType::I32)?;
        Ok(vec![Tensor::from_vec(g.out_shape, y)?.into()])
    }
}

impl EvalOp for jiuzhou_ir::ops::QLinearConv {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, w) = (cx.tensor(0)?, cx.tensor(3)?);
        let g = conv_geometry(x.shape(), w.shape(), &conv_attrs!(self))?;
        let (xv, wv) = integer_operands(x, cx.opt_tensor(2)?, w, cx.opt_tensor(5)?)?;
        let bias = match cx.opt_tensor(8)? {
            Some(b) => Some(widen_i32(b, "B")?),
            None => None,
        };
        let acc = conv_typed::<i32>(&g, &xv, &wv, bias.as_deref(), DType::I32)?;
        let x_scale_t = cx.tensor(1)?;
        let x_scale = super::gemm::scalar_f64(x_scale_t, "x_scale")?;
        let y_scale = super::gemm::scalar_f64(cx.tensor(6)?, "y_scale")?;
        let w_scale = to_f64s(cx.tensor(4)?)?;
        if w_scale.len() != 1 && w_scale.len() != g.out_channels {
            eval_bail!(
                "w_scale has {} values, expected 1 or {}",
                w_scale.len(),
                g.out_channels
            );
        }
        let ratios: Vec<f64> = w_scale
            .iter()
            .map(|&ws| scale_ratio(x_scale, ws, y_scale, x_scale_t.dtype()))
            .collect();
        let (zp, dtype) = match cx.opt_tensor(7)? {
            Some(z) => (
                widen_i32(z, "y_zero_point")?.first().copied().unwrap_or(0),
                z.dtype(),
            ),
            None => (0, x.dtype()),
        };
        let olen = g.output_len().max(1);
        let m = g.out_channels;
        let out = requantize(
            &acc,
            |i| ratios[if ratios.len() == 1 { 0 } else { (i / olen) % m }],
            zp,
            dtype,
        )?
        .reshape(g.out_shape)?;
        Ok(vec![out.into()])
    }
}

impl EvalOp for jiuzhou_ir::ops::ConvTranspose {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, w) = (cx.tensor(0)?, cx.tensor(1)?);
        expect_float(x, "ConvTranspose input")?;
        if w.dtype() != x.dtype() {
            eval_bail!(
                "ConvTranspose input is {} but the weight is {}",
                x.dtype(),
                w.dtype()
            );
        }
        let (xs, ws) = (x.shape(), w.shape());
        if xs.len() < 3 || xs.len() > 5 || ws.len() != xs.len() {
            eval_bail!(
                "ConvTranspose of input {xs:?} by weight {ws:?}: expected ranks 3 to 5, equal"
            );
        }
        let n = xs.len() - 2;
        let group = usize::try_from(self.group)
            .ok()
            .filter(|&g| g >= 1)
            .ok_or_else(|| EvalError::new(format!("group {} must be positive", self.group)))?;
        if ws[0] != xs[1] || xs[1] % group != 0 {
            eval_bail!("input {xs:?} and weight {ws:?} do not fit group {group}");
        }
        let kernel: Vec<i64> = ws[2..].iter().map(|&k| k as i64).collect();
        let win = Window::new(
            n,
            &kernel,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            &self.auto_pad,
            0,
        )
        .map_err(geometry)?;
        let out_pad = output_padding(self.output_padding.as_deref(), n).map_err(geometry)?;
        let out_shape_attr = output_shape(self.output_shape.as_deref(), n).map_err(geometry)?;
        let mut output = Vec::with_capacity(n);
        let mut pad_begin = Vec::with_capacity(n);
        for i in 0..n {
            let pads = self.pads.as_ref().map(|_| (win.pads[i], win.pads[i + n]));
            let auto = if self.pads.is_some() {
                AutoPad::NotSet
            } else {
                win.auto_pad
            };
            let (o, pb) = conv_transpose_axis(
                xs[i + 2],
                win.kernel[i],
                win.strides[i],
                win.dilations[i],
                out_pad[i],
                pads,
                auto,
                out_shape_attr.as_ref().map(|s| s[i]),
            )
            .map_err(geometry)?;
            output.push(o);
            pad_begin.push(pb);
        }
        let mg = ws[1];
        let Some(out_channels) = mg.checked_mul(group) else {
            eval_bail!("ConvTranspose output channels overflow");
        };
        let mut out_shape = vec![xs[0], out_channels];
        out_shape.extend(&output);
        let g = ConvGeom {
            batch: xs[0],
            in_channels: xs[1],
            out_channels,
            group,
            input: pad3(&xs[2..], 1),
            output: pad3(&output, 1),
            kernel: pad3(&ws[2..], 1),
            strides: pad3(&win.strides, 1),
            dilations: pad3(&win.dilations, 1),
            pad_begin: pad3(&pad_begin, 0),
            out_shape,
        };
        let bias = cx.opt_tensor(2)?;
        let out = with_compute_type!(x.dtype(), "ConvTranspose", T => {
            let b = match bias { Some(b) => Some(T::elements(b)?), None => None };
            let y = conv_transpose_typed::<T>(&g, &T::elements(x)?, &T::elements(w)?, b.as_deref(), x.dtype())?;
            T::into_tensor(y, x.dtype(), g.out_shape.clone())?
        });
        Ok(vec![out.into()])
    }
}

/// Transposed convolution in compute type `T`: `x` is `[N, C, ..]`, `w` is `[C, M/group, ..]`.
///
/// Per image and group, `col = wᵀ · x` gives every input position's contribution for every output channel and
/// kernel tap; col2im then adds each contribution at `input * stride + tap * dilation - pad_begin`.
fn conv_transpose_typed<T: Scalar>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    dtype: DType,
) -> Result<Vec<T>, EvalError> {
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let (klen, ilen, olen) = (g.kernel_len(), g.input_len(), g.output_len());
    if x.len() != g.batch * g.in_channels * ilen || w.len() != g.in_channels * mg * klen {
        eval_bail!("ConvTranspose operands do not match their shapes");
    }
    g.check_bias(bias)?;
    let mut y = vec![T::ZERO; numel(&g.out_shape, dtype)?];
    let rows = mg * klen;
    let mut col = vec![T::ZERO; numel(&[rows, ilen], dtype)?];
    let w_t: Vec<Vec<T>> = (0..g.group)
        .map(|grp| transpose(cg, rows, &w[grp * cg * rows..(grp + 1) * cg * rows]))
        .collect();
    let [id, ih, iw] = g.input;
    let [od, oh, ow] = g.output.map(|v| v as i64);
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.strides.map(|v| v as i64);
    let [dd, dh, dw] = g.dilations.map(|v| v as i64);
    let [pd, ph, pw] = g.pad_begin;
    for n in 0..g.batch {
        for (grp, wt) in w_t.iter().enumerate() {
            let x0 = (n * g.in_channels + grp * cg) * ilen;
            col.fill(T::ZERO);
            matmul_acc(rows, cg, ilen, wt, &x[x0..x0 + cg * ilen], &mut col)?;
            for oc in 0..mg {
                let c = grp * mg + oc;
                let y0 = (n * g.out_channels + c) * olen;
                let ys = &mut y[y0..y0 + olen];
                let mut taps =
                    col[oc * klen * ilen..(oc + 1) * klen * ilen].chunks_exact(ilen.max(1));
                for a in 0..kd as i64 {
                    for b in 0..kh as i64 {
                        for e in 0..kw as i64 {
                            let Some(row) = taps.next() else { continue };
                            let mut vals = row.iter();
                            for i0 in 0..id as i64 {
                                let z = i0 * sd + a * dd - pd;
                                for i1 in 0..ih as i64 {
                                    let yy = i1 * sh + b * dh - ph;
                                    let inside = (0..od).contains(&z) && (0..oh).contains(&yy);
                                    let base = (z * oh + yy) * ow;
                                    for i2 in 0..iw as i64 {
                                        let v = vals.next().copied().unwrap_or(T::ZERO);
                                        let xw = i2 * sw + e * dw - pw;
                                        if inside && (0..ow).contains(&xw) {
                                            let slot = &mut ys[(base + xw) as usize];
                                            *slot = slot.plus(v);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                if let Some(b) = bias {
                    ys.iter_mut().for_each(|v| *v = v.plus(b[c]));
                }
            }
        }
    }
    Ok(y)
}
