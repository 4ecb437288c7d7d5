//! Fusion: Conv/Gemm/MatMul with the bias, residual and activation that follow them, into one `FusedConv` or
//! `FusedMatMul` node (jiuzhou's own ops: `act(Conv(X, W, B) + Z)` and `act(MatMul(A, B) + bias + Z)`).
//!
//! A fused op is built up one step at a time, each step its own rule: an Add after a product becomes its bias or
//! residual, an activation after it becomes its `activation`. The rules match the op *after* the product
//! (`(Relu {} ?y)`) and look in `?y`'s class for a *producer* that can absorb it: a `Conv`, a `MatMul`, or a fused op
//! whose activation is still `none` (and whose bias or residual slot is still free). One rule thus serves Conv and
//! MatMul, every input arity, and every step of a chain. A constant per-channel Add after a Conv is already folded
//! into the Conv's own bias by `fold-add-into-conv` (weights.rs); Gemm first becomes a FusedMatMul (`gemm-to-fused`),
//! which the other rules then extend.
//!
//! The fused ops compute exactly the nodes they replace (their reference semantics are that decomposition), so
//! extraction is free to choose either; the reference cost model counts a fused op a hair above 1, so a fused node
//! wins wherever it replaces two or more nodes and a lone Gemm stays a Gemm.

use egg::{Applier, Id, PatternAst, Subst, Symbol, rewrite as rw};
use jiuzhou_ir::ops::{Activation, FusedConv, FusedMatMul};
use jiuzhou_ir::{DType, Data, Op, Tensor, TensorType};

use super::super::analysis::{GraphAnalysis, IrEGraph, attrs_of, is_absent};
use super::super::lang::ENode;
use super::{Rule, add_const, add_op, bound, konst, op_with, tensor_type, union_into};

/// The fusion rules.
#[rustfmt::skip]
pub fn rules() -> Vec<Rule> {
    vec![
        // Gemm(A, B, C; α, β, transB) == FusedMatMul(A, α·op(B), β·C) for transA = 0, when B is a constant (or
        // α = 1 and transB = 0) and C is a constant (or β = 1).
        rw!("gemm-to-fused";        "(Gemm ?g ?a ?b)"                   => { GemmToFused { c: false } }),
        // The same with a C input.
        rw!("gemm-bias-to-fused";   "(Gemm ?g ?a ?b ?c)"                => { GemmToFused { c: true } }),
        // MatMul(A, B) + bias == FusedMatMul(A, B, bias) for a bias of shape [.., 1, N] (N the product's last dim),
        // constant or not; either operand order.
        rw!("matmul-bias-add";      "(Add {} ?l ?r)"                    => { Absorb::Bias }),
        // P + Z == P[residual = Z] for a producer P (Conv, MatMul, or a fused op with no residual and no activation
        // yet) and Z of P's exact type; either operand order.
        rw!("residual-add";         "(Add {} ?l ?r)"                    => { Absorb::Residual }),
        // Sum(P, Z) == P + Z: the same for a two-input Sum.
        rw!("residual-sum";         "(Sum {} ?l ?r)"                    => { Absorb::Residual }),
        // Relu(P) == P[activation = relu].
        rw!("fuse-relu";            "(Relu {} ?y)"                      => { Act::Relu }),
        // Clip(P, lo, hi) == P[activation = clip(lo, hi)] for scalar constant bounds (absent: ±∞); Relu6 is
        // Clip(P, 0, 6).
        rw!("fuse-clip";            "(Clip {} ?y ?lo ?hi)"              => { Act::Clip }),
        // Clip(P, lo) == P[activation = clip(lo, +∞)].
        rw!("fuse-clip-min";        "(Clip {} ?y ?lo)"                  => { Act::ClipMin }),
        // Sigmoid(P) == P[activation = sigmoid].
        rw!("fuse-sigmoid";         "(Sigmoid {} ?y)"                   => { Act::Sigmoid }),
        // P · Sigmoid(P) == P[activation = silu].
        rw!("fuse-silu";            "(Mul {} ?y (Sigmoid {} ?y))"       => { Act::Silu }),
        // Sigmoid(P) · P == P[activation = silu].
        rw!("fuse-silu-rev";        "(Mul {} (Sigmoid {} ?y) ?y)"       => { Act::Silu }),
        // Swish(P, alpha = 1) == P · Sigmoid(P) == P[activation = silu].
        rw!("fuse-swish";           "(Swish ?a ?y)"                     => { Act::Swish }),
        // Gelu(P) == P[activation = gelu] (erf form), or gelu_tanh for approximate = "tanh".
        rw!("fuse-gelu";            "(Gelu ?a ?y)"                      => { Act::Gelu }),
        // HardSwish(P) == P[activation = hard_swish].
        rw!("fuse-hardswish";       "(HardSwish {} ?y)"                 => { Act::HardSwish }),
        // LeakyRelu(P, α) == P[activation = leaky_relu(α)].
        rw!("fuse-leakyrelu";       "(LeakyRelu ?a ?y)"                 => { Act::LeakyRelu }),
        // Tanh(P) == P[activation = tanh].
        rw!("fuse-tanh";            "(Tanh {} ?y)"                      => { Act::Tanh }),
    ]
}

/// A node that can absorb what follows it: a Conv or MatMul (as the fused op with nothing fused yet), or a fused op
/// whose activation is still `none`.
#[derive(Clone, Debug)]
pub struct Producer {
    /// The fused op (`FusedConv` or `FusedMatMul`) with activation `none`.
    pub op: Op,
    /// `[X, W, bias, Z]` (`[A, B, bias, Z]`); `None` where absent.
    pub inputs: [Option<Id>; 4],
}

impl Producer {
    /// Whether it is a matrix product (else a convolution).
    pub fn is_matmul(&self) -> bool {
        matches!(self.op, Op::FusedMatMul(_))
    }

    /// Adds the fused node with `op` and these inputs; returns its class.
    fn add(&self, eg: &mut IrEGraph, op: &Op, inputs: [Option<Id>; 4]) -> Id {
        let mut ins: Vec<Option<Id>> = inputs.to_vec();
        while matches!(ins.last(), Some(None)) {
            ins.pop();
        }
        let ids: Vec<Id> = ins
            .into_iter()
            .map(|i| i.unwrap_or_else(|| eg.add(ENode::Absent)))
            .collect();
        add_op(eg, op, &ids)
    }
}

fn is_float(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}

/// The producers held by class `id` (see [`Producer`]).
pub fn producers(eg: &IrEGraph, id: Id) -> Vec<Producer> {
    let id = eg.find(id);
    let float = tensor_type(eg, id).is_some_and(|t| is_float(t.dtype));
    if !float {
        return Vec::new();
    }
    let mut out = Vec::new();
    for node in &eg[id].nodes {
        let ENode::Op {
            name,
            outputs: 1,
            children,
        } = node
        else {
            continue;
        };
        let (attrs, ins) = (children[0], &children[1..]);
        if ins.len() < 2 || ins.len() > 4 {
            continue;
        }
        let mut inputs = [None; 4];
        for (slot, &c) in inputs.iter_mut().zip(ins) {
            *slot = (!is_absent(eg, c)).then(|| eg.find(c));
        }
        if inputs[0].is_none() || inputs[1].is_none() {
            continue;
        }
        let op = match (*name, Op::from_attrs(name, attrs_of(eg, attrs))) {
            ("Conv", Ok(Some(Op::Conv(c)))) if ins.len() <= 3 => Op::FusedConv(FusedConv {
                activation: Activation::None,
                auto_pad: c.auto_pad,
                dilations: c.dilations,
                group: c.group,
                kernel_shape: c.kernel_shape,
                pads: c.pads,
                strides: c.strides,
            }),
            ("MatMul", Ok(Some(Op::MatMul(_)))) if ins.len() == 2 => {
                Op::FusedMatMul(FusedMatMul::default())
            }
            ("FusedConv", Ok(Some(op @ Op::FusedConv(FusedConv { activation, .. }))))
            | ("FusedMatMul", Ok(Some(op @ Op::FusedMatMul(FusedMatMul { activation }))))
                if activation.is_none() =>
            {
                op
            }
            _ => continue,
        };
        out.push(Producer { op, inputs });
    }
    out
}

/// Unions `new` into `root` if inference gives it exactly `root`'s known type (a fused node whose inputs do not
/// check out is left alone, unmerged).
pub(super) fn union_typed(eg: &mut IrEGraph, root: Id, new: Id) -> Vec<Id> {
    let same = matches!(
        (tensor_type(eg, root), tensor_type(eg, new)),
        (Some(a), Some(b)) if a == b && a.shape.is_some()
    );
    if same {
        union_into(eg, root, new)
    } else {
        vec![]
    }
}

/// The op with activation `act`.
fn with_activation(op: &Op, act: Activation) -> Op {
    let mut op = op.clone();
    match &mut op {
        Op::FusedConv(c) => c.activation = act,
        Op::FusedMatMul(m) => m.activation = act,
        _ => {}
    }
    op
}

/// What an Add (or two-input Sum) after a producer becomes.
#[derive(Clone, Copy, Debug)]
enum Absorb {
    /// The bias of a matrix product.
    Bias,
    /// The residual of a product or convolution.
    Residual,
}

/// Whether `addend` is a bias of the product of type `out`: `[.., 1, N]` with N the product's last dim.
fn is_bias_shape(out: &TensorType, addend: &TensorType) -> bool {
    let (Some(o), Some(a)) = (&out.shape, &addend.shape) else {
        return false;
    };
    let (Some(n), Some(last)) = (o.last(), a.last()) else {
        return false;
    };
    a.len() <= o.len()
        && n.known().is_some()
        && last == n
        && a[..a.len() - 1].iter().all(|d| d.known() == Some(1))
}

impl Absorb {
    fn apply(self, eg: &mut IrEGraph, root: Id, s: &Subst) -> Vec<Id> {
        let Some(out) = tensor_type(eg, root).cloned() else {
            return vec![];
        };
        if out.shape.is_none() {
            return vec![];
        }
        let (l, r) = (bound(eg, s, "?l"), bound(eg, s, "?r"));
        let mut changed = vec![];
        for (y, z) in [(l, r), (r, l)] {
            // The producer's result must already have the sum's type (the addend does not broadcast it larger).
            let (Some(yt), Some(zt)) = (tensor_type(eg, y), tensor_type(eg, z)) else {
                continue;
            };
            if *yt != out {
                continue;
            }
            let zt = zt.clone();
            for p in producers(eg, y) {
                let slot = match self {
                    Absorb::Bias if p.is_matmul() && is_bias_shape(&out, &zt) => 2,
                    Absorb::Residual if zt == out => 3,
                    _ => continue,
                };
                // Slots fill in order: a bias after a residual would change the order of the additions.
                if p.inputs[slot..].iter().any(|i| i.is_some()) {
                    continue;
                }
                let mut inputs = p.inputs;
                inputs[slot] = Some(z);
                let new = p.add(eg, &p.op, inputs);
                changed.extend(union_typed(eg, root, new));
            }
        }
        changed
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
        self.apply(eg, eclass, s)
    }
}

/// Which activation op a rule matched.
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Clip,
    ClipMin,
    Sigmoid,
    Silu,
    Swish,
    Gelu,
    HardSwish,
    LeakyRelu,
    Tanh,
}

/// A Clip bound bound to `v`: a scalar constant of the clipped dtype (`None` when not usable), or `absent`.
fn clip_bound(eg: &IrEGraph, s: &Subst, v: &str, absent: f32) -> Option<f32> {
    let c = bound(eg, s, v);
    if is_absent(eg, c) {
        return Some(absent);
    }
    let t = konst(eg, c)?;
    // Bounds of these dtypes are exact as f32 (the fused op stores f32 bounds and casts them back).
    if t.len() != 1 || !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return None;
    }
    t.to_f64_vec().map(|v| v[0] as f32)
}

impl Act {
    /// The activation the matched op stands for, or `None` if it cannot be fused.
    fn activation(self, eg: &IrEGraph, s: &Subst) -> Option<Activation> {
        Some(match self {
            Act::Relu => Activation::Relu,
            Act::Clip | Act::ClipMin => {
                let min = clip_bound(eg, s, "?lo", f32::NEG_INFINITY)?;
                let max = match self {
                    Act::Clip => clip_bound(eg, s, "?hi", f32::INFINITY)?,
                    _ => f32::INFINITY,
                };
                Activation::Clip { min, max }
            }
            Act::Sigmoid => Activation::Sigmoid,
            Act::Silu => Activation::Silu,
            Act::Swish => match op_with(eg, s, "Swish", "?a")? {
                Op::Swish(sw) if sw.alpha == 1.0 => Activation::Silu,
                _ => return None,
            },
            Act::Gelu => match op_with(eg, s, "Gelu", "?a")? {
                Op::Gelu(g) if g.approximate == "none" => Activation::Gelu,
                Op::Gelu(g) if g.approximate == "tanh" => Activation::GeluTanh,
                _ => return None,
            },
            Act::HardSwish => Activation::HardSwish,
            Act::LeakyRelu => match op_with(eg, s, "LeakyRelu", "?a")? {
                Op::LeakyRelu(l) => Activation::LeakyRelu { alpha: l.alpha },
                _ => return None,
            },
            Act::Tanh => Activation::Tanh,
        })
    }
}

impl Applier<ENode, GraphAnalysis> for Act {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let y = bound(eg, s, "?y");
        let same_type = matches!(
            (tensor_type(eg, eclass), tensor_type(eg, y)),
            (Some(a), Some(b)) if a == b
        );
        if !same_type {
            return vec![];
        }
        let Some(act) = self.activation(eg, s) else {
            return vec![];
        };
        let mut changed = vec![];
        for p in producers(eg, y) {
            let op = with_activation(&p.op, act);
            let new = p.add(eg, &op, p.inputs);
            changed.extend(union_typed(eg, eclass, new));
        }
        changed
    }
}

/// Turns a Gemm into a FusedMatMul, folding α and transB into a constant B and β into a constant C.
struct GemmToFused {
    c: bool,
}

/// The f32 data and shape of a constant class.
fn f32_const(eg: &IrEGraph, id: Id) -> Option<(Vec<usize>, Vec<f32>)> {
    let t = konst(eg, id)?;
    match t.data() {
        Data::F32(d) => Some((t.shape().to_vec(), d.clone())),
        _ => None,
    }
}

/// `alpha · wᵀ` for a row-major `r × c` matrix `w`, in cache-sized tiles (weights of fully connected layers reach
/// hundreds of megabytes; an element-by-element strided transpose of those takes seconds).
fn transpose_scaled(w: &[f32], r: usize, c: usize, alpha: f32) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; r * c];
    for i0 in (0..r).step_by(TILE) {
        for j0 in (0..c).step_by(TILE) {
            for i in i0..(i0 + TILE).min(r) {
                for j in j0..(j0 + TILE).min(c) {
                    out[j * r + i] = w[i * c + j] * alpha;
                }
            }
        }
    }
    out
}

impl GemmToFused {
    fn build(&self, eg: &mut IrEGraph, s: &Subst) -> Option<Id> {
        let Op::Gemm(g) = op_with(eg, s, "Gemm", "?g")? else {
            return None;
        };
        if g.transA != 0 {
            return None;
        }
        let a = bound(eg, s, "?a");
        let b = bound(eg, s, "?b");
        let b2 = if g.transB == 0 && g.alpha == 1.0 {
            b
        } else {
            let t = konst(eg, b)?;
            let Data::F32(w) = t.data() else {
                return None;
            };
            let [r, c] = <[usize; 2]>::try_from(t.shape()).ok()?;
            let (k, n) = if g.transB != 0 { (c, r) } else { (r, c) };
            let out = if g.transB != 0 {
                transpose_scaled(w, r, c, g.alpha)
            } else {
                w.iter().map(|v| v * g.alpha).collect()
            };
            add_const(eg, Tensor::from_vec(vec![k, n], out).ok()?)
        };
        let c = if self.c {
            let c = bound(eg, s, "?c");
            if is_absent(eg, c) {
                None
            } else if g.beta == 1.0 {
                Some(c)
            } else {
                let (shape, v) = f32_const(eg, c)?;
                let scaled: Vec<f32> = v.iter().map(|x| x * g.beta).collect();
                Some(add_const(eg, Tensor::from_vec(shape, scaled).ok()?))
            }
        } else {
            None
        };
        let p = Producer {
            op: Op::FusedMatMul(FusedMatMul::default()),
            inputs: [Some(a), Some(b2), c, None],
        };
        Some(p.add(eg, &p.op, p.inputs))
    }
}

impl Applier<ENode, GraphAnalysis> for GemmToFused {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        s: &Subst,
        _: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        // New constants are computed once per match, not every iteration.
        let mut key: Vec<Id> = ["?g", "?a", "?b"].iter().map(|v| bound(eg, s, v)).collect();
        if self.c {
            key.push(bound(eg, s, "?c"));
        }
        if !super::first_application(eg, rule, key) {
            return vec![];
        }
        match self.build(eg, s) {
            Some(new) => union_typed(eg, eclass, new),
            None => vec![],
        }
    }
}
