//! Image and geometry ops: resize, grid sampling, ROI pooling and alignment, affine grids, deformable convolution, unpooling.
//!
//! Output dims are exact when the inputs that decide them are known (constant `scales`/`sizes`, known input
//! dims); otherwise they are fresh symbols.

use super::{InferCx, InferError, InferOp, normalize_axis, not_yet_inferred};
use crate::ops::*;
use crate::{Dim, TensorType, ValueType};

not_yet_inferred!(AffineGrid, DeformConv, MaxRoiPool, MaxUnpool, RoiAlign);

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
