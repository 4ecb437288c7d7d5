//! `TopK`: the `k` largest (or smallest) elements along an axis, with their indices.
//!
//! Output is always sorted (`sorted=0` leaves the order unspecified, so sorted is conformant). Equal values keep the
//! lower index first; NaN counts as larger than every number, as in numpy's sort.

use std::cmp::Ordering;

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::TopK;
use jiuzhou_ir::{Tensor, Value, dispatch_numeric};

use super::reductions::Plan;
use super::scalar_int;
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// A total order on numbers in which NaN is the largest value.
pub(crate) fn nan_last<T: Num>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Selects the top `k` of every line of `v` (as grouped by `plan`) into the lines of `out_plan`.
fn topk_slice<T: Num>(
    v: &[T],
    plan: &Plan,
    out_plan: &Plan,
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let n_out = out_plan.bases.len() * k;
    let mut values = vec![T::zero(); n_out];
    let mut indices = vec![0i64; n_out];
    let mut order: Vec<usize> = (0..plan.rel.len()).collect();
    for (&b, &ob) in plan.bases.iter().zip(&out_plan.bases) {
        let at = |i: usize| v[b + plan.rel[i]];
        order.sort_by(|&i, &j| {
            let by_value = if largest {
                nan_last(at(j), at(i))
            } else {
                nan_last(at(i), at(j))
            };
            by_value.then(i.cmp(&j))
        });
        for (slot, &i) in order.iter().take(k).enumerate() {
            let o = ob + out_plan.rel[slot];
            values[o] = at(i);
            indices[o] = i as i64;
        }
        order.sort_unstable();
    }
    (values, indices)
}

impl EvalOp for TopK {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let k = scalar_int(cx, 1, "K")?;
        let ax = norm_axis(self.axis, x.rank())?;
        let n = x.shape()[ax];
        if k < 0 || k as usize > n {
            eval_bail!("k = {k} is out of range for an axis of size {n}");
        }
        let k = k as usize;
        let mut reduced = vec![false; x.rank()];
        reduced[ax] = true;
        let plan = Plan::new(x.shape(), &reduced, true)?;
        let mut out_shape = x.shape().to_vec();
        out_shape[ax] = k;
        let out_plan = Plan::new(&out_shape, &reduced, true)?;
        let largest = self.largest != 0;
        let (values, indices) = dispatch_numeric!(x, |v: &[T]| {
            let (values, indices) = topk_slice::<T>(v, &plan, &out_plan, k, largest);
            (Tensor::from_vec(out_shape.clone(), values)?, indices)
        }, _ => eval_bail!("cannot sort {} values", x.dtype()));
        Ok(vec![
            values.into(),
            Tensor::from_vec(out_shape, indices)?.into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reduce::tests::run_n;

    #[test]
    fn largest_and_smallest_with_ties() {
        let x = || {
            Some(
                Tensor::from_vec(
                    vec![2, 4],
                    vec![3.0f32, 1.0, 3.0, f32::NAN, 0.0, 2.0, 2.0, 1.0],
                )
                .unwrap(),
            )
        };
        let k = |k: i64| Some(Tensor::vector(vec![k]));
        let largest = TopK::default();
        assert_eq!(
            run_n(largest.clone(), vec![x(), k(3)], 2),
            "f32[2, 3] [NaN, 3, 3, 2, 2, 1] | i64[2, 3] [3, 0, 2, 1, 2, 3]"
        );
        let smallest = TopK {
            largest: 0,
            ..TopK::default()
        };
        assert_eq!(
            run_n(smallest, vec![x(), k(2)], 2),
            "f32[2, 2] [1, 3, 0, 1] | i64[2, 2] [1, 0, 0, 3]"
        );
        let columns = TopK {
            axis: 0,
            ..TopK::default()
        };
        assert_eq!(
            run_n(columns, vec![x(), k(1)], 2),
            "f32[1, 4] [3, 2, 3, NaN] | i64[1, 4] [0, 1, 0, 0]"
        );
        assert_eq!(
            run_n(largest, vec![x(), k(5)], 2),
            "error: k = 5 is out of range for an axis of size 4"
        );
        let ints = Some(Tensor::vector(vec![0u64, 1, 1, 9]));
        assert_eq!(
            run_n(TopK::default(), vec![ints, k(3)], 2),
            "u64[3] [9, 1, 1] | i64[3] [3, 1, 2]"
        );
    }
}
