//! The heavy f32 kernels: MatMul, Gemm and Conv through the `gemm` crate's microkernels, and a direct depthwise
//! convolution.
//!
//! Each kernel takes its operands as row-major slices with their shapes and writes a preallocated output. The fused
//! epilogue ([`Epilogue`]) is applied per output block: the bias is written into the block before the product is
//! accumulated onto it (`gemm` reads the destination), and Relu runs over the block right after its product, while
//! it is still in cache.
//!
//! Threads ([`Parallel`]): a product is split either by `gemm` itself (`Parallelism::Rayon`, over output tiles) or,
//! when there are at least as many independent products as threads (batched MatMul, batch × group of a Conv), one
//! product per task with a single-threaded `gemm`; im2col and depthwise convolution split over channels. Every
//! output element is summed in the same order whatever the thread count, so results are bit-identical.

use gemm::Parallelism;
use jiuzhou_ir::infer::nn::window::Window;

use crate::ExecError;
use crate::parallel::{MIN_CHUNK, Parallel};

/// What happens to an output block after its product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epilogue {
    /// Clamp the block at zero (a fused Relu).
    pub relu: bool,
}

/// `dst[m×n] = (acc ? dst : 0) + scale·lhs[m×k]·rhs[k×n]`, all with the given row and column strides (in elements).
///
/// # Safety
/// The pointers must cover every element the strides and sizes address; `dst` must not overlap the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn raw_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    acc: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    scale: f32,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                // SAFETY: row `i` of `dst` has `n` elements (caller's contract).
                unsafe { std::ptr::write_bytes(dst.offset(i as isize * dst_rs), 0, n) };
            }
        }
        return;
    }
    // SAFETY: forwarded caller's contract; `gemm` computes dst := alpha·dst + beta·lhs·rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            acc,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if acc { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

fn relu(block: &mut [f32]) {
    for v in block {
        // As the reference's `x.max(0.0)`: NaN gives 0.
        *v = v.max(0.0);
    }
}

/// Relu over a whole output, split into chunks across threads.
fn par_relu(par: &Parallel, out: &mut [f32]) {
    par.for_each_chunk(out, 1, MIN_CHUNK, |_, c| relu(c));
}

/// Checks a product of sizes, for buffers sized from data.
fn numel(dims: &[usize]) -> Result<usize, ExecError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ExecError::new(format!("shape {dims:?} is too large")))
}

/// The output shape of MatMul (numpy `matmul` semantics, 1-D operands promoted and their axis removed).
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ExecError> {
    if a.is_empty() || b.is_empty() {
        return Err(ExecError::new("MatMul operands must have rank >= 1"));
    }
    let (ap, bp) = (promote_a(a), promote_b(b));
    let (m, ka) = (ap[ap.len() - 2], ap[ap.len() - 1]);
    let (kb, n) = (bp[bp.len() - 2], bp[bp.len() - 1]);
    if ka != kb {
        return Err(ExecError::new(format!(
            "MatMul of {a:?} by {b:?}: inner dims {ka} and {kb} differ"
        )));
    }
    let batch = broadcast(&ap[..ap.len() - 2], &bp[..bp.len() - 2])?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

fn promote_a(a: &[usize]) -> Vec<usize> {
    if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    }
}

fn promote_b(b: &[usize]) -> Vec<usize> {
    if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    }
}

/// The numpy broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ExecError> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(ExecError::new(format!(
                    "shapes {a:?} and {b:?} do not broadcast"
                ))),
            }
        })
        .collect()
}

/// Row-major strides of `shape`, 0 along axes of size 1 (so broadcast axes repeat), aligned to rank `r`.
pub fn broadcast_strides(shape: &[usize], r: usize) -> Vec<usize> {
    let mut s = vec![0; r];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        let o = r - shape.len() + i;
        s[o] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    s
}

/// MatMul of `a` by `b` into `out` (sized by [`matmul_shape`]).
pub fn matmul(
    a: &[f32],
    ash: &[usize],
    b: &[f32],
    bsh: &[usize],
    out: &mut [f32],
    par: &Parallel,
) -> Result<(), ExecError> {
    let osh = matmul_shape(ash, bsh)?;
    if a.len() != numel(ash)? || b.len() != numel(bsh)? || out.len() != numel(&osh)? {
        return Err(ExecError::new("MatMul buffers do not match their shapes"));
    }
    let (ap, bp) = (promote_a(ash), promote_b(bsh));
    let (m, k, n) = (ap[ap.len() - 2], ap[ap.len() - 1], bp[bp.len() - 1]);
    let batch = broadcast(&ap[..ap.len() - 2], &bp[..bp.len() - 2])?;
    let nb = numel(&batch)?;
    // A 2-D right operand: the batch of `a` folds into its rows, one big product.
    if bp.len() == 2 {
        let rows = nb * m;
        // SAFETY: sizes were checked above against the buffers.
        unsafe {
            raw_gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                n as isize,
                false,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                1.0,
                par.gemm(),
            )
        };
        return Ok(());
    }
    let r = batch.len();
    let sa = broadcast_strides(&ap[..ap.len() - 2], r);
    let sb = broadcast_strides(&bp[..bp.len() - 2], r);
    // One product per task when there are enough of them, else one product at a time split by `gemm`.
    let split = nb >= par.threads();
    let inner = if split { Parallelism::None } else { par.gemm() };
    par.for_each_item(out, m * n, split, |bi, dst| {
        // The batch index of product `bi`, unravelled over the broadcast batch dims.
        let (mut rest, mut ao, mut bo) = (bi, 0usize, 0usize);
        for d in (0..r).rev() {
            let i = rest % batch[d];
            rest /= batch[d];
            ao += i * sa[d];
            bo += i * sb[d];
        }
        // SAFETY: offsets index whole matrices inside the checked buffers; `dst` is product `bi`'s [m, n].
        unsafe {
            raw_gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                n as isize,
                false,
                a.as_ptr().add(ao * m * k),
                k as isize,
                1,
                b.as_ptr().add(bo * k * n),
                n as isize,
                1,
                1.0,
                inner,
            )
        };
    });
    Ok(())
}

/// A Gemm's right operand: `[k, n]` row-major, whatever `transB` was (pre-packed at compile time when constant).
pub struct GemmArgs<'a> {
    /// `A` as stored.
    pub a: &'a [f32],
    /// `A`'s stored shape (2-D).
    pub ash: &'a [usize],
    /// Whether `A` is stored transposed.
    pub trans_a: bool,
    /// `B` as stored.
    pub b: &'a [f32],
    /// `B`'s stored shape (2-D).
    pub bsh: &'a [usize],
    /// Whether `B` is stored transposed.
    pub trans_b: bool,
    /// `C` and its shape, if given.
    pub c: Option<(&'a [f32], &'a [usize])>,
    /// `alpha`.
    pub alpha: f32,
    /// `beta`.
    pub beta: f32,
}

/// The output shape `[m, n]` of a Gemm.
pub fn gemm_shape(g: &GemmArgs<'_>) -> Result<Vec<usize>, ExecError> {
    let (&[a0, a1], &[b0, b1]) = (g.ash, g.bsh) else {
        return Err(ExecError::new("Gemm operands must be 2-D"));
    };
    let (m, ka) = if g.trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if g.trans_b { (b1, b0) } else { (b0, b1) };
    if ka != kb {
        return Err(ExecError::new(format!(
            "Gemm: inner dims {ka} and {kb} differ"
        )));
    }
    Ok(vec![m, n])
}

/// `out = alpha·op(A)·op(B) + beta·C`, then the epilogue.
pub fn gemm(
    g: &GemmArgs<'_>,
    out: &mut [f32],
    epi: Epilogue,
    par: &Parallel,
) -> Result<(), ExecError> {
    let osh = gemm_shape(g)?;
    let (m, n) = (osh[0], osh[1]);
    let k = if g.trans_a { g.ash[0] } else { g.ash[1] };
    if g.a.len() != numel(g.ash)? || g.b.len() != numel(g.bsh)? || out.len() != m * n {
        return Err(ExecError::new("Gemm buffers do not match their shapes"));
    }
    let mut acc = false;
    if let Some((c, csh)) = g.c
        && g.beta != 0.0
    {
        if c.len() != numel(csh)? || broadcast(csh, &osh)? != osh {
            return Err(ExecError::new(format!(
                "Gemm: C of shape {csh:?} does not broadcast to {osh:?}"
            )));
        }
        let s = broadcast_strides(csh, 2);
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = g.beta * c[i * s[0] + j * s[1]];
            }
        }
        acc = true;
    }
    let (a_rs, a_cs) = if g.trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if g.trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: sizes were checked above.
    unsafe {
        raw_gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            n as isize,
            acc,
            g.a.as_ptr(),
            a_rs,
            a_cs,
            g.b.as_ptr(),
            b_rs,
            b_cs,
            g.alpha,
            par.gemm(),
        )
    };
    if epi.relu {
        par_relu(par, out);
    }
    Ok(())
}

/// The resolved geometry of a convolution, spatial dims padded to three.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeom {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    input: [usize; 3],
    output: [usize; 3],
    kernel: [usize; 3],
    strides: [usize; 3],
    dilations: [usize; 3],
    pad_begin: [usize; 3],
    /// The output shape.
    pub out_shape: Vec<usize>,
}

fn pad3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

/// The attributes of a Conv node.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    /// `auto_pad`.
    pub auto_pad: String,
    /// `dilations`.
    pub dilations: Option<Vec<i64>>,
    /// `group`.
    pub group: i64,
    /// `kernel_shape`.
    pub kernel_shape: Option<Vec<i64>>,
    /// `pads`.
    pub pads: Option<Vec<i64>>,
    /// `strides`.
    pub strides: Option<Vec<i64>>,
}

impl ConvGeom {
    /// Checks shapes and resolves the geometry of a convolution of `x` by `w` (`[M, C/group, k..]`).
    pub fn new(x: &[usize], w: &[usize], a: &ConvAttrs) -> Result<ConvGeom, ExecError> {
        if x.len() < 3 || x.len() > 5 || w.len() != x.len() {
            return Err(ExecError::new(format!(
                "Conv of {x:?} by {w:?}: expected equal ranks 3 to 5"
            )));
        }
        let n = x.len() - 2;
        let group = usize::try_from(a.group)
            .ok()
            .filter(|&g| g >= 1)
            .ok_or_else(|| ExecError::new(format!("group {} must be positive", a.group)))?;
        let kernel: Vec<i64> = w[2..].iter().map(|&k| k as i64).collect();
        if let Some(k) = &a.kernel_shape
            && *k != kernel
        {
            return Err(ExecError::new("kernel_shape does not match the weight"));
        }
        if w[1].checked_mul(group) != Some(x[1]) || !w[0].is_multiple_of(group) {
            return Err(ExecError::new(format!(
                "input {x:?} and weight {w:?} do not fit group {group}"
            )));
        }
        let geo = |e: jiuzhou_ir::infer::InferError| ExecError::new(e.to_string());
        let win = Window::new(
            n,
            &kernel,
            a.strides.as_deref(),
            a.dilations.as_deref(),
            a.pads.as_deref(),
            &a.auto_pad,
            0,
        )
        .map_err(geo)?;
        let mut output = Vec::with_capacity(n);
        let mut pad_begin = Vec::with_capacity(n);
        for (i, &d) in x[2..].iter().enumerate() {
            let g = win.axis(i, d).map_err(geo)?;
            output.push(g.output);
            pad_begin.push(g.pad_begin);
        }
        let mut out_shape = vec![x[0], w[0]];
        out_shape.extend(&output);
        numel(&out_shape)?;
        Ok(ConvGeom {
            batch: x[0],
            in_channels: x[1],
            out_channels: w[0],
            group,
            input: pad3(&x[2..], 1),
            output: pad3(&output, 1),
            kernel: pad3(&w[2..], 1),
            strides: pad3(&win.strides, 1),
            dilations: pad3(&win.dilations, 1),
            pad_begin: pad3(&pad_begin, 0),
            out_shape,
        })
    }

    fn in_len(&self) -> usize {
        self.input.iter().product()
    }

    fn out_len(&self) -> usize {
        self.output.iter().product()
    }

    fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Whether the convolution is a plain matrix product (1×1 kernel, unit strides, no padding).
    fn is_pointwise(&self) -> bool {
        self.taps() == 1
            && self.strides == [1; 3]
            && self.pad_begin == [0; 3]
            && self.input == self.output
    }

    /// Whether each output channel reads exactly one input channel (depthwise).
    pub fn is_depthwise(&self) -> bool {
        self.group > 1 && self.group == self.in_channels && self.group == self.out_channels
    }

    /// For every output position along one axis and tap, the input index or `None` (padding).
    fn src(&self, axis: usize, o: usize, t: usize) -> Option<usize> {
        let p = (o * self.strides[axis] + t * self.dilations[axis]) as isize
            - self.pad_begin[axis] as isize;
        (p >= 0 && (p as usize) < self.input[axis]).then_some(p as usize)
    }
}

/// Fills `col` (`[taps, out_len]`) with the input windows of one channel `xc` (`[in_len]`); padding reads zero.
fn im2col_channel(g: &ConvGeom, xc: &[f32], col: &mut [f32]) {
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let ol = g.out_len();
    let [_, ih, iw] = g.input;
    let mut row = 0;
    for a in 0..kd {
        for b in 0..kh {
            for e in 0..kw {
                let dst = &mut col[row * ol..(row + 1) * ol];
                row += 1;
                let mut o = 0;
                for z in 0..od {
                    let sz = g.src(0, z, a);
                    for y in 0..oh {
                        let sy = g.src(1, y, b);
                        let line = &mut dst[o..o + ow];
                        o += ow;
                        let (Some(sz), Some(sy)) = (sz, sy) else {
                            line.fill(0.0);
                            continue;
                        };
                        let base = (sz * ih + sy) * iw;
                        for (xo, v) in line.iter_mut().enumerate() {
                            *v = match g.src(2, xo, e) {
                                Some(sx) => xc[base + sx],
                                None => 0.0,
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Fills `col` (`[C·taps, out_len]`) with the input windows of `x` (`[C, in_len]`), one channel per task.
fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32], par: &Parallel) {
    let (plane, rows) = (g.in_len(), g.taps() * g.out_len());
    let split = col.len() >= 2 * MIN_CHUNK;
    par.for_each_item(col, rows, split, |c, dst| {
        im2col_channel(g, &x[c * plane..(c + 1) * plane], dst)
    });
}

/// One group of one image: `block[mg, ol] = bias + w[mg, kdim]·im2col(xs)`, then the epilogue.
#[allow(clippy::too_many_arguments)]
fn conv_block(
    g: &ConvGeom,
    xs: &[f32],
    wg: &[f32],
    bias: Option<&[f32]>,
    col: &mut [f32],
    block: &mut [f32],
    epi: Epilogue,
    par: &Parallel,
    inner: Parallelism,
) {
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let (ol, kdim) = (g.out_len(), cg * g.taps());
    let rhs: &[f32] = if g.is_pointwise() {
        xs
    } else {
        im2col(g, xs, col, par);
        col
    };
    if let Some(b) = bias {
        for (r, row) in block.chunks_exact_mut(ol).enumerate() {
            row.fill(b[r]);
        }
    }
    // SAFETY: `wg` is [mg, kdim], `rhs` is [kdim, ol] and `block` is [mg, ol], all checked by the caller.
    unsafe {
        raw_gemm(
            mg,
            ol,
            kdim,
            block.as_mut_ptr(),
            ol as isize,
            bias.is_some(),
            wg.as_ptr(),
            kdim as isize,
            1,
            rhs.as_ptr(),
            ol as isize,
            1,
            1.0,
            inner,
        )
    };
    if epi.relu {
        par_relu(par, block);
    }
}

/// Convolution of `x` by `w` plus optional `bias` into `out` (`geom.out_shape`), then the epilogue.
pub fn conv(
    geom: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    epi: Epilogue,
    par: &Parallel,
) -> Result<(), ExecError> {
    let g = geom;
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let (il, ol, taps) = (g.in_len(), g.out_len(), g.taps());
    if x.len() != numel(&[g.batch, g.in_channels, il])?
        || w.len() != numel(&[g.out_channels, cg, taps])?
        || out.len() != numel(&[g.batch, g.out_channels, ol])?
        || bias.is_some_and(|b| b.len() != g.out_channels)
    {
        return Err(ExecError::new("Conv buffers do not match their shapes"));
    }
    if g.is_depthwise() {
        depthwise(g, x, w, bias, out, epi, par);
        return Ok(());
    }
    let kdim = cg * taps;
    let col_len = if g.is_pointwise() {
        0
    } else {
        numel(&[kdim, ol])?
    };
    // Output block `i` is group `i % group` of image `i / group`: `[mg, ol]`, contiguous in `out`.
    let block_len = mg * ol;
    let blocks = g.batch * g.group;
    let operands = |i: usize| {
        let (n, gi) = (i / g.group, i % g.group);
        let xs = &x[(n * g.in_channels + gi * cg) * il..][..cg * il];
        let wg = &w[gi * mg * kdim..][..mg * kdim];
        let bg = bias.map(|b| &b[gi * mg..][..mg]);
        (xs, wg, bg)
    };
    if par.is_parallel() && blocks >= par.threads() {
        // One block per task, each with its own im2col buffer and a single-threaded product.
        let one = Parallel::single();
        par.for_each_item(out, block_len, true, |i, block| {
            let (xs, wg, bg) = operands(i);
            let mut col = vec![0.0f32; col_len];
            conv_block(g, xs, wg, bg, &mut col, block, epi, &one, Parallelism::None);
        });
    } else {
        let mut col = vec![0.0f32; col_len];
        if block_len > 0 {
            for (i, block) in out.chunks_exact_mut(block_len).enumerate() {
                let (xs, wg, bg) = operands(i);
                conv_block(g, xs, wg, bg, &mut col, block, epi, par, par.gemm());
            }
        }
    }
    Ok(())
}

/// Depthwise convolution: each channel by its own filter, summed directly; one output plane per task.
fn depthwise(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    epi: Epilogue,
    par: &Parallel,
) {
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [_, ih, iw] = g.input;
    let (il, ol, taps) = (g.in_len(), g.out_len(), g.taps());
    let split = out.len() >= 2 * MIN_CHUNK;
    par.for_each_item(out, ol, split, |i, oc| {
        // Plane `i` is channel `i % C` of image `i / C`.
        let (n, c) = (i / g.in_channels, i % g.in_channels);
        let xc = &x[(n * g.in_channels + c) * il..][..il];
        let wc = &w[c * taps..][..taps];
        let b0 = bias.map_or(0.0, |b| b[c]);
        let mut o = 0;
        for z in 0..od {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b0;
                    for a in 0..kd {
                        let Some(sz) = g.src(0, z, a) else { continue };
                        for b in 0..kh {
                            let Some(sy) = g.src(1, y, b) else { continue };
                            let base = (sz * ih + sy) * iw;
                            let wrow = &wc[(a * kh + b) * kw..][..kw];
                            for (e, &wv) in wrow.iter().enumerate() {
                                if let Some(sx) = g.src(2, xo, e) {
                                    acc += xc[base + sx] * wv;
                                }
                            }
                        }
                    }
                    oc[o] = acc;
                    o += 1;
                }
            }
        }
        if epi.relu {
            relu(oc);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_small() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut out = [0.0; 4];
        matmul(&a, &[2, 3], &b, &[3, 2], &mut out, &Parallel::single()).unwrap();
        assert_eq!(out, [4.0, 5.0, 10.0, 11.0]);
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul_shape(&[3], &[3]).unwrap(), Vec::<usize>::new());
        assert_eq!(
            matmul_shape(&[2, 1, 4, 3], &[5, 3, 2]).unwrap(),
            vec![2, 5, 4, 2]
        );
        assert!(matmul_shape(&[2, 3], &[4, 2]).is_err());
    }
}
