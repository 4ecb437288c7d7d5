//! Import of a decoded ONNX model into an IR [`Graph`].
//!
//! The importer walks each graph's nodes in topological order and, for each node: turns a `Constant` into an IR
//! constant; converts attributes (subgraph attributes are imported recursively, with the enclosing graphs' values
//! visible as captures); upgrades older opset forms ([`super::upgrade`]); builds the IR op; resolves input names
//! (an empty name is an absent optional input, a name of an enclosing graph becomes a capture); and infers the
//! output types right away, so that a subgraph imported later sees the types of everything it captures. Types the
//! model declares (`value_info`, graph outputs) refine the inferred ones where they are more specific.
//!
//! Value names are kept, made unique across the whole model where ONNX reuses them, so a capture names exactly one
//! value of the enclosing scopes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use jiuzhou_ir::infer::{InferCx, InferOp, SymGen};
use jiuzhou_ir::{
    Attr, Attrs, DType, Dim, Graph, Node, Op, Tensor, TensorType, ValueId, ValueType,
};

use super::function::{self, FunctionKey};
use super::proto::{self, attribute_proto::AttributeType, type_proto};
use super::tensor::{sparse_to_dense, tensor_from_proto};
use super::upgrade::{self, OnnxNode, UpgradeCx};
use super::{ImportError, UnsupportedOp};

/// How deep subgraphs (and function calls) may nest.
const MAX_DEPTH: usize = 64;

/// The model's local functions by key.
pub(crate) type Functions<'a> = HashMap<FunctionKey, &'a proto::FunctionProto>;

/// Whether `domain` is the default ONNX domain.
pub(crate) fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Every node (subgraphs included) whose op the importer cannot turn into an IR op.
pub(crate) fn unsupported_ops(
    nodes: &[proto::NodeProto],
    opsets: &HashMap<String, i64>,
    functions: &Functions<'_>,
    out: &mut Vec<UnsupportedOp>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    for node in nodes {
        if let Some(f) = functions.get(&function::call_key(node)) {
            unsupported_ops(&f.node, opsets, functions, out, depth + 1);
            continue;
        }
        let default = is_default_domain(&node.domain);
        // jiuzhou's own ops (FusedConv, ...) are IR ops but not ONNX operators: a model file cannot use them.
        let known = default
            && (node.op_type == "Constant"
                || (Op::NAMES.contains(&node.op_type.as_str())
                    && !jiuzhou_ir::ops::own::is_own_name(&node.op_type))
                || upgrade::REWRITTEN_OPS.contains(&node.op_type.as_str()));
        if !known {
            let domain = if default { "" } else { node.domain.as_str() };
            out.push(UnsupportedOp {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: if default {
                    "ai.onnx".into()
                } else {
                    node.domain.clone()
                },
                opset: opsets.get(domain).copied().unwrap_or(0),
            });
        }
        for a in &node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                unsupported_ops(&g.node, opsets, functions, out, depth + 1);
            }
        }
    }
}

/// One graph under construction.
struct GraphState {
    graph: Graph,
    /// ONNX name → value, for names defined in this graph (or captured into it).
    names: HashMap<String, ValueId>,
    /// Types the model declares for values of this graph (value_info and graph outputs), by ONNX name.
    declared: HashMap<String, ValueType>,
}

/// The importer of one model.
pub(crate) struct Importer<'a> {
    base_dir: Option<&'a Path>,
    opset: i64,
    syms: SymGen,
    /// Every value name used anywhere in the model so far.
    used: HashSet<String>,
    /// Next suffix to try per base name.
    suffix: HashMap<String, usize>,
    /// The graphs being built, outermost first.
    stack: Vec<GraphState>,
    /// Counter for names of unnamed nodes.
    unnamed: usize,
    /// Names handed out by [`UpgradeCx::fresh_name`], not yet defined.
    reserved: HashSet<String>,
    /// How many If branches enclose the graph being imported.
    if_depth: usize,
    /// The model's local functions.
    functions: Functions<'a>,
    /// How many function calls are being expanded.
    call_depth: usize,
}

fn node_err(node: &str, op_type: &str, why: impl Into<String>) -> ImportError {
    ImportError::Node {
        node: node.to_string(),
        op_type: op_type.to_string(),
        why: why.into(),
    }
}

impl<'a> Importer<'a> {
    pub(crate) fn new(base_dir: Option<&'a Path>, opset: i64) -> Importer<'a> {
        Importer {
            base_dir,
            opset,
            syms: SymGen::default(),
            used: HashSet::new(),
            suffix: HashMap::new(),
            stack: Vec::new(),
            unnamed: 0,
            reserved: HashSet::new(),
            if_depth: 0,
            functions: HashMap::new(),
            call_depth: 0,
        }
    }

    /// A name not used anywhere in the model yet, based on `base`.
    fn unique(&mut self, base: &str) -> String {
        let base = if base.is_empty() { "v" } else { base };
        if self.used.insert(base.to_string()) {
            return base.to_string();
        }
        let next = self.suffix.entry(base.to_string()).or_insert(1);
        loop {
            let candidate = format!("{base}_{next}");
            *next += 1;
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    /// Makes the model's local functions callable.
    pub(crate) fn with_functions(mut self, functions: Functions<'a>) -> Importer<'a> {
        self.functions = functions;
        self
    }

    fn top(&mut self) -> &mut GraphState {
        self.stack.last_mut().expect("a graph is being imported")
    }

    /// Defines ONNX name `name` in the current graph as a new value of type `ty`.
    fn define(&mut self, name: &str, ty: ValueType) -> ValueId {
        let ir_name = if self.reserved.remove(name) {
            name.to_string()
        } else {
            self.unique(name)
        };
        let top = self.top();
        let id = top.graph.add_value(ir_name, ty);
        if !name.is_empty() {
            top.names.insert(name.to_string(), id);
        }
        id
    }

    /// Defines ONNX name `name` in the current graph as a constant.
    fn define_constant(&mut self, name: &str, tensor: Arc<Tensor>) -> ValueId {
        let ir_name = self.unique(name);
        let top = self.top();
        let id = top.graph.add_constant(ir_name, tensor);
        top.names.insert(name.to_string(), id);
        id
    }

    /// Resolves an ONNX name in the current graph, capturing it from an enclosing graph if needed.
    fn lookup(&mut self, name: &str) -> Option<ValueId> {
        let top = self.stack.len().checked_sub(1)?;
        if let Some(&id) = self.stack[top].names.get(name) {
            return Some(id);
        }
        let level = (0..top)
            .rev()
            .find(|&l| self.stack[l].names.contains_key(name))?;
        let outer = self.stack[level]
            .graph
            .value(self.stack[level].names[name])
            .clone();
        let mut id = ValueId(0);
        for state in &mut self.stack[level + 1..] {
            id = match &outer.constant {
                // Constants are copied so inference inside the subgraph sees their values.
                Some(t) => state.graph.add_constant(outer.name.clone(), t.clone()),
                None => {
                    let id = state.graph.add_value(outer.name.clone(), outer.ty.clone());
                    state.graph.captures.push(id);
                    id
                }
            };
            state.names.insert(name.to_string(), id);
        }
        Some(id)
    }

    fn value_type_of(&self, name: &str) -> Option<ValueType> {
        self.stack
            .iter()
            .rev()
            .find_map(|s| s.names.get(name).map(|&id| s.graph.value(id).ty.clone()))
    }

    /// Converts an ONNX type; missing dims get fresh symbols, a missing shape an unknown rank.
    fn convert_type(&mut self, t: &proto::TypeProto, what: &str) -> Result<ValueType, ImportError> {
        self.convert_type_depth(t, what, 0)
    }

    fn convert_type_depth(
        &mut self,
        t: &proto::TypeProto,
        what: &str,
        depth: usize,
    ) -> Result<ValueType, ImportError> {
        if depth > MAX_DEPTH {
            return Err(ImportError::Invalid(format!(
                "{what}: type nests too deeply"
            )));
        }
        let inner = |this: &mut Self, e: &Option<Box<proto::TypeProto>>| match e {
            Some(e) => this.convert_type_depth(e, what, depth + 1),
            None => Err(ImportError::Invalid(format!(
                "{what}: element type is missing"
            ))),
        };
        match &t.value {
            Some(type_proto::Value::TensorType(tt)) => {
                let dtype = super::tensor::dtype_of(tt.elem_type, what)?;
                let shape = tt
                    .shape
                    .as_ref()
                    .map(|s| s.dim.iter().map(|d| self.convert_dim(d)).collect());
                Ok(ValueType::Tensor(TensorType { dtype, shape }))
            }
            Some(type_proto::Value::SequenceType(s)) => {
                Ok(ValueType::Sequence(Box::new(inner(self, &s.elem_type)?)))
            }
            Some(type_proto::Value::OptionalType(o)) => {
                Ok(ValueType::Optional(Box::new(inner(self, &o.elem_type)?)))
            }
            Some(type_proto::Value::MapType(_)) => Err(ImportError::Invalid(format!(
                "{what}: map types are not supported"
            ))),
            Some(type_proto::Value::SparseTensorType(_)) => Err(ImportError::Invalid(format!(
                "{what}: sparse tensor types are not supported"
            ))),
            Some(type_proto::Value::OpaqueType(_)) => Err(ImportError::Invalid(format!(
                "{what}: opaque types are not supported"
            ))),
            None => Err(ImportError::Invalid(format!("{what}: the type is missing"))),
        }
    }

    fn convert_dim(&mut self, d: &proto::tensor_shape_proto::Dimension) -> Dim {
        use proto::tensor_shape_proto::dimension::Value;
        match &d.value {
            Some(Value::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => self.syms.fresh("unk"),
        }
    }

    /// Imports the main graph.
    pub(crate) fn import_main(&mut self, g: &proto::GraphProto) -> Result<Graph, ImportError> {
        self.import_graph(g, &[])
    }

    /// Imports a graph; `hints` are types for inputs that declare none (from the node that owns a subgraph).
    fn import_graph(
        &mut self,
        g: &proto::GraphProto,
        hints: &[Option<ValueType>],
    ) -> Result<Graph, ImportError> {
        if self.stack.len() > MAX_DEPTH {
            return Err(ImportError::Invalid(format!(
                "subgraphs nest deeper than {MAX_DEPTH} levels"
            )));
        }
        self.stack.push(GraphState {
            graph: Graph::new(g.name.clone()),
            names: HashMap::new(),
            declared: HashMap::new(),
        });
        let result = self.import_graph_body(g, hints);
        let state = self.stack.pop().expect("pushed above");
        result.map(|()| state.graph)
    }

    fn import_graph_body(
        &mut self,
        g: &proto::GraphProto,
        hints: &[Option<ValueType>],
    ) -> Result<(), ImportError> {
        let gname = if g.name.is_empty() {
            "<graph>"
        } else {
            g.name.as_str()
        };
        // Declared types, used to refine inference.
        for vi in g.value_info.iter().chain(&g.output) {
            if let Some(t) = &vi.r#type {
                match self.convert_type(t, &format!("value `{}`", vi.name)) {
                    Ok(ty) => {
                        self.top().declared.insert(vi.name.clone(), ty);
                    }
                    Err(e) => tracing::debug!("ignoring the declared type of `{}`: {e}", vi.name),
                }
            }
        }
        // Initializers are constants, even when also listed as inputs.
        let mut initialized = HashSet::new();
        for t in &g.initializer {
            let tensor = tensor_from_proto(t, self.base_dir)?;
            if t.name.is_empty() {
                return Err(ImportError::Invalid(format!(
                    "graph `{gname}` has an initializer without a name"
                )));
            }
            initialized.insert(t.name.clone());
            self.define_constant(&t.name, Arc::new(tensor));
        }
        for s in &g.sparse_initializer {
            let tensor = sparse_to_dense(s, self.base_dir)?;
            let name = s
                .values
                .as_ref()
                .map(|v| v.name.clone())
                .unwrap_or_default();
            if name.is_empty() {
                return Err(ImportError::Invalid(format!(
                    "graph `{gname}` has a sparse initializer without a name"
                )));
            }
            initialized.insert(name.clone());
            self.define_constant(&name, Arc::new(tensor));
        }
        for (k, vi) in g.input.iter().enumerate() {
            if initialized.contains(&vi.name) {
                continue;
            }
            let what = format!("input `{}` of graph `{gname}`", vi.name);
            let hint = hints.get(k).cloned().flatten();
            let declared = match &vi.r#type {
                Some(t) if t.value.is_some() => match self.convert_type(t, &what) {
                    Ok(d) => Some(d),
                    // A subgraph input whose declared type is incomplete (no element type) takes the owner's.
                    Err(_) if hint.is_some() => None,
                    Err(e) => return Err(e),
                },
                _ => None,
            };
            let ty = match (declared, hint) {
                (Some(d), Some(h)) => refine(&h, &d, &vi.name),
                (Some(d), None) => d,
                (None, Some(h)) => h,
                (None, None) => {
                    return Err(ImportError::Invalid(format!("{what} has no type")));
                }
            };
            let id = self.define(&vi.name, ty);
            self.top().graph.inputs.push(id);
        }
        for i in topo_order(g)? {
            self.import_node(&g.node[i])?;
        }
        for vi in &g.output {
            let id = self.lookup(&vi.name).ok_or_else(|| {
                ImportError::Invalid(format!(
                    "output `{}` of graph `{gname}` is never defined",
                    vi.name
                ))
            })?;
            self.top().graph.outputs.push(id);
        }
        Ok(())
    }

    fn import_node(&mut self, n: &proto::NodeProto) -> Result<(), ImportError> {
        let name = if n.name.is_empty() {
            self.unnamed += 1;
            format!("{}_{}", n.op_type, self.unnamed - 1)
        } else {
            n.name.clone()
        };
        let op_type = n.op_type.as_str();
        if let Some(&f) = self.functions.get(&function::call_key(n)) {
            return self.import_call(n, f, &name);
        }
        if op_type == "Constant" {
            return self.import_constant(n, &name);
        }
        let hints = self.subgraph_hints(n);
        let mut attrs = Attrs::new();
        for a in &n.attribute {
            let v = self.convert_attr(a, &hints).map_err(|e| match e {
                e @ (ImportError::Node { .. } | ImportError::Infer { .. }) => e,
                e => node_err(&name, op_type, format!("attribute `{}`: {e}", a.name)),
            })?;
            attrs.insert(a.name.clone(), v);
        }
        let inputs = n
            .input
            .iter()
            .map(|s| if s.is_empty() { None } else { Some(s.clone()) })
            .collect();
        let node = OnnxNode::new(name.clone(), op_type, inputs, n.output.clone(), attrs);
        let opset = self.opset;
        let nodes = upgrade::upgrade(node, opset, &mut UpCx(self))
            .map_err(|why| node_err(&name, op_type, why))?;
        for node in nodes {
            self.build_node(node)?;
        }
        Ok(())
    }

    /// Expands a call of a model-local function and imports the body's nodes.
    fn import_call(
        &mut self,
        n: &proto::NodeProto,
        f: &'a proto::FunctionProto,
        name: &str,
    ) -> Result<(), ImportError> {
        if self.call_depth >= MAX_DEPTH {
            return Err(node_err(
                name,
                &n.op_type,
                format!("function calls nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        let prefix = self.unique(&format!("{name}/"));
        let body =
            function::expand_call(f, n, &prefix).map_err(|why| node_err(name, &n.op_type, why))?;
        let saved = self.opset;
        self.opset = function::function_opset(f).unwrap_or(saved);
        self.call_depth += 1;
        let result = body.iter().try_for_each(|b| self.import_node(b));
        self.call_depth -= 1;
        self.opset = saved;
        result
    }

    /// Types for the inputs of the subgraphs of `n`, for subgraph inputs that declare none.
    fn subgraph_hints(&mut self, n: &proto::NodeProto) -> Vec<Option<ValueType>> {
        let input_ty = |this: &Self, i: usize| -> Option<ValueType> {
            n.input
                .get(i)
                .filter(|s| !s.is_empty())
                .and_then(|s| this.value_type_of(s))
        };
        let int_attr = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.i);
        match n.op_type.as_str() {
            "Loop" => {
                let mut h = vec![
                    Some(TensorType::known(DType::I64, &[]).into()),
                    Some(TensorType::known(DType::Bool, &[]).into()),
                ];
                h.extend((2..n.input.len()).map(|i| input_ty(self, i)));
                h
            }
            // Before opset 9 Scan inputs carried a batch axis the body does not see: no hints.
            "Scan" if self.opset >= 9 => {
                let m = int_attr("num_scan_inputs").unwrap_or(0).max(0) as usize;
                let total = n.input.len();
                let states = total.saturating_sub(m);
                let axes: Vec<i64> = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "scan_input_axes")
                    .map(|a| a.ints.clone())
                    .unwrap_or_default();
                let mut h: Vec<Option<ValueType>> =
                    (0..states).map(|i| input_ty(self, i)).collect();
                for (k, i) in (states..total).enumerate() {
                    let axis = axes.get(k).copied().unwrap_or(0);
                    h.push(input_ty(self, i).map(|t| remove_axis(&t, axis)));
                }
                h
            }
            "SequenceMap" => (0..n.input.len())
                .map(|i| match input_ty(self, i) {
                    Some(ValueType::Sequence(e)) => Some(*e),
                    other => other,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn import_constant(&mut self, n: &proto::NodeProto, name: &str) -> Result<(), ImportError> {
        let err = |why: String| node_err(name, "Constant", why);
        let [attr] = n.attribute.as_slice() else {
            return Err(err(format!(
                "a Constant needs exactly one value attribute, got {}",
                n.attribute.len()
            )));
        };
        let t = match attr.name.as_str() {
            "value" => {
                let t = attr
                    .t
                    .as_ref()
                    .ok_or_else(|| err("`value` is not a tensor".into()))?;
                tensor_from_proto(t, self.base_dir)?
            }
            "sparse_value" => {
                let s = attr
                    .sparse_tensor
                    .as_ref()
                    .ok_or_else(|| err("`sparse_value` is not a sparse tensor".into()))?;
                sparse_to_dense(s, self.base_dir)?
            }
            "value_float" => Tensor::scalar(attr.f),
            "value_floats" => Tensor::vector(attr.floats.clone()),
            "value_int" => Tensor::scalar(attr.i),
            "value_ints" => Tensor::vector(attr.ints.clone()),
            "value_string" => Tensor::scalar(String::from_utf8_lossy(&attr.s).into_owned()),
            "value_strings" => Tensor::vector(
                attr.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>(),
            ),
            other => return Err(err(format!("unknown attribute `{other}`"))),
        };
        let [out] = n.output.as_slice() else {
            return Err(err(format!(
                "a Constant has one output, got {}",
                n.output.len()
            )));
        };
        self.define_constant(out, Arc::new(t));
        Ok(())
    }

    fn convert_attr(
        &mut self,
        a: &proto::AttributeProto,
        hints: &[Option<ValueType>],
    ) -> Result<Attr, ImportError> {
        if !a.ref_attr_name.is_empty() {
            return Err(ImportError::Invalid(format!(
                "refers to function attribute `{}` outside a function",
                a.ref_attr_name
            )));
        }
        let ty = AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined);
        let ty = if ty == AttributeType::Undefined {
            guess_attr_type(a)
        } else {
            ty
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(match ty {
            AttributeType::Float => Attr::Float(a.f),
            AttributeType::Int => Attr::Int(a.i),
            AttributeType::String => Attr::String(text(&a.s)),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
            AttributeType::Tensor => {
                let t =
                    a.t.as_ref()
                        .ok_or_else(|| ImportError::Invalid("the tensor is missing".into()))?;
                Attr::Tensor(Arc::new(tensor_from_proto(t, self.base_dir)?))
            }
            AttributeType::SparseTensor => {
                let s = a
                    .sparse_tensor
                    .as_ref()
                    .ok_or_else(|| ImportError::Invalid("the sparse tensor is missing".into()))?;
                Attr::Tensor(Arc::new(sparse_to_dense(s, self.base_dir)?))
            }
            AttributeType::Tensors => Attr::Tensors(
                a.tensors
                    .iter()
                    .map(|t| tensor_from_proto(t, self.base_dir).map(Arc::new))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::SparseTensors => Attr::Tensors(
                a.sparse_tensors
                    .iter()
                    .map(|t| sparse_to_dense(t, self.base_dir).map(Arc::new))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::Graph => {
                let g =
                    a.g.as_ref()
                        .ok_or_else(|| ImportError::Invalid("the graph is missing".into()))?;
                let branch = matches!(a.name.as_str(), "then_branch" | "else_branch");
                self.if_depth += usize::from(branch);
                let g = self.import_graph(g, hints);
                self.if_depth -= usize::from(branch);
                Attr::Graph(Arc::new(g?))
            }
            AttributeType::Graphs => Attr::Graphs(
                a.graphs
                    .iter()
                    .map(|g| self.import_graph(g, hints).map(Arc::new))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::TypeProto => {
                let t =
                    a.tp.as_ref()
                        .ok_or_else(|| ImportError::Invalid("the type is missing".into()))?;
                Attr::Type(self.convert_type(t, &format!("attribute `{}`", a.name))?)
            }
            AttributeType::TypeProtos => Attr::Types(
                a.type_protos
                    .iter()
                    .map(|t| self.convert_type(t, &format!("attribute `{}`", a.name)))
                    .collect::<Result<_, _>>()?,
            ),
            AttributeType::Undefined => {
                return Err(ImportError::Invalid("the attribute has no value".into()));
            }
        })
    }

    /// Builds one upgraded node: the IR op, its inputs and outputs, and its inferred (and refined) output types.
    fn build_node(&mut self, n: OnnxNode) -> Result<(), ImportError> {
        let op = match Op::from_attrs(&n.op_type, n.attrs) {
            Ok(Some(op)) if !op.is_jiuzhou_own() => op,
            Ok(_) => {
                return Err(ImportError::UnsupportedOps(vec![UnsupportedOp {
                    node: n.name,
                    op_type: n.op_type,
                    domain: "ai.onnx".into(),
                    opset: self.opset,
                }]));
            }
            Err(e) => return Err(node_err(&n.name, &n.op_type, e.to_string())),
        };
        let mut inputs = Vec::with_capacity(n.inputs.len());
        for i in &n.inputs {
            inputs.push(match i {
                None => None,
                Some(s) => Some(self.lookup(s).ok_or_else(|| {
                    node_err(&n.name, &n.op_type, format!("input `{s}` is never defined"))
                })?),
            });
        }
        // Trailing absent inputs are the same as not given.
        while matches!(inputs.last(), Some(None)) {
            inputs.pop();
        }
        let state = self.stack.last().expect("a graph is being imported");
        let tys: Vec<Option<ValueType>> = inputs
            .iter()
            .map(|i| i.map(|id| state.graph.value(id).ty.clone()))
            .collect();
        let consts: Vec<Option<Arc<Tensor>>> = inputs
            .iter()
            .map(|i| i.and_then(|id| state.graph.value(id).constant.clone()))
            .collect();
        let mut cx = InferCx {
            inputs: &tys,
            consts: &consts,
            num_outputs: n.outputs.len(),
            syms: &mut self.syms,
        };
        let infer_err = |why: String| ImportError::Infer {
            node: n.name.clone(),
            op: op.name(),
            why,
        };
        let out_tys = match op.infer(&mut cx) {
            Ok(t) => t,
            // Which If branch runs is only known at run time, and exporters emit branches that are invalid for
            // the shapes at hand but never taken (a Split into 4 of a 5-element shape in the 3-D branch of
            // AffineGrid). Such a node gets outputs of unknown rank with its first input's dtype; it fails at run
            // time if the branch is ever taken.
            Err(e) if self.if_depth > 0 => {
                let dtype = tys
                    .iter()
                    .flatten()
                    .find_map(|t| t.dtype())
                    .ok_or_else(|| infer_err(e.0.clone()))?;
                tracing::warn!(
                    "node `{}` ({}) in an If branch: {}; its outputs get unknown shapes",
                    n.name,
                    op.name(),
                    e.0
                );
                vec![TensorType::unranked(dtype).into(); n.outputs.len()]
            }
            Err(e) => return Err(infer_err(e.0)),
        };
        if out_tys.len() < n.outputs.len() {
            return Err(infer_err(format!(
                "the op gives {} outputs but the node names {}",
                out_tys.len(),
                n.outputs.len()
            )));
        }
        let mut outputs = Vec::with_capacity(n.outputs.len());
        for (k, (oname, ty)) in n.outputs.iter().zip(out_tys).enumerate() {
            let ty = match self.top().declared.get(oname) {
                Some(d) if !oname.is_empty() => refine(&ty, d, oname),
                _ => ty,
            };
            let id = if oname.is_empty() {
                let hint = format!("{}_unused_{k}", n.name);
                let ir_name = self.unique(&hint);
                self.top().graph.add_value(ir_name, ty)
            } else {
                self.define(oname, ty)
            };
            outputs.push(id);
        }
        self.top().graph.nodes.push(Node {
            name: n.name,
            op,
            inputs,
            outputs,
        });
        Ok(())
    }
}

#[cfg(test)]
impl Importer<'_> {
    /// Pushes an enclosing graph whose values subgraphs may capture.
    pub(crate) fn push_for_test(&mut self, graph: Graph, names: HashMap<String, ValueId>) {
        for v in &graph.values {
            self.used.insert(v.name.clone());
        }
        self.stack.push(GraphState {
            graph,
            names,
            declared: HashMap::new(),
        });
    }

    /// Pushes an empty graph named after `g`, as if its nodes were being imported.
    pub(crate) fn push_subgraph_for_test(&mut self, g: &proto::GraphProto) {
        self.stack.push(GraphState {
            graph: Graph::new(g.name.clone()),
            names: HashMap::new(),
            declared: HashMap::new(),
        });
    }

    /// Pops the innermost graph.
    pub(crate) fn pop_for_test(&mut self) -> Graph {
        self.stack.pop().expect("a graph was pushed").graph
    }

    /// Converts one attribute in the current scope.
    pub(crate) fn convert_attr_for_test(
        &mut self,
        a: &proto::AttributeProto,
    ) -> Result<Attr, ImportError> {
        self.convert_attr(a, &[])
    }

    /// Imports a subgraph of the current graph.
    pub(crate) fn import_subgraph_for_test(
        &mut self,
        g: &proto::GraphProto,
    ) -> Result<Graph, ImportError> {
        self.import_graph(g, &[])
    }

    /// Imports a subgraph with input type hints.
    pub(crate) fn import_subgraph_with_hints_for_test(
        &mut self,
        g: &proto::GraphProto,
        hints: &[Option<ValueType>],
    ) -> Result<Graph, ImportError> {
        self.import_graph(g, hints)
    }

    /// The input type hints `n` gives its subgraphs.
    pub(crate) fn hints_for_test(&mut self, n: &proto::NodeProto) -> Vec<Option<ValueType>> {
        self.subgraph_hints(n)
    }
}

/// Gives upgrades access to the graph being imported.
struct UpCx<'i, 'a>(&'i mut Importer<'a>);

impl UpgradeCx for UpCx<'_, '_> {
    fn constant(&mut self, hint: &str, tensor: Tensor) -> String {
        let name = self.0.unique(hint);
        let top = self.0.top();
        let id = top.graph.add_constant(name.clone(), Arc::new(tensor));
        top.names.insert(name.clone(), id);
        name
    }

    fn fresh_name(&mut self, hint: &str) -> String {
        // Reserved now so nothing else takes it; `define` uses it as is.
        let name = self.0.unique(hint);
        self.0.reserved.insert(name.clone());
        name
    }

    fn value_type(&self, name: &str) -> Option<ValueType> {
        self.0.value_type_of(name)
    }

    fn constant_value(&self, name: &str) -> Option<Arc<Tensor>> {
        self.0.stack.iter().rev().find_map(|s| {
            s.names
                .get(name)
                .map(|&id| s.graph.value(id).constant.clone())
        })?
    }
}

/// The attribute type of an attribute that does not say (models from before IR version 2).
fn guess_attr_type(a: &proto::AttributeProto) -> AttributeType {
    if a.g.is_some() {
        AttributeType::Graph
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.sparse_tensor.is_some() {
        AttributeType::SparseTensor
    } else if a.tp.is_some() {
        AttributeType::TypeProto
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.s.is_empty() {
        AttributeType::String
    } else if a.f != 0.0 {
        AttributeType::Float
    } else {
        AttributeType::Int
    }
}

/// The type of one slice of a scan input along `axis`.
fn remove_axis(t: &ValueType, axis: i64) -> ValueType {
    match t {
        ValueType::Tensor(TensorType {
            dtype,
            shape: Some(dims),
        }) => {
            let r = dims.len() as i64;
            let a = if axis < 0 { axis + r } else { axis };
            if a < 0 || a >= r {
                return TensorType::unranked(*dtype).into();
            }
            let mut dims = dims.clone();
            dims.remove(a as usize);
            TensorType::new(*dtype, dims).into()
        }
        other => other.clone(),
    }
}

/// Combines an inferred type with a declared one: the declared type fills in what inference left unknown.
/// A conflict between two known facts keeps the inferred one and logs a warning.
pub(crate) fn refine(inferred: &ValueType, declared: &ValueType, name: &str) -> ValueType {
    match (inferred, declared) {
        (ValueType::Tensor(i), ValueType::Tensor(d)) => {
            if i.dtype != d.dtype {
                tracing::warn!(
                    "value `{name}`: inferred type {i} conflicts with the declared {d}; keeping {i}"
                );
                return inferred.clone();
            }
            let shape = match (&i.shape, &d.shape) {
                (None, s) => s.clone(),
                (s, None) => s.clone(),
                (Some(a), Some(b)) if a.len() != b.len() => {
                    tracing::warn!(
                        "value `{name}`: inferred type {i} conflicts with the declared {d}; keeping {i}"
                    );
                    Some(a.clone())
                }
                (Some(a), Some(b)) => Some(
                    a.iter()
                        .zip(b)
                        .map(|(x, y)| match (x, y) {
                            (Dim::Known(p), Dim::Known(q)) if p != q => {
                                tracing::warn!(
                                    "value `{name}`: inferred type {i} conflicts with the declared {d}; keeping {i}"
                                );
                                x.clone()
                            }
                            (Dim::Sym(_), Dim::Known(_)) => y.clone(),
                            _ => x.clone(),
                        })
                        .collect(),
                ),
            };
            ValueType::Tensor(TensorType {
                dtype: i.dtype,
                shape,
            })
        }
        (ValueType::Sequence(i), ValueType::Sequence(d)) => {
            ValueType::Sequence(Box::new(refine(i, d, name)))
        }
        (ValueType::Optional(i), ValueType::Optional(d)) => {
            ValueType::Optional(Box::new(refine(i, d, name)))
        }
        _ => {
            tracing::warn!(
                "value `{name}`: inferred type {inferred} conflicts with the declared {declared}; keeping {inferred}"
            );
            inferred.clone()
        }
    }
}

/// The order to import the nodes of `g` in: the file's order when it is topological (it should be), otherwise a
/// stable topological sort. Names used inside subgraphs count as inputs of the node that owns them.
fn topo_order(g: &proto::GraphProto) -> Result<Vec<usize>, ImportError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            if !o.is_empty() {
                producer.entry(o.as_str()).or_insert(i);
            }
        }
    }
    let deps: Vec<Vec<usize>> = g
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut names: Vec<&str> = n.input.iter().map(String::as_str).collect();
            for a in &n.attribute {
                for sg in a.g.iter().chain(&a.graphs) {
                    subgraph_refs(sg, &mut names, 0);
                }
            }
            let mut d: Vec<usize> = names
                .iter()
                .filter_map(|s| producer.get(s).copied())
                .filter(|&p| p != i)
                .collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    if deps
        .iter()
        .enumerate()
        .all(|(i, d)| d.iter().all(|&p| p < i))
    {
        return Ok((0..g.node.len()).collect());
    }
    // Iterative DFS post-order, visiting nodes in file order.
    let n = g.node.len();
    let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
    let mut order = Vec::with_capacity(n);
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some((v, k)) = stack.pop() {
            if let Some(&p) = deps[v].get(k) {
                stack.push((v, k + 1));
                match state[p] {
                    0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    1 => {
                        return Err(ImportError::Invalid(format!(
                            "graph `{}` has a cycle through node `{}` ({})",
                            g.name, g.node[p].name, g.node[p].op_type
                        )));
                    }
                    _ => {}
                }
            } else {
                state[v] = 2;
                order.push(v);
            }
        }
    }
    Ok(order)
}

/// Collects every name a subgraph reads (its nodes' inputs and outputs, recursively).
fn subgraph_refs<'g>(g: &'g proto::GraphProto, out: &mut Vec<&'g str>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for n in &g.node {
        out.extend(n.input.iter().map(String::as_str));
        for a in &n.attribute {
            for sg in a.g.iter().chain(&a.graphs) {
                subgraph_refs(sg, out, depth + 1);
            }
        }
    }
    out.extend(g.output.iter().map(|o| o.name.as_str()));
}
