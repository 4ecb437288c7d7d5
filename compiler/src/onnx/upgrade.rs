//! Opset upgrades: older ONNX forms rewritten into the newest form the IR declares.
//!
//! The IR's op table follows the newest opset. A model written against an older opset is brought forward node by
//! node before its ops are built: attributes that later became inputs are turned into constant inputs, removed
//! attributes are dropped (or rejected when they change the meaning), ops whose semantics changed are rewritten into
//! equivalent node sequences, and deprecated ops are rewritten into core ops (`Upsample` into `Resize`, `Scatter` into
//! `ScatterElements`).

use jiuzhou_ir::{Attr, Attrs, DType, Tensor, ValueType};

/// A node at the ONNX level, after its attributes were converted but before its op is built.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxNode {
    /// Node name (never empty: the importer names unnamed nodes).
    pub name: String,
    /// ONNX op type.
    pub op_type: String,
    /// Input names; `None` is an absent optional input.
    pub inputs: Vec<Option<String>>,
    /// Output names; an empty name is an output the model does not use.
    pub outputs: Vec<String>,
    /// Attributes.
    pub attrs: Attrs,
}

#[allow(dead_code)] // Helpers for the upgrades being written.
impl OnnxNode {
    /// A node with attributes `attrs`, named `name`.
    pub fn new(
        name: impl Into<String>,
        op_type: &str,
        inputs: Vec<Option<String>>,
        outputs: Vec<String>,
        attrs: Attrs,
    ) -> OnnxNode {
        OnnxNode {
            name: name.into(),
            op_type: op_type.to_string(),
            inputs,
            outputs,
            attrs,
        }
    }

    fn input(&self, i: usize) -> Option<&str> {
        self.inputs.get(i).and_then(|s| s.as_deref())
    }

    /// Sets input `i`, padding with absent inputs.
    fn set_input(&mut self, i: usize, name: Option<String>) {
        if self.inputs.len() <= i {
            self.inputs.resize(i + 1, None);
        }
        self.inputs[i] = name;
    }

    fn take_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attrs.remove(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(vec![v])),
            Some(other) => Err(format!(
                "attribute `{name}` should be ints, got {}",
                other.kind()
            )),
        }
    }

    fn take_floats(&mut self, name: &str) -> Result<Option<Vec<f32>>, String> {
        match self.attrs.remove(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(Attr::Float(v)) => Ok(Some(vec![v])),
            Some(Attr::Ints(v)) => Ok(Some(v.into_iter().map(|x| x as f32).collect())),
            Some(other) => Err(format!(
                "attribute `{name}` should be floats, got {}",
                other.kind()
            )),
        }
    }

    fn take_float(&mut self, name: &str) -> Result<Option<f32>, String> {
        match self.attrs.remove(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(v as f32)),
            Some(other) => Err(format!(
                "attribute `{name}` should be a float, got {}",
                other.kind()
            )),
        }
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }

    fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// What an upgrade may ask of the graph being imported.
pub trait UpgradeCx {
    /// Adds a constant and returns the name to use as an input.
    fn constant(&mut self, hint: &str, tensor: Tensor) -> String;
    /// A fresh name for an intermediate value.
    fn fresh_name(&mut self, hint: &str) -> String;
    /// The static type of a value defined so far.
    fn value_type(&self, name: &str) -> Option<ValueType>;
}

/// ONNX op types that are not IR ops but that the upgrader rewrites into IR ops.
pub const REWRITTEN_OPS: &[&str] = &["Upsample", "Scatter"];

/// Rewrites `node`, written against default-domain `opset`, into nodes of the newest form.
pub fn upgrade(
    mut node: OnnxNode,
    opset: i64,
    cx: &mut dyn UpgradeCx,
) -> Result<Vec<OnnxNode>, String> {
    // `consumed_inputs` (opsets 1-5) only described in-place buffer reuse.
    node.attrs.remove("consumed_inputs");
    match node.op_type.as_str() {
        "Reshape" if opset < 5 => {
            attr_to_input(&mut node, cx, "shape", 1, DType::I64)?;
        }
        "Squeeze" | "Unsqueeze" if opset < 13 => {
            attr_to_input(&mut node, cx, "axes", 1, DType::I64)?;
        }
        "ReduceSum" if opset < 13 => {
            attr_to_input(&mut node, cx, "axes", 1, DType::I64)?;
        }
        "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
        | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare"
            if opset < 18 =>
        {
            attr_to_input(&mut node, cx, "axes", 1, DType::I64)?;
        }
        "Split" if opset < 13 => {
            attr_to_input(&mut node, cx, "split", 1, DType::I64)?;
        }
        "Scatter" => node.op_type = "ScatterElements".into(),
        _ => {}
    }
    Ok(vec![node])
}

/// Moves ints attribute `attr` (if present) to input `index` as a 1-D constant of `dtype`.
fn attr_to_input(
    node: &mut OnnxNode,
    cx: &mut dyn UpgradeCx,
    attr: &str,
    index: usize,
    dtype: DType,
) -> Result<(), String> {
    let Some(values) = node.take_ints(attr)? else {
        return Ok(());
    };
    let t = match dtype {
        DType::I64 => Tensor::vector(values),
        _ => return Err(format!("cannot move `{attr}` to a {dtype} input")),
    };
    let name = cx.constant(&format!("{}_{attr}", node.name), t);
    node.set_input(index, Some(name));
    Ok(())
}
