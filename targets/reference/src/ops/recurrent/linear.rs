//! `LinearAttention` and `CausalConvWithState` (opset 27): the recurrent building blocks of linear-attention and
//! state-space language models, each with an explicit carried state.
//!
//! `LinearAttention` keeps a `[batch, kv_heads, d_k, d_v]` state `S` and for every step `t` applies, by
//! `update_rule`: gating (`S *= exp(decay_t)`), delta correction (`v_t = beta_t * (v_t - S^T k_t)`), the update
//! `S += k_t v_t^T`, and reads `o_t = scale * q_t^T S` (query heads share key/value heads in groups).
//! `CausalConvWithState` is a depthwise causal 1-D convolution whose left padding is the carried state.

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::{CausalConvWithState, LinearAttention};

use super::attention::rounder;
use super::{float_tensor, floats, val};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// `[batch, time, heads * size]` as `(batch, time, size)`, or an error.
fn split_heads(
    shape: &[usize],
    heads: usize,
    what: &str,
) -> Result<(usize, usize, usize), EvalError> {
    match *shape {
        [b, t, hd] if heads > 0 && hd % heads == 0 => Ok((b, t, hd / heads)),
        _ => eval_bail!("{what} has shape {shape:?}, expected [batch, time, {heads} * head_size]"),
    }
}

impl EvalOp for LinearAttention {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (qt, kt, vt) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        let dtype = qt.dtype();
        let (hq, hkv) = (self.q_num_heads, self.kv_num_heads);
        if hq <= 0 || hkv <= 0 || hq % hkv != 0 {
            eval_bail!("q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})");
        }
        let (hq, hkv) = (hq as usize, hkv as usize);
        let group = hq / hkv;
        let (gating, delta) = match self.update_rule.as_str() {
            "linear" => (false, false),
            "gated" => (true, false),
            "delta" => (false, true),
            "gated_delta" => (true, true),
            r => eval_bail!("unknown update_rule `{r}`"),
        };
        let (b, t, dk) = split_heads(qt.shape(), hq, "query")?;
        let (kb, kt_len, kdk) = split_heads(kt.shape(), hkv, "key")?;
        let (vb, vt_len, dv) = split_heads(vt.shape(), hkv, "value")?;
        if (kb, kt_len, kdk) != (b, t, dk) || (vb, vt_len) != (b, t) {
            eval_bail!("query, key and value shapes do not agree");
        }
        let (q, k, v) = (
            floats(qt, "query")?,
            floats(kt, "key")?,
            floats(vt, "value")?,
        );
        let decay = match (gating, cx.opt_tensor(4)?) {
            (true, Some(d)) => {
                let per_dim = match *d.shape() {
                    [db, dt, n] if db == b && dt == t && n == hkv => false,
                    [db, dt, n] if db == b && dt == t && n == hkv * dk => true,
                    _ => eval_bail!(
                        "decay has shape {:?}, expected [{b}, {t}, {hkv}] or [{b}, {t}, {}]",
                        d.shape(),
                        hkv * dk
                    ),
                };
                Some((floats(d, "decay")?, per_dim))
            }
            (true, None) => eval_bail!("update_rule `{}` needs a decay input", self.update_rule),
            (false, Some(_)) => {
                eval_bail!("update_rule `{}` takes no decay input", self.update_rule)
            }
            (false, None) => None,
        };
        let beta = match (delta, cx.opt_tensor(5)?) {
            (true, Some(bt)) => {
                let n = match *bt.shape() {
                    [bb, bt_len, n] if bb == b && bt_len == t && (n == hkv || n == 1) => n,
                    _ => eval_bail!(
                        "beta has shape {:?}, expected [{b}, {t}, {hkv} or 1]",
                        bt.shape()
                    ),
                };
                Some((floats(bt, "beta")?, n))
            }
            (true, None) => eval_bail!("update_rule `{}` needs a beta input", self.update_rule),
            (false, Some(_)) => {
                eval_bail!("update_rule `{}` takes no beta input", self.update_rule)
            }
            (false, None) => None,
        };
        let state_len = b * hkv * dk * dv;
        let (mut state, state_dtype) = match cx.opt_tensor(3)? {
            Some(p) if p.shape() == [b, hkv, dk, dv] => (floats(p, "past_state")?, p.dtype()),
            Some(p) => eval_bail!(
                "past_state has shape {:?}, expected [{b}, {hkv}, {dk}, {dv}]",
                p.shape()
            ),
            None => (vec![0.0; state_len], dtype),
        };
        let scale = if self.scale == 0.0 {
            1.0 / (dk as f64).sqrt()
        } else {
            self.scale as f64
        };
        let mut out = vec![0.0; b * t * hq * dv];
        for i in 0..t {
            for bi in 0..b {
                for h in 0..hkv {
                    let s = &mut state[(bi * hkv + h) * dk * dv..][..dk * dv];
                    let kv_row = (bi * t + i) * hkv + h;
                    let kr = &k[kv_row * dk..][..dk];
                    let mut vr = v[kv_row * dv..][..dv].to_vec();
                    if let Some((d, per_dim)) = &decay {
                        for kd in 0..dk {
                            let g = if *per_dim {
                                d[kv_row * dk + kd]
                            } else {
                                d[kv_row]
                            };
                            let f = g.exp();
                            s[kd * dv..][..dv].iter_mut().for_each(|x| *x *= f);
                        }
                    }
                    if let Some((bv, n)) = &beta {
                        let bval = bv[(bi * t + i) * n + if *n == 1 { 0 } else { h }];
                        for (m, x) in vr.iter_mut().enumerate() {
                            let retrieved: f64 = (0..dk).map(|kd| s[kd * dv + m] * kr[kd]).sum();
                            *x = bval * (*x - retrieved);
                        }
                    }
                    for kd in 0..dk {
                        for m in 0..dv {
                            s[kd * dv + m] += kr[kd] * vr[m];
                        }
                    }
                }
                for h in 0..hq {
                    let s = &state[(bi * hkv + h / group) * dk * dv..][..dk * dv];
                    let qr = &q[((bi * t + i) * hq + h) * dk..][..dk];
                    let o = &mut out[((bi * t + i) * hq + h) * dv..][..dv];
                    for (m, x) in o.iter_mut().enumerate() {
                        *x = scale * (0..dk).map(|kd| qr[kd] * s[kd * dv + m]).sum::<f64>();
                    }
                }
            }
        }
        Ok(vec![
            val(float_tensor(dtype, vec![b, t, hq * dv], out)?),
            val(float_tensor(state_dtype, vec![b, hkv, dk, dv], state)?),
        ])
    }
}

impl EvalOp for CausalConvWithState {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (xt, wt) = (cx.tensor(0)?, cx.tensor(1)?);
        let dtype = xt.dtype();
        let silu = match self.activation.as_str() {
            "none" => false,
            "silu" | "swish" => true,
            a => eval_bail!("unknown activation `{a}`"),
        };
        let (&[b, c, l], &[wc, 1, k]) = (xt.shape(), wt.shape()) else {
            eval_bail!(
                "input {:?} must be [batch, channels, length] and weight {:?} [channels, 1, kernel]",
                xt.shape(),
                wt.shape()
            );
        };
        if wc != c || k == 0 {
            eval_bail!("weight {:?} does not fit {c} channels", wt.shape());
        }
        let x = floats(xt, "input")?;
        let w = floats(wt, "weight")?;
        let bias = match cx.opt_tensor(2)? {
            Some(t) if t.shape() == [c] => floats(t, "bias")?,
            Some(t) => eval_bail!("bias has shape {:?}, expected [{c}]", t.shape()),
            None => vec![0.0; c],
        };
        let past = match cx.opt_tensor(3)? {
            Some(t) if t.shape() == [b, c, k - 1] => floats(t, "past_state")?,
            Some(t) => eval_bail!(
                "past_state has shape {:?}, expected [{b}, {c}, {}]",
                t.shape(),
                k - 1
            ),
            None => vec![0.0; b * c * (k - 1)],
        };
        let rd = rounder(dtype);
        let pl = l + k - 1;
        let mut out = vec![0.0; b * c * l];
        let mut state = vec![0.0; b * c * (k - 1)];
        for bi in 0..b {
            for ch in 0..c {
                let row = bi * c + ch;
                let mut padded = past[row * (k - 1)..][..k - 1].to_vec();
                padded.extend_from_slice(&x[row * l..][..l]);
                let wr = &w[ch * k..][..k];
                for p in 0..l {
                    let y: f64 = wr
                        .iter()
                        .zip(&padded[p..p + k])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                        + bias[ch];
                    let y = rd(y);
                    out[row * l + p] = if silu { y / (1.0 + (-y).exp()) } else { y };
                }
                state[row * (k - 1)..][..k - 1].copy_from_slice(&padded[pl - (k - 1)..]);
            }
        }
        Ok(vec![
            val(float_tensor(dtype, vec![b, c, l], out)?),
            val(float_tensor(dtype, vec![b, c, k - 1], state)?),
        ])
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{CausalConvWithState, LinearAttention};

    use crate::ops::recurrent::test_util::{close, f, run};

    #[test]
    fn linear_rule_accumulates_outer_products() {
        let op = LinearAttention {
            q_num_heads: 1,
            kv_num_heads: 1,
            scale: 1.0,
            update_rule: "linear".into(),
            ..Default::default()
        };
        // Step 0: S = 1 * 2; o = 1 * S = 2. Step 1: S = 2 + 1 * 3 = 5; o = 2 * 5 = 10.
        let inputs = vec![
            f(&[1, 2, 1], &[1.0, 2.0]),
            f(&[1, 2, 1], &[1.0, 1.0]),
            f(&[1, 2, 1], &[2.0, 3.0]),
        ];
        let out = run(op.clone(), inputs.clone(), 2).unwrap();
        close(&out[0], &[1, 2, 1], &[2.0, 10.0]);
        close(&out[1], &[1, 1, 1, 1], &[5.0]);
        // The gated rule needs a decay input.
        let gated = LinearAttention {
            update_rule: "gated".into(),
            ..op
        };
        assert!(run(gated, inputs, 2).is_err());
    }

    #[test]
    fn causal_conv_uses_the_state_as_left_padding() {
        let inputs = vec![
            f(&[1, 1, 3], &[1.0, 2.0, 3.0]),
            f(&[1, 1, 2], &[1.0, 1.0]),
            f(&[1], &[0.5]),
            f(&[1, 1, 1], &[10.0]),
        ];
        let out = run(CausalConvWithState::default(), inputs, 2).unwrap();
        close(&out[0], &[1, 1, 3], &[11.5, 3.5, 5.5]);
        close(&out[1], &[1, 1, 1], &[3.0]);
    }
}
