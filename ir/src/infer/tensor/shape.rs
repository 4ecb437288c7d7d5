//! Shape queries and ops that only reinterpret or broadcast a shape: `Shape`, `Size`, `Reshape`, `Flatten`,
//! `Squeeze`, `Unsqueeze`, `Expand`, `Identity`, `ConstantOfShape`, `EyeLike`.

use super::{known_dims, normalize_axes, product, tensor, unranked, vector_len};
use crate::infer::{InferCx, InferError, InferOp};
use crate::ops::*;
use crate::{DType, Dim, ValueType, infer_bail};

/// Clamps a `Shape`-style bound (negative counts from the end) to `0..=rank`.
pub(crate) fn clamp_bound(v: i64, rank: usize) -> usize {
    let r = rank as i64;
    let v = if v < 0 { v.saturating_add(r) } else { v };
    v.clamp(0, r) as usize
}

impl InferOp for Shape {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let n = match cx.dims(0)? {
            Some(dims) => {
                let r = dims.len();
                let start = clamp_bound(self.start, r);
                let end = clamp_bound(self.end.unwrap_or(r as i64), r);
                Dim::Known(end.saturating_sub(start))
            }
            None => cx.fresh("rank"),
        };
        Ok(vec![tensor(DType::I64, vec![n])])
    }
}

impl InferOp for Size {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.tensor(0)?;
        Ok(vec![tensor(DType::I64, vec![])])
    }
}

impl InferOp for Identity {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        Ok(vec![cx.value(0)?.clone()])
    }
}

/// The dims a `Reshape` to `target` gives for an input with dims `input` (unknown rank: `None`).
fn reshape_dims(
    cx: &mut InferCx<'_>,
    input: Option<&[Dim]>,
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<Dim>, InferError> {
    let mut out: Vec<Option<Dim>> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &s) in target.iter().enumerate() {
        match s {
            -1 => {
                if infer_at.replace(i).is_some() {
                    infer_bail!("the target shape has more than one -1");
                }
                out.push(None);
            }
            0 if !allowzero => match input {
                Some(dims) => match dims.get(i) {
                    Some(d) => out.push(Some(d.clone())),
                    None => infer_bail!(
                        "target entry {i} is 0 (copy) but the input has rank {}",
                        dims.len()
                    ),
                },
                None => out.push(Some(cx.fresh("reshape"))),
            },
            s if s < 0 => infer_bail!("the target shape has negative entry {s}"),
            s => out.push(Some(Dim::Known(s as usize))),
        }
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        infer_bail!("with allowzero, a target shape cannot hold both 0 and -1");
    }
    let Some(at) = infer_at else {
        let dims: Vec<Dim> = out.into_iter().flatten().collect();
        check_count(input, &dims)?;
        return Ok(dims);
    };
    let known: Vec<Dim> = out.iter().flatten().cloned().collect();
    let inferred = match input {
        Some(dims) => infer_minus_one(cx, dims, &known)?,
        None => cx.fresh("reshape"),
    };
    out[at] = Some(inferred);
    Ok(out.into_iter().flatten().collect())
}

/// Checks that known element counts agree.
fn check_count(input: Option<&[Dim]>, out: &[Dim]) -> Result<(), InferError> {
    let count = |d: &[Dim]| -> Option<u128> {
        d.iter()
            .map(|d| d.known().map(|n| n as u128))
            .try_fold(1u128, |a, b| b.map(|b| a.saturating_mul(b)))
    };
    if let (Some(a), Some(b)) = (input.and_then(count), count(out))
        && a != b
    {
        infer_bail!("cannot reshape {a} elements into {b}");
    }
    Ok(())
}

/// The size of the `-1` entry: the input's element count divided by the other entries, cancelling symbols that
/// appear on both sides.
fn infer_minus_one(cx: &mut InferCx<'_>, input: &[Dim], others: &[Dim]) -> Result<Dim, InferError> {
    let mut syms: Vec<&str> = Vec::new();
    let mut num: u128 = 1;
    for d in input {
        match d {
            Dim::Known(n) => num = num.saturating_mul(*n as u128),
            Dim::Sym(s) => syms.push(s),
        }
    }
    let mut den: u128 = 1;
    let mut unmatched = false;
    for d in others {
        match d {
            Dim::Known(n) => den = den.saturating_mul(*n as u128),
            Dim::Sym(s) => match syms.iter().position(|x| x == s) {
                Some(p) => {
                    syms.remove(p);
                }
                None => unmatched = true,
            },
        }
    }
    if unmatched {
        return Ok(cx.fresh("reshape"));
    }
    if den == 0 {
        if syms.is_empty() && num == 0 {
            infer_bail!("cannot infer a -1 entry when the other entries hold 0 elements");
        }
        return Ok(cx.fresh("reshape"));
    }
    if syms.is_empty() {
        if !num.is_multiple_of(den) {
            infer_bail!("cannot reshape {num} elements into a multiple of {den}");
        }
        return Ok(Dim::Known((num / den) as usize));
    }
    if syms.len() == 1 && num == den {
        return Ok(Dim::Sym(syms[0].to_string()));
    }
    Ok(cx.fresh("reshape"))
}

impl InferOp for Reshape {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let data = cx.tensor(0)?;
        super::expect_int(cx, 1, "shape")?;
        let dtype = data.dtype;
        let input = data.shape.as_deref();
        if let Some(target) = cx.const_ints(1) {
            let dims = reshape_dims(cx, input, &target, self.allowzero != 0)?;
            return Ok(vec![tensor(dtype, dims)]);
        }
        Ok(vec![match vector_len(cx, 1)? {
            Some(n) => tensor(dtype, (0..n).map(|_| cx.fresh("reshape")).collect()),
            None => unranked(dtype),
        }])
    }
}

impl InferOp for Flatten {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let Some(dims) = t.shape.as_deref() else {
            let (a, b) = (cx.fresh("flatten"), cx.fresh("flatten"));
            return Ok(vec![tensor(dtype, vec![a, b])]);
        };
        let r = dims.len() as i64;
        if self.axis < -r || self.axis > r {
            infer_bail!("axis {} is out of range for rank {r}", self.axis);
        }
        let axis = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        } as usize;
        let outer = product(cx, &dims[..axis], "flatten");
        let inner = product(cx, &dims[axis..], "flatten");
        Ok(vec![tensor(dtype, vec![outer, inner])])
    }
}

impl InferOp for Squeeze {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let Some(dims) = t.shape.as_deref() else {
            return Ok(vec![unranked(dtype)]);
        };
        if !cx.has_input(1) {
            if dims.iter().any(|d| matches!(d, Dim::Sym(_))) {
                // A symbol may be 1 at run time: even the rank is unknown.
                return Ok(vec![unranked(dtype)]);
            }
            let out = dims
                .iter()
                .filter(|d| **d != Dim::Known(1))
                .cloned()
                .collect();
            return Ok(vec![tensor(dtype, out)]);
        }
        super::expect_int(cx, 1, "axes")?;
        let Some(axes) = cx.const_ints(1) else {
            return Ok(vec![match vector_len(cx, 1)? {
                Some(n) if n <= dims.len() => tensor(
                    dtype,
                    (0..dims.len() - n).map(|_| cx.fresh("squeeze")).collect(),
                ),
                _ => unranked(dtype),
            }]);
        };
        let axes = normalize_axes(&axes, dims.len())?;
        for &a in &axes {
            if let Dim::Known(n) = dims[a]
                && n != 1
            {
                infer_bail!("cannot squeeze axis {a} of size {n}");
            }
        }
        let out = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Unsqueeze {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        super::expect_int(cx, 1, "axes")?;
        let Some(dims) = t.shape.as_deref() else {
            return Ok(vec![unranked(dtype)]);
        };
        let Some(axes) = cx.const_ints(1) else {
            return Ok(vec![match vector_len(cx, 1)? {
                Some(n) => tensor(
                    dtype,
                    (0..dims.len() + n).map(|_| cx.fresh("unsqueeze")).collect(),
                ),
                None => unranked(dtype),
            }]);
        };
        let rank = dims.len() + axes.len();
        let axes = normalize_axes(&axes, rank)?;
        let mut rest = dims.iter();
        let out = (0..rank)
            .map(|i| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    rest.next().cloned().unwrap_or(Dim::Known(1))
                }
            })
            .collect();
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Expand {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        super::expect_int(cx, 1, "shape")?;
        if let Some(shape) = cx.const_ints(1) {
            let target = Some(known_dims(&shape, "the shape")?);
            let out = crate::infer::broadcast_shapes(&[&t.shape, &target])?;
            return Ok(vec![ValueType::Tensor(crate::TensorType {
                dtype,
                shape: out,
            })]);
        }
        let (Some(dims), Some(n)) = (t.shape.as_deref(), vector_len(cx, 1)?) else {
            return Ok(vec![unranked(dtype)]);
        };
        let rank = dims.len().max(n);
        let off = rank - dims.len();
        let out = (0..rank)
            .map(|i| match i.checked_sub(off).map(|j| &dims[j]) {
                // The target may only be 1 or the same size where the input is more than 1.
                Some(Dim::Known(k)) if *k > 1 => Dim::Known(*k),
                _ => cx.fresh("expand"),
            })
            .collect();
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for ConstantOfShape {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        super::expect_int(cx, 0, "shape")?;
        let dtype = self.value.as_ref().map_or(DType::F32, |v| v.dtype());
        if let Some(v) = &self.value
            && v.len() != 1
        {
            infer_bail!("`value` should hold one element, it holds {}", v.len());
        }
        if let Some(shape) = cx.const_ints(0) {
            return Ok(vec![tensor(dtype, known_dims(&shape, "the shape")?)]);
        }
        Ok(vec![match vector_len(cx, 0)? {
            Some(n) => tensor(dtype, (0..n).map(|_| cx.fresh("constant")).collect()),
            None => unranked(dtype),
        }])
    }
}

impl InferOp for EyeLike {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = match self.dtype {
            Some(code) => DType::from_onnx_code(code)
                .ok_or_else(|| InferError::new(format!("unknown dtype code {code}")))?,
            None => t.dtype,
        };
        if let Some(r) = t.rank()
            && r != 2
        {
            infer_bail!("EyeLike takes a rank-2 input, got rank {r}");
        }
        Ok(vec![ValueType::Tensor(crate::TensorType {
            dtype,
            shape: t.shape.clone(),
        })])
    }
}
