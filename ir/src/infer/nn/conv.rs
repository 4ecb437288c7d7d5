//! Inference for convolutions and pooling: `[N, C, spatial..]` in, `[N, M, out_spatial..]` out.

use super::window::{AutoPad, Window, conv_transpose_axis};
use crate::infer::{InferCx, InferError, InferOp};
use crate::ops::*;
use crate::{DType, Dim, TensorType, ValueType};

/// The output spatial dims of a window op: exact for known input dims, a fresh symbol otherwise.
fn spatial_dims(cx: &mut InferCx<'_>, w: &Window, input: &[Dim]) -> Result<Vec<Dim>, InferError> {
    let mut out = Vec::with_capacity(input.len());
    for (i, d) in input.iter().enumerate() {
        out.push(match d {
            Dim::Known(n) => Dim::Known(w.axis(i, *n)?.output),
            Dim::Sym(_) => {
                // A window that keeps the size keeps the symbol; any other size is only known at run time.
                let keeps = match w.auto_pad {
                    AutoPad::SameUpper | AutoPad::SameLower => w.strides[i] == 1,
                    AutoPad::Valid => w.kernel[i] == 1 && w.strides[i] == 1,
                    AutoPad::NotSet => {
                        w.kernel[i] == 1
                            && w.strides[i] == 1
                            && w.pads[i] == 0
                            && w.pads[i + w.rank()] == 0
                    }
                };
                if keeps {
                    d.clone()
                } else {
                    cx.fresh("spatial")
                }
            }
        });
    }
    Ok(out)
}

/// The kernel shape: the attribute if given, else the spatial dims of the weight (which must be known).
fn kernel_shape(
    attr: Option<&[i64]>,
    w: Option<&[Dim]>,
    n: usize,
) -> Result<Option<Vec<i64>>, InferError> {
    if let Some(k) = attr {
        return Ok(Some(k.to_vec()));
    }
    let Some(w) = w else { return Ok(None) };
    if w.len() != n + 2 {
        return Err(InferError::new(format!(
            "the weight has rank {}, the input has {n} spatial axes",
            w.len()
        )));
    }
    Ok(w[2..].iter().map(|d| d.known().map(|k| k as i64)).collect())
}

/// The attributes shared by Conv, ConvInteger and QLinearConv.
struct ConvAttrs<'a> {
    auto_pad: &'a str,
    kernel: Option<&'a [i64]>,
    strides: Option<&'a [i64]>,
    dilations: Option<&'a [i64]>,
    pads: Option<&'a [i64]>,
    group: i64,
}

/// The [`ConvAttrs`] of `$op`, any op with Conv's attribute fields.
macro_rules! conv_attrs {
    ($op:expr) => {
        ConvAttrs {
            auto_pad: &$op.auto_pad,
            kernel: $op.kernel_shape.as_deref(),
            strides: $op.strides.as_deref(),
            dilations: $op.dilations.as_deref(),
            pads: $op.pads.as_deref(),
            group: $op.group,
        }
    };
}

/// Shared rule of Conv, ConvInteger and QLinearConv: `x` and `w` are the data and weight input indices.
fn conv_like(
    cx: &mut InferCx<'_>,
    x: usize,
    w: usize,
    dtype: DType,
    attrs: &ConvAttrs<'_>,
) -> Result<Vec<ValueType>, InferError> {
    let xd = cx.dims(x)?;
    let wd = cx.dims(w)?;
    conv_dims(cx, xd, wd, dtype, attrs)
}

/// [`conv_like`] on given channels-first dims of the data `xd` (`[N, C, spatial..]`) and weight `wd`
/// (`[M, C / group, kernel..]`).
fn conv_dims(
    cx: &mut InferCx<'_>,
    xd: Option<&[Dim]>,
    wd: Option<&[Dim]>,
    dtype: DType,
    attrs: &ConvAttrs<'_>,
) -> Result<Vec<ValueType>, InferError> {
    let &ConvAttrs {
        auto_pad,
        kernel,
        strides,
        dilations,
        pads,
        group,
    } = attrs;
    if group < 1 {
        return Err(InferError::new(format!("group {group} must be positive")));
    }
    let Some(xd) = xd else {
        return Ok(vec![TensorType::unranked(dtype).into()]);
    };
    if xd.len() < 3 {
        return Err(InferError::new(format!(
            "the input has rank {}, expected at least 3",
            xd.len()
        )));
    }
    let n = xd.len() - 2;
    let channels = match wd {
        Some(wd) if wd.len() == n + 2 => wd[0].clone(),
        Some(wd) => {
            return Err(InferError::new(format!(
                "the weight has rank {}, the input {}",
                wd.len(),
                xd.len()
            )));
        }
        None => cx.fresh("channels"),
    };
    let mut dims = vec![xd[0].clone(), channels];
    match kernel_shape(kernel, wd, n)? {
        Some(k) => {
            let win = Window::new(n, &k, strides, dilations, pads, auto_pad, 0)?;
            dims.extend(spatial_dims(cx, &win, &xd[2..])?);
        }
        None => {
            for _ in 0..n {
                dims.push(cx.fresh("spatial"));
            }
        }
    }
    Ok(vec![TensorType::new(dtype, dims).into()])
}

impl InferOp for Conv {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        conv_like(cx, 0, 1, dtype, &conv_attrs!(self))
    }
}

impl InferOp for FusedConv {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let out = conv_like(cx, 0, 1, dtype, &conv_attrs!(self))?;
        if let Some(b) = cx.opt_tensor(2)? {
            if b.dtype != dtype {
                return Err(InferError::new(format!(
                    "the bias is {} but the input is {dtype}",
                    b.dtype
                )));
            }
            if let Some(dims) = &b.shape
                && dims.len() != 1
            {
                return Err(InferError::new(format!(
                    "the bias must be a vector, got rank {}",
                    dims.len()
                )));
            }
        }
        if let Some(ValueType::Tensor(t)) = out.first() {
            super::check_addend(t, cx.opt_tensor(3)?, "residual")?;
        }
        Ok(out)
    }
}

impl InferOp for FusedConvNhwc {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        // Channels-last to channels-first: X [N, s.., C] -> [N, C, s..], W [k.., C/g, M] -> [M, C/g, k..].
        let xd = cx.dims(0)?.map(|d| match d.split_last() {
            Some((c, rest)) if !rest.is_empty() => {
                let mut v = vec![rest[0].clone(), c.clone()];
                v.extend_from_slice(&rest[1..]);
                v
            }
            _ => d.to_vec(),
        });
        let wd = cx.dims(1)?.map(|d| match d.len() {
            n if n >= 2 => {
                let mut v = vec![d[n - 1].clone(), d[n - 2].clone()];
                v.extend_from_slice(&d[..n - 2]);
                v
            }
            _ => d.to_vec(),
        });
        let attrs = conv_attrs!(self);
        let mut out = conv_dims(cx, xd.as_deref(), wd.as_deref(), dtype, &attrs)?;
        // Back to channels-last: [N, M, o..] -> [N, o.., M].
        if let Some(ValueType::Tensor(t)) = out.first_mut()
            && let Some(d) = &mut t.shape
            && d.len() >= 2
        {
            let m = d.remove(1);
            d.push(m);
        }
        if let Some(b) = cx.opt_tensor(2)? {
            if b.dtype != dtype {
                return Err(InferError::new(format!(
                    "the bias is {} but the input is {dtype}",
                    b.dtype
                )));
            }
            if let Some(dims) = &b.shape
                && dims.len() != 1
            {
                return Err(InferError::new(format!(
                    "the bias must be a vector, got rank {}",
                    dims.len()
                )));
            }
        }
        if let Some(ValueType::Tensor(t)) = out.first() {
            super::check_addend(t, cx.opt_tensor(3)?, "residual")?;
        }
        Ok(out)
    }
}

impl InferOp for ConvInteger {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        conv_like(cx, 0, 1, DType::I32, &conv_attrs!(self))
    }
}

impl InferOp for QLinearConv {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = match cx.opt_tensor(7)? {
            Some(t) => t.dtype,
            None => cx.tensor(0)?.dtype,
        };
        conv_like(cx, 0, 3, dtype, &conv_attrs!(self))
    }
}

impl InferOp for ConvTranspose {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let (Some(xd), wd) = (cx.dims(0)?, cx.dims(1)?) else {
            return Ok(vec![TensorType::unranked(dtype).into()]);
        };
        if xd.len() < 3 {
            return Err(InferError::new(format!(
                "the input has rank {}, expected at least 3",
                xd.len()
            )));
        }
        let n = xd.len() - 2;
        let channels = match wd {
            Some(wd) if wd.len() == n + 2 => match wd[1].known() {
                Some(m) => match m.checked_mul(self.group.max(1) as usize) {
                    Some(c) => Dim::Known(c),
                    None => return Err(InferError::new("ConvTranspose output channels overflow")),
                },
                None => cx.fresh("channels"),
            },
            Some(wd) => {
                return Err(InferError::new(format!(
                    "the weight has rank {}, the input {}",
                    wd.len(),
                    xd.len()
                )));
            }
            None => cx.fresh("channels"),
        };
        let mut dims = vec![xd[0].clone(), channels];
        let kernel = kernel_shape(self.kernel_shape.as_deref(), wd, n)?;
        let spatial = match kernel {
            None => (0..n).map(|_| cx.fresh("spatial")).collect(),
            Some(k) => {
                let win = Window::new(
                    n,
                    &k,
                    self.strides.as_deref(),
                    self.dilations.as_deref(),
                    self.pads.as_deref(),
                    &self.auto_pad,
                    0,
                )?;
                let out_pad = output_padding(self.output_padding.as_deref(), n)?;
                let out_shape = output_shape(self.output_shape.as_deref(), n)?;
                let mut v = Vec::with_capacity(n);
                for (i, d) in xd[2..].iter().enumerate() {
                    v.push(match (d, &out_shape) {
                        (_, Some(o)) => Dim::Known(o[i]),
                        (Dim::Known(x), None) => {
                            let pads = self.pads.as_ref().map(|_| (win.pads[i], win.pads[i + n]));
                            let (o, _) = conv_transpose_axis(
                                *x,
                                win.kernel[i],
                                win.strides[i],
                                win.dilations[i],
                                out_pad[i],
                                pads,
                                win.auto_pad,
                                None,
                            )?;
                            Dim::Known(o)
                        }
                        (Dim::Sym(_), None) => cx.fresh("spatial"),
                    });
                }
                v
            }
        };
        dims.extend(spatial);
        Ok(vec![TensorType::new(dtype, dims).into()])
    }
}

/// ConvTranspose's `output_padding`, checked (zeros when absent).
pub fn output_padding(v: Option<&[i64]>, n: usize) -> Result<Vec<usize>, InferError> {
    match v {
        None => Ok(vec![0; n]),
        Some(v) if v.len() == n || v.len() == 2 * n => v[..n]
            .iter()
            .map(|&p| {
                usize::try_from(p)
                    .ok()
                    .filter(|&p| p <= 1 << 32)
                    .ok_or_else(|| InferError::new(format!("output_padding {p} is out of range")))
            })
            .collect(),
        Some(v) => Err(InferError::new(format!(
            "output_padding has {} values, expected {n}",
            v.len()
        ))),
    }
}

/// ConvTranspose's `output_shape` as spatial sizes (a leading `[N, C]` is dropped), checked.
pub fn output_shape(v: Option<&[i64]>, n: usize) -> Result<Option<Vec<usize>>, InferError> {
    let Some(v) = v else { return Ok(None) };
    let v = if v.len() == n + 2 { &v[2..] } else { v };
    if v.len() != n {
        return Err(InferError::new(format!(
            "output_shape has {} values, expected {n}",
            v.len()
        )));
    }
    v.iter()
        .map(|&p| {
            usize::try_from(p)
                .ok()
                .filter(|&p| p <= 1 << 32)
                .ok_or_else(|| InferError::new(format!("output_shape value {p} is out of range")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Shared rule of the pooling ops: same N and C, pooled spatial dims.
#[allow(clippy::too_many_arguments)]
fn pool_like(
    cx: &mut InferCx<'_>,
    auto_pad: &str,
    ceil_mode: i64,
    kernel: &[i64],
    strides: Option<&[i64]>,
    dilations: Option<&[i64]>,
    pads: Option<&[i64]>,
    outputs: usize,
) -> Result<Vec<ValueType>, InferError> {
    let dtype = cx.tensor(0)?.dtype;
    let shape = match cx.dims(0)? {
        None => None,
        Some(xd) => {
            if xd.len() < 2 + kernel.len() || kernel.is_empty() {
                return Err(InferError::new(format!(
                    "the input has rank {}, kernel_shape has {} values",
                    xd.len(),
                    kernel.len()
                )));
            }
            let n = kernel.len();
            let win = Window::new(n, kernel, strides, dilations, pads, auto_pad, ceil_mode)?;
            let lead = xd.len() - n;
            let mut dims = xd[..lead].to_vec();
            dims.extend(spatial_dims(cx, &win, &xd[lead..])?);
            Some(dims)
        }
    };
    let mut out = vec![ValueType::Tensor(TensorType {
        dtype,
        shape: shape.clone(),
    })];
    if outputs > 1 {
        out.push(
            TensorType {
                dtype: DType::I64,
                shape,
            }
            .into(),
        );
    }
    Ok(out)
}

/// Shared rule of the channels-last pools: `[N, spatial.., C]` to `[N, pooled spatial.., C]` (one output).
#[allow(clippy::too_many_arguments)]
fn pool_nhwc(
    cx: &mut InferCx<'_>,
    auto_pad: &str,
    ceil_mode: i64,
    kernel: &[i64],
    strides: Option<&[i64]>,
    dilations: Option<&[i64]>,
    pads: Option<&[i64]>,
) -> Result<Vec<ValueType>, InferError> {
    let dtype = cx.tensor(0)?.dtype;
    let shape = match cx.dims(0)? {
        None => None,
        Some(xd) => {
            let n = kernel.len();
            if n == 0 || xd.len() != n + 2 {
                return Err(InferError::new(format!(
                    "the channels-last input has rank {}, kernel_shape has {n} values",
                    xd.len()
                )));
            }
            let win = Window::new(n, kernel, strides, dilations, pads, auto_pad, ceil_mode)?;
            let mut dims = vec![xd[0].clone()];
            dims.extend(spatial_dims(cx, &win, &xd[1..=n])?);
            dims.push(xd[n + 1].clone());
            Some(dims)
        }
    };
    Ok(vec![ValueType::Tensor(TensorType { dtype, shape })])
}

/// The channels-last pools infer alike from their shared window attributes.
macro_rules! pool_nhwc_infer {
    ($($op:ty),*) => {$(
        impl InferOp for $op {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                pool_nhwc(
                    cx,
                    &self.auto_pad,
                    self.ceil_mode,
                    &self.kernel_shape,
                    self.strides.as_deref(),
                    self.dilations.as_deref(),
                    self.pads.as_deref(),
                )
            }
        }
    )*};
}

pool_nhwc_infer!(AveragePoolNhwc, MaxPoolNhwc);

impl InferOp for AveragePool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        pool_like(
            cx,
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            1,
        )
    }
}

impl InferOp for MaxPool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let outputs = cx.num_outputs;
        pool_like(
            cx,
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            outputs,
        )
    }
}

impl InferOp for LpPool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        pool_like(
            cx,
            &self.auto_pad,
            self.ceil_mode,
            &self.kernel_shape,
            self.strides.as_deref(),
            self.dilations.as_deref(),
            self.pads.as_deref(),
            1,
        )
    }
}

/// Global pooling: every spatial dim becomes 1.
fn global_pool(cx: &InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
    let t = cx.tensor(0)?;
    let shape = match &t.shape {
        None => None,
        Some(d) if d.len() < 2 => {
            return Err(InferError::new(format!(
                "the input has rank {}, expected at least 2",
                d.len()
            )));
        }
        Some(d) => Some(
            d[..2]
                .iter()
                .cloned()
                .chain(d[2..].iter().map(|_| Dim::Known(1)))
                .collect(),
        ),
    };
    Ok(vec![
        TensorType {
            dtype: t.dtype,
            shape,
        }
        .into(),
    ])
}

impl InferOp for GlobalAveragePool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        global_pool(cx)
    }
}

impl InferOp for GlobalMaxPool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        global_pool(cx)
    }
}

impl InferOp for GlobalLpPool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        global_pool(cx)
    }
}
