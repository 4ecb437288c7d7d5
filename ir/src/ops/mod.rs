//! The closed op set of the IR.
//!
//! [`table`] declares every op once with its attributes ([`for_each_op!`](crate::for_each_op)); this module turns
//! the table into one struct per op, the [`Op`] enum, and the generic attribute conversion used by the importer and
//! the text form. Inference rules live in [`crate::infer`]; reference semantics live in the reference target.
#![allow(missing_docs)] // Fields are ONNX attributes, documented by the ONNX operator specification.
#![allow(non_snake_case)] // Field names are the ONNX attribute names (`transA`).

use std::sync::Arc;

use crate::attr::{AttrError, AttrValue, Attrs, take};
#[allow(unused_imports)] // Used by attribute types in the table.
use crate::{Graph, Tensor, ValueType};

pub mod expr;
pub mod own;
pub mod table;

pub use expr::ElementwiseExpr;
pub use own::{Activation, OWN_OPS};

/// The Rust type of an attribute field of kind `def`, `opt` or `req`.
macro_rules! __field_ty {
    (opt $ty:ty) => { Option<$ty> };
    (def $ty:ty) => { $ty };
    (req $ty:ty) => { $ty };
}

/// Reads one field from generic attributes.
macro_rules! __field_take {
    (opt $attrs:ident $name:expr, $ty:ty) => {
        take::<$ty>($attrs, $name)?
    };
    (def $attrs:ident $name:expr, $ty:ty, $default:expr) => {
        take::<$ty>($attrs, $name)?.unwrap_or_else(|| $default)
    };
    (req $attrs:ident $name:expr, $ty:ty) => {
        take::<$ty>($attrs, $name)?.ok_or_else(|| AttrError::Missing($name.to_string()))?
    };
}

/// Writes one field into generic attributes; defaults and absent optionals are left out.
macro_rules! __field_put {
    (opt $out:ident $name:expr, $v:expr) => {
        if let Some(v) = $v {
            $out.insert($name.to_string(), AttrValue::to_attr(v));
        }
    };
    (def $out:ident $name:expr, $v:expr, $ty:ty, $default:expr) => {{
        let default: $ty = $default;
        if *$v != default {
            $out.insert($name.to_string(), AttrValue::to_attr($v));
        }
    }};
    (req $out:ident $name:expr, $v:expr) => {
        $out.insert($name.to_string(), AttrValue::to_attr($v));
    };
}

/// The default value of one field.
macro_rules! __field_default {
    (opt $ty:ty) => {
        None
    };
    (def $ty:ty, $default:expr) => {
        $default
    };
    (req $ty:ty) => {
        <$ty as Default>::default()
    };
}

/// The ONNX attribute name of a field (`r#type` is `type`).
fn attr_name(field: &'static str) -> &'static str {
    field.strip_prefix("r#").unwrap_or(field)
}

macro_rules! define_ops {
    ($(
        $(#[$meta:meta])*
        $name:ident {
            $( $kind:ident $field:ident : $ty:ty $(= $default:expr)? ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Clone, Debug, PartialEq)]
            pub struct $name {
                $( pub $field: __field_ty!($kind $ty), )*
            }

            impl Default for $name {
                fn default() -> Self {
                    Self { $( $field: __field_default!($kind $ty $(, $default)?), )* }
                }
            }

            impl $name {
                /// Reads the op's attributes, removing the ones it uses from `attrs`.
                #[allow(unused_variables)]
                pub fn from_attrs(attrs: &mut Attrs) -> Result<Self, AttrError> {
                    Ok(Self { $( $field: __field_take!($kind attrs attr_name(stringify!($field)), $ty $(, $default)?), )* })
                }

                /// Writes the attributes that differ from their defaults.
                #[allow(unused_variables)]
                pub fn to_attrs(&self, out: &mut Attrs) {
                    $( __field_put!($kind out attr_name(stringify!($field)), &self.$field $(, $ty, $default)?); )*
                }
            }

            impl From<$name> for Op {
                fn from(op: $name) -> Op {
                    Op::$name(op)
                }
            }
        )*

        /// One operation of the IR, with its attributes.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $( $(#[$meta])* $name($name), )*
        }

        impl Op {
            /// Every op name, sorted.
            pub const NAMES: &'static [&'static str] = &[$( stringify!($name), )*];

            /// The table's doc attributes of every op, in [`Op::NAMES`] order (ONNX ops say `ONNX \`Name\``).
            pub const DOCS: &'static [&'static str] = &[$( stringify!($(#[$meta])*), )*];

            /// The op's name (the ONNX op type it corresponds to).
            pub fn name(&self) -> &'static str {
                match self {
                    $( Op::$name(_) => stringify!($name), )*
                }
            }

            /// Builds op `name` from generic attributes. `Ok(None)` if there is no such op; an error if an
            /// attribute is missing, of the wrong kind, or unknown to the op.
            pub fn from_attrs(name: &str, mut attrs: Attrs) -> Result<Option<Op>, AttrError> {
                let attrs = &mut attrs;
                let op = match name {
                    $( stringify!($name) => Op::$name($name::from_attrs(attrs)?), )*
                    _ => return Ok(None),
                };
                if let Some(unknown) = attrs.keys().next() {
                    return Err(AttrError::Unknown(unknown.clone()));
                }
                Ok(Some(op))
            }

            /// The attributes that differ from their defaults, as generic values.
            pub fn attrs(&self) -> Attrs {
                let mut out = Attrs::new();
                match self {
                    $( Op::$name(op) => op.to_attrs(&mut out), )*
                }
                out
            }
        }
    };
}

crate::for_each_op!(define_ops);

impl Op {
    /// The subgraphs held by this op's attributes (If branches, Loop/Scan bodies).
    pub fn subgraphs(&self) -> Vec<&Arc<Graph>> {
        match self {
            Op::If(op) => vec![&op.then_branch, &op.else_branch],
            Op::Loop(op) => vec![&op.body],
            Op::Scan(op) => vec![&op.body],
            Op::SequenceMap(op) => vec![&op.body],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Attr;

    #[test]
    fn attrs_round_trip_and_defaults_are_left_out() {
        let mut attrs = Attrs::new();
        attrs.insert("group".into(), Attr::Int(2));
        attrs.insert("strides".into(), Attr::Ints(vec![2, 2]));
        let op = Op::from_attrs("Conv", attrs.clone()).unwrap().unwrap();
        let Op::Conv(conv) = &op else {
            panic!("not a Conv: {op:?}")
        };
        assert_eq!(conv.group, 2);
        assert_eq!(conv.auto_pad, "NOTSET");
        assert_eq!(conv.strides.as_deref(), Some(&[2, 2][..]));
        assert_eq!(op.attrs(), attrs);
    }

    #[test]
    fn bad_attributes_are_errors() {
        let mut attrs = Attrs::new();
        attrs.insert("group".into(), Attr::String("two".into()));
        let err = Op::from_attrs("Conv", attrs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "attribute `group` should be int, got string"
        );

        let mut attrs = Attrs::new();
        attrs.insert("colour".into(), Attr::Int(1));
        assert_eq!(
            Op::from_attrs("Relu", attrs).unwrap_err(),
            AttrError::Unknown("colour".into())
        );
        assert_eq!(
            Op::from_attrs("Cast", Attrs::new()).unwrap_err(),
            AttrError::Missing("to".into())
        );
        assert_eq!(Op::from_attrs("NoSuchOp", Attrs::new()).unwrap(), None);
    }
}
