//! Pattern recognition: decomposed formulas turned back into the composite ops that targets implement directly.
//!
//! Exporters often write Softmax, LayerNormalization, RMS norm, GELU, SiLU and attention as chains of elementwise
//! ops and reductions. These rules recognize the chains and add the composite op to the chain's e-class; the
//! composite's reference semantics is the decomposition it replaces (its ONNX definition), which the soundness tests
//! check on random inputs. Normalizations are recognized in two steps: the bare normalization becomes the composite
//! with a scale of ones, then `·γ` and `+β` are absorbed one at a time (so every placement of γ and β matches).
//! A few canonicalizing rules (`x² → x·x`, `a·(1/b) → a/b`, `v^−½ → 1/√v`) let one recognizer cover the usual
//! spellings. The recognizers that walk several levels of the e-graph are Rust functions ([`Recognize`]): they
//! try every node of every class on the way and both operand orders of Add and Mul, and check ranks, axes, dtypes
//! and constants exactly (a constant matches a real number within 1e-6 relative: the f32 rounding of √2 and such).

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::{DType, Dim, Op, Tensor, TensorType, ops};

use super::super::analysis::{GraphAnalysis, IrEGraph, attrs_of};
use super::super::lang::ENode;
use super::{
    Guard, Rule, add_const, add_op, both, bound, is_const_all, konst, op_with, same_type_as_root,
    tensor_type, union_into,
};

/// The pattern-recognition rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // x ^ 2 == x · x (exact: both round the exact square once).
        rw!("pow2-to-mul";        "(Pow {} ?x ?e)"                        => "(Mul {} ?x ?x)"
                                                                            if both(is_const_all("?e", 2.0), same_type_as_root("?x"))),
        // v ^ −½ == 1 / √v (float v).
        rw!("pow-rsqrt";          "(Pow {} ?v ?e)"                        => "(Reciprocal {} (Sqrt {} ?v))"
                                                                            if both(is_const_all("?e", -0.5), both(same_type_as_root("?v"), is_float_class("?v")))),
        // a · (1 / b) == a / b.
        rw!("recip-to-div";       "(Mul {} ?a (Reciprocal {} ?b))"        => "(Div {} ?a ?b)"),
        // (1 / b) · a == a / b.
        rw!("recip-to-div-left";  "(Mul {} (Reciprocal {} ?b) ?a)"        => "(Div {} ?a ?b)"),
        // exp(x − max_a(x)) / sum_a(exp(x − max_a(x))) == Softmax(x, axis = a); also without the max shift.
        rw!("softmax";            "(Div {} ?e ?s)"                        => { Recognize(softmax) }),
        // (x − mean_A(x)) / √(mean_A((x − mean_A(x))²) + ε) == LayerNormalization(x, 1, axis = min A, ε) for A the
        // trailing axes.
        rw!("layernorm";          "(Div {} ?d ?sd)"                       => { Recognize(layernorm) }),
        // LayerNormalization(x, 1) · γ == LayerNormalization(x, γ) for γ that broadcasts to the normalized axes.
        rw!("layernorm-scale";    "(Mul {} (LayerNormalization ?a ?x ?s) ?g)" => { Absorb { op: "LayerNormalization", bias: false } }),
        // γ · LayerNormalization(x, 1) == LayerNormalization(x, γ).
        rw!("layernorm-scale-left"; "(Mul {} ?g (LayerNormalization ?a ?x ?s))" => { Absorb { op: "LayerNormalization", bias: false } }),
        // LayerNormalization(x, γ) + β == LayerNormalization(x, γ, β) for β that broadcasts to the normalized axes.
        rw!("layernorm-bias";     "(Add {} (LayerNormalization ?a ?x ?s) ?g)" => { Absorb { op: "LayerNormalization", bias: true } }),
        // β + LayerNormalization(x, γ) == LayerNormalization(x, γ, β).
        rw!("layernorm-bias-left"; "(Add {} ?g (LayerNormalization ?a ?x ?s))" => { Absorb { op: "LayerNormalization", bias: true } }),
        // x / √(mean_A(x²) + ε) == RMSNormalization(x, 1, axis = min A, ε) for A the trailing axes.
        rw!("rmsnorm";            "(Div {} ?x ?r)"                        => { Recognize(rmsnorm) }),
        // RMSNormalization(x, 1) · γ == RMSNormalization(x, γ) for γ that broadcasts to the normalized axes.
        rw!("rmsnorm-scale";      "(Mul {} (RMSNormalization ?a ?x ?s) ?g)" => { Absorb { op: "RMSNormalization", bias: false } }),
        // γ · RMSNormalization(x, 1) == RMSNormalization(x, γ).
        rw!("rmsnorm-scale-left"; "(Mul {} ?g (RMSNormalization ?a ?x ?s))" => { Absorb { op: "RMSNormalization", bias: false } }),
        // ½ · x · (1 + erf(x / √2)) == Gelu(x), and ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) ==
        // Gelu(x, approximate = "tanh"), the three factors in any order and grouping.
        rw!("gelu";               "(Mul {} ?a ?b)"                        => { Recognize(gelu) }),
        // x · sigmoid(x) == Swish(x) (SiLU, alpha = 1).
        rw!("silu";               "(Mul {} ?x (Sigmoid {} ?x))"           => "(Swish {} ?x)"),
        // sigmoid(x) · x == Swish(x).
        rw!("silu-left";          "(Mul {} (Sigmoid {} ?x) ?x)"           => "(Swish {} ?x)"),
        // Softmax(MatMul(Q, Kᵀ) · c [+ M], axis = -1) · V == Attention(Q, K, V [, M], scale = c) for 4-D
        // [batch, heads, seq, size] Q, K, V (c: Mul by c, Div by 1/c, or absent for 1); K = Transpose(Kᵀ, 0,1,3,2).
        rw!("attention";          "(MatMul {} ?p ?v)"                     => { Recognize(attention) }),
    ]
}

/// Whether the class bound to `v` has a floating-point dtype.
fn is_float_class(v: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        tensor_type(eg, bound(eg, s, v)).is_some_and(|t| super::is_float(t.dtype))
    })
}

/// A rule whose right side is computed by a recognizer: it returns the class of the composite, or `None`.
struct Recognize(fn(&mut IrEGraph, Id, &Subst) -> Option<Id>);

impl Applier<ENode, GraphAnalysis> for Recognize {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        match (self.0)(eg, eclass, s) {
            Some(new) => union_into(eg, eclass, new),
            None => vec![],
        }
    }
}

// ---- Reading the e-graph -----------------------------------------------------------------------------------------

/// The children (attribute class first) of every one-output `name` node in class `id`.
fn nodes(eg: &IrEGraph, id: Id, name: &str) -> Vec<Vec<Id>> {
    eg[id]
        .nodes
        .iter()
        .filter_map(|n| match n {
            ENode::Op {
                name: n,
                outputs: 1,
                children,
            } if *n == name => Some(children.iter().map(|c| eg.find(*c)).collect()),
            _ => None,
        })
        .collect()
}

/// The operand pairs of every two-input `name` node in class `id`, in both orders (for commutative ops).
fn pairs(eg: &IrEGraph, id: Id, name: &str) -> Vec<(Id, Id)> {
    nodes(eg, id, name)
        .into_iter()
        .filter(|c| c.len() == 3)
        .flat_map(|c| [(c[1], c[2]), (c[2], c[1])])
        .collect()
}

/// The single inputs of every one-input `name` node in class `id`.
fn unary(eg: &IrEGraph, id: Id, name: &str) -> Vec<Id> {
    nodes(eg, id, name)
        .into_iter()
        .filter(|c| c.len() == 2)
        .map(|c| c[1])
        .collect()
}

fn same(eg: &IrEGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// The value of a constant whose elements are all equal.
fn scalar(eg: &IrEGraph, id: Id) -> Option<f64> {
    let v = konst(eg, id)?.to_f64_vec()?;
    let first = *v.first()?;
    v.iter().all(|x| *x == first).then_some(first)
}

/// Whether `v` is `want` within 1e-6 relative.
fn near(v: f64, want: f64) -> bool {
    (v - want).abs() <= 1e-6 * want.abs()
}

fn is_const_near(eg: &IrEGraph, id: Id, want: f64) -> bool {
    scalar(eg, id).is_some_and(|v| near(v, want))
}

/// The dims of class `id`, if its rank is known.
fn dims(eg: &IrEGraph, id: Id) -> Option<Vec<Dim>> {
    tensor_type(eg, id)?.shape.clone()
}

/// Whether classes `a` and `b` have the same fully known type (shape included).
fn same_type(eg: &IrEGraph, a: Id, b: Id) -> bool {
    match (tensor_type(eg, a), tensor_type(eg, b)) {
        (Some(x), Some(y)) => x.shape.is_some() && x == y,
        _ => false,
    }
}

/// The float dtype of class `id`.
fn float_dtype(eg: &IrEGraph, id: Id) -> Option<DType> {
    tensor_type(eg, id)
        .map(|t| t.dtype)
        .filter(|d| super::is_float(*d))
}

/// A reduction node `name` in class `id` over `data`: its axes, normalized and sorted, when it keeps dims.
fn reduction(eg: &IrEGraph, children: &[Id], name: &str) -> Option<Vec<usize>> {
    let op = Op::from_attrs(name, attrs_of(eg, children[0])).ok()??;
    let (keep, noop) = match &op {
        Op::ReduceMean(r) => (r.keepdims, r.noop_with_empty_axes),
        Op::ReduceSum(r) => (r.keepdims, r.noop_with_empty_axes),
        Op::ReduceMax(r) => (r.keepdims, r.noop_with_empty_axes),
        _ => return None,
    };
    if keep != 1 {
        return None;
    }
    let rank = dims(eg, *children.get(1)?)?.len();
    let axes: Vec<i64> = match children.get(2) {
        Some(&a) if !matches!(eg[a].nodes.first(), Some(ENode::Absent)) => {
            konst(eg, a)?.to_i64_vec()?
        }
        _ if noop == 0 => (0..rank as i64).collect(),
        _ => return None,
    };
    if axes.is_empty() {
        if noop != 0 {
            return None;
        }
        return Some((0..rank).collect());
    }
    let mut out: Vec<usize> = axes
        .iter()
        .map(|&a| {
            let a = if a < 0 { a + rank as i64 } else { a };
            usize::try_from(a).ok().filter(|&a| a < rank)
        })
        .collect::<Option<_>>()?;
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Every `name` reduction of `data` in class `id` (with keepdims): their sorted axes.
fn reductions_of(eg: &IrEGraph, id: Id, name: &str, data: Id) -> Vec<Vec<usize>> {
    nodes(eg, id, name)
        .into_iter()
        .filter(|c| c.len() >= 2 && same(eg, c[1], data))
        .filter_map(|c| reduction(eg, &c, name))
        .collect()
}

/// `Some(a)` when `axes` are exactly the trailing axes `a..rank`.
fn trailing(axes: &[usize], rank: usize) -> Option<usize> {
    let a = *axes.first()?;
    (axes.iter().copied().eq(a..rank)).then_some(a)
}

/// Whether class `u` holds `x · f` or `x / (1/f)` (with a constant scalar factor).
fn scaled(eg: &IrEGraph, u: Id, x: Id, f: f64) -> bool {
    pairs(eg, u, "Mul")
        .into_iter()
        .any(|(p, c)| same(eg, p, x) && is_const_near(eg, c, f))
        || nodes(eg, u, "Div")
            .into_iter()
            .any(|c| c.len() == 3 && same(eg, c[1], x) && is_const_near(eg, c[2], 1.0 / f))
}

/// Whether class `c` holds x³ (`Pow(x, 3)`, `x · (x · x)` or `(x · x) · x`).
fn is_cube(eg: &IrEGraph, c: Id, x: Id) -> bool {
    nodes(eg, c, "Pow")
        .into_iter()
        .any(|n| n.len() == 3 && same(eg, n[1], x) && scalar(eg, n[2]) == Some(3.0))
        || pairs(eg, c, "Mul").into_iter().any(|(p, sq)| {
            same(eg, p, x)
                && pairs(eg, sq, "Mul")
                    .into_iter()
                    .any(|(a, b)| same(eg, a, x) && same(eg, b, x))
        })
}

/// A constant of ones with `dims` (all known) and float `dtype`.
fn ones(dtype: DType, dims: &[Dim]) -> Option<Tensor> {
    let shape: Vec<usize> = dims.iter().map(|d| d.known()).collect::<Option<_>>()?;
    let n: usize = shape.iter().product();
    match dtype {
        DType::F32 => Tensor::from_vec(shape, vec![1.0f32; n]).ok(),
        DType::F64 => Tensor::from_vec(shape, vec![1.0f64; n]).ok(),
        _ => None,
    }
}

/// Whether a tensor of dims `p` broadcasts to exactly `tail` (numpy rules, `p` not longer than `tail`).
fn fits_tail(p: &[Dim], tail: &[Dim]) -> bool {
    p.len() <= tail.len()
        && p.iter()
            .rev()
            .zip(tail.iter().rev())
            .all(|(a, b)| *a == Dim::Known(1) || a == b)
}

// ---- Recognizers -------------------------------------------------------------------------------------------------

/// `Div(e, s)` with `e = exp(x − max(x))` (or `exp(x)`) and `s = sum(e)` over one axis.
fn softmax(eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
    let (e, sum) = (bound(eg, s, "?e"), bound(eg, s, "?s"));
    float_dtype(eg, e)?;
    let axes = reductions_of(eg, sum, "ReduceSum", e);
    let found = axes.iter().find_map(|ax| {
        let [a] = ax.as_slice() else { return None };
        let x = unary(eg, e, "Exp").into_iter().find_map(|d| {
            // The shifted form exp(x − max_a(x)), or exp(d) itself.
            let shifted = nodes(eg, d, "Sub").into_iter().find_map(|c| {
                (c.len() == 3
                    && reductions_of(eg, c[2], "ReduceMax", c[1])
                        .iter()
                        .any(|m| m == ax))
                .then_some(c[1])
            });
            let x = shifted.unwrap_or(d);
            same_type(eg, x, root).then_some(x)
        })?;
        Some((x, *a))
    });
    let (x, a) = found?;
    let op = Op::Softmax(ops::Softmax { axis: a as i64 });
    Some(add_op(eg, &op, &[x]))
}

/// The ε of `Add(var, ε)` in class `v` (either order) whose `var` satisfies `pred`, with the Add not growing `var`.
fn plus_eps(eg: &IrEGraph, v: Id, mut pred: impl FnMut(Id) -> bool) -> Option<(Id, f64)> {
    pairs(eg, v, "Add").into_iter().find_map(|(var, c)| {
        let eps = scalar(eg, c)?;
        (eps >= 0.0 && same_type(eg, var, v) && pred(var)).then_some((var, eps))
    })
}

/// Builds `name(x, ones, axis = a, epsilon)`.
fn norm_op(eg: &mut IrEGraph, name: &str, x: Id, a: usize, eps: f64) -> Option<Id> {
    let t = tensor_type(eg, x)?.clone();
    let shape = t.shape.as_ref()?;
    let one = ones(t.dtype, &shape[a..])?;
    let (axis, epsilon) = (a as i64, eps as f32);
    let op = match name {
        "LayerNormalization" => Op::LayerNormalization(ops::LayerNormalization {
            axis,
            epsilon,
            ..Default::default()
        }),
        _ => Op::RMSNormalization(ops::RMSNormalization {
            axis,
            epsilon,
            ..Default::default()
        }),
    };
    let one = add_const(eg, one);
    Some(add_op(eg, &op, &[x, one]))
}

/// `Div(d, √(mean_A(d · d) + ε))` with `d = x − mean_A(x)`, A the trailing axes.
fn layernorm(eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
    let (d, sd) = (bound(eg, s, "?d"), bound(eg, s, "?sd"));
    float_dtype(eg, d)?;
    let found = nodes(eg, d, "Sub").into_iter().find_map(|c| {
        let (x, mean) = (*c.get(1)?, *c.get(2)?);
        let rank = dims(eg, x)?.len();
        let axes = reductions_of(eg, mean, "ReduceMean", x)
            .into_iter()
            .find(|ax| trailing(ax, rank).is_some())?;
        if !same_type(eg, x, root) || !same_type(eg, d, root) {
            return None;
        }
        let (_, eps) = unary(eg, sd, "Sqrt").into_iter().find_map(|v| {
            plus_eps(eg, v, |var| {
                nodes(eg, var, "ReduceMean").into_iter().any(|r| {
                    r.len() >= 2
                        && pairs(eg, r[1], "Mul")
                            .into_iter()
                            .any(|(p, q)| same(eg, p, d) && same(eg, q, d))
                        && reduction(eg, &r, "ReduceMean").as_ref() == Some(&axes)
                })
            })
        })?;
        Some((x, trailing(&axes, rank)?, eps))
    });
    let (x, a, eps) = found?;
    norm_op(eg, "LayerNormalization", x, a, eps)
}

/// `Div(x, √(mean_A(x · x) + ε))`, A the trailing axes.
fn rmsnorm(eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
    let (x, r) = (bound(eg, s, "?x"), bound(eg, s, "?r"));
    float_dtype(eg, x)?;
    if !same_type(eg, x, root) {
        return None;
    }
    let rank = dims(eg, x)?.len();
    let found = unary(eg, r, "Sqrt").into_iter().find_map(|v| {
        let mut axis = None;
        let (_, eps) = plus_eps(eg, v, |ms| {
            nodes(eg, ms, "ReduceMean").into_iter().any(|n| {
                let ok = n.len() >= 2
                    && pairs(eg, n[1], "Mul")
                        .into_iter()
                        .any(|(p, q)| same(eg, p, x) && same(eg, q, x));
                if let Some(a) = reduction(eg, &n, "ReduceMean")
                    .filter(|_| ok)
                    .and_then(|ax| trailing(&ax, rank))
                {
                    axis = Some(a);
                    true
                } else {
                    false
                }
            })
        })?;
        Some((axis?, eps))
    });
    let (a, eps) = found?;
    norm_op(eg, "RMSNormalization", x, a, eps)
}

/// Absorbs a scale (`·γ`) or bias (`+β`) into a LayerNormalization/RMSNormalization whose scale is all ones (for
/// a scale) or that has no bias yet (for a bias).
struct Absorb {
    op: &'static str,
    bias: bool,
}

impl Absorb {
    fn build(&self, eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
        let (x, scale, g) = (bound(eg, s, "?x"), bound(eg, s, "?s"), bound(eg, s, "?g"));
        let op = op_with(eg, s, self.op, "?a")?;
        let axis = match &op {
            Op::LayerNormalization(n) => n.axis,
            Op::RMSNormalization(n) => n.axis,
            _ => return None,
        };
        let xt = tensor_type(eg, x)?;
        let shape = xt.shape.as_ref()?;
        let r = shape.len() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        let tail = shape.get(usize::try_from(a).ok()?..)?;
        let gt: &TensorType = tensor_type(eg, g)?;
        if gt.dtype != xt.dtype || !fits_tail(gt.shape.as_deref()?, tail) {
            return None;
        }
        if !same_type(eg, x, root) {
            return None;
        }
        let inputs = if self.bias {
            vec![x, scale, g]
        } else {
            // Only a scale of ones can be replaced by γ.
            konst(eg, scale)?
                .to_f64_vec()?
                .iter()
                .all(|v| *v == 1.0)
                .then_some(())?;
            vec![x, g]
        };
        Some(add_op(eg, &op, &inputs))
    }
}

impl Applier<ENode, GraphAnalysis> for Absorb {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        match self.build(eg, eclass, s) {
            Some(new) => union_into(eg, eclass, new),
            None => vec![],
        }
    }
}

/// Whether class `e` holds `1 + f(x)` (either order) for one of `inner`'s `f`: the `x` found.
fn one_plus(
    eg: &IrEGraph,
    e: Id,
    inner: impl Fn(Id) -> Option<(Id, &'static str)>,
) -> Vec<(Id, &'static str)> {
    pairs(eg, e, "Add")
        .into_iter()
        .filter(|(_, one)| is_const_near(eg, *one, 1.0))
        .filter_map(|(f, _)| inner(f))
        .collect()
}

/// The x of `erf(x / √2)` or `tanh(√(2/π) · (x + 0.044715 · x³))` in class `f`, with the approximation's name.
fn gelu_core(eg: &IrEGraph, f: Id) -> Option<(Id, &'static str)> {
    for u in unary(eg, f, "Erf") {
        let xs = pairs(eg, u, "Mul").into_iter().map(|(x, _)| x).chain(
            nodes(eg, u, "Div")
                .into_iter()
                .filter_map(|c| c.get(1).copied()),
        );
        for x in xs.collect::<Vec<_>>() {
            if scaled(eg, u, x, std::f64::consts::FRAC_1_SQRT_2) {
                return Some((x, "none"));
            }
        }
    }
    let k = (2.0 / std::f64::consts::PI).sqrt();
    for u in unary(eg, f, "Tanh") {
        for (inner, c) in pairs(eg, u, "Mul") {
            if !is_const_near(eg, c, k) {
                continue;
            }
            for (x, m) in pairs(eg, inner, "Add") {
                let cubic = pairs(eg, m, "Mul")
                    .into_iter()
                    .any(|(cube, c)| is_const_near(eg, c, 0.044715) && is_cube(eg, cube, x));
                if cubic {
                    return Some((x, "tanh"));
                }
            }
        }
    }
    None
}

/// `Mul(a, b)`: the three factors ½, x and (1 + erf/tanh(...x...)) in any order and grouping.
fn gelu(eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
    let (a, b) = (bound(eg, s, "?a"), bound(eg, s, "?b"));
    let mut triples = Vec::new();
    for (p, q) in [(a, b), (b, a)] {
        for (q1, q2) in pairs(eg, q, "Mul") {
            triples.push([p, q1, q2]);
        }
    }
    let found = triples.into_iter().find_map(|t| {
        // Try each factor as the ½ and each remaining one as the (1 + ...) factor.
        for (h, o, x) in [
            (0, 1, 2),
            (0, 2, 1),
            (1, 0, 2),
            (1, 2, 0),
            (2, 0, 1),
            (2, 1, 0),
        ] {
            if !is_const_near(eg, t[h], 0.5) {
                continue;
            }
            let hits = one_plus(eg, t[o], |f| gelu_core(eg, f));
            if let Some((_, approx)) = hits.into_iter().find(|(y, _)| same(eg, *y, t[x])) {
                return Some((t[x], approx));
            }
        }
        None
    })?;
    let (x, approx) = found;
    float_dtype(eg, x)?;
    if !same_type(eg, x, root) {
        return None;
    }
    let op = Op::Gelu(ops::Gelu {
        approximate: approx.to_string(),
    });
    Some(add_op(eg, &op, &[x]))
}

/// How the scores are masked before the Softmax.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// An additive mask: `S + M`.
    Add(Id),
    /// `Where(cond, S, c)` (`scores_if_true`) or `Where(cond, c, S)` with `c` a scalar constant so negative that
    /// adding it to any finite score gives `c` again: the same as adding `Where(cond, 0, c)` (or
    /// `Where(cond, c, 0)`), which is the mask the Attention node gets.
    Where {
        cond: Id,
        fill: Id,
        scores_if_true: bool,
    },
}

/// The most a `Where` fill value may be: `x + c == c` in f32 for every `|x| < 1e22` (ulp(1e30) / 2 ≈ 3.8e22),
/// and `exp(c − max)` is 0, as for the score it replaces. (−∞ is not accepted: a row masked everywhere is NaN
/// after the Softmax but 0 in Attention.)
const WHERE_FILL_MAX: f64 = -1e30;

/// The `Where` masks of scores class `sc`: `Where(cond, t, c)` or `Where(cond, c, t)` for a boolean `cond` and a
/// very negative scalar constant `c`, with `t` of the scores' type.
fn where_masks(eg: &IrEGraph, sc: Id) -> Vec<(Id, Mask)> {
    let mut out = Vec::new();
    for w in nodes(eg, sc, "Where") {
        if w.len() != 4 || tensor_type(eg, w[1]).is_none_or(|t| t.dtype != DType::Bool) {
            continue;
        }
        for (t, fill, scores_if_true) in [(w[2], w[3], true), (w[3], w[2], false)] {
            let fill_ok = konst(eg, fill).is_some_and(|c| c.len() == 1)
                && scalar(eg, fill).is_some_and(|c| c.is_finite() && c <= WHERE_FILL_MAX);
            if fill_ok && same_type(eg, t, sc) {
                out.push((
                    t,
                    Mask::Where {
                        cond: w[1],
                        fill,
                        scores_if_true,
                    },
                ));
            }
        }
    }
    out
}

/// The type of a mask: an additive mask's own; a `Where` mask's is the condition's shape (the fill is a scalar)
/// with the scores' dtype.
fn mask_type(eg: &IrEGraph, mask: Option<Mask>, dtype: DType) -> Option<Option<TensorType>> {
    Some(match mask {
        None => None,
        Some(Mask::Add(m)) => Some(tensor_type(eg, m)?.clone()),
        Some(Mask::Where { cond, .. }) => Some(TensorType {
            dtype,
            shape: dims(eg, cond),
        }),
    })
}

/// `MatMul(p, V)` with `p = Softmax(MatMul(Q, Kᵀ) · c [+ M | masked by Where], axis = -1)`, everything 4-D.
fn attention(eg: &mut IrEGraph, _root: Id, s: &Subst) -> Option<Id> {
    let (p, v) = (bound(eg, s, "?p"), bound(eg, s, "?v"));
    let dtype = float_dtype(eg, v)?;
    // Scores: (the class, the mask if any).
    let mut found = None;
    'outer: for c in nodes(eg, p, "Softmax") {
        let Some(Op::Softmax(sm)) = Op::from_attrs("Softmax", attrs_of(eg, c[0])).ok().flatten()
        else {
            continue;
        };
        if sm.axis != -1 && sm.axis != 3 {
            continue;
        }
        let sc = c[1];
        let mut candidates: Vec<(Id, Option<Mask>)> = vec![(sc, None)];
        for (t, m) in pairs(eg, sc, "Add") {
            if same_type(eg, t, sc) {
                candidates.push((t, Some(Mask::Add(m))));
            }
        }
        candidates.extend(where_masks(eg, sc).into_iter().map(|(t, m)| (t, Some(m))));
        for (t, mask) in candidates {
            let Some(mt) = mask_type(eg, mask, dtype) else {
                continue;
            };
            // The scaled scores: (MatMul class, scale).
            let mut scaled: Vec<(Id, f64)> = vec![(t, 1.0)];
            for (qk, k) in pairs(eg, t, "Mul") {
                if let Some(c) = scalar(eg, k) {
                    scaled.push((qk, c));
                }
            }
            for n in nodes(eg, t, "Div") {
                if let Some(c) = n.get(2).and_then(|&k| scalar(eg, k)) {
                    scaled.push((n[1], 1.0 / c));
                }
            }
            for (qk, scale) in scaled {
                // Attention scales Q and K by √scale each, so the scale must be positive.
                if !same_type(eg, qk, t) || !scale.is_finite() || scale <= 0.0 {
                    continue;
                }
                for mm in nodes(eg, qk, "MatMul") {
                    if mm.len() == 3
                        && attention_types_ok(eg, mm[1], mm[2], v, mt.as_ref(), sc, dtype)
                    {
                        found = Some((mm[1], mm[2], mask, scale));
                        break 'outer;
                    }
                }
            }
        }
    }
    let (q, kt, mask, scale) = found?;
    let mask = match mask {
        None => None,
        Some(Mask::Add(m)) => Some(m),
        Some(Mask::Where {
            cond,
            fill,
            scores_if_true,
        }) => {
            let zero = add_const(eg, Tensor::zeros(dtype, vec![]).ok()?);
            let (a, b) = if scores_if_true {
                (zero, fill)
            } else {
                (fill, zero)
            };
            Some(add_op(eg, &Op::Where(ops::Where::default()), &[cond, a, b]))
        }
    };
    let k = add_op(
        eg,
        &Op::Transpose(ops::Transpose {
            perm: Some(vec![0, 1, 3, 2]),
        }),
        &[kt],
    );
    let op = Op::Attention(ops::Attention {
        scale: Some(scale as f32),
        ..Default::default()
    });
    let mut inputs = vec![q, k, v];
    inputs.extend(mask);
    Some(add_op(eg, &op, &inputs))
}

/// Q `[b, h, sq, d]`, Kᵀ `[b, h, d, skv]`, V `[b, h, skv, dv]` with equal batch and head dims, one float dtype,
/// and a mask of that dtype that broadcasts to the scores `[b, h, sq, skv]` and covers every key.
fn attention_types_ok(
    eg: &IrEGraph,
    q: Id,
    kt: Id,
    v: Id,
    mask: Option<&TensorType>,
    scores: Id,
    dtype: DType,
) -> bool {
    let (Some(qd), Some(kd), Some(vd), Some(sd)) =
        (dims(eg, q), dims(eg, kt), dims(eg, v), dims(eg, scores))
    else {
        return false;
    };
    if qd.len() != 4 || kd.len() != 4 || vd.len() != 4 || sd.len() != 4 {
        return false;
    }
    let dtypes_ok = [q, kt, scores]
        .iter()
        .all(|c| tensor_type(eg, *c).is_some_and(|t| t.dtype == dtype));
    let shapes_ok = qd[..2] == kd[..2]
        && qd[..2] == vd[..2]
        && qd[3] == kd[2]
        && kd[3] == vd[2]
        && sd == [qd[0].clone(), qd[1].clone(), qd[2].clone(), kd[3].clone()];
    let mask_ok = match mask {
        None => true,
        Some(t) => {
            t.dtype == dtype
                && t.shape
                    .as_ref()
                    .is_some_and(|md| (1..=4).contains(&md.len()) && md.last() == Some(&kd[3]))
        }
    };
    dtypes_ok && shapes_ok && mask_ok
}
