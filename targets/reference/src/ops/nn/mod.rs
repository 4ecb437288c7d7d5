//! Neural-network ops: convolutions, pooling, normalizations, matrix products, softmax, quantization.
//!
//! The heavy ops (Conv, ConvTranspose, Gemm, MatMul and their integer forms) share one matrix-product kernel,
//! [`gemm::matmul_acc`], generic over the compute type ([`Scalar`]): f32 for f32/f16/bf16 data, f64 for f64, and
//! the integer type itself (wrapping) for integer data. The light ops (normalizations, softmax, pooling) compute in
//! f64 and round once to the output dtype.

use std::borrow::Cow;

use half::{bf16, f16};
use jiuzhou_ir::infer::InferError;
use jiuzhou_ir::{DType, Data, Elem, Tensor};

use crate::EvalError;

mod conv;
mod einsum;
pub mod fused;
mod gemm;
mod norm;
mod pool;
mod quant;

#[cfg(test)]
mod tests;

/// Turns a geometry error of the shared inference helpers into an evaluation error.
pub(crate) fn geometry(e: InferError) -> EvalError {
    EvalError(e.0)
}

/// An element type the matrix kernels compute in.
pub(crate) trait Scalar: Elem + Copy + PartialEq {
    /// Zero.
    const ZERO: Self;
    /// `self + a * b` (wrapping for integers).
    fn mac(self, a: Self, b: Self) -> Self;
    /// `self + o` (wrapping for integers).
    fn plus(self, o: Self) -> Self;
    /// Converts a scale factor (rounding for floats, truncating for integers).
    fn from_f64(v: f64) -> Self;

    /// The elements of `t` in this compute type: borrowed when `t` already holds it, converted otherwise (only
    /// f16/bf16 → f32 converts).
    fn elements(t: &Tensor) -> Result<Cow<'_, [Self]>, EvalError> {
        Ok(Cow::Borrowed(t.as_slice::<Self>()?))
    }

    /// A tensor of `dtype` (this compute type, or f16/bf16 for f32) holding `v`.
    fn into_tensor(v: Vec<Self>, dtype: DType, shape: Vec<usize>) -> Result<Tensor, EvalError> {
        if dtype != Self::DTYPE {
            return Err(EvalError::new(format!(
                "cannot store {} results as {dtype}",
                Self::DTYPE
            )));
        }
        Ok(Tensor::from_vec(shape, v)?)
    }
}

macro_rules! impl_scalar_float {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const ZERO: Self = 0.0;
            #[inline(always)]
            fn mac(self, a: Self, b: Self) -> Self { self + a * b }
            #[inline(always)]
            fn plus(self, o: Self) -> Self { self + o }
            fn from_f64(v: f64) -> Self { v as $t }
            fn elements(t: &Tensor) -> Result<Cow<'_, [Self]>, EvalError> {
                match t.data() {
                    Data::F16(v) => Ok(Cow::Owned(v.iter().map(|x| x.to_f32() as $t).collect())),
                    Data::BF16(v) => Ok(Cow::Owned(v.iter().map(|x| x.to_f32() as $t).collect())),
                    _ => Ok(Cow::Borrowed(t.as_slice::<Self>()?)),
                }
            }
            fn into_tensor(v: Vec<Self>, dtype: DType, shape: Vec<usize>) -> Result<Tensor, EvalError> {
                Ok(match dtype {
                    DType::F16 => Tensor::from_vec(shape, v.into_iter().map(|x| f16::from_f64(x as f64)).collect())?,
                    DType::BF16 => Tensor::from_vec(shape, v.into_iter().map(|x| bf16::from_f64(x as f64)).collect())?,
                    d if d == <$t as Elem>::DTYPE => Tensor::from_vec(shape, v)?,
                    d => return Err(EvalError::new(format!("cannot store float results as {d}"))),
                })
            }
        }
    )*};
}

impl_scalar_float!(f32, f64);

macro_rules! impl_scalar_int {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            const ZERO: Self = 0;
            #[inline(always)]
            fn mac(self, a: Self, b: Self) -> Self { self.wrapping_add(a.wrapping_mul(b)) }
            #[inline(always)]
            fn plus(self, o: Self) -> Self { self.wrapping_add(o) }
            fn from_f64(v: f64) -> Self { v as $t }
        }
    )*};
}

impl_scalar_int!(i32, i64, u32, u64);

/// Runs `$body` with `$T` bound to the compute type of `$dtype` (f32 for f16/bf16/f32), or fails naming the op.
macro_rules! with_compute_type {
    ($dtype:expr, $op:literal, $T:ident => $body:expr) => {{
        use jiuzhou_ir::DType as __D;
        match $dtype {
            __D::F16 | __D::BF16 | __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            d => {
                return Err($crate::EvalError::new(format!(
                    concat!($op, " does not support {}"),
                    d
                )));
            }
        }
    }};
}
pub(crate) use with_compute_type;

/// The elements of a real numeric tensor as f64 (the compute type of the light ops).
pub(crate) fn to_f64s(t: &Tensor) -> Result<Vec<f64>, EvalError> {
    t.to_f64_vec()
        .ok_or_else(|| EvalError::new(format!("expected a numeric tensor, got {}", t.dtype())))
}

/// A tensor of real numeric `dtype` from f64 values, each rounded (floats) or truncated and saturated (integers)
/// once.
pub(crate) fn from_f64s(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
    use jiuzhou_ir::num::Num;
    fn conv<T: Num>(shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
        Ok(Tensor::from_vec(
            shape,
            v.into_iter().map(T::from_f64).collect::<Vec<T>>(),
        )?)
    }
    match dtype {
        DType::F32 => conv::<f32>(shape, v),
        DType::F64 => Ok(Tensor::from_vec(shape, v)?),
        DType::F16 => conv::<f16>(shape, v),
        DType::BF16 => conv::<bf16>(shape, v),
        DType::U8 => conv::<u8>(shape, v),
        DType::I8 => conv::<i8>(shape, v),
        DType::U16 => conv::<u16>(shape, v),
        DType::I16 => conv::<i16>(shape, v),
        DType::U32 => conv::<u32>(shape, v),
        DType::I32 => conv::<i32>(shape, v),
        DType::U64 => conv::<u64>(shape, v),
        DType::I64 => conv::<i64>(shape, v),
        d => Err(EvalError::new(format!("cannot produce {d} results"))),
    }
}

/// Checks that `t` holds a float dtype (f16, bf16, f32, f64).
pub(crate) fn expect_float(t: &Tensor, what: &str) -> Result<(), EvalError> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => Ok(()),
        d => Err(EvalError::new(format!(
            "{what} must be a float tensor, got {d}"
        ))),
    }
}

/// The product of `dims`, checked against overflow and the allocation limit for `dtype`.
pub(crate) fn numel(dims: &[usize], dtype: DType) -> Result<usize, EvalError> {
    Ok(jiuzhou_ir::tensor::checked_numel(dims, dtype)?)
}
