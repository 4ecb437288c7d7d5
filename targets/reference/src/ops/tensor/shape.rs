//! Shape queries and ops that only reinterpret or broadcast a shape: `Shape`, `Size`, `Reshape`, `Flatten`,
//! `Squeeze`, `Unsqueeze`, `Expand`, `Identity`, `ConstantOfShape`, `EyeLike`.

use jiuzhou_ir::ops::*;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Tensor, Value};

use super::{axes, build, copy_runs, one, scalar_of, sizes, view};
use crate::kernels::{broadcast_shape, strides};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Clamps a `Shape` bound (negative counts from the end) to `0..=rank`.
fn clamp_bound(v: i64, rank: usize) -> usize {
    let r = rank as i64;
    let v = if v < 0 { v.saturating_add(r) } else { v };
    v.clamp(0, r) as usize
}

impl EvalOp for Shape {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        let start = clamp_bound(self.start, r);
        let end = clamp_bound(self.end.unwrap_or(r as i64), r).max(start);
        one(Tensor::vector(
            t.shape()[start..end].iter().map(|&d| d as i64).collect(),
        ))
    }
}

impl EvalOp for Size {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        one(Tensor::scalar(cx.tensor(0)?.len() as i64))
    }
}

impl EvalOp for Identity {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        Ok(vec![cx.value(0)?.clone()])
    }
}

/// The same elements as `t` under `shape` (which must hold as many).
fn reshaped(t: &Tensor, shape: Vec<usize>) -> Result<Vec<Value>, EvalError> {
    if checked_numel(&shape, t.dtype())? != t.len() {
        eval_bail!("cannot reshape {:?} into {:?}", t.shape(), shape);
    }
    one(t.clone().reshape(shape)?)
}

impl EvalOp for Reshape {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let target = cx.ints(1)?;
        let mut out = Vec::with_capacity(target.len());
        let mut infer_at = None;
        for (i, &s) in target.iter().enumerate() {
            match s {
                -1 => {
                    if infer_at.replace(i).is_some() {
                        eval_bail!("the target shape has more than one -1");
                    }
                    out.push(1);
                }
                0 if self.allowzero == 0 => match t.shape().get(i) {
                    Some(&d) => out.push(d),
                    None => eval_bail!(
                        "target entry {i} is 0 (copy) but the input has rank {}",
                        t.rank()
                    ),
                },
                s if s < 0 => eval_bail!("the target shape has negative entry {s}"),
                s => out.push(
                    usize::try_from(s).map_err(|_| EvalError::new("target entry too large"))?,
                ),
            }
        }
        if let Some(at) = infer_at {
            let rest = checked_numel(&out, t.dtype())?;
            if rest == 0 || t.len() % rest != 0 {
                eval_bail!(
                    "cannot reshape {:?} into {target:?}: the -1 entry has no integer size",
                    t.shape()
                );
            }
            out[at] = t.len() / rest;
        }
        reshaped(t, out)
    }
}

impl EvalOp for Flatten {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank() as i64;
        if self.axis < -r || self.axis > r {
            eval_bail!("axis {} is out of range for rank {r}", self.axis);
        }
        let axis = if self.axis < 0 {
            self.axis + r
        } else {
            self.axis
        } as usize;
        let outer: usize = t.shape()[..axis].iter().product();
        let inner: usize = t.shape()[axis..].iter().product();
        reshaped(t, vec![outer, inner])
    }
}

impl EvalOp for Squeeze {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let dims = t.shape();
        let drop = match cx.opt_ints(1)? {
            Some(a) => {
                let a = axes(&a, dims.len())?;
                if let Some(&bad) = a.iter().find(|&&i| dims[i] != 1) {
                    eval_bail!("cannot squeeze axis {bad} of size {}", dims[bad]);
                }
                a
            }
            None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
        };
        let out = (0..dims.len())
            .filter(|i| !drop.contains(i))
            .map(|i| dims[i])
            .collect();
        reshaped(t, out)
    }
}

impl EvalOp for Unsqueeze {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let a = cx.ints(1)?;
        let rank = t.rank() + a.len();
        let a = axes(&a, rank)?;
        let mut rest = t.shape().iter();
        let out = (0..rank)
            .map(|i| {
                if a.contains(&i) {
                    1
                } else {
                    rest.next().copied().unwrap_or(1)
                }
            })
            .collect();
        reshaped(t, out)
    }
}

/// Broadcasts `t` to `shape` (which `t`'s shape must broadcast to), copying elements.
pub(crate) fn broadcast(t: &Tensor, shape: Vec<usize>) -> Result<Tensor, EvalError> {
    let off = shape.len() - t.rank();
    let st = strides(t.shape());
    let steps: Vec<isize> = (0..shape.len())
        .map(|i| {
            if i < off || t.shape()[i - off] == 1 {
                0
            } else {
                st[i - off] as isize
            }
        })
        .collect();
    view(t, shape, &steps, 0)
}

impl EvalOp for Expand {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let target = sizes(&cx.ints(1)?, "the shape")?;
        let shape = broadcast_shape(&[t.shape(), &target])?;
        one(broadcast(t, shape)?)
    }
}

impl EvalOp for ConstantOfShape {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let shape = sizes(&cx.ints(0)?, "the shape")?;
        let value = match &self.value {
            Some(v) if v.len() == 1 => v.as_ref().clone().reshape(vec![])?,
            Some(v) => eval_bail!("`value` should hold one element, it holds {}", v.len()),
            None => Tensor::scalar(0f32),
        };
        let n = checked_numel(&shape, value.dtype())?;
        one(copy_runs(&[&value], shape, (0..n).map(|_| (0, 0, 1)))?)
    }
}

impl EvalOp for EyeLike {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let dtype = match self.dtype {
            Some(code) => DType::from_onnx_code(code)
                .ok_or_else(|| EvalError::new(format!("unknown dtype code {code}")))?,
            None => t.dtype(),
        };
        if t.rank() != 2 {
            eval_bail!("EyeLike takes a rank-2 input, got rank {}", t.rank());
        }
        let zero = Tensor::zeros(dtype, vec![])?;
        let one_ = scalar_of(dtype, 1.0)?;
        let k = self.k;
        let out = build(&[&zero, &one_], t.shape().to_vec(), |i| {
            let on = i[1] as i64 - i[0] as i64 == k;
            Ok((on as usize, 0))
        })?;
        one(out)
    }
}
