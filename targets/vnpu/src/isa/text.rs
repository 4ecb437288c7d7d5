//! The assembly text form of a [`Program`]: one instruction per line, `mnemonic key=value …`.
//!
//! Grammar (ASCII; `;` starts a comment that runs to the end of the line; blank lines are ignored):
//!
//! ```text
//! line     := mnemonic (' '+ key '=' value)*
//! value    := int | '#' float | ident | list | access
//! access   := mem '[' int ']' ':' dtype ('/row' | '/all')?
//! list     := '[' int (',' int)* ']'
//! int      := decimal digits | '0x' hex digits          (unsigned, 64-bit)
//! float    := anything Rust's f64 parser accepts (e.g. 1.5, -0, inf, NaN)
//! ```
//!
//! Keys may come in any order; each must appear exactly once. The printer writes them in one canonical order:
//!
//! ```text
//! load      dst=UB[0]:f16 src=gm[64]:f32 shape=[4,16] dst_strides=[16,1] src_strides=[32,1]
//! store     dst=gm[0]:f32 src=L0C[0]:f32 shape=[16,16] dst_strides=[64,1] src_strides=[16,1]
//! mmad      c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[2,2,1] accumulate=true
//! vec.exp   dst=UB[0]:f32 src=UB[0]:f32 shape=[4,64]
//! vec.sub   dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/row shape=[4,64]
//! vec.mul   dst=UB[0]:f32 a=UB[0]:f32 b=#0.5 shape=[4,64]
//! vec.reduce_max dst=UB[1024]:f32 src=UB[0]:f32 shape=[4,64]
//! vec.cast  dst=UB[0]:f16 src=L0C[0]:f32 shape=[16,16]
//! vec.fill  dst=UB[0]:f32 value=#0 shape=[1,64]
//! set_flag  src=dma_in dst=cube id=0
//! wait_flag src=dma_in dst=cube id=0
//! barrier
//! ```
//!
//! (The printer separates fields with a single space; the alignment above is for reading.) Printing a parsed
//! canonical text gives the same text back, and parsing a printed program gives the same program back.
//! [`parse`] never panics; errors carry a 1-based line and byte column.

use std::fmt;

use thiserror::Error;

use super::{
    Access, Dma, Engine, Flag, Instr, MAX_DMA_DIMS, Mem, Mmad, Operand, Program, ReduceOp, UnaryOp,
    VectorInstr, VectorOp,
};
use crate::dtype::DType;

/// A syntax or operand error in assembly text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct ParseError {
    /// The 1-based line.
    pub line: usize,
    /// The 1-based byte column.
    pub col: usize,
    /// What is wrong.
    pub msg: String,
}

/// Parses a whole program.
pub fn parse(text: &str) -> Result<Program, ParseError> {
    let mut instrs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or("");
        if line.trim().is_empty() {
            continue;
        }
        instrs.push(parse_line(line, i + 1)?);
    }
    Ok(Program { instrs })
}

/// Parses a single instruction (a program of one line); `line_no` is used in errors.
pub fn parse_line(line: &str, line_no: usize) -> Result<Instr, ParseError> {
    let mut lx = Lexer {
        s: line.as_bytes(),
        pos: 0,
        line: line_no,
    };
    lx.skip_ws();
    let mnemonic_col = lx.col();
    let mnemonic = lx.word(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')?;
    let mut fields = Fields {
        items: Vec::new(),
        line: line_no,
        mnemonic_col,
        mnemonic: mnemonic.clone(),
    };
    loop {
        let had_ws = lx.skip_ws();
        if lx.at_end() {
            break;
        }
        if !had_ws {
            return Err(lx.err("expected a space before the next field"));
        }
        let col = lx.col();
        let key = lx.word(|c| c.is_ascii_alphanumeric() || c == b'_')?;
        lx.expect(b'=')?;
        let value = lx.value()?;
        if fields.items.iter().any(|(k, _, _)| *k == key) {
            return Err(ParseError {
                line: line_no,
                col,
                msg: format!("duplicate field `{key}`"),
            });
        }
        fields.items.push((key, col, value));
    }
    let instr = build(&mnemonic, &mut fields)?;
    if let Some((key, col, _)) = fields.items.first() {
        return Err(ParseError {
            line: line_no,
            col: *col,
            msg: format!("`{mnemonic}` has no field `{key}`"),
        });
    }
    Ok(instr)
}

/// Writes one instruction in canonical form (no newline).
pub fn write_instr(f: &mut impl fmt::Write, instr: &Instr) -> fmt::Result {
    write!(f, "{}", instr.mnemonic())?;
    match instr {
        Instr::Load(d) | Instr::Store(d) => write!(
            f,
            " dst={} src={} shape={} dst_strides={} src_strides={}",
            Acc(&d.dst),
            Acc(&d.src),
            List(&d.shape),
            List(&d.dst_strides),
            List(&d.src_strides)
        ),
        Instr::Mmad(m) => write!(
            f,
            " c={} a={} b={} tiles={} accumulate={}",
            Acc(&m.c),
            Acc(&m.a),
            Acc(&m.b),
            List(&m.tiles),
            m.accumulate
        ),
        Instr::Vector(v) => match v {
            VectorInstr::Unary {
                dst, src, shape, ..
            }
            | VectorInstr::Reduce {
                dst, src, shape, ..
            }
            | VectorInstr::Cast { dst, src, shape } => {
                write!(
                    f,
                    " dst={} src={} shape={}",
                    Acc(dst),
                    Acc(src),
                    List(shape)
                )
            }
            VectorInstr::Binary {
                dst, a, b, shape, ..
            } => {
                write!(f, " dst={} a={} b=", Acc(dst), Acc(a))?;
                match b {
                    Operand::Full(x) => write!(f, "{}", Acc(x))?,
                    Operand::Row(x) => write!(f, "{}/row", Acc(x))?,
                    Operand::Scalar(x) => write!(f, "{}/all", Acc(x))?,
                    Operand::Imm(v) => write!(f, "#{v}")?,
                }
                write!(f, " shape={}", List(shape))
            }
            VectorInstr::Fill { dst, value, shape } => {
                write!(f, " dst={} value=#{value} shape={}", Acc(dst), List(shape))
            }
        },
        Instr::SetFlag(fl) | Instr::WaitFlag(fl) => {
            write!(f, " src={} dst={} id={}", fl.src, fl.dst, fl.id)
        }
        Instr::Barrier => Ok(()),
    }
}

struct Acc<'a>(&'a Access);

impl fmt::Display for Acc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]:{}", self.0.mem, self.0.offset, self.0.dtype)
    }
}

struct List<'a>(&'a [u64]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{v}")?;
        }
        f.write_str("]")
    }
}

/// A parsed field value.
#[derive(Debug, Clone)]
enum Value {
    Int(u64),
    Float(f64),
    Ident(String),
    List(Vec<u64>),
    Access(Access, Bcast),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bcast {
    None,
    Row,
    All,
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

impl Lexer<'_> {
    fn col(&self) -> usize {
        self.pos + 1
    }

    fn err(&self, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            col: self.col(),
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(format!("expected `{}`", char::from(c))))
        }
    }

    fn word(&mut self, ok: impl Fn(u8) -> bool) -> Result<String, ParseError> {
        let start = self.pos;
        while self.peek().is_some_and(&ok) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err(match self.peek() {
                Some(c) if c.is_ascii_graphic() => format!("unexpected `{}`", char::from(c)),
                Some(_) => "unexpected character".to_string(),
                None => "unexpected end of line".to_string(),
            }));
        }
        // Only ASCII bytes were accepted, so this slice is valid UTF-8.
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    fn int(&mut self) -> Result<u64, ParseError> {
        let col = self.col();
        let w = self.word(|c| c.is_ascii_alphanumeric() || c == b'_')?;
        let parsed = match w.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => w.parse::<u64>(),
        };
        parsed.map_err(|_| ParseError {
            line: self.line,
            col,
            msg: format!("`{w}` is not an unsigned integer"),
        })
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    items.push(self.int()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        _ => return Err(self.err("expected `,` or `]`")),
                    }
                }
            }
            Some(b'#') => {
                self.pos += 1;
                let col = self.col();
                let w =
                    self.word(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+'))?;
                w.parse::<f64>().map(Value::Float).map_err(|_| ParseError {
                    line: self.line,
                    col,
                    msg: format!("`{w}` is not a number"),
                })
            }
            Some(c) if c.is_ascii_digit() => self.int().map(Value::Int),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.word(|c| c.is_ascii_alphanumeric() || c == b'_')?;
                if self.peek() != Some(b'[') {
                    return Ok(Value::Ident(name));
                }
                self.pos += 1;
                let offset = self.int()?;
                self.expect(b']')?;
                self.expect(b':')?;
                let col = self.col();
                let dt = self.word(|c| c.is_ascii_alphanumeric())?;
                let dtype = DType::from_name(&dt).ok_or_else(|| ParseError {
                    line: self.line,
                    col,
                    msg: format!("unknown dtype `{dt}` (expected f32, f16, bf16, i8 or i32)"),
                })?;
                let mem = if name == "gm" {
                    Mem::Global
                } else {
                    Mem::Buffer(name)
                };
                let mut bcast = Bcast::None;
                if self.peek() == Some(b'/') {
                    self.pos += 1;
                    let col = self.col();
                    bcast = match self.word(|c| c.is_ascii_alphabetic())?.as_str() {
                        "row" => Bcast::Row,
                        "all" => Bcast::All,
                        other => {
                            return Err(ParseError {
                                line: self.line,
                                col,
                                msg: format!(
                                    "unknown broadcast `/{other}` (expected /row or /all)"
                                ),
                            });
                        }
                    };
                }
                Ok(Value::Access(Access { mem, offset, dtype }, bcast))
            }
            Some(_) | None => Err(self.err("expected a value")),
        }
    }
}

struct Fields {
    items: Vec<(String, usize, Value)>,
    line: usize,
    mnemonic_col: usize,
    mnemonic: String,
}

impl Fields {
    fn take(&mut self, key: &str) -> Result<(usize, Value), ParseError> {
        match self.items.iter().position(|(k, _, _)| k == key) {
            Some(i) => {
                let (_, col, v) = self.items.remove(i);
                Ok((col, v))
            }
            None => Err(ParseError {
                line: self.line,
                col: self.mnemonic_col,
                msg: format!("`{}` needs a field `{key}`", self.mnemonic),
            }),
        }
    }

    fn bad(&self, col: usize, key: &str, want: &str) -> ParseError {
        ParseError {
            line: self.line,
            col,
            msg: format!("field `{key}` must be {want}"),
        }
    }

    fn access(&mut self, key: &str) -> Result<Access, ParseError> {
        match self.take(key)? {
            (_, Value::Access(a, Bcast::None)) => Ok(a),
            (col, _) => Err(self.bad(col, key, "a memory operand like `UB[0]:f32`")),
        }
    }

    fn list(&mut self, key: &str, min: usize, max: usize) -> Result<Vec<u64>, ParseError> {
        match self.take(key)? {
            (_, Value::List(l)) if (min..=max).contains(&l.len()) => Ok(l),
            (col, _) if min == max => Err(self.bad(col, key, &format!("a list of {min} integers"))),
            (col, _) => Err(self.bad(col, key, &format!("a list of {min} to {max} integers"))),
        }
    }

    fn shape2(&mut self) -> Result<[u64; 2], ParseError> {
        let l = self.list("shape", 2, 2)?;
        Ok([l[0], l[1]])
    }

    fn engine(&mut self, key: &str) -> Result<Engine, ParseError> {
        match self.take(key)? {
            (col, Value::Ident(name)) => Engine::from_name(&name)
                .ok_or_else(|| self.bad(col, key, "an engine (dma_in, dma_out, cube or vector)")),
            (col, _) => Err(self.bad(col, key, "an engine (dma_in, dma_out, cube or vector)")),
        }
    }

    fn float(&mut self, key: &str) -> Result<f64, ParseError> {
        match self.take(key)? {
            (_, Value::Float(v)) => Ok(v),
            (col, _) => Err(self.bad(col, key, "an immediate like `#1.5`")),
        }
    }
}

fn build(mnemonic: &str, f: &mut Fields) -> Result<Instr, ParseError> {
    Ok(match mnemonic {
        "load" | "store" => {
            let dst = f.access("dst")?;
            let src = f.access("src")?;
            let shape = f.list("shape", 1, MAX_DMA_DIMS)?;
            let n = shape.len();
            let dst_strides = f.list("dst_strides", n, n)?;
            let src_strides = f.list("src_strides", n, n)?;
            let dma = Dma {
                dst,
                src,
                shape,
                dst_strides,
                src_strides,
            };
            if mnemonic == "load" {
                Instr::Load(dma)
            } else {
                Instr::Store(dma)
            }
        }
        "mmad" => {
            let c = f.access("c")?;
            let a = f.access("a")?;
            let b = f.access("b")?;
            let t = f.list("tiles", 3, 3)?;
            let accumulate = match f.take("accumulate")? {
                (_, Value::Ident(v)) if v == "true" => true,
                (_, Value::Ident(v)) if v == "false" => false,
                (col, _) => return Err(f.bad(col, "accumulate", "`true` or `false`")),
            };
            Instr::Mmad(Mmad {
                c,
                a,
                b,
                tiles: [t[0], t[1], t[2]],
                accumulate,
            })
        }
        "set_flag" | "wait_flag" => {
            let src = f.engine("src")?;
            let dst = f.engine("dst")?;
            let id = match f.take("id")? {
                (_, Value::Int(v)) if v <= u64::from(u8::MAX) => v as u8,
                (col, _) => return Err(f.bad(col, "id", "an integer from 0 to 255")),
            };
            let flag = Flag { src, dst, id };
            if mnemonic == "set_flag" {
                Instr::SetFlag(flag)
            } else {
                Instr::WaitFlag(flag)
            }
        }
        "barrier" => Instr::Barrier,
        _ => {
            let op = mnemonic
                .strip_prefix("vec.")
                .and_then(VectorOp::from_name)
                .ok_or_else(|| ParseError {
                    line: f.line,
                    col: f.mnemonic_col,
                    msg: format!("unknown instruction `{mnemonic}`"),
                })?;
            Instr::Vector(build_vector(op, f)?)
        }
    })
}

fn build_vector(op: VectorOp, f: &mut Fields) -> Result<VectorInstr, ParseError> {
    let dst = f.access("dst")?;
    Ok(match op {
        VectorOp::Unary(op) => unary(op, dst, f)?,
        VectorOp::Reduce(op) => reduce(op, dst, f)?,
        VectorOp::Cast => {
            let src = f.access("src")?;
            VectorInstr::Cast {
                dst,
                src,
                shape: f.shape2()?,
            }
        }
        VectorOp::Fill => {
            let value = f.float("value")?;
            VectorInstr::Fill {
                dst,
                value,
                shape: f.shape2()?,
            }
        }
        VectorOp::Binary(op) => {
            let a = f.access("a")?;
            let b = match f.take("b")? {
                (_, Value::Access(x, Bcast::None)) => Operand::Full(x),
                (_, Value::Access(x, Bcast::Row)) => Operand::Row(x),
                (_, Value::Access(x, Bcast::All)) => Operand::Scalar(x),
                (_, Value::Float(v)) => Operand::Imm(v),
                (col, _) => return Err(f.bad(col, "b", "a memory operand or an immediate")),
            };
            VectorInstr::Binary {
                op,
                dst,
                a,
                b,
                shape: f.shape2()?,
            }
        }
    })
}

fn unary(op: UnaryOp, dst: Access, f: &mut Fields) -> Result<VectorInstr, ParseError> {
    let src = f.access("src")?;
    Ok(VectorInstr::Unary {
        op,
        dst,
        src,
        shape: f.shape2()?,
    })
}

fn reduce(op: ReduceOp, dst: Access, f: &mut Fields) -> Result<VectorInstr, ParseError> {
    let src = f.access("src")?;
    Ok(VectorInstr::Reduce {
        op,
        dst,
        src,
        shape: f.shape2()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_lines_round_trip() {
        let lines = [
            "load dst=UB[0]:f16 src=gm[64]:f32 shape=[4,16] dst_strides=[16,1] src_strides=[32,1]",
            "store dst=gm[0]:f32 src=L0C[0]:f32 shape=[2,16,16] dst_strides=[1024,64,1] src_strides=[256,16,1]",
            "mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[512]:f16 tiles=[2,2,1] accumulate=true",
            "vec.exp dst=UB[0]:f32 src=UB[0]:f32 shape=[4,64]",
            "vec.sub dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/row shape=[4,64]",
            "vec.div dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/all shape=[4,64]",
            "vec.max dst=UB[0]:i32 a=UB[0]:i32 b=UB[64]:i32 shape=[1,16]",
            "vec.mul dst=UB[0]:f32 a=UB[0]:f32 b=#-0.5 shape=[4,64]",
            "vec.reduce_max dst=UB[1024]:f32 src=UB[0]:f32 shape=[4,64]",
            "vec.cast dst=UB[0]:f16 src=L0C[0]:f32 shape=[16,16]",
            "vec.fill dst=UB[0]:f32 value=#inf shape=[1,64]",
            "set_flag src=dma_in dst=cube id=0",
            "wait_flag src=cube dst=dma_out id=255",
            "barrier",
        ];
        for line in lines {
            let instr = parse_line(line, 1).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(instr.to_string(), line);
        }
    }

    #[test]
    fn non_canonical_text_parses() {
        let p =
            parse("  ; a comment\n\nset_flag  id=0x3 dst=vector src=cube ; trailing\n").unwrap();
        assert_eq!(p.to_string(), "set_flag src=cube dst=vector id=3\n");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases = [
            ("frob x=1", "line 1, column 1: unknown instruction `frob`"),
            (
                "barrier\nvec.exp dst=UB[0]:f64",
                "line 2, column 19: unknown dtype `f64` (expected f32, f16, bf16, i8 or i32)",
            ),
            (
                "set_flag src=cube dst=vector",
                "line 1, column 1: `set_flag` needs a field `id`",
            ),
            (
                "set_flag src=cube dst=vector id=256",
                "line 1, column 30: field `id` must be an integer from 0 to 255",
            ),
            (
                "set_flag src=cube dst=gpu id=1",
                "line 1, column 19: field `dst` must be an engine (dma_in, dma_out, cube or vector)",
            ),
            (
                "barrier id=1",
                "line 1, column 9: `barrier` has no field `id`",
            ),
            (
                "set_flag src=cube src=cube",
                "line 1, column 19: duplicate field `src`",
            ),
            (
                "load dst=UB[0]:f16 src=gm[0]:f32 shape=[1,2,3,4]",
                "line 1, column 34: field `shape` must be a list of 1 to 3 integers",
            ),
            (
                "load dst=UB[0]:f16 src=gm[0]:f32 shape=[4] dst_strides=[1,1] src_strides=[1]",
                "line 1, column 44: field `dst_strides` must be a list of 1 integers",
            ),
            (
                "vec.add dst=UB[0]:f32 a=UB[0]:f32 b=UB[0]:f32/col shape=[1,1]",
                "line 1, column 47: unknown broadcast `/col` (expected /row or /all)",
            ),
            (
                "vec.fill dst=UB[0]:f32 value=#x shape=[1,1]",
                "line 1, column 31: `x` is not a number",
            ),
            (
                "load dst=UB[99999999999999999999]:f16",
                "line 1, column 13: `99999999999999999999` is not an unsigned integer",
            ),
            ("load dst=UB[0", "line 1, column 14: expected `]`"),
            ("mmad c=[1,", "line 1, column 11: unexpected end of line"),
            (
                "barrier=",
                "line 1, column 8: expected a space before the next field",
            ),
            (
                "vec.exp dst=ÜB[0]:f32",
                "line 1, column 13: expected a value",
            ),
        ];
        for (text, want) in cases {
            match parse(text) {
                Ok(p) => panic!("{text:?} parsed as {p}"),
                Err(e) => assert_eq!(e.to_string(), want, "{text:?}"),
            }
        }
    }

    #[test]
    fn parse_never_panics_on_prefixes_and_mutations() {
        let line = "vec.sub dst=UB[0]:f32 a=UB[0]:f32 b=UB[1024]:f32/row shape=[4,64]";
        for end in 0..=line.len() {
            let _ = parse(&line[..end]);
        }
        let bytes = line.as_bytes();
        for i in 0..bytes.len() {
            for c in [b' ', b'[', b']', b'=', b'#', b'/', b':', b'0', b'x', 0xff] {
                let mut m = bytes.to_vec();
                m[i] = c;
                let _ = parse(&String::from_utf8_lossy(&m));
            }
        }
    }
}
