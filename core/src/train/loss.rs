//! Losses on logits.

use alloc::vec::Vec;

use crate::scalar::Float;

/// Mean softmax cross-entropy of `logits` (`[n, classes]`, row-major) against `labels` (`n`
/// class indices): `L = (1/n)·Σ_i (logsumexp(z_i) − z_i[y_i])`, computed stably (the row
/// maximum is subtracted before exponentiating).
///
/// Returns `(L, ∂L/∂z)`; the gradient is `(softmax(z_i) − onehot(y_i)) / n` per row, i.e. of
/// the *mean* loss, in the layout of `logits` (ready to be the cotangents of
/// [`Network::backward`](crate::Network::backward) with `rows = 1`). With `n = 0` the loss is 0.
///
/// # Panics
/// When `logits.len() != labels.len()·classes`, `classes == 0`, or a label is `≥ classes`.
pub fn softmax_cross_entropy<T: Float>(logits: &[T], labels: &[usize], classes: usize) -> (T, Vec<T>) {
    assert!(classes > 0, "softmax_cross_entropy needs at least one class");
    assert_eq!(
        logits.len(),
        labels.len() * classes,
        "softmax_cross_entropy: {} logits for {} labels of {classes} classes",
        logits.len(),
        labels.len()
    );
    let n = labels.len();
    if n == 0 {
        return (T::ZERO, Vec::new());
    }
    let inv_n = T::ONE / T::from_f64(n as f64);
    let mut grad = alloc::vec![T::ZERO; logits.len()];
    let mut total = T::ZERO;
    for ((z, g), &y) in logits.chunks(classes).zip(grad.chunks_mut(classes)).zip(labels) {
        assert!(y < classes, "label {y} out of range for {classes} classes");
        let m = z.iter().copied().fold(z[0], T::max);
        let mut sum = T::ZERO;
        for (gi, &zi) in g.iter_mut().zip(z) {
            *gi = (zi - m).exp();
            sum += *gi;
        }
        // logsumexp(z) − z_y = ln(Σ e^(z−m)) − (z_y − m)
        total += sum.ln() - (z[y] - m);
        let scale = inv_n / sum;
        g.iter_mut().for_each(|v| *v *= scale);
        g[y] -= inv_n;
    }
    (total * inv_n, grad)
}
