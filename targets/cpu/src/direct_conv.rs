//! Direct convolution on an AVX2+FMA microkernel: no im2col. The output is computed pixel-major — tiles of up to
//! `MR` consecutive output positions (continuing on the next output row where one ends) by `NR` output channels —
//! with the weights packed once, when the
//! executable is built, as the right operand (`NR`-wide strips of output channels), and the input read **in
//! place** as the left operand: the value a tile row needs at reduction step `(channel, tap)` is one input element,
//! which the microkernel broadcasts straight from the (zero-padded) input plane. The im2col path packs
//! `taps×` the input for every call; measured here that packing took 15–35 % of a 3×3 or 7×7 convolution.
//!
//! **Reduction order.** With many input channels the reduction runs tap-major (`k = tap·C + c`: within a tap the
//! input is read at the plane stride, one long run per tap); with few (the stem's 3) channel-major (`k = c·taps +
//! tap`: runs along a kernel row). A k block ([`KC`] steps at most) is a list of such runs ([`ASeg`]). Every
//! output element is one FMA chain over `k` in that order, started at zero and carried across k blocks through
//! the output tile (a store and reload of an f32 is exact), so results do not depend on blocking or on how tiles
//! are spread over threads: bit-identical for every thread count.
//!
//! **Input frame.** The input is read in place where no padding is needed, else from a zero-padded copy; for
//! stride 2 (both axes) over many channels, from a copy split into the four stride-2 phases of each plane
//! ([`Frame`]), so that neighbouring output positions read neighbouring elements as at stride 1.
//!
//! **Output.** Tiles are written to a pixel-major scratch (`[positions, M]`, `M` rounded up to `NR` so that every
//! strip is whole) and transposed into the NCHW output with the epilogue (bias, then residual, then Relu) in one
//! pass, as [`crate::packed_gemm`]'s kernel applies it.

use std::cell::RefCell;

use crate::linalg::ConvGeom;
use crate::packed_gemm::{Epi, MR, NR, strip_len, with_scratch};
use crate::parallel::{Parallel, SharedMut};

/// The longest k block.
const KC: usize = 256;
/// Floats of one block of packed weights (`kc × nc`), which stays in L2 while the pixels sweep it.
const NC_FLOATS: usize = 64 * 1024;

thread_local! {
    /// The zero-padded input planes of a call.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The pixel-major output of a call, before it is transposed into place.
    static PIXELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// How the reduction index `k` is laid out over (input channel, tap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// `k = tap·C + c`.
    TapMajor,
    /// `k = c·taps + tap` (the weights' own order).
    ChannelMajor,
}

/// A run of reduction steps reading the input at `off + i·stride` (from a tile row's first element).
#[derive(Clone, Copy, Debug)]
struct ASeg {
    off: usize,
    len: usize,
    stride: usize,
}

/// How the input planes a call reads are laid out: row stride `ws` and plane stride `plane` of the (padded) frame;
/// with `phases`, each plane is split into its four stride-2 phases (even/odd rows × even/odd columns, `phases`
/// elements each, `ws` wide), so that a stride-2 convolution reads neighbouring output positions one element apart.
#[derive(Clone, Copy, Debug)]
struct Frame {
    ws: usize,
    plane: usize,
    phases: Option<usize>,
}

impl Frame {
    /// The offset of kernel tap `(a, b)` from an output position's first element, within a channel's planes.
    fn tap(&self, g: &ConvGeom, a: usize, b: usize) -> usize {
        match self.phases {
            Some(pp) => ((a % 2) * 2 + b % 2) * pp + (a / 2) * self.ws + b / 2,
            None => a * g.dilations[1] * self.ws + b * g.dilations[2],
        }
    }

    /// The offset of output position `(y, x)`, and the distance between neighbouring positions of a row.
    fn position(&self, g: &ConvGeom, y: usize, x: usize) -> (usize, usize) {
        match self.phases {
            Some(_) => (y * self.ws + x, 1),
            None => (y * g.strides[1] * self.ws + x * g.strides[2], g.strides[2]),
        }
    }
}

/// The weights of one group packed as the right operand: k block by k block, each as `NR`-wide strips of output
/// channels ([`strip_len`] apart, channels past `m` zero).
#[derive(Clone, Debug, PartialEq)]
struct PackedW {
    /// `(k0, kb, offset)` of every k block.
    blocks: Vec<(usize, usize, usize)>,
    data: Vec<f32>,
}

/// A convolution's weights packed for the direct kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectConv {
    group: usize,
    /// Output channels per group.
    m: usize,
    /// Input channels per group.
    c: usize,
    /// Kernel height and width.
    kernel: [usize; 2],
    order: Order,
    mats: Vec<PackedW>,
}

/// Whether the running CPU has what the kernel needs.
fn cpu_has_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl DirectConv {
    /// Packs the weights `w` (`[M, C/group, kh, kw]` row-major, of shape `wsh`) of a 2-D (or 1-D) convolution with
    /// `group` groups, or `None` where the direct kernel does not run (no AVX2+FMA, other ranks, a depthwise
    /// convolution, or [`crate::packed_gemm::available`] switched off).
    pub fn new(w: &[f32], wsh: &[usize], group: usize) -> Option<DirectConv> {
        if !crate::packed_gemm::available() || !cpu_has_kernel() || group == 0 {
            return None;
        }
        let (m_all, c, kernel) = match *wsh {
            [m, c, kh, kw] => (m, c, [kh, kw]),
            [m, c, kw] => (m, c, [1, kw]),
            _ => return None,
        };
        if !m_all.is_multiple_of(group) || (group > 1 && c == 1 && m_all == group) {
            return None;
        }
        let m = m_all / group;
        let taps = kernel[0] * kernel[1];
        let k = c * taps;
        if w.len() != m_all * k || k == 0 || m == 0 {
            return None;
        }
        let order = if c >= 16 {
            Order::TapMajor
        } else {
            Order::ChannelMajor
        };
        let strips = m.div_ceil(NR);
        let blocks = k.div_ceil(KC);
        let kc = k.div_ceil(blocks);
        let mats = (0..group)
            .map(|gi| {
                let wg = &w[gi * m * k..][..m * k];
                let mut data = Vec::with_capacity((k + blocks) * strips * NR);
                let mut list = Vec::with_capacity(blocks);
                for b in 0..blocks {
                    let (k0, kb) = (b * kc, kc.min(k - b * kc));
                    list.push((k0, kb, data.len()));
                    for s in 0..strips {
                        let start = data.len();
                        for p in k0..k0 + kb {
                            // The weight row index of reduction step `p`.
                            let kw = match order {
                                Order::TapMajor => (p % c) * taps + p / c,
                                Order::ChannelMajor => p,
                            };
                            for j in s * NR..(s + 1) * NR {
                                data.push(if j < m { wg[j * k + kw] } else { 0.0 });
                            }
                        }
                        data.resize(start + strip_len(kb), 0.0);
                    }
                }
                PackedW { blocks: list, data }
            })
            .collect();
        Some(DirectConv {
            group,
            m,
            c,
            kernel,
            order,
            mats,
        })
    }

    /// Whether it computes the convolution `g` (the same weights' shape and groups, 2-D, stride at most 2 along
    /// the row so that the kernel's broadcasts are fixed offsets).
    pub fn fits(&self, g: &ConvGeom) -> bool {
        g.group == self.group
            && g.out_channels == self.m * self.group
            && g.in_channels == self.c * self.group
            && g.kernel == [1, self.kernel[0], self.kernel[1]]
            && g.input[0] == 1
            && g.output[0] == 1
            && (1..=2).contains(&g.strides[2])
            && self.mats.len() == self.group
    }

    /// The reduction runs of the k block `[k0, k0 + kb)` over the input frame `f`.
    fn segments(&self, g: &ConvGeom, (k0, kb): (usize, usize), f: Frame) -> Vec<ASeg> {
        let [_, kh, kw] = g.kernel;
        let taps = kh * kw;
        let mut segs = Vec::new();
        let mut p = k0;
        while p < k0 + kb {
            let (c, t, len, stride) = match self.order {
                Order::TapMajor => {
                    let (t, c) = (p / self.c, p % self.c);
                    (c, t, (self.c - c).min(k0 + kb - p), f.plane)
                }
                Order::ChannelMajor => {
                    // Runs along a kernel row (never on phase-split planes, whose columns alternate phases).
                    let (c, t) = (p / taps, p % taps);
                    (c, t, (kw - t % kw).min(k0 + kb - p), g.dilations[2])
                }
            };
            segs.push(ASeg {
                off: c * f.plane + f.tap(g, t / kw, t % kw),
                len,
                stride,
            });
            p += len;
        }
        segs
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
        let [_, ih, iw] = g.input;
        let [_, oh, ow] = g.output;
        let [_, kh, kw] = g.kernel;
        let (sh, sw) = (g.strides[1], g.strides[2]);
        let (dh, dw) = (g.dilations[1], g.dilations[2]);
        let (pt, pl) = (g.pad_begin[1], g.pad_begin[2]);
        let (il, ol) = (ih * iw, oh * ow);
        if ol == 0 || self.m == 0 {
            return;
        }
        // The rows and columns the tiles read, in the padded frame.
        let hp = (oh - 1) * sh + (kh - 1) * dh + 1;
        let wp = (ow - 1) * sw + (kw - 1) * dw + 1;
        // Stride 2 over many channels reads phase-split planes: a tile's broadcasts then stay within one or two
        // cache lines as at stride 1 (at stride 2 in place they span twice as many).
        let phased = sh == 2 && sw == 2 && dh == 1 && dw == 1 && self.order == Order::TapMajor;
        let in_place = !phased && pt == 0 && pl == 0 && hp <= ih && wp <= iw;
        let frame = if phased {
            let (hh, ww) = (hp.div_ceil(2), wp.div_ceil(2));
            Frame {
                ws: ww,
                plane: 4 * hh * ww,
                phases: Some(hh * ww),
            }
        } else if in_place {
            Frame {
                ws: iw,
                plane: il,
                phases: None,
            }
        } else {
            Frame {
                ws: wp,
                plane: hp * wp,
                phases: None,
            }
        };
        let mpad = self.m.div_ceil(NR) * NR;
        for n in 0..g.batch {
            for (gi, w) in self.mats.iter().enumerate() {
                let xs = &x[(n * g.in_channels + gi * self.c) * il..][..self.c * il];
                let base = (n * g.out_channels + gi * self.m) * ol;
                let dst = &mut out[base..base + self.m * ol];
                let res = residual.map(|r| &r[base..base + self.m * ol]);
                let bias = bias.map(|b| &b[gi * self.m..(gi + 1) * self.m]);
                let padded_len = if in_place { 0 } else { self.c * frame.plane };
                with_scratch(&PADDED, padded_len, |padded| {
                    let src: &[f32] = if in_place {
                        xs
                    } else {
                        pad_planes(xs, [ih, iw], [pt, pl], frame, padded, par);
                        padded
                    };
                    with_scratch(&PIXELS, ol * mpad, |pixels| {
                        self.tiles(g, w, src, frame, pixels, mpad, par);
                        transpose_out(pixels, mpad, bias, res, relu, dst, par);
                    });
                });
            }
        }
    }

    /// Every tile of one image and group: `pixels` (`[ol, mpad]`) from the input planes `src`.
    #[allow(clippy::too_many_arguments)]
    fn tiles(
        &self,
        g: &ConvGeom,
        w: &PackedW,
        src: &[f32],
        frame: Frame,
        pixels: &mut [f32],
        mpad: usize,
        par: &Parallel,
    ) {
        let [_, oh, ow] = g.output;
        let strips = mpad / NR;
        let segs: Vec<Vec<ASeg>> = w
            .blocks
            .iter()
            .map(|&(k0, kb, _)| self.segments(g, (k0, kb), frame))
            .collect();
        let kc = w.blocks.first().map_or(1, |b| b.1.max(1));
        let max_strips = (NC_FLOATS / (kc * NR)).max(1);
        let out = SharedMut(pixels.as_mut_ptr());
        // The tiles: up to `MR` consecutive output positions each, across output rows where a row is at least `MR`
        // long (a tile's first `q` rows read from one input offset, the rest from a second, each `sw` apart), the
        // positions spread evenly over `ol.div_ceil(MR)` tiles (49 positions: 4 tiles of 6 and 5 of 5 rather than
        // 8 of 6 and one of 1, whose two FMA chains would wait on latency); shorter rows are tiled row by row.
        let ol = oh * ow;
        let at = |p: usize| frame.position(g, p / ow, p % ow).0;
        let sw = frame.position(g, 0, 0).1;
        let panels: Vec<Panel> = if ow >= MR {
            let n = ol.div_ceil(MR);
            let (base, extra) = (ol / n, ol % n);
            let mut p = 0;
            (0..n)
                .map(|i| {
                    let rows = base + usize::from(i < extra);
                    let q = rows.min(ow - p % ow);
                    let panel = Panel {
                        pix: p,
                        rows,
                        q,
                        offs: [at(p), if q < rows { at(p + q) } else { at(p) }],
                    };
                    p += rows;
                    panel
                })
                .collect()
        } else {
            (0..oh)
                .map(|y| Panel {
                    pix: y * ow,
                    rows: ow,
                    q: ow,
                    offs: [at(y * ow); 2],
                })
                .collect()
        };
        let threads = par.threads();
        // Split the output channels over the threads when there are enough strips (each thread then reads only
        // its weights), else the tiles.
        let (parts, by_strips) = if threads > 1 && strips >= 4 * threads {
            (threads, true)
        } else {
            (threads.min(panels.len()).max(1), false)
        };
        par.for_each_index(parts, |t| {
            let (s_lo, s_hi, p_lo, p_hi) = if by_strips {
                (
                    t * strips / parts,
                    (t + 1) * strips / parts,
                    0,
                    panels.len(),
                )
            } else {
                let n = panels.len();
                (0, strips, t * n / parts, (t + 1) * n / parts)
            };
            // The task's steps (column block, k block) in order; during each, the weights of the next are
            // prefetched into L2 a slice per tile, so that streaming them from memory spreads over the whole step
            // (the first pass over a block would otherwise wait on memory).
            let mut steps = Vec::new();
            let mut s0 = s_lo;
            while s0 < s_hi {
                let s1 = (s0 + max_strips).min(s_hi);
                steps.extend((0..w.blocks.len()).map(|bi| (s0, s1, bi)));
                s0 = s1;
            }
            let region = |&(s0, s1, bi): &(usize, usize, usize)| {
                let (_, kb, boff) = w.blocks[bi];
                (boff + s0 * strip_len(kb), (s1 - s0) * strip_len(kb))
            };
            for (i, step) in steps.iter().enumerate() {
                let &(s0, s1, bi) = step;
                let (_, kb, boff) = w.blocks[bi];
                let load = bi > 0;
                let (pf_at, pf_lines) = steps.get(i + 1).map_or((0, 0), |next| {
                    let (at, len) = region(next);
                    (at, len.div_ceil(16))
                });
                let per_tile = pf_lines.div_ceil(((p_hi - p_lo) * (s1 - s0)).max(1));
                let mut tile = 0;
                for panel in &panels[p_lo..p_hi] {
                    for s in s0..s1 {
                        let b = w.data[boff + s * strip_len(kb)..].as_ptr();
                        let first = tile * per_tile;
                        let pf = (
                            w.data.as_ptr().wrapping_add(pf_at + first * 16),
                            per_tile.min(pf_lines.saturating_sub(first)),
                        );
                        tile += 1;
                        // SAFETY: the tile's positions and strip `s` lie inside `pixels` (rows `pix..pix + rows` of
                        // `mpad`), written by this task alone (its tiles or strips); every input element a run reads
                        // lies inside `src` (the padded frame covers the reads of every output position); `b` is a
                        // strip of `kb` steps; prefetches never fault.
                        unsafe {
                            kernel(
                                panel,
                                sw,
                                &segs[bi],
                                src.as_ptr(),
                                b,
                                out.ptr().add(panel.pix * mpad + s * NR),
                                mpad,
                                load,
                                pf,
                            )
                        };
                    }
                }
            }
        });
    }
}

/// Copies the `[C, h, w]` planes of `x` into `dst` laid out as `frame` (each plane at row `pt`, column `pl` of a
/// zero frame, split into its stride-2 phases where the frame says so).
fn pad_planes(
    x: &[f32],
    [h, w]: [usize; 2],
    [pt, pl]: [usize; 2],
    frame: Frame,
    dst: &mut [f32],
    par: &Parallel,
) {
    let (ws, plane) = (frame.ws, frame.plane);
    par.for_each_chunk(dst, plane, 64 * 1024, |start, planes| {
        for (i, pd) in planes.chunks_exact_mut(plane).enumerate() {
            let xc = &x[(start / plane + i) * h * w..][..h * w];
            pd.fill(0.0);
            match frame.phases {
                None => {
                    let (hp, wp) = (plane / ws, ws);
                    let cols = w.min(wp.saturating_sub(pl));
                    if cols == 0 {
                        continue;
                    }
                    for (y, row) in xc.chunks_exact(w).enumerate().take(hp.saturating_sub(pt)) {
                        pd[(y + pt) * wp + pl..][..cols].copy_from_slice(&row[..cols]);
                    }
                }
                Some(pp) => {
                    let hh = pp / ws;
                    for (iy, row) in xc.chunks_exact(w).enumerate() {
                        let y = iy + pt;
                        if y >= 2 * hh {
                            break;
                        }
                        let line = &mut pd[(y % 2) * 2 * pp + (y / 2) * ws..];
                        for (ix, &v) in row.iter().enumerate() {
                            let x = ix + pl;
                            if x >= 2 * ws {
                                break;
                            }
                            line[(x % 2) * pp + x / 2] = v;
                        }
                    }
                }
            }
        }
    });
}

/// Transposes the pixel-major `src` (`[ol, mpad]`) into the channel-major `dst` (`[m, ol]`), applying bias, then
/// the residual, then Relu — in the order [`crate::packed_gemm`]'s epilogue does, so both paths round alike.
fn transpose_out(
    src: &[f32],
    mpad: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    relu: bool,
    dst: &mut [f32],
    par: &Parallel,
) {
    let ol = src.len() / mpad;
    par.for_each_chunk(dst, ol, 64 * 1024, |start, rows| {
        let (oc0, n) = (start / ol, rows.len() / ol);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if cpu_has_kernel() {
            // SAFETY: the CPU has AVX2 and FMA; the block is inside `src`, `rows` and the residual.
            done = unsafe { transpose_blocks_avx2(src, mpad, oc0, rows, ol, bias, residual, relu) };
        }
        for (r, row) in rows.chunks_exact_mut(ol).enumerate().take(n) {
            let oc = oc0 + r;
            let b = bias.map(|b| b[oc]);
            let res = residual.map(|res| &res[oc * ol..(oc + 1) * ol]);
            let from = if r < done { (ol / 8) * 8 } else { 0 };
            for (j, v) in row.iter_mut().enumerate().skip(from) {
                let mut x = src[j * mpad + oc];
                if let Some(b) = b {
                    x += b;
                }
                if let Some(res) = res {
                    x += res[j];
                }
                if relu {
                    x = x.max(0.0);
                }
                *v = x;
            }
        }
    });
}

/// The 8×8 blocks of [`transpose_out`] for the channels `oc0..` of `rows` (`[n, ol]`): returns how many leading
/// channels are done up to the last multiple of 8 positions (the rest of each row, and the other channels, are
/// left to the caller).
///
/// # Safety
/// The CPU has AVX2 and FMA; `src` is `[ol, mpad]` with `oc0 + rows.len() / ol ≤ mpad`; the bias and residual
/// cover the channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn transpose_blocks_avx2(
    src: &[f32],
    mpad: usize,
    oc0: usize,
    rows: &mut [f32],
    ol: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    relu: bool,
) -> usize {
    use std::arch::x86_64::*;
    let n = rows.len() / ol;
    let blocks = n / 8;
    let zero = _mm256_setzero_ps();
    for cb in 0..blocks {
        let c = oc0 + cb * 8;
        for j in (0..ol / 8 * 8).step_by(8) {
            // SAFETY: positions j..j + 8, channels c..c + 8 of `src`, `rows` and the residual (caller's contract).
            unsafe {
                let r: [__m256; 8] =
                    std::array::from_fn(|i| _mm256_loadu_ps(src.as_ptr().add((j + i) * mpad + c)));
                let (lo, hi) = (
                    crate::packed_gemm::transpose4_in_halves([r[0], r[1], r[2], r[3]]),
                    crate::packed_gemm::transpose4_in_halves([r[4], r[5], r[6], r[7]]),
                );
                let u = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]];
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
                    _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
                ];
                for (i, mut x) in cols.into_iter().enumerate() {
                    let oc = c + i;
                    if let Some(b) = bias {
                        x = _mm256_add_ps(x, _mm256_set1_ps(b[oc]));
                    }
                    if let Some(res) = residual {
                        x = _mm256_add_ps(x, _mm256_loadu_ps(res.as_ptr().add(oc * ol + j)));
                    }
                    if relu {
                        // `max(x, 0)` returns its second operand for NaN: 0, as `x.max(0.0)`.
                        x = _mm256_max_ps(x, zero);
                    }
                    _mm256_storeu_ps(rows.as_mut_ptr().add((cb * 8 + i) * ol + j), x);
                }
            }
        }
    }
    blocks * 8
}

/// A tile of `rows ≤ MR` consecutive output positions starting at `pix`: its first `q` read the input from
/// `offs[0]` on, the others from `offs[1]` on, each `sx` elements after the previous one.
#[derive(Clone, Copy, Debug)]
struct Panel {
    pix: usize,
    rows: usize,
    q: usize,
    offs: [usize; 2],
}

/// The microkernel for one tile and one strip of `NR` output channels: `c = (load ? c : 0) + a·b` over the runs
/// `segs`; meanwhile `pf.1` cache lines from `pf.0` on are prefetched into L2.
///
/// # Safety
/// For every run, step `i` and tile row, the input element read (`src + offs + r·sx + seg.off + i·seg.stride`) is
/// inside the input; `b` holds `Σ seg.len` steps of `NR`; `c` holds `rows` rows of `NR` at stride `ldc`. The CPU
/// has AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn kernel(
    t: &Panel,
    sx: usize,
    segs: &[ASeg],
    src: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    pf: (*const f32, usize),
) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: inside the input (caller's contract).
        let (a0, a1) = unsafe { (src.add(t.offs[0]), src.add(t.offs[1])) };
        macro_rules! dispatch {
            ($(($r:literal, $q:literal)),*) => {
                match (t.rows, t.q, sx) {
                    // SAFETY: forwarded; the CPU has AVX2 and FMA (`DirectConv` exists only there).
                    $(
                        ($r, $q, 1) => unsafe { kernel_avx2::<$r, $q, 1>(segs, a0, a1, b, c, ldc, load, pf) },
                        ($r, $q, 2) => unsafe { kernel_avx2::<$r, $q, 2>(segs, a0, a1, b, c, ldc, load, pf) },
                    )*
                    _ => unreachable!("a tile has 1 to {MR} rows, 1 or 2 apart"),
                }
            };
        }
        dispatch!(
            (6, 6),
            (6, 5),
            (6, 4),
            (6, 3),
            (6, 2),
            (6, 1),
            (5, 5),
            (5, 4),
            (5, 3),
            (5, 2),
            (5, 1),
            (4, 4),
            (4, 3),
            (4, 2),
            (4, 1),
            (3, 3),
            (3, 2),
            (3, 1),
            (2, 2),
            (2, 1),
            (1, 1)
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (t, sx, segs, src, b, c, ldc, load, pf);
        unreachable!("DirectConv exists only where the kernel runs");
    }
}

/// The AVX2+FMA kernel on `R` output positions, the first `Q` read from `a0`, the rest from `a1`, `S` input
/// elements apart: per step two loads of the weights, `R` broadcasts of input elements, `2R` FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx2<const R: usize, const Q: usize, const S: usize>(
    segs: &[ASeg],
    a0: *const f32,
    a1: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    (mut pf, mut pf_lines): (*const f32, usize),
) {
    use std::arch::x86_64::*;
    // SAFETY: every access stays inside the operands the caller vouches for.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        if load {
            for (r, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm256_loadu_ps(c.add(r * ldc));
                acc[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
            }
        }
        let step = |acc: &mut [[__m256; 2]; R], a0: *const f32, a1: *const f32, b: *const f32| {
            let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = if r < Q {
                    a0.add(r * S)
                } else {
                    a1.add((r - Q) * S)
                };
                let ar = _mm256_broadcast_ss(&*x);
                acc[0] = _mm256_fmadd_ps(ar, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(ar, b1, acc[1]);
            }
        };
        let mut b = b;
        for seg in segs {
            let (mut x0, mut x1, st) = (a0.add(seg.off), a1.add(seg.off), seg.stride);
            for _ in 0..seg.len / 4 {
                if pf_lines > 0 {
                    _mm_prefetch::<_MM_HINT_T1>(pf.cast());
                    pf = pf.wrapping_add(16);
                    pf_lines -= 1;
                }
                step(&mut acc, x0, x1, b);
                step(&mut acc, x0.add(st), x1.add(st), b.add(NR));
                step(&mut acc, x0.add(2 * st), x1.add(2 * st), b.add(2 * NR));
                step(&mut acc, x0.add(3 * st), x1.add(3 * st), b.add(3 * NR));
                x0 = x0.add(4 * st);
                x1 = x1.add(4 * st);
                b = b.add(4 * NR);
            }
            for _ in 0..seg.len % 4 {
                step(&mut acc, x0, x1, b);
                x0 = x0.add(st);
                x1 = x1.add(st);
                b = b.add(NR);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.add(r * ldc), acc[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), acc[1]);
        }
    }
}
