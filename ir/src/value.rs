//! Run-time values: what flows along graph edges when a graph is evaluated.

use std::sync::Arc;

use crate::{Dim, Tensor, TensorType, ValueType};

/// A concrete value: a tensor, a sequence of values or an optional one.
///
/// Tensors are shared (`Arc`) so constants and values used by several nodes are never copied.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A tensor.
    Tensor(Arc<Tensor>),
    /// A sequence (ONNX `seq`). `elem` is the element type, known even when the sequence is empty.
    Sequence {
        /// Static type of the elements.
        elem: ValueType,
        /// The elements.
        items: Vec<Value>,
    },
    /// An optional value (ONNX `optional`). `elem` is the type of the contained value.
    Optional {
        /// Static type of the contained value.
        elem: ValueType,
        /// The contained value, if present.
        item: Option<Box<Value>>,
    },
}

impl Value {
    /// The tensor, if this is a tensor.
    pub fn as_tensor(&self) -> Option<&Arc<Tensor>> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The exact static type of this value (all dims known).
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Tensor(t) => ValueType::Tensor(TensorType::new(
                t.dtype(),
                t.shape().iter().map(|&d| Dim::Known(d)),
            )),
            Value::Sequence { elem, .. } => ValueType::Sequence(Box::new(elem.clone())),
            Value::Optional { elem, .. } => ValueType::Optional(Box::new(elem.clone())),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::Tensor(Arc::new(t))
    }
}

impl From<Arc<Tensor>> for Value {
    fn from(t: Arc<Tensor>) -> Value {
        Value::Tensor(t)
    }
}
