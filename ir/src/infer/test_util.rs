//! Helpers shared by the inference unit tests of every op family.

use std::sync::Arc;

use super::{InferCx, InferError, InferOp, SymGen};
use crate::{Op, Tensor, ValueType};

/// Runs `op`'s inference on inputs of the given types (`None` = absent) and constant values (`None` = not
/// constant; missing trailing entries are not constant), expecting `num_outputs` outputs.
pub(crate) fn infer_outputs<T: Clone + Into<ValueType>>(
    op: &impl InferOp,
    inputs: &[Option<T>],
    consts: &[Option<Tensor>],
    num_outputs: usize,
) -> Result<Vec<ValueType>, InferError> {
    let inputs: Vec<Option<ValueType>> = inputs.iter().map(|t| t.clone().map(Into::into)).collect();
    let mut consts: Vec<Option<Arc<Tensor>>> =
        consts.iter().map(|c| c.clone().map(Arc::new)).collect();
    consts.resize(inputs.len().max(consts.len()), None);
    let mut syms = SymGen::default();
    let mut cx = InferCx {
        inputs: &inputs,
        consts: &consts,
        num_outputs,
        syms: &mut syms,
    };
    op.infer(&mut cx)
}

/// Like [`infer_outputs`], but returns the first `num_outputs` output types written as text and joined by `", "`
/// (`"f32[2,n_0], i64[2]"`), or `"error: <message>"` when inference fails.
pub(crate) fn infer_types<T: Clone + Into<ValueType>>(
    op: impl Into<Op>,
    inputs: &[Option<T>],
    consts: &[Option<Tensor>],
    num_outputs: usize,
) -> String {
    match infer_outputs(&op.into(), inputs, consts, num_outputs) {
        Ok(tys) => tys
            .iter()
            .take(num_outputs)
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("error: {e}"),
    }
}
