//! Unary math functions and activations.
//!
//! Float-only ops are declared by a formula in f64 ([`float_unary!`]): each element is widened to f64, the formula
//! applied, and the result rounded once to the input's dtype. Ops that also accept integers (`Abs`, `Neg`, `Sign`,
//! `Relu`) have an exact integer formula besides.

use jiuzhou_ir::Value;
use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::*;

use super::{Lane, bad_dtype, map_f64, map_with, one};
use crate::{EvalCx, EvalError, EvalOp};

/// The error function (musl's algorithm through the `libm` crate: rational approximations, under 1 ulp in f64).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// The logistic function, computed without overflow.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + exp(x))` (numpy's `logaddexp(0, x)`), computed without overflow.
fn softplus(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Declares float-only unary ops by a formula over `x: f64`; `op` names the op's attributes.
macro_rules! float_unary {
    ($($name:ident => |$op:pat_param, $x:ident| $body:expr;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let $op = self;
                one(map_f64(stringify!($name), cx.tensor(0)?, true, |$x: f64| $body)?)
            }
        }
    )*};
}

#[rustfmt::skip]
float_unary! {
    Acos            => |_, x| x.acos();
    Acosh           => |_, x| x.acosh();
    Asin            => |_, x| x.asin();
    Asinh           => |_, x| x.asinh();
    Atan            => |_, x| x.atan();
    Atanh           => |_, x| x.atanh();
    Ceil            => |_, x| x.ceil();
    Cos             => |_, x| x.cos();
    Cosh            => |_, x| x.cosh();
    Erf             => |_, x| erf(x);
    Exp             => |_, x| x.exp();
    Floor           => |_, x| x.floor();
    Log             => |_, x| x.ln();
    Reciprocal      => |_, x| 1.0 / x;
    // numpy's `round`: halves go to the even neighbour.
    Round           => |_, x| x.round_ties_even();
    Sigmoid         => |_, x| sigmoid(x);
    Sin             => |_, x| x.sin();
    Sinh            => |_, x| x.sinh();
    Softplus        => |_, x| softplus(x);
    Softsign        => |_, x| x / (1.0 + x.abs());
    Sqrt            => |_, x| x.sqrt();
    Tan             => |_, x| x.tan();
    Tanh            => |_, x| x.tanh();
    // max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    Celu            => |op, x| { let a = op.alpha as f64; x.max(0.0) + (a * (x / a).exp_m1()).min(0.0) };
    Elu             => |op, x| if x > 0.0 { x } else { op.alpha as f64 * x.exp_m1() };
    HardSigmoid     => |op, x| (op.alpha as f64 * x + op.beta as f64).clamp(0.0, 1.0);
    HardSwish       => |_, x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0);
    LeakyRelu       => |op, x| if x > 0.0 { x } else { op.alpha as f64 * x };
    Mish            => |_, x| x * softplus(x).tanh();
    Selu            => |op, x| op.gamma as f64 * if x > 0.0 { x } else { op.alpha as f64 * x.exp_m1() };
    Swish           => |op, x| x * sigmoid(op.alpha as f64 * x);
    ThresholdedRelu => |op, x| if x > op.alpha as f64 { x } else { 0.0 };
}

impl EvalOp for Gelu {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let y = match self.approximate.as_str() {
            "none" => map_f64("Gelu", x, true, |x| {
                0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
            })?,
            "tanh" => map_f64("Gelu", x, true, |x| {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            })?,
            other => crate::eval_bail!("Gelu: approximate = {other:?} is not \"none\" or \"tanh\""),
        };
        one(y)
    }
}

impl EvalOp for Shrink {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        // Shrink accepts integers too: numpy computes in float and casts back.
        let (bias, lambd) = (self.bias as f64, self.lambd as f64);
        one(map_f64("Shrink", cx.tensor(0)?, false, |x| {
            if x < -lambd {
                x + bias
            } else if x > lambd {
                x - bias
            } else {
                0.0
            }
        })?)
    }
}

/// Declares unary ops over every real numeric type by a float formula (in f64) and an exact formula over an
/// integer element `x: T` (using [`Num`]).
macro_rules! numeric_unary {
    ($($name:ident => float |$f:ident| $fbody:expr, int |$i:ident| $ibody:expr;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let t = cx.tensor(0)?;
                one(jiuzhou_ir::dispatch_numeric!(t, |_v: &[T]| {
                    if <T as Num>::IS_FLOAT {
                        map_f64(stringify!($name), t, true, |$f: f64| $fbody)
                    } else {
                        map_with::<T, T>(t, |&$i: &T| $ibody)
                    }
                }, _ => Err(bad_dtype(stringify!($name), t.dtype())))?)
            }
        }
    )*};
}

#[rustfmt::skip]
numeric_unary! {
    Abs  => float |x| x.abs(), int |x| if x < T::zero() { T::zero().sub(x) } else { x };
    Neg  => float |x| -x, int |x| T::zero().sub(x);
    Relu => float |x| x.max(0.0), int |x| if x > T::zero() { x } else { T::zero() };
    Sign => float |x| if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { x * 0.0 },
            int |x| if x > T::zero() { T::one() } else if x < T::zero() { T::zero().sub(T::one()) } else { x };
}

impl EvalOp for Not {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        if t.dtype() != jiuzhou_ir::DType::Bool {
            return Err(bad_dtype("Not", t.dtype()));
        }
        one(map_with::<bool, bool>(t, |x| !x)?)
    }
}

impl EvalOp for BitwiseNot {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        one(jiuzhou_ir::dispatch_numeric!(t, |_v: &[T]| {
            if <T as Num>::IS_FLOAT {
                return Err(bad_dtype("BitwiseNot", t.dtype()));
            }
            map_with::<T, T>(t, |&x| T::from_i128_wrapping(!x.to_i128()))
        }, _ => Err(bad_dtype("BitwiseNot", t.dtype())))?)
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use jiuzhou_ir::ops::*;

    use super::super::test_util::{f32s, run1, t};
    use super::erf;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (1e-5, 1.128_379_167_057_900_8e-5),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.5, 0.999_593_047_982_555),
            (-3.0, -0.999_977_909_503_001_4),
            (7.0, 1.0),
        ] {
            let got = erf(x);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1e-300),
                "erf({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn float_formulas() {
        let x = t(&[5], vec![-2.0f32, -0.5, 0.0, 0.5, 2.5]);
        assert_eq!(
            f32s(run1(Relu::default(), vec![x.clone()])),
            vec![0.0, 0.0, 0.0, 0.5, 2.5]
        );
        assert_eq!(
            f32s(run1(Round::default(), vec![x.clone()])),
            vec![-2.0, -0.0, 0.0, 0.0, 2.0]
        );
        assert_eq!(
            f32s(run1(Sign::default(), vec![x.clone()])),
            vec![-1.0, -1.0, 0.0, 1.0, 1.0]
        );
        assert_eq!(
            f32s(run1(LeakyRelu { alpha: 0.5 }, vec![x.clone()])),
            vec![-1.0, -0.25, 0.0, 0.5, 2.5]
        );
        assert_eq!(
            f32s(run1(ThresholdedRelu { alpha: 1.0 }, vec![x.clone()])),
            vec![0.0, 0.0, 0.0, 0.0, 2.5]
        );
        assert_eq!(
            f32s(run1(
                Shrink {
                    bias: 0.5,
                    lambd: 1.0
                },
                vec![x.clone()]
            )),
            vec![-1.5, 0.0, 0.0, 0.0, 2.0]
        );
        let g = f32s(run1(
            Gelu {
                approximate: "tanh".into(),
            },
            vec![x.clone()],
        ));
        assert!((g[4] - 2.484_918).abs() < 1e-5, "{g:?}");
        assert!(
            run1(
                Gelu {
                    approximate: "fast".into()
                },
                vec![x]
            )
            .is_err()
        );
    }

    #[test]
    fn halves_round_once() {
        let x = t(&[2], vec![f16::from_f32(1.0), f16::from_f32(-1.0)]);
        let y = run1(Exp::default(), vec![x]).unwrap();
        assert_eq!(
            y.as_slice::<f16>().unwrap(),
            &[f16::from_f64(1f64.exp()), f16::from_f64((-1f64).exp())]
        );
    }

    #[test]
    fn integer_formulas_are_exact() {
        let x = t(&[4], vec![i64::MIN, -3, 0, i64::MAX]);
        let abs = run1(Abs::default(), vec![x.clone()]).unwrap();
        assert_eq!(abs.as_slice::<i64>().unwrap(), &[i64::MIN, 3, 0, i64::MAX]);
        let neg = run1(Neg::default(), vec![x.clone()]).unwrap();
        assert_eq!(neg.as_slice::<i64>().unwrap(), &[i64::MIN, 3, 0, -i64::MAX]);
        let sign = run1(Sign::default(), vec![t(&[3], vec![0u8, 7, 255])]).unwrap();
        assert_eq!(sign.as_slice::<u8>().unwrap(), &[0, 1, 1]);
        let not = run1(BitwiseNot::default(), vec![t(&[2], vec![0u8, 0x0F])]).unwrap();
        assert_eq!(not.as_slice::<u8>().unwrap(), &[0xFF, 0xF0]);
    }

    #[test]
    fn bad_dtypes_are_errors() {
        assert!(run1(Exp::default(), vec![t(&[1], vec![1i32])]).is_err());
        assert!(run1(Not::default(), vec![t(&[1], vec![1i32])]).is_err());
        assert!(run1(BitwiseNot::default(), vec![t(&[1], vec![1.0f32])]).is_err());
        assert!(run1(Abs::default(), vec![t(&[1], vec![true])]).is_err());
    }

    #[test]
    fn empty_and_scalar_inputs() {
        let e = run1(Sqrt::default(), vec![t(&[0, 3], Vec::<f32>::new())]).unwrap();
        assert_eq!(e.shape(), &[0, 3]);
        let s = run1(Sqrt::default(), vec![t(&[], vec![4.0f64])]).unwrap();
        assert_eq!(s.as_slice::<f64>().unwrap(), &[2.0]);
    }
}
