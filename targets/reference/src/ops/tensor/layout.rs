//! Ops that move elements without choosing them by data: `Transpose`, `DepthToSpace`, `SpaceToDepth`, `Tile`,
//! `Concat`, `Split`, `Slice`, `Pad`, `CenterCropPad`, `Col2Im`, `Trilu`, `ReverseSequence`.

use jiuzhou_ir::num::Num;
use jiuzhou_ir::ops::*;
use jiuzhou_ir::tensor::checked_numel;
use jiuzhou_ir::{Tensor, Value, dispatch_numeric};

use super::{axes, build, copy_runs, one, sizes, steps_of, view};
use crate::kernels::{axis, strides};
use crate::{EvalCx, EvalError, EvalOp, eval_bail};

/// Transposes `t` by `perm` (a permutation of its axes).
fn transpose(t: &Tensor, perm: &[usize]) -> Result<Tensor, EvalError> {
    let st = steps_of(t.shape());
    let shape = perm.iter().map(|&p| t.shape()[p]).collect();
    let steps: Vec<isize> = perm.iter().map(|&p| st[p]).collect();
    view(t, shape, &steps, 0)
}

impl EvalOp for Transpose {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        let perm = match &self.perm {
            Some(p) if p.len() == r => axes(p, r)?,
            Some(p) => eval_bail!("perm {p:?} does not fit rank {r}"),
            None => (0..r).rev().collect(),
        };
        one(transpose(t, &perm)?)
    }
}

/// Checks a rank-4 input and a positive block size; returns the dims and the block size.
fn block_input(t: &Tensor, blocksize: i64) -> Result<([usize; 4], usize), EvalError> {
    let b = match usize::try_from(blocksize) {
        Ok(b) if (1..=1 << 16).contains(&b) => b,
        _ => eval_bail!("blocksize {blocksize} should be in 1..=65536"),
    };
    let dims: [usize; 4] = t
        .shape()
        .try_into()
        .map_err(|_| EvalError::new(format!("expected a rank-4 input, got rank {}", t.rank())))?;
    Ok((dims, b))
}

/// Reshapes `t` to `tmp`, transposes by `perm` and reshapes to `out`.
fn shuffle(
    t: &Tensor,
    tmp: Vec<usize>,
    perm: &[usize],
    out: Vec<usize>,
) -> Result<Tensor, EvalError> {
    let r = t.clone().reshape(tmp)?;
    Ok(transpose(&r, perm)?.reshape(out)?)
}

impl EvalOp for DepthToSpace {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ([n, c, h, w], b) = block_input(t, self.blocksize)?;
        if c % (b * b) != 0 {
            eval_bail!("channels {c} are not a multiple of blocksize^2 = {}", b * b);
        }
        let c2 = c / (b * b);
        let out = vec![n, c2, h * b, w * b];
        one(match self.mode.as_str() {
            "DCR" => shuffle(t, vec![n, b, b, c2, h, w], &[0, 3, 4, 1, 5, 2], out)?,
            "CRD" => shuffle(t, vec![n, c2, b, b, h, w], &[0, 1, 4, 2, 5, 3], out)?,
            m => eval_bail!("mode `{m}` should be DCR or CRD"),
        })
    }
}

impl EvalOp for SpaceToDepth {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let ([n, c, h, w], b) = block_input(t, self.blocksize)?;
        if h % b != 0 || w % b != 0 {
            eval_bail!("spatial dims {h}x{w} are not multiples of blocksize {b}");
        }
        let tmp = vec![n, c, h / b, b, w / b, b];
        let c2 = c
            .checked_mul(b * b)
            .ok_or_else(|| EvalError::new("channel count overflows"))?;
        let out = vec![n, c2, h / b, w / b];
        one(match self.mode.as_str() {
            "DCR" => shuffle(t, tmp, &[0, 3, 5, 1, 2, 4], out)?,
            "CRD" => shuffle(t, tmp, &[0, 1, 3, 5, 2, 4], out)?,
            m => eval_bail!("mode `{m}` should be DCR or CRD"),
        })
    }
}

impl EvalOp for Tile {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let reps = sizes(&cx.ints(1)?, "repeats")?;
        if reps.len() != t.rank() {
            eval_bail!("{} repeats given for rank {}", reps.len(), t.rank());
        }
        // View as [r0, d0, r1, d1, ...] with step 0 along each repeat axis.
        let st = steps_of(t.shape());
        let mut shape = Vec::new();
        let mut steps = Vec::new();
        let mut out = Vec::new();
        for (k, (&r, &d)) in reps.iter().zip(t.shape()).enumerate() {
            shape.extend([r, d]);
            steps.extend([0, st[k]]);
            out.push(
                r.checked_mul(d)
                    .ok_or_else(|| EvalError::new("tiled shape overflows"))?,
            );
        }
        checked_numel(&out, t.dtype())?;
        one(view(t, shape, &steps, 0)?.reshape(out)?)
    }
}

impl EvalOp for Concat {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let n = cx.num_inputs();
        let ts: Vec<&Tensor> = (0..n)
            .map(|i| cx.tensor(i).map(|t| t.as_ref()))
            .collect::<Result<_, _>>()?;
        let Some(first) = ts.first() else {
            eval_bail!("Concat needs at least one input");
        };
        let r = first.rank();
        let a = axis(self.axis, r)?;
        let mut shape = first.shape().to_vec();
        shape[a] = 0;
        for (i, t) in ts.iter().enumerate() {
            let ok = t.rank() == r && (0..r).all(|j| j == a || t.shape()[j] == first.shape()[j]);
            if !ok {
                eval_bail!(
                    "input {i} has shape {:?}, input 0 has {:?}",
                    t.shape(),
                    first.shape()
                );
            }
            shape[a] += t.shape()[a];
        }
        let outer: usize = first.shape()[..a].iter().product();
        let inner: usize = first.shape()[a + 1..].iter().product();
        let mut runs = Vec::with_capacity(outer * n);
        for o in 0..outer {
            for (k, t) in ts.iter().enumerate() {
                let len = t.shape()[a] * inner;
                if len > 0 {
                    runs.push((k, o * len, len));
                }
            }
        }
        one(copy_runs(&ts, shape, runs)?)
    }
}

/// The chunk sizes of splitting `d` into `n` parts: equal parts of `ceil(d / n)` and a smaller last one.
fn even_split(d: usize, n: usize) -> Result<Vec<usize>, EvalError> {
    if n == 0 {
        eval_bail!("cannot split into 0 parts");
    }
    let chunk = d.div_ceil(n);
    let rest = d
        .checked_sub(chunk * (n - 1))
        .ok_or_else(|| EvalError::new(format!("cannot split {d} into {n} parts")))?;
    let mut out = vec![chunk; n];
    out[n - 1] = rest;
    Ok(out)
}

impl EvalOp for Split {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let a = axis(self.axis, t.rank())?;
        let d = t.shape()[a];
        // An empty `split` tensor is treated as absent, as onnxruntime does.
        let parts = match cx.opt_ints(1)?.filter(|s| !s.is_empty()) {
            Some(s) => {
                let s = sizes(&s, "split")?;
                if s.iter().try_fold(0usize, |acc, &x| acc.checked_add(x)) != Some(d) {
                    eval_bail!("split sizes {s:?} do not add up to {d}");
                }
                s
            }
            None => {
                let n = match self.num_outputs {
                    Some(n) => usize::try_from(n)
                        .map_err(|_| EvalError::new(format!("num_outputs {n} is negative")))?,
                    None => cx.num_outputs,
                };
                even_split(d, n)?
            }
        };
        let outer: usize = t.shape()[..a].iter().product();
        let inner: usize = t.shape()[a + 1..].iter().product();
        let mut start = 0;
        let mut out = Vec::with_capacity(parts.len());
        for &p in &parts {
            let mut shape = t.shape().to_vec();
            shape[a] = p;
            let runs = (0..outer).map(|o| (0, (o * d + start) * inner, p * inner));
            out.push(Value::from(copy_runs(&[t], shape, runs)?));
            start += p;
        }
        Ok(out)
    }
}

/// The first index and the count of a slice along an axis of size `dim` (ONNX clamping rules); `step != 0`.
pub fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let d = dim as i128;
    let (mut s, mut e, st) = (start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    if dim == 0 {
        return (0, 0);
    }
    if st > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        let n = if e > s { (e - s + st - 1) / st } else { 0 };
        (s as usize, n as usize)
    } else {
        s = s.clamp(0, d - 1);
        e = e.clamp(-1, d - 1);
        let n = if s > e { (s - e - st - 1) / (-st) } else { 0 };
        (s as usize, n as usize)
    }
}

impl EvalOp for Slice {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        let starts = cx.ints(1)?;
        let ends = cx.ints(2)?;
        let ax = match cx.opt_ints(3)? {
            Some(a) => axes(&a, r)?,
            None => (0..starts.len()).collect(),
        };
        let steps = cx.opt_ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        let n = starts.len();
        if ends.len() != n || ax.len() != n || steps.len() != n {
            eval_bail!("starts, ends, axes and steps have different lengths");
        }
        if ax.iter().any(|&a| a >= r) {
            eval_bail!("more slice axes than the input's rank {r}");
        }
        let st = steps_of(t.shape());
        let mut shape = t.shape().to_vec();
        let mut steps_out = st.clone();
        let mut base = 0usize;
        for k in 0..n {
            let a = ax[k];
            if steps[k] == 0 {
                eval_bail!("slice step 0 on axis {a}");
            }
            let (first, count) = slice_range(t.shape()[a], starts[k], ends[k], steps[k]);
            shape[a] = count;
            if count > 0 {
                base += first * st[a] as usize;
            }
            // With one element or none the step is never taken (and may be too large to multiply).
            steps_out[a] = if count > 1 {
                st[a] * steps[k] as isize
            } else {
                0
            };
        }
        one(view(t, shape, &steps_out, base)?)
    }
}

/// Where each output coordinate of one axis reads from: an input coordinate, or `None` for the fill value.
type AxisMap = Vec<Option<usize>>;

/// Builds a tensor of shape `shape` whose element at `i` is `src` at `(map[0][i0], map[1][i1], ...)`, or `fill`
/// (a one-element tensor) where any map gives `None`.
fn remap(
    src: &Tensor,
    fill: &Tensor,
    shape: Vec<usize>,
    maps: &[AxisMap],
) -> Result<Tensor, EvalError> {
    let st = strides(src.shape());
    build(&[src, fill], shape, |i| {
        let mut off = 0;
        for (k, &j) in i.iter().enumerate() {
            match maps[k][j] {
                Some(s) => off += s * st[k],
                None => return Ok((1, 0)),
            }
        }
        Ok((0, off))
    })
}

impl EvalOp for Pad {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        let pads = cx.ints(1)?;
        let ax = match cx.opt_ints(3)? {
            Some(a) => axes(&a, r)?,
            None => (0..r).collect(),
        };
        let n = ax.len();
        if pads.len() != 2 * n {
            eval_bail!("pads has {} entries for {n} axes", pads.len());
        }
        let fill = match cx.opt_tensor(2)? {
            Some(v) if !v.is_empty() => copy_runs(&[v], vec![], [(0, 0, 1)])?,
            Some(_) => eval_bail!("constant_value is empty"),
            None => Tensor::zeros(t.dtype(), vec![])?,
        };
        let mut begin = vec![0i64; r];
        let mut end = vec![0i64; r];
        for (k, &a) in ax.iter().enumerate() {
            begin[a] = pads[k];
            end[a] = pads[n + k];
        }
        let mut shape = Vec::with_capacity(r);
        let mut maps = Vec::with_capacity(r);
        for a in 0..r {
            let d = t.shape()[a] as i64;
            let size = d as i128 + begin[a] as i128 + end[a] as i128;
            if size < 0 {
                eval_bail!("pads remove more than the {d} elements of axis {a}");
            }
            let size =
                usize::try_from(size).map_err(|_| EvalError::new("padded size overflows"))?;
            checked_numel(&[size], t.dtype())?;
            let map: AxisMap = (0..size as i128)
                .map(|j| {
                    let (s, d) = (j - begin[a] as i128, d as i128);
                    if (0..d).contains(&s) {
                        return Ok(Some(s as usize));
                    }
                    if self.mode == "constant" {
                        return Ok(None);
                    }
                    if d == 0 {
                        eval_bail!("cannot {} pad an empty axis", self.mode);
                    }
                    Ok(Some(match self.mode.as_str() {
                        "edge" => s.clamp(0, d - 1),
                        "wrap" => s.rem_euclid(d),
                        "reflect" if d == 1 => 0,
                        "reflect" => {
                            let p = 2 * (d - 1);
                            let m = s.rem_euclid(p);
                            if m < d { m } else { p - m }
                        }
                        m => eval_bail!("unknown pad mode `{m}`"),
                    } as usize))
                })
                .collect::<Result<_, EvalError>>()?;
            shape.push(size);
            maps.push(map);
        }
        if !matches!(self.mode.as_str(), "constant" | "edge" | "wrap" | "reflect") {
            eval_bail!("unknown pad mode `{}`", self.mode);
        }
        one(remap(t, &fill, shape, &maps)?)
    }
}

impl EvalOp for CenterCropPad {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        let target = sizes(&cx.ints(1)?, "shape")?;
        let ax = match &self.axes {
            Some(a) => axes(a, r)?,
            None => (0..r).collect(),
        };
        if target.len() != ax.len() {
            eval_bail!("shape has {} entries for {} axes", target.len(), ax.len());
        }
        let mut shape = t.shape().to_vec();
        for (&a, &s) in ax.iter().zip(&target) {
            shape[a] = s;
        }
        checked_numel(&shape, t.dtype())?;
        let maps: Vec<AxisMap> = (0..r)
            .map(|a| {
                let (d, s) = (t.shape()[a], shape[a]);
                (0..s)
                    .map(|j| {
                        if s <= d {
                            Some(j + (d - s) / 2)
                        } else {
                            let p = (s - d) / 2;
                            (j >= p && j < p + d).then(|| j - p)
                        }
                    })
                    .collect()
            })
            .collect();
        let zero = Tensor::zeros(t.dtype(), vec![])?;
        one(remap(t, &zero, shape, &maps)?)
    }
}

impl EvalOp for Col2Im {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let image = sizes(&cx.ints(1)?, "image_shape")?;
        let block = sizes(&cx.ints(2)?, "block_shape")?;
        let nd = image.len();
        let attr = |v: &Option<Vec<i64>>,
                    len: usize,
                    default: usize,
                    what: &str|
         -> Result<Vec<usize>, EvalError> {
            match v {
                Some(v) if v.len() == len => sizes(v, what),
                Some(v) => eval_bail!("{what} has {} entries, expected {len}", v.len()),
                None => Ok(vec![default; len]),
            }
        };
        let dil = attr(&self.dilations, nd, 1, "dilations")?;
        let pads = attr(&self.pads, 2 * nd, 0, "pads")?;
        let strd = attr(&self.strides, nd, 1, "strides")?;
        let &[n, ck, l] = t.shape() else {
            eval_bail!("Col2Im takes a rank-3 input, got shape {:?}", t.shape());
        };
        if block.len() != nd || nd == 0 {
            eval_bail!("block_shape {block:?} does not match image_shape {image:?}");
        }
        if dil.contains(&0) || strd.contains(&0) || block.contains(&0) {
            eval_bail!("dilations, strides and block_shape must be positive");
        }
        let k = block
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&k| k <= ck)
            .ok_or_else(|| {
                EvalError::new(format!(
                    "block_shape {block:?} is larger than input dim 1 ({ck})"
                ))
            })?;
        if ck % k != 0 {
            eval_bail!("input dim 1 ({ck}) is not a multiple of the block size {k}");
        }
        let c = ck / k;
        let mut cols = Vec::with_capacity(nd);
        for i in 0..nd {
            let span = (dil[i] as u128) * (block[i] as u128 - 1) + 1;
            let padded = image[i] as u128 + pads[i] as u128 + pads[nd + i] as u128;
            if padded < span {
                eval_bail!("the block does not fit the padded image on axis {i}");
            }
            cols.push(((padded - span) / strd[i] as u128 + 1).min(usize::MAX as u128) as usize);
        }
        if cols.iter().try_fold(1usize, |a, &c| a.checked_mul(c)) != Some(l) {
            eval_bail!("input dim 2 is {l}, but the blocks tile {cols:?}");
        }
        let mut shape = vec![n, c];
        shape.extend(&image);
        checked_numel(&shape, t.dtype())?;
        let img_st = strides(&image);
        let img_size: usize = image.iter().product();
        // For every (kernel offset, block position), the image offset it adds to, if inside the image.
        let mut targets: Vec<Option<usize>> = Vec::with_capacity(k * l);
        super::for_each_index(&block, |kk| {
            super::for_each_index(&cols, |cc| {
                let mut off = 0usize;
                for i in 0..nd {
                    let p = (cc[i] as i128) * (strd[i] as i128)
                        + (kk[i] as i128) * (dil[i] as i128)
                        - pads[i] as i128;
                    if p < 0 || p >= image[i] as i128 {
                        targets.push(None);
                        return Ok(());
                    }
                    off += p as usize * img_st[i];
                }
                targets.push(Some(off));
                Ok(())
            })
        })?;
        fn go<T: Num>(
            v: &[T],
            shape: Vec<usize>,
            n: usize,
            c: usize,
            kl: usize,
            img: usize,
            targets: &[Option<usize>],
        ) -> Result<Tensor, EvalError> {
            let mut out = vec![T::zero(); n * c * img];
            for b in 0..n * c {
                let src = &v[b * kl..(b + 1) * kl];
                let dst = &mut out[b * img..(b + 1) * img];
                for (x, t) in src.iter().zip(targets) {
                    if let Some(o) = t {
                        dst[*o] = dst[*o].add(*x);
                    }
                }
            }
            Ok(Tensor::from_vec(shape, out)?)
        }
        let kl = k * l;
        one(
            dispatch_numeric!(t, |v: &[T]| go::<T>(v, shape, n, c, kl, img_size, &targets)?,
            _ => eval_bail!("Col2Im does not support {}", t.dtype())),
        )
    }
}

impl EvalOp for Trilu {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let r = t.rank();
        if r < 2 {
            eval_bail!("Trilu takes a rank >= 2 input, got rank {r}");
        }
        let k = match cx.opt_ints(1)? {
            Some(v) if v.len() == 1 => v[0],
            Some(v) => eval_bail!("k should hold one value, it holds {}", v.len()),
            None => 0,
        };
        let zero = Tensor::zeros(t.dtype(), vec![])?;
        let upper = self.upper != 0;
        let mut off = 0;
        let out = build(&[t, &zero], t.shape().to_vec(), |i| {
            let d = i[r - 1] as i64 - i[r - 2] as i64;
            let keep = if upper { d >= k } else { d <= k };
            let pick = if keep { (0, off) } else { (1, 0) };
            off += 1;
            Ok(pick)
        })?;
        one(out)
    }
}

impl EvalOp for ReverseSequence {
    fn eval(&self, cx: &EvalCx<'_>) -> Result<Vec<Value>, EvalError> {
        let t = cx.tensor(0)?;
        let lens = cx.ints(1)?;
        let r = t.rank();
        let b = axis(self.batch_axis, r)?;
        let ti = axis(self.time_axis, r)?;
        if b == ti {
            eval_bail!("batch_axis and time_axis are both {b}");
        }
        let (nb, nt) = (t.shape()[b], t.shape()[ti]);
        if lens.len() != nb {
            eval_bail!(
                "sequence_lens has {} entries for batch size {nb}",
                lens.len()
            );
        }
        let lens: Vec<usize> = lens
            .iter()
            .map(|&l| match usize::try_from(l) {
                Ok(l) if l <= nt => Ok(l),
                _ => Err(EvalError::new(format!(
                    "sequence length {l} is not in 0..={nt}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        let st = strides(t.shape());
        let out = build(&[t], t.shape().to_vec(), |i| {
            let len = lens[i[b]];
            let mut off: usize = i.iter().zip(&st).map(|(x, s)| x * s).sum();
            let j = i[ti];
            if j < len {
                off = off - j * st[ti] + (len - 1 - j) * st[ti];
            }
            Ok((0, off))
        })?;
        one(out)
    }
}
