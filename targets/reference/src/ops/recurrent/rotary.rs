//! `RotaryEmbedding` (opset 23): rotates pairs of features by position-dependent angles given as cos/sin caches.
//!
//! The input is `[batch, heads, seq, head_size]` or `[batch, seq, heads * head_size]` (with `num_heads`). The
//! first `rotary_embedding_dim` features of each head are rotated (all of them when it is 0); pairs are
//! `(i, i + dim/2)`, or `(2i, 2i + 1)` when `interleaved`. With `position_ids` (`[batch, seq]`) the caches are
//! `[max_position, dim/2]` tables; without them they are `[batch, seq, dim/2]`.

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::RotaryEmbedding;

use super::{float_tensor, floats, val};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

impl EvalOp for RotaryEmbedding {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (x, cos_t, sin_t) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        let dtype = x.dtype();
        let xs = x.shape().to_vec();
        // Dims as (batch, seq, heads, head_size) and the flat offset of element (b, s, h, 0).
        let (batch, seq, heads, size) = match xs[..] {
            [b, h, s, d] => (b, s, h, d),
            [b, s, hidden] => {
                let Some(nh) = self.num_heads.filter(|&n| n > 0) else {
                    eval_bail!("3-D input needs a positive num_heads attribute");
                };
                let nh = nh as usize;
                if hidden % nh != 0 {
                    eval_bail!("hidden size {hidden} is not a multiple of num_heads {nh}");
                }
                (b, s, nh, hidden / nh)
            }
            _ => eval_bail!("input must be 3-D or 4-D, got shape {xs:?}"),
        };
        let offset = |b: usize, s: usize, h: usize| -> usize {
            if xs.len() == 4 {
                ((b * heads + h) * seq + s) * size
            } else {
                ((b * seq + s) * heads + h) * size
            }
        };
        let rot = match self.rotary_embedding_dim {
            0 => size,
            d if d > 0 && d as usize <= size && d % 2 == 0 => d as usize,
            d => {
                eval_bail!("rotary_embedding_dim {d} must be even and at most the head size {size}")
            }
        };
        let half = rot / 2;
        let cos = floats(cos_t, "cos_cache")?;
        let sin = floats(sin_t, "sin_cache")?;
        if cos_t.shape() != sin_t.shape() || cos_t.shape().last() != Some(&half) {
            eval_bail!(
                "cos_cache {:?} and sin_cache {:?} must have the same shape ending in {half}",
                cos_t.shape(),
                sin_t.shape()
            );
        }
        // The cache row (offset into cos/sin) for position (b, s).
        let rows: Vec<usize> = match cx.opt_ints(3)? {
            Some(pos) => {
                let [max_pos, _] = *cos_t.shape() else {
                    eval_bail!(
                        "with position_ids the caches must be 2-D, got {:?}",
                        cos_t.shape()
                    );
                };
                if pos.len() != batch * seq {
                    eval_bail!("position_ids must have shape [{batch}, {seq}]");
                }
                pos.iter()
                    .map(|&p| {
                        if p < 0 || p as usize >= max_pos {
                            eval_bail!(
                                "position id {p} is out of range for {max_pos} cached positions"
                            );
                        }
                        Ok(p as usize * half)
                    })
                    .collect::<Result<_, _>>()?
            }
            None => {
                let [cb, cs, _] = *cos_t.shape() else {
                    eval_bail!(
                        "without position_ids the caches must be 3-D, got {:?}",
                        cos_t.shape()
                    );
                };
                if !(cb == batch || cb == 1) || !(cs == seq || cs == 1) {
                    eval_bail!(
                        "caches {:?} do not fit batch {batch} and sequence {seq}",
                        cos_t.shape()
                    );
                }
                (0..batch * seq)
                    .map(|i| {
                        let (b, s) = (i / seq, i % seq);
                        ((if cb == 1 { 0 } else { b }) * cs + if cs == 1 { 0 } else { s }) * half
                    })
                    .collect()
            }
        };
        let mut out = floats(x, "input")?;
        for b in 0..batch {
            for s in 0..seq {
                let row = rows[b * seq + s];
                let (c, sn) = (&cos[row..row + half], &sin[row..row + half]);
                for h in 0..heads {
                    let v = &mut out[offset(b, s, h)..][..size];
                    for i in 0..half {
                        let (i1, i2) = if self.interleaved != 0 {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, i + half)
                        };
                        let (x1, x2) = (v[i1], v[i2]);
                        v[i1] = c[i] * x1 - sn[i] * x2;
                        v[i2] = sn[i] * x1 + c[i] * x2;
                    }
                }
            }
        }
        Ok(vec![val(float_tensor(dtype, xs, out)?)])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::RotaryEmbedding;

    use crate::ops::recurrent::test_util::{close, f, i, run};

    #[test]
    fn quarter_turn_with_position_ids() {
        // Position 1 has angle 90 degrees: (x1, x2) -> (-x2, x1); position 0 is the identity.
        let inputs = vec![
            f(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
            f(&[2, 1], &[1.0, 0.0]),
            f(&[2, 1], &[0.0, 1.0]),
            i(&[1, 2], &[0, 1]),
        ];
        let out = run(RotaryEmbedding::default(), inputs.clone(), 1).unwrap();
        close(&out[0], &[1, 1, 2, 2], &[1.0, 2.0, -4.0, 3.0]);
        let interleaved = RotaryEmbedding {
            interleaved: 1,
            ..Default::default()
        };
        let out = run(interleaved, inputs.clone(), 1).unwrap();
        close(&out[0], &[1, 1, 2, 2], &[1.0, 2.0, -4.0, 3.0]);
        let mut bad = inputs;
        bad[3] = i(&[1, 2], &[0, 7]);
        assert!(run(RotaryEmbedding::default(), bad, 1).is_err());
    }
}
