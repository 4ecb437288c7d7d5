//! Random generators: normal and uniform samples, Bernoulli trials, Multinomial draws.
//!
//! Samples come from a small SplitMix64 generator. With a `seed` attribute the values are the same on every run;
//! without one each evaluation draws a new seed from a process-wide counter, so runs are still reproducible from
//! a fresh process. The values are not numpy's: tests compare random ops by shape and dtype only.

use std::sync::atomic::{AtomicU64, Ordering};

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::{
    Bernoulli, Multinomial, RandomNormal, RandomNormalLike, RandomUniform, RandomUniformLike,
};
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{DType, Tensor, Value};

use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// A SplitMix64 pseudo-random generator.
struct Rng(u64);

/// Seeds for ops without a `seed` attribute.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

impl Rng {
    /// A generator seeded by the `seed` attribute, or by the next process-wide seed.
    fn new(seed: Option<f32>) -> Rng {
        match seed {
            Some(s) if !s.is_nan() => Rng(s as i64 as u64 ^ 0x9e37_79b9_7f4a_7c15),
            _ => Rng(NEXT_SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform sample in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // In (0, 1], so the logarithm is finite.
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// A tensor of `dtype` from f64 values (numpy-style casts; bools are "non-zero").
fn from_f64s(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
    fn build<T: Num>(shape: Vec<usize>, v: Vec<f64>) -> Result<Tensor, EvalError> {
        Ok(Tensor::from_vec(
            shape,
            v.into_iter().map(T::from_f64).collect(),
        )?)
    }
    match dtype {
        DType::Bool => Ok(Tensor::from_vec(
            shape,
            v.into_iter().map(|x| x != 0.0).collect(),
        )?),
        DType::U8 => build::<u8>(shape, v),
        DType::I8 => build::<i8>(shape, v),
        DType::U16 => build::<u16>(shape, v),
        DType::I16 => build::<i16>(shape, v),
        DType::U32 => build::<u32>(shape, v),
        DType::I32 => build::<i32>(shape, v),
        DType::U64 => build::<u64>(shape, v),
        DType::I64 => build::<i64>(shape, v),
        DType::F16 => build::<half::f16>(shape, v),
        DType::BF16 => build::<half::bf16>(shape, v),
        DType::F32 => build::<f32>(shape, v),
        DType::F64 => build::<f64>(shape, v),
        other => eval_bail!("random values cannot have dtype {other}"),
    }
}

/// The dtype named by an ONNX code.
fn dtype_of(code: i64) -> Result<DType, EvalError> {
    DType::from_onnx_code(code)
        .ok_or_else(|| EvalError::new(format!("dtype {code} is not a known data type")))
}

/// The output dtype of a `*Like` op: the attribute's, else the input's.
fn like_dtype(code: Option<i64>, input: &Tensor) -> Result<DType, EvalError> {
    code.map_or(Ok(input.dtype()), dtype_of)
}

/// Checked dims of a `shape` attribute.
fn shape_attr(shape: &[i64], dtype: DType) -> Result<Vec<usize>, EvalError> {
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EvalError::new(format!("shape {shape:?} has a negative dim")))?;
    checked_numel(&dims, dtype)?;
    Ok(dims)
}

/// `n` samples of `f`.
fn samples(n: usize, mut f: impl FnMut() -> f64) -> Vec<f64> {
    (0..n).map(|_| f()).collect()
}

impl EvalOp for RandomNormal {
    fn eval(&self, _cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let dtype = dtype_of(self.dtype)?;
        let shape = shape_attr(&self.shape, dtype)?;
        let mut rng = Rng::new(self.seed);
        let (mean, scale) = (self.mean as f64, self.scale as f64);
        let v = samples(shape.iter().product(), || mean + scale * rng.normal());
        Ok(vec![from_f64s(dtype, shape, v)?.into()])
    }
}

impl EvalOp for RandomUniform {
    fn eval(&self, _cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let dtype = dtype_of(self.dtype)?;
        let shape = shape_attr(&self.shape, dtype)?;
        let mut rng = Rng::new(self.seed);
        let (low, high) = (self.low as f64, self.high as f64);
        let v = samples(shape.iter().product(), || {
            low + (high - low) * rng.uniform()
        });
        Ok(vec![from_f64s(dtype, shape, v)?.into()])
    }
}

impl EvalOp for RandomNormalLike {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let dtype = like_dtype(self.dtype, x)?;
        let mut rng = Rng::new(self.seed);
        let (mean, scale) = (self.mean as f64, self.scale as f64);
        let v = samples(x.len(), || mean + scale * rng.normal());
        Ok(vec![from_f64s(dtype, x.shape().to_vec(), v)?.into()])
    }
}

impl EvalOp for RandomUniformLike {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let dtype = like_dtype(self.dtype, x)?;
        let mut rng = Rng::new(self.seed);
        let (low, high) = (self.low as f64, self.high as f64);
        let v = samples(x.len(), || low + (high - low) * rng.uniform());
        Ok(vec![from_f64s(dtype, x.shape().to_vec(), v)?.into()])
    }
}

impl EvalOp for Bernoulli {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let dtype = like_dtype(self.dtype, x)?;
        let Some(p) = x.to_f64_vec() else {
            eval_bail!("probabilities should be numbers, got {}", x.dtype());
        };
        let mut rng = Rng::new(self.seed);
        let v = p
            .iter()
            .map(|&p| if rng.uniform() < p { 1.0 } else { 0.0 })
            .collect();
        Ok(vec![from_f64s(dtype, x.shape().to_vec(), v)?.into()])
    }
}

impl EvalOp for Multinomial {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let x = cx.tensor(0)?;
        let dtype = dtype_of(self.dtype)?;
        if !matches!(dtype, DType::I32 | DType::I64) {
            eval_bail!("dtype should be int32 or int64, got {dtype}");
        }
        let &[batch, classes] = x.shape() else {
            eval_bail!("the input should be [batch, classes], got {:?}", x.shape());
        };
        let samples_per_row = usize::try_from(self.sample_size)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| EvalError::new("sample_size should be at least 1"))?;
        let shape = vec![batch, samples_per_row];
        checked_numel(&shape, dtype)?;
        let Some(logits) = x.to_f64_vec() else {
            eval_bail!("log-probabilities should be numbers, got {}", x.dtype());
        };
        let mut rng = Rng::new(self.seed);
        let mut out = Vec::with_capacity(batch * samples_per_row);
        for row in logits.chunks(classes.max(1)).take(batch) {
            // Unnormalized log-probabilities: cumulative exp(x - max).
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut cumulative = Vec::with_capacity(classes);
            let mut total = 0.0;
            for &l in row {
                total += (l - max).exp();
                cumulative.push(total);
            }
            for _ in 0..samples_per_row {
                let r = rng.uniform() * total;
                let k = cumulative
                    .iter()
                    .position(|&c| r < c)
                    .unwrap_or(classes.saturating_sub(1));
                out.push(k as f64);
            }
        }
        out.resize(batch * samples_per_row, 0.0);
        Ok(vec![from_f64s(dtype, shape, out)?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use crate::ops::control::testutil::run_with;

    fn one(op: impl Into<jiuzhou_ir::Op>, inputs: Vec<Option<Value>>) -> Result<Tensor, EvalError> {
        let v = run_with(op, inputs, vec![], 1, Limits::default())?;
        Ok((**v[0].as_tensor().unwrap()).clone())
    }

    #[test]
    fn shapes_dtypes_and_ranges() {
        let normal = RandomNormal {
            shape: vec![2, 3],
            seed: Some(1.0),
            mean: 10.0,
            ..Default::default()
        };
        let a = one(normal.clone(), vec![]).unwrap();
        assert_eq!((a.dtype(), a.shape()), (DType::F32, &[2, 3][..]));
        assert_eq!(
            a,
            one(normal, vec![]).unwrap(),
            "a seed makes runs repeatable"
        );
        assert!(
            a.to_f64_vec()
                .unwrap()
                .iter()
                .all(|v| (0.0..20.0).contains(v))
        );

        let uniform = RandomUniform {
            shape: vec![100],
            dtype: 11,
            low: -1.0,
            high: 1.0,
            ..Default::default()
        };
        let u = one(uniform, vec![]).unwrap();
        assert_eq!(u.dtype(), DType::F64);
        assert!(
            u.to_f64_vec()
                .unwrap()
                .iter()
                .all(|v| (-1.0..1.0).contains(v))
        );
        let bad = RandomUniform {
            shape: vec![-2],
            ..Default::default()
        };
        assert!(one(bad, vec![]).is_err());

        let x: Value = Tensor::from_vec(vec![2, 2], vec![0.0f64, 1.0, 0.0, 1.0])
            .unwrap()
            .into();
        let like = one(RandomNormalLike::default(), vec![Some(x.clone())]).unwrap();
        assert_eq!((like.dtype(), like.shape()), (DType::F64, &[2, 2][..]));
        let like = one(
            RandomUniformLike {
                dtype: Some(10),
                ..Default::default()
            },
            vec![Some(x.clone())],
        )
        .unwrap();
        assert_eq!(like.dtype(), DType::F16);

        let b = one(
            Bernoulli {
                dtype: Some(9),
                seed: Some(3.0),
            },
            vec![Some(x.clone())],
        )
        .unwrap();
        assert_eq!(b.as_slice::<bool>().unwrap(), &[false, true, false, true]);

        // Class 1 has all the probability mass.
        let logits: Value = Tensor::from_vec(vec![2, 2], vec![-1e9f32, 0.0, -1e9, 0.0])
            .unwrap()
            .into();
        let m = one(
            Multinomial {
                sample_size: 3,
                dtype: 7,
                seed: None,
            },
            vec![Some(logits)],
        )
        .unwrap();
        assert_eq!(m.shape(), &[2, 3]);
        assert_eq!(m.as_slice::<i64>().unwrap(), &[1; 6]);
        assert!(one(Multinomial::default(), vec![Some(x.clone())]).is_ok());
        let flat: Value = Tensor::vector(vec![0.5f32]).into();
        assert!(one(Multinomial::default(), vec![Some(flat)]).is_err());
    }
}
