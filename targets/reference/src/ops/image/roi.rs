//! Region-of-interest pooling: `RoiAlign` (opset 22, bilinear sampling, average or max) and `MaxRoiPool`
//! (Caffe-style quantized max pooling).

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::{MaxRoiPool, RoiAlign};

use super::{reals, to_dtype};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The four bilinear taps of a sample point: flat positions in the `height x width` plane and weights.
type Taps = [(usize, f64); 4];

/// Bilinear taps for sample `(y, x)`, or `None` when the point is outside the plane (it contributes zero).
fn bilinear_taps(y: f64, x: f64, height: usize, width: usize) -> Option<Taps> {
    if y < -1.0 || y > height as f64 || x < -1.0 || x > width as f64 {
        return None;
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut y_low, mut x_low) = (y as usize, x as usize);
    let (y_high, x_high);
    if y_low >= height - 1 {
        y_low = height - 1;
        y_high = y_low;
        y = y_low as f64;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= width - 1 {
        x_low = width - 1;
        x_high = x_low;
        x = x_low as f64;
    } else {
        x_high = x_low + 1;
    }
    let (ly, lx) = (y - y_low as f64, x - x_low as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some([
        (y_low * width + x_low, hy * hx),
        (y_low * width + x_high, hy * lx),
        (y_high * width + x_low, ly * hx),
        (y_high * width + x_high, ly * lx),
    ])
}

/// Checks `X` is `[N, C, H, W]` and `rois` is `[num_rois, cols]`; returns `(n, c, h, w, num_rois)`.
fn roi_shapes(
    xs: &[usize],
    rs: &[usize],
    cols: usize,
) -> Result<(usize, usize, usize, usize, usize), EvalError> {
    let (&[n, c, h, w], &[nr, rc]) = (xs, rs) else {
        eval_bail!("X must be 4-D and rois 2-D, got {xs:?} and {rs:?}");
    };
    if rc != cols {
        eval_bail!("rois must have {cols} columns, got {rc}");
    }
    Ok((n, c, h, w, nr))
}

impl EvalOp for RoiAlign {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (xt, rt) = (cx.tensor(0)?, cx.tensor(1)?);
        let (n, c, height, width, nr) = roi_shapes(xt.shape(), rt.shape(), 4)?;
        let batch = cx.ints(2)?;
        if batch.len() != nr {
            eval_bail!("batch_indices has {} entries for {nr} rois", batch.len());
        }
        let half_pixel = match self.coordinate_transformation_mode.as_str() {
            "half_pixel" => true,
            "output_half_pixel" => false,
            m => eval_bail!("unknown coordinate_transformation_mode `{m}`"),
        };
        let max_mode = match self.mode.as_str() {
            "avg" => false,
            "max" => true,
            m => eval_bail!("unknown mode `{m}`"),
        };
        let (ph_n, pw_n) = (self.output_height, self.output_width);
        if ph_n <= 0 || pw_n <= 0 {
            eval_bail!("output_height and output_width must be positive");
        }
        let (ph_n, pw_n) = (ph_n as usize, pw_n as usize);
        let out_shape = vec![nr, c, ph_n, pw_n];
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, xt.dtype())?;
        if total == 0 {
            return Ok(vec![Value::from(to_dtype(xt.dtype(), out_shape, vec![])?)]);
        }
        if height == 0 || width == 0 {
            eval_bail!("X has an empty spatial dim");
        }
        let x = reals(xt, "X")?;
        let rois = reals(rt, "rois")?;
        let scale = self.spatial_scale as f64;
        let offset = if half_pixel { 0.5 } else { 0.0 };
        let mut out = vec![0.0; total];
        for r in 0..nr {
            let b = batch[r];
            if b < 0 || b as usize >= n {
                eval_bail!("batch index {b} is out of range for batch size {n}");
            }
            let roi = &rois[r * 4..r * 4 + 4];
            let (sw, sh) = (roi[0] * scale - offset, roi[1] * scale - offset);
            let (ew, eh) = (roi[2] * scale - offset, roi[3] * scale - offset);
            let (mut rw, mut rh) = (ew - sw, eh - sh);
            if !half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            let (bh, bw) = (rh / ph_n as f64, rw / pw_n as f64);
            let grid = |v: f64| -> Result<usize, EvalError> {
                let g = if self.sampling_ratio > 0 {
                    self.sampling_ratio as f64
                } else {
                    v.ceil()
                };
                if !(0.0..=1e6).contains(&g) {
                    eval_bail!("roi {r} needs {g} samples per bin");
                }
                Ok(g as usize)
            };
            let (gh, gw) = (grid(bh)?, grid(bw)?);
            if gh.saturating_mul(gw).saturating_mul(ph_n * pw_n) > 1 << 26 {
                eval_bail!("roi {r} needs too many samples ({gh} x {gw} per bin)");
            }
            let count = (gh * gw).max(1) as f64;
            // Sample taps per output bin, shared by every channel.
            let mut taps: Vec<Option<Taps>> = Vec::with_capacity(ph_n * pw_n * gh * gw);
            for ph in 0..ph_n {
                for pw in 0..pw_n {
                    for iy in 0..gh {
                        let y = sh + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let xx = sw + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            taps.push(bilinear_taps(y, xx, height, width));
                        }
                    }
                }
            }
            for ch in 0..c {
                let plane = &x[(b as usize * c + ch) * height * width..][..height * width];
                for bin in 0..ph_n * pw_n {
                    let samples = &taps[bin * gh * gw..][..gh * gw];
                    let v = if max_mode {
                        let mut best: Option<f64> = None;
                        for t in samples {
                            // Like onnx's reference (and onnxruntime), max mode takes the largest weighted tap.
                            let val = match t {
                                Some(t) => t
                                    .iter()
                                    .map(|&(p, w)| w * plane[p])
                                    .fold(f64::NEG_INFINITY, f64::max),
                                None => 0.0 * plane[0],
                            };
                            best = Some(best.map_or(val, |b| b.max(val)));
                        }
                        best.unwrap_or(0.0)
                    } else {
                        let sum: f64 = samples
                            .iter()
                            .map(|t| t.map_or(0.0, |t| t.iter().map(|&(p, w)| w * plane[p]).sum()))
                            .sum();
                        sum / count
                    };
                    out[(r * c + ch) * ph_n * pw_n + bin] = v;
                }
            }
        }
        Ok(vec![Value::from(to_dtype(xt.dtype(), out_shape, out)?)])
    }
}

/// The pixel range `lo..hi` of MaxRoiPool bin `i`, `step` pixels wide from `start`, clipped to `0..len`.
fn pool_bin(i: usize, step: f64, start: i64, len: usize) -> (usize, usize) {
    let clip = |v: f64| (v as i64).saturating_add(start).clamp(0, len as i64) as usize;
    (
        clip((i as f64 * step).floor()),
        clip(((i + 1) as f64 * step).ceil()),
    )
}

impl EvalOp for MaxRoiPool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (xt, rt) = (cx.tensor(0)?, cx.tensor(1)?);
        let (n, c, height, width, nr) = roi_shapes(xt.shape(), rt.shape(), 5)?;
        let [ph_n, pw_n] = self.pooled_shape[..] else {
            eval_bail!(
                "pooled_shape must have 2 values, got {:?}",
                self.pooled_shape
            );
        };
        if ph_n <= 0 || pw_n <= 0 {
            eval_bail!("pooled_shape {:?} must be positive", self.pooled_shape);
        }
        let (ph_n, pw_n) = (ph_n as usize, pw_n as usize);
        let out_shape = vec![nr, c, ph_n, pw_n];
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, xt.dtype())?;
        let x = reals(xt, "X")?;
        let rois = reals(rt, "rois")?;
        let scale = self.spatial_scale as f64;
        let mut out = vec![0.0; total];
        for r in 0..nr {
            let roi = &rois[r * 5..r * 5 + 5];
            let b = roi[0] as i64;
            if b < 0 || b as usize >= n {
                eval_bail!("batch index {b} is out of range for batch size {n}");
            }
            let q = |v: f64| (v * scale).round() as i64;
            let (sw, sh, ew, eh) = (q(roi[1]), q(roi[2]), q(roi[3]), q(roi[4]));
            let rh = eh.saturating_sub(sh).saturating_add(1).max(1) as f64;
            let rw = ew.saturating_sub(sw).saturating_add(1).max(1) as f64;
            let (bh, bw) = (rh / ph_n as f64, rw / pw_n as f64);
            for ch in 0..c {
                let plane = &x[(b as usize * c + ch) * height * width..][..height * width];
                for ph in 0..ph_n {
                    let (hs, he) = pool_bin(ph, bh, sh, height);
                    for pw in 0..pw_n {
                        let (ws, we) = pool_bin(pw, bw, sw, width);
                        let mut m = 0.0;
                        if he > hs && we > ws {
                            m = f64::NEG_INFINITY;
                            for yy in hs..he {
                                for xx in ws..we {
                                    m = m.max(plane[yy * width + xx]);
                                }
                            }
                        }
                        out[((r * c + ch) * ph_n + ph) * pw_n + pw] = m;
                    }
                }
            }
        }
        Ok(vec![Value::from(to_dtype(xt.dtype(), out_shape, out)?)])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{MaxRoiPool, RoiAlign};

    use crate::ops::recurrent::test_util::{close, f, i, run};

    #[test]
    fn roi_align_of_a_constant_image_is_constant() {
        let op = RoiAlign {
            output_height: 2,
            output_width: 2,
            ..Default::default()
        };
        let inputs = vec![
            f(&[1, 1, 4, 4], &[3.0; 16]),
            f(&[1, 4], &[0.5, 0.5, 3.5, 3.5]),
            i(&[1], &[0]),
        ];
        let out = run(op.clone(), inputs, 1).unwrap();
        close(&out[0], &[1, 1, 2, 2], &[3.0; 4]);
        let bad_batch = vec![
            f(&[1, 1, 4, 4], &[3.0; 16]),
            f(&[1, 4], &[0.0; 4]),
            i(&[1], &[3]),
        ];
        assert!(run(op, bad_batch, 1).is_err());
    }

    #[test]
    fn max_roi_pool_takes_bin_maxima() {
        let op = MaxRoiPool {
            pooled_shape: vec![1, 2],
            ..Default::default()
        };
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = run(
            op,
            vec![f(&[1, 1, 4, 4], &x), f(&[1, 5], &[0.0, 0.0, 0.0, 3.0, 1.0])],
            1,
        )
        .unwrap();
        close(&out[0], &[1, 1, 1, 2], &[5.0, 7.0]);
    }
}
