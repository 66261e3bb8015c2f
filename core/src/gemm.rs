//! Safe matrix-product wrappers over [`Float::gemm_raw`].

use crate::scalar::Float;

/// Layout of a matrix operand: dense row-major, optionally read transposed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    /// Rows of the stored (untransposed) matrix.
    pub rows: usize,
    /// Columns of the stored (untransposed) matrix.
    pub cols: usize,
    /// Distance between the starts of consecutive stored rows (`cols` for a dense matrix).
    pub ld: usize,
    /// Read as its transpose.
    pub t: bool,
}

impl<'a, T> Mat<'a, T> {
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, ld: cols, t: false }
    }
    /// A `rows × cols` block whose stored rows start `ld ≥ cols` values apart (e.g. a band of
    /// columns of a wider row-major matrix, `data` starting at its first column).
    pub fn strided(data: &'a [T], rows: usize, cols: usize, ld: usize) -> Self {
        Mat { data, rows, cols, ld, t: false }
    }
    pub fn t(self) -> Self {
        Mat { t: !self.t, ..self }
    }
    /// Whether every stored element lies inside `data`.
    fn fits(&self) -> bool {
        self.ld >= self.cols && (self.rows == 0 || self.data.len() >= (self.rows - 1) * self.ld + self.cols)
    }
    fn logical(&self) -> (usize, usize) {
        if self.t {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
    fn strides(&self) -> (isize, isize) {
        if self.t {
            (1, self.ld as isize)
        } else {
            (self.ld as isize, 1)
        }
    }
}

/// `c ← alpha·op(a)·op(b) + beta·c`, `c` dense row-major `m×n`.
///
/// Panics (a programming error inside this crate) when the shapes disagree with the slices.
pub(crate) fn gemm<T: Float>(alpha: T, a: Mat<'_, T>, b: Mat<'_, T>, beta: T, c: &mut [T]) {
    let (m, k) = a.logical();
    let (k2, n) = b.logical();
    assert_eq!(k, k2, "gemm inner dimensions");
    assert!(a.fits(), "gemm lhs too short");
    assert!(b.fits(), "gemm rhs too short");
    assert!(c.len() >= m * n, "gemm output too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for v in &mut c[..m * n] {
            *v = if beta == T::ZERO { T::ZERO } else { *v * beta };
        }
        return;
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    // SAFETY: the asserts above guarantee every index reached lies inside the slices, and `c`
    // is a distinct `&mut` borrow so it cannot alias `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `Σ a_i·b_i` with eight independent accumulators (vectorisable, and less rounding drift than
/// one running sum).
#[inline]
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    const L: usize = 8;
    let n = a.len().min(b.len());
    let mut acc = [T::ZERO; L];
    let (ac, bc) = (a[..n].chunks_exact(L), b[..n].chunks_exact(L));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = T::ZERO;
    for (x, y) in at.iter().zip(bt) {
        s += *x * *y;
    }
    acc.iter().fold(s, |t, &v| t + v)
}
