//! `RNN`, `GRU` and `LSTM` (opset 22): one engine for the three recurrent cells.
//!
//! Every direction and batch entry runs its own recurrence over `sequence_lens[b]` steps (all steps when the input
//! is absent); steps past a sequence's end leave zeros in `Y`, and `Y_h`/`Y_c` hold the state after the last valid
//! step. Activations follow the ONNX list (per direction, with `activation_alpha`/`activation_beta` consumed in
//! order by the functions that take them); `clip` bounds every gate's pre-activation.

use jiuzhou_ir::Value;
use jiuzhou_ir::ops::{GRU, LSTM, RNN};

use super::{float_tensor, floats, val};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// An activation function with its parameters.
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => x.exp().ln_1p(),
        }
    }
}

/// Parses the activation list; alphas and betas are consumed in order by the functions that use them.
fn parse_acts(
    names: &[String],
    alpha: Option<&[f32]>,
    beta: Option<&[f32]>,
) -> Result<Vec<Act>, EvalError> {
    let (mut ai, mut bi) = (0, 0);
    let alpha = alpha.unwrap_or(&[]);
    let beta = beta.unwrap_or(&[]);
    let mut next_a = |d: f64| {
        let v = alpha.get(ai).map_or(d, |&x| x as f64);
        ai += 1;
        v
    };
    let mut next_b = |d: f64| {
        let v = beta.get(bi).map_or(d, |&x| x as f64);
        bi += 1;
        v
    };
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "relu" => Act::Relu,
                "tanh" => Act::Tanh,
                "sigmoid" => Act::Sigmoid,
                "affine" => Act::Affine(next_a(1.0), next_b(0.0)),
                "leakyrelu" => Act::LeakyRelu(next_a(0.01)),
                "thresholdedrelu" => Act::ThresholdedRelu(next_a(1.0)),
                "scaledtanh" => Act::ScaledTanh(next_a(1.0), next_b(1.0)),
                "hardsigmoid" => Act::HardSigmoid(next_a(0.2), next_b(0.5)),
                "elu" => Act::Elu(next_a(1.0)),
                "softsign" => Act::Softsign,
                "softplus" => Act::Softplus,
                other => eval_bail!("unknown activation `{other}`"),
            })
        })
        .collect()
}

/// Which cell runs.
#[derive(Clone, Copy)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// The attributes the three ops share.
struct Common<'a> {
    activations: Option<&'a [String]>,
    alpha: Option<&'a [f32]>,
    beta: Option<&'a [f32]>,
    clip: Option<f32>,
    direction: &'a str,
    hidden_size: Option<i64>,
    layout: i64,
}

fn run(cell: Cell, a: Common<'_>, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
    let (xt, wt, rt) = (cx.tensor(0)?, cx.tensor(1)?, cx.tensor(2)?);
    let dtype = xt.dtype();
    let dirs = match a.direction {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => eval_bail!("unknown direction `{d}`"),
    };
    let g = cell.gates();
    let (&[d0, d1, input], &[wd, wg, wi], &[rd, rg, h]) = (xt.shape(), wt.shape(), rt.shape())
    else {
        eval_bail!(
            "X, W and R must be 3-D, got {:?}, {:?} and {:?}",
            xt.shape(),
            wt.shape(),
            rt.shape()
        );
    };
    if a.hidden_size.is_some_and(|hs| hs != h as i64) {
        eval_bail!(
            "hidden_size {:?} does not match R's last dim {h}",
            a.hidden_size
        );
    }
    if wd != dirs || rd != dirs || wg != g * h || rg != g * h || wi != input {
        eval_bail!(
            "W {:?} and R {:?} do not fit {dirs} directions, {g} gates, hidden size {h} and input size {input}",
            wt.shape(),
            rt.shape()
        );
    }
    let layout1 = a.layout != 0;
    let (seq, batch) = if layout1 { (d1, d0) } else { (d0, d1) };
    let x = floats(xt, "X")?;
    let w = floats(wt, "W")?;
    let r = floats(rt, "R")?;
    let bias = match cx.opt_tensor(3)? {
        Some(t) => {
            if t.shape() != [dirs, 2 * g * h] {
                eval_bail!(
                    "B has shape {:?}, expected [{dirs}, {}]",
                    t.shape(),
                    2 * g * h
                );
            }
            floats(t, "B")?
        }
        None => vec![0.0; dirs * 2 * g * h],
    };
    let lens: Vec<usize> = match cx.opt_ints(4)? {
        Some(l) => {
            if l.len() != batch || l.iter().any(|&n| n < 0 || n as usize > seq) {
                eval_bail!("sequence_lens {l:?} must hold {batch} lengths in 0..={seq}");
            }
            l.into_iter().map(|n| n as usize).collect()
        }
        None => vec![seq; batch],
    };
    let state_shape = if layout1 {
        [batch, dirs, h]
    } else {
        [dirs, batch, h]
    };
    let state = |i: usize, what: &str| -> Result<Vec<f64>, EvalError> {
        match cx.opt_tensor(i)? {
            Some(t) if t.shape() == state_shape => floats(t, what),
            Some(t) => eval_bail!("{what} has shape {:?}, expected {state_shape:?}", t.shape()),
            None => Ok(vec![0.0; dirs * batch * h]),
        }
    };
    let h0 = state(5, "initial_h")?;
    let (c0, peep) = if let Cell::Lstm { .. } = cell {
        let p = match cx.opt_tensor(7)? {
            Some(t) if t.shape() == [dirs, 3 * h] => floats(t, "P")?,
            Some(t) => eval_bail!("P has shape {:?}, expected [{dirs}, {}]", t.shape(), 3 * h),
            None => vec![0.0; dirs * 3 * h],
        };
        (state(6, "initial_c")?, p)
    } else {
        (vec![0.0; dirs * batch * h], vec![])
    };
    let names: Vec<String> = match a.activations {
        Some(n) => n.to_vec(),
        None => cell
            .default_acts()
            .iter()
            .cycle()
            .take(cell.default_acts().len() * dirs)
            .map(|s| s.to_string())
            .collect(),
    };
    let acts = parse_acts(&names, a.alpha, a.beta)?;
    let na = cell.default_acts().len();
    let clip = a.clip.map(|c| c as f64);
    let cl = |v: f64| clip.map_or(v, |c| v.clamp(-c, c));

    let x_at = |t: usize, b: usize| {
        if layout1 {
            (b * seq + t) * input
        } else {
            (t * batch + b) * input
        }
    };
    let s_at = |d: usize, b: usize| {
        if layout1 {
            (b * dirs + d) * h
        } else {
            (d * batch + b) * h
        }
    };
    let y_at = |t: usize, d: usize, b: usize| {
        if layout1 {
            ((b * seq + t) * dirs + d) * h
        } else {
            ((t * dirs + d) * batch + b) * h
        }
    };
    let mut y = vec![0.0; seq * dirs * batch * h];
    let mut yh = vec![0.0; dirs * batch * h];
    let mut yc = vec![0.0; dirs * batch * h];
    for d in 0..dirs {
        let fs = if acts.len() >= na * (d + 1) {
            &acts[na * d..na * (d + 1)]
        } else if acts.len() >= na {
            &acts[..na]
        } else {
            eval_bail!(
                "{} activations given, the cell needs {na} per direction",
                acts.len()
            );
        };
        let reverse = a.direction == "reverse" || d == 1;
        let wd = &w[d * g * h * input..][..g * h * input];
        let rdm = &r[d * g * h * h..][..g * h * h];
        let (wb, rb) = (
            &bias[d * 2 * g * h..][..g * h],
            &bias[(d * 2 + 1) * g * h..][..g * h],
        );
        for b in 0..batch {
            let mut hs = h0[s_at(d, b)..][..h].to_vec();
            let mut cs = c0[s_at(d, b)..][..h].to_vec();
            for step in 0..lens[b] {
                let t = if reverse { lens[b] - 1 - step } else { step };
                let xv = &x[x_at(t, b)..][..input];
                // xw = W x + Wb, hr = R H + Rb for every gate row.
                let xw: Vec<f64> = (0..g * h)
                    .map(|k| {
                        wd[k * input..][..input]
                            .iter()
                            .zip(xv)
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            + wb[k]
                    })
                    .collect();
                let hr: Vec<f64> = (0..g * h)
                    .map(|k| {
                        rdm[k * h..][..h]
                            .iter()
                            .zip(&hs)
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            + rb[k]
                    })
                    .collect();
                let new_h: Vec<f64> = match cell {
                    Cell::Rnn => (0..h).map(|k| fs[0].apply(cl(xw[k] + hr[k]))).collect(),
                    Cell::Gru {
                        linear_before_reset,
                    } => {
                        let z: Vec<f64> = (0..h).map(|k| fs[0].apply(cl(xw[k] + hr[k]))).collect();
                        let rg: Vec<f64> = (0..h)
                            .map(|k| fs[0].apply(cl(xw[h + k] + hr[h + k])))
                            .collect();
                        (0..h)
                            .map(|k| {
                                let rec = if linear_before_reset {
                                    rg[k] * hr[2 * h + k]
                                } else {
                                    let row = &rdm[(2 * h + k) * h..][..h];
                                    row.iter()
                                        .zip(&hs)
                                        .zip(&rg)
                                        .map(|((w, hv), rv)| w * (rv * hv))
                                        .sum::<f64>()
                                        + rb[2 * h + k]
                                };
                                let cand = fs[1].apply(cl(xw[2 * h + k] + rec));
                                (1.0 - z[k]) * cand + z[k] * hs[k]
                            })
                            .collect()
                    }
                    Cell::Lstm { input_forget } => {
                        let p = &peep[d * 3 * h..][..3 * h];
                        let mut out = vec![0.0; h];
                        for k in 0..h {
                            let pre = |gate: usize| xw[gate * h + k] + hr[gate * h + k];
                            let i = fs[0].apply(cl(pre(0) + p[k] * cs[k]));
                            let f = if input_forget {
                                1.0 - i
                            } else {
                                fs[0].apply(cl(pre(2) + p[2 * h + k] * cs[k]))
                            };
                            let c_new = f * cs[k] + i * fs[1].apply(cl(pre(3)));
                            let o = fs[0].apply(cl(pre(1) + p[h + k] * c_new));
                            cs[k] = c_new;
                            out[k] = o * fs[2].apply(c_new);
                        }
                        out
                    }
                };
                hs = new_h;
                y[y_at(t, d, b)..][..h].copy_from_slice(&hs);
            }
            yh[s_at(d, b)..][..h].copy_from_slice(&hs);
            yc[s_at(d, b)..][..h].copy_from_slice(&cs);
        }
    }
    let y_shape = if layout1 {
        vec![batch, seq, dirs, h]
    } else {
        vec![seq, dirs, batch, h]
    };
    let mut outs = vec![val(float_tensor(dtype, y_shape, y)?)];
    if cx.num_outputs > 1 {
        outs.push(val(float_tensor(dtype, state_shape.to_vec(), yh)?));
    }
    if cx.num_outputs > 2 {
        outs.push(val(float_tensor(dtype, state_shape.to_vec(), yc)?));
    }
    Ok(outs)
}

/// The [`Common`] attributes of `$op` (RNN, GRU or LSTM), with its activation names `$activations`.
macro_rules! common {
    ($op:expr, $activations:expr) => {
        Common {
            activations: $activations,
            alpha: $op.activation_alpha.as_deref(),
            beta: $op.activation_beta.as_deref(),
            clip: $op.clip,
            direction: &$op.direction,
            hidden_size: $op.hidden_size,
            layout: $op.layout,
        }
    };
}

impl EvalOp for RNN {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let common = common!(self, Some(&self.activations));
        run(Cell::Rnn, common, cx)
    }
}

impl EvalOp for GRU {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let common = common!(self, self.activations.as_deref());
        let cell = Cell::Gru {
            linear_before_reset: self.linear_before_reset != 0,
        };
        run(cell, common, cx)
    }
}

impl EvalOp for LSTM {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let common = common!(self, self.activations.as_deref());
        let cell = Cell::Lstm {
            input_forget: self.input_forget != 0,
        };
        run(cell, common, cx)
    }
}

#[cfg(test)]
mod tests {
    use jiuzhou_ir::ops::{GRU, LSTM, RNN};

    use crate::ops::recurrent::test_util::{close, f, i, run};

    #[test]
    fn rnn_bias_only_and_sequence_lens() {
        // Zero weights: every step gives tanh(Wb + Rb). Batch 1 runs 1 of 2 steps.
        let op = RNN {
            hidden_size: Some(1),
            ..Default::default()
        };
        let inputs = vec![
            f(&[2, 2, 1], &[1.0, 1.0, 1.0, 1.0]),
            f(&[1, 1, 1], &[0.0]),
            f(&[1, 1, 1], &[0.0]),
            f(&[1, 2], &[0.25, 0.25]),
            i(&[2], &[2, 1]),
        ];
        let out = run(op, inputs, 2).unwrap();
        let t = 0.5f32.tanh();
        close(&out[0], &[2, 1, 2, 1], &[t, t, t, 0.0]);
        close(&out[1], &[1, 2, 1], &[t, t]);
    }

    #[test]
    fn gru_and_lstm_with_zero_weights() {
        // GRU: z = r = 0.5 and the candidate is tanh(0) = 0, so H = 0.5 * H0.
        let gru = GRU::default();
        let inputs = vec![
            f(&[1, 1, 1], &[3.0]),
            f(&[1, 3, 1], &[0.0; 3]),
            f(&[1, 3, 1], &[0.0; 3]),
            None,
            None,
            f(&[1, 1, 1], &[0.8]),
        ];
        let out = run(gru, inputs, 2).unwrap();
        close(&out[1], &[1, 1, 1], &[0.4]);
        // LSTM: i = f = o = 0.5 and the candidate is 0, so C = 0.5 * C0 and H = 0.5 * tanh(C).
        let lstm = LSTM {
            layout: 1,
            ..Default::default()
        };
        let inputs = vec![
            f(&[1, 1, 1], &[3.0]),
            f(&[1, 4, 1], &[0.0; 4]),
            f(&[1, 4, 1], &[0.0; 4]),
            None,
            None,
            None,
            f(&[1, 1, 1], &[2.0]),
        ];
        let out = run(lstm, inputs, 3).unwrap();
        close(&out[0], &[1, 1, 1, 1], &[0.5 * 1.0f32.tanh()]);
        close(&out[2], &[1, 1, 1], &[1.0]);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let inputs = vec![
            f(&[1, 1, 1], &[3.0]),
            f(&[1, 2, 1], &[0.0; 2]),
            f(&[1, 3, 1], &[0.0; 3]),
        ];
        assert!(run(GRU::default(), inputs, 1).is_err());
        let lens = vec![
            f(&[1, 1, 1], &[3.0]),
            f(&[1, 1, 1], &[0.0]),
            f(&[1, 1, 1], &[0.0]),
            None,
            i(&[1], &[5]),
        ];
        assert!(run(RNN::default(), lens, 1).is_err());
    }
}
