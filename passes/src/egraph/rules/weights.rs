//! Weight folding: rules that move constant arithmetic into constant weights.
//!
//! They create new constant leaves (the analysis side table holds their tensors); the old weights stay in the
//! e-graph, and extraction keeps them only if something still needs them.

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::{Data, Op, Tensor};

use super::super::analysis::{GraphAnalysis, IrEGraph};
use super::super::lang::ENode;
use super::{add_const, add_op, bound, konst, op_with, union_into};

/// The weight-folding rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // BatchNormalization(Conv(x, W, b), s, β, μ, σ²) == Conv(x, W·k, (b − μ)·k + β), k = s / √(σ² + ε) per
        // output channel (inference mode, all f32 constants).
        rw!("fold-bn-into-conv";        "(BatchNormalization ?bn (Conv ?c ?x ?w ?b) ?s ?beta ?m ?v)" => { FoldBn { bias: true } }),
        // The same without a conv bias (b = 0).
        rw!("fold-bn-into-conv-nobias"; "(BatchNormalization ?bn (Conv ?c ?x ?w) ?s ?beta ?m ?v)"    => { FoldBn { bias: false } }),
    ]
}

use super::Rule;

/// The f32 contents of the constant bound to `v`.
fn f32s(eg: &IrEGraph, s: &Subst, v: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    let t = konst(eg, bound(eg, s, v))?;
    match t.data() {
        Data::F32(d) => Some((t.shape().to_vec(), d.clone())),
        _ => None,
    }
}

/// Folds an inference-mode BatchNormalization into the Conv before it.
struct FoldBn {
    bias: bool,
}

impl FoldBn {
    fn fold(&self, eg: &mut IrEGraph, s: &Subst) -> Option<Id> {
        let Op::BatchNormalization(bn) = op_with(eg, s, "BatchNormalization", "?bn")? else {
            return None;
        };
        if bn.training_mode != 0 {
            return None;
        }
        let conv = op_with(eg, s, "Conv", "?c")?;
        let (wshape, w) = f32s(eg, s, "?w")?;
        let m = *wshape.first()?;
        if m == 0 || w.len() % m != 0 {
            return None;
        }
        let per = w.len() / m;
        let vec_of = |v: &str| f32s(eg, s, v).map(|(_, d)| d).filter(|d| d.len() == m);
        let (scale, beta, mean, var) = (
            vec_of("?s")?,
            vec_of("?beta")?,
            vec_of("?m")?,
            vec_of("?v")?,
        );
        let b = if self.bias {
            vec_of("?b")?
        } else {
            vec![0.0; m]
        };
        let k: Vec<f64> = (0..m)
            .map(|i| scale[i] as f64 / (var[i] as f64 + bn.epsilon as f64).sqrt())
            .collect();
        let w2: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &x)| (x as f64 * k[i / per]) as f32)
            .collect();
        let b2: Vec<f32> = (0..m)
            .map(|i| ((b[i] as f64 - mean[i] as f64) * k[i] + beta[i] as f64) as f32)
            .collect();
        let w2 = add_const(eg, Tensor::from_vec(wshape, w2).ok()?);
        let b2 = add_const(eg, Tensor::from_vec(vec![m], b2).ok()?);
        let x = bound(eg, s, "?x");
        Some(add_op(eg, &conv, &[x, w2, b2]))
    }
}

impl Applier<ENode, GraphAnalysis> for FoldBn {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key: Vec<Id> = ["?bn", "?c", "?x", "?w", "?s", "?beta", "?m", "?v"]
            .iter()
            .map(|v| bound(eg, s, v))
            .chain(self.bias.then(|| bound(eg, s, "?b")))
            .chain([eg.find(eclass)])
            .collect();
        if !eg.analysis.applied.insert((rule.to_string(), key)) {
            return vec![];
        }
        match self.fold(eg, s) {
            Some(new) => union_into(eg, eclass, new),
            None => vec![],
        }
    }
}
