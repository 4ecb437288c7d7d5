//! The heavy f32 kernels: MatMul, Gemm and Conv through the `gemm` crate's microkernels, and a direct depthwise
//! convolution. Convolutions whose weights were packed at compile time ([`PackedConv`], on CPUs with AVX2 and FMA)
//! run on [`packed_gemm`] instead: a 1×1 stride-1 convolution packs its NCHW input, others pack their im2col rows
//! straight into its column strips (the activations are copied once), and the epilogue is applied in registers.
//!
//! Each kernel takes its operands as row-major slices with their shapes and writes a preallocated output. The fused
//! epilogue ([`Epilogue`]) is applied per output block: the bias is written into the block before the product is
//! accumulated onto it (`gemm` reads the destination), and Relu runs over the block right after its product, while
//! it is still in cache.
//!
//! Threads ([`Parallel`]): MatMul and Gemm are split by `gemm` itself (`Parallelism::Rayon`, over output tiles,
//! with k-blocking independent of the thread count). With threads, a convolution cuts each output block into
//! tiles (`conv_tiles`), one single-threaded GEMM call per tile, the tiles spread over the threads (the im2col
//! rows of the block too, one input channel per task); one thread makes one call per block. Both sum every
//! output element in the same order; depthwise convolution splits over output planes. Results are bit-identical
//! for every thread count.

use gemm::Parallelism;
use jiuzhou_ir::infer::nn::window::Window;

use crate::ExecError;
use crate::packed_gemm::{self, PackB, PackedA};
use crate::parallel::{MIN_CHUNK, Parallel, SharedMut};

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
pub(crate) unsafe fn raw_gemm(
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
    let mut idx = vec![0usize; r];
    for bi in 0..nb {
        let ao: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum::<usize>() * m * k;
        let bo: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum::<usize>() * k * n;
        // SAFETY: offsets index whole matrices inside the checked buffers.
        unsafe {
            raw_gemm(
                m,
                n,
                k,
                out.as_mut_ptr().add(bi * m * n),
                n as isize,
                false,
                a.as_ptr().add(ao),
                k as isize,
                1,
                b.as_ptr().add(bo),
                n as isize,
                1,
                1.0,
                par.gemm(),
            )
        };
        for d in (0..r).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
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
        relu(out);
    }
    Ok(())
}

/// The resolved geometry of a convolution, spatial dims padded to three.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeom {
    pub(crate) batch: usize,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) group: usize,
    pub(crate) input: [usize; 3],
    pub(crate) output: [usize; 3],
    pub(crate) kernel: [usize; 3],
    pub(crate) strides: [usize; 3],
    pub(crate) dilations: [usize; 3],
    pub(crate) pad_begin: [usize; 3],
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

impl ConvAttrs {
    /// The attributes of the ONNX Conv `c`.
    pub fn of(c: &jiuzhou_ir::ops::Conv) -> ConvAttrs {
        ConvAttrs {
            auto_pad: c.auto_pad.clone(),
            dilations: c.dilations.clone(),
            group: c.group,
            kernel_shape: c.kernel_shape.clone(),
            pads: c.pads.clone(),
            strides: c.strides.clone(),
        }
    }
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

    pub(crate) fn in_len(&self) -> usize {
        self.input.iter().product()
    }

    pub(crate) fn out_len(&self) -> usize {
        self.output.iter().product()
    }

    pub(crate) fn taps(&self) -> usize {
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

/// The output range `[lo, hi)` of one axis whose tap `t` reads inside the input.
fn valid_range(g: &ConvGeom, axis: usize, t: usize) -> (usize, usize) {
    let (s, n) = (g.strides[axis] as isize, g.output[axis] as isize);
    let off = (t * g.dilations[axis]) as isize - g.pad_begin[axis] as isize;
    let size = g.input[axis] as isize;
    // o·s + off in [0, size)  ⇔  o in [ceil(-off / s), ceil((size - off) / s)).
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if size - off <= 0 {
        0
    } else {
        (size - off + s - 1) / s
    };
    let (lo, hi) = (lo.clamp(0, n), hi.clamp(0, n));
    (lo as usize, hi.max(lo) as usize)
}

/// Fills `col` (`[C·taps, cols]`, row-major) with the input windows of output positions `c0..c0 + cols` (flat
/// over the output's spatial axes) of `x` (`[C, in_len]`); padding reads zero.
fn im2col_block(g: &ConvGeom, channels: usize, x: &[f32], c0: usize, cols: usize, col: &mut [f32]) {
    let [kd, kh, kw] = g.kernel;
    let plane = g.in_len();
    let mut row = 0;
    for c in 0..channels {
        let xc = &x[c * plane..(c + 1) * plane];
        for a in 0..kd {
            for b in 0..kh {
                for e in 0..kw {
                    let mut dst = &mut col[row * cols..(row + 1) * cols];
                    im2col_row(g, xc, [a, b, e], c0, cols, &mut dst);
                    row += 1;
                }
            }
        }
    }
}

/// Where an im2col row goes: a plain row ([`im2col_block`]) or one row of [`packed_gemm`] strips ([`Im2colB`]).
/// Column `j` is relative to the first output position of the row.
trait RowSink {
    /// Columns `j..j + len` read padding.
    fn zero(&mut self, j: usize, len: usize);
    /// Columns `j..j + len` read `xc[start], xc[start + step], …, xc[start + (len - 1)·step]`.
    fn gather(&mut self, j: usize, xc: &[f32], start: usize, step: usize, len: usize);
}

/// A run of an im2col row's columns: padding, or a strided read of the input plane from `start`.
#[derive(Clone, Copy)]
struct Seg {
    j: usize,
    len: usize,
    start: Option<usize>,
}

/// Records the runs of an im2col row instead of writing them (the same for every input channel).
impl RowSink for Vec<Seg> {
    fn zero(&mut self, j: usize, len: usize) {
        self.push(Seg {
            j,
            len,
            start: None,
        });
    }

    fn gather(&mut self, j: usize, _: &[f32], start: usize, _: usize, len: usize) {
        self.push(Seg {
            j,
            len,
            start: Some(start),
        });
    }
}

/// Copies every `step`-th element of `src` into `dst` (`step` 1 is a copy; 2 goes by pairs, so that it vectorizes).
#[inline]
fn gather_into(dst: &mut [f32], src: &[f32], step: usize) {
    let len = dst.len();
    match step {
        1 => dst.copy_from_slice(&src[..len]),
        2 if src.len() >= 2 * len => {
            for (v, pair) in dst.iter_mut().zip(src[..2 * len].chunks_exact(2)) {
                *v = pair[0];
            }
        }
        _ => {
            for (v, &x) in dst.iter_mut().zip(src.iter().step_by(step)) {
                *v = x;
            }
        }
    }
}

impl RowSink for &mut [f32] {
    fn zero(&mut self, j: usize, len: usize) {
        self[j..j + len].fill(0.0);
    }

    fn gather(&mut self, j: usize, xc: &[f32], start: usize, step: usize, len: usize) {
        gather_into(
            &mut self[j..j + len],
            &xc[start..(start + len * step).min(xc.len())],
            step,
        );
    }
}

/// Row `p` of a block of [`packed_gemm`] strips (`kb` rows each, [`packed_gemm::strip_len`] apart).
struct StripRow<'a> {
    dst: &'a mut [f32],
    p: usize,
    strip: usize,
}

impl StripRow<'_> {
    /// Calls `f(strip row, offset)` for the pieces of columns `j..j + len` that fall in one strip each, `offset`
    /// being the piece's first column relative to `j`.
    #[inline]
    fn pieces(&mut self, j: usize, len: usize, mut f: impl FnMut(&mut [f32], usize)) {
        let end = j + len;
        let mut at = j;
        while at < end {
            let (s, jj) = (at / packed_gemm::NR, at % packed_gemm::NR);
            let take = (packed_gemm::NR - jj).min(end - at);
            let row = &mut self.dst[s * self.strip + self.p * packed_gemm::NR..][..packed_gemm::NR];
            f(&mut row[jj..jj + take], at - j);
            at += take;
        }
    }
}

impl RowSink for StripRow<'_> {
    fn zero(&mut self, j: usize, len: usize) {
        self.pieces(j, len, |d, _| d.fill(0.0));
    }

    fn gather(&mut self, j: usize, xc: &[f32], start: usize, step: usize, len: usize) {
        let src = &xc[start..(start + len * step).min(xc.len())];
        self.pieces(j, len, |d, o| {
            const NR: usize = packed_gemm::NR;
            if step == 1 && d.len() == NR {
                // A whole strip row: a fixed-size copy, inlined.
                let d: &mut [f32; NR] = d.try_into().expect("a strip row");
                *d = src[o..o + NR].try_into().expect("a strip row");
            } else if step == 2 && d.len() == NR && src.len() >= 2 * (o + NR) {
                // A whole strip row at stride 2: fixed-size, so that it becomes shuffles.
                let d: &mut [f32; NR] = d.try_into().expect("a strip row");
                let s: &[f32; 2 * NR] =
                    src[2 * o..2 * (o + NR)].try_into().expect("two strip rows");
                for (i, v) in d.iter_mut().enumerate() {
                    *v = s[2 * i];
                }
            } else {
                gather_into(d, &src[o * step..], step);
            }
        });
    }
}

/// Writes one im2col row of `cols` columns into `dst`: what tap `[a, b, e]` of the input plane `xc` (`[in_len]`)
/// reads for the output positions `c0..c0 + cols` (flat over the output's spatial axes); padding reads zero.
fn im2col_row(
    g: &ConvGeom,
    xc: &[f32],
    [a, b, e]: [usize; 3],
    c0: usize,
    cols: usize,
    dst: &mut impl RowSink,
) {
    let [_, oh, ow] = g.output;
    let [_, ih, iw] = g.input;
    let sw = g.strides[2];
    let (xlo, xhi) = valid_range(g, 2, e);
    let xoff = (e * g.dilations[2]) as isize - g.pad_begin[2] as isize;
    // Walk the block one output row (fixed z, y) at a time.
    let mut j = 0;
    while j < cols {
        let flat = c0 + j;
        let xo0 = flat % ow;
        let y = (flat / ow) % oh;
        let z = flat / (ow * oh);
        let run = (ow - xo0).min(cols - j);
        let line = j;
        j += run;
        let (Some(sz), Some(sy)) = (g.src(0, z, a), g.src(1, y, b)) else {
            dst.zero(line, run);
            continue;
        };
        let base = (sz * ih + sy) * iw;
        // Output columns xo0..xo0+run; valid ones are [xlo, xhi).
        let lo = xlo.clamp(xo0, xo0 + run);
        let hi = xhi.clamp(lo, xo0 + run);
        if lo > xo0 {
            dst.zero(line, lo - xo0);
        }
        if xo0 + run > hi {
            dst.zero(line + hi - xo0, xo0 + run - hi);
        }
        if hi > lo {
            let start = (base as isize + (lo * sw) as isize + xoff) as usize;
            let len = hi - lo;
            dst.gather(line + lo - xo0, xc, start, sw, len);
        }
    }
}

/// The im2col matrix (`[C·taps, out_len]`) of one image's (group's) input channels `x` (`[C, in_len]`), packed
/// into [`packed_gemm`] strips row by row, never materialized whole.
struct Im2colB<'a> {
    g: &'a ConvGeom,
    x: &'a [f32],
}

impl PackB for Im2colB<'_> {
    fn pack(&self, k0: usize, kb: usize, j0: usize, nc: usize, dst: &mut [f32]) {
        let [_, kh, kw] = self.g.kernel;
        let (il, taps) = (self.g.in_len(), self.g.taps());
        let strip = packed_gemm::strip_len(kb);
        let sw = self.g.strides[2];
        // The runs of each tap's row, found once and replayed for every input channel.
        let mut plans: Vec<Option<Vec<Seg>>> = vec![None; taps];
        for p in 0..kb {
            let (c, t) = ((k0 + p) / taps, (k0 + p) % taps);
            let xc = &self.x[c * il..][..il];
            let plan = plans[t].get_or_insert_with(|| {
                let tap = [t / (kh * kw), (t / kw) % kh, t % kw];
                let mut segs = Vec::new();
                im2col_row(self.g, xc, tap, j0, nc, &mut segs);
                segs
            });
            let mut row = StripRow { dst, p, strip };
            for seg in plan.iter() {
                match seg.start {
                    Some(start) => row.gather(seg.j, xc, start, sw, seg.len),
                    None => row.zero(seg.j, seg.len),
                }
            }
        }
        // The columns of the last strip past `nc`.
        let (s, used) = (nc / packed_gemm::NR, nc % packed_gemm::NR);
        if used > 0 {
            for p in 0..kb {
                dst[s * strip + p * packed_gemm::NR..][used..packed_gemm::NR].fill(0.0);
            }
        }
    }
}

/// Whether weights of shape `wsh` over `group` groups are a depthwise convolution's (one input channel per group and
/// per output channel), which runs its own kernel.
pub fn depthwise_weights(wsh: &[usize], group: usize) -> bool {
    group > 1 && wsh.get(1) == Some(&1) && wsh.first() == Some(&group)
}

/// A convolution's weights packed once for [`packed_gemm`]: one `[M/group, C/group·taps]` matrix per group.
pub struct PackedConv {
    group: usize,
    mats: Vec<PackedA>,
    /// The weights packed for the direct kernel instead ([`crate::direct_conv`]; `mats` is then empty).
    direct: Option<crate::direct_conv::DirectConv>,
    /// The weights transformed for the Winograd kernel instead ([`crate::winograd`]; `mats` is then empty).
    winograd: Option<crate::winograd::Winograd>,
}

impl PackedConv {
    /// Packs the weights `w` (`[M, C/group, k..]` row-major, of shape `wsh`) of a convolution with `group` groups
    /// and the given `strides`, or `None` where [`packed_gemm`] does not run (no AVX2+FMA, a depthwise
    /// convolution, shapes that do not fit). With a `winograd` tile (see [`winograd_tile`]) a 3×3 convolution's
    /// weights are transformed for [`crate::winograd`] instead.
    pub fn new(
        w: &[f32],
        wsh: &[usize],
        group: usize,
        strides: Option<&[i64]>,
        winograd: Option<usize>,
    ) -> Option<PackedConv> {
        if !packed_gemm::available() || wsh.len() < 3 || group == 0 || !wsh[0].is_multiple_of(group)
        {
            return None;
        }
        let (mg, kdim) = (wsh[0] / group, wsh[1..].iter().product::<usize>());
        if w.len() != wsh[0] * kdim || depthwise_weights(wsh, group) {
            return None;
        }
        if let Some(tile) = winograd
            && group == 1
            && let Some(wg) = crate::winograd::Winograd::new(w, wsh, tile)
        {
            return Some(PackedConv {
                group,
                mats: Vec::new(),
                direct: None,
                winograd: Some(wg),
            });
        }
        if direct_pays(wsh, strides)
            && let Some(d) = crate::direct_conv::DirectConv::new(w, wsh, group)
        {
            return Some(PackedConv {
                group,
                mats: Vec::new(),
                direct: Some(d),
                winograd: None,
            });
        }
        let mats = (0..group)
            .map(|gi| PackedA::new(&w[gi * mg * kdim..][..mg * kdim], mg, kdim, kdim, 1))
            .collect();
        Some(PackedConv {
            group,
            mats,
            direct: None,
            winograd: None,
        })
    }

    /// The kernel these weights are packed for: `winograd`, `direct` or `packed_gemm`.
    pub fn kernel_name(&self) -> &'static str {
        if self.winograd.is_some() {
            "winograd"
        } else if self.direct.is_some() {
            "direct"
        } else {
            "packed_gemm"
        }
    }

    /// Whether it holds the weights of a convolution with these groups and per-group sizes.
    fn fits(&self, group: usize, mg: usize, kdim: usize) -> bool {
        self.direct.is_none()
            && self.winograd.is_none()
            && self.group == group
            && self
                .mats
                .iter()
                .all(|a| a.rows() == mg && a.depth() == kdim)
    }
}

/// Whether a convolution with weights of shape `wsh` runs the direct kernel ([`crate::direct_conv`]) rather than
/// the packed GEMM, as measured on ResNet-50's layers here: spatial kernels over at least 16 input channels per
/// group (`wsh[1]`; no im2col packing: stride-1 3×3 at 7×7 to 56×56 5–17 % faster, stride-2 3×3 on phase-split
/// planes 0–8 %), and kernels at least 5 wide over fewer channels (reduction runs along a kernel row: the 7×7
/// stride-2 stem 3.8 -> 3.0 ms). 1×1 convolutions (B packing is a copy) measured faster on the GEMM.
fn direct_pays(wsh: &[usize], strides: Option<&[i64]>) -> bool {
    let (c, kw) = (
        wsh.get(1).copied().unwrap_or(0),
        wsh.last().copied().unwrap_or(0),
    );
    let spatial = wsh.len() >= 3 && wsh[2..].iter().product::<usize>() > 1;
    // The kernel's tiles read output positions at most 2 input elements apart (`DirectConv::fits`).
    let narrow = strides.is_none_or(|s| s.last().is_none_or(|&s| (1..=2).contains(&s)));
    spatial && narrow && (c >= 16 || kw >= 5)
}

/// The output tile with which a convolution with weights of shape `wsh`, attributes `a` and input shape `x` (when
/// known at compile time) runs the Winograd kernel ([`crate::winograd`]), if it does: 2-D 3×3, stride 1, no
/// dilation, one group, at least 16 input and output channels, and
/// - F(4×4, 3×3) with at least 9 output tiles of 4×4 (measured here: 13×13 to 56×56 outputs 1.4–3× faster than
///   the direct kernel; with 4 tiles — 7×7 or 8×8 outputs — the 36 products are too narrow for the transforms, and
///   the transformed weights, four times the size, stream from memory for those few tiles: a 32-channel 8×8 conv
///   measured 60 % slower, ResNet-50's 512-channel 7×7 ones 40 %);
/// - else F(2×2, 3×3) with at least 9 tiles of 2×2 and `C·M ≥ 128·128` (16 products, weights 16/9 the size:
///   ResNet-50's 512-channel 7×7 convs 3.2 -> 1.9 ms, 192 -> 224 channels at 7×7 0.46 -> 0.32 ms; 128 -> 32 or
///   64 -> 64 channels measured 10–40 % slower than the direct kernel).
///
/// Never when [`crate::winograd::ENV`] is `0`.
pub fn winograd_tile(wsh: &[usize], a: &ConvAttrs, x: Option<&[usize]>) -> Option<usize> {
    let g = ConvGeom::new(x.filter(|_| crate::winograd::enabled())?, wsh, a).ok()?;
    let takes = g.group == 1
        && g.kernel == [1, 3, 3]
        && g.strides == [1, 1, 1]
        && g.dilations == [1, 1, 1]
        && g.input[0] == 1
        && g.in_channels >= 16
        && g.out_channels >= 16;
    let tiles = |t: usize| g.output[1].div_ceil(t) * g.output[2].div_ceil(t);
    if !takes {
        None
    } else if tiles(4) >= 9 {
        Some(4)
    } else if tiles(2) >= 9 && g.in_channels * g.out_channels >= 128 * 128 {
        Some(2)
    } else {
        None
    }
}

/// Applies bias, residual and Relu to `len` outputs of channel `oc` starting at `row` (one pass, in cache).
#[inline]
fn finish_row(row: &mut [f32], bias: f32, residual: Option<&[f32]>, relu: bool) {
    match (residual, relu) {
        (Some(r), true) => row
            .iter_mut()
            .zip(r)
            .for_each(|(v, &r)| *v = (*v + bias + r).max(0.0)),
        (Some(r), false) => row.iter_mut().zip(r).for_each(|(v, &r)| *v = *v + bias + r),
        (None, true) => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
        (None, false) => {
            if bias != 0.0 {
                row.iter_mut().for_each(|v| *v += bias)
            }
        }
    }
}

/// How many output columns one block holds: about 1 MiB of im2col columns (the block stays in the L2 cache while
/// the GEMM runs), at least 256 (each GEMM call re-packs the weights, so blocks must be wide enough to amortize
/// that), a multiple of 16; when the whole output is at most half a block more, one block.
fn block_cols(kdim: usize, ol: usize) -> usize {
    let cols = (1024 * 1024 / 4 / kdim.max(1)).max(256) / 16 * 16;
    if ol <= cols + cols / 2 {
        ol.max(1)
    } else {
        cols
    }
}

/// Convolution of `x` by `w` plus optional `bias` into `out` (`geom.out_shape`), then the epilogue: `residual`
/// (same shape as `out`) is added and Relu applied, per output block right after its GEMM.
///
/// A 1×1 stride-1 unpadded convolution is one GEMM per column block read straight from the NCHW input; other
/// convolutions build im2col columns one block at a time (never the whole matrix); depthwise convolutions run a
/// direct kernel. Weights are `[M, C/group, k..]` row-major (pre-arranged and BatchNorm-folded by the caller).
#[allow(clippy::too_many_arguments)]
pub fn conv(
    geom: &ConvGeom,
    x: &[f32],
    w: &[f32],
    packed: Option<&PackedConv>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    out: &mut [f32],
    epi: Epilogue,
    par: &Parallel,
) -> Result<(), ExecError> {
    let g = geom;
    let (cg, mg) = (g.in_channels / g.group, g.out_channels / g.group);
    let (il, ol, taps) = (g.in_len(), g.out_len(), g.taps());
    // Packed weights replace `w` (which may then be empty).
    let direct = packed
        .and_then(|p| p.direct.as_ref())
        .filter(|d| !g.is_depthwise() && d.fits(g));
    let winograd = packed
        .and_then(|p| p.winograd.as_ref())
        .filter(|w| w.fits(g));
    let packed = packed.filter(|p| !g.is_depthwise() && p.fits(g.group, mg, cg * taps));
    if x.len() != numel(&[g.batch, g.in_channels, il])?
        || (packed.is_none()
            && direct.is_none()
            && winograd.is_none()
            && w.len() != numel(&[g.out_channels, cg, taps])?)
        || out.len() != numel(&[g.batch, g.out_channels, ol])?
        || bias.is_some_and(|b| b.len() != g.out_channels)
        || residual.is_some_and(|r| r.len() != out.len())
    {
        return Err(ExecError::new("Conv buffers do not match their shapes"));
    }
    if ol == 0 {
        return Ok(());
    }
    if g.is_depthwise() {
        // One output plane per task, its epilogue right after it.
        // Runs of whole output planes per task (each with its own scratch), the epilogue right after each plane.
        let padded = PaddedPlane::of(g);
        let min = if out.len() * taps >= 2 * MIN_CHUNK {
            MIN_CHUNK / taps.max(1)
        } else {
            out.len()
        };
        par.for_each_chunk(out, ol, min, |start, planes| {
            let mut scratch = (Vec::new(), Vec::new());
            for (i, plane) in planes.chunks_exact_mut(ol).enumerate() {
                let k = start / ol + i;
                match &padded {
                    Some(p) => p.depthwise(g, x, w, bias, k, plane, &mut scratch),
                    None => depthwise_plane(g, x, w, bias, k, plane),
                }
                let res = residual.map(|r| &r[k * ol..(k + 1) * ol]);
                finish_row(plane, 0.0, res, epi.relu);
            }
        });
        return Ok(());
    }
    if let Some(d) = direct {
        d.run(
            g,
            x,
            packed_gemm::Epi {
                bias,
                residual,
                relu: epi.relu,
            },
            out,
            par,
        );
        return Ok(());
    }
    if let Some(wg) = winograd {
        wg.run(
            g,
            x,
            packed_gemm::Epi {
                bias,
                residual,
                relu: epi.relu,
            },
            out,
            par,
        );
        return Ok(());
    }
    let kdim = cg * taps;
    let pointwise = g.is_pointwise();
    if let Some(p) = packed {
        for n in 0..g.batch {
            for (gi, a) in p.mats.iter().enumerate() {
                let xs = &x[(n * g.in_channels + gi * cg) * il..][..cg * il];
                let oc0 = gi * mg;
                let base = (n * g.out_channels + oc0) * ol;
                let (mat, cols);
                let b: &dyn PackB = if pointwise {
                    mat = packed_gemm::MatB { data: xs, rs: ol };
                    &mat
                } else {
                    cols = Im2colB { g, x: xs };
                    &cols
                };
                let epi = packed_gemm::Epi {
                    bias: bias.map(|b| &b[oc0..oc0 + mg]),
                    residual: residual.map(|r| &r[base..base + mg * ol]),
                    relu: epi.relu,
                };
                let dst = &mut out[base..base + mg * ol];
                // SAFETY: `dst` is this group's [mg, ol] output block, the epilogue operands line up with it (sizes
                // checked above), and `PackedConv` only exists where the kernel runs.
                unsafe { packed_gemm::gemm(a, b, ol, dst.as_mut_ptr(), ol, epi, par) };
            }
        }
        return Ok(());
    }
    let nb = block_cols(kdim, ol);
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![0.0f32; numel(&[kdim, nb])?]
    };
    let dst = SharedMut(out.as_mut_ptr());
    for n in 0..g.batch {
        for gi in 0..g.group {
            let xs = &x[(n * g.in_channels + gi * cg) * il..][..cg * il];
            let oc0 = gi * mg;
            let wg = &w[oc0 * kdim..][..mg * kdim];
            let base = (n * g.out_channels + oc0) * ol;
            let mut c0 = 0;
            while c0 < ol {
                let cols = nb.min(ol - c0);
                let (rhs, rhs_rs) = if pointwise {
                    (SharedMut(xs[c0..].as_ptr().cast_mut()), ol)
                } else {
                    // The im2col rows of each input channel are independent: split them over the threads.
                    let plane = il;
                    let col = &mut col[..kdim * cols];
                    par.for_each_item(
                        col,
                        taps * cols,
                        cg > 1 && kdim * cols >= 2 * MIN_CHUNK,
                        |c, rows| im2col_block(g, 1, &xs[c * plane..][..plane], c0, cols, rows),
                    );
                    (SharedMut(col.as_mut_ptr()), cols)
                };
                // Tiles of the [mg, cols] output block, fixed by the shape alone (never by the thread count), so
                // every output element is computed by the same GEMM call whatever the number of threads.
                let (mparts, nparts) = if par.is_parallel() {
                    conv_tiles(mg, cols, kdim)
                } else {
                    (1, 1)
                };
                par.for_each_index(mparts * nparts, |t| {
                    let (ti, tj) = (t / nparts, t % nparts);
                    let (r0, j0) = (ti * mg / mparts, tj * cols / nparts);
                    let rows = (ti + 1) * mg / mparts - r0;
                    let width = (tj + 1) * cols / nparts - j0;
                    let at = base + r0 * ol + c0 + j0;
                    // SAFETY: `wg` is [mg, kdim]; `rhs` addresses [kdim, cols] with row stride `rhs_rs` inside `xs`
                    // or `col`; tile `t` writes rows r0..r0+rows, columns c0+j0..c0+j0+width of this output block
                    // (row stride `ol`, all inside `out`, checked above), disjoint from every other tile's.
                    unsafe {
                        raw_gemm(
                            rows,
                            width,
                            kdim,
                            dst.ptr().add(at),
                            ol as isize,
                            false,
                            wg.as_ptr().add(r0 * kdim),
                            kdim as isize,
                            1,
                            rhs.ptr().add(j0).cast_const(),
                            rhs_rs as isize,
                            1,
                            1.0,
                            Parallelism::None,
                        )
                    };
                    for r in 0..rows {
                        let at = at + r * ol;
                        // SAFETY: as above, this tile's own row segment.
                        let row =
                            unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(at), width) };
                        let b = bias.map_or(0.0, |b| b[oc0 + r0 + r]);
                        finish_row(row, b, residual.map(|res| &res[at..at + width]), epi.relu);
                    }
                });
                c0 += cols;
            }
        }
    }
    Ok(())
}

/// Whether `gemm` 0.19 takes its small-matrix path for an `m×n` product, whose k-blocking is `min(k, 512)`
/// instead of the one its cache model picks (the same up to `k = 512`, else possibly not).
fn gemm_small(m: usize, n: usize) -> bool {
    m <= 64 && n <= 64
}

/// How many row and column parts a conv's `[m, n]` output block (reduction length `k`) is cut into when there are
/// threads to share them, one single-threaded GEMM call each. Small blocks are one part; larger ones about four,
/// columns first (at least 256 wide: each part re-packs only its share of the columns and the small weight
/// block), then rows (at least 32 each) when the block is narrow. Parts are balanced (sizes differ by at most one).
///
/// Every output element is computed exactly as by one call on the whole block (what one thread does): `gemm`
/// sums each element along `k` in blocks that depend only on `k` and on whether the call is "small"
/// ([`gemm_small`]), never on which rows or columns the call covers, and no part is small unless the block is
/// (or `k <= 512`, where both blockings agree). The `models` tests check 1 and 2 threads bit for bit.
fn conv_tiles(m: usize, n: usize, k: usize) -> (usize, usize) {
    if m.saturating_mul(n).saturating_mul(k) < (1 << 21) {
        return (1, 1);
    }
    let nparts = (n / 256).clamp(1, 4);
    let mut mparts = 4usize.div_ceil(nparts).min(m / 32).max(1);
    // The smallest part is (m / mparts) × (n / nparts).
    while mparts > 1 && k > 512 && gemm_small(m / mparts, n / nparts) != gemm_small(m, n) {
        mparts -= 1;
    }
    (mparts, nparts)
}

/// The geometry of a depthwise convolution over one spatial plane (2-D, or 1-D), computed on a zero-bordered
/// copy of each input plane split into its `sh·sw` stride phases (phase `(r, c)` holds the padded rows `≡ r` and
/// columns `≡ c` modulo the strides). Every tap then reads one phase at one constant offset from a "wide" output
/// (output rows laid out at the phase width), so each tap is one long contiguous multiply-add loop.
struct PaddedPlane {
    /// Height and width of one phase.
    qh: usize,
    qw: usize,
    /// Where the input plane starts in the padded one.
    top: usize,
    left: usize,
    /// For every tap, in the order (row, column), where its reads start in the phases buffer.
    tap_at: Vec<usize>,
    /// The input rows and columns that fall inside the padded plane (windows may not reach its far end).
    rows: usize,
    cols: usize,
    /// Column phase `p` takes the input columns `i0, i0 + sw, ..` (those whose padded column is ≡ p), from column
    /// `(left + i0) / sw` of its rows: `(i0, offset in a row of the phases buffer)` per phase with columns.
    col_phases: Vec<(usize, usize)>,
}

impl PaddedPlane {
    fn of(g: &ConvGeom) -> Option<PaddedPlane> {
        let flat = g.input[0] == 1 && g.output[0] == 1 && g.kernel[0] == 1;
        let [_, oh, ow] = g.output;
        if !flat || oh == 0 || ow == 0 {
            return None;
        }
        let [_, kh, kw] = g.kernel;
        let [_, sh, sw] = g.strides;
        let ph = (oh - 1) * sh + (kh - 1) * g.dilations[1] + 1;
        let pw = (ow - 1) * sw + (kw - 1) * g.dilations[2] + 1;
        let (qh, qw) = (ph.div_ceil(sh), pw.div_ceil(sw));
        let mut tap_at = Vec::with_capacity(kh * kw);
        for b in 0..kh {
            let r = b * g.dilations[1];
            for e in 0..kw {
                let c = e * g.dilations[2];
                tap_at.push(((r % sh) * sw + c % sw) * qh * qw + (r / sh) * qw + c / sw);
            }
        }
        let (top, left) = (g.pad_begin[1], g.pad_begin[2]);
        let [_, ih, iw] = g.input;
        let cols = iw.min(pw.saturating_sub(left));
        let col_phases = (0..sw)
            .map(|p| {
                let i0 = (p + sw - left % sw) % sw;
                (i0, p * qh * qw + (left + i0) / sw)
            })
            .filter(|&(i0, _)| i0 < cols)
            .collect();
        Some(PaddedPlane {
            qh,
            qw,
            top,
            left,
            tap_at,
            rows: ih.min(ph.saturating_sub(top)),
            cols,
            col_phases,
        })
    }

    /// Plane `k` (channel `k % C` of image `k / C`) into `oc`: the bias, then every tap in the order (row,
    /// column), padding taps adding `0·w`, so each output is the sum [`depthwise_plane`] computes.
    #[allow(clippy::too_many_arguments)]
    fn depthwise(
        &self,
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        k: usize,
        oc: &mut [f32],
        (phases, wide): &mut (Vec<f32>, Vec<f32>),
    ) {
        let [_, oh, ow] = g.output;
        let [_, _, iw] = g.input;
        let [_, sh, sw] = g.strides;
        let (il, taps) = (g.in_len(), g.taps());
        let (n, c) = (k / g.in_channels, k % g.in_channels);
        let xc = &x[(n * g.in_channels + c) * il..][..il];
        let wc = &w[c * taps..][..taps];
        let (qh, qw) = (self.qh, self.qw);
        let phase_len = qh * qw;
        phases.clear();
        phases.resize(phase_len * sh * sw, 0.0);
        let (rows, cols, col_phases) = (self.rows, self.cols, &self.col_phases);
        // The padded row `r = top + y` lies in row phase `r % sh`, at row `r / sh` of it.
        let (mut rp, mut rq) = (self.top % sh, self.top / sh);
        for row in xc.chunks_exact(iw).take(rows) {
            let at = rp * sw * phase_len + rq * qw;
            if sw == 1 {
                phases[at + self.left..][..cols].copy_from_slice(&row[..cols]);
            } else if sw == 2 && col_phases.len() == 2 {
                // Even and odd input columns, 16 at a time on AVX2.
                let [(i0, e), (_, o)] = [col_phases[0], col_phases[1]];
                let (e, o) = if i0 == 0 { (e, o) } else { (o, e) };
                let (ne, no) = (cols.div_ceil(2), cols / 2);
                let (lo, hi) = phases.split_at_mut(at + e.max(o));
                let (de, dodd) = if e < o {
                    (&mut lo[at + e..][..ne], &mut hi[..no])
                } else {
                    (&mut hi[..ne], &mut lo[at + o..][..no])
                };
                split_even_odd(&row[..cols], de, dodd);
            } else {
                for &(i0, off) in col_phases {
                    let dst = &mut phases[at + off..];
                    for (d, &v) in dst.iter_mut().zip(row[i0..cols].iter().step_by(sw)) {
                        *d = v;
                    }
                }
            }
            rp += 1;
            if rp == sh {
                (rp, rq) = (0, rq + 1);
            }
        }
        let len = (oh - 1) * qw + ow;
        let b = bias.map_or(0.0, |b| b[c]);
        wide.clear();
        wide.resize(len, b);
        if let Some(end) = self.tap_at.iter().map(|&at| at + len).max() {
            assert!(end <= phases.len(), "a tap reads past the phases");
        }
        #[cfg(target_arch = "x86_64")]
        let done = if packed_gemm::available() {
            // SAFETY: every tap reads `phases[at..at + len]` (checked above); the CPU has AVX2 and FMA.
            unsafe { depthwise_taps_avx2(phases, &self.tap_at, wc, b, wide) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for (&at, &wv) in self.tap_at.iter().zip(wc) {
            let src = &phases[at + done..at + len];
            for (o, &v) in wide[done..].iter_mut().zip(src) {
                *o += v * wv;
            }
        }
        for (y, row) in oc.chunks_exact_mut(ow).enumerate() {
            row.copy_from_slice(&wide[y * qw..][..ow]);
        }
    }
}

/// Splits `row` into its even (`even`, `ceil(n/2)`) and odd (`odd`, `floor(n/2)`) elements.
pub(crate) fn split_even_odd(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == row.len().div_ceil(2) && odd.len() == row.len() / 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if packed_gemm::available() {
        // SAFETY: the lengths are as checked; the CPU has AVX2 and FMA.
        done = unsafe { split_even_odd_avx2(row, even, odd) };
    }
    // `done` is even: pairs from there on.
    for (k, pair) in row[done..].chunks(2).enumerate() {
        even[done / 2 + k] = pair[0];
        if let Some(&v) = pair.get(1) {
            odd[done / 2 + k] = v;
        }
    }
}

/// [`split_even_odd`] on the leading 16-element blocks; returns how many elements it split.
///
/// # Safety
/// As [`split_even_odd`]'s lengths; the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn split_even_odd_avx2(row: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let mut j = 0;
    while j + 16 <= row.len() {
        // SAFETY: `row[j..j + 16]`; `even` and `odd` at `j/2..j/2 + 8 ≤ len/2`.
        unsafe {
            let a = _mm256_loadu_ps(row.as_ptr().add(j));
            let b = _mm256_loadu_ps(row.as_ptr().add(j + 8));
            // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]; likewise the odd ones.
            let ev = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
                _mm256_shuffle_ps::<0x88>(a, b),
            )));
            let od = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(
                _mm256_shuffle_ps::<0xDD>(a, b),
            )));
            _mm256_storeu_ps(even.as_mut_ptr().add(j / 2), ev);
            _mm256_storeu_ps(odd.as_mut_ptr().add(j / 2), od);
        }
        j += 16;
    }
    j
}

/// The leading whole vectors of a depthwise plane's "wide" output (`wide.len()` outputs): `bias + Σ_t
/// phases[tap_at[t] + o]·w[t]` over the taps in order, a multiply then an add per tap as the scalar loop does
/// (the same bits), four vectors at a time in registers instead of a pass over `wide` per tap. Returns how many
/// outputs it wrote (a multiple of 8); the caller finishes the rest.
///
/// # Safety
/// Every `phases[tap_at[t]..tap_at[t] + wide.len()]` must be in bounds; the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn depthwise_taps_avx2(
    phases: &[f32],
    tap_at: &[usize],
    w: &[f32],
    bias: f32,
    wide: &mut [f32],
) -> usize {
    use std::arch::x86_64::*;
    let (len, p, out) = (wide.len(), phases.as_ptr(), wide.as_mut_ptr());
    let b = _mm256_set1_ps(bias);
    let mut o = 0;
    while o + 32 <= len {
        let mut acc = [b; 4];
        for (&at, &wv) in tap_at.iter().zip(w) {
            let wv = _mm256_set1_ps(wv);
            for (q, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `at + o + 8q + 8 ≤ at + len`, in bounds (caller's contract).
                let v = unsafe { _mm256_loadu_ps(p.add(at + o + 8 * q)) };
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(v, wv));
            }
        }
        for (q, acc) in acc.into_iter().enumerate() {
            // SAFETY: `o + 8q + 8 ≤ len`.
            unsafe { _mm256_storeu_ps(out.add(o + 8 * q), acc) };
        }
        o += 32;
    }
    while o + 8 <= len {
        let mut acc = b;
        for (&at, &wv) in tap_at.iter().zip(w) {
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_ps(p.add(at + o)) };
            acc = _mm256_add_ps(acc, _mm256_mul_ps(v, _mm256_set1_ps(wv)));
        }
        // SAFETY: `o + 8 ≤ len`.
        unsafe { _mm256_storeu_ps(out.add(o), acc) };
        o += 8;
    }
    o
}

/// Depthwise convolution: each channel by its own filter, one output row at a time, each tap over the run of
/// outputs it reads inside the input (a vectorizable loop at stride 1).
/// Plane `k` (channel `k % C` of image `k / C`) of a depthwise convolution into `oc`.
fn depthwise_plane(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    k: usize,
    oc: &mut [f32],
) {
    let [od, oh, ow] = g.output;
    let [kd, kh, kw] = g.kernel;
    let [_, ih, iw] = g.input;
    let (il, taps) = (g.in_len(), g.taps());
    let sw = g.strides[2];
    let ranges: Vec<(usize, usize)> = (0..kw).map(|e| valid_range(g, 2, e)).collect();
    {
        {
            let (n, c) = (k / g.in_channels, k % g.in_channels);
            let xc = &x[(n * g.in_channels + c) * il..][..il];
            let wc = &w[c * taps..][..taps];
            oc.fill(bias.map_or(0.0, |b| b[c]));
            for z in 0..od {
                for y in 0..oh {
                    let orow = &mut oc[(z * oh + y) * ow..][..ow];
                    for a in 0..kd {
                        let Some(sz) = g.src(0, z, a) else { continue };
                        for b in 0..kh {
                            let Some(sy) = g.src(1, y, b) else { continue };
                            let irow = &xc[(sz * ih + sy) * iw..][..iw];
                            for (e, &(lo, hi)) in ranges.iter().enumerate() {
                                if lo >= hi {
                                    continue;
                                }
                                let wv = wc[(a * kh + b) * kw + e];
                                let start = (lo * sw + e * g.dilations[2]) - g.pad_begin[2];
                                if sw == 1 {
                                    let src = &irow[start..start + (hi - lo)];
                                    orow[lo..hi]
                                        .iter_mut()
                                        .zip(src)
                                        .for_each(|(o, &v)| *o += v * wv);
                                } else {
                                    for (k, o) in orow[lo..hi].iter_mut().enumerate() {
                                        *o += irow[start + k * sw] * wv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed_gemm::tests::data;

    #[test]
    fn matmul_small() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut out = [0.0; 4];
        matmul(&a, &[2, 3], &b, &[3, 2], &mut out, &Parallel::single()).unwrap();
        assert_eq!(out, [4.0, 5.0, 10.0, 11.0]);
    }

    /// Conv attributes with explicit `pads` (begins, then ends), `strides` and `dilations` (absent when empty) and
    /// `group`; the kernel shape is the weight's.
    fn attrs(pads: &[i64], strides: &[i64], dilations: &[i64], group: i64) -> ConvAttrs {
        let given = |v: &[i64]| (!v.is_empty()).then(|| v.to_vec());
        ConvAttrs {
            auto_pad: "NOTSET".into(),
            dilations: given(dilations),
            group,
            kernel_shape: None,
            pads: given(pads),
            strides: given(strides),
        }
    }

    /// Checks `run(Some(packed), 1)` (a convolution with pre-packed weights at one thread) against the `gemm`-crate
    /// path `run(None, 1)` within `1e-5·max|want|`, and that 2 and 3 threads give its bits.
    fn check_packed(
        ci: usize,
        packed: &PackedConv,
        run: impl Fn(Option<&PackedConv>, usize) -> Vec<f32>,
    ) {
        let want = run(None, 1);
        let got = run(Some(packed), 1);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * scale,
                "case {ci} at {i}: {g} vs {w}"
            );
        }
        for threads in [2, 3] {
            let other = run(Some(packed), threads);
            assert!(
                got.iter()
                    .zip(&other)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {ci}: {threads} threads differ from one"
            );
        }
    }

    /// Convolutions with pre-packed weights (im2col packed straight into strips, or a 1×1 input packed) agree with
    /// the `gemm`-crate path, and bit for bit with themselves at 1, 2 and 3 threads.
    #[test]
    fn packed_conv_matches_the_gemm_crate_path() {
        if !packed_gemm::available() {
            return;
        }
        /// Input, weight, kernel, pads, strides, group.
        type Case = (
            &'static [usize],
            &'static [usize],
            [i64; 2],
            [i64; 4],
            [i64; 2],
            i64,
        );
        let cases: [Case; 9] = [
            (
                &[1, 2, 9, 70],
                &[5, 2, 3, 3],
                [3, 3],
                [1, 1, 1, 1],
                [2, 2],
                1,
            ),
            (
                &[1, 3, 5, 100],
                &[7, 3, 1, 3],
                [1, 3],
                [0, 2, 0, 1],
                [1, 1],
                1,
            ),
            (
                &[1, 3, 23, 19],
                &[7, 3, 3, 3],
                [3, 3],
                [1, 1, 1, 1],
                [1, 1],
                1,
            ),
            (
                &[2, 5, 17, 17],
                &[13, 5, 1, 1],
                [1, 1],
                [0, 0, 0, 0],
                [1, 1],
                1,
            ),
            (
                &[1, 4, 31, 29],
                &[9, 4, 7, 7],
                [7, 7],
                [3, 3, 3, 3],
                [2, 2],
                1,
            ),
            (
                &[1, 8, 9, 9],
                &[6, 4, 3, 3],
                [3, 3],
                [1, 0, 2, 1],
                [1, 2],
                2,
            ),
            (
                &[1, 300, 7, 7],
                &[11, 300, 3, 3],
                [3, 3],
                [1, 1, 1, 1],
                [1, 1],
                1,
            ),
            (
                &[1, 16, 14, 14],
                &[40, 16, 1, 1],
                [1, 1],
                [0, 0, 0, 0],
                [2, 2],
                1,
            ),
            (
                &[1, 64, 56, 56],
                &[64, 64, 1, 1],
                [1, 1],
                [0, 0, 0, 0],
                [1, 1],
                1,
            ),
        ];
        for (ci, (xs, ws, kernel, pads, strides, group)) in cases.into_iter().enumerate() {
            let attrs = ConvAttrs {
                kernel_shape: Some(kernel.to_vec()),
                ..attrs(&pads, &strides, &[], group)
            };
            let g = ConvGeom::new(xs, ws, &attrs).unwrap();
            let x = data(xs.iter().product(), 10 * ci as u64 + 1);
            let w = data(ws.iter().product(), 10 * ci as u64 + 2);
            let bias = data(ws[0], 10 * ci as u64 + 3);
            let len: usize = g.out_shape.iter().product();
            let res = data(len, 10 * ci as u64 + 4);
            let epi = Epilogue { relu: true };
            let packed = PackedConv::new(&w, ws, group as usize, Some(&strides), None).unwrap();
            check_packed(ci, &packed, |p, threads| {
                let par = Parallel::new(threads).unwrap();
                let mut out = vec![f32::NAN; len];
                par.install(|| conv(&g, &x, &w, p, Some(&bias), Some(&res), &mut out, epi, &par))
                    .unwrap();
                out
            });
        }
    }

    /// The depthwise kernel on phase-split planes (vectorized taps) computes the sums [`depthwise_plane`] does, bit
    /// for bit: strides 1 and 2 (odd and even left pads), dilation, 5×5, pads on either side, rows longer and
    /// shorter than the vectors.
    #[test]
    fn depthwise_planes_match_the_row_kernel() {
        /// Input, weight, pads, strides, dilations.
        type Case = (
            &'static [usize],
            &'static [usize],
            [i64; 4],
            [i64; 2],
            [i64; 2],
        );
        let cases: [Case; 7] = [
            (&[1, 3, 13, 37], &[3, 1, 3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            (&[2, 4, 56, 56], &[4, 1, 3, 3], [1, 1, 1, 1], [2, 2], [1, 1]),
            (&[1, 2, 7, 7], &[2, 1, 3, 3], [1, 1, 1, 1], [1, 1], [1, 1]),
            (&[1, 2, 20, 70], &[2, 1, 5, 5], [2, 0, 1, 2], [1, 1], [1, 1]),
            (&[1, 3, 30, 31], &[3, 1, 3, 3], [2, 2, 2, 2], [1, 1], [2, 2]),
            (&[1, 2, 9, 100], &[2, 1, 3, 3], [0, 1, 0, 0], [2, 1], [1, 1]),
            (&[1, 2, 9, 101], &[2, 1, 3, 3], [0, 2, 0, 1], [2, 2], [1, 1]),
        ];
        for (ci, (xs, ws, pads, strides, dilations)) in cases.into_iter().enumerate() {
            let attrs = attrs(&pads, &strides, &dilations, xs[1] as i64);
            let g = ConvGeom::new(xs, ws, &attrs).unwrap();
            assert!(g.is_depthwise());
            let x = data(xs.iter().product(), 40 * ci as u64 + 1);
            let w = data(ws.iter().product(), 40 * ci as u64 + 2);
            let bias = data(ws[0], 40 * ci as u64 + 3);
            let plane = PaddedPlane::of(&g).unwrap();
            let ol = g.out_len();
            let mut scratch = (Vec::new(), Vec::new());
            for k in 0..xs[0] * xs[1] {
                let (mut want, mut got) = (vec![f32::NAN; ol], vec![f32::NAN; ol]);
                depthwise_plane(&g, &x, &w, Some(&bias), k, &mut want);
                plane.depthwise(&g, &x, &w, Some(&bias), k, &mut got, &mut scratch);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(a == b, "case {ci} plane {k} at {i}: {a} vs {b}");
                }
            }
        }
    }

    /// The Winograd kernel ([`crate::winograd`]) agrees with the `gemm`-crate path within rounding (1e-5 of the
    /// largest output) on every geometry it takes — pads on either side and none, partial tiles at the right and
    /// bottom, one partial tile, tile blocks that cut tile rows, a batch, two k blocks (300 channels), output
    /// channels not a multiple of 6 or 16, rows split by vectors from their first element — and bit for bit with
    /// itself at 1, 2 and 3 threads (threads sharing each block's steps, or taking their own tiles).
    #[test]
    fn winograd_matches_the_gemm_crate_path() {
        if !packed_gemm::available() {
            return;
        }
        let cases: [(&[usize], &[usize], [i64; 4]); 9] = [
            (&[1, 64, 14, 14], &[40, 64, 3, 3], [1, 1, 1, 1]),
            (&[2, 20, 9, 11], &[17, 20, 3, 3], [0, 2, 1, 0]),
            (&[1, 16, 8, 8], &[16, 16, 3, 3], [0, 0, 0, 0]),
            (&[1, 64, 56, 56], &[64, 64, 3, 3], [1, 1, 1, 1]),
            (&[1, 300, 13, 10], &[33, 300, 3, 3], [1, 1, 1, 1]),
            (&[1, 32, 30, 30], &[24, 32, 3, 3], [2, 2, 2, 2]),
            (&[1, 16, 3, 3], &[16, 16, 3, 3], [1, 1, 1, 1]),
            (&[1, 128, 28, 28], &[19, 128, 3, 3], [1, 1, 1, 1]),
            (&[1, 16, 20, 70], &[16, 16, 3, 3], [1, 0, 0, 2]),
        ];
        for (ci, (xs, ws, pads)) in cases.into_iter().enumerate() {
            let attrs = ConvAttrs {
                kernel_shape: Some(vec![3, 3]),
                ..attrs(&pads, &[], &[], 1)
            };
            let g = ConvGeom::new(xs, ws, &attrs).unwrap();
            let x = data(xs.iter().product(), 30 * ci as u64 + 1);
            let w = data(ws.iter().product(), 30 * ci as u64 + 2);
            let bias = data(ws[0], 30 * ci as u64 + 3);
            let len: usize = g.out_shape.iter().product();
            let res = data(len, 30 * ci as u64 + 4);
            for (tile, relu) in [(4, true), (4, false), (2, true), (2, false)] {
                let packed = PackedConv::new(&w, ws, 1, None, Some(tile)).unwrap();
                assert!(packed.winograd.as_ref().is_some_and(|wg| wg.fits(&g)));
                let epi = Epilogue { relu };
                check_packed(ci, &packed, |p, threads| {
                    let par = Parallel::new(threads).unwrap();
                    let mut out = vec![f32::NAN; len];
                    par.install(|| {
                        conv(&g, &x, &w, p, Some(&bias), Some(&res), &mut out, epi, &par)
                    })
                    .unwrap();
                    out
                });
            }
        }
    }

    /// Which convolutions the Winograd kernel takes, and with which tile: 3×3, stride 1, undilated, ungrouped, over
    /// 16 channels or more, with at least 9 output tiles of 4×4 (else 2×2 tiles, for many channels), and only where
    /// the input shape is known.
    #[test]
    fn winograd_choice() {
        if !crate::winograd::enabled() {
            return;
        }
        let attrs = |strides: [i64; 2], dilations: [i64; 2], group: i64| {
            attrs(&[1, 1, 1, 1], &strides, &dilations, group)
        };
        let plain = attrs([1, 1], [1, 1], 1);
        let x56: Option<&[usize]> = Some(&[1, 64, 56, 56]);
        /// Weight shape, attributes, input shape, the output tile the kernel takes it with.
        type Case<'a> = (
            &'a [usize],
            &'a ConvAttrs,
            Option<&'a [usize]>,
            Option<usize>,
        );
        let cases: [Case; 17] = [
            (&[64, 64, 3, 3], &plain, x56, Some(4)),
            (&[256, 256, 3, 3], &plain, Some(&[1, 256, 14, 14]), Some(4)),
            (&[32, 32, 3, 3], &plain, Some(&[1, 32, 9, 9]), Some(4)),
            (&[32, 32, 3, 3], &plain, Some(&[1, 32, 4, 200]), Some(4)),
            (&[512, 512, 3, 3], &plain, Some(&[1, 512, 7, 7]), Some(2)),
            (&[224, 192, 3, 3], &plain, Some(&[1, 192, 7, 7]), Some(2)),
            (&[32, 128, 3, 3], &plain, Some(&[1, 128, 7, 7]), None),
            (&[512, 512, 3, 3], &plain, Some(&[1, 512, 4, 4]), None),
            (&[32, 32, 3, 3], &plain, Some(&[1, 32, 8, 8]), None),
            (&[64, 64, 3, 3], &plain, None, None),
            (&[64, 8, 3, 3], &plain, Some(&[1, 8, 56, 56]), None),
            (&[8, 64, 3, 3], &plain, x56, None),
            (&[64, 64, 5, 5], &plain, x56, None),
            (&[64, 64, 3, 3], &attrs([2, 2], [1, 1], 1), x56, None),
            (&[64, 64, 3, 3], &attrs([1, 1], [2, 2], 1), x56, None),
            (&[64, 32, 3, 3], &attrs([1, 1], [1, 1], 2), x56, None),
            (&[64, 64, 3, 3, 3], &plain, Some(&[1, 64, 8, 56, 56]), None),
        ];
        for (ws, a, x, want) in cases {
            assert_eq!(winograd_tile(ws, a, x), want, "{ws:?} on {x:?}");
        }
    }

    /// Which convolutions take the direct kernel; every one it takes, the kernel fits (AlexNet's stride-4 11×11
    /// stem once got packed for it and then refused at run time).
    #[test]
    fn direct_kernel_choice() {
        assert!(direct_pays(&[64, 64, 3, 3], Some(&[1, 1])));
        assert!(direct_pays(&[64, 64, 3, 3], None));
        assert!(direct_pays(&[64, 3, 7, 7], Some(&[2, 2])));
        assert!(direct_pays(&[64, 64, 3, 3], Some(&[2, 2])));
        assert!(!direct_pays(&[96, 3, 11, 11], Some(&[4, 4])));
        assert!(!direct_pays(&[64, 64, 1, 1], None));
        assert!(!direct_pays(&[8, 8, 3, 3], None));
        if !packed_gemm::available() {
            return;
        }
        for (xs, ws, strides) in [
            (&[1, 3, 227, 227][..], &[96, 3, 11, 11][..], [4i64, 4]),
            (&[1, 3, 224, 224], &[64, 3, 7, 7], [2, 2]),
            (&[1, 64, 56, 56], &[64, 64, 3, 3], [1, 1]),
        ] {
            let w = vec![0.5f32; ws.iter().product()];
            let attrs = attrs(&[], &strides, &[], 1);
            let g = ConvGeom::new(xs, ws, &attrs).unwrap();
            let p = PackedConv::new(&w, ws, 1, Some(&strides), None).unwrap();
            assert!(
                p.direct
                    .as_ref()
                    .map_or(p.fits(1, ws[0], w.len() / ws[0]), |d| d.fits(&g)),
                "{ws:?} at strides {strides:?}: packed for a kernel that does not take it"
            );
        }
    }

    /// The direct kernel ([`crate::direct_conv`]) agrees with the `gemm`-crate path on every geometry it takes
    /// (padding on either side, strides 1 and 2, dilation, groups, a batch, rows shorter than a tile and tiles
    /// across rows, output channels not a multiple of 16, reductions of several k blocks, both reduction orders,
    /// 1-D), bit for bit with itself at 1, 2 and 3 threads; stride 3 is refused.
    #[test]
    fn direct_conv_matches_the_gemm_crate_path() {
        if !packed_gemm::available() {
            return;
        }
        /// Input, weight, pads, strides, dilations, group.
        type Case = (
            &'static [usize],
            &'static [usize],
            &'static [i64],
            &'static [i64],
            &'static [i64],
            i64,
        );
        let cases: [Case; 12] = [
            (
                &[1, 64, 14, 14],
                &[40, 64, 3, 3],
                &[1, 1, 1, 1],
                &[1, 1],
                &[1, 1],
                1,
            ),
            (
                &[1, 32, 7, 7],
                &[512, 32, 3, 3],
                &[1, 1, 1, 1],
                &[1, 1],
                &[1, 1],
                1,
            ),
            (
                &[2, 20, 9, 11],
                &[17, 20, 3, 3],
                &[0, 2, 1, 0],
                &[2, 2],
                &[1, 1],
                1,
            ),
            (
                &[1, 300, 5, 4],
                &[33, 300, 3, 3],
                &[1, 1, 1, 1],
                &[1, 1],
                &[1, 1],
                1,
            ),
            (
                &[1, 16, 12, 13],
                &[16, 16, 3, 3],
                &[2, 2, 2, 2],
                &[1, 1],
                &[2, 2],
                1,
            ),
            (
                &[1, 32, 10, 10],
                &[24, 16, 3, 3],
                &[1, 1, 1, 1],
                &[1, 2],
                &[1, 1],
                2,
            ),
            (
                &[1, 24, 8, 8],
                &[16, 24, 3, 3],
                &[0, 0, 0, 0],
                &[1, 1],
                &[1, 1],
                1,
            ),
            (
                &[1, 3, 31, 29],
                &[9, 3, 7, 7],
                &[3, 3, 3, 3],
                &[2, 2],
                &[1, 1],
                1,
            ),
            (
                &[1, 4, 9, 70],
                &[5, 4, 3, 3],
                &[1, 1, 1, 1],
                &[2, 2],
                &[1, 1],
                1,
            ),
            (&[1, 18, 50], &[20, 18, 5], &[2, 2], &[1], &[1], 1),
            (
                &[1, 16, 3, 3],
                &[8, 16, 1, 1],
                &[0, 0, 0, 0],
                &[2, 2],
                &[1, 1],
                1,
            ),
            (
                &[1, 16, 9, 9],
                &[8, 16, 3, 3],
                &[1, 1, 1, 1],
                &[3, 3],
                &[1, 1],
                1,
            ),
        ];
        for (ci, (xs, ws, pads, strides, dilations, group)) in cases.into_iter().enumerate() {
            let attrs = ConvAttrs {
                kernel_shape: Some(ws[2..].iter().map(|&k| k as i64).collect()),
                ..attrs(pads, strides, dilations, group)
            };
            let g = ConvGeom::new(xs, ws, &attrs).unwrap();
            let x = data(xs.iter().product(), 20 * ci as u64 + 1);
            let w = data(ws.iter().product(), 20 * ci as u64 + 2);
            let bias = data(ws[0], 20 * ci as u64 + 3);
            let len: usize = g.out_shape.iter().product();
            let res = data(len, 20 * ci as u64 + 4);
            let direct = crate::direct_conv::DirectConv::new(&w, ws, group as usize).unwrap();
            if strides[strides.len() - 1] > 2 {
                assert!(!direct.fits(&g), "case {ci}: stride 3 is not the kernel's");
                continue;
            }
            assert!(direct.fits(&g), "case {ci}");
            let packed = PackedConv {
                group: group as usize,
                mats: Vec::new(),
                direct: Some(direct),
                winograd: None,
            };
            for (use_bias, use_res, relu) in [(true, true, true), (false, false, false)] {
                check_packed(ci, &packed, |p, threads| {
                    let par = Parallel::new(threads).unwrap();
                    let mut out = vec![f32::NAN; len];
                    let (b, r) = (use_bias.then_some(&bias[..]), use_res.then_some(&res[..]));
                    par.install(|| conv(&g, &x, &w, p, b, r, &mut out, Epilogue { relu }, &par))
                        .unwrap();
                    out
                });
            }
        }
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
