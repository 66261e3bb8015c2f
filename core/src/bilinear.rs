//! Exact parameter gradients of Jacobian bilinear forms `vᵀ·J_θ(x)·u`: the building block of
//! Jacobian regularisation.
//!
//! For a piecewise-linear network (ReLU, LeakyReLU, Clip, max pooling and affine layers; the
//! activation patterns, pooling winners and dropout masks fixed by the forward trace) the
//! logit Jacobian `J(x) = A_L·…·A_1` is a product of the layers' *linear parts*, and the
//! activation pattern is locally constant in the parameters `θ`. So for a fixed pair `(v, u)`
//! the gradient of `vᵀ J_θ u` with respect to the weights of layer `l` is the outer product of
//! the cotangent `v` reaching layer `l`'s output in a reverse pass and the tangent `u` reaching
//! its input in a forward (tangent) pass: no second-order autograd tape is needed.
//!
//! With `u = Jᵀv` held fixed, `∇_θ ‖Jᵀv‖² = 2·∇_θ (vᵀ J_θ u)`; summing over the unit vectors
//! `v = e_k` gives the exact gradient of `‖J‖_F²`, over random unit vectors an unbiased
//! estimate of it, and with `v = ∂CE/∂z` the first half of the input-gradient penalty's.

use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::forward::Trace;
use crate::network::Network;
use crate::params::ParamGrads;
use crate::reverse::param_grads;
use crate::scalar::Float;

/// Cotangent rows per piece of the batch (4 Mi values of the widest node, 16 MB in f32).
const PIECE_VALUES: usize = 1 << 22;

/// The result of [`Network::bilinear_grads`] for cotangents `v` (`rows` per sample).
#[derive(Clone, Debug)]
pub struct BilinearGrads<T> {
    /// `u = J(x_b)ᵀ v_br`, `[batch, rows, D]`.
    pub vjp: Vec<T>,
    /// `J(x_b)·u_br`, `[batch, rows, K]`.
    pub jvp: Vec<T>,
    /// `∇_θ Σ_{b,r} v_brᵀ·J_θ(x_b)·u_br` with `u` held fixed (weights and batch-norm scales;
    /// biases and shifts do not enter a Jacobian, their entries are zero).
    pub grads: ParamGrads<T>,
}

impl<T: Float> Network<T> {
    /// Errors with [`Error::NotPiecewiseLinear`] naming the first live node whose second
    /// derivative is not zero (Sigmoid, Tanh).
    pub fn check_piecewise_linear(&self) -> Result<()> {
        let live = self.live();
        match self.nodes().iter().zip(live).find(|(n, l)| *l && !n.layer.is_piecewise_linear()) {
            Some((n, _)) => Err(Error::NotPiecewiseLinear { node: n.name.clone(), kind: n.layer.kind() }),
            None => Ok(()),
        }
    }

    /// For `rows` cotangents `v` per sample (`[batch, rows, K]`) at the points of `trace`:
    /// the vector-Jacobian products `u = Jᵀv`, the products `J·u`, and the exact gradient of
    /// `Σ v·(J_θ u)` with respect to every trainable parameter with `u` held fixed (see the
    /// module docs). One reverse pass, one tangent pass and the weight-gradient products,
    /// over pieces of the batch of bounded memory.
    ///
    /// Errors when the network is not piecewise linear ([`Error::NotPiecewiseLinear`]), when
    /// `v` does not hold `batch·rows·K` finite values, or `rows == 0`.
    pub fn bilinear_grads(&self, trace: &Trace<T>, v: &[T], rows: usize) -> Result<BilinearGrads<T>> {
        self.check_piecewise_linear()?;
        let (batch, k, d) = (trace.batch(), self.num_classes(), self.input_len());
        crate::forward::check_input(v, batch.saturating_mul(rows), k, "cotangents")?;
        if rows == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "cotangent rows per sample" });
        }
        let widest = self.nodes().iter().map(|n| n.size()).max().unwrap_or(1).max(1);
        let piece = (PIECE_VALUES / (rows * widest)).clamp(1, batch.max(1));
        let mut out = BilinearGrads {
            vjp: alloc::vec![T::ZERO; batch * rows * d],
            jvp: alloc::vec![T::ZERO; batch * rows * k],
            grads: ParamGrads::zeros_like(self),
        };
        for start in (0..batch).step_by(piece) {
            let end = (start + piece).min(batch);
            let owned;
            let part = if end - start == batch {
                trace
            } else {
                owned = trace.samples(start, end);
                &owned
            };
            let vs = &v[start * rows * k..end * rows * k];
            self.bilinear_piece(part, vs, rows, &mut out, start)?;
        }
        Ok(out)
    }

    fn bilinear_piece(
        &self,
        trace: &Trace<T>,
        v: &[T],
        rows: usize,
        out: &mut BilinearGrads<T>,
        start: usize,
    ) -> Result<()> {
        let n = trace.batch();
        let (k, d) = (self.num_classes(), self.input_len());
        let mut cot: Vec<Option<Vec<T>>> = alloc::vec![None; self.nodes().len()];
        let u = self.reverse(trace, v, rows, None, Some(&mut cot))?;
        let nodes = self.nodes();
        let grads = &mut out.grads;
        let ju = self.tangent_walk(trace, &u, rows, &mut |id, t_in| {
            let Some(dy) = cot[id].take() else { return };
            let node = &nodes[id];
            let in_shape = nodes[node.inputs[0]].shape.as_slice();
            param_grads(node, in_shape, t_in, &dy, n * rows, 1, grads.nodes[id].as_mut(), false);
        })?;
        out.vjp[start * rows * d..(start + n) * rows * d].copy_from_slice(&u);
        out.jvp[start * rows * k..(start + n) * rows * k].copy_from_slice(&ju);
        Ok(())
    }
}
