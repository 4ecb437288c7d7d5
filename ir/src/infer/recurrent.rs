//! Sequence models: recurrent cells (RNN, GRU, LSTM), attention, rotary embeddings, causal convolution with state.
//!
//! Dims follow the ONNX operator specifications; a dim computed from unknown (symbolic) dims becomes a fresh
//! symbol, except where it is a plain copy of an input dim.

use super::{InferCx, InferError, InferOp};
use crate::ops::*;
use crate::{DType, Dim, TensorType, ValueType};

/// `a + b`, or a fresh symbol when either is unknown (`a` itself when `b` is a known 0).
pub(crate) fn dim_add(cx: &mut InferCx<'_>, a: &Dim, b: &Dim, hint: &str) -> Dim {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => Dim::Known(x + y),
        (a, Dim::Known(0)) => a.clone(),
        (Dim::Known(0), b) => b.clone(),
        _ => cx.fresh(hint),
    }
}

/// `a * n / d` for a known ratio, or a fresh symbol when `a` is unknown or the division is not exact.
pub(crate) fn dim_scale(cx: &mut InferCx<'_>, a: &Dim, n: usize, d: usize, hint: &str) -> Dim {
    match a {
        Dim::Known(x) if d > 0 && (x * n).is_multiple_of(d) => Dim::Known(x * n / d),
        Dim::Sym(_) if n == d => a.clone(),
        _ => cx.fresh(hint),
    }
}

/// The type of a float tensor with `dims`.
pub(crate) fn tensor_of(dtype: DType, dims: Vec<Dim>) -> ValueType {
    ValueType::Tensor(TensorType::new(dtype, dims))
}

/// Checks that input `i` is a float tensor and returns its dtype.
pub(crate) fn float_input(cx: &InferCx<'_>, i: usize) -> Result<DType, InferError> {
    let d = cx.tensor(i)?.dtype;
    if !d.is_float() {
        crate::infer_bail!("input {i} should be a float tensor, got {d}");
    }
    Ok(d)
}

/// A positive head-count attribute.
fn heads_attr(v: Option<i64>, name: &str) -> Result<usize, InferError> {
    match v {
        Some(h) if h > 0 => Ok(h as usize),
        _ => crate::infer_bail!("3-D inputs need a positive `{name}` attribute"),
    }
}

impl InferOp for Attention {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_input(cx, 0)?;
        for i in [1, 2] {
            if cx.tensor(i)?.dtype != dtype {
                crate::infer_bail!("Q, K and V must share a dtype");
            }
        }
        let (q, k, v) = (cx.dims(0)?, cx.dims(1)?, cx.dims(2)?);
        let past = cx.dims(4).ok().flatten();
        let (Some(q), Some(k), Some(v)) = (q, k, v) else {
            let t = ValueType::Tensor(TensorType::unranked(dtype));
            return Ok(vec![t; cx.num_outputs.max(1)]);
        };
        if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
            crate::infer_bail!("Q, K and V must all be 3-D or all 4-D");
        }
        // [batch, heads, seq, head_size] of Q, K and V.
        let (batch, hq, sq, hkv, skv, dk, dv);
        if q.len() == 4 {
            (batch, hq, sq) = (q[0].clone(), q[1].clone(), q[2].clone());
            (hkv, skv, dk) = (k[1].clone(), k[2].clone(), k[3].clone());
            dv = v[3].clone();
        } else {
            let nq = heads_attr(self.q_num_heads, "q_num_heads")?;
            let nkv = heads_attr(self.kv_num_heads, "kv_num_heads")?;
            (batch, sq) = (q[0].clone(), q[1].clone());
            hq = Dim::Known(nq);
            hkv = Dim::Known(nkv);
            skv = k[1].clone();
            dk = dim_scale(cx, &k[2], 1, nkv, "head_size");
            dv = dim_scale(cx, &v[2], 1, nkv, "v_head_size");
        }
        let total = match past.and_then(|p| p.get(2)) {
            Some(p) => dim_add(cx, p, &skv, "total_seq"),
            None if cx.has_input(4) => cx.fresh("total_seq"),
            None => skv,
        };
        let y = if q.len() == 4 {
            vec![batch.clone(), hq.clone(), sq.clone(), dv.clone()]
        } else {
            let hidden = match (&hq, &dv) {
                (Dim::Known(h), Dim::Known(d)) => Dim::Known(h * d),
                _ => cx.fresh("hidden"),
            };
            vec![batch.clone(), sq.clone(), hidden]
        };
        let mut out = vec![tensor_of(dtype, y)];
        out.push(tensor_of(
            dtype,
            vec![batch.clone(), hkv.clone(), total.clone(), dk],
        ));
        out.push(tensor_of(
            dtype,
            vec![batch.clone(), hkv, total.clone(), dv],
        ));
        out.push(tensor_of(dtype, vec![batch, hq, sq, total]));
        out.truncate(cx.num_outputs.max(1));
        Ok(out)
    }
}

/// Output types of RNN, GRU and LSTM: `Y`, `Y_h` and (LSTM) `Y_c`.
fn infer_recurrent(
    cx: &mut InferCx<'_>,
    gates: usize,
    direction: &str,
    hidden_size: Option<i64>,
    layout: i64,
) -> Result<Vec<ValueType>, InferError> {
    let dtype = float_input(cx, 0)?;
    let dirs = match direction {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => crate::infer_bail!("unknown direction `{d}`"),
    };
    let hidden = match hidden_size {
        Some(h) if h > 0 => Dim::Known(h as usize),
        Some(h) => crate::infer_bail!("hidden_size {h} must be positive"),
        None => match (cx.dims(2)?, cx.dims(1)?) {
            (Some([_, _, h]), _) => h.clone(),
            (_, Some([_, gh, _])) => dim_scale(cx, &gh.clone(), 1, gates, "hidden"),
            _ => cx.fresh("hidden"),
        },
    };
    let Some(x) = cx.dims(0)? else {
        let t = ValueType::Tensor(TensorType::unranked(dtype));
        return Ok(vec![t; cx.num_outputs.max(1)]);
    };
    let [a, b, _] = x else {
        crate::infer_bail!("X must be 3-D, got rank {}", x.len());
    };
    let dirs = Dim::Known(dirs);
    let (y, state) = if layout == 0 {
        (
            vec![a.clone(), dirs.clone(), b.clone(), hidden.clone()],
            vec![dirs, b.clone(), hidden],
        )
    } else {
        (
            vec![a.clone(), b.clone(), dirs.clone(), hidden.clone()],
            vec![a.clone(), dirs, hidden],
        )
    };
    let mut out = vec![tensor_of(dtype, y)];
    out.push(tensor_of(dtype, state.clone()));
    if gates == 4 {
        out.push(tensor_of(dtype, state));
    }
    out.truncate(cx.num_outputs.max(1));
    Ok(out)
}

impl InferOp for RNN {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_recurrent(cx, 1, &self.direction, self.hidden_size, self.layout)
    }
}

impl InferOp for GRU {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_recurrent(cx, 3, &self.direction, self.hidden_size, self.layout)
    }
}

impl InferOp for LSTM {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        infer_recurrent(cx, 4, &self.direction, self.hidden_size, self.layout)
    }
}

impl InferOp for RotaryEmbedding {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        float_input(cx, 0)?;
        if let Some(r) = cx.tensor(0)?.rank().filter(|&r| r != 3 && r != 4) {
            crate::infer_bail!("input must be 3-D or 4-D, got rank {r}");
        }
        super::same_as_input(cx, 0)
    }
}

impl InferOp for LinearAttention {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_input(cx, 0)?;
        let (hq, hkv) = (self.q_num_heads, self.kv_num_heads);
        if hq <= 0 || hkv <= 0 || hq % hkv != 0 {
            crate::infer_bail!(
                "q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})"
            );
        }
        let (hq, hkv) = (hq as usize, hkv as usize);
        let state_dtype = cx.opt_tensor(3)?.map_or(dtype, |t| t.dtype);
        let (q, v) = (
            cx.dims(0)?.map(<[Dim]>::to_vec),
            cx.dims(2)?.map(<[Dim]>::to_vec),
        );
        let (Some(q), Some(v)) = (q, v) else {
            return Ok(vec![
                ValueType::Tensor(TensorType::unranked(dtype)),
                ValueType::Tensor(TensorType::unranked(state_dtype)),
            ]);
        };
        let ([b, t, qh], [_, _, vh]) = (&q[..], &v[..]) else {
            crate::infer_bail!("query, key and value must be 3-D");
        };
        let dk = dim_scale(cx, qh, 1, hq, "d_k");
        let dv = dim_scale(cx, vh, 1, hkv, "d_v");
        let out_h = dim_scale(cx, vh, hq, hkv, "hidden");
        Ok(vec![
            tensor_of(dtype, vec![b.clone(), t.clone(), out_h]),
            tensor_of(state_dtype, vec![b.clone(), Dim::Known(hkv), dk, dv]),
        ])
    }
}

impl InferOp for CausalConvWithState {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let dtype = float_input(cx, 0)?;
        let x = cx.dims(0)?.map(<[Dim]>::to_vec);
        let w = cx.dims(1)?.map(<[Dim]>::to_vec);
        let Some(x) = x else {
            let t = ValueType::Tensor(TensorType::unranked(dtype));
            return Ok(vec![t.clone(), t]);
        };
        let [b, c, _] = &x[..] else {
            crate::infer_bail!("input must be 3-D, got rank {}", x.len());
        };
        let state_len = match w.as_deref() {
            Some([_, _, Dim::Known(k)]) if *k > 0 => Dim::Known(k - 1),
            Some([_, _, _]) | None => cx.fresh("state_len"),
            Some(w) => crate::infer_bail!("weight must be 3-D, got rank {}", w.len()),
        };
        Ok(vec![
            tensor_of(dtype, x.clone()),
            tensor_of(dtype, vec![b.clone(), c.clone(), state_len]),
        ])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::infer::test_util::infer_outputs;
    use crate::{Tensor, TensorType};

    /// Runs `op`'s inference on typed inputs (`None` = absent) and constants; outputs as text (`f32[2,n_0]`).
    pub(crate) fn check(
        op: &impl InferOp,
        inputs: &[Option<TensorType>],
        consts: &[Option<Tensor>],
        n: usize,
    ) -> Result<Vec<String>, InferError> {
        let tys = infer_outputs(op, inputs, consts, n)?;
        Ok(tys.iter().map(|t| t.to_string()).collect())
    }

    /// A tensor type from dims written as text: numbers are known, anything else a symbol.
    pub(crate) fn ty(dtype: DType, dims: &[&str]) -> Option<TensorType> {
        Some(TensorType::new(
            dtype,
            dims.iter().map(|d| {
                d.parse::<usize>()
                    .map_or_else(|_| Dim::from(*d), Dim::Known)
            }),
        ))
    }

    #[test]
    fn attention_shapes() {
        let f = DType::F32;
        let op = Attention::default();
        let four = [
            ty(f, &["b", "8", "5", "16"]),
            ty(f, &["b", "2", "7", "16"]),
            ty(f, &["b", "2", "7", "32"]),
        ];
        assert_eq!(
            check(&op, &four, &[], 4).unwrap(),
            [
                "f32[b,8,5,32]",
                "f32[b,2,7,16]",
                "f32[b,2,7,32]",
                "f32[b,8,5,7]"
            ]
        );
        let mut cached = four.to_vec();
        cached.extend([
            None,
            ty(f, &["b", "2", "3", "16"]),
            ty(f, &["b", "2", "3", "32"]),
        ]);
        assert_eq!(
            check(&op, &cached, &[], 2).unwrap(),
            ["f32[b,8,5,32]", "f32[b,2,10,16]"]
        );
        let op3 = Attention {
            q_num_heads: Some(4),
            kv_num_heads: Some(2),
            ..Default::default()
        };
        let three = [
            ty(f, &["1", "s", "64"]),
            ty(f, &["1", "t", "32"]),
            ty(f, &["1", "t", "48"]),
        ];
        assert_eq!(check(&op3, &three, &[], 1).unwrap(), ["f32[1,s,96]"]);
        assert!(check(&op, &three, &[], 1).is_err());
    }

    #[test]
    fn recurrent_shapes() {
        let f = DType::F32;
        let lstm = LSTM {
            direction: "bidirectional".into(),
            hidden_size: Some(5),
            ..Default::default()
        };
        let inputs = [
            ty(f, &["s", "b", "3"]),
            ty(f, &["2", "20", "3"]),
            ty(f, &["2", "20", "5"]),
        ];
        assert_eq!(
            check(&lstm, &inputs, &[], 3).unwrap(),
            ["f32[s,2,b,5]", "f32[2,b,5]", "f32[2,b,5]"]
        );
        let gru = GRU {
            layout: 1,
            ..Default::default()
        };
        let inputs = [
            ty(f, &["b", "s", "3"]),
            ty(f, &["1", "12", "3"]),
            ty(f, &["1", "12", "4"]),
        ];
        assert_eq!(
            check(&gru, &inputs, &[], 2).unwrap(),
            ["f32[b,s,1,4]", "f32[b,1,4]"]
        );
        let bad = RNN {
            direction: "sideways".into(),
            ..Default::default()
        };
        assert!(check(&bad, &inputs, &[], 1).is_err());
    }

    #[test]
    fn state_space_shapes() {
        let f = DType::F16;
        let la = LinearAttention {
            q_num_heads: 4,
            kv_num_heads: 2,
            ..Default::default()
        };
        let inputs = [
            ty(f, &["b", "t", "32"]),
            ty(f, &["b", "t", "16"]),
            ty(f, &["b", "t", "24"]),
        ];
        assert_eq!(
            check(&la, &inputs, &[], 2).unwrap(),
            ["f16[b,t,48]", "f16[b,2,8,12]"]
        );
        let conv = CausalConvWithState::default();
        let inputs = [ty(f, &["b", "c", "l"]), ty(f, &["c", "1", "4"])];
        assert_eq!(
            check(&conv, &inputs, &[], 2).unwrap(),
            ["f16[b,c,l]", "f16[b,c,3]"]
        );
        let rot = RotaryEmbedding::default();
        assert_eq!(
            check(&rot, &[ty(f, &["b", "s", "8"])], &[], 1).unwrap(),
            ["f16[b,s,8]"]
        );
        assert!(check(&rot, &[ty(f, &["8"])], &[], 1).is_err());
    }
}
