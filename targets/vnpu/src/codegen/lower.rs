//! Which IR node becomes which kernel: [`lower`] returns a [`Kernel`] (addresses still symbolic: values and
//! constant blobs) or the reason the node cannot run on the NPU of this profile.
//!
//! On the NPU: MatMul (A of rank 2–3, B a constant or a 2-D/equal-batch activation), Gemm (`transA = 0`; constant
//! B, either `transB`; `alpha`, `beta` and a constant bias row folded into the packed weights and the f32 bias),
//! 2-D Conv with `group` up to [`MAX_DENSE_GROUPS`] (any stride, padding, dilation; constant weights and bias; a
//! grouped one as the dense Conv with block-diagonal weights), jiuzhou's FusedConv and FusedMatMul (the same
//! kernels with a residual and activation epilogue), GlobalAveragePool (and an
//! AveragePool whose window is the whole unpadded input) on the cube; 2-D MaxPool, Softmax along the last axis of
//! a row-major tensor, shape-only ops (Flatten, Reshape, Squeeze, Unsqueeze, Identity) whose input and output are
//! stored alike, and the unary and binary elementwise ops the profile's vector unit lists (Relu, Neg, Abs, Exp,
//! Log, Sqrt, Reciprocal, Tanh, Sigmoid; Add, Sub, Mul, Div, Max, Min, two-input Sum) on equal shapes, with a
//! constant scalar, or with a constant per-row-vector (per-channel) second operand. Everything is f32 with static
//! shapes.
//!
//! On a channels-last profile ([`GraphLayout::Nhwc`](crate::profile::GraphLayout::Nhwc)) the convolutions and
//! pools are the graph's channels-last ones instead: FusedConvNhwc (the Conv kernel: its NHWC input is stored
//! exactly as the kernel gathers it, its HWIO weights are re-packed), MaxPoolNhwc and a global AveragePoolNhwc;
//! a ReduceMean over the spatial axes of a channels-last rank-4 tensor (the channels-last GlobalAveragePool) is the
//! cube's mean; Conv, FusedConv, MaxPool, AveragePool and GlobalAveragePool go to the host with that reason, and a
//! Transpose NCHW ⇄ NHWC of a rank-4 tensor is a DMA kernel ([`super::transpose`]), as is a Concat along the last
//! axis whose inputs start at aligned columns ([`super::concat`]).

use std::sync::Arc;

use jiuzhou_ir::infer::nn::window::Window;
use jiuzhou_ir::{DType as IrType, Graph, Node, Op, Tensor, ValueId};

use super::gemm::{self, Act};
use super::{Ctx, Window2d};
use crate::isa::{BinaryOp, ReduceOp, UnaryOp, VectorOp};

/// The second operand of an elementwise kernel.
#[derive(Clone, Debug)]
pub enum EltArg {
    /// Unary op.
    None,
    /// A tensor of the result's shape.
    Value(ValueId),
    /// A constant scalar.
    Imm(f64),
    /// A constant stored row (logical inner-axis values) repeated along every row.
    RowVec(Vec<f32>),
    /// A constant full tensor (logical data, packed at compile time).
    Const(Arc<Tensor>),
}

/// B of a GEMM.
#[derive(Clone, Debug)]
pub enum GemmB {
    /// Constant weights, logical `k×n` row-major (alpha applied).
    Weights(Vec<f32>),
    /// An activation: a 2-D `k×n` tensor shared by every batch, or one `k×n` matrix per batch.
    Value(ValueId),
}

/// A lowered node.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// `out[b] = A[b] · B(b) (+ bias)`, `batches` times.
    Gemm {
        /// A.
        a: ValueId,
        /// B.
        b: GemmB,
        /// Whether B has a matrix per batch.
        b_batched: bool,
        /// The bias (`n` values).
        bias: Option<Vec<f32>>,
        /// Rows per batch.
        m: u64,
        /// Columns.
        n: u64,
        /// Depth.
        k: u64,
        /// Batches.
        batches: u64,
        /// The result.
        out: ValueId,
        /// A residual of the result's shape, added before the activation.
        residual: Option<ValueId>,
        /// The activation (Relu fused in by the placement, or a fused op's).
        act: Act,
    },
    /// A 2-D convolution.
    Conv {
        /// The input (NCHW, stored NHWC).
        x: ValueId,
        /// The weights `[cout, cin, kh, kw]`.
        w: Arc<Tensor>,
        /// The bias.
        bias: Option<Vec<f32>>,
        /// `[n, cin, h, w]`.
        in_shape: [u64; 4],
        /// `[cout, oh, ow]`.
        out_shape: [u64; 3],
        /// The window.
        win: Window2d,
        /// The model's groups (`w` is already dense, block-diagonal when this is above 1).
        groups: u64,
        /// The result.
        out: ValueId,
        /// A residual of the result's shape, added before the activation.
        residual: Option<ValueId>,
        /// The activation (Relu fused in by the placement, or a fused op's).
        act: Act,
    },
    /// Softmax along the last axis of a row-major tensor.
    Softmax {
        /// The input.
        x: ValueId,
        /// Rows.
        rows: u64,
        /// Elements per row.
        cols: u64,
        /// The result.
        out: ValueId,
    },
    /// Max pooling of a rank-4 (channels-last) tensor.
    MaxPool {
        /// The input.
        x: ValueId,
        /// `[n, c, h, w]`.
        in_shape: [u64; 4],
        /// Output height and width.
        out_hw: [u64; 2],
        /// The window.
        win: Window2d,
        /// The result.
        out: ValueId,
    },
    /// The mean over all pixels of a rank-4 tensor (GlobalAveragePool), on the cube: `(1/hw)·1ᵀ · X`.
    Mean {
        /// The input.
        x: ValueId,
        /// `[n, c, h·w]`.
        dims: [u64; 3],
        /// The result (`[n, c, 1, 1]`).
        out: ValueId,
    },
    /// A layout change between NCHW and NHWC (channels-last profiles: both stored row-major).
    Transpose {
        /// The input.
        x: ValueId,
        /// `[n, c, h, w]` of the channels-first side.
        nchw: [u64; 4],
        /// NCHW → NHWC (`true`) or back.
        to_last: bool,
        /// The result.
        out: ValueId,
    },
    /// Concatenation along the last axis of row-major tensors (channels-last profiles).
    Concat {
        /// The inputs, in order.
        xs: Vec<ValueId>,
        /// Each input's last dim.
        widths: Vec<u64>,
        /// Rows (the product of the leading dims).
        rows: u64,
        /// The result.
        out: ValueId,
    },
    /// An elementwise op.
    Elt {
        /// The vector op.
        op: VectorOp,
        /// The first operand (the result's shape).
        a: ValueId,
        /// The second operand.
        b: EltArg,
        /// The result.
        out: ValueId,
    },
}

impl Kernel {
    /// The value the kernel writes.
    pub fn out(&self) -> ValueId {
        match self {
            Kernel::Gemm { out, .. }
            | Kernel::Conv { out, .. }
            | Kernel::Softmax { out, .. }
            | Kernel::MaxPool { out, .. }
            | Kernel::Mean { out, .. }
            | Kernel::Transpose { out, .. }
            | Kernel::Concat { out, .. }
            | Kernel::Elt { out, .. } => *out,
        }
    }

    /// The non-constant values the kernel reads.
    pub fn reads(&self) -> Vec<ValueId> {
        match self {
            Kernel::Gemm { a, b, residual, .. } => {
                let mut v = vec![*a];
                if let GemmB::Value(b) = b {
                    v.push(*b);
                }
                v.extend(*residual);
                v
            }
            Kernel::Conv { x, residual, .. } => {
                let mut v = vec![*x];
                v.extend(*residual);
                v
            }
            Kernel::Softmax { x, .. }
            | Kernel::MaxPool { x, .. }
            | Kernel::Mean { x, .. }
            | Kernel::Transpose { x, .. } => {
                vec![*x]
            }
            Kernel::Concat { xs, .. } => xs.clone(),
            Kernel::Elt { a, b, .. } => {
                let mut v = vec![*a];
                if let EltArg::Value(b) = b {
                    v.push(*b);
                }
                v
            }
        }
    }

    /// Multiply-adds ×2 (matrix kernels) or elements (vector kernels).
    pub fn flops(&self) -> f64 {
        match self {
            Kernel::Gemm {
                m, n, k, batches, ..
            } => 2.0 * (*m * *n * *k * *batches) as f64,
            Kernel::Conv {
                in_shape,
                out_shape,
                win,
                groups,
                ..
            } => {
                // The model's FLOPs: the zeros of a grouped convolution's dense weights do not count.
                2.0 * (in_shape[0] * out_shape[0] * out_shape[1] * out_shape[2]) as f64
                    * (in_shape[1] / groups * win.kernel[0] * win.kernel[1]) as f64
            }
            Kernel::Mean { dims, .. } => 2.0 * (dims[0] * dims[1] * dims[2]) as f64,
            Kernel::Softmax { .. }
            | Kernel::MaxPool { .. }
            | Kernel::Transpose { .. }
            | Kernel::Concat { .. }
            | Kernel::Elt { .. } => 0.0,
        }
    }

    /// Whether this kernel may take a following Relu into its epilogue.
    pub fn can_fuse_relu(&self) -> bool {
        matches!(
            self,
            Kernel::Gemm { act: Act::None, .. } | Kernel::Conv { act: Act::None, .. }
        )
    }

    /// Fuses a Relu whose result is `out`.
    pub fn fuse_relu(&mut self, new_out: ValueId) {
        match self {
            Kernel::Gemm { out, act, .. } | Kernel::Conv { out, act, .. } => {
                *out = new_out;
                *act = Act::Relu;
            }
            _ => {}
        }
    }
}

/// The static f32 shape of a value, or why there is none.
pub fn f32_shape(graph: &Graph, id: ValueId) -> Result<Vec<usize>, String> {
    let v = graph.value(id);
    let t =
        v.ty.as_tensor()
            .ok_or_else(|| format!("`{}` is not a tensor", v.name))?;
    if t.dtype != IrType::F32 {
        return Err(format!(
            "`{}` is {}, the NPU kernels take f32",
            v.name, t.dtype
        ));
    }
    let dims = t
        .known_dims()
        .ok_or_else(|| format!("`{}` has a dynamic shape", v.name))?;
    if dims.contains(&0) {
        return Err(format!("`{}` is empty", v.name));
    }
    Ok(dims)
}

fn constant(graph: &Graph, id: ValueId) -> Option<Arc<Tensor>> {
    graph.value(id).constant.clone()
}

fn f32_data(t: &Tensor) -> Result<Vec<f32>, String> {
    t.as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .map_err(|e| e.to_string())
}

fn req(node: &Node, i: usize) -> Result<ValueId, String> {
    node.inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is absent"))
}

fn unary_op(op: &Op) -> Option<UnaryOp> {
    Some(match op {
        Op::Relu(_) => UnaryOp::Relu,
        Op::Neg(_) => UnaryOp::Neg,
        Op::Abs(_) => UnaryOp::Abs,
        Op::Exp(_) => UnaryOp::Exp,
        Op::Log(_) => UnaryOp::Ln,
        Op::Sqrt(_) => UnaryOp::Sqrt,
        Op::Reciprocal(_) => UnaryOp::Recip,
        Op::Tanh(_) => UnaryOp::Tanh,
        Op::Sigmoid(_) => UnaryOp::Sigmoid,
        _ => return None,
    })
}

fn binary_op(op: &Op) -> Option<BinaryOp> {
    Some(match op {
        Op::Add(_) | Op::Sum(_) => BinaryOp::Add,
        Op::Sub(_) => BinaryOp::Sub,
        Op::Mul(_) => BinaryOp::Mul,
        Op::Div(_) => BinaryOp::Div,
        Op::Max(_) => BinaryOp::Max,
        Op::Min(_) => BinaryOp::Min,
        _ => return None,
    })
}

/// Lowers node `node` of `graph` for the profile of `ctx`.
pub fn lower(ctx: &Ctx, graph: &Graph, node: &Node) -> Result<Kernel, String> {
    if node.outputs.len() != 1 {
        return Err(format!(
            "{} has {} outputs",
            node.op.name(),
            node.outputs.len()
        ));
    }
    let out = node.outputs[0];
    if let Some(u) = unary_op(&node.op) {
        return lower_unary(ctx, graph, node, u, out);
    }
    if let Some(b) = binary_op(&node.op) {
        return lower_binary(ctx, graph, node, b, out);
    }
    match &node.op {
        Op::Flatten(_) | Op::Reshape(_) | Op::Squeeze(_) | Op::Unsqueeze(_) | Op::Identity(_) => {
            lower_view(ctx, graph, node, out)
        }
        Op::Softmax(s) => lower_softmax(ctx, graph, node, s.axis, out),
        Op::MatMul(_) => lower_matmul(ctx, graph, node, out),
        Op::FusedMatMul(f) => lower_fused_matmul(ctx, graph, node, &f.activation, out),
        Op::Gemm(g) => lower_gemm(ctx, graph, node, g, out),
        Op::Transpose(t) if ctx.p.channels_last() => lower_transpose(ctx, graph, node, t, out),
        Op::Concat(c) if ctx.p.channels_last() => lower_concat(ctx, graph, node, c.axis, out),
        Op::ReduceMean(_) if ctx.p.channels_last() => {
            let (x, sx, so) = computed_input(graph, node, out)?;
            let axes = node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|a| constant(graph, a))
                .and_then(|t| t.to_i64_vec());
            let spatial = axes.is_some_and(|a| {
                let mut a: Vec<i64> = a.iter().map(|&v| if v < 0 { v + 4 } else { v }).collect();
                a.sort_unstable();
                a == [1, 2]
            });
            if sx.len() != 4 || !spatial {
                return Err(
                    "ReduceMean other than over the spatial axes of a channels-last rank-4 tensor"
                        .into(),
                );
            }
            let so = vec![sx[0], 1, 1, *so.last().unwrap_or(&0)];
            lower_mean(ctx, (x, nchw_of(&sx)?, nchw_of(&so)?), None, out)
        }
        Op::Conv(c) if ctx.p.channels_last() && !(1..=MAX_DENSE_GROUPS).contains(&c.group) => {
            Err(grouped_reason(c.group))
        }
        Op::FusedConv(c) if ctx.p.channels_last() && !(1..=MAX_DENSE_GROUPS).contains(&c.group) => {
            Err(grouped_reason(c.group))
        }
        Op::Conv(_)
        | Op::FusedConv(_)
        | Op::MaxPool(_)
        | Op::GlobalAveragePool(_)
        | Op::AveragePool(_)
            if ctx.p.channels_last() =>
        {
            Err(format!(
                "channels-first {} (profile `{}` convolves and pools channels-last graphs: the optimizer's \
                 {} form runs on the NPU)",
                node.op.name(),
                ctx.p.name,
                match node.op {
                    Op::MaxPool(_) => "MaxPoolNhwc",
                    Op::AveragePool(_) => "AveragePoolNhwc",
                    Op::GlobalAveragePool(_) => "ReduceMean",
                    _ => "FusedConvNhwc",
                }
            ))
        }
        Op::FusedConvNhwc(_) | Op::MaxPoolNhwc(_) | Op::AveragePoolNhwc(_)
            if !ctx.p.channels_last() =>
        {
            Err(channels_first_reason(ctx, &node.op))
        }
        Op::MaxPool(p) => lower_maxpool(ctx, p, computed_input(graph, node, out)?, out),
        Op::MaxPoolNhwc(p) => {
            let (x, sx, so) = computed_input(graph, node, out)?;
            let io = (x, nchw_of(&sx)?, nchw_of(&so)?);
            lower_maxpool(ctx, &p.channels_first(), io, out)
        }
        Op::GlobalAveragePool(_) => lower_mean(ctx, computed_input(graph, node, out)?, None, out),
        Op::AveragePool(p) => lower_mean(ctx, computed_input(graph, node, out)?, Some(p), out),
        Op::AveragePoolNhwc(p) => {
            let (x, sx, so) = computed_input(graph, node, out)?;
            let io = (x, nchw_of(&sx)?, nchw_of(&so)?);
            lower_mean(ctx, io, Some(&p.channels_first()), out)
        }
        Op::Conv(c) => lower_conv(ctx, graph, node, c, false, out),
        Op::FusedConv(c) => {
            lower_fused_conv(ctx, graph, node, &c.conv(), &c.activation, false, out)
        }
        Op::FusedConvNhwc(c) => {
            lower_fused_conv(ctx, graph, node, &c.conv(), &c.activation, true, out)
        }
        op => Err(format!("no vnpu kernel for {}", op.name())),
    }
}

/// Whether the NPU of `ctx`'s profile can run jiuzhou's own op `op` (judged from the op alone: what the
/// optimizer's cost model asks before choosing a fused form). FusedConv (on channels-first profiles) or
/// FusedConvNhwc (on channels-last ones), with `group` up to [`MAX_DENSE_GROUPS`], and FusedMatMul run as the
/// GEMM kernel with their epilogue when the vector unit reaches the accumulator and has the ops of the activation
/// (and the residual's add); MaxPoolNhwc and AveragePoolNhwc run on channels-last profiles (an AveragePoolNhwc
/// only with a global window, which the op alone does not tell); other own ops have no kernel.
pub fn own_op_supported(ctx: &Ctx, op: &Op) -> Result<(), String> {
    let nhwc = matches!(
        op,
        Op::FusedConvNhwc(_) | Op::MaxPoolNhwc(_) | Op::AveragePoolNhwc(_)
    );
    if nhwc && !ctx.p.channels_last() {
        return Err(channels_first_reason(ctx, op));
    }
    if matches!(op, Op::FusedConv(_)) && ctx.p.channels_last() {
        return Err(format!(
            "channels-first FusedConv (profile `{}` convolves channels-last graphs)",
            ctx.p.name
        ));
    }
    let activation = match op {
        Op::FusedConv(c) if !(1..=MAX_DENSE_GROUPS).contains(&c.group) => {
            return Err(grouped_reason(c.group));
        }
        Op::FusedConvNhwc(c) if !(1..=MAX_DENSE_GROUPS).contains(&c.group) => {
            return Err(grouped_reason(c.group));
        }
        Op::FusedConv(c) => &c.activation,
        Op::FusedConvNhwc(c) => &c.activation,
        Op::MaxPoolNhwc(_) => {
            return need_vector(ctx, &[VectorOp::Fill, VectorOp::Binary(BinaryOp::Max)]);
        }
        // Only a global window runs on the NPU (the cube's mean); judged from the op alone, it may.
        Op::AveragePoolNhwc(_) => return need_cube(ctx),
        Op::FusedMatMul(m) => &m.activation,
        op => return Err(format!("no vnpu kernel for {}", op.name())),
    };
    need_cube(ctx)?;
    let act = Act::from_ir(activation)?;
    if !ctx.p.vector.buffers.contains(&ctx.p.matrix.c_buffer) {
        return Err("the vector unit cannot reach the accumulator (no fused epilogue)".into());
    }
    let mut ops = act.vector_ops();
    ops.push(VectorOp::Binary(BinaryOp::Add));
    need_vector(ctx, &ops)
}

/// Why a channels-last op has no kernel on a channels-first profile.
fn channels_first_reason(ctx: &Ctx, op: &Op) -> String {
    format!(
        "no vnpu kernel for {} on profile `{}` (its graphs are channels-first: rank-4 tensors are stored \
         channels-last implicitly)",
        op.name(),
        ctx.p.name
    )
}

/// A layout change NCHW ⇄ NHWC of a rank-4 tensor (channels-last profiles).
fn lower_transpose(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    t: &jiuzhou_ir::ops::Transpose,
    out: ValueId,
) -> Result<Kernel, String> {
    if ctx.stage.is_none() {
        return Err("no staging buffer for the layout change".into());
    }
    let (x, sx, _) = computed_input(graph, node, out)?;
    let perm = t.perm.as_deref().unwrap_or(&[]);
    let to_last = match perm {
        [0, 2, 3, 1] => true,
        [0, 3, 1, 2] => false,
        _ => {
            return Err(format!(
                "Transpose {perm:?} (the NPU changes rank-4 layouts NCHW ⇄ NHWC only)"
            ));
        }
    };
    let nchw = if to_last { sx } else { nchw_of(&sx)? };
    if nchw.len() != 4 {
        return Err(format!("Transpose of rank {}", nchw.len()));
    }
    let u = |v: usize| v as u64;
    Ok(Kernel::Transpose {
        x,
        nchw: [u(nchw[0]), u(nchw[1]), u(nchw[2]), u(nchw[3])],
        to_last,
        out,
    })
}

/// A Concat along the last axis of computed row-major tensors (channels-last profiles), each input starting at an
/// aligned column of the result.
fn lower_concat(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    axis: i64,
    out: ValueId,
) -> Result<Kernel, String> {
    if ctx.stage.is_none() {
        return Err("no staging buffer for the concatenation".into());
    }
    let so = f32_shape(graph, out)?;
    let r = so.len() as i64;
    if r == 0 || (axis != -1 && axis != r - 1) {
        return Err("Concat along an inner axis (the NPU concatenates along the last one)".into());
    }
    let mut xs = Vec::new();
    let mut widths = Vec::new();
    for i in 0..node.inputs.len() {
        let x = req(node, i)?;
        if constant(graph, x).is_some() {
            return Err("Concat of a constant".into());
        }
        let sx = f32_shape(graph, x)?;
        if sx.len() != so.len() || sx[..sx.len() - 1] != so[..so.len() - 1] {
            return Err(format!("Concat of {sx:?} into {so:?}"));
        }
        xs.push(x);
        widths.push(*sx.last().unwrap_or(&0) as u64);
    }
    let gran = ctx.pitch_gran();
    if let Some(off) = super::concat::offsets(&widths)
        .into_iter()
        .find(|o| o % gran != 0)
    {
        return Err(format!(
            "Concat input at column {off}, not a multiple of the alignment unit ({gran} elements)"
        ));
    }
    let rows = so[..so.len() - 1].iter().product::<usize>() as u64;
    Ok(Kernel::Concat {
        xs,
        widths,
        rows,
        out,
    })
}

fn need_cube(ctx: &Ctx) -> Result<(), String> {
    match ctx.input {
        Some(_) => Ok(()),
        None => Err("the profile's matrix unit takes no f16/bf16 inputs".into()),
    }
}

fn need_vector(ctx: &Ctx, ops: &[VectorOp]) -> Result<(), String> {
    if ctx.stage.is_none() {
        return Err("no staging buffer for the vector unit".into());
    }
    match ops.iter().find(|op| !ctx.vector_has(**op)) {
        Some(op) => Err(format!("the vector unit lacks {} on f32", op.name())),
        None => Ok(()),
    }
}

/// A computed f32 input 0 of static shape, and the output's shape.
fn computed_input(
    graph: &Graph,
    node: &Node,
    out: ValueId,
) -> Result<(ValueId, Vec<usize>, Vec<usize>), String> {
    let x = req(node, 0)?;
    if constant(graph, x).is_some() {
        return Err("constant input (folded by the optimizer)".into());
    }
    Ok((x, f32_shape(graph, x)?, f32_shape(graph, out)?))
}

/// Shape-only ops: a copy when the input and output are stored alike (the same bytes in the same places).
fn lower_view(ctx: &Ctx, graph: &Graph, node: &Node, out: ValueId) -> Result<Kernel, String> {
    need_vector(ctx, &[VectorOp::Unary(UnaryOp::Copy)])?;
    let (x, sx, so) = computed_input(graph, node, out)?;
    let (lx, lo) = (ctx.layout(&sx), ctx.layout(&so));
    if !lx.same_storage(&lo) {
        return Err(format!("{sx:?} → {so:?} changes the stored layout"));
    }
    Ok(Kernel::Elt {
        op: VectorOp::Unary(UnaryOp::Copy),
        a: x,
        b: EltArg::None,
        out,
    })
}

fn lower_softmax(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    axis: i64,
    out: ValueId,
) -> Result<Kernel, String> {
    need_vector(
        ctx,
        &[
            VectorOp::Reduce(ReduceOp::Max),
            VectorOp::Binary(BinaryOp::Sub),
            VectorOp::Unary(UnaryOp::Exp),
            VectorOp::Reduce(ReduceOp::Sum),
            VectorOp::Binary(BinaryOp::Div),
        ],
    )?;
    let (x, sx, _) = computed_input(graph, node, out)?;
    let rank = sx.len() as i64;
    if rank == 4 || rank == 0 {
        return Err(format!(
            "Softmax of rank {rank} (the NPU takes row-major ranks 1-3)"
        ));
    }
    if axis != -1 && axis != rank - 1 {
        return Err("Softmax along an inner axis".into());
    }
    let cols = *sx.last().unwrap_or(&1) as u64;
    Ok(Kernel::Softmax {
        x,
        rows: sx.iter().product::<usize>() as u64 / cols,
        cols,
        out,
    })
}

/// Max pooling of `x` (`sx` to `so`, channels-first shapes; the tensors are stored channels-last either way).
fn lower_maxpool(
    ctx: &Ctx,
    p: &jiuzhou_ir::ops::MaxPool,
    (x, sx, so): (ValueId, Vec<usize>, Vec<usize>),
    out: ValueId,
) -> Result<Kernel, String> {
    need_vector(ctx, &[VectorOp::Fill, VectorOp::Binary(BinaryOp::Max)])?;
    if sx.len() != 4 {
        return Err(format!(
            "{}-D MaxPool (the NPU takes 2-D)",
            sx.len().saturating_sub(2)
        ));
    }
    let win = Window::new(
        2,
        &p.kernel_shape,
        p.strides.as_deref(),
        p.dilations.as_deref(),
        p.pads.as_deref(),
        &p.auto_pad,
        p.ceil_mode,
    )
    .map_err(|e| e.to_string())?;
    let win = window2d(&win, &sx, &so, "MaxPool")?;
    let u = |v: usize| v as u64;
    Ok(Kernel::MaxPool {
        x,
        in_shape: [u(sx[0]), u(sx[1]), u(sx[2]), u(sx[3])],
        out_hw: [u(so[2]), u(so[3])],
        win,
        out,
    })
}

/// Resolves a 2-D window against the input shape `sx` (`[n, c, h, w]`) and checks that it gives the output shape
/// `so` the graph says (`what` names the op in the error).
fn window2d(win: &Window, sx: &[usize], so: &[usize], what: &str) -> Result<Window2d, String> {
    let mut pads = [0u64; 2];
    for (i, pd) in pads.iter_mut().enumerate() {
        let g = win.axis(i, sx[2 + i]).map_err(|e| e.to_string())?;
        if g.output != so[2 + i] {
            return Err(format!("{what} output shape disagrees with its geometry"));
        }
        *pd = g.pad_begin as u64;
    }
    let pair = |v: &[usize]| [v[0] as u64, v[1] as u64];
    Ok(Window2d {
        kernel: pair(&win.kernel),
        strides: pair(&win.strides),
        dilations: pair(&win.dilations),
        pads,
    })
}

/// GlobalAveragePool, or an AveragePool whose one window covers the whole unpadded input (`sx` to `so`,
/// channels-first shapes; the tensors are stored channels-last either way).
fn lower_mean(
    ctx: &Ctx,
    (x, sx, so): (ValueId, Vec<usize>, Vec<usize>),
    avg: Option<&jiuzhou_ir::ops::AveragePool>,
    out: ValueId,
) -> Result<Kernel, String> {
    need_cube(ctx)?;
    if sx.len() != 4 || so.len() != 4 || so[2] != 1 || so[3] != 1 {
        return Err(format!(
            "pooling {sx:?} to {so:?} (the NPU takes global 2-D averages)"
        ));
    }
    if let Some(p) = avg {
        let whole = p.kernel_shape == [sx[2] as i64, sx[3] as i64];
        let unpadded = p.pads.as_deref().is_none_or(|v| v.iter().all(|&x| x == 0))
            && matches!(p.auto_pad.as_str(), "NOTSET" | "VALID" | "");
        if !whole || !unpadded {
            return Err("AveragePool with a window smaller than the input or padding".into());
        }
    }
    Ok(Kernel::Mean {
        x,
        dims: [sx[0] as u64, sx[1] as u64, (sx[2] * sx[3]) as u64],
        out,
    })
}

fn lower_unary(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    u: UnaryOp,
    out: ValueId,
) -> Result<Kernel, String> {
    let op = VectorOp::Unary(u);
    if !ctx.vector_has(op) {
        return Err(format!("the vector unit lacks {} on f32", op.name()));
    }
    if ctx.stage.is_none() {
        return Err("no staging buffer for the vector unit".into());
    }
    let a = req(node, 0)?;
    let (sa, so) = (f32_shape(graph, a)?, f32_shape(graph, out)?);
    if sa != so {
        return Err("input and output shapes differ".into());
    }
    if constant(graph, a).is_some() {
        return Err("constant input (folded by the optimizer)".into());
    }
    Ok(Kernel::Elt {
        op,
        a,
        b: EltArg::None,
        out,
    })
}

fn lower_binary(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    bo: BinaryOp,
    out: ValueId,
) -> Result<Kernel, String> {
    let op = VectorOp::Binary(bo);
    if !ctx.vector_has(op) {
        return Err(format!("the vector unit lacks {} on f32", op.name()));
    }
    if ctx.stage.is_none() {
        return Err("no staging buffer for the vector unit".into());
    }
    if node.inputs.len() != 2 {
        return Err(format!(
            "{} with {} inputs",
            node.op.name(),
            node.inputs.len()
        ));
    }
    let so = f32_shape(graph, out)?;
    let (mut x, mut y) = (req(node, 0)?, req(node, 1)?);
    let commutative = matches!(
        bo,
        BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
    );
    if (f32_shape(graph, x)? != so || constant(graph, x).is_some()) && commutative {
        std::mem::swap(&mut x, &mut y);
    }
    if f32_shape(graph, x)? != so {
        return Err("the first operand is broadcast".into());
    }
    if constant(graph, x).is_some() {
        return Err("constant first operand".into());
    }
    let sy = f32_shape(graph, y)?;
    let b = match constant(graph, y) {
        None if sy == so => EltArg::Value(y),
        None => return Err("broadcast of a computed operand".into()),
        Some(t) => {
            let data = f32_data(&t)?;
            let layout = ctx.layout(&so);
            if data.len() == 1 {
                EltArg::Imm(f64::from(data[0]))
            } else if sy == so {
                EltArg::Const(t)
            } else if let Some(v) = row_vector(&so, &sy, &data, layout.nhwc) {
                EltArg::RowVec(v)
            } else {
                return Err(format!("broadcast of {sy:?} to {so:?}"));
            }
        }
    };
    Ok(Kernel::Elt { op, a: x, b, out })
}

/// A constant of shape `sy`, broadcast to `so`, that varies only along the stored inner axis (channels for a
/// channels-last rank-4 result, the last axis otherwise): its inner-axis values.
fn row_vector(so: &[usize], sy: &[usize], data: &[f32], nhwc: bool) -> Option<Vec<f32>> {
    if sy.len() > so.len() {
        return None;
    }
    let pad = so.len() - sy.len();
    let inner = if nhwc { 1 } else { so.len() - 1 };
    for (i, &d) in sy.iter().enumerate() {
        let axis = i + pad;
        if d != 1 && !(axis == inner && d == so[axis]) {
            return None;
        }
    }
    let n = so[inner];
    if data.len() == n {
        Some(data.to_vec())
    } else {
        None
    }
}

fn lower_matmul(ctx: &Ctx, graph: &Graph, node: &Node, out: ValueId) -> Result<Kernel, String> {
    need_cube(ctx)?;
    let (a, b) = (req(node, 0)?, req(node, 1)?);
    let (sa, sb, so) = (
        f32_shape(graph, a)?,
        f32_shape(graph, b)?,
        f32_shape(graph, out)?,
    );
    if !(2..=3).contains(&sa.len()) || so.len() != sa.len() {
        return Err(format!(
            "MatMul of rank {} (the NPU takes ranks 2 and 3)",
            sa.len()
        ));
    }
    if constant(graph, a).is_some() {
        return Err("constant A".into());
    }
    let k = *sa.last().unwrap_or(&1) as u64;
    let n = *so.last().unwrap_or(&1) as u64;
    let (m, batches, bb) = match sb.len() {
        2 => (
            (sa[..sa.len() - 1].iter().product::<usize>()) as u64,
            1,
            false,
        ),
        3 if sa.len() == 3 && sa[0] == sb[0] => (sa[1] as u64, sa[0] as u64, true),
        _ => return Err(format!("MatMul of {sa:?} by {sb:?} (broadcast batches)")),
    };
    let gb = match constant(graph, b) {
        Some(t) if !bb => GemmB::Weights(f32_data(&t)?),
        Some(_) => return Err("batched constant B".into()),
        None => GemmB::Value(b),
    };
    Ok(Kernel::Gemm {
        a,
        b: gb,
        b_batched: bb,
        bias: None,
        m,
        n,
        k,
        batches,
        out,
        residual: None,
        act: Act::None,
    })
}

/// Input `i` of a fused op, the residual: absent, or a computed f32 value of the result's shape.
fn residual(graph: &Graph, node: &Node, i: usize, out: ValueId) -> Result<Option<ValueId>, String> {
    let Some(z) = node.inputs.get(i).copied().flatten() else {
        return Ok(None);
    };
    if constant(graph, z).is_some() {
        return Err("constant residual".into());
    }
    if f32_shape(graph, z)? != f32_shape(graph, out)? {
        return Err("broadcast residual".into());
    }
    Ok(Some(z))
}

/// Checks that the vector unit can run a fused kernel's epilogue with the blocks its GEMM will use.
fn epilogue_ok(ctx: &Ctx, k: &Kernel) -> Result<(), String> {
    let (blocks, residual, act) = match k {
        Kernel::Gemm {
            m,
            n,
            k,
            residual,
            act,
            ..
        } => (gemm::choose_blocks(ctx, *m, *n, *k, false)?, residual, act),
        Kernel::Conv {
            in_shape,
            out_shape,
            win,
            residual,
            act,
            ..
        } => {
            let kl = win.kernel[0] * win.kernel[1] * gemm::conv_cq(ctx, in_shape[1])?;
            let m = in_shape[0] * out_shape[1] * out_shape[2];
            (
                gemm::choose_blocks(ctx, m, out_shape[0], kl, true)?,
                residual,
                act,
            )
        }
        _ => return Ok(()),
    };
    if residual.is_none() && *act == Act::None {
        return Ok(());
    }
    gemm::epilogue_check(ctx, residual.is_some(), *act, blocks)
}

/// `act(MatMul(A, B) + bias + Z)`: the MatMul kernel with a constant bias row, a residual and an activation.
fn lower_fused_matmul(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    activation: &jiuzhou_ir::ops::Activation,
    out: ValueId,
) -> Result<Kernel, String> {
    let act = Act::from_ir(activation)?;
    let mut k = lower_matmul(ctx, graph, node, out)?;
    let z = residual(graph, node, 3, out)?;
    let row = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(c) => {
            let t = constant(graph, c).ok_or("computed FusedMatMul bias")?;
            let d = f32_data(&t)?;
            let Kernel::Gemm { n, .. } = &k else {
                return Err("MatMul did not lower to a GEMM".into());
            };
            let sc = t.shape();
            if d.len() == 1 {
                Some(vec![d[0]; *n as usize])
            } else if d.len() == *n as usize && sc.last() == Some(&(*n as usize)) {
                Some(d)
            } else {
                return Err(format!("FusedMatMul bias of shape {sc:?}"));
            }
        }
    };
    if let Kernel::Gemm {
        bias,
        residual,
        act: a,
        ..
    } = &mut k
    {
        *bias = row;
        *residual = z;
        *a = act;
    }
    epilogue_ok(ctx, &k)?;
    Ok(k)
}

fn lower_gemm(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    g: &jiuzhou_ir::ops::Gemm,
    out: ValueId,
) -> Result<Kernel, String> {
    need_cube(ctx)?;
    if g.transA != 0 {
        return Err("Gemm with transA".into());
    }
    let (a, b) = (req(node, 0)?, req(node, 1)?);
    let (sa, sb, so) = (
        f32_shape(graph, a)?,
        f32_shape(graph, b)?,
        f32_shape(graph, out)?,
    );
    if sa.len() != 2 || sb.len() != 2 {
        return Err("Gemm operands must be 2-D".into());
    }
    if constant(graph, a).is_some() {
        return Err("constant A".into());
    }
    let (m, k, n) = (so[0] as u64, sa[1] as u64, so[1] as u64);
    let gb = match constant(graph, b) {
        Some(t) => {
            let d = f32_data(&t)?;
            let (r, c) = (sb[0], sb[1]);
            let mut w = vec![0.0f32; r * c];
            if g.transB != 0 {
                for i in 0..r {
                    for j in 0..c {
                        w[j * r + i] = d[i * c + j] * g.alpha;
                    }
                }
            } else {
                for (o, x) in w.iter_mut().zip(&d) {
                    *o = x * g.alpha;
                }
            }
            GemmB::Weights(w)
        }
        None if g.transB == 0 && g.alpha == 1.0 => GemmB::Value(b),
        None => return Err("Gemm with a computed B and transB or alpha ≠ 1".into()),
    };
    let bias = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(c) => {
            let t = constant(graph, c).ok_or("computed Gemm bias C")?;
            let d = f32_data(&t)?;
            let sc = t.shape();
            let row = if d.len() == 1 {
                vec![d[0]; n as usize]
            } else if d.len() == n as usize && sc.last() == Some(&(n as usize)) {
                d
            } else {
                return Err(format!("Gemm bias of shape {sc:?}"));
            };
            Some(row.into_iter().map(|x| x * g.beta).collect())
        }
    };
    Ok(Kernel::Gemm {
        a,
        b: gb,
        b_batched: false,
        bias,
        m,
        n,
        k,
        batches: 1,
        out,
        residual: None,
        act: Act::None,
    })
}

/// The largest `group` a convolution may have on the cube: a grouped convolution runs as the dense one with
/// block-diagonal weights, so the cube does `group` times the work (depthwise convolutions stay on the host).
pub const MAX_DENSE_GROUPS: i64 = 8;

fn grouped_reason(group: i64) -> String {
    format!(
        "grouped Conv (group = {group}; the cube runs at most {MAX_DENSE_GROUPS} groups, as one dense Conv)"
    )
}

/// Weights `[cout, cin/group, kh, kw]` of a grouped convolution as the dense `[cout, cin, kh, kw]` ones: output
/// channel `o` (group `o / (cout/group)`) keeps its weights on its group's input channels, zeros elsewhere.
fn block_diagonal(w: &Tensor, group: usize) -> Result<Tensor, String> {
    let d = f32_data(w)?;
    let s = w.shape();
    let (cout, cig, kh, kw) = (s[0], s[1], s[2], s[3]);
    let cin = cig * group;
    let per = cout / group;
    let mut out = vec![0.0f32; cout * cin * kh * kw];
    for o in 0..cout {
        let g = o / per;
        for ci in 0..cig {
            let src = ((o * cig + ci) * kh * kw)..((o * cig + ci + 1) * kh * kw);
            let dst = (o * cin + g * cig + ci) * kh * kw;
            out[dst..dst + kh * kw].copy_from_slice(&d[src]);
        }
    }
    Tensor::from_vec(vec![cout, cin, kh, kw], out).map_err(|e| e.to_string())
}

/// `act(Conv(x, W, b) + z)` (FusedConv, or FusedConvNhwc when `nhwc`): the convolution kernel with its epilogue.
fn lower_fused_conv(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    c: &jiuzhou_ir::ops::Conv,
    activation: &jiuzhou_ir::ops::Activation,
    nhwc: bool,
    out: ValueId,
) -> Result<Kernel, String> {
    let act = Act::from_ir(activation)?;
    let mut k = lower_conv(ctx, graph, node, c, nhwc, out)?;
    let z = residual(graph, node, 3, out)?;
    if let Kernel::Conv {
        residual, act: a, ..
    } = &mut k
    {
        *residual = z;
        *a = act;
    }
    epilogue_ok(ctx, &k)?;
    Ok(k)
}

/// The channels-first shape `[n, c, h, w]` of a channels-last rank-4 shape `[n, h, w, c]`.
fn nchw_of(s: &[usize]) -> Result<Vec<usize>, String> {
    match s {
        [n, h, w, c] => Ok(vec![*n, *c, *h, *w]),
        _ => Err(format!(
            "{}-D channels-last op (the NPU takes 2-D)",
            s.len().saturating_sub(2)
        )),
    }
}

/// HWIO weights `[kh, kw, cin/g, cout]` (FusedConvNhwc's) as OIHW `[cout, cin/g, kh, kw]`.
fn oihw_of(w: &Tensor) -> Result<Tensor, String> {
    let d = f32_data(w)?;
    let s = w.shape();
    if s.len() != 4 {
        return Err(format!("channels-last Conv weights of shape {s:?}"));
    }
    let (kh, kw, ci, co) = (s[0], s[1], s[2], s[3]);
    let mut out = vec![0.0f32; d.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    out[((o * ci + i) * kh + y) * kw + x] = d[((y * kw + x) * ci + i) * co + o];
                }
            }
        }
    }
    Tensor::from_vec(vec![co, ci, kh, kw], out).map_err(|e| e.to_string())
}

/// A 2-D convolution on the cube: Conv (`nhwc = false`, the channels-first graph of an `nchw` profile) or the
/// convolution of a FusedConvNhwc (`nhwc`: input, output and residual channels-last, HWIO weights). Both become
/// the same kernel: the tensors it reads and writes are stored alike.
fn lower_conv(
    ctx: &Ctx,
    graph: &Graph,
    node: &Node,
    c: &jiuzhou_ir::ops::Conv,
    nhwc: bool,
    out: ValueId,
) -> Result<Kernel, String> {
    need_cube(ctx)?;
    let (x, w) = (req(node, 0)?, req(node, 1)?);
    let (mut sx, mut so) = (f32_shape(graph, x)?, f32_shape(graph, out)?);
    if nhwc {
        (sx, so) = (nchw_of(&sx)?, nchw_of(&so)?);
    }
    if sx.len() != 4 {
        return Err(format!(
            "{}-D Conv (the NPU takes 2-D)",
            sx.len().saturating_sub(2)
        ));
    }
    if !(1..=MAX_DENSE_GROUPS).contains(&c.group) {
        return Err(grouped_reason(c.group));
    }
    let group = c.group as usize;
    let wt = constant(graph, w).ok_or("computed Conv weights")?;
    f32_shape(graph, w)?;
    let wt = if nhwc { Arc::new(oihw_of(&wt)?) } else { wt };
    let sw = wt.shape().to_vec();
    if sw.len() != 4 || sw[1] * group != sx[1] || so[1] != sw[0] || sw[0] % group != 0 {
        return Err(format!("Conv of {sx:?} by {sw:?} in {group} group(s)"));
    }
    // A grouped convolution is the dense one with block-diagonal weights (zeros across groups).
    let (wt, sw) = if group == 1 {
        (wt, sw)
    } else {
        let dense = block_diagonal(&wt, group)?;
        let shape = dense.shape().to_vec();
        (Arc::new(dense), shape)
    };
    let kernel = [sw[2] as i64, sw[3] as i64];
    let win = Window::new(
        2,
        &kernel,
        c.strides.as_deref(),
        c.dilations.as_deref(),
        c.pads.as_deref(),
        &c.auto_pad,
        0,
    )
    .map_err(|e| e.to_string())?;
    let win = window2d(&win, &sx, &so, "Conv")?;
    let bias = match node.inputs.get(2).copied().flatten() {
        None => None,
        Some(b) => {
            let t = constant(graph, b).ok_or("computed Conv bias")?;
            let d = f32_data(&t)?;
            if d.len() != sw[0] {
                return Err("Conv bias length".into());
            }
            Some(d)
        }
    };
    let u = |v: usize| v as u64;
    Ok(Kernel::Conv {
        x,
        w: wt,
        bias,
        in_shape: [u(sx[0]), u(sx[1]), u(sx[2]), u(sx[3])],
        out_shape: [u(so[1]), u(so[2]), u(so[3])],
        win,
        groups: group as u64,
        out,
        residual: None,
        act: Act::None,
    })
}

/// Packs logical row-major `k×n` weights into the cube's layout: `packed_rows(k) × ld` elements, zero padded.
pub fn pack_weights(ctx: &Ctx, w: &[f32], k: u64, n: u64) -> Result<(Vec<f32>, u64), String> {
    let ld = gemm::packed_ld(ctx, n)?;
    let rows = gemm::packed_rows(ctx, k);
    let mut out = vec![0.0; (rows * ld) as usize];
    for i in 0..k as usize {
        for j in 0..n as usize {
            out[i * ld as usize + j] = w[i * n as usize + j];
        }
    }
    Ok((out, ld))
}

/// Packs conv weights `[cout, cin, kh, kw]` into the im2col K layout `(kh, kw, channel padded to cq)` × `ld`.
pub fn pack_conv_weights(ctx: &Ctx, w: &Tensor) -> Result<(Vec<f32>, u64, u64), String> {
    let d = f32_data(w)?;
    let s = w.shape();
    let (cout, cin, kh, kw) = (s[0], s[1], s[2], s[3]);
    let cq = gemm::conv_cq(ctx, cin as u64)? as usize;
    let ld = gemm::packed_ld(ctx, cout as u64)? as usize;
    let rows = kh * kw * cq;
    let mut out = vec![0.0; rows * ld];
    for co in 0..cout {
        for ci in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    let row = (y * kw + x) * cq + ci;
                    out[row * ld + co] = d[((co * cin + ci) * kh + y) * kw + x];
                }
            }
        }
    }
    Ok((out, ld as u64, cq as u64))
}
