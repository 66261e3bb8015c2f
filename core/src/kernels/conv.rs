//! 2-D convolution through im2col / col2im and matrix products.

use alloc::vec::Vec;

use crate::gemm::{gemm, Mat};
use crate::layer::Conv2d;
use crate::scalar::Float;

/// Geometry of one convolution applied to a `[C, H, W]` input.
pub(crate) struct ConvGeom {
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    pub fn new(in_shape: &[usize], out_shape: &[usize]) -> Self {
        ConvGeom { h: in_shape[1], w: in_shape[2], ho: out_shape[1], wo: out_shape[2] }
    }
}

/// Rows of the im2col matrix per group: `(in_channels / groups)·kh·kw`.
fn col_rows<T>(c: &Conv2d<T>) -> usize {
    (c.in_channels / c.groups) * c.kernel[0] * c.kernel[1]
}

/// Scratch length needed by [`forward_row`] and [`backward_row`].
pub(crate) fn scratch_len<T>(c: &Conv2d<T>, g: &ConvGeom) -> usize {
    col_rows(c) * c.groups * g.ho * g.wo
}

/// The output columns `ox` whose input column `ox·stride + offset` lies inside `0..w`
/// (`offset = kj·dilation − pad_left`).
#[inline]
fn valid_cols(wo: usize, w: usize, stride: usize, offset: isize) -> (usize, usize) {
    let s = stride as isize;
    // ox·s + offset ≥ 0  ⇔  ox ≥ ceil(−offset / s)
    let lo = if offset >= 0 { 0 } else { ((-offset) + s - 1) / s };
    // ox·s + offset < w  ⇔  ox < ceil((w − offset) / s)
    let hi = if (w as isize) <= offset { 0 } else { (w as isize - offset + s - 1) / s };
    let lo = (lo as usize).min(wo);
    (lo, (hi as usize).clamp(lo, wo))
}

/// Fills `cols` (`[Cin·kh·kw, Ho·Wo]`) from `x` (`[Cin, H, W]`), zero where the window is in
/// the padding.
fn im2col<T: Float>(c: &Conv2d<T>, g: &ConvGeom, x: &[T], cols: &mut [T]) {
    let (kh, kw) = (c.kernel[0], c.kernel[1]);
    let (sy, sx) = (c.stride[0], c.stride[1]);
    let npos = g.ho * g.wo;
    for ci in 0..c.in_channels {
        let xc = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = (ci * kh + ki) * kw + kj;
                let dst = &mut cols[row * npos..(row + 1) * npos];
                let offset = (kj * c.dilation[1]) as isize - c.padding[1] as isize;
                let (lo, hi) = valid_cols(g.wo, g.w, sx, offset);
                for oy in 0..g.ho {
                    let iy = (oy * sy + ki * c.dilation[0]) as isize - c.padding[0] as isize;
                    let d = &mut dst[oy * g.wo..(oy + 1) * g.wo];
                    if iy < 0 || iy >= g.h as isize || lo == hi {
                        d.fill(T::ZERO);
                        continue;
                    }
                    let src = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    d[..lo].fill(T::ZERO);
                    d[hi..].fill(T::ZERO);
                    let first = (lo as isize * sx as isize + offset) as usize;
                    if sx == 1 {
                        d[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (j, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = src[first + j * sx];
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns back onto the image: the adjoint of [`im2col`].
fn col2im<T: Float>(c: &Conv2d<T>, g: &ConvGeom, cols: &[T], dx: &mut [T]) {
    let (kh, kw) = (c.kernel[0], c.kernel[1]);
    let (sy, sx) = (c.stride[0], c.stride[1]);
    let npos = g.ho * g.wo;
    dx.fill(T::ZERO);
    for ci in 0..c.in_channels {
        let xc = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = (ci * kh + ki) * kw + kj;
                let src = &cols[row * npos..(row + 1) * npos];
                let offset = (kj * c.dilation[1]) as isize - c.padding[1] as isize;
                let (lo, hi) = valid_cols(g.wo, g.w, sx, offset);
                if lo == hi {
                    continue;
                }
                let first = (lo as isize * sx as isize + offset) as usize;
                for oy in 0..g.ho {
                    let iy = (oy * sy + ki * c.dilation[0]) as isize - c.padding[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let d = &mut xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let s = &src[oy * g.wo + lo..oy * g.wo + hi];
                    if sx == 1 {
                        d[first..first + (hi - lo)].iter_mut().zip(s).for_each(|(a, &b)| *a += b);
                    } else {
                        for (j, &v) in s.iter().enumerate() {
                            d[first + j * sx] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Fills `scratch` with the im2col matrix of `x` and returns `(Ho·Wo, rows per group, output
/// channels per group)`.
fn cols_of<T: Float>(c: &Conv2d<T>, g: &ConvGeom, x: &[T], scratch: &mut Vec<T>) -> (usize, usize, usize) {
    scratch.resize(scratch_len(c, g), T::ZERO);
    im2col(c, g, x, scratch);
    (g.ho * g.wo, col_rows(c), c.out_channels / c.groups)
}

/// `y = conv(x) (+ bias)` for one sample; `scratch` has [`scratch_len`] values.
pub(crate) fn forward_row<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    y: &mut [T],
    with_bias: bool,
    scratch: &mut Vec<T>,
) {
    let (npos, kr, og) = cols_of(c, g, x, scratch);
    for grp in 0..c.groups {
        let w = Mat::new(&c.weight[grp * og * kr..(grp + 1) * og * kr], og, kr);
        let cols = Mat::new(&scratch[grp * kr * npos..(grp + 1) * kr * npos], kr, npos);
        gemm(T::ONE, w, cols, T::ZERO, &mut y[grp * og * npos..(grp + 1) * og * npos]);
    }
    if with_bias {
        if let Some(b) = &c.bias {
            for (o, &bo) in b.iter().enumerate() {
                y[o * npos..(o + 1) * npos].iter_mut().for_each(|v| *v += bo);
            }
        }
    }
}

/// `dx = convᵀ(dy)` for one cotangent row.
pub(crate) fn backward_row<T: Float>(c: &Conv2d<T>, g: &ConvGeom, dy: &[T], dx: &mut [T], scratch: &mut Vec<T>) {
    let npos = g.ho * g.wo;
    scratch.resize(scratch_len(c, g), T::ZERO);
    let kr = col_rows(c);
    let og = c.out_channels / c.groups;
    for grp in 0..c.groups {
        let w = Mat::new(&c.weight[grp * og * kr..(grp + 1) * og * kr], og, kr);
        let d = Mat::new(&dy[grp * og * npos..(grp + 1) * og * npos], og, npos);
        gemm(T::ONE, w.t(), d, T::ZERO, &mut scratch[grp * kr * npos..(grp + 1) * kr * npos]);
    }
    col2im(c, g, scratch, dx);
}

/// [`forward_row`] for a lone sample: one im2col, then the output channels split over threads
/// (the per-sample parallelism of a batch is not available). Requires `groups == 1`.
pub(crate) fn forward_single_split<T: Float>(c: &Conv2d<T>, g: &ConvGeom, x: &[T], y: &mut [T], with_bias: bool) {
    debug_assert_eq!(c.groups, 1);
    let npos = g.ho * g.wo;
    let mut cols = alloc::vec![T::ZERO; scratch_len(c, g)];
    im2col(c, g, x, &mut cols);
    let kr = col_rows(c);
    // One block of output channels per thread: each block re-reads (packs) the whole im2col
    // matrix, so more blocks than threads only repeat that work.
    let ch = c.out_channels.div_ceil(crate::parallel::threads()).max(1);
    crate::parallel::for_rows(
        y,
        ch * npos,
        || (),
        |_, blk, yb| {
            let o0 = blk * ch;
            let oc = yb.len() / npos;
            let w = Mat::new(&c.weight[o0 * kr..(o0 + oc) * kr], oc, kr);
            gemm(T::ONE, w, Mat::new(&cols, kr, npos), T::ZERO, yb);
            if with_bias {
                if let Some(b) = &c.bias {
                    for (i, row) in yb.chunks_mut(npos).enumerate() {
                        row.iter_mut().for_each(|v| *v += b[o0 + i]);
                    }
                }
            }
        },
    );
}

/// `dW += dy·colsᵀ` for one sample (per group), where `cols` is the im2col of the sample's
/// input `x`; `dw` has the weight's layout `[out, in/groups, kh, kw]`.
pub(crate) fn weight_grad_row<T: Float>(
    c: &Conv2d<T>,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    scratch: &mut Vec<T>,
) {
    let (npos, kr, og) = cols_of(c, g, x, scratch);
    for grp in 0..c.groups {
        let d = Mat::new(&dy[grp * og * npos..(grp + 1) * og * npos], og, npos);
        let cols = Mat::new(&scratch[grp * kr * npos..(grp + 1) * kr * npos], kr, npos);
        gemm(T::ONE, d, cols.t(), T::ONE, &mut dw[grp * og * kr..(grp + 1) * og * kr]);
    }
}
