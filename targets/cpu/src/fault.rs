//! Test-only fault injection: a deliberately wrong kernel, to prove that the golden-test harness finds one.
//!
//! Setting the environment variable `JIUZHOU_FAULT=cpu:SELECTOR` makes every executable compiled by the CPU target
//! afterwards perturb the outputs of the nodes that SELECTOR names — a node name (`conv2`) or an op name (`Conv`) —
//! as if their kernel were wrong. `jiuzhou compare` must then name that node as the first one that diverges from
//! the reference (`compiler/tests/compare.rs` checks it).
//!
//! It is never on by default: nothing happens unless the variable is set, and when it is, compilation logs a
//! `warn`-level message for every faulty node (and one when the selector matches no node). A value for another
//! target (`vnpu:...`) is ignored here; a value without a `TARGET:` prefix is an error, so a typo is not silently
//! a clean run. The perturbation is deterministic: float elements become `1.5·x ± 0.25` (alternating signs),
//! integer elements `x + 1`; other dtypes are left alone, with a warning.

use std::sync::Arc;

use jiuzhou_ir::{Data, Tensor, Value};

use crate::ExecError;

/// The environment variable that turns fault injection on.
pub const ENV: &str = "JIUZHOU_FAULT";

/// Which nodes compute wrong results on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// A node name or an op name.
    pub selector: String,
}

impl Fault {
    /// The fault that [`ENV`] asks of the CPU target, if any.
    pub fn from_env() -> Result<Option<Fault>, ExecError> {
        match std::env::var(ENV) {
            Ok(spec) => Fault::parse(&spec),
            Err(_) => Ok(None),
        }
    }

    /// Parses `TARGET:SELECTOR`; `None` when TARGET is not `cpu` (or the value is empty).
    pub fn parse(spec: &str) -> Result<Option<Fault>, ExecError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(None);
        }
        let Some((target, selector)) = spec.split_once(':') else {
            return Err(ExecError::new(format!(
                "{ENV}=`{spec}`: expected TARGET:SELECTOR, e.g. cpu:conv2 (a node or op name)"
            )));
        };
        if target != "cpu" {
            return Ok(None);
        }
        if selector.is_empty() {
            return Err(ExecError::new(format!(
                "{ENV}=`{spec}`: the selector (a node or op name) is empty"
            )));
        }
        Ok(Some(Fault {
            selector: selector.to_string(),
        }))
    }

    /// Whether the node named `node` with op `op` is faulty.
    pub fn matches(&self, node: &str, op: &str) -> bool {
        self.selector == node || self.selector == op
    }
}

/// `value` as a faulty kernel would compute it (see the module docs).
pub fn perturb(value: &Value) -> Value {
    let Value::Tensor(t) = value else {
        tracing::warn!("{ENV}: a non-tensor value is not perturbed");
        return value.clone();
    };
    let mut t: Tensor = (**t).clone();
    let sign = |i: usize| if i.is_multiple_of(2) { 1.0 } else { -1.0 };
    match t.data() {
        Data::F32(_) => {
            if let Ok(v) = t.as_mut_vec::<f32>() {
                for (i, x) in v.iter_mut().enumerate() {
                    *x = 1.5 * *x + 0.25 * sign(i) as f32;
                }
            }
        }
        Data::F64(_) => {
            if let Ok(v) = t.as_mut_vec::<f64>() {
                for (i, x) in v.iter_mut().enumerate() {
                    *x = 1.5 * *x + 0.25 * sign(i);
                }
            }
        }
        Data::I64(_) => {
            if let Ok(v) = t.as_mut_vec::<i64>() {
                v.iter_mut().for_each(|x| *x = x.wrapping_add(1));
            }
        }
        Data::I32(_) => {
            if let Ok(v) = t.as_mut_vec::<i32>() {
                v.iter_mut().for_each(|x| *x = x.wrapping_add(1));
            }
        }
        _ => tracing::warn!(dtype = %t.dtype(), "{ENV}: this dtype is not perturbed"),
    }
    Value::Tensor(Arc::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_cpu_selectors() {
        assert_eq!(Fault::parse("").unwrap(), None);
        assert_eq!(Fault::parse("vnpu:conv1").unwrap(), None);
        assert_eq!(
            Fault::parse("cpu:conv1").unwrap(),
            Some(Fault {
                selector: "conv1".into()
            })
        );
        assert!(Fault::parse("conv1").is_err());
        assert!(Fault::parse("cpu:").is_err());
        let f = Fault::parse("cpu:Conv").unwrap().unwrap();
        assert!(f.matches("conv7", "Conv") && !f.matches("relu1", "Relu"));
    }

    #[test]
    fn perturbs_floats_and_ints() {
        let v = Value::Tensor(Arc::new(Tensor::vector(vec![1.0f32, 2.0])));
        let p = perturb(&v);
        assert_eq!(
            p.as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[1.75, 2.75]
        );
        let v = Value::Tensor(Arc::new(Tensor::vector(vec![3i64])));
        assert_eq!(perturb(&v).as_tensor().unwrap().to_i64_vec(), Some(vec![4]));
    }
}
