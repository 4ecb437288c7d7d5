//! Layout: moving Transposes through elementwise ops, so that pairs of them meet and cancel.
//!
//! A Transpose commutes with every elementwise op: `f(Transpose(x, p)) == Transpose(f(x), p)` for a unary `f`,
//! and `g(Transpose(a, p), Transpose(b, p)) == Transpose(g(a, b), p)` for a binary `g` when `a` and `b` have the
//! same shape (no broadcasting), or when one side is a constant with a single element. Each unary op gets a
//! sinking rule (the Transpose moves towards the outputs) and a hoisting rule (towards the inputs); binary ops get
//! the sinking rules. Both forms stay in the e-graph and `transpose-transpose` (clean-up) composes the Transposes
//! that meet, so extraction sees layouts where they cancel. The rules are generated from the op lists below;
//! every generated rule has a soundness case (the tests build them from the same lists).

use egg::{Pattern, Rewrite};

use super::{Guard, Rule, bound, konst, tensor_type};

/// Elementwise ops with one input whose attributes do not depend on the layout.
pub const UNARY: &[&str] = &[
    "Abs",
    "Neg",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Erf",
    "Sqrt",
    "Reciprocal",
    "Gelu",
    "Swish",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Elu",
    "Clip",
];

/// Elementwise ops with two inputs (numpy broadcasting).
pub const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Max", "Min"];

/// The name of the rule that sinks a Transpose through `op` (`kind`: `sink`, `hoist`, `sink-same`, `sink-const`).
pub fn rule_name(kind: &str, op: &str) -> String {
    format!("transpose-{kind}-{}", op.to_ascii_lowercase())
}

fn pattern(s: &str) -> Pattern<super::super::lang::ENode> {
    s.parse().expect("layout patterns parse")
}

/// Whether classes `a` and `b` have the same known shape.
fn same_shape(a: &'static str, b: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let (x, y) = (bound(eg, s, a), bound(eg, s, b));
        match (tensor_type(eg, x), tensor_type(eg, y)) {
            (Some(p), Some(q)) => p.shape.is_some() && p.shape == q.shape,
            _ => false,
        }
    })
}

/// Whether the class bound to `c` is a constant with one element and a rank no larger than that of `x`'s class,
/// so broadcasting it commutes with any permutation of `x`'s axes.
fn single_element(c: &'static str, x: &'static str) -> Guard {
    Box::new(move |eg, _, s| {
        let Some(k) = konst(eg, bound(eg, s, c)) else {
            return false;
        };
        let rank = tensor_type(eg, bound(eg, s, x)).and_then(|t| t.rank());
        k.len() == 1 && rank.is_some_and(|r| k.rank() <= r)
    })
}

/// The layout rules.
pub fn rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for op in UNARY {
        // op(Transpose(x, p)) == Transpose(op(x), p).
        rules.push(
            Rewrite::new(
                rule_name("sink", op),
                pattern(&format!("({op} ?a (Transpose ?p ?x))")),
                pattern(&format!("(Transpose ?p ({op} ?a ?x))")),
            )
            .expect("a valid rule"),
        );
        // Transpose(op(x), p) == op(Transpose(x, p)).
        rules.push(
            Rewrite::new(
                rule_name("hoist", op),
                pattern(&format!("(Transpose ?p ({op} ?a ?x))")),
                pattern(&format!("({op} ?a (Transpose ?p ?x))")),
            )
            .expect("a valid rule"),
        );
    }
    for op in BINARY {
        // op(Transpose(a, p), Transpose(b, p)) == Transpose(op(a, b), p) when a and b have the same shape.
        rules.push(
            Rewrite::new(
                rule_name("sink-same", op),
                pattern(&format!("({op} {{}} (Transpose ?p ?a) (Transpose ?p ?b))")),
                egg::ConditionalApplier {
                    condition: same_shape("?a", "?b"),
                    applier: pattern(&format!("(Transpose ?p ({op} {{}} ?a ?b))")),
                },
            )
            .expect("a valid rule"),
        );
        // op(Transpose(a, p), c) == Transpose(op(a, c), p) for a one-element constant c.
        rules.push(
            Rewrite::new(
                rule_name("sink-const", op),
                pattern(&format!("({op} {{}} (Transpose ?p ?a) ?c)")),
                egg::ConditionalApplier {
                    condition: single_element("?c", "?a"),
                    applier: pattern(&format!("(Transpose ?p ({op} {{}} ?a ?c))")),
                },
            )
            .expect("a valid rule"),
        );
    }
    rules
}
