//! Conversions between dtypes (`Cast`, `CastLike`, `BitCast`) and float classification (`IsInf`, `IsNaN`).
//!
//! A cast first widens every element to one of three exact forms ([`Wide`]: f64 for floats, i128 for integers and
//! bools, strings) and then narrows it to the target dtype with numpy's `astype` rules: floats round to nearest
//! even, floats to integers truncate toward zero (out-of-range values as x86 does), integers wrap, anything to bool
//! is `!= 0`. The narrow formats use [`jiuzhou_ir::narrow`]. Strings parse like Python's `float()`/`int()` and
//! floats print like numpy's `str` (shortest round-trip digits, scientific outside `[1e-4, 1e16)`).

use half::{bf16, f16};
use jiuzhou_ir::narrow::{self, RoundMode};
use jiuzhou_ir::num::{Num, ToF64};
use jiuzhou_ir::ops::*;
use jiuzhou_ir::tensor::Data;
use jiuzhou_ir::{DType, Tensor, Value};

use super::{Lane, bad_dtype, one};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The elements of a tensor in an exact wide form.
enum Wide {
    /// Floats (any width, narrow ones included), with the dtype they came from (for printing).
    Float(Vec<f64>, DType),
    /// Integers of any width; bools as 0/1.
    Int(Vec<i128>, bool),
    /// Strings.
    Str(Vec<String>),
}

fn widen(t: &Tensor) -> Result<Wide, EvalError> {
    let d = t.dtype();
    Ok(match t.data() {
        Data::Bool(v) => Wide::Int(v.iter().map(|&b| b as i128).collect(), true),
        Data::String(v) => Wide::Str(v.clone()),
        Data::Bits(v) => {
            if narrow::is_narrow_int(d) {
                let ints = v
                    .iter()
                    .map(|&b| narrow::decode_int(d, b).unwrap_or(0) as i128);
                Wide::Int(ints.collect(), false)
            } else {
                let floats = v.iter().map(|&b| narrow::decode(d, b).unwrap_or(f64::NAN));
                Wide::Float(floats.collect(), d)
            }
        }
        _ => jiuzhou_ir::dispatch_numeric!(t, |v: &[T]| {
            if <T as Num>::IS_FLOAT {
                Wide::Float(v.iter().map(|x| x.to_f64()).collect(), d)
            } else {
                Wide::Int(v.iter().map(|x| x.to_i128()).collect(), false)
            }
        }, _ => return Err(bad_dtype("Cast", d))),
    })
}

/// Parses a string as Python's `float()` does (`"1.5"`, `"1e5"`, `"NaN"`, `"-INF"`, `"+inf"`, surrounding spaces).
fn parse_float(s: &str) -> Result<f64, EvalError> {
    let s = s.trim();
    let unsigned = s.trim_start_matches(['+', '-']);
    let negative = s.starts_with('-');
    let special = match unsigned.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(v) = special {
        return Ok(if negative { -v } else { v });
    }
    s.parse::<f64>()
        .map_err(|_| EvalError::new(format!("Cast: cannot parse {s:?} as a number")))
}

/// Parses a string as an integer, or failing that as a float truncated toward zero.
fn parse_int(s: &str) -> Result<i128, EvalError> {
    match s.trim().parse::<i128>() {
        Ok(v) => Ok(v),
        Err(_) => Ok(parse_float(s)?.trunc() as i128),
    }
}

/// Prints a float the way numpy's `str` does for its dtype: the shortest digits that read back to the same value
/// of `dtype`, positional for `1e-4 <= |x| < 1e16`, scientific (`1e-07`, `1.5e+16`) otherwise.
fn format_float(x: f64, dtype: DType) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Scientific form with the shortest round-tripping mantissa for the source dtype.
    let sci = match dtype {
        DType::F32 => format!("{:e}", x as f32),
        DType::F16 | DType::BF16 => (0..17)
            .map(|p| format!("{x:.p$e}"))
            .find(|s| {
                s.parse::<f64>().is_ok_and(|y| match dtype {
                    DType::F16 => f16::from_f64(y).to_f64() == x,
                    _ => bf16::from_f64(y).to_f64() == x,
                })
            })
            .unwrap_or_else(|| format!("{x:e}")),
        _ => format!("{x:e}"),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let (int, frac) = if point <= 0 {
            (
                "0".to_string(),
                format!("{}{digits}", "0".repeat((-point) as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            (
                digits[..point as usize].to_string(),
                digits[point as usize..].to_string(),
            )
        };
        let frac = if frac.is_empty() { "0".into() } else { frac };
        format!("{sign}{int}.{frac}")
    } else {
        let mant = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

/// Narrows wide elements to a real numeric type `T`.
fn to_numeric<T: Lane>(w: &Wide) -> Result<Vec<T>, EvalError> {
    Ok(match w {
        Wide::Float(v, _) => v.iter().map(|&x| T::cast_f64(x)).collect(),
        Wide::Int(v, _) => v
            .iter()
            .map(|&i| {
                if T::IS_FLOAT {
                    T::from_f64(i as f64)
                } else {
                    T::from_i128_wrapping(i)
                }
            })
            .collect(),
        Wide::Str(v) => v
            .iter()
            .map(|s| {
                if T::IS_FLOAT {
                    parse_float(s).map(T::cast_f64)
                } else {
                    parse_int(s).map(T::from_i128_wrapping)
                }
            })
            .collect::<Result<_, _>>()?,
    })
}

/// How a cast treats values its target cannot hold.
#[derive(Clone, Copy)]
struct CastMode {
    saturate: bool,
    round: RoundMode,
}

/// Narrows wide elements to `to`.
fn narrow_to(w: &Wide, to: DType, mode: CastMode) -> Result<Data, EvalError> {
    macro_rules! numeric {
        ($($d:ident => $t:ty),*) => {
            match to {
                $( DType::$d => return Ok(<$t as jiuzhou_ir::Elem>::wrap(to_numeric::<$t>(w)?)), )*
                _ => {}
            }
        };
    }
    numeric!(U8 => u8, I8 => i8, U16 => u16, I16 => i16, U32 => u32, I32 => i32, U64 => u64, I64 => i64,
             F16 => f16, BF16 => bf16, F32 => f32, F64 => f64);
    Ok(match to {
        DType::Bool => Data::Bool(match w {
            Wide::Float(v, _) => v.iter().map(|&x| x != 0.0).collect(),
            Wide::Int(v, _) => v.iter().map(|&i| i != 0).collect(),
            Wide::Str(v) => v
                .iter()
                .map(|s| parse_float(s).map(|x| x != 0.0).or(Ok(!s.is_empty())))
                .collect::<Result<_, EvalError>>()?,
        }),
        DType::String => Data::String(match w {
            Wide::Float(v, d) => v.iter().map(|&x| format_float(x, *d)).collect(),
            Wide::Int(v, true) => v
                .iter()
                .map(|&i| if i != 0 { "True" } else { "False" }.to_string())
                .collect(),
            Wide::Int(v, false) => v.iter().map(|i| i.to_string()).collect(),
            Wide::Str(v) => v.clone(),
        }),
        d if d.is_bits() => {
            let encode = |x: f64| -> u8 {
                if d == DType::F8E8M0 {
                    narrow::encode_e8m0(x, mode.saturate, mode.round)
                } else {
                    narrow::encode(d, x, mode.saturate).unwrap_or(0)
                }
            };
            Data::Bits(match w {
                Wide::Float(v, _) => v.iter().map(|&x| encode(x)).collect(),
                Wide::Int(v, _) if narrow::is_narrow_int(d) => v
                    .iter()
                    .map(|&i| narrow::encode_int(d, i as i64).unwrap_or(0))
                    .collect(),
                Wide::Int(v, _) => v.iter().map(|&i| encode(i as f64)).collect(),
                Wide::Str(v) => v
                    .iter()
                    .map(|s| parse_float(s).map(encode))
                    .collect::<Result<_, _>>()?,
            })
        }
        other => eval_bail!("Cast to {other} is not supported"),
    })
}

/// Casts `t` to `to` with numpy's `astype` rules (see the module docs).
pub fn cast(t: &Tensor, to: DType, saturate: bool, round_mode: &str) -> Result<Tensor, EvalError> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    let round = RoundMode::parse(round_mode)
        .ok_or_else(|| EvalError::new(format!("Cast: unknown round_mode {round_mode:?}")))?;
    let wide = widen(t)?;
    let data = narrow_to(&wide, to, CastMode { saturate, round })?;
    Ok(Tensor::from_data(to, t.shape().to_vec(), data)?)
}

fn dtype_attr(to: i64) -> Result<DType, EvalError> {
    DType::from_onnx_code(to)
        .ok_or_else(|| EvalError::new(format!("`to` = {to} is not a known dtype")))
}

impl EvalOp for Cast {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let to = dtype_attr(self.to)?;
        one(cast(
            cx.tensor(0)?,
            to,
            self.saturate != 0,
            &self.round_mode,
        )?)
    }
}

impl EvalOp for CastLike {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let to = cx.tensor(1)?.dtype();
        one(cast(
            cx.tensor(0)?,
            to,
            self.saturate != 0,
            &self.round_mode,
        )?)
    }
}

impl EvalOp for BitCast {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let to = dtype_attr(self.to)?;
        let from = t.dtype();
        if from.size_in_bytes() != to.size_in_bytes() || from.is_bits() != to.is_bits() {
            eval_bail!("BitCast needs dtypes of the same width, got {from} and {to}");
        }
        let bytes = t
            .to_le_bytes()
            .filter(|_| to != DType::String && !matches!(from, DType::C64 | DType::C128))
            .ok_or_else(|| {
                EvalError::new(format!("BitCast from {from} to {to} is not supported"))
            })?;
        one(Tensor::from_le_bytes(to, t.shape().to_vec(), &bytes)?)
    }
}

/// The elements of a float tensor (narrow formats included) as f64; `None` for other dtypes.
fn floats(t: &Tensor) -> Option<Vec<f64>> {
    match t.data() {
        Data::Bits(v) if !narrow::is_narrow_int(t.dtype()) => Some(
            v.iter()
                .map(|&b| narrow::decode(t.dtype(), b).unwrap_or(0.0))
                .collect(),
        ),
        _ if t.dtype().is_float() => t.to_f64_vec(),
        _ => None,
    }
}

/// A bool tensor of `t`'s shape from a predicate on its float elements.
fn classify(op: &str, t: &Tensor, f: impl Fn(f64) -> bool) -> Result<Tensor, EvalError> {
    let v = floats(t).ok_or_else(|| bad_dtype(op, t.dtype()))?;
    Ok(Tensor::from_vec(
        t.shape().to_vec(),
        v.into_iter().map(f).collect(),
    )?)
}

impl EvalOp for IsNaN {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        one(classify("IsNaN", cx.tensor(0)?, f64::is_nan)?)
    }
}

impl EvalOp for IsInf {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (neg, pos) = (self.detect_negative != 0, self.detect_positive != 0);
        one(classify("IsInf", cx.tensor(0)?, |x| {
            x.is_infinite() && if x > 0.0 { pos } else { neg }
        })?)
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use jiuzhou_ir::ops::*;
    use jiuzhou_ir::{DType, Tensor};

    use super::super::test_util::{run1, t};
    use super::{cast, format_float};

    fn bits(dtype: DType, v: Vec<u8>) -> Tensor {
        Tensor::from_le_bytes(dtype, vec![v.len()], &v).unwrap()
    }

    #[test]
    fn floats_to_floats_and_ints() {
        let x = t(&[4], vec![0.5f32, -1.7, f32::NAN, 70000.0]);
        let h = cast(&x, DType::F16, true, "up").unwrap();
        assert_eq!(h.as_slice::<f16>().unwrap()[3], f16::INFINITY);
        let b = cast(&x, DType::BF16, true, "up").unwrap();
        assert_eq!(b.as_slice::<bf16>().unwrap()[1], bf16::from_f32(-1.7));
        let i = cast(&x, DType::I32, true, "up").unwrap();
        assert_eq!(i.as_slice::<i32>().unwrap(), &[0, -1, i32::MIN, 70000]);
        let u = cast(&t(&[2], vec![300.0f32, -1.0]), DType::U8, true, "up").unwrap();
        assert_eq!(u.as_slice::<u8>().unwrap(), &[44, 255]);
        let bo = cast(&x, DType::Bool, true, "up").unwrap();
        assert_eq!(bo.as_slice::<bool>().unwrap(), &[true, true, true, true]);
        let w = cast(&t(&[2], vec![-1i64, 256]), DType::U8, true, "up").unwrap();
        assert_eq!(w.as_slice::<u8>().unwrap(), &[255, 0]);
    }

    #[test]
    fn narrow_formats() {
        let x = t(&[4], vec![1e6f32, -1e6, f32::INFINITY, 0.3]);
        let sat = cast(&x, DType::F8E4M3FN, true, "up").unwrap();
        assert_eq!(sat.to_le_bytes().unwrap(), vec![0x7E, 0xFE, 0x7E, 0x2A]);
        let raw = cast(&x, DType::F8E5M2, false, "up").unwrap();
        assert_eq!(raw.to_le_bytes().unwrap(), vec![0x7C, 0xFC, 0x7C, 0x35]);
        let back = cast(
            &bits(DType::F8E4M3FN, vec![0x7E, 0xFF, 0x01]),
            DType::F32,
            true,
            "up",
        )
        .unwrap();
        let v = back.as_slice::<f32>().unwrap();
        assert_eq!((v[0], v[2]), (448.0, 0.001_953_125));
        assert!(v[1].is_nan());
        let i4 = cast(&t(&[3], vec![-9.0f32, 7.0, 8.0]), DType::I4, true, "up").unwrap();
        assert_eq!(i4.to_le_bytes().unwrap(), vec![0x7, 0x7, 0x8]);
        let i8s = cast(&bits(DType::I4, vec![0xF, 0x8, 0x7]), DType::I8, true, "up").unwrap();
        assert_eq!(i8s.as_slice::<i8>().unwrap(), &[-1, -8, 7]);
        let e8 = cast(
            &t(&[3], vec![0.124f32, 1.1, 4.0]),
            DType::F8E8M0,
            true,
            "up",
        )
        .unwrap();
        assert_eq!(e8.to_le_bytes().unwrap(), vec![124, 128, 129]);
        let down = cast(&t(&[1], vec![1.1f32]), DType::F8E8M0, true, "down").unwrap();
        assert_eq!(down.to_le_bytes().unwrap(), vec![127]);
        assert!(cast(&t(&[1], vec![1.1f32]), DType::F8E8M0, true, "sideways").is_err());
    }

    #[test]
    fn strings() {
        let s = t(
            &[6],
            ["1.5", "NaN", "INF", "-inf", "1e5", "+INF"]
                .map(String::from)
                .to_vec(),
        );
        let f = cast(&s, DType::F32, true, "up").unwrap();
        let v = f.as_slice::<f32>().unwrap();
        assert_eq!(
            (v[0], v[2], v[3], v[4], v[5]),
            (1.5, f32::INFINITY, f32::NEG_INFINITY, 1e5, f32::INFINITY)
        );
        assert!(v[1].is_nan());
        assert!(cast(&t(&[1], vec!["x".to_string()]), DType::F32, true, "up").is_err());
        let back = cast(
            &t(
                &[7],
                vec![0.478_925_47f32, 1e-7, 1e6, -0.0, f32::NAN, 1e16, 123.25],
            ),
            DType::String,
            true,
            "up",
        )
        .unwrap();
        assert_eq!(
            back.as_slice::<String>().unwrap(),
            &[
                "0.47892547",
                "1e-07",
                "1000000.0",
                "-0.0",
                "nan",
                "1e+16",
                "123.25"
            ]
        );
        assert_eq!(format_float(f16::from_f32(0.1).to_f64(), DType::F16), "0.1");
        let n = cast(
            &t(&[2], vec![" 12 ".to_string(), "-3.9".into()]),
            DType::I32,
            true,
            "up",
        )
        .unwrap();
        assert_eq!(n.as_slice::<i32>().unwrap(), &[12, -3]);
    }

    #[test]
    fn ops() {
        let x = t(&[2], vec![1.5f32, -2.0]);
        let c = run1(
            Cast {
                to: DType::F64.onnx_code() as i64,
                ..Default::default()
            },
            vec![x.clone()],
        )
        .unwrap();
        assert_eq!(c.as_slice::<f64>().unwrap(), &[1.5, -2.0]);
        let c = run1(
            CastLike::default(),
            vec![x.clone(), t(&[0], Vec::<i64>::new())],
        )
        .unwrap();
        assert_eq!(c.as_slice::<i64>().unwrap(), &[1, -2]);
        let b = run1(
            BitCast {
                to: DType::I32.onnx_code() as i64,
            },
            vec![x.clone()],
        )
        .unwrap();
        assert_eq!(
            b.as_slice::<i32>().unwrap(),
            &[1.5f32.to_bits() as i32, (-2.0f32).to_bits() as i32]
        );
        assert!(
            run1(
                BitCast {
                    to: DType::I64.onnx_code() as i64
                },
                vec![x.clone()]
            )
            .is_err()
        );
        assert!(
            run1(
                Cast {
                    to: 99,
                    ..Default::default()
                },
                vec![x]
            )
            .is_err()
        );
        let y = t(&[4], vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0]);
        let i = run1(
            IsInf {
                detect_negative: 0,
                detect_positive: 1,
            },
            vec![y.clone()],
        )
        .unwrap();
        assert_eq!(i.as_slice::<bool>().unwrap(), &[true, false, false, false]);
        let n = run1(IsNaN::default(), vec![y]).unwrap();
        assert_eq!(n.as_slice::<bool>().unwrap(), &[false, false, true, false]);
        assert!(run1(IsNaN::default(), vec![t(&[1], vec![1i32])]).is_err());
    }
}
