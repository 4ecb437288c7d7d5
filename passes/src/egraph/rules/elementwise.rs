//! Fusion of elementwise chains (part of the fusion family): chains of elementwise ops with numpy broadcasting
//! into one `FusedElementwise` node, jiuzhou's own op whose `expr` is a postfix program over its inputs
//! (`jiuzhou_ir::ops::expr`).
//!
//! The rule grows a fused node one absorbed producer at a time: for an elementwise node `op(.., y, ..)` (a plain
//! elementwise op or a fused node already) whose input `y` is itself computed by an elementwise node that nothing
//! else reads, it adds `FusedElementwise[expr](..)` with `y`'s program substituted for that input, to the class of
//! `op`. Repeated over iterations, a chain of `n` ops becomes one node. Only `y`'s largest program is absorbed (the
//! smaller ones were absorbed in earlier iterations), which bounds the growth to a few nodes per class per
//! iteration, and no program grows beyond [`MAX_FUSED_STEPS`] steps or [`MAX_FUSED_INPUTS`] inputs.
//!
//! "Nothing else reads `y`" is judged on the e-graph: every parent e-node of `y`'s class, other than fused nodes
//! (which only stand for readers that exist anyway), lies in the matched class, and `y` is not a graph output.
//! Absorbing a value that is read elsewhere would compute it twice; the DAG-aware extraction would pay for both,
//! but its greedy pass could still pick the fused node locally, so such values are never absorbed.
//!
//! Only f32 values are fused (the CPU kernel computes f32), and constants are left to constant folding. The fused
//! node equals the chain exactly (its reference semantics are the same ops in the same order), so extraction may
//! choose either: a fused node costs what one kernel costs, the chain one per op.

use std::collections::HashSet;

use egg::{Applier, Id, PatternAst, SearchMatches, Searcher, Subst, Symbol, Var};
use jiuzhou_ir::ops::FusedElementwise;
use jiuzhou_ir::ops::expr::{ElementwiseExpr, ExprStep};
use jiuzhou_ir::{DType, Op};

use super::super::analysis::{GraphAnalysis, IrEGraph, attrs_of, is_absent};
use super::super::lang::{AttrsLeaf, ENode};
use super::{Rule, add_op, konst, tensor_type};

/// The most steps a fused program may grow to.
pub const MAX_FUSED_STEPS: usize = 32;

/// The most inputs a fused node may read.
pub const MAX_FUSED_INPUTS: usize = 8;

/// The elementwise-fusion rule.
pub fn rules() -> Vec<Rule> {
    // op(.., f(..), ..) == FusedElementwise[op ∘ f](..) for elementwise op and f (plain ops or fused programs),
    // where nothing else reads f's result: each step is the same ONNX op on the same broadcast operands.
    vec![
        Rule::new("fuse-elementwise", ChainSearcher, ChainApplier)
            .expect("the rule binds no variables"),
    ]
}

/// An elementwise node as a program over input classes.
#[derive(Clone, Debug)]
struct Form {
    steps: Vec<ExprStep>,
    inputs: Vec<Id>,
}

/// The program of e-node `node`, if it is a plain elementwise op over present inputs or a fused node.
fn form_of(eg: &IrEGraph, node: &ENode) -> Option<Form> {
    let ENode::Op {
        name,
        outputs: 1,
        children,
    } = node
    else {
        return None;
    };
    let (attrs, ins) = children.split_first()?;
    if ins.iter().any(|&c| is_absent(eg, c)) {
        return None;
    }
    let inputs: Vec<Id> = ins.iter().map(|&c| eg.find(c)).collect();
    if *name == "FusedElementwise" {
        let Ok(Some(Op::FusedElementwise(f))) = Op::from_attrs(name, attrs_of(eg, *attrs)) else {
            return None;
        };
        if f.expr.num_inputs() != inputs.len() {
            return None;
        }
        return Some(Form {
            steps: f.expr.steps().to_vec(),
            inputs,
        });
    }
    let step = ExprStep::from_op_name(name, inputs.len())?;
    // Every op of an expression is attribute-free; an attribute would change its meaning.
    if !attrs_of(eg, *attrs).is_empty() {
        return None;
    }
    let mut steps: Vec<ExprStep> = (0..inputs.len() as u32).map(ExprStep::Input).collect();
    steps.push(step);
    Some(Form { steps, inputs })
}

/// Whether class `id` is a non-constant f32 tensor of known type.
fn is_f32_value(eg: &IrEGraph, id: Id) -> bool {
    tensor_type(eg, id).is_some_and(|t| t.dtype == DType::F32 && t.shape.is_some())
        && konst(eg, id).is_none()
}

/// Whether nothing but nodes of class `reader` (and fused nodes) reads class `y`, and `y` is not a graph output.
fn only_read_by(eg: &IrEGraph, y: Id, reader: Id) -> bool {
    let reader = eg.find(reader);
    if eg.analysis.outputs.iter().any(|&o| eg.find(o) == y) {
        return false;
    }
    eg[y].parents().all(|p| {
        eg.find(p) == reader
            || matches!(eg.id_to_node(p), ENode::Op { name, .. } if *name == "FusedElementwise")
    })
}

/// How many basic ops a program stands for (a composite step counts as its spelled-out form).
fn weight(steps: &[ExprStep]) -> usize {
    steps
        .iter()
        .map(|s| match s {
            ExprStep::Input(_) => 0,
            ExprStep::Unary(u) => u.weight(),
            ExprStep::Binary(_) => 1,
        })
        .sum()
}

/// The largest program among `y`'s nodes, if `y` may be absorbed into class `reader`: the most basic ops covered
/// (partial programs lose to the grown one), then the fewest steps (a composite such as `silu` wins over its
/// spelled-out form), then the fewest inputs.
fn best_form(eg: &IrEGraph, y: Id, reader: Id) -> Option<Form> {
    if !is_f32_value(eg, y) || !only_read_by(eg, y, reader) {
        return None;
    }
    eg[y]
        .nodes
        .iter()
        .filter_map(|n| form_of(eg, n))
        // A program that reads its own class would make a cycle.
        .filter(|f| !f.inputs.contains(&y))
        .max_by_key(|f| {
            (
                weight(&f.steps),
                std::cmp::Reverse(f.steps.len()),
                std::cmp::Reverse(f.inputs.len()),
            )
        })
}

/// `outer` with every read of input class `y` replaced by `inner`'s program; inputs renumbered in order of first
/// use, equal classes read through one input.
fn substitute(outer: &Form, y: Id, inner: &Form) -> Option<Form> {
    let mut inputs: Vec<Id> = Vec::new();
    let mut steps = Vec::new();
    let mut push_input = |c: Id, steps: &mut Vec<ExprStep>| {
        let k = match inputs.iter().position(|&i| i == c) {
            Some(k) => k,
            None => {
                inputs.push(c);
                inputs.len() - 1
            }
        };
        steps.push(ExprStep::Input(k as u32));
    };
    for s in &outer.steps {
        match s {
            ExprStep::Input(k) if outer.inputs[*k as usize] == y => {
                for t in &inner.steps {
                    match t {
                        ExprStep::Input(j) => push_input(inner.inputs[*j as usize], &mut steps),
                        op => steps.push(*op),
                    }
                }
            }
            ExprStep::Input(k) => push_input(outer.inputs[*k as usize], &mut steps),
            op => steps.push(*op),
        }
    }
    (steps.len() <= MAX_FUSED_STEPS && inputs.len() <= MAX_FUSED_INPUTS)
        .then_some(Form { steps, inputs })
}

/// The fused nodes that class `c` could gain: every elementwise node of `c` with one absorbable input substituted.
fn candidates(eg: &IrEGraph, c: Id) -> Vec<(ElementwiseExpr, Vec<Id>)> {
    let c = eg.find(c);
    if !is_f32_value(eg, c) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for node in &eg[c].nodes {
        let Some(form) = form_of(eg, node) else {
            continue;
        };
        let distinct: Vec<Id> = {
            let mut d = form.inputs.clone();
            d.sort();
            d.dedup();
            d
        };
        for y in distinct {
            if y == c {
                continue;
            }
            let Some(inner) = best_form(eg, y, c) else {
                continue;
            };
            let Some(fused) = substitute(&form, y, &inner) else {
                continue;
            };
            if fused.inputs.contains(&c) {
                continue;
            }
            let Ok(expr) = ElementwiseExpr::new(fused.steps) else {
                continue;
            };
            if seen.insert((expr.to_string(), fused.inputs.clone())) {
                out.push((expr, fused.inputs));
            }
        }
    }
    out
}

/// The e-node of a fused program, if its attribute leaf exists already (else it is certainly new).
fn existing(eg: &IrEGraph, expr: &ElementwiseExpr, inputs: &[Id]) -> Option<Id> {
    let op = Op::FusedElementwise(FusedElementwise { expr: expr.clone() });
    let attrs = eg.lookup(ENode::Attrs(AttrsLeaf::new(op.attrs())))?;
    let mut children = vec![attrs];
    children.extend_from_slice(inputs);
    eg.lookup(ENode::Op {
        name: "FusedElementwise",
        outputs: 1,
        children,
    })
}

/// Finds the classes that would gain a fused node not in them yet.
struct ChainSearcher;

impl Searcher<ENode, GraphAnalysis> for ChainSearcher {
    fn search_eclass_with_limit(
        &self,
        eg: &IrEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        if limit == 0 {
            return None;
        }
        let c = eg.find(eclass);
        // Cheap filter first: the class must hold an elementwise node with a non-leaf input.
        let has_elementwise = eg[c].nodes.iter().any(|n| match n {
            ENode::Op { name, children, .. } => {
                *name == "FusedElementwise"
                    || ExprStep::from_op_name(name, children.len().saturating_sub(1)).is_some()
            }
            _ => false,
        });
        if !has_elementwise {
            return None;
        }
        let new = candidates(eg, c)
            .iter()
            .any(|(expr, inputs)| existing(eg, expr, inputs) != Some(c));
        new.then(|| SearchMatches {
            eclass: c,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

/// Adds the fused nodes of a class and merges them into it (when inference gives them the class's exact type).
struct ChainApplier;

impl Applier<ENode, GraphAnalysis> for ChainApplier {
    fn apply_one(
        &self,
        eg: &mut IrEGraph,
        eclass: Id,
        _: &Subst,
        _: Option<&PatternAst<ENode>>,
        _: Symbol,
    ) -> Vec<Id> {
        let c = eg.find(eclass);
        let mut changed = Vec::new();
        for (expr, inputs) in candidates(eg, c) {
            let new = add_op(
                eg,
                &Op::FusedElementwise(FusedElementwise { expr }),
                &inputs,
            );
            let same = matches!(
                (tensor_type(eg, c), tensor_type(eg, new)),
                (Some(a), Some(b)) if a == b
            );
            if same && eg.union(c, new) {
                changed.push(c);
            }
        }
        changed
    }
}
