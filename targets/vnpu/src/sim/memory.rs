//! Memory of the simulated core: global memory in pages, and operands resolved to bounds-checked element
//! addresses.

use std::collections::BTreeMap;

use super::{MAX_ELEMENTS, Machine, TrapKind};
use crate::dtype::{DType, Value};
use crate::isa::{Access, Engine, Mem};
use crate::race::Runs;

/// The global-memory page size in bytes.
pub(super) const PAGE: u64 = 1 << 16;

/// Global memory, allocated in 64 KiB pages on first write (unwritten bytes read as zero).
#[derive(Debug, Clone, Default)]
pub(super) struct Pages {
    pub(super) pages: BTreeMap<u64, Vec<u8>>,
}

impl Pages {
    pub(super) fn read(&self, mut addr: u64, out: &mut [u8]) {
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

    pub(super) fn write(&mut self, mut addr: u64, data: &[u8]) {
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

/// Where an operand's bytes live: a buffer index or global memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Loc {
    Buf(usize),
    Global,
}

/// A resolved, bounds-checked operand: its memory and the byte address of every element.
#[derive(Clone, Debug)]
pub(super) struct Region {
    /// Where the bytes live.
    pub(super) loc: Loc,
    /// The memory's name, for traps and the race log.
    pub(super) mem: String,
    /// The element type.
    pub(super) dtype: DType,
    /// The byte address of every element, in the operand's element order.
    pub(super) addrs: Vec<u64>,
}

impl Region {
    /// The exact bytes touched, as sorted merged intervals.
    pub(super) fn runs(&self) -> Runs {
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

impl Machine {
    pub(super) fn locate(&self, mem: &Mem, engine: Engine) -> Result<(Loc, u64, u64), TrapKind> {
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
    pub(super) fn region(
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
    pub(super) fn block(
        &self,
        access: &Access,
        count: u64,
        engine: Engine,
    ) -> Result<Region, TrapKind> {
        self.region(access, &[count], &[1], engine)
    }

    /// Reads every element of a region (in bounds by construction of the region).
    pub(super) fn read(&self, r: &Region) -> Vec<Value> {
        let size = r.dtype.size() as usize;
        match r.loc {
            Loc::Buf(i) => {
                // One decoder per dtype, chosen once per region (this is the simulator's innermost loop).
                let mem = &self.buffers[i];
                match r.dtype {
                    DType::F32 => {
                        gather::<4>(mem, &r.addrs, |b| Value::Float(f32::from_le_bytes(b)))
                    }
                    DType::F16 => gather::<2>(mem, &r.addrs, |b| {
                        Value::Float(half::f16::from_le_bytes(b).to_f32())
                    }),
                    DType::BF16 => gather::<2>(mem, &r.addrs, |b| {
                        Value::Float(half::bf16::from_le_bytes(b).to_f32())
                    }),
                    _ => r
                        .addrs
                        .iter()
                        .map(|&a| r.dtype.read(&mem[a as usize..a as usize + size]))
                        .collect(),
                }
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
    pub(super) fn write(&mut self, r: &Region, values: &[Value]) {
        let size = r.dtype.size() as usize;
        let n = r.addrs.len().min(values.len());
        match r.loc {
            Loc::Buf(b) => {
                let mem = &mut self.buffers[b];
                match r.dtype {
                    DType::F32 => scatter::<4>(mem, &r.addrs, values, |v| v.as_f32().to_le_bytes()),
                    DType::F16 => scatter::<2>(mem, &r.addrs, values, |v| {
                        half::f16::from_f32(v.as_f32()).to_le_bytes()
                    }),
                    DType::BF16 => scatter::<2>(mem, &r.addrs, values, |v| {
                        half::bf16::from_f32(v.as_f32()).to_le_bytes()
                    }),
                    _ => {
                        for (&a, &v) in r.addrs.iter().zip(values) {
                            r.dtype.write(v, &mut mem[a as usize..a as usize + size]);
                        }
                    }
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
}

/// Decodes the `N`-byte elements at `addrs` of `mem` (in bounds: regions are checked when resolved).
#[inline]
fn gather<const N: usize>(
    mem: &[u8],
    addrs: &[u64],
    decode: impl Fn([u8; N]) -> Value,
) -> Vec<Value> {
    addrs
        .iter()
        .map(|&a| {
            let a = a as usize;
            let mut b = [0u8; N];
            b.copy_from_slice(&mem[a..a + N]);
            decode(b)
        })
        .collect()
}

/// Encodes `values` into the `N`-byte elements at `addrs` of `mem` (in bounds, as for [`gather`]).
#[inline]
fn scatter<const N: usize>(
    mem: &mut [u8],
    addrs: &[u64],
    values: &[Value],
    encode: impl Fn(Value) -> [u8; N],
) {
    for (&a, &v) in addrs.iter().zip(values) {
        let a = a as usize;
        mem[a..a + N].copy_from_slice(&encode(v));
    }
}

/// The number of elements of `shape`, which must be positive and at most [`MAX_ELEMENTS`].
pub(super) fn elements(shape: &[u64]) -> Result<u64, TrapKind> {
    let n = shape.iter().try_fold(1u64, |a, &b| a.checked_mul(b));
    match n {
        Some(0) => Err(TrapKind::BadOperands("shape must be positive".into())),
        Some(n) if n <= MAX_ELEMENTS => Ok(n),
        _ => Err(TrapKind::BadOperands(format!(
            "more than {MAX_ELEMENTS} elements in one instruction"
        ))),
    }
}
