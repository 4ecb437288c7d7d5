//! Optionals: wrapping a value, asking whether one is present, unwrapping it.
//!
//! OptionalHasElement and OptionalGetElement also accept plain tensors and sequences, which are always present.

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::{Optional, OptionalGetElement, OptionalHasElement};
use jiuzhou_ir::{Tensor, ValueType};

use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Whether a value's kind and dtype fit a static type (dims are not compared).
fn same_kind(v: &Value, ty: &ValueType) -> bool {
    match (v, ty) {
        (Value::Tensor(t), ValueType::Tensor(tt)) => t.dtype() == tt.dtype,
        (Value::Sequence { .. }, ValueType::Sequence(_)) => true,
        (Value::Optional { .. }, ValueType::Optional(_)) => true,
        _ => false,
    }
}

impl EvalOp for Optional {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let out = if cx.has_input(0) {
            let v = cx.value(0)?;
            if let Some(ty) = &self.r#type
                && !same_kind(v, ty)
            {
                eval_bail!("the input does not have the declared type {ty}");
            }
            Value::Optional {
                elem: v.value_type(),
                item: Some(Box::new(v.clone())),
            }
        } else {
            let Some(ty) = &self.r#type else {
                eval_bail!("an empty optional needs the type attribute");
            };
            Value::Optional {
                elem: ty.clone(),
                item: None,
            }
        };
        Ok(vec![out])
    }
}

impl EvalOp for OptionalHasElement {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let present = match cx.inputs.first() {
            None | Some(None) => false,
            Some(Some(Value::Optional { item, .. })) => item.is_some(),
            Some(Some(_)) => true,
        };
        Ok(vec![Tensor::scalar(present).into()])
    }
}

impl EvalOp for OptionalGetElement {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        Ok(vec![match cx.value(0)? {
            Value::Optional { item: Some(v), .. } => (**v).clone(),
            Value::Optional { item: None, .. } => eval_bail!("the optional is empty"),
            other => other.clone(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::control::testutil::{ints, run, seq};
    use jiuzhou_ir::{DType, TensorType};

    #[test]
    fn wrap_query_unwrap() {
        let x = ints(&[2], &[1, 2]);
        let wrapped = Value::Optional {
            elem: x.value_type(),
            item: Some(Box::new(x.clone())),
        };
        let empty = Value::Optional {
            elem: x.value_type(),
            item: None,
        };
        assert_eq!(
            run(Optional { r#type: None }, vec![Some(x.clone())], 1),
            "opt([2] [1, 2])"
        );
        let ty = Some(TensorType::unranked(DType::F32).into());
        assert_eq!(run(Optional { r#type: ty.clone() }, vec![], 1), "opt()");
        assert!(run(Optional { r#type: ty }, vec![Some(x.clone())], 1).starts_with("error"));
        assert!(run(Optional { r#type: None }, vec![], 1).starts_with("error"));

        assert_eq!(
            run(OptionalHasElement {}, vec![Some(wrapped.clone())], 1),
            "[] [true]"
        );
        assert_eq!(
            run(OptionalHasElement {}, vec![Some(empty.clone())], 1),
            "[] [false]"
        );
        assert_eq!(
            run(OptionalHasElement {}, vec![Some(x.clone())], 1),
            "[] [true]"
        );
        assert_eq!(run(OptionalHasElement {}, vec![None], 1), "[] [false]");
        assert_eq!(run(OptionalHasElement {}, vec![], 1), "[] [false]");

        assert_eq!(
            run(OptionalGetElement {}, vec![Some(wrapped)], 1),
            "[2] [1, 2]"
        );
        assert!(run(OptionalGetElement {}, vec![Some(empty)], 1).starts_with("error"));
        assert_eq!(
            run(OptionalGetElement {}, vec![Some(seq(vec![x]))], 1),
            "seq([2] [1, 2])"
        );
    }
}
