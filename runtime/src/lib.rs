//! `jiuzhou-runtime`: runs compiled graphs.
//!
//! A target turns a graph into something that implements [`Executable`]. A [`Session`] wraps an executable with the
//! graph's input/output signature: it checks input names, dtypes and shapes, binds symbolic dims (`batch`, `seq`)
//! to the actual sizes consistently across all inputs, runs the executable, and checks the outputs it returns.
//!
//! **Architecture invariant:** the runtime knows signatures, devices and executables, never how an executable was
//! made: no ONNX, no passes, no target-specific code.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

use jiuzhou_ir::{DType, Dim, Graph, Value, ValueType};

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// A graph input was not given.
    #[error("missing input `{0}`")]
    MissingInput(String),
    /// An input was given that the graph does not have.
    #[error("unknown input `{name}` (the model's inputs are: {expected})")]
    UnknownInput {
        /// The name given.
        name: String,
        /// The graph's input names, comma separated.
        expected: String,
    },
    /// The same input was given twice.
    #[error("input `{0}` is given more than once")]
    DuplicateInput(String),
    /// More positional inputs than the graph has.
    #[error("{given} inputs given, but the model has {expected}")]
    TooManyInputs {
        /// Inputs given.
        given: usize,
        /// Inputs the graph has.
        expected: usize,
    },
    /// An input has the wrong dtype or kind.
    #[error("input `{name}` should be {expected}, got {actual}")]
    Type {
        /// Input name.
        name: String,
        /// The static type expected.
        expected: String,
        /// The type given.
        actual: String,
    },
    /// A symbolic dim is bound to two different sizes.
    #[error(
        "dim `{sym}` is {first} from input `{first_input}` but {second} from input `{second_input}`"
    )]
    SymbolMismatch {
        /// The symbol.
        sym: String,
        /// Its first binding.
        first: usize,
        /// Where it was first bound.
        first_input: String,
        /// The conflicting size.
        second: usize,
        /// Where the conflict came from.
        second_input: String,
    },
    /// The executable failed.
    #[error("{0}")]
    Exec(String),
    /// The executable cannot report intermediate values ([`Executable::run_observed`]).
    #[error("target {0} cannot report intermediate tensors")]
    CannotObserve(String),
    /// The executable cannot time its kernels ([`Executable::run_profiled`]).
    #[error("target {0} cannot profile its kernels")]
    CannotProfile(String),
}

/// One step of a profiled run ([`Executable::run_profiled`]): a kernel of the executable's launch plan.
#[derive(Clone, Debug, PartialEq)]
pub struct StepProfile {
    /// What the step runs: the op of the node it was made from, with the ops fused into it (`Conv+Relu`).
    pub op: String,
    /// The name of the node the step was made from.
    pub node: String,
    /// The shape of the step's first output (empty for a scalar or a non-tensor value).
    pub shape: Vec<usize>,
    /// Floating-point operations of the step's matrix products (2 per multiply-add); 0 for other kernels.
    pub flops: f64,
    /// Wall-clock time of the step, in seconds.
    pub seconds: f64,
}

/// A callback that sees intermediate values as a run computes them: the value's name in the executable's graph
/// and the value. It is called once per value, in the order values are computed.
pub type Observer<'a> = dyn FnMut(&str, &Value) + 'a;

/// Something that runs a graph on a device: what a target's code generator produces.
pub trait Executable: Send + Sync {
    /// Runs on inputs in graph-input order (already checked against the signature) and returns the graph outputs
    /// in order.
    fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError>;

    /// A short name of the target/device it runs on, for messages (`reference`, `cpu`, ...).
    fn target_name(&self) -> &str;

    /// Runs like [`Executable::run`] and calls `observer` with every intermediate value the target materializes
    /// (node outputs, by the names of the graph it was compiled from). Values computed inside a fused kernel are
    /// not seen; which values are is the target's choice. The default reports [`RunError::CannotObserve`].
    fn run_observed(
        &self,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, RunError> {
        let _ = (inputs, observer);
        Err(RunError::CannotObserve(self.target_name().to_string()))
    }

    /// Runs like [`Executable::run`] and times every step of the launch plan, in the order they ran. Timing is
    /// only done here: [`Executable::run`] pays nothing for it. The default reports [`RunError::CannotProfile`].
    fn run_profiled(&self, inputs: Vec<Value>) -> Result<(Vec<Value>, Vec<StepProfile>), RunError> {
        let _ = inputs;
        Err(RunError::CannotProfile(self.target_name().to_string()))
    }

    /// The bytes of the arena the last finished run laid its intermediate tensors out in (for a graph with
    /// symbolic dims, planned for that run's binding of them); `None` for a target without an arena or before the
    /// first run.
    fn last_run_arena_bytes(&self) -> Option<usize> {
        None
    }
}

/// One named, typed input or output of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    /// Name.
    pub name: String,
    /// Static type (dims may be symbolic).
    pub ty: ValueType,
}

/// The input and output signature of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    /// Inputs, in order.
    pub inputs: Vec<Port>,
    /// Outputs, in order.
    pub outputs: Vec<Port>,
}

impl Signature {
    /// The signature of a graph.
    pub fn of(graph: &Graph) -> Signature {
        let port = |id: &jiuzhou_ir::ValueId| {
            let v = graph.value(*id);
            Port {
                name: v.name.clone(),
                ty: v.ty.clone(),
            }
        };
        Signature {
            inputs: graph.inputs.iter().map(port).collect(),
            outputs: graph.outputs.iter().map(port).collect(),
        }
    }
}

/// Symbolic dims bound to sizes by a run's inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bindings {
    /// Symbol → (size, the input that bound it).
    pub dims: BTreeMap<String, (usize, String)>,
}

impl fmt::Display for Bindings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .dims
            .iter()
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// Checks `value` against the static type `ty` of port `name`, binding symbols in `bindings`.
pub fn check_value(
    name: &str,
    ty: &ValueType,
    value: &Value,
    bindings: &mut Bindings,
) -> Result<(), RunError> {
    let mismatch = || RunError::Type {
        name: name.to_string(),
        expected: ty.to_string(),
        actual: describe(value),
    };
    match (ty, value) {
        (ValueType::Tensor(tt), Value::Tensor(t)) => {
            if tt.dtype != t.dtype() {
                return Err(mismatch());
            }
            let Some(dims) = &tt.shape else { return Ok(()) };
            if dims.len() != t.rank() {
                return Err(mismatch());
            }
            for (d, &actual) in dims.iter().zip(t.shape()) {
                match d {
                    Dim::Known(n) if *n != actual => return Err(mismatch()),
                    Dim::Known(_) => {}
                    Dim::Sym(s) => match bindings.dims.get(s) {
                        Some((bound, first_input)) if *bound != actual => {
                            return Err(RunError::SymbolMismatch {
                                sym: s.clone(),
                                first: *bound,
                                first_input: first_input.clone(),
                                second: actual,
                                second_input: name.to_string(),
                            });
                        }
                        Some(_) => {}
                        None => {
                            bindings.dims.insert(s.clone(), (actual, name.to_string()));
                        }
                    },
                }
            }
            Ok(())
        }
        (ValueType::Sequence(elem), Value::Sequence { items, .. }) => {
            for item in items {
                check_value(name, elem, item, &mut bindings.clone())?;
            }
            Ok(())
        }
        (ValueType::Optional(elem), Value::Optional { item, .. }) => match item {
            Some(v) => check_value(name, elem, v, bindings),
            None => Ok(()),
        },
        _ => Err(mismatch()),
    }
}

/// A short description of a value's type, e.g. `f32[1,3,224,224]` or `seq of 3`.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Tensor(t) => {
            let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
            format!("{}[{}]", t.dtype(), dims.join(","))
        }
        Value::Sequence { items, elem } => format!("seq<{elem}> of {}", items.len()),
        Value::Optional { item: None, elem } => format!("opt<{elem}> (empty)"),
        Value::Optional { item: Some(v), .. } => format!("opt<{}>", describe(v)),
    }
}

/// A graph ready to run: an executable plus the signature it is checked against.
pub struct Session {
    signature: Signature,
    exec: Box<dyn Executable>,
}

impl Session {
    /// A session running `exec`, whose inputs and outputs follow `signature`.
    pub fn new(signature: Signature, exec: Box<dyn Executable>) -> Session {
        Session { signature, exec }
    }

    /// The input/output signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The target the executable runs on.
    pub fn target_name(&self) -> &str {
        self.exec.target_name()
    }

    /// Runs with inputs given in graph-input order.
    pub fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
        let bindings = self.check_inputs(&inputs)?;
        let outputs = self.exec.run(inputs)?;
        self.check_outputs(&outputs, &bindings)?;
        Ok(outputs)
    }

    /// Runs like [`Session::run`] and calls `observer` with every intermediate value the executable materializes
    /// (see [`Executable::run_observed`]); [`RunError::CannotObserve`] when its target cannot.
    pub fn run_observed(
        &self,
        inputs: Vec<Value>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Value>, RunError> {
        let bindings = self.check_inputs(&inputs)?;
        let outputs = self.exec.run_observed(inputs, observer)?;
        self.check_outputs(&outputs, &bindings)?;
        Ok(outputs)
    }

    /// See [`Executable::last_run_arena_bytes`].
    pub fn last_run_arena_bytes(&self) -> Option<usize> {
        self.exec.last_run_arena_bytes()
    }

    /// Runs like [`Session::run`] and times every step of the executable (see [`Executable::run_profiled`]);
    /// [`RunError::CannotProfile`] when its target cannot.
    pub fn run_profiled(
        &self,
        inputs: Vec<Value>,
    ) -> Result<(Vec<Value>, Vec<StepProfile>), RunError> {
        let bindings = self.check_inputs(&inputs)?;
        let (outputs, profile) = self.exec.run_profiled(inputs)?;
        self.check_outputs(&outputs, &bindings)?;
        Ok((outputs, profile))
    }

    fn check_inputs(&self, inputs: &[Value]) -> Result<Bindings, RunError> {
        let expected = self.signature.inputs.len();
        if inputs.len() > expected {
            return Err(RunError::TooManyInputs {
                given: inputs.len(),
                expected,
            });
        }
        if inputs.len() < expected {
            return Err(RunError::MissingInput(
                self.signature.inputs[inputs.len()].name.clone(),
            ));
        }
        let mut bindings = Bindings::default();
        for (port, v) in self.signature.inputs.iter().zip(inputs) {
            check_value(&port.name, &port.ty, v, &mut bindings)?;
        }
        tracing::debug!(target = self.exec.target_name(), %bindings, "running");
        Ok(bindings)
    }

    fn check_outputs(&self, outputs: &[Value], bindings: &Bindings) -> Result<(), RunError> {
        if outputs.len() != self.signature.outputs.len() {
            return Err(RunError::Exec(format!(
                "the executable returned {} outputs, the graph has {}",
                outputs.len(),
                self.signature.outputs.len()
            )));
        }
        for (port, v) in self.signature.outputs.iter().zip(outputs) {
            // Output dims may be symbols bound by inputs or fresh symbols of data-dependent sizes; a fresh symbol
            // binds here and is not checked further.
            check_value(&port.name, &port.ty, v, &mut bindings.clone())
                .or_else(|e| match e {
                    // Inference may name one symbol for dims that differ at run time (broadcasting of two
                    // symbols); only dtype, rank and known dims are binding for outputs.
                    RunError::SymbolMismatch { .. } => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| {
                    RunError::Exec(format!("output does not match its static type: {e}"))
                })?;
        }
        Ok(())
    }

    /// Runs with named inputs, in any order.
    pub fn run_named(&self, inputs: Vec<(String, Value)>) -> Result<Vec<Value>, RunError> {
        let ordered = self.order_inputs(inputs)?;
        self.run(ordered)
    }

    /// Puts named inputs (in any order) into graph-input order; every input must be given exactly once.
    pub fn order_inputs(&self, inputs: Vec<(String, Value)>) -> Result<Vec<Value>, RunError> {
        let mut slots: Vec<Option<Value>> = vec![None; self.signature.inputs.len()];
        for (name, v) in inputs {
            let Some(i) = self.signature.inputs.iter().position(|p| p.name == name) else {
                let expected: Vec<&str> = self
                    .signature
                    .inputs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                return Err(RunError::UnknownInput {
                    name,
                    expected: expected.join(", "),
                });
            };
            if slots[i].replace(v).is_some() {
                return Err(RunError::DuplicateInput(name));
            }
        }
        let mut ordered = Vec::with_capacity(slots.len());
        for (slot, port) in slots.into_iter().zip(&self.signature.inputs) {
            ordered.push(slot.ok_or_else(|| RunError::MissingInput(port.name.clone()))?);
        }
        Ok(ordered)
    }
}

/// Whether a dtype can be given where `expected` is declared (exact match only; no implicit casts).
pub fn dtype_matches(expected: DType, actual: DType) -> bool {
    expected == actual
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::{Tensor, TensorType};

    struct Echo;
    impl Executable for Echo {
        fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
            Ok(inputs)
        }
        fn target_name(&self) -> &str {
            "echo"
        }
    }

    fn session() -> Session {
        let ty = |d: &[Dim]| ValueType::Tensor(TensorType::new(DType::F32, d.iter().cloned()));
        let sig = Signature {
            inputs: vec![
                Port {
                    name: "a".into(),
                    ty: ty(&["batch".into(), 3.into()]),
                },
                Port {
                    name: "b".into(),
                    ty: ty(&["batch".into()]),
                },
            ],
            outputs: vec![
                Port {
                    name: "a".into(),
                    ty: ty(&["batch".into(), 3.into()]),
                },
                Port {
                    name: "b".into(),
                    ty: ty(&["batch".into()]),
                },
            ],
        };
        Session::new(sig, Box::new(Echo))
    }

    fn t(shape: &[usize]) -> Value {
        Tensor::zeros(DType::F32, shape.to_vec()).unwrap().into()
    }

    #[test]
    fn binds_symbols_consistently() {
        let s = session();
        assert!(s.run(vec![t(&[2, 3]), t(&[2])]).is_ok());
        let err = s.run(vec![t(&[2, 3]), t(&[5])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dim `batch` is 2 from input `a` but 5 from input `b`"
        );
        let err = s.run(vec![t(&[2, 4]), t(&[2])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input `a` should be f32[batch,3], got f32[2,4]"
        );
    }

    #[test]
    fn observing_is_refused_by_default() {
        let s = session();
        let mut seen = 0;
        let err = s
            .run_observed(vec![t(&[1, 3]), t(&[1])], &mut |_, _| seen += 1)
            .unwrap_err();
        assert_eq!(err, RunError::CannotObserve("echo".into()));
        assert_eq!(
            err.to_string(),
            "target echo cannot report intermediate tensors"
        );
        assert_eq!(seen, 0);
    }

    #[test]
    fn profiling_is_refused_by_default() {
        let err = session()
            .run_profiled(vec![t(&[1, 3]), t(&[1])])
            .unwrap_err();
        assert_eq!(err, RunError::CannotProfile("echo".into()));
        assert_eq!(err.to_string(), "target echo cannot profile its kernels");
    }

    #[test]
    fn named_inputs_are_checked() {
        let s = session();
        assert!(
            s.run_named(vec![("b".into(), t(&[1])), ("a".into(), t(&[1, 3]))])
                .is_ok()
        );
        let err = s.run_named(vec![("c".into(), t(&[1]))]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown input `c` (the model's inputs are: a, b)"
        );
        let err = s.run_named(vec![("a".into(), t(&[1, 3]))]).unwrap_err();
        assert_eq!(err.to_string(), "missing input `b`");
        let err = s
            .run(vec![
                Tensor::zeros(DType::I64, vec![1, 3]).unwrap().into(),
                t(&[1]),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "input `a` should be f32[batch,3], got i64[1,3]"
        );
    }
}
