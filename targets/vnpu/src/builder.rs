//! [`ProgramBuilder`]: how a code generator emits vnpu programs.
//!
//! The builder appends instructions in dispatch order and offers shorthands for the common shapes (contiguous
//! 2-D loads and stores, a `set_flag`/`wait_flag` pair). It checks nothing: the simulator is the single place that
//! validates a program against a profile, so a generator's mistakes surface as traps with instruction indices.
//!
//! ```
//! use jiuzhou_target_vnpu::{Access, DType, Engine, Machine, Profile, ProgramBuilder, UnaryOp};
//!
//! let mut b = ProgramBuilder::new();
//! b.load_2d(Access::buf("UB", 0, DType::F32), Access::gm(0, DType::F32), 1, 8, 8)
//!     .sync(Engine::DmaIn, Engine::Vector, 0)
//!     .unary(UnaryOp::Relu, Access::buf("UB", 0, DType::F32), Access::buf("UB", 0, DType::F32), [1, 8])
//!     .sync(Engine::Vector, Engine::DmaOut, 0)
//!     .store_2d(Access::gm(0, DType::F32), Access::buf("UB", 0, DType::F32), 1, 8, 8);
//! let mut m = Machine::new(Profile::by_name("default").unwrap()).unwrap();
//! m.write_global_values(0, DType::F32, &[-1.0, 2.0, -3.0, 4.0, 0.0, 1.0, -1.0, 5.0]).unwrap();
//! m.run(&b.build()).unwrap();
//! assert_eq!(m.read_global_values(0, DType::F32, 8).unwrap(), [0.0, 2.0, 0.0, 4.0, 0.0, 1.0, 0.0, 5.0]);
//! ```

use crate::isa::{
    Access, BinaryOp, Dma, Engine, Flag, Instr, Mmad, Operand, Program, ReduceOp, UnaryOp,
    VectorInstr,
};

/// Appends instructions to a program.
#[derive(Debug, Clone, Default)]
pub struct ProgramBuilder {
    instrs: Vec<Instr>,
}

impl ProgramBuilder {
    /// An empty program.
    pub fn new() -> ProgramBuilder {
        ProgramBuilder::default()
    }

    /// Appends any instruction.
    pub fn push(&mut self, instr: Instr) -> &mut Self {
        self.instrs.push(instr);
        self
    }

    /// The number of instructions so far (the index the next one will get).
    pub fn len(&self) -> usize {
        self.instrs.len()
    }

    /// Whether no instruction was added yet.
    pub fn is_empty(&self) -> bool {
        self.instrs.is_empty()
    }

    /// A strided load (global memory → buffer).
    pub fn load(
        &mut self,
        dst: Access,
        src: Access,
        shape: &[u64],
        dst_strides: &[u64],
        src_strides: &[u64],
    ) -> &mut Self {
        self.push(Instr::Load(dma(dst, src, shape, dst_strides, src_strides)))
    }

    /// A strided store (buffer → global memory).
    pub fn store(
        &mut self,
        dst: Access,
        src: Access,
        shape: &[u64],
        dst_strides: &[u64],
        src_strides: &[u64],
    ) -> &mut Self {
        self.push(Instr::Store(dma(dst, src, shape, dst_strides, src_strides)))
    }

    /// Loads a `rows×cols` block whose rows are `src_row_stride` elements apart into a contiguous block.
    pub fn load_2d(
        &mut self,
        dst: Access,
        src: Access,
        rows: u64,
        cols: u64,
        src_row_stride: u64,
    ) -> &mut Self {
        self.load(dst, src, &[rows, cols], &[cols, 1], &[src_row_stride, 1])
    }

    /// Stores a contiguous `rows×cols` block into rows `dst_row_stride` elements apart.
    pub fn store_2d(
        &mut self,
        dst: Access,
        src: Access,
        rows: u64,
        cols: u64,
        dst_row_stride: u64,
    ) -> &mut Self {
        self.store(dst, src, &[rows, cols], &[dst_row_stride, 1], &[cols, 1])
    }

    /// `C (+)= A · B` over `tiles = [mt, nt, kt]` profile tiles.
    pub fn mmad(
        &mut self,
        c: Access,
        a: Access,
        b: Access,
        tiles: [u64; 3],
        accumulate: bool,
    ) -> &mut Self {
        self.push(Instr::Mmad(Mmad {
            c,
            a,
            b,
            tiles,
            accumulate,
        }))
    }

    /// `dst = op(src)` over `[rows, cols]`.
    pub fn unary(&mut self, op: UnaryOp, dst: Access, src: Access, shape: [u64; 2]) -> &mut Self {
        self.push(Instr::Vector(VectorInstr::Unary {
            op,
            dst,
            src,
            shape,
        }))
    }

    /// `dst = op(a, b)` over `[rows, cols]`.
    pub fn binary(
        &mut self,
        op: BinaryOp,
        dst: Access,
        a: Access,
        b: Operand,
        shape: [u64; 2],
    ) -> &mut Self {
        self.push(Instr::Vector(VectorInstr::Binary {
            op,
            dst,
            a,
            b,
            shape,
        }))
    }

    /// `dst[r] = op(src[r, ..])` over `[rows, cols]`.
    pub fn reduce(&mut self, op: ReduceOp, dst: Access, src: Access, shape: [u64; 2]) -> &mut Self {
        self.push(Instr::Vector(VectorInstr::Reduce {
            op,
            dst,
            src,
            shape,
        }))
    }

    /// `dst = src` converted to `dst`'s dtype over `[rows, cols]`.
    pub fn cast(&mut self, dst: Access, src: Access, shape: [u64; 2]) -> &mut Self {
        self.push(Instr::Vector(VectorInstr::Cast { dst, src, shape }))
    }

    /// `dst = value` over `[rows, cols]`.
    pub fn fill(&mut self, dst: Access, value: f64, shape: [u64; 2]) -> &mut Self {
        self.push(Instr::Vector(VectorInstr::Fill { dst, value, shape }))
    }

    /// `set_flag` on `src` for `dst`.
    pub fn set_flag(&mut self, src: Engine, dst: Engine, id: u8) -> &mut Self {
        self.push(Instr::SetFlag(Flag { src, dst, id }))
    }

    /// `wait_flag` on `dst` for `src`.
    pub fn wait_flag(&mut self, src: Engine, dst: Engine, id: u8) -> &mut Self {
        self.push(Instr::WaitFlag(Flag { src, dst, id }))
    }

    /// `set_flag` then `wait_flag`: everything `src` issued so far happens before whatever `dst` issues next.
    pub fn sync(&mut self, src: Engine, dst: Engine, id: u8) -> &mut Self {
        self.set_flag(src, dst, id).wait_flag(src, dst, id)
    }

    /// A barrier across all queues.
    pub fn barrier(&mut self) -> &mut Self {
        self.push(Instr::Barrier)
    }

    /// Appends every instruction of `program` (e.g. a kernel built separately).
    pub fn append(&mut self, program: &Program) -> &mut Self {
        self.instrs.extend(program.instrs.iter().cloned());
        self
    }

    /// The finished program.
    pub fn build(self) -> Program {
        Program {
            instrs: self.instrs,
        }
    }
}

fn dma(dst: Access, src: Access, shape: &[u64], dst_strides: &[u64], src_strides: &[u64]) -> Dma {
    Dma {
        dst,
        src,
        shape: shape.to_vec(),
        dst_strides: dst_strides.to_vec(),
        src_strides: src_strides.to_vec(),
    }
}
