//! Data movement: reshapes, transposes, slicing, gathers and scatters, padding, concatenation, shape queries.
//!
//! The rules are exact whenever the shape-carrying inputs (`Reshape`'s target, `Slice`'s bounds, `Pad`'s pads, ...)
//! are constants and the input dims are known; a dim that is a product or quotient of symbols, or that depends on
//! data (`NonZero`, `Unique`, `Compress`), gets a fresh symbol. Shared dim arithmetic lives here; the rules are
//! split by kind into [`shape`] (shape queries and reshapes), [`layout`] (moving elements without choosing them by
//! data) and [`index`] (gathers, scatters and data-dependent sizes).

use super::{InferCx, InferError};
use crate::{DType, Dim, TensorType, ValueType};

mod index;
mod layout;
mod shape;

#[cfg(test)]
mod tests;

/// A tensor value type with the given dims.
fn tensor(dtype: DType, dims: Vec<Dim>) -> ValueType {
    ValueType::Tensor(TensorType::new(dtype, dims))
}

/// A tensor value type of unknown rank.
fn unranked(dtype: DType) -> ValueType {
    ValueType::Tensor(TensorType::unranked(dtype))
}

/// The product of `dims`: known if every factor is, a symbol when it is the only factor other than 1, `0` if any
/// factor is a known 0, and a fresh symbol otherwise.
fn product(cx: &mut InferCx<'_>, dims: &[Dim], hint: &str) -> Dim {
    let mut known: usize = 1;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Known(0) => return Dim::Known(0),
            Dim::Known(n) => known = known.saturating_mul(*n),
            Dim::Sym(_) => syms.push(d),
        }
    }
    match (syms.as_slice(), known) {
        ([], n) => Dim::Known(n),
        ([s], 1) => (*s).clone(),
        _ => cx.fresh(hint),
    }
}

/// `d * k`: known if `d` is, `d` itself for `k == 1`, a fresh symbol otherwise.
fn scale(cx: &mut InferCx<'_>, d: &Dim, k: usize, hint: &str) -> Dim {
    match d {
        Dim::Known(n) => Dim::Known(n.saturating_mul(k)),
        _ if k == 1 => d.clone(),
        _ => cx.fresh(hint),
    }
}

/// `d / k` for a `d` that must be a multiple of `k`.
fn divide(cx: &mut InferCx<'_>, d: &Dim, k: usize, hint: &str) -> Result<Dim, InferError> {
    match d {
        Dim::Known(n) if k != 0 && n % k == 0 => Ok(Dim::Known(n / k)),
        Dim::Known(n) => Err(InferError::new(format!("dim {n} is not a multiple of {k}"))),
        _ if k == 1 => Ok(d.clone()),
        _ => Ok(cx.fresh(hint)),
    }
}

/// The sum of `dims`: known if every term is, the only term that is not a known 0, or a fresh symbol.
fn sum(cx: &mut InferCx<'_>, dims: &[Dim], hint: &str) -> Dim {
    let mut known: usize = 0;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Known(n) => known = known.saturating_add(*n),
            Dim::Sym(_) => syms.push(d),
        }
    }
    match (syms.as_slice(), known) {
        ([], n) => Dim::Known(n),
        ([s], 0) => (*s).clone(),
        _ => cx.fresh(hint),
    }
}

/// The better-informed of two dims that must be equal: a known size over a symbol.
fn unify(a: &Dim, b: &Dim, what: &str) -> Result<Dim, InferError> {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) if x != y => {
            Err(InferError::new(format!("{what}: dims {x} and {y} differ")))
        }
        (Dim::Known(_), _) => Ok(a.clone()),
        (_, Dim::Known(_)) => Ok(b.clone()),
        _ => Ok(a.clone()),
    }
}

/// Normalizes axes against `rank`, rejecting duplicates.
fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, InferError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = super::normalize_axis(a, rank)?;
        if out.contains(&a) {
            return Err(InferError::new(format!("axis {a} is repeated")));
        }
        out.push(a);
    }
    Ok(out)
}

/// The length of a rank-1 input, if its only dim is known (the number of entries of a shape-like input).
fn vector_len(cx: &InferCx<'_>, i: usize) -> Result<Option<usize>, InferError> {
    Ok(match cx.dims(i)? {
        Some([d]) => d.known(),
        Some([]) => Some(1),
        _ => None,
    })
}

/// Converts a list of non-negative i64 to dims.
fn known_dims(values: &[i64], what: &str) -> Result<Vec<Dim>, InferError> {
    values
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .map(Dim::Known)
                .map_err(|_| InferError::new(format!("{what} has negative entry {v}")))
        })
        .collect()
}

/// Checks that an input holds integers (the dtype of shapes, axes and indices).
fn expect_int(cx: &InferCx<'_>, i: usize, what: &str) -> Result<(), InferError> {
    let d = cx.tensor(i)?.dtype;
    if d.is_int() {
        Ok(())
    } else {
        Err(InferError::new(format!(
            "{what} (input {i}) should be an integer tensor, got {d}"
        )))
    }
}
