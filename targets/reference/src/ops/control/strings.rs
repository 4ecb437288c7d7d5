//! String ops: concatenation, splitting, normalization, regular-expression matching.
//!
//! Splitting follows Python's `str.split` (the ONNX reference implementation's semantics); StringNormalizer
//! follows the ONNX reference too, except that it does not strip accents (ASCII text, which is all the tests use,
//! is unaffected) and locales other than the default are ignored.

use jiuzhou_ir::ops::{RegexFullMatch, StringConcat, StringNormalizer, StringSplit};
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Tensor, Value};

use crate::kernels::{broadcast_offsets, broadcast_shape};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The strings of string input `i`.
fn strings<'a>(cx: &EvalCx<'a>, i: usize) -> Result<(&'a Tensor, &'a [String]), EvalError> {
    let t = cx.tensor(i)?;
    match t.as_slice::<String>() {
        Ok(s) => Ok((t, s)),
        Err(_) => eval_bail!("input {i} should be a string tensor, got {}", t.dtype()),
    }
}

impl EvalOp for StringConcat {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (a, av) = strings(cx, 0)?;
        let (b, bv) = strings(cx, 1)?;
        let shape = broadcast_shape(&[a.shape(), b.shape()])?;
        checked_numel(&shape, DType::String)?;
        let out: Vec<String> = broadcast_offsets(a.shape(), &shape)
            .into_iter()
            .zip(broadcast_offsets(b.shape(), &shape))
            .map(|(i, j)| format!("{}{}", av[i], bv[j]))
            .collect();
        Ok(vec![Tensor::from_vec(shape, out)?.into()])
    }
}

/// Whether Python's `str.isspace` holds for `c`.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `s.split(None, maxsplit)`: runs of whitespace separate words, leading and trailing whitespace is
/// dropped; after `maxsplit` splits the rest (without its leading whitespace) is the last word.
fn split_whitespace(s: &str, maxsplit: Option<usize>) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start_matches(is_py_space);
    while !rest.is_empty() {
        if maxsplit.is_some_and(|m| parts.len() >= m) {
            parts.push(rest);
            break;
        }
        let end = rest.find(is_py_space).unwrap_or(rest.len());
        parts.push(&rest[..end]);
        rest = rest[end..].trim_start_matches(is_py_space);
    }
    parts
}

/// Python's `s.split(sep, maxsplit)` for a non-empty separator.
fn split_on<'s>(s: &'s str, sep: &str, maxsplit: Option<usize>) -> Vec<&'s str> {
    match maxsplit {
        Some(m) => s.splitn(m.saturating_add(1), sep).collect(),
        None => s.split(sep).collect(),
    }
}

impl EvalOp for StringSplit {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, xv) = strings(cx, 0)?;
        let maxsplit = match self.maxsplit {
            Some(m) if m < 0 => eval_bail!("maxsplit should not be negative, got {m}"),
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
            None => None,
        };
        let parts: Vec<Vec<&str>> = xv
            .iter()
            .map(|s| match self.delimiter.as_deref() {
                None | Some("") => split_whitespace(s, maxsplit),
                Some(sep) => split_on(s, sep, maxsplit),
            })
            .collect();
        let width = parts.iter().map(Vec::len).max().unwrap_or(0);
        let mut shape = x.shape().to_vec();
        shape.push(width);
        let n = checked_numel(&shape, DType::String)?;
        let mut y = Vec::with_capacity(n);
        for p in &parts {
            y.extend(p.iter().map(|s| s.to_string()));
            y.extend(std::iter::repeat_n(String::new(), width - p.len()));
        }
        let z: Vec<i64> = parts.iter().map(|p| p.len() as i64).collect();
        Ok(vec![
            Tensor::from_vec(shape, y)?.into(),
            Tensor::from_vec(x.shape().to_vec(), z)?.into(),
        ])
    }
}

/// Removes the space-separated words of `text` for which `is_stop` holds.
fn remove_stopwords(text: &str, is_stop: impl Fn(&str) -> bool) -> String {
    text.split(' ')
        .filter(|w| !is_stop(w))
        .collect::<Vec<_>>()
        .join(" ")
}

impl EvalOp for StringNormalizer {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, xv) = strings(cx, 0)?;
        if !matches!(x.rank(), 1 | 2) {
            eval_bail!("the input should have rank 1 or 2, got {:?}", x.shape());
        }
        let stopwords = self.stopwords.as_deref().unwrap_or(&[]);
        let sensitive = self.is_case_sensitive != 0;
        let lowered: Vec<String> = stopwords.iter().map(|w| w.to_lowercase()).collect();
        let change: fn(&str) -> String = match self.case_change_action.as_str() {
            "NONE" => str::to_string,
            "LOWER" => str::to_lowercase,
            "UPPER" => str::to_uppercase,
            other => eval_bail!("case_change_action should be NONE, LOWER or UPPER, got {other:?}"),
        };
        let out: Vec<String> = xv
            .iter()
            .map(|s| {
                let kept = if stopwords.is_empty() {
                    s.clone()
                } else if sensitive {
                    remove_stopwords(s, |w| stopwords.iter().any(|sw| sw == w))
                } else {
                    remove_stopwords(s, |w| lowered.contains(&w.to_lowercase()))
                };
                change(&kept)
            })
            .collect();
        // A vector or a single row drops the strings that became empty (keeping one empty string if none is left).
        let single_row = x.rank() == 1 || x.shape()[0] == 1;
        if !single_row {
            return Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?.into()]);
        }
        let mut kept: Vec<String> = out.into_iter().filter(|s| !s.is_empty()).collect();
        if kept.is_empty() {
            kept.push(String::new());
        }
        let shape = if x.rank() == 1 {
            vec![kept.len()]
        } else {
            vec![1, kept.len()]
        };
        Ok(vec![Tensor::from_vec(shape, kept)?.into()])
    }
}

impl EvalOp for RegexFullMatch {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, xv) = strings(cx, 0)?;
        let Some(pattern) = &self.pattern else {
            eval_bail!("the pattern attribute is required");
        };
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| EvalError::new(format!("invalid pattern {pattern:?}: {e}")))?;
        let out: Vec<bool> = xv.iter().map(|s| re.is_match(s)).collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::control::testutil::{run, strs};

    #[test]
    fn concat_broadcasts() {
        assert_eq!(
            run(
                StringConcat {},
                vec![
                    Some(strs(&[2, 1], &["a", "b"])),
                    Some(strs(&[2], &["1", "é"]))
                ],
                1
            ),
            r#"[2, 2] ["a1", "aé", "b1", "bé"]"#
        );
        assert!(
            run(
                StringConcat {},
                vec![
                    Some(strs(&[2], &["a", "b"])),
                    Some(strs(&[3], &["", "", ""]))
                ],
                1
            )
            .starts_with("error")
        );
    }

    #[test]
    fn split_like_python() {
        assert_eq!(split_whitespace("  a b\t c  ", None), ["a", "b", "c"]);
        assert_eq!(split_whitespace("  a b  c  ", Some(1)), ["a", "b  c  "]);
        assert_eq!(split_whitespace("   ", None), Vec::<&str>::new());
        assert_eq!(split_on("o-n--x-", "-", None), ["o", "n", "", "x", ""]);
        assert_eq!(split_on("a.b.c", ".", Some(1)), ["a", "b.c"]);
        assert_eq!(split_on("", ".", None), [""]);
        let op = StringSplit {
            delimiter: Some("-".into()),
            maxsplit: None,
        };
        assert_eq!(
            run(op, vec![Some(strs(&[2], &["a-b", "c"]))], 2),
            r#"[2, 2] ["a", "b", "c", ""] | [2] [2, 1]"#
        );
        let op = StringSplit::default();
        assert_eq!(
            run(op.clone(), vec![Some(strs(&[0], &[]))], 2),
            "[0, 0] [] | [0] []"
        );
        assert_eq!(
            run(op, vec![Some(strs(&[1], &[" x  y "]))], 2),
            r#"[1, 2] ["x", "y"] | [1] [2]"#
        );
    }

    #[test]
    fn normalizer() {
        let words = || Some(strs(&[4], &["monday", "Monday", "tuesday", ""]));
        let op = |action: &str, sensitive, stop: &[&str]| StringNormalizer {
            case_change_action: action.into(),
            is_case_sensitive: sensitive,
            locale: None,
            stopwords: Some(stop.iter().map(|s| s.to_string()).collect()),
        };
        assert_eq!(
            run(op("UPPER", 1, &["monday"]), vec![words()], 1),
            r#"[2] ["MONDAY", "TUESDAY"]"#
        );
        assert_eq!(
            run(op("LOWER", 0, &["MONDAY"]), vec![words()], 1),
            r#"[1] ["tuesday"]"#
        );
        assert_eq!(
            run(op("NONE", 0, &["monday", "tuesday"]), vec![words()], 1),
            r#"[1] [""]"#
        );
        let rows = Some(strs(&[2, 2], &["a b", "c", "b", "B"]));
        assert_eq!(
            run(op("NONE", 0, &["b"]), vec![rows], 1),
            r#"[2, 2] ["a", "c", "", ""]"#
        );
        let row = Some(strs(&[1, 3], &["x", "y", "x"]));
        assert_eq!(run(op("UPPER", 1, &["x"]), vec![row], 1), r#"[1, 1] ["Y"]"#);
        assert!(run(op("TITLE", 1, &[]), vec![words()], 1).starts_with("error"));
    }

    #[test]
    fn regex_matches_whole_strings() {
        let op = RegexFullMatch {
            pattern: Some(r"www\.[\w.-]+\.\bcom\b".into()),
        };
        assert_eq!(
            run(
                op,
                vec![Some(strs(
                    &[3],
                    &["www.google.com", "www.bbc.co.uk", "xwww.a.com"]
                ))],
                1
            ),
            "[3] [true, false, false]"
        );
        let alt = RegexFullMatch {
            pattern: Some("a|ab".into()),
        };
        assert_eq!(run(alt, vec![Some(strs(&[1], &["ab"]))], 1), "[1] [true]");
        let bad = RegexFullMatch {
            pattern: Some("(".into()),
        };
        assert!(run(bad, vec![Some(strs(&[1], &["a"]))], 1).starts_with("error"));
    }
}
