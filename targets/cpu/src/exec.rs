//! The compiled executable: a launch plan of kernels over an arena, with explicit reference fallbacks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiuzhou_ir::ops::Activation;
use jiuzhou_ir::{DType, Dim, Graph, Node, Op, Tensor, Value, ValueId, ValueType};
use jiuzhou_runtime::{Executable, Observer, RunError, StepProfile};
use jiuzhou_target_reference::Interpreter;

use crate::ExecError;
use crate::elementwise::{self, BinaryKernels};
use crate::fault::{self, Fault};
use crate::fused;
use crate::jit::{BinaryOp, Jit, Operand, UnaryFn, UnaryOp};
use crate::linalg::{self, ConvAttrs, ConvGeom, Epilogue, GemmArgs};
use crate::parallel::{MIN_CHUNK, Parallel};

/// Options for [`CpuExecutable::compile_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Threads for intra-op parallelism; 0 means every available core, 1 runs everything on the caller's thread.
    /// Results are bit-identical for every value.
    pub threads: usize,
}

impl Default for CpuOptions {
    /// Every available core.
    fn default() -> CpuOptions {
        CpuOptions { threads: 0 }
    }
}
use crate::native::{self, In, Placement};
use crate::plan::{self, Interval};
use crate::tensor_ops;

/// A node that runs the reference implementation because no CPU kernel covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackOp {
    /// The node's name.
    pub node: String,
    /// The node's op.
    pub op: &'static str,
}

/// A kernel of the launch plan.
enum Kernel {
    MatMul {
        a: ValueId,
        b: ValueId,
    },
    Gemm {
        a: ValueId,
        /// `B` as `[k, n]` row-major when it was a constant (pre-packed), else the value as stored.
        b: GemmB,
        c: Option<ValueId>,
        alpha: f32,
        beta: f32,
        trans_a: bool,
        epi: Epilogue,
    },
    Conv {
        x: ValueId,
        /// The weight, pre-arranged at compile time when constant (BatchNorm folded in).
        w: Param,
        /// The constant weight packed for [`crate::packed_gemm`] once the step is final, where that kernel runs.
        packed: Option<Arc<linalg::PackedConv>>,
        bias: Option<Param>,
        /// Added to the output before the activation (a fused residual Add).
        residual: Option<ValueId>,
        attrs: ConvAttrs,
        epi: Epilogue,
    },
    Unary {
        f: UnaryFn,
        x: ValueId,
    },
    /// Inference BatchNormalization with constant statistics, folded at compile time into
    /// `y = x·scale[c] + shift[c]` along axis 1.
    Affine {
        x: ValueId,
        scale: Vec<f32>,
        shift: Vec<f32>,
        epi: Epilogue,
    },
    Binary {
        k: BinaryKernels,
        a: ValueId,
        b: ValueId,
    },
    /// A fused op: the product (`inner`), then its bias, its residual and its activation over the output.
    Fused {
        inner: Box<Kernel>,
        bias: Option<ValueId>,
        residual: Option<ValueId>,
        act: Activation,
    },
    /// A native kernel ([`crate::native`]).
    Native(native::Native),
    /// A kernel over whole tensors of any dtype ([`crate::tensor_ops`]); its output lives on the heap.
    Tensor(tensor_ops::TensorStep),
}

/// A native f32 kernel for `node`, else a tensor kernel, else `None` (the reference runs it).
fn other_kernel(graph: &Graph, node: &Node) -> Option<Kernel> {
    native::select(graph, node)
        .map(Kernel::Native)
        .or_else(|| tensor_ops::select(graph, node).map(Kernel::Tensor))
}

/// An f32 operand known at compile time or read at run time.
enum Param {
    /// A constant, as data and shape.
    Const(Arc<Vec<f32>>, Vec<usize>),
    /// A value of the graph.
    Value(ValueId),
}

impl Param {
    /// The constant data of an f32 constant, else the value.
    fn of(graph: &Graph, id: ValueId) -> Param {
        match &graph.value(id).constant {
            Some(t) => match t.as_slice::<f32>() {
                Ok(d) => Param::Const(Arc::new(d.to_vec()), t.shape().to_vec()),
                Err(_) => Param::Value(id),
            },
            None => Param::Value(id),
        }
    }
}

/// The right operand of a Gemm.
enum GemmB {
    /// Packed at compile time into `[k, n]` row-major.
    Packed(Arc<Vec<f32>>, [usize; 2]),
    /// Read at run time, transposed when `trans_b`.
    Value(ValueId, bool),
}

enum StepKind {
    Kernel(Kernel),
    /// A one-node graph run by the reference interpreter, with the outer values bound to its inputs.
    Fallback(Graph, Vec<ValueId>),
}

struct Step {
    kind: StepKind,
    /// The name of the node the step was made from.
    node: String,
    /// What the step runs, for profiles: the node's op and the ops fused into it (`Conv+BatchNormalization+Relu`).
    label: String,
    /// The values the step writes (for a fused kernel, the last fused node's outputs).
    outputs: Vec<ValueId>,
    /// The values the step reads.
    reads: Vec<ValueId>,
    /// Values whose last reader is this step: freed after it.
    frees: Vec<ValueId>,
    /// How the step's output shares memory with its inputs ([`place_values`]).
    place: StepPlace,
}

/// How a step's output shares arena memory with its inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum StepPlace {
    /// The kernel writes the output into memory of its own.
    #[default]
    Own,
    /// The output is this input's memory under another shape: nothing runs while the input is in the arena.
    View(ValueId),
    /// A concatenation along an axis with one position before it: each input `(value, offset in the output,
    /// elements, in place)`; the inputs in place were computed straight into their slice of the output, the
    /// others are copied there.
    Concat(Vec<(ValueId, usize, usize, bool)>),
}

/// A graph compiled for the CPU.
pub struct CpuExecutable {
    graph: Arc<Graph>,
    steps: Vec<Step>,
    fallback_ops: Vec<FallbackOp>,
    /// Arena offset (in f32 elements) and static shape of every planned value.
    slots: HashMap<ValueId, (usize, Vec<usize>)>,
    arena_len: usize,
    /// The arena of the last finished run, reused by the next one (no allocation, zeroing or page faults per run).
    arena_cache: std::sync::Mutex<Vec<f32>>,
    interp: Interpreter,
    parallel: Parallel,
    /// Steps whose outputs are perturbed on purpose (test-only fault injection, [`crate::fault`]).
    fault_steps: HashSet<usize>,
    _jit: Arc<Jit>,
}

/// A value during a run: a tensor on the heap or an f32 tensor in the arena.
#[derive(Clone)]
enum Slot {
    Empty,
    Heap(Value),
    Arena,
}

fn static_f32_shape(graph: &Graph, id: ValueId) -> Option<Vec<usize>> {
    match &graph.value(id).ty {
        ValueType::Tensor(t) if t.dtype == DType::F32 => t
            .shape
            .as_ref()?
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n),
                Dim::Sym(_) => None,
            })
            .collect(),
        _ => None,
    }
}

fn is_f32(graph: &Graph, id: ValueId) -> bool {
    matches!(&graph.value(id).ty, ValueType::Tensor(t) if t.dtype == DType::F32)
}

fn const_f32_scalar(graph: &Graph, id: Option<ValueId>) -> Option<Option<f32>> {
    let Some(id) = id else { return Some(None) };
    let c = graph.value(id).constant.as_ref()?;
    match c.as_slice::<f32>() {
        Ok([v]) => Some(Some(*v)),
        _ => None,
    }
}

/// Every name captured by the subgraphs of `node`, at any depth.
fn capture_names(node: &Node, out: &mut Vec<String>) {
    for g in node.op.subgraphs() {
        for &c in &g.captures {
            out.push(g.value(c).name.clone());
        }
        for n in &g.nodes {
            capture_names(n, out);
        }
    }
}

/// Wraps `node` into a one-node graph whose inputs are the non-constant values it reads (subgraph captures
/// included, under their own names so the interpreter resolves them).
fn wrap_node(graph: &Graph, node: &Node) -> (Graph, Vec<ValueId>) {
    let mut g = Graph::new(format!("cpu-fallback:{}", node.name));
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut outer = Vec::new();
    let mut bind = |g: &mut Graph, id: ValueId, outer: &mut Vec<ValueId>| -> ValueId {
        if let Some(&n) = map.get(&id) {
            return n;
        }
        let info = graph.value(id);
        let n = match &info.constant {
            Some(c) => g.add_constant(info.name.clone(), c.clone()),
            None => {
                let n = g.add_value(info.name.clone(), info.ty.clone());
                g.inputs.push(n);
                outer.push(id);
                n
            }
        };
        map.insert(id, n);
        n
    };
    let inputs: Vec<Option<ValueId>> = node
        .inputs
        .iter()
        .map(|i| i.map(|id| bind(&mut g, id, &mut outer)))
        .collect();
    let mut names = Vec::new();
    capture_names(node, &mut names);
    for name in names {
        if let Some(id) = graph.value_by_name(&name) {
            bind(&mut g, id, &mut outer);
        }
    }
    let outputs: Vec<ValueId> = node
        .outputs
        .iter()
        .map(|&o| {
            let info = graph.value(o);
            g.add_value(info.name.clone(), info.ty.clone())
        })
        .collect();
    g.outputs = outputs.clone();
    g.nodes.push(Node {
        name: node.name.clone(),
        op: node.op.clone(),
        inputs,
        outputs,
    });
    (g, outer)
}

/// Chooses a kernel for `node`, or `None` when it must fall back. `relu` says whether a following Relu is fused.
fn select_kernel(
    graph: &Graph,
    node: &Node,
    jit: &mut Jit,
    unary: &mut Vec<(usize, crate::jit::FuncId)>,
    binary: &mut Vec<(usize, [crate::jit::FuncId; 3])>,
    step: usize,
) -> Result<Option<Kernel>, ExecError> {
    let ins: Vec<Option<ValueId>> = node.inputs.clone();
    let req = |i: usize| ins.get(i).copied().flatten();
    let all_f32 = ins.iter().flatten().all(|&i| is_f32(graph, i))
        && node.outputs.iter().all(|&o| is_f32(graph, o));
    if !all_f32 || node.outputs.len() != 1 {
        return Ok(other_kernel(graph, node));
    }
    let bop = match &node.op {
        Op::Add(_) | Op::Sum(_) => Some(BinaryOp::Add),
        Op::Sub(_) => Some(BinaryOp::Sub),
        Op::Mul(_) => Some(BinaryOp::Mul),
        Op::Div(_) => Some(BinaryOp::Div),
        Op::Max(_) => Some(BinaryOp::Max),
        Op::Min(_) => Some(BinaryOp::Min),
        _ => None,
    };
    if let Some(op) = bop {
        let (Some(a), Some(b), 2) = (req(0), req(1), ins.len()) else {
            return Ok(None);
        };
        let ids = [
            jit.binary(op, Operand::Vector, Operand::Vector)?,
            jit.binary(op, Operand::Vector, Operand::Scalar)?,
            jit.binary(op, Operand::Scalar, Operand::Vector)?,
        ];
        binary.push((step, ids));
        // The function pointers are filled in once the module is finalized.
        return Ok(Some(Kernel::Binary {
            k: BinaryKernels {
                vv: placeholder_binary,
                vs: placeholder_binary,
                sv: placeholder_binary,
            },
            a,
            b,
        }));
    }
    let kernel = match &node.op {
        Op::Pow(_) => {
            let (Some(a), Some(b), 2) = (req(0), req(1), ins.len()) else {
                return Ok(None);
            };
            Kernel::Binary {
                k: BinaryKernels {
                    vv: native::pow_vv,
                    vs: native::pow_vs,
                    sv: native::pow_sv,
                },
                a,
                b,
            }
        }
        Op::Relu(_) | Op::Neg(_) | Op::Abs(_) | Op::Sqrt(_) | Op::Clip(_) => {
            let Some(x) = req(0) else { return Ok(None) };
            let op = match &node.op {
                Op::Relu(_) => UnaryOp::Relu,
                Op::Neg(_) => UnaryOp::Neg,
                Op::Abs(_) => UnaryOp::Abs,
                Op::Sqrt(_) => UnaryOp::Sqrt,
                _ => {
                    let (Some(lo), Some(hi)) = (
                        const_f32_scalar(graph, req(1)),
                        const_f32_scalar(graph, req(2)),
                    ) else {
                        return Ok(None);
                    };
                    UnaryOp::Clip {
                        lo: lo.unwrap_or(f32::NEG_INFINITY),
                        hi: hi.unwrap_or(f32::INFINITY),
                    }
                }
            };
            let id = jit.unary(op)?;
            unary.push((step, id));
            Kernel::Unary {
                f: placeholder_unary,
                x,
            }
        }
        Op::BatchNormalization(bn) if bn.training_mode == 0 => {
            let Some(x) = req(0) else { return Ok(None) };
            let consts: Option<Vec<&[f32]>> = (1..5)
                .map(|i| {
                    let c = graph.value(req(i)?).constant.as_ref()?;
                    (c.rank() == 1).then(|| c.as_slice::<f32>().ok()).flatten()
                })
                .collect();
            let Some(p) = consts else {
                return Ok(other_kernel(graph, node));
            };
            let c = p[0].len();
            if p.iter().any(|v| v.len() != c) {
                return Ok(None);
            }
            let (mut scale, mut shift) = (Vec::with_capacity(c), Vec::with_capacity(c));
            let (gamma, beta, mean, var) = (p[0], p[1], p[2], p[3]);
            for (((&g, &b), &m), &v) in gamma.iter().zip(beta).zip(mean).zip(var) {
                let a = g as f64 / (v as f64 + bn.epsilon as f64).sqrt();
                scale.push(a as f32);
                shift.push((b as f64 - m as f64 * a) as f32);
            }
            Kernel::Affine {
                x,
                scale,
                shift,
                epi: Epilogue::default(),
            }
        }
        Op::MatMul(_) => {
            let (Some(a), Some(b)) = (req(0), req(1)) else {
                return Ok(None);
            };
            Kernel::MatMul { a, b }
        }
        Op::Gemm(g) => {
            let (Some(a), Some(b)) = (req(0), req(1)) else {
                return Ok(None);
            };
            let trans_b = g.transB != 0;
            let bk = match &graph.value(b).constant {
                Some(t) if t.rank() == 2 => {
                    let data = t
                        .as_slice::<f32>()
                        .map_err(|e| ExecError::new(e.to_string()))?;
                    let (r, c) = (t.shape()[0], t.shape()[1]);
                    if trans_b {
                        let mut p = vec![0.0f32; r * c];
                        for i in 0..r {
                            for j in 0..c {
                                p[j * r + i] = data[i * c + j];
                            }
                        }
                        GemmB::Packed(Arc::new(p), [c, r])
                    } else {
                        GemmB::Packed(Arc::new(data.to_vec()), [r, c])
                    }
                }
                _ => GemmB::Value(b, trans_b),
            };
            Kernel::Gemm {
                a,
                b: bk,
                c: req(2),
                alpha: g.alpha,
                beta: g.beta,
                trans_a: g.transA != 0,
                epi: Epilogue::default(),
            }
        }
        Op::FusedConv(c) => {
            let (Some(x), Some(w)) = (req(0), req(1)) else {
                return Ok(None);
            };
            let residual = req(3);
            if !fused::supports_activation(&c.activation)
                || residual.is_some_and(|z| !lines_up(graph, z, node.outputs[0], true))
            {
                return Ok(None);
            }
            // The conv kernel adds the bias and the residual and applies a Relu itself; a Clip runs after it.
            let in_kernel = matches!(c.activation, Activation::None | Activation::Relu);
            let conv = Kernel::Conv {
                x,
                w: Param::of(graph, w),
                packed: None,
                bias: req(2).map(|b| Param::of(graph, b)),
                residual,
                attrs: ConvAttrs::of(&c.conv()),
                epi: Epilogue {
                    relu: c.activation == Activation::Relu,
                },
            };
            if in_kernel {
                conv
            } else {
                Kernel::Fused {
                    inner: Box::new(conv),
                    bias: None,
                    residual: None,
                    act: c.activation,
                }
            }
        }
        Op::FusedMatMul(m) => {
            let (Some(a), Some(b)) = (req(0), req(1)) else {
                return Ok(None);
            };
            let (bias, residual) = (req(2), req(3));
            if !fused::supports_activation(&m.activation)
                || bias.is_some_and(|v| !lines_up(graph, v, node.outputs[0], false))
                || residual.is_some_and(|z| !lines_up(graph, z, node.outputs[0], true))
            {
                return Ok(None);
            }
            Kernel::Fused {
                inner: Box::new(Kernel::MatMul { a, b }),
                bias,
                residual,
                act: m.activation,
            }
        }
        Op::Conv(c) => {
            let (Some(x), Some(w)) = (req(0), req(1)) else {
                return Ok(None);
            };
            Kernel::Conv {
                x,
                w: Param::of(graph, w),
                packed: None,
                bias: req(2).map(|b| Param::of(graph, b)),
                residual: None,
                attrs: ConvAttrs::of(c),
                epi: Epilogue::default(),
            }
        }
        _ => return Ok(other_kernel(graph, node)),
    };
    Ok(Some(kernel))
}

/// Whether the addend `v` of a fused node lines up with its output `out` in a way the CPU epilogue adds (a
/// residual: the output's own shape; a bias: that, a scalar, or a row).
fn lines_up(graph: &Graph, v: ValueId, out: ValueId, residual: bool) -> bool {
    let dims = |id: ValueId| match &graph.value(id).ty {
        ValueType::Tensor(t) if t.dtype == DType::F32 => t.shape.clone(),
        _ => None,
    };
    let (Some(a), Some(o)) = (dims(v), dims(out)) else {
        return false;
    };
    match fused::static_addend_kind(&a, &o) {
        Some(fused::Addend::Full) => true,
        Some(_) => !residual,
        None => false,
    }
}

/// The arena slots `(offset, shape)` of the `planned` values `(value, static shape, defining step)` and the arena
/// size, in f32 elements; `last` is each value's last reading step.
///
/// Values may share memory. A view step (Reshape, Flatten, Squeeze, Unsqueeze, Identity: [`Placement::View`])
/// makes its output the input's memory; a Concat along an axis with one position before it
/// ([`Placement::Concat`]) has each of its inputs computed straight into its slice of the output. Each value is
/// placed inside at most one other (cycles are refused), so the values form trees; a tree takes one slot of its
/// root's size, live from the first definition to the last read of any of its values, and every value sits at
/// its offset inside it. Values are never written after their step, so sharing is safe: the sharing steps
/// record it in [`Step::place`] and skip their copies (an input that turns out not to be in the arena at run time,
/// such as a fault-injected one, is copied as before).
fn place_values(
    g: &Graph,
    steps: &mut [Step],
    planned: &[(ValueId, Vec<usize>, usize)],
    last: &HashMap<ValueId, usize>,
    fault_steps: &HashSet<usize>,
) -> (HashMap<ValueId, (usize, Vec<usize>)>, usize) {
    let index: HashMap<ValueId, usize> =
        planned.iter().enumerate().map(|(i, p)| (p.0, i)).collect();
    // The value each planned value lives inside, and its offset there.
    let mut parent: HashMap<ValueId, (ValueId, usize)> = HashMap::new();
    let root_of = |parent: &HashMap<ValueId, (ValueId, usize)>, mut v: ValueId| {
        while let Some(&(p, _)) = parent.get(&v) {
            v = p;
        }
        v
    };
    for (si, step) in steps.iter_mut().enumerate() {
        let StepKind::Kernel(Kernel::Native(n)) = &step.kind else {
            continue;
        };
        let out = step.outputs[0];
        if !index.contains_key(&out) || fault_steps.contains(&si) || parent.contains_key(&out) {
            continue;
        }
        match n.kernel.placement() {
            Placement::Compute => {}
            Placement::View => {
                if let [x] = n.inputs[..]
                    && index.contains_key(&x)
                    && root_of(&parent, x) != out
                    && static_f32_shape(g, x).map(|s| s.iter().product::<usize>())
                        == Some(planned[index[&out]].1.iter().product())
                {
                    parent.insert(out, (x, 0));
                    step.place = StepPlace::View(x);
                }
            }
            Placement::Concat(axis) => {
                let shape = &planned[index[&out]].1;
                let Ok(a) = native::norm_axis(axis, shape.len()) else {
                    continue;
                };
                if shape[..a].iter().any(|&d| d != 1) {
                    continue;
                }
                // Each input goes in place through the root of its tree, when that is the same memory (the
                // input itself, or a view of the whole root) and nothing placed it elsewhere yet.
                let mut parts: Vec<(ValueId, usize, usize, bool)> = Vec::new();
                let mut moved: Vec<(ValueId, usize)> = Vec::new();
                let mut at = 0;
                for &x in &n.inputs {
                    let Some(len) = static_f32_shape(g, x).map(|s| s.iter().product::<usize>())
                    else {
                        break;
                    };
                    let r = root_of(&parent, x);
                    let in_place = index.contains_key(&x)
                        && index.contains_key(&r)
                        && planned[index[&r]].1.iter().product::<usize>() == len
                        && !moved.iter().any(|m| m.0 == r)
                        && root_of(&parent, out) != r;
                    if in_place {
                        moved.push((r, at));
                    }
                    parts.push((x, at, len, in_place));
                    at += len;
                }
                if parts.len() != n.inputs.len() || at != shape.iter().product::<usize>() {
                    continue;
                }
                for (r, at) in moved {
                    parent.insert(r, (out, at));
                }
                step.place = StepPlace::Concat(parts);
            }
        }
    }
    // One interval per tree, at its root.
    let mut intervals: Vec<Interval> = Vec::new();
    let mut tree: HashMap<ValueId, usize> = HashMap::new();
    let mut roots = Vec::new();
    for (v, _, si) in planned {
        let r = root_of(&parent, *v);
        let span = (*si, last.get(v).copied().unwrap_or(*si).max(*si));
        let i = *tree.entry(r).or_insert_with(|| {
            intervals.push(Interval {
                len: planned[index[&r]].1.iter().product(),
                first: span.0,
                last: span.1,
            });
            roots.push(r);
            intervals.len() - 1
        });
        intervals[i].first = intervals[i].first.min(span.0);
        intervals[i].last = intervals[i].last.max(span.1);
    }
    let (offsets, arena_len) = plan::plan(&intervals);
    let slots = planned
        .iter()
        .map(|(v, shape, _)| {
            let (mut at, mut u) = (0, *v);
            while let Some(&(p, off)) = parent.get(&u) {
                at += off;
                u = p;
            }
            (*v, (offsets[tree[&u]] + at, shape.clone()))
        })
        .collect();
    (slots, arena_len)
}

unsafe extern "C" fn placeholder_unary(_: *const f32, _: *mut f32, _: usize) {}
unsafe extern "C" fn placeholder_binary(_: *const f32, _: *const f32, _: *mut f32, _: usize) {}

impl CpuExecutable {
    /// Compiles `graph` with the default options (every available core); see [`CpuExecutable::compile_with`].
    pub fn compile(graph: Arc<Graph>) -> Result<CpuExecutable, ExecError> {
        CpuExecutable::compile_with(graph, &CpuOptions::default())
    }

    /// Compiles `graph`: chooses a kernel or an explicit fallback per node, fuses Relu into a preceding Conv or
    /// Gemm, generates the elementwise kernels, and plans the arena. Runs use `options.threads` threads.
    ///
    /// A test-only fault set in the environment ([`crate::fault`]) applies.
    pub fn compile_with(
        graph: Arc<Graph>,
        options: &CpuOptions,
    ) -> Result<CpuExecutable, ExecError> {
        Self::build(graph, options, Fault::from_env()?)
    }

    /// Compiles like [`CpuExecutable::compile`], with `fault` (test-only: the nodes it selects compute wrong
    /// results on purpose) instead of the one the environment asks for.
    pub fn compile_with_fault(
        graph: Arc<Graph>,
        fault: Option<Fault>,
    ) -> Result<CpuExecutable, ExecError> {
        Self::build(graph, &CpuOptions::default(), fault)
    }

    fn build(
        graph: Arc<Graph>,
        options: &CpuOptions,
        fault: Option<Fault>,
    ) -> Result<CpuExecutable, ExecError> {
        let parallel = Parallel::new(options.threads)?;
        let g = &*graph;
        let mut jit = Jit::new()?;
        let mut unary_ids = Vec::new();
        let mut binary_ids = Vec::new();
        let uses = g.use_counts();
        let outputs: HashSet<ValueId> = g.outputs.iter().copied().collect();
        let mut steps: Vec<Step> = Vec::new();
        let mut fallback_ops = Vec::new();
        let mut fused_into: HashMap<ValueId, usize> = HashMap::new();
        // The step that computes each value (values fused into a step map to that step).
        let mut produced_at: HashMap<ValueId, usize> = HashMap::new();
        let mut fault_steps: HashSet<usize> = HashSet::new();
        let mut faulty = |node: &Node, si: usize| {
            if let Some(f) = &fault
                && f.matches(&node.name, node.op.name())
            {
                tracing::warn!(
                    node = %node.name,
                    op = node.op.name(),
                    "{}: the cpu target computes node `{}` WRONG on purpose (test-only fault injection)",
                    fault::ENV,
                    node.name
                );
                fault_steps.insert(si);
            }
        };
        // Subgraphs may capture any value of this graph by name: keep them all alive when there are any.
        let has_subgraphs = g.nodes.iter().any(|n| !n.op.subgraphs().is_empty());
        for node in &g.nodes {
            // A Relu whose input is the single-use output of a Conv/Gemm step is fused into that step.
            if let (Op::Relu(_), Some(Some(x)), 1) =
                (&node.op, node.inputs.first(), node.outputs.len())
                && let Some(&si) = fused_into.get(x)
                && uses.get(x.index()) == Some(&1)
                && !outputs.contains(x)
                && !has_subgraphs
                && is_f32(g, node.outputs[0])
                && let StepKind::Kernel(
                    Kernel::Conv { epi, .. }
                    | Kernel::Gemm { epi, .. }
                    | Kernel::Affine { epi, .. },
                ) = &mut steps[si].kind
                && !epi.relu
            {
                epi.relu = true;
                steps[si].outputs = node.outputs.clone();
                steps[si].label.push_str("+Relu");
                faulty(node, si);
                fused_into.remove(x);
                produced_at.insert(node.outputs[0], si);
                continue;
            }
            // Which step computes a value that can still take a fused epilogue (single use, not an output).
            let fusable = |v: &ValueId, fused_into: &HashMap<ValueId, usize>| -> Option<usize> {
                let si = *fused_into.get(v)?;
                (uses.get(v.index()) == Some(&1) && !outputs.contains(v) && !has_subgraphs)
                    .then_some(si)
            };
            // An Add of a Conv output and a value computed before that Conv becomes the Conv's residual.
            if let (Op::Add(_) | Op::Sum(_), [Some(a), Some(b)], [out]) =
                (&node.op, &node.inputs[..], &node.outputs[..])
            {
                let shapes = [*a, *b, *out].map(|v| static_f32_shape(g, v));
                let same = shapes[0].is_some() && shapes.iter().all(|s| *s == shapes[0]);
                for (c, r) in [(*a, *b), (*b, *a)] {
                    if !same || c == r {
                        break;
                    }
                    let Some(si) = fusable(&c, &fused_into) else {
                        continue;
                    };
                    if produced_at.get(&r).is_some_and(|&p| p >= si) {
                        continue;
                    }
                    if let StepKind::Kernel(Kernel::Conv { residual, epi, .. }) =
                        &mut steps[si].kind
                        && residual.is_none()
                        && !epi.relu
                    {
                        *residual = Some(r);
                        steps[si].reads.push(r);
                        steps[si].label.push_str("+Add");
                        steps[si].outputs = node.outputs.clone();
                        fused_into.remove(&c);
                        fused_into.insert(*out, si);
                        produced_at.insert(*out, si);
                        faulty(node, si);
                        break;
                    }
                }
                if produced_at.contains_key(out) {
                    continue;
                }
            }
            let si = steps.len();
            let selected = select_kernel(g, node, &mut jit, &mut unary_ids, &mut binary_ids, si)?;
            // An inference BatchNormalization right after a Conv with constant weights folds into them:
            // w'[m] = w[m]·scale[m], b'[m] = b[m]·scale[m] + shift[m].
            if let Some(Kernel::Affine {
                x, scale, shift, ..
            }) = &selected
                && let Some(ci) = fusable(x, &fused_into)
                && let StepKind::Kernel(Kernel::Conv {
                    w: Param::Const(wd, ws),
                    bias,
                    residual: None,
                    epi,
                    ..
                }) = &mut steps[ci].kind
                && !epi.relu
                && ws.first() == Some(&scale.len())
                && !matches!(bias, Some(Param::Value(_)))
            {
                let per = wd.len() / scale.len().max(1);
                let mut w2 = wd.as_ref().clone();
                for (m, row) in w2.chunks_exact_mut(per.max(1)).enumerate() {
                    row.iter_mut().for_each(|v| *v *= scale[m]);
                }
                let b2: Vec<f32> = (0..scale.len())
                    .map(|m| {
                        let b = match bias {
                            Some(Param::Const(b, _)) => b.get(m).copied().unwrap_or(0.0),
                            _ => 0.0,
                        };
                        b * scale[m] + shift[m]
                    })
                    .collect();
                *wd = Arc::new(w2);
                *bias = Some(Param::Const(Arc::new(b2), vec![scale.len()]));
                steps[ci].outputs = node.outputs.clone();
                steps[ci].label.push_str("+BatchNormalization");
                faulty(node, ci);
                fused_into.remove(x);
                fused_into.insert(node.outputs[0], ci);
                produced_at.insert(node.outputs[0], ci);
                continue;
            }
            for &o in &node.outputs {
                produced_at.insert(o, si);
            }
            faulty(node, si);
            match selected {
                Some(k) => {
                    if matches!(
                        k,
                        Kernel::Conv { .. } | Kernel::Gemm { .. } | Kernel::Affine { .. }
                    ) {
                        fused_into.insert(node.outputs[0], si);
                    }
                    steps.push(Step {
                        reads: node.inputs.iter().flatten().copied().collect(),
                        kind: StepKind::Kernel(k),
                        node: node.name.clone(),
                        label: node.op.name().to_string(),
                        outputs: node.outputs.clone(),
                        frees: Vec::new(),
                        place: StepPlace::Own,
                    });
                }
                None => {
                    let (wrapped, outer) = wrap_node(g, node);
                    fallback_ops.push(FallbackOp {
                        node: node.name.clone(),
                        op: node.op.name(),
                    });
                    steps.push(Step {
                        reads: outer.clone(),
                        kind: StepKind::Fallback(wrapped, outer),
                        node: node.name.clone(),
                        label: format!("{} (reference)", node.op.name()),
                        outputs: node.outputs.clone(),
                        frees: Vec::new(),
                        place: StepPlace::Own,
                    });
                }
            }
        }
        // Constant conv weights are final now (BatchNorm folded in): pack them once for the GEMM kernel, which then
        // replaces them (only their shape is kept).
        for step in &mut steps {
            if let StepKind::Kernel(Kernel::Conv {
                w: Param::Const(wd, ws),
                packed,
                attrs,
                ..
            }) = &mut step.kind
                && let Ok(group) = usize::try_from(attrs.group)
            {
                *packed = linalg::PackedConv::new(wd, ws, group).map(Arc::new);
                if packed.is_some() {
                    *wd = Arc::new(Vec::new());
                }
            }
        }
        if let Some(f) = &fault
            && fault_steps.is_empty()
        {
            tracing::warn!(
                "{}: selector `{}` matches no node of graph `{}`: nothing is perturbed",
                fault::ENV,
                f.selector,
                g.name
            );
        }
        jit.finish()?;
        for (si, id) in unary_ids {
            if let StepKind::Kernel(Kernel::Unary { f, .. }) = &mut steps[si].kind {
                *f = jit.unary_fn(id)?;
            }
        }
        for (si, [vv, vs, sv]) in binary_ids {
            if let StepKind::Kernel(Kernel::Binary { k, .. }) = &mut steps[si].kind {
                *k = BinaryKernels {
                    vv: jit.binary_fn(vv)?,
                    vs: jit.binary_fn(vs)?,
                    sv: jit.binary_fn(sv)?,
                };
            }
        }

        // Liveness: the last step that reads each value.
        let mut last: HashMap<ValueId, usize> = HashMap::new();
        for (si, s) in steps.iter().enumerate() {
            for &r in &s.reads {
                last.insert(r, si);
            }
        }
        for (&v, &si) in &last {
            if !outputs.contains(&v) && g.value(v).constant.is_none() && !has_subgraphs {
                steps[si].frees.push(v);
            }
        }
        // The arena holds the f32 outputs of kernel steps with static shapes that are not graph outputs.
        let mut planned: Vec<(ValueId, Vec<usize>, usize)> = Vec::new();
        for (si, s) in steps.iter().enumerate() {
            if !matches!(s.kind, StepKind::Kernel(_))
                || matches!(s.kind, StepKind::Kernel(Kernel::Tensor(_)))
            {
                continue;
            }
            for &o in &s.outputs {
                if outputs.contains(&o) || has_subgraphs {
                    continue;
                }
                if let Some(shape) = static_f32_shape(g, o) {
                    let len = jiuzhou_ir::tensor::checked_numel(&shape, DType::F32)
                        .map_err(|e| ExecError::new(e.to_string()))?;
                    if len == 0 {
                        continue;
                    }
                    planned.push((o, shape, si));
                }
            }
        }
        let (slots, arena_len) = place_values(g, &mut steps, &planned, &last, &fault_steps);
        if !fallback_ops.is_empty() {
            let list: Vec<String> = fallback_ops
                .iter()
                .map(|f| format!("{} ({})", f.node, f.op))
                .collect();
            tracing::info!(
                count = fallback_ops.len(),
                "cpu target: nodes running the reference implementation: {}",
                list.join(", ")
            );
        }
        let exec = CpuExecutable {
            graph,
            steps,
            fallback_ops,
            slots,
            arena_len,
            arena_cache: Default::default(),
            interp: Interpreter::default(),
            parallel,
            fault_steps,
            _jit: Arc::new(jit),
        };
        tracing::info!(
            steps = exec.steps.len(),
            views = exec.views(),
            concat_inputs_in_place = exec.concat_inputs_in_place(),
            peak_arena_bytes = exec.arena_len * 4,
            threads = exec.parallel.threads(),
            "cpu target: compiled"
        );
        Ok(exec)
    }

    /// The nodes that run the reference implementation, in graph order.
    pub fn fallback_ops(&self) -> &[FallbackOp] {
        &self.fallback_ops
    }

    /// The size of the arena holding the planned intermediate tensors, in bytes.
    pub fn peak_arena_bytes(&self) -> usize {
        self.arena_len * 4
    }

    /// The number of threads kernels run on (1: the caller's thread only).
    pub fn threads(&self) -> usize {
        self.parallel.threads()
    }

    /// The number of view steps (reshapes) whose output is their input's memory, copying nothing.
    pub fn views(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.place, StepPlace::View(_)))
            .count()
    }

    /// The number of Concat inputs computed straight into their slice of the Concat's output.
    pub fn concat_inputs_in_place(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match &s.place {
                StepPlace::Concat(parts) => parts.iter().filter(|p| p.3).count(),
                _ => 0,
            })
            .sum()
    }

    /// The number of steps (kernels and fallbacks) of the launch plan.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    fn run_impl(
        &self,
        inputs: Vec<Value>,
        mut observer: Option<&mut Observer<'_>>,
        mut profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<Vec<Value>, ExecError> {
        let g = &*self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(ExecError::new(format!(
                "the graph takes {} inputs, got {}",
                g.inputs.len(),
                inputs.len()
            )));
        }
        let mut env: Vec<Slot> = vec![Slot::Empty; g.values.len()];
        for (id, v) in g.inputs.iter().zip(inputs) {
            env[id.index()] = Slot::Heap(v);
        }
        for (i, v) in g.values.iter().enumerate() {
            if let Some(c) = &v.constant {
                env[i] = Slot::Heap(Value::Tensor(c.clone()));
            }
        }
        // Kernels write every element of their outputs before anything reads them (slots are shared by values
        // that are never live together anyway), so the last run's arena serves as it is. A run concurrent with
        // another finds the cache empty and allocates its own.
        let mut arena = self
            .arena_cache
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        if arena.len() != self.arena_len {
            arena = vec![0.0f32; self.arena_len];
        }
        let mut rt = Runtime {
            exec: self,
            env,
            base: arena.as_mut_ptr(),
            threaded: false,
        };
        // The run starts on the caller's thread, every kernel single-threaded. At the first step big enough to
        // gain from threads it moves into the pool (one hand-over per run) and stays there: small graphs (a
        // transformer layer of a few-microsecond kernels) never pay for waking a worker.
        let mut si = 0;
        while si < self.steps.len() {
            if self.parallel.is_parallel() && rt.wants_threads(&self.steps[si]) {
                if observer.is_none() {
                    let mut rest = SendRun {
                        rt: &mut rt,
                        profile: profile.as_deref_mut(),
                    };
                    let out = self.parallel.install(move || {
                        let rest = &mut rest;
                        rest.rt.threaded = true;
                        for i in si..self.steps.len() {
                            self.run_step(rest.rt, i, rest.profile.as_deref_mut(), None)?;
                        }
                        self.finish_run(rest.rt)
                    });
                    self.keep_arena(arena);
                    return out;
                }
                // An observed run (not `Send`) hands over one step at a time.
                let mut one = SendRun {
                    rt: &mut rt,
                    profile: profile.as_deref_mut(),
                };
                self.parallel.install(move || {
                    let one = &mut one;
                    one.rt.threaded = true;
                    let r = self.run_kernel(one.rt, si, one.profile.as_deref_mut());
                    one.rt.threaded = false;
                    r
                })?;
                self.after_step(&mut rt, si, observer.as_deref_mut())?;
            } else {
                self.run_step(&mut rt, si, profile.as_deref_mut(), observer.as_deref_mut())?;
            }
            si += 1;
        }
        let out = self.finish_run(&rt);
        self.keep_arena(arena);
        out
    }

    /// Runs step `si` (its kernel or fallback, profiled when asked, perturbed when faulty), reports its outputs
    /// to the observer and frees the values it read last.
    fn run_step(
        &self,
        rt: &mut Runtime<'_>,
        si: usize,
        profile: Option<&mut Vec<StepProfile>>,
        observer: Option<&mut Observer<'_>>,
    ) -> Result<(), ExecError> {
        self.run_kernel(rt, si, profile)?;
        self.after_step(rt, si, observer)
    }

    /// Computes the outputs of step `si`.
    fn run_kernel(
        &self,
        rt: &mut Runtime<'_>,
        si: usize,
        profile: Option<&mut Vec<StepProfile>>,
    ) -> Result<(), ExecError> {
        let step = &self.steps[si];
        // Only a profiled run reads the clock.
        let started = profile.is_some().then(std::time::Instant::now);
        match (&step.kind, &step.place) {
            // The output is the input's memory: nothing to compute.
            (_, StepPlace::View(x)) if matches!(rt.env[x.index()], Slot::Arena) => {
                rt.env[step.outputs[0].index()] = Slot::Arena;
            }
            (_, StepPlace::Concat(parts)) => rt.concat_in_place(step.outputs[0], parts)?,
            (StepKind::Kernel(k), _) => rt.kernel(k, step.outputs[0])?,
            (StepKind::Fallback(wrapped, outer), _) => {
                let vals = outer
                    .iter()
                    .map(|&v| rt.value(v))
                    .collect::<Result<Vec<_>, _>>()?;
                let outs = self
                    .interp
                    .run(wrapped, vals)
                    .map_err(|e| ExecError::new(e.0))?;
                if outs.len() < step.outputs.len() {
                    return Err(ExecError::new("a fallback node returned too few outputs"));
                }
                for (&o, v) in step.outputs.iter().zip(outs) {
                    rt.env[o.index()] = Slot::Heap(v);
                }
            }
        }
        if let (Some(profile), Some(started)) = (profile, started) {
            let seconds = started.elapsed().as_secs_f64();
            profile.push(rt.step_profile(step, seconds));
        }
        if self.fault_steps.contains(&si) {
            for &o in &step.outputs {
                // The perturbed copy lives on the heap; the arena slot (if any) is simply not read again.
                let v = fault::perturb(&rt.value(o)?);
                rt.env[o.index()] = Slot::Heap(v);
            }
        }
        Ok(())
    }

    /// What follows step `si`: its outputs go to the observer, the values it read last are freed.
    fn after_step(
        &self,
        rt: &mut Runtime<'_>,
        si: usize,
        observer: Option<&mut Observer<'_>>,
    ) -> Result<(), ExecError> {
        let step = &self.steps[si];
        if let Some(observe) = observer {
            // Copied out now: an arena slot is reused once its value is dead.
            for &o in &step.outputs {
                observe(&self.graph.value(o).name, &rt.value(o)?);
            }
        }
        for &v in &step.frees {
            rt.env[v.index()] = Slot::Empty;
        }
        Ok(())
    }

    /// The graph's outputs at the end of a run.
    fn finish_run(&self, rt: &Runtime<'_>) -> Result<Vec<Value>, ExecError> {
        self.graph.outputs.iter().map(|&o| rt.value(o)).collect()
    }

    /// Keeps a finished run's arena for the next run.
    fn keep_arena(&self, arena: Vec<f32>) {
        if let Ok(mut cache) = self.arena_cache.lock() {
            *cache = arena;
        }
    }
}

/// The state a run hands to the pool: its runtime and profile.
struct SendRun<'r, 'a, 'p> {
    rt: &'r mut Runtime<'a>,
    profile: Option<&'p mut Vec<StepProfile>>,
}

// SAFETY: the runtime's only non-`Send` part is the arena's base pointer; the arena is owned by `run_impl`, which
// blocks in `Parallel::install` until the pool has finished with it, so no other thread touches it meanwhile.
unsafe impl Send for SendRun<'_, '_, '_> {}

/// A kernel below this many elements read runs on the caller's thread: the helpers in [`crate::parallel`] would
/// not split it anyway (they split from two chunks of [`MIN_CHUNK`] up).
const THREADED_ELEMS: usize = 2 * MIN_CHUNK;

/// The state of one run.
struct Runtime<'a> {
    exec: &'a CpuExecutable,
    env: Vec<Slot>,
    /// The arena's first element. Planned values are disjoint while live, so slices of different live values
    /// never alias.
    base: *mut f32,
    /// Whether the run is inside the pool: kernels then split their work over its threads.
    threaded: bool,
}

/// How a kernel runs outside the pool: inline, on the caller's thread.
static SINGLE: Parallel = Parallel::single();

impl Runtime<'_> {
    /// The threads the kernel now running may use.
    fn par(&self) -> &Parallel {
        if self.threaded {
            &self.exec.parallel
        } else {
            &SINGLE
        }
    }

    /// The f32 element count of a computed value (0 when it is none).
    fn numel(&self, v: ValueId) -> usize {
        match &self.env[v.index()] {
            Slot::Arena => self.exec.slots[&v].1.iter().product(),
            Slot::Heap(Value::Tensor(t)) => t.shape().iter().product(),
            _ => 0,
        }
    }

    /// Whether `step` has enough work to gain from threads (read from the shapes of this run): a matrix product
    /// or convolution of at least the `gemm` crate's own threading threshold of multiply-adds, any other kernel
    /// reading at least [`THREADED_ELEMS`] elements. Reference fallbacks and tensor kernels run single-threaded.
    fn wants_threads(&self, step: &Step) -> bool {
        let macs = |k: &Kernel| -> Option<usize> {
            match k {
                Kernel::MatMul { a, b } => {
                    let (ash, bsh) = (self.shape_of(*a), self.shape_of(*b));
                    let out: usize = linalg::matmul_shape(&ash, &bsh).ok()?.iter().product();
                    Some(out * ash.last().copied().unwrap_or(0))
                }
                // `m·k` elements of A times the `n` columns of op(B).
                Kernel::Gemm { a, b, .. } => {
                    let n = match b {
                        GemmB::Packed(_, [_, n]) => *n,
                        GemmB::Value(v, trans_b) => {
                            let s = self.shape_of(*v);
                            *if *trans_b { s.first() } else { s.get(1) }?
                        }
                    };
                    Some(self.numel(*a) * n)
                }
                Kernel::Conv { x, w, attrs, .. } => {
                    let ws = match w {
                        Param::Const(_, s) => s.clone(),
                        Param::Value(v) => self.shape_of(*v),
                    };
                    let geom = ConvGeom::new(&self.shape_of(*x), &ws, attrs).ok()?;
                    let out: usize = geom.out_shape.iter().product();
                    Some(out * ws.iter().skip(1).product::<usize>())
                }
                _ => None,
            }
        };
        let (StepKind::Kernel(k), StepPlace::Own) = (&step.kind, &step.place) else {
            return false;
        };
        let k = match k {
            Kernel::Fused { inner, .. } => &**inner,
            Kernel::Tensor(_) => return false,
            k => k,
        };
        match macs(k) {
            Some(m) => m >= gemm::get_threading_threshold(),
            None => step.reads.iter().map(|&v| self.numel(v)).sum::<usize>() >= THREADED_ELEMS,
        }
    }

    fn name(&self, v: ValueId) -> &str {
        &self.exec.graph.value(v).name
    }

    /// The shape of a computed tensor value (empty when it is not one).
    fn shape_of(&self, v: ValueId) -> Vec<usize> {
        match &self.env[v.index()] {
            Slot::Arena => self.exec.slots[&v].1.clone(),
            Slot::Heap(Value::Tensor(t)) => t.shape().to_vec(),
            _ => Vec::new(),
        }
    }

    /// The profile record of `step`, just run in `seconds` (its inputs and outputs are still live).
    fn step_profile(&self, step: &Step, seconds: f64) -> StepProfile {
        let shape = step
            .outputs
            .first()
            .map_or_else(Vec::new, |&o| self.shape_of(o));
        let out_len = shape.iter().product::<usize>() as f64;
        let inner = |k: &Kernel| -> f64 {
            match k {
                // 2·(output elements)·(reduction length): the last dim of A, or of op(A) for a Gemm.
                Kernel::MatMul { a, .. } => self.shape_of(*a).last().copied().unwrap_or(0) as f64,
                Kernel::Gemm { a, trans_a, .. } => {
                    let s = self.shape_of(*a);
                    let k = if *trans_a { s.first() } else { s.last() };
                    k.copied().unwrap_or(0) as f64
                }
                Kernel::Conv { w, .. } => {
                    let ws = match w {
                        Param::Const(_, s) => s.clone(),
                        Param::Value(v) => self.shape_of(*v),
                    };
                    ws.iter().skip(1).product::<usize>() as f64
                }
                _ => 0.0,
            }
        };
        let k = match &step.kind {
            StepKind::Kernel(Kernel::Fused { inner: k, .. }) => inner(k),
            StepKind::Kernel(k) => inner(k),
            StepKind::Fallback(..) => 0.0,
        };
        StepProfile {
            op: step.label.clone(),
            node: step.node.clone(),
            shape,
            flops: 2.0 * out_len * k,
            seconds,
        }
    }

    /// An f32 input with its shape.
    fn f32_in(&self, v: ValueId) -> Result<(&[f32], Vec<usize>), ExecError> {
        match &self.env[v.index()] {
            Slot::Heap(Value::Tensor(t)) => {
                let s = t.as_slice::<f32>().map_err(|_| {
                    ExecError::new(format!(
                        "`{}` should be f32, got {}",
                        self.name(v),
                        t.dtype()
                    ))
                })?;
                Ok((s, t.shape().to_vec()))
            }
            Slot::Arena => {
                let (off, shape) = &self.exec.slots[&v];
                let len = shape.iter().product();
                // SAFETY: the plan gives every live value its own `len` elements inside the arena.
                Ok((
                    unsafe { std::slice::from_raw_parts(self.base.add(*off), len) },
                    shape.clone(),
                ))
            }
            Slot::Heap(_) => Err(ExecError::new(format!(
                "`{}` should be a tensor",
                self.name(v)
            ))),
            Slot::Empty => Err(ExecError::new(format!(
                "value `{}` is read before it is computed",
                self.name(v)
            ))),
        }
    }

    /// A value as a run-time value (arena tensors are copied out).
    fn value(&self, v: ValueId) -> Result<Value, ExecError> {
        match &self.env[v.index()] {
            Slot::Heap(val) => Ok(val.clone()),
            Slot::Arena => {
                let (data, shape) = self.f32_in(v)?;
                let t = Tensor::from_vec(shape, data.to_vec())
                    .map_err(|e| ExecError::new(e.to_string()))?;
                Ok(Value::Tensor(Arc::new(t)))
            }
            Slot::Empty => Err(ExecError::new(format!(
                "value `{}` is read before it is computed",
                self.name(v)
            ))),
        }
    }

    /// Runs `f` on an output buffer of `shape` for value `out`, placed in the arena when planned.
    fn write(
        &mut self,
        out: ValueId,
        shape: Vec<usize>,
        f: impl FnOnce(&Self, &mut [f32]) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        let len = jiuzhou_ir::tensor::checked_numel(&shape, DType::F32)
            .map_err(|e| ExecError::new(e.to_string()))?;
        if let Some((off, planned)) = self.exec.slots.get(&out) {
            if *planned != shape {
                return Err(ExecError::new(format!(
                    "`{}` has shape {shape:?}, but {planned:?} was planned",
                    self.name(out)
                )));
            }
            // SAFETY: the plan reserves `len` elements at `off` for `out`, disjoint from every value live now
            // (the inputs of this step included).
            let buf = unsafe { std::slice::from_raw_parts_mut(self.base.add(*off), len) };
            f(self, buf)?;
            self.env[out.index()] = Slot::Arena;
        } else {
            let mut buf = vec![0.0f32; len];
            f(self, &mut buf)?;
            let t = Tensor::from_vec(shape, buf).map_err(|e| ExecError::new(e.to_string()))?;
            self.env[out.index()] = Slot::Heap(Value::Tensor(Arc::new(t)));
        }
        Ok(())
    }

    /// Runs `f` on the f32 buffer of the computed value `out`, in place (the arena slot, or the heap tensor).
    fn modify(
        &mut self,
        out: ValueId,
        f: impl FnOnce(&Self, &mut [f32], &[usize]) -> Result<(), ExecError>,
    ) -> Result<(), ExecError> {
        match std::mem::replace(&mut self.env[out.index()], Slot::Empty) {
            Slot::Arena => {
                self.env[out.index()] = Slot::Arena;
                let exec = self.exec;
                let (off, shape) = &exec.slots[&out];
                let len = shape.iter().product();
                // SAFETY: the plan reserves `len` elements at `off` for `out`, disjoint from every other live value.
                let buf = unsafe { std::slice::from_raw_parts_mut(self.base.add(*off), len) };
                f(&*self, buf, shape)
            }
            Slot::Heap(Value::Tensor(t)) => {
                let mut t = Arc::unwrap_or_clone(t);
                let shape = t.shape().to_vec();
                let data = t
                    .as_mut_vec::<f32>()
                    .map_err(|e| ExecError::new(e.to_string()))?;
                f(&*self, data, &shape)?;
                self.env[out.index()] = Slot::Heap(Value::Tensor(Arc::new(t)));
                Ok(())
            }
            _ => Err(ExecError::new(format!(
                "`{}` was not computed as an f32 tensor",
                self.name(out)
            ))),
        }
    }

    /// A Concat whose output is planned with its in-place inputs inside it ([`StepPlace::Concat`]): copies the
    /// other inputs (and any in-place one that is not in the arena after all) into their slices.
    fn concat_in_place(
        &mut self,
        out: ValueId,
        parts: &[(ValueId, usize, usize, bool)],
    ) -> Result<(), ExecError> {
        let exec = self.exec;
        let (off, shape) = exec.slots.get(&out).ok_or_else(|| {
            ExecError::new("internal error: an in-place Concat output is not planned")
        })?;
        let total: usize = shape.iter().product();
        for &(x, at, len, in_place) in parts {
            if in_place && matches!(self.env[x.index()], Slot::Arena) {
                continue;
            }
            let (data, _) = self.f32_in(x)?;
            if data.len() != len || at + len > total {
                return Err(ExecError::new(format!(
                    "Concat input `{}` has {} elements, {len} were planned",
                    self.name(x),
                    data.len()
                )));
            }
            // SAFETY: `[off + at, off + at + len)` is this input's slice of the output's slot. The source is on
            // the heap or is another value's memory: a value live now, so outside that slice (the plan places a
            // value inside the output only at its own slice).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off + at), len) };
        }
        self.env[out.index()] = Slot::Arena;
        Ok(())
    }

    fn kernel(&mut self, k: &Kernel, out: ValueId) -> Result<(), ExecError> {
        match k {
            Kernel::MatMul { a, b } => {
                let shape = {
                    let (_, ash) = self.f32_in(*a)?;
                    let (_, bsh) = self.f32_in(*b)?;
                    linalg::matmul_shape(&ash, &bsh)?
                };
                self.write(out, shape, |rt, buf| {
                    let (ad, ash) = rt.f32_in(*a)?;
                    let (bd, bsh) = rt.f32_in(*b)?;
                    linalg::matmul(ad, &ash, bd, &bsh, buf, rt.par())
                })
            }
            Kernel::Gemm {
                a,
                b,
                c,
                alpha,
                beta,
                trans_a,
                epi,
            } => {
                let run = |rt: &Self, buf: Option<&mut [f32]>| -> Result<Vec<usize>, ExecError> {
                    let (ad, ash) = rt.f32_in(*a)?;
                    let (bd, bsh, trans_b) = match b {
                        GemmB::Packed(p, s) => (&p[..], s.to_vec(), false),
                        GemmB::Value(v, t) => {
                            let (d, s) = rt.f32_in(*v)?;
                            (d, s, *t)
                        }
                    };
                    let cv = match c {
                        Some(c) => Some(rt.f32_in(*c)?),
                        None => None,
                    };
                    let args = GemmArgs {
                        a: ad,
                        ash: &ash,
                        trans_a: *trans_a,
                        b: bd,
                        bsh: &bsh,
                        trans_b,
                        c: cv.as_ref().map(|(d, s)| (*d, &s[..])),
                        alpha: *alpha,
                        beta: *beta,
                    };
                    let shape = linalg::gemm_shape(&args)?;
                    if let Some(buf) = buf {
                        linalg::gemm(&args, buf, *epi, rt.par())?;
                    }
                    Ok(shape)
                };
                let shape = run(self, None)?;
                self.write(out, shape, |rt, buf| run(rt, Some(buf)).map(|_| ()))
            }
            Kernel::Conv {
                x,
                w,
                packed,
                bias,
                residual,
                attrs,
                epi,
            } => {
                let param =
                    |rt: &Self, p: &Param| -> Result<(Arc<Vec<f32>>, Vec<usize>), ExecError> {
                        match p {
                            Param::Const(d, s) => Ok((d.clone(), s.clone())),
                            Param::Value(v) => {
                                let (d, s) = rt.f32_in(*v)?;
                                Ok((Arc::new(d.to_vec()), s))
                            }
                        }
                    };
                // Weights read at run time are copied once per run (rare: ONNX convs have constant weights).
                let (wd, ws) = param(self, w)?;
                let bd = match bias {
                    Some(b) => Some(param(self, b)?.0),
                    None => None,
                };
                let geom = {
                    let (_, xs) = self.f32_in(*x)?;
                    ConvGeom::new(&xs, &ws, attrs)?
                };
                self.write(out, geom.out_shape.clone(), |rt, buf| {
                    let (xd, _) = rt.f32_in(*x)?;
                    let res = match residual {
                        Some(r) => {
                            let (d, s) = rt.f32_in(*r)?;
                            if s != geom.out_shape {
                                return Err(ExecError::new(format!(
                                    "a fused residual of shape {s:?} does not match the Conv output {:?}",
                                    geom.out_shape
                                )));
                            }
                            Some(d)
                        }
                        None => None,
                    };
                    linalg::conv(
                        &geom,
                        xd,
                        &wd,
                        packed.as_deref(),
                        bd.as_deref().map(|b| &b[..]),
                        res,
                        buf,
                        *epi,
                        rt.par(),
                    )
                })
            }
            Kernel::Unary { f, x } => {
                let shape = self.f32_in(*x)?.1;
                self.write(out, shape, |rt, buf| {
                    let (xd, _) = rt.f32_in(*x)?;
                    if xd.len() != buf.len() {
                        return Err(ExecError::new("unary buffers differ in length"));
                    }
                    let f = *f;
                    rt.par().for_each_chunk(buf, 1, MIN_CHUNK, |start, dst| {
                        let src = &xd[start..start + dst.len()];
                        // SAFETY: both slices hold `dst.len()` elements.
                        unsafe { f(src.as_ptr(), dst.as_mut_ptr(), dst.len()) };
                    });
                    Ok(())
                })
            }
            Kernel::Affine {
                x,
                scale,
                shift,
                epi,
            } => {
                let shape = self.f32_in(*x)?.1;
                if shape.len() < 2 || shape[1] != scale.len() {
                    return Err(ExecError::new(format!(
                        "BatchNormalization: input {shape:?} does not have {} channels",
                        scale.len()
                    )));
                }
                let inner: usize = shape[2..].iter().product();
                self.write(out, shape, |rt, buf| {
                    let (xd, _) = rt.f32_in(*x)?;
                    if xd.len() != buf.len() {
                        return Err(ExecError::new(
                            "BatchNormalization buffers differ in length",
                        ));
                    }
                    let split = buf.len() >= 2 * MIN_CHUNK;
                    // One (image, channel) plane per task.
                    rt.par().for_each_item(buf, inner, split, |k, dst| {
                        let src = &xd[k * inner..][..inner];
                        let c = k % scale.len();
                        let (a, b) = (scale[c], shift[c]);
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d = v * a + b;
                        }
                        if epi.relu {
                            dst.iter_mut().for_each(|v| *v = v.max(0.0));
                        }
                    });
                    Ok(())
                })
            }
            Kernel::Fused {
                inner,
                bias,
                residual,
                act,
            } => {
                self.kernel(inner, out)?;
                self.modify(out, |rt, buf, shape| {
                    for v in [bias, residual].into_iter().flatten() {
                        let (d, s) = rt.f32_in(*v)?;
                        fused::add(buf, shape, d, &s)?;
                    }
                    // Per element: chunks of the output are independent.
                    rt.par()
                        .try_for_each_chunk(buf, 1, MIN_CHUNK, |_, c| fused::activate(c, act))
                })
            }
            Kernel::Native(n) => {
                let shape = {
                    let shapes = n
                        .inputs
                        .iter()
                        .map(|&v| self.f32_in(v).map(|x| x.1))
                        .collect::<Result<Vec<_>, _>>()?;
                    let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
                    n.kernel.out_shape(&refs)?
                };
                self.write(out, shape, |rt, buf| {
                    let ins = n
                        .inputs
                        .iter()
                        .map(|&v| rt.f32_in(v))
                        .collect::<Result<Vec<_>, _>>()?;
                    let views: Vec<In<'_>> =
                        ins.iter().map(|(d, s)| In { data: d, shape: s }).collect();
                    n.kernel.run_par(&views, buf, rt.par())
                })
            }
            Kernel::Tensor(t) => {
                let ins = t
                    .inputs
                    .iter()
                    .map(|v| match v {
                        Some(v) => match self.value(*v)? {
                            Value::Tensor(t) => Ok(Some(t)),
                            _ => Err(ExecError::new(format!(
                                "`{}` should be a tensor",
                                self.name(*v)
                            ))),
                        },
                        None => Ok(None),
                    })
                    .collect::<Result<Vec<_>, ExecError>>()?;
                let y = t.kernel.run(&ins)?;
                self.env[out.index()] = Slot::Heap(Value::Tensor(Arc::new(y)));
                Ok(())
            }
            Kernel::Binary { k, a, b } => {
                let shape = {
                    let (_, ash) = self.f32_in(*a)?;
                    let (_, bsh) = self.f32_in(*b)?;
                    elementwise::binary_shape(&ash, &bsh)?
                };
                self.write(out, shape, |rt, buf| {
                    let (ad, ash) = rt.f32_in(*a)?;
                    let (bd, bsh) = rt.f32_in(*b)?;
                    elementwise::binary(k, ad, &ash, bd, &bsh, buf, rt.par())
                })
            }
        }
    }
}

impl Executable for CpuExecutable {
    fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
        // The run moves into the pool by itself when a kernel is big enough (`run_impl`).
        self.run_impl(inputs, None, None)
            .map_err(|e| RunError::Exec(e.0))
    }

    fn run_profiled(&self, inputs: Vec<Value>) -> Result<(Vec<Value>, Vec<StepProfile>), RunError> {
        let mut profile = Vec::with_capacity(self.steps.len());
        let outputs = self
            .run_impl(inputs, None, Some(&mut profile))
            .map_err(|e| RunError::Exec(e.0))?;
        Ok((outputs, profile))
    }

    fn target_name(&self) -> &str {
        "cpu"
    }

    fn run_observed(
        &self,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, RunError> {
        self.run_impl(inputs, Some(observer), None)
            .map_err(|e| RunError::Exec(e.0))
    }
}
