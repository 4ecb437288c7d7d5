//! Weight folding: rules that move constant arithmetic into constant weights.
//!
//! They create new constant leaves (the analysis side table holds their tensors); the old weights stay in the
//! e-graph, and extraction keeps them only if something still needs them.

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::{Data, Op, Tensor};

use super::super::analysis::{GraphAnalysis, IrEGraph};
use super::super::lang::ENode;
use super::{add_const, add_op, bound, first_application, fold_once, konst, op_with, union_into};

/// The weight-folding rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // BatchNormalization(Conv(x, W, b), s, β, μ, σ²) == Conv(x, W·k, (b − μ)·k + β), k = s / √(σ² + ε) per
        // output channel (inference mode, all f32 constants).
        rw!("fold-bn-into-conv";        "(BatchNormalization ?bn (Conv ?c ?x ?w ?b) ?s ?beta ?m ?v)" => { FoldBn { bias: true } }),
        // The same without a conv bias (b = 0).
        rw!("fold-bn-into-conv-nobias"; "(BatchNormalization ?bn (Conv ?c ?x ?w) ?s ?beta ?m ?v)"    => { FoldBn { bias: false } }),
        // BatchNormalization(P, s, β, μ, σ²) == FusedMatMul(x, W·k, (b − μ)·k + β), k = s / √(σ² + ε) per column,
        // for P = MatMul(x, W) or FusedMatMul(x, W, b) (no residual, no activation) with a rank-2 result and
        // constant f32 W [K, N] and b (BN's channel axis 1 is then the product's column axis). Gemm becomes such a
        // FusedMatMul first (fusion.rs).
        rw!("fold-bn-into-matmul";      "(BatchNormalization ?bn ?y ?s ?beta ?m ?v)" => { FoldBnMatMul }),
        // Conv(x, W, b) · k == Conv(x, W·k, b·k) for a per-output-channel (or scalar) constant k.
        rw!("fold-mul-into-conv";        "(Mul {} (Conv ?c ?x ?w ?b) ?k)" => { ConstIntoConv { mul: true, bias: true } }),
        // Conv(x, W) · k == Conv(x, W·k).
        rw!("fold-mul-into-conv-nobias"; "(Mul {} (Conv ?c ?x ?w) ?k)"    => { ConstIntoConv { mul: true, bias: false } }),
        // Conv(x, W, b) + k == Conv(x, W, b + k) for a per-output-channel (or scalar) constant k.
        rw!("fold-add-into-conv";        "(Add {} (Conv ?c ?x ?w ?b) ?k)" => { ConstIntoConv { mul: false, bias: true } }),
        // Conv(x, W) + k == Conv(x, W, k).
        rw!("fold-add-into-conv-nobias"; "(Add {} (Conv ?c ?x ?w) ?k)"    => { ConstIntoConv { mul: false, bias: false } }),
        // BatchNormalization(x, s, β, μ, σ²) · k == BatchNormalization(x, s·k, β·k, μ, σ²) for a per-channel (or
        // scalar) constant k (Caffe-style Scale layers after a pre-activation BN, as in DenseNet).
        rw!("fold-mul-into-bn"; "(Mul {} (BatchNormalization ?bn ?x ?s ?beta ?m ?v) ?k)" => { ConstIntoBn { mul: true } }),
        // BatchNormalization(x, s, β, μ, σ²) + k == BatchNormalization(x, s, β + k, μ, σ²).
        rw!("fold-add-into-bn"; "(Add {} (BatchNormalization ?bn ?x ?s ?beta ?m ?v) ?k)" => { ConstIntoBn { mul: false } }),
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
        // The weights are read in place (they are most of a model's bytes).
        let wt = konst(eg, bound(eg, s, "?w"))?;
        let Data::F32(w) = wt.data() else {
            return None;
        };
        let wshape = wt.shape().to_vec();
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
        fold_once(eg, eclass, rule, key, |eg| self.fold(eg, s))
    }
}

/// The type of the matched root when the inner op `name(children)` (the one a constant Mul/Add is folded into)
/// has exactly that type: the constant may not broadcast the result larger.
fn inner_keeps_type(
    eg: &IrEGraph,
    root: Id,
    name: &'static str,
    children: Vec<Id>,
) -> Option<jiuzhou_ir::TensorType> {
    let inner = eg.lookup(ENode::Op {
        name,
        outputs: 1,
        children,
    })?;
    let out = super::tensor_type(eg, root)?.clone();
    (super::tensor_type(eg, eg.find(inner)) == Some(&out)).then_some(out)
}

/// The constant bound to `v` as one value per channel of axis 1 of a rank-`rank` result with `m` channels, if it
/// is a scalar or broadcasts along axis 1 only (and makes nothing larger).
fn per_channel(eg: &IrEGraph, s: &Subst, v: &str, rank: usize, m: usize) -> Option<Vec<f32>> {
    let (kshape, k) = f32s(eg, s, v)?;
    if kshape.len() > rank || rank < 2 {
        return None;
    }
    let mut padded = vec![1usize; rank - kshape.len()];
    padded.extend(&kshape);
    if padded.iter().enumerate().any(|(i, &d)| i != 1 && d != 1)
        || (padded[1] != 1 && padded[1] != m)
    {
        return None;
    }
    Some(
        (0..m)
            .map(|i| if k.len() == 1 { k[0] } else { k[i] })
            .collect(),
    )
}

/// Folds a constant per-channel Mul or Add after an inference-mode BatchNormalization into its scale and bias.
struct ConstIntoBn {
    mul: bool,
}

impl ConstIntoBn {
    fn fold(&self, eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
        let bn_op = op_with(eg, s, "BatchNormalization", "?bn")?;
        let Op::BatchNormalization(bn) = &bn_op else {
            return None;
        };
        if bn.training_mode != 0 {
            return None;
        }
        let children: Vec<Id> = ["?bn", "?x", "?s", "?beta", "?m", "?v"]
            .iter()
            .map(|v| bound(eg, s, v))
            .collect();
        let out = inner_keeps_type(eg, root, "BatchNormalization", children)?;
        let (_, scale) = f32s(eg, s, "?s")?;
        let (_, beta) = f32s(eg, s, "?beta")?;
        let m = scale.len();
        if beta.len() != m {
            return None;
        }
        let k = per_channel(eg, s, "?k", out.rank()?, m)?;
        let (scale2, beta2): (Option<Vec<f32>>, Vec<f32>) = if self.mul {
            (
                Some(scale.iter().zip(&k).map(|(a, b)| a * b).collect()),
                beta.iter().zip(&k).map(|(a, b)| a * b).collect(),
            )
        } else {
            (None, beta.iter().zip(&k).map(|(a, b)| a + b).collect())
        };
        let scale2 = match scale2 {
            Some(v) => add_const(eg, Tensor::from_vec(vec![m], v).ok()?),
            None => bound(eg, s, "?s"),
        };
        let beta2 = add_const(eg, Tensor::from_vec(vec![m], beta2).ok()?);
        let (x, mean, var) = (bound(eg, s, "?x"), bound(eg, s, "?m"), bound(eg, s, "?v"));
        Some(add_op(eg, &bn_op, &[x, scale2, beta2, mean, var]))
    }
}

impl Applier<ENode, GraphAnalysis> for ConstIntoBn {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key: Vec<Id> = ["?bn", "?x", "?s", "?beta", "?m", "?v", "?k"]
            .iter()
            .map(|v| bound(eg, s, v))
            .chain([eg.find(eclass)])
            .collect();
        fold_once(eg, eclass, rule, key, |eg| self.fold(eg, eclass, s))
    }
}

/// Folds a constant per-channel Mul or Add after a Conv into its weights and bias.
struct ConstIntoConv {
    mul: bool,
    bias: bool,
}

impl ConstIntoConv {
    fn fold(&self, eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
        let conv = op_with(eg, s, "Conv", "?c")?;
        let (wshape, w) = f32s(eg, s, "?w")?;
        let m = *wshape.first()?;
        if m == 0 || w.len() % m != 0 {
            return None;
        }
        // The result must keep the conv's type (the constant may not broadcast it larger).
        let mut children: Vec<Id> = ["?c", "?x", "?w"].iter().map(|v| bound(eg, s, v)).collect();
        if self.bias {
            children.push(bound(eg, s, "?b"));
        }
        let out = inner_keeps_type(eg, root, "Conv", children)?;
        let per_channel = per_channel(eg, s, "?k", out.rank()?, m)?;
        let b = if self.bias {
            let b = f32s(eg, s, "?b")?.1;
            if b.len() != m {
                return None;
            }
            b
        } else {
            vec![0.0; m]
        };
        let per = w.len() / m;
        let x = bound(eg, s, "?x");
        let (w2, b2) = if self.mul {
            let w2: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, &v)| v * per_channel[i / per])
                .collect();
            let b2: Vec<f32> = b.iter().zip(&per_channel).map(|(b, k)| b * k).collect();
            (Some(w2), b2)
        } else {
            (
                None,
                b.iter().zip(&per_channel).map(|(b, k)| b + k).collect(),
            )
        };
        let w2 = match w2 {
            Some(w2) => add_const(eg, Tensor::from_vec(wshape, w2).ok()?),
            None => bound(eg, s, "?w"),
        };
        let new = if self.mul && !self.bias {
            add_op(eg, &conv, &[x, w2])
        } else {
            let b2 = add_const(eg, Tensor::from_vec(vec![m], b2).ok()?);
            add_op(eg, &conv, &[x, w2, b2])
        };
        Some(new)
    }
}

impl Applier<ENode, GraphAnalysis> for ConstIntoConv {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key: Vec<Id> = ["?c", "?x", "?w", "?k"]
            .iter()
            .map(|v| bound(eg, s, v))
            .chain(self.bias.then(|| bound(eg, s, "?b")))
            .chain([eg.find(eclass)])
            .collect();
        fold_once(eg, eclass, rule, key, |eg| self.fold(eg, eclass, s))
    }
}

/// Folds an inference-mode BatchNormalization into the matrix product before it.
struct FoldBnMatMul;

impl FoldBnMatMul {
    fn fold(&self, eg: &mut IrEGraph, s: &Subst, p: &super::fusion::Producer) -> Option<Id> {
        let Op::BatchNormalization(bn) = op_with(eg, s, "BatchNormalization", "?bn")? else {
            return None;
        };
        if bn.training_mode != 0 || !p.is_matmul() || p.inputs[3].is_some() {
            return None;
        }
        let out = super::tensor_type(eg, bound(eg, s, "?y"))?;
        if out.rank() != Some(2) {
            return None;
        }
        let (x, w_id) = (p.inputs[0]?, p.inputs[1]?);
        let wt = konst(eg, w_id)?;
        let (wshape, w) = match wt.data() {
            Data::F32(d) => (wt.shape().to_vec(), d),
            _ => return None,
        };
        let [k_dim, n] = <[usize; 2]>::try_from(wshape).ok()?;
        let vec_of = |v: &str| f32s(eg, s, v).map(|(_, d)| d).filter(|d| d.len() == n);
        let (scale, beta, mean, var) = (
            vec_of("?s")?,
            vec_of("?beta")?,
            vec_of("?m")?,
            vec_of("?v")?,
        );
        let b = match p.inputs[2] {
            None => vec![0.0; n],
            Some(b) => {
                let t = konst(eg, b)?;
                let Data::F32(d) = t.data() else { return None };
                match d.len() {
                    1 => vec![d[0]; n],
                    l if l == n => d.clone(),
                    _ => return None,
                }
            }
        };
        let k: Vec<f64> = (0..n)
            .map(|j| scale[j] as f64 / (var[j] as f64 + bn.epsilon as f64).sqrt())
            .collect();
        let w2: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, &v)| (v as f64 * k[i % n]) as f32)
            .collect();
        let b2: Vec<f32> = (0..n)
            .map(|j| ((b[j] as f64 - mean[j] as f64) * k[j] + beta[j] as f64) as f32)
            .collect();
        let w2 = add_const(eg, Tensor::from_vec(vec![k_dim, n], w2).ok()?);
        let b2 = add_const(eg, Tensor::from_vec(vec![n], b2).ok()?);
        Some(add_op(eg, &p.op, &[x, w2, b2]))
    }
}

impl Applier<ENode, GraphAnalysis> for FoldBnMatMul {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let y = bound(eg, s, "?y");
        let producers = super::fusion::producers(eg, y);
        let mut changed = vec![];
        for p in producers {
            let key: Vec<Id> = ["?bn", "?s", "?beta", "?m", "?v"]
                .iter()
                .map(|v| bound(eg, s, v))
                .chain(p.inputs.iter().flatten().copied())
                .chain([eg.find(eclass)])
                .collect();
            if !first_application(eg, rule, key) {
                continue;
            }
            if let Some(new) = self.fold(eg, s, &p)
                && super::tensor_type(eg, new).is_some()
                && super::tensor_type(eg, new) == super::tensor_type(eg, eclass)
            {
                changed.extend(union_into(eg, eclass, new));
            }
        }
        changed
    }
}
