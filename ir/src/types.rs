//! Static types of IR values: dtypes with symbolic shapes, sequences and optionals.

use std::fmt;

use crate::DType;

/// One dimension of a static shape: a known size or a named symbol bound at run time (`batch`, `seq`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// A size known at compile time.
    Known(usize),
    /// A size known only at run time, named. Two equal names in one graph are the same size.
    Sym(String),
}

impl Dim {
    /// The size, if known.
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Dim {
        Dim::Sym(s.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => {
                if crate::text::is_plain_ident(s) {
                    f.write_str(s)
                } else {
                    write!(f, "{s:?}")
                }
            }
        }
    }
}

/// A static shape: a list of dims, or `None` when even the rank is unknown.
pub type Shape = Option<Vec<Dim>>;

/// The static type of a tensor value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` if the rank is unknown.
    pub shape: Shape,
}

impl TensorType {
    /// A tensor type with a fully known or symbolic shape.
    pub fn new(dtype: DType, dims: impl IntoIterator<Item = Dim>) -> TensorType {
        TensorType {
            dtype,
            shape: Some(dims.into_iter().collect()),
        }
    }

    /// A tensor type with known dims.
    pub fn known(dtype: DType, dims: &[usize]) -> TensorType {
        TensorType::new(dtype, dims.iter().map(|&d| Dim::Known(d)))
    }

    /// A tensor type of unknown rank.
    pub fn unranked(dtype: DType) -> TensorType {
        TensorType { dtype, shape: None }
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }

    /// The dims as sizes, if every one is known.
    pub fn known_dims(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(Dim::known).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dtype)?;
        match &self.shape {
            None => write!(f, "[*]"),
            Some(dims) => {
                write!(f, "[")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{d}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// The static type of any IR value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A tensor.
    Tensor(TensorType),
    /// A sequence of values of one type (ONNX `seq(...)`); its length is a run-time property.
    Sequence(Box<ValueType>),
    /// A value that may be absent (ONNX `optional(...)`).
    Optional(Box<ValueType>),
}

impl ValueType {
    /// The tensor type, if this is a tensor.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            ValueType::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The dtype of a tensor type.
    pub fn dtype(&self) -> Option<DType> {
        self.as_tensor().map(|t| t.dtype)
    }
}

impl From<TensorType> for ValueType {
    fn from(t: TensorType) -> ValueType {
        ValueType::Tensor(t)
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor(t) => write!(f, "{t}"),
            ValueType::Sequence(t) => write!(f, "seq<{t}>"),
            ValueType::Optional(t) => write!(f, "opt<{t}>"),
        }
    }
}
