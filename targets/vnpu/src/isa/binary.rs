//! The binary encoding of a [`Program`]: what a compiler ships to the (simulated) device.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! header  := "VNPU" version:u16 (= 1) reserved:u16 (= 0) count:u32 instr*count
//! instr   := opcode:u8 body            opcode: 0 load, 1 store, 2 mmad, 3 vector, 4 set_flag, 5 wait_flag, 6 barrier
//! access  := name_len:u8 name:bytes offset:u64 dtype:u8      (name_len 0 = global memory)
//! dma     := dst:access src:access ndim:u8 shape:u64*ndim dst_strides:u64*ndim src_strides:u64*ndim
//! mmad    := c:access a:access b:access tiles:u64*3 accumulate:u8
//! vector  := op:u8 dst:access then: unary/reduce/cast src:access | binary a:access operand | fill value:f64; shape:u64*2
//! operand := 0 access | 1 access (per row) | 2 access (scalar) | 3 value:f64
//! flag    := src:u8 dst:u8 id:u8
//! ```
//!
//! [`decode`] accepts exactly what [`encode`] writes: any other byte string (wrong magic or version, truncation,
//! unknown codes, trailing bytes) is an error, never a panic, and allocates no more than the input justifies.

use thiserror::Error;

use super::{
    Access, Dma, Engine, Flag, Instr, MAX_DMA_DIMS, Mem, Mmad, Operand, Program, VectorInstr,
    VectorOp,
};
use crate::dtype::DType;

/// The magic bytes that open an encoded program.
pub const MAGIC: &[u8; 4] = b"VNPU";
/// The encoding version this crate writes and reads.
pub const VERSION: u16 = 1;

/// Why a byte string is not an encoded program.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input does not start with [`MAGIC`].
    #[error("not a vnpu program (bad magic)")]
    BadMagic,
    /// The header names a version this decoder does not read.
    #[error("unsupported encoding version {0} (this decoder reads version {VERSION})")]
    UnsupportedVersion(u16),
    /// The input ends inside an instruction.
    #[error("truncated program at byte {0}")]
    Truncated(usize),
    /// A field holds a value no encoder writes.
    #[error("invalid encoding at byte {offset}: {msg}")]
    Invalid {
        /// The byte offset of the bad field.
        offset: usize,
        /// What is wrong.
        msg: String,
    },
    /// Bytes follow the last instruction.
    #[error("{0} trailing bytes after the last instruction")]
    TrailingBytes(usize),
}

/// Encodes a program. Buffer names longer than 255 bytes cannot be encoded and are an error.
pub fn encode(program: &Program) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer { out: Vec::new() };
    w.out.extend_from_slice(MAGIC);
    w.u16(VERSION);
    w.u16(0);
    let count =
        u32::try_from(program.instrs.len()).map_err(|_| EncodeError::TooManyInstructions)?;
    w.u32(count);
    for instr in &program.instrs {
        w.instr(instr)?;
    }
    Ok(w.out)
}

/// Why a program cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A buffer name does not fit the one-byte length field.
    #[error("buffer name `{0}` is longer than 255 bytes")]
    NameTooLong(String),
    /// A DMA's shape and strides differ in length or have more than [`MAX_DMA_DIMS`] dimensions.
    #[error(
        "a DMA has {shape} shape dims, {dst} dst strides and {src} src strides (1 to {MAX_DMA_DIMS}, all equal)"
    )]
    BadDma {
        /// Shape length.
        shape: usize,
        /// Destination stride count.
        dst: usize,
        /// Source stride count.
        src: usize,
    },
    /// The program has more than `u32::MAX` instructions.
    #[error("more than 2^32-1 instructions")]
    TooManyInstructions,
}

/// Decodes a program written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Program, DecodeError> {
    let mut r = Reader { b: bytes, pos: 0 };
    if r.take(4).map_err(|_| DecodeError::BadMagic)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u16()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let reserved_at = r.pos;
    if r.u16()? != 0 {
        return Err(DecodeError::Invalid {
            offset: reserved_at,
            msg: "reserved header field is not 0".into(),
        });
    }
    let count = r.u32()?;
    // Every instruction takes at least one byte, so the count is bounded by the input before anything is reserved.
    let mut instrs = Vec::with_capacity((count as usize).min(bytes.len()));
    for _ in 0..count {
        instrs.push(r.instr()?);
    }
    if r.pos != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(Program { instrs })
}

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    fn access(&mut self, a: &Access) -> Result<(), EncodeError> {
        match &a.mem {
            Mem::Global => self.u8(0),
            Mem::Buffer(name) => {
                let len = u8::try_from(name.len())
                    .ok()
                    .filter(|&l| l > 0)
                    .ok_or_else(|| EncodeError::NameTooLong(name.clone()))?;
                self.u8(len);
                self.out.extend_from_slice(name.as_bytes());
            }
        }
        self.u64(a.offset);
        self.u8(a.dtype.code());
        Ok(())
    }

    fn shape2(&mut self, s: &[u64; 2]) {
        self.u64(s[0]);
        self.u64(s[1]);
    }

    fn instr(&mut self, instr: &Instr) -> Result<(), EncodeError> {
        match instr {
            Instr::Load(d) | Instr::Store(d) => {
                self.u8(if matches!(instr, Instr::Load(_)) {
                    0
                } else {
                    1
                });
                self.access(&d.dst)?;
                self.access(&d.src)?;
                let n = d.shape.len();
                if !(1..=MAX_DMA_DIMS).contains(&n)
                    || d.dst_strides.len() != n
                    || d.src_strides.len() != n
                {
                    return Err(EncodeError::BadDma {
                        shape: n,
                        dst: d.dst_strides.len(),
                        src: d.src_strides.len(),
                    });
                }
                self.u8(n as u8);
                for list in [&d.shape, &d.dst_strides, &d.src_strides] {
                    for &v in list.iter() {
                        self.u64(v);
                    }
                }
            }
            Instr::Mmad(m) => {
                self.u8(2);
                self.access(&m.c)?;
                self.access(&m.a)?;
                self.access(&m.b)?;
                for t in m.tiles {
                    self.u64(t);
                }
                self.u8(u8::from(m.accumulate));
            }
            Instr::Vector(v) => {
                self.u8(3);
                let op = v.op();
                let code = VectorOp::ALL.iter().position(|o| *o == op).unwrap_or(0);
                self.u8(code as u8);
                match v {
                    VectorInstr::Unary {
                        dst, src, shape, ..
                    }
                    | VectorInstr::Reduce {
                        dst, src, shape, ..
                    }
                    | VectorInstr::Cast { dst, src, shape } => {
                        self.access(dst)?;
                        self.access(src)?;
                        self.shape2(shape);
                    }
                    VectorInstr::Binary {
                        dst, a, b, shape, ..
                    } => {
                        self.access(dst)?;
                        self.access(a)?;
                        match b {
                            Operand::Full(x) => {
                                self.u8(0);
                                self.access(x)?;
                            }
                            Operand::Row(x) => {
                                self.u8(1);
                                self.access(x)?;
                            }
                            Operand::Scalar(x) => {
                                self.u8(2);
                                self.access(x)?;
                            }
                            Operand::Imm(v) => {
                                self.u8(3);
                                self.f64(*v);
                            }
                        }
                        self.shape2(shape);
                    }
                    VectorInstr::Fill { dst, value, shape } => {
                        self.access(dst)?;
                        self.f64(*value);
                        self.shape2(shape);
                    }
                }
            }
            Instr::SetFlag(f) | Instr::WaitFlag(f) => {
                self.u8(if matches!(instr, Instr::SetFlag(_)) {
                    4
                } else {
                    5
                });
                self.u8(f.src.index() as u8);
                self.u8(f.dst.index() as u8);
                self.u8(f.id);
            }
            Instr::Barrier => self.u8(6),
        }
        Ok(())
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(DecodeError::Truncated(self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn f64(&mut self) -> Result<f64, DecodeError> {
        self.u64().map(f64::from_bits)
    }
    fn invalid(&self, offset: usize, msg: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            offset,
            msg: msg.into(),
        }
    }

    fn access(&mut self) -> Result<Access, DecodeError> {
        let at = self.pos;
        let len = usize::from(self.u8()?);
        let mem = if len == 0 {
            Mem::Global
        } else {
            let name = match std::str::from_utf8(self.take(len)?) {
                Ok(name) => name.to_string(),
                Err(_) => return Err(self.invalid(at, "buffer name is not UTF-8")),
            };
            if name == "gm" {
                return Err(self.invalid(at, "`gm` is not a buffer name"));
            }
            Mem::Buffer(name)
        };
        let offset = self.u64()?;
        let at = self.pos;
        let code = self.u8()?;
        let dtype = DType::from_code(code)
            .ok_or_else(|| self.invalid(at, format!("unknown dtype code {code}")))?;
        Ok(Access { mem, offset, dtype })
    }

    fn shape2(&mut self) -> Result<[u64; 2], DecodeError> {
        Ok([self.u64()?, self.u64()?])
    }

    fn engine(&mut self) -> Result<Engine, DecodeError> {
        let at = self.pos;
        let code = self.u8()?;
        Engine::ALL
            .get(usize::from(code))
            .copied()
            .ok_or_else(|| self.invalid(at, format!("unknown engine {code}")))
    }

    fn instr(&mut self) -> Result<Instr, DecodeError> {
        let at = self.pos;
        Ok(match self.u8()? {
            op @ (0 | 1) => {
                let dst = self.access()?;
                let src = self.access()?;
                let n_at = self.pos;
                let n = usize::from(self.u8()?);
                if !(1..=MAX_DMA_DIMS).contains(&n) {
                    return Err(self.invalid(
                        n_at,
                        format!("a DMA has 1 to {MAX_DMA_DIMS} dimensions, not {n}"),
                    ));
                }
                let mut lists = [Vec::new(), Vec::new(), Vec::new()];
                for list in &mut lists {
                    for _ in 0..n {
                        list.push(self.u64()?);
                    }
                }
                let [shape, dst_strides, src_strides] = lists;
                let dma = Dma {
                    dst,
                    src,
                    shape,
                    dst_strides,
                    src_strides,
                };
                if op == 0 {
                    Instr::Load(dma)
                } else {
                    Instr::Store(dma)
                }
            }
            2 => {
                let c = self.access()?;
                let a = self.access()?;
                let b = self.access()?;
                let tiles = [self.u64()?, self.u64()?, self.u64()?];
                let acc_at = self.pos;
                let accumulate = match self.u8()? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(
                            self.invalid(acc_at, format!("accumulate flag {v} is not 0 or 1"))
                        );
                    }
                };
                Instr::Mmad(Mmad {
                    c,
                    a,
                    b,
                    tiles,
                    accumulate,
                })
            }
            3 => {
                let op_at = self.pos;
                let code = self.u8()?;
                let op = VectorOp::ALL
                    .get(usize::from(code))
                    .copied()
                    .ok_or_else(|| self.invalid(op_at, format!("unknown vector op {code}")))?;
                let dst = self.access()?;
                Instr::Vector(match op {
                    VectorOp::Unary(op) => {
                        let src = self.access()?;
                        VectorInstr::Unary {
                            op,
                            dst,
                            src,
                            shape: self.shape2()?,
                        }
                    }
                    VectorOp::Reduce(op) => {
                        let src = self.access()?;
                        VectorInstr::Reduce {
                            op,
                            dst,
                            src,
                            shape: self.shape2()?,
                        }
                    }
                    VectorOp::Cast => {
                        let src = self.access()?;
                        VectorInstr::Cast {
                            dst,
                            src,
                            shape: self.shape2()?,
                        }
                    }
                    VectorOp::Fill => {
                        let value = self.f64()?;
                        VectorInstr::Fill {
                            dst,
                            value,
                            shape: self.shape2()?,
                        }
                    }
                    VectorOp::Binary(op) => {
                        let a = self.access()?;
                        let tag_at = self.pos;
                        let b = match self.u8()? {
                            0 => Operand::Full(self.access()?),
                            1 => Operand::Row(self.access()?),
                            2 => Operand::Scalar(self.access()?),
                            3 => Operand::Imm(self.f64()?),
                            t => {
                                return Err(
                                    self.invalid(tag_at, format!("unknown operand kind {t}"))
                                );
                            }
                        };
                        VectorInstr::Binary {
                            op,
                            dst,
                            a,
                            b,
                            shape: self.shape2()?,
                        }
                    }
                })
            }
            op @ (4 | 5) => {
                let flag = Flag {
                    src: self.engine()?,
                    dst: self.engine()?,
                    id: self.u8()?,
                };
                if op == 4 {
                    Instr::SetFlag(flag)
                } else {
                    Instr::WaitFlag(flag)
                }
            }
            6 => Instr::Barrier,
            other => return Err(self.invalid(at, format!("unknown opcode {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::text::parse;

    const SAMPLE: &str = "\
load dst=L0A[0]:f16 src=gm[64]:f32 shape=[4,16] dst_strides=[16,1] src_strides=[32,1]
mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[512]:f16 tiles=[2,2,1] accumulate=true
vec.sub dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/row shape=[4,64]
vec.add dst=UB[0]:f32 a=UB[0]:f32 b=UB[4]:f32/all shape=[4,64]
vec.mul dst=UB[0]:f32 a=UB[0]:f32 b=#-0.5 shape=[4,64]
vec.add dst=UB[0]:f32 a=UB[0]:f32 b=UB[0]:f32 shape=[4,64]
vec.exp dst=UB[0]:f32 src=UB[0]:f32 shape=[4,64]
vec.reduce_sum dst=UB[0]:f32 src=UB[0]:f32 shape=[4,64]
vec.cast dst=UB[0]:bf16 src=UB[0]:f32 shape=[4,64]
vec.fill dst=UB[0]:i32 value=#7 shape=[4,64]
set_flag src=dma_in dst=cube id=9
wait_flag src=dma_in dst=cube id=9
barrier
store dst=gm[0]:f32 src=L0C[0]:f32 shape=[16] dst_strides=[1] src_strides=[1]
";

    #[test]
    fn encode_decode_round_trip() {
        let program = parse(SAMPLE).unwrap();
        let bytes = encode(&program).unwrap();
        assert_eq!(decode(&bytes).unwrap(), program);
        assert_eq!(&bytes[..6], b"VNPU\x01\x00");
    }

    #[test]
    fn malformed_programs_do_not_encode() {
        let mut program = parse(SAMPLE).unwrap();
        if let Some(Instr::Load(d)) = program.instrs.first_mut() {
            d.src_strides.push(1);
        }
        assert_eq!(
            encode(&program).unwrap_err().to_string(),
            "a DMA has 2 shape dims, 2 dst strides and 3 src strides (1 to 3, all equal)"
        );
        let mut long = parse("vec.fill dst=UB[0]:f32 value=#0 shape=[1,1]").unwrap();
        if let Some(Instr::Vector(VectorInstr::Fill { dst, .. })) = long.instrs.first_mut() {
            dst.mem = Mem::Buffer("B".repeat(256));
        }
        assert!(matches!(encode(&long), Err(EncodeError::NameTooLong(_))));
    }

    #[test]
    fn garbage_is_an_error() {
        let bytes = encode(&parse(SAMPLE).unwrap()).unwrap();
        assert_eq!(decode(b"").unwrap_err(), DecodeError::BadMagic);
        assert_eq!(
            decode(b"ELF\x7f\x01\x00").unwrap_err(),
            DecodeError::BadMagic
        );
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(decode(&v2).unwrap_err(), DecodeError::UnsupportedVersion(2));
        let mut trailing = bytes.clone();
        trailing.push(6);
        assert_eq!(
            decode(&trailing).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
        // Every truncation and every single-byte corruption is rejected or decodes to some program; none panics.
        for end in 0..bytes.len() {
            assert!(
                decode(&bytes[..end]).is_err(),
                "prefix of {end} bytes decoded"
            );
        }
        for i in 0..bytes.len() {
            for v in [0u8, 1, 3, 7, 0x80, 0xff] {
                let mut m = bytes.clone();
                m[i] = v;
                let _ = decode(&m);
            }
        }
        // A huge instruction count with no body is a truncation, not a huge allocation.
        let mut huge = b"VNPU\x01\x00\x00\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge).unwrap_err(), DecodeError::Truncated(12));
    }
}
