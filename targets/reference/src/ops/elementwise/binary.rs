//! Binary and variadic elementwise ops with numpy broadcasting: arithmetic, comparisons, logic, bitwise ops,
//! `Mod`, `BitShift`, `Pow`, `Max`/`Min`/`Mean`/`Sum`, `Where`, `Clip`, `PRelu`, `SwiGLU`.

use jiuzhou_ir::num::{Num, ToF64};
use jiuzhou_ir::ops::*;
use jiuzhou_ir::{DType, Tensor, Value};

use super::{Lane, bad_dtype, broadcast_plan, map_with, one, same_dtypes, zip_with};
use crate::kernels::broadcast_shape;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Declares binary ops over two tensors of the same real numeric dtype by a formula over `x, y: T`.
///
/// `ints_only` ops reject floats.
macro_rules! numeric_binary {
    ($($name:ident $(($ints_only:ident))? => |$op:pat_param, $x:ident, $y:ident| $body:expr;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let $op = self;
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                same_dtypes(stringify!($name), &[a, b])?;
                one(jiuzhou_ir::dispatch_numeric!(a, |_v: &[T]| {
                    $( if stringify!($ints_only) == "ints" && <T as Num>::IS_FLOAT {
                        return Err(bad_dtype(stringify!($name), a.dtype()));
                    } )?
                    zip_with::<T, T, T>(a, b, |&$x, &$y| $body)
                }, _ => Err(bad_dtype(stringify!($name), a.dtype())))?)
            }
        }
    )*};
}

#[rustfmt::skip]
numeric_binary! {
    Add => |_, x, y| x.add(y);
    Sub => |_, x, y| x.sub(y);
    Mul => |_, x, y| x.mul(y);
    Div => |_, x, y| x.div(y);
    Mod => |op, x, y| modulo(x, y, op.fmod != 0);
    BitwiseAnd (ints) => |_, x, y| T::from_i128_wrapping(x.to_i128() & y.to_i128());
    BitwiseOr (ints) => |_, x, y| T::from_i128_wrapping(x.to_i128() | y.to_i128());
    BitwiseXor (ints) => |_, x, y| T::from_i128_wrapping(x.to_i128() ^ y.to_i128());
    BitShift (ints) => |op, x, y| shift::<T>(x, y, op.direction == "LEFT");
}

/// numpy's `mod` (`fmod = false`: the result has the divisor's sign) or C's `fmod` (`fmod = true`: the dividend's
/// sign). Integer division by zero gives 0, float division by zero NaN.
fn modulo<T: Lane>(x: T, y: T, fmod: bool) -> T {
    if T::IS_FLOAT {
        let (a, b) = (x.to_f64(), y.to_f64());
        let r = a % b;
        if fmod || b == 0.0 || b.is_nan() {
            return T::cast_f64(r);
        }
        // numpy's npy_divmod: a nonzero remainder takes the divisor's sign; a zero one is a zero of that sign.
        let r = if r != 0.0 {
            if (b < 0.0) != (r < 0.0) { r + b } else { r }
        } else {
            0f64.copysign(b)
        };
        return T::cast_f64(r);
    }
    let (a, b) = (x.to_i128(), y.to_i128());
    if b == 0 {
        return T::zero();
    }
    let r = a % b;
    let r = if !fmod && r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    };
    T::from_i128_wrapping(r)
}

/// `x << y` or `x >> y` as onnx's reference does: shifts by a negative amount or by the width or more give 0
/// (right shifts of negative signed values give -1); left shifts wrap; right shifts of signed values are arithmetic.
fn shift<T: Lane>(x: T, y: T, left: bool) -> T {
    let width = (std::mem::size_of::<T>() * 8) as i128;
    let (a, s) = (x.to_i128(), y.to_i128());
    if s < 0 || s >= width {
        return if !left && a < 0 {
            T::from_i128_wrapping(-1)
        } else {
            T::zero()
        };
    }
    if left {
        T::from_i128_wrapping(a << s)
    } else {
        T::from_i128_wrapping(a >> s)
    }
}

/// Declares comparisons returning bool over two tensors of the same dtype (numbers, and for `Equal` bool and
/// strings); NaN compares false.
macro_rules! compare {
    ($($name:ident => $cmp:tt;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                same_dtypes(stringify!($name), &[a, b])?;
                one(jiuzhou_ir::dispatch_any!(a, |_v: &[T]| {
                    zip_with::<T, T, bool>(a, b, |x, y| x $cmp y)
                }, _ => Err(bad_dtype(stringify!($name), a.dtype())))?)
            }
        }
    )*};
}

compare! {
    Equal => ==;
    Greater => >;
    GreaterOrEqual => >=;
    Less => <;
    LessOrEqual => <=;
}

/// Declares logic ops over two bool tensors.
macro_rules! logic {
    ($($name:ident => $f:expr;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
                if same_dtypes(stringify!($name), &[a, b])? != DType::Bool {
                    return Err(bad_dtype(stringify!($name), a.dtype()));
                }
                let f: fn(bool, bool) -> bool = $f;
                one(zip_with::<bool, bool, bool>(a, b, |&x, &y| f(x, y))?)
            }
        }
    )*};
}

logic! {
    And => |x, y| x && y;
    Or => |x, y| x || y;
    Xor => |x, y| x != y;
}

/// numpy's `maximum`: NaN wins.
fn max_nan<T: Num>(x: T, y: T) -> T {
    if x.is_nan() {
        x
    } else if y.is_nan() || y > x {
        y
    } else {
        x
    }
}

/// numpy's `minimum`: NaN wins.
fn min_nan<T: Num>(x: T, y: T) -> T {
    if x.is_nan() {
        x
    } else if y.is_nan() || y < x {
        y
    } else {
        x
    }
}

/// Declares variadic ops that fold their inputs pairwise with broadcasting, then finish with `$finish(acc, n)`.
macro_rules! variadic {
    ($($name:ident => |$x:ident, $y:ident| $fold:expr, |$acc:ident, $n:ident| $finish:expr;)*) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                let inputs = (0..cx.num_inputs()).map(|i| cx.tensor(i).map(|t| &**t)).collect::<Result<Vec<_>, _>>()?;
                let Some(&first) = inputs.first() else { eval_bail!("{} needs at least one input", stringify!($name)) };
                same_dtypes(stringify!($name), &inputs)?;
                one(jiuzhou_ir::dispatch_numeric!(first, |_v: &[T]| {
                    let mut acc: Tensor = first.clone();
                    for t in &inputs[1..] {
                        acc = zip_with::<T, T, T>(&acc, t, |&$x, &$y| $fold)?;
                    }
                    let $n = inputs.len() as f64;
                    let $acc = acc;
                    $finish
                }, _ => Err(bad_dtype(stringify!($name), first.dtype())))?)
            }
        }
    )*};
}

variadic! {
    Max => |x, y| max_nan(x, y), |acc, _n| Ok(acc);
    Min => |x, y| min_nan(x, y), |acc, _n| Ok(acc);
    Sum => |x, y| x.add(y), |acc, _n| Ok(acc);
    Mean => |x, y| x.add(y), |acc, n| map_with::<T, T>(&acc, |&s| s.div(T::cast_f64(n)));
}

impl EvalOp for Where {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (c, x, y) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        let cond = c.as_slice::<bool>().map_err(|_| {
            EvalError::new(format!("Where: the condition is {}, not bool", c.dtype()))
        })?;
        same_dtypes("Where", &[x, y])?;
        one(jiuzhou_ir::dispatch_any!(x, |xv: &[T]| {
            let yv = y.as_slice::<T>()?;
            let (shape, offs) = broadcast_plan(&[c.shape(), x.shape(), y.shape()], x.dtype())?;
            let out: Vec<T> = (0..offs[0].len())
                .map(|k| if cond[offs[0][k]] { xv[offs[1][k]].clone() } else { yv[offs[2][k]].clone() })
                .collect();
            Tensor::from_vec(shape, out).map_err(EvalError::from)
        }, _ => Err(bad_dtype("Where", x.dtype())))?)
    }
}

impl EvalOp for Clip {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let (lo, hi) = (cx.opt_tensor(1)?, cx.opt_tensor(2)?);
        for b in [lo, hi].into_iter().flatten() {
            same_dtypes("Clip", &[x, b])?;
            if b.len() != 1 {
                eval_bail!(
                    "Clip: min and max must be scalars, got shape {:?}",
                    b.shape()
                );
            }
        }
        one(jiuzhou_ir::dispatch_numeric!(x, |_v: &[T]| {
            let bound = |b: Option<&std::sync::Arc<Tensor>>| -> Result<Option<T>, EvalError> {
                Ok(match b {
                    Some(b) => Some(b.as_slice::<T>()?[0]),
                    None => None,
                })
            };
            let (lo, hi) = (bound(lo)?, bound(hi)?);
            // numpy's clip is minimum(maximum(x, lo), hi): with lo > hi everything becomes hi; NaN stays NaN.
            map_with::<T, T>(x, |&v| {
                let v = match lo { Some(l) if v < l => l, _ => v };
                match hi { Some(h) if v > h => h, _ => v }
            })
        }, _ => Err(bad_dtype("Clip", x.dtype())))?)
    }
}

impl EvalOp for PRelu {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, slope) = (cx.tensor(0)?, cx.tensor(1)?);
        same_dtypes("PRelu", &[x, slope])?;
        // The slope broadcasts to X; a 1-D slope that does not also matches the one axis of X of its length.
        let slope: Tensor = if broadcast_shape(&[x.shape(), slope.shape()]).is_ok() {
            (**slope).clone()
        } else {
            let n = slope.len();
            let matching: Vec<usize> = (0..x.rank()).filter(|&i| x.shape()[i] == n).collect();
            match (slope.rank(), matching.as_slice()) {
                (1, &[axis]) => {
                    let shape = (0..x.rank())
                        .map(|i| if i == axis { n } else { 1 })
                        .collect();
                    (**slope).clone().reshape(shape)?
                }
                _ => eval_bail!(
                    "PRelu: slope of shape {:?} does not broadcast to {:?}",
                    slope.shape(),
                    x.shape()
                ),
            }
        };
        one(jiuzhou_ir::dispatch_numeric!(x, |_v: &[T]| {
            zip_with::<T, T, T>(x, &slope, |&v, &s| if v > T::zero() { v } else { v.mul(s) })
        }, _ => Err(bad_dtype("PRelu", x.dtype())))?)
    }
}

/// `x^n` for integers, wrapping; negative powers truncate `1 / x^|n|` toward zero.
fn int_pow(x: i128, n: i128, wrap: impl Fn(i128) -> i128) -> i128 {
    if n < 0 {
        return match x {
            1 => 1,
            -1 => {
                if n % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let (mut base, mut n, mut acc) = (wrap(x), n, 1i128);
    while n > 0 {
        if n & 1 == 1 {
            acc = wrap(acc.wrapping_mul(base));
        }
        base = wrap(base.wrapping_mul(base));
        n >>= 1;
    }
    acc
}

impl EvalOp for Pow {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, e) = (cx.tensor(0)?, cx.tensor(1)?);
        // The exponent may have any numeric dtype; integers are kept exact for integer powers.
        let int_exp = e.dtype().is_int();
        let exps: Vec<f64> = e.to_f64_vec().ok_or_else(|| bad_dtype("Pow", e.dtype()))?;
        let iexps: Vec<i64> = if int_exp {
            e.to_i64_vec().unwrap_or_default()
        } else {
            Vec::new()
        };
        let shape_e = e.shape().to_vec();
        let et = Tensor::from_vec(shape_e.clone(), exps)?;
        let it = if int_exp {
            Tensor::from_vec(shape_e, iexps)?
        } else {
            et.clone()
        };
        one(jiuzhou_ir::dispatch_numeric!(x, |_v: &[T]| {
            if !<T as Num>::IS_FLOAT && int_exp {
                zip_with::<T, i64, T>(x, &it, |&b, &n| {
                    T::from_i128_wrapping(int_pow(b.to_i128(), n as i128, |v| T::from_i128_wrapping(v).to_i128()))
                })
            } else {
                // numpy computes in the promoted float type and casts back to the base's dtype.
                zip_with::<T, f64, T>(x, &et, |&b, &n| T::cast_f64(b.to_f64().powf(n)))
            }
        }, _ => Err(bad_dtype("Pow", x.dtype())))?)
    }
}

impl EvalOp for SwiGLU {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
        same_dtypes("SwiGLU", &[a, b])?;
        if a.shape() != b.shape() {
            eval_bail!(
                "SwiGLU: inputs have different shapes {:?} and {:?}",
                a.shape(),
                b.shape()
            );
        }
        let alpha = self.alpha as f64;
        one(jiuzhou_ir::dispatch_numeric!(a, |_v: &[T]| {
            if !<T as Num>::IS_FLOAT {
                return Err(bad_dtype("SwiGLU", a.dtype()));
            }
            zip_with::<T, T, T>(a, b, |&x, &y| {
                let x = x.to_f64();
                T::cast_f64(x / (1.0 + (-alpha * x).exp()) * y.to_f64())
            })
        }, _ => Err(bad_dtype("SwiGLU", a.dtype())))?)
    }
}

#[cfg(test)]
mod tests {
    use half::f16;
    use jiuzhou_ir::ops::*;
    use jiuzhou_ir::{Op, Tensor};

    use super::super::test_util::{f32s, run, run1, t};

    fn bin(op: impl Into<Op>, a: Tensor, b: Tensor) -> Tensor {
        run1(op, vec![a, b]).expect("op runs")
    }

    #[test]
    fn arithmetic_broadcasts() {
        let a = t(&[2, 1], vec![1.0f32, 2.0]);
        let b = t(&[3], vec![10.0f32, 20.0, 30.0]);
        let c = bin(Add::default(), a.clone(), b.clone());
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(
            c.as_slice::<f32>().unwrap(),
            &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
        // Rank 0 against a size-0 dim.
        let e = bin(
            Mul::default(),
            t(&[], vec![2i32]),
            t(&[0, 4], Vec::<i32>::new()),
        );
        assert_eq!(e.shape(), &[0, 4]);
        let s = bin(Sub::default(), t(&[], vec![2u8]), t(&[], vec![3u8]));
        assert_eq!(s.as_slice::<u8>().unwrap(), &[255]);
        let d = bin(
            Div::default(),
            t(&[3], vec![-7i32, 7, 7]),
            t(&[3], vec![2i32, -2, 0]),
        );
        assert_eq!(d.as_slice::<i32>().unwrap(), &[-3, -3, 0]);
    }

    #[test]
    fn mismatches_are_errors() {
        assert!(
            run1(
                Add::default(),
                vec![t(&[1], vec![1.0f32]), t(&[1], vec![1i32])]
            )
            .is_err()
        );
        assert!(
            run1(
                Add::default(),
                vec![t(&[2], vec![1.0f32; 2]), t(&[3], vec![1.0f32; 3])]
            )
            .is_err()
        );
        assert!(
            run1(
                Add::default(),
                vec![t(&[1], vec![true]), t(&[1], vec![true])]
            )
            .is_err()
        );
        assert!(run1(And::default(), vec![t(&[1], vec![1u8]), t(&[1], vec![1u8])]).is_err());
        assert!(
            run1(
                BitwiseAnd::default(),
                vec![t(&[1], vec![1.0f32]), t(&[1], vec![1.0f32])]
            )
            .is_err()
        );
        assert!(
            run1(
                SwiGLU::default(),
                vec![t(&[2], vec![1.0f32; 2]), t(&[1], vec![1.0f32])]
            )
            .is_err()
        );
        assert!(
            run1(
                Where::default(),
                vec![t(&[1], vec![1u8]), t(&[1], vec![1u8]), t(&[1], vec![1u8])]
            )
            .is_err()
        );
    }

    #[test]
    fn modulo_follows_numpy_and_fmod() {
        let a = t(&[4], vec![-7i32, 7, -7, 5]);
        let b = t(&[4], vec![2i32, -2, -2, 0]);
        let m = bin(Mod { fmod: 0 }, a.clone(), b.clone());
        assert_eq!(m.as_slice::<i32>().unwrap(), &[1, -1, -1, 0]);
        let f = bin(Mod { fmod: 1 }, a, b);
        assert_eq!(f.as_slice::<i32>().unwrap(), &[-1, 1, -1, 0]);
        let x = t(&[3], vec![-4.5f32, 4.5, 6.0]);
        let y = t(&[3], vec![2.0f32, -2.0, -3.0]);
        let m = f32s(run1(Mod { fmod: 0 }, vec![x.clone(), y.clone()]));
        assert_eq!(m, vec![1.5, -1.5, -0.0]);
        assert!(m[2].is_sign_negative());
        assert_eq!(
            f32s(run1(Mod { fmod: 1 }, vec![x, y])),
            vec![-0.5, 0.5, 0.0]
        );
    }

    #[test]
    fn shifts_and_bitwise() {
        let a = t(&[5], vec![-8i8, 1, 64, -1, 3]);
        let s = t(&[5], vec![1i8, 8, 1, -1, 2]);
        let l = bin(
            BitShift {
                direction: "LEFT".into(),
            },
            a.clone(),
            s.clone(),
        );
        assert_eq!(l.as_slice::<i8>().unwrap(), &[-16, 0, -128, 0, 12]);
        let r = bin(
            BitShift {
                direction: "RIGHT".into(),
            },
            a,
            s,
        );
        assert_eq!(r.as_slice::<i8>().unwrap(), &[-4, 0, 32, -1, 0]);
        let x = bin(
            BitwiseXor::default(),
            t(&[2], vec![0xF0u64, u64::MAX]),
            t(&[1], vec![0xFFu64]),
        );
        assert_eq!(x.as_slice::<u64>().unwrap(), &[0x0F, u64::MAX - 0xFF]);
    }

    #[test]
    fn comparisons_and_logic() {
        let e = bin(
            Equal::default(),
            t(&[2], vec!["a".to_string(), "b".into()]),
            t(&[], vec!["b".to_string()]),
        );
        assert_eq!(e.as_slice::<bool>().unwrap(), &[false, true]);
        let g = bin(
            Greater::default(),
            t(&[3], vec![1.0f32, f32::NAN, 3.0]),
            t(&[1], vec![2.0f32]),
        );
        assert_eq!(g.as_slice::<bool>().unwrap(), &[false, false, true]);
        let x = bin(
            Xor::default(),
            t(&[2, 1], vec![true, false]),
            t(&[2], vec![true, false]),
        );
        assert_eq!(x.as_slice::<bool>().unwrap(), &[false, true, true, false]);
    }

    #[test]
    fn variadic_ops() {
        let a = t(&[3], vec![1.0f32, f32::NAN, 5.0]);
        let b = t(&[1], vec![3.0f32]);
        let c = t(&[2, 1], vec![0.0f32, 10.0]);
        let m = f32s(run1(Max::default(), vec![a.clone(), b.clone(), c.clone()]));
        assert_eq!(m.len(), 6);
        assert_eq!(m[0], 3.0);
        assert!(m[1].is_nan());
        assert_eq!((m[2], m[3], m[5]), (5.0, 10.0, 10.0));
        assert!(m[4].is_nan());
        assert_eq!(
            f32s(run1(Sum::default(), vec![b.clone(), b.clone(), b.clone()])),
            vec![9.0]
        );
        assert_eq!(
            f32s(run1(
                Mean::default(),
                vec![t(&[2], vec![1.0f32, 2.0]), b.clone()]
            )),
            vec![2.0, 2.5]
        );
        assert_eq!(f32s(run1(Min::default(), vec![b])), vec![3.0]);
        assert!(run(Sum::default(), vec![]).is_err());
    }

    #[test]
    fn where_clip_prelu_pow_swiglu() {
        let w = run1(
            Where::default(),
            vec![
                t(&[2, 1], vec![true, false]),
                t(&[2], vec![1i64, 2]),
                t(&[], vec![9i64]),
            ],
        )
        .unwrap();
        assert_eq!(w.as_slice::<i64>().unwrap(), &[1, 2, 9, 9]);
        let x = t(&[4], vec![-3.0f32, 0.5, 7.0, f32::NAN]);
        let c = f32s(run(
            Clip::default(),
            vec![
                Some(x.clone()),
                Some(t(&[], vec![0.0f32])),
                Some(t(&[], vec![1.0f32])),
            ],
        ));
        assert_eq!(&c[..3], &[0.0, 0.5, 1.0]);
        assert!(c[3].is_nan());
        let c = f32s(run(
            Clip::default(),
            vec![Some(x.clone()), None, Some(t(&[], vec![1.0f32]))],
        ));
        assert_eq!(&c[..3], &[-3.0, 0.5, 1.0]);
        let c = f32s(run(
            Clip::default(),
            vec![
                Some(x),
                Some(t(&[], vec![2.0f32])),
                Some(t(&[], vec![1.0f32])),
            ],
        ));
        assert_eq!(&c[..3], &[1.0, 1.0, 1.0]);
        let p = f32s(run1(
            PRelu::default(),
            vec![
                t(&[2, 3], vec![-1.0f32, -1.0, 1.0, -2.0, -2.0, 2.0]),
                t(&[2, 1], vec![0.5f32, 0.25]),
            ],
        ));
        assert_eq!(p, vec![-0.5, -0.5, 1.0, -0.5, -0.5, 2.0]);
        let p = f32s(run1(
            PRelu::default(),
            vec![
                t(&[3, 2], vec![-1.0f32; 6]),
                t(&[3], vec![1.0f32, 2.0, 3.0]),
            ],
        ));
        assert_eq!(p, vec![-1.0, -1.0, -2.0, -2.0, -3.0, -3.0]);
        let q = bin(
            Pow::default(),
            t(&[3], vec![2i32, 3, -2]),
            t(&[3], vec![10i64, 2, 3]),
        );
        assert_eq!(q.as_slice::<i32>().unwrap(), &[1024, 9, -8]);
        let q = bin(
            Pow::default(),
            t(&[2], vec![2i64, 9]),
            t(&[1], vec![0.5f32]),
        );
        assert_eq!(q.as_slice::<i64>().unwrap(), &[1, 3]);
        let q = f32s(run1(
            Pow::default(),
            vec![t(&[2], vec![4.0f32, 2.0]), t(&[1], vec![-1i64])],
        ));
        assert_eq!(q, vec![0.25, 0.5]);
        let s = run1(
            SwiGLU::default(),
            vec![
                t(&[1], vec![f16::from_f32(1.0)]),
                t(&[1], vec![f16::from_f32(2.0)]),
            ],
        )
        .unwrap();
        assert_eq!(
            s.as_slice::<f16>().unwrap(),
            &[f16::from_f64(2.0 / (1.0 + (-1f64).exp()))]
        );
    }
}
