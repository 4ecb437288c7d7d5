//! Machine profiles: the TOML files under `targets/vnpu/profiles/` that describe one chip of the family.
//!
//! A profile names the clock, the matrix unit (tile shape, input and accumulator dtypes, cycles per tile, which
//! buffers it reads A and B from and writes C to), the vector unit (lanes, ops, dtypes, buffers it may access,
//! cycles per op class), the on-chip buffers (name, size, alignment), the DMA engines (count, bytes per cycle,
//! latency, buffers they reach), global memory (size, bandwidth, alignment) and the number of cores. The file is
//! parsed with serde into a raw form and then validated into a [`Profile`]; every bad value is a typed
//! [`ProfileError`]. Adding a profile is adding a file: the build script embeds every `profiles/*.toml` (with
//! `include_str!`) so `vnpu:NAME` finds it by name, and [`Profile::from_path`] loads any other file.
//!
//! ```
//! let p = jiuzhou_target_vnpu::Profile::by_name("default").unwrap();
//! assert_eq!(p.matrix.tile, [16, 16, 16]);
//! ```

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use crate::dtype::DType;
use crate::isa::{Engine, Mem, OpClass, VectorOp};

/// The largest on-chip buffer the simulator allocates, in bytes (buffers are allocated eagerly).
pub const MAX_BUFFER_BYTES: u64 = 256 << 20;
/// The most on-chip memory all buffers of a profile may have together, in bytes.
pub const MAX_TOTAL_BUFFER_BYTES: u64 = 1 << 30;

/// The profiles shipped with the crate, `(name, TOML text)` sorted by name: every `profiles/*.toml`, embedded by
/// the build script.
pub const SHIPPED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// Why a profile cannot be loaded.
#[derive(Debug, Error)]
pub enum ProfileError {
    /// The TOML text does not parse or does not have the profile's shape (missing or unknown keys, wrong types).
    #[error("profile {source_name}: {message}")]
    Toml {
        /// The profile's name or path.
        source_name: String,
        /// The TOML parser's message (with its line and column).
        message: String,
    },
    /// The file cannot be read.
    #[error("cannot read profile {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No shipped profile has this name.
    #[error("no profile named `{0}` (shipped: {shipped}); pass a path to a .toml file for others", shipped = shipped_names())]
    UnknownName(String),
    /// A size, count or rate that must be positive is zero.
    #[error("`{0}` must be greater than zero")]
    Zero(&'static str),
    /// A dtype name is not one of the machine's.
    #[error("`{field}`: unknown dtype `{value}` (expected f32, f16, bf16, i8 or i32)")]
    UnknownDtype {
        /// The field.
        field: &'static str,
        /// The bad name.
        value: String,
    },
    /// A vector op name is not one of the ISA's.
    #[error("`vector.ops`: unknown op `{0}`")]
    UnknownOp(String),
    /// A unit names a buffer the profile does not declare.
    #[error("`{field}` names buffer `{name}`, which is not declared in [[buffers]]")]
    UnknownBuffer {
        /// The field.
        field: &'static str,
        /// The buffer name.
        name: String,
    },
    /// Two buffers share a name, or a buffer is called `gm`.
    #[error("buffer name `{0}` is declared twice or reserved")]
    DuplicateBuffer(String),
    /// A buffer is larger than [`MAX_BUFFER_BYTES`].
    #[error("buffer `{name}` has {size} bytes; the simulator allows at most {MAX_BUFFER_BYTES}")]
    BufferTooLarge {
        /// The buffer.
        name: String,
        /// Its declared size.
        size: u64,
    },
    /// All buffers together are larger than [`MAX_TOTAL_BUFFER_BYTES`].
    #[error("the buffers total {0} bytes; the simulator allows at most {MAX_TOTAL_BUFFER_BYTES}")]
    BuffersTooLarge(u64),
    /// An alignment is not a power of two.
    #[error("`{field}`: alignment {value} is not a power of two")]
    BadAlignment {
        /// The field.
        field: String,
        /// The value.
        value: u64,
    },
    /// The matrix unit's dtypes do not pair up (f16/bf16 need an f32 accumulator, i8 needs i32).
    #[error("matrix unit: {0}")]
    MatrixDtypes(String),
    /// The `layout` key names no layout.
    #[error("`layout`: unknown layout `{0}` (expected nchw or nhwc)")]
    UnknownLayout(String),
}

fn shipped_names() -> String {
    SHIPPED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A validated machine profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name.
    pub name: String,
    /// A one-line description.
    pub description: String,
    /// Core clock in MHz (converts cycles to time in traces).
    pub clock_mhz: u64,
    /// Number of identical cores. The simulator runs one core's program; the compiler splits work across cores.
    pub cores: u64,
    /// Global memory.
    pub global: GlobalMemory,
    /// On-chip buffers, in declaration order.
    pub buffers: Vec<Buffer>,
    /// The matrix unit.
    pub matrix: MatrixUnit,
    /// The vector unit.
    pub vector: VectorUnit,
    /// The DMA engines.
    pub dma: DmaUnit,
    /// The layout of the graph's rank-4 tensors that the convolution and pooling datapath takes.
    pub layout: GraphLayout,
}

/// The layout of the graph's rank-4 tensors that a profile's convolution and pooling datapath takes (the profile's
/// `layout` key; `nchw` when absent).
///
/// Either way the datapath itself reads channels-last data (the implicit-GEMM convolution gathers each input
/// pixel's contiguous channel vector with one aligned DMA); what differs is who pays for the layout:
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphLayout {
    /// `nchw`: the graph stays channels-first (ONNX's NCHW) and the compiler stores every rank-4 tensor
    /// channels-last behind the graph's back; the host re-lays tensors out when it moves them, outside the
    /// simulated cycles. Conv, MaxPool and the global average pools run on the NPU.
    #[default]
    Nchw,
    /// `nhwc`: every tensor is stored exactly as the graph lays it out (row-major), so the datapath takes the
    /// graph's channels-last ops (FusedConvNhwc, MaxPoolNhwc, AveragePoolNhwc); a channels-first convolution or
    /// pool has no kernel, and the layout conversions are the graph's explicit Transposes, which run as DMA
    /// kernels and are counted like every other kernel. The optimizer chooses the layout by cost
    /// (`CostModel::channels_last`), as compilers for NC1HWC0-style NPUs do.
    Nhwc,
}

impl GraphLayout {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            GraphLayout::Nchw => "nchw",
            GraphLayout::Nhwc => "nhwc",
        }
    }
}

/// Global (off-chip) memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalMemory {
    /// Size in bytes; accesses beyond it trap.
    pub size_bytes: u64,
    /// Peak bandwidth in bytes per cycle; a DMA transfer runs at the lower of this and the DMA engine's rate.
    pub bytes_per_cycle: u64,
    /// Required alignment of every DMA's global base address, in bytes (1 = none).
    pub alignment: u64,
}

/// An on-chip buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// The name programs use (`L0A`, `UB`, …).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Required alignment of every operand's base offset in this buffer, in bytes (1 = none).
    pub alignment: u64,
}

/// The matrix ("cube") unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixUnit {
    /// The tile `[M, N, K]` one step computes: `C[M×N] += A[M×K] · B[K×N]`.
    pub tile: [u64; 3],
    /// Element types A and B may have.
    pub input_dtypes: Vec<DType>,
    /// Element types C may have (f32 for float inputs, i32 for i8).
    pub accumulator_dtypes: Vec<DType>,
    /// Cycles for one tile step.
    pub cycles_per_tile: u64,
    /// The buffer A is read from.
    pub a_buffer: String,
    /// The buffer B is read from.
    pub b_buffer: String,
    /// The buffer C is read from and written to.
    pub c_buffer: String,
}

/// Cycles per vector op class, for one pass over `lanes` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorCycles {
    /// Add, mul, max, …
    pub elementwise: u64,
    /// Div, exp, rsqrt, …
    pub transcendental: u64,
    /// Row reductions.
    pub reduce: u64,
    /// Dtype conversions.
    pub cast: u64,
}

/// The vector unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorUnit {
    /// Elements processed per pass.
    pub lanes: u64,
    /// The ops it implements.
    pub ops: Vec<VectorOp>,
    /// The element types it computes on.
    pub dtypes: Vec<DType>,
    /// The buffers it may read and write.
    pub buffers: Vec<String>,
    /// Cycles per pass, per op class.
    pub cycles: VectorCycles,
}

/// The DMA engines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaUnit {
    /// Number of DMA channels: with one, the `dma_in` and `dma_out` queues share it (their transfers serialize);
    /// with two or more, each queue has its own.
    pub engines: u64,
    /// Bytes per cycle of one channel.
    pub bytes_per_cycle: u64,
    /// Fixed cycles per transfer.
    pub latency_cycles: u64,
    /// The buffers DMA can reach (besides global memory).
    pub buffers: Vec<String>,
}

impl Profile {
    /// Loads a shipped profile by name (`default`, `vector_heavy`, `channels_last`).
    pub fn by_name(name: &str) -> Result<Profile, ProfileError> {
        let (_, text) = SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::UnknownName(name.to_string()))?;
        Profile::from_toml(text, name)
    }

    /// Resolves a target spec: `vnpu` (the default profile), `vnpu:NAME` (a shipped profile) or `vnpu:PATH`
    /// (a path ending in `.toml` or containing a `/`).
    pub fn from_target(spec: &str) -> Result<Profile, ProfileError> {
        match spec.strip_prefix("vnpu") {
            Some("") => Profile::by_name("default"),
            Some(rest) => match rest.strip_prefix(':') {
                Some(arg) if arg.ends_with(".toml") || arg.contains('/') => {
                    Profile::from_path(Path::new(arg))
                }
                Some(name) => Profile::by_name(name),
                None => Err(ProfileError::UnknownName(spec.to_string())),
            },
            None => Err(ProfileError::UnknownName(spec.to_string())),
        }
    }

    /// Loads a profile from a TOML file.
    pub fn from_path(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Profile::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates a profile; `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Profile, ProfileError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Toml {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        raw.validate()
    }

    /// The buffer called `name`.
    pub fn buffer(&self, name: &str) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.name == name)
    }

    /// Whether `engine` may access memory `mem`.
    pub fn can_access(&self, engine: Engine, mem: &Mem) -> bool {
        let name = match mem {
            Mem::Global => return matches!(engine, Engine::DmaIn | Engine::DmaOut),
            Mem::Buffer(name) => name,
        };
        match engine {
            Engine::DmaIn | Engine::DmaOut => self.dma.buffers.iter().any(|b| b == name),
            Engine::Cube => [
                &self.matrix.a_buffer,
                &self.matrix.b_buffer,
                &self.matrix.c_buffer,
            ]
            .contains(&name),
            Engine::Vector => self.vector.buffers.iter().any(|b| b == name),
        }
    }

    /// Whether the conv datapath takes the graph's channels-last ops ([`GraphLayout::Nhwc`]).
    pub fn channels_last(&self) -> bool {
        self.layout == GraphLayout::Nhwc
    }

    /// Cycles of one DMA transfer moving `bytes` across the global-memory side: the fixed latency plus the bytes
    /// at the lower of the DMA channel's and global memory's rates.
    pub fn dma_cycles(&self, bytes: u64) -> u64 {
        // Validated profiles have positive rates; max(1) keeps a hand-built profile from dividing by zero.
        let rate = self
            .dma
            .bytes_per_cycle
            .min(self.global.bytes_per_cycle)
            .max(1);
        self.dma.latency_cycles.saturating_add(bytes.div_ceil(rate))
    }

    /// Cycles of one `mmad` over `tiles` tile steps.
    pub fn mmad_cycles(&self, tiles: u64) -> u64 {
        self.matrix.cycles_per_tile.saturating_mul(tiles)
    }

    /// Cycles of one vector instruction of `op` over `elements` elements: one pass per `lanes` elements.
    pub fn vector_op_cycles(&self, op: VectorOp, elements: u64) -> u64 {
        elements
            .div_ceil(self.vector.lanes.max(1))
            .saturating_mul(self.vector_cycles(op.class()))
    }

    /// Cycles per vector pass for an op class.
    pub fn vector_cycles(&self, class: OpClass) -> u64 {
        let c = &self.vector.cycles;
        match class {
            OpClass::Elementwise => c.elementwise,
            OpClass::Transcendental => c.transcendental,
            OpClass::Reduce => c.reduce,
            OpClass::Cast => c.cast,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    clock_mhz: u64,
    cores: u64,
    global_memory: RawGlobal,
    buffers: Vec<RawBuffer>,
    matrix: RawMatrix,
    vector: RawVector,
    dma: RawDma,
    #[serde(default)]
    layout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    size_bytes: u64,
    bytes_per_cycle: u64,
    alignment: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuffer {
    name: String,
    size_bytes: u64,
    alignment: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatrix {
    tile: [u64; 3],
    input_dtypes: Vec<String>,
    accumulator_dtypes: Vec<String>,
    cycles_per_tile: u64,
    a_buffer: String,
    b_buffer: String,
    c_buffer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVector {
    lanes: u64,
    ops: Vec<String>,
    dtypes: Vec<String>,
    buffers: Vec<String>,
    cycles: RawVectorCycles,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVectorCycles {
    elementwise: u64,
    transcendental: u64,
    reduce: u64,
    cast: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDma {
    engines: u64,
    bytes_per_cycle: u64,
    latency_cycles: u64,
    buffers: Vec<String>,
}

fn positive(v: u64, field: &'static str) -> Result<u64, ProfileError> {
    if v == 0 {
        Err(ProfileError::Zero(field))
    } else {
        Ok(v)
    }
}

fn alignment(v: u64, field: impl Into<String>) -> Result<u64, ProfileError> {
    if v.is_power_of_two() {
        Ok(v)
    } else {
        Err(ProfileError::BadAlignment {
            field: field.into(),
            value: v,
        })
    }
}

fn dtypes(names: &[String], field: &'static str) -> Result<Vec<DType>, ProfileError> {
    if names.is_empty() {
        return Err(ProfileError::Zero(field));
    }
    names
        .iter()
        .map(|n| {
            DType::from_name(n).ok_or_else(|| ProfileError::UnknownDtype {
                field,
                value: n.clone(),
            })
        })
        .collect()
}

impl RawProfile {
    fn validate(self) -> Result<Profile, ProfileError> {
        let mut buffers = Vec::new();
        for b in self.buffers {
            if b.name == "gm"
                || b.name.is_empty()
                || buffers.iter().any(|x: &Buffer| x.name == b.name)
            {
                return Err(ProfileError::DuplicateBuffer(b.name));
            }
            positive(b.size_bytes, "buffers.size_bytes")?;
            if b.size_bytes > MAX_BUFFER_BYTES {
                return Err(ProfileError::BufferTooLarge {
                    name: b.name,
                    size: b.size_bytes,
                });
            }
            let alignment = alignment(b.alignment, format!("buffers.{}.alignment", b.name))?;
            buffers.push(Buffer {
                name: b.name,
                size_bytes: b.size_bytes,
                alignment,
            });
        }
        let total = buffers.iter().map(|b| b.size_bytes).sum::<u64>();
        if total > MAX_TOTAL_BUFFER_BYTES {
            return Err(ProfileError::BuffersTooLarge(total));
        }
        let known = |field: &'static str, name: &String| -> Result<String, ProfileError> {
            if buffers.iter().any(|b| &b.name == name) {
                Ok(name.clone())
            } else {
                Err(ProfileError::UnknownBuffer {
                    field,
                    name: name.clone(),
                })
            }
        };

        let m = self.matrix;
        for (i, t) in m.tile.iter().enumerate() {
            positive(
                *t,
                [
                    "matrix.tile[0] (M)",
                    "matrix.tile[1] (N)",
                    "matrix.tile[2] (K)",
                ][i],
            )?;
        }
        let input_dtypes = dtypes(&m.input_dtypes, "matrix.input_dtypes")?;
        let accumulator_dtypes = dtypes(&m.accumulator_dtypes, "matrix.accumulator_dtypes")?;
        for &d in &input_dtypes {
            let acc = match d {
                DType::F16 | DType::BF16 => DType::F32,
                DType::I8 => DType::I32,
                DType::F32 | DType::I32 => {
                    return Err(ProfileError::MatrixDtypes(format!(
                        "{d} is not a matrix input dtype (f16, bf16, i8)"
                    )));
                }
            };
            if !accumulator_dtypes.contains(&acc) {
                return Err(ProfileError::MatrixDtypes(format!(
                    "{d} inputs need a {acc} accumulator"
                )));
            }
        }
        for &d in &accumulator_dtypes {
            if !matches!(d, DType::F32 | DType::I32) {
                return Err(ProfileError::MatrixDtypes(format!(
                    "{d} is not an accumulator dtype (f32, i32)"
                )));
            }
        }
        let matrix = MatrixUnit {
            tile: m.tile,
            input_dtypes,
            accumulator_dtypes,
            cycles_per_tile: positive(m.cycles_per_tile, "matrix.cycles_per_tile")?,
            a_buffer: known("matrix.a_buffer", &m.a_buffer)?,
            b_buffer: known("matrix.b_buffer", &m.b_buffer)?,
            c_buffer: known("matrix.c_buffer", &m.c_buffer)?,
        };

        let v = self.vector;
        let ops = v
            .ops
            .iter()
            .map(|n| VectorOp::from_name(n).ok_or_else(|| ProfileError::UnknownOp(n.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let vector = VectorUnit {
            lanes: positive(v.lanes, "vector.lanes")?,
            ops,
            dtypes: dtypes(&v.dtypes, "vector.dtypes")?,
            buffers: v
                .buffers
                .iter()
                .map(|b| known("vector.buffers", b))
                .collect::<Result<_, _>>()?,
            cycles: VectorCycles {
                elementwise: positive(v.cycles.elementwise, "vector.cycles.elementwise")?,
                transcendental: positive(v.cycles.transcendental, "vector.cycles.transcendental")?,
                reduce: positive(v.cycles.reduce, "vector.cycles.reduce")?,
                cast: positive(v.cycles.cast, "vector.cycles.cast")?,
            },
        };

        let d = self.dma;
        let dma = DmaUnit {
            engines: positive(d.engines, "dma.engines")?,
            bytes_per_cycle: positive(d.bytes_per_cycle, "dma.bytes_per_cycle")?,
            latency_cycles: d.latency_cycles,
            buffers: d
                .buffers
                .iter()
                .map(|b| known("dma.buffers", b))
                .collect::<Result<_, _>>()?,
        };

        let layout = match self.layout.as_deref() {
            None | Some("nchw") => GraphLayout::Nchw,
            Some("nhwc") => GraphLayout::Nhwc,
            Some(other) => return Err(ProfileError::UnknownLayout(other.to_string())),
        };
        let g = self.global_memory;
        Ok(Profile {
            name: self.name,
            description: self.description,
            clock_mhz: positive(self.clock_mhz, "clock_mhz")?,
            cores: positive(self.cores, "cores")?,
            global: GlobalMemory {
                size_bytes: positive(g.size_bytes, "global_memory.size_bytes")?,
                bytes_per_cycle: positive(g.bytes_per_cycle, "global_memory.bytes_per_cycle")?,
                alignment: alignment(g.alignment, "global_memory.alignment")?,
            },
            buffers,
            matrix,
            vector,
            dma,
            layout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_load_and_differ() {
        let d = Profile::by_name("default").unwrap();
        let v = Profile::from_target("vnpu:vector_heavy").unwrap();
        assert_eq!(Profile::from_target("vnpu").unwrap(), d);
        assert_eq!(d.matrix.tile, [16, 16, 16]);
        assert_eq!(d.matrix.input_dtypes[0], DType::F16);
        assert_eq!(v.matrix.input_dtypes, vec![DType::BF16]);
        assert_ne!(d.matrix.tile, v.matrix.tile);
        assert!(v.vector.lanes > d.vector.lanes);
        assert_ne!(
            d.buffer("UB").map(|b| b.size_bytes),
            v.buffer("UB").map(|b| b.size_bytes)
        );
    }

    #[test]
    fn every_profile_file_is_shipped_and_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
        let files = std::fs::read_dir(dir).unwrap().filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        });
        assert_eq!(files.count(), SHIPPED.len());
        for (name, text) in SHIPPED {
            let p = Profile::from_toml(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&p.name, name, "a profile's `name` is its file name");
        }
    }

    #[test]
    fn only_the_channels_last_profile_takes_nhwc_graphs() {
        let c = Profile::from_target("vnpu:channels_last").unwrap();
        assert_eq!(c.layout, GraphLayout::Nhwc);
        assert!(c.channels_last());
        for name in ["default", "vector_heavy"] {
            let p = Profile::by_name(name).unwrap();
            assert_eq!(p.layout, GraphLayout::Nchw, "{name}");
            // The same machine otherwise: the channels-last profile is the default one with the graph's layout.
            if name == "default" {
                let same = Profile {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    layout: c.layout,
                    ..p
                };
                assert_eq!(same, c);
            }
        }
    }

    #[test]
    fn profile_loads_from_a_path() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/vector_heavy.toml");
        let p = Profile::from_target(&format!("vnpu:{path}")).unwrap();
        assert_eq!(p, Profile::by_name("vector_heavy").unwrap());
        let err = Profile::from_target("vnpu:/nonexistent/x.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read profile /nonexistent/x.toml"),
            "{err}"
        );
    }

    /// Each case edits the default profile's text and expects this error message.
    #[test]
    fn bad_profiles_are_typed_errors() {
        let base = SHIPPED
            .iter()
            .find(|(n, _)| *n == "default")
            .map(|(_, t)| *t)
            .unwrap();
        let cases: &[(&str, &str, &str)] = &[
            (
                "lanes = 128",
                "lanes = 0",
                "`vector.lanes` must be greater than zero",
            ),
            (
                "tile = [16, 16, 16]",
                "tile = [16, 0, 16]",
                "`matrix.tile[1] (N)` must be greater than zero",
            ),
            (
                "input_dtypes = [\"f16\", \"i8\"]",
                "input_dtypes = [\"f64\"]",
                "`matrix.input_dtypes`: unknown dtype `f64` (expected f32, f16, bf16, i8 or i32)",
            ),
            (
                "a_buffer = \"L0A\"",
                "a_buffer = \"L1\"",
                "`matrix.a_buffer` names buffer `L1`, which is not declared in [[buffers]]",
            ),
            (
                "buffers = [\"UB\", \"L0C\"]",
                "buffers = [\"UB\", \"SRAM\"]",
                "`vector.buffers` names buffer `SRAM`, which is not declared in [[buffers]]",
            ),
            ("\"exp\",", "\"expm1\",", "`vector.ops`: unknown op `expm1`"),
            (
                "accumulator_dtypes = [\"f32\", \"i32\"]",
                "accumulator_dtypes = [\"f32\"]",
                "matrix unit: i8 inputs need a i32 accumulator",
            ),
            (
                "name = \"L0B\"",
                "name = \"L0A\"",
                "buffer name `L0A` is declared twice or reserved",
            ),
            (
                "alignment = 32",
                "alignment = 24",
                "`global_memory.alignment`: alignment 24 is not a power of two",
            ),
            (
                "clock_mhz = 1000",
                "clock_mhz = 1000\nclock_ghz = 1",
                "unknown field `clock_ghz`",
            ),
            (
                "size_bytes = 65536",
                "size_bytes = 1099511627776",
                "the simulator allows at most",
            ),
            (
                "cores = 8",
                "cores = 8\nlayout = \"nchwc\"",
                "`layout`: unknown layout `nchwc` (expected nchw or nhwc)",
            ),
        ];
        for (from, to, want) in cases {
            assert!(base.contains(from), "default.toml has no `{from}`");
            let text = base.replacen(from, to, 1);
            let err = Profile::from_toml(&text, "default")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{from} -> {to}: {err}");
        }
        assert_eq!(
            Profile::by_name("tpu").unwrap_err().to_string(),
            "no profile named `tpu` (shipped: channels_last, default, vector_heavy); pass a path to a .toml file for others"
        );
    }
}
