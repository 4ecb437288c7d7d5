//! Kernels over tensors of any dtype, for the small integer (shape) computations of dynamic-shape models: Shape,
//! the reshape family with run-time or non-f32 operands (Reshape by a computed shape, Unsqueeze, Squeeze, Flatten,
//! Identity), Concat and Gather (run-time indices). Their results live on the heap, not in the arena.

use std::sync::Arc;

use jiuzhou_ir::{DType, Graph, Node, Op, Tensor, ValueId, ValueType, dispatch_any};

use crate::ExecError;
use crate::movement::Reshape;
use crate::native::{NativeKernel, const_ints, norm_axis, numel};

/// A kernel over whole tensors.
pub trait TensorKernel: Send + Sync {
    /// Computes the output from the inputs (absent optional inputs are `None`).
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError>;
}

/// A tensor kernel and the inputs it reads.
pub struct TensorStep {
    /// The kernel.
    pub kernel: Box<dyn TensorKernel>,
    /// The inputs, in the node's order.
    pub inputs: Vec<Option<ValueId>>,
}

fn err(e: impl std::fmt::Display) -> ExecError {
    ExecError::new(e.to_string())
}

fn input(ins: &[Option<Arc<Tensor>>], i: usize) -> Result<&Tensor, ExecError> {
    ins.get(i)
        .and_then(|t| t.as_deref())
        .ok_or_else(|| ExecError::new(format!("input {i} is missing")))
}

fn ints(t: &Tensor) -> Result<Vec<i64>, ExecError> {
    match t.dtype() {
        DType::I64 | DType::I32 => t.to_i64_vec().ok_or_else(|| ExecError::new("bad ints")),
        d => Err(ExecError::new(format!(
            "expected i64 or i32 values, got {d}"
        ))),
    }
}

/// Chooses a tensor kernel for `node`, or `None`.
pub fn select(graph: &Graph, node: &Node) -> Option<TensorStep> {
    let is_tensor = |v: &ValueId| matches!(graph.value(*v).ty, ValueType::Tensor(_));
    if node.outputs.len() != 1
        || !node.op.subgraphs().is_empty()
        || !node.inputs.iter().flatten().all(is_tensor)
        || !node.outputs.iter().all(is_tensor)
    {
        return None;
    }
    let ins = &node.inputs;
    ins.first().copied().flatten()?;
    let step = |k: Box<dyn TensorKernel>| {
        Some(TensorStep {
            kernel: k,
            inputs: ins.clone(),
        })
    };
    match &node.op {
        Op::Shape(s) => step(Box::new(ShapeOf {
            start: s.start,
            end: s.end,
        })),
        Op::Identity(_) if ins.len() == 1 => step(Box::new(Reshaped(None))),
        Op::Flatten(f) => step(Box::new(Reshaped(Some(Reshape::Flatten(f.axis))))),
        Op::Squeeze(_) if ins.len() == 1 => step(Box::new(Reshaped(Some(Reshape::Squeeze(None))))),
        Op::Squeeze(_) | Op::Unsqueeze(_) => {
            // Constant axes only.
            let axes = const_ints(graph, ins.get(1).copied().flatten())??;
            let r = match node.op {
                Op::Squeeze(_) => Reshape::Squeeze(Some(axes)),
                _ => Reshape::Unsqueeze(axes),
            };
            Some(TensorStep {
                kernel: Box::new(Reshaped(Some(r))),
                inputs: vec![ins[0]],
            })
        }
        Op::Reshape(r) => step(Box::new(ReshapeBy {
            allowzero: r.allowzero != 0,
        })),
        Op::Concat(c) => {
            (!ins.is_empty() && ins.iter().all(|i| i.is_some())).then_some(())?;
            step(Box::new(ConcatAny { axis: c.axis }))
        }
        Op::Gather(g) => step(Box::new(GatherAny { axis: g.axis })),
        _ => None,
    }
}

/// Shape (with `start`/`end`).
struct ShapeOf {
    start: i64,
    end: Option<i64>,
}

impl TensorKernel for ShapeOf {
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError> {
        let s = input(ins, 0)?.shape();
        let r = s.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (a, b) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
        Ok(Tensor::vector(dims))
    }
}

/// The same elements under the shape a [`Reshape`] computes (`None`: unchanged).
struct Reshaped(Option<Reshape>);

impl TensorKernel for Reshaped {
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError> {
        let t = input(ins, 0)?;
        let shape = match &self.0 {
            None => t.shape().to_vec(),
            Some(r) => r.out_shape(&[t.shape()])?,
        };
        t.clone().reshape(shape).map_err(err)
    }
}

/// Reshape by a shape read at run time.
struct ReshapeBy {
    allowzero: bool,
}

impl TensorKernel for ReshapeBy {
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError> {
        let t = input(ins, 0)?;
        let r = Reshape::To {
            shape: ints(input(ins, 1)?)?,
            allowzero: self.allowzero,
        };
        let shape = r.out_shape(&[t.shape()])?;
        t.clone().reshape(shape).map_err(err)
    }
}

/// Concat of tensors of one dtype.
struct ConcatAny {
    axis: i64,
}

impl TensorKernel for ConcatAny {
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError> {
        let ts: Vec<&Tensor> = (0..ins.len())
            .map(|i| input(ins, i))
            .collect::<Result<_, _>>()?;
        let first = ts[0];
        if ts.iter().any(|t| t.dtype() != first.dtype()) {
            return Err(ExecError::new("Concat inputs have different dtypes"));
        }
        let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
        let shape = crate::movement::Concat { axis: self.axis }.out_shape(&shapes)?;
        let a = norm_axis(self.axis, shape.len())?;
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        dispatch_any!(first, |_v: &[T]| {
            let mut out: Vec<T> = Vec::with_capacity(numel(&shape)?);
            for o in 0..outer {
                for t in &ts {
                    let len = t.shape()[a] * inner;
                    let src = t.as_slice::<T>().map_err(err)?;
                    out.extend_from_slice(&src[o * len..(o + 1) * len]);
                }
            }
            Tensor::from_vec(shape.clone(), out).map_err(err)
        }, _ => Err(ExecError::new(format!("cannot concat {} tensors", first.dtype()))))
    }
}

/// Gather along `axis` with indices read at run time.
struct GatherAny {
    axis: i64,
}

impl TensorKernel for GatherAny {
    fn run(&self, ins: &[Option<Arc<Tensor>>]) -> Result<Tensor, ExecError> {
        let (t, it) = (input(ins, 0)?, input(ins, 1)?);
        let s = t.shape();
        let a = norm_axis(self.axis, s.len())?;
        let dim = s[a];
        let idx: Vec<usize> = ints(it)?
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + dim as i64 } else { i };
                if j < 0 || j >= dim as i64 {
                    Err(ExecError::new(format!(
                        "index {i} is out of range for a dim of {dim}"
                    )))
                } else {
                    Ok(j as usize)
                }
            })
            .collect::<Result<_, _>>()?;
        let mut shape = s[..a].to_vec();
        shape.extend_from_slice(it.shape());
        shape.extend_from_slice(&s[a + 1..]);
        let n = numel(&shape)?;
        let outer: usize = s[..a].iter().product();
        let inner: usize = s[a + 1..].iter().product();
        dispatch_any!(t, |v: &[T]| {
            let mut out: Vec<T> = Vec::with_capacity(n);
            for o in 0..outer {
                for &i in &idx {
                    out.extend_from_slice(&v[(o * dim + i) * inner..][..inner]);
                }
            }
            Tensor::from_vec(shape.clone(), out).map_err(err)
        }, _ => Err(ExecError::new(format!("cannot gather from a {} tensor", t.dtype()))))
    }
}
