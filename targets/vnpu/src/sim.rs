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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use thiserror::Error;

use crate::dtype::{DType, Value};
use crate::isa::{
    Access, BinaryOp, Dma, Engine, Flag, Instr, Mem, Mmad, Operand, Program, ReduceOp, UnaryOp,
    VectorInstr,
};
use crate::profile::Profile;
use crate::race::{self, Clock, Conflict, Runs, Shadow};

/// The most elements one operand of one instruction may have (bounds the memory and work of a single, possibly
/// hostile, instruction).
pub const MAX_ELEMENTS: u64 = 1 << 24;
/// The most multiply-accumulates one `mmad` may do.
pub const MAX_MACS: u64 = 1 << 32;

const PAGE: u64 = 1 << 16;

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

/// Global memory, allocated in 64 KiB pages on first write (unwritten bytes read as zero).
#[derive(Debug, Clone, Default)]
struct Pages {
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Pages {
    fn read(&self, mut addr: u64, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let (page, at) = (addr / PAGE, (addr % PAGE) as usize);
            let n = (PAGE as usize - at).min(out.len() - done);
            match self.pages.get(&page) {
                Some(p) => out[done..done + n].copy_from_slice(&p[at..at + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
            addr += n as u64;
        }
    }

    fn write(&mut self, mut addr: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let (page, at) = (addr / PAGE, (addr % PAGE) as usize);
            let n = (PAGE as usize - at).min(data.len() - done);
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0; PAGE as usize]);
            p[at..at + n].copy_from_slice(&data[done..done + n]);
            done += n;
            addr += n as u64;
        }
    }
}

/// One simulated core with its buffers and the global memory.
#[derive(Debug, Clone)]
pub struct Machine {
    profile: Profile,
    buffers: Vec<Vec<u8>>,
    global: Pages,
}

/// Where an operand's bytes live: a buffer index or global memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loc {
    Buf(usize),
    Global,
}

/// A resolved, bounds-checked operand: its memory and the byte address of every element.
struct Region {
    loc: Loc,
    mem: String,
    dtype: DType,
    addrs: Vec<u64>,
}

impl Region {
    /// The exact bytes touched, as sorted merged intervals.
    fn runs(&self) -> Runs {
        let size = self.dtype.size();
        // Consecutive addresses extend the current run; strided or reversed orders are sorted and merged after.
        let mut runs: Runs = Vec::new();
        for &a in &self.addrs {
            match runs.last_mut() {
                Some(last) if a == last.1 => last.1 = a + size,
                _ => runs.push((a, a + size)),
            }
        }
        if runs.windows(2).all(|w| w[0].1 < w[1].0) {
            return runs;
        }
        runs.sort_unstable();
        let mut out: Runs = Vec::with_capacity(runs.len());
        for (lo, hi) in runs {
            match out.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        out
    }
}

/// The data and bookkeeping effect of one instruction, computed before anything is written.
struct Effect {
    reads: Vec<Region>,
    writes: Vec<(Region, Vec<Value>)>,
    cycles: u64,
    args: Vec<(&'static str, u64)>,
}

impl Machine {
    /// A machine with zeroed buffers and zeroed global memory.
    pub fn new(profile: Profile) -> Machine {
        // Buffer sizes are bounded by profile validation (MAX_BUFFER_BYTES).
        let buffers = profile
            .buffers
            .iter()
            .map(|b| vec![0; b.size_bytes as usize])
            .collect();
        Machine {
            profile,
            buffers,
            global: Pages::default(),
        }
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
        Run::new(self, program).go()
    }

    // ---- operand resolution --------------------------------------------------------------------------------

    fn locate(&self, mem: &Mem, engine: Engine) -> Result<(Loc, u64, u64), TrapKind> {
        let (loc, size, align) = match mem {
            Mem::Global => (
                Loc::Global,
                self.profile.global.size_bytes,
                self.profile.global.alignment,
            ),
            Mem::Buffer(name) => {
                let i = self
                    .profile
                    .buffers
                    .iter()
                    .position(|b| &b.name == name)
                    .ok_or_else(|| TrapKind::UnknownBuffer(name.clone()))?;
                let b = &self.profile.buffers[i];
                (Loc::Buf(i), b.size_bytes, b.alignment)
            }
        };
        if !self.profile.can_access(engine, mem) {
            return Err(TrapKind::NoAccess {
                engine,
                mem: mem.name().to_string(),
            });
        }
        Ok((loc, size, align))
    }

    /// Resolves a strided block `shape`/`strides` (elements) at `access` for `engine`, checking bounds and
    /// alignment.
    fn region(
        &self,
        access: &Access,
        shape: &[u64],
        strides: &[u64],
        engine: Engine,
    ) -> Result<Region, TrapKind> {
        let (loc, size, align) = self.locate(&access.mem, engine)?;
        let mem = access.mem.name().to_string();
        if !access.offset.is_multiple_of(align) {
            return Err(TrapKind::Unaligned {
                mem,
                offset: access.offset,
                alignment: align,
            });
        }
        let count = elements(shape)?;
        let esize = access.dtype.size();
        let oob = |end: Option<u64>| TrapKind::OutOfBounds {
            mem: access.mem.name().to_string(),
            start: access.offset,
            end: end.unwrap_or(u64::MAX),
            size,
        };
        // The farthest element: Σ (extent-1)·stride, then its last byte.
        let mut last: Option<u64> = Some(0);
        for (&n, &s) in shape.iter().zip(strides) {
            last = last.and_then(|l| n.checked_sub(1)?.checked_mul(s)?.checked_add(l));
        }
        let end = last
            .and_then(|l| l.checked_mul(esize))
            .and_then(|b| b.checked_add(access.offset))
            .and_then(|b| b.checked_add(esize));
        match end {
            Some(e) if e <= size => {}
            e => return Err(oob(e)),
        }
        // Every address is in bounds (checked above), so none of this arithmetic overflows. Shapes have at most
        // three dimensions (DMA; mmad and vector operands have one or two); pad to three, outermost first.
        let (mut ext, mut st) = ([1u64; 3], [0u64; 3]);
        let pad = 3usize
            .checked_sub(shape.len())
            .ok_or_else(|| TrapKind::BadOperands("more than 3 dimensions".into()))?;
        for (d, (&n, &s)) in shape.iter().zip(strides).enumerate() {
            ext[pad + d] = n;
            st[pad + d] = s * esize;
        }
        let mut addrs = Vec::with_capacity(count as usize);
        for i in 0..ext[0] {
            let base_i = access.offset + i * st[0];
            for j in 0..ext[1] {
                let base_j = base_i + j * st[1];
                addrs.extend((0..ext[2]).map(|k| base_j + k * st[2]));
            }
        }
        Ok(Region {
            loc,
            mem,
            dtype: access.dtype,
            addrs,
        })
    }

    /// A contiguous `count`-element block.
    fn block(&self, access: &Access, count: u64, engine: Engine) -> Result<Region, TrapKind> {
        self.region(access, &[count], &[1], engine)
    }

    /// Reads every element of a region (in bounds by construction of the region).
    fn read(&self, r: &Region) -> Vec<Value> {
        let size = r.dtype.size() as usize;
        match r.loc {
            Loc::Buf(i) => {
                let mem = &self.buffers[i];
                r.addrs
                    .iter()
                    .map(|&a| r.dtype.read(&mem[a as usize..a as usize + size]))
                    .collect()
            }
            Loc::Global => {
                // Consecutive elements mostly share a page: look each page up once per stretch.
                let mut cached: Option<(u64, Option<&Vec<u8>>)> = None;
                let mut buf = [0u8; 4];
                r.addrs
                    .iter()
                    .map(|&a| {
                        let (page, at) = (a / PAGE, (a % PAGE) as usize);
                        if at + size > PAGE as usize {
                            self.global.read(a, &mut buf[..size]);
                            return r.dtype.read(&buf[..size]);
                        }
                        let p = match cached {
                            Some((n, p)) if n == page => p,
                            _ => {
                                let p = self.global.pages.get(&page);
                                cached = Some((page, p));
                                p
                            }
                        };
                        match p {
                            Some(p) => r.dtype.read(&p[at..at + size]),
                            None => r.dtype.read(&[0u8; 4][..size]),
                        }
                    })
                    .collect()
            }
        }
    }

    /// Writes `values` to a region's elements, converting to its dtype.
    fn write(&mut self, r: &Region, values: &[Value]) {
        let size = r.dtype.size() as usize;
        let n = r.addrs.len().min(values.len());
        match r.loc {
            Loc::Buf(b) => {
                let mem = &mut self.buffers[b];
                for (&a, &v) in r.addrs.iter().zip(values) {
                    r.dtype.write(v, &mut mem[a as usize..a as usize + size]);
                }
            }
            Loc::Global => {
                let mut i = 0;
                while i < n {
                    let (page, at) = (r.addrs[i] / PAGE, (r.addrs[i] % PAGE) as usize);
                    if at + size > PAGE as usize {
                        let mut buf = [0u8; 4];
                        r.dtype.write(values[i], &mut buf[..size]);
                        self.global.write(r.addrs[i], &buf[..size]);
                        i += 1;
                        continue;
                    }
                    // Write the stretch of elements that stays inside this page with one page lookup.
                    let p = self
                        .global
                        .pages
                        .entry(page)
                        .or_insert_with(|| vec![0; PAGE as usize]);
                    while i < n {
                        let (pg, at) = (r.addrs[i] / PAGE, (r.addrs[i] % PAGE) as usize);
                        if pg != page || at + size > PAGE as usize {
                            break;
                        }
                        r.dtype.write(values[i], &mut p[at..at + size]);
                        i += 1;
                    }
                }
            }
        }
    }

    // ---- instruction semantics -----------------------------------------------------------------------------

    fn dma(&self, d: &Dma, load: bool) -> Result<Effect, TrapKind> {
        let engine = if load { Engine::DmaIn } else { Engine::DmaOut };
        let (src_global, dst_global) = (d.src.mem == Mem::Global, d.dst.mem == Mem::Global);
        if load && (dst_global || !src_global) {
            return Err(TrapKind::BadOperands(
                "load reads global memory and writes a buffer".into(),
            ));
        }
        if !load && (src_global || !dst_global) {
            return Err(TrapKind::BadOperands(
                "store reads a buffer and writes global memory".into(),
            ));
        }
        let n = d.shape.len();
        if !(1..=crate::isa::MAX_DMA_DIMS).contains(&n)
            || d.src_strides.len() != n
            || d.dst_strides.len() != n
        {
            return Err(TrapKind::BadOperands(format!(
                "shape and strides must have the same length, 1 to {}",
                crate::isa::MAX_DMA_DIMS
            )));
        }
        let src = self.region(&d.src, &d.shape, &d.src_strides, engine)?;
        let dst = self.region(&d.dst, &d.shape, &d.dst_strides, engine)?;
        let values = self.read(&src);
        let global = if load { &src } else { &dst };
        let bytes = global.addrs.len() as u64 * global.dtype.size();
        let cycles = self.profile.dma_cycles(bytes);
        Ok(Effect {
            reads: vec![src],
            writes: vec![(dst, values)],
            cycles,
            args: vec![("bytes", bytes)],
        })
    }

    fn mmad(&self, m: &Mmad) -> Result<Effect, TrapKind> {
        let p = &self.profile.matrix;
        let want = [
            (&m.a, &p.a_buffer, "A"),
            (&m.b, &p.b_buffer, "B"),
            (&m.c, &p.c_buffer, "C"),
        ];
        for (acc, buf, role) in want {
            if acc.mem.name() != buf {
                return Err(TrapKind::BadOperands(format!(
                    "the cube reads {role} from {buf}, not {}",
                    acc.mem
                )));
            }
        }
        let input = m.a.dtype;
        if m.b.dtype != input {
            return Err(TrapKind::BadOperands(format!(
                "A is {input} but B is {}",
                m.b.dtype
            )));
        }
        if !p.input_dtypes.contains(&input) {
            return Err(TrapKind::Unsupported(format!(
                "matrix unit input dtype {input}"
            )));
        }
        let acc_dtype = if input.is_float() {
            DType::F32
        } else {
            DType::I32
        };
        if m.c.dtype != acc_dtype {
            return Err(TrapKind::BadOperands(format!(
                "{input} inputs accumulate in {acc_dtype}, not {}",
                m.c.dtype
            )));
        }
        let [mt, nt, kt] = m.tiles;
        if mt == 0 || nt == 0 || kt == 0 {
            return Err(TrapKind::BadOperands("tile counts must be positive".into()));
        }
        let [tm, tn, tk] = p.tile;
        let dims = [mt.checked_mul(tm), nt.checked_mul(tn), kt.checked_mul(tk)];
        let [Some(rows), Some(cols), Some(depth)] = dims else {
            return Err(TrapKind::BadOperands("matrix size overflows".into()));
        };
        let macs = rows.saturating_mul(cols).saturating_mul(depth);
        if macs > MAX_MACS {
            return Err(TrapKind::BadOperands(format!(
                "more than {MAX_MACS} multiply-accumulates in one mmad"
            )));
        }
        let a = self.region(&m.a, &[rows, depth], &[depth, 1], Engine::Cube)?;
        let b = self.region(&m.b, &[depth, cols], &[cols, 1], Engine::Cube)?;
        let c = self.region(&m.c, &[rows, cols], &[cols, 1], Engine::Cube)?;
        let (av, bv) = (self.read(&a), self.read(&b));
        let old = if m.accumulate {
            self.read(&c)
        } else {
            Vec::new()
        };
        let (r, n, k) = (rows as usize, cols as usize, depth as usize);
        // Row i of C accumulates a[i][kk]·b[kk][..] for kk ascending: every element sums in ascending k, and the
        // inner loop runs along contiguous rows.
        let out: Vec<Value> = if input.is_float() {
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                av.iter().map(|v| v.as_f32()).collect(),
                bv.iter().map(|v| v.as_f32()).collect(),
            );
            let mut acc: Vec<f32> = if m.accumulate {
                old.iter().map(|v| v.as_f32()).collect()
            } else {
                vec![0.0; r * n]
            };
            for (i, row) in acc.chunks_mut(n).enumerate() {
                for kk in 0..k {
                    let x = a32[i * k + kk];
                    for (c, y) in row.iter_mut().zip(&b32[kk * n..(kk + 1) * n]) {
                        *c += x * y;
                    }
                }
            }
            acc.into_iter().map(Value::Float).collect()
        } else {
            let (ai, bi): (Vec<i32>, Vec<i32>) = (
                av.iter().map(|v| v.as_i32()).collect(),
                bv.iter().map(|v| v.as_i32()).collect(),
            );
            let mut acc: Vec<i32> = if m.accumulate {
                old.iter().map(|v| v.as_i32()).collect()
            } else {
                vec![0; r * n]
            };
            for (i, row) in acc.chunks_mut(n).enumerate() {
                for kk in 0..k {
                    let x = ai[i * k + kk];
                    for (c, y) in row.iter_mut().zip(&bi[kk * n..(kk + 1) * n]) {
                        *c = c.wrapping_add(x.wrapping_mul(*y));
                    }
                }
            }
            acc.into_iter().map(Value::Int).collect()
        };
        let tiles = mt.saturating_mul(nt).saturating_mul(kt);
        let mut reads = vec![a, b];
        if m.accumulate {
            reads.push(Region {
                loc: c.loc,
                mem: c.mem.clone(),
                dtype: c.dtype,
                addrs: c.addrs.clone(),
            });
        }
        Ok(Effect {
            reads,
            writes: vec![(c, out)],
            cycles: self.profile.mmad_cycles(tiles),
            args: vec![("tiles", tiles), ("macs", macs)],
        })
    }

    fn vector(&self, v: &VectorInstr) -> Result<Effect, TrapKind> {
        let p = &self.profile.vector;
        let op = v.op();
        if !p.ops.contains(&op) {
            return Err(TrapKind::Unsupported(format!("vector op {op}")));
        }
        let [rows, cols] = v.shape();
        if rows == 0 || cols == 0 {
            return Err(TrapKind::BadOperands("shape must be positive".into()));
        }
        let count = elements(&[rows, cols])?;
        let vr = |acc: &Access, n: u64| -> Result<Region, TrapKind> {
            if !p.dtypes.contains(&acc.dtype) {
                return Err(TrapKind::Unsupported(format!("vector dtype {}", acc.dtype)));
            }
            self.block(acc, n, Engine::Vector)
        };
        let same = |a: &Access, b: &Access| -> Result<(), TrapKind> {
            if a.dtype == b.dtype {
                Ok(())
            } else {
                Err(TrapKind::BadOperands(format!(
                    "vec.{op} operands are {} and {}",
                    a.dtype, b.dtype
                )))
            }
        };
        let int_ok = |d: DType| -> Result<(), TrapKind> {
            if d.is_float() || op.supports_int() {
                Ok(())
            } else {
                Err(TrapKind::BadOperands(format!(
                    "vec.{op} is not defined on {d}"
                )))
            }
        };
        let (reads, dst, out) = match v {
            VectorInstr::Unary { op, dst, src, .. } => {
                same(dst, src)?;
                int_ok(src.dtype)?;
                let s = vr(src, count)?;
                let out = self.read(&s).into_iter().map(|x| unary(*op, x)).collect();
                (vec![s], vr(dst, count)?, out)
            }
            VectorInstr::Binary { op, dst, a, b, .. } => {
                same(dst, a)?;
                int_ok(a.dtype)?;
                let ra = vr(a, count)?;
                let av = self.read(&ra);
                let (rb, bv, per): (Option<Region>, Vec<Value>, u64) = match b {
                    Operand::Full(x) | Operand::Row(x) | Operand::Scalar(x) => {
                        same(a, x)?;
                        let n = match b {
                            Operand::Full(_) => count,
                            Operand::Row(_) => rows,
                            _ => 1,
                        };
                        let r = vr(x, n)?;
                        let vals = self.read(&r);
                        (Some(r), vals, count / n)
                    }
                    Operand::Imm(x) => (None, vec![immediate(*x, a.dtype)?], count),
                };
                // Element e of `a` pairs with element e / per of `b`'s values (per = cols for /row, count for one).
                let out = av
                    .iter()
                    .enumerate()
                    .map(|(e, &x)| binary(*op, x, bv[e / per as usize]))
                    .collect::<Vec<_>>();
                let mut reads = vec![ra];
                reads.extend(rb);
                (reads, vr(dst, count)?, out)
            }
            VectorInstr::Reduce { op, dst, src, .. } => {
                same(dst, src)?;
                let s = vr(src, count)?;
                let vals = self.read(&s);
                let out = vals
                    .chunks(cols as usize)
                    .map(|row| reduce(*op, row))
                    .collect();
                (vec![s], vr(dst, rows)?, out)
            }
            VectorInstr::Cast { dst, src, .. } => {
                let s = vr(src, count)?;
                let out = self.read(&s);
                (vec![s], vr(dst, count)?, out)
            }
            VectorInstr::Fill { dst, value, .. } => {
                let x = immediate(*value, dst.dtype)?;
                (Vec::new(), vr(dst, count)?, vec![x; count as usize])
            }
        };
        let cycles = self.profile.vector_op_cycles(op, count);
        Ok(Effect {
            reads,
            writes: vec![(dst, out)],
            cycles,
            args: vec![("elements", count)],
        })
    }
}

fn elements(shape: &[u64]) -> Result<u64, TrapKind> {
    let n = shape.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
    match n {
        Some(0) => Err(TrapKind::BadOperands("shape must be positive".into())),
        Some(n) if n <= MAX_ELEMENTS => Ok(n),
        _ => Err(TrapKind::BadOperands(format!(
            "more than {MAX_ELEMENTS} elements in one instruction"
        ))),
    }
}

/// An immediate converted to an element type: rounded to `f32` for floats; integers must be exact.
fn immediate(x: f64, dtype: DType) -> Result<Value, TrapKind> {
    if dtype.is_float() {
        return Ok(Value::Float(x as f32));
    }
    if x.fract() == 0.0 && x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX) {
        Ok(Value::Int(x as i32))
    } else {
        Err(TrapKind::BadOperands(format!(
            "immediate {x} is not a {dtype} value"
        )))
    }
}

fn unary(op: UnaryOp, x: Value) -> Value {
    match x {
        Value::Float(x) => Value::Float(match op {
            UnaryOp::Copy => x,
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Exp => x.exp(),
            UnaryOp::Ln => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }),
        // Integer dtypes only reach the elementwise class (checked by the caller).
        Value::Int(x) => Value::Int(match op {
            UnaryOp::Neg => x.wrapping_neg(),
            UnaryOp::Abs => x.wrapping_abs(),
            UnaryOp::Relu => x.max(0),
            _ => x,
        }),
    }
}

fn binary(op: BinaryOp, a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => Value::Int(match op {
            BinaryOp::Add => a.wrapping_add(b),
            BinaryOp::Sub => a.wrapping_sub(b),
            BinaryOp::Mul => a.wrapping_mul(b),
            BinaryOp::Max => a.max(b),
            BinaryOp::Min => a.min(b),
            // Integer division is rejected before execution.
            BinaryOp::Div => a,
        }),
        (a, b) => {
            let (a, b) = (a.as_f32(), b.as_f32());
            Value::Float(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                BinaryOp::Max => a.max(b),
                BinaryOp::Min => a.min(b),
            })
        }
    }
}

fn reduce(op: ReduceOp, row: &[Value]) -> Value {
    let mut it = row.iter().copied();
    let Some(first) = it.next() else {
        return Value::Float(0.0);
    };
    it.fold(first, |acc, x| match (acc, x) {
        (Value::Int(a), Value::Int(b)) => Value::Int(match op {
            ReduceOp::Sum => a.wrapping_add(b),
            ReduceOp::Max => a.max(b),
            ReduceOp::Min => a.min(b),
        }),
        (a, b) => {
            let (a, b) = (a.as_f32(), b.as_f32());
            Value::Float(match op {
                ReduceOp::Sum => a + b,
                ReduceOp::Max => a.max(b),
                ReduceOp::Min => a.min(b),
            })
        }
    })
}

// ---- the scheduler ---------------------------------------------------------------------------------------------

struct Run<'a> {
    m: &'a mut Machine,
    program: &'a Program,
    queues: [Vec<usize>; 4],
    pc: [usize; 4],
    free: [u64; 4],
    channel_free: [u64; 2],
    clocks: [Clock; 4],
    /// Fired, not yet awaited flags: (fire cycle, setter's clock, set_flag's index), oldest first.
    flags: HashMap<Flag, VecDeque<(u64, Clock, usize)>>,
    shadow: Shadow,
    report: SimReport,
}

impl<'a> Run<'a> {
    fn new(m: &'a mut Machine, program: &'a Program) -> Run<'a> {
        let mut queues: [Vec<usize>; 4] = Default::default();
        for (i, instr) in program.instrs.iter().enumerate() {
            match instr.engine() {
                Some(e) => queues[e.index()].push(i),
                None => queues.iter_mut().for_each(|q| q.push(i)),
            }
        }
        Run {
            m,
            program,
            queues,
            pc: [0; 4],
            free: [0; 4],
            channel_free: [0; 2],
            clocks: [[0; 4]; 4],
            flags: HashMap::new(),
            shadow: Shadow::default(),
            report: SimReport {
                total_cycles: 0,
                engines: [EngineStats::default(); 4],
                bytes_loaded: 0,
                bytes_stored: 0,
                macs: 0,
                events: Vec::new(),
            },
        }
    }

    fn next(&self, e: usize) -> Option<usize> {
        self.queues[e].get(self.pc[e]).copied()
    }

    fn channel(&self, e: Engine) -> Option<usize> {
        match e {
            Engine::DmaIn => Some(0),
            Engine::DmaOut => Some(usize::from(self.m.profile.dma.engines >= 2)),
            _ => None,
        }
    }

    /// When engine `e`'s next instruction can start, or `None` if it is blocked (or done).
    fn ready(&self, e: usize) -> Option<u64> {
        let i = self.next(e)?;
        match &self.program.instrs[i] {
            Instr::WaitFlag(f) => self
                .flags
                .get(f)?
                .front()
                .map(|(t, _, _)| t.max(&self.free[e]))
                .copied(),
            Instr::Barrier => (0..4)
                .all(|f| self.next(f) == Some(i))
                .then(|| self.free.iter().copied().max().unwrap_or(0)),
            Instr::Load(_) | Instr::Store(_) => {
                let ch = self
                    .channel(Engine::ALL[e])
                    .map_or(0, |c| self.channel_free[c]);
                Some(self.free[e].max(ch))
            }
            _ => Some(self.free[e]),
        }
    }

    fn trap(&self, index: usize, kind: TrapKind) -> Trap {
        let instr = self.program.instrs.get(index);
        Trap {
            index,
            engine: instr.and_then(Instr::engine),
            instr: instr.map(ToString::to_string).unwrap_or_default(),
            kind: Box::new(kind),
        }
    }

    fn go(mut self) -> Result<SimReport, Trap> {
        // A flag from an engine to itself could never order anything (and its wait could deadlock the queue).
        for (i, instr) in self.program.instrs.iter().enumerate() {
            if let Instr::SetFlag(f) | Instr::WaitFlag(f) = instr
                && f.src == f.dst
            {
                return Err(self.trap(
                    i,
                    TrapKind::BadOperands("a flag's src and dst must differ".into()),
                ));
            }
        }
        loop {
            let pick = (0..4).filter_map(|e| self.ready(e).map(|t| (t, e))).min();
            let Some((start, e)) = pick else {
                if (0..4).all(|e| self.next(e).is_none()) {
                    break;
                }
                return Err(self.deadlock());
            };
            let index = self.queues[e][self.pc[e]];
            self.step(e, index, start)?;
        }
        self.report.total_cycles = self.free.iter().copied().max().unwrap_or(0);
        Ok(self.report)
    }

    fn deadlock(&self) -> Trap {
        let mut blocked = Vec::new();
        let mut first = None;
        for e in 0..4 {
            if let Some(i) = self.next(e) {
                first.get_or_insert(i);
                let what = match &self.program.instrs[i] {
                    Instr::WaitFlag(_) => "waits for a set_flag that never fires",
                    Instr::Barrier => "waits at a barrier",
                    _ => "is blocked",
                };
                blocked.push(format!(
                    "{} {what} (instruction {i}: `{}`)",
                    Engine::ALL[e],
                    self.program.instrs[i]
                ));
            }
        }
        self.trap(first.unwrap_or(0), TrapKind::Deadlock(blocked.join("; ")))
    }

    /// Records an executed instruction: its trace event and its engine's busy and stall time.
    fn event(
        &mut self,
        e: usize,
        index: usize,
        start: u64,
        cycles: u64,
        args: Vec<(&'static str, u64)>,
    ) {
        let program = self.program;
        let instr = &program.instrs[index];
        let stats = &mut self.report.engines[e];
        stats.busy_cycles = stats.busy_cycles.saturating_add(cycles);
        stats.stall_cycles = stats
            .stall_cycles
            .saturating_add(start.saturating_sub(self.free[e]));
        stats.instructions += 1;
        self.report.events.push(TraceEvent {
            index,
            engine: Engine::ALL[e],
            name: instr.mnemonic(),
            text: instr.to_string(),
            start,
            cycles,
            args,
        });
        self.free[e] = start.saturating_add(cycles);
        self.pc[e] += 1;
    }

    fn step(&mut self, e: usize, index: usize, start: u64) -> Result<(), Trap> {
        let program = self.program;
        let instr = &program.instrs[index];
        let effect = match instr {
            Instr::Barrier => {
                let mut all = [0u64; 4];
                for c in &self.clocks {
                    race::join(&mut all, c);
                }
                for f in 0..4 {
                    self.clocks[f] = all;
                    self.event(f, index, start, 0, Vec::new());
                }
                self.shadow.clear();
                return Ok(());
            }
            Instr::SetFlag(f) => {
                self.clocks[e][e] += 1;
                self.flags
                    .entry(*f)
                    .or_default()
                    .push_back((start, self.clocks[e], index));
                self.event(e, index, start, 0, Vec::new());
                return Ok(());
            }
            Instr::WaitFlag(f) => {
                let mut args = Vec::new();
                if let Some((_, clock, set_by)) =
                    self.flags.get_mut(f).and_then(VecDeque::pop_front)
                {
                    race::join(&mut self.clocks[e], &clock);
                    args.push(("set_by", set_by as u64));
                }
                self.clocks[e][e] += 1;
                self.event(e, index, start, 0, args);
                return Ok(());
            }
            Instr::Load(d) => self.m.dma(d, true),
            Instr::Store(d) => self.m.dma(d, false),
            Instr::Mmad(mm) => self.m.mmad(mm),
            Instr::Vector(v) => self.m.vector(v),
        }
        .map_err(|k| self.trap(index, k))?;
        self.clocks[e][e] += 1;
        self.check_races(e, index, &effect)?;
        for (r, vals) in &effect.writes {
            self.m.write(r, vals);
        }
        match instr {
            Instr::Load(_) => self.report.bytes_loaded += arg(&effect, "bytes"),
            Instr::Store(_) => self.report.bytes_stored += arg(&effect, "bytes"),
            Instr::Mmad(_) => self.report.macs += arg(&effect, "macs"),
            _ => {}
        }
        if let Some(c) = instr.engine().and_then(|en| self.channel(en)) {
            self.channel_free[c] = start.saturating_add(effect.cycles);
        }
        self.event(e, index, start, effect.cycles, effect.args);
        let running = [0, 1, 2, 3].map(|f| self.next(f).is_some());
        self.shadow.prune(&self.clocks, &running);
        Ok(())
    }

    fn check_races(&mut self, e: usize, index: usize, effect: &Effect) -> Result<(), Trap> {
        let clock = self.clocks[e];
        let epoch = clock[e];
        let accesses: Vec<(&Region, bool)> = effect
            .reads
            .iter()
            .map(|r| (r, false))
            .chain(effect.writes.iter().map(|(r, _)| (r, true)))
            .collect();
        let runs: Vec<Runs> = accesses.iter().map(|(r, _)| r.runs()).collect();
        for ((r, write), runs) in accesses.iter().zip(&runs) {
            if let Some(Conflict {
                start,
                end,
                other_index,
                other_engine,
                other_write,
            }) = self.shadow.check(&r.mem, runs, *write, e, &clock)
            {
                let rw = |w: bool| if w { "write" } else { "read" };
                return Err(self.trap(
                    index,
                    TrapKind::Race {
                        mem: r.mem.clone(),
                        start,
                        end,
                        this: rw(*write),
                        other: rw(other_write),
                        other_index,
                        other_engine,
                    },
                ));
            }
        }
        for ((r, write), runs) in accesses.into_iter().zip(runs) {
            self.shadow.record(&r.mem, runs, write, e, epoch, index);
        }
        Ok(())
    }
}

fn arg(effect: &Effect, name: &str) -> u64 {
    effect
        .args
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| *v)
}
