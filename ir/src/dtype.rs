//! Element types of tensors.
//!
//! The set mirrors ONNX's `TensorProto.DataType`, so the importer can map codes one to one. Formats narrower than a
//! byte (4-bit and 2-bit integers and floats) and the 8-bit floats are stored one element per byte, as their raw bit
//! pattern; see [`crate::tensor::Data::Bits`].

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// UTF-8 string.
    String,
    /// Boolean.
    Bool,
    /// 16-bit IEEE float.
    F16,
    /// 64-bit IEEE float.
    F64,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Complex number of two f32.
    C64,
    /// Complex number of two f64.
    C128,
    /// bfloat16.
    BF16,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, finite only (no infinities).
    F8E4M3FN,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits, finite only, no negative zero.
    F8E4M3FNUZ,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits, finite only, no negative zero.
    F8E5M2FNUZ,
    /// Unsigned 4-bit integer.
    U4,
    /// Signed 4-bit integer.
    I4,
    /// 4-bit float, 2 exponent bits, 1 mantissa bit.
    F4E2M1,
    /// 8-bit exponent-only float (scale format).
    F8E8M0,
    /// Unsigned 2-bit integer.
    U2,
    /// Signed 2-bit integer.
    I2,
}

impl DType {
    /// Every dtype, in ONNX code order.
    pub const ALL: [DType; 26] = [
        DType::F32,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::String,
        DType::Bool,
        DType::F16,
        DType::F64,
        DType::U32,
        DType::U64,
        DType::C64,
        DType::C128,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::U4,
        DType::I4,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::U2,
        DType::I2,
    ];

    /// The ONNX `TensorProto.DataType` code.
    pub fn onnx_code(self) -> i32 {
        Self::ALL
            .iter()
            .position(|&d| d == self)
            .expect("every dtype is in ALL") as i32
            + 1
    }

    /// The dtype for an ONNX `TensorProto.DataType` code, if jiuzhou knows it.
    pub fn from_onnx_code(code: i64) -> Option<DType> {
        if code < 1 {
            return None;
        }
        Self::ALL.get(code as usize - 1).copied()
    }

    /// The short name used by the text form (`f32`, `i64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::String => "string",
            DType::Bool => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::C64 => "c64",
            DType::C128 => "c128",
            DType::BF16 => "bf16",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::U4 => "u4",
            DType::I4 => "i4",
            DType::F4E2M1 => "f4e2m1",
            DType::F8E8M0 => "f8e8m0",
            DType::U2 => "u2",
            DType::I2 => "i2",
        }
    }

    /// Parses a name printed by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        Self::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Whether this is a floating-point type (including the narrow float formats).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32
                | DType::F16
                | DType::BF16
                | DType::F64
                | DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::F4E2M1
                | DType::F8E8M0
        )
    }

    /// Whether this is an integer type (signed or unsigned, any width).
    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    /// Whether this is a signed integer type.
    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::I4 | DType::I2
        )
    }

    /// Whether this is an unsigned integer type.
    pub fn is_unsigned_int(self) -> bool {
        matches!(
            self,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::U4 | DType::U2
        )
    }

    /// Whether elements are stored one per byte as raw bit patterns ([`crate::tensor::Data::Bits`]).
    pub fn is_bits(self) -> bool {
        matches!(
            self,
            DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::U4
                | DType::I4
                | DType::F4E2M1
                | DType::F8E8M0
                | DType::U2
                | DType::I2
        )
    }

    /// Bytes per element in memory (narrow formats take one byte each); strings count as pointers.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::C128 => 16,
            DType::String => std::mem::size_of::<String>(),
            _ => 1,
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

    #[test]
    fn onnx_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_onnx_code(d.onnx_code() as i64), Some(d));
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::F32.onnx_code(), 1);
        assert_eq!(DType::I64.onnx_code(), 7);
        assert_eq!(DType::BF16.onnx_code(), 16);
        assert_eq!(DType::I2.onnx_code(), 26);
        assert_eq!(DType::from_onnx_code(0), None);
        assert_eq!(DType::from_onnx_code(27), None);
    }
}
