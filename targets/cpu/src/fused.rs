//! The epilogue of jiuzhou's fused ops (FusedConv, FusedMatMul) on the CPU: what follows the product.
//!
//! The product itself runs on the [`crate::linalg`] kernels (a FusedConv's bias, and a Relu when there is no
//! residual, go into the conv kernel's own epilogue); then, over the finished output, the matrix product's bias
//! and the residual are added in the reference's order (`(product + bias) + Z`) and the activation is applied.
//! `none`, `relu` and `clip` are exact in f32; the other activations are computed as the CPU's own kernels for
//! the ONNX ops they stand for compute them ([`crate::native::Activation`]: sigmoid, tanh, hard-swish and
//! leaky-relu in f64 rounded once, SiLU as `x·sigmoid(x)` rounded twice like the reference's `Mul(x,
//! Sigmoid(x))`, GELU on a rational erf), so a fused node gives the bits of the unfused chain on this target.

use jiuzhou_ir::ops::Activation;
use jiuzhou_ir::{Dim, Op};

use crate::ExecError;
use crate::native;

/// Whether the CPU computes `act` itself (every activation of the IR).
pub fn supports_activation(act: &Activation) -> bool {
    match act {
        Activation::None
        | Activation::Relu
        | Activation::Clip { .. }
        | Activation::Silu
        | Activation::Sigmoid
        | Activation::Gelu
        | Activation::GeluTanh
        | Activation::HardSwish
        | Activation::LeakyRelu { .. }
        | Activation::Tanh => true,
    }
}

/// Whether the CPU runs `op` with its own kernels: a fused op whose activation it computes (every other op it
/// either runs or falls back for, see [`crate::CpuExecutable::fallback_ops`]).
pub fn runs_natively(op: &Op) -> bool {
    match op {
        Op::FusedConv(c) => supports_activation(&c.activation),
        Op::FusedMatMul(m) => supports_activation(&m.activation),
        _ => true,
    }
}

/// How an addend (bias or residual) lines up with the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addend {
    /// One value for every element.
    Scalar,
    /// One value per index of the last axis (`[.., 1, N]`).
    Row,
    /// One value per element (the output's own shape).
    Full,
}

/// The [`Addend`] kind of a shape against the output's, with leading 1s of the addend ignored; `None` when the
/// addend broadcasts some other way (the node then falls back).
pub fn addend_kind<D: PartialEq + Clone>(addend: &[D], out: &[D], one: &D) -> Option<Addend> {
    if addend.len() > out.len() {
        return None;
    }
    let first = addend.iter().position(|d| d != one).unwrap_or(addend.len());
    let a = &addend[first..];
    if a.is_empty() {
        return Some(Addend::Scalar);
    }
    let lead = out.len() - addend.len();
    // The full shape: the addend is the output's shape, up to leading 1s of the output.
    if addend == &out[lead..] && out[..lead].iter().all(|d| d == one) {
        return Some(Addend::Full);
    }
    if a.len() == 1 && out.last() == a.last() {
        return Some(Addend::Row);
    }
    None
}

/// The [`Addend`] kind of static types (dims may be symbolic: equal symbols are equal sizes).
pub fn static_addend_kind(addend: &[Dim], out: &[Dim]) -> Option<Addend> {
    addend_kind(addend, out, &Dim::Known(1))
}

/// Adds `addend` (of shape `ash`) to `out` (of shape `osh`) in place.
pub fn add(out: &mut [f32], osh: &[usize], addend: &[f32], ash: &[usize]) -> Result<(), ExecError> {
    let kind = addend_kind(ash, osh, &1).ok_or_else(|| {
        ExecError::new(format!(
            "a fused addend of shape {ash:?} does not line up with the output {osh:?}"
        ))
    })?;
    match kind {
        Addend::Scalar => {
            let [v] = addend else {
                return Err(ExecError::new("a scalar addend has more than one value"));
            };
            out.iter_mut().for_each(|o| *o += v);
        }
        Addend::Row => {
            let n = addend.len();
            if n == 0 || !out.len().is_multiple_of(n) {
                return Err(ExecError::new("a bias row does not divide the output"));
            }
            for row in out.chunks_exact_mut(n) {
                row.iter_mut().zip(addend).for_each(|(o, a)| *o += a);
            }
        }
        Addend::Full => {
            if out.len() != addend.len() {
                return Err(ExecError::new("a residual differs in size from the output"));
            }
            out.iter_mut().zip(addend).for_each(|(o, a)| *o += a);
        }
    }
    Ok(())
}

/// Applies `act` to `out` in place, as the CPU computes the ONNX ops it stands for.
pub fn activate(out: &mut [f32], act: &Activation) -> Result<(), ExecError> {
    let unary = |a: native::Activation, out: &mut [f32]| a.apply_in_place(out);
    match *act {
        Activation::None => {}
        // The reference's `x.max(0.0)`: NaN gives 0.
        Activation::Relu => out.iter_mut().for_each(|v| *v = v.max(0.0)),
        // The reference's Clip: numpy's minimum(maximum(x, lo), hi); NaN stays NaN.
        Activation::Clip { min, max } => out.iter_mut().for_each(|v| {
            if *v < min {
                *v = min;
            }
            if *v > max {
                *v = max;
            }
        }),
        // Mul(x, Sigmoid(x)): the sigmoid rounded to f32, then an f32 product.
        Activation::Silu => {
            let mut sig = [0f32; 256];
            for chunk in out.chunks_mut(sig.len()) {
                let sig = &mut sig[..chunk.len()];
                sig.copy_from_slice(chunk);
                native::Activation::Sigmoid.apply_in_place(sig);
                chunk.iter_mut().zip(sig.iter()).for_each(|(v, s)| *v *= s);
            }
        }
        Activation::Sigmoid => unary(native::Activation::Sigmoid, out),
        Activation::Gelu => unary(native::Activation::Gelu, out),
        Activation::GeluTanh => unary(native::Activation::GeluTanh, out),
        Activation::HardSwish => unary(native::Activation::HardSwish, out),
        Activation::LeakyRelu { alpha } => unary(native::Activation::LeakyRelu(alpha), out),
        Activation::Tanh => unary(native::Activation::Tanh, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addends_line_up() {
        assert_eq!(addend_kind(&[5], &[2, 3, 5], &1), Some(Addend::Row));
        assert_eq!(addend_kind(&[1, 1, 5], &[2, 3, 5], &1), Some(Addend::Row));
        assert_eq!(addend_kind(&[], &[2, 3], &1), Some(Addend::Scalar));
        assert_eq!(addend_kind(&[1], &[2, 3], &1), Some(Addend::Scalar));
        assert_eq!(addend_kind(&[2, 3, 5], &[2, 3, 5], &1), Some(Addend::Full));
        assert_eq!(addend_kind(&[3, 5], &[1, 3, 5], &1), Some(Addend::Full));
        // [4, 1] against [4, 4] broadcasts along rows: not a bias row.
        assert_eq!(addend_kind(&[4, 1], &[4, 4], &1), None);
        assert_eq!(addend_kind(&[3, 5], &[2, 3, 5], &1), None);
        assert_eq!(addend_kind(&[1, 5], &[5], &1), None);
    }

    #[test]
    fn add_and_activate() {
        let mut out = vec![1.0f32, -2.0, 3.0, -4.0];
        add(&mut out, &[2, 2], &[1.0, 10.0], &[2]).unwrap();
        assert_eq!(out, [2.0, 8.0, 4.0, 6.0]);
        add(&mut out, &[2, 2], &[-5.0, 0.0, 0.0, 0.0], &[2, 2]).unwrap();
        activate(&mut out, &Activation::Clip { min: 0.0, max: 7.0 }).unwrap();
        assert_eq!(out, [0.0, 7.0, 4.0, 6.0]);
        assert!(add(&mut out, &[2, 2], &[1.0, 2.0], &[2, 1]).is_err());
        let mut y = vec![-1.0f32, 0.5];
        activate(&mut y, &Activation::Silu).unwrap();
        let s = |x: f32| native::Activation::Sigmoid.apply(x);
        assert_eq!(y, [-s(-1.0), 0.5 * s(0.5)]);
    }
}
