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

/// Helpers for the unit tests of this family and of `image`: run one op through inference and the interpreter.
#[cfg(test)]
pub(crate) mod test_util {
    use std::sync::Arc;

    use jiuzhou_ir::{GraphBuilder, Op, Tensor, TensorType, Value, ValueType};

    use crate::Interpreter;

    /// Runs `op` on `inputs` (`None` = absent) as graph inputs, returning `n` outputs or the error text.
    pub(crate) fn run(
        op: impl Into<Op>,
        inputs: Vec<Option<Tensor>>,
        n: usize,
    ) -> Result<Vec<Tensor>, String> {
        let mut b = GraphBuilder::new("t");
        let mut ids = vec![];
        let mut vals = vec![];
        for (k, t) in inputs.into_iter().enumerate() {
            ids.push(t.map(|t| {
                let ty = ValueType::Tensor(TensorType::known(t.dtype(), t.shape()));
                vals.push(Value::Tensor(Arc::new(t)));
                b.input(&format!("i{k}"), ty)
            }));
        }
        let outs = b.node_opt(op, &ids, n).map_err(|e| e.to_string())?;
        outs.iter().for_each(|&o| b.output(o));
        let g = b.finish().map_err(|e| e.to_string())?;
        let got = Interpreter::default()
            .run(&g, vals)
            .map_err(|e| e.to_string())?;
        Ok(got
            .into_iter()
            .map(|v| (**v.as_tensor().expect("tensor output")).clone())
            .collect())
    }

    /// An f32 tensor.
    pub(crate) fn f(shape: &[usize], v: &[f32]) -> Option<Tensor> {
        Some(Tensor::from_vec(shape.to_vec(), v.to_vec()).expect("element count"))
    }

    /// An i64 tensor.
    pub(crate) fn i(shape: &[usize], v: &[i64]) -> Option<Tensor> {
        Some(Tensor::from_vec(shape.to_vec(), v.to_vec()).expect("element count"))
    }

    /// Asserts `t` is f32 with `shape` and values within 1e-5 of `want`.
    pub(crate) fn close(t: &Tensor, shape: &[usize], want: &[f32]) {
        assert_eq!(t.shape(), shape);
        let got = t.as_slice::<f32>().expect("f32 output");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5, "got {got:?}, want {want:?}");
        }
    }
}
