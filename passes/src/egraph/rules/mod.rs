//! Rewrite rules, one family per file, each a table of named rules with an algebraic comment.
//!
//! Patterns are written in the e-graph language ([`ENode`]): `(Op ?attrs ?input...)`, attribute-free ops with the
//! literal `{}`. Guards are named functions ([`Guard`]); rules that compute new attributes or constants are
//! [`egg::Applier`]s in Rust. Every rule has a soundness case in `egraph/tests.rs` (a test fails if one is missing).

use std::sync::Arc;

use egg::{Id, Subst, Var};
use jiuzhou_ir::{Attrs, DType, Op, Tensor, TensorType};

use super::analysis::{GraphAnalysis, IrEGraph, attrs_of};
use super::lang::{AttrsLeaf, ENode};

pub mod cleanup;
pub mod elementwise;
pub mod fusion;
pub mod layout;
pub mod patterns;
pub mod taso;
pub mod weights;

/// A rewrite rule over the IR's e-graph.
pub type Rule = egg::Rewrite<ENode, GraphAnalysis>;

/// A guard: a named condition on a match (`eclass` is the matched root's class).
pub type Guard = Box<dyn Fn(&mut IrEGraph, Id, &Subst) -> bool + Send + Sync>;

/// Every rule of every family, in a fixed order.
pub fn all_rules() -> Vec<Rule> {
    let mut rules = cleanup::rules();
    rules.extend(weights::rules());
    rules.extend(fusion::rules());
    rules.extend(elementwise::rules());
    rules.extend(patterns::rules());
    rules.extend(layout::rules());
    rules.extend(taso::rules());
    rules
}

/// The names of every rule.
pub fn all_rule_names() -> Vec<String> {
    all_rules().iter().map(|r| r.name.to_string()).collect()
}

/// Pattern variable `?name`.
pub fn var(name: &str) -> Var {
    name.parse().expect("pattern variables are written `?name`")
}

/// The class bound to `v`, canonical.
pub fn bound(egraph: &IrEGraph, subst: &Subst, v: &str) -> Id {
    egraph.find(subst[var(v)])
}

/// The tensor type of class `id`, if it is a single tensor of known type.
pub fn tensor_type(egraph: &IrEGraph, id: Id) -> Option<&TensorType> {
    match egraph[id].data.types.as_slice() {
        [t] => t.as_tensor(),
        _ => None,
    }
}

/// The constant value of class `id`, if known.
pub fn konst(egraph: &IrEGraph, id: Id) -> Option<Arc<Tensor>> {
    egraph[id].data.konst.clone()
}

/// The attributes bound to `v`.
pub fn attrs(egraph: &IrEGraph, subst: &Subst, v: &str) -> Attrs {
    attrs_of(egraph, bound(egraph, subst, v))
}

/// The op `name` with the attributes bound to `v`.
pub fn op_with(egraph: &IrEGraph, subst: &Subst, name: &str, v: &str) -> Option<Op> {
    Op::from_attrs(name, attrs(egraph, subst, v)).ok().flatten()
}

/// Adds a constant leaf for `t` and returns its class.
pub fn add_const(egraph: &mut IrEGraph, t: Tensor) -> Id {
    let c = egraph.analysis.intern_const(Arc::new(t), None);
    egraph.add(ENode::Const(c))
}

/// Adds an attribute leaf and returns its class.
pub fn add_attrs(egraph: &mut IrEGraph, op: &Op) -> Id {
    egraph.add(ENode::Attrs(AttrsLeaf::new(op.attrs())))
}

/// Adds an op node with one output over `inputs` and returns its class.
pub fn add_op(egraph: &mut IrEGraph, op: &Op, inputs: &[Id]) -> Id {
    let a = add_attrs(egraph, op);
    let name = Op::NAMES
        .iter()
        .find(|n| **n == op.name())
        .expect("every op's name is in Op::NAMES");
    let mut children = vec![a];
    children.extend_from_slice(inputs);
    egraph.add(ENode::Op {
        name,
        outputs: 1,
        children,
    })
}

/// Whether this is the first application of `rule` to the match identified by `key` (and records it): appliers
/// that compute new tensors skip repeats instead of recomputing them every iteration.
pub fn first_application(egraph: &mut IrEGraph, rule: egg::Symbol, key: Vec<Id>) -> bool {
    egraph.analysis.applied.insert((rule.to_string(), key))
}

/// Runs `fold` (an applier computing new weights) once per rule and key, unioning its result into `eclass`:
/// later iterations see the same match again and must not recompute the tensors.
pub fn fold_once(
    egraph: &mut IrEGraph,
    eclass: Id,
    rule: egg::Symbol,
    key: Vec<Id>,
    fold: impl FnOnce(&mut IrEGraph) -> Option<Id>,
) -> Vec<Id> {
    if !first_application(egraph, rule, key) {
        return vec![];
    }
    match fold(egraph) {
        Some(new) => union_into(egraph, eclass, new),
        None => vec![],
    }
}

/// Unions `new` into `eclass`; the applier's return value.
pub fn union_into(egraph: &mut IrEGraph, eclass: Id, new: Id) -> Vec<Id> {
    if egraph.union(eclass, new) {
        vec![eclass]
    } else {
        vec![]
    }
}

/// Whether the matched root (class `root`) and the class bound to `v` have the same known static type, so that
/// replacing one with the other keeps the graph's types (shapes must match exactly: broadcasting is not a no-op).
pub fn same_type_as_root(v: &'static str) -> Guard {
    Box::new(move |eg, root, s| {
        let x = bound(eg, s, v);
        match (tensor_type(eg, root), tensor_type(eg, x)) {
            (Some(a), Some(b)) => a.shape.is_some() && a == b,
            _ => false,
        }
    })
}

/// Whether the class bound to `v` is a constant whose every element equals `value`.
pub fn is_const_all(v: &'static str, value: f64) -> Guard {
    Box::new(move |eg, _, s| {
        konst(eg, bound(eg, s, v))
            .and_then(|t| t.to_f64_vec())
            .is_some_and(|x| !x.is_empty() && x.iter().all(|e| *e == value))
    })
}

/// Both guards hold.
pub fn both(a: Guard, b: Guard) -> Guard {
    Box::new(move |eg, id, s| a(eg, id, s) && b(eg, id, s))
}

/// Whether `d` is a floating-point dtype.
pub fn is_float(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
}
