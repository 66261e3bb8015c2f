//! Allocation-free per-node kernels of the compact engine: forward maps and adjoints (the
//! adjoints *add* into the input cotangent, since a node may feed several others). Weights are
//! read through [`Weight`], so the same code runs over `f32` and `f16` storage, computing in `f32`.
//!
//! Index arithmetic relies on the bounds [`CompactModel::load`](super::CompactModel::load)
//! checked (every node ≤ 2²⁶ values, window parameters ≤ 2¹⁶), so it cannot overflow.

use super::format::f16_to_f32;

/// Stored weight element: `f32`, or `u16` holding IEEE binary16 bits.
pub(super) trait Weight: Copy {
    fn value(self) -> f32;
    /// `Σ w_i·x_i`.
    fn dot(w: &[Self], x: &[f32]) -> f32;
    /// `y += a·w`.
    fn axpy(a: f32, w: &[Self], y: &mut [f32]);
}

impl Weight for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
    #[inline]
    fn dot(w: &[f32], x: &[f32]) -> f32 {
        crate::gemm::dot(x, w)
    }
    #[inline]
    fn axpy(a: f32, w: &[f32], y: &mut [f32]) {
        y.iter_mut().zip(w).for_each(|(y, &w)| *y += a * w);
    }
}

/// Weights converted per block of this many values on the stack.
const BLOCK: usize = 64;

impl Weight for u16 {
    #[inline(always)]
    fn value(self) -> f32 {
        f16_to_f32(self)
    }
    #[inline]
    fn dot(w: &[u16], x: &[f32]) -> f32 {
        let mut buf = [0f32; BLOCK];
        let mut s = 0f32;
        for (wc, xc) in w.chunks(BLOCK).zip(x.chunks(BLOCK)) {
            let b = &mut buf[..wc.len()];
            b.iter_mut().zip(wc).for_each(|(d, &h)| *d = f16_to_f32(h));
            s += crate::gemm::dot(xc, b);
        }
        s
    }
    #[inline]
    fn axpy(a: f32, w: &[u16], y: &mut [f32]) {
        y.iter_mut().zip(w).for_each(|(y, &h)| *y += a * f16_to_f32(h));
    }
}

/// A convolution's geometry, read from validated parameters and shapes.
pub(super) struct Conv {
    pub in_c: usize,
    pub out_c: usize,
    pub groups: usize,
    pub k: [usize; 2],
    pub s: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// The output columns `ox` whose input column `ox·stride + offset` lies in `0..w`.
#[inline]
fn valid_cols(wo: usize, w: usize, stride: usize, offset: isize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 { 0 } else { (-offset + s - 1) / s };
    let hi = if (w as isize) <= offset { 0 } else { (w as isize - offset + s - 1) / s };
    let lo = (lo as usize).min(wo);
    (lo, (hi as usize).clamp(lo, wo))
}

impl Conv {
    /// Calls `f(o, w, y, x, n)` for every output channel `o`, kernel tap (weight index `w`) and
    /// output row whose input row is inside the image: output values `y..y + n` (contiguous)
    /// meet input values `x, x + stride, …`.
    #[inline(always)]
    fn taps(&self, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let icg = self.in_c / self.groups;
        let ocg = self.out_c / self.groups;
        for o in 0..self.out_c {
            let grp = o / ocg;
            for ci in 0..icg {
                let c = grp * icg + ci;
                for ki in 0..self.k[0] {
                    for kj in 0..self.k[1] {
                        let widx = ((o * icg + ci) * self.k[0] + ki) * self.k[1] + kj;
                        let offset = (kj * self.dil[1]) as isize - self.pad[1] as isize;
                        let (lo, hi) = valid_cols(self.wo, self.w, self.s[1], offset);
                        if lo == hi {
                            continue;
                        }
                        let first = (lo as isize * self.s[1] as isize + offset) as usize;
                        for oy in 0..self.ho {
                            let iy = (oy * self.s[0] + ki * self.dil[0]) as isize - self.pad[0] as isize;
                            if iy < 0 || iy >= self.h as isize {
                                continue;
                            }
                            let yrow = (o * self.ho + oy) * self.wo;
                            let xrow = (c * self.h + iy as usize) * self.w;
                            f(o, widx, yrow + lo, xrow + first, hi - lo);
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x) + bias`.
    pub fn forward<W: Weight>(&self, w: &[W], bias: &[f32], x: &[f32], y: &mut [f32]) {
        let plane = self.ho * self.wo;
        for (o, yo) in y.chunks_mut(plane).enumerate() {
            yo.fill(bias.get(o).copied().unwrap_or(0.0));
        }
        let sx = self.s[1];
        self.taps(|_, widx, ys, xs, n| {
            let wv = w[widx].value();
            let yr = &mut y[ys..ys + n];
            if sx == 1 {
                yr.iter_mut().zip(&x[xs..xs + n]).for_each(|(y, &x)| *y += wv * x);
            } else {
                yr.iter_mut().enumerate().for_each(|(j, y)| *y += wv * x[xs + j * sx]);
            }
        });
    }

    /// `dx += convᵀ(dy)`.
    pub fn adjoint<W: Weight>(&self, w: &[W], dy: &[f32], dx: &mut [f32]) {
        let plane = self.ho * self.wo;
        let sx = self.s[1];
        let mut skip = (usize::MAX, false);
        self.taps(|o, widx, ys, xs, n| {
            if skip.0 != o {
                skip = (o, dy[o * plane..(o + 1) * plane].iter().all(|&v| v == 0.0));
            }
            if skip.1 {
                return;
            }
            let wv = w[widx].value();
            let g = &dy[ys..ys + n];
            if sx == 1 {
                dx[xs..xs + n].iter_mut().zip(g).for_each(|(d, &g)| *d += wv * g);
            } else {
                g.iter().enumerate().for_each(|(j, &g)| dx[xs + j * sx] += wv * g);
            }
        });
    }
}

/// `y = W·x + b` on the last axis (`x` holds `rows·inputs` values).
pub(super) fn dense_forward<W: Weight>(w: &[W], bias: &[f32], inputs: usize, x: &[f32], y: &mut [f32]) {
    let outputs = bias.len().max(w.len() / inputs);
    for (xr, yr) in x.chunks(inputs).zip(y.chunks_mut(outputs)) {
        for (o, v) in yr.iter_mut().enumerate() {
            *v = W::dot(&w[o * inputs..(o + 1) * inputs], xr) + bias.get(o).copied().unwrap_or(0.0);
        }
    }
}

/// `dx += Wᵀ·dy` on the last axis.
pub(super) fn dense_adjoint<W: Weight>(w: &[W], inputs: usize, outputs: usize, dy: &[f32], dx: &mut [f32]) {
    for (gr, dr) in dy.chunks(outputs).zip(dx.chunks_mut(inputs)) {
        for (o, &g) in gr.iter().enumerate() {
            if g != 0.0 {
                W::axpy(g, &w[o * inputs..(o + 1) * inputs], dr);
            }
        }
    }
}

/// Index map of constant padding on shapes of rank ≤ 4: calls `f(input index, output index,
/// run length)` for each contiguous run along the last axis.
pub(super) fn pad_runs(inp: &[usize], out: &[usize], begin: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let r = inp.len();
    let mut d = [1usize; 4];
    let mut od = [1usize; 4];
    let mut b = [0usize; 4];
    d[4 - r..].copy_from_slice(inp);
    od[4 - r..].copy_from_slice(out);
    b[4 - r..].copy_from_slice(&begin[..r]);
    for i0 in 0..d[0] {
        for i1 in 0..d[1] {
            for i2 in 0..d[2] {
                let src = ((i0 * d[1] + i1) * d[2] + i2) * d[3];
                let dst = (((i0 + b[0]) * od[1] + i1 + b[1]) * od[2] + i2 + b[2]) * od[3] + b[3];
                f(src, dst, d[3]);
            }
        }
    }
}
