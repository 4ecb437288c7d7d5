//! If, Loop, Scan and SequenceMap: running subgraphs.
//!
//! Loops are bounded by [`crate::Limits::max_loop_iterations`]: a loop that would run longer is an error.

use std::sync::Arc;

use jiuzhou_ir::ops::{If, Loop, Scan, SequenceMap};
use jiuzhou_ir::{Dim, Graph, Tensor, Value, ValueType};

use super::layout::{narrow, stack};
use crate::kernels::axis as norm_axis;
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The truth of a one-element condition tensor (non-zero is true).
fn truth(t: &Tensor) -> Result<bool, EvalError> {
    match t.to_f64_vec().as_deref() {
        Some([c]) => Ok(*c != 0.0),
        Some(v) => eval_bail!("a condition should hold one element, it holds {}", v.len()),
        None => eval_bail!(
            "a condition should be a bool or a number, got {}",
            t.dtype()
        ),
    }
}

/// The tensor inside a value that must be one (a scan output).
fn as_tensor(v: Value, what: &str) -> Result<Arc<Tensor>, EvalError> {
    match v {
        Value::Tensor(t) => Ok(t),
        _ => eval_bail!("{what} should be a tensor"),
    }
}

/// Stacks per-iteration scan outputs along `axis`; with no iterations, an empty tensor shaped after the body's
/// static output type (`[0, dims...]`, unknown dims as 0).
fn stack_scan(
    parts: &[Arc<Tensor>],
    axis: i64,
    static_ty: &ValueType,
) -> Result<Tensor, EvalError> {
    if parts.is_empty() {
        let Some(t) = static_ty.as_tensor() else {
            eval_bail!("a scan output should be a tensor, the body declares {static_ty}");
        };
        let mut shape: Vec<usize> = t
            .shape
            .iter()
            .flatten()
            .map(|d| match d {
                Dim::Known(n) => *n,
                Dim::Sym(_) => 0,
            })
            .collect();
        let a = norm_axis(axis, shape.len() + 1)?;
        shape.insert(a, 0);
        return Ok(Tensor::zeros(t.dtype, shape)?);
    }
    let refs: Vec<&Tensor> = parts.iter().map(|t| &**t).collect();
    let a = norm_axis(axis, refs[0].rank() + 1)?;
    stack(&refs, a)
}

/// The static type of a subgraph's output `k`.
fn output_type(g: &Graph, k: usize) -> ValueType {
    g.value(g.outputs[k]).ty.clone()
}

impl EvalOp for If {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let branch = if truth(cx.tensor(0)?)? {
            &self.then_branch
        } else {
            &self.else_branch
        };
        let outputs = cx.run_subgraph(branch, vec![])?;
        if outputs.len() < cx.num_outputs {
            eval_bail!(
                "the branch gives {} outputs, the node has {}",
                outputs.len(),
                cx.num_outputs
            );
        }
        Ok(outputs)
    }
}

impl EvalOp for Loop {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let body = &self.body;
        let Some(n) = body.inputs.len().checked_sub(2) else {
            eval_bail!("the body should take the iteration number and the condition first");
        };
        let Some(k) = body.outputs.len().checked_sub(1 + n) else {
            eval_bail!("the body takes {n} loop-carried values but has too few outputs");
        };
        let max_trips = match cx.opt_tensor(0)? {
            Some(t) => match t.to_i64_vec().as_deref() {
                Some([m]) => Some(*m),
                _ => eval_bail!("the trip count should be one integer"),
            },
            None => None,
        };
        let mut cond = match cx.opt_tensor(1)? {
            Some(t) => truth(t)?,
            None => true,
        };
        let mut carried: Vec<Value> = (0..n)
            .map(|i| cx.value(2 + i).cloned())
            .collect::<Result<_, _>>()?;
        let mut scans: Vec<Vec<Arc<Tensor>>> = vec![Vec::new(); k];
        let limit = cx.limits().max_loop_iterations;
        let mut it: i64 = 0;
        while cond && max_trips.is_none_or(|m| it < m) {
            if it as u64 >= limit {
                eval_bail!("the loop runs for more than {limit} iterations");
            }
            let mut inputs = Vec::with_capacity(2 + n);
            inputs.push(Value::from(Tensor::scalar(it)));
            inputs.push(Value::from(Tensor::scalar(cond)));
            inputs.append(&mut carried);
            let outputs = cx.run_subgraph(body, inputs)?;
            if outputs.len() != 1 + n + k {
                eval_bail!(
                    "the body gave {} outputs, expected {}",
                    outputs.len(),
                    1 + n + k
                );
            }
            let mut outputs = outputs.into_iter();
            cond = match outputs.next() {
                Some(Value::Tensor(t)) => truth(&t)?,
                _ => eval_bail!("the body's condition output should be a tensor"),
            };
            carried = outputs.by_ref().take(n).collect();
            for (scan, v) in scans.iter_mut().zip(outputs) {
                scan.push(as_tensor(v, "a scan output")?);
            }
            it += 1;
        }
        let mut out = carried;
        for (j, parts) in scans.iter().enumerate() {
            out.push(stack_scan(parts, 0, &output_type(body, 1 + n + j))?.into());
        }
        Ok(out)
    }
}

/// A per-input or per-output attribute list of Scan, defaulting to zeros.
fn per_item(list: &Option<Vec<i64>>, count: usize, what: &str) -> Result<Vec<i64>, EvalError> {
    match list {
        None => Ok(vec![0; count]),
        Some(v) if v.len() == count => Ok(v.clone()),
        Some(v) => eval_bail!("{what} has {} entries, expected {count}", v.len()),
    }
}

impl EvalOp for Scan {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let body = &self.body;
        let m = usize::try_from(self.num_scan_inputs)
            .ok()
            .filter(|&m| m >= 1)
            .ok_or_else(|| EvalError::new("num_scan_inputs should be at least 1"))?;
        let total = body.inputs.len();
        let Some(n) = total.checked_sub(m) else {
            eval_bail!("the body takes {total} inputs but num_scan_inputs is {m}");
        };
        if cx.num_inputs() != total {
            eval_bail!(
                "the node has {} inputs, the body takes {total}",
                cx.num_inputs()
            );
        }
        let Some(k) = body.outputs.len().checked_sub(n) else {
            eval_bail!("the body has fewer outputs than the {n} state variables");
        };
        let in_axes = per_item(&self.scan_input_axes, m, "scan_input_axes")?;
        let in_dirs = per_item(&self.scan_input_directions, m, "scan_input_directions")?;
        let out_axes = per_item(&self.scan_output_axes, k, "scan_output_axes")?;
        let out_dirs = per_item(&self.scan_output_directions, k, "scan_output_directions")?;

        let mut states: Vec<Value> = (0..n)
            .map(|i| cx.value(i).cloned())
            .collect::<Result<_, _>>()?;
        let mut scanned = Vec::with_capacity(m);
        let mut length: Option<usize> = None;
        for (j, &axis) in in_axes.iter().enumerate() {
            let x = cx.tensor(n + j)?;
            let a = norm_axis(axis, x.rank())?;
            let len = x.shape()[a];
            if length.is_some_and(|l| l != len) {
                eval_bail!("scan inputs have different lengths ({length:?} and {len})");
            }
            length = Some(len);
            scanned.push((x, a));
        }
        let length = length.unwrap_or(0);
        if length as u64 > cx.limits().max_loop_iterations {
            eval_bail!(
                "the scan runs for {length} iterations, more than {}",
                cx.limits().max_loop_iterations
            );
        }
        let mut scans: Vec<Vec<Arc<Tensor>>> = vec![Vec::with_capacity(length); k];
        for t in 0..length {
            let mut inputs = std::mem::take(&mut states);
            for (j, (x, a)) in scanned.iter().enumerate() {
                let pos = if in_dirs[j] == 1 { length - 1 - t } else { t };
                inputs.push(narrow(x, *a, pos, 1, false)?.into());
            }
            let outputs = cx.run_subgraph(body, inputs)?;
            if outputs.len() != n + k {
                eval_bail!(
                    "the body gave {} outputs, expected {}",
                    outputs.len(),
                    n + k
                );
            }
            let mut outputs = outputs.into_iter();
            states = outputs.by_ref().take(n).collect();
            for (scan, v) in scans.iter_mut().zip(outputs) {
                scan.push(as_tensor(v, "a scan output")?);
            }
        }
        let mut out = states;
        for (j, mut parts) in scans.into_iter().enumerate() {
            if out_dirs[j] == 1 {
                parts.reverse();
            }
            out.push(stack_scan(&parts, out_axes[j], &output_type(body, n + j))?.into());
        }
        Ok(out)
    }
}

impl EvalOp for SequenceMap {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let body = &self.body;
        let Value::Sequence { items: first, .. } = cx.value(0)? else {
            eval_bail!("input 0 should be a sequence");
        };
        let len = first.len();
        let mut others = Vec::new();
        for i in 1..cx.num_inputs() {
            let v = cx.value(i)?;
            if let Value::Sequence { items, .. } = v
                && items.len() != len
            {
                eval_bail!(
                    "input {i} is a sequence of {} values, input 0 of {len}",
                    items.len()
                );
            }
            others.push(v);
        }
        if body.inputs.len() != 1 + others.len() {
            eval_bail!(
                "the node has {} inputs, the body takes {}",
                1 + others.len(),
                body.inputs.len()
            );
        }
        let k = body.outputs.len();
        let mut results: Vec<Vec<Value>> = vec![Vec::with_capacity(len); k];
        for (i, item) in first.iter().enumerate() {
            let mut inputs = vec![item.clone()];
            for v in &others {
                inputs.push(match v {
                    Value::Sequence { items, .. } => items[i].clone(),
                    other => (*other).clone(),
                });
            }
            let outputs = cx.run_subgraph(body, inputs)?;
            if outputs.len() != k {
                eval_bail!("the body gave {} outputs, expected {k}", outputs.len());
            }
            for (r, v) in results.iter_mut().zip(outputs) {
                r.push(v);
            }
        }
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(j, items)| Value::Sequence {
                elem: output_type(body, j),
                items,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{OptionalGetElement, RegexFullMatch, StringConcat};

    use super::*;
    use crate::Limits;
    use crate::ops::control::testutil::{Body, ints, run, run_cap, run_with, seq, show, strs};

    /// A body that appends the captured `c0` to its string state; the condition stays true while the state is at
    /// most `max` characters long (or passes through if `max` is `None`); the state is also a scan output.
    fn appending_body(max: Option<usize>) -> Arc<Graph> {
        let mut b = Body::new("body");
        b.input("iter");
        let cond = b.input("cond");
        let acc = b.input("acc");
        let x = b.capture("c0");
        let acc_out = b.node(StringConcat {}, &[Some(acc), Some(x)], &["acc_out"])[0];
        let cond_out = match max {
            None => b.node(OptionalGetElement {}, &[Some(cond)], &["cond_out"])[0],
            Some(m) => {
                let pattern = Some(format!(".{{0,{m}}}"));
                b.node(RegexFullMatch { pattern }, &[Some(acc_out)], &["cond_out"])[0]
            }
        };
        let scan = b.node(OptionalGetElement {}, &[Some(acc_out)], &["scan"])[0];
        b.finish(&[cond_out, acc_out, scan])
    }

    #[test]
    fn if_runs_one_branch_with_captures() {
        let mut then_b = Body::new("then");
        let c = then_b.constant("c", strs(&[], &["then"]));
        let then_branch = then_b.finish(&[c]);
        let mut else_b = Body::new("else");
        let x = else_b.capture("c0");
        let y = else_b.node(OptionalGetElement {}, &[Some(x)], &["y"])[0];
        let else_branch = else_b.finish(&[y]);
        let op = If {
            then_branch,
            else_branch,
        };
        let x = || vec![strs(&[1], &["else"])];
        let cond = |b: bool| Some(Tensor::scalar(b).into());
        assert_eq!(
            run_cap(op.clone(), vec![cond(true)], x(), 1),
            "[] [\"then\"]"
        );
        assert_eq!(
            run_cap(op.clone(), vec![cond(false)], x(), 1),
            "[1] [\"else\"]"
        );
        assert!(run_cap(op.clone(), vec![Some(ints(&[2], &[1, 0]))], x(), 1).starts_with("error"));
        // Without the captured value the else branch cannot run.
        assert!(run(op, vec![cond(false)], 1).contains("captures `c0`"));
    }

    #[test]
    fn captured_values_live_until_the_subgraph_runs() {
        // `c0` is last read directly by the first node, but the If after it captures it.
        let mut else_b = Body::new("else");
        let x = else_b.capture("c0");
        let y = else_b.node(OptionalGetElement {}, &[Some(x)], &["y"])[0];
        let else_branch = else_b.finish(&[y]);
        let mut then_b = Body::new("then");
        let c = then_b.constant("k", strs(&[], &["then"]));
        let then_branch = then_b.finish(&[c]);
        let mut main = Body::new("main");
        let cond = main.input("cond");
        let c0 = main.input("c0");
        let first = main.node(OptionalGetElement {}, &[Some(c0)], &["first"])[0];
        let op = If {
            then_branch,
            else_branch,
        };
        let second = main.node(op, &[Some(cond)], &["second"])[0];
        let g = main.finish(&[first, second]);
        let out = crate::Interpreter::default()
            .run(&g, vec![Tensor::scalar(false).into(), strs(&[], &["x"])])
            .unwrap();
        assert_eq!(show(&out[1]), "[] [\"x\"]");
    }

    #[test]
    fn loop_carries_state_and_stacks_scan_outputs() {
        let op = Loop {
            body: appending_body(None),
        };
        let acc = Some(strs(&[], &[""]));
        let x = || vec![strs(&[], &["a"])];
        let m = |n: i64| Some(Tensor::scalar(n).into());
        let cond = Some(Tensor::scalar(true).into());
        assert_eq!(
            run_cap(op.clone(), vec![m(3), cond.clone(), acc.clone()], x(), 2),
            "[] [\"aaa\"] | [3] [\"a\", \"aa\", \"aaa\"]"
        );
        // No iterations: the state passes through and the scan output is empty.
        assert_eq!(
            run_cap(op.clone(), vec![m(0), cond.clone(), acc.clone()], x(), 2),
            "[] [\"\"] | [0] []"
        );
        let no = Some(Tensor::scalar(false).into());
        assert_eq!(
            run_cap(op.clone(), vec![None, no, acc.clone()], x(), 2),
            "[] [\"\"] | [0] []"
        );
        // Without a trip count or a condition the loop is stopped by the limit.
        let limits = Limits {
            max_loop_iterations: 10,
            ..Limits::default()
        };
        let err = run_with(op, vec![None, None, acc.clone()], x(), 2, limits).unwrap_err();
        assert!(err.0.contains("more than 10 iterations"), "{err}");
        // The condition computed by the body ends the loop.
        let op = Loop {
            body: appending_body(Some(2)),
        };
        assert_eq!(
            run_cap(op, vec![None, cond, acc], x(), 2),
            "[] [\"aaa\"] | [3] [\"a\", \"aa\", \"aaa\"]"
        );
    }

    fn scan_body() -> Arc<Graph> {
        let mut b = Body::new("body");
        let acc = b.input("acc");
        let x = b.input("x");
        let acc_out = b.node(StringConcat {}, &[Some(acc), Some(x)], &["acc_out"])[0];
        let scan = b.node(OptionalGetElement {}, &[Some(acc_out)], &["scan"])[0];
        b.finish(&[acc_out, scan])
    }

    #[test]
    fn scan_slices_inputs_and_stacks_outputs() {
        let op = Scan {
            body: scan_body(),
            num_scan_inputs: 1,
            scan_input_axes: None,
            scan_input_directions: None,
            scan_output_axes: None,
            scan_output_directions: None,
        };
        let acc = Some(strs(&[], &[""]));
        let x = Some(strs(&[3], &["a", "b", "c"]));
        assert_eq!(
            run(op.clone(), vec![acc.clone(), x.clone()], 2),
            "[] [\"abc\"] | [3] [\"a\", \"ab\", \"abc\"]"
        );
        let reversed = Scan {
            scan_input_directions: Some(vec![1]),
            scan_output_directions: Some(vec![1]),
            ..op.clone()
        };
        assert_eq!(
            run(reversed, vec![acc, x], 2),
            "[] [\"cba\"] | [3] [\"cba\", \"cb\", \"c\"]"
        );
        let by_columns = Scan {
            scan_input_axes: Some(vec![1]),
            scan_output_axes: Some(vec![-1]),
            ..op.clone()
        };
        let acc2 = Some(strs(&[2], &["", ""]));
        let x2 = Some(strs(&[2, 3], &["a", "b", "c", "d", "e", "f"]));
        assert_eq!(
            run(by_columns, vec![acc2.clone(), x2.clone()], 2),
            "[2] [\"abc\", \"def\"] | [2, 3] [\"a\", \"ab\", \"abc\", \"d\", \"de\", \"def\"]"
        );
        let bad = Scan {
            scan_input_axes: Some(vec![2]),
            ..op
        };
        assert!(run(bad, vec![acc2, x2], 2).starts_with("error"));
    }

    #[test]
    fn sequence_map_runs_the_body_per_item() {
        let mut b = Body::new("body");
        let s = b.input("s");
        let t = b.input("t");
        let y = b.node(StringConcat {}, &[Some(s), Some(t)], &["y"])[0];
        let op = SequenceMap {
            body: b.finish(&[y]),
        };
        let items = seq(vec![strs(&[1], &["a"]), strs(&[2], &["b", "c"])]);
        let suffix = strs(&[], &["!"]);
        assert_eq!(
            run(op.clone(), vec![Some(items.clone()), Some(suffix)], 1),
            "seq([1] [\"a!\"]; [2] [\"b!\", \"c!\"])"
        );
        let others = seq(vec![strs(&[], &["1"]), strs(&[], &["2"])]);
        assert_eq!(
            run(op.clone(), vec![Some(items.clone()), Some(others)], 1),
            "seq([1] [\"a1\"]; [2] [\"b2\", \"c2\"])"
        );
        let short = seq(vec![strs(&[], &["1"])]);
        assert!(run(op, vec![Some(items), Some(short)], 1).starts_with("error"));
    }
}
