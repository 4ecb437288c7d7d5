//! Reductions, scans, top-k, losses, and signal-processing ops.
//!
//! Reductions take their axes as an input (the newest ONNX form). When that input is a constant, or its static
//! shape says it is empty, the output shape is exact; otherwise a reduction with `keepdims=1` keeps the rank and
//! gives every dim that is not a known 1 a fresh symbol, and one with `keepdims=0` knows its rank only when the
//! number of axes is static.

use super::{InferCx, InferError, InferOp, normalize_axis};
use crate::ops::*;
use crate::{DType, Dim, TensorType, ValueType, infer_bail};

/// Checks that input `i` has a real numeric dtype (or bool, if `allow_bool`) and returns it.
fn numeric_dtype(cx: &InferCx<'_>, i: usize, allow_bool: bool) -> Result<DType, InferError> {
    let d = cx.tensor(i)?.dtype;
    let ok = !d.is_bits() && (d.is_float() || d.is_int() || (allow_bool && d == DType::Bool));
    if ok {
        Ok(d)
    } else {
        infer_bail!("input {i} has dtype {d}, expected a numeric type")
    }
}

/// Checks that input `i` has a float dtype (f16, bf16, f32, f64) and returns it.
fn float_dtype(cx: &InferCx<'_>, i: usize) -> Result<DType, InferError> {
    cx.expect_dtype(i, &[DType::F16, DType::BF16, DType::F32, DType::F64])
}

/// The value of input `i`, if that input is a constant holding exactly one integer.
fn const_scalar(cx: &InferCx<'_>, i: usize) -> Option<i64> {
    match cx.const_ints(i).as_deref() {
        Some([v]) => Some(*v),
        _ => None,
    }
}

/// A known dim from a constant count, or a fresh symbol.
fn dim_or_fresh(cx: &mut InferCx<'_>, n: Option<i64>, hint: &str) -> Result<Dim, InferError> {
    match n {
        Some(n) if n < 0 => infer_bail!("{hint} size {n} is negative"),
        Some(n) => Ok(Dim::Known(n as usize)),
        None => Ok(cx.fresh(hint)),
    }
}

/// The axes a reduction reduces over, as far as inference can tell.
enum ReduceAxes {
    /// These axes (possibly negative); empty means "all" or "none" depending on `noop_with_empty_axes`.
    Known(Vec<i64>),
    /// Unknown values; the count is known if the axes input has a static length.
    Unknown(Option<usize>),
}

fn reduce_axes(cx: &InferCx<'_>) -> Result<ReduceAxes, InferError> {
    if !cx.has_input(1) {
        return Ok(ReduceAxes::Known(vec![]));
    }
    let axes = cx.tensor(1)?;
    if !matches!(axes.dtype, DType::I64 | DType::I32) {
        infer_bail!("axes must be int64, got {}", axes.dtype);
    }
    if let Some(a) = cx.const_ints(1) {
        return Ok(ReduceAxes::Known(a));
    }
    match axes.shape.as_deref() {
        Some([Dim::Known(0)]) => Ok(ReduceAxes::Known(vec![])),
        Some([Dim::Known(n)]) => Ok(ReduceAxes::Unknown(Some(*n))),
        Some([]) => Ok(ReduceAxes::Unknown(Some(1))),
        _ => Ok(ReduceAxes::Unknown(None)),
    }
}

/// The output type of a `Reduce*` op.
fn infer_reduce(
    cx: &mut InferCx<'_>,
    keepdims: i64,
    noop_with_empty_axes: i64,
    allow_bool: bool,
) -> Result<Vec<ValueType>, InferError> {
    let dtype = numeric_dtype(cx, 0, allow_bool)?;
    let axes = reduce_axes(cx)?;
    let keep = keepdims != 0;
    let Some(dims) = cx.dims(0)?.map(|d| d.to_vec()) else {
        return Ok(vec![TensorType::unranked(dtype).into()]);
    };
    let rank = dims.len();
    let shape = match axes {
        ReduceAxes::Known(a) if a.is_empty() && noop_with_empty_axes != 0 => Some(dims),
        ReduceAxes::Known(a) => {
            let mut reduced = vec![a.is_empty(); rank];
            for &ax in &a {
                let ax = normalize_axis(ax, rank)?;
                if reduced[ax] {
                    infer_bail!("axis {ax} is listed twice");
                }
                reduced[ax] = true;
            }
            let mut out = Vec::with_capacity(rank);
            for (d, r) in dims.into_iter().zip(reduced) {
                if !r {
                    out.push(d);
                } else if keep {
                    out.push(Dim::Known(1));
                }
            }
            Some(out)
        }
        ReduceAxes::Unknown(count) => {
            if keep {
                let mut out = Vec::with_capacity(rank);
                for d in dims {
                    out.push(if d == Dim::Known(1) {
                        d
                    } else {
                        cx.fresh("reduce")
                    });
                }
                Some(out)
            } else {
                match count {
                    Some(k) if k <= rank => {
                        Some((0..rank - k).map(|_| cx.fresh("reduce")).collect())
                    }
                    Some(k) => infer_bail!("{k} axes for a rank-{rank} input"),
                    None => None,
                }
            }
        }
    };
    Ok(vec![TensorType { dtype, shape }.into()])
}

macro_rules! reduce_ops {
    ($($name:ident: $allow_bool:expr),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                infer_reduce(cx, self.keepdims, self.noop_with_empty_axes, $allow_bool)
            }
        }
    )*};
}

reduce_ops!(
    ReduceL1: false,
    ReduceL2: false,
    ReduceLogSum: false,
    ReduceLogSumExp: false,
    ReduceMax: true,
    ReduceMean: false,
    ReduceMin: true,
    ReduceProd: false,
    ReduceSum: false,
    ReduceSumSquare: false,
);

/// The output type of `ArgMax`/`ArgMin`: int64 indices with the axis removed or kept as 1.
fn infer_arg(cx: &InferCx<'_>, axis: i64, keepdims: i64) -> Result<Vec<ValueType>, InferError> {
    numeric_dtype(cx, 0, false)?;
    let shape = match cx.dims(0)? {
        None => None,
        Some(dims) => {
            let ax = normalize_axis(axis, dims.len())?;
            let mut out = dims.to_vec();
            if keepdims != 0 {
                out[ax] = Dim::Known(1);
            } else {
                out.remove(ax);
            }
            Some(out)
        }
    };
    Ok(vec![
        TensorType {
            dtype: DType::I64,
            shape,
        }
        .into(),
    ])
}

impl InferOp for ArgMax {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_arg(cx, self.axis, self.keepdims)
    }
}

impl InferOp for ArgMin {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_arg(cx, self.axis, self.keepdims)
    }
}

/// `CumSum`/`CumProd`: the input's type; the axis input must be an integer scalar.
fn infer_cumulative(cx: &InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
    numeric_dtype(cx, 0, false)?;
    let axis = cx.tensor(1)?;
    if !matches!(axis.dtype, DType::I64 | DType::I32) {
        infer_bail!("axis must be int32 or int64, got {}", axis.dtype);
    }
    if let (Some(rank), Some(a)) = (cx.tensor(0)?.rank(), const_scalar(cx, 1)) {
        normalize_axis(a, rank)?;
    }
    Ok(vec![cx.value(0)?.clone()])
}

impl InferOp for CumSum {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_cumulative(cx)
    }
}

impl InferOp for CumProd {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_cumulative(cx)
    }
}

impl InferOp for TopK {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = numeric_dtype(cx, 0, false)?;
        cx.expect_dtype(1, &[DType::I64])?;
        let k = const_scalar(cx, 1);
        let shape = match cx.dims(0)?.map(|d| d.to_vec()) {
            None => None,
            Some(mut dims) => {
                let ax = normalize_axis(self.axis, dims.len())?;
                if let (Some(k), Some(n)) = (k, dims[ax].known())
                    && (k < 0 || k as usize > n)
                {
                    infer_bail!("k = {k} is out of range for an axis of size {n}");
                }
                dims[ax] = dim_or_fresh(cx, k, "topk")?;
                Some(dims)
            }
        };
        Ok(vec![
            TensorType {
                dtype,
                shape: shape.clone(),
            }
            .into(),
            TensorType {
                dtype: DType::I64,
                shape,
            }
            .into(),
        ])
    }
}

impl InferOp for NonMaxSuppression {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        float_dtype(cx, 0)?;
        float_dtype(cx, 1)?;
        if let Some(d) = cx.dims(0)?
            && d.len() != 3
        {
            infer_bail!("boxes must have rank 3, got {}", d.len());
        }
        if let Some(d) = cx.dims(1)?
            && d.len() != 3
        {
            infer_bail!("scores must have rank 3, got {}", d.len());
        }
        let n = cx.fresh("nms");
        Ok(vec![TensorType::new(DType::I64, [n, Dim::Known(3)]).into()])
    }
}

impl InferOp for Det {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_dtype(cx, 0)?;
        let shape = match cx.dims(0)? {
            None => None,
            Some(d) if d.len() < 2 => infer_bail!("Det needs rank >= 2, got {}", d.len()),
            Some(d) => {
                let (m, n) = (&d[d.len() - 2], &d[d.len() - 1]);
                if let (Some(m), Some(n)) = (m.known(), n.known())
                    && m != n
                {
                    infer_bail!("Det needs square matrices, got {m}x{n}");
                }
                Some(d[..d.len() - 2].to_vec())
            }
        };
        Ok(vec![TensorType { dtype, shape }.into()])
    }
}

impl InferOp for DFT {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_dtype(cx, 0)?;
        let Some(dims) = cx.dims(0)?.map(|d| d.to_vec()) else {
            return Ok(vec![TensorType::unranked(dtype).into()]);
        };
        let rank = dims.len();
        if rank < 2 {
            infer_bail!(
                "DFT needs rank >= 2 (the last dim holds real/imaginary parts), got {rank}"
            );
        }
        if let Some(c) = dims[rank - 1].known()
            && c != 1
            && c != 2
        {
            infer_bail!("the last dim of a DFT input must be 1 or 2, got {c}");
        }
        let axis = if cx.has_input(2) {
            const_scalar(cx, 2)
        } else {
            Some(-2)
        };
        let length = if cx.has_input(1) {
            match const_scalar(cx, 1) {
                Some(n) if n < 1 => infer_bail!("dft_length must be positive, got {n}"),
                Some(n) => Some(Some(n as usize)),
                None => None,
            }
        } else {
            Some(None)
        };
        let inverse = self.inverse != 0;
        let onesided = self.onesided != 0;
        let mut out = dims.clone();
        out[rank - 1] = Dim::Known(if inverse && onesided { 1 } else { 2 });
        match axis {
            Some(a) => {
                let ax = normalize_axis(a, rank)?;
                if ax == rank - 1 {
                    infer_bail!("the DFT axis cannot be the last (real/imaginary) dim");
                }
                let n_in = dims[ax].known();
                let n = match length {
                    Some(Some(n)) => Some(n),
                    Some(None) if inverse && onesided => {
                        n_in.map(|m| m.saturating_sub(1).saturating_mul(2))
                    }
                    Some(None) => n_in,
                    None => None,
                };
                out[ax] = match n {
                    Some(n) if onesided && !inverse => Dim::Known(n / 2 + 1),
                    Some(n) => Dim::Known(n),
                    None => cx.fresh("dft"),
                };
            }
            None => {
                for d in out.iter_mut().take(rank - 1) {
                    *d = cx.fresh("dft");
                }
            }
        }
        Ok(vec![TensorType::new(dtype, out).into()])
    }
}

impl InferOp for STFT {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_dtype(cx, 0)?;
        let dims = cx.dims(0)?.map(|d| d.to_vec());
        if let Some(d) = &dims
            && d.len() != 3
        {
            infer_bail!(
                "the STFT signal must be [batch, length, 1 or 2], got rank {}",
                d.len()
            );
        }
        let step = const_scalar(cx, 1);
        let window_len = match cx.opt_tensor(2)? {
            Some(w) => match w.shape.as_deref() {
                Some([d]) => d.known(),
                Some(s) => infer_bail!("the window must have rank 1, got {}", s.len()),
                None => None,
            },
            None => None,
        };
        let frame_length = if cx.has_input(3) {
            const_scalar(cx, 3).map(|v| v.max(0) as usize)
        } else if cx.has_input(2) {
            window_len
        } else {
            dims.as_ref().and_then(|d| d[1].known())
        };
        let length = dims.as_ref().and_then(|d| d[1].known());
        let frames = match (length, frame_length, step) {
            (Some(l), Some(f), Some(s)) if s > 0 && l >= f => Dim::Known(1 + (l - f) / s as usize),
            (Some(l), Some(f), Some(s)) if s > 0 => {
                infer_bail!("frame length {f} is longer than the signal ({l})")
            }
            (_, _, Some(s)) if s <= 0 => infer_bail!("frame_step must be positive, got {s}"),
            _ => cx.fresh("stft_frames"),
        };
        let bins = match frame_length {
            Some(f) if self.onesided != 0 => Dim::Known(f / 2 + 1),
            Some(f) => Dim::Known(f),
            None => cx.fresh("stft_bins"),
        };
        let batch = match &dims {
            Some(d) => d[0].clone(),
            None => cx.fresh("batch"),
        };
        Ok(vec![
            TensorType::new(dtype, [batch, frames, bins, Dim::Known(2)]).into(),
        ])
    }
}

/// The output dtype named by an `output_datatype` attribute.
fn output_datatype(code: i64) -> Result<DType, InferError> {
    match DType::from_onnx_code(code) {
        Some(d) if !d.is_bits() && (d.is_float() || d.is_int()) => Ok(d),
        _ => infer_bail!("output_datatype {code} is not a numeric type"),
    }
}

/// `HannWindow`/`HammingWindow`/`BlackmanWindow`: a vector of `size` elements.
fn infer_window(cx: &mut InferCx<'_>, datatype: i64) -> Result<Vec<ValueType>, InferError> {
    let dtype = output_datatype(datatype)?;
    cx.expect_dtype(0, &[DType::I32, DType::I64])?;
    let n = dim_or_fresh(cx, const_scalar(cx, 0), "window")?;
    Ok(vec![TensorType::new(dtype, [n]).into()])
}

impl InferOp for HannWindow {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_window(cx, self.output_datatype)
    }
}

impl InferOp for HammingWindow {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_window(cx, self.output_datatype)
    }
}

impl InferOp for BlackmanWindow {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_window(cx, self.output_datatype)
    }
}

impl InferOp for MelWeightMatrix {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = output_datatype(self.output_datatype)?;
        for i in 0..5 {
            cx.tensor(i)?;
        }
        let bins = const_scalar(cx, 1).map(|n| n.max(0) / 2 + 1);
        let bins = dim_or_fresh(cx, bins, "mel_spectrogram_bins")?;
        let mels = dim_or_fresh(cx, const_scalar(cx, 0), "mel_bins")?;
        Ok(vec![TensorType::new(dtype, [bins, mels]).into()])
    }
}

/// `NegativeLogLikelihoodLoss`/`SoftmaxCrossEntropyLoss`: the loss (the target's shape for `reduction="none"`, a
/// scalar otherwise) and, for the latter, the log-probabilities (the input's type).
fn infer_loss(cx: &InferCx<'_>, reduction: &str) -> Result<Vec<ValueType>, InferError> {
    let dtype = float_dtype(cx, 0)?;
    let target = cx.tensor(1)?;
    if !matches!(target.dtype, DType::I32 | DType::I64) {
        infer_bail!("the target must be int32 or int64, got {}", target.dtype);
    }
    if let Some(d) = cx.dims(0)? {
        if d.len() < 2 {
            infer_bail!("the input must be [N, C, ...], got rank {}", d.len());
        }
        if let Some(t) = &target.shape
            && t.len() + 1 != d.len()
        {
            infer_bail!("the target must have rank {}, got {}", d.len() - 1, t.len());
        }
    }
    if cx.has_input(2) && cx.tensor(2)?.dtype != dtype {
        infer_bail!("the weights must have the input's dtype {dtype}");
    }
    let loss = match reduction {
        "none" => TensorType {
            dtype,
            shape: match &target.shape {
                Some(t) => Some(t.clone()),
                None => cx.dims(0)?.map(|d| {
                    let mut t = d.to_vec();
                    t.remove(1);
                    t
                }),
            },
        },
        "mean" | "sum" => TensorType::new(dtype, []),
        other => infer_bail!("unknown reduction `{other}`"),
    };
    let mut out = vec![loss.into()];
    if cx.num_outputs > 1 {
        out.push(
            TensorType {
                dtype,
                shape: cx.tensor(0)?.shape.clone(),
            }
            .into(),
        );
    }
    Ok(out)
}

impl InferOp for NegativeLogLikelihoodLoss {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_loss(cx, &self.reduction)
    }
}

impl InferOp for SoftmaxCrossEntropyLoss {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_loss(cx, &self.reduction)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::infer::test_util::infer_types;
    use crate::{Op, Tensor};

    /// One input of a test: its type and, optionally, its constant value.
    struct In(TensorType, Option<Tensor>);

    fn t(dtype: DType, dims: &[usize]) -> In {
        In(TensorType::known(dtype, dims), None)
    }

    fn c(value: Tensor) -> In {
        In(TensorType::known(value.dtype(), value.shape()), Some(value))
    }

    /// Runs inference and prints the output types (or the error) on one line.
    fn check(op: impl Into<Op>, inputs: Vec<Option<In>>, num_outputs: usize) -> String {
        let types: Vec<Option<TensorType>> = inputs
            .iter()
            .map(|i| i.as_ref().map(|i| i.0.clone()))
            .collect();
        let consts: Vec<Option<Tensor>> = inputs
            .iter()
            .map(|i| i.as_ref().and_then(|i| i.1.clone()))
            .collect();
        infer_types(op, &types, &consts, num_outputs)
    }

    fn axes(a: Vec<i64>) -> Option<In> {
        Some(c(Tensor::vector(a)))
    }

    #[test]
    fn reductions_with_constant_axes_are_exact() {
        let x = || Some(t(DType::F32, &[3, 4, 5]));
        let sum = |keepdims, noop| ReduceSum {
            keepdims,
            noop_with_empty_axes: noop,
        };
        assert_eq!(check(sum(1, 0), vec![x(), axes(vec![1])], 1), "f32[3,1,5]");
        assert_eq!(check(sum(0, 0), vec![x(), axes(vec![-1, 0])], 1), "f32[4]");
        assert_eq!(check(sum(0, 0), vec![x()], 1), "f32[]");
        assert_eq!(check(sum(1, 0), vec![x(), axes(vec![])], 1), "f32[1,1,1]");
        assert_eq!(check(sum(1, 1), vec![x(), axes(vec![])], 1), "f32[3,4,5]");
        assert_eq!(
            check(sum(1, 0), vec![x(), axes(vec![3])], 1),
            "error: axis 3 is out of range for rank 3"
        );
        assert_eq!(
            check(sum(1, 0), vec![x(), axes(vec![1, -2])], 1),
            "error: axis 1 is listed twice"
        );
        let max = ReduceMax {
            keepdims: 0,
            noop_with_empty_axes: 0,
        };
        assert_eq!(
            check(max, vec![Some(t(DType::Bool, &[4, 2])), axes(vec![1])], 1),
            "bool[4]"
        );
        let mean = ReduceMean {
            keepdims: 0,
            noop_with_empty_axes: 0,
        };
        assert_eq!(
            check(mean, vec![Some(t(DType::Bool, &[4, 2]))], 1),
            "error: input 0 has dtype bool, expected a numeric type"
        );
    }

    #[test]
    fn reductions_with_unknown_axes_keep_what_they_can() {
        let x = || Some(t(DType::F32, &[3, 1, 5]));
        let op = |keepdims| ReduceL2 {
            keepdims,
            noop_with_empty_axes: 0,
        };
        let dynamic = |n| Some(t(DType::I64, &[n]));
        assert_eq!(
            check(op(1), vec![x(), dynamic(2)], 1),
            "f32[reduce_0,1,reduce_1]"
        );
        assert_eq!(check(op(0), vec![x(), dynamic(2)], 1), "f32[reduce_0]");
        assert_eq!(check(op(0), vec![x(), dynamic(0)], 1), "f32[]");
        let unranked = Some(In(TensorType::unranked(DType::I64), None));
        assert_eq!(check(op(0), vec![x(), unranked], 1), "f32[*]");
    }

    #[test]
    fn arg_and_cumulative_ops() {
        let x = || Some(t(DType::F32, &[2, 3, 4]));
        let argmax = |axis, keepdims| ArgMax {
            axis,
            keepdims,
            select_last_index: 0,
        };
        assert_eq!(check(argmax(1, 1), vec![x()], 1), "i64[2,1,4]");
        assert_eq!(check(argmax(-1, 0), vec![x()], 1), "i64[2,3]");
        let axis = Some(c(Tensor::scalar(1i32)));
        assert_eq!(check(CumSum::default(), vec![x(), axis], 1), "f32[2,3,4]");
        let axis = Some(c(Tensor::scalar(3i64)));
        assert_eq!(
            check(CumProd::default(), vec![x(), axis], 1),
            "error: axis 3 is out of range for rank 3"
        );
    }

    #[test]
    fn topk_and_nms() {
        let x = || Some(t(DType::F32, &[3, 4]));
        let k = |k: i64| Some(c(Tensor::vector(vec![k])));
        assert_eq!(
            check(TopK::default(), vec![x(), k(3)], 2),
            "f32[3,3], i64[3,3]"
        );
        assert_eq!(
            check(TopK::default(), vec![x(), k(5)], 2),
            "error: k = 5 is out of range for an axis of size 4"
        );
        let dynamic_k = Some(t(DType::I64, &[1]));
        assert_eq!(
            check(TopK::default(), vec![x(), dynamic_k], 2),
            "f32[3,topk_0], i64[3,topk_0]"
        );
        let nms = check(
            NonMaxSuppression::default(),
            vec![
                Some(t(DType::F32, &[1, 6, 4])),
                Some(t(DType::F32, &[1, 1, 6])),
            ],
            1,
        );
        assert_eq!(nms, "i64[nms_0,3]");
    }

    #[test]
    fn linear_algebra_and_signals() {
        assert_eq!(
            check(Det::default(), vec![Some(t(DType::F32, &[3, 2, 2]))], 1),
            "f32[3]"
        );
        let x = || Some(t(DType::F32, &[1, 10, 10, 1]));
        let axis = |a: i64| Some(c(Tensor::scalar(a)));
        assert_eq!(
            check(DFT::default(), vec![x(), None, axis(1)], 1),
            "f32[1,10,10,2]"
        );
        let rfft = DFT {
            inverse: 0,
            onesided: 1,
        };
        assert_eq!(check(rfft, vec![x(), None, axis(1)], 1), "f32[1,6,10,2]");
        let irfft = DFT {
            inverse: 1,
            onesided: 1,
        };
        let spectrum = Some(t(DType::F32, &[1, 6, 10, 2]));
        assert_eq!(
            check(irfft, vec![spectrum, None, axis(1)], 1),
            "f32[1,10,10,1]"
        );
        let stft = check(
            STFT::default(),
            vec![
                Some(t(DType::F32, &[1, 128, 1])),
                Some(c(Tensor::scalar(8i64))),
                None,
                Some(c(Tensor::scalar(16i64))),
            ],
            1,
        );
        assert_eq!(stft, "f32[1,15,9,2]");
        let size = Some(c(Tensor::scalar(10i32)));
        assert_eq!(check(HannWindow::default(), vec![size], 1), "f32[10]");
        let mel = check(
            MelWeightMatrix::default(),
            vec![
                Some(c(Tensor::scalar(8i32))),
                Some(c(Tensor::scalar(16i32))),
                Some(c(Tensor::scalar(8192i32))),
                Some(c(Tensor::scalar(0f32))),
                Some(c(Tensor::scalar(4096f32))),
            ],
            1,
        );
        assert_eq!(mel, "f32[9,8]");
    }

    #[test]
    fn losses() {
        let x = || Some(t(DType::F32, &[3, 5, 2]));
        let target = || Some(t(DType::I64, &[3, 2]));
        let none = SoftmaxCrossEntropyLoss {
            ignore_index: None,
            reduction: "none".into(),
        };
        assert_eq!(check(none, vec![x(), target()], 2), "f32[3,2], f32[3,5,2]");
        assert_eq!(
            check(NegativeLogLikelihoodLoss::default(), vec![x(), target()], 1),
            "f32[]"
        );
        let bad = NegativeLogLikelihoodLoss {
            ignore_index: None,
            reduction: "max".into(),
        };
        assert_eq!(
            check(bad, vec![x(), target()], 1),
            "error: unknown reduction `max`"
        );
    }
}
