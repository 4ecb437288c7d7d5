//! Ops that choose elements by data: `Gather`, `GatherElements`, `GatherND`, `ScatterElements`, `ScatterND`,
//! `TensorScatter`, `OneHot`, `Compress`, `NonZero`, `Unique`, `Range`.

use super::{expect_int, product, tensor, unify, unranked};
use crate::infer::{InferCx, InferError, InferOp, normalize_axis};
use crate::ops::*;
use crate::{DType, Dim, ValueType, infer_bail};

impl InferOp for Gather {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let data = cx.tensor(0)?;
        let indices = cx.tensor(1)?;
        expect_int(cx, 1, "indices")?;
        let (Some(d), Some(i)) = (data.shape.as_deref(), indices.shape.as_deref()) else {
            return Ok(vec![unranked(data.dtype)]);
        };
        let axis = normalize_axis(self.axis, d.len())?;
        let mut out = d[..axis].to_vec();
        out.extend_from_slice(i);
        out.extend_from_slice(&d[axis + 1..]);
        Ok(vec![tensor(data.dtype, out)])
    }
}

impl InferOp for GatherElements {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let data = cx.tensor(0)?;
        let indices = cx.tensor(1)?;
        expect_int(cx, 1, "indices")?;
        if let (Some(d), Some(i)) = (data.rank(), indices.rank()) {
            if d != i {
                infer_bail!("data has rank {d} but indices rank {i}");
            }
            normalize_axis(self.axis, d)?;
        }
        Ok(vec![ValueType::Tensor(crate::TensorType {
            dtype: data.dtype,
            shape: indices.shape.clone(),
        })])
    }
}

impl InferOp for GatherND {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let data = cx.tensor(0)?;
        let indices = cx.tensor(1)?;
        expect_int(cx, 1, "indices")?;
        let dtype = data.dtype;
        let (Some(d), Some(i)) = (data.shape.as_deref(), indices.shape.as_deref()) else {
            return Ok(vec![unranked(dtype)]);
        };
        let b = usize::try_from(self.batch_dims)
            .map_err(|_| InferError::new("batch_dims should not be negative"))?;
        let Some(last) = i.last() else {
            infer_bail!("indices should have rank >= 1");
        };
        if b >= i.len() || b >= d.len() {
            infer_bail!(
                "batch_dims {b} is too large for ranks {} and {}",
                d.len(),
                i.len()
            );
        }
        let Dim::Known(k) = *last else {
            return Ok(vec![unranked(dtype)]);
        };
        if b + k > d.len() {
            infer_bail!(
                "index tuples of length {k} do not fit data of rank {} after {b} batch dims",
                d.len()
            );
        }
        let mut out = Vec::new();
        for j in 0..b {
            out.push(unify(&d[j], &i[j], "batch dims")?);
        }
        out.extend_from_slice(&i[b..i.len() - 1]);
        out.extend_from_slice(&d[b + k..]);
        Ok(vec![tensor(dtype, out)])
    }
}

/// Checks a scatter reduction attribute.
fn check_reduction(r: &str) -> Result<(), InferError> {
    match r {
        "none" | "add" | "mul" | "max" | "min" => Ok(()),
        r => Err(InferError::new(format!("unknown reduction `{r}`"))),
    }
}

/// The rule of the scatters: the output is the data input; updates must have its dtype.
fn scatter_like(cx: &InferCx<'_>, updates: usize) -> Result<Vec<ValueType>, InferError> {
    let data = cx.tensor(0)?;
    let u = cx.tensor(updates)?;
    if u.dtype != data.dtype {
        infer_bail!("updates have dtype {}, data has {}", u.dtype, data.dtype);
    }
    Ok(vec![ValueType::Tensor(data.clone())])
}

impl InferOp for ScatterElements {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        check_reduction(&self.reduction)?;
        expect_int(cx, 1, "indices")?;
        if let Some(r) = cx.tensor(0)?.rank() {
            normalize_axis(self.axis, r)?;
        }
        scatter_like(cx, 2)
    }
}

impl InferOp for ScatterND {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        check_reduction(&self.reduction)?;
        expect_int(cx, 1, "indices")?;
        scatter_like(cx, 2)
    }
}

impl InferOp for TensorScatter {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        if !matches!(self.mode.as_str(), "linear" | "circular") {
            infer_bail!("unknown mode `{}`", self.mode);
        }
        if cx.has_input(2) {
            expect_int(cx, 2, "write_indices")?;
        }
        if let Some(r) = cx.tensor(0)?.rank() {
            normalize_axis(self.axis, r)?;
        }
        scatter_like(cx, 1)
    }
}

impl InferOp for OneHot {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let indices = cx.tensor(0)?;
        cx.tensor(1)?;
        let dtype = cx.tensor(2)?.dtype;
        let Some(dims) = indices.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let r = dims.len() as i64;
        if self.axis < -r - 1 || self.axis > r {
            infer_bail!("axis {} is out of range for rank {}", self.axis, r + 1);
        }
        let axis = if self.axis < 0 {
            self.axis + r + 1
        } else {
            self.axis
        } as usize;
        let depth = match cx.const_tensor(1).and_then(|t| t.to_f64_vec()) {
            Some(v) if v.len() == 1 => {
                let d = v[0].trunc();
                if !(1.0..1e15).contains(&d) {
                    infer_bail!("depth {} should be a positive count", v[0]);
                }
                Dim::Known(d as usize)
            }
            _ => cx.fresh("depth"),
        };
        let mut out = dims;
        out.insert(axis, depth);
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Compress {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        cx.tensor(1)?;
        // With a constant condition the count is known.
        let count = cx
            .const_ints(1)
            .map(|c| Dim::Known(c.iter().filter(|&&x| x != 0).count()));
        let selected = match count {
            Some(c) => c,
            None => cx.fresh("compress"),
        };
        match self.axis {
            None => Ok(vec![tensor(dtype, vec![selected])]),
            Some(a) => {
                let Some(dims) = t.shape.clone() else {
                    return Ok(vec![unranked(dtype)]);
                };
                let a = normalize_axis(a, dims.len())?;
                let mut out = dims;
                out[a] = selected;
                Ok(vec![tensor(dtype, out)])
            }
        }
    }
}

impl InferOp for NonZero {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let rank = match cx.tensor(0)?.rank() {
            Some(r) => Dim::Known(r),
            None => cx.fresh("rank"),
        };
        let n = cx.fresh("nonzero");
        Ok(vec![tensor(DType::I64, vec![rank, n])])
    }
}

impl InferOp for Unique {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let dims = t.shape.clone();
        let u = cx.fresh("unique");
        let (y, inverse) = match (self.axis, &dims) {
            (None, Some(d)) => (tensor(dtype, vec![u.clone()]), product(cx, d, "numel")),
            (None, None) => (tensor(dtype, vec![u.clone()]), cx.fresh("numel")),
            (Some(a), Some(d)) => {
                let a = normalize_axis(a, d.len())?;
                let mut y = d.clone();
                y[a] = u.clone();
                (tensor(dtype, y), d[a].clone())
            }
            (Some(_), None) => (unranked(dtype), cx.fresh("unique_axis")),
        };
        let mut out = vec![
            y,
            tensor(DType::I64, vec![u.clone()]),
            tensor(DType::I64, vec![inverse]),
            tensor(DType::I64, vec![u]),
        ];
        out.truncate(cx.num_outputs.max(1));
        Ok(out)
    }
}

/// The number of elements of `Range(start, limit, delta)`, computed as numpy's `arange` does.
pub(crate) fn range_len(start: f64, limit: f64, delta: f64) -> Result<usize, InferError> {
    if delta == 0.0 {
        infer_bail!("Range delta is 0");
    }
    let n = ((limit - start) / delta).ceil();
    if n.is_nan() || n.is_infinite() {
        infer_bail!("Range({start}, {limit}, {delta}) has no finite length");
    }
    Ok(if n <= 0.0 { 0 } else { n as usize })
}

/// The length of an integer range, exactly.
pub(crate) fn range_len_int(start: i64, limit: i64, delta: i64) -> Result<usize, InferError> {
    if delta == 0 {
        infer_bail!("Range delta is 0");
    }
    let (span, d) = (limit as i128 - start as i128, delta as i128);
    let (span, d) = if d < 0 { (-span, -d) } else { (span, d) };
    let n = (span + d - 1).div_euclid(d);
    Ok(n.clamp(0, usize::MAX as i128) as usize)
}

impl InferOp for Range {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        for i in 1..3 {
            let d = cx.tensor(i)?.dtype;
            if d != dtype {
                infer_bail!("input {i} has dtype {d}, start has {dtype}");
            }
        }
        let scalar = |i: usize| -> Option<f64> {
            let v = cx.const_tensor(i)?.to_f64_vec()?;
            (v.len() == 1).then(|| v[0])
        };
        let n = if dtype.is_int() {
            let int = |i: usize| cx.const_ints(i).filter(|v| v.len() == 1).map(|v| v[0]);
            match (int(0), int(1), int(2)) {
                (Some(s), Some(l), Some(d)) => Some(range_len_int(s, l, d)?),
                _ => None,
            }
        } else {
            match (scalar(0), scalar(1), scalar(2)) {
                (Some(s), Some(l), Some(d)) => Some(range_len(s, l, d)?),
                _ => None,
            }
        };
        let n = match n {
            Some(n) => Dim::Known(n),
            None => cx.fresh("range"),
        };
        Ok(vec![tensor(dtype, vec![n])])
    }
}
