//! Random generators: normal and uniform samples (of a given shape or like a tensor), Bernoulli, Multinomial.

use crate::infer::{InferCx, InferError, InferOp};
use crate::ops::{
    Bernoulli, Multinomial, RandomNormal, RandomNormalLike, RandomUniform, RandomUniformLike,
};
use crate::{DType, Dim, TensorType, ValueType, infer_bail};

/// The float dtypes random samples can have.
pub(crate) const FLOATS: [DType; 4] = [DType::F16, DType::BF16, DType::F32, DType::F64];

/// The dtypes Bernoulli samples can have.
const BERNOULLI_OUTPUTS: [DType; 13] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::U32,
    DType::I32,
    DType::U64,
    DType::I64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
];

/// The dtype named by an ONNX dtype code, checked against `allowed`.
pub(crate) fn dtype_attr(code: i64, allowed: &[DType]) -> Result<DType, InferError> {
    match DType::from_onnx_code(code) {
        Some(d) if allowed.contains(&d) => Ok(d),
        Some(d) => infer_bail!("dtype {d} is not allowed here, expected one of {allowed:?}"),
        None => infer_bail!("dtype {code} is not a known data type"),
    }
}

/// The type of samples of the `shape` attribute.
fn of_shape(dtype: i64, shape: &[i64]) -> Result<Vec<ValueType>, InferError> {
    let dtype = dtype_attr(dtype, &FLOATS)?;
    let dims = shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map(Dim::Known)
                .map_err(|_| InferError::new(format!("shape {shape:?} has a negative dim")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![TensorType::new(dtype, dims).into()])
}

/// The type of samples shaped like input 0, of dtype `dtype` (input 0's dtype if absent).
fn like_input(cx: &InferCx<'_>, dtype: Option<i64>) -> Result<Vec<ValueType>, InferError> {
    let t = cx.tensor(0)?;
    let dtype = match dtype {
        Some(code) => dtype_attr(code, &FLOATS)?,
        None if FLOATS.contains(&t.dtype) => t.dtype,
        None => infer_bail!(
            "the input has dtype {}, which random samples cannot have; set the dtype attribute",
            t.dtype
        ),
    };
    Ok(vec![
        TensorType {
            dtype,
            shape: t.shape.clone(),
        }
        .into(),
    ])
}

impl InferOp for RandomNormal {
    fn infer(&self, _cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        of_shape(self.dtype, &self.shape)
    }
}

impl InferOp for RandomUniform {
    fn infer(&self, _cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        of_shape(self.dtype, &self.shape)
    }
}

impl InferOp for RandomNormalLike {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        like_input(cx, self.dtype)
    }
}

impl InferOp for RandomUniformLike {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        like_input(cx, self.dtype)
    }
}

impl InferOp for Bernoulli {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        cx.expect_dtype(0, &FLOATS)?;
        let dtype = match self.dtype {
            Some(code) => dtype_attr(code, &BERNOULLI_OUTPUTS)?,
            None => t.dtype,
        };
        Ok(vec![
            TensorType {
                dtype,
                shape: t.shape.clone(),
            }
            .into(),
        ])
    }
}

impl InferOp for Multinomial {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &FLOATS)?;
        let dtype = dtype_attr(self.dtype, &[DType::I32, DType::I64])?;
        let samples = usize::try_from(self.sample_size)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| InferError::new("sample_size should be at least 1"))?;
        let batch = match cx.dims(0)? {
            Some([b, _]) => b.clone(),
            Some(d) => infer_bail!(
                "the input should be [batch, classes], it has rank {}",
                d.len()
            ),
            None => cx.fresh("batch"),
        };
        Ok(vec![
            TensorType::new(dtype, [batch, Dim::Known(samples)]).into(),
        ])
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
    fn random_types() {
        let normal = RandomNormal {
            shape: vec![2, 3],
            dtype: 11,
            ..Default::default()
        };
        assert_eq!(check(normal, &[]), "f64[2,3]");
        let bad = RandomUniform {
            shape: vec![-1],
            ..Default::default()
        };
        assert!(check(bad, &[]).starts_with("error"));
        let x = Some(ValueType::from(TensorType::new(
            DType::F16,
            [Dim::from("n"), Dim::Known(2)],
        )));
        assert_eq!(
            check(RandomUniformLike::default(), std::slice::from_ref(&x)),
            "f16[n,2]"
        );
        let like = RandomNormalLike {
            dtype: Some(1),
            ..Default::default()
        };
        assert_eq!(check(like, std::slice::from_ref(&x)), "f32[n,2]");
        let ints = Some(ValueType::from(TensorType::known(DType::I64, &[2])));
        assert!(check(RandomNormalLike::default(), &[ints]).starts_with("error"));
        assert_eq!(
            check(Bernoulli::default(), std::slice::from_ref(&x)),
            "f16[n,2]"
        );
        let b = Bernoulli {
            dtype: Some(9),
            seed: None,
        };
        assert_eq!(check(b, std::slice::from_ref(&x)), "bool[n,2]");
        let m = Multinomial {
            sample_size: 4,
            ..Default::default()
        };
        assert_eq!(check(m, &[x]), "i32[n,4]");
    }
}
