//! Layout: moving Transposes through elementwise ops, so that pairs of them meet and cancel, and the channels-last
//! (NHWC) form of convolutions, which a target's cost model may prefer.
//!
//! A Transpose commutes with every elementwise op: `f(Transpose(x, p)) == Transpose(f(x), p)` for a unary `f`,
//! and `g(Transpose(a, p), Transpose(b, p)) == Transpose(g(a, b), p)` for a binary `g` when `a` and `b` have the
//! same shape (no broadcasting), or when one side is a constant with a single element. A constant `c` of any
//! rank up to `a`'s also commutes once it is re-laid out: `g(Transpose(a, p), c) == Transpose(g(a, c'), p)` with
//! `c' = Transpose(c, p⁻¹)` (`c` first padded to `a`'s rank with leading 1s), which broadcasting a per-channel
//! constant needs. Each unary op gets a sinking rule (the Transpose moves towards the outputs) and a hoisting rule
//! (towards the inputs); binary ops get the sinking rules. Both forms stay in the e-graph and `transpose-transpose`
//! (clean-up) composes the Transposes that meet, so extraction sees layouts where they cancel. The rules are
//! generated from the op lists below; every generated rule has a soundness case (the tests build them from the
//! same lists).
//!
//! The channels-last rules ([`channels_last_rules`]) add, next to every Conv and FusedConv over a statically shaped float input with
//! constant weights, its channels-last form: `Transpose(FusedConvNhwc(Transpose(x, to_last), W'), to_first)`, with
//! `W'` the weights re-laid out from `[M, C/g, k..]` to `[k.., C/g, M]` once per weight (a new constant, computed
//! with the driver's reference semantics) and a residual transposed like `x`. Between two convs the `to_first` of
//! one meets the `to_last` of the next (directly or after sinking through activations and Adds) and they cancel,
//! so a graph extracted in channels-last form pays for Transposes only at its boundaries. Which form is extracted
//! is the target's choice: op count keeps channels-first (the Transposes are extra nodes); a cost model with
//! channels-last kernels prices `FusedConvNhwc` below `FusedConv`. MaxPool and AveragePool get their channels-last
//! forms (`MaxPoolNhwc`, `AveragePoolNhwc`) the same way, GlobalAveragePool a ReduceMean over the channels-last
//! spatial axes, so that a pool between two convs need not break a
//! channels-last chain, and a Transpose that only moves size-1 axes (after a global pool) becomes a Reshape.
//! Transposes back to channels-first on all inputs of a Concat sink below it (the concat's axis permuted), so that
//! a channel concat between channels-last convs (Inception, SqueezeNet) does not break the chain either; this rule
//! runs with the channels-last family, where such Transposes appear.

use std::sync::Arc;

use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::ops::{self, Activation, FusedConvNhwc};
use jiuzhou_ir::{Op, Tensor};

use super::super::analysis::{GraphAnalysis, IrEGraph, is_absent};
use super::super::lang::ENode;
use super::cleanup::perm;
use super::fusion::union_typed;
use super::{
    Guard, Rule, add_const, add_op, bound, first_application, is_float, konst, op_with, tensor_type,
};

/// Elementwise ops with one input whose attributes do not depend on the layout.
pub const UNARY: &[&str] = &[
    "Abs",
    "Neg",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Erf",
    "Sqrt",
    "Reciprocal",
    "Gelu",
    "Swish",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Elu",
    "Clip",
];

/// Elementwise ops with two inputs (numpy broadcasting).
pub const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Max", "Min"];

/// The name of the rule that sinks a Transpose through `op` (`kind`: `sink`, `hoist`, `sink-same`, `sink-const`,
/// `sink-bcast`, `sink-bcast-first`).
pub fn rule_name(kind: &str, op: &str) -> String {
    format!("transpose-{kind}-{}", op.to_ascii_lowercase())
}

fn pattern(s: &str) -> Pattern<super::super::lang::ENode> {
    s.parse().expect("layout patterns parse")
}

/// Whether classes `a` and `b` have the same known shape.
fn same_shape(a: &'static str, b: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let (x, y) = (bound(eg, s, a), bound(eg, s, b));
        match (tensor_type(eg, x), tensor_type(eg, y)) {
            (Some(p), Some(q)) => p.shape.is_some() && p.shape == q.shape,
            _ => false,
        }
    })
}

/// Whether the class bound to `c` is a constant with one element and a rank no larger than that of `x`'s class,
/// so broadcasting it commutes with any permutation of `x`'s axes.
fn single_element(c: &'static str, x: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let Some(k) = konst(eg, bound(eg, s, c)) else {
            return false;
        };
        let rank = tensor_type(eg, bound(eg, s, x)).and_then(|t| t.rank());
        k.len() == 1 && rank.is_some_and(|r| k.rank() <= r)
    })
}

/// The layout rules.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for op in UNARY {
        // op(Transpose(x, p)) == Transpose(op(x), p).
        rules.push(
            Rewrite::new(
                rule_name("sink", op),
                pattern(&format!("({op} ?a (Transpose ?p ?x))")),
                pattern(&format!("(Transpose ?p ({op} ?a ?x))")),
            )
            .expect("a valid rule"),
        );
        // Transpose(op(x), p) == op(Transpose(x, p)).
        rules.push(
            Rewrite::new(
                rule_name("hoist", op),
                pattern(&format!("(Transpose ?p ({op} ?a ?x))")),
                pattern(&format!("({op} ?a (Transpose ?p ?x))")),
            )
            .expect("a valid rule"),
        );
    }
    for op in BINARY {
        // op(Transpose(a, p), Transpose(b, p)) == Transpose(op(a, b), p) when a and b have the same shape.
        rules.push(
            Rewrite::new(
                rule_name("sink-same", op),
                pattern(&format!("({op} {{}} (Transpose ?p ?a) (Transpose ?p ?b))")),
                egg::ConditionalApplier {
                    condition: same_shape("?a", "?b"),
                    applier: pattern(&format!("(Transpose ?p ({op} {{}} ?a ?b))")),
                },
            )
            .expect("a valid rule"),
        );
        // op(Transpose(a, p), c) == Transpose(op(a, c), p) for a one-element constant c.
        rules.push(
            Rewrite::new(
                rule_name("sink-const", op),
                pattern(&format!("({op} {{}} (Transpose ?p ?a) ?c)")),
                egg::ConditionalApplier {
                    condition: single_element("?c", "?a"),
                    applier: pattern(&format!("(Transpose ?p ({op} {{}} ?a ?c))")),
                },
            )
            .expect("a valid rule"),
        );
        // op(Transpose(a, p), c) == Transpose(op(a, c'), p), c' = Transpose(c padded to a's rank, p⁻¹), for a
        // constant c of more than one element and a rank up to a's.
        rules.push(
            Rewrite::new(
                rule_name("sink-bcast", op),
                pattern(&format!("({op} {{}} (Transpose ?p ?a) ?c)")),
                SinkBroadcast {
                    op,
                    const_first: false,
                },
            )
            .expect("a valid rule"),
        );
        // op(c, Transpose(a, p)) == Transpose(op(c', a), p), the same with the constant first.
        rules.push(
            Rewrite::new(
                rule_name("sink-bcast-first", op),
                pattern(&format!("({op} {{}} ?c (Transpose ?p ?a))")),
                SinkBroadcast {
                    op,
                    const_first: true,
                },
            )
            .expect("a valid rule"),
        );
    }
    rules.extend(channels_last_rules());
    rules
}

/// The rules that add the channels-last form of a convolution or pool next to the channels-first one, and turn
/// the Transposes that only move size-1 axes into Reshapes; they run only for a cost model with
/// [`CostModel::channels_last`](super::super::cost::CostModel::channels_last).
#[rustfmt::skip]
pub fn channels_last_rules() -> Vec<Rule> {
    vec![
        // Conv(x, W) == Transpose(FusedConvNhwc(Transpose(x, [0, 2.., 1]), W'), [0, r−1, 1..r−1]) with
        // W' = Transpose(W, [2.., 1, 0]) a folded constant ([M, C/g, k..] → [k.., C/g, M]).
        rw!("conv-to-nhwc";               "(Conv ?a ?x ?w)"              => { ToNhwc { fused: false } }),
        // Conv(x, W, b) == Transpose(FusedConvNhwc(Transpose(x), W', b)) (the bias is per channel: unchanged).
        rw!("conv-bias-to-nhwc";          "(Conv ?a ?x ?w ?b)"           => { ToNhwc { fused: false } }),
        // FusedConv(x, W; act) == Transpose(FusedConvNhwc(Transpose(x), W'; act)).
        rw!("fusedconv-to-nhwc";          "(FusedConv ?a ?x ?w)"         => { ToNhwc { fused: true } }),
        // FusedConv(x, W, b; act) == Transpose(FusedConvNhwc(Transpose(x), W', b; act)).
        rw!("fusedconv-bias-to-nhwc";     "(FusedConv ?a ?x ?w ?b)"      => { ToNhwc { fused: true } }),
        // FusedConv(x, W, b, z; act) == Transpose(FusedConvNhwc(Transpose(x), W', b, Transpose(z); act)) for a
        // residual z of the output's exact shape (b possibly absent).
        rw!("fusedconv-residual-to-nhwc"; "(FusedConv ?a ?x ?w ?b ?z)"   => { ToNhwc { fused: true } }),
        // MaxPool(x) == Transpose(MaxPoolNhwc(Transpose(x, to_last)), to_first) (the values output only).
        rw!("maxpool-to-nhwc";            "(MaxPool ?a ?x)"              => { PoolToNhwc { max: true } }),
        // AveragePool(x) == Transpose(AveragePoolNhwc(Transpose(x, to_last)), to_first).
        rw!("averagepool-to-nhwc";        "(AveragePool ?a ?x)"          => { PoolToNhwc { max: false } }),
        // GlobalAveragePool(x) == Transpose(ReduceMean(Transpose(x, to_last), axes = [1..r−1], keepdims), to_first).
        rw!("globalaveragepool-to-nhwc";  "(GlobalAveragePool ?a ?x)"    => { GlobalPoolToNhwc }),
        // Transpose(x, p) == Reshape(x, shape) when p keeps the axes of size above 1 in order (the elements do not
        // move): [1, 1, 1, C] to [1, C, 1, 1] after a global pool.
        rw!("transpose-unit-axes-to-reshape"; "(Transpose ?p ?x)"        => { UnitTransposeToReshape }),
        // Concat(Transpose(x₁, p), …, Transpose(xₙ, p); axis a) == Transpose(Concat(x₁, …, xₙ; axis p[a]), p) for
        // p = [0, r−1, 1, .., r−2] (back to channels-first): the channel concats of Inception and SqueezeNet between
        // channels-last convs (2 to 4 inputs).
        rw!("transpose-sink-concat2";     "(Concat ?a (Transpose ?p ?x0) (Transpose ?p ?x1))" => { SinkConcat(2) }),
        rw!("transpose-sink-concat3";
            "(Concat ?a (Transpose ?p ?x0) (Transpose ?p ?x1) (Transpose ?p ?x2))"             => { SinkConcat(3) }),
        rw!("transpose-sink-concat4";
            "(Concat ?a (Transpose ?p ?x0) (Transpose ?p ?x1) (Transpose ?p ?x2) (Transpose ?p ?x3))" => { SinkConcat(4) }),
    ]
}

/// Sinks the Transposes (one permutation) of all `n` inputs of a Concat below it.
struct SinkConcat(usize);

impl SinkConcat {
    fn build(&self, eg: &mut IrEGraph, s: &Subst) -> Option<Id> {
        let Op::Concat(c) = op_with(eg, s, "Concat", "?a")? else {
            return None;
        };
        let xs: Vec<Id> = (0..self.0)
            .map(|i| bound(eg, s, &format!("?x{i}")))
            .collect();
        let r = tensor_type(eg, xs[0])?.rank()?;
        if xs
            .iter()
            .any(|&x| tensor_type(eg, x).and_then(|t| t.rank()) != Some(r))
        {
            return None;
        }
        let p = op_with(eg, s, "Transpose", "?p").and_then(|op| perm(&op, r))?;
        // Only the layout change back to channels-first: sinking any permutation would let Concats multiply over
        // every layout the Transposes around them compose (Inception-v2 then fills the e-graph).
        let to_first: Vec<usize> = to_channels_first(r).iter().map(|&i| i as usize).collect();
        if p != to_first {
            return None;
        }
        let axis = if c.axis < 0 {
            c.axis + r as i64
        } else {
            c.axis
        };
        let inner = *p.get(usize::try_from(axis).ok()?)?;
        // An input's class may hold several channels-last forms that nothing has merged yet (a FusedConvNhwc with
        // its Relu and one followed by a Relu): each `xᵢ` is `Transpose(input, to_last)` of the concat's own input
        // (p = to_first is its inverse), so that node joins every `xᵢ` a match binds into one class and the concat
        // gets a single channels-last form.
        let t = op_with(eg, s, "Transpose", "?p")?;
        let last = transpose_op(to_channels_last(r));
        for &x in &xs {
            let input = add_op(eg, &t, &[x]);
            let back = add_op(eg, &last, &[input]);
            eg.union(back, x);
        }
        let xs: Vec<Id> = xs.iter().map(|&x| eg.find(x)).collect();
        let concat = Op::Concat(ops::Concat { axis: inner as i64 });
        let y = add_op(eg, &concat, &xs);
        Some(add_op(eg, &t, &[y]))
    }
}

impl Applier<ENode, GraphAnalysis> for SinkConcat {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        // Once per concat class: every match builds the same nodes (see `build`); this skips the repeats.
        let key = vec![eg.find(eclass)];
        apply_once(eg, eclass, rule, key, |eg| self.build(eg, s))
    }
}

/// Adds the channels-last form of the matched MaxPool (`max`) or AveragePool.
struct PoolToNhwc {
    max: bool,
}

impl PoolToNhwc {
    fn build(&self, eg: &mut IrEGraph, s: &Subst) -> Option<Id> {
        let op = if self.max {
            let Op::MaxPool(p) = op_with(eg, s, "MaxPool", "?a")? else {
                return None;
            };
            Op::MaxPoolNhwc(ops::MaxPoolNhwc {
                auto_pad: p.auto_pad,
                ceil_mode: p.ceil_mode,
                dilations: p.dilations,
                kernel_shape: p.kernel_shape,
                pads: p.pads,
                strides: p.strides,
            })
        } else {
            let Op::AveragePool(p) = op_with(eg, s, "AveragePool", "?a")? else {
                return None;
            };
            Op::AveragePoolNhwc(ops::AveragePoolNhwc {
                auto_pad: p.auto_pad,
                ceil_mode: p.ceil_mode,
                count_include_pad: p.count_include_pad,
                dilations: p.dilations,
                kernel_shape: p.kernel_shape,
                pads: p.pads,
                strides: p.strides,
            })
        };
        let x = bound(eg, s, "?x");
        let xt = tensor_type(eg, x)?;
        let r = xt.known_dims()?.len();
        if !is_float(xt.dtype) || r < 3 {
            return None;
        }
        let xl = add_op(eg, &transpose_op(to_channels_last(r)), &[x]);
        let y = add_op(eg, &op, &[xl]);
        Some(add_op(eg, &transpose_op(to_channels_first(r)), &[y]))
    }
}

impl Applier<ENode, GraphAnalysis> for PoolToNhwc {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        match self.build(eg, s) {
            Some(new) => union_typed(eg, eclass, new),
            None => vec![],
        }
    }
}

/// Adds the channels-last form of a GlobalAveragePool: a mean over the spatial axes of the channels-last value.
struct GlobalPoolToNhwc;

impl Applier<ENode, GraphAnalysis> for GlobalPoolToNhwc {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = bound(eg, s, "?x");
        let Some(xt) = tensor_type(eg, x) else {
            return vec![];
        };
        let Some(r) = xt.known_dims().map(|d| d.len()) else {
            return vec![];
        };
        if !is_float(xt.dtype) || r < 3 {
            return vec![];
        }
        let xl = add_op(eg, &transpose_op(to_channels_last(r)), &[x]);
        let axes = add_const(eg, Tensor::vector((1..r as i64 - 1).collect::<Vec<i64>>()));
        let mean = add_op(eg, &Op::ReduceMean(ops::ReduceMean::default()), &[xl, axes]);
        let y = add_op(eg, &transpose_op(to_channels_first(r)), &[mean]);
        union_typed(eg, eclass, y)
    }
}

/// Replaces a Transpose that moves only size-1 axes with a Reshape to its (static) result shape.
struct UnitTransposeToReshape;

impl Applier<ENode, GraphAnalysis> for UnitTransposeToReshape {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let x = bound(eg, s, "?x");
        let Some(dims) = tensor_type(eg, x).and_then(|t| t.known_dims()) else {
            return vec![];
        };
        let Some(p) = op_with(eg, s, "Transpose", "?p").and_then(|op| perm(&op, dims.len())) else {
            return vec![];
        };
        // The axes of size above 1, in the order the Transpose reads them, must be in increasing order.
        let moved: Vec<usize> = p.iter().copied().filter(|&a| dims[a] != 1).collect();
        if dims.contains(&0) || moved.windows(2).any(|w| w[0] > w[1]) {
            return vec![];
        }
        let shape: Vec<i64> = p.iter().map(|&a| dims[a] as i64).collect();
        let target = add_const(eg, Tensor::vector(shape));
        let y = add_op(eg, &Op::Reshape(ops::Reshape::default()), &[x, target]);
        union_typed(eg, eclass, y)
    }
}

/// The permutation that moves the channel axis (1) last: `[0, 2, .., r−1, 1]`.
pub fn to_channels_last(r: usize) -> Vec<i64> {
    let r = r as i64;
    [0].into_iter().chain(2..r).chain([1]).collect()
}

/// The permutation that moves the last axis to position 1: `[0, r−1, 1, .., r−2]` (the inverse of
/// [`to_channels_last`]).
pub fn to_channels_first(r: usize) -> Vec<i64> {
    let r = r as i64;
    [0, r - 1].into_iter().chain(1..r - 1).collect()
}

fn transpose_op(perm: Vec<i64>) -> Op {
    Op::Transpose(ops::Transpose { perm: Some(perm) })
}

/// The class bound to `v` unless it is absent (or not bound by the pattern).
fn present(eg: &IrEGraph, s: &Subst, v: &str) -> Option<Option<Id>> {
    match s.get(super::var(v)) {
        None => Some(None),
        Some(&id) => {
            let id = eg.find(id);
            Some((!is_absent(eg, id)).then_some(id))
        }
    }
}

/// Adds the channels-last form of the matched Conv (`fused: false`) or FusedConv.
struct ToNhwc {
    fused: bool,
}

impl ToNhwc {
    fn build(&self, eg: &mut IrEGraph, root: Id, s: &Subst) -> Option<Id> {
        let (activation, conv) = if self.fused {
            let Op::FusedConv(c) = op_with(eg, s, "FusedConv", "?a")? else {
                return None;
            };
            (
                c.activation,
                ops::Conv {
                    auto_pad: c.auto_pad,
                    dilations: c.dilations,
                    group: c.group,
                    kernel_shape: c.kernel_shape,
                    pads: c.pads,
                    strides: c.strides,
                },
            )
        } else {
            let Op::Conv(c) = op_with(eg, s, "Conv", "?a")? else {
                return None;
            };
            (Activation::None, c)
        };
        let x = bound(eg, s, "?x");
        let xt = tensor_type(eg, x)?;
        let r = xt.known_dims()?.len();
        if !is_float(xt.dtype) || r < 3 {
            return None;
        }
        let w = konst(eg, bound(eg, s, "?w"))?;
        if w.rank() != r || w.dtype() != xt.dtype {
            return None;
        }
        let b = present(eg, s, "?b")?;
        let z = present(eg, s, "?z")?;
        if let Some(z) = z {
            // Only a residual of the output's own shape is transposed like the input.
            let (zt, yt) = (tensor_type(eg, z)?, tensor_type(eg, root)?);
            if zt != yt || zt.known_dims().is_none() {
                return None;
            }
        }
        let w_last = relaid_weight(eg, w)?;
        let xl = add_op(eg, &transpose_op(to_channels_last(r)), &[x]);
        // Interned by identity: every conv node reading this weight shares one re-laid-out constant.
        let wc = eg.analysis.intern_const(w_last, None);
        let wl = eg.add(ENode::Const(wc));
        let mut inputs = vec![xl, wl];
        if b.is_some() || z.is_some() {
            inputs.push(b.unwrap_or_else(|| eg.add(ENode::Absent)));
        }
        if let Some(z) = z {
            inputs.push(add_op(eg, &transpose_op(to_channels_last(r)), &[z]));
        }
        let op = Op::FusedConvNhwc(FusedConvNhwc {
            activation,
            auto_pad: conv.auto_pad,
            dilations: conv.dilations,
            group: conv.group,
            kernel_shape: conv.kernel_shape,
            pads: conv.pads,
            strides: conv.strides,
        });
        let y = add_op(eg, &op, &inputs);
        Some(add_op(eg, &transpose_op(to_channels_first(r)), &[y]))
    }
}

/// The weights `w` (`[M, C/g, k..]`) re-laid out as `[k.., C/g, M]`, computed once per weight tensor.
fn relaid_weight(eg: &mut IrEGraph, w: Arc<Tensor>) -> Option<Arc<Tensor>> {
    if let Some((_, t)) = eg.analysis.relaid.iter().find(|(o, _)| Arc::ptr_eq(o, &w)) {
        return Some(t.clone());
    }
    let t = match relaid_f32(&w) {
        Some(t) => Arc::new(t),
        None => {
            let r = w.rank() as i64;
            let perm: Vec<i64> = (2..r).chain([1, 0]).collect();
            eg.analysis
                .evaluate(&transpose_op(perm), &[Some(w.clone())])?
        }
    };
    eg.analysis.relaid.push((w, t.clone()));
    Some(t)
}

/// The f32 weights `w` (`[M, C/g, k..]`) as `[k.., C/g, M]` directly (a weight is a `[M, C/g, K]` block read
/// as `[K, C/g, M]`): the same elements the reference Transpose gives, without its per-element index arithmetic.
fn relaid_f32(w: &Tensor) -> Option<Tensor> {
    let jiuzhou_ir::Data::F32(d) = w.data() else {
        return None;
    };
    let s = w.shape();
    let (m, c) = (*s.first()?, *s.get(1)?);
    let k: usize = s[2..].iter().product();
    let ck = c * k;
    if d.len() != m * ck {
        return None;
    }
    // Source [M, C, K] to destination [K, C, M], 32 output channels at a time: the 32 source rows are read
    // front to back together (they stay in cache), each destination run of 32 is written contiguously.
    const TILE: usize = 32;
    let mut out = vec![0f32; d.len()];
    for m0 in (0..m).step_by(TILE) {
        let m1 = (m0 + TILE).min(m);
        for ci in 0..c {
            for ki in 0..k {
                let at = (ki * c + ci) * m;
                let src = ci * k + ki;
                for (o, mi) in out[at + m0..at + m1].iter_mut().zip(m0..m1) {
                    *o = d[mi * ck + src];
                }
            }
        }
    }
    let mut shape: Vec<usize> = s[2..].to_vec();
    shape.extend([c, m]);
    Tensor::from_vec(shape, out).ok()
}

impl Applier<ENode, GraphAnalysis> for ToNhwc {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key: Vec<Id> = ["?x", "?w", "?b", "?z"]
            .iter()
            .filter_map(|v| s.get(super::var(v)).map(|&id| eg.find(id)))
            .chain([eg.find(eclass)])
            .collect();
        // Once per match: a match the rule cannot apply to (yet) is tried again next iteration.
        apply_once(eg, eclass, rule, key, |eg| self.build(eg, eclass, s))
    }
}

/// Sinks a Transpose through a binary op whose other operand is a broadcast constant, re-laying the constant out.
struct SinkBroadcast {
    op: &'static str,
    const_first: bool,
}

impl SinkBroadcast {
    fn build(&self, eg: &mut IrEGraph, s: &Subst) -> Option<Id> {
        let c = konst(eg, bound(eg, s, "?c"))?;
        let a = bound(eg, s, "?a");
        let r = tensor_type(eg, a)?.rank()?;
        if c.len() <= 1 || c.rank() > r {
            return None;
        }
        let p = op_with(eg, s, "Transpose", "?p").and_then(|op| perm(&op, r))?;
        let mut inv = vec![0i64; r];
        for (i, &j) in p.iter().enumerate() {
            inv[j] = i as i64;
        }
        let mut dims = vec![1; r - c.rank()];
        dims.extend_from_slice(c.shape());
        let padded = Tensor::clone(&c).reshape(dims).ok()?;
        let relaid = eg
            .analysis
            .evaluate(&transpose_op(inv), &[Some(Arc::new(padded))])?;
        let c2 = add_const(eg, Arc::unwrap_or_clone(relaid));
        let op = Op::from_attrs(self.op, Default::default()).ok().flatten()?;
        let ins = if self.const_first { [c2, a] } else { [a, c2] };
        let y = add_op(eg, &op, &ins);
        let t = op_with(eg, s, "Transpose", "?p")?;
        Some(add_op(eg, &t, &[y]))
    }
}

impl Applier<ENode, GraphAnalysis> for SinkBroadcast {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let key = vec![eg.find(eclass), bound(eg, s, "?a"), bound(eg, s, "?c")];
        // Once per match: a match the rule cannot apply to (yet) is tried again next iteration.
        apply_once(eg, eclass, rule, key, |eg| self.build(eg, s))
    }
}

/// Unions a match's replacement into `eclass` at most once per rule and `key`: a key already applied is skipped,
/// and one is recorded only when `build` succeeds (a match the rule cannot apply to yet is tried again next
/// iteration).
fn apply_once(
    eg: &mut IrEGraph,
    eclass: Id,
    rule: Symbol,
    key: Vec<Id>,
    build: impl FnOnce(&mut IrEGraph) -> Option<Id>,
) -> Vec<Id> {
    if eg
        .analysis
        .applied
        .contains(&(rule.to_string(), key.clone()))
    {
        return vec![];
    }
    match build(eg) {
        Some(new) => {
            first_application(eg, rule, key);
            union_typed(eg, eclass, new)
        }
        None => vec![],
    }
}
