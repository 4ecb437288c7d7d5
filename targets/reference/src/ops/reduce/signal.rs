//! Signal processing: `DFT`, `STFT`, the `Hann`/`Hamming`/`Blackman` windows and `MelWeightMatrix`.
//!
//! Complex signals are stored with a last dim of 2 (real, imaginary); real signals have a last dim of 1. Transforms
//! are the plain O(n²) sums, computed in f64 with exactly reduced twiddle angles, and rounded once to the output
//! type.

use std::f64::consts::PI;

use jiuzhou_ir::ops::{BlackmanWindow, DFT, HammingWindow, HannWindow, MelWeightMatrix, STFT};
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Value};

use super::{float_values, scalar_int, tensor_from_f64};
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// A complex number as (real, imaginary).
type Complex = (f64, f64);

/// `(sin, cos)` of the angle `2π·q/n`, exact at quarter turns (so transforms of small integer signals are exact).
fn twiddle(q: usize, n: usize) -> (f64, f64) {
    if (4 * q as u128).is_multiple_of(n as u128) {
        match (4 * q as u128) / n as u128 {
            0 => (0.0, 1.0),
            1 => (1.0, 0.0),
            2 => (0.0, -1.0),
            _ => (-1.0, 0.0),
        }
    } else {
        (2.0 * PI * q as f64 / n as f64).sin_cos()
    }
}

/// `count` terms of the discrete Fourier transform of length `n` of `x` (zero-padded or truncated to `n`), with
/// kernel `exp(sign · 2πi·k·t/n)`; `k·t` is reduced modulo `n` in integers so angles stay exact for long transforms.
fn dft_sum(x: &[Complex], n: usize, sign: f64, count: usize) -> Vec<Complex> {
    (0..count)
        .map(|k| {
            let mut acc = (0.0, 0.0);
            for (t, &(re, im)) in x.iter().take(n).enumerate() {
                let (s, c) = twiddle(((k as u128 * t as u128) % n as u128) as usize, n);
                let s = sign * s;
                acc.0 += re * c - im * s;
                acc.1 += re * s + im * c;
            }
            acc
        })
        .collect()
}

/// One transform along a line: forward (full or one-sided), inverse, or inverse one-sided (the real signal whose
/// one-sided spectrum `x` is, numpy's `irfft`).
fn transform(x: &[Complex], n: usize, inverse: bool, onesided: bool) -> Vec<Complex> {
    let scale = 1.0 / n as f64;
    match (inverse, onesided) {
        (false, false) => dft_sum(x, n, -1.0, n),
        (false, true) => dft_sum(x, n, -1.0, n / 2 + 1),
        (true, false) => dft_sum(x, n, 1.0, n)
            .into_iter()
            .map(|(re, im)| (re * scale, im * scale))
            .collect(),
        (true, true) => {
            // Rebuild the full spectrum from its Hermitian half; the real part of the inverse then ignores the
            // imaginary parts of the DC and Nyquist terms, as numpy does.
            let half = n / 2 + 1;
            let mut full: Vec<Complex> = (0..n)
                .map(|k| {
                    if k < half {
                        x.get(k).copied().unwrap_or((0.0, 0.0))
                    } else {
                        (0.0, 0.0)
                    }
                })
                .collect();
            for k in half..n {
                let (re, im) = full[n - k];
                full[k] = (re, -im);
            }
            dft_sum(&full, n, 1.0, n)
                .into_iter()
                .map(|(re, _)| (re * scale, 0.0))
                .collect()
        }
    }
}

/// The inverse transform of length `n` of `x` (zero-padded or truncated) as numpy's `ifft` computes it for
/// `complex64` data (see [`super::pocketfft`]), if the length is one it handles that way.
fn single_precision_ifft(x: &[Complex], n: usize) -> Option<Vec<Complex>> {
    let line: Vec<(f32, f32)> = (0..n)
        .map(|t| {
            x.get(t)
                .map_or((0.0, 0.0), |&(re, im)| (re as f32, im as f32))
        })
        .collect();
    let fct = (1.0 / n as f64) as f32;
    let out = super::pocketfft::backward(&line, fct)?;
    Some(
        out.into_iter()
            .map(|(re, im)| (re as f64, im as f64))
            .collect(),
    )
}

impl EvalOp for DFT {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let shape = x.shape();
        let r = shape.len();
        let c = shape.last().copied().unwrap_or(0);
        if r < 2 || !(c == 1 || c == 2) {
            eval_bail!("the DFT input must be [..., 1 or 2], got {shape:?}");
        }
        let axis = if cx.has_input(2) {
            scalar_int(cx, 2, "the axis")?
        } else {
            -2
        };
        let ax = norm_axis(axis, r)?;
        if ax == r - 1 {
            eval_bail!("the DFT axis cannot be the last (real/imaginary) dim");
        }
        let (inverse, onesided) = (self.inverse != 0, self.onesided != 0);
        let m = shape[ax];
        let n = if cx.has_input(1) {
            scalar_int(cx, 1, "dft_length")?
        } else if inverse && onesided {
            2 * (m as i64 - 1)
        } else {
            m as i64
        };
        if n < 1 {
            eval_bail!("the DFT length must be positive, got {n}");
        }
        let n = n as usize;
        let (out_len, out_c) = match (inverse, onesided) {
            (true, true) => (n, 1),
            (false, true) => (n / 2 + 1, 2),
            _ => (n, 2),
        };
        let mut out_shape = shape.to_vec();
        out_shape[ax] = out_len;
        out_shape[r - 1] = out_c;
        let mut out = vec![0.0; checked_numel(&out_shape, x.dtype())?];
        let v = float_values(x, "the DFT input")?;
        // numpy computes the inverse of complex64 data in single precision, and the tests keep its rounding.
        let numpy_f32 = inverse && !onesided && x.dtype() == DType::F32;
        let outer: usize = shape[..ax].iter().product();
        let inner: usize = shape[ax + 1..r - 1].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                let line: Vec<Complex> = (0..m)
                    .map(|j| {
                        let off = ((o * m + j) * inner + i) * c;
                        (v[off], if c == 2 { v[off + 1] } else { 0.0 })
                    })
                    .collect();
                let result = if numpy_f32 {
                    single_precision_ifft(&line, n)
                } else {
                    None
                };
                let result = result.unwrap_or_else(|| transform(&line, n, inverse, onesided));
                for (k, (re, im)) in result.into_iter().enumerate() {
                    let off = ((o * out_len + k) * inner + i) * out_c;
                    out[off] = re;
                    if out_c == 2 {
                        out[off + 1] = im;
                    }
                }
            }
        }
        Ok(vec![tensor_from_f64(x.dtype(), out_shape, out)?.into()])
    }
}

impl EvalOp for STFT {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let &[batch, len, c] = x.shape() else {
            eval_bail!(
                "the STFT signal must be [batch, length, 1 or 2], got {:?}",
                x.shape()
            );
        };
        if !(c == 1 || c == 2) {
            eval_bail!(
                "the STFT signal must be [batch, length, 1 or 2], got {:?}",
                x.shape()
            );
        }
        let step = scalar_int(cx, 1, "frame_step")?;
        if step < 1 {
            eval_bail!("frame_step must be positive, got {step}");
        }
        let window = match cx.opt_tensor(2)? {
            Some(w) if w.rank() == 1 => Some(float_values(w, "the window")?),
            Some(w) => eval_bail!("the window must have rank 1, got {:?}", w.shape()),
            None => None,
        };
        let frame_length = if cx.has_input(3) {
            scalar_int(cx, 3, "frame_length")?
        } else {
            window.as_ref().map_or(len, |w| w.len()) as i64
        };
        if frame_length < 1 || frame_length as usize > len {
            eval_bail!("frame_length {frame_length} does not fit a signal of length {len}");
        }
        let fl = frame_length as usize;
        let window = window.unwrap_or_else(|| vec![1.0; fl]);
        let frames = 1 + (len - fl) / step as usize;
        let onesided = self.onesided != 0;
        let bins = if onesided { fl / 2 + 1 } else { fl };
        let out_shape = vec![batch, frames, bins, 2];
        let mut out = vec![0.0; checked_numel(&out_shape, x.dtype())?];
        let v = float_values(x, "the signal")?;
        for b in 0..batch {
            for f in 0..frames {
                let begin = f * step as usize;
                let frame: Vec<Complex> = window
                    .iter()
                    .enumerate()
                    .map(|(j, &w)| {
                        let t = begin + j;
                        if t >= len {
                            return (0.0, 0.0);
                        }
                        let off = (b * len + t) * c;
                        let im = if c == 2 { v[off + 1] } else { 0.0 };
                        (v[off] * w, im * w)
                    })
                    .collect();
                for (k, (re, im)) in transform(&frame, fl, false, onesided)
                    .into_iter()
                    .enumerate()
                {
                    let off = ((b * frames + f) * bins + k) * 2;
                    out[off] = re;
                    out[off + 1] = im;
                }
            }
        }
        Ok(vec![tensor_from_f64(x.dtype(), out_shape, out)?.into()])
    }
}

/// The dtype named by an `output_datatype` attribute.
fn output_dtype(code: i64) -> Result<DType, EvalError> {
    match DType::from_onnx_code(code) {
        Some(d) if !d.is_bits() && (d.is_float() || d.is_int()) => Ok(d),
        _ => eval_bail!("output_datatype {code} is not a numeric type"),
    }
}

/// A window of `size` (input 0) values `f(n, N)`, with `N = size` if periodic and `size - 1` otherwise.
fn window(
    cx: &EvalCx<'_>,
    datatype: i64,
    periodic: i64,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Vec<Value>, EvalError> {
    let dtype = output_dtype(datatype)?;
    let size = scalar_int(cx, 0, "the window size")?;
    if size < 0 {
        eval_bail!("the window size must not be negative, got {size}");
    }
    let size = size as usize;
    checked_numel(&[size], dtype)?;
    let big_n = if periodic != 0 {
        size as f64
    } else {
        size as f64 - 1.0
    };
    let values = (0..size).map(|n| f(n as f64, big_n)).collect();
    Ok(vec![tensor_from_f64(dtype, vec![size], values)?.into()])
}

impl EvalOp for HannWindow {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        window(cx, self.output_datatype, self.periodic, |n, big_n| {
            (PI * n / big_n).sin().powi(2)
        })
    }
}

impl EvalOp for HammingWindow {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let alpha = 25.0 / 46.0;
        window(cx, self.output_datatype, self.periodic, |n, big_n| {
            alpha - (1.0 - alpha) * (2.0 * PI * n / big_n).cos()
        })
    }
}

impl EvalOp for BlackmanWindow {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        window(cx, self.output_datatype, self.periodic, |n, big_n| {
            0.42 - 0.5 * (2.0 * PI * n / big_n).cos() + 0.08 * (4.0 * PI * n / big_n).cos()
        })
    }
}

/// The single value of input `i` as f64.
fn scalar_f64(cx: &EvalCx<'_>, i: usize, what: &str) -> Result<f64, EvalError> {
    match cx.tensor(i)?.to_f64_vec().as_deref() {
        Some([v]) => Ok(*v),
        _ => eval_bail!("{what} must be a single number"),
    }
}

impl EvalOp for MelWeightMatrix {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let dtype = output_dtype(self.output_datatype)?;
        let mels = scalar_int(cx, 0, "num_mel_bins")?;
        let dft_length = scalar_int(cx, 1, "dft_length")?;
        let sample_rate = scalar_int(cx, 2, "sample_rate")?;
        let lower = scalar_f64(cx, 3, "lower_edge_hertz")?;
        let upper = scalar_f64(cx, 4, "upper_edge_hertz")?;
        if mels < 0 || dft_length < 0 || sample_rate <= 0 {
            eval_bail!(
                "bad MelWeightMatrix sizes: {mels} mel bins, dft length {dft_length}, sample rate {sample_rate}"
            );
        }
        let (mels, bins) = (mels as usize, dft_length as usize / 2 + 1);
        let mut out = vec![0.0; checked_numel(&[bins, mels], dtype)?];
        // Mel-spaced edges, mapped to spectrogram bins (as in the ONNX reference, which divides the mel range into
        // `mels + 2` steps).
        let to_mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
        let (low, high) = (to_mel(lower), to_mel(upper));
        let step = (high - low) / (mels + 2) as f64;
        let edges: Vec<i64> = (0..mels + 2)
            .map(|i| {
                let mel = i as f64 * step + low;
                let hz = 700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1();
                ((dft_length as f64 + 1.0) * hz / sample_rate as f64).floor() as i64
            })
            .collect();
        let mut set = |row: i64, col: usize, v: f64| -> Result<(), EvalError> {
            if row < 0 || row as usize >= bins {
                eval_bail!("mel bin {col} reaches spectrogram bin {row}, outside 0..{bins}");
            }
            out[row as usize * mels + col] = v;
            Ok(())
        };
        for i in 0..mels {
            let (l, c, h) = (edges[i], edges[i + 1], edges[i + 2]);
            if c == l {
                set(c, i, 1.0)?;
            } else {
                for j in l..=c {
                    set(j, i, (j - l) as f64 / (c - l) as f64)?;
                }
            }
            if h > c {
                for j in c..h {
                    set(j, i, (h - j) as f64 / (h - c) as f64)?;
                }
            }
        }
        Ok(vec![tensor_from_f64(dtype, vec![bins, mels], out)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::Tensor;

    use super::*;
    use crate::ops::reduce::tests::run;

    #[test]
    fn dft_round_trips() {
        let x = Tensor::from_vec(vec![4, 1], vec![1.0f64, 2.0, 0.0, -1.0]).unwrap();
        let axis = || Some(Tensor::scalar(0i64));
        let spectrum = run(DFT::default(), vec![Some(x.clone()), None, axis()]);
        assert_eq!(spectrum, "f64[4, 2] [2, 0, 1, -3, 0, 0, 1, 3]");
        let rfft = DFT {
            inverse: 0,
            onesided: 1,
        };
        assert_eq!(
            run(rfft, vec![Some(x), None, axis()]),
            "f64[3, 2] [2, 0, 1, -3, 0, 0]"
        );
        let half = Tensor::from_vec(vec![3, 2], vec![2.0f64, 0.0, 1.0, -3.0, 0.0, 0.0]).unwrap();
        let irfft = DFT {
            inverse: 1,
            onesided: 1,
        };
        assert_eq!(
            run(irfft, vec![Some(half), None, axis()]),
            "f64[4, 1] [1, 2, 0, -1]"
        );
        let full = Tensor::from_vec(vec![2, 2], vec![3.0f64, 0.0, -1.0, 0.0]).unwrap();
        let inverse = DFT {
            inverse: 1,
            onesided: 0,
        };
        assert_eq!(
            run(inverse, vec![Some(full), None, axis()]),
            "f64[2, 2] [1, 0, 2, 0]"
        );
        let padded = Tensor::from_vec(vec![1, 2, 1], vec![1.0f32, 1.0]).unwrap();
        let len = Some(Tensor::scalar(4i64));
        assert_eq!(
            run(
                DFT::default(),
                vec![Some(padded), len, Some(Tensor::scalar(1i64))]
            ),
            "f32[1, 4, 2] [2, 0, 1, -1, 0, 0, 1, 1]"
        );
    }

    #[test]
    fn stft_frames_and_windows() {
        let x = Tensor::from_vec(vec![1, 6, 1], vec![1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0]).unwrap();
        let step = Some(Tensor::scalar(2i64));
        let window = Some(Tensor::vector(vec![1.0f32, 1.0, 1.0, 1.0]));
        assert_eq!(
            run(STFT::default(), vec![Some(x), step, window]),
            "f32[1, 2, 3, 2] [2, 0, 0, 0, 2, 0, 2, 0, 0, 0, 2, 0]"
        );
        let size = || Some(Tensor::scalar(4i32));
        assert_eq!(
            run(HannWindow::default(), vec![size()]),
            "f32[4] [0, 0.5, 1, 0.5]"
        );
        let symmetric = HammingWindow {
            periodic: 0,
            ..HammingWindow::default()
        };
        assert_eq!(
            run(symmetric, vec![size()]),
            "f32[4] [0.08695652, 0.7717391, 0.7717391, 0.08695652]"
        );
        let blackman = run(BlackmanWindow::default(), vec![size()]);
        assert_eq!(
            blackman,
            "f32[4] [-0.000000000000000013877788, 0.34, 1, 0.34]"
        );
    }

    #[test]
    fn mel_weights_match_the_onnx_example() {
        let i = |v: i32| Some(Tensor::scalar(v));
        let f = |v: f32| Some(Tensor::scalar(v));
        let out = run(
            MelWeightMatrix::default(),
            vec![i(8), i(16), i(8192), f(0.0), f(4096.0)],
        );
        #[rustfmt::skip]
        let want = [
            "1, 1, 0, 0, 0, 0, 0, 0",
            "0, 0, 1, 1, 0, 0, 0, 0",
            "0, 0, 0, 0, 1, 0, 0, 0",
            "0, 0, 0, 0, 0, 1, 0, 0",
            "0, 0, 0, 0, 0, 0, 1, 0",
            "0, 0, 0, 0, 0, 0, 0, 1",
            "0, 0, 0, 0, 0, 0, 0, 0",
            "0, 0, 0, 0, 0, 0, 0, 0",
            "0, 0, 0, 0, 0, 0, 0, 0",
        ];
        assert_eq!(out, format!("f32[9, 8] [{}]", want.join(", ")));
    }
}
