//! Dense convolution forward for `f32` with AVX2 + FMA, in the padded channels-last layout of
//! the sparse kernels: no im2col matrix and no packing.
//!
//! Each output tile is up to [`TILE_POSITIONS`] consecutive positions of one output row ×
//! [`TILE_CHANNELS`] output channels, held in twelve registers while the tile's patches
//! stream through: per patch value, two weight vectors are loaded and each position's value
//! is broadcast, so every load feeds one or two multiply-adds (an im2col + sgemm path reads
//! and repacks the whole column matrix first). The weights are reordered once per call to
//! `[Cout / 16, kh, kw·Cin, 16]` (output channels rounded up to 16 with zeros).
//!
//! Handles what [`SparseGeom::new`] handles (ungrouped, unit horizontal dilation), any number
//! of input channels; `f64` and processors without AVX2 + FMA use the im2col path.

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
        if !super::simd_available() {
            return false;
        }
        let Some(geom) = SparseGeom::new(c, g) else { return false };
        // One row per sample, channels last (the rows-last layout is for several rows).
        let geom = SparseGeom { rows_last: false, ..geom };
        let (Some(x), Some(y), Some(w)) = (as_f32(x), as_f32_mut(y), as_f32(&c.weight)) else { return false };
        let bias = match (&c.bias, with_bias) {
            (Some(b), true) => Some(as_f32(b).expect("same type as the weights")),
            _ => None,
        };
        let (in_size, out_size) = (geom.cin * geom.h * geom.w, geom.cout * geom.npos);
        if x.len() != rows * in_size || y.len() != rows * out_size {
            return false;
        }
        let wt = tiled_weights(&geom, w);
        let plen = geom.padded_len();
        for_rows(y, out_size, Vec::new, |xp: &mut Vec<f32>, r, yr| {
            xp.resize(plen, 0.0);
            to_padded(&geom, &x[r * in_size..(r + 1) * in_size], xp);
            // SAFETY: `simd_available` checked AVX2 and FMA above.
            unsafe { avx2::forward_sample(&geom, &wt, xp, bias, yr) }
        });
        true
    }
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    {
        let _ = (c, g, x, y, rows, with_bias);
        false
    }
}

/// The weights `[Cout, Cin, kh, kw]` reordered to `[Cout / 16, kh, kw·Cin, 16]`, the output
/// channels rounded up to a multiple of 16 with zeros.
#[cfg_attr(not(all(feature = "std", target_arch = "x86_64")), allow(dead_code))]
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

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use core::arch::x86_64::*;

    use super::{SparseGeom, TILE_CHANNELS, TILE_POSITIONS};

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

    use super::forward_rows;
    use crate::kernels::conv::{forward_row, ConvGeom};
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

    /// The register-tiled kernel equals the im2col + sgemm path within `f32` rounding, with
    /// and without bias, sample by sample in a batch of three.
    #[test]
    fn direct_forward_equals_im2col() {
        if !super::super::simd_available() {
            std::println!("skipped: no AVX2 + FMA on this processor");
            return;
        }
        let mut rng = Rng::new(7);
        for (shape, cout, kernel, stride, padding, dil) in GEOMETRIES {
            let [cin, h, w] = shape;
            let mut u = |n: usize| (0..n).map(|_| rng.uniform() as f32 - 0.5).collect::<Vec<f32>>();
            let c = Conv2d {
                weight: u(cout * cin * kernel[0] * kernel[1]),
                bias: Some(u(cout)),
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
            let g = ConvGeom::new(&shape, &[cout, ho, wo]);
            let (in_size, out_size, batch) = (cin * h * w, cout * ho * wo, 3);
            let x = u(batch * in_size);
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
}
