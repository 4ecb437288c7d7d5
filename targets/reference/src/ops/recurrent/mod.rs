//! Sequence models: recurrent cells (RNN, GRU, LSTM), attention, rotary embeddings, causal convolution with state.
//!
//! Every kernel here reads its float inputs as f64, computes in f64 and rounds once to the input dtype at the end
//! (f16 and bf16 thus compute in at least f32 precision, as the brief asks).

use jiuzhou_ir::{DType, Tensor, Value};

use crate::EvalError;

mod attention;
mod linear;
mod rnn;
mod rotary;

/// The elements of a float tensor as f64, or an error naming the input.
pub(crate) fn floats(t: &Tensor, what: &str) -> Result<Vec<f64>, EvalError> {
    if !t.dtype().is_float() {
        return Err(EvalError::new(format!(
            "{what} should be a float tensor, got {}",
            t.dtype()
        )));
    }
    t.to_f64_vec()
        .ok_or_else(|| EvalError::new(format!("{what} has unsupported dtype {}", t.dtype())))
}

/// A float tensor of `dtype` from f64 values (rounded once to the dtype).
pub(crate) fn float_tensor(
    dtype: DType,
    shape: Vec<usize>,
    v: Vec<f64>,
) -> Result<Tensor, EvalError> {
    use jiuzhou_ir::half::{bf16, f16};
    Ok(match dtype {
        DType::F64 => Tensor::from_vec(shape, v)?,
        DType::F32 => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect())?,
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(f16::from_f64).collect())?,
        DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(bf16::from_f64).collect())?,
        d => return Err(EvalError::new(format!("unsupported output dtype {d}"))),
    })
}

/// Wraps a tensor as a value.
pub(crate) fn val(t: Tensor) -> Value {
    Value::from(t)
}
