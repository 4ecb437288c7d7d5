//! jiuzhou's fused ops, FusedConv and FusedMatMul: their reference semantics *are* their decomposition.
//!
//! `FusedConv(X, W, B, Z)` evaluates `Conv(X, W, B)`, then `Add(·, Z)` if there is a residual, then the activation;
//! `FusedConvNhwc(X, W, B, Z)`, the channels-last form, evaluates `Conv(Transpose(X), Transpose(W), B)` (X from
//! `[N, s.., C]` to `[N, C, s..]`, W from `[k.., C/g, M]` to `[M, C/g, k..]`), transposes the result back to
//! `[N, o.., M]`, then adds `Z` and applies the activation: the channels-first computation with Transposes around
//! it, bit for bit what FusedConv computes on the transposed tensors. The channels-last pools, MaxPoolNhwc and
//! AveragePoolNhwc, are likewise the channels-first pool between Transposes.
//! `FusedMatMul(A, B, bias, Z)` evaluates `MatMul(A, B)`, then `Add(·, bias)`, `Add(·, Z)` and the activation. Each
//! step is the existing op's own evaluation ([`EvalOp`]), so a fused node computes exactly what the nodes it
//! replaced computed, rounding included, and every target can be checked against it.
//!
//! `FusedElementwise(inputs...)` runs its expression's steps in program order on a stack of values, each op step
//! the ONNX op it stands for (`ElementwiseExpr`'s docs), so it equals the chain of elementwise ops it replaced.

use std::sync::Arc;

use jiuzhou_ir::ops::expr::ExprStep;
use jiuzhou_ir::ops::own::OnnxActivation;
use jiuzhou_ir::ops::{
    Activation, Add, AveragePoolNhwc, Clip, FusedConv, FusedConvNhwc, FusedElementwise,
    FusedMatMul, MatMul, MaxPoolNhwc, Mul, Sigmoid, Transpose,
};
use jiuzhou_ir::{Tensor, Value};

use crate::ops::elementwise::cast::cast;
use crate::{EvalCx, EvalError, EvalOp};

/// Evaluates `op` on `inputs` in the context of the fused node `cx`, returning its single output.
fn eval1(cx: &EvalCx<'_>, op: &impl EvalOp, inputs: &[Option<Value>]) -> Result<Value, EvalError> {
    let sub = EvalCx {
        inputs,
        num_outputs: 1,
        interp: cx.interp,
        scope: cx.scope,
    };
    op.eval(&sub)?
        .into_iter()
        .next()
        .ok_or_else(|| EvalError::new("an op of the decomposition returned no output"))
}

/// `y + addend` if the fused node has input `i`, else `y`.
fn add_input(cx: &EvalCx<'_>, y: Value, i: usize) -> Result<Value, EvalError> {
    if !cx.has_input(i) {
        return Ok(y);
    }
    let addend = cx.value(i)?.clone();
    eval1(cx, &Add::default(), &[Some(y), Some(addend)])
}

/// Applies `act` to `y` with the ONNX ops it stands for.
pub fn apply_activation(cx: &EvalCx<'_>, act: &Activation, y: Value) -> Result<Value, EvalError> {
    match act.onnx_form() {
        OnnxActivation::Identity => Ok(y),
        OnnxActivation::Unary(op) => eval1(cx, &op, &[Some(y)]),
        OnnxActivation::Clip { min, max } => {
            let dtype = y
                .as_tensor()
                .ok_or_else(|| EvalError::new("the fused result is not a tensor"))?
                .dtype();
            let bound = |v: f32| -> Result<Option<Value>, EvalError> {
                let t = cast(&Tensor::scalar(v), dtype, true, "up")?;
                Ok(Some(Value::Tensor(Arc::new(t))))
            };
            eval1(cx, &Clip::default(), &[Some(y), bound(min)?, bound(max)?])
        }
        OnnxActivation::XTimesSigmoid => {
            let s = eval1(cx, &Sigmoid::default(), &[Some(y.clone())])?;
            eval1(cx, &Mul::default(), &[Some(y), Some(s)])
        }
    }
}

impl EvalOp for FusedConv {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let conv = self.conv();
        let ins: Vec<Option<Value>> = (0..3)
            .map(|i| cx.inputs.get(i).cloned().flatten())
            .collect();
        let y = eval1(cx, &conv, &ins)?;
        let y = add_input(cx, y, 3)?;
        Ok(vec![apply_activation(cx, &self.activation, y)?])
    }
}

/// The rank of input `i`, a tensor.
fn rank_of(cx: &EvalCx<'_>, i: usize) -> Result<usize, EvalError> {
    cx.value(i)?
        .as_tensor()
        .map(|t| t.shape().len())
        .ok_or_else(|| EvalError::new(format!("input {i} is not a tensor")))
}

/// `Transpose(v, perm)`.
fn transpose(cx: &EvalCx<'_>, v: Value, perm: Vec<i64>) -> Result<Value, EvalError> {
    eval1(cx, &Transpose { perm: Some(perm) }, &[Some(v)])
}

impl EvalOp for FusedConvNhwc {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (rx, rw) = (rank_of(cx, 0)?, rank_of(cx, 1)?);
        if rx < 3 || rw != rx {
            return Err(EvalError::new(format!(
                "FusedConvNhwc: input of rank {rx} and weight of rank {rw} (expected equal ranks of at least 3)"
            )));
        }
        let r = rx as i64;
        // X [N, s.., C] -> [N, C, s..]; W [k.., C/g, M] -> [M, C/g, k..].
        let x_perm: Vec<i64> = [0, r - 1].into_iter().chain(1..r - 1).collect();
        let w_perm: Vec<i64> = [r - 1, r - 2].into_iter().chain(0..r - 2).collect();
        let x = transpose(cx, cx.value(0)?.clone(), x_perm)?;
        let w = transpose(cx, cx.value(1)?.clone(), w_perm)?;
        let conv = self.conv();
        let b = cx.inputs.get(2).cloned().flatten();
        let y = eval1(cx, &conv, &[Some(x), Some(w), b])?;
        // [N, M, o..] -> [N, o.., M].
        let y_perm: Vec<i64> = [0].into_iter().chain(2..r).chain([1]).collect();
        let y = transpose(cx, y, y_perm)?;
        let y = add_input(cx, y, 3)?;
        Ok(vec![apply_activation(cx, &self.activation, y)?])
    }
}

/// `op` (a channels-first pool) on the channels-first transpose of input 0, transposed back to channels-last.
fn pool_nhwc(cx: &EvalCx<'_>, op: &impl EvalOp) -> Result<Vec<Value>, EvalError> {
    let r = rank_of(cx, 0)? as i64;
    if r < 3 {
        return Err(EvalError::new(format!(
            "a channels-last pool needs rank 3 or more, got {r}"
        )));
    }
    let x_perm: Vec<i64> = [0, r - 1].into_iter().chain(1..r - 1).collect();
    let y_perm: Vec<i64> = [0].into_iter().chain(2..r).chain([1]).collect();
    let x = transpose(cx, cx.value(0)?.clone(), x_perm)?;
    let y = eval1(cx, op, &[Some(x)])?;
    Ok(vec![transpose(cx, y, y_perm)?])
}

impl EvalOp for MaxPoolNhwc {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        pool_nhwc(cx, &self.channels_first())
    }
}

impl EvalOp for AveragePoolNhwc {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        pool_nhwc(cx, &self.channels_first())
    }
}

impl EvalOp for FusedMatMul {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let ins = [Some(cx.value(0)?.clone()), Some(cx.value(1)?.clone())];
        let y = eval1(cx, &MatMul::default(), &ins)?;
        let y = add_input(cx, y, 2)?;
        let y = add_input(cx, y, 3)?;
        Ok(vec![apply_activation(cx, &self.activation, y)?])
    }
}

impl EvalOp for FusedElementwise {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let mut stack: Vec<Value> = Vec::with_capacity(self.expr.max_depth());
        let underflow = || EvalError::new("FusedElementwise: the expression's stack underflowed");
        for step in self.expr.steps() {
            match step {
                ExprStep::Input(k) => stack.push(cx.value(*k as usize)?.clone()),
                ExprStep::Unary(_) => {
                    let x = stack.pop().ok_or_else(underflow)?;
                    let op = step.onnx_op().ok_or_else(underflow)?;
                    stack.push(eval1(cx, &op, &[Some(x)])?);
                }
                ExprStep::Binary(_) => {
                    let b = stack.pop().ok_or_else(underflow)?;
                    let a = stack.pop().ok_or_else(underflow)?;
                    let op = step.onnx_op().ok_or_else(underflow)?;
                    stack.push(eval1(cx, &op, &[Some(a), Some(b)])?);
                }
            }
        }
        match (stack.pop(), stack.is_empty()) {
            (Some(y), true) => Ok(vec![y]),
            _ => Err(EvalError::new(
                "FusedElementwise: the expression must leave exactly one value",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{
        Activation, FusedConv, FusedMatMul, Gelu, HardSwish, LeakyRelu, Relu, Tanh,
    };
    use jiuzhou_ir::{Graph, GraphBuilder, Op, Tensor, TensorType, Value};

    use crate::Interpreter;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn t(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_vec(shape.to_vec(), lcg(seed, shape.iter().product())).unwrap()
    }

    fn run(g: &Graph, inputs: &[Tensor]) -> Vec<f32> {
        let out = Interpreter::default()
            .run(g, inputs.iter().cloned().map(Value::from).collect())
            .unwrap();
        out[0]
            .as_tensor()
            .unwrap()
            .to_f64_vec()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    /// The unfused graph `act(Conv(x, w, b) + z)` with the activation written as ONNX ops.
    fn unfused_act(
        b: &mut GraphBuilder,
        act: Activation,
        y: jiuzhou_ir::ValueId,
    ) -> jiuzhou_ir::ValueId {
        match act {
            Activation::None => y,
            Activation::Relu => b.node1(Relu::default(), &[y]).unwrap(),
            Activation::Clip { min, max } => {
                let lo = b.constant("lo", Tensor::scalar(min));
                let hi = b.constant("hi", Tensor::scalar(max));
                b.node1(jiuzhou_ir::ops::Clip::default(), &[y, lo, hi])
                    .unwrap()
            }
            Activation::Sigmoid => b.node1(jiuzhou_ir::ops::Sigmoid::default(), &[y]).unwrap(),
            Activation::Silu => {
                let s = b.node1(jiuzhou_ir::ops::Sigmoid::default(), &[y]).unwrap();
                b.node1(jiuzhou_ir::ops::Mul::default(), &[y, s]).unwrap()
            }
            Activation::Gelu => b.node1(Gelu::default(), &[y]).unwrap(),
            Activation::GeluTanh => b
                .node1(
                    Gelu {
                        approximate: "tanh".into(),
                    },
                    &[y],
                )
                .unwrap(),
            Activation::HardSwish => b.node1(HardSwish::default(), &[y]).unwrap(),
            Activation::LeakyRelu { alpha } => b.node1(LeakyRelu { alpha }, &[y]).unwrap(),
            Activation::Tanh => b.node1(Tanh::default(), &[y]).unwrap(),
        }
    }

    const ACTS: [Activation; 10] = [
        Activation::None,
        Activation::Relu,
        Activation::Clip {
            min: -0.5,
            max: 0.75,
        },
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::HardSwish,
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Tanh,
    ];

    #[test]
    fn fused_conv_is_its_decomposition() {
        let (xs, ws, zs) = ([1, 2, 5, 5], [3, 2, 3, 3], [1, 3, 5, 5]);
        for act in ACTS {
            let fused = {
                let mut b = GraphBuilder::new("fused");
                let x = b.input("x", TensorType::known(jiuzhou_ir::DType::F32, &xs));
                let z = b.input("z", TensorType::known(jiuzhou_ir::DType::F32, &zs));
                let w = b.constant("w", t(&ws, 1));
                let bias = b.constant("b", t(&[3], 2));
                let op = FusedConv {
                    pads: Some(vec![1; 4]),
                    activation: act,
                    ..Default::default()
                };
                let y = b.node1(op, &[x, w, bias, z]).unwrap();
                b.output(y);
                b.finish().unwrap()
            };
            let plain = {
                let mut b = GraphBuilder::new("plain");
                let x = b.input("x", TensorType::known(jiuzhou_ir::DType::F32, &xs));
                let z = b.input("z", TensorType::known(jiuzhou_ir::DType::F32, &zs));
                let w = b.constant("w", t(&ws, 1));
                let bias = b.constant("b", t(&[3], 2));
                let op = jiuzhou_ir::ops::Conv {
                    pads: Some(vec![1; 4]),
                    ..Default::default()
                };
                let c = b.node1(op, &[x, w, bias]).unwrap();
                let s = b.node1(jiuzhou_ir::ops::Add::default(), &[c, z]).unwrap();
                let y = unfused_act(&mut b, act, s);
                b.output(y);
                b.finish().unwrap()
            };
            let ins = [t(&xs, 3), t(&zs, 4)];
            assert_eq!(run(&fused, &ins), run(&plain, &ins), "{act}");
        }
    }

    #[test]
    fn fused_matmul_is_its_decomposition() {
        for act in ACTS {
            let build = |fused: bool| {
                let mut b = GraphBuilder::new("g");
                let a = b.input("a", TensorType::known(jiuzhou_ir::DType::F32, &[2, 3, 4]));
                let z = b.input("z", TensorType::known(jiuzhou_ir::DType::F32, &[2, 3, 5]));
                let w = b.constant("w", t(&[4, 5], 5));
                let bias = b.constant("bias", t(&[5], 6));
                let y = if fused {
                    b.node1(FusedMatMul { activation: act }, &[a, w, bias, z])
                        .unwrap()
                } else {
                    let m = b
                        .node1(jiuzhou_ir::ops::MatMul::default(), &[a, w])
                        .unwrap();
                    let m = b
                        .node1(jiuzhou_ir::ops::Add::default(), &[m, bias])
                        .unwrap();
                    let m = b.node1(jiuzhou_ir::ops::Add::default(), &[m, z]).unwrap();
                    unfused_act(&mut b, act, m)
                };
                b.output(y);
                b.finish().unwrap()
            };
            let ins = [t(&[2, 3, 4], 7), t(&[2, 3, 5], 8)];
            assert_eq!(run(&build(true), &ins), run(&build(false), &ins), "{act}");
        }
    }

    #[test]
    fn fused_matmul_without_bias_takes_a_residual() {
        let mut b = GraphBuilder::new("g");
        let a = b.input("a", TensorType::known(jiuzhou_ir::DType::F32, &[2, 2]));
        let w = b.constant(
            "w",
            Tensor::from_vec(vec![2, 2], vec![1.0f32, 0.0, 0.0, 1.0]).unwrap(),
        );
        let z = b.constant(
            "z",
            Tensor::from_vec(vec![2, 2], vec![-10.0f32, 1.0, 1.0, 1.0]).unwrap(),
        );
        let op: Op = FusedMatMul {
            activation: Activation::Relu,
        }
        .into();
        let y = b
            .node_opt(op, &[Some(a), Some(w), None, Some(z)], 1)
            .unwrap()[0];
        b.output(y);
        let g = b.finish().unwrap();
        let ins = [Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap()];
        assert_eq!(run(&g, &ins), vec![0.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn fused_elementwise_is_its_chain_with_broadcasting() {
        use jiuzhou_ir::ops::{Add, ElementwiseExpr, FusedElementwise, Mul, Sigmoid, Sub};
        let f32t = |d: &[usize]| TensorType::known(jiuzhou_ir::DType::F32, d);
        // sigmoid(x - y) * x + z, with y broadcast along rows and z a scalar.
        let build = |fused: bool| {
            let mut b = GraphBuilder::new("g");
            let x = b.input("x", f32t(&[2, 3]));
            let y = b.input("y", f32t(&[3]));
            let z = b.input("z", f32t(&[]));
            let out = if fused {
                let expr: ElementwiseExpr = "i0 i1 sub sigmoid i0 mul i2 add".parse().unwrap();
                b.node1(FusedElementwise { expr }, &[x, y, z]).unwrap()
            } else {
                let d = b.node1(Sub::default(), &[x, y]).unwrap();
                let s = b.node1(Sigmoid::default(), &[d]).unwrap();
                let m = b.node1(Mul::default(), &[s, x]).unwrap();
                b.node1(Add::default(), &[m, z]).unwrap()
            };
            b.output(out);
            b.finish().unwrap()
        };
        let ins = [t(&[2, 3], 1), t(&[3], 2), t(&[], 3)];
        let fused = build(true);
        assert_eq!(fused.value(fused.outputs[0]).ty, f32t(&[2, 3]).into());
        assert_eq!(run(&fused, &ins), run(&build(false), &ins));
    }

    #[test]
    fn channels_last_conv_by_hand() {
        use jiuzhou_ir::ops::FusedConvNhwc;
        use std::sync::Arc;
        let eval = |op: FusedConvNhwc, ins: Vec<Tensor>| -> (Vec<usize>, Vec<f64>) {
            let ins: Vec<Option<Arc<Tensor>>> =
                ins.into_iter().map(|t| Some(Arc::new(t))).collect();
            let out = Interpreter::default()
                .eval_op(&Op::FusedConvNhwc(op), &ins, 1)
                .unwrap();
            let t = out[0].as_tensor().unwrap();
            (t.shape().to_vec(), t.to_f64_vec().unwrap())
        };
        // A 1×1 conv of one pixel with C = 2, M = 3: y[m] = Σ_c x[c] · W[0, 0, c, m] (HWIO), then + b, + z, relu.
        let x = Tensor::from_vec(vec![1, 1, 1, 2], vec![1.0f32, 10.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Tensor::vector(vec![0.5f32, -100.0, 0.0]);
        let z = Tensor::from_vec(vec![1, 1, 1, 3], vec![1.0f32, 0.0, -1.0]).unwrap();
        let op = FusedConvNhwc {
            activation: Activation::Relu,
            ..Default::default()
        };
        assert_eq!(
            eval(op, vec![x, w, b, z]),
            (vec![1, 1, 1, 3], vec![42.5, 0.0, 62.0])
        );
        // A depthwise 1×2 kernel over a 1×3 image of 2 channels (NHWC: channels innermost), no padding:
        // y[0, 0, j, c] = x[0, 0, j, c] · W[0, 0, 0, c] + x[0, 0, j + 1, c] · W[0, 1, 0, c].
        let x = Tensor::from_vec(vec![1, 1, 3, 2], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 2, 1, 2], vec![1.0f32, 10.0, 100.0, 1000.0]).unwrap();
        let dw = FusedConvNhwc {
            group: 2,
            ..Default::default()
        };
        assert_eq!(
            eval(dw, vec![x, w]),
            (vec![1, 1, 2, 2], vec![301.0, 4020.0, 503.0, 6040.0])
        );
    }
}
