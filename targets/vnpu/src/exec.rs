//! [`VnpuExecutable`]: a whole graph on the simulated NPU plus the host CPU.
//!
//! Compilation places every node ([`crate::partition`]), cuts the node list into contiguous regions per device,
//! and turns it into a list of steps: an NPU kernel (one [`Program`] per node, run on the simulator), a host region
//! (a subgraph compiled by the caller's [`HostCompiler`], normally the CPU target), an upload (host tensor → global
//! memory, in the value's [`Layout`]) or a download (back). A value crosses between devices at most once each way;
//! the bytes moved are counted per run (`transfers_bytes`). Weights, packed for the cube, and other constants live
//! in global memory from the start (they are not transfers).
//!
//! Global memory is planned at compile time: a zeroed page (the source of zero padding), the constant blobs, then
//! every value on the NPU at an aligned address, reused after the value's last use (first fit). A program that
//! needs more global memory than the profile has does not compile.
//!
//! **Dynamic shapes.** NPU kernels need static shapes. A graph whose inputs have symbolic dims is compiled as is
//! (its placement then sends every node whose shape is unknown to the host, with that reason) and, at run time,
//! *specialized*: the input types are replaced by the shapes of the inputs given, shapes are inferred again, and
//! the specialized graph is compiled and cached per input-shape signature (the latest
//! [`SPECIALIZATION_CACHE`] ones). [`RunStats::placement`] tells where the nodes of the run really ran.
//!
//! **Observation.** [`Executable::run_observed`] reports every host region's values (as the host executable
//! reports them) and every NPU kernel's result, read back from global memory after the kernel ran; a value
//! computed inside a kernel (a Relu in a GEMM's epilogue) is not reported.
//!
//! **Fault injection (test only).** [`Options::fault`] (the compiler sets it from `JIUZHOU_FAULT=vnpu:SELECTOR`)
//! names a node or an op; the kernels of the matching nodes get their results perturbed in global memory after
//! they run (float `x` becomes `1.5·x ± 0.25`, alternating signs), as a wrong kernel would compute them, so that
//! `jiuzhou compare` can be shown to name that node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jiuzhou_ir::infer::{SymGen, infer_graph};
use jiuzhou_ir::{Graph, Tensor, TensorType, Value, ValueId, ValueType};
use jiuzhou_runtime::{Executable, Observer, RunError};

use crate::builder::ProgramBuilder;
use crate::codegen::concat::{self, ConcatOp};
use crate::codegen::eltwise::{self, EltB, EltKind, EltOp};
use crate::codegen::gemm::{self, ASrc, BSrc, ConvGeom, GemmOp, GemmState};
use crate::codegen::layout::Layout;
use crate::codegen::lower::{EltArg, GemmB, Kernel, f32_shape, pack_conv_weights, pack_weights};
use crate::codegen::rows::{self, MaxPoolOp, SoftmaxOp};
use crate::codegen::transpose::{self, TransposeOp};
use crate::codegen::{Ctx, round_up};
use crate::dtype::DType;
use crate::isa::{Program, VectorOp};
use crate::partition::{Placement, place};
use crate::profile::Profile;
use crate::sim::{Machine, SimReport};

/// How many shape specializations of a dynamic-shape graph an executable keeps (the most recently used).
pub const SPECIALIZATION_CACHE: usize = 8;

/// Compiles host regions: a subgraph (inputs and outputs named as in the whole graph) into an executable.
pub trait HostCompiler: Send + Sync {
    /// Compiles one host region.
    fn compile(&self, graph: Graph) -> Result<Box<dyn Executable>, String>;
}

/// Compile options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keep the host cost rule (isolated elementwise nodes stay on the host). Tests turn it off to force kernels
    /// onto the NPU.
    pub host_cost: bool,
    /// Record every instruction's timing for traces (memory grows with the program length).
    pub record_trace: bool,
    /// Test only: the node or op name whose kernels compute wrong results on purpose (see the module docs).
    pub fault: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            host_cost: true,
            record_trace: false,
            fault: None,
        }
    }
}

/// Why compilation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("vnpu: {0}")]
pub struct CompileError(pub String);

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Simulated cycles of all NPU kernels (run one after the other).
    pub sim_cycles: u64,
    /// Bytes moved between host and NPU.
    pub transfers_bytes: u64,
    /// Each kernel's name and report (only with `record_trace`).
    pub kernels: Vec<(String, SimReport)>,
    /// Where the nodes ran, when the run used a shape specialization of a dynamic-shape graph (`None`: as
    /// [`VnpuExecutable::placement`] says).
    pub placement: Option<Placement>,
}

enum Step {
    Upload {
        value: ValueId,
        addr: u64,
        layout: Layout,
    },
    Download {
        value: ValueId,
        addr: u64,
        layout: Layout,
    },
    Kernel {
        name: String,
        program: Program,
        /// The value the kernel writes, where, and how it is stored (for observers and fault injection).
        out: ValueId,
        addr: u64,
        layout: Layout,
        /// Test only: perturb the result after the run.
        faulty: bool,
    },
    Host {
        exec: Box<dyn Executable>,
        inputs: Vec<ValueId>,
        outputs: Vec<ValueId>,
    },
}

/// A graph compiled for the simulated NPU and the host.
pub struct VnpuExecutable {
    name: String,
    graph: Arc<Graph>,
    steps: Vec<Step>,
    template: Machine,
    placement: Placement,
    transfers_bytes: u64,
    gm_bytes: u64,
    record: bool,
    last: Mutex<Option<RunStats>>,
    /// Set when the graph's inputs have dynamic shapes: runs are specialized to their input shapes.
    specializer: Option<Specializer>,
}

/// Compiles and caches shape specializations of a dynamic-shape graph.
struct Specializer {
    host: Arc<dyn HostCompiler>,
    options: Options,
    /// `(input shapes, executable)`, most recently used last.
    cache: Mutex<Vec<Specialization>>,
}

/// One cached specialization: the input shapes and the executable compiled for them.
type Specialization = (Vec<Vec<usize>>, Arc<VnpuExecutable>);

impl std::fmt::Debug for VnpuExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VnpuExecutable")
            .field("name", &self.name)
            .field("steps", &self.steps.len())
            .finish()
    }
}

/// Symbolic steps before addresses are known.
enum Plan {
    Upload(ValueId),
    Download(ValueId),
    Kernel(usize),
    Host(Vec<usize>),
}

fn captured_names(graph: &Graph, out: &mut HashSet<String>) {
    for n in &graph.nodes {
        for g in n.op.subgraphs() {
            for c in &g.captures {
                out.insert(g.value(*c).name.clone());
            }
            captured_names(g, out);
        }
    }
}

/// A first-fit allocator over global memory.
struct Alloc {
    free: Vec<(u64, u64)>,
    align: u64,
    high: u64,
}

impl Alloc {
    fn alloc(&mut self, bytes: u64) -> u64 {
        let bytes = round_up(bytes.max(1), self.align);
        if let Some(i) = self.free.iter().position(|&(_, len)| len >= bytes) {
            let (at, len) = self.free[i];
            if len == bytes {
                self.free.remove(i);
            } else {
                self.free[i] = (at + bytes, len - bytes);
            }
            return at;
        }
        let at = self.high;
        self.high += bytes;
        at
    }

    fn release(&mut self, at: u64, bytes: u64) {
        let bytes = round_up(bytes.max(1), self.align);
        self.free.push((at, bytes));
        self.free.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.free.len());
        for &(a, l) in &self.free {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == a => last.1 += l,
                _ => merged.push((a, l)),
            }
        }
        self.free = merged;
    }
}

impl VnpuExecutable {
    /// Compiles `graph` for `profile`; host regions go through `host`.
    pub fn compile(
        graph: Arc<Graph>,
        profile: Profile,
        host: Arc<dyn HostCompiler>,
        options: &Options,
    ) -> Result<VnpuExecutable, CompileError> {
        let dynamic = graph.inputs.iter().any(|&i| {
            graph
                .value(i)
                .ty
                .as_tensor()
                .is_some_and(|t| t.known_dims().is_none())
        });
        let ctx = Ctx::new(&profile);
        let mut captured = HashSet::new();
        captured_names(&graph, &mut captured);
        let decision = place(&ctx, &graph, options.host_cost);
        let mut kernels = decision.kernels;
        let placement = decision.placement;
        // A value a subgraph captures by name must exist on the host as is: never fuse it away.
        for (i, k) in kernels.iter_mut().enumerate() {
            if let Some(k) = k
                && k.out() != graph.nodes[i].outputs[0]
                && captured.contains(&graph.value(graph.nodes[i].outputs[0]).name)
            {
                return Err(CompileError(format!(
                    "`{}` is captured by a subgraph and cannot be fused",
                    graph.value(graph.nodes[i].outputs[0]).name
                )));
            }
        }
        let on_npu: Vec<bool> = placement.nodes.iter().map(|n| n.npu).collect();

        // Regions and symbolic steps.
        let mut plan: Vec<Plan> = Vec::new();
        let mut on_device: HashSet<ValueId> = HashSet::new();
        let mut on_host: HashSet<ValueId> = graph.inputs.iter().copied().collect();
        for v in graph
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.constant.is_some())
        {
            on_host.insert(ValueId(v.0 as u32));
        }
        for name in &captured {
            if let Some(id) = graph.value_by_name(name)
                && graph.value(id).constant.is_some()
            {
                on_host.insert(id);
            }
        }
        // Host reads of each value after each node: which values must come back.
        let mut host_reads: Vec<HashSet<ValueId>> = vec![HashSet::new(); graph.nodes.len() + 1];
        for (i, n) in graph.nodes.iter().enumerate() {
            if !on_npu[i] {
                host_reads[i].extend(n.inputs.iter().flatten().copied());
                let mut names = HashSet::new();
                for g in n.op.subgraphs() {
                    for c in &g.captures {
                        names.insert(g.value(*c).name.clone());
                    }
                    captured_names(g, &mut names);
                }
                for name in names {
                    if let Some(id) = graph.value_by_name(&name) {
                        host_reads[i].insert(id);
                    }
                }
            }
        }
        host_reads[graph.nodes.len()].extend(graph.outputs.iter().copied());
        let mut i = 0;
        while i < graph.nodes.len() {
            let mut j = i;
            while j < graph.nodes.len() && on_npu[j] == on_npu[i] {
                j += 1;
            }
            if on_npu[i] {
                for (idx, k) in kernels.iter().enumerate().take(j).skip(i) {
                    let Some(k) = k else { continue };
                    for v in k.reads() {
                        if !on_device.contains(&v) {
                            plan.push(Plan::Upload(v));
                            on_device.insert(v);
                        }
                    }
                    plan.push(Plan::Kernel(idx));
                    on_device.insert(k.out());
                }
                // Values the host reads later come back now.
                let later: HashSet<ValueId> = host_reads[j..].iter().flatten().copied().collect();
                let mut back: Vec<ValueId> = on_device
                    .iter()
                    .copied()
                    .filter(|v| later.contains(v) && !on_host.contains(v))
                    .collect();
                back.sort();
                for v in back {
                    plan.push(Plan::Download(v));
                    on_host.insert(v);
                }
            } else {
                plan.push(Plan::Host((i..j).collect()));
                for idx in i..j {
                    on_host.extend(graph.nodes[idx].outputs.iter().copied());
                }
            }
            i = j;
        }

        // Global memory: zero page, constant blobs, values.
        let gm_align = ctx.gm_align.max(64);
        let mut alloc = Alloc {
            free: Vec::new(),
            align: gm_align,
            high: 0,
        };
        let zero_bytes = profile
            .buffers
            .iter()
            .map(|b| b.size_bytes)
            .max()
            .unwrap_or(0);
        let zero = alloc.alloc(zero_bytes);
        let mut blobs: Vec<(u64, DType, Vec<f32>)> = Vec::new();
        let input = ctx.input.unwrap_or(DType::F16);
        let layout_of = |v: ValueId| -> Result<Layout, CompileError> {
            f32_shape(&graph, v)
                .map(|s| ctx.layout(&s))
                .map_err(CompileError)
        };
        let mut blob = |alloc: &mut Alloc, dtype: DType, data: Vec<f32>| -> u64 {
            let at = alloc.alloc(data.len() as u64 * dtype.size());
            blobs.push((at, dtype, data));
            at
        };
        // Kernel constants, in plan order.
        let mut kconst: HashMap<usize, KConst> = HashMap::new();
        for p in &plan {
            let Plan::Kernel(idx) = p else { continue };
            let k = kernels[*idx].as_ref().expect("planned kernels exist");
            let mut kc = KConst::default();
            let cerr = CompileError;
            match k {
                Kernel::Gemm {
                    b, bias, n, k: kk, ..
                } => {
                    if let GemmB::Weights(w) = b {
                        let (packed, ld) = pack_weights(&ctx, w, *kk, *n).map_err(cerr)?;
                        kc.b = Some((blob(&mut alloc, input, packed), ld));
                    }
                    if let Some(v) = bias {
                        let len = gemm::packed_ld(&ctx, *n).map_err(cerr)?;
                        let mut v = v.clone();
                        v.resize(len as usize, 0.0);
                        kc.bias = Some(blob(&mut alloc, DType::F32, v));
                    }
                }
                Kernel::Conv {
                    w, bias, out_shape, ..
                } => {
                    let (packed, ld, cq) = pack_conv_weights(&ctx, w).map_err(cerr)?;
                    kc.b = Some((blob(&mut alloc, input, packed), ld));
                    kc.cq = cq;
                    if let Some(v) = bias {
                        let len = gemm::packed_ld(&ctx, out_shape[0]).map_err(cerr)?;
                        let mut v = v.clone();
                        v.resize(len as usize, 0.0);
                        kc.bias = Some(blob(&mut alloc, DType::F32, v));
                    }
                }
                Kernel::Elt { b, out, .. } => {
                    let lo = layout_of(*out)?;
                    match b {
                        EltArg::Const(t) => {
                            let d = t
                                .as_slice::<f32>()
                                .map_err(|e| CompileError(e.to_string()))?;
                            kc.elt_b = Some(blob(&mut alloc, DType::F32, lo.pack(d)));
                        }
                        EltArg::RowVec(v) => {
                            let mut row = v.clone();
                            row.resize(lo.pitch, 0.0);
                            kc.elt_b = Some(blob(&mut alloc, DType::F32, row));
                        }
                        EltArg::None | EltArg::Value(_) | EltArg::Imm(_) => {}
                    }
                }
                Kernel::Mean { dims, .. } => {
                    // A = one row of 1/hw (padded with zeros to an aligned pitch).
                    let ld = round_up(dims[2], ctx.pitch_gran());
                    let mut row = vec![1.0 / dims[2] as f32; dims[2] as usize];
                    row.resize(ld as usize, 0.0);
                    kc.b = Some((blob(&mut alloc, DType::F32, row), ld));
                }
                Kernel::Softmax { .. }
                | Kernel::MaxPool { .. }
                | Kernel::Transpose { .. }
                | Kernel::Concat { .. } => {}
            }
            kconst.insert(*idx, kc);
        }

        // Value lifetimes over plan steps.
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (t, p) in plan.iter().enumerate() {
            match p {
                Plan::Kernel(idx) => {
                    for v in kernels[*idx]
                        .as_ref()
                        .map(Kernel::reads)
                        .unwrap_or_default()
                    {
                        last_use.insert(v, t);
                    }
                }
                Plan::Download(v) => {
                    last_use.insert(*v, t);
                }
                _ => {}
            }
        }
        let mut addr: HashMap<ValueId, u64> = HashMap::new();
        let mut dying: Vec<Vec<ValueId>> = vec![Vec::new(); plan.len()];
        for (v, t) in &last_use {
            dying[*t].push(*v);
        }
        for d in &mut dying {
            d.sort();
        }
        for (t, p) in plan.iter().enumerate() {
            let def = match p {
                Plan::Upload(v) => Some(*v),
                Plan::Kernel(idx) => kernels[*idx].as_ref().map(Kernel::out),
                _ => None,
            };
            if let Some(v) = def {
                let bytes = layout_of(v)?.bytes();
                let at = alloc.alloc(bytes);
                addr.insert(v, at);
                if !last_use.contains_key(&v) {
                    alloc.release(at, bytes);
                }
            }
            for v in &dying[t] {
                if let Some(&at) = addr.get(v) {
                    alloc.release(at, layout_of(*v)?.bytes());
                }
            }
        }
        let gm_bytes = alloc.high;
        if gm_bytes > profile.global.size_bytes {
            return Err(CompileError(format!(
                "the model needs {gm_bytes} bytes of global memory; profile `{}` has {}",
                profile.name, profile.global.size_bytes
            )));
        }

        // Steps.
        let mut steps = Vec::with_capacity(plan.len());
        let mut faults = 0usize;
        let mut transfers_bytes = 0u64;
        for p in plan {
            steps.push(match p {
                Plan::Upload(v) => {
                    let layout = layout_of(v)?;
                    transfers_bytes += layout.len() as u64 * 4;
                    Step::Upload {
                        value: v,
                        addr: addr[&v],
                        layout,
                    }
                }
                Plan::Download(v) => {
                    let layout = layout_of(v)?;
                    transfers_bytes += layout.len() as u64 * 4;
                    Step::Download {
                        value: v,
                        addr: addr[&v],
                        layout,
                    }
                }
                Plan::Kernel(idx) => {
                    let k = kernels[idx].as_ref().expect("planned kernels exist");
                    let program = emit_kernel(&ctx, k, &kconst[&idx], zero, &addr, &layout_of)
                        .map_err(|e| {
                            CompileError(format!("node `{}`: {e}", graph.nodes[idx].name))
                        })?;
                    let node = &graph.nodes[idx];
                    let faulty = options
                        .fault
                        .as_ref()
                        .is_some_and(|f| *f == node.name || f == node.op.name());
                    if faulty {
                        faults += 1;
                        tracing::warn!(
                            "JIUZHOU_FAULT: the vnpu target computes node `{}` WRONG on purpose \
                             (test-only fault injection)",
                            node.name
                        );
                    }
                    Step::Kernel {
                        name: format!("{} ({})", node.name, node.op.name()),
                        program,
                        out: k.out(),
                        addr: addr[&k.out()],
                        layout: layout_of(k.out())?,
                        faulty,
                    }
                }
                Plan::Host(nodes) => {
                    let (sub, inputs, outputs) =
                        region_graph(&graph, &nodes, &host_reads, &on_npu)?;
                    let exec = host.as_ref().compile(sub).map_err(CompileError)?;
                    Step::Host {
                        exec,
                        inputs,
                        outputs,
                    }
                }
            });
        }

        if let Some(f) = &options.fault
            && faults == 0
        {
            tracing::warn!(
                "JIUZHOU_FAULT: selector `{f}` matches no NPU kernel of graph `{}`: nothing is perturbed",
                graph.name
            );
        }
        let mut template =
            Machine::new(profile.clone()).map_err(|e| CompileError(e.to_string()))?;
        for (at, dtype, data) in &blobs {
            template
                .write_global_values(*at, *dtype, data)
                .map_err(|e| CompileError(e.to_string()))?;
        }
        tracing::debug!(
            npu = placement.npu_nodes(),
            nodes = placement.nodes.len(),
            gm_bytes,
            "vnpu compiled"
        );
        Ok(VnpuExecutable {
            name: format!("vnpu:{}", profile.name),
            graph,
            steps,
            template,
            placement,
            transfers_bytes,
            gm_bytes,
            record: options.record_trace,
            last: Mutex::new(None),
            specializer: dynamic.then(|| Specializer {
                host,
                options: options.clone(),
                cache: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The executable specialized to the shapes of `inputs` (compiled on first use), or `None` when this graph
    /// has static input shapes or `inputs` are not all tensors.
    fn specialized(&self, inputs: &[Value]) -> Result<Option<Arc<VnpuExecutable>>, RunError> {
        let Some(sp) = &self.specializer else {
            return Ok(None);
        };
        let Some(shapes) = inputs
            .iter()
            .map(|v| v.as_tensor().map(|t| t.shape().to_vec()))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let mut cache = sp
            .cache
            .lock()
            .map_err(|_| RunError::Exec("vnpu: the specialization cache is poisoned".into()))?;
        if let Some(i) = cache.iter().position(|(s, _)| *s == shapes) {
            let entry = cache.remove(i);
            let exec = entry.1.clone();
            cache.push(entry);
            return Ok(Some(exec));
        }
        let graph = specialize(&self.graph, &shapes).map_err(|e| {
            RunError::Exec(format!(
                "vnpu: cannot specialize to input shapes {shapes:?}: {e}"
            ))
        })?;
        let exec = VnpuExecutable::compile(
            Arc::new(graph),
            self.profile().clone(),
            sp.host.clone(),
            &sp.options,
        )
        .map_err(|e| RunError::Exec(e.to_string()))?;
        tracing::debug!(
            ?shapes,
            npu = exec.placement.npu_nodes(),
            nodes = exec.placement.nodes.len(),
            "vnpu specialized to input shapes"
        );
        let exec = Arc::new(exec);
        if cache.len() >= SPECIALIZATION_CACHE {
            cache.remove(0);
        }
        cache.push((shapes, exec.clone()));
        Ok(Some(exec))
    }

    /// Where every node runs.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Whether the graph's inputs have dynamic shapes, so that runs are specialized to their input shapes (and
    /// [`VnpuExecutable::placement`] is not where a run's nodes go: see [`RunStats::placement`]).
    pub fn is_dynamic(&self) -> bool {
        self.specializer.is_some()
    }

    /// Bytes moved between host and NPU per run.
    pub fn transfers_bytes(&self) -> u64 {
        self.transfers_bytes
    }

    /// Global memory the plan uses.
    pub fn gm_bytes(&self) -> u64 {
        self.gm_bytes
    }

    /// The NPU programs, `(name, program)` in run order.
    pub fn programs(&self) -> Vec<(&str, &Program)> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel { name, program, .. } => Some((name.as_str(), program)),
                _ => None,
            })
            .collect()
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        self.template.profile()
    }

    /// Runs only the NPU kernels (on whatever global memory holds) to count cycles: timing does not depend on
    /// the data, so this is the cycle count of every run.
    pub fn simulate_cycles(&self) -> Result<u64, RunError> {
        let mut m = self.template.clone();
        m.set_record_events(false);
        let mut total = 0u64;
        for s in &self.steps {
            if let Step::Kernel { name, program, .. } = s {
                let r = m
                    .run(program)
                    .map_err(|t| RunError::Exec(format!("vnpu kernel {name}: {t}")))?;
                total += r.total_cycles;
            }
        }
        Ok(total)
    }

    /// The statistics of the last run (`None` before the first).
    pub fn last_run(&self) -> Option<RunStats> {
        self.last.lock().ok().and_then(|g| g.clone())
    }

    /// Runs on `inputs` and returns the outputs with the run's statistics.
    pub fn run_with_stats(&self, inputs: Vec<Value>) -> Result<(Vec<Value>, RunStats), RunError> {
        self.run_inner(inputs, None)
    }

    /// Runs on `inputs`, reporting values to `observer` if there is one.
    fn run_inner(
        &self,
        inputs: Vec<Value>,
        mut observer: Option<&mut Observer<'_>>,
    ) -> Result<(Vec<Value>, RunStats), RunError> {
        if let Some(exec) = self.specialized(&inputs)? {
            let (outs, mut stats) = exec.run_inner(inputs, observer)?;
            stats.placement = Some(exec.placement.clone());
            return Ok((outs, stats));
        }
        let g = &self.graph;
        let mut m = self.template.clone();
        m.set_record_events(self.record);
        let mut vals: HashMap<ValueId, Value> = HashMap::new();
        for (id, v) in g.inputs.iter().zip(inputs) {
            vals.insert(*id, v);
        }
        let get = |vals: &HashMap<ValueId, Value>, id: ValueId| -> Result<Value, RunError> {
            if let Some(v) = vals.get(&id) {
                return Ok(v.clone());
            }
            g.value(id)
                .constant
                .as_ref()
                .map(|t| Value::Tensor(t.clone()))
                .ok_or_else(|| {
                    RunError::Exec(format!("value `{}` is not available", g.value(id).name))
                })
        };
        let mut stats = RunStats {
            transfers_bytes: self.transfers_bytes,
            ..RunStats::default()
        };
        let exec_err = |e: String| RunError::Exec(e);
        let read = |m: &Machine, addr: u64, layout: &Layout| -> Result<Value, RunError> {
            let stored = m
                .read_global_values(addr, DType::F32, layout.physical_len() as u64)
                .map_err(|e| exec_err(e.to_string()))?;
            let t = Tensor::from_vec(layout.shape.clone(), layout.unpack(&stored))
                .map_err(|e| exec_err(e.to_string()))?;
            Ok(Value::Tensor(Arc::new(t)))
        };
        for s in &self.steps {
            match s {
                Step::Upload {
                    value,
                    addr,
                    layout,
                } => {
                    let v = get(&vals, *value)?;
                    let t = v.as_tensor().ok_or_else(|| {
                        exec_err(format!("`{}` is not a tensor", g.value(*value).name))
                    })?;
                    let data = t.as_slice::<f32>().map_err(|e| exec_err(e.to_string()))?;
                    m.write_global_values(*addr, DType::F32, &layout.pack(data))
                        .map_err(|e| exec_err(e.to_string()))?;
                }
                Step::Download {
                    value,
                    addr,
                    layout,
                } => {
                    vals.insert(*value, read(&m, *addr, layout)?);
                }
                Step::Kernel {
                    name,
                    program,
                    out,
                    addr,
                    layout,
                    faulty,
                } => {
                    let r = m
                        .run(program)
                        .map_err(|t| exec_err(format!("vnpu kernel {name}: {t}")))?;
                    stats.sim_cycles += r.total_cycles;
                    if self.record {
                        stats.kernels.push((name.clone(), r));
                    }
                    if *faulty {
                        let stored = m
                            .read_global_values(*addr, DType::F32, layout.physical_len() as u64)
                            .map_err(|e| exec_err(e.to_string()))?;
                        let wrong: Vec<f32> = layout
                            .unpack(&stored)
                            .iter()
                            .enumerate()
                            .map(|(i, x)| 1.5 * x + if i % 2 == 0 { 0.25 } else { -0.25 })
                            .collect();
                        m.write_global_values(*addr, DType::F32, &layout.pack(&wrong))
                            .map_err(|e| exec_err(e.to_string()))?;
                    }
                    if let Some(obs) = observer.as_deref_mut() {
                        obs(&g.value(*out).name, &read(&m, *addr, layout)?);
                    }
                }
                Step::Host {
                    exec,
                    inputs,
                    outputs,
                } => {
                    let ins = inputs
                        .iter()
                        .map(|id| get(&vals, *id))
                        .collect::<Result<Vec<_>, _>>()?;
                    let outs = match observer.as_deref_mut() {
                        Some(obs) => exec.run_observed(ins, obs)?,
                        None => exec.run(ins)?,
                    };
                    for (id, v) in outputs.iter().zip(outs) {
                        if let Some(obs) = observer.as_deref_mut() {
                            obs(&g.value(*id).name, &v);
                        }
                        vals.insert(*id, v);
                    }
                }
            }
        }
        let outs = g
            .outputs
            .iter()
            .map(|id| get(&vals, *id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((outs, stats))
    }

    fn record_stats(&self, stats: RunStats) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some(stats);
        }
    }
}

/// `graph` with its inputs' types replaced by tensors of `shapes` (dtypes kept) and every node's output type
/// inferred again.
fn specialize(graph: &Graph, shapes: &[Vec<usize>]) -> Result<Graph, String> {
    if shapes.len() != graph.inputs.len() {
        return Err(format!(
            "{} inputs for {} graph inputs",
            shapes.len(),
            graph.inputs.len()
        ));
    }
    let mut g = graph.clone();
    for (&id, shape) in graph.inputs.iter().zip(shapes) {
        let dtype = g.values[id.index()]
            .ty
            .as_tensor()
            .map(|t| t.dtype)
            .ok_or_else(|| format!("input `{}` is not a tensor", g.values[id.index()].name))?;
        g.values[id.index()].ty = ValueType::Tensor(TensorType::known(dtype, shape));
    }
    infer_graph(&mut g, &mut SymGen::default()).map_err(|e| e.to_string())?;
    Ok(g)
}

impl Executable for VnpuExecutable {
    fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
        let (outs, stats) = self.run_inner(inputs, None)?;
        self.record_stats(stats);
        Ok(outs)
    }

    fn target_name(&self) -> &str {
        &self.name
    }

    fn run_observed(
        &self,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, RunError> {
        let (outs, stats) = self.run_inner(inputs, Some(observer))?;
        self.record_stats(stats);
        Ok(outs)
    }
}

/// The subgraph of host region `nodes`: inputs are the values it reads that are defined elsewhere (constants
/// are copied in), outputs the values it defines that later nodes or the graph outputs read.
fn region_graph(
    graph: &Graph,
    nodes: &[usize],
    host_reads: &[HashSet<ValueId>],
    on_npu: &[bool],
) -> Result<(Graph, Vec<ValueId>, Vec<ValueId>), CompileError> {
    let first = nodes[0];
    let last = *nodes.last().expect("regions are not empty");
    let defined: HashSet<ValueId> = nodes
        .iter()
        .flat_map(|&i| graph.nodes[i].outputs.iter().copied())
        .collect();
    let mut sub = Graph::new(format!("{}_host_{first}", graph.name));
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut inputs = Vec::new();
    let mut reads: Vec<ValueId> = Vec::new();
    for &i in nodes {
        reads.extend(graph.nodes[i].inputs.iter().flatten().copied());
        reads.extend(host_reads[i].iter().copied());
    }
    for v in reads {
        if defined.contains(&v) || map.contains_key(&v) {
            continue;
        }
        let info = graph.value(v);
        let id = match &info.constant {
            Some(t) => sub.add_constant(info.name.clone(), t.clone()),
            None => {
                let id = sub.add_value(info.name.clone(), info.ty.clone());
                sub.inputs.push(id);
                inputs.push(v);
                id
            }
        };
        map.insert(v, id);
    }
    inputs.sort_by_key(|v| map[v]);
    for &i in nodes {
        let n = &graph.nodes[i];
        for o in &n.outputs {
            let info = graph.value(*o);
            let id = sub.add_value(info.name.clone(), info.ty.clone());
            map.insert(*o, id);
        }
        let mut node = n.clone();
        node.inputs = n.inputs.iter().map(|x| x.map(|v| map[&v])).collect();
        node.outputs = n.outputs.iter().map(|v| map[v]).collect();
        sub.nodes.push(node);
    }
    // Outputs: defined here, read after the region (by any node or the graph outputs).
    let mut later: HashSet<ValueId> = HashSet::new();
    for (i, n) in graph.nodes.iter().enumerate().skip(last + 1) {
        later.extend(n.inputs.iter().flatten().copied());
        if !on_npu[i] {
            later.extend(host_reads[i].iter().copied());
        }
    }
    later.extend(graph.outputs.iter().copied());
    let mut outputs: Vec<ValueId> = defined.into_iter().filter(|v| later.contains(v)).collect();
    outputs.sort();
    sub.outputs = outputs.iter().map(|v| map[v]).collect();
    sub.verify()
        .map_err(|e| CompileError(format!("host region: {e}")))?;
    Ok((sub, inputs, outputs))
}

/// Compile-time constants of one kernel: packed weights `(address, pitch)`, bias, im2col channel group, and an
/// elementwise kernel's constant operand.
#[derive(Default)]
struct KConst {
    b: Option<(u64, u64)>,
    bias: Option<u64>,
    cq: u64,
    elt_b: Option<u64>,
}

/// Emits the program of one kernel.
fn emit_kernel(
    ctx: &Ctx,
    k: &Kernel,
    kc: &KConst,
    zero: u64,
    addr: &HashMap<ValueId, u64>,
    layout_of: &dyn Fn(ValueId) -> Result<Layout, CompileError>,
) -> Result<Program, String> {
    let lay = |v: ValueId| layout_of(v).map_err(|e| e.0);
    let at = |v: ValueId| {
        addr.get(&v)
            .copied()
            .ok_or_else(|| "a value has no global-memory address".to_string())
    };
    let mut b = ProgramBuilder::new();
    match k {
        Kernel::Gemm {
            a,
            b: gb,
            b_batched,
            m,
            n,
            k: kk,
            batches,
            out,
            residual,
            act,
            ..
        } => {
            let (la, lo) = (lay(*a)?, lay(*out)?);
            let blocks = gemm::choose_blocks(ctx, *m, *n, *kk, false)?;
            let mut st = GemmState::default();
            for bi in 0..*batches {
                let b_src = match gb {
                    GemmB::Weights(_) => {
                        let (addr, ld) = kc.b.ok_or("weights were not placed")?;
                        BSrc::Packed { addr, ld }
                    }
                    GemmB::Value(v) => {
                        let lb = lay(*v)?;
                        let off = if *b_batched {
                            bi * kk * lb.pitch as u64 * 4
                        } else {
                            0
                        };
                        BSrc::Dense {
                            addr: at(*v)? + off,
                            ld: lb.pitch as u64,
                        }
                    }
                };
                let op = GemmOp {
                    m: *m,
                    n: *n,
                    k: *kk,
                    a: ASrc::Dense {
                        addr: at(*a)? + bi * m * la.pitch as u64 * 4,
                        ld: la.pitch as u64,
                    },
                    b: b_src,
                    bias: kc.bias,
                    out: at(*out)? + bi * m * lo.pitch as u64 * 4,
                    ldc: lo.pitch as u64,
                    residual: match residual {
                        Some(z) => {
                            let lz = lay(*z)?;
                            Some((at(*z)? + bi * m * lz.pitch as u64 * 4, lz.pitch as u64))
                        }
                        None => None,
                    },
                    act: *act,
                };
                gemm::emit(ctx, &op, blocks, zero, &mut st, &mut b)?;
            }
        }
        Kernel::Conv {
            x,
            in_shape,
            out_shape,
            win,
            out,
            residual,
            act,
            ..
        } => {
            let (lx, lo) = (lay(*x)?, lay(*out)?);
            let g = ConvGeom {
                addr: at(*x)?,
                n: in_shape[0],
                h: in_shape[2],
                w: in_shape[3],
                cin: in_shape[1],
                cpitch: lx.pitch as u64,
                cq: kc.cq,
                win: *win,
                out: [out_shape[1], out_shape[2]],
            };
            let m = in_shape[0] * out_shape[1] * out_shape[2];
            let kl = g.k_layout();
            let blocks = gemm::choose_blocks(ctx, m, out_shape[0], kl, true)?;
            let (baddr, ld) = kc.b.ok_or("weights were not placed")?;
            let op = GemmOp {
                m,
                n: out_shape[0],
                k: kl,
                a: ASrc::Im2col(g),
                b: BSrc::Packed { addr: baddr, ld },
                bias: kc.bias,
                out: at(*out)?,
                ldc: lo.pitch as u64,
                residual: match residual {
                    Some(z) => Some((at(*z)?, lay(*z)?.pitch as u64)),
                    None => None,
                },
                act: *act,
            };
            gemm::emit(ctx, &op, blocks, zero, &mut GemmState::default(), &mut b)?;
        }
        Kernel::Mean { x, dims, out } => {
            let (lx, lo) = (lay(*x)?, lay(*out)?);
            let (ones, ld) = kc.b.ok_or("the averaging row was not placed")?;
            let blocks = gemm::choose_blocks(ctx, 1, dims[1], dims[2], false)?;
            let mut st = GemmState::default();
            for bi in 0..dims[0] {
                let op = GemmOp {
                    m: 1,
                    n: dims[1],
                    k: dims[2],
                    a: ASrc::Dense { addr: ones, ld },
                    b: BSrc::Dense {
                        addr: at(*x)? + bi * dims[2] * lx.pitch as u64 * 4,
                        ld: lx.pitch as u64,
                    },
                    bias: None,
                    out: at(*out)? + bi * lo.pitch as u64 * 4,
                    ldc: lo.pitch as u64,
                    residual: None,
                    act: gemm::Act::None,
                };
                gemm::emit(ctx, &op, blocks, zero, &mut st, &mut b)?;
            }
        }
        Kernel::Softmax { x, rows, cols, out } => {
            let lx = lay(*x)?;
            let op = SoftmaxOp {
                x: at(*x)?,
                out: at(*out)?,
                rows: *rows,
                cols: *cols,
                pitch: lx.pitch as u64,
            };
            rows::emit_softmax(ctx, &op, &mut b)?;
        }
        Kernel::MaxPool {
            x,
            in_shape,
            out_hw,
            win,
            out,
        } => {
            let lx = lay(*x)?;
            let op = MaxPoolOp {
                x: at(*x)?,
                out: at(*out)?,
                n: in_shape[0],
                h: in_shape[2],
                w: in_shape[3],
                c: in_shape[1],
                cpitch: lx.pitch as u64,
                out_hw: *out_hw,
                win: *win,
            };
            rows::emit_maxpool(ctx, &op, &mut b)?;
        }
        Kernel::Transpose {
            x,
            nchw,
            to_last,
            out,
        } => {
            let (lx, lo) = (lay(*x)?, lay(*out)?);
            let (wpitch, cpitch) = if *to_last {
                (lx.pitch, lo.pitch)
            } else {
                (lo.pitch, lx.pitch)
            };
            let op = TransposeOp {
                x: at(*x)?,
                out: at(*out)?,
                nchw: *nchw,
                to_last: *to_last,
                wpitch: wpitch as u64,
                cpitch: cpitch as u64,
            };
            transpose::emit(ctx, &op, &mut b)?;
        }
        Kernel::Concat {
            xs,
            widths,
            rows,
            out,
        } => {
            let inputs = xs
                .iter()
                .zip(widths)
                .map(|(x, w)| Ok((at(*x)?, *w, lay(*x)?.pitch as u64)))
                .collect::<Result<Vec<_>, String>>()?;
            let op = ConcatOp {
                inputs,
                rows: *rows,
                out: at(*out)?,
                out_pitch: lay(*out)?.pitch as u64,
            };
            concat::emit(ctx, &op, &mut b)?;
        }
        Kernel::Elt { op, a, b: arg, out } => {
            let la = lay(*a)?;
            let kind = match op {
                VectorOp::Unary(u) => EltKind::Unary(*u),
                VectorOp::Binary(bo) => EltKind::Binary(*bo),
                other => return Err(format!("no elementwise kernel for {other}")),
            };
            let eb = match arg {
                EltArg::None => EltB::None,
                EltArg::Value(v) => EltB::Full(at(*v)?),
                EltArg::Imm(x) => EltB::Imm(*x),
                EltArg::Const(_) => EltB::Full(kc.elt_b.ok_or("constant was not placed")?),
                EltArg::RowVec(_) => EltB::RowVec(kc.elt_b.ok_or("constant was not placed")?),
            };
            let e = EltOp {
                kind,
                a: at(*a)?,
                b: eb,
                out: at(*out)?,
                len: la.physical_len() as u64,
                row: la.pitch as u64,
            };
            eltwise::emit(ctx, &e, &mut b)?;
        }
    }
    Ok(b.build())
}
