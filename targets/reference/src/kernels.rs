//! Shared building blocks of the reference ops: strides, broadcasting, elementwise maps.
//!
//! Everything here favours obviously-correct code over speed.

use jiuzhou_ir::{Elem, Tensor};

use crate::EvalError;

/// Row-major strides of `shape`, in elements.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The numpy broadcast of concrete shapes, or an error naming them.
pub fn broadcast_shape(shapes: &[&[usize]]) -> Result<Vec<usize>, EvalError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(EvalError::new(format!(
                    "shapes {shapes:?} do not broadcast"
                )));
            }
        }
    }
    Ok(out)
}

/// For every element of `out_shape` (row-major), the flat index of the element of a tensor of shape `in_shape`
/// that broadcasts to it. `in_shape` must broadcast to `out_shape`.
pub fn broadcast_offsets(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    if in_shape == out_shape {
        return (0..n).collect();
    }
    let off = out_shape.len() - in_shape.len();
    let in_strides = strides(in_shape);
    // Stride 0 along broadcast dims.
    let eff: Vec<usize> = (0..out_shape.len())
        .map(|i| {
            if i < off || in_shape[i - off] == 1 {
                0
            } else {
                in_strides[i - off]
            }
        })
        .collect();
    let mut result = Vec::with_capacity(n);
    let mut idx = vec![0usize; out_shape.len()];
    let mut cur = 0usize;
    for _ in 0..n {
        result.push(cur);
        // Increment the multi-index, updating the offset incrementally.
        for d in (0..out_shape.len()).rev() {
            idx[d] += 1;
            cur += eff[d];
            if idx[d] < out_shape[d] {
                break;
            }
            cur -= eff[d] * idx[d];
            idx[d] = 0;
        }
    }
    result
}

/// Applies `f` elementwise to a tensor of `T`, producing `U`.
pub fn map<T: Elem + Copy, U: Elem>(t: &Tensor, f: impl Fn(T) -> U) -> Result<Tensor, EvalError> {
    let v = t.as_slice::<T>()?;
    Ok(Tensor::from_vec(
        t.shape().to_vec(),
        v.iter().map(|&x| f(x)).collect(),
    )?)
}

/// Applies `f` to broadcast pairs of elements of two tensors of `T`, producing `U`.
pub fn zip_map<T: Elem + Copy, U: Elem>(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(T, T) -> U,
) -> Result<Tensor, EvalError> {
    let shape = broadcast_shape(&[a.shape(), b.shape()])?;
    let (av, bv) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    let (ao, bo) = (
        broadcast_offsets(a.shape(), &shape),
        broadcast_offsets(b.shape(), &shape),
    );
    let out: Vec<U> = ao.iter().zip(&bo).map(|(&i, &j)| f(av[i], bv[j])).collect();
    Ok(Tensor::from_vec(shape, out)?)
}

/// Broadcasts a tensor to `shape` (copying elements).
pub fn broadcast_to<T: Elem>(t: &Tensor, shape: &[usize]) -> Result<Tensor, EvalError> {
    let target = broadcast_shape(&[t.shape(), shape])?;
    if target != shape {
        return Err(EvalError::new(format!(
            "cannot broadcast {:?} to {:?}",
            t.shape(),
            shape
        )));
    }
    let v = t.as_slice::<T>()?;
    let out: Vec<T> = broadcast_offsets(t.shape(), shape)
        .into_iter()
        .map(|i| v[i].clone())
        .collect();
    Ok(Tensor::from_vec(shape.to_vec(), out)?)
}

/// Normalizes a possibly negative axis against `rank`.
pub fn axis(axis: i64, rank: usize) -> Result<usize, EvalError> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(EvalError::new(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_offsets() {
        assert_eq!(
            broadcast_shape(&[&[2, 1, 3], &[4, 1]]).unwrap(),
            vec![2, 4, 3]
        );
        assert!(broadcast_shape(&[&[2, 3], &[4]]).is_err());
        assert_eq!(broadcast_offsets(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_offsets(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_offsets(&[], &[2]), vec![0, 0]);
    }

    #[test]
    fn zip_map_broadcasts() {
        let a = Tensor::from_vec(vec![2, 1], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(vec![3], vec![10.0f32, 20.0, 30.0]).unwrap();
        let c = zip_map(&a, &b, |x: f32, y: f32| x + y).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(
            c.as_slice::<f32>().unwrap(),
            &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
    }
}
