//! `Reduce*` over a set of axes, and `ArgMax`/`ArgMin` along one axis.
//!
//! Every reduction visits the reduced elements of each output element in row-major order and accumulates in
//! [`Accum::Acc`] (f32 for f16/bf16). An empty set of values reduces to the identity: 0 for sums, 1 for products,
//! the lowest value for `ReduceMax` (−inf, or the integer minimum, or `false`), the highest for `ReduceMin`, −inf
//! for the log-sums. With `noop_with_empty_axes=1` and no axes nothing is reduced, so each output element is its
//! own one-element set (numpy's `axis=()`).

use jiuzhou_ir::num::{Num, ToF64};
use jiuzhou_ir::ops::*;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Data, Tensor, Value, dispatch_numeric};

use super::{Accum, offsets, via_f64};
use crate::kernels::{axis as norm_axis, strides};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Which reduction to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Σx.
    Sum,
    /// Σx / n.
    Mean,
    /// Πx.
    Prod,
    /// max x.
    Max,
    /// min x.
    Min,
    /// Σ|x|.
    L1,
    /// √Σx².
    L2,
    /// ln Σx.
    LogSum,
    /// ln Σeˣ, computed stably around the largest finite value.
    LogSumExp,
    /// Σx².
    SumSquare,
}

/// How the elements of a tensor group into reductions.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The output shape (reduced dims kept as 1 or dropped).
    pub out_shape: Vec<usize>,
    /// For each output element in row-major order, the input offset of its first reduced element.
    pub bases: Vec<usize>,
    /// The offsets of the reduced elements relative to a base, in row-major order.
    pub rel: Vec<usize>,
}

impl Plan {
    /// Groups the elements of a tensor of `shape`, reducing the axes where `reduced` is true.
    pub fn new(shape: &[usize], reduced: &[bool], keepdims: bool) -> Result<Plan, EvalError> {
        let st = strides(shape);
        let (mut out_shape, mut kept, mut red) = (vec![], vec![], vec![]);
        for (i, &d) in shape.iter().enumerate() {
            if reduced.get(i).copied().unwrap_or(false) {
                red.push((d, st[i]));
                if keepdims {
                    out_shape.push(1);
                }
            } else {
                kept.push((d, st[i]));
                out_shape.push(d);
            }
        }
        let n_out = checked_numel(&out_shape, DType::F64)?;
        let bases = if n_out == 0 { vec![] } else { offsets(&kept) };
        // With no output element there is nothing to reduce (and the reduced dims may be huge).
        let rel = if n_out == 0 { vec![] } else { offsets(&red) };
        Ok(Plan {
            out_shape,
            bases,
            rel,
        })
    }

    /// The plan of a `Reduce*` op: `axes` as given (possibly negative); none given means every axis, unless
    /// `noop_with_empty_axes` is set, which means none.
    pub fn for_axes(
        shape: &[usize],
        axes: &[i64],
        keepdims: bool,
        noop_with_empty_axes: bool,
    ) -> Result<Plan, EvalError> {
        let rank = shape.len();
        let mut reduced = vec![axes.is_empty() && !noop_with_empty_axes; rank];
        for &a in axes {
            let a = norm_axis(a, rank)?;
            if reduced[a] {
                eval_bail!("axis {a} is listed twice");
            }
            reduced[a] = true;
        }
        Plan::new(shape, &reduced, keepdims)
    }
}

/// Reduces one group of values.
pub fn reduce_group<T: Accum>(kind: Kind, vals: impl Iterator<Item = T> + Clone) -> T {
    if !T::IS_FLOAT && matches!(kind, Kind::L2 | Kind::LogSum | Kind::LogSumExp) {
        // Square roots and logarithms of integers: compute in f64, cast the result back.
        let wide: Vec<f64> = vals.map(|x| x.to_f64()).collect();
        return T::from_f64(reduce_group::<f64>(kind, wide.into_iter()));
    }
    let zero = <T::Acc as Num>::zero();
    let sum_of = |f: fn(T::Acc) -> T::Acc| vals.clone().fold(zero, |s, x| s.add(f(x.to_acc())));
    match kind {
        Kind::Sum => T::from_acc(sum_of(|a| a)),
        Kind::Mean => {
            let n = vals.clone().count();
            T::from_acc(sum_of(|a| a).div(T::Acc::from_f64(n as f64)))
        }
        Kind::Prod => T::from_acc(vals.fold(T::Acc::one(), |p, x| p.mul(x.to_acc()))),
        Kind::Max => vals.fold(
            T::min_value(),
            |m, x| if x.is_nan() || x > m { x } else { m },
        ),
        Kind::Min => vals.fold(
            T::max_value(),
            |m, x| if x.is_nan() || x < m { x } else { m },
        ),
        Kind::L1 => T::from_acc(sum_of(|a| {
            if a < T::Acc::zero() {
                T::Acc::zero().sub(a)
            } else {
                a
            }
        })),
        Kind::SumSquare => T::from_acc(sum_of(|a| a.mul(a))),
        Kind::L2 => T::from_acc(via_f64(sum_of(|a| a.mul(a)), f64::sqrt)),
        Kind::LogSum => T::from_acc(via_f64(sum_of(|a| a), f64::ln)),
        Kind::LogSumExp => {
            // Shift by the largest finite value so exp never overflows; infinities pass through exp unchanged.
            let finite = vals
                .clone()
                .map(|x| x.to_acc())
                .filter(|a| a.to_f64().is_finite());
            let mx = finite.fold(None, |m: Option<T::Acc>, a| match m {
                Some(m) if m >= a => Some(m),
                _ => Some(a),
            });
            let mx = mx.unwrap_or(zero);
            let s = vals.fold(zero, |s, x| s.add(via_f64(x.to_acc().sub(mx), f64::exp)));
            T::from_acc(via_f64(s, f64::ln).add(mx))
        }
    }
}

/// Reduces a numeric slice along a plan.
fn reduce_slice<T: Accum>(v: &[T], plan: &Plan, kind: Kind) -> Result<Tensor, EvalError> {
    let out: Vec<T> = plan
        .bases
        .iter()
        .map(|&b| reduce_group(kind, plan.rel.iter().map(move |&r| v[b + r])))
        .collect();
    Ok(Tensor::from_vec(plan.out_shape.clone(), out)?)
}

/// Evaluates a `Reduce*` node.
fn eval_reduce(
    cx: &EvalCx<'_>,
    kind: Kind,
    keepdims: i64,
    noop_with_empty_axes: i64,
) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    let axes = cx.opt_ints(1)?.unwrap_or_default();
    let plan = Plan::for_axes(x.shape(), &axes, keepdims != 0, noop_with_empty_axes != 0)?;
    let out = match x.data() {
        Data::Bool(v) if matches!(kind, Kind::Max | Kind::Min) => {
            let any = kind == Kind::Max;
            let out: Vec<bool> = plan
                .bases
                .iter()
                .map(|&b| {
                    let mut group = plan.rel.iter().map(|&r| v[b + r]);
                    if any {
                        group.any(|x| x)
                    } else {
                        group.all(|x| x)
                    }
                })
                .collect();
            Tensor::from_vec(plan.out_shape.clone(), out)?
        }
        _ => dispatch_numeric!(x, |v: &[T]| reduce_slice::<T>(v, &plan, kind)?, _ => {
            eval_bail!("cannot reduce a {} tensor", x.dtype())
        }),
    };
    Ok(vec![out.into()])
}

macro_rules! reduce_ops {
    ($($name:ident => $kind:ident),* $(,)?) => {$(
        impl EvalOp for $name {
            fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
                eval_reduce(cx, Kind::$kind, self.keepdims, self.noop_with_empty_axes)
            }
        }
    )*};
}

reduce_ops!(
    ReduceSum => Sum,
    ReduceMean => Mean,
    ReduceProd => Prod,
    ReduceMax => Max,
    ReduceMin => Min,
    ReduceL1 => L1,
    ReduceL2 => L2,
    ReduceLogSum => LogSum,
    ReduceLogSumExp => LogSumExp,
    ReduceSumSquare => SumSquare,
);

/// The index of the largest (`max`) or smallest value of a group; NaN wins over numbers, as in numpy.
fn arg_of<T: Num>(vals: impl Iterator<Item = T>, max: bool, last: bool) -> Option<i64> {
    let mut best: Option<(i64, T)> = None;
    for (i, x) in vals.enumerate() {
        let take = match best {
            None => true,
            Some((_, b)) if b.is_nan() => last && x.is_nan(),
            Some(_) if x.is_nan() => true,
            Some((_, b)) => {
                let beats = if max { x > b } else { x < b };
                beats || (last && x == b)
            }
        };
        if take {
            best = Some((i as i64, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Evaluates `ArgMax` (`max`) or `ArgMin`.
fn eval_arg(
    cx: &EvalCx<'_>,
    axis: i64,
    keepdims: i64,
    last: i64,
    max: bool,
) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    let ax = norm_axis(axis, x.rank())?;
    let mut reduced = vec![false; x.rank()];
    reduced[ax] = true;
    let plan = Plan::new(x.shape(), &reduced, keepdims != 0)?;
    fn run<T: Num>(v: &[T], plan: &Plan, max: bool, last: bool) -> Result<Vec<i64>, EvalError> {
        plan.bases
            .iter()
            .map(|&b| {
                arg_of(plan.rel.iter().map(|&r| v[b + r]), max, last)
                    .ok_or_else(|| EvalError::new("cannot take the arg-extremum of an empty axis"))
            })
            .collect()
    }
    let out = dispatch_numeric!(x, |v: &[T]| run::<T>(v, &plan, max, last != 0)?, _ => {
        eval_bail!("cannot compare {} values", x.dtype())
    });
    Ok(vec![Tensor::from_vec(plan.out_shape, out)?.into()])
}

impl EvalOp for ArgMax {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_arg(cx, self.axis, self.keepdims, self.select_last_index, true)
    }
}

impl EvalOp for ArgMin {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_arg(cx, self.axis, self.keepdims, self.select_last_index, false)
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::Op;

    use super::*;
    use crate::ops::reduce::tests::run;

    fn x() -> Tensor {
        Tensor::from_vec(vec![2, 3], vec![1.0f32, -2.0, 3.0, 4.0, 5.0, -6.0]).unwrap()
    }

    fn axes(a: Vec<i64>) -> Option<Tensor> {
        Some(Tensor::vector(a))
    }

    fn reduce(op: impl Into<Op>, x: Tensor, axes: Option<Tensor>) -> String {
        run(op, vec![Some(x), axes])
    }

    #[test]
    fn every_reduction_over_rows() {
        let k = |keepdims| (keepdims, 0);
        macro_rules! check {
            ($op:ident, $keep:expr, $axes:expr, $want:expr) => {
                let (keepdims, noop_with_empty_axes) = k($keep);
                let op = $op {
                    keepdims,
                    noop_with_empty_axes,
                };
                assert_eq!(reduce(op, x(), $axes), $want, stringify!($op));
            };
        }
        check!(ReduceSum, 1, axes(vec![1]), "f32[2, 1] [2, 3]");
        check!(ReduceSum, 0, axes(vec![0]), "f32[3] [5, 3, -3]");
        check!(ReduceSum, 0, None, "f32[] [5]");
        check!(ReduceMean, 0, axes(vec![-1]), "f32[2] [0.6666667, 1]");
        check!(ReduceProd, 0, axes(vec![1]), "f32[2] [-6, -120]");
        check!(ReduceMax, 0, axes(vec![1]), "f32[2] [3, 5]");
        check!(ReduceMin, 0, axes(vec![1]), "f32[2] [-2, -6]");
        check!(ReduceL1, 0, axes(vec![1]), "f32[2] [6, 15]");
        check!(
            ReduceL2,
            0,
            axes(vec![0]),
            "f32[3] [4.1231055, 5.3851647, 6.708204]"
        );
        check!(ReduceSumSquare, 0, axes(vec![1]), "f32[2] [14, 77]");
        check!(
            ReduceLogSum,
            0,
            axes(vec![0]),
            "f32[3] [1.609438, 1.0986123, NaN]"
        );
        check!(
            ReduceLogSumExp,
            0,
            axes(vec![1]),
            "f32[2] [3.1328452, 5.313274]"
        );
    }

    #[test]
    fn empty_sets_reduce_to_the_identity() {
        let empty = || Tensor::from_vec(vec![2, 0, 2], Vec::<f32>::new()).unwrap();
        let keep = |op| reduce(op, empty(), axes(vec![1]));
        assert_eq!(
            keep(Op::ReduceSum(ReduceSum::default())),
            "f32[2, 1, 2] [0, 0, 0, 0]"
        );
        assert_eq!(
            keep(Op::ReduceProd(ReduceProd::default())),
            "f32[2, 1, 2] [1, 1, 1, 1]"
        );
        assert_eq!(
            keep(Op::ReduceMax(ReduceMax::default())),
            "f32[2, 1, 2] [-inf, -inf, -inf, -inf]"
        );
        assert_eq!(
            keep(Op::ReduceLogSumExp(ReduceLogSumExp::default())),
            "f32[2, 1, 2] [-inf, -inf, -inf, -inf]"
        );
        let ints = Tensor::from_vec(vec![0, 2], Vec::<i32>::new()).unwrap();
        assert_eq!(
            reduce(ReduceMin::default(), ints, axes(vec![0])),
            "i32[1, 2] [2147483647, 2147483647]"
        );
        // A non-reduced zero dim leaves nothing to compute.
        assert_eq!(
            reduce(ReduceSum::default(), empty(), axes(vec![2])),
            "f32[2, 0, 1] []"
        );
    }

    #[test]
    fn noop_axes_ints_bools_and_halves() {
        let noop = ReduceSumSquare {
            keepdims: 1,
            noop_with_empty_axes: 1,
        };
        assert_eq!(
            reduce(noop, x(), axes(vec![])),
            "f32[2, 3] [1, 4, 9, 16, 25, 36]"
        );
        let bytes = Tensor::vector(vec![200u8, 100]);
        assert_eq!(reduce(ReduceSum::default(), bytes, None), "u8[1] [44]");
        let ints = Tensor::vector(vec![7i32, 2]);
        assert_eq!(reduce(ReduceMean::default(), ints, None), "i32[1] [4]");
        let bools = Tensor::from_vec(vec![2, 2], vec![true, false, false, false]).unwrap();
        assert_eq!(
            reduce(ReduceMax::default(), bools.clone(), axes(vec![1])),
            "bool[2, 1] [1, 0]"
        );
        assert_eq!(
            reduce(ReduceMin::default(), bools, axes(vec![1])),
            "bool[2, 1] [0, 0]"
        );
        // 4096 + 1 + 1 + ... is exact when accumulated in f32, not when rounded to f16 at every step.
        let mut v = vec![half::f16::from_f32(4096.0)];
        v.extend(std::iter::repeat_n(half::f16::from_f32(1.0), 8));
        assert_eq!(
            reduce(ReduceSum::default(), Tensor::vector(v), None),
            "f16[1] [4104]"
        );
        let nan = Tensor::vector(vec![1.0f64, f64::NAN, 3.0]);
        assert_eq!(reduce(ReduceMax::default(), nan, None), "f64[1] [NaN]");
    }

    #[test]
    fn bad_axes_are_errors() {
        assert_eq!(
            reduce(ReduceSum::default(), x(), axes(vec![2])),
            "error: axis 2 is out of range for rank 2"
        );
        assert_eq!(
            reduce(ReduceSum::default(), x(), axes(vec![0, -2])),
            "error: axis 0 is listed twice"
        );
        let strings = Tensor::vector(vec!["a".to_string()]);
        assert_eq!(
            reduce(ReduceSum::default(), strings, None),
            "inference error: ReduceSum: input 0 has dtype string, expected a numeric type"
        );
    }

    #[test]
    fn argmax_and_argmin() {
        let t = Tensor::from_vec(vec![2, 3], vec![2.0f32, 1.0, 2.0, 0.0, 5.0, 0.0]).unwrap();
        let arg = |max: bool, axis, keepdims, last| {
            let op: Op = if max {
                ArgMax {
                    axis,
                    keepdims,
                    select_last_index: last,
                }
                .into()
            } else {
                ArgMin {
                    axis,
                    keepdims,
                    select_last_index: last,
                }
                .into()
            };
            run(op, vec![Some(t.clone())])
        };
        assert_eq!(arg(true, 1, 1, 0), "i64[2, 1] [0, 1]");
        assert_eq!(arg(true, 1, 0, 1), "i64[2] [2, 1]");
        assert_eq!(arg(false, -1, 0, 0), "i64[2] [1, 0]");
        assert_eq!(arg(false, 1, 0, 1), "i64[2] [1, 2]");
        assert_eq!(arg(true, 0, 1, 0), "i64[1, 3] [0, 1, 0]");
        let nan = Tensor::vector(vec![1.0f32, f32::NAN, 3.0, f32::NAN]);
        let op = ArgMax::default();
        assert_eq!(run(op, vec![Some(nan)]), "i64[1] [1]");
        let empty = Tensor::from_vec(vec![0, 2], Vec::<f32>::new()).unwrap();
        assert_eq!(
            run(ArgMin::default(), vec![Some(empty)]),
            "error: cannot take the arg-extremum of an empty axis"
        );
    }
}
