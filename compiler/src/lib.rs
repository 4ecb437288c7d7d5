//! `jiuzhou-compiler`: the driver of jiuzhou — ONNX frontend, compile pipeline, conformance runner — and the
//! library API for framework authors.
//!
//! Load a model, compile it for a target, run it:
//!
//! ```
//! use jiuzhou_compiler::{Target, io, onnx};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny_cnn");
//! let model = onnx::load_model(format!("{dir}/model.onnx").as_ref())?;
//! let session = jiuzhou_compiler::compile(model, Target::Reference)?;
//! let image = io::read_npy(format!("{dir}/input.npy").as_ref())?;
//! let outputs = session.run(vec![image.into()])?;
//! let probs = outputs[0].as_tensor().unwrap().as_slice::<f32>()?;
//! assert_eq!(probs.len(), 10);
//! assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Or build a graph in code with [`jiuzhou_ir::GraphBuilder`] and compile it with [`compile_graph`].
//!
//! **Architecture invariant:** only this crate knows ONNX; everything it hands to passes, targets and the runtime is
//! `jiuzhou_ir`.
#![deny(missing_docs)]

pub mod artifact;
pub mod compare;
pub mod conformance;
pub mod driver;
pub mod harness;
pub mod io;
pub mod onnx;

pub use driver::{
    CompileError, CompileOptions, Compiled, SharedVnpu, Target, TargetStats, compile,
    compile_graph, compile_graph_with, compile_vnpu, compile_with, load_and_compile, node_flops,
    optimize_graph, optimize_graph_traced,
};
