//! STUB (local only)
#![allow(missing_docs, unused)]
use std::path::Path;
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("x")]
    X,
}
pub fn read_npy(path: &Path) -> Result<jiuzhou_ir::Tensor, IoError> {
    todo!()
}
pub fn write_npy(path: &Path, t: &jiuzhou_ir::Tensor) -> Result<(), IoError> {
    todo!()
}
pub fn read_pb(
    path: &Path,
    expected: &jiuzhou_ir::ValueType,
) -> Result<jiuzhou_ir::Value, IoError> {
    todo!()
}
pub fn read_value_file(
    path: &Path,
    expected: &jiuzhou_ir::ValueType,
) -> Result<jiuzhou_ir::Value, IoError> {
    todo!()
}
