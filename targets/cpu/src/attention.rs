//! Scaled dot-product `Attention` (as the e-graph's pattern rules produce it) for 4-D `[batch, heads, seq, size]`
//! Q, K and V, grouped key/value heads, an optional additive f32 mask (rank 1 to 4, broadcast; keys past its end
//! are masked) and `is_causal`; other forms (past key/value, windows, softcap, bool masks, extra outputs) run the
//! reference.
//!
//! Per (batch, head): `S = Q·Kᵀ·scale` through the `gemm` crate (small heads: a direct loop, cheaper than a
//! `gemm` call's set-up), the mask and causal bias added, a row softmax as the reference's (NaN propagates through
//! the maximum, a fully masked row attends nothing), then `Y = P·V` the same way. Heads are independent: with
//! threads, large attentions run one head per task (each head computed as on one thread). The reference scales Q and K by `√scale` each; here the product is scaled once, which differs
//! only in rounding.

use crate::ExecError;
use crate::linalg::raw_gemm;
use crate::native::{In, NativeKernel, numel};
use crate::norm::exp_f32;
use crate::parallel::{MIN_CHUNK, Parallel};

/// An Attention node of the supported form.
pub struct Attention {
    /// `scale` (default `1/√size`).
    pub scale: Option<f32>,
    /// Mask keys after the query's position.
    pub causal: bool,
}

fn dims4(s: &[usize], what: &str) -> Result<[usize; 4], ExecError> {
    s.try_into().map_err(|_| {
        ExecError::new(format!(
            "Attention: {what} must be 4-D [batch, heads, seq, size], got {s:?}"
        ))
    })
}

impl Attention {
    fn check(&self, ins: &[&[usize]]) -> Result<([usize; 4], usize, usize), ExecError> {
        let q = dims4(ins[0], "Q")?;
        let k = dims4(ins[1], "K")?;
        let v = dims4(ins[2], "V")?;
        if k[0] != q[0] || v[0] != q[0] || k[3] != q[3] || v[1] != k[1] || v[2] != k[2] {
            return Err(ExecError::new(format!(
                "Attention: Q {q:?}, K {k:?} and V {v:?} do not fit"
            )));
        }
        if k[1] == 0 || q[1] % k[1] != 0 {
            return Err(ExecError::new(format!(
                "Attention: {} query heads cannot share {} key/value heads",
                q[1], k[1]
            )));
        }
        if let Some(m) = ins.get(3) {
            let r = m.len();
            let dims = [q[0], q[1], q[2], k[2]];
            if r == 0 || r > 4 || m[r - 1] > k[2] {
                return Err(ExecError::new(format!(
                    "Attention: attn_mask of shape {m:?} does not fit {dims:?}"
                )));
            }
            for a in 0..r - 1 {
                if m[a] != 1 && m[a] != dims[4 - r + a] {
                    return Err(ExecError::new(format!(
                        "attn_mask shape {m:?} does not broadcast to {dims:?}"
                    )));
                }
            }
        }
        Ok((q, k[2], v[3]))
    }
}

impl NativeKernel for Attention {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let (q, _, dv) = self.check(ins)?;
        Ok(vec![q[0], q[1], q[2], dv])
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let shapes: Vec<&[usize]> = ins.iter().map(|i| i.shape).collect();
        let ([batch, hq, sq, d], kv, dv) = self.check(&shapes)?;
        for i in ins {
            if i.data.len() != numel(i.shape)? {
                return Err(ExecError::new(
                    "an Attention input does not match its shape",
                ));
            }
        }
        if out.len() != numel(&[batch, hq, sq, dv])? {
            return Err(ExecError::new(
                "the Attention output does not match its shape",
            ));
        }
        if out.is_empty() {
            return Ok(());
        }
        let hkv = ins[1].shape[1];
        let group = hq / hkv;
        let scale = match self.scale {
            Some(s) => s as f64,
            None => 1.0 / (d as f64).sqrt(),
        };
        let s = scale.sqrt() as f32;
        let alpha = s * s;
        let (q, k, v) = (ins[0].data, ins[1].data, ins[2].data);
        let mask = ins.get(3);
        let scores_len = numel(&[sq, kv])?;
        // Heads are independent: with threads, one (batch, head) per task once the whole is worth splitting.
        let work = batch * hq * sq * kv * (d + dv);
        let split = work >= 4 * MIN_CHUNK;
        par.for_each_item(out, sq * dv, split, |bh, yh| {
            let (b, h) = (bh / hq, bh % hq);
            let mut scores = vec![0.0f32; scores_len];
            let qh = &q[bh * sq * d..][..sq * d];
            let kh = &k[(b * hkv + h / group) * kv * d..][..kv * d];
            let vh = &v[(b * hkv + h / group) * kv * dv..][..kv * dv];
            if small(sq, kv, d, dv) {
                small_qk(qh, kh, &mut scores, d, alpha);
            } else {
                // SAFETY: `qh` is [sq, d], `kh` is [kv, d] (read as its transpose), `scores` is [sq, kv].
                unsafe {
                    raw_gemm(
                        sq,
                        kv,
                        d,
                        scores.as_mut_ptr(),
                        kv as isize,
                        false,
                        qh.as_ptr(),
                        d as isize,
                        1,
                        kh.as_ptr(),
                        1,
                        d as isize,
                        alpha,
                        gemm::Parallelism::None,
                    )
                };
            }
            for (i, row) in scores.chunks_exact_mut(kv.max(1)).enumerate() {
                let mut all_masked = true;
                let mrow = mask.map(|m| mask_row(m, [b, h, i]));
                for (j, x) in row.iter_mut().enumerate() {
                    let mut bias = match (&mrow, mask) {
                        (Some(off), Some(m)) => {
                            if j < m.shape[m.shape.len() - 1] {
                                m.data[off + j]
                            } else {
                                f32::NEG_INFINITY
                            }
                        }
                        _ => 0.0,
                    };
                    if self.causal && j > i {
                        bias = f32::NEG_INFINITY;
                    }
                    all_masked &= bias == f32::NEG_INFINITY;
                    *x += bias;
                }
                softmax_row(row, all_masked);
            }
            if small(sq, kv, d, dv) {
                small_pv(&scores, vh, yh, kv, dv);
            } else {
                // SAFETY: `scores` is [sq, kv], `vh` is [kv, dv], `yh` is [sq, dv].
                unsafe {
                    raw_gemm(
                        sq,
                        dv,
                        kv,
                        yh.as_mut_ptr(),
                        dv as isize,
                        false,
                        scores.as_ptr(),
                        kv as isize,
                        1,
                        vh.as_ptr(),
                        dv as isize,
                        1,
                        1.0,
                        gemm::Parallelism::None,
                    )
                };
            }
        });
        Ok(())
    }
}

/// Whether a head's products are small enough for [`small_qk`] and [`small_pv`]: below a few thousand
/// multiply-adds a `gemm` call costs more in set-up than in arithmetic.
fn small(sq: usize, kv: usize, d: usize, dv: usize) -> bool {
    sq * kv * d.max(dv) <= 16 * 1024
}

/// `scores[i, j] = alpha·(q[i, :]·k[j, :])` for `q` `[sq, d]` and `k` `[kv, d]`; each dot product in eight
/// interleaved partial sums (a vector register), added pairwise at the end.
fn small_qk(q: &[f32], k: &[f32], scores: &mut [f32], d: usize, alpha: f32) {
    let kv = k.len() / d.max(1);
    for (qi, row) in q
        .chunks_exact(d.max(1))
        .zip(scores.chunks_exact_mut(kv.max(1)))
    {
        for (kj, s) in k.chunks_exact(d.max(1)).zip(row.iter_mut()) {
            let mut acc = [0.0f32; 8];
            let (qc, kc) = (qi.chunks_exact(8), kj.chunks_exact(8));
            let (qr, kr) = (qc.remainder(), kc.remainder());
            for (a, b) in qc.zip(kc) {
                for l in 0..8 {
                    acc[l] += a[l] * b[l];
                }
            }
            for (l, (&a, &b)) in qr.iter().zip(kr).enumerate() {
                acc[l] += a * b;
            }
            let sum =
                ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
            *s = alpha * sum;
        }
    }
}

/// `y[i, :] = Σ_j p[i, j]·v[j, :]` for `p` `[sq, kv]` and `v` `[kv, dv]`, `j` in order.
fn small_pv(p: &[f32], v: &[f32], y: &mut [f32], kv: usize, dv: usize) {
    for (pi, yi) in p.chunks_exact(kv.max(1)).zip(y.chunks_exact_mut(dv.max(1))) {
        yi.fill(0.0);
        for (&w, vj) in pi.iter().zip(v.chunks_exact(dv.max(1))) {
            for (o, &x) in yi.iter_mut().zip(vj) {
                *o += w * x;
            }
        }
    }
}

/// The offset of the mask row of query `i` of head `h` of batch `b` (the mask broadcast to `[b, h, i, keys]`).
fn mask_row(m: &In<'_>, idx: [usize; 3]) -> usize {
    let r = m.shape.len();
    let mut strides = vec![1usize; r];
    for a in (0..r.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * m.shape[a + 1];
    }
    (0..r - 1)
        .map(|a| {
            let t = idx[4 - r + a];
            if m.shape[a] == 1 { 0 } else { t * strides[a] }
        })
        .sum()
}

/// The reference's attention softmax of one row: the maximum propagates NaN; a fully masked row gives zeros.
fn softmax_row(row: &mut [f32], all_masked: bool) {
    if all_masked {
        row.fill(0.0);
        return;
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| {
        if m.is_nan() || x.is_nan() {
            f32::NAN
        } else {
            m.max(x)
        }
    });
    let safe = if max == f32::NEG_INFINITY { 0.0 } else { max };
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        *x = exp_f32(*x - safe);
        sum += *x as f64;
    }
    let mut sum = sum as f32;
    if sum == 0.0 {
        sum = 1.0;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}
