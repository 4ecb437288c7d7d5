//! The instruction set of the simulated NPU.
//!
//! A [`Program`] is a fully unrolled list of [`Instr`]uctions for one core. There are no scalar registers and no
//! branches: the compiler unrolls loops when it emits a program (so every address is static, the simulator can
//! check every access exactly, and the timing model needs no branch prediction). The in-order scalar front end
//! dispatches each instruction, in program order and at no cost, to the queue of the [`Engine`] that executes it:
//!
//! | engine    | instructions                                                   |
//! |-----------|----------------------------------------------------------------|
//! | `dma_in`  | `load` (global memory → on-chip buffer)                        |
//! | `dma_out` | `store` (on-chip buffer → global memory)                       |
//! | `cube`    | `mmad` (matrix tile multiply-accumulate)                       |
//! | `vector`  | `vec.*` (elementwise, broadcast, row reductions, casts, fill)  |
//!
//! Each queue runs its instructions in order, one at a time; different queues run concurrently. Ordering *between*
//! queues exists only where the program states it: `set_flag src=A dst=B id=N` (issued on queue A, fires once
//! everything before it on A has finished) and `wait_flag src=A dst=B id=N` (issued on queue B, holds B until the
//! matching `set_flag` fired; the n-th wait on a triple matches the n-th set, so flags count), and `barrier`
//! (every queue waits until every queue has reached it). Two instructions on different queues that touch
//! overlapping bytes, one of them writing, must be ordered by these; otherwise the simulator traps with a race.
//!
//! Addresses are byte offsets into a memory ([`Mem`]): global memory (`gm`) or an on-chip buffer named by the
//! profile. Strides and shapes count elements. The text form (see [`text`]) and the binary encoding (see
//! [`binary`]) both describe exactly these types.

pub mod binary;
pub mod text;

use std::fmt;

use crate::dtype::DType;

/// The most dimensions a DMA transfer may have.
pub const MAX_DMA_DIMS: usize = 3;

/// An execution queue of the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// The inbound DMA queue: `load`.
    DmaIn,
    /// The outbound DMA queue: `store`.
    DmaOut,
    /// The matrix unit: `mmad`.
    Cube,
    /// The vector unit: `vec.*`.
    Vector,
}

impl Engine {
    /// Every engine, in track order (the order of trace tracks and of tie-breaks in the simulator).
    pub const ALL: [Engine; 4] = [Engine::DmaIn, Engine::DmaOut, Engine::Cube, Engine::Vector];

    /// The engine's name in the assembly text.
    pub fn name(self) -> &'static str {
        match self {
            Engine::DmaIn => "dma_in",
            Engine::DmaOut => "dma_out",
            Engine::Cube => "cube",
            Engine::Vector => "vector",
        }
    }

    /// Looks an engine up by its name.
    pub fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The engine's position in [`Engine::ALL`].
    pub fn index(self) -> usize {
        match self {
            Engine::DmaIn => 0,
            Engine::DmaOut => 1,
            Engine::Cube => 2,
            Engine::Vector => 3,
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A memory: global memory or an on-chip buffer named by the profile.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mem {
    /// Global (off-chip) memory, written `gm`.
    Global,
    /// An on-chip buffer, by its profile name.
    Buffer(String),
}

impl Mem {
    /// The memory's name: `gm` or the buffer's name.
    pub fn name(&self) -> &str {
        match self {
            Mem::Global => "gm",
            Mem::Buffer(name) => name,
        }
    }
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed memory operand: `MEM[byte offset]:dtype`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The memory the operand lives in.
    pub mem: Mem,
    /// The byte offset of the first element.
    pub offset: u64,
    /// The element type stored there.
    pub dtype: DType,
}

impl Access {
    /// An operand in the on-chip buffer `name`.
    pub fn buf(name: &str, offset: u64, dtype: DType) -> Access {
        Access {
            mem: Mem::Buffer(name.to_string()),
            offset,
            dtype,
        }
    }

    /// An operand in global memory.
    pub fn gm(offset: u64, dtype: DType) -> Access {
        Access {
            mem: Mem::Global,
            offset,
            dtype,
        }
    }
}

/// A strided DMA transfer of a 1-, 2- or 3-D block of elements.
///
/// Element `(i, j, k)` of `shape` is read from `src.offset + Σ idx·src_strides` elements and written to
/// `dst.offset + Σ idx·dst_strides` elements, converted from `src.dtype` to `dst.dtype` (rounding as in
/// [`crate::dtype`]). `shape`, `src_strides` and `dst_strides` have the same length, 1 to [`MAX_DMA_DIMS`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dma {
    /// Where the elements go.
    pub dst: Access,
    /// Where the elements come from.
    pub src: Access,
    /// The block's extent per dimension, outermost first.
    pub shape: Vec<u64>,
    /// Destination strides in elements, one per dimension.
    pub dst_strides: Vec<u64>,
    /// Source strides in elements, one per dimension.
    pub src_strides: Vec<u64>,
}

/// A matrix-unit tile operation: `C (+)= A · B`.
///
/// With the profile's tile `M×N×K` and `tiles = [mt, nt, kt]`: A is a row-major `(mt·M)×(kt·K)` matrix at `a`, B a
/// row-major `(kt·K)×(nt·N)` matrix at `b`, C a row-major `(mt·M)×(nt·N)` matrix at `c`. Products are exact in the
/// accumulator type and summed in ascending `k` order onto C (if `accumulate`) or onto zero.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mmad {
    /// The accumulator matrix (in the profile's C buffer, accumulator dtype).
    pub c: Access,
    /// The left matrix (in the profile's A buffer).
    pub a: Access,
    /// The right matrix (in the profile's B buffer).
    pub b: Access,
    /// Tile counts along M, N and K.
    pub tiles: [u64; 3],
    /// Whether C's old contents are added to (`true`) or overwritten (`false`).
    pub accumulate: bool,
}

/// An elementwise operation on one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// Copy.
    Copy,
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `max(x, 0)`.
    Relu,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Square root.
    Sqrt,
    /// `1/√x`.
    Rsqrt,
    /// `1/x`.
    Recip,
    /// Hyperbolic tangent.
    Tanh,
    /// `1/(1+e^-x)`.
    Sigmoid,
}

/// An elementwise operation on two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b` (floats only).
    Div,
    /// `max(a, b)`.
    Max,
    /// `min(a, b)`.
    Min,
}

/// A reduction along each row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum (in `f32` for floats, wrapping `i32` for integers), left to right.
    Sum,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// Every vector-unit operation, as listed in a profile's `vector.ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorOp {
    /// An elementwise unary op.
    Unary(UnaryOp),
    /// An elementwise binary op.
    Binary(BinaryOp),
    /// A row reduction.
    Reduce(ReduceOp),
    /// A dtype conversion.
    Cast,
    /// Fill with an immediate.
    Fill,
}

/// The cost class of a vector op; a profile gives cycles per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Simple arithmetic: add, sub, mul, max, min, neg, abs, relu, copy, fill.
    Elementwise,
    /// Division and transcendental functions: div, recip, exp, ln, sqrt, rsqrt, tanh, sigmoid.
    Transcendental,
    /// Row reductions.
    Reduce,
    /// Dtype conversions.
    Cast,
}

impl VectorOp {
    /// Every vector op, in encoding order.
    pub const ALL: [VectorOp; 22] = [
        VectorOp::Unary(UnaryOp::Copy),
        VectorOp::Unary(UnaryOp::Neg),
        VectorOp::Unary(UnaryOp::Abs),
        VectorOp::Unary(UnaryOp::Relu),
        VectorOp::Unary(UnaryOp::Exp),
        VectorOp::Unary(UnaryOp::Ln),
        VectorOp::Unary(UnaryOp::Sqrt),
        VectorOp::Unary(UnaryOp::Rsqrt),
        VectorOp::Unary(UnaryOp::Recip),
        VectorOp::Unary(UnaryOp::Tanh),
        VectorOp::Unary(UnaryOp::Sigmoid),
        VectorOp::Binary(BinaryOp::Add),
        VectorOp::Binary(BinaryOp::Sub),
        VectorOp::Binary(BinaryOp::Mul),
        VectorOp::Binary(BinaryOp::Div),
        VectorOp::Binary(BinaryOp::Max),
        VectorOp::Binary(BinaryOp::Min),
        VectorOp::Reduce(ReduceOp::Sum),
        VectorOp::Reduce(ReduceOp::Max),
        VectorOp::Reduce(ReduceOp::Min),
        VectorOp::Cast,
        VectorOp::Fill,
    ];

    /// The op's name, as in profiles and after `vec.` in the assembly text.
    pub fn name(self) -> &'static str {
        match self {
            VectorOp::Unary(op) => match op {
                UnaryOp::Copy => "copy",
                UnaryOp::Neg => "neg",
                UnaryOp::Abs => "abs",
                UnaryOp::Relu => "relu",
                UnaryOp::Exp => "exp",
                UnaryOp::Ln => "ln",
                UnaryOp::Sqrt => "sqrt",
                UnaryOp::Rsqrt => "rsqrt",
                UnaryOp::Recip => "recip",
                UnaryOp::Tanh => "tanh",
                UnaryOp::Sigmoid => "sigmoid",
            },
            VectorOp::Binary(op) => match op {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
                BinaryOp::Max => "max",
                BinaryOp::Min => "min",
            },
            VectorOp::Reduce(op) => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Max => "reduce_max",
                ReduceOp::Min => "reduce_min",
            },
            VectorOp::Cast => "cast",
            VectorOp::Fill => "fill",
        }
    }

    /// Looks a vector op up by name.
    pub fn from_name(name: &str) -> Option<VectorOp> {
        VectorOp::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The op's cost class.
    pub fn class(self) -> OpClass {
        match self {
            VectorOp::Unary(op) => match op {
                UnaryOp::Copy | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => OpClass::Elementwise,
                UnaryOp::Exp
                | UnaryOp::Ln
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Recip
                | UnaryOp::Tanh
                | UnaryOp::Sigmoid => OpClass::Transcendental,
            },
            VectorOp::Binary(BinaryOp::Div) => OpClass::Transcendental,
            VectorOp::Binary(_) | VectorOp::Fill => OpClass::Elementwise,
            VectorOp::Reduce(_) => OpClass::Reduce,
            VectorOp::Cast => OpClass::Cast,
        }
    }

    /// Whether the op is defined on integer elements (division and transcendental functions are not).
    pub fn supports_int(self) -> bool {
        self.class() != OpClass::Transcendental
    }
}

impl fmt::Display for VectorOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The second operand of a binary vector op.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A full `rows×cols` region (written `MEM[off]:dtype`).
    Full(Access),
    /// One element per row, broadcast along the row (written `MEM[off]:dtype/row`): `rows` contiguous elements.
    Row(Access),
    /// One element broadcast everywhere (written `MEM[off]:dtype/all`).
    Scalar(Access),
    /// An immediate (written `#value`), converted to the op's dtype.
    Imm(f64),
}

/// A vector instruction. Every region is a contiguous row-major `rows×cols` block (`shape = [rows, cols]`); all
/// operands are read before any result is written, so in-place operations are well defined.
#[derive(Clone, Debug, PartialEq)]
pub enum VectorInstr {
    /// `dst = op(src)`; `dst` and `src` have the same dtype.
    Unary {
        /// The operation.
        op: UnaryOp,
        /// The result region.
        dst: Access,
        /// The input region.
        src: Access,
        /// `[rows, cols]`.
        shape: [u64; 2],
    },
    /// `dst = op(a, b)`; all operands have the same dtype.
    Binary {
        /// The operation.
        op: BinaryOp,
        /// The result region.
        dst: Access,
        /// The first input region.
        a: Access,
        /// The second input: a region, a per-row or scalar broadcast, or an immediate.
        b: Operand,
        /// `[rows, cols]`.
        shape: [u64; 2],
    },
    /// `dst[r] = op over c of src[r, c]`: `rows` contiguous results, same dtype as `src`.
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The `rows` results.
        dst: Access,
        /// The input region.
        src: Access,
        /// `[rows, cols]`.
        shape: [u64; 2],
    },
    /// `dst = src` converted from `src.dtype` to `dst.dtype`.
    Cast {
        /// The result region.
        dst: Access,
        /// The input region.
        src: Access,
        /// `[rows, cols]`.
        shape: [u64; 2],
    },
    /// `dst = value` converted to `dst.dtype`.
    Fill {
        /// The result region.
        dst: Access,
        /// The value.
        value: f64,
        /// `[rows, cols]`.
        shape: [u64; 2],
    },
}

impl VectorInstr {
    /// The profile-level op this instruction performs.
    pub fn op(&self) -> VectorOp {
        match self {
            VectorInstr::Unary { op, .. } => VectorOp::Unary(*op),
            VectorInstr::Binary { op, .. } => VectorOp::Binary(*op),
            VectorInstr::Reduce { op, .. } => VectorOp::Reduce(*op),
            VectorInstr::Cast { .. } => VectorOp::Cast,
            VectorInstr::Fill { .. } => VectorOp::Fill,
        }
    }

    /// `[rows, cols]` of the instruction.
    pub fn shape(&self) -> [u64; 2] {
        match self {
            VectorInstr::Unary { shape, .. }
            | VectorInstr::Binary { shape, .. }
            | VectorInstr::Reduce { shape, .. }
            | VectorInstr::Cast { shape, .. }
            | VectorInstr::Fill { shape, .. } => *shape,
        }
    }
}

/// A cross-engine event: fired by `src`, awaited by `dst`, numbered `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flag {
    /// The engine that sets the flag.
    pub src: Engine,
    /// The engine that waits on it.
    pub dst: Engine,
    /// The event number.
    pub id: u8,
}

/// One instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Instr {
    /// Global memory → buffer (queue `dma_in`).
    Load(Dma),
    /// Buffer → global memory (queue `dma_out`).
    Store(Dma),
    /// Matrix tile multiply-accumulate (queue `cube`).
    Mmad(Mmad),
    /// A vector-unit instruction (queue `vector`).
    Vector(VectorInstr),
    /// Fire a flag once everything before it on `flag.src` has finished (queue `flag.src`).
    SetFlag(Flag),
    /// Hold queue `flag.dst` until the matching `set_flag` has fired.
    WaitFlag(Flag),
    /// Every queue waits until every queue has reached this point.
    Barrier,
}

impl Instr {
    /// The queue the instruction runs on; `None` for `barrier`, which is on every queue.
    pub fn engine(&self) -> Option<Engine> {
        match self {
            Instr::Load(_) => Some(Engine::DmaIn),
            Instr::Store(_) => Some(Engine::DmaOut),
            Instr::Mmad(_) => Some(Engine::Cube),
            Instr::Vector(_) => Some(Engine::Vector),
            Instr::SetFlag(f) => Some(f.src),
            Instr::WaitFlag(f) => Some(f.dst),
            Instr::Barrier => None,
        }
    }

    /// The instruction's mnemonic (`load`, `vec.add`, …).
    pub fn mnemonic(&self) -> String {
        match self {
            Instr::Load(_) => "load".into(),
            Instr::Store(_) => "store".into(),
            Instr::Mmad(_) => "mmad".into(),
            Instr::Vector(v) => format!("vec.{}", v.op().name()),
            Instr::SetFlag(_) => "set_flag".into(),
            Instr::WaitFlag(_) => "wait_flag".into(),
            Instr::Barrier => "barrier".into(),
        }
    }
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        text::write_instr(f, self)
    }
}

/// A fully unrolled program for one core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    /// The instructions, in dispatch order.
    pub instrs: Vec<Instr>,
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for instr in &self.instrs {
            text::write_instr(f, instr)?;
            writeln!(f)?;
        }
        Ok(())
    }
}
