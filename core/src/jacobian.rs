//! The exact logit Jacobian `J = ∂z/∂x` and its Frobenius norm.

use alloc::vec::Vec;

use crate::error::Result;
use crate::forward::Trace;
use crate::network::Network;
use crate::scalar::Float;

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
    pub fn jacobian_at(&self, trace: &Trace<T>) -> Result<Jacobians<T>> {
        let k = self.num_classes();
        let batch = trace.batch();
        let mut eye = alloc::vec![T::ZERO; batch * k * k];
        for b in 0..batch {
            for i in 0..k {
                eye[(b * k + i) * k + i] = T::ONE;
            }
        }
        let jacobian = self.vjp(trace, &eye, k)?;
        Ok(Jacobians { batch, classes: k, inputs: self.input_len(), logits: trace.logits().to_vec(), jacobian })
    }
}
