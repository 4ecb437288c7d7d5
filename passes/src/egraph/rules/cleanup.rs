//! Algebraic clean-up: rules that remove work an exporter left behind.
//!
//! Every rule here makes the graph smaller or keeps it the same size; none needs a target to pay off.

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::{Data, Op, Tensor, ops};

use super::super::analysis::{GraphAnalysis, IrEGraph};
use super::super::lang::ENode;
use super::super::shapes;
use super::{
    Guard, Rule, add_const, add_op, both, bound, is_const_all, is_float, konst, op_with,
    same_type_as_root, tensor_type, union_into,
};

/// The clean-up rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // Identity(x) == x.
        rw!("identity";                "(Identity {} ?x)"                      => "?x"),
        // Dropout(x) == x in inference mode (no `training_mode` input; a declared mask output does not match).
        rw!("dropout-inference";       "(Dropout ?a ?x)"                       => "?x"),
        // Dropout(x, ratio) == x in inference mode.
        rw!("dropout-inference-ratio"; "(Dropout ?a ?x ?r)"                    => "?x"),
        // Dropout(x [, ratio]).output == x in inference mode when the node also declares its mask output (the mask,
        // all true, keeps the node only if something reads it).
        rw!("dropout-inference-masked"; "(get.0 ?d)"                           => { DropoutData }),
        // Cast(x, to = dtype(x)) == x.
        rw!("cast-noop";               "(Cast ?a ?x)"                          => "?x" if same_type_as_root("?x")),
        // Reshape(x, s) == x when the result has x's shape.
        rw!("reshape-noop";            "(Reshape ?a ?x ?s)"                    => "?x" if same_type_as_root("?x")),
        // Transpose(x, perm = 0..n) == x.
        rw!("transpose-identity";      "(Transpose ?a ?x)"                     => "?x" if is_identity_transpose("?a", "?x")),
        // Transpose(Transpose(x, p), q) == Transpose(x, r) with r[i] = p[q[i]] (removed when r is the identity).
        rw!("transpose-transpose";     "(Transpose ?q (Transpose ?p ?x))"      => { ComposeTransposes }),
        // Reshape(x, s) == Reshape(x, c) when the computed target s (e.g. Concat(Gather(Shape(x), 0), [4, 16])) has
        // a shape value whose every entry is a known size or x's own dim at that position (copied by a 0 in c).
        rw!("reshape-dynamic-to-static"; "(Reshape ?a ?x ?s)"                  => { StaticReshape }),
        // Reshape(Reshape(x, s1), s2) == Reshape(x, s2) when s2 never copies a dim (no 0 unless allowzero).
        rw!("reshape-reshape";         "(Reshape ?a (Reshape ?b ?x ?s1) ?s2)"  => "(Reshape ?a ?x ?s2)"
                                                                                   if reshape_is_absolute("?a", "?s2")),
        // Squeeze(Unsqueeze(x, axes), axes) == x.
        rw!("squeeze-unsqueeze";       "(Squeeze {} (Unsqueeze {} ?x ?ax) ?ax)" => "?x"),
        // Unsqueeze(Squeeze(x, axes), axes) == x: the squeezed dims had size 1 and come back at the same places.
        rw!("unsqueeze-squeeze";       "(Unsqueeze {} (Squeeze {} ?x ?ax) ?ax)" => "?x"),
        // x + 0 == x, when broadcasting does not grow x.
        rw!("add-zero";                "(Add {} ?x ?z)"                        => "?x" if both(is_const_all("?z", 0.0), same_type_as_root("?x"))),
        // 0 + x == x, when broadcasting does not grow x.
        rw!("zero-add";                "(Add {} ?z ?x)"                        => "?x" if both(is_const_all("?z", 0.0), same_type_as_root("?x"))),
        // x - 0 == x, when broadcasting does not grow x.
        rw!("sub-zero";                "(Sub {} ?x ?z)"                        => "?x" if both(is_const_all("?z", 0.0), same_type_as_root("?x"))),
        // x · 1 == x, when broadcasting does not grow x.
        rw!("mul-one";                 "(Mul {} ?x ?o)"                        => "?x" if both(is_const_all("?o", 1.0), same_type_as_root("?x"))),
        // 1 · x == x, when broadcasting does not grow x.
        rw!("one-mul";                 "(Mul {} ?o ?x)"                        => "?x" if both(is_const_all("?o", 1.0), same_type_as_root("?x"))),
        // x / c == x · (1/c) for a floating-point constant c (exact up to one rounding).
        rw!("div-by-const";            "(Div {} ?x ?c)"                        => { DivToMul }),
        // −(−x) == x.
        rw!("neg-neg";                 "(Neg {} (Neg {} ?x))"                  => "?x"),
    ]
}

/// The permutation of a Transpose for rank `rank` (the default reverses the axes); `None` if invalid.
pub(super) fn perm(op: &Op, rank: usize) -> Option<Vec<usize>> {
    let Op::Transpose(t) = op else { return None };
    let p: Vec<usize> = match &t.perm {
        None => (0..rank).rev().collect(),
        Some(p) => p
            .iter()
            .map(|&i| usize::try_from(i).ok())
            .collect::<Option<_>>()?,
    };
    let mut seen = vec![false; rank];
    if p.len() != rank {
        return None;
    }
    for &i in &p {
        if i >= rank || std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(p)
}

/// The rank of the class bound to `v`, if known.
fn rank(eg: &IrEGraph, s: &Subst, v: &str) -> Option<usize> {
    tensor_type(eg, bound(eg, s, v)).and_then(|t| t.rank())
}

/// Whether the Transpose with attributes `a` over `x` keeps every axis in place.
fn is_identity_transpose(a: &'static str, x: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let Some(r) = rank(eg, s, x) else {
            return false;
        };
        op_with(eg, s, "Transpose", a)
            .and_then(|op| perm(&op, r))
            .is_some_and(|p| p.iter().enumerate().all(|(i, &j)| i == j))
    })
}

/// Whether the outer Reshape's target `s` (with attributes `a`) is independent of its input's shape: a constant
/// with no 0 entries (a 0 copies the input's dim), or `allowzero = 1`. `-1` is fine: it depends only on the element
/// count, which the inner Reshape keeps.
fn reshape_is_absolute(a: &'static str, target: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let allowzero =
            matches!(op_with(eg, s, "Reshape", a), Some(Op::Reshape(r)) if r.allowzero != 0);
        allowzero
            || konst(eg, bound(eg, s, target))
                .and_then(|t| t.to_i64_vec())
                .is_some_and(|v| !v.contains(&0))
    })
}

/// Composes two Transposes into one (or none).
struct ComposeTransposes;

impl Applier<ENode, GraphAnalysis> for ComposeTransposes {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = bound(eg, s, "?x");
        let Some(r) = rank(eg, s, "?x") else {
            return vec![];
        };
        let (Some(p), Some(q)) = (
            op_with(eg, s, "Transpose", "?p").and_then(|op| perm(&op, r)),
            op_with(eg, s, "Transpose", "?q").and_then(|op| perm(&op, r)),
        ) else {
            return vec![];
        };
        let composed: Vec<usize> = q.iter().map(|&i| p[i]).collect();
        if composed.iter().enumerate().all(|(i, &j)| i == j) {
            return union_into(eg, eclass, x);
        }
        let op = Op::Transpose(ops::Transpose {
            perm: Some(composed.iter().map(|&i| i as i64).collect()),
        });
        let new = add_op(eg, &op, &[x]);
        union_into(eg, eclass, new)
    }
}

/// The data output of a two-output `Dropout` in inference mode (no `training_mode` input) is its input.
struct DropoutData;

impl Applier<ENode, GraphAnalysis> for DropoutData {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let d = bound(eg, s, "?d");
        let x = eg[d].nodes.iter().find_map(|n| match n {
            ENode::Op {
                name: "Dropout",
                outputs: 2,
                children,
            } if (2..=3).contains(&children.len()) => Some(children[1]),
            _ => None,
        });
        match x {
            Some(x) => union_into(eg, eclass, x),
            None => vec![],
        }
    }
}

/// Replaces a computed reshape target by a constant one (see [`shapes::static_target`]).
struct StaticReshape;

impl Applier<ENode, GraphAnalysis> for StaticReshape {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let (x, target) = (bound(eg, s, "?x"), bound(eg, s, "?s"));
        if konst(eg, target).is_some() {
            return vec![];
        }
        let Some(Op::Reshape(r)) = op_with(eg, s, "Reshape", "?a") else {
            return vec![];
        };
        if r.allowzero != 0 {
            return vec![];
        }
        let Some(value) = eg[target].data.shape_value.clone() else {
            return vec![];
        };
        let Some(dims) = tensor_type(eg, x).and_then(|t| t.shape.clone()) else {
            return vec![];
        };
        let Some(c) = shapes::static_target(&dims, &value) else {
            return vec![];
        };
        let c = add_const(eg, Tensor::vector(c));
        let new = add_op(eg, &Op::Reshape(r), &[x, c]);
        union_into(eg, eclass, new)
    }
}

/// Rewrites a division by a floating-point constant into a multiplication by its reciprocal.
struct DivToMul;

impl Applier<ENode, GraphAnalysis> for DivToMul {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = bound(eg, s, "?x");
        let Some(c) = konst(eg, bound(eg, s, "?c")) else {
            return vec![];
        };
        if !is_float(c.dtype()) || c.len() > eg.analysis.fold_limit {
            return vec![];
        }
        let shape = c.shape().to_vec();
        let recip = match c.data() {
            Data::F32(v) => {
                Tensor::from_vec(shape, v.iter().map(|e| 1.0 / e).collect::<Vec<f32>>())
            }
            Data::F64(v) => {
                Tensor::from_vec(shape, v.iter().map(|e| 1.0 / e).collect::<Vec<f64>>())
            }
            _ => return vec![],
        };
        let Ok(recip) = recip else { return vec![] };
        let r = add_const(eg, recip);
        let new = add_op(eg, &Op::Mul(ops::Mul::default()), &[x, r]);
        union_into(eg, eclass, new)
    }
}
