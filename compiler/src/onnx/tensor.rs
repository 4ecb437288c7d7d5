//! Conversion between ONNX `TensorProto` (and the data messages of onnx-data.proto) and IR tensors and values.
//!
//! Every ONNX data type is read: the typed repeated fields (`float_data`, `int32_data`, `int64_data`, ...) and
//! little-endian `raw_data`. 16-bit types travel in `int32_data` as their bit patterns; 8-bit floats one per
//! `int32_data` entry or per raw byte; 4-bit types packed two per byte and 2-bit types four per byte, low bits first.
//! Narrow formats become [`Data::Bits`], one element per byte. Dims are checked (non-negative, the element count
//! fits the allocation limit and matches the data) before anything is allocated from them.

use std::path::Path;
use std::sync::Arc;

use half::{bf16, f16};
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Data, Tensor, Value, ValueType};

use super::proto::{self, TensorProto};
use super::{ImportError, external};

/// The name of a tensor for messages (`<unnamed>` when it has none).
fn display_name(name: &str) -> &str {
    if name.is_empty() { "<unnamed>" } else { name }
}

fn bad(name: &str, why: impl Into<String>) -> ImportError {
    ImportError::Tensor {
        name: display_name(name).to_string(),
        why: why.into(),
    }
}

/// The IR dtype of an ONNX data type code, or an error naming the tensor.
pub(crate) fn dtype_of(code: i32, what: &str) -> Result<DType, ImportError> {
    DType::from_onnx_code(code as i64).ok_or_else(|| {
        let name = proto::tensor_proto::DataType::try_from(code)
            .map(|d| format!("{d:?}"))
            .unwrap_or_else(|_| format!("code {code}"));
        ImportError::Invalid(format!("{what}: data type {name} is not supported"))
    })
}

/// Checks ONNX dims (non-negative, element count within limits) and returns them with the element count.
pub(crate) fn checked_dims(
    dims: &[i64],
    dtype: DType,
    name: &str,
) -> Result<(Vec<usize>, usize), ImportError> {
    let shape = dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| bad(name, format!("negative dim {d} in {dims:?}")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let n = checked_numel(&shape, dtype).map_err(|e| bad(name, e.to_string()))?;
    Ok((shape, n))
}

/// Decodes a `TensorProto` into a tensor. External data is read relative to `base_dir` (see [`external`]).
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, ImportError> {
    let name = t.name.as_str();
    let dtype = dtype_of(t.data_type, &format!("tensor `{}`", display_name(name)))?;
    if t.segment.is_some() {
        return Err(bad(name, "segmented tensors are not supported"));
    }
    let (shape, n) = checked_dims(&t.dims, dtype, name)?;
    if t.data_location == proto::tensor_proto::DataLocation::External as i32 {
        let raw = external::read_external(t, base_dir, raw_size(dtype, n))?;
        return from_raw(dtype, shape, n, &raw, name);
    }
    if !t.raw_data.is_empty() {
        return from_raw(dtype, shape, n, &t.raw_data, name);
    }
    from_fields(t, dtype, shape, n)
}

/// Bytes that `n` elements of `dtype` take in `raw_data` (narrow formats packed).
fn raw_size(dtype: DType, n: usize) -> usize {
    match dtype {
        DType::U4 | DType::I4 | DType::F4E2M1 => n.div_ceil(2),
        DType::U2 | DType::I2 => n.div_ceil(4),
        DType::C64 => n.saturating_mul(8),
        DType::C128 => n.saturating_mul(16),
        d if d.is_bits() => n,
        d => n.saturating_mul(d.size_in_bytes()),
    }
}

/// Elements per packed byte of a sub-byte format (1 for everything else).
fn per_byte(dtype: DType) -> usize {
    match dtype {
        DType::U4 | DType::I4 | DType::F4E2M1 => 2,
        DType::U2 | DType::I2 => 4,
        _ => 1,
    }
}

/// Unpacks `n` elements of `bits` bits each from packed bytes, low bits first.
fn unpack(bytes: &[u8], n: usize, per: usize) -> Vec<u8> {
    if per == 1 {
        return bytes[..n.min(bytes.len())].to_vec();
    }
    let width = 8 / per;
    let mask = (1u8 << width) - 1;
    (0..n)
        .map(|i| {
            let byte = bytes.get(i / per).copied().unwrap_or(0);
            (byte >> ((i % per) * width)) & mask
        })
        .collect()
}

/// Packs one-per-byte narrow elements, low bits first (the inverse of [`unpack`]).
fn pack(elems: &[u8], per: usize) -> Vec<u8> {
    if per == 1 {
        return elems.to_vec();
    }
    let width = 8 / per;
    let mask = (1u8 << width) - 1;
    elems
        .chunks(per)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (k, &e)| acc | ((e & mask) << (k * width)))
        })
        .collect()
}

fn from_raw(
    dtype: DType,
    shape: Vec<usize>,
    n: usize,
    raw: &[u8],
    name: &str,
) -> Result<Tensor, ImportError> {
    if dtype == DType::String {
        return Err(bad(name, "string tensors cannot use raw_data"));
    }
    let want = raw_size(dtype, n);
    if raw.len() != want {
        return Err(bad(
            name,
            format!(
                "raw_data has {} bytes but {dtype}{shape:?} needs {want}",
                raw.len()
            ),
        ));
    }
    let per = per_byte(dtype);
    if per > 1 {
        return Tensor::from_data(dtype, shape, Data::Bits(unpack(raw, n, per)))
            .map_err(|e| bad(name, e.to_string()));
    }
    Tensor::from_le_bytes(dtype, shape, raw).map_err(|e| bad(name, e.to_string()))
}

fn from_fields(
    t: &TensorProto,
    dtype: DType,
    shape: Vec<usize>,
    n: usize,
) -> Result<Tensor, ImportError> {
    let name = t.name.as_str();
    // Every typed field is checked against the element count before it is converted.
    let check = |len: usize, field: &str, per_elem: usize| -> Result<(), ImportError> {
        if len != n.saturating_mul(per_elem) {
            return Err(bad(
                name,
                format!(
                    "{field} has {len} entries but {dtype}{shape:?} needs {}",
                    n.saturating_mul(per_elem)
                ),
            ));
        }
        Ok(())
    };
    let i32s = &t.int32_data;
    let data = match dtype {
        DType::F32 => {
            check(t.float_data.len(), "float_data", 1)?;
            Data::F32(t.float_data.clone())
        }
        DType::C64 => {
            check(t.float_data.len(), "float_data", 2)?;
            Data::C64(t.float_data.clone())
        }
        DType::F64 => {
            check(t.double_data.len(), "double_data", 1)?;
            Data::F64(t.double_data.clone())
        }
        DType::C128 => {
            check(t.double_data.len(), "double_data", 2)?;
            Data::C128(t.double_data.clone())
        }
        DType::I64 => {
            check(t.int64_data.len(), "int64_data", 1)?;
            Data::I64(t.int64_data.clone())
        }
        DType::U64 => {
            check(t.uint64_data.len(), "uint64_data", 1)?;
            Data::U64(t.uint64_data.clone())
        }
        DType::U32 => {
            check(t.uint64_data.len(), "uint64_data", 1)?;
            Data::U32(t.uint64_data.iter().map(|&x| x as u32).collect())
        }
        DType::String => {
            check(t.string_data.len(), "string_data", 1)?;
            Data::String(
                t.string_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            )
        }
        DType::I32 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::I32(i32s.clone())
        }
        DType::I16 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::I16(i32s.iter().map(|&x| x as i16).collect())
        }
        DType::U16 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::U16(i32s.iter().map(|&x| x as u16).collect())
        }
        DType::I8 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::I8(i32s.iter().map(|&x| x as i8).collect())
        }
        DType::U8 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::U8(i32s.iter().map(|&x| x as u8).collect())
        }
        DType::Bool => {
            check(i32s.len(), "int32_data", 1)?;
            Data::Bool(i32s.iter().map(|&x| x != 0).collect())
        }
        DType::F16 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::F16(i32s.iter().map(|&x| f16::from_bits(x as u16)).collect())
        }
        DType::BF16 => {
            check(i32s.len(), "int32_data", 1)?;
            Data::BF16(i32s.iter().map(|&x| bf16::from_bits(x as u16)).collect())
        }
        d => {
            // Narrow formats: one packed byte per int32_data entry.
            let per = per_byte(d);
            if i32s.len() != n.div_ceil(per) {
                return Err(bad(
                    name,
                    format!(
                        "int32_data has {} entries but {dtype}{shape:?} needs {}",
                        i32s.len(),
                        n.div_ceil(per)
                    ),
                ));
            }
            let bytes: Vec<u8> = i32s.iter().map(|&x| x as u8).collect();
            Data::Bits(unpack(&bytes, n, per))
        }
    };
    Tensor::from_data(dtype, shape, data).map_err(|e| bad(name, e.to_string()))
}

/// Encodes a tensor as a `TensorProto` called `name` (raw little-endian data; strings in `string_data`; narrow
/// formats packed as ONNX stores them).
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    let mut p = TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: t.dtype().onnx_code(),
        ..Default::default()
    };
    match t.data() {
        Data::String(v) => p.string_data = v.iter().map(|s| s.as_bytes().to_vec()).collect(),
        Data::Bits(v) => p.raw_data = pack(v, per_byte(t.dtype())).into(),
        _ => p.raw_data = t.to_le_bytes().unwrap_or_default().into(),
    }
    p
}

/// Densifies a `SparseTensorProto` (COO indices, either `[NNZ, rank]` or linearized `[NNZ]`).
pub fn sparse_to_dense(
    s: &proto::SparseTensorProto,
    base_dir: Option<&Path>,
) -> Result<Tensor, ImportError> {
    let values = s
        .values
        .as_ref()
        .ok_or_else(|| ImportError::Invalid("sparse tensor without values".into()))?;
    let name = values.name.clone();
    let values = tensor_from_proto(values, base_dir)?;
    let dtype = values.dtype();
    let (shape, n) = checked_dims(&s.dims, dtype, &name)?;
    let nnz = values.len();
    let indices = match &s.indices {
        Some(i) => tensor_from_proto(i, base_dir)?
            .to_i64_vec()
            .ok_or_else(|| bad(&name, "sparse indices are not integers"))?,
        None => Vec::new(),
    };
    // Linear offsets of the non-zero elements.
    let offsets: Vec<usize> = if indices.len() == nnz {
        indices
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < n))
            .collect::<Option<_>>()
            .ok_or_else(|| bad(&name, "sparse index out of range"))?
    } else if indices.len() == nnz.saturating_mul(shape.len()) && !shape.is_empty() {
        indices
            .chunks(shape.len())
            .map(|coords| {
                coords.iter().zip(&shape).try_fold(0usize, |acc, (&c, &d)| {
                    let c = usize::try_from(c).ok().filter(|&c| c < d)?;
                    acc.checked_mul(d)?.checked_add(c)
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad(&name, "sparse index out of range"))?
    } else {
        return Err(bad(
            &name,
            format!(
                "sparse tensor has {} indices for {nnz} values of rank {}",
                indices.len(),
                shape.len()
            ),
        ));
    };
    let mut out = Data::zeros(dtype, n);
    scatter(&mut out, values.data(), &offsets);
    Tensor::from_data(dtype, shape, out).map_err(|e| bad(&name, e.to_string()))
}

fn scatter(out: &mut Data, vals: &Data, offsets: &[usize]) {
    fn put<T: Clone>(out: &mut [T], vals: &[T], offsets: &[usize], per: usize) {
        for (k, &o) in offsets.iter().enumerate() {
            for j in 0..per {
                if let (Some(src), Some(dst)) = (vals.get(k * per + j), out.get_mut(o * per + j)) {
                    *dst = src.clone();
                }
            }
        }
    }
    match (out, vals) {
        (Data::Bool(o), Data::Bool(v)) => put(o, v, offsets, 1),
        (Data::U8(o), Data::U8(v)) | (Data::Bits(o), Data::Bits(v)) => put(o, v, offsets, 1),
        (Data::I8(o), Data::I8(v)) => put(o, v, offsets, 1),
        (Data::U16(o), Data::U16(v)) => put(o, v, offsets, 1),
        (Data::I16(o), Data::I16(v)) => put(o, v, offsets, 1),
        (Data::U32(o), Data::U32(v)) => put(o, v, offsets, 1),
        (Data::I32(o), Data::I32(v)) => put(o, v, offsets, 1),
        (Data::U64(o), Data::U64(v)) => put(o, v, offsets, 1),
        (Data::I64(o), Data::I64(v)) => put(o, v, offsets, 1),
        (Data::F16(o), Data::F16(v)) => put(o, v, offsets, 1),
        (Data::BF16(o), Data::BF16(v)) => put(o, v, offsets, 1),
        (Data::F32(o), Data::F32(v)) => put(o, v, offsets, 1),
        (Data::F64(o), Data::F64(v)) => put(o, v, offsets, 1),
        (Data::C64(o), Data::C64(v)) => put(o, v, offsets, 2),
        (Data::C128(o), Data::C128(v)) => put(o, v, offsets, 2),
        (Data::String(o), Data::String(v)) => put(o, v, offsets, 1),
        _ => {}
    }
}

/// Decodes a serialized value (a `TensorProto`, `SequenceProto` or `OptionalProto`, chosen by `expected`).
pub fn value_from_pb_bytes(bytes: &[u8], expected: &ValueType) -> Result<Value, ImportError> {
    use prost::Message;
    let decode_err =
        |what: &str, e: prost::DecodeError| ImportError::Decode(format!("not a valid {what}: {e}"));
    match expected {
        ValueType::Tensor(_) => {
            let t = TensorProto::decode(bytes).map_err(|e| decode_err("TensorProto", e))?;
            Ok(Value::Tensor(Arc::new(tensor_from_proto(&t, None)?)))
        }
        ValueType::Sequence(elem) => {
            let s =
                proto::SequenceProto::decode(bytes).map_err(|e| decode_err("SequenceProto", e))?;
            sequence_value(&s, elem, 0)
        }
        ValueType::Optional(elem) => {
            let o =
                proto::OptionalProto::decode(bytes).map_err(|e| decode_err("OptionalProto", e))?;
            optional_value(&o, elem, 0)
        }
    }
}

/// How deep sequences and optionals may nest in a data file.
const MAX_NESTING: usize = 32;

fn nesting(depth: usize) -> Result<(), ImportError> {
    if depth > MAX_NESTING {
        return Err(ImportError::Invalid(format!(
            "values nest deeper than {MAX_NESTING} levels"
        )));
    }
    Ok(())
}

fn sequence_value(
    s: &proto::SequenceProto,
    elem: &ValueType,
    depth: usize,
) -> Result<Value, ImportError> {
    nesting(depth)?;
    let items = match elem {
        ValueType::Tensor(_) => {
            let dense = s
                .tensor_values
                .iter()
                .map(|t| tensor_from_proto(t, None).map(Value::from));
            let sparse = s
                .sparse_tensor_values
                .iter()
                .map(|t| sparse_to_dense(t, None).map(Value::from));
            dense.chain(sparse).collect::<Result<Vec<_>, _>>()?
        }
        ValueType::Sequence(inner) => s
            .sequence_values
            .iter()
            .map(|v| sequence_value(v, inner, depth + 1))
            .collect::<Result<Vec<_>, _>>()?,
        ValueType::Optional(inner) => s
            .optional_values
            .iter()
            .map(|v| optional_value(v, inner, depth + 1))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if !s.map_values.is_empty() {
        return Err(ImportError::Invalid(
            "sequences of maps are not supported".into(),
        ));
    }
    Ok(Value::Sequence {
        elem: elem.clone(),
        items,
    })
}

fn optional_value(
    o: &proto::OptionalProto,
    elem: &ValueType,
    depth: usize,
) -> Result<Value, ImportError> {
    nesting(depth)?;
    let item = match elem {
        ValueType::Tensor(_) => match (&o.tensor_value, &o.sparse_tensor_value) {
            (Some(t), _) => Some(Value::from(tensor_from_proto(t, None)?)),
            (None, Some(s)) => Some(Value::from(sparse_to_dense(s, None)?)),
            (None, None) => None,
        },
        ValueType::Sequence(inner) => match &o.sequence_value {
            Some(s) => Some(sequence_value(s, inner, depth + 1)?),
            None => None,
        },
        ValueType::Optional(inner) => match &o.optional_value {
            Some(v) => Some(optional_value(v, inner, depth + 1)?),
            None => None,
        },
    };
    if o.map_value.is_some() {
        return Err(ImportError::Invalid(
            "optional maps are not supported".into(),
        ));
    }
    Ok(Value::Optional {
        elem: elem.clone(),
        item: item.map(Box::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DType, dims: &[i64]) -> TensorProto {
        TensorProto {
            data_type: dtype.onnx_code(),
            dims: dims.to_vec(),
            name: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_fields() {
        let mut p = proto(DType::F32, &[2]);
        p.float_data = vec![1.5, -2.0];
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.5, -2.0]);

        let mut p = proto(DType::F16, &[1]);
        p.int32_data = vec![f16::from_f32(0.5).to_bits() as i32];
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.as_slice::<f16>().unwrap(), &[f16::from_f32(0.5)]);

        let mut p = proto(DType::BF16, &[1]);
        p.int32_data = vec![bf16::from_f32(-3.0).to_bits() as i32];
        let t = tensor_from_proto(&p, None).unwrap();
        assert_eq!(t.as_slice::<bf16>().unwrap(), &[bf16::from_f32(-3.0)]);

        let mut p = proto(DType::U64, &[1]);
        p.uint64_data = vec![u64::MAX];
        assert_eq!(
            tensor_from_proto(&p, None)
                .unwrap()
                .as_slice::<u64>()
                .unwrap(),
            &[u64::MAX]
        );

        let mut p = proto(DType::String, &[2]);
        p.string_data = vec![b"a".to_vec(), b"bc".to_vec()];
        assert_eq!(
            tensor_from_proto(&p, None)
                .unwrap()
                .as_slice::<String>()
                .unwrap(),
            &["a".to_string(), "bc".to_string()]
        );

        let mut p = proto(DType::C64, &[1]);
        p.float_data = vec![1.0, 2.0];
        assert!(tensor_from_proto(&p, None).unwrap().data() == &Data::C64(vec![1.0, 2.0]));

        let mut p = proto(DType::Bool, &[3]);
        p.int32_data = vec![1, 0, 1];
        assert_eq!(
            tensor_from_proto(&p, None)
                .unwrap()
                .as_slice::<bool>()
                .unwrap(),
            &[true, false, true]
        );
    }

    #[test]
    fn raw_and_packed() {
        let mut p = proto(DType::I64, &[2]);
        p.raw_data = [7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat().into();
        assert_eq!(
            tensor_from_proto(&p, None)
                .unwrap()
                .as_slice::<i64>()
                .unwrap(),
            &[7, -1]
        );
        // Three int4 elements in two bytes, low nibble first.
        let mut p = proto(DType::I4, &[3]);
        p.raw_data = vec![0xF1, 0x07].into();
        let t = tensor_from_proto(&p, None).unwrap();
        assert!(t.data() == &Data::Bits(vec![1, 15, 7]));
        assert_eq!(tensor_to_proto(&t, "t").raw_data, vec![0xF1, 0x07]);
        // The same in int32_data.
        let mut p = proto(DType::U4, &[3]);
        p.int32_data = vec![0xF1, 0x07];
        assert!(tensor_from_proto(&p, None).unwrap().data() == &Data::Bits(vec![1, 15, 7]));
        // Five uint2 elements in two bytes.
        let mut p = proto(DType::U2, &[5]);
        p.raw_data = vec![0b11_10_01_00, 0b01].into();
        assert!(tensor_from_proto(&p, None).unwrap().data() == &Data::Bits(vec![0, 1, 2, 3, 1]));
        // 8-bit floats, one per entry.
        let mut p = proto(DType::F8E4M3FN, &[2]);
        p.int32_data = vec![0x38, 0xB8];
        assert!(tensor_from_proto(&p, None).unwrap().data() == &Data::Bits(vec![0x38, 0xB8]));
    }

    #[test]
    fn round_trip_every_dtype() {
        for d in DType::ALL {
            let t = Tensor::zeros(d, vec![2, 3]).unwrap();
            let p = tensor_to_proto(&t, "x");
            assert_eq!(tensor_from_proto(&p, None).unwrap(), t, "{d}");
        }
    }

    #[test]
    fn bad_tensors_are_errors() {
        let mut p = proto(DType::F32, &[3]);
        p.float_data = vec![1.0];
        let e = tensor_from_proto(&p, None).unwrap_err().to_string();
        assert!(e.contains("float_data has 1 entries"), "{e}");
        let p = proto(DType::F32, &[-1]);
        assert!(tensor_from_proto(&p, None).is_err());
        let p = proto(DType::F32, &[1 << 40, 1 << 40]);
        assert!(tensor_from_proto(&p, None).is_err());
        let mut p = proto(DType::F32, &[2]);
        p.raw_data = vec![0; 7].into();
        assert!(tensor_from_proto(&p, None).is_err());
        let mut p = proto(DType::F32, &[1]);
        p.data_type = 99;
        assert!(tensor_from_proto(&p, None).is_err());
    }

    #[test]
    fn sparse_densifies() {
        let mut values = proto(DType::F32, &[2]);
        values.float_data = vec![5.0, 6.0];
        let mut idx = proto(DType::I64, &[2, 2]);
        idx.int64_data = vec![0, 1, 1, 2];
        let s = proto::SparseTensorProto {
            values: Some(values.clone()),
            indices: Some(idx),
            dims: vec![2, 3],
        };
        let t = sparse_to_dense(&s, None).unwrap();
        assert_eq!(
            t.as_slice::<f32>().unwrap(),
            &[0.0, 5.0, 0.0, 0.0, 0.0, 6.0]
        );
        let mut idx = proto(DType::I64, &[2]);
        idx.int64_data = vec![1, 9];
        let s = proto::SparseTensorProto {
            values: Some(values),
            indices: Some(idx),
            dims: vec![2, 3],
        };
        assert!(sparse_to_dense(&s, None).is_err());
    }

    #[test]
    fn sequences_and_optionals() {
        use prost::Message;
        let elem = ValueType::Tensor(jiuzhou_ir::TensorType::unranked(DType::F32));
        let t = Tensor::vector(vec![1.0f32]);
        let s = proto::SequenceProto {
            elem_type: 1,
            tensor_values: vec![tensor_to_proto(&t, "a"), tensor_to_proto(&t, "b")],
            ..Default::default()
        };
        let v = value_from_pb_bytes(
            &s.encode_to_vec(),
            &ValueType::Sequence(Box::new(elem.clone())),
        )
        .unwrap();
        let Value::Sequence { items, .. } = v else {
            panic!("not a sequence")
        };
        assert_eq!(items.len(), 2);
        let o = proto::OptionalProto::default();
        let v = value_from_pb_bytes(
            &o.encode_to_vec(),
            &ValueType::Optional(Box::new(elem.clone())),
        )
        .unwrap();
        assert_eq!(v, Value::Optional { elem, item: None });
    }
}
