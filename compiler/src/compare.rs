//! Comparing computed values with expected ones, with explicit per-dtype tolerances.

use std::fmt;

use jiuzhou_ir::{Data, Tensor, Value};

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
