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
    arg: Option<&mut [usize]>,
) {
    max_forward_of(p, inp, out, x, |v| v, y, arg)
}

/// [`max_forward`] of `act(x)` read from `x`: the values and winners of max pooling the
/// pointwise activation `act` of `x` (first maximum of `act(x)` in scan order), without
/// storing `act(x)`. `act` must be the function the activation layer applies, so that values
/// and ties are exactly those of pooling its stored output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn max_forward_of<T: Float>(
    p: &Pool2d,
    inp: &[usize],
    out: &[usize],
    x: &[T],
    act: impl Fn(T) -> T,
    y: &mut [T],
    arg: Option<&mut [usize]>,
) {
    if is_plain_2x2(p, inp, out) {
        return max_forward_2x2(inp, x, act, y, arg);
    }
    max_forward_windows(p, inp, out, x, act, y, arg)
}

/// [`max_forward_of`] through the general window walk (any kernel, stride and padding).
fn max_forward_windows<T: Float>(
    p: &Pool2d,
    inp: &[usize],
    out: &[usize],
    x: &[T],
    act: impl Fn(T) -> T,
    y: &mut [T],
    mut arg: Option<&mut [usize]>,
) {
    windows(p, inp, out, |o, win, _| {
        let mut best = usize::MAX;
        let mut bv = T::ZERO;
        win.for_each(|i| {
            let v = act(x[i]);
            if best == usize::MAX || v > bv {
                best = i;
                bv = v;
            }
        });
        y[o] = bv;
        if let Some(a) = arg.as_deref_mut() {
            a[o] = best;
        }
    });
}

/// Whether `p` is a 2×2 window with stride 2 and no padding whose windows tile the input
/// exactly (even height and width): the common case [`max_forward_2x2`] handles.
fn is_plain_2x2(p: &Pool2d, inp: &[usize], out: &[usize]) -> bool {
    p.kernel == [2, 2]
        && p.stride == [2, 2]
        && p.padding == [0; 4]
        && inp[1].is_multiple_of(2)
        && inp[2].is_multiple_of(2)
        && out[1] * 2 == inp[1]
        && out[2] * 2 == inp[2]
}

/// [`max_forward_of`] for a plain 2×2 pool ([`is_plain_2x2`]), with the same winners: the
/// first maximum in scan order (top-left, top-right, bottom-left, bottom-right).
fn max_forward_2x2<T: Float>(inp: &[usize], x: &[T], act: impl Fn(T) -> T, y: &mut [T], mut arg: Option<&mut [usize]>) {
    let (c, h, w) = (inp[0], inp[1], inp[2]);
    let (ho, wo) = (h / 2, w / 2);
    for ch in 0..c {
        for oy in 0..ho {
            let top = (ch * h + 2 * oy) * w;
            let bottom = top + w;
            let o0 = (ch * ho + oy) * wo;
            for ox in 0..wo {
                let cand = [top + 2 * ox, top + 2 * ox + 1, bottom + 2 * ox, bottom + 2 * ox + 1];
                let (mut best, mut bv) = (cand[0], act(x[cand[0]]));
                for &i in &cand[1..] {
                    let v = act(x[i]);
                    if v > bv {
                        best = i;
                        bv = v;
                    }
                }
                y[o0 + ox] = bv;
                if let Some(a) = arg.as_deref_mut() {
                    a[o0 + ox] = best;
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2×2 fast path gives the general walk's values and winners, ties included.
    #[test]
    fn plain_2x2_pooling_equals_the_general_window_walk() {
        let p = Pool2d { kernel: [2, 2], stride: [2, 2], padding: [0; 4], count_include_pad: false, ceil_mode: false };
        let (inp, out) = ([3usize, 6, 8], [3usize, 3, 4]);
        assert!(is_plain_2x2(&p, &inp, &out));
        // Few distinct values, so most windows have ties.
        let mut seed = 7u64;
        let x: alloc::vec::Vec<f64> = (0..3 * 6 * 8)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 61) as f64) - 3.0
            })
            .collect();
        let (mut ya, mut yb) = ([0.0; 36], [0.0; 36]);
        let (mut aa, mut ab) = ([0usize; 36], [0usize; 36]);
        max_forward(&p, &inp, &out, &x, &mut ya, Some(&mut aa));
        max_forward_windows(&p, &inp, &out, &x, |v| v, &mut yb, Some(&mut ab));
        assert_eq!(ya, yb);
        assert_eq!(aa, ab);
        assert!(aa.iter().zip(&ya).all(|(&i, &v)| x[i] == v));
    }
}
