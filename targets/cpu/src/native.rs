//! Native f32 kernels for the ops that are neither GEMMs nor JIT-generated elementwise kernels: pooling
//! ([`crate::pool`]), reductions ([`crate::reduce`]), softmax and normalizations ([`crate::norm`]), data movement
//! ([`crate::movement`]) and the float activations below.
//!
//! A native kernel reads f32 tensors (its run-time inputs; constant operands such as axes, shapes or slice bounds
//! are read once at compile time) and writes one f32 output whose shape it computes from its inputs' shapes.
//! [`select`] picks the kernel for a node, or `None` when the node must run the reference implementation.

use jiuzhou_ir::{DType, Graph, Node, Op, ValueId, ValueType};

use crate::ExecError;
use crate::parallel::{MIN_CHUNK, Parallel};

/// A run-time input of a native kernel.
#[derive(Clone, Copy)]
pub struct In<'a> {
    /// The elements, row-major.
    pub data: &'a [f32],
    /// The shape.
    pub shape: &'a [usize],
}

/// A kernel over f32 tensors with one f32 output.
pub trait NativeKernel: Send + Sync {
    /// The output shape for inputs of the given shapes (checking them).
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError>;
    /// Computes the output into `out`, sized by [`NativeKernel::out_shape`].
    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError>;
    /// Like [`NativeKernel::run`], with `par`'s threads for kernels that split their independent outputs (each
    /// output computed exactly as on one thread); the default runs on the caller's thread.
    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let _ = par;
        self.run(ins, out)
    }
    /// How the output relates to the inputs in memory, which lets the memory plan share them; the default: a
    /// computed output of its own.
    fn placement(&self) -> Placement {
        Placement::Compute
    }
}

/// How a native kernel's output relates to its inputs in memory ([`NativeKernel::placement`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The output is computed into memory of its own.
    Compute,
    /// The output is the (only) input's elements in the same order under another shape: it may be the input's
    /// memory itself.
    View,
    /// The output is the inputs concatenated along this axis (possibly negative): where the axes before it have
    /// one position, each input may be computed straight into its slice of the output.
    Concat(i64),
}

/// A kernel chosen for a node and the values it reads at run time, in the order [`NativeKernel::run`] takes them.
pub struct Native {
    /// The kernel.
    pub kernel: Box<dyn NativeKernel>,
    /// The run-time inputs.
    pub inputs: Vec<ValueId>,
}

fn is_f32(graph: &Graph, id: ValueId) -> bool {
    matches!(&graph.value(id).ty, ValueType::Tensor(t) if t.dtype == DType::F32)
}

/// The integers of a constant (i64 or i32) input, `Some(None)` when the input is absent, `None` when it is not a
/// constant.
pub(crate) fn const_ints(graph: &Graph, id: Option<ValueId>) -> Option<Option<Vec<i64>>> {
    let Some(id) = id else { return Some(None) };
    let c = graph.value(id).constant.as_ref()?;
    if !matches!(c.dtype(), DType::I64 | DType::I32) {
        return None;
    }
    c.to_i64_vec().map(Some)
}

/// The value of a constant f32 scalar input, `Some(None)` when absent.
fn const_f32(graph: &Graph, id: Option<ValueId>) -> Option<Option<f32>> {
    let Some(id) = id else { return Some(None) };
    let c = graph.value(id).constant.as_ref()?;
    match c.as_slice::<f32>() {
        Ok([v]) => Some(Some(*v)),
        _ => None,
    }
}

/// `axis` (possibly negative) as an index into `rank` axes.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, ExecError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(ExecError::new(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Distinct axes (possibly negative) as indices into `rank` axes.
pub(crate) fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, ExecError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(ExecError::new(format!("axis {a} is repeated")));
        }
        out.push(a);
    }
    Ok(out)
}

/// The number of elements of `shape`, checked for overflow.
pub(crate) fn numel(shape: &[usize]) -> Result<usize, ExecError> {
    jiuzhou_ir::tensor::checked_numel(shape, DType::F32).map_err(|e| ExecError::new(e.to_string()))
}

/// Checks that every input's data matches its shape and `out` matches `out_shape`.
pub(crate) fn check_buffers(
    ins: &[In<'_>],
    out: &[f32],
    out_shape: &[usize],
) -> Result<(), ExecError> {
    for i in ins {
        if i.data.len() != numel(i.shape)? {
            return Err(ExecError::new("a kernel input does not match its shape"));
        }
    }
    if out.len() != numel(out_shape)? {
        return Err(ExecError::new("a kernel output does not match its shape"));
    }
    Ok(())
}

/// Chooses a native kernel for `node`, or `None` when none covers it (its op, attributes, dtypes or non-constant
/// parameters).
pub fn select(graph: &Graph, node: &Node) -> Option<Native> {
    // Inference Dropout may list its mask output; when nothing reads the mask, only the data output matters.
    let dead_mask = matches!(node.op, Op::Dropout(_))
        && node.outputs.len() == 2
        && graph.nodes.iter().all(|n| n.op.subgraphs().is_empty())
        && !graph.outputs.contains(&node.outputs[1])
        && !graph
            .nodes
            .iter()
            .any(|n| n.inputs.contains(&Some(node.outputs[1])));
    if (node.outputs.len() != 1 && !dead_mask) || !is_f32(graph, node.outputs[0]) {
        return None;
    }
    let ins = &node.inputs;
    let req = |i: usize| ins.get(i).copied().flatten();
    let x = req(0)?;
    // Most kernels read input 0 and take the others (if any) as compile-time constants.
    let one = |k: Box<dyn NativeKernel>| -> Option<Native> {
        is_f32(graph, x).then(|| Native {
            kernel: k,
            inputs: vec![x],
        })
    };
    use crate::{movement as mv, norm, pool, reduce};
    match &node.op {
        Op::MaxPool(p) => one(Box::new(pool::Pool::max(p).ok()?)),
        Op::AveragePool(p) => one(Box::new(pool::Pool::average(p).ok()?)),
        Op::GlobalAveragePool(_) => one(Box::new(pool::GlobalPool { max: false })),
        Op::GlobalMaxPool(_) => one(Box::new(pool::GlobalPool { max: true })),
        Op::Softmax(s) => one(Box::new(norm::Softmax {
            axis: s.axis,
            log: false,
        })),
        Op::LogSoftmax(s) => one(Box::new(norm::Softmax {
            axis: s.axis,
            log: true,
        })),
        Op::LRN(l) => one(Box::new(norm::Lrn::new(l).ok()?)),
        Op::FusedElementwise(f) => {
            let inputs: Vec<ValueId> = ins.iter().copied().collect::<Option<_>>()?;
            if inputs.len() != f.expr.num_inputs() || !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(crate::fused_elementwise::FusedExpr::new(&f.expr)),
                inputs,
            })
        }
        Op::LayerNormalization(l) => {
            let mut inputs = vec![x, req(1)?];
            inputs.extend(req(2));
            if ins.len() > 3 || !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(norm::RowNorm {
                    axis: l.axis,
                    epsilon: l.epsilon,
                    rms: false,
                }),
                inputs,
            })
        }
        Op::RMSNormalization(l) => {
            let inputs = vec![x, req(1)?];
            if ins.len() > 2 || !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(norm::RowNorm {
                    axis: l.axis,
                    epsilon: l.epsilon,
                    rms: true,
                }),
                inputs,
            })
        }
        Op::BatchNormalization(b) if b.training_mode == 0 => {
            let inputs: Vec<ValueId> = (0..5).map(req).collect::<Option<_>>()?;
            if !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(norm::BatchNorm { epsilon: b.epsilon }),
                inputs,
            })
        }
        Op::InstanceNormalization(n) => {
            let inputs: Vec<ValueId> = (0..3).map(req).collect::<Option<_>>()?;
            if !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(norm::InstanceNorm { epsilon: n.epsilon }),
                inputs,
            })
        }
        Op::ReduceSum(r) => reduce_node(
            graph,
            node,
            reduce::Kind::Sum,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceMean(r) => reduce_node(
            graph,
            node,
            reduce::Kind::Mean,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceMax(r) => reduce_node(
            graph,
            node,
            reduce::Kind::Max,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceMin(r) => reduce_node(
            graph,
            node,
            reduce::Kind::Min,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceProd(r) => reduce_node(
            graph,
            node,
            reduce::Kind::Prod,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceL1(r) => reduce_node(
            graph,
            node,
            reduce::Kind::L1,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceL2(r) => reduce_node(
            graph,
            node,
            reduce::Kind::L2,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceSumSquare(r) => reduce_node(
            graph,
            node,
            reduce::Kind::SumSquare,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceLogSum(r) => reduce_node(
            graph,
            node,
            reduce::Kind::LogSum,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::ReduceLogSumExp(r) => reduce_node(
            graph,
            node,
            reduce::Kind::LogSumExp,
            r.keepdims,
            r.noop_with_empty_axes,
        ),
        Op::Attention(a) => {
            let rank = |v: ValueId| match &graph.value(v).ty {
                ValueType::Tensor(t) => t.shape.as_ref().map(|s| s.len()),
                _ => None,
            };
            let inputs: Vec<ValueId> = ins.iter().copied().collect::<Option<_>>()?;
            let supported = (3..=4).contains(&inputs.len())
                && inputs.iter().all(|&i| is_f32(graph, i))
                && inputs[..3].iter().all(|&i| rank(i) == Some(4))
                && a.left_window_size < 0
                && a.right_window_size < 0
                && a.softcap == 0.0
                && a.softmax_precision.is_none_or(|p| p == 1);
            supported.then(|| Native {
                kernel: Box::new(crate::attention::Attention {
                    scale: a.scale,
                    causal: a.is_causal != 0,
                }),
                inputs,
            })
        }
        Op::Identity(_) if ins.len() == 1 => one(Box::new(mv::Reshape::Identity)),
        Op::Dropout(_) => {
            // Inference: without `training_mode` (or with a constant false one) Dropout is the identity.
            let training = match req(2) {
                None => false,
                Some(t) => {
                    let c = graph.value(t).constant.as_ref()?;
                    c.to_i64_vec()?.first().is_some_and(|&b| b != 0)
                }
            };
            (!training).then_some(())?;
            one(Box::new(mv::Reshape::Identity))
        }
        Op::Reshape(r) => {
            let shape = const_ints(graph, req(1))??;
            one(Box::new(mv::Reshape::To {
                shape,
                allowzero: r.allowzero != 0,
            }))
        }
        Op::Flatten(f) => one(Box::new(mv::Reshape::Flatten(f.axis))),
        Op::Squeeze(_) => one(Box::new(mv::Reshape::Squeeze(const_ints(graph, req(1))?))),
        Op::Unsqueeze(_) => one(Box::new(mv::Reshape::Unsqueeze(const_ints(
            graph,
            req(1),
        )??))),
        Op::Transpose(t) => one(Box::new(mv::Transpose {
            perm: t.perm.clone(),
        })),
        Op::Concat(c) => {
            let inputs: Vec<ValueId> = ins.iter().copied().collect::<Option<_>>()?;
            if inputs.is_empty() || !inputs.iter().all(|&i| is_f32(graph, i)) {
                return None;
            }
            Some(Native {
                kernel: Box::new(mv::Concat { axis: c.axis }),
                inputs,
            })
        }
        Op::Slice(_) => {
            let starts = const_ints(graph, req(1))??;
            let ends = const_ints(graph, req(2))??;
            let axes = const_ints(graph, req(3))?;
            let steps = const_ints(graph, req(4))?;
            one(Box::new(mv::Slice {
                starts,
                ends,
                axes,
                steps,
            }))
        }
        Op::Gather(g) => {
            let id = req(1)?;
            let c = graph.value(id).constant.as_ref()?;
            if !matches!(c.dtype(), DType::I64 | DType::I32) {
                return None;
            }
            one(Box::new(mv::Gather {
                axis: g.axis,
                indices: c.to_i64_vec()?,
                indices_shape: c.shape().to_vec(),
            }))
        }
        Op::Pad(p) => {
            let pads = const_ints(graph, req(1))??;
            let value = const_f32(graph, req(2))?.unwrap_or(0.0);
            let axes = const_ints(graph, req(3))?;
            one(Box::new(mv::Pad::new(&p.mode, pads, value, axes)?))
        }
        Op::Expand(_) => one(Box::new(mv::Expand {
            shape: const_ints(graph, req(1))??,
        })),
        op => {
            let f = Activation::of(op)?;
            (ins.len() == 1).then_some(())?;
            one(Box::new(f))
        }
    }
}

fn reduce_node(
    graph: &Graph,
    node: &Node,
    kind: crate::reduce::Kind,
    keepdims: i64,
    noop: i64,
) -> Option<Native> {
    let x = node.inputs.first().copied().flatten()?;
    if !is_f32(graph, x) || node.inputs.len() > 2 {
        return None;
    }
    let axes = const_ints(graph, node.inputs.get(1).copied().flatten())?;
    Some(Native {
        kernel: Box::new(crate::reduce::Reduce {
            kind,
            axes: axes.unwrap_or_default(),
            keepdims: keepdims != 0,
            noop_with_empty_axes: noop != 0,
        }),
        inputs: vec![x],
    })
}

/// A float activation computed per element in f64 and rounded once, as the reference does. Three are vectorized
/// with their own approximations, because libm's scalar `erf`/`exp` made them the costliest kernels of a
/// transformer layer: GELU (the erf form) on a rational erf ([`gelu_f32`], within 2e-7 of the reference), sigmoid
/// and swish on a polynomial `exp` (within 1e-15 before rounding: the reference's f32 result but for rare ties).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// `e^x`.
    Exp,
    /// `ln x`.
    Log,
    /// `1 / x`.
    Reciprocal,
    /// `⌊x⌋`.
    Floor,
    /// `⌈x⌉`.
    Ceil,
    /// `ln(1 + e^x)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x` if positive, else `alpha·x`.
    LeakyRelu(f32),
    /// `x` if positive, else `alpha·(e^x - 1)`.
    Elu(f32),
    /// `clamp(alpha·x + beta, 0, 1)`.
    HardSigmoid(f32, f32),
    /// `x·clamp(x/6 + 1/2, 0, 1)`.
    HardSwish,
    /// `x·sigmoid(alpha·x)`.
    Swish(f32),
    /// The error function.
    Erf,
    /// `x/2·(1 + erf(x/√2))`.
    Gelu,
    /// `x/2·(1 + tanh(√(2/π)·(x + 0.044715x³)))`.
    GeluTanh,
    /// `sin x`.
    Sin,
    /// `cos x`.
    Cos,
}

impl Activation {
    /// The activation of an op, if it is one.
    pub fn of(op: &Op) -> Option<Activation> {
        Some(match op {
            Op::Sigmoid(_) => Activation::Sigmoid,
            Op::Tanh(_) => Activation::Tanh,
            Op::Exp(_) => Activation::Exp,
            Op::Log(_) => Activation::Log,
            Op::Reciprocal(_) => Activation::Reciprocal,
            Op::Floor(_) => Activation::Floor,
            Op::Ceil(_) => Activation::Ceil,
            Op::Softplus(_) => Activation::Softplus,
            Op::Softsign(_) => Activation::Softsign,
            Op::LeakyRelu(l) => Activation::LeakyRelu(l.alpha),
            Op::Elu(e) => Activation::Elu(e.alpha),
            Op::HardSigmoid(h) => Activation::HardSigmoid(h.alpha, h.beta),
            Op::HardSwish(_) => Activation::HardSwish,
            Op::Swish(s) => Activation::Swish(s.alpha),
            Op::Erf(_) => Activation::Erf,
            Op::Gelu(g) => match g.approximate.as_str() {
                "none" => Activation::Gelu,
                "tanh" => Activation::GeluTanh,
                _ => return None,
            },
            Op::Sin(_) => Activation::Sin,
            Op::Cos(_) => Activation::Cos,
            _ => return None,
        })
    }

    /// The activation of one element.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        let x = x as f64;
        let y = match self {
            Activation::Sigmoid => sigmoid_fast(x),
            Activation::Tanh => x.tanh(),
            Activation::Exp => x.exp(),
            Activation::Log => x.ln(),
            Activation::Reciprocal => 1.0 / x,
            Activation::Floor => x.floor(),
            Activation::Ceil => x.ceil(),
            Activation::Softplus => {
                if x.is_nan() {
                    x
                } else {
                    x.max(0.0) + (-x.abs()).exp().ln_1p()
                }
            }
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a as f64 * x
                }
            }
            Activation::Elu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a as f64 * x.exp_m1()
                }
            }
            Activation::HardSigmoid(a, b) => (a as f64 * x + b as f64).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Swish(a) => x * sigmoid_fast(a as f64 * x),
            Activation::Erf => erf(x),
            Activation::Gelu => return gelu_f32(x as f32),
            Activation::GeluTanh => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::Sin => x.sin(),
            Activation::Cos => x.cos(),
        };
        y as f32
    }
}

impl Activation {
    /// Applies the activation to every element of `buf` in place: the same bits as [`Activation::apply`] per
    /// element, with the hot activations in loops the compiler vectorizes.
    pub fn apply_in_place(self, buf: &mut [f32]) {
        match self {
            Activation::Gelu => widest(buf, gelu_loop),
            Activation::Sigmoid => widest(buf, sigmoid_loop),
            Activation::Swish(a) => widest(buf, |b: &mut [f32]| swish_loop(b, a as f64)),
            a => buf.iter_mut().for_each(|v| *v = a.apply(*v)),
        }
    }
}

/// erf for `|x| <= 4` (clamped beyond, where erf is ±1 within 2e-8): Eigen's and XLA's rational approximation
/// `x·P(x²)/Q(x²)`, evaluated in f64 (absolute error below 7e-8). Branch-free and without fused multiply-adds, so
/// every vector width gives the same bits as the scalar code.
#[inline(always)]
fn erf_rational(x: f64) -> f64 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_258_013_06e-10;
    p = p * x2 + 2.770_681_424_959_02e-8;
    p = p * x2 - 2.101_024_020_825_08e-6;
    p = p * x2 - 5.692_506_394_623_46e-5;
    p = p * x2 - 7.349_906_303_268_55e-4;
    p = p * x2 - 2.954_599_808_540_25e-3;
    p = p * x2 - 1.609_603_332_624_15e-2;
    let mut q = -1.456_607_184_649_96e-5;
    q = q * x2 - 2.133_740_552_789_05e-4;
    q = q * x2 - 1.682_826_974_382_03e-3;
    q = q * x2 - 7.373_329_167_204_68e-3;
    q = q * x2 - 1.426_473_905_141_89e-2;
    (x * p / q).clamp(-1.0, 1.0)
}

/// GELU (the erf form): `x/2·(1 + erf(x/√2))` in f64 with [`erf_rational`], rounded once; within 2e-7 (absolute)
/// of the reference's exact result.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + erf_rational(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

/// `e^x` for `x <= 0` in f64, branch-free so that loops over it vectorize: `x = n·ln 2 + r` (Cody–Waite, `n` by
/// the round-to-nearest magic constant), a degree-12 Taylor polynomial of `e^r` (`|r| <= ln 2 / 2`, relative error
/// below 2e-16), scaled by `2^n` built in the exponent bits. `x` is clamped at -200 (`e^-200` is 0 in f32).
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2^52: adding it rounds to an integer in the low bits.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let x = x.clamp(-200.0, 0.0);
    let t = x * std::f64::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for c in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    // `n` is in [-289, 0]: its two's complement sits in the low bits of `t`.
    let scale = f64::from_bits((t.to_bits().wrapping_add(1023) & 0x7ff) << 52);
    p * scale
}

/// The logistic function in f64 as the reference computes it (`1/(1+e^-x)` for `x >= 0`, `e^x/(1+e^x)` below),
/// with [`exp_nonpositive`] instead of libm's `exp`: within 1e-15 (relative) of the reference, so the same f32
/// after rounding but for results within that distance of a rounding boundary.
#[inline(always)]
fn sigmoid_fast(x: f64) -> f64 {
    let e = exp_nonpositive(-x.abs());
    let y = if x >= 0.0 { 1.0 } else { e } / (1.0 + e);
    if x.is_nan() { x } else { y }
}

/// GELU over a buffer.
#[inline(always)]
fn gelu_loop(buf: &mut [f32]) {
    buf.iter_mut().for_each(|v| *v = gelu_f32(*v));
}

/// The logistic function over a buffer.
#[inline(always)]
fn sigmoid_loop(buf: &mut [f32]) {
    buf.iter_mut()
        .for_each(|v| *v = sigmoid_fast(*v as f64) as f32);
}

/// `x·sigmoid(a·x)` over a buffer, in f64, rounded once.
#[inline(always)]
fn swish_loop(buf: &mut [f32], a: f64) {
    buf.iter_mut().for_each(|v| {
        let x = *v as f64;
        *v = (x * sigmoid_fast(a * x)) as f32
    });
}

/// Runs `f` on `buf` compiled for the widest vectors the machine has: the same operations in the same order (no
/// fused multiply-adds), so the same bits at every width.
#[inline(always)]
fn widest<F: Fn(&mut [f32])>(buf: &mut [f32], f: F) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<F: Fn(&mut [f32])>(buf: &mut [f32], f: F) {
            f(buf)
        }
        #[target_feature(enable = "avx2")]
        fn avx2<F: Fn(&mut [f32])>(buf: &mut [f32], f: F) {
            f(buf)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(buf, f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(buf, f) };
        }
    }
    f(buf)
}

impl NativeKernel for Activation {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        Ok(ins[0].to_vec())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        check_buffers(ins, out, ins[0].shape)?;
        let x = ins[0].data;
        par.for_each_chunk(out, 1, MIN_CHUNK / 4, |start, dst| {
            dst.copy_from_slice(&x[start..start + dst.len()]);
            self.apply_in_place(dst);
        });
        Ok(())
    }
}

/// `a^b` over contiguous runs (both operands vectors), as the reference: in f64, rounded once.
///
/// # Safety
/// `a`, `b` and `out` must hold `n` elements.
pub unsafe extern "C" fn pow_vv(a: *const f32, b: *const f32, out: *mut f32, n: usize) {
    for i in 0..n {
        // SAFETY: `i < n` (caller's contract).
        unsafe { *out.add(i) = (*a.add(i) as f64).powf(*b.add(i) as f64) as f32 };
    }
}

/// `a^b` with a scalar exponent.
///
/// # Safety
/// `a` and `out` must hold `n` elements, `b` one.
pub unsafe extern "C" fn pow_vs(a: *const f32, b: *const f32, out: *mut f32, n: usize) {
    // SAFETY: caller's contract.
    let e = unsafe { *b } as f64;
    for i in 0..n {
        // SAFETY: `i < n`.
        unsafe { *out.add(i) = (*a.add(i) as f64).powf(e) as f32 };
    }
}

/// `a^b` with a scalar base.
///
/// # Safety
/// `b` and `out` must hold `n` elements, `a` one.
pub unsafe extern "C" fn pow_sv(a: *const f32, b: *const f32, out: *mut f32, n: usize) {
    // SAFETY: caller's contract.
    let x = unsafe { *a } as f64;
    for i in 0..n {
        // SAFETY: `i < n`.
        unsafe { *out.add(i) = x.powf(*b.add(i) as f64) as f32 };
    }
}

/// The error function: the reference target's (the same bits).
pub use jiuzhou_target_reference::ops::elementwise::unary::erf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_gelu_is_close_to_the_reference_and_the_same_at_every_width() {
        let exact = |x: f64| 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2));
        let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 2.5e-4).collect();
        let mut fast = xs.clone();
        Activation::Gelu.apply_in_place(&mut fast);
        for (&x, &y) in xs.iter().zip(&fast) {
            assert_eq!(
                y.to_bits(),
                Activation::Gelu.apply(x).to_bits(),
                "gelu({x})"
            );
            let want = exact(x as f64);
            let tol = 2e-7 + 6e-8 * want.abs();
            assert!(
                (y as f64 - want).abs() <= tol,
                "gelu({x}) = {y}, want {want}"
            );
        }
        let mut ends = [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -1e4,
            1e4,
            0.0,
            -0.0,
        ];
        Activation::Gelu.apply_in_place(&mut ends);
        assert_eq!(ends[0], f32::INFINITY);
        assert!(
            ends[1].is_nan() && ends[2].is_nan(),
            "as the reference: -inf·0 is NaN"
        );
        assert_eq!(&ends[3..], &[0.0, 1e4, 0.0, 0.0]);
    }

    #[test]
    fn fast_sigmoid_rounds_like_the_reference() {
        let exact = |x: f64| {
            if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            }
        };
        let mut xs: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 * 1.7e-3).collect();
        xs.extend([
            1e-30,
            -1e-30,
            300.0,
            -300.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let mut fast = xs.clone();
        Activation::Sigmoid.apply_in_place(&mut fast);
        let mut differ = 0;
        for (&x, &y) in xs.iter().zip(&fast) {
            assert_eq!(
                y.to_bits(),
                Activation::Sigmoid.apply(x).to_bits(),
                "sigmoid({x})"
            );
            let want = exact(x as f64);
            let tol = 6e-8 * want + 1e-45;
            assert!(
                (y as f64 - want).abs() <= tol,
                "sigmoid({x}) = {y}, want {want}"
            );
            differ += usize::from(y != want as f32);
        }
        assert!(
            differ <= 3,
            "{differ} results differ from the reference's rounding"
        );
        let mut nan = [f32::NAN];
        Activation::Swish(1.0).apply_in_place(&mut nan);
        assert!(nan[0].is_nan());
        let mut sw = [-3.0f32, 0.5, 4.0];
        Activation::Swish(1.5).apply_in_place(&mut sw);
        for (&y, x) in sw.iter().zip([-3.0f64, 0.5, 4.0]) {
            assert_eq!(y, (x * exact(1.5 * x)) as f32);
        }
    }

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.5, 0.999_593_047_982_555),
            (-3.0, -0.999_977_909_503_001_4),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x})");
        }
    }
}
