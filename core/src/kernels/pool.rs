//! Max and average pooling, per sample `[C, H, W]`.

use crate::layer::Pool2d;
use crate::scalar::Float;

/// The input cells of one pooling window: rows `ya..yb`, columns `xa..xb` of the `w`-wide
/// image starting at flat index `base`.
#[derive(Clone, Copy)]
struct Window {
    base: usize,
    w: usize,
    ya: usize,
    yb: usize,
    xa: usize,
    xb: usize,
}

impl Window {
    #[inline]
    fn for_each(&self, mut f: impl FnMut(usize)) {
        for y in self.ya..self.yb {
            let row = self.base + y * self.w;
            for x in self.xa..self.xb {
                f(row + x);
            }
        }
    }
}

/// Visits every output cell: `f(out_index, window, count)` where the window holds the input
/// cells inside the image (padding excluded) and `count` is the divisor for average pooling.
#[inline]
fn windows<F: FnMut(usize, Window, usize)>(p: &Pool2d, inp: &[usize], out: &[usize], mut f: F) {
    let (c, h, w) = (inp[0], inp[1], inp[2]);
    let (ho, wo) = (out[1], out[2]);
    for ch in 0..c {
        for oy in 0..ho {
            let y0 = (oy * p.stride[0]) as isize - p.padding[0] as isize;
            let y1 = y0 + p.kernel[0] as isize;
            let ya = y0.max(0) as usize;
            let yb = (y1.min(h as isize)).max(0) as usize;
            for ox in 0..wo {
                let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                let x1 = x0 + p.kernel[1] as isize;
                let xa = x0.max(0) as usize;
                let xb = (x1.min(w as isize)).max(0) as usize;
                let count = if p.count_include_pad {
                    // Padded cells count, but not cells past the padded extent (ceil mode).
                    let yl = (y1.min((h + p.padding[2]) as isize) - y0) as usize;
                    let xl = (x1.min((w + p.padding[3]) as isize) - x0) as usize;
                    yl * xl
                } else {
                    (yb.saturating_sub(ya)) * (xb.saturating_sub(xa))
                };
                let win = Window { base: ch * h * w, w, ya, yb: yb.max(ya), xa, xb: xb.max(xa) };
                f((ch * ho + oy) * wo + ox, win, count);
            }
        }
    }
}

/// Max pooling of one sample; the index of the winner (first maximum in scan order) of each
/// window is written to `arg` when given.
pub(crate) fn max_forward<T: Float>(
    p: &Pool2d,
    inp: &[usize],
    out: &[usize],
    x: &[T],
    y: &mut [T],
    mut arg: Option<&mut [usize]>,
) {
    windows(p, inp, out, |o, win, _| {
        let mut best = usize::MAX;
        let mut bv = T::ZERO;
        win.for_each(|i| {
            if best == usize::MAX || x[i] > bv {
                best = i;
                bv = x[i];
            }
        });
        y[o] = bv;
        if let Some(a) = arg.as_deref_mut() {
            a[o] = best;
        }
    });
}

/// Average pooling of one sample (also its own tangent map: it is linear).
pub(crate) fn avg_forward<T: Float>(p: &Pool2d, inp: &[usize], out: &[usize], x: &[T], y: &mut [T]) {
    windows(p, inp, out, |o, win, count| {
        let mut s = T::ZERO;
        win.for_each(|i| s += x[i]);
        y[o] = if count == 0 { T::ZERO } else { s / T::from_f64(count as f64) };
    });
}

/// Adjoint of [`avg_forward`].
pub(crate) fn avg_backward<T: Float>(p: &Pool2d, inp: &[usize], out: &[usize], dy: &[T], dx: &mut [T]) {
    dx.iter_mut().for_each(|v| *v = T::ZERO);
    windows(p, inp, out, |o, win, count| {
        if count == 0 {
            return;
        }
        let g = dy[o] / T::from_f64(count as f64);
        win.for_each(|i| dx[i] += g);
    });
}

/// Adds the adjoint of max pooling to `dx`: each `dy[o]` goes to the winner of window `o`
/// (recomputed from the input `x` with the tie rule of [`max_forward`]). Allocation-free.
pub(crate) fn max_backward_acc<T: Float>(p: &Pool2d, inp: &[usize], out: &[usize], x: &[T], dy: &[T], dx: &mut [T]) {
    windows(p, inp, out, |o, win, _| {
        let mut best = usize::MAX;
        let mut bv = T::ZERO;
        win.for_each(|i| {
            if best == usize::MAX || x[i] > bv {
                best = i;
                bv = x[i];
            }
        });
        if best != usize::MAX {
            dx[best] += dy[o];
        }
    });
}

/// Adds the adjoint of [`avg_forward`] to `dx`. Allocation-free.
pub(crate) fn avg_backward_acc<T: Float>(p: &Pool2d, inp: &[usize], out: &[usize], dy: &[T], dx: &mut [T]) {
    windows(p, inp, out, |o, win, count| {
        if count == 0 {
            return;
        }
        let g = dy[o] / T::from_f64(count as f64);
        win.for_each(|i| dx[i] += g);
    });
}
