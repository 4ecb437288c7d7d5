//! The semantics of the work instructions: what a DMA, an `mmad` or a vector instruction reads, computes and
//! writes, and how many cycles it takes. Nothing is written here: the scheduler checks races first.

use super::memory::{Region, elements};
use super::{MAX_MACS, Machine, TrapKind};
use crate::dtype::{DType, Value};
use crate::isa::{
    Access, BinaryOp, Dma, Engine, Mem, Mmad, Operand, ReduceOp, UnaryOp, VectorInstr,
};

/// The data and bookkeeping effect of one instruction, computed before anything is written.
pub(super) struct Effect {
    /// The regions read.
    pub(super) reads: Vec<Region>,
    /// The regions written, with their new values.
    pub(super) writes: Vec<(Region, Vec<Value>)>,
    /// The instruction's duration.
    pub(super) cycles: u64,
    /// Work measures for the report and the trace.
    pub(super) args: Vec<(&'static str, u64)>,
}

impl Machine {
    /// A `load` (`load = true`: global memory → buffer) or `store`: strided copy with dtype conversion.
    pub(super) fn dma(&self, d: &Dma, load: bool) -> Result<Effect, TrapKind> {
        let engine = if load { Engine::DmaIn } else { Engine::DmaOut };
        let (src_global, dst_global) = (d.src.mem == Mem::Global, d.dst.mem == Mem::Global);
        if load && (dst_global || !src_global) {
            return Err(TrapKind::BadOperands(
                "load reads global memory and writes a buffer".into(),
            ));
        }
        if !load && (src_global || !dst_global) {
            return Err(TrapKind::BadOperands(
                "store reads a buffer and writes global memory".into(),
            ));
        }
        let n = d.shape.len();
        if !(1..=crate::isa::MAX_DMA_DIMS).contains(&n)
            || d.src_strides.len() != n
            || d.dst_strides.len() != n
        {
            return Err(TrapKind::BadOperands(format!(
                "shape and strides must have the same length, 1 to {}",
                crate::isa::MAX_DMA_DIMS
            )));
        }
        let src = self.region(&d.src, &d.shape, &d.src_strides, engine)?;
        let dst = self.region(&d.dst, &d.shape, &d.dst_strides, engine)?;
        let values = self.read(&src);
        let global = if load { &src } else { &dst };
        let bytes = global.addrs.len() as u64 * global.dtype.size();
        let cycles = self.profile.dma_cycles(bytes);
        Ok(Effect {
            reads: vec![src],
            writes: vec![(dst, values)],
            cycles,
            args: vec![("bytes", bytes)],
        })
    }

    /// An `mmad`: row-major tiles from the profile's A, B and C buffers, summed in ascending k.
    pub(super) fn mmad(&self, m: &Mmad) -> Result<Effect, TrapKind> {
        let p = &self.profile.matrix;
        let want = [
            (&m.a, &p.a_buffer, "A"),
            (&m.b, &p.b_buffer, "B"),
            (&m.c, &p.c_buffer, "C"),
        ];
        for (acc, buf, role) in want {
            if acc.mem.name() != buf {
                return Err(TrapKind::BadOperands(format!(
                    "the cube reads {role} from {buf}, not {}",
                    acc.mem
                )));
            }
        }
        let input = m.a.dtype;
        if m.b.dtype != input {
            return Err(TrapKind::BadOperands(format!(
                "A is {input} but B is {}",
                m.b.dtype
            )));
        }
        if !p.input_dtypes.contains(&input) {
            return Err(TrapKind::Unsupported(format!(
                "matrix unit input dtype {input}"
            )));
        }
        let acc_dtype = if input.is_float() {
            DType::F32
        } else {
            DType::I32
        };
        if m.c.dtype != acc_dtype {
            return Err(TrapKind::BadOperands(format!(
                "{input} inputs accumulate in {acc_dtype}, not {}",
                m.c.dtype
            )));
        }
        let [mt, nt, kt] = m.tiles;
        if mt == 0 || nt == 0 || kt == 0 {
            return Err(TrapKind::BadOperands("tile counts must be positive".into()));
        }
        let [tm, tn, tk] = p.tile;
        let dims = [mt.checked_mul(tm), nt.checked_mul(tn), kt.checked_mul(tk)];
        let [Some(rows), Some(cols), Some(depth)] = dims else {
            return Err(TrapKind::BadOperands("matrix size overflows".into()));
        };
        let macs = rows.saturating_mul(cols).saturating_mul(depth);
        if macs > MAX_MACS {
            return Err(TrapKind::BadOperands(format!(
                "more than {MAX_MACS} multiply-accumulates in one mmad"
            )));
        }
        let a = self.region(&m.a, &[rows, depth], &[depth, 1], Engine::Cube)?;
        let b = self.region(&m.b, &[depth, cols], &[cols, 1], Engine::Cube)?;
        let c = self.region(&m.c, &[rows, cols], &[cols, 1], Engine::Cube)?;
        let (av, bv) = (self.read(&a), self.read(&b));
        let old = if m.accumulate {
            self.read(&c)
        } else {
            Vec::new()
        };
        let (r, n, k) = (rows as usize, cols as usize, depth as usize);
        // Row i of C accumulates a[i][kk]·b[kk][..] for kk ascending: every element sums in ascending k, and the
        // inner loop runs along contiguous rows.
        let out: Vec<Value> = if input.is_float() {
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                av.iter().map(|v| v.as_f32()).collect(),
                bv.iter().map(|v| v.as_f32()).collect(),
            );
            let mut acc: Vec<f32> = if m.accumulate {
                old.iter().map(|v| v.as_f32()).collect()
            } else {
                vec![0.0; r * n]
            };
            for (i, row) in acc.chunks_mut(n).enumerate() {
                for kk in 0..k {
                    let x = a32[i * k + kk];
                    for (c, y) in row.iter_mut().zip(&b32[kk * n..(kk + 1) * n]) {
                        *c += x * y;
                    }
                }
            }
            acc.into_iter().map(Value::Float).collect()
        } else {
            let (ai, bi): (Vec<i32>, Vec<i32>) = (
                av.iter().map(|v| v.as_i32()).collect(),
                bv.iter().map(|v| v.as_i32()).collect(),
            );
            let mut acc: Vec<i32> = if m.accumulate {
                old.iter().map(|v| v.as_i32()).collect()
            } else {
                vec![0; r * n]
            };
            for (i, row) in acc.chunks_mut(n).enumerate() {
                for kk in 0..k {
                    let x = ai[i * k + kk];
                    for (c, y) in row.iter_mut().zip(&bi[kk * n..(kk + 1) * n]) {
                        *c = c.wrapping_add(x.wrapping_mul(*y));
                    }
                }
            }
            acc.into_iter().map(Value::Int).collect()
        };
        let tiles = mt.saturating_mul(nt).saturating_mul(kt);
        let mut reads = vec![a, b];
        if m.accumulate {
            reads.push(c.clone());
        }
        Ok(Effect {
            reads,
            writes: vec![(c, out)],
            cycles: self.profile.mmad_cycles(tiles),
            args: vec![("tiles", tiles), ("macs", macs)],
        })
    }

    /// A vector instruction over contiguous `rows×cols` regions of the buffers the vector unit may access.
    pub(super) fn vector(&self, v: &VectorInstr) -> Result<Effect, TrapKind> {
        let p = &self.profile.vector;
        let op = v.op();
        if !p.ops.contains(&op) {
            return Err(TrapKind::Unsupported(format!("vector op {op}")));
        }
        let [rows, cols] = v.shape();
        if rows == 0 || cols == 0 {
            return Err(TrapKind::BadOperands("shape must be positive".into()));
        }
        let count = elements(&[rows, cols])?;
        let vr = |acc: &Access, n: u64| -> Result<Region, TrapKind> {
            if !p.dtypes.contains(&acc.dtype) {
                return Err(TrapKind::Unsupported(format!("vector dtype {}", acc.dtype)));
            }
            self.block(acc, n, Engine::Vector)
        };
        let same = |a: &Access, b: &Access| -> Result<(), TrapKind> {
            if a.dtype == b.dtype {
                Ok(())
            } else {
                Err(TrapKind::BadOperands(format!(
                    "vec.{op} operands are {} and {}",
                    a.dtype, b.dtype
                )))
            }
        };
        let int_ok = |d: DType| -> Result<(), TrapKind> {
            if d.is_float() || op.supports_int() {
                Ok(())
            } else {
                Err(TrapKind::BadOperands(format!(
                    "vec.{op} is not defined on {d}"
                )))
            }
        };
        let (reads, dst, out) = match v {
            VectorInstr::Unary { op, dst, src, .. } => {
                same(dst, src)?;
                int_ok(src.dtype)?;
                let s = vr(src, count)?;
                let out = self.read(&s).into_iter().map(|x| unary(*op, x)).collect();
                (vec![s], vr(dst, count)?, out)
            }
            VectorInstr::Binary { op, dst, a, b, .. } => {
                same(dst, a)?;
                int_ok(a.dtype)?;
                let ra = vr(a, count)?;
                let av = self.read(&ra);
                let (rb, bv, per): (Option<Region>, Vec<Value>, u64) = match b {
                    Operand::Full(x) | Operand::Row(x) | Operand::Scalar(x) => {
                        same(a, x)?;
                        let n = match b {
                            Operand::Full(_) => count,
                            Operand::Row(_) => rows,
                            _ => 1,
                        };
                        let r = vr(x, n)?;
                        let vals = self.read(&r);
                        (Some(r), vals, count / n)
                    }
                    Operand::Imm(x) => (None, vec![immediate(*x, a.dtype)?], count),
                };
                // Element e of `a` pairs with element e / per of `b`'s values (per = cols for /row, count for one).
                let out = av
                    .iter()
                    .enumerate()
                    .map(|(e, &x)| binary(*op, x, bv[e / per as usize]))
                    .collect::<Vec<_>>();
                let mut reads = vec![ra];
                reads.extend(rb);
                (reads, vr(dst, count)?, out)
            }
            VectorInstr::Reduce { op, dst, src, .. } => {
                same(dst, src)?;
                let s = vr(src, count)?;
                let vals = self.read(&s);
                let out = vals
                    .chunks(cols as usize)
                    .map(|row| reduce(*op, row))
                    .collect();
                (vec![s], vr(dst, rows)?, out)
            }
            VectorInstr::Cast { dst, src, .. } => {
                let s = vr(src, count)?;
                let out = self.read(&s);
                (vec![s], vr(dst, count)?, out)
            }
            VectorInstr::Fill { dst, value, .. } => {
                let x = immediate(*value, dst.dtype)?;
                (Vec::new(), vr(dst, count)?, vec![x; count as usize])
            }
        };
        let cycles = self.profile.vector_op_cycles(op, count);
        Ok(Effect {
            reads,
            writes: vec![(dst, out)],
            cycles,
            args: vec![("elements", count)],
        })
    }
}

/// An immediate converted to an element type: rounded to `f32` for floats; integers must be exact.
fn immediate(x: f64, dtype: DType) -> Result<Value, TrapKind> {
    if dtype.is_float() {
        return Ok(Value::Float(x as f32));
    }
    if x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX) {
        Ok(Value::Int(x as i32))
    } else {
        Err(TrapKind::BadOperands(format!(
            "immediate {x} is not a {dtype} value"
        )))
    }
}

fn unary(op: UnaryOp, x: Value) -> Value {
    match x {
        Value::Float(x) => Value::Float(match op {
            UnaryOp::Copy => x,
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Exp => x.exp(),
            UnaryOp::Ln => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }),
        // Integer dtypes only reach the elementwise class (checked by the caller).
        Value::Int(x) => Value::Int(match op {
            UnaryOp::Neg => x.wrapping_neg(),
            UnaryOp::Abs => x.wrapping_abs(),
            UnaryOp::Relu => x.max(0),
            _ => x,
        }),
    }
}

fn binary(op: BinaryOp, a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => Value::Int(match op {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            // Integer division is rejected before execution.
            BinaryOp::Div => a,
        }),
        (a, b) => {
            let (a, b) = (a.as_f32(), b.as_f32());
            Value::Float(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                BinaryOp::Max => a.max(b),
                BinaryOp::Min => a.min(b),
            })
        }
    }
}

fn reduce(op: ReduceOp, row: &[Value]) -> Value {
    let mut it = row.iter().copied();
    let Some(first) = it.next() else {
        return Value::Float(0.0);
    };
    it.fold(first, |acc, x| match (acc, x) {
        (Value::Int(a), Value::Int(b)) => Value::Int(match op {
            ReduceOp::Sum => a.wrapping_add(b),
            ReduceOp::Max => a.max(b),
            ReduceOp::Min => a.min(b),
        }),
        (a, b) => {
            let (a, b) = (a.as_f32(), b.as_f32());
            Value::Float(match op {
                ReduceOp::Sum => a + b,
                ReduceOp::Max => a.max(b),
                ReduceOp::Min => a.min(b),
            })
        }
    })
}
