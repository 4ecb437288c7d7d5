//! Tensor files: NumPy `.npy` (read and write) and ONNX `TensorProto`/`SequenceProto`/`OptionalProto` `.pb`
//! (read).
//!
//! `.npy` files of format versions 1, 2 and 3 are read with little- or big-endian data of the types
//! `f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1 c8 c16`; Fortran-ordered arrays are transposed into row-major order. Files
//! are written as version 1 (version 2 when the header needs it), little-endian, row-major. Every error names the
//! file.

use std::fs;
use std::path::{Path, PathBuf};

use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Tensor, Value, ValueType};

use crate::onnx::{self, ImportError};

/// Why a tensor file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The OS refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid `.npy` file, or holds something jiuzhou cannot read.
    #[error("{}: not a readable .npy file: {why}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The tensor cannot be written as `.npy`.
    #[error("{}: cannot write {dtype} tensors as .npy", path.display())]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// The tensor's dtype.
        dtype: DType,
    },
    /// The `.pb` file does not hold the expected value.
    #[error("{}: {source}", path.display())]
    Pb {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        source: ImportError,
    },
    /// The file's extension is neither `.npy` nor `.pb`.
    #[error("{}: unknown file type (expected a .npy or .pb file)", path.display())]
    UnknownExtension {
        /// The file.
        path: PathBuf,
    },
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, IoError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    parse_npy(&bytes).map_err(|why| IoError::Npy {
        path: path.to_path_buf(),
        why,
    })
}

/// The parsed header of a `.npy` file.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let major = bytes[6];
    let (len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let h = parse_header(header)?;
    let data = &bytes[start + len..];
    let (dtype, big_endian) = parse_descr(&h.descr)?;
    let n = checked_numel(&h.shape, dtype).map_err(|e| e.to_string())?;
    let size = match dtype {
        DType::C64 => 8,
        DType::C128 => 16,
        d => d.size_in_bytes(),
    };
    let want = n.checked_mul(size).ok_or("the shape is too large")?;
    if data.len() != want {
        return Err(format!(
            "{} data bytes for shape {:?} of {}, expected {want}",
            data.len(),
            h.shape,
            h.descr
        ));
    }
    let mut data = data.to_vec();
    if big_endian {
        // Complex numbers swap each of their two components.
        let unit = match dtype {
            DType::C64 => 4,
            DType::C128 => 8,
            _ => size,
        };
        for c in data.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
    if h.fortran_order && h.shape.len() > 1 {
        data = fortran_to_c(&data, &h.shape, size);
    }
    if dtype == DType::Bool && data.iter().any(|&b| b > 1) {
        return Err("a bool element is neither 0 nor 1".into());
    }
    Tensor::from_le_bytes(dtype, h.shape, &data).map_err(|e| e.to_string())
}

/// Reorders column-major elements of `size` bytes into row-major order.
fn fortran_to_c(data: &[u8], shape: &[usize], size: usize) -> Vec<u8> {
    let n: usize = shape.iter().product();
    let mut f_strides = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        f_strides[k] = f_strides[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let src: usize = idx.iter().zip(&f_strides).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&data[src * size..(src + 1) * size]);
        // Next row-major index.
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

fn parse_descr(descr: &str) -> Result<(DType, bool), String> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let dtype = match code {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        "c8" => DType::C64,
        "c16" => DType::C128,
        _ => return Err(format!("unsupported dtype {descr:?}")),
    };
    Ok((dtype, order == '>'))
}

/// Parses the Python dict literal of a `.npy` header.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Lexer {
        s: text.trim().as_bytes(),
        i: 0,
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.ws();
        p.expect(b':')?;
        p.ws();
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unknown header key {other:?}")),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            p.expect(b'}')?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or("the header has no 'descr'")?,
        fortran_order: fortran.ok_or("the header has no 'fortran_order'")?,
        shape: shape.ok_or("the header has no 'shape'")?,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "malformed header: expected `{}` at byte {}",
                c as char, self.i
            ))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "malformed header: expected a string at byte {}",
                    self.i
                ));
            }
        };
        self.i += 1;
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&c| c != q) {
            self.i += 1;
        }
        let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.expect(q)?;
        Ok(s)
    }

    fn boolean(&mut self) -> Result<bool, String> {
        let rest = &self.s[self.i..];
        if rest.starts_with(b"True") {
            self.i += 4;
            Ok(true)
        } else if rest.starts_with(b"False") {
            self.i += 5;
            Ok(false)
        } else {
            Err("malformed header: 'fortran_order' is not True or False".into())
        }
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            // Python 2 wrote long dims as `3L`.
            self.eat(b'L');
            let d: usize = digits
                .parse()
                .map_err(|_| format!("malformed header: bad dim at byte {start}"))?;
            dims.push(d);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

/// Writes a tensor as a `.npy` file (little-endian, row-major).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), IoError> {
    let bytes = npy_bytes(t).ok_or_else(|| IoError::Unwritable {
        path: path.to_path_buf(),
        dtype: t.dtype(),
    })?;
    fs::write(path, bytes).map_err(io_err(path))
}

/// The `.npy` encoding of a tensor; `None` for dtypes NumPy has no standard code for (strings, narrow formats,
/// bfloat16).
pub fn npy_bytes(t: &Tensor) -> Option<Vec<u8>> {
    let descr = match t.dtype() {
        DType::F16 => "<f2",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        DType::C64 => "<c8",
        DType::C128 => "<c16",
        _ => return None,
    };
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad with spaces so the data starts on a 64-byte boundary; the header ends with a newline.
    let v1 = header.len() + 1 + 10 <= u16::MAX as usize;
    let prefix = if v1 { 10 } else { 12 };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + t.len() * t.dtype().size_in_bytes());
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes()?);
    Some(out)
}

/// Reads a `.pb` file holding a `TensorProto`, `SequenceProto` or `OptionalProto`, as `expected` says.
pub fn read_pb(path: &Path, expected: &ValueType) -> Result<Value, IoError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    onnx::value_from_pb_bytes(&bytes, expected).map_err(|source| IoError::Pb {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a value from a `.npy` or `.pb` file, chosen by the extension.
pub fn read_value_file(path: &Path, expected: &ValueType) -> Result<Value, IoError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => read_npy(path).map(Value::from),
        Some("pb") => read_pb(path, expected),
        _ => Err(IoError::UnknownExtension {
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn round_trip(t: Tensor) {
        let bytes = npy_bytes(&t).unwrap();
        assert_eq!(bytes.len() % 64, t.to_le_bytes().unwrap().len() % 64);
        assert_eq!(parse_npy(&bytes).unwrap(), t);
    }

    #[test]
    fn npy_round_trips() {
        round_trip(Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 0.0, 1.0, 2.0, 3.0]).unwrap());
        round_trip(Tensor::scalar(7i64));
        round_trip(Tensor::vector(vec![true, false]));
        round_trip(Tensor::vector(vec![f16::from_f32(0.5)]));
        round_trip(Tensor::vector(vec![1u8, 2, 255]));
        round_trip(Tensor::vector(vec![-1i8]));
        round_trip(Tensor::vector(vec![u64::MAX]));
        round_trip(Tensor::from_vec(vec![0, 4], Vec::<f64>::new()).unwrap());
        let strings = Tensor::vector(vec!["a".to_string()]);
        assert!(npy_bytes(&strings).is_none());
    }

    fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_numpy_variants() {
        // Big-endian i4, version 2.
        let data = [0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE];
        let t = parse_npy(&npy(
            2,
            "{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }\n",
            &data,
        ))
        .unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, -2]);
        // Fortran order: the column-major [[1, 2, 3], [4, 5, 6]].
        let data: Vec<u8> = [1i16, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = parse_npy(&npy(
            3,
            "{\"descr\": \"<i2\", \"fortran_order\": True, \"shape\": (2, 3)}",
            &data,
        ))
        .unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<i16>().unwrap(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn bad_npy_is_an_error() {
        let good = npy_bytes(&Tensor::vector(vec![1.0f32, 2.0])).unwrap();
        for cut in 0..good.len() {
            assert!(parse_npy(&good[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let cases = [
            npy(
                1,
                "{'descr': '<U4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 16],
            ),
            npy(1, "{'descr': '<f4', 'shape': (1,), }", &[0; 4]),
            npy(
                1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[],
            ),
            npy(
                1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
                &[],
            ),
            npy(9, "{}", &[]),
            npy(
                1,
                "{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }",
                &[7],
            ),
        ];
        for c in &cases {
            assert!(parse_npy(c).is_err());
        }
        let path = std::env::temp_dir().join(format!("jiuzhou-io-{}-junk.npy", std::process::id()));
        fs::write(&path, b"\x93NUMPY garbage").unwrap();
        let e = read_npy(&path).unwrap_err().to_string();
        assert!(e.contains("junk.npy"), "{e}");
    }
}
