//! Generic attribute values and their conversion to the typed fields of op structs.
//!
//! Ops store typed attributes (see [`crate::ops`]); the generic [`Attr`] is the interchange form used by the
//! importer (ONNX attributes) and by the text form.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{Graph, Tensor, ValueType};

/// A generic attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A string.
    String(String),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A list of strings.
    Strings(Vec<String>),
    /// A tensor.
    Tensor(Arc<Tensor>),
    /// A list of tensors.
    Tensors(Vec<Arc<Tensor>>),
    /// A subgraph.
    Graph(Arc<Graph>),
    /// A list of subgraphs.
    Graphs(Vec<Arc<Graph>>),
    /// A type.
    Type(ValueType),
    /// A list of types.
    Types(Vec<ValueType>),
}

impl Attr {
    /// A short name of the attribute's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Int(_) => "int",
            Attr::Float(_) => "float",
            Attr::String(_) => "string",
            Attr::Ints(_) => "ints",
            Attr::Floats(_) => "floats",
            Attr::Strings(_) => "strings",
            Attr::Tensor(_) => "tensor",
            Attr::Tensors(_) => "tensors",
            Attr::Graph(_) => "graph",
            Attr::Graphs(_) => "graphs",
            Attr::Type(_) => "type",
            Attr::Types(_) => "types",
        }
    }
}

/// Why attributes could not be turned into an op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttrError {
    /// A required attribute is absent.
    #[error("required attribute `{0}` is missing")]
    Missing(String),
    /// An attribute has the wrong kind.
    #[error("attribute `{name}` should be {expected}, got {actual}")]
    Kind {
        /// Attribute name.
        name: String,
        /// Kind expected.
        expected: &'static str,
        /// Kind found.
        actual: &'static str,
    },
    /// The op has no attribute of this name.
    #[error("unknown attribute `{0}`")]
    Unknown(String),
    /// The attribute's value is not allowed.
    #[error("attribute `{name}`: {why}")]
    Invalid {
        /// Attribute name.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// Named attributes, sorted by name.
pub type Attrs = BTreeMap<String, Attr>;

/// A Rust type that an attribute field can have.
pub trait AttrValue: Sized {
    /// The attribute kind this type reads (for errors).
    const KIND: &'static str;
    /// Reads the value; `None` if `a` is of another kind.
    fn from_attr(a: &Attr) -> Option<Self>;
    /// Writes the value.
    fn to_attr(&self) -> Attr;
}

macro_rules! impl_attr_value {
    ($($t:ty, $kind:literal, $variant:ident;)*) => {$(
        impl AttrValue for $t {
            const KIND: &'static str = $kind;
            fn from_attr(a: &Attr) -> Option<Self> {
                match a {
                    Attr::$variant(v) => Some(v.clone()),
                    _ => None,
                }
            }
            fn to_attr(&self) -> Attr {
                Attr::$variant(self.clone())
            }
        }
    )*};
}

impl_attr_value! {
    i64, "int", Int;
    String, "string", String;
    Vec<i64>, "ints", Ints;
    Vec<f32>, "floats", Floats;
    Vec<String>, "strings", Strings;
    Arc<Tensor>, "tensor", Tensor;
    Vec<Arc<Tensor>>, "tensors", Tensors;
    Arc<Graph>, "graph", Graph;
    Vec<Arc<Graph>>, "graphs", Graphs;
    ValueType, "type", Type;
    Vec<ValueType>, "types", Types;
}

impl AttrValue for f32 {
    const KIND: &'static str = "float";
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Float(v) => Some(*v),
            // Some exporters write integral floats as ints.
            Attr::Int(v) => Some(*v as f32),
            _ => None,
        }
    }
    fn to_attr(&self) -> Attr {
        Attr::Float(*self)
    }
}

/// Reads field `name` of kind `T` from `attrs`, removing it.
pub fn take<T: AttrValue>(attrs: &mut Attrs, name: &str) -> Result<Option<T>, AttrError> {
    match attrs.remove(name) {
        None => Ok(None),
        Some(a) => T::from_attr(&a).map(Some).ok_or_else(|| AttrError::Kind {
            name: name.to_string(),
            expected: T::KIND,
            actual: a.kind(),
        }),
    }
}
