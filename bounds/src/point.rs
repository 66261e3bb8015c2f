//! Per-input first-order robustness figures from the logits and the exact Jacobian.

use certify_core::{first_order, Float};

use crate::math::sqrt;

/// The first-order robustness figures of one input (all accumulated in `f64`).
///
/// None of these is a sound certificate: Prop. 3 and Cor. 2 of Jakubovitz & Giryes hold for the
/// first-order (linearised) model at `x`; a network that is not linear between `x` and the
/// boundary can have its boundary closer than `prop3_bound`.
#[derive(Clone, Debug, PartialEq)]
pub struct PointBounds {
    /// `k*`, the predicted class (argmax of the logits; lowest index on ties).
    pub predicted: usize,
    /// The class with the second-largest logit.
    pub runner_up: usize,
    /// `z_k* − z_runner_up` (≥ 0).
    pub margin: f64,
    /// `‖J(x)‖_F`.
    pub jacobian_fro: f64,
    /// Prop. 3 lower estimate `margin / (√2·‖J‖_F)` of the minimal ℓ2 perturbation that changes
    /// the class, to first order; `+∞` when `J = 0`.
    pub prop3_bound: f64,
    /// Cor. 2 estimate `min_{k≠k*} |z_k* − z_k| / ‖∇z_k* − ∇z_k‖₂`: the distance to the nearest
    /// boundary of the linearised network; `+∞` when every gradient difference is zero.
    pub cor2_estimate: f64,
    /// The class attaining `cor2_estimate` (`None` when it is infinite).
    pub cor2_class: Option<usize>,
    /// §3.3 curvature proxy `(J_k* x)² − (J_r x)²` for `k*` and the runner-up `r`.
    pub curvature_proxy: f64,
    /// Its bound `‖J‖_F²·‖x‖²`.
    pub curvature_bound: f64,
    /// `‖x‖₂`.
    pub x_norm: f64,
}

pub use certify_core::top2;

fn dot<T: Float>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&u, &v)| u.to_f64() * v.to_f64()).sum()
}

/// Computes [`PointBounds`] from the logits `z` (`K`), the Jacobian `jac` (`[K, D]`, row `k` =
/// `∇_x z_k`) and the input `x` (`D`). `K` must be ≥ 2.
pub fn point_bounds<T: Float>(logits: &[T], jac: &[T], x: &[T]) -> PointBounds {
    let k_count = logits.len();
    let d = x.len();
    debug_assert_eq!(jac.len(), k_count * d);
    let row = |k: usize| &jac[k * d..(k + 1) * d];
    let f = first_order(logits, jac);
    let (predicted, runner_up) = (f.predicted, f.runner_up);
    let gs = row(predicted);
    let fro2: f64 = jac.iter().map(|&v| v.to_f64() * v.to_f64()).sum();
    let x_norm2 = dot(x, x);
    let a = dot(gs, x);
    let b = dot(row(runner_up), x);
    PointBounds {
        predicted,
        runner_up,
        margin: f.margin,
        jacobian_fro: f.jacobian_fro,
        prop3_bound: f.prop3_bound,
        cor2_estimate: f.cor2_estimate,
        cor2_class: f.cor2_class,
        curvature_proxy: a * a - b * b,
        curvature_bound: fro2 * x_norm2,
        x_norm: sqrt(x_norm2),
    }
}
