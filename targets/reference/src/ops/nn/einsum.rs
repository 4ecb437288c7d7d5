//! Einsum: a sum of products over every combination of label values.
//!
//! The equation is resolved by [`jiuzhou_ir::infer::nn::einsum::resolve`] (the same code inference uses). Each
//! operand gets a stride per label (the sum of the strides of its axes with that label, so a repeated label reads
//! a diagonal; zero for a broadcast axis); the output gets one too (zero for summed labels). One odometer walk over
//! all label values then accumulates every product into its output element. Values compute in f64.

use jiuzhou_ir::infer::nn::einsum::resolve;
use jiuzhou_ir::{DType, Value};

use super::{from_f64s, geometry, numel, to_f64s};
use crate::kernels::strides;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

impl EvalOp for jiuzhou_ir::ops::Einsum {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let inputs: Vec<_> = (0..cx.num_inputs())
            .map(|i| cx.tensor(i))
            .collect::<Result<_, _>>()?;
        let Some(first) = inputs.first() else {
            eval_bail!("Einsum needs at least one input")
        };
        let dtype = first.dtype();
        if inputs.iter().any(|t| t.dtype() != dtype) {
            eval_bail!("Einsum inputs must share one dtype");
        }
        let ranks: Vec<usize> = inputs.iter().map(|t| t.rank()).collect();
        let spec = resolve(&self.equation, &ranks).map_err(geometry)?;
        // Label sizes; ellipsis axes broadcast (size 1 stretches).
        let mut sizes = vec![1usize; spec.num_labels];
        let mut seen = vec![false; spec.num_labels];
        for (labels, t) in spec.inputs.iter().zip(&inputs) {
            for (&l, &d) in labels.iter().zip(t.shape()) {
                if !seen[l] || sizes[l] == 1 {
                    sizes[l] = d;
                    seen[l] = true;
                } else if d != sizes[l] && !(d == 1 && l < spec.ellipsis_rank) {
                    eval_bail!(
                        "Einsum `{}`: a label has sizes {} and {d}",
                        self.equation,
                        sizes[l]
                    );
                }
            }
        }
        let out_shape: Vec<usize> = spec.output.iter().map(|&l| sizes[l]).collect();
        let out_len = numel(&out_shape, DType::F64)?;
        // Walk order: output labels first, then the summed ones.
        let mut order = spec.output.clone();
        order.extend((0..spec.num_labels).filter(|l| !spec.output.contains(l)));
        // Per label, the stride of every operand (the output is operand 0).
        let mut label_strides = vec![vec![0usize; inputs.len() + 1]; spec.num_labels];
        for (pos, &s) in strides(&out_shape).iter().enumerate() {
            label_strides[spec.output[pos]][0] += s;
        }
        for (i, (labels, t)) in spec.inputs.iter().zip(&inputs).enumerate() {
            for ((&l, &s), &d) in labels.iter().zip(&strides(t.shape())).zip(t.shape()) {
                if d != 1 || sizes[l] == 1 {
                    label_strides[l][i + 1] += s;
                }
            }
        }
        let values: Vec<Vec<f64>> = inputs
            .iter()
            .map(|t| to_f64s(t))
            .collect::<Result<_, _>>()?;
        let mut out = vec![0.0; out_len];
        let total = order
            .iter()
            .try_fold(1usize, |acc, &l| acc.checked_mul(sizes[l]));
        let Some(total) = total.filter(|&t| t <= 1 << 40) else {
            eval_bail!(
                "Einsum `{}` iterates over too many label combinations",
                self.equation
            );
        };
        let mut idx = vec![0usize; order.len()];
        let mut offs = vec![0usize; inputs.len() + 1];
        for _ in 0..total {
            let prod: f64 = values.iter().zip(&offs[1..]).map(|(v, &o)| v[o]).product();
            out[offs[0]] += prod;
            // Advance the odometer, updating every operand's offset incrementally.
            for d in (0..order.len()).rev() {
                let l = order[d];
                idx[d] += 1;
                for (o, s) in offs.iter_mut().zip(&label_strides[l]) {
                    *o += s;
                }
                if idx[d] < sizes[l] {
                    break;
                }
                for (o, s) in offs.iter_mut().zip(&label_strides[l]) {
                    *o -= s * idx[d];
                }
                idx[d] = 0;
            }
        }
        Ok(vec![from_f64s(dtype, out_shape, out)?.into()])
    }
}
