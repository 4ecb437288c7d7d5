//! `Attention` (opsets 23 to 25): scaled dot-product attention with masks, causal and sliding windows, grouped
//! key/value heads, key/value caches, softcap and a selectable intermediate output.
//!
//! The semantics follow onnx's numpy reference (`op_attention.py`) step by step, including its rounding points:
//! every intermediate that numpy stores as an array of the input dtype is rounded to that dtype here too, so f16
//! and bf16 results match the reference closely even though the arithmetic itself runs in f64.

use jiuzhou_ir::ops::Attention;
use jiuzhou_ir::{DType, Tensor, Value};

use super::{float_tensor, floats, val};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// A function that rounds an f64 to the precision of a float dtype (the identity for f64).
pub(crate) fn rounder(dtype: DType) -> fn(f64) -> f64 {
    use jiuzhou_ir::half::{bf16, f16};
    match dtype {
        DType::F32 => |x| x as f32 as f64,
        DType::F16 => |x| f16::from_f64(x).to_f64(),
        DType::BF16 => |x| bf16::from_f64(x).to_f64(),
        _ => |x| x,
    }
}

/// A 4-D `[batch, heads, seq, head_size]` view of Q, K or V, data in that row-major order.
struct Heads {
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
    data: Vec<f64>,
}

impl Heads {
    fn at(&self, b: usize, h: usize, s: usize) -> &[f64] {
        let o = ((b * self.heads + h) * self.seq + s) * self.size;
        &self.data[o..o + self.size]
    }
}

/// Reads Q, K or V: rank 4 as is, rank 3 `[batch, seq, heads * size]` split into `heads` heads.
fn heads(t: &Tensor, num_heads: Option<i64>, what: &str) -> Result<Heads, EvalError> {
    let data = floats(t, what)?;
    match *t.shape() {
        [batch, heads, seq, size] => Ok(Heads {
            batch,
            heads,
            seq,
            size,
            data,
        }),
        [batch, seq, hidden] => {
            let Some(h) = num_heads.filter(|&h| h > 0) else {
                eval_bail!(
                    "{what} is 3-D, so q_num_heads and kv_num_heads must be positive attributes"
                );
            };
            let heads = h as usize;
            if hidden % heads != 0 {
                eval_bail!("{what} hidden size {hidden} is not a multiple of {heads} heads");
            }
            let size = hidden / heads;
            // [b, s, h, d] -> [b, h, s, d].
            let mut out = vec![0.0; data.len()];
            for b in 0..batch {
                for s in 0..seq {
                    for hh in 0..heads {
                        for d in 0..size {
                            out[((b * heads + hh) * seq + s) * size + d] =
                                data[((b * seq + s) * heads + hh) * size + d];
                        }
                    }
                }
            }
            Ok(Heads {
                batch,
                heads,
                seq,
                size,
                data: out,
            })
        }
        _ => eval_bail!("{what} must be 3-D or 4-D, got shape {:?}", t.shape()),
    }
}

/// Appends `cur` to the cache `past` along the sequence axis (both `[batch, heads, seq, size]`).
fn concat_cache(past: Option<&Tensor>, cur: Heads, what: &str) -> Result<Heads, EvalError> {
    let Some(past) = past else { return Ok(cur) };
    let p = heads(past, None, what)?;
    if past.rank() != 4 || p.batch != cur.batch || p.heads != cur.heads || p.size != cur.size {
        eval_bail!(
            "{what} has shape {:?}, which does not fit [{}, {}, *, {}]",
            past.shape(),
            cur.batch,
            cur.heads,
            cur.size
        );
    }
    let seq = p.seq + cur.seq;
    let mut data = Vec::with_capacity(cur.batch * cur.heads * seq * cur.size);
    for b in 0..cur.batch {
        for h in 0..cur.heads {
            for s in 0..p.seq {
                data.extend_from_slice(p.at(b, h, s));
            }
            for s in 0..cur.seq {
                data.extend_from_slice(cur.at(b, h, s));
            }
        }
    }
    Ok(Heads { seq, data, ..cur })
}

/// The additive attention mask, broadcast to `[batch, heads, q, kv]` and padded along the key axis.
fn mask_bias(
    mask: &Tensor,
    dims: [usize; 4],
    dtype: DType,
    rd: fn(f64) -> f64,
) -> Result<Vec<f64>, EvalError> {
    let shape = mask.shape();
    let r = shape.len();
    if r == 0 || r > 4 {
        eval_bail!("attn_mask must have rank 1 to 4, got shape {shape:?}");
    }
    let is_bool = mask.dtype() == DType::Bool;
    let vals: Vec<f64> = if is_bool {
        // True attends (0), false masks (-inf).
        mask.to_i64_vec()
            .unwrap_or_default()
            .into_iter()
            .map(|x| if x != 0 { 0.0 } else { f64::NEG_INFINITY })
            .collect()
    } else {
        if mask.dtype() != dtype {
            eval_bail!("attn_mask has dtype {}, Q has {dtype}", mask.dtype());
        }
        floats(mask, "attn_mask")?.into_iter().map(rd).collect()
    };
    let kv = dims[3];
    let m = shape[r - 1];
    if m > kv {
        eval_bail!("attn_mask covers {m} keys but there are only {kv}");
    }
    for a in 0..r - 1 {
        let (md, td) = (shape[a], dims[4 - r + a]);
        if md != 1 && md != td {
            eval_bail!("attn_mask shape {shape:?} does not broadcast to {dims:?}");
        }
    }
    let mstrides = crate::kernels::strides(shape);
    let mut out = Vec::with_capacity(dims.iter().product());
    let mut idx = [0usize; 4];
    for b in 0..dims[0] {
        idx[0] = b;
        for h in 0..dims[1] {
            idx[1] = h;
            for i in 0..dims[2] {
                idx[2] = i;
                // Offset of the row without the key axis.
                let mut row = 0;
                for a in 0..r - 1 {
                    let t = idx[4 - r + a];
                    row += if shape[a] == 1 { 0 } else { t * mstrides[a] };
                }
                for j in 0..kv {
                    out.push(if j < m {
                        vals[row + j]
                    } else {
                        // Keys past the mask's end are masked out.
                        f64::NEG_INFINITY
                    });
                }
            }
        }
    }
    Ok(out)
}

impl EvalOp for Attention {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let (qt, kt, vt) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
        let dtype = qt.dtype();
        if kt.dtype() != dtype || vt.dtype() != dtype {
            eval_bail!(
                "Q, K and V must share a dtype, got {}, {} and {}",
                dtype,
                kt.dtype(),
                vt.dtype()
            );
        }
        let rank = qt.rank();
        if kt.rank() != rank || vt.rank() != rank {
            eval_bail!("Q, K and V must have the same rank");
        }
        let rd = rounder(dtype);
        let q = heads(qt, self.q_num_heads, "Q")?;
        let k = heads(kt, self.kv_num_heads, "K")?;
        let v = heads(vt, self.kv_num_heads, "V")?;
        if k.batch != q.batch || v.batch != q.batch {
            eval_bail!("Q, K and V must have the same batch size");
        }
        if k.size != q.size {
            eval_bail!("Q head size {} differs from K head size {}", q.size, k.size);
        }
        if v.heads != k.heads || v.seq != k.seq {
            eval_bail!("K and V must have the same heads and sequence length");
        }
        let past_key = cx.opt_tensor(4)?;
        let past_value = cx.opt_tensor(5)?;
        if past_key.is_some() != past_value.is_some() {
            eval_bail!("past_key and past_value must be given together");
        }
        let nonpad = cx.opt_ints(6)?;
        if nonpad.is_some() && past_key.is_some() {
            eval_bail!("nonpad_kv_seqlen cannot be combined with past_key and past_value");
        }
        if let Some(n) = nonpad.as_ref().filter(|n| n.len() != q.batch) {
            eval_bail!(
                "nonpad_kv_seqlen has {} entries for batch {}",
                n.len(),
                q.batch
            );
        }
        for p in [past_key, past_value].into_iter().flatten() {
            if p.dtype() != dtype {
                eval_bail!("past key/value have dtype {}, Q has {dtype}", p.dtype());
            }
        }
        let past_len = past_key.map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
        let k = concat_cache(past_key.map(|t| &**t), k, "past_key")?;
        let v = concat_cache(past_value.map(|t| &**t), v, "past_value")?;
        if k.seq != v.seq {
            eval_bail!("present key and value have different lengths");
        }
        let (batch, hq, hkv, sq, kv) = (q.batch, q.heads, k.heads, q.seq, k.seq);
        if hkv == 0 || hq % hkv != 0 {
            eval_bail!("{hq} query heads cannot share {hkv} key/value heads");
        }
        let group = hq / hkv;

        // Scale: sqrt(scale) multiplies both Q and K, rounded to the input dtype as the reference does.
        let scale = match self.scale {
            Some(s) => s as f64,
            None => 1.0 / (q.size as f64).sqrt(),
        };
        let s = rd(scale.sqrt());

        // The additive bias [batch, hq, sq, kv].
        let dims = [batch, hq, sq, kv];
        let n_scores = dims.iter().product::<usize>();
        let mut bias = match cx.opt_tensor(3)? {
            Some(m) => mask_bias(m, dims, dtype, rd)?,
            None => vec![0.0; n_scores],
        };
        let offset = |b: usize| -> i64 {
            match &nonpad {
                Some(n) if past_key.is_none() => n[b] - sq as i64,
                _ => past_len as i64,
            }
        };
        let (left, right) = (self.left_window_size, self.right_window_size);
        let windowed = left >= 0 || right >= 0;
        let mut at = 0;
        for b in 0..batch {
            let off = offset(b);
            for _h in 0..hq {
                for i in 0..sq {
                    for j in 0..kv {
                        let diff = i as i64 + off - j as i64;
                        let mut add = 0.0;
                        if self.is_causal != 0 && diff < 0 {
                            add += f64::NEG_INFINITY;
                        }
                        if windowed && ((left >= 0 && diff > left) || (right >= 0 && -diff > right))
                        {
                            add += f64::NEG_INFINITY;
                        }
                        if nonpad.as_ref().is_some_and(|n| j as i64 >= n[b]) {
                            add += f64::NEG_INFINITY;
                        }
                        bias[at] += add;
                        at += 1;
                    }
                }
            }
        }

        // Scores, softcap, bias.
        let softcap = self.softcap as f64;
        let mut qk = vec![0.0; n_scores];
        let mut with_bias = vec![0.0; n_scores];
        let mut at = 0;
        for b in 0..batch {
            for h in 0..hq {
                for i in 0..sq {
                    let qrow: Vec<f64> = q.at(b, h, i).iter().map(|&x| rd(x * s)).collect();
                    for j in 0..kv {
                        let krow = k.at(b, h / group, j);
                        let dot: f64 = qrow.iter().zip(krow).map(|(&a, &k)| a * rd(k * s)).sum();
                        let mut x = rd(dot);
                        if softcap > 0.0 {
                            x = rd(rd(rd(x / softcap).tanh()) * softcap);
                        }
                        qk[at] = x;
                        with_bias[at] = rd(x + bias[at]);
                        at += 1;
                    }
                }
            }
        }

        // Softmax over keys, in softmax_precision if given.
        let sp = match self.softmax_precision {
            Some(code) => DType::from_onnx_code(code)
                .filter(|d| d.is_float())
                .ok_or_else(|| {
                    EvalError::new(format!("softmax_precision {code} is not a float type"))
                })?,
            None => dtype,
        };
        let srd = rounder(sp);
        let mut probs = vec![0.0; n_scores];
        for r in 0..n_scores / kv.max(1) {
            let row = &with_bias[r * kv..(r + 1) * kv];
            let row: Vec<f64> = row.iter().map(|&x| srd(x)).collect();
            let max = row.iter().copied().fold(f64::NEG_INFINITY, |m, x| {
                if m.is_nan() || x.is_nan() {
                    f64::NAN
                } else {
                    m.max(x)
                }
            });
            let safe = if max == f64::NEG_INFINITY { 0.0 } else { max };
            let e: Vec<f64> = row.iter().map(|&x| srd(srd(x - safe).exp())).collect();
            // numpy sums bf16 (an ml_dtypes type) one element at a time, rounding after every step.
            let mut sum = if sp == DType::BF16 {
                e.iter().fold(0.0, |acc, &x| srd(acc + x))
            } else {
                srd(e.iter().sum())
            };
            if sum == 0.0 {
                sum = 1.0;
            }
            // A row whose bias masks every key attends nothing.
            let all_masked = bias[r * kv..(r + 1) * kv]
                .iter()
                .all(|&x| x == f64::NEG_INFINITY);
            for j in 0..kv {
                probs[r * kv + j] = if all_masked { 0.0 } else { srd(e[j] / sum) };
            }
        }
        let probs: Vec<f64> = probs.into_iter().map(rd).collect();

        let qk_out = match self.qk_matmul_output_mode {
            0 | 1 => qk,
            2 => with_bias,
            3 => probs.clone(),
            m => eval_bail!("qk_matmul_output_mode must be 0 to 3, got {m}"),
        };

        // Y = probs @ V.
        let dv = v.size;
        let mut y = vec![0.0; batch * hq * sq * dv];
        for b in 0..batch {
            for h in 0..hq {
                for i in 0..sq {
                    let prow = &probs[((b * hq + h) * sq + i) * kv..][..kv];
                    let yrow = &mut y[((b * hq + h) * sq + i) * dv..][..dv];
                    for (j, &p) in prow.iter().enumerate() {
                        for (o, &x) in yrow.iter_mut().zip(v.at(b, h / group, j)) {
                            *o += p * x;
                        }
                    }
                    yrow.iter_mut().for_each(|o| *o = rd(*o));
                }
            }
        }
        let y = if rank == 3 {
            // [b, h, s, d] -> [b, s, h * d].
            let mut out = vec![0.0; y.len()];
            for b in 0..batch {
                for h in 0..hq {
                    for i in 0..sq {
                        for d in 0..dv {
                            out[((b * sq + i) * hq + h) * dv + d] =
                                y[((b * hq + h) * sq + i) * dv + d];
                        }
                    }
                }
            }
            float_tensor(dtype, vec![batch, sq, hq * dv], out)?
        } else {
            float_tensor(dtype, vec![batch, hq, sq, dv], y)?
        };
        let mut outs = vec![val(y)];
        if cx.num_outputs > 1 {
            outs.push(val(float_tensor(
                dtype,
                vec![batch, hkv, kv, k.size],
                k.data,
            )?));
        }
        if cx.num_outputs > 2 {
            outs.push(val(float_tensor(dtype, vec![batch, hkv, kv, dv], v.data)?));
        }
        if cx.num_outputs > 3 {
            outs.push(val(float_tensor(dtype, dims.to_vec(), qk_out)?));
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::Tensor;
    use jiuzhou_ir::ops::Attention;

    use crate::ops::recurrent::test_util::{close, f, run};

    /// One head, two positions, head size 1: Q = K = [1, 2], V = [10, 20], scale 1.
    fn qkv() -> Vec<Option<Tensor>> {
        vec![
            f(&[1, 1, 2, 1], &[1.0, 2.0]),
            f(&[1, 1, 2, 1], &[1.0, 2.0]),
            f(&[1, 1, 2, 1], &[10.0, 20.0]),
        ]
    }

    fn softmax2(a: f32, b: f32) -> (f32, f32) {
        let (ea, eb) = (a.exp(), b.exp());
        (ea / (ea + eb), eb / (ea + eb))
    }

    #[test]
    fn plain_and_causal() {
        let op = Attention {
            scale: Some(1.0),
            ..Default::default()
        };
        let y = run(op.clone(), qkv(), 1).unwrap();
        let (p0, p1) = softmax2(1.0, 2.0);
        let (r0, r1) = softmax2(2.0, 4.0);
        close(
            &y[0],
            &[1, 1, 2, 1],
            &[10.0 * p0 + 20.0 * p1, 10.0 * r0 + 20.0 * r1],
        );
        let causal = Attention { is_causal: 1, ..op };
        let y = run(causal, qkv(), 1).unwrap();
        close(&y[0], &[1, 1, 2, 1], &[10.0, 10.0 * r0 + 20.0 * r1]);
    }

    #[test]
    fn cache_mask_and_outputs() {
        let op = Attention {
            scale: Some(1.0),
            qk_matmul_output_mode: 0,
            ..Default::default()
        };
        // The past holds the first position; the new step is the second.
        let inputs = vec![
            f(&[1, 1, 1, 1], &[2.0]),
            f(&[1, 1, 1, 1], &[2.0]),
            f(&[1, 1, 1, 1], &[20.0]),
            Some(Tensor::from_vec(vec![1, 1], vec![false]).unwrap()),
            f(&[1, 1, 1, 1], &[1.0]),
            f(&[1, 1, 1, 1], &[10.0]),
        ];
        let out = run(op, inputs, 4).unwrap();
        // The mask covers only key 0 (masked); key 1 is padded as masked too, so the row is fully masked: Y = 0.
        close(&out[0], &[1, 1, 1, 1], &[0.0]);
        close(&out[1], &[1, 1, 2, 1], &[1.0, 2.0]);
        close(&out[2], &[1, 1, 2, 1], &[10.0, 20.0]);
        close(&out[3], &[1, 1, 1, 2], &[2.0, 4.0]);
    }

    #[test]
    fn grouped_heads_in_3d() {
        // Two query heads share one key/value head; hidden sizes 2 (Q) and 1 (K, V).
        let op = Attention {
            q_num_heads: Some(2),
            kv_num_heads: Some(1),
            ..Default::default()
        };
        let y = run(
            op,
            vec![
                f(&[1, 1, 2], &[1.0, 2.0]),
                f(&[1, 1, 1], &[3.0]),
                f(&[1, 1, 1], &[7.0]),
            ],
            1,
        )
        .unwrap();
        close(&y[0], &[1, 1, 2], &[7.0, 7.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let op = Attention::default();
        // 3-D inputs without head counts.
        assert!(run(op.clone(), vec![f(&[1, 1, 2], &[1.0, 2.0]); 3], 1).is_err());
        // Mismatched head sizes.
        let bad = vec![
            f(&[1, 1, 1, 2], &[1.0, 2.0]),
            f(&[1, 1, 1, 1], &[1.0]),
            f(&[1, 1, 1, 1], &[1.0]),
        ];
        assert!(run(op, bad, 1).is_err());
    }
}
