//! Elementwise ops: unary math, activations, binary arithmetic with broadcasting, comparisons, logic, casts.

use super::{InferCx, InferError, InferOp, same_as_input};
use crate::infer_bail;
use crate::ops::*;
use crate::{DType, Dim, Shape, TensorType, ValueType};

/// Multidirectional (numpy) broadcasting of static shapes.
///
/// Dims are aligned from the right; a known 1 stretches to the other dim; a symbol meets a known size `n > 1` as
/// `n`; two different symbols give the first one (they must be equal or one of them 1 at run time, which the
/// runtime checks). Unknown rank anywhere gives unknown rank.
pub fn broadcast_shapes(shapes: &[&Shape]) -> Result<Shape, InferError> {
    let mut out: Vec<Dim> = Vec::new();
    for s in shapes {
        let Some(dims) = s else { return Ok(None) };
        if dims.len() > out.len() {
            let mut padded = vec![Dim::Known(1); dims.len() - out.len()];
            padded.extend(out);
            out = padded;
        }
        let off = out.len() - dims.len();
        for (i, d) in dims.iter().enumerate() {
            let o = &mut out[off + i];
            *o = match (&*o, d) {
                (Dim::Known(1), d) => d.clone(),
                (o, Dim::Known(1)) => o.clone(),
                (Dim::Known(a), Dim::Known(b)) if a == b => Dim::Known(*a),
                (Dim::Known(a), Dim::Known(b)) => {
                    let all: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                    return Err(InferError::new(format!(
                        "shapes {} do not broadcast ({a} vs {b})",
                        all.join(" and ")
                    )));
                }
                (Dim::Known(a), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(a)) => Dim::Known(*a),
                (Dim::Sym(a), Dim::Sym(_)) => Dim::Sym(a.clone()),
            };
        }
    }
    Ok(Some(out))
}

fn fmt_shape(s: &Shape) -> String {
    match s {
        None => "[*]".into(),
        Some(d) => format!(
            "[{}]",
            d.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The broadcast result of inputs `0..n` with output dtype `dtype` (the inputs' common dtype if `None`).
fn broadcast_inputs(
    cx: &InferCx<'_>,
    n: usize,
    dtype: Option<DType>,
) -> Result<Vec<ValueType>, InferError> {
    let mut shapes = Vec::with_capacity(n);
    let first = cx.tensor(0)?.dtype;
    for i in 0..n {
        let t = cx.tensor(i)?;
        if dtype.is_none() && t.dtype != first {
            return Err(InferError::new(format!(
                "input {i} has dtype {}, input 0 has {first}",
                t.dtype
            )));
        }
        shapes.push(&t.shape);
    }
    let shape = broadcast_shapes(&shapes)?;
    Ok(vec![ValueType::Tensor(TensorType {
        dtype: dtype.unwrap_or(first),
        shape,
    })])
}

macro_rules! unary_same_type {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                cx.tensor(0)?;
                same_as_input(cx, 0)
            }
        }
    )*};
}

macro_rules! binary_broadcast {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                broadcast_inputs(cx, 2, None)
            }
        }
    )*};
}

macro_rules! compare_broadcast {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                if cx.tensor(0)?.dtype != cx.tensor(1)?.dtype {
                    return Err(InferError::new("inputs have different dtypes"));
                }
                broadcast_inputs(cx, 2, Some(DType::Bool))
            }
        }
    )*};
}

macro_rules! variadic_broadcast {
    ($($name:ident),* $(,)?) => {$(
        impl InferOp for $name {
            fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
                if cx.num_inputs() == 0 {
                    return Err(InferError::new("needs at least one input"));
                }
                broadcast_inputs(cx, cx.num_inputs(), None)
            }
        }
    )*};
}

unary_same_type!(
    Abs,
    Acos,
    Acosh,
    Asin,
    Asinh,
    Atan,
    Atanh,
    BitwiseNot,
    Ceil,
    Celu,
    Cos,
    Cosh,
    Elu,
    Erf,
    Exp,
    Floor,
    Gelu,
    HardSigmoid,
    HardSwish,
    LeakyRelu,
    Log,
    Mish,
    Neg,
    Not,
    Reciprocal,
    Relu,
    Round,
    Selu,
    Shrink,
    Sigmoid,
    Sign,
    Sin,
    Sinh,
    Softplus,
    Softsign,
    Sqrt,
    Swish,
    Tan,
    Tanh,
    ThresholdedRelu,
);

binary_broadcast!(
    Add, Sub, Mul, Div, Mod, BitwiseAnd, BitwiseOr, BitwiseXor, BitShift, And, Or, Xor,
);

compare_broadcast!(Equal, Greater, GreaterOrEqual, Less, LessOrEqual);

variadic_broadcast!(Max, Min, Mean, Sum);

impl InferOp for FusedElementwise {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let n = self.expr.num_inputs();
        if cx.num_inputs() != n {
            return Err(InferError::new(format!(
                "the expression `{}` reads {n} inputs, the node has {}",
                self.expr,
                cx.num_inputs()
            )));
        }
        let out = broadcast_inputs(cx, n, None)?;
        let dtype = cx.tensor(0)?.dtype;
        if !dtype.is_float() {
            infer_bail!("FusedElementwise computes floats, got {dtype}");
        }
        Ok(out)
    }
}

/// One output with input `i`'s shape and the given dtype.
fn same_shape_as(cx: &InferCx<'_>, i: usize, dtype: DType) -> Result<Vec<ValueType>, InferError> {
    let t = cx.tensor(i)?;
    Ok(vec![ValueType::Tensor(TensorType {
        dtype,
        shape: t.shape.clone(),
    })])
}

/// The dtype named by a `to` attribute (an ONNX `TensorProto.DataType` code).
fn dtype_attr(to: i64) -> Result<DType, InferError> {
    DType::from_onnx_code(to)
        .ok_or_else(|| InferError::new(format!("`to` = {to} is not a known dtype")))
}

impl InferOp for Cast {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        same_shape_as(cx, 0, dtype_attr(self.to)?)
    }
}

impl InferOp for CastLike {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let to = cx.tensor(1)?.dtype;
        same_shape_as(cx, 0, to)
    }
}

impl InferOp for BitCast {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let from = cx.tensor(0)?.dtype;
        let to = dtype_attr(self.to)?;
        if from == DType::String || to == DType::String {
            infer_bail!("BitCast does not accept strings ({from} to {to})");
        }
        if from.size_in_bytes() != to.size_in_bytes() || from.is_bits() != to.is_bits() {
            infer_bail!("BitCast needs dtypes of the same width, got {from} and {to}");
        }
        same_shape_as(cx, 0, to)
    }
}

impl InferOp for Clip {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let d = cx.tensor(0)?.dtype;
        for i in 1..3 {
            if let Some(t) = cx.opt_tensor(i)?
                && t.dtype != d
            {
                infer_bail!("input {i} has dtype {}, input 0 has {d}", t.dtype);
            }
        }
        same_as_input(cx, 0)
    }
}

impl InferOp for IsInf {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        same_shape_as(cx, 0, DType::Bool)
    }
}

impl InferOp for IsNaN {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        same_shape_as(cx, 0, DType::Bool)
    }
}

impl InferOp for Pow {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        // The exponent may have another numeric dtype; the result has the base's.
        let base = cx.tensor(0)?.dtype;
        broadcast_inputs(cx, 2, Some(base))
    }
}

impl InferOp for PRelu {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        // The slope broadcasts to X (unidirectionally), so the result has X's type.
        let (x, slope) = (cx.tensor(0)?, cx.tensor(1)?);
        if x.dtype != slope.dtype {
            infer_bail!("slope has dtype {}, X has {}", slope.dtype, x.dtype);
        }
        same_as_input(cx, 0)
    }
}

impl InferOp for SwiGLU {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        // No broadcasting: both inputs have the same shape.
        let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
        if a.dtype != b.dtype {
            infer_bail!("inputs have different dtypes ({} and {})", a.dtype, b.dtype);
        }
        if let (Some(x), Some(y)) = (a.known_dims(), b.known_dims())
            && x != y
        {
            infer_bail!("inputs have different shapes {x:?} and {y:?}");
        }
        same_as_input(cx, 0)
    }
}

impl InferOp for Where {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let (c, x, y) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        if c.dtype != DType::Bool {
            infer_bail!("the condition has dtype {}, expected bool", c.dtype);
        }
        if x.dtype != y.dtype {
            infer_bail!("X has dtype {} and Y has {}", x.dtype, y.dtype);
        }
        let shape = broadcast_shapes(&[&c.shape, &x.shape, &y.shape])?;
        Ok(vec![ValueType::Tensor(TensorType {
            dtype: x.dtype,
            shape,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::test_util::infer_types;

    /// A tensor type from `dtype` and dims (`"n"` is a symbol, digits are known sizes); `None` dims is unranked.
    fn ty(dtype: DType, dims: Option<&[&str]>) -> Option<ValueType> {
        let shape = dims.map(|d| {
            d.iter()
                .map(|s| {
                    s.parse::<usize>()
                        .map_or_else(|_| Dim::from(*s), Dim::Known)
                })
                .collect()
        });
        Some(ValueType::Tensor(TensorType { dtype, shape }))
    }

    /// Runs inference of `op` and prints the output type, or the error.
    fn check(op: impl Into<Op>, inputs: Vec<Option<ValueType>>) -> String {
        infer_types(op, &inputs, &[], 1)
    }

    #[test]
    fn broadcasting() {
        let f = |d: &[&str]| ty(DType::F32, Some(d));
        assert_eq!(
            check(Add::default(), vec![f(&["2", "1"]), f(&["3"])]),
            "f32[2,3]"
        );
        assert_eq!(
            check(Add::default(), vec![f(&["n", "1"]), f(&["4"])]),
            "f32[n,4]"
        );
        assert_eq!(
            check(Add::default(), vec![f(&[]), f(&["0", "5"])]),
            "f32[0,5]"
        );
        assert_eq!(
            check(Add::default(), vec![f(&["2"]), ty(DType::F32, None)]),
            "f32[*]"
        );
        assert!(check(Add::default(), vec![f(&["2"]), f(&["3"])]).starts_with("error"));
        assert!(
            check(
                Add::default(),
                vec![f(&["2"]), ty(DType::I32, Some(&["2"]))]
            )
            .starts_with("error")
        );
        assert_eq!(
            check(Less::default(), vec![f(&["2"]), f(&["1"])]),
            "bool[2]"
        );
        assert_eq!(
            check(Sum::default(), vec![f(&["2", "1"]), f(&["1"]), f(&["3"])]),
            "f32[2,3]"
        );
        assert!(check(Sum::default(), vec![]).starts_with("error"));
    }

    #[test]
    fn casts_and_classification() {
        let x = ty(DType::F32, Some(&["n", "2"]));
        let to = |d: DType| d.onnx_code() as i64;
        assert_eq!(
            check(
                Cast {
                    to: to(DType::F8E4M3FN),
                    ..Default::default()
                },
                vec![x.clone()]
            ),
            "f8e4m3fn[n,2]"
        );
        assert!(
            check(
                Cast {
                    to: 0,
                    ..Default::default()
                },
                vec![x.clone()]
            )
            .starts_with("error")
        );
        assert_eq!(
            check(
                CastLike::default(),
                vec![x.clone(), ty(DType::I4, Some(&[]))]
            ),
            "i4[n,2]"
        );
        assert_eq!(
            check(BitCast { to: to(DType::I32) }, vec![x.clone()]),
            "i32[n,2]"
        );
        assert!(check(BitCast { to: to(DType::I64) }, vec![x.clone()]).starts_with("error"));
        assert_eq!(check(IsNaN::default(), vec![x.clone()]), "bool[n,2]");
        assert_eq!(check(IsInf::default(), vec![x]), "bool[n,2]");
    }

    #[test]
    fn mixed_and_ternary_ops() {
        let f = |d: &[&str]| ty(DType::F32, Some(d));
        assert_eq!(
            check(Pow::default(), vec![f(&["3"]), ty(DType::I64, Some(&[]))]),
            "f32[3]"
        );
        let c = ty(DType::Bool, Some(&["2", "1"]));
        assert_eq!(
            check(Where::default(), vec![c.clone(), f(&["3"]), f(&[])]),
            "f32[2,3]"
        );
        assert!(
            check(
                Where::default(),
                vec![c.clone(), f(&["3"]), ty(DType::I32, Some(&[]))]
            )
            .starts_with("error")
        );
        assert!(
            check(Where::default(), vec![f(&["1"]), f(&["3"]), f(&["3"])]).starts_with("error")
        );
        assert_eq!(
            check(Clip::default(), vec![f(&["4"]), None, f(&[])]),
            "f32[4]"
        );
        assert!(
            check(Clip::default(), vec![f(&["4"]), ty(DType::F64, Some(&[]))]).starts_with("error")
        );
        assert_eq!(
            check(PRelu::default(), vec![f(&["2", "3"]), f(&["3"])]),
            "f32[2,3]"
        );
        assert_eq!(
            check(SwiGLU::default(), vec![f(&["n", "4"]), f(&["n", "4"])]),
            "f32[n,4]"
        );
        assert!(check(SwiGLU::default(), vec![f(&["4"]), f(&["2"])]).starts_with("error"));
        assert_eq!(check(Relu::default(), vec![f(&["5"])]), "f32[5]");
    }
}
