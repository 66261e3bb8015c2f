//! The first-order robustness formulas of Jakubovitz & Giryes (ECCV 2018), Prop. 3 and Cor. 2,
//! from the logits and the exact Jacobian of one input. The one implementation of these
//! formulas: `certify-bounds` and the compact engine ([`crate::compact`]) both call it.
//!
//! Allocation-free (runs on the compact engine's no-allocation path).

use crate::scalar::Float;

/// Prop. 3 and Cor. 2 figures of one input, accumulated in `f64`.
///
/// These are **first-order estimates**, not sound certificates: they are exact for the
/// network linearised at `x`; a network that is not linear between `x` and the decision
/// boundary can have its boundary closer than `prop3_bound`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirstOrder {
    /// `k*`, the predicted class (argmax of the logits; lowest index on ties).
    pub predicted: usize,
    /// The class with the second-largest logit.
    pub runner_up: usize,
    /// `z_k* − z_runner_up` (≥ 0).
    pub margin: f64,
    /// `‖J(x)‖_F`.
    pub jacobian_fro: f64,
    /// Prop. 3 lower estimate `margin / (√2·‖J‖_F)` of the smallest ℓ2 perturbation that
    /// changes the class, to first order; `+∞` when `J = 0`.
    pub prop3_bound: f64,
    /// Cor. 2 estimate `min_{k≠k*} |z_k* − z_k| / ‖∇z_k* − ∇z_k‖₂`, the distance to the nearest
    /// boundary of the linearised network; `+∞` when every gradient difference is zero.
    pub cor2_estimate: f64,
    /// The class attaining `cor2_estimate` (`None` when it is infinite).
    pub cor2_class: Option<usize>,
}

/// Indices of the largest and second-largest logits (first index wins ties). `logits` must
/// hold at least two values.
pub fn top2<T: Float>(logits: &[T]) -> (usize, usize) {
    let mut best = 0;
    for (k, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = k;
        }
    }
    let mut second = if best == 0 { 1 } else { 0 };
    for (k, v) in logits.iter().enumerate() {
        if k != best && *v > logits[second] {
            second = k;
        }
    }
    (best, second)
}

/// Computes [`FirstOrder`] from the logits `z` (`K ≥ 2` values) and the Jacobian `jac`
/// (`[K, D]` row-major, row `k` = `∇_x z_k`); `D = jac.len() / K`.
pub fn first_order<T: Float>(logits: &[T], jac: &[T]) -> FirstOrder {
    let k_count = logits.len();
    let d = jac.len() / k_count.max(1);
    let row = |k: usize| &jac[k * d..(k + 1) * d];
    let (predicted, runner_up) = top2(logits);
    let zs = logits[predicted].to_f64();
    let margin = zs - logits[runner_up].to_f64();
    let fro2: f64 = jac.iter().map(|&v| v.to_f64() * v.to_f64()).sum();
    let jacobian_fro = libm::sqrt(fro2);
    let prop3_bound =
        if jacobian_fro > 0.0 { margin / (core::f64::consts::SQRT_2 * jacobian_fro) } else { f64::INFINITY };
    let mut cor2_estimate = f64::INFINITY;
    let mut cor2_class = None;
    let gs = row(predicted);
    for (k, zk) in logits.iter().enumerate() {
        if k == predicted {
            continue;
        }
        let gk = row(k);
        let diff2: f64 = gs
            .iter()
            .zip(gk)
            .map(|(&a, &b)| {
                let t = a.to_f64() - b.to_f64();
                t * t
            })
            .sum();
        if diff2 == 0.0 {
            continue;
        }
        let est = libm::fabs(zs - zk.to_f64()) / libm::sqrt(diff2);
        if est < cor2_estimate {
            cor2_estimate = est;
            cor2_class = Some(k);
        }
    }
    FirstOrder { predicted, runner_up, margin, jacobian_fro, prop3_bound, cor2_estimate, cor2_class }
}
