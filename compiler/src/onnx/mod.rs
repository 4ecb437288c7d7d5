//! STUB (local only)
#![allow(missing_docs, unused)]
use std::path::{Path, PathBuf};
pub mod proto {
    pub struct TensorProto;
}
pub struct Model {
    pub graph: jiuzhou_ir::Graph,
    pub ir_version: i64,
    pub opset: i64,
    pub opsets: Vec<(String, i64)>,
    pub producer: String,
}
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("io")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decode {0}")]
    Decode(String),
    #[error("unsupported")]
    UnsupportedOps(Vec<UnsupportedOp>),
    #[error("invalid {0}")]
    Invalid(String),
    #[error("ext {0}")]
    ExternalData(String),
}
#[derive(Debug)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
}
pub fn load_model(path: &Path) -> Result<Model, ImportError> {
    todo!()
}
pub fn import_model_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, ImportError> {
    todo!()
}
pub fn value_from_pb_bytes(
    bytes: &[u8],
    expected: &jiuzhou_ir::ValueType,
) -> Result<jiuzhou_ir::Value, ImportError> {
    todo!()
}
