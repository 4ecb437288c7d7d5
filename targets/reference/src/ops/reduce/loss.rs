//! `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`.
//!
//! The input is `[N, C, d1, ..., dk]` (log-probabilities, or scores for the softmax loss), the target `[N, d1, ...,
//! dk]` holds class indices. Each position's loss is `-w[t] · input[n, t, d]`, with `w` the optional class weights
//! (1 without), and weight 0 where the target equals `ignore_index` (such targets need not be valid classes).
//! `reduction="mean"` divides the weighted sum by the sum of the weights used; `"sum"` sums; `"none"` keeps the
//! target's shape. Computed in f64 and rounded once to the input's type.

use jiuzhou_ir::ops::{NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss};
use jiuzhou_ir::{Tensor, Value};

use super::{float_values, tensor_from_f64};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The loss of log-probabilities `logp` (shaped like input 0 of `cx`) against the target (input 1), weights (input 2).
fn nll(
    cx: &EvalCx<'_>,
    logp: &[f64],
    ignore_index: Option<i64>,
    reduction: &str,
) -> Result<Tensor, EvalError> {
    let x = cx.tensor(0)?;
    let target = cx.tensor(1)?;
    let shape = x.shape();
    if shape.len() < 2 {
        eval_bail!("the input must be [N, C, ...], got {shape:?}");
    }
    let (n, c) = (shape[0], shape[1]);
    let mut want = vec![n];
    want.extend_from_slice(&shape[2..]);
    if target.shape() != want.as_slice() {
        eval_bail!(
            "the target must have shape {want:?} for an input of shape {shape:?}, got {:?}",
            target.shape()
        );
    }
    let t = cx.ints(1)?;
    let weights = match cx.opt_tensor(2)? {
        Some(w) if w.shape() == [c] => Some(float_values(w, "the weights")?),
        Some(w) => eval_bail!("the weights must have shape [{c}], got {:?}", w.shape()),
        None => None,
    };
    let d: usize = shape[2..].iter().product();
    let mut losses = Vec::with_capacity(n * d);
    let mut weight_sum = 0.0;
    for i in 0..n {
        for j in 0..d {
            let class = t[i * d + j];
            if Some(class) == ignore_index {
                losses.push(0.0);
                continue;
            }
            if class < 0 || class as usize >= c {
                eval_bail!("target {class} is not a class index in 0..{c}");
            }
            let class = class as usize;
            let w = weights.as_ref().map_or(1.0, |w| w[class]);
            weight_sum += w;
            losses.push(-w * logp[(i * c + class) * d + j]);
        }
    }
    let dtype = x.dtype();
    match reduction {
        "none" => tensor_from_f64(dtype, want, losses),
        "sum" => tensor_from_f64(dtype, vec![], vec![losses.iter().sum()]),
        "mean" => tensor_from_f64(dtype, vec![], vec![losses.iter().sum::<f64>() / weight_sum]),
        other => eval_bail!("unknown reduction `{other}`"),
    }
}

impl EvalOp for NegativeLogLikelihoodLoss {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let logp = float_values(cx.tensor(0)?, "the input")?;
        Ok(vec![
            nll(cx, &logp, self.ignore_index, &self.reduction)?.into(),
        ])
    }
}

/// Log-softmax over axis 1 of an `[N, C, ...]` tensor.
fn log_softmax(x: &[f64], shape: &[usize]) -> Vec<f64> {
    let (n, c) = (shape[0], shape[1]);
    let d: usize = shape[2..].iter().product();
    let mut out = vec![0.0; x.len()];
    for i in 0..n {
        for j in 0..d {
            let at = |k: usize| (i * c + k) * d + j;
            let max = (0..c).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..c).map(|k| (x[at(k)] - max).exp()).sum();
            let log_sum = sum.ln();
            for k in 0..c {
                out[at(k)] = x[at(k)] - max - log_sum;
            }
        }
    }
    out
}

impl EvalOp for SoftmaxCrossEntropyLoss {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        if x.rank() < 2 {
            eval_bail!("the input must be [N, C, ...], got {:?}", x.shape());
        }
        let logp = log_softmax(&float_values(x, "the input")?, x.shape());
        let loss = nll(cx, &logp, self.ignore_index, &self.reduction)?;
        let mut out = vec![loss.into()];
        if cx.num_outputs > 1 {
            out.push(tensor_from_f64(x.dtype(), x.shape().to_vec(), logp)?.into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reduce::tests::{run, run_n};

    fn logp() -> Tensor {
        Tensor::from_vec(vec![2, 3], vec![-1.0f32, -2.0, -3.0, -0.5, -1.5, -2.5]).unwrap()
    }

    fn nll_op(reduction: &str, ignore_index: Option<i64>) -> NegativeLogLikelihoodLoss {
        NegativeLogLikelihoodLoss {
            ignore_index,
            reduction: reduction.into(),
        }
    }

    #[test]
    fn nll_reductions_weights_and_ignored_targets() {
        let target = || Some(Tensor::vector(vec![2i64, 0]));
        let weights = || Some(Tensor::vector(vec![1.0f32, 2.0, 3.0]));
        let nll = |op, w| run(op, vec![Some(logp()), target(), w]);
        assert_eq!(nll(nll_op("none", None), None), "f32[2] [3, 0.5]");
        assert_eq!(nll(nll_op("sum", None), None), "f32[] [3.5]");
        assert_eq!(nll(nll_op("mean", None), None), "f32[] [1.75]");
        assert_eq!(nll(nll_op("mean", None), weights()), "f32[] [2.375]");
        assert_eq!(nll(nll_op("mean", Some(0)), weights()), "f32[] [3]");
        // An ignored target may be any value, even one that is not a class.
        let far = Some(Tensor::vector(vec![2i64, 10]));
        let op = nll_op("sum", Some(10));
        assert_eq!(
            run(op, vec![Some(logp()), far.clone(), weights()]),
            "f32[] [9]"
        );
        assert_eq!(
            run(nll_op("sum", None), vec![Some(logp()), far]),
            "error: target 10 is not a class index in 0..3"
        );
    }

    #[test]
    fn softmax_cross_entropy_with_log_prob() {
        let x = Tensor::from_vec(vec![1, 2, 2], vec![0.0f32, 1.0, 0.0, 1.0]).unwrap();
        let target = Some(Tensor::from_vec(vec![1, 2], vec![0i64, 1]).unwrap());
        let op = SoftmaxCrossEntropyLoss {
            ignore_index: None,
            reduction: "none".into(),
        };
        assert_eq!(
            run_n(op, vec![Some(x), target], 2),
            "f32[1, 2] [0.6931472, 0.6931472] | f32[1, 2, 2] [-0.6931472, -0.6931472, -0.6931472, -0.6931472]"
        );
    }
}
