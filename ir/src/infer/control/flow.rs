//! If, Loop, Scan and SequenceMap: output types from the subgraphs' output types.

use super::{forget_sequence_shapes, insert_dim, loop_carried_type, merge_types};
use crate::infer::{InferCx, InferError, InferOp, normalize_axis};
use crate::ops::{If, Loop, Scan, SequenceMap};
use crate::{DType, Dim, Graph, TensorType, ValueType, infer_bail};

/// The static types of a subgraph's outputs.
fn output_types(g: &Graph) -> Vec<ValueType> {
    g.outputs.iter().map(|&o| g.value(o).ty.clone()).collect()
}

/// The tensor type of a subgraph output that must be a tensor (scan outputs).
fn tensor_output<'a>(g: &'a Graph, k: usize, what: &str) -> Result<&'a TensorType, InferError> {
    match g.outputs.get(k).map(|&o| &g.value(o).ty) {
        Some(ValueType::Tensor(t)) => Ok(t),
        Some(other) => infer_bail!("{what} should be a tensor, the body gives {other}"),
        None => infer_bail!("the body has no output {k}"),
    }
}

/// Checks that a condition input is a tensor of one element (a bool, or a number as numpy reads it).
fn check_condition(cx: &InferCx<'_>, i: usize) -> Result<(), InferError> {
    let t = cx.tensor(i)?;
    if let Some(n) = t.known_dims().map(|d| d.iter().product::<usize>())
        && n != 1
    {
        infer_bail!("the condition should hold one element, its type is {t}");
    }
    Ok(())
}

impl InferOp for If {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        check_condition(cx, 0)?;
        let then_tys = output_types(&self.then_branch);
        let else_tys = output_types(&self.else_branch);
        if then_tys.len() != else_tys.len() {
            infer_bail!(
                "the then branch has {} outputs, the else branch {}",
                then_tys.len(),
                else_tys.len()
            );
        }
        if then_tys.len() < cx.num_outputs {
            infer_bail!(
                "the node has {} outputs, the branches only {}",
                cx.num_outputs,
                then_tys.len()
            );
        }
        // A constant condition picks its branch statically.
        if let Some(c) = cx.const_tensor(0).and_then(|t| t.to_f64_vec())
            && let [c] = c[..]
        {
            return Ok(if c != 0.0 { then_tys } else { else_tys });
        }
        then_tys
            .iter()
            .zip(&else_tys)
            .enumerate()
            .map(|(k, (t, e))| {
                merge_types(cx, t, e, "if").map_err(|err| {
                    InferError::new(format!("the branches disagree on output {k}: {err}"))
                })
            })
            .collect()
    }
}

impl InferOp for Loop {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let body = &self.body;
        if body.inputs.len() < 2 {
            infer_bail!(
                "the body should take the iteration number and the condition first, it has {} inputs",
                body.inputs.len()
            );
        }
        let n = body.inputs.len() - 2;
        if body.outputs.len() < 1 + n {
            infer_bail!(
                "the body takes {n} loop-carried values but has only {} outputs",
                body.outputs.len()
            );
        }
        let k = body.outputs.len() - 1 - n;
        if cx.num_inputs() != 2 + n {
            infer_bail!(
                "the node gives {} loop-carried values, the body takes {n}",
                cx.num_inputs().saturating_sub(2)
            );
        }
        if cx.num_outputs > n + k {
            infer_bail!(
                "the node has {} outputs, the body gives {n} loop-carried values and {k} scan outputs",
                cx.num_outputs
            );
        }
        if cx.has_input(0) {
            cx.expect_dtype(0, &[DType::I64])?;
            check_condition(cx, 0)?;
        }
        if cx.has_input(1) {
            check_condition(cx, 1)?;
        }
        let body_out = output_types(body);
        let mut out = Vec::with_capacity(n + k);
        for i in 0..n {
            let initial = cx.value(2 + i)?.clone();
            let ty = loop_carried_type(cx, &initial, &body_out[1 + i], "loop")
                .map_err(|e| InferError::new(format!("loop-carried value {i}: {e}")))?;
            out.push(forget_sequence_shapes(&ty));
        }
        for j in 0..k {
            let t = tensor_output(body, 1 + n + j, "a scan output")?;
            let iterations = cx.fresh("loop");
            out.push(insert_dim(t, 0, iterations).into());
        }
        Ok(out)
    }
}

/// Reads a per-input or per-output attribute list (`scan_input_axes` and friends), defaulting to 0.
fn per_item(list: &Option<Vec<i64>>, count: usize, what: &str) -> Result<Vec<i64>, InferError> {
    match list {
        None => Ok(vec![0; count]),
        Some(v) if v.len() == count => Ok(v.clone()),
        Some(v) => infer_bail!("{what} has {} entries, expected {count}", v.len()),
    }
}

impl InferOp for Scan {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let body = &self.body;
        let m = usize::try_from(self.num_scan_inputs)
            .ok()
            .filter(|&m| m >= 1)
            .ok_or_else(|| InferError::new("num_scan_inputs should be at least 1"))?;
        let total = cx.num_inputs();
        if total < m {
            infer_bail!("the node has {total} inputs but num_scan_inputs is {m}");
        }
        let n = total - m;
        if body.inputs.len() != total {
            infer_bail!(
                "the node has {total} inputs, the body takes {}",
                body.inputs.len()
            );
        }
        if body.outputs.len() < n {
            infer_bail!(
                "the body has {} outputs but {n} state variables",
                body.outputs.len()
            );
        }
        let k = body.outputs.len() - n;
        if cx.num_outputs > n + k {
            infer_bail!(
                "the node has {} outputs, the body only {}",
                cx.num_outputs,
                n + k
            );
        }
        let in_axes = per_item(&self.scan_input_axes, m, "scan_input_axes")?;
        per_item(&self.scan_input_directions, m, "scan_input_directions")?;
        let out_axes = per_item(&self.scan_output_axes, k, "scan_output_axes")?;
        per_item(&self.scan_output_directions, k, "scan_output_directions")?;

        // The sequence length: the scanned dim of the first scan input whose rank is known.
        let mut length: Option<Dim> = None;
        for (j, &axis) in in_axes.iter().enumerate() {
            let t = cx.tensor(n + j)?;
            if let Some(dims) = &t.shape {
                let a = normalize_axis(axis, dims.len())
                    .map_err(|e| InferError::new(format!("scan input {j}: {e}")))?;
                // A known size beats a symbol.
                if matches!(
                    (&length, &dims[a]),
                    (None, _) | (Some(Dim::Sym(_)), Dim::Known(_))
                ) {
                    length = Some(dims[a].clone());
                }
            }
        }
        let length = match length {
            Some(d) => d,
            None => cx.fresh("scan"),
        };

        let body_out = output_types(body);
        let mut out = Vec::with_capacity(n + k);
        for (i, updated) in body_out.iter().enumerate().take(n) {
            let initial = cx.value(i)?.clone();
            out.push(
                loop_carried_type(cx, &initial, updated, "scan")
                    .map_err(|e| InferError::new(format!("state variable {i}: {e}")))?,
            );
        }
        for (j, &axis) in out_axes.iter().enumerate() {
            let t = tensor_output(body, n + j, "a scan output")?;
            let ty = match t.rank() {
                Some(r) => {
                    let a = normalize_axis(axis, r + 1)
                        .map_err(|e| InferError::new(format!("scan output {j}: {e}")))?;
                    insert_dim(t, a, length.clone())
                }
                None => TensorType::unranked(t.dtype),
            };
            out.push(ty.into());
        }
        Ok(out)
    }
}

impl InferOp for SequenceMap {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let body = &self.body;
        match cx.value(0)? {
            ValueType::Sequence(_) => {}
            other => infer_bail!("input 0 should be a sequence, got {other}"),
        }
        if body.inputs.len() != cx.num_inputs() {
            infer_bail!(
                "the node has {} inputs, the body takes {}",
                cx.num_inputs(),
                body.inputs.len()
            );
        }
        if cx.num_outputs > body.outputs.len() {
            infer_bail!(
                "the node has {} outputs, the body only {}",
                cx.num_outputs,
                body.outputs.len()
            );
        }
        Ok(output_types(body)
            .into_iter()
            .map(|t| ValueType::Sequence(Box::new(t)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::infer::test_util::infer_types;
    use crate::ops::{self, Op};
    use crate::{Node, Tensor};

    fn t(dtype: DType, dims: &[&str]) -> ValueType {
        TensorType::new(
            dtype,
            dims.iter().map(|d| match d.parse::<usize>() {
                Ok(n) => Dim::Known(n),
                Err(_) => Dim::from(*d),
            }),
        )
        .into()
    }

    /// A body graph with inputs and outputs of the given types; outputs are computed by opaque nodes.
    fn body(inputs: &[ValueType], outputs: &[ValueType]) -> Arc<Graph> {
        let mut g = Graph::new("body");
        for (i, ty) in inputs.iter().enumerate() {
            let id = g.add_value(format!("in{i}"), ty.clone());
            g.inputs.push(id);
        }
        for (i, ty) in outputs.iter().enumerate() {
            let id = g.add_value(format!("out{i}"), ty.clone());
            g.nodes.push(Node {
                name: format!("n{i}"),
                op: Op::SequenceEmpty(ops::SequenceEmpty::default()),
                inputs: vec![],
                outputs: vec![id],
            });
            g.outputs.push(id);
        }
        Arc::new(g)
    }

    #[test]
    fn if_merges_branches() {
        let op = If {
            then_branch: body(&[], &[t(DType::F32, &["2", "3"]), t(DType::I64, &["4"])]),
            else_branch: body(
                &[],
                &[t(DType::F32, &["2", "5"]), t(DType::I64, &["4", "1"])],
            ),
        };
        let cond = Some(t(DType::Bool, &[]));
        assert_eq!(
            infer_types(op.clone(), std::slice::from_ref(&cond), &[], 2),
            "f32[2,if_0], i64[*]"
        );
        assert_eq!(
            infer_types(
                op.clone(),
                std::slice::from_ref(&cond),
                &[Some(Tensor::scalar(false))],
                2
            ),
            "f32[2,5], i64[4,1]"
        );
        let bad = If {
            then_branch: body(&[], &[t(DType::F32, &["2"])]),
            else_branch: body(&[], &[t(DType::I64, &["2"])]),
        };
        assert!(infer_types(bad, &[cond], &[], 1).starts_with("error: the branches disagree"));
        assert!(infer_types(op, &[Some(t(DType::Bool, &["2"]))], &[], 1).starts_with("error"));
    }

    #[test]
    fn loop_keeps_carried_types_and_stacks_scan_outputs() {
        let op = Loop {
            body: body(
                &[
                    t(DType::I64, &[]),
                    t(DType::Bool, &[]),
                    t(DType::F32, &["n"]),
                    t(DType::F32, &["2"]),
                ],
                &[
                    t(DType::Bool, &[]),
                    t(DType::F32, &["n"]),
                    t(DType::F32, &["2"]),
                    t(DType::F32, &["3", "4"]),
                ],
            ),
        };
        let inputs = [
            Some(t(DType::I64, &[])),
            None,
            Some(t(DType::F32, &["1"])),
            Some(t(DType::F32, &["2"])),
        ];
        assert_eq!(
            infer_types(op.clone(), &inputs, &[], 3),
            "f32[loop_0], f32[2], f32[loop_1,3,4]"
        );
        assert!(infer_types(op, &inputs[..3], &[], 3).starts_with("error"));
        // A carried sequence keeps only its element dtype (its items may change shape every iteration).
        let seq = |dims: &[&str]| ValueType::Sequence(Box::new(t(DType::F32, dims)));
        let op = Loop {
            body: body(
                &[t(DType::I64, &[]), t(DType::Bool, &[]), seq(&[])],
                &[t(DType::Bool, &[]), seq(&[])],
            ),
        };
        let inputs = [None, None, Some(ValueType::Optional(Box::new(seq(&[]))))];
        assert_eq!(infer_types(op, &inputs, &[], 1), "seq<f32[*]>");
    }

    #[test]
    fn scan_inserts_the_sequence_length() {
        let op = Scan {
            body: body(
                &[t(DType::F32, &["2"]), t(DType::F32, &["2"])],
                &[t(DType::F32, &["2"]), t(DType::F32, &["2"])],
            ),
            num_scan_inputs: 1,
            scan_input_axes: Some(vec![1]),
            scan_input_directions: None,
            scan_output_axes: Some(vec![-1]),
            scan_output_directions: Some(vec![1]),
        };
        let inputs = [
            Some(t(DType::F32, &["2"])),
            Some(t(DType::F32, &["2", "seq"])),
        ];
        assert_eq!(
            infer_types(op.clone(), &inputs, &[], 2),
            "f32[2], f32[2,seq]"
        );
        let mut bad = op;
        bad.scan_output_axes = Some(vec![0, 1]);
        assert!(infer_types(bad, &inputs, &[], 2).starts_with("error: scan_output_axes"));
    }

    #[test]
    fn sequence_map_wraps_body_outputs() {
        let op = SequenceMap {
            body: body(&[t(DType::F32, &["h", "w"])], &[t(DType::I64, &["2"])]),
        };
        let seq = Some(ValueType::Sequence(Box::new(t(DType::F32, &["h", "w"]))));
        assert_eq!(infer_types(op.clone(), &[seq], &[], 1), "seq<i64[2]>");
        assert!(infer_types(op, &[Some(t(DType::F32, &["2"]))], &[], 1).starts_with("error"));
    }
}
