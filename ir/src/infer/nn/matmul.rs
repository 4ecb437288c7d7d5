//! Inference for matrix products: Gemm, MatMul (numpy semantics), their integer and quantized forms, and Einsum.

use super::einsum;
use crate::infer::{InferCx, InferError, InferOp, broadcast_shapes};
use crate::ops::*;
use crate::{DType, Dim, TensorType, ValueType};

/// Checks that two contracted dims agree when both are known.
fn check_inner(a: &Dim, b: &Dim) -> Result<(), InferError> {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) if x != y => Err(InferError::new(format!(
            "the inner dims of the product differ ({x} vs {y})"
        ))),
        _ => Ok(()),
    }
}

/// The numpy `matmul` shape of inputs `a` and `b`, with output dtype `dtype`.
fn matmul_shape(
    cx: &InferCx<'_>,
    a: usize,
    b: usize,
    dtype: DType,
) -> Result<Vec<ValueType>, InferError> {
    let (Some(ad), Some(bd)) = (cx.dims(a)?, cx.dims(b)?) else {
        return Ok(vec![TensorType::unranked(dtype).into()]);
    };
    if ad.is_empty() || bd.is_empty() {
        return Err(InferError::new("MatMul operands must have rank at least 1"));
    }
    // A 1-D left operand is a row vector, a 1-D right operand a column vector; the added axis is dropped after.
    let a2: Vec<Dim> = if ad.len() == 1 {
        vec![Dim::Known(1), ad[0].clone()]
    } else {
        ad.to_vec()
    };
    let b2: Vec<Dim> = if bd.len() == 1 {
        vec![bd[0].clone(), Dim::Known(1)]
    } else {
        bd.to_vec()
    };
    check_inner(&a2[a2.len() - 1], &b2[b2.len() - 2])?;
    let batch = broadcast_shapes(&[
        &Some(a2[..a2.len() - 2].to_vec()),
        &Some(b2[..b2.len() - 2].to_vec()),
    ])?
    .unwrap_or_default();
    let mut dims = batch;
    if ad.len() > 1 {
        dims.push(a2[a2.len() - 2].clone());
    }
    if bd.len() > 1 {
        dims.push(b2[b2.len() - 1].clone());
    }
    Ok(vec![TensorType::new(dtype, dims).into()])
}

impl InferOp for MatMul {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        if cx.tensor(1)?.dtype != dtype {
            return Err(InferError::new("MatMul operands have different dtypes"));
        }
        matmul_shape(cx, 0, 1, dtype)
    }
}

impl InferOp for FusedMatMul {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let out = MatMul::default().infer(cx)?;
        if let Some(ValueType::Tensor(t)) = out.first() {
            super::check_addend(t, cx.opt_tensor(2)?, "bias")?;
            super::check_addend(t, cx.opt_tensor(3)?, "residual")?;
        }
        Ok(out)
    }
}

impl InferOp for MatMulInteger {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        matmul_shape(cx, 0, 1, DType::I32)
    }
}

impl InferOp for QLinearMatMul {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = match cx.opt_tensor(7)? {
            Some(t) => t.dtype,
            None => cx.tensor(0)?.dtype,
        };
        matmul_shape(cx, 0, 3, dtype)
    }
}

impl InferOp for Gemm {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let (Some(ad), Some(bd)) = (cx.dims(0)?, cx.dims(1)?) else {
            return Ok(vec![TensorType::unranked(dtype).into()]);
        };
        if ad.len() != 2 || bd.len() != 2 {
            return Err(InferError::new(format!(
                "Gemm operands must be matrices, got ranks {} and {}",
                ad.len(),
                bd.len()
            )));
        }
        let (m, ka) = if self.transA != 0 {
            (&ad[1], &ad[0])
        } else {
            (&ad[0], &ad[1])
        };
        let (kb, n) = if self.transB != 0 {
            (&bd[1], &bd[0])
        } else {
            (&bd[0], &bd[1])
        };
        check_inner(ka, kb)?;
        let dims = vec![m.clone(), n.clone()];
        if let Some(c) = cx.opt_tensor(2)? {
            // C must broadcast to [M, N] (unidirectionally).
            broadcast_shapes(&[&Some(dims.clone()), &c.shape])?;
        }
        Ok(vec![TensorType::new(dtype, dims).into()])
    }
}

impl InferOp for Einsum {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let mut all_dims = Vec::with_capacity(cx.num_inputs());
        for i in 0..cx.num_inputs() {
            match cx.dims(i)? {
                Some(d) => all_dims.push(d),
                None => return Ok(vec![TensorType::unranked(dtype).into()]),
            }
        }
        let ranks: Vec<usize> = all_dims.iter().map(|d| d.len()).collect();
        let spec = einsum::resolve(&self.equation, &ranks)?;
        // The size of every label: known sizes win over symbols; ellipsis axes broadcast (1 stretches).
        let mut sizes: Vec<Option<Dim>> = vec![None; spec.num_labels];
        for (labels, dims) in spec.inputs.iter().zip(&all_dims) {
            for (&l, d) in labels.iter().zip(dims.iter()) {
                let s = &mut sizes[l];
                *s = match (s.take(), d) {
                    (None, d) => Some(d.clone()),
                    (Some(Dim::Known(1)), d) if l < spec.ellipsis_rank => Some(d.clone()),
                    (Some(prev), Dim::Known(1)) if l < spec.ellipsis_rank => Some(prev),
                    (Some(Dim::Known(a)), Dim::Known(b)) if a != *b => {
                        return Err(InferError::new(format!(
                            "einsum `{}`: a label has sizes {a} and {b}",
                            self.equation
                        )));
                    }
                    (Some(Dim::Sym(_)), Dim::Known(b)) => Some(Dim::Known(*b)),
                    (Some(prev), _) => Some(prev),
                };
            }
        }
        let dims: Vec<Dim> = spec
            .output
            .iter()
            .map(|&l| sizes[l].clone().unwrap_or(Dim::Known(1)))
            .collect();
        Ok(vec![TensorType::new(dtype, dims).into()])
    }
}
