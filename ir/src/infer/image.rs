//! Image and geometry ops: resize, grid sampling, ROI pooling and alignment, affine grids, deformable convolution, unpooling.
//!
//! Output dims are exact when the inputs that decide them are known (constant `scales`/`sizes`, known input
//! dims); otherwise they are fresh symbols.

use super::{InferCx, InferError, InferOp, normalize_axis};
use crate::ops::*;
use crate::{Dim, TensorType, ValueType};

/// The constant value of optional input `i` as f64s, if it is a non-empty constant.
fn const_reals(cx: &InferCx<'_>, i: usize) -> Option<Vec<f64>> {
    cx.const_tensor(i)
        .filter(|t| !t.is_empty())
        .and_then(|t| t.to_f64_vec())
}

/// Whether optional input `i` is present and not a known-empty tensor.
fn given(cx: &InferCx<'_>, i: usize) -> bool {
    if !cx.has_input(i) {
        return false;
    }
    if let Some(t) = cx.const_tensor(i) {
        return !t.is_empty();
    }
    // A 1-D input of static length 0 is absent too.
    !matches!(cx.dims(i), Ok(Some([Dim::Known(0)])))
}

impl InferOp for Resize {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let x = cx.tensor(0)?;
        let dtype = x.dtype;
        let Some(dims) = x.shape.clone() else {
            return Ok(vec![ValueType::Tensor(TensorType::unranked(dtype))]);
        };
        let r = dims.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a
                .iter()
                .map(|&a| normalize_axis(a, r))
                .collect::<Result<_, _>>()?,
            None => (0..r).collect(),
        };
        let mut out = dims.clone();
        if given(cx, 3) {
            match cx.const_ints(3) {
                Some(sizes) if sizes.len() == axes.len() => {
                    let known: Option<Vec<usize>> = axes.iter().map(|&a| dims[a].known()).collect();
                    match (self.keep_aspect_ratio_policy.as_str(), known) {
                        ("stretch", _) => {
                            for (k, &a) in axes.iter().enumerate() {
                                out[a] = Dim::Known(sizes[k].max(0) as usize);
                            }
                        }
                        (policy, Some(known)) => {
                            let ratios =
                                sizes.iter().zip(&known).map(|(&s, &d)| s as f64 / d as f64);
                            let s = if policy == "not_larger" {
                                ratios.fold(f64::INFINITY, f64::min)
                            } else {
                                ratios.fold(f64::NEG_INFINITY, f64::max)
                            };
                            for (k, &a) in axes.iter().enumerate() {
                                out[a] = Dim::Known((s * known[k] as f64 + 0.5) as usize);
                            }
                        }
                        (_, None) => {
                            for &a in &axes {
                                out[a] = cx.fresh("resize");
                            }
                        }
                    }
                }
                Some(sizes) => {
                    crate::infer_bail!("sizes has {} values for {} axes", sizes.len(), axes.len())
                }
                None => {
                    for &a in &axes {
                        out[a] = cx.fresh("resize");
                    }
                }
            }
        } else if given(cx, 2) {
            match const_reals(cx, 2) {
                Some(scales) if scales.len() == axes.len() => {
                    for (k, &a) in axes.iter().enumerate() {
                        out[a] = match &dims[a] {
                            Dim::Known(d) => Dim::Known((scales[k] * *d as f64) as usize),
                            d if scales[k] == 1.0 => d.clone(),
                            _ => cx.fresh("resize"),
                        };
                    }
                }
                Some(scales) => {
                    crate::infer_bail!("scales has {} values for {} axes", scales.len(), axes.len())
                }
                None => {
                    for &a in &axes {
                        out[a] = cx.fresh("resize");
                    }
                }
            }
        } else {
            crate::infer_bail!("Resize needs scales or sizes");
        }
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, out))])
    }
}

impl InferOp for GridSample {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let (x, grid) = (cx.dims(0)?, cx.dims(1)?);
        let (Some(x), Some(grid)) = (x, grid) else {
            return Ok(vec![ValueType::Tensor(TensorType::unranked(dtype))]);
        };
        if x.len() < 3 || grid.len() != x.len() {
            crate::infer_bail!("X and grid must have the same rank, at least 3");
        }
        let mut out = vec![x[0].clone(), x[1].clone()];
        out.extend(grid[1..grid.len() - 1].iter().cloned());
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, out))])
    }
}

/// An unranked result of input 0's dtype.
fn unranked(cx: &InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
    Ok(vec![ValueType::Tensor(TensorType::unranked(
        cx.tensor(0)?.dtype,
    ))])
}

/// Dim `k` of input `i`, or a fresh symbol when the rank is unknown or too small.
fn dim_or_fresh(cx: &mut InferCx<'_>, i: usize, k: usize, hint: &str) -> Result<Dim, InferError> {
    match cx.dims(i)?.and_then(|d| d.get(k)) {
        Some(d) => Ok(d.clone()),
        None => Ok(cx.fresh(hint)),
    }
}

impl InferOp for AffineGrid {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let dims = match cx.const_ints(1) {
            Some(size) => {
                if !(size.len() == 4 || size.len() == 5) || size.iter().any(|&s| s < 0) {
                    crate::infer_bail!("size {size:?} must be 4 or 5 non-negative values");
                }
                let mut d: Vec<Dim> = vec![Dim::Known(size[0] as usize)];
                d.extend(size[2..].iter().map(|&s| Dim::Known(s as usize)));
                d.push(Dim::Known(size.len() - 2));
                d
            }
            None => match cx.dims(1)? {
                Some([Dim::Known(r)]) if *r == 4 || *r == 5 => {
                    let r = *r;
                    let mut d = vec![dim_or_fresh(cx, 0, 0, "batch")?];
                    for _ in 2..r {
                        d.push(cx.fresh("grid"));
                    }
                    d.push(Dim::Known(r - 2));
                    d
                }
                _ => return unranked(cx),
            },
        };
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
    }
}

impl InferOp for DeformConv {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let Some(off) = cx.dims(2)?.map(<[Dim]>::to_vec) else {
            return unranked(cx);
        };
        if off.len() < 3 {
            crate::infer_bail!("offset must have rank 3 or more");
        }
        let mut dims = vec![
            dim_or_fresh(cx, 0, 0, "batch")?,
            dim_or_fresh(cx, 1, 0, "channels")?,
        ];
        dims.extend(off[2..].iter().cloned());
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
    }
}

impl InferOp for MaxUnpool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        if cx.has_input(2) {
            if let Some(s) = cx.const_ints(2) {
                if s.iter().any(|&v| v < 0) {
                    crate::infer_bail!("output_shape {s:?} must be non-negative");
                }
                return Ok(vec![ValueType::Tensor(TensorType::known(
                    dtype,
                    &s.iter().map(|&v| v as usize).collect::<Vec<_>>(),
                ))]);
            }
            let r = cx.tensor(0)?.rank();
            return match r {
                Some(r) => {
                    let dims = (0..r).map(|_| cx.fresh("unpool")).collect::<Vec<_>>();
                    Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
                }
                None => unranked(cx),
            };
        }
        let Some(x) = cx.dims(0)?.map(<[Dim]>::to_vec) else {
            return unranked(cx);
        };
        let k = self.kernel_shape.len();
        if x.len() != k + 2 {
            crate::infer_bail!("X has rank {}, kernel_shape has {k} dims", x.len());
        }
        let strides = self.strides.clone().unwrap_or_else(|| vec![1; k]);
        let pads = self.pads.clone().unwrap_or_else(|| vec![0; 2 * k]);
        if strides.len() != k || pads.len() != 2 * k {
            crate::infer_bail!("strides and pads do not fit {k} spatial dims");
        }
        let mut dims = vec![x[0].clone(), x[1].clone()];
        for d in 0..k {
            dims.push(match x[d + 2] {
                Dim::Known(n) => {
                    let v = (n as i64 - 1)
                        .saturating_mul(strides[d])
                        .saturating_sub(pads[d].saturating_add(pads[k + d]))
                        .saturating_add(self.kernel_shape[d]);
                    if v < 0 {
                        crate::infer_bail!("unpooled dim {d} would be negative");
                    }
                    Dim::Known(v as usize)
                }
                Dim::Sym(_) => cx.fresh("unpool"),
            });
        }
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
    }
}

impl InferOp for RoiAlign {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        if self.output_height <= 0 || self.output_width <= 0 {
            crate::infer_bail!("output_height and output_width must be positive");
        }
        let dims = vec![
            dim_or_fresh(cx, 1, 0, "num_rois")?,
            dim_or_fresh(cx, 0, 1, "channels")?,
            Dim::Known(self.output_height as usize),
            Dim::Known(self.output_width as usize),
        ];
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
    }
}

impl InferOp for MaxRoiPool {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = cx.tensor(0)?.dtype;
        let [h, w] = self.pooled_shape[..] else {
            crate::infer_bail!("pooled_shape must have 2 values");
        };
        if h <= 0 || w <= 0 {
            crate::infer_bail!("pooled_shape must be positive");
        }
        let dims = vec![
            dim_or_fresh(cx, 1, 0, "num_rois")?,
            dim_or_fresh(cx, 0, 1, "channels")?,
            Dim::Known(h as usize),
            Dim::Known(w as usize),
        ];
        Ok(vec![ValueType::Tensor(TensorType::new(dtype, dims))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::recurrent::tests::{check, ty};
    use crate::{DType, Tensor};

    #[test]
    fn resize_shapes() {
        let f = DType::F32;
        let x = ty(f, &["n", "3", "10", "20"]);
        let scales = Tensor::vector(vec![1.0f32, 1.0, 2.0, 0.5]);
        let out = check(
            &Resize::default(),
            &[x.clone(), None, ty(f, &["4"])],
            &[None, None, Some(scales)],
            1,
        );
        assert_eq!(out.unwrap(), ["f32[n,3,20,10]"]);
        let sizes = Tensor::vector(vec![7i64, 8]);
        let policy = Resize {
            axes: Some(vec![2, 3]),
            keep_aspect_ratio_policy: "not_larger".into(),
            ..Default::default()
        };
        let inputs = [x.clone(), None, None, ty(DType::I64, &["2"])];
        let out = check(&policy, &inputs, &[None, None, None, Some(sizes)], 1);
        assert_eq!(out.unwrap(), ["f32[n,3,4,8]"]);
        // Run-time scales: the resized dims are fresh symbols.
        let out = check(&Resize::default(), &[x, None, ty(f, &["4"])], &[], 1).unwrap();
        assert_eq!(out, ["f32[resize_0,resize_1,resize_2,resize_3]"]);
    }

    #[test]
    fn sampling_and_pooling_shapes() {
        let f = DType::F32;
        let gs = check(
            &GridSample::default(),
            &[ty(f, &["n", "c", "8", "8"]), ty(f, &["n", "5", "6", "2"])],
            &[],
            1,
        );
        assert_eq!(gs.unwrap(), ["f32[n,c,5,6]"]);
        let size = Tensor::vector(vec![2i64, 3, 4, 5, 6]);
        let ag = check(
            &AffineGrid::default(),
            &[ty(f, &["2", "3", "4"]), ty(DType::I64, &["5"])],
            &[None, Some(size)],
            1,
        );
        assert_eq!(ag.unwrap(), ["f32[2,4,5,6,3]"]);
        let roi = RoiAlign {
            output_height: 3,
            output_width: 2,
            ..Default::default()
        };
        let inputs = [
            ty(f, &["n", "c", "h", "w"]),
            ty(f, &["r", "4"]),
            ty(DType::I64, &["r"]),
        ];
        assert_eq!(check(&roi, &inputs, &[], 1).unwrap(), ["f32[r,c,3,2]"]);
        let unpool = MaxUnpool {
            kernel_shape: vec![2, 2],
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        let inputs = [
            ty(f, &["1", "3", "4", "s"]),
            ty(DType::I64, &["1", "3", "4", "s"]),
        ];
        assert_eq!(
            check(&unpool, &inputs, &[], 1).unwrap(),
            ["f32[1,3,8,unpool_0]"]
        );
        let deform = [
            ty(f, &["n", "4", "9", "9"]),
            ty(f, &["6", "4", "3", "3"]),
            ty(f, &["n", "18", "7", "7"]),
        ];
        assert_eq!(
            check(&DeformConv::default(), &deform, &[], 1).unwrap(),
            ["f32[n,6,7,7]"]
        );
        let pool = MaxRoiPool {
            pooled_shape: vec![0, 2],
            ..Default::default()
        };
        assert!(
            check(
                &pool,
                &[ty(f, &["n", "c", "h", "w"]), ty(f, &["r", "5"])],
                &[],
                1
            )
            .is_err()
        );
    }
}
