//! `CumSum` and `CumProd`: running sums and products along one axis.
//!
//! `exclusive=1` leaves the current element out (the first output is the identity, 0 or 1); `reverse=1` runs from
//! the end of the axis. Sums accumulate in [`Accum::Acc`] (f32 for f16/bf16).

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::{CumProd, CumSum};
use jiuzhou_ir::{Tensor, Value, dispatch_numeric};

use super::reductions::Plan;
use super::{Accum, scalar_int};
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Runs a cumulative `op` (starting from `init`) along the lines of a plan.
fn scan_slice<T: Accum>(
    v: &[T],
    plan: &Plan,
    exclusive: bool,
    reverse: bool,
    init: T::Acc,
    op: fn(T::Acc, T::Acc) -> T::Acc,
) -> Vec<T> {
    let mut out = v.to_vec();
    for &b in &plan.bases {
        let mut acc = init;
        let line: Box<dyn Iterator<Item = &usize>> = if reverse {
            Box::new(plan.rel.iter().rev())
        } else {
            Box::new(plan.rel.iter())
        };
        for &r in line {
            let x = v[b + r].to_acc();
            if exclusive {
                out[b + r] = T::from_acc(acc);
                acc = op(acc, x);
            } else {
                acc = op(acc, x);
                out[b + r] = T::from_acc(acc);
            }
        }
    }
    out
}

/// Evaluates `CumSum` (`product=false`) or `CumProd`.
fn eval_scan(
    cx: &EvalCx<'_>,
    exclusive: i64,
    reverse: i64,
    product: bool,
) -> Result<Vec<Value>, EvalError> {
    let x = cx.tensor(0)?;
    let ax = norm_axis(scalar_int(cx, 1, "the axis")?, x.rank())?;
    let mut reduced = vec![false; x.rank()];
    reduced[ax] = true;
    let plan = Plan::new(x.shape(), &reduced, true)?;
    let (exclusive, reverse) = (exclusive != 0, reverse != 0);
    let out = dispatch_numeric!(x, |v: &[T]| {
        type A = <T as Accum>::Acc;
        let out = if product {
            scan_slice::<T>(v, &plan, exclusive, reverse, A::one(), |a, b| a.mul(b))
        } else {
            scan_slice::<T>(v, &plan, exclusive, reverse, A::zero(), |a, b| a.add(b))
        };
        Tensor::from_vec(x.shape().to_vec(), out)?
    }, _ => eval_bail!("cannot accumulate {} values", x.dtype()));
    Ok(vec![out.into()])
}

impl EvalOp for CumSum {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_scan(cx, self.exclusive, self.reverse, false)
    }
}

impl EvalOp for CumProd {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        eval_scan(cx, self.exclusive, self.reverse, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reduce::tests::run;

    #[test]
    fn cumulative_sums_and_products() {
        let x = || Some(Tensor::vector(vec![1.0f64, 2.0, 3.0, 4.0, 5.0]));
        let axis = || Some(Tensor::scalar(0i32));
        let sum = |exclusive, reverse| run(CumSum { exclusive, reverse }, vec![x(), axis()]);
        assert_eq!(sum(0, 0), "f64[5] [1, 3, 6, 10, 15]");
        assert_eq!(sum(1, 0), "f64[5] [0, 1, 3, 6, 10]");
        assert_eq!(sum(0, 1), "f64[5] [15, 14, 12, 9, 5]");
        assert_eq!(sum(1, 1), "f64[5] [14, 12, 9, 5, 0]");
        let prod = |exclusive, reverse| run(CumProd { exclusive, reverse }, vec![x(), axis()]);
        assert_eq!(prod(0, 0), "f64[5] [1, 2, 6, 24, 120]");
        assert_eq!(prod(1, 1), "f64[5] [120, 60, 20, 5, 1]");
        let m = Tensor::from_vec(vec![2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let along = |a: i64| {
            run(
                CumSum::default(),
                vec![Some(m.clone()), Some(Tensor::vector(vec![a]))],
            )
        };
        assert_eq!(along(0), "i32[2, 3] [1, 2, 3, 5, 7, 9]");
        assert_eq!(along(-1), "i32[2, 3] [1, 3, 6, 4, 9, 15]");
        assert_eq!(along(2), "error: axis 2 is out of range for rank 2");
    }
}
