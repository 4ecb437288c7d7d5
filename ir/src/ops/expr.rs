//! The expression of jiuzhou's `FusedElementwise` op: a postfix program over the node's inputs.
//!
//! An [`ElementwiseExpr`] is a sequence of [`ExprStep`]s run on a stack: `iK` pushes input `K`, a unary op replaces
//! the top of the stack, a binary op pops its right operand, then its left one, and pushes the result. A valid
//! program never pops an empty stack, ends with exactly one value, and reads every input `0..n` at least once
//! (so the node's input count is the expression's). Each op is exactly one ONNX op ([`ExprStep::onnx_op`]), with
//! ONNX's numpy broadcasting, so the reference semantics of the fused node are those ops applied in program order:
//! the value of the fused node equals that of the chain it replaced, rounding included.
//!
//! The text form is the steps separated by single spaces, ops in snake case: `i0 i1 add relu`, `i0 i0 sigmoid mul`.

use std::fmt;
use std::str::FromStr;

use crate::attr::{Attr, AttrValue};

/// The most steps an expression may have (bounds the optimizer's growth and a kernel's stack).
pub const MAX_EXPR_STEPS: usize = 64;

/// A unary elementwise op of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprUnary {
    /// ONNX `Neg`.
    Neg,
    /// ONNX `Abs`.
    Abs,
    /// ONNX `Relu`.
    Relu,
    /// ONNX `Sqrt`.
    Sqrt,
    /// ONNX `Exp`.
    Exp,
    /// ONNX `Log`.
    Log,
    /// ONNX `Tanh`.
    Tanh,
    /// ONNX `Sigmoid`.
    Sigmoid,
    /// ONNX `Erf`.
    Erf,
    /// ONNX `Reciprocal`.
    Reciprocal,
    /// ONNX `Floor`.
    Floor,
    /// ONNX `Ceil`.
    Ceil,
    /// SiLU: ONNX `Swish` with `alpha = 1` (`x · sigmoid(x)`, rounded once).
    Silu,
    /// ONNX `Gelu` (erf form, `approximate = "none"`).
    Gelu,
}

impl ExprUnary {
    /// How many basic elementwise ops the step stands for: 1, except for the composites (SiLU is `x · sigmoid(x)`,
    /// GELU `½ · x · (1 + erf(x / √2))`). The optimizer prefers a composite step to its spelled-out form.
    pub fn weight(self) -> usize {
        match self {
            ExprUnary::Silu => 2,
            ExprUnary::Gelu => 5,
            _ => 1,
        }
    }
}

/// A binary elementwise op of an expression (numpy broadcasting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprBinary {
    /// ONNX `Add`.
    Add,
    /// ONNX `Sub`.
    Sub,
    /// ONNX `Mul`.
    Mul,
    /// ONNX `Div`.
    Div,
    /// ONNX `Max` with two inputs.
    Max,
    /// ONNX `Min` with two inputs.
    Min,
    /// ONNX `Pow`.
    Pow,
}

/// One step of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprStep {
    /// Push input `K`.
    Input(u32),
    /// Apply a unary op to the top of the stack.
    Unary(ExprUnary),
    /// Pop `b`, pop `a`, push `op(a, b)`.
    Binary(ExprBinary),
}

const UNARY_NAMES: &[(ExprUnary, &str)] = &[
    (ExprUnary::Neg, "neg"),
    (ExprUnary::Abs, "abs"),
    (ExprUnary::Relu, "relu"),
    (ExprUnary::Sqrt, "sqrt"),
    (ExprUnary::Exp, "exp"),
    (ExprUnary::Log, "log"),
    (ExprUnary::Tanh, "tanh"),
    (ExprUnary::Sigmoid, "sigmoid"),
    (ExprUnary::Erf, "erf"),
    (ExprUnary::Reciprocal, "reciprocal"),
    (ExprUnary::Floor, "floor"),
    (ExprUnary::Ceil, "ceil"),
    (ExprUnary::Silu, "silu"),
    (ExprUnary::Gelu, "gelu"),
];

const BINARY_NAMES: &[(ExprBinary, &str)] = &[
    (ExprBinary::Add, "add"),
    (ExprBinary::Sub, "sub"),
    (ExprBinary::Mul, "mul"),
    (ExprBinary::Div, "div"),
    (ExprBinary::Max, "max"),
    (ExprBinary::Min, "min"),
    (ExprBinary::Pow, "pow"),
];

impl ExprStep {
    /// The step an ONNX op with `inputs` inputs stands for, if it is one of the expression's ops (Max and Min only
    /// with two inputs; ops with attributes never).
    pub fn from_op(op: &super::Op, inputs: usize) -> Option<ExprStep> {
        use super::Op;
        let u = |u| (inputs == 1).then_some(ExprStep::Unary(u));
        let b = |b| (inputs == 2).then_some(ExprStep::Binary(b));
        match op {
            Op::Neg(_) => u(ExprUnary::Neg),
            Op::Abs(_) => u(ExprUnary::Abs),
            Op::Relu(_) => u(ExprUnary::Relu),
            Op::Sqrt(_) => u(ExprUnary::Sqrt),
            Op::Exp(_) => u(ExprUnary::Exp),
            Op::Log(_) => u(ExprUnary::Log),
            Op::Tanh(_) => u(ExprUnary::Tanh),
            Op::Sigmoid(_) => u(ExprUnary::Sigmoid),
            Op::Erf(_) => u(ExprUnary::Erf),
            Op::Reciprocal(_) => u(ExprUnary::Reciprocal),
            Op::Floor(_) => u(ExprUnary::Floor),
            Op::Ceil(_) => u(ExprUnary::Ceil),
            Op::Swish(w) if w.alpha == 1.0 => u(ExprUnary::Silu),
            Op::Gelu(g) if g.approximate == "none" => u(ExprUnary::Gelu),
            Op::Add(_) => b(ExprBinary::Add),
            Op::Sub(_) => b(ExprBinary::Sub),
            Op::Mul(_) => b(ExprBinary::Mul),
            Op::Div(_) => b(ExprBinary::Div),
            Op::Max(_) => b(ExprBinary::Max),
            Op::Min(_) => b(ExprBinary::Min),
            Op::Pow(_) => b(ExprBinary::Pow),
            _ => None,
        }
    }

    /// [`ExprStep::from_op`] by the op's name, for an op with default attributes (every op of an expression can be
    /// written so: `Swish`'s default alpha is 1, `Gelu`'s default form erf).
    pub fn from_op_name(name: &str, inputs: usize) -> Option<ExprStep> {
        let unary = UNARY_NAMES.iter().map(|(u, _)| ExprStep::Unary(*u));
        let binary = BINARY_NAMES.iter().map(|(b, _)| ExprStep::Binary(*b));
        let want_unary = match inputs {
            1 => true,
            2 => false,
            _ => return None,
        };
        unary
            .chain(binary)
            .filter(|s| matches!(s, ExprStep::Unary(_)) == want_unary)
            .find(|s| s.onnx_op().is_some_and(|op| op.name() == name))
    }

    /// The ONNX op of an op step (`None` for an input).
    pub fn onnx_op(&self) -> Option<super::Op> {
        use super::*;
        Some(match self {
            ExprStep::Input(_) => return None,
            ExprStep::Unary(u) => match u {
                ExprUnary::Neg => Op::Neg(Neg::default()),
                ExprUnary::Abs => Op::Abs(Abs::default()),
                ExprUnary::Relu => Op::Relu(Relu::default()),
                ExprUnary::Sqrt => Op::Sqrt(Sqrt::default()),
                ExprUnary::Exp => Op::Exp(Exp::default()),
                ExprUnary::Log => Op::Log(Log::default()),
                ExprUnary::Tanh => Op::Tanh(Tanh::default()),
                ExprUnary::Sigmoid => Op::Sigmoid(Sigmoid::default()),
                ExprUnary::Erf => Op::Erf(Erf::default()),
                ExprUnary::Reciprocal => Op::Reciprocal(Reciprocal::default()),
                ExprUnary::Floor => Op::Floor(Floor::default()),
                ExprUnary::Ceil => Op::Ceil(Ceil::default()),
                ExprUnary::Silu => Op::Swish(Swish::default()),
                ExprUnary::Gelu => Op::Gelu(Gelu::default()),
            },
            ExprStep::Binary(b) => match b {
                ExprBinary::Add => Op::Add(Add::default()),
                ExprBinary::Sub => Op::Sub(Sub::default()),
                ExprBinary::Mul => Op::Mul(Mul::default()),
                ExprBinary::Div => Op::Div(Div::default()),
                ExprBinary::Max => Op::Max(Max::default()),
                ExprBinary::Min => Op::Min(Min::default()),
                ExprBinary::Pow => Op::Pow(Pow::default()),
            },
        })
    }
}

impl fmt::Display for ExprStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExprStep::Input(k) => write!(f, "i{k}"),
            ExprStep::Unary(u) => {
                let name = UNARY_NAMES.iter().find(|(x, _)| x == u).map(|(_, n)| *n);
                f.write_str(name.unwrap_or("?"))
            }
            ExprStep::Binary(b) => {
                let name = BINARY_NAMES.iter().find(|(x, _)| x == b).map(|(_, n)| *n);
                f.write_str(name.unwrap_or("?"))
            }
        }
    }
}

/// A valid postfix expression over a fused node's inputs. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ElementwiseExpr {
    steps: Vec<ExprStep>,
    inputs: usize,
    depth: usize,
}

/// Why an expression is not valid.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("bad elementwise expression `{text}`: {why}")]
pub struct ExprError {
    /// The expression's text.
    pub text: String,
    /// What is wrong.
    pub why: String,
}

impl Default for ElementwiseExpr {
    /// The identity of input 0: `i0`.
    fn default() -> ElementwiseExpr {
        ElementwiseExpr {
            steps: vec![ExprStep::Input(0)],
            inputs: 1,
            depth: 1,
        }
    }
}

impl ElementwiseExpr {
    /// Checks `steps` (see the module docs) and makes the expression.
    pub fn new(steps: Vec<ExprStep>) -> Result<ElementwiseExpr, ExprError> {
        let bad = |why: &str| ExprError {
            text: steps
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            why: why.to_string(),
        };
        if steps.len() > MAX_EXPR_STEPS {
            return Err(bad(&format!("more than {MAX_EXPR_STEPS} steps")));
        }
        let (mut depth, mut max_depth) = (0usize, 0usize);
        let mut seen: Vec<bool> = Vec::new();
        for s in &steps {
            match s {
                ExprStep::Input(k) => {
                    let k = *k as usize;
                    if k >= MAX_EXPR_STEPS {
                        return Err(bad("input index out of range"));
                    }
                    if seen.len() <= k {
                        seen.resize(k + 1, false);
                    }
                    seen[k] = true;
                    depth += 1;
                    max_depth = max_depth.max(depth);
                }
                ExprStep::Unary(_) if depth >= 1 => {}
                ExprStep::Binary(_) if depth >= 2 => depth -= 1,
                _ => return Err(bad("an op has too few operands")),
            }
        }
        if depth != 1 {
            return Err(bad("the program must leave exactly one value"));
        }
        if seen.iter().any(|s| !s) {
            return Err(bad("every input 0..n must be read"));
        }
        Ok(ElementwiseExpr {
            inputs: seen.len(),
            steps,
            depth: max_depth,
        })
    }

    /// The steps, in program order.
    pub fn steps(&self) -> &[ExprStep] {
        &self.steps
    }

    /// How many inputs the expression reads (`i0` to `i{n-1}`).
    pub fn num_inputs(&self) -> usize {
        self.inputs
    }

    /// How many op steps (not input pushes) it has.
    pub fn num_ops(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| !matches!(s, ExprStep::Input(_)))
            .count()
    }

    /// The deepest the stack gets.
    pub fn max_depth(&self) -> usize {
        self.depth
    }
}

impl fmt::Display for ElementwiseExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl FromStr for ElementwiseExpr {
    type Err = ExprError;

    fn from_str(s: &str) -> Result<ElementwiseExpr, ExprError> {
        let bad = |why: String| ExprError {
            text: s.to_string(),
            why,
        };
        let mut steps = Vec::new();
        for tok in s.split(' ') {
            let step = if let Some(k) = tok.strip_prefix('i')
                && !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_digit())
                && (k == "0" || !k.starts_with('0'))
            {
                ExprStep::Input(
                    k.parse()
                        .map_err(|_| bad(format!("bad input index `{tok}`")))?,
                )
            } else if let Some((u, _)) = UNARY_NAMES.iter().find(|(_, n)| *n == tok) {
                ExprStep::Unary(*u)
            } else if let Some((b, _)) = BINARY_NAMES.iter().find(|(_, n)| *n == tok) {
                ExprStep::Binary(*b)
            } else {
                return Err(bad(format!("unknown step `{tok}`")));
            };
            steps.push(step);
            if steps.len() > MAX_EXPR_STEPS {
                return Err(bad(format!("more than {MAX_EXPR_STEPS} steps")));
            }
        }
        ElementwiseExpr::new(steps).map_err(|e| bad(e.why))
    }
}

impl AttrValue for ElementwiseExpr {
    const KIND: &'static str = "string (an elementwise expression)";

    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    fn to_attr(&self) -> Attr {
        Attr::String(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;

    #[test]
    fn expressions_round_trip_through_text_and_are_checked() {
        for text in [
            "i0",
            "i0 i1 add relu",
            "i0 i0 sigmoid mul",
            "i1 i0 sub i2 pow neg abs sqrt exp log tanh erf reciprocal floor ceil",
            "i0 i1 max i2 min i3 div",
            "i0 silu i1 mul gelu",
        ] {
            let e: ElementwiseExpr = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
            assert_eq!(ElementwiseExpr::from_attr(&e.to_attr()), Some(e));
        }
        let e: ElementwiseExpr = "i0 i1 add i0 mul relu".parse().unwrap();
        assert_eq!((e.num_inputs(), e.num_ops(), e.max_depth()), (2, 3, 2));
        for bad in [
            "", "add", "i0 add", "i0 i1", "i1 relu", "i0  relu", "i00", "ix", "i0 elu", "I0",
            "i0 relu ",
        ] {
            assert!(bad.parse::<ElementwiseExpr>().is_err(), "{bad:?}");
        }
        let long = vec!["i0"; MAX_EXPR_STEPS + 1].join(" ");
        assert!(long.parse::<ElementwiseExpr>().is_err());
    }

    #[test]
    fn every_step_is_one_onnx_op_and_back() {
        for (u, _) in UNARY_NAMES {
            let op = ExprStep::Unary(*u).onnx_op().unwrap();
            assert_eq!(ExprStep::from_op(&op, 1), Some(ExprStep::Unary(*u)));
            assert_eq!(ExprStep::from_op(&op, 2), None);
        }
        for (b, _) in BINARY_NAMES {
            let op = ExprStep::Binary(*b).onnx_op().unwrap();
            assert_eq!(ExprStep::from_op(&op, 2), Some(ExprStep::Binary(*b)));
            assert_eq!(
                ExprStep::from_op_name(op.name(), 2),
                Some(ExprStep::Binary(*b))
            );
            assert_eq!(ExprStep::from_op_name(op.name(), 1), None);
            assert_eq!(ExprStep::from_op_name(op.name(), 3), None);
        }
        assert_eq!(
            ExprStep::from_op_name("Relu", 1),
            Some(ExprStep::Unary(ExprUnary::Relu))
        );
        assert_eq!(ExprStep::from_op_name("Elu", 1), None);
        assert_eq!(
            ExprStep::from_op(&Op::Swish(crate::ops::Swish { alpha: 0.5 }), 1),
            None
        );
        assert_eq!(
            ExprStep::from_op(
                &Op::Gelu(crate::ops::Gelu {
                    approximate: "tanh".into()
                }),
                1
            ),
            None
        );
        assert_eq!(ExprStep::from_op(&Op::Max(Default::default()), 3), None);
        assert_eq!(ExprStep::Input(0).onnx_op(), None);
    }
}
