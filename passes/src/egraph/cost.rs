//! Cost models: what a target tells the optimizer about itself.
//!
//! A [`CostModel`] estimates the cost of one op from its attributes and the static types of its inputs and outputs
//! (the e-class analysis provides them), and says which ops the target supports at all (unsupported ones are never
//! extracted). [`OpCountCost`] is the reference target's model: every op costs 1, so the optimizer minimizes the
//! node count. [`Roofline`] is the model a real target parameterizes: `max(flops / peak, bytes / bandwidth) +
//! overhead` per kernel, with FLOPs and bytes from [`flops_and_bytes`].

use jiuzhou_ir::{Op, ValueType};

/// A target's view of what ops cost.
pub trait CostModel {
    /// Whether the target can run `op` at all.
    fn supports(&self, op: &Op) -> bool {
        let _ = op;
        true
    }

    /// The estimated cost (any unit, consistently) of one node running `op` with the given input types (`None`:
    /// absent optional input or unknown type) and output types (empty when unknown).
    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64;

    /// Whether the target has channels-last kernels (`FusedConvNhwc`, `MaxPoolNhwc`, `AveragePoolNhwc`) worth
    /// considering: the optimizer then adds the channels-last form of every convolution and pool
    /// (`rules::layout::channels_last_rules`) and this model's costs choose the layout, op by op. Off by default,
    /// so that a target without such kernels never pays for exploring them (re-laying out every weight of a model
    /// is not free).
    fn channels_last(&self) -> bool {
        false
    }
}

/// Every op costs 1: extraction minimizes the number of nodes. The reference target's model.
///
/// Composite ops ([`is_composite`]) cost `1 − COMPOSITE_DISCOUNT` instead. Where a decomposition's intermediate
/// values are also used elsewhere, keeping them costs the same whether the composite is chosen or not, so op count
/// alone ties (`Swish(x)` plus a shared `Sigmoid(x)` is as many nodes as `x · Sigmoid(x)`) and the extractor would
/// keep whichever it saw first. The discount breaks such ties towards the composite, which every real target runs
/// as one kernel. It is small (1/1024) so that it never outweighs a whole node: op count stays the first criterion
/// for any graph with fewer than 1024 composites.
///
/// jiuzhou's own fused ops (FusedConv, FusedMatMul, FusedElementwise) cost [`OWN_OP_COST`], a hair above 1: one fused node still
/// beats the two or more nodes it replaces, but where the count ties the standard ONNX op is kept (a Gemm with
/// nothing to fuse stays a Gemm).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpCountCost;

/// What [`OpCountCost`] charges for one of jiuzhou's own ops.
pub const OWN_OP_COST: f64 = 1.0 + 1.0 / 1024.0;

/// What a composite op is cheaper than one whole node under [`OpCountCost`].
pub const COMPOSITE_DISCOUNT: f64 = 1.0 / 1024.0;

/// Ops that stand for a whole formula (the pattern-recognition rules produce them): Softmax, LayerNormalization,
/// RMSNormalization, Gelu, Swish and Attention.
pub fn is_composite(op: &Op) -> bool {
    matches!(
        op,
        Op::Softmax(_)
            | Op::LayerNormalization(_)
            | Op::RMSNormalization(_)
            | Op::Gelu(_)
            | Op::Swish(_)
            | Op::Attention(_)
    )
}

/// What [`OpCountCost`] adds to a FusedElementwise per step of its program: among programs that compute the same
/// value from the same inputs, the shorter one wins (`i0 silu` over `i0 i0 sigmoid mul`). Programs have at most
/// 64 steps, so this never adds up to the composite discount.
pub const PROGRAM_STEP_COST: f64 = 1.0 / (1u64 << 20) as f64;

impl CostModel for OpCountCost {
    fn node_cost(&self, op: &Op, _inputs: &[Option<&ValueType>], _outputs: &[ValueType]) -> f64 {
        if let Op::FusedElementwise(f) = op {
            OWN_OP_COST + f.expr.steps().len() as f64 * PROGRAM_STEP_COST
        } else if op.is_jiuzhou_own() {
            OWN_OP_COST
        } else if is_composite(op) {
            1.0 - COMPOSITE_DISCOUNT
        } else {
            1.0
        }
    }
}

/// A roofline model: `max(flops / peak_flops, bytes / bandwidth) + overhead` seconds per node.
#[derive(Clone, Copy, Debug)]
pub struct Roofline {
    /// Peak arithmetic throughput in FLOP/s.
    pub peak_flops: f64,
    /// Memory bandwidth in bytes/s.
    pub bandwidth: f64,
    /// Fixed cost per kernel launch in seconds.
    pub overhead: f64,
}

impl Roofline {
    /// The estimated time of one node, in seconds.
    pub fn estimate(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        let (flops, bytes) = flops_and_bytes(op, inputs, outputs);
        (flops / self.peak_flops).max(bytes / self.bandwidth) + self.overhead
    }
}

impl CostModel for Roofline {
    fn node_cost(&self, op: &Op, inputs: &[Option<&ValueType>], outputs: &[ValueType]) -> f64 {
        self.estimate(op, inputs, outputs)
    }
}

/// The size assumed for a symbolic dim when estimating.
const SYMBOLIC_DIM_GUESS: f64 = 1.0;

/// Elements and bytes of a tensor type (symbolic dims count as [`SYMBOLIC_DIM_GUESS`], unknown rank as a scalar).
fn numel_bytes(t: &ValueType) -> (f64, f64) {
    let Some(t) = t.as_tensor() else {
        return (0.0, 0.0);
    };
    let n: f64 = t
        .shape
        .iter()
        .flatten()
        .map(|d| d.known().map_or(SYMBOLIC_DIM_GUESS, |d| d as f64))
        .product();
    let width = t.dtype.size_in_bytes().max(1) as f64;
    (n, n * width)
}

fn dims(t: Option<&ValueType>) -> Vec<f64> {
    t.and_then(|t| t.as_tensor())
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.iter()
                .map(|d| d.known().map_or(SYMBOLIC_DIM_GUESS, |d| d as f64))
                .collect()
        })
        .unwrap_or_default()
}

/// Estimated floating-point operations and bytes moved by one node.
///
/// Conv: `2 · out_elems · (C_in / group) · kernel`; MatMul/Gemm: `2 · out_elems · K`; FusedConv(Nhwc)/FusedMatMul: the
/// same plus `3 · out_elems` for the epilogue (bias, residual, activation); elementwise and
/// reductions: one op per element read (a FusedElementwise: one per output element and op of its program, with its
/// inputs and output moved once); pure data movement (Reshape, Squeeze, Unsqueeze, Identity, Flatten) moves
/// nothing (it is a view), other movement (Transpose, Concat, Gather, ...) moves its bytes with no FLOPs.
pub fn flops_and_bytes(
    op: &Op,
    inputs: &[Option<&ValueType>],
    outputs: &[ValueType],
) -> (f64, f64) {
    let (in_elems, in_bytes) = inputs
        .iter()
        .flatten()
        .map(|t| numel_bytes(t))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let (out_elems, out_bytes) = outputs
        .iter()
        .map(numel_bytes)
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let bytes = in_bytes + out_bytes;
    let first = inputs.first().copied().flatten();
    let second = inputs.get(1).copied().flatten();
    match op {
        Op::Reshape(_) | Op::Squeeze(_) | Op::Unsqueeze(_) | Op::Identity(_) | Op::Flatten(_) => {
            (0.0, 0.0)
        }
        Op::Shape(_) | Op::Size(_) => (0.0, 0.0),
        Op::Transpose(_)
        | Op::Concat(_)
        | Op::Split(_)
        | Op::Slice(_)
        | Op::Gather(_)
        | Op::Expand(_)
        | Op::Tile(_)
        | Op::Pad(_)
        | Op::Cast(_) => (0.0, bytes),
        Op::Conv(c) => {
            let w = dims(second);
            let per_out: f64 = w.iter().skip(1).product();
            let _ = c.group; // `w[1]` is already C_in / group.
            (2.0 * out_elems * per_out, bytes)
        }
        // The fused ops: the product's FLOPs plus one op per output element for each of bias, residual and
        // activation.
        Op::FusedConv(_) => {
            let w = dims(second);
            let per_out: f64 = w.iter().skip(1).product();
            (2.0 * out_elems * per_out + 3.0 * out_elems, bytes)
        }
        // Channels-last: the weight is [k.., C/g, M].
        Op::FusedConvNhwc(_) => {
            let w = dims(second);
            let per_out: f64 = w.iter().take(w.len().saturating_sub(1)).product();
            (2.0 * out_elems * per_out + 3.0 * out_elems, bytes)
        }
        Op::MatMul(_) | Op::FusedMatMul(_) => {
            let a = dims(first);
            let k = a.last().copied().unwrap_or(1.0);
            let epilogue = if matches!(op, Op::FusedMatMul(_)) {
                3.0 * out_elems
            } else {
                0.0
            };
            (2.0 * out_elems * k + epilogue, bytes)
        }
        Op::Gemm(g) => {
            let a = dims(first);
            let k = if g.transA != 0 {
                a.first().copied().unwrap_or(1.0)
            } else {
                a.last().copied().unwrap_or(1.0)
            };
            (2.0 * out_elems * k, bytes)
        }
        // One op per output element per step of the program; the inputs are read and the output written once.
        Op::FusedElementwise(f) => (out_elems * f.expr.num_ops() as f64, bytes),
        _ => (in_elems.max(out_elems), bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiuzhou_ir::{DType, TensorType, ops};

    #[test]
    fn matmul_and_conv_flops() {
        let t = |d: &[usize]| ValueType::Tensor(TensorType::known(DType::F32, d));
        let (a, b, y) = (t(&[2, 3]), t(&[3, 4]), t(&[2, 4]));
        let (f, bytes) = flops_and_bytes(
            &Op::MatMul(ops::MatMul::default()),
            &[Some(&a), Some(&b)],
            &[y],
        );
        assert_eq!((f, bytes), (2.0 * 8.0 * 3.0, 4.0 * (6.0 + 12.0 + 8.0)));
        let (x, w, y) = (t(&[1, 3, 8, 8]), t(&[16, 3, 3, 3]), t(&[1, 16, 6, 6]));
        let (f, _) = flops_and_bytes(
            &Op::Conv(ops::Conv::default()),
            &[Some(&x), Some(&w)],
            std::slice::from_ref(&y),
        );
        assert_eq!(f, 2.0 * 16.0 * 36.0 * 27.0);
        // The fused forms count the product too, plus their epilogue.
        let (f, _) = flops_and_bytes(
            &Op::FusedConv(ops::FusedConv::default()),
            &[Some(&x), Some(&w)],
            std::slice::from_ref(&y),
        );
        assert_eq!(f, 2.0 * 16.0 * 36.0 * 27.0 + 3.0 * 16.0 * 36.0);
        // The channels-last form of the same conv counts the same.
        let (xl, wl, yl) = (t(&[1, 8, 8, 3]), t(&[3, 3, 3, 16]), t(&[1, 6, 6, 16]));
        let (f, _) = flops_and_bytes(
            &Op::FusedConvNhwc(ops::FusedConvNhwc::default()),
            &[Some(&xl), Some(&wl)],
            std::slice::from_ref(&yl),
        );
        assert_eq!(f, 2.0 * 16.0 * 36.0 * 27.0 + 3.0 * 16.0 * 36.0);
        let (f, _) = flops_and_bytes(
            &Op::FusedMatMul(ops::FusedMatMul::default()),
            &[Some(&a), Some(&b)],
            &[t(&[2, 4])],
        );
        assert_eq!(f, 2.0 * 8.0 * 3.0 + 3.0 * 8.0);
        let r = Roofline {
            peak_flops: 1e9,
            bandwidth: 1e9,
            overhead: 1e-6,
        };
        assert!(
            r.estimate(
                &Op::Relu(ops::Relu::default()),
                &[Some(&a)],
                std::slice::from_ref(&a)
            ) > 1e-6
        );
    }
}
