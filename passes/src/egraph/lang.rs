//! The e-graph language of the IR.
//!
//! An [`ENode`] is one of: an op application (its name, how many outputs it declares, and its children: first the
//! class of its attributes, then its inputs), an attribute leaf ([`AttrsLeaf`]: the op's non-default attributes,
//! compared by a canonical key), a projection `get.K` of output `K` of a multi-output op, a graph input, a
//! constant (an index into the analysis' side table of tensors, deduplicated by content), an absent optional input,
//! or an opaque node (ops with subgraphs or non-tensor values, and non-deterministic ops) that rules never touch.
//!
//! Putting the attributes in a child class (as Tensat does) lets a rule bind them to a pattern variable (`?a`) and
//! read them in a guard or an applier; attribute-free ops share the empty leaf, written `{}` in patterns:
//! `(Neg {} (Neg {} ?x))`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use egg::{FromOp, Id, Language};
use jiuzhou_ir::{Attr, Attrs, Op, Tensor};

/// The attributes of an op node, compared, ordered and hashed by a canonical key.
#[derive(Clone, Debug)]
pub struct AttrsLeaf {
    key: Arc<str>,
    attrs: Arc<Attrs>,
}

impl AttrsLeaf {
    /// A leaf for `attrs` (only the attributes that differ from their defaults, as [`Op::attrs`] gives them).
    pub fn new(attrs: Attrs) -> AttrsLeaf {
        AttrsLeaf {
            key: attrs_key(&attrs).into(),
            attrs: Arc::new(attrs),
        }
    }

    /// The attributes.
    pub fn attrs(&self) -> &Attrs {
        &self.attrs
    }

    /// The canonical key (deterministic; floats by their bits, tensors by content).
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl PartialEq for AttrsLeaf {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for AttrsLeaf {}
impl PartialOrd for AttrsLeaf {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AttrsLeaf {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}
impl Hash for AttrsLeaf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// A deterministic hash of a tensor's dtype, shape and contents.
pub fn tensor_hash(t: &Tensor) -> u64 {
    // `DefaultHasher::new()` uses fixed keys, so the hash is the same on every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.dtype().to_string().hash(&mut h);
    t.shape().hash(&mut h);
    match (t.to_le_bytes(), t.data()) {
        (Some(b), _) => b.hash(&mut h),
        (None, jiuzhou_ir::Data::String(v)) => v.hash(&mut h),
        (None, _) => t.len().hash(&mut h),
    }
    h.finish()
}

fn attr_key(a: &Attr, out: &mut String) {
    use std::fmt::Write;
    let tensor = |t: &Tensor, out: &mut String| {
        let _ = write!(out, "t{}{:?}#{:016x}", t.dtype(), t.shape(), tensor_hash(t));
    };
    let _ = match a {
        Attr::Int(v) => write!(out, "i{v}"),
        Attr::Float(v) => write!(out, "f{:08x}", v.to_bits()),
        Attr::String(s) => write!(out, "s{s:?}"),
        Attr::Ints(v) => write!(out, "I{v:?}"),
        Attr::Floats(v) => write!(
            out,
            "F{:?}",
            v.iter().map(|f| f.to_bits()).collect::<Vec<_>>()
        ),
        Attr::Strings(v) => write!(out, "S{v:?}"),
        Attr::Tensor(t) => {
            tensor(t, out);
            Ok(())
        }
        Attr::Tensors(ts) => {
            out.push('[');
            for t in ts {
                tensor(t, out);
                out.push(',');
            }
            out.push(']');
            Ok(())
        }
        // Subgraphs only occur in opaque nodes; identity is the pointer.
        Attr::Graph(g) => write!(out, "g{:p}", Arc::as_ptr(g)),
        Attr::Graphs(gs) => write!(
            out,
            "G{:?}",
            gs.iter()
                .map(|g| Arc::as_ptr(g) as usize)
                .collect::<Vec<_>>()
        ),
        Attr::Type(t) => write!(out, "y{t}"),
        Attr::Types(ts) => write!(
            out,
            "Y{:?}",
            ts.iter().map(|t| t.to_string()).collect::<Vec<_>>()
        ),
    };
}

/// The canonical key of an attribute map: `name=value` pairs in name order.
pub fn attrs_key(attrs: &Attrs) -> String {
    let mut out = String::new();
    for (i, (name, a)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
        out.push('=');
        attr_key(a, &mut out);
    }
    out
}

/// One e-node of the IR's e-graph language. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ENode {
    /// An op application: `children[0]` is the attribute class, the rest are the inputs in order (trailing absent
    /// inputs trimmed, inner ones as [`ENode::Absent`]). With more than one output the class is a tuple, read
    /// through [`ENode::Get`].
    Op {
        /// The op's name, one of [`Op::NAMES`].
        name: &'static str,
        /// How many outputs the node declares.
        outputs: u32,
        /// The attribute class, then the inputs.
        children: Vec<Id>,
    },
    /// Output `index` of a multi-output op or opaque node.
    Get {
        /// Which output.
        index: u32,
        /// The tuple class.
        tuple: [Id; 1],
    },
    /// The attributes of an op.
    Attrs(AttrsLeaf),
    /// Graph input number `.0`.
    Input(u32),
    /// Constant number `.0` of the analysis' side table.
    Const(u32),
    /// An absent optional input.
    Absent,
    /// An op that rules never rewrite (subgraphs, non-tensor values, randomness): entry `index` of the analysis'
    /// opaque table; children are its inputs, then the outer values its subgraphs capture.
    Opaque {
        /// The entry in the opaque table.
        index: u32,
        /// Inputs (absent ones as [`ENode::Absent`]), then captured values.
        children: Vec<Id>,
    },
}

/// The part of an [`ENode`] that pattern matching compares before the children.
pub type Discriminant = std::mem::Discriminant<ENode>;

impl Language for ENode {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Self::Discriminant {
        std::mem::discriminant(self)
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (
                ENode::Op {
                    name: a,
                    outputs: ao,
                    children: ac,
                },
                ENode::Op {
                    name: b,
                    outputs: bo,
                    children: bc,
                },
            ) => a == b && ao == bo && ac.len() == bc.len(),
            (ENode::Get { index: a, .. }, ENode::Get { index: b, .. }) => a == b,
            (ENode::Attrs(a), ENode::Attrs(b)) => a == b,
            (ENode::Input(a), ENode::Input(b)) => a == b,
            (ENode::Const(a), ENode::Const(b)) => a == b,
            (ENode::Absent, ENode::Absent) => true,
            (
                ENode::Opaque {
                    index: a,
                    children: ac,
                },
                ENode::Opaque {
                    index: b,
                    children: bc,
                },
            ) => a == b && ac.len() == bc.len(),
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            ENode::Op { children, .. } | ENode::Opaque { children, .. } => children,
            ENode::Get { tuple, .. } => tuple,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            ENode::Op { children, .. } | ENode::Opaque { children, .. } => children,
            ENode::Get { tuple, .. } => tuple,
            _ => &mut [],
        }
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ENode::Op { name, outputs, .. } if *outputs == 1 => f.write_str(name),
            ENode::Op { name, outputs, .. } => write!(f, "{name}#{outputs}"),
            ENode::Get { index, .. } => write!(f, "get.{index}"),
            ENode::Attrs(a) if a.key.is_empty() => f.write_str("{}"),
            ENode::Attrs(a) => write!(f, "{{{}}}", a.key.replace(' ', "")),
            ENode::Input(i) => write!(f, "input.{i}"),
            ENode::Const(i) => write!(f, "const.{i}"),
            ENode::Absent => f.write_str("absent"),
            ENode::Opaque { index, .. } => write!(f, "opaque.{index}"),
        }
    }
}

/// Why a pattern's operator could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown e-graph operator `{0}` (or wrong number of children)")]
pub struct UnknownOp(pub String);

impl FromOp for ENode {
    type Error = UnknownOp;

    /// Reads a pattern operator: an op name (one output), `{}` (no attributes), `absent`, or `get.K`.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let err = || UnknownOp(op.to_string());
        if op == "{}" && children.is_empty() {
            return Ok(ENode::Attrs(AttrsLeaf::new(Attrs::new())));
        }
        if op == "absent" && children.is_empty() {
            return Ok(ENode::Absent);
        }
        if let Some(k) = op.strip_prefix("get.") {
            let index = k.parse().map_err(|_| err())?;
            let [tuple] = <[Id; 1]>::try_from(children).map_err(|_| err())?;
            return Ok(ENode::Get {
                index,
                tuple: [tuple],
            });
        }
        let name = Op::NAMES.iter().find(|n| **n == op).ok_or_else(err)?;
        if children.is_empty() {
            return Err(err());
        }
        Ok(ENode::Op {
            name,
            outputs: 1,
            children,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_keys_are_canonical() {
        let mut a = Attrs::new();
        a.insert("perm".into(), Attr::Ints(vec![1, 0]));
        a.insert("alpha".into(), Attr::Float(0.5));
        assert_eq!(attrs_key(&a), "alpha=f3f000000;perm=I[1, 0]");
        assert_eq!(AttrsLeaf::new(a.clone()), AttrsLeaf::new(a));
    }

    #[test]
    fn patterns_parse() {
        let p: egg::Pattern<ENode> = "(Neg {} (Neg {} ?x))".parse().unwrap();
        assert_eq!(p.vars().len(), 1);
        assert!("(NoSuchOp {} ?x)".parse::<egg::Pattern<ENode>>().is_err());
    }
}
