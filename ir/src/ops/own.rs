//! jiuzhou's own ops: ops that are not ONNX operators, made by the optimizer (fusions and composites).
//!
//! They are declared in the op table like every other op (their docs start with `jiuzhou's own`), and listed once
//! in [`OWN_OPS`]: the ONNX importer refuses these names in model files (they are not ONNX ops), and a test keeps
//! the list and the table in step. Adding an own op = one table entry + one name here.
//!
//! This module also holds the attribute types that only own ops use, such as the [`Activation`] of the fused ops.

use std::fmt;
use std::str::FromStr;

use crate::attr::{Attr, AttrValue};

/// The names of jiuzhou's own ops (not ONNX operators), sorted.
pub const OWN_OPS: &[&str] = &[
    "AveragePoolNhwc",
    "FusedConv",
    "FusedConvNhwc",
    "FusedElementwise",
    "FusedMatMul",
    "MaxPoolNhwc",
];

/// Whether op type `name` is one of jiuzhou's own ops.
pub fn is_own_name(name: &str) -> bool {
    OWN_OPS.contains(&name)
}

impl super::Op {
    /// Whether this op is one of jiuzhou's own ops rather than an ONNX operator.
    pub fn is_jiuzhou_own(&self) -> bool {
        is_own_name(self.name())
    }
}

/// The activation a fused op applies last, elementwise.
///
/// Each is exactly one ONNX op (or a fixed composition of them) applied to the fused op's result: its reference
/// semantics *is* that op, see [`Activation::onnx_form`]. The attribute's text form is the name in snake case,
/// with parameters in parentheses: `none`, `relu`, `clip(0.0,6.0)`, `leaky_relu(0.01)`; floats are written so that
/// they read back bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// The identity.
    #[default]
    None,
    /// `Relu(x) = max(x, 0)`.
    Relu,
    /// `Clip(x, min, max)` (Relu6 is `Clip(x, 0, 6)`).
    Clip {
        /// The lower bound.
        min: f32,
        /// The upper bound.
        max: f32,
    },
    /// `Sigmoid(x) = 1 / (1 + e^−x)`.
    Sigmoid,
    /// SiLU (swish with β = 1): `x · Sigmoid(x)`.
    Silu,
    /// `Gelu(x)` with the exact (erf) form.
    Gelu,
    /// `Gelu(x, approximate = "tanh")`.
    GeluTanh,
    /// `HardSwish(x) = x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
    /// `LeakyRelu(x, alpha)`.
    LeakyRelu {
        /// The slope for negative inputs.
        alpha: f32,
    },
    /// `Tanh(x)`.
    Tanh,
}

/// How an [`Activation`] is written with ONNX ops: what the reference semantics evaluate.
#[derive(Clone, Debug, PartialEq)]
pub enum OnnxActivation {
    /// No op.
    Identity,
    /// One unary op applied to the value.
    Unary(super::Op),
    /// `Clip(x, min, max)` with scalar bounds of the value's dtype.
    Clip {
        /// The lower bound.
        min: f32,
        /// The upper bound.
        max: f32,
    },
    /// `x · Sigmoid(x)`.
    XTimesSigmoid,
}

impl Activation {
    /// The activation written with ONNX ops.
    pub fn onnx_form(&self) -> OnnxActivation {
        use super::{Gelu, HardSwish, LeakyRelu, Op, Relu, Sigmoid, Tanh};
        match *self {
            Activation::None => OnnxActivation::Identity,
            Activation::Relu => OnnxActivation::Unary(Op::Relu(Relu::default())),
            Activation::Clip { min, max } => OnnxActivation::Clip { min, max },
            Activation::Sigmoid => OnnxActivation::Unary(Op::Sigmoid(Sigmoid::default())),
            Activation::Silu => OnnxActivation::XTimesSigmoid,
            Activation::Gelu => OnnxActivation::Unary(Op::Gelu(Gelu::default())),
            Activation::GeluTanh => OnnxActivation::Unary(Op::Gelu(Gelu {
                approximate: "tanh".into(),
            })),
            Activation::HardSwish => OnnxActivation::Unary(Op::HardSwish(HardSwish::default())),
            Activation::LeakyRelu { alpha } => {
                OnnxActivation::Unary(Op::LeakyRelu(LeakyRelu { alpha }))
            }
            Activation::Tanh => OnnxActivation::Unary(Op::Tanh(Tanh::default())),
        }
    }

    /// Whether this is the identity.
    pub fn is_none(&self) -> bool {
        matches!(self, Activation::None)
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` of an f32 is the shortest text that parses back to the same bits.
        match self {
            Activation::None => f.write_str("none"),
            Activation::Relu => f.write_str("relu"),
            Activation::Clip { min, max } => write!(f, "clip({min:?},{max:?})"),
            Activation::Sigmoid => f.write_str("sigmoid"),
            Activation::Silu => f.write_str("silu"),
            Activation::Gelu => f.write_str("gelu"),
            Activation::GeluTanh => f.write_str("gelu_tanh"),
            Activation::HardSwish => f.write_str("hard_swish"),
            Activation::LeakyRelu { alpha } => write!(f, "leaky_relu({alpha:?})"),
            Activation::Tanh => f.write_str("tanh"),
        }
    }
}

/// Why an activation's text could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "unknown activation `{0}` (expected none, relu, clip(MIN,MAX), sigmoid, silu, gelu, gelu_tanh, hard_swish, leaky_relu(ALPHA) or tanh)"
)]
pub struct ActivationError(pub String);

impl FromStr for Activation {
    type Err = ActivationError;

    fn from_str(s: &str) -> Result<Activation, ActivationError> {
        let err = || ActivationError(s.to_string());
        let (name, params) = match s.split_once('(') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix(')').ok_or_else(err)?;
                let params = inner
                    .split(',')
                    .map(|p| p.trim().parse::<f32>())
                    .collect::<Result<Vec<f32>, _>>()
                    .map_err(|_| err())?;
                (name, Some(params))
            }
            None => (s, None),
        };
        Ok(match (name, params.as_deref()) {
            ("none", None) => Activation::None,
            ("relu", None) => Activation::Relu,
            ("clip", Some(&[min, max])) => Activation::Clip { min, max },
            ("sigmoid", None) => Activation::Sigmoid,
            ("silu", None) => Activation::Silu,
            ("gelu", None) => Activation::Gelu,
            ("gelu_tanh", None) => Activation::GeluTanh,
            ("hard_swish", None) => Activation::HardSwish,
            ("leaky_relu", Some(&[alpha])) => Activation::LeakyRelu { alpha },
            ("tanh", None) => Activation::Tanh,
            _ => return Err(err()),
        })
    }
}

impl super::FusedConv {
    /// The convolution this op applies before its bias, residual and activation.
    pub fn conv(&self) -> super::Conv {
        super::Conv {
            auto_pad: self.auto_pad.clone(),
            dilations: self.dilations.clone(),
            group: self.group,
            kernel_shape: self.kernel_shape.clone(),
            pads: self.pads.clone(),
            strides: self.strides.clone(),
        }
    }
}

impl super::FusedConvNhwc {
    /// The channels-first convolution this op computes between its layout changes.
    pub fn conv(&self) -> super::Conv {
        super::Conv {
            auto_pad: self.auto_pad.clone(),
            dilations: self.dilations.clone(),
            group: self.group,
            kernel_shape: self.kernel_shape.clone(),
            pads: self.pads.clone(),
            strides: self.strides.clone(),
        }
    }
}

impl super::MaxPoolNhwc {
    /// The channels-first pool this op computes between its layout changes.
    pub fn channels_first(&self) -> super::MaxPool {
        super::MaxPool {
            auto_pad: self.auto_pad.clone(),
            ceil_mode: self.ceil_mode,
            dilations: self.dilations.clone(),
            kernel_shape: self.kernel_shape.clone(),
            pads: self.pads.clone(),
            storage_order: 0,
            strides: self.strides.clone(),
        }
    }
}

impl super::AveragePoolNhwc {
    /// The channels-first pool this op computes between its layout changes.
    pub fn channels_first(&self) -> super::AveragePool {
        super::AveragePool {
            auto_pad: self.auto_pad.clone(),
            ceil_mode: self.ceil_mode,
            count_include_pad: self.count_include_pad,
            dilations: self.dilations.clone(),
            kernel_shape: self.kernel_shape.clone(),
            pads: self.pads.clone(),
            strides: self.strides.clone(),
        }
    }
}

impl AttrValue for Activation {
    const KIND: &'static str = "string (an activation)";

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
    fn activations_round_trip_through_text() {
        let all = [
            Activation::None,
            Activation::Relu,
            Activation::Clip { min: 0.0, max: 6.0 },
            Activation::Clip {
                min: -0.1,
                max: f32::INFINITY,
            },
            Activation::Sigmoid,
            Activation::Silu,
            Activation::Gelu,
            Activation::GeluTanh,
            Activation::HardSwish,
            Activation::LeakyRelu { alpha: 0.01 },
            Activation::LeakyRelu { alpha: 1e-7 },
            Activation::Tanh,
        ];
        for a in all {
            let text = a.to_string();
            let back: Activation = text.parse().unwrap();
            assert_eq!(back, a, "{text}");
            assert_eq!(Activation::from_attr(&a.to_attr()), Some(a));
        }
        assert_eq!(
            Activation::Clip { min: 0.0, max: 6.0 }.to_string(),
            "clip(0.0,6.0)"
        );
        for bad in [
            "",
            "Relu",
            "clip(1)",
            "clip(a,b)",
            "leaky_relu(0.1",
            "relu()",
        ] {
            assert!(bad.parse::<Activation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fused_ops_round_trip_through_the_text_form() {
        let text = "graph g(%x: f32[1,2,3,3], %z: f32[1,2,3,3], %a: f32[2,3]) -> (%y, %m, %e) {
  const %w: f32[2,2,1,1] = [1.0, 2.0, -1.0, 0.5]
  const %b: f32[2] = [0.5, -0.5]
  const %mw: f32[3,2] = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
  const %c3: f32[3] = [1.0, 2.0, 3.0]
  %y: f32[1,2,3,3] = FusedConv[activation=\"clip(0.0,6.0)\", strides=[1, 1]](%x, %w, _, %z) @conv
  %m: f32[2,2] = FusedMatMul[activation=\"leaky_relu(0.01)\"](%a, %mw, %b) @mm
  %e: f32[2,3] = FusedElementwise[expr=\"i0 i1 sub sigmoid i0 mul\"](%a, %c3) @ew
}
";
        let g = crate::text::parse(text).unwrap();
        assert_eq!(crate::text::print(&g), text);
        let Op::FusedConv(c) = &g.nodes[0].op else {
            panic!("{:?}", g.nodes[0].op)
        };
        assert_eq!(c.activation, Activation::Clip { min: 0.0, max: 6.0 });
        let bad = text.replace("leaky_relu(0.01)", "leaky(0.01)");
        assert!(crate::text::parse(&bad).is_err());
        let Op::FusedElementwise(e) = &g.nodes[2].op else {
            panic!("{:?}", g.nodes[2].op)
        };
        assert_eq!(e.expr.num_inputs(), 2);
        for bad in [
            "i0 i1 sub sigmoid i0",
            "i0 sub sigmoid i0 mul",
            "i0 i1 sub elu i0 mul",
        ] {
            let bad = text.replace("i0 i1 sub sigmoid i0 mul", bad);
            assert!(crate::text::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_channels_last_conv_round_trips_through_the_text_form() {
        let text = "graph g(%x: f32[1,3,3,2], %z: f32[1,3,3,2]) -> (%y) {
  const %w: f32[1,1,2,2] = [1.0, 2.0, -1.0, 0.5]
  const %b: f32[2] = [0.5, -0.5]
  %y: f32[1,3,3,2] = FusedConvNhwc[activation=\"relu\", group=2](%x, %w, %b, %z) @conv
}
";
        let g = crate::text::parse(text).unwrap();
        assert_eq!(crate::text::print(&g), text);
        let Op::FusedConvNhwc(c) = &g.nodes[0].op else {
            panic!("{:?}", g.nodes[0].op)
        };
        assert_eq!((c.activation, c.group), (Activation::Relu, 2));
    }

    #[test]
    fn own_ops_are_listed_once_and_are_exactly_the_non_onnx_table_entries() {
        // The table's docs say which ops are ONNX operators; every other one must be in OWN_OPS, and back.
        let mut sorted = OWN_OPS.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, OWN_OPS, "OWN_OPS must be sorted, without repeats");
        for (name, doc) in Op::NAMES.iter().zip(Op::DOCS) {
            let onnx = doc.contains(&format!("ONNX `{name}`"));
            assert_eq!(
                !onnx,
                is_own_name(name),
                "op {name}: its table doc ({doc}) and OWN_OPS disagree"
            );
        }
        for name in OWN_OPS {
            assert!(Op::NAMES.contains(name), "OWN_OPS names unknown op {name}");
        }
    }
}
