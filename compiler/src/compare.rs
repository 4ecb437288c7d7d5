//! Comparing computed values with expected ones, with explicit per-dtype tolerances.
//!
//! Two rules live here: [`compare_values`] (pass/fail under one [`Tolerance`], for conformance and model tests)
//! and the tolerance ladder of the golden-test harness ([`grade`]): every pair of tensors gets one [`Verdict`] —
//! `EQUAL` (bit-identical), `CLOSE` (allclose), `SIMILAR` (cosine and Euclidean similarity above thresholds) or
//! `DIFFERENT` — with the per-dtype [`Thresholds`] documented on [`thresholds`] and in `docs/new-target.md`.

use std::fmt;

use jiuzhou_ir::{DType, Data, Tensor, Value};

/// How close floats must be. Integers, bools and strings always compare exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// `|got - want| <= atol + rtol * |want|` per element; NaN equals NaN. The ONNX backend-test rule.
    Elementwise {
        /// Absolute tolerance.
        atol: f64,
        /// Relative tolerance.
        rtol: f64,
    },
    /// `max |got - want| <= rel * max |want|` over the whole tensor: for whole models, where tiny outputs
    /// carry accumulated rounding from large intermediate values.
    MaxRelative {
        /// Allowed fraction of the largest expected magnitude.
        rel: f64,
    },
}

impl Tolerance {
    /// The conformance-suite rule: `1e-7 + 1e-3 * |want|`.
    pub const CONFORMANCE: Tolerance = Tolerance::Elementwise {
        atol: 1e-7,
        rtol: 1e-3,
    };
    /// The real-model rule: `max |got - want| <= 1e-4 * max |want|`.
    pub const MODEL: Tolerance = Tolerance::MaxRelative { rel: 1e-4 };
}

/// Why two values differ.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// Different kinds (tensor vs sequence, ...).
    Kind {
        /// What was computed.
        got: String,
        /// What was expected.
        want: String,
    },
    /// Different dtypes.
    DType {
        /// Computed.
        got: String,
        /// Expected.
        want: String,
    },
    /// Different shapes (or sequence lengths).
    Shape {
        /// Computed.
        got: Vec<usize>,
        /// Expected.
        want: Vec<usize>,
    },
    /// An element out of tolerance.
    Value {
        /// The element's multi-index.
        index: Vec<usize>,
        /// Computed.
        got: String,
        /// Expected.
        want: String,
        /// Elements out of tolerance in total.
        count: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Kind { got, want } => write!(f, "kind mismatch: got {got}, want {want}"),
            Mismatch::DType { got, want } => write!(f, "dtype mismatch: got {got}, want {want}"),
            Mismatch::Shape { got, want } => {
                write!(f, "shape mismatch: got {got:?}, want {want:?}")
            }
            Mismatch::Value {
                index,
                got,
                want,
                count,
            } => {
                write!(
                    f,
                    "wrong value at index {index:?}: got {got}, want {want} ({count} elements differ)"
                )
            }
        }
    }
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        if shape[d] > 0 {
            idx[d] = flat % shape[d];
            flat /= shape[d];
        }
    }
    idx
}

/// Compares two values under `tol`.
pub fn compare_values(got: &Value, want: &Value, tol: Tolerance) -> Result<(), Mismatch> {
    match (got, want) {
        (Value::Tensor(g), Value::Tensor(w)) => compare_tensors(g, w, tol),
        (Value::Sequence { items: g, .. }, Value::Sequence { items: w, .. }) => {
            if g.len() != w.len() {
                return Err(Mismatch::Shape {
                    got: vec![g.len()],
                    want: vec![w.len()],
                });
            }
            g.iter()
                .zip(w)
                .try_for_each(|(g, w)| compare_values(g, w, tol))
        }
        (Value::Optional { item: g, .. }, Value::Optional { item: w, .. }) => match (g, w) {
            (None, None) => Ok(()),
            (Some(g), Some(w)) => compare_values(g, w, tol),
            _ => Err(Mismatch::Kind {
                got: jiuzhou_runtime::describe(got),
                want: jiuzhou_runtime::describe(want),
            }),
        },
        _ => Err(Mismatch::Kind {
            got: jiuzhou_runtime::describe(got),
            want: jiuzhou_runtime::describe(want),
        }),
    }
}

/// Compares two tensors under `tol`.
pub fn compare_tensors(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), Mismatch> {
    if got.dtype() != want.dtype() {
        return Err(Mismatch::DType {
            got: got.dtype().to_string(),
            want: want.dtype().to_string(),
        });
    }
    if got.shape() != want.shape() {
        return Err(Mismatch::Shape {
            got: got.shape().to_vec(),
            want: want.shape().to_vec(),
        });
    }
    let shape = want.shape();
    let exact =
        |bad: Vec<usize>, show: &dyn Fn(usize) -> (String, String)| -> Result<(), Mismatch> {
            match bad.first() {
                None => Ok(()),
                Some(&i) => {
                    let (g, w) = show(i);
                    Err(Mismatch::Value {
                        index: unravel(i, shape),
                        got: g,
                        want: w,
                        count: bad.len(),
                    })
                }
            }
        };
    match (got.data(), want.data()) {
        (Data::String(g), Data::String(w)) => {
            let bad: Vec<usize> = (0..w.len()).filter(|&i| g[i] != w[i]).collect();
            exact(bad, &|i| (format!("{:?}", g[i]), format!("{:?}", w[i])))
        }
        (Data::Bits(g), Data::Bits(w)) => {
            let bad: Vec<usize> = (0..w.len()).filter(|&i| g[i] != w[i]).collect();
            exact(bad, &|i| {
                (format!("0x{:02x}", g[i]), format!("0x{:02x}", w[i]))
            })
        }
        (Data::C64(_), _) | (Data::C128(_), _) => {
            let (g, w) = (
                got.to_le_bytes().unwrap_or_default(),
                want.to_le_bytes().unwrap_or_default(),
            );
            if g == w {
                Ok(())
            } else {
                compare_complex(got, want, tol)
            }
        }
        _ if got.dtype().is_float() => {
            let (Some(g), Some(w)) = (got.to_f64_vec(), want.to_f64_vec()) else {
                return Err(Mismatch::DType {
                    got: got.dtype().to_string(),
                    want: want.dtype().to_string(),
                });
            };
            compare_floats(&g, &w, shape, tol)
        }
        _ => {
            let (Some(g), Some(w)) = (got.to_i64_vec(), want.to_i64_vec()) else {
                return Err(Mismatch::DType {
                    got: got.dtype().to_string(),
                    want: want.dtype().to_string(),
                });
            };
            let bad: Vec<usize> = (0..w.len()).filter(|&i| g[i] != w[i]).collect();
            exact(bad, &|i| (g[i].to_string(), w[i].to_string()))
        }
    }
}

fn compare_complex(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), Mismatch> {
    let parts = |t: &Tensor| -> Vec<f64> {
        match t.data() {
            Data::C64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::C128(v) => v.clone(),
            _ => vec![],
        }
    };
    let mut shape = want.shape().to_vec();
    shape.push(2);
    compare_floats(&parts(got), &parts(want), &shape, tol)
}

fn compare_floats(g: &[f64], w: &[f64], shape: &[usize], tol: Tolerance) -> Result<(), Mismatch> {
    let same_nan = |a: f64, b: f64| a.is_nan() && b.is_nan();
    let bad: Vec<usize> = match tol {
        Tolerance::Elementwise { atol, rtol } => (0..w.len())
            .filter(|&i| {
                let (a, b) = (g[i], w[i]);
                !(same_nan(a, b) || a == b || (a - b).abs() <= atol + rtol * b.abs())
            })
            .collect(),
        Tolerance::MaxRelative { rel } => {
            let max_want = w
                .iter()
                .filter(|x| x.is_finite())
                .fold(0.0f64, |m, x| m.max(x.abs()));
            let limit = rel * max_want;
            (0..w.len())
                .filter(|&i| {
                    let (a, b) = (g[i], w[i]);
                    !(same_nan(a, b) || a == b || (a - b).abs() <= limit)
                })
                .collect()
        }
    };
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(Mismatch::Value {
            index: unravel(i, shape),
            got: format!("{}", g[i]),
            want: format!("{}", w[i]),
            count: bad.len(),
        }),
    }
}

/// A rung of the tolerance ladder, best first (`Equal < Close < Similar < Different`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Bit-identical (same dtype, shape and bytes; NaNs equal when their bits are).
    Equal,
    /// Every element within `atol·max(1, max|want|) + rtol·|want|`; NaN matches NaN, infinities match exactly.
    Close,
    /// Cosine similarity and Euclidean similarity `1 - ‖got-want‖/‖(got+want)/2‖` at or above the dtype's
    /// thresholds (integers and bools: at least that fraction of elements equal).
    Similar,
    /// None of the above (or a dtype, shape or kind mismatch).
    Different,
}

impl Verdict {
    /// The upper-case name used in tables and reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Equal => "EQUAL",
            Verdict::Close => "CLOSE",
            Verdict::Similar => "SIMILAR",
            Verdict::Different => "DIFFERENT",
        }
    }

    /// Parses `equal`, `close`, `similar` or `different` (any case).
    pub fn from_name(s: &str) -> Option<Verdict> {
        match s.to_ascii_lowercase().as_str() {
            "equal" => Some(Verdict::Equal),
            "close" => Some(Verdict::Close),
            "similar" => Some(Verdict::Similar),
            "different" => Some(Verdict::Different),
            _ => None,
        }
    }

    /// Whether this verdict is at least as good as `expect`.
    pub fn meets(self, expect: Verdict) -> bool {
        self <= expect
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The per-dtype thresholds of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// CLOSE: relative tolerance.
    pub rtol: f64,
    /// CLOSE: absolute tolerance, scaled by `max(1, max|want|)`, so that tensors of large values may carry the
    /// rounding of their magnitude in elements near zero.
    pub atol: f64,
    /// SIMILAR: the least cosine similarity.
    pub min_cosine: f64,
    /// SIMILAR: the least Euclidean similarity `1 - ‖got-want‖/‖(got+want)/2‖`.
    pub min_euclidean: f64,
    /// SIMILAR for integers and bools: the least fraction of equal elements.
    pub min_agreement: f64,
}

/// The thresholds for tensors of `dtype` (complex types use those of their component type):
///
/// | dtype | rtol | atol (× max(1, max\|want\|)) | min cosine | min Euclidean | min agreement |
/// |---|---|---|---|---|---|
/// | f64, c128 | 1e-7 | 1e-9 | 0.99999 | 0.999 | — |
/// | f32, c64 | 1e-4 | 1e-5 | 0.999 | 0.95 | — |
/// | f16 | 1e-2 | 1e-3 | 0.999 | 0.95 | — |
/// | bf16 | 5e-2 | 1e-2 | 0.99 | 0.85 | — |
/// | 8- and 4-bit floats | 0.25 | 0.0625 | 0.98 | 0.8 | — |
/// | integers, bool | exact | exact | — | — | 0.98 |
/// | string | exact | exact | — | — | 1 |
pub fn thresholds(dtype: DType) -> Thresholds {
    let float = |rtol, atol, min_cosine, min_euclidean| Thresholds {
        rtol,
        atol,
        min_cosine,
        min_euclidean,
        min_agreement: 1.0,
    };
    match dtype {
        DType::F64 | DType::C128 => float(1e-7, 1e-9, 0.99999, 0.999),
        DType::F32 | DType::C64 => float(1e-4, 1e-5, 0.999, 0.95),
        DType::F16 => float(1e-2, 1e-3, 0.999, 0.95),
        DType::BF16 => float(5e-2, 1e-2, 0.99, 0.85),
        DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ
        | DType::F8E8M0
        | DType::F4E2M1 => float(0.25, 0.0625, 0.98, 0.8),
        DType::String => Thresholds {
            rtol: 0.0,
            atol: 0.0,
            min_cosine: 1.0,
            min_euclidean: 1.0,
            min_agreement: 1.0,
        },
        _ => Thresholds {
            rtol: 0.0,
            atol: 0.0,
            min_cosine: 1.0,
            min_euclidean: 1.0,
            min_agreement: 0.98,
        },
    }
}

/// Numbers that describe how far two tensors are apart (over the finite element pairs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// The largest `|got - want|`.
    pub max_abs_diff: f64,
    /// Elements outside the CLOSE tolerance (a NaN/infinity mismatch counts too).
    pub mismatches: usize,
    /// Elements compared.
    pub elements: usize,
    /// Cosine similarity (1 when both are all zeros, 0 when only one is).
    pub cosine: f64,
    /// Euclidean similarity `1 - ‖got-want‖/‖(got+want)/2‖` (1 when both are all zeros).
    pub euclidean: f64,
    /// Signal-to-quantization-noise ratio `10·log10(‖want‖²/‖got-want‖²)` in dB (+∞ when equal).
    pub sqnr_db: f64,
    /// The fraction of elements exactly equal.
    pub agreement: f64,
}

/// The verdict on one pair of values, with what it was based on.
#[derive(Clone, Debug, PartialEq)]
pub struct Grade {
    /// The rung.
    pub verdict: Verdict,
    /// Distances, for tensors of numbers of the same dtype and shape.
    pub metrics: Option<Metrics>,
    /// Why, when not EQUAL: the first mismatch (index and values), or a dtype/shape/kind mismatch.
    pub note: Option<String>,
}

impl Grade {
    fn different(note: String) -> Grade {
        Grade {
            verdict: Verdict::Different,
            metrics: None,
            note: Some(note),
        }
    }
}

/// Grades `got` against `want` on the ladder (tensors elementwise; sequences and optionals item by item, the
/// worst item deciding).
pub fn grade(got: &Value, want: &Value) -> Grade {
    match (got, want) {
        (Value::Tensor(g), Value::Tensor(w)) => grade_tensors(g, w),
        (Value::Sequence { items: g, .. }, Value::Sequence { items: w, .. }) => {
            if g.len() != w.len() {
                return Grade::different(format!(
                    "sequence length {} instead of {}",
                    g.len(),
                    w.len()
                ));
            }
            let mut worst = Grade {
                verdict: Verdict::Equal,
                metrics: None,
                note: None,
            };
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                let gr = grade(g, w);
                if gr.verdict > worst.verdict {
                    worst = Grade {
                        verdict: gr.verdict,
                        metrics: None,
                        note: gr.note.map(|n| format!("item {i}: {n}")),
                    };
                }
            }
            worst
        }
        (Value::Optional { item: g, .. }, Value::Optional { item: w, .. }) => match (g, w) {
            (None, None) => Grade {
                verdict: Verdict::Equal,
                metrics: None,
                note: None,
            },
            (Some(g), Some(w)) => grade(g, w),
            _ => Grade::different(format!(
                "got {}, want {}",
                jiuzhou_runtime::describe(got),
                jiuzhou_runtime::describe(want)
            )),
        },
        _ => Grade::different(format!(
            "got {}, want {}",
            jiuzhou_runtime::describe(got),
            jiuzhou_runtime::describe(want)
        )),
    }
}

/// The elements of a numeric tensor as f64 (complex as interleaved parts, narrow formats decoded).
fn numbers(t: &Tensor) -> Option<Vec<f64>> {
    match t.data() {
        Data::C64(v) => Some(v.iter().map(|&x| x as f64).collect()),
        Data::C128(v) => Some(v.clone()),
        Data::Bits(b) => b
            .iter()
            .map(|&x| {
                jiuzhou_ir::narrow::decode(t.dtype(), x)
                    .or_else(|| jiuzhou_ir::narrow::decode_int(t.dtype(), x).map(|i| i as f64))
            })
            .collect(),
        Data::String(_) => None,
        _ => t.to_f64_vec(),
    }
}

/// Grades two tensors on the ladder.
pub fn grade_tensors(got: &Tensor, want: &Tensor) -> Grade {
    if got.dtype() != want.dtype() {
        return Grade::different(format!("dtype {} instead of {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Grade::different(format!(
            "shape {:?} instead of {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let equal = match (got.data(), want.data()) {
        (Data::String(g), Data::String(w)) => g == w,
        _ => got.to_le_bytes() == want.to_le_bytes(),
    };
    let (Some(g), Some(w)) = (numbers(got), numbers(want)) else {
        // Strings: exact or nothing.
        return if equal {
            Grade {
                verdict: Verdict::Equal,
                metrics: None,
                note: None,
            }
        } else {
            let first = compare_tensors(got, want, Tolerance::CONFORMANCE)
                .err()
                .map_or_else(|| "strings differ".to_string(), |m| m.to_string());
            Grade::different(first)
        };
    };
    let th = thresholds(want.dtype());
    let is_float = want.dtype().is_float() || matches!(want.dtype(), DType::C64 | DType::C128);
    let m = metrics(&g, &w, &th);
    let verdict = if equal {
        Verdict::Equal
    } else if is_float && m.mismatches == 0 {
        Verdict::Close
    } else if is_float {
        if m.cosine >= th.min_cosine
            && m.euclidean >= th.min_euclidean
            && !nonfinite_mismatch(&g, &w)
        {
            Verdict::Similar
        } else {
            Verdict::Different
        }
    } else if m.agreement >= th.min_agreement {
        Verdict::Similar
    } else {
        Verdict::Different
    };
    let note = (verdict != Verdict::Equal)
        .then(|| first_mismatch(&g, &w, &th, want.shape(), is_float))
        .flatten();
    Grade {
        verdict,
        metrics: Some(m),
        note,
    }
}

fn nonfinite_mismatch(g: &[f64], w: &[f64]) -> bool {
    g.iter().zip(w).any(|(&a, &b)| {
        let both_finite = a.is_finite() && b.is_finite();
        let same = a == b || (a.is_nan() && b.is_nan());
        !both_finite && !same
    })
}

fn close_limit(th: &Thresholds, max_want: f64, b: f64) -> f64 {
    th.atol * max_want.max(1.0) + th.rtol * b.abs()
}

fn element_ok(a: f64, b: f64, th: &Thresholds, max_want: f64) -> bool {
    if a.is_nan() || b.is_nan() || a.is_infinite() || b.is_infinite() {
        return a == b || (a.is_nan() && b.is_nan());
    }
    (a - b).abs() <= close_limit(th, max_want, b)
}

fn metrics(g: &[f64], w: &[f64], th: &Thresholds) -> Metrics {
    let max_want = w
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let (mut dot, mut gg, mut ww, mut dd, mut ss) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut max_abs, mut mismatches, mut same) = (0.0f64, 0usize, 0usize);
    for (&a, &b) in g.iter().zip(w) {
        if a == b || (a.is_nan() && b.is_nan()) {
            same += 1;
        }
        if !element_ok(a, b, th, max_want) {
            mismatches += 1;
        }
        if !(a.is_finite() && b.is_finite()) {
            continue;
        }
        max_abs = max_abs.max((a - b).abs());
        dot += a * b;
        gg += a * a;
        ww += b * b;
        dd += (a - b) * (a - b);
        ss += ((a + b) / 2.0) * ((a + b) / 2.0);
    }
    let cosine = if gg == 0.0 && ww == 0.0 {
        1.0
    } else if gg == 0.0 || ww == 0.0 {
        0.0
    } else {
        (dot / (gg.sqrt() * ww.sqrt())).clamp(-1.0, 1.0)
    };
    let euclidean = if dd == 0.0 {
        1.0
    } else if ss == 0.0 {
        f64::NEG_INFINITY
    } else {
        1.0 - dd.sqrt() / ss.sqrt()
    };
    let sqnr_db = if dd == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (ww / dd).log10()
    };
    Metrics {
        max_abs_diff: max_abs,
        mismatches,
        elements: w.len(),
        cosine,
        euclidean,
        sqnr_db,
        agreement: if w.is_empty() {
            1.0
        } else {
            same as f64 / w.len() as f64
        },
    }
}

fn first_mismatch(
    g: &[f64],
    w: &[f64],
    th: &Thresholds,
    shape: &[usize],
    is_float: bool,
) -> Option<String> {
    let max_want = w
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let i = if is_float {
        (0..w.len()).find(|&i| !element_ok(g[i], w[i], th, max_want))
    } else {
        (0..w.len()).find(|&i| g[i] != w[i])
    }?;
    let mut shape = shape.to_vec();
    if g.len() == 2 * shape.iter().product::<usize>() {
        shape.push(2);
    }
    Some(format!(
        "first mismatch at {:?}: got {}, want {}",
        unravel(i, &shape),
        g[i],
        w[i]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: Vec<f32>) -> Tensor {
        Tensor::from_vec(vec![v.len()], v).unwrap()
    }

    #[test]
    fn float_tolerance_is_the_backend_test_rule() {
        let tol = Tolerance::CONFORMANCE;
        assert!(compare_tensors(&f(vec![1.0005, f32::NAN]), &f(vec![1.0, f32::NAN]), tol).is_ok());
        let err = compare_tensors(&f(vec![1.0, 2.01]), &f(vec![1.0, 2.0]), tol).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "wrong value at index [1]: got {}, want 2 (1 elements differ)",
                2.01f32 as f64
            )
        );
        assert!(compare_tensors(&f(vec![f32::NAN]), &f(vec![1.0]), tol).is_err());
        assert!(compare_tensors(&f(vec![f32::INFINITY]), &f(vec![f32::INFINITY]), tol).is_ok());
    }

    #[test]
    fn ints_and_shapes_are_exact() {
        let a = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let b = Tensor::from_vec(vec![2], vec![1i64, 3]).unwrap();
        assert!(compare_tensors(&a, &b, Tolerance::CONFORMANCE).is_err());
        let c = Tensor::from_vec(vec![1, 2], vec![1i64, 2]).unwrap();
        assert_eq!(
            compare_tensors(&a, &c, Tolerance::CONFORMANCE)
                .unwrap_err()
                .to_string(),
            "shape mismatch: got [2], want [1, 2]"
        );
    }

    #[test]
    fn model_tolerance_is_relative_to_the_largest_value() {
        let tol = Tolerance::MODEL;
        assert!(compare_tensors(&f(vec![100.0, 0.005]), &f(vec![100.0, 0.0]), tol).is_ok());
        assert!(compare_tensors(&f(vec![100.0, 0.02]), &f(vec![100.0, 0.0]), tol).is_err());
    }
}

#[cfg(test)]
mod ladder_tests {
    use super::*;

    fn f(v: Vec<f32>) -> Value {
        Value::Tensor(std::sync::Arc::new(
            Tensor::from_vec(vec![v.len()], v).unwrap(),
        ))
    }

    fn verdict(got: Vec<f32>, want: Vec<f32>) -> Verdict {
        grade(&f(got), &f(want)).verdict
    }

    #[test]
    fn the_ladder_has_four_rungs() {
        assert_eq!(verdict(vec![1.0, -0.0], vec![1.0, -0.0]), Verdict::Equal);
        // -0.0 and 0.0 differ in bits but are close.
        assert_eq!(verdict(vec![1.0, 0.0], vec![1.0, -0.0]), Verdict::Close);
        assert_eq!(
            verdict(vec![100.0, 5e-4], vec![100.00005, 0.0]),
            Verdict::Close
        );
        // 2% noise: not close, but similar.
        let want: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let got: Vec<f32> = want
            .iter()
            .enumerate()
            .map(|(i, x)| x + if i.is_multiple_of(2) { 0.01 } else { -0.01 })
            .collect();
        let g = grade(&f(got), &f(want.clone()));
        assert_eq!(g.verdict, Verdict::Similar, "{g:?}");
        let m = g.metrics.unwrap();
        assert!(
            m.cosine > 0.999 && m.euclidean > 0.95 && m.sqnr_db > 30.0,
            "{m:?}"
        );
        let neg: Vec<f32> = want.iter().map(|x| -x).collect();
        assert_eq!(verdict(neg, want), Verdict::Different);
        assert_eq!(verdict(vec![f32::NAN], vec![f32::NAN]), Verdict::Equal);
        assert_eq!(verdict(vec![f32::NAN], vec![1.0]), Verdict::Different);
        assert_eq!(verdict(vec![0.0, 0.0], vec![0.0, 1e-9]), Verdict::Close);
    }

    #[test]
    fn shapes_dtypes_and_integers() {
        let g = grade(&f(vec![1.0]), &f(vec![1.0, 2.0]));
        assert_eq!(g.verdict, Verdict::Different);
        assert_eq!(g.note.as_deref(), Some("shape [1] instead of [2]"));
        let ints = |v: Vec<i64>| Value::Tensor(std::sync::Arc::new(Tensor::vector(v)));
        let want: Vec<i64> = (0..100).collect();
        let mut got = want.clone();
        got[7] = 0;
        assert_eq!(
            grade(&ints(got.clone()), &ints(want.clone())).verdict,
            Verdict::Similar
        );
        got[8] = 0;
        got[9] = 0;
        assert_eq!(
            grade(&ints(got), &ints(want.clone())).verdict,
            Verdict::Different
        );
        assert_eq!(
            grade(&ints(want.clone()), &ints(want)).verdict,
            Verdict::Equal
        );
        assert!(Verdict::Close.meets(Verdict::Similar) && !Verdict::Similar.meets(Verdict::Close));
        assert_eq!(Verdict::from_name("Similar"), Some(Verdict::Similar));
    }
}
