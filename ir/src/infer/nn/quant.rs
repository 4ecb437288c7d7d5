//! Inference for linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear.

use crate::infer::{InferCx, InferError, InferOp};
use crate::ops::*;
use crate::{DType, TensorType, ValueType};

/// The dtype named by an `output_dtype` attribute (0: not set).
fn attr_dtype(code: i64) -> Result<Option<DType>, InferError> {
    if code == 0 {
        return Ok(None);
    }
    DType::from_onnx_code(code)
        .map(Some)
        .ok_or_else(|| InferError::new(format!("output_dtype {code} is not a known dtype")))
}

impl InferOp for QuantizeLinear {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?;
        let dtype = match cx.opt_tensor(2)? {
            Some(zp) => zp.dtype,
            None => attr_dtype(self.output_dtype)?.unwrap_or(DType::U8),
        };
        Ok(vec![
            TensorType {
                dtype,
                shape: x.shape.clone(),
            }
            .into(),
        ])
    }
}

impl InferOp for DequantizeLinear {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?;
        let dtype = match attr_dtype(self.output_dtype)? {
            Some(d) => d,
            None => cx.tensor(1)?.dtype,
        };
        Ok(vec![
            TensorType {
                dtype,
                shape: x.shape.clone(),
            }
            .into(),
        ])
    }
}

impl InferOp for DynamicQuantizeLinear {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?;
        Ok(vec![
            TensorType {
                dtype: DType::U8,
                shape: x.shape.clone(),
            }
            .into(),
            TensorType::known(DType::F32, &[]).into(),
            TensorType::known(DType::U8, &[]).into(),
        ])
    }
}
