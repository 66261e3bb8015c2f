//! Dense convolution forward and weight gradient for `f32` with AVX2 + FMA, in the padded
//! channels-last layout of the sparse kernels: no im2col matrix and no packing.
//!
//! - [`forward_rows`]: each output tile is up to [`TILE_POSITIONS`] consecutive positions of
//!   one output row × [`TILE_CHANNELS`] output channels, held in twelve registers while the
//!   tile's patches stream through: per patch value, two weight vectors are loaded and each
//!   position's value is broadcast (an im2col + sgemm path writes and repacks the whole column
//!   matrix first). The weights are reordered once per call to `[Cout / 16, kh, kw·Cin, 16]`
//!   (output channels rounded up to 16 with zeros).
//! - [`weight_grad_rows`]: the same tiles with the roles turned: up to six weights × 16
//!   channels in registers while every position adds its patch values times its cotangents
//!   (transposed to position-major once per sample).
//!
//! - [`DirectConv`]: the forward kernel one sample at a time, for callers that consume each
//!   sample's output while it is in cache (the pooled blocks of a tangent pass).
//!
//! All handle what [`SparseGeom::new`] handles (ungrouped, unit horizontal dilation), any
//! number of input channels, and return `false` otherwise; `f64`, builds without `std` and
//! processors without AVX2 + FMA use the im2col path.

// Everything below the two entry points serves the x86-64 kernels only.
#![cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code, unused_imports))]

use alloc::vec::Vec;

use super::{to_padded, SparseGeom};
use crate::kernels::conv::ConvGeom;
use crate::layer::Conv2d;
use crate::parallel::for_rows;
use crate::scalar::Float;

/// Output positions of one row per register tile.
const TILE_POSITIONS: usize = 6;
/// Output channels per register tile (two 8-lane vectors).
const TILE_CHANNELS: usize = 16;

/// `y = conv(x) (+ bias)` for `rows` samples (`x`: `[rows, Cin, H, W]`, `y`: `[rows, Cout,
/// Ho, Wo]`), samples in parallel. Returns `false`, with `y` untouched, when this kernel does
/// not apply (not `f32`, no AVX2 + FMA, or a geometry [`SparseGeom::new`] refuses); the caller
/// then computes it another way.
pub(crate) fn forward_rows<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    y: &mut [T],
    rows: usize,
    with_bias: bool,
) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};
        let Some(geom) = channels_last_geometry(c, g) else { return false };
        let (Some(x), Some(y), Some(w)) = (as_f32(x), as_f32_mut(y), as_f32(&c.weight)) else { return false };
        let bias = match (&c.bias, with_bias) {
            (Some(b), true) => Some(as_f32(b).expect("same type as the weights")),
            _ => None,
        };
        let (in_size, out_size) = (geom.cin * geom.h * geom.w, geom.cout * geom.npos);
        if x.len() != rows * in_size || y.len() != rows * out_size {
            return false;
        }
        let direct = DirectConv::for_geometry(geom, w);
        for_rows(y, out_size, Vec::new, |xp: &mut Vec<f32>, r, yr| {
            direct.forward_f32(&x[r * in_size..(r + 1) * in_size], xp, bias, yr)
        });
        true
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = (c, g, x, y, rows, with_bias);
        false
    }
}

/// A convolution's direct forward kernel for one sample at a time, its weights tiled once.
///
/// A *narrow* convolution (patch runs `kw·Cin` shorter than [`super::MIN_RUN`], e.g. a first
/// layer on one or three channels) with unit horizontal stride runs a kernel that vectorises
/// along the output positions of a row instead ([`avx2::forward_planes`]): with only a few
/// multiply-adds per output, the channels-last tiles spend their time scattering results.
pub(crate) struct DirectConv {
    geom: SparseGeom,
    /// `[Cout / 16, kh, kw·Cin, 16]` ([`tiled_weights`]); for a narrow convolution, the
    /// weights in their own `[Cout, Cin, kh, kw]` order.
    wt: Vec<f32>,
    narrow: bool,
}

impl DirectConv {
    /// The kernel for `c` on `g`, or `None` where [`forward_rows`] would return `false`.
    pub fn new<T: Float>(c: &Conv2d<T>, g: &ConvGeom) -> Option<Self> {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            let geom = channels_last_geometry(c, g)?;
            let w = crate::kernels::tiles::avx2::as_f32(&c.weight)?;
            Some(DirectConv::for_geometry(geom, w))
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (c, g);
            None
        }
    }

    /// `y = conv(x) + bias` for one sample (`x`: `[Cin, H, W]`, `y`: `[Cout, Ho, Wo]`, `bias`:
    /// `[Cout]` or none, all of the `T` the kernel was made for); `xp` is scratch. The same
    /// values as [`forward_rows`] gives that sample.
    pub fn forward_sample<T: Float>(&self, x: &[T], bias: Option<&[T]>, xp: &mut Vec<f32>, y: &mut [T]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};
            let (Some(x), Some(y)) = (as_f32(x), as_f32_mut(y)) else {
                unreachable!("a DirectConv exists for f32 convolutions only")
            };
            let bias = bias.map(|b| as_f32(b).expect("same type as the input"));
            self.forward_f32(x, xp, bias, y)
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (x, bias, xp, y);
            unreachable!("DirectConv::new returns None on this target")
        }
    }

    fn for_geometry(geom: SparseGeom, w: &[f32]) -> Self {
        let narrow = geom.run() < super::MIN_RUN && geom.stride[1] == 1;
        let wt = if narrow { w.to_vec() } else { tiled_weights(&geom, w) };
        DirectConv { geom, wt, narrow }
    }

    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    fn forward_f32(&self, x: &[f32], xp: &mut Vec<f32>, bias: Option<&[f32]>, y: &mut [f32]) {
        let g = &self.geom;
        assert!(x.len() == g.cin * g.h * g.w && y.len() == g.cout * g.npos, "one sample in, one out");
        xp.resize(g.padded_len(), 0.0);
        if self.narrow {
            to_planes(g, x, xp);
            // SAFETY: `channels_last_geometry` checked AVX2 and FMA when `self` was made.
            return unsafe { avx2::forward_planes(g, &self.wt, xp, bias, y) };
        }
        to_padded(g, x, xp);
        // SAFETY: as above.
        unsafe { avx2::forward_sample(g, &self.wt, xp, bias, y) }
    }
}

/// Copies `x` (`[Cin, H, W]`) into zero-padded planes `xq` (`[Cin, Hp, Wp]`).
fn to_planes(g: &SparseGeom, x: &[f32], xq: &mut [f32]) {
    xq.fill(0.0);
    for ci in 0..g.cin {
        for iy in 0..g.h {
            let at = (ci * g.hp + iy + g.pad_top) * g.wp + g.pad_left;
            xq[at..at + g.w].copy_from_slice(&x[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w]);
        }
    }
}

/// Where a weight gradient reads each sample's output cotangents (`[Cout, Ho, Wo]`).
#[derive(Clone, Copy)]
pub(crate) enum CotSource<'a, T> {
    /// Stored: `[batch, Cout, Ho, Wo]`.
    Rows(&'a [T]),
    /// Written on demand: `f(s, buf, false)` adds sample `s`'s cotangents to `buf`, which is
    /// zero, and `f(s, buf, true)` makes it zero again after use (both may touch only the
    /// places where the sample's cotangents can be nonzero).
    Expand(&'a (dyn Fn(usize, &mut [T], bool) + Sync)),
}

/// The geometry the kernels of this module use for `c` on `g` (one row per sample, channels
/// last: the rows-last layout is for several rows), or `None` when they do not apply (no AVX2 +
/// FMA, or a geometry [`SparseGeom::new`] refuses).
fn channels_last_geometry<T>(c: &Conv2d<T>, g: &ConvGeom) -> Option<SparseGeom> {
    if !super::simd_available() {
        return None;
    }
    SparseGeom::new(c, g).map(|geom| SparseGeom { rows_last: false, ..geom })
}

/// The weights `[Cout, Cin, kh, kw]` reordered to `[Cout / 16, kh, kw·Cin, 16]`, the output
/// channels rounded up to a multiple of 16 with zeros.
fn tiled_weights(g: &SparseGeom, w: &[f32]) -> Vec<f32> {
    let (run, klen) = (g.kw * g.cin, g.kh * g.kw * g.cin);
    let blocks = g.cout.div_ceil(TILE_CHANNELS);
    let mut wt = alloc::vec![0.0f32; blocks * klen * TILE_CHANNELS];
    for co in 0..g.cout {
        let (blk, lane) = (co / TILE_CHANNELS, co % TILE_CHANNELS);
        for ci in 0..g.cin {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let t = ki * run + kj * g.cin + ci;
                    wt[(blk * klen + t) * TILE_CHANNELS + lane] = w[((co * g.cin + ci) * g.kh + ki) * g.kw + kj];
                }
            }
        }
    }
    wt
}

/// Samples per partial weight gradient in [`weight_grad_rows`]: fixed, so that the summation
/// order does not depend on the thread count.
const CHUNK_SAMPLES: usize = 32;

/// `dw += Σ_s dW(x_s, dy_s)`: the weight gradient of the convolution for `batch` samples
/// (`x`: `[batch, Cin, H, W]`, `dy`: `[batch, Cout, Ho, Wo]`, `dw` in the weights' layout
/// `[Cout, Cin, kh, kw]`). Partial gradients over fixed chunks of samples, each position's
/// patch times its cotangents across the output channels in register tiles of
/// [`TILE_POSITIONS`] weights × [`TILE_CHANNELS`] channels. Returns `false`, with `dw`
/// untouched, where [`forward_rows`] would.
pub(crate) fn weight_grad_rows<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    batch: usize,
    dw: &mut [T],
) -> bool {
    dy.len() == batch * c.out_channels * g.ho * g.wo && weight_grad_from(c, g, x, CotSource::Rows(dy), batch, dw)
}

/// [`weight_grad_rows`] with the cotangents from `cot`.
pub(crate) fn weight_grad_from<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    cot: CotSource<'_, T>,
    batch: usize,
    dw: &mut [T],
) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};
        let Some(geom) = channels_last_geometry(c, g) else { return false };
        let (Some(x), Some(dw)) = (as_f32(x), as_f32_mut(dw)) else { return false };
        let (in_size, out_size) = (geom.cin * geom.h * geom.w, geom.cout * geom.npos);
        let (run, klen) = (geom.run(), geom.kh * geom.run());
        let c16 = geom.cout.div_ceil(TILE_CHANNELS) * TILE_CHANNELS;
        if x.len() != batch * in_size || dw.len() != geom.cout * klen {
            return false;
        }
        // Offsets of the patch values from a patch's start, and the patches' starts.
        let rs = geom.run_stride();
        let offsets: Vec<usize> = (0..geom.kh).flat_map(|ki| (0..run).map(move |t| ki * rs + t)).collect();
        let starts: Vec<usize> = (0..geom.npos).map(|p| geom.patch_start(p)).collect();
        let plen = geom.padded_len();
        let mut partials = alloc::vec![0.0f32; batch.div_ceil(CHUNK_SAMPLES) * klen * c16];
        for_rows(
            &mut partials,
            klen * c16,
            || (Vec::new(), Vec::new(), Vec::new()),
            |(xp, dyt, expanded): &mut (Vec<f32>, Vec<f32>, Vec<T>), chunk, part| {
                for s in chunk * CHUNK_SAMPLES..((chunk + 1) * CHUNK_SAMPLES).min(batch) {
                    xp.resize(plen, 0.0);
                    to_padded(&geom, &x[s * in_size..(s + 1) * in_size], xp);
                    // The cotangents position-major, channels padded to whole tiles with zeros.
                    dyt.resize(geom.npos * c16, 0.0);
                    let ds = match cot {
                        CotSource::Rows(dy) => &dy[s * out_size..(s + 1) * out_size],
                        CotSource::Expand(f) => {
                            expanded.resize(out_size, T::ZERO);
                            f(s, expanded, false);
                            &expanded[..]
                        }
                    };
                    let ds = as_f32(ds).expect("the same type as the inputs");
                    // SAFETY: `simd_available` checked AVX2 and FMA above.
                    unsafe {
                        avx2::transpose(ds, geom.cout, geom.npos, dyt, c16);
                        avx2::weight_grad_sample(&offsets, &starts, xp, dyt, c16, part)
                    }
                    if let CotSource::Expand(f) = cot {
                        f(s, expanded, true);
                    }
                }
            },
        );
        // Back to `[Cout, Cin, kh, kw]`, the chunks added in order.
        for part in partials.chunks_exact(klen * c16) {
            for co in 0..geom.cout {
                for k in 0..klen {
                    let (ki, t) = (k / run, k % run);
                    let (kj, ci) = (t / geom.cin, t % geom.cin);
                    dw[((co * geom.cin + ci) * geom.kh + ki) * geom.kw + kj] += part[k * c16 + co];
                }
            }
        }
        true
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = (c, g, x, cot, batch, dw);
        false
    }
}

/// Most weight rows (`Cin·kh` of an output channel) [`SiteConv`] keeps in registers.
const SITE_ACCUMULATORS: usize = 8;

/// The sparse cotangents of one sample and output channel: `f(s, ch, positions, values)`
/// replaces the two lists' contents with the positions (`oy·Wo + ox`, any order, repeats add
/// up) and their cotangents; the other positions' cotangents are zero.
pub(crate) type ChannelSites<'a, T> = &'a (dyn Fn(usize, usize, &mut Vec<u32>, &mut Vec<T>) + Sync);

/// Per worker of [`weight_grad_sites`]: a sample's padded planes, one channel's positions and
/// cotangents.
type SiteScratch<T> = (Vec<f32>, Vec<u32>, Vec<T>);

/// A narrow convolution (`f32`, at most eight weights per kernel row and
/// [`SITE_ACCUMULATORS`] rows per output channel) at listed output sites, one output channel at
/// a time: for the pooled blocks of the paper network's first layer, whose passes need it only
/// at the pool's winners. Each site's patch is `Cin·kh` rows of `kw` values in zero-padded
/// planes `[Cin, Hp, Wp]`, one 8-lane vector each.
pub(crate) struct SiteConv {
    geom: SparseGeom,
    /// Where each output position's patch starts in the planes.
    starts: Vec<u32>,
    /// Each output channel's `Cin·kh` weight rows as 8-lane vectors, zeros past `kw`.
    rows: Vec<f32>,
}

impl SiteConv {
    /// The kernels for `c` on `g`, or `None` where they do not apply (see the type's doc, and
    /// where [`forward_rows`] would return `false`).
    pub fn new<T: Float>(c: &Conv2d<T>, g: &ConvGeom) -> Option<Self> {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            let geom = channels_last_geometry(c, g)?;
            let w = crate::kernels::tiles::avx2::as_f32(&c.weight)?;
            let k = geom.cin * geom.kh;
            if geom.kw > 8 || k > SITE_ACCUMULATORS || geom.wo == 0 {
                return None;
            }
            let starts = (0..geom.npos)
                .map(|p| ((p / geom.wo) * geom.stride[0] * geom.wp + (p % geom.wo) * geom.stride[1]) as u32)
                .collect();
            let mut rows = alloc::vec![0.0f32; geom.cout * k * 8];
            for (row, ws) in rows.chunks_exact_mut(8).zip(w.chunks_exact(geom.kw)) {
                row[..geom.kw].copy_from_slice(ws);
            }
            Some(SiteConv { geom, starts, rows })
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (c, g);
            None
        }
    }

    /// Weight rows per output channel (`Cin·kh`).
    fn k(&self) -> usize {
        self.geom.cin * self.geom.kh
    }

    /// Input values per sample (`Cin·H·W`).
    pub fn in_size(&self) -> usize {
        self.geom.cin * self.geom.h * self.geom.w
    }

    /// One sample `x` (`[Cin, H, W]`, `f32`) in the padded planes the other methods read, plus
    /// eight values of slack (a row's vector load may run past the last plane).
    pub fn planes<T: Float>(&self, x: &[T], xq: &mut Vec<f32>) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        {
            let x = crate::kernels::tiles::avx2::as_f32(x).expect("a SiteConv exists for f32 convolutions only");
            xq.resize(self.geom.padded_len() + 8, 0.0);
            to_planes(&self.geom, x, xq);
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (x, xq);
            unreachable!("SiteConv::new returns None on this target")
        }
    }

    /// `out[i]` = output channel `ch` (without its bias) at `positions[i]`, for the sample whose
    /// planes `xq` are.
    pub fn dots(&self, xq: &[f32], ch: usize, positions: &[u32], out: &mut [f32]) {
        assert!(out.len() == positions.len() && ch < self.geom.cout, "one output per position");
        let k = self.k();
        let w = &self.rows[ch * k * 8..(ch + 1) * k * 8];
        // SAFETY: `new` checked AVX2 and FMA (`channels_last_geometry`).
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        unsafe {
            avx2::site_dots(&self.geom, xq, &self.starts, w, positions, out)
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (xq, w);
            unreachable!("SiteConv::new returns None on this target")
        }
    }

    /// `acc` (`Cin·kh` rows of 8 lanes) += `Σ_i values[i]·patch(positions[i])` for the sample
    /// whose planes `xq` are: a weight gradient's share of one output channel.
    pub fn add_patches(&self, xq: &[f32], positions: &[u32], values: &[f32], acc: &mut [f32]) {
        // SAFETY: as above.
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        unsafe {
            avx2::weight_grad_sites(&self.geom, xq, &self.starts, positions, values, acc)
        }
        #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
        {
            let _ = (xq, positions, values, acc);
            unreachable!("SiteConv::new returns None on this target")
        }
    }
}

/// `dw += Σ_s dW(x_s, dy_s)` for a convolution that [`SiteConv`] handles, whose cotangents are
/// sparse (those of a pooled block: nonzero only at the pool's winners, and there only where
/// the activation lets them through): for each output channel, every listed site adds its
/// cotangent times its patch to the channel's gradient rows, which stay in registers while the
/// sites stream through. Partial sums over fixed chunks of samples, so the result does not
/// depend on the thread count. Returns `false`, with `dw` untouched, where [`SiteConv::new`]
/// gives `None`.
pub(crate) fn weight_grad_sites<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    batch: usize,
    sites: ChannelSites<'_, T>,
    dw: &mut [T],
) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};
        let Some(sc) = SiteConv::new(c, g) else { return false };
        let (k, kw, in_size) = (sc.k(), sc.geom.kw, sc.in_size());
        let Some(dw) = as_f32_mut(dw) else { return false };
        if x.len() != batch * in_size || dw.len() != sc.geom.cout * k * kw {
            return false;
        }
        // Per chunk: each channel's `k` rows as whole vectors, lanes past `kw` unused.
        let lanes = sc.geom.cout * k * 8;
        let mut partials = alloc::vec![0.0f32; batch.div_ceil(CHUNK_SAMPLES) * lanes];
        for_rows(
            &mut partials,
            lanes,
            || (Vec::new(), Vec::new(), Vec::new()),
            |(xq, positions, values): &mut SiteScratch<T>, chunk, part| {
                for s in chunk * CHUNK_SAMPLES..((chunk + 1) * CHUNK_SAMPLES).min(batch) {
                    sc.planes(&x[s * in_size..(s + 1) * in_size], xq);
                    for (ch, acc) in part.chunks_exact_mut(k * 8).enumerate() {
                        sites(s, ch, positions, values);
                        sc.add_patches(xq, positions, as_f32(values).expect("the same type as the inputs"), acc);
                    }
                }
            },
        );
        // Back to `[Cout, Cin, kh, kw]`, the chunks added in order.
        for part in partials.chunks_exact(lanes) {
            for (row, acc) in dw.chunks_exact_mut(kw).zip(part.chunks_exact(8)) {
                row.iter_mut().zip(acc).for_each(|(d, &a)| *d += a);
            }
        }
        true
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = (c, g, x, batch, sites, dw);
        false
    }
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use core::arch::x86_64::*;

    use super::{SparseGeom, TILE_CHANNELS, TILE_POSITIONS};
    use crate::kernels::tiles::avx2::hsum;

    /// One sample: `xp` padded channels-last (`padded_len` values), `wt` from
    /// [`super::tiled_weights`], `y` `[Cout, Ho, Wo]`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward_sample(g: &SparseGeom, wt: &[f32], xp: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let klen = g.kh * g.kw * g.cin;
        let blocks = g.cout.div_ceil(TILE_CHANNELS);
        let last = g.npos.saturating_sub(1);
        assert!(
            wt.len() >= blocks * klen * TILE_CHANNELS
                && y.len() >= g.cout * g.npos
                && bias.is_none_or(|b| b.len() >= g.cout)
                && (g.npos == 0 || g.patch_start(last) + (g.kh - 1) * g.run_stride() + g.run() <= xp.len())
        );
        let ho = g.npos.checked_div(g.wo).unwrap_or(0);
        for oy in 0..ho {
            let mut ox = 0;
            while ox < g.wo {
                let n = (g.wo - ox).min(TILE_POSITIONS);
                let p = oy * g.wo + ox;
                match n {
                    6 => tile::<6>(g, wt, xp, bias, y, p),
                    5 => tile::<5>(g, wt, xp, bias, y, p),
                    4 => tile::<4>(g, wt, xp, bias, y, p),
                    3 => tile::<3>(g, wt, xp, bias, y, p),
                    2 => tile::<2>(g, wt, xp, bias, y, p),
                    _ => tile::<1>(g, wt, xp, bias, y, p),
                }
                ox += n;
            }
        }
    }

    /// One sample and output channel of [`super::weight_grad_sites`]: `acc` holds the channel's
    /// `Cin·kh` gradient rows as 8-lane vectors (lanes past `kw` collect values that are never
    /// read), `xq` the sample's zero-padded planes `[Cin, Hp, Wp]` plus eight values of slack,
    /// `starts` where each position's patch starts in `xq`, `positions` and `values` the sites
    /// and their cotangents.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad_sites(
        g: &SparseGeom,
        xq: &[f32],
        starts: &[u32],
        positions: &[u32],
        values: &[f32],
        acc: &mut [f32],
    ) {
        let s = Sites { starts, positions, values };
        match g.cin * g.kh {
            1 => sites_k::<1>(g, xq, s, acc),
            2 => sites_k::<2>(g, xq, s, acc),
            3 => sites_k::<3>(g, xq, s, acc),
            4 => sites_k::<4>(g, xq, s, acc),
            5 => sites_k::<5>(g, xq, s, acc),
            6 => sites_k::<6>(g, xq, s, acc),
            7 => sites_k::<7>(g, xq, s, acc),
            8 => sites_k::<8>(g, xq, s, acc),
            k => unreachable!("{k} gradient rows: the caller keeps at most eight"),
        }
    }

    /// The arguments of [`weight_grad_sites`] that describe the sites.
    #[derive(Clone, Copy)]
    struct Sites<'a> {
        starts: &'a [u32],
        positions: &'a [u32],
        values: &'a [f32],
    }

    /// [`super::SiteConv::dots`]: `w` the channel's `Cin·kh` weight rows (8 lanes each, zeros
    /// past `kw`); the loads are masked to `kw` lanes, so values beside a patch never enter.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn site_dots(g: &SparseGeom, xq: &[f32], starts: &[u32], w: &[f32], positions: &[u32], out: &mut [f32]) {
        match g.cin * g.kh {
            1 => dots_k::<1>(g, xq, starts, w, positions, out),
            2 => dots_k::<2>(g, xq, starts, w, positions, out),
            3 => dots_k::<3>(g, xq, starts, w, positions, out),
            4 => dots_k::<4>(g, xq, starts, w, positions, out),
            5 => dots_k::<5>(g, xq, starts, w, positions, out),
            6 => dots_k::<6>(g, xq, starts, w, positions, out),
            7 => dots_k::<7>(g, xq, starts, w, positions, out),
            8 => dots_k::<8>(g, xq, starts, w, positions, out),
            k => unreachable!("{k} weight rows: SiteConv keeps at most eight"),
        }
    }

    /// [`site_dots`] with `K = Cin·kh` rows, four sites at a time (independent sums).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dots_k<const K: usize>(
        g: &SparseGeom,
        xq: &[f32],
        starts: &[u32],
        w: &[f32],
        positions: &[u32],
        out: &mut [f32],
    ) {
        let offs = row_offsets::<K>(g);
        assert!(
            K == g.cin * g.kh
                && w.len() >= K * 8
                && out.len() == positions.len()
                && starts.len() == g.npos
                && g.kw <= 8
        );
        let mask = _mm256_loadu_si256(LANE_MASKS[g.kw].as_ptr().cast());
        let mut wv = [_mm256_setzero_ps(); K];
        for (k, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(w.as_ptr().add(8 * k));
        }
        // The farthest value a patch's (masked) loads reach from its start.
        let reach = offs[K - 1] + g.kw;
        let base = |p: u32| {
            let start = starts[p as usize] as usize;
            assert!(start + reach <= xq.len(), "a patch runs past the padded planes");
            xq.as_ptr().add(start)
        };
        let mut quads = positions.chunks_exact(4);
        let mut i = 0;
        for q in quads.by_ref() {
            let b = [base(q[0]), base(q[1]), base(q[2]), base(q[3])];
            let mut acc = [_mm256_setzero_ps(); 4];
            for (&o, &wk) in offs.iter().zip(&wv) {
                for (a, &bp) in acc.iter_mut().zip(&b) {
                    *a = _mm256_fmadd_ps(wk, _mm256_maskload_ps(bp.add(o), mask), *a);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                out[i + j] = hsum(*a);
            }
            i += 4;
        }
        for &p in quads.remainder() {
            let bp = base(p);
            let mut a = _mm256_setzero_ps();
            for (&o, &wk) in offs.iter().zip(&wv) {
                a = _mm256_fmadd_ps(wk, _mm256_maskload_ps(bp.add(o), mask), a);
            }
            out[i] = hsum(a);
            i += 1;
        }
    }

    /// Where row `k = ci·kh + ki` of a patch starts in zero-padded planes, from the patch's
    /// first value.
    fn row_offsets<const K: usize>(g: &SparseGeom) -> [usize; K] {
        let mut offs = [0usize; K];
        for (k, o) in offs.iter_mut().enumerate() {
            *o = (k / g.kh) * g.hp * g.wp + (k % g.kh) * g.dil_h * g.wp;
        }
        offs
    }

    /// [`weight_grad_sites`] with `K = Cin·kh` rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sites_k<const K: usize>(g: &SparseGeom, xq: &[f32], sites: Sites<'_>, acc: &mut [f32]) {
        let offs = row_offsets::<K>(g);
        assert!(
            K == g.cin * g.kh
                && acc.len() >= K * 8
                && sites.positions.len() == sites.values.len()
                && sites.starts.len() == g.npos
        );
        let mut a = [_mm256_setzero_ps(); K];
        for (k, v) in a.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(acc.as_ptr().add(8 * k));
        }
        // The farthest value a patch's vector loads reach from its start.
        let reach = offs[K - 1] + 8;
        for (&p, &d) in sites.positions.iter().zip(sites.values) {
            let start = sites.starts[p as usize] as usize;
            assert!(start + reach <= xq.len(), "a patch runs past the padded planes");
            let base = xq.as_ptr().add(start);
            let dv = _mm256_set1_ps(d);
            for (v, &o) in a.iter_mut().zip(&offs) {
                *v = _mm256_fmadd_ps(dv, _mm256_loadu_ps(base.add(o)), *v);
            }
        }
        for (k, v) in a.iter().enumerate() {
            _mm256_storeu_ps(acc.as_mut_ptr().add(8 * k), *v);
        }
    }

    /// Output channels per tile of [`forward_planes`].
    const PLANE_CHANNELS: usize = 4;

    /// One sample of a convolution with unit horizontal stride: `xq` zero-padded planes
    /// `[Cin, Hp, Wp]`, `w` the weights `[Cout, Cin, kh, kw]`, `y` `[Cout, Ho, Wo]`. Tiles of
    /// [`PLANE_CHANNELS`] channels × up to 16 consecutive positions of an output row in eight
    /// registers; each tap loads two vectors of positions and broadcasts one weight per channel.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward_planes(g: &SparseGeom, w: &[f32], xq: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let ho = g.npos.checked_div(g.wo).unwrap_or(0);
        assert!(
            g.stride[1] == 1
                && w.len() >= g.cout * g.cin * g.kh * g.kw
                && y.len() >= g.cout * g.npos
                && bias.is_none_or(|b| b.len() >= g.cout)
                && (ho == 0
                    || ((g.cin - 1) * g.hp + (ho - 1) * g.stride[0] + (g.kh - 1) * g.dil_h + 1) * g.wp <= xq.len())
                && g.wo + g.kw - 1 <= g.wp
        );
        for oy in 0..ho {
            let mut ox = 0;
            while ox < g.wo {
                let n = (g.wo - ox).min(16);
                // Lanes of the last vector that hold positions of this row.
                let lanes = |v: usize| _mm256_loadu_si256(LANE_MASKS[(n.saturating_sub(v * 8)).min(8)].as_ptr().cast());
                let (m0, m1) = (lanes(0), lanes(1));
                let mut c0 = 0;
                while c0 < g.cout {
                    let at = PlaneTile { oy, ox, c0, masks: [m0, m1] };
                    c0 += match g.cout - c0 {
                        1 => plane_tile::<1>(g, w, xq, bias, y, at),
                        2 => plane_tile::<2>(g, w, xq, bias, y, at),
                        3 => plane_tile::<3>(g, w, xq, bias, y, at),
                        _ => plane_tile::<PLANE_CHANNELS>(g, w, xq, bias, y, at),
                    };
                }
                ox += n;
            }
        }
    }

    /// Where a tile of [`forward_planes`] lies: output row, first position and channel, and the
    /// lanes of its two vectors of positions that lie in the row.
    #[derive(Clone, Copy)]
    struct PlaneTile {
        oy: usize,
        ox: usize,
        c0: usize,
        masks: [__m256i; 2],
    }

    /// Channels `c0..c0 + NC` of the tile `at`; returns `NC`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn plane_tile<const NC: usize>(
        g: &SparseGeom,
        w: &[f32],
        xq: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        at: PlaneTile,
    ) -> usize {
        let [m0, m1] = at.masks;
        let klen = g.cin * g.kh * g.kw;
        let wc = w.as_ptr().add(at.c0 * klen);
        let mut acc = [[_mm256_setzero_ps(); 2]; NC];
        for ci in 0..g.cin {
            for ki in 0..g.kh {
                let row = xq.as_ptr().add((ci * g.hp + at.oy * g.stride[0] + ki * g.dil_h) * g.wp + at.ox);
                let wk = wc.add((ci * g.kh + ki) * g.kw);
                for kj in 0..g.kw {
                    let x0 = _mm256_maskload_ps(row.add(kj), m0);
                    let x1 = _mm256_maskload_ps(row.add(kj + 8), m1);
                    for (c, a) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*wk.add(c * klen + kj));
                        a[0] = _mm256_fmadd_ps(b, x0, a[0]);
                        a[1] = _mm256_fmadd_ps(b, x1, a[1]);
                    }
                }
            }
        }
        // Plain stores (masked ones are slow on some processors); a partial tile goes through
        // a buffer.
        let n = (g.wo - at.ox).min(16);
        let mut tail = [0.0f32; 16];
        for (c, a) in acc.iter().enumerate() {
            let b = _mm256_set1_ps(bias.map_or(0.0, |b| b[at.c0 + c]));
            let dst = y.as_mut_ptr().add((at.c0 + c) * g.npos + at.oy * g.wo + at.ox);
            if n == 16 {
                _mm256_storeu_ps(dst, _mm256_add_ps(a[0], b));
                _mm256_storeu_ps(dst.add(8), _mm256_add_ps(a[1], b));
            } else {
                _mm256_storeu_ps(tail.as_mut_ptr(), _mm256_add_ps(a[0], b));
                _mm256_storeu_ps(tail.as_mut_ptr().add(8), _mm256_add_ps(a[1], b));
                core::ptr::copy_nonoverlapping(tail.as_ptr(), dst, n);
            }
        }
        NC
    }

    /// `LANE_MASKS[n]`: the first `n` of eight lanes set.
    const LANE_MASKS: [[i32; 8]; 9] = {
        let mut m = [[0i32; 8]; 9];
        let mut n = 0;
        while n <= 8 {
            let mut i = 0;
            while i < n {
                m[n][i] = -1;
                i += 1;
            }
            n += 1;
        }
        m
    };

    /// `dyt[p·c16 + co] = ds[co·npos + p]` for every channel `co < cout` and position `p`
    /// (`ds` is `[cout, npos]`), in 8 × 8 blocks.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transpose(ds: &[f32], cout: usize, npos: usize, dyt: &mut [f32], c16: usize) {
        assert!(ds.len() >= cout * npos && dyt.len() >= npos * c16 && cout <= c16);
        let (co8, p8) = (cout - cout % 8, npos - npos % 8);
        let src = ds.as_ptr();
        let dst = dyt.as_mut_ptr();
        for co in (0..co8).step_by(8) {
            for p in (0..p8).step_by(8) {
                let r = |i: usize| _mm256_loadu_ps(src.add((co + i) * npos + p));
                let (t0, t1) = (_mm256_unpacklo_ps(r(0), r(1)), _mm256_unpackhi_ps(r(0), r(1)));
                let (t2, t3) = (_mm256_unpacklo_ps(r(2), r(3)), _mm256_unpackhi_ps(r(2), r(3)));
                let (t4, t5) = (_mm256_unpacklo_ps(r(4), r(5)), _mm256_unpackhi_ps(r(4), r(5)));
                let (t6, t7) = (_mm256_unpacklo_ps(r(6), r(7)), _mm256_unpackhi_ps(r(6), r(7)));
                let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
                let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
                let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
                let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
                let out = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (j, o) in out.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p + j) * c16 + co), *o);
                }
            }
            for p in p8..npos {
                for i in 0..8 {
                    *dst.add(p * c16 + co + i) = *src.add((co + i) * npos + p);
                }
            }
        }
        for co in co8..cout {
            for p in 0..npos {
                *dst.add(p * c16 + co) = *src.add(co * npos + p);
            }
        }
    }

    /// One sample's weight gradient added to `part` (`[kh·kw·Cin, c16]`): `xp` padded channels
    /// last, `dyt` its cotangents `[positions, c16]`, `offsets` the patch values' offsets from
    /// a patch start, `starts` the patches' starts.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad_sample(
        offsets: &[usize],
        starts: &[usize],
        xp: &[f32],
        dyt: &[f32],
        c16: usize,
        part: &mut [f32],
    ) {
        let klen = offsets.len();
        assert!(
            c16.is_multiple_of(TILE_CHANNELS)
                && part.len() >= klen * c16
                && dyt.len() >= starts.len() * c16
                && starts.iter().max().zip(offsets.iter().max()).is_none_or(|(s, o)| s + o < xp.len())
        );
        let mut k0 = 0;
        while k0 < klen {
            let n = (klen - k0).min(TILE_POSITIONS);
            match n {
                6 => grad_tile::<6>(&offsets[k0..k0 + 6], starts, xp, dyt, c16, part, k0),
                5 => grad_tile::<5>(&offsets[k0..k0 + 5], starts, xp, dyt, c16, part, k0),
                4 => grad_tile::<4>(&offsets[k0..k0 + 4], starts, xp, dyt, c16, part, k0),
                3 => grad_tile::<3>(&offsets[k0..k0 + 3], starts, xp, dyt, c16, part, k0),
                2 => grad_tile::<2>(&offsets[k0..k0 + 2], starts, xp, dyt, c16, part, k0),
                _ => grad_tile::<1>(&offsets[k0..k0 + 1], starts, xp, dyt, c16, part, k0),
            }
            k0 += n;
        }
    }

    /// Weights `k0..k0 + N` of every output channel, summed over all positions.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn grad_tile<const N: usize>(
        offsets: &[usize],
        starts: &[usize],
        xp: &[f32],
        dyt: &[f32],
        c16: usize,
        part: &mut [f32],
        k0: usize,
    ) {
        let mut off = [0usize; N];
        off.copy_from_slice(&offsets[..N]);
        for blk in (0..c16).step_by(TILE_CHANNELS) {
            let mut acc = [[_mm256_setzero_ps(); 2]; N];
            for (p, &start) in starts.iter().enumerate() {
                let d = dyt.as_ptr().add(p * c16 + blk);
                let (d0, d1) = (_mm256_loadu_ps(d), _mm256_loadu_ps(d.add(8)));
                let x = xp.as_ptr().add(start);
                for (a, &o) in acc.iter_mut().zip(&off) {
                    let b = _mm256_broadcast_ss(&*x.add(o));
                    a[0] = _mm256_fmadd_ps(b, d0, a[0]);
                    a[1] = _mm256_fmadd_ps(b, d1, a[1]);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let dst = part.as_mut_ptr().add((k0 + i) * c16 + blk);
                _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), a[0]));
                _mm256_storeu_ps(dst.add(8), _mm256_add_ps(_mm256_loadu_ps(dst.add(8)), a[1]));
            }
        }
    }

    /// Positions `p..p + N` (one output row) for every block of output channels.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const N: usize>(
        g: &SparseGeom,
        wt: &[f32],
        xp: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        p: usize,
    ) {
        let (run, rs, klen) = (g.run(), g.run_stride(), g.kh * g.kw * g.cin);
        // Consecutive positions of a row start `stride·Cin` values apart.
        let step = g.stride[1] * g.cin;
        let start = g.patch_start(p);
        let mut out = [[0.0f32; TILE_CHANNELS]; N];
        for blk in 0..g.cout.div_ceil(TILE_CHANNELS) {
            let mut acc = [[_mm256_setzero_ps(); 2]; N];
            for ki in 0..g.kh {
                let xr = xp.as_ptr().add(start + ki * rs);
                let wr = wt.as_ptr().add((blk * klen + ki * run) * TILE_CHANNELS);
                for t in 0..run {
                    let w0 = _mm256_loadu_ps(wr.add(t * TILE_CHANNELS));
                    let w1 = _mm256_loadu_ps(wr.add(t * TILE_CHANNELS + 8));
                    for (i, a) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*xr.add(i * step + t));
                        a[0] = _mm256_fmadd_ps(b, w0, a[0]);
                        a[1] = _mm256_fmadd_ps(b, w1, a[1]);
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                _mm256_storeu_ps(o.as_mut_ptr(), a[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), a[1]);
            }
            let c0 = blk * TILE_CHANNELS;
            for lane in 0..TILE_CHANNELS.min(g.cout - c0) {
                let ch = c0 + lane;
                let b = bias.map_or(0.0, |b| b[ch]);
                let yc = &mut y[ch * g.npos + p..ch * g.npos + p + N];
                for (v, o) in yc.iter_mut().zip(&out) {
                    *v = o[lane] + b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::{forward_rows, weight_grad_rows};
    use crate::kernels::conv::{forward_row, weight_grad_row, ConvGeom};
    use crate::layer::Conv2d;
    use crate::train::Rng;

    /// `([cin, h, w], out channels, kernel, stride, padding, vertical dilation)`.
    type Geometry = ([usize; 3], usize, [usize; 2], [usize; 2], [usize; 4], usize);

    /// `[cin, h, w]`, out channels, kernel, stride, padding `[top, left, bottom, right]`,
    /// vertical dilation: strides, uneven padding, dilation, channel counts that are not a
    /// multiple of 16 and rows that are not a multiple of the six-position tile.
    const GEOMETRIES: [Geometry; 6] = [
        ([32, 14, 14], 64, [5, 5], [1, 1], [2, 2, 2, 2], 1),
        ([1, 28, 28], 32, [5, 5], [1, 1], [2, 2, 2, 2], 1),
        ([3, 11, 9], 20, [3, 4], [2, 1], [1, 2, 0, 1], 2),
        ([5, 7, 13], 7, [2, 3], [1, 2], [0, 1, 1, 0], 1),
        ([2, 5, 5], 17, [1, 1], [1, 1], [0, 0, 0, 0], 1),
        ([4, 9, 8], 33, [3, 3], [3, 3], [1, 1, 1, 1], 3),
    ];

    /// Whether the kernels can run here; prints why the test is skipped when not.
    fn simd_or_skip() -> bool {
        let ok = super::super::simd_available();
        if !ok {
            std::println!("skipped: no AVX2 + FMA on this processor");
        }
        ok
    }

    fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform() as f32 - 0.5).collect()
    }

    /// A convolution of the geometry with random weights and bias, its geometry, and the
    /// input and output sizes of one sample.
    fn random_conv(rng: &mut Rng, geometry: Geometry) -> (Conv2d<f32>, ConvGeom, usize, usize) {
        let (shape, cout, kernel, stride, padding, dil) = geometry;
        let [cin, h, w] = shape;
        let c = Conv2d {
            weight: uniform(rng, cout * cin * kernel[0] * kernel[1]),
            bias: Some(uniform(rng, cout)),
            out_channels: cout,
            in_channels: cin,
            kernel,
            stride,
            padding,
            dilation: [dil, 1],
            groups: 1,
        };
        let ho = (h + padding[0] + padding[2] - dil * (kernel[0] - 1) - 1) / stride[0] + 1;
        let wo = (w + padding[1] + padding[3] - (kernel[1] - 1) - 1) / stride[1] + 1;
        (c, ConvGeom::new(&shape, &[cout, ho, wo]), cin * h * w, cout * ho * wo)
    }

    /// The register-tiled kernel equals the im2col + sgemm path within `f32` rounding, with
    /// and without bias, sample by sample in a batch of three.
    #[test]
    fn direct_forward_equals_im2col() {
        if !simd_or_skip() {
            return;
        }
        let mut rng = Rng::new(7);
        for geometry in GEOMETRIES {
            let shape = geometry.0;
            let (c, g, in_size, out_size) = random_conv(&mut rng, geometry);
            let batch = 3;
            let x = uniform(&mut rng, batch * in_size);
            for with_bias in [true, false] {
                let mut got = alloc::vec![f32::NAN; batch * out_size];
                assert!(forward_rows(&c, &g, &x, &mut got, batch, with_bias), "{shape:?}: kernel refused");
                let mut scratch = Vec::new();
                for s in 0..batch {
                    let mut want = alloc::vec![0.0f32; out_size];
                    forward_row(&c, &g, &x[s * in_size..(s + 1) * in_size], &mut want, with_bias, &mut scratch);
                    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                    for (i, (a, b)) in got[s * out_size..(s + 1) * out_size].iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "{shape:?} bias {with_bias} sample {s} output {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// The weight gradient summed over 40 samples (two chunks) equals the im2col path's, added
    /// to a nonzero gradient.
    #[test]
    fn direct_weight_grad_equals_im2col() {
        if !simd_or_skip() {
            return;
        }
        let mut rng = Rng::new(8);
        for geometry in GEOMETRIES {
            let (c, g, in_size, out_size) = random_conv(&mut rng, geometry);
            let batch = 40;
            let x = uniform(&mut rng, batch * in_size);
            let dy = uniform(&mut rng, batch * out_size);
            let start = uniform(&mut rng, c.weight.len());
            let mut got = start.clone();
            assert!(weight_grad_rows(&c, &g, &x, &dy, batch, &mut got), "{:?}: kernel refused", geometry.0);
            let mut want = start;
            let mut scratch = Vec::new();
            for s in 0..batch {
                let (xs, ds) = (&x[s * in_size..(s + 1) * in_size], &dy[s * out_size..(s + 1) * out_size]);
                weight_grad_row(&c, &g, xs, ds, &mut want, &mut scratch);
            }
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 2e-5 * scale, "{:?} weight {i}: {a} vs {b}", geometry.0);
            }
        }
    }
}
