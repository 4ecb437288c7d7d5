//! Elementwise ops: unary math, activations, binary arithmetic with broadcasting, comparisons, logic, casts.

use super::{InferCx, InferError, InferOp, not_yet_inferred, same_as_input};
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
    Add, Sub, Mul, Div, Mod, BitwiseAnd, BitwiseOr, BitwiseXor, BitShift, And, Or, Xor, PRelu,
);

compare_broadcast!(Equal, Greater, GreaterOrEqual, Less, LessOrEqual);

variadic_broadcast!(Max, Min, Mean, Sum);

not_yet_inferred!(
    BitCast, Cast, CastLike, Clip, IsInf, IsNaN, Pow, SwiGLU, Where
);
