//! Ops that choose elements by data: `Gather`, `GatherElements`, `GatherND`, `ScatterElements`, `ScatterND`,
//! `TensorScatter`, `OneHot`, `Compress`, `NonZero`, `Unique`, `Range`.

use std::cmp::Ordering;

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::*;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Data, Tensor, Value, dispatch_any, dispatch_numeric};

use super::{build, copy_runs, one, overwrite, wrap_index};
use crate::kernels::{axis, strides};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

impl EvalOp for Gather {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ind = cx.tensor(1)?;
        let a = axis(self.axis, t.rank())?;
        let dim = t.shape()[a];
        let idx: Vec<usize> = cx
            .ints(1)?
            .into_iter()
            .map(|i| wrap_index(i, dim, "index"))
            .collect::<Result<_, _>>()?;
        let outer: usize = t.shape()[..a].iter().product();
        let inner: usize = t.shape()[a + 1..].iter().product();
        let mut shape = t.shape()[..a].to_vec();
        shape.extend_from_slice(ind.shape());
        shape.extend_from_slice(&t.shape()[a + 1..]);
        checked_numel(&shape, t.dtype())?;
        let runs =
            (0..outer).flat_map(|o| idx.iter().map(move |&i| (0, (o * dim + i) * inner, inner)));
        one(copy_runs(&[t], shape, runs)?)
    }
}

/// For every position of `indices` (same rank as `data`), the flat offset in `data` it addresses along `axis`.
fn element_offsets(
    data: &[usize],
    ind_shape: &[usize],
    ind: &[i64],
    a: usize,
) -> Result<Vec<usize>, EvalError> {
    if data.len() != ind_shape.len() {
        eval_bail!(
            "indices have rank {}, data rank {}",
            ind_shape.len(),
            data.len()
        );
    }
    if let Some(j) = (0..data.len()).find(|&j| j != a && ind_shape[j] > data[j]) {
        eval_bail!(
            "indices dim {j} ({}) is larger than the data's ({})",
            ind_shape[j],
            data[j]
        );
    }
    let st = strides(data);
    let mut out = Vec::with_capacity(ind.len());
    let mut k = 0;
    super::for_each_index(ind_shape, |i| {
        let mut off = 0;
        for (j, &x) in i.iter().enumerate() {
            let x = if j == a {
                wrap_index(ind[k], data[a], "index")?
            } else {
                x
            };
            off += x * st[j];
        }
        out.push(off);
        k += 1;
        Ok(())
    })?;
    Ok(out)
}

impl EvalOp for GatherElements {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ind = cx.tensor(1)?;
        let a = axis(self.axis, t.rank())?;
        let offs = element_offsets(t.shape(), ind.shape(), &cx.ints(1)?, a)?;
        one(copy_runs(
            &[t],
            ind.shape().to_vec(),
            offs.into_iter().map(|o| (0, o, 1)),
        )?)
    }
}

/// The index tuples of a `GatherND`/`ScatterND`: for each tuple, the flat offset of the slice it addresses.
/// `data` is the data shape after the batch dims are removed; `batch` is how many batch dims there are.
struct Tuples {
    /// Offset of each addressed slice, in order.
    offsets: Vec<usize>,
    /// Elements per addressed slice.
    inner: usize,
}

fn tuples(
    data: &[usize],
    ind_shape: &[usize],
    ind: &[i64],
    batch: usize,
) -> Result<Tuples, EvalError> {
    let q = ind_shape.len();
    let Some(&k) = ind_shape.last() else {
        eval_bail!("indices should have rank >= 1");
    };
    if batch >= q || batch + k > data.len() {
        eval_bail!(
            "index tuples of length {k} with {batch} batch dims do not fit data of rank {}",
            data.len()
        );
    }
    if data[..batch] != ind_shape[..batch] {
        eval_bail!(
            "batch dims differ: data {:?}, indices {:?}",
            data,
            ind_shape
        );
    }
    let st = strides(data);
    let inner: usize = data[batch + k..].iter().product();
    let per_batch: usize = data[batch..].iter().product();
    let per_batch_tuples: usize = ind_shape[batch..q - 1].iter().product();
    let n_tuples: usize = ind_shape[..q - 1].iter().product();
    let mut offsets = Vec::with_capacity(n_tuples);
    for t in 0..n_tuples {
        let b = t.checked_div(per_batch_tuples).unwrap_or(0);
        let mut off = b * per_batch;
        for j in 0..k {
            let x = ind[t * k + j];
            off += wrap_index(x, data[batch + j], "index")? * st[batch + j];
        }
        offsets.push(off);
    }
    Ok(Tuples { offsets, inner })
}

impl EvalOp for GatherND {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ind = cx.tensor(1)?;
        let b = usize::try_from(self.batch_dims)
            .map_err(|_| EvalError::new("batch_dims should not be negative"))?;
        let tp = tuples(t.shape(), ind.shape(), &cx.ints(1)?, b)?;
        let q = ind.rank();
        let k = ind.shape()[q - 1];
        let mut shape = ind.shape()[..q - 1].to_vec();
        shape.extend_from_slice(&t.shape()[b + k..]);
        let inner = tp.inner;
        one(copy_runs(
            &[t],
            shape,
            tp.offsets.into_iter().map(|o| (0, o, inner)),
        )?)
    }
}

/// Applies scatter `writes` `(dst, src, len)` of `updates` into a copy of `data` with `reduction`.
fn scatter(
    data: &Tensor,
    updates: &Tensor,
    writes: Vec<(usize, usize, usize)>,
    reduction: &str,
) -> Result<Tensor, EvalError> {
    if reduction == "none" {
        return overwrite(data, updates, writes);
    }
    if data.dtype() != updates.dtype() {
        eval_bail!(
            "updates have dtype {}, data has {}",
            updates.dtype(),
            data.dtype()
        );
    }
    fn go<T: Num>(
        d: &[T],
        u: &Tensor,
        writes: &[(usize, usize, usize)],
        f: fn(T, T) -> T,
        shape: Vec<usize>,
    ) -> Result<Tensor, EvalError> {
        let u = u.as_slice::<T>()?;
        let mut out = d.to_vec();
        for &(at, from, len) in writes {
            for i in 0..len {
                let (Some(&x), Some(&y)) = (out.get(at + i), u.get(from + i)) else {
                    eval_bail!("internal: scatter out of range");
                };
                out[at + i] = f(x, y);
            }
        }
        Ok(Tensor::from_vec(shape, out)?)
    }
    fn pick<T: Num>(r: &str) -> Result<fn(T, T) -> T, EvalError> {
        Ok(match r {
            "add" => |x: T, y: T| x.add(y),
            "mul" => |x: T, y: T| x.mul(y),
            "max" => |x: T, y: T| {
                if x.is_nan() || (!y.is_nan() && x >= y) {
                    x
                } else {
                    y
                }
            },
            "min" => |x: T, y: T| {
                if x.is_nan() || (!y.is_nan() && x <= y) {
                    x
                } else {
                    y
                }
            },
            r => eval_bail!("unknown reduction `{r}`"),
        })
    }
    let shape = data.shape().to_vec();
    dispatch_numeric!(data, |d: &[T]| go::<T>(d, updates, &writes, pick::<T>(reduction)?, shape),
        _ => eval_bail!("reduction `{reduction}` does not support {}", data.dtype()))
}

impl EvalOp for ScatterElements {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ind = cx.tensor(1)?;
        let upd = cx.tensor(2)?;
        if ind.shape() != upd.shape() {
            eval_bail!(
                "indices have shape {:?}, updates {:?}",
                ind.shape(),
                upd.shape()
            );
        }
        let a = axis(self.axis, t.rank())?;
        let offs = element_offsets(t.shape(), ind.shape(), &cx.ints(1)?, a)?;
        let writes = offs
            .into_iter()
            .enumerate()
            .map(|(j, o)| (o, j, 1))
            .collect();
        one(scatter(t, upd, writes, &self.reduction)?)
    }
}

impl EvalOp for ScatterND {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ind = cx.tensor(1)?;
        let upd = cx.tensor(2)?;
        let tp = tuples(t.shape(), ind.shape(), &cx.ints(1)?, 0)?;
        let q = ind.rank();
        let k = ind.shape()[q - 1];
        let mut want = ind.shape()[..q - 1].to_vec();
        want.extend_from_slice(&t.shape()[k..]);
        if upd.shape() != want.as_slice() {
            eval_bail!("updates have shape {:?}, expected {want:?}", upd.shape());
        }
        let inner = tp.inner;
        let writes = tp
            .offsets
            .into_iter()
            .enumerate()
            .map(|(j, o)| (o, j * inner, inner))
            .collect();
        one(scatter(t, upd, writes, &self.reduction)?)
    }
}

impl EvalOp for TensorScatter {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let past = cx.tensor(0)?;
        let upd = cx.tensor(1)?;
        let r = past.rank();
        let a = axis(self.axis, r)?;
        if a == 0 {
            eval_bail!("the sequence axis cannot be the batch axis 0");
        }
        if upd.rank() != r
            || (0..r).any(|i| {
                if i == a {
                    upd.shape()[i] > past.shape()[i]
                } else {
                    upd.shape()[i] != past.shape()[i]
                }
            })
        {
            eval_bail!(
                "update shape {:?} does not fit cache shape {:?}",
                upd.shape(),
                past.shape()
            );
        }
        let nb = past.shape()[0];
        let wi = match cx.opt_ints(2)? {
            Some(w) if w.len() == nb => w,
            Some(w) => eval_bail!("write_indices has {} entries for batch size {nb}", w.len()),
            None => vec![0; nb],
        };
        let (max, len) = (past.shape()[a], upd.shape()[a]);
        let prefix: usize = past.shape()[..a].iter().product();
        let per_batch: usize = past.shape()[1..a].iter().product();
        let inner: usize = past.shape()[a + 1..].iter().product();
        let circular = match self.mode.as_str() {
            "linear" => false,
            "circular" => true,
            m => eval_bail!("unknown mode `{m}`"),
        };
        let mut writes = Vec::with_capacity(prefix * len);
        for p in 0..prefix {
            let w = wi[p / per_batch.max(1)];
            for s in 0..len {
                let pos = w
                    .checked_add(s as i64)
                    .ok_or_else(|| EvalError::new("write index overflows"))?;
                let pos = if circular && max > 0 {
                    pos.rem_euclid(max as i64)
                } else {
                    pos
                };
                if pos < 0 || pos >= max as i64 {
                    eval_bail!("write position {pos} is out of range for a cache of length {max}");
                }
                writes.push((
                    (p * max + pos as usize) * inner,
                    (p * len + s) * inner,
                    inner,
                ));
            }
        }
        one(overwrite(past, upd, writes)?)
    }
}

impl EvalOp for OneHot {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let ind = cx.tensor(0)?;
        let idx = ind.to_f64_vec().ok_or_else(|| {
            EvalError::new(format!("indices of dtype {} are not numeric", ind.dtype()))
        })?;
        let depth = match cx.tensor(1)?.to_f64_vec().as_deref() {
            Some([d]) if d.trunc() >= 1.0 && *d < 1e15 => d.trunc() as usize,
            other => eval_bail!("depth {other:?} should be one positive number"),
        };
        let values = cx.tensor(2)?;
        if values.len() != 2 {
            eval_bail!(
                "values should hold [off, on], it holds {} elements",
                values.len()
            );
        }
        let r = ind.rank() as i64;
        if self.axis < -r - 1 || self.axis > r {
            eval_bail!("axis {} is out of range for rank {}", self.axis, r + 1);
        }
        let a = if self.axis < 0 {
            self.axis + r + 1
        } else {
            self.axis
        } as usize;
        let mut shape = ind.shape().to_vec();
        shape.insert(a, depth);
        let inner: usize = ind.shape()[a..].iter().product();
        let st = strides(&shape);
        let values = values.as_ref().clone().reshape(vec![2])?;
        let out = build(&[&values], shape, |i| {
            let flat: usize = i.iter().zip(&st).map(|(x, s)| x * s).sum();
            let outer = flat / (st[a] * depth).max(1);
            let src = outer * inner + flat % st[a].max(1);
            let mut v = idx[src];
            if v < 0.0 {
                v += depth as f64;
            }
            Ok((0, (v == i[a] as f64) as usize))
        })?;
        one(out)
    }
}

/// Whether each element is nonzero (non-empty for strings), in order.
fn nonzero_mask(t: &Tensor) -> Result<Vec<bool>, EvalError> {
    Ok(match t.data() {
        Data::Bool(v) => v.clone(),
        Data::String(v) => v.iter().map(|s| !s.is_empty()).collect(),
        Data::C64(v) => v.chunks(2).map(|c| c.iter().any(|&x| x != 0.0)).collect(),
        Data::C128(v) => v.chunks(2).map(|c| c.iter().any(|&x| x != 0.0)).collect(),
        Data::Bits(v) => v.iter().map(|&x| x != 0).collect(),
        _ => dispatch_numeric!(t, |v: &[T]| v.iter().map(|&x| x != T::zero()).collect(),
            _ => eval_bail!("cannot test {} for zero", t.dtype())),
    })
}

impl EvalOp for NonZero {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let mask = nonzero_mask(t)?;
        let hits: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
        let st = strides(t.shape());
        let r = t.rank();
        let mut out = vec![0i64; r * hits.len()];
        for (j, &h) in hits.iter().enumerate() {
            for d in 0..r {
                out[d * hits.len() + j] = ((h / st[d]) % t.shape()[d]) as i64;
            }
        }
        one(Tensor::from_vec(vec![r, hits.len()], out)?)
    }
}

impl EvalOp for Compress {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let cond = nonzero_mask(cx.tensor(1)?)?;
        let (shape, a) = match self.axis {
            Some(a) => (t.shape().to_vec(), axis(a, t.rank())?),
            None => (vec![t.len()], 0),
        };
        let dim = shape[a];
        let picked: Vec<usize> = (0..cond.len()).filter(|&i| cond[i]).collect();
        if let Some(&bad) = picked.iter().find(|&&i| i >= dim) {
            eval_bail!("condition selects index {bad} of an axis of size {dim}");
        }
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let mut out_shape = shape.clone();
        out_shape[a] = picked.len();
        let runs = (0..outer).flat_map(|o| {
            picked
                .iter()
                .map(move |&i| (0, (o * dim + i) * inner, inner))
        });
        one(copy_runs(&[t], out_shape, runs)?)
    }
}

/// Orders NaN after every number and equal to itself, so float elements sort as numpy sorts them.
fn total<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    #[allow(clippy::eq_op)]
    let (an, bn) = (a != a, b != b);
    match (an, bn) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// A comparison of two elements of `t` by flat offset.
fn elem_order(t: &Tensor) -> Box<dyn Fn(usize, usize) -> Ordering + '_> {
    dispatch_any!(t, |v: &[T]| Box::new(move |a, b| total::<T>(&v[a], &v[b])), _ => match t.data() {
        Data::C64(v) => Box::new(move |a, b| total(&v[2 * a], &v[2 * b]).then(total(&v[2 * a + 1], &v[2 * b + 1]))),
        Data::C128(v) => Box::new(move |a, b| total(&v[2 * a], &v[2 * b]).then(total(&v[2 * a + 1], &v[2 * b + 1]))),
        Data::Bits(v) => Box::new(move |a, b| v[a].cmp(&v[b])),
        _ => Box::new(|_, _| Ordering::Equal),
    })
}

impl EvalOp for Unique {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let (shape, a) = match self.axis {
            Some(a) => (t.shape().to_vec(), axis(a, t.rank())?),
            None => (vec![t.len()], 0),
        };
        let k = shape[a];
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let order = elem_order(t);
        // Items compare lexicographically over their elements in row-major order.
        let cmp = |x: usize, y: usize| -> Ordering {
            for o in 0..outer {
                for i in 0..inner {
                    let c = order((o * k + x) * inner + i, (o * k + y) * inner + i);
                    if c != Ordering::Equal {
                        return c;
                    }
                }
            }
            Ordering::Equal
        };
        let mut sorted: Vec<usize> = (0..k).collect();
        sorted.sort_by(|&x, &y| cmp(x, y));
        // Groups of equal items in sorted order: (first occurrence, count); stable sorting puts it first.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut group_of = vec![0usize; k];
        for (j, &x) in sorted.iter().enumerate() {
            if j == 0 || cmp(sorted[j - 1], x) != Ordering::Equal {
                groups.push((x, 0));
            }
            let g = groups.len() - 1;
            groups[g].1 += 1;
            group_of[x] = g;
        }
        let mut rank: Vec<usize> = (0..groups.len()).collect();
        if self.sorted == 0 {
            let mut by_first: Vec<usize> = (0..groups.len()).collect();
            by_first.sort_by_key(|&g| groups[g].0);
            for (new, &g) in by_first.iter().enumerate() {
                rank[g] = new;
            }
            groups = by_first.iter().map(|&g| groups[g]).collect();
        }
        let n = groups.len();
        let mut y_shape = shape.clone();
        y_shape[a] = n;
        let runs = (0..outer).flat_map(|o| {
            groups
                .iter()
                .map(move |&(f, _)| (0, (o * k + f) * inner, inner))
        });
        let y = copy_runs(&[t], y_shape, runs)?;
        let first: Vec<i64> = groups.iter().map(|g| g.0 as i64).collect();
        let inverse: Vec<i64> = group_of.iter().map(|&g| rank[g] as i64).collect();
        let counts: Vec<i64> = groups.iter().map(|g| g.1 as i64).collect();
        Ok(vec![
            Value::from(y),
            Value::from(Tensor::vector(first)),
            Value::from(Tensor::vector(inverse)),
            Value::from(Tensor::vector(counts)),
        ])
    }
}

impl EvalOp for Range {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let ts = [cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?];
        let dtype = ts[0].dtype();
        for (i, t) in ts.iter().enumerate() {
            if t.dtype() != dtype || t.len() != 1 {
                eval_bail!("input {i} should be a one-element {dtype} tensor");
            }
        }
        if dtype.is_int() {
            let v: Vec<i64> = ts
                .iter()
                .map(|t| {
                    t.to_i64_vec()
                        .and_then(|v| v.first().copied())
                        .ok_or_else(|| EvalError::new("bad range input"))
                })
                .collect::<Result<_, _>>()?;
            let (s, d) = (v[0], v[2]);
            if d == 0 {
                eval_bail!("Range delta is 0");
            }
            let (span, step) = (v[1] as i128 - s as i128, d as i128);
            let (span, step) = if step < 0 {
                (-span, -step)
            } else {
                (span, step)
            };
            let n = (span + step - 1).div_euclid(step).max(0);
            let n = usize::try_from(n).map_err(|_| EvalError::new("range too long"))?;
            checked_numel(&[n], dtype)?;
            let vals: Vec<i64> = (0..n as i64)
                .map(|i| s.wrapping_add(i.wrapping_mul(d)))
                .collect();
            fn cast<T: Num>(v: &[i64]) -> Tensor {
                Tensor::vector(
                    v.iter()
                        .map(|&x| T::from_i64_wrapping(x))
                        .collect::<Vec<T>>(),
                )
            }
            let proto = &ts[0];
            return one(
                dispatch_numeric!(proto, |_v: &[T]| cast::<T>(&vals), _ => eval_bail!("Range does not support {dtype}")),
            );
        }
        let v: Vec<f64> = ts
            .iter()
            .map(|t| {
                t.to_f64_vec()
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| EvalError::new(format!("Range does not support {dtype}")))
            })
            .collect::<Result<_, _>>()?;
        let (s, l, d) = (v[0], v[1], v[2]);
        if d == 0.0 {
            eval_bail!("Range delta is 0");
        }
        let n = ((l - s) / d).ceil();
        if !n.is_finite() {
            eval_bail!("Range({s}, {l}, {d}) has no finite length");
        }
        let n = if n <= 0.0 { 0 } else { n as usize };
        checked_numel(&[n], dtype)?;
        // Low-precision types compute in their stash type (f32 by default) and round once.
        let stash_f32 = matches!(dtype, DType::F16 | DType::BF16) && self.stash_type == 1;
        let vals: Vec<f64> = (0..n)
            .map(|i| {
                if stash_f32 {
                    (s as f32 + i as f32 * d as f32) as f64
                } else {
                    s + i as f64 * d
                }
            })
            .collect();
        fn cast<T: Num>(v: &[f64]) -> Tensor {
            Tensor::vector(v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>())
        }
        let proto = &ts[0];
        one(
            dispatch_numeric!(proto, |_v: &[T]| cast::<T>(&vals), _ => eval_bail!("Range does not support {dtype}")),
        )
    }
}
