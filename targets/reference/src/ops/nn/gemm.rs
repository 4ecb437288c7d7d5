//! The matrix-product kernel and the ops built directly on it: Gemm, MatMul, MatMulInteger, QLinearMatMul.

use std::borrow::Cow;
use std::sync::Arc;

use jiuzhou_ir::{DType, Tensor, Value};

use super::{Scalar, numel, with_compute_type};
use crate::kernels::{broadcast_offsets, broadcast_shape};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Columns of `b` and `c` processed together: one row block of `c` stays in L1.
const COL_BLOCK: usize = 512;
/// Rows of `b` processed together: a `ROW_BLOCK × COL_BLOCK` block of `b` stays in L2 while every row of `a` uses it.
const ROW_BLOCK: usize = 256;

/// `c[m×n] += a[m×k] · b[k×n]`, all row-major and contiguous.
///
/// The loop order is i-k-j over blocks of `b`: the innermost loop walks a row of `b` and a row of `c` together,
/// which compilers vectorize, and each block of `b` is reused from cache by every row of `a`.
pub(crate) fn matmul_acc<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
) -> Result<(), EvalError> {
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        eval_bail!("internal error: matrix product operands are smaller than {m}x{k} and {k}x{n}");
    }
    for j0 in (0..n).step_by(COL_BLOCK) {
        let j1 = n.min(j0 + COL_BLOCK);
        for p0 in (0..k).step_by(ROW_BLOCK) {
            let p1 = k.min(p0 + ROW_BLOCK);
            for i in 0..m {
                let c_row = &mut c[i * n + j0..i * n + j1];
                let a_row = &a[i * k + p0..i * k + p1];
                for (p, &a_ip) in (p0..p1).zip(a_row) {
                    let b_row = &b[p * n + j0..p * n + j1];
                    for (cv, &bv) in c_row.iter_mut().zip(b_row) {
                        *cv = cv.mac(a_ip, bv);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `c[m×n] += a[m×k] · bᵀ` where `b` is `n×k` row-major: every output is the dot product of two contiguous rows.
///
/// This is the natural form of fully connected layers (`Gemm` with `transB`), whose weight would otherwise need a
/// large transposed copy.
pub(crate) fn matmul_bt_acc<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
) -> Result<(), EvalError> {
    if a.len() < m * k || b.len() < n * k || c.len() < m * n {
        eval_bail!("internal error: matrix product operands are smaller than {m}x{k} and {n}x{k}");
    }
    for (a_row, c_row) in a
        .chunks_exact(k.max(1))
        .zip(c.chunks_exact_mut(n.max(1)))
        .take(m)
    {
        for (cv, b_row) in c_row.iter_mut().zip(b.chunks_exact(k.max(1))) {
            *cv = cv.plus(dot(&a_row[..k], &b_row[..k]));
        }
    }
    Ok(())
}

/// The dot product of two equally long slices.
///
/// Eight independent partial sums let the compiler use vector lanes without reassociating a single running sum.
fn dot<T: Scalar>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut acc = [T::ZERO; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s.mac(x, y));
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = acc[l].mac(x[l], y[l]);
        }
    }
    acc.iter().fold(tail, |s, &v| s.plus(v))
}

/// The transpose of a `rows × cols` row-major matrix, copied in 32×32 tiles so reads and writes both stay in cache.
pub(crate) fn transpose<T: Copy>(rows: usize, cols: usize, v: &[T]) -> Vec<T> {
    const TILE: usize = 32;
    let Some(&first) = v.first() else {
        return Vec::new();
    };
    let mut out = vec![first; rows * cols];
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..rows.min(i0 + TILE) {
                for j in j0..cols.min(j0 + TILE) {
                    out[j * rows + i] = v[i * cols + j];
                }
            }
        }
    }
    out
}

impl EvalOp for jiuzhou_ir::ops::Gemm {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
        let c = cx.opt_tensor(2)?;
        if a.rank() != 2 || b.rank() != 2 {
            eval_bail!(
                "Gemm operands must be matrices, got shapes {:?} and {:?}",
                a.shape(),
                b.shape()
            );
        }
        if a.dtype() != b.dtype() {
            eval_bail!("Gemm operands have dtypes {} and {}", a.dtype(), b.dtype());
        }
        let (m, k) = if self.transA != 0 {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let (k2, n) = if self.transB != 0 {
            (b.shape()[1], b.shape()[0])
        } else {
            (b.shape()[0], b.shape()[1])
        };
        if k != k2 {
            eval_bail!("Gemm inner dims differ ({k} vs {k2})");
        }
        let out_shape = vec![m, n];
        let len = numel(&out_shape, a.dtype())?;
        let c_offsets = match c {
            Some(c) => {
                if broadcast_shape(&[c.shape(), &out_shape])? != out_shape {
                    eval_bail!(
                        "Gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                        c.shape()
                    );
                }
                Some(broadcast_offsets(c.shape(), &out_shape))
            }
            None => None,
        };
        let out = with_compute_type!(a.dtype(), "Gemm", T => {
                    let av = T::elements(a)?;
                    let bv = T::elements(b)?;
        let a_mat = if self.transA != 0 { Cow::Owned(transpose(k, m, &av)) } else { av };
                    let mut out = vec![T::ZERO; len];
                    if self.transB != 0 {
                        matmul_bt_acc(m, k, n, &a_mat, &bv, &mut out)?;
                    } else {
                        matmul_acc(m, k, n, &a_mat, &bv, &mut out)?;
                    }
                    if self.alpha != 1.0 {
                        let alpha = T::from_f64(self.alpha as f64);
                        out.iter_mut().for_each(|x| *x = T::ZERO.mac(*x, alpha));
                    }
                    if let (Some(c), Some(offsets)) = (c, c_offsets)
                        && self.beta != 0.0 {
                            let cv = T::elements(c)?;
                            let beta = T::from_f64(self.beta as f64);
                            for (o, &i) in out.iter_mut().zip(&offsets) {
                                *o = o.mac(cv[i], beta);
                            }
                        }
                    T::into_tensor(out, a.dtype(), out_shape)?
                });
        Ok(vec![Value::Tensor(out.into())])
    }
}

/// Shapes of a numpy `matmul`: the batch shape, `m`, `k`, `n`, and the output shape (1-D operands dropped).
struct MatMulShape {
    batch: Vec<usize>,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Result<MatMulShape, EvalError> {
    if a.is_empty() || b.is_empty() {
        eval_bail!("MatMul operands must have rank at least 1");
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        eval_bail!("MatMul inner dims differ: {a:?} x {b:?}");
    }
    let a_batch = a2[..a2.len() - 2].to_vec();
    let b_batch = b2[..b2.len() - 2].to_vec();
    let batch = broadcast_shape(&[&a_batch, &b_batch])?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(MatMulShape {
        batch,
        a_batch,
        b_batch,
        m,
        k,
        n,
        out,
    })
}

/// Batched `a · b` with numpy broadcasting of the batch dims; returns the output elements.
fn matmul_batched<T: Scalar>(
    s: &MatMulShape,
    a: &[T],
    b: &[T],
    dtype: DType,
) -> Result<Vec<T>, EvalError> {
    let len = numel(&s.out, dtype)?;
    let mut out = vec![T::ZERO; len];
    let (m, k, n) = (s.m, s.k, s.n);
    if s.b_batch.iter().product::<usize>() == 1 && s.a_batch == s.batch {
        // One right operand for every batch: the batch folds into the rows of one big product.
        let rows = s.batch.iter().product::<usize>() * m;
        matmul_acc(rows, k, n, a, b, &mut out)?;
        return Ok(out);
    }
    let ao = broadcast_offsets(&s.a_batch, &s.batch);
    let bo = broadcast_offsets(&s.b_batch, &s.batch);
    for (i, (&ai, &bi)) in ao.iter().zip(&bo).enumerate() {
        matmul_acc(
            m,
            k,
            n,
            &a[ai * m * k..(ai + 1) * m * k],
            &b[bi * k * n..(bi + 1) * k * n],
            &mut out[i * m * n..(i + 1) * m * n],
        )?;
    }
    Ok(out)
}

impl EvalOp for jiuzhou_ir::ops::MatMul {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
        if a.dtype() != b.dtype() {
            eval_bail!(
                "MatMul operands have dtypes {} and {}",
                a.dtype(),
                b.dtype()
            );
        }
        let s = matmul_shape(a.shape(), b.shape())?;
        let out = with_compute_type!(a.dtype(), "MatMul", T => {
            let v = matmul_batched::<T>(&s, &T::elements(a)?, &T::elements(b)?, a.dtype())?;
            T::into_tensor(v, a.dtype(), s.out.clone())?
        });
        Ok(vec![Value::Tensor(out.into())])
    }
}

/// An 8-bit integer tensor widened to i32.
pub(crate) fn widen_i32(t: &Tensor, what: &str) -> Result<Vec<i32>, EvalError> {
    match t.dtype() {
        DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 => Ok(t
            .to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .map(|x| x as i32)
            .collect()),
        d => Err(EvalError::new(format!(
            "{what} must be an 8- or 16-bit integer tensor, got {d}"
        ))),
    }
}

/// Subtracts a zero point from `v` (shape `shape`): a scalar, or one value per index of `axis`.
pub(crate) fn sub_zero_point(
    v: &mut [i32],
    shape: &[usize],
    zp: Option<&Arc<Tensor>>,
    axis: usize,
    what: &str,
) -> Result<(), EvalError> {
    let Some(zp) = zp else { return Ok(()) };
    let z = widen_i32(zp, what)?;
    if z.len() == 1 {
        v.iter_mut().for_each(|x| *x = x.wrapping_sub(z[0]));
        return Ok(());
    }
    let d = shape.get(axis).copied().unwrap_or(0);
    if z.len() != d {
        eval_bail!("{what} has {} values, expected 1 or {d}", z.len());
    }
    let inner: usize = shape[axis + 1..].iter().product();
    for (i, x) in v.iter_mut().enumerate() {
        *x = x.wrapping_sub(z[(i / inner.max(1)) % d]);
    }
    Ok(())
}

impl EvalOp for jiuzhou_ir::ops::MatMulInteger {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, b) = (cx.tensor(0)?, cx.tensor(1)?);
        let s = matmul_shape(a.shape(), b.shape())?;
        let mut av = widen_i32(a, "A")?;
        let mut bv = widen_i32(b, "B")?;
        // A's zero point is per row (the second-to-last axis), B's per column (the last axis).
        let ar = a.rank();
        sub_zero_point(
            &mut av,
            a.shape(),
            cx.opt_tensor(2)?,
            ar.saturating_sub(2),
            "a_zero_point",
        )?;
        sub_zero_point(
            &mut bv,
            b.shape(),
            cx.opt_tensor(3)?,
            b.rank() - 1,
            "b_zero_point",
        )?;
        let out = matmul_batched::<i32>(&s, &av, &bv, DType::I32)?;
        Ok(vec![Value::Tensor(Tensor::from_vec(s.out, out)?.into())])
    }
}

/// A scalar scale as f64, after rounding to its own dtype.
pub(crate) fn scalar_f64(t: &Tensor, what: &str) -> Result<f64, EvalError> {
    match super::to_f64s(t)?.as_slice() {
        [x] => Ok(*x),
        v => Err(EvalError::new(format!(
            "{what} must hold one value, got {}",
            v.len()
        ))),
    }
}

/// `a * b / c` evaluated in the precision of `dtype` (f16 scales round after every step, as numpy does).
pub(crate) fn scale_ratio(a: f64, b: f64, c: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F16 => {
            let r = |x: f64| half::f16::from_f64(x).to_f64();
            r(r(a * b) / c)
        }
        DType::BF16 => {
            let r = |x: f64| half::bf16::from_f64(x).to_f64();
            r(r(a * b) / c)
        }
        DType::F32 => ((a as f32 * b as f32) / c as f32) as f64,
        _ => a * b / c,
    }
}

/// Requantizes i32 accumulators: `round(acc * scale) + zero_point`, saturated to the 8-bit `dtype`.
pub(crate) fn requantize(
    acc: &[i32],
    scale: impl Fn(usize) -> f64,
    zp: i32,
    dtype: DType,
) -> Result<Tensor, EvalError> {
    let (lo, hi) = match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        d => eval_bail!("quantized output must be u8 or i8, got {d}"),
    };
    let v: Vec<f64> = acc
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            (x as f64 * scale(i) + zp as f64)
                .round_ties_even()
                .clamp(lo, hi)
        })
        .collect();
    super::from_f64s(dtype, vec![v.len()], v)
}

impl EvalOp for jiuzhou_ir::ops::QLinearMatMul {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, b) = (cx.tensor(0)?, cx.tensor(3)?);
        let s = matmul_shape(a.shape(), b.shape())?;
        let mut av = widen_i32(a, "a")?;
        let mut bv = widen_i32(b, "b")?;
        sub_zero_point(
            &mut av,
            a.shape(),
            cx.opt_tensor(2)?,
            a.rank().saturating_sub(2),
            "a_zero_point",
        )?;
        sub_zero_point(
            &mut bv,
            b.shape(),
            cx.opt_tensor(5)?,
            b.rank() - 1,
            "b_zero_point",
        )?;
        let acc = matmul_batched::<i32>(&s, &av, &bv, DType::I32)?;
        let a_scale = cx.tensor(1)?;
        let ratio = scale_ratio(
            scalar_f64(a_scale, "a_scale")?,
            scalar_f64(cx.tensor(4)?, "b_scale")?,
            scalar_f64(cx.tensor(6)?, "y_scale")?,
            a_scale.dtype(),
        );
        let (zp, dtype) = match cx.opt_tensor(7)? {
            Some(z) => (
                widen_i32(z, "y_zero_point")?.first().copied().unwrap_or(0),
                z.dtype(),
            ),
            None => (0, a.dtype()),
        };
        let out = requantize(&acc, |_| ratio, zp, dtype)?.reshape(s.out)?;
        Ok(vec![Value::Tensor(out.into())])
    }
}
