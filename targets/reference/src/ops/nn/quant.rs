//! Linear quantization: QuantizeLinear, DequantizeLinear (per tensor, per axis, blocked; 8- and 16-bit integers
//! and the narrow 4-bit, 2-bit and 8-bit-float formats) and DynamicQuantizeLinear.
//!
//! Narrow formats are stored as raw bit patterns ([`jiuzhou_ir::Data::Bits`]); [`MiniFloat`] encodes and decodes
//! the float ones exactly (round to nearest, ties to even; saturating or not).

use jiuzhou_ir::{DType, Data, Tensor, Value};

use super::{from_f64s, to_f64s};
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// How a small float format spends its special values.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Specials {
    /// IEEE-like: the top exponent holds infinities (mantissa 0) and NaNs.
    Ieee,
    /// Finite only: exponent and mantissa all ones is NaN (`FN` formats).
    Fn,
    /// Finite only, unsigned zero: the pattern of negative zero is NaN (`FNUZ` formats).
    Fnuz,
    /// Finite only, no NaN (float4).
    None,
}

/// A small binary float format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MiniFloat {
    exp_bits: u32,
    man_bits: u32,
    bias: i32,
    specials: Specials,
}

impl MiniFloat {
    /// The format of `dtype`, if it is a small float.
    pub(crate) fn of(dtype: DType) -> Option<MiniFloat> {
        let (exp_bits, man_bits, bias, specials) = match dtype {
            DType::F8E4M3FN => (4, 3, 7, Specials::Fn),
            DType::F8E4M3FNUZ => (4, 3, 8, Specials::Fnuz),
            DType::F8E5M2 => (5, 2, 15, Specials::Ieee),
            DType::F8E5M2FNUZ => (5, 2, 16, Specials::Fnuz),
            DType::F4E2M1 => (2, 1, 1, Specials::None),
            _ => return None,
        };
        Some(MiniFloat {
            exp_bits,
            man_bits,
            bias,
            specials,
        })
    }

    fn sign_bit(&self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    /// The value of bit pattern `code`.
    pub(crate) fn decode(&self, code: u8) -> f64 {
        let (e, m) = (self.exp_bits, self.man_bits);
        let code = code & ((self.sign_bit() << 1).wrapping_sub(1));
        let neg = code & self.sign_bit() != 0;
        let exp = ((code >> m) & ((1 << e) - 1)) as i32;
        let man = (code & ((1 << m) - 1)) as f64;
        let (exp_max, man_max) = ((1 << e) - 1, ((1u32 << m) - 1) as f64);
        match self.specials {
            Specials::Fnuz if code == self.sign_bit() => return f64::NAN,
            Specials::Fn if exp == exp_max && man == man_max => return f64::NAN,
            Specials::Ieee if exp == exp_max => {
                return if man == 0.0 {
                    if neg {
                        f64::NEG_INFINITY
                    } else {
                        f64::INFINITY
                    }
                } else {
                    f64::NAN
                };
            }
            _ => {}
        }
        let scale = (1u64 << m) as f64;
        let v = if exp == 0 {
            man / scale * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + man / scale) * 2f64.powi(exp - self.bias)
        };
        if neg { -v } else { v }
    }

    /// The positive finite codes in increasing order of value (codes grow with the value).
    fn finite_codes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..self.sign_bit()).filter(|&c| self.decode(c).is_finite())
    }

    /// The bit pattern nearest to `v` (ties to the even pattern); out-of-range values saturate to the largest
    /// finite value if `saturate`, else become infinity or NaN where the format has them.
    pub(crate) fn encode(&self, v: f64, saturate: bool) -> u8 {
        let nan = match self.specials {
            Specials::Fnuz => self.sign_bit(),
            Specials::None => 0,
            _ => self.sign_bit() - 1,
        };
        if v.is_nan() {
            return nan;
        }
        let sign = if v.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        let max_code = self.finite_codes().last().unwrap_or(0);
        let a = v.abs();
        let code = if a > self.decode(max_code) {
            if saturate || self.specials == Specials::None {
                max_code
            } else if self.specials == Specials::Ieee {
                max_code + 1
            } else {
                return nan;
            }
        } else {
            let mut best = 0u8;
            let mut best_err = f64::INFINITY;
            for c in self.finite_codes() {
                let err = (self.decode(c) - a).abs();
                if err < best_err || (err == best_err && c % 2 == 0) {
                    best = c;
                    best_err = err;
                }
            }
            best
        };
        if code == 0 && self.specials == Specials::Fnuz {
            0
        } else {
            code | sign
        }
    }
}

/// The integer range of an integer quantized dtype.
fn int_range(dtype: DType) -> Option<(i64, i64)> {
    Some(match dtype {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::U4 => (0, 15),
        DType::I4 => (-8, 7),
        DType::U2 => (0, 3),
        DType::I2 => (-2, 1),
        _ => return None,
    })
}

/// The values of a quantized tensor (any integer dtype or narrow format) as f64.
fn quantized_values(t: &Tensor) -> Result<Vec<f64>, EvalError> {
    let dtype = t.dtype();
    if let Data::Bits(bits) = t.data() {
        if let Some(f) = MiniFloat::of(dtype) {
            return Ok(bits.iter().map(|&b| f.decode(b)).collect());
        }
        let sign_extend = |b: u8, width: u32| (((b as i8) << (8 - width)) >> (8 - width)) as f64;
        return match dtype {
            DType::U4 => Ok(bits.iter().map(|&b| (b & 0xf) as f64).collect()),
            DType::I4 => Ok(bits.iter().map(|&b| sign_extend(b, 4)).collect()),
            DType::U2 => Ok(bits.iter().map(|&b| (b & 0x3) as f64).collect()),
            DType::I2 => Ok(bits.iter().map(|&b| sign_extend(b, 2)).collect()),
            d => Err(EvalError::new(format!("cannot read {d} values"))),
        };
    }
    to_f64s(t)
}

/// Builds a quantized tensor of `dtype` from already-rounded, in-range values.
fn quantized_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
    if !dtype.is_bits() {
        return from_f64s(dtype, shape, v);
    }
    let mask = match dtype {
        DType::U4 | DType::I4 => 0xf,
        DType::U2 | DType::I2 => 0x3,
        d => eval_bail!("cannot store integer values as {d}"),
    };
    let bits = v.into_iter().map(|x| (x as i64 as u8) & mask).collect();
    Ok(Tensor::from_data(dtype, shape, Data::Bits(bits))?)
}

/// For every element of a tensor of shape `x`, the index of its scale (or zero point) of shape `p`: one value for
/// the whole tensor, one per index of `axis` (1-D `p`), or one per block of `block_size` along `axis` (`p` of
/// the input's rank).
fn param_index(
    x: &[usize],
    p: &[usize],
    axis: i64,
    block_size: i64,
    what: &str,
) -> Result<Vec<usize>, EvalError> {
    let n: usize = x.iter().product();
    if p.iter().product::<usize>() == 1 && p.len() <= 1 {
        return Ok(vec![0; n]);
    }
    let axis = norm_axis(axis, x.len())?;
    let (d, inner) = (x[axis], x[axis + 1..].iter().product::<usize>().max(1));
    if block_size <= 0 {
        if p.len() != 1 || p[0] != d {
            eval_bail!(
                "{what} of shape {p:?} is neither a scalar nor one value per index of axis {axis} of {x:?}"
            );
        }
        return Ok((0..n).map(|e| (e / inner) % d).collect());
    }
    let bs = block_size as usize;
    let ok = p.len() == x.len()
        && p.iter().zip(x).enumerate().all(|(i, (&pd, &xd))| {
            if i == axis {
                pd == xd.div_ceil(bs)
            } else {
                pd == xd
            }
        });
    if !ok {
        eval_bail!("{what} of shape {p:?} does not block {x:?} by {bs} along axis {axis}");
    }
    let pd = p[axis];
    Ok((0..n)
        .map(|e| {
            let (o, rem) = (e / (d * inner), e % (d * inner));
            let (a, i) = (rem / inner, rem % inner);
            o * pd * inner + (a / bs) * inner + i
        })
        .collect())
}

/// Rounds `v` to the precision of float `dtype` (so arithmetic matches numpy's in that dtype).
fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

impl EvalOp for jiuzhou_ir::ops::QuantizeLinear {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, scale) = (cx.tensor(0)?, cx.tensor(1)?);
        let zp = cx.opt_tensor(2)?;
        let dtype = match zp {
            Some(z) => z.dtype(),
            None if self.output_dtype != 0 => {
                DType::from_onnx_code(self.output_dtype).ok_or_else(|| {
                    EvalError::new(format!("unknown output_dtype {}", self.output_dtype))
                })?
            }
            None => DType::U8,
        };
        let compute = match self.precision {
            0 => x.dtype(),
            code => DType::from_onnx_code(code)
                .ok_or_else(|| EvalError::new(format!("unknown precision {code}")))?,
        };
        let si = param_index(
            x.shape(),
            scale.shape(),
            self.axis,
            self.block_size,
            "y_scale",
        )?;
        let sv = to_f64s(scale)?;
        let (zi, zv) = match zp {
            Some(z) => (
                param_index(
                    x.shape(),
                    z.shape(),
                    self.axis,
                    self.block_size,
                    "y_zero_point",
                )?,
                quantized_values(z)?,
            ),
            None => (vec![0; x.len()], vec![0.0]),
        };
        let xv = to_f64s(x)?;
        let scaled = xv
            .iter()
            .zip(&si)
            .map(|(&v, &s)| round_to(compute, v / sv[s]));
        let out = if let Some((lo, hi)) = int_range(dtype) {
            let q: Vec<f64> = scaled
                .zip(&zi)
                .map(|(v, &z)| (v.round_ties_even() + zv[z]).clamp(lo as f64, hi as f64))
                .collect();
            quantized_tensor(dtype, x.shape().to_vec(), q)?
        } else if let Some(f) = MiniFloat::of(dtype) {
            // Float formats have no zero point except float4, whose zero point is added before rounding.
            let add_zp = dtype == DType::F4E2M1;
            let bits = scaled
                .zip(&zi)
                .map(|(v, &z)| f.encode(if add_zp { v + zv[z] } else { v }, self.saturate != 0))
                .collect();
            Tensor::from_data(dtype, x.shape().to_vec(), Data::Bits(bits))?
        } else {
            eval_bail!("QuantizeLinear cannot produce {dtype}");
        };
        Ok(vec![out.into()])
    }
}

impl EvalOp for jiuzhou_ir::ops::DequantizeLinear {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, scale) = (cx.tensor(0)?, cx.tensor(1)?);
        let out_dtype = match self.output_dtype {
            0 => scale.dtype(),
            code => DType::from_onnx_code(code)
                .ok_or_else(|| EvalError::new(format!("unknown output_dtype {code}")))?,
        };
        let si = param_index(
            x.shape(),
            scale.shape(),
            self.axis,
            self.block_size,
            "x_scale",
        )?;
        let sv = to_f64s(scale)?;
        let xv = quantized_values(x)?;
        // Float8 zero points must be zero and are ignored, as in the ONNX reference.
        let zp = cx
            .opt_tensor(2)?
            .filter(|_| MiniFloat::of(x.dtype()).is_none() || x.dtype() == DType::F4E2M1);
        let (zi, zv) = match zp {
            Some(z) => (
                param_index(
                    x.shape(),
                    z.shape(),
                    self.axis,
                    self.block_size,
                    "x_zero_point",
                )?,
                quantized_values(z)?,
            ),
            None => (vec![0; x.len()], vec![0.0]),
        };
        let y: Vec<f64> = xv
            .iter()
            .zip(si.iter().zip(&zi))
            .map(|(&v, (&s, &z))| round_to(DType::F32, round_to(DType::F32, v - zv[z]) * sv[s]))
            .collect();
        Ok(vec![from_f64s(out_dtype, x.shape().to_vec(), y)?.into()])
    }
}

impl EvalOp for jiuzhou_ir::ops::DynamicQuantizeLinear {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let v: Vec<f32> = match x.data() {
            Data::F32(v) => v.clone(),
            _ => to_f64s(x)?.into_iter().map(|v| v as f32).collect(),
        };
        // Everything in f32, as the ONNX reference.
        let max = v.iter().copied().fold(0.0f32, f32::max);
        let min = v.iter().copied().fold(0.0f32, f32::min);
        let scale = if max == min { 1.0f32 } else { max - min } / 255.0f32;
        let zp = (0.0f32 - min / scale).clamp(0.0, 255.0).round_ties_even();
        let y: Vec<u8> = v
            .iter()
            .map(|&x| ((x / scale).round_ties_even() + zp).clamp(0.0, 255.0) as u8)
            .collect();
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?.into(),
            Tensor::scalar(scale).into(),
            Tensor::scalar(zp as u8).into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minifloats_round_trip_and_round_to_even() {
        let e4m3 = MiniFloat::of(DType::F8E4M3FN).unwrap();
        assert_eq!(e4m3.decode(0x7e), 448.0);
        assert!(e4m3.decode(0x7f).is_nan());
        assert_eq!(e4m3.encode(1000.0, true), 0x7e);
        assert!(e4m3.decode(e4m3.encode(1000.0, false)).is_nan());
        assert_eq!(e4m3.decode(e4m3.encode(-0.3, true)), -0.3125);
        let e5m2 = MiniFloat::of(DType::F8E5M2).unwrap();
        assert_eq!(e5m2.decode(0x7b), 57344.0);
        assert_eq!(e5m2.decode(e5m2.encode(1e6, false)), f64::INFINITY);
        let f4 = MiniFloat::of(DType::F4E2M1).unwrap();
        let all: Vec<f64> = (0..8).map(|c| f4.decode(c)).collect();
        assert_eq!(all, vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        // 2.5 lies halfway between 2 (code 4) and 3 (code 5): ties go to the even code.
        assert_eq!(f4.encode(2.5, true), 4);
        assert_eq!(f4.encode(-7.0, true), 0xf);
        let fnuz = MiniFloat::of(DType::F8E4M3FNUZ).unwrap();
        assert_eq!(fnuz.encode(-0.0, true), 0);
        assert!(fnuz.decode(0x80).is_nan());
    }

    #[test]
    fn blocked_parameter_indices() {
        // A [2, 4] input with blocks of 2 along axis 1: scales of shape [2, 2].
        assert_eq!(
            param_index(&[2, 4], &[2, 2], 1, 2, "s").unwrap(),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
        assert_eq!(
            param_index(&[2, 3], &[3], 1, 0, "s").unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(param_index(&[2, 3], &[], 1, 0, "s").unwrap(), vec![0; 6]);
        assert!(param_index(&[2, 3], &[2], 1, 0, "s").is_err());
    }
}
