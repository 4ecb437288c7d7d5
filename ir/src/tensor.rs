//! Dense tensors with concrete shapes: constants in the IR and values at run time.
//!
//! A [`Tensor`] owns its elements in row-major order. Typed access goes through the [`Elem`] trait
//! (`t.as_slice::<f32>()`); generic kernels are written once over `Elem` and dispatched with
//! [`crate::dispatch_numeric!`].

use std::fmt;

use half::{bf16, f16};

use crate::DType;

/// Why a tensor could not be built or viewed as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The element count implied by the shape is not the number of elements given.
    #[error("shape {shape:?} needs {expected} elements but {actual} were given")]
    ElementCount {
        /// The shape asked for.
        shape: Vec<usize>,
        /// Elements that shape holds.
        expected: usize,
        /// Elements supplied.
        actual: usize,
    },
    /// The element count of a shape overflows `usize` or passes the allocation limit.
    #[error("shape {shape:?} is too large ({why})")]
    TooLarge {
        /// The shape asked for.
        shape: Vec<usize>,
        /// The limit it passes.
        why: String,
    },
    /// The tensor holds another dtype than the one asked for.
    #[error("expected a {expected} tensor, got {actual}")]
    DType {
        /// Dtype asked for.
        expected: DType,
        /// Dtype held.
        actual: DType,
    },
}

/// The largest tensor jiuzhou will allocate, in bytes, unless told otherwise: 16 GiB.
///
/// Shapes come from untrusted models; every allocation sized by a shape is checked against this limit first, so a
/// model cannot ask for memory that no real data justifies.
pub const DEFAULT_MAX_TENSOR_BYTES: usize = 16 << 30;

/// The element count of `shape`, checked for overflow and against [`DEFAULT_MAX_TENSOR_BYTES`] for `dtype`.
pub fn checked_numel(shape: &[usize], dtype: DType) -> Result<usize, TensorError> {
    let mut n: usize = 1;
    for &d in shape {
        n = n.checked_mul(d).ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
            why: "element count overflows".into(),
        })?;
    }
    let bytes = n.saturating_mul(dtype.size_in_bytes());
    if bytes > DEFAULT_MAX_TENSOR_BYTES {
        return Err(TensorError::TooLarge {
            shape: shape.to_vec(),
            why: format!("{bytes} bytes is over the {DEFAULT_MAX_TENSOR_BYTES}-byte limit"),
        });
    }
    Ok(n)
}

/// Element storage, one variant per storage class.
#[derive(Clone, PartialEq)]
pub enum Data {
    /// `bool`.
    Bool(Vec<bool>),
    /// `u8`.
    U8(Vec<u8>),
    /// `i8`.
    I8(Vec<i8>),
    /// `u16`.
    U16(Vec<u16>),
    /// `i16`.
    I16(Vec<i16>),
    /// `u32`.
    U32(Vec<u32>),
    /// `i32`.
    I32(Vec<i32>),
    /// `u64`.
    U64(Vec<u64>),
    /// `i64`.
    I64(Vec<i64>),
    /// `f16`.
    F16(Vec<f16>),
    /// `bf16`.
    BF16(Vec<bf16>),
    /// `f32`.
    F32(Vec<f32>),
    /// `f64`.
    F64(Vec<f64>),
    /// Complex numbers as interleaved (re, im) pairs of f32 (`c64`) or f64 (`c128`, stored in `F64`).
    C64(Vec<f32>),
    /// Complex f64 as interleaved (re, im) pairs.
    C128(Vec<f64>),
    /// `string`.
    String(Vec<String>),
    /// Narrow formats (8-bit floats, 4-bit and 2-bit types): one element per byte, the raw bit pattern in the low
    /// bits.
    Bits(Vec<u8>),
}

impl Data {
    /// The number of elements held.
    pub fn len(&self) -> usize {
        match self {
            Data::Bool(v) => v.len(),
            Data::U8(v) | Data::Bits(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::U16(v) => v.len(),
            Data::I16(v) => v.len(),
            Data::U32(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::U64(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::BF16(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::C64(v) => v.len() / 2,
            Data::C128(v) => v.len() / 2,
            Data::String(v) => v.len(),
        }
    }

    /// Whether no elements are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Storage for `n` zero elements of `dtype` (empty strings, `false`, bit pattern 0).
    pub fn zeros(dtype: DType, n: usize) -> Data {
        match dtype {
            DType::Bool => Data::Bool(vec![false; n]),
            DType::U8 => Data::U8(vec![0; n]),
            DType::I8 => Data::I8(vec![0; n]),
            DType::U16 => Data::U16(vec![0; n]),
            DType::I16 => Data::I16(vec![0; n]),
            DType::U32 => Data::U32(vec![0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::U64 => Data::U64(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::F16 => Data::F16(vec![f16::ZERO; n]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; n]),
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F64 => Data::F64(vec![0.0; n]),
            DType::C64 => Data::C64(vec![0.0; 2 * n]),
            DType::C128 => Data::C128(vec![0.0; 2 * n]),
            DType::String => Data::String(vec![String::new(); n]),
            _ => Data::Bits(vec![0; n]),
        }
    }

    fn storage_matches(&self, dtype: DType) -> bool {
        matches!(
            (self, dtype),
            (Data::Bool(_), DType::Bool)
                | (Data::U8(_), DType::U8)
                | (Data::I8(_), DType::I8)
                | (Data::U16(_), DType::U16)
                | (Data::I16(_), DType::I16)
                | (Data::U32(_), DType::U32)
                | (Data::I32(_), DType::I32)
                | (Data::U64(_), DType::U64)
                | (Data::I64(_), DType::I64)
                | (Data::F16(_), DType::F16)
                | (Data::BF16(_), DType::BF16)
                | (Data::F32(_), DType::F32)
                | (Data::F64(_), DType::F64)
                | (Data::C64(_), DType::C64)
                | (Data::C128(_), DType::C128)
                | (Data::String(_), DType::String)
        ) || (matches!(self, Data::Bits(_)) && dtype.is_bits())
    }
}

/// A Rust type that is the storage of one [`DType`].
pub trait Elem: Clone + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// The dtype stored as `Self`.
    const DTYPE: DType;
    /// The elements, if `data` holds this type.
    fn slice(data: &Data) -> Option<&[Self]>;
    /// The elements, mutably, if `data` holds this type.
    fn slice_mut(data: &mut Data) -> Option<&mut Vec<Self>>;
    /// Wraps elements as storage.
    fn wrap(v: Vec<Self>) -> Data;
}

macro_rules! impl_elem {
    ($($t:ty => $variant:ident, $dtype:ident;)*) => {$(
        impl Elem for $t {
            const DTYPE: DType = DType::$dtype;
            fn slice(data: &Data) -> Option<&[Self]> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut Data) -> Option<&mut Vec<Self>> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> Data {
                Data::$variant(v)
            }
        }
    )*};
}

impl_elem! {
    bool => Bool, Bool;
    u8 => U8, U8;
    i8 => I8, I8;
    u16 => U16, U16;
    i16 => I16, I16;
    u32 => U32, U32;
    i32 => I32, I32;
    u64 => U64, U64;
    i64 => I64, I64;
    f16 => F16, F16;
    bf16 => BF16, BF16;
    f32 => F32, F32;
    f64 => F64, F64;
    String => String, String;
}

/// A dense, row-major tensor.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    /// Builds a tensor from elements; fails if the shape does not hold exactly `data.len()` elements.
    pub fn from_vec<T: Elem>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::from_data(T::DTYPE, shape, T::wrap(data))
    }

    /// Builds a tensor from raw storage of `dtype`.
    ///
    /// # Panics
    /// If the storage class of `data` is not that of `dtype`: that is a bug in the caller, not bad input.
    pub fn from_data(dtype: DType, shape: Vec<usize>, data: Data) -> Result<Tensor, TensorError> {
        assert!(
            data.storage_matches(dtype),
            "storage does not match dtype {dtype}"
        );
        let expected = checked_numel(&shape, dtype)?;
        if expected != data.len() {
            return Err(TensorError::ElementCount {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A tensor of zeros (see [`Data::zeros`]).
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = checked_numel(&shape, dtype)?;
        Ok(Tensor {
            dtype,
            shape,
            data: Data::zeros(dtype, n),
        })
    }

    /// A rank-0 tensor holding `v`.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor {
            dtype: T::DTYPE,
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }

    /// A rank-1 tensor holding `v`.
    pub fn vector<T: Elem>(v: Vec<T>) -> Tensor {
        Tensor {
            dtype: T::DTYPE,
            shape: vec![v.len()],
            data: T::wrap(v),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The storage.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// Takes the storage out.
    pub fn into_data(self) -> Data {
        self.data
    }

    /// The elements as `T`, or an error naming both dtypes.
    pub fn as_slice<T: Elem>(&self) -> Result<&[T], TensorError> {
        T::slice(&self.data).ok_or(TensorError::DType {
            expected: T::DTYPE,
            actual: self.dtype,
        })
    }

    /// The elements as `T`, mutably.
    pub fn as_mut_vec<T: Elem>(&mut self) -> Result<&mut Vec<T>, TensorError> {
        let dtype = self.dtype;
        T::slice_mut(&mut self.data).ok_or(TensorError::DType {
            expected: T::DTYPE,
            actual: dtype,
        })
    }

    /// Consumes the tensor and returns its elements as `T`.
    pub fn into_vec<T: Elem>(self) -> Result<Vec<T>, TensorError> {
        let dtype = self.dtype;
        let mut data = self.data;
        match T::slice_mut(&mut data) {
            Some(v) => Ok(std::mem::take(v)),
            None => Err(TensorError::DType {
                expected: T::DTYPE,
                actual: dtype,
            }),
        }
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::from_data(self.dtype, shape, self.data)
    }

    /// Integer elements widened to i64 (bools as 0/1); `None` for floats, strings and narrow formats.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
            Data::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            _ => return None,
        })
    }

    /// Real numeric elements as f64 (bools as 0/1); `None` for strings, complex and narrow formats.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        Some(match &self.data {
            Data::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
            Data::U64(v) => v.iter().map(|&x| x as f64).collect(),
            _ => self.to_i64_vec()?.into_iter().map(|x| x as f64).collect(),
        })
    }

    /// The raw little-endian bytes of the elements (narrow formats: one byte per element); `None` for strings.
    pub fn to_le_bytes(&self) -> Option<Vec<u8>> {
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        Some(match &self.data {
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            Data::U8(v) | Data::Bits(v) => v.clone(),
            Data::I8(v) => le(v, i8::to_le_bytes),
            Data::U16(v) => le(v, u16::to_le_bytes),
            Data::I16(v) => le(v, i16::to_le_bytes),
            Data::U32(v) => le(v, u32::to_le_bytes),
            Data::I32(v) => le(v, i32::to_le_bytes),
            Data::U64(v) => le(v, u64::to_le_bytes),
            Data::I64(v) => le(v, i64::to_le_bytes),
            Data::F16(v) => le(v, f16::to_le_bytes),
            Data::BF16(v) => le(v, bf16::to_le_bytes),
            Data::F32(v) | Data::C64(v) => le(v, f32::to_le_bytes),
            Data::F64(v) | Data::C128(v) => le(v, f64::to_le_bytes),
            Data::String(_) => return None,
        })
    }

    /// Builds a tensor from raw little-endian bytes (see [`Tensor::to_le_bytes`]). Strings are not accepted.
    pub fn from_le_bytes(
        dtype: DType,
        shape: Vec<usize>,
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        let n = checked_numel(&shape, dtype)?;
        let per = match dtype {
            DType::C64 => 8,
            DType::C128 => 16,
            d if d.is_bits() => 1,
            d => d.size_in_bytes(),
        };
        if dtype == DType::String || bytes.len() != n * per {
            return Err(TensorError::ElementCount {
                shape,
                expected: n,
                actual: bytes.len().checked_div(per).unwrap_or(0),
            });
        }
        fn conv<T, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunk of N bytes")))
                .collect()
        }
        let data = match dtype {
            DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::U8 => Data::U8(bytes.to_vec()),
            DType::I8 => Data::I8(conv(bytes, i8::from_le_bytes)),
            DType::U16 => Data::U16(conv(bytes, u16::from_le_bytes)),
            DType::I16 => Data::I16(conv(bytes, i16::from_le_bytes)),
            DType::U32 => Data::U32(conv(bytes, u32::from_le_bytes)),
            DType::I32 => Data::I32(conv(bytes, i32::from_le_bytes)),
            DType::U64 => Data::U64(conv(bytes, u64::from_le_bytes)),
            DType::I64 => Data::I64(conv(bytes, i64::from_le_bytes)),
            DType::F16 => Data::F16(conv(bytes, f16::from_le_bytes)),
            DType::BF16 => Data::BF16(conv(bytes, bf16::from_le_bytes)),
            DType::F32 => Data::F32(conv(bytes, f32::from_le_bytes)),
            DType::F64 => Data::F64(conv(bytes, f64::from_le_bytes)),
            DType::C64 => Data::C64(conv(bytes, f32::from_le_bytes)),
            DType::C128 => Data::C128(conv(bytes, f64::from_le_bytes)),
            DType::String => unreachable!("rejected above"),
            _ => Data::Bits(bytes.to_vec()),
        };
        Tensor::from_data(dtype, shape, data)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}", self.dtype, self.shape)?;
        const SHOWN: usize = 8;
        let n = self.len();
        let show = |f: &mut fmt::Formatter<'_>, items: Vec<String>| {
            write!(
                f,
                " [{}{}]",
                items.join(", "),
                if n > SHOWN { ", ..." } else { "" }
            )
        };
        match &self.data {
            Data::String(v) => show(f, v.iter().take(SHOWN).map(|s| format!("{s:?}")).collect())?,
            _ => {
                if let Some(v) = self.to_f64_vec() {
                    show(f, v.iter().take(SHOWN).map(|x| format!("{x}")).collect())?
                }
            }
        }
        write!(f, ")")
    }
}

/// Runs `$body` with `$v` bound to the typed element slice of `$tensor` for every real numeric dtype (ints, floats,
/// f16, bf16), and evaluates `$other` for the rest (bool, string, complex, narrow formats).
///
/// `$T` is bound to the element type so the body can name it.
#[macro_export]
macro_rules! dispatch_numeric {
    ($tensor:expr, |$v:ident: &[$T:ident]| $body:expr, _ => $other:expr) => {{
        use $crate::tensor::Data as __D;
        match $tensor.data() {
            __D::U8($v) => {
                type $T = u8;
                $body
            }
            __D::I8($v) => {
                type $T = i8;
                $body
            }
            __D::U16($v) => {
                type $T = u16;
                $body
            }
            __D::I16($v) => {
                type $T = i16;
                $body
            }
            __D::U32($v) => {
                type $T = u32;
                $body
            }
            __D::I32($v) => {
                type $T = i32;
                $body
            }
            __D::U64($v) => {
                type $T = u64;
                $body
            }
            __D::I64($v) => {
                type $T = i64;
                $body
            }
            __D::F16($v) => {
                type $T = $crate::half::f16;
                $body
            }
            __D::BF16($v) => {
                type $T = $crate::half::bf16;
                $body
            }
            __D::F32($v) => {
                type $T = f32;
                $body
            }
            __D::F64($v) => {
                type $T = f64;
                $body
            }
            _ => $other,
        }
    }};
}

/// Like [`dispatch_numeric!`] but for every dtype with a Rust element type (adds bool and string).
#[macro_export]
macro_rules! dispatch_any {
    ($tensor:expr, |$v:ident: &[$T:ident]| $body:expr, _ => $other:expr) => {{
        use $crate::tensor::Data as __D;
        match $tensor.data() {
            __D::Bool($v) => { type $T = bool; $body }
            __D::String($v) => { type $T = String; $body }
            _ => $crate::dispatch_numeric!($tensor, |$v: &[$T]| $body, _ => $other),
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_is_checked() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 6]).is_ok());
        let err = Tensor::from_vec(vec![2, 3], vec![0f32; 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shape [2, 3] needs 6 elements but 5 were given"
        );
        assert!(matches!(
            Tensor::zeros(DType::F32, vec![usize::MAX, 2]),
            Err(TensorError::TooLarge { .. })
        ));
        assert!(matches!(
            Tensor::zeros(DType::F32, vec![1 << 40]),
            Err(TensorError::TooLarge { .. })
        ));
    }

    #[test]
    fn bytes_round_trip() {
        let t = Tensor::from_vec(vec![3], vec![1.5f32, -2.0, f32::NAN]).unwrap();
        let b = t.to_le_bytes().unwrap();
        let u = Tensor::from_le_bytes(DType::F32, vec![3], &b).unwrap();
        assert_eq!(t.to_le_bytes(), u.to_le_bytes());
        assert!(Tensor::from_le_bytes(DType::F32, vec![3], &b[..11]).is_err());
    }

    #[test]
    fn dispatch_sums_any_numeric_type() {
        fn total(t: &Tensor) -> Option<f64> {
            dispatch_numeric!(t, |v: &[T]| Some(v.iter().map(|x| <T as crate::num::ToF64>::to_f64(*x)).sum()), _ => None)
        }
        assert_eq!(total(&Tensor::vector(vec![1i32, 2, 3])), Some(6.0));
        assert_eq!(
            total(&Tensor::vector(vec![half::f16::from_f32(0.5)])),
            Some(0.5)
        );
        assert_eq!(total(&Tensor::vector(vec![true])), None);
    }
}
