//! The sparse kernels for *narrow* convolutions, whose patch runs (`kw·Cin` values) are too
//! short to vectorise along (a first layer on one or three channels), with several tangent
//! rows per sample.
//!
//! The rows of a sample are stored last instead: the padded image is `[Hp, Wp, Cin, L]` with
//! `L` the row count rounded up to whole blocks of [`LANES`] (the extra rows are zero), so each
//! tap of a patch is a contiguous vector over the rows and every kernel works on [`LANES`]
//! rows at a time. The sites, weights (`[Cout, kh, kw, Cin]`) and results are those of the
//! parent module's kernels; only the layout of the padded inputs differs. One row per sample
//! gains nothing from this layout, so these kernels are used only when a sample has at least
//! two rows ([`SparseGeom::handles`]).

use alloc::vec::Vec;
use core::ops::Range;

use super::{Sites, SparseGeom};
use crate::scalar::Float;

/// Rows handled together: eight `f32` fill an AVX2 register.
pub(super) const LANES: usize = 8;

/// `rows` rounded up to whole blocks of [`LANES`].
pub(super) fn lane_rows(rows: usize) -> usize {
    rows.div_ceil(LANES) * LANES
}

/// Writes the rows of one sample, `x` (`[R, Cin, H, W]`), into `xp` (`[Hp, Wp, Cin, L]`,
/// zero padding and zero extra rows).
pub(super) fn pad_sample<T: Float>(g: &SparseGeom, x: &[T], xp: &mut [T]) {
    let in_size = g.cin * g.h * g.w;
    let rows = x.len() / in_size;
    let l = lane_rows(rows);
    debug_assert_eq!(xp.len(), g.sample_len(rows));
    xp.fill(T::ZERO);
    for (r, xr) in x.chunks_exact(in_size).enumerate() {
        for ci in 0..g.cin {
            for iy in 0..g.h {
                let src = &xr[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
                let row = (iy + g.pad_top) * g.wp + g.pad_left;
                for (ix, &v) in src.iter().enumerate() {
                    xp[((row + ix) * g.cin + ci) * l + r] = v;
                }
            }
        }
    }
}

/// The adjoint of [`pad_sample`]: the interior of `xp` written to the rows of `dx`.
fn unpad_sample<T: Float>(g: &SparseGeom, xp: &[T], dx: &mut [T]) {
    let in_size = g.cin * g.h * g.w;
    let l = lane_rows(dx.len() / in_size);
    for (r, dxr) in dx.chunks_exact_mut(in_size).enumerate() {
        for ci in 0..g.cin {
            for iy in 0..g.h {
                let dst = &mut dxr[(ci * g.h + iy) * g.w..(ci * g.h + iy + 1) * g.w];
                let row = (iy + g.pad_top) * g.wp + g.pad_left;
                for (ix, v) in dst.iter_mut().enumerate() {
                    *v = xp[((row + ix) * g.cin + ci) * l + r];
                }
            }
        }
    }
}

/// Offsets of a patch in the rows-last layout of `l` rows.
#[derive(Clone, Copy, Debug)]
struct Taps {
    /// Lane-row count `L`.
    l: usize,
    /// Taps per run (`kw·Cin`).
    run: usize,
    /// Runs per patch (`kh`).
    kh: usize,
    /// Distance between consecutive runs.
    run_stride: usize,
}

impl Taps {
    fn new(g: &SparseGeom, rows: usize) -> Self {
        let l = lane_rows(rows);
        Taps { l, run: g.run(), kh: g.kh, run_stride: g.run_stride() * l }
    }

    /// Where position `p`'s patch starts.
    fn start(&self, g: &SparseGeom, p: usize) -> usize {
        g.patch_start(p) * self.l
    }
}

/// `acc[t] += w·x[t]` over one block of lanes.
#[inline(always)]
fn axpy<T: Float>(acc: &mut [T; LANES], w: T, x: &[T]) {
    let x: &[T; LANES] = x[..LANES].try_into().expect("a whole block of lanes");
    for t in 0..LANES {
        acc[t] += w * x[t];
    }
}

/// The tangent map at the sites for one sample: `x` is `[R, in]`, `y` `[R, out]` (zeroed on
/// entry; only the sites are written).
pub(super) fn forward_sample<T: Float>(
    g: &SparseGeom,
    w_hwc: &[T],
    sites: &Sites,
    x: &[T],
    y: &mut [T],
    scratch: &mut Vec<T>,
) {
    let rows = x.len() / (g.cin * g.h * g.w);
    scratch.resize(g.sample_len(rows), T::ZERO);
    pad_sample(g, x, scratch);
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::simd_available() {
        if let (Some(w), Some(xp), Some(y)) = (avx2::as_f32(w_hwc), avx2::as_f32(scratch), avx2::as_f32_mut(y)) {
            // SAFETY: the processor has AVX2 and FMA.
            return unsafe { avx2::forward(g, w, sites, xp, rows, y) };
        }
    }
    forward_body(g, w_hwc, sites, scratch, rows, y)
}

fn forward_body<T: Float>(g: &SparseGeom, w_hwc: &[T], sites: &Sites, xp: &[T], rows: usize, y: &mut [T]) {
    let taps = Taps::new(g, rows);
    let (klen, out_size) = (g.kh * taps.run, g.cout * g.npos);
    for p in 0..g.npos {
        let start = taps.start(g, p);
        for &ch in sites.at(p) {
            let ch = ch as usize;
            let w = &w_hwc[ch * klen..(ch + 1) * klen];
            for q in (0..taps.l).step_by(LANES) {
                let mut acc = [T::ZERO; LANES];
                for ki in 0..taps.kh {
                    let base = start + ki * taps.run_stride + q;
                    for (j, &wv) in w[ki * taps.run..(ki + 1) * taps.run].iter().enumerate() {
                        axpy(&mut acc, wv, &xp[base + j * taps.l..]);
                    }
                }
                for (t, &v) in acc.iter().enumerate().take(rows - q) {
                    y[(q + t) * out_size + ch * g.npos + p] = v;
                }
            }
        }
    }
}

/// The cotangents of one position's sites, `[sites, L]` (zero beyond the `R` rows).
fn gather<T: Float>(g: &SparseGeom, dy: &[T], chans: &[u32], p: usize, rows: usize, l: usize, out: &mut Vec<T>) {
    let out_size = g.cout * g.npos;
    out.clear();
    out.resize(chans.len() * l, T::ZERO);
    for (i, &ch) in chans.iter().enumerate() {
        for r in 0..rows {
            out[i * l + r] = dy[r * out_size + ch as usize * g.npos + p];
        }
    }
}

/// The adjoint of [`forward_sample`]: `dy` is `[R, out]` (zero outside the sites), `dx`
/// `[R, in]` (overwritten).
pub(super) fn backward_sample<T: Float>(
    g: &SparseGeom,
    w_hwc: &[T],
    sites: &Sites,
    dy: &[T],
    dx: &mut [T],
    scratch: &mut Vec<T>,
) {
    let rows = dx.len() / (g.cin * g.h * g.w);
    scratch.clear();
    scratch.resize(g.sample_len(rows), T::ZERO);
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::simd_available() {
        if let (Some(w), Some(dy), Some(dxp)) = (avx2::as_f32(w_hwc), avx2::as_f32(dy), avx2::as_f32_mut(scratch)) {
            // SAFETY: the processor has AVX2 and FMA.
            unsafe { avx2::backward(g, w, sites, dy, rows, dxp) };
            return unpad_sample(g, scratch, dx);
        }
    }
    backward_body(g, w_hwc, sites, dy, rows, scratch);
    unpad_sample(g, scratch, dx)
}

fn backward_body<T: Float>(g: &SparseGeom, w_hwc: &[T], sites: &Sites, dy: &[T], rows: usize, dxp: &mut [T]) {
    let taps = Taps::new(g, rows);
    let klen = g.kh * taps.run;
    let mut coef = Vec::new();
    for p in 0..g.npos {
        let chans = sites.at(p);
        if chans.is_empty() {
            continue;
        }
        gather(g, dy, chans, p, rows, taps.l, &mut coef);
        let start = taps.start(g, p);
        for q in (0..taps.l).step_by(LANES) {
            for ki in 0..taps.kh {
                for j in 0..taps.run {
                    // One block of the patch's input cotangent stays in registers while every
                    // channel of the position adds its share.
                    let o = start + ki * taps.run_stride + j * taps.l + q;
                    let block: &mut [T; LANES] = (&mut dxp[o..o + LANES]).try_into().expect("a whole block");
                    let mut acc = *block;
                    for (i, &ch) in chans.iter().enumerate() {
                        axpy(&mut acc, w_hwc[ch as usize * klen + ki * taps.run + j], &coef[i * taps.l + q..]);
                    }
                    *block = acc;
                }
            }
        }
    }
}

/// Adds this sample's weight gradient for the output channels `channels` to `dw_part` (those
/// channels' rows of `[Cout, kh, kw, Cin]`): `xp` is the sample's tangent input in the layout
/// of [`pad_sample`], `dy` its cotangent `[R, out]` (zero outside the sites).
pub(super) fn weight_grad_sample<T: Float>(
    g: &SparseGeom,
    sites: &Sites,
    xp: &[T],
    dy: &[T],
    channels: Range<usize>,
    dw_part: &mut [T],
) {
    let rows = dy.len() / (g.cout * g.npos);
    // Per-lane partial sums `[channels, klen, LANES]`, reduced once at the end.
    let mut part = alloc::vec![T::ZERO; channels.len() * g.weights_per_channel() * LANES];
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::simd_available() {
        if let (Some(xp), Some(dy), Some(part)) = (avx2::as_f32(xp), avx2::as_f32(dy), avx2::as_f32_mut(&mut part)) {
            // SAFETY: the processor has AVX2 and FMA.
            unsafe { avx2::weight_grad(g, sites, xp, dy, rows, channels, part) };
            return reduce_lanes(avx2::as_f32(part).expect("f32"), avx2::as_f32_mut(dw_part).expect("f32"));
        }
    }
    weight_grad_body(g, sites, xp, dy, rows, channels, &mut part);
    reduce_lanes(&part, dw_part)
}

/// `dw[i] += Σ_t part[i·LANES + t]`.
fn reduce_lanes<T: Float>(part: &[T], dw: &mut [T]) {
    for (d, lanes) in dw.iter_mut().zip(part.chunks_exact(LANES)) {
        *d += lanes.iter().copied().sum::<T>();
    }
}

fn weight_grad_body<T: Float>(
    g: &SparseGeom,
    sites: &Sites,
    xp: &[T],
    dy: &[T],
    rows: usize,
    channels: Range<usize>,
    part: &mut [T],
) {
    let taps = Taps::new(g, rows);
    let klen = g.kh * taps.run;
    let mut coef = Vec::new();
    for p in 0..g.npos {
        let sel = sites.at_in(p, &channels);
        if sel.is_empty() {
            continue;
        }
        gather(g, dy, sel, p, rows, taps.l, &mut coef);
        let start = taps.start(g, p);
        for q in (0..taps.l).step_by(LANES) {
            for ki in 0..taps.kh {
                for j in 0..taps.run {
                    let o = start + ki * taps.run_stride + j * taps.l + q;
                    let x: &[T; LANES] = xp[o..o + LANES].try_into().expect("a whole block");
                    let tap = ki * taps.run + j;
                    for (i, &ch) in sel.iter().enumerate() {
                        let at = ((ch as usize - channels.start) * klen + tap) * LANES;
                        let acc: &mut [T; LANES] = (&mut part[at..at + LANES]).try_into().expect("a whole block");
                        let c = &coef[i * taps.l + q..i * taps.l + q + LANES];
                        for t in 0..LANES {
                            acc[t] += c[t] * x[t];
                        }
                    }
                }
            }
        }
    }
}

/// The `f32` kernels with AVX2 and FMA: two blocks of lanes per pass (the 16 rows of a sample
/// with 9 to 16 tangent rows), weights broadcast once for both.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use alloc::vec::Vec;
    use core::arch::x86_64::*;
    use core::ops::Range;

    pub use crate::kernels::tiles::avx2::{as_f32, as_f32_mut};

    use super::{gather, Sites, SparseGeom, Taps, LANES};

    /// Whether every patch lies inside `len` values of the rows-last layout (patches start
    /// later for later positions, so the last one decides).
    fn patches_fit(g: &SparseGeom, taps: &Taps, len: usize) -> bool {
        g.npos == 0 || taps.start(g, g.npos - 1) + (taps.kh - 1) * taps.run_stride + taps.run * taps.l <= len
    }

    /// Whether every channel of the sites is below `cout` (each position's list is sorted).
    fn channels_fit(g: &SparseGeom, sites: &Sites) -> bool {
        (0..g.npos).all(|p| sites.at(p).last().is_none_or(|&c| (c as usize) < g.cout))
    }

    /// [`super::forward_body`] for `f32`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(g: &SparseGeom, w: &[f32], sites: &Sites, xp: &[f32], rows: usize, y: &mut [f32]) {
        let taps = Taps::new(g, rows);
        let (klen, out_size) = (g.kh * taps.run, g.cout * g.npos);
        assert!(patches_fit(g, &taps, xp.len()) && channels_fit(g, sites) && w.len() >= g.cout * klen);
        let mut lanes = [0.0f32; 2 * LANES];
        for p in 0..g.npos {
            let start = taps.start(g, p);
            for &ch in sites.at(p) {
                let ch = ch as usize;
                let wc = w.as_ptr().add(ch * klen);
                for q in (0..taps.l).step_by(2 * LANES) {
                    let two = q + LANES < taps.l;
                    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    for ki in 0..taps.kh {
                        let xb = xp.as_ptr().add(start + ki * taps.run_stride + q);
                        let wr = wc.add(ki * taps.run);
                        for j in 0..taps.run {
                            let wv = _mm256_broadcast_ss(&*wr.add(j));
                            let xj = xb.add(j * taps.l);
                            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xj), a0);
                            if two {
                                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xj.add(LANES)), a1);
                            }
                        }
                    }
                    _mm256_storeu_ps(lanes.as_mut_ptr(), a0);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(LANES), a1);
                    for (t, &v) in lanes.iter().enumerate().take(rows - q) {
                        y[(q + t) * out_size + ch * g.npos + p] = v;
                    }
                }
            }
        }
    }

    /// [`super::backward_body`] for `f32`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn backward(g: &SparseGeom, w: &[f32], sites: &Sites, dy: &[f32], rows: usize, dxp: &mut [f32]) {
        let taps = Taps::new(g, rows);
        let klen = g.kh * taps.run;
        assert!(patches_fit(g, &taps, dxp.len()) && channels_fit(g, sites) && w.len() >= g.cout * klen);
        let mut coef: Vec<f32> = Vec::new();
        for p in 0..g.npos {
            let chans = sites.at(p);
            if chans.is_empty() {
                continue;
            }
            gather(g, dy, chans, p, rows, taps.l, &mut coef);
            let start = taps.start(g, p);
            for q in (0..taps.l).step_by(2 * LANES) {
                let two = q + LANES < taps.l;
                for ki in 0..taps.kh {
                    for j in 0..taps.run {
                        // One tap's block of the input cotangent stays in registers while
                        // every channel of the position adds its share.
                        let d = dxp.as_mut_ptr().add(start + ki * taps.run_stride + j * taps.l + q);
                        let tap = ki * taps.run + j;
                        let mut a0 = _mm256_loadu_ps(d);
                        let mut a1 = if two { _mm256_loadu_ps(d.add(LANES)) } else { _mm256_setzero_ps() };
                        for (i, &ch) in chans.iter().enumerate() {
                            let wv = _mm256_broadcast_ss(&*w.as_ptr().add(ch as usize * klen + tap));
                            let c = coef.as_ptr().add(i * taps.l + q);
                            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(c), a0);
                            if two {
                                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(c.add(LANES)), a1);
                            }
                        }
                        _mm256_storeu_ps(d, a0);
                        if two {
                            _mm256_storeu_ps(d.add(LANES), a1);
                        }
                    }
                }
            }
        }
    }

    /// [`super::weight_grad_body`] for `f32`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad(
        g: &SparseGeom,
        sites: &Sites,
        xp: &[f32],
        dy: &[f32],
        rows: usize,
        channels: Range<usize>,
        part: &mut [f32],
    ) {
        let taps = Taps::new(g, rows);
        let klen = g.kh * taps.run;
        assert!(patches_fit(g, &taps, xp.len()) && part.len() >= channels.len() * klen * LANES);
        let mut coef: Vec<f32> = Vec::new();
        for p in 0..g.npos {
            let sel = sites.at_in(p, &channels);
            if sel.is_empty() {
                continue;
            }
            gather(g, dy, sel, p, rows, taps.l, &mut coef);
            let start = taps.start(g, p);
            for (i, &ch) in sel.iter().enumerate() {
                let pc = part.as_mut_ptr().add((ch as usize - channels.start) * klen * LANES);
                for q in (0..taps.l).step_by(2 * LANES) {
                    let two = q + LANES < taps.l;
                    let c0 = _mm256_loadu_ps(coef.as_ptr().add(i * taps.l + q));
                    let c1 = if two { _mm256_loadu_ps(coef.as_ptr().add(i * taps.l + q + LANES)) } else { c0 };
                    for ki in 0..taps.kh {
                        let xb = xp.as_ptr().add(start + ki * taps.run_stride + q);
                        let pk = pc.add(ki * taps.run * LANES);
                        for j in 0..taps.run {
                            let pj = pk.add(j * LANES);
                            let xj = xb.add(j * taps.l);
                            let mut v = _mm256_fmadd_ps(c0, _mm256_loadu_ps(xj), _mm256_loadu_ps(pj));
                            if two {
                                v = _mm256_fmadd_ps(c1, _mm256_loadu_ps(xj.add(LANES)), v);
                            }
                            _mm256_storeu_ps(pj, v);
                        }
                    }
                }
            }
        }
    }
}
