//! Properties of the bounds and attacks on classifiers whose answers are known exactly.

use certify_bounds::{
    certify_batch, deepfool, fgsm, jsma, point_bounds, DeepFoolConfig, InputDomain, JsmaConfig, JsmaSearch, JsmaTarget,
};
use certify_core::{Dense, Layer, Network};
use proptest::prelude::*;

mod piecewise;

/// A random affine classifier `z = W·x + b` with `k` classes over `d` inputs, and a point.
fn linear_case() -> impl Strategy<Value = (usize, usize, Vec<f64>, Vec<f64>, Vec<f64>)> {
    (2usize..6, 1usize..8).prop_flat_map(|(k, d)| {
        (
            Just(k),
            Just(d),
            prop::collection::vec(-2.0f64..2.0, k * d),
            prop::collection::vec(-1.0f64..1.0, k),
            prop::collection::vec(-1.0f64..1.0, d),
        )
    })
}

fn linear(k: usize, d: usize, w: &[f64], b: &[f64]) -> Network<f64> {
    let mut net = Network::new(&[d]).unwrap();
    net.then("fc", Layer::Dense(Dense { weight: w.to_vec(), bias: Some(b.to_vec()), inputs: d, outputs: k })).unwrap();
    net
}

fn argmax(z: &[f64]) -> usize {
    certify_bounds::top2(z).0
}

/// The exact ℓ2 distance from `x` to the boundary of its class region, from the weights:
/// the region `{z_k* ≥ z_k ∀k}` is an intersection of half-spaces, so the distance is the
/// smallest distance to one of their hyperplanes. Returns (distance, class, unit direction).
fn exact_boundary(k: usize, d: usize, w: &[f64], b: &[f64], x: &[f64]) -> Option<(f64, usize, Vec<f64>)> {
    let z: Vec<f64> = (0..k).map(|c| (0..d).map(|i| w[c * d + i] * x[i]).sum::<f64>() + b[c]).collect();
    let s = argmax(&z);
    let mut best: Option<(f64, usize, Vec<f64>)> = None;
    for c in (0..k).filter(|&c| c != s) {
        let n: Vec<f64> = (0..d).map(|i| w[c * d + i] - w[s * d + i]).collect();
        let norm = n.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm < 1e-9 {
            continue;
        }
        let dist = (z[s] - z[c]) / norm;
        if best.as_ref().is_none_or(|(bd, _, _)| dist < *bd) {
            best = Some((dist, c, n.iter().map(|v| v / norm).collect()));
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]

    /// Linear classifiers: Cor. 2 is the exact boundary distance, Prop. 3 never exceeds it,
    /// and DeepFool reaches it in one step, overshooting by exactly its factor.
    #[test]
    fn linear_classifier_bounds_are_exact((k, d, w, b, x) in linear_case()) {
        let net = linear(k, d, &w, &b);
        let Some((dist, class, dir)) = exact_boundary(k, d, &w, &b, &x) else { return Ok(()) };
        let z: Vec<f64> = net.forward(&x, 1).unwrap();
        let (s, r) = certify_bounds::top2(&z);
        prop_assume!(z[s] - z[r] > 1e-6); // a point on a boundary has no well-defined class
        let pb = &certify_batch(&net, &x, 1).unwrap()[0];
        prop_assert!((pb.cor2_estimate - dist).abs() <= 1e-9 * (1.0 + dist), "Cor. 2 {} vs exact {}", pb.cor2_estimate, dist);
        prop_assert!(pb.cor2_class == Some(class) || (pb.cor2_estimate - dist).abs() <= 1e-9);
        prop_assert!(pb.prop3_bound <= dist * (1.0 + 1e-12) + 1e-15, "Prop. 3 {} exceeds exact {}", pb.prop3_bound, dist);
        // The distance really is the boundary: just short of it the class holds, just past it it changes.
        let at = |t: f64| -> usize {
            let p: Vec<f64> = x.iter().zip(&dir).map(|(a, u)| a + t * u).collect();
            argmax(&net.forward(&p, 1).unwrap())
        };
        prop_assert_eq!(at(dist * (1.0 - 1e-6)), s);
        prop_assert_ne!(at(dist * (1.0 + 1e-6) + 1e-9), s);
        let df = &deepfool(&net, &x, 1, &DeepFoolConfig::default()).unwrap()[0];
        prop_assert!(df.success);
        prop_assert_eq!(df.iterations, 1);
        let expected = 1.02 * (dist + 1e-4);
        prop_assert!((df.distance - expected).abs() <= 1e-9 * (1.0 + expected), "DeepFool {} vs {}", df.distance, expected);
        prop_assert!(df.distance >= dist);
    }

    /// Equality case of Prop. 3: the proof's step (19)→(20) uses `−2⟨J_k*, J_k⟩ ≤ ‖J_k*‖² + ‖J_k‖²`,
    /// an equality exactly when the two rows are opposite with equal norms; with every other row
    /// zero, `‖∇z_k* − ∇z_k‖ = √2‖J‖_F` and the estimate equals the exact distance. With
    /// orthogonal equal rows instead, it is off by exactly √2.
    #[test]
    fn prop3_is_tight_for_opposite_equal_rows(a in 0.1f64..3.0, d in 2usize..6, x0 in -1.0f64..1.0, x1 in -1.0f64..1.0) {
        prop_assume!(x0.abs() > 1e-6 && (x0 - x1).abs() > 1e-6);
        let mut x = vec![0.0; d];
        x[0] = x0;
        x[1] = x1;
        let mut w = vec![0.0; 2 * d];
        w[0] = a; // ∇z_0 = a·e_0
        w[d] = -a; // ∇z_1 = −a·e_0
        let pb = &certify_batch(&linear(2, d, &w, &[0.0, 0.0]), &x, 1).unwrap()[0];
        prop_assert!((pb.prop3_bound - x0.abs()).abs() <= 1e-12 * (1.0 + x0.abs()));
        prop_assert!((pb.prop3_bound - pb.cor2_estimate).abs() <= 1e-12 * (1.0 + pb.cor2_estimate));
        let mut w = vec![0.0; 2 * d];
        w[0] = a;
        w[d + 1] = a; // orthogonal rows of equal norm
        let pb = &certify_batch(&linear(2, d, &w, &[0.0, 0.0]), &x, 1).unwrap()[0];
        prop_assert!((pb.cor2_estimate / pb.prop3_bound - 2f64.sqrt()).abs() <= 1e-9);
    }

    /// The §3.3 curvature proxy never exceeds its bound, for any logits, Jacobian and point.
    #[test]
    fn curvature_proxy_within_bound(k in 2usize..5, d in 1usize..6, seed in prop::collection::vec(-3.0f64..3.0, 64)) {
        let z: Vec<f64> = (0..k).map(|i| seed[i]).collect();
        let j: Vec<f64> = (0..k * d).map(|i| seed[(i + 7) % 64]).collect();
        let x: Vec<f64> = (0..d).map(|i| seed[(i + 40) % 64]).collect();
        let pb = point_bounds(&z, &j, &x);
        prop_assert!(pb.curvature_proxy <= pb.curvature_bound * (1.0 + 1e-12));
        prop_assert!(pb.prop3_bound <= pb.cor2_estimate * (1.0 + 1e-12));
    }
}

/// A network with a zero Jacobian (locally constant): DeepFool reports failure, no NaN, and the
/// first-order estimates are infinite.
#[test]
fn constant_network_fails_cleanly() {
    let net = linear(3, 4, &[0.0; 12], &[1.0, 0.5, 0.0]);
    let x = [0.3, -0.2, 0.1, 0.9];
    let df = &deepfool(&net, &x, 1, &DeepFoolConfig::default()).unwrap()[0];
    assert!(!df.success);
    assert_eq!(df.distance, 0.0);
    let pb = &certify_batch(&net, &x, 1).unwrap()[0];
    assert!(pb.prop3_bound.is_infinite() && pb.cor2_estimate.is_infinite() && pb.cor2_class.is_none());
}

/// FGSM on a two-class linear model: with ε past the boundary distance in ℓ∞ the class flips,
/// below it it holds; ε = 0 keeps the clean answer; clipping keeps inputs in range.
#[test]
fn fgsm_on_a_linear_model() {
    // z0 = x0, z1 = x1: class 0 when x0 > x1; the ℓ∞ distance to the boundary is (x0 − x1)/2.
    let net = linear(2, 2, &[1.0, 0.0, 0.0, 1.0], &[0.0, 0.0]);
    let x = [0.6, 0.4];
    let dom = InputDomain::uniform(2, 0.0, 1.0, 1.0);
    let r = fgsm(&net, &x, &[0], &[0.0, 0.09, 0.11], &dom).unwrap();
    assert_eq!(r, vec![vec![true], vec![true], vec![false]]);
    // Clipping: the point cannot leave [0, 1], so the step stops at the corner (0.55 − 0.45).
    let x = [0.95, 0.05];
    let r = fgsm(&net, &x, &[0], &[2.0], &dom).unwrap();
    assert_eq!(r, vec![vec![false]]); // clipped to (0, 1): class 1
                                      // A label out of range is an error, not a panic.
    assert!(fgsm(&net, &x, &[5], &[0.1], &dom).is_err());
}

/// JSMA on a linear model where one pixel decides: the single-pixel attack changes exactly that
/// pixel and succeeds; the pair search succeeds with two pixels.
#[test]
fn jsma_on_a_linear_model() {
    // z0 = 1 − x2 − x3, z1 = x2 + x3: class 0 at x = 0; raising x2 to 1 makes z1 = 1 > z0 = 0.
    let net = linear(2, 4, &[0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0], &[1.0, 0.0]);
    let x = [0.0; 4];
    let dom = InputDomain::uniform(4, 0.0, 1.0, 1.0);
    let cfg = JsmaConfig { search: JsmaSearch::SinglePixel, target: JsmaTarget::RunnerUp, ..JsmaConfig::default() };
    let r = &jsma(&net, &x, &[0], &dom, &cfg).unwrap()[0];
    assert!(r.success && !r.still_correct);
    assert_eq!(r.target, 1);
    assert_eq!(r.pixels_changed, 1);
    let r = &jsma(&net, &x, &[0], &dom, &JsmaConfig::original()).unwrap()[0];
    assert!(r.success);
    assert_eq!(r.pixels_changed, 2);
    // Pixels that cannot help (x0, x1 have zero saliency) are never touched: with the helpful
    // ones already at their maximum, the attack gives up.
    let x = [0.0, 0.0, 1.0, 1.0];
    let net = linear(2, 4, &[0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0], &[5.0, 0.0]);
    let r = &jsma(&net, &x, &[0], &dom, &cfg).unwrap()[0];
    assert!(!r.success && r.pixels_changed == 0);
}
