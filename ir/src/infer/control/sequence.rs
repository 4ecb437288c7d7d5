//! Sequences of tensors: construction, access, insertion and removal, splitting into and concatenating from.

use super::merge_types;
use crate::infer::{InferCx, InferError, InferOp, normalize_axis};
use crate::ops::{
    ConcatFromSequence, SequenceAt, SequenceConstruct, SequenceEmpty, SequenceErase,
    SequenceInsert, SequenceLength, SplitToSequence,
};
use crate::{DType, Dim, TensorType, ValueType, infer_bail};

/// Integer dtypes accepted as positions.
const POSITIONS: [DType; 2] = [DType::I32, DType::I64];

/// The element type of sequence input `i`.
fn elem_type<'a>(cx: &InferCx<'a>, i: usize) -> Result<&'a ValueType, InferError> {
    match cx.value(i)? {
        ValueType::Sequence(e) => Ok(e),
        other => infer_bail!("input {i} should be a sequence, got {other}"),
    }
}

/// Checks that optional input `i`, if present, is a scalar position (int32 or int64).
fn check_position(cx: &InferCx<'_>, i: usize) -> Result<(), InferError> {
    if cx.has_input(i) {
        cx.expect_dtype(i, &POSITIONS)?;
        if let Some(r) = cx.tensor(i)?.rank()
            && r > 1
        {
            infer_bail!("input {i} should be a scalar position, it has rank {r}");
        }
    }
    Ok(())
}

/// The sequence type of tensors of `t`.
fn seq_of(t: impl Into<ValueType>) -> ValueType {
    ValueType::Sequence(Box::new(t.into()))
}

impl InferOp for SequenceEmpty {
    fn infer(&self, _cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let code = self.dtype.unwrap_or(1);
        let dtype = DType::from_onnx_code(code)
            .ok_or_else(|| InferError::new(format!("dtype {code} is not a known data type")))?;
        Ok(vec![seq_of(TensorType::unranked(dtype))])
    }
}

impl InferOp for SequenceConstruct {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        if cx.num_inputs() == 0 {
            infer_bail!("needs at least one input");
        }
        let mut elem: ValueType = cx.tensor(0)?.clone().into();
        for i in 1..cx.num_inputs() {
            let t: ValueType = cx.tensor(i)?.clone().into();
            elem = merge_types(cx, &elem, &t, "seq")
                .map_err(|e| InferError::new(format!("input {i}: {e}")))?;
        }
        Ok(vec![seq_of(elem)])
    }
}

impl InferOp for SequenceAt {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let elem = elem_type(cx, 0)?.clone();
        cx.tensor(1)?;
        check_position(cx, 1)?;
        Ok(vec![elem])
    }
}

impl InferOp for SequenceInsert {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let elem = elem_type(cx, 0)?.clone();
        let t: ValueType = cx.tensor(1)?.clone().into();
        check_position(cx, 2)?;
        let merged = merge_types(cx, &elem, &t, "seq")
            .map_err(|e| InferError::new(format!("the inserted tensor does not fit: {e}")))?;
        Ok(vec![seq_of(merged)])
    }
}

impl InferOp for SequenceErase {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        elem_type(cx, 0)?;
        check_position(cx, 1)?;
        Ok(vec![cx.value(0)?.clone()])
    }
}

impl InferOp for SequenceLength {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        elem_type(cx, 0)?;
        Ok(vec![TensorType::known(DType::I64, &[]).into()])
    }
}

impl InferOp for SplitToSequence {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let input = cx.tensor(0)?;
        let dtype = input.dtype;
        if cx.has_input(1) {
            cx.expect_dtype(1, &POSITIONS)?;
        }
        let Some(dims) = input.shape.clone() else {
            return Ok(vec![seq_of(TensorType::unranked(dtype))]);
        };
        let axis = normalize_axis(self.axis, dims.len())?;
        let mut out = dims.clone();
        if !cx.has_input(1) {
            if self.keepdims == 0 {
                out.remove(axis);
            } else {
                out[axis] = Dim::Known(1);
            }
            return Ok(vec![seq_of(TensorType::new(dtype, out))]);
        }
        let split_rank = cx.tensor(1)?.rank();
        let piece = match (cx.const_ints(1), split_rank) {
            (Some(s), Some(0)) => match (s.first(), dims[axis].known()) {
                (Some(&s), _) if s <= 0 => infer_bail!("split should be positive, got {s}"),
                (Some(&s), Some(d)) if d % s as usize == 0 => Some(s as usize),
                _ => None,
            },
            (Some(s), _) => {
                if s.iter().any(|&x| x < 0) {
                    infer_bail!("split sizes should not be negative, got {s:?}");
                }
                if let Some(d) = dims[axis].known()
                    && s.iter().map(|&x| x as u64).sum::<u64>() != d as u64
                {
                    infer_bail!("split sizes {s:?} do not add up to the axis size {d}");
                }
                match s.split_first() {
                    Some((&first, rest)) if rest.iter().all(|&x| x == first) => {
                        Some(first as usize)
                    }
                    _ => None,
                }
            }
            (None, _) => None,
        };
        out[axis] = match piece {
            Some(p) => Dim::Known(p),
            None => cx.fresh("split"),
        };
        Ok(vec![seq_of(TensorType::new(dtype, out))])
    }
}

impl InferOp for ConcatFromSequence {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let elem = match elem_type(cx, 0)? {
            ValueType::Tensor(t) => t.clone(),
            other => infer_bail!("the sequence should hold tensors, it holds {other}"),
        };
        let Some(dims) = elem.shape else {
            return Ok(vec![TensorType::unranked(elem.dtype).into()]);
        };
        let new_axis = self.new_axis != 0;
        let rank = dims.len() + usize::from(new_axis);
        let axis = normalize_axis(self.axis, rank)?;
        let mut out = dims;
        let total = cx.fresh("concat");
        if new_axis {
            out.insert(axis, total);
        } else {
            out[axis] = total;
        }
        Ok(vec![TensorType::new(elem.dtype, out).into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::test_util::infer_types;
    use crate::{Op, Tensor};

    fn t(dtype: DType, dims: &[usize]) -> Option<ValueType> {
        Some(TensorType::known(dtype, dims).into())
    }

    fn seq(dtype: DType, dims: &[usize]) -> Option<ValueType> {
        Some(seq_of(TensorType::known(dtype, dims)))
    }

    fn check(op: impl Into<Op>, inputs: &[Option<ValueType>], consts: &[Option<Tensor>]) -> String {
        infer_types(op, inputs, consts, 1)
    }

    #[test]
    fn construction_and_access() {
        assert_eq!(
            check(SequenceEmpty { dtype: Some(7) }, &[], &[]),
            "seq<i64[*]>"
        );
        assert_eq!(check(SequenceEmpty::default(), &[], &[]), "seq<f32[*]>");
        assert!(check(SequenceEmpty { dtype: Some(99) }, &[], &[]).starts_with("error"));
        assert_eq!(
            check(
                SequenceConstruct {},
                &[t(DType::F32, &[2, 3]), t(DType::F32, &[2, 4])],
                &[]
            ),
            "seq<f32[2,seq_0]>"
        );
        assert!(
            check(
                SequenceConstruct {},
                &[t(DType::F32, &[2]), t(DType::I64, &[2])],
                &[]
            )
            .starts_with("error: input 1")
        );
        let s = seq(DType::F32, &[3]);
        assert_eq!(
            check(SequenceAt {}, &[s.clone(), t(DType::I64, &[])], &[]),
            "f32[3]"
        );
        assert!(check(SequenceAt {}, &[s.clone(), t(DType::F32, &[])], &[]).starts_with("error"));
        assert_eq!(
            check(SequenceInsert {}, &[s.clone(), t(DType::F32, &[4])], &[]),
            "seq<f32[seq_0]>"
        );
        assert_eq!(
            check(SequenceErase {}, &[s.clone(), t(DType::I32, &[1])], &[]),
            "seq<f32[3]>"
        );
        assert_eq!(check(SequenceLength {}, &[s], &[]), "i64[]");
        assert!(check(SequenceLength {}, &[t(DType::F32, &[3])], &[]).starts_with("error"));
    }

    #[test]
    fn split_to_sequence() {
        let x = t(DType::F32, &[3, 6]);
        let op = |axis, keepdims| SplitToSequence { axis, keepdims };
        assert_eq!(
            check(op(1, 1), std::slice::from_ref(&x), &[]),
            "seq<f32[3,1]>"
        );
        assert_eq!(
            check(op(1, 0), std::slice::from_ref(&x), &[]),
            "seq<f32[3]>"
        );
        let scalar = Tensor::scalar(2i64);
        assert_eq!(
            check(
                op(1, 1),
                &[x.clone(), t(DType::I64, &[])],
                &[None, Some(scalar)]
            ),
            "seq<f32[3,2]>"
        );
        let uneven = Tensor::vector(vec![1i64, 5]);
        assert_eq!(
            check(
                op(1, 1),
                &[x.clone(), t(DType::I64, &[2])],
                &[None, Some(uneven)]
            ),
            "seq<f32[3,split_0]>"
        );
        let bad = Tensor::vector(vec![1i64, 2]);
        assert!(
            check(
                op(1, 1),
                &[x.clone(), t(DType::I64, &[2])],
                &[None, Some(bad)]
            )
            .starts_with("error")
        );
        assert!(check(op(2, 1), &[x], &[]).starts_with("error"));
    }

    #[test]
    fn concat_from_sequence() {
        let s = seq(DType::F32, &[2, 3]);
        let op = |axis, new_axis| ConcatFromSequence { axis, new_axis };
        assert_eq!(
            check(op(1, 0), std::slice::from_ref(&s), &[]),
            "f32[2,concat_0]"
        );
        assert_eq!(
            check(op(-1, 1), std::slice::from_ref(&s), &[]),
            "f32[2,3,concat_0]"
        );
        assert!(check(op(2, 0), std::slice::from_ref(&s), &[]).starts_with("error"));
        assert!(check(op(3, 1), &[s], &[]).starts_with("error"));
    }
}
