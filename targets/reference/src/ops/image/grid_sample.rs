//! `GridSample` (opset 22) for any number of spatial dims: nearest, linear and cubic sampling with zeros, border
//! or reflection padding.
//!
//! Like onnx's reference, denormalized coordinates are kept in f32, nearest rounds half to even, and
//! interpolation is separable: the value is the sum over all taps of the product of per-dim coefficients times
//! the padded pixel.

use jiuzhou_ir::ops::GridSample;
use jiuzhou_ir::{DType, Value};

use super::{reals, to_dtype};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Reflects `x` into `[lo, hi]` by bouncing off the borders.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 { lo + r } else { hi - r }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range) as i64;
        let r = dx - n as f64 * range;
        if n % 2 == 0 { hi - r } else { lo + r }
    } else {
        x
    }
}

/// Keys' cubic convolution coefficients (a = -0.75) for a fractional offset `x`.
fn cubic_coeffs(x: f64) -> [f64; 4] {
    let a = -0.75;
    let x = x.abs();
    [
        ((a * (x + 1.0) - 5.0 * a) * (x + 1.0) + 8.0 * a) * (x + 1.0) - 4.0 * a,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
        ((a + 2.0) * (1.0 - x) - (a + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0,
        ((a * (2.0 - x) - 5.0 * a) * (2.0 - x) + 8.0 * a) * (2.0 - x) - 4.0 * a,
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// Maps a tap index along a dim of size `d` to an in-range index, or `None` for a zero pixel.
fn pad_index(i: i64, d: usize, lo: f64, hi: f64, padding: Padding) -> Option<usize> {
    match padding {
        Padding::Zeros => (i >= 0 && i < d as i64).then_some(i as usize),
        Padding::Border => Some(i.clamp(0, d as i64 - 1) as usize),
        Padding::Reflection => {
            let r = reflect(i as f64, lo, hi) as i64;
            Some(r.clamp(0, d as i64 - 1) as usize)
        }
    }
}

impl EvalOp for GridSample {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, grid) = (cx.tensor(0)?, cx.tensor(1)?);
        let xs = x.shape();
        let gs = grid.shape();
        if xs.len() < 3 || gs.len() != xs.len() {
            eval_bail!("X {xs:?} and grid {gs:?} must have the same rank, at least 3");
        }
        let k = xs.len() - 2;
        if gs[0] != xs[0] || gs[k + 1] != k {
            eval_bail!("grid shape {gs:?} does not fit X shape {xs:?}");
        }
        let padding = match self.padding_mode.as_str() {
            "zeros" => Padding::Zeros,
            "border" => Padding::Border,
            "reflection" => Padding::Reflection,
            p => eval_bail!("unknown padding_mode `{p}`"),
        };
        let mode = self.mode.as_str();
        if !matches!(
            mode,
            "nearest" | "linear" | "cubic" | "bilinear" | "bicubic"
        ) {
            eval_bail!("unknown mode `{mode}`");
        }
        let align = self.align_corners != 0;
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let out_sp: Vec<usize> = gs[1..=k].to_vec();
        let mut out_shape = vec![n, c];
        out_shape.extend(&out_sp);
        let total = jiuzhou_ir::tensor::checked_numel(&out_shape, x.dtype())?;
        if total > 0 && dims.contains(&0) {
            eval_bail!("cannot sample from X with an empty spatial dim, shape {xs:?}");
        }
        let xv = reals(x, "X")?;
        let gv = reals(grid, "grid")?;
        let grid_f32 = grid.dtype() != DType::F64;
        let borders: Vec<(f64, f64)> = dims
            .iter()
            .map(|&d| {
                if align {
                    (0.0, d as f64 - 1.0)
                } else {
                    (-0.5, d as f64 - 0.5)
                }
            })
            .collect();
        let plane: usize = dims.iter().product();
        let strides = crate::kernels::strides(dims);
        let npos: usize = out_sp.iter().product();
        let mut out = vec![0.0; total];
        for b in 0..n {
            for p in 0..npos {
                // Denormalized coordinates in X's dim order (the grid stores them innermost first), as f32.
                let g = &gv[(b * npos + p) * k..][..k];
                let mut coords = vec![0.0f64; k];
                for (i, &d) in dims.iter().enumerate() {
                    let nx = g[k - 1 - i];
                    let v = if grid_f32 {
                        let (nx, len) = (nx as f32, d as f32);
                        (if align {
                            (nx + 1.0) / 2.0 * (len - 1.0)
                        } else {
                            ((nx + 1.0) * len - 1.0) / 2.0
                        }) as f64
                    } else if align {
                        ((nx + 1.0) / 2.0 * (d as f64 - 1.0)) as f32 as f64
                    } else {
                        (((nx + 1.0) * d as f64 - 1.0) / 2.0) as f32 as f64
                    };
                    let mut v = if mode == "nearest" {
                        v.round_ties_even()
                    } else {
                        v
                    };
                    let (lo, hi) = borders[i];
                    if v < lo || v > hi {
                        v = match padding {
                            Padding::Border => v.clamp(0.0, d as f64 - 1.0),
                            Padding::Reflection => reflect(v, lo, hi) as f32 as f64,
                            Padding::Zeros => v,
                        };
                    }
                    coords[i] = v;
                }
                // Taps per dim: (index, coefficient).
                let taps: Vec<Vec<(i64, f64)>> = coords
                    .iter()
                    .map(|&v| match mode {
                        "nearest" => vec![(v as i32 as i64, 1.0)],
                        "linear" | "bilinear" => {
                            let x0 = v.floor();
                            let t = v - x0;
                            vec![(x0 as i64, 1.0 - t), (x0 as i64 + 1, t)]
                        }
                        _ => {
                            let x0 = v.floor();
                            let cf = cubic_coeffs(v - x0);
                            (0..4).map(|j| (x0 as i64 - 1 + j as i64, cf[j])).collect()
                        }
                    })
                    .collect();
                for ch in 0..c {
                    let base = (b * c + ch) * plane;
                    let mut acc = 0.0;
                    let mut sel = vec![0usize; k];
                    'combos: loop {
                        let mut w = 1.0;
                        let mut off = Some(0usize);
                        for i in 0..k {
                            let (idx, cf) = taps[i][sel[i]];
                            w *= cf;
                            let (lo, hi) = borders[i];
                            off = match (off, pad_index(idx, dims[i], lo, hi, padding)) {
                                (Some(o), Some(j)) => Some(o + j * strides[i]),
                                _ => None,
                            };
                        }
                        if let Some(o) = off {
                            acc += w * xv[base + o];
                        }
                        // Next combination of taps.
                        for i in (0..k).rev() {
                            sel[i] += 1;
                            if sel[i] < taps[i].len() {
                                continue 'combos;
                            }
                            sel[i] = 0;
                        }
                        break;
                    }
                    out[(b * c + ch) * npos + p] = acc;
                }
            }
        }
        Ok(vec![Value::from(to_dtype(x.dtype(), out_shape, out)?)])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::GridSample;

    use crate::ops::recurrent::test_util::{close, f, run};

    #[test]
    fn corners_and_padding() {
        // A 2x2 image sampled at its four corners (align_corners) and at the centre.
        let x = f(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let grid = f(
            &[1, 1, 5, 2],
            &[-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
        );
        let op = GridSample {
            align_corners: 1,
            ..Default::default()
        };
        let out = run(op, vec![x.clone(), grid], 1).unwrap();
        close(&out[0], &[1, 1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 2.5]);
        // Far outside: zeros padding gives 0, border padding the nearest edge pixel.
        let outside = f(&[1, 1, 1, 2], &[3.0, 3.0]);
        let out = run(GridSample::default(), vec![x.clone(), outside.clone()], 1).unwrap();
        close(&out[0], &[1, 1, 1, 1], &[0.0]);
        let border = GridSample {
            padding_mode: "border".into(),
            ..Default::default()
        };
        let out = run(border, vec![x.clone(), outside], 1).unwrap();
        close(&out[0], &[1, 1, 1, 1], &[4.0]);
        // A grid whose last dim is not the spatial rank is an error.
        assert!(
            run(
                GridSample::default(),
                vec![x, f(&[1, 1, 1, 3], &[0.0; 3])],
                1
            )
            .is_err()
        );
    }
}
