//! Sequences of tensors: construction, access, insertion and removal, splitting into and concatenating from.
//!
//! A run-time sequence carries a static element type (see [`Value::Sequence`]); the ops here keep it exact when
//! every element has one shape and fall back to "this dtype, any shape" otherwise.

use jiuzhou_ir::ops::{
    ConcatFromSequence, SequenceAt, SequenceConstruct, SequenceEmpty, SequenceErase,
    SequenceInsert, SequenceLength, SplitToSequence,
};
use jiuzhou_ir::{DType, Dim, Tensor, TensorType, Value, ValueType};

use super::layout::{concat, narrow, stack};
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The element type and items of sequence input `i`.
fn sequence<'a>(cx: &EvalCx<'a>, i: usize) -> Result<(&'a ValueType, &'a [Value]), EvalError> {
    match cx.value(i)? {
        Value::Sequence { elem, items } => Ok((elem, items)),
        _ => eval_bail!("input {i} should be a sequence"),
    }
}

/// Optional position input `i` resolved against a sequence of `len` items: negative positions count from the end;
/// the result lies in `0..len` (or `0..=len` if `end_ok`). `None` if the input is absent.
fn position(
    cx: &EvalCx<'_>,
    i: usize,
    len: usize,
    end_ok: bool,
) -> Result<Option<usize>, EvalError> {
    let Some(p) = cx.opt_ints(i)? else {
        return Ok(None);
    };
    let [p] = p[..] else {
        eval_bail!(
            "the position should be one integer, got {} of them",
            p.len()
        );
    };
    let n = len as i64;
    let max = if end_ok { n } else { n - 1 };
    if p < -n || p > max {
        eval_bail!("position {p} is out of range for a sequence of {len}");
    }
    Ok(Some(if p < 0 { (p + n) as usize } else { p as usize }))
}

/// Whether a tensor fits a static type: same dtype, and same rank and known dims where the shape is known.
fn fits(t: &Tensor, ty: &TensorType) -> bool {
    ty.dtype == t.dtype()
        && ty.shape.as_ref().is_none_or(|dims| {
            dims.len() == t.rank()
                && dims
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &s)| d.known().is_none_or(|k| k == s))
        })
}

/// The element type of a sequence of `tensors` (all of `dtype`): exact if they share one shape, else any shape.
fn element_type<'a>(dtype: DType, tensors: impl IntoIterator<Item = &'a Tensor>) -> ValueType {
    let mut shape: Option<&[usize]> = None;
    for t in tensors {
        match shape {
            None => shape = Some(t.shape()),
            Some(s) if s == t.shape() => {}
            Some(_) => return TensorType::unranked(dtype).into(),
        }
    }
    match shape {
        Some(s) => TensorType::known(dtype, s).into(),
        None => TensorType::unranked(dtype).into(),
    }
}

impl EvalOp for SequenceEmpty {
    fn eval(&self, _cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let code = self.dtype.unwrap_or(1);
        let Some(dtype) = DType::from_onnx_code(code) else {
            eval_bail!("dtype {code} is not a known data type");
        };
        Ok(vec![Value::Sequence {
            elem: TensorType::unranked(dtype).into(),
            items: vec![],
        }])
    }
}

impl EvalOp for SequenceConstruct {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let tensors = (0..cx.num_inputs())
            .map(|i| cx.tensor(i))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = tensors.first() else {
            eval_bail!("needs at least one input");
        };
        let dtype = first.dtype();
        if let Some(t) = tensors.iter().find(|t| t.dtype() != dtype) {
            eval_bail!("inputs have dtypes {dtype} and {}", t.dtype());
        }
        Ok(vec![Value::Sequence {
            elem: element_type(dtype, tensors.iter().map(|t| &***t)),
            items: tensors
                .into_iter()
                .map(|t| Value::Tensor(t.clone()))
                .collect(),
        }])
    }
}

impl EvalOp for SequenceAt {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (_, items) = sequence(cx, 0)?;
        let Some(p) = position(cx, 1, items.len(), false)? else {
            eval_bail!("the position is required");
        };
        Ok(vec![items[p].clone()])
    }
}

impl EvalOp for SequenceInsert {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (elem, items) = sequence(cx, 0)?;
        let t = cx.tensor(1)?;
        let elem = match elem {
            ValueType::Tensor(ty) if fits(t, ty) => elem.clone(),
            ValueType::Tensor(ty) if ty.dtype == t.dtype() => TensorType::unranked(ty.dtype).into(),
            _ => eval_bail!(
                "cannot insert a {} tensor into a sequence of {elem}",
                t.dtype()
            ),
        };
        let p = position(cx, 2, items.len(), true)?.unwrap_or(items.len());
        let mut items = items.to_vec();
        items.insert(p, Value::Tensor(t.clone()));
        Ok(vec![Value::Sequence { elem, items }])
    }
}

impl EvalOp for SequenceErase {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (elem, items) = sequence(cx, 0)?;
        let p = match position(cx, 1, items.len(), false)? {
            Some(p) => p,
            None if items.is_empty() => eval_bail!("cannot erase from an empty sequence"),
            None => items.len() - 1,
        };
        let mut items = items.to_vec();
        items.remove(p);
        Ok(vec![Value::Sequence {
            elem: elem.clone(),
            items,
        }])
    }
}

impl EvalOp for SequenceLength {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (_, items) = sequence(cx, 0)?;
        Ok(vec![Tensor::scalar(items.len() as i64).into()])
    }
}

impl EvalOp for SplitToSequence {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let axis = norm_axis(self.axis, x.rank())?;
        let dim = x.shape()[axis];
        let split = cx.opt_tensor(1)?;
        let sizes: Vec<usize> = match split {
            None => vec![1; dim],
            Some(s) => {
                let v = cx.ints(1)?;
                if s.rank() == 0 {
                    let chunk = match v[..] {
                        [c] if c > 0 => c as usize,
                        _ => eval_bail!("a scalar split should be positive, got {v:?}"),
                    };
                    let mut sizes = vec![chunk; dim / chunk];
                    if dim % chunk != 0 {
                        sizes.push(dim % chunk);
                    }
                    sizes
                } else {
                    let sizes = v
                        .iter()
                        .map(|&c| usize::try_from(c))
                        .collect::<Result<Vec<usize>, _>>()
                        .map_err(|_| {
                            EvalError::new(format!("split sizes {v:?} should not be negative"))
                        })?;
                    if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
                        eval_bail!("split sizes {v:?} do not add up to the axis size {dim}");
                    }
                    sizes
                }
            }
        };
        let drop_axis = split.is_none() && self.keepdims == 0;
        let mut pieces = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for len in sizes {
            pieces.push(narrow(x, axis, start, len, !drop_axis)?);
            start += len;
        }
        let elem = if pieces.is_empty() {
            // No pieces: the element type is still known from the input's shape.
            let mut dims: Vec<Dim> = x.shape().iter().map(|&d| Dim::Known(d)).collect();
            if drop_axis {
                dims.remove(axis);
            } else {
                dims[axis] = Dim::Known(1);
            }
            TensorType::new(x.dtype(), dims).into()
        } else {
            element_type(x.dtype(), &pieces)
        };
        Ok(vec![Value::Sequence {
            elem,
            items: pieces.into_iter().map(Value::from).collect(),
        }])
    }
}

impl EvalOp for ConcatFromSequence {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (_, items) = sequence(cx, 0)?;
        let tensors = items
            .iter()
            .map(|v| {
                v.as_tensor()
                    .map(|t| &**t)
                    .ok_or_else(|| EvalError::new("the sequence should hold tensors"))
            })
            .collect::<Result<Vec<&Tensor>, _>>()?;
        let Some(first) = tensors.first() else {
            eval_bail!("cannot concatenate an empty sequence");
        };
        let out = if self.new_axis != 0 {
            stack(&tensors, norm_axis(self.axis, first.rank() + 1)?)?
        } else {
            if first.rank() == 0 {
                eval_bail!("cannot concatenate scalars without new_axis");
            }
            concat(&tensors, norm_axis(self.axis, first.rank())?)?
        };
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::control::testutil::{ints, run, seq};

    fn three() -> Value {
        seq(vec![
            ints(&[2], &[1, 2]),
            ints(&[1], &[3]),
            ints(&[2], &[4, 5]),
        ])
    }

    fn pos(p: i64) -> Option<Value> {
        Some(Tensor::scalar(p).into())
    }

    #[test]
    fn construct_access_insert_erase() {
        assert_eq!(run(SequenceEmpty { dtype: Some(7) }, vec![], 1), "seq()");
        assert_eq!(
            run(
                SequenceConstruct {},
                vec![Some(ints(&[1], &[1])), Some(ints(&[], &[2]))],
                1
            ),
            "seq([1] [1]; [] [2])"
        );
        let f = Some(Value::from(Tensor::scalar(1.0f32)));
        assert!(run(SequenceConstruct {}, vec![Some(ints(&[1], &[1])), f], 1).starts_with("error"));
        let s = Some(three());
        assert_eq!(
            run(SequenceAt {}, vec![s.clone(), pos(-1)], 1),
            "[2] [4, 5]"
        );
        assert!(run(SequenceAt {}, vec![s.clone(), pos(3)], 1).starts_with("error"));
        assert_eq!(
            run(SequenceInsert {}, vec![s.clone(), Some(ints(&[], &[9]))], 1),
            "seq([2] [1, 2]; [1] [3]; [2] [4, 5]; [] [9])"
        );
        assert_eq!(
            run(
                SequenceInsert {},
                vec![s.clone(), Some(ints(&[], &[9])), Some(ints(&[1], &[0]))],
                1
            ),
            "seq([] [9]; [2] [1, 2]; [1] [3]; [2] [4, 5])"
        );
        assert!(
            run(
                SequenceInsert {},
                vec![s.clone(), Some(ints(&[], &[9])), pos(4)],
                1
            )
            .starts_with("error")
        );
        assert_eq!(
            run(SequenceErase {}, vec![s.clone()], 1),
            "seq([2] [1, 2]; [1] [3])"
        );
        assert_eq!(
            run(SequenceErase {}, vec![s.clone(), pos(0)], 1),
            "seq([1] [3]; [2] [4, 5])"
        );
        assert_eq!(run(SequenceLength {}, vec![s], 1), "[] [3]");
        let empty = Some(seq(vec![]));
        assert!(run(SequenceErase {}, vec![empty], 1).starts_with("error"));
    }

    #[test]
    fn split_and_concat() {
        let x = Some(ints(&[2, 3], &[1, 2, 3, 4, 5, 6]));
        let split = |axis, keepdims| SplitToSequence { axis, keepdims };
        assert_eq!(
            run(split(1, 1), vec![x.clone()], 1),
            "seq([2, 1] [1, 4]; [2, 1] [2, 5]; [2, 1] [3, 6])"
        );
        assert_eq!(
            run(split(0, 0), vec![x.clone()], 1),
            "seq([3] [1, 2, 3]; [3] [4, 5, 6])"
        );
        assert_eq!(
            run(split(1, 0), vec![x.clone(), Some(ints(&[], &[2]))], 1),
            "seq([2, 2] [1, 2, 4, 5]; [2, 1] [3, 6])"
        );
        assert_eq!(
            run(split(-1, 1), vec![x.clone(), Some(ints(&[2], &[0, 3]))], 1),
            "seq([2, 0] []; [2, 3] [1, 2, 3, 4, 5, 6])"
        );
        assert!(
            run(split(1, 1), vec![x.clone(), Some(ints(&[2], &[1, 1]))], 1).starts_with("error")
        );
        assert!(run(split(1, 1), vec![x.clone(), Some(ints(&[], &[0]))], 1).starts_with("error"));
        assert!(run(split(2, 1), vec![x], 1).starts_with("error"));

        let s = Some(seq(vec![ints(&[1, 2], &[1, 2]), ints(&[1, 2], &[3, 4])]));
        let concat = |axis, new_axis| ConcatFromSequence { axis, new_axis };
        assert_eq!(run(concat(0, 0), vec![s.clone()], 1), "[2, 2] [1, 2, 3, 4]");
        assert_eq!(
            run(concat(-1, 0), vec![s.clone()], 1),
            "[1, 4] [1, 2, 3, 4]"
        );
        assert_eq!(
            run(concat(-1, 1), vec![s.clone()], 1),
            "[1, 2, 2] [1, 3, 2, 4]"
        );
        assert_eq!(
            run(concat(0, 1), vec![s.clone()], 1),
            "[2, 1, 2] [1, 2, 3, 4]"
        );
        assert!(run(concat(2, 0), vec![s], 1).starts_with("error"));
        assert!(run(concat(0, 0), vec![Some(seq(vec![]))], 1).starts_with("error"));
    }
}
