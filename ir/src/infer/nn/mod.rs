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
