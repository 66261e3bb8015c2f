//! `certify-bounds`: per-input robustness figures and adversarial attacks.
//!
//! For a classifier `z(x)` (logits) with exact Jacobian `J(x) = ∂z/∂x` (from `certify-core`):
//! - [`point_bounds`]: margin, `‖J‖_F`, the Prop. 3 lower estimate
//!   `min_{k≠k*}|z_k* − z_k| / (√2‖J‖_F)`, the Corollary 2 estimate
//!   `min_k |z_k* − z_k| / ‖∇z_k* − ∇z_k‖₂`, and the §3.3 curvature proxy with its bound
//!   `‖J‖_F²‖x‖²` (Jakubovitz & Giryes, ECCV 2018). These are **first-order estimates**, exact for
//!   linear classifiers, not sound certificates for networks.
//! - Attacks for empirical checks: [`deepfool`] (ℓ2, the reference implementation's algorithm),
//!   [`fgsm`] (ℓ∞) and [`jsma`] (ℓ0).
//!
//! ```
//! use certify_core::{Dense, Layer, Network};
//! use certify_bounds::{certify_batch, deepfool, DeepFoolConfig};
//! // A linear classifier: the boundary between the two classes is x0 = x1.
//! let mut net = Network::<f32>::new(&[2]).unwrap();
//! net.then("fc", Layer::Dense(Dense { weight: vec![1.0, 0.0, 0.0, 1.0], bias: None, inputs: 2, outputs: 2 })).unwrap();
//! let x = [1.0f32, 0.0];
//! let b = &certify_batch(&net, &x, 1).unwrap()[0];
//! assert!((b.cor2_estimate - 1.0 / 2f64.sqrt()).abs() < 1e-6); // exact for a linear model
//! assert!(b.prop3_bound <= b.cor2_estimate);
//! let df = &deepfool(&net, &x, 1, &DeepFoolConfig::default()).unwrap()[0];
//! assert!(df.success && df.distance >= b.cor2_estimate);
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod deepfool;
mod domain;
mod error;
mod fgsm;
mod jsma;
mod math;
mod point;

use alloc::vec::Vec;

use certify_core::{Float, Network};

pub use deepfool::{deepfool, DeepFoolConfig, DeepFoolResult};
pub use domain::InputDomain;
pub use error::{Error, Result};
pub use fgsm::{cross_entropy_input_gradient, fgsm};
pub use jsma::{jsma, JsmaConfig, JsmaResult, JsmaSearch, JsmaTarget};
pub use point::{point_bounds, top2, PointBounds};

/// [`PointBounds`] for every sample of the batch `x` (`[batch, D]`): one forward pass and one
/// exact-Jacobian reverse pass.
pub fn certify_batch<T: Float>(net: &Network<T>, x: &[T], batch: usize) -> Result<Vec<PointBounds>> {
    let j = net.jacobian(x, batch)?;
    let d = net.input_len();
    Ok((0..batch).map(|b| point_bounds(j.logits_of(b), j.jacobian_of(b), &x[b * d..(b + 1) * d])).collect())
}
