//! Geometry ops: `AffineGrid` (sampling grids from affine matrices), `DeformConv` (2-D convolution at learned
//! offsets, bilinear sampling with zero padding) and `MaxUnpool` (scatter of pooled maxima back to their places).

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::{AffineGrid, DeformConv, MaxUnpool};

use super::{reals, to_dtype};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The normalized coordinates of the `s` pixel centers (or corners, with `align_corners`) of one axis, in `[-1, 1]`.
fn base_coords(s: usize, align: bool) -> Vec<f64> {
    if align {
        let step = if s > 1 { 2.0 / (s as f64 - 1.0) } else { 0.0 };
        (0..s).map(|i| -1.0 + i as f64 * step).collect()
    } else {
        let step = 2.0 / s as f64;
        (0..s)
            .map(|i| -1.0 + step / 2.0 + i as f64 * step)
            .collect()
    }
}

impl EvalOp for AffineGrid {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let theta_t = cx.tensor(0)?;
        let size = cx.ints(1)?;
        if size.iter().any(|&s| s < 0) {
            eval_bail!("size {size:?} must be non-negative");
        }
        let size: Vec<usize> = size.into_iter().map(|s| s as usize).collect();
        let k = match size.len() {
            4 => 2,
            5 => 3,
            _ => eval_bail!("size must have 4 or 5 values, got {size:?}"),
        };
        let n = size[0];
        if theta_t.shape() != [n, k, k + 1] {
            eval_bail!(
                "theta has shape {:?}, expected [{n}, {k}, {}]",
                theta_t.shape(),
                k + 1
            );
        }
        let theta = reals(theta_t, "theta")?;
        let spatial = &size[2..];
        let align = self.align_corners != 0;
        // Axes innermost first: x (width), y (height), z (depth).
        let coords: Vec<Vec<f64>> = spatial
            .iter()
            .rev()
            .map(|&s| base_coords(s, align))
            .collect();
        let mut out_shape = vec![n];
        out_shape.extend(spatial);
        out_shape.push(k);
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, theta_t.dtype())?;
        let npos: usize = spatial.iter().product();
        let mut out = Vec::with_capacity(total);
        for b in 0..n {
            let t = &theta[b * k * (k + 1)..][..k * (k + 1)];
            for p in 0..npos {
                // Homogeneous point (x, y[, z], 1) of position p (row-major over the spatial dims).
                let mut rem = p;
                let mut point = vec![0.0; k + 1];
                for (a, c) in coords.iter().enumerate() {
                    let s = c.len();
                    point[a] = c[rem % s];
                    rem /= s;
                }
                point[k] = 1.0;
                for row in 0..k {
                    out.push((0..=k).map(|j| t[row * (k + 1) + j] * point[j]).sum());
                }
            }
        }
        Ok(vec![Value::from(to_dtype(
            theta_t.dtype(),
            out_shape,
            out,
        )?)])
    }
}

/// Bilinear sample of a `h x w` plane at `(y, x)`, zero outside.
fn sample(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let mut acc = 0.0;
    for (dy, wy) in [(0, 1.0 - ly), (1, ly)] {
        for (dx, wx) in [(0, 1.0 - lx), (1, lx)] {
            let (yy, xx) = (y0 as i64 + dy, x0 as i64 + dx);
            if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                acc += wy * wx * plane[yy as usize * w + xx as usize];
            }
        }
    }
    acc
}

impl EvalOp for DeformConv {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (xt, wt, ot) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        let (&[n, ic, ih, iw], &[oc, icg, kh, kw]) = (xt.shape(), wt.shape()) else {
            eval_bail!(
                "only 2-D DeformConv is supported: X {:?} and W {:?} must be 4-D",
                xt.shape(),
                wt.shape()
            );
        };
        if let Some(ks) = self
            .kernel_shape
            .as_ref()
            .filter(|ks| ks[..] != [kh as i64, kw as i64])
        {
            eval_bail!("kernel_shape {ks:?} does not match W {:?}", wt.shape());
        }
        let pair = |v: &Option<Vec<i64>>,
                    len: usize,
                    d: i64,
                    what: &str|
         -> Result<Vec<usize>, EvalError> {
            let v = v.clone().unwrap_or_else(|| vec![d; len]);
            if v.len() != len || v.iter().any(|&x| !(0..=1 << 20).contains(&x)) {
                eval_bail!("{what} {v:?} must be {len} small non-negative values");
            }
            Ok(v.into_iter().map(|x| x as usize).collect())
        };
        let strides = pair(&self.strides, 2, 1, "strides")?;
        let dil = pair(&self.dilations, 2, 1, "dilations")?;
        let pads = pair(&self.pads, 4, 0, "pads")?;
        if strides.contains(&0) || dil.contains(&0) {
            eval_bail!("strides and dilations must be positive");
        }
        let (g, og) = (self.group, self.offset_group);
        if g <= 0 || og <= 0 {
            eval_bail!("group and offset_group must be positive");
        }
        let (g, og) = (g as usize, og as usize);
        if icg * g != ic || oc % g != 0 || ic % og != 0 {
            eval_bail!(
                "X {:?}, W {:?}, group {g} and offset_group {og} do not fit",
                xt.shape(),
                wt.shape()
            );
        }
        let (ekh, ekw) = ((kh - 1) * dil[0] + 1, (kw - 1) * dil[1] + 1);
        let (ph, pw) = (ih + pads[0] + pads[2], iw + pads[1] + pads[3]);
        if ph < ekh || pw < ekw {
            eval_bail!("the dilated kernel is larger than the padded input");
        }
        let (oh, ow) = ((ph - ekh) / strides[0] + 1, (pw - ekw) / strides[1] + 1);
        if ot.shape() != [n, og * kh * kw * 2, oh, ow] {
            eval_bail!(
                "offset has shape {:?}, expected [{n}, {}, {oh}, {ow}]",
                ot.shape(),
                og * kh * kw * 2
            );
        }
        let mask = match cx.opt_tensor(4)? {
            Some(m) if m.shape() == [n, og * kh * kw, oh, ow] => Some(reals(m, "mask")?),
            Some(m) => eval_bail!(
                "mask has shape {:?}, expected [{n}, {}, {oh}, {ow}]",
                m.shape(),
                og * kh * kw
            ),
            None => None,
        };
        let bias = match cx.opt_tensor(3)? {
            Some(b) if b.shape() == [oc] => reals(b, "B")?,
            Some(b) => eval_bail!("B has shape {:?}, expected [{oc}]", b.shape()),
            None => vec![0.0; oc],
        };
        let out_shape = vec![n, oc, oh, ow];
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, xt.dtype())?;
        let (x, w, off) = (reals(xt, "X")?, reals(wt, "W")?, reals(ot, "offset")?);
        let (ocg, icog) = (oc / g, ic / og);
        let mut out = vec![0.0; total];
        for b in 0..n {
            for o in 0..oc {
                let grp = o / ocg;
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = bias[o];
                        for icl in 0..icg {
                            let c = grp * icg + icl;
                            let ogi = c / icog;
                            let plane = &x[(b * ic + c) * ih * iw..][..ih * iw];
                            for a in 0..kh {
                                for e in 0..kw {
                                    let kidx = (ogi * kh + a) * kw + e;
                                    let oy = off[((b * og * kh * kw * 2) + kidx * 2) * oh * ow
                                        + i * ow
                                        + j];
                                    let ox = off[((b * og * kh * kw * 2) + kidx * 2 + 1) * oh * ow
                                        + i * ow
                                        + j];
                                    let y = (i * strides[0]) as f64 - pads[0] as f64
                                        + (a * dil[0]) as f64
                                        + oy;
                                    let xx = (j * strides[1]) as f64 - pads[1] as f64
                                        + (e * dil[1]) as f64
                                        + ox;
                                    let m = mask.as_ref().map_or(1.0, |m| {
                                        m[((b * og * kh * kw) + kidx) * oh * ow + i * ow + j]
                                    });
                                    let wv = w[((o * icg + icl) * kh + a) * kw + e];
                                    acc += wv * m * sample(plane, ih, iw, y, xx);
                                }
                            }
                        }
                        out[((b * oc + o) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        Ok(vec![Value::from(to_dtype(xt.dtype(), out_shape, out)?)])
    }
}

impl EvalOp for MaxUnpool {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (xt, it) = (cx.tensor(0)?, cx.tensor(1)?);
        let xs = xt.shape();
        let k = self.kernel_shape.len();
        if xs.len() != k + 2 || it.shape() != xs {
            eval_bail!(
                "X {xs:?} and indices {:?} must match and have {} dims",
                it.shape(),
                k + 2
            );
        }
        let strides = self.strides.clone().unwrap_or_else(|| vec![1; k]);
        let pads = self.pads.clone().unwrap_or_else(|| vec![0; 2 * k]);
        if strides.len() != k || pads.len() != 2 * k {
            eval_bail!("strides {strides:?} and pads {pads:?} do not fit {k} spatial dims");
        }
        // The shape MaxPool would have unpooled to.
        let mut inferred = vec![xs[0], xs[1]];
        for d in 0..k {
            let v = (xs[d + 2] as i64 - 1)
                .saturating_mul(strides[d])
                .saturating_sub(pads[d].saturating_add(pads[k + d]))
                .saturating_add(self.kernel_shape[d]);
            if v < 0 {
                eval_bail!("unpooled dim {d} would be negative");
            }
            inferred.push(v as usize);
        }
        let out_shape: Vec<usize> = match cx.opt_ints(2)? {
            Some(s) => {
                if s.len() != k + 2 || s.iter().zip(&inferred).any(|(&o, &i)| o < i as i64) {
                    eval_bail!(
                        "output_shape {s:?} must have {} dims, none smaller than {inferred:?}",
                        k + 2
                    );
                }
                s.into_iter().map(|v| v as usize).collect()
            }
            None => inferred.clone(),
        };
        let n_inf = jiuzhou_ir::tensor::checked_numel(&inferred, xt.dtype())?;
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, xt.dtype())?;
        let x = reals(xt, "X")?;
        let idx = cx.ints(1)?;
        let mut y = vec![0.0; n_inf];
        for (&i, &v) in idx.iter().zip(&x) {
            if i < 0 || i as usize >= n_inf {
                eval_bail!("index {i} is out of range for unpooled size {n_inf}");
            }
            y[i as usize] = v;
        }
        // Place the unpooled tensor at the origin of the (possibly larger) output.
        let mut out = vec![0.0; total];
        let (si, so) = (
            crate::kernels::strides(&inferred),
            crate::kernels::strides(&out_shape),
        );
        for (p, &v) in y.iter().enumerate() {
            let o: usize = (0..inferred.len())
                .map(|d| (p / si[d]) % inferred[d] * so[d])
                .sum();
            out[o] = v;
        }
        Ok(vec![Value::from(to_dtype(xt.dtype(), out_shape, out)?)])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{AffineGrid, DeformConv, MaxUnpool};

    use crate::ops::recurrent::test_util::{close, f, i, run};

    #[test]
    fn identity_affine_grid() {
        let op = AffineGrid { align_corners: 1 };
        let out = run(
            op,
            vec![
                f(&[1, 2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
                i(&[4], &[1, 1, 2, 2]),
            ],
            1,
        )
        .unwrap();
        close(
            &out[0],
            &[1, 2, 2, 2],
            &[-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0],
        );
    }

    #[test]
    fn deform_conv_with_zero_offsets_is_a_convolution() {
        let x = f(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = f(&[1, 1, 1, 1], &[2.0]);
        let offset = f(&[1, 2, 2, 2], &[0.0; 8]);
        let out = run(
            DeformConv::default(),
            vec![x.clone(), w.clone(), offset, f(&[1], &[1.0])],
            1,
        )
        .unwrap();
        close(&out[0], &[1, 1, 2, 2], &[3.0, 5.0, 7.0, 9.0]);
        // Shifting every tap half a pixel right averages horizontal neighbours (zero outside).
        let shifted = f(&[1, 2, 2, 2], &[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]);
        let out = run(DeformConv::default(), vec![x, w, shifted], 1).unwrap();
        close(&out[0], &[1, 1, 2, 2], &[3.0, 2.0, 7.0, 4.0]);
    }

    #[test]
    fn max_unpool_scatters() {
        let op = MaxUnpool {
            kernel_shape: vec![2, 2],
            strides: Some(vec![2, 2]),
            ..Default::default()
        };
        let inputs = vec![f(&[1, 1, 1, 1], &[5.0]), i(&[1, 1, 1, 1], &[3])];
        let out = run(op.clone(), inputs, 1).unwrap();
        close(&out[0], &[1, 1, 2, 2], &[0.0, 0.0, 0.0, 5.0]);
        let with_shape = vec![
            f(&[1, 1, 1, 1], &[5.0]),
            i(&[1, 1, 1, 1], &[3]),
            i(&[4], &[1, 1, 3, 3]),
        ];
        let out = run(op.clone(), with_shape, 1).unwrap();
        close(
            &out[0],
            &[1, 1, 3, 3],
            &[0.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0],
        );
        assert!(
            run(
                op,
                vec![f(&[1, 1, 1, 1], &[5.0]), i(&[1, 1, 1, 1], &[4])],
                1
            )
            .is_err()
        );
    }
}
