//! Neural-network ops: convolutions, pooling, normalizations, matrix products, softmax, quantization.
//!
//! [`window`] (sliding-window geometry) and [`einsum`] (equation parsing) are public: the reference target uses
//! them too, so static and computed shapes follow one definition.

mod conv;
pub mod einsum;
mod matmul;
mod norm;
mod quant;
pub mod window;

pub use conv::{output_padding, output_shape};

#[cfg(test)]
mod tests;

/// Checks an input that a fused op adds to its result (a bias or a residual): same dtype as the result, and
/// broadcastable to it without growing it.
pub(crate) fn check_addend(
    out: &crate::TensorType,
    addend: Option<&crate::TensorType>,
    what: &str,
) -> Result<(), crate::infer::InferError> {
    let Some(a) = addend else { return Ok(()) };
    if a.dtype != out.dtype {
        crate::infer_bail!("the {what} is {} but the result is {}", a.dtype, out.dtype);
    }
    let (Some(o), Some(_)) = (&out.shape, &a.shape) else {
        return Ok(());
    };
    let b = crate::infer::broadcast_shapes(&[&out.shape, &a.shape])?;
    if b.as_deref() != Some(o.as_slice()) {
        crate::infer_bail!("the {what} {a} would broadcast the result {out} larger");
    }
    Ok(())
}
