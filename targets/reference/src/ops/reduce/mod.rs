//! Reductions, scans, top-k, losses, and signal-processing ops.
//!
//! One submodule per kind: [`reductions`] (`Reduce*`, `ArgMax`, `ArgMin`), [`scan`] (`CumSum`, `CumProd`),
//! [`topk`], [`nms`] (`NonMaxSuppression`), [`linalg`] (`Det`), [`signal`] (`DFT`, `STFT`, windows,
//! `MelWeightMatrix`) and [`loss`] (`NegativeLogLikelihoodLoss`, `SoftmaxCrossEntropyLoss`).
//!
//! Semantics follow ONNX's numpy reference (`onnx/reference/ops`), which is what the node tests are generated from.

use half::{bf16, f16};
use jiuzhou_ir::num::Num;
use jiuzhou_ir::{DType, Tensor};

use crate::{EvalError, eval_bail};

pub mod linalg;
pub mod loss;
pub mod nms;
mod pocketfft;
pub mod reductions;
pub mod scan;
pub mod signal;
pub mod topk;

/// A numeric element type together with the type its sums and products accumulate in.
///
/// Integers accumulate in themselves (wrapping, as numpy does with `dtype=x.dtype`); `f16` and `bf16` accumulate in
/// f32 so long sums do not lose precision at every step; f32 and f64 accumulate in themselves.
pub trait Accum: Num {
    /// The accumulator type.
    type Acc: Num;
    /// Widens an element to the accumulator type.
    fn to_acc(self) -> Self::Acc;
    /// Narrows an accumulated value back to the element type.
    fn from_acc(a: Self::Acc) -> Self;
}

macro_rules! accum_in_self {
    ($($t:ty),*) => {$(
        impl Accum for $t {
            type Acc = $t;
            fn to_acc(self) -> $t { self }
            fn from_acc(a: $t) -> $t { a }
        }
    )*};
}

accum_in_self!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

macro_rules! accum_in_f32 {
    ($($t:ty),*) => {$(
        impl Accum for $t {
            type Acc = f32;
            fn to_acc(self) -> f32 { self.to_f32() }
            fn from_acc(a: f32) -> $t { <$t>::from_f32(a) }
        }
    )*};
}

accum_in_f32!(f16, bf16);

/// Applies a real function to a numeric value through f64 (exact for f32 results: f64 then one rounding).
pub(crate) fn via_f64<A: Num>(a: A, f: impl Fn(f64) -> f64) -> A {
    A::from_f64(f(a.to_f64()))
}

/// Builds a tensor of `dtype` from f64 values (a C cast per element: floats round, ints truncate and saturate).
pub(crate) fn tensor_from_f64(
    dtype: DType,
    shape: Vec<usize>,
    values: Vec<f64>,
) -> Result<Tensor, EvalError> {
    fn conv<T: Num>(shape: Vec<usize>, values: Vec<f64>) -> Result<Tensor, EvalError> {
        Ok(Tensor::from_vec(
            shape,
            values.into_iter().map(T::from_f64).collect::<Vec<T>>(),
        )?)
    }
    match dtype {
        DType::F32 => conv::<f32>(shape, values),
        DType::F64 => conv::<f64>(shape, values),
        DType::F16 => conv::<f16>(shape, values),
        DType::BF16 => conv::<bf16>(shape, values),
        DType::U8 => conv::<u8>(shape, values),
        DType::I8 => conv::<i8>(shape, values),
        DType::U16 => conv::<u16>(shape, values),
        DType::I16 => conv::<i16>(shape, values),
        DType::U32 => conv::<u32>(shape, values),
        DType::I32 => conv::<i32>(shape, values),
        DType::U64 => conv::<u64>(shape, values),
        DType::I64 => conv::<i64>(shape, values),
        other => eval_bail!("cannot produce {other} values"),
    }
}

/// The elements of a float tensor (f16, bf16, f32, f64) as f64, or an error naming `what`.
pub(crate) fn float_values(t: &Tensor, what: &str) -> Result<Vec<f64>, EvalError> {
    match t.dtype() {
        DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {
            t.to_f64_vec().ok_or_else(|| EvalError::new("unreachable"))
        }
        other => eval_bail!("{what} must be a float tensor, got {other}"),
    }
}

/// The single integer held by a scalar or one-element tensor input `i` of `cx`.
pub(crate) fn scalar_int(cx: &crate::EvalCx<'_>, i: usize, what: &str) -> Result<i64, EvalError> {
    match cx.ints(i)?.as_slice() {
        [v] => Ok(*v),
        other => eval_bail!("{what} must hold one value, got {}", other.len()),
    }
}

/// Row-major offsets of every multi-index over `dims`, each given as `(size, stride)`.
///
/// The first dim varies slowest, so the offsets come in the natural (row-major) order of those dims.
pub(crate) fn offsets(dims: &[(usize, usize)]) -> Vec<usize> {
    let mut out = vec![0usize];
    for &(size, stride) in dims {
        out = out
            .iter()
            .flat_map(|&o| (0..size).map(move |i| o + i * stride))
            .collect();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    //! The one place the tests of this family call the interpreter.

    use jiuzhou_ir::{GraphBuilder, Op, TensorType, Value};

    use super::*;
    use crate::Interpreter;

    /// Formats a tensor as `dtype[shape] [values]` (floats in their shortest form, bools as 0/1).
    pub(crate) fn fmt_tensor(t: &Tensor) -> String {
        let values: Vec<String> = match t.dtype() {
            DType::F64 => t
                .to_f64_vec()
                .unwrap_or_default()
                .iter()
                .map(|x| x.to_string())
                .collect(),
            DType::F32 | DType::F16 | DType::BF16 => t
                .to_f64_vec()
                .unwrap_or_default()
                .iter()
                .map(|&x| (x as f32).to_string())
                .collect(),
            _ => t
                .to_i64_vec()
                .unwrap_or_default()
                .iter()
                .map(|x| x.to_string())
                .collect(),
        };
        format!("{}{:?} [{}]", t.dtype(), t.shape(), values.join(", "))
    }

    /// Runs `op` on `inputs` (graph inputs of exactly their types; `None` is an absent optional input) with
    /// `num_outputs` outputs and formats the outputs, separated by ` | `, or the error as `error: ...`.
    ///
    /// Each output is also checked against the type inference gave it: a known dim that differs is reported.
    pub(crate) fn run_n(
        op: impl Into<Op>,
        inputs: Vec<Option<Tensor>>,
        num_outputs: usize,
    ) -> String {
        let op = op.into();
        let mut b = GraphBuilder::new("test");
        let ids: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_ref()
                    .map(|t| b.input(&format!("x{i}"), TensorType::known(t.dtype(), t.shape())))
            })
            .collect();
        let outs = match b.node_opt(op, &ids, num_outputs) {
            Ok(o) => o,
            Err(e) => return format!("inference error: {e}"),
        };
        let tys: Vec<_> = outs.iter().map(|&o| b.ty(o).clone()).collect();
        for &o in &outs {
            b.output(o);
        }
        let graph = b.finish().expect("a valid graph");
        let values: Vec<Value> = inputs.into_iter().flatten().map(Value::from).collect();
        match Interpreter::default().run(&graph, values) {
            Ok(outs) => outs
                .iter()
                .zip(tys)
                .map(|(v, ty)| {
                    let t = v.as_tensor().expect("a tensor output");
                    let s = fmt_tensor(t);
                    let got = v.value_type();
                    let want = ty.as_tensor().expect("a tensor type");
                    let agrees = want.dtype == t.dtype()
                        && want.shape.as_ref().is_none_or(|dims| {
                            dims.len() == t.rank()
                                && dims
                                    .iter()
                                    .zip(t.shape())
                                    .all(|(d, &n)| d.known().is_none_or(|k| k == n))
                        });
                    if agrees {
                        s
                    } else {
                        format!("{s} (inferred {ty}, got {got})")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | "),
            Err(e) => {
                let msg = e.0;
                let msg = msg
                    .split_once("): ")
                    .map_or(msg.clone(), |(_, m)| m.to_string());
                format!("error: {msg}")
            }
        }
    }

    /// [`run_n`] with one output.
    pub(crate) fn run(op: impl Into<Op>, inputs: Vec<Option<Tensor>>) -> String {
        run_n(op, inputs, 1)
    }
}
