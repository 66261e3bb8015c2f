//! First-order optimizers with the update rules of PyTorch's `torch.optim` (no weight decay,
//! no Nesterov, no AMSGrad, uncentred RMSProp).
//!
//! Each optimizer keeps its state per parameter element, laid out like
//! [`ParamGrads::tensors`]: the first [`Optimizer::step`] sizes it from the gradients, and a
//! later step with gradients of another layout is an error (use a fresh optimizer per network).

use alloc::format;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::network::Network;
use crate::parallel::for_chunks3;
use crate::params::ParamGrads;
use crate::scalar::Float;

/// Something that updates a network's parameters from their gradients.
pub trait Optimizer<T: Float> {
    /// One update of every trainable parameter of `net` from `grads` (the gradient of the loss
    /// to minimise, e.g. from [`Network::backward`]).
    ///
    /// Errors, without changing anything, when `grads` does not have `net`'s parameter layout
    /// or not the layout of the optimizer's earlier steps.
    fn step(&mut self, net: &mut Network<T>, grads: &ParamGrads<T>) -> Result<()>;

    /// The optimizer's state (step count and per-element buffers), to checkpoint it.
    fn state(&self) -> OptimizerState<T>;

    /// Continues from a state saved with [`state`](Self::state) by an optimizer of the same
    /// kind. Errors when the number of buffers does not match; the buffer sizes are checked
    /// against the network at the next step.
    fn restore(&mut self, state: OptimizerState<T>) -> Result<()>;

    /// Sets the learning rate of the next steps (a schedule calls this before each step); the
    /// state is unchanged.
    fn set_learning_rate(&mut self, lr: T);
}

/// The state of an [`Optimizer`]: steps taken and its per-element buffers (Adam: `m`, `v`;
/// RMSProp: `v`; SGD with momentum: the momentum buffer), each laid out per parameter tensor
/// like [`ParamGrads::tensors`] (empty before the first step).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimizerState<T> {
    /// Steps taken.
    pub steps: u64,
    /// Buffers, each a list of per-tensor vectors.
    pub buffers: Vec<Vec<Vec<T>>>,
}

fn restore_buffers<T>(state: OptimizerState<T>, slots: &mut [&mut Slots<T>]) -> Result<u64> {
    if state.buffers.len() != slots.len() {
        return Err(Error::Parameter {
            node: "optimizer".into(),
            reason: format!("saved state has {} buffers, this optimizer keeps {}", state.buffers.len(), slots.len()),
        });
    }
    for (slot, b) in slots.iter_mut().zip(state.buffers) {
        slot.0 = b;
    }
    Ok(state.steps)
}

/// Per-element state buffers, one per parameter tensor, sized at the first step.
#[derive(Clone, Debug, Default)]
struct Slots<T>(Vec<Vec<T>>);

impl<T: Float> Slots<T> {
    fn prepare(&mut self, net: &Network<T>, grads: &ParamGrads<T>) -> Result<()> {
        net.check_grads_layout(grads)?;
        let tensors = grads.tensors();
        if self.0.is_empty() {
            self.0 = tensors.iter().map(|t| alloc::vec![T::ZERO; t.len()]).collect();
            return Ok(());
        }
        if self.0.len() != tensors.len() || self.0.iter().zip(&tensors).any(|(s, t)| s.len() != t.len()) {
            return Err(Error::Parameter {
                node: "optimizer".into(),
                reason: format!(
                    "gradients of {} tensors do not match the optimizer state of {} tensors from earlier steps",
                    tensors.len(),
                    self.0.len()
                ),
            });
        }
        Ok(())
    }
}

/// Stochastic gradient descent with (heavy-ball) momentum, as `torch.optim.SGD` with
/// `dampening = 0`, `nesterov = false`:
///
/// ```text
/// b ← momentum·b + g        (b = 0 before the first step, so b₁ = g)
/// θ ← θ − lr·b
/// ```
///
/// With `momentum = 0` this is `θ ← θ − lr·g` and no state is kept.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    /// Learning rate.
    pub lr: T,
    /// Momentum factor (0 for plain gradient descent).
    pub momentum: T,
    buf: Slots<T>,
}

impl<T: Float> Sgd<T> {
    /// SGD with the given learning rate and momentum.
    pub fn new(lr: T, momentum: T) -> Self {
        Sgd { lr, momentum, buf: Slots(Vec::new()) }
    }
}

impl<T: Float> Optimizer<T> for Sgd<T> {
    fn set_learning_rate(&mut self, lr: T) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState { steps: 0, buffers: alloc::vec![self.buf.0.clone()] }
    }

    fn restore(&mut self, state: OptimizerState<T>) -> Result<()> {
        restore_buffers(state, &mut [&mut self.buf]).map(|_| ())
    }

    fn step(&mut self, net: &mut Network<T>, grads: &ParamGrads<T>) -> Result<()> {
        let (lr, mu) = (self.lr, self.momentum);
        if mu == T::ZERO {
            return net.update_params(grads, |_, p, g| p.iter_mut().zip(g).for_each(|(x, &d)| *x -= lr * d));
        }
        self.buf.prepare(net, grads)?;
        let buf = &mut self.buf.0;
        net.update_params(grads, |i, p, g| {
            for ((x, &d), b) in p.iter_mut().zip(g).zip(buf[i].iter_mut()) {
                *b = mu * *b + d;
                *x -= lr * *b;
            }
        })
    }
}

/// Adam (Kingma & Ba), as `torch.optim.Adam`: at step `t = 1, 2, …`
///
/// ```text
/// m ← β₁·m + (1 − β₁)·g
/// v ← β₂·v + (1 − β₂)·g²
/// θ ← θ − lr·(m / (1 − β₁ᵗ)) / (sqrt(v / (1 − β₂ᵗ)) + ε)
/// ```
///
/// (`m = v = 0` before the first step). Defaults of [`Adam::new`]: `β₁ = 0.9`, `β₂ = 0.999`,
/// `ε = 1e-8`.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    /// Learning rate.
    pub lr: T,
    /// Decay of the first-moment estimate.
    pub beta1: T,
    /// Decay of the second-moment estimate.
    pub beta2: T,
    /// Added to the denominator.
    pub eps: T,
    /// Steps taken so far.
    t: u64,
    /// `β₁ᵗ` and `β₂ᵗ`, for the bias corrections.
    beta1_t: T,
    beta2_t: T,
    m: Slots<T>,
    v: Slots<T>,
}

impl<T: Float> Adam<T> {
    /// Adam with PyTorch's defaults (`β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-8`).
    pub fn new(lr: T) -> Self {
        Self::with_params(lr, T::from_f64(0.9), T::from_f64(0.999), T::from_f64(1e-8))
    }

    /// Adam with every hyper-parameter given.
    pub fn with_params(lr: T, beta1: T, beta2: T, eps: T) -> Self {
        Adam {
            lr,
            beta1,
            beta2,
            eps,
            t: 0,
            beta1_t: T::ONE,
            beta2_t: T::ONE,
            m: Slots(Vec::new()),
            v: Slots(Vec::new()),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }
}

impl<T: Float> Optimizer<T> for Adam<T> {
    fn set_learning_rate(&mut self, lr: T) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState { steps: self.t, buffers: alloc::vec![self.m.0.clone(), self.v.0.clone()] }
    }

    fn restore(&mut self, state: OptimizerState<T>) -> Result<()> {
        let t = restore_buffers(state, &mut [&mut self.m, &mut self.v])?;
        self.t = t;
        self.beta1_t = T::ONE;
        self.beta2_t = T::ONE;
        for _ in 0..t {
            self.beta1_t *= self.beta1;
            self.beta2_t *= self.beta2;
        }
        Ok(())
    }

    fn step(&mut self, net: &mut Network<T>, grads: &ParamGrads<T>) -> Result<()> {
        self.m.prepare(net, grads)?;
        self.v.prepare(net, grads)?;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let (b1t, b2t) = (self.beta1_t * b1, self.beta2_t * b2);
        // As PyTorch: step size lr/(1 − β₁ᵗ), denominator sqrt(v)/sqrt(1 − β₂ᵗ) + ε.
        let step_size = self.lr / (T::ONE - b1t);
        let sqrt_c2 = (T::ONE - b2t).sqrt();
        let (m, v) = (&mut self.m.0, &mut self.v.0);
        net.update_params(grads, |i, p, g| {
            for_chunks3(p, &mut m[i], &mut v[i], g, |p, m, v, g| {
                for (((x, &d), mi), vi) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *mi = b1 * *mi + (T::ONE - b1) * d;
                    *vi = b2 * *vi + (T::ONE - b2) * d * d;
                    *x -= step_size * *mi / (vi.sqrt() / sqrt_c2 + eps);
                }
            })
        })?;
        self.t += 1;
        self.beta1_t = b1t;
        self.beta2_t = b2t;
        Ok(())
    }
}

/// RMSProp, as `torch.optim.RMSprop` (uncentred, no momentum):
///
/// ```text
/// v ← α·v + (1 − α)·g²      (v = 0 before the first step)
/// θ ← θ − lr·g / (sqrt(v) + ε)
/// ```
///
/// Defaults of [`RmsProp::new`]: `α = 0.99`, `ε = 1e-8`.
#[derive(Clone, Debug)]
pub struct RmsProp<T> {
    /// Learning rate.
    pub lr: T,
    /// Smoothing constant of the squared-gradient average.
    pub alpha: T,
    /// Added to the denominator.
    pub eps: T,
    v: Slots<T>,
}

impl<T: Float> RmsProp<T> {
    /// RMSProp with PyTorch's defaults (`α = 0.99`, `ε = 1e-8`).
    pub fn new(lr: T) -> Self {
        Self::with_params(lr, T::from_f64(0.99), T::from_f64(1e-8))
    }

    /// RMSProp with every hyper-parameter given.
    pub fn with_params(lr: T, alpha: T, eps: T) -> Self {
        RmsProp { lr, alpha, eps, v: Slots(Vec::new()) }
    }
}

impl<T: Float> Optimizer<T> for RmsProp<T> {
    fn set_learning_rate(&mut self, lr: T) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState { steps: 0, buffers: alloc::vec![self.v.0.clone()] }
    }

    fn restore(&mut self, state: OptimizerState<T>) -> Result<()> {
        restore_buffers(state, &mut [&mut self.v]).map(|_| ())
    }

    fn step(&mut self, net: &mut Network<T>, grads: &ParamGrads<T>) -> Result<()> {
        self.v.prepare(net, grads)?;
        let (lr, a, eps) = (self.lr, self.alpha, self.eps);
        let v = &mut self.v.0;
        net.update_params(grads, |i, p, g| {
            for ((x, &d), vi) in p.iter_mut().zip(g).zip(v[i].iter_mut()) {
                *vi = a * *vi + (T::ONE - a) * d * d;
                *x -= lr * d / (vi.sqrt() + eps);
            }
        })
    }
}
