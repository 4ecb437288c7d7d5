//! Element types of the simulated NPU and their exact storage conversions.
//!
//! The machine stores five element types: `f32`, `f16`, `bf16`, `i8` and `i32`, all little-endian. Floating-point
//! values are computed in `f32` and rounded to the storage type with round-to-nearest-even (through `half`) when
//! they are written; integers are computed in `i32` with wrapping arithmetic and saturated when narrowed to `i8`.

use std::fmt;

use half::{bf16, f16};

/// An element type the machine can store in a buffer or in global memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: the upper half of a binary32.
    BF16,
    /// Two's-complement 8-bit integer.
    I8,
    /// Two's-complement 32-bit integer.
    I32,
}

/// One element read from memory: floats are widened to `f32` (exactly), integers to `i32` (exactly).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A floating-point element.
    Float(f32),
    /// An integer element.
    Int(i32),
}

impl DType {
    /// Every element type, in encoding order.
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::BF16, DType::I8, DType::I32];

    /// The size of one element in bytes.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 => 1,
        }
    }

    /// The name used in profiles and in the assembly text (`f32`, `f16`, `bf16`, `i8`, `i32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I32 => "i32",
        }
    }

    /// Looks an element type up by its name; `None` if the name is not one of [`DType::name`]'s.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The index of this type in [`DType::ALL`], used by the binary encoding.
    pub(crate) fn code(self) -> u8 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
            DType::I8 => 3,
            DType::I32 => 4,
        }
    }

    /// Decodes an element type from its byte code written by [`DType::code`].
    pub(crate) fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(usize::from(code)).copied()
    }

    /// Reads one element from `bytes`, which must hold exactly [`DType::size`] bytes (callers slice it so; missing
    /// bytes read as zero).
    #[inline]
    pub(crate) fn read(self, bytes: &[u8]) -> Value {
        // Fixed-size copies: this runs once per element moved or computed, so no variable-length copy here.
        match self {
            DType::F32 => Value::Float(f32::from_le_bytes(chunk::<4>(bytes))),
            DType::F16 => Value::Float(f16::from_le_bytes(chunk::<2>(bytes)).to_f32()),
            DType::BF16 => Value::Float(bf16::from_le_bytes(chunk::<2>(bytes)).to_f32()),
            DType::I8 => Value::Int(i32::from(i8::from_le_bytes(chunk::<1>(bytes)))),
            DType::I32 => Value::Int(i32::from_le_bytes(chunk::<4>(bytes))),
        }
    }

    /// Writes one element into `out` (exactly [`DType::size`] bytes), converting it to this type: floats round to
    /// nearest even, floats to integers round to nearest even and saturate (NaN becomes 0), integers to floats
    /// round to nearest even, `i32` to `i8` saturates.
    #[inline]
    pub(crate) fn write(self, value: Value, out: &mut [u8]) {
        match self {
            DType::F32 => put(out, value.as_f32().to_le_bytes()),
            DType::F16 => put(out, f16::from_f32(value.as_f32()).to_le_bytes()),
            DType::BF16 => put(out, bf16::from_f32(value.as_f32()).to_le_bytes()),
            DType::I8 => {
                let v = value.as_i32().clamp(i32::from(i8::MIN), i32::from(i8::MAX));
                put(out, [v.to_le_bytes()[0]]);
            }
            DType::I32 => put(out, value.as_i32().to_le_bytes()),
        }
    }
}

/// The first `N` bytes of `b` (zero-padded if `b` is shorter).
#[inline]
fn chunk<const N: usize>(b: &[u8]) -> [u8; N] {
    match b.first_chunk::<N>() {
        Some(a) => *a,
        None => {
            let mut a = [0u8; N];
            a[..b.len()].copy_from_slice(b);
            a
        }
    }
}

/// Writes `bytes` at the start of `out` (as many as fit).
#[inline]
fn put<const N: usize>(out: &mut [u8], bytes: [u8; N]) {
    match out.first_chunk_mut::<N>() {
        Some(o) => *o = bytes,
        None => {
            let n = out.len();
            out.copy_from_slice(&bytes[..n]);
        }
    }
}

impl Value {
    /// The value as `f32`: exact for floats, rounded to nearest even for integers beyond 2^24.
    pub fn as_f32(self) -> f32 {
        match self {
            Value::Float(f) => f,
            Value::Int(i) => i as f32,
        }
    }

    /// The value as `i32`: exact for integers; floats round to nearest even and saturate, NaN becomes 0.
    pub fn as_i32(self) -> i32 {
        match self {
            // `as` saturates and maps NaN to 0; round_ties_even gives round-to-nearest-even first.
            Value::Float(f) => f.round_ties_even() as i32,
            Value::Int(i) => i,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: DType, v: Value) -> Value {
        let mut buf = [0u8; 4];
        let n = d.size() as usize;
        d.write(v, &mut buf[..n]);
        d.read(&buf[..n])
    }

    #[test]
    fn conversions_round_to_nearest_even_and_saturate() {
        let cases: &[(DType, Value, Value)] = &[
            // 1 + 2^-11 lies halfway between two f16 values: ties go to the even one (1.0).
            (
                DType::F16,
                Value::Float(1.0 + 2f32.powi(-11)),
                Value::Float(1.0),
            ),
            (
                DType::F16,
                Value::Float(1.0 + 3.0 * 2f32.powi(-11)),
                Value::Float(1.0 + 2f32.powi(-9)),
            ),
            (DType::F16, Value::Float(1e6), Value::Float(f32::INFINITY)),
            (
                DType::BF16,
                Value::Float(1.0 + 2f32.powi(-8)),
                Value::Float(1.0),
            ),
            (DType::BF16, Value::Float(3.0), Value::Float(3.0)),
            (DType::I8, Value::Int(300), Value::Int(127)),
            (DType::I8, Value::Int(-300), Value::Int(-128)),
            (DType::I8, Value::Float(2.5), Value::Int(2)),
            (DType::I32, Value::Float(f32::NAN), Value::Int(0)),
            (DType::I32, Value::Float(1e20), Value::Int(i32::MAX)),
            (
                DType::F32,
                Value::Int(16_777_217),
                Value::Float(16_777_216.0),
            ),
        ];
        for &(d, input, want) in cases {
            assert_eq!(round_trip(d, input), want, "{d} {input:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_name("f64"), None);
        assert_eq!(DType::from_code(5), None);
    }
}
