//! `NonMaxSuppression`: greedy selection of boxes by score, dropping boxes that overlap a selected one too much.
//!
//! For every batch and class, candidates (score above `score_threshold` when one is given) are visited by
//! descending score, lower box index first on ties; a candidate is selected unless its intersection over union with
//! an already selected box is above `iou_threshold`; at most `max_output_boxes_per_class` are selected. The output
//! lists `[batch, class, box]` triples in selection order. Arithmetic is in the boxes' precision (f32 for f16), as in
//! the numpy reference, so boundary cases compare the same way.

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::NonMaxSuppression;
use jiuzhou_ir::{Data, Tensor, Value};

use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// One box as `(x_min, x_max, y_min, y_max)` in the working precision.
type Extent<F> = (F, F, F, F);

fn min_max<F: Num>(a: F, b: F) -> (F, F) {
    if a >= b { (b, a) } else { (a, b) }
}

/// The extent of box `[a, b, c, d]`: `[y1, x1, y2, x2]` corners, or `[x_center, y_center, width, height]`.
fn extent<F: Num>(b: [F; 4], center_point_box: bool) -> Extent<F> {
    if center_point_box {
        let two = F::one().add(F::one());
        let (hw, hh) = (b[2].div(two), b[3].div(two));
        (b[0].sub(hw), b[0].add(hw), b[1].sub(hh), b[1].add(hh))
    } else {
        let (x0, x1) = min_max(b[1], b[3]);
        let (y0, y1) = min_max(b[0], b[2]);
        (x0, x1, y0, y1)
    }
}

/// Whether two boxes overlap by more than `iou_threshold`.
fn suppresses<F: Num>(a: Extent<F>, b: Extent<F>, iou_threshold: F) -> bool {
    let max = |p: F, q: F| if p > q { p } else { q };
    let min = |p: F, q: F| if p < q { p } else { q };
    let (ix0, ix1) = (max(a.0, b.0), min(a.1, b.1));
    if ix1 <= ix0 {
        return false;
    }
    let (iy0, iy1) = (max(a.2, b.2), min(a.3, b.3));
    if iy1 <= iy0 {
        return false;
    }
    let zero = F::zero();
    let inter = ix1.sub(ix0).mul(iy1.sub(iy0));
    let area_a = a.1.sub(a.0).mul(a.3.sub(a.2));
    let area_b = b.1.sub(b.0).mul(b.3.sub(b.2));
    let union = area_a.add(area_b).sub(inter);
    if inter <= zero || area_a <= zero || area_b <= zero || union <= zero {
        return false;
    }
    inter.div(union) > iou_threshold
}

/// Runs the selection with arithmetic in `F`.
#[allow(clippy::too_many_arguments)]
fn select<F: Num>(
    boxes: &[f64],
    scores: &[f64],
    (batches, classes, n): (usize, usize, usize),
    max_per_class: usize,
    iou_threshold: f64,
    score_threshold: Option<f64>,
    center_point_box: bool,
) -> Vec<[i64; 3]> {
    let mut out = Vec::new();
    let iou = F::from_f64(iou_threshold);
    for b in 0..batches {
        let extents: Vec<Extent<F>> = (0..n)
            .map(|i| {
                let o = (b * n + i) * 4;
                let c = |k: usize| F::from_f64(boxes[o + k]);
                extent([c(0), c(1), c(2), c(3)], center_point_box)
            })
            .collect();
        for c in 0..classes {
            let s = &scores[(b * classes + c) * n..(b * classes + c + 1) * n];
            let mut candidates: Vec<usize> = (0..n)
                .filter(|&i| score_threshold.is_none_or(|t| F::from_f64(s[i]) > F::from_f64(t)))
                .collect();
            // By descending score, lower index first among equal scores.
            candidates.sort_by(|&i, &j| {
                s[j].partial_cmp(&s[i])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(i.cmp(&j))
            });
            let mut selected: Vec<usize> = Vec::new();
            for i in candidates {
                if selected.len() >= max_per_class {
                    break;
                }
                if selected
                    .iter()
                    .all(|&j| !suppresses(extents[i], extents[j], iou))
                {
                    selected.push(i);
                    out.push([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    out
}

/// The first element of an optional input, as f64.
fn first_f64(cx: &EvalCx<'_>, i: usize) -> Result<Option<f64>, EvalError> {
    match cx.opt_tensor(i)? {
        None => Ok(None),
        Some(t) => Ok(t.to_f64_vec().and_then(|v| v.first().copied())),
    }
}

impl EvalOp for NonMaxSuppression {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (boxes, scores) = (cx.tensor(0)?, cx.tensor(1)?);
        let (&[batches, n, four], &[sb, classes, sn]) = (boxes.shape(), scores.shape()) else {
            eval_bail!(
                "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes], got {:?} and {:?}",
                boxes.shape(),
                scores.shape()
            );
        };
        if four != 4 || sb != batches || sn != n {
            eval_bail!(
                "boxes {:?} and scores {:?} do not agree",
                boxes.shape(),
                scores.shape()
            );
        }
        let max_per_class = match cx.opt_ints(2)? {
            Some(v) => v.first().copied().unwrap_or(0).max(0) as usize,
            None => 0,
        };
        let iou_threshold = first_f64(cx, 3)?.unwrap_or(0.0);
        let score_threshold = first_f64(cx, 4)?;
        let (Some(bv), Some(sv)) = (boxes.to_f64_vec(), scores.to_f64_vec()) else {
            eval_bail!("boxes and scores must be float tensors");
        };
        let dims = (batches, classes, n);
        let center = self.center_point_box != 0;
        let picked = match boxes.data() {
            Data::F64(_) => select::<f64>(
                &bv,
                &sv,
                dims,
                max_per_class,
                iou_threshold,
                score_threshold,
                center,
            ),
            _ => select::<f32>(
                &bv,
                &sv,
                dims,
                max_per_class,
                iou_threshold,
                score_threshold,
                center,
            ),
        };
        let flat: Vec<i64> = picked.iter().flatten().copied().collect();
        Ok(vec![Tensor::from_vec(vec![picked.len(), 3], flat)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::reduce::tests::run;

    fn boxes() -> Tensor {
        #[rustfmt::skip]
        let b = vec![
            0.0f32, 0.0, 1.0, 1.0,
            0.0, 0.1, 1.0, 1.1,
            0.0, -0.1, 1.0, 0.9,
            0.0, 10.0, 1.0, 11.0,
            0.0, 10.1, 1.0, 11.1,
            0.0, 100.0, 1.0, 101.0,
        ];
        Tensor::from_vec(vec![1, 6, 4], b).unwrap()
    }

    fn scores() -> Tensor {
        Tensor::from_vec(vec![1, 1, 6], vec![0.9f32, 0.75, 0.6, 0.95, 0.5, 0.3]).unwrap()
    }

    #[test]
    fn suppresses_by_iou_and_score() {
        let nms = |max: i64, iou: f32, score: Option<f32>| {
            run(
                NonMaxSuppression::default(),
                vec![
                    Some(boxes()),
                    Some(scores()),
                    Some(Tensor::vector(vec![max])),
                    Some(Tensor::vector(vec![iou])),
                    score.map(|s| Tensor::vector(vec![s])),
                ],
            )
        };
        assert_eq!(
            nms(3, 0.5, Some(0.0)),
            "i64[3, 3] [0, 0, 3, 0, 0, 0, 0, 0, 5]"
        );
        assert_eq!(nms(2, 0.5, Some(0.0)), "i64[2, 3] [0, 0, 3, 0, 0, 0]");
        assert_eq!(nms(3, 0.5, Some(0.4)), "i64[2, 3] [0, 0, 3, 0, 0, 0]");
        assert_eq!(nms(0, 0.5, None), "i64[0, 3] []");
        let bad = run(
            NonMaxSuppression::default(),
            vec![
                Some(boxes()),
                Some(Tensor::from_vec(vec![1, 1, 5], vec![0f32; 5]).unwrap()),
            ],
        );
        assert_eq!(
            bad,
            "error: boxes [1, 6, 4] and scores [1, 1, 5] do not agree"
        );
    }
}
