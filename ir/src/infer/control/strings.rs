//! String ops (concatenation, splitting, normalization, regular-expression matching) and TfIdfVectorizer.

use crate::infer::{InferCx, InferError, InferOp, broadcast_shapes};
use crate::ops::{RegexFullMatch, StringConcat, StringNormalizer, StringSplit, TfIdfVectorizer};
use crate::{DType, Dim, TensorType, ValueType, infer_bail};

impl InferOp for StringConcat {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &[DType::String])?;
        cx.expect_dtype(1, &[DType::String])?;
        let shape = broadcast_shapes(&[&cx.tensor(0)?.shape, &cx.tensor(1)?.shape])?;
        Ok(vec![
            TensorType {
                dtype: DType::String,
                shape,
            }
            .into(),
        ])
    }
}

impl InferOp for StringSplit {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &[DType::String])?;
        if let Some(m) = self.maxsplit
            && m < 0
        {
            infer_bail!("maxsplit should not be negative, got {m}");
        }
        let shape = cx.tensor(0)?.shape.clone();
        let parts = cx.fresh("splits");
        let y = TensorType {
            dtype: DType::String,
            shape: shape.clone().map(|mut d| {
                d.push(parts);
                d
            }),
        };
        let z = TensorType {
            dtype: DType::I64,
            shape,
        };
        Ok(vec![y.into(), z.into()])
    }
}

impl InferOp for StringNormalizer {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &[DType::String])?;
        if !matches!(self.case_change_action.as_str(), "NONE" | "LOWER" | "UPPER") {
            infer_bail!(
                "case_change_action should be NONE, LOWER or UPPER, got {:?}",
                self.case_change_action
            );
        }
        // Stopwords are dropped from a vector or a single row, so that dim depends on the data.
        let shape = match cx.dims(0)? {
            Some([_]) => vec![cx.fresh("words")],
            Some([Dim::Known(1), _]) => vec![Dim::Known(1), cx.fresh("words")],
            Some([b, c]) if self.stopwords.as_ref().is_none_or(|s| s.is_empty()) => {
                vec![b.clone(), c.clone()]
            }
            Some([b @ Dim::Known(_), c]) => vec![b.clone(), c.clone()],
            Some([b, _]) => vec![b.clone(), cx.fresh("words")],
            Some(d) => infer_bail!("the input should have rank 1 or 2, it has rank {}", d.len()),
            None => return Ok(vec![TensorType::unranked(DType::String).into()]),
        };
        Ok(vec![TensorType::new(DType::String, shape).into()])
    }
}

impl InferOp for RegexFullMatch {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &[DType::String])?;
        if self.pattern.is_none() {
            infer_bail!("the pattern attribute is required");
        }
        Ok(vec![
            TensorType {
                dtype: DType::Bool,
                shape: cx.tensor(0)?.shape.clone(),
            }
            .into(),
        ])
    }
}

impl InferOp for TfIdfVectorizer {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        cx.expect_dtype(0, &[DType::String, DType::I32, DType::I64])?;
        if !matches!(self.mode.as_str(), "TF" | "IDF" | "TFIDF") {
            infer_bail!("mode should be TF, IDF or TFIDF, got {:?}", self.mode);
        }
        let size = match self.ngram_indexes.iter().copied().max() {
            Some(m) if m < 0 => infer_bail!("ngram_indexes should not be negative"),
            Some(m) => usize::try_from(m)
                .ok()
                .and_then(|m| m.checked_add(1))
                .ok_or_else(|| InferError::new("ngram_indexes are too large"))?,
            None => 0,
        };
        let shape = match cx.dims(0)? {
            Some([] | [_]) => vec![Dim::Known(size)],
            Some([b, _]) => vec![b.clone(), Dim::Known(size)],
            Some(d) => infer_bail!("the input should be [C] or [B, C], it has rank {}", d.len()),
            None => return Ok(vec![TensorType::unranked(DType::F32).into()]),
        };
        Ok(vec![TensorType::new(DType::F32, shape).into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use crate::infer::test_util::infer_types;

    fn s(dims: &[usize]) -> Option<ValueType> {
        Some(TensorType::known(DType::String, dims).into())
    }

    fn check(op: impl Into<Op>, inputs: &[Option<ValueType>], outputs: usize) -> String {
        infer_types(op, inputs, &[], outputs)
    }

    #[test]
    fn string_types() {
        assert_eq!(
            check(StringConcat {}, &[s(&[2, 1]), s(&[3])], 1),
            "string[2,3]"
        );
        let f = Some(ValueType::from(TensorType::known(DType::F32, &[2])));
        assert!(check(StringConcat {}, &[s(&[2]), f.clone()], 1).starts_with("error"));
        assert_eq!(
            check(StringSplit::default(), &[s(&[2, 3])], 2),
            "string[2,3,splits_0], i64[2,3]"
        );
        let norm = StringNormalizer {
            stopwords: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert_eq!(check(norm.clone(), &[s(&[4])], 1), "string[words_0]");
        assert_eq!(check(norm.clone(), &[s(&[1, 6])], 1), "string[1,words_0]");
        assert_eq!(check(norm.clone(), &[s(&[2, 6])], 1), "string[2,6]");
        assert!(check(norm, &[s(&[1, 2, 3])], 1).starts_with("error"));
        let re = RegexFullMatch {
            pattern: Some("a+".into()),
        };
        assert_eq!(check(re, &[s(&[2])], 1), "bool[2]");
        assert!(check(RegexFullMatch { pattern: None }, &[s(&[2])], 1).starts_with("error"));
    }

    #[test]
    fn tfidf_types() {
        let op = TfIdfVectorizer {
            mode: "TF".into(),
            ngram_indexes: vec![0, 1, 2, 6],
            ..Default::default()
        };
        let x = Some(ValueType::from(TensorType::known(DType::I32, &[2, 6])));
        assert_eq!(check(op.clone(), &[x], 1), "f32[2,7]");
        let x = Some(ValueType::from(TensorType::known(DType::I64, &[6])));
        assert_eq!(check(op.clone(), std::slice::from_ref(&x), 1), "f32[7]");
        let mut bad = op;
        bad.mode = "BM25".into();
        assert!(check(bad, &[x], 1).starts_with("error"));
    }
}
