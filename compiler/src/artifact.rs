//! Compiled artifacts (`.jz` files): an optimized graph packaged for one target, loaded without ONNX import or
//! optimization.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic "JIUZHOU\x1a"
//! 8       4     format version (u32), FORMAT_VERSION
//! 12      8     body length in bytes (u64)
//! 20      4     CRC-32 (IEEE) of the body
//! 24      ...   body: bincode 2 (standard config) of Header, then of Payload
//! ```
//!
//! The header names the compiler version that wrote the file, the target, the CPU architecture and the CPU features
//! the target's code requires ([`jiuzhou_target_cpu::required_cpu_features`] for `cpu`). The payload holds the
//! model's opset, the graph in the IR text form ([`jiuzhou_ir::text`], which round-trips exactly) with every
//! non-string top-level constant taken out of the text and stored as raw little-endian bytes (in the text it
//! appears as an extra graph input after the real ones, so the text stays small and parses fast).
//!
//! Loading checks, in order: the magic ([`ArtifactError::NotAnArtifact`]), the format version
//! ([`ArtifactError::StaleFormat`]), the length ([`ArtifactError::Truncated`]), the checksum
//! ([`ArtifactError::Corrupted`]), the compiler version ([`ArtifactError::StaleCompiler`]), the target
//! ([`ArtifactError::WrongTarget`]) and the CPU ([`ArtifactError::MissingCpuFeatures`]). Nothing panics on a bad
//! file, and nothing is allocated beyond what the file's bytes justify: the body length is checked against the
//! file size before anything is decoded, bincode decodes from the in-memory body with a limit of its size, and a
//! constant's element count must match the bytes stored for it.
//!
//! Same graph, same target → same bytes: nothing time- or machine-dependent is written (the CPU features are the
//! target's fixed requirements, not the compiling host's).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use jiuzhou_ir::{DType, Graph, Tensor};
use serde::{Deserialize, Serialize};

use crate::driver::{CompileError, CompileOptions, Compiled, Target, compile_graph_with};

/// The first bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"JIUZHOU\x1a";

/// The version of the layout this compiler writes and reads; bump it whenever the header or payload changes.
pub const FORMAT_VERSION: u32 = 1;

/// The compiler version written into artifacts; an artifact from another version is refused (the IR, the op
/// semantics or the code generators may differ).
pub const COMPILER_VERSION: &str = concat!("jiuzhou ", env!("CARGO_PKG_VERSION"));

/// Bytes before the body.
const PREFIX_LEN: usize = 24;

/// Why an artifact could not be written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The file does not start with the artifact magic.
    #[error("not a jiuzhou artifact (the file does not start with the `JIUZHOU` magic bytes)")]
    NotAnArtifact,
    /// The file was written in another format version.
    #[error(
        "artifact format version {found} is not supported (this jiuzhou reads version {supported}): \
         recompile the model with `jiuzhou compile MODEL.onnx -o FILE.jz`"
    )]
    StaleFormat {
        /// The file's format version.
        found: u32,
        /// The version this compiler reads.
        supported: u32,
    },
    /// The file was written by another compiler version.
    #[error(
        "artifact was written by {found}, this is {current}: recompile the model with \
         `jiuzhou compile MODEL.onnx -o FILE.jz`"
    )]
    StaleCompiler {
        /// The compiler version in the file.
        found: String,
        /// This compiler's version.
        current: String,
    },
    /// The file ends before the length its header gives.
    #[error("artifact is truncated: {actual} bytes, the header says {expected}")]
    Truncated {
        /// The size the header announces.
        expected: u64,
        /// The file's size.
        actual: u64,
    },
    /// The checksum does not match, or the body does not decode.
    #[error("artifact is corrupted: {0}")]
    Corrupted(String),
    /// The artifact was compiled for another target than the one asked for.
    #[error("artifact was compiled for target `{artifact}`, not `{requested}`")]
    WrongTarget {
        /// The artifact's target.
        artifact: String,
        /// The target asked for.
        requested: String,
    },
    /// The artifact's target is not one this compiler knows.
    #[error("artifact is for target `{0}`, which this jiuzhou does not have")]
    UnknownTarget(String),
    /// This machine lacks CPU features (or the architecture) the artifact's code requires.
    #[error("this CPU cannot run the artifact: it lacks {}", .missing.join(", "))]
    MissingCpuFeatures {
        /// What is missing (`arch x86_64` for another architecture, else feature names).
        missing: Vec<String>,
    },
    /// The graph could not be packaged (e.g. too many constants for the format).
    #[error("cannot write the artifact: {0}")]
    Write(String),
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The loaded graph did not compile for the target.
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Encoded before the payload: what a loader checks first.
#[derive(Serialize, Deserialize)]
struct Header {
    compiler_version: String,
    target: String,
    arch: String,
    cpu_features: Vec<String>,
}

/// A constant taken out of the text. Decoding borrows the text and the bytes from the file's buffer: the only
/// copy of a constant's data is the tensor built from it.
#[derive(Serialize, Deserialize)]
struct Constant<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<u64>,
    /// `&[u8]` is a serde byte string: one length and the bytes, not a sequence of integers.
    bytes: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct Payload<'a> {
    opset: i64,
    /// How many of the text's graph inputs are real inputs; the rest are the constants, in order.
    inputs: u64,
    ir: &'a str,
    #[serde(borrow)]
    constants: Vec<Constant<'a>>,
}

/// A compiled model as stored in a `.jz` file.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The compiler that wrote it ([`COMPILER_VERSION`] for a new one).
    pub compiler_version: String,
    /// The target it was compiled for.
    pub target: String,
    /// The CPU architecture (`std::env::consts::ARCH`) the target's code runs on.
    pub arch: String,
    /// CPU features the target's code requires.
    pub cpu_features: Vec<String>,
    /// The model's default-domain opset (for messages).
    pub opset: i64,
    /// The optimized graph.
    pub graph: Graph,
}

/// The CPU features a target's code requires on this architecture.
pub fn required_cpu_features(target: Target) -> Vec<String> {
    match target {
        Target::Reference => Vec::new(),
        Target::Cpu => jiuzhou_target_cpu::required_cpu_features()
            .iter()
            .map(|s| s.to_string())
            .collect(), // Not written as artifacts (the profile is not recorded); nothing beyond the CPU target's host code.
        Target::Vnpu(_) => jiuzhou_target_cpu::required_cpu_features()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

impl Artifact {
    /// A new artifact of `graph` (already optimized) for `target`, written by this compiler for this machine's
    /// architecture.
    pub fn new(graph: Graph, opset: i64, target: Target) -> Artifact {
        Artifact {
            compiler_version: COMPILER_VERSION.to_string(),
            target: target.name().to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpu_features: required_cpu_features(target),
            opset,
            graph,
        }
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArtifactError> {
        let header = Header {
            compiler_version: self.compiler_version.clone(),
            target: self.target.clone(),
            arch: self.arch.clone(),
            cpu_features: self.cpu_features.clone(),
        };
        // Top-level constants with a byte form become inputs of the printed graph, after the real inputs.
        let mut g = self.graph.clone();
        let inputs = g.inputs.len() as u64;
        let mut data = Vec::new();
        for i in 0..g.values.len() {
            let Some(t) = g.values[i].constant.clone() else {
                continue;
            };
            let Some(bytes) = t.to_le_bytes() else {
                continue;
            };
            data.push((i, t, bytes));
            g.values[i].constant = None;
            g.inputs.push(jiuzhou_ir::ValueId(i as u32));
        }
        let ir = jiuzhou_ir::text::print(&g);
        let payload = Payload {
            opset: self.opset,
            inputs,
            ir: &ir,
            constants: data
                .iter()
                .map(|(i, t, bytes)| Constant {
                    name: &self.graph.values[*i].name,
                    dtype: t.dtype().name(),
                    shape: t.shape().iter().map(|&d| d as u64).collect(),
                    bytes,
                })
                .collect(),
        };
        let enc = |e: bincode::error::EncodeError| ArtifactError::Write(e.to_string());
        let mut body = bincode::serde::encode_to_vec(&header, bincode_config()).map_err(enc)?;
        body.extend(bincode::serde::encode_to_vec(&payload, bincode_config()).map_err(enc)?);
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes an artifact, checking its magic, format version, length, checksum and compiler version (not the
    /// target or the CPU: see [`Artifact::check_runnable`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        if bytes.len() < MAGIC.len() {
            // A prefix of the magic is a cut-off artifact; anything else is some other file.
            return Err(if !bytes.is_empty() && MAGIC.starts_with(bytes) {
                ArtifactError::Truncated {
                    expected: PREFIX_LEN as u64,
                    actual: bytes.len() as u64,
                }
            } else {
                ArtifactError::NotAnArtifact
            });
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err(ArtifactError::NotAnArtifact);
        }
        if bytes.len() < 12 {
            return Err(ArtifactError::Truncated {
                expected: PREFIX_LEN as u64,
                actual: bytes.len() as u64,
            });
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let format = word(8);
        if format != FORMAT_VERSION {
            return Err(ArtifactError::StaleFormat {
                found: format,
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() < PREFIX_LEN {
            return Err(ArtifactError::Truncated {
                expected: PREFIX_LEN as u64,
                actual: bytes.len() as u64,
            });
        }
        let body_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let actual = bytes.len() as u64;
        let expected = (PREFIX_LEN as u64).saturating_add(body_len);
        if actual < expected {
            return Err(ArtifactError::Truncated { expected, actual });
        }
        if actual > expected {
            return Err(ArtifactError::Corrupted(format!(
                "{} bytes after the end the header gives",
                actual - expected
            )));
        }
        let body = &bytes[PREFIX_LEN..];
        let (want, got) = (word(20), crc32fast::hash(body));
        if want != got {
            return Err(ArtifactError::Corrupted(format!(
                "checksum mismatch (stored {want:08x}, computed {got:08x})"
            )));
        }
        let bad = |what: &str, e: bincode::error::DecodeError| {
            ArtifactError::Corrupted(format!("cannot decode the {what}: {e}"))
        };
        let (header, used): (Header, usize) =
            bincode::serde::borrow_decode_from_slice(body, bincode_config())
                .map_err(|e| bad("header", e))?;
        if header.compiler_version != COMPILER_VERSION {
            return Err(ArtifactError::StaleCompiler {
                found: header.compiler_version,
                current: COMPILER_VERSION.to_string(),
            });
        }
        let rest = &body[used..];
        let (payload, used): (Payload<'_>, usize) =
            bincode::serde::borrow_decode_from_slice(rest, bincode_config())
                .map_err(|e| bad("payload", e))?;
        if used != rest.len() {
            return Err(ArtifactError::Corrupted(format!(
                "{} undecoded bytes after the payload",
                rest.len() - used
            )));
        }
        let graph = rebuild_graph(payload.ir, payload.inputs, payload.constants)?;
        Ok(Artifact {
            compiler_version: header.compiler_version,
            target: header.target,
            arch: header.arch,
            cpu_features: header.cpu_features,
            opset: payload.opset,
            graph,
        })
    }

    /// Checks that the artifact runs on this machine for `requested` (its own target when `None`) and returns
    /// that target.
    pub fn check_runnable(&self, requested: Option<Target>) -> Result<Target, ArtifactError> {
        let target = Target::from_name(&self.target)
            .ok_or_else(|| ArtifactError::UnknownTarget(self.target.clone()))?;
        if let Some(r) = requested
            && r != target
        {
            return Err(ArtifactError::WrongTarget {
                artifact: self.target.clone(),
                requested: r.name().to_string(),
            });
        }
        if self.arch != std::env::consts::ARCH {
            return Err(ArtifactError::MissingCpuFeatures {
                missing: vec![format!("arch {}", self.arch)],
            });
        }
        let missing: Vec<String> = self
            .cpu_features
            .iter()
            .filter(|f| !jiuzhou_target_cpu::has_cpu_feature(f))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ArtifactError::MissingCpuFeatures { missing });
        }
        Ok(target)
    }

    /// Writes the artifact to `path`; returns the number of bytes written.
    pub fn write(&self, path: &Path) -> Result<usize, ArtifactError> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, &bytes)?;
        Ok(bytes.len())
    }

    /// Reads and decodes the artifact at `path` (see [`Artifact::from_bytes`]).
    pub fn read(path: &Path) -> Result<Artifact, ArtifactError> {
        Artifact::from_bytes(&std::fs::read(path)?)
    }
}

/// Parses the text and puts the constants back in place of the extra inputs.
fn rebuild_graph(
    ir: &str,
    inputs: u64,
    constants: Vec<Constant<'_>>,
) -> Result<Graph, ArtifactError> {
    let corrupt = |what: String| ArtifactError::Corrupted(what);
    let mut g = jiuzhou_ir::text::parse(ir).map_err(|e| corrupt(format!("IR text: {e}")))?;
    let real = usize::try_from(inputs)
        .ok()
        .filter(|&n| n.checked_add(constants.len()) == Some(g.inputs.len()))
        .ok_or_else(|| {
            corrupt(format!(
                "the graph has {} inputs, expected {inputs} plus {} constants",
                g.inputs.len(),
                constants.len()
            ))
        })?;
    let ids: HashMap<&str, jiuzhou_ir::ValueId> = g.inputs[real..]
        .iter()
        .map(|&id| (g.value(id).name.as_str(), id))
        .collect();
    let mut found = Vec::with_capacity(constants.len());
    for c in constants {
        let id = *ids
            .get(c.name)
            .ok_or_else(|| corrupt(format!("constant `{}` is not in the graph", c.name)))?;
        let dtype = DType::from_name(c.dtype).ok_or_else(|| {
            corrupt(format!(
                "constant `{}`: unknown dtype `{}`",
                c.name, c.dtype
            ))
        })?;
        let shape = c
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| corrupt(format!("constant `{}`: shape too large", c.name)))?;
        // `from_le_bytes` checks the element count against the bytes before allocating anything.
        let t = Tensor::from_le_bytes(dtype, shape, c.bytes)
            .map_err(|e| corrupt(format!("constant `{}`: {e}", c.name)))?;
        found.push((id, t));
    }
    for (id, t) in found {
        let v = &mut g.values[id.index()];
        if v.constant.is_some() {
            return Err(corrupt(format!("constant `{}` is stored twice", v.name)));
        }
        v.constant = Some(Arc::new(t));
    }
    g.inputs.truncate(real);
    g.verify()
        .map_err(|e| corrupt(format!("the graph is invalid: {e}")))?;
    Ok(g)
}

/// An artifact loaded and compiled for its target, with how long each part took.
pub struct Loaded {
    /// The target it runs on.
    pub target: Target,
    /// The compiled session and the code generator's report.
    pub compiled: Compiled,
    /// Reading, checking and decoding the file (IR parse included), in milliseconds.
    pub decode_ms: f64,
    /// Code generation for the target, in milliseconds.
    pub codegen_ms: f64,
}

impl Loaded {
    /// The whole load time in milliseconds.
    pub fn load_ms(&self) -> f64 {
        self.decode_ms + self.codegen_ms
    }
}

/// Loads the artifact at `path`, checks that it runs here for `requested` (its own target when `None`) and
/// compiles it with `options`. The load time is logged at info level.
pub fn load(
    path: &Path,
    requested: Option<Target>,
    options: &CompileOptions,
) -> Result<Loaded, ArtifactError> {
    let start = Instant::now();
    let artifact = Artifact::read(path)?;
    let target = artifact.check_runnable(requested)?;
    let decode_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let compiled = compile_graph_with(artifact.graph, artifact.opset, target, options)?;
    let codegen_ms = start.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        path = %path.display(),
        %target,
        decode_ms,
        codegen_ms,
        load_ms = decode_ms + codegen_ms,
        "loaded artifact"
    );
    Ok(Loaded {
        target,
        compiled,
        decode_ms,
        codegen_ms,
    })
}

/// Whether `path` looks like an artifact by name (`.jz`).
pub fn is_artifact_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jz")
}
