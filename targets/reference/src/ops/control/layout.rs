//! Moving elements of any dtype between tensors: taking one index or a range along an axis, concatenating and
//! stacking. Loop, Scan and the sequence ops use these to cut inputs apart and glue outputs together.

use jiuzhou_ir::tensor::{Data, checked_numel};
use jiuzhou_ir::{DType, Tensor};

use crate::{EvalError, eval_bail};

/// Copies `picks` (source index, flat element index) out of slices of elements `width` wide.
fn gather<E: Clone>(
    sources: &[&Data],
    picks: &[(usize, usize)],
    width: usize,
    get: impl Fn(&Data) -> Option<&[E]>,
) -> Option<Vec<E>> {
    let slices: Vec<&[E]> = sources.iter().map(|d| get(d)).collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(picks.len() * width);
    for &(s, i) in picks {
        out.extend_from_slice(slices.get(s)?.get(i * width..(i + 1) * width)?);
    }
    Some(out)
}

/// A tensor of `dtype` and `shape` whose elements are `picks` (source index, flat element index) of `sources`, all
/// of which must have `dtype`.
pub(crate) fn pick(
    dtype: DType,
    shape: Vec<usize>,
    sources: &[&Tensor],
    picks: &[(usize, usize)],
) -> Result<Tensor, EvalError> {
    if let Some(t) = sources.iter().find(|t| t.dtype() != dtype) {
        eval_bail!("cannot combine a {} tensor with {dtype} ones", t.dtype());
    }
    let datas: Vec<&Data> = sources.iter().map(|t| t.data()).collect();
    macro_rules! arm {
        ($V:ident, $w:expr) => {
            gather(&datas, picks, $w, |d| match d {
                Data::$V(v) => Some(&v[..]),
                _ => None,
            })
            .map(Data::$V)
        };
    }
    let data = match Data::zeros(dtype, 0) {
        Data::Bool(_) => arm!(Bool, 1),
        Data::U8(_) => arm!(U8, 1),
        Data::I8(_) => arm!(I8, 1),
        Data::U16(_) => arm!(U16, 1),
        Data::I16(_) => arm!(I16, 1),
        Data::U32(_) => arm!(U32, 1),
        Data::I32(_) => arm!(I32, 1),
        Data::U64(_) => arm!(U64, 1),
        Data::I64(_) => arm!(I64, 1),
        Data::F16(_) => arm!(F16, 1),
        Data::BF16(_) => arm!(BF16, 1),
        Data::F32(_) => arm!(F32, 1),
        Data::F64(_) => arm!(F64, 1),
        Data::C64(_) => arm!(C64, 2),
        Data::C128(_) => arm!(C128, 2),
        Data::String(_) => arm!(String, 1),
        Data::Bits(_) => arm!(Bits, 1),
    }
    .ok_or_else(|| EvalError::new("an element index is out of range"))?;
    Ok(Tensor::from_data(dtype, shape, data)?)
}

/// The sizes before, at and after `axis` of `shape`: (outer, axis size, inner).
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// The elements at position `start..start + len` along `axis`; the axis is kept (with size `len`) if `keep`, else
/// removed (then `len` must be 1).
pub(crate) fn narrow(
    t: &Tensor,
    axis: usize,
    start: usize,
    len: usize,
    keep: bool,
) -> Result<Tensor, EvalError> {
    if axis >= t.rank() {
        eval_bail!("axis {axis} is out of range for rank {}", t.rank());
    }
    let (outer, n, inner) = split_at_axis(t.shape(), axis);
    if start.checked_add(len).is_none_or(|end| end > n) {
        eval_bail!("positions {start}..{start}+{len} are out of range for an axis of {n}");
    }
    let mut shape = t.shape().to_vec();
    if keep {
        shape[axis] = len;
    } else if len == 1 {
        shape.remove(axis);
    } else {
        eval_bail!("only a single position can drop its axis");
    }
    checked_numel(&shape, t.dtype())?;
    let mut picks = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * n + start) * inner;
        picks.extend((base..base + len * inner).map(|i| (0, i)));
    }
    pick(t.dtype(), shape, &[t], &picks)
}

/// Concatenates tensors along `axis`, each viewed with the shape in `shapes` (same element counts as the tensors).
fn concat_views(ts: &[&Tensor], shapes: &[Vec<usize>], axis: usize) -> Result<Tensor, EvalError> {
    let Some((first, first_shape)) = ts.first().zip(shapes.first()) else {
        eval_bail!("nothing to concatenate");
    };
    let rank = first_shape.len();
    if axis >= rank {
        eval_bail!("axis {axis} is out of range for rank {rank}");
    }
    let mut total = 0usize;
    for s in shapes {
        let same_rest = s.len() == rank
            && s.iter()
                .zip(first_shape)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_rest {
            eval_bail!("cannot concatenate shapes {first_shape:?} and {s:?} along axis {axis}");
        }
        total = total
            .checked_add(s[axis])
            .ok_or_else(|| EvalError::new("the concatenation is too large"))?;
    }
    let mut shape = first_shape.clone();
    shape[axis] = total;
    let numel = checked_numel(&shape, first.dtype())?;
    let (outer, _, inner) = split_at_axis(&shape, axis);
    let mut picks = Vec::with_capacity(numel);
    for o in 0..outer {
        for (k, s) in shapes.iter().enumerate() {
            let chunk = s[axis] * inner;
            picks.extend((o * chunk..(o + 1) * chunk).map(|i| (k, i)));
        }
    }
    pick(first.dtype(), shape, ts, &picks)
}

/// Concatenates tensors of one rank along an existing `axis`.
pub(crate) fn concat(ts: &[&Tensor], axis: usize) -> Result<Tensor, EvalError> {
    let shapes: Vec<Vec<usize>> = ts.iter().map(|t| t.shape().to_vec()).collect();
    concat_views(ts, &shapes, axis)
}

/// Stacks tensors of one shape along a new `axis` (`0..=rank`).
pub(crate) fn stack(ts: &[&Tensor], axis: usize) -> Result<Tensor, EvalError> {
    let shapes: Vec<Vec<usize>> = ts
        .iter()
        .map(|t| {
            let mut s = t.shape().to_vec();
            if axis > s.len() {
                eval_bail!("axis {axis} is out of range for stacking rank {}", s.len());
            }
            s.insert(axis, 1);
            Ok(s)
        })
        .collect::<Result<_, EvalError>>()?;
    concat_views(ts, &shapes, axis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_vec(shape.to_vec(), (0..n as i64).collect()).unwrap()
    }

    fn show(t: &Tensor) -> String {
        format!("{:?} {:?}", t.shape(), t.to_i64_vec().unwrap())
    }

    #[test]
    fn narrowing() {
        let t = range(&[2, 3]);
        assert_eq!(
            show(&narrow(&t, 1, 1, 2, true).unwrap()),
            "[2, 2] [1, 2, 4, 5]"
        );
        assert_eq!(show(&narrow(&t, 0, 1, 1, false).unwrap()), "[3] [3, 4, 5]");
        assert_eq!(show(&narrow(&t, 1, 2, 1, false).unwrap()), "[2] [2, 5]");
        assert!(narrow(&t, 1, 2, 2, true).is_err());
        assert!(narrow(&t, 2, 0, 1, true).is_err());
        assert!(narrow(&t, 1, 0, 2, false).is_err());
    }

    #[test]
    fn concatenating_and_stacking() {
        let a = range(&[2, 1]);
        let b = range(&[2, 2]);
        assert_eq!(
            show(&concat(&[&a, &b], 1).unwrap()),
            "[2, 3] [0, 0, 1, 1, 2, 3]"
        );
        assert!(concat(&[&a, &b], 0).is_err());
        assert!(concat(&[], 0).is_err());
        let c = range(&[2]);
        assert_eq!(show(&stack(&[&c, &c], 0).unwrap()), "[2, 2] [0, 1, 0, 1]");
        assert_eq!(show(&stack(&[&c, &c], 1).unwrap()), "[2, 2] [0, 0, 1, 1]");
        assert!(stack(&[&c, &c], 2).is_err());
        let f = Tensor::vector(vec![1.0f32]);
        assert!(stack(&[&c, &f], 0).is_err());
        let s = Tensor::vector(vec!["x".to_string()]);
        let st = stack(&[&s, &s], 0).unwrap();
        assert_eq!(st.as_slice::<String>().unwrap(), &["x", "x"]);
    }
}
