//! DeepFool (Moosavi-Dezfooli et al.), as in the authors' reference implementation.

use alloc::vec::Vec;

use certify_core::{Float, Network};

use crate::error::{Error, Result};
use crate::math::{abs, sq, sqrt};
use crate::point::top2;

/// DeepFool parameters; the defaults are the reference implementation's.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepFoolConfig {
    /// Overshoot: the perturbation is scaled by `1 + overshoot` (0.02).
    pub overshoot: f64,
    /// Iteration limit per input (50).
    pub max_iter: usize,
    /// Added to each step's distance, to step just past the linearised boundary (1e-4).
    pub step_epsilon: f64,
}

impl Default for DeepFoolConfig {
    fn default() -> Self {
        DeepFoolConfig { overshoot: 0.02, max_iter: 50, step_epsilon: 1e-4 }
    }
}

/// The outcome of DeepFool on one input.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepFoolResult {
    /// `‖(1 + overshoot)·r_tot‖₂`: the size of the perturbation found (also when it failed).
    pub distance: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// Whether the class at `x + (1 + overshoot)·r_tot` differs from the starting class.
    pub success: bool,
    /// The class the attack started from (the predicted class at `x`).
    pub start_class: usize,
    /// The class at the final point.
    pub final_class: usize,
    /// `‖J‖_F` at the final point.
    pub final_jacobian_fro: f64,
    /// The perturbation `(1 + overshoot)·r_tot` (`D` values).
    pub perturbation: Vec<f32>,
}

/// Runs DeepFool on every sample of the batch `x` (`[batch, D]`) from its predicted class.
///
/// At each step, over all classes `k ≠ label`: `w_k = ∇z_k − ∇z_label`, `f_k = z_k − z_label`,
/// `l = argmin |f_k|/‖w_k‖`; then `r_tot += (|f_l|/‖w_l‖ + step_epsilon)·w_l/‖w_l‖` and the
/// network is evaluated at `x + (1 + overshoot)·r_tot`, without clipping, until the class
/// changes or `max_iter` steps. Classes with `‖w_k‖ = 0` are skipped; when none is left the
/// attack stops and reports failure. Samples stop independently; the Jacobians of the samples
/// still running are computed together in one batch.
pub fn deepfool<T: Float>(
    net: &Network<T>,
    x: &[T],
    batch: usize,
    cfg: &DeepFoolConfig,
) -> Result<Vec<DeepFoolResult>> {
    if !(cfg.overshoot >= 0.0 && cfg.overshoot.is_finite() && cfg.step_epsilon >= 0.0 && cfg.step_epsilon.is_finite()) {
        return Err(Error::Config("overshoot and step epsilon must be finite and ≥ 0"));
    }
    let d = net.input_len();
    let k = net.num_classes();
    let scale = 1.0 + cfg.overshoot;
    let mut r_tot = alloc::vec![0.0f64; batch * d];
    let mut results: Vec<Option<DeepFoolResult>> = alloc::vec![None; batch];
    let mut labels = alloc::vec![0usize; batch];
    let mut iters = alloc::vec![0usize; batch];
    let mut active: Vec<usize> = (0..batch).collect();
    let mut first = true;
    while !active.is_empty() {
        // The current points of the active samples.
        let mut pts = Vec::with_capacity(active.len() * d);
        for &b in &active {
            for i in 0..d {
                pts.push(T::from_f64(x[b * d + i].to_f64() + scale * r_tot[b * d + i]));
            }
        }
        let jac = net.jacobian(&pts, active.len())?;
        let mut still = Vec::with_capacity(active.len());
        for (slot, &b) in active.iter().enumerate() {
            let z = jac.logits_of(slot);
            let j = jac.jacobian_of(slot);
            let (cls, _) = top2(z);
            if first {
                labels[b] = cls;
            }
            let label = labels[b];
            let finish = |success: bool, r: &[f64]| DeepFoolResult {
                distance: sqrt(r.iter().map(|v| sq(scale * v)).sum::<f64>()),
                iterations: iters[b],
                success,
                start_class: label,
                final_class: cls,
                final_jacobian_fro: jac.frobenius(slot),
                perturbation: r.iter().map(|v| (scale * v) as f32).collect(),
            };
            let r = &mut r_tot[b * d..(b + 1) * d];
            if cls != label {
                results[b] = Some(finish(true, r));
                continue;
            }
            if iters[b] >= cfg.max_iter {
                results[b] = Some(finish(false, r));
                continue;
            }
            let g0 = &j[label * d..(label + 1) * d];
            let mut best: Option<(f64, usize, f64)> = None; // (pert, class, ‖w‖)
            for c in 0..k {
                if c == label {
                    continue;
                }
                let gc = &j[c * d..(c + 1) * d];
                let wn: f64 = sqrt(gc.iter().zip(g0).map(|(&a, &b)| sq(a.to_f64() - b.to_f64())).sum::<f64>());
                if wn == 0.0 {
                    continue;
                }
                let f = abs(z[c].to_f64() - z[label].to_f64());
                let pert = f / wn;
                if best.is_none_or(|(p, _, _)| pert < p) {
                    best = Some((pert, c, wn));
                }
            }
            let Some((pert, c, wn)) = best else {
                results[b] = Some(finish(false, r));
                continue;
            };
            let gc = &j[c * d..(c + 1) * d];
            let step = (pert + cfg.step_epsilon) / wn;
            for i in 0..d {
                r[i] += step * (gc[i].to_f64() - g0[i].to_f64());
            }
            iters[b] += 1;
            still.push(b);
        }
        first = false;
        active = still;
    }
    Ok(results.into_iter().map(|r| r.expect("every sample finishes")).collect())
}
