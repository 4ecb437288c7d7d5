//! Data movement: reshapes, transposes, slicing, gathers and scatters, padding, concatenation, shape queries.
//!
//! Every op here works for every dtype: elements are never interpreted, only copied. The building blocks are
//! [`copy_runs`] (build a tensor from runs of elements of one or more sources), [`view`] (read a tensor through
//! strides: transposes, slices, broadcasts), [`build`] (compute each output element's source from its
//! multi-index) and [`overwrite`] (replace runs of a copy: scatters). Only the few ops that compute on elements
//! (`Col2Im`, scatter reductions, `Unique`'s ordering, `Range`) dispatch on the element type.

use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Data, Tensor, Value};

use crate::EvalError;
use crate::kernels::strides;

mod index;
mod layout;

pub use layout::slice_range;
mod shape;

#[cfg(test)]
mod tests;

/// One tensor output.
fn one(t: Tensor) -> Result<Vec<Value>, EvalError> {
    Ok(vec![Value::from(t)])
}

/// Copies runs of elements into new storage.
fn collect_runs<T: Clone>(
    sources: &[&[T]],
    width: usize,
    runs: impl IntoIterator<Item = (usize, usize, usize)>,
    capacity: usize,
) -> Result<Vec<T>, EvalError> {
    let mut out = Vec::with_capacity(capacity.saturating_mul(width));
    for (s, start, len) in runs {
        let piece = sources
            .get(s)
            .and_then(|src| src.get(start * width..(start + len) * width))
            .ok_or_else(|| {
                EvalError::new(format!(
                    "internal: run {start}+{len} of source {s} is out of range"
                ))
            })?;
        out.extend_from_slice(piece);
    }
    Ok(out)
}

/// Builds a tensor of shape `shape` from runs `(source, first element, element count)` of `sources`, which must
/// all have the same dtype. Works for every storage class.
pub(crate) fn copy_runs(
    sources: &[&Tensor],
    shape: Vec<usize>,
    runs: impl IntoIterator<Item = (usize, usize, usize)>,
) -> Result<Tensor, EvalError> {
    let Some(first) = sources.first() else {
        return Err(EvalError::new("internal: no sources to copy from"));
    };
    let dtype = first.dtype();
    if let Some(s) = sources.iter().find(|s| s.dtype() != dtype) {
        return Err(EvalError::new(format!(
            "inputs have different dtypes ({dtype} and {})",
            s.dtype()
        )));
    }
    let n = checked_numel(&shape, dtype)?;
    macro_rules! go {
        ($($variant:ident => $width:expr),* $(,)?) => {
            match first.data() {
                $(Data::$variant(_) => {
                    let srcs: Vec<&[_]> = sources
                        .iter()
                        .map(|s| match s.data() {
                            Data::$variant(v) => Ok(&v[..]),
                            _ => Err(EvalError::new("internal: mixed storage")),
                        })
                        .collect::<Result<_, _>>()?;
                    Data::$variant(collect_runs(&srcs, $width, runs, n)?)
                })*
            }
        };
    }
    let data = go!(
        Bool => 1, U8 => 1, I8 => 1, U16 => 1, I16 => 1, U32 => 1, I32 => 1, U64 => 1, I64 => 1,
        F16 => 1, BF16 => 1, F32 => 1, F64 => 1, C64 => 2, C128 => 2, String => 1, Bits => 1,
    );
    Ok(Tensor::from_data(dtype, shape, data)?)
}

/// A copy of `dst` with runs `(dst start, src start, count)` replaced by elements of `src` (same dtype).
pub(crate) fn overwrite(
    dst: &Tensor,
    src: &Tensor,
    writes: impl IntoIterator<Item = (usize, usize, usize)>,
) -> Result<Tensor, EvalError> {
    if dst.dtype() != src.dtype() {
        return Err(EvalError::new(format!(
            "updates have dtype {}, data has {}",
            src.dtype(),
            dst.dtype()
        )));
    }
    fn write<T: Clone>(
        d: &mut [T],
        s: &[T],
        width: usize,
        writes: impl IntoIterator<Item = (usize, usize, usize)>,
    ) -> Result<(), EvalError> {
        for (at, from, len) in writes {
            let piece = s.get(from * width..(from + len) * width);
            let target = d.get_mut(at * width..(at + len) * width);
            match (target, piece) {
                (Some(t), Some(p)) => t.clone_from_slice(p),
                _ => {
                    return Err(EvalError::new("internal: write out of range".to_string()));
                }
            }
        }
        Ok(())
    }
    let mut data = dst.data().clone();
    macro_rules! go {
        ($($variant:ident => $width:expr),* $(,)?) => {
            match (&mut data, src.data()) {
                $((Data::$variant(d), Data::$variant(s)) => write(d, s, $width, writes)?,)*
                _ => return Err(EvalError::new("internal: mixed storage")),
            }
        };
    }
    go!(
        Bool => 1, U8 => 1, I8 => 1, U16 => 1, I16 => 1, U32 => 1, I32 => 1, U64 => 1, I64 => 1,
        F16 => 1, BF16 => 1, F32 => 1, F64 => 1, C64 => 2, C128 => 2, String => 1, Bits => 1,
    );
    Ok(Tensor::from_data(dst.dtype(), dst.shape().to_vec(), data)?)
}

/// Visits every multi-index of `shape` in row-major order.
pub(crate) fn for_each_index(
    shape: &[usize],
    mut f: impl FnMut(&[usize]) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    if shape.contains(&0) {
        return Ok(());
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx)?;
        let mut d = shape.len();
        loop {
            if d == 0 {
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Builds a tensor of shape `shape` whose element at each multi-index is element `offset` of `sources[source]`,
/// where `(source, offset) = f(index)`.
pub(crate) fn build(
    sources: &[&Tensor],
    shape: Vec<usize>,
    mut f: impl FnMut(&[usize]) -> Result<(usize, usize), EvalError>,
) -> Result<Tensor, EvalError> {
    let dtype = sources
        .first()
        .map(|s| s.dtype())
        .ok_or_else(|| EvalError::new("internal: no sources"))?;
    let n = checked_numel(&shape, dtype)?;
    let mut picks = Vec::with_capacity(n);
    for_each_index(&shape, |i| {
        let (s, off) = f(i)?;
        picks.push((s, off, 1));
        Ok(())
    })?;
    copy_runs(sources, shape, picks)
}

/// Reads `src` through a strided view: the element at multi-index `i` of the result (shape `shape`) is element
/// `base + sum(i[k] * steps[k])` of `src`. Steps may be 0 (broadcast) or negative (reversed slices); the caller
/// guarantees every offset is in range.
pub(crate) fn view(
    src: &Tensor,
    shape: Vec<usize>,
    steps: &[isize],
    base: usize,
) -> Result<Tensor, EvalError> {
    let n = checked_numel(&shape, src.dtype())?;
    let r = shape.len();
    if n == 0 {
        return copy_runs(&[src], shape, std::iter::empty());
    }
    // Innermost contiguous dims are copied as runs.
    let (outer, run) = if r > 0 && steps[r - 1] == 1 {
        (r - 1, shape[r - 1])
    } else {
        (r, 1)
    };
    let mut runs = Vec::with_capacity(n / run);
    let mut idx = vec![0usize; outer];
    let mut cur = base as isize;
    for _ in 0..n / run {
        runs.push((0, cur as usize, run));
        for d in (0..outer).rev() {
            idx[d] += 1;
            cur += steps[d];
            if idx[d] < shape[d] {
                break;
            }
            cur -= steps[d] * idx[d] as isize;
            idx[d] = 0;
        }
    }
    copy_runs(&[src], shape, runs)
}

/// The row-major strides of `shape` as signed steps.
fn steps_of(shape: &[usize]) -> Vec<isize> {
    strides(shape).into_iter().map(|s| s as isize).collect()
}

/// Normalizes an index into `0..dim` (negative values count from the end), or explains why it is out of range.
pub(crate) fn wrap_index(i: i64, dim: usize, what: &str) -> Result<usize, EvalError> {
    let d = dim as i64;
    let j = if i < 0 { i.saturating_add(d) } else { i };
    if j < 0 || j >= d {
        return Err(EvalError::new(format!(
            "{what} {i} is out of range for a dim of size {dim}"
        )));
    }
    Ok(j as usize)
}

/// Normalizes axes against `rank`, rejecting duplicates.
fn axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, EvalError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = crate::kernels::axis(a, rank)?;
        if out.contains(&a) {
            return Err(EvalError::new(format!("axis {a} is repeated")));
        }
        out.push(a);
    }
    Ok(out)
}

/// Converts data-supplied sizes to `usize`, rejecting negative ones.
fn sizes(values: &[i64], what: &str) -> Result<Vec<usize>, EvalError> {
    values
        .iter()
        .map(|&v| {
            usize::try_from(v).map_err(|_| EvalError::new(format!("{what} has negative entry {v}")))
        })
        .collect()
}

/// A rank-0 tensor of `dtype` holding `v` (numeric and bool dtypes).
fn scalar_of(dtype: DType, v: f64) -> Result<Tensor, EvalError> {
    use jiuzhou_ir::half::{bf16, f16};
    Ok(match dtype {
        DType::Bool => Tensor::scalar(v != 0.0),
        DType::U8 => Tensor::scalar(v as u8),
        DType::I8 => Tensor::scalar(v as i8),
        DType::U16 => Tensor::scalar(v as u16),
        DType::I16 => Tensor::scalar(v as i16),
        DType::U32 => Tensor::scalar(v as u32),
        DType::I32 => Tensor::scalar(v as i32),
        DType::U64 => Tensor::scalar(v as u64),
        DType::I64 => Tensor::scalar(v as i64),
        DType::F16 => Tensor::scalar(f16::from_f64(v)),
        DType::BF16 => Tensor::scalar(bf16::from_f64(v)),
        DType::F32 => Tensor::scalar(v as f32),
        DType::F64 => Tensor::scalar(v),
        DType::C64 => Tensor::from_data(DType::C64, vec![], Data::C64(vec![v as f32, 0.0]))?,
        DType::C128 => Tensor::from_data(DType::C128, vec![], Data::C128(vec![v, 0.0]))?,
        d => {
            return Err(EvalError::new(format!("cannot make a {d} constant {v}")));
        }
    })
}
