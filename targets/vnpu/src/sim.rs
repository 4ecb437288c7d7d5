//! The functional + timing simulator: runs a [`Program`] on a [`Machine`] built from a [`Profile`].
//!
//! **Function.** Instructions compute exactly as the ISA docs say: floats are computed in `f32` and rounded to
//! nearest even when stored as `f16`/`bf16`; matrix products of `f16`/`bf16` inputs are exact in `f32` and summed in
//! ascending `k` order; `i8` products accumulate in wrapping `i32`. The simulator traps ([`Trap`], with the
//! instruction index, engine, instruction text and what went wrong) on: an access outside a buffer or global
//! memory, an operand base offset that breaks the memory's alignment, a buffer the engine may not access, a dtype
//! or op the profile's unit lacks, malformed operands, a race (found with vector clocks, see `race.rs`), and a
//! deadlock (a `wait_flag` whose `set_flag` never comes, or a `barrier` some queue cannot reach).
//!
//! **Time.** Each engine queue has its own timeline. An instruction starts when its queue is free, its DMA channel
//! (if any) is free, and (for `wait_flag`) the matching `set_flag` has fired; `set_flag`, `wait_flag` and `barrier`
//! take no cycles. Durations come from the profile: DMA `latency + ceil(bytes / min(dma rate, global rate))` where
//! bytes are those crossing the global-memory side; `mmad` `cycles_per_tile × mt·nt·kt`; vector
//! `ceil(elements / lanes) × cycles(op class)`. Overlap of DMA and compute falls out of the separate timelines; the
//! total is the latest end. Among queues whose next instruction can start, the one that can start earliest runs
//! first (ties: [`Engine::ALL`] order), so every run of a program is identical.

use std::fmt;

use thiserror::Error;

use crate::dtype::{DType, Value};
use crate::isa::{Engine, Program};
use crate::profile::{MAX_BUFFER_BYTES, MAX_TOTAL_BUFFER_BYTES, Profile, ProfileError};

mod exec;
mod memory;
mod schedule;

use memory::Pages;

/// The most elements one operand of one instruction may have (bounds the memory and work of a single, possibly
/// hostile, instruction).
pub const MAX_ELEMENTS: u64 = 1 << 24;
/// The most multiply-accumulates one `mmad` may do.
pub const MAX_MACS: u64 = 1 << 32;

/// A trap: why the program stopped, and where.
#[derive(Debug, Clone, PartialEq, Error)]
pub struct Trap {
    /// The index of the trapping instruction in the program.
    pub index: usize,
    /// The engine it ran on (`None` for `barrier`).
    pub engine: Option<Engine>,
    /// The instruction, in assembly text.
    pub instr: String,
    /// What went wrong (boxed: traps are rare and `Result<_, Trap>` stays small).
    pub kind: Box<TrapKind>,
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = self.engine.map_or("all engines", Engine::name);
        write!(
            f,
            "trap at instruction {} on {engine} (`{}`): {}",
            self.index, self.instr, self.kind
        )
    }
}

/// What a [`Trap`] is about.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TrapKind {
    /// An access reaches past the end of a memory.
    #[error("{mem} bytes [{start}, {end}) are out of bounds (size {size})")]
    OutOfBounds {
        /// The memory.
        mem: String,
        /// First byte touched.
        start: u64,
        /// One past the last byte touched (saturated at `u64::MAX`).
        end: u64,
        /// The memory's size.
        size: u64,
    },
    /// An operand's base offset is not a multiple of the memory's alignment.
    #[error("{mem} offset {offset} is not aligned to {alignment} bytes")]
    Unaligned {
        /// The memory.
        mem: String,
        /// The offset.
        offset: u64,
        /// The required alignment.
        alignment: u64,
    },
    /// The profile has no buffer of this name.
    #[error("no buffer named `{0}` in this profile")]
    UnknownBuffer(String),
    /// The engine has no path to this memory in the profile.
    #[error("{engine} cannot access {mem} in this profile")]
    NoAccess {
        /// The engine.
        engine: Engine,
        /// The memory.
        mem: String,
    },
    /// The profile's unit lacks this dtype or op.
    #[error("unsupported by this profile: {0}")]
    Unsupported(String),
    /// Operands are inconsistent (dtypes, shapes, directions) or too large.
    #[error("bad operands: {0}")]
    BadOperands(String),
    /// Two engines touch the same bytes without ordering.
    #[error(
        "race on {mem} bytes [{start}, {end}): this {this} and the {other} by instruction {other_index} \
         ({other_engine}) are not ordered by set_flag/wait_flag or barrier"
    )]
    Race {
        /// The memory.
        mem: String,
        /// First overlapping byte.
        start: u64,
        /// One past the last overlapping byte of the first overlapping run.
        end: u64,
        /// `read` or `write` (this instruction's access).
        this: &'static str,
        /// `read` or `write` (the earlier access).
        other: &'static str,
        /// The earlier instruction.
        other_index: usize,
        /// Its engine.
        other_engine: Engine,
    },
    /// No queue can make progress.
    #[error("deadlock: {0}")]
    Deadlock(String),
}

/// Busy time and instruction count of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Cycles spent executing instructions.
    pub busy_cycles: u64,
    /// Cycles the queue had its next instruction but could not start it: waiting for a flag, a barrier, or a
    /// DMA channel shared with the other DMA queue. (Idle time after the queue's last instruction is not counted.)
    pub stall_cycles: u64,
    /// Instructions executed (synchronization included).
    pub instructions: u64,
}

/// One executed instruction on one engine's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The instruction's index in the program.
    pub index: usize,
    /// The engine's timeline.
    pub engine: Engine,
    /// The mnemonic.
    pub name: String,
    /// The instruction text.
    pub text: String,
    /// Start cycle.
    pub start: u64,
    /// Duration in cycles (0 for synchronization).
    pub cycles: u64,
    /// Work measures (`bytes`, `tiles`, `macs`, `elements`); for `wait_flag`, `set_by`: the index of the matching
    /// `set_flag`.
    pub args: Vec<(&'static str, u64)>,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The cycle at which the last instruction ends.
    pub total_cycles: u64,
    /// Per engine, in [`Engine::ALL`] order.
    pub engines: [EngineStats; 4],
    /// Bytes DMA read from global memory.
    pub bytes_loaded: u64,
    /// Bytes DMA wrote to global memory.
    pub bytes_stored: u64,
    /// Multiply-accumulates done by the matrix unit.
    pub macs: u64,
    /// Every executed instruction, in execution order.
    pub events: Vec<TraceEvent>,
}

impl SimReport {
    /// A human-readable summary: total time, traffic, and per engine its busy share, stalls and instructions.
    pub fn summary(&self, clock_mhz: u64) -> String {
        let us = self.total_cycles as f64 / clock_mhz.max(1) as f64;
        let mut out = format!(
            "total {} cycles ({us:.3} us at {clock_mhz} MHz); loaded {} B, stored {} B, {} MACs\n",
            self.total_cycles, self.bytes_loaded, self.bytes_stored, self.macs
        );
        for (e, s) in Engine::ALL.iter().zip(&self.engines) {
            let share = 100.0 * s.busy_cycles as f64 / self.total_cycles.max(1) as f64;
            out += &format!(
                "  {:<8} busy {:>10} ({share:5.1}%)  stalled {:>10}  instructions {}\n",
                e.name(),
                s.busy_cycles,
                s.stall_cycles,
                s.instructions
            );
        }
        out
    }
}

/// A host access to global memory outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("global memory bytes [{start}, {end}) are out of bounds (size {size})")]
pub struct HostAccessError {
    /// First byte.
    pub start: u64,
    /// One past the last byte (saturated).
    pub end: u64,
    /// The global memory size.
    pub size: u64,
}

/// One simulated core with its buffers and the global memory.
#[derive(Debug, Clone)]
pub struct Machine {
    profile: Profile,
    buffers: Vec<Vec<u8>>,
    global: Pages,
    record_events: bool,
}

impl Machine {
    /// A machine with zeroed buffers and zeroed global memory. Profiles loaded from TOML are validated already;
    /// a profile built in code is checked here for the buffer sizes the machine allocates.
    pub fn new(profile: Profile) -> Result<Machine, ProfileError> {
        let mut total = 0u64;
        for b in &profile.buffers {
            if b.size_bytes > MAX_BUFFER_BYTES {
                return Err(ProfileError::BufferTooLarge {
                    name: b.name.clone(),
                    size: b.size_bytes,
                });
            }
            total = total.saturating_add(b.size_bytes);
        }
        if total > MAX_TOTAL_BUFFER_BYTES {
            return Err(ProfileError::BuffersTooLarge(total));
        }
        // Each size is at most MAX_BUFFER_BYTES, so it fits a usize.
        let buffers = profile
            .buffers
            .iter()
            .map(|b| vec![0; b.size_bytes as usize])
            .collect();
        Ok(Machine {
            profile,
            buffers,
            global: Pages::default(),
            record_events: true,
        })
    }

    /// Whether runs record [`SimReport::events`] (on by default). Turning it off saves memory on long programs;
    /// cycle counts and statistics are the same either way.
    pub fn set_record_events(&mut self, on: bool) {
        self.record_events = on;
    }

    /// The machine's profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn check_global(&self, addr: u64, len: u64) -> Result<(), HostAccessError> {
        let size = self.profile.global.size_bytes;
        match addr.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            end => Err(HostAccessError {
                start: addr,
                end: end.unwrap_or(u64::MAX),
                size,
            }),
        }
    }

    /// Writes raw bytes to global memory.
    pub fn write_global(&mut self, addr: u64, bytes: &[u8]) -> Result<(), HostAccessError> {
        self.check_global(addr, bytes.len() as u64)?;
        self.global.write(addr, bytes);
        Ok(())
    }

    /// Reads raw bytes from global memory.
    pub fn read_global(&self, addr: u64, len: u64) -> Result<Vec<u8>, HostAccessError> {
        self.check_global(addr, len)?;
        // In bounds, so `len` is at most the profile's global memory size.
        let mut out = vec![0; len as usize];
        self.global.read(addr, &mut out);
        Ok(out)
    }

    /// Writes `values` to global memory as consecutive `dtype` elements (rounded as the machine rounds).
    pub fn write_global_values(
        &mut self,
        addr: u64,
        dtype: DType,
        values: &[f32],
    ) -> Result<(), HostAccessError> {
        let size = dtype.size() as usize;
        let mut bytes = vec![0; values.len() * size];
        for (v, out) in values.iter().zip(bytes.chunks_exact_mut(size)) {
            dtype.write(Value::Float(*v), out);
        }
        self.write_global(addr, &bytes)
    }

    /// Reads `count` consecutive `dtype` elements from global memory, widened to `f32`.
    pub fn read_global_values(
        &self,
        addr: u64,
        dtype: DType,
        count: u64,
    ) -> Result<Vec<f32>, HostAccessError> {
        let bytes = self.read_global(addr, count.saturating_mul(dtype.size()))?;
        Ok(bytes
            .chunks_exact(dtype.size() as usize)
            .map(|c| dtype.read(c).as_f32())
            .collect())
    }

    /// The current contents of an on-chip buffer.
    pub fn buffer(&self, name: &str) -> Option<&[u8]> {
        let i = self.profile.buffers.iter().position(|b| b.name == name)?;
        self.buffers.get(i).map(Vec::as_slice)
    }

    /// Runs a program to completion, or to its first trap. Buffer and global memory contents persist between runs
    /// (so a host can stage inputs, run, and read outputs); timing starts at cycle 0 on every run.
    pub fn run(&mut self, program: &Program) -> Result<SimReport, Trap> {
        schedule::Run::new(self, program).go()
    }
}
