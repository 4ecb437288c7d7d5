//! Opset upgrades: older ONNX forms rewritten into the newest form the IR declares.
//!
//! The IR's op table follows the newest opset. A model written against an older opset is brought forward node by
//! node before its ops are built: attributes that later became inputs are turned into constant inputs, removed
//! attributes are dropped (or rejected when they change the meaning), ops whose semantics changed are rewritten into
//! equivalent node sequences, and deprecated ops are rewritten into core ops (`Upsample` into `Resize`, `Scatter` into
//! `ScatterElements`).

use std::sync::Arc;

use half::{bf16, f16};
use jiuzhou_ir::{Attr, Attrs, DType, Dim, Tensor, ValueType};

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

    fn take_int(&mut self, name: &str) -> Result<Option<i64>, String> {
        match self.attrs.remove(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(v)),
            Some(other) => Err(format!(
                "attribute `{name}` should be int, got {}",
                other.kind()
            )),
        }
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
    /// The data of a value defined so far, if it is a constant.
    fn constant_value(&self, name: &str) -> Option<Arc<Tensor>>;
}

/// ONNX op types that are not IR ops but that the upgrader rewrites into IR ops.
pub const REWRITTEN_OPS: &[&str] = &["Upsample", "Scatter"];

/// Ops that had the legacy `broadcast`/`axis` attributes before opset 7.
const LEGACY_BROADCAST: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less", "PRelu",
];

/// Rewrites `node`, written against default-domain `opset`, into nodes of the newest form.
pub fn upgrade(
    mut node: OnnxNode,
    opset: i64,
    cx: &mut dyn UpgradeCx,
) -> Result<Vec<OnnxNode>, String> {
    // `consumed_inputs` (opsets 1-5) only described in-place buffer reuse.
    node.attrs.remove("consumed_inputs");
    let op = node.op_type.clone();
    let mut before = Vec::new();
    match op.as_str() {
        o if opset < 7 && LEGACY_BROADCAST.contains(&o) => {
            if let Some(n) = legacy_broadcast(&mut node, cx)? {
                before.push(n);
            }
        }
        "Reshape" if opset < 5 => attr_to_input(&mut node, cx, "shape", 1)?,
        "Squeeze" | "Unsqueeze" | "ReduceSum" if opset < 13 => {
            attr_to_input(&mut node, cx, "axes", 1)?
        }
        "ReduceL1" | "ReduceL2" | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceMax"
        | "ReduceMean" | "ReduceMin" | "ReduceProd" | "ReduceSumSquare"
            if opset < 18 =>
        {
            attr_to_input(&mut node, cx, "axes", 1)?
        }
        "Split" => {
            if opset < 13 {
                attr_to_input(&mut node, cx, "split", 1)?;
            }
            if opset < 18 && node.input(1).is_none() && !node.attrs.contains_key("num_outputs") {
                node.attrs
                    .insert("num_outputs".into(), Attr::Int(node.outputs.len() as i64));
            }
        }
        "Slice" if opset < 10 => {
            attr_to_input(&mut node, cx, "starts", 1)?;
            attr_to_input(&mut node, cx, "ends", 2)?;
            attr_to_input(&mut node, cx, "axes", 3)?;
        }
        "TopK" if opset < 10 => attr_to_input(&mut node, cx, "k", 1)?,
        "Clip" if opset < 11 => {
            let dtype = input_dtype(&node, cx, 0).unwrap_or(DType::F32);
            for (attr, index) in [("min", 1), ("max", 2)] {
                if let Some(v) = node.take_float(attr)? {
                    let t = scalar_of(dtype, v as f64)
                        .ok_or_else(|| format!("Clip of {dtype} cannot take `{attr}`"))?;
                    let name = cx.constant(&format!("{}_{attr}", node.name), t);
                    node.set_input(index, Some(name));
                }
            }
        }
        "Pad" if opset < 11 => {
            let pads = match node.take_ints("pads")? {
                Some(p) => Some(p),
                None => node.take_ints("paddings")?,
            };
            let pads = pads.ok_or("Pad needs `pads`")?;
            let name = cx.constant(&format!("{}_pads", node.name), Tensor::vector(pads));
            node.set_input(1, Some(name));
            if let Some(v) = node.take_float("value")? {
                let dtype = input_dtype(&node, cx, 0).unwrap_or(DType::F32);
                if let Some(t) = scalar_of(dtype, v as f64) {
                    let name = cx.constant(&format!("{}_value", node.name), t);
                    node.set_input(2, Some(name));
                }
            }
        }
        "Dropout" => {
            node.attrs.remove("is_test");
            if opset < 12
                && let Some(r) = node.take_float("ratio")?
            {
                let name = cx.constant(&format!("{}_ratio", node.name), Tensor::scalar(r));
                node.set_input(1, Some(name));
            }
        }
        "BatchNormalization" => {
            node.attrs.remove("is_test");
            if let Some(spatial) = node.attrs.remove("spatial")
                && spatial != Attr::Int(1)
            {
                return Err("BatchNormalization with spatial=0 is not supported".into());
            }
            if opset < 14 {
                // Before opset 14 the statistics outputs only existed in training graphs; inference uses Y alone.
                node.outputs.truncate(1);
            }
        }
        "Gemm" if opset < 7 => {
            node.attrs.remove("broadcast");
        }
        "Softmax" | "LogSoftmax" | "Hardmax" if opset < 13 => {
            return coerce_to_2d(node, cx);
        }
        "Upsample" => upsample(&mut node, cx, opset)?,
        "Resize" => {
            if opset < 11 {
                // Resize-10 is Upsample-10 under a new name: X and scales, asymmetric coordinates.
                let scales = node.inputs.get(1).cloned().flatten();
                node.inputs = vec![node.inputs.first().cloned().flatten(), None, scales];
                node.attrs.insert(
                    "coordinate_transformation_mode".into(),
                    Attr::String("asymmetric".into()),
                );
                node.attrs
                    .insert("nearest_mode".into(), Attr::String("floor".into()));
            }
            // Opsets 11-12 required `roi` and `scales` even when unused; empty tensors mean absent.
            for i in 1..3 {
                let empty = node
                    .input(i)
                    .and_then(|n| cx.constant_value(n))
                    .is_some_and(|t| t.is_empty());
                if empty {
                    node.inputs[i] = None;
                }
            }
        }
        "Scatter" => node.op_type = "ScatterElements".into(),
        "Cast" if opset < 6 => {
            if let Some(Attr::String(to)) = node.attrs.get("to") {
                let code =
                    dtype_code_by_name(to).ok_or_else(|| format!("Cast to unknown type `{to}`"))?;
                node.attrs.insert("to".into(), Attr::Int(code));
            }
        }
        "Concat" if opset < 4 => {
            node.attrs.entry("axis".into()).or_insert(Attr::Int(1));
        }
        "LpPool" | "GlobalLpPool" if opset < 2 => {
            if let Some(Attr::Float(p)) = node.attrs.get("p") {
                let p = *p as i64;
                node.attrs.insert("p".into(), Attr::Int(p));
            }
        }
        "DFT" if opset < 20 => {
            let axis = node.take_int("axis")?.unwrap_or(1);
            let name = cx.constant(&format!("{}_axis", node.name), Tensor::scalar(axis));
            node.set_input(2, Some(name));
        }
        "GridSample" if opset < 20 => {
            let mode = match node.string("mode") {
                Some("bilinear") | None => "linear",
                Some("bicubic") => "cubic",
                Some(other) => other,
            }
            .to_string();
            node.attrs.insert("mode".into(), Attr::String(mode));
        }
        "GroupNormalization" if opset < 21 => group_norm_per_channel(&mut node, cx)?,
        "RNN" | "GRU" | "LSTM" if opset < 7 => {
            node.attrs.remove("output_sequence");
        }
        "Scan" if opset < 9 => return scan_8(node, cx),
        "Tile" if opset < 6 => tile_1(&mut node, cx)?,
        _ => {}
    }
    before.push(node);
    Ok(before)
}

/// The dtype of input `i`, if known.
fn input_dtype(node: &OnnxNode, cx: &dyn UpgradeCx, i: usize) -> Option<DType> {
    node.input(i)
        .and_then(|n| cx.value_type(n))
        .and_then(|t| t.dtype())
}

/// The dims of input `i`, if its rank is known.
fn input_dims(node: &OnnxNode, cx: &dyn UpgradeCx, i: usize) -> Option<Vec<Dim>> {
    match node.input(i).and_then(|n| cx.value_type(n)) {
        Some(ValueType::Tensor(t)) => t.shape,
        _ => None,
    }
}

/// A rank-0 tensor of `dtype` holding `v`; `None` for dtypes without numbers.
fn scalar_of(dtype: DType, v: f64) -> Option<Tensor> {
    Some(match dtype {
        DType::F32 => Tensor::scalar(v as f32),
        DType::F64 => Tensor::scalar(v),
        DType::F16 => Tensor::scalar(f16::from_f64(v)),
        DType::BF16 => Tensor::scalar(bf16::from_f64(v)),
        DType::I8 => Tensor::scalar(v as i8),
        DType::I16 => Tensor::scalar(v as i16),
        DType::I32 => Tensor::scalar(v as i32),
        DType::I64 => Tensor::scalar(v as i64),
        DType::U8 => Tensor::scalar(v as u8),
        DType::U16 => Tensor::scalar(v as u16),
        DType::U32 => Tensor::scalar(v as u32),
        DType::U64 => Tensor::scalar(v as u64),
        DType::Bool => Tensor::scalar(v != 0.0),
        _ => return None,
    })
}

/// The ONNX data type code for a `Cast`-1 type name (`"FLOAT"`, `"INT64"`, ...).
fn dtype_code_by_name(name: &str) -> Option<i64> {
    use super::proto::tensor_proto::DataType;
    let name = name.to_ascii_uppercase();
    (1..=28)
        .find(|&c| {
            DataType::try_from(c).is_ok_and(|d| format!("{d:?}").to_ascii_uppercase() == name)
        })
        .map(i64::from)
}

/// Moves ints attribute `attr` (if present) to input `index` as a 1-D i64 constant (a scalar for `k`).
fn attr_to_input(
    node: &mut OnnxNode,
    cx: &mut dyn UpgradeCx,
    attr: &str,
    index: usize,
) -> Result<(), String> {
    let Some(values) = node.take_ints(attr)? else {
        return Ok(());
    };
    let name = cx.constant(&format!("{}_{attr}", node.name), Tensor::vector(values));
    node.set_input(index, Some(name));
    Ok(())
}

/// Before opset 7, `broadcast=1` with `axis` aligned B's dims to A's starting at `axis`; numpy broadcasting aligns
/// them at the end. Unsqueezing B with trailing ones makes the two agree.
fn legacy_broadcast(
    node: &mut OnnxNode,
    cx: &mut dyn UpgradeCx,
) -> Result<Option<OnnxNode>, String> {
    node.attrs.remove("broadcast");
    let Some(axis) = node.attrs.remove("axis") else {
        return Ok(None);
    };
    let Attr::Int(axis) = axis else {
        return Err("attribute `axis` should be int".into());
    };
    let (Some(a), Some(b)) = (input_dims(node, cx, 0), input_dims(node, cx, 1)) else {
        return Err("legacy broadcasting with `axis` needs inputs of known rank".into());
    };
    let (ra, rb) = (a.len() as i64, b.len() as i64);
    let axis = if axis < 0 { axis + ra } else { axis };
    let trailing = ra - axis - rb;
    if axis < 0 || trailing < 0 {
        return Err(format!(
            "legacy broadcast axis {axis} does not fit ranks {ra} and {rb}"
        ));
    }
    if trailing == 0 {
        return Ok(None);
    }
    let b_name = node.input(1).unwrap_or_default().to_string();
    let axes = cx.constant(
        &format!("{}_axes", node.name),
        Tensor::vector((rb..rb + trailing).collect::<Vec<i64>>()),
    );
    let out = cx.fresh_name(&format!("{}_b", node.name));
    let unsqueeze = OnnxNode::new(
        format!("{}_unsqueeze", node.name),
        "Unsqueeze",
        vec![Some(b_name), Some(axes)],
        vec![out.clone()],
        Attrs::new(),
    );
    node.set_input(1, Some(out));
    Ok(Some(unsqueeze))
}

/// Softmax, LogSoftmax and Hardmax before opset 13 coerced the input to 2-D at `axis` (default 1) and normalized
/// over the second dimension. When the dims after `axis` are all 1 (or `axis` is the last one) that is the same as
/// the new per-axis form; otherwise the node becomes Flatten → op(axis=-1) → Reshape back to the input shape.
fn coerce_to_2d(mut node: OnnxNode, cx: &mut dyn UpgradeCx) -> Result<Vec<OnnxNode>, String> {
    let axis = node.take_int("axis")?.unwrap_or(1);
    let dims = input_dims(&node, cx, 0);
    if let Some(dims) = &dims {
        let r = dims.len() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a > r {
            return Err(format!("axis {axis} is out of range for rank {r}"));
        }
        if r == 0 {
            node.attrs.insert("axis".into(), Attr::Int(-1));
            return Ok(vec![node]);
        }
        let trailing_ones = dims[(a as usize).min(dims.len())..]
            .iter()
            .skip(1)
            .all(|d| *d == Dim::Known(1));
        if a < r && trailing_ones {
            node.attrs.insert("axis".into(), Attr::Int(a));
            return Ok(vec![node]);
        }
    }
    let x = node.input(0).ok_or("the input is missing")?.to_string();
    let out = node
        .outputs
        .first()
        .cloned()
        .ok_or("the output is missing")?;
    let base = node.name.clone();
    let mut nodes = Vec::new();
    // The shape to restore: a constant when fully known, else computed.
    let known: Option<Vec<i64>> = dims
        .as_ref()
        .and_then(|d| d.iter().map(|d| d.known().map(|n| n as i64)).collect());
    let shape = match known {
        Some(k) => cx.constant(&format!("{base}_shape"), Tensor::vector(k)),
        None => {
            let s = cx.fresh_name(&format!("{base}_shape"));
            nodes.push(OnnxNode::new(
                format!("{base}_shape"),
                "Shape",
                vec![Some(x.clone())],
                vec![s.clone()],
                Attrs::new(),
            ));
            s
        }
    };
    let flat = cx.fresh_name(&format!("{base}_flat"));
    let mut fattrs = Attrs::new();
    fattrs.insert("axis".into(), Attr::Int(axis));
    nodes.push(OnnxNode::new(
        format!("{base}_flatten"),
        "Flatten",
        vec![Some(x)],
        vec![flat.clone()],
        fattrs,
    ));
    let y2 = cx.fresh_name(&format!("{base}_2d"));
    node.inputs = vec![Some(flat)];
    node.outputs = vec![y2.clone()];
    node.attrs.insert("axis".into(), Attr::Int(-1));
    nodes.push(node);
    nodes.push(OnnxNode::new(
        format!("{base}_reshape"),
        "Reshape",
        vec![Some(y2), Some(shape)],
        vec![out],
        Attrs::new(),
    ));
    Ok(nodes)
}

/// `Upsample` (any opset) becomes `Resize` with asymmetric coordinates: output index `i` reads input `i / scale`,
/// rounded down in nearest mode.
fn upsample(node: &mut OnnxNode, cx: &mut dyn UpgradeCx, opset: i64) -> Result<(), String> {
    let mode = match node.attrs.remove("mode") {
        None => "nearest".to_string(),
        Some(Attr::String(m)) => m,
        Some(other) => {
            return Err(format!(
                "attribute `mode` should be a string, got {}",
                other.kind()
            ));
        }
    };
    let mode = match mode.as_str() {
        "bilinear" | "linear" => "linear",
        "nearest" => "nearest",
        other => return Err(format!("unknown Upsample mode `{other}`")),
    };
    let scales = if opset < 7 {
        let h = node
            .take_float("height_scale")?
            .ok_or("Upsample-1 needs `height_scale`")?;
        let w = node
            .take_float("width_scale")?
            .ok_or("Upsample-1 needs `width_scale`")?;
        Some(vec![1.0, 1.0, h, w])
    } else {
        node.take_floats("scales")?
    };
    let scales_input = match scales {
        Some(s) => Some(cx.constant(&format!("{}_scales", node.name), Tensor::vector(s))),
        None => node.inputs.get(1).cloned().flatten(),
    };
    let x = node.inputs.first().cloned().flatten();
    node.op_type = "Resize".into();
    node.inputs = vec![x, None, scales_input];
    node.attrs.insert("mode".into(), Attr::String(mode.into()));
    node.attrs.insert(
        "coordinate_transformation_mode".into(),
        Attr::String("asymmetric".into()),
    );
    if mode == "nearest" {
        node.attrs
            .insert("nearest_mode".into(), Attr::String("floor".into()));
    }
    Ok(())
}

/// GroupNormalization before opset 21 took one scale and bias per group; now they are per channel. Constant
/// per-group parameters are repeated `C / num_groups` times.
fn group_norm_per_channel(node: &mut OnnxNode, cx: &mut dyn UpgradeCx) -> Result<(), String> {
    let groups = node
        .int("num_groups")
        .ok_or("GroupNormalization needs `num_groups`")?;
    let channels = input_dims(node, cx, 0)
        .and_then(|d| d.get(1).and_then(Dim::known))
        .ok_or("GroupNormalization before opset 21 needs a known channel count")?;
    if groups <= 0 || channels % groups as usize != 0 {
        return Err(format!(
            "{channels} channels do not split into {groups} groups"
        ));
    }
    let per = channels / groups as usize;
    for i in [1, 2] {
        let name = node
            .input(i)
            .ok_or("scale and bias are required")?
            .to_string();
        let t = cx
            .constant_value(&name)
            .ok_or("GroupNormalization before opset 21 needs constant scale and bias")?;
        if t.len() != groups as usize {
            return Err(format!(
                "expected {groups} per-group values, got {}",
                t.len()
            ));
        }
        let repeated: Vec<usize> = (0..channels).map(|c| c / per).collect();
        let t = gather_1d(&t, &repeated).ok_or("scale and bias must be floats")?;
        let new = cx.constant(&format!("{name}_per_channel"), t);
        node.set_input(i, Some(new));
    }
    Ok(())
}

/// Picks elements of a 1-D float tensor by index.
fn gather_1d(t: &Tensor, idx: &[usize]) -> Option<Tensor> {
    fn pick<T: jiuzhou_ir::Elem + Copy>(v: &[T], idx: &[usize]) -> Option<Tensor> {
        Some(Tensor::vector(
            idx.iter()
                .map(|&i| v.get(i).copied())
                .collect::<Option<Vec<T>>>()?,
        ))
    }
    match t.dtype() {
        DType::F32 => pick(t.as_slice::<f32>().ok()?, idx),
        DType::F64 => pick(t.as_slice::<f64>().ok()?, idx),
        DType::F16 => pick(t.as_slice::<f16>().ok()?, idx),
        DType::BF16 => pick(t.as_slice::<bf16>().ok()?, idx),
        _ => None,
    }
}

/// Scan before opset 9 had a leading batch axis on every state and scan input and output, and an optional
/// `sequence_lens` first input. A batch of one (the only case without per-example lengths that can be expressed
/// without a loop) becomes Squeeze → Scan-9 → Unsqueeze.
fn scan_8(mut node: OnnxNode, cx: &mut dyn UpgradeCx) -> Result<Vec<OnnxNode>, String> {
    if node.input(0).is_some() {
        return Err("Scan before opset 9 with `sequence_lens` is not supported".into());
    }
    let batch_of_one = node.inputs[1..].iter().all(|i| {
        i.as_deref()
            .and_then(|n| cx.value_type(n))
            .and_then(|t| t.as_tensor().and_then(|t| t.shape.clone()))
            .is_some_and(|d| d.first() == Some(&Dim::Known(1)))
    });
    if !batch_of_one {
        return Err(
            "Scan before opset 9 is only supported with a batch of one (a known leading dim of 1)"
                .into(),
        );
    }
    if let Some(dirs) = node.attrs.remove("directions") {
        node.attrs.insert("scan_input_directions".into(), dirs);
    }
    let base = node.name.clone();
    let axes = cx.constant(&format!("{base}_batch_axis"), Tensor::vector(vec![0i64]));
    let mut nodes = Vec::new();
    let mut inputs = Vec::new();
    for (k, i) in node.inputs[1..].iter().enumerate() {
        let squeezed = cx.fresh_name(&format!("{base}_in{k}"));
        nodes.push(OnnxNode::new(
            format!("{base}_squeeze{k}"),
            "Squeeze",
            vec![i.clone(), Some(axes.clone())],
            vec![squeezed.clone()],
            Attrs::new(),
        ));
        inputs.push(Some(squeezed));
    }
    let outputs = std::mem::take(&mut node.outputs);
    let mut unsqueezes = Vec::new();
    for (k, o) in outputs.iter().enumerate() {
        let inner = cx.fresh_name(&format!("{base}_out{k}"));
        node.outputs.push(inner.clone());
        if !o.is_empty() {
            unsqueezes.push(OnnxNode::new(
                format!("{base}_unsqueeze{k}"),
                "Unsqueeze",
                vec![Some(inner), Some(axes.clone())],
                vec![o.clone()],
                Attrs::new(),
            ));
        }
    }
    node.inputs = inputs;
    nodes.push(node);
    nodes.extend(unsqueezes);
    Ok(nodes)
}

/// Tile before opset 6 took a scalar count `tiles` and a scalar `axis` as inputs; now `repeats` gives a count per
/// axis. Constant `tiles` and `axis` on an input of known rank become a constant `repeats`.
fn tile_1(node: &mut OnnxNode, cx: &mut dyn UpgradeCx) -> Result<(), String> {
    let scalar = |i: usize| -> Option<i64> {
        let t = cx.constant_value(node.input(i)?)?;
        match t.to_i64_vec()?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    };
    let (Some(tiles), Some(axis)) = (scalar(1), scalar(2)) else {
        return Err("Tile before opset 6 needs constant scalar `tiles` and `axis`".into());
    };
    let rank = input_dims(node, cx, 0)
        .ok_or("Tile before opset 6 needs an input of known rank")?
        .len();
    let axis = usize::try_from(if axis < 0 { axis + rank as i64 } else { axis })
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("Tile axis {axis} is out of range for rank {rank}"))?;
    let mut repeats = vec![1i64; rank];
    repeats[axis] = tiles;
    let name = cx.constant(&format!("{}_repeats", node.name), Tensor::vector(repeats));
    node.inputs.truncate(1);
    node.set_input(1, Some(name));
    Ok(())
}
