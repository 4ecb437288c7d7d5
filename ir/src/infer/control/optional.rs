//! Optionals: wrapping a value, asking whether one is present, unwrapping it.
//!
//! Since opset 18, OptionalHasElement and OptionalGetElement also accept plain tensors and sequences (always
//! present).

use crate::infer::{InferCx, InferError, InferOp};
use crate::ops::{Optional, OptionalGetElement, OptionalHasElement};
use crate::{DType, TensorType, ValueType, infer_bail};

impl InferOp for Optional {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let elem = if cx.has_input(0) {
            let t = cx.value(0)?.clone();
            if let Some(declared) = &self.r#type
                && let (Some(a), Some(b)) = (declared.dtype(), t.dtype())
                && a != b
            {
                infer_bail!("the input has dtype {b}, the type attribute says {a}");
            }
            t
        } else {
            match &self.r#type {
                Some(t) => t.clone(),
                None => infer_bail!("an empty optional needs the type attribute"),
            }
        };
        Ok(vec![ValueType::Optional(Box::new(elem))])
    }
}

impl InferOp for OptionalHasElement {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        if cx.num_inputs() > 1 {
            infer_bail!("takes at most one input, got {}", cx.num_inputs());
        }
        Ok(vec![TensorType::known(DType::Bool, &[]).into()])
    }
}

impl InferOp for OptionalGetElement {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        Ok(vec![match cx.value(0)? {
            ValueType::Optional(e) => (**e).clone(),
            other => other.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::infer::test_util::infer_types;

    fn check(op: impl Into<Op>, inputs: &[Option<ValueType>]) -> String {
        infer_types(op, inputs, &[], 1)
    }

    #[test]
    fn optionals() {
        let f = ValueType::from(TensorType::known(DType::F32, &[5]));
        let seq = ValueType::Sequence(Box::new(f.clone()));
        let opt_seq = ValueType::Optional(Box::new(seq.clone()));
        assert_eq!(
            check(Optional { r#type: None }, &[Some(f.clone())]),
            "opt<f32[5]>"
        );
        assert_eq!(
            check(
                Optional {
                    r#type: Some(seq.clone())
                },
                &[]
            ),
            "opt<seq<f32[5]>>"
        );
        assert!(check(Optional { r#type: None }, &[]).starts_with("error"));
        let i64_ty = ValueType::from(TensorType::known(DType::I64, &[5]));
        assert!(
            check(
                Optional {
                    r#type: Some(i64_ty)
                },
                &[Some(f.clone())]
            )
            .starts_with("error")
        );
        assert_eq!(check(OptionalHasElement {}, &[]), "bool[]");
        assert_eq!(check(OptionalHasElement {}, &[None]), "bool[]");
        assert_eq!(check(OptionalHasElement {}, &[Some(f.clone())]), "bool[]");
        assert_eq!(
            check(OptionalGetElement {}, &[Some(opt_seq)]),
            "seq<f32[5]>"
        );
        assert_eq!(check(OptionalGetElement {}, &[Some(f)]), "f32[5]");
        assert!(check(OptionalGetElement {}, &[None]).starts_with("error"));
    }
}
