//! Data movement: Reshape, Flatten, Squeeze, Unsqueeze, Identity and inference Dropout (copies under a new
//! shape), Transpose, Concat, Slice, Gather (constant indices), Pad (constant, edge, wrap, reflect; negative pads
//! crop) and Expand.
//!
//! All but Concat and the copies go through one helper, [`remap`]: every output axis maps each of its positions to
//! an input offset (or to the fill value), and the output is written row-major with the innermost axis as the
//! inner loop (a plain `copy_from_slice` when that axis is contiguous in the input).

use crate::ExecError;
use crate::linalg::broadcast;
use crate::native::{In, NativeKernel, Placement, check_buffers, norm_axes, norm_axis, numel};
use crate::parallel::{MIN_CHUNK, Parallel};

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// For each output axis, the input offset of each of its positions (`None`: the fill value).
type AxisMaps = Vec<Vec<Option<usize>>>;

/// Writes `out` (row-major over the maps' lengths): element `(i0, i1, ...)` is `src[Σ maps[k][ik]]`, or `fill`
/// when any map gives `None`.
///
/// With threads, outputs of at least two [`MIN_CHUNK`]s are split over the positions of the first output axis
/// (every element is still a plain copy of its source).
fn remap(
    src: &[f32],
    maps: &AxisMaps,
    fill: f32,
    out: &mut [f32],
    par: &Parallel,
) -> Result<(), ExecError> {
    let lens: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    if out.len() != numel(&lens)? {
        return Err(ExecError::new("a kernel output does not match its shape"));
    }
    if out.is_empty() {
        return Ok(());
    }
    // Every offset a map can produce, summed over the axes, must stay inside `src`.
    let max: usize = maps
        .iter()
        .map(|m| m.iter().flatten().copied().max().unwrap_or(0))
        .sum();
    let any_some = maps.iter().all(|m| m.iter().any(|o| o.is_some()));
    if any_some && max >= src.len() {
        return Err(ExecError::new(
            "internal error: a remap reads out of bounds",
        ));
    }
    // Whether the innermost map is `base + j` for all j (a contiguous run).
    let last = maps.last().map(|m| {
        m.first()
            .copied()
            .flatten()
            .is_some_and(|b| m.iter().enumerate().all(|(j, &o)| o == Some(b + j)))
    });
    let contiguous = last == Some(true);
    if maps.len() >= 2 && par.is_parallel() && out.len() >= 2 * MIN_CHUNK {
        let inner = out.len() / maps[0].len();
        par.for_each_chunk(out, inner, MIN_CHUNK, |start, chunk| {
            let first = start / inner;
            for (j, c) in chunk.chunks_exact_mut(inner).enumerate() {
                match maps[0][first + j] {
                    Some(off) => rec(src, maps, 1, off, fill, c, contiguous),
                    None => c.fill(fill),
                }
            }
        });
    } else {
        rec(src, maps, 0, 0, fill, out, contiguous);
    }
    Ok(())
}

fn rec(
    src: &[f32],
    maps: &AxisMaps,
    axis: usize,
    base: usize,
    fill: f32,
    out: &mut [f32],
    contiguous: bool,
) {
    if maps.is_empty() {
        out[0] = src[base];
        return;
    }
    let m = &maps[axis];
    if axis + 1 == maps.len() {
        if contiguous {
            let b = base + m[0].unwrap_or(0);
            out.copy_from_slice(&src[b..b + out.len()]);
        } else {
            for (o, &off) in out.iter_mut().zip(m) {
                *o = off.map_or(fill, |off| src[base + off]);
            }
        }
        return;
    }
    let inner = out.len() / m.len();
    for (chunk, &off) in out.chunks_exact_mut(inner).zip(m) {
        match off {
            Some(off) => rec(src, maps, axis + 1, base + off, fill, chunk, contiguous),
            None => chunk.fill(fill),
        }
    }
}

/// Ops that keep the elements and change only the shape.
pub enum Reshape {
    /// Identity (and inference Dropout).
    Identity,
    /// Reshape to a constant target (0 copies a dim unless `allowzero`, -1 is inferred).
    To {
        /// The target.
        shape: Vec<i64>,
        /// 0 means a zero-sized dim.
        allowzero: bool,
    },
    /// Flatten at an axis.
    Flatten(i64),
    /// Squeeze the given axes (all size-1 axes when `None`).
    Squeeze(Option<Vec<i64>>),
    /// Insert size-1 axes at the given output positions.
    Unsqueeze(Vec<i64>),
}

impl NativeKernel for Reshape {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let s = ins[0];
        let n = numel(s)?;
        let out = match self {
            Reshape::Identity => s.to_vec(),
            Reshape::To { shape, allowzero } => {
                let mut out = Vec::with_capacity(shape.len());
                let mut infer_at = None;
                for (i, &d) in shape.iter().enumerate() {
                    match d {
                        -1 => {
                            if infer_at.replace(i).is_some() {
                                return Err(ExecError::new(
                                    "the target shape has more than one -1",
                                ));
                            }
                            out.push(1);
                        }
                        0 if !allowzero => out.push(*s.get(i).ok_or_else(|| {
                            ExecError::new(format!(
                                "target entry {i} is 0 (copy) but the input has rank {}",
                                s.len()
                            ))
                        })?),
                        d if d < 0 => {
                            return Err(ExecError::new(format!(
                                "the target shape has negative entry {d}"
                            )));
                        }
                        d => out.push(
                            usize::try_from(d)
                                .map_err(|_| ExecError::new("target entry too large"))?,
                        ),
                    }
                }
                if let Some(at) = infer_at {
                    let rest = numel(&out)?;
                    if rest == 0 || n % rest != 0 {
                        return Err(ExecError::new(format!(
                            "cannot reshape {s:?} into {shape:?}: the -1 entry has no integer size"
                        )));
                    }
                    out[at] = n / rest;
                }
                out
            }
            Reshape::Flatten(axis) => {
                let r = s.len() as i64;
                if *axis < -r || *axis > r {
                    return Err(ExecError::new(format!(
                        "axis {axis} is out of range for rank {r}"
                    )));
                }
                let a = if *axis < 0 { axis + r } else { *axis } as usize;
                vec![s[..a].iter().product(), s[a..].iter().product()]
            }
            Reshape::Squeeze(axes) => {
                let drop = match axes {
                    Some(a) => {
                        let a = norm_axes(a, s.len())?;
                        if let Some(&bad) = a.iter().find(|&&i| s[i] != 1) {
                            return Err(ExecError::new(format!(
                                "cannot squeeze axis {bad} of size {}",
                                s[bad]
                            )));
                        }
                        a
                    }
                    None => (0..s.len()).filter(|&i| s[i] == 1).collect(),
                };
                (0..s.len())
                    .filter(|i| !drop.contains(i))
                    .map(|i| s[i])
                    .collect()
            }
            Reshape::Unsqueeze(axes) => {
                let rank = s.len() + axes.len();
                let a = norm_axes(axes, rank)?;
                let mut rest = s.iter();
                (0..rank)
                    .map(|i| {
                        if a.contains(&i) {
                            1
                        } else {
                            rest.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
        };
        if numel(&out)? != n {
            return Err(ExecError::new(format!("cannot reshape {s:?} into {out:?}")));
        }
        Ok(out)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        if ins[0].data.len() != out.len() {
            return Err(ExecError::new("a reshape changes the number of elements"));
        }
        out.copy_from_slice(ins[0].data);
        Ok(())
    }

    fn placement(&self) -> Placement {
        Placement::View
    }
}

/// Transpose by `perm` (reversed axes when `None`).
pub struct Transpose {
    /// The permutation.
    pub perm: Option<Vec<i64>>,
}

impl Transpose {
    fn perm(&self, r: usize) -> Result<Vec<usize>, ExecError> {
        match &self.perm {
            Some(p) if p.len() == r => norm_axes(p, r),
            Some(p) => Err(ExecError::new(format!("perm {p:?} does not fit rank {r}"))),
            None => Ok((0..r).rev().collect()),
        }
    }
}

impl NativeKernel for Transpose {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        Ok(self
            .perm(ins[0].len())?
            .iter()
            .map(|&p| ins[0][p])
            .collect())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let shape = ins[0].shape;
        let perm = self.perm(shape.len())?;
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        check_buffers(ins, out, &out_shape)?;
        let (shape, perm) = merge_axes(shape, &perm);
        let st = strides(&shape);
        let maps: AxisMaps = perm
            .iter()
            .map(|&p| (0..shape[p]).map(|j| Some(j * st[p])).collect())
            .collect();
        remap(ins[0].data, &maps, 0.0, out, par)
    }
}

/// The same transpose over fewer axes: size-1 axes dropped and input axes that stay adjacent and in order in the
/// output merged into one (a channel shuffle `[1, g, c, h, w]` by `[0, 2, 1, 3, 4]` becomes `[g, c, h·w]` by
/// `[1, 0, 2]`), so the innermost copies are long contiguous runs.
fn merge_axes(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    // The input axes that are not 1, and each one's rank among them.
    let axes: Vec<usize> = (0..shape.len()).filter(|&a| shape[a] != 1).collect();
    let rank = |a: usize| axes.iter().position(|&x| x == a).unwrap_or(0);
    // Their ranks in output order, cut into groups of consecutive ranks.
    let kept: Vec<usize> = perm
        .iter()
        .filter(|&&p| shape[p] != 1)
        .map(|&p| rank(p))
        .collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &p in &kept {
        match groups.last_mut() {
            Some(g) if g.last() == Some(&(p.wrapping_sub(1))) => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    // The merged input axes are the groups sorted by their first input axis.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g][0]);
    let new_shape: Vec<usize> = order
        .iter()
        .map(|&g| groups[g].iter().map(|&r| shape[axes[r]]).product())
        .collect();
    let mut new_perm = vec![0; groups.len()];
    for (pos, &g) in order.iter().enumerate() {
        new_perm[g] = pos;
    }
    (new_shape, new_perm)
}

/// Concat along `axis`.
pub struct Concat {
    /// The axis, possibly negative.
    pub axis: i64,
}

impl NativeKernel for Concat {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let first = ins[0];
        let a = norm_axis(self.axis, first.len())?;
        let mut shape = first.to_vec();
        shape[a] = 0;
        for (i, s) in ins.iter().enumerate() {
            let ok = s.len() == first.len() && (0..s.len()).all(|j| j == a || s[j] == first[j]);
            if !ok {
                return Err(ExecError::new(format!(
                    "input {i} has shape {s:?}, input 0 has {first:?}"
                )));
            }
            shape[a] = shape[a]
                .checked_add(s[a])
                .ok_or_else(|| ExecError::new("Concat size overflows"))?;
        }
        Ok(shape)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let shapes: Vec<&[usize]> = ins.iter().map(|i| i.shape).collect();
        let shape = self.out_shape(&shapes)?;
        check_buffers(ins, out, &shape)?;
        let a = norm_axis(self.axis, shape.len())?;
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let mut at = 0;
        for o in 0..outer {
            for i in ins {
                let len = i.shape[a] * inner;
                out[at..at + len].copy_from_slice(&i.data[o * len..(o + 1) * len]);
                at += len;
            }
        }
        Ok(())
    }

    fn placement(&self) -> Placement {
        Placement::Concat(self.axis)
    }
}

/// Slice with constant starts, ends, axes and steps.
pub struct Slice {
    /// Starts.
    pub starts: Vec<i64>,
    /// Ends.
    pub ends: Vec<i64>,
    /// Axes (all leading axes when `None`).
    pub axes: Option<Vec<i64>>,
    /// Steps (1 when `None`).
    pub steps: Option<Vec<i64>>,
}

// Slices clamp as in the reference target (ONNX rules): one implementation.
use jiuzhou_target_reference::ops::tensor::slice_range;

impl Slice {
    /// Per input axis: (first, count, step).
    fn ranges(&self, shape: &[usize]) -> Result<Vec<(usize, usize, i64)>, ExecError> {
        let r = shape.len();
        let n = self.starts.len();
        let axes = match &self.axes {
            Some(a) => norm_axes(a, r)?,
            None => (0..n).collect(),
        };
        let steps = self.steps.clone().unwrap_or_else(|| vec![1; n]);
        if self.ends.len() != n || axes.len() != n || steps.len() != n {
            return Err(ExecError::new(
                "starts, ends, axes and steps have different lengths",
            ));
        }
        if axes.iter().any(|&a| a >= r) {
            return Err(ExecError::new(format!(
                "more slice axes than the input's rank {r}"
            )));
        }
        let mut out: Vec<(usize, usize, i64)> = shape.iter().map(|&d| (0, d, 1)).collect();
        for k in 0..n {
            if steps[k] == 0 {
                return Err(ExecError::new(format!("slice step 0 on axis {}", axes[k])));
            }
            let (first, count) =
                slice_range(shape[axes[k]], self.starts[k], self.ends[k], steps[k]);
            out[axes[k]] = (first, count, steps[k]);
        }
        Ok(out)
    }
}

impl NativeKernel for Slice {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        Ok(self.ranges(ins[0])?.iter().map(|r| r.1).collect())
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let shape = ins[0].shape;
        let ranges = self.ranges(shape)?;
        let out_shape: Vec<usize> = ranges.iter().map(|r| r.1).collect();
        check_buffers(ins, out, &out_shape)?;
        let st = strides(shape);
        let maps: AxisMaps = ranges
            .iter()
            .zip(&st)
            .map(|(&(first, count, step), &s)| {
                (0..count)
                    .map(|j| Some((first as i128 + j as i128 * step as i128) as usize * s))
                    .collect()
            })
            .collect();
        remap(ins[0].data, &maps, 0.0, out, par)
    }
}

/// Gather along `axis` with constant indices.
pub struct Gather {
    /// The axis, possibly negative.
    pub axis: i64,
    /// The indices, row-major.
    pub indices: Vec<i64>,
    /// Their shape.
    pub indices_shape: Vec<usize>,
}

impl NativeKernel for Gather {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let s = ins[0];
        let a = norm_axis(self.axis, s.len())?;
        let mut shape = s[..a].to_vec();
        shape.extend_from_slice(&self.indices_shape);
        shape.extend_from_slice(&s[a + 1..]);
        numel(&shape)?;
        Ok(shape)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        let s = ins[0].shape;
        let shape = self.out_shape(&[s])?;
        check_buffers(ins, out, &shape)?;
        let a = norm_axis(self.axis, s.len())?;
        let dim = s[a];
        let idx: Vec<usize> = self
            .indices
            .iter()
            .map(|&i| {
                let j = if i < 0 { i + dim as i64 } else { i };
                if j < 0 || j >= dim as i64 {
                    Err(ExecError::new(format!(
                        "index {i} is out of range for a dim of {dim}"
                    )))
                } else {
                    Ok(j as usize)
                }
            })
            .collect::<Result<_, _>>()?;
        let outer: usize = s[..a].iter().product();
        let inner: usize = s[a + 1..].iter().product();
        let mut at = 0;
        for o in 0..outer {
            for &i in &idx {
                let src = &ins[0].data[(o * dim + i) * inner..][..inner];
                out[at..at + inner].copy_from_slice(src);
                at += inner;
            }
        }
        Ok(())
    }
}

/// How Pad fills positions outside the input.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PadMode {
    Constant(f32),
    Edge,
    Wrap,
    Reflect,
}

/// Pad with constant pads (and axes).
pub struct Pad {
    mode: PadMode,
    pads: Vec<i64>,
    axes: Option<Vec<i64>>,
}

impl Pad {
    /// A Pad of a known mode, or `None`.
    pub fn new(mode: &str, pads: Vec<i64>, value: f32, axes: Option<Vec<i64>>) -> Option<Pad> {
        let mode = match mode {
            "constant" => PadMode::Constant(value),
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            "reflect" => PadMode::Reflect,
            _ => return None,
        };
        Some(Pad { mode, pads, axes })
    }

    /// Per axis: (pad before, output size).
    fn geometry(&self, shape: &[usize]) -> Result<Vec<(i64, usize)>, ExecError> {
        let r = shape.len();
        let ax = match &self.axes {
            Some(a) => norm_axes(a, r)?,
            None => (0..r).collect(),
        };
        let n = ax.len();
        if self.pads.len() != 2 * n {
            return Err(ExecError::new(format!(
                "pads has {} entries for {n} axes",
                self.pads.len()
            )));
        }
        let (mut begin, mut end) = (vec![0i64; r], vec![0i64; r]);
        for (k, &a) in ax.iter().enumerate() {
            begin[a] = self.pads[k];
            end[a] = self.pads[n + k];
        }
        (0..r)
            .map(|a| {
                let size = shape[a] as i128 + begin[a] as i128 + end[a] as i128;
                if size < 0 {
                    return Err(ExecError::new(format!(
                        "pads remove more than the {} elements of axis {a}",
                        shape[a]
                    )));
                }
                let size =
                    usize::try_from(size).map_err(|_| ExecError::new("padded size overflows"))?;
                Ok((begin[a], size))
            })
            .collect()
    }
}

impl NativeKernel for Pad {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let out: Vec<usize> = self.geometry(ins[0])?.iter().map(|g| g.1).collect();
        numel(&out)?;
        Ok(out)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let shape = ins[0].shape;
        let geo = self.geometry(shape)?;
        let out_shape: Vec<usize> = geo.iter().map(|g| g.1).collect();
        check_buffers(ins, out, &out_shape)?;
        let st = strides(shape);
        let mut maps: AxisMaps = Vec::with_capacity(shape.len());
        for (a, &(begin, size)) in geo.iter().enumerate() {
            let d = shape[a] as i128;
            let mut m = Vec::with_capacity(size);
            for j in 0..size as i128 {
                let s = j - begin as i128;
                let src = if (0..d).contains(&s) {
                    Some(s)
                } else if let PadMode::Constant(_) = self.mode {
                    None
                } else if d == 0 {
                    return Err(ExecError::new("cannot pad an empty axis by its edges"));
                } else {
                    match self.mode {
                        PadMode::Constant(_) => None,
                        PadMode::Edge => Some(s.clamp(0, d - 1)),
                        PadMode::Wrap => Some(s.rem_euclid(d)),
                        PadMode::Reflect if d == 1 => Some(0),
                        PadMode::Reflect => {
                            let p = 2 * (d - 1);
                            let r = s.rem_euclid(p);
                            Some(if r < d { r } else { p - r })
                        }
                    }
                };
                m.push(src.map(|s| s as usize * st[a]));
            }
            maps.push(m);
        }
        let fill = match self.mode {
            PadMode::Constant(v) => v,
            _ => 0.0,
        };
        remap(ins[0].data, &maps, fill, out, par)
    }
}

/// Expand to a constant shape (numpy broadcasting).
pub struct Expand {
    /// The target shape.
    pub shape: Vec<i64>,
}

impl Expand {
    fn target(&self) -> Result<Vec<usize>, ExecError> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| ExecError::new("negative Expand size")))
            .collect()
    }
}

impl NativeKernel for Expand {
    fn out_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>, ExecError> {
        let out = broadcast(ins[0], &self.target()?)?;
        numel(&out)?;
        Ok(out)
    }

    fn run(&self, ins: &[In<'_>], out: &mut [f32]) -> Result<(), ExecError> {
        self.run_par(ins, out, &Parallel::single())
    }

    fn run_par(&self, ins: &[In<'_>], out: &mut [f32], par: &Parallel) -> Result<(), ExecError> {
        let s = ins[0].shape;
        let out_shape = self.out_shape(&[s])?;
        check_buffers(ins, out, &out_shape)?;
        let st = strides(s);
        let off = out_shape.len() - s.len();
        let maps: AxisMaps = out_shape
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                (0..n)
                    .map(|j| {
                        Some(if k < off || s[k - off] == 1 {
                            0
                        } else {
                            j * st[k - off]
                        })
                    })
                    .collect()
            })
            .collect();
        remap(ins[0].data, &maps, 0.0, out, par)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transposes_merge_adjacent_axes() {
        use super::merge_axes;
        assert_eq!(
            merge_axes(&[1, 3, 4, 5, 6], &[0, 2, 1, 3, 4]),
            (vec![3, 4, 30], vec![1, 0, 2])
        );
        assert_eq!(merge_axes(&[2, 3, 4], &[0, 1, 2]), (vec![24], vec![0]));
        assert_eq!(merge_axes(&[2, 3, 4], &[2, 0, 1]), (vec![6, 4], vec![1, 0]));
        assert_eq!(merge_axes(&[1, 1], &[1, 0]), (vec![], vec![]));
    }
}
