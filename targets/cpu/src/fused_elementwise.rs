//! jiuzhou's `FusedElementwise` on the CPU: the whole expression in one pass over the output.
//!
//! The output is walked like a broadcasting binary kernel ([`crate::elementwise`]): adjacent axes that broadcast
//! alike for every input are merged, then each contiguous run of the innermost axis is cut into blocks of
//! [`BLOCK`] elements. Per block, the expression's postfix program runs on a stack of block-sized registers
//! (an input push copies the block of that input, or splats its one element when the input is broadcast along
//! the run), and the result is stored once. Every input is read once and the output written once, instead of one
//! round trip through memory per op of the chain; the per-op loops over a block are simple enough for the compiler
//! to vectorize.
//!
//! Each op computes what the reference computes for that ONNX op on f32: `+ − × ÷` in f32, `Max`/`Min` with NaN
//! winning, `Neg`/`Abs`/`Relu` exactly, `Sqrt` in f32 (the same correctly rounded result as the reference's f64
//! `sqrt` rounded once), and the other functions (SiLU included) in f64, rounded once, GELU in f32 (all as
//! [`crate::native::Activation`] computes them). The fused node therefore gives bit for bit the result of the
//! chain it replaced on the CPU.

use jiuzhou_ir::ops::ElementwiseExpr;
use jiuzhou_ir::ops::expr::{ExprBinary, ExprStep, ExprUnary};

use crate::ExecError;
use crate::linalg::broadcast_strides;
use crate::native::{Activation, In, NativeKernel, check_buffers};
use crate::parallel::{MIN_CHUNK, Parallel};

/// Elements per block: the registers of a whole expression stay in the L1 cache.
pub const BLOCK: usize = 256;

/// A task's block registers and input offsets.
type Scratch = (Vec<[f32; BLOCK]>, Vec<usize>);

/// The kernel of one `FusedElementwise` node.
#[derive(Clone, Debug)]
pub struct FusedExpr {
    steps: Vec<ExprStep>,
    inputs: usize,
    depth: usize,
}

impl FusedExpr {
    /// The kernel for `expr`.
    pub fn new(expr: &ElementwiseExpr) -> FusedExpr {
        FusedExpr {
            steps: expr.steps().to_vec(),
            inputs: expr.num_inputs(),
            depth: expr.max_depth(),
        }
    }
}

/// numpy's `maximum` on f32 (NaN wins), as the reference.
#[inline]
fn max_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() {
        x
    } else if y.is_nan() || y > x {
        y
    } else {
        x
    }
}

/// numpy's `minimum` on f32 (NaN wins), as the reference.
#[inline]
fn min_nan(x: f32, y: f32) -> f32 {
    if x.is_nan() {
        x
    } else if y.is_nan() || y < x {
        y
    } else {
        x
    }
}

fn unary(op: ExprUnary, r: &mut [f32]) {
    let f64_op = |a: Activation, r: &mut [f32]| a.apply_in_place(r);
    match op {
        ExprUnary::Neg => r.iter_mut().for_each(|v| *v = -*v),
        ExprUnary::Abs => r.iter_mut().for_each(|v| *v = v.abs()),
        // f64::max(NaN, 0) is 0: so is f32::max.
        ExprUnary::Relu => r.iter_mut().for_each(|v| *v = v.max(0.0)),
        ExprUnary::Sqrt => r.iter_mut().for_each(|v| *v = v.sqrt()),
        ExprUnary::Exp => f64_op(Activation::Exp, r),
        ExprUnary::Log => f64_op(Activation::Log, r),
        ExprUnary::Tanh => f64_op(Activation::Tanh, r),
        ExprUnary::Sigmoid => f64_op(Activation::Sigmoid, r),
        ExprUnary::Erf => f64_op(Activation::Erf, r),
        ExprUnary::Reciprocal => f64_op(Activation::Reciprocal, r),
        ExprUnary::Floor => f64_op(Activation::Floor, r),
        ExprUnary::Ceil => f64_op(Activation::Ceil, r),
        ExprUnary::Silu => f64_op(Activation::Swish(1.0), r),
        ExprUnary::Gelu => f64_op(Activation::Gelu, r),
    }
}

fn binary(op: ExprBinary, a: &mut [f32], b: &[f32]) {
    let it = a.iter_mut().zip(b);
    match op {
        ExprBinary::Add => it.for_each(|(x, y)| *x += *y),
        ExprBinary::Sub => it.for_each(|(x, y)| *x -= *y),
        ExprBinary::Mul => it.for_each(|(x, y)| *x *= *y),
        ExprBinary::Div => it.for_each(|(x, y)| *x /= *y),
        ExprBinary::Max => it.for_each(|(x, y)| *x = max_nan(*x, *y)),
        ExprBinary::Min => it.for_each(|(x, y)| *x = min_nan(*x, *y)),
        ExprBinary::Pow => it.for_each(|(x, y)| *x = (*x as f64).powf(*y as f64) as f32),
    }
}

/// The numpy broadcast of several shapes.
fn broadcast_all(shapes: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
    let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; r];
    for s in shapes {
        let off = r - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(ExecError::new(format!(
                    "FusedElementwise: input shapes {shapes:?} do not broadcast"
                )));
            }
        }
    }
    Ok(out)
}

impl NativeKernel for FusedExpr {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        if ins.len() != self.inputs {
            return Err(ExecError::new(format!(
                "FusedElementwise reads {} inputs, got {}",
                self.inputs,
                ins.len()
            )));
        }
        broadcast_all(ins)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let shapes: Vec<&[usize]> = ins.iter().map(|i| i.shape).collect();
        let osh = self.out_shape(&shapes)?;
        check_buffers(ins, out, &osh)?;
        if out.is_empty() {
            return Ok(());
        }
        let r = osh.len();
        let strides: Vec<Vec<usize>> = shapes.iter().map(|s| broadcast_strides(s, r)).collect();
        // Merged axes: (size, stride of each input); axes of size 1 dropped.
        let mut dims: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in 0..r {
            if osh[i] == 1 {
                continue;
            }
            let cur: Vec<usize> = strides.iter().map(|s| s[i]).collect();
            if let Some((size, last)) = dims.last_mut()
                && last.iter().zip(&cur).all(|(l, c)| *l == c * osh[i])
            {
                *size *= osh[i];
                *last = cur;
                continue;
            }
            dims.push((osh[i], cur));
        }
        let (inner, inner_strides) = dims.pop().unwrap_or((1, vec![0; ins.len()]));
        // Elements `[col0, col0 + orow.len())` of row `row`.
        let part = |row: usize, col0: usize, orow: &mut [f32], (regs, offs): &mut Scratch| {
            // The element offset of every input at the start of this row.
            offs.iter_mut().for_each(|o| *o = 0);
            let mut rest = row;
            for (size, st) in dims.iter().rev() {
                let i = rest % size;
                rest /= size;
                for (o, s) in offs.iter_mut().zip(st) {
                    *o += i * s;
                }
            }
            for (b, dst) in orow.chunks_mut(BLOCK).enumerate() {
                let col = col0 + b * BLOCK;
                let n = dst.len();
                let mut sp = 0usize;
                for step in &self.steps {
                    match *step {
                        ExprStep::Input(k) => {
                            let k = k as usize;
                            let (data, o) = (ins[k].data, offs[k]);
                            let reg = &mut regs[sp][..n];
                            if inner_strides[k] == 0 {
                                reg.fill(data[o]);
                            } else {
                                reg.copy_from_slice(&data[o + col..o + col + n]);
                            }
                            sp += 1;
                        }
                        ExprStep::Unary(u) => unary(u, &mut regs[sp - 1][..n]),
                        ExprStep::Binary(op) => {
                            let (lo, hi) = regs.split_at_mut(sp - 1);
                            binary(op, &mut lo[sp - 2][..n], &hi[0][..n]);
                            sp -= 1;
                        }
                    }
                }
                dst.copy_from_slice(&regs[0][..n]);
            }
        };
        let scratch =
            || -> Scratch { (vec![[0f32; BLOCK]; self.depth.max(1)], vec![0; ins.len()]) };
        // Every element is computed on its own: with threads, whole rows per task, or runs of blocks of a
        // single row.
        if out.len() == inner {
            par.for_each_chunk(out, BLOCK, MIN_CHUNK, |start, chunk| {
                part(0, start, chunk, &mut scratch())
            });
        } else {
            par.for_each_chunk(out, inner, MIN_CHUNK, |start, chunk| {
                let mut r = scratch();
                for (j, orow) in chunk.chunks_exact_mut(inner).enumerate() {
                    part(start / inner + j, 0, orow, &mut r);
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expr: &str, ins: &[(&[f32], &[usize])]) -> (Vec<usize>, Vec<f32>) {
        let k = FusedExpr::new(&expr.parse().unwrap());
        let shapes: Vec<&[usize]> = ins.iter().map(|i| i.1).collect();
        let osh = k.out_shape(&shapes).unwrap();
        let mut out = vec![0.0; osh.iter().product()];
        let views: Vec<In<'_>> = ins.iter().map(|(d, s)| In { data: d, shape: s }).collect();
        k.run(&views, &mut out).unwrap();
        (osh, out)
    }

    #[test]
    fn broadcasts_like_numpy_and_computes_the_chain() {
        // (x − y) · x + z with y per column and z a scalar; x: [2, 3].
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = [1.0f32, 0.0, -1.0];
        let z = [0.5f32];
        let (sh, out) = run(
            "i0 i1 sub i0 mul i2 add",
            &[(&x, &[2, 3]), (&y, &[3]), (&z, &[])],
        );
        assert_eq!(sh, [2, 3]);
        let want: Vec<f32> = (0..6).map(|i| (x[i] - y[i % 3]) * x[i] + z[0]).collect();
        assert_eq!(out, want);
        // A column broadcast ([2, 1] against [1, 3]) and a long row across several blocks.
        let (sh, out) = run("i0 i1 max relu", &[(&[-1.0, 2.0], &[2, 1]), (&y, &[1, 3])]);
        assert_eq!((sh, out), (vec![2, 3], vec![1.0, 0.0, 0.0, 2.0, 2.0, 2.0]));
        let n = 3 * BLOCK + 7;
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 3.0).collect();
        let (_, out) = run("i0 sigmoid i0 mul neg", &[(&a, &[n])]);
        for (o, &v) in out.iter().zip(&a) {
            assert_eq!(*o, -(v * Activation::Sigmoid.apply(v)));
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let k = FusedExpr::new(&"i0 i1 add".parse().unwrap());
        assert!(k.out_shape(&[&[2, 3], &[4]]).is_err());
        assert!(k.out_shape(&[&[2, 3]]).is_err());
        let mut out = vec![0.0; 6];
        let d = [0.0f32; 5];
        let views = [
            In {
                data: &d,
                shape: &[2, 3],
            },
            In {
                data: &d,
                shape: &[3],
            },
        ];
        assert!(k.run(&views, &mut out).is_err());
    }
}
