//! The e-class analysis: static types (dtype and shape, symbolic dims included) and constant values.
//!
//! Types come from the IR's own inference rules ([`jiuzhou_ir::infer`]) applied to the children's facts, so the
//! e-graph knows exactly what the IR knows. Constant values are known for constant leaves and for ops whose inputs
//! are all small constants: those are evaluated by a [`ConstEvaluator`] that the driver supplies (the passes never
//! depend on a concrete target), and `Shape` of a statically shaped value is folded directly. `ConstantOfShape`
//! with a constant shape folds into a real tensor of any size within the fill limits
//! ([`GraphAnalysis::with_fill_limits`]): models that store their weights as fills get them folded like weights. A folded class gets a
//! constant leaf in [`GraphAnalysis::modify`](egg::Analysis::modify), which is how constant folding happens.

use std::collections::HashMap;
use std::sync::Arc;

use egg::{Analysis, DidMerge, EGraph, Id};
use jiuzhou_ir::infer::{InferCx, InferOp, SymGen};
use jiuzhou_ir::{Attrs, Op, Tensor, TensorType, Value, ValueType};

use super::lang::{ENode, tensor_hash};
use super::shapes::{self, ShapeValue};

/// Evaluates one op on constant inputs; supplied by the driver (the reference target's semantics).
pub trait ConstEvaluator {
    /// The outputs of `op` applied to `inputs` (`None`: absent optional input), or `None` if it cannot be
    /// evaluated.
    fn eval(
        &self,
        op: &Op,
        inputs: &[Option<Arc<Tensor>>],
        num_outputs: usize,
    ) -> Option<Vec<Arc<Tensor>>>;
}

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The static types: one for a value, one per output for a tuple, none when unknown (or for attribute and
    /// absent leaves).
    pub types: Vec<ValueType>,
    /// The value, if it is a constant.
    pub konst: Option<Arc<Tensor>>,
    /// The value element by element (known integers or symbolic dims), for small integer tensors computed from
    /// shapes ([`shapes`](super::shapes)).
    pub shape_value: Option<Arc<ShapeValue>>,
}

/// A constant of the side table.
#[derive(Clone, Debug)]
pub struct ConstEntry {
    /// The tensor.
    pub tensor: Arc<Tensor>,
    /// The name of the graph constant it came from, if any.
    pub name: Option<String>,
}

/// An op that rules never rewrite, kept aside with what is needed to rebuild it.
#[derive(Clone, Debug)]
pub struct OpaqueEntry {
    /// The op, subgraphs included.
    pub op: Op,
    /// How many of the node's children are inputs (the rest are captured values).
    pub num_inputs: usize,
    /// The original output types.
    pub types: Vec<ValueType>,
}

/// A materialized `ConstantOfShape`: its dims, its fill value (none: 0.0f32) and the tensor.
type Fill = (Vec<usize>, Option<Arc<Tensor>>, Arc<Tensor>);

/// The analysis state: side tables and the constant-folding evaluator.
pub struct GraphAnalysis {
    /// Constants, addressed by [`ENode::Const`].
    pub consts: Vec<ConstEntry>,
    const_index: HashMap<u64, Vec<u32>>,
    /// Types of the graph inputs, addressed by [`ENode::Input`].
    pub input_types: Vec<ValueType>,
    /// Opaque ops, addressed by [`ENode::Opaque`].
    pub opaque: Vec<OpaqueEntry>,
    syms: SymGen,
    evaluator: Option<Arc<dyn ConstEvaluator>>,
    /// The most elements a folded constant (and each of its inputs) may have.
    pub fold_limit: usize,
    /// The most elements one materialized `ConstantOfShape` fill may have (see [`Options::fill_limit`](super::Options)).
    pub fill_limit: usize,
    /// The most elements all materialized fills together may have.
    pub fill_budget: usize,
    /// Fills materialized so far, by (dtype, shape, fill value): equal fills share one tensor, and the budget counts
    /// each once.
    fills: Vec<Fill>,
    fill_used: usize,
    /// Applications of Rust appliers already done (rule name and the matched classes): appliers that compute new
    /// weights skip repeats instead of recomputing them every iteration.
    pub applied: std::collections::HashSet<(String, Vec<Id>)>,
    /// The classes of the graph's outputs (not canonical: compare through `find`); they have readers outside the
    /// graph.
    pub outputs: Vec<Id>,
    /// Weights already re-laid out by a layout rule (the original tensor, its channels-last form): each weight is
    /// transposed once, however many conv nodes of the e-graph read it.
    pub relaid: Vec<(Arc<Tensor>, Arc<Tensor>)>,
}

impl GraphAnalysis {
    /// An analysis with no constants yet; `evaluator` folds ops on constants (none: only `Shape` folds).
    pub fn new(evaluator: Option<Arc<dyn ConstEvaluator>>, fold_limit: usize) -> GraphAnalysis {
        GraphAnalysis {
            consts: Vec::new(),
            const_index: HashMap::new(),
            input_types: Vec::new(),
            opaque: Vec::new(),
            syms: SymGen::default(),
            evaluator,
            fold_limit,
            fill_limit: 0,
            fill_budget: 0,
            fills: Vec::new(),
            fill_used: 0,
            applied: Default::default(),
            outputs: Vec::new(),
            relaid: Vec::new(),
        }
    }

    /// Lets `ConstantOfShape` with a constant shape fold into a real tensor of up to `per_tensor` elements, all such
    /// tensors together up to `total` elements (a model's weights stored as fills become constants that weight
    /// folding can use; a shape that asks for more memory than that stays an op evaluated at run time).
    pub fn with_fill_limits(mut self, per_tensor: usize, total: usize) -> GraphAnalysis {
        self.fill_limit = per_tensor;
        self.fill_budget = total;
        self
    }

    /// The tensor of `ConstantOfShape(shape)` when the limits allow it (see [`with_fill_limits`](Self::with_fill_limits)).
    fn materialize_fill(&mut self, op: &Op, shape: &Tensor) -> Option<Arc<Tensor>> {
        let dims: Vec<usize> = shape
            .to_i64_vec()?
            .into_iter()
            .map(|d| usize::try_from(d).ok())
            .collect::<Option<_>>()?;
        let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        let value = match op {
            Op::ConstantOfShape(c) => c.value.clone(),
            _ => return None,
        };
        if let Some((_, _, t)) = self
            .fills
            .iter()
            .find(|(d, v, _)| *d == dims && *v == value)
        {
            return Some(t.clone());
        }
        if n > self.fill_limit || self.fill_used.saturating_add(n) > self.fill_budget {
            tracing::debug!(
                elements = n,
                "ConstantOfShape fill over the materialization limits: kept as an op"
            );
            return None;
        }
        let ev = self.evaluator.clone()?;
        let t = ev
            .eval(op, &[Some(Arc::new(shape.clone()))], 1)?
            .into_iter()
            .next()?;
        self.fill_used += n;
        self.fills.push((dims, value, t.clone()));
        Some(t)
    }

    /// `op` evaluated on constant `inputs` by the driver's [`ConstEvaluator`], with no size limit (rules that
    /// re-lay out weights use it once per weight); `None` without an evaluator or when it fails.
    pub fn evaluate(&self, op: &Op, inputs: &[Option<Arc<Tensor>>]) -> Option<Arc<Tensor>> {
        self.evaluator
            .as_ref()?
            .eval(op, inputs, 1)?
            .into_iter()
            .next()
    }

    /// Adds a constant to the side table (or finds an equal one) and returns its index.
    ///
    /// Small tensors (up to `fold_limit` elements) are deduplicated by content; large ones (weights) by identity,
    /// so that hashing never touches every weight of a model.
    pub fn intern_const(&mut self, tensor: Arc<Tensor>, name: Option<String>) -> u32 {
        if tensor.len() > self.fold_limit.max(64) {
            let ptr = Arc::as_ptr(&tensor);
            if let Some(i) = self
                .consts
                .iter()
                .rposition(|c| Arc::as_ptr(&c.tensor) == ptr)
            {
                return i as u32;
            }
            let i = self.consts.len() as u32;
            self.consts.push(ConstEntry { tensor, name });
            return i;
        }
        let h = tensor_hash(&tensor);
        let bucket = self.const_index.entry(h).or_default();
        for &i in bucket.iter() {
            if self.consts[i as usize].tensor == tensor {
                return i;
            }
        }
        let i = self.consts.len() as u32;
        bucket.push(i);
        self.consts.push(ConstEntry { tensor, name });
        i
    }
}

impl std::fmt::Debug for GraphAnalysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphAnalysis")
            .field("consts", &self.consts.len())
            .field("opaque", &self.opaque.len())
            .finish()
    }
}

/// The e-graph of this crate.
pub type IrEGraph = EGraph<ENode, GraphAnalysis>;

/// The facts of class `id`.
pub fn facts(egraph: &IrEGraph, id: Id) -> &Facts {
    &egraph[id].data
}

/// The attributes held by attribute class `id` (empty if it holds none).
pub fn attrs_of(egraph: &IrEGraph, id: Id) -> Attrs {
    egraph[id]
        .nodes
        .iter()
        .find_map(|n| match n {
            ENode::Attrs(a) => Some(a.attrs().clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Rebuilds the [`Op`] of an op node from its name and attribute class.
pub fn op_of(egraph: &IrEGraph, name: &str, attrs: Id) -> Option<Op> {
    Op::from_attrs(name, attrs_of(egraph, attrs)).ok().flatten()
}

/// Whether class `id` is an absent optional input.
pub fn is_absent(egraph: &IrEGraph, id: Id) -> bool {
    egraph[id].nodes.iter().any(|n| matches!(n, ENode::Absent))
}

/// Ops whose result differs from run to run: never folded, never merged.
pub fn is_random(name: &str) -> bool {
    name.starts_with("Random") || name == "Bernoulli" || name == "Multinomial"
}

fn fold_shape(op: &Op, ty: &ValueType) -> Option<Tensor> {
    let Op::Shape(s) = op else { return None };
    let dims: Vec<i64> = ty
        .as_tensor()?
        .known_dims()?
        .into_iter()
        .map(|d| d as i64)
        .collect();
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(s.start);
    let end = clamp(s.end.unwrap_or(r));
    let slice = dims.get(start..end.max(start))?.to_vec();
    Some(Tensor::vector(slice))
}

impl Analysis<ENode> for GraphAnalysis {
    type Data = Facts;

    fn make(egraph: &mut IrEGraph, enode: &ENode, _id: Id) -> Facts {
        match enode {
            ENode::Input(i) => Facts {
                types: egraph
                    .analysis
                    .input_types
                    .get(*i as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                ..Facts::default()
            },
            ENode::Const(i) => match egraph.analysis.consts.get(*i as usize) {
                Some(c) => Facts {
                    types: vec![Value::Tensor(c.tensor.clone()).value_type()],
                    konst: Some(c.tensor.clone()),
                    shape_value: shapes::of_const(&c.tensor).map(Arc::new),
                },
                None => Facts::default(),
            },
            ENode::Attrs(_) | ENode::Absent => Facts::default(),
            ENode::Get { index, tuple } => Facts {
                types: egraph[tuple[0]]
                    .data
                    .types
                    .get(*index as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                ..Facts::default()
            },
            ENode::Opaque { index, .. } => Facts {
                types: egraph
                    .analysis
                    .opaque
                    .get(*index as usize)
                    .map(|o| o.types.clone())
                    .unwrap_or_default(),
                ..Facts::default()
            },
            ENode::Op {
                name,
                outputs,
                children,
            } => make_op(egraph, name, *outputs as usize, children),
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let mut a_changed = false;
        let mut b_changed = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types;
            a_changed = true;
        } else if !a.types.is_empty() && b.types.is_empty() {
            b_changed = true;
        }
        match (&a.konst, b.konst) {
            (None, Some(k)) => {
                a.konst = Some(k);
                a_changed = true;
            }
            (Some(_), None) => b_changed = true,
            _ => {}
        }
        match (&a.shape_value, b.shape_value) {
            (None, Some(v)) => {
                a.shape_value = Some(v);
                a_changed = true;
            }
            (Some(_), None) => b_changed = true,
            _ => {}
        }
        DidMerge(a_changed, b_changed)
    }

    fn modify(egraph: &mut IrEGraph, id: Id) {
        let Some(k) = egraph[id].data.konst.clone() else {
            return;
        };
        let is_fill = || {
            egraph[id]
                .nodes
                .iter()
                .any(|n| matches!(n, ENode::Op { name, .. } if *name == "ConstantOfShape"))
        };
        if (k.len() > egraph.analysis.fold_limit && !is_fill())
            || egraph[id]
                .nodes
                .iter()
                .any(|n| matches!(n, ENode::Const(_)))
        {
            return;
        }
        let c = egraph.analysis.intern_const(k, None);
        let leaf = egraph.add(ENode::Const(c));
        egraph.union(id, leaf);
    }
}

fn make_op(egraph: &mut IrEGraph, name: &str, outputs: usize, children: &[Id]) -> Facts {
    let Some((&attrs, inputs)) = children.split_first() else {
        return Facts::default();
    };
    let Some(op) = op_of(egraph, name, attrs) else {
        return Facts::default();
    };
    let mut tys = Vec::with_capacity(inputs.len());
    let mut consts = Vec::with_capacity(inputs.len());
    let mut values = Vec::with_capacity(inputs.len());
    for &c in inputs {
        if is_absent(egraph, c) {
            tys.push(None);
            consts.push(None);
            values.push(None);
            continue;
        }
        let f = &egraph[c].data;
        let [ty] = f.types.as_slice() else {
            return Facts::default();
        };
        tys.push(Some(ty.clone()));
        consts.push(f.konst.clone());
        values.push(f.shape_value.clone());
    }
    let mut types = {
        let mut cx = InferCx {
            inputs: &tys,
            consts: &consts,
            num_outputs: outputs,
            syms: &mut egraph.analysis.syms,
        };
        match op.infer(&mut cx) {
            Ok(mut t) if t.len() >= outputs => {
                t.truncate(outputs);
                t
            }
            _ => return Facts::default(),
        }
    };
    // A Reshape to a computed target whose shape value is known gets exact dims.
    if let (Op::Reshape(r), Some(Some(target)), None, Some(Some(ValueType::Tensor(x)))) = (
        &op,
        values.get(1),
        consts.get(1).cloned().flatten(),
        tys.first(),
    ) && let Some(dims) = x
        .shape
        .as_deref()
        .and_then(|d| shapes::reshape_dims(d, target, r.allowzero != 0))
    {
        types = vec![ValueType::Tensor(TensorType::new(x.dtype, dims))];
    }
    // Range(0, n, 1) with n the run-time size of a symbolic dim (a shape value) has exactly n elements: the same
    // symbol, not a fresh one, so that masks and positions built from it line up with the tensors of that dim.
    if let (Op::Range(_), [Some(start), Some(limit), Some(delta)]) = (&op, values.as_slice())
        && start.elems == [shapes::Elem::Int(0)]
        && delta.elems == [shapes::Elem::Int(1)]
        && let [shapes::Elem::Sym(n)] = limit.elems.as_slice()
        && let Some(ValueType::Tensor(t)) = types.first()
    {
        types = vec![ValueType::Tensor(TensorType::new(
            t.dtype,
            [jiuzhou_ir::Dim::Sym(n.clone())],
        ))];
    }
    let shape_value = if outputs == 1 {
        let vs: Vec<Option<&ShapeValue>> = values.iter().map(|v| v.as_deref()).collect();
        let ts: Vec<Option<&ValueType>> = tys.iter().map(|t| t.as_ref()).collect();
        shapes::propagate(&op, &vs, &ts).map(Arc::new)
    } else {
        None
    };
    let mut konst = None;
    if outputs == 1 {
        if let Some(t) = tys
            .first()
            .cloned()
            .flatten()
            .and_then(|t| fold_shape(&op, &t))
        {
            konst = Some(Arc::new(t));
        } else if !is_random(name)
            && let Some(ev) = egraph.analysis.evaluator.clone()
        {
            let limit = egraph.analysis.fold_limit;
            let small_consts = tys
                .iter()
                .zip(&consts)
                .all(|(t, c)| t.is_none() || c.as_ref().is_some_and(|c| c.len() <= limit));
            let out_small = types[0]
                .as_tensor()
                .and_then(|t| t.known_dims())
                .is_some_and(|d| d.iter().product::<usize>() <= limit);
            if small_consts && out_small {
                konst = ev
                    .eval(&op, &consts, 1)
                    .and_then(|v| v.into_iter().next())
                    .filter(|t| t.len() <= limit);
            }
        }
    }
    if konst.is_none()
        && matches!(op, Op::ConstantOfShape(_))
        && let Some(Some(shape)) = consts.first()
    {
        konst = egraph.analysis.materialize_fill(&op, shape);
    }
    if let Some(k) = &konst {
        let from_const = shapes::of_const(k).map(Arc::new);
        return Facts {
            types,
            konst,
            shape_value: from_const,
        };
    }
    Facts {
        types,
        konst,
        shape_value,
    }
}
