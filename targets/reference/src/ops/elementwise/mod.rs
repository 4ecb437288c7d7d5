//! Elementwise ops: unary math, activations, binary arithmetic with broadcasting, comparisons, logic, casts.
//!
//! The semantics are numpy's, as ONNX's reference implementation uses them: integers wrap, integer division
//! truncates toward zero, `f16`/`bf16` compute in a wider type and round once per op, comparisons with NaN are
//! false. Kernels are written once over [`Lane`] (every real numeric element type) and dispatched with
//! [`jiuzhou_ir::dispatch_numeric!`]; unary float formulas are written once in f64.
//!
//! - [`unary`]: math functions and activations;
//! - [`binary`]: arithmetic, comparisons, logic, bitwise ops, variadic ops, `Where`, `Clip`, `PRelu`, `Pow`;
//! - [`cast`]: `Cast`, `CastLike`, `BitCast`, `IsInf`, `IsNaN`.

use half::{bf16, f16};
use jiuzhou_ir::num::Num;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Elem, Tensor, Value};

use crate::EvalError;
use crate::kernels::{broadcast_offsets, broadcast_shape};

pub mod binary;
pub mod cast;
pub mod unary;

/// What every real numeric element type offers beyond [`Num`]: exact integer views and numpy's casts.
///
/// Integer kernels (bitwise ops, shifts, integer `Mod` and `Pow`) work on `i128`, which holds every value of every
/// integer type, and wrap back; float kernels work on `f64`.
pub trait Lane: Num {
    /// The value as i128 (floats truncate toward zero; only meaningful for integer types).
    fn to_i128(self) -> i128;
    /// The low bits of `v` as this type (two's complement truncation); floats convert the value.
    fn from_i128_wrapping(v: i128) -> Self;
    /// numpy's `astype` from a float: floats round to nearest; integers truncate toward zero, and NaN or
    /// out-of-range values behave as the C conversion does on x86 (through a 32-bit or 64-bit integer, whose
    /// "indefinite" value is its minimum, then wrapped).
    fn cast_f64(v: f64) -> Self;
}

/// The x86 conversion of a float to i32: truncation, or `i32::MIN` when NaN or out of range.
fn f64_to_i32_x86(v: f64) -> i32 {
    if v.is_nan() || v <= -2_147_483_649.0 || v >= 2_147_483_648.0 {
        i32::MIN
    } else {
        v as i32
    }
}

/// The x86 conversion of a float to i64: truncation, or `i64::MIN` when NaN or out of range.
fn f64_to_i64_x86(v: f64) -> i64 {
    if v.is_nan() || v < -9.223_372_036_854_776e18 || v >= 9.223_372_036_854_776e18 {
        i64::MIN
    } else {
        v as i64
    }
}

macro_rules! impl_lane_int {
    ($($t:ty => |$v:ident| $cast:expr;)*) => {$(
        impl Lane for $t {
            fn to_i128(self) -> i128 { self as i128 }
            fn from_i128_wrapping(v: i128) -> Self { v as $t }
            fn cast_f64($v: f64) -> Self { $cast }
        }
    )*};
}

impl_lane_int! {
    i8 => |v| f64_to_i32_x86(v) as i8;
    u8 => |v| f64_to_i32_x86(v) as u8;
    i16 => |v| f64_to_i32_x86(v) as i16;
    u16 => |v| f64_to_i32_x86(v) as u16;
    i32 => |v| f64_to_i32_x86(v);
    u32 => |v| f64_to_i64_x86(v) as u32;
    i64 => |v| f64_to_i64_x86(v);
    u64 => |v| if (0.0..18_446_744_073_709_551_616.0).contains(&v) { v as u64 } else { f64_to_i64_x86(v) as u64 };
}

macro_rules! impl_lane_float {
    ($($t:ty;)*) => {$(
        impl Lane for $t {
            fn to_i128(self) -> i128 { jiuzhou_ir::num::ToF64::to_f64(self) as i128 }
            fn from_i128_wrapping(v: i128) -> Self { <$t as Num>::from_f64(v as f64) }
            fn cast_f64(v: f64) -> Self { <$t as Num>::from_f64(v) }
        }
    )*};
}

impl_lane_float! {
    f16;
    bf16;
    f32;
    f64;
}

/// One output value.
pub(crate) fn one(t: Tensor) -> Result<Vec<Value>, EvalError> {
    Ok(vec![Value::from(t)])
}

/// The error for an input dtype an op does not accept.
pub(crate) fn bad_dtype(op: &str, dtype: DType) -> EvalError {
    EvalError::new(format!("{op} does not accept {dtype} tensors"))
}

/// Checks that every tensor has the dtype of the first.
pub(crate) fn same_dtypes(op: &str, ts: &[&Tensor]) -> Result<DType, EvalError> {
    let d = ts.first().map_or(DType::F32, |t| t.dtype());
    for (i, t) in ts.iter().enumerate() {
        if t.dtype() != d {
            return Err(EvalError::new(format!(
                "{op}: input {i} has dtype {}, input 0 has {d}",
                t.dtype()
            )));
        }
    }
    Ok(d)
}

/// The broadcast shape of `shapes` with its element count checked, and each input's element offsets into it.
pub(crate) fn broadcast_plan(
    shapes: &[&[usize]],
    dtype: DType,
) -> Result<(Vec<usize>, Vec<Vec<usize>>), EvalError> {
    let shape = broadcast_shape(shapes)?;
    checked_numel(&shape, dtype)?;
    let offsets = shapes
        .iter()
        .map(|s| broadcast_offsets(s, &shape))
        .collect();
    Ok((shape, offsets))
}

/// Applies `f` to broadcast pairs of elements of two tensors (of possibly different element types).
pub(crate) fn zip_with<A: Elem, B: Elem, U: Elem>(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(&A, &B) -> U,
) -> Result<Tensor, EvalError> {
    let (av, bv) = (a.as_slice::<A>()?, b.as_slice::<B>()?);
    let (shape, offs) = broadcast_plan(&[a.shape(), b.shape()], U::DTYPE)?;
    let out = offs[0]
        .iter()
        .zip(&offs[1])
        .map(|(&i, &j)| f(&av[i], &bv[j]))
        .collect();
    Ok(Tensor::from_vec(shape, out)?)
}

/// Applies `f` to every element of a tensor.
pub(crate) fn map_with<A: Elem, U: Elem>(
    a: &Tensor,
    f: impl Fn(&A) -> U,
) -> Result<Tensor, EvalError> {
    let v = a.as_slice::<A>()?;
    Ok(Tensor::from_vec(
        a.shape().to_vec(),
        v.iter().map(f).collect(),
    )?)
}

/// A numeric tensor computed elementwise in f64: `f` sees each element as f64, and its result is cast back to the
/// input's dtype (rounding once for floats, numpy's cast for integers). Non-numeric inputs are an error.
pub(crate) fn map_f64(
    op: &str,
    t: &Tensor,
    floats_only: bool,
    f: impl Fn(f64) -> f64,
) -> Result<Tensor, EvalError> {
    jiuzhou_ir::dispatch_numeric!(t, |_v: &[T]| {
        if floats_only && !<T as Num>::IS_FLOAT {
            return Err(bad_dtype(op, t.dtype()));
        }
        map_with::<T, T>(t, |&x| T::cast_f64(f(jiuzhou_ir::num::ToF64::to_f64(x))))
    }, _ => Err(bad_dtype(op, t.dtype())))
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the unit tests of the elementwise ops: build a one-node graph (which runs inference) and
    //! evaluate it.

    use jiuzhou_ir::{GraphBuilder, Op, Tensor};

    use crate::Interpreter;

    /// Runs `op` on constant inputs (an absent optional input is `None`) and returns its output, or the error
    /// message of inference or evaluation.
    pub fn run(op: impl Into<Op>, inputs: Vec<Option<Tensor>>) -> Result<Tensor, String> {
        let mut b = GraphBuilder::new("test");
        let ids: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.map(|t| b.constant(&format!("in{i}"), t)))
            .collect();
        let out = b.node_opt(op, &ids, 1).map_err(|e| e.to_string())?;
        b.output(out[0]);
        let g = b.finish().map_err(|e| e.to_string())?;
        let vals = Interpreter::default()
            .run(&g, vec![])
            .map_err(|e| e.to_string())?;
        match vals.into_iter().next().and_then(|v| v.as_tensor().cloned()) {
            Some(t) => Ok((*t).clone()),
            None => Err("no tensor output".into()),
        }
    }

    /// Runs `op` on present inputs.
    pub fn run1(op: impl Into<Op>, inputs: Vec<Tensor>) -> Result<Tensor, String> {
        run(op, inputs.into_iter().map(Some).collect())
    }

    /// A tensor from a shape and elements; panics on a bad shape (tests only).
    pub fn t<T: jiuzhou_ir::Elem>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).expect("test tensor shape")
    }

    /// The elements of an f32 output.
    pub fn f32s(r: Result<Tensor, String>) -> Vec<f32> {
        r.expect("op runs")
            .as_slice::<f32>()
            .expect("f32 output")
            .to_vec()
    }
}
