//! Control flow (If, Loop, Scan, SequenceMap), sequences, optionals, strings and random ops.
//!
//! The ops with subgraphs take their output types from the subgraphs' output types: the importer types every
//! subgraph before the enclosing graph is inferred. Where two types meet (the two branches of an If, a loop-carried
//! value before and after an iteration) they are merged with [`merge_types`]: equal dims stay, different dims become
//! fresh symbols, different ranks give an unknown rank.

use super::{InferCx, InferError, not_yet_inferred};
use crate::{Dim, Shape, TensorType, ValueType, infer_bail};

mod flow;
mod optional;
mod random;
mod sequence;
mod strings;

not_yet_inferred!(ImageDecoder);

/// The most specific type that covers both `a` and `b`: the dtypes must agree; equal dims stay, different dims
/// become fresh symbols named after `hint`, different ranks give an unknown rank. Sequences and optionals merge their
/// element types; a tensor, a sequence and an optional never merge with one another.
pub(crate) fn merge_types(
    cx: &mut InferCx<'_>,
    a: &ValueType,
    b: &ValueType,
    hint: &str,
) -> Result<ValueType, InferError> {
    Ok(match (a, b) {
        (ValueType::Tensor(a), ValueType::Tensor(b)) => {
            if a.dtype != b.dtype {
                infer_bail!("types {a} and {b} have different dtypes");
            }
            ValueType::Tensor(TensorType {
                dtype: a.dtype,
                shape: merge_shapes(cx, &a.shape, &b.shape, hint),
            })
        }
        (ValueType::Sequence(a), ValueType::Sequence(b)) => {
            ValueType::Sequence(Box::new(merge_types(cx, a, b, hint)?))
        }
        (ValueType::Optional(a), ValueType::Optional(b)) => {
            ValueType::Optional(Box::new(merge_types(cx, a, b, hint)?))
        }
        _ => infer_bail!("types {a} and {b} are of different kinds"),
    })
}

/// Merges two shapes the way [`merge_types`] does.
pub(crate) fn merge_shapes(cx: &mut InferCx<'_>, a: &Shape, b: &Shape, hint: &str) -> Shape {
    match (a, b) {
        (Some(a), Some(b)) if a.len() == b.len() => Some(
            a.iter()
                .zip(b)
                .map(|(x, y)| if x == y { x.clone() } else { cx.fresh(hint) })
                .collect(),
        ),
        _ => None,
    }
}

/// The type of a value at the end of a loop that starts as `initial` and is `updated` by each iteration: the merge
/// of both where they are of one kind, else the updated type (a loop may start with an optional and continue with
/// its contents).
pub(crate) fn loop_carried_type(
    cx: &mut InferCx<'_>,
    initial: &ValueType,
    updated: &ValueType,
    hint: &str,
) -> Result<ValueType, InferError> {
    let same_kind = matches!(
        (initial, updated),
        (ValueType::Tensor(_), ValueType::Tensor(_))
            | (ValueType::Sequence(_), ValueType::Sequence(_))
            | (ValueType::Optional(_), ValueType::Optional(_))
    );
    if same_kind {
        merge_types(cx, initial, updated, hint)
    } else {
        Ok(updated.clone())
    }
}

/// The type with the element shapes of its sequences forgotten (dtypes stay).
///
/// Sequences carried through a loop typically collect tensors whose shapes change from one iteration to the next
/// (`[x1]`, `[x1, x2]`, ...), and the element shapes declared inside loop bodies are not to be trusted (ONNX's own
/// loop tests declare them wrong), so a loop-carried sequence keeps only its element dtype.
pub(crate) fn forget_sequence_shapes(t: &ValueType) -> ValueType {
    match t {
        ValueType::Tensor(_) => t.clone(),
        ValueType::Sequence(e) => ValueType::Sequence(Box::new(match &**e {
            ValueType::Tensor(tt) => TensorType::unranked(tt.dtype).into(),
            other => forget_sequence_shapes(other),
        })),
        ValueType::Optional(e) => ValueType::Optional(Box::new(forget_sequence_shapes(e))),
    }
}

/// A tensor type with `dim` inserted at `axis` (unknown rank stays unknown).
pub(crate) fn insert_dim(t: &TensorType, axis: usize, dim: Dim) -> TensorType {
    TensorType {
        dtype: t.dtype,
        shape: t.shape.as_ref().map(|dims| {
            let mut d = dims.clone();
            d.insert(axis.min(d.len()), dim);
            d
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::SymGen;
    use crate::{DType, Dim};

    #[test]
    fn merging_keeps_equal_dims_and_renames_different_ones() {
        let mut syms = SymGen::default();
        let mut cx = InferCx {
            inputs: &[],
            consts: &[],
            num_outputs: 1,
            syms: &mut syms,
        };
        let a = ValueType::from(TensorType::new(DType::F32, [Dim::from("n"), Dim::Known(3)]));
        let b = ValueType::from(TensorType::known(DType::F32, &[2, 3]));
        let m = merge_types(&mut cx, &a, &b, "if").unwrap();
        assert_eq!(m.to_string(), "f32[if_0,3]");
        let c = ValueType::from(TensorType::known(DType::F32, &[3]));
        assert_eq!(
            merge_types(&mut cx, &a, &c, "if").unwrap().to_string(),
            "f32[*]"
        );
        let d = ValueType::from(TensorType::known(DType::I64, &[3]));
        assert!(merge_types(&mut cx, &c, &d, "if").is_err());
        let s = ValueType::Sequence(Box::new(c.clone()));
        assert!(merge_types(&mut cx, &s, &c, "if").is_err());
        assert_eq!(loop_carried_type(&mut cx, &s, &c, "loop").unwrap(), c);
        let opt = ValueType::Optional(Box::new(s));
        assert_eq!(forget_sequence_shapes(&opt).to_string(), "opt<seq<f32[*]>>");
        assert_eq!(forget_sequence_shapes(&c), c);
    }
}
