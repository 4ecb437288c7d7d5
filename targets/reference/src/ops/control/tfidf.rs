//! TfIdfVectorizer: counts the n-grams of a pool in each row of tokens (with skips) and weights the counts.
//!
//! The pool holds n-grams of increasing size back to back: `ngram_counts[i]` is where the `(i+1)`-grams start.
//! N-grams are numbered in pool order; n-gram `k` is counted in output column `ngram_indexes[k]`. Only sizes in
//! `min_gram_length..=max_gram_length` are counted. An n-gram with skip `s` takes every `(s+1)`-th token; skips
//! `0..=max_skip_count` are tried, and unigrams are counted once (they are the same for every skip).

use std::collections::HashMap;
use std::hash::Hash;

use jiuzhou_ir::ops::TfIdfVectorizer;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Tensor, Value};

use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The n-grams of the pool (as token lists) mapped to their output columns.
fn load_pool<K: Clone + Eq + Hash>(
    op: &TfIdfVectorizer,
    pool: &[K],
) -> Result<HashMap<Vec<K>, usize>, EvalError> {
    let mut map = HashMap::new();
    let mut id = 0usize;
    for (i, &start) in op.ngram_counts.iter().enumerate() {
        let size = i + 1;
        let end = op
            .ngram_counts
            .get(i + 1)
            .copied()
            .unwrap_or(pool.len() as i64);
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            eval_bail!("ngram_counts {:?} should not be negative", op.ngram_counts);
        };
        if start > end || end > pool.len() {
            eval_bail!(
                "ngram_counts {:?} do not fit a pool of {}",
                op.ngram_counts,
                pool.len()
            );
        }
        let count = (end - start) / size;
        let wanted = (op.min_gram_length..=op.max_gram_length).contains(&(size as i64));
        for k in 0..count {
            if wanted {
                let Some(&column) = op.ngram_indexes.get(id) else {
                    eval_bail!("ngram_indexes has no entry for n-gram {id}");
                };
                let column = usize::try_from(column)
                    .map_err(|_| EvalError::new("ngram_indexes should not be negative"))?;
                let gram = pool[start + k * size..start + (k + 1) * size].to_vec();
                map.insert(gram, column);
            }
            id += 1;
        }
    }
    Ok(map)
}

/// Adds the n-gram counts of one row of tokens into `counts` (one entry per output column).
fn count_row<K: Clone + Eq + Hash>(
    op: &TfIdfVectorizer,
    grams: &HashMap<Vec<K>, usize>,
    row: &[K],
    counts: &mut [f32],
) {
    let max_len = usize::try_from(op.max_gram_length).unwrap_or(0);
    let mut min_len = usize::try_from(op.min_gram_length).unwrap_or(0).max(1);
    let max_skip = usize::try_from(op.max_skip_count).unwrap_or(0);
    if max_len == 0 || grams.is_empty() {
        return;
    }
    for skip in 0..=max_skip.min(row.len()) {
        let step = skip + 1;
        for start in 0..row.len() {
            let mut gram = Vec::with_capacity(max_len);
            for pos in (start..row.len()).step_by(step).take(max_len) {
                gram.push(row[pos].clone());
                if gram.len() >= min_len
                    && let Some(&column) = grams.get(&gram)
                    && let Some(c) = counts.get_mut(column)
                {
                    *c += 1.0;
                }
            }
        }
        // Unigrams do not depend on the skip: count them only on the first pass.
        if min_len == 1 {
            min_len = 2;
            if min_len > max_len {
                break;
            }
        }
    }
}

/// Counts every row of `tokens` (rows of `row_len`) into `out` (rows of `size`).
fn count_all<K: Clone + Eq + Hash>(
    op: &TfIdfVectorizer,
    pool: &[K],
    tokens: &[K],
    row_len: usize,
    size: usize,
    out: &mut [f32],
) -> Result<(), EvalError> {
    let grams = load_pool(op, pool)?;
    if let Some(&bad) = grams.values().find(|&&c| c >= size) {
        eval_bail!("n-gram column {bad} is outside the output of {size}");
    }
    if row_len == 0 || size == 0 {
        return Ok(());
    }
    for (row, counts) in tokens.chunks(row_len).zip(out.chunks_mut(size)) {
        count_row(op, &grams, row, counts);
    }
    Ok(())
}

impl EvalOp for TfIdfVectorizer {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let size = match self.ngram_indexes.iter().copied().max() {
            Some(m) => usize::try_from(m)
                .ok()
                .and_then(|m| m.checked_add(1))
                .ok_or_else(|| EvalError::new("ngram_indexes should not be negative"))?,
            None => 0,
        };
        let (shape, rows, row_len) = match *x.shape() {
            [] => (vec![size], 1, 1),
            [c] => (vec![size], 1, c),
            [b, c] => (vec![b, size], b, c),
            _ => eval_bail!("the input should be [C] or [B, C], got {:?}", x.shape()),
        };
        let n = checked_numel(&shape, DType::F32)?;
        let mut counts = vec![0f32; n];
        if rows > 0 {
            if let Ok(tokens) = x.as_slice::<String>() {
                let pool = self.pool_strings.as_deref().unwrap_or(&[]);
                count_all(self, pool, tokens, row_len, size, &mut counts)?;
            } else if let Some(tokens) = x.to_i64_vec() {
                let pool = self.pool_int64s.as_deref().unwrap_or(&[]);
                count_all(self, pool, &tokens, row_len, size, &mut counts)?;
            } else {
                eval_bail!("tokens should be strings or integers, got {}", x.dtype());
            }
        }
        let weights = self.weights.as_deref().unwrap_or(&[]);
        if !weights.is_empty() && weights.len() < size {
            eval_bail!("weights has {} entries for {size} outputs", weights.len());
        }
        let weight = |i: usize| weights.get(i % size.max(1)).copied().unwrap_or(1.0);
        let out: Vec<f32> = match self.mode.as_str() {
            "TF" => counts,
            "IDF" => counts
                .iter()
                .enumerate()
                .map(|(i, &c)| if c > 0.0 { weight(i) } else { 0.0 })
                .collect(),
            "TFIDF" => counts
                .iter()
                .enumerate()
                .map(|(i, &c)| c * weight(i))
                .collect(),
            other => eval_bail!("mode should be TF, IDF or TFIDF, got {other:?}"),
        };
        Ok(vec![Tensor::from_vec(shape, out)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::control::testutil::{run, strs};

    /// The pool of the ONNX node tests: unigrams 2, 3, 5, 4 and bigrams (5,6), (7,8), (6,7).
    fn op(mode: &str, min: i64, max: i64, skip: i64) -> TfIdfVectorizer {
        TfIdfVectorizer {
            mode: mode.into(),
            min_gram_length: min,
            max_gram_length: max,
            max_skip_count: skip,
            ngram_counts: vec![0, 4],
            ngram_indexes: vec![0, 1, 2, 3, 4, 5, 6],
            pool_int64s: Some(vec![2, 3, 5, 4, 5, 6, 7, 8, 6, 7]),
            pool_strings: None,
            weights: None,
        }
    }

    fn input() -> Option<Value> {
        Some(Tensor::vector(vec![1i32, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]).into())
    }

    #[test]
    fn counts_like_the_onnx_tests() {
        assert_eq!(
            run(op("TF", 2, 2, 0), vec![input()], 1),
            "[7] [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]"
        );
        assert_eq!(
            run(op("TF", 1, 2, 5), vec![input()], 1),
            "[7] [0.0, 3.0, 1.0, 0.0, 1.0, 3.0, 1.0]"
        );
        assert_eq!(
            run(op("TF", 2, 2, 5), vec![input()], 1),
            "[7] [0.0, 0.0, 0.0, 0.0, 1.0, 3.0, 1.0]"
        );
        let batch = Some(
            Tensor::from_vec(vec![2, 6], vec![1i32, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8])
                .unwrap()
                .into(),
        );
        assert_eq!(
            run(op("TF", 2, 2, 0), vec![batch], 1),
            "[2, 7] [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]"
        );
    }

    #[test]
    fn weights_and_strings() {
        let mut idf = op("IDF", 1, 1, 0);
        idf.weights = Some(vec![0.5; 7]);
        assert_eq!(
            run(idf.clone(), vec![input()], 1),
            "[7] [0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]"
        );
        idf.mode = "TFIDF".into();
        assert_eq!(
            run(idf.clone(), vec![input()], 1),
            "[7] [0.0, 1.5, 0.5, 0.0, 0.0, 0.0, 0.0]"
        );
        idf.weights = Some(vec![0.5]);
        assert!(run(idf, vec![input()], 1).starts_with("error"));

        let words = TfIdfVectorizer {
            mode: "TF".into(),
            min_gram_length: 1,
            max_gram_length: 2,
            max_skip_count: 0,
            ngram_counts: vec![0, 2],
            ngram_indexes: vec![0, 1, 2],
            pool_int64s: None,
            pool_strings: Some(vec!["a".into(), "b".into(), "a".into(), "b".into()]),
            weights: None,
        };
        assert_eq!(
            run(
                words.clone(),
                vec![Some(strs(&[4], &["a", "b", "a", "b"]))],
                1
            ),
            "[3] [2.0, 2.0, 2.0]"
        );
        let mut bad = words;
        bad.ngram_counts = vec![0, 9];
        assert!(run(bad, vec![Some(strs(&[1], &["a"]))], 1).starts_with("error"));
    }
}
