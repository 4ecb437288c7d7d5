//! Elementwise f32 kernels generated and JIT-compiled with Cranelift.
//!
//! Every kernel is one function over `n` contiguous elements. A binary kernel exists once per (op, operand pattern):
//! each operand is either a vector (advancing one element per output) or a scalar (one element broadcast along the
//! whole run); the caller ([`crate::elementwise`]) walks the outer, broadcast dims and calls the kernel once per
//! contiguous run. The loop body is unrolled by hand, four `f32x4` vectors (16 elements) per iteration, since
//! Cranelift does not unroll; a scalar loop handles the remainder. Max-with-constant (Relu, Clip) is written as a
//! compare and a `bitselect`, which Cranelift lowers to one `maxps`/`minps`; the operand order decides what a NaN
//! gives, chosen to match the reference (Relu(NaN) = 0, Clip(NaN) = NaN).
//! The ISA flags come from `cranelift_native`, so the code uses what the host CPU has.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
pub use cranelift_module::FuncId;
use cranelift_module::{Linkage, Module, default_libcall_names};

/// A generated unary kernel: `out[i] = op(x[i])` for `i < n`.
pub type UnaryFn = unsafe extern "C" fn(x: *const f32, out: *mut f32, n: usize);

/// A generated binary kernel: `out[i] = op(a[i or 0], b[i or 0])` for `i < n`, per the operand pattern.
pub type BinaryFn = unsafe extern "C" fn(a: *const f32, b: *const f32, out: *mut f32, n: usize);

/// A unary elementwise operation the code generator knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// `max(x, 0)`; NaN gives 0 (as Rust's `f32::max` in the reference).
    Relu,
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `sqrt(x)`.
    Sqrt,
    /// `min(max(x, lo), hi)`, NaN stays NaN.
    Clip {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
}

/// A binary elementwise operation the code generator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)`, NaN if either is NaN.
    Max,
    /// `min(a, b)`, NaN if either is NaN.
    Min,
}

/// How a binary kernel reads an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// One element per output element.
    Vector,
    /// The same element for every output element.
    Scalar,
}

/// Why code generation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cranelift code generation failed: {0}")]
pub struct JitError(pub String);

fn err(e: impl std::fmt::Display) -> JitError {
    JitError(e.to_string())
}

/// Owns the machine code of the kernels of one executable.
///
/// Functions are generated on demand and deduplicated by their key; [`Jit::finish`] makes them executable.
pub struct Jit {
    module: Option<JITModule>,
    ctx: FunctionBuilderContext,
    unary: HashMap<(u8, u32, u32), FuncId>,
    binary: HashMap<(BinaryOp, Operand, Operand), FuncId>,
    finalized: bool,
}

// SAFETY: after `finish`, the module is never touched again except to free its memory on drop; the generated code
// is pure (it only reads and writes the pointers it is given), so calling it from several threads is fine.
unsafe impl Send for Jit {}
// SAFETY: see `Send`; no method that takes `&self` mutates the module.
unsafe impl Sync for Jit {}

impl Drop for Jit {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the function pointers handed out by this `Jit` live in kernels owned by the same executable,
            // which drops them together with (never after) this value.
            unsafe { m.free_memory() };
        }
    }
}

fn unary_key(op: UnaryOp) -> (u8, u32, u32) {
    match op {
        UnaryOp::Relu => (0, 0, 0),
        UnaryOp::Neg => (1, 0, 0),
        UnaryOp::Abs => (2, 0, 0),
        UnaryOp::Sqrt => (3, 0, 0),
        UnaryOp::Clip { lo, hi } => (4, lo.to_bits(), hi.to_bits()),
    }
}

impl Jit {
    /// A fresh module for the host CPU.
    pub fn new() -> Result<Jit, JitError> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(err)?;
        flags.set("is_pic", "false").map_err(err)?;
        let isa = cranelift_native::builder()
            .map_err(err)?
            .finish(settings::Flags::new(flags))
            .map_err(err)?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        Ok(Jit {
            module: Some(module),
            ctx: FunctionBuilderContext::new(),
            unary: HashMap::new(),
            binary: HashMap::new(),
            finalized: false,
        })
    }

    fn module(&mut self) -> Result<&mut JITModule, JitError> {
        if self.finalized {
            return Err(JitError("the module is already finalized".into()));
        }
        self.module
            .as_mut()
            .ok_or_else(|| JitError("the module is gone".into()))
    }

    /// Declares (once) the kernel of a unary op.
    pub fn unary(&mut self, op: UnaryOp) -> Result<FuncId, JitError> {
        let key = unary_key(op);
        if let Some(&id) = self.unary.get(&key) {
            return Ok(id);
        }
        let name = format!("unary_{}_{}_{}", key.0, key.1, key.2);
        let id = self.define(&name, 2, |b, v, ty| emit_unary(b, op, v[0], ty), &[])?;
        self.unary.insert(key, id);
        Ok(id)
    }

    /// Declares (once) the kernel of a binary op for one operand pattern.
    pub fn binary(&mut self, op: BinaryOp, a: Operand, b: Operand) -> Result<FuncId, JitError> {
        if let Some(&id) = self.binary.get(&(op, a, b)) {
            return Ok(id);
        }
        let name = format!("binary_{op:?}_{a:?}_{b:?}");
        let id = self.define(
            &name,
            3,
            |bld, v, _| emit_binary(bld, op, v[0], v[1]),
            &[a, b],
        )?;
        self.binary.insert((op, a, b), id);
        Ok(id)
    }

    /// Makes every declared function executable; no function can be added afterwards.
    pub fn finish(&mut self) -> Result<(), JitError> {
        self.module()?.finalize_definitions().map_err(err)?;
        self.finalized = true;
        Ok(())
    }

    fn code(&self, id: FuncId) -> Result<*const u8, JitError> {
        match (&self.module, self.finalized) {
            (Some(m), true) => Ok(m.get_finalized_function(id)),
            _ => Err(JitError("the module is not finalized".into())),
        }
    }

    /// The code of a finalized unary kernel.
    pub fn unary_fn(&self, id: FuncId) -> Result<UnaryFn, JitError> {
        let p = self.code(id)?;
        // SAFETY: `id` was declared by `unary` with exactly this signature (two pointers and a length).
        Ok(unsafe { std::mem::transmute::<*const u8, UnaryFn>(p) })
    }

    /// The code of a finalized binary kernel.
    pub fn binary_fn(&self, id: FuncId) -> Result<BinaryFn, JitError> {
        let p = self.code(id)?;
        // SAFETY: `id` was declared by `binary` with exactly this signature (three pointers and a length).
        Ok(unsafe { std::mem::transmute::<*const u8, BinaryFn>(p) })
    }

    /// Defines `fn(in_0, .., in_{k-1}, out, n)` with `k = ptrs - 1` inputs, applying `body` per element (or per
    /// `f32x4` vector). `modes` gives the operand pattern of each input (all vectors when empty).
    fn define(
        &mut self,
        name: &str,
        ptrs: usize,
        body: impl Fn(&mut FunctionBuilder<'_>, &[Value], Type) -> Value,
        modes: &[Operand],
    ) -> Result<FuncId, JitError> {
        let mut fctx = std::mem::take(&mut self.ctx);
        let module = self.module()?;
        let config = module.target_config();
        let ptr = config.pointer_type();
        let mut ctx = module.make_context();
        for _ in 0..ptrs + 1 {
            ctx.func.signature.params.push(AbiParam::new(ptr));
        }
        let id = module
            .declare_function(name, Linkage::Local, &ctx.func.signature)
            .map_err(err)?;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            build_loops(&mut b, ptr, ptrs - 1, modes, &body);
            b.finalize(config);
        }
        module.define_function(id, &mut ctx).map_err(err)?;
        module.clear_context(&mut ctx);
        self.ctx = fctx;
        Ok(id)
    }
}

/// Lanes per vector and vectors per unrolled iteration.
const LANES: i64 = 4;
const UNROLL: i64 = 4;

fn build_loops(
    b: &mut FunctionBuilder<'_>,
    ptr: Type,
    inputs: usize,
    modes: &[Operand],
    body: &dyn Fn(&mut FunctionBuilder<'_>, &[Value], Type) -> Value,
) {
    let mode = |i: usize| modes.get(i).copied().unwrap_or(Operand::Vector);
    let flags = MemFlagsData::new().with_notrap();
    let entry = b.create_block();
    let vhead = b.create_block();
    let vbody = b.create_block();
    let shead = b.create_block();
    let sbody = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.append_block_param(vhead, ptr);
    b.append_block_param(vbody, ptr);
    b.append_block_param(shead, ptr);
    b.append_block_param(sbody, ptr);

    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let (ins, out, n) = (&params[..inputs], params[inputs], params[inputs + 1]);
    let step = LANES * UNROLL;
    let nvec = b.ins().band_imm_s(n, -step);
    // Scalar operands are loaded once (the caller never calls with n == 0) and splatted for the vector loop.
    let mut scalars = Vec::new();
    let mut splats = Vec::new();
    for (i, &p) in ins.iter().enumerate() {
        if mode(i) == Operand::Scalar {
            let s = b.ins().load(types::F32, flags, p, 0);
            scalars.push(Some(s));
            splats.push(Some(b.ins().splat(types::F32X4, s)));
        } else {
            scalars.push(None);
            splats.push(None);
        }
    }
    let zero = b.ins().iconst(ptr, 0);
    b.ins().jump(vhead, &[zero.into()]);

    // Vector loop: 16 elements per iteration.
    b.switch_to_block(vhead);
    let i = b.block_params(vhead)[0];
    let more = b.ins().icmp(
        cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan,
        i,
        nvec,
    );
    b.ins().brif(more, vbody, &[i.into()], shead, &[i.into()]);

    b.switch_to_block(vbody);
    let i = b.block_params(vbody)[0];
    let byte = b.ins().ishl_imm_u(i, 2);
    let out_base = b.ins().iadd(out, byte);
    let bases: Vec<Option<Value>> = ins
        .iter()
        .enumerate()
        .map(|(k, &p)| (mode(k) == Operand::Vector).then(|| b.ins().iadd(p, byte)))
        .collect();
    for u in 0..UNROLL {
        let off = (u * LANES * 4) as i32;
        let args: Vec<Value> = (0..inputs)
            .map(|k| match (bases[k], splats[k]) {
                (Some(base), _) => b.ins().load(types::F32X4, flags, base, off),
                (None, Some(s)) => s,
                (None, None) => unreachable!("every operand is a vector or a scalar"),
            })
            .collect();
        let r = body(b, &args, types::F32X4);
        b.ins().store(flags, r, out_base, off);
    }
    let next = b.ins().iadd_imm_s(i, step);
    b.ins().jump(vhead, &[next.into()]);

    // Scalar remainder.
    b.switch_to_block(shead);
    let i = b.block_params(shead)[0];
    let more = b.ins().icmp(
        cranelift_codegen::ir::condcodes::IntCC::UnsignedLessThan,
        i,
        n,
    );
    b.ins().brif(more, sbody, &[i.into()], exit, &[]);

    b.switch_to_block(sbody);
    let i = b.block_params(sbody)[0];
    let byte = b.ins().ishl_imm_u(i, 2);
    let args: Vec<Value> = ins
        .iter()
        .enumerate()
        .map(|(k, &p)| match scalars[k] {
            Some(s) => s,
            None => {
                let a = b.ins().iadd(p, byte);
                b.ins().load(types::F32, flags, a, 0)
            }
        })
        .collect();
    let r = body(b, &args, types::F32);
    let dst = b.ins().iadd(out, byte);
    b.ins().store(flags, r, dst, 0);
    let next = b.ins().iadd_imm_s(i, 1);
    b.ins().jump(shead, &[next.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
}

/// A constant of type `ty` (f32 or f32x4 splat).
fn constant(b: &mut FunctionBuilder<'_>, v: f32, ty: Type) -> Value {
    let s = b.ins().f32const(v);
    if ty == types::F32 {
        s
    } else {
        b.ins().splat(ty, s)
    }
}

/// `lt ? t : f` where `lt = x < y`, written so that the x64 backend turns it into one `maxps`/`minps`.
fn select_lt(
    b: &mut FunctionBuilder<'_>,
    ty: Type,
    x: Value,
    y: Value,
    t: Value,
    f: Value,
) -> Value {
    let c = b.ins().fcmp(FloatCC::LessThan, x, y);
    if ty == types::F32 {
        b.ins().select(c, t, f)
    } else {
        let mask = b.ins().bitcast(
            ty,
            MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
            c,
        );
        b.ins().bitselect(mask, t, f)
    }
}

fn emit_unary(b: &mut FunctionBuilder<'_>, op: UnaryOp, x: Value, ty: Type) -> Value {
    match op {
        // 0 < x ? x : 0, i.e. `maxps x, 0`: like the reference's `x.max(0.0)`, a NaN gives 0.
        UnaryOp::Relu => {
            let z = constant(b, 0.0, ty);
            select_lt(b, ty, z, x, x, z)
        }
        UnaryOp::Neg => b.ins().fneg(x),
        UnaryOp::Abs => b.ins().fabs(x),
        UnaryOp::Sqrt => b.ins().sqrt(x),
        UnaryOp::Clip { lo, hi } => {
            let lo = constant(b, lo, ty);
            let hi = constant(b, hi, ty);
            let m = select_lt(b, ty, x, lo, lo, x);
            select_lt(b, ty, hi, m, hi, m)
        }
    }
}

fn emit_binary(b: &mut FunctionBuilder<'_>, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => b.ins().fadd(x, y),
        BinaryOp::Sub => b.ins().fsub(x, y),
        BinaryOp::Mul => b.ins().fmul(x, y),
        BinaryOp::Div => b.ins().fdiv(x, y),
        BinaryOp::Max => b.ins().fmax(x, y),
        BinaryOp::Min => b.ins().fmin(x, y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_and_add_run() {
        let mut jit = Jit::new().unwrap();
        let r = jit.unary(UnaryOp::Relu).unwrap();
        let a = jit
            .binary(BinaryOp::Add, Operand::Vector, Operand::Scalar)
            .unwrap();
        jit.finish().unwrap();
        let relu = jit.unary_fn(r).unwrap();
        let add = jit.binary_fn(a).unwrap();
        let x: Vec<f32> = (0..37).map(|i| i as f32 - 18.0).collect();
        let mut out = vec![0.0; 37];
        unsafe { relu(x.as_ptr(), out.as_mut_ptr(), x.len()) };
        let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(out, want);
        let s = [0.5f32];
        unsafe { add(x.as_ptr(), s.as_ptr(), out.as_mut_ptr(), x.len()) };
        let want: Vec<f32> = x.iter().map(|v| v + 0.5).collect();
        assert_eq!(out, want);
        let nan = [f32::NAN; 5];
        unsafe { relu(nan.as_ptr(), out.as_mut_ptr(), 5) };
        assert!(out[..5].iter().all(|&v| v == 0.0));
    }
}
