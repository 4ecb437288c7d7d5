//! The ONNX frontend: protobuf decoding, import into the IR, opset upgrades, tensor data.
//!
//! - [`proto`]: the ONNX protobuf messages (hand-written `prost` derives);
//! - [`load_model`], [`import_model_bytes`]: a model file or its bytes to a typed, verified [`Model`];
//! - [`value_from_pb_bytes`], [`tensor_to_proto`]: test data files (`input_0.pb`) to IR values and back.
//!
//! **Architecture invariant:** a model file is untrusted. Import never panics, never reads outside the model's
//! folder (external data is confined, see [`external`]), and allocates only what the file's bytes justify.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use prost::Message;

pub mod external;
pub mod function;
mod import;
pub mod proto;
pub mod tensor;
pub mod upgrade;

#[cfg(test)]
mod tests;

pub use tensor::{tensor_from_proto, tensor_to_proto, value_from_pb_bytes};

/// An imported model: its graph (typed and verified) and the metadata the CLI shows.
#[derive(Clone, Debug)]
pub struct Model {
    /// The main graph.
    pub graph: jiuzhou_ir::Graph,
    /// The ONNX IR version of the file.
    pub ir_version: i64,
    /// The default-domain (`ai.onnx`) opset the model was written against.
    pub opset: i64,
    /// Every opset the model imports, as (domain, version); the default domain is `""`.
    pub opsets: Vec<(String, i64)>,
    /// The producer name and version (`pytorch 2.1`), empty if the file does not say.
    pub producer: String,
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf message.
    #[error("not a valid ONNX file: {0}")]
    Decode(String),
    /// Some nodes use ops jiuzhou does not have; every one is listed.
    #[error("{}", fmt_unsupported(.0))]
    UnsupportedOps(Vec<UnsupportedOp>),
    /// The model is structurally invalid.
    #[error("invalid model: {0}")]
    Invalid(String),
    /// A node could not be imported (bad attributes, undefined inputs, an upgrade that does not apply).
    #[error("node `{node}` ({op_type}): {why}")]
    Node {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is wrong.
        why: String,
    },
    /// Type inference failed for a node.
    #[error("node `{node}` ({op}): {why}")]
    Infer {
        /// Node name.
        node: String,
        /// IR op name.
        op: &'static str,
        /// The inference error.
        why: String,
    },
    /// A tensor's data is malformed.
    #[error("tensor `{name}`: {why}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// External tensor data could not be read or is not allowed.
    #[error("external data: {0}")]
    ExternalData(String),
    /// The imported graph breaks a structural rule (a bug in the importer or a malformed model).
    #[error(transparent)]
    Verify(#[from] jiuzhou_ir::VerifyError),
}

/// A node whose op jiuzhou cannot import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// Node name (may be empty).
    pub node: String,
    /// ONNX op type.
    pub op_type: String,
    /// Op domain (`ai.onnx` for the default domain).
    pub domain: String,
    /// The opset version the model imports for that domain (0 if it imports none).
    pub opset: i64,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = if self.node.is_empty() {
            "<unnamed>"
        } else {
            &self.node
        };
        write!(
            f,
            "{} (node `{node}`, domain {}, opset {})",
            self.op_type, self.domain, self.opset
        )?;
        if self.domain == "ai.onnx" && jiuzhou_ir::ops::own::is_own_name(&self.op_type) {
            f.write_str(" [jiuzhou's own IR op, not an ONNX operator: model files cannot use it]")?;
        }
        Ok(())
    }
}

fn fmt_unsupported(ops: &[UnsupportedOp]) -> String {
    let items: Vec<String> = ops.iter().map(ToString::to_string).collect();
    format!(
        "the model uses {} unsupported op(s): {}",
        ops.len(),
        items.join(", ")
    )
}

/// Loads and imports an ONNX file. External data is read from the file's folder.
pub fn load_model(path: &Path) -> Result<Model, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = bytes::Bytes::from(bytes);
    let base = path.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    import_model_buf(bytes, base)
}

/// Imports a serialized `ModelProto`. External data, if any, is read from `base_dir` (and refused without one).
pub fn import_model_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<Model, ImportError> {
    import_model_buf(bytes::Bytes::copy_from_slice(bytes), base_dir)
}

/// Decodes from a shared buffer so tensor data is not copied, drops the message once imported.
fn import_model_buf(bytes: bytes::Bytes, base_dir: Option<&Path>) -> Result<Model, ImportError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| ImportError::Decode(e.to_string()))?;
    import_model(&model, base_dir)
}

/// Imports a decoded `ModelProto`.
pub fn import_model(
    model: &proto::ModelProto,
    base_dir: Option<&Path>,
) -> Result<Model, ImportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode("the model has no graph".into()))?;
    let mut opsets: Vec<(String, i64)> = Vec::new();
    let mut by_domain: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        let domain = if import::is_default_domain(&o.domain) {
            String::new()
        } else {
            o.domain.clone()
        };
        by_domain.insert(domain.clone(), o.version);
        opsets.push((domain, o.version));
    }
    let functions: import::Functions<'_> = model
        .functions
        .iter()
        .map(|f| (function::function_key(f), f))
        .collect();
    let mut unsupported = Vec::new();
    import::unsupported_ops(&graph.node, &by_domain, &functions, &mut unsupported, 0);
    if !unsupported.is_empty() {
        return Err(ImportError::UnsupportedOps(unsupported));
    }
    let opset = match by_domain.get("") {
        Some(&v) => v,
        // Files from before opset_import existed (IR version < 3) use opset 1.
        None if model.opset_import.is_empty() => 1,
        None => {
            return Err(ImportError::Invalid(
                "the model imports no opset of the default ONNX domain".into(),
            ));
        }
    };
    let mut importer = import::Importer::new(base_dir, opset).with_functions(functions);
    let graph = importer.import_main(graph)?;
    graph.verify()?;
    let producer = [
        model.producer_name.as_str(),
        model.producer_version.as_str(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Model {
        graph,
        ir_version: model.ir_version,
        opset,
        opsets,
        producer,
    })
}
