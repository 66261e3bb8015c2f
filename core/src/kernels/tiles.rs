//! Register-tiled small products for the sparse convolution kernels when one sample carries
//! several tangent rows (the exact Jacobian penalty: `K` rows that share one activation
//! pattern).
//!
//! At one output position the rows' work is a small dense product: `R` rows by the `k`
//! channels read there by the patch length. One rank-1 update per channel and row (what the
//! single-row kernels do) loads and stores its destination run once per update; these
//! kernels keep a tile of up to [`MAX_TILE`] destination runs × 16 values in registers across
//! all `k` updates, so each loaded value feeds several multiply-adds.
//!
//! Rows are addressed by offsets into flat slices, so the same kernels serve the input
//! gradient (destination: the rows' padded images, sources: weight runs) and the weight
//! gradient (destination: weight runs, sources: the rows' padded images).

use crate::scalar::Float;

/// Most destination rows (or dot-product rows) one call handles.
pub(crate) const MAX_TILE: usize = 6;
/// Most dot-product columns one call of [`dot_tile`] handles.
pub(crate) const MAX_DOT_COLS: usize = 2;

/// Splits `n` rows into tiles of at most `max` rows of nearly equal size: `(start, len)`.
pub(crate) fn balanced_tiles(n: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = n.div_ceil(max.max(1)).max(1);
    let base = n / tiles;
    let extra = n % tiles;
    (0..tiles).scan(0, move |start, t| {
        let len = base + usize::from(t < extra);
        let s = *start;
        *start += len;
        Some((s, len))
    })
}

/// `d[d_offs[i] + t] += Σ_j coef[i·k + j]·s[s_offs[j] + t]` for every `t < len` and
/// `i < d_offs.len()`, with `k = s_offs.len()`.
///
/// Panics (a programming error in this crate) when `d_offs.len() > MAX_TILE`, a run lies
/// outside its slice or `coef` is shorter than `d_offs.len()·k`. The destination runs must
/// not overlap one another.
pub(crate) fn add_products<T: Float>(d: &mut [T], d_offs: &[usize], coef: &[T], s: &[T], s_offs: &[usize], len: usize) {
    let (n, k) = (d_offs.len(), s_offs.len());
    assert!(n <= MAX_TILE && coef.len() >= n * k, "add_products tile");
    assert!(d_offs.iter().all(|&o| o + len <= d.len()), "add_products destination run");
    assert!(s_offs.iter().all(|&o| o + len <= s.len()), "add_products source run");
    debug_assert!(
        d_offs.iter().enumerate().all(|(i, &a)| d_offs[..i].iter().all(|&b| a + len <= b || b + len <= a)),
        "add_products destinations overlap"
    );
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if avx2::available() {
        if let (Some(d), Some(coef), Some(s)) = (avx2::as_f32_mut(d), avx2::as_f32(coef), avx2::as_f32(s)) {
            // SAFETY: AVX2 and FMA are present; the asserts above bound every access.
            unsafe { avx2::add_products(d.as_mut_ptr(), d_offs, coef, s.as_ptr(), s_offs, len) };
            return;
        }
    }
    for (i, &o) in d_offs.iter().enumerate() {
        for (j, &so) in s_offs.iter().enumerate() {
            let c = coef[i * k + j];
            for (a, &b) in d[o..o + len].iter_mut().zip(&s[so..so + len]) {
                *a += c * b;
            }
        }
    }
}

/// Where a dot product's operand lies: `count` runs of `len` values, the run `q` starting at
/// `offset + q·step`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Runs {
    pub count: usize,
    pub len: usize,
    /// Distance between run starts in the first operand `a`.
    pub a_step: usize,
    /// Distance between run starts in the second operand `b`.
    pub b_step: usize,
}

/// `out[i·nb + j] = Σ_q Σ_t a[a_offs[i] + q·a_step + t]·b[b_offs[j] + q·b_step + t]` for
/// `i < a_offs.len() ≤ MAX_TILE − 1` and `j < nb = b_offs.len() ≤ MAX_DOT_COLS`.
///
/// Panics (a programming error in this crate) when a tile is too large, an operand runs past
/// its slice or `out` is too short.
pub(crate) fn dot_tile<T: Float>(a: &[T], a_offs: &[usize], b: &[T], b_offs: &[usize], runs: Runs, out: &mut [T]) {
    let (na, nb) = (a_offs.len(), b_offs.len());
    assert!(na < MAX_TILE && nb <= MAX_DOT_COLS && out.len() >= na * nb, "dot_tile tile");
    if runs.count == 0 || runs.len == 0 {
        out[..na * nb].fill(T::ZERO);
        return;
    }
    let last = |step: usize| (runs.count - 1) * step + runs.len;
    assert!(a_offs.iter().all(|&o| o + last(runs.a_step) <= a.len()), "dot_tile first operand");
    assert!(b_offs.iter().all(|&o| o + last(runs.b_step) <= b.len()), "dot_tile second operand");
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if avx2::available() {
        if let (Some(a), Some(b), Some(out)) = (avx2::as_f32(a), avx2::as_f32(b), avx2::as_f32_mut(out)) {
            // SAFETY: AVX2 and FMA are present; the asserts above bound every access.
            unsafe { avx2::dot_tile(a.as_ptr(), a_offs, b.as_ptr(), b_offs, runs, out) };
            return;
        }
    }
    for (i, &ao) in a_offs.iter().enumerate() {
        for (j, &bo) in b_offs.iter().enumerate() {
            let mut acc = T::ZERO;
            for q in 0..runs.count {
                let (x, y) = (ao + q * runs.a_step, bo + q * runs.b_step);
                acc += a[x..x + runs.len].iter().zip(&b[y..y + runs.len]).map(|(&u, &v)| u * v).sum::<T>();
            }
            out[i * nb + j] = acc;
        }
    }
}

/// The `f32` kernels with AVX2 and FMA, and the helpers the other AVX2 kernels share.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[allow(clippy::needless_range_loop)] // register tiles indexed in lockstep
pub(crate) mod avx2 {
    use core::any::TypeId;
    use core::arch::x86_64::*;

    use super::Runs;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    /// `v` as `f32`s when `T` is `f32`.
    pub fn as_f32<T: 'static>(v: &[T]) -> Option<&[f32]> {
        // SAFETY: `T` is `f32` (same type, same layout).
        (TypeId::of::<T>() == TypeId::of::<f32>())
            .then(|| unsafe { core::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) })
    }

    /// `v` as `f32`s when `T` is `f32`, mutably.
    pub fn as_f32_mut<T: 'static>(v: &mut [T]) -> Option<&mut [f32]> {
        // SAFETY: `T` is `f32` (same type, same layout).
        (TypeId::of::<T>() == TypeId::of::<f32>())
            .then(|| unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) })
    }

    /// [`super::add_products`] on raw pointers (bounds checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_products(
        d: *mut f32,
        d_offs: &[usize],
        coef: &[f32],
        s: *const f32,
        s_offs: &[usize],
        len: usize,
    ) {
        match d_offs.len() {
            1 => add_products_n::<1>(d, d_offs, coef, s, s_offs, len),
            2 => add_products_n::<2>(d, d_offs, coef, s, s_offs, len),
            3 => add_products_n::<3>(d, d_offs, coef, s, s_offs, len),
            4 => add_products_n::<4>(d, d_offs, coef, s, s_offs, len),
            5 => add_products_n::<5>(d, d_offs, coef, s, s_offs, len),
            6 => add_products_n::<6>(d, d_offs, coef, s, s_offs, len),
            _ => {}
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_products_n<const N: usize>(
        d: *mut f32,
        d_offs: &[usize],
        coef: &[f32],
        s: *const f32,
        s_offs: &[usize],
        len: usize,
    ) {
        let k = s_offs.len();
        let mut dp = [core::ptr::null_mut::<f32>(); N];
        for i in 0..N {
            dp[i] = d.add(d_offs[i]);
        }
        let c = coef.as_ptr();
        let mut t = 0;
        while t + 16 <= len {
            let mut a0 = [_mm256_setzero_ps(); N];
            let mut a1 = [_mm256_setzero_ps(); N];
            for i in 0..N {
                a0[i] = _mm256_loadu_ps(dp[i].add(t));
                a1[i] = _mm256_loadu_ps(dp[i].add(t + 8));
            }
            for (j, &so) in s_offs.iter().enumerate() {
                let sp = s.add(so + t);
                let (x0, x1) = (_mm256_loadu_ps(sp), _mm256_loadu_ps(sp.add(8)));
                for i in 0..N {
                    let cv = _mm256_broadcast_ss(&*c.add(i * k + j));
                    a0[i] = _mm256_fmadd_ps(cv, x0, a0[i]);
                    a1[i] = _mm256_fmadd_ps(cv, x1, a1[i]);
                }
            }
            for i in 0..N {
                _mm256_storeu_ps(dp[i].add(t), a0[i]);
                _mm256_storeu_ps(dp[i].add(t + 8), a1[i]);
            }
            t += 16;
        }
        if t + 8 <= len {
            let mut a0 = [_mm256_setzero_ps(); N];
            for i in 0..N {
                a0[i] = _mm256_loadu_ps(dp[i].add(t));
            }
            for (j, &so) in s_offs.iter().enumerate() {
                let x0 = _mm256_loadu_ps(s.add(so + t));
                for i in 0..N {
                    a0[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&*c.add(i * k + j)), x0, a0[i]);
                }
            }
            for i in 0..N {
                _mm256_storeu_ps(dp[i].add(t), a0[i]);
            }
            t += 8;
        }
        while t < len {
            for i in 0..N {
                let mut v = *dp[i].add(t);
                for (j, &so) in s_offs.iter().enumerate() {
                    v += *c.add(i * k + j) * *s.add(so + t);
                }
                *dp[i].add(t) = v;
            }
            t += 1;
        }
    }

    /// The sum of the eight lanes.
    #[inline(always)]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// [`super::dot_tile`] on raw pointers (bounds checked by the caller).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_tile(a: *const f32, a_offs: &[usize], b: *const f32, b_offs: &[usize], r: Runs, out: &mut [f32]) {
        match (a_offs.len(), b_offs.len()) {
            (1, 1) => dot_tile_n::<1, 1>(a, a_offs, b, b_offs, r, out),
            (2, 1) => dot_tile_n::<2, 1>(a, a_offs, b, b_offs, r, out),
            (3, 1) => dot_tile_n::<3, 1>(a, a_offs, b, b_offs, r, out),
            (4, 1) => dot_tile_n::<4, 1>(a, a_offs, b, b_offs, r, out),
            (5, 1) => dot_tile_n::<5, 1>(a, a_offs, b, b_offs, r, out),
            (1, 2) => dot_tile_n::<1, 2>(a, a_offs, b, b_offs, r, out),
            (2, 2) => dot_tile_n::<2, 2>(a, a_offs, b, b_offs, r, out),
            (3, 2) => dot_tile_n::<3, 2>(a, a_offs, b, b_offs, r, out),
            (4, 2) => dot_tile_n::<4, 2>(a, a_offs, b, b_offs, r, out),
            (5, 2) => dot_tile_n::<5, 2>(a, a_offs, b, b_offs, r, out),
            _ => {}
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_tile_n<const NA: usize, const NB: usize>(
        a: *const f32,
        a_offs: &[usize],
        b: *const f32,
        b_offs: &[usize],
        r: Runs,
        out: &mut [f32],
    ) {
        let full = r.len - r.len % 8;
        let mut acc = [[_mm256_setzero_ps(); NB]; NA];
        let mut tail = [[0.0f32; NB]; NA];
        for q in 0..r.count {
            let mut ap = [core::ptr::null::<f32>(); NA];
            let mut bp = [core::ptr::null::<f32>(); NB];
            for i in 0..NA {
                ap[i] = a.add(a_offs[i] + q * r.a_step);
            }
            for j in 0..NB {
                bp[j] = b.add(b_offs[j] + q * r.b_step);
            }
            let mut t = 0;
            while t < full {
                let mut bv = [_mm256_setzero_ps(); NB];
                for j in 0..NB {
                    bv[j] = _mm256_loadu_ps(bp[j].add(t));
                }
                for i in 0..NA {
                    let av = _mm256_loadu_ps(ap[i].add(t));
                    for j in 0..NB {
                        acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
                    }
                }
                t += 8;
            }
            for t in full..r.len {
                for i in 0..NA {
                    for j in 0..NB {
                        tail[i][j] += *ap[i].add(t) * *bp[j].add(t);
                    }
                }
            }
        }
        for i in 0..NA {
            for j in 0..NB {
                out[i * NB + j] = hsum(acc[i][j]) + tail[i][j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::train::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform() as f32 - 0.5).collect()
    }

    #[test]
    fn tiles_cover_every_row_once_and_stay_within_the_limit() {
        for n in 0..40 {
            for max in 1..8 {
                let tiles: Vec<_> = balanced_tiles(n, max).collect();
                let mut next = 0;
                for &(s, l) in &tiles {
                    assert_eq!(s, next);
                    assert!(l <= max && (l > 0 || n == 0));
                    next += l;
                }
                assert_eq!(next, n);
            }
        }
    }

    /// Every tile size and run length (vector body, half body and scalar tail) against the
    /// f64 reference.
    #[test]
    fn add_products_equals_the_plain_sums() {
        let mut rng = Rng::new(3);
        for n in 1..=MAX_TILE {
            for len in [1, 7, 8, 13, 16, 23, 40] {
                let k = 1 + (n + len) % 5;
                let d0 = random(n * len * 2 + 3, &mut rng);
                let s = random(k * len * 3 + 1, &mut rng);
                let coef = random(n * k, &mut rng);
                let d_offs: Vec<usize> = (0..n).map(|i| 1 + i * 2 * len).collect();
                let s_offs: Vec<usize> = (0..k).map(|j| (j * 3 * len + 1) % (s.len() - len)).collect();
                let mut d = d0.clone();
                add_products(&mut d, &d_offs, &coef, &s, &s_offs, len);
                let mut want: Vec<f64> = d0.iter().map(|&v| f64::from(v)).collect();
                for i in 0..n {
                    for j in 0..k {
                        for t in 0..len {
                            want[d_offs[i] + t] += f64::from(coef[i * k + j]) * f64::from(s[s_offs[j] + t]);
                        }
                    }
                }
                for (g, w) in d.iter().zip(&want) {
                    assert!((f64::from(*g) - w).abs() < 1e-5, "n {n} len {len}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn dot_tile_equals_the_plain_sums() {
        let mut rng = Rng::new(4);
        for na in 1..MAX_TILE {
            for nb in 1..=MAX_DOT_COLS {
                for (count, len) in [(1, 5), (3, 8), (5, 17), (2, 32)] {
                    let runs = Runs { count, len, a_step: len + 3, b_step: len };
                    let a = random(na * 200 + 50, &mut rng);
                    let b = random(nb * 200 + 50, &mut rng);
                    let a_offs: Vec<usize> = (0..na).map(|i| i * 200 + 1).collect();
                    let b_offs: Vec<usize> = (0..nb).map(|j| j * 190 + 2).collect();
                    let mut out = [0.0f32; MAX_TILE * MAX_DOT_COLS];
                    dot_tile(&a, &a_offs, &b, &b_offs, runs, &mut out);
                    for i in 0..na {
                        for j in 0..nb {
                            let mut w = 0.0f64;
                            for q in 0..count {
                                for t in 0..len {
                                    w += f64::from(a[a_offs[i] + q * runs.a_step + t])
                                        * f64::from(b[b_offs[j] + q * runs.b_step + t]);
                                }
                            }
                            let g = f64::from(out[i * nb + j]);
                            assert!((g - w).abs() < 1e-5, "{na}×{nb} count {count} len {len}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }
}
