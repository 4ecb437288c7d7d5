//! Ops that move elements without choosing them by data: `Transpose`, `DepthToSpace`, `SpaceToDepth`, `Tile`,
//! `Concat`, `Split`, `Slice`, `Pad`, `CenterCropPad`, `Col2Im`, `Trilu`, `ReverseSequence`.

use super::{divide, expect_int, normalize_axes, scale, sum, tensor, unify, unranked, vector_len};
use crate::infer::{InferCx, InferError, InferOp, normalize_axis, same_as_input};
use crate::ops::*;
use crate::{Dim, ValueType, infer_bail};

impl InferOp for Transpose {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let Some(dims) = t.shape.as_deref() else {
            return Ok(vec![unranked(t.dtype)]);
        };
        let perm = match &self.perm {
            Some(p) => {
                if p.len() != dims.len() {
                    infer_bail!("perm {p:?} does not fit rank {}", dims.len());
                }
                normalize_axes(p, dims.len())?
            }
            None => (0..dims.len()).rev().collect(),
        };
        Ok(vec![tensor(
            t.dtype,
            perm.iter().map(|&p| dims[p].clone()).collect(),
        )])
    }
}

/// The largest block size accepted (so that `blocksize^2` cannot overflow).
const MAX_BLOCK: usize = 1 << 16;

/// Checks a `blocksize` attribute and returns it.
fn blocksize(b: i64) -> Result<usize, InferError> {
    match usize::try_from(b) {
        Ok(b) if (1..=MAX_BLOCK).contains(&b) => Ok(b),
        _ => Err(InferError::new(format!(
            "blocksize {b} should be in 1..={MAX_BLOCK}"
        ))),
    }
}

/// Checks a `DepthToSpace`/`SpaceToDepth` mode.
fn check_mode(mode: &str) -> Result<(), InferError> {
    match mode {
        "DCR" | "CRD" => Ok(()),
        m => Err(InferError::new(format!("mode `{m}` should be DCR or CRD"))),
    }
}

impl InferOp for DepthToSpace {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let b = blocksize(self.blocksize)?;
        check_mode(&self.mode)?;
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let [n, c, h, w] = dims.as_slice() else {
            infer_bail!("DepthToSpace takes a rank-4 input, got rank {}", dims.len());
        };
        let c = divide(cx, c, b * b, "depth")?;
        let h = scale(cx, h, b, "height");
        let w = scale(cx, w, b, "width");
        Ok(vec![tensor(dtype, vec![n.clone(), c, h, w])])
    }
}

impl InferOp for SpaceToDepth {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let b = blocksize(self.blocksize)?;
        check_mode(&self.mode)?;
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let [n, c, h, w] = dims.as_slice() else {
            infer_bail!("SpaceToDepth takes a rank-4 input, got rank {}", dims.len());
        };
        let c = scale(cx, c, b * b, "depth");
        let h = divide(cx, h, b, "height")?;
        let w = divide(cx, w, b, "width")?;
        Ok(vec![tensor(dtype, vec![n.clone(), c, h, w])])
    }
}

impl InferOp for Tile {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        expect_int(cx, 1, "repeats")?;
        let dtype = t.dtype;
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let Some(repeats) = cx.const_ints(1) else {
            return Ok(vec![tensor(
                dtype,
                dims.iter().map(|_| cx.fresh("tile")).collect(),
            )]);
        };
        if repeats.len() != dims.len() {
            infer_bail!("{} repeats given for rank {}", repeats.len(), dims.len());
        }
        let mut out = Vec::with_capacity(dims.len());
        for (d, &r) in dims.iter().zip(&repeats) {
            let Ok(r) = usize::try_from(r) else {
                infer_bail!("repeats has negative entry {r}");
            };
            out.push(if r == 0 {
                Dim::Known(0)
            } else {
                scale(cx, d, r, "tile")
            });
        }
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Concat {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        if cx.num_inputs() == 0 {
            infer_bail!("Concat needs at least one input");
        }
        let dtype = cx.tensor(0)?.dtype;
        let mut known: Option<Vec<Dim>> = None;
        let mut along = Vec::new();
        let mut axis = None;
        for i in 0..cx.num_inputs() {
            let t = cx.tensor(i)?;
            if t.dtype != dtype {
                infer_bail!("input {i} has dtype {}, input 0 has {dtype}", t.dtype);
            }
            let Some(dims) = t.shape.as_deref() else {
                along.push(None);
                continue;
            };
            let a = normalize_axis(self.axis, dims.len())?;
            axis = Some(a);
            along.push(Some(dims[a].clone()));
            known = Some(match known {
                None => dims.to_vec(),
                Some(k) => {
                    if k.len() != dims.len() {
                        infer_bail!("input {i} has rank {}, others rank {}", dims.len(), k.len());
                    }
                    k.iter()
                        .zip(dims)
                        .enumerate()
                        .map(|(j, (x, y))| {
                            if j == a {
                                Ok(x.clone())
                            } else {
                                unify(x, y, &format!("input {i}, axis {j}"))
                            }
                        })
                        .collect::<Result<_, _>>()?
                }
            });
        }
        let (Some(mut dims), Some(axis)) = (known, axis) else {
            return Ok(vec![unranked(dtype)]);
        };
        dims[axis] = match along.into_iter().collect::<Option<Vec<Dim>>>() {
            Some(ds) => sum(cx, &ds, "concat"),
            None => cx.fresh("concat"),
        };
        Ok(vec![tensor(dtype, dims)])
    }
}

impl InferOp for Split {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        let n = cx.num_outputs;
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype); n]);
        };
        let axis = normalize_axis(self.axis, dims.len())?;
        // An empty `split` tensor is treated as absent, as onnxruntime does.
        let empty_split = vector_len(cx, 1).ok().flatten() == Some(0) && cx.has_input(1);
        let sizes: Vec<Dim> = if cx.has_input(1) && !empty_split {
            expect_int(cx, 1, "split")?;
            match cx.const_ints(1) {
                Some(split) => {
                    if split.len() != n {
                        infer_bail!("split has {} entries for {n} outputs", split.len());
                    }
                    let sizes = super::known_dims(&split, "split")?;
                    let total: usize = sizes.iter().filter_map(Dim::known).sum();
                    if let Dim::Known(d) = dims[axis]
                        && d != total
                    {
                        infer_bail!("split sizes add up to {total}, the axis has {d}");
                    }
                    sizes
                }
                None => (0..n).map(|_| cx.fresh("split")).collect(),
            }
        } else {
            if let Some(k) = self.num_outputs
                && k != n as i64
            {
                infer_bail!("num_outputs is {k} but the node has {n} outputs");
            }
            if n == 0 {
                infer_bail!("Split needs at least one output");
            }
            match &dims[axis] {
                Dim::Known(d) => match even_split(*d, n) {
                    Ok(sizes) => sizes.into_iter().map(Dim::Known).collect(),
                    // Not splittable: an error if this node ever runs, but it may sit in a branch that never
                    // does (function bodies test the rank with `If`), so inference stays lenient.
                    Err(_) => (0..n).map(|_| cx.fresh("split")).collect(),
                },
                d if n == 1 => vec![d.clone()],
                _ => (0..n).map(|_| cx.fresh("split")).collect(),
            }
        };
        Ok(sizes
            .into_iter()
            .map(|s| {
                let mut d = dims.clone();
                d[axis] = s;
                tensor(dtype, d)
            })
            .collect())
    }
}

/// The chunk sizes of splitting `d` into `n` parts: equal parts of `ceil(d / n)` and a smaller last one.
pub(crate) fn even_split(d: usize, n: usize) -> Result<Vec<usize>, InferError> {
    let chunk = d.div_ceil(n.max(1));
    let mut out = vec![chunk; n];
    let rest = d
        .checked_sub(chunk * (n - 1))
        .ok_or_else(|| InferError::new(format!("cannot split {d} into {n} parts")))?;
    if let Some(last) = out.last_mut() {
        *last = rest;
    }
    Ok(out)
}

/// The number of elements `Slice` takes along an axis of size `dim` (ONNX clamping rules).
pub(crate) fn slice_len(dim: usize, start: i64, end: i64, step: i64) -> usize {
    slice_range(dim, start, end, step).1
}

/// The first index and the count of a slice along an axis of size `dim`; `step` must not be 0.
pub(crate) fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> (i128, usize) {
    let d = dim as i128;
    let (mut s, mut e, st) = (start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    if st > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        let n = if e > s { (e - s + st - 1) / st } else { 0 };
        (s, n as usize)
    } else {
        s = s.clamp(0, (d - 1).max(0));
        e = e.clamp(-1, d - 1);
        let n = if s > e {
            (s - e + (-st) - 1) / (-st)
        } else {
            0
        };
        (s, if d == 0 { 0 } else { n as usize })
    }
}

impl InferOp for Slice {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        for (i, what) in [(1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")] {
            if cx.has_input(i) {
                expect_int(cx, i, what)?;
            }
        }
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let r = dims.len();
        let axes = if cx.has_input(3) {
            cx.const_ints(3)
                .map(|a| normalize_axes(&a, r))
                .transpose()?
        } else {
            vector_len(cx, 1)?.map(|n| (0..n.min(r)).collect())
        };
        let starts = cx.const_ints(1);
        let ends = cx.const_ints(2);
        let steps = if cx.has_input(4) {
            cx.const_ints(4)
        } else {
            starts.as_ref().map(|s| vec![1; s.len()])
        };
        let (Some(axes), Some(starts), Some(ends), Some(steps)) =
            (axes.clone(), starts, ends, steps)
        else {
            // Bounds unknown: the sliced axes (all of them if even those are unknown) get fresh sizes.
            let out = (0..r)
                .map(|i| match &axes {
                    Some(a) if !a.contains(&i) => dims[i].clone(),
                    _ => cx.fresh("slice"),
                })
                .collect();
            return Ok(vec![tensor(dtype, out)]);
        };
        let n = axes.len();
        if starts.len() != n || ends.len() != n || steps.len() != n {
            infer_bail!(
                "starts, ends, axes and steps have different lengths ({}, {}, {n}, {})",
                starts.len(),
                ends.len(),
                steps.len()
            );
        }
        let mut out = dims.clone();
        for k in 0..n {
            let (a, s, e, st) = (axes[k], starts[k], ends[k], steps[k]);
            if st == 0 {
                infer_bail!("slice step 0 on axis {a}");
            }
            out[a] = match &dims[a] {
                Dim::Known(d) => Dim::Known(slice_len(*d, s, e, st)),
                // Taking a whole symbolic axis keeps its symbol.
                d if st == 1 && (s == 0 || s <= i64::MIN / 2) && e >= i32::MAX as i64 => d.clone(),
                d if st == -1 && s >= i32::MAX as i64 && e <= i64::MIN / 2 => d.clone(),
                _ => cx.fresh("slice"),
            };
        }
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Pad {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        match self.mode.as_str() {
            "constant" | "reflect" | "edge" | "wrap" => {}
            m => infer_bail!("unknown pad mode `{m}`"),
        }
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        expect_int(cx, 1, "pads")?;
        if let Some(v) = cx.opt_tensor(2)?
            && v.dtype != dtype
        {
            infer_bail!("constant_value has dtype {}, data has {dtype}", v.dtype);
        }
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let r = dims.len();
        let axes: Option<Vec<usize>> = if cx.has_input(3) {
            expect_int(cx, 3, "axes")?;
            cx.const_ints(3)
                .map(|a| normalize_axes(&a, r))
                .transpose()?
        } else {
            Some((0..r).collect())
        };
        let (Some(axes), Some(pads)) = (axes.clone(), cx.const_ints(1)) else {
            let out = (0..r)
                .map(|i| match &axes {
                    Some(a) if !a.contains(&i) => dims[i].clone(),
                    _ => cx.fresh("pad"),
                })
                .collect();
            return Ok(vec![tensor(dtype, out)]);
        };
        let n = axes.len();
        if pads.len() != 2 * n {
            infer_bail!("pads has {} entries for {n} axes", pads.len());
        }
        let mut out = dims.clone();
        for (k, &a) in axes.iter().enumerate() {
            let (b, e) = (pads[k], pads[n + k]);
            out[a] = match &dims[a] {
                Dim::Known(d) => {
                    let size = (*d as i128) + b as i128 + e as i128;
                    if size < 0 {
                        infer_bail!("pads {b}, {e} remove more than the {d} elements of axis {a}");
                    }
                    Dim::Known(size as usize)
                }
                d if b == 0 && e == 0 => d.clone(),
                _ => cx.fresh("pad"),
            };
        }
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for CenterCropPad {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        expect_int(cx, 1, "shape")?;
        let Some(dims) = t.shape.clone() else {
            return Ok(vec![unranked(dtype)]);
        };
        let r = dims.len();
        let axes = match &self.axes {
            Some(a) => normalize_axes(a, r)?,
            None => (0..r).collect(),
        };
        let mut out = dims.clone();
        match cx.const_ints(1) {
            Some(shape) => {
                if shape.len() != axes.len() {
                    infer_bail!("shape has {} entries for {} axes", shape.len(), axes.len());
                }
                let sizes = super::known_dims(&shape, "shape")?;
                for (&a, s) in axes.iter().zip(sizes) {
                    out[a] = s;
                }
            }
            None => {
                for &a in &axes {
                    out[a] = cx.fresh("crop");
                }
            }
        }
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Col2Im {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        let dtype = t.dtype;
        expect_int(cx, 1, "image_shape")?;
        expect_int(cx, 2, "block_shape")?;
        let dims = t.shape.clone();
        if let Some(d) = &dims
            && d.len() != 3
        {
            infer_bail!("Col2Im takes a rank-3 input, got rank {}", d.len());
        }
        let image = cx.const_ints(1);
        let block = cx.const_ints(2);
        let n_spatial = match (&image, vector_len(cx, 1)?) {
            (Some(i), _) => i.len(),
            (None, Some(n)) => n,
            (None, None) => return Ok(vec![unranked(dtype)]),
        };
        let batch = dims
            .as_ref()
            .map_or_else(|| cx.fresh("batch"), |d| d[0].clone());
        let channels = match (&dims, &block) {
            (Some(d), Some(b)) => {
                let k: i64 = b
                    .iter()
                    .try_fold(1i64, |a, &x| if x <= 0 { None } else { a.checked_mul(x) })
                    .ok_or_else(|| InferError::new(format!("bad block_shape {b:?}")))?;
                divide(cx, &d[1], k as usize, "channels")?
            }
            _ => cx.fresh("channels"),
        };
        let mut out = vec![batch, channels];
        match image {
            Some(i) => out.extend(super::known_dims(&i, "image_shape")?),
            None => out.extend((0..n_spatial).map(|_| cx.fresh("image"))),
        }
        Ok(vec![tensor(dtype, out)])
    }
}

impl InferOp for Trilu {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        if let Some(r) = cx.tensor(0)?.rank()
            && r < 2
        {
            infer_bail!("Trilu takes a rank >= 2 input, got rank {r}");
        }
        if cx.has_input(1) {
            expect_int(cx, 1, "k")?;
        }
        same_as_input(cx, 0)
    }
}

impl InferOp for ReverseSequence {
    fn infer(&self, cx: &mut InferCx<'_>) -> Result<Vec<ValueType>, InferError> {
        let t = cx.tensor(0)?;
        expect_int(cx, 1, "sequence_lens")?;
        if let Some(r) = t.rank() {
            let b = normalize_axis(self.batch_axis, r)?;
            let ti = normalize_axis(self.time_axis, r)?;
            if b == ti {
                infer_bail!("batch_axis and time_axis are both {b}");
            }
        }
        same_as_input(cx, 0)
    }
}
