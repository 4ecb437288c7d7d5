//! Numeric element traits shared by inference (constant folding) and every target's generic kernels.
//!
//! [`Num`] is implemented for every real numeric storage type. Arithmetic follows ONNX/numpy semantics: integers
//! wrap on overflow, integer division truncates toward zero (division by zero gives 0 rather than a trap), and
//! `f16`/`bf16` compute in f32 and round once per operation.

use half::{bf16, f16};

use crate::tensor::Elem;

/// Conversion of a numeric element to f64 (exact for everything but i64/u64 beyond 2^53).
pub trait ToF64 {
    /// The value as f64.
    fn to_f64(self) -> f64;
}

/// A real numeric element type: ints, unsigned ints, f16, bf16, f32, f64.
pub trait Num: Elem + Copy + PartialOrd + ToF64 {
    /// Whether the type is a float type.
    const IS_FLOAT: bool;
    /// Whether the type is a signed type (floats count as signed).
    const IS_SIGNED: bool;
    /// Zero.
    fn zero() -> Self;
    /// One.
    fn one() -> Self;
    /// Converts from f64 the way a C/numpy cast does: floats round to nearest, ints truncate toward zero and
    /// saturate at the type's bounds (NaN becomes 0).
    fn from_f64(v: f64) -> Self;
    /// Converts from i64, wrapping for narrower integer types (two's-complement truncation, as numpy does).
    fn from_i64_wrapping(v: i64) -> Self;
    /// Sum (wrapping for ints).
    fn add(self, o: Self) -> Self;
    /// Difference (wrapping for ints).
    fn sub(self, o: Self) -> Self;
    /// Product (wrapping for ints).
    fn mul(self, o: Self) -> Self;
    /// Quotient: floats as IEEE; ints truncate toward zero, and `x / 0` is 0.
    fn div(self, o: Self) -> Self;
    /// The lowest value (−inf for floats).
    fn min_value() -> Self;
    /// The highest value (+inf for floats).
    fn max_value() -> Self;
    /// Whether this is a NaN (always false for ints).
    fn is_nan(self) -> bool;
}

macro_rules! impl_int {
    ($($t:ty, $signed:expr;)*) => {$(
        impl ToF64 for $t {
            fn to_f64(self) -> f64 { self as f64 }
        }
        impl Num for $t {
            const IS_FLOAT: bool = false;
            const IS_SIGNED: bool = $signed;
            fn zero() -> Self { 0 }
            fn one() -> Self { 1 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64_wrapping(v: i64) -> Self { v as $t }
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn min_value() -> Self { <$t>::MIN }
            fn max_value() -> Self { <$t>::MAX }
            fn is_nan(self) -> bool { false }
        }
    )*};
}

impl_int! {
    u8, false;
    i8, true;
    u16, false;
    i16, true;
    u32, false;
    i32, true;
    u64, false;
    i64, true;
}

impl ToF64 for bool {
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
}

macro_rules! impl_float {
    ($($t:ty;)*) => {$(
        impl ToF64 for $t {
            fn to_f64(self) -> f64 { self as f64 }
        }
        impl Num for $t {
            const IS_FLOAT: bool = true;
            const IS_SIGNED: bool = true;
            fn zero() -> Self { 0.0 }
            fn one() -> Self { 1.0 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64_wrapping(v: i64) -> Self { v as $t }
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            fn min_value() -> Self { <$t>::NEG_INFINITY }
            fn max_value() -> Self { <$t>::INFINITY }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
    )*};
}

impl_float! {
    f32;
    f64;
}

macro_rules! impl_half {
    ($($t:ty;)*) => {$(
        impl ToF64 for $t {
            fn to_f64(self) -> f64 { <$t>::to_f64(self) }
        }
        impl Num for $t {
            const IS_FLOAT: bool = true;
            const IS_SIGNED: bool = true;
            fn zero() -> Self { <$t>::ZERO }
            fn one() -> Self { <$t>::ONE }
            fn from_f64(v: f64) -> Self { <$t>::from_f64(v) }
            fn from_i64_wrapping(v: i64) -> Self { <$t>::from_f64(v as f64) }
            fn add(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) }
            fn sub(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() - o.to_f32()) }
            fn mul(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() * o.to_f32()) }
            fn div(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() / o.to_f32()) }
            fn min_value() -> Self { <$t>::NEG_INFINITY }
            fn max_value() -> Self { <$t>::INFINITY }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
    )*};
}

impl_half! {
    f16;
    bf16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_semantics_follow_numpy() {
        assert_eq!(Num::add(250u8, 10), 4);
        assert_eq!(Num::div(-7i32, 2), -3);
        assert_eq!(Num::div(7i32, 0), 0);
        assert_eq!(<i8 as Num>::from_f64(300.0), 127);
        assert_eq!(<i8 as Num>::from_i64_wrapping(300), 44);
        assert_eq!(<u8 as Num>::from_f64(f64::NAN), 0);
    }

    #[test]
    fn half_rounds_once_per_op() {
        let a = f16::from_f32(1.0);
        let b = f16::from_f32(0.0004);
        assert_eq!(Num::add(a, b), f16::from_f32(1.0));
    }
}
