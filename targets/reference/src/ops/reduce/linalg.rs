//! `Det`: determinants of square matrices over the last two dims, by LU decomposition with partial pivoting (in
//! f64, rounded once to the input's type).

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::Det;
use jiuzhou_ir::tensor::checked_numel;

use super::{float_values, tensor_from_f64};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// The determinant of the row-major `n`×`n` matrix `a` (destroyed).
pub fn determinant(a: &mut [f64], n: usize) -> f64 {
    let mut det = 1.0;
    for col in 0..n {
        // The row with the largest pivot candidate keeps the elimination stable.
        let pivot = (col..n)
            .max_by(|&i, &j| {
                a[i * n + col]
                    .abs()
                    .partial_cmp(&a[j * n + col].abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .unwrap_or(col);
        if a[pivot * n + col] == 0.0 {
            return 0.0;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
            }
            det = -det;
        }
        let p = a[col * n + col];
        det *= p;
        for row in col + 1..n {
            let f = a[row * n + col] / p;
            for k in col..n {
                a[row * n + k] -= f * a[col * n + k];
            }
        }
    }
    det
}

impl EvalOp for Det {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let shape = x.shape();
        let r = shape.len();
        if r < 2 || shape[r - 1] != shape[r - 2] {
            eval_bail!("Det needs square matrices in the last two dims, got {shape:?}");
        }
        let n = shape[r - 1];
        let v = float_values(x, "the input")?;
        let out: Vec<f64> = if n == 0 {
            // The determinant of an empty matrix is 1.
            vec![1.0; checked_numel(&shape[..r - 2], x.dtype())?]
        } else {
            v.chunks_exact(n * n)
                .map(|m| determinant(&mut m.to_vec(), n))
                .collect()
        };
        Ok(vec![
            tensor_from_f64(x.dtype(), shape[..r - 2].to_vec(), out)?.into(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::Tensor;

    use super::*;
    use crate::ops::reduce::tests::run;

    #[test]
    fn determinants() {
        let m = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(run(Det::default(), vec![Some(m)]), "f32[] [-2]");
        #[rustfmt::skip]
        let batch = vec![
            0.0f64, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
            2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0,
        ];
        let batch = Tensor::from_vec(vec![2, 3, 3], batch).unwrap();
        assert_eq!(run(Det::default(), vec![Some(batch)]), "f64[2] [-1, 24]");
        let singular = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 2.0, 4.0]).unwrap();
        assert_eq!(run(Det::default(), vec![Some(singular)]), "f32[] [0]");
        let oblong = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        assert_eq!(
            run(Det::default(), vec![Some(oblong)]),
            "inference error: Det: Det needs square matrices, got 2x3"
        );
    }
}
