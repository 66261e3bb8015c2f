//! The training objective: softmax cross-entropy plus an optional robustness penalty, its value
//! and its exact gradient with respect to every trainable parameter.
//!
//! # Loss forms
//! With `B` samples in the mini-batch, `CE_i` the cross-entropy of sample `i` and `J_i` the
//! logit Jacobian at `x_i` (or the penultimate layer's, see [`PenaltyTarget`]):
//!
//! | regulariser | [`LossForm::Mean`] (default) | [`LossForm::Sum`] (Eq. 6 / Eq. 8 read literally) |
//! |---|---|---|
//! | [`Regularizer::Jacobian`] | `(1/B)·Σ CE_i + λ·sqrt((1/B)·Σ ‖J_i‖_F²)` | `Σ CE_i + λ·sqrt(Σ ‖J_i‖_F²)` |
//! | [`Regularizer::InputGradient`] | `(1/B)·Σ CE_i + λ·(1/B)·Σ ‖∇_x CE_i‖²` | `Σ CE_i + λ·Σ ‖∇_x CE_i‖²` |
//!
//! The mean form does not change with the batch size. The sum form is `B` times the mean form
//! with `λ/√B` (Jacobian) or the same `λ` (input gradient): for the Jacobian penalty it is
//! √B times weaker relative to the cross-entropy (about 22× at B = 500), and with a
//! scale-invariant optimizer (Adam, RMSProp) only that ratio matters. The authors' released
//! code used mean cross-entropy plus `λ·‖J(x_0)‖_F` on the batch's first sample only: that is
//! the mean form with [`PenaltyEstimate::Subsample`]`(1)`.
//!
//! # Penalty estimates
//! - [`PenaltyEstimate::Exact`]: all `K` Jacobian rows of every sample;
//! - [`PenaltyEstimate::Subsample`]`(M)`: exact on the first `M` samples of each mini-batch
//!   (mini-batches are shuffled, so these are random), the mean over them standing in for
//!   the mean over the batch;
//! - [`PenaltyEstimate::Projections`]`(P)`: `‖J‖_F² ≈ (K/P)·Σ_p ‖Jᵀv_p‖²` with `P` unit
//!   vectors `v_p` drawn uniformly from the sphere in `R^K` per sample; unbiased because
//!   `E[v vᵀ] = I/K`.
//!
//! All gradients are exact for the chosen estimate (see [`Network::bilinear_grads`]); the
//! network must be piecewise linear (Sigmoid and Tanh are refused with a clear error).

use alloc::vec::Vec;

use crate::demand::{sparse_samples, SparseConvs};
use crate::error::{Error, Result};
use crate::forward::Trace;
use crate::network::{Network, NodeId};
use crate::params::ParamGrads;
use crate::scalar::Float;
use crate::train::rng::Rng;

/// The robustness penalty added to the cross-entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regularizer {
    /// Cross-entropy only.
    None,
    /// Jacobian regularisation (Jakubovitz & Giryes, Eq. 6): the Frobenius norm of `∂z/∂x`.
    Jacobian,
    /// Input-gradient regularisation (Ross & Doshi-Velez; the paper's Eqs. 7–8): the squared
    /// norm of the cross-entropy's input gradient.
    InputGradient,
}

/// How the penalty's value is obtained per mini-batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PenaltyEstimate {
    /// Every Jacobian row of every sample.
    Exact,
    /// Exact on the first `M` samples of the mini-batch only.
    Subsample(usize),
    /// Unbiased random-projection estimate with `P` unit vectors per sample (Jacobian only).
    Projections(usize),
}

/// How cross-entropy and penalty are normalised over the mini-batch (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossForm {
    /// Means over the batch: independent of the batch size.
    Mean,
    /// Sums over the batch: Eq. 6 (and Eq. 8) read literally.
    Sum,
}

/// Which Jacobian the penalty measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PenaltyTarget {
    /// `∂z/∂x`, the logits' Jacobian (the paper's main method).
    Logits,
    /// The Jacobian of node `id`'s output, e.g. the penultimate layer (the paper's Appendix
    /// A/B); only parameters up to that node receive penalty gradients.
    Node(NodeId),
}

/// The full objective of a training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    /// The penalty.
    pub regularizer: Regularizer,
    /// Its weight `λ ≥ 0`.
    pub lambda: f64,
    /// How its value is estimated.
    pub estimate: PenaltyEstimate,
    /// How terms are normalised over the batch.
    pub form: LossForm,
    /// Which Jacobian it measures (Jacobian regulariser only).
    pub target: PenaltyTarget,
}

impl Default for Objective {
    /// Cross-entropy alone, mean form.
    fn default() -> Self {
        Objective {
            regularizer: Regularizer::None,
            lambda: 0.0,
            estimate: PenaltyEstimate::Exact,
            form: LossForm::Mean,
            target: PenaltyTarget::Logits,
        }
    }
}

/// What one evaluation of the objective measured (all in f64, means over the batch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ObjectiveStats {
    /// Mean cross-entropy over the batch.
    pub cross_entropy: f64,
    /// Mean over the penalised samples of `‖J_i‖_F²` (Jacobian; an estimate for
    /// projections) or `‖∇_x CE_i‖²` (input gradient); 0 without a penalty.
    pub penalty_sq: f64,
    /// The penalty term as it enters the loss, λ included.
    pub penalty_term: f64,
    /// The loss value in the chosen form.
    pub loss: f64,
    /// Samples of the batch classified correctly (at the trace's point, dropout included).
    pub correct: usize,
    /// Samples in the batch.
    pub batch: usize,
}

impl Objective {
    /// Checks the combination of options; `classes` is the network's `K`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Error::Parameter { node: "objective".into(), reason: reason.into() };
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return Err(bad("λ must be a finite number ≥ 0"));
        }
        match self.estimate {
            PenaltyEstimate::Subsample(0) => return Err(bad("subsample:M needs M ≥ 1")),
            PenaltyEstimate::Projections(0) => return Err(bad("projections:P needs P ≥ 1")),
            PenaltyEstimate::Projections(_) if self.regularizer == Regularizer::InputGradient => {
                return Err(bad("random projections estimate the Jacobian penalty only; use exact or subsample:M"))
            }
            _ => {}
        }
        if self.target != PenaltyTarget::Logits && self.regularizer != Regularizer::Jacobian {
            return Err(bad("a penultimate-layer target applies to the Jacobian regulariser only"));
        }
        Ok(())
    }

    /// The objective's value and its gradient with respect to every trainable parameter of
    /// `net`, at the points of `trace` (made by [`Network::trace`] or, with dropout,
    /// [`Network::trace_with_masks`]) with class `labels`. `rng` draws the projection vectors.
    ///
    /// Errors when a label is `≥ K`, the label count is not the batch size, the objective is
    /// invalid, or a penalty is requested on a network that is not piecewise linear.
    pub fn evaluate<T: Float>(
        &self,
        net: &Network<T>,
        trace: &Trace<T>,
        labels: &[usize],
        rng: &mut Rng,
    ) -> Result<(ObjectiveStats, ParamGrads<T>)> {
        self.validate()?;
        let (b, k) = (trace.batch(), net.num_classes());
        if b == 0 {
            return Err(Error::DataLength { got: 0, expected: 1, what: "samples in the batch" });
        }
        if labels.len() != b {
            return Err(Error::DataLength { got: labels.len(), expected: b, what: "labels" });
        }
        if let Some(&y) = labels.iter().find(|&&y| y >= k) {
            return Err(Error::Parameter {
                node: "labels".into(),
                reason: alloc::format!("label {y} is out of range for a model with {k} classes"),
            });
        }
        let logits = trace.logits();
        // Per-sample softmax and cross-entropy, in f64.
        let mut probs = alloc::vec![0.0f64; b * k];
        let mut ce_sum = 0.0;
        let mut correct = 0;
        for i in 0..b {
            let z = &logits[i * k..(i + 1) * k];
            let m = z.iter().map(|v| v.to_f64()).fold(f64::NEG_INFINITY, f64::max);
            let p = &mut probs[i * k..(i + 1) * k];
            let mut s = 0.0;
            for (pj, zj) in p.iter_mut().zip(z) {
                *pj = libm::exp(zj.to_f64() - m);
                s += *pj;
            }
            p.iter_mut().for_each(|v| *v /= s);
            ce_sum += libm::log(s) - (z[labels[i]].to_f64() - m);
            let arg = (0..k).fold(0, |a, j| if z[j] > z[a] { j } else { a });
            correct += usize::from(arg == labels[i]);
        }
        let bf = b as f64;
        let sum_form = self.form == LossForm::Sum;
        // Scale of the CE term relative to the per-sample CE gradient (p − y).
        let ce_scale = if sum_form { 1.0 } else { 1.0 / bf };
        let mut logit_cot: Vec<f64> = probs.clone();
        for i in 0..b {
            logit_cot[i * k + labels[i]] -= 1.0;
        }
        let ce_cot: Vec<f64> = logit_cot.iter().map(|v| v * ce_scale).collect();
        let mut stats = ObjectiveStats { cross_entropy: ce_sum / bf, batch: b, correct, ..ObjectiveStats::default() };
        let penalised = match self.estimate {
            PenaltyEstimate::Subsample(m) => m.min(b),
            _ => b,
        };
        let active = self.regularizer != Regularizer::None && self.lambda > 0.0 && b > 0;
        // One demand analysis serves the cross-entropy backward pass and the penalty's passes
        // (which use the most rows per sample).
        let penalty_rows = match (active, self.regularizer, self.estimate) {
            (true, Regularizer::Jacobian, PenaltyEstimate::Projections(p)) => p,
            (true, Regularizer::Jacobian, _) => k,
            _ => 1,
        };
        let sparse = net.sparse_convs(trace, penalty_rows);
        let mut cot = ce_cot;
        let mut penalty_grads: Option<ParamGrads<T>> = None;
        if active {
            match self.regularizer {
                Regularizer::Jacobian => {
                    let (sq, g) = self.jacobian_penalty(net, trace, &sparse, penalised, rng)?;
                    // sq: mean over penalised samples of the ‖J_i‖² estimate;
                    // g: gradient of the same mean.
                    let (term, coef) = if sum_form {
                        // λ·sqrt(Σ_batch), Σ_batch ≈ B·sq
                        let total = bf * sq;
                        let t = self.lambda * libm::sqrt(total);
                        (t, if total > 0.0 { self.lambda * bf / (2.0 * libm::sqrt(total)) } else { 0.0 })
                    } else {
                        let t = self.lambda * libm::sqrt(sq);
                        (t, if sq > 0.0 { self.lambda / (2.0 * libm::sqrt(sq)) } else { 0.0 })
                    };
                    stats.penalty_sq = sq;
                    stats.penalty_term = term;
                    let mut g = g;
                    g.scale(T::from_f64(coef));
                    penalty_grads = Some(g);
                }
                Regularizer::InputGradient => {
                    let (sq, g, extra) =
                        self.input_gradient_penalty(net, trace, &sparse, &logit_cot, &probs, penalised)?;
                    // Mean form: λ·mean; sum form: λ·B·mean (extrapolated from the subsample).
                    let scale = if sum_form { self.lambda * bf } else { self.lambda };
                    stats.penalty_sq = sq;
                    stats.penalty_term = scale * sq;
                    let mut g = g;
                    g.scale(T::from_f64(scale));
                    penalty_grads = Some(g);
                    for (c, e) in cot.iter_mut().zip(extra) {
                        *c += scale * e;
                    }
                }
                Regularizer::None => {}
            }
        }
        stats.loss = if sum_form { ce_sum } else { ce_sum / bf } + stats.penalty_term;
        let cot_t: Vec<T> = cot.iter().map(|&v| T::from_f64(v)).collect();
        let mut grads = ParamGrads::zeros_like(net);
        net.reverse(trace, &cot_t, 1, Some(&mut grads), None, Some(&sparse), false)?;
        if let Some(g) = penalty_grads {
            grads.add_assign(&g);
        }
        Ok((stats, grads))
    }

    /// The mean over the first `m` samples of the (estimated) `‖J_i‖_F²` of the target, and
    /// the gradient of that mean.
    fn jacobian_penalty<T: Float>(
        &self,
        net: &Network<T>,
        trace: &Trace<T>,
        sparse: &SparseConvs<'_, T>,
        m: usize,
        rng: &mut Rng,
    ) -> Result<(f64, ParamGrads<T>)> {
        let sub_trace;
        let trace = if m < trace.batch() {
            sub_trace = trace.samples(0, m);
            &sub_trace
        } else {
            trace
        };
        let truncated;
        let (target_net, target_trace);
        let prefix_trace;
        match self.target {
            PenaltyTarget::Logits => {
                target_net = net;
                target_trace = trace;
            }
            PenaltyTarget::Node(id) => {
                truncated = net.truncated(id)?;
                prefix_trace = trace.prefix(id + 1);
                target_net = &truncated;
                target_trace = &prefix_trace;
            }
        }
        let k = target_net.num_classes();
        let d = target_net.input_len();
        let (rows, scale) = match self.estimate {
            PenaltyEstimate::Projections(p) => (p, k as f64 / p as f64),
            _ => (k, 1.0),
        };
        // Pieces of samples whose cotangents and input gradients stay near 4 Mi values (a
        // penultimate layer can have K' = 1024 rows per sample).
        let piece = ((1usize << 22) / (rows * (k + d)).max(1)).clamp(1, m.max(1));
        let mut total = 0.0f64;
        let mut g = ParamGrads::zeros_like(target_net);
        for start in (0..m).step_by(piece) {
            let end = (start + piece).min(m);
            let n = end - start;
            let v: Vec<T> = match self.estimate {
                PenaltyEstimate::Projections(_) => {
                    let mut v = Vec::with_capacity(n * rows * k);
                    for _ in 0..n * rows {
                        v.extend(rng.unit_vector(k).into_iter().map(T::from_f64));
                    }
                    v
                }
                _ => {
                    let mut v = alloc::vec![T::ZERO; n * k * k];
                    for s in 0..n {
                        for r in 0..k {
                            v[(s * k + r) * k + r] = T::ONE;
                        }
                    }
                    v
                }
            };
            let owned;
            let part = if n == target_trace.batch() {
                target_trace
            } else {
                owned = target_trace.samples(start, end);
                &owned
            };
            let bl = match self.target {
                // The demand analysis of the whole trace, restricted to this piece.
                PenaltyTarget::Logits => {
                    target_net.bilinear_grads_given(part, &v, rows, Some(&sparse_samples(sparse, start, end)))?
                }
                PenaltyTarget::Node(_) => target_net.bilinear_grads(part, &v, rows)?,
            };
            total += bl.vjp.iter().map(|x| x.to_f64() * x.to_f64()).sum::<f64>();
            g.add_assign(&bl.grads);
        }
        let mf = m as f64;
        let sq = scale * total / mf;
        // ∇ mean_i ŝ_i = (1/m)·scale·2·∇Σ vᵀJu
        g.scale(T::from_f64(2.0 * scale / mf));
        let g = if target_net.nodes().len() == net.nodes().len() { g } else { g.padded_to(net) };
        Ok((sq, g))
    }

    /// Input-gradient penalty on the first `m` samples: the mean of `‖∇_x CE_i‖²`, the part of
    /// its gradient through the Jacobian, and the part through the logits as extra logit
    /// cotangents (`[B, K]`, zero beyond `m`) for the shared backward pass.
    fn input_gradient_penalty<T: Float>(
        &self,
        net: &Network<T>,
        trace: &Trace<T>,
        sparse: &SparseConvs<'_, T>,
        logit_cot: &[f64],
        probs: &[f64],
        m: usize,
    ) -> Result<(f64, ParamGrads<T>, Vec<f64>)> {
        let (b, k) = (trace.batch(), net.num_classes());
        let sub_trace;
        let t = if m < b {
            sub_trace = trace.samples(0, m);
            &sub_trace
        } else {
            trace
        };
        let c: Vec<T> = logit_cot[..m * k].iter().map(|&v| T::from_f64(v)).collect();
        // u_i = J_iᵀ c_i = ∇_x CE_i;  ‖u_i‖² = c_iᵀ J_i u_i.
        let bl = net.bilinear_grads_given(t, &c, 1, Some(&sparse_samples(sparse, 0, m)))?;
        let mf = m as f64;
        let total: f64 = bl.vjp.iter().map(|x| x.to_f64() * x.to_f64()).sum();
        let sq = total / mf;
        // d‖u‖² = 2·(dJ-part with u fixed) + 2·(J u)ᵀ·(∂c/∂z)·dz, ∂c/∂z = diag(p) − p pᵀ.
        let mut g = bl.grads;
        g.scale(T::from_f64(2.0 / mf));
        let mut extra = alloc::vec![0.0; b * k];
        for i in 0..m {
            let w = &bl.jvp[i * k..(i + 1) * k];
            let p = &probs[i * k..(i + 1) * k];
            let pw: f64 = p.iter().zip(w).map(|(a, b)| a * b.to_f64()).sum();
            for j in 0..k {
                extra[i * k + j] = 2.0 / mf * p[j] * (w[j].to_f64() - pw);
            }
        }
        Ok((sq, g, extra))
    }
}
