//! Image and geometry ops: resize, grid sampling, ROI pooling and alignment, affine grids, deformable convolution, unpooling.
//!
//! Kernels read their inputs as f64, compute in f64 and convert once to the output dtype (floats round to nearest,
//! integers round half to even and saturate, as onnx's reference does).

use jiuzhou_ir::num::Num;
use jiuzhou_ir::{DType, Tensor};

use crate::EvalError;

mod geometry;
mod grid_sample;
mod resize;
mod roi;

/// The elements of a real numeric tensor as f64, or an error naming the input.
pub(crate) fn reals(t: &Tensor, what: &str) -> Result<Vec<f64>, EvalError> {
    if t.dtype() == DType::Bool {
        return Err(EvalError::new(format!(
            "{what} should be numeric, got bool"
        )));
    }
    t.to_f64_vec()
        .ok_or_else(|| EvalError::new(format!("{what} has unsupported dtype {}", t.dtype())))
}

/// A tensor of `dtype` from f64 values: floats round to nearest, integers round half to even and saturate.
pub(crate) fn to_dtype(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
    fn ints<T: Num>(shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
        let out = v
            .into_iter()
            .map(|x| T::from_f64(x.round_ties_even()))
            .collect();
        Ok(Tensor::from_vec(shape, out)?)
    }
    match dtype {
        DType::U8 => ints::<u8>(shape, v),
        DType::I8 => ints::<i8>(shape, v),
        DType::U16 => ints::<u16>(shape, v),
        DType::I16 => ints::<i16>(shape, v),
        DType::U32 => ints::<u32>(shape, v),
        DType::I32 => ints::<i32>(shape, v),
        DType::U64 => ints::<u64>(shape, v),
        DType::I64 => ints::<i64>(shape, v),
        d => super::recurrent::float_tensor(d, shape, v),
    }
}
