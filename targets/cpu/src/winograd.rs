//! Winograd F(4×4, 3×3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
//! for stride-1, undilated, ungrouped 3×3 convolutions over many channels: each 4×4 block of outputs (a *tile*)
//! comes from a 6×6 block of the zero-padded input, and per input/output channel pair the 3×3 correlation becomes
//! an elementwise product of 6×6 transforms — 36 multiplies per 16 outputs instead of 144. Summed over input
//! channels, that is 36 independent GEMMs `M[ξ] = U[ξ]·V[ξ]` (`U[ξ]`: `[M, C]` transformed weights, packed once when
//! the executable is built; `V[ξ]`: `[C, tiles]` transformed input), each running [`crate::packed_gemm`]'s
//! microkernel, and the outputs are `Aᵀ·M·A` per tile and output channel.
//!
//! **Transforms** (`ξ = 6a + b` indexes the 6×6 transform domain): input `V = Bᵀ·d·B`, weights `U = G·g·Gᵀ`
//! (computed in f64 at build time), output `Y = Aᵀ·M·A`, with the usual interpolation points 0, ±1, ±2 and ∞.
//! The input and output transforms run on AVX2 vectors of 8 tiles side by side along a tile row: the input is
//! first split per channel into the four column phases modulo 4 of each zero-padded row (so that the tiles'
//! elements `4·tx + j` are consecutive along `tx`), the output is transposed back from tile-major vectors into
//! rows of 4 while the epilogue (bias, then residual, then Relu — the order of the other conv kernels) is applied.
//!
//! **Blocking.** Tiles are processed in raster-order blocks (spanning tile rows where they end) sized so that one
//! block's transformed input (`36·C·tiles` floats) stays in L2; per block: input transform (split over input
//! channels), the 36 GEMMs (split over `ξ`), output transform (split over output channels). Every value is
//! computed by the same operations whatever the thread count — bit-identical results for any `--threads`.
//!
//! **Accuracy.** The transforms reassociate the sums, so results differ from a direct convolution by rounding
//! only: relative errors of a few 1e-6 on ResNet-size layers, well inside the 1e-4 tolerance the models are
//! checked at (`winograd_matches_the_direct_kernel` bounds it).

use std::cell::RefCell;

use crate::linalg::ConvGeom;
use crate::packed_gemm::{self, NR, PackedA, strip_len, with_scratch};
use crate::parallel::{Parallel, SharedMut};

/// The output tile's side.
const TILE: usize = 4;
/// The input tile's side (`TILE + 3 - 1`).
const ALPHA: usize = 6;
/// Points of the transform domain.
const XI: usize = ALPHA * ALPHA;
/// Tiles per vector.
const L: usize = 8;
/// The transformed input of one tile block should stay under this many bytes (L2 resident).
const BLOCK_BYTES: usize = 512 * 1024;

thread_local! {
    /// The phase-split padded input planes of a call.
    static PHASES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block's transformed input, packed as GEMM strips.
    static TRANSFORMED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One block's 36 products.
    static PRODUCTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's rows: one channel's transforms before they are copied into strips.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The weights of a 3×3 convolution transformed and packed for [`Winograd::run`].
pub struct Winograd {
    /// Output channels.
    m: usize,
    /// Input channels.
    c: usize,
    /// `U[ξ]`, `[m, c]` each, packed for the microkernel.
    u: Vec<PackedA>,
}

/// The filter transform `G·g` of one column (or row) of three taps.
fn filter_1d([g0, g1, g2]: [f64; 3]) -> [f64; ALPHA] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// Where one call's tiles are and how its phase-split planes are laid out.
#[derive(Clone, Copy, Debug)]
struct Geo {
    ih: usize,
    iw: usize,
    oh: usize,
    ow: usize,
    pt: usize,
    pl: usize,
    /// Tiles per tile row.
    txn: usize,
    /// Padded rows (`4·tile rows + 2`).
    hp: usize,
    /// The length of one phase row: every tile's column index plus the vector overreach.
    lq: usize,
}

impl Geo {
    /// Floats of one channel's phase-split planes: `hp` rows of four phases of `lq`.
    fn plane(&self) -> usize {
        self.hp * 4 * self.lq
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
    /// The tile rows it touches, each with its tile columns `tx_lo..tx_hi`.
    fn rows(self, txn: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (first, last) = (self.t0 / txn, (self.t0 + self.nt - 1) / txn);
        (first..=last).map(move |ty| {
            let lo = self.t0.saturating_sub(ty * txn);
            let hi = (self.t0 + self.nt - ty * txn).min(txn);
            (ty, lo, hi)
        })
    }
}

impl Winograd {
    /// Transforms and packs the weights `w` (`[M, C, 3, 3]` row-major, of shape `wsh`), or `None` where the
    /// kernel does not run (other shapes, no AVX2+FMA).
    pub fn new(w: &[f32], wsh: &[usize]) -> Option<Winograd> {
        let &[m, c, 3, 3] = wsh else {
            return None;
        };
        if m == 0 || c == 0 || w.len() != m * c * 9 || !packed_gemm::available() {
            return None;
        }
        let mut u = vec![0.0f32; XI * m * c];
        for k in 0..m {
            for ci in 0..c {
                let g = &w[(k * c + ci) * 9..][..9];
                // G·g column by column, then (G·g)·Gᵀ row by row.
                let mut t = [[0.0f64; 3]; ALPHA];
                for col in 0..3 {
                    let v = filter_1d([g[col], g[3 + col], g[6 + col]].map(f64::from));
                    for (a, v) in v.into_iter().enumerate() {
                        t[a][col] = v;
                    }
                }
                for (a, t) in t.into_iter().enumerate() {
                    for (b, v) in filter_1d(t).into_iter().enumerate() {
                        u[(a * ALPHA + b) * m * c + k * c + ci] = v as f32;
                    }
                }
            }
        }
        let u = u
            .chunks_exact(m * c)
            .map(|ux| PackedA::new(ux, m, c, c, 1))
            .collect();
        Some(Winograd { m, c, u })
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
            && self.u.len() == XI
    }

    /// The convolution of `x` (`[N, C, H, W]` flat) into `out` (`[N, M, OH, OW]`), then the epilogue: `bias` per
    /// output channel, `residual` laid out as `out`, Relu.
    ///
    /// # Panics
    /// If the buffers do not match `g` or `!self.fits(g)` (the caller checks both).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        g: &ConvGeom,
        x: &[f32],
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        par: &Parallel,
    ) {
        assert!(
            self.fits(g),
            "the packed weights do not fit the convolution"
        );
        let (c, m) = (self.c, self.m);
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let (il, ol) = (ih * iw, oh * ow);
        assert!(
            x.len() == g.batch * c * il && out.len() == g.batch * m * ol,
            "Conv buffers do not match their shapes"
        );
        if ol == 0 || m == 0 {
            return;
        }
        let (tyn, txn) = (oh.div_ceil(TILE), ow.div_ceil(TILE));
        let geo = Geo {
            ih,
            iw,
            oh,
            ow,
            pt: g.pad_begin[1],
            pl: g.pad_begin[2],
            txn,
            hp: TILE * tyn + 2,
            lq: (txn + 2 * L).next_multiple_of(L),
        };
        let tiles = tyn * txn;
        let nt = block_tiles(c, tiles);
        let ntp_max = nt.next_multiple_of(NR);
        // Per ξ: the strips of one block's transformed input, and one block's products.
        let vstride = ntp_max / NR * strip_len(c);
        let mstride = m * ntp_max;
        let plane = geo.plane();
        for n in 0..g.batch {
            let xs = &x[n * c * il..][..c * il];
            let base = n * m * ol;
            let dst = SharedMut(out[base..base + m * ol].as_mut_ptr());
            let res = residual.map(|r| &r[base..base + m * ol]);
            with_scratch(&PHASES, c * plane, |phases| {
                par.for_each_item(phases, plane, c > 1, |ci, p| {
                    split_phases(&xs[ci * il..][..il], &geo, p)
                });
                let phases = &*phases;
                with_scratch(&TRANSFORMED, XI * vstride, |v| {
                    // The output transform reads a vector past a block's last product.
                    with_scratch(&PRODUCTS, XI * mstride + L, |prods| {
                        let (vp, mp) = (SharedMut(v.as_mut_ptr()), SharedMut(prods.as_mut_ptr()));
                        let mut t0 = 0;
                        while t0 < tiles {
                            let nt = nt.min(tiles - t0);
                            let blk = Block {
                                t0,
                                nt,
                                ntp: nt.next_multiple_of(NR),
                            };
                            par.for_each_index(c, |ci| {
                                let p = &phases[ci * plane..][..plane];
                                // SAFETY: row `ci` of every strip of `v` is this task's alone.
                                unsafe { input_channel(p, &geo, blk, ci, c, vp, vstride) };
                            });
                            par.for_each_index(XI, |xi| {
                                // SAFETY: `v`'s ξ part holds `ntp / NR` strips of `c` rows at `strip_len(c)`;
                                // product ξ is `[m, ntp]` at `mp + xi·mstride`, this task's alone.
                                unsafe {
                                    packed_gemm::gemm_packed_b(
                                        &self.u[xi],
                                        vp.ptr().add(xi * vstride),
                                        strip_len(c),
                                        blk.ntp,
                                        mp.ptr().add(xi * mstride),
                                        blk.ntp,
                                    )
                                }
                            });
                            let prods = mp;
                            par.for_each_index(m, |k| {
                                let b = bias.map_or(0.0, |b| b[k]);
                                let r = res.map(|r| r[k * ol..][..ol].as_ptr());
                                // SAFETY: the products were written above and are only read now; output plane `k`
                                // is this task's alone; the residual plane matches it.
                                unsafe {
                                    output_channel(
                                        prods.ptr().cast_const(),
                                        mstride,
                                        &geo,
                                        blk,
                                        k,
                                        (b, r, relu),
                                        dst.ptr().add(k * ol),
                                    )
                                }
                            });
                            t0 += nt;
                        }
                    })
                })
            });
        }
    }
}

/// The tiles per block: as many as keep `36·C` transformed floats per tile under [`BLOCK_BYTES`] (at least one
/// strip), balanced so that blocks differ by less than a strip; the whole image when it is at most half a block
/// more.
fn block_tiles(c: usize, tiles: usize) -> usize {
    let per = (BLOCK_BYTES / (XI * c * 4) / NR).max(1) * NR;
    if tiles <= per + per / 2 {
        return tiles.max(1);
    }
    let blocks = tiles.div_ceil(per);
    tiles.div_ceil(blocks).next_multiple_of(NR)
}

/// Splits one zero-padded input plane into its column phases modulo 4: `p[(y·4 + ph)·lq + i]` is padded element
/// `(y, 4i + ph)` (zero outside the input).
fn split_phases(x: &[f32], geo: &Geo, p: &mut [f32]) {
    let lq = geo.lq;
    for (y, row) in p.chunks_exact_mut(4 * lq).enumerate() {
        let Some(src) = y
            .checked_sub(geo.pt)
            .filter(|&iy| iy < geo.ih)
            .map(|iy| &x[iy * geo.iw..][..geo.iw])
        else {
            row.fill(0.0);
            continue;
        };
        for (ph, dst) in row.chunks_exact_mut(lq).enumerate() {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = (4 * i + ph)
                    .checked_sub(geo.pl)
                    .and_then(|ix| src.get(ix))
                    .copied()
                    .unwrap_or(0.0);
            }
        }
    }
}

/// Transforms one input channel's tiles of block `blk` and stores them as row `ci` of every strip of `v` (ξ part
/// at `xi·vstride`, strip `s` at `s·strip_len(c)`).
///
/// # Safety
/// `v` must hold `XI·vstride` floats, `vstride ≥ blk.ntp / NR · strip_len(c)`; no other task writes row `ci`.
unsafe fn input_channel(
    p: &[f32],
    geo: &Geo,
    blk: Block,
    ci: usize,
    c: usize,
    v: SharedMut<f32>,
    vstride: usize,
) {
    // Per ξ one row of the block's tiles (plus a vector of overreach), then the row-transformed phases.
    let rl = blk.ntp + L;
    let tl = ALPHA * 4 * geo.lq;
    with_scratch(&ROWS, XI * rl + tl, |scratch| {
        let (rows, t) = scratch.split_at_mut(XI * rl);
        // SAFETY: the CPU has AVX2 and FMA (a `Winograd` only exists where it does); the sizes are as required.
        unsafe { input_tiles(p, geo, blk, rows, rl, t) };
        let strip = strip_len(c);
        for xi in 0..XI {
            let row = &mut rows[xi * rl..][..blk.ntp];
            row[blk.nt..].fill(0.0);
            for (s, src) in row.chunks_exact(NR).enumerate() {
                // SAFETY: row `ci` of strip `s` of part ξ, inside `v` and this task's alone (caller's contract).
                unsafe {
                    let d = v.ptr().add(xi * vstride + s * strip + ci * NR);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), d, NR);
                }
            }
        }
    });
}

/// The 1-D input transform `Bᵀ·d` of six vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn in_1d(d: [std::arch::x86_64::__m256; ALPHA]) -> [std::arch::x86_64::__m256; ALPHA] {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps;
    let d31 = _mm256_sub_ps(d[3], d[1]);
    let d42 = _mm256_sub_ps(d[4], d[2]);
    [
        _mm256_fmadd_ps(s(-5.0), d[2], _mm256_fmadd_ps(s(4.0), d[0], d[4])),
        _mm256_fmadd_ps(
            s(-4.0),
            _mm256_add_ps(d[1], d[2]),
            _mm256_add_ps(d[3], d[4]),
        ),
        _mm256_fmadd_ps(s(4.0), _mm256_sub_ps(d[1], d[2]), _mm256_sub_ps(d[4], d[3])),
        _mm256_fmadd_ps(s(2.0), d31, d42),
        _mm256_fmadd_ps(s(-2.0), d31, d42),
        _mm256_fmadd_ps(s(-5.0), d[3], _mm256_fmadd_ps(s(4.0), d[1], d[5])),
    ]
}

/// The 1-D output transform `Aᵀ·m` of six vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn out_1d(m: [std::arch::x86_64::__m256; ALPHA]) -> [std::arch::x86_64::__m256; TILE] {
    use std::arch::x86_64::*;
    let s = _mm256_set1_ps;
    let s12 = _mm256_add_ps(m[1], m[2]);
    let d12 = _mm256_sub_ps(m[1], m[2]);
    let s34 = _mm256_add_ps(m[3], m[4]);
    let d34 = _mm256_sub_ps(m[3], m[4]);
    [
        _mm256_add_ps(_mm256_add_ps(m[0], s12), s34),
        _mm256_fmadd_ps(s(2.0), d34, d12),
        _mm256_fmadd_ps(s(4.0), s34, s12),
        _mm256_fmadd_ps(s(8.0), d34, _mm256_add_ps(d12, m[5])),
    ]
}

/// The transforms of one channel's tiles of `blk` into `rows` (`rows[ξ·rl + t - t0]` for tile `t`), 8 tiles of a
/// tile row at a time; `t` is scratch for the row-transformed phases (`ALPHA·4·lq` floats).
///
/// A vector may run past its tile row's last tile: those lanes land where the next tile row's first tiles go and
/// are overwritten by them (rows are done in order), or in the vector of slack after the block.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `p` holds one channel's phase planes for `geo`, `rows` `XI·rl` floats with
/// `rl ≥ blk.nt + L`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_tiles(
    p: &[f32],
    geo: &Geo,
    blk: Block,
    rows: &mut [f32],
    rl: usize,
    t: &mut [f32],
) {
    use std::arch::x86_64::*;
    let lq = geo.lq;
    assert!(p.len() >= geo.plane() && t.len() >= ALPHA * 4 * lq && rows.len() >= XI * rl);
    let (p, t, rows) = (p.as_ptr(), t.as_mut_ptr(), rows.as_mut_ptr());
    for (ty, lo, hi) in blk.rows(geo.txn) {
        let chunks = (hi - lo).div_ceil(L);
        // Down the columns: the six padded rows of this tile row, combined per phase element (each vector of
        // the chunk and the one after, which the chunk's last two taps reach into).
        for ph in 0..4 {
            let mut i = lo;
            while i < lo + (chunks + 1) * L {
                // SAFETY: rows `4ty..4ty + 6 ≤ hp` of phase `ph`, elements `i..i + 8 ≤ lq` (`lq ≥ txn + 16`).
                unsafe {
                    let d = std::array::from_fn(|j| {
                        _mm256_loadu_ps(p.add(((TILE * ty + j) * 4 + ph) * lq + i))
                    });
                    for (a, v) in in_1d(d).into_iter().enumerate() {
                        _mm256_storeu_ps(t.add((a * 4 + ph) * lq + i), v);
                    }
                }
                i += L;
            }
        }
        // Along the rows: tile `tx` reads phase `j % 4` at `tx + j / 4`.
        for ch in 0..chunks {
            let tx = lo + ch * L;
            let at = ty * geo.txn + tx - blk.t0;
            for a in 0..ALPHA {
                // SAFETY: inside the row-transformed phases written above; `at + 8 ≤ rl`.
                unsafe {
                    let d = std::array::from_fn(|j| {
                        _mm256_loadu_ps(t.add((a * 4 + j % 4) * lq + tx + j / 4))
                    });
                    for (b, v) in in_1d(d).into_iter().enumerate() {
                        _mm256_storeu_ps(rows.add((a * ALPHA + b) * rl + at), v);
                    }
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn input_tiles(_: &[f32], _: &Geo, _: Block, _: &mut [f32], _: usize, _: &mut [f32]) {
    unreachable!("a Winograd convolution only exists where AVX2 and FMA do");
}

/// The epilogue of one output channel: bias, residual plane, Relu.
type ChannelEpi = (f32, Option<*const f32>, bool);

/// The output transform of one output channel's tiles of `blk` into its plane `dst`, with the epilogue.
///
/// # Safety
/// `prods` holds the block's 36 products (`[m, ntp]` each, at `xi·mstride`) and a vector of slack after the last;
/// `dst` (and the residual) address the channel's `oh·ow` plane; AVX2 and FMA.
unsafe fn output_channel(
    prods: *const f32,
    mstride: usize,
    geo: &Geo,
    blk: Block,
    k: usize,
    epi: ChannelEpi,
    dst: *mut f32,
) {
    // SAFETY: forwarded.
    unsafe { output_tiles(prods, mstride, geo, blk, k, epi, dst) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_tiles(
    prods: *const f32,
    mstride: usize,
    geo: &Geo,
    blk: Block,
    k: usize,
    (bias, res, relu): ChannelEpi,
    dst: *mut f32,
) {
    use std::arch::x86_64::*;
    let at_row = prods.wrapping_add(k * blk.ntp);
    let bias_v = _mm256_set1_ps(bias);
    let zero = _mm_setzero_ps();
    for (ty, lo, hi) in blk.rows(geo.txn) {
        let mut tx = lo;
        while tx < hi {
            let lanes = L.min(hi - tx);
            let off = ty * geo.txn + tx - blk.t0;
            // SAFETY: product ξ's row `k` at tile `off`, 8 lanes (the slack covers the last block's overreach).
            let mv: [__m256; XI] = std::array::from_fn(|xi| unsafe {
                _mm256_loadu_ps(at_row.add(xi * mstride + off))
            });
            // Down the columns, then along the rows.
            let cols: [[__m256; TILE]; ALPHA] =
                std::array::from_fn(|b| out_1d(std::array::from_fn(|a| mv[a * ALPHA + b])));
            let z: [[__m256; ALPHA]; TILE] =
                std::array::from_fn(|r| std::array::from_fn(|b| cols[b][r]));
            let y = z.map(|zr| out_1d(zr).map(|v| _mm256_add_ps(v, bias_v)));
            for (r, yr) in y.iter().enumerate() {
                let oy = TILE * ty + r;
                if oy >= geo.oh {
                    break;
                }
                // Transpose the four vectors (columns 0..4 of 8 tiles) into 8 quads (one tile's row each).
                let quads: [__m128; L] = {
                    let t0 = _mm256_unpacklo_ps(yr[0], yr[1]);
                    let t1 = _mm256_unpackhi_ps(yr[0], yr[1]);
                    let t2 = _mm256_unpacklo_ps(yr[2], yr[3]);
                    let t3 = _mm256_unpackhi_ps(yr[2], yr[3]);
                    let q = [
                        _mm256_shuffle_ps::<0x44>(t0, t2),
                        _mm256_shuffle_ps::<0xEE>(t0, t2),
                        _mm256_shuffle_ps::<0x44>(t1, t3),
                        _mm256_shuffle_ps::<0xEE>(t1, t3),
                    ];
                    std::array::from_fn(|l| {
                        if l < 4 {
                            _mm256_castps256_ps128(q[l])
                        } else {
                            _mm256_extractf128_ps::<1>(q[l - 4])
                        }
                    })
                };
                let row = oy * geo.ow;
                for (l, &q) in quads.iter().enumerate().take(lanes) {
                    let ox = TILE * (tx + l);
                    let at = row + ox;
                    if ox + TILE <= geo.ow {
                        // SAFETY: four outputs of this row inside the plane (and the residual's).
                        unsafe {
                            let mut q = q;
                            if let Some(r) = res {
                                q = _mm_add_ps(q, _mm_loadu_ps(r.add(at)));
                            }
                            if relu {
                                q = _mm_max_ps(q, zero);
                            }
                            _mm_storeu_ps(dst.add(at), q);
                        }
                    } else {
                        let mut vals = [0.0f32; TILE];
                        // SAFETY: a local array of four.
                        unsafe { _mm_storeu_ps(vals.as_mut_ptr(), q) };
                        for (s, &v) in vals.iter().enumerate().take(geo.ow - ox) {
                            // SAFETY: column `ox + s < ow` of this row.
                            unsafe {
                                let mut v = v;
                                if let Some(r) = res {
                                    v += *r.add(at + s);
                                }
                                if relu {
                                    v = v.max(0.0);
                                }
                                *dst.add(at + s) = v;
                            }
                        }
                    }
                }
            }
            tx += L;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn output_tiles(
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
