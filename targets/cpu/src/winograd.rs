//! Winograd convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) for stride-1,
//! undilated, ungrouped 3×3 convolutions over many channels, F(4×4, 3×3) or F(2×2, 3×3): each `T×T` block of
//! outputs (a *tile*, `T` = 4 or 2) comes from an `A×A` block of the zero-padded input (`A = T + 2`), and per
//! input/output channel pair the 3×3 correlation becomes an elementwise product of `A×A` transforms — 36
//! multiplies per 16 outputs instead of 144 (F(4×4)), 16 per 4 instead of 36 (F(2×2)). Summed over input
//! channels, that is `A²` independent GEMMs `M[ξ] = U[ξ]·V[ξ]` (`U[ξ]`: `[M, C]` transformed weights, packed once
//! when the executable is built; `V[ξ]`: `[C, tiles]` transformed input), each running [`crate::packed_gemm`]'s
//! microkernel, and the outputs are `Aᵀ·M·A` per tile and output channel. [`crate::linalg::winograd_tile`] picks
//! the tile by measured cost (F(2×2) for small outputs over many channels, where F(4×4)'s tiles would be mostly
//! padding).
//!
//! **Transforms** (`ξ = A·a + b` indexes the transform domain): input `V = Bᵀ·d·B`, weights `U = G·g·Gᵀ`
//! (computed in f64 at build time), output `Y = Aᵀ·M·A`, with the usual interpolation points (0, ±1, ±2, ∞ for
//! F(4×4); 0, ±1, ∞ for F(2×2)). The input and output transforms run on AVX2 vectors of 8 raster-consecutive
//! tiles: the input is first split per channel into the `T` column phases modulo `T` of each zero-padded row (so
//! that the tiles' elements `T·tx + j` are consecutive along `tx`), the output is transposed back from tile-major
//! vectors into rows of `T` while the epilogue (bias, then residual, then Relu — the order of the other conv
//! kernels) is applied.
//!
//! **Blocking.** Tiles are processed in raster-order blocks (spanning tile rows where they end) sized so that one
//! block's transformed input (`A²·C·tiles` floats) stays in L2; per block: input transform (split over input
//! channels), the `A²` GEMMs (split over `ξ`), output transform (split over output channels); with threads and
//! enough tiles, each thread takes its own range of tiles instead. Every value is computed by the same operations
//! whatever the thread count — bit-identical results for any `--threads`.
//!
//! **Accuracy.** The transforms reassociate the sums, so results differ from a direct convolution by rounding
//! only: relative errors of a few 1e-6 of the largest output on ResNet-size layers, well inside the 1e-4
//! tolerance the models are checked at (`winograd_matches_the_gemm_crate_path` holds both tiles to 1e-5).

use std::cell::RefCell;

use crate::linalg::ConvGeom;
use crate::packed_gemm::{self, Epi, NR, PackedA, strip_len, with_scratch};
use crate::parallel::{Parallel, SharedMut};

/// Points of the larger transform domain (F(4×4, 3×3): 6×6).
const MAX_XI: usize = 36;
/// Tiles per vector.
const L: usize = 8;
/// The environment variable that turns this kernel off (`JIUZHOU_CPU_WINOGRAD=0`): the convolutions it would take
/// then run the direct kernel, with results as close to the reference as the other convolutions'. Read once per
/// process.
pub const ENV: &str = "JIUZHOU_CPU_WINOGRAD";

/// Whether convolutions may take this kernel ([`ENV`] is not `0`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !packed_gemm::switched_off(ENV, "3x3 convolutions run the direct kernel"))
}

/// The transformed input of one tile block should stay under this many bytes (L2 resident).
const BLOCK_BYTES: usize = 512 * 1024;

thread_local! {
    /// The phase-split padded input planes of a call.
    static PHASES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block's transformed input, packed as GEMM strips.
    static TRANSFORMED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block's 36 products.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's row-transformed phases of one channel.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One zero-padded input row, before it is split into phases.
    static PAD_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The weights of a 3×3 convolution transformed and packed for [`Winograd::run`].
pub struct Winograd {
    /// The output tile's side: 4 (F(4×4, 3×3)) or 2 (F(2×2, 3×3)).
    tile: usize,
    /// Output channels.
    m: usize,
    /// Input channels.
    c: usize,
    /// `U[ξ]`, `[m, c]` each, packed for the microkernel.
    u: Vec<PackedA>,
}

/// The filter transform `G·g` of one column (or row) of three taps, for output tiles of side `tile` (`tile + 2`
/// values).
fn filter_1d(tile: usize, [g0, g1, g2]: [f64; 3]) -> Vec<f64> {
    if tile == 4 {
        vec![
            g0 / 4.0,
            -(g0 + g1 + g2) / 6.0,
            -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ]
    } else {
        vec![g0, (g0 + g1 + g2) / 2.0, (g0 - g1 + g2) / 2.0, g2]
    }
}

/// Where one call's tiles are and how its phase-split planes are laid out.
#[derive(Clone, Copy, Debug)]
struct Geo {
    /// The output tile's side (and the number of column phases).
    tile: usize,
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    pt: usize,
    pl: usize,
    /// Tiles per tile row.
    txn: usize,
    /// Padded rows (`tile·tile rows + 2`).
    hp: usize,
    /// The length of one phase row (`txn + 2`: every element a tile reads). Vectors past a tile row's end read on
    /// into the next phase row (and past the last plane, into slack): those lanes belong to no tile.
    lq: usize,
}

impl Geo {
    /// Floats of one channel's phase-split planes: `hp` rows of `tile` phases of `lq`, and a vector of slack (the
    /// split writes up to 7 floats past the last row).
    fn plane(&self) -> usize {
        self.hp * self.tile * self.lq + L
    }
}

/// A block of `nt` tiles in raster order from tile `t0`; its products have `ntp` (`nt` rounded up to whole strips)
/// columns.
#[derive(Clone, Copy, Debug)]
struct Block {
    t0: usize,
    nt: usize,
    ntp: usize,
}

impl Block {
    /// The first tile row it touches and how many.
    fn tile_rows(self, txn: usize) -> (usize, usize) {
        let first = self.t0 / txn;
        (first, (self.t0 + self.nt - 1) / txn + 1 - first)
    }

    /// The length of one row of the row-transformed phases (`tile_rows · txn`, plus a vector of overreach and one
    /// of slack).
    fn t_len(self, txn: usize) -> usize {
        self.tile_rows(txn).1 * txn + 2 * L
    }
}

/// The blocks of tiles `start..end`: as few as keep one block's transformed input (`xi·C` floats per tile) under
/// [`BLOCK_BYTES`] (at least one strip), of balanced sizes.
fn blocks(c: usize, xi: usize, (start, end): (usize, usize)) -> impl Iterator<Item = Block> {
    let len = end - start;
    let budget = (BLOCK_BYTES / (xi * c * 4 * NR)).max(1);
    let count = len.div_ceil(NR).div_ceil(budget).max(1);
    (0..count).filter_map(move |b| {
        let (t0, t1) = (start + b * len / count, start + (b + 1) * len / count);
        (t1 > t0).then(|| Block {
            t0,
            nt: t1 - t0,
            ntp: (t1 - t0).next_multiple_of(NR),
        })
    })
}

/// `f(i)` for `i in 0..n`, split over the threads of `par` when there is one.
fn each(par: Option<&Parallel>, n: usize, f: impl Fn(usize) + Sync + Send) {
    match par {
        Some(par) => par.for_each_index(n, f),
        None => (0..n).for_each(f),
    }
}

/// The epilogue of one output channel: bias, residual plane, Relu.
type ChannelEpi = (f32, Option<*const f32>, bool);

/// The operands of one image: phase-split input planes, output and residual planes, bias, Relu.
#[derive(Clone, Copy)]
struct Image<'a> {
    phases: &'a [f32],
    dst: SharedMut<f32>,
    res: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    relu: bool,
}

// SAFETY: `dst` is only written at disjoint elements by concurrent tasks (each tile and output channel once), and
// everything else is read only.
unsafe impl Sync for Image<'_> {}
unsafe impl Send for Image<'_> {}

impl Winograd {
    /// Transforms and packs the weights `w` (`[M, C, 3, 3]` row-major, of shape `wsh`) for output tiles of side
    /// `tile` (4: F(4×4, 3×3), 2: F(2×2, 3×3)), or `None` where the kernel does not run (other shapes or tiles,
    /// no AVX2+FMA).
    pub fn new(w: &[f32], wsh: &[usize], tile: usize) -> Option<Winograd> {
        let &[m, c, 3, 3] = wsh else {
            return None;
        };
        if m == 0 || c == 0 || w.len() != m * c * 9 || !packed_gemm::available() {
            return None;
        }
        if tile != 4 && tile != 2 {
            return None;
        }
        let alpha = tile + 2;
        let mut u = vec![0.0f32; alpha * alpha * m * c];
        for k in 0..m {
            for ci in 0..c {
                let g = &w[(k * c + ci) * 9..][..9];
                // G·g column by column, then (G·g)·Gᵀ row by row.
                let mut t = vec![[0.0f64; 3]; alpha];
                for col in 0..3 {
                    let v = filter_1d(tile, [g[col], g[3 + col], g[6 + col]].map(f64::from));
                    for (a, v) in v.into_iter().enumerate() {
                        t[a][col] = v;
                    }
                }
                for (a, t) in t.into_iter().enumerate() {
                    for (b, v) in filter_1d(tile, t).into_iter().enumerate() {
                        u[(a * alpha + b) * m * c + k * c + ci] = v as f32;
                    }
                }
            }
        }
        let u = u
            .chunks_exact(m * c)
            .map(|ux| PackedA::new(ux, m, c, c, 1))
            .collect();
        Some(Winograd { tile, m, c, u })
    }

    /// Whether it computes the convolution `g`: the same channels, 2-D, 3×3, stride 1, no dilation, one group.
    pub fn fits(&self, g: &ConvGeom) -> bool {
        g.group == 1
            && g.in_channels == self.c
            && g.out_channels == self.m
            && g.kernel == [1, 3, 3]
            && g.strides == [1, 1, 1]
            && g.dilations == [1, 1, 1]
            && g.input[0] == 1
            && g.output[0] == 1
            && self.u.len() == (self.tile + 2) * (self.tile + 2)
    }

    /// The convolution of `x` (`[N, C, H, W]` flat) into `out` (`[N, M, OH, OW]`), then the epilogue `epi`: `bias` per
    /// output channel, `residual` laid out as `out`, Relu.
    ///
    /// # Panics
    /// If the buffers do not match `g` or `!self.fits(g)` (the caller checks both).
    pub fn run(&self, g: &ConvGeom, x: &[f32], epi: Epi<'_>, out: &mut [f32], par: &Parallel) {
        assert!(
            self.fits(g),
            "the packed weights do not fit the convolution"
        );
        let Epi {
            bias,
            residual,
            relu,
        } = epi;
        let (c, m) = (self.c, self.m);
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let (il, ol) = (ih * iw, oh * ow);
        assert!(
            x.len() == g.batch * c * il
                && out.len() == g.batch * m * ol
                && bias.is_none_or(|b| b.len() == m)
                && residual.is_none_or(|r| r.len() == out.len()),
            "Conv buffers do not match their shapes"
        );
        if ol == 0 || m == 0 {
            return;
        }
        let t = self.tile;
        let (tyn, txn) = (oh.div_ceil(t), ow.div_ceil(t));
        let geo = Geo {
            tile: t,
            ih,
            iw,
            oh,
            ow,
            pt: g.pad_begin[1],
            pl: g.pad_begin[2],
            txn,
            hp: t * tyn + 2,
            lq: txn + 2,
        };
        let tiles = tyn * txn;
        let plane = geo.plane();
        // With threads and tiles enough for a few strips each, every thread takes its own range of tiles (and
        // blocks); else the threads share each block's three steps. Either way each tile is computed alike.
        let threads = par.threads();
        let parts = if threads > 1 && tiles >= 2 * NR * threads {
            threads
        } else {
            1
        };
        for n in 0..g.batch {
            let xs = &x[n * c * il..][..c * il];
            let base = n * m * ol;
            with_scratch(&PHASES, c * plane + 2 * L, |phases| {
                par.for_each_item(&mut phases[..c * plane], plane, c > 1, |ci, p| {
                    split_phases(&xs[ci * il..][..il], &geo, p)
                });
                let img = Image {
                    phases,
                    dst: SharedMut(out[base..base + m * ol].as_mut_ptr()),
                    res: residual.map(|r| &r[base..base + m * ol]),
                    bias,
                    relu,
                };
                if parts > 1 {
                    par.for_each_index(parts, |p| {
                        let range = (p * tiles / parts, (p + 1) * tiles / parts);
                        for blk in blocks(c, self.u.len(), range) {
                            self.block(&geo, blk, img, None);
                        }
                    });
                } else {
                    for blk in blocks(c, self.u.len(), (0, tiles)) {
                        self.block(&geo, blk, img, Some(par));
                    }
                }
            });
        }
    }

    /// One block of tiles of one image: the input transform into GEMM strips, the `xi` products, the output
    /// transform with the epilogue; each step split over `par`'s threads when given.
    fn block(&self, geo: &Geo, blk: Block, img: Image<'_>, par: Option<&Parallel>) {
        let (c, m, xi) = (self.c, self.m, self.u.len());
        let plane = geo.plane();
        let strips = blk.ntp / NR;
        // Per ξ: the strips of the block's transformed input, and the block's products.
        // Products: `[m, xi, ntp]` (an output channel's rows together, as the output transform reads them).
        let (vstride, ldm) = (strips * strip_len(c), xi * blk.ntp);
        let ol = geo.oh * geo.ow;
        with_scratch(&TRANSFORMED, xi * vstride, |v| {
            // The output transform reads a vector past the last product.
            with_scratch(&PRODUCTS, m * ldm + L, |prods| {
                let (vp, mp) = (SharedMut(v.as_mut_ptr()), SharedMut(prods.as_mut_ptr()));
                each(par, c, |ci| {
                    // This channel's planes and everything after them (vectors read past the planes' end).
                    let p = &img.phases[ci * plane..];
                    let tl = blk.t_len(geo.txn);
                    with_scratch(&ROWS, xi * tl, |rows| {
                        let dst = (vp, vstride, ci, strip_len(c));
                        // SAFETY: the CPU has AVX2 and FMA (a `Winograd` only exists where it does); row `ci` of
                        // every strip of `v` is this task's alone.
                        unsafe {
                            if geo.tile == 4 {
                                input_tiles::<4, 6>(p, geo, blk, rows, tl, dst)
                            } else {
                                input_tiles::<2, 4>(p, geo, blk, rows, tl, dst)
                            }
                        }
                    });
                });
                each(par, xi, |xi| {
                    // SAFETY: `v`'s ξ part holds `strips` strips of `c` rows at `strip_len(c)`; product ξ is
                    // `[m, ntp]` at `mp + xi·ntp`, row stride `ldm`, this task's alone.
                    unsafe {
                        packed_gemm::gemm_packed_b(
                            &self.u[xi],
                            vp.ptr().add(xi * vstride),
                            strip_len(c),
                            blk.ntp,
                            mp.ptr().add(xi * blk.ntp),
                            ldm,
                        )
                    }
                });
                each(par, m, |k| {
                    let epi = (
                        img.bias.map_or(0.0, |b| b[k]),
                        img.res.map(|r| r[k * ol..][..ol].as_ptr()),
                        img.relu,
                    );
                    // SAFETY: the products were written above and are only read now; this block's tiles of output
                    // plane `k` are this task's alone; the residual plane matches it.
                    unsafe {
                        let (prods, dst) = (mp.ptr().cast_const(), img.dst.ptr().add(k * ol));
                        if geo.tile == 4 {
                            output_tiles::<4, 6>(prods, ldm, geo, blk, k, epi, dst)
                        } else {
                            output_tiles::<2, 4>(prods, ldm, geo, blk, k, epi, dst)
                        }
                    }
                });
            })
        });
    }
}

/// Splits one zero-padded input plane into its column phases modulo 4: `p[(y·4 + ph)·lq + i]` is padded element
/// `(y, 4i + ph)` (zero outside the input), for every `i` a tile reads (`i < lq = txn + 2`). Each row is copied
/// into a zero-padded row and split 32 elements at a time; the vectors of a phase row write on into the next one,
/// so they go from the row's end back to its start (each overwriting what the one before spilled), and rows in
/// order (the last row spills into the plane's slack, [`Geo::plane`]).
fn split_phases(x: &[f32], geo: &Geo, p: &mut [f32]) {
    let (lq, pl, iw, t) = (geo.lq, geo.pl, geo.iw, geo.tile);
    assert!(p.len() >= geo.plane() && pl + iw <= t * lq && x.len() >= geo.ih * iw);
    with_scratch(&PAD_ROW, t * lq.next_multiple_of(L), |padded| {
        // The padding columns stay zero; each row copies its elements over the middle.
        padded.fill(0.0);
        // SAFETY: the sizes are as checked above; the CPU has AVX2 (a `Winograd` only exists where it does).
        unsafe { split_rows(x, geo, p, padded) }
    });
}

/// [`split_phases`] on the AVX2 vectors.
///
/// # Safety
/// `p` holds [`Geo::plane`] floats, `padded` `tile·lq` rounded up to a whole vector, zero outside `pl..pl + iw`;
/// `x` is the `ih·iw` plane; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn split_rows(x: &[f32], geo: &Geo, p: &mut [f32], padded: &mut [f32]) {
    use std::arch::x86_64::*;
    let (lq, pl, iw, t) = (geo.lq, geo.pl, geo.iw, geo.tile);
    for y in 0..geo.hp {
        let row = &mut p[y * t * lq..];
        let Some(src) = y
            .checked_sub(geo.pt)
            .filter(|&iy| iy < geo.ih)
            .map(|iy| &x[iy * iw..][..iw])
        else {
            row[..t * lq].fill(0.0);
            continue;
        };
        let mid = &mut padded[pl..pl + iw];
        let mut j = 0;
        while j + L <= iw {
            // SAFETY: elements `j..j + 8` of `src` and `mid`.
            unsafe {
                _mm256_storeu_ps(
                    mid.as_mut_ptr().add(j),
                    _mm256_loadu_ps(src.as_ptr().add(j)),
                )
            };
            j += L;
        }
        mid[j..].copy_from_slice(&src[j..]);
        for i in (0..lq).step_by(L).rev() {
            // SAFETY: padded elements `t·i..t·i + 8t` (`padded` holds `t·lq` rounded up to 8 `t`); phase elements
            // `i..i + 8` of each phase row, at most 7 past the row's phases (into the next row, or the plane's
            // slack: caller's contract).
            unsafe {
                let (src, dst) = (padded.as_ptr().add(t * i), row.as_mut_ptr().add(i));
                if t == 4 {
                    deinterleave4(src, dst, lq)
                } else {
                    deinterleave2(src, dst, lq)
                }
            };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn split_rows(_: &[f32], _: &Geo, _: &mut [f32], _: &mut [f32]) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}

/// Splits 32 consecutive floats at `src` into their four phases modulo 4: phase `ph` (8 floats) to `dst + ph·lq`.
///
/// # Safety
/// `src` must address 32 floats and `dst + ph·lq` 8 each; the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn deinterleave4(src: *const f32, dst: *mut f32, lq: usize) {
    use std::arch::x86_64::*;
    // SAFETY: caller's contract.
    unsafe {
        let v: [__m256; 4] = std::array::from_fn(|q| _mm256_loadu_ps(src.add(8 * q)));
        // A 4×4 transpose in each 128-bit half: phase `ph` at i = 0, 2, 4, 6 (low) and 1, 3, 5, 7 (high) ...
        let r = packed_gemm::transpose4_in_halves(v);
        // ... then in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (ph, r) in r.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(ph * lq), _mm256_permutevar8x32_ps(r, order));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn deinterleave4(_: *const f32, _: *mut f32, _: usize) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}

/// Splits 16 consecutive floats at `src` into their two phases modulo 2: even ones to `dst`, odd ones to
/// `dst + lq` (8 each).
///
/// # Safety
/// `src` must address 16 floats and `dst`, `dst + lq` 8 each; the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn deinterleave2(src: *const f32, dst: *mut f32, lq: usize) {
    use std::arch::x86_64::*;
    // SAFETY: caller's contract.
    unsafe {
        let (a, b) = (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)));
        // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6]; likewise the odd ones.
        let order =
            |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(v)));
        _mm256_storeu_ps(dst, order(_mm256_shuffle_ps::<0x88>(a, b)));
        _mm256_storeu_ps(dst.add(lq), order(_mm256_shuffle_ps::<0xDD>(a, b)));
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn deinterleave2(_: *const f32, _: *mut f32, _: usize) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}

/// The 1-D input transform `Bᵀ·d` of `A` vectors (`A = 6`: F(4, 3); `A = 4`: F(2, 3)).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn in_1d<const A: usize>(d: [std::arch::x86_64::__m256; A]) -> [std::arch::x86_64::__m256; A] {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps;
    let mut out = d;
    let (d, o): (&[__m256], &mut [__m256]) = (&d, &mut out);
    if A == 6 {
        let d31 = _mm256_sub_ps(d[3], d[1]);
        let d42 = _mm256_sub_ps(d[4], d[2]);
        o[0] = _mm256_fmadd_ps(s(-5.0), d[2], _mm256_fmadd_ps(s(4.0), d[0], d[4]));
        o[1] = _mm256_fmadd_ps(
            s(-4.0),
            _mm256_add_ps(d[1], d[2]),
            _mm256_add_ps(d[3], d[4]),
        );
        o[2] = _mm256_fmadd_ps(s(4.0), _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3]));
        o[3] = _mm256_fmadd_ps(s(2.0), d31, d42);
        o[4] = _mm256_fmadd_ps(s(-2.0), d31, d42);
        o[5] = _mm256_fmadd_ps(s(-5.0), d[3], _mm256_fmadd_ps(s(4.0), d[1], d[5]));
    } else {
        o[0] = _mm256_sub_ps(d[0], d[2]);
        o[1] = _mm256_add_ps(d[1], d[2]);
        o[2] = _mm256_sub_ps(d[2], d[1]);
        o[3] = _mm256_sub_ps(d[1], d[3]);
    }
    out
}

/// The 1-D output transform `Aᵀ·m` of `A` vectors into `T = A - 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn out_1d<const T: usize, const A: usize>(
    m: [std::arch::x86_64::__m256; A],
) -> [std::arch::x86_64::__m256; T] {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps;
    let mut out = [_mm256_setzero_ps(); T];
    let (m, o): (&[__m256], &mut [__m256]) = (&m, &mut out);
    if A == 6 {
        let s12 = _mm256_add_ps(m[1], m[2]);
        let d12 = _mm256_sub_ps(m[1], m[2]);
        let s34 = _mm256_add_ps(m[3], m[4]);
        let d34 = _mm256_sub_ps(m[3], m[4]);
        o[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
        o[1] = _mm256_fmadd_ps(s(2.0), d34, d12);
        o[2] = _mm256_fmadd_ps(s(4.0), s34, s12);
        o[3] = _mm256_fmadd_ps(s(8.0), d34, _mm256_add_ps(d12, m[5]));
    } else {
        o[0] = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
        o[1] = _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]);
    }
    out
}

/// The input transform of one channel's tiles of `blk` (tiles of side `T`, input tiles of side `A = T + 2`),
/// stored as row `ci` of every strip of the transformed input (`dst = (v, vstride, ci, strip)`: part ξ at
/// `v + ξ·vstride`, strip `s` at `s·strip` from there).
///
/// First down the columns, one tile row at a time: the `A` padded rows of each tile row combined per phase
/// element into `rows` (`[a][j][tile]`: element `T·tx + j` of tile `tx`, that is phase `j % T` at `tx + j / T`,
/// laid out over the block's tile rows in raster order); then along the rows, 8 raster-consecutive tiles at a
/// time, into the strips. Vectors running past a tile row's end write lanes that the next tile row overwrites
/// (rows are done in order), or slack; lanes of tiles past the block land in the strip's padding columns, whose
/// products nobody reads.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `geo.tile == T`; `p` holds one channel's phase planes for `geo` and `2·L`
/// floats more (read by lanes past the last tile); `rows` `A·A·tl` floats with `tl = blk.t_len(txn)`; the strips
/// hold `blk.ntp / NR` strips of row `ci` for each ξ, written by no other task.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tiles<const T: usize, const A: usize>(
    p: &[f32],
    geo: &Geo,
    blk: Block,
    rows: &mut [f32],
    tl: usize,
    (v, vstride, ci, strip): (SharedMut<f32>, usize, usize, usize),
) {
    use std::arch::x86_64::*;
    let (lq, txn) = (geo.lq, geo.txn);
    assert!(geo.tile == T && A == T + 2);
    assert!(p.len() >= geo.plane() + 2 * L && rows.len() >= A * A * tl);
    let (first, count) = blk.tile_rows(txn);
    let (p, t) = (p.as_ptr(), rows.as_mut_ptr());
    // Row `(a, j)` of the row-transformed phases.
    let trow = |a: usize, j: usize| a * A + j;
    for rr in 0..count {
        let ty = first + rr;
        let mut i = 0;
        while i < txn {
            for j in 0..A {
                let (ph, at) = (j % T, i + j / T);
                // SAFETY: rows `T·ty..T·ty + A ≤ hp` of phase `ph`, elements `at..at + 8` (past `lq` only into the
                // next phase row or the slack); stores at `rr·txn + i + 8 ≤ tl`.
                unsafe {
                    let d = std::array::from_fn(|r| {
                        _mm256_loadu_ps(p.add(((T * ty + r) * T + ph) * lq + at))
                    });
                    for (a, vv) in in_1d::<A>(d).into_iter().enumerate() {
                        _mm256_storeu_ps(t.add(trow(a, j) * tl + rr * txn + i), vv);
                    }
                }
            }
            i += L;
        }
    }
    let base = first * txn;
    let mut c8 = 0;
    while c8 < blk.nt {
        let at = blk.t0 + c8 - base;
        // Strip `c8 / 16`, row `ci`, lanes `c8 % 16 .. + 8` (chunks start at multiples of 8).
        let out = (c8 / NR) * strip + ci * NR + c8 % NR;
        for a in 0..A {
            // SAFETY: inside the row-transformed phases written above (`at + 8 ≤ tl`); the strip row is this
            // task's (caller's contract).
            unsafe {
                let d = std::array::from_fn(|j| _mm256_loadu_ps(t.add(trow(a, j) * tl + at)));
                for (b, vv) in in_1d::<A>(d).into_iter().enumerate() {
                    _mm256_storeu_ps(v.ptr().add((a * A + b) * vstride + out), vv);
                }
            }
        }
        c8 += L;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn input_tiles<const T: usize, const A: usize>(
    _: &[f32],
    _: &Geo,
    _: Block,
    _: &mut [f32],
    _: usize,
    _: (SharedMut<f32>, usize, usize, usize),
) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}

/// The output transform of output channel `k`'s tiles of `blk` (side `T`, from `A·A` products) into its plane
/// `dst`, with the epilogue: 8 raster-consecutive tiles at a time, transposed from tile-major vectors into rows
/// of `T` outputs per tile, stored 8 outputs at a time where their tiles are in one tile row and inside the output.
///
/// # Safety
/// `geo.tile == T`; `prods` holds the block's products (`[m, A·A, ntp]`, `ldm = A·A·ntp`) and a vector of slack
/// after them; `dst` (and the residual) address the channel's `oh·ow` plane, whose elements of this block's tiles
/// no other task writes; AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_tiles<const T: usize, const A: usize>(
    prods: *const f32,
    ldm: usize,
    geo: &Geo,
    blk: Block,
    k: usize,
    (bias, res, relu): ChannelEpi,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    assert!(geo.tile == T && A == T + 2 && A * A <= MAX_XI);
    let (txn, ow) = (geo.txn, geo.ow);
    let row_k = prods.wrapping_add(k * ldm);
    let bias_v = _mm256_set1_ps(bias);
    let zero8 = _mm256_setzero_ps();
    let mut c8 = 0;
    while c8 < blk.nt {
        let lanes = L.min(blk.nt - c8);
        let t = blk.t0 + c8;
        // SAFETY: product ξ's row `k` at column `c8`, 8 lanes (the slack covers the last block's overreach).
        let mv: [__m256; MAX_XI] = std::array::from_fn(|xi| {
            if xi < A * A {
                unsafe { _mm256_loadu_ps(row_k.add(xi * blk.ntp + c8)) }
            } else {
                zero8
            }
        });
        // Down the columns, then along the rows.
        let cols: [[__m256; T]; A] =
            std::array::from_fn(|b| out_1d::<T, A>(std::array::from_fn(|a| mv[a * A + b])));
        let z: [[__m256; A]; T] = std::array::from_fn(|r| std::array::from_fn(|b| cols[b][r]));
        let y = z.map(|zr| out_1d::<T, A>(zr).map(|v| _mm256_add_ps(v, bias_v)));
        // Each lane's tile row and first output column; whether its `T` columns are all inside the output.
        let mut pos = [(0usize, 0usize, false); L];
        let (mut ty, mut tx) = (t / txn, t % txn);
        for p in pos.iter_mut().take(lanes) {
            *p = (ty, T * tx, T * tx + T <= ow);
            tx += 1;
            if tx == txn {
                (ty, tx) = (ty + 1, 0);
            }
        }
        let epi = (res, relu);
        for (r, yr) in y.iter().enumerate() {
            let yr: &[__m256] = yr;
            // `runs[g]`: 8 outputs of `per` consecutive tiles' row `r`, in tile order (`per = 8 / T` tiles).
            let (runs, per): ([__m256; 4], usize) = if T == 2 {
                // Columns 0 and 1 of 8 tiles interleaved: tiles 0..4, then 4..8.
                let lo = _mm256_unpacklo_ps(yr[0], yr[1]);
                let hi = _mm256_unpackhi_ps(yr[0], yr[1]);
                let runs = [
                    _mm256_permute2f128_ps::<0x20>(lo, hi),
                    _mm256_permute2f128_ps::<0x31>(lo, hi),
                    zero8,
                    zero8,
                ];
                (runs, 4)
            } else {
                // Transpose the four vectors (columns 0..4 of 8 tiles): `q[i]` holds tile i's row (low half)
                // and tile i + 4's (high half); then tiles 2p and 2p + 1 together.
                let q = packed_gemm::transpose4_in_halves([yr[0], yr[1], yr[2], yr[3]]);
                let runs = [
                    _mm256_permute2f128_ps::<0x20>(q[0], q[1]),
                    _mm256_permute2f128_ps::<0x20>(q[2], q[3]),
                    _mm256_permute2f128_ps::<0x31>(q[0], q[1]),
                    _mm256_permute2f128_ps::<0x31>(q[2], q[3]),
                ];
                (runs, 2)
            };
            for (g, &run) in runs.iter().enumerate().take(lanes.div_ceil(per)) {
                let l0 = g * per;
                let last = l0 + per - 1;
                let (tyl, ox, _) = pos[l0];
                let oy = T * tyl + r;
                if last < lanes && pos[last].0 == tyl && pos[last].2 && oy < geo.oh {
                    // Neighbouring tiles of one row, all eight columns inside.
                    // SAFETY: eight consecutive outputs of row `oy`, inside the plane (and the residual's).
                    unsafe { store8(run, epi, dst, oy * ow + ox) };
                    continue;
                }
                // Tile by tile: four outputs at once where all are inside, else one by one.
                let mut vals = [0.0f32; L];
                // SAFETY: a local array of eight.
                unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), run) };
                for l in l0..(l0 + per).min(lanes) {
                    let (tyl, ox, full) = pos[l];
                    let oy = T * tyl + r;
                    if oy >= geo.oh {
                        continue;
                    }
                    let (at, v) = (oy * ow + ox, &vals[(l - l0) * T..][..T]);
                    // SAFETY: columns `ox..ox + T` (all inside when `full`, else those before `ow`) of row `oy`.
                    unsafe {
                        if T == 4 && full {
                            store4(_mm_loadu_ps(v.as_ptr()), epi, dst, at);
                        } else {
                            store_each(&v[..T.min(ow - ox)], epi, dst, at);
                        }
                    }
                }
            }
        }
        c8 += L;
    }
}

/// The residual (if any) and Relu of an output channel's epilogue.
type ResRelu = (Option<*const f32>, bool);

/// `o` plus the residual at `at`, then Relu, stored to `dst + at..+8`.
///
/// # Safety
/// `dst` and the residual hold 8 floats at `at`; AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store8(mut o: std::arch::x86_64::__m256, (res, relu): ResRelu, dst: *mut f32, at: usize) {
    use std::arch::x86_64::*;
    // SAFETY: caller's contract.
    unsafe {
        if let Some(res) = res {
            o = _mm256_add_ps(o, _mm256_loadu_ps(res.add(at)));
        }
        if relu {
            // `max(x, 0)` returns its second operand for NaN: 0, as `x.max(0.0)`.
            o = _mm256_max_ps(o, _mm256_setzero_ps());
        }
        _mm256_storeu_ps(dst.add(at), o);
    }
}

/// [`store8`] for 4 outputs.
///
/// # Safety
/// `dst` and the residual hold 4 floats at `at`; AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store4(mut q: std::arch::x86_64::__m128, (res, relu): ResRelu, dst: *mut f32, at: usize) {
    use std::arch::x86_64::*;
    // SAFETY: caller's contract.
    unsafe {
        if let Some(res) = res {
            q = _mm_add_ps(q, _mm_loadu_ps(res.add(at)));
        }
        if relu {
            q = _mm_max_ps(q, _mm_setzero_ps());
        }
        _mm_storeu_ps(dst.add(at), q);
    }
}

/// [`store8`] one output at a time, for `vals.len()` outputs.
///
/// # Safety
/// `dst` and the residual hold `vals.len()` floats at `at`.
unsafe fn store_each(vals: &[f32], (res, relu): ResRelu, dst: *mut f32, at: usize) {
    for (s, &v) in vals.iter().enumerate() {
        // SAFETY: caller's contract.
        unsafe {
            let mut v = v;
            if let Some(res) = res {
                v += *res.add(at + s);
            }
            if relu {
                v = v.max(0.0);
            }
            *dst.add(at + s) = v;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn output_tiles<const T: usize, const A: usize>(
    _: *const f32,
    _: usize,
    _: &Geo,
    _: Block,
    _: usize,
    _: ChannelEpi,
    _: *mut f32,
) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}
