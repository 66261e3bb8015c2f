//! The exact logit Jacobian `J = ∂z/∂x` and its Frobenius norm.

use alloc::vec::Vec;

use crate::error::Result;
use crate::forward::Trace;
use crate::network::Network;
use crate::scalar::Float;

/// Cotangent values per reverse-pass piece in [`Network::jacobian_at`] (4 Mi values, 16 MB in f32).
const JACOBIAN_CHUNK_VALUES: usize = 1 << 22;

/// Logits and exact Jacobians for a batch.
#[derive(Clone, Debug)]
pub struct Jacobians<T> {
    /// Samples.
    pub batch: usize,
    /// Logits per sample (`K`).
    pub classes: usize,
    /// Input values per sample (`D`).
    pub inputs: usize,
    /// Logits `[batch, K]`.
    pub logits: Vec<T>,
    /// Jacobians `[batch, K, D]`: row `k` of sample `b` is `∇_x z_k(x_b)`.
    pub jacobian: Vec<T>,
}

impl<T: Float> Jacobians<T> {
    /// Logits of sample `b`.
    pub fn logits_of(&self, b: usize) -> &[T] {
        &self.logits[b * self.classes..(b + 1) * self.classes]
    }
    /// Jacobian `[K, D]` of sample `b`.
    pub fn jacobian_of(&self, b: usize) -> &[T] {
        let n = self.classes * self.inputs;
        &self.jacobian[b * n..(b + 1) * n]
    }
    /// `‖J(x_b)‖_F`, accumulated in f64.
    pub fn frobenius(&self, b: usize) -> f64 {
        self.jacobian_of(b).iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>().sqrt()
    }
}

impl<T: Float> Network<T> {
    /// Logits and exact Jacobians of the batch `x` (`[batch, D]`): one forward pass and one
    /// reverse pass with the `K` unit cotangents of every sample.
    pub fn jacobian(&self, x: &[T], batch: usize) -> Result<Jacobians<T>> {
        let trace = self.trace(x, batch)?;
        self.jacobian_at(&trace)
    }

    /// Exact Jacobians at the points of an existing trace.
    ///
    /// The reverse pass carries `K` cotangent rows per sample through every node; it runs over
    /// pieces of the batch small enough (about 16 MB of the largest node's cotangents) to stay
    /// out of fresh-page allocation, each piece still wide enough to keep all threads busy.
    pub fn jacobian_at(&self, trace: &Trace<T>) -> Result<Jacobians<T>> {
        let k = self.num_classes();
        let batch = trace.batch();
        let d = self.input_len();
        let widest = self.nodes().iter().map(|n| n.size()).max().unwrap_or(1).max(1);
        let chunk = (JACOBIAN_CHUNK_VALUES / (k * widest)).clamp(1, batch.max(1));
        let mut jacobian = alloc::vec![T::ZERO; batch * k * d];
        for start in (0..batch).step_by(chunk) {
            let end = (start + chunk).min(batch);
            let n = end - start;
            let mut eye = alloc::vec![T::ZERO; n * k * k];
            for b in 0..n {
                for i in 0..k {
                    eye[(b * k + i) * k + i] = T::ONE;
                }
            }
            let part =
                if n == batch { self.vjp(trace, &eye, k)? } else { self.vjp(&trace.samples(start, end), &eye, k)? };
            jacobian[start * k * d..end * k * d].copy_from_slice(&part);
        }
        Ok(Jacobians { batch, classes: k, inputs: self.input_len(), logits: trace.logits().to_vec(), jacobian })
    }
}
