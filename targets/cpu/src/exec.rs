//! The compiled executable: a launch plan of kernels over an arena, with explicit reference fallbacks.
//!
//! The arena's layout is a [`MemPlan`]. A graph whose planned intermediates all have static shapes gets one plan
//! at compile time. A graph with values whose shapes depend on symbolic dims bound by its inputs
//! (`x: f32[N,64]`, then `h: f32[N,128]`) gets one per *binding* of those dims: a run reads the binding off its
//! inputs and computes the plan from the same liveness intervals (or finds it among the last
//! [`BOUND_PLANS`] bindings), then runs exactly as a static graph does. Values whose shapes depend on data
//! (symbols that no input binds, such as NonZero's count) stay on the heap.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

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
    /// Whether the kernel has enough work to gain from threads, decided at compile time when every shape it
    /// depends on is static ([`wants_threads`]); `None`: decided per run from the shapes of the run.
    threads: Option<bool>,
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

/// Where a planned value lives in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placed {
    /// Offset in f32 elements.
    off: usize,
    /// The shape the plan reserved room for.
    shape: Vec<usize>,
    /// The shape was derived from a binding of symbolic dims. Inference can be coarser about symbolic dims than
    /// the data (two symbols broadcast to the first), so a run whose value comes out with another shape computes
    /// it on the heap; a static shape that does not hold is an error.
    derived: bool,
}

/// A memory plan: where each planned value lives, the arena size and how steps share memory.
#[derive(Debug, PartialEq, Eq)]
struct MemPlan {
    slots: HashMap<ValueId, Placed>,
    /// In f32 elements.
    arena_len: usize,
    /// How each step's output shares memory with its inputs ([`place_values`]), by step.
    places: Vec<StepPlace>,
}

/// What a memory plan is computed from: the values the arena may hold and their lifetimes.
struct PlanSource {
    /// `(value, declared shape, defining step)`: f32 outputs of kernel steps, not graph outputs, whose dims are
    /// known or bound by the graph's inputs.
    candidates: Vec<(ValueId, Vec<Dim>, usize)>,
    /// The last step that reads each value.
    last: HashMap<ValueId, usize>,
}

/// How many bindings of the symbolic dims keep their memory plan: a run with one of the last this many bindings
/// reuses its plan, others compute one (microseconds: liveness intervals are kept from compile time).
pub const BOUND_PLANS: usize = 4;

/// The symbolic dims that size planned values, and the plans of the last bindings.
struct Bound {
    /// The symbols, in key order.
    syms: Vec<String>,
    /// Where each is read: `(input position, axis, symbol index)`.
    sources: Vec<(usize, usize, usize)>,
    /// Every input that binds a symbol: `(input position, declared rank, declared type)`.
    declared: Vec<(usize, usize, String)>,
    /// The plans of the last [`BOUND_PLANS`] bindings (each the symbols' sizes in `syms` order), latest first.
    cache: Mutex<VecDeque<(Vec<usize>, Arc<MemPlan>)>>,
}

/// How the arena served a run ([`CpuExecutable::last_run_arena`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaUse {
    /// The bytes the run's plan laid out (for a graph with symbolic dims, that of the run's binding).
    pub arena_bytes: usize,
    /// Values the run computed in the arena (views and in-place Concat inputs included).
    pub in_arena: usize,
    /// f32 values kernels computed on the heap: graph outputs, values without a plannable shape, and planned
    /// values whose shape came out other than the plan derived from the binding.
    pub on_heap: usize,
}

/// The arena kept between runs, and how the last run used it.
#[derive(Default)]
struct ArenaCache {
    arena: Vec<f32>,
    last: Option<ArenaUse>,
}

/// A graph compiled for the CPU.
pub struct CpuExecutable {
    graph: Arc<Graph>,
    steps: Vec<Step>,
    fallback_ops: Vec<FallbackOp>,
    /// The plan of the values with static shapes: the plan of every run when nothing planned has a symbolic
    /// dim (`bound` is `None`).
    static_plan: Arc<MemPlan>,
    plan_source: PlanSource,
    /// The symbolic dims that size planned values, when there are any: each run plans for its binding.
    bound: Option<Bound>,
    /// The arena of the last finished run, reused by the next one (no allocation, zeroing or page faults per run).
    arena_cache: Mutex<ArenaCache>,
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
    bound_f32_shape(graph, id, &HashMap::new())
}

/// The shape of an f32 value with every dim known or bound in `binding`.
fn bound_f32_shape(
    graph: &Graph,
    id: ValueId,
    binding: &HashMap<&str, usize>,
) -> Option<Vec<usize>> {
    match &graph.value(id).ty {
        ValueType::Tensor(t) if t.dtype == DType::F32 => t
            .shape
            .as_ref()?
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n),
                Dim::Sym(s) => binding.get(s.as_str()).copied(),
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

/// The arena offsets of the `planned` values `(value, shape, defining step)`, the arena size, in f32 elements, and
/// how each step shares memory; `last` is each value's last reading step, `shape_of` the f32 shape of any value
/// (planned or not) when it is known. `None` when the arena would not fit in `usize`.
///
/// Values may share memory. A view step (Reshape, Flatten, Squeeze, Unsqueeze, Identity: [`Placement::View`])
/// makes its output the input's memory; a Concat along an axis with one position before it
/// ([`Placement::Concat`]) has each of its inputs computed straight into its slice of the output. Each value is
/// placed inside at most one other (cycles are refused), so the values form trees; a tree takes one slot of its
/// root's size, live from the first definition to the last read of any of its values, and every value sits at
/// its offset inside it. Values are never written after their step, so sharing is safe: the sharing steps
/// record it in [`MemPlan::places`] and skip their copies (an input that turns out not to be in the arena at run time,
/// such as a fault-injected one, is copied as before).
fn place_values(
    steps: &[Step],
    planned: &[(ValueId, Vec<usize>, usize)],
    last: &HashMap<ValueId, usize>,
    fault_steps: &HashSet<usize>,
    shape_of: &dyn Fn(ValueId) -> Option<Vec<usize>>,
) -> Option<(HashMap<ValueId, usize>, usize, Vec<StepPlace>)> {
    let mut places = vec![StepPlace::Own; steps.len()];
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
    for (si, step) in steps.iter().enumerate() {
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
                    && shape_of(x).map(|s| s.iter().product::<usize>())
                        == Some(planned[index[&out]].1.iter().product())
                {
                    parent.insert(out, (x, 0));
                    places[si] = StepPlace::View(x);
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
                    let Some(len) = shape_of(x).map(|s| s.iter().product::<usize>()) else {
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
                    let Some(next) = at.checked_add(len) else {
                        break;
                    };
                    at = next;
                }
                if parts.len() != n.inputs.len() || at != shape.iter().product::<usize>() {
                    continue;
                }
                for (r, at) in moved {
                    parent.insert(r, (out, at));
                }
                places[si] = StepPlace::Concat(parts);
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
    let (offsets, arena_len) = plan::plan(&intervals)?;
    let slots = planned
        .iter()
        .map(|(v, _, _)| {
            // Inside its root's slot: below the arena's (checked) size.
            let (mut at, mut u) = (0, *v);
            while let Some(&(p, off)) = parent.get(&u) {
                at += off;
                u = p;
            }
            (*v, offsets[tree[&u]] + at)
        })
        .collect();
    Some((slots, arena_len, places))
}

/// The memory plan for `binding` (symbol → size; empty for the static plan) of the candidates of `source` whose
/// shapes it determines. Errors when a size overflows.
fn mem_plan(
    g: &Graph,
    steps: &[Step],
    source: &PlanSource,
    fault_steps: &HashSet<usize>,
    binding: &HashMap<&str, usize>,
) -> Result<MemPlan, ExecError> {
    let describe = || {
        let mut b: Vec<String> = binding.iter().map(|(k, v)| format!("{k}={v}")).collect();
        b.sort();
        b.join(", ")
    };
    let mut planned: Vec<(ValueId, Vec<usize>, usize)> = Vec::new();
    let mut derived: HashSet<ValueId> = HashSet::new();
    for (v, dims, si) in &source.candidates {
        let Some(shape) = dims
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n),
                Dim::Sym(s) => binding.get(s.as_str()).copied(),
            })
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        let len = jiuzhou_ir::tensor::checked_numel(&shape, DType::F32).map_err(|e| {
            ExecError::new(format!(
                "`{}` would have shape {shape:?} for {}: {e}",
                g.value(*v).name,
                describe()
            ))
        })?;
        if len == 0 {
            continue;
        }
        if dims.iter().any(|d| matches!(d, Dim::Sym(_))) {
            derived.insert(*v);
        }
        planned.push((*v, shape, *si));
    }
    let shape_of = |v: ValueId| bound_f32_shape(g, v, binding);
    let (offsets, arena_len, places) =
        place_values(steps, &planned, &source.last, fault_steps, &shape_of)
            .filter(|(_, len, _)| len.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
            .ok_or_else(|| {
                ExecError::new(format!(
                    "the intermediate tensors for {} do not fit in memory",
                    describe()
                ))
            })?;
    let slots = planned
        .into_iter()
        .map(|(v, shape, _)| {
            let placed = Placed {
                off: offsets[&v],
                shape,
                derived: derived.contains(&v),
            };
            (v, placed)
        })
        .collect();
    Ok(MemPlan {
        slots,
        arena_len,
        places,
    })
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
                        threads: None,
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
                        threads: None,
                    });
                }
            }
        }
        // Constant conv weights are final now (BatchNorm folded in): pack them once for the GEMM kernel, which then
        // replaces them (only their shape is kept).
        for step in &mut steps {
            if let StepKind::Kernel(Kernel::Conv {
                x,
                w: Param::Const(wd, ws),
                packed,
                attrs,
                ..
            }) = &mut step.kind
                && let Ok(group) = usize::try_from(attrs.group)
            {
                let winograd = linalg::winograd_tile(ws, attrs, static_f32_shape(g, *x).as_deref());
                *packed =
                    linalg::PackedConv::new(wd, ws, group, attrs.strides.as_deref(), winograd)
                        .map(Arc::new);
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
        // The arena holds the f32 outputs of kernel steps that are not graph outputs, with shapes known at
        // compile time or determined by the symbolic dims of the graph's inputs.
        let mut input_syms: Vec<String> = Vec::new();
        let mut sources: Vec<(usize, usize, String)> = Vec::new();
        let mut declared: Vec<(usize, usize, String)> = Vec::new();
        for (i, &v) in g.inputs.iter().enumerate() {
            if let ValueType::Tensor(t) = &g.value(v).ty
                && let Some(dims) = &t.shape
            {
                for (axis, d) in dims.iter().enumerate() {
                    if let Dim::Sym(s) = d {
                        sources.push((i, axis, s.clone()));
                        if !input_syms.contains(s) {
                            input_syms.push(s.clone());
                        }
                    }
                }
                if dims.iter().any(|d| matches!(d, Dim::Sym(_))) {
                    declared.push((i, dims.len(), g.value(v).ty.to_string()));
                }
            }
        }
        let mut candidates: Vec<(ValueId, Vec<Dim>, usize)> = Vec::new();
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
                if let ValueType::Tensor(t) = &g.value(o).ty
                    && t.dtype == DType::F32
                    && let Some(dims) = &t.shape
                    && dims.iter().all(|d| match d {
                        Dim::Known(_) => true,
                        Dim::Sym(s) => input_syms.contains(s),
                    })
                {
                    candidates.push((o, dims.clone(), si));
                }
            }
        }
        let plan_source = PlanSource { candidates, last };
        let static_plan = Arc::new(mem_plan(
            g,
            &steps,
            &plan_source,
            &fault_steps,
            &HashMap::new(),
        )?);
        let mut syms: Vec<String> = plan_source
            .candidates
            .iter()
            .flat_map(|(_, dims, _)| dims.iter())
            .filter_map(|d| match d {
                Dim::Sym(s) => Some(s.clone()),
                Dim::Known(_) => None,
            })
            .collect();
        syms.sort();
        syms.dedup();
        let symbolic_values = plan_source
            .candidates
            .iter()
            .filter(|(_, dims, _)| dims.iter().any(|d| matches!(d, Dim::Sym(_))))
            .count();
        let bound = (!syms.is_empty()).then(|| Bound {
            sources: sources
                .iter()
                .filter_map(|(i, axis, s)| {
                    let k = syms.iter().position(|x| x == s)?;
                    Some((*i, *axis, k))
                })
                .collect(),
            syms,
            declared,
            cache: Mutex::new(VecDeque::new()),
        });
        // The thread decision of every step whose shapes are all static.
        let static_info = |v: ValueId| -> Option<(Vec<usize>, usize)> {
            match &g.value(v).ty {
                ValueType::Tensor(t) => {
                    let s = t
                        .shape
                        .as_ref()?
                        .iter()
                        .map(Dim::known)
                        .collect::<Option<Vec<usize>>>()?;
                    let n = s.iter().product();
                    Some((s, n))
                }
                _ => Some((Vec::new(), 0)),
            }
        };
        for step in &mut steps {
            step.threads = match &step.kind {
                StepKind::Kernel(k) => wants_threads(k, &step.reads, &static_info),
                StepKind::Fallback(..) => Some(false),
            };
        }
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
            static_plan,
            plan_source,
            bound,
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
            peak_arena_bytes = exec.peak_arena_bytes(),
            symbolic_values,
            threads = exec.parallel.threads(),
            "cpu target: compiled"
        );
        Ok(exec)
    }

    /// The nodes that run the reference implementation, in graph order.
    pub fn fallback_ops(&self) -> &[FallbackOp] {
        &self.fallback_ops
    }

    /// The size of the arena holding the planned intermediate tensors, in bytes, as laid out at compile time.
    ///
    /// For a graph whose intermediates have symbolic dims ([`CpuExecutable::is_planned_per_binding`]) this is the
    /// *static part*: the arena of the intermediates whose shapes are static, planned on their own. A run plans
    /// the arena again for the sizes its inputs bind, with the symbolic intermediates too, so the arena of a run
    /// may be larger or smaller than this: [`CpuExecutable::arena_bytes_for`] gives it for a binding,
    /// [`CpuExecutable::last_run_arena`] for the last run.
    pub fn peak_arena_bytes(&self) -> usize {
        self.static_plan.arena_len * 4
    }

    /// Whether planned intermediates have symbolic dims, so that each run plans the arena for its binding of them.
    pub fn is_planned_per_binding(&self) -> bool {
        self.bound.is_some()
    }

    /// How many Conv steps run each convolution kernel: `winograd`, `direct` or `packed_gemm` (weights packed at
    /// compile time for that kernel), `depthwise`, or `gemm` (the `gemm`-crate path: weights that are not constant,
    /// or a CPU without AVX2 and FMA).
    pub fn conv_kernels(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for step in &self.steps {
            if let StepKind::Kernel(Kernel::Conv {
                w, packed, attrs, ..
            }) = &step.kind
            {
                let ws = match w {
                    Param::Const(_, ws) => Some(ws.clone()),
                    Param::Value(v) => static_f32_shape(&self.graph, *v),
                };
                let depthwise = ws.is_some_and(|ws| {
                    usize::try_from(attrs.group).is_ok_and(|g| linalg::depthwise_weights(&ws, g))
                });
                let name = match packed {
                    Some(p) => p.kernel_name(),
                    None if depthwise => "depthwise",
                    None => "gemm",
                };
                *counts.entry(name).or_default() += 1;
            }
        }
        counts
    }

    /// The symbolic dims that size planned intermediates, sorted (empty for a static plan).
    pub fn plan_symbols(&self) -> &[String] {
        self.bound.as_ref().map_or(&[], |b| &b.syms[..])
    }

    /// The arena size in bytes of a run whose inputs bind the symbolic dims to `dims` (`(symbol, size)`; every
    /// symbol of [`CpuExecutable::plan_symbols`] must be given). Errors when a symbol is missing or the arena
    /// overflows.
    pub fn arena_bytes_for(&self, dims: &[(&str, usize)]) -> Result<usize, ExecError> {
        let Some(bound) = &self.bound else {
            return Ok(self.peak_arena_bytes());
        };
        let binding: HashMap<&str, usize> = dims.iter().copied().collect();
        if let Some(s) = bound
            .syms
            .iter()
            .find(|s| !binding.contains_key(s.as_str()))
        {
            return Err(ExecError::new(format!(
                "no size given for symbolic dim `{s}`"
            )));
        }
        let plan = mem_plan(
            &self.graph,
            &self.steps,
            &self.plan_source,
            &self.fault_steps,
            &binding,
        )?;
        Ok(plan.arena_len * 4)
    }

    /// How the last finished run used the arena (`None` before the first).
    pub fn last_run_arena(&self) -> Option<ArenaUse> {
        self.arena_cache.lock().ok()?.last
    }

    /// The number of threads kernels run on (1: the caller's thread only).
    pub fn threads(&self) -> usize {
        self.parallel.threads()
    }

    /// The number of view steps (reshapes) whose output is their input's memory, copying nothing (in the plan
    /// laid out at compile time: for a graph planned per binding, that of its static part).
    pub fn views(&self) -> usize {
        self.static_plan
            .places
            .iter()
            .filter(|p| matches!(p, StepPlace::View(_)))
            .count()
    }

    /// The number of Concat inputs computed straight into their slice of the Concat's output (in the plan laid
    /// out at compile time).
    pub fn concat_inputs_in_place(&self) -> usize {
        self.static_plan
            .places
            .iter()
            .map(|p| match p {
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
        let plan = self.plan_for(&inputs)?;
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
        // An arena larger than the plan needs serves too (runs alternating between bindings keep the largest),
        // unless it is more than four times as large.
        let mut arena = self
            .arena_cache
            .lock()
            .map(|mut a| std::mem::take(&mut a.arena))
            .unwrap_or_default();
        if arena.len() < plan.arena_len || arena.len() / 4 > plan.arena_len {
            drop(arena);
            arena = alloc_zeroed(plan.arena_len)
                .map_err(|e| ExecError::new(format!("the arena: {e}")))?;
        }
        let mut rt = Runtime {
            exec: self,
            plan: &plan,
            env,
            base: arena.as_mut_ptr(),
            threaded: false,
            off_plan: false,
            in_arena: 0,
            on_heap: 0,
        };
        // The run starts on the caller's thread, every kernel single-threaded. At the first step big enough to
        // gain from threads it moves into the pool (one hand-over per run) and stays there: small graphs (a
        // transformer layer of a few-microsecond kernels) never pay for waking a worker.
        let mut si = 0;
        while si < self.steps.len() {
            if self.parallel.is_parallel() && rt.wants_threads(si) {
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
                    self.keep_arena(arena, rt.arena_use());
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
        self.keep_arena(arena, rt.arena_use());
        out
    }

    /// The memory plan of a run with `inputs`: the static plan, or the plan of the binding of the symbolic dims
    /// the inputs make (from the cache of the last [`BOUND_PLANS`] bindings, else computed and cached).
    fn plan_for(&self, inputs: &[Value]) -> Result<Arc<MemPlan>, ExecError> {
        let Some(bound) = &self.bound else {
            return Ok(self.static_plan.clone());
        };
        let g = &*self.graph;
        for &(i, rank, ref declared) in &bound.declared {
            let ok = matches!(&inputs[i], Value::Tensor(t) if t.rank() == rank);
            if !ok {
                return Err(ExecError::new(format!(
                    "input `{}` is {}, but the graph declares {declared}",
                    g.value(g.inputs[i]).name,
                    jiuzhou_runtime::describe(&inputs[i])
                )));
            }
        }
        let mut key: Vec<Option<(usize, usize)>> = vec![None; bound.syms.len()];
        for &(i, axis, k) in &bound.sources {
            let Value::Tensor(t) = &inputs[i] else {
                unreachable!("checked above")
            };
            let n = t.shape()[axis];
            match key[k] {
                Some((m, first)) if m != n => {
                    return Err(ExecError::new(format!(
                        "symbolic dim `{}` is {m} in input `{}` but {n} in input `{}`",
                        bound.syms[k],
                        g.value(g.inputs[first]).name,
                        g.value(g.inputs[i]).name
                    )));
                }
                Some(_) => {}
                None => key[k] = Some((n, i)),
            }
        }
        let key: Vec<usize> = key
            .into_iter()
            .map(|k| k.map(|(n, _)| n))
            .collect::<Option<_>>()
            .ok_or_else(|| ExecError::new("internal error: a planned symbolic dim has no input"))?;
        if let Ok(mut cache) = bound.cache.lock()
            && let Some(pos) = cache.iter().position(|(k, _)| *k == key)
        {
            let hit = cache.remove(pos).expect("found above");
            let plan = hit.1.clone();
            cache.push_front(hit);
            return Ok(plan);
        }
        let binding: HashMap<&str, usize> = bound
            .syms
            .iter()
            .map(String::as_str)
            .zip(key.iter().copied())
            .collect();
        let started = std::time::Instant::now();
        let plan = Arc::new(mem_plan(
            g,
            &self.steps,
            &self.plan_source,
            &self.fault_steps,
            &binding,
        )?);
        let plan_us = started.elapsed().as_micros();
        let described: Vec<String> = bound
            .syms
            .iter()
            .zip(&key)
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        tracing::debug!(
            binding = %described.join(", "),
            arena_bytes = plan.arena_len * 4,
            planned_values = plan.slots.len(),
            plan_us,
            "cpu target: planned the arena for a binding of the symbolic dims"
        );
        if let Ok(mut cache) = bound.cache.lock() {
            cache.push_front((key, plan.clone()));
            cache.truncate(BOUND_PLANS);
        }
        Ok(plan)
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
        let plan = rt.plan;
        match (&step.kind, &plan.places[si]) {
            // The output is the input's memory: nothing to compute.
            (StepKind::Kernel(k), StepPlace::View(x))
                if matches!(rt.env[x.index()], Slot::Arena)
                    && rt.view_holds(k, *x, step.outputs[0]) =>
            {
                rt.env[step.outputs[0].index()] = Slot::Arena;
                rt.in_arena += 1;
            }
            (StepKind::Kernel(k), StepPlace::Concat(parts)) => {
                if !rt.concat_in_place(k, step.outputs[0], parts)? {
                    // The shapes derived from the binding do not hold: the kernel computes the output on the heap.
                    rt.off_plan = true;
                    let r = rt.kernel(k, step.outputs[0]);
                    rt.off_plan = false;
                    r?;
                }
            }
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
    fn keep_arena(&self, arena: Vec<f32>, used: ArenaUse) {
        if let Ok(mut cache) = self.arena_cache.lock() {
            cache.arena = arena;
            cache.last = Some(used);
        }
    }
}

/// `len` zeroed f32s (as `vec![0.0; len]`: fresh pages from the OS are not written twice); an error, not an
/// abort, when the allocation fails.
fn alloc_zeroed(len: usize) -> Result<Vec<f32>, ExecError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let fail = || ExecError::new(format!("cannot allocate {len} f32 elements"));
    let layout = std::alloc::Layout::array::<f32>(len).map_err(|_| fail())?;
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return Err(fail());
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `len` f32s (what `Vec` deallocates
    // with), and all-zero bytes are a valid f32.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Whether `kernel` of a step reading `reads` has enough work to gain from threads: a matrix product or
/// convolution of at least the `gemm` crate's own threading threshold of multiply-adds, any other kernel reading
/// at least [`THREADED_ELEMS`] elements; tensor kernels run single-threaded. `info` gives a value's shape and
/// element count (0 for a non-tensor); `None` when one that the answer needs is unknown.
fn wants_threads(
    kernel: &Kernel,
    reads: &[ValueId],
    info: &dyn Fn(ValueId) -> Option<(Vec<usize>, usize)>,
) -> Option<bool> {
    let shape = |v: ValueId| info(v).map(|i| i.0);
    let k = match kernel {
        Kernel::Fused { inner, .. } => &**inner,
        Kernel::Tensor(_) => return Some(false),
        k => k,
    };
    let macs: Option<usize> = match k {
        Kernel::MatMul { a, b } => {
            let (ash, bsh) = (shape(*a)?, shape(*b)?);
            linalg::matmul_shape(&ash, &bsh)
                .ok()
                .map(|out| out.iter().product::<usize>() * ash.last().copied().unwrap_or(0))
        }
        // `m·k` elements of A times the `n` columns of op(B).
        Kernel::Gemm { a, b, .. } => {
            let n = match b {
                GemmB::Packed(_, [_, n]) => Some(*n),
                GemmB::Value(v, trans_b) => {
                    let s = shape(*v)?;
                    if *trans_b { s.first() } else { s.get(1) }.copied()
                }
            };
            match n {
                Some(n) => Some(info(*a)?.1 * n),
                None => None,
            }
        }
        Kernel::Conv { x, w, attrs, .. } => {
            let ws = match w {
                Param::Const(_, s) => s.clone(),
                Param::Value(v) => shape(*v)?,
            };
            ConvGeom::new(&shape(*x)?, &ws, attrs).ok().map(|geom| {
                geom.out_shape.iter().product::<usize>() * ws.iter().skip(1).product::<usize>()
            })
        }
        _ => None,
    };
    Some(match macs {
        Some(m) => m >= gemm::get_threading_threshold(),
        None => {
            let mut elems = 0usize;
            for &v in reads {
                elems += info(v)?.1;
            }
            elems >= THREADED_ELEMS
        }
    })
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
    /// The run's memory plan.
    plan: &'a MemPlan,
    env: Vec<Slot>,
    /// The arena's first element. Planned values are disjoint while live, so slices of different live values
    /// never alias.
    base: *mut f32,
    /// Whether the run is inside the pool: kernels then split their work over its threads.
    threaded: bool,
    /// Set while a step computes its output on the heap although it is planned ([`Runtime::write`]).
    off_plan: bool,
    /// Values computed in the arena so far.
    in_arena: usize,
    /// f32 values kernels computed on the heap so far.
    on_heap: usize,
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
            Slot::Arena => self.plan.slots[&v].shape.iter().product(),
            Slot::Heap(Value::Tensor(t)) => t.shape().iter().product(),
            _ => 0,
        }
    }

    /// Whether step `si` has enough work to gain from threads ([`wants_threads`]): decided at compile time when
    /// its shapes are static, else from the shapes of this run. Steps that share their input's memory (views,
    /// in-place Concats) and reference fallbacks run on the caller's thread.
    fn wants_threads(&self, si: usize) -> bool {
        let step = &self.exec.steps[si];
        if self.plan.places[si] != StepPlace::Own {
            return false;
        }
        match (step.threads, &step.kind) {
            (Some(decided), _) => decided,
            (None, StepKind::Kernel(k)) => {
                wants_threads(k, &step.reads, &|v| Some((self.shape_of(v), self.numel(v))))
                    .unwrap_or(false)
            }
            (None, StepKind::Fallback(..)) => false,
        }
    }

    /// How the run used the arena so far.
    fn arena_use(&self) -> ArenaUse {
        ArenaUse {
            arena_bytes: self.plan.arena_len * 4,
            in_arena: self.in_arena,
            on_heap: self.on_heap,
        }
    }

    /// Whether the view step of kernel `k` from `x` (in the arena) to `out` may take `x`'s memory as planned: a
    /// shape derived from a binding is checked against what the kernel computes from `x`'s shape.
    fn view_holds(&self, k: &Kernel, x: ValueId, out: ValueId) -> bool {
        let Some(p) = self.plan.slots.get(&out) else {
            return false;
        };
        if !p.derived {
            return true;
        }
        let Kernel::Native(n) = k else {
            return false;
        };
        let xs = &self.plan.slots[&x].shape;
        n.kernel.out_shape(&[&xs[..]]).is_ok_and(|s| s == p.shape)
    }

    fn name(&self, v: ValueId) -> &str {
        &self.exec.graph.value(v).name
    }

    /// The shape of a computed tensor value (empty when it is not one).
    fn shape_of(&self, v: ValueId) -> Vec<usize> {
        match &self.env[v.index()] {
            Slot::Arena => self.plan.slots[&v].shape.clone(),
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
                let p = &self.plan.slots[&v];
                let len = p.shape.iter().product();
                // SAFETY: the plan gives every live value its own `len` elements inside the arena.
                Ok((
                    unsafe { std::slice::from_raw_parts(self.base.add(p.off), len) },
                    p.shape.clone(),
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
        let slot = match self.plan.slots.get(&out) {
            Some(_) if self.off_plan => {
                tracing::trace!(value = self.name(out), "computed on the heap, off the plan");
                None
            }
            Some(p) if p.shape != shape => {
                if !p.derived {
                    return Err(ExecError::new(format!(
                        "`{}` has shape {shape:?}, but {:?} was planned",
                        self.name(out),
                        p.shape
                    )));
                }
                tracing::debug!(
                    value = self.name(out),
                    ?shape,
                    planned = ?p.shape,
                    "cpu target: a value's shape differs from the one its binding implies; computed on the heap"
                );
                None
            }
            slot => slot,
        };
        if let Some(p) = slot {
            // SAFETY: the plan reserves `len` elements at `off` for `out`, disjoint from every value live now
            // (the inputs of this step included).
            let buf = unsafe { std::slice::from_raw_parts_mut(self.base.add(p.off), len) };
            f(self, buf)?;
            self.env[out.index()] = Slot::Arena;
            self.in_arena += 1;
        } else {
            let mut buf = alloc_zeroed(len).map_err(|e| {
                ExecError::new(format!("`{}` (shape {shape:?}): {e}", self.name(out)))
            })?;
            f(self, &mut buf)?;
            let t = Tensor::from_vec(shape, buf).map_err(|e| ExecError::new(e.to_string()))?;
            self.env[out.index()] = Slot::Heap(Value::Tensor(Arc::new(t)));
            self.on_heap += 1;
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
                let p = &self.plan.slots[&out];
                let len = p.shape.iter().product();
                // SAFETY: the plan reserves `len` elements at `off` for `out`, disjoint from every other live value.
                let buf = unsafe { std::slice::from_raw_parts_mut(self.base.add(p.off), len) };
                f(&*self, buf, &p.shape)
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
    /// other inputs (and any in-place one that is not in the arena after all) into their slices. Returns `false`,
    /// having done nothing, when the output's shape was derived from a binding and the inputs do not make it (the
    /// caller then runs kernel `k` off the plan).
    fn concat_in_place(
        &mut self,
        k: &Kernel,
        out: ValueId,
        parts: &[(ValueId, usize, usize, bool)],
    ) -> Result<bool, ExecError> {
        let plan = self.plan;
        let p = plan.slots.get(&out).ok_or_else(|| {
            ExecError::new("internal error: an in-place Concat output is not planned")
        })?;
        let (off, shape) = (p.off, &p.shape);
        if p.derived {
            let Kernel::Native(n) = k else {
                return Ok(false);
            };
            let mut shapes = Vec::with_capacity(parts.len());
            for &(x, _, len, _) in parts {
                let s = self.f32_in(x)?.1;
                if s.iter().product::<usize>() != len {
                    return Ok(false);
                }
                shapes.push(s);
            }
            let refs: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
            if n.kernel.out_shape(&refs).ok().as_ref() != Some(shape) {
                return Ok(false);
            }
        }
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
        self.in_arena += 1;
        Ok(true)
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

    fn last_run_arena_bytes(&self) -> Option<usize> {
        self.last_run_arena().map(|u| u.arena_bytes)
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

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::GraphBuilder;
    use jiuzhou_ir::TensorType;
    use jiuzhou_ir::ops;

    fn filled(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect();
        Tensor::from_vec(shape.to_vec(), data).unwrap()
    }

    /// A graph with big and small GEMMs, a conv, and elementwise ops over big and small tensors; `batch` is the
    /// first dim of its input (a symbol when `None`).
    fn graph(batch: Option<usize>) -> Graph {
        let mut b = GraphBuilder::new("threads");
        let n = batch.map_or(Dim::from("N"), Dim::Known);
        let x = b.input("x", TensorType::new(DType::F32, [n, 256.into()]));
        let w = b.constant("w", filled(&[256, 512], 1));
        let h = b.node1(ops::MatMul::default(), &[x, w]).unwrap();
        let r = b.node1(ops::Relu::default(), &[h]).unwrap();
        let small = b.constant("small", filled(&[3, 4], 2));
        let s = b.node1(ops::Neg::default(), &[small]).unwrap();
        let img = b.input("img", TensorType::known(DType::F32, &[1, 16, 40, 40]));
        let k = b.constant("k", filled(&[32, 16, 3, 3], 3));
        let conv = ops::Conv {
            kernel_shape: Some(vec![3, 3]),
            ..Default::default()
        };
        let c = b.node1(conv, &[img, k]).unwrap();
        let e = b.node1(ops::Abs::default(), &[c]).unwrap();
        for v in [r, s, e] {
            b.output(v);
        }
        b.finish().unwrap()
    }

    /// The thread decisions made at compile time for static shapes are the ones the shapes of a run give, there
    /// are both kinds among them, and steps whose shapes are symbolic are left to the run.
    #[test]
    fn thread_decisions_made_at_compile_time_match_the_run() {
        for batch in [Some(64), None] {
            let g = Arc::new(graph(batch));
            let exec = CpuExecutable::compile_with(g.clone(), &CpuOptions { threads: 2 }).unwrap();
            let inputs = vec![
                Value::Tensor(Arc::new(filled(&[64, 256], 4))),
                Value::Tensor(Arc::new(filled(&[1, 16, 40, 40], 5))),
            ];
            // The shape of every value of the run: inputs, constants and each step's outputs.
            let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
            for (id, v) in g.inputs.iter().zip(&inputs) {
                shapes.insert(
                    g.value(*id).name.clone(),
                    v.as_tensor().unwrap().shape().to_vec(),
                );
            }
            for v in &g.values {
                if let Some(c) = &v.constant {
                    shapes.insert(v.name.clone(), c.shape().to_vec());
                }
            }
            exec.run_observed(inputs, &mut |name: &str, v: &Value| {
                shapes.insert(name.to_string(), v.as_tensor().unwrap().shape().to_vec());
            })
            .unwrap();
            let info = |v: ValueId| {
                let s = shapes[&g.value(v).name].clone();
                let n = s.iter().product();
                Some((s, n))
            };
            let mut decided = Vec::new();
            for step in &exec.steps {
                let StepKind::Kernel(k) = &step.kind else {
                    continue;
                };
                let at_run = wants_threads(k, &step.reads, &info).unwrap();
                match step.threads {
                    Some(d) => {
                        assert_eq!(d, at_run, "step {} ({})", step.node, step.label);
                        decided.push(d);
                    }
                    None => assert!(batch.is_none(), "step {} was left to the run", step.node),
                }
            }
            // MatMul and Relu over [64,512], the conv: threads; Neg over 12 elements and (static) nothing else.
            let want: &[bool] = if batch.is_some() {
                &[true, true, false, true, true]
            } else {
                &[false, true, true]
            };
            assert_eq!(decided, want, "batch {batch:?}");
        }
    }
}
