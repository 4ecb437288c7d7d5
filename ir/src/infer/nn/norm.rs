//! Inference for normalizations, softmax-like ops and Dropout: the main output has the input's type.

use crate::infer::{InferCx, InferError, InferOp, normalize_axis, same_as_input};
use crate::ops::*;
use crate::{DType, Dim, TensorType, ValueType};

/// Checks `axis` against the input's rank, when the rank is known.
fn check_axis(cx: &InferCx<'_>, axis: i64) -> Result<(), InferError> {
    if let Some(d) = cx.dims(0)? {
        normalize_axis(axis, d.len())?;
    }
    Ok(())
}

macro_rules! same_type_along_axis {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                check_axis(cx, self.axis)?;
                same_as_input(cx, 0)
            }
        }
    )*};
}

same_type_along_axis!(
    Softmax,
    LogSoftmax,
    Hardmax,
    LpNormalization,
    RMSNormalization
);

macro_rules! same_type {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                cx.tensor(0)?;
                same_as_input(cx, 0)
            }
        }
    )*};
}

same_type!(
    InstanceNormalization,
    GroupNormalization,
    MeanVarianceNormalization,
    LRN
);

impl InferOp for BatchNormalization {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?;
        let mut out = vec![ValueType::Tensor(x.clone())];
        // In training mode the node may also return the updated running mean and variance, of shape [C].
        if cx.num_outputs > 1 {
            let stat = cx.tensor(3)?.clone();
            out.push(stat.clone().into());
            out.push(stat.into());
        }
        Ok(out)
    }
}

impl InferOp for LayerNormalization {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?.clone();
        let mut out = vec![ValueType::Tensor(x.clone())];
        if cx.num_outputs > 1 {
            // Mean and inverse standard deviation keep the leading axes and reduce the rest to 1.
            let shape = match &x.shape {
                None => None,
                Some(d) => {
                    let axis = normalize_axis(self.axis, d.len())?;
                    Some(
                        d[..axis]
                            .iter()
                            .cloned()
                            .chain(d[axis..].iter().map(|_| Dim::Known(1)))
                            .collect(),
                    )
                }
            };
            let stat = TensorType {
                dtype: x.dtype,
                shape,
            };
            out.push(stat.clone().into());
            out.push(stat.into());
        }
        Ok(out)
    }
}

impl InferOp for Dropout {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?.clone();
        let mask = TensorType {
            dtype: DType::Bool,
            shape: x.shape.clone(),
        };
        Ok(vec![x.into(), mask.into()])
    }
}
