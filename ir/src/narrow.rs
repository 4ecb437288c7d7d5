//! Exact conversions between the narrow element formats and wide numbers.
//!
//! Narrow formats (the 8-bit floats, the 4-bit float, 4-bit and 2-bit integers and the exponent-only `f8e8m0`)
//! are stored one element per byte, as their raw bit pattern in the low bits ([`crate::tensor::Data::Bits`]).
//! This module decodes such a pattern to an `f64` (or an integer) and encodes an `f64` back, with the semantics of
//! the `ml_dtypes` package that ONNX's reference implementation uses:
//!
//! - floats round to nearest, ties to even, subnormals included;
//! - without saturation, a value beyond the largest finite one becomes infinity where the format has one (`e5m2`),
//!   NaN where it has none (`e4m3fn`, the `fnuz` formats), and the largest value for `f4e2m1`, which has neither;
//! - with saturation (the `saturate` attribute of Cast, for the four 8-bit float formats), such values and
//!   infinities become the largest finite value of their sign; NaN stays NaN;
//! - the `fnuz` formats have no negative zero (it is the NaN pattern `0x80`);
//! - integers wrap (two's complement truncation, as numpy's `astype` does);
//! - `f8e8m0` is converted from the exponent of the f32 value as `onnx.numpy_helper.to_float8e8m0` does.

use crate::DType;

/// How a narrow float format spends its special bit patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    /// IEEE-like: the all-ones exponent holds infinities (mantissa 0) and NaNs (`e5m2`).
    Ieee,
    /// Finite only; the all-ones pattern (`S.1111.111`) is NaN (`e4m3fn`).
    FiniteAllOnesNan,
    /// Finite only; `0x80` (negative zero) is the single NaN (`e4m3fnuz`, `e5m2fnuz`).
    Fnuz,
    /// Finite only, no NaN either (`f4e2m1`).
    FiniteNoNan,
}

/// The layout of a narrow float format with a sign bit, exponent bits and mantissa bits.
#[derive(Clone, Copy, Debug)]
struct Format {
    man_bits: u32,
    exp_bits: u32,
    bias: i32,
    special: Special,
    /// The largest finite pattern without the sign bit.
    max_bits: u8,
}

impl Format {
    fn of(dtype: DType) -> Option<Format> {
        let (exp_bits, man_bits, bias, special, max_bits) = match dtype {
            DType::F8E4M3FN => (4, 3, 7, Special::FiniteAllOnesNan, 0x7E),
            DType::F8E4M3FNUZ => (4, 3, 8, Special::Fnuz, 0x7F),
            DType::F8E5M2 => (5, 2, 15, Special::Ieee, 0x7B),
            DType::F8E5M2FNUZ => (5, 2, 16, Special::Fnuz, 0x7F),
            DType::F4E2M1 => (2, 1, 1, Special::FiniteNoNan, 0x7),
            _ => return None,
        };
        Some(Format {
            man_bits,
            exp_bits,
            bias,
            special,
            max_bits,
        })
    }

    fn sign_bit(self) -> u8 {
        1 << (self.exp_bits + self.man_bits)
    }

    fn decode(self, bits: u8) -> f64 {
        let sign_bit = self.sign_bit();
        let bits = bits & (sign_bit | (sign_bit - 1));
        let negative = bits & sign_bit != 0;
        let mag = bits & !sign_bit;
        let exp_mask = (1u8 << self.exp_bits) - 1;
        let exp = (mag >> self.man_bits) & exp_mask;
        let man = mag & ((1u8 << self.man_bits) - 1);
        match self.special {
            Special::Fnuz if bits == 0x80 => return f64::NAN,
            Special::FiniteAllOnesNan if mag == 0x7F => return f64::NAN,
            Special::Ieee if exp == exp_mask => {
                let v = if man == 0 { f64::INFINITY } else { f64::NAN };
                return if negative { -v } else { v };
            }
            _ => {}
        }
        let v = if exp == 0 {
            man as f64 * pow2(1 - self.bias - self.man_bits as i32)
        } else {
            (1.0 + man as f64 / (1u32 << self.man_bits) as f64) * pow2(exp as i32 - self.bias)
        };
        if negative { -v } else { v }
    }

    fn max_value(self) -> f64 {
        self.decode(self.max_bits)
    }

    fn zero(self, negative: bool) -> u8 {
        if negative && self.special != Special::Fnuz {
            self.sign_bit()
        } else {
            0
        }
    }

    fn nan(self, negative: bool) -> u8 {
        let sign = if negative { self.sign_bit() } else { 0 };
        match self.special {
            Special::Ieee => sign | 0x7E,
            Special::FiniteAllOnesNan => sign | 0x7F,
            Special::Fnuz => 0x80,
            // ml_dtypes turns NaN into a zero whose sign bit is the NaN's sign bit flipped.
            Special::FiniteNoNan => sign ^ self.sign_bit(),
        }
    }

    fn overflow(self, negative: bool) -> u8 {
        let sign = if negative { self.sign_bit() } else { 0 };
        match self.special {
            Special::Ieee => sign | (((1u8 << self.exp_bits) - 1) << self.man_bits),
            Special::FiniteAllOnesNan | Special::Fnuz => self.nan(negative),
            Special::FiniteNoNan => sign | self.max_bits,
        }
    }

    fn encode(self, x: f64, saturate: bool) -> u8 {
        let negative = x.is_sign_negative();
        if x.is_nan() {
            return self.nan(negative);
        }
        let mut a = x.abs();
        if saturate && a > self.max_value() {
            a = self.max_value();
        }
        if a.is_infinite() {
            return self.overflow(negative);
        }
        // The binary exponent of `a`, no lower than the format's smallest normal exponent.
        let emin = 1 - self.bias;
        let e = if a == 0.0 {
            emin
        } else {
            ((a.to_bits() >> 52) as i32 - 1023).max(emin)
        };
        let m = self.man_bits as i32;
        // `a / 2^(e - m)` is exact (a power-of-two scaling); rounding it to an integer rounds `a` to the format.
        let n = (a * pow2(m - e)).round_ties_even();
        if n == 0.0 {
            return self.zero(negative);
        }
        let implicit = f64::from(1u32 << m);
        let (e, n) = if n >= 2.0 * implicit {
            (e + 1, n / 2.0)
        } else {
            (e, n)
        };
        let mag = if n < implicit {
            n as u32
        } else {
            (((e + self.bias) as u32) << m) | (n - implicit) as u32
        };
        if mag > self.max_bits as u32 {
            return self.overflow(negative);
        }
        let sign = if negative { self.sign_bit() } else { 0 };
        sign | mag as u8
    }
}

/// `2^e` for exponents far inside the f64 range.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// Bit width and signedness of a narrow integer format.
fn int_format(dtype: DType) -> Option<(u32, bool)> {
    match dtype {
        DType::U4 => Some((4, false)),
        DType::I4 => Some((4, true)),
        DType::U2 => Some((2, false)),
        DType::I2 => Some((2, true)),
        _ => None,
    }
}

/// Whether `dtype` is a narrow integer format (`u4`, `i4`, `u2`, `i2`).
pub fn is_narrow_int(dtype: DType) -> bool {
    int_format(dtype).is_some()
}

/// The integer stored in the low bits of `bits` for a narrow integer `dtype` (sign-extended for signed ones);
/// `None` if `dtype` is not a narrow integer format.
pub fn decode_int(dtype: DType, bits: u8) -> Option<i64> {
    let (width, signed) = int_format(dtype)?;
    let v = (bits & ((1u8 << width) - 1)) as i64;
    Some(if signed && v >= 1 << (width - 1) {
        v - (1 << width)
    } else {
        v
    })
}

/// The bit pattern of `v` in the narrow integer `dtype`, wrapping (two's complement truncation); `None` if `dtype`
/// is not a narrow integer format.
pub fn encode_int(dtype: DType, v: i64) -> Option<u8> {
    let (width, _) = int_format(dtype)?;
    Some((v as u8) & ((1u8 << width) - 1))
}

/// The value of a narrow element as f64: floats exactly (NaN and infinities included), integers as numbers;
/// `None` if `dtype` is not a narrow format.
pub fn decode(dtype: DType, bits: u8) -> Option<f64> {
    if dtype == DType::F8E8M0 {
        return Some(if bits == 0xFF {
            f64::NAN
        } else {
            pow2(bits as i32 - 127)
        });
    }
    if let Some(v) = decode_int(dtype, bits) {
        return Some(v as f64);
    }
    Format::of(dtype).map(|f| f.decode(bits))
}

/// How `f8e8m0` rounds a value that is not a power of two (the `round_mode` attribute of Cast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundMode {
    /// Round up to the next power of two (the default).
    Up,
    /// Round down (truncate the mantissa).
    Down,
    /// Round to the nearest power of two.
    Nearest,
}

impl RoundMode {
    /// Parses the attribute value (`"up"`, `"down"`, `"nearest"`).
    pub fn parse(s: &str) -> Option<RoundMode> {
        match s {
            "up" => Some(RoundMode::Up),
            "down" => Some(RoundMode::Down),
            "nearest" => Some(RoundMode::Nearest),
            _ => None,
        }
    }
}

/// The `f8e8m0` pattern of `x`, as `onnx.numpy_helper.to_float8e8m0` computes it from the f32 value: the sign is
/// dropped, NaN and infinities become `0xFF`, and the exponent is rounded by `mode`; with `saturate`, rounding never
/// goes past the largest exponent `0xFE`.
pub fn encode_e8m0(x: f64, saturate: bool, mode: RoundMode) -> u8 {
    let bits = (x as f32).to_bits();
    let exponent = (bits >> 23) & 0xFF;
    if exponent == 0xFF {
        return 0xFF;
    }
    let round_up = match mode {
        RoundMode::Down => false,
        RoundMode::Up => bits & 0x7F_FFFF != 0,
        RoundMode::Nearest => {
            let g = bits & 0x40_0000 != 0;
            let r = bits & 0x20_0000 != 0;
            let s = bits & 0x1F_FFFF != 0;
            g && (r || s || exponent > 0)
        }
    };
    let round_up = round_up && !(saturate && exponent == 0xFE);
    (exponent + round_up as u32) as u8
}

/// The pattern of `x` in the narrow `dtype`: floats round to nearest even (with `saturate`, the 8-bit float formats
/// clamp out-of-range values and infinities to their largest finite value), integers truncate toward zero and wrap
/// like numpy's `astype`, and `f8e8m0` rounds up with saturation. `None` if `dtype` is not a narrow format.
pub fn encode(dtype: DType, x: f64, saturate: bool) -> Option<u8> {
    if dtype == DType::F8E8M0 {
        return Some(encode_e8m0(x, saturate, RoundMode::Up));
    }
    if is_narrow_int(dtype) {
        // numpy converts through a C cast to a wide integer; NaN and out-of-range values give i64::MIN there.
        let wide = if x.is_nan() || x.abs() >= 9.223_372_036_854_776e18 {
            i64::MIN
        } else {
            x.trunc() as i64
        };
        return encode_int(dtype, wide);
    }
    let f = Format::of(dtype)?;
    let saturate = saturate && dtype != DType::F4E2M1;
    Some(f.encode(x, saturate))
}

#[cfg(test)]
mod tests {
    use super::*;

    const F8: [DType; 4] = [
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
    ];

    #[test]
    fn every_pattern_round_trips() {
        for d in F8.into_iter().chain([DType::F4E2M1]) {
            let n = if d == DType::F4E2M1 { 16 } else { 256 };
            for b in 0..n {
                let b = b as u8;
                let v = decode(d, b).unwrap();
                if v.is_nan() {
                    continue;
                }
                let back = encode(d, v, false).unwrap();
                assert_eq!(back, b, "{d} pattern {b:#x} = {v}");
            }
        }
    }

    #[test]
    fn known_values_match_ml_dtypes() {
        // (dtype, input, saturate, expected pattern), from `np.float32(x).astype(ml_dtypes.<type>)`.
        #[rustfmt::skip]
        let cases: &[(DType, f64, bool, u8)] = &[
            (DType::F8E4M3FN, f64::NAN, false, 0x7F),
            (DType::F8E4M3FN, f64::INFINITY, false, 0x7F),
            (DType::F8E4M3FN, f64::NEG_INFINITY, false, 0xFF),
            (DType::F8E4M3FN, f64::INFINITY, true, 0x7E),
            (DType::F8E4M3FN, 464.0, false, 0x7E),
            (DType::F8E4M3FN, 465.0, false, 0x7F),
            (DType::F8E4M3FN, -1e-7, false, 0x80),
            (DType::F8E4M3FN, 0.001_953_125, false, 0x01),
            (DType::F8E4M3FN, 0.000_976_562_5, false, 0x00),
            (DType::F8E4M3FN, 0.001_464_843_75, false, 0x01),
            (DType::F8E4M3FN, 9.0, false, 0x51),
            (DType::F8E4M3FNUZ, -0.0, false, 0x00),
            (DType::F8E4M3FNUZ, f64::INFINITY, false, 0x80),
            (DType::F8E4M3FNUZ, 1e6, true, 0x7F),
            (DType::F8E4M3FNUZ, 0.000_976_562_5, false, 0x01),
            (DType::F8E5M2, f64::NAN, false, 0x7E),
            (DType::F8E5M2, -f64::NAN, false, 0xFE),
            (DType::F8E5M2, f64::INFINITY, false, 0x7C),
            (DType::F8E5M2, 61440.0, false, 0x7C),
            (DType::F8E5M2, 61440.0, true, 0x7B),
            (DType::F8E5M2, 480.0, false, 0x60),
            (DType::F8E5M2FNUZ, 1e6, false, 0x80),
            (DType::F8E5M2FNUZ, 57344.0, false, 0x7F),
            (DType::F4E2M1, f64::NAN, false, 0x8),
            (DType::F4E2M1, -f64::NAN, false, 0x0),
            (DType::F4E2M1, f64::NEG_INFINITY, true, 0xF),
            (DType::F4E2M1, 0.26, false, 0x1),
            (DType::F4E2M1, 5.0, false, 0x6),
            (DType::I4, -9.0, false, 0x7),
            (DType::I4, 8.0, false, 0x8),
            (DType::U4, -2.5, false, 0xE),
            (DType::I2, 2.0, false, 0x2),
            (DType::U2, f64::NAN, false, 0x0),
        ];
        for &(d, x, sat, want) in cases {
            assert_eq!(encode(d, x, sat), Some(want), "{d} {x} saturate={sat}");
        }
    }

    #[test]
    fn integers_and_e8m0() {
        assert_eq!(decode_int(DType::I4, 0xF), Some(-1));
        assert_eq!(decode_int(DType::I2, 0x2), Some(-2));
        assert_eq!(decode_int(DType::U4, 0xF), Some(15));
        assert_eq!(decode_int(DType::F8E5M2, 0), None);
        assert_eq!(decode(DType::F8E8M0, 127), Some(1.0));
        assert!(decode(DType::F8E8M0, 255).unwrap().is_nan());
        assert_eq!(encode_e8m0(1.1, true, RoundMode::Up), 128);
        assert_eq!(encode_e8m0(1.1, true, RoundMode::Down), 127);
        assert_eq!(encode_e8m0(1.6, true, RoundMode::Nearest), 128);
        assert_eq!(encode_e8m0(0.0, true, RoundMode::Up), 0);
        assert_eq!(encode_e8m0(f64::INFINITY, true, RoundMode::Up), 255);
        assert_eq!(encode_e8m0(f32::MAX as f64, true, RoundMode::Up), 254);
        assert_eq!(encode_e8m0(f32::MAX as f64, false, RoundMode::Up), 255);
        assert_eq!(encode(DType::F32, 1.0, false), None);
    }
}
