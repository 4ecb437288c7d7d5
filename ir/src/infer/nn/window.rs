//! Sliding-window geometry shared by convolutions and pooling: kernel, strides, dilations, padding and the output
//! size they give.
//!
//! Inference and the reference target both call these functions, so the static output shape and the computed one
//! cannot disagree. Attribute values come from untrusted models: every function checks its arguments and returns an
//! [`InferError`] rather than panicking or overflowing.

use crate::infer::InferError;
use crate::infer_bail;

/// How the padding of a window op is chosen (ONNX `auto_pad`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    /// Explicit `pads` (zero where absent).
    NotSet,
    /// No padding.
    Valid,
    /// Output size `ceil(in / stride)`, the odd pad at the end.
    SameUpper,
    /// Output size `ceil(in / stride)`, the odd pad at the beginning.
    SameLower,
}

impl AutoPad {
    /// Parses the ONNX attribute value.
    pub fn parse(s: &str) -> Result<AutoPad, InferError> {
        Ok(match s {
            "NOTSET" | "" => AutoPad::NotSet,
            "VALID" => AutoPad::Valid,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            other => infer_bail!("unknown auto_pad `{other}`"),
        })
    }
}

/// The checked window attributes of a conv or pool node with `n` spatial axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size per spatial axis (at least 1).
    pub kernel: Vec<usize>,
    /// Stride per spatial axis (at least 1).
    pub strides: Vec<usize>,
    /// Dilation per spatial axis (at least 1).
    pub dilations: Vec<usize>,
    /// Explicit pads, `[begin_0, .., begin_n-1, end_0, .., end_n-1]` (used when `auto_pad` is `NotSet`).
    pub pads: Vec<usize>,
    /// How padding is chosen.
    pub auto_pad: AutoPad,
    /// Whether output sizes round up (pooling only).
    pub ceil_mode: bool,
}

/// Where one spatial axis of a window op lands: output size and the padding before and after the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisGeometry {
    /// Output size.
    pub output: usize,
    /// Padding before the input.
    pub pad_begin: usize,
    /// Padding after the input (with `ceil_mode` the last window may reach past it; those positions are ignored).
    pub pad_end: usize,
}

/// Checks a list attribute of `n` positive values, or gives `n` ones when it is absent.
fn positive_list(name: &str, v: Option<&[i64]>, n: usize) -> Result<Vec<usize>, InferError> {
    match v {
        None => Ok(vec![1; n]),
        Some(v) => {
            if v.len() != n {
                infer_bail!("`{name}` has {} values, expected {n}", v.len());
            }
            v.iter()
                .map(|&x| {
                    if (1..=(1 << 32)).contains(&x) {
                        Ok(x as usize)
                    } else {
                        Err(InferError::new(format!(
                            "`{name}` value {x} must be positive"
                        )))
                    }
                })
                .collect()
        }
    }
}

impl Window {
    /// Checks and defaults the attributes of a node with `n` spatial axes.
    pub fn new(
        n: usize,
        kernel: &[i64],
        strides: Option<&[i64]>,
        dilations: Option<&[i64]>,
        pads: Option<&[i64]>,
        auto_pad: &str,
        ceil_mode: i64,
    ) -> Result<Window, InferError> {
        let kernel = positive_list("kernel_shape", Some(kernel), n)?;
        let strides = positive_list("strides", strides, n)?;
        let dilations = positive_list("dilations", dilations, n)?;
        let pads = match pads {
            None => vec![0; 2 * n],
            Some(p) => {
                if p.len() != 2 * n {
                    infer_bail!("`pads` has {} values, expected {}", p.len(), 2 * n);
                }
                p.iter()
                    .map(|&x| {
                        if (0..=(1 << 32)).contains(&x) {
                            Ok(x as usize)
                        } else {
                            Err(InferError::new(format!(
                                "`pads` value {x} must be non-negative"
                            )))
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad: AutoPad::parse(auto_pad)?,
            ceil_mode: ceil_mode != 0,
        })
    }

    /// The number of spatial axes.
    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// The extent of the dilated kernel along axis `i`.
    pub fn effective_kernel(&self, i: usize) -> usize {
        (self.kernel[i] - 1) * self.dilations[i] + 1
    }

    /// Output size and padding along axis `i` for an input of size `input`.
    pub fn axis(&self, i: usize, input: usize) -> Result<AxisGeometry, InferError> {
        let (k, s) = (self.effective_kernel(i), self.strides[i]);
        match self.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let output = input.div_ceil(s);
                let needed = ((output.max(1) - 1) * s + k).saturating_sub(input);
                let pad_begin = if self.auto_pad == AutoPad::SameUpper {
                    needed / 2
                } else {
                    needed.div_ceil(2)
                };
                Ok(AxisGeometry {
                    output,
                    pad_begin,
                    pad_end: needed - pad_begin,
                })
            }
            AutoPad::NotSet | AutoPad::Valid => {
                let (pb, pe) = if self.auto_pad == AutoPad::Valid {
                    (0, 0)
                } else {
                    (self.pads[i], self.pads[i + self.rank()])
                };
                let total = input + pb + pe;
                if total < k {
                    infer_bail!(
                        "spatial axis {i}: padded input size {total} is smaller than the kernel extent {k}"
                    );
                }
                let mut output = if self.ceil_mode {
                    (total - k).div_ceil(s) + 1
                } else {
                    (total - k) / s + 1
                };
                // With ceil_mode, the last window must start inside the input or its leading padding.
                if self.ceil_mode && (output - 1) * s >= input + pb {
                    output -= 1;
                }
                Ok(AxisGeometry {
                    output,
                    pad_begin: pb,
                    pad_end: pe,
                })
            }
        }
    }
}

/// Output size and leading padding (which may be negative: the output then starts before the first full-output
/// position) of one spatial axis of ConvTranspose.
///
/// The full transposed output has `stride * (input - 1) + effective_kernel + output_padding` positions; the result
/// is the window `[pad_begin, pad_begin + output)` of it (positions outside are zero).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    output_padding: usize,
    pads: Option<(usize, usize)>,
    auto_pad: AutoPad,
    output_shape: Option<usize>,
) -> Result<(usize, i64), InferError> {
    if input == 0 {
        return Ok((output_shape.unwrap_or(0), 0));
    }
    let eff = (kernel - 1) * dilation + 1;
    let full = (stride as i64) * (input as i64 - 1) + eff as i64 + output_padding as i64;
    if let Some((pb, pe)) = pads {
        let out = match output_shape {
            Some(o) => o as i64,
            None => full - pb as i64 - pe as i64,
        };
        if out < 0 {
            infer_bail!("ConvTranspose output size {out} is negative");
        }
        return Ok((out as usize, pb as i64));
    }
    match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = output_shape.unwrap_or(input * stride) as i64;
            let total = full - out;
            let begin = if auto_pad == AutoPad::SameUpper {
                total.div_euclid(2)
            } else {
                total - total.div_euclid(2)
            };
            Ok((out as usize, begin))
        }
        AutoPad::NotSet | AutoPad::Valid => Ok((output_shape.unwrap_or(full.max(0) as usize), 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(w: &Window, input: usize) -> (usize, usize, usize) {
        let g = w.axis(0, input).unwrap();
        (g.output, g.pad_begin, g.pad_end)
    }

    #[test]
    fn explicit_same_and_valid_padding() {
        let w = Window::new(1, &[3], Some(&[2]), None, Some(&[1, 1]), "NOTSET", 0).unwrap();
        assert_eq!(geo(&w, 7), (4, 1, 1));
        let w = Window::new(1, &[3], Some(&[2]), None, None, "SAME_UPPER", 0).unwrap();
        assert_eq!(geo(&w, 6), (3, 0, 1));
        let w = Window::new(1, &[3], Some(&[2]), None, None, "SAME_LOWER", 0).unwrap();
        assert_eq!(geo(&w, 6), (3, 1, 0));
        let w = Window::new(1, &[2], None, Some(&[2]), None, "VALID", 0).unwrap();
        assert_eq!(geo(&w, 4), (2, 0, 0));
    }

    #[test]
    fn ceil_mode_drops_a_window_that_starts_in_the_end_padding() {
        let w = Window::new(1, &[3], Some(&[2]), None, None, "NOTSET", 1).unwrap();
        assert_eq!(geo(&w, 4).0, 2);
        let w = Window::new(1, &[3], Some(&[3]), None, Some(&[1, 1]), "NOTSET", 1).unwrap();
        assert_eq!(geo(&w, 2).0, 1);
    }

    #[test]
    fn bad_attributes_are_errors() {
        assert!(Window::new(1, &[0], None, None, None, "NOTSET", 0).is_err());
        assert!(Window::new(1, &[2], Some(&[-1]), None, None, "NOTSET", 0).is_err());
        assert!(Window::new(2, &[2], None, None, None, "NOTSET", 0).is_err());
        assert!(Window::new(1, &[2], None, None, None, "SAME", 0).is_err());
        let w = Window::new(1, &[5], None, None, None, "NOTSET", 0).unwrap();
        assert!(w.axis(0, 3).is_err());
    }

    #[test]
    fn conv_transpose_sizes() {
        // 3 → stride 3, kernel 3: full size 9, plus output_padding 1.
        assert_eq!(
            conv_transpose_axis(3, 3, 3, 1, 1, Some((0, 0)), AutoPad::NotSet, None).unwrap(),
            (10, 0)
        );
        assert_eq!(
            conv_transpose_axis(3, 3, 3, 1, 0, None, AutoPad::NotSet, Some(10)).unwrap(),
            (10, 0)
        );
        assert_eq!(
            conv_transpose_axis(3, 3, 2, 1, 0, None, AutoPad::SameUpper, None).unwrap(),
            (6, 0)
        );
        assert_eq!(
            conv_transpose_axis(3, 3, 3, 1, 0, Some((1, 2)), AutoPad::NotSet, None).unwrap(),
            (6, 1)
        );
    }
}
